//! Broker registration and controller election against a real ZooKeeper 3.8.
use std::time::Duration;

use simplekv_cluster::control::{election, registry};
use simplekv_cluster::zk::layout::BrokerInfo;
use simplekv_cluster::zk::{LocalZooKeeper, Session};

fn broker(id: u32) -> BrokerInfo {
    BrokerInfo {
        id,
        resp: format!("127.0.0.1:{}", 7000 + id),
        grpc: format!("127.0.0.1:{}", 8000 + id),
        storage: None,
    }
}

fn session(zk: &LocalZooKeeper) -> Session {
    Session::connect(
        &format!("{}/simplekv/c1", zk.addr()),
        Duration::from_secs(6),
    )
    .unwrap()
}

#[test]
fn brokers_register_once_and_vanish_with_their_session() {
    let zk = LocalZooKeeper::start(None).unwrap();
    let (a, b) = (session(&zk), session(&zk));
    let epoch_a = registry::register(&a, &broker(1), Duration::ZERO).unwrap();
    let epoch_b = registry::register(&b, &broker(2), Duration::ZERO).unwrap();
    assert!(epoch_b > epoch_a, "broker epochs are creation zxids");
    let live = registry::live_brokers(&a).unwrap();
    assert_eq!(live, vec![broker(1), broker(2)]);
    // The same id from another live process is refused with a clear message.
    let c = session(&zk);
    let err = registry::register(&c, &broker(1), Duration::from_millis(300)).unwrap_err();
    assert!(
        err.to_string().contains("node id 1 is already registered"),
        "{err}"
    );
    b.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while registry::live_brokers(&a).unwrap().len() != 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_controller_at_a_time_and_each_new_one_has_a_higher_epoch() {
    let zk = LocalZooKeeper::start(None).unwrap();
    let (a, b) = (session(&zk), session(&zk));
    let first = election::try_become_controller(&a, 1).unwrap();
    let election::Outcome::Elected { epoch: e1 } = first else {
        panic!("the first node becomes controller: {first:?}");
    };
    match election::try_become_controller(&b, 2).unwrap() {
        election::Outcome::Other(c) => assert_eq!((c.id, c.epoch), (1, e1)),
        other => panic!("two controllers: {other:?}"),
    }
    // The controller goes away; the next one gets a higher epoch.
    a.close();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let e2 = loop {
        if let election::Outcome::Elected { epoch } =
            election::try_become_controller(&b, 2).unwrap()
        {
            break epoch;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "controller never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(e2 > e1);
    assert_eq!(election::current(&b).unwrap().unwrap().epoch, e2);
}

#[test]
fn cluster_create_places_partitions_once_and_status_shows_them() {
    use simplekv_cluster::admin;
    let zk = LocalZooKeeper::start(None).unwrap();
    let connect = format!("{}/simplekv/c1", zk.addr());
    let t = Duration::from_secs(6);
    // Nodes 1..3 are live.
    let sessions: Vec<Session> = (1..=3)
        .map(|id| {
            let s = session(&zk);
            registry::register(&s, &broker(id), Duration::ZERO).unwrap();
            s
        })
        .collect();
    let err = admin::create(&connect, 8, 4, t).unwrap_err();
    assert!(err.to_string().contains("larger than the 3 live"), "{err}");
    // A root no node registered under (a misspelt cluster name) says so.
    let err = admin::create(&format!("{}/simplekv/c2", zk.addr()), 8, 1, t).unwrap_err();
    assert!(
        err.to_string().contains("no node is registered at"),
        "{err}"
    );
    let meta = admin::create(&connect, 8, 3, t).unwrap();
    assert_eq!((meta.partitions, meta.replication_factor), (8, 3));
    let err = admin::create(&connect, 8, 3, t).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let text = admin::status(&connect, t, None).unwrap();
    assert!(
        text.contains("8 partitions, replication factor 3"),
        "{text}"
    );
    assert!(text.contains("0-2047"), "{text}");
    assert!(text.contains("127.0.0.1:7002"), "{text}");
    // Leaders rotate over the nodes.
    for id in 1..=3 {
        assert!(text.contains(&format!("{id},")), "{text}");
    }
    drop(sessions);
    assert!(
        admin::status(&format!("{}/simplekv/none", zk.addr()), t, None)
            .unwrap_err()
            .to_string()
            .contains("no cluster")
    );
}
