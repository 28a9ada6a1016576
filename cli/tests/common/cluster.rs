//! A real cluster for integration tests: a local ZooKeeper and `n` `simplekv server`
//! processes in cluster mode, on free loopback ports, data in a temporary directory.
//!
//! Nodes are numbered `1..=n`, which is also their `cluster.node_id`; every method taking a
//! node takes that number. Waits are bounded and panic with the nodes' log tails.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{RedisResult, Value};
use simplekv_cluster::control::registry;
use simplekv_cluster::zk::layout::{PartitionState, path};
use simplekv_cluster::zk::{LocalZooKeeper, Session};
use simplekv_net::server::router::Topology;

/// `cluster.name` of test clusters.
pub const CLUSTER_NAME: &str = "test";
const ZK_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_WAIT: Duration = Duration::from_secs(30);
const LEADERS_WAIT: Duration = Duration::from_secs(60);
const STOP_WAIT: Duration = Duration::from_secs(20);

struct NodeProc {
    id: u32,
    resp_port: u16,
    grpc_port: u16,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    pub partitions: u32,
    pub rf: u32,
    nodes: Vec<NodeProc>,
    extra: Vec<(String, String)>,
    zk: LocalZooKeeper,
    /// One key per partition (`probe_keys[p]` hashes to `p`), to check that leaders answer.
    probe_keys: Vec<String>,
    tmp: tempfile::TempDir,
    /// Clusters in one test binary run one at a time: two of them on a 2-core machine starve
    /// each other past the 2 s session timeout, and the tests would measure that.
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl LocalCluster {
    /// Starts ZooKeeper and `n` nodes, creates the cluster (`partitions` partitions,
    /// replication factor `rf`) and waits until every partition has a leader that answers.
    /// `extra_sets` go to every node as `--set NAME=VALUE` (e.g.
    /// `("cluster.session_timeout_ms", "2000")`).
    pub fn start(n: u32, partitions: u32, rf: u32, extra_sets: &[(&str, &str)]) -> LocalCluster {
        assert!(n >= 1 && rf >= 1 && rf <= n, "bad cluster shape");
        // A test that panicked while holding it poisons it; the next one may still run.
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::Builder::new()
            .prefix("simplekv-cluster-")
            .tempdir()
            .expect("tempdir");
        let zk = LocalZooKeeper::start(Some(&tmp.path().join("zk")))
            .expect("ZooKeeper (scripts/setup.sh installs it)");
        let ports = free_ports(2 * n as usize);
        let nodes = (1..=n)
            .map(|id| NodeProc {
                id,
                resp_port: ports[2 * (id as usize - 1)],
                grpc_port: ports[2 * (id as usize - 1) + 1],
                data: tmp.path().join(format!("node{id}")),
                log: tmp.path().join(format!("node{id}.log")),
                child: None,
            })
            .collect();
        let mut c = LocalCluster {
            partitions,
            rf,
            nodes,
            extra: extra_sets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            zk,
            probe_keys: probe_keys(partitions),
            tmp,
            _serial: serial,
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c.wait_registered(&(1..=n).collect::<Vec<_>>(), REGISTER_WAIT);
        if let Err(e) = simplekv_cluster::admin::create(&c.zk_connect(), partitions, rf, ZK_TIMEOUT)
        {
            panic!("cluster create: {e}\n{}", c.all_log_tails());
        }
        c.wait_for_leaders(LEADERS_WAIT);
        c
    }

    /// Number of nodes.
    pub fn len(&self) -> u32 {
        self.nodes.len() as u32
    }

    fn node(&self, i: u32) -> &NodeProc {
        assert!(
            i >= 1 && i as usize <= self.nodes.len(),
            "node {i} does not exist (nodes are 1..={})",
            self.nodes.len()
        );
        &self.nodes[i as usize - 1]
    }

    fn node_mut(&mut self, i: u32) -> &mut NodeProc {
        let _ = self.node(i);
        &mut self.nodes[i as usize - 1]
    }

    /// `127.0.0.1:PORT` of node `i`'s RESP service.
    pub fn resp_addr(&self, i: u32) -> String {
        format!("127.0.0.1:{}", self.node(i).resp_port)
    }

    /// `127.0.0.1:PORT` of node `i`'s gRPC service.
    pub fn grpc_addr(&self, i: u32) -> String {
        format!("127.0.0.1:{}", self.node(i).grpc_port)
    }

    /// The `--zk` string for `simplekv cluster status/...` and `simplekv_cluster::admin`.
    pub fn zk_connect(&self) -> String {
        format!("{}/simplekv/{CLUSTER_NAME}", self.zk.addr())
    }

    /// Node `i`'s data directory (`--dir`); partition `p` lives in
    /// `simplekv_net::server::partition_dir(&data_dir, p)`.
    pub fn data_dir(&self, i: u32) -> PathBuf {
        self.node(i).data.clone()
    }

    /// A ZooKeeper session at the cluster's root, for reading its state directly.
    pub fn zk_session(&self) -> Session {
        Session::connect(&self.zk_connect(), ZK_TIMEOUT).expect("ZooKeeper session")
    }

    /// Process id of node `i`; panics if it is not running.
    pub fn pid(&self, i: u32) -> u32 {
        self.node(i)
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
            .id()
    }

    /// True while node `i`'s process has not exited (a SIGSTOPped node is running).
    pub fn is_running(&mut self, i: u32) -> bool {
        self.node_mut(i)
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn signal(&self, i: u32, sig: libc::c_int) {
        // SAFETY: signalling our own child, not yet reaped, so the pid is still ours.
        let rc = unsafe { libc::kill(self.pid(i) as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) node {i}");
    }

    /// SIGKILL node `i`, as a crash, and reap it.
    pub fn kill9(&mut self, i: u32) {
        if let Some(mut c) = self.node_mut(i).child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process keeps its sockets and sessions but answers nothing (a long GC
    /// pause or a hung machine).
    /// Returns once the process is stopped: on a busy machine it could otherwise still answer
    /// a request sent right after (found when a test's write to a paused leader succeeded).
    pub fn sigstop(&self, i: u32) {
        self.signal(i, libc::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.pid(i));
        let deadline = Instant::now() + Duration::from_secs(5);
        // The state is the field after the parenthesised command name.
        let stopped = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state == "T")
            })
        };
        while !stopped() {
            assert!(Instant::now() < deadline, "node {i} did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn sigcont(&self, i: u32) {
        self.signal(i, libc::SIGCONT);
    }

    /// SIGTERM (clean shutdown) and wait for the exit; returns the exit code. Panics, with
    /// the log tail, if the node takes longer than 20 s (it is SIGKILLed first).
    pub fn sigterm_and_wait(&mut self, i: u32) -> Option<i32> {
        self.signal(i, libc::SIGTERM);
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            let node = self.node_mut(i);
            let c = node.child.as_mut().expect("running");
            if let Ok(Some(st)) = c.try_wait() {
                node.child = None;
                return st.code();
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                node.child = None;
                panic!(
                    "node {i} did not exit within {} s of SIGTERM\n{}",
                    STOP_WAIT.as_secs(),
                    self.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts node `i` again on the same ports and data directory (SIGKILLing it first if it
    /// is still running) and waits until it has registered with a new ZooKeeper session.
    /// Does not wait for partitions to move back: see [`LocalCluster::wait_for_leaders`].
    pub fn restart(&mut self, i: u32) {
        let old_owner = self.broker_owner(i);
        self.kill9(i);
        self.spawn(i);
        let deadline = Instant::now() + REGISTER_WAIT;
        loop {
            self.check_alive(i, "restarting");
            let owner = self.broker_owner(i);
            if owner.is_some() && owner != old_owner {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {i} did not register again within {} s\n{}",
                    REGISTER_WAIT.as_secs(),
                    self.log_tail(i)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts node `i` (stopped), expecting it to refuse to run: waits up to 60 s for it to
    /// exit and returns its exit code and log. Panics if it is still running then.
    pub fn start_expecting_exit(&mut self, i: u32) -> (Option<i32>, String) {
        let from = self.log_len(i);
        self.spawn(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let node = self.node_mut(i);
            let c = node.child.as_mut().expect("spawned");
            if let Ok(Some(st)) = c.try_wait() {
                node.child = None;
                return (st.code(), self.log_since(i, from));
            }
            if Instant::now() >= deadline {
                panic!("node {i} kept running\n{}", self.log_tail(i));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP (`stop`) or SIGCONT the ZooKeeper server: while stopped it answers nothing,
    /// and once it goes on every session it did not hear from within its timeout expires.
    pub fn signal_zookeeper(&self, stop: bool) {
        let pid = self.zk.pid().expect("ZooKeeper runs");
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child process.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) ZooKeeper");
    }

    /// Starts node `i` (stopped) without waiting for it to register.
    pub fn start_no_wait(&mut self, i: u32) {
        self.spawn(i);
    }

    /// Node `i` (stopped) keeps its data in `dir` from its next start on (a disk of its own).
    pub fn set_data_dir(&mut self, i: u32, dir: PathBuf) {
        let node = self.node_mut(i);
        assert!(node.child.is_none(), "node {i} is running");
        node.data = dir;
    }

    /// SIGKILL node `i`, delete its data directory, and start it again (a replaced disk).
    pub fn wipe_and_restart(&mut self, i: u32) {
        self.kill9(i);
        let data = self.node(i).data.clone();
        if data.exists() {
            std::fs::remove_dir_all(&data).expect("remove data dir");
        }
        self.restart(i);
    }

    /// A connection to node `i` (5 s connect, read and write timeouts).
    pub fn conn_to(&self, i: u32) -> redis::Connection {
        let url = format!("redis://{}/", self.resp_addr(i));
        let c = redis::Client::open(url.as_str())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to node {i}: {e}\n{}", self.log_tail(i)));
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        c.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        c
    }

    /// The last 40 lines node `i` logged (all runs).
    /// Node `i`'s log from byte `from` on (see [`LocalCluster::log_len`]).
    pub fn log_since(&self, i: u32, from: u64) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.node(i).log) {
            let _ = f.seek(SeekFrom::Start(from));
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The length of node `i`'s log so far.
    pub fn log_len(&self, i: u32) -> u64 {
        std::fs::metadata(&self.node(i).log).map_or(0, |m| m.len())
    }

    pub fn log_tail(&self, i: u32) -> String {
        let n = self.node(i);
        let mut text = String::new();
        if let Ok(mut f) = File::open(&n.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            // The tail of a large log is in its last few kilobytes.
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- node {i} log ({}) ---\n{}",
            n.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    pub fn all_log_tails(&self) -> String {
        (1..=self.len())
            .map(|i| self.log_tail(i))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Partition `p`'s state in ZooKeeper.
    pub fn partition_state(&self, p: u32) -> PartitionState {
        let s = self.zk_session();
        let sp = path::partition_state(p);
        let (raw, _) = s
            .get(&sp)
            .expect("read partition state")
            .unwrap_or_else(|| panic!("{sp} missing"));
        s.close();
        PartitionState::decode(&raw).expect("decode partition state")
    }

    /// The leader ZooKeeper names for partition `p`.
    pub fn leader_of(&self, p: u32) -> Option<u32> {
        self.partition_state(p).leader
    }

    /// The partition a key belongs to.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        Topology {
            partitions: self.partitions,
            workers: 1,
        }
        .partition_of(key)
    }

    /// A key that belongs to partition `p`.
    pub fn key_in(&self, p: u32) -> &str {
        &self.probe_keys[p as usize]
    }

    /// Waits until every partition has a live leader that answers a read of a key of that
    /// partition without an error (no MOVED, TRYAGAIN, CLUSTERDOWN). Panics with the log
    /// tails and the partitions still unserved after `timeout`.
    pub fn wait_for_leaders(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 1..=self.len() {
                if self.node(i).child.is_some() {
                    self.check_alive(i, "waiting for leaders");
                }
            }
            let last = match self.unserved() {
                Ok(v) if v.is_empty() => return,
                Ok(v) => v.join("; "),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "partitions without an answering leader after {} s: {last}\n{}",
                    timeout.as_secs(),
                    self.all_log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every partition's ISR holds all its replicas (followers caught up).
    pub fn wait_for_full_isr(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let short: Vec<u32> = (0..self.partitions)
                .filter(|&p| {
                    let st = self.partition_state(p);
                    st.isr.len() < st.replicas.len()
                })
                .collect();
            if short.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "partitions {short:?} still have replicas outside their ISR after {} s\n{}",
                    timeout.as_secs(),
                    self.all_log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Descriptions of the partitions whose leader is missing or does not answer.
    fn unserved(&self) -> Result<Vec<String>, String> {
        let s = Session::connect(&self.zk_connect(), ZK_TIMEOUT).map_err(|e| e.to_string())?;
        let live = registry::live_brokers(&s).map_err(|e| e.to_string())?;
        let mut states = Vec::new();
        for p in 0..self.partitions {
            let sp = path::partition_state(p);
            let st = match s.get(&sp).map_err(|e| e.to_string())? {
                Some((raw, _)) => PartitionState::decode(&raw).map_err(|e| e.to_string())?,
                None => return Err(format!("{sp} missing")),
            };
            states.push(st);
        }
        s.close();
        let mut conns: std::collections::HashMap<u32, Option<redis::Connection>> =
            Default::default();
        let mut bad = Vec::new();
        for (p, st) in states.iter().enumerate() {
            let Some(l) = st.leader else {
                bad.push(format!("{p}: no leader"));
                continue;
            };
            let Some(b) = live.iter().find(|b| b.id == l) else {
                bad.push(format!("{p}: leader {l} not registered"));
                continue;
            };
            let conn = conns.entry(l).or_insert_with(|| {
                let c = redis::Client::open(format!("redis://{}/", b.resp))
                    .ok()?
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .ok()?;
                c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                Some(c)
            });
            let Some(c) = conn.as_mut() else {
                bad.push(format!("{p}: leader {l} at {} refuses connections", b.resp));
                continue;
            };
            let key = &self.probe_keys[p];
            if let Err(e) = redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c) {
                bad.push(format!("{p}: leader {l} answers {e}"));
                // A broken connection is not reused.
                conns.insert(l, None);
            }
        }
        Ok(bad)
    }

    /// The ZooKeeper session owning node `i`'s broker znode, if it is registered.
    fn broker_owner(&self, i: u32) -> Option<i64> {
        let s = self.zk_session();
        let owner = s
            .get(&path::broker(i))
            .expect("read broker znode")
            .map(|(_, stat)| stat.ephemeral_owner);
        s.close();
        owner
    }

    fn wait_registered(&mut self, ids: &[u32], timeout: Duration) {
        let s = self.zk_session();
        let deadline = Instant::now() + timeout;
        loop {
            for &i in ids {
                self.check_alive(i, "starting");
            }
            let live: Vec<u32> = registry::live_brokers(&s)
                .expect("list brokers")
                .iter()
                .map(|b| b.id)
                .collect();
            if ids.iter().all(|i| live.contains(i)) {
                s.close();
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "nodes {ids:?} not all registered within {} s (registered: {live:?})\n{}",
                    timeout.as_secs(),
                    self.all_log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics with the log tail if node `i` has exited.
    fn check_alive(&mut self, i: u32, what: &str) {
        let node = self.node_mut(i);
        let exited = match node.child.as_mut() {
            None => Some("not started".to_string()),
            Some(c) => match c.try_wait() {
                Ok(Some(st)) => Some(st.to_string()),
                _ => None,
            },
        };
        if let Some(st) = exited {
            node.child = None;
            panic!("node {i} exited while {what} ({st})\n{}", self.log_tail(i));
        }
    }

    fn spawn(&mut self, i: u32) {
        let zk = format!("{}/simplekv", self.zk.addr());
        let extra = self.extra.clone();
        let node = self.node_mut(i);
        assert!(node.child.is_none(), "node {i} is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let err = log.try_clone().expect("node log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_simplekv"));
        cmd.arg("server")
            .args(["--bind", "127.0.0.1"])
            .args(["--port", &node.resp_port.to_string()])
            .args(["--grpc-port", &node.grpc_port.to_string()])
            .arg("--dir")
            .arg(&node.data)
            .args(["--workers", "1", "--no-pin", "--log-level", "info"])
            .args(["--set", &format!("cluster.zk={zk}")])
            .args(["--set", &format!("cluster.node_id={i}")])
            .args(["--set", &format!("cluster.name={CLUSTER_NAME}")]);
        for (k, v) in &extra {
            cmd.args(["--set", &format!("{k}={v}")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn simplekv");
        node.child = Some(child);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.zk.stop();
    }
}

/// `k` distinct free loopback ports: all bound at once, so none is handed out twice.
fn free_ports(k: usize) -> Vec<u16> {
    let ls: Vec<std::net::TcpListener> = (0..k)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// One key per partition: `probe:<n>` for the first n that hashes there.
fn probe_keys(partitions: u32) -> Vec<String> {
    let topo = Topology {
        partitions,
        workers: 1,
    };
    let mut keys: Vec<Option<String>> = vec![None; partitions as usize];
    let mut left = partitions as usize;
    let mut n = 0u64;
    while left > 0 {
        let k = format!("probe:{n}");
        let slot = &mut keys[topo.partition_of(k.as_bytes()) as usize];
        if slot.is_none() {
            *slot = Some(k);
            left -= 1;
        }
        n += 1;
    }
    keys.into_iter().flatten().collect()
}

// ------------------------------------------------------ a redirect-following client

/// Runs a command against the cluster as `redis-cli -c` does: follows MOVED, waits out
/// TRYAGAIN/CLUSTERDOWN (bounded by `deadline`). Returns the first other reply or error text.
pub fn run(addr: &str, args: &[&[u8]], deadline: Duration) -> Result<Value, String> {
    let start = Instant::now();
    let entry = addr.to_string();
    let mut addr = entry.clone();
    loop {
        let r: RedisResult<Value> = (|| {
            let client = redis::Client::open(format!("redis://{addr}/"))?;
            let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap_or("PING"));
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query(&mut c)
        })();
        // The redis crate words server errors its own way ("Moved: 449 host:port",
        // "TryAgain: ..."): compare in lower case, normalised to Redis's codes.
        let text = match r {
            Ok(v) => return Ok(v),
            Err(e) => e.to_string().to_lowercase(),
        };
        if let Some(rest) = text.split("moved").nth(1) {
            let target = rest.split_whitespace().last().unwrap_or("").to_string();
            if target.contains(':') {
                addr = target;
                continue;
            }
        }
        // A redirect to a node that is paused times out: ask again (SET is idempotent here).
        let retry = text.contains("tryagain")
            || text.contains("clusterdown")
            || text.contains("connection refused")
            || text.contains("temporarily unavailable")
            || text.contains("timed out");
        if !retry || start.elapsed() > deadline {
            return Err(text);
        }
        // Ask the entry node again: the redirect may have named a node that just died.
        addr = entry.clone();
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn set(c: &LocalCluster, entry: u32, k: &str, v: &str) -> Result<(), String> {
    run(
        &c.resp_addr(entry),
        &[b"SET", k.as_bytes(), v.as_bytes()],
        Duration::from_secs(20),
    )
    .map(|_| ())
}

pub fn get(c: &LocalCluster, entry: u32, k: &str) -> Option<String> {
    match run(
        &c.resp_addr(entry),
        &[b"GET", k.as_bytes()],
        Duration::from_secs(20),
    ) {
        Ok(Value::BulkString(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        Ok(Value::Nil) => None,
        other => panic!("GET {k}: {other:?}\n{}", c.all_log_tails()),
    }
}
