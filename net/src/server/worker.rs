//! A worker: one pinned thread with its own mio `Poll`, its connections and its partitions.
//!
//! One event-loop turn: poll; read and run the commands of every readable connection (local
//! keys at once, others sent to their owner); run requests from other workers; then group
//! commit every partition written this turn (one write + at most one fsync each); only then
//! release replies — to sockets and to the workers that asked — so no reply ever promises
//! more durability than the policy gives. Timers (active expiry, everysec fsync, merges,
//! idle clients) run between turns with a bounded time budget.
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use simplekv_conf::Config;
use simplekv_engine::journal;
use simplekv_engine::points::{self, RecoveryPoint};
use simplekv_engine::{
    Durability, HintJob, Journal, JournalError, JournalSync, MergeJob, Prefetch, Staged, Store,
    SyncTicket,
};

use super::conn::{Client, Conn, Hold, Output, ReadOutcome, Released};
use super::replica::{ClusterState, Need};
use super::router::{Msg, Op, Payload, Peer, ReplyTo, Request, Response, Topology};
use super::stats::{Shared, WorkerStats};
use crate::resp::parse::{Limits, Parser};

pub const WAKER: Token = Token(0);
pub const LISTENER: Token = Token(1);
pub const FIRST_CONN: usize = 2;
/// The dead share at which a partition whose writes found the disk under
/// `storage.min_free_space` is merged (instead of `storage.merge_dead_ratio`).
const LOW_DISK_MERGE_RATIO: f64 = 0.05;
/// Dead bytes in a partition's active segment worth closing it for under
/// `storage.min_free_space`, so that a merge can free them.
const LOW_DISK_ROLL_MIN: u64 = 64 << 10;

/// When a partition's background work that failed (a merge, active expiry; a full disk) may
/// be tried again: 1 s after the first failure, the wait doubling at each failure in a row up
/// to 64 s. BGREWRITEAOF does not wait.
#[derive(Clone, Copy, Debug, Default)]
struct Backoff {
    at: Option<Instant>,
    wait: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(64);

    fn allows(&self, now: Instant) -> bool {
        self.at.is_none_or(|at| now >= at)
    }

    /// Returns the wait before the next try.
    fn failed(&mut self, now: Instant) -> Duration {
        self.wait = match self.at {
            None => Self::FIRST,
            Some(_) => (self.wait * 2).min(Self::MAX),
        };
        self.at = Some(now + self.wait);
        self.wait
    }
}

/// Where a worker sends its file jobs: fsyncs to a thread of their own, so that everysec's
/// once-a-second fsync never waits behind a merge (which may take minutes); hint files
/// and merges to the maintenance thread.
#[derive(Clone)]
pub struct Maint {
    pub jobs: Sender<Job>,
    pub syncs: Sender<Job>,
}

impl Maint {
    /// False when the thread is gone (the server is stopping).
    pub fn send(&self, job: Job) -> bool {
        match job {
            Job::Sync { .. } | Job::Points { .. } => self.syncs.send(job).is_ok(),
            _ => self.jobs.send(job).is_ok(),
        }
    }
}

/// Work for the maintenance thread: file jobs that must not stall a worker.
pub enum Job {
    Hint(HintJob),
    /// The once-a-second fsync of `everysec`, off the worker's thread; its outcome goes back
    /// to the worker (`Msg::BackgroundSynced`).
    Sync {
        worker: usize,
        partition: u32,
        ticket: SyncTicket,
    },
    Merge {
        worker: usize,
        partition: u32,
        job: MergeJob,
    },
    /// Replaces a worker's recovery points file (see `Worker::write_points_in_background`);
    /// the outcome goes back to it (`Msg::PointsWritten`).
    Points {
        worker: usize,
        dir: PathBuf,
        points: Vec<RecoveryPoint>,
    },
}

/// Completion of work from outside the workers (see `Msg::External`).
type ExternalDone = Box<dyn FnOnce(Payload) + Send>;

pub struct Worker {
    pub id: usize,
    pub topo: Topology,
    pub peers: Vec<Peer>,
    rx: Receiver<Msg>,
    poll: Poll,
    pub listener: Option<TcpListener>,
    pub shared: Arc<Shared>,
    pub config: Config,
    /// How many CONFIG SETs `config` reflects (see `Op::ConfigSet`).
    pub config_version: u64,
    pub limits: Limits,
    /// Stores by partition; `Some` for the partitions this worker owns.
    pub stores: Vec<Option<Store>>,
    /// Reused buffer for the reply of a command run on this worker (no allocation per
    /// command when the reply goes straight to the connection's write buffer).
    pub reply_buf: Vec<u8>,
    /// Keyspace notifications (`notify`).
    pub(super) notify: super::notify::NotifyState,
    /// Parses ahead over a connection's pipelined commands for `look_ahead`.
    lookahead: Parser,
    /// Commands `look_ahead` parsed, so that `process_input` runs them without parsing them
    /// again, each GET or SET with the partition `look_ahead` hashed its key to.
    ahead: super::conn::LookAhead,
    /// While a looked-ahead GET or SET runs: its key (address and length in the read
    /// buffer) and that key's partition, so that `dispatch_keyed` does not hash the key a
    /// second time. Set and cleared around that one command in `process_input`.
    pub(super) key_partition: Option<(usize, usize, u32)>,
    pub owned: Vec<u32>,
    pub conns: Vec<Option<Box<Conn>>>,
    free_tokens: Vec<usize>,
    pub dirty_conns: Vec<usize>,
    /// Connections CLIENT KILL closed this turn (`Worker::flush_killed`).
    pub(super) killed: Vec<usize>,
    /// Partitions written this turn (commit before releasing replies).
    pub dirty_parts: Vec<u32>,
    pub part_dirty: Vec<bool>,
    /// Responses to other workers, released after this turn's commit: (worker, response, need).
    pub outbox: Vec<(usize, Response, Need)>,
    /// The MSETNX part this worker holds still for, what waits meanwhile: messages that may
    /// run commands, and connections with input (see `msetnx`).
    pub nx: Option<super::msetnx::NxHeld>,
    pub nx_deferred: std::collections::VecDeque<Msg>,
    pub nx_frozen: Vec<usize>,
    /// Connections stopped by CLIENT PAUSE, and work from elsewhere it stopped, in the
    /// order they stopped (`pause`).
    pub postponed_conns: Vec<usize>,
    pub postponed_msgs: std::collections::VecDeque<Msg>,
    /// Whose turn it is first when a hold ends (`msetnx::nx_release`).
    pub nx_steps_first: bool,
    /// MSETNX steps to pass on, sent after the turn's other requests (see `send_batches`).
    pub nx_out: Vec<(usize, Request)>,
    /// Transactions whose first worker is this one, gathered into one group until this
    /// worker is free to hold for them (`multi::launch_group`), by worker, ascending.
    pub forming: Vec<(usize, Vec<super::multi::GroupPart>)>,
    /// Messages for each peer, sent (and the peer woken once) at the end of the turn.
    pub(super) req_out: Vec<Vec<Msg>>,
    /// Results for callers outside the workers, released after this turn's commit.
    external_out: Vec<(ExternalDone, Payload, Need)>,
    pub stats: WorkerStats,
    /// The commands and ops this worker ran slowly (`slowlog`).
    pub slowlog: super::slowlog::SlowLog,
    /// The connection the op running now is for: its slow log entry's client.
    pub(super) slow_for: Option<ReplyTo>,
    /// The command `run_one` is running went whole to another worker as a single-key op
    /// (which times it for the latency histograms).
    pub(super) sent_keyed: bool,
    /// When the command running (`run_one`) is one slow log entry as a whole
    /// (`dispatch_server` sets it for server commands).
    pub(super) whole_entry: super::slowlog::WholeEntry,
    /// Active expiry was skipped while held: it runs at the release.
    pub(super) expire_due: bool,
    /// The time of the transaction running (`multi::at_time`): its commands' time.
    pub(super) tx_now: Option<u64>,
    /// While EXEC plans a server command it queued (`multi::plan`): the ops its normal path
    /// would run or send, recorded here for the transaction's parts instead.
    pub(super) tx_plan: Option<super::multi::PlannedCmd>,
    /// The client whose EXEC is being planned, and how many commands it queued.
    pub(super) exec_of: Option<(u64, usize)>,
    /// Slow log entries waiting for their client's address and name (`slowlog`).
    pub(super) slow_pending: Vec<(ReplyTo, super::slowlog::SlowEntry)>,
    /// Commands, bytes in, bytes out (INFO's instantaneous rates), sampled by `cron`.
    pub rates: [super::stats::RateSampler; 3],
    maint: Maint,
    next_rr: usize,
    last_cron: Instant,
    pub merge_busy: Vec<bool>,
    /// Per partition: the directory the newest log copy (bootstrap) is staged in.
    pub staged_copy: Vec<Option<std::path::PathBuf>>,
    /// Closed-segment bytes after a merge that reclaimed nothing: no merge is tried again
    /// until they change (see `maybe_merge`).
    merge_futile: Vec<Option<u64>>,
    /// After merges failed (a full disk): when the partition may be merged again.
    merge_retry: Vec<Backoff>,
    /// After active expiry could not write a tombstone: when it may try again.
    expire_retry: Vec<Backoff>,
    /// Commit epoch of the current turn (see `end_turn`), and the last durable one.
    pub epoch: u64,
    durable: u64,
    /// The epoch whose fsyncs are running on the sync thread.
    flight: Option<u64>,
    /// When the running flight left, and the writes it carries.
    flight_started: Instant,
    flight_writes: u64,
    /// Writes since the last flight left.
    writes_pending: u64,
    /// After a flight lands, the next one waits (see `flight_landed`) until this deadline or
    /// until this many writes are pending, whichever comes first.
    gather: Option<(Instant, u64)>,
    /// Partitions written since the last flight left, owing an fsync.
    pending_sync: Vec<u32>,
    /// With fsync = always and `storage.journal_size` > 0: the commit journal. A turn's records
    /// are copied into it and a flight fsyncs only it (see `stage_journal`).
    journal: Option<Journal>,
    /// The journal failed: partition logs are fsynced directly from now on.
    journal_broken: bool,
    /// Partitions whose records of this turn go to the journal.
    journal_parts: Vec<u32>,
    /// Frames written since the last flight left: the next one fsyncs the journal.
    journal_pending: bool,
    /// Runs checkpoints, apart from the commit flights so that they never wait for one.
    ckpt_tx: Option<Sender<SyncJob>>,
    /// A partition log fsync failed: the journal may hold the only durable copy of
    /// acknowledged records, so it is never reset nor reused, and no log is cut back, until
    /// a restart replays it.
    journal_pinned: bool,
    /// Journal restarts after records that did not fit (`stage_journal`), and their count
    /// when the flight in the air left: a failed fsync of that flight may have been the
    /// writeback error the restart's own fsyncs did not see (one open file reports it once).
    journal_resets: u64,
    flight_resets: u64,
    /// A thread is creating the journal (see `configure_journal`).
    journal_opening: bool,
    /// The recovery points last handed to the maintenance thread (see
    /// `write_points_in_background`), whether that write is still running, when the next
    /// may start, and whether the last one failed (said once until one works).
    points_sent: Vec<RecoveryPoint>,
    points_busy: bool,
    points_due: Instant,
    points_failing: bool,
    /// Epoch ranges whose write or fsync failed, with the error for their replies.
    sync_failed: Vec<(u64, u64, String)>,
    /// Responses and callbacks waiting for their epoch to be durable.
    held_out: Vec<(Hold, usize, Response)>,
    held_ext: Vec<(Hold, ExternalDone, Payload)>,
    /// Every epoch up to this one is durable and replicated as its replies need (cluster
    /// mode); `durable` standalone.
    committed: u64,
    /// Cluster mode: roles, high watermarks and reply gating of the partitions owned here.
    pub cluster: Option<Box<ClusterState>>,
    /// WAIT commands waiting for followers (cluster mode).
    pub parked_waits: Vec<super::replica::ParkedWait>,
    /// When to try again a leadership that could not begin (`retry_leadership`), and how
    /// many tries in a row failed.
    pub lead_retry: Option<Instant>,
    pub lead_failures: u32,
    /// Partitions whose leader epoch could not begin, or whose log failed on the disk while
    /// led here (the controller was told), with that epoch: once this node shows it can
    /// write the partition again (a leadership begins, its writes as leader go in again, or
    /// a probe of the log works), the controller is told that too.
    pub lead_failed: std::collections::BTreeMap<u32, u32>,
    /// When the partitions of `lead_failed` were last probed (`probe_failed_leaderships`).
    pub lead_probed: Option<Instant>,
    /// MONITOR lines of the commands this worker's connections ran in this turn, for the
    /// workers with monitoring connections (`send_monitor_lines`).
    pub(super) monitor_buf: Vec<u8>,
    /// Which of this worker's connections subscribe to what (`pubsub`).
    pub(super) pubsub: super::pubsub::Registry,
    /// This worker's connections in MONITOR mode (their tokens).
    pub(super) monitoring: Vec<usize>,
    /// Connections whose next reply waits for durability.
    durable_waiters: Vec<usize>,
    sync_tx: Sender<SyncJob>,
    pub(super) draining: bool,
    drained_counted: bool,
    shutdown_deadline: Option<Instant>,
    /// When this worker began to drain (`shutdown_step`).
    drain_started: Instant,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        topo: Topology,
        peers: Vec<Peer>,
        rx: Receiver<Msg>,
        poll: Poll,
        listener: Option<TcpListener>,
        shared: Arc<Shared>,
        config: Config,
        stores: Vec<Option<Store>>,
        maint: Maint,
        cluster: Option<ClusterState>,
    ) -> Worker {
        let owned = (0..topo.partitions)
            .filter(|&p| topo.worker_of(p) == id)
            .collect();
        let n = topo.partitions as usize;
        let limits = limits_of(&config);
        let n_peers = peers.len();
        let sync_tx = spawn_sync_thread(format!("skv-sync-{id}"), peers[id].clone());
        let mut w = Worker {
            id,
            topo,
            peers,
            rx,
            poll,
            listener,
            shared,
            config,
            config_version: 0,
            limits,
            stores,
            owned,
            conns: Vec::new(),
            free_tokens: Vec::new(),
            dirty_conns: Vec::new(),
            killed: Vec::new(),
            dirty_parts: Vec::new(),
            part_dirty: vec![false; n],
            outbox: Vec::new(),
            nx: None,
            nx_deferred: std::collections::VecDeque::new(),
            nx_frozen: Vec::new(),
            postponed_conns: Vec::new(),
            postponed_msgs: std::collections::VecDeque::new(),
            nx_steps_first: false,
            nx_out: Vec::new(),
            forming: Vec::new(),
            req_out: Vec::new(),
            reply_buf: Vec::new(),
            notify: Default::default(),
            lookahead: Parser::new(),
            ahead: Default::default(),
            key_partition: None,
            external_out: Vec::new(),
            stats: WorkerStats::default(),
            slowlog: Default::default(),
            slow_for: None,
            sent_keyed: false,
            whole_entry: Default::default(),
            expire_due: false,
            slow_pending: Vec::new(),
            tx_now: None,
            tx_plan: None,
            exec_of: None,
            rates: Default::default(),
            maint,
            next_rr: id,
            last_cron: Instant::now(),
            merge_busy: vec![false; n],
            staged_copy: vec![None; n],
            merge_futile: vec![None; n],
            merge_retry: vec![Backoff::default(); n],
            expire_retry: vec![Backoff::default(); n],
            epoch: 1,
            durable: 0,
            flight: None,
            flight_started: Instant::now(),
            flight_writes: 0,
            writes_pending: 0,
            gather: None,
            pending_sync: Vec::new(),
            journal: None,
            journal_broken: false,
            journal_parts: Vec::new(),
            journal_pending: false,
            ckpt_tx: None,
            journal_pinned: false,
            journal_resets: 0,
            flight_resets: 0,
            journal_opening: false,
            points_sent: Vec::new(),
            points_busy: false,
            points_due: Instant::now(),
            points_failing: false,
            sync_failed: Vec::new(),
            held_out: Vec::new(),
            held_ext: Vec::new(),
            committed: 0,
            cluster: cluster.map(Box::new),
            parked_waits: Vec::new(),
            lead_retry: None,
            lead_failures: 0,
            lead_failed: Default::default(),
            lead_probed: None,
            monitor_buf: Vec::new(),
            pubsub: Default::default(),
            monitoring: Vec::new(),
            durable_waiters: Vec::new(),
            sync_tx,
            draining: false,
            drained_counted: false,
            shutdown_deadline: None,
            drain_started: Instant::now(),
        };
        w.req_out.resize_with(n_peers, Vec::new);
        if let Some(rt) = w.cluster.as_ref().map(|c| c.routes.clone()) {
            w.apply_routes(rt);
        }
        w.configure_notifications();
        w
    }

    /// The hold a reply with this need gets in the current turn.
    pub fn hold_for(&self, need: Need) -> Option<Hold> {
        Hold::of(self.epoch, need)
    }

    pub fn store_mut(&mut self, p: u32) -> Option<&mut Store> {
        self.stores.get_mut(p as usize).and_then(|s| s.as_mut())
    }

    pub fn store(&self, p: u32) -> Option<&Store> {
        self.stores.get(p as usize).and_then(|s| s.as_ref())
    }

    pub fn mark_dirty(&mut self, p: u32) {
        self.writes_pending += 1;
        if !self.part_dirty[p as usize] {
            self.part_dirty[p as usize] = true;
            self.dirty_parts.push(p);
        }
    }

    pub fn mark_conn_dirty(&mut self, token: usize) {
        if let Some(Some(c)) = self.conns.get_mut(token - FIRST_CONN)
            && !c.client.in_dirty_list
        {
            c.client.in_dirty_list = true;
            self.dirty_conns.push(token);
        }
    }

    pub fn conn_mut(&mut self, token: usize) -> Option<&mut Conn> {
        self.conns
            .get_mut(token.checked_sub(FIRST_CONN)?)
            .and_then(|c| c.as_deref_mut())
    }

    /// Runs until shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        if let Some(l) = self.listener.as_mut()
            && let Err(e) = self
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
        {
            error!("worker {}: cannot register listener: {e}", self.id);
        }
        loop {
            let timeout = if self.has_pending_work() {
                Duration::ZERO
            } else {
                self.poll_timeout()
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                error!("worker {}: poll failed: {e}", self.id);
                break;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(t) => {
                        let closed = ev.is_read_closed() || ev.is_error();
                        if closed {
                            self.drop_if_postponed(t);
                        }
                        if ev.is_readable() || closed {
                            self.read_event(t, closed);
                        }
                        if ev.is_writable() {
                            self.mark_conn_dirty(t);
                        }
                    }
                }
            }
            // What the pause stopped first, before what came in since.
            self.resume_postponed();
            self.drain_channel();
            self.end_turn();
            if self.last_cron.elapsed() >= self.cron_interval() {
                self.cron();
                self.end_turn();
            }
            if self.shared.shutdown.load(Ordering::Acquire) && self.shutdown_step() {
                break;
            }
        }
        self.finish();
    }

    fn cron_interval(&self) -> Duration {
        Duration::from_millis((1000 / self.config.server.hz.max(1)) as u64)
    }

    fn poll_timeout(&self) -> Duration {
        let next = self
            .cron_interval()
            .saturating_sub(self.last_cron.elapsed());
        if self.merge_installing() {
            // Keep installing merge output in small steps even when idle.
            return Duration::ZERO;
        }
        let next = match self.gather {
            // A flight gathering writes leaves at its deadline at the latest.
            Some((deadline, _)) if self.flight.is_none() => {
                next.min(deadline.saturating_duration_since(Instant::now()))
            }
            _ => next,
        };
        let next = match self.pause_wakeup() {
            Some(d) => next.min(d),
            None => next,
        };
        if !self.parked_waits.is_empty() {
            // WAIT deadlines are checked at the end of each turn.
            return next.min(Duration::from_millis(10));
        }
        next.min(Duration::from_millis(100))
    }

    fn merge_installing(&self) -> bool {
        self.owned.iter().any(|&p| {
            self.store(p)
                .is_some_and(|s| s.merge_in_progress() && !self.merge_busy[p as usize])
        })
    }

    // ------------------------------------------------------------ accepting

    fn accept(&mut self) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            match l.accept() {
                Ok((sock, _)) => self.place(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and let the next event retry.
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Accepts every connection waiting in the listener's queue and keeps it on this worker.
    fn accept_all_here(&mut self) {
        while let Some(Ok((mut sock, _))) = self.listener.as_ref().map(|l| l.accept()) {
            if self.admit(&mut sock) {
                self.register_conn(sock);
            }
        }
    }

    /// Counts a new connection in, or turns it away when `maxclients` are connected.
    fn admit(&mut self, sock: &mut TcpStream) -> bool {
        let max = self.config.server.maxclients as usize;
        if self.shared.clients.load(Ordering::Relaxed) >= max {
            self.shared
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            let _ = io::Write::write(sock, b"-ERR max number of clients reached\r\n");
            return false;
        }
        self.shared.clients.fetch_add(1, Ordering::Relaxed);
        self.shared
            .total_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = sock.set_nodelay(self.config.server.tcp_nodelay);
        true
    }

    /// Hands an accepted socket to the next worker, round robin. One acceptor spreads
    /// connections evenly, which SO_REUSEPORT's 4-tuple hashing does not on a few
    /// connections, and never lets two servers silently share a port.
    fn place(&mut self, mut sock: TcpStream) {
        if !self.admit(&mut sock) {
            return;
        }
        let target = self.next_rr % self.peers.len();
        self.next_rr = self.next_rr.wrapping_add(1);
        if target == self.id {
            self.register_conn(sock);
        } else {
            let peer = &self.peers[target];
            if !peer.send(Msg::NewConn(sock)) {
                self.shared.clients.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn register_conn(&mut self, mut sock: TcpStream) {
        let idx = match self.free_tokens.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let token = idx + FIRST_CONN;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(token), Interest::READABLE)
        {
            warn!("cannot register connection: {e}");
            self.free_tokens.push(idx);
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let id = self.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
        let authed = self.config.server.requirepass.is_none();
        self.conns[idx] = Some(Box::new(Conn::new(sock, id, authed)));
        // Data may already be waiting (edge-triggered: no event would announce it).
        self.on_readable(token);
    }

    pub(super) fn close_conn(&mut self, token: usize) {
        let Some(slot) = self.conns.get_mut(token - FIRST_CONN) else {
            return;
        };
        if let Some(mut c) = slot.take() {
            self.stats.take_errors(&mut c.out);
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.free_tokens.push(token - FIRST_CONN);
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
            self.stop_monitoring(token, &mut c.client);
            self.drop_subscriptions(token, &mut c.client);
            // Lines held behind a transaction still running: the commands after it ran. (The
            // transaction's own, not known yet, are lost with the connection.)
            for (pending, lines) in c.client.monitor_held.drain(..) {
                if pending.is_none() {
                    self.monitor_buf.extend_from_slice(&lines);
                }
            }
            debug!("client {} ({}) closed", c.client.id, c.client.addr);
        }
    }

    /// Connection `token` is a monitor no more (closed, or RESET).
    pub(super) fn stop_monitoring(&mut self, token: usize, client: &mut Client) {
        if std::mem::take(&mut client.monitor) {
            self.shared.monitors.remove(self.id);
            self.monitoring.retain(|&t| t != token);
        }
    }

    // ------------------------------------------------------------- reading

    /// Reads whatever is there, even past a short read.
    pub(super) fn on_readable(&mut self, token: usize) {
        self.read_event(token, true);
    }

    fn read_event(&mut self, token: usize, drain: bool) {
        let limit = self.config.limits.client_query_buffer_limit as usize;
        let draining = self.ignores_input();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.client.closing
            || conn.client.paused
            || conn.client.frozen
            || conn.client.eof
            || draining
        {
            return;
        }
        let before = conn.rbuf.len();
        let outcome = conn.read_available(limit, drain);
        let got = conn.rbuf.len().saturating_sub(before);
        self.stats.net_in += got as u64;
        self.stats.reads += u64::from(got > 0);
        match outcome {
            ReadOutcome::Open => self.process_input(token),
            ReadOutcome::Closed => {
                // Run what arrived before the EOF, then go once replies are out. This used to
                // mark the connection dead, which dropped those replies unwritten: a client
                // that half-closed after sending got nothing. A peer that is really gone makes
                // the write fail, and the connection is closed then.
                self.process_input(token);
                if let Some(c) = self.conn_mut(token) {
                    c.client.eof = true;
                }
                self.mark_conn_dirty(token);
            }
            ReadOutcome::Overflow => {
                warn!(
                    "closing client: query buffer over client_query_buffer_limit ({limit} bytes)"
                );
                if let Some(c) = self.conn_mut(token) {
                    c.client.dead = true;
                }
                self.mark_conn_dirty(token);
            }
        }
    }

    /// Parses and runs every complete command in the connection's buffer.
    pub fn process_input(&mut self, token: usize) {
        // Holding for a command over several workers: only single-key commands on keys the
        // held work does not touch run until it is decided (`runs_while_held`); the
        // connection stops at the first other one.
        let held_at_start = self.nx.is_some();
        if self.nx.as_ref().is_some_and(|h| h.keys().is_none()) {
            self.freeze_conn(token);
            return;
        }
        let mut waits_for_hold = false;
        let Some(mut conn) = self
            .conns
            .get_mut(token - FIRST_CONN)
            .and_then(|c| c.take())
        else {
            return;
        };
        // Back from waiting for answers in flight: the rest of what was looked ahead at before
        // runs from what the connection kept of it (`Conn::ahead`), not parsed again nor
        // looked ahead at again (parsing a pipeline again at every hop between workers cost
        // more than the prefetch gains; its keys were prefetched then). Kept only if parsed
        // with the limits in force and within the buffer; otherwise the connection's parser
        // takes the rest one command at a time.
        let resumed = std::mem::take(&mut conn.out.order_wait);
        if !resumed {
            self.look_ahead(&conn);
        }
        let mut ahead = std::mem::take(&mut self.ahead);
        if resumed {
            // The connection's kept commands here, the worker's lists there (allocations
            // and all), emptied.
            std::mem::swap(&mut ahead, &mut conn.ahead);
            conn.ahead.clear();
            if !ahead.still_valid(&self.limits, conn.rbuf.len() - conn.rpos) {
                ahead.clear();
            }
        }
        loop {
            if conn.client.closing || self.ignores_input() {
                break;
            }
            if self.nx.is_some() && !held_at_start {
                // This connection's MSETNX holds its own worker (see `msetnx`); the
                // connection is frozen below, once it is back in its slot.
                break;
            }
            if conn.out.backlogged() {
                conn.client.paused = true;
                break;
            }
            // Commands the look-ahead parsed (from `rpos`, with the connection's parser
            // between frames) run from its ranges; then the parser takes over. A command
            // that does not run is left unconsumed: parsed again when what it waits for is in.
            let group = conn.out.group_barrier();
            macro_rules! run {
                ($len:expr, $args:expr) => {
                    with_args($len, $args, |args| {
                        self.run_one(
                            token,
                            &mut conn.out,
                            &mut conn.client,
                            group,
                            held_at_start,
                            args,
                        )
                    })
                };
            }
            let (step, consumed, looked_ahead) =
                if let Some((consumed, rs, partition)) = ahead.cmds.get(ahead.next) {
                    let rs = &ahead.ranges[rs.clone()];
                    let rbuf = &conn.rbuf[conn.rpos..];
                    self.key_partition = partition
                        .zip(rs.get(1))
                        .map(|(p, key)| (rbuf[key.clone()].as_ptr() as usize, key.len(), p));
                    let step = run!(rs.len(), rs.iter().map(|r| &rbuf[r.clone()]));
                    self.key_partition = None;
                    (step, *consumed, true)
                } else {
                    match conn.parser.parse(&conn.rbuf[conn.rpos..], &self.limits) {
                        Ok(Some(cmd)) => (run!(cmd.len(), cmd.iter()), cmd.consumed(), false),
                        Ok(None) => break,
                        Err(e) => {
                            // As Redis: reply with the protocol error, then close. CLIENT REPLY
                            // covers it as a command's reply (OFF drops it, SKIP is used up).
                            let mut reply = Vec::new();
                            e.write_reply(&mut reply);
                            conn.out.begin_command();
                            conn.out.push_reply(&reply);
                            conn.out.silent = false;
                            conn.client.closing = true;
                            conn.rpos = conn.rbuf.len();
                            break;
                        }
                    }
                };
            if step != Step::Ran {
                waits_for_hold = step == Step::WaitsForHold;
                break;
            }
            ahead.next += usize::from(looked_ahead);
            conn.rpos += consumed;
        }
        if conn.out.order_wait && ahead.next < ahead.cmds.len() {
            // Stopped to wait for its commands in flight: what was looked ahead at and has
            // not run is kept for when it goes on (in exchange for the connection's empty
            // lists).
            std::mem::swap(&mut ahead, &mut conn.ahead);
        }
        // Given back for their capacity; `look_ahead` clears them.
        self.ahead = ahead;
        conn.compact_rbuf();
        self.conns[token - FIRST_CONN] = Some(conn);
        if self.nx.is_some() && (waits_for_hold || !held_at_start) {
            self.freeze_conn(token);
        }
        self.mark_conn_dirty(token);
    }

    /// Runs one command of a connection, unless it must wait: behind a group's barrier
    /// only a command joining the group may pass (`Worker::may_pass_barrier`); while this
    /// worker holds (`held`), only what `runs_while_held` allows; and a command waits for
    /// the commands in flight to run when the order asks for it (`Worker::waits_for_order`;
    /// past a group's barrier a command joins the group, which runs it after the barrier's
    /// command everywhere). A connection that stops pauses, and carries on when what it
    /// waits for is in (`flush_conns`, `Output::blocked`). An empty command does nothing.
    fn run_one(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        group: Option<usize>,
        held: bool,
        args: &[&[u8]],
    ) -> Step {
        if args.is_empty() {
            // An empty command is the one a CLIENT REPLY SKIP covers, as in Redis.
            out.begin_command();
            out.silent = false;
            return Step::Ran;
        }
        if let Some(first) = group
            && !self.may_pass_barrier(first, client, args)
        {
            client.paused = true;
            return Step::Stop;
        }
        if held && !self.runs_while_held(client, args) {
            return Step::WaitsForHold;
        }
        if group.is_none()
            && out.unran > 0
            && self.config.server.ordered_pipelines
            && self.waits_for_order(client, out, args)
        {
            out.order_wait = true;
            client.paused = true;
            self.stats.order_waits += 1;
            return Step::Stop;
        }
        if self.postpones(client, args) {
            self.postpone(token, client, args);
            return Step::Stop;
        }
        let queued = client.tx.is_some();
        let mark = self.slow_begin(token, client, out, args);
        let failed = out.failed_cmds.len();
        out.begin_command();
        self.sent_keyed = false;
        self.dispatch(token, out, client, args);
        if self.shared.monitors.active() && !out.not_run {
            if super::monitor::ran_now(queued, args[0]) {
                self.feed_monitors(client, args);
            } else if args[0].eq_ignore_ascii_case(b"exec") {
                Self::hold_monitor_lines(client, out);
            }
        }
        // CLIENT REPLY covers this command's replies only.
        out.silent = false;
        let us = self.slow_end(mark, client, out, args);
        if out.not_run {
            // A subcommand refused before it ran is not a failed call either.
            out.failed_cmds.truncate(failed);
        } else if !out.cmd.is_empty() {
            // A single-key command sent to its owner whole is timed there instead.
            let track = us.is_some() && self.config.server.latency_tracking && !self.sent_keyed;
            self.stats
                .cmdstats
                .record_call(out.cmd, us.unwrap_or(0), track);
        }
        // As Redis's total_commands_processed: commands that ran (those queued in MULTI
        // when EXEC runs them), not those refused before running.
        if !out.not_run && (!queued || !out.cmd.is_empty()) {
            self.stats.commands += 1;
        }
        out.cmd = "";
        self.stats.take_errors(out);
        Step::Ran
    }

    /// Draining for shutdown, commands on open connections are left unread, except on a node
    /// whose controlled shutdown resigned its leaderships: it refuses writes with TRYAGAIN
    /// and redirects keys it no longer leads, and a client that got in just before the end
    /// gets that answer rather than a closed connection with its command unanswered. Only
    /// until this worker has counted itself drained: work taken in after that could be cut
    /// off by the exit.
    fn ignores_input(&self) -> bool {
        self.draining
            && (self.drained_counted || !self.cluster.as_ref().is_some_and(|c| c.resigning))
    }

    /// Parses ahead over the commands waiting in a connection's buffer, keeping them for
    /// `process_input` (`ahead`), and runs a staged prefetch over the GETs and SETs among
    /// them (see `Store::prefetch`): their cache misses (index chunk, keydir entry, record)
    /// overlap instead of each command taking its own one after another. Only keys of this
    /// worker's partitions are prefetched.
    ///
    /// Bounded in commands and bytes whatever they are, so a connection resumed again and
    /// again with a huge pipeline queued does not parse all of it each time; a paused or
    /// backlogged connection runs nothing, so it gets none. Skipped while the connection's
    /// parser is inside a frame, so a frame trickling in byte by byte is parsed
    /// incrementally, not again from its start on every read. (Running it again once such a
    /// frame completes was measured slower with 1000-command pipelines, whose reads nearly
    /// always end inside a frame: 900 against 660-810 ns per GET.) It stops at an inline
    /// command (its arguments live in the parser, not the buffer) and after CONFIG (which
    /// may change the limits the next commands are parsed with).
    fn look_ahead(&mut self, conn: &Conn) {
        const MAX: usize = 32;
        const MAX_BYTES: usize = 64 << 10;
        self.ahead.clear();
        self.ahead.limits = self.limits;
        if conn.client.paused
            || conn.client.closing
            || self.ignores_input()
            || conn.out.backlogged()
            || conn.parser.mid_frame()
        {
            return;
        }
        let buf = &conn.rbuf[conn.rpos..];
        let buf = &buf[..buf.len().min(MAX_BYTES)];
        // (partition, hash, key start, key end, a read: its record is wanted too)
        let mut keys = [(0u32, 0u64, 0usize, 0usize, false); MAX];
        let mut n = 0;
        let mut pos = 0;
        for _ in 0..MAX {
            if pos >= buf.len() {
                break;
            }
            self.lookahead.reset();
            let Ok(Some(cmd)) = self.lookahead.parse(&buf[pos..], &self.limits) else {
                break;
            };
            let consumed = cmd.consumed();
            let Some(r) = cmd.buf_ranges() else {
                break;
            };
            let first_range = self.ahead.ranges.len();
            self.ahead.ranges.extend(r.iter().cloned());
            let name = r
                .first()
                .map_or(&[][..], |r| &buf[pos + r.start..pos + r.end]);
            let mut partition = None;
            if r.len() >= 2 {
                let read = name.eq_ignore_ascii_case(b"get");
                if read || name.eq_ignore_ascii_case(b"set") {
                    let (start, end) = (pos + r[1].start, pos + r[1].end);
                    let p = self.topo.partition_of(&buf[start..end]);
                    partition = Some(p);
                    if let Some(Some(store)) = self.stores.get(p as usize) {
                        keys[n] = (p, store.key_hash(&buf[start..end]), start, end, read);
                        n += 1;
                    }
                }
            }
            self.ahead
                .cmds
                .push((consumed, first_range..self.ahead.ranges.len(), partition));
            if name.eq_ignore_ascii_case(b"config") {
                break;
            }
            pos += consumed;
        }
        if n < 2 {
            return;
        }
        for stage in [Prefetch::Index, Prefetch::Entry, Prefetch::Record] {
            for &(p, hash, start, end, read) in &keys[..n] {
                if stage == Prefetch::Record && !read {
                    continue;
                }
                if let Some(Some(store)) = self.stores.get(p as usize) {
                    store.prefetch(&buf[start..end], hash, stage);
                }
            }
        }
    }

    // ----------------------------------------------------------- messages

    fn drain_channel(&mut self) {
        // Before draining: a message sent after this wakes the worker again (`Peer::notify`).
        if let Some(me) = self.peers.get(self.id) {
            me.take_notified();
        }
        while let Ok(msg) = self.rx.try_recv() {
            self.handle_msg(msg);
        }
    }

    pub(super) fn handle_msg(&mut self, msg: Msg) {
        // A request runs for its connection (its slow log entry's client).
        let before = self.slow_for;
        if let Msg::Req(r) = &msg {
            self.slow_for = Some(r.reply_to);
        }
        self.handle_msg_for(msg);
        self.slow_for = before;
    }

    fn handle_msg_for(&mut self, msg: Msg) {
        if self.nx.is_some() && super::msetnx::waits_for_hold(&msg) {
            self.nx_deferred.push_back(msg);
            return;
        }
        if self.postpones_msg(&msg) {
            self.postponed_msgs.push_back(msg);
            return;
        }
        match msg {
            Msg::Batch(v) => {
                for m in v {
                    self.handle_msg(m);
                }
            }
            Msg::NewConn(sock) => {
                if self.ignores_input() {
                    self.shared.clients.fetch_sub(1, Ordering::Relaxed);
                } else {
                    self.register_conn(sock);
                }
            }
            Msg::Req(Request {
                reply_to,
                op:
                    Op::Wait {
                        partition,
                        numreplicas,
                        timeout_ms,
                    },
                ..
            }) => self.park_wait(reply_to, partition, numreplicas, timeout_ms),
            Msg::Req(Request {
                reply_to,
                op: Op::NxStep { held, rest },
                acks,
            }) => self.nx_step(reply_to, acks, held, rest),
            Msg::Req(Request {
                op:
                    Op::NxDecide {
                        commit,
                        moved,
                        refused,
                        at,
                    },
                ..
            }) => self.nx_decide(commit, moved, refused, at),
            Msg::Req(Request {
                reply_to,
                op: op @ Op::MoveStep { .. },
                acks,
            }) => self.move_step(reply_to, acks, op),
            Msg::Req(Request {
                op:
                    Op::GroupStep {
                        held,
                        rest,
                        refused,
                    },
                ..
            }) => {
                if held.is_empty() {
                    self.join_group(rest);
                } else {
                    self.group_step(held, rest, refused);
                }
            }
            Msg::Req(Request {
                reply_to,
                op: Op::Combine(c),
                acks,
            }) => self.combine_step(reply_to, acks, c),
            Msg::Req(Request {
                op: Op::SeqVisit(run),
                ..
            }) => self.seq_visit(run),
            Msg::Req(Request {
                reply_to,
                op: Op::PauseChanged { relay: true },
                ..
            }) => {
                self.send_pause_changed(reply_to, false);
                self.outbox.push((
                    reply_to.worker,
                    Response::new(reply_to, Payload::Ok),
                    Need::Now,
                ));
            }
            Msg::Req(req) => {
                // A PUBLISH's part was counted as run when it was sent (`broadcast_to`).
                let ran_at_send = matches!(req.op, Op::Publish { .. });
                let (payload, need) = self.execute_op(req.op, req.acks);
                let Some(payload) = self.forward_scan(req.reply_to, req.acks, payload, need) else {
                    return;
                };
                let mut resp = Response::new(req.reply_to, payload);
                resp.ran_noted = ran_at_send;
                self.outbox.push((req.reply_to.worker, resp, need));
            }
            Msg::Resp(resp) => self.deliver(resp),
            Msg::Slow(rt, entry) => self.log_slow_for(rt, *entry),
            Msg::Ran(rt) => self.note_ran(rt),
            Msg::External { op, acks, done } => {
                let acks = acks.unwrap_or_else(|| self.default_acks());
                let (payload, need) = self.execute_op(op, acks);
                self.external_out.push((done, payload, need));
            }
            Msg::Routes(rt) => self.apply_routes(rt),
            Msg::Monitor(lines) => self.deliver_monitor_lines(&lines),
            Msg::Publish(p) => {
                self.deliver_publication(&p);
            }
            Msg::Hw {
                partition,
                leader_epoch,
                hw,
                lease_until,
                horizon,
                isr,
            } => self.on_hw(partition, leader_epoch, hw, lease_until, horizon, isr),
            Msg::MergeDone { partition, result } => self.merge_done(partition, result),
            Msg::BackgroundSynced {
                partition,
                ticket,
                result,
            } => {
                if let Some(s) = self.store_mut(partition)
                    && let Err(e) = s.sync_done(&ticket, result)
                {
                    // The store reacted (refuses writes after EIO, or reloaded and syncs
                    // again next second); say it where the operator looks.
                    self.commit_failed(partition, &e);
                }
            }
            Msg::JournalOpened(r) => self.journal_opened(r),
            Msg::PointsWritten(r) => self.points_written(r),
            Msg::SyncDone {
                results,
                checkpoint: Some(seq),
                ..
            } => self.checkpoint_landed(seq, results),
            Msg::SyncDone {
                epoch,
                results,
                journal,
                checkpoint: None,
            } => self.flight_landed(epoch, results, journal),
        }
    }

    /// Sends a response to the worker that asked (delivered in place if that is this one).
    pub fn respond(&mut self, resp: Response) {
        if resp.reply_to.worker == self.id {
            self.deliver(resp);
        } else {
            self.req_out[resp.reply_to.worker].push(Msg::Resp(resp));
        }
    }

    /// A response from another worker fills its slot in the connection's pipeline.
    fn deliver(&mut self, resp: Response) {
        let rt = resp.reply_to;
        let Some(conn) = self.conn_mut(rt.token) else {
            return;
        };
        if conn.client.id != rt.conn_id {
            return;
        }
        conn.out.answered(resp.ran_noted);
        let payload = match resp.payload {
            // WATCH: the versions go to the connection's watch list, the reply is +OK.
            Payload::Versions(vs) => {
                for (i, v) in vs {
                    if let Some(w) = conn.client.watched.get_mut(i as usize) {
                        w.ver = v;
                    }
                }
                Payload::Ok
            }
            p => p,
        };
        // The errors inside an EXEC's array count as the commands' own; a command run whole
        // (`run_whole`) counts its reply's error once, when it goes out.
        let names = match conn.out.slot_mut(rt.seq) {
            Some(super::conn::Slot::Waiting(p)) => match &p.gather {
                super::conn::Gather::Tx {
                    bare: false, names, ..
                } => Some(names.clone()),
                _ => None,
            },
            _ => None,
        };
        let exec = names.is_some();
        if let Some(names) = &names {
            let out = &mut conn.out;
            super::multi::note_errors(&payload, &mut out.errors, &mut out.failed_cmds, names);
        }
        let mut ran = None;
        let mut exec_line = Vec::new();
        if let Some(slot) = conn.out.slot_mut(rt.seq) {
            if exec {
                let (undo, tx_ran, line) = super::dispatch::fill_exec_slot(slot, rt.part, payload);
                exec_line = line;
                ran = tx_ran;
                if let Some(r) = ran.as_mut() {
                    r.note_errors(&mut conn.out);
                }
                if let Some(settings) = undo {
                    conn.client.restore(*settings);
                }
            } else {
                super::dispatch::fill_slot(slot, rt.part, payload);
            }
        }
        let mut tx_lines = exec_line;
        if let Some(r) = ran {
            r.count_calls(&mut self.stats);
            tx_lines = r.monitor;
        }
        if !tx_lines.is_empty()
            && let Some(Some(conn)) = self.conns.get_mut(rt.token - FIRST_CONN)
        {
            super::monitor::release(&mut conn.client, &mut self.monitor_buf, rt.seq, &tx_lines);
        }
        self.mark_conn_dirty(rt.token);
    }

    /// The command of an answer still on its way ran (`Msg::Ran`).
    fn note_ran(&mut self, rt: super::router::ReplyTo) {
        let Some(conn) = self.conn_mut(rt.token) else {
            return;
        };
        if conn.client.id != rt.conn_id {
            return;
        }
        conn.out.ran();
        if conn.out.order_wait && conn.out.unran == 0 {
            self.mark_conn_dirty(rt.token);
        }
    }

    /// Queues work for another worker. Requests carry no durability promise; they go out at
    /// the end of the turn, batched per peer so that a whole pipeline costs one wake-up.
    pub fn send_req(&mut self, worker: usize, req: super::router::Request) {
        debug_assert_ne!(worker, self.id, "local work runs in place");
        self.req_out[worker].push(Msg::Req(req));
    }

    fn has_pending_work(&self) -> bool {
        !self.dirty_parts.is_empty()
            || !self.dirty_conns.is_empty()
            || !self.outbox.is_empty()
            || !self.external_out.is_empty()
            || self.req_out.iter().any(|v| !v.is_empty())
            || !self.nx_out.is_empty()
    }

    // ------------------------------------------------------------ end of turn

    /// Ends an event-loop turn: group commit, then release what is durable.
    ///
    /// Every write of the turn belongs to commit epoch `e`. The turn's records are handed to
    /// the OS (one `write` per partition written). With `fsync = always` they also need an
    /// fsync: that runs on this worker's sync thread as a *flight* covering every partition
    /// written since the last flight, while the worker goes on serving; one flight at a time.
    /// When a flight lands, every epoch up to it is durable and the replies that waited for
    /// it go out. Without fsyncs to wait for, an epoch is durable at the end of its turn.
    pub fn end_turn(&mut self) {
        // Changes no command path published itself, under their generic events.
        self.notify_changes("", false);
        self.place_slow_entries();
        let e = self.epoch;
        self.epoch += 1;
        let journaling = self.journal_tapped();
        let (mut wrote_ok, mut failed) = (false, false);
        // The per-turn lists are drained, not taken, so their allocations serve every turn
        // (kept only if nothing was queued on them meanwhile).
        let mut dirty_parts = std::mem::take(&mut self.dirty_parts);
        for p in dirty_parts.drain(..) {
            self.part_dirty[p as usize] = false;
            if let Some(store) = self.store_mut(p) {
                let written = store.commit_write();
                wrote_ok |= written.is_ok();
                failed |= written.is_err();
                match written {
                    Ok(true) if journaling && store.journal_tap() => self.journal_parts.push(p),
                    Ok(true) => {
                        // A store opened since the journal was (a snapshot installed) gets
                        // its tap now; this turn's records go the direct way.
                        store.set_journal_tap(journaling);
                        store.clear_journal_records();
                        if !self.pending_sync.contains(&p) {
                            self.pending_sync.push(p);
                        }
                    }
                    Ok(false) => store.clear_journal_records(),
                    Err(err) => {
                        store.clear_journal_records();
                        let msg = self.commit_failed(p, &err);
                        self.sync_failed.push((e, e, msg));
                    }
                }
            }
        }
        if self.dirty_parts.is_empty() {
            self.dirty_parts = dirty_parts;
        }
        if wrote_ok && !failed {
            self.stats.commit_failing = false;
        }
        self.stage_journal();
        if self.cluster.is_some() {
            self.feed_followers();
            self.note_turn_waits(e);
            self.commit_solo_leaders();
        }
        // Replies to peers and outside callers: those for writes wait for their epoch.
        // A held answer's command ran: the connection that asked is told now, so that its
        // next command (on another worker) need not wait for this one's fsync or replicas.
        for (worker, mut resp, need) in self.outbox.drain(..) {
            match Hold::of(e, need) {
                None => self.req_out[worker].push(Msg::Resp(resp)),
                Some(h) => {
                    self.req_out[worker].push(Msg::Ran(resp.reply_to));
                    resp.ran_noted = true;
                    self.held_out.push((h, worker, resp));
                }
            }
        }
        for (done, payload, need) in std::mem::take(&mut self.external_out) {
            match Hold::of(e, need) {
                None => done(payload),
                Some(h) => self.held_ext.push((h, done, payload)),
            }
        }
        if self.flight.is_none() {
            if self.owes_sync() {
                self.maybe_start_flight(e);
            } else {
                self.advance_durable(e);
            }
        }
        self.advance_committed();
        self.check_waits();
        self.release_held();
        self.flush_killed();
        self.send_monitor_lines();
        self.send_batches();
        self.merge_steps();
        self.flush_conns();
    }

    /// Connections CLIENT KILL closed this turn are flushed and closed before any reply of
    /// the turn goes out, the CLIENT KILL's own included: as in Redis, a client told that a
    /// connection was killed finds it closed (a killed connection with more output than its
    /// socket takes at once is closed when that is written).
    fn flush_killed(&mut self) {
        if self.killed.is_empty() {
            return;
        }
        let killed = std::mem::take(&mut self.killed);
        let others = std::mem::replace(&mut self.dirty_conns, killed);
        self.flush_conns();
        // The killed connections are among the others too (marked dirty when killed), so one
        // still writing its output is flushed again at the end of the turn; what this flush
        // marked dirty joins them.
        let left = std::mem::replace(&mut self.dirty_conns, others);
        for t in left {
            self.mark_conn_dirty(t);
        }
    }

    /// The turn's MONITOR lines go to every worker with a monitoring connection.
    fn send_monitor_lines(&mut self) {
        if self.monitor_buf.is_empty() {
            return;
        }
        let lines = Arc::new(std::mem::take(&mut self.monitor_buf));
        let workers: Vec<usize> = self.shared.monitors.workers().collect();
        for w in workers {
            if w == self.id {
                self.deliver_monitor_lines(&lines);
            } else {
                self.req_out[w].push(Msg::Monitor(lines.clone()));
            }
        }
    }

    /// MONITOR lines from a worker (this one too), for each monitoring connection: in the
    /// order of its replies (behind those still on their way), none under CLIENT REPLY OFF.
    /// As Redis's output buffer limits (soft and hard) close a client that does not keep up,
    /// a monitor is closed once it has more than 64 MiB unread for 10 s, or 256 MiB: one
    /// large value's line alone (four bytes per byte of binary data) is no reason.
    fn deliver_monitor_lines(&mut self, lines: &[u8]) {
        const LIMIT: StreamLimit = StreamLimit {
            soft: super::conn::MAX_WBUF,
            hard: 4 * super::conn::MAX_WBUF,
            soft_for: Duration::from_secs(10),
            what: "MONITOR",
            push: false,
        };
        let mut behind = Vec::new();
        for &token in &self.monitoring {
            let Some(c) = self
                .conns
                .get_mut(token - FIRST_CONN)
                .and_then(|c| c.as_mut())
                .filter(|c| c.client.monitor && !c.client.closing)
            else {
                continue;
            };
            if !feed_stream(c, &mut self.dirty_conns, token, lines, &LIMIT) {
                behind.push(token);
            }
        }
        for token in behind {
            self.close_conn(token);
        }
    }

    /// The MONITOR line of a command one of this worker's connections ran (`monitor`).
    fn feed_monitors(&mut self, client: &mut Client, args: &[&[u8]]) {
        if super::monitor::shown(args) {
            let mut line = Vec::new();
            let now = std::time::SystemTime::now();
            super::monitor::format_line(&mut line, now, &client.addr, args);
            super::monitor::feed(client, &mut self.monitor_buf, &line);
        }
    }

    /// An EXEC whose transaction runs on: the lines of the connection's next commands wait
    /// for its lines (`monitor::hold`), which come when it finishes.
    fn hold_monitor_lines(client: &mut Client, out: &mut super::conn::Output) {
        let Some(seq) = out.next_seq().checked_sub(1) else {
            return;
        };
        if let Some(super::conn::Slot::Waiting(p)) = out.slot_mut(seq)
            && let super::conn::Gather::Tx {
                missing, monitor, ..
            } = &p.gather
            && *missing > 0
            && !monitor.is_empty()
        {
            super::monitor::hold(client, seq);
        }
    }

    fn send_batches(&mut self) {
        // The turn's group of transactions holds this worker from here (if it is free).
        self.launch_group();
        // Keyspace notifications to other workers' subscribers go before the replies that
        // tell clients their writes ran: a client's next write (on another worker) must not
        // reach a subscriber ahead of the one before it.
        if self.notify.taps_on {
            let first: Vec<usize> = (0..self.req_out.len())
                .filter(|&w| self.req_out[w].iter().any(|m| matches!(m, Msg::Publish(_))))
                .collect();
            for worker in first {
                self.send_batch(worker);
            }
        }
        for worker in 0..self.req_out.len() {
            self.send_batch(worker);
        }
        // An MSETNX step goes out last: a command a connection pipelined before its MSETNX
        // is then in its worker's queue before the step can reach that worker by way of
        // another one (the first send may wake a worker that runs and passes the step on
        // before this loop is done).
        for (worker, req) in std::mem::take(&mut self.nx_out) {
            self.peers[worker].send(Msg::Req(req));
        }
    }

    /// What this turn queued for `worker`, in one message.
    fn send_batch(&mut self, worker: usize) {
        if self.req_out[worker].is_empty() {
            return;
        }
        // The next turn's list starts with room for as many as this one's: one allocation,
        // not a reallocation each time it doubles.
        let n = self.req_out[worker].len();
        let mut batch = std::mem::replace(&mut self.req_out[worker], Vec::with_capacity(n));
        let msg = if batch.len() == 1 {
            batch.pop().unwrap_or(Msg::Batch(Vec::new()))
        } else {
            Msg::Batch(batch)
        };
        self.peers[worker].send(msg);
    }

    /// Starts the next flight unless it is still gathering writes (see `flight_landed`).
    fn maybe_start_flight(&mut self, epoch: u64) {
        if let Some((deadline, target)) = self.gather
            && self.writes_pending < target
            && Instant::now() < deadline
        {
            return;
        }
        self.start_flight(epoch);
    }

    /// Commits go through the journal (its records taps are on).
    pub fn journaling(&self) -> bool {
        self.journal.is_some()
            && self
                .owned
                .iter()
                .any(|&p| self.store(p).is_some_and(|s| s.journal_tap()))
    }

    /// Writes since the last flight left need an fsync (of partition logs or the journal).
    fn owes_sync(&self) -> bool {
        !self.pending_sync.is_empty() || self.journal_pending
    }

    /// Sends the fsyncs owed since the last flight left to the sync thread: the partitions
    /// written directly, and the journal.
    fn start_flight(&mut self, epoch: u64) {
        self.gather = None;
        self.flight_started = Instant::now();
        self.flight_writes = std::mem::take(&mut self.writes_pending);
        self.flight_resets = self.journal_resets;
        let parts = std::mem::take(&mut self.pending_sync);
        let tickets = self.tickets_for(parts);
        let journal = match self.journal.as_mut() {
            Some(j) if std::mem::take(&mut self.journal_pending) => Some(j.sync_ticket()),
            _ => None,
        };
        let job = SyncJob {
            epoch,
            tickets,
            journal,
            checkpoint: None,
        };
        self.flight = Some(epoch);
        if let Err(crossbeam_channel::SendError(job)) = self.sync_tx.send(job) {
            // The sync thread never stops before its worker; should it be gone, fsync here.
            let (results, journal) = job.run();
            self.flight_landed(epoch, results, journal);
        }
    }

    fn tickets_for(&self, parts: Vec<u32>) -> Vec<(u32, SyncTicket)> {
        parts
            .into_iter()
            .filter_map(|p| self.store(p).map(|s| (p, s.sync_ticket())))
            .collect()
    }

    /// After a journal switch: fsyncs, on the checkpoint thread, every partition log with
    /// records not fsynced yet (all written to the OS before the switch), while commit flights
    /// go on fsyncing only the journal. When it lands the file left behind may be reused.
    fn start_checkpoint(&mut self) {
        let Some(seq) = self.journal.as_ref().map(|j| j.seq()) else {
            return;
        };
        // Each log on a descriptor of its own (see `Store::sync_ticket_own_fd`), and no
        // `syncfs`: a checkpoint must see every writeback error of the files it vouches for.
        let mut tickets = Vec::new();
        for &p in &self.owned {
            let Some(s) = self.store(p).filter(|s| s.has_unsynced()) else {
                continue;
            };
            match s.sync_ticket_own_fd() {
                Ok(t) => tickets.push((p, t)),
                Err(e) => {
                    // Without the fsync the file left behind stays as it is (see
                    // `checkpoint_landed`).
                    error!("partition {p}: journal checkpoint cannot start: {e}");
                    return;
                }
            }
        }
        let job = SyncJob {
            epoch: 0,
            tickets,
            journal: None,
            checkpoint: Some(seq),
        };
        let tx = self.ckpt_tx.get_or_insert_with(|| {
            spawn_sync_thread(format!("skv-ckpt-{}", self.id), self.peers[self.id].clone())
        });
        if let Err(crossbeam_channel::SendError(job)) = tx.send(job) {
            let (results, _) = job.run();
            self.checkpoint_landed(seq, results);
        }
    }

    /// Whether an owned partition's store has failed (a write or fsync error: it refuses
    /// writes until reloaded).
    fn a_store_failed(&self) -> bool {
        self.owned
            .iter()
            .any(|&p| self.store(p).is_some_and(|s| s.is_failed()))
    }

    /// A checkpoint landed: record the fsyncs; if all of them worked, the journal file left by
    /// the switch holds nothing the logs lack. If one failed, that file stays as it is (its
    /// frames replay at the next start) and commits fsync partition logs directly once the
    /// active file is full.
    fn checkpoint_landed(&mut self, seq: u64, results: Vec<(u32, SyncTicket, io::Result<()>)>) {
        let mut all_ok = true;
        for (p, t, r) in results {
            if let Some(s) = self.store_mut(p)
                && let Err(err) = s.sync_done(&t, r)
            {
                all_ok = false;
                // A failed fsync may have reloaded the store and dropped writes of this very
                // turn: every reply not yet durable gets the error.
                self.fail_undurable(p, &format!("journal checkpoint: {err}"));
            }
        }
        // A store failed earlier (its fsync error taken by another fsync of the same file)
        // vouches for nothing either.
        all_ok &= !self.a_store_failed();
        if !all_ok {
            if !self.journal_pinned {
                error!(
                    "worker {}: a partition log fsync failed; the commit journal keeps every frame until a restart replays it",
                    self.id
                );
            }
            self.journal_pinned = true;
            return;
        }
        if let Some(j) = self.journal.as_mut() {
            j.checkpointed(seq);
            self.stats.journal_checkpoints += 1;
        }
    }

    /// Copies the records of this turn's `journal_parts` into the journal and writes them to
    /// it (one `pwrite`); the next flight fsyncs the journal instead of those partitions' logs.
    ///
    /// When a partition's records do not fit (`Staged::NoRoom`: a record bigger than a
    /// journal file, or both files full while a checkpoint is still under way) every log is
    /// fsynced here and the journal starts over. Only fsyncing that partition's log would leave
    /// journaled records of the same log below records that are in no journal: at the next
    /// start a damaged byte among the former is cut away as a torn write (the journal replays
    /// what it has), which would silently drop the latter, acknowledged. With every frame
    /// retired, damage there is reported as damage.
    fn stage_journal(&mut self) {
        if self.journal_parts.is_empty() {
            return;
        }
        let parts = std::mem::take(&mut self.journal_parts);
        let Some(j) = self.journal.as_mut() else {
            self.pending_sync.extend(parts);
            return;
        };
        let mut outcome = Ok(());
        let mut staged = 0;
        // The journal switched files: every partition log must be fsynced (a checkpoint, see
        // `start_checkpoint`) before the file left behind may be reused.
        let mut switched = false;
        let mut no_room = false;
        for &p in &parts {
            let Some(store) = self.stores.get_mut(p as usize).and_then(|s| s.as_mut()) else {
                continue;
            };
            if outcome.is_ok() && !store.journal_records().is_empty() {
                match j.stage(p, store.journal_records()) {
                    Ok(Staged::Staged) => staged += 1,
                    Ok(Staged::Switched) => {
                        staged += 1;
                        switched = true;
                    }
                    Ok(Staged::NoRoom) => {
                        self.stats.journal_direct_syncs += 1;
                        no_room = true;
                        if !self.pending_sync.contains(&p) {
                            self.pending_sync.push(p);
                        }
                    }
                    Err(e) => outcome = Err(e),
                }
            }
            store.clear_journal_records();
        }
        // Not with a store failed (its fsync error would fail every reply of the turn again)
        // or the journal pinned (it may hold the only copy of records): the records are
        // fsynced in their log, as before.
        if no_room && outcome.is_ok() && self.sync_logs_and_restart_journal() {
            // Every record written so far is in a synced log. This turn's partitions still
            // go to the next flight (fsyncs with nothing left to write), which releases their
            // replies in order with the flights before it.
            for p in parts {
                if !self.pending_sync.contains(&p) {
                    self.pending_sync.push(p);
                }
            }
            return;
        }
        if outcome.is_ok() {
            outcome = self.journal.as_mut().map_or(Ok(()), |j| j.write());
        }
        match outcome {
            Ok(()) => {
                self.journal_pending |= staged > 0;
                if switched {
                    self.start_checkpoint();
                }
            }
            Err(e) => self.journal_failed(&e),
        }
    }

    /// Fsyncs every partition log, then gives the journal new headers, so that none of its
    /// frames replays any more: records of a log that are in no journal (a turn that did not
    /// fit; writes while fsync was not always) must not lie above records of it that are, or
    /// damage below them would be cut at the next start as a torn write the replay mends.
    /// Not while a store has failed (its fsync error would fail every reply again) or the
    /// journal is pinned (it may hold the only copy of records). A failed fsync fails the
    /// replies not yet out and pins the journal: its frames stay until a restart replays them.
    fn sync_logs_and_restart_journal(&mut self) -> bool {
        if self.journal.is_none() || self.journal_pinned || self.a_store_failed() {
            return false;
        }
        if !self.sync_all_logs() {
            self.journal_pinned = true;
            return false;
        }
        self.journal_resets += 1;
        if let Err(e) = self.journal.as_mut().map_or(Ok(()), |j| j.reset()) {
            self.journal_failed(&e);
        }
        true
    }

    /// Gives up the journal after an error: fsyncs every partition log (so nothing the
    /// journal held is needed any more), then removes its files. Commits fsync the logs
    /// directly from now on.
    fn journal_failed(&mut self, e: &JournalError) {
        error!(
            "worker {}: commit journal failed ({e}); fsyncing partition logs directly from now on",
            self.id
        );
        self.journal_broken = true;
        self.journal_pending = false;
        let Some(j) = self.journal.take() else {
            return;
        };
        let all_synced = self.sync_all_logs();
        for p in self.owned.clone() {
            if let Some(s) = self.store_mut(p) {
                s.set_journal_tap(false);
            }
        }
        self.journal_pinned |= !all_synced;
        if all_synced && let Err(e) = j.discard() {
            warn!("worker {}: removing the commit journal: {e}", self.id);
        }
    }

    /// fsyncs every owned partition log now, on this thread. A failure fails the replies not
    /// yet durable. Returns whether every fsync succeeded.
    fn sync_all_logs(&mut self) -> bool {
        let mut ok = true;
        for p in self.owned.clone() {
            let Some(Err(err)) = self.store_mut(p).map(|s| s.sync()) else {
                continue;
            };
            ok = false;
            self.fail_undurable(p, &err);
        }
        ok
    }

    /// Before a partition log is cut back (or replaced): fsyncs every log and restarts the
    /// journal, so that none of the records it holds can be replayed onto the shorter log at
    /// the next start, whenever a crash comes. An error means the cut must not happen now.
    pub fn prepare_log_cut(&mut self) -> Result<(), String> {
        if self.journal_opening {
            return Err("the commit journal is being created; try again".into());
        }
        if self.journal_pinned {
            return Err(
                "a partition log fsync failed and the commit journal may hold the only \
                 copy of acknowledged writes; restart the server to replay it"
                    .into(),
            );
        }
        const NOT_SYNCED: &str = "cannot fsync the partition logs before cutting one back";
        if self.journal.is_some() {
            if !self.sync_all_logs() {
                // The journal may hold the only durable copy of records: keep it as it is.
                return Err(NOT_SYNCED.into());
            }
            match self.journal.as_mut().map_or(Ok(()), |j| j.reset()) {
                Ok(()) => return Ok(()),
                // Gives the journal up: its files go once every log is fsynced.
                Err(e) => self.journal_failed(&e),
            }
        }
        // Files a journal given up left behind must be durably gone first.
        let dir = self.config.storage.dir.join(journal::JOURNAL_DIR);
        if (0..2).any(|i| journal::journal_path(&dir, self.id as u32, i).exists()) {
            if !self.sync_all_logs() {
                return Err(NOT_SYNCED.into());
            }
            journal::remove_worker_files(&dir, self.id as u32)
                .map_err(|e| format!("the commit journal cannot be removed: {e}"))?;
        }
        Ok(())
    }

    /// Opens the journal when the configuration asks for one (fsync = always and
    /// `storage.journal_size` > 0) and turns the partitions' record taps on or off to match.
    /// Called at start and when the configuration changes at run time.
    ///
    /// At start (`blocking`) the journal is opened here, before the worker serves. At run time
    /// a thread creates it (writing 2 × `journal_size` of zeros the first time would stall
    /// the worker) and commits fsync the logs directly until it is ready.
    pub fn configure_journal(&mut self, blocking: bool) {
        let want = self.journal_wanted();
        if want && self.journal.is_none() && !self.journal_opening {
            let dir = self.config.storage.dir.join(journal::JOURNAL_DIR);
            let (id, size) = (self.id as u32, self.config.storage.journal_size);
            if blocking {
                return self.journal_opened(Journal::open(&dir, id, size));
            }
            let me = self.peers[self.id].clone();
            let spawned = std::thread::Builder::new()
                .name(format!("skv-jopen-{id}"))
                .spawn(move || {
                    me.send(Msg::JournalOpened(Journal::open(&dir, id, size)));
                });
            match spawned {
                Ok(_) => self.journal_opening = true,
                Err(e) => {
                    error!("worker {id}: cannot start a thread to open the commit journal: {e}");
                    self.journal_broken = true;
                }
            }
        }
        self.apply_journal_taps();
    }

    fn journal_wanted(&self) -> bool {
        self.config.storage.journal_size > 0
            && durability_of(&self.config) == Durability::Always
            && !self.journal_broken
    }

    /// Commits go through the journal: it is open and fsync is always.
    fn journal_tapped(&self) -> bool {
        self.journal.is_some() && self.journal_wanted()
    }

    fn journal_opened(&mut self, r: Result<Journal, JournalError>) {
        self.journal_opening = false;
        match r {
            Ok(j) => self.journal = Some(j),
            Err(e) => {
                error!(
                    "worker {}: cannot open the commit journal ({e}); fsyncing partition logs directly",
                    self.id
                );
                self.journal_broken = true;
            }
        }
        self.apply_journal_taps();
    }

    /// Turns the partitions' record taps on when commits go through the journal, off otherwise.
    fn apply_journal_taps(&mut self) {
        let tap = self.journal_tapped();
        // Without fsync = always the journal stays open but idle, to be used again if always
        // comes back. Its frames go now, once every log is fsynced: records written in the
        // meantime are in no journal, and frames left below them would make damage among them
        // pass for a torn write at the next start (see `sync_logs_and_restart_journal`).
        let turned_off = !tap
            && self
                .owned
                .iter()
                .any(|&p| self.store(p).is_some_and(|s| s.journal_tap()));
        if turned_off {
            self.sync_logs_and_restart_journal();
        }
        // Records a log has not fsynced when its tap turns on (written under another fsync
        // policy, or by the process before this one: at start a log counts as unsynced) are
        // in no journal: they are fsynced here, before any frame can reach the disk above
        // them. Otherwise writeback could persist frames while a power cut loses the log's
        // tail below them, and the next start would refuse the gap between the two.
        let mut failed = Vec::new();
        for p in self.owned.clone() {
            if let Some(s) = self.store_mut(p) {
                if tap
                    && !s.journal_tap()
                    && s.has_unsynced()
                    && let Err(e) = s.sync()
                {
                    failed.push((p, e));
                }
                s.set_journal_tap(tap);
            }
        }
        for (p, err) in failed {
            self.fail_undurable(p, &err);
        }
    }

    /// A flight landed: record the outcome, make its epochs durable, start the next one.
    ///
    /// The next flight does not leave at once: the replies this one releases go to clients
    /// that answer with their next writes within a round trip, and a flight leaving now
    /// would make all of them wait for it to land and then for their own (about two fsyncs
    /// each, as clients of a blocking fsync-per-loop server wait). It gathers until as many
    /// writes are pending as this flight carried plus those already waiting, or for half the
    /// flight's duration (20 µs to 1 ms), whichever comes first: the clients then share one
    /// fsync, the way PostgreSQL's `commit_delay` lets sibling transactions join a flush.
    fn flight_landed(
        &mut self,
        epoch: u64,
        results: Vec<(u32, SyncTicket, io::Result<()>)>,
        journal: Option<Result<(), JournalError>>,
    ) {
        let took = self.flight_started.elapsed();
        if self.durability() == simplekv_engine::Durability::Always {
            self.latency_spike("aof-fsync-always", took);
        }
        let first = self.durable + 1;
        // A journal restart since this flight left fsynced the logs on their shared file
        // descriptors: a writeback error this flight took was not seen there, and the frames
        // the restart retired may hold turns the logs lack. Every reply not yet out fails,
        // and the journal keeps its frames until a restart replays them.
        let upto = if self.journal_resets != self.flight_resets {
            self.epoch
        } else {
            epoch
        };
        for (p, t, r) in results {
            if let Some(s) = self.store_mut(p)
                && let Err(err) = s.sync_done(&t, r)
            {
                let msg = self.commit_failed(p, &err);
                self.sync_failed.push((first, upto, msg));
                self.journal_pinned |= upto != epoch;
            }
        }
        self.flight = None;
        if let Some(Err(err)) = journal {
            let msg = format!("ERR write to the commit journal failed: {err}");
            self.stats.commit_errors += 1;
            self.stats.commit_failing = true;
            self.stats.last_commit_error = Some(err.to_string());
            self.sync_failed.push((first, epoch, msg));
            self.journal_failed(&err);
        }
        self.advance_durable(epoch);
        if !self.owes_sync() {
            // Turns since the flight left wrote nothing that needs an fsync.
            self.advance_durable(self.epoch - 1);
        } else {
            let wait = (took / 2).clamp(Duration::from_micros(20), Duration::from_millis(1));
            self.gather = Some((
                Instant::now() + wait,
                self.writes_pending + self.flight_writes,
            ));
            self.maybe_start_flight(self.epoch - 1);
        }
        self.advance_committed();
        self.release_held();
        self.send_batches();
    }

    fn advance_durable(&mut self, epoch: u64) {
        if epoch <= self.durable {
            return;
        }
        self.durable = epoch;
        self.wake_durable_waiters();
        // Failures far behind every reply still queued are of no use any more.
        let horizon = self.durable.saturating_sub(1 << 20);
        self.sync_failed.retain(|(_, hi, _)| *hi >= horizon);
    }

    fn wake_durable_waiters(&mut self) {
        for t in std::mem::take(&mut self.durable_waiters) {
            if let Some(c) = self.conn_mut(t) {
                c.client.waits_durable = false;
            }
            self.mark_conn_dirty(t);
        }
    }

    /// Recomputes the committed epoch: durable, and (cluster mode) covered by the high
    /// watermarks its replies wait on. Turns whose waits failed get their error recorded.
    pub fn advance_committed(&mut self) {
        let last_ended = self.epoch - 1;
        let repl = match self.cluster.as_mut() {
            None => u64::MAX,
            Some(c) => {
                let failed = c.advance(last_ended, Instant::now());
                for (e, msg) in failed {
                    self.sync_failed.push((e, e, msg));
                }
                self.cluster.as_ref().map_or(u64::MAX, |c| c.repl_committed)
            }
        };
        let committed = self.durable.min(repl);
        if committed > self.committed {
            self.committed = committed;
            self.wake_durable_waiters();
        }
    }

    fn error_for(&self, epoch: u64) -> Option<String> {
        self.sync_failed
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&epoch))
            .map(|(_, _, m)| m.clone())
    }

    /// Sends responses and calls callbacks whose epoch is durable.
    fn release_held(&mut self) {
        let rel = Released {
            durable: self.durable,
            committed: self.committed,
            failed: &[],
        };
        if self.held_out.iter().any(|(h, ..)| h.ready(&rel)) {
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_out)
                .into_iter()
                .partition(|(h, ..)| h.ready(&rel));
            self.held_out = wait;
            for (h, worker, mut resp) in ready {
                if let Some(f) = self.error_for(h.epoch) {
                    resp.payload = Payload::Err(f);
                }
                self.req_out[worker].push(Msg::Resp(resp));
            }
        }
        if self.held_ext.iter().any(|(h, ..)| h.ready(&rel)) {
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_ext)
                .into_iter()
                .partition(|(h, ..)| h.ready(&rel));
            self.held_ext = wait;
            for (h, done, payload) in ready {
                match self.error_for(h.epoch) {
                    Some(f) => done(Payload::Err(f)),
                    None => done(payload),
                }
            }
        }
    }

    /// A write to partition `p`'s log failed outside a flight: every reply not durable yet
    /// gets the error.
    fn fail_undurable(&mut self, p: u32, e: &dyn std::fmt::Display) {
        let msg = self.commit_failed(p, e);
        self.sync_failed.push((self.durable + 1, self.epoch, msg));
    }

    fn commit_failed(&mut self, p: u32, e: &dyn std::fmt::Display) -> String {
        let msg = format!("ERR write to the log failed: {e}");
        error!("partition {p}: {msg}");
        self.stats.commit_errors += 1;
        self.stats.commit_failing = true;
        self.stats.last_commit_error = Some(e.to_string());
        msg
    }

    fn flush_conns(&mut self) {
        const DEFER_MAX: usize = 16 << 10;
        let mut dirty = std::mem::take(&mut self.dirty_conns);
        let mut resume = Vec::new();
        let mut waiters = Vec::new();
        for token in dirty.drain(..) {
            let Some(conn) = self
                .conns
                .get_mut(token - FIRST_CONN)
                .and_then(|c| c.as_mut())
            else {
                continue;
            };
            conn.client.in_dirty_list = false;
            conn.out.drain_slots(&Released {
                durable: self.durable,
                committed: self.committed,
                failed: &self.sync_failed,
            });
            if conn.out.waits_durable() && !conn.client.waits_durable {
                conn.client.waits_durable = true;
                waiters.push(token);
            }
            self.stats.take_errors(&mut conn.out);
            let before = conn.out.wbuf.len() - conn.out.wpos;
            // A connection whose next command waits for single-key commands in flight to run
            // (or whose wait just ended: it goes on below) writes its replies once its run
            // of commands stops for another reason or DEFER_MAX bytes are queued: a write per
            // hop between workers cost more than the hops. (Redis too writes a client's
            // replies once per event-loop turn, after running all the commands of one read.)
            // Not while it waits for anything slower (a WAIT, a command over several
            // workers) or is frozen by a hold: its ready replies go out as in Redis.
            let defer = conn.out.order_wait
                && conn.out.order_to.is_some()
                && before < DEFER_MAX
                && !conn.client.closing
                && !conn.client.frozen;
            let ok = !conn.client.dead && (defer || conn.flush());
            let sent = before - (conn.out.wbuf.len() - conn.out.wpos);
            // Ask for writability only while output is stuck in the socket: registered all the
            // time, every ACK would wake the worker for nothing.
            let want_write = if defer {
                conn.client.want_write
            } else {
                ok && conn.out.has_output()
            };
            if want_write != conn.client.want_write {
                let interest = if want_write {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if self
                    .poll
                    .registry()
                    .reregister(&mut conn.sock, Token(token), interest)
                    .is_ok()
                {
                    conn.client.want_write = want_write;
                }
            }
            let gone = !ok || (conn.client.dead && conn.out.slots.is_empty());
            // After EOF nothing more will come: close once the input is used up (a paused
            // connection still has commands to run) and every reply is written.
            let input_done = conn.client.eof && !conn.client.paused && !conn.client.frozen;
            let closing_done = (conn.client.closing || input_done) && conn.out.finished();
            if conn.client.paused && !conn.client.postponed && !conn.out.blocked() {
                conn.client.paused = false;
                resume.push(token);
            }
            self.stats.net_out += sent as u64;
            self.stats.writes += u64::from(sent > 0);
            if gone || closing_done {
                self.close_conn(token);
            }
        }
        if self.dirty_conns.is_empty() {
            self.dirty_conns = dirty;
        }
        self.durable_waiters.extend(waiters);
        // Connections that stopped reading because too much was queued: carry on. What they
        // produce is released by the next turn, which polls without waiting.
        for token in resume {
            self.process_input(token);
            self.on_readable(token);
        }
    }

    // --------------------------------------------------------------- timers

    fn cron(&mut self) {
        self.last_cron = Instant::now();
        let s = &self.stats;
        for (r, v) in self.rates.iter_mut().zip([s.commands, s.net_in, s.net_out]) {
            r.sample(self.last_cron, v);
        }
        self.active_expire();
        let mut hint_jobs = Vec::new();
        let mut syncs = Vec::new();
        let worker = self.id;
        for p in self.owned.clone() {
            let Some(store) = self.store_mut(p) else {
                continue;
            };
            match store.take_background_sync() {
                Ok(Some(ticket)) => syncs.push(Job::Sync {
                    worker,
                    partition: p,
                    ticket,
                }),
                Ok(None) => {}
                Err(e) => error!("partition {p}: write before the background fsync failed: {e}"),
            }
            hint_jobs.extend(store.take_hint_jobs());
        }
        for j in syncs {
            self.maint.send(j);
        }
        for j in hint_jobs {
            self.maint.send(Job::Hint(j));
        }
        self.maybe_merge();
        self.close_idle();
        self.drop_moved_shard_channels();
        self.write_points_in_background();
        self.retry_leadership();
    }

    /// How far each owned partition's log is known to be fsynced (see
    /// `simplekv_engine::points`).
    fn recovery_points(&self) -> Vec<RecoveryPoint> {
        self.owned
            .iter()
            .filter_map(|&partition| {
                let (file_id, synced) = self.store(partition)?.synced_point()?;
                Some(RecoveryPoint {
                    partition,
                    file_id,
                    synced,
                })
            })
            .collect()
    }

    fn points_dir(&self) -> PathBuf {
        self.config.storage.dir.join(points::POINTS_DIR)
    }

    /// Every `POINTS_INTERVAL` at most, when a log was fsynced further (or cut, or replaced),
    /// the maintenance fsync thread replaces this worker's recovery points file. Damage below
    /// the points is refused at the next start instead of being cut as a torn write; records
    /// fsynced since the last write are judged by their bytes alone, as without points.
    fn write_points_in_background(&mut self) {
        const POINTS_INTERVAL: Duration = Duration::from_secs(2);
        if self.points_busy || Instant::now() < self.points_due {
            return;
        }
        let points = self.recovery_points();
        if points == self.points_sent {
            return;
        }
        self.points_due = Instant::now() + POINTS_INTERVAL;
        let job = Job::Points {
            worker: self.id,
            dir: self.points_dir(),
            points: points.clone(),
        };
        if self.maint.send(job) {
            self.points_busy = true;
            self.points_sent = points;
        }
    }

    fn points_written(&mut self, r: io::Result<()>) {
        self.points_busy = false;
        match r {
            Ok(()) => {
                if std::mem::take(&mut self.points_failing) {
                    info!("worker {}: recovery points written again", self.id);
                }
            }
            Err(e) => {
                // Written again at the next chance.
                self.points_sent.clear();
                if !std::mem::replace(&mut self.points_failing, true) {
                    warn!(
                        "worker {}: cannot write the recovery points in {}: {e}; damage to fsynced records may be taken for a torn write at the next start until they are written",
                        self.id,
                        self.points_dir().display()
                    );
                }
            }
        }
    }

    /// Redis-style active expiry: sample keys with a TTL, delete the expired ones (logged as
    /// tombstones), repeat while a quarter of the sample was expired, within a time budget.
    pub(super) fn active_expire(&mut self) {
        // Not while this worker holds for a command over several workers: a transaction
        // runs at the time of its EXEC on each (`multi::at_time`), so a key it set or reads
        // may have expired by the clock since and must still be there; it runs once the hold
        // ends (`msetnx::nx_release`).
        if self.nx.is_some() {
            self.expire_due = true;
            return;
        }
        // CLIENT PAUSE: a tombstone is a write (Redis, too, expires nothing while paused).
        if self.shared.pause.mode().is_some() {
            return;
        }
        let effort = self.config.storage.active_expire_effort.max(1) as usize;
        let samples = 20 + 5 * (effort - 1);
        let budget = Duration::from_micros(1000 + 250 * (effort as u64 - 1));
        let start = Instant::now();
        // Cluster mode: only leaders expire keys (their tombstones replicate); a follower
        // never deletes on its own clock.
        for p in self.served() {
            // Found by a black-box run: on a full disk every partition tried (and logged the
            // failure) at every tick.
            if !self.expire_retry[p as usize].allows(start) {
                continue;
            }
            while let Some(store) = self.store_mut(p) {
                if store.stats().keys_with_expiry == 0 {
                    break;
                }
                let batch = store.expired_batch(samples);
                let n = batch.len();
                let mut deleted = 0u64;
                let mut failed = None;
                for k in &batch {
                    match store.delete(k) {
                        Ok(_) => deleted += 1,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if deleted > 0 {
                    self.stats.expired_keys += deleted;
                    self.mark_dirty(p);
                }
                if let Some(e) = failed {
                    let wait = self.expire_retry[p as usize].failed(start);
                    warn!(
                        "partition {p}: active expiry could not delete a key: {e}; next try in {} s at the earliest",
                        wait.as_secs()
                    );
                    break;
                }
                self.expire_retry[p as usize] = Backoff::default();
                if n * 4 < samples || start.elapsed() >= budget {
                    break;
                }
            }
            if start.elapsed() >= budget {
                break;
            }
        }
        self.latency_spike("expire-cycle", start.elapsed());
        self.notify_changes("expired", false);
    }

    fn maybe_merge(&mut self) {
        let ratio = self.config.storage.merge_dead_ratio;
        let min = self.config.storage.merge_min_bytes;
        // Near the free space floor (less than twice it free) a merge is what keeps writes
        // going, or lets them resume: any worthwhile share of dead bytes will do, whatever
        // the log's size, in every partition of the worker (found by a black-box run: with
        // merges only once under the floor, steady overwrites of a few keys had writes
        // refused two thirds of the time while nine tenths of the log were dead). Asked of
        // the file system at every check, so that it also holds after a restart or with no
        // writes coming.
        let floor = self.config.storage.min_free_space;
        let low = floor > 0
            && simplekv_engine::free_space(&self.config.storage.dir)
                .is_some_and(|free| free < floor.saturating_mul(2));
        let (min, ratio) = if low {
            (0, ratio.min(LOW_DISK_MERGE_RATIO))
        } else {
            (min, ratio)
        };
        let standalone = self.cluster.is_none();
        let due = |total: u64, dead: u64| {
            total >= min && total > 0 && dead as f64 / total as f64 >= ratio
        };
        for p in self.owned.clone() {
            if self.merge_busy[p as usize] {
                continue;
            }
            // Near the floor, one merge at a time per worker (until its inputs are unmapped,
            // their space is not free): each is sized to the free space (`start_merge`),
            // and two at once would not fit.
            if low && self.owned.iter().any(|&q| self.merging(q)) {
                break;
            }
            // Found by a black-box run: on a full disk every partition started a merge (and
            // logged it, and its failure) ten times a second.
            if !self.merge_retry[p as usize].allows(Instant::now()) {
                continue;
            }
            let Some(store) = self.store_mut(p) else {
                continue;
            };
            if store.merge_in_progress() {
                continue;
            }
            // Dead bytes in the active segment (overwrites, and the tombstones without which
            // a merge must keep the deleted values they hide) are out of a merge's reach:
            // near the floor the segment is closed for them, as BGREWRITEAOF does, when it
            // holds many or when a merge is due anyway (found by a black-box run: with the
            // tombstones of most keys in the active segment, merges copied the deleted values
            // and never had room). (Standalone: a follower's segments follow its leader's
            // batches.)
            let (active, active_dead) = store.active_stats();
            let (total, dead) = store.closed_stats();
            let many =
                active_dead >= LOW_DISK_ROLL_MIN && active_dead as f64 >= active as f64 * ratio;
            if low
                && standalone
                && active_dead > 0
                && (due(total, dead) || many)
                && let Err(e) = store.roll()
            {
                let wait = self.merge_retry[p as usize].failed(Instant::now());
                warn!(
                    "partition {p}: closing the log's active segment to merge it failed: {e}; next try in {} s at the earliest",
                    wait.as_secs()
                );
                continue;
            }
            let Some(store) = self.store_mut(p) else {
                continue;
            };
            let (total, dead) = store.closed_stats();
            // A merge that freed nothing is not tried again until the closed segments change
            // (a roll, or another merge). Their dead bytes alone may keep growing without a
            // merge being able to free them: a key deleted (or overwritten) after its value
            // was closed is dead, but its tombstone sits in the active segment, outside the
            // merge; and the merge's own moves count as dead only after it is installed. Keyed
            // on the dead bytes as well, a large DEL had the same segments rewritten forever.
            if self.merge_futile[p as usize] == Some(total) {
                continue;
            }
            if due(total, dead) {
                self.start_merge(p);
            }
        }
    }

    /// A merge of the partition is out or being installed (its inputs' space is not free
    /// until it is done).
    pub fn merging(&self, p: u32) -> bool {
        self.merge_busy[p as usize] || self.store(p).is_some_and(|s| s.merge_in_progress())
    }

    /// Starts a background merge of a partition's closed segments.
    pub fn start_merge(&mut self, p: u32) -> bool {
        if self.merge_busy[p as usize] {
            // A job is out (perhaps for a store since replaced): its result comes first.
            return false;
        }
        if self.staged_copy[p as usize].is_some() {
            // A copy of the leader's log is staged to replace this one: a merge job out at
            // the install would have the copy thrown away.
            return false;
        }
        let id = self.id;
        // Cluster mode: merge only what every in-sync replica has (records above the high
        // watermark may still be cut by a leader change), and keep tombstones a follower that
        // is behind may still need (the horizon).
        let horizon = match self.cluster.as_ref() {
            None => u64::MAX,
            Some(c) => {
                let r = &c.parts[p as usize];
                if self.store(p).is_none_or(|s| s.active_base() > r.hw) {
                    return false;
                }
                // A replica outside the ISR (down, or catching up) still needs the tombstones
                // above its position: the leader knows every replica's position and sends a
                // follower its horizon with the records, so both drop the same tombstones.
                // A follower's store is a replica's: it never drops expired values itself.
                // The horizon is 0 from every role change until the leader (or, leading, this
                // node's replication driver) sets it, so an idle partition keeps them all.
                r.hw.min(r.horizon)
            }
        };
        // A merge writes the live data of the segments it takes again (and their hint files,
        // counted as much again) before it deletes them: on a nearly full disk, only as many
        // of the oldest as the free space takes, keeping half the floor for deletes (with
        // more live data than free space, every merge failed for want of space, and the
        // dead bytes stayed). Each worker may have one merge writing at a time: a share each.
        let workers = self.peers.len().max(1) as u64;
        let live = simplekv_engine::free_space(&self.config.storage.dir).map_or(u64::MAX, |f| {
            f.saturating_sub(self.config.storage.min_free_space / 2) / 2 / workers
        });
        let Some(store) = self.store_mut(p) else {
            return false;
        };
        match store.start_merge_within(horizon, live) {
            Ok(Some(job)) => {
                info!("partition {p}: merging closed segments in the background");
                self.merge_busy[p as usize] = true;
                if !self.maint.send(Job::Merge {
                    worker: id,
                    partition: p,
                    job,
                }) {
                    self.merge_busy[p as usize] = false;
                    if let Some(s) = self.store_mut(p) {
                        s.abort_merge();
                    }
                    return false;
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                debug!("partition {p}: merge not started: {e}");
                false
            }
        }
    }

    fn merge_done(
        &mut self,
        p: u32,
        result: Result<simplekv_engine::MergeOutput, simplekv_engine::MergeError>,
    ) {
        self.merge_busy[p as usize] = false;
        let Some(store) = self.store_mut(p) else {
            return;
        };
        match result {
            Ok(out) => {
                let stats = out.stats;
                match store.install_merge(out) {
                    Ok(()) => {
                        let futile = (stats.output_bytes >= stats.input_bytes)
                            .then(|| store.closed_stats().0);
                        self.stats.merges_done += 1;
                        self.merge_futile[p as usize] = futile;
                        self.merge_retry[p as usize] = Backoff::default();
                        info!(
                            "partition {p}: merge installed ({} -> {} bytes, {} -> {} records)",
                            stats.input_bytes,
                            stats.output_bytes,
                            stats.records_in,
                            stats.records_out
                        );
                    }
                    Err(e) => warn!("partition {p}: merge not installed: {e}"),
                }
            }
            Err(e) => {
                store.abort_merge();
                let wait = self.merge_retry[p as usize].failed(Instant::now());
                warn!(
                    "partition {p}: merge failed: {e}; next try in {} s at the earliest",
                    wait.as_secs()
                );
            }
        }
    }

    /// Moves merged keys a bounded number at a time (about a millisecond of work).
    pub fn merge_steps(&mut self) {
        for p in self.owned.clone() {
            if self.merge_busy[p as usize] {
                continue;
            }
            if let Some(s) = self.store_mut(p)
                && s.merge_in_progress()
            {
                let start = Instant::now();
                s.merge_step(4096);
                self.latency_spike("merge-cycle", start.elapsed());
            }
        }
    }

    /// The latency monitor: `took` is a spike of `event` if it reaches the threshold.
    pub(super) fn latency_spike(&mut self, event: &'static str, took: Duration) {
        let threshold = self.config.server.latency_monitor_threshold;
        let ms = took.as_millis() as u64;
        if threshold > 0 && ms >= threshold {
            let now = simplekv_engine::system_clock() / 1000;
            self.stats
                .latency_events
                .add_if_needed(threshold, event, ms, now);
        }
    }

    fn close_idle(&mut self) {
        let Some(idle) = self.config.server.idle_timeout() else {
            return;
        };
        let stale: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                // A monitor only reads (Redis does not time out its replicas either), nor
                // does a subscriber (Redis does not time out pub/sub clients).
                // Nor one stopped by CLIENT PAUSE (Redis does not time out blocked clients).
                (c.out.slots.is_empty()
                    && !c.client.monitor
                    && !c.client.postponed
                    && c.client.subs.is_none()
                    && c.client.last_active.elapsed() > idle)
                    .then_some(i + FIRST_CONN)
            })
            .collect();
        for t in stale {
            self.close_conn(t);
        }
    }

    // ------------------------------------------------------------- shutdown

    /// How long a node that resigned its leaderships still answers after it stops accepting.
    const RESIGNED_GRACE: Duration = Duration::from_millis(100);

    /// One step of a clean shutdown; true when this worker may exit.
    fn shutdown_step(&mut self) -> bool {
        if !self.draining {
            self.draining = true;
            self.drain_started = Instant::now();
            self.shutdown_deadline = Some(Instant::now() + self.config.server.shutdown_timeout());
            if !self.ignores_input() {
                // Connections waiting in the accept queue would be reset when the listener
                // closes, their commands unanswered: they are taken in (here, not handed to a
                // worker that may be about to exit) and answered first.
                self.accept_all_here();
            }
            if let Some(mut l) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
            self.drop_postponed();
        }
        let busy = self.conns.iter().flatten().any(|c| {
            c.out
                .slots
                .iter()
                .any(|s| matches!(s, super::conn::Slot::Waiting(_) | super::conn::Slot::Remote))
        }) || self.flight.is_some()
            || !self.held_out.is_empty()
            || !self.held_ext.is_empty()
            || self.nx.is_some()
            || !self.forming.is_empty()
            || !self.nx_deferred.is_empty();
        // A node that resigned its leaderships keeps answering (TRYAGAIN, MOVED) a moment after
        // its listener closed: a client that connected just before would otherwise find its
        // first command unread and the connection closed under it.
        let resigned = self.cluster.as_ref().is_some_and(|c| c.resigning);
        let grace_over = !resigned || self.drain_started.elapsed() >= Self::RESIGNED_GRACE;
        if !busy && grace_over && !self.drained_counted {
            self.drained_counted = true;
            self.shared.drained.fetch_add(1, Ordering::AcqRel);
            for p in &self.peers {
                let _ = p.waker.wake();
            }
        }
        let all = self.shared.drained.load(Ordering::Acquire) >= self.peers.len();
        let late = self.shutdown_deadline.is_some_and(|d| Instant::now() >= d);
        if late && !all {
            warn!("worker {}: shutdown timeout with work in flight", self.id);
        }
        all || late
    }

    fn finish(&mut self) {
        self.merge_steps_until_done();
        // A failed final fsync fails the replies not yet durable (they would otherwise go
        // out as +OK below, released as durable).
        let synced = self.sync_all_logs();
        if !synced {
            error!(
                "worker {}: final fsync failed; unsynced writes get an error",
                self.id
            );
        }
        // Every log is fsynced to its end: the next start refuses any damage in it.
        if let Err(e) = points::write(&self.points_dir(), self.id as u32, &self.recovery_points()) {
            warn!("worker {}: cannot write the recovery points: {e}", self.id);
        }
        let tokens: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].is_some())
            .map(|i| i + FIRST_CONN)
            .collect();
        // Everything is on disk now (or its replies carry the error); replies that wait for
        // replicas that never confirmed are not sent (the client sees the connection close:
        // the outcome is unknown to it).
        let committed = if self.cluster.is_some() {
            self.committed
        } else {
            u64::MAX
        };
        let failed = self.sync_failed.clone();
        for t in tokens {
            if let Some(c) = self.conn_mut(t) {
                c.out.drain_slots(&Released {
                    durable: u64::MAX,
                    committed,
                    failed: &failed,
                });
                let _ = c.flush();
            }
            self.close_conn(t);
        }
        // An fsync still running on the sync thread shares the logs' open files: an error it
        // took would not be seen by the final fsync above, so nothing is vouched for then.
        if synced && self.flight.is_none() {
            // Every record is in the fsynced logs: the journal has nothing the next start
            // needs (and a start with journaled records reads the active segments whole).
            if let Some(Err(e)) = self.journal.as_mut().map(|j| j.reset()) {
                self.journal_failed(&e);
            }
            self.write_shutdown_hints();
        }
        info!("worker {} stopped", self.id);
    }

    /// Closes the partition logs, describing each active segment worth it in a shutdown hint
    /// (`Store::close_with_shutdown_hint`), so that the next start reads none of their values;
    /// after the replies, which do not wait for it.
    fn write_shutdown_hints(&mut self) {
        let started = Instant::now();
        let min_bytes = self.config.storage.shutdown_hint_min_bytes;
        let mut written = 0;
        for p in self.owned.clone() {
            let Some(store) = self.stores.get_mut(p as usize).and_then(Option::take) else {
                continue;
            };
            match store.close_with_shutdown_hint(min_bytes) {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => warn!(
                    "partition {p}: no shutdown hint, the next start reads its active segment whole: {e}"
                ),
            }
        }
        if written > 0 {
            info!(
                "worker {}: wrote {written} shutdown hints in {} ms",
                self.id,
                started.elapsed().as_millis()
            );
        }
    }

    fn merge_steps_until_done(&mut self) {
        for p in self.owned.clone() {
            if self.merge_busy[p as usize] {
                if let Some(s) = self.store_mut(p) {
                    s.abort_merge();
                }
                continue;
            }
            if let Some(s) = self.store_mut(p) {
                while s.merge_step(usize::MAX) {}
            }
        }
    }

    pub fn durability(&self) -> Durability {
        durability_of(&self.config)
    }
}

pub fn limits_of(c: &Config) -> Limits {
    Limits {
        proto_max_bulk_len: c.limits.proto_max_bulk_len as usize,
        max_multibulk_len: c.limits.max_multibulk_len as usize,
        ..Limits::default()
    }
}

pub fn durability_of(c: &Config) -> Durability {
    match c.storage.fsync {
        simplekv_conf::Fsync::Always => Durability::Always,
        simplekv_conf::Fsync::EverySec => Durability::EverySec,
        simplekv_conf::Fsync::Never => Durability::Never,
    }
}

/// Creates a worker's poll and waker (before the thread starts, so peers can hold the waker).
pub fn poll_and_waker() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    Ok((poll, waker))
}

/// `syncfs(2)` on the file system holding `f`: writes back and flushes every file on it, and
/// reports writeback errors of any of them.
fn syncfs(f: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor we own.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The fsyncs of one flight (see `Worker::end_turn`).
pub struct SyncJob {
    epoch: u64,
    tickets: Vec<(u32, SyncTicket)>,
    journal: Option<JournalSync>,
    checkpoint: Option<u64>,
}

type SyncResults = (
    Vec<(u32, SyncTicket, io::Result<()>)>,
    Option<Result<(), JournalError>>,
);

impl SyncJob {
    /// Runs the fsyncs: one `syncfs` for many partitions (see `spawn_sync_thread`), else one
    /// fsync each; then the journal's (cheap after a `syncfs` of its file system).
    fn run(&self) -> SyncResults {
        const SYNCFS_FROM: usize = 3;
        let all_ok = self.checkpoint.is_none()
            && self.tickets.len() >= SYNCFS_FROM
            && self
                .tickets
                .first()
                .is_some_and(|(_, t)| syncfs(t.file()).is_ok());
        let results = self
            .tickets
            .iter()
            .map(|(p, t)| {
                let r = if all_ok { Ok(()) } else { t.run() };
                (*p, t.clone(), r)
            })
            .collect();
        (results, self.journal.as_ref().map(|j| j.run()))
    }
}

/// A worker's sync thread: runs flights (or, as the worker's checkpoint thread, journal
/// checkpoints) and posts the outcome back to the worker.
///
/// One fsync per partition costs a device flush each; past a few partitions one `syncfs` of
/// the data file system is cheaper (measured here: 16 fdatasyncs 4.8 ms, one syncfs 0.6 ms).
/// It also flushes other files on that file system, which is why it is used only when it
/// saves flushes. If it fails, each partition is fsynced on its own so the error lands where
/// it belongs.
fn spawn_sync_thread(name: String, me: Peer) -> Sender<SyncJob> {
    let (tx, rx) = crossbeam_channel::unbounded::<SyncJob>();
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let (results, journal) = job.run();
                if me
                    .tx
                    .send(Msg::SyncDone {
                        epoch: job.epoch,
                        results,
                        journal,
                        checkpoint: job.checkpoint,
                    })
                    .is_err()
                {
                    return;
                }
                me.notify();
            }
        });
    if let Err(e) = spawned {
        error!("cannot start thread {name}: {e}");
    }
    tx
}

/// Calls `f` with a command's arguments in a slice: on the stack for the usual few (no
/// allocation per command), in a `Vec` beyond 8.
/// What `Worker::run_one` did with a command.
#[derive(PartialEq)]
enum Step {
    Ran,
    /// It waits (a barrier, the order): the connection paused.
    Stop,
    /// It waits for this worker's hold to end.
    WaitsForHold,
}

pub(super) fn with_args<'a, R>(
    len: usize,
    args: impl Iterator<Item = &'a [u8]>,
    f: impl FnOnce(&[&'a [u8]]) -> R,
) -> R {
    let mut small: [&[u8]; 8] = [&[]; 8];
    if len <= small.len() {
        let mut n = 0;
        for (slot, a) in small.iter_mut().zip(args) {
            *slot = a;
            n += 1;
        }
        f(&small[..n])
    } else {
        let heap: Vec<&[u8]> = args.collect();
        f(&heap)
    }
}

/// The output limits of a connection fed a stream it did not ask for piece by piece
/// (MONITOR, pub/sub), as Redis's `client-output-buffer-limit`: closed past `hard` unread
/// bytes, or past `soft` for longer than `soft_for`.
pub struct StreamLimit {
    pub soft: usize,
    pub hard: usize,
    pub soft_for: Duration,
    /// What the stream is, for the log line.
    pub what: &'static str,
    /// Push output, which CLIENT REPLY OFF does not drop (pub/sub, not MONITOR's lines).
    pub push: bool,
}

/// Appends `bytes` of a stream to a connection's output, behind the replies it is owed
/// (nothing under CLIENT REPLY OFF unless it is push output), and lists it for writing.
/// False, with nothing added, when the connection is past its limits and is to be closed.
pub fn feed_stream(
    c: &mut Conn,
    dirty_conns: &mut Vec<usize>,
    token: usize,
    bytes: &[u8],
    limit: &StreamLimit,
) -> bool {
    if !limit.push && c.out.reply_mode == super::conn::ReplyMode::Off {
        return true;
    }
    if c.out.slots.is_empty() {
        c.client.stream_in_slots = 0;
    }
    let unread = c.out.wbuf.len() - c.out.wpos + c.client.stream_in_slots;
    let since = match unread > limit.soft {
        true => *c.client.behind_since.get_or_insert_with(Instant::now),
        false => {
            c.client.behind_since = None;
            Instant::now()
        }
    };
    if unread > limit.hard || since.elapsed() > limit.soft_for {
        warn!(
            "client {} ({}): closed, its {} output is {} MiB behind",
            c.client.id,
            c.client.addr,
            limit.what,
            unread >> 20
        );
        return false;
    }
    if limit.push {
        c.out.push_unsilenced(bytes);
    } else {
        c.out.push_reply(bytes);
    }
    if !c.out.slots.is_empty() {
        c.client.stream_in_slots += bytes.len();
    }
    if !c.client.in_dirty_list {
        c.client.in_dirty_list = true;
        dirty_conns.push(token);
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Backoff, Job, Maint};

    /// everysec's fsyncs have a thread of their own: a merge that runs for minutes on the
    /// maintenance thread must not hold them back.
    #[test]
    fn fsyncs_go_to_their_own_thread_and_file_jobs_to_the_maintenance_thread() {
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (syncs, syncs_rx) = crossbeam_channel::unbounded();
        let m = Maint { jobs, syncs };
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            simplekv_engine::Store::open(dir.path(), simplekv_engine::Options::default()).unwrap();
        store.put(b"k", b"v", None).unwrap();
        store.roll().unwrap();
        let hint = store
            .take_hint_jobs()
            .pop()
            .expect("a hint job for the closed segment");
        assert!(m.send(Job::Hint(hint)));
        let ticket = store.sync_ticket();
        assert!(m.send(Job::Sync {
            worker: 0,
            partition: 3,
            ticket,
        }));
        assert!(matches!(jobs_rx.try_recv(), Ok(Job::Hint(_))));
        assert!(matches!(
            syncs_rx.try_recv(),
            Ok(Job::Sync { partition: 3, .. })
        ));
        assert!(jobs_rx.try_recv().is_err() && syncs_rx.try_recv().is_err());
        drop(syncs_rx);
        let ticket = store.sync_ticket();
        assert!(
            !m.send(Job::Sync {
                worker: 0,
                partition: 3,
                ticket,
            }),
            "its thread is gone"
        );
    }

    #[test]
    fn failed_merges_are_retried_less_and_less_often() {
        let t0 = Instant::now();
        let mut r = Backoff::default();
        assert!(r.allows(t0));
        assert_eq!(r.failed(t0), Duration::from_secs(1));
        assert!(!r.allows(t0 + Duration::from_millis(999)));
        assert!(r.allows(t0 + Duration::from_secs(1)));
        let waits: Vec<u64> = (0..8).map(|_| r.failed(t0).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 64, 64]);
        assert!(!r.allows(t0 + Duration::from_secs(63)));
        assert!(r.allows(t0 + Duration::from_secs(64)));
    }
}
