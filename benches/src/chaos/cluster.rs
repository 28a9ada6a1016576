//! The cluster under test: `n` `simplekv server` child processes in cluster mode, sharing one
//! ZooKeeper (each run its own cluster name, i.e. its own chroot), logs in the run folder.
//! Nodes run on loopback, or each in its own network namespace ([`Net`]) so links can be cut;
//! data directories are in the run folder, or each on a small tmpfs of its own ([`Disk`]) so
//! disks can fill up. Every wait is bounded and returns an error instead of panicking.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use simplekv_cluster::control::registry;
use simplekv_cluster::zk::Session;
use simplekv_cluster::zk::layout::{ControllerInfo, PartitionState, path};
use simplekv_net::server::router::Topology;

use super::disk::Disk;
use super::net::Net;
use super::resp::{Conn, Reply};

const ZK_TIMEOUT: Duration = Duration::from_secs(10);

/// One node process.
struct Node {
    id: u32,
    /// The address it binds and advertises.
    host: String,
    /// Its network namespace, if it has one.
    netns: Option<String>,
    resp_port: u16,
    grpc_port: u16,
    data: PathBuf,
    /// The file system holding `data`, when it has its own.
    disk: Option<Disk>,
    log: PathBuf,
    child: Option<Child>,
    /// SIGSTOPped and not yet continued.
    paused: bool,
}

pub struct Cluster {
    bin: PathBuf,
    /// `host:port/simplekv`: every node's `cluster.zk`.
    zk_root: String,
    /// `host:port/simplekv/<name>`: the cluster's chroot, for reads of its state.
    zk_connect: String,
    name: String,
    pub partitions: u32,
    nodes: Vec<Node>,
    session: Option<Session>,
    /// One key per partition (`probe_keys[p]` hashes to `p`).
    probe_keys: Vec<String>,
    /// Extra `--set NAME=VALUE` settings for every node.
    settings: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes in `dir`, creates the cluster (`partitions`, replication factor `rf`)
    /// and waits until every partition has an answering leader. With `net`, node `i` runs in
    /// `net`'s namespace `i`; with `disks`, each data directory is on a tmpfs of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        bin: &Path,
        dir: &Path,
        zk_addr: &str,
        name: &str,
        n: u32,
        partitions: u32,
        rf: u32,
        net: Option<&Net>,
        disks: bool,
        settings: &[String],
    ) -> Result<Cluster, String> {
        let ports = free_ports(2 * n as usize)?;
        let mut nodes = Vec::new();
        for id in 1..=n {
            let (data, disk) = if disks {
                let d = Disk::mount(&dir.join(format!("node{id}-disk")))?;
                (d.data_dir(), Some(d))
            } else {
                (dir.join(format!("node{id}")), None)
            };
            nodes.push(Node {
                id,
                host: net.map_or_else(|| "127.0.0.1".to_string(), |n| n.node_ip(id).to_string()),
                netns: net.map(|n| n.netns(id)),
                resp_port: ports[2 * (id as usize - 1)],
                grpc_port: ports[2 * (id as usize - 1) + 1],
                data,
                disk,
                log: dir.join(format!("node{id}.log")),
                child: None,
                paused: false,
            });
        }
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            zk_root: format!("{zk_addr}/simplekv"),
            zk_connect: format!("{zk_addr}/simplekv/{name}"),
            name: name.to_string(),
            partitions,
            nodes,
            session: None,
            probe_keys: probe_keys(partitions),
            settings: settings.to_vec(),
        };
        for id in 1..=n {
            c.spawn(id)?;
        }
        let ids: Vec<u32> = (1..=n).collect();
        c.wait_registered(&ids, Duration::from_secs(30))?;
        simplekv_cluster::admin::create(&c.zk_connect, partitions, rf, ZK_TIMEOUT)
            .map_err(|e| format!("cluster create: {e}"))?;
        c.wait_for_leaders(Duration::from_secs(60))?;
        Ok(c)
    }

    pub fn len(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn node(&self, i: u32) -> &Node {
        &self.nodes[i as usize - 1]
    }

    fn node_mut(&mut self, i: u32) -> &mut Node {
        &mut self.nodes[i as usize - 1]
    }

    /// RESP addresses of all nodes, node 1 first.
    pub fn resp_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.resp_port))
            .collect()
    }

    pub fn log_path(&self, i: u32) -> PathBuf {
        self.node(i).log.clone()
    }

    pub fn data_dir(&self, i: u32) -> PathBuf {
        self.node(i).data.clone()
    }

    fn session(&mut self) -> Result<&Session, String> {
        if self.session.is_none() {
            let s = Session::connect(&self.zk_connect, ZK_TIMEOUT)
                .map_err(|e| format!("ZooKeeper session: {e}"))?;
            self.session = Some(s);
        }
        self.session
            .as_ref()
            .ok_or_else(|| "no ZooKeeper session".to_string())
    }

    /// Runs `f` on the session; a failure drops the session (the next call reconnects).
    fn zk<T>(&mut self, f: impl Fn(&Session) -> Result<T, String>) -> Result<T, String> {
        let r = f(self.session()?);
        if r.is_err()
            && let Some(s) = self.session.take()
        {
            s.close();
        }
        r
    }

    /// Starts node `i` (same ports and data directory as before).
    pub fn spawn(&mut self, i: u32) -> Result<(), String> {
        let zk = self.zk_root.clone();
        let name = self.name.clone();
        let bin = self.bin.clone();
        let settings = self.settings.clone();
        let node = self.node_mut(i);
        if node.child.is_some() {
            return Err(format!("node {i} is already running"));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let mut cmd = match &node.netns {
            // `ip netns exec` execs the program in place: the child's pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // SAFETY: prctl is async-signal-safe. The node dies with the thread that started it
        // (this tool's main thread), even when the tool is SIGKILLed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("server")
            .args(["--bind", &node.host])
            .args(["--port", &node.resp_port.to_string()])
            .args(["--grpc-port", &node.grpc_port.to_string()])
            .arg("--dir")
            .arg(&node.data)
            .args(["--workers", "1", "--no-pin", "--log-level", "info"])
            .args(["--set", &format!("cluster.zk={zk}")])
            .args(["--set", &format!("cluster.node_id={}", node.id)])
            .args(["--set", &format!("cluster.name={name}")])
            .args(settings.iter().flat_map(|s| ["--set", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// Whether node `i` has a process (running or paused).
    pub fn is_up(&self, i: u32) -> bool {
        self.node(i).child.is_some()
    }

    pub fn is_paused(&self, i: u32) -> bool {
        self.node(i).paused
    }

    /// Nodes whose process exited although nothing here stopped it: `(node, exit status)`.
    /// They are marked down (a later [`Cluster::spawn`] starts them again).
    pub fn reap_unexpected(&mut self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                out.push((n.id, st.to_string()));
                n.child = None;
                n.paused = false;
            }
        }
        out
    }

    fn signal(&self, i: u32, sig: libc::c_int) -> Result<(), String> {
        let Some(c) = self.node(i).child.as_ref() else {
            return Err(format!("node {i} is not running"));
        };
        // SAFETY: signalling our own child, not yet reaped, so the pid is still ours.
        let rc = unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "kill({sig}) node {i}: {}",
                std::io::Error::last_os_error()
            ))
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self, i: u32) {
        let node = self.node_mut(i);
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        node.paused = false;
    }

    pub fn sigstop(&mut self, i: u32) -> Result<(), String> {
        self.signal(i, libc::SIGSTOP)?;
        self.node_mut(i).paused = true;
        Ok(())
    }

    pub fn sigcont(&mut self, i: u32) -> Result<(), String> {
        self.signal(i, libc::SIGCONT)?;
        self.node_mut(i).paused = false;
        Ok(())
    }

    /// SIGTERM (controlled shutdown) and wait up to `timeout` for the exit; then SIGKILL.
    /// Returns how it ended.
    pub fn sigterm_and_wait(&mut self, i: u32, timeout: Duration) -> Result<String, String> {
        self.signal(i, libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            let node = self.node_mut(i);
            let Some(c) = node.child.as_mut() else {
                return Err(format!("node {i} is not running"));
            };
            if let Ok(Some(st)) = c.try_wait() {
                node.child = None;
                return Ok(format!("exited ({st})"));
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                node.child = None;
                return Ok(format!(
                    "did not exit within {} s of SIGTERM; SIGKILLed",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes node `i`'s data directory (the node must be down).
    pub fn wipe(&mut self, i: u32) -> Result<(), String> {
        if self.is_up(i) {
            return Err(format!("node {i} is running"));
        }
        let data = self.data_dir(i);
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        }
        Ok(())
    }

    /// Whether node `i`'s data is on a file system of its own (that can be filled).
    pub fn has_disk(&self, i: u32) -> bool {
        self.node(i).disk.is_some()
    }

    /// Fills node `i`'s file system; returns the bytes the filler took.
    pub fn fill_disk(&self, i: u32) -> Result<u64, String> {
        match &self.node(i).disk {
            Some(d) => d.fill(),
            None => Err(format!("node {i} has no disk of its own")),
        }
    }

    /// Frees what [`Cluster::fill_disk`] took (no-op without a disk or a filler).
    pub fn free_disk(&self, i: u32) -> Result<(), String> {
        match &self.node(i).disk {
            Some(d) => d.free(),
            None => Ok(()),
        }
    }

    /// Nodes whose disk is full.
    pub fn full_disks(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter(|n| n.disk.as_ref().is_some_and(Disk::is_full))
            .map(|n| n.id)
            .collect()
    }

    /// Unmounts the nodes' own file systems (after they stopped); with `keep_in`, copies each
    /// node's data to `keep_in/node<i>` first.
    pub fn release_disks(&mut self, keep_in: Option<&Path>) {
        for n in &mut self.nodes {
            if let Some(mut d) = n.disk.take() {
                if let Some(dir) = keep_in {
                    let _ = d.copy_data(&dir.join(format!("node{}", n.id)));
                }
                let _ = d.unmount();
            }
        }
    }

    /// The current controller's node id.
    pub fn controller(&mut self) -> Result<Option<u32>, String> {
        self.zk(|s| {
            let raw = s.get(path::CONTROLLER).map_err(|e| e.to_string())?;
            raw.map(|(raw, _)| ControllerInfo::decode(&raw).map(|c| c.id))
                .transpose()
                .map_err(|e| e.to_string())
        })
    }

    /// Asks the controller for a preferred-leader election (as `simplekv cluster rebalance`).
    pub fn request_rebalance(&self) -> Result<(), String> {
        simplekv_cluster::admin::request_preferred_election(&self.zk_connect, ZK_TIMEOUT)
            .map_err(|e| e.to_string())
    }

    /// The leader of partition `p` in ZooKeeper's state.
    pub fn leader_of(&mut self, p: u32) -> Result<Option<u32>, String> {
        Ok(self.states()?.get(p as usize).and_then(|st| st.leader))
    }

    /// The ZooKeeper session owning node `i`'s broker znode, if it is registered.
    pub fn broker_owner(&mut self, i: u32) -> Result<Option<i64>, String> {
        self.zk(|s| {
            s.get(&path::broker(i))
                .map(|o| o.map(|(_, stat)| stat.ephemeral_owner))
                .map_err(|e| e.to_string())
        })
    }

    /// Waits until node `i`'s broker znode is owned by a session other than `old_owner`.
    pub fn wait_reregistered(
        &mut self,
        i: u32,
        old_owner: Option<i64>,
        timeout: Duration,
    ) -> Result<(), String> {
        self.poll(timeout, Duration::from_millis(100), |c| {
            if !c.is_up(i) {
                return Err(format!("node {i} is not running"));
            }
            let owner = c.broker_owner(i).ok().flatten();
            Ok((owner.is_none() || owner == old_owner)
                .then(|| format!("node {i} did not register again")))
        })
    }

    /// Waits until nodes `ids` are all registered.
    pub fn wait_registered(&mut self, ids: &[u32], timeout: Duration) -> Result<(), String> {
        self.poll(timeout, Duration::from_millis(100), |c| {
            let live: Vec<u32> = c
                .zk(|s| {
                    registry::live_brokers(s)
                        .map(|v| v.iter().map(|b| b.id).collect())
                        .map_err(|e| e.to_string())
                })
                .unwrap_or_default();
            if ids.iter().all(|i| live.contains(i)) {
                return Ok(None);
            }
            if let Some(&down) = ids.iter().find(|&&i| !c.is_up(i)) {
                return Err(format!("node {down} is not running"));
            }
            Ok(Some(format!(
                "nodes {ids:?} not all registered (registered: {live:?})"
            )))
        })
    }

    /// Every partition's state in ZooKeeper.
    pub fn states(&mut self) -> Result<Vec<PartitionState>, String> {
        let parts = self.partitions;
        self.zk(|s| {
            (0..parts)
                .map(|p| {
                    let sp = path::partition_state(p);
                    match s.get(&sp).map_err(|e| e.to_string())? {
                        Some((raw, _)) => PartitionState::decode(&raw).map_err(|e| e.to_string()),
                        None => Err(format!("{sp} missing")),
                    }
                })
                .collect()
        })
    }

    /// Partitions whose leader is missing or does not answer a read.
    fn unserved(&mut self) -> Result<Vec<String>, String> {
        let states = self.states()?;
        let live = self.zk(|s| registry::live_brokers(s).map_err(|e| e.to_string()))?;
        let mut conns: HashMap<u32, Option<Conn>> = HashMap::new();
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
                Conn::connect(&b.resp, Duration::from_secs(1), Duration::from_secs(2)).ok()
            });
            let Some(c) = conn.as_mut() else {
                bad.push(format!("{p}: leader {l} at {} refuses connections", b.resp));
                continue;
            };
            let key = self.probe_keys[p].as_bytes();
            match c.call(&[b"GET", key]) {
                Ok(Reply::Bulk(_)) => {}
                Ok(other) => bad.push(format!("{p}: leader {l} answers {other:?}")),
                Err(e) => {
                    bad.push(format!("{p}: leader {l}: {e}"));
                    conns.insert(l, None);
                }
            }
        }
        Ok(bad)
    }

    /// Waits until every partition has a live leader that answers a read.
    pub fn wait_for_leaders(&mut self, timeout: Duration) -> Result<(), String> {
        self.poll(timeout, Duration::from_millis(200), |c| {
            Ok(match c.unserved() {
                Ok(v) if v.is_empty() => None,
                Ok(v) => Some(format!(
                    "partitions without an answering leader: {}",
                    v.join("; ")
                )),
                Err(e) => Some(format!("partitions without an answering leader: {e}")),
            })
        })
    }

    /// Partitions whose ISR lacks some replica.
    pub fn short_isr(&mut self) -> Result<Vec<u32>, String> {
        Ok(self
            .states()?
            .iter()
            .enumerate()
            .filter(|(_, st)| st.isr.len() < st.replicas.len())
            .map(|(p, _)| p as u32)
            .collect())
    }

    /// Waits until every partition's ISR holds all its replicas.
    pub fn wait_full_isr(&mut self, timeout: Duration) -> Result<(), String> {
        self.poll(timeout, Duration::from_millis(200), |c| {
            Ok(match c.short_isr() {
                Ok(v) if v.is_empty() => None,
                Ok(v) => Some(format!("partitions {v:?} have replicas outside their ISR")),
                Err(e) => Some(e),
            })
        })
    }

    /// Calls `check` every `every` until it reports nothing left to wait for (`Ok(None)`),
    /// fails (`Err`, returned at once), or `timeout` passes: then the error is the last
    /// `Ok(Some(state))` it reported, with the time waited.
    fn poll(
        &mut self,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut(&mut Self) -> Result<Option<String>, String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(last) = check(self)? else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!("{last}, after {} s", timeout.as_secs()));
            }
            std::thread::sleep(every);
        }
    }

    /// One line per partition: leader, epoch, ISR, replicas.
    pub fn describe(&mut self) -> String {
        match self.states() {
            Ok(states) => states
                .iter()
                .enumerate()
                .map(|(p, s)| {
                    format!(
                        "partition {p}: leader {:?} epoch {} isr {:?} replicas {:?}",
                        s.leader, s.leader_epoch, s.isr, s.replicas
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(cannot read partition states: {e})"),
        }
    }

    /// The last `lines` lines node `i` logged.
    pub fn log_tail(&self, i: u32, lines: usize) -> String {
        let n = self.node(i);
        let mut text = String::new();
        if let Ok(mut f) = File::open(&n.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops every node (SIGKILL) and closes the ZooKeeper session. Disks stay mounted until
    /// [`Cluster::release_disks`] or drop.
    pub fn stop(&mut self) {
        for i in 1..=self.len() {
            self.kill9(i);
        }
        if let Some(s) = self.session.take() {
            s.close();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `k` distinct free loopback ports: all bound at once, so none is handed out twice.
fn free_ports(k: usize) -> Result<Vec<u16>, String> {
    let ls = (0..k)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("local_addr: {e}"))
}

/// The partition a key belongs to, in a cluster of `partitions` partitions.
pub fn partition_of(partitions: u32, key: &[u8]) -> u32 {
    Topology {
        partitions,
        workers: 1,
    }
    .partition_of(key)
}

/// One key per partition: `probe:<n>` for the first n that hashes there.
fn probe_keys(partitions: u32) -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; partitions as usize];
    let mut left = partitions as usize;
    let mut n = 0u64;
    while left > 0 && n < 1_000_000 {
        let k = format!("probe:{n}");
        let slot = &mut keys[partition_of(partitions, k.as_bytes()) as usize];
        if slot.is_none() {
            *slot = Some(k);
            left -= 1;
        }
        n += 1;
    }
    keys.into_iter()
        .enumerate()
        .map(|(p, k)| k.unwrap_or_else(|| format!("probe:none-{p}")))
        .collect()
}
