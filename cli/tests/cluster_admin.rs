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
