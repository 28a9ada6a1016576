//! RENAME, RENAMENX and COPY: a value moved or copied from one key to another, atomically, as
//! in Redis (the expiry goes with it).
//!
//! Both keys on one worker (always in cluster mode, where they must share a slot): that
//! worker runs it in one go (`Op::Move`). On two workers (standalone) they are held like the
//! workers of an MSETNX (`msetnx`), the lower one first: each, at its step, learns what the
//! outcome needs from its key (the source's value and expiry, or whether the destination
//! exists) and holds still; the second one decides, does its part and tells the first whether
//! (and with which value) to do its own. No other command sees one key changed and not the
//! other, and the connection runs its next command only once both parts are done. Both parts answer,
//! so the reply waits for both workers' writes to be as durable as promised.
use log::warn;

use super::conn::{Client, Gather, Output, Pending, Slot};
use super::dispatch::err;
use super::msetnx::{HeldWork, NxHeld};
use super::replica::Need;
use super::router::{Op, Payload, ReplyTo, Request};
use super::worker::Worker;

/// Which command, with its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveKind {
    Rename,
    RenameNx,
    Copy { replace: bool },
}

impl MoveKind {
    /// The command's name, for its keyspace events.
    pub(super) fn command(self) -> &'static str {
        match self {
            MoveKind::Rename => "rename",
            MoveKind::RenameNx => "renamenx",
            MoveKind::Copy { .. } => "copy",
        }
    }

    pub(super) fn removes_source(self) -> bool {
        matches!(self, MoveKind::Rename | MoveKind::RenameNx)
    }

    /// The reply of a move done (RENAME answers +OK, the others 1).
    pub(super) fn done(self) -> Payload {
        match self {
            MoveKind::Rename => Payload::Ok,
            _ => Payload::Int(1),
        }
    }

    /// What a part that does not decide answers (it adds nothing to the reply).
    fn neutral(self) -> Payload {
        match self {
            MoveKind::Rename => Payload::Ok,
            _ => Payload::Int(0),
        }
    }

    /// The outcome once both facts are known: `Ok(true)` to move, `Ok(false)` to leave both
    /// keys (answering 0), `Err` to refuse.
    pub(super) fn decide(self, source_found: bool, dest_exists: bool) -> Result<bool, Payload> {
        match (self, source_found) {
            (MoveKind::Copy { .. }, false) => Ok(false),
            (_, false) => Err(Payload::Err("ERR no such key".into())),
            (MoveKind::Rename, true) => Ok(true),
            (MoveKind::RenameNx, true) | (MoveKind::Copy { replace: false }, true) => {
                Ok(!dest_exists)
            }
            (MoveKind::Copy { replace: true }, true) => Ok(true),
        }
    }
}

/// A value on its way to the destination key: its bytes and expiry (unix ms).
#[derive(Debug, Clone)]
pub struct Moved {
    pub value: Vec<u8>,
    pub expire: Option<u64>,
}

/// What the steps learned so far.
#[derive(Debug, Default)]
pub struct MoveFacts {
    /// The source's value, once its worker has looked (`Some(None)`: no such key).
    pub source: Option<Option<Moved>>,
    /// Whether the destination exists, once its worker has looked.
    pub dest_exists: Option<bool>,
    /// The source's value cannot be written under the destination key (over the limits).
    pub refused: Option<String>,
}

/// RENAME, RENAMENX and COPY's arguments: the kind, or the error to answer.
pub fn parse(name: &str, args: &[&[u8]]) -> Result<MoveKind, String> {
    match name {
        "rename" => Ok(MoveKind::Rename),
        "renamenx" => Ok(MoveKind::RenameNx),
        _ => {
            let mut replace = false;
            let mut db = 0;
            let mut i = 3;
            while i < args.len() {
                let a = args[i];
                if a.eq_ignore_ascii_case(b"replace") {
                    replace = true;
                    i += 1;
                } else if a.eq_ignore_ascii_case(b"db") && i + 1 < args.len() {
                    // As Redis reads it: an integer in int range, the last one wins.
                    db = match crate::resp::string2ll(args[i + 1]) {
                        None => return Err("ERR value is not an integer or out of range".into()),
                        Some(n) if i32::try_from(n).is_err() => {
                            return Err("ERR value is out of range".into());
                        }
                        Some(n) => n,
                    };
                    i += 2;
                } else {
                    return Err("ERR syntax error".into());
                }
            }
            // One database (0), as SELECT.
            if db != 0 {
                return Err("ERR DB index is out of range".into());
            }
            if args[1] == args[2] {
                return Err("ERR source and destination objects are the same".into());
            }
            Ok(MoveKind::Copy { replace })
        }
    }
}

impl Worker {
    /// RENAME / RENAMENX / COPY from a connection (arity checked).
    pub(super) fn cmd_move(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        name: &str,
        args: &[&[u8]],
    ) {
        let kind = match parse(name, args) {
            Ok(k) => k,
            Err(e) => return err(out, &e),
        };
        let (src, dst) = (args[1], args[2]);
        let acks = self.acks_of(client);
        let ps = self.topo.partition_of(src);
        if self.cluster.is_some() {
            if crate::slot::key_slot(src) != crate::slot::key_slot(dst) {
                return err(out, super::cluster_cmds::CROSSSLOT);
            }
            if let Some(e) = self.cluster_refusal(ps, src, true, acks) {
                return err(out, &e);
            }
        }
        client.last_write = Some(ps);
        let ws = self.topo.worker_of(ps);
        let wd = self.topo.worker_of(self.topo.partition_of(dst));
        let op = Op::Move {
            kind,
            src: src.to_vec(),
            dst: dst.to_vec(),
        };
        if ws == wd {
            if ws == self.id {
                let (payload, need) = self.execute_op(op, acks);
                let reply = super::dispatch::payload_to_resp(payload);
                self.push_gathered(out, Slot::Ready(reply), need);
            } else {
                let seq = out.push_slot(Slot::Waiting(Box::new(Pending {
                    gather: Gather::Single(None),
                    hold: None,
                })));
                let reply_to = self.reply_to(token, client, out, seq, 0);
                self.send_req(ws, Request { reply_to, op, acks });
            }
            return;
        }
        // Two workers: both answer into one slot.
        let gather = match kind {
            MoveKind::Rename => Gather::AllOk {
                missing: 2,
                error: None,
            },
            _ => Gather::Sum {
                total: 0,
                missing: 2,
                error: None,
            },
        };
        let slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        let reply_to = self.begin_chain(token, out, client, 2, slot);
        let Op::Move { src, dst, .. } = op else {
            unreachable!("built above")
        };
        let step = Op::MoveStep {
            kind,
            src,
            dst,
            facts: MoveFacts::default(),
            held: None,
        };
        let first = ws.min(wd);
        if first == self.id {
            self.move_step(reply_to, acks, step);
        } else {
            self.nx_out.push((
                first,
                Request {
                    reply_to,
                    op: step,
                    acks,
                },
            ));
        }
    }

    /// RENAME / RENAMENX / COPY with both keys on this worker.
    pub(super) fn run_move(&mut self, kind: MoveKind, src: &[u8], dst: &[u8]) -> (Payload, bool) {
        let source = self.read_moved(src);
        self.copy_lookup(kind, src, source.is_some());
        let dest_exists = src != dst && self.key_exists(dst);
        let go = match kind.decide(source.is_some(), dest_exists) {
            Err(e) => return (e, false),
            Ok(go) => go,
        };
        let Some(moved) = source.filter(|_| go) else {
            return (Payload::Int(0), false);
        };
        if src == dst {
            // RENAME k k: nothing to do; RENAMENX k k: the destination exists.
            let reply = match kind {
                MoveKind::RenameNx => Payload::Int(0),
                _ => Payload::Ok,
            };
            return (reply, false);
        }
        // Published by the op (`execute_op_inner`): the source's event first, as in Redis.
        if let Err(e) = self.write_moved_quiet(dst, moved) {
            return (e, false);
        }
        if kind.removes_source()
            && let Err(e) = self.delete_key_quiet(src)
        {
            return (e, true);
        }
        (kind.done(), true)
    }

    /// One step of a move over two workers (`step` is an `Op::MoveStep`).
    ///
    /// Nothing is changed until nothing can fail but the disk: the source's step checks the
    /// value and the destination key against the limits, and the source is deleted only once
    /// the destination is written. With the source on the lower worker, the destination's
    /// step (the second) writes, then tells the source to delete. With the destination on the
    /// lower worker, the source's step (the second) decides and, for a RENAME, holds on until
    /// the destination has written and told it so.
    pub(super) fn move_step(&mut self, reply_to: ReplyTo, acks: simplekv_conf::Acks, step: Op) {
        let Op::MoveStep {
            kind,
            src,
            dst,
            mut facts,
            held,
        } = step
        else {
            return;
        };
        let ws = self.topo.worker_of(self.topo.partition_of(&src));
        let is_source = ws == self.id;
        if is_source {
            let moved = self.read_moved(&src);
            self.copy_lookup(kind, &src, moved.is_some());
            if let Some(m) = &moved {
                facts.refused = self.over_limit(&dst, &m.value);
            }
            facts.source = Some(moved);
        } else {
            facts.dest_exists = Some(self.key_exists(&dst));
        }
        if facts.source.is_none() || facts.dest_exists.is_none() {
            // The first step: hold, and pass the step on to the other worker.
            let other = if is_source {
                self.topo.worker_of(self.topo.partition_of(&dst))
            } else {
                ws
            };
            let key = if is_source { src.clone() } else { dst.clone() };
            let work = HeldWork::Move {
                kind,
                key,
                is_source,
                // A destination held first confirms its write to the source, which
                // deletes only then (RENAME, RENAMENX).
                confirm_to: (!is_source && kind.removes_source()).then_some(ws),
                answers_decision: false,
            };
            self.hold(reply_to, acks, work, &[]);
            let op = Op::MoveStep {
                kind,
                src,
                dst,
                facts,
                held: Some(self.id),
            };
            self.nx_out.push((other, Request { reply_to, op, acks }));
            return;
        }
        // The second step decides.
        let (Some(source), Some(dest_exists)) = (facts.source.take(), facts.dest_exists) else {
            return;
        };
        let Some(first) = held else {
            warn!("worker {}: move step without a held worker", self.id);
            return;
        };
        let decision = match facts.refused.take() {
            Some(e) => Err(Payload::Err(e)),
            None => kind.decide(source.is_some(), dest_exists),
        };
        let moved = match decision {
            Ok(true) => source,
            Ok(false) => None,
            Err(e) => {
                self.nx_answer(reply_to, e, Need::Now);
                self.tell_first(first, reply_to, acks, false, None);
                return;
            }
        };
        let Some(moved) = moved else {
            self.nx_answer(reply_to, Payload::Int(0), Need::Now);
            self.tell_first(first, reply_to, acks, false, None);
            return;
        };
        if is_source {
            // The destination (held) writes; a RENAME's source waits to hear it did.
            if kind.removes_source() {
                let work = HeldWork::Move {
                    kind,
                    key: src,
                    is_source: true,
                    confirm_to: None,
                    answers_decision: true,
                };
                self.hold(reply_to, acks, work, &[]);
            } else {
                self.nx_answer(reply_to, kind.done(), Need::Now);
            }
            self.tell_first(first, reply_to, acks, true, Some(Box::new(moved)));
            return;
        }
        // The destination writes, then the source (held) deletes if that worked.
        let (answer, need, written) = match self.write_moved(&dst, moved, kind.command()) {
            Ok(()) => {
                let need = self.need_for(Some(self.topo.partition_of(&dst)), true, acks);
                (kind.done(), need, true)
            }
            Err(e) => (e, Need::Now, false),
        };
        self.nx_answer(reply_to, answer, need);
        self.tell_first(first, reply_to, acks, written, None);
    }

    fn tell_first(
        &mut self,
        first: usize,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        commit: bool,
        moved: Option<Box<Moved>>,
    ) {
        let op = Op::NxDecide {
            commit,
            moved,
            refused: Vec::new(),
            at: None,
        };
        self.send_req(first, Request { reply_to, op, acks });
    }

    /// A held move's outcome for this worker's key (`held.work` is `HeldWork::Move`).
    pub(super) fn move_decided(&mut self, held: NxHeld, commit: bool, moved: Option<Box<Moved>>) {
        let NxHeld {
            reply_to,
            acks,
            work:
                HeldWork::Move {
                    kind,
                    key,
                    is_source,
                    confirm_to,
                    answers_decision,
                },
            ..
        } = held
        else {
            return;
        };
        let p = self.topo.partition_of(&key);
        let (answer, need) = if !commit {
            (kind.neutral(), Need::Now)
        } else if is_source {
            let result = if kind.removes_source() {
                self.delete_key(&key, kind.command())
            } else {
                Ok(())
            };
            match result {
                Ok(()) => {
                    let answer = if answers_decision {
                        kind.done()
                    } else {
                        kind.neutral()
                    };
                    let need = self.need_for(Some(p), kind.removes_source(), acks);
                    (answer, need)
                }
                Err(e) => (e, Need::Now),
            }
        } else {
            let result = match moved {
                Some(m) => self.write_moved(&key, *m, kind.command()),
                None => Err(Payload::Err(
                    "ERR internal: a move without its value".into(),
                )),
            };
            let written = result.is_ok();
            if let Some(w) = confirm_to {
                self.tell_first(w, reply_to, acks, written, None);
            }
            match result {
                Ok(()) => (kind.neutral(), self.need_for(Some(p), true, acks)),
                Err(e) => (e, Need::Now),
            }
        };
        self.nx_answer(reply_to, answer, need);
    }

    /// COPY looks its source up for reading (a hit or a miss, as in Redis); RENAME for
    /// writing (neither).
    fn copy_lookup(&mut self, kind: MoveKind, src: &[u8], found: bool) {
        if matches!(kind, MoveKind::Copy { .. }) {
            self.count_lookup(Some(found));
            if !found {
                self.notify_miss(src);
            }
        }
    }

    pub(super) fn read_moved(&mut self, key: &[u8]) -> Option<Moved> {
        let s = self.store(self.topo.partition_of(key))?;
        let expire = s.meta(key)?.expire;
        match s.get(key) {
            Ok(v) => v.map(|value| Moved { value, expire }),
            Err(e) => {
                warn!(
                    "worker {}: RENAME/COPY could not read its source: {e}",
                    self.id
                );
                None
            }
        }
    }

    pub(super) fn key_exists(&self, key: &[u8]) -> bool {
        self.store(self.topo.partition_of(key))
            .is_some_and(|s| s.exists(key))
    }

    /// Writes a moved value under `key`, then publishes it as command `cmd`'s change (its
    /// keyspace events).
    pub(super) fn write_moved(
        &mut self,
        key: &[u8],
        m: Moved,
        cmd: &'static str,
    ) -> Result<(), Payload> {
        self.write_moved_quiet(key, m)?;
        self.notify_changes(cmd, false);
        Ok(())
    }

    /// Deletes `key`, then publishes it as command `cmd`'s change.
    pub(super) fn delete_key(&mut self, key: &[u8], cmd: &'static str) -> Result<(), Payload> {
        self.delete_key_quiet(key)?;
        self.notify_changes(cmd, false);
        Ok(())
    }

    /// `write_moved` for a caller that publishes its changes itself.
    fn write_moved_quiet(&mut self, key: &[u8], m: Moved) -> Result<(), Payload> {
        let p = self.topo.partition_of(key);
        let Some(s) = self.store_mut(p) else {
            return Err(Payload::Err(
                "ERR partition not available on this node".into(),
            ));
        };
        s.put(key, &m.value, m.expire)
            .map_err(|e| Payload::Err(format!("ERR {e}")))?;
        self.mark_dirty(p);
        Ok(())
    }

    fn delete_key_quiet(&mut self, key: &[u8]) -> Result<(), Payload> {
        let p = self.topo.partition_of(key);
        let Some(s) = self.store_mut(p) else {
            return Err(Payload::Err(
                "ERR partition not available on this node".into(),
            ));
        };
        s.delete(key)
            .map_err(|e| Payload::Err(format!("ERR {e}")))?;
        self.mark_dirty(p);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{MoveKind, parse};

    #[test]
    fn copy_options_parse_as_redis_reads_them() {
        let a = |v: &[&str]| -> Vec<Vec<u8>> { v.iter().map(|s| s.as_bytes().to_vec()).collect() };
        let p = |v: &[&str]| {
            let owned = a(v);
            let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            parse("copy", &args)
        };
        assert_eq!(
            p(&["copy", "a", "b"]),
            Ok(MoveKind::Copy { replace: false })
        );
        assert_eq!(
            p(&["copy", "a", "b", "REPLACE", "db", "0"]),
            Ok(MoveKind::Copy { replace: true })
        );
        assert_eq!(
            p(&["copy", "a", "b", "db", "1"]),
            Err("ERR DB index is out of range".into())
        );
        assert_eq!(
            p(&["copy", "a", "b", "db", "x"]),
            Err("ERR value is not an integer or out of range".into())
        );
        assert_eq!(p(&["copy", "a", "b", "db"]), Err("ERR syntax error".into()));
        for not_int in ["00", "+0", "-0", "01", "+1", ""] {
            assert_eq!(
                p(&["copy", "a", "b", "db", not_int]),
                Err("ERR value is not an integer or out of range".into()),
                "{not_int:?}"
            );
        }
        assert_eq!(
            p(&["copy", "a", "b", "db", "4294967296"]),
            Err("ERR value is out of range".into())
        );
        assert_eq!(
            p(&["copy", "a", "b", "db", "1", "db", "0"]),
            Ok(MoveKind::Copy { replace: false })
        );
        assert_eq!(
            p(&["copy", "a", "b", "nope"]),
            Err("ERR syntax error".into())
        );
        assert_eq!(
            p(&["copy", "a", "a"]),
            Err("ERR source and destination objects are the same".into())
        );
    }

    #[test]
    fn outcomes_follow_redis() {
        use MoveKind::*;
        let copy = Copy { replace: false };
        let copy_r = Copy { replace: true };
        assert!(Rename.decide(false, false).is_err());
        assert!(RenameNx.decide(false, true).is_err());
        assert_eq!(copy.decide(false, false).ok(), Some(false));
        assert_eq!(Rename.decide(true, true).ok(), Some(true));
        assert_eq!(RenameNx.decide(true, true).ok(), Some(false));
        assert_eq!(RenameNx.decide(true, false).ok(), Some(true));
        assert_eq!(copy.decide(true, true).ok(), Some(false));
        assert_eq!(copy_r.decide(true, true).ok(), Some(true));
    }
}
