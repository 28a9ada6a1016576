//! Broker registration: a live node is an ephemeral `/brokers/ids/<id>` znode.
use std::time::{Duration, Instant};

use zookeeper::ZkError;

use crate::zk::layout::{BrokerInfo, path};
use crate::zk::{Session, ZkFailure, ZkResult};

/// Registers `info` as a live broker. A znode left by this node's previous session (a restart
/// before ZooKeeper noticed the old session was gone) is waited out, up to `wait`; a znode held
/// by a live session of another process with the same id is an error naming the id.
/// Returns the broker epoch: the creation zxid of the znode.
pub fn register(session: &Session, info: &BrokerInfo, wait: Duration) -> ZkResult<i64> {
    session.create_all(path::BROKERS)?;
    let p = path::broker(info.id);
    let deadline = Instant::now() + wait;
    loop {
        match session.create(&p, info.encode(), true) {
            Ok(()) => {
                let (_, stat) = session.get(&p)?.ok_or_else(|| ZkFailure::Op {
                    op: "get",
                    path: p.clone(),
                    source: ZkError::NoNode,
                })?;
                return Ok(stat.czxid);
            }
            Err(ZkFailure::Op {
                source: ZkError::NodeExists,
                ..
            }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(ZkFailure::Op {
                source: ZkError::NodeExists,
                ..
            }) => {
                return Err(ZkFailure::IdTaken { id: info.id });
            }
            Err(e) => return Err(e),
        }
    }
}

/// The live brokers, by id.
pub fn live_brokers(session: &Session) -> ZkResult<Vec<BrokerInfo>> {
    let mut out = Vec::new();
    for child in session.children(path::BROKERS)? {
        let p = format!("{}/{child}", path::BROKERS);
        // A broker may vanish between the listing and the read: skip it.
        if let Some((data, _)) = session.get(&p)? {
            let b = BrokerInfo::decode(&data).map_err(|e| ZkFailure::Decode {
                path: p,
                reason: e.to_string(),
            })?;
            out.push(b);
        }
    }
    out.sort_by_key(|b| b.id);
    Ok(out)
}
