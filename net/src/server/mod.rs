//! The server: starts the workers and the maintenance thread, and stops them cleanly.
//!
//! Threads: `W` workers (pinned to cores unless disabled), each owning a mio `Poll`, its
//! connections and the partitions `p` with `p mod W == id`; worker 0 also accepts and deals
//! connections out round robin. One maintenance thread writes hint files and runs merges so
//! that no worker stalls on them.
pub mod cluster;
pub mod cluster_cmds;
mod combine;
mod commands;
pub mod conn;
mod dispatch;
mod info;
mod latency;
pub mod latency_monitor;
mod monitor;
mod moves;
mod msetnx;
mod multi;
mod notify;
mod pause;
pub mod pubsub;
pub mod replica;
pub mod router;
mod seqtx;
mod slowlog;
pub mod stats;
pub mod storage_file;
pub mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use log::{info, warn};
use simplekv_conf::Config;
use simplekv_engine::{OpenError, Options, Store};

use router::{Msg, Peer, Router, Topology};
use stats::Shared;
use worker::{Job, Worker};

/// The Redis version simplekv's command set and replies follow; clients read it from INFO and
/// HELLO to decide which commands they may use.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("partition {partition}: {source}")]
    Open {
        partition: u32,
        #[source]
        source: OpenError,
    },
    #[error("data directory (storage.dir): {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("cannot start thread: {0}")]
    Thread(std::io::Error),
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    router: Router,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    /// The maintenance and fsync threads.
    maint: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle for other threads (the gRPC service) to send work to the workers.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Asks every worker to stop: stop accepting, finish in-flight commands, sync, exit.
    pub fn shutdown(&self) {
        request_shutdown(&self.shared, &self.wakers);
    }

    /// True once a client sent SHUTDOWN to a cluster node (which then moves its leaderships
    /// away before it stops the server).
    pub fn shutdown_requested(&self) -> bool {
        self.shared.shutdown_requested.load(Ordering::Acquire)
    }

    /// A cloneable trigger for signal handlers and the like.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            shared: self.shared.clone(),
            wakers: self.wakers.clone(),
        }
    }

    /// Waits until every worker has stopped (after `shutdown` or a SHUTDOWN command).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Workers are gone: the maintenance channels close and their threads end.
        for m in self.maint.drain(..) {
            let _ = m.join();
        }
        info!("server stopped");
    }
}

#[derive(Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
    wakers: Vec<Arc<mio::Waker>>,
}

impl ShutdownTrigger {
    /// See `ServerHandle::shutdown_requested`.
    pub fn requested(&self) -> bool {
        self.shared.shutdown_requested.load(Ordering::Acquire)
    }

    pub fn fire(&self) {
        request_shutdown(&self.shared, &self.wakers);
    }
}

fn request_shutdown(shared: &Shared, wakers: &[Arc<mio::Waker>]) {
    shared.shutdown.store(true, Ordering::Release);
    for w in wakers {
        let _ = w.wake();
    }
}

/// The warning for a `storage.min_free_space` the partitions' logs can use up between two
/// checks: each log reserves disk space 256 KiB at a time and checks the floor when it
/// reserves more, so `partitions` logs may together take up to that much past it, and the
/// floor is what deletes and merges need.
pub(crate) fn small_floor_warning(floor: u64, partitions: u32) -> Option<String> {
    const STEP: u64 = 256 << 10;
    let at_least = u64::from(partitions) * STEP;
    (floor > 0 && floor < at_least).then(|| {
        format!(
            "storage.min_free_space = {floor} is less than 256 KiB per partition of this node \
             ({partitions} x 256 KiB = {at_least}): the space the partitions' logs reserve \
             ahead can use it up, leaving deletes and merges no room on a full disk; set it \
             to at least {at_least}"
        )
    })
}

pub fn engine_options(c: &Config) -> Options {
    Options {
        segment_size: c.storage.segment_size,
        max_key_len: c.limits.max_key_len as usize,
        max_value_len: c.limits.max_value_len as usize,
        durability: worker::durability_of(c),
        repair: c.storage.repair,
        use_hints: c.storage.hint_files,
        background_sync: true,
        // A turn's writes to a partition (so every command's) are one batch on disk and on
        // the wire: a crash or a failover never leaves part of an MSET or a transaction.
        write_batches: true,
        min_free_space: c.storage.min_free_space,
        ..Options::default()
    }
}

/// Whose data a cluster node's directory holds, recorded in `simplekv.meta` on first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: u32,
    /// The cluster's id (`None` for a cluster created before clusters had one).
    pub cluster_id: Option<String>,
}

/// Checks (or records, on first start) what a data directory holds: the partition count
/// (keys are routed by it, so opening data written with another count would hide keys) and,
/// for a cluster node, which node of which cluster wrote it. Data of another node or cluster
/// would make this node claim records it never received, and an election that compares log
/// ends could then make it leader over the replicas that did: refused, as Kafka refuses a
/// log directory of another cluster.
fn check_layout(dir: &Path, partitions: u32, me: Option<&NodeIdentity>) -> Result<(), ServerError> {
    let meta = dir.join("simplekv.meta");
    let bad = |path: &Path, reason: String| ServerError::DataDir {
        path: path.to_path_buf(),
        reason,
    };
    let have = match std::fs::read_to_string(&meta) {
        Ok(have) => Some(have),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(bad(&meta, e.to_string())),
    };
    let value = |key: &str| have.as_deref().and_then(|h| layout_value(h, key));
    let (found_node, found_cluster) = (value("node_id"), value("cluster_id"));
    // After the checks of whose data it is, which say more about a wrong directory.
    let check_partitions = || -> Result<(), ServerError> {
        if have.is_none() {
            return check_partition_dirs(dir, partitions, me.is_none());
        }
        match value("partitions").and_then(|v| v.parse::<u32>().ok()) {
            Some(p) if p == partitions => Ok(()),
            Some(p) => Err(bad(
                dir,
                format!(
                    "was created with storage.partitions = {p}, but the config says {partitions}; keys are routed by this number, so use {p} (or another directory)"
                ),
            )),
            None => Err(bad(&meta, "unreadable layout file".into())),
        }
    };
    let whose = |node: &str| match &found_cluster {
        Some(c) => format!("node {node} of cluster {c}"),
        None => format!("cluster node {node}"),
    };
    let Some(me) = me else {
        if let Some(n) = &found_node {
            return Err(bad(
                dir,
                format!(
                    "holds the data of {}: start it as that node (cluster.node_id = {n}, with its cluster's cluster.zk and cluster.name), or give the standalone server another directory",
                    whose(n)
                ),
            ));
        }
        check_partitions()?;
        if value("mode").as_deref() != Some("standalone") {
            // New, or written before directories said whose they are.
            write_layout(dir, &meta, partitions, None)?;
        }
        return Ok(());
    };
    if value("mode").as_deref() == Some("standalone") {
        return Err(bad(
            dir,
            "holds a standalone server's data: a cluster node starts from an empty directory (it copies its partitions from their leaders); load standalone data into a cluster through a client".into(),
        ));
    }
    if let Some(n) = &found_node
        && *n != me.node_id.to_string()
    {
        return Err(bad(
            dir,
            format!(
                "holds the data of {}, not of node {}: each node needs a directory of its own (an empty one to join afresh: the node then copies its partitions from their leaders)",
                whose(n),
                me.node_id
            ),
        ));
    }
    // A node's directory without a cluster id was written in a cluster made before clusters
    // had one; such a cluster never gets one (create refuses an existing cluster), so one
    // that has an id is another cluster.
    if found_node.is_some() && found_cluster.is_none() && me.cluster_id.is_some() {
        return Err(bad(
            dir,
            format!(
                "holds the data of {} of a cluster without an id, but this node joins cluster {}: use an empty directory to join it (the node then copies its partitions from their leaders)",
                whose(found_node.as_deref().unwrap_or_default()),
                me.cluster_id.as_deref().unwrap_or_default()
            ),
        ));
    }
    if let Some(c) = &found_cluster
        && me.cluster_id.as_ref() != Some(c)
    {
        return Err(bad(
            dir,
            format!(
                "holds the data of cluster {c}, but this node joins {}: use an empty directory to join it (the node then copies its partitions from their leaders)",
                me.cluster_id
                    .as_deref()
                    .map_or("a cluster without an id".to_string(), |m| format!(
                        "cluster {m}"
                    ))
            ),
        ));
    }
    check_partitions()?;
    if found_node.is_none() {
        // First start, or a directory from before nodes recorded who they are.
        write_layout(dir, &meta, partitions, Some(me))?;
    }
    Ok(())
}

/// A directory without `simplekv.meta` is new, unless partition directories say otherwise
/// (the file was lost): their numbers must fit the partition count, or keys would be routed
/// to partitions other than those that hold them, and a standalone server's directory holds
/// every partition from its first start.
fn check_partition_dirs(dir: &Path, partitions: u32, standalone: bool) -> Result<(), ServerError> {
    let parent = dir.join("partitions");
    let entries = match std::fs::read_dir(&parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ServerError::DataDir {
                path: parent,
                reason: e.to_string(),
            });
        }
    };
    let found: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let (Some(&max), n) = (found.iter().max(), found.len()) else {
        return Ok(());
    };
    if max >= partitions || (standalone && n as u32 != partitions) {
        return Err(ServerError::DataDir {
            path: dir.to_path_buf(),
            reason: format!(
                "has no simplekv.meta (which records how keys are routed) but holds {n} partition directories numbered up to {max}, which storage.partitions = {partitions} does not match: restore the file, or start with the partition count the data was written with"
            ),
        });
    }
    Ok(())
}

/// A standalone server's directory holds every partition once any holds records (all are
/// created at the first start): one missing beside others with records was deleted or lost,
/// and its keys would be served as absent. (Missing beside empty ones: a first start that did
/// not finish.)
fn check_partitions_present(dir: &Path, partitions: u32) -> Result<(), ServerError> {
    // One stat per partition; the directories are read only when some are missing (opening
    // the stores reads them anyway).
    let missing: Vec<u32> = (0..partitions)
        .filter(|&p| !partition_dir(dir, p).exists())
        .collect();
    let holds_records = |p: u32| {
        std::fs::read_dir(partition_dir(dir, p)).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with(".log")
                    && e.metadata().is_ok_and(|m| {
                        m.len() > simplekv_engine::segment::SEGMENT_HEADER_LEN as u64
                    })
            })
        })
    };
    // None missing, or all: a new directory.
    if missing.is_empty()
        || missing.len() == partitions as usize
        || !(0..partitions)
            .filter(|p| !missing.contains(p))
            .any(holds_records)
    {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().take(8).map(|p| format!("{p:05}")).collect();
    Err(ServerError::DataDir {
        path: dir.join("partitions"),
        reason: format!(
            "partition directories {}{} are missing while the others hold data (deleted or lost?); their keys would be served as absent: restore them, or start with storage.repair = true to begin them empty",
            names.join(", "),
            if missing.len() > names.len() {
                ", ..."
            } else {
                ""
            }
        ),
    })
}

/// An exclusive lock on a data directory for the life of a process (`DIR/LOCK`, `flock`, so
/// a `kill -9` never leaves it behind).
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory for this process, first thing: a second server on the same
/// directory must stop before it does anything (a cluster node would otherwise register in
/// ZooKeeper, and `simplekv.meta` be written, before a partition's own lock stopped it).
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, ServerError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let err = |path: &Path, reason: String| ServerError::DataDir {
        path: path.to_path_buf(),
        reason,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(err(dir, "is not a directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e.to_string()))?;
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| err(&path, e.to_string()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err(&path, e.to_string()));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim();
        let by = if pid.is_empty() {
            String::new()
        } else {
            format!(" (pid {pid})")
        };
        return Err(err(
            dir,
            format!(
                "in use by another simplekv process{by}: its lock is held; stop it or use another directory"
            ),
        ));
    }
    // The pid is for people (and the message above); the lock is the flock.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(DataDirLock { _file: file })
}

/// The value of `key = value` in a `simplekv.meta` text.
fn layout_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(|v| v.trim().to_string())
}

/// Before a cluster node registers anywhere: refuses a data directory that a standalone
/// server or another node id wrote (the checks that need the cluster's id wait for
/// `start_node`).
pub fn check_node_dir(dir: &Path, node_id: u32) -> Result<(), ServerError> {
    let meta = dir.join("simplekv.meta");
    let Ok(text) = std::fs::read_to_string(&meta) else {
        return Ok(());
    };
    let value = |key: &str| layout_value(&text, key);
    let partitions = value("partitions")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let me = NodeIdentity {
        node_id,
        cluster_id: value("cluster_id"),
    };
    // The directory's own partition count and cluster id: only whose it is matters here.
    if value("mode").is_some() || value("node_id").is_some_and(|n| n != node_id.to_string()) {
        return check_layout(dir, partitions, Some(&me));
    }
    Ok(())
}

/// Writes `simplekv.meta` whole (a temporary file renamed over it, the directory synced).
fn write_layout(
    dir: &Path,
    meta: &Path,
    partitions: u32,
    me: Option<&NodeIdentity>,
) -> Result<(), ServerError> {
    let mut text = format!("format = 1\npartitions = {partitions}\n");
    match me {
        Some(me) => {
            text.push_str(&format!("node_id = {}\n", me.node_id));
            if let Some(c) = &me.cluster_id {
                text.push_str(&format!("cluster_id = {c}\n"));
            }
        }
        None => text.push_str("mode = standalone\n"),
    }
    let err = |path: &Path, e: std::io::Error| ServerError::DataDir {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let tmp = dir.join("simplekv.meta.tmp");
    std::fs::write(&tmp, text).map_err(|e| err(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, meta).map_err(|e| err(meta, e))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| err(dir, e))
}

pub fn partition_dir(dir: &Path, p: u32) -> PathBuf {
    dir.join("partitions").join(format!("{p:05}"))
}

fn bind(c: &Config) -> Result<std::net::TcpListener, ServerError> {
    let addr_s = format!("{}:{}", c.server.bind, c.server.port);
    let bind_err = |source| ServerError::Bind {
        addr: addr_s.clone(),
        source,
    };
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&addr_s)
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| bind_err(std::io::Error::other("address resolves to nothing")))?;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_err)?;
    sock.set_reuse_address(true).map_err(bind_err)?;
    sock.bind(&addr.into()).map_err(bind_err)?;
    sock.listen(c.server.tcp_backlog as i32).map_err(bind_err)?;
    sock.set_nonblocking(true).map_err(bind_err)?;
    Ok(sock.into())
}

/// Fails as `start_node` would if the RESP port (`server.bind`, `server.port`) cannot be
/// listened on now. A cluster node checks before it registers in ZooKeeper, where it could be
/// elected controller and given leaderships only to exit a moment later.
pub fn check_bind(c: &Config) -> Result<(), ServerError> {
    bind(c).map(drop)
}

/// What a cluster node's data plane starts from (see `start_node`).
pub struct ClusterBoot {
    /// The cluster's partition count (from ZooKeeper; `storage.partitions` is not used).
    pub partitions: u32,
    /// The first route table: which partitions this node replicates and who leads them.
    pub routes: Arc<cluster::RouteTable>,
    /// Where workers send new leader records for the replication thread.
    pub feed: replica::FeedTx,
    /// How long a leader serves without hearing from its in-sync followers.
    pub lease: std::time::Duration,
    /// This node and its cluster, checked against (or recorded in) the data directory.
    pub identity: NodeIdentity,
    /// The storage id the node registered with (`storage_file::storage_identity`); the
    /// partitions it holds are recorded with it once their directories exist.
    pub storage: u64,
}

/// Starts a standalone server; returns once every partition is open and the port is listening.
pub fn start(config: Config, config_file: Option<PathBuf>) -> Result<ServerHandle, ServerError> {
    start_node(config, config_file, None, None)
}

/// Starts a server, standalone (`cluster: None`) or as a cluster node, which opens only the
/// partitions it replicates and serves only those it leads.
///
/// `router_cell`, when given, receives the router before any worker serves a client, so a
/// service sharing it (gRPC) never sees the RESP port answer while it cannot route yet.
pub fn start_node(
    config: Config,
    config_file: Option<PathBuf>,
    cluster: Option<ClusterBoot>,
    router_cell: Option<Arc<std::sync::OnceLock<Router>>>,
) -> Result<ServerHandle, ServerError> {
    config
        .validate()
        .map_err(|e| ServerError::Config(e.to_string()))?;
    let started = Instant::now();
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        n => n,
    };
    let topo = Topology {
        partitions: cluster
            .as_ref()
            .map_or(config.storage.partitions, |c| c.partitions),
        workers,
    };
    let replicated: Option<Vec<u32>> = cluster.as_ref().map(|c| {
        (0..topo.partitions)
            .filter(|&p| c.routes.replicates(p))
            .collect()
    });
    // A cluster node holds the partitions it replicates.
    let held = replicated
        .as_ref()
        .map_or(topo.partitions, |r| r.len() as u32);
    if let Some(w) = small_floor_warning(config.storage.min_free_space, held) {
        warn!("{w}");
    }
    let dir = config.storage.dir.clone();
    check_layout(&dir, topo.partitions, cluster.as_ref().map(|c| &c.identity))?;
    if cluster.is_none() && !config.storage.repair {
        check_partitions_present(&dir, topo.partitions)?;
    }
    let listener = bind(&config)?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.server.bind.clone(),
        source,
    })?;

    let shared = Arc::new(Shared {
        clients: AtomicUsize::new(0),
        next_client_id: AtomicU64::new(1),
        total_connections: AtomicU64::new(0),
        rejected_connections: AtomicU64::new(0),
        slowlog_ids: AtomicU64::new(0),
        last_save: Arc::new(AtomicU64::new(simplekv_engine::system_clock() / 1000)),
        memory_peak: AtomicU64::new(0),
        memory_startup: info::heap_bytes(),
        shutdown: AtomicBool::new(false),
        shutdown_requested: AtomicBool::new(false),
        drained: AtomicUsize::new(0),
        started,
        run_id: format!(
            "{:016x}{:016x}{:08x}",
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u32(..)
        ),
        port: AtomicUsize::new(addr.port() as usize),
        config_file,
        config: std::sync::Mutex::new((0, Arc::new(config.clone()))),
        subscriptions: stats::WorkerCounts::new(workers as usize),
        monitors: stats::WorkerCounts::new(workers as usize),
        pause: pause::ClientPause::new(started),
    });

    let mut polls = Vec::new();
    let mut peers = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..workers {
        let (poll, waker) = worker::poll_and_waker().map_err(ServerError::Thread)?;
        let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
        polls.push(poll);
        peers.push(Peer::new(tx, waker));
        rxs.push(rx);
    }
    let wakers: Vec<Arc<mio::Waker>> = peers.iter().map(|p| p.waker.clone()).collect();
    if let Some(cell) = &router_cell {
        let _ = cell.set(Router::new(topo, peers.clone(), shared.clone()));
    }

    let mut maint = Vec::new();
    let mut maint_thread = |name: &str| -> Result<crossbeam_channel::Sender<Job>, ServerError> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let peers = peers.clone();
        let t = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || maintenance(rx, peers))
            .map_err(ServerError::Thread)?;
        maint.push(t);
        Ok(tx)
    };
    let maint_tx = worker::Maint {
        jobs: maint_thread("skv-maint")?,
        syncs: maint_thread("skv-fsync")?,
    };

    // Records of the commit journals (fsync = always) that the partition logs may lack: each
    // worker appends those of its partitions after opening them. The journals are reused only
    // once every worker has (the `go` signal below), as any of them may hold records for a
    // partition another worker owns now (a restart with another worker count).
    let journal_dir = dir.join(simplekv_engine::journal::JOURNAL_DIR);
    let replay =
        simplekv_engine::journal::read_dir(&journal_dir).map_err(|e| ServerError::DataDir {
            path: journal_dir.clone(),
            reason: e.to_string(),
        })?;
    if replay.frames > 0 {
        info!(
            "commit journal: {} frames ({} bytes) for {} partitions to check against the logs",
            replay.frames,
            replay.bytes,
            replay.partitions.len()
        );
    }
    let mut replays: Vec<Vec<(u32, Vec<u8>)>> = (0..workers).map(|_| Vec::new()).collect();
    for (p, records) in replay.partitions {
        if p < topo.partitions {
            replays[topo.worker_of(p)].push((p, records));
        }
    }
    // How far each log was known to be fsynced (see `simplekv_engine::points`).
    let points_dir = dir.join(simplekv_engine::points::POINTS_DIR);
    let (mut all_points, unreadable) = simplekv_engine::points::read_dir(&points_dir)
        .unwrap_or_else(|e| {
            warn!(
                "{}: cannot read the recovery points ({e}); the end of every log is judged by its bytes alone",
                points_dir.display()
            );
            Default::default()
        });
    for path in unreadable {
        warn!(
            "{}: recovery points file does not check; ignored (the end of those logs is judged by its bytes alone)",
            path.display()
        );
    }
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded::<Result<usize, ServerError>>();
    let mut threads = Vec::new();
    let mut listener = Some(mio::net::TcpListener::from_std(listener));
    for ((id, (poll, rx)), replay) in polls.into_iter().zip(rxs).enumerate().zip(replays) {
        let cfg = config.clone();
        use simplekv_engine::points::ByPartition;
        let (mut points, rest): (ByPartition, ByPartition) = std::mem::take(&mut all_points)
            .into_iter()
            .partition(|(p, _)| topo.worker_of(*p) == id);
        all_points = rest;
        let go = go_rx.clone();
        let shared = shared.clone();
        let peers = peers.clone();
        let maint_tx = maint_tx.clone();
        let ready = ready_tx.clone();
        let l = if id == 0 { listener.take() } else { None };
        let replicated = replicated.clone();
        let cstate = cluster.as_ref().map(|c| {
            replica::ClusterState::new(
                c.routes.clone(),
                topo.partitions,
                c.feed.clone(),
                config.cluster.min_insync_replicas as usize,
                config.cluster.acks,
                c.lease,
            )
        });
        let core =
            (config.server.pin_workers && !cores.is_empty()).then(|| cores[id % cores.len()]);
        let t = std::thread::Builder::new()
            .name(format!("skv-worker-{id}"))
            .spawn(move || {
                if let Some(core) = core
                    && !core_affinity::set_for_current(core)
                {
                    warn!("worker {id}: could not pin to core {}", core.id);
                }
                let opts = engine_options(&cfg);
                let mut stores: Vec<Option<Store>> = (0..topo.partitions).map(|_| None).collect();
                let opening = Instant::now();
                for p in (0..topo.partitions).filter(|&p| {
                    topo.worker_of(p) == id
                        && replicated.as_ref().is_none_or(|r| r.contains(&p))
                }) {
                    replica::restore_aside(&partition_dir(&cfg.storage.dir, p));
                    // Where this partition's journaled records begin: damage at or above it
                    // in the log's tail is cut, the replay below restoring it.
                    let journaled_from = replay
                        .iter()
                        .find(|(rp, _)| *rp == p)
                        .and_then(|(_, r)| simplekv_engine::record::decode_header(r).ok())
                        .map(|h| h.lsn);
                    let opts = Options {
                        journaled_from,
                        recovery_points: points.remove(&p).unwrap_or_default(),
                        ..opts.clone()
                    };
                    match Store::open(partition_dir(&cfg.storage.dir, p), opts) {
                        Ok(s) => {
                            replica::remove_leftover_copies(s.dir());
                            let r = s.recovery_report();
                            if r.truncated_tail_bytes > 0 || r.repaired_bytes_dropped > 0 {
                                warn!(
                                    "partition {p}: recovery dropped {} torn bytes and {} repaired bytes",
                                    r.truncated_tail_bytes, r.repaired_bytes_dropped
                                );
                            }
                            stores[p as usize] = Some(s);
                        }
                        Err(source) => {
                            let _ = ready.send(Err(ServerError::Open { partition: p, source }));
                            return;
                        }
                    }
                }
                log_opened(id, &stores, opening.elapsed());
                for (p, records) in replay {
                    let Some(store) = stores.get_mut(p as usize).and_then(|s| s.as_mut()) else {
                        continue;
                    };
                    if let Err(e) = store.replay_journal(&records) {
                        let _ = ready.send(Err(ServerError::DataDir {
                            path: partition_dir(&cfg.storage.dir, p),
                            reason: format!("cannot append the records of the commit journal: {e}"),
                        }));
                        return;
                    }
                }
                let _ = ready.send(Ok(id));
                // Wait for the start signal (every worker has replayed the journals); without
                // it (start-up failed) the worker only shuts down.
                // Without it (start-up failed) the worker ends here: it served nothing, so it
                // has nothing to drain (running its loop to shut down made it accept clients
                // and answer them until the shutdown timeout gave up waiting for the worker
                // that failed).
                if go.recv().is_err() {
                    return;
                }
                let mut w = Worker::new(
                    id, topo, peers, rx, poll, l, shared, cfg, stores, maint_tx, cstate,
                );
                w.configure_journal(true);
                w.run();
            })
            .map_err(ServerError::Thread)?;
        threads.push(t);
    }
    drop(maint_tx);
    drop(ready_tx);
    drop(go_rx);
    let started_up = (|| {
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ServerError::Thread(std::io::Error::other(
                        "a worker died during startup",
                    )));
                }
            }
        }
        // Every journaled record is in its log and fsynced. Before any worker serves (and
        // may cut a log back), no frame written before may replay any more: the files of
        // workers that no longer exist go, the others get a zeroed header (their workers
        // give them new ones); without a journal now, all go.
        let journaling = config.storage.journal_size > 0
            && worker::durability_of(&config) == simplekv_engine::Durability::Always;
        let keep = if journaling { workers } else { 0 };
        simplekv_engine::journal::invalidate_all(&journal_dir, keep).map_err(|e| {
            ServerError::DataDir {
                path: journal_dir.clone(),
                reason: format!("cannot retire the replayed commit journals: {e}"),
            }
        })?;
        if let (Some(c), Some(held)) = (cluster.as_ref(), replicated.as_ref()) {
            storage_file::record_held(&dir, c.storage, held)?;
        }
        // Points of workers that no longer exist are true but never updated: they go.
        if let Err(e) = simplekv_engine::points::remove_stale(&points_dir, workers as u32) {
            warn!(
                "{}: cannot remove old recovery points: {e}",
                points_dir.display()
            );
        }
        Ok(())
    })();
    // The caller reports the error (it used to be logged twice).
    if let Err(e) = started_up {
        drop(go_tx);
        request_shutdown(&shared, &wakers);
        for t in threads {
            let _ = t.join();
        }
        for m in maint {
            let _ = m.join();
        }
        return Err(e);
    }
    for _ in 0..workers {
        let _ = go_tx.send(());
    }
    info!(
        "simplekv ready on {addr}: {workers} workers, {} partitions, fsync {}, data in {} ({} ms)",
        topo.partitions,
        config.storage.fsync,
        dir.display(),
        started.elapsed().as_millis()
    );
    Ok(ServerHandle {
        router: Router::new(topo, peers, shared.clone()),
        shared,
        wakers,
        threads,
        maint,
        addr,
    })
}

/// How a worker opened its partition logs: what INFO persistence's `log_load_*` fields sum
/// over all workers, for the log.
fn log_opened(worker: usize, stores: &[Option<Store>], took: std::time::Duration) {
    let (mut opened, mut records, mut scanned, mut hints, mut shutdown_hints) = (0, 0, 0, 0, 0);
    for r in stores.iter().flatten().map(Store::recovery_report) {
        opened += 1;
        records += r.records;
        scanned += r.segments_read_whole();
        hints += r.segments_from_hints;
        shutdown_hints += usize::from(r.active_from_shutdown_hint);
    }
    if opened > 0 {
        info!(
            "worker {worker}: opened {opened} partition logs in {} ms: {records} records; segments: {scanned} read whole, {hints} from hint files, {shutdown_hints} from shutdown hints",
            took.as_millis()
        );
    }
}

/// Hint files and merges (the maintenance thread), or everysec's fsyncs (a thread of their
/// own), off the workers' threads.
fn maintenance(rx: crossbeam_channel::Receiver<Job>, peers: Vec<Peer>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Sync {
                worker,
                partition,
                ticket,
            } => {
                let result = ticket.run();
                peers[worker].send(Msg::BackgroundSynced {
                    partition,
                    ticket,
                    result,
                });
            }
            Job::Hint(j) => {
                if let Err(e) = j.run() {
                    warn!("hint file for {}: {e}", j.segment.display());
                }
            }
            Job::Merge {
                worker,
                partition,
                job,
            } => {
                let result = job.run();
                let peer = &peers[worker];
                peer.send(Msg::MergeDone { partition, result });
            }
            Job::Points {
                worker,
                dir,
                points,
            } => {
                let result = simplekv_engine::points::write(&dir, worker as u32, &points);
                peers[worker].send(Msg::PointsWritten(result));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{NodeIdentity, check_layout, small_floor_warning};

    #[test]
    fn a_floor_the_partitions_can_reserve_away_is_warned_about() {
        assert_eq!(small_floor_warning(64 << 20, 16), None);
        assert_eq!(small_floor_warning(4 << 20, 16), None);
        assert_eq!(small_floor_warning(0, 256), None, "the floor is off");
        let w = small_floor_warning(3 << 20, 16).expect("3 MiB for 16 partitions");
        assert!(w.contains("set it to at least 4194304"), "{w}");
    }

    fn node(id: u32, cluster: Option<&str>) -> NodeIdentity {
        NodeIdentity {
            node_id: id,
            cluster_id: cluster.map(str::to_string),
        }
    }

    fn refused(r: Result<(), super::ServerError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted"),
        }
    }

    /// Found by a black-box run: with `simplekv.meta` deleted, a server started with another
    /// partition count served the directory, and most keys were not found.
    #[test]
    fn partition_directories_without_their_layout_file_keep_their_partition_count() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        for p in 0..16 {
            std::fs::create_dir_all(super::partition_dir(&dir, p)).unwrap();
        }
        let e = refused(check_layout(&dir, 8, None));
        assert!(
            e.contains("no simplekv.meta") && e.contains("16 partition directories"),
            "{e}"
        );
        refused(check_layout(&dir, 32, None));
        // A cluster node holds some partitions only, all below the count.
        refused(check_layout(&dir, 8, Some(&node(1, Some("c1")))));
        check_layout(&dir, 16, None).unwrap();
        assert!(dir.join("simplekv.meta").exists(), "written again");
        let other = d.path().join("node");
        for p in [1, 5] {
            std::fs::create_dir_all(super::partition_dir(&other, p)).unwrap();
        }
        check_layout(&other, 8, Some(&node(1, Some("c1")))).unwrap();
    }

    #[test]
    fn a_data_directory_serves_only_the_node_and_cluster_that_wrote_it() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let me = node(2, Some("c1"));
        check_layout(&dir, 16, Some(&me)).unwrap();
        check_layout(&dir, 16, Some(&me)).unwrap();
        let e = refused(check_layout(&dir, 8, Some(&me)));
        assert!(e.contains("storage.partitions = 16"), "{e}");
        let e = refused(check_layout(&dir, 16, Some(&node(3, Some("c1")))));
        assert!(e.contains("node 2 of cluster c1, not of node 3"), "{e}");
        let e = refused(check_layout(&dir, 16, Some(&node(2, Some("c2")))));
        assert!(
            e.contains("holds the data of cluster c1, but this node joins cluster c2"),
            "{e}"
        );
        let e = refused(check_layout(&dir, 16, Some(&node(2, None))));
        assert!(e.contains("a cluster without an id"), "{e}");
        let e = refused(check_layout(&dir, 16, None));
        assert!(e.contains("cluster.node_id = 2"), "{e}");
        // A directory from before directories said whose they are is adopted by the first
        // node that opens it, and is its own from then on.
        let old = d.path().join("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("simplekv.meta"), "format = 1\npartitions = 4\n").unwrap();
        check_layout(&old, 4, Some(&node(1, Some("c1")))).unwrap();
        let text = std::fs::read_to_string(old.join("simplekv.meta")).unwrap();
        assert_eq!(
            text,
            "format = 1\npartitions = 4\nnode_id = 1\ncluster_id = c1\n"
        );
        refused(check_layout(&old, 4, Some(&node(2, Some("c1")))));
        // A node of a cluster without an id keeps its directory; a cluster with one (a new
        // cluster) does not take it.
        let idless = d.path().join("idless");
        check_layout(&idless, 4, Some(&node(1, None))).unwrap();
        check_layout(&idless, 4, Some(&node(1, None))).unwrap();
        let e = refused(check_layout(&idless, 4, Some(&node(1, Some("c9")))));
        assert!(e.contains("a cluster without an id"), "{e}");
        // A standalone server marks its directory (an old one too), which no node takes.
        let alone = d.path().join("alone");
        std::fs::create_dir_all(&alone).unwrap();
        std::fs::write(alone.join("simplekv.meta"), "format = 1\npartitions = 4\n").unwrap();
        check_layout(&alone, 4, None).unwrap();
        check_layout(&alone, 4, None).unwrap();
        let e = refused(check_layout(&alone, 4, Some(&node(1, Some("c1")))));
        assert!(e.contains("standalone server's data"), "{e}");
        // Before registering: the node id and the standalone mark are checked already.
        assert!(super::check_node_dir(&alone, 1).is_err());
        assert!(super::check_node_dir(&dir, 3).is_err());
        super::check_node_dir(&dir, 2).unwrap();
        super::check_node_dir(&d.path().join("none"), 2).unwrap();
    }
}
