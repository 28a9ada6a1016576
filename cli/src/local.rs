//! `simplekv cluster local`: a whole cluster on loopback in the foreground — a ZooKeeper and N
//! node processes of this same binary — for trying things out and for demos. Ctrl-C stops it.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use simplekv_cluster::admin;
use simplekv_cluster::zk::layout::{ClusterMeta, path};
use simplekv_cluster::zk::{LocalZooKeeper, Session};

/// The cluster name (`cluster.name`) every local node gets; its ZooKeeper root is
/// `/simplekv/local`.
pub const CLUSTER_NAME: &str = "local";
const ZK_TIMEOUT: Duration = Duration::from_secs(10);
const REGISTER_WAIT: Duration = Duration::from_secs(30);
const STOP_WAIT: Duration = Duration::from_secs(15);
/// Offset from a node's RESP port to its gRPC port.
const GRPC_OFFSET: u16 = 100;

#[derive(Args, Debug, Clone)]
pub struct LocalArgs {
    /// Number of nodes (ids 1..=N).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Node i listens on BASE+i (RESP) and BASE+100+i (gRPC).
    #[arg(long, default_value_t = 7000)]
    base_port: u16,
    /// Directory for ZooKeeper's data (DIR/zk), the nodes' data (DIR/node<i>) and their logs
    /// (DIR/node<i>.log). Starting again with the same DIR reuses the cluster.
    #[arg(long)]
    dir: PathBuf,
    /// Partitions, when the cluster is created (a reused cluster keeps its own).
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Replicas per partition, when the cluster is created; default min(3, nodes).
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Worker threads per node.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// always | everysec | never, for every node.
    #[arg(long, default_value = "everysec")]
    fsync: String,
    /// Any node setting as NAME=VALUE, passed to every node; repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// ZooKeeper's client port (on 127.0.0.1); a free one when not given.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    zk_port: Option<u16>,
}

/// One node to run: everything derived from the arguments, before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeSpec {
    id: u32,
    resp_port: u16,
    grpc_port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl NodeSpec {
    fn args(&self, a: &LocalArgs, zk_addr: &str) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "server".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.resp_port.to_string(),
            "--grpc-port".into(),
            self.grpc_port.to_string(),
            "--dir".into(),
            self.data.display().to_string(),
            "--no-pin".into(),
            "--workers".into(),
            a.workers.to_string(),
            "--fsync".into(),
            a.fsync.clone(),
            "--set".into(),
            format!("cluster.zk={zk_addr}/simplekv"),
            "--set".into(),
            format!("cluster.node_id={}", self.id),
            "--set".into(),
            format!("cluster.name={CLUSTER_NAME}"),
        ];
        // One replica cannot make two in sync: with the default min_insync_replicas (2)
        // every acks=all write would be refused. --set can still say otherwise.
        if a.replication_factor.unwrap_or(a.nodes.min(3)) < 2 {
            v.push("--set".into());
            v.push("cluster.min_insync_replicas=1".into());
        }
        for s in &a.set {
            v.push("--set".into());
            v.push(s.clone());
        }
        v
    }
}

/// Checks the arguments and lays out the nodes.
fn plan(a: &LocalArgs) -> Result<(Vec<NodeSpec>, u32), String> {
    if a.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    // RESP ports BASE+1..=BASE+N must stay below the gRPC ones, BASE+101...
    if a.nodes >= u32::from(GRPC_OFFSET) {
        return Err(format!(
            "--nodes {} is too many: at most {} (ports BASE+i and BASE+{GRPC_OFFSET}+i must not overlap)",
            a.nodes,
            GRPC_OFFSET - 1
        ));
    }
    let top = u32::from(a.base_port) + u32::from(GRPC_OFFSET) + a.nodes;
    if a.base_port == 0 || top > u32::from(u16::MAX) {
        return Err(format!(
            "--base-port {} does not leave room for ports up to BASE+{}",
            a.base_port,
            u32::from(GRPC_OFFSET) + a.nodes
        ));
    }
    if let Some(zk) = a.zk_port {
        let base = u32::from(a.base_port);
        let node = (1..=a.nodes).find(|&i| {
            let z = u32::from(zk);
            z == base + i || z == base + u32::from(GRPC_OFFSET) + i
        });
        if let Some(i) = node {
            return Err(format!(
                "--zk-port {zk} is one of node {i}'s ports (BASE+i for RESP, BASE+{GRPC_OFFSET}+i for gRPC)"
            ));
        }
    }
    let rf = a.replication_factor.unwrap_or(a.nodes.min(3));
    if rf == 0 || rf > a.nodes {
        return Err(format!(
            "--replication-factor {rf} must be between 1 and --nodes ({})",
            a.nodes
        ));
    }
    if a.partitions == 0 || a.partitions > 16384 {
        return Err(format!(
            "--partitions {} is outside 1..=16384",
            a.partitions
        ));
    }
    if a.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    for s in &a.set {
        if !s.contains('=') {
            return Err(format!("--set {s}: expected NAME=VALUE"));
        }
    }
    let nodes = (1..=a.nodes)
        .map(|id| NodeSpec {
            id,
            // Bounds checked above.
            resp_port: a.base_port + id as u16,
            grpc_port: a.base_port + GRPC_OFFSET + id as u16,
            data: a.dir.join(format!("node{id}")),
            log: a.dir.join(format!("node{id}.log")),
        })
        .collect();
    Ok((nodes, rf))
}

/// A node process and where its log of this run starts.
struct Running {
    spec: NodeSpec,
    child: Option<Child>,
    log_from: u64,
}

impl Running {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `Some(status text)` once the process has exited (reaped here).
    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => {
                self.child = None;
                Some(st.to_string())
            }
            Ok(None) => None,
            Err(e) => {
                self.child = None;
                Some(format!("lost track of it: {e}"))
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling our own child, which has not been reaped (so the pid is ours).
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }
}

/// The last `lines` lines the node wrote since this run started it.
fn log_tail(log: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log)
        && f.seek(SeekFrom::Start(from)).is_ok()
    {
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        return "    (empty log)".into();
    }
    tail.iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn spawn_node(exe: &Path, spec: &NodeSpec, args: &[String]) -> Result<Running, String> {
    std::fs::create_dir_all(&spec.data).map_err(|e| format!("{}: {e}", spec.data.display()))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("{}: {e}", spec.log.display()))?;
    let log_from = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let err = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", spec.log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: a Ctrl-C in the terminal reaches only this supervisor, which
        // then stops the nodes with one SIGTERM each (a node takes a second SIGINT as "exit
        // now, without a clean shutdown").
        .process_group(0);
    // SAFETY: only async-signal-safe calls (sigprocmask, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // This process blocks SIGINT/SIGTERM for its sigwait thread; the mask is
            // inherited, and a node must be stoppable before its own signal thread runs.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            // If this supervisor dies without stopping them, the nodes are told to stop
            // rather than left running with nobody to stop them.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    Ok(Running {
        spec: spec.clone(),
        child: Some(child),
        log_from,
    })
}

/// SIGTERM to every running node, a bounded wait, SIGKILL for stragglers.
fn stop_nodes(nodes: &mut [Running]) {
    for n in nodes.iter() {
        n.signal(libc::SIGTERM);
    }
    for n in nodes.iter_mut() {
        let Some(mut c) = n.child.take() else {
            continue;
        };
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match c.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!(
                        "node {} did not stop within {} s: killing it",
                        n.spec.id,
                        STOP_WAIT.as_secs()
                    );
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
}

/// Signals arrive here (from a `sigwait` thread) instead of killing the process.
fn signal_channel() -> mpsc::Receiver<i32> {
    crate::signals::block();
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("skv-signals".into())
        .spawn(move || {
            loop {
                if let Some(sig) = crate::signals::wait_one()
                    && tx.send(sig).is_err()
                {
                    return;
                }
            }
        });
    rx
}

/// Why the startup stopped, and which nodes' logs may explain it.
struct StartFailure {
    msg: String,
    logs: Vec<usize>,
}

/// The ZooKeeper session owning each node's broker znode, for the nodes registered now.
type Owners = HashMap<u32, i64>;

fn broker_owners(s: &Session, ids: impl Iterator<Item = u32>) -> Result<Owners, String> {
    let mut owners = HashMap::new();
    for id in ids {
        if let Some((_, stat)) = s.get(&path::broker(id)).map_err(|e| e.to_string())? {
            owners.insert(id, stat.ephemeral_owner);
        }
    }
    Ok(owners)
}

/// Waits until every node is registered in ZooKeeper with a session other than the one in
/// `stale` (after a crash, a previous run's znodes live on until their session expires, and
/// must not pass for this run's nodes), watching for nodes that exit and for a signal.
fn wait_registered(
    root: &str,
    nodes: &mut [Running],
    stale: &Owners,
    signals: &mpsc::Receiver<i32>,
) -> Result<(), StartFailure> {
    let all: Vec<usize> = (0..nodes.len()).collect();
    let fail = |msg: String| StartFailure {
        msg,
        logs: all.clone(),
    };
    let session = Session::connect(root, ZK_TIMEOUT).map_err(|e| fail(e.to_string()))?;
    let deadline = Instant::now() + REGISTER_WAIT;
    let result = loop {
        if let Some((i, st)) = nodes
            .iter_mut()
            .enumerate()
            .find_map(|(i, n)| n.exited().map(|st| (i, st)))
        {
            break Err(StartFailure {
                msg: format!("node {} exited during startup ({st})", nodes[i].spec.id),
                logs: vec![i],
            });
        }
        if let Ok(sig) = signals.try_recv() {
            break Err(StartFailure {
                msg: format!("signal {sig} during startup"),
                logs: Vec::new(),
            });
        }
        let owners = match broker_owners(&session, nodes.iter().map(|n| n.spec.id)) {
            Ok(o) => o,
            Err(e) => break Err(fail(e)),
        };
        let missing: Vec<String> = nodes
            .iter()
            .map(|n| n.spec.id)
            .filter(|id| owners.get(id).is_none_or(|o| stale.get(id) == Some(o)))
            .map(|id| id.to_string())
            .collect();
        if missing.is_empty() {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(fail(format!(
                "nodes [{}] did not register in ZooKeeper within {} s",
                missing.join(","),
                REGISTER_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    session.close();
    result
}

/// What a previous run left: the cluster's metadata, if it was created (a restart with the
/// same DIR), and broker znodes whose sessions have not expired yet.
fn existing_state(
    root: &str,
    ids: impl Iterator<Item = u32>,
) -> Result<(Option<ClusterMeta>, Owners), String> {
    let s = Session::connect(root, ZK_TIMEOUT).map_err(|e| e.to_string())?;
    let raw = s.get(path::META).map_err(|e| e.to_string());
    let owners = broker_owners(&s, ids);
    s.close();
    let meta = match raw? {
        None => None,
        Some((raw, _)) => {
            Some(ClusterMeta::decode(&raw).map_err(|e| format!("{root}{}: {e}", path::META))?)
        }
    };
    Ok((meta, owners?))
}

pub fn run(a: LocalArgs) -> ExitCode {
    let (specs, rf) = match plan(&a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("simplekv cluster local: {e}");
            return ExitCode::from(2);
        }
    };
    match run_planned(&a, &specs, rf) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("simplekv cluster local: {e}");
            ExitCode::from(1)
        }
    }
}

/// Holds `DIR/cluster-local.lock` (an `flock`, gone with the process however it ends): a
/// second `cluster local` on the same directory would start a second ZooKeeper on the same
/// data and nodes on the same ports and directories.
fn lock_dir(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = dir.join("cluster-local.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(format!("{}: {e}", path.display()));
        }
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        return Err(format!(
            "{} is in use by another `simplekv cluster local` (pid {}); stop it first, or give another --dir",
            dir.display(),
            pid.trim()
        ));
    }
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = writeln!(f, "{}", std::process::id());
    Ok(f)
}

fn run_planned(a: &LocalArgs, specs: &[NodeSpec], rf: u32) -> Result<ExitCode, String> {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let _lock = lock_dir(&a.dir)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    // ZooKeeper first, with the default signal mask: the JVM handles its own signals.
    let zk_dir = a.dir.join("zk");
    // Tied to this thread: a supervisor killed with SIGKILL leaves no ZooKeeper behind (its
    // nodes have PR_SET_PDEATHSIG too).
    let mut zk = LocalZooKeeper::start_tied(Some(&zk_dir), a.zk_port).map_err(|e| e.to_string())?;
    let zk_addr = zk.addr();
    let root = format!("{zk_addr}/simplekv/{CLUSTER_NAME}");
    let signals = signal_channel();

    let (meta, stale) = match existing_state(&root, specs.iter().map(|n| n.id)) {
        Ok(m) => m,
        Err(e) => {
            zk.stop();
            return Err(e);
        }
    };
    if let Some(m) = &meta
        && (m.partitions != a.partitions || m.replication_factor != rf)
    {
        eprintln!(
            "reusing the cluster in {}: {} partitions, replication factor {} (--partitions and --replication-factor apply only to a new cluster)",
            a.dir.display(),
            m.partitions,
            m.replication_factor
        );
    }

    let mut nodes: Vec<Running> = Vec::new();
    for spec in specs {
        match spawn_node(&exe, spec, &spec.args(a, &zk_addr)) {
            Ok(r) => nodes.push(r),
            Err(e) => {
                stop_nodes(&mut nodes);
                zk.stop();
                return Err(e);
            }
        }
    }

    let started = wait_registered(&root, &mut nodes, &stale, &signals).and_then(|()| {
        let meta = match meta {
            Some(m) => m,
            None => {
                admin::create(&root, a.partitions, rf, ZK_TIMEOUT).map_err(|e| StartFailure {
                    msg: format!("cannot create the cluster: {e}"),
                    logs: Vec::new(),
                })?
            }
        };
        Ok(meta)
    });
    let meta = match started {
        Ok(m) => m,
        Err(f) => {
            eprintln!("simplekv cluster local: {}", f.msg);
            for i in f.logs {
                let n = &nodes[i];
                eprintln!(
                    "--- {} (last lines) ---\n{}",
                    n.spec.log.display(),
                    log_tail(&n.spec.log, n.log_from, 20)
                );
            }
            stop_nodes(&mut nodes);
            zk.stop();
            return Ok(ExitCode::from(1));
        }
    };

    print_summary(a, &nodes, &zk, &root, &meta);

    // Serve until a signal; a node that exits is reported, with the command that starts it
    // again, and left down (or restart the whole local cluster).
    loop {
        match signals.recv_timeout(Duration::from_millis(200)) {
            Ok(sig) => {
                println!("signal {sig}: stopping the nodes (again to kill them at once)");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        for n in nodes.iter_mut() {
            if let Some(st) = n.exited() {
                println!(
                    "node {} exited ({st}); the others keep running. Last lines of {}:\n{}\nTo start it again: {} {} >>{} 2>&1",
                    n.spec.id,
                    n.spec.log.display(),
                    log_tail(&n.spec.log, n.log_from, 10),
                    exe.display(),
                    n.spec.args(a, &zk_addr).join(" "),
                    n.spec.log.display(),
                );
            }
        }
        let _ = std::io::stdout().flush();
    }
    // A second signal while the nodes stop: kill them.
    let killer = {
        let pids: Vec<u32> = nodes.iter().filter_map(|n| n.pid()).collect();
        std::thread::Builder::new()
            .name("skv-local-kill".into())
            .spawn(move || {
                if signals.recv().is_ok() {
                    for pid in pids {
                        // SAFETY: signalling our own children. A pid reaped meanwhile could in
                        // theory be reused; within a few seconds of a second Ctrl-C this is a
                        // risk the user asked for.
                        unsafe {
                            libc::kill(pid as libc::pid_t, libc::SIGKILL);
                        }
                    }
                }
            })
    };
    stop_nodes(&mut nodes);
    zk.stop();
    drop(killer);
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn print_summary(
    a: &LocalArgs,
    nodes: &[Running],
    zk: &LocalZooKeeper,
    root: &str,
    meta: &ClusterMeta,
) {
    println!(
        "simplekv local cluster \"{CLUSTER_NAME}\": {} nodes, {} partitions, replication factor {} (in {})",
        nodes.len(),
        meta.partitions,
        meta.replication_factor,
        a.dir.display()
    );
    println!(
        "  {:>4}  {:<21} {:<21} {:>8}  log",
        "node", "resp", "grpc", "pid"
    );
    for n in nodes {
        println!(
            "  {:>4}  {:<21} {:<21} {:>8}  {}",
            n.spec.id,
            format!("127.0.0.1:{}", n.spec.resp_port),
            format!("127.0.0.1:{}", n.spec.grpc_port),
            n.pid().map_or_else(|| "-".into(), |p| p.to_string()),
            n.spec.log.display()
        );
    }
    println!(
        "ZooKeeper: {} (pid {}, data in {})",
        zk.addr(),
        zk.pid().map_or_else(|| "-".into(), |p| p.to_string()),
        zk.dir().display()
    );
    println!("status:    simplekv cluster status --zk {root}");
    if let Some(first) = nodes.first() {
        println!("clients:   redis-cli -c -p {}", first.spec.resp_port);
    }
    println!("Ctrl-C stops the cluster.");
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Wrap {
        #[command(flatten)]
        a: LocalArgs,
    }

    fn parse(args: &[&str]) -> Result<LocalArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("local").chain(args.iter().copied())).map(|w| w.a)
    }

    #[test]
    fn defaults() {
        let a = parse(&["--dir", "/tmp/x"]).expect("parses");
        assert_eq!(a.nodes, 3);
        assert_eq!(a.base_port, 7000);
        assert_eq!(a.partitions, 16);
        assert_eq!(a.workers, 1);
        assert_eq!(a.fsync, "everysec");
        let (nodes, rf) = plan(&a).expect("valid");
        assert_eq!(rf, 3);
        assert_eq!(nodes.len(), 3);
        assert_eq!(
            nodes[1],
            NodeSpec {
                id: 2,
                resp_port: 7002,
                grpc_port: 7102,
                data: "/tmp/x/node2".into(),
                log: "/tmp/x/node2.log".into(),
            }
        );
        let args = nodes[1].args(&a, "127.0.0.1:2181");
        let joined = args.join(" ");
        assert_eq!(
            joined,
            "server --bind 127.0.0.1 --port 7002 --grpc-port 7102 --dir /tmp/x/node2 --no-pin \
             --workers 1 --fsync everysec --set cluster.zk=127.0.0.1:2181/simplekv \
             --set cluster.node_id=2 --set cluster.name=local"
        );
    }

    #[test]
    fn one_replica_needs_only_itself_in_sync_unless_told_otherwise() {
        let a = parse(&["--dir", "d", "--nodes", "1"]).expect("parses");
        let (nodes, rf) = plan(&a).expect("valid");
        assert_eq!(rf, 1);
        let joined = nodes[0].args(&a, "h:1").join(" ");
        assert!(
            joined.ends_with("--set cluster.min_insync_replicas=1"),
            "{joined}"
        );
        // A --set of its own comes after, and the last one counts.
        let a = parse(&[
            "--dir",
            "d",
            "--nodes",
            "3",
            "--replication-factor",
            "1",
            "--set",
            "cluster.min_insync_replicas=2",
        ])
        .expect("parses");
        let joined = plan(&a).expect("valid").0[0].args(&a, "h:1").join(" ");
        assert!(
            joined.ends_with(
                "--set cluster.min_insync_replicas=1 --set cluster.min_insync_replicas=2"
            ),
            "{joined}"
        );
        // Three nodes, three replicas: the default stands.
        let a = parse(&["--dir", "d"]).expect("parses");
        let joined = plan(&a).expect("valid").0[0].args(&a, "h:1").join(" ");
        assert!(!joined.contains("min_insync"), "{joined}");
    }

    #[test]
    fn options_and_repeated_sets() {
        let a = parse(&[
            "--dir",
            "d",
            "--nodes",
            "2",
            "--base-port",
            "9000",
            "--partitions",
            "4",
            "--workers",
            "2",
            "--fsync",
            "always",
            "--set",
            "cluster.acks=1",
            "--set",
            "server.hz=20",
        ])
        .expect("parses");
        let (nodes, rf) = plan(&a).expect("valid");
        assert_eq!(rf, 2, "min(3, nodes)");
        assert_eq!(nodes[0].resp_port, 9001);
        assert_eq!(nodes[1].grpc_port, 9102);
        let args = nodes[0].args(&a, "h:1");
        assert!(
            args.join(" ").ends_with(
                "--workers 2 --fsync always --set cluster.zk=h:1/simplekv --set cluster.node_id=1 \
                 --set cluster.name=local --set cluster.acks=1 --set server.hz=20"
            ),
            "{args:?}"
        );
    }

    #[test]
    fn refusals() {
        assert!(parse(&[]).is_err(), "--dir is required");
        let bad = |args: &[&str]| plan(&parse(args).expect("parses")).expect_err("refused");
        assert!(bad(&["--dir", "d", "--nodes", "0"]).contains("at least 1"));
        assert!(bad(&["--dir", "d", "--nodes", "100"]).contains("too many"));
        assert!(bad(&["--dir", "d", "--base-port", "65500"]).contains("room"));
        assert!(bad(&["--dir", "d", "--replication-factor", "4"]).contains("between 1 and"));
        assert!(bad(&["--dir", "d", "--partitions", "0"]).contains("1..=16384"));
        assert!(bad(&["--dir", "d", "--set", "nonsense"]).contains("NAME=VALUE"));
    }

    #[test]
    fn tail_reads_only_this_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("n.log");
        std::fs::write(&log, "old run\n").expect("write");
        let from = std::fs::metadata(&log).expect("meta").len();
        let mut f = OpenOptions::new().append(true).open(&log).expect("open");
        for i in 0..30 {
            writeln!(f, "line {i}").expect("write");
        }
        let t = log_tail(&log, from, 3);
        assert_eq!(t, "    line 27\n    line 28\n    line 29");
        assert_eq!(log_tail(&log, 1 << 20, 3), "    (empty log)");
    }
}
