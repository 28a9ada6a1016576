//! CLIENT PAUSE and CLIENT UNPAUSE, as Redis 7.0 runs them.
//!
//! The pause is the node's, not a worker's: one atomic word in `Shared` holds its mode and
//! its end, so that every worker checks it with one relaxed load per command while no pause
//! is on. A worker stops a connection at its first command the pause covers (every command
//! in `ALL` mode, those flagged `write` or `may_replicate` in `WRITE` mode, and an EXEC whose
//! transaction queued one) and leaves its input unread; calls of the gRPC KV service that the
//! pause covers wait in the worker's queue. Both go on, in the order they stopped, when the
//! pause ends: at its deadline (each worker's poll wakes for it) or at CLIENT UNPAUSE, which
//! tells every worker. Work between workers and between nodes (replication, leadership
//! moves) is never held back.
//!
//! CLIENT PAUSE answers once every worker has seen the pause, and once every command a worker
//! forwarded to another before it saw the pause has run there: the worker that ran it sends
//! `Op::PauseChanged { relay: true }` to every other, each of which relays an
//! `Op::PauseChanged { relay: false }` to every other worker but itself; the command's
//! reply gathers all N x N answers. A relay from worker B reaches worker C behind anything B
//! sent C before (one channel per worker, in order), so by the +OK those commands have run,
//! and B checks the pause for every command after. A command that started on any worker
//! after the +OK therefore sees the pause.
//!
//! While a pause is on, active expiry deletes nothing (its tombstones would be writes):
//! expired keys are hidden from reads as always and deleted once the pause ends.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::conn::{Client, Gather, Output, Pending, Slot};
use super::dispatch::fill_slot;
use super::replica::Need;
use super::router::{Msg, Op, Payload, ReplyTo, Request};
use super::worker::Worker;
use crate::cmd::{self, CommandSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseMode {
    /// Commands that write (or may propagate a write) wait; reads go on.
    Write = 1,
    /// Every command waits.
    All = 2,
}

/// The node's pause: `end << 2 | mode` (milliseconds since `base`), 0 for none.
pub struct ClientPause {
    state: AtomicU64,
    base: Instant,
}

const MODE_MASK: u64 = 3;
const MAX_END_MS: u64 = u64::MAX >> 2;

impl ClientPause {
    pub fn new(base: Instant) -> ClientPause {
        ClientPause {
            state: AtomicU64::new(0),
            base,
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn decode(s: u64) -> Option<(PauseMode, u64)> {
        let mode = match s & MODE_MASK {
            1 => PauseMode::Write,
            2 => PauseMode::All,
            _ => return None,
        };
        Some((mode, s >> 2))
    }

    /// The pause in force now, if any: one relaxed load while there is none. A pause found
    /// over is cleared, so that later commands pay only the load again.
    #[inline]
    pub fn mode(&self) -> Option<PauseMode> {
        let s = self.state.load(Ordering::Relaxed);
        if s == 0 {
            return None;
        }
        self.mode_slow(s)
    }

    #[cold]
    fn mode_slow(&self, s: u64) -> Option<PauseMode> {
        let (mode, end) = Self::decode(s)?;
        if self.now_ms() < end {
            return Some(mode);
        }
        let _ = self
            .state
            .compare_exchange(s, 0, Ordering::AcqRel, Ordering::Relaxed);
        None
    }

    /// When the pause in force ends.
    pub fn until(&self) -> Option<Instant> {
        let (_, end) = Self::decode(self.state.load(Ordering::Acquire))?;
        self.base.checked_add(Duration::from_millis(end))
    }

    /// CLIENT PAUSE: as Redis, a pause already on keeps the stricter mode and the later end.
    /// A timeout of 0 ends at once (like Redis, it then pauses nothing).
    pub fn pause(&self, mode: PauseMode, timeout_ms: u64) {
        let end = self.now_ms().saturating_add(timeout_ms).min(MAX_END_MS);
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let (m, e) = match Self::decode(cur) {
                Some((m, e)) if e > self.now_ms() => (m.max(mode), e.max(end)),
                _ => (mode, end),
            };
            let next = (e << 2) | m as u64;
            match self
                .state
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// CLIENT UNPAUSE.
    pub fn unpause(&self) {
        self.state.store(0, Ordering::Release);
    }
}

/// Whether a pause in `mode` stops a command of this spec (`write` or `may_replicate` in
/// WRITE mode, as Redis's `is_may_replicate_command`).
fn stops(mode: PauseMode, spec: &CommandSpec) -> bool {
    mode == PauseMode::All || spec.flags.contains(&"write") || spec.may_replicate()
}

fn stops_args<'a>(mode: PauseMode, args: impl Iterator<Item = &'a [u8]>) -> bool {
    if mode == PauseMode::All {
        return true;
    }
    // The name, and the subcommand if any: all `lookup_argv` reads.
    let name_and_sub: Vec<&[u8]> = args.take(2).collect();
    cmd::table::lookup_argv(&name_and_sub).is_some_and(|spec| stops(mode, spec))
}

/// Whether a pause in `mode` stops a call of the gRPC KV service: every one in ALL mode;
/// in WRITE mode its writes. Anything else sent from outside the workers (replication,
/// leadership moves) goes on, as Redis goes on feeding its replicas.
fn stops_op(mode: PauseMode, op: &Op) -> bool {
    match op {
        Op::Keyed { args, .. } => stops_args(mode, args.iter()),
        Op::Del { .. } | Op::MSet { .. } | Op::MSetNx { .. } => true,
        Op::MGet { .. } | Op::Exists { .. } => mode == PauseMode::All,
        _ => false,
    }
}

impl Worker {
    /// Whether a connection's next command waits for the node's pause to end (`run_one`).
    /// As in Redis, what is refused before the pause check is answered at once (an unknown
    /// command or subcommand, a wrong number of arguments, NOAUTH), and a monitor, which
    /// Redis counts among its replicas, is never paused.
    pub(super) fn postpones(&self, client: &Client, args: &[&[u8]]) -> bool {
        let Some(mode) = self.shared.pause.mode() else {
            return false;
        };
        if client.monitor {
            return false;
        }
        let Some(container) = cmd::lookup(args[0]) else {
            return false;
        };
        if container.refused_subcommand(args).is_some() || self.needs_auth(client, container, args)
        {
            return false;
        }
        let spec = container.for_args(args);
        if spec.group != "transactions" && !cmd::table::arity_ok(spec, args.len()) {
            return false;
        }
        if stops(mode, spec) {
            return true;
        }
        spec.name == "exec"
            && client.tx.as_ref().is_some_and(|tx| {
                tx.queued()
                    .any(|args| stops_args(PauseMode::Write, args.iter()))
            })
    }

    /// The peer of a connection closed (or the socket failed): if the pause stopped it, it
    /// is closed now (as Redis frees a blocked client that goes away), its commands unrun,
    /// not left holding its slot until the pause ends. Only on that event: `drain` in
    /// `read_event` is also set when a worker carries on with a connection.
    pub(super) fn drop_if_postponed(&mut self, token: usize) {
        if let Some(c) = self.conn_mut(token)
            && c.client.postponed
            && !c.client.closing
        {
            c.client.dead = true;
            self.mark_conn_dirty(token);
        }
    }

    /// Stops a connection until the pause ends (`resume_postponed`).
    pub(super) fn postpone(&mut self, token: usize, client: &mut Client, args: &[&[u8]]) {
        client.paused = true;
        client.postponed = true;
        // CLIENT LIST's cmd=, as Redis shows the command a blocked client waits to run.
        if let Some(spec) = cmd::lookup(args[0]) {
            client.last_cmd = spec.for_args(args).name;
        }
        self.postponed_conns.push(token);
    }

    /// Whether a message waits for the pause to end (`handle_msg_for`): the gRPC KV
    /// service's calls the pause covers. Not once the worker drains for shutdown (it would
    /// wait for nothing: `drop_postponed`).
    pub(super) fn postpones_msg(&self, msg: &Msg) -> bool {
        let Msg::External { op, .. } = msg else {
            return false;
        };
        !self.draining && self.shared.pause.mode().is_some_and(|m| stops_op(m, op))
    }

    /// Connections and messages the pause stopped (some of the connections may have closed
    /// since).
    fn postponed_count(&self) -> usize {
        self.postponed_conns.len() + self.postponed_msgs.len()
    }

    /// INFO `blocked_clients`: this worker's connections the pause stopped, and the gRPC
    /// calls it holds.
    pub(super) fn blocked_by_pause(&self) -> usize {
        let conns = self.conns.iter().flatten();
        conns.filter(|c| c.client.postponed).count() + self.postponed_msgs.len()
    }

    /// When the poll must wake to end the pause for what it stopped.
    pub(super) fn pause_wakeup(&self) -> Option<Duration> {
        if self.postponed_count() == 0 {
            return None;
        }
        let until = self.shared.pause.until()?;
        // A millisecond late rather than early: the pause is over then.
        Some(until.saturating_duration_since(Instant::now()) + Duration::from_millis(1))
    }

    /// Once the pause is over (its deadline passed, or CLIENT UNPAUSE): everything it
    /// stopped goes on, in the order it stopped.
    pub(super) fn resume_postponed(&mut self) {
        if self.postponed_count() == 0 || self.shared.pause.mode().is_some() {
            return;
        }
        for token in std::mem::take(&mut self.postponed_conns) {
            if let Some(c) = self.conn_mut(token)
                && c.client.postponed
            {
                c.client.postponed = false;
                // `flush_conns` carries on with the connection once its output allows.
                self.mark_conn_dirty(token);
            }
        }
        let msgs = std::mem::take(&mut self.postponed_msgs);
        for m in msgs {
            // A new pause may have begun meanwhile: then it waits again, behind the others.
            self.handle_msg(m);
        }
    }

    /// Shutting down: the gRPC calls the pause stopped are dropped, which answers them that
    /// the server is going away.
    pub(super) fn drop_postponed(&mut self) {
        self.postponed_msgs.clear();
    }

    /// CLIENT PAUSE / UNPAUSE: every worker is told, and the command answers +OK once each
    /// has seen it and relayed it to every other (see the module's comment).
    pub(super) fn pause_changed(&mut self, token: usize, out: &mut Output, client: &Client) {
        let n = self.peers.len();
        if self.tx_plan.is_some() {
            // Inside MULTI (planned at EXEC): the transaction's parts run on every worker in
            // one go, the pause set before; one message to each is enough.
            let g = Gather::AllOk {
                missing: n,
                error: None,
            };
            return self.broadcast(token, out, client, g, || Op::PauseChanged { relay: false });
        }
        let gather = Gather::AllOk {
            missing: n * n,
            error: None,
        };
        let mut slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        let seq = out.next_seq();
        // Every answer but this worker's own is owed (counted once per answer).
        let mut reply_to = None;
        for _ in 1..n * n {
            reply_to = Some(self.reply_to(token, client, out, seq, 0));
        }
        fill_slot(&mut slot, self.id as u32, Payload::Ok);
        if let Some(reply_to) = reply_to {
            self.send_pause_changed(reply_to, true);
            self.send_pause_changed(reply_to, false);
        }
        self.push_gathered(out, slot, Need::Now);
    }

    /// Sends CLIENT PAUSE / UNPAUSE's `Op::PauseChanged` to every other worker. Each answers
    /// the command itself once it handled it, behind anything this worker sent it before;
    /// with `relay`, after sending it on to every other worker in turn.
    pub(super) fn send_pause_changed(&mut self, reply_to: ReplyTo, relay: bool) {
        let me = self.id;
        for w in (0..self.peers.len()).filter(|&w| w != me) {
            let op = Op::PauseChanged { relay };
            let acks = simplekv_conf::Acks::Leader;
            self.send_req(w, Request { reply_to, op, acks });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_keeps_the_stricter_mode_and_the_later_end() {
        let p = ClientPause::new(Instant::now());
        assert_eq!(p.mode(), None);
        p.pause(PauseMode::Write, 60_000);
        assert_eq!(p.mode(), Some(PauseMode::Write));
        let first = p.until().unwrap();
        // Shorter and stricter: ALL until the first end.
        p.pause(PauseMode::All, 10);
        assert_eq!(p.mode(), Some(PauseMode::All));
        assert_eq!(p.until().unwrap(), first);
        // Less strict and longer: still ALL, later end.
        p.pause(PauseMode::Write, 120_000);
        assert_eq!(p.mode(), Some(PauseMode::All));
        assert!(p.until().unwrap() > first);
        p.unpause();
        assert_eq!(p.mode(), None);
        assert_eq!(p.until(), None);
    }

    #[test]
    fn a_pause_that_ended_is_cleared_and_a_new_one_starts_afresh() {
        let p = ClientPause::new(Instant::now());
        p.pause(PauseMode::All, 0);
        assert_eq!(p.mode(), None, "a timeout of 0 pauses nothing");
        p.pause(PauseMode::All, 30);
        assert_eq!(p.mode(), Some(PauseMode::All));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(p.mode(), None);
        assert_eq!(
            p.state.load(Ordering::Relaxed),
            0,
            "cleared once found over"
        );
        // The old ALL does not carry over into a new WRITE pause.
        p.pause(PauseMode::Write, 60_000);
        assert_eq!(p.mode(), Some(PauseMode::Write));
    }

    #[test]
    fn a_huge_timeout_saturates() {
        let p = ClientPause::new(Instant::now());
        p.pause(PauseMode::Write, u64::MAX);
        assert_eq!(p.mode(), Some(PauseMode::Write));
        p.pause(PauseMode::Write, u64::MAX);
        assert_eq!(p.mode(), Some(PauseMode::Write));
    }

    #[test]
    fn write_mode_stops_the_commands_redis_stops() {
        let stop = |args: &[&[u8]]| stops_args(PauseMode::Write, args.iter().copied());
        assert!(stop(&[b"set", b"k", b"v"]));
        assert!(stop(&[b"DEL", b"k"]));
        assert!(stop(&[b"expire", b"k", b"1"]));
        assert!(stop(&[b"flushall"]));
        assert!(!stop(&[b"get", b"k"]));
        assert!(!stop(&[b"ping"]));
        assert!(!stop(&[b"bgrewriteaof"]));
        assert!(!stop(&[b"config", b"set", b"hz", b"10"]));
        assert!(!stop(&[b"nosuchcommand"]));
        assert!(stops_args(PauseMode::All, [&b"ping"[..]].into_iter()));
    }
}
