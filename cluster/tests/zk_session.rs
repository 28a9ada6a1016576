//! The ZooKeeper session layer against a real ZooKeeper 3.8 server started on a free port.
use std::time::{Duration, Instant};

use simplekv_cluster::zk::{LocalZooKeeper, Session};

#[test]
fn sessions_create_their_chroot_do_cas_and_lose_ephemerals_on_close() {
    let zk = LocalZooKeeper::start(None).expect("start ZooKeeper (scripts/setup.sh installs it)");
    let connect = format!("{}/simplekv/test", zk.addr());
    let a = Session::connect(&connect, Duration::from_secs(10)).expect("session a");
    let b = Session::connect(&connect, Duration::from_secs(10)).expect("session b");
    a.create_all("/brokers/ids").unwrap();
    a.create("/brokers/ids/1", b"resp=127.0.0.1:7001".to_vec(), true)
        .unwrap();
    assert_eq!(b.children("/brokers/ids").unwrap(), vec!["1".to_string()]);
    // Conditional writes: a stale version is refused.
    a.create("/state", b"v1".to_vec(), false).unwrap();
    let (_, stat) = b.get("/state").unwrap().unwrap();
    a.set("/state", b"v2".to_vec(), Some(stat.version)).unwrap();
    assert!(b.set("/state", b"v3".to_vec(), Some(stat.version)).is_err());
    assert_eq!(b.get("/state").unwrap().unwrap().0, b"v2");
    // The chroot is real: a session without it sees the full path.
    let bare = Session::connect(&zk.addr(), Duration::from_secs(10)).unwrap();
    assert!(bare.get("/simplekv/test/state").unwrap().is_some());
    a.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !b.children("/brokers/ids").unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "ephemeral outlived its session"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.get("/missing").unwrap().is_none());
}

#[test]
fn a_request_to_a_silent_zookeeper_times_out_and_the_session_answers_again_after() {
    let zk = LocalZooKeeper::start(None).expect("start ZooKeeper (scripts/setup.sh installs it)");
    let s = Session::connect(&zk.addr(), Duration::from_secs(6)).expect("session");
    s.create("/alive", Vec::new(), false).unwrap();
    assert!(s.answering());
    assert!(s.silent_for() < Duration::from_secs(1));
    let pid = zk.pid().expect("ZooKeeper runs") as libc::pid_t;
    let stop = || {
        // SIGSTOP: ZooKeeper keeps its sockets open and answers nothing, as behind a
        // partition that drops packets. The client library would wait for TCP to give up.
        // SAFETY: signalling the ZooKeeper process this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        // kill() returns before every thread has stopped: on a loaded machine a request sent
        // at once could still be answered. Wait until the kernel shows them all stopped.
        wait_all_threads_stopped(pid);
    };
    // SAFETY: as above.
    let cont = || unsafe { libc::kill(pid, libc::SIGCONT) };
    stop();
    let started = Instant::now();
    let first = s.get("/alive");
    let waited = started.elapsed();
    let again = Instant::now();
    let second = s.children("/");
    let second_took = again.elapsed();
    let still_silent = (s.answering(), s.silent_for());
    cont();
    let e = first.expect_err("ZooKeeper is stopped");
    assert!(e.unresponsive() && !e.session_lost(), "{e}");
    assert!(e.to_string().contains("no answer within 3000 ms"), "{e}");
    // Half the session timeout.
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // Until the request is answered, calls fail at once.
    assert!(second.expect_err("still unanswered").unresponsive());
    assert!(second_took < Duration::from_millis(100), "{second_took:?}");
    assert!(!still_silent.0);
    assert!(
        still_silent.1 >= Duration::from_millis(2900),
        "{:?}",
        still_silent.1
    );
    // ZooKeeper answers again, well within the session timeout: the same session works.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.answering() {
        assert!(
            Instant::now() < deadline,
            "the stalled request was never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.get("/alive").unwrap().is_some());
    assert!(s.silent_for() < Duration::from_secs(1));
    // Closing a session stuck in a request does not wait for it.
    stop();
    let e = s.get("/alive").expect_err("stopped again");
    let closing = Instant::now();
    s.close();
    let close_took = closing.elapsed();
    cont();
    assert!(e.unresponsive(), "{e}");
    assert!(close_took < Duration::from_millis(100), "{close_took:?}");
    let fresh = Session::connect(&zk.addr(), Duration::from_secs(10)).expect("new session");
    assert!(fresh.get("/alive").unwrap().is_some());
}

/// Waits (at most 5 s) until every thread of process `pid` is in state `T` in /proc.
fn wait_all_threads_stopped(pid: libc::pid_t) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
        let running: Vec<String> = tasks
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
                let state = stat.rsplit(')').next()?.split_whitespace().next()?;
                (state != "T" && state != "t").then(|| stat.clone())
            })
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ZooKeeper threads not stopped 5 s after SIGSTOP: {running:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_unreachable_zookeeper_is_a_clear_error_at_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = Session::connect(&format!("127.0.0.1:{port}"), Duration::from_secs(6))
        .err()
        .expect("nothing listens there");
    // Not the 6 s the session may take to open: the TCP connection is refused first.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("cannot reach ZooKeeper"), "{err}");
    assert!(err.to_string().contains("refused"), "{err}");
}
