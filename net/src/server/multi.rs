//! Transactions: MULTI, EXEC, DISCARD, WATCH and UNWATCH, with Redis's semantics.
//!
//! After MULTI a connection's commands are checked (known command, arity, authentication,
//! allowed in a transaction) and queued, each answered `+QUEUED`; a refused one makes EXEC
//! answer `EXECABORT` and run nothing. EXEC runs the queue with no other command in between
//! and answers an array with every command's reply; a command failing as it runs (a wrong
//! type) leaves its error in the array and the others run, as in Redis.
//!
//! **How EXEC runs.** Its commands are split by the worker that owns their keys, as a
//! multi-key command is (an MGET over several workers becomes one part per worker). Keys on
//! different workers are disjoint, so each worker running its parts in queue order gives the
//! replies and the end state of running the whole queue in order, provided nothing else runs
//! on those workers in between:
//! - one worker (always in cluster mode, where a transaction's keys share one slot): its
//!   part is one message (`Op::Tx`), run in one go;
//! - several workers: they are held still one after another in ascending order, as for an
//!   MSETNX over several workers (`msetnx`): each holds (runs nothing from other workers or
//!   the gRPC service, and from its connections only single-key commands on keys the
//!   transaction does not touch here) and passes the step on; the last one runs its part and
//!   tells the held ones to run theirs. A worker waits only for workers above it, so two
//!   transactions never wait on each other. No single-key command and no other transaction
//!   sees one worker's part done and another's not: each worker is held from its step until
//!   its part has run. The connection runs its next command only when the reply is complete
//!   (`Output::barrier`).
//!
//! A multi-key or keyspace-wide command over several workers (standalone) runs the same way,
//! as a transaction of one item (`Worker::run_whole`), so that it too is seen whole.
//!
//! **Groups.** One hold per transaction would let a worker run one of them per round trip
//! between workers. Transactions without watched keys instead join a group at their lowest
//! worker (`join_group`) while it runs its turn, and the group goes at the end of the turn
//! as one chain of holds (`Op::GroupStep`), its parts running on each worker in the group's
//! order: the same as running them one after another. A transaction with watched keys is a
//! group of its own, started at once. A connection may send the next
//! multi-key command of the same group without waiting for the reply of the one before
//! (`Worker::may_pass_barrier`).
//!
//! The reply goes out once every write in it is as durable (and, in cluster mode, as
//! replicated) as the connection's policy promises. Like MSET over several workers, a crash
//! can keep the part of one worker (or partition) and lose another's unsynced part; with
//! `fsync = always` an acknowledged EXEC is durable whole.
//!
//! **WATCH** records each key's version (`Store::version`: the LSN of its value's record and
//! its expiry) from its owner; EXEC's parts check their workers' watched keys before
//! anything runs, under the same hold, and any change aborts the whole transaction (a null
//! array). Versions of keys on other workers come back asynchronously, so the connection
//! waits for them before its next command.
//!
//! In a transaction simplekv takes key commands (single- and multi-key, RENAME, COPY, BITOP,
//! LCS), the keyspace-wide DBSIZE, KEYS, RANDOMKEY, FLUSHDB and FLUSHALL (standalone: an
//! item in every worker's part, gathered as outside a transaction), and server commands but
//! SAVE and SHUTDOWN (refused as Redis refuses them) and CONFIG SET / RESETSTAT (they change
//! every worker at once, which a transaction that runs nothing could not take back). EXEC
//! plans a server command by running its own code with `Worker::tx_plan` set: one answered
//! on the spot (PING, CLIENT SETNAME, COMMAND, an error) is its item's reply; one whose normal
//! path runs ops on workers (INFO, CLIENT LIST/KILL, SLOWLOG, SCAN, WAIT, BGSAVE) records them
//! (`PlannedCmd`), and they run in the transaction's parts in queue order. What planning
//! changed about the connection is put back if the transaction runs nothing
//! (`ClientSettings`). A transaction with an MSETNX, RENAME, COPY, BITOP or LCS whose keys
//! live on several workers does not split by worker: it runs in sequence (`seqtx`).
use log::warn;

use super::conn::{Client, Gather, Output, Pending, Slot};
use super::dispatch::{err, gather_reply, multi_gather, multi_op, op_writes};
use super::msetnx::HeldWork;
use super::replica::Need;
use super::router::{Op, OwnedArgs, Payload, ReplyTo, Request};
use super::seqtx::SeqRun;
use super::worker::Worker;
use crate::cmd::{self, CommandSpec, Kind, MultiKind};

/// The commands a connection queued since MULTI.
#[derive(Default)]
pub struct TxQueue {
    cmds: Vec<OwnedArgs>,
    /// A command was refused while queueing: EXEC answers EXECABORT.
    failed: bool,
    /// Bytes queued (bounded by `limits.client_query_buffer_limit`).
    bytes: u64,
    /// Cluster mode: the slot of the keys queued so far.
    slot: Option<u16>,
}

impl TxQueue {
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    /// The commands queued so far.
    pub fn queued(&self) -> impl Iterator<Item = &OwnedArgs> {
        self.cmds.iter()
    }
}

/// A watched key's version when it was watched; `None` while not known (not read yet, or
/// unreadable): it never matches, so EXEC aborts.
pub type Ver = Option<simplekv_engine::KeyVersion>;

/// A server command queued in MULTI, as EXEC plans it: the ops its normal path runs here or
/// sends to other workers (INFO's share of each worker, CONFIG SET's copy, a SCAN page...),
/// by worker, and the gather that makes its reply from their payloads. `plan` runs the
/// command's own code with `Worker::tx_plan` set, so it is parsed, checked and answered as
/// outside a transaction, while its ops run in the transaction's parts, in queue order.
#[derive(Default)]
pub struct PlannedCmd {
    pub ops: Vec<(usize, Op)>,
    pub gather: Option<Gather>,
}

pub struct Watched {
    pub key: Vec<u8>,
    pub ver: Ver,
}

/// One worker's share of an EXEC: the parts of its commands, by the command's index in the
/// transaction, and the watched keys it checks first.
#[derive(Debug, Default)]
pub struct TxPart {
    pub items: Vec<(u32, Op)>,
    pub watch: Vec<(Vec<u8>, Ver)>,
}

impl TxPart {
    fn is_empty(&self) -> bool {
        self.items.is_empty() && self.watch.is_empty()
    }
}

/// One transaction's part on one worker, within a group (`Worker::group_step`).
#[derive(Debug)]
pub struct GroupPart {
    pub reply_to: ReplyTo,
    pub acks: simplekv_conf::Acks,
    pub part: TxPart,
    /// A transaction that runs in sequence (`seqtx`): its visits, in its last worker's part.
    pub seq: Option<Box<SeqRun>>,
    /// Part of a transaction that runs in sequence: what it touches here comes with the
    /// visits, so its hold keeps every key of this worker.
    pub in_sequence: bool,
    /// Disk room set aside here for the part's writes at its step (`Worker::set_aside_part`),
    /// by item (its place in `part.items`) and partition, given back just before that item
    /// runs: a command before it in the part cannot take it.
    pub room: Vec<(usize, Room)>,
    /// A worker had no disk room for its part of the transaction: no part of it runs, each
    /// answers this error.
    pub refused: Option<String>,
}

/// Transactions of a group refused at some worker's step for want of disk room, with the
/// error their parts answer.
pub type Refused = Vec<(ReplyTo, String)>;

/// Disk room set aside in this worker's partitions: (partition, bytes).
pub type Room = Vec<(u32, u64)>;

/// Value lengths by key as the commands of a transaction (or group) leave them, for the room
/// of the commands after them (`Worker::set_aside_part`).
pub(super) type Projected = std::collections::HashMap<Box<[u8]>, usize>;

/// A record a transaction's command may write: (key, value length or `None` for a
/// tombstone, `sure`: the command writes it whatever it finds, so it replaces the value's
/// projected length rather than bounding it from below).
pub(super) type Record<'a> = (&'a [u8], Option<usize>, bool);

fn step_out_of_place() -> Payload {
    Payload::Err("ERR internal: a transaction step out of place".into())
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// EXEC's reply when its partition refuses it: redirects (MOVED, TRYAGAIN, CROSSSLOT,
/// CLUSTERDOWN) as they are, so that cluster clients follow them; any other refusal
/// (NOREPLICAS) the way Redis words it for EXEC.
fn refused_exec(e: String) -> String {
    if e.starts_with("NOREPLICAS") {
        format!("EXECABORT Transaction discarded because of: {e}")
    } else {
        e
    }
}

/// The errors among the replies of a transaction's part count in INFO errorstats, and as
/// failed calls of their commands (`names`, by index) in INFO commandstats, as Redis counts
/// the errors of the commands EXEC runs (EXEC's array reply itself is no error).
pub fn note_errors(
    payload: &Payload,
    errors: &mut super::conn::ErrorTally,
    failed: &mut Vec<&'static str>,
    names: &[&'static str],
) {
    if let Payload::Tx(done) = payload {
        for (i, p) in done {
            let error = match p {
                Payload::Err(e) => {
                    errors.note_error(e.as_bytes());
                    true
                }
                Payload::Resp(b) if b.as_slice().first() == Some(&b'-') => {
                    errors.note(b.as_slice());
                    true
                }
                _ => false,
            };
            if let Some(name) = names.get(*i as usize).filter(|n| error && !n.is_empty()) {
                failed.push(name);
            }
        }
    }
}

/// Whether a queued command was answered with an error as EXEC planned it (PING with too
/// many arguments, CLIENT SETNAME with a space...).
fn planned_error(item: &Gather) -> bool {
    matches!(item, Gather::Single(Some(reply)) if reply.first() == Some(&b'-'))
}

/// What a transaction that ran counts, as Redis counts the commands EXEC runs: a call of each
/// of its commands in INFO commandstats and `total_commands_processed` (their time is EXEC's,
/// not measured per command), and the errors EXEC's plan answered itself as their commands'
/// own (`note_errors` counts those of the parts). A transaction that a watched key aborted,
/// or that was refused whole, ran none of its commands and counts nothing.
pub struct TxRan {
    names: Vec<&'static str>,
    errors: Vec<(Vec<u8>, &'static str)>,
    /// The MONITOR lines of its commands and EXEC.
    pub monitor: Vec<u8>,
}

/// `Some` once the transaction of `gather` has run (every part answered, none refused it).
pub fn tx_ran(gather: &Gather) -> Option<TxRan> {
    let Gather::Tx {
        items,
        missing: 0,
        error: None,
        aborted: false,
        bare: false,
        names,
        planned_errors,
        monitor,
        ..
    } = gather
    else {
        return None;
    };
    let errors = planned_errors
        .iter()
        .filter_map(|&i| match items.get(i as usize)? {
            Gather::Single(Some(reply)) => Some((reply.clone(), names[i as usize])),
            _ => None,
        })
        .collect();
    Some(TxRan {
        names: names.clone(),
        errors,
        monitor: monitor.clone(),
    })
}

impl TxRan {
    /// The errors, in the connection's tallies (INFO errorstats, failed calls).
    pub fn note_errors(&mut self, out: &mut Output) {
        for (reply, name) in self.errors.drain(..) {
            out.errors.note(&reply);
            if !name.is_empty() {
                out.failed_cmds.push(name);
            }
        }
    }

    /// The calls, in the worker's command statistics.
    pub fn count_calls(&self, stats: &mut super::stats::WorkerStats) {
        for name in self.names.iter().filter(|n| !n.is_empty()) {
            stats.cmdstats.record_call(name, 0, false);
        }
        stats.commands += self.names.len() as u64;
    }
}

/// The gather of a waiting slot.
fn gather_of(slot: &Slot) -> Option<&Gather> {
    match slot {
        Slot::Waiting(p) => Some(&p.gather),
        _ => None,
    }
}

/// A refused command inside MULTI makes EXEC abort.
pub fn flag(client: &mut Client) {
    if let Some(tx) = client.tx.as_mut() {
        // What was queued stays (CLIENT LIST's multi= counts it, as Redis); nothing more is.
        tx.failed = true;
    }
}

/// The stricter of two acks. A transaction's writes all take the strictest acks the
/// connection had before it and after each of its commands (a CLIENT ACKS queued in it), so
/// that none is answered sooner than asked for where it was queued.
fn stricter(a: simplekv_conf::Acks, b: simplekv_conf::Acks) -> simplekv_conf::Acks {
    use simplekv_conf::Acks;
    let rank = |x: Acks| match x {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// Whether a queued command may change the connection's own settings as EXEC plans it
/// (`ClientSettings`).
fn changes_settings(args: &[&[u8]]) -> bool {
    cmd::lookup(args[0]).is_some_and(|s| matches!(s.name, "client" | "hello" | "auth"))
}

/// CONFIG SET and CONFIG RESETSTAT change every worker's settings or counters, and the
/// process-wide ones, when EXEC plans them; a transaction that then runs nothing could not
/// take that back, so they are refused while queued.
fn changes_the_node(spec: &'static CommandSpec, args: &[&[u8]]) -> bool {
    matches!(spec.for_args(args).name, "config|set" | "config|resetstat")
}

/// RENAME, RENAMENX and COPY: two keys, at 1 and 2.
pub(super) fn is_move(spec: &CommandSpec) -> bool {
    matches!(spec.name, "rename" | "renamenx" | "copy")
}

/// Commands over the whole keyspace that a transaction takes (standalone): each worker runs
/// its share in its part, and the shares are gathered as outside a transaction.
fn is_keyspace_wide(spec: &CommandSpec) -> bool {
    matches!(
        spec.name,
        "dbsize" | "flushdb" | "flushall" | "keys" | "randomkey"
    )
}

/// BITOP and LCS: several keys read, combined (`combine`).
pub(super) fn is_combine(spec: &CommandSpec) -> bool {
    matches!(spec.name, "bitop" | "lcs")
}

/// The keys a command line names, found by its key specs (none for PING, ECHO, TIME).
fn command_keys<'a>(spec: &'static CommandSpec, args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    cmd::table::keys_by_specs(spec.for_args(args), args)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(i, _)| args.get(i).copied())
        .collect()
}

impl Worker {
    /// MULTI, EXEC, DISCARD, WATCH and UNWATCH (the command table's `transactions` group).
    /// Returns false for any other command.
    pub(super) fn transaction_command(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        args: &[&[u8]],
    ) -> bool {
        const NAMES: [&str; 5] = ["multi", "exec", "discard", "watch", "unwatch"];
        let Some(name) = NAMES
            .into_iter()
            .find(|n| args[0].eq_ignore_ascii_case(n.as_bytes()))
        else {
            return false;
        };
        client.last_cmd = name;
        let arity_ok = if name == "watch" {
            args.len() >= 2
        } else {
            args.len() == 1
        };
        let refusal = if !arity_ok {
            Some(format!(
                "ERR wrong number of arguments for '{name}' command"
            ))
        } else if !client.authed && self.config.server.requirepass.is_some() {
            Some("NOAUTH Authentication required.".to_string())
        } else {
            None
        };
        if let Some(e) = refusal {
            // Refused before it ran (INFO commandstats `rejected_calls`).
            out.cmd = "";
            if let Some(spec) = cmd::lookup(name.as_bytes()) {
                self.stats.cmdstats.record_rejected(spec.name);
            }
            out.not_run = true;
            if name == "exec" {
                // As Redis: a refused EXEC ends the transaction, saying why.
                client.tx = None;
                client.watched.clear();
                let why = e.strip_prefix("ERR ").unwrap_or(&e);
                err(
                    out,
                    &format!("EXECABORT Transaction discarded because of: {why}"),
                );
            } else {
                err(out, &e);
                flag(client);
            }
            return true;
        }
        match (name, client.tx.is_some()) {
            ("multi", false) => {
                client.tx = Some(Box::default());
                out.push_reply(b"+OK\r\n");
            }
            ("multi", true) => err(out, "ERR MULTI calls can not be nested"),
            ("exec", false) => err(out, "ERR EXEC without MULTI"),
            ("exec", true) => self.exec(token, out, client, args[0]),
            ("discard", false) => err(out, "ERR DISCARD without MULTI"),
            ("discard", true) => {
                client.tx = None;
                client.watched.clear();
                out.push_reply(b"+OK\r\n");
            }
            ("watch", false) => self.watch(token, out, client, args),
            ("watch", true) => err(out, "ERR WATCH inside MULTI is not allowed"),
            ("unwatch", false) => {
                client.watched.clear();
                out.push_reply(b"+OK\r\n");
            }
            // Queued, as in Redis; it answers +OK in EXEC's array (the watches are checked
            // and dropped by EXEC anyway), and is counted when EXEC runs it.
            _ => {
                out.cmd = "";
                self.enqueue(out, client, args)
            }
        }
        true
    }

    /// A command sent inside MULTI, known and of the right arity: queued, or refused (which
    /// aborts the transaction) if simplekv cannot run it in one.
    pub(super) fn queue_command(
        &mut self,
        out: &mut Output,
        client: &mut Client,
        spec: &'static CommandSpec,
        args: &[&[u8]],
    ) {
        let allowed = match spec.kind {
            Kind::Keyed => Ok(()),
            Kind::Server if cmd::keyed_subcommand(spec.for_args(args)) => Ok(()),
            // SAVE and SHUTDOWN, as in Redis; and CLIENT REPLY, which would cut replies out of
            // EXEC's own array.
            Kind::Server
                if spec.flags.contains(&"no_multi")
                    || spec.for_args(args).name == "client|reply" =>
            {
                Err("ERR Command not allowed inside a transaction".to_string())
            }
            // Redis 7.0 queues them and writes their replies into EXEC's array, one too
            // many, which no client can read (`pubsub`).
            Kind::Server if super::pubsub::is_subscription_command(spec.name) => {
                Err(super::pubsub::in_multi_error(spec.name))
            }
            Kind::Server if changes_the_node(spec, args) => Err(format!(
                "ERR '{}' is not supported inside MULTI: it changes every worker at once, and a \
                 transaction that runs nothing (a watched key changed) could not take it back; \
                 send it on its own",
                spec.for_args(args).name
            )),
            Kind::Server if is_keyspace_wide(spec) && self.cluster.is_some() => Err(format!(
                "ERR '{}' is not supported inside MULTI in cluster mode: a transaction runs on \
                 one slot's leader",
                spec.name
            )),
            // Their own errors (bad options) are answered when EXEC runs them, as Redis does;
            // over several workers the transaction runs in sequence (`seqtx`).
            Kind::Server | Kind::Multi(_) => Ok(()),
        };
        match allowed.and_then(|()| self.queue_cluster_check(client, spec, args)) {
            Ok(()) => self.enqueue(out, client, args),
            Err(e) => {
                // Refused before it ran, as Redis counts it (`rejected_calls`).
                self.stats
                    .cmdstats
                    .record_rejected(spec.for_args(args).name);
                out.not_run = true;
                err(out, &e);
                flag(client);
            }
        }
    }

    /// Cluster mode, as Redis Cluster checks a command queued inside MULTI: its keys must
    /// share one slot with every key queued before (`CROSSSLOT`), and that slot's partition
    /// must take it here (`MOVED`, `TRYAGAIN`, `CLUSTERDOWN`, `NOREPLICAS` for a write with too
    /// few in-sync replicas). A refusal is the queued command's reply and makes EXEC abort,
    /// so a cluster client learns where to go at the first key, not at EXEC. EXEC checks the
    /// whole transaction again (`tx_cluster_refusal`): things may have moved meanwhile.
    fn queue_cluster_check(
        &self,
        client: &mut Client,
        spec: &'static CommandSpec,
        args: &[&[u8]],
    ) -> Result<(), String> {
        if self.cluster.is_none() {
            return Ok(());
        }
        // A shard channel belongs to its slot as a key does (its key spec is `not_key`).
        let keys = match spec.name {
            "spublish" => vec![args[1]],
            _ => command_keys(spec, args),
        };
        let Some(&first) = keys.first() else {
            return Ok(());
        };
        let slot = crate::slot::key_slot(first);
        let queued = client.tx.as_ref().and_then(|t| t.slot);
        if keys.iter().any(|k| crate::slot::key_slot(k) != slot)
            || queued.is_some_and(|s| s != slot)
        {
            return Err(super::cluster_cmds::CROSSSLOT.into());
        }
        let write = spec.flags.contains(&"write");
        let p = self.topo.partition_of(first);
        if let Some(e) = self.cluster_refusal(p, first, write, self.acks_of(client)) {
            return Err(e);
        }
        if let Some(tx) = client.tx.as_mut() {
            tx.slot = Some(slot);
        }
        Ok(())
    }

    fn enqueue(&mut self, out: &mut Output, client: &mut Client, args: &[&[u8]]) {
        let limit = self.config.limits.client_query_buffer_limit;
        let Some(tx) = client.tx.as_mut() else {
            return;
        };
        if !tx.failed {
            tx.bytes += args.iter().map(|a| a.len() as u64 + 16).sum::<u64>();
            if tx.bytes > limit {
                err(
                    out,
                    &format!(
                        "ERR transaction too large: its queued commands passed \
                         client_query_buffer_limit ({limit} bytes)"
                    ),
                );
                tx.cmds = Vec::new();
                flag(client);
                return;
            }
            tx.cmds.push(OwnedArgs::from_slices(args.iter().copied()));
        }
        out.push_reply(b"+QUEUED\r\n");
    }

    /// The MONITOR lines of a transaction's commands and of its EXEC (`exec`, as typed),
    /// while a connection monitors (see `Gather::Tx::monitor`).
    fn tx_monitor_lines(&self, addr: &str, cmds: &[OwnedArgs], exec: &[u8]) -> Vec<u8> {
        let mut lines = Vec::new();
        if !self.shared.monitors.active() {
            return lines;
        }
        let now = std::time::SystemTime::now();
        for c in cmds {
            let a = c.slices();
            if super::monitor::shown(&a) {
                super::monitor::format_line(&mut lines, now, addr, &a);
            }
        }
        super::monitor::format_line(&mut lines, now, addr, &[exec]);
        lines
    }

    /// EXEC (`name`, as typed): runs the queue (see the module documentation).
    fn exec(&mut self, token: usize, out: &mut Output, client: &mut Client, name: &[u8]) {
        // While EXEC plans its commands, CLIENT LIST and CLIENT INFO show the caller still in
        // its transaction, with the commands it queued, as Redis does.
        self.exec_of = client.tx.as_ref().map(|tx| (client.id, tx.cmds.len()));
        self.exec_planned(token, out, client, name);
        self.exec_of = None;
    }

    fn exec_planned(&mut self, token: usize, out: &mut Output, client: &mut Client, name: &[u8]) {
        let Some(tx) = client.tx.take() else {
            return err(out, "ERR EXEC without MULTI");
        };
        let watched = std::mem::take(&mut client.watched);
        let monitor = self.tx_monitor_lines(&client.addr, &tx.cmds, name);
        if tx.failed {
            let exec_line = super::monitor::last_line(&monitor);
            super::monitor::feed(client, &mut self.monitor_buf, exec_line);
            return err(out, EXECABORT);
        }
        // INFO commandstats counts a transaction's commands once it has run them (`TxRan`),
        // and an error among their replies as a failed call of its command.
        let names: Vec<&'static str> = tx
            .cmds
            .iter()
            .map(|c| {
                let a = c.slices();
                cmd::lookup(a[0]).map_or("", |spec| spec.for_args(&a).name)
            })
            .collect();
        let acks = self.acks_of(client);
        if self.cluster.is_some()
            && let Some(e) = self.tx_cluster_refusal(&tx.cmds, &watched, acks)
        {
            let exec_line = super::monitor::last_line(&monitor);
            super::monitor::feed(client, &mut self.monitor_buf, exec_line);
            return err(out, &refused_exec(e));
        }
        // Server commands that change the connection's settings run as EXEC plans them: what
        // they change is put back if the transaction then runs nothing.
        let mut undo = tx
            .cmds
            .iter()
            .any(|c| changes_settings(&c.slices()))
            .then(|| Box::new(client.settings()));
        if tx.cmds.iter().any(|c| self.crosses_workers(&c.slices())) {
            return self.exec_in_sequence(
                token, out, client, tx.cmds, watched, acks, undo, names, monitor,
            );
        }
        let workers = self.peers.len();
        let mut parts: Vec<TxPart> = (0..workers).map(|_| TxPart::default()).collect();
        let mut items = Vec::with_capacity(tx.cmds.len());
        let mut planned_errors = Vec::new();
        let mut strictest = acks;
        for (i, c) in tx.cmds.into_iter().enumerate() {
            let i = i as u32;
            let item = self.plan(token, client, i, c, &mut parts);
            if planned_error(&item) {
                planned_errors.push(i);
            }
            items.push(item);
            strictest = stricter(strictest, self.acks_of(client));
        }
        let acks = strictest;
        if let Some(u) = undo.as_mut() {
            u.note_plan(client);
        }
        for w in watched {
            let owner = self.topo.worker_of(self.topo.partition_of(&w.key));
            parts[owner].watch.push((w.key, w.ver));
        }
        let mut involved: Vec<(usize, TxPart)> = parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .collect();
        let mut gather = Gather::Tx {
            items,
            missing: involved.len(),
            error: None,
            aborted: false,
            bare: false,
            undo,
            names,
            planned_errors,
            monitor,
        };
        if involved.is_empty() {
            if let Some(mut ran) = tx_ran(&gather) {
                ran.note_errors(out);
                ran.count_calls(&mut self.stats);
                super::monitor::feed(client, &mut self.monitor_buf, &ran.monitor);
            }
            let reply = gather_reply(&mut gather).unwrap_or_default();
            return out.push_reply(&reply);
        }
        let mut slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        if involved.len() == 1 {
            let (w, part) = involved.remove(0);
            if w == self.id {
                let (payload, need) = self.run_tx_part(part, acks);
                if let Some(Gather::Tx { names, .. }) = gather_of(&slot) {
                    note_errors(&payload, &mut out.errors, &mut out.failed_cmds, names);
                }
                let (undo, ran, exec_line) = super::dispatch::fill_exec_slot(&mut slot, 0, payload);
                if let Some(mut ran) = ran {
                    ran.note_errors(out);
                    ran.count_calls(&mut self.stats);
                    super::monitor::feed(client, &mut self.monitor_buf, &ran.monitor);
                }
                super::monitor::feed(client, &mut self.monitor_buf, &exec_line);
                if let Some(settings) = undo {
                    client.restore(*settings);
                }
                self.push_gathered(out, slot, need);
            } else {
                // Whatever this connection sends next for these keys goes to the same
                // worker, after this.
                let seq = out.next_seq();
                let reply_to = self.reply_to(token, client, out, seq, 0);
                let op = Op::Tx(part);
                self.send_req(w, Request { reply_to, op, acks });
                self.push_gathered(out, slot, Need::Now);
            }
            return;
        }
        self.start_tx_steps(token, out, client, acks, slot, involved, None);
    }

    /// EXEC of a transaction that carries data between workers: it runs in sequence
    /// (`seqtx`), held as a group of its own on every worker it involves.
    #[allow(clippy::too_many_arguments)]
    fn exec_in_sequence(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        cmds: Vec<OwnedArgs>,
        watched: Vec<Watched>,
        acks: simplekv_conf::Acks,
        undo: Option<Box<super::conn::ClientSettings>>,
        names: Vec<&'static str>,
        monitor: Vec<u8>,
    ) {
        let mut visits = std::collections::VecDeque::new();
        let mut items = Vec::with_capacity(cmds.len());
        let mut planned_errors = Vec::new();
        let mut strictest = acks;
        for (i, c) in cmds.into_iter().enumerate() {
            let item = self.plan_seq(token, client, i as u32, c, &mut visits);
            if planned_error(&item) {
                planned_errors.push(i as u32);
            }
            items.push(item);
            strictest = stricter(strictest, self.acks_of(client));
        }
        let acks = strictest;
        let mut undo = undo;
        if let Some(u) = undo.as_mut() {
            u.note_plan(client);
        }
        let run = SeqRun::new(visits, acks);
        let mut parts: Vec<TxPart> = (0..self.peers.len()).map(|_| TxPart::default()).collect();
        let mut involved = vec![false; parts.len()];
        for w in run.workers() {
            involved[w] = true;
        }
        for w in watched {
            let owner = self.topo.worker_of(self.topo.partition_of(&w.key));
            involved[owner] = true;
            parts[owner].watch.push((w.key, w.ver));
        }
        let involved: Vec<(usize, TxPart)> = parts
            .into_iter()
            .enumerate()
            .filter(|(w, _)| involved[*w])
            .collect();
        if involved.len() < 2 {
            // A command that crosses workers visits two at least (`crosses_workers`).
            return err(out, "ERR internal: a transaction in sequence on one worker");
        }
        let gather = Gather::Tx {
            items,
            // Each worker's part answers, and so does each visit.
            missing: involved.len() + run.answers(),
            error: None,
            aborted: false,
            bare: false,
            undo,
            names,
            planned_errors,
            monitor,
        };
        let slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        self.start_tx_steps(
            token,
            out,
            client,
            acks,
            slot,
            involved,
            Some(Box::new(run)),
        );
    }

    /// One queued command: its parts go into `parts` (by worker), and the gather that makes
    /// its reply is returned.
    pub(super) fn plan(
        &mut self,
        token: usize,
        client: &mut Client,
        i: u32,
        c: OwnedArgs,
        parts: &mut [TxPart],
    ) -> Gather {
        let a = c.slices();
        if a[0].eq_ignore_ascii_case(b"unwatch") {
            return Gather::Single(Some(b"+OK\r\n".to_vec()));
        }
        let Some(spec) = cmd::lookup(a[0]) else {
            return Gather::Single(Some(super::dispatch::error_reply("ERR unknown command")));
        };
        let write = spec.flags.contains(&"write");
        match spec.kind {
            Kind::Multi(kind) => {
                let step = if kind.takes_pairs() { 2 } else { 1 };
                if step == 2 && a.len().is_multiple_of(2) {
                    // Queued as Redis queues it (its arity only counts arguments); it fails
                    // as it runs.
                    let e = format!("ERR wrong number of arguments for '{}' command", spec.name);
                    return Gather::Single(Some(super::dispatch::error_reply(&e)));
                }
                if step == 2
                    && let Some(e) = self.pairs_over_limit(&a)
                {
                    return Gather::Single(Some(super::dispatch::error_reply(&e)));
                }
                if write {
                    client.last_write = Some(self.topo.partition_of(a[1]));
                }
                let groups = self.multi_groups(&a, step);
                let mut n_parts = 0;
                for (w, g) in groups.iter().enumerate().filter(|(_, g)| !g.is_empty()) {
                    parts[w].items.push((i, multi_op(kind, &a, g)));
                    n_parts += 1;
                }
                multi_gather(kind, (a.len() - 1) / step, n_parts)
            }
            Kind::Server if is_move(spec) => {
                let kind = match super::moves::parse(spec.name, &a) {
                    Ok(k) => k,
                    Err(e) => return Gather::Single(Some(super::dispatch::error_reply(&e))),
                };
                let p = self.topo.partition_of(a[1]);
                client.last_write = Some(p);
                let op = Op::Move {
                    kind,
                    src: a[1].to_vec(),
                    dst: a[2].to_vec(),
                };
                parts[self.topo.worker_of(p)].items.push((i, op));
                Gather::Single(None)
            }
            Kind::Server if is_keyspace_wide(spec) => {
                let workers = parts.len();
                // One op per worker's part, made as `broadcast` makes them outside MULTI.
                let pattern = a.get(1).map(|p| p.to_vec()).unwrap_or_default();
                let (make, gather): (Box<dyn Fn() -> Op>, Gather) = match spec.name {
                    "dbsize" => (
                        Box::new(|| Op::DbSize),
                        Gather::Sum {
                            total: 0,
                            missing: workers,
                            error: None,
                        },
                    ),
                    "keys" => (
                        Box::new(move || Op::Keys {
                            pattern: pattern.clone(),
                        }),
                        self.collect_gather(super::dispatch::Finisher::Keys),
                    ),
                    "randomkey" => (
                        Box::new(|| Op::RandomKey),
                        self.collect_gather(super::dispatch::Finisher::RandomKey),
                    ),
                    _ => {
                        if let Some(e) = super::dispatch::flush_args_error(&a) {
                            return Gather::Single(Some(super::dispatch::error_reply(e)));
                        }
                        let g = Gather::AllOk {
                            missing: workers,
                            error: None,
                        };
                        let all = spec.name == "flushall";
                        (Box::new(move || Op::Flush { all }), g)
                    }
                };
                for part in parts.iter_mut() {
                    part.items.push((i, make()));
                }
                gather
            }
            Kind::Server if is_combine(spec) => {
                let c = match super::combine::parse(spec.name, &a) {
                    Ok(c) => c,
                    Err(e) => return Gather::Single(Some(super::dispatch::error_reply(&e))),
                };
                let p = self
                    .topo
                    .partition_of(c.all_keys().next().unwrap_or_default());
                if c.writes() {
                    client.last_write = Some(p);
                }
                parts[self.topo.worker_of(p)]
                    .items
                    .push((i, Op::Combine(Box::new(c))));
                Gather::Single(None)
            }
            Kind::Server if !cmd::keyed_subcommand(spec.for_args(&a)) => {
                // Run by its own code, as outside a transaction: answered here (PING, CONFIG
                // GET, CLIENT SETNAME, an error...), or, where that code runs ops on workers
                // (INFO, CONFIG SET, CLIENT LIST, SLOWLOG, SCAN...), by those ops, put in the
                // transaction's parts (`PlannedCmd`).
                self.tx_plan = Some(PlannedCmd::default());
                let mut scratch = Output::default();
                self.dispatch_server(token, &mut scratch, client, spec, &a);
                let planned = self.tx_plan.take().unwrap_or_default();
                if let Some(gather) = planned.gather {
                    for (w, op) in planned.ops {
                        parts[w].items.push((i, op));
                    }
                    return gather;
                }
                let mut reply = scratch.wbuf;
                for s in scratch.slots {
                    match s {
                        Slot::Ready(r) => reply.extend_from_slice(r.as_slice()),
                        // Every path that waits for other workers plans its ops instead.
                        _ => {
                            let e = format!("ERR internal: '{}' did not plan its ops", spec.name);
                            return Gather::Single(Some(super::dispatch::error_reply(&e)));
                        }
                    }
                }
                Gather::Single(Some(reply))
            }
            _ => {
                let Some(key) = cmd::key_of(&a) else {
                    return Gather::Single(Some(super::dispatch::error_reply("ERR syntax error")));
                };
                let p = self.topo.partition_of(key);
                let w = self.topo.worker_of(p);
                if write {
                    client.last_write = Some(p);
                }
                drop(a);
                parts[w].items.push((
                    i,
                    Op::Keyed {
                        partition: p,
                        args: c,
                    },
                ));
                Gather::Single(None)
            }
        }
    }

    /// Cluster mode: a transaction runs on one partition's leader, so all its keys and
    /// watched keys share one slot (as in Redis Cluster), and it is refused whole where its
    /// partition cannot take it (moved, too few in-sync replicas for its writes...).
    fn tx_cluster_refusal(
        &self,
        cmds: &[OwnedArgs],
        watched: &[Watched],
        acks: simplekv_conf::Acks,
    ) -> Option<String> {
        let mut first: Option<(Vec<u8>, u16)> = None;
        let mut write = false;
        let mut same_slot = |k: &[u8]| match &first {
            None => {
                first = Some((k.to_vec(), crate::slot::key_slot(k)));
                true
            }
            Some((_, slot)) => crate::slot::key_slot(k) == *slot,
        };
        for c in cmds {
            let a = c.slices();
            let Some(spec) = cmd::lookup(a[0]) else {
                continue;
            };
            write |= spec.flags.contains(&"write");
            if !command_keys(spec, &a).into_iter().all(&mut same_slot) {
                return Some(super::cluster_cmds::CROSSSLOT.into());
            }
        }
        if !watched.iter().all(|w| same_slot(&w.key)) {
            return Some(super::cluster_cmds::CROSSSLOT.into());
        }
        let (key, _) = first?;
        self.cluster_refusal(self.topo.partition_of(&key), &key, write, acks)
    }

    /// One command whose parts run on several workers (`parts`: a worker and its op, in
    /// ascending worker order), run whole as in Redis, where no command sees another one
    /// halfway: a transaction of one item, held like EXEC's, whose reply is `gather`'s (not
    /// an array). An MSET over several workers is then never seen half applied, and an MGET
    /// or a KEYS never mixes two moments.
    pub(super) fn run_whole(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        gather: Gather,
        parts: Vec<(usize, Op)>,
    ) {
        let acks = self.acks_of(client);
        let missing = parts.len();
        let parts = parts
            .into_iter()
            .map(|(w, op)| {
                let items = vec![(0, op)];
                (
                    w,
                    TxPart {
                        items,
                        watch: Vec::new(),
                    },
                )
            })
            .collect();
        let gather = Gather::Tx {
            items: vec![gather],
            missing,
            error: None,
            aborted: false,
            bare: true,
            undo: None,
            names: Vec::new(),
            planned_errors: Vec::new(),
            monitor: Vec::new(),
        };
        let slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        self.start_tx_steps(token, out, client, acks, slot, parts, None);
    }

    /// EXEC over several workers: the first step (see the module documentation). It goes to
    /// its first worker as a group of its own (with watched keys, or running in sequence:
    /// `seq`) or to join the group forming there.
    #[allow(clippy::too_many_arguments)]
    fn start_tx_steps(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        acks: simplekv_conf::Acks,
        slot: Slot,
        parts: Vec<(usize, TxPart)>,
        mut seq: Option<Box<SeqRun>>,
    ) {
        let alone = seq.is_some() || parts.iter().any(|(_, p)| !p.watch.is_empty());
        // Each worker's part answers, and each visit of a transaction in sequence.
        let answers = parts.len() + seq.as_ref().map_or(0, |run| run.answers());
        let reply_to = self.begin_chain(token, out, client, answers, slot);
        if !alone {
            out.barrier_group = out.barrier.map(|seq| (seq, parts[0].0));
        }
        if let Some(run) = seq.as_mut() {
            run.reply_to = reply_to;
        }
        let n = parts.len();
        let in_sequence = seq.is_some();
        let chain: Vec<(usize, Vec<GroupPart>)> = parts
            .into_iter()
            .enumerate()
            .map(|(k, (w, part))| {
                let gp = GroupPart {
                    reply_to,
                    acks,
                    part,
                    in_sequence,
                    seq: if k + 1 == n { seq.take() } else { None },
                    room: Vec::new(),
                    refused: None,
                };
                (w, vec![gp])
            })
            .collect();
        let first = chain[0].0;
        if first == self.id {
            self.join_group(chain);
        } else {
            let op = Op::GroupStep {
                held: Vec::new(),
                rest: chain,
                refused: Vec::new(),
            };
            self.nx_out.push((first, Request { reply_to, op, acks }));
        }
    }

    /// Takes transactions whose first worker is this one into the group forming here. A
    /// group is one chain of holds for many transactions: they run on each of their workers
    /// in the group's order with nothing else in between, so the group runs as they would
    /// one after another, for one hold per round instead of one per transaction. A
    /// transaction joins before the group starts (`launch_group`): what runs here meanwhile
    /// comes before all of it, on every worker, as nothing of it has run anywhere yet.
    /// A transaction with watched keys does not join (a write earlier in the group could
    /// change a watched key after it was checked), nor one that runs in sequence (`seqtx`):
    /// it starts now as a group of its own.
    pub(super) fn join_group(&mut self, chain: Vec<(usize, Vec<GroupPart>)>) {
        if chain.first().is_none_or(|(w, _)| *w != self.id) {
            warn!(
                "worker {}: a group's first step for another worker",
                self.id
            );
            return self.group_abort(&[], chain, step_out_of_place);
        }
        let alone = chain
            .iter()
            .flat_map(|(_, parts)| parts)
            .any(|gp| !gp.part.watch.is_empty() || gp.seq.is_some());
        if alone {
            return self.group_step(Vec::new(), chain, Vec::new());
        }
        for (w, parts) in chain {
            match self.forming.binary_search_by_key(&w, |(x, _)| *x) {
                Ok(i) => self.forming[i].1.extend(parts),
                Err(i) => self.forming.insert(i, (w, parts)),
            }
        }
    }

    /// A connection behind the barrier of a command in a group whose first worker is
    /// `first` may run `args` now if it is a multi-key command over several workers with the
    /// same first worker: it joins the same group after the barrier's command, or a later
    /// one (its first step travels the same way, after the barrier's), so it runs after it
    /// everywhere. Anything else waits for the barrier's reply.
    pub(super) fn may_pass_barrier(&self, first: usize, client: &Client, args: &[&[u8]]) -> bool {
        if self.cluster.is_some() || client.tx.is_some() {
            return false;
        }
        let Some(spec) = cmd::lookup(args[0]) else {
            return false;
        };
        let Kind::Multi(kind) = spec.kind else {
            return false;
        };
        let pairs = kind.takes_pairs();
        if kind == MultiKind::MSetNx
            || args.len() < 2
            || (pairs && !(args.len() - 1).is_multiple_of(2))
            || !cmd::table::arity_ok(spec, args.len())
        {
            return false;
        }
        let span = self.multi_span(args, if pairs { 2 } else { 1 });
        span == Some((first, true))
    }

    /// Starts the group formed here, if this worker is free to hold for it.
    pub(super) fn launch_group(&mut self) {
        if self.nx.is_some() || self.forming.is_empty() {
            return;
        }
        let rest = std::mem::take(&mut self.forming);
        self.group_step(Vec::new(), rest, Vec::new());
    }

    /// This worker's step of a group: `rest[0]` holds its parts. Every worker but the last
    /// checks its parts' watched keys, holds still for its parts and passes the step on, in
    /// ascending order; the last checks and runs its parts and releases the others to run
    /// theirs. A watched key changed anywhere aborts the group: only a transaction with
    /// watched keys has any, and it is a group of its own (`join_group`). Each worker also
    /// sets disk room aside for its parts' writes at its step: a transaction one of its
    /// workers has no room for runs nowhere (`refused`, told to the held workers with the
    /// outcome), so a full disk never leaves an MSET or DEL over several workers half done.
    pub(super) fn group_step(
        &mut self,
        mut held: Vec<usize>,
        mut rest: Vec<(usize, Vec<GroupPart>)>,
        mut refused: Refused,
    ) {
        if rest
            .first()
            .is_none_or(|(w, p)| *w != self.id || p.is_empty())
        {
            warn!("worker {}: a group step out of place", self.id);
            return self.group_abort(&held, rest, step_out_of_place);
        }
        if !rest[0].1.iter().all(|gp| self.watch_holds(&gp.part.watch)) {
            // Nothing runs: the held workers let go, and this part and the ones after it
            // answer "aborted".
            return self.group_abort(&held, rest, || Payload::TxAborted);
        }
        let (_, mut parts) = rest.remove(0);
        let (reply_to, acks) = (parts[0].reply_to, parts[0].acks);
        if let Some(run) = parts.iter_mut().find_map(|gp| gp.seq.take()) {
            // Every worker before this one holds: this one holds too, and the visits start.
            self.hold(reply_to, acks, HeldWork::Group(parts), &[]);
            held.push(self.id);
            let mut run = run;
            run.held = held;
            // Its time: every worker it involves holds from here on (`at_time`).
            run.now_ms = Some(simplekv_engine::system_clock());
            return self.seq_visit(run);
        }
        // The parts run in this order: each one's bounds see what the ones before leave, at
        // most. One of them may yet be refused at a later worker and run nowhere, so a key
        // keeps the longer of what it holds and what each part before would leave.
        let mut lens = Projected::new();
        for gp in parts.iter_mut() {
            if gp.refused.is_some() {
                continue;
            }
            let mut leaves = lens.clone();
            match self.set_aside_part(&gp.part.items, &mut leaves) {
                Ok(room) => {
                    gp.room = room;
                    for (k, n) in leaves {
                        let was = self.projected_len(&lens, &k);
                        lens.insert(k, n.max(was));
                    }
                }
                Err(e) => {
                    // It does not run: the parts after it find what was there.
                    for later in rest.iter_mut().flat_map(|(_, ps)| ps.iter_mut()) {
                        if later.reply_to == gp.reply_to {
                            later.refused = Some(e.clone());
                        }
                    }
                    refused.push((gp.reply_to, e.clone()));
                    gp.refused = Some(e);
                }
            }
        }
        if rest.is_empty() {
            // The group's time, as in Redis the time a transaction runs at: taken once every
            // worker holds for it, so no command on these workers saw a later one first.
            let at = Some(simplekv_engine::system_clock());
            self.group_decided(parts, true, &refused, at);
            self.group_decide_held(&held, reply_to, acks, refused, at);
            return;
        }
        self.hold(reply_to, acks, HeldWork::Group(parts), &[]);
        held.push(self.id);
        let next = rest[0].0;
        let op = Op::GroupStep {
            held,
            rest,
            refused,
        };
        self.nx_out.push((next, Request { reply_to, op, acks }));
    }

    /// Runs a group's parts here, in order (`commit`), or answers that they did not run
    /// (the parts of a `refused` transaction answer its error).
    pub(super) fn group_decided(
        &mut self,
        parts: Vec<GroupPart>,
        commit: bool,
        refused: &Refused,
        at: Option<u64>,
    ) {
        let client = self.slow_for;
        for gp in parts {
            let refusal = gp.refused.or_else(|| {
                refused
                    .iter()
                    .find(|(r, _)| *r == gp.reply_to)
                    .map(|(_, e)| e.clone())
            });
            if !commit || refusal.is_some() {
                for (_, r) in &gp.room {
                    self.release_room(r);
                }
            }
            let (payload, need) = match refusal {
                _ if !commit => (Payload::TxAborted, Need::Now),
                Some(e) => (Payload::Err(e), Need::Now),
                None => {
                    let (items, acks, room) = (gp.part.items, gp.acks, gp.room);
                    // Its slow log entries are its client's.
                    self.slow_for = Some(gp.reply_to);
                    self.at_time(at, |w| w.run_tx_items_in_room(items, acks, room))
                }
            };
            self.nx_answer(gp.reply_to, payload, need);
        }
        self.slow_for = client;
    }

    /// Tells the held workers of a group to run their parts (but those of `refused`).
    fn group_decide_held(
        &mut self,
        held: &[usize],
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        refused: Refused,
        at: Option<u64>,
    ) {
        for &w in held {
            let op = Op::NxDecide {
                commit: true,
                moved: None,
                refused: refused.clone(),
                at,
            };
            self.send_req(w, Request { reply_to, op, acks });
        }
    }

    /// Sets disk room aside in this worker's partitions for the records `items` will write
    /// here, so that another command cannot take it before they run: MSET's and MSETNX's
    /// values and DEL's and UNLINK's tombstones exactly, for other writes a bound on what
    /// they write (`set_aside_estimate`). On a full disk (or under
    /// `storage.min_free_space`) nothing is kept and the error is the answer: EXEC is refused
    /// whole, as Redis refuses a transaction with commands that add data when it is out of
    /// memory.
    /// `lens`: the value lengths the commands before (of this part, and of the group's parts
    /// before it) leave, by key, for the bounds of the commands after them.
    pub(super) fn set_aside_part(
        &mut self,
        items: &[(u32, Op)],
        lens: &mut Projected,
    ) -> Result<Vec<(usize, Room)>, String> {
        let mut room = Vec::new();
        for (at, (_, op)) in items.iter().enumerate() {
            let kept = match op {
                Op::MSet { pairs, .. } | Op::MSetNx { pairs } => {
                    // An MSETNX may set nothing: its keys may keep what they hold.
                    let sure = matches!(op, Op::MSet { .. });
                    for (k, v) in pairs.iter() {
                        let n = if sure {
                            v.len()
                        } else {
                            v.len().max(self.projected_len(lens, k))
                        };
                        lens.insert(k.into(), n);
                    }
                    self.set_aside_writes(pairs.iter(), std::iter::empty())
                }
                Op::Del { keys, .. } => {
                    for k in keys {
                        lens.insert(k[..].into(), 0);
                    }
                    self.set_aside_writes(std::iter::empty(), keys.iter().map(|k| &k[..]))
                }
                Op::Keyed { .. } | Op::Move { .. } | Op::Combine(_) if op_writes(op) => {
                    self.set_aside_estimate(op, lens)
                }
                _ => continue,
            };
            match kept {
                Ok(r) => room.push((at, r)),
                Err(e) => {
                    for (_, r) in &room {
                        self.release_room(r);
                    }
                    return Err(e);
                }
            }
        }
        Ok(room)
    }

    /// Sets room aside (`Store::set_aside`) for `puts` and `deletes`, all keys of this
    /// worker; returns it by partition, or the error to answer (nothing kept).
    pub(super) fn set_aside_writes<'a>(
        &mut self,
        puts: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        deletes: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Room, String> {
        type Records<'a> = (u32, Vec<(&'a [u8], &'a [u8])>, Vec<&'a [u8]>);
        let mut by_partition: Vec<Records> = Vec::new();
        fn entry<'b, 'a>(by: &'b mut Vec<Records<'a>>, p: u32) -> &'b mut Records<'a> {
            let i = match by.iter().position(|(q, _, _)| *q == p) {
                Some(i) => i,
                None => {
                    by.push((p, Vec::new(), Vec::new()));
                    by.len() - 1
                }
            };
            &mut by[i]
        }
        for (k, v) in puts {
            entry(&mut by_partition, self.topo.partition_of(k))
                .1
                .push((k, v));
        }
        for k in deletes {
            entry(&mut by_partition, self.topo.partition_of(k))
                .2
                .push(k);
        }
        let mut room = Vec::with_capacity(by_partition.len());
        for (p, puts, deletes) in by_partition {
            let Some(s) = self.store_mut(p) else { continue };
            match s.set_aside(&puts, &deletes) {
                Ok(n) => room.push((p, n)),
                Err(e) => {
                    self.release_room(&room);
                    return Err(format!("ERR {e}"));
                }
            }
        }
        Ok(room)
    }

    /// Room for a write of a transaction whose records are known only when it runs: one
    /// value of the key it writes, as long as the longest it can make it (what the key holds
    /// now, grown by the command's arguments, or to SETRANGE's, SETBIT's or BITFIELD's
    /// offset; a copy is as long as its source, BITOP's result as its longest source), and a
    /// tombstone for a renamed key. GETDEL only deletes: its tombstone's room is not checked
    /// against `storage.min_free_space`. What a command writes past this (an estimate that
    /// fell short) is checked when it runs.
    fn set_aside_estimate(&mut self, op: &Op, lens: &mut Projected) -> Result<Room, String> {
        let max = self.config.limits.max_value_len as usize;
        let records: Vec<Record> = match op {
            Op::Keyed { args, .. } => {
                let a = args.slices();
                let (Some(name), Some(key)) = (a.first(), a.get(1)) else {
                    return Ok(Room::new());
                };
                if name.eq_ignore_ascii_case(b"getdel") {
                    vec![(*key, None, true)]
                } else {
                    let now = self.projected_len(lens, key);
                    let n = value_bound(name, &a, now).min(max);
                    vec![(*key, Some(n), overwrites(name, &a))]
                }
            }
            Op::Move { kind, src, dst } => {
                // The destination may keep its value (RENAMENX, COPY without REPLACE, a
                // missing source), and RENAMENX's source too.
                // (Nor is the source surely gone: RENAME k k, or one refused.)
                let mut r = vec![(&dst[..], Some(self.projected_len(lens, src)), false)];
                if kind.removes_source() {
                    r.push((&src[..], None, false));
                }
                r
            }
            Op::Combine(c) => {
                let Some(dest) = c.all_keys().next() else {
                    return Ok(Room::new());
                };
                let longest = c.keys.iter().map(|k| self.projected_len(lens, k)).max();
                vec![(dest, Some(longest.unwrap_or(0)), true)]
            }
            _ => return Ok(Room::new()),
        };
        self.set_aside_records(&records, lens)
    }

    /// The length of `key`'s value (of this worker) once the commands projected in `lens`
    /// ran: theirs if they write it, else what it holds now (0: no such key).
    pub(super) fn projected_len(&self, lens: &Projected, key: &[u8]) -> usize {
        lens.get(key).copied().unwrap_or_else(|| {
            self.store(self.topo.partition_of(key))
                .and_then(|s| s.meta(key))
                .map_or(0, |m| m.value_len as usize)
        })
    }

    /// Sets room aside for `records` of this worker's keys and projects them into `lens`;
    /// returns the room, or the error to answer (nothing kept).
    pub(super) fn set_aside_records(
        &mut self,
        records: &[Record],
        lens: &mut Projected,
    ) -> Result<Room, String> {
        for &(k, n, sure) in records {
            // What the next commands of the transaction find, at most: a write that may
            // leave the value as it is (a condition, a command that fails on what it finds,
            // an expiry change) leaves the longer of the two.
            let n = n.unwrap_or(0);
            let n = if sure {
                n
            } else {
                n.max(self.projected_len(lens, k))
            };
            lens.insert(k.into(), n);
        }
        let mut room = Room::new();
        for &(k, n, _) in records {
            let p = self.topo.partition_of(k);
            let Some(s) = self.store_mut(p) else { continue };
            let kept = match n {
                Some(n) => s.set_aside_sized(&[(k, n)], &[]),
                None => s.set_aside_sized(&[], &[k]),
            };
            match kept {
                Ok(n) => room.push((p, n)),
                Err(e) => {
                    self.release_room(&room);
                    return Err(format!("ERR {e}"));
                }
            }
        }
        Ok(room)
    }

    /// Gives back room `set_aside_writes` kept, for good.
    pub(super) fn release_room(&mut self, room: &[(u32, u64)]) {
        for &(p, n) in room {
            if let Some(s) = self.store_mut(p) {
                s.release_set_aside(n);
            }
        }
    }

    /// Runs `op` in the room set aside for it: given back to it, its writes up to that room
    /// not held back by `storage.min_free_space` (checked when the room was set aside; a roll
    /// since may have left the room behind in a closed segment, and the op gets it again
    /// past the floor).
    pub(super) fn execute_in_room(
        &mut self,
        op: Op,
        acks: simplekv_conf::Acks,
        room: &[(u32, u64)],
    ) -> (Payload, Need) {
        self.in_room(room, |w| w.execute_op(op, acks))
    }

    /// Runs `f` in `room`, set aside before (`execute_in_room`).
    pub(super) fn in_room<R>(&mut self, room: &[(u32, u64)], f: impl FnOnce(&mut Self) -> R) -> R {
        self.release_room(room);
        // By partition (a RENAME's two records may share one).
        let mut credit: Vec<(u32, u64)> = Vec::with_capacity(room.len());
        for &(p, n) in room {
            match credit.iter_mut().find(|(q, _)| *q == p) {
                Some(c) => c.1 += n,
                None => credit.push((p, n)),
            }
        }
        for (p, n) in credit {
            if let Some(s) = self.store_mut(p) {
                s.set_floor_credit(n);
            }
        }
        let r = f(self);
        for &(p, _) in room {
            if let Some(s) = self.store_mut(p) {
                s.set_floor_credit(0);
            }
        }
        r
    }

    /// `run_tx_items` for a group's part: each item runs in the room set aside for it.
    pub(super) fn run_tx_items_in_room(
        &mut self,
        items: Vec<(u32, Op)>,
        acks: simplekv_conf::Acks,
        mut room: Vec<(usize, Room)>,
    ) -> (Payload, Need) {
        if room.is_empty() {
            return self.run_tx_items(items, acks);
        }
        let mut need = Need::Now;
        let mut done = Vec::with_capacity(items.len());
        for (at, (i, op)) in items.into_iter().enumerate() {
            let mine = room
                .iter()
                .position(|(a, _)| *a == at)
                .map(|k| room.swap_remove(k).1)
                .unwrap_or_default();
            let (payload, n) = self.execute_in_room(op, acks, &mine);
            need = need.max(n);
            done.push((i, payload));
        }
        (Payload::Tx(done), need)
    }

    /// A group that does not go on (a watched key changed, or a step out of place): the held
    /// workers let go, and every part in `rest` answers `answer`.
    fn group_abort(
        &mut self,
        held: &[usize],
        rest: Vec<(usize, Vec<GroupPart>)>,
        answer: impl Fn() -> Payload,
    ) {
        for gp in rest.into_iter().flat_map(|(_, parts)| parts) {
            // A transaction in sequence: its visits answer too (`seqtx`).
            let visits = gp.seq.as_ref().map_or(0, |run| run.answers());
            for _ in 0..=visits {
                self.nx_answer(gp.reply_to, answer(), Need::Now);
            }
        }
        // A decision's reply_to and acks are not read (`nx_decide`).
        let acks = self.default_acks();
        self.nx_decide_held(held, ReplyTo::default(), acks, false);
    }

    /// Runs this worker's part of an EXEC when it is the only one, all of it now: its watched
    /// keys are checked first, then its commands run in order. (A worker of a transaction
    /// over several checks at its step and, once the outcome is known, only runs: a watched
    /// key may expire while it is held, after the last worker already ran its part.) Returns the payloads and what the reply must
    /// wait for (the most any of them needs).
    pub(super) fn run_tx_part(
        &mut self,
        part: TxPart,
        acks: simplekv_conf::Acks,
    ) -> (Payload, Need) {
        if self.cluster.is_some() {
            // The first key of the part (a server command's op, INFO's share say, has none).
            let first = part
                .items
                .iter()
                .find_map(|(_, op)| self.op_key(op))
                .map(|(p, k)| (p, k.into_owned()))
                .or_else(|| {
                    part.watch
                        .first()
                        .map(|(k, _)| (self.topo.partition_of(k), k.clone()))
                });
            if let Some((p, key)) = first {
                let write = part.items.iter().any(|(_, op)| op_writes(op));
                if let Some(e) = self.cluster_refusal(p, &key, write, acks) {
                    return (Payload::Err(refused_exec(e)), Need::Now);
                }
            }
        }
        if !self.watch_holds(&part.watch) {
            return (Payload::TxAborted, Need::Now);
        }
        // Room on disk for every write first: on a full disk the EXEC is refused whole
        // (EXECABORT) rather than stopped at its first command without room.
        // Its time: nothing else runs here until it is done.
        self.at_time(Some(simplekv_engine::system_clock()), |w| {
            match w.set_aside_part(&part.items, &mut Projected::new()) {
                Ok(room) => w.run_tx_items_in_room(part.items, acks, room),
                Err(e) => (Payload::Err(e), Need::Now),
            }
        })
    }

    /// Runs `f` at a transaction's time `now` (unix ms; `None`: by the clock): expiries are
    /// decided (`Store::freeze_clock`) and relative ones set from it, so its commands run at
    /// one time, as in Redis.
    pub(super) fn at_time<R>(&mut self, now: Option<u64>, f: impl FnOnce(&mut Self) -> R) -> R {
        let Some(t) = now else {
            return f(self);
        };
        self.tx_now = Some(t);
        for s in self.stores.iter_mut().flatten() {
            s.freeze_clock(Some(t));
        }
        let r = f(self);
        for s in self.stores.iter_mut().flatten() {
            s.freeze_clock(None);
        }
        self.tx_now = None;
        r
    }

    /// Runs a transaction part's commands (its watched keys were checked).
    pub(super) fn run_tx_items(
        &mut self,
        items: Vec<(u32, Op)>,
        acks: simplekv_conf::Acks,
    ) -> (Payload, Need) {
        let mut need = Need::Now;
        let mut done = Vec::with_capacity(items.len());
        for (i, op) in items {
            let (payload, n) = self.execute_op(op, acks);
            need = need.max(n);
            done.push((i, payload));
        }
        (Payload::Tx(done), need)
    }

    /// WATCH (outside MULTI): records each key's version; keys on other workers are asked
    /// for, and the connection's next command waits for their answers.
    fn watch(&mut self, token: usize, out: &mut Output, client: &mut Client, args: &[&[u8]]) {
        let acks = self.acks_of(client);
        if self.cluster.is_some() {
            let slot = crate::slot::key_slot(args[1]);
            if args[2..].iter().any(|k| crate::slot::key_slot(k) != slot) {
                return err(out, super::cluster_cmds::CROSSSLOT);
            }
            let p = self.topo.partition_of(args[1]);
            if let Some(e) = self.cluster_refusal(p, args[1], false, acks) {
                return err(out, &e);
            }
        }
        let workers = self.peers.len();
        let mut remote: Vec<Vec<(u32, Vec<u8>)>> = vec![Vec::new(); workers];
        for k in &args[1..] {
            let i = client.watched.len() as u32;
            let w = self.topo.worker_of(self.topo.partition_of(k));
            let ver = if w == self.id {
                self.version_of(k)
            } else {
                remote[w].push((i, k.to_vec()));
                None
            };
            client.watched.push(Watched {
                key: k.to_vec(),
                ver,
            });
        }
        let involved: Vec<usize> = (0..workers).filter(|&w| !remote[w].is_empty()).collect();
        if involved.is_empty() {
            return out.push_reply(b"+OK\r\n");
        }
        let seq = out.next_seq();
        for (part, &w) in involved.iter().enumerate() {
            let reply_to = self.reply_to(token, client, out, seq, part as u32);
            let keys = std::mem::take(&mut remote[w]);
            self.send_req(
                w,
                Request {
                    reply_to,
                    op: Op::Versions { keys },
                    acks,
                },
            );
        }
        let gather = Gather::AllOk {
            missing: involved.len(),
            error: None,
        };
        out.push_slot(Slot::Waiting(Box::new(Pending { gather, hold: None })));
        out.barrier = Some(seq);
    }

    /// A key's version as this worker sees it now.
    pub(super) fn version_of(&self, key: &[u8]) -> Ver {
        Some(self.store(self.topo.partition_of(key))?.version(key))
    }

    /// Every watched key is as it was when watched.
    fn watch_holds(&self, watch: &[(Vec<u8>, Ver)]) -> bool {
        watch.iter().all(|(k, v)| {
            let Some(v) = v else { return false };
            let Some(s) = self.store(self.topo.partition_of(k)) else {
                return false;
            };
            s.unchanged_since(k, *v).unwrap_or_else(|e| {
                warn!(
                    "worker {}: WATCH could not read a key's version: {e}",
                    self.id
                );
                false
            })
        })
    }
}

/// The longest value a write command of a transaction can leave in its key, which holds
/// `now` bytes: its value argument (SET and the like), what it holds grown by the argument
/// (APPEND), a number's digits (INCR and the like), up to the offset it writes at (SETRANGE,
/// SETBIT, BITFIELD), none for a change of expiry (its record has no value). Arguments that
/// are not numbers where an offset is expected leave the command to fail when it runs. The
/// caller caps it at `limits.max_value_len`.
/// The command sets its key's value whatever the key holds and cannot fail (SET and GETSET
/// with no option): the value's length after it is its argument's, not possibly the one
/// before. With options it may write nothing (NX, XX, a TTL of 0 or not a number, options
/// that do not go together), as SETEX and PSETEX may.
fn overwrites(name: &[u8], args: &[&[u8]]) -> bool {
    args.len() == 3 && (name.eq_ignore_ascii_case(b"set") || name.eq_ignore_ascii_case(b"getset"))
}

fn value_bound(name: &[u8], args: &[&[u8]], now: usize) -> usize {
    let number = |a: &[u8]| std::str::from_utf8(a).ok()?.parse::<u64>().ok();
    let arg_len = |i: usize| args.get(i).map_or(0, |a| a.len());
    let offset_to = |bits: u64| usize::try_from(bits / 8).unwrap_or(usize::MAX);
    match &name.to_ascii_lowercase()[..] {
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" | b"persist" | b"getex" => 0,
        b"set" | b"setnx" | b"getset" => arg_len(2),
        b"setex" | b"psetex" => arg_len(3),
        b"append" => now.saturating_add(arg_len(2)),
        // A 64-bit integer's digits and sign.
        b"incr" | b"decr" | b"incrby" | b"decrby" => 21,
        // A double's digits, as the command formats it, at most.
        b"incrbyfloat" => 400,
        b"setrange" => {
            let off = args.get(2).and_then(|a| number(a)).unwrap_or(0);
            let off = usize::try_from(off).unwrap_or(usize::MAX);
            now.max(off.saturating_add(arg_len(3)))
        }
        b"setbit" => {
            let bit = args.get(2).and_then(|a| number(a)).unwrap_or(0);
            now.max(offset_to(bit).saturating_add(1))
        }
        b"bitfield" => now.max(bitfield_end(args)),
        _ => now.saturating_add(args.iter().skip(2).map(|a| a.len()).sum::<usize>()) + 32,
    }
}

/// The byte past the furthest field a BITFIELD's GET, SET and INCRBY address (an offset
/// `#N` counts in fields of the type's width).
fn bitfield_end(args: &[&[u8]]) -> usize {
    let mut end = 0usize;
    let mut i = 2;
    while i < args.len() {
        let op = args[i].to_ascii_lowercase();
        let (ty, off, step) = match &op[..] {
            b"get" => (args.get(i + 1), args.get(i + 2), 3),
            b"set" | b"incrby" => (args.get(i + 1), args.get(i + 2), 4),
            b"overflow" => (None, None, 2),
            _ => (None, None, 1),
        };
        i += step;
        let (Some(ty), Some(off)) = (ty, off) else {
            continue;
        };
        let width = std::str::from_utf8(ty.get(1..).unwrap_or_default())
            .ok()
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(64);
        let bits = match off.strip_prefix(b"#") {
            Some(n) => std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| n.saturating_mul(width)),
            None => std::str::from_utf8(off)
                .ok()
                .and_then(|n| n.parse::<u64>().ok()),
        };
        if let Some(bits) = bits {
            let last = bits.saturating_add(width).div_ceil(8);
            end = end.max(usize::try_from(last).unwrap_or(usize::MAX));
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::{overwrites, value_bound};

    #[test]
    fn only_unconditional_sets_replace_a_values_projected_length() {
        let o = |a: &[&str]| {
            let a: Vec<&[u8]> = a.iter().map(|x| x.as_bytes()).collect();
            overwrites(a[0], &a)
        };
        assert!(o(&["SET", "k", "v"]));
        assert!(o(&["GETSET", "k", "v"]));
        // A condition, an option that may not parse (a TTL of 0), or a command that may
        // fail on what it finds, may leave the value.
        assert!(!o(&["set", "k", "v", "EX", "10", "GET"]));
        assert!(!o(&["SET", "k", "v", "EX", "0"]));
        assert!(!o(&["SETEX", "k", "0", "v"]));
        assert!(!o(&["SET", "k", "v", "NX"]));
        assert!(!o(&["SET", "k", "v", "xx", "GET"]));
        assert!(!o(&["SETNX", "k", "v"]));
        assert!(!o(&["INCR", "k"]));
        assert!(!o(&["APPEND", "k", "v"]));
    }

    #[test]
    fn a_write_in_a_transaction_is_given_room_for_the_longest_value_it_can_make() {
        let b = |a: &[&str], now| {
            let a: Vec<&[u8]> = a.iter().map(|x| x.as_bytes()).collect();
            value_bound(a[0], &a, now)
        };
        // The value, not what the key holds now.
        assert_eq!(b(&["SET", "k", "12345", "EX", "100"], 300 << 20), 5);
        assert_eq!(b(&["SETEX", "k", "100", "123"], 300 << 20), 3);
        assert_eq!(b(&["APPEND", "k", "12345"], 100), 105);
        assert!(b(&["incr", "k"], 19) >= 20);
        assert!(b(&["SETRANGE", "k", "3000000", "y"], 10) >= 3_000_001);
        assert!(b(&["SETRANGE", "k", "10", "y"], 100) >= 100);
        assert!(b(&["SETBIT", "k", "8000007", "1"], 0) >= 1_000_001);
        // Offsets only, not values; `#N` in fields of the type's width.
        assert_eq!(b(&["BITFIELD", "k", "SET", "u32", "0", "4000000000"], 0), 4);
        assert_eq!(b(&["BITFIELD", "k", "SET", "u8", "#1000", "1"], 0), 1001);
        assert_eq!(
            b(
                &[
                    "BITFIELD", "k", "OVERFLOW", "SAT", "INCRBY", "i64", "800", "1"
                ],
                0
            ),
            108
        );
        assert_eq!(b(&["BITFIELD", "k", "GET", "u8", "0"], 50), 50);
        assert_eq!(b(&["EXPIRE", "k", "100"], 5000), 0);
        assert_eq!(b(&["PERSIST", "k"], 5000), 0);
        // Not a number where an offset goes: the command fails when it runs.
        assert!(b(&["SETRANGE", "k", "x", "y"], 7) >= 7);
        // Offsets near the top of u64 saturate (the caller caps them).
        assert_eq!(
            b(&["SETRANGE", "k", &u64::MAX.to_string(), "y"], 0),
            usize::MAX
        );
        assert!(b(&["SETBIT", "k", &u64::MAX.to_string(), "1"], 0) > 1 << 60);
    }
}
