//! Controller election: the first node to create the ephemeral `/controller` znode is the
//! controller, and takes a new controller epoch by a conditional increment of
//! `/controller_epoch`. Every state write and request of a controller carries its epoch; nodes
//! refuse requests with an epoch older than the newest they have seen.
//!
//! A controller that was paused past its session timeout cannot write anything afterwards: its
//! session is expired, so ZooKeeper refuses every operation on it; when it gets a new session it
//! is an ordinary node again and has to win a new election (with a new epoch).
use zookeeper::ZkError;

use crate::zk::layout::{ControllerInfo, path};
use crate::zk::{Session, ZkFailure, ZkResult};

/// What an election attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This node is the controller now, with this epoch.
    Elected { epoch: u64 },
    /// Another node is the controller.
    Other(ControllerInfo),
}

/// Tries to become controller.
pub fn try_become_controller(session: &Session, my_id: u32) -> ZkResult<Outcome> {
    // Take the epoch first: a node that then loses the race for /controller has only used up a
    // number, and the winner's epoch is always higher than any earlier controller's.
    let epoch = next_epoch(session)?;
    let me = ControllerInfo { id: my_id, epoch };
    match session.create(path::CONTROLLER, me.encode(), true) {
        Ok(()) => Ok(Outcome::Elected { epoch }),
        Err(ZkFailure::Op {
            source: ZkError::NodeExists,
            ..
        }) => match current(session)? {
            Some(other) => Ok(Outcome::Other(other)),
            // It vanished in between: try again.
            None => try_become_controller(session, my_id),
        },
        Err(e) => Err(e),
    }
}

/// The current controller, if any.
pub fn current(session: &Session) -> ZkResult<Option<ControllerInfo>> {
    match session.get(path::CONTROLLER)? {
        Some((data, _)) => ControllerInfo::decode(&data)
            .map(Some)
            .map_err(|e| ZkFailure::Decode {
                path: path::CONTROLLER.into(),
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
}

/// Increments `/controller_epoch` with a conditional write and returns the new value.
pub fn next_epoch(session: &Session) -> ZkResult<u64> {
    loop {
        match session.get(path::CONTROLLER_EPOCH)? {
            None => match session.create(path::CONTROLLER_EPOCH, b"1".to_vec(), false) {
                Ok(()) => return Ok(1),
                Err(ZkFailure::Op {
                    source: ZkError::NodeExists,
                    ..
                }) => continue,
                Err(e) => return Err(e),
            },
            Some((data, stat)) => {
                let cur: u64 = std::str::from_utf8(&data)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or_else(|| ZkFailure::Decode {
                        path: path::CONTROLLER_EPOCH.into(),
                        reason: "not a number".into(),
                    })?;
                let next = cur + 1;
                match session.set(
                    path::CONTROLLER_EPOCH,
                    next.to_string().into_bytes(),
                    Some(stat.version),
                ) {
                    Ok(_) => return Ok(next),
                    Err(ZkFailure::Op {
                        source: ZkError::BadVersion,
                        ..
                    }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
