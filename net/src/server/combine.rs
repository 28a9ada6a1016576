//! BITOP and LCS: commands that read several string keys and combine their values (BITOP then
//! writes the result under its destination key), with Redis 7.0's replies and errors. A
//! missing key reads as the empty string, as in Redis.
//!
//! Keys on one worker (always in cluster mode, where they must share a slot): that worker
//! runs the command in one go (`Op::Combine`). Inside MULTI, keys on several workers make
//! the transaction run in sequence (`seqtx`). Keys on several workers
//! (standalone): the command travels as a chain through its workers in ascending order, each
//! reading the keys it owns and then holding still (as for an MSETNX, `msetnx`: it runs no
//! other command until the outcome), so that the command reads one moment and its write is
//! seen whole, as in Redis. The last worker computes the result; BITOP's destination is
//! written by its own worker (the last one, or a held one told the value with the outcome),
//! which answers. The connection runs its next command only once that answer is back. Keys
//! with one hash tag (`{day}:mon {day}:tue`) live on one worker and need no hold.
use log::warn;

use super::conn::{Client, Gather, Output, Pending, Slot};
use super::dispatch::err;
use super::replica::Need;
use super::router::{Op, Payload, ReplyTo, Request, Response};
use super::worker::Worker;
use crate::resp::{write_array_len, write_bulk, write_integer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitOpKind {
    And,
    Or,
    Xor,
    Not,
}

/// LCS's options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LcsOpts {
    len: bool,
    idx: bool,
    min_match_len: u64,
    with_match_len: bool,
}

#[derive(Debug)]
pub enum Job {
    BitOp { op: BitOpKind, dest: Vec<u8> },
    Lcs(LcsOpts),
}

/// A BITOP or LCS on its way: the keys to read and what was read so far. A key named more
/// than once is read once; a missing key reads as empty.
#[derive(Debug)]
pub struct Combine {
    pub job: Job,
    pub keys: Vec<Vec<u8>>,
    /// By key: read yet.
    pub read: Vec<bool>,
    /// LCS: the two values, by key.
    pub values: Vec<Option<Vec<u8>>>,
    /// BITOP: the sources read so far, combined (`fold`), so that only one value of the
    /// result's size travels, however many sources there are.
    pub acc: Option<Vec<u8>>,
    /// Over several workers: the workers visited so far, each holding still until the
    /// outcome (`msetnx`).
    pub held: Vec<usize>,
    /// The command as the client sent it, for the slow log entry of the worker that
    /// computes it (keys and options only: BITOP and LCS take no values).
    pub argv: Vec<Vec<u8>>,
}

impl Combine {
    /// Every key the command names (BITOP's destination first).
    pub fn all_keys(&self) -> impl Iterator<Item = &[u8]> {
        let dest = match &self.job {
            Job::BitOp { dest, .. } => Some(dest.as_slice()),
            Job::Lcs(_) => None,
        };
        dest.into_iter()
            .chain(self.keys.iter().map(|k| k.as_slice()))
    }

    pub fn writes(&self) -> bool {
        matches!(self.job, Job::BitOp { .. })
    }
}

/// BITOP or LCS's arguments (arity checked), or the error to answer.
pub fn parse(name: &str, args: &[&[u8]]) -> Result<Combine, String> {
    let (job, keys) = if name == "bitop" {
        let word = args[1];
        let op = if word.eq_ignore_ascii_case(b"and") {
            BitOpKind::And
        } else if word.eq_ignore_ascii_case(b"or") {
            BitOpKind::Or
        } else if word.eq_ignore_ascii_case(b"xor") {
            BitOpKind::Xor
        } else if word.eq_ignore_ascii_case(b"not") {
            BitOpKind::Not
        } else {
            return Err("ERR syntax error".into());
        };
        if op == BitOpKind::Not && args.len() != 4 {
            return Err("ERR BITOP NOT must be called with a single source key.".into());
        }
        let job = Job::BitOp {
            op,
            dest: args[2].to_vec(),
        };
        (job, &args[3..])
    } else {
        let mut o = LcsOpts::default();
        let mut j = 3;
        while j < args.len() {
            let opt = args[j];
            if opt.eq_ignore_ascii_case(b"idx") {
                o.idx = true;
            } else if opt.eq_ignore_ascii_case(b"len") {
                o.len = true;
            } else if opt.eq_ignore_ascii_case(b"withmatchlen") {
                o.with_match_len = true;
            } else if opt.eq_ignore_ascii_case(b"minmatchlen") && j + 1 < args.len() {
                let n = crate::resp::string2ll(args[j + 1])
                    .ok_or("ERR value is not an integer or out of range")?;
                o.min_match_len = n.max(0) as u64;
                j += 1;
            } else {
                return Err("ERR syntax error".into());
            }
            j += 1;
        }
        if o.len && o.idx {
            return Err("ERR If you want both the length and indexes, please just use IDX.".into());
        }
        (Job::Lcs(o), &args[1..3])
    };
    // BITOP folds what it reads into `acc`; only LCS keeps its two values.
    let kept = if matches!(job, Job::Lcs(_)) {
        keys.len()
    } else {
        0
    };
    Ok(Combine {
        job,
        keys: keys.iter().map(|k| k.to_vec()).collect(),
        read: vec![false; keys.len()],
        values: vec![None; kept],
        acc: None,
        held: Vec::new(),
        argv: args.iter().map(|a| a.to_vec()).collect(),
    })
}

/// Folds one BITOP source into what was folded so far. AND, OR and XOR are associative and
/// commutative, so the sources may come in any order; a shorter one reads as zeros past its
/// end, so the result is as long as the longest.
pub fn fold(acc: &mut Option<Vec<u8>>, op: BitOpKind, v: &[u8]) {
    let Some(a) = acc else {
        *acc = Some(v.to_vec());
        return;
    };
    if v.len() > a.len() {
        a.resize(v.len(), 0);
    }
    for (i, x) in a.iter_mut().enumerate() {
        let b = v.get(i).copied().unwrap_or(0);
        match op {
            BitOpKind::And => *x &= b,
            BitOpKind::Or => *x |= b,
            BitOpKind::Xor => *x ^= b,
            BitOpKind::Not => {}
        }
    }
}

/// BITOP's result from its folded sources.
pub(super) fn finish_bitop(op: BitOpKind, acc: Option<Vec<u8>>) -> Vec<u8> {
    let mut r = acc.unwrap_or_default();
    if op == BitOpKind::Not {
        r.iter_mut().for_each(|b| *b = !*b);
    }
    r
}

/// BITOP over the sources' values: as long as the longest, shorter ones padded with zeros.
#[cfg(test)]
fn bitop(op: BitOpKind, sources: &[Vec<u8>]) -> Vec<u8> {
    let mut acc = None;
    for s in sources {
        fold(&mut acc, op, s);
    }
    finish_bitop(op, acc)
}

/// LCS of `a` and `b` as Redis 7.0 answers it (the common subsequence, its length, or the
/// matching ranges with IDX), or the error when the table it needs would pass
/// proto-max-bulk-len.
pub fn lcs(a: &[u8], b: &[u8], o: LcsOpts, proto_max_bulk_len: usize) -> Result<Vec<u8>, String> {
    let (alen, blen) = (a.len(), b.len());
    let cells = (alen as u128 + 1) * (blen as u128 + 1);
    if cells * 4 > proto_max_bulk_len as u128 {
        return Err(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len".into(),
        );
    }
    let w = blen + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=alen {
        for j in 1..=blen {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let total = t[alen * w + blen];
    let mut out = Vec::new();
    if o.len && !o.idx {
        write_integer(&mut out, i64::from(total));
        return Ok(out);
    }
    // Walk back from the end, as Redis does, collecting the string and the ranges.
    let mut result = vec![0u8; total as usize];
    let mut ranges: Vec<[usize; 4]> = Vec::new();
    let mut at = total as usize;
    let (mut i, mut j) = (alen, blen);
    // (a_start, a_end, b_start, b_end) of the range being extended; None between ranges.
    let mut cur: Option<[usize; 4]> = None;
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[at - 1] = a[i - 1];
            match cur.as_mut() {
                None => cur = Some([i - 1, i - 1, j - 1, j - 1]),
                Some(r) if r[0] == i && r[2] == j => {
                    r[0] -= 1;
                    r[2] -= 1;
                }
                Some(_) => emit = true,
            }
            if cur.is_some_and(|r| r[0] == 0 || r[2] == 0) {
                emit = true;
            }
            at -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[(i - 1) * w + j] > t[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if cur.is_some() {
                emit = true;
            }
        }
        if emit && let Some(r) = cur.take() {
            let len = (r[1] - r[0] + 1) as u64;
            if o.min_match_len == 0 || len >= o.min_match_len {
                ranges.push(r);
            }
        }
    }
    if !o.idx {
        write_bulk(&mut out, &result);
        return Ok(out);
    }
    write_array_len(&mut out, 4);
    write_bulk(&mut out, b"matches");
    write_array_len(&mut out, ranges.len());
    for r in ranges {
        write_array_len(&mut out, 2 + usize::from(o.with_match_len));
        for (s, e) in [(r[0], r[1]), (r[2], r[3])] {
            write_array_len(&mut out, 2);
            write_integer(&mut out, s as i64);
            write_integer(&mut out, e as i64);
        }
        if o.with_match_len {
            write_integer(&mut out, (r[1] - r[0] + 1) as i64);
        }
    }
    write_bulk(&mut out, b"len");
    write_integer(&mut out, i64::from(total));
    Ok(out)
}

impl Worker {
    /// BITOP / LCS from a connection (arity checked).
    pub(super) fn cmd_combine(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        name: &str,
        args: &[&[u8]],
    ) {
        let c = match parse(name, args) {
            Ok(c) => c,
            Err(e) => return err(out, &e),
        };
        let acks = self.acks_of(client);
        let first = c.all_keys().next().unwrap_or_default().to_vec();
        let p = self.topo.partition_of(&first);
        if self.cluster.is_some() {
            let slot = crate::slot::key_slot(&first);
            if c.all_keys().any(|k| crate::slot::key_slot(k) != slot) {
                return err(out, super::cluster_cmds::CROSSSLOT);
            }
            if let Some(e) = self.cluster_refusal(p, &first, c.writes(), acks) {
                return err(out, &e);
            }
        }
        if c.writes() {
            client.last_write = Some(p);
        }
        let owner = self.topo.worker_of(p);
        let one_worker = c
            .all_keys()
            .all(|k| self.topo.worker_of(self.topo.partition_of(k)) == owner);
        let op = Op::Combine(Box::new(c));
        if one_worker && owner == self.id {
            let (payload, need) = self.execute_op(op, acks);
            let reply = super::dispatch::payload_to_resp(payload);
            return self.push_gathered(out, Slot::Ready(reply), need);
        }
        let slot = Slot::Waiting(Box::new(Pending {
            gather: Gather::Single(None),
            hold: None,
        }));
        if one_worker {
            let seq = out.push_slot(slot);
            let reply_to = self.reply_to(token, client, out, seq, 0);
            return self.send_req(owner, Request { reply_to, op, acks });
        }
        // Several workers: a chain from the lowest, and the connection waits for its answer.
        let reply_to = self.begin_chain(token, out, client, 1, slot);
        let Op::Combine(c) = op else {
            unreachable!("built above")
        };
        let first = c
            .all_keys()
            .map(|k| self.topo.worker_of(self.topo.partition_of(k)))
            .min()
            .unwrap_or(self.id);
        if first == self.id {
            self.combine_step(reply_to, acks, c);
        } else {
            // Sent last this turn, as every step (`Worker::send_batches`).
            let op = Op::Combine(c);
            self.nx_out.push((first, Request { reply_to, op, acks }));
        }
    }

    /// Reads the keys of `c` this worker owns and not yet read, each once, however many
    /// times it is named.
    pub(super) fn combine_read(&mut self, c: &mut Combine) -> Result<(), Payload> {
        for i in 0..c.keys.len() {
            if c.read[i] {
                continue;
            }
            let p = self.topo.partition_of(&c.keys[i]);
            if self.topo.worker_of(p) != self.id {
                continue;
            }
            let Some(s) = self.store(p) else {
                return Err(Payload::Err(
                    "ERR partition not available on this node".into(),
                ));
            };
            let value = s
                .get(&c.keys[i])
                .map_err(|e| Payload::Err(format!("ERR {e}")))?;
            // Each key named, as Redis's lookups for BITOP's sources and LCS's keys.
            let named = c.keys.iter().filter(|k| **k == c.keys[i]).count();
            for _ in 0..named {
                self.count_lookup(Some(value.is_some()));
                if value.is_none() {
                    let key = c.keys[i].clone();
                    self.notify_miss(&key);
                }
            }
            let value = value.unwrap_or_default();
            for j in i..c.keys.len() {
                if c.read[j] || c.keys[j] != c.keys[i] {
                    continue;
                }
                c.read[j] = true;
                match c.job {
                    // Every time it is named: XOR k k is zeros.
                    Job::BitOp { op, .. } => fold(&mut c.acc, op, &value),
                    Job::Lcs(_) => c.values[j] = Some(value.clone()),
                }
            }
        }
        Ok(())
    }

    /// The worker a chain over several workers visits next, if any: the lowest owner of a
    /// key not read yet or (BITOP) of the destination, above this one (the chain goes up).
    fn combine_next(&self, c: &Combine) -> Option<usize> {
        let worker_of = |k: &[u8]| self.topo.worker_of(self.topo.partition_of(k));
        let unread = c
            .keys
            .iter()
            .zip(&c.read)
            .filter(|(_, read)| !**read)
            .map(|(k, _)| worker_of(k));
        let dest = match &c.job {
            Job::BitOp { dest, .. } => Some(worker_of(dest)).filter(|&w| w > self.id),
            Job::Lcs(_) => None,
        };
        unread.chain(dest).min()
    }

    /// BITOP or LCS with every key on this worker (cluster checks done by the caller).
    pub(super) fn run_combine(&mut self, mut c: Combine) -> (Payload, bool) {
        if let Err(e) = self.combine_read(&mut c) {
            return (e, false);
        }
        let elsewhere = c
            .all_keys()
            .any(|k| self.topo.worker_of(self.topo.partition_of(k)) != self.id);
        if elsewhere {
            return (
                Payload::Err("ERR internal: BITOP/LCS keys on another worker".into()),
                false,
            );
        }
        match c.job {
            Job::Lcs(o) => (self.lcs_of(&c.values, o), false),
            Job::BitOp { op, dest } => self.store_bitop(&dest, finish_bitop(op, c.acc)),
        }
    }

    /// LCS's reply for the two values read.
    pub(super) fn lcs_of(&self, values: &[Option<Vec<u8>>], o: LcsOpts) -> Payload {
        let max = self.exec_ctx().proto_max_bulk_len;
        let value = |i: usize| values.get(i).and_then(|v| v.as_deref()).unwrap_or(b"");
        match lcs(value(0), value(1), o, max) {
            Ok(reply) => Payload::Resp(reply.into()),
            Err(e) => Payload::Err(e),
        }
    }

    /// Writes BITOP's result under `dest` (a key of this worker): an empty result deletes
    /// it, as in Redis. The reply (the result's length), and whether anything was written.
    pub(super) fn store_bitop(&mut self, dest: &[u8], result: Vec<u8>) -> (Payload, bool) {
        let len = result.len() as i64;
        let written = if result.is_empty() {
            let exists = self
                .store(self.topo.partition_of(dest))
                .is_some_and(|s| s.exists(dest));
            if !exists {
                return (Payload::Int(0), false);
            }
            self.delete_key(dest, "bitop")
        } else {
            let m = super::moves::Moved {
                value: result,
                expire: None,
            };
            self.write_moved(dest, m, "bitop")
        };
        match written {
            Ok(()) => (Payload::Int(len), true),
            Err(e) => (e, false),
        }
    }

    /// A held BITOP/LCS part's outcome (`msetnx::nx_decide`): where BITOP's destination is
    /// (`dest`), write the result it is told and answer; elsewhere, nothing.
    pub(super) fn combine_decided(
        &mut self,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        dest: Option<Vec<u8>>,
        moved: Option<Box<super::moves::Moved>>,
    ) {
        let (Some(dest), Some(m)) = (dest, moved) else {
            return;
        };
        let (payload, wrote) = self.store_bitop(&dest, m.value);
        let p = self.topo.partition_of(&dest);
        let need = self.need_for(Some(p), wrote, acks);
        self.nx_answer(reply_to, payload, need);
    }

    /// One worker's step of a BITOP/LCS over several workers: read its keys, then pass the
    /// chain on, or finish and answer.
    pub(super) fn combine_step(
        &mut self,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        mut c: Box<Combine>,
    ) {
        let answer = |w: &mut Worker, payload, need| {
            w.outbox
                .push((reply_to.worker, Response::new(reply_to, payload), need));
        };
        if self.cluster.is_some() {
            // All its keys share a slot, so they are all here: run it after the cluster
            // checks (a partition that moved answers MOVED or TRYAGAIN, not a read error).
            let (payload, need) = self.execute_op(Op::Combine(c), acks);
            return answer(self, payload, need);
        }
        let held = std::mem::take(&mut c.held);
        let fail = |w: &mut Worker, e: Payload| {
            w.nx_decide_held(&held, reply_to, acks, false);
            answer(w, e, Need::Now);
        };
        // The last worker's reads and computing are timed for the slow log (`slowlog`).
        let timer = Some(self.op_timer());
        if let Err(e) = self.combine_read(&mut c) {
            return fail(self, e);
        }
        let worker_of = |w: &Worker, k: &[u8]| w.topo.worker_of(w.topo.partition_of(k));
        if let Some(next) = self.combine_next(&c) {
            if next <= self.id {
                warn!("worker {}: BITOP/LCS step out of order", self.id);
                let e = Payload::Err("ERR internal: BITOP/LCS step out of place".into());
                return fail(self, e);
            }
            // Held until the outcome; the destination's worker writes it then.
            let dest = match &c.job {
                Job::BitOp { dest, .. } if worker_of(self, dest) == self.id => Some(dest.clone()),
                _ => None,
            };
            // The keys it read here are held too: a write to one of them now would come
            // after the read, and before the result is written.
            let reads: Vec<&[u8]> = c
                .keys
                .iter()
                .filter(|k| worker_of(self, k) == self.id)
                .map(|k| k.as_slice())
                .collect();
            let work = super::msetnx::HeldWork::Combine { dest };
            self.hold(reply_to, acks, work, &reads);
            c.held = held;
            c.held.push(self.id);
            // Sent last this turn, as an MSETNX step (`Worker::send_batches`): a command the
            // connection sent before this one is then in every worker's queue before the
            // chain can reach that worker by way of another one.
            let op = Op::Combine(c);
            return self.nx_out.push((next, Request { reply_to, op, acks }));
        }
        // The last worker: every key is read, and every other worker holds.
        let c = *c;
        let argv = || c.argv.iter().map(|a| &a[..]).collect();
        match c.job {
            Job::Lcs(o) => {
                let payload = self.lcs_of(&c.values, o);
                self.op_ran(timer, argv);
                answer(self, payload, Need::Now);
                self.nx_decide_held(&held, reply_to, acks, true);
            }
            Job::BitOp { op, dest } => {
                let result = finish_bitop(op, c.acc);
                self.op_ran(timer, argv);
                let owner = worker_of(self, &dest);
                if owner == self.id {
                    let (payload, wrote) = self.store_bitop(&dest, result);
                    let need = self.need_for(Some(self.topo.partition_of(&dest)), wrote, acks);
                    answer(self, payload, need);
                    self.nx_decide_held(&held, reply_to, acks, true);
                    return;
                }
                let mut result = Some(result);
                for &w in &held {
                    let moved = if w == owner {
                        result.take().map(|value| {
                            Box::new(super::moves::Moved {
                                value,
                                expire: None,
                            })
                        })
                    } else {
                        None
                    };
                    let op = Op::NxDecide {
                        commit: true,
                        moved,
                        refused: Vec::new(),
                        at: None,
                    };
                    self.send_req(w, Request { reply_to, op, acks });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Reply, parse_reply};

    fn reply(bytes: &[u8]) -> Reply {
        parse_reply(bytes).unwrap().unwrap().0
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn parsed(v: &[&str]) -> Result<Combine, String> {
        let owned = args(v);
        let a: Vec<&[u8]> = owned.iter().map(|x| x.as_slice()).collect();
        parse(v[0], &a)
    }

    #[test]
    fn bitop_pads_shorter_sources_with_zeros() {
        let v = |s: &[u8]| s.to_vec();
        let srcs = [v(b"\xff\x0f"), v(b"\xf0"), v(b"")];
        assert_eq!(bitop(BitOpKind::And, &srcs), [0x00, 0x00]);
        assert_eq!(bitop(BitOpKind::Or, &srcs), [0xff, 0x0f]);
        assert_eq!(bitop(BitOpKind::Xor, &srcs[..2]), [0x0f, 0x0f]);
        assert_eq!(bitop(BitOpKind::And, &srcs[..2]), [0xf0, 0x00]);
        assert_eq!(bitop(BitOpKind::Not, &srcs[..1]), [0x00, 0xf0]);
        assert_eq!(bitop(BitOpKind::Or, &[v(b""), v(b"")]), Vec::<u8>::new());
        // A source named twice counts twice: XOR k k is zeros as long as k.
        assert_eq!(bitop(BitOpKind::Xor, &[v(b"ab"), v(b"ab")]), [0, 0]);
        // Any order gives the same result.
        let mut a = srcs.to_vec();
        a.reverse();
        for op in [BitOpKind::And, BitOpKind::Or, BitOpKind::Xor] {
            assert_eq!(bitop(op, &a), bitop(op, &srcs), "{op:?}");
        }
    }

    #[test]
    fn bitop_and_lcs_arguments_parse_as_redis_reads_them() {
        assert_eq!(
            parsed(&["bitop", "nand", "d", "a"]).unwrap_err(),
            "ERR syntax error"
        );
        assert_eq!(
            parsed(&["bitop", "NOT", "d", "a", "b"]).unwrap_err(),
            "ERR BITOP NOT must be called with a single source key."
        );
        let c = parsed(&["bitop", "Xor", "d", "a", "b"]).unwrap();
        assert_eq!(c.all_keys().collect::<Vec<_>>(), [b"d", b"a", b"b"]);
        assert!(c.writes());
        assert_eq!(
            parsed(&["lcs", "a", "b", "len", "idx"]).unwrap_err(),
            "ERR If you want both the length and indexes, please just use IDX."
        );
        assert_eq!(
            parsed(&["lcs", "a", "b", "minmatchlen"]).unwrap_err(),
            "ERR syntax error"
        );
        assert_eq!(
            parsed(&["lcs", "a", "b", "minmatchlen", "x"]).unwrap_err(),
            "ERR value is not an integer or out of range"
        );
        let c = parsed(&["lcs", "a", "b", "MINMATCHLEN", "-3", "withmatchlen"]).unwrap();
        assert!(!c.writes());
        assert!(matches!(
            c.job,
            Job::Lcs(LcsOpts {
                min_match_len: 0,
                with_match_len: true,
                ..
            })
        ));
    }

    #[test]
    fn lcs_answers_as_redis_documents() {
        let a = b"ohmytext";
        let b = b"mynewtext";
        let o = LcsOpts::default();
        let max = 512 << 20;
        assert_eq!(
            reply(&lcs(a, b, o, max).unwrap()),
            Reply::Bulk(b"mytext".to_vec())
        );
        let len = LcsOpts { len: true, ..o };
        assert_eq!(reply(&lcs(a, b, len, max).unwrap()), Reply::Integer(6));
        let int = Reply::Integer;
        let pair = |x, y| Reply::Array(vec![int(x), int(y)]);
        let idx = LcsOpts { idx: true, ..o };
        let expect = Reply::Array(vec![
            Reply::Bulk(b"matches".to_vec()),
            Reply::Array(vec![
                Reply::Array(vec![pair(4, 7), pair(5, 8)]),
                Reply::Array(vec![pair(2, 3), pair(0, 1)]),
            ]),
            Reply::Bulk(b"len".to_vec()),
            int(6),
        ]);
        assert_eq!(reply(&lcs(a, b, idx, max).unwrap()), expect);
        let filtered = LcsOpts {
            idx: true,
            min_match_len: 4,
            with_match_len: true,
            ..o
        };
        let expect = Reply::Array(vec![
            Reply::Bulk(b"matches".to_vec()),
            Reply::Array(vec![Reply::Array(vec![pair(4, 7), pair(5, 8), int(4)])]),
            Reply::Bulk(b"len".to_vec()),
            int(6),
        ]);
        assert_eq!(reply(&lcs(a, b, filtered, max).unwrap()), expect);
        assert_eq!(
            reply(&lcs(b"", b"abc", o, max).unwrap()),
            Reply::Bulk(vec![])
        );
        assert_eq!(
            lcs(&[0; 100], &[0; 100], o, 1000).unwrap_err(),
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
        );
    }
}
