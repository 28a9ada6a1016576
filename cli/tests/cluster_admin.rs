//! `simplekv cluster create/status` against a real ZooKeeper, and a node refusing to run
//! standalone under a cluster configuration.
mod common;

use std::process::Command;
use std::time::Duration;

use simplekv_cluster::control::registry;
use simplekv_cluster::zk::layout::BrokerInfo;
use simplekv_cluster::zk::{LocalZooKeeper, Session};

fn simplekv(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(args)
        .output()
        .expect("run simplekv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn create_then_status_and_create_refuses_twice() {
    let zk = LocalZooKeeper::start(None).expect("ZooKeeper (scripts/setup.sh installs it)");
    let connect = format!("{}/simplekv/admin", zk.addr());
    let mut nodes = Vec::new();
    for id in 1..=3u32 {
        let s = Session::connect(&connect, Duration::from_secs(6)).unwrap();
        let info = BrokerInfo {
            id,
            resp: format!("127.0.0.1:{}", 7000 + id),
            grpc: format!("127.0.0.1:{}", 8000 + id),
            storage: None,
        };
        registry::register(&s, &info, Duration::ZERO).unwrap();
        nodes.push(s);
    }
    let (ok, _, err) = simplekv(&[
        "cluster",
        "create",
        "--zk",
        &connect,
        "--partitions",
        "6",
        "--replication-factor",
        "5",
    ]);
    assert!(!ok);
    assert!(err.contains("larger than the 3 live"), "{err}");
    let (ok, out, err) = simplekv(&[
        "cluster",
        "create",
        "--zk",
        &connect,
        "--partitions",
        "6",
        "--replication-factor",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("6 partitions, replication factor 3"), "{out}");
    let (ok, _, err) = simplekv(&[
        "cluster",
        "create",
        "--zk",
        &connect,
        "--partitions",
        "6",
        "--replication-factor",
        "3",
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, out, err) = simplekv(&["cluster", "status", "--zk", &connect]);
    assert!(ok, "{err}");
    assert!(out.contains("127.0.0.1:7003"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("1,2,3") || l.contains("2,3,1") || l.contains("3,1,2"))
            .count(),
        6,
        "{out}"
    );
}

#[test]
fn a_cluster_node_that_cannot_reach_zookeeper_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = common::run_to_exit(
        &dir.path().join("data"),
        &[
            "--set",
            "cluster.zk=127.0.0.1:1/simplekv",
            "--set",
            "cluster.node_id=1",
            "--grpc-port",
            &common::free_port().to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_ne!(code, Some(0));
    // Never a standalone server under a cluster configuration: it would take writes no
    // replica sees.
    assert!(
        log.contains("cannot reach ZooKeeper at 127.0.0.1:1"),
        "{log}"
    );
}

/// `simplekv server` as node 1 with `cluster.zk = zk` and `sets`, run on a thread until it
/// exits or `secs` pass (then killed): its data directory, gRPC port, and the thread
/// answering `run_to_exit`'s (exit code, log).
fn node_1_in_a_thread(
    zk: &str,
    sets: &[&str],
    secs: u64,
) -> (
    tempfile::TempDir,
    u16,
    std::thread::JoinHandle<(Option<i32>, String)>,
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let grpc = common::free_port();
    let mut args = vec![
        "--set".to_string(),
        format!("cluster.zk={zk}"),
        "--set".into(),
        "cluster.node_id=1".into(),
        "--grpc-port".into(),
        grpc.to_string(),
    ];
    for s in sets {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    let node = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run_to_exit(&data, &args, Duration::from_secs(secs))
    });
    (dir, grpc, node)
}

/// A session that registers node id 1 at the cluster root `root`, as a previous run's
/// session that has not ended yet (the id is free again once it is closed).
fn hold_node_1(root: &str) -> Session {
    let holder = Session::connect(root, Duration::from_secs(6)).unwrap();
    let stale = BrokerInfo {
        id: 1,
        resp: "127.0.0.1:1".into(),
        grpc: "127.0.0.1:2".into(),
        storage: None,
    };
    registry::register(&holder, &stale, Duration::ZERO).unwrap();
    holder
}

/// Whether, within `timeout`, the cluster root `root` (`host:port/chroot/name`) lists a live
/// broker that `want` accepts.
fn registers_within(root: &str, timeout: Duration, want: impl Fn(&BrokerInfo) -> bool) -> bool {
    common::wait_until(timeout, || {
        Session::connect(root, Duration::from_secs(4))
            .ok()
            .and_then(|s| registry::live_brokers(&s).ok())
            .is_some_and(|b| b.iter().any(&want))
    })
}

/// ZooKeeper taking connections but not answering as a node starts (a network or ZooKeeper
/// having a bad moment) is waited for, not a reason to exit: the node registers once it
/// answers.
#[test]
fn a_starting_node_waits_for_a_zookeeper_that_does_not_answer_yet() {
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let zk = format!("127.0.0.1:{port}/simplekv");
    let (_dir, _, node) = node_1_in_a_thread(&zk, &["cluster.session_timeout_ms=1000"], 20);
    // Connections are taken and left unanswered for a while...
    mute.set_nonblocking(true).unwrap();
    let mut held = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        if let Ok((c, _)) = mute.accept() {
            held.push(c);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!held.is_empty(), "the node never tried to connect");
    drop(held);
    drop(mute);
    // ...then a real ZooKeeper takes the port.
    let zk = LocalZooKeeper::start_tied(None, Some(port)).expect("ZooKeeper");
    let root = format!("{}/simplekv/default", zk.addr());
    let registered = registers_within(&root, Duration::from_secs(12), |b| b.id == 1);
    let (code, log) = node.join().unwrap();
    assert!(registered, "{log}");
    assert_eq!(code, None, "the node gave up: {log}");
    assert!(log.contains("cannot register yet"), "{log}");
}

/// A node id still registered by another session when a node starts (its previous run's
/// session, which ZooKeeper may keep for twice its tickTime after a crash) is waited out
/// within the start's patience; the node registers once that session ends.
#[test]
fn a_node_whose_id_is_still_held_by_an_older_session_registers_once_it_ends() {
    let zk = LocalZooKeeper::start(None).expect("ZooKeeper (scripts/setup.sh installs it)");
    let root = format!("{}/simplekv/held/default", zk.addr());
    let holder = hold_node_1(&root);
    let (_dir, grpc, node) = node_1_in_a_thread(&format!("{}/simplekv/held", zk.addr()), &[], 14);
    // Longer than the node's own wait for a stale registration (session timeout + 1 s).
    std::thread::sleep(Duration::from_secs(5));
    holder.close();
    let mine = format!("127.0.0.1:{grpc}");
    let registered = registers_within(&root, Duration::from_secs(8), |b| {
        b.id == 1 && b.grpc == mine
    });
    let (code, log) = node.join().unwrap();
    assert!(registered, "{log}");
    assert_eq!(code, None, "the node gave up: {log}");
    assert!(log.contains("already registered"), "{log}");
}

/// With a long session timeout, the previous run's session may hold the node id for longer
/// than the start's usual 20 s of patience: a node waits for it as long as such a session
/// may last (twice its timeout) rather than give up.
#[test]
fn a_node_with_long_sessions_waits_out_its_previous_session() {
    let zk = LocalZooKeeper::start(None).expect("ZooKeeper (scripts/setup.sh installs it)");
    let root = format!("{}/simplekv/long/default", zk.addr());
    let holder = hold_node_1(&root);
    let (_dir, grpc, node) = node_1_in_a_thread(
        &format!("{}/simplekv/long", zk.addr()),
        &["cluster.session_timeout_ms=15000"],
        30,
    );
    // Held past the 20 s a node waited before.
    std::thread::sleep(Duration::from_secs(22));
    holder.close();
    let mine = format!("127.0.0.1:{grpc}");
    let registered = registers_within(&root, Duration::from_secs(6), |b| {
        b.id == 1 && b.grpc == mine
    });
    let (code, log) = node.join().unwrap();
    assert!(registered, "{log}");
    assert_eq!(code, None, "the node gave up: {log}");
}

/// A node waiting for `cluster create` (it may wait an hour) stops on SIGTERM and on Ctrl-C
/// (SIGINT): before, signals were taken only once it served.
#[test]
fn a_node_waiting_for_cluster_create_stops_on_a_signal() {
    let zk = LocalZooKeeper::start(None).expect("ZooKeeper (scripts/setup.sh installs it)");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_simplekv"))
            .args(["server", "--port", &common::free_port().to_string()])
            .args(["--grpc-port", &common::free_port().to_string()])
            .arg("--dir")
            .arg(dir.path())
            .args(["--no-pin", "--set", "cluster.node_id=1", "--set"])
            .arg(format!("cluster.zk={}/simplekv/sig{sig}", zk.addr()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn simplekv");
        // Registered and waiting: the broker znode is there.
        let root = format!("{}/simplekv/sig{sig}/default", zk.addr());
        let registered = registers_within(&root, Duration::from_secs(15), |b| b.id == 1);
        assert!(registered, "the node did not register");
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let mut code = None;
        let stopped = common::wait_until(Duration::from_secs(5), || {
            code = child.try_wait().ok().flatten().map(|st| st.code());
            code.is_some()
        });
        if !stopped {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(stopped, "signal {sig} did not stop a starting node");
        assert_eq!(code, Some(Some(0)));
    }
}

/// A base port for `cluster local --nodes 1`: BASE+1 (RESP) and BASE+101 (gRPC) free now.
fn free_local_base() -> u16 {
    for _ in 0..200 {
        let base = 20000 + fastrand::u16(..30000);
        let free = [base + 1, base + 101]
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free ports for cluster local");
}

/// Two `cluster local` on one directory would run two ZooKeepers on the same data and nodes
/// on the same directories: the second is refused at once, naming the first.
#[test]
fn a_second_cluster_local_on_the_same_directory_is_refused_at_once() {
    use std::io::BufRead;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let local = |base: u16| {
        let b = base.to_string();
        let args = ["cluster", "local", "--nodes", "1", "--partitions", "2"];
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["--base-port".into(), b, "--dir".into(), d.clone()]);
        v
    };
    let mut first = Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(local(free_local_base()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cluster local");
    let out = first.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("Ctrl-C stops") => break,
            Ok(_) => {}
            Err(e) => panic!("cluster local did not come up: {e}"),
        }
    }
    let args = local(free_local_base());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let (ok, _, err) = simplekv(&args);
    assert!(!ok, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not at once: {err}"
    );
    assert!(
        err.contains("in use by another") && err.contains(&first.id().to_string()),
        "{err}"
    );
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first one is unharmed"
    );
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while first.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "cluster local did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node that cannot listen on its ports stops before it touches ZooKeeper: registered, it
/// could have been elected controller or given leaderships only to exit a moment later.
#[test]
fn a_cluster_node_whose_port_is_taken_stops_before_registering() {
    let zk = LocalZooKeeper::start(None).expect("ZooKeeper (scripts/setup.sh installs it)");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = common::run_to_exit(
        &dir.path().join("data"),
        &[
            "--set",
            &format!("cluster.zk={}/taken", zk.addr()),
            "--set",
            "cluster.node_id=1",
            "--grpc-port",
            &port,
        ],
        Duration::from_secs(20),
    );
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("cannot start the gRPC service"), "{log}");
    let s = Session::connect(&zk.addr(), Duration::from_secs(10)).unwrap();
    assert!(
        s.get("/taken").unwrap().is_none(),
        "the node created its cluster root before failing"
    );
}

/// A node's data directory records which node of which cluster wrote it: started on the
/// directory of another node, the node refuses to run (it would claim records it never
/// received, and an election comparing log ends could make it leader over the replicas that
/// did); a standalone server refuses a cluster node's directory; the node's own directory,
/// or an empty one, works.
#[test]
fn a_node_refuses_the_data_directory_of_another_node() {
    let mut c = common::cluster::LocalCluster::start(2, 2, 2, &[]);
    c.wait_for_full_isr(Duration::from_secs(60));
    let meta = std::fs::read_to_string(c.data_dir(1).join("simplekv.meta")).unwrap();
    assert!(meta.contains("node_id = 1\ncluster_id = "), "{meta}");
    c.kill9(2);
    let own = c.data_dir(2).with_extension("own");
    std::fs::rename(c.data_dir(2), &own).unwrap();
    let copy = Command::new("cp")
        .arg("-a")
        .arg(c.data_dir(1))
        .arg(c.data_dir(2))
        .status()
        .unwrap();
    assert!(copy.success());
    let (code, log) = c.start_expecting_exit(2);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("holds the data of node 1 of cluster "),
        "{log}"
    );
    assert!(log.contains("not of node 2"), "{log}");
    assert!(
        !log.contains("registered at"),
        "checked before registering: {log}"
    );
    // Standalone on a cluster node's directory.
    let port = common::free_port().to_string();
    let dir = c.data_dir(2);
    let (ok, _, err) = simplekv(&["server", "--port", &port, "--dir", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("cluster.node_id = 1"), "{err}");
    // A standalone server's directory (marked so when a standalone server opens it): refused
    // too, before the node registers.
    std::fs::remove_dir_all(c.data_dir(2)).unwrap();
    std::fs::create_dir_all(c.data_dir(2)).unwrap();
    std::fs::write(
        c.data_dir(2).join("simplekv.meta"),
        "format = 1\npartitions = 2\nmode = standalone\n",
    )
    .unwrap();
    let (code, log) = c.start_expecting_exit(2);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("standalone server's data"), "{log}");
    assert!(
        !log.contains("registered at"),
        "checked before registering: {log}"
    );
    // Its own directory back: it runs and catches up.
    std::fs::remove_dir_all(c.data_dir(2)).unwrap();
    std::fs::rename(&own, c.data_dir(2)).unwrap();
    c.restart(2);
    c.wait_for_full_isr(Duration::from_secs(60));
}
