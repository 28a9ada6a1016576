//! What the engine's recovery targets share: a model of a partition's log, the writes
//! that build one from the fuzzer's input, and the check of a store against the model.
//! Included by `segment_recovery` and `hint_recovery` (`#[path]`), so each may leave some
//! of it unused.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use simplekv_engine::record::Tag;
use simplekv_engine::segment::parse_segment_name;
use simplekv_engine::{Durability, Options, Store};

pub const NOW: u64 = 1_700_000_000_000;

/// `SKV_FUZZ_TRACE=1` prints what an input does (for turning a crash into a test).
pub fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SKV_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($t:tt)*) => {
        if crate::log::tracing() {
            eprintln!($($t)*);
        }
    };
}

pub fn clock() -> u64 {
    NOW
}

pub fn opts() -> Options {
    Options {
        segment_size: 4096,
        durability: Durability::Never,
        clock,
        ..Options::default()
    }
}

/// The partition directory of this process (`name` tells the targets apart), on tmpfs when
/// there is one. Created by `Store::open` and removed after every input.
pub fn scratch(name: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("simplekv-fuzz-{name}-{}", std::process::id()))
    })
}

pub const KEYS: &[&[u8]] = &[
    b"",
    b"a",
    b"b",
    b"key-c",
    b"\x00\xff",
    b"a-much-longer-key-over-22-bytes",
];

#[derive(Clone, Debug)]
pub struct Rec {
    pub tag: Tag,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub expire: u64,
}

/// key -> (value, expire): what the keydir holds (expired keys included).
pub type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

pub fn apply(m: &mut Model, r: &Rec) {
    match r.tag {
        Tag::Put => {
            m.insert(r.key.clone(), (r.value.clone(), r.expire));
        }
        Tag::Delete => {
            m.remove(&r.key);
        }
        Tag::Expire => {
            if let Some(e) = m.get_mut(&r.key) {
                e.1 = r.expire;
            }
        }
        Tag::Clear => m.clear(),
    }
}

pub fn visible(expire: u64) -> bool {
    expire == 0 || expire > NOW
}

pub fn expiry(u: &mut Unstructured<'_>) -> ArbResult<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 | 1 => 0,
        2 => NOW - 1 - u64::from(u.arbitrary::<u16>()?),
        _ => NOW + 1 + u64::from(u.arbitrary::<u16>()?),
    })
}

/// Epoch entries as `LeaderEpochCache::assign` keeps them.
pub fn assign(epochs: &mut Vec<(u32, u64)>, epoch: u32, start: u64) {
    if epochs.last().is_some_and(|&(e, _)| epoch <= e) {
        return;
    }
    epochs.retain(|&(_, s)| s < start);
    epochs.push((epoch, start));
}

pub fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().into_string().ok()?;
            parse_segment_name(&name).map(|b| (b, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Checks the visible state of `s` against the model.
pub fn check_state(s: &Store, m: &Model, what: &str) {
    assert_eq!(s.len(), m.len(), "{what}: key count (expired included)");
    for k in KEYS {
        let want = m.get(*k).filter(|(_, e)| visible(*e));
        let got = s
            .get(k)
            .unwrap_or_else(|e| panic!("{what}: read of {k:?} failed: {e}"));
        assert_eq!(
            got.as_ref(),
            want.map(|(v, _)| v),
            "{what}: value of key {k:?}"
        );
        let meta = s.meta(k);
        assert_eq!(
            meta.map(|m| m.expire),
            want.map(|&(_, e)| (e != 0).then_some(e)),
            "{what}: expiry of key {k:?}"
        );
        assert_eq!(s.exists(k), want.is_some());
    }
    let mut scanned = BTreeSet::new();
    let mut cursor = 0;
    let mut rounds = 0;
    loop {
        cursor = s.scan(cursor, 3, |k| {
            scanned.insert(k.to_vec());
        });
        rounds += 1;
        assert!(rounds < 10_000, "{what}: scan does not terminate");
        if cursor == 0 {
            break;
        }
    }
    let want: BTreeSet<Vec<u8>> = m
        .iter()
        .filter(|(_, (_, e))| visible(*e))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        scanned, want,
        "{what}: SCAN returns keys that were not written"
    );
}

/// A log written from the fuzzer's input: the store still open, the model of what it
/// holds, every record in LSN order, and the leader epochs with their start LSNs.
pub struct Written {
    pub store: Store,
    pub state: Model,
    pub recs: Vec<Rec>,
    pub epochs: Vec<(u32, u64)>,
}

/// Writes a small partition in `dir`: 1 to 20 puts, deletes, expiry changes, clears, rolls
/// and new leader epochs, committed at random and at the end, checked against the model.
pub fn write_log(u: &mut Unstructured<'_>, dir: &Path) -> ArbResult<Written> {
    // ---- write a log
    let mut store = Store::open(dir, opts()).expect("open a fresh partition");
    let mut state = Model::new();
    let mut recs: Vec<Rec> = Vec::new();
    let mut epochs: Vec<(u32, u64)> = Vec::new();
    let mut next_epoch = 1u32;
    let n_ops = u.int_in_range(1..=20u8)?;
    for _ in 0..n_ops {
        let key = u.choose(KEYS)?.to_vec();
        let rec = match u.int_in_range(0..=9u8)? {
            0..=4 => {
                // Mostly small values, sometimes over a segment (the segment grows for it).
                let len = match u.int_in_range(0..=7u8)? {
                    0 => usize::from(u.arbitrary::<u16>()? % 6000),
                    1..=3 => usize::from(u.arbitrary::<u16>()? % 1500),
                    _ => usize::from(u.arbitrary::<u8>()? % 40),
                };
                let seed = u.arbitrary::<u8>()?;
                let value: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                    .collect();
                let expire = expiry(u)?;
                let e = (expire != 0).then_some(expire);
                store.put(&key, &value, e).expect("put");
                Some(Rec {
                    tag: Tag::Put,
                    key,
                    value,
                    expire,
                })
            }
            5 => {
                let present = state.contains_key(&key);
                let was_visible = state.get(&key).is_some_and(|(_, e)| visible(*e));
                assert_eq!(store.delete(&key).expect("delete"), was_visible);
                present.then(|| Rec {
                    tag: Tag::Delete,
                    key,
                    value: Vec::new(),
                    expire: 0,
                })
            }
            6 => {
                let expire = expiry(u)?;
                let vis = state.get(&key).is_some_and(|(_, e)| visible(*e));
                let e = (expire != 0).then_some(expire);
                assert_eq!(store.set_expire(&key, e).expect("expire"), vis);
                vis.then(|| Rec {
                    tag: Tag::Expire,
                    key,
                    value: Vec::new(),
                    expire,
                })
            }
            7 => {
                store.clear().expect("clear");
                Some(Rec {
                    tag: Tag::Clear,
                    key: Vec::new(),
                    value: Vec::new(),
                    expire: 0,
                })
            }
            8 => {
                trace!("op: roll");
                store.roll().expect("roll");
                None
            }
            _ => {
                let lsn = recs.len() as u64;
                trace!("op: begin epoch {next_epoch} at LSN {lsn}");
                store.begin_epoch(next_epoch).expect("begin epoch");
                assign(&mut epochs, next_epoch, lsn);
                next_epoch += u32::from(u.int_in_range(1..=2u8)?);
                None
            }
        };
        if let Some(r) = &rec {
            trace!(
                "op: {:?} key {:?} value {} bytes expire {} -> LSN {}",
                r.tag,
                r.key,
                r.value.len(),
                r.expire,
                recs.len()
            );
        }
        if let Some(r) = rec {
            apply(&mut state, &r);
            recs.push(r);
        }
        if u.ratio(1, 3)? {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
    assert_eq!(store.log_end(), recs.len() as u64);
    check_state(&store, &state, "as written");
    Ok(Written {
        store,
        state,
        recs,
        epochs,
    })
}

/// Damages `bytes` in place: mode 0 XORs 1 to 4 bytes at fuzzer-chosen offsets, mode 1 cuts
/// them at a fuzzer-chosen length, mode 2 cuts them and appends 1 to 200 fuzzer-chosen bytes
/// (a torn write). Returns where the appended bytes start (mode 2).
pub fn damage(u: &mut Unstructured<'_>, bytes: &mut Vec<u8>, mode: u8) -> ArbResult<Option<usize>> {
    if mode == 0 {
        let n = u.int_in_range(1..=4u8)?;
        for _ in 0..n {
            let off = usize::from(u.arbitrary::<u16>()?) % bytes.len();
            bytes[off] ^= u.int_in_range(1..=255u8)?;
        }
        return Ok(None);
    }
    let cut = usize::from(u.arbitrary::<u16>()?) % (bytes.len() + 1);
    bytes.truncate(cut);
    if mode == 2 {
        let n = u.int_in_range(1..=200usize)?;
        bytes.extend_from_slice(u.bytes(n)?);
        return Ok(Some(cut));
    }
    Ok(None)
}
