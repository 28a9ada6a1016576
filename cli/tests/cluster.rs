//! Cluster mode with real processes: a ZooKeeper server and 3 nodes on loopback, each test
//! named after the invariant it checks. Failover times are printed (`--nocapture` shows them).
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{LocalCluster, get, run, set};
use redis::{RedisResult, Value};
use simplekv_net::slot::key_slot;

/// The node leading the most partitions (the one whose loss hurts most).
fn busiest_leader(c: &LocalCluster) -> u32 {
    let mut n: BTreeMap<u32, usize> = BTreeMap::new();
    for p in 0..c.partitions {
        if let Some(l) = c.leader_of(p) {
            *n.entry(l).or_default() += 1;
        }
    }
    n.into_iter()
        .max_by_key(|(_, k)| *k)
        .map(|(id, _)| id)
        .unwrap_or(1)
}

/// Waits (20 s at most) until `node` leads every partition with an ISR of itself alone.
fn wait_for_lone_leader(c: &LocalCluster, node: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..c.partitions)
        .any(|p| c.partition_state(p).isr != vec![node] || c.leader_of(p) != Some(node))
    {
        assert!(
            Instant::now() < deadline,
            "node {node} did not become the lone leader\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn writes_through_redirects_and_the_cluster_client_read_back_from_every_node() {
    let c = LocalCluster::start(3, 6, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    // redis-cli -c style: enter anywhere, follow MOVED.
    for i in 0..60 {
        set(&c, 1 + i % 3, &format!("k{i}"), &format!("v{i}")).expect("set");
    }
    // The redis crate's cluster client, unchanged: it reads CLUSTER SLOTS and routes itself.
    let nodes: Vec<String> = (1..=3)
        .map(|i| format!("redis://{}/", c.resp_addr(i)))
        .collect();
    let client = redis::cluster::ClusterClient::new(nodes).expect("cluster client");
    let mut cc = client.get_connection().expect("cluster connection");
    for i in 0..60 {
        let _: () = redis::cmd("SET")
            .arg(format!("cc{i}"))
            .arg(format!("w{i}"))
            .query(&mut cc)
            .expect("cluster client SET");
    }
    let v: String = redis::cmd("GET").arg("cc7").query(&mut cc).expect("GET");
    assert_eq!(v, "w7");
    // Hash tags keep multi-key commands on one slot; other multi-key commands are refused.
    let _: () = redis::cmd("MSET")
        .arg("{u}.a")
        .arg("1")
        .arg("{u}.b")
        .arg("2")
        .query(&mut cc)
        .expect("MSET with a hash tag");
    let e = run(
        &c.resp_addr(1),
        &[b"MSET", b"a1", b"1", b"b2", b"2"],
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(e.contains("crossslot"), "{e}");
    // A multi-key read sent to a node that does not lead its slot is one MOVED, as Redis
    // Cluster answers (an array of per-key errors is not a redirect to clients).
    let p = c.partition_of(b"{u}.a");
    let leader = c.leader_of(p).expect("leader");
    let other = (1..=3).find(|&i| i != leader).expect("another node");
    let mut raw = std::net::TcpStream::connect(c.resp_addr(other)).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut raw, b"MGET {u}.a {u}.b\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut raw, &mut buf).expect("reply");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("-MOVED "), "{reply:?}");
    // A redirect is a call refused before it ran, as Redis Cluster counts it.
    let info = run(
        &c.resp_addr(other),
        &[b"INFO", b"commandstats"],
        Duration::from_secs(5),
    );
    let Ok(Value::BulkString(text)) = info else {
        panic!("{info:?}")
    };
    let text = String::from_utf8_lossy(&text);
    let mget = text
        .lines()
        .find(|l| l.starts_with("cmdstat_mget:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        mget.starts_with("cmdstat_mget:calls=0,")
            && mget.ends_with("rejected_calls=1,failed_calls=0"),
        "{mget}"
    );
    // Inside MULTI the redirect comes with the first command of the slot, as in Redis
    // Cluster, and EXEC then aborts: a cluster client learns where to go before EXEC.
    std::io::Write::write_all(&mut raw, b"MULTI\r\nSET {u}.a 3\r\nEXEC\r\n").unwrap();
    let mut replies = Vec::new();
    while !replies.ends_with(b"\r\n") || replies.iter().filter(|&&b| b == b'\n').count() < 3 {
        let n = std::io::Read::read(&mut raw, &mut buf).expect("replies");
        assert!(
            n > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&replies)
        );
        replies.extend_from_slice(&buf[..n]);
    }
    let replies = String::from_utf8_lossy(&replies);
    let lines: Vec<&str> = replies.lines().collect();
    assert_eq!(lines[0], "+OK", "{replies:?}");
    assert!(lines[1].starts_with("-MOVED "), "{replies:?}");
    assert!(lines[2].starts_with("-EXECABORT "), "{replies:?}");
    for entry in 1..=3 {
        for i in (0..60).step_by(7) {
            assert_eq!(get(&c, entry, &format!("k{i}")), Some(format!("v{i}")));
            assert_eq!(get(&c, entry, &format!("cc{i}")), Some(format!("w{i}")));
        }
    }
    // Redis Cluster introspection in Redis's formats.
    let mut n1 = c.conn_to(1);
    let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut n1).unwrap();
    assert_eq!(slots.len(), 6, "one slot range per partition");
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut n1).unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
    let ks: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("{user}.x")
        .query(&mut n1)
        .unwrap();
    assert_eq!(ks, 5474);
}

#[test]
fn a_killed_leaders_partitions_get_new_leaders_from_the_isr_with_a_higher_epoch() {
    let mut c = LocalCluster::start(3, 6, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let victim = busiest_leader(&c);
    let led: Vec<u32> = (0..c.partitions)
        .filter(|&p| c.leader_of(p) == Some(victim))
        .collect();
    let before: BTreeMap<u32, _> = led.iter().map(|&p| (p, c.partition_state(p))).collect();
    let other = if victim == 1 { 2 } else { 1 };
    let key = c.key_in(led[0]).to_string();
    set(&c, other, &key, "before").expect("set before the kill");
    c.kill9(victim);
    let t0 = Instant::now();
    set(&c, other, &key, "after").expect("a write after the failover");
    let took = t0.elapsed();
    println!(
        "kill -9 of leader node {victim} -> first acknowledged write on its partition: {took:?}"
    );
    for &p in &led {
        let s = c.partition_state(p);
        let b = &before[&p];
        let l = s.leader.expect("a new leader");
        assert_ne!(l, victim);
        assert!(
            b.isr.contains(&l),
            "partition {p}: leader {l} not from the ISR {:?}",
            b.isr
        );
        assert!(
            s.leader_epoch > b.leader_epoch,
            "partition {p}: epoch did not grow"
        );
    }
    assert_eq!(get(&c, other, &key).as_deref(), Some("after"));
    assert!(
        took < Duration::from_secs(10),
        "failover took {took:?}\n{}",
        c.all_log_tails()
    );
}

/// Per key: the last acknowledged value, and values attempted (not acknowledged) after it.
type Acked = BTreeMap<String, (Option<u64>, Vec<u64>)>;

/// Writers with unique values; kill -9 the busiest leader in the middle. Every acknowledged
/// write must be readable afterwards (or overwritten by a later write of the same key).
#[test]
fn acks_all_writes_survive_kill_9_of_the_leader_under_load() {
    let mut c = LocalCluster::start(3, 6, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    // key -> (last acknowledged value, values attempted after it)
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut threads = Vec::new();
    let addrs: Vec<String> = (1..=3).map(|i| c.resp_addr(i)).collect();
    for t in 0..4u64 {
        let stop = stop.clone();
        let acked = acked.clone();
        let addrs = addrs.clone();
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 5000 {
                let key = format!("w{t}-{}", n % 20);
                let val = t * 1_000_000 + n;
                let entry = &addrs[(n as usize) % addrs.len()];
                acked
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .1
                    .push(val);
                let r = run(
                    entry,
                    &[b"SET", key.as_bytes(), val.to_string().as_bytes()],
                    Duration::from_secs(3),
                );
                if r.is_ok() {
                    let mut m = acked.lock().unwrap();
                    let e = m.entry(key).or_default();
                    e.0 = Some(val);
                    e.1.clear();
                }
                n += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let victim = busiest_leader(&c);
    c.kill9(victim);
    std::thread::sleep(Duration::from_millis(4000));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let reader = if victim == 1 { 2 } else { 1 };
    let m = acked.lock().unwrap().clone();
    let mut checked = 0;
    for (k, (last, later)) in &m {
        let Some(last) = last else { continue };
        let got: u64 = get(&c, reader, k)
            .unwrap_or_else(|| panic!("{k}: acknowledged {last} but the key is gone"))
            .parse()
            .unwrap();
        assert!(
            got == *last || later.contains(&got),
            "{k}: acknowledged {last}, read {got} (unacknowledged attempts after it: {later:?})"
        );
        checked += 1;
    }
    assert!(checked > 10, "too few acknowledged writes: {checked}");
}

#[test]
fn min_isr_refuses_writes_with_two_of_three_down_and_accepts_them_when_back() {
    let mut c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    c.kill9(2);
    c.kill9(3);
    // Node 1 ends up leading everything with an ISR of itself alone.
    wait_for_lone_leader(&c, 1);
    for p in 0..3 {
        let k = c.key_in(p).to_string();
        let e = run(
            &c.resp_addr(1),
            &[b"SET", k.as_bytes(), b"x"],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.contains("noreplicas"), "partition {p}: {e}");
        // Not applied: the key does not exist.
        assert_eq!(get(&c, 1, &k), None, "a refused write was applied");
    }
    c.restart(2);
    c.restart(3);
    c.wait_for_full_isr(Duration::from_secs(30));
    for p in 0..3 {
        let k = c.key_in(p).to_string();
        set(&c, 1, &k, "ok").expect("write with the ISR back");
        assert_eq!(get(&c, 2, &k).as_deref(), Some("ok"));
    }
}

/// An acks=all write taken with the ISR full, whose in-sync followers then stop (and leave
/// the ISR) before confirming it, is not acknowledged: the high watermark passes it with the
/// leader alone counted, fewer than min_insync_replicas (2), so one replica has it. Kafka
/// answers NOT_ENOUGH_REPLICAS_AFTER_APPEND; it used to get +OK.
#[test]
fn a_write_confirmed_by_fewer_than_min_insync_replicas_is_not_acknowledged() {
    use std::io::{BufRead, BufReader, Write};
    let c = LocalCluster::start(3, 1, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let leader = c.leader_of(0).expect("leader");
    let key = c.key_in(0).to_string();
    // Connected before the followers stop, so the write goes out at once (the leader takes
    // writes for a moment more: its lease lasts a quarter of the session timeout).
    let s = std::net::TcpStream::connect(c.resp_addr(leader)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let followers: Vec<u32> = (1..=3).filter(|&n| n != leader).collect();
    for &f in &followers {
        c.sigstop(f);
    }
    (&s).write_all(&common::resp(&[b"SET", key.as_bytes(), b"x"]))
        .unwrap();
    let mut reply = String::new();
    let read = BufReader::new(&s).read_line(&mut reply);
    for &f in &followers {
        c.sigcont(f);
    }
    read.unwrap();
    assert!(
        reply.starts_with("-ERR not acknowledged") && reply.contains("min_insync_replicas"),
        "{reply:?}\n{}",
        c.log_tail(leader)
    );
}

/// With one replica a partition's leader is its whole ISR: what it logs is committed at
/// once, so acks=all writes and reads answer (they used to wait for a follower position
/// that never comes and fail after 5 s).
#[test]
fn partitions_with_one_replica_commit_what_their_leader_logs() {
    let mut c = LocalCluster::start(3, 3, 1, &[("cluster.min_insync_replicas", "1")]);
    c.wait_for_leaders(Duration::from_secs(30));
    for p in 0..3 {
        let k = c.key_in(p).to_string();
        for round in 0..3 {
            let v = format!("v{round}");
            let t = Instant::now();
            set(&c, 1, &k, &v).unwrap_or_else(|e| panic!("partition {p}: {e}"));
            assert_eq!(get(&c, 2, &k), Some(v));
            assert!(
                t.elapsed() < Duration::from_secs(3),
                "partition {p}: {:?} for a write and a read",
                t.elapsed()
            );
        }
        let st = c.partition_state(p);
        assert_eq!(st.isr.len(), 1, "{st:?}");
    }
}

/// SIGSTOP a leader past its session timeout: the others elect new leaders and take writes;
/// after SIGCONT the old leader never answers with its stale value, rejoins as follower, and
/// every acknowledged write is there.
#[test]
fn a_paused_leader_serves_no_stale_read_and_rejoins_as_follower() {
    let c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let p = 0;
    let old = c.leader_of(p).expect("leader");
    let other = if old == 1 { 2 } else { 1 };
    let key = c.key_in(p).to_string();
    // A key the new leader deletes: keyless reads (KEYS, SCAN, DBSIZE) must not list it.
    let gone = format!("{{{key}}}.gone");
    set(&c, old, &key, "v1").expect("set v1");
    set(&c, old, &gone, "x").expect("set gone");
    c.sigstop(old);
    // A new leader takes the write.
    set(&c, other, &key, "v2").expect("set v2 on the new leader");
    run(
        &c.resp_addr(other),
        &[b"DEL", gone.as_bytes()],
        Duration::from_secs(20),
    )
    .expect("DEL on the new leader");
    let new_leader = c.leader_of(p).expect("new leader");
    assert_ne!(new_leader, old);
    c.sigcont(old);
    // Straight after waking up, the old leader must not say v1, nor list the deleted key.
    let mut conn = c.conn_to(old);
    for _ in 0..20 {
        let r: RedisResult<Vec<String>> = redis::cmd("KEYS").arg("*").query(&mut conn);
        match r {
            Ok(keys) => assert!(
                !keys.contains(&gone),
                "the paused leader listed a deleted key\n{}",
                c.all_log_tails()
            ),
            Err(e) => {
                let t = e.to_string().to_lowercase();
                assert!(t.contains("tryagain"), "{t}");
            }
        }
        let r: RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query(&mut conn);
        match r {
            Ok(Some(v)) => assert_eq!(
                v,
                "v2",
                "the paused leader served a stale read\n{}",
                c.all_log_tails()
            ),
            Ok(None) => panic!("the old leader answered nil"),
            Err(e) => {
                let t = e.to_string().to_lowercase();
                assert!(t.contains("moved") || t.contains("tryagain"), "{t}");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_for_full_isr(Duration::from_secs(30));
    assert_eq!(get(&c, old, &key).as_deref(), Some("v2"));
}

/// Rolling restart: each node in turn is shut down with SIGTERM (controlled shutdown moves
/// its leaderships away first) and started again, under a steady write load. No write may
/// fail with anything but a redirect (which the client follows).
#[test]
fn controlled_shutdown_and_restart_of_each_node_costs_clients_at_most_a_redirect() {
    let mut c = LocalCluster::start(3, 6, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let addrs: Vec<String> = (1..=3).map(|i| c.resp_addr(i)).collect();
    let t0 = Instant::now();
    let writer = {
        let (stop, failures, ok) = (stop.clone(), failures.clone(), ok.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("r{}", n % 50);
                // Enter through any node that is up.
                let mut last = String::new();
                let mut done = false;
                let began = t0.elapsed();
                for a in &addrs {
                    match run(a, &[b"SET", key.as_bytes(), b"v"], Duration::from_secs(1)) {
                        Ok(_) => {
                            done = true;
                            break;
                        }
                        Err(e) if e.contains("refused") || e.contains("connection") => {
                            last = e;
                        }
                        Err(e) => {
                            last = format!("entering at {a}: {e}");
                            break;
                        }
                    }
                }
                if done {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push(format!(
                        "{key} (sent {began:?} .. {:?} after the start): {last}",
                        t0.elapsed()
                    ));
                }
                n += 1;
            }
        })
    };
    for i in 1..=3 {
        std::thread::sleep(Duration::from_millis(500));
        println!("{:?}: SIGTERM to node {i}", t0.elapsed());
        assert_eq!(c.sigterm_and_wait(i), Some(0), "node {i} exit code");
        println!("{:?}: node {i} exited; restarting it", t0.elapsed());
        c.restart(i);
        c.wait_for_full_isr(Duration::from_secs(30));
        println!("{:?}: node {i} back in every ISR", t0.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let f = failures.lock().unwrap();
    println!(
        "rolling restart: {} writes acknowledged, {} failed",
        ok.load(Ordering::Relaxed),
        f.len()
    );
    assert!(
        f.is_empty(),
        "writes failed: {:?}\n{}",
        &f[..f.len().min(10)],
        c.all_log_tails()
    );
}

fn log_ends_probe(grpc: &str, controller_epoch: u64) -> simplekv_proto::replication::LogEndsReply {
    let env = Arc::new(grpcio::Environment::new(1));
    let ch = grpcio::ChannelBuilder::new(env).connect(grpc);
    let client = simplekv_proto::replication_grpc::ReplicationClient::new(ch);
    let mut req = simplekv_proto::replication::LogEndsRequest::new();
    req.controller_epoch = controller_epoch;
    req.partitions = vec![0, 1, 2];
    let opt = grpcio::CallOption::default().timeout(Duration::from_secs(5));
    client.log_ends_opt(&req, opt).expect("LogEnds")
}

/// With `cluster.secret`, nodes replicate, elect and copy with it, and a replication call
/// without it is refused: a stranger on the gRPC port can neither read the logs nor pose as a
/// follower (whose positions would move the high watermark).
#[test]
fn replication_calls_must_carry_the_cluster_secret() {
    use simplekv_proto::replication::*;
    let mut c = LocalCluster::start(3, 3, 3, &[("cluster.secret", "s3cret-shared")]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let leader = c.leader_of(0).expect("a leader");
    let other = (1..=3).find(|&i| i != leader).expect("another node");
    let key = c.key_in(0).to_string();
    set(&c, other, &key, "kept").expect("SET with acks=all");
    c.kill9(leader);
    c.wait_for_leaders(Duration::from_secs(30));
    assert_eq!(get(&c, other, &key).as_deref(), Some("kept"));
    // No call of the nodes' own was refused (the controller's log-end probes included).
    for i in 1..=3 {
        let log = c.log_since(i, 0);
        assert!(
            !log.contains("cluster.secret") && !log.contains("refused the log-end probe"),
            "node {i}:\n{log}"
        );
    }
    // `cluster status` shows log ends when given the secret in the environment, not without.
    let status = |secret: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
            .args(["cluster", "status", "--zk", &c.zk_connect()])
            .env("SIMPLEKV_CLUSTER_SECRET", secret)
            .output()
            .expect("cluster status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        status("s3cret-shared").contains(&format!(" {other}:1/1")),
        "{}",
        status("s3cret-shared")
    );
    assert!(
        status("").contains(&format!(" {other}:-")),
        "{}",
        status("")
    );
    // CONFIG GET does not give it away.
    let v = run(
        &c.resp_addr(other),
        &[b"CONFIG", b"GET", b"cluster.secret"],
        Duration::from_secs(10),
    )
    .expect("CONFIG GET");
    assert!(!format!("{v:?}").contains("s3cret"), "{v:?}");
    let env = Arc::new(grpcio::Environment::new(1));
    let client = simplekv_proto::replication_grpc::ReplicationClient::new(
        grpcio::ChannelBuilder::new(env).connect(&c.grpc_addr(other)),
    );
    let opt = || grpcio::CallOption::default().timeout(Duration::from_secs(5));
    let unauthenticated = |e: grpcio::Error| match e {
        grpcio::Error::RpcFailure(s) => s.code() == grpcio::RpcStatusCode::UNAUTHENTICATED,
        _ => false,
    };
    let mut req = LogEndsRequest::new();
    req.partitions = vec![0];
    let e = client
        .log_ends_opt(&req, opt())
        .expect_err("LogEnds without the secret");
    assert!(unauthenticated(e));
    let mut req = SnapshotRequest::new();
    req.partition = 0;
    let stream = client.snapshot_opt(&req, opt()).expect("call started");
    let first = futures::executor::block_on_stream(stream)
        .next()
        .expect("an answer");
    assert!(
        first.is_err_and(unauthenticated),
        "a snapshot without the secret"
    );
    let (mut tx, rx) = client.fetch_opt(opt()).expect("call started");
    let mut f = FetchRequest::new();
    f.follower_id = 99;
    let _ = futures::executor::block_on(futures::SinkExt::send(
        &mut tx,
        (f, grpcio::WriteFlags::default()),
    ));
    let first = futures::executor::block_on_stream(rx)
        .next()
        .expect("an answer");
    assert!(
        first.is_err_and(unauthenticated),
        "a fetch without the secret"
    );
    assert!(
        c.log_tail(other)
            .contains("does not carry this node's cluster.secret")
    );
    // With the secret, partition ids from the request are checked, not trusted.
    let mut req = LogEndsRequest::new();
    req.partitions = vec![0, u32::MAX];
    req.status = true;
    let with =
        simplekv_cluster::grpc::secret_opt(Some("s3cret-shared")).timeout(Duration::from_secs(5));
    let r = client
        .log_ends_opt(&req, with)
        .expect("LogEnds with the secret");
    assert!(r.refused && r.message.contains("no partition"), "{r:?}");
    assert!(c.is_running(other), "the node is still up");
    assert_eq!(get(&c, other, &key).as_deref(), Some("kept"));
}

/// SIGSTOP the controller past its session timeout: another node takes over with a higher
/// controller epoch; after SIGCONT the old one is an ordinary node, ZooKeeper still names the
/// new controller, and requests carrying the old epoch are refused by the nodes.
#[test]
fn a_stale_controller_is_fenced_by_epochs_after_a_pause() {
    use simplekv_cluster::control::election;
    let c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let zk = c.zk_session();
    let old = election::current(&zk).unwrap().expect("a controller");
    c.sigstop(old.id);
    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        if let Ok(Some(n)) = election::current(&zk)
            && n.id != old.id
        {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no new controller\n{}",
            c.all_log_tails()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(new.epoch > old.epoch, "{new:?} after {old:?}");
    let other = (1..=3).find(|&i| i != old.id).unwrap_or(1);
    // Nodes have seen the new epoch (the new controller probes them when it elects, and
    // they learn it from ZooKeeper): a request with the old one is refused.
    let _ = log_ends_probe(&c.grpc_addr(other), new.epoch);
    let r = log_ends_probe(&c.grpc_addr(other), old.epoch);
    assert!(
        r.refused,
        "a request with the stale controller epoch was served"
    );
    c.sigcont(old.id);
    std::thread::sleep(Duration::from_secs(3));
    let now = election::current(&zk).unwrap().expect("a controller");
    assert_eq!(
        (now.id, now.epoch),
        (new.id, new.epoch),
        "the stale controller took over"
    );
    for p in 0..3 {
        let s = c.partition_state(p);
        assert!(s.controller_epoch <= new.epoch, "partition {p}: {s:?}");
    }
    // The old controller serves as an ordinary node again.
    let key = c.key_in(0).to_string();
    set(&c, old.id, &key, "after").expect("write through the old controller");
    assert_eq!(get(&c, old.id, &key).as_deref(), Some("after"));
}

/// WAIT answers how many in-sync followers have this connection's writes, as Redis does for
/// its replicas; with acks=1 it is what makes a write wait for them.
#[test]
fn wait_counts_the_in_sync_followers_that_have_the_connections_writes() {
    let c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let p = 1;
    let leader = c.leader_of(p).expect("leader");
    let key = c.key_in(p).to_string();
    let mut conn = c.conn_to(leader);
    let _: () = redis::cmd("CLIENT")
        .arg("ACKS")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let n: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 2, "both followers should have the write");
    // Keys of a slot are read where they are led: a follower redirects, as for a GET (its
    // copy may hold writes not committed yet).
    let slot = key_slot(key.as_bytes());
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let e = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query::<i64>(&mut c.conn_to(follower))
        .unwrap_err();
    assert!(format!("{e}").to_lowercase().contains("moved"), "{e}");
    let n: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut conn)
        .unwrap();
    assert_eq!(n, 1);
    // More replicas than exist: the timeout answers with what there is.
    let t = Instant::now();
    let n: i64 = redis::cmd("WAIT").arg(5).arg(300).query(&mut conn).unwrap();
    assert_eq!(n, 2);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "WAIT did not wait"
    );
    // CONFIG SET of cluster.min_insync_replicas and cluster.acks takes effect at once.
    let config_set = |conn: &mut redis::Connection, k: &str, v: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query::<()>(conn)
            .unwrap()
    };
    config_set(&mut conn, "cluster.min_insync_replicas", "4");
    let mut fresh = c.conn_to(leader);
    let e = redis::cmd("SET")
        .arg(&key)
        .arg("y")
        .query::<()>(&mut fresh)
        .unwrap_err();
    assert!(format!("{e}").contains("NOREPLICAS"), "{e}");
    config_set(&mut conn, "cluster.acks", "1");
    let mut fresh = c.conn_to(leader);
    let acks: String = redis::cmd("CLIENT").arg("ACKS").query(&mut fresh).unwrap();
    assert_eq!(acks, "1");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("y")
        .query(&mut fresh)
        .unwrap();
    config_set(&mut conn, "cluster.acks", "all");
    config_set(&mut conn, "cluster.min_insync_replicas", "4");
    // A transaction with a write is refused whole where a write would be.
    let mut fresh = c.conn_to(leader);
    // MULTI, the commands, EXEC one by one: a client library's atomic pipeline keeps only a
    // generic text for an error EXEC answers. As in Redis Cluster, a command refused while
    // queued (CROSSSLOT, MOVED, NOREPLICAS) answers the refusal and makes EXEC abort; the
    // first refusal is returned.
    let exec = |conn: &mut redis::Connection, queue: &[&[&str]]| -> RedisResult<Value> {
        let _: () = redis::cmd("MULTI").query(conn)?;
        let mut refused = None;
        for args in queue {
            if let Err(e) = redis::cmd(args[0]).arg(&args[1..]).query::<Value>(conn) {
                refused.get_or_insert(e);
            }
        }
        let done = redis::cmd("EXEC").query(conn);
        match refused {
            Some(e) => {
                let abort = format!("{}", done.unwrap_err());
                assert!(
                    abort.contains("discarded because of previous errors"),
                    "{abort}"
                );
                Err(e)
            }
            None => done,
        }
    };
    let e = exec(&mut fresh, &[&["GET", &key], &["SET", &key, "tx"]]).unwrap_err();
    assert!(format!("{e}").contains("NOREPLICAS"), "{e}");
    // A CLIENT ACKS queued in a transaction applies to its writes (this connection's acks
    // are 1 before it): refused as an acks=all write is, and, the transaction having run
    // nothing, the connection keeps acks 1.
    let e = exec(
        &mut conn,
        &[&["CLIENT", "ACKS", "all"], &["SET", &key, "tx-acks"]],
    )
    .unwrap_err();
    assert!(format!("{e}").contains("NOREPLICAS"), "{e}");
    // Also when the transaction sets acks 1 again after the write.
    let queue: &[&[&str]] = &[
        &["CLIENT", "ACKS", "all"],
        &["SET", &key, "tx-acks"],
        &["CLIENT", "ACKS", "1"],
    ];
    let e = exec(&mut conn, queue).unwrap_err();
    assert!(format!("{e}").contains("NOREPLICAS"), "{e}");
    let acks: String = redis::cmd("CLIENT").arg("ACKS").query(&mut conn).unwrap();
    assert_eq!(acks, "1");
    config_set(&mut conn, "cluster.min_insync_replicas", "2");
    let mut fresh = c.conn_to(leader);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("z")
        .query(&mut fresh)
        .unwrap();
    // Transactions run on one slot's leader, as in Redis Cluster (hash tags put keys together).
    let tagged = format!("{{{key}}}.n");
    let (ok, n, v): (String, i64, String) = redis::pipe()
        .atomic()
        .set(&tagged, 5)
        .incr(&tagged, 2)
        .get(&key)
        .query(&mut fresh)
        .unwrap();
    assert_eq!((ok.as_str(), n, v.as_str()), ("OK", 7, "z"));
    let other = (0..)
        .map(|i| format!("other{i}"))
        .find(|k| key_slot(k.as_bytes()) != key_slot(key.as_bytes()))
        .unwrap();
    let e = exec(&mut fresh, &[&["SET", &key, "a"], &["SET", &other, "b"]]).unwrap_err();
    assert!(format!("{e}").to_lowercase().contains("crossslot"), "{e}");
    assert_eq!(get(&c, leader, &key), Some("z".into()));
    let _: () = redis::cmd("WATCH").arg(&tagged).query(&mut fresh).unwrap();
    let _: i64 = redis::cmd("INCR").arg(&tagged).query(&mut conn).unwrap();
    let r: Value = redis::pipe()
        .atomic()
        .set(&key, "lost")
        .query(&mut fresh)
        .unwrap();
    assert_eq!(r, Value::Nil, "a watched key changed: nothing runs");
    // Server commands run inside a transaction too. WAIT there does not block, as in Redis: it
    // counts the replicas that have the partition's records so far (none yet of a write
    // the same transaction made before it).
    let n: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query(&mut fresh)
        .unwrap();
    assert_eq!(n, 2);
    let (before, ok, after, keyspace): (i64, String, i64, String) = redis::pipe()
        .atomic()
        .cmd("WAIT")
        .arg(2)
        .arg(0)
        .set(&tagged, "w")
        .cmd("WAIT")
        .arg(2)
        .arg(0)
        .cmd("INFO")
        .arg("keyspace")
        .query(&mut fresh)
        .unwrap();
    assert_eq!((before, ok.as_str(), after), (2, "OK", 0));
    assert!(keyspace.contains("db0:keys="), "{keyspace}");
    // RENAME and COPY within one slot; across slots, CROSSSLOT.
    let moved = format!("{{{key}}}.moved");
    let _: () = redis::cmd("RENAME")
        .arg(&tagged)
        .arg(&moved)
        .query(&mut fresh)
        .unwrap();
    let n: i64 = redis::cmd("COPY")
        .arg(&moved)
        .arg(&tagged)
        .query(&mut fresh)
        .unwrap();
    assert_eq!(n, 1);
    let e = redis::cmd("RENAME")
        .arg(&key)
        .arg(&other)
        .query::<()>(&mut fresh)
        .unwrap_err();
    assert!(format!("{e}").to_lowercase().contains("crossslot"), "{e}");
    assert_eq!(get(&c, leader, &key), Some("z".into()));
    // The status table shows every replica's log end and high watermark.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(["cluster", "status", "--zk", &c.zk_connect()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .skip_while(|l| !l.starts_with("partitions:"))
        .find(|l| l.split_whitespace().next() == Some(&p.to_string()))
        .unwrap_or_else(|| panic!("no line for partition {p}:\n{text}"));
    assert!(line.contains(&format!("{leader}:")), "{line}");
    assert!(line.contains("/"), "log end/high watermark missing: {line}");
}

/// SHUTDOWN sent to a cluster node is a controlled shutdown, as SIGTERM is: its leaderships
/// move to in-sync replicas before it stops.
#[test]
fn shutdown_command_moves_the_nodes_leaderships_before_it_stops() {
    let mut c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let node = c.leader_of(0).expect("leader");
    let before = c.partition_state(0);
    let others: Vec<u32> = (1..=3).filter(|&i| i != node).collect();
    let marks: Vec<u64> = others.iter().map(|&i| c.log_len(i)).collect();
    let mut conn = c.conn_to(node);
    let _: RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut conn);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.is_running(node) {
        assert!(
            Instant::now() < deadline,
            "node {node} did not stop\n{}",
            c.log_tail(node)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = c.partition_state(0);
    assert_ne!(after.leader, Some(node));
    assert!(
        after.leader.is_some(),
        "partition 0 has no leader: {after:?}"
    );
    assert!(after.leader_epoch > before.leader_epoch);
    assert!(
        c.log_tail(node).contains("leaderships moved"),
        "{}",
        c.log_tail(node)
    );
    // Once out of the ISRs, a node in a controlled shutdown is not taken back into one,
    // though it goes on fetching until it stops.
    for (&i, &from) in others.iter().zip(&marks) {
        let log = c.log_since(i, from);
        for line in log.lines().filter(|l| l.contains("growing the ISR to")) {
            let isr = line
                .rsplit_once("growing the ISR to ")
                .map_or("", |(_, l)| l);
            let ids: Vec<u32> = isr
                .trim_matches(|ch| ch == '[' || ch == ']')
                .split(", ")
                .filter_map(|x| x.parse().ok())
                .collect();
            assert!(
                !ids.contains(&node),
                "node {i} took node {node} back: {line}"
            );
        }
    }
}

/// redis-py's RedisCluster (Debian's python3-redis, installed by scripts/setup.sh) works
/// unchanged: it discovers the slots, routes by itself, and reads back what the redis crate
/// wrote.
#[test]
fn redis_py_cluster_client_works_unchanged() {
    let c = LocalCluster::start(3, 6, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    for i in 0..20 {
        set(&c, 1, &format!("py{i}"), &format!("from-rust-{i}")).expect("set");
    }
    let addr = c.resp_addr(2);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        r#"
from redis.cluster import RedisCluster
rc = RedisCluster(host="{host}", port={port}, socket_timeout=10)
for i in range(20):
    assert rc.get(f"py{{i}}") == f"from-rust-{{i}}".encode(), i
for i in range(50):
    rc.set(f"pyw{{i}}", f"v{{i}}")
assert rc.mset_nonatomic({{"{{t}}a": "1", "{{t}}b": "2"}})
assert rc.get("{{t}}b") == b"2"
# Every node leads partitions: all three are primaries, so calls sent to every primary
# (SCAN, DBSIZE, FLUSHDB) reach every key. 20 + 50 + 2 keys.
primaries = rc.get_primaries()
assert len(primaries) == 3, primaries
assert len(set(rc.scan_iter(count=1000))) == 72, sorted(rc.scan_iter())
n = rc.dbsize(target_nodes=RedisCluster.PRIMARIES)
assert (sum(n.values()) if isinstance(n, dict) else n) == 72, n
print("ok", len(rc.get_nodes()))
"#
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (scripts/setup.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("ok 3"),
        "redis-py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in (0..50).step_by(7) {
        assert_eq!(get(&c, 3, &format!("pyw{i}")), Some(format!("v{i}")));
    }
}

#[test]
fn values_larger_than_a_default_grpc_message_replicate_and_survive_the_leaders_loss() {
    // gRPC refuses messages over 4 MiB unless told otherwise; a push carries whole records,
    // so a 6 MiB value must still reach every follower (acks=all waits for them).
    let mut c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let p = 0;
    let leader = c.leader_of(p).expect("a leader");
    let other = if leader == 1 { 2 } else { 1 };
    let key = c.key_in(p).to_string();
    let big: String = (0..6 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    set(&c, other, &key, &big).expect("a 6 MiB SET with acks=all");
    // The stream still carries small writes after it.
    let small = c.key_in(p).to_string() + "-small";
    set(&c, other, &small, "after").expect("a small SET after the big one");
    c.kill9(leader);
    c.wait_for_leaders(Duration::from_secs(30));
    let got = get(&c, other, &key).expect("the big value after the leader's loss");
    assert!(got == big, "value of {} bytes differs", got.len());
    assert_eq!(get(&c, other, &small).as_deref(), Some("after"));
}

/// Over gRPC as over RESP, the keys of one MGet, MSet or Del must share a slot: the request
/// then runs on that partition's leader or is redirected whole. (Before, only the first key
/// was checked, and the others were read from and written to whatever copy the node held,
/// a follower's included.) A redirect names the leader's gRPC address.
#[test]
fn grpc_multi_key_requests_need_one_slot_and_redirects_name_the_grpc_port() {
    use simplekv_proto::kv::*;
    use simplekv_proto::kv_grpc::KvClient;
    let c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let leader = c.leader_of(0).expect("a leader");
    let other = (1..=3).find(|&i| i != leader).expect("another node");
    let env = Arc::new(grpcio::Environment::new(1));
    let client =
        |i: u32| KvClient::new(grpcio::ChannelBuilder::new(env.clone()).connect(&c.grpc_addr(i)));
    let opt = || grpcio::CallOption::default().timeout(Duration::from_secs(10));
    let status = |s: &protobuf::MessageField<Status>| {
        s.as_ref()
            .map(|s| (s.code.enum_value_or(Code::INTERNAL), s.message.clone()))
            .unwrap_or((Code::OK, String::new()))
    };
    let (k0, k1) = (c.key_in(0).to_string(), c.key_in(1).to_string());
    for node in [leader, other] {
        let kv = client(node);
        let mut mset = MSetRequest::new();
        for k in [&k0, &k1] {
            let mut p = KeyValue::new();
            p.key = k.as_bytes().to_vec();
            p.value = b"bogus".to_vec();
            mset.pairs.push(p);
        }
        let (code, msg) = status(&kv.m_set_opt(&mset, opt()).expect("mset").status);
        assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.starts_with("CROSSSLOT"), "{msg}");
        let mut mget = MGetRequest::new();
        mget.keys = vec![k0.as_bytes().to_vec(), k1.as_bytes().to_vec()];
        let (_, msg) = status(&kv.m_get_opt(&mget, opt()).expect("mget").status);
        assert!(msg.starts_with("CROSSSLOT"), "{msg}");
        let mut del = DelRequest::new();
        del.keys = mget.keys.clone();
        let (_, msg) = status(&kv.del_opt(&del, opt()).expect("del").status);
        assert!(msg.starts_with("CROSSSLOT"), "{msg}");
    }
    assert_eq!(get(&c, other, &k0), None, "a refused MSET wrote nothing");
    assert_eq!(get(&c, other, &k1), None, "a refused MSET wrote nothing");
    // A key led elsewhere: MOVED to the leader's gRPC port, even for a multi-key request.
    let tagged: Vec<Vec<u8>> = ["a", "b"]
        .iter()
        .map(|s| format!("{{{k0}}}{s}").into_bytes())
        .collect();
    let mut mset = MSetRequest::new();
    for k in &tagged {
        let mut p = KeyValue::new();
        p.key = k.clone();
        p.value = b"v".to_vec();
        mset.pairs.push(p);
    }
    let (code, msg) = status(&client(other).m_set_opt(&mset, opt()).expect("mset").status);
    assert_eq!(code, Code::MOVED, "{msg}");
    assert!(msg.ends_with(&format!(" {}", c.grpc_addr(leader))), "{msg}");
    let mut mget = MGetRequest::new();
    mget.keys = tagged.clone();
    let r = client(other).m_get_opt(&mget, opt()).expect("mget");
    assert_eq!(status(&r.status).0, Code::MOVED);
    assert!(r.values.is_empty(), "no placeholder values with a redirect");
    // A node without a secret refuses calls that carry one (nodes with different secrets
    // never replicate to each other).
    let repl = simplekv_proto::replication_grpc::ReplicationClient::new(
        grpcio::ChannelBuilder::new(env.clone()).connect(&c.grpc_addr(other)),
    );
    let mut ends = simplekv_proto::replication::LogEndsRequest::new();
    ends.partitions = vec![0];
    ends.status = true;
    let with = simplekv_cluster::grpc::secret_opt(Some("stray")).timeout(Duration::from_secs(5));
    match repl.log_ends_opt(&ends, with) {
        Err(grpcio::Error::RpcFailure(s)) => {
            assert_eq!(s.code(), grpcio::RpcStatusCode::UNAUTHENTICATED)
        }
        other => panic!("a call with a secret to a node without one: {other:?}"),
    }
    assert!(
        repl.log_ends_opt(&ends, opt()).is_ok(),
        "and answers calls without"
    );
    // On the leader, keys that share a slot (a hash tag) are written and read together.
    let kv = client(leader);
    let (code, msg) = status(&kv.m_set_opt(&mset, opt()).expect("mset").status);
    assert_eq!(code, Code::OK, "{msg}");
    let mut mget = MGetRequest::new();
    mget.keys = tagged.clone();
    let r = kv.m_get_opt(&mget, opt()).expect("mget");
    assert_eq!(status(&r.status).0, Code::OK);
    assert!(r.values.iter().all(|v| v.found && v.value == b"v"));
    // `simplekv cli -c` follows the redirects, over RESP and over gRPC.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
            .arg("cli")
            .args(args)
            .output()
            .expect("simplekv cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (resp_port, grpc_port) = (
        c.resp_addr(other).rsplit_once(':').unwrap().1.to_string(),
        c.grpc_addr(other).rsplit_once(':').unwrap().1.to_string(),
    );
    assert_eq!(cli(&["-c", "-p", &resp_port, "set", &k0, "via-resp"]), "OK");
    assert_eq!(
        cli(&["-c", "--grpc", "-p", &grpc_port, "get", &k0]),
        "via-resp"
    );
    assert!(cli(&["-p", &resp_port, "get", &k0]).starts_with("MOVED"));
    // With a password on a node that does not lead the empty key's slot, the CLI's AUTH over
    // gRPC still succeeds (its check call may be redirected), and -c takes it along (the
    // leader it is redirected to has no password: as redis-cli, it says AUTH failed there).
    run(
        &c.resp_addr(other),
        &[b"CONFIG", b"SET", b"requirepass", b"pw"],
        Duration::from_secs(10),
    )
    .expect("CONFIG SET requirepass");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args([
            "cli", "-c", "--grpc", "-a", "pw", "-p", &grpc_port, "get", &k0,
        ])
        .output()
        .expect("simplekv cli");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout.trim(), "via-resp", "{stderr}");
    assert!(
        !stderr.contains("WRONGPASS") && !stderr.contains("NOAUTH"),
        "{stderr}"
    );
    assert!(cli(&["--grpc", "-p", &grpc_port, "get", &k0]).starts_with("NOAUTH"));
}

/// A preferred-leader election moves a leadership while pipelined writes are in flight on
/// it. The controller first has the leader hand the partition over: it refuses new writes
/// (TRYAGAIN) and answers once the ones it took are committed, so the new leader has them
/// all. Clients get +OK for every write taken and a retry or a redirect for the rest, never
/// an unknown outcome. (Before: every write in flight was answered "not acknowledged:
/// stopped leading"; without the handover, writes the new leader lacked still were.)
#[test]
fn writes_in_flight_during_a_preferred_leader_move_are_acknowledged_not_failed() {
    use std::io::{BufRead, BufReader, Write};
    let mut c = LocalCluster::start(3, 3, 3, &[("cluster.leader_imbalance_ratio", "1.0")]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let preferred = c.leader_of(0).expect("leader");
    // Move partition 0 away from its preferred replica and bring that replica back.
    c.sigterm_and_wait(preferred);
    c.wait_for_leaders(Duration::from_secs(30));
    c.restart(preferred);
    c.wait_for_full_isr(Duration::from_secs(30));
    let current = c.leader_of(0).expect("leader");
    assert_ne!(current, preferred);
    let tag = c.key_in(0).to_string();
    assert!(!tag.contains('{') && !tag.contains('}'));
    let addr = c.resp_addr(current);
    let stop = Arc::new(AtomicBool::new(false));
    // Per writer: keys acknowledged with +OK, and every other reply seen.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (addr, tag, stop) = (addr.clone(), tag.clone(), stop.clone());
            std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(&addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut out = s.try_clone().unwrap();
                let mut input = BufReader::new(s);
                let (mut acked, mut others) = (Vec::new(), Vec::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut n = 0u64;
                let mut moved = false;
                while !moved && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let keys: Vec<String> = (0..32)
                        .map(|i| format!("{{{tag}}}w{w}-{}", n + i))
                        .collect();
                    n += 32;
                    let mut batch = Vec::new();
                    for k in &keys {
                        batch.extend_from_slice(
                            format!("*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$1\r\nv\r\n", k.len())
                                .as_bytes(),
                        );
                    }
                    out.write_all(&batch).expect("write");
                    for k in keys {
                        let mut line = String::new();
                        input.read_line(&mut line).expect("reply");
                        match line.trim_end() {
                            "+OK" => acked.push(k),
                            other => {
                                moved |= other.starts_with("-MOVED");
                                others.push(other.to_string());
                            }
                        }
                    }
                }
                (acked, others)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(["cluster", "rebalance", "--zk", &c.zk_connect()])
        .output()
        .expect("simplekv cluster rebalance");
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.leader_of(0) != Some(preferred) {
        assert!(Instant::now() < deadline, "{}", c.all_log_tails());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut others = Vec::new();
    for w in writers {
        let (a, o) = w.join().expect("writer");
        acked.extend(a);
        others.extend(o);
    }
    let logs: String = (1..=3).map(|i| c.log_since(i, 0)).collect();
    assert!(logs.contains("handed over partitions [0]"), "{logs}");
    assert!(
        others
            .iter()
            .all(|e| e.starts_with("-MOVED") || e.starts_with("-TRYAGAIN")),
        "{:?}",
        others
            .iter()
            .filter(|e| !e.starts_with("-MOVED"))
            .collect::<Vec<_>>()
    );
    assert!(
        others.iter().any(|e| e.starts_with("-MOVED")),
        "the move happened while the writers were writing"
    );
    assert!(
        others
            .iter()
            .any(|e| e.contains("moving to its preferred leader")),
        "writes were refused during the handover"
    );
    assert!(acked.len() > 100, "{}", acked.len());
    // Every acknowledged write is there, through the new leader.
    for k in acked.iter().rev().take(200) {
        assert_eq!(get(&c, preferred, k).as_deref(), Some("v"), "{k}");
    }
}

/// An MSET (one slot, so one partition) is one write batch on the leader's disk and on the
/// wire: after a kill -9 of the leader under a load of large MSETs (with a follower paused
/// and catching up meanwhile), the new leader holds each group's keys from one MSET, never
/// part of one, and at least the last acknowledged one; so does every group after the old
/// leader restarts from its own disk and rejoins.
#[test]
fn multi_key_writes_stay_whole_across_kill_9_of_the_leader() {
    let mut c = LocalCluster::start(3, 6, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (1..=3).map(|i| c.resp_addr(i)).collect();
    let keys_of = group_keys;
    let loaders: Vec<_> = (0..4u64)
        .map(|g| {
            let stop = stop.clone();
            let addrs = addrs.clone();
            let keys = keys_of(g);
            std::thread::spawn(move || {
                let pad = "v".repeat(64 << 10);
                // The last acknowledged MSET's number.
                let mut acked = None;
                for n in 0..5000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let val = format!("{n}:{pad}");
                    let mut args: Vec<&[u8]> = vec![b"MSET"];
                    for k in &keys {
                        args.push(k.as_bytes());
                        args.push(val.as_bytes());
                    }
                    let entry = &addrs[n as usize % addrs.len()];
                    if run(entry, &args, Duration::from_secs(3)).is_ok() {
                        acked = Some(n);
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    // The leader of group 0's partition; one of its followers is paused for a while and
    // catches up after.
    let p0 = c.partition_of(keys_of(0)[0].as_bytes());
    let victim = c.leader_of(p0).expect("group 0's partition has a leader");
    let paused = (1..=3).find(|&i| i != victim).expect("a follower");
    c.sigstop(paused);
    std::thread::sleep(Duration::from_millis(700));
    c.sigcont(paused);
    std::thread::sleep(Duration::from_millis(300));
    c.kill9(victim);
    std::thread::sleep(Duration::from_millis(4000));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Option<u64>> = loaders.into_iter().map(|l| l.join().unwrap()).collect();
    let reader = if victim == 1 { 2 } else { 1 };
    check_groups(&c, reader, &acked);
    // The old leader recovers its log (an unfinished batch at its end is dropped) and
    // rejoins; nothing it brings back splits a group.
    c.restart(victim);
    c.wait_for_full_isr(Duration::from_secs(60));
    check_groups(&c, victim, &acked);
    assert!(
        acked.iter().any(Option::is_some),
        "no MSET was acknowledged"
    );
}

/// The keys one MSET of group `g` sets (one hash tag: one slot).
fn group_keys(g: u64) -> Vec<String> {
    (0..6).map(|k| format!("{{grp{g}}}k{k}")).collect()
}

/// Every group's keys hold the number of one MSET, at least its last acknowledged one.
fn check_groups(c: &LocalCluster, reader: u32, acked: &[Option<u64>]) {
    let keys_of = group_keys;
    for (g, acked) in acked.iter().enumerate() {
        let Some(acked) = acked else { continue };
        let keys = keys_of(g as u64);
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let got = run(&c.resp_addr(reader), &args, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("MGET of group {g}: {e}"));
        let Value::Array(vals) = got else {
            panic!("MGET of group {g}: {got:?}")
        };
        let numbers: Vec<u64> = vals
            .iter()
            .map(|v| match v {
                Value::BulkString(b) => String::from_utf8_lossy(b)
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("group {g}: value {v:?}")),
                other => panic!("group {g}: acknowledged MSET {acked} but read {other:?}"),
            })
            .collect();
        assert!(
            numbers.iter().all(|n| *n == numbers[0]),
            "group {g}: keys from different MSETs: {numbers:?}"
        );
        assert!(
            numbers[0] >= *acked,
            "group {g}: acknowledged MSET {acked}, read MSET {}",
            numbers[0]
        );
    }
}

/// With the leader alone in a partition's ISR its high watermark is its log end, which a
/// steady write load keeps moving: a restarted follower still joins under the load (the
/// high watermark it must reach is the one of the replication thread's previous round, which
/// its acknowledgement of the records pushed then reaches), not only in a pause of the writes.
#[test]
fn a_restarted_follower_joins_a_lone_leaders_isr_under_a_steady_write_load() {
    let mut c = LocalCluster::start(2, 2, 2, &[("cluster.min_insync_replicas", "1")]);
    c.wait_for_full_isr(Duration::from_secs(30));
    c.kill9(2);
    wait_for_lone_leader(&c, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..4u64 {
        let mut conn = c.conn_to(1);
        let (stop, acked) = (stop.clone(), acked.clone());
        threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            // Bounded: the test stops it long before.
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                let mut pipe = redis::pipe();
                for i in 0..32 {
                    pipe.cmd("SET")
                        .arg(format!("load-{t}-{}", (n + i) % 1000))
                        .arg(vec![b'v'; 1000]);
                }
                n += 32;
                // Once node 2 is back the controller may move a leadership to it (MOVED).
                if pipe.query::<()>(&mut conn).is_ok() {
                    acked.fetch_add(32, Ordering::Relaxed);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = acked.load(Ordering::Relaxed);
    c.restart(2);
    let t = Instant::now();
    let deadline = t + Duration::from_secs(20);
    let joined = loop {
        if (0..2).all(|p| c.partition_state(p).isr.contains(&2)) {
            break Some(t.elapsed());
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let during = acked.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join().unwrap();
    }
    assert!(during > 1000, "the load was not steady: {during} writes");
    let Some(joined) = joined else {
        panic!(
            "node 2 not back in every ISR 20 s after its restart ({during} writes meanwhile)\n{}",
            c.all_log_tails()
        );
    };
    println!("node 2 back in every ISR {joined:?} after its restart, {during} writes meanwhile");
}

/// A node whose ZooKeeper session is gone (ZooKeeper paused past the session timeout) leads
/// nothing and has nothing to hand over: SIGTERM stops it without waiting out the controlled
/// shutdown's timeout for a session that cannot come (it took the whole 10 s).
#[test]
fn sigterm_without_a_zookeeper_session_does_not_wait_for_one() {
    let mut c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let mark = c.log_len(1);
    c.signal_zookeeper(true);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.log_since(1, mark).contains("ZooKeeper session lost") {
        if Instant::now() >= deadline {
            c.signal_zookeeper(false);
            panic!("node 1 never gave up its session\n{}", c.log_tail(1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    let code = c.sigterm_and_wait(1);
    let took = t.elapsed();
    c.signal_zookeeper(false);
    assert_eq!(code, Some(0), "{}", c.log_tail(1));
    assert!(
        took < Duration::from_secs(6),
        "SIGTERM took {took:?}\n{}",
        c.log_tail(1)
    );
    assert!(c.log_tail(1).contains("nothing to hand over"));
    // ZooKeeper back: the node rejoins and every partition is served.
    c.restart(1);
    c.wait_for_leaders(Duration::from_secs(30));
}

/// A node the controller names leader that cannot begin the epoch (the leader-epoch
/// checkpoint cannot be written: a full disk, here a directory where its temporary file goes)
/// stays idle, and tries again every second: once it can, it leads, without waiting for the
/// route table to change again. (Found by a chaos run: after a disk-full fault on the new
/// leader, its partition stayed without a leader that answered until the next route change.)
#[test]
fn a_leader_that_could_not_begin_its_epoch_takes_over_once_it_can() {
    let mut c = LocalCluster::start(2, 1, 2, &[("cluster.min_insync_replicas", "1")]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let old = c.leader_of(0).expect("a leader");
    let new = if old == 1 { 2 } else { 1 };
    let key = c.key_in(0).to_string();
    set(&c, old, &key, "before").unwrap();
    let part = c.data_dir(new).join("partitions").join("00000");
    assert!(part.is_dir(), "{}", part.display());
    let blocker = part.join("leader-epoch-checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let from = c.log_len(new);
    c.kill9(old);
    let refused = common::wait_until(Duration::from_secs(30), || {
        c.log_since(new, from).contains("cannot begin leader epoch")
    });
    assert!(refused, "{}", c.all_log_tails());
    std::fs::remove_dir(&blocker).unwrap();
    // The old leader stays down: nothing changes the route table any more.
    assert_reads(&c, new, &key, "before");
    set(&c, new, &key, "after").unwrap();
}

/// A GET of `key` sent to `node` (within 10 s, following redirects) answers `want`.
fn assert_reads(c: &LocalCluster, node: u32, key: &str, want: &str) {
    let read = run(
        &c.resp_addr(node),
        &[b"GET", key.as_bytes()],
        Duration::from_secs(10),
    );
    assert_eq!(
        read,
        Ok(Value::BulkString(want.as_bytes().to_vec())),
        "{}",
        c.all_log_tails()
    );
}

/// A node named leader that cannot begin the epoch, while another replica is in sync, does
/// not keep the partition: it tells the controller, which elects another in-sync replica
/// (clients are served at once, not after the disk is fixed); the node follows, and is in
/// sync again once it can write. (Before, the partition waited for the node's disk.) The
/// node is named by a preferred-leader election, so which node fails is known.
#[test]
fn a_leader_that_cannot_begin_its_epoch_hands_over_to_another_in_sync_replica() {
    let mut c = LocalCluster::start(3, 1, 3, &[("cluster.leader_imbalance_ratio", "1.0")]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let preferred = c.leader_of(0).expect("leader");
    let key = c.key_in(0).to_string();
    set(&c, preferred, &key, "before").unwrap();
    // Move partition 0 away from its preferred replica and bring that replica back.
    c.sigterm_and_wait(preferred);
    c.wait_for_leaders(Duration::from_secs(30));
    c.restart(preferred);
    c.wait_for_full_isr(Duration::from_secs(30));
    assert_ne!(c.leader_of(0), Some(preferred));
    let blocker = c
        .data_dir(preferred)
        .join("partitions")
        .join("00000")
        .join("leader-epoch-checkpoint.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let from = c.log_len(preferred);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(["cluster", "rebalance", "--zk", &c.zk_connect()])
        .output()
        .expect("simplekv cluster rebalance");
    assert!(out.status.success(), "{out:?}");
    let said = common::wait_until(Duration::from_secs(30), || {
        c.log_since(preferred, from)
            .contains("cannot lead partition 0")
    });
    assert!(said, "{}", c.all_log_tails());
    assert!(
        c.log_since(preferred, from)
            .contains("cannot begin leader epoch")
    );
    let moved = common::wait_until(Duration::from_secs(30), || {
        c.leader_of(0).is_some_and(|l| l != preferred)
    });
    assert!(moved, "{:?}\n{}", c.partition_state(0), c.all_log_tails());
    let leader = c.leader_of(0).expect("leader");
    assert_reads(&c, leader, &key, "before");
    // While it cannot write, the leader does not take it into the ISR, though it has every
    // record (it would hold up acks=all writes until dropped again).
    std::thread::sleep(Duration::from_millis(1500));
    let st = c.partition_state(0);
    assert!(!st.isr.contains(&preferred), "{st:?}");
    // Its disk works again: with nothing written meanwhile, the node finds out by writing
    // its epoch checkpoint again (tried every second while it follows) and tells the
    // controller it may lead again; every replica is in sync and writes go in.
    std::fs::remove_dir(&blocker).unwrap();
    let again = common::wait_until(Duration::from_secs(30), || {
        c.log_since(preferred, from)
            .contains("writes partition 0 again")
    });
    assert!(again, "{}", c.log_tail(preferred));
    c.wait_for_full_isr(Duration::from_secs(30));
    set(&c, leader, &key, "after").unwrap();
    assert_eq!(get(&c, preferred, &key).as_deref(), Some("after"));
}

/// CLIENT PAUSE ALL on a follower stops its clients, not replication: a leader's acks=all
/// writes still reach it at once and it stays in sync (as Redis feeds its replicas during a
/// pause).
#[test]
fn a_paused_follower_still_replicates_and_stays_in_sync() {
    let c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let p = (0..c.partitions)
        .find(|&p| c.leader_of(p) != Some(2))
        .expect("a partition node 2 follows");
    let leader = c.leader_of(p).expect("leader");
    let key = c.key_in(p).to_string();
    set(&c, leader, &key, "before").expect("set before the pause");
    let mut follower = c.conn_to(2);
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(6_000)
        .arg("ALL")
        .query(&mut follower)
        .expect("CLIENT PAUSE");
    let t0 = Instant::now();
    for i in 0..20 {
        set(&c, leader, &key, &format!("during{i}")).expect("acks=all write during the pause");
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "20 acks=all writes took {took:?}: the paused follower held them back"
    );
    assert!(
        c.partition_state(p).isr.contains(&2),
        "the paused follower left the ISR\n{}",
        c.all_log_tails()
    );
    // Its own clients wait until the pause ends (a new connection: the one that paused is
    // free to wait too).
    let t1 = Instant::now();
    let v = run(&c.resp_addr(2), &[b"PING"], Duration::from_secs(10)).expect("PING");
    assert_eq!(v, Value::SimpleString("PONG".into()));
    assert!(
        t0.elapsed() >= Duration::from_millis(5_500),
        "PING answered {:?} into the pause",
        t1.elapsed()
    );
    assert_eq!(get(&c, leader, &key).as_deref(), Some("during19"));
}

/// PUBLISH reaches the subscribers of every node, in order, and answers the count of the
/// node it was sent to (as Redis Cluster). A shard channel lives with its slot's leader:
/// elsewhere SSUBSCRIBE and SPUBLISH are redirected, and when the leadership moves away its
/// subscribers are told with `sunsubscribe`.
#[test]
fn publish_reaches_every_node_and_shard_channels_follow_their_slot_leader() {
    use common::{expect_reply, message, read_exact_within, resp, sub_reply};
    use std::io::Write;
    let mut c = LocalCluster::start(3, 3, 3, &[]);
    c.wait_for_full_isr(Duration::from_secs(30));
    let raw =
        |c: &LocalCluster, i: u32| std::net::TcpStream::connect(c.resp_addr(i)).expect("connect");
    let mut subs: Vec<std::net::TcpStream> = (1..=3).map(|i| raw(&c, i)).collect();
    for s in &mut subs {
        expect_reply(
            s,
            &resp(&[b"SUBSCRIBE", b"news"]),
            &sub_reply("subscribe", Some(b"news"), 1),
        );
    }
    let mut publisher = c.conn_to(1);
    let mut want = Vec::new();
    for i in 0..100 {
        let m = format!("m{i}");
        let n: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg(&m)
            .query(&mut publisher)
            .unwrap();
        assert_eq!(n, 1, "the count is node 1's");
        want.extend(message(b"news", m.as_bytes()));
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let got = read_exact_within(s, want.len(), Duration::from_secs(10));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "subscriber on node {}",
            i + 1
        );
    }
    // A shard channel: its slot's leader takes it, the others redirect.
    let p = c.partition_of(b"sch");
    let leader = c.leader_of(p).expect("leader");
    let other = (1..=3).find(|&i| i != leader).unwrap();
    let mut elsewhere = raw(&c, other);
    elsewhere
        .write_all(&resp(&[b"SSUBSCRIBE", b"sch"]))
        .unwrap();
    let moved = read_exact_within(&mut elsewhere, 7, Duration::from_secs(5));
    assert_eq!(moved, b"-MOVED ");
    let mut shard = raw(&c, leader);
    expect_reply(
        &mut shard,
        &resp(&[b"SSUBSCRIBE", b"sch"]),
        &sub_reply("ssubscribe", Some(b"sch"), 1),
    );
    let r: RedisResult<i64> = redis::cmd("SPUBLISH")
        .arg("sch")
        .arg("x")
        .query(&mut c.conn_to(other));
    assert!(
        r.as_ref()
            .is_err_and(|e| e.to_string().to_lowercase().contains("moved")),
        "{r:?}"
    );
    let n: i64 = redis::cmd("SPUBLISH")
        .arg("sch")
        .arg("s1")
        .query(&mut c.conn_to(leader))
        .unwrap();
    assert_eq!(n, 1);
    let want = b"*3\r\n$8\r\nsmessage\r\n$3\r\nsch\r\n$2\r\ns1\r\n";
    assert_eq!(
        read_exact_within(&mut shard, want.len(), Duration::from_secs(5)),
        want
    );
    // The leadership moves away while the leader is stopped: once back, it tells its
    // shard subscriber to go.
    c.sigstop(leader);
    set(&c, other, c.key_in(p), "moved").expect("a write on the new leader");
    assert_ne!(c.leader_of(p), Some(leader));
    c.sigcont(leader);
    let want = sub_reply("sunsubscribe", Some(b"sch"), 0);
    assert_eq!(
        String::from_utf8_lossy(&read_exact_within(
            &mut shard,
            want.len(),
            Duration::from_secs(30)
        )),
        String::from_utf8_lossy(&want),
        "{}",
        c.log_tail(leader)
    );
    // No longer subscribed: the connection runs any command again.
    expect_reply(&mut shard, &resp(&[b"ECHO", b"back"]), b"$4\r\nback\r\n");
    // A node that restarts gets what is published once its subscriber is in, though the
    // others may try it before its gRPC port is open.
    // Node 1 publishes all along, so that it tries the node while it is down and starting.
    let back = (1..=3).find(|&i| i != 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (stop, mut conn) = (stop.clone(), c.conn_to(1));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _: RedisResult<i64> = redis::cmd("PUBLISH").arg("bg").arg("x").query(&mut conn);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    c.restart(back);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut late = loop {
        if let Ok(s) = std::net::TcpStream::connect(c.resp_addr(back)) {
            break s;
        }
        assert!(Instant::now() < deadline, "node {back} did not come back");
        std::thread::sleep(Duration::from_millis(20));
    };
    expect_reply(
        &mut late,
        &resp(&[b"SUBSCRIBE", b"news"]),
        &sub_reply("subscribe", Some(b"news"), 1),
    );
    let mut want = Vec::new();
    for i in 0..100 {
        let m = format!("after-restart-{i}");
        let _: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg(&m)
            .query(&mut publisher)
            .unwrap();
        want.extend(message(b"news", m.as_bytes()));
    }
    let got = read_exact_within(&mut late, want.len(), Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    background.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "{}",
        c.log_tail(1)
    );
}
