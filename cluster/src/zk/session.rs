//! A ZooKeeper session for simplekv: connects under the cluster's root (creating the root if
//! needed), waits until the session exists, and turns the crate's errors into ours.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use zookeeper::{Acl, CreateMode, Stat, WatchedEvent, ZkError, ZkState, ZooKeeper};

#[derive(Debug, thiserror::Error)]
pub enum ZkFailure {
    #[error("cannot reach ZooKeeper at {addr}: {reason}")]
    Connect {
        addr: String,
        reason: String,
        /// The network may let it through a moment later (a timeout, no route), unlike a
        /// refused connection, an unknown host or a failed authentication.
        transient: bool,
    },
    #[error("ZooKeeper {op} {path}: {source:?}")]
    Op {
        op: &'static str,
        path: String,
        source: ZkError,
    },
    #[error(
        "ZooKeeper {op} {path}: no answer within {} ms",
        after.as_millis()
    )]
    Unresponsive {
        op: &'static str,
        path: String,
        after: Duration,
    },
    #[error("ZooKeeper {path}: unreadable content: {reason}")]
    Decode { path: String, reason: String },
    #[error(
        "node id {id} is already registered in ZooKeeper by another session: a live node with \
         the same id (give every node its own cluster.node_id), or this node's previous run, \
         whose session ZooKeeper has not expired yet"
    )]
    IdTaken { id: u32 },
    #[error(
        "ZooKeeper at {server} grants sessions of {} ms, less than cluster.session_timeout_ms \
         = {} (its maxSessionTimeout is lower): it would expire this node's session before \
         the node stops leading, and another node could be elected while this one still \
         serves. Set cluster.session_timeout_ms to at most {} or raise maxSessionTimeout in \
         the ZooKeeper servers' zoo.cfg",
        granted.as_millis(),
        asked.as_millis(),
        granted.as_millis()
    )]
    TimeoutCut {
        server: String,
        asked: Duration,
        granted: Duration,
    },
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

    /// True when ZooKeeper did not answer in time (see [`Session::answering`]).
    pub fn unresponsive(&self) -> bool {
        matches!(self, ZkFailure::Unresponsive { .. })
    }

    /// True when trying again soon may succeed: no answer in time, a lost connection or
    /// session, a connection that timed out or found no route. Not for a refused connection
    /// (nothing listens there) or an unknown host: those are more likely a wrong address.
    pub fn transient(&self) -> bool {
        match self {
            ZkFailure::Connect { transient, .. } => *transient,
            ZkFailure::Unresponsive { .. } => true,
            ZkFailure::Op { source, .. } => {
                self.session_lost()
                    || matches!(source, ZkError::ConnectionLoss | ZkError::OperationTimeout)
            }
            ZkFailure::Decode { .. } => false,
            // The session of a previous run (a crash, a restart within the session timeout,
            // which ZooKeeper may have stretched to twice its tickTime) ends by itself.
            ZkFailure::IdTaken { .. } => true,
            // A setting of the ZooKeeper servers: it stays until someone changes it.
            ZkFailure::TimeoutCut { .. } => false,
        }
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

/// A ZooKeeper session. Requests run on the session's own thread (`skv-zk-call`), each
/// waited for at most half the session timeout (see [`Session::call`]); dropping the session
/// never blocks.
pub struct Session {
    zk: Arc<ZooKeeper>,
    calls: mpsc::Sender<Call>,
    /// Shared with the session's thread.
    state: Arc<CallState>,
    call_timeout: Duration,
    /// The origin of `CallState::answered_us`.
    epoch: Instant,
    connect: String,
}

#[derive(Default)]
struct CallState {
    /// A request was not answered in time and has not been answered since.
    stuck: AtomicBool,
    /// When the last request was answered (any answer, errors included), as microseconds
    /// since `epoch`.
    answered_us: AtomicU64,
}

type Call = Box<dyn FnOnce(&ZooKeeper) + Send>;

fn op<T>(op: &'static str, path: &str, r: Result<T, ZkError>) -> ZkResult<T> {
    r.map_err(|source| ZkFailure::Op {
        op,
        path: path.to_string(),
        source,
    })
}

/// Whether some server of `hosts` (`host:port,...`) takes a TCP connection; if none does,
/// the last failure and whether any failure may pass (see [`ZkFailure::transient`]).
fn reachable(hosts: &str, wait: Duration) -> Result<(), (String, bool)> {
    use std::io::ErrorKind;
    use std::net::ToSocketAddrs;
    let mut last = format!("no address in '{hosts}'");
    let mut transient = false;
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let addrs = match host.to_socket_addrs() {
            Ok(a) => a,
            Err(e) => {
                last = format!("{host}: {e}");
                continue;
            }
        };
        for a in addrs {
            match std::net::TcpStream::connect_timeout(&a, wait) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    transient |= !matches!(
                        e.kind(),
                        ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable
                    );
                    last = format!("{a}: {e}");
                }
            }
        }
    }
    Err((last, transient))
}

/// Opens a raw session (asking for `timeout` as its session timeout) and waits until ZooKeeper
/// has established it, at most `wait`.
fn open(addr: &str, timeout: Duration, wait: Duration) -> ZkResult<Arc<ZooKeeper>> {
    let fail_as = |reason: String, transient: bool| ZkFailure::Connect {
        addr: addr.to_string(),
        reason,
        transient,
    };
    let fail = |reason: String| fail_as(reason, false);
    // The client library retries a refused connection in a tight loop, without a pause (a
    // core busy and an error logged a thousand times a second for as long as ZooKeeper is
    // down): try a plain TCP connection first, and hand it the address only if one is taken.
    reachable(split_chroot(addr).0, wait.min(Duration::from_secs(2)))
        .map_err(|(reason, transient)| fail_as(reason, transient))?;
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
            Ok(Some(ZkState::Closed)) => {
                break Err(fail_as("the session was closed".into(), true));
            }
            _ if left.is_zero() => {
                let reason = format!("no session within {} ms", wait.as_millis());
                break Err(fail_as(reason, true));
            }
            _ => {}
        }
    };
    match outcome {
        // A probe still running shares the handle; the last one to let go closes the session.
        Ok(()) => Ok(zk),
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
        // `host:port/simplekv/main/` names the same root as without the slash (the client
        // library refuses a chroot ending in one).
        let connect = match connect.find('/') {
            Some(i) => &connect[..(connect.trim_end_matches('/').len()).max(i)],
            None => connect,
        };
        let (hosts, chroot) = split_chroot(connect);
        if let Some(root) = chroot {
            let bare = Session::start(open(hosts, session_timeout, wait)?, hosts, session_timeout)?;
            bare.create_all(root)?;
        }
        Session::start(
            open(connect, session_timeout, wait)?,
            connect,
            session_timeout,
        )
    }

    /// Starts the thread that runs the session's requests.
    fn start(zk: Arc<ZooKeeper>, connect: &str, session_timeout: Duration) -> ZkResult<Session> {
        let (tx, rx) = mpsc::channel::<Call>();
        let z = Arc::clone(&zk);
        let state = Arc::new(CallState::default());
        let st = Arc::clone(&state);
        let epoch = Instant::now();
        std::thread::Builder::new()
            .name("skv-zk-call".into())
            .spawn(move || {
                while let Ok(call) = rx.recv() {
                    call(&z);
                    st.answered_us
                        .store(epoch.elapsed().as_micros() as u64, Ordering::Release);
                    st.stuck.store(false, Ordering::Release);
                }
                // The session is dropped: closing it (the crate's `Drop`) waits for
                // ZooKeeper's answer, here rather than on the caller's thread.
                drop(z);
            })
            .map_err(|e| ZkFailure::Connect {
                addr: connect.to_string(),
                reason: format!("cannot start a thread: {e}"),
                transient: false,
            })?;
        Ok(Session {
            zk,
            calls: tx,
            state,
            epoch,
            call_timeout: session_timeout / 2,
            connect: connect.to_string(),
        })
    }

    /// False from a request that was not answered in time until ZooKeeper answers it.
    pub fn answering(&self) -> bool {
        !self.state.stuck.load(Ordering::Acquire)
    }

    /// Time since ZooKeeper last answered a request of this session (since it was opened if
    /// none was made).
    pub fn silent_for(&self) -> Duration {
        let at = Duration::from_micros(self.state.answered_us.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(at)
    }

    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    pub fn raw(&self) -> &ZooKeeper {
        &self.zk
    }

    /// Runs one request on the session's thread and waits for it at most half the session
    /// timeout. The client library has no request timeout, sends no pings while a request is
    /// outstanding and never notices a connection that went silent (ZooKeeper paused, a
    /// network partition that drops packets): such a request would wait for TCP to give up,
    /// many minutes. After a timeout every call fails at once with
    /// [`ZkFailure::Unresponsive`] until the request is answered ([`Session::answering`]):
    /// the caller treats the session as disconnected (ZooKeeper's own clients give a
    /// connection up after two thirds of the session timeout without an answer), and as
    /// lost once it has been silent for longer than the session timeout.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        path: &str,
        f: impl FnOnce(&ZooKeeper, &str) -> ZkResult<T> + Send + 'static,
    ) -> ZkResult<T> {
        let unresponsive = || ZkFailure::Unresponsive {
            op,
            path: path.to_string(),
            after: self.call_timeout,
        };
        if !self.answering() {
            return Err(unresponsive());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let owned = path.to_string();
        let call: Call = Box::new(move |zk| {
            let _ = tx.send(f(zk, &owned));
        });
        if self.calls.send(call).is_err() {
            return Err(unresponsive());
        }
        match rx.recv_timeout(self.call_timeout) {
            Ok(r) => r,
            Err(_) => {
                self.state.stuck.store(true, Ordering::Release);
                // The answer may have come in just now, before `stuck` was set (the thread
                // clears it only after sending): then it is not stuck after all.
                match rx.try_recv() {
                    Ok(r) => {
                        self.state.stuck.store(false, Ordering::Release);
                        r
                    }
                    Err(_) => Err(unresponsive()),
                }
            }
        }
    }

    /// Creates `path` and its missing parents as persistent nodes (existing ones are fine).
    pub fn create_all(&self, path: &str) -> ZkResult<()> {
        self.call("create", path, create_all)
    }

    pub fn create(&self, path: &str, data: Vec<u8>, ephemeral: bool) -> ZkResult<()> {
        let mode = if ephemeral {
            CreateMode::Ephemeral
        } else {
            CreateMode::Persistent
        };
        self.call("create", path, move |zk, p| {
            let r = zk.create(p, data, Acl::open_unsafe().clone(), mode);
            op("create", p, r.map(|_| ()))
        })
    }

    /// Data and version of a node, `None` if absent.
    pub fn get(&self, path: &str) -> ZkResult<Option<(Vec<u8>, Stat)>> {
        self.call("get", path, |zk, p| match zk.get_data(p, false) {
            Ok(v) => Ok(Some(v)),
            Err(ZkError::NoNode) => Ok(None),
            Err(e) => op("get", p, Err(e)),
        })
    }

    /// Conditional write: fails with `BadVersion` if someone else wrote since `version`.
    pub fn set(&self, path: &str, data: Vec<u8>, version: Option<i32>) -> ZkResult<Stat> {
        self.call("set", path, move |zk, p| {
            op("set", p, zk.set_data(p, data, version))
        })
    }

    pub fn children(&self, path: &str) -> ZkResult<Vec<String>> {
        self.call("children", path, |zk, p| match zk.get_children(p, false) {
            Ok(v) => Ok(v),
            Err(ZkError::NoNode) => Ok(Vec::new()),
            Err(e) => op("children", p, Err(e)),
        })
    }

    /// Data and version of a node, leaving a one-shot watch on it: a data watch when it exists,
    /// an existence watch when it does not (ZooKeeper sets no data watch on a missing node).
    pub fn get_watch<W>(&self, path: &str, watcher: W) -> ZkResult<Option<(Vec<u8>, Stat)>>
    where
        W: Fn(WatchedEvent) + Send + Clone + 'static,
    {
        self.read_watched("get", path, watcher, |zk, p, w| zk.get_data_w(p, w))
    }

    /// Children of a node with a one-shot child watch; `None` (and an existence watch) when
    /// the node does not exist.
    pub fn children_watch<W>(&self, path: &str, watcher: W) -> ZkResult<Option<Vec<String>>>
    where
        W: Fn(WatchedEvent) + Send + Clone + 'static,
    {
        self.read_watched("children", path, watcher, |zk, p, w| {
            zk.get_children_w(p, w)
        })
    }

    /// `read` with a watch when the node exists, else an existence watch (`None`). The node
    /// may come and go between the two calls; a few rounds settle it, and a caller that polls
    /// as well loses nothing if they do not.
    fn read_watched<T, W>(
        &self,
        what: &'static str,
        path: &str,
        watcher: W,
        read: fn(&ZooKeeper, &str, W) -> Result<T, ZkError>,
    ) -> ZkResult<Option<T>>
    where
        T: Send + 'static,
        W: Fn(WatchedEvent) + Send + Clone + 'static,
    {
        self.call(what, path, move |zk, p| {
            for _ in 0..3 {
                match read(zk, p, watcher.clone()) {
                    Ok(v) => return Ok(Some(v)),
                    Err(ZkError::NoNode) => {}
                    Err(e) => return op(what, p, Err(e)),
                }
                match zk.exists_w(p, watcher.clone()) {
                    Ok(None) => return Ok(None),
                    Ok(Some(_)) => {}
                    Err(e) => return op("exists", p, Err(e)),
                }
            }
            Ok(None)
        })
    }

    /// Whether a node exists, leaving a one-shot watch on its creation, change or deletion.
    pub fn exists_watch<W>(&self, path: &str, watcher: W) -> ZkResult<bool>
    where
        W: Fn(WatchedEvent) + Send + 'static,
    {
        self.call("exists", path, move |zk, p| {
            op("exists", p, zk.exists_w(p, watcher)).map(|s| s.is_some())
        })
    }

    pub fn delete(&self, path: &str, version: Option<i32>) -> ZkResult<()> {
        self.call("delete", path, move |zk, p| match zk.delete(p, version) {
            Ok(()) | Err(ZkError::NoNode) => Ok(()),
            Err(e) => op("delete", p, Err(e)),
        })
    }

    /// Ends the session: its ephemeral nodes go as soon as ZooKeeper has the close request.
    /// Never waits: the session's own thread closes it after the requests queued before.
    pub fn close(self) {
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
