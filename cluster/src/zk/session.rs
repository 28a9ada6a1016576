//! A ZooKeeper session for simplekv: connects under the cluster's root (creating the root if
//! needed), waits until the session exists, and turns the crate's errors into ours.
use std::sync::mpsc;
use std::time::Duration;

use zookeeper::{Acl, CreateMode, Stat, WatchedEvent, ZkError, ZkState, ZooKeeper};

#[derive(Debug, thiserror::Error)]
pub enum ZkFailure {
    #[error("cannot reach ZooKeeper at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("ZooKeeper {op} {path}: {source:?}")]
    Op {
        op: &'static str,
        path: String,
        source: ZkError,
    },
    #[error("ZooKeeper {path}: unreadable content: {reason}")]
    Decode { path: String, reason: String },
}

pub type ZkResult<T> = Result<T, ZkFailure>;

/// `hosts[/chroot]` split in two.
fn split_chroot(connect: &str) -> (&str, Option<&str>) {
    match connect.find('/') {
        Some(i) if i + 1 < connect.len() => (&connect[..i], Some(&connect[i..])),
        Some(i) => (&connect[..i], None),
        None => (connect, None),
    }
}

pub struct Session {
    zk: ZooKeeper,
    connect: String,
}

fn op<T>(op: &'static str, path: &str, r: Result<T, ZkError>) -> ZkResult<T> {
    r.map_err(|source| ZkFailure::Op {
        op,
        path: path.to_string(),
        source,
    })
}

/// Opens a raw session and waits until ZooKeeper has established it.
fn open(addr: &str, timeout: Duration) -> ZkResult<ZooKeeper> {
    let fail = |reason: String| ZkFailure::Connect {
        addr: addr.to_string(),
        reason,
    };
    let (tx, rx) = mpsc::channel();
    let zk = ZooKeeper::connect(addr, timeout, |_: WatchedEvent| {})
        .map_err(|e| fail(format!("{e:?}")))?;
    let tx2 = tx.clone();
    zk.add_listener(move |s: ZkState| {
        let _ = tx2.send(s);
    });
    // The session may already be up before the listener was added: probe once.
    if zk.exists("/", false).is_ok() {
        return Ok(zk);
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(ZkState::Connected) | Ok(ZkState::ConnectedReadOnly) => return Ok(zk),
            Ok(ZkState::AuthFailed) => return Err(fail("authentication failed".into())),
            _ if zk.exists("/", false).is_ok() => return Ok(zk),
            _ if left.is_zero() => {
                let _ = zk.close();
                return Err(fail(format!(
                    "no session within {} ms",
                    timeout.as_millis()
                )));
            }
            _ => {}
        }
    }
}

impl Session {
    /// Connects to `hosts[/chroot]`, creating the chroot path if it does not exist yet.
    pub fn connect(connect: &str, timeout: Duration) -> ZkResult<Session> {
        let (hosts, chroot) = split_chroot(connect);
        if let Some(root) = chroot {
            let bare = open(hosts, timeout)?;
            let r = create_all(&bare, root);
            let _ = bare.close();
            r?;
        }
        let zk = open(connect, timeout)?;
        Ok(Session {
            zk,
            connect: connect.to_string(),
        })
    }

    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    pub fn raw(&self) -> &ZooKeeper {
        &self.zk
    }

    /// Creates `path` and its missing parents as persistent nodes (existing ones are fine).
    pub fn create_all(&self, path: &str) -> ZkResult<()> {
        create_all(&self.zk, path)
    }

    pub fn create(&self, path: &str, data: Vec<u8>, ephemeral: bool) -> ZkResult<()> {
        let mode = if ephemeral {
            CreateMode::Ephemeral
        } else {
            CreateMode::Persistent
        };
        op(
            "create",
            path,
            self.zk
                .create(path, data, Acl::open_unsafe().clone(), mode)
                .map(|_| ()),
        )
    }

    /// Data and version of a node, `None` if absent.
    pub fn get(&self, path: &str) -> ZkResult<Option<(Vec<u8>, Stat)>> {
        match self.zk.get_data(path, false) {
            Ok(v) => Ok(Some(v)),
            Err(ZkError::NoNode) => Ok(None),
            Err(e) => op("get", path, Err(e)),
        }
    }

    /// Conditional write: fails with `BadVersion` if someone else wrote since `version`.
    pub fn set(&self, path: &str, data: Vec<u8>, version: Option<i32>) -> ZkResult<Stat> {
        op("set", path, self.zk.set_data(path, data, version))
    }

    pub fn children(&self, path: &str) -> ZkResult<Vec<String>> {
        match self.zk.get_children(path, false) {
            Ok(v) => Ok(v),
            Err(ZkError::NoNode) => Ok(Vec::new()),
            Err(e) => op("children", path, Err(e)),
        }
    }

    pub fn delete(&self, path: &str, version: Option<i32>) -> ZkResult<()> {
        match self.zk.delete(path, version) {
            Ok(()) | Err(ZkError::NoNode) => Ok(()),
            Err(e) => op("delete", path, Err(e)),
        }
    }

    /// Ends the session now (its ephemeral nodes go at once).
    pub fn close(self) {
        let _ = self.zk.close();
    }
}

fn create_all(zk: &ZooKeeper, path: &str) -> ZkResult<()> {
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        match zk.create(
            &cur,
            Vec::new(),
            Acl::open_unsafe().clone(),
            CreateMode::Persistent,
        ) {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return op("create", &cur, Err(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_strings_split_hosts_and_chroot() {
        assert_eq!(split_chroot("127.0.0.1:2181"), ("127.0.0.1:2181", None));
        assert_eq!(
            split_chroot("a:1,b:2/simplekv/c1"),
            ("a:1,b:2", Some("/simplekv/c1"))
        );
        assert_eq!(split_chroot("a:1/"), ("a:1", None));
    }
}
