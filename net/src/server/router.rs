//! How keys find their worker, and the messages workers exchange.
//!
//! `slot = CRC16(key) mod 16384` (hash tags honoured); partition `p` owns a contiguous range of
//! slots; worker `p mod W` owns partition `p`. A command whose keys live on another worker goes
//! there as a [`Request`] over a crossbeam channel (the receiver is woken through its mio
//! `Waker`) and its reply comes back as a [`Response`] the same way.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use mio::Waker;

use crate::cmd::MultiKind;
use crate::slot::{SLOTS, key_slot};

/// CLIENT KILL's filters: a client is killed when every given one matches it.
#[derive(Debug, Clone, Default)]
pub struct KillFilter {
    pub addr: Option<String>,
    pub laddr: Option<String>,
    pub id: Option<u64>,
    /// A filter that no client matches (TYPE master or replica).
    pub nobody: bool,
    /// TYPE pubsub (true: clients that subscribe) or normal (false: the others).
    pub pubsub: Option<bool>,
    /// The client that sent the CLIENT KILL, never matched here: whether it goes is decided
    /// where it sent the command (SKIPME), and inside a transaction it may sit among its
    /// worker's connections when the kill runs there.
    pub caller: u64,
}

impl KillFilter {
    pub fn matches(&self, c: &super::conn::Client) -> bool {
        !self.nobody
            && c.id != self.caller
            && self.addr.as_deref().is_none_or(|a| a == c.addr)
            && self.laddr.as_deref().is_none_or(|a| a == c.local_addr)
            && self.id.is_none_or(|i| i == c.id)
            && self.pubsub.is_none_or(|p| p == c.subs.is_some())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub partitions: u32,
    pub workers: u32,
}

impl Topology {
    pub fn partition_of_slot(&self, slot: u16) -> u32 {
        (slot as u32 * self.partitions) / SLOTS as u32
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        self.partition_of_slot(key_slot(key))
    }

    /// The worker that owns `partition`: the workers own contiguous runs of partitions, as
    /// even as the counts allow. Not `partition mod workers`: a cluster's controller makes
    /// node `p mod nodes` the preferred leader of partition `p`, and where the node count
    /// divides the worker count (3 nodes of 6, 12 or 24 cores) each node's leaderships all
    /// fell on a third of its workers, the rest serving only replication.
    pub fn worker_of(&self, partition: u32) -> usize {
        let workers = u64::from(self.workers.max(1));
        let partitions = u64::from(self.partitions.max(1));
        (u64::from(partition) * workers / partitions).min(workers - 1) as usize
    }

    /// Slots of a partition: `[start, end)`.
    pub fn slot_range(&self, partition: u32) -> (u16, u16) {
        let start = (partition as u64 * SLOTS as u64).div_ceil(self.partitions as u64);
        let end = ((partition as u64 + 1) * SLOTS as u64).div_ceil(self.partitions as u64);
        (start as u16, end.min(SLOTS as u64) as u16)
    }
}

/// Arguments copied out of a connection's buffer to travel to another worker: their bytes,
/// and where each ends. Both inline for a short command (a GET, a SET of a short value), so
/// that sending one to another worker allocates nothing, in a message no larger (`Op` has
/// larger variants).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnedArgs {
    data: Small<u8, INLINE_DATA>,
    ends: Small<u32, INLINE_ENDS>,
}

const INLINE_DATA: usize = 62;
const INLINE_ENDS: usize = 5;

/// Up to `N` (at most 255) items inline, more on the heap. Equal contents are equal, however
/// they are held.
#[derive(Clone, Debug)]
enum Small<T, const N: usize> {
    Inline(u8, [T; N]),
    Heap(Vec<T>),
}

impl<T: Copy + Default, const N: usize> Default for Small<T, N> {
    fn default() -> Self {
        Small::Inline(0, [T::default(); N])
    }
}

impl<T: Copy + PartialEq, const N: usize> PartialEq for Small<T, N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Eq, const N: usize> Eq for Small<T, N> {}

impl<T: Copy + Default, const N: usize> Small<T, N> {
    /// Room for `n` items: inline if they fit, else one allocation of exactly that.
    fn with_capacity(n: usize) -> Self {
        if n <= N {
            Small::default()
        } else {
            Small::Heap(Vec::with_capacity(n))
        }
    }

    fn extend_from_slice(&mut self, a: &[T]) {
        const { assert!(N <= u8::MAX as usize) };
        match self {
            Small::Inline(n, buf) if *n as usize + a.len() <= N => {
                let at = *n as usize;
                buf[at..at + a.len()].copy_from_slice(a);
                *n += a.len() as u8;
            }
            Small::Inline(n, buf) => {
                let have = *n as usize;
                let mut v = Vec::with_capacity((have + a.len()).max(2 * N));
                v.extend_from_slice(&buf[..have]);
                v.extend_from_slice(a);
                *self = Small::Heap(v);
            }
            Small::Heap(v) => v.extend_from_slice(a),
        }
    }
}

impl<T, const N: usize> Small<T, N> {
    fn as_slice(&self) -> &[T] {
        match self {
            Small::Inline(n, buf) => &buf[..*n as usize],
            Small::Heap(v) => v,
        }
    }
}

impl OwnedArgs {
    /// The bytes and their ends inline unless there are many, else one allocation each,
    /// sized exactly (this runs for every command sent to another worker).
    pub fn from_slices<'a, I>(args: I) -> OwnedArgs
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: Clone,
    {
        let args = args.into_iter();
        let (count, bytes) = args.clone().fold((0, 0), |(n, b), a| (n + 1, b + a.len()));
        let mut o = OwnedArgs {
            data: Small::with_capacity(bytes),
            ends: Small::with_capacity(count),
        };
        for a in args {
            o.push(a);
        }
        o
    }

    pub fn push(&mut self, a: &[u8]) {
        self.data.extend_from_slice(a);
        self.ends
            .extend_from_slice(&[self.data.as_slice().len() as u32]);
    }

    pub fn len(&self) -> usize {
        self.ends.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn slices(&self) -> Vec<&[u8]> {
        self.iter().collect()
    }

    /// The arguments, in order, without collecting them.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + Clone + '_ {
        let mut start = 0usize;
        let data = self.data.as_slice();
        self.ends.as_slice().iter().map(move |&e| {
            let a = &data[start..e as usize];
            start = e as usize;
            a
        })
    }
}

/// Which connection (and which reply in its pipeline) a response belongs to. The default
/// names no connection: for messages whose `reply_to` is not read (a hold's decision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyTo {
    pub worker: usize,
    pub token: usize,
    pub conn_id: u64,
    pub seq: u64,
    /// Index of this part in a scattered command.
    pub part: u32,
}

/// Key-value pairs of MSET-like commands, packed in one buffer (keys and values taking
/// turns), so that a part of a multi-key command costs two allocations, not two per pair.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairs(OwnedArgs);

impl Pairs {
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        self.0.push(key);
        self.0.push(value);
    }

    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        let mut args = self.0.iter();
        std::iter::from_fn(move || Some((args.next()?, args.next()?)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + Clone + '_ {
        self.iter().map(|(k, _)| k)
    }
}

impl<'a> FromIterator<(&'a [u8], &'a [u8])> for Pairs {
    fn from_iter<I: IntoIterator<Item = (&'a [u8], &'a [u8])>>(pairs: I) -> Self {
        let mut p = Pairs::default();
        for (k, v) in pairs {
            p.push(k, v);
        }
        p
    }
}

/// Work for the worker that owns some partitions.
#[derive(Debug)]
pub enum Op {
    /// A single-key command.
    Keyed {
        partition: u32,
        args: OwnedArgs,
    },
    /// MGET: (position in the original command, key).
    MGet {
        keys: Vec<(u32, Vec<u8>)>,
    },
    /// DEL or UNLINK (`kind`, for the slow log).
    Del {
        keys: Vec<Vec<u8>>,
        kind: MultiKind,
    },
    /// EXISTS or TOUCH (`kind`).
    Exists {
        keys: Vec<Vec<u8>>,
        kind: MultiKind,
    },
    /// MSET, or the writes of an MSETNX over several workers (`kind`).
    MSet {
        pairs: Pairs,
        kind: MultiKind,
    },
    MSetNx {
        pairs: Pairs,
    },
    /// One step of an MSETNX whose keys live on several workers (standalone). The step's
    /// worker is `rest[0].0`; `held` are the workers before it, each holding still (see
    /// `Worker::nx_step`) with none of its keys present.
    NxStep {
        held: Vec<usize>,
        rest: Vec<(usize, Pairs)>,
    },
    /// The end of a held step (MSETNX or EXEC): do the held part (`commit`) or not, then go
    /// on.
    NxDecide {
        commit: bool,
        /// A RENAME/COPY's value for a held destination (`moves`).
        moved: Option<Box<super::moves::Moved>>,
        /// A group's transactions that do not run for want of disk room (`multi`).
        refused: super::multi::Refused,
        /// A group's time, taken once every worker held (`multi::group_step`): its
        /// transactions run at it.
        at: Option<u64>,
    },
    /// BITOP or LCS: run here if every key is this worker's, else a step of a chain
    /// (`combine`).
    Combine(Box<super::combine::Combine>),
    /// RENAME, RENAMENX or COPY with both keys on this worker.
    Move {
        kind: super::moves::MoveKind,
        src: Vec<u8>,
        dst: Vec<u8>,
    },
    /// A step of a RENAME/RENAMENX/COPY over two workers (`Worker::move_step`); `held`: the
    /// first worker, once it holds.
    MoveStep {
        kind: super::moves::MoveKind,
        src: Vec<u8>,
        dst: Vec<u8>,
        facts: super::moves::MoveFacts,
        held: Option<usize>,
    },
    /// EXEC's share for this worker: check its watched keys, then run its commands' parts
    /// one after another with nothing in between (`multi`).
    Tx(super::multi::TxPart),
    /// One step of a group of transactions over several workers (standalone;
    /// `Worker::group_step`): `rest[0].0` is this step's worker, with the group's parts for
    /// it in the group's order. `held` empty: the group's first worker, which takes these
    /// transactions into the group it is forming, or starts a transaction with watched keys
    /// as a group of its own (`Worker::join_group`).
    GroupStep {
        held: Vec<usize>,
        rest: Vec<(usize, Vec<super::multi::GroupPart>)>,
        /// Transactions refused at earlier steps for want of disk room.
        refused: super::multi::Refused,
    },
    /// A transaction running in sequence visits its worker, which holds for it
    /// (`Worker::seq_visit`).
    SeqVisit(Box<super::seqtx::SeqRun>),
    /// WATCH: the versions of these keys, by their index in the connection's watch list.
    Versions {
        keys: Vec<(u32, Vec<u8>)>,
    },
    /// Keyless commands every worker answers for its partitions.
    DbSize,
    /// FLUSHALL, or FLUSHDB (`all` false; for the slow log).
    Flush {
        all: bool,
    },
    Keys {
        pattern: Vec<u8>,
    },
    /// A SCAN step from `cursor` in `partition`, visiting up to `count` keys; it goes on
    /// into the next partitions (on their owners) while the budget lasts. `keys`: what the
    /// steps before it found.
    Scan {
        partition: u32,
        cursor: u64,
        count: usize,
        pattern: Option<Vec<u8>>,
        keys: Vec<Vec<u8>>,
    },
    RandomKey,
    Stats,
    /// CONFIG RESETSTAT: this worker's counters back to zero.
    ResetStats,
    /// LATENCY RESET: drops the latency monitor's series of these events (all when empty);
    /// answers the names dropped.
    LatencyReset {
        events: Vec<String>,
    },
    /// CLIENT PAUSE or UNPAUSE changed the node's pause: the worker answers once it has
    /// seen it, after relaying it to every other worker when `relay` (`pause`).
    PauseChanged {
        relay: bool,
    },
    ClientList,
    ClientKill(KillFilter),
    /// SLOWLOG GET / LEN / RESET: this worker's log.
    SlowLog(super::slowlog::SlowOp),
    /// CONFIG SET: the settings after it (`Shared::config`), and their version.
    ConfigSet {
        version: u64,
        config: Arc<simplekv_conf::Config>,
    },
    Rewrite,
    /// SAVE / BGSAVE: fsync every partition's log now.
    Save,
    /// Work of the replication thread (cluster mode).
    Repl(super::replica::ReplOp),
    /// WAIT in cluster mode: answer, once `numreplicas` in-sync followers have everything
    /// written to the partition so far (or at the deadline), how many have.
    Wait {
        partition: u32,
        numreplicas: i64,
        timeout_ms: u64,
    },
    /// CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT: keys of one slot (at most `max`).
    SlotKeys {
        partition: u32,
        slot: u16,
        max: usize,
    },
    /// PUBLISH or SPUBLISH: to this worker's subscribers (`pubsub`); answers how many.
    /// `forward` (one worker's op of a PUBLISH in cluster mode): pass it on to the other
    /// nodes too.
    Publish {
        p: Arc<super::pubsub::Publication>,
        forward: bool,
    },
    /// PUBSUB CHANNELS, NUMPAT, SHARDCHANNELS: the names with a subscriber on this worker
    /// (matching `pattern`).
    PubSubNames {
        kind: super::pubsub::Kind,
        pattern: Option<Vec<u8>>,
    },
    /// PUBSUB NUMSUB, SHARDNUMSUB: this worker's subscribers of each name.
    NumSub {
        kind: super::pubsub::Kind,
        names: Vec<Vec<u8>>,
    },
}

/// What a worker sends back.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A whole RESP reply (inline when short: most single-key replies).
    Resp(super::conn::ReplyBytes),
    /// MGET parts: (position, encoded element).
    Elements(Vec<(u32, Vec<u8>)>),
    Int(i64),
    Ok,
    Err(String),
    Keys(Vec<Vec<u8>>),
    /// A SCAN page: the keys found, and where it stopped (`next` within `partition`, 0 when
    /// that partition is done). `more`: the scan goes on at `partition`'s start on its owner
    /// with this budget and pattern.
    ScanPage {
        keys: Vec<Vec<u8>>,
        partition: u32,
        next: u64,
        more: Option<(usize, Option<Vec<u8>>)>,
    },
    Stats(Box<super::stats::WorkerStats>),
    Text(String),
    /// SLOWLOG GET: a worker's newest entries.
    SlowLog(Vec<super::slowlog::SlowEntry>),
    Repl(Box<super::replica::ReplReply>),
    /// The payloads of a transaction's part, by the index of their command.
    Tx(Vec<(u32, Payload)>),
    /// A watched key changed: the transaction ran nothing (EXEC answers a null array).
    TxAborted,
    /// WATCH: key versions by their index in the connection's watch list.
    Versions(Vec<(u32, super::multi::Ver)>),
    /// PUBSUB NUMSUB: a worker's counts, in the order asked.
    Counts(Vec<i64>),
}

pub struct Request {
    pub reply_to: ReplyTo,
    pub op: Op,
    /// The asking connection's acks (cluster mode).
    pub acks: simplekv_conf::Acks,
}

pub struct Response {
    pub reply_to: ReplyTo,
    pub payload: Payload,
    /// A `Msg::Ran` went ahead of this answer (it waited for durability or replication):
    /// the command ran then.
    pub ran_noted: bool,
}

impl Response {
    pub fn new(reply_to: ReplyTo, payload: Payload) -> Response {
        Response {
            reply_to,
            payload,
            ran_noted: false,
        }
    }
}

pub enum Msg {
    Req(Request),
    Resp(Response),
    /// A slow log entry of an op run for one of this worker's connections, which gives
    /// it the connection's address and name (`slowlog`).
    Slow(ReplyTo, Box<super::slowlog::SlowEntry>),
    /// The command of this answer ran; the answer itself waits for durability or
    /// replication. A connection whose next command waits for the previous ones to take
    /// effect may go on (`Output::unran`).
    Ran(ReplyTo),
    /// A socket accepted by the acceptor for this worker.
    NewConn(mio::net::TcpStream),
    /// A background merge finished.
    MergeDone {
        partition: u32,
        result: Result<simplekv_engine::MergeOutput, simplekv_engine::MergeError>,
    },
    /// The maintenance thread's fsync of a partition's log (`everysec`) is done.
    BackgroundSynced {
        partition: u32,
        ticket: simplekv_engine::SyncTicket,
        result: std::io::Result<()>,
    },
    Batch(Vec<Msg>),
    /// The maintenance thread wrote the worker's recovery points (or could not).
    PointsWritten(std::io::Result<()>),
    /// The commit journal a worker asked for at run time is open (or could not be).
    JournalOpened(Result<simplekv_engine::Journal, simplekv_engine::JournalError>),
    /// The worker's sync thread finished the fsyncs of a commit flight.
    SyncDone {
        epoch: u64,
        results: Vec<(u32, simplekv_engine::SyncTicket, std::io::Result<()>)>,
        /// The fsync of the commit journal, if the flight carried one.
        journal: Option<Result<(), simplekv_engine::JournalError>>,
        /// Not a flight but a journal checkpoint: every partition log with unsynced records
        /// was fsynced, for the journal file of this sequence number (see
        /// `Journal::checkpointed`).
        checkpoint: Option<u64>,
    },
    /// Work from outside the workers (the gRPC service): `done` gets the payload once this
    /// turn's commit made the work as durable as promised. It runs on the worker's thread and
    /// must be quick (e.g. complete a oneshot channel).
    External {
        op: Op,
        /// `None`: the node's configured default.
        acks: Option<simplekv_conf::Acks>,
        done: Box<dyn FnOnce(Payload) + Send>,
    },
    /// A new route table from the control plane (cluster mode).
    Routes(Arc<super::cluster::RouteTable>),
    /// MONITOR lines of the commands another worker's connections ran in one turn.
    Monitor(Arc<Vec<u8>>),
    /// A message published on another node (cluster mode), for this worker's subscribers.
    Publish(Arc<super::pubsub::Publication>),
    /// The replication thread's view of a partition this worker leads: its high watermark
    /// and until when the in-sync followers were last heard from.
    Hw {
        partition: u32,
        leader_epoch: u32,
        hw: u64,
        lease_until: std::time::Instant,
        /// Lowest position over every replica, in sync or not (0 while one is unknown):
        /// tombstones below it may go, every replica has them.
        horizon: u64,
        /// How many replicas, the leader included, `hw` was computed over (the ISR).
        isr: usize,
    },
}

/// Whether `given` is `want` (always true without one), in constant time.
pub fn same_secret(want: Option<&str>, given: Option<&[u8]>) -> bool {
    match (want, given) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(g)) => {
            w.len() == g.len() && w.bytes().zip(g).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
        }
    }
}

/// A handle for threads outside the workers to send them work, routed like RESP commands.
#[derive(Clone)]
pub struct Router {
    pub topo: Topology,
    peers: Vec<Peer>,
    shared: Arc<super::stats::Shared>,
}

impl Router {
    pub fn new(topo: Topology, peers: Vec<Peer>, shared: Arc<super::stats::Shared>) -> Router {
        Router {
            topo,
            peers,
            shared,
        }
    }

    /// Whether `given` is the password the server asks for now (`requirepass`, as CONFIG SET
    /// left it); always true without one. A comparison in constant time.
    pub fn password_ok(&self, given: Option<&[u8]>) -> bool {
        let config = self.config_now();
        same_secret(config.server.requirepass.as_deref(), given)
    }

    /// The largest key or value a front door other than RESP may write
    /// (`limits.proto_max_bulk_len`, as CONFIG SET left it).
    pub fn max_bulk_len(&self) -> u64 {
        self.config_now().limits.proto_max_bulk_len
    }

    /// The settings as the last CONFIG SET left them (`Shared::config`).
    fn config_now(&self) -> Arc<simplekv_conf::Config> {
        let canon = self.shared.config.lock().unwrap_or_else(|e| e.into_inner());
        canon.1.clone()
    }

    pub fn workers(&self) -> usize {
        self.peers.len()
    }

    /// The worker that owns `key`, and its partition.
    pub fn owner_of(&self, key: &[u8]) -> (usize, u32) {
        let p = self.topo.partition_of(key);
        (self.topo.worker_of(p), p)
    }

    /// Sends `op` to `worker`; `done` is called with the result. Returns false (and drops
    /// `done` uncalled) if the worker is gone.
    pub fn submit(
        &self,
        worker: usize,
        op: Op,
        done: impl FnOnce(Payload) + Send + 'static,
    ) -> bool {
        self.submit_acks(worker, op, None, done)
    }

    /// As `submit`, with the acks a write needs (`None`: the node's default).
    pub fn submit_acks(
        &self,
        worker: usize,
        op: Op,
        acks: Option<simplekv_conf::Acks>,
        done: impl FnOnce(Payload) + Send + 'static,
    ) -> bool {
        self.send(
            worker,
            Msg::External {
                op,
                acks,
                done: Box::new(done),
            },
        )
    }

    /// Sends any message to a worker and wakes it. False if the worker is gone.
    pub fn send(&self, worker: usize, msg: Msg) -> bool {
        let Some(peer) = self.peers.get(worker) else {
            return false;
        };
        peer.send(msg)
    }

    /// Sends a message to every worker.
    pub fn broadcast(&self, msg: impl Fn() -> Msg) {
        for w in 0..self.peers.len() {
            self.send(w, msg());
        }
    }
}

/// A worker as seen by its peers.
#[derive(Clone)]
pub struct Peer {
    pub tx: Sender<Msg>,
    pub waker: Arc<Waker>,
    /// Set by [`Peer::notify`] when it wakes the worker, cleared by the worker right before it
    /// drains its channel ([`Peer::take_notified`]): messages sent meanwhile need no wake-up
    /// of their own (each is an eventfd write; the replication thread often sends a worker
    /// several in a row).
    pub notified: Arc<AtomicBool>,
}

impl Peer {
    pub fn new(tx: Sender<Msg>, waker: Arc<Waker>) -> Peer {
        Peer {
            tx,
            waker,
            notified: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Wakes the worker for a message already sent on `tx`, unless a wake-up is pending that
    /// the worker has not consumed yet. The swap orders the send before the worker's
    /// `take_notified`: either it sees `false` and wakes, or the worker's later take reads
    /// this `true` and its drain then sees the message.
    pub fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// Sends `msg` to the worker and wakes it (see `notify`). False if the worker is gone.
    pub fn send(&self, msg: Msg) -> bool {
        let sent = self.tx.send(msg).is_ok();
        if sent {
            self.notify();
        }
        sent
    }

    /// The worker's side: called right before draining the channel.
    pub fn take_notified(&self) -> bool {
        self.notified.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The packed argument lists give back exactly what was put in, in order (empty
        /// strings included).
        #[test]
        fn packed_lists_give_back_what_was_put_in(
            items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..30),
        ) {
            let want: Vec<&[u8]> = items.iter().map(|b| b.as_slice()).collect();
            let args = OwnedArgs::from_slices(want.iter().copied());
            prop_assert_eq!(args.len(), want.len());
            prop_assert_eq!(args.slices(), want.clone());
            // Built one at a time (as MSET's parts are), inline ends spilling to the heap on
            // the way: the same list, equal to the one built at once.
            let mut pushed = OwnedArgs::default();
            for a in &want {
                pushed.push(a);
            }
            prop_assert_eq!(pushed.slices(), want.clone());
            prop_assert_eq!(&pushed, &args);
            let pairs: Pairs = want.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect();
            let expect: Vec<(&[u8], &[u8])> = want.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect();
            prop_assert_eq!(pairs.len(), expect.len());
            prop_assert_eq!(pairs.iter().collect::<Vec<_>>(), expect.clone());
            prop_assert_eq!(
                pairs.keys().collect::<Vec<_>>(),
                expect.iter().map(|(k, _)| *k).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn short_arguments_travel_inline_in_a_message_no_larger() {
        // `Op::Keyed` (a partition and the arguments) stays within `Op`'s largest variant.
        assert!(
            std::mem::size_of::<OwnedArgs>() + 8 <= std::mem::size_of::<Op>(),
            "OwnedArgs {} bytes, Op {}",
            std::mem::size_of::<OwnedArgs>(),
            std::mem::size_of::<Op>()
        );
        let get = OwnedArgs::from_slices([&b"GET"[..], b"key:000000012345"]);
        assert!(matches!(get.data, Small::Inline(..)));
        let full = [b'x'; INLINE_DATA - 3];
        let set = OwnedArgs::from_slices([&b"SET"[..], &full[..]]);
        assert!(matches!(set.data, Small::Inline(..)));
        let over = OwnedArgs::from_slices([&b"SET"[..], &full[..], b"!"]);
        assert!(matches!(over.data, Small::Heap(_)));
        assert_eq!(over.slices(), [&b"SET"[..], &full[..], b"!"]);
    }

    #[test]
    fn secrets_match_only_exactly_and_anything_goes_without_one() {
        assert!(same_secret(None, None));
        assert!(same_secret(None, Some(b"x")));
        assert!(!same_secret(Some("pw"), None));
        assert!(!same_secret(Some("pw"), Some(b"pW")));
        assert!(!same_secret(Some("pw"), Some(b"pw ")));
        assert!(!same_secret(Some("pw"), Some(b"p")));
        assert!(!same_secret(Some("pw"), Some(b"")));
        assert!(same_secret(Some("pw"), Some(b"pw")));
    }

    #[test]
    fn a_worker_is_woken_once_per_drain_and_again_after_it() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(7)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
        let peer = Peer::new(tx, waker);
        let mut events = mio::Events::with_capacity(8);
        let mut woken = |poll: &mut mio::Poll| {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(50)))
                .unwrap();
            events.iter().count()
        };
        for _ in 0..3 {
            peer.tx.send(Msg::Batch(Vec::new())).unwrap();
            peer.notify();
        }
        assert_eq!(woken(&mut poll), 1, "one wake-up for three messages");
        assert!(peer.take_notified());
        assert_eq!(rx.try_iter().count(), 3);
        assert_eq!(woken(&mut poll), 0, "nothing new");
        // After the drain, the next message wakes the worker again.
        peer.tx.send(Msg::Batch(Vec::new())).unwrap();
        peer.notify();
        assert_eq!(woken(&mut poll), 1);
    }

    #[test]
    fn partitions_cover_all_slots_contiguously() {
        for p in [1u32, 3, 16, 1000, 16384] {
            let t = Topology {
                partitions: p,
                workers: 3,
            };
            let mut expect = 0u16;
            for part in 0..p {
                let (s, e) = t.slot_range(part);
                assert_eq!(s, expect);
                for slot in [s, e.saturating_sub(1)] {
                    if e > s {
                        assert_eq!(
                            t.partition_of_slot(slot),
                            part,
                            "p={p} part={part} slot={slot}"
                        );
                    }
                }
                expect = e;
            }
            assert_eq!(expect, SLOTS);
        }
    }

    #[test]
    fn workers_own_contiguous_even_runs_of_partitions() {
        for (partitions, workers) in [(16u32, 1u32), (16, 2), (16, 3), (16, 6), (16, 16), (4, 8)] {
            let t = Topology {
                partitions,
                workers,
            };
            let owners: Vec<usize> = (0..partitions).map(|p| t.worker_of(p)).collect();
            assert!(owners.windows(2).all(|w| w[0] <= w[1]), "{owners:?}");
            assert!(owners.iter().all(|&w| w < workers as usize));
            let mut counts = vec![0u32; workers as usize];
            for &w in &owners {
                counts[w] += 1;
            }
            let most = partitions.div_ceil(workers);
            let least = partitions / workers;
            assert!(
                counts
                    .iter()
                    .all(|&c| c <= most && (c >= least || workers > partitions)),
                "{partitions} partitions over {workers} workers: {counts:?}"
            );
        }
    }

    #[test]
    fn a_nodes_preferred_leaderships_spread_over_its_workers() {
        // The controller makes node `p mod nodes` the preferred leader of partition `p`
        // (`simplekv_cluster::assign`).
        for (partitions, nodes, workers) in
            [(16u32, 3u32, 3u32), (16, 3, 6), (48, 3, 12), (16, 2, 4)]
        {
            let t = Topology {
                partitions,
                workers,
            };
            for node in 0..nodes {
                let led: Vec<u32> = (node..partitions).step_by(nodes as usize).collect();
                let mut used: Vec<usize> = led.iter().map(|&p| t.worker_of(p)).collect();
                used.dedup();
                assert_eq!(
                    used.len(),
                    led.len().min(workers as usize),
                    "node {node} of {nodes} leads {led:?} on workers {used:?}"
                );
            }
        }
    }

    #[test]
    fn hash_tags_route_together() {
        let t = Topology {
            partitions: 16,
            workers: 2,
        };
        assert_eq!(t.partition_of(b"{user}.a"), t.partition_of(b"{user}.b"));
    }

    #[test]
    fn owned_args_round_trip() {
        let a = OwnedArgs::from_slices([&b"SET"[..], b"", b"v\r\n"]);
        assert_eq!(a.slices(), vec![&b"SET"[..], b"", b"v\r\n"]);
    }
}
