//! Replication: one driver per node. It streams the records of the partitions this node
//! leads to their followers, and appends what the leaders of the partitions it follows send.
//!
//! The driver is a future on the node's gRPC completion-queue thread (`skv-grpc-0`), which is
//! the node's replication thread: received messages reach it on the thread gRPC delivers them
//! on (through its channel, without waking another thread), and its writes start there.
//! Workers (new records through `FeedTx`, answers to its requests), the control thread (ISR
//! changes), the views thread (routes), snapshot-copy threads and a ticker (`skv-repl-tick`,
//! every 50 ms, or every linger when that is shorter) post to its channels and wake it
//! ([`Wakeup`]).
//!
//! It never touches a partition: records come from the owning worker (pushed at the end of
//! each turn as [`FeedMsg::Tail`], or read on request with [`ReplOp::Read`]), and received
//! records go to the owning worker ([`ReplOp::Append`]); both through the router (channel +
//! the worker's mio `Waker`). gRPC callbacks only post [`Event`]s to the driver.
//!
//! **Streams.** A follower node keeps one bidirectional `Fetch` stream to each node that leads
//! partitions it follows. It sends its position (log end, after its appends are durable) for
//! each partition whenever it changes and as a heartbeat every [`HEARTBEAT`]; the leader
//! pushes records as they are written, without a request per batch, keeping at most
//! [`INFLIGHT_BYTES`] sent beyond the follower's acknowledged position.
//!
//! **Leader side.** The follower's position is its acknowledgement: the high watermark is the
//! lowest position over the in-sync replicas (the leader's log end included), and never moves
//! back. A follower joins the ISR when it has caught up (the high watermark, and the leader's
//! log end as of its previous fetch: `joiners`); it leaves
//! when it has not caught up for `replica_lag_time_max`. ISR changes are conditional writes in
//! ZooKeeper (through the control thread); a follower counts for the high watermark from the
//! moment its joining is asked for (a superset of the ISR in ZooKeeper is always safe), and a
//! leaving follower stops counting only once ZooKeeper has the smaller ISR. The leader's lease
//! (how long its worker may serve) is renewed by the fetches of its in-sync followers.
//!
//! **Follower side.** On (re)subscribing, a follower sends its log end and the epoch of its
//! last record with `validate`; the leader checks them against its leader-epoch history and
//! either streams records or answers `diverging` with its end offset for that epoch; the
//! follower truncates there (KIP-101/KIP-320) and validates again. Records are appended with
//! the LSNs and epochs the leader gave them.
mod publish;
mod service;
mod sink;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use futures::StreamExt;
use grpcio::{ChannelBuilder, ClientDuplexSender, DuplexSink, Environment};
use log::{debug, info, warn};
use simplekv_net::server::cluster::RouteTable;

use crate::control::api::IsrWritten;
use simplekv_net::server::replica::{FeedMsg, ReplOp, ReplReply};
use simplekv_net::server::router::{Msg, Op, Payload, Router};
use simplekv_proto::replication::*;
use simplekv_proto::replication_grpc::ReplicationClient;

pub use service::ReplService;
use sink::DirectSink;

/// A follower sends its positions at least this often (renews the leader's lease).
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Bytes a leader sends a follower beyond what it has acknowledged.
pub const INFLIGHT_BYTES: usize = 8 << 20;
/// Bytes a leader reads from its worker at once for a follower that is behind.
const READ_BYTES: usize = 1 << 20;
/// A follower waiting this long for an answer to a position, validation or truncation
/// starts over.
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// A snapshot copy that has not finished after this long is started over.
const BOOTSTRAP_STUCK_AFTER: Duration = Duration::from_secs(600);
/// The largest replication message a follower accepts: one record at the format's hard
/// limits, plus the bytes in flight and a margin for the message's own fields.
const MAX_PUSH_MESSAGE: i32 = {
    let record = simplekv_engine::record::MAX_KEY_LEN_HARD as i64
        + simplekv_engine::record::MAX_VALUE_LEN_HARD as i64;
    let total = record + INFLIGHT_BYTES as i64 + (16 << 20);
    if total > i32::MAX as i64 {
        i32::MAX
    } else {
        total as i32
    }
};
/// A stream failure repeated within this long is logged at debug level only.
const BROKEN_LOG_EVERY: Duration = Duration::from_secs(30);
/// A leader whose worker has not told it the log end its leadership began at asks again
/// after this (`LedPart::epoch_start`).
const RETRY_POSITION: Duration = Duration::from_secs(1);
/// Records kept in memory per led partition for followers that are caught up.
const TAIL_BYTES: usize = 16 << 20;

/// Asks the control thread to change a partition's ISR; the callback gets the outcome.
pub type IsrChanger =
    Box<dyn Fn(u32, u32, Vec<u32>, BTreeMap<u32, u64>, Box<dyn FnOnce(IsrWritten) + Send>) + Send>;

/// Reports a leadership taken up (`Ok`) or not (`Err(why)`): partition, leader epoch, outcome.
pub type LeadershipOutcome = Box<dyn Fn(u32, u32, Result<(), String>) + Send>;

/// What the replication driver asks of the node's control thread.
pub struct ControlLink {
    /// Changes a partition's ISR (see [`IsrChanger`]).
    pub change_isr: IsrChanger,
    /// Tells the controller that this node cannot take up its leadership of a partition in a
    /// leader epoch (partition, epoch, `Err(why)`: a worker's `FeedMsg::CannotLead`), or
    /// took it up after all (`Ok`: `FeedMsg::LeadingAgain`).
    pub leadership: LeadershipOutcome,
}

/// Wakes the replication driver (a future on the node's completion-queue thread) after
/// something was sent to it: at most one wake-up per drain, like a worker's eventfd.
#[derive(Default)]
pub struct Wakeup {
    pending: AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl Wakeup {
    pub fn new() -> Arc<Wakeup> {
        Arc::new(Wakeup::default())
    }

    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

/// The replication driver has stopped.
#[derive(Debug)]
pub struct DriverGone;

/// The sending side of the driver's event channel: a send, then a wake-up.
#[derive(Clone)]
pub struct EventTx {
    tx: Sender<Event>,
    wake: Arc<Wakeup>,
}

impl EventTx {
    /// Fails once the driver has stopped (the event is dropped).
    pub fn send(&self, ev: Event) -> Result<(), DriverGone> {
        self.tx.send(ev).map_err(|_| DriverGone)?;
        self.wake.wake();
        Ok(())
    }
}

/// What reaches the replication driver.
pub enum Event {
    Routes(Arc<RouteTable>),
    /// A `Publish` call to `node` with `sent` messages finished (`error`: how it failed).
    Published {
        node: u32,
        generation: u64,
        end: publish::CallEnd,
    },
    // Leader side (gRPC server callbacks).
    StreamOpened {
        stream: u64,
        sink: DuplexSink<FetchResponse>,
    },
    /// A write that held others back on a stream's sink is done (see [`sink`]).
    SinkReady(SinkId),
    FetchReq {
        stream: u64,
        req: FetchRequest,
    },
    StreamClosed {
        stream: u64,
    },
    ReadDone {
        partition: u32,
        follower: u32,
        reply: ReplReply,
    },
    IsrDone {
        partition: u32,
        epoch: u32,
        isr: Vec<u32>,
        result: IsrWritten,
    },
    // Follower side.
    LeaderData {
        leader: u32,
        generation: u64,
        resp: FetchResponse,
    },
    LeaderDown {
        leader: u32,
        generation: u64,
        reason: String,
    },
    FollowerReply {
        partition: u32,
        epoch: u32,
        reply: ReplReply,
    },
    /// The outcome of a bootstrap thread (the installed copy's position, or why not): the
    /// only reply a bootstrapping follower acts on, so that a late append's does not start
    /// a second copy.
    Bootstrapped {
        partition: u32,
        epoch: u32,
        copy: u64,
        reply: ReplReply,
    },
    /// From the ticker thread: time to run the periodic checks (heartbeats, lag, lease).
    Tick,
    Stop,
}

/// Which stream's sink a [`Event::SinkReady`] is about.
#[derive(Debug, Clone, Copy)]
pub enum SinkId {
    /// A follower's stream on this leader.
    Stream(u64),
    /// This follower's stream to a leader node: (leader, generation).
    Conn(u32, u64),
}

/// Wakes the replication thread for a sink (see [`sink`]).
struct SinkWaker {
    events: EventTx,
    id: SinkId,
}

impl std::task::Wake for SinkWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.events.send(Event::SinkReady(self.id));
    }
}

fn sink_waker(events: &EventTx, id: SinkId) -> std::task::Waker {
    std::task::Waker::from(Arc::new(SinkWaker {
        events: events.clone(),
        id,
    }))
}

type StreamSink = DirectSink<DuplexSink<FetchResponse>, FetchResponse>;
type ConnSink = DirectSink<ClientDuplexSender<FetchRequest>, FetchRequest>;

pub struct ReplSettings {
    pub me: u32,
    /// This node's storage id (`BrokerInfo::storage`), sent with its fetches.
    pub storage: u64,
    pub lag_max: Duration,
    pub lease: Duration,
    /// `cluster.replica_push_linger_us`: see `Driver::poll`.
    pub linger: Duration,
    /// `cluster.secret`: carried by the calls this node makes, required of those it serves.
    pub secret: Option<String>,
}

/// What a call to another node needs: the gRPC environment and the cluster secret.
#[derive(Clone)]
struct Dial {
    env: Arc<Environment>,
    secret: Option<String>,
}

impl Dial {
    fn opt(&self) -> grpcio::CallOption {
        crate::grpc::secret_opt(self.secret.as_deref())
    }
}

/// The running replication driver.
///
/// It is a future on the node's gRPC completion-queue thread, not a thread of its own: the
/// messages its streams receive are handled where gRPC delivers them, instead of costing a
/// channel send and a wake-up of another thread each (two per replicated round trip, one on
/// each node). Workers, the control thread and the ticker reach it through channels and a
/// [`Wakeup`].
pub struct ReplThread {
    events: EventTx,
    done: Receiver<()>,
    ticker: Option<JoinHandle<()>>,
    /// Dropped to stop the ticker.
    ticker_stop: Option<Sender<()>>,
    service: ReplService,
    /// The client the driver was spawned through (its kicker keeps the call alive anyway).
    _spawner: ReplicationClient,
}

/// How often the driver runs its periodic checks.
const TICK: Duration = Duration::from_millis(50);

impl ReplThread {
    /// Starts the driver on `env`'s completion queue. `wake` must be the one the workers'
    /// feed wakes (see `FeedTx`).
    pub fn spawn(
        settings: ReplSettings,
        router: Router,
        feed: Receiver<FeedMsg>,
        routes: Arc<RouteTable>,
        control: ControlLink,
        env: Arc<Environment>,
        wake: Arc<Wakeup>,
    ) -> std::io::Result<ReplThread> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let events = EventTx {
            tx,
            wake: wake.clone(),
        };
        let controller_epoch = Arc::new(AtomicU64::new(
            routes.controller.map(|(_, e)| e).unwrap_or(0),
        ));
        let service = ReplService::new(
            events.clone(),
            router.clone(),
            controller_epoch.clone(),
            settings.secret.as_deref(),
        );
        // Ticks: every TICK, or every linger when that is shorter (records held back for a
        // linger go out at its end at the latest).
        let period = if settings.linger.is_zero() {
            TICK
        } else {
            settings.linger.min(TICK)
        };
        let tick_tx = events.clone();
        let (ticker_stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let ticker = std::thread::Builder::new()
            .name("skv-repl-tick".into())
            .spawn(move || {
                while tick_tx.send(Event::Tick).is_ok() {
                    match stop_rx.recv_timeout(period) {
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        let mut st = State {
            copies: 0,
            s: settings,
            router,
            events: events.clone(),
            env: env.clone(),
            routes,
            controller_epoch,
            control,
            streams: HashMap::new(),
            led: BTreeMap::new(),
            followed: BTreeMap::new(),
            conns: BTreeMap::new(),
            broken_logged: BTreeMap::new(),
            retiring: BTreeMap::new(),
            next_gen: 1,
            clock0: Instant::now(),
            acks: Default::default(),
            hw_dirty: Default::default(),
            pump_dirty: Default::default(),
            busy: false,
            forwarder: Default::default(),
        };
        st.refresh_roles();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let mut driver = Driver {
            inner: Some(DriverInner {
                st,
                rx,
                feed,
                unsent: None,
                next_tick: Instant::now() + TICK,
            }),
            wake,
            done: done_tx,
        };
        // A channel only to spawn on the completion queue: it never connects (no call is
        // made on it).
        let spawner = ReplicationClient::new(ChannelBuilder::new(env).connect("127.0.0.1:1"));
        spawner.spawn(futures::future::poll_fn(move |cx| driver.poll(cx)));
        Ok(ReplThread {
            events,
            done,
            ticker: Some(ticker),
            ticker_stop: Some(ticker_stop),
            service,
            _spawner: spawner,
        })
    }

    /// The gRPC service to register on the node's server.
    pub fn service(&self) -> grpcio::Service {
        simplekv_proto::replication_grpc::create_replication(self.service.clone())
    }

    /// A function that hands new route tables to this thread (for another thread to own).
    pub fn route_sender(&self) -> impl Fn(Arc<RouteTable>) + Send + 'static {
        let tx = self.events.clone();
        move |rt| {
            let _ = tx.send(Event::Routes(rt));
        }
    }

    /// Stops the driver (its streams are dropped, which cancels them) and the ticker.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ReplThread {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Stop);
        if self.done.recv_timeout(Duration::from_secs(10)).is_err() {
            warn!("the replication driver did not stop within 10 s");
        }
        drop(self.ticker_stop.take());
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

struct DriverInner {
    st: State,
    rx: Receiver<Event>,
    feed: Receiver<FeedMsg>,
    /// Records waiting to be pushed since then (see `ReplSettings::linger`).
    unsent: Option<Instant>,
    next_tick: Instant,
}

struct Driver {
    /// None once stopped (the state, with its streams, is dropped then).
    inner: Option<DriverInner>,
    wake: Arc<Wakeup>,
    done: Sender<()>,
}

impl Driver {
    /// Events taken per poll at most; with more queued the driver is polled again at once
    /// (grpcio re-polls a task woken while it runs), so this bounds a pass, not the time the
    /// completion queue's own work (received messages, finished writes) waits.
    const BATCH: usize = 1024;

    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        let Some(d) = self.inner.as_mut() else {
            return Poll::Ready(());
        };
        // Registered and re-armed before draining: a send from now on wakes the next poll.
        self.wake.waker.register(cx.waker());
        // A read-modify-write, so that the senders' messages before their swap are seen.
        self.wake.pending.swap(false, Ordering::AcqRel);
        let mut stop = false;
        let mut more = false;
        // Take what is already queued before sending anything, so that under load one
        // push carries many turns and one request many acknowledgements.
        for i in 0..=Self::BATCH {
            if i == Self::BATCH {
                more = true;
                break;
            }
            match d.rx.try_recv() {
                Ok(Event::Stop) | Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
                Ok(Event::Tick) => {}
                Ok(ev) => d.st.on_event(ev),
                Err(TryRecvError::Empty) => break,
            }
        }
        while let Ok(m) = d.feed.try_recv() {
            d.st.on_feed(m);
        }
        let now = Instant::now();
        // With some slack, so that a tick arriving a little early (the ticker's period is
        // TICK) still runs the checks and they do not slip by a whole period.
        if now + TICK / 4 >= d.next_tick {
            d.next_tick = (d.next_tick + TICK).max(now + TICK / 2);
            // Idle for a tick: the next records go out at once.
            if d.unsent.is_none() {
                d.st.busy = false;
            }
            d.st.on_tick();
        }
        d.st.flush_acks();
        // One high-watermark message per partition per round, however many
        // acknowledgements and records the round brought.
        for p in std::mem::take(&mut d.st.hw_dirty) {
            d.st.recompute_hw(p);
        }
        // Under load (records keep coming), records wait up to `linger` for the next
        // turns' so one push carries several: each push is a gRPC message to every
        // follower and an acknowledgement back.
        if d.st.has_unsent() {
            let first = *d.unsent.get_or_insert(now);
            if !d.st.busy || now >= first + d.st.s.linger {
                d.st.pump_all();
                d.unsent = None;
                d.st.busy = true;
            }
        } else {
            d.st.pump_all();
            d.unsent = None;
        }
        if stop {
            self.inner = None;
            info!("replication stopped");
            let _ = self.done.try_send(());
            return Poll::Ready(());
        }
        if more {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// The records of the tail's chunks from `at` on, joined, as long as they fit in `budget`
/// (the first chunk always goes), and the LSN after them.
fn gather(tail: &VecDeque<(u64, u64, Arc<Vec<u8>>)>, at: usize, budget: usize) -> (Vec<u8>, u64) {
    let mut records = Vec::new();
    let mut end = 0;
    for (_, next, bytes) in tail.range(at..) {
        if !records.is_empty() && records.len() + bytes.len() > budget {
            break;
        }
        records.extend_from_slice(bytes);
        end = *next;
    }
    (records, end)
}

/// Pushes sent to a follower and not acknowledged yet, with their total size kept as they
/// come and go (the pump checks it before every push; summing thousands of small pushes each
/// time made the replication thread spend most of its time there under load).
#[derive(Default)]
struct Inflight {
    /// (LSN after the push, bytes)
    pushes: VecDeque<(u64, usize)>,
    bytes: usize,
}

impl Inflight {
    fn push(&mut self, next: u64, len: usize) {
        self.pushes.push_back((next, len));
        self.bytes += len;
    }

    /// Forgets the pushes the follower has acknowledged (everything below `acked`).
    fn ack(&mut self, acked: u64) {
        while let Some(&(next, len)) = self.pushes.front() {
            if next > acked {
                break;
            }
            self.pushes.pop_front();
            self.bytes -= len;
        }
    }

    fn clear(&mut self) {
        self.pushes.clear();
        self.bytes = 0;
    }
}

/// A follower as its leader sees it, in one partition.
struct FollowerPos {
    stream: u64,
    acked: u64,
    /// Next LSN to send.
    sent: u64,
    /// Bytes sent, by the LSN after them, not yet acknowledged.
    inflight: Inflight,
    validated: bool,
    reading: bool,
    /// A validating fetch not answered yet: the epoch of the follower's last record.
    validate_epoch: Option<u32>,
    /// When `acked` last moved.
    progress: Instant,
    last_fetch: Instant,
    /// When the leader sent the newest ping the follower echoed (the lease's base).
    last_heard: Instant,
    last_caught_up: Instant,
    end_at_last_fetch: u64,
    /// The high watermark last sent to it (records carry it; see `hw_updates`).
    told_hw: u64,
    /// The storage id it fetches with (0: not told), recorded for it when it joins the ISR.
    storage: u64,
}

struct LedPart {
    epoch: u32,
    log_end: u64,
    hw: u64,
    /// Replicas that count for the high watermark (ZooKeeper's ISR, plus followers whose
    /// joining was asked for).
    isr: Vec<u32>,
    /// Version of the partition's state in ZooKeeper that `isr` follows: the route tables'
    /// (`PartRoute::state_version`) and this leader's own ISR writes; an older table does not
    /// replace it.
    isr_version: i32,
    replicas: Vec<u32>,
    followers: BTreeMap<u32, FollowerPos>,
    /// Records pushed by the worker: (from, next, bytes), contiguous.
    tail: VecDeque<(u64, u64, Arc<Vec<u8>>)>,
    tail_bytes: usize,
    isr_pending: bool,
    since: Instant,
    /// When the worker was last asked for the log end (`epoch_start`), asked again every
    /// second until it answers (a failed fsync may fail the answer).
    position_asked: Instant,
    /// The log end when this leadership began (the worker's first answer): a joiner must
    /// have reached it, as in Kafka, since the high watermark of a new leader may sit far
    /// below it until its in-sync followers are heard from.
    epoch_start: Option<u64>,
    sent_hw: u64,
    sent_lease: Instant,
    sent_horizon: u64,
    sent_isr: usize,
}

impl LedPart {
    /// What every entry this leader sends about partition `p` carries: its epoch, high
    /// watermark, merge horizon and log end (positions and records are the caller's).
    fn data_template(&self, p: u32) -> PartitionData {
        let mut d = PartitionData::new();
        d.partition = p;
        d.leader_epoch = self.epoch;
        d.high_watermark = self.hw;
        d.merge_horizon = self.sent_horizon;
        d.log_end = self.log_end;
        d
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FState {
    /// Asking the worker for the log end.
    Positioning,
    /// Sent a validating fetch; waiting for the leader's answer.
    Validating,
    /// Cutting the log at the point of divergence.
    Truncating,
    /// Copying the leader's closed segments (an empty replica), on a thread of its own.
    Bootstrapping,
    Fetching,
    /// Waiting before trying again (leader not ready, stream down).
    Backoff(Instant),
}

struct FollowedPart {
    leader: u32,
    epoch: u32,
    state: FState,
    /// When `state` last changed (a request that got no answer is retried after a while).
    since: Instant,
    log_end: u64,
    last_epoch: u32,
    /// The next LSN expected from the leader's stream.
    expect: u64,
    /// The current log copy (bootstrap): only its thread's reply counts.
    copy: u64,
}

struct LeaderConn {
    generation: u64,
    sink: ConnSink,
    last_sent: Instant,
    /// When every fetched partition's position last went out together. Kept apart from
    /// `last_sent`: acknowledgements for busy partitions go out all the time, and counting
    /// them as heartbeats starved the idle partitions, whose followers then looked stuck
    /// and were dropped from the ISR under load.
    last_heartbeat: Instant,
    /// Newest leader clock received (echoed in requests).
    echo: u64,
    _client: ReplicationClient,
}

struct State {
    /// Log copies (bootstraps) started, for numbering them across partitions and epochs.
    copies: u64,
    s: ReplSettings,
    router: Router,
    events: EventTx,
    env: Arc<Environment>,
    routes: Arc<RouteTable>,
    controller_epoch: Arc<AtomicU64>,
    control: ControlLink,
    /// Leader side: open follower streams, by id: (follower id once known, sink).
    streams: HashMap<u64, (Option<u32>, StreamSink)>,
    led: BTreeMap<u32, LedPart>,
    followed: BTreeMap<u32, FollowedPart>,
    conns: BTreeMap<u32, LeaderConn>,
    /// Per leader: the last stream failure logged, when, and how many like it since (a
    /// refused stream is retried every 200 ms: the same line is logged at most every
    /// [`BROKEN_LOG_EVERY`]).
    broken_logged: BTreeMap<u32, (String, Instant, u64)>,
    /// Streams to leaders no longer followed, kept (by generation) until their queued
    /// messages are written or [`STUCK_AFTER`] has passed.
    retiring: BTreeMap<u64, (LeaderConn, Instant)>,
    next_gen: u64,
    /// Base of the clock values sent to followers.
    clock0: Instant,
    /// Followed partitions whose new position is to be acknowledged this round.
    acks: std::collections::BTreeSet<u32>,
    /// Led partitions whose high watermark may have moved this round.
    hw_dirty: std::collections::BTreeSet<u32>,
    /// Led partitions where a follower may have become ready for a push since the last pump
    /// (new records, an acknowledgement, a finished read); every tick adds them all. The pump
    /// and its check visit only these, not every partition on every pass.
    pump_dirty: std::collections::BTreeSet<u32>,
    /// Records were pushed recently (see `ReplSettings::linger`).
    busy: bool,
    /// PUBLISH: the messages on their way to the other nodes (`publish`).
    forwarder: publish::Forwarder,
}

fn payload_reply(p: Payload) -> ReplReply {
    match p {
        Payload::Repl(b) => *b,
        Payload::Err(e) => ReplReply::Failed(e),
        _ => ReplReply::Failed("unexpected reply".into()),
    }
}

impl State {
    fn worker_of(&self, p: u32) -> usize {
        self.router.topo.worker_of(p)
    }

    fn submit(&self, p: u32, op: ReplOp, done: impl FnOnce(Payload) + Send + 'static) {
        self.router.submit(self.worker_of(p), Op::Repl(op), done);
    }

    /// A leader asks its own worker for the partition's log end (tagged with an epoch no
    /// follower uses; see `on_follower_reply`).
    fn ask_own_position(&self, p: u32, epoch: u32) {
        let ev = self.events.clone();
        self.submit(p, ReplOp::Position { partition: p }, move |r| {
            let _ = ev.send(Event::FollowerReply {
                partition: p,
                epoch: u32::MAX - epoch,
                reply: payload_reply(r),
            });
        });
    }

    // ------------------------------------------------------------------ roles

    fn refresh_roles(&mut self) {
        let rt = self.routes.clone();
        if let Some((_, e)) = rt.controller {
            self.controller_epoch.fetch_max(e, Ordering::AcqRel);
        }
        let me = self.s.me;
        // Led partitions.
        let mut keep = Vec::new();
        for (p, pr) in rt.parts.iter().enumerate() {
            let p = p as u32;
            if !rt.leads(p) {
                continue;
            }
            keep.push(p);
            let fresh = self.led.get(&p).is_none_or(|l| l.epoch != pr.leader_epoch);
            if fresh {
                let now = Instant::now();
                self.led.insert(
                    p,
                    LedPart {
                        epoch: pr.leader_epoch,
                        log_end: 0,
                        hw: 0,
                        isr: pr.isr.clone(),
                        isr_version: pr.state_version,
                        replicas: pr.replicas.clone(),
                        followers: BTreeMap::new(),
                        tail: VecDeque::new(),
                        tail_bytes: 0,
                        isr_pending: false,
                        since: now,
                        position_asked: now,
                        epoch_start: None,
                        sent_hw: 0,
                        sent_lease: now,
                        sent_horizon: 0,
                        sent_isr: 0,
                    },
                );
                // Learn the log end before anything is computed from it.
                self.ask_own_position(p, pr.leader_epoch);
            } else if let Some(l) = self.led.get_mut(&p) {
                l.replicas = pr.replicas.clone();
                if pr.state_version < l.isr_version {
                    // A table older than the ISR this leader wrote last (it reached this
                    // thread late): its ISR may lack a follower that counts for the high
                    // watermark in ZooKeeper's, so acks=all writes could be answered
                    // without it.
                    continue;
                }
                l.isr_version = pr.state_version;
                // ZooKeeper's ISR, plus followers whose joining is still being written.
                let mut isr = pr.isr.clone();
                if l.isr_pending {
                    for f in &l.isr {
                        if !isr.contains(f) {
                            isr.push(*f);
                        }
                    }
                }
                l.isr = isr;
            }
        }
        self.led.retain(|p, _| keep.contains(p));
        // Followed partitions.
        let mut keep = Vec::new();
        for (p, pr) in rt.parts.iter().enumerate() {
            let p = p as u32;
            let Some(leader) = pr.leader else { continue };
            if rt.fenced || leader == me || !pr.replicas.contains(&me) {
                continue;
            }
            if !rt.nodes.contains_key(&leader) {
                continue;
            }
            keep.push(p);
            let same = self
                .followed
                .get(&p)
                .is_some_and(|f| f.leader == leader && f.epoch == pr.leader_epoch);
            if !same {
                self.followed.insert(
                    p,
                    FollowedPart {
                        leader,
                        epoch: pr.leader_epoch,
                        state: FState::Backoff(Instant::now()),
                        since: Instant::now(),
                        log_end: 0,
                        last_epoch: 0,
                        copy: 0,
                        expect: 0,
                    },
                );
            }
        }
        self.followed.retain(|p, _| keep.contains(p));
        // Streams to leaders that lead nothing we follow any more are closed, once what is
        // queued on them has gone out (positions a leader still needs for its high
        // watermark): dropping a sink cancels its call and its queue.
        let leaders: Vec<u32> = self.followed.values().map(|f| f.leader).collect();
        let (kept, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.conns)
            .into_iter()
            .partition(|(l, _)| leaders.contains(l));
        self.conns = kept;
        for c in gone.into_values().filter(|c| c.sink.queued() > 0) {
            self.retiring.insert(c.generation, (c, Instant::now()));
        }
        self.pump_dirty.extend(self.led.keys().copied());
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Routes(rt) => {
                if rt.version >= self.routes.version {
                    self.routes = rt;
                    self.refresh_roles();
                }
            }
            Event::StreamOpened { stream, sink } => {
                let waker = sink_waker(&self.events, SinkId::Stream(stream));
                self.streams
                    .insert(stream, (None, DirectSink::new(sink, waker)));
            }
            Event::SinkReady(SinkId::Stream(stream)) => {
                if let Some((_, s)) = self.streams.get_mut(&stream)
                    && let Err(e) = s.drive()
                {
                    debug!("replication stream {stream}: {e}");
                    self.streams.remove(&stream);
                }
            }
            Event::SinkReady(SinkId::Conn(leader, generation)) => {
                if let Some(c) = self.conns.get_mut(&leader)
                    && c.generation == generation
                    && let Err(e) = c.sink.drive()
                {
                    self.conn_broken(leader, &e.to_string());
                }
                if let Some((c, _)) = self.retiring.get_mut(&generation)
                    && (c.sink.drive().is_err() || c.sink.queued() == 0)
                {
                    self.retiring.remove(&generation);
                }
            }
            Event::StreamClosed { stream } => {
                if let Some((follower, s)) = self.streams.remove(&stream) {
                    debug!(
                        "replication stream {stream} (follower {follower:?}) closed after {} writes, {} messages merged",
                        s.writes, s.merged
                    );
                }
                for l in self.led.values_mut() {
                    l.followers.retain(|_, f| f.stream != stream);
                }
            }
            Event::FetchReq { stream, req } => self.on_fetch(stream, req),
            Event::ReadDone {
                partition,
                follower,
                reply,
            } => self.on_read_done(partition, follower, reply),
            Event::IsrDone {
                partition,
                epoch,
                isr,
                result,
            } => {
                if let Some(l) = self.led.get_mut(&partition)
                    && l.epoch == epoch
                {
                    l.isr_pending = false;
                    match result {
                        // A route table newer than the write came first: it has the ISR.
                        Ok((version, _)) if version < l.isr_version => {}
                        Ok((version, written)) => {
                            if written != isr {
                                info!(
                                    "partition {partition}: ISR is now {written:?} (asked for {isr:?}: the others are gone or leaving)"
                                );
                            } else {
                                info!("partition {partition}: ISR is now {written:?}");
                            }
                            l.isr = written;
                            l.isr_version = l.isr_version.max(version);
                        }
                        Err(e) => warn!("partition {partition}: ISR change refused: {e}"),
                    }
                    self.recompute_hw(partition);
                }
            }
            Event::LeaderData {
                leader,
                generation,
                resp,
            } => self.on_leader_data(leader, generation, resp),
            Event::LeaderDown {
                leader,
                generation,
                reason,
            } => {
                if self
                    .conns
                    .get(&leader)
                    .is_some_and(|c| c.generation == generation)
                {
                    self.conn_broken(leader, &reason);
                }
            }
            Event::FollowerReply {
                partition,
                epoch,
                reply,
            } => self.on_follower_reply(partition, epoch, reply, None),
            Event::Bootstrapped {
                partition,
                epoch,
                copy,
                reply,
            } => self.on_follower_reply(partition, epoch, reply, Some(copy)),
            Event::Published {
                node,
                generation,
                end,
            } => {
                let dial = self.dial();
                let me = self.routes.me;
                let f = &mut self.forwarder;
                f.done(node, generation, end, me, &dial, &self.events);
            }
            Event::Stop | Event::Tick => {}
        }
    }

    // ------------------------------------------------------------ leader side

    fn on_feed(&mut self, m: FeedMsg) {
        let (partition, leader_epoch, from, bytes, log_end) = match m {
            FeedMsg::Tail {
                partition,
                leader_epoch,
                from,
                bytes,
                log_end,
            } => (partition, leader_epoch, from, bytes, log_end),
            FeedMsg::CannotLead {
                partition,
                leader_epoch,
                reason,
            } => {
                (self.control.leadership)(partition, leader_epoch, Err(reason));
                return;
            }
            FeedMsg::LeadingAgain {
                partition,
                leader_epoch,
            } => {
                (self.control.leadership)(partition, leader_epoch, Ok(()));
                return;
            }
            FeedMsg::Publish(p) => {
                let dial = self.dial();
                self.forwarder.publish(p, &self.routes, &dial, &self.events);
                return;
            }
        };
        let Some(l) = self.led.get_mut(&partition) else {
            return;
        };
        if l.epoch != leader_epoch {
            return;
        }
        l.log_end = l.log_end.max(log_end);
        // Keep the tail contiguous: a chunk that does not follow the last one starts afresh.
        if l.tail.back().is_some_and(|(_, next, _)| *next != from) {
            l.tail.clear();
            l.tail_bytes = 0;
        }
        l.tail_bytes += bytes.len();
        l.tail.push_back((from, log_end, Arc::new(bytes)));
        while l.tail_bytes > TAIL_BYTES && l.tail.len() > 1 {
            if let Some((_, _, b)) = l.tail.pop_front() {
                l.tail_bytes -= b.len();
            }
        }
        self.hw_dirty.insert(partition);
        self.pump_dirty.insert(partition);
    }

    fn clock_us(&self) -> u64 {
        self.clock0.elapsed().as_micros() as u64
    }

    fn on_fetch(&mut self, stream: u64, req: FetchRequest) {
        let follower = req.follower_id;
        let heard =
            (req.echo_clock_us > 0).then(|| self.clock0 + Duration::from_micros(req.echo_clock_us));
        if let Some(s) = self.streams.get_mut(&stream) {
            s.0 = Some(follower);
        }
        let now = Instant::now();
        let mut errors = Vec::new();
        for pf in req.partitions {
            let p = pf.partition;
            let Some(l) = self.led.get_mut(&p) else {
                errors.push(error_data(p, 0, FetchError::NOT_LEADER, "not the leader"));
                continue;
            };
            if pf.leader_epoch != l.epoch {
                let e = if pf.leader_epoch < l.epoch {
                    FetchError::FENCED_EPOCH
                } else {
                    FetchError::UNKNOWN_EPOCH
                };
                errors.push(error_data(p, l.epoch, e, "leader epoch mismatch"));
                continue;
            }
            if !l.replicas.contains(&follower) {
                errors.push(error_data(
                    p,
                    l.epoch,
                    FetchError::NOT_LEADER,
                    "not a replica of this partition",
                ));
                continue;
            }
            let since = l.since;
            let f = l.followers.entry(follower).or_insert(FollowerPos {
                stream,
                acked: pf.fetch_offset,
                sent: pf.fetch_offset,
                inflight: Inflight::default(),
                validated: false,
                reading: false,
                validate_epoch: None,
                progress: now,
                last_fetch: now,
                last_heard: since,
                last_caught_up: since,
                end_at_last_fetch: u64::MAX,
                told_hw: 0,
                storage: req.storage_id,
            });
            if let Some(h) = heard {
                f.last_heard = f.last_heard.max(h);
            }
            if f.stream != stream || f.storage != req.storage_id {
                // The follower reconnected: start over on the new stream.
                f.stream = stream;
                f.storage = req.storage_id;
                f.validated = false;
                f.inflight.clear();
            }
            if pf.fetch_offset >= f.end_at_last_fetch || pf.fetch_offset >= l.log_end {
                f.last_caught_up = if pf.fetch_offset >= l.log_end {
                    now
                } else {
                    f.last_fetch
                };
            }
            f.end_at_last_fetch = l.log_end;
            f.last_fetch = now;
            if pf.fetch_offset > f.acked {
                f.progress = now;
            }
            f.acked = f.acked.max(pf.fetch_offset);
            f.inflight.ack(f.acked);
            if pf.validate && l.isr.contains(&follower) && pf.fetch_offset < l.hw {
                // An in-sync replica whose log is now shorter than the high watermark lost
                // records it had acknowledged (a wiped disk): it leaves the ISR at once.
                warn!(
                    "partition {p}: in-sync follower {follower} came back with log end {} below the high watermark {}",
                    pf.fetch_offset, l.hw
                );
                f.last_caught_up = now
                    .checked_sub(self.s.lag_max * 2)
                    .unwrap_or(f.last_caught_up);
            }
            if pf.validate {
                f.validated = false;
                f.acked = pf.fetch_offset;
                f.sent = pf.fetch_offset;
                f.inflight.clear();
                f.validate_epoch = Some(pf.last_fetched_epoch);
                // A read already under way answers an older request: `on_read_done` drops it
                // and starts this validation then.
                if !f.reading {
                    f.reading = true;
                    let read = (p, follower, l.epoch, pf.fetch_offset);
                    read_for(
                        &self.router,
                        &self.events,
                        read,
                        Some(pf.last_fetched_epoch),
                    );
                }
            } else if !f.validated && !f.reading {
                // A stream this leader has not validated (e.g. it just took over): the
                // follower must check its log against this leader's history first.
                errors.push(error_data(
                    p,
                    l.epoch,
                    FetchError::NOT_LEADER,
                    "validate the log first",
                ));
            } else if f.sent < f.acked {
                f.sent = f.acked;
            }
            self.hw_dirty.insert(p);
            self.pump_dirty.insert(p);
        }
        if !errors.is_empty() {
            let mut r = FetchResponse::new();
            r.partitions = errors;
            self.send_to_stream(stream, r);
        }
    }

    fn send_to_stream(&mut self, stream: u64, mut r: FetchResponse) {
        r.leader_clock_us = self.clock_us();
        if let Some((_, sink)) = self.streams.get_mut(&stream)
            && let Err(e) = sink.send(r)
        {
            debug!("replication stream {stream}: {e}");
            self.streams.remove(&stream);
        }
    }

    fn on_read_done(&mut self, p: u32, follower: u32, reply: ReplReply) {
        let Some(l) = self.led.get_mut(&p) else {
            return;
        };
        let hw = l.hw;
        let horizon = l.sent_horizon;
        let epoch = l.epoch;
        let Some(f) = l.followers.get_mut(&follower) else {
            return;
        };
        f.reading = false;
        self.pump_dirty.insert(p);
        let stream = f.stream;
        let stale = matches!(&reply, ReplReply::Records { from, .. } if *from != f.sent)
            || (matches!(&reply, ReplReply::Diverging { .. }) && f.validate_epoch.is_none());
        if stale {
            // The follower asked again meanwhile: answer its newest request.
            if let Some(last_epoch) = f.validate_epoch {
                f.reading = true;
                let read = (p, follower, epoch, f.sent);
                read_for(&self.router, &self.events, read, Some(last_epoch));
            }
            return;
        }
        let mut d = PartitionData::new();
        d.partition = p;
        d.leader_epoch = epoch;
        d.high_watermark = hw;
        d.merge_horizon = horizon;
        match reply {
            ReplReply::Records {
                from,
                bytes,
                next,
                log_end,
                log_start,
                ..
            } => {
                f.validated = true;
                f.validate_epoch = None;
                d.log_end = log_end;
                d.log_start = log_start;
                d.from = from;
                d.next_offset = next;
                f.sent = next;
                f.told_hw = hw;
                f.inflight.push(next, bytes.len());
                d.records = bytes;
                l.log_end = l.log_end.max(log_end);
            }
            ReplReply::Diverging {
                epoch: de,
                end,
                log_end,
                ..
            } => {
                f.validate_epoch = None;
                d.diverging = true;
                d.diverging_epoch = de;
                d.diverging_end = end;
                d.log_end = log_end;
            }
            ReplReply::Bootstrap => {
                f.validate_epoch = None;
                d.bootstrap = true;
            }
            ReplReply::WrongRole { .. } => {
                d.error = FetchError::NOT_LEADER.into();
                d.message = "not the leader in this epoch".into();
            }
            ReplReply::Failed(e) => {
                d.error = FetchError::STORAGE.into();
                d.message = e;
            }
            _ => return,
        }
        let mut r = FetchResponse::new();
        r.partitions.push(d);
        self.send_to_stream(stream, r);
    }

    /// True when some validated follower lacks records already in the tail.
    fn has_unsent(&self) -> bool {
        self.pump_dirty.iter().any(|p| {
            self.led.get(p).is_some_and(|l| {
                l.followers
                    .values()
                    .any(|f| f.validated && !f.reading && f.sent < l.log_end)
            })
        })
    }

    /// Sends every validated follower what it lacks, from the tail or via worker reads.
    fn pump_all(&mut self) {
        let mut batches: HashMap<u64, FetchResponse> = HashMap::new();
        let mut reads = Vec::new();
        for p in std::mem::take(&mut self.pump_dirty) {
            let Some(l) = self.led.get_mut(&p) else {
                continue;
            };
            let base = l.data_template(p);
            for (&fid, f) in l.followers.iter_mut() {
                if !f.validated || f.reading {
                    continue;
                }
                if f.sent >= l.log_end || f.inflight.bytes >= INFLIGHT_BYTES {
                    continue;
                }
                // The tail is contiguous, so sorted by `from`: a binary search, not a scan
                // of what may be many thousands of small chunks.
                let at = l.tail.partition_point(|(from, _, _)| *from < f.sent);
                if l.tail.get(at).is_none_or(|(from, _, _)| *from != f.sent) {
                    f.reading = true;
                    reads.push((p, fid, l.epoch, f.sent));
                    continue;
                }
                // Every chunk the follower lacks (up to the in-flight budget) in one push:
                // one append for the follower's worker, however many turns it spans.
                let mut d = base.clone();
                d.from = f.sent;
                (d.records, d.next_offset) = gather(&l.tail, at, INFLIGHT_BYTES - f.inflight.bytes);
                f.told_hw = l.hw;
                f.inflight.push(d.next_offset, d.records.len());
                f.sent = d.next_offset;
                batches.entry(f.stream).or_default().partitions.push(d);
            }
        }
        for (stream, r) in batches {
            self.send_to_stream(stream, r);
        }
        for read in reads {
            read_for(&self.router, &self.events, read, None);
        }
    }

    /// HW = lowest position over the replicas that count; lease = until the first in-sync
    /// follower's last fetch plus the lease. Sent to the worker when they change.
    fn recompute_hw(&mut self, p: u32) {
        let me = self.s.me;
        let lease = self.s.lease;
        let Some(l) = self.led.get_mut(&p) else {
            return;
        };
        let mut hw = l.log_end;
        // The lease holds while ANY in-sync follower has answered a recent ping: a paused
        // leader hears from none (their queued requests echo old pings), and a leader cut
        // off from ZooKeeper fences itself on disconnection, before its session can expire.
        let mut lease_base: Option<Instant> = None;
        let mut followers_in_isr = false;
        for r in &l.isr {
            if *r == me {
                continue;
            }
            followers_in_isr = true;
            match l.followers.get(r) {
                Some(f) if f.validated => {
                    hw = hw.min(f.acked);
                    lease_base = Some(lease_base.map_or(f.last_heard, |b| b.max(f.last_heard)));
                }
                _ => hw = hw.min(l.hw),
            }
        }
        let lease_until = if followers_in_isr {
            lease_base.unwrap_or(l.since).max(l.since) + lease
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        if hw > l.hw {
            l.hw = hw;
        }
        let horizon = merge_horizon(&l.replicas, me, &l.followers, l.hw);
        let changed_lease =
            lease_until > l.sent_lease + Duration::from_millis(20) || lease_until < l.sent_lease;
        let isr = l.isr.len();
        if l.hw != l.sent_hw || changed_lease || horizon != l.sent_horizon || isr != l.sent_isr {
            l.sent_hw = l.hw;
            l.sent_lease = lease_until;
            l.sent_horizon = horizon;
            l.sent_isr = isr;
            let w = self.router.topo.worker_of(p);
            self.router.send(
                w,
                Msg::Hw {
                    partition: p,
                    leader_epoch: l.epoch,
                    hw: l.hw,
                    lease_until,
                    horizon,
                    isr,
                },
            );
        }
    }

    /// The storage ids of `isr`'s members as this leader knows them (its own, and those its
    /// followers fetch with).
    fn storage_of(&self, p: u32, isr: &[u32]) -> BTreeMap<u32, u64> {
        let Some(l) = self.led.get(&p) else {
            return BTreeMap::new();
        };
        isr.iter()
            .filter_map(|&b| {
                let id = match b == self.s.me {
                    true => self.s.storage,
                    false => l.followers.get(&b)?.storage,
                };
                (id != 0).then_some((b, id))
            })
            .collect()
    }

    fn on_tick(&mut self) {
        let dial = self.dial();
        self.forwarder.tick(&self.routes, &dial, &self.events);
        let now = Instant::now();
        // Resends below, and a safety net: every partition gets a pump pass per tick.
        self.pump_dirty.extend(self.led.keys().copied());
        self.retiring
            .retain(|_, (_, since)| now.duration_since(*since) < STUCK_AFTER);
        let lag_max = self.s.lag_max;
        let me = self.s.me;
        let mut changes = Vec::new();
        let mut ask = Vec::new();
        for l in self.led.values_mut() {
            // Records sent but never acknowledged (the follower dropped them): send again.
            for f in l.followers.values_mut() {
                if f.validated && f.sent > f.acked && now.duration_since(f.progress) > STUCK_AFTER {
                    f.sent = f.acked;
                    f.inflight.clear();
                    f.progress = now;
                }
            }
        }
        for (&p, l) in self.led.iter_mut() {
            if l.isr_pending {
                continue;
            }
            // Shrink: an in-sync follower that has not caught up for lag_max.
            let stale: Vec<u32> = l
                .isr
                .iter()
                .copied()
                .filter(|&r| r != me)
                .filter(|r| {
                    let last = l.followers.get(r).map_or(l.since, |f| f.last_caught_up);
                    now.duration_since(last) > lag_max
                })
                .collect();
            if !stale.is_empty() {
                let isr: Vec<u32> = l
                    .isr
                    .iter()
                    .copied()
                    .filter(|r| !stale.contains(r))
                    .collect();
                warn!(
                    "partition {p}: followers {stale:?} fell behind; shrinking the ISR to {isr:?}"
                );
                l.isr_pending = true;
                changes.push((p, l.epoch, isr));
                continue;
            }
            // Nobody joins before the leadership's start is known.
            if l.epoch_start.is_none() && now.duration_since(l.position_asked) > RETRY_POSITION {
                l.position_asked = now;
                ask.push((p, l.epoch));
            }
            let floor = l.epoch_start.map(|s| s.max(l.hw));
            let joining = floor.map_or_else(Vec::new, |floor| {
                joiners(p, &l.isr, floor, &l.followers, &self.routes, now, lag_max)
            });
            if !joining.is_empty() {
                let mut isr = l.isr.clone();
                isr.extend(joining);
                info!("partition {p}: followers caught up; growing the ISR to {isr:?}");
                // Counted for the HW from now on, before ZooKeeper has it.
                l.isr = isr.clone();
                l.isr_pending = true;
                changes.push((p, l.epoch, isr));
            }
        }
        let mut storage = BTreeMap::new();
        for (p, _, isr) in &changes {
            storage.insert(*p, self.storage_of(*p, isr));
        }
        for (p, epoch) in ask {
            self.ask_own_position(p, epoch);
        }
        for (p, epoch, isr) in changes {
            let ev = self.events.clone();
            let isr2 = isr.clone();
            (self.control.change_isr)(
                p,
                epoch,
                isr,
                storage.remove(&p).unwrap_or_default(),
                Box::new(move |result| {
                    let _ = ev.send(Event::IsrDone {
                        partition: p,
                        epoch,
                        isr: isr2,
                        result,
                    });
                }),
            );
        }
        let led: Vec<u32> = self.led.keys().copied().collect();
        for p in led {
            self.recompute_hw(p);
        }
        // Pings: every follower stream gets the leader's clock to echo (see the lease), and
        // the high watermarks its records have not carried yet.
        let mut hw_news = self.hw_updates();
        let streams: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, (f, _))| f.is_some())
            .map(|(id, _)| *id)
            .collect();
        for s in streams {
            let mut r = FetchResponse::new();
            r.partitions = hw_news.remove(&s).unwrap_or_default();
            self.send_to_stream(s, r);
        }
        self.follower_tick(now);
    }

    /// Records carry the high watermark; when it moves after the last records a follower got
    /// (nothing written since), the follower learns it from the next ping, with an entry
    /// without records, by stream. A node that led the partition before a leadership move
    /// waits for it to answer the writes it had in flight (see the worker's `advance`).
    fn hw_updates(&mut self) -> HashMap<u64, Vec<PartitionData>> {
        let mut out: HashMap<u64, Vec<PartitionData>> = HashMap::new();
        for (&p, l) in self.led.iter_mut() {
            let base = l.data_template(p);
            for f in l.followers.values_mut() {
                if !f.validated || f.reading || f.sent < l.log_end || f.told_hw >= l.hw {
                    continue;
                }
                let mut d = base.clone();
                d.from = f.sent;
                d.next_offset = f.sent;
                f.told_hw = l.hw;
                out.entry(f.stream).or_default().push(d);
            }
        }
        out
    }

    // ---------------------------------------------------------- follower side

    fn follower_tick(&mut self, now: Instant) {
        let parts: Vec<u32> = self.followed.keys().copied().collect();
        for p in parts {
            let Some(f) = self.followed.get_mut(&p) else {
                continue;
            };
            let due = match f.state {
                FState::Backoff(t) => now >= t,
                // An answer that never came (a stream that died quietly, a request lost in a
                // leader change): start over.
                FState::Positioning | FState::Validating | FState::Truncating => {
                    now.duration_since(f.since) > STUCK_AFTER
                }
                FState::Bootstrapping => now.duration_since(f.since) > BOOTSTRAP_STUCK_AFTER,
                FState::Fetching => false,
            };
            if due {
                if !matches!(f.state, FState::Backoff(_)) {
                    debug!("partition {p}: no answer in {:?}; starting over", f.state);
                }
                self.start_following(p);
            }
        }
        // Heartbeats: positions of every partition being fetched, per leader.
        let mut by_leader: BTreeMap<u32, Vec<PartitionFetch>> = BTreeMap::new();
        for (&p, f) in &self.followed {
            if f.state == FState::Fetching {
                by_leader
                    .entry(f.leader)
                    .or_default()
                    .push(fetch_of(p, f, false));
            }
        }
        for (leader, parts) in by_leader {
            let due = self
                .conns
                .get(&leader)
                .is_some_and(|c| now.duration_since(c.last_heartbeat) >= HEARTBEAT);
            if due {
                if let Some(c) = self.conns.get_mut(&leader) {
                    c.last_heartbeat = now;
                }
                self.send_fetch(leader, parts);
            }
        }
    }

    /// Sends this round's acknowledgements: one request per leader.
    fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut by_leader: BTreeMap<u32, Vec<PartitionFetch>> = BTreeMap::new();
        for p in std::mem::take(&mut self.acks) {
            if let Some(f) = self.followed.get(&p)
                && f.state == FState::Fetching
            {
                by_leader
                    .entry(f.leader)
                    .or_default()
                    .push(fetch_of(p, f, false));
            }
        }
        for (leader, parts) in by_leader {
            self.send_fetch(leader, parts);
        }
    }

    fn start_following(&mut self, p: u32) {
        let Some(f) = self.followed.get_mut(&p) else {
            return;
        };
        f.state = FState::Positioning;
        f.since = Instant::now();
        let epoch = f.epoch;
        let ev = self.events.clone();
        self.submit(p, ReplOp::Position { partition: p }, move |r| {
            let _ = ev.send(Event::FollowerReply {
                partition: p,
                epoch,
                reply: payload_reply(r),
            });
        });
    }

    fn ensure_conn(&mut self, leader: u32) -> bool {
        if self.conns.contains_key(&leader) {
            return true;
        }
        let Some(addr) = self.routes.nodes.get(&leader).map(|n| n.grpc.clone()) else {
            return false;
        };
        // No BDP probing (see `GrpcServer::start_with`). A push carries whole records, so a
        // message may be larger than gRPC's default 4 MiB: the limit is the largest record
        // (key and value at their hard limits) plus what a push holds besides it.
        let ch = ChannelBuilder::new(self.env.clone())
            .http2_bdp_probe(false)
            .max_receive_message_len(MAX_PUSH_MESSAGE)
            .connect(&addr);
        let client = ReplicationClient::new(ch);
        let (sink, mut receiver) = match client.fetch_opt(self.dial().opt()) {
            Ok(x) => x,
            Err(e) => {
                warn!("cannot open a replication stream to node {leader} at {addr}: {e}");
                return false;
            }
        };
        let generation = self.next_gen;
        self.next_gen += 1;
        let sink = DirectSink::new(
            sink,
            sink_waker(&self.events, SinkId::Conn(leader, generation)),
        );
        let ev = self.events.clone();
        client.spawn(async move {
            loop {
                match receiver.next().await {
                    Some(Ok(resp)) => {
                        if ev
                            .send(Event::LeaderData {
                                leader,
                                generation,
                                resp,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = ev.send(Event::LeaderDown {
                            leader,
                            generation,
                            reason: e.to_string(),
                        });
                        return;
                    }
                    None => {
                        let _ = ev.send(Event::LeaderDown {
                            leader,
                            generation,
                            reason: "closed".into(),
                        });
                        return;
                    }
                }
            }
        });
        debug!("replication stream to node {leader} at {addr} opened");
        self.conns.insert(
            leader,
            LeaderConn {
                generation,
                sink,
                last_sent: Instant::now(),
                last_heartbeat: Instant::now(),
                echo: 0,
                _client: client,
            },
        );
        true
    }

    fn send_fetch(&mut self, leader: u32, parts: Vec<PartitionFetch>) {
        if !self.ensure_conn(leader) {
            let retry = Instant::now() + Duration::from_millis(300);
            for f in self.followed.values_mut() {
                if f.leader == leader {
                    f.state = FState::Backoff(retry);
                    f.since = Instant::now();
                }
            }
            return;
        }
        let mut req = FetchRequest::new();
        req.follower_id = self.s.me;
        req.storage_id = self.s.storage;
        req.partitions = parts;
        if let Some(c) = self.conns.get_mut(&leader) {
            req.echo_clock_us = c.echo;
            c.last_sent = Instant::now();
            if let Err(e) = c.sink.send(req) {
                self.conn_broken(leader, &e.to_string());
            }
        }
    }

    /// The stream to `leader` is gone: its partitions retry after a pause.
    fn conn_broken(&mut self, leader: u32, reason: &str) {
        match self.broken_logged.get_mut(&leader) {
            Some((last, at, n)) if last == reason && at.elapsed() < BROKEN_LOG_EVERY => {
                *n += 1;
                debug!("replication stream from node {leader} ended: {reason}");
            }
            _ => {
                let again = match self.broken_logged.get(&leader) {
                    Some((last, _, n)) if last == reason && *n > 0 => {
                        format!(" ({n} more times since the last report)")
                    }
                    _ => String::new(),
                };
                warn!("replication stream from node {leader} ended: {reason}{again}");
                self.broken_logged
                    .insert(leader, (reason.to_string(), Instant::now(), 0));
            }
        }
        self.conns.remove(&leader);
        let retry = Instant::now() + Duration::from_millis(200);
        for f in self.followed.values_mut() {
            if f.leader == leader {
                f.state = FState::Backoff(retry);
                f.since = Instant::now();
            }
        }
    }

    /// `copy`: the reply is a bootstrap thread's, for that copy.
    fn on_follower_reply(&mut self, p: u32, epoch: u32, reply: ReplReply, copy: Option<u64>) {
        // A leader's own position request (tagged with an epoch no follower uses).
        if epoch > u32::MAX / 2 {
            let lepoch = u32::MAX - epoch;
            if let (Some(l), ReplReply::Position { log_end, .. }) = (self.led.get_mut(&p), &reply)
                && l.epoch == lepoch
            {
                l.epoch_start.get_or_insert(*log_end);
                l.log_end = l.log_end.max(*log_end);
                self.pump_dirty.insert(p);
                self.recompute_hw(p);
            }
            return;
        }
        let Some(f) = self.followed.get_mut(&p) else {
            return;
        };
        let current = match copy {
            Some(c) => f.state == FState::Bootstrapping && c == f.copy,
            None => f.state != FState::Bootstrapping,
        };
        if f.epoch != epoch || !current {
            return;
        }
        match reply {
            ReplReply::Position {
                log_end,
                last_epoch,
            } => {
                f.log_end = log_end;
                f.last_epoch = last_epoch;
                match f.state {
                    FState::Positioning | FState::Truncating | FState::Bootstrapping => {
                        f.state = FState::Validating;
                        f.since = Instant::now();
                        f.expect = log_end;
                        let leader = f.leader;
                        let pf = fetch_of(p, f, true);
                        self.send_fetch(leader, vec![pf]);
                    }
                    FState::Fetching => {
                        // An append landed: acknowledged with the others of this round.
                        self.acks.insert(p);
                    }
                    _ => {}
                }
            }
            ReplReply::WrongRole { .. } => {
                // The worker has not taken the new routes yet: try again shortly.
                f.state = FState::Backoff(Instant::now() + Duration::from_millis(100));
                f.since = Instant::now();
            }
            ReplReply::Failed(e) => {
                warn!("partition {p}: replication on this follower failed: {e}");
                f.state = FState::Backoff(Instant::now() + Duration::from_millis(500));
                f.since = Instant::now();
            }
            _ => {}
        }
    }

    fn on_leader_data(&mut self, leader: u32, generation: u64, resp: FetchResponse) {
        match self.conns.get_mut(&leader) {
            Some(c) if c.generation == generation => c.echo = c.echo.max(resp.leader_clock_us),
            _ => return,
        }
        for d in resp.partitions {
            let p = d.partition;
            let Some(f) = self.followed.get_mut(&p) else {
                continue;
            };
            if f.leader != leader {
                continue;
            }
            // An error carries the epoch the leader knows (0 when it does not lead the
            // partition yet): it answers this follower's request whatever that epoch is, and
            // ignoring it left the follower waiting for nothing until its retry timer.
            if d.error.value() != FetchError::NONE as i32 {
                if !matches!(f.state, FState::Backoff(_) | FState::Bootstrapping) {
                    debug!(
                        "partition {p}: leader {leader} answered {:?}: {}",
                        d.error, d.message
                    );
                    f.state = FState::Backoff(Instant::now() + Duration::from_millis(50));
                    f.since = Instant::now();
                }
                continue;
            }
            if f.epoch != d.leader_epoch {
                continue;
            }
            if d.bootstrap {
                if f.state != FState::Validating {
                    continue;
                }
                f.state = FState::Bootstrapping;
                f.since = Instant::now();
                self.copies += 1;
                f.copy = self.copies;
                let (epoch, copy) = (f.epoch, f.copy);
                self.start_bootstrap(p, leader, epoch, copy);
                continue;
            }
            if d.diverging {
                if f.state != FState::Validating {
                    continue;
                }
                f.state = FState::Truncating;
                f.since = Instant::now();
                let epoch = f.epoch;
                let ev = self.events.clone();
                self.submit(
                    p,
                    ReplOp::Truncate {
                        partition: p,
                        leader_epoch: epoch,
                        epoch: d.diverging_epoch,
                        end: d.diverging_end,
                    },
                    move |r| {
                        let _ = ev.send(Event::FollowerReply {
                            partition: p,
                            epoch,
                            reply: payload_reply(r),
                        });
                    },
                );
                continue;
            }
            if !matches!(f.state, FState::Validating | FState::Fetching) {
                continue;
            }
            if d.from != f.expect {
                if f.state == FState::Fetching {
                    // Out of step with the leader's stream: validate again, which resets the
                    // leader's idea of this follower's position.
                    debug!(
                        "partition {p}: records from {} while expecting {}; re-validating",
                        d.from, f.expect
                    );
                    f.state = FState::Backoff(Instant::now());
                    f.since = Instant::now();
                }
                continue;
            }
            f.state = FState::Fetching;
            f.since = Instant::now();
            f.expect = d.next_offset.max(d.from);
            let epoch = f.epoch;
            let ev = self.events.clone();
            self.submit(
                p,
                ReplOp::Append {
                    partition: p,
                    leader_epoch: epoch,
                    from: d.from,
                    bytes: d.records,
                    leader_hw: d.high_watermark,
                    leader_horizon: d.merge_horizon,
                },
                move |r| {
                    let _ = ev.send(Event::FollowerReply {
                        partition: p,
                        epoch,
                        reply: payload_reply(r),
                    });
                },
            );
        }
    }
}

/// The followers of a led partition that may join its ISR: live ones that are caught up as
/// Kafka counts it: acknowledged up to `floor` (the high watermark, which never moves back,
/// so a joiner holds every acknowledged write, and the log end when the leadership began:
/// `LedPart::epoch_start`) and, recently, the leader's log end as it was at their previous
/// fetch (`last_caught_up`: under a steady write load the log end moves on while a push is
/// on its way, so waiting for a follower to be at the log end itself kept it out for as long
/// as the load lasted), that answered a recent ping (a paused one has the log end too when nothing was
/// written, but it must not join: the controller would drop it again, and the leader's lease
/// would rest on a node that is not there), and are not in a controlled shutdown (the
/// controller takes those out of every ISR; taking one back made the ISR flap until it
/// stopped).
fn joiners(
    p: u32,
    isr: &[u32],
    floor: u64,
    followers: &BTreeMap<u32, FollowerPos>,
    routes: &RouteTable,
    now: Instant,
    lag_max: Duration,
) -> Vec<u32> {
    followers
        .iter()
        .filter(|(id, f)| {
            !isr.contains(id)
                && routes.nodes.contains_key(id)
                && !routes.shutting_down.contains(id)
                && !routes.cannot_lead.contains(&(**id, p))
                && f.validated
                && f.acked >= floor
                && now.saturating_duration_since(f.last_caught_up) < lag_max / 2
                && now.saturating_duration_since(f.last_heard) < lag_max / 2
        })
        .map(|(id, _)| *id)
        .collect()
}

/// The merge horizon of a led partition: the lowest position of every replica, in sync or
/// not, at most the HW; tombstones below it may be dropped (here and, sent with the records,
/// on the followers). A replica never heard from holds it at 0, and so does one whose log
/// has not been checked against this leader's yet: the log end it claims may hold records
/// from an older epoch that it is about to cut (a deposed leader coming back), and a
/// tombstone dropped below that claim would never reach it.
fn merge_horizon(
    replicas: &[u32],
    me: u32,
    followers: &BTreeMap<u32, FollowerPos>,
    hw: u64,
) -> u64 {
    replicas
        .iter()
        .filter(|&&r| r != me)
        .map(|r| {
            followers
                .get(r)
                .filter(|f| f.validated)
                .map_or(0, |f| f.acked)
        })
        .min()
        .unwrap_or(u64::MAX)
        .min(hw)
}

/// Asks partition `p`'s worker for records for `follower` from `from` (validating the
/// follower's last epoch first when given); the answer comes back as `Event::ReadDone`.
fn read_for(
    router: &Router,
    events: &EventTx,
    (p, follower, leader_epoch, from): (u32, u32, u32, u64),
    validate: Option<u32>,
) {
    let ev = events.clone();
    let op = ReplOp::Read {
        partition: p,
        leader_epoch,
        from,
        max_bytes: READ_BYTES,
        validate,
    };
    router.submit(router.topo.worker_of(p), Op::Repl(op), move |r| {
        let _ = ev.send(Event::ReadDone {
            partition: p,
            follower,
            reply: payload_reply(r),
        });
    });
}

fn fetch_of(p: u32, f: &FollowedPart, validate: bool) -> PartitionFetch {
    let mut pf = PartitionFetch::new();
    pf.partition = p;
    pf.leader_epoch = f.epoch;
    pf.fetch_offset = f.log_end;
    pf.last_fetched_epoch = f.last_epoch;
    pf.validate = validate;
    pf
}

fn error_data(p: u32, epoch: u32, e: FetchError, msg: &str) -> PartitionData {
    let mut d = PartitionData::new();
    d.partition = p;
    d.leader_epoch = epoch;
    d.error = e.into();
    d.message = msg.into();
    d
}

impl State {
    fn dial(&self) -> Dial {
        Dial {
            env: self.env.clone(),
            secret: self.s.secret.clone(),
        }
    }

    /// Copies the leader's snapshot of `p` on a thread of its own (file I/O and a blocking
    /// stream), then installs it through the worker; the outcome comes back as a
    /// `FollowerReply` like any other step.
    fn start_bootstrap(&mut self, p: u32, leader: u32, epoch: u32, copy: u64) {
        let Some(addr) = self.routes.nodes.get(&leader).map(|n| n.grpc.clone()) else {
            return;
        };
        let router = self.router.clone();
        let ev = self.events.clone();
        let dial = self.dial();
        let me = self.s.me;
        let spawned = std::thread::Builder::new()
            .name(format!("skv-bootstrap-{p}"))
            .spawn(move || {
                let reply = match bootstrap(&router, &dial, &addr, me, p, epoch, copy) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!("partition {p}: copying the leader's segments failed: {e}");
                        ReplReply::Failed(e)
                    }
                };
                let _ = ev.send(Event::Bootstrapped {
                    partition: p,
                    epoch,
                    copy,
                    reply,
                });
            });
        if let Err(e) = spawned {
            warn!("partition {p}: cannot start the segment copy: {e}");
        }
    }
}

/// Runs a replication op on the owning worker and waits for its answer.
fn ask(router: &Router, p: u32, op: ReplOp) -> Result<ReplReply, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    router.submit(router.topo.worker_of(p), Op::Repl(op), move |r| {
        let _ = tx.send(payload_reply(r));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the worker did not answer".to_string())
}

/// Copy `copy` (numbered uniquely on this node) of partition `p` from the leader at `addr`.
fn bootstrap(
    router: &Router,
    dial: &Dial,
    addr: &str,
    me: u32,
    p: u32,
    epoch: u32,
    copy: u64,
) -> Result<ReplReply, String> {
    // A failed copy would otherwise stay staged until the next copy or role change, holding
    // the partition's merges back (the worker removes it only if it is still the copy
    // staged). The staging directory is named after the copy number, so that a staging
    // answer that came too late is covered too.
    let drop_copy = || {
        let _ = ask(
            router,
            p,
            ReplOp::DropCopy {
                partition: p,
                token: copy,
            },
        );
    };
    let staging = match ask(
        router,
        p,
        ReplOp::Staging {
            partition: p,
            leader_epoch: epoch,
            token: copy,
        },
    ) {
        Ok(ReplReply::Snapshot { dir, .. }) => dir,
        Ok(other) => return Err(format!("no staging directory: {other:?}")),
        Err(e) => {
            drop_copy();
            return Err(e);
        }
    };
    let result = copy_and_install(router, dial, addr, me, p, epoch, &staging);
    if !matches!(result, Ok(ReplReply::Position { .. })) {
        drop_copy();
    }
    result
}

/// Copies the leader's snapshot into `staging`, checks it, and asks the worker to install it.
fn copy_and_install(
    router: &Router,
    dial: &Dial,
    addr: &str,
    me: u32,
    p: u32,
    epoch: u32,
    staging: &std::path::Path,
) -> Result<ReplReply, String> {
    use std::io::{Seek, Write};
    let client = ReplicationClient::new(ChannelBuilder::new(dial.env.clone()).connect(addr));
    let mut req = SnapshotRequest::new();
    req.partition = p;
    req.leader_epoch = epoch;
    req.follower_id = me;
    let stream = client
        .snapshot_opt(&req, dial.opt())
        .map_err(|e| e.to_string())?;
    let mut epochs = Vec::new();
    let mut end = 0;
    let mut bytes = 0u64;
    let mut open: Option<(String, std::fs::File)> = None;
    let mut done = false;
    for chunk in futures::executor::block_on_stream(stream) {
        let c = chunk.map_err(|e| e.to_string())?;
        if !c.error.is_empty() {
            return Err(c.error);
        }
        if !c.epochs.is_empty() || c.end > 0 {
            end = c.end;
            epochs = c.epochs.iter().map(|e| (e.epoch, e.start_lsn)).collect();
        }
        if !c.file.is_empty() {
            // Names come from the leader: accept plain segment and hint file names only.
            let ok = (c.file.ends_with(".log") || c.file.ends_with(".hint"))
                && !c.file.contains('/')
                && !c.file.starts_with('.');
            if !ok {
                return Err(format!("unexpected file name {:?}", c.file));
            }
            if open.as_ref().is_none_or(|(n, _)| *n != c.file) {
                let f = std::fs::File::create(staging.join(&c.file)).map_err(|e| e.to_string())?;
                open = Some((c.file.clone(), f));
            }
            if let Some((_, f)) = open.as_mut() {
                f.seek(std::io::SeekFrom::Start(c.offset))
                    .and_then(|_| f.write_all(&c.data))
                    .map_err(|e| e.to_string())?;
                bytes += c.data.len() as u64;
            }
        }
        if c.done {
            done = true;
            break;
        }
    }
    if !done {
        return Err("the snapshot stream ended early".into());
    }
    for e in std::fs::read_dir(staging).map_err(|e| e.to_string())? {
        let f =
            std::fs::File::open(e.map_err(|e| e.to_string())?.path()).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
    }
    info!(
        "partition {p}: copied {bytes} bytes of closed segments from the leader (up to LSN {end})"
    );
    // The epoch history goes in with the segments, and the worker gives its log up only
    // for a copy that opens and ends no later than the leader's snapshot (opened here, so
    // the worker does not build the keydir twice).
    if !staging.is_dir() {
        // Removed by a newer copy or a role change: opening would create an empty store.
        return Err("the staging directory is gone (a newer copy or a role change)".into());
    }
    let mut cache = simplekv_engine::LeaderEpochCache::load(staging).map_err(|e| e.to_string())?;
    for &(e, start) in &epochs {
        cache.assign(e, start).map_err(|e| e.to_string())?;
    }
    let copied = simplekv_engine::Store::open(staging, simplekv_engine::Options::default())
        .map_err(|e| format!("the copied segments do not open: {e}"))?;
    if copied.log_end() > end {
        return Err(format!(
            "the copied segments end at LSN {}, past the leader's snapshot ({end})",
            copied.log_end()
        ));
    }
    drop(copied);
    std::fs::File::open(staging)
        .and_then(|d| d.sync_all())
        .map_err(|e| e.to_string())?;
    ask(
        router,
        p,
        ReplOp::Install {
            partition: p,
            leader_epoch: epoch,
            staging: staging.to_path_buf(),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use simplekv_net::server::cluster::{NodeAddr, RouteTable};

    use super::{FollowerPos, Inflight, gather, joiners, merge_horizon};

    fn follower(acked: u64, validated: bool) -> FollowerPos {
        let now = Instant::now();
        FollowerPos {
            stream: 1,
            acked,
            sent: acked,
            inflight: Inflight::default(),
            validated,
            reading: false,
            validate_epoch: None,
            progress: now,
            last_fetch: now,
            last_heard: now,
            last_caught_up: now,
            end_at_last_fetch: acked,
            told_hw: 0,
            storage: 0,
        }
    }

    #[test]
    fn the_merge_horizon_counts_only_positions_checked_against_this_leader() {
        let replicas = [1, 2, 3];
        let mut followers = BTreeMap::new();
        // Node 3 never heard from: nothing may go.
        followers.insert(2, follower(150, true));
        assert_eq!(merge_horizon(&replicas, 1, &followers, 200), 0);
        // Both followers checked: the lower position, capped by the HW.
        followers.insert(3, follower(120, true));
        assert_eq!(merge_horizon(&replicas, 1, &followers, 200), 120);
        assert_eq!(merge_horizon(&replicas, 1, &followers, 100), 100);
        // Node 3 came back claiming 180 (maybe records of an older epoch it will cut): until
        // its log is checked, it holds the horizon at 0.
        followers.insert(3, follower(180, false));
        assert_eq!(merge_horizon(&replicas, 1, &followers, 200), 0);
        // A leader alone: its HW.
        assert_eq!(merge_horizon(&[1], 1, &BTreeMap::new(), 200), 200);
    }

    #[test]
    fn only_live_caught_up_followers_not_shutting_down_join_the_isr() {
        let node = |id: u32| NodeAddr {
            id,
            resp: String::new(),
            grpc: String::new(),
        };
        let mut routes = RouteTable {
            me: 1,
            nodes: (1..=4).map(|i| (i, node(i))).collect(),
            ..RouteTable::default()
        };
        let lag = Duration::from_secs(10);
        let now = Instant::now();
        let mut followers = BTreeMap::new();
        followers.insert(2, follower(100, true));
        followers.insert(3, follower(100, true));
        followers.insert(4, follower(99, true));
        followers.insert(5, follower(100, true));
        // 4 is below the high watermark, 5 is not a live node, 2 is in the ISR already.
        assert_eq!(joiners(0, &[1, 2], 100, &followers, &routes, now, lag), [3]);
        // At the high watermark (the log end ahead of it under a write load), caught up
        // with the log end as of its previous fetch: it joins.
        assert_eq!(
            joiners(0, &[1, 2], 99, &followers, &routes, now, lag),
            [3, 4]
        );
        // Not caught up with the log end for half the lag limit: it does not.
        followers.get_mut(&4).unwrap().last_caught_up = now - lag / 2;
        assert_eq!(joiners(0, &[1, 2], 99, &followers, &routes, now, lag), [3]);
        followers.insert(4, follower(99, true));
        // Not checked against this leader's log yet.
        followers.insert(3, follower(100, false));
        assert!(joiners(0, &[1, 2], 100, &followers, &routes, now, lag).is_empty());
        followers.insert(3, follower(100, true));
        // Silent for half the lag limit or more: paused, maybe.
        let later = now + lag;
        assert!(joiners(0, &[1, 2], 100, &followers, &routes, later, lag).is_empty());
        // It could not lead this partition and has not written it since: not taken in; a
        // mark for another partition does not count.
        routes.cannot_lead.insert((3, 1));
        assert_eq!(joiners(0, &[1, 2], 100, &followers, &routes, now, lag), [3]);
        routes.cannot_lead.insert((3, 0));
        assert!(joiners(0, &[1, 2], 100, &followers, &routes, now, lag).is_empty());
        routes.cannot_lead.clear();
        // In a controlled shutdown: the controller took it out; it is not taken back.
        routes.shutting_down.insert(3);
        assert!(joiners(0, &[1, 2], 100, &followers, &routes, now, lag).is_empty());
    }

    #[test]
    fn a_push_joins_the_tail_chunks_a_follower_lacks_within_the_budget() {
        let chunk = |from: u64, next: u64, byte: u8| {
            (from, next, Arc::new(vec![byte; (next - from) as usize]))
        };
        let tail: VecDeque<_> = [chunk(10, 13, 1), chunk(13, 14, 2), chunk(14, 20, 3)].into();
        assert_eq!(
            gather(&tail, 0, 100),
            (vec![1, 1, 1, 2, 3, 3, 3, 3, 3, 3], 20)
        );
        assert_eq!(gather(&tail, 1, 100), (vec![2, 3, 3, 3, 3, 3, 3], 20));
        // The budget stops at a chunk's end, never inside one...
        assert_eq!(gather(&tail, 0, 9), (vec![1, 1, 1, 2], 14));
        // ...but the first chunk goes whatever its size.
        assert_eq!(gather(&tail, 2, 1), (vec![3; 6], 20));
    }

    #[test]
    fn inflight_keeps_the_total_of_unacknowledged_pushes() {
        let mut f = Inflight::default();
        f.push(10, 100);
        f.push(20, 50);
        f.push(30, 7);
        assert_eq!(f.bytes, 157);
        f.ack(9);
        assert_eq!(
            f.bytes, 157,
            "nothing below the first push's end is acknowledged"
        );
        f.ack(20);
        assert_eq!(
            (f.bytes, f.pushes.len()),
            (7, 1),
            "pushes ending at or below 20 go"
        );
        f.ack(25);
        assert_eq!(f.bytes, 7, "a push is acknowledged only when all of it is");
        f.push(40, 3);
        f.ack(40);
        assert_eq!((f.bytes, f.pushes.len()), (0, 0));
        f.push(50, 9);
        f.clear();
        assert_eq!((f.bytes, f.pushes.len()), (0, 0));
    }
}
