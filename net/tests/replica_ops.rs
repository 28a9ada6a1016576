//! The replication ops a follower's worker runs, driven in process as the replication thread
//! drives them: `ReplOp`s through the router to the worker that owns the partition.

use std::sync::Arc;
use std::time::Duration;

use simplekv_engine::{Options, Store};
use simplekv_net::server::cluster::{NodeAddr, PartRoute, RouteTable};
use simplekv_net::server::replica::{FeedTx, ReplOp, ReplReply};
use simplekv_net::server::router::{Op, Payload, Router};
use simplekv_net::server::{ClusterBoot, NodeIdentity, start_node};

fn ask(router: &Router, op: ReplOp) -> ReplReply {
    let (tx, rx) = crossbeam_channel::bounded(1);
    assert!(router.submit(0, Op::Repl(op), move |p| {
        let _ = tx.send(p);
    }));
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Payload::Repl(r)) => *r,
        other => panic!("unexpected answer {other:?}"),
    }
}

fn append(from: u64, bytes: Vec<u8>) -> ReplOp {
    ReplOp::Append {
        partition: 0,
        leader_epoch: 1,
        from,
        bytes,
        leader_hw: 0,
        leader_horizon: 0,
    }
}

fn log_end(r: &ReplReply) -> u64 {
    match r {
        ReplReply::Position { log_end, .. } => *log_end,
        other => panic!("expected a position, got {other:?}"),
    }
}

/// A follower's log never gets a hole: a push that does not start at its log end (an
/// earlier push failed, or was cut short, while this one was on its way) is refused, and the
/// driver validates again. Appended, it would have made the leader count this replica as
/// holding records it lacks, and acks=all writes among them could be lost.
#[test]
fn a_push_that_does_not_start_at_the_followers_log_end_is_refused() {
    let d = tempfile::tempdir().unwrap();
    // The leader's log: ten records, sent in two pushes.
    let mut leader = Store::open(d.path().join("leader"), Options::default()).unwrap();
    for i in 0..10u32 {
        leader
            .put(format!("k{i}").as_bytes(), b"value", None)
            .unwrap();
    }
    leader.sync().unwrap();
    let first = leader.read_records(0, 1).unwrap();
    assert_eq!(first.next_lsn, 1, "one record in the first push");
    let rest = leader.read_records(first.next_lsn, 1 << 20).unwrap();
    assert_eq!(rest.next_lsn, 10);

    // This node (2) follows partition 0, led by node 1 in epoch 1.
    let node = |id: u32| NodeAddr {
        id,
        resp: String::new(),
        grpc: String::new(),
    };
    let routes = RouteTable {
        me: 2,
        nodes: [(1, node(1)), (2, node(2))].into(),
        parts: vec![PartRoute {
            leader: Some(1),
            leader_epoch: 1,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            state_version: 1,
        }],
        ..RouteTable::default()
    };
    let mut config = simplekv_conf::Config::default();
    config.server.port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    config.server.workers = 1;
    config.server.pin_workers = false;
    config.storage.dir = d.path().join("follower");
    let (feed, _feed_rx) = crossbeam_channel::unbounded();
    let boot = ClusterBoot {
        partitions: 1,
        routes: Arc::new(routes),
        feed: FeedTx::new(feed, Arc::new(|| {})),
        lease: Duration::from_secs(2),
        identity: NodeIdentity {
            node_id: 2,
            cluster_id: Some("test".into()),
        },
        storage: 7,
    };
    let server = start_node(config, None, Some(boot), None).unwrap();
    let router = server.router();

    assert_eq!(log_end(&ask(&router, append(0, first.bytes))), 1);
    // The records after a push that did not land (1..5): refused, nothing appended.
    let later = leader.read_records(5, 1 << 20).unwrap();
    match ask(&router, append(5, later.bytes)) {
        ReplReply::Failed(e) => assert!(e.contains("validating again"), "{e}"),
        other => panic!("a push past the log end was taken: {other:?}"),
    }
    assert_eq!(log_end(&ask(&router, ReplOp::Position { partition: 0 })), 1);
    // From the log end, the same records go in.
    assert_eq!(log_end(&ask(&router, append(1, rest.bytes))), 10);
    // A high watermark update (no records) from the log end is taken too.
    assert_eq!(log_end(&ask(&router, append(10, Vec::new()))), 10);
    server.shutdown();
    server.join();
}
