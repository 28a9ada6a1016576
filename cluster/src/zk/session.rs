//! A ZooKeeper session for simplekv: connects under the cluster's root (creating the root if
//! needed), waits until the session exists, and turns the crate's errors into ours.
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

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

impl ZkFailure {
    /// The server's (or the client library's) error code, for operations that reached it.
    pub fn code(&self) -> Option<ZkError> {
        match self {
            ZkFailure::Op { source, .. } => Some(*source),
            _ => None,
        }
    }

    /// True when the session is gone for good: a new one is needed.
    pub fn session_lost(&self) -> bool {
        matches!(
            self.code(),
            Some(ZkError::SessionExpired | ZkError::SessionMoved | ZkError::AuthFailed)
        )
    }
}

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

/// Opens a raw session (asking for `timeout` as its session timeout) and waits until ZooKeeper
/// has established it, at most `wait`.
fn open(addr: &str, timeout: Duration, wait: Duration) -> ZkResult<ZooKeeper> {
    let fail = |reason: String| ZkFailure::Connect {
        addr: addr.to_string(),
        reason,
    };
    let (tx, rx) = mpsc::channel();
    let zk = ZooKeeper::connect(addr, timeout, |_: WatchedEvent| {})
        .map_err(|e| fail(format!("{e:?}")))?;
    let zk = Arc::new(zk);
    let tx2 = tx.clone();
    zk.add_listener(move |s: ZkState| {
        let _ = tx2.send(Some(s));
    });
    // No request goes out on this thread before the session is up. The client library has no
    // request timeout and sends no pings while a request is outstanding, and a request queued
    // behind the connect request was seen never to be answered (a test hung in such a probe
    // for minutes). The listener is added right after `connect` returns, well before
    // ZooKeeper has created the session (that takes a write to its transaction log), so its
    // Connected is not missed; should it be, a probe on a thread of its own, after a second,
    // finds the session up (it answers `None` when it fails).
    let started = Instant::now();
    let deadline = started + wait;
    let probe_after = started + wait.min(Duration::from_secs(1));
    let mut probing = false;
    let outcome = loop {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        if !probing && now >= probe_after {
            probing = true;
            let (z, t) = (Arc::clone(&zk), tx.clone());
            let spawned = std::thread::Builder::new()
                .name("skv-zk-probe".into())
                .spawn(move || {
                    let up = z.exists("/", false).is_ok();
                    drop(z);
                    let _ = t.send(up.then_some(ZkState::Connected));
                });
            if let Err(e) = spawned {
                break Err(fail(format!("cannot start a thread: {e}")));
            }
        }
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(Some(ZkState::Connected | ZkState::ConnectedReadOnly)) => break Ok(()),
            Ok(Some(ZkState::AuthFailed)) => break Err(fail("authentication failed".into())),
            Ok(Some(ZkState::Closed)) => break Err(fail("the session was closed".into())),
            _ if left.is_zero() => {
                break Err(fail(format!("no session within {} ms", wait.as_millis())));
            }
            _ => {}
        }
    };
    match outcome {
        Ok(()) => {
            // A probe that answered has dropped its handle, or is about to.
            let mut zk = zk;
            for _ in 0..1000 {
                match Arc::try_unwrap(zk) {
                    Ok(z) => return Ok(z),
                    Err(shared) => zk = shared,
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // A probe is stuck though the session is up: let it have this one.
            Err(fail("the session is up but a probe on it is stuck".into()))
        }
        Err(e) => {
            // Dropping a session sends a close request, which can block as above.
            let _ = std::thread::Builder::new()
                .name("skv-zk-close".into())
                .spawn(move || drop(zk));
            Err(e)
        }
    }
}

impl Session {
    /// Connects to `hosts[/chroot]`, creating the chroot path if it does not exist yet.
    pub fn connect(connect: &str, timeout: Duration) -> ZkResult<Session> {
        Session::connect_with(connect, timeout, timeout)
    }

    /// As [`Session::connect`], with a session timeout and a separate bound on how long to
    /// wait for each of the (at most two) connections it opens.
    pub fn connect_with(
        connect: &str,
        session_timeout: Duration,
        wait: Duration,
    ) -> ZkResult<Session> {
        let (hosts, chroot) = split_chroot(connect);
        if let Some(root) = chroot {
            let bare = open(hosts, session_timeout, wait)?;
            let r = create_all(&bare, root);
            drop(bare);
            r?;
        }
        let zk = open(connect, session_timeout, wait)?;
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

    /// Data and version of a node, leaving a one-shot watch on it: a data watch when it exists,
    /// an existence watch when it does not (ZooKeeper sets no data watch on a missing node).
    pub fn get_watch<W>(&self, path: &str, watcher: W) -> ZkResult<Option<(Vec<u8>, Stat)>>
    where
        W: Fn(WatchedEvent) + Send + Clone + 'static,
    {
        // The node may come and go between the two calls; a few rounds settle it, and a
        // caller that polls as well loses nothing if they do not.
        for _ in 0..3 {
            match self.zk.get_data_w(path, watcher.clone()) {
                Ok(v) => return Ok(Some(v)),
                Err(ZkError::NoNode) => {}
                Err(e) => return op("get", path, Err(e)),
            }
            match self.zk.exists_w(path, watcher.clone()) {
                Ok(None) => return Ok(None),
                Ok(Some(_)) => {}
                Err(e) => return op("exists", path, Err(e)),
            }
        }
        Ok(None)
    }

    /// Children of a node with a one-shot child watch; `None` (and an existence watch) when
    /// the node does not exist.
    pub fn children_watch<W>(&self, path: &str, watcher: W) -> ZkResult<Option<Vec<String>>>
    where
        W: Fn(WatchedEvent) + Send + Clone + 'static,
    {
        for _ in 0..3 {
            match self.zk.get_children_w(path, watcher.clone()) {
                Ok(v) => return Ok(Some(v)),
                Err(ZkError::NoNode) => {}
                Err(e) => return op("children", path, Err(e)),
            }
            match self.zk.exists_w(path, watcher.clone()) {
                Ok(None) => return Ok(None),
                Ok(Some(_)) => {}
                Err(e) => return op("exists", path, Err(e)),
            }
        }
        Ok(None)
    }

    /// Whether a node exists, leaving a one-shot watch on its creation, change or deletion.
    pub fn exists_watch<W>(&self, path: &str, watcher: W) -> ZkResult<bool>
    where
        W: Fn(WatchedEvent) + Send + 'static,
    {
        op("exists", path, self.zk.exists_w(path, watcher)).map(|s| s.is_some())
    }

    pub fn delete(&self, path: &str, version: Option<i32>) -> ZkResult<()> {
        match self.zk.delete(path, version) {
            Ok(()) | Err(ZkError::NoNode) => Ok(()),
            Err(e) => op("delete", path, Err(e)),
        }
    }

    /// Ends the session now (its ephemeral nodes go at once).
    pub fn close(self) {
        // The crate's `Drop` closes the session; closing here as well would make that second
        // close fail and log an error.
        drop(self);
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
