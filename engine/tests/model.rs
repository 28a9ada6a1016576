//! Model-based tests: random operation sequences run against a `Store` and against a plain
//! `BTreeMap`, compared after every operation.
//!
//! - `store_matches_a_map_model_through_writes_expiry_reopens_crashes_and_merges`: every read
//!   (get, exists, ttl, meta, scan) agrees with the model after every step, through rolls,
//!   reopens with and without hint files, crashes that lose unflushed records (the survivors
//!   are exactly a prefix of the log that includes everything flushed), inline merges and
//!   off-thread merges installed in small steps with writes in between.
//! - `a_follower_pulling_in_random_steps_converges_to_the_leader`: replication through
//!   `read_records`/`append_records` in random-sized batches, with follower restarts and
//!   leader merges that keep what the follower has not fetched yet.
//! - `truncation_restores_the_state_before_the_cut`: `truncate_to(lsn)` leaves exactly the
//!   state the model had when the log ended at `lsn`, before and after reopening.
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use simplekv_engine::{Durability, HintJob, Options, Store};

/// Bytes of a segment file's header (an active segment of that length holds no record).
const SEGMENT_HEADER_LEN: u64 = simplekv_engine::segment::SEGMENT_HEADER_LEN as u64;

fn shutdown_hint_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "shint"))
        .collect()
}

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_700_000_000_000) };
}

fn clock() -> u64 {
    NOW.with(|n| n.get())
}

fn advance(ms: u64) {
    NOW.with(|n| n.set(n.get() + ms));
}

const LONG_KEY: &[u8] = b"a key longer than twenty-two bytes lives on the heap";
/// A small key space so that overwrites, deletes and expiries collide. Includes the empty key
/// (distinct from a `Clear`), binary bytes and a key too long to be stored inline.
const KEYS: [&[u8]; 8] = [
    b"",
    b"a",
    b"b",
    b"c",
    b"k\0\xff\r\n",
    b"dd",
    b"eee",
    LONG_KEY,
];

fn opts(use_hints: bool) -> Options {
    Options {
        segment_size: 4096,
        // Commits only hand records to the OS: crashes in these tests are process crashes.
        durability: Durability::Never,
        use_hints,
        clock,
        ..Options::default()
    }
}

fn open(dir: &Path, use_hints: bool) -> Store {
    match Store::open(dir, opts(use_hints)) {
        Ok(s) => s,
        Err(e) => panic!("open failed: {e}"),
    }
}

const SHM: &str = "/dev/shm";

/// Model tests exercise process-level semantics, not fsync: a tmpfs keeps them fast.
fn scratch_dir() -> tempfile::TempDir {
    if Path::new(SHM).is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("skv-model-")
            .tempdir_in(SHM)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn proptest_config(default_cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            // On a real disk every roll fsyncs: fewer cases keep the file under a minute.
            .unwrap_or(if Path::new(SHM).is_dir() {
                default_cases
            } else {
                default_cases / 4
            }),
        // Only the three test files are ours: no regression files next to them.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

// ------------------------------------------------------------------------------ model

/// A value described by a length and a seed, so shrinking is cheap and output stays short.
#[derive(Clone, Copy, Debug)]
struct Val {
    len: usize,
    seed: u8,
}

impl Val {
    fn bytes(self) -> Vec<u8> {
        (0..self.len)
            .map(|i| (self.seed as usize).wrapping_mul(131) ^ i.wrapping_mul(7) ^ (i >> 8))
            .map(|b| b as u8)
            .collect()
    }
}

/// key -> (value, absolute expiry)
type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

#[derive(Clone, Debug, Default)]
struct Model {
    map: State,
}

fn live(e: &(Vec<u8>, Option<u64>), now: u64) -> bool {
    e.1.is_none_or(|t| t > now)
}

impl Model {
    fn visible(&self, now: u64) -> State {
        self.map
            .iter()
            .filter(|(_, e)| live(e, now))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    fn is_visible(&self, k: &[u8], now: u64) -> bool {
        self.map.get(k).is_some_and(|e| live(e, now))
    }

    fn put(&mut self, k: &[u8], v: Vec<u8>, expire: Option<u64>) {
        self.map.insert(k.to_vec(), (v, expire));
    }

    fn delete(&mut self, k: &[u8], now: u64) -> bool {
        let was = self.is_visible(k, now);
        self.map.remove(k);
        was
    }

    fn set_expire(&mut self, k: &[u8], expire: Option<u64>, now: u64) -> bool {
        if !self.is_visible(k, now) {
            return false;
        }
        if let Some(e) = self.map.get_mut(k) {
            e.1 = expire;
        }
        true
    }
}

/// Every read the store offers, compared with the model at the current time.
fn check(s: &Store, m: &Model, ctx: &str) {
    let now = clock();
    let vis = m.visible(now);
    for k in KEYS {
        let want = vis.get(k);
        let got = match s.get(k) {
            Ok(v) => v,
            Err(e) => panic!("{ctx}: get({k:?}) failed: {e}"),
        };
        assert_eq!(got.as_ref(), want.map(|e| &e.0), "{ctx}: get({k:?})");
        assert_eq!(s.exists(k), want.is_some(), "{ctx}: exists({k:?})");
        assert_eq!(
            s.ttl_ms(k),
            want.map(|e| e.1.map(|t| t - now)),
            "{ctx}: ttl_ms({k:?})"
        );
        assert_eq!(
            s.meta(k).map(|m| (m.expire, m.value_len)),
            want.map(|e| (e.1, e.0.len() as u32)),
            "{ctx}: meta({k:?})"
        );
    }
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    for _ in 0..1000 {
        cursor = s.scan(cursor, 3, |k| {
            assert!(seen.insert(k.to_vec()), "{ctx}: scan returned {k:?} twice")
        });
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(cursor, 0, "{ctx}: scan did not finish");
    let want_keys: BTreeSet<Vec<u8>> = vis.keys().cloned().collect();
    assert_eq!(seen, want_keys, "{ctx}: scan");
    // DBSIZE counts expired keys not yet deleted, never fewer than the visible ones.
    assert!(
        s.len() >= vis.len(),
        "{ctx}: len {} < {}",
        s.len(),
        vis.len()
    );
    match s.random_key() {
        Some(k) => assert!(vis.contains_key(&k), "{ctx}: random_key returned {k:?}"),
        None => assert!(
            vis.is_empty(),
            "{ctx}: random_key found none of {}",
            vis.len()
        ),
    }
    let st = s.stats();
    assert_eq!(st.keys, s.len(), "{ctx}");
    assert_eq!(st.log_end, s.log_end(), "{ctx}");
}

/// The visible state of a store, read through scan + get + meta.
fn dump(s: &Store) -> State {
    let mut keys = Vec::new();
    let mut cursor = 0;
    for _ in 0..10_000 {
        cursor = s.scan(cursor, 5, |k| keys.push(k.to_vec()));
        if cursor == 0 {
            break;
        }
    }
    keys.into_iter()
        .map(|k| {
            let v = s.get(&k).unwrap().expect("scanned key has a value");
            let e = s.meta(&k).expect("scanned key has metadata").expire;
            (k, (v, e))
        })
        .collect()
}

// ------------------------------------------------------------------------------ ops

#[derive(Clone, Debug)]
enum Op {
    /// Put(key index, value, expiry relative to now)
    Put(usize, Val, Option<i64>),
    /// A value larger than a segment (into an empty or a non-empty active segment).
    PutBig(usize, Val),
    Delete(usize),
    /// Expire(key index, new expiry relative to now; None persists)
    Expire(usize, Option<i64>),
    Advance(u64),
    Clear,
    Roll,
    Commit,
    /// Take the owed hint jobs and keep them to run later.
    TakeHints,
    /// Run the hint jobs kept so far.
    RunHints,
    /// Commit, drop, open; `clean`: fsync and write the shutdown hint first, as a clean
    /// shutdown of the server does.
    Reopen {
        run_hints: bool,
        use_hints: bool,
        clean: bool,
    },
    /// Drop without committing: records not yet handed to the OS are lost.
    Crash {
        use_hints: bool,
    },
    /// `merge_now(u64::MAX)`.
    Merge,
    /// roll, start_merge, run the job (on another thread or inline) while writes go on,
    /// install, then merge_step in small budgets with checks in between.
    OffThreadMerge {
        on_thread: bool,
        during: Vec<Op>,
        budget: usize,
        reopen_mid_install: bool,
    },
    /// truncate_to(a cut point picked by `per_mille` among the allowed ones: at or above the
    /// end of the last merge, and not inside a segment opened read-only, see
    /// `truncation_into_a_segment_opened_from_disk_works`)
    Truncate(u16),
}

fn val() -> impl Strategy<Value = Val> {
    (
        prop_oneof![
            4 => Just(0usize),
            40 => 1usize..64,
            12 => 64usize..800,
        ],
        any::<u8>(),
    )
        .prop_map(|(len, seed)| Val { len, seed })
}

fn key_ix() -> impl Strategy<Value = usize> {
    0..KEYS.len()
}

/// Writes and clock moves: what can happen while a merge runs.
fn write_op() -> impl Strategy<Value = Op> {
    write_op_with(1)
}

/// `big`: weight of values larger than a segment.
fn write_op_with(big: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (key_ix(), val(), prop::option::weighted(0.25, -50i64..3000))
            .prop_map(|(k, v, t)| Op::Put(k, v, t)),
        big => (key_ix(), 4000usize..6000, any::<u8>())
            .prop_map(|(k, len, seed)| Op::PutBig(k, Val { len, seed })),
        10 => key_ix().prop_map(Op::Delete),
        8 => (key_ix(), prop::option::weighted(0.7, -50i64..3000))
            .prop_map(|(k, t)| Op::Expire(k, t)),
        6 => (0u64..1500).prop_map(Op::Advance),
        1 => Just(Op::Clear),
        2 => Just(Op::Roll),
        4 => Just(Op::Commit),
    ]
}

fn store_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        60 => write_op(),
        2 => Just(Op::TakeHints),
        2 => Just(Op::RunHints),
        3 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(run_hints, use_hints, clean)| Op::Reopen {
                run_hints,
                use_hints,
                clean
            }
        ),
        2 => any::<bool>().prop_map(|use_hints| Op::Crash { use_hints }),
        3 => Just(Op::Merge),
        3 => (
            any::<bool>(),
            prop::collection::vec(write_op(), 0..12),
            1usize..5,
            prop::bool::weighted(0.2),
        )
            .prop_map(|(on_thread, during, budget, reopen_mid_install)| {
                Op::OffThreadMerge {
                    on_thread,
                    during,
                    budget,
                    reopen_mid_install,
                }
            }),
    ]
}

// ------------------------------------------------------------------------------ harness

/// A store, its model, and the model state at every log end (`history[lsn]` is the state when
/// the log ended at `lsn`), to know what a crash or a truncation must leave.
struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    model: Model,
    history: Vec<Model>,
    /// Log end as of the last point where everything was handed to the OS.
    flushed: u64,
    /// Truncation never goes below this: records under it may have been merged away.
    floor: u64,
    hint_jobs: Vec<HintJob>,
    step: usize,
    /// Segment bases present after the last step.
    bases: BTreeSet<u64>,
}

impl Harness {
    fn new() -> Harness {
        let dir = scratch_dir();
        let store = open(dir.path(), true);
        let mut h = Harness {
            dir,
            store: Some(store),
            model: Model::default(),
            history: vec![Model::default()],
            flushed: 0,
            floor: 0,
            hint_jobs: Vec::new(),
            step: 0,
            bases: BTreeSet::new(),
        };
        h.opened();
        h
    }

    fn segment_bases(&self) -> BTreeSet<u64> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name();
                simplekv_engine::segment::parse_segment_name(name.to_str()?)
            })
            .collect()
    }

    /// After the store (re)loaded its files: only the last segment is open for writing.
    fn opened(&mut self) {
        self.bases = self.segment_bases();
    }

    /// After each step: segments that appeared were created by a roll.
    fn note_new_segments(&mut self) {
        let now = self.segment_bases();
        self.bases = now;
    }

    /// A merge rewrote every segment below `end` (opened read-only from now on) and records
    /// below it may be gone, so truncation stays at or above it.
    fn merged_below(&mut self, end: u64) {
        self.floor = self.floor.max(end);
        self.note_new_segments();
    }

    /// Whether truncate_to(x) avoids cutting inside a segment opened read-only.
    /// Any cut at or above the merged region is allowed (records below it may be gone, so
    /// the model's state at such an LSN is not the store's).
    /// Installing a merge may append records that change no visible state: tombstones for
    /// values it dropped as expired, or values whose expiry a later record extended, written
    /// again. The model's state holds at each of their LSNs; the install made them durable.
    fn absorb_merge_writes(&mut self) {
        let end = self.s().log_end();
        if (self.history.len() as u64) < end + 1 {
            while (self.history.len() as u64) < end + 1 {
                self.history.push(self.model.clone());
            }
            // It synced them, and everything appended before them.
            self.flushed = end;
        }
    }

    fn can_cut_at(&self, x: u64) -> bool {
        x >= self.floor
    }

    fn s(&mut self) -> &mut Store {
        self.store.as_mut().expect("store is open")
    }

    fn check(&self, what: &str) {
        let ctx = format!("step {} ({what})", self.step);
        let s = self.store.as_ref().expect("store is open");
        check(s, &self.model, &ctx);
        assert_eq!(
            s.log_end() as usize + 1,
            self.history.len(),
            "{ctx}: log end"
        );
    }

    fn reopen(&mut self, run_hints: bool, use_hints: bool, clean: bool) {
        let s = self.s();
        s.commit().unwrap();
        let mut shutdown_hint = false;
        let jobs = s.take_hint_jobs();
        self.flushed = self.s().log_end();
        if run_hints {
            self.hint_jobs.extend(jobs);
            self.run_hints();
        }
        let s = self.store.take().expect("store is open");
        if clean {
            let mut s = s;
            s.sync().unwrap();
            let due = s.options().use_hints && s.active_stats().0 > SEGMENT_HEADER_LEN;
            shutdown_hint = s.close_with_shutdown_hint(0).unwrap();
            assert_eq!(
                shutdown_hint, due,
                "a shutdown hint is written for a synced, non-empty active segment"
            );
        } else {
            drop(s);
        }
        self.store = Some(open(self.dir.path(), use_hints));
        self.opened();
        let report = self.s().recovery_report().clone();
        assert_eq!(
            report.active_from_shutdown_hint,
            shutdown_hint && use_hints,
            "the active segment is loaded from its shutdown hint exactly when one was written"
        );
        assert!(
            shutdown_hint_files(self.dir.path()).is_empty(),
            "opening removes every shutdown hint"
        );
    }

    fn run_hints(&mut self) {
        for j in self.hint_jobs.drain(..) {
            j.run().unwrap();
        }
    }

    /// The model state at `lsn` becomes current; later history is forgotten.
    fn rewind(&mut self, lsn: u64) {
        self.model = self.history[lsn as usize].clone();
        self.history.truncate(lsn as usize + 1);
    }

    fn apply(&mut self, op: &Op) {
        self.step += 1;
        let now = clock();
        let abs = |rel: i64| now.saturating_add_signed(rel).max(1);
        let before = self.s().log_end();
        match op {
            Op::Put(k, v, t) => {
                let exp = t.map(abs);
                let lsn = self.s().put(KEYS[*k], &v.bytes(), exp).unwrap();
                assert_eq!(lsn, before, "put returns the LSN it wrote");
                self.model.put(KEYS[*k], v.bytes(), exp);
            }
            Op::PutBig(k, v) => {
                self.step -= 1;
                self.apply(&Op::Put(*k, *v, None));
                return;
            }
            Op::Delete(k) => {
                let got = self.s().delete(KEYS[*k]).unwrap();
                assert_eq!(got, self.model.delete(KEYS[*k], now), "delete({k})");
            }
            Op::Expire(k, t) => {
                let exp = t.map(abs);
                let got = self.s().set_expire(KEYS[*k], exp).unwrap();
                assert_eq!(
                    got,
                    self.model.set_expire(KEYS[*k], exp, now),
                    "set_expire({k})"
                );
            }
            Op::Advance(ms) => advance(*ms),
            Op::Clear => {
                self.s().clear().unwrap();
                self.model.map.clear();
            }
            Op::Roll => {
                self.s().roll().unwrap();
                self.flushed = before;
            }
            Op::Commit => {
                self.s().commit().unwrap();
                self.flushed = before;
            }
            Op::TakeHints => {
                let jobs = self.s().take_hint_jobs();
                self.hint_jobs.extend(jobs);
            }
            Op::RunHints => self.run_hints(),
            Op::Reopen {
                run_hints,
                use_hints,
                clean,
            } => self.reopen(*run_hints, *use_hints, *clean),
            Op::Crash { use_hints } => {
                self.store = None;
                self.store = Some(open(self.dir.path(), *use_hints));
                self.opened();
                let end = self.s().log_end();
                assert!(
                    (self.flushed..=before).contains(&end),
                    "after a crash the log ends at {end}: flushed {}, written {before}",
                    self.flushed
                );
                self.rewind(end);
                self.flushed = end;
            }
            Op::Merge => {
                self.s().merge_now(u64::MAX).unwrap();
                self.flushed = before;
                self.merged_below(before);
                self.absorb_merge_writes();
                self.check("merged");
                return;
            }
            Op::OffThreadMerge {
                on_thread,
                during,
                budget,
                reopen_mid_install,
            } => {
                // The writes in between record their own history.
                self.off_thread_merge(*on_thread, during, *budget, *reopen_mid_install);
                return;
            }
            Op::Truncate(per_mille) => {
                let end = before;
                let allowed: Vec<u64> =
                    (self.floor..=end).filter(|&x| self.can_cut_at(x)).collect();
                let to = allowed[(allowed.len() - 1) * usize::from(*per_mille) / 1000];
                // Hint jobs taken before the cut stay queued: running them later must be
                // harmless.
                if let Err(e) = self.s().truncate_to(to) {
                    panic!("truncate_to({to}) from {end}: {e}");
                }
                self.opened();
                assert_eq!(self.s().log_end(), to, "log end after truncate_to({to})");
                self.rewind(to);
                self.flushed = to;
                self.check(&format!("after truncate_to({to}) from {end}"));
                self.reopen(false, true, true);
                self.check(&format!("reopened after truncate_to({to})"));
                return;
            }
        }
        self.note_new_segments();
        let after = self.s().log_end();
        if after == before + 1 {
            self.history.push(self.model.clone());
        } else {
            assert!(
                after <= before,
                "{op:?} moved the log end from {before} to {after}"
            );
        }
        self.check(&format!("{op:?}"));
    }

    fn off_thread_merge(
        &mut self,
        on_thread: bool,
        during: &[Op],
        budget: usize,
        reopen_mid_install: bool,
    ) {
        self.s().roll().unwrap();
        self.flushed = self.s().log_end();
        let Some(job) = self.s().start_merge(u64::MAX).unwrap() else {
            for op in during {
                self.apply(op);
            }
            return;
        };
        assert!(self.s().merge_in_progress());
        let floor = self.s().log_end();
        let (thread, mut inline) = if on_thread {
            (Some(std::thread::spawn(move || job.run())), None)
        } else {
            (None, Some(job))
        };
        for op in during {
            self.apply(op);
        }
        let out = match (thread, inline.take()) {
            (Some(t), _) => t.join().expect("merge thread panicked"),
            (None, Some(job)) => job.run(),
            (None, None) => unreachable!(),
        };
        let out = match out {
            Ok(o) => o,
            Err(e) => panic!("merge job failed: {e}"),
        };
        if let Err(e) = self.s().install_merge(out) {
            panic!("install_merge failed: {e}");
        }
        self.absorb_merge_writes();
        // Merged segments end where the active segment started: at `floor`, after the roll.
        self.merged_below(floor);
        self.check("installed");
        let mut steps = 0;
        while self.s().merge_step(budget) {
            steps += 1;
            self.check(&format!("merge_step #{steps}"));
            if reopen_mid_install && steps == 1 {
                self.reopen(false, true, self.step.is_multiple_of(2));
                self.check("reopened during install");
                assert!(!self.s().merge_in_progress());
                break;
            }
            assert!(steps < 10_000, "merge_step never finishes");
        }
        assert!(!self.s().merge_in_progress());
        self.check("merge done");
    }
}

proptest! {
    #![proptest_config(proptest_config(192))]

    #[test]
    fn store_matches_a_map_model_through_writes_expiry_reopens_crashes_and_merges(
        ops in prop::collection::vec(store_op(), 1..200)
    ) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.reopen(true, true, true);
        h.check("final reopen");
    }
}

// ------------------------------------------------------------------------------ replication

#[derive(Clone, Debug)]
enum ROp {
    /// A write (or clock move, roll, commit) on the leader.
    Leader(Op),
    BeginEpoch,
    /// Up to `steps` rounds of read_records(follower.log_end(), max_bytes) + append_records,
    /// after committing the leader when `commit` (reads only see records handed to the OS).
    Pull {
        commit: bool,
        max_bytes: usize,
        steps: usize,
    },
    FollowerReopen {
        run_hints: bool,
        use_hints: bool,
    },
    LeaderReopen,
    FollowerRoll,
    /// merge_now(horizon = follower.log_end()): tombstones the follower has not fetched stay.
    LeaderMerge,
    FollowerMerge,
}

fn replication_op() -> impl Strategy<Value = ROp> {
    prop_oneof![
        // No values larger than a segment: into an empty active segment (a new follower's, or
        // one just rolled) they fail, see
        // `a_value_larger_than_a_segment_fits_into_an_empty_active_segment`.
        50 => write_op_with(0).prop_map(ROp::Leader),
        2 => Just(ROp::BeginEpoch),
        14 => (prop::bool::weighted(0.8), 1usize..1500, 1usize..6)
            .prop_map(|(commit, max_bytes, steps)| ROp::Pull { commit, max_bytes, steps }),
        3 => (any::<bool>(), any::<bool>())
            .prop_map(|(run_hints, use_hints)| ROp::FollowerReopen { run_hints, use_hints }),
        1 => Just(ROp::LeaderReopen),
        2 => Just(ROp::FollowerRoll),
        4 => Just(ROp::LeaderMerge),
        2 => Just(ROp::FollowerMerge),
    ]
}

/// One round of fetching: returns how many records were appended.
fn pull(leader: &Store, follower: &mut Store, max_bytes: usize, ctx: &str) -> usize {
    let from = follower.log_end();
    let b = leader.read_records(from, max_bytes).unwrap();
    if b.count == 0 {
        assert!(b.bytes.is_empty(), "{ctx}");
        return 0;
    }
    let last = b.last_lsn.expect("a non-empty batch has a last LSN");
    assert!(last >= from, "{ctx}: batch from {from} ends at {last}");
    assert_eq!(b.next_lsn, last + 1, "{ctx}");
    if b.count > 1 {
        assert!(b.bytes.len() <= max_bytes, "{ctx}: batch over max_bytes");
    }
    let n = match follower.append_records(&b.bytes) {
        Ok(n) => n,
        Err(e) => panic!("{ctx}: append_records from {from}: {e}"),
    };
    assert_eq!(n, b.count, "{ctx}");
    assert_eq!(follower.log_end(), b.next_lsn, "{ctx}");
    follower.commit().unwrap();
    n
}

/// A follower's store: it takes expiry from its leader's tombstones only.
fn open_replica(dir: &Path, use_hints: bool) -> Store {
    let mut s = open(dir, use_hints);
    s.set_replica(true);
    s
}

fn run_replication(ops: &[ROp]) {
    let mut leader = Harness::new();
    leader.s().begin_epoch(1).unwrap();
    let fdir = scratch_dir();
    let mut follower = Some(open_replica(fdir.path(), true));
    let mut leader_merged = false;
    let mut follower_merged = false;
    let mut epoch = 1;
    for (i, op) in ops.iter().enumerate() {
        let ctx = format!("replication step {i} ({op:?})");
        let f = follower.as_mut().expect("follower is open");
        match op {
            ROp::Leader(op) => leader.apply(op),
            ROp::BeginEpoch => {
                epoch += 1;
                leader.s().begin_epoch(epoch).unwrap();
            }
            ROp::Pull {
                commit,
                max_bytes,
                steps,
            } => {
                if *commit {
                    leader.apply(&Op::Commit);
                }
                let l = leader.store.as_ref().expect("leader is open");
                for _ in 0..*steps {
                    if pull(l, f, *max_bytes, &ctx) == 0 {
                        break;
                    }
                }
                if !leader_merged {
                    // Without compaction the follower is exactly the leader at that LSN.
                    let at = &leader.history[f.log_end() as usize];
                    check(f, at, &format!("{ctx}: follower at {}", f.log_end()));
                }
            }
            ROp::FollowerReopen {
                run_hints,
                use_hints,
            } => {
                f.commit().unwrap();
                let jobs = f.take_hint_jobs();
                if *run_hints {
                    for j in jobs {
                        j.run().unwrap();
                    }
                }
                let before = dump(f);
                let end = f.log_end();
                follower = None;
                let f = follower.insert(open_replica(fdir.path(), *use_hints));
                assert_eq!(f.log_end(), end, "{ctx}");
                assert_eq!(dump(f), before, "{ctx}");
            }
            ROp::LeaderReopen => {
                leader.apply(&Op::Reopen {
                    run_hints: true,
                    use_hints: true,
                    clean: true,
                });
                // A restarted leader is elected again (an epoch that has no record yet is not
                // kept across a restart, as in Kafka's truncateFromEnd on load).
                leader.s().begin_epoch(epoch).unwrap();
            }
            ROp::FollowerRoll => f.roll().unwrap(),
            ROp::LeaderMerge => {
                let horizon = f.log_end();
                let s = leader.s();
                s.merge_now(horizon).unwrap();
                leader.absorb_merge_writes();
                leader_merged = true;
                leader.check(&ctx);
            }
            ROp::FollowerMerge => {
                let before = dump(f);
                f.merge_now(u64::MAX).unwrap();
                assert_eq!(dump(f), before, "{ctx}");
                follower_merged = true;
            }
        }
    }
    // Catch up completely.
    leader.apply(&Op::Commit);
    let l = leader.store.as_ref().expect("leader is open");
    let f = follower.as_mut().expect("follower is open");
    let mut rounds = 0;
    while pull(l, f, 1 + rounds % 700, "catch-up") > 0 {
        rounds += 1;
        assert!(rounds < 100_000, "the follower never catches up");
    }
    assert_eq!(f.log_end(), l.log_end(), "caught-up follower log end");
    let want = leader.model.visible(clock());
    assert_eq!(dump(l), want, "leader vs model");
    assert_eq!(dump(f), want, "follower vs leader");
    check(f, &leader.model, "caught-up follower");
    if !leader_merged && !follower_merged {
        let lb = l.read_records(0, usize::MAX).unwrap();
        let fb = f.read_records(0, usize::MAX).unwrap();
        assert_eq!(lb, fb, "without merges the logs are byte-identical");
    }
    if !leader_merged && l.last_lsn().is_some() {
        let last_epoch = l.read_records(l.last_lsn().unwrap_or(0), 1).unwrap();
        let r = simplekv_engine::record::decode(&last_epoch.bytes).unwrap();
        for e in 0..=r.header.epoch {
            assert_eq!(
                f.end_offset_for_epoch(e),
                l.end_offset_for_epoch(e),
                "end offset for epoch {e}"
            );
        }
    }
    follower = None;
    let f = follower.insert(open_replica(fdir.path(), true));
    assert_eq!(dump(f), want, "follower after reopen");
    assert_eq!(f.log_end(), leader.s().log_end());
}

proptest! {
    #![proptest_config(proptest_config(128))]

    #[test]
    fn a_follower_pulling_in_random_steps_converges_to_the_leader(
        ops in prop::collection::vec(replication_op(), 1..200)
    ) {
        run_replication(&ops);
    }
}

// ------------------------------------------------------------------------------ truncation

fn truncate_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        60 => write_op(),
        2 => Just(Op::TakeHints),
        2 => Just(Op::RunHints),
        3 => (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(run_hints, use_hints, clean)| Op::Reopen {
                run_hints,
                use_hints,
                clean
            }
        ),
        2 => any::<bool>().prop_map(|use_hints| Op::Crash { use_hints }),
        2 => Just(Op::Merge),
        10 => (0u16..=1000).prop_map(Op::Truncate),
    ]
}

proptest! {
    #![proptest_config(proptest_config(128))]

    #[test]
    fn truncation_restores_the_state_before_the_cut(
        ops in prop::collection::vec(truncate_op(), 1..200)
    ) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.reopen(true, true, true);
        h.check("final reopen");
    }
}

// ------------------------------------------------------------------ found by the models

/// Found by the model test: a record that does not fit the mapping of an *empty* active segment
/// (a fresh store, or right after a roll) makes `make_room` roll to a new segment with the
/// same base LSN, whose creation fails with "File exists".
#[test]
fn a_value_larger_than_a_segment_fits_into_an_empty_active_segment() {
    let dir = scratch_dir();
    let mut s = open(dir.path(), true);
    let big = vec![7u8; 5000];
    // Fresh store: the active segment is empty.
    if let Err(e) = s.put(b"big", &big, None) {
        panic!("put into a fresh store: {e}");
    }
    s.put(b"small", b"x", None).unwrap();
    s.roll().unwrap();
    // Right after a roll: empty again.
    if let Err(e) = s.put(b"big2", &big, None) {
        panic!("put right after a roll: {e}");
    }
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path(), true);
    assert_eq!(s.get(b"big").unwrap(), Some(big.clone()));
    assert_eq!(s.get(b"big2").unwrap(), Some(big));
    assert_eq!(s.get(b"small").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(s.log_end(), 3);
}

/// An off-thread merge covers the closed segments only. A value whose expiry has passed by the
/// record in the merged range, but was extended (here: persisted) by an `Expire` record in the
/// active segment, is still live: the merge must keep it.
#[test]
fn an_off_thread_merge_keeps_a_value_whose_expiry_was_extended_in_the_active_segment() {
    let dir = scratch_dir();
    let mut s = open(dir.path(), true);
    let now = clock();
    s.put(b"k", b"value", Some(now + 100)).unwrap();
    s.put(b"other", b"x", None).unwrap();
    s.roll().unwrap();
    assert!(
        s.set_expire(b"k", None).unwrap(),
        "persist while still live"
    );
    advance(1000);
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"value"[..]));
    let job = s
        .start_merge(u64::MAX)
        .unwrap()
        .expect("one closed segment");
    let out = job.run().unwrap();
    s.install_merge(out).unwrap();
    while s.merge_step(usize::MAX) {}
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.get(b"k")));
    match got {
        Ok(Ok(v)) => assert_eq!(v.as_deref(), Some(&b"value"[..]), "after the merge"),
        Ok(Err(e)) => panic!("read after the merge failed: {e}"),
        Err(_) => panic!("read after the merge panicked (keydir names a freed segment)"),
    }
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path(), true);
    assert_eq!(
        s.get(b"k").unwrap().as_deref(),
        Some(&b"value"[..]),
        "after reopen"
    );
    assert_eq!(s.ttl_ms(b"k"), Some(None));
}

/// Closed segments loaded from disk (after a reopen or a reload) and merge outputs are opened
/// read-only; a follower cutting its log inside one of them must still work.
#[test]
fn truncation_into_a_segment_opened_from_disk_works() {
    let dir = scratch_dir();
    let mut s = open(dir.path(), true);
    for i in 0..200u32 {
        s.put(format!("k{}", i % 50).as_bytes(), &[i as u8; 40], None)
            .unwrap();
    }
    s.commit().unwrap();
    assert!(s.stats().segments >= 3);
    drop(s);
    let mut s = open(dir.path(), true);
    if let Err(e) = s.truncate_to(10) {
        panic!("truncate_to(10) after reopen: {e}");
    }
    let check = |s: &Store| {
        assert_eq!(s.log_end(), 10);
        for i in 0..50u32 {
            let want = (i < 10).then(|| vec![i as u8; 40]);
            assert_eq!(s.get(format!("k{i}").as_bytes()).unwrap(), want, "k{i}");
        }
    };
    check(&s);
    drop(s);
    check(&open(dir.path(), true));
}

/// Hint jobs run off the owner's thread. One taken before a truncation and run after it
/// describes the segment as the cut left it; the records appended to it afterwards must not
/// be hidden by that hint once the segment is closed again.
#[test]
fn a_hint_job_from_before_a_truncation_does_not_hide_records_appended_after_it() {
    let dir = scratch_dir();
    let mut s = open(dir.path(), true);
    for i in 0..20u32 {
        s.put(format!("k{i}").as_bytes(), b"before", None).unwrap();
    }
    s.roll().unwrap();
    for i in 20..25u32 {
        s.put(format!("k{i}").as_bytes(), b"before", None).unwrap();
    }
    s.commit().unwrap();
    let in_flight = s.take_hint_jobs();
    assert_eq!(in_flight.len(), 1, "the first segment owes a hint");
    s.truncate_to(10).unwrap();
    for j in &in_flight {
        j.run().unwrap();
    }
    for i in 10..15u32 {
        s.put(format!("k{i}").as_bytes(), b"after", None).unwrap();
    }
    s.roll().unwrap();
    s.commit().unwrap();
    // The hint job owed for the new close has not run yet when the process stops.
    drop(s);
    let s = open(dir.path(), true);
    assert_eq!(s.log_end(), 15);
    for i in 0..15u32 {
        let want: &[u8] = if i < 10 { b"before" } else { b"after" };
        assert_eq!(
            s.get(format!("k{i}").as_bytes()).unwrap().as_deref(),
            Some(want),
            "k{i}"
        );
    }
}

/// Found by the truncation model: the same stale hint misleads a merge, which reads inputs
/// through their hints, so the records appended after the cut are not rewritten and their
/// keydir entries are left pointing at the retired segment.
#[test]
fn a_hint_job_from_before_a_truncation_does_not_make_a_merge_drop_records() {
    let dir = scratch_dir();
    let mut s = open(dir.path(), true);
    s.put(b"a", b"1", None).unwrap();
    s.put(b"b", b"2", None).unwrap();
    s.roll().unwrap();
    let in_flight = s.take_hint_jobs();
    s.truncate_to(1).unwrap();
    for j in &in_flight {
        j.run().unwrap();
    }
    s.put(b"c", b"3", None).unwrap();
    s.merge_now(u64::MAX).unwrap();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.get(b"c")));
    match got {
        Ok(r) => assert_eq!(r.unwrap().as_deref(), Some(&b"3"[..])),
        Err(_) => panic!("get(c) after the merge panicked (keydir names a freed segment)"),
    }
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get(b"b").unwrap(), None);
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path(), true);
    assert_eq!(
        s.get(b"c").unwrap().as_deref(),
        Some(&b"3"[..]),
        "after reopen"
    );
}

/// Found by the truncation model (once truncation into read-only segments works): a merge that
/// dropped the last records of its range leaves a gap before the next segment. Cutting at that
/// segment's base must keep the log end at the cut, or the next writes reuse LSNs that a
/// follower already fetched.
#[test]
fn truncation_keeps_numbering_from_the_cut_when_a_merge_dropped_the_records_before_it() {
    let dir = scratch_dir();
    let mut s = open(dir.path(), true);
    s.put(b"k", b"v", None).unwrap();
    s.delete(b"k").unwrap();
    s.merge_now(u64::MAX).unwrap();
    assert_eq!(s.put(b"a", b"1", None).unwrap(), 2);
    if let Err(e) = s.truncate_to(2) {
        panic!("truncate_to(2): {e}");
    }
    assert_eq!(s.log_end(), 2, "the log ends at the cut");
    assert_eq!(s.get(b"a").unwrap(), None);
    assert_eq!(
        s.put(b"b", b"2", None).unwrap(),
        2,
        "numbering continues from the cut"
    );
    s.commit().unwrap();
    drop(s);
    let s = open(dir.path(), true);
    assert_eq!(s.log_end(), 3);
    assert_eq!(s.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.get(b"k").unwrap(), None);
}

/// RANDOMKEY finds the one live key among many expired ones not deleted yet (as after a
/// mass expiry, or under CLIENT PAUSE), every time.
#[test]
fn random_key_finds_a_live_key_among_many_expired_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), true);
    let now = clock();
    for i in 0..2000u32 {
        s.put(format!("gone{i}").as_bytes(), b"v", Some(now + 10))
            .unwrap();
    }
    s.put(b"live", b"v", None).unwrap();
    advance(20);
    for _ in 0..50 {
        assert_eq!(s.random_key().as_deref(), Some(&b"live"[..]));
    }
    s.delete(b"live").unwrap();
    assert_eq!(s.random_key(), None);
}
