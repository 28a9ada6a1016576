//! Transactions that carry data between workers (standalone): inside MULTI, a RENAME,
//! RENAMENX or COPY from a key on one worker to a key on another, or an MSETNX, BITOP or LCS
//! whose keys live on several workers.
//!
//! EXEC otherwise runs each worker's share on its own (`multi`): keys on different workers
//! are disjoint, so each worker running its commands in queue order is running the queue in
//! order. A command whose outcome on one worker depends on a key of another does not split
//! that way: `SET a 1; RENAME a b; GET b` needs `a`'s value after the SET where `b` lives.
//! Such a transaction runs *in sequence*. Every worker it involves is held, in ascending
//! order, as a transaction group of its own (`Worker::group_step`, which also checks watched
//! keys); then a baton (`SeqRun`) visits them in the queue's order. A visit runs the commands
//! that come next and live on that worker, or one step of a command over two workers (read
//! the source, write the destination, delete the source...), with what the steps before it
//! learned carried along (`Carry`). Each visit answers what it produced, in the turn of its
//! writes and with what they need (the fsync policy, and a failed write reported as for
//! any command), so EXEC's reply goes out once all of it is as durable as promised. After
//! the last visit every worker lets go.
//!
//! The baton goes over the visits twice when the transaction writes: the first pass sets
//! disk room aside for each visit's writes on its worker (`set_aside_visit`: a bound, as
//! for any transaction's writes, with the value lengths the visits before leave carried
//! along), the second runs them, each in its room. A visit without room stops the first
//! pass: the second then runs nothing, gives the room back and answers the error, so on a
//! full disk (or under `storage.min_free_space`) EXEC is refused whole (EXECABORT), never
//! left half applied with an error in the middle of its array.
//!
//! Nothing else runs on those workers from the first hold to the last visit, so the
//! transaction is isolated as any EXEC. It costs one message per visit: a queue that goes
//! back and forth between workers takes as many hops. Keys with one hash tag avoid it. Every
//! visit runs at the time of EXEC (`Worker::at_time`, as every part of any transaction), so
//! a key set with a TTL of a few milliseconds is still there at a later visit, as in Redis.
//!
//! As outside a transaction, a command over several workers is all or nothing except when
//! the disk fails halfway: an MSETNX whose write fails on one worker after another wrote
//! answers the error with the first part written.
use std::collections::VecDeque;

use log::warn;

use super::combine::{Combine, Job};
use super::conn::{Client, Gather};
use super::dispatch::op_writes;
use super::moves::{MoveKind, Moved};
use super::msetnx::{HeldWork, NxHeld};
use super::multi::{Projected, Record, Room, TxPart, is_combine, is_move};
use super::replica::Need;
use super::router::{Op, OwnedArgs, Pairs, Payload, ReplyTo, Request};
use super::worker::Worker;
use crate::cmd::{self, Kind, MultiKind};

/// A transaction running in sequence: the visits left, in queue order, each with its
/// worker.
#[derive(Debug)]
pub struct SeqRun {
    visits: VecDeque<(usize, Visit)>,
    /// The disk room set aside for each visit (by item of an `Items` visit, or at 0),
    /// aligned with `visits`: filled by the first pass over them, taken as they run.
    rooms: VecDeque<Vec<(usize, Room)>>,
    /// The first pass's projection of value lengths through the visits before.
    lens: Projected,
    /// The first pass's: the size of what the move or BITOP in progress writes.
    sizing: Sizing,
    /// No room for a write: the visits run nothing and answer this (EXECABORT).
    refused: Option<String>,
    carry: Carry,
    /// The workers holding for it: all it involves, once the visits start.
    pub(super) held: Vec<usize>,
    pub(super) reply_to: ReplyTo,
    pub(super) acks: simplekv_conf::Acks,
    /// The time of EXEC: every visit runs at it (`Worker::at_time`).
    pub(super) now_ms: Option<u64>,
}

impl SeqRun {
    pub(super) fn new(visits: VecDeque<(usize, Visit)>, acks: simplekv_conf::Acks) -> Self {
        // A transaction that writes nothing (an LCS, reads) needs no room: the first pass
        // is skipped.
        let rooms = if visits.iter().any(|(_, v)| v.writes()) {
            VecDeque::new()
        } else {
            visits.iter().map(|_| Vec::new()).collect()
        };
        SeqRun {
            visits,
            rooms,
            lens: Projected::new(),
            sizing: Sizing::default(),
            refused: None,
            carry: Carry::default(),
            held: Vec::new(),
            // Set when the transaction's reply slot is made (`start_tx_steps`).
            reply_to: ReplyTo::default(),
            acks,
            now_ms: None,
        }
    }

    /// The workers it visits.
    pub(super) fn workers(&self) -> impl Iterator<Item = usize> + '_ {
        self.visits.iter().map(|(w, _)| *w)
    }

    /// Visits left, each of which answers once.
    pub(super) fn answers(&self) -> usize {
        self.visits.len()
    }
}

/// What one visit does on its worker. `index`: the command's place in the transaction.
#[derive(Debug)]
pub enum Visit {
    /// The commands that come next in the queue and live on this worker (a multi-key
    /// command's part among them).
    Items(Vec<(u32, Op)>),
    /// RENAME, RENAMENX, COPY: read the source, and check that it fits under the
    /// destination's key.
    MoveSource { src: Vec<u8>, dst: Vec<u8> },
    /// Decide, and write the destination. A COPY answers here.
    MoveDest {
        index: u32,
        kind: MoveKind,
        dst: Vec<u8>,
    },
    /// RENAME, RENAMENX: delete the source if the destination was written, and answer.
    MoveDelete { index: u32, src: Vec<u8> },
    /// MSETNX: none of this worker's keys may exist (`first`: the command's first visit).
    NxCheck { first: bool, pairs: Pairs },
    /// MSETNX: write this worker's pairs if every check passed; the `last` one answers.
    NxWrite {
        index: u32,
        pairs: Pairs,
        last: bool,
    },
    /// BITOP, LCS: read this worker's keys (`start`: the command, at its first visit); the
    /// `finish` visit (BITOP: on the destination's worker) computes, writes and answers.
    Combine {
        index: u32,
        start: Option<Box<Combine>>,
        finish: bool,
    },
}

impl Visit {
    /// It may write (then the first pass sets room aside for it).
    fn writes(&self) -> bool {
        match self {
            Visit::Items(items) => items.iter().any(|(_, op)| op_writes(op)),
            Visit::MoveSource { .. } | Visit::NxCheck { .. } => false,
            Visit::MoveDest { .. } | Visit::MoveDelete { .. } | Visit::NxWrite { .. } => true,
            Visit::Combine { start, .. } => start.as_ref().is_some_and(|c| c.writes()),
        }
    }
}

/// What a command over several visits writes, as the first pass learns it: a move's
/// destination is as long as its source, BITOP's as its longest source.
#[derive(Debug, Default)]
struct Sizing {
    /// BITOP's sources, read where they live, and its destination.
    keys: Vec<Vec<u8>>,
    dest: Option<Vec<u8>>,
    /// The longest value read so far.
    longest: usize,
}

/// What the visits of the command in progress learned so far.
#[derive(Debug, Default)]
struct Carry {
    /// A move's source value (`None`: no such key).
    source: Option<Moved>,
    /// A move's value does not fit under its destination key.
    refused: Option<String>,
    /// A move's outcome at its destination: delete the source.
    delete_source: bool,
    /// The reply decided so far: a move's at its destination, an MSETNX's refusal (a key
    /// exists, over the limits, a failed write), a BITOP/LCS read error.
    reply: Option<Payload>,
    /// A BITOP or LCS on its way.
    combine: Option<Box<Combine>>,
}

impl Worker {
    /// A command that makes its transaction run in sequence: RENAME, RENAMENX or COPY
    /// between keys of two workers, or MSETNX, BITOP or LCS over keys of several
    /// (standalone). Commands that would fail anyway (bad options, bad arity) do not.
    pub(super) fn crosses_workers(&self, args: &[&[u8]]) -> bool {
        if self.cluster.is_some() || args.len() < 3 {
            return false;
        }
        let Some(spec) = cmd::lookup(args[0]) else {
            return false;
        };
        let worker_of = |k: &[u8]| self.topo.worker_of(self.topo.partition_of(k));
        if is_move(spec) {
            return super::moves::parse(spec.name, args).is_ok()
                && worker_of(args[1]) != worker_of(args[2]);
        }
        if is_combine(spec) {
            let Ok(c) = super::combine::parse(spec.name, args) else {
                return false;
            };
            let mut ws = c.all_keys().map(worker_of);
            let first = ws.next();
            return ws.any(|w| Some(w) != first);
        }
        spec.kind == Kind::Multi(MultiKind::MSetNx)
            && (args.len() - 1).is_multiple_of(2)
            && cmd::table::arity_ok(spec, args.len())
            && self.pairs_over_limit(args).is_none()
            && self
                .multi_groups(args, 2)
                .iter()
                .filter(|g| !g.is_empty())
                .count()
                > 1
    }

    /// Plans one command of a transaction that runs in sequence: its visits go at the end
    /// of `visits`, and the gather that makes its reply is returned.
    pub(super) fn plan_seq(
        &mut self,
        token: usize,
        client: &mut Client,
        i: u32,
        c: OwnedArgs,
        visits: &mut VecDeque<(usize, Visit)>,
    ) -> Gather {
        let a = c.slices();
        if !self.crosses_workers(&a) {
            drop(a);
            let mut parts: Vec<TxPart> = (0..self.peers.len()).map(|_| TxPart::default()).collect();
            let gather = self.plan(token, client, i, c, &mut parts);
            for (w, part) in parts.into_iter().enumerate() {
                if part.items.is_empty() {
                    continue;
                }
                match visits.back_mut() {
                    Some((last, Visit::Items(items))) if *last == w => items.extend(part.items),
                    _ => visits.push_back((w, Visit::Items(part.items))),
                }
            }
            return gather;
        }
        let error = |e: &str| Gather::Single(Some(super::dispatch::error_reply(e)));
        let worker_of = |w: &Worker, k: &[u8]| w.topo.worker_of(w.topo.partition_of(k));
        let Some(spec) = cmd::lookup(a[0]) else {
            return error("ERR unknown command");
        };
        if is_move(spec) {
            let kind = match super::moves::parse(spec.name, &a) {
                Ok(k) => k,
                Err(e) => return error(&e),
            };
            let (src, dst) = (a[1].to_vec(), a[2].to_vec());
            let (ws, wd) = (worker_of(self, &src), worker_of(self, &dst));
            client.last_write = Some(self.topo.partition_of(&dst));
            let (s, d) = (src.clone(), dst.clone());
            visits.push_back((ws, Visit::MoveSource { src: s, dst: d }));
            visits.push_back((
                wd,
                Visit::MoveDest {
                    index: i,
                    kind,
                    dst,
                },
            ));
            if kind.removes_source() {
                visits.push_back((ws, Visit::MoveDelete { index: i, src }));
            }
        } else if is_combine(spec) {
            let c = match super::combine::parse(spec.name, &a) {
                Ok(c) => c,
                Err(e) => return error(&e),
            };
            let mut workers: Vec<usize> = c.keys.iter().map(|k| worker_of(self, k)).collect();
            workers.sort_unstable();
            workers.dedup();
            // The last visit computes: BITOP where its destination lives.
            let finish = match &c.job {
                Job::BitOp { dest, .. } => {
                    client.last_write = Some(self.topo.partition_of(dest));
                    worker_of(self, dest)
                }
                Job::Lcs(_) => workers.last().copied().unwrap_or(self.id),
            };
            workers.retain(|&w| w != finish);
            workers.push(finish);
            let mut start = Some(Box::new(c));
            let n = workers.len();
            for (k, w) in workers.into_iter().enumerate() {
                let visit = Visit::Combine {
                    index: i,
                    start: start.take(),
                    finish: k + 1 == n,
                };
                visits.push_back((w, visit));
            }
        } else {
            // MSETNX over several workers (within the limits: `crosses_workers`): check every
            // worker's keys, then write.
            client.last_write = Some(self.topo.partition_of(a[1]));
            let parts: Vec<(usize, Pairs)> = self
                .multi_groups(&a, 2)
                .iter()
                .enumerate()
                .filter(|(_, g)| !g.is_empty())
                .filter_map(
                    |(w, g)| match super::dispatch::multi_op(MultiKind::MSetNx, &a, g) {
                        Op::MSetNx { pairs } => Some((w, pairs)),
                        _ => None,
                    },
                )
                .collect();
            for (k, (w, pairs)) in parts.iter().enumerate() {
                let pairs = pairs.clone();
                visits.push_back((
                    w.to_owned(),
                    Visit::NxCheck {
                        first: k == 0,
                        pairs,
                    },
                ));
            }
            let n = parts.len();
            for (k, (w, pairs)) in parts.into_iter().enumerate() {
                let last = k + 1 == n;
                visits.push_back((
                    w,
                    Visit::NxWrite {
                        index: i,
                        pairs,
                        last,
                    },
                ));
            }
        }
        Gather::Single(None)
    }

    /// The baton of a transaction running in sequence reaches this worker (held for it):
    /// it runs the visits that are here, each answering at once, then passes the baton on,
    /// or lets every worker go after the last one.
    pub(super) fn seq_visit(&mut self, mut run: Box<SeqRun>) {
        loop {
            // The first pass is at the first visit without room yet.
            let here = match run.visits.get(run.rooms.len()).or(run.visits.front()) {
                None => break,
                Some((w, _)) => *w,
            };
            if here != self.id {
                let (reply_to, acks) = (run.reply_to, run.acks);
                let op = Op::SeqVisit(run);
                return self.send_req(here, Request { reply_to, op, acks });
            }
            let holding = matches!(
                &self.nx,
                Some(NxHeld { reply_to, work: HeldWork::Group(parts), .. })
                    if *reply_to == run.reply_to && parts.len() == 1
            );
            if !holding {
                return self.seq_broken(&run);
            }
            if run.rooms.len() < run.visits.len() {
                // The first pass: room for the visit's writes.
                self.at_time(run.now_ms, |w| w.set_aside_visit(&mut run));
                continue;
            }
            let (Some((_, visit)), Some(room)) = (run.visits.pop_front(), run.rooms.pop_front())
            else {
                break;
            };
            if let Some(e) = &run.refused {
                for (_, r) in &room {
                    self.release_room(r);
                }
                self.nx_answer(run.reply_to, Payload::Err(e.clone()), Need::Now);
                continue;
            }
            let (carry, acks) = (&mut run.carry, run.acks);
            let (done, need) = self.at_time(run.now_ms, |w| w.run_visit(visit, carry, acks, room));
            self.nx_answer(run.reply_to, Payload::Tx(done), need);
        }
        // Every worker lets go; each answers its (empty) part of the transaction.
        let others: Vec<usize> = run.held.iter().copied().filter(|&w| w != self.id).collect();
        self.nx_decide_held(&others, run.reply_to, run.acks, true);
        self.nx_decide(true, None, Vec::new(), None);
    }

    /// A visit where this worker does not hold for the transaction (which cannot happen
    /// while the holds work as they should): whatever hold this worker is in stays, the
    /// visits left and this worker's part answer an error, and the other workers let go.
    fn seq_broken(&mut self, run: &SeqRun) {
        warn!(
            "worker {}: a transaction's visit where it does not hold for it",
            self.id
        );
        // The room its visits here kept (that of the others' stays until their segments
        // close).
        let mine = run
            .visits
            .iter()
            .zip(&run.rooms)
            .filter(|((w, _), _)| *w == self.id);
        let room: Vec<Room> = mine
            .flat_map(|(_, r)| r.iter().map(|(_, r)| r.clone()))
            .collect();
        for r in &room {
            self.release_room(r);
        }
        let e = || Payload::Err("ERR internal: a transaction step out of place".into());
        for _ in 0..run.answers() {
            self.nx_answer(run.reply_to, e(), Need::Now);
        }
        if run.held.contains(&self.id) {
            self.nx_answer(run.reply_to, e(), Need::Now);
        }
        let others: Vec<usize> = run.held.iter().copied().filter(|&w| w != self.id).collect();
        self.nx_decide_held(&others, run.reply_to, run.acks, true);
    }

    /// One visit's work: the payloads it answers (by command index) and what they need.
    fn run_visit(
        &mut self,
        visit: Visit,
        carry: &mut Carry,
        acks: simplekv_conf::Acks,
        mut room: Vec<(usize, Room)>,
    ) -> (Vec<(u32, Payload)>, Need) {
        if let Visit::Items(items) = visit {
            return match self.run_tx_items_in_room(items, acks, room) {
                (Payload::Tx(done), need) => (done, need),
                (_, need) => (Vec::new(), need),
            };
        }
        let room = room.pop().map(|(_, r)| r).unwrap_or_default();
        self.in_room(&room, |w| w.run_step(visit, carry, acks))
    }

    /// The first pass's step at the visit the pass is at (of this worker): sets room aside
    /// for what it writes, a bound as for any write of a transaction
    /// (`Worker::set_aside_part`), with what the visits before it leave (`SeqRun::lens`).
    /// Without room, nothing is kept and no visit runs.
    fn set_aside_visit(&mut self, run: &mut SeqRun) {
        let at = run.rooms.len();
        let kept = match run.visits.get(at).map(|(_, v)| v) {
            _ if run.refused.is_some() => Ok(Vec::new()),
            Some(Visit::Items(items)) => self.set_aside_part(items, &mut run.lens),
            Some(Visit::MoveSource { src, .. }) => {
                run.sizing = Sizing {
                    longest: self.projected_len(&run.lens, src),
                    ..Sizing::default()
                };
                Ok(Vec::new())
            }
            // The destination may keep its value (RENAMENX, COPY without REPLACE), and
            // RENAMENX's source too.
            Some(Visit::MoveDest { dst, .. }) => self
                .set_aside_records(&[(dst, Some(run.sizing.longest), false)], &mut run.lens)
                .map(|r| vec![(0, r)]),
            // Nor is the source surely gone (a RENAMENX, or a move refused).
            Some(Visit::MoveDelete { src, .. }) => self
                .set_aside_records(&[(src, None, false)], &mut run.lens)
                .map(|r| vec![(0, r)]),
            Some(Visit::NxCheck { .. }) | None => Ok(Vec::new()),
            Some(Visit::NxWrite { pairs, .. }) => {
                // It may set nothing.
                let records: Vec<Record> = pairs
                    .iter()
                    .map(|(k, v)| (k, Some(v.len()), false))
                    .collect();
                self.set_aside_records(&records, &mut run.lens)
                    .map(|r| vec![(0, r)])
            }
            Some(Visit::Combine { start, finish, .. }) => {
                if let Some(c) = start {
                    let dest = match &c.job {
                        Job::BitOp { dest, .. } => Some(dest.clone()),
                        Job::Lcs(_) => None,
                    };
                    run.sizing = Sizing {
                        keys: c.keys.clone(),
                        dest,
                        ..Sizing::default()
                    };
                }
                let sizing = &mut run.sizing;
                let mine = |k: &&Vec<u8>| self.topo.worker_of(self.topo.partition_of(k)) == self.id;
                for k in sizing.keys.iter().filter(mine) {
                    sizing.longest = sizing.longest.max(self.projected_len(&run.lens, k));
                }
                match sizing.dest.as_deref() {
                    Some(d) if *finish => self
                        .set_aside_records(&[(d, Some(sizing.longest), true)], &mut run.lens)
                        .map(|r| vec![(0, r)]),
                    _ => Ok(Vec::new()),
                }
            }
        };
        match kept {
            Ok(room) => run.rooms.push_back(room),
            Err(e) => {
                // The visits before release what they kept as they answer the refusal.
                run.refused = Some(e);
                while run.rooms.len() < run.visits.len() {
                    run.rooms.push_back(Vec::new());
                }
            }
        }
    }

    /// One visit's work but an `Items` one (`run_visit`), in its room.
    fn run_step(
        &mut self,
        visit: Visit,
        carry: &mut Carry,
        acks: simplekv_conf::Acks,
    ) -> (Vec<(u32, Payload)>, Need) {
        match visit {
            Visit::Items(items) => match self.run_tx_items(items, acks) {
                (Payload::Tx(done), need) => (done, need),
                (_, need) => (Vec::new(), need),
            },
            Visit::MoveSource { src, dst } => {
                *carry = Carry::default();
                carry.source = self.read_moved(&src);
                carry.refused = carry
                    .source
                    .as_ref()
                    .and_then(|m| self.over_limit(&dst, &m.value));
                (Vec::new(), Need::Now)
            }
            Visit::MoveDest { index, kind, dst } => {
                let decision = match carry.refused.take() {
                    Some(e) => Err(Payload::Err(e)),
                    None => kind.decide(carry.source.is_some(), self.key_exists(&dst)),
                };
                let (reply, need) = match (decision, carry.source.take()) {
                    (Err(e), _) => (e, Need::Now),
                    (Ok(true), Some(m)) => match self.write_moved(&dst, m, kind.command()) {
                        Ok(()) => {
                            carry.delete_source = true;
                            let p = self.topo.partition_of(&dst);
                            (kind.done(), self.need_for(Some(p), true, acks))
                        }
                        Err(e) => (e, Need::Now),
                    },
                    (Ok(_), _) => (Payload::Int(0), Need::Now),
                };
                if kind.removes_source() {
                    carry.reply = Some(reply);
                    return (Vec::new(), need);
                }
                (vec![(index, reply)], need)
            }
            Visit::MoveDelete { index, src } => {
                let mut reply = carry.reply.take().unwrap_or_else(|| {
                    Payload::Err("ERR internal: a move without its outcome".into())
                });
                let mut need = Need::Now;
                if std::mem::take(&mut carry.delete_source) {
                    // Only a RENAME or RENAMENX deletes its source.
                    match self.delete_key(&src, "rename") {
                        Ok(()) => {
                            need = self.need_for(Some(self.topo.partition_of(&src)), true, acks)
                        }
                        Err(e) => reply = e,
                    }
                }
                (vec![(index, reply)], need)
            }
            Visit::NxCheck { first, pairs } => {
                if first {
                    *carry = Carry::default();
                }
                if carry.reply.is_none() {
                    carry.reply = match self.nx_over_limit(&pairs) {
                        Some(e) => Some(Payload::Err(e)),
                        None => self.nx_any_present(&pairs).then_some(Payload::Int(0)),
                    };
                }
                (Vec::new(), Need::Now)
            }
            Visit::NxWrite { index, pairs, last } => {
                let mut need = Need::Now;
                if carry.reply.is_none() {
                    let (payload, n) = self.nx_write(pairs, acks, &[]);
                    need = n;
                    if !matches!(payload, Payload::Int(1)) {
                        carry.reply = Some(payload);
                    }
                }
                if !last {
                    return (Vec::new(), need);
                }
                let reply = carry.reply.take().unwrap_or(Payload::Int(1));
                (vec![(index, reply)], need)
            }
            Visit::Combine {
                index,
                start,
                finish,
            } => {
                if let Some(c) = start {
                    *carry = Carry::default();
                    carry.combine = Some(c);
                }
                let Some(mut c) = carry.combine.take() else {
                    let e = Payload::Err("ERR internal: BITOP/LCS without its command".into());
                    return (vec![(index, e)], Need::Now);
                };
                if carry.reply.is_none()
                    && let Err(e) = self.combine_read(&mut c)
                {
                    carry.reply = Some(e);
                }
                if !finish {
                    carry.combine = Some(c);
                    return (Vec::new(), Need::Now);
                }
                if let Some(e) = carry.reply.take() {
                    return (vec![(index, e)], Need::Now);
                }
                // What it computes is timed for the slow log (`slowlog`).
                let c = *c;
                let timer = Some(self.op_timer());
                let argv = || c.argv.iter().map(|a| &a[..]).collect();
                let (reply, need) = match c.job {
                    Job::Lcs(o) => {
                        let reply = self.lcs_of(&c.values, o);
                        self.op_ran(timer, argv);
                        (reply, Need::Now)
                    }
                    Job::BitOp { op, dest } => {
                        let result = super::combine::finish_bitop(op, c.acc);
                        let (payload, wrote) = self.store_bitop(&dest, result);
                        self.op_ran(timer, argv);
                        let p = self.topo.partition_of(&dest);
                        (payload, self.need_for(Some(p), wrote, acks))
                    }
                };
                (vec![(index, reply)], need)
            }
        }
    }
}
