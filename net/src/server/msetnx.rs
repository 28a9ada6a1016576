//! MSETNX over keys that live on several workers (standalone mode), atomic as in Redis.
//!
//! MSETNX must check that none of its keys exists and set them all, with no other command
//! creating one of them in between. Its keys' workers are visited one after another in
//! ascending order (`Op::NxStep`, passed on from worker to worker): each checks its own keys
//! and, if none exists, *holds still* — it runs no command from other workers or outside
//! callers, and from its connections only single-key commands on keys the held work does
//! not touch (`Worker::runs_while_held`), until the outcome is known (`Op::NxDecide`) — and
//! passes the step on. The last worker decides: all absent, it writes its part and tells the held
//! workers to write theirs; a key present anywhere, nobody writes. Holding in ascending
//! worker order is ordered lock acquisition: a worker waits only for workers above it, so two
//! MSETNX can never wait on each other.
//!
//! Every visited or skipped worker answers once, 1 for a part written and 0 otherwise, into
//! one `Gather::AllSet` slot: the reply is `:1` only after every part is as durable as the
//! policy promises. No other command sees one part written and another not: each worker
//! writes its part before it serves again. The connection runs its next command only once
//! the reply is complete (`Output::barrier`), so a pipelined `MSETNX a 1 b 2` / `GET b` sees
//! the MSETNX.
//!
//! The price: a held worker serves nothing for one hop between workers per later worker. A
//! multi-worker MSETNX is rare; keys with one hash tag (`{user}.a`, `{user}.b`) live on one
//! worker and need no hold.
use std::collections::HashSet;

use log::warn;

use super::conn::{Client, Gather, Output, Pending, Slot};
use super::replica::Need;
use super::router::{Msg, Op, Pairs, Payload, ReplyTo, Request, Response};
use super::worker::Worker;

/// A worker holding still for an MSETNX or an EXEC: its part, and where the answer goes.
pub struct NxHeld {
    pub(super) reply_to: ReplyTo,
    pub(super) acks: simplekv_conf::Acks,
    pub(super) work: HeldWork,
    /// Keys of this worker it read before holding (BITOP/LCS), besides those of `work`.
    pub(super) reads: Vec<Vec<u8>>,
    /// The keys of this worker the held work reads, writes or watches (`None`: it may
    /// touch any), worked out when a connection first asks (`NxHeld::keys`). A
    /// connection's single-key command on another key may run meanwhile
    /// (`Worker::runs_while_held`).
    keys: std::cell::OnceCell<Option<HashSet<Vec<u8>>>>,
}

impl NxHeld {
    /// The keys of this worker the held work touches; `None`: any (or too many to list).
    pub(super) fn keys(&self) -> Option<&HashSet<Vec<u8>>> {
        self.keys
            .get_or_init(|| held_keys(&self.work, &self.reads))
            .as_ref()
    }
}

/// What a held worker does once the outcome is known.
pub enum HeldWork {
    /// Writes these pairs (MSETNX: if every key was absent everywhere), in the disk room
    /// set aside for them at the step (`Worker::set_aside_writes`).
    MSetNx(Pairs, super::multi::Room),
    /// Moves or copies a key (`moves`): its source or destination key.
    Move {
        kind: super::moves::MoveKind,
        key: Vec<u8>,
        is_source: bool,
        /// A destination held first tells this (the source's) worker whether it wrote.
        confirm_to: Option<usize>,
        /// This part answers the command's outcome (a source held last, for a RENAME).
        answers_decision: bool,
    },
    /// Its parts of a group of transactions (`multi::group_step`), in the group's order.
    Group(Vec<super::multi::GroupPart>),
    /// Read its keys of a BITOP or LCS (`combine`); `dest`: BITOP's destination is here,
    /// and this part writes the result it is told with the outcome, and answers.
    Combine { dest: Option<Vec<u8>> },
}

/// The keys `work` (and `reads`) touch on its worker; `None` when that is not known (a part
/// with a command over the whole keyspace, or a transaction in sequence, whose visits come
/// later) or when they are many (a large group: most of a worker's traffic then is in it
/// anyway, and the set would cost more than it saves).
fn held_keys(work: &HeldWork, reads: &[Vec<u8>]) -> Option<HashSet<Vec<u8>>> {
    const MAX_KEYS: usize = 1024;
    let mut keys: HashSet<Vec<u8>> = reads.iter().cloned().collect();
    match work {
        HeldWork::MSetNx(pairs, _) => keys.extend(pairs.keys().map(<[u8]>::to_vec)),
        HeldWork::Move { key, .. } => {
            keys.insert(key.clone());
        }
        HeldWork::Combine { dest } => keys.extend(dest.iter().cloned()),
        HeldWork::Group(parts) => {
            for gp in parts {
                if gp.in_sequence {
                    return None;
                }
                keys.extend(gp.part.watch.iter().map(|(k, _)| k.clone()));
                for (_, op) in &gp.part.items {
                    if !op_keys(op, &mut keys) || keys.len() > MAX_KEYS {
                        return None;
                    }
                }
            }
        }
    }
    (keys.len() <= MAX_KEYS).then_some(keys)
}

/// Adds the keys `op` touches; false if it may touch any.
fn op_keys(op: &Op, keys: &mut HashSet<Vec<u8>>) -> bool {
    match op {
        Op::Keyed { args, .. } => match crate::cmd::key_of(&args.slices()) {
            Some(k) => keys.insert(k.to_vec()),
            None => return false,
        },
        Op::MGet { keys: ks } => {
            keys.extend(ks.iter().map(|(_, k)| k.clone()));
            true
        }
        Op::Del { keys: ks, .. } | Op::Exists { keys: ks, .. } => {
            keys.extend(ks.iter().cloned());
            true
        }
        Op::MSet { pairs, .. } | Op::MSetNx { pairs } => {
            keys.extend(pairs.keys().map(<[u8]>::to_vec));
            true
        }
        Op::Move { src, dst, .. } => {
            keys.insert(src.clone());
            keys.insert(dst.clone())
        }
        Op::Combine(c) => {
            keys.extend(c.all_keys().map(<[u8]>::to_vec));
            true
        }
        _ => return false,
    };
    true
}

/// Messages a holding worker keeps for later: anything that may run a command, and a merge
/// to install (its expired values are settled by the clock, not at the time of a
/// transaction held here: `multi::at_time`).
pub fn waits_for_hold(msg: &Msg) -> bool {
    match msg {
        Msg::Req(r) => !matches!(r.op, Op::NxDecide { .. } | Op::SeqVisit(_)),
        Msg::External { .. } | Msg::MergeDone { .. } | Msg::BackgroundSynced { .. } => true,
        _ => false,
    }
}

impl Worker {
    /// Starts an MSETNX whose keys are on the workers of `parts` (ascending, at least two).
    pub(super) fn start_msetnx(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        acks: simplekv_conf::Acks,
        mut parts: Vec<(usize, Pairs)>,
    ) {
        debug_assert!(parts.len() > 1 && parts.windows(2).all(|w| w[0].0 < w[1].0));
        let mut held = Vec::new();
        if parts[0].0 == self.id {
            // This connection's worker comes first: its step runs here, now.
            if self.nx_any_present(&parts[0].1) {
                out.push_reply(b":0\r\n");
                return;
            }
            held.push(self.id);
        }
        // Disk room for this worker's part is set aside before any part is written: a full
        // disk refuses the command whole, not one worker's part after another's was written.
        let room = if held.is_empty() {
            Vec::new()
        } else {
            match self.set_aside_writes(parts[0].1.iter(), std::iter::empty()) {
                Ok(room) => room,
                Err(e) => {
                    out.push_reply(&super::dispatch::error_reply(&e));
                    return;
                }
            }
        };
        let gather = Gather::AllSet {
            missing: parts.len(),
            all: true,
            error: None,
        };
        let slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        let reply_to = self.begin_chain(token, out, client, parts.len(), slot);
        if !held.is_empty() {
            let (_, pairs) = parts.remove(0);
            self.hold(reply_to, acks, HeldWork::MSetNx(pairs, room), &[]);
        }
        let next = parts[0].0;
        let op = Op::NxStep { held, rest: parts };
        self.nx_out.push((next, Request { reply_to, op, acks }));
    }

    /// Holds still for `work` (see the module documentation), noting which of this worker's
    /// keys it touches: its own, and `reads` (keys it read before holding).
    pub(super) fn hold(
        &mut self,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        work: HeldWork,
        reads: &[&[u8]],
    ) {
        debug_assert!(self.nx.is_none(), "a hold while holding");
        self.nx = Some(NxHeld {
            reply_to,
            acks,
            work,
            reads: reads.iter().map(|k| k.to_vec()).collect(),
            keys: Default::default(),
        });
    }

    /// Whether a connection's command may run while this worker holds: a single-key
    /// command on a key of this worker that the held work does not touch. The held work's
    /// outcome cannot depend on it nor change it, so running it now is running it before
    /// the held work, whose keys no command reaches until it is done: what each worker runs
    /// still reads as one order. Anything else (multi-key and keyspace-wide commands,
    /// transactions, WATCH, keys of other workers) waits for the hold to end.
    pub(super) fn runs_while_held(&self, client: &Client, args: &[&[u8]]) -> bool {
        let Some(h) = &self.nx else { return true };
        let Some(keys) = h.keys() else { return false };
        if args.is_empty() {
            return true;
        }
        if self.cluster.is_some() || client.tx.is_some() {
            return false;
        }
        let Some(spec) = crate::cmd::lookup(args[0]) else {
            return false;
        };
        if spec.kind != crate::cmd::Kind::Keyed
            || !crate::cmd::table::arity_ok(spec.for_args(args), args.len())
        {
            return false;
        }
        let Some(key) = crate::cmd::key_of(args) else {
            return false;
        };
        self.topo.worker_of(self.topo.partition_of(key)) == self.id && !keys.contains(key)
    }

    /// The reply slot of a command whose `answers` parts come from a chain of held workers:
    /// queued, with the connection's next command waiting for it (`Output::barrier`).
    /// Returns where the parts answer.
    pub(super) fn begin_chain(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        answers: usize,
        slot: Slot,
    ) -> ReplyTo {
        let seq = out.next_seq();
        let reply_to = self.reply_to(token, client, out, seq, 0);
        for _ in 1..answers {
            out.sent_away();
        }
        out.push_slot(slot);
        out.barrier = Some(seq);
        reply_to
    }

    /// This worker's step: `rest[0]` is its part.
    pub(super) fn nx_step(
        &mut self,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        mut held: Vec<usize>,
        mut rest: Vec<(usize, Pairs)>,
    ) {
        if rest.first().is_none_or(|(w, _)| *w != self.id) {
            warn!("worker {}: MSETNX step for another worker", self.id);
            self.nx_abort(reply_to, acks, &held, rest.len(), || {
                Payload::Err("ERR internal: MSETNX step sent to the wrong worker".into())
            });
            return;
        }
        let (_, pairs) = rest.remove(0);
        // The limits as this worker applies them now (a CONFIG SET may have changed them
        // since the command was checked): a part that cannot be written stops it here, before
        // anything is.
        if let Some(e) = self.nx_over_limit(&pairs) {
            self.nx_abort(reply_to, acks, &held, rest.len() + 1, || {
                Payload::Err(e.clone())
            });
            return;
        }
        if self.nx_any_present(&pairs) {
            // This part and every part after it: not written.
            self.nx_abort(reply_to, acks, &held, rest.len() + 1, || Payload::Int(0));
            return;
        }
        if rest.is_empty() {
            let (payload, need) = self.nx_write(pairs, acks, &[]);
            // The held parts are written only if this one was.
            let commit = matches!(payload, Payload::Int(1));
            self.nx_answer(reply_to, payload, need);
            self.nx_decide_held(&held, reply_to, acks, commit);
            return;
        }
        let room = match self.set_aside_writes(pairs.iter(), std::iter::empty()) {
            Ok(room) => room,
            Err(e) => {
                self.nx_abort(reply_to, acks, &held, rest.len() + 1, || {
                    Payload::Err(e.clone())
                });
                return;
            }
        };
        self.hold(reply_to, acks, HeldWork::MSetNx(pairs, room), &[]);
        held.push(self.id);
        let next = rest[0].0;
        let op = Op::NxStep { held, rest };
        self.nx_out.push((next, Request { reply_to, op, acks }));
    }

    /// Nothing is written: the held workers let go, and `parts` answers go out for this
    /// step's part and the ones after it.
    pub(super) fn nx_abort(
        &mut self,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        held: &[usize],
        parts: usize,
        answer: impl Fn() -> Payload,
    ) {
        self.nx_decide_held(held, reply_to, acks, false);
        for _ in 0..parts {
            self.nx_answer(reply_to, answer(), Need::Now);
        }
    }

    /// The outcome for the part this worker holds; then it serves again.
    pub(super) fn nx_decide(
        &mut self,
        commit: bool,
        moved: Option<Box<super::moves::Moved>>,
        refused: super::multi::Refused,
        at: Option<u64>,
    ) {
        let Some(h) = self.nx.take() else {
            warn!("worker {}: MSETNX outcome without a held part", self.id);
            return;
        };
        let NxHeld {
            reply_to,
            acks,
            work,
            ..
        } = h;
        match (work, commit) {
            (work @ HeldWork::Move { .. }, _) => {
                let h = NxHeld {
                    reply_to,
                    acks,
                    work,
                    reads: Vec::new(),
                    keys: Default::default(),
                };
                self.move_decided(h, commit, moved);
            }
            (HeldWork::Combine { dest }, true) => self.combine_decided(reply_to, acks, dest, moved),
            (HeldWork::Combine { .. }, false) => {}
            (HeldWork::Group(parts), _) => self.group_decided(parts, commit, &refused, at),
            (HeldWork::MSetNx(pairs, room), true) => {
                let (payload, need) = self.nx_write(pairs, acks, &room);
                self.nx_answer(reply_to, payload, need);
            }
            (HeldWork::MSetNx(_, room), false) => {
                self.release_room(&room);
                self.nx_answer(reply_to, Payload::Int(0), Need::Now)
            }
        }
        self.nx_release();
    }

    /// Runs what waited for the hold, in order, until done or held again.
    fn nx_release(&mut self) {
        // Active expiry skipped while held (`Worker::active_expire`) runs now.
        if std::mem::take(&mut self.expire_due) && self.nx.is_none() {
            self.active_expire();
        }
        // Turns alternate: connections first at one release, deferred steps first at the
        // next, so neither a stream of steps nor connections that keep holding this worker
        // again (each pipelining cross-worker commands) can keep the other waiting for good.
        let steps_first = self.nx_steps_first;
        self.nx_steps_first = !steps_first;
        self.nx_replay(!steps_first);
        let mut frozen = std::mem::take(&mut self.nx_frozen).into_iter();
        // Held again by one of them: the others still run what they may (`process_input`).
        while self.nx.as_ref().is_none_or(|h| h.keys().is_some()) {
            let Some(t) = frozen.next() else { break };
            if let Some(c) = self.conn_mut(t) {
                c.client.frozen = false;
            }
            self.process_input(t);
            self.on_readable(t);
        }
        // Held again over every key: the rest wait for the next release.
        self.nx_frozen.extend(frozen);
        // Transactions that formed a group meanwhile go before the steps still waiting, so
        // that a stream of other workers' steps cannot keep this worker's own waiting.
        self.launch_group();
        self.nx_replay(false);
    }

    /// Runs deferred messages in order while this worker is not held (again), stopping
    /// before the next MSETNX step if `before_step`.
    fn nx_replay(&mut self, before_step: bool) {
        while self.nx.is_none() {
            match self.nx_deferred.front() {
                None => break,
                Some(Msg::Req(r))
                    if before_step
                        && matches!(
                            r.op,
                            Op::NxStep { .. }
                                | Op::GroupStep { .. }
                                | Op::MoveStep { .. }
                                | Op::Combine(_)
                        ) =>
                {
                    break;
                }
                Some(_) => {}
            }
            if let Some(m) = self.nx_deferred.pop_front() {
                self.handle_msg(m);
            }
        }
    }

    /// A connection whose input waits for the hold to end.
    pub(super) fn freeze_conn(&mut self, token: usize) {
        let newly = self
            .conn_mut(token)
            .is_some_and(|c| !std::mem::replace(&mut c.client.frozen, true));
        if newly {
            self.nx_frozen.push(token);
        }
    }

    pub(super) fn nx_decide_held(
        &mut self,
        held: &[usize],
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        commit: bool,
    ) {
        for &w in held {
            let op = Op::NxDecide {
                commit,
                moved: None,
                refused: Vec::new(),
                at: None,
            };
            self.send_req(w, Request { reply_to, op, acks });
        }
    }

    pub(super) fn nx_over_limit(&self, pairs: &Pairs) -> Option<String> {
        pairs.iter().find_map(|(k, v)| {
            let o = self.store(self.topo.partition_of(k))?.options();
            super::dispatch::pair_over_limit(k, v, o.max_key_len, o.max_value_len)
        })
    }

    /// Some key of `pairs` exists (they are all on this worker).
    pub(super) fn nx_any_present(&self, pairs: &Pairs) -> bool {
        pairs.iter().any(|(k, _)| {
            let p = self.topo.partition_of(k);
            self.store(p).is_some_and(|s| s.exists(k))
        })
    }

    /// Writes an MSETNX's part, in the room set aside for it at its step (`room`; none for
    /// the last worker's part, which is written at its step).
    pub(super) fn nx_write(
        &mut self,
        pairs: Pairs,
        acks: simplekv_conf::Acks,
        room: &[(u32, u64)],
    ) -> (Payload, Need) {
        let kind = crate::cmd::MultiKind::MSetNx;
        match self.execute_in_room(Op::MSet { pairs, kind }, acks, room) {
            (Payload::Ok, need) => (Payload::Int(1), need),
            other => other,
        }
    }

    pub(super) fn nx_answer(&mut self, reply_to: ReplyTo, payload: Payload, need: Need) {
        let resp = Response::new(reply_to, payload);
        self.outbox.push((reply_to.worker, resp, need));
    }
}
