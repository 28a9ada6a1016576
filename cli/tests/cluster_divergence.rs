//! Log divergence and truncation with real processes (KIP-101, KIP-279): leaders that wrote
//! records (with `CLIENT ACKS 1`) their followers never got are deposed, followers come back
//! in awkward orders, and at the end every replica's log must be the same: same keys and
//! values, same log end, same leader-epoch history — read from the partition directories with
//! the engine after the nodes are stopped. Writes acknowledged with acks=all must all be there;
//! an acks=1 write may be gone, but then from every replica.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cluster::{LocalCluster, get, set};
use redis::{RedisResult, Value};
use simplekv_engine::{Options, Store};

// ------------------------------------------------------------------ helpers (this file)

const P: u32 = 0;

/// Settings every test here uses: no automatic preferred-leader elections (they would add
/// leader epochs the test does not control).
const NO_REBALANCE: (&str, &str) = ("cluster.leader_imbalance_ratio", "1.0");

/// A longer ZooKeeper session than the default 2 s: the leader's lease (half of it) must
/// outlast the acks=1 writes made while its followers are paused.
const SESSION: (&str, &str) = ("cluster.session_timeout_ms", "4000");

/// Settings for tests of merges: small segments, merged as soon as a little is dead.
const MERGING: &[(&str, &str)] = &[
    NO_REBALANCE,
    ("storage.segment_size", "1mb"),
    ("storage.merge_dead_ratio", "0.05"),
    ("storage.merge_min_bytes", "0"),
];

/// Keys of partition `p`: `prefix0`, `prefix1`, ... filtered to those hashing to `p`.
fn keys_in(c: &LocalCluster, p: u32, prefix: &str, n: usize) -> Vec<String> {
    (0u64..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| c.partition_of(k.as_bytes()) == p)
        .take(n)
        .collect()
}

/// acks=all writes through the cluster (redirects followed); each must be acknowledged.
fn set_all_acked(c: &LocalCluster, entry: u32, keys: &[String], val: &str, acked: &mut Acked) {
    for k in keys {
        let v = format!("{val}:{k}");
        if let Err(e) = set(c, entry, k, &v) {
            panic!(
                "acks=all SET {k} failed: {e}\n{:?}\n{}",
                c.partition_state(P),
                c.all_log_tails()
            );
        }
        acked.insert(k.clone(), Some(v));
    }
}

/// What acks=all acknowledged: key -> last value (None = deleted).
type Acked = BTreeMap<String, Option<String>>;

/// Writes with `CLIENT ACKS 1` straight to node `leader` (the reply waits for its own log
/// only, not for the followers). Every one must be answered OK.
fn set_acks1(c: &LocalCluster, leader: u32, keys: &[String], val: &str) {
    let mut conn = c.conn_to(leader);
    let _: () = redis::cmd("CLIENT")
        .arg("ACKS")
        .arg("1")
        .query(&mut conn)
        .expect("CLIENT ACKS 1");
    for k in keys {
        let r: RedisResult<()> = redis::cmd("SET")
            .arg(k)
            .arg(format!("{val}:{k}"))
            .query(&mut conn);
        if let Err(e) = r {
            panic!(
                "acks=1 SET {k} on leader {leader} refused: {e}\n{}",
                c.all_log_tails()
            );
        }
    }
}

/// Leaders push records to their followers; a SIGSTOPped follower's kernel still takes them
/// in (socket buffers) and it appends them when it runs again. What a paused follower cannot
/// get is what the leader holds back: at most `INFLIGHT_BYTES` (8 MiB) beyond its last
/// acknowledgement. So a tail of acks=1 writes that only the leader is sure to have is one
/// well past that: 24 values of 512 KiB (12 MiB). Returns the keys, in write order.
fn set_acks1_beyond_inflight(c: &LocalCluster, leader: u32, prefix: &str) -> Vec<String> {
    let keys = keys_in(c, P, prefix, 24);
    let big = "b".repeat(512 << 10);
    set_acks1(c, leader, &keys, &big);
    keys
}

/// SIGSTOP node `i` and wait until the kernel shows it stopped (state `T` in /proc).
fn stop(c: &LocalCluster, i: u32) {
    c.sigstop(i);
    let stat = format!("/proc/{}/stat", c.pid(i));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = std::fs::read_to_string(&stat).unwrap_or_default();
        let state = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("T") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {i} not stopped 5 s after SIGSTOP ({stat}: {s})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `(role, leader epoch, log end)` of partition `p` on node `i`, from its `ROLE` reply.
fn role_of(c: &LocalCluster, i: u32, p: u32) -> Option<(String, u64, u64)> {
    let mut conn = c.conn_to(i);
    let v: Value = redis::cmd("ROLE").query(&mut conn).expect("ROLE");
    let Value::Array(top) = v else {
        panic!("ROLE: {v:?}")
    };
    let Some(Value::Array(parts)) = top.get(3) else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => *n as u64,
        other => panic!("ROLE: not an integer: {other:?}"),
    };
    parts.iter().find_map(|e| {
        let Value::Array(e) = e else { return None };
        if int(&e[0]) != u64::from(p) {
            return None;
        }
        let role = match &e[1] {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            other => panic!("ROLE: role {other:?}"),
        };
        Some((role, int(&e[2]), int(&e[3])))
    })
}

fn log_end_on(c: &LocalCluster, i: u32, p: u32) -> u64 {
    role_of(c, i, p).map_or(0, |r| r.2)
}

/// Waits until node `follower` has everything node `leader` has of partition `p`.
fn wait_caught_up(c: &LocalCluster, follower: u32, leader: u32, p: u32) {
    let want = log_end_on(c, leader, p);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = log_end_on(c, follower, p);
        if got >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} still at log end {got} of partition {p}, leader {leader} at {want}\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until ZooKeeper names a leader of `p` other than `old`, in an epoch above
/// `old_epoch`, and that leader answers. Returns (leader, epoch).
fn wait_new_leader(c: &mut LocalCluster, p: u32, old: u32, old_epoch: u32) -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = c.partition_state(p);
        if let Some(l) = st.leader
            && l != old
            && st.leader_epoch > old_epoch
        {
            c.wait_for_leaders(Duration::from_secs(20));
            let st = c.partition_state(p);
            return (st.leader.expect("leader"), st.leader_epoch);
        }
        assert!(
            Instant::now() < deadline,
            "no new leader of partition {p} 20 s after losing node {old}: {st:?}\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until ZooKeeper's state of `p` satisfies `ok`.
fn wait_state(
    c: &LocalCluster,
    p: u32,
    what: &str,
    ok: impl Fn(&simplekv_cluster::zk::layout::PartitionState) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = c.partition_state(p);
        if ok(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partition {p}: not {what} after 20 s: {st:?}\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One replica's copy of a partition, read with the engine from its directory.
#[derive(Debug, PartialEq, Eq)]
struct Replica {
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
    log_end: u64,
    /// (epoch, start LSN) of the leader-epoch cache.
    epochs: Vec<(u32, u64)>,
}

fn partition_dir(c: &LocalCluster, i: u32, p: u32) -> PathBuf {
    simplekv_net::server::partition_dir(&c.data_dir(i), p)
}

/// Opens node `i`'s copy of partition `p` (the node must be stopped).
fn read_replica(c: &LocalCluster, i: u32, p: u32) -> Replica {
    let dir = partition_dir(c, i, p);
    let s = Store::open(&dir, Options::default())
        .unwrap_or_else(|e| panic!("open node {i}'s {}: {e}", dir.display()));
    let mut names = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = s.scan(cursor, 1000, |k| names.push(k.to_vec()));
        if cursor == 0 {
            break;
        }
    }
    let keys = names
        .into_iter()
        .map(|k| {
            let v = s
                .get(&k)
                .unwrap_or_else(|e| panic!("node {i}: read {k:?}: {e}"))
                .unwrap_or_else(|| panic!("node {i}: scanned key {k:?} has no value"));
            (k, v)
        })
        .collect();
    Replica {
        keys,
        log_end: s.log_end(),
        epochs: s
            .epoch_cache()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_lsn))
            .collect(),
    }
}

fn kill_all(c: &mut LocalCluster) {
    for i in 1..=c.len() {
        c.kill9(i);
    }
}

/// Stops every node (kill -9, all at once: a clean shutdown would move leaderships and add
/// epochs), reads partition `p` on each of its replicas and checks they are identical and
/// hold every acks=all write. Returns the common copy.
fn assert_identical_replicas(c: &mut LocalCluster, p: u32, acked: &Acked) -> Replica {
    let replicas = c.partition_state(p).replicas;
    let tails = c.all_log_tails();
    kill_all(c);
    let copies: Vec<(u32, Replica)> = replicas
        .iter()
        .map(|&i| (i, read_replica(c, i, p)))
        .collect();
    let (first, base) = &copies[0];
    for (i, r) in &copies[1..] {
        if r != base {
            let only_first: Vec<_> = base
                .keys
                .iter()
                .filter(|(k, v)| r.keys.get(*k) != Some(v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect();
            let only_other: Vec<_> = r
                .keys
                .iter()
                .filter(|(k, v)| base.keys.get(*k) != Some(v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect();
            panic!(
                "partition {p}: replicas differ.\n node {first}: log end {}, epochs {:?}, {} keys\n \
                 node {i}: log end {}, epochs {:?}, {} keys\n keys differing, node {first}'s side: \
                 {only_first:?}\n node {i}'s side: {only_other:?}\n{tails}",
                base.log_end,
                base.epochs,
                base.keys.len(),
                r.log_end,
                r.epochs,
                r.keys.len(),
            );
        }
    }
    for (k, v) in acked {
        let got = base
            .keys
            .get(k.as_bytes())
            .map(|b| String::from_utf8_lossy(b));
        assert_eq!(
            got.as_deref(),
            v.as_deref(),
            "partition {p}: acks=all write of {k} not there (node {first}; every replica agrees)"
        );
    }
    copies.into_iter().next().expect("a replica").1
}

fn has(r: &Replica, k: &str) -> bool {
    r.keys.contains_key(k.as_bytes())
}

// ------------------------------------------------------------------ tests

/// KIP-101 scenario 1. Leader A writes U1 with acks=1 while follower C is paused (B gets it),
/// then a large tail U2 while B is paused too (more than A pushes to a follower that does not
/// acknowledge: only A has all of it); A is killed. The in-sync replica with the longer log
/// (B, or C if it took in more of the pushes) leads in a new epoch with a log shorter than
/// A's, and takes acks=all writes; A comes back ahead of it in the old epoch and must cut its
/// log where the new leader's history says that epoch ended.
#[test]
fn a_follower_that_was_ahead_of_the_new_leader_truncates_to_it() {
    let mut c = LocalCluster::start(3, 1, 3, &[NO_REBALANCE, SESSION]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let st = c.partition_state(P);
    let a = st.leader.expect("leader");
    let others: Vec<u32> = st.replicas.iter().copied().filter(|&r| r != a).collect();
    let (b, cc) = (others[0], others[1]);
    let mut acked = Acked::new();

    set_all_acked(&c, a, &keys_in(&c, P, "w1-", 20), "w1", &mut acked);
    stop(&c, cc);
    let u1 = keys_in(&c, P, "u1-", 10);
    set_acks1(&c, a, &u1, "u1");
    wait_caught_up(&c, b, a, P);
    stop(&c, b);
    let u2 = set_acks1_beyond_inflight(&c, a, "u2-");
    let end_a = log_end_on(&c, a, P);
    c.kill9(a);
    c.sigcont(b);
    c.sigcont(cc);

    let (l, epoch) = wait_new_leader(&mut c, P, a, st.leader_epoch);
    let end_l = log_end_on(&c, l, P);
    println!("deposed leader {a}: log end {end_a}; new leader {l} (epoch {epoch}): {end_l}");
    assert!(
        end_l < end_a,
        "the new leader {l} ({end_l}) should have a shorter log than node {a} ({end_a})"
    );
    set_all_acked(&c, l, &keys_in(&c, P, "w2-", 20), "w2", &mut acked);
    c.restart(a);
    c.wait_for_full_isr(Duration::from_secs(30));
    set_all_acked(&c, l, &keys_in(&c, P, "w3-", 5), "w3", &mut acked);
    assert_eq!(
        c.partition_state(P).leader_epoch,
        epoch,
        "no other election"
    );

    let r = assert_identical_replicas(&mut c, P, &acked);
    for k in &u1 {
        assert!(has(&r, k), "{k}: acks=1 write every new leader had is gone");
    }
    let last = u2.last().expect("u2");
    assert!(
        !has(&r, last),
        "{last}: acks=1 write only the deposed leader had survived"
    );
    assert!(
        r.epochs.iter().any(|&(e, _)| e == epoch),
        "the new leader's epoch {epoch} is missing from the epoch history {:?}",
        r.epochs
    );
}

/// KIP-101 scenario 2. Leader A (with an acks=1 tail follower B lacks) and follower B both
/// crash; B comes back first and leads, takes writes; then A comes back and must cut its tail
/// where B's history says its epoch ended.
#[test]
fn leader_and_follower_both_crash_and_come_back_in_the_other_order() {
    let mut c = LocalCluster::start(
        3,
        1,
        2,
        &[
            NO_REBALANCE,
            ("cluster.min_insync_replicas", "1"),
            ("cluster.unclean_leader_election", "true"),
        ],
    );
    c.wait_for_full_isr(Duration::from_secs(30));
    let st = c.partition_state(P);
    let a = st.leader.expect("leader");
    let b = *st.replicas.iter().find(|&&r| r != a).expect("follower");
    let mut acked = Acked::new();

    set_all_acked(&c, a, &keys_in(&c, P, "w1-", 20), "w1", &mut acked);
    stop(&c, b);
    let u = keys_in(&c, P, "u-", 10);
    set_acks1(&c, a, &u, "u");
    c.kill9(a);
    c.kill9(b);

    // B first: it leads (cleanly if ZooKeeper still had it in the ISR, else uncleanly).
    c.restart(b);
    wait_state(&c, P, "led by B alone", |s| {
        s.leader == Some(b) && s.isr == vec![b]
    });
    c.wait_for_leaders(Duration::from_secs(20));
    let epoch = c.partition_state(P).leader_epoch;
    set_all_acked(&c, b, &keys_in(&c, P, "w2-", 20), "w2", &mut acked);

    c.restart(a);
    c.wait_for_full_isr(Duration::from_secs(30));
    set_all_acked(&c, b, &keys_in(&c, P, "w3-", 5), "w3", &mut acked);
    assert_eq!(
        c.partition_state(P).leader_epoch,
        epoch,
        "no other election"
    );

    let r = assert_identical_replicas(&mut c, P, &acked);
    for k in &u {
        assert!(!has(&r, k), "{k}: acks=1 write only A had survived");
    }
}

/// KIP-279. Four leader changes in a row, each deposed leader holding an acks=1 tail (in odd
/// rounds one follower has part of it too, and then leads), each restarted at once so that it
/// truncates while the next change is under way. At the end: identical logs, every acks=all
/// write there.
#[test]
fn several_leader_epoch_changes_in_a_row_end_with_identical_logs() {
    let mut c = LocalCluster::start(3, 1, 3, &[NO_REBALANCE, SESSION]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let mut acked = Acked::new();
    let mut tails: Vec<String> = Vec::new();
    for round in 0..4 {
        c.wait_for_leaders(Duration::from_secs(20));
        let st = c.partition_state(P);
        let l = st.leader.expect("leader");
        let followers: Vec<u32> = st.replicas.iter().copied().filter(|&r| r != l).collect();
        set_all_acked(
            &c,
            l,
            &keys_in(&c, P, &format!("w{round}-"), 10),
            "w",
            &mut acked,
        );
        let t1 = keys_in(&c, P, &format!("t{round}a-"), 5);
        let t2 = if round % 2 == 0 {
            for &f in &followers {
                stop(&c, f);
            }
            set_acks1(&c, l, &t1, "t");
            set_acks1_beyond_inflight(&c, l, &format!("t{round}b-"))
        } else {
            stop(&c, followers[0]);
            set_acks1(&c, l, &t1, "t");
            wait_caught_up(&c, followers[1], l, P);
            stop(&c, followers[1]);
            set_acks1_beyond_inflight(&c, l, &format!("t{round}b-"))
        };
        let end_l = log_end_on(&c, l, P);
        tails.extend(t1);
        tails.extend(t2);
        c.kill9(l);
        for &f in &followers {
            c.sigcont(f);
        }
        let (nl, ne) = wait_new_leader(&mut c, P, l, st.leader_epoch);
        let end_nl = log_end_on(&c, nl, P);
        println!(
            "round {round}: node {l} (epoch {}, log end {end_l}) -> node {nl} (epoch {ne}, log end {end_nl})",
            st.leader_epoch
        );
        assert!(
            end_nl < end_l,
            "round {round}: the new leader should have a shorter log than the deposed one"
        );
        c.restart(l);
    }
    c.wait_for_leaders(Duration::from_secs(20));
    c.wait_for_full_isr(Duration::from_secs(30));
    let leader = c.leader_of(P).expect("leader");
    set_all_acked(&c, leader, &keys_in(&c, P, "final-", 5), "f", &mut acked);

    let r = assert_identical_replicas(&mut c, P, &acked);
    let kept = tails.iter().filter(|k| has(&r, k)).count();
    println!(
        "acks=1 tail writes kept on every replica: {kept} of {}; epoch history {:?}",
        tails.len(),
        r.epochs
    );
}

/// A follower is killed; the leader overwrites and deletes many keys and merges its log
/// (1 MiB segments; BGREWRITEAOF rolls and merges); the follower comes back, catches up, and
/// must hold the leader's keyspace — no deleted key back from its old copy. The leader drops
/// a tombstone only once every replica, in sync or not, has passed it (the merge horizon);
/// with the horizon at the HW this test found the deleted keys back on the follower. The
/// filler pushes the deletes out of the leader's in-memory tail so they must come from the
/// merged log.
#[test]
fn a_replica_that_was_down_while_the_leader_merged_catches_up_to_the_same_keyspace() {
    let mut c = LocalCluster::start(3, 1, 3, MERGING);
    c.wait_for_full_isr(Duration::from_secs(30));
    let st = c.partition_state(P);
    let l = st.leader.expect("leader");
    let f = *st.replicas.iter().find(|&&r| r != l).expect("follower");
    let keys = keys_in(&c, P, "k", 300);
    let big = "x".repeat(2000);
    let mut acked = Acked::new();
    let mut conn = c.conn_to(l);
    let put = |conn: &mut redis::Connection, acked: &mut Acked, k: &str, v: String| {
        let r: RedisResult<()> = redis::cmd("SET").arg(k).arg(&v).query(conn);
        r.unwrap_or_else(|e| panic!("SET {k} on leader {l}: {e}"));
        acked.insert(k.to_string(), Some(v));
    };
    for k in &keys {
        put(&mut conn, &mut acked, k, format!("v1:{k}:{big}"));
    }
    c.kill9(f);
    // acks=all writes wait for the ISR: let the controller drop the dead follower first.
    wait_state(&c, P, "without the killed follower in its ISR", |s| {
        !s.isr.contains(&f)
    });
    let mut conn = c.conn_to(l);
    for round in 2..=3 {
        for k in &keys {
            put(&mut conn, &mut acked, k, format!("v{round}:{k}:{big}"));
        }
    }
    let deleted: Vec<&String> = keys.iter().step_by(3).collect();
    for k in &deleted {
        let n: i64 = redis::cmd("DEL").arg(*k).query(&mut conn).expect("DEL");
        assert_eq!(n, 1, "DEL {k}");
        acked.insert(k.to_string(), None);
    }
    // More than the leader's in-memory tail for followers (16 MiB) after the deletes, so a
    // returning follower reads them from the (merged) log, not from that tail.
    let filler = "f".repeat(256 << 10);
    let filler_keys = keys_in(&c, P, "filler", 4);
    for i in 0..80 {
        let k = &filler_keys[i % filler_keys.len()];
        put(&mut conn, &mut acked, k, format!("{i}:{filler}"));
    }
    let persistence = |conn: &mut redis::Connection, field: &str| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(conn)
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO persistence has no {field}: {info}"))
    };
    // Twice: a merge the writes started on their own may have been running when the first
    // BGREWRITEAOF came (it then starts none); the second one starts after it, with the
    // deletes in closed segments.
    for _ in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while persistence(&mut conn, "aof_rewrite_in_progress") != 0 {
            assert!(Instant::now() < deadline, "merge still running after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = persistence(&mut conn, "merges_completed");
        let _: String = redis::cmd("BGREWRITEAOF")
            .query(&mut conn)
            .expect("BGREWRITEAOF");
        while persistence(&mut conn, "merges_completed") <= before {
            assert!(
                Instant::now() < deadline,
                "the leader did not merge within 20 s\n{}",
                c.all_log_tails()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(conn);

    c.restart(f);
    c.wait_for_full_isr(Duration::from_secs(30));
    set_all_acked(&c, l, &keys_in(&c, P, "final-", 5), "f", &mut acked);
    for k in deleted.iter().take(5) {
        assert_eq!(get(&c, l, k), None, "{k} deleted on the leader");
    }

    let r = assert_identical_replicas(&mut c, P, &acked);
    for k in &deleted {
        assert!(!has(&r, k), "{k}: a deleted key came back");
    }
}

/// A replica whose data is gone (a replaced disk) bootstraps by copying the leader's closed
/// segments and hint files, then fetches the rest: it ends identical to the others, and no
/// deleted key comes back.
#[test]
fn an_empty_replica_bootstraps_from_copied_segments_and_converges() {
    let mut c = LocalCluster::start(3, 1, 3, &[NO_REBALANCE, ("storage.segment_size", "1mb")]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let st = c.partition_state(P);
    let l = st.leader.expect("leader");
    let f = *st.replicas.iter().find(|&&r| r != l).expect("follower");
    let keys = keys_in(&c, P, "b", 400);
    let big = "y".repeat(8000);
    let mut acked = Acked::new();
    set_all_acked(&c, l, &keys, &format!("v1:{big}"), &mut acked);
    let mut conn = c.conn_to(l);
    for k in keys.iter().step_by(4) {
        let n: i64 = redis::cmd("DEL").arg(k).query(&mut conn).expect("DEL");
        assert_eq!(n, 1);
        acked.insert(k.clone(), None);
    }
    drop(conn);
    c.wipe_and_restart(f);
    c.wait_for_full_isr(Duration::from_secs(60));
    assert!(
        c.log_tail(f).contains("installed a snapshot"),
        "node {f} did not bootstrap from copied segments:\n{}",
        c.log_tail(f)
    );
    // Writes after the bootstrap reach it too.
    set_all_acked(&c, l, &keys[..20], "v2", &mut acked);
    assert_identical_replicas(&mut c, P, &acked);
}

/// Keys expire on the leader's clock only: its active expiry logs tombstones, which the
/// followers replicate; a follower never deletes on its own, so every replica ends with the
/// same log — the writes and exactly one tombstone per expired key.
#[test]
fn expiry_deletes_are_the_leaders_tombstones_on_every_replica() {
    let mut c = LocalCluster::start(3, 1, 3, &[NO_REBALANCE]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let l = c.leader_of(P).expect("leader");
    let keys = keys_in(&c, P, "e", 20);
    let mut conn = c.conn_to(l);
    for k in &keys {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v")
            .arg("PX")
            .arg(300)
            .query(&mut conn)
            .expect("SET PX");
    }
    // Active expiry runs on the leader's timer (10 times a second, sampling keys with a TTL).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(&mut conn)
            .expect("INFO");
        let expired: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("expired_keys:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if expired >= keys.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader expired {expired} keys only"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The followers have the tombstones once the leader's log end is everywhere.
    for f in c.partition_state(P).replicas {
        if f != l {
            wait_caught_up(&c, f, l, P);
        }
    }
    let mut acked = Acked::new();
    for k in &keys {
        acked.insert(k.clone(), None);
    }
    let r = assert_identical_replicas(&mut c, P, &acked);
    assert_eq!(
        r.log_end,
        2 * keys.len() as u64,
        "one write and one tombstone per key"
    );
}

/// A leader killed, wiped and restarted before its old ZooKeeper session expired must not
/// take its old leadership back with an empty log (its followers would cut theirs to match,
/// losing acknowledged writes): the controller sees its new broker epoch, moves the
/// leadership to another in-sync replica and takes it out of the ISR until it has caught up.
#[test]
fn a_leader_restarted_with_an_empty_disk_does_not_resume_its_old_leadership() {
    let mut c = LocalCluster::start(3, 1, 3, &[NO_REBALANCE]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let before = c.partition_state(P);
    let l = before.leader.expect("leader");
    let keys = keys_in(&c, P, "w", 50);
    let mut acked = Acked::new();
    set_all_acked(&c, l, &keys, "v1", &mut acked);
    c.wipe_and_restart(l);
    let (new, epoch) = wait_new_leader(&mut c, P, l, before.leader_epoch);
    assert_ne!(new, l);
    assert!(epoch > before.leader_epoch);
    c.wait_for_full_isr(Duration::from_secs(60));
    let other = (1..=3).find(|&i| i != l).unwrap_or(1);
    for k in keys.iter().step_by(7) {
        assert_eq!(get(&c, other, k), acked[k].clone(), "{k}");
    }
    assert_identical_replicas(&mut c, P, &acked);
}

/// Found by a chaos run: ZooKeeper stalled past the session timeout, so every node's session
/// expired and each registered again, the leader of a partition among them just back with a
/// wiped disk. The controller confirmed the leader it had, the only one it could see as in
/// sync, and the other replicas cut their logs to its empty one. Then, in a test run, the
/// wiped node registered first and alone, became controller, and knowing no log end but its
/// own empty one confirmed itself again. Here the other replicas are held (SIGSTOP) until it
/// has registered and had its rounds as controller. Its storage id is new, so it is not in
/// sync: the partition waits without a leader, and a replica that has every acknowledged
/// write leads once it is back.
#[test]
fn a_wiped_leader_does_not_keep_its_leadership_when_every_session_expired() {
    let mut c = LocalCluster::start(3, 1, 3, &[NO_REBALANCE, SESSION]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let before = c.partition_state(P);
    let l = before.leader.expect("leader");
    let others: Vec<u32> = (1..=3).filter(|&i| i != l).collect();
    let keys = keys_in(&c, P, "z", 50);
    let mut acked = Acked::new();
    set_all_acked(&c, l, &keys, "v1", &mut acked);
    // The leader crashes, its disk is replaced, and before its session has expired (so no
    // election has run) ZooKeeper stops answering; the node starts again meanwhile, and the
    // others stay paused until it has registered.
    c.kill9(l);
    let data = c.data_dir(l);
    std::fs::remove_dir_all(&data).expect("wipe");
    c.signal_zookeeper(true);
    for &o in &others {
        c.sigstop(o);
    }
    c.start_no_wait(l);
    std::thread::sleep(Duration::from_millis(6000));
    c.signal_zookeeper(false);
    let s = c.zk_session();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let live = simplekv_cluster::control::registry::live_brokers(&s)
            .map(|b| b.iter().map(|b| b.id).collect::<Vec<_>>())
            .unwrap_or_default();
        let controller = simplekv_cluster::control::election::current(&s)
            .ok()
            .flatten()
            .map(|c| c.id);
        if live == [l] && controller == Some(l) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {l} did not register alone as controller: live {live:?}, controller {controller:?}\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_state(&c, P, "without a leader", |st| st.leader.is_none());
    // Rounds of the controller later, it still has not taken the partition.
    std::thread::sleep(Duration::from_millis(1500));
    let st = c.partition_state(P);
    assert_eq!(st.leader, None, "the wiped node leads: {st:?}");
    for &o in &others {
        c.sigcont(o);
    }
    let (new, epoch) = wait_new_leader(&mut c, P, l, before.leader_epoch);
    assert_ne!(new, l, "the wiped node leads");
    assert!(epoch > before.leader_epoch);
    c.wait_for_full_isr(Duration::from_secs(60));
    for k in keys.iter().step_by(7) {
        assert_eq!(get(&c, new, k), acked[k].clone(), "{k}");
    }
    assert_identical_replicas(&mut c, P, &acked);
}

/// Occurrences of `marker` in node `i`'s log segments of partition `p` (files a merge
/// replaces meanwhile are skipped).
fn count_in_segments(c: &LocalCluster, i: u32, p: u32, marker: &[u8]) -> usize {
    let dir = partition_dir(c, i, p);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("node {i}: read {}: {e}", dir.display()));
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|b| b.windows(marker.len()).filter(|w| *w == marker).count())
        .sum()
}

/// DELs every key of `keys` (each must exist) and records it as deleted.
fn del_all(conn: &mut redis::Connection, keys: &[String], acked: &mut Acked) {
    for k in keys {
        let n: i64 = redis::cmd("DEL").arg(k).query(conn).expect("DEL");
        assert_eq!(n, 1, "DEL {k}");
        acked.insert(k.clone(), None);
    }
}

/// Overwrites two filler keys of partition `P` with 256 KiB values, `pause_ms` apart, which
/// rolls earlier records into closed segments and gives merges dead bytes, until at least
/// `min_rounds` are written and no log of `P` on the nodes of `watch.0` holds `watch.1` any
/// more (60 s at most).
fn fill_until_merged_away(
    c: &LocalCluster,
    conn: &mut redis::Connection,
    acked: &mut Acked,
    watch: (&[u32], &str),
    min_rounds: usize,
    pause_ms: u64,
) {
    let (nodes, marker) = watch;
    let filler = "f".repeat(256 << 10);
    let filler_keys = keys_in(c, P, "filler", 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0usize;
    loop {
        let k = &filler_keys[round % filler_keys.len()];
        let v = format!("{round}:{filler}");
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(&v)
            .query(conn)
            .expect("SET filler");
        acked.insert(k.clone(), Some(v));
        round += 1;
        let left: Vec<(u32, usize)> = nodes
            .iter()
            .map(|&i| (i, count_in_segments(c, i, P, marker.as_bytes())))
            .collect();
        if round >= min_rounds && left.iter().all(|&(_, n)| n == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deleted keys still in the logs (node, occurrences) after {round} filler writes: \
             {left:?}\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
}

/// Followers' merges drop tombstones too, below the merge horizon the leader sends with its
/// records (every replica has passed it), instead of keeping every delete forever: after
/// many keys are written and deleted, the deletes pushed into closed segments and the logs
/// merged, no node's log holds those keys any more. The follower's copy must match the
/// leader's keyspace afterwards.
#[test]
fn followers_merges_drop_the_tombstones_every_replica_has_passed() {
    let mut c = LocalCluster::start(3, 1, 3, MERGING);
    c.wait_for_full_isr(Duration::from_secs(30));
    let l = c.leader_of(P).expect("leader");
    let marker = "deleted-key-marker-";
    let keys = keys_in(&c, P, marker, 1000);
    let mut acked = Acked::new();
    set_all_acked(&c, l, &keys, "v", &mut acked);
    let mut conn = c.conn_to(l);
    del_all(&mut conn, &keys, &mut acked);
    // Each acknowledged filler write moves the horizon the followers hear about.
    let replicas = c.partition_state(P).replicas;
    fill_until_merged_away(&c, &mut conn, &mut acked, (&replicas, marker), 8, 100);
    drop(conn);
    let r = assert_identical_replicas(&mut c, P, &acked);
    assert!(keys.iter().all(|k| !has(&r, k)), "a deleted key came back");
}

/// Copies directory `from` to `to`, which must not exist (files and subdirectories).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    let entries =
        std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    for e in entries {
        let e = e.expect("directory entry");
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

/// A follower applies deletes, the leader merges them away once every replica has passed
/// them, and then the follower loses the end of its log, as a power cut can take what
/// `fsync = everysec` had not synced yet: here its data directory goes back to a copy taken
/// before the deletes. Fetching from its log end would never delete those keys (the leader
/// has no tombstones left for them), so the leader has it copy the segments instead, and
/// every replica ends with the same keyspace.
#[test]
fn a_replica_that_lost_deletes_the_leader_merged_away_is_rebuilt_from_its_segments() {
    let mut c = LocalCluster::start(3, 1, 3, MERGING);
    c.wait_for_full_isr(Duration::from_secs(30));
    let st = c.partition_state(P);
    let l = st.leader.expect("leader");
    let f = *st.replicas.iter().find(|&&r| r != l).expect("follower");
    let marker = "lost-delete-marker-";
    let keys = keys_in(&c, P, marker, 300);
    let mut acked = Acked::new();
    set_all_acked(&c, l, &keys, "v", &mut acked);
    // The disk image a crash could leave, taken before the deletes.
    c.kill9(f);
    let image = c.data_dir(f).with_extension("image");
    copy_dir(&c.data_dir(f), &image);
    c.restart(f);
    c.wait_for_full_isr(Duration::from_secs(30));
    let mut conn = c.conn_to(l);
    del_all(&mut conn, &keys, &mut acked);
    // At least 80 filler writes (20 MiB): more than the leader's in-memory tail for followers
    // (16 MiB), so the returning follower reads from the log.
    fill_until_merged_away(&c, &mut conn, &mut acked, (&[l], marker), 80, 20);
    drop(conn);
    c.kill9(f);
    std::fs::remove_dir_all(c.data_dir(f)).expect("remove the data directory");
    std::fs::rename(&image, c.data_dir(f)).expect("restore the image");
    c.restart(f);
    c.wait_for_full_isr(Duration::from_secs(60));
    assert!(
        c.log_tail(f).contains("replaced this replica's log"),
        "node {f} did not replace its log with the leader's segments:\n{}",
        c.log_tail(f)
    );
    set_all_acked(&c, l, &keys_in(&c, P, "after-", 5), "a", &mut acked);
    let r = assert_identical_replicas(&mut c, P, &acked);
    assert!(keys.iter().all(|k| !has(&r, k)), "a deleted key came back");
}
