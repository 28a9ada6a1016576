//! One client connection: its socket, read buffer, parser and the queue of replies that keeps
//! pipelined replies in request order whichever worker produced them.
use std::collections::VecDeque;
use std::io::{self, Write};
use std::ops::Range;
use std::time::Instant;

use mio::net::TcpStream;

use crate::resp::parse::{Limits, Parser};

/// A reply position in a connection's pipeline.
pub enum Slot {
    /// Ready to go out.
    Ready(ReplyBytes),
    /// A local write's reply with the commit epoch it waits for: released once that epoch is
    /// durable, or replaced by the error if a write or fsync of that epoch failed (conservative:
    /// the client may be told "error" for a write whose fate it cannot know, never "OK" for one
    /// that was lost).
    Held(Hold, ReplyBytes),
    /// Waiting for another worker (or several: a scattered multi-key command).
    Waiting(Box<Pending>),
    /// Waiting for the one reply of a single-key command another worker runs, used as is
    /// (`Waiting` with `Gather::Single` and no hold, without its allocation: this is most
    /// of what a worker sends when there are several).
    Remote,
}

/// A held reply's bytes. Most write replies (`+OK`, `:1`, `$-1`) are a few bytes and sit
/// inline, so holding one allocates nothing (with acks = all every write's reply is held).
#[derive(Clone)]
pub enum ReplyBytes {
    Inline(u8, [u8; INLINE_REPLY]),
    Heap(Vec<u8>),
}

/// The longest reply kept inline (the enum is no larger than a `Vec`).
pub const INLINE_REPLY: usize = 22;

impl ReplyBytes {
    /// Takes `reply`'s bytes: copied when short (the buffer stays with the caller for reuse),
    /// else the buffer itself.
    pub fn take(reply: &mut Vec<u8>) -> ReplyBytes {
        if reply.len() <= INLINE_REPLY {
            ReplyBytes::from_slice(reply)
        } else {
            ReplyBytes::Heap(std::mem::take(reply))
        }
    }

    /// A copy of `reply` (no allocation when it is short).
    pub fn from_slice(reply: &[u8]) -> ReplyBytes {
        if reply.len() <= INLINE_REPLY {
            let mut b = [0; INLINE_REPLY];
            b[..reply.len()].copy_from_slice(reply);
            ReplyBytes::Inline(reply.len() as u8, b)
        } else {
            ReplyBytes::Heap(reply.to_vec())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            ReplyBytes::Inline(n, b) => &b[..*n as usize],
            ReplyBytes::Heap(v) => v,
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        match self {
            ReplyBytes::Inline(n, b) => b[..n as usize].to_vec(),
            ReplyBytes::Heap(v) => v,
        }
    }
}

impl std::fmt::Debug for ReplyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ReplyBytes({:?})",
            String::from_utf8_lossy(self.as_slice())
        )
    }
}

impl From<Vec<u8>> for ReplyBytes {
    fn from(mut v: Vec<u8>) -> ReplyBytes {
        ReplyBytes::take(&mut v)
    }
}

/// What a held reply waits for: its commit epoch to be durable on this node, or (cluster mode,
/// acks = all, and reads of data not yet committed) also replicated to every in-sync replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub epoch: u64,
    pub repl: bool,
}

impl Hold {
    /// What a reply of commit epoch `epoch` with this need waits for (`None`: nothing).
    pub fn of(epoch: u64, need: super::replica::Need) -> Option<Hold> {
        use super::replica::Need;
        match need {
            Need::Now => None,
            Need::Durable => Some(Hold { epoch, repl: false }),
            Need::Committed => Some(Hold { epoch, repl: true }),
        }
    }

    pub fn ready(&self, rel: &Released<'_>) -> bool {
        self.epoch
            <= if self.repl {
                rel.committed
            } else {
                rel.durable
            }
    }
}

/// A reply being gathered, and what its local writes need (`None`: nothing); the finished
/// reply waits for that like any local write's.
pub struct Pending {
    pub gather: Gather,
    pub hold: Option<Hold>,
}

/// How the parts of a scattered command combine into one reply.
pub enum Gather {
    /// One remote reply, used as is.
    Single(Option<Vec<u8>>),
    /// MGET: reply elements by position; a part's error (MOVED, TRYAGAIN in cluster mode)
    /// is the whole reply, as Redis Cluster gives it.
    Elements {
        items: Vec<Option<Vec<u8>>>,
        missing: usize,
        error: Option<String>,
    },
    /// DEL/EXISTS/UNLINK/DBSIZE/...: sum of integers.
    Sum {
        total: i64,
        missing: usize,
        error: Option<String>,
    },
    /// MSET/FLUSHALL/CONFIG SET/...: "+OK" once every part succeeded.
    AllOk {
        missing: usize,
        error: Option<String>,
    },
    /// MSETNX over several workers: `:1` once every part answered 1 (each wrote its keys),
    /// `:0` if any answered 0 (a key existed, nothing was written).
    AllSet {
        missing: usize,
        all: bool,
        error: Option<String>,
    },
    /// EXEC: one gather per queued command, filled from the `Payload::Tx` of each worker
    /// that ran a part (`missing` of them still to come). `error`: a part refused whole
    /// (cluster mode: the partition moved, too few in-sync replicas), the reply instead of
    /// the array.
    Tx {
        items: Vec<Gather>,
        missing: usize,
        error: Option<String>,
        /// A watched key had changed: nothing ran (a null array).
        aborted: bool,
        /// One multi-key command over several workers, run as a transaction so that it is
        /// isolated as in Redis (standalone mode): the reply is its one item's, not an array.
        bare: bool,
        /// The connection's settings before EXEC planned its server commands, put back if the
        /// transaction runs nothing (`ClientSettings`).
        undo: Option<Box<ClientSettings>>,
        /// The name of each queued command (`config|get`), for the failed calls of those
        /// whose reply is an error (INFO commandstats).
        names: Vec<&'static str>,
        /// Items EXEC's plan answered with an error itself (a server command refused): they
        /// count in INFO errorstats only if the transaction runs (`multi::TxRan`).
        planned_errors: Vec<u32>,
        /// MONITOR lines of the queued commands and EXEC, formatted as EXEC began (while a
        /// connection monitors), fed once the transaction ran (`multi::TxRan`).
        monitor: Vec<u8>,
    },
    /// Parts whose payloads a finishing function turns into the reply (INFO, KEYS, ...).
    Collect {
        parts: Vec<super::router::Payload>,
        missing: usize,
        finish: super::dispatch::Finisher,
    },
}

/// A connection. Its parts are separate structs so the dispatcher can borrow the parsed
/// arguments (in `rbuf`/`parser`) and the reply queue (`out`) at the same time.
/// What a worker knows about its commit epochs when releasing replies.
pub struct Released<'a> {
    /// Every epoch up to this one is durable.
    pub durable: u64,
    /// Every epoch up to this one is durable and replicated as its acks demand (cluster mode;
    /// equal to `durable` standalone).
    pub committed: u64,
    /// Epoch ranges (inclusive) whose write or fsync failed, with the error to reply.
    pub failed: &'a [(u64, u64, String)],
}

impl Released<'_> {
    pub fn error_for(&self, epoch: u64) -> Option<&str> {
        self.failed
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&epoch))
            .map(|(_, _, m)| m.as_str())
    }
}

pub struct Conn {
    pub sock: TcpStream,
    pub rbuf: Vec<u8>,
    /// Bytes at the front of `rbuf` already parsed.
    pub rpos: usize,
    pub parser: Parser,
    pub out: Output,
    pub client: Client,
    /// Commands the worker's look-ahead parsed that had not run when the connection
    /// stopped to wait for its commands in flight (`Output::order_wait`): they run from
    /// here when it goes on, instead of being parsed again. Empty otherwise.
    pub ahead: LookAhead,
}

/// Commands parsed ahead of running them (`Worker::look_ahead`), from a connection's read
/// position on.
#[derive(Default)]
pub struct LookAhead {
    /// Per command: its bytes, the range of its arguments in `ranges`, and the partition of
    /// its key (GET and SET). Argument ranges are offsets from the command's first byte,
    /// which is at `rpos` when it runs.
    pub cmds: Vec<(usize, Range<usize>, Option<u32>)>,
    pub ranges: Vec<Range<usize>>,
    /// The first of `cmds` that has not run.
    pub next: usize,
    /// The limits they were parsed with: a CONFIG SET since makes them void.
    pub limits: Limits,
}

impl LookAhead {
    /// Empty, keeping the lists' allocations unless they grew large (a look-ahead over many
    /// arguments): those would stay allocated for as long as their holder lives.
    pub fn clear(&mut self) {
        const KEEP_MAX: usize = 1024;
        if self.cmds.capacity() > KEEP_MAX || self.ranges.capacity() > KEEP_MAX {
            *self = LookAhead::default();
        } else {
            self.cmds.clear();
            self.ranges.clear();
            self.next = 0;
        }
    }

    /// Whether the commands not run yet can still run as parsed: with the limits in force,
    /// and within the `available` bytes from the read position.
    pub fn still_valid(&self, limits: &Limits, available: usize) -> bool {
        self.limits == *limits
            && self
                .cmds
                .get(self.next..)
                .is_some_and(|rest| rest.iter().map(|c| c.0).sum::<usize>() <= available)
    }
}

/// Replies on their way out, in request order.
#[derive(Default)]
pub struct Output {
    pub wbuf: Vec<u8>,
    pub wpos: usize,
    /// Replies not yet in `wbuf`; `slots[0]` has sequence `base_seq`.
    pub slots: VecDeque<Slot>,
    /// The command of each slot, as INFO commandstats names it (`cmd` when it was queued),
    /// and whether its reply is dropped (`silent` when it was queued).
    slot_cmds: VecDeque<(&'static str, bool)>,
    /// CLIENT REPLY: replies go out (on), none do (off), or the next command's does not.
    pub reply_mode: ReplyMode,
    /// The running command's reply is dropped (CLIENT REPLY OFF or SKIP); its errors still
    /// count in INFO.
    pub silent: bool,
    /// Commands whose error replies went into `wbuf` since the worker last collected them
    /// (INFO commandstats `failed_calls`).
    pub failed_cmds: Vec<&'static str>,
    pub base_seq: u64,
    /// Answers other workers still owe this connection. Their size is unknown until they
    /// come (a GET of a large value), so their number is bounded, not only the bytes
    /// already queued.
    pub in_flight: usize,
    /// A reply that must be complete before this connection's next command runs (an MSETNX
    /// over several workers: what follows it must see its outcome).
    pub barrier: Option<u64>,
    /// The barrier (by its sequence number) is a command in a group of transactions whose
    /// first worker is this one (`multi::join_group`): a next command that joins the same
    /// group after it runs in order anyway, so it may go on (`Worker::may_pass_barrier`). A
    /// later barrier of another kind (WATCH's) has another number, so this no longer applies.
    pub barrier_group: Option<(u64, usize)>,
    /// Error replies that went into `wbuf` since the worker last collected them.
    pub errors: ErrorTally,
    /// Answers in flight whose commands are not known to have run yet (`in_flight` less those
    /// a `Msg::Ran` came for): what a command that must take effect after them waits for.
    pub unran: usize,
    /// The worker that owes every answer in flight, when each is for a command that runs
    /// whole there (a single-key one): a next such command for the same worker may go at
    /// once, as a worker takes a connection's requests in the order they were sent. `None`
    /// while answers are owed by several workers or for a command over several.
    pub order_to: Option<usize>,
    /// The next command waits for every answer in flight before it runs
    /// (`Worker::waits_for_order`), so that a pipeline's commands take effect in order.
    pub order_wait: bool,
    /// The command running was refused before it ran (unknown, wrong arity, unknown
    /// subcommand, NOAUTH): the slow log leaves it out, as Redis's does.
    pub not_run: bool,
    /// The command running as INFO commandstats counts it (`config|get` for a subcommand),
    /// once it passed arity and authentication; empty otherwise (queued in MULTI: counted
    /// when EXEC runs it).
    pub cmd: &'static str,
}

/// What CLIENT REPLY set.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    #[default]
    On,
    Off,
    /// The next command's reply is dropped, then replies go out again.
    Skip,
}

/// Error replies counted by kind (the error's first word, as INFO errorstats shows them).
#[derive(Default, Debug, Clone)]
pub struct ErrorTally {
    pub total: u64,
    pub kinds: Vec<(String, u64)>,
}

impl ErrorTally {
    /// Distinct kinds kept at most (Redis stops tracking new ones at 128 too); the total
    /// counts every error.
    pub const MAX_KINDS: usize = 128;

    /// Counts `reply` if it is an error reply (`-KIND message\r\n`).
    #[inline]
    pub fn note(&mut self, reply: &[u8]) {
        if reply.first() == Some(&b'-') {
            self.note_error(&reply[1..]);
        }
    }

    /// Where kinds past [`Self::MAX_KINDS`] are counted (as Redis 7.2 names it).
    pub const OVERFLOW: &str = "ERRORSTATS_OVERFLOW";

    /// The kind is the first word when a space ends it within 32 bytes, else `ERR` (as
    /// Redis decides it).
    #[cold]
    pub fn note_error(&mut self, text: &[u8]) {
        let line = &text[..text.iter().position(|&b| b == b'\r').unwrap_or(text.len())];
        let kind = match line[..line.len().min(32)].iter().position(|&b| b == b' ') {
            Some(end) => String::from_utf8_lossy(&line[..end]),
            None => "ERR".into(),
        };
        self.add(&kind, 1);
    }

    fn add(&mut self, kind: &str, n: u64) {
        self.total += n;
        if let Some((_, c)) = self.kinds.iter_mut().find(|(k, _)| k == kind) {
            *c += n;
        } else if self.kinds.len() < Self::MAX_KINDS {
            self.kinds.push((kind.to_string(), n));
        } else if let Some((_, c)) = self.kinds.iter_mut().find(|(k, _)| k == Self::OVERFLOW) {
            *c += n;
        } else {
            self.kinds.push((Self::OVERFLOW.to_string(), n));
        }
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &ErrorTally) {
        for (k, n) in &other.kinds {
            self.add(k, *n);
        }
    }
}

/// A connection's own settings, as server commands inside a transaction may change them
/// (CLIENT SETNAME, SETINFO, ACKS, HELLO, AUTH, a CLIENT KILL of itself): they run when EXEC
/// plans the transaction, and are put back if it then runs nothing (a watched key changed,
/// or it was refused whole).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    authed: bool,
    /// Whether the connection was closing before the plan.
    was_closing: bool,
    /// The plan closed the connection (a CLIENT KILL of itself): open again on undo.
    closed_by_plan: bool,
    acks: Option<simplekv_conf::Acks>,
    name: Option<Vec<u8>>,
    lib_name: Option<Vec<u8>>,
    lib_ver: Option<Vec<u8>>,
}

impl ClientSettings {
    /// After EXEC planned the transaction: whether its plan closed the connection.
    pub fn note_plan(&mut self, client: &Client) {
        self.closed_by_plan = client.closing && !self.was_closing;
    }
}

impl Client {
    pub fn settings(&self) -> ClientSettings {
        ClientSettings {
            authed: self.authed,
            was_closing: self.closing,
            closed_by_plan: false,
            acks: self.acks,
            name: self.name.clone(),
            lib_name: self.lib_name.clone(),
            lib_ver: self.lib_ver.clone(),
        }
    }

    pub fn restore(&mut self, s: ClientSettings) {
        if s.closed_by_plan {
            self.closing = false;
        }
        self.authed = s.authed;
        self.acks = s.acks;
        self.name = s.name;
        self.lib_name = s.lib_name;
        self.lib_ver = s.lib_ver;
    }
}

/// What the server knows about a client (CLIENT LIST, AUTH, ...).
pub struct Client {
    pub id: u64,
    pub addr: String,
    pub local_addr: String,
    /// Close once everything queued is written (QUIT, protocol error, kill).
    pub closing: bool,
    /// The peer is gone: drop without writing.
    pub dead: bool,
    /// The peer closed its sending side (EOF): run what it sent, write the replies, then close.
    /// Clients that half-close after their last command (`nc -N`, scripts) are owed answers.
    pub eof: bool,
    /// Registered for writability (only while output waits for socket space).
    pub want_write: bool,
    /// Listed among the connections whose next reply waits for a durable epoch.
    pub waits_durable: bool,
    pub authed: bool,
    /// CLIENT ACKS: this connection's acks for writes (cluster mode); `None` = node default.
    pub acks: Option<simplekv_conf::Acks>,
    /// The partition of this connection's last write (WAIT waits on it).
    pub last_write: Option<u32>,
    pub name: Option<Vec<u8>>,
    /// CLIENT SETINFO LIB-NAME / LIB-VER (shown by CLIENT LIST and CLIENT INFO).
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    pub created: Instant,
    pub last_active: Instant,
    pub last_cmd: &'static str,
    /// Input is left unparsed until queued replies drain (too many in flight).
    pub paused: bool,
    /// Input is left unread while this worker holds still for an MSETNX (`msetnx`).
    pub frozen: bool,
    /// Stopped (with `paused`) at a command that waits for CLIENT PAUSE to end (`pause`).
    pub postponed: bool,
    pub in_dirty_list: bool,
    /// The client sent MULTI: its commands are queued until EXEC or DISCARD (`multi`).
    pub tx: Option<Box<super::multi::TxQueue>>,
    /// WATCHed keys and the version each had then (`multi`).
    pub watched: Vec<super::multi::Watched>,
    /// MONITOR: the commands clients run are streamed to it (`monitor`), until RESET.
    pub monitor: bool,
    /// MONITOR lines of this connection's commands that wait for those of a transaction
    /// before them still running (by its EXEC's reply sequence number), in order (`monitor`).
    pub monitor_held: std::collections::VecDeque<(Option<u64>, Vec<u8>)>,
    /// Since when the connection's unread MONITOR or pub/sub output is over its soft limit
    /// (`worker::feed_stream`).
    pub behind_since: Option<Instant>,
    /// Bytes of MONITOR or pub/sub output queued behind a reply still on its way (in
    /// `Output::slots`, not yet in the write buffer); reset once nothing waits.
    pub stream_in_slots: usize,
    /// Its pub/sub subscriptions (`pubsub`); `None` while it has none.
    pub subs: Option<Box<super::pubsub::Subs>>,
}

/// Reads stop and parsing pauses above these, so one pipelining client cannot make a worker
/// buffer without bound: replies queued, bytes queued, and answers owed by other workers
/// (fewer of those while the client is not reading what is queued already).
pub const MAX_SLOTS: usize = 4096;
pub const MAX_WBUF: usize = 64 << 20;
pub const MAX_IN_FLIGHT: usize = 256;
pub const MAX_IN_FLIGHT_SLOW: usize = 16;
/// Queued output past which the client counts as slow to read.
const SLOW_READER: usize = 1 << 20;
const READ_CHUNK: usize = 16 << 10;

pub enum ReadOutcome {
    /// Read some bytes (maybe zero before WouldBlock).
    Open,
    /// Orderly EOF or error: the client is gone.
    Closed,
    /// The query buffer passed its limit.
    Overflow,
}

impl Conn {
    pub fn new(sock: TcpStream, id: u64, authed: bool) -> Conn {
        let addr = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let local_addr = sock
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let now = Instant::now();
        Conn {
            sock,
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            parser: Parser::new(),
            ahead: LookAhead::default(),
            out: Output::default(),
            client: Client {
                id,
                addr,
                local_addr,
                closing: false,
                dead: false,
                eof: false,
                want_write: false,
                waits_durable: false,
                authed,
                acks: None,
                last_write: None,
                name: None,
                lib_name: None,
                lib_ver: None,
                created: now,
                last_active: now,
                last_cmd: "NULL",
                paused: false,
                frozen: false,
                postponed: false,
                in_dirty_list: false,
                tx: None,
                watched: Vec::new(),
                monitor: false,
                monitor_held: Default::default(),
                behind_since: None,
                stream_in_slots: 0,
                subs: None,
            },
        }
    }

    /// Reads until the socket would block or the buffer limit is reached.
    /// `drain`: keep reading until the socket says WouldBlock (needed when the peer may have
    /// closed: its EOF raised no event of its own if it came with the last data).
    pub fn read_available(&mut self, limit: usize, drain: bool) -> ReadOutcome {
        loop {
            if self.rbuf.len() - self.rpos >= limit {
                return ReadOutcome::Overflow;
            }
            let len = self.rbuf.len();
            if self.rbuf.capacity() - len < READ_CHUNK {
                // Drop consumed bytes before growing.
                if self.rpos > 0 {
                    self.rbuf.drain(..self.rpos);
                    self.rpos = 0;
                    continue;
                }
                self.rbuf.reserve(READ_CHUNK);
            }
            let len = self.rbuf.len();
            let room = self.rbuf.capacity() - len;
            match read_into_spare(&self.sock, &mut self.rbuf) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    self.client.last_active = Instant::now();
                    if !drain && n < room {
                        // A short read drained the socket; with edge-triggered polling, bytes
                        // arriving later raise a new event, so skip the read that would only
                        // say WouldBlock (one syscall less per request).
                        return ReadOutcome::Open;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Drops parsed bytes from the read buffer (cheap when all were parsed).
    pub fn compact_rbuf(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
            if self.rbuf.capacity() > (1 << 20) {
                self.rbuf = Vec::with_capacity(READ_CHUNK);
            }
        }
    }

    /// Writes as much of the write buffer as the socket takes. Returns false if the peer is gone.
    pub fn flush(&mut self) -> bool {
        let o = &mut self.out;
        while o.wpos < o.wbuf.len() {
            match self.sock.write(&o.wbuf[o.wpos..]) {
                Ok(0) => return false,
                Ok(n) => o.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        o.compact_written();
        true
    }
}

impl Output {
    /// Frees the written front of `wbuf`. All written: the buffer is emptied (and given back
    /// if it grew large). Partly written: the rest moves to the front once the written part
    /// is large and at least half of it. Only emptying it let a client that reads, but more
    /// slowly than its replies come, grow the buffer by everything ever sent to it (800 MB
    /// for 200,000 pipelined GETs of 4 KiB) while the unwritten part stayed under
    /// `MAX_WBUF`.
    pub fn compact_written(&mut self) {
        const COMPACT_AT: usize = 1 << 20;
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > (4 << 20) {
                self.wbuf = Vec::new();
            }
        } else if self.wpos >= COMPACT_AT && self.wpos * 2 >= self.wbuf.len() {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
    }

    /// Sequence number the next queued slot gets.
    pub fn next_seq(&self) -> u64 {
        self.base_seq + self.slots.len() as u64
    }

    /// A command starts: its reply is dropped under CLIENT REPLY OFF, or SKIP (once).
    pub fn begin_command(&mut self) {
        self.silent = match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
    }

    /// Queues a reply: straight into the write buffer when nothing is ahead of it.
    pub fn push_reply(&mut self, reply: &[u8]) {
        if self.slots.is_empty() {
            self.emit(reply, self.cmd, self.silent);
        } else {
            self.slots
                .push_back(Slot::Ready(ReplyBytes::from_slice(reply)));
            self.slot_cmds.push_back((self.cmd, self.silent));
        }
    }

    /// Queues push output (pub/sub's confirmations and messages), which CLIENT REPLY OFF and
    /// SKIP do not drop, as in Redis: in order with the replies, never silent.
    pub fn push_unsilenced(&mut self, bytes: &[u8]) {
        if self.slots.is_empty() {
            self.wbuf.extend_from_slice(bytes);
        } else {
            self.slots
                .push_back(Slot::Ready(ReplyBytes::from_slice(bytes)));
            self.slot_cmds.push_back(("", false));
        }
    }

    pub fn push_slot(&mut self, slot: Slot) -> u64 {
        let seq = self.next_seq();
        self.slots.push_back(slot);
        self.slot_cmds.push_back((self.cmd, self.silent));
        seq
    }

    /// A reply's turn to go out: counted, and written unless CLIENT REPLY dropped it.
    #[inline]
    fn emit(&mut self, reply: &[u8], cmd: &'static str, silent: bool) {
        self.note_errors(reply, cmd);
        if !silent {
            self.wbuf.extend_from_slice(reply);
        }
    }

    /// Counts `reply` if it is an error (INFO errorstats, and commandstats for `cmd`).
    #[inline]
    fn note_errors(&mut self, reply: &[u8], cmd: &'static str) {
        if reply.first() == Some(&b'-') {
            self.errors.note_error(&reply[1..]);
            if !cmd.is_empty() {
                self.failed_cmds.push(cmd);
            }
        }
    }

    pub fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = seq.checked_sub(self.base_seq)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    /// Moves finished replies from the front of the queue into the write buffer, in order,
    /// up to the first one still waiting (for a peer, or for its epoch to be durable).
    pub fn drain_slots(&mut self, rel: &Released<'_>) {
        while let Some(front) = self.slots.front() {
            match front {
                Slot::Ready(_) => {}
                Slot::Held(h, _) if h.ready(rel) => {}
                Slot::Held(..) | Slot::Waiting(_) | Slot::Remote => break,
            }
            let (cmd, silent) = self.slot_cmds.pop_front().unwrap_or_default();
            match self.slots.pop_front() {
                Some(Slot::Ready(r)) => self.emit(r.as_slice(), cmd, silent),
                Some(Slot::Held(h, reply)) => match rel.error_for(h.epoch) {
                    None => self.emit(reply.as_slice(), cmd, silent),
                    Some(err) => {
                        let mut e = Vec::new();
                        crate::resp::encode::write_error(&mut e, err.as_bytes());
                        self.emit(&e, cmd, silent);
                    }
                },
                _ => {}
            }
            self.base_seq += 1;
        }
    }

    /// The first queued reply waits for its epoch to become durable.
    pub fn waits_durable(&self) -> bool {
        matches!(self.slots.front(), Some(Slot::Held(..)))
    }

    pub fn has_output(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Too much queued: stop taking new commands until it drains.
    pub fn backlogged(&self) -> bool {
        let queued = self.wbuf.len() - self.wpos;
        let in_flight_cap = if queued >= SLOW_READER {
            MAX_IN_FLIGHT_SLOW
        } else {
            MAX_IN_FLIGHT
        };
        self.slots.len() >= MAX_SLOTS
            || queued >= MAX_WBUF
            || self.in_flight >= in_flight_cap
            || (self.group_barrier().is_none() && self.behind_barrier())
    }

    /// The first worker of the group the barrier joined, while its reply is gathered.
    pub fn group_barrier(&self) -> Option<usize> {
        match self.barrier_group {
            Some((seq, first)) if self.barrier == Some(seq) && self.behind_barrier() => Some(first),
            _ => None,
        }
    }

    /// A paused connection stays paused: too much is queued, its next command waits for
    /// a barrier (of a group, which only a command joining it may pass), or for the answers
    /// in flight (`order_wait`).
    pub fn blocked(&self) -> bool {
        self.backlogged() || self.behind_barrier() || (self.order_wait && self.unran > 0)
    }

    /// The barrier's reply is still being gathered.
    fn behind_barrier(&self) -> bool {
        let Some(seq) = self.barrier else {
            return false;
        };
        let Some(i) = seq.checked_sub(self.base_seq) else {
            return false;
        };
        matches!(
            usize::try_from(i).ok().and_then(|i| self.slots.get(i)),
            Some(Slot::Waiting(_) | Slot::Remote)
        )
    }

    /// A request for one of this connection's replies went to another worker.
    pub fn sent_away(&mut self) {
        self.sent_away_to(None);
    }

    /// A request went to another worker; `to`: the worker, when the command runs whole
    /// there (`order_to` stays that worker if everything in flight went there too).
    pub fn sent_away_to(&mut self, to: Option<usize>) {
        self.order_to = to.filter(|&w| self.in_order_to(w));
        self.in_flight += 1;
        self.unran += 1;
    }

    /// Whether a command that runs whole on `worker` (another one) may be sent now without
    /// reordering the pipeline: nothing is owed, or everything owed comes from `worker`.
    pub fn in_order_to(&self, worker: usize) -> bool {
        self.unran == 0 || self.order_to == Some(worker)
    }

    /// The command of an answer in flight ran (`Msg::Ran`); the answer comes later.
    pub fn ran(&mut self) {
        debug_assert!(self.unran > 0, "a command noted run twice");
        self.unran = self.unran.saturating_sub(1);
    }

    /// An answer for one of this connection's replies came back (`ran_noted`: its command
    /// was noted run before, by a `Msg::Ran`).
    pub fn answered(&mut self, ran_noted: bool) {
        debug_assert!(self.in_flight > 0, "an answer nobody owed");
        self.in_flight = self.in_flight.saturating_sub(1);
        if !ran_noted {
            debug_assert!(self.unran > 0, "a command noted run twice");
            self.unran = self.unran.saturating_sub(1);
        }
    }

    /// Everything queued has been written: a closing connection may go.
    pub fn finished(&self) -> bool {
        self.slots.is_empty() && !self.has_output()
    }
}

/// Reads into the unused capacity of `buf` and extends it by what was read, without zeroing
/// the capacity first (at 16 KiB per read that memset cost more than the parsing).
fn read_into_spare(sock: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    // SAFETY: `read` writes at most `spare.len()` bytes into memory owned by `buf`'s spare
    // capacity; exactly the `n` bytes it reports are then marked initialised.
    let n = unsafe {
        libc::read(
            sock.as_raw_fd(),
            spare.as_mut_ptr().cast::<libc::c_void>(),
            spare.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: see above; `n <= spare.len()`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_counted_by_their_first_word_up_to_a_cap_on_kinds() {
        let mut t = ErrorTally::default();
        for r in [
            &b"+OK\r\n"[..],
            b"-ERR syntax error\r\n",
            b"-WRONGTYPE Operation against a key\r\n",
            b"-ERR value is not an integer\r\n",
            b"-NOAUTH Authentication required.\r\n",
            // No space within 32 bytes: counted as ERR, as Redis does.
            b"-NOSPACE\r\n",
            b"-AVERYLONGERRORCODEWITHOUTASPACEINIT x\r\n",
            b":-1\r\n",
            b"$-1\r\n",
        ] {
            t.note(r);
        }
        assert_eq!(t.total, 6);
        let mut kinds = t.kinds.clone();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                ("ERR".into(), 4),
                ("NOAUTH".into(), 1),
                ("WRONGTYPE".into(), 1)
            ]
        );
        // Past the cap, new kinds are counted together, here and once merged.
        let mut many = ErrorTally::default();
        for i in 0..ErrorTally::MAX_KINDS + 5 {
            many.note(format!("-E{i} x\r\n").as_bytes());
        }
        assert_eq!(many.kinds.len(), ErrorTally::MAX_KINDS + 1);
        assert_eq!(many.total, ErrorTally::MAX_KINDS as u64 + 5);
        let overflow = |t: &ErrorTally| {
            t.kinds
                .iter()
                .find(|(k, _)| k == ErrorTally::OVERFLOW)
                .map(|(_, n)| *n)
        };
        assert_eq!(overflow(&many), Some(5));
        t.absorb(&many);
        assert_eq!(t.total, 6 + ErrorTally::MAX_KINDS as u64 + 5);
        assert_eq!(t.kinds.len(), ErrorTally::MAX_KINDS + 1);
        assert_eq!(t.kinds.iter().map(|(_, n)| n).sum::<u64>(), t.total);
        assert_eq!(t.kinds.iter().find(|(k, _)| k == "ERR").unwrap().1, 4);
    }

    #[test]
    fn short_replies_are_copied_inline_and_long_ones_move_their_buffer() {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"+OK\r\n");
        let r = ReplyBytes::take(&mut buf);
        assert!(matches!(r, ReplyBytes::Inline(5, _)));
        assert_eq!(r.as_slice(), b"+OK\r\n");
        // The caller keeps its buffer (and its capacity) for the next reply.
        assert_eq!(buf, b"+OK\r\n");
        assert_eq!(buf.capacity(), 64);

        let mut exact = vec![b'x'; INLINE_REPLY];
        assert!(matches!(
            ReplyBytes::take(&mut exact),
            ReplyBytes::Inline(..)
        ));

        let long = b"$20\r\n01234567890123456789\r\n".to_vec();
        let r = ReplyBytes::from(long.clone());
        assert!(matches!(r, ReplyBytes::Heap(_)));
        assert_eq!(r.as_slice(), &long[..]);

        // Copies, either side of the inline limit, give the same bytes back.
        for n in [0, 1, INLINE_REPLY, INLINE_REPLY + 1, 300] {
            let bytes: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let r = ReplyBytes::from_slice(&bytes);
            assert_eq!(matches!(r, ReplyBytes::Inline(..)), n <= INLINE_REPLY);
            assert_eq!(r.as_slice(), &bytes[..]);
            assert_eq!(r.clone().into_vec(), bytes);
        }
    }

    #[test]
    fn a_remote_reply_goes_out_in_its_turn() {
        // A local reply queued behind a reply another worker is computing waits for it.
        let mut out = Output::default();
        let seq = out.push_slot(Slot::Remote);
        out.push_reply(b"+local\r\n");
        let none = Released {
            durable: 0,
            committed: 0,
            failed: &[],
        };
        out.drain_slots(&none);
        assert!(
            out.wbuf.is_empty(),
            "nothing goes out before the remote reply"
        );
        let remote = out.slot_mut(seq).expect("the remote slot");
        crate::server::dispatch::fill_slot(
            remote,
            0,
            crate::server::router::Payload::Resp(ReplyBytes::from_slice(b"$1\r\nr\r\n")),
        );
        out.drain_slots(&none);
        assert_eq!(out.wbuf, b"$1\r\nr\r\n+local\r\n");
    }

    #[test]
    fn owed_replies_pause_the_connection_sooner_when_it_does_not_read() {
        let mut out = Output::default();
        for _ in 0..MAX_IN_FLIGHT - 1 {
            out.sent_away();
        }
        assert!(!out.backlogged());
        out.sent_away();
        assert!(
            out.backlogged(),
            "{MAX_IN_FLIGHT} replies owed by other workers"
        );
        for _ in 0..MAX_IN_FLIGHT - MAX_IN_FLIGHT_SLOW {
            out.answered(false);
        }
        assert!(!out.backlogged());
        // The client has not read 1 MiB of what is queued: fewer owed replies are allowed.
        out.wbuf.resize(1 << 20, b'x');
        assert!(out.backlogged());
        out.wpos = out.wbuf.len();
        assert!(!out.backlogged());
        for _ in 0..MAX_IN_FLIGHT_SLOW {
            out.answered(false);
        }
        assert_eq!(out.in_flight, 0);
    }

    #[test]
    fn written_output_is_freed_while_the_client_reads_slowly() {
        let mut out = Output::default();
        // A client that reads a little less than comes in, over and over.
        for _ in 0..64 {
            out.wbuf.extend_from_slice(&[b'x'; 256 << 10]);
            out.wpos += 192 << 10;
            out.compact_written();
            assert!(out.wbuf.len() - out.wpos <= 64 << 20);
        }
        let unwritten = 64 * (64 << 10);
        assert_eq!(out.wbuf.len() - out.wpos, unwritten);
        assert!(
            out.wbuf.len() <= 2 * unwritten + (1 << 20),
            "{} bytes kept for {unwritten} unwritten",
            out.wbuf.len()
        );
        out.wpos = out.wbuf.len();
        out.compact_written();
        assert!(out.wbuf.is_empty() && out.wpos == 0);
    }

    #[test]
    fn a_command_waiting_in_order_goes_once_every_command_in_flight_ran() {
        let mut out = Output::default();
        assert!(out.in_order_to(1), "nothing in flight");
        // Two single-key commands for worker 1, in flight at once.
        out.sent_away_to(Some(1));
        out.sent_away_to(Some(1));
        assert!(out.in_order_to(1) && !out.in_order_to(2));
        out.order_wait = true;
        assert!(out.blocked());
        // The first ran and its answer waits for an fsync; the second answered outright.
        out.ran();
        assert!(out.blocked(), "one has not run yet");
        out.answered(false);
        assert!(!out.blocked() && out.in_order_to(2));
        assert_eq!((out.in_flight, out.unran), (1, 0));
        out.answered(true);
        assert_eq!((out.in_flight, out.unran), (0, 0));
        // Anything else sent away (a command over several workers) orders nothing.
        out.sent_away();
        assert!(!out.in_order_to(1));
    }

    #[test]
    fn held_replies_drain_in_order_once_their_epoch_is_released() {
        let mut out = Output::default();
        let hold = |epoch| Hold { epoch, repl: false };
        out.push_slot(Slot::Held(hold(1), b":1\r\n".to_vec().into()));
        out.push_slot(Slot::Held(hold(2), b"+OK\r\n".to_vec().into()));
        let rel = |durable| Released {
            durable,
            committed: durable,
            failed: &[],
        };
        out.drain_slots(&rel(0));
        assert!(out.wbuf.is_empty());
        out.drain_slots(&rel(1));
        assert_eq!(out.wbuf, b":1\r\n");
        let failed = [(2, 2, "ERR fsync failed".to_string())];
        out.drain_slots(&Released {
            durable: 2,
            committed: 2,
            failed: &failed,
        });
        assert_eq!(out.wbuf, b":1\r\n-ERR fsync failed\r\n");
        assert!(out.slots.is_empty());
        assert_eq!(out.base_seq, 2);
    }
}
