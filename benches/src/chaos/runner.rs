//! One chaos run from start to verdict, and a series of runs sharing one ZooKeeper.
//!
//! Run folder `OUT/seed-<N>/`: `faults.txt` (the schedule drawn from the seed, then what was
//! done, with times on the history's clock), `history.txt` (the checker's text format),
//! `verdict.txt` (parameters, counts, faults, verdict, the checker's report with the minimal
//! anomalous operations). The nodes' data directories and logs (`node<i>/`, `node<i>.log`)
//! are deleted after a valid run and kept otherwise. ZooKeeper's data and log: `OUT/zk/`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use simplekv_cluster::zk::LocalZooKeeper;

use crate::checker::history::Recorder;
use crate::checker::linearizable::Budget;
use crate::checker::report::{self, CheckOptions, Overall};

use simplekv_cluster::zk::layout::PartitionState;

use super::cluster::Cluster;
use super::faults::{self, Fault, FaultKind};
use super::net::{Net, Peer};
use super::workload::{self, Client, ClientOpts, ClientStats};

/// Everything a series of runs needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `simplekv` binary.
    pub simplekv: PathBuf,
    /// Parent of the run folders.
    pub out: PathBuf,
    /// First seed; runs use `seed..seed + runs`.
    pub seed: u64,
    pub runs: u64,
    /// Duration of the faulty phase of each run.
    pub seconds: u64,
    pub clients: u64,
    pub keys: usize,
    pub nodes: u32,
    pub partitions: u32,
    pub think: Duration,
    /// Linearizability search time per key.
    pub check_time: Duration,
    /// Keep the nodes' data and logs even after a valid run.
    pub keep: bool,
    /// Run the nodes on loopback even when network namespaces are available (then only the
    /// process faults are drawn: no partitions, no full disks).
    pub loopback: bool,
    /// Extra `--set NAME=VALUE` settings for every node (e.g. `storage.fsync=always`).
    pub node_settings: Vec<String>,
}

impl Config {
    pub fn new(simplekv: PathBuf, out: PathBuf) -> Config {
        Config {
            simplekv,
            out,
            seed: 1,
            runs: 1,
            seconds: 30,
            clients: 5,
            keys: 5,
            nodes: 3,
            partitions: 4,
            think: Duration::from_millis(10),
            check_time: Duration::from_secs(30),
            keep: false,
            loopback: false,
            node_settings: Vec::new(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Linearizable, no acknowledged write lost, no node crashed.
    Valid,
    /// Nothing wrong found, but some key's search ran out of budget.
    Unknown,
    /// The harness could not do its job (cluster did not start or heal, I/O error...).
    HarnessError,
    /// Not linearizable, a lost / phantom / divergent write, or a node exited by itself.
    Anomaly,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Valid => "VALID",
            Status::Unknown => "UNKNOWN",
            Status::HarnessError => "HARNESS ERROR",
            Status::Anomaly => "ANOMALY",
        }
    }

    /// The process exit code for a series whose worst run ended so: 0 valid (or undecided),
    /// 1 anomaly, 2 harness error.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Valid | Status::Unknown => 0,
            Status::Anomaly => 1,
            Status::HarnessError => 2,
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub seed: u64,
    pub dir: PathBuf,
    pub status: Status,
    pub ops: usize,
    pub faults_injected: usize,
    /// The one-line summary printed for the run.
    pub summary: String,
}

/// Set by SIGINT / SIGTERM (see [`stop_on_signals`]): the current run stops at once, is
/// reported as interrupted, and everything it set up (processes, namespaces, mounts) is removed.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM stop the series cleanly instead of killing the tool with its
/// nodes, namespaces and mounts left behind.
pub fn stop_on_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t);
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The default `simplekv` binary: next to the running executable (`target/debug/chaos` →
/// `target/debug/simplekv`; a test in `target/debug/deps/` → `target/debug/simplekv`), else
/// `$CARGO_TARGET_DIR` or `$HOME/.cache/simplekv-target`, `/debug/simplekv`.
pub fn default_simplekv_path() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let p = dir.join("simplekv");
            if p.is_file() {
                return p;
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/simplekv-target")
        });
    target.join("debug/simplekv")
}

/// Runs seeds `cfg.seed..cfg.seed + cfg.runs` one after the other on one ZooKeeper, printing
/// one summary line per run.
pub fn run_many(cfg: &Config) -> Vec<RunResult> {
    let mut out = Vec::new();
    let fail_all = |why: String| -> Vec<RunResult> {
        (cfg.seed..cfg.seed + cfg.runs)
            .map(|seed| {
                let summary = format!("seed {seed}: HARNESS ERROR: {why}");
                println!("{summary}");
                RunResult {
                    seed,
                    dir: cfg.out.clone(),
                    status: Status::HarnessError,
                    ops: 0,
                    faults_injected: 0,
                    summary,
                }
            })
            .collect()
    };
    if !cfg.simplekv.is_file() {
        return fail_all(format!(
            "{} does not exist: build it first (cargo build -p simplekv-cli) or pass --simplekv",
            cfg.simplekv.display()
        ));
    }
    if let Err(e) = std::fs::create_dir_all(&cfg.out) {
        return fail_all(format!("{}: {e}", cfg.out.display()));
    }
    // Namespaces (and with them partitions and full disks, which need root too) when possible.
    let mut net = if cfg.loopback {
        None
    } else if let Some(why) = Net::unavailable() {
        log_line(&format!(
            "network namespaces unavailable ({why}): nodes on loopback, process faults only"
        ));
        None
    } else {
        match Net::create(cfg.nodes, &cfg.out) {
            Ok(n) => Some(n),
            Err(e) => return fail_all(format!("network namespaces: {e}")),
        }
    };
    let zk_host = net
        .as_ref()
        .map_or(std::net::Ipv4Addr::LOCALHOST, |n| n.zk_ip());
    let mut zk = match LocalZooKeeper::start_on(Some(&cfg.out.join("zk")), zk_host) {
        Ok(zk) => zk,
        Err(e) => return fail_all(format!("ZooKeeper: {e}")),
    };
    if let (Some(n), Some(pid)) = (net.as_ref(), zk.pid()) {
        n.note_process(pid);
    }
    for seed in cfg.seed..cfg.seed.saturating_add(cfg.runs) {
        if interrupted() {
            break;
        }
        let r = run_seed(cfg, &zk.addr(), seed, net.as_mut());
        println!("{}", r.summary);
        out.push(r);
    }
    zk.stop();
    if !cfg.keep && out.iter().all(|r| r.status == Status::Valid) {
        let _ = std::fs::remove_dir_all(cfg.out.join("zk"));
    }
    out
}

/// Times on the history's clock, in seconds.
fn secs(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// The fault phase's state: the cluster, the network, the clock, and the log.
struct Chaos<'a> {
    cluster: Cluster,
    net: Option<&'a mut Net>,
    rec: &'a Recorder,
    log: Vec<String>,
    crashes: Vec<String>,
    /// Nodes that refused to start on their full disk: started again once it is freed.
    down_on_full_disk: BTreeSet<u32>,
    injected: BTreeMap<FaultKind, usize>,
    skipped: usize,
}

impl Chaos<'_> {
    fn note(&mut self, what: String) {
        let line = format!("t={} {what}", secs(self.rec.now()));
        log_line(&line);
        self.log.push(line);
    }

    /// Notes nodes that exited by themselves and starts them again.
    fn check_crashes(&mut self) {
        for (i, st) in self.cluster.reap_unexpected() {
            let tail = self.cluster.log_tail(i, 30);
            // Started (after a kill or a wipe) while its disk was full: the start is refused
            // with an error naming the file, as it should be. It starts again once the disk
            // is freed. A running node never exits on a full disk: that stays a crash.
            if self.cluster.full_disks().contains(&i)
                && tail.contains("ERROR [main]")
                && tail.contains("No space left on device")
            {
                if self.down_on_full_disk.insert(i) {
                    self.note(format!(
                        "node {i} refused to start on its full disk ({st}); it starts once the disk is freed"
                    ));
                }
                continue;
            }
            self.note(format!(
                "NODE {i} EXITED UNEXPECTEDLY ({st}); restarting it. Log tail:\n{tail}"
            ));
            self.crashes.push(format!("node {i} exited ({st})"));
            if let Err(e) = self.cluster.spawn(i) {
                self.note(format!("restart of node {i} failed: {e}"));
            }
        }
    }

    /// Sleeps `d` (or until `end`), watching for crashes.
    fn sleep(&mut self, d: Duration, end: Instant) {
        let until = (Instant::now() + d).min(end);
        while Instant::now() < until && !interrupted() {
            self.check_crashes();
            let left = until.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
        self.check_crashes();
    }

    /// Frees node `i`'s disk, and starts the node if it refused to start on the full disk.
    fn free_disk(&mut self, i: u32) {
        match self.cluster.free_disk(i) {
            Ok(()) => self.note(format!("node {i}'s disk freed")),
            Err(e) => self.note(format!("free disk of node {i}: {e}")),
        }
        if self.down_on_full_disk.remove(&i) {
            self.restart(i);
        }
    }

    /// Fills node `i`'s file system for a fault of `kind`: the bytes the filler took, or
    /// `None` (said in the fault log) when the node has no disk of its own or filling failed.
    fn fill_disk_for(&mut self, i: u32, kind: FaultKind) -> Option<u64> {
        if !self.cluster.has_disk(i) {
            self.skipped += 1;
            self.note(format!("skip {kind} node {i}: no disk of its own"));
            return None;
        }
        match self.cluster.fill_disk(i) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.note(format!("{kind} node {i}: {e}"));
                let _ = self.cluster.free_disk(i);
                None
            }
        }
    }

    /// The first partition `pick` takes (with what it found) for a disk fault of `kind` on
    /// node `i`, whose disk is full; when none, the fault is skipped: the disk is freed and
    /// the fault log says the node `none` ("follows no partition in sync").
    fn disk_fault_target<T>(
        &mut self,
        i: u32,
        kind: FaultKind,
        none: &str,
        pick: impl Fn(&PartitionState) -> Option<T>,
    ) -> Option<(u32, T)> {
        let found = self.cluster.states().ok().and_then(|states| {
            states
                .iter()
                .enumerate()
                .find_map(|(p, s)| Some((p as u32, pick(s)?)))
        });
        if found.is_none() {
            self.skipped += 1;
            let _ = self.cluster.free_disk(i);
            self.note(format!("skip {kind} node {i}: it {none}"));
        }
        found
    }

    /// Writes values of 16 KiB, then halving, to a key of partition `p` that no client uses,
    /// through node `i` (its leader, on a full disk), until one of 64 bytes is refused (256
    /// writes at most): the first refusal, for the fault log. Small values, so that they use up the room the log's
    /// segment had allocated ahead: while that lasts the clients' writes still go in, and a
    /// leader whose writes still go in keeps its partitions (a larger value refused first
    /// would not be reported: the next small write that went in says the disk works).
    fn fill_leader_log(&self, i: u32, p: u32) -> String {
        let partitions = self.cluster.partitions;
        let Some(key) = (0..100_000u32)
            .map(|n| format!("ballast:{n}"))
            .find(|k| super::cluster::partition_of(partitions, k.as_bytes()) == p)
        else {
            return "no key of the partition found".into();
        };
        let Some(addr) = self.cluster.resp_addrs().get(i as usize - 1).cloned() else {
            return format!("node {i} has no address");
        };
        let mut conn =
            match super::resp::Conn::connect(&addr, Duration::from_secs(1), Duration::from_secs(5))
            {
                Ok(c) => c,
                Err(e) => return format!("connect {addr}: {e}"),
            };
        // Halving the value at each refusal, down to 64 bytes, as the disk filler does: what
        // a refused value leaves of the room is used up too, before the clients' writes do.
        let mut size = 16 << 10;
        let mut first_refusal = None;
        for n in 1..=256 {
            let value = vec![b'b'; size];
            match conn.call(&[b"SET", key.as_bytes(), &value]) {
                Ok(super::resp::Reply::Error(e)) => {
                    first_refusal.get_or_insert_with(|| format!("write {n} refused: {e}"));
                    if size <= 64 {
                        break;
                    }
                    size /= 2;
                }
                Ok(_) => {}
                Err(e) => return format!("write {n}: no reply ({e:?})"),
            }
        }
        first_refusal.unwrap_or_else(|| "256 writes taken, none refused".into())
    }

    /// Starts node `i` again. It does not wait for the node to register (that takes about a
    /// session timeout, until the old session's broker znode expires): the next fault may hit
    /// while it is still starting or catching up, as it would in production.
    fn restart(&mut self, i: u32) {
        match self.cluster.spawn(i) {
            Ok(()) => self.note(format!("start node {i}")),
            Err(e) => self.note(format!("start node {i}: {e}")),
        }
    }

    /// Runs `op` on the network; an error without namespaces.
    fn net_do(&mut self, op: impl FnOnce(&mut Net) -> Result<(), String>) -> Result<(), String> {
        match self.net.as_deref_mut() {
            Some(n) => op(n),
            None => Err("nodes are not in network namespaces".into()),
        }
    }

    /// Removes every network cut.
    fn heal_net(&mut self) {
        let cuts = self
            .net
            .as_deref()
            .map(Net::describe_cuts)
            .unwrap_or_default();
        if cuts.is_empty() {
            return;
        }
        match self.net_do(Net::heal) {
            Ok(()) => self.note(format!("heal network (cuts {cuts})")),
            Err(e) => self.note(format!("heal network (cuts {cuts}): {e}")),
        }
    }

    /// A network fault: finds its target, cuts, holds, heals.
    fn apply_network(&mut self, f: &Fault) -> bool {
        let i = f.node;
        // The partition whose leader `cut-leader-zk` cuts.
        let p = (i - 1) % self.cluster.partitions.max(1);
        let target = match f.kind {
            FaultKind::IsolateController => match self.cluster.controller() {
                Ok(Some(c)) => c,
                _ => i,
            },
            FaultKind::CutLeaderFromZk => match self.cluster.leader_of(p) {
                Ok(Some(l)) => l,
                other => {
                    self.note(format!(
                        "skip {} of partition {p}: no leader ({other:?})",
                        f.kind
                    ));
                    return false;
                }
            },
            _ => i,
        };
        let (r, what) = match f.kind {
            FaultKind::Isolate | FaultKind::IsolateController => (
                self.net_do(|n| n.isolate(target, true)),
                format!("isolate node {target} from the other nodes and ZooKeeper"),
            ),
            FaultKind::CutPeers => (
                self.net_do(|n| n.isolate(target, false)),
                format!("cut node {target} from the other nodes (ZooKeeper still reachable)"),
            ),
            _ => (
                self.net_do(|n| n.cut(target, Peer::ZooKeeper)),
                format!("cut node {target} (leader of partition {p}) from ZooKeeper only"),
            ),
        };
        if let Err(e) = r {
            self.note(format!("{} ({what}): {e}", f.kind));
            self.heal_net();
            return false;
        }
        self.note(format!("{}: {what}", f.kind));
        let hold_end = Instant::now() + f.hold + Duration::from_secs(60);
        self.sleep(f.hold, hold_end);
        self.heal_net();
        true
    }

    /// Injects `f`, holds it, heals it.
    fn apply(&mut self, f: &Fault) {
        let i = f.node;
        if f.kind.is_network() {
            if self.apply_network(f) {
                *self.injected.entry(f.kind).or_default() += 1;
            } else {
                self.skipped += 1;
            }
            return;
        }
        if f.kind == FaultKind::Rebalance {
            match self.cluster.request_rebalance() {
                Ok(()) => self.note("rebalance: preferred-leader election requested".into()),
                Err(e) => {
                    self.skipped += 1;
                    self.note(format!("rebalance: {e}"));
                    return;
                }
            }
            let hold_end = Instant::now() + f.hold + Duration::from_secs(60);
            self.sleep(f.hold, hold_end);
            *self.injected.entry(f.kind).or_default() += 1;
            return;
        }
        // A fault on a node that is down (it crashed and could not restart) is skipped.
        if !self.cluster.is_up(i) {
            self.skipped += 1;
            self.note(format!("skip {} node {i}: node is down", f.kind));
            return;
        }
        let hold_end = Instant::now() + f.hold + Duration::from_secs(60);
        match f.kind {
            FaultKind::Kill => {
                self.cluster.kill9(i);
                self.note(format!("kill9 node {i}"));
                self.sleep(f.hold, hold_end);
                self.restart(i);
            }
            FaultKind::Pause => {
                if let Err(e) = self.cluster.sigstop(i) {
                    self.note(format!("SIGSTOP node {i}: {e}"));
                    return;
                }
                self.note(format!("SIGSTOP node {i}"));
                self.sleep(f.hold, hold_end);
                match self.cluster.sigcont(i) {
                    Ok(()) => self.note(format!("SIGCONT node {i}")),
                    Err(e) => self.note(format!("SIGCONT node {i}: {e}")),
                }
            }
            FaultKind::Terminate => {
                self.note(format!("SIGTERM node {i}"));
                match self.cluster.sigterm_and_wait(i, Duration::from_secs(20)) {
                    Ok(how) => self.note(format!("node {i} {how}")),
                    Err(e) => {
                        self.note(format!("SIGTERM node {i}: {e}"));
                        return;
                    }
                }
                self.sleep(f.hold, hold_end);
                self.restart(i);
            }
            FaultKind::Wipe => {
                // Only while every partition has all its replicas in sync: wiping the only
                // in-sync copy of a partition loses data by definition, whatever the system.
                if let Err(e) = self.cluster.wait_full_isr(Duration::from_secs(10)) {
                    self.skipped += 1;
                    self.note(format!("skip wipe node {i}: ISR not full ({e})"));
                    return;
                }
                self.cluster.kill9(i);
                if let Err(e) = self.cluster.wipe(i) {
                    self.note(format!("wipe node {i}: {e}"));
                }
                self.note(format!(
                    "kill9 node {i} and delete {}",
                    self.cluster.data_dir(i).display()
                ));
                self.sleep(f.hold, hold_end);
                self.restart(i);
            }
            FaultKind::DiskFull => {
                let Some(bytes) = self.fill_disk_for(i, f.kind) else {
                    return;
                };
                self.note(format!(
                    "disk-full: node {i}'s file system filled ({} MiB taken)",
                    bytes >> 20
                ));
                self.sleep(f.hold, hold_end);
                self.free_disk(i);
            }
            FaultKind::DiskFullFailover => {
                // Filling takes a moment, during which the node may fall out of an ISR: the
                // partition is chosen once the disk is full.
                if self.fill_disk_for(i, f.kind).is_none() {
                    return;
                }
                // A partition this node follows in sync, and its leader.
                let up: Vec<bool> = (1..=self.cluster.len())
                    .map(|n| self.cluster.is_up(n))
                    .collect();
                let target =
                    self.disk_fault_target(i, f.kind, "follows no partition in sync", |s| {
                        let l = s.leader?;
                        (l != i && s.isr.contains(&i) && up[l as usize - 1]).then_some(l)
                    });
                let Some((p, l)) = target else {
                    return;
                };
                self.cluster.kill9(l);
                self.note(format!(
                    "disk-full-failover: node {i}'s file system filled, kill9 node {l} (leader of partition {p})"
                ));
                self.sleep(f.hold, hold_end);
                self.free_disk(i);
                self.restart(l);
            }
            FaultKind::DiskFullLeader => {
                if self.fill_disk_for(i, f.kind).is_none() {
                    return;
                }
                let target = self.disk_fault_target(
                    i,
                    f.kind,
                    "leads no partition with another replica in sync",
                    |s| (s.leader == Some(i) && s.isr.len() > 1).then_some(()),
                );
                let Some((p, ())) = target else {
                    return;
                };
                let outcome = self.fill_leader_log(i, p);
                self.note(format!(
                    "disk-full-leader: node {i}'s file system filled, partition {p} written through it: {outcome}"
                ));
                self.sleep(f.hold, hold_end);
                self.free_disk(i);
            }
            // Network kinds and rebalance were handled above.
            FaultKind::Isolate
            | FaultKind::CutPeers
            | FaultKind::IsolateController
            | FaultKind::CutLeaderFromZk
            | FaultKind::Rebalance => {}
        }
        *self.injected.entry(f.kind).or_default() += 1;
    }

    /// Heals everything: continues paused nodes, starts stopped ones, waits for leaders and
    /// a full ISR. Returns an error text when the cluster does not get back to health.
    fn heal_all(&mut self) -> Result<(), String> {
        self.check_crashes();
        self.heal_net();
        for i in self.cluster.full_disks() {
            let r = self.cluster.free_disk(i);
            self.note(format!("heal: free disk of node {i} {r:?}"));
        }
        // Nodes that refused to start on a full disk are started below with the others.
        self.down_on_full_disk.clear();
        let n = self.cluster.len();
        for i in 1..=n {
            if self.cluster.is_paused(i) {
                let r = self.cluster.sigcont(i);
                self.note(format!("heal: SIGCONT node {i} {r:?}"));
            }
            if !self.cluster.is_up(i) {
                self.note(format!("heal: start node {i}"));
                self.cluster.spawn(i)?;
            }
        }
        let ids: Vec<u32> = (1..=n).collect();
        self.cluster
            .wait_registered(&ids, Duration::from_secs(30))
            .map_err(|e| format!("heal: {e}"))?;
        self.cluster
            .wait_for_leaders(Duration::from_secs(60))
            .map_err(|e| format!("heal: {e}"))?;
        self.cluster
            .wait_full_isr(Duration::from_secs(60))
            .map_err(|e| format!("heal: full ISR {e}"))?;
        let states = self.cluster.describe();
        self.note(format!(
            "healed: all nodes registered, leaders answer, ISR full\n{states}"
        ));
        self.check_crashes();
        Ok(())
    }
}

fn log_line(line: &str) {
    if std::env::var_os("CHAOS_QUIET").is_none() {
        eprintln!("chaos: {}", line.lines().next().unwrap_or(""));
    }
}

/// One run with `seed`, on the ZooKeeper at `zk_addr`; the nodes in `net`'s namespaces (with
/// their data on disks of their own) when given, else on loopback.
pub fn run_seed(cfg: &Config, zk_addr: &str, seed: u64, net: Option<&mut Net>) -> RunResult {
    let dir = cfg.out.join(format!("seed-{seed}"));
    let harness = |why: String| {
        let summary = format!("seed {seed}: HARNESS ERROR: {why} ({})", dir.display());
        let _ = std::fs::write(
            dir.join("verdict.txt"),
            format!("seed: {seed}\n{summary}\n"),
        );
        RunResult {
            seed,
            dir: dir.clone(),
            status: Status::HarnessError,
            ops: 0,
            faults_injected: 0,
            summary,
        }
    };
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        return harness(format!("{}: {e}", dir.display()));
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return harness(format!("{}: {e}", dir.display()));
    }
    let fault_kinds: &[FaultKind] = if net.is_some() {
        &FaultKind::ALL
    } else {
        &FaultKind::PROCESS
    };
    let schedule = faults::plan(seed, cfg.seconds, cfg.nodes, fault_kinds);
    let mut faults_txt = format!(
        "# seed {seed}: {} faults planned over {} s (one at a time; gap = quiet time before it)\n",
        schedule.len(),
        cfg.seconds
    );
    for (n, f) in schedule.iter().enumerate() {
        let _ = writeln!(faults_txt, "plan {n:>2}: {f}");
    }
    let _ = std::fs::write(dir.join("faults.txt"), &faults_txt);

    let rf = cfg.nodes.min(3);
    let cluster = match Cluster::start(
        &cfg.simplekv,
        &dir,
        zk_addr,
        &format!("chaos-{seed}"),
        cfg.nodes,
        cfg.partitions,
        rf,
        net.as_deref(),
        net.is_some(),
        &cfg.node_settings,
    ) {
        Ok(c) => c,
        Err(e) => return harness(format!("cluster start: {e}")),
    };
    let rec = Arc::new(Recorder::new());
    let keys = workload::keys(cfg.keys.max(1));
    let opts = ClientOpts {
        think: cfg.think,
        ..ClientOpts::default()
    };
    let spec = workload::Spec {
        clients: cfg.clients.max(1),
        nodes: cluster.resp_addrs(),
        keys: keys.clone(),
        opts: opts.clone(),
        seed,
    };
    let mut chaos = Chaos {
        cluster,
        net,
        rec: &rec,
        log: Vec::new(),
        crashes: Vec::new(),
        down_on_full_disk: BTreeSet::new(),
        injected: BTreeMap::new(),
        skipped: 0,
    };
    chaos.note(format!(
        "cluster up: {} nodes, {} partitions, rf {rf}; {} clients on {} keys",
        cfg.nodes,
        cfg.partitions,
        spec.clients,
        keys.len()
    ));

    // The faulty phase.
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + Duration::from_secs(cfg.seconds);
    // The clients stop on their own a little after `end` if stopping them fails somehow.
    let clients = workload::run_clients(&spec, &rec, &stop, end + Duration::from_secs(120));
    let mut planned_reached = 0;
    for f in &schedule {
        chaos.sleep(f.gap, end);
        if Instant::now() + f.hold > end || interrupted() {
            break;
        }
        planned_reached += 1;
        chaos.apply(f);
    }
    chaos.sleep(end.saturating_duration_since(Instant::now()), end);
    chaos.note("fault phase over; stopping clients".into());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (stats, client_ops) = clients
        .join()
        .unwrap_or_else(|_| (ClientStats::default(), 0));

    // Heal, then final reads from the leaders (the client follows MOVED).
    let heal = if interrupted() {
        Err("interrupted (SIGINT or SIGTERM)".to_string())
    } else {
        chaos.heal_all()
    };
    if let Err(e) = &heal {
        let states = chaos.cluster.describe();
        chaos.note(format!("HEAL FAILED: {e}\n{states}"));
    }
    let mut reader = Client::new(
        1_000,
        chaos.cluster.resp_addrs(),
        ClientOpts {
            retry_for: Duration::from_secs(20),
            ..opts.clone()
        },
        seed,
    );
    if heal.is_ok() {
        for round in 0..2 {
            for (k, _) in &keys {
                reader.read(&rec, k);
            }
            for g in 0..workload::GROUPS {
                reader.mget_group(&rec, g);
            }
            if round == 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        chaos.note("final reads done".into());
    }
    chaos.check_crashes();
    let mut log = std::mem::take(&mut chaos.log);
    let crashes = std::mem::take(&mut chaos.crashes);
    let injected = std::mem::take(&mut chaos.injected);
    let skipped = chaos.skipped;
    chaos.heal_net();
    let mut cluster = chaos.cluster;
    cluster.stop();

    // Check.
    let history = rec.history();
    if let Err(e) = history.save(&dir.join("history.txt")) {
        return harness(format!("history.txt: {e}"));
    }
    let check_opts = CheckOptions {
        budget: Budget {
            max_states: 2_000_000,
            max_time: cfg.check_time,
            max_memory: 1 << 30,
        },
        minimize: Some(Duration::from_secs(10)),
    };
    let report = match report::check(&history, &check_opts) {
        Ok(r) => r,
        Err(e) => return harness(format!("invalid history: {e}")),
    };
    let overall = report.overall();
    let torn_groups = stats.events.get("torn-group").copied().unwrap_or(0)
        + reader.stats.events.get("torn-group").copied().unwrap_or(0);
    let status = if overall == Overall::Invalid || !crashes.is_empty() || torn_groups > 0 {
        Status::Anomaly
    } else if heal.is_err() {
        Status::HarnessError
    } else if overall == Overall::Unknown {
        Status::Unknown
    } else {
        Status::Valid
    };

    let n_injected: usize = injected.values().sum();
    let kinds = injected
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let c = report.counts;
    let mut what = Vec::new();
    if report.not_linearizable() > 0 {
        what.push(format!(
            "{} key(s) not linearizable",
            report.not_linearizable()
        ));
    }
    if report.lost_writes() > 0 {
        what.push(format!(
            "{} acknowledged write(s) lost",
            report.lost_writes()
        ));
    }
    if torn_groups > 0 {
        what.push(format!("{torn_groups} MGET(s) saw part of an MSET"));
    }
    if overall == Overall::Invalid && what.is_empty() {
        what.push("phantom or divergent final reads".into());
    }
    if !crashes.is_empty() {
        what.push(crashes.join("; "));
    }
    if let Err(e) = &heal {
        what.push(e.clone());
    }
    if report.undecided() > 0 {
        what.push(format!("{} key(s) undecided", report.undecided()));
    }
    let summary = format!(
        "seed {seed}: {} — {} ops (ok {}, fail {}, unknown {}), {n_injected} faults ({kinds}){}, checked in {:.1?}{}; {}",
        status.label(),
        c.ops,
        c.ok,
        c.fail,
        c.unknown,
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        },
        report.elapsed,
        if what.is_empty() {
            String::new()
        } else {
            format!(": {}", what.join("; "))
        },
        dir.display()
    );

    // faults.txt: the plan, then what happened.
    let _ = writeln!(
        faults_txt,
        "# reached {planned_reached} of {} planned; injected {n_injected} ({kinds}); skipped {skipped}\n# log (t = seconds on the history's clock)",
        schedule.len()
    );
    for l in log.drain(..) {
        faults_txt.push_str(&l);
        faults_txt.push('\n');
    }
    let _ = std::fs::write(dir.join("faults.txt"), &faults_txt);

    let mut v = String::new();
    let _ = writeln!(v, "seed: {seed}");
    let _ = writeln!(v, "verdict: {}", status.label());
    let _ = writeln!(v, "summary: {summary}");
    let _ = writeln!(
        v,
        "setup: {} nodes {}, {} partitions, replication factor {rf}, acks=all (default), min_insync_replicas=2 (default), session timeout 2 s; {} clients, think {:?}, keys {:?}; {} s of faults drawn from [{}]",
        cfg.nodes,
        if fault_kinds.len() > FaultKind::PROCESS.len() {
            "each in its own network namespace, data on a 512 MiB tmpfs each"
        } else {
            "on loopback"
        },
        cfg.partitions,
        spec.clients,
        cfg.think,
        keys.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        cfg.seconds,
        fault_kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        v,
        "ops: {} by the clients, {} in the history (ok {}, fail {}, unknown {})",
        client_ops, c.ops, c.ok, c.fail, c.unknown
    );
    let _ = writeln!(
        v,
        "faults: {} planned, {planned_reached} reached, {n_injected} injected ({kinds}), {skipped} skipped; see faults.txt",
        schedule.len()
    );
    let _ = writeln!(
        v,
        "node crashes: {}",
        if crashes.is_empty() {
            "none".to_string()
        } else {
            crashes.join("; ")
        }
    );
    let _ = writeln!(
        v,
        "heal: {}",
        match &heal {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        }
    );
    let _ = writeln!(
        v,
        "client events (all attempts): {}",
        stats
            .events
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(v, "\n# checker report\n{report}");
    let _ = std::fs::write(dir.join("verdict.txt"), &v);

    let keep = status != Status::Valid || cfg.keep;
    cluster.release_disks(keep.then_some(dir.as_path()));
    if !keep {
        for i in 1..=cfg.nodes {
            let _ = std::fs::remove_dir_all(dir.join(format!("node{i}")));
            let _ = std::fs::remove_file(dir.join(format!("node{i}.log")));
        }
    }
    RunResult {
        seed,
        dir,
        status,
        ops: c.ops,
        faults_injected: n_injected,
        summary,
    }
}

/// A fresh output folder under the system's temporary directory.
pub fn default_out_dir() -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("simplekv-chaos-{stamp}-{}", std::process::id()))
}

/// The worst status of a series.
pub fn worst(results: &[RunResult]) -> Status {
    results
        .iter()
        .map(|r| r.status)
        .max()
        .unwrap_or(Status::HarnessError)
}
