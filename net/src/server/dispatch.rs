//! Command dispatch: arity and auth checks, routing keys to their owners, scatter/gather of
//! multi-key and keyless commands, and the server commands (PING, INFO, CONFIG, ...).
use std::sync::atomic::Ordering;

use simplekv_engine::{Prefetch, Store};

use super::conn::{Client, Gather, Output, Pending, ReplyBytes, ReplyMode, Slot};
use super::replica::Need;
use super::router::{Op, OwnedArgs, Pairs, Payload, ReplyTo, Request};
use super::slowlog::{SlowTimer, WholeEntry};
use super::worker::Worker;
use crate::cmd::{self, CommandSpec, Effect, ExecCtx, Kind, MultiKind};
use crate::glob::glob_match;
use crate::resp::encode::{
    write_array_len, write_bulk, write_error, write_help, write_integer, write_null, write_ok,
    write_simple,
};

/// Turns the collected parts of a broadcast into its reply.
#[derive(Clone, Debug)]
pub enum Finisher {
    Info {
        sections: Vec<String>,
    },
    /// LATENCY HISTOGRAM: the merged histograms of these commands (all when empty).
    LatencyHistogram {
        names: Vec<String>,
    },
    /// LATENCY LATEST, HISTORY, GRAPH or DOCTOR (`sub`, lowercase) over the workers' merged
    /// latency monitor series; `event` for HISTORY and GRAPH.
    LatencyMonitor {
        sub: &'static str,
        event: String,
        threshold: u64,
    },
    /// How many distinct names the parts answered (LATENCY RESET).
    DistinctCount,
    Keys,
    /// `extra`: the line of the asking connection (it is not in its worker's table while its
    /// command runs).
    ClientList {
        extra: String,
        /// CLIENT LIST ID ...: only these clients (`None`: all; TYPE master or replica: none).
        ids: Option<Vec<u64>>,
        /// CLIENT LIST TYPE pubsub (true) or normal (false): the clients that subscribe, or
        /// the others.
        pubsub: Option<bool>,
    },
    RandomKey,
    /// CLIENT KILL: the old form answers +OK / "No such client", the filter form a count.
    /// `killed_self`: the asking client matched (it is in no worker's table while it runs).
    ClientKill {
        old_style: bool,
        killed_self: bool,
    },
    /// `partition`: where the call started (the next cursor if no page comes back).
    Scan {
        partition: u32,
        partitions: u32,
    },
    /// A fixed status reply once every part succeeded.
    Status(&'static str),
    /// SAVE / BGSAVE: `status` once every worker fsynced its logs, and LASTSAVE moves to
    /// then, not when one worker's part failed.
    Saved {
        status: &'static str,
        last_save: std::sync::Arc<std::sync::atomic::AtomicU64>,
    },
    /// The number of keys gathered.
    Count,
    /// SLOWLOG GET: the newest `count` entries of all the workers', at most `max_len`.
    SlowLog {
        count: usize,
        max_len: usize,
    },
    /// The parts' integers added up, at most `max` (SLOWLOG LEN).
    Sum {
        max: i64,
    },
    /// PUBSUB CHANNELS, SHARDCHANNELS: the names gathered, each once; or how many there
    /// are (`count`: NUMPAT).
    Distinct {
        count: bool,
    },
    /// PUBSUB NUMSUB, SHARDNUMSUB: each name and its subscribers over the workers.
    NumSub {
        names: Vec<Vec<u8>>,
    },
}

/// What C's `%.*s` prints of an argument: up to its first NUL, at most `max` bytes.
fn c_str_prefix(a: &[u8], max: usize) -> &[u8] {
    let end = a.iter().position(|&b| b == 0).unwrap_or(a.len());
    &a[..end.min(max)]
}

/// Redis's reply for an unknown command, byte for byte as processCommand builds it: each
/// argument is quoted while the quoted list is under 128 bytes, and the last one is cut to
/// what is left of those 128. (The old version cut at 128 + 60 bytes and per argument only,
/// so long or many arguments gave a different text than Redis.)
fn unknown_command(args: &[&[u8]]) -> Vec<u8> {
    let mut quoted = Vec::new();
    for a in &args[1..] {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(c_str_prefix(a, room));
        quoted.extend_from_slice(b"' ");
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_str_prefix(args[0], 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&quoted);
    let mut out = Vec::new();
    write_error(&mut out, &msg);
    out
}

/// What a keyless read op reads (`Worker::keyless_read`): one slot of a partition led here,
/// the partitions led here, or those a SCAN page goes through from its partition on.
enum KeylessRead {
    Slot(u32, u16),
    Led(Vec<u32>),
    Scan(u32),
}

/// Redis 7's reply for a subcommand a container command (CONFIG, CLIENT, ...) does not have.
pub(super) fn unknown_subcommand(out: &mut Output, container: &str, sub: &[u8]) {
    // Refused before it ran, as Redis does in its command lookup: not in the slow log.
    out.not_run = true;
    subcommand_error(out, "unknown subcommand", container, sub);
}

/// Redis 7's reply for a subcommand it knows given arguments it does not take
/// (`addReplySubcommandSyntaxError`): the command ran and failed.
pub(super) fn subcommand_syntax_error(out: &mut Output, container: &str, sub: &[u8]) {
    let what = "unknown subcommand or wrong number of arguments for";
    subcommand_error(out, what, container, sub);
}

fn subcommand_error(out: &mut Output, what: &str, container: &str, sub: &[u8]) {
    let mut msg = format!("ERR {what} '").into_bytes();
    msg.extend_from_slice(c_str_prefix(sub, 128));
    msg.extend_from_slice(format!("'. Try {} HELP.", container.to_ascii_uppercase()).as_bytes());
    let mut r = Vec::new();
    write_error(&mut r, &msg);
    out.push_reply(&r);
}

/// Whether Redis counts this command's key lookup in keyspace_hits / keyspace_misses (its
/// lookupKeyRead calls). Deciding by key existence before the command runs, rather than by a
/// null reply afterwards as before, counts STRLEN and GETRANGE of a missing key (which answer
/// 0 and "") as misses, and counts TTL, TYPE and SET ... GET as Redis does.
fn counts_lookup(spec: &CommandSpec, args: &[&[u8]]) -> bool {
    match spec.name {
        "get" | "getex" | "getdel" | "getset" | "getrange" | "substr" | "strlen" | "ttl"
        | "pttl" | "expiretime" | "pexpiretime" | "type" | "getbit" | "bitcount" | "bitpos"
        | "bitfield_ro" => true,
        "set" => args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"get")),
        // Read-only (GET and OVERFLOW only): Redis looks the key up for reading then.
        "bitfield" => !args
            .iter()
            .skip(2)
            .any(|a| a.eq_ignore_ascii_case(b"set") || a.eq_ignore_ascii_case(b"incrby")),
        _ => false,
    }
}

/// Runs a keyed command; also says, for the commands Redis counts in keyspace_hits /
/// keyspace_misses, whether the key was there. GET's reply tells it (a bulk or a null), so
/// GET needs no lookup of its own, which would double its largest cost: the first touch of
/// the key's index entry.
fn exec_counted(
    spec: &CommandSpec,
    args: &[&[u8]],
    store: &mut simplekv_engine::Store,
    ctx: &ExecCtx,
    reply: &mut Vec<u8>,
) -> (Effect, Option<bool>) {
    let is_get = spec.name == "get";
    let found = (!is_get && counts_lookup(spec, args)).then(|| store.exists(args[1]));
    let effect = cmd::exec_keyed(spec, args, store, ctx, reply);
    let found = if is_get && reply.first() == Some(&b'$') {
        Some(!reply.starts_with(b"$-1"))
    } else {
        found
    };
    (effect, found)
}

/// CLIENT SETNAME / HELLO SETNAME: Redis's check, then the name ("" clears it). False (with
/// the error queued) if the name is refused.
fn set_client_name(out: &mut Output, client: &mut Client, name: &[u8]) -> bool {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        err(
            out,
            "ERR Client names cannot contain spaces, newlines or special characters.",
        );
        return false;
    }
    client.name = (!name.is_empty()).then(|| name.to_vec());
    true
}

/// OBJECT and MEMORY subcommands without a key: HELP, and MEMORY's server-wide reports,
/// which simplekv answers elsewhere.
fn introspection_help(out: &mut Output, container: &str, sub: &[u8]) {
    let mut r = Vec::new();
    match (container, lower(sub).as_str()) {
        ("object", "help") => write_help(
            &mut r,
            &[
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Not tracked by simplekv (answers an error for an existing <key>).",
                "IDLETIME <key>",
                "    Not tracked by simplekv (answers an error for an existing <key>).",
                "REFCOUNT <key>",
                "    Return the number of references of the value associated with the specified",
                "    <key> (always 1: nothing is shared).",
            ],
        ),
        ("memory", "help") => write_help(
            &mut r,
            &[
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "PURGE",
                "    Give the memory allocator's free pages back to the system.",
                "USAGE <key> [SAMPLES <count>]",
                "    Return memory in bytes used by <key>: its keydir entry and share of the",
                "    index (values stay on disk). SAMPLES is accepted and has no effect.",
            ],
        ),
        ("memory", "purge") if super::info::purge_heap() => write_ok(&mut r),
        ("memory", sub @ ("doctor" | "stats" | "malloc-stats" | "purge")) => {
            return err(
                out,
                &format!(
                    "ERR MEMORY {} is not supported by simplekv: INFO memory reports the \
                     process's and the keydir's memory",
                    sub.to_uppercase()
                ),
            );
        }
        _ => return unknown_subcommand(out, container, sub),
    }
    out.push_reply(&r);
}

/// An error reply's bytes.
pub(super) fn error_reply(text: &str) -> Vec<u8> {
    let mut r = Vec::with_capacity(text.len() + 3);
    write_error(&mut r, text.as_bytes());
    r
}

pub(super) fn err(out: &mut Output, text: &str) {
    out.push_reply(&error_reply(text));
}

fn lower(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_lowercase()
}

impl Worker {
    pub fn exec_ctx(&self) -> ExecCtx {
        ExecCtx {
            now_ms: self.tx_now,
            proto_max_bulk_len: self.config.limits.proto_max_bulk_len as usize,
        }
    }

    /// Where another worker sends the answer for a reply of this connection (counted as
    /// owed until it comes, see `Output::backlogged`).
    pub(super) fn reply_to(
        &self,
        token: usize,
        client: &Client,
        out: &mut Output,
        seq: u64,
        part: u32,
    ) -> ReplyTo {
        self.reply_to_worker(token, client, out, seq, part, None)
    }

    /// `reply_to` for a command that runs whole on worker `to` (`Output::sent_away_to`).
    pub(super) fn reply_to_worker(
        &self,
        token: usize,
        client: &Client,
        out: &mut Output,
        seq: u64,
        part: u32,
        to: Option<usize>,
    ) -> ReplyTo {
        out.sent_away_to(to);
        ReplyTo {
            worker: self.id,
            token,
            conn_id: client.id,
            seq,
            part,
        }
    }

    /// Runs one command from a connection.
    pub fn dispatch(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        args: &[&[u8]],
    ) {
        let Some(spec) = cmd::lookup(args[0]) else {
            // CLIENT LIST's cmd= of a command Redis's lookup does not find.
            client.last_cmd = "NULL";
            out.push_reply(&unknown_command(args));
            super::multi::flag(client);
            out.not_run = true;
            return;
        };
        // MULTI, EXEC, DISCARD, WATCH, UNWATCH: before the arity check (a refused EXEC ends
        // the transaction) and before queueing.
        if spec.group == "transactions" {
            if client.subs.is_some() {
                // As Redis: not in the subscribed context either (a refused EXEC answers
                // EXECABORT with the reason).
                self.stats.cmdstats.record_rejected(spec.name);
                let e = super::pubsub::not_allowed_error(spec.name);
                match spec.name {
                    "exec" => err(
                        out,
                        &format!(
                            "EXECABORT Transaction discarded because of: {}",
                            e.trim_start_matches("ERR ")
                        ),
                    ),
                    _ => err(out, &e),
                }
                out.not_run = true;
                return;
            }
            out.cmd = spec.name;
            self.transaction_command(token, out, client, args);
            return;
        }
        // As Redis's command lookup: a subcommand the container does not know is refused
        // first (before arity and authentication), and inside MULTI it aborts the EXEC.
        if let Some(sub) = spec.refused_subcommand(args) {
            client.last_cmd = "NULL";
            unknown_subcommand(out, spec.name, sub);
            super::multi::flag(client);
            return;
        }
        // Redis 7 checks a container command (CONFIG, CLIENT, COMMAND) against the arity of
        // its subcommand and names it `config|set` in the error; checking the container's own
        // loose arity let `CONFIG SET x` through to a generic "unknown subcommand" text.
        let arity_spec = spec.for_args(args);
        // CLIENT LIST's cmd=: the subcommand's full name (`client|list`), as Redis 7.
        client.last_cmd = arity_spec.name;
        if !cmd::table::arity_ok(arity_spec, args.len()) {
            self.stats.cmdstats.record_rejected(arity_spec.name);
            err(
                out,
                &format!(
                    "ERR wrong number of arguments for '{}' command",
                    arity_spec.name
                ),
            );
            super::multi::flag(client);
            out.not_run = true;
            return;
        }
        if self.needs_auth(client, spec, args) {
            self.stats.cmdstats.record_rejected(arity_spec.name);
            err(out, "NOAUTH Authentication required.");
            super::multi::flag(client);
            out.not_run = true;
            return;
        }
        // As Redis with a RESP2 connection that subscribes (checked before the monitor's
        // rule, as Redis does).
        if client.subs.is_some() && !super::pubsub::allowed_when_subscribed(spec.name) {
            self.stats.cmdstats.record_rejected(arity_spec.name);
            err(out, &super::pubsub::not_allowed_error(arity_spec.name));
            super::multi::flag(client);
            out.not_run = true;
            return;
        }
        // As Redis refuses keyspace commands to a replica, which a monitor is there.
        if client.monitor && super::monitor::refused_to_monitor(spec, args) {
            self.stats.cmdstats.record_rejected(arity_spec.name);
            err(out, "ERR Replica can't interact with the keyspace");
            super::multi::flag(client);
            out.not_run = true;
            return;
        }
        if client.tx.is_some() && !matches!(spec.name, "quit" | "reset") {
            // Counted when EXEC runs it.
            return self.queue_command(out, client, spec, args);
        }
        out.cmd = arity_spec.name;
        match spec.kind {
            Kind::Keyed => self.dispatch_keyed(token, out, client, spec, args),
            Kind::Server if cmd::keyed_subcommand(arity_spec) => {
                self.dispatch_keyed(token, out, client, spec, args)
            }
            Kind::Multi(kind) => {
                if matches!(
                    kind,
                    MultiKind::MSet | MultiKind::MSetNx | MultiKind::Del | MultiKind::Unlink
                ) {
                    client.last_write = Some(self.topo.partition_of(args[1]));
                }
                self.dispatch_multi(token, out, client, kind, args)
            }
            Kind::Server => self.dispatch_server(token, out, client, spec, args),
        }
    }

    /// Whether a command (`spec`: the container's for a subcommand) is refused with NOAUTH.
    /// As Redis: no password set (any more), no authentication needed, whatever the
    /// connection did; set again, a connection that never authenticated needs to. CLIENT
    /// SETINFO runs without it too: client libraries (redis-py 5) send it on connect before
    /// any AUTH and give up on the connection when it is refused with NOAUTH (Redis 7.0 does
    /// not know it and answers "unknown subcommand", which they ignore). It only labels the
    /// connection.
    pub(super) fn needs_auth(&self, client: &Client, spec: &CommandSpec, args: &[&[u8]]) -> bool {
        let setinfo = spec.name == "client"
            && args
                .get(1)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"setinfo"));
        !client.authed
            && self.config.server.requirepass.is_some()
            && !matches!(spec.name, "auth" | "hello" | "quit" | "reset")
            && !setinfo
    }

    /// Refuses the command before it runs (MOVED, TRYAGAIN, CLUSTERDOWN, NOREPLICAS, ...):
    /// as Redis counts a redirect, a rejected call in INFO commandstats, not a failed one,
    /// left out of the slow log and of total_commands_processed.
    fn reject(&mut self, out: &mut Output, e: &str) {
        self.stats.cmdstats.record_rejected(out.cmd);
        out.not_run = true;
        err(out, e);
    }

    /// Whether a connection's next command (`args`) must wait for its commands in flight to
    /// run before it runs. Redis runs a connection's commands one after another, so a
    /// pipelined `SET data ...` / `SET flag 1` never lets another client see the new flag
    /// with the old data. Here the two may run on different workers: a command waits unless
    /// it runs whole on the one other worker all the commands in flight went to (that worker
    /// takes a connection's requests in the order they were sent). Anything else (a key of this
    /// worker, of a third one, a command over several workers, one queued in MULTI, a
    /// server command) waits: rare in pipelines, and then always in order.
    pub(super) fn waits_for_order(&self, client: &Client, out: &Output, args: &[&[u8]]) -> bool {
        if out.unran == 0 || args.is_empty() {
            return false;
        }
        let Some(w) = self.runs_on_one(client, args) else {
            return true;
        };
        w == self.id || !out.in_order_to(w)
    }

    /// The worker a command runs on whole, if it is a single-key command or a multi-key one
    /// whose keys all live on one worker, outside MULTI (as `dispatch` would send it).
    fn runs_on_one(&self, client: &Client, args: &[&[u8]]) -> Option<usize> {
        if client.tx.is_some() {
            return None;
        }
        let spec = cmd::lookup(args[0])?;
        let key_worker = |key: &[u8]| self.topo.worker_of(self.partition_of_key(key));
        match spec.kind {
            Kind::Keyed => cmd::key_of(args).map(key_worker),
            Kind::Server if cmd::keyed_subcommand(spec.for_args(args)) => {
                cmd::key_of(args).map(key_worker)
            }
            Kind::Multi(kind) => {
                let step = if kind.takes_pairs() { 2 } else { 1 };
                match self.multi_span(args, step)? {
                    (w, false) => Some(w),
                    (_, true) => None,
                }
            }
            Kind::Server => None,
        }
    }

    /// The partition of `key`: the look-ahead's, when it computed it for this very slice of
    /// the connection's buffer (`Worker::key_partition`), so that a key is hashed once.
    pub(super) fn partition_of_key(&self, key: &[u8]) -> u32 {
        match self.key_partition {
            Some((at, len, p)) if at == key.as_ptr() as usize && len == key.len() => p,
            _ => self.topo.partition_of(key),
        }
    }

    /// The acks a connection's writes need.
    pub fn acks_of(&self, client: &Client) -> simplekv_conf::Acks {
        client.acks.unwrap_or_else(|| self.default_acks())
    }

    fn dispatch_keyed(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        spec: &'static CommandSpec,
        args: &[&[u8]],
    ) {
        // Checked by `dispatch` (arity) for every command that comes here.
        let Some(key) = cmd::key_of(args) else {
            return err(out, "ERR syntax error");
        };
        let p = self.partition_of_key(key);
        self.key_partition = None;
        let owner = self.topo.worker_of(p);
        let acks = self.acks_of(client);
        let write = spec.flags.contains(&"write");
        if self.cluster.is_some()
            && let Some(e) = self.cluster_refusal(p, key, write, acks)
        {
            return self.reject(out, &e);
        }
        if write {
            client.last_write = Some(p);
        }
        if owner == self.id {
            let ctx = self.exec_ctx();
            let mut reply = std::mem::take(&mut self.reply_buf);
            reply.clear();
            let Some(store) = self.store_mut(p) else {
                err(out, "ERR partition not available on this node");
                return;
            };
            let (effect, found) = exec_counted(spec, args, store, &ctx, &mut reply);
            self.count_lookup(found);
            let wrote = effect == Effect::Wrote;
            if wrote {
                self.mark_dirty(p);
            }
            if self.notify.flags != 0 {
                self.notify_command(spec, args, found);
            }
            let need = self.need_for(Some(p), wrote, acks);
            match self.hold_for(need) {
                None => out.push_reply(&reply),
                Some(h) => {
                    out.push_slot(Slot::Held(h, ReplyBytes::take(&mut reply)));
                }
            }
            // Kept for the next command unless a huge value made it large.
            if reply.capacity() <= 64 << 10 {
                self.reply_buf = reply;
            }
        } else {
            self.sent_keyed = true;
            let seq = out.push_slot(Slot::Remote);
            let reply_to = self.reply_to_worker(token, client, out, seq, 0, Some(owner));
            self.send_req(
                owner,
                Request {
                    reply_to,
                    op: Op::Keyed {
                        partition: p,
                        args: OwnedArgs::from_slices(args.iter().copied()),
                    },
                    acks,
                },
            );
        }
    }

    /// keyspace_hits / keyspace_misses for a key lookup (`None`: not a counted lookup).
    pub(super) fn count_lookup(&mut self, found: Option<bool>) {
        match found {
            Some(true) => self.stats.hits += 1,
            Some(false) => self.stats.misses += 1,
            None => {}
        }
    }

    /// Scatter: the keys of a multi-key command grouped by owning worker; local groups run at
    /// once, the others become requests; the reply is assembled when every part is back.
    fn dispatch_multi(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        kind: MultiKind,
        args: &[&[u8]],
    ) {
        let workers = self.peers.len();
        let pairs = kind.takes_pairs();
        if pairs && !(args.len() - 1).is_multiple_of(2) {
            let name = if kind == MultiKind::MSet {
                "mset"
            } else {
                "msetnx"
            };
            err(
                out,
                &format!("ERR wrong number of arguments for '{name}' command"),
            );
            return;
        }
        let step = if pairs { 2 } else { 1 };
        let acks = self.acks_of(client);
        if self.cluster.is_some() {
            // As Redis Cluster: every key of one command in one slot (hash tags make that
            // possible), so the command runs on one partition's leader, atomically.
            let slot = crate::slot::key_slot(args[1]);
            if args[1..]
                .iter()
                .step_by(step)
                .any(|k| crate::slot::key_slot(k) != slot)
            {
                return err(out, super::cluster_cmds::CROSSSLOT);
            }
            let write = matches!(
                kind,
                MultiKind::MSet | MultiKind::MSetNx | MultiKind::Del | MultiKind::Unlink
            );
            let p = self.topo.partition_of(args[1]);
            if let Some(e) = self.cluster_refusal(p, args[1], write, acks) {
                return self.reject(out, &e);
            }
        }
        let groups = self.multi_groups(args, step);
        if pairs && let Some(e) = self.pairs_over_limit(args) {
            return err(out, &e);
        }
        let involved: Vec<usize> = (0..workers).filter(|&w| !groups[w].is_empty()).collect();
        if kind == MultiKind::MSetNx && involved.len() > 1 {
            let parts = involved
                .iter()
                .map(|&w| (w, pairs_of(args, &groups[w])))
                .collect();
            self.start_msetnx(token, out, client, acks, parts);
            return;
        }
        let gather = multi_gather(kind, (args.len() - 1) / step, involved.len());
        if self.cluster.is_none() && involved.len() > 1 {
            let parts = involved
                .iter()
                .map(|&w| (w, multi_op(kind, args, &groups[w])))
                .collect();
            return self.run_whole(token, out, client, gather, parts);
        }
        let mut slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        let mut need = Need::Now;
        for (part, &w) in involved.iter().enumerate() {
            let op = multi_op(kind, args, &groups[w]);
            if w == self.id {
                let (payload, n) = self.execute_op(op, acks);
                need = need.max(n);
                fill_slot(&mut slot, part as u32, payload);
            } else {
                // Everything on one other worker (cluster mode, or keys that hash there)
                // keeps the order with earlier single-key commands for it.
                let whole = (involved.len() == 1).then_some(w);
                let seq = out.next_seq();
                let reply_to = self.reply_to_worker(token, client, out, seq, part as u32, whole);
                self.send_req(w, Request { reply_to, op, acks });
            }
        }
        // A reply that is complete already (everything was local) or that still waits for
        // other workers: either way its local writes are released with this turn's epoch.
        self.push_gathered(out, slot, need);
    }

    /// Starts loading what looking up `keys` (those of a multi-key command's part, all on
    /// this worker) will read, stage by stage as for a pipeline's commands
    /// (`Worker::look_ahead`), so that their cache misses overlap; `read`: the records
    /// too. A hint: nothing depends on it.
    fn prefetch_keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]> + Clone, read: bool) {
        const MAX: usize = 32;
        let mut hashes = [(0u32, 0u64); MAX];
        let mut n = 0;
        for k in keys.clone().take(MAX) {
            let p = self.topo.partition_of(k);
            let h = self.store(p).map_or(0, |s| s.key_hash(k));
            hashes[n] = (p, h);
            n += 1;
        }
        if n < 2 {
            return;
        }
        for stage in [Prefetch::Index, Prefetch::Entry, Prefetch::Record] {
            if stage == Prefetch::Record && !read {
                break;
            }
            for (k, &(p, h)) in keys.clone().zip(&hashes[..n]) {
                if let Some(s) = self.store(p) {
                    s.prefetch(k, h, stage);
                }
            }
        }
    }

    /// The argument indexes of a multi-key command's keys (every `step`-th from 1), grouped
    /// by the worker that owns them.
    pub(super) fn multi_groups(&self, args: &[&[u8]], step: usize) -> Vec<Vec<usize>> {
        let workers = self.peers.len();
        // Each key's worker once, then groups of the exact size: one allocation per worker
        // involved (a command's keys are few, and this runs for every multi-key command).
        const SMALL: usize = 64;
        let mut owner = [0u16; SMALL];
        let mut counts = vec![0usize; workers];
        let keys = (1..args.len()).step_by(step);
        for (n, i) in keys.clone().enumerate() {
            let w = self.topo.worker_of(self.topo.partition_of(args[i]));
            counts[w] += 1;
            if n < SMALL {
                owner[n] = w as u16;
            }
        }
        let mut groups: Vec<Vec<usize>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
        for (n, i) in keys.enumerate() {
            let w = match owner.get(n) {
                Some(&w) => usize::from(w),
                None => self.topo.worker_of(self.topo.partition_of(args[i])),
            };
            groups[w].push(i);
        }
        groups
    }

    /// The lowest worker owning a key of a multi-key command (every `step`-th argument from
    /// 1), and whether another worker owns one too: what `multi_groups` would show, without
    /// building the groups.
    pub(super) fn multi_span(&self, args: &[&[u8]], step: usize) -> Option<(usize, bool)> {
        let mut span: Option<(usize, bool)> = None;
        for i in (1..args.len()).step_by(step) {
            let w = self.topo.worker_of(self.topo.partition_of(args[i]));
            span = Some(match span {
                None => (w, false),
                Some((low, several)) => (low.min(w), several || w != low),
            });
        }
        span
    }

    /// MSET is all or nothing in Redis. Its parts run on several workers, and a part the
    /// engine refuses for its size used to fail after the other parts had been written;
    /// refusing over-limit keys and values before anything runs keeps it atomic (with the
    /// engine's own error text, against the limits the engine applies; a worker that owns no
    /// partition goes by the configuration they come from).
    pub(super) fn pairs_over_limit(&self, args: &[&[u8]]) -> Option<String> {
        args[1..]
            .chunks(2)
            .find_map(|kv| self.over_limit(kv[0], kv.get(1).copied().unwrap_or_default()))
    }

    /// The engine's error for writing `value` under `key`, if either is over the limits the
    /// engine applies (a worker that owns no partition goes by the configuration they come
    /// from).
    pub(super) fn over_limit(&self, key: &[u8], value: &[u8]) -> Option<String> {
        let (max_key, max_value) = match self.owned.first().and_then(|&p| self.store(p)) {
            Some(s) => (s.options().max_key_len, s.options().max_value_len),
            None => (
                self.config.limits.max_key_len as usize,
                self.config.limits.max_value_len as usize,
            ),
        };
        pair_over_limit(key, value, max_key, max_value)
    }

    pub(super) fn push_gathered(&self, out: &mut Output, mut slot: Slot, need: Need) {
        let hold = self.hold_for(need);
        match slot {
            Slot::Ready(reply) => match hold {
                Some(h) => {
                    out.push_slot(Slot::Held(h, reply));
                }
                None => out.push_reply(reply.as_slice()),
            },
            Slot::Waiting(ref mut p) => {
                p.hold = hold;
                out.push_slot(slot);
            }
            Slot::Held(..) => {
                out.push_slot(slot);
            }
            // A forwarded command's reply, held by its owner: none comes here with a hold.
            Slot::Remote => {
                debug_assert!(hold.is_none(), "a hold would be lost on a Slot::Remote");
                out.push_slot(slot);
            }
        }
    }

    /// Runs work for a request (from a peer, an outside caller, or a local part of a
    /// scatter). Returns the payload and what its release must wait for.
    pub fn execute_op(&mut self, op: Op, acks: simplekv_conf::Acks) -> (Payload, Need) {
        if let Op::Repl(r) = op {
            return self.repl_op(r);
        }
        if let Op::Tx(part) = op {
            return self.run_tx_part(part, acks);
        }
        let mut part = None;
        if self.cluster.is_some() {
            if let Some((p, key)) = self.op_key(&op) {
                if !super::replica::op_in_one_slot(&op) {
                    let e = super::cluster_cmds::CROSSSLOT.to_string();
                    return (Payload::Err(e), Need::Now);
                }
                if let Some(e) = self.cluster_refusal(p, &key, op_writes(&op), acks) {
                    return (Payload::Err(e), Need::Now);
                }
                part = Some(p);
            } else if matches!(op, Op::Flush { .. }) {
                let now = std::time::Instant::now();
                if self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.parts.iter().any(|r| r.handing_over(now)))
                {
                    return (
                        Payload::Err(
                            "TRYAGAIN a partition led here is moving to its preferred leader"
                                .into(),
                        ),
                        Need::Now,
                    );
                }
                if self.cluster.as_ref().is_some_and(|c| c.resigning) {
                    return (
                        Payload::Err(
                            "TRYAGAIN this node is shutting down; its partitions are moving to \
                             other nodes"
                                .into(),
                        ),
                        Need::Now,
                    );
                }
                // FLUSHALL clears the partitions led here; its reply waits for all of them.
                let (payload, wrote) = self.execute_op_inner(op);
                let mut need = if wrote { Need::Durable } else { Need::Now };
                for p in self.served() {
                    need = need.max(self.need_for(Some(p), wrote, acks));
                }
                return (payload, need);
            } else if let Some(read) = self.keyless_read(&op) {
                // DBSIZE, KEYS, SCAN, RANDOMKEY, CLUSTER COUNTKEYSINSLOT / GETKEYSINSLOT read
                // partitions as a GET reads one: refused where a GET would be (a leader past
                // its lease may have been deposed), and answered once the high watermark
                // covers what they read, so a key of a write not yet committed (which a
                // failover could undo) is never listed.
                let (payload, _) = self.execute_op_inner(op);
                let (ps, one_slot) = match read {
                    KeylessRead::Slot(p, slot) => (vec![p], Some((p, slot))),
                    KeylessRead::Led(ps) => (ps, None),
                    // The partitions the page went through (not one it is to go on at).
                    KeylessRead::Scan(from) => {
                        let end = match &payload {
                            Payload::ScanPage {
                                partition,
                                more: Some(_),
                                ..
                            } => partition.saturating_sub(1),
                            Payload::ScanPage { partition, .. } => *partition,
                            _ => from,
                        };
                        let served = self.served().into_iter();
                        (served.filter(|p| (from..=end).contains(p)).collect(), None)
                    }
                };
                // Checked once read (a read changes nothing): the answer is an error then.
                let now = std::time::Instant::now();
                let c = self.cluster.as_ref().expect("cluster mode");
                let refused = match one_slot {
                    Some((p, slot)) => c.refusal_at(p, slot, now),
                    None => ps
                        .iter()
                        .find_map(|&p| c.refusal_at(p, self.topo.slot_range(p).0, now)),
                };
                if let Some(e) = refused {
                    return (Payload::Err(e), Need::Now);
                }
                let mut need = Need::Now;
                for p in ps {
                    need = need.max(self.need_for(Some(p), false, acks));
                }
                return (payload, need);
            }
        }
        let (payload, wrote) = self.execute_op_inner(op);
        let need = self.need_for(part, wrote, acks);
        (payload, need)
    }

    /// Cluster mode: the partitions a keyless read op reads (None for any other op).
    fn keyless_read(&self, op: &Op) -> Option<KeylessRead> {
        match op {
            Op::DbSize | Op::Keys { .. } | Op::RandomKey => Some(KeylessRead::Led(self.served())),
            Op::Scan { partition, .. } => Some(KeylessRead::Scan(*partition)),
            // Reads are the leader's: a node that follows the slot redirects (its copy may
            // hold writes not committed yet), as it does for a GET.
            Op::SlotKeys {
                partition, slot, ..
            } => Some(KeylessRead::Slot(*partition, *slot)),
            _ => None,
        }
    }

    /// MSET's part for this worker's keys.
    fn mset_here(&mut self, pairs: &Pairs) -> (Payload, bool) {
        self.prefetch_keys(pairs.keys(), false);
        // Disk space in every partition first: a full disk fails the whole part here,
        // before any of it is applied (found by a black-box run: an MSET answered
        // with the error had its first keys set).
        let by_partition = self.by_partition(pairs.iter().map(|(k, v)| (k, (k, v))));
        for (p, ps) in &by_partition {
            let Some(s) = self.store_mut(*p) else {
                return (Payload::Err("ERR partition not available".into()), false);
            };
            if let Err(e) = s.make_room_for(ps, &[]) {
                return (Payload::Err(format!("ERR {e}")), false);
            }
        }
        let mut wrote = false;
        for (k, v) in pairs.iter() {
            let p = self.topo.partition_of(k);
            let Some(s) = self.store_mut(p) else {
                return (Payload::Err("ERR partition not available".into()), wrote);
            };
            if let Err(e) = cmd::multi::mset_part(s, &[(k, v)]) {
                return (Payload::Err(e), wrote);
            }
            wrote = true;
            self.mark_dirty(p);
        }
        (Payload::Ok, wrote)
    }

    /// Runs an op here, then publishes its keyspace events.
    fn execute_op_inner(&mut self, op: Op) -> (Payload, bool) {
        if !self.notify.taps_on {
            return self.execute_op_body(op);
        }
        let (cmd, sets_expiry) = super::notify::op_command(&op);
        let r = self.execute_op_body(op);
        self.notify_changes(cmd, sets_expiry);
        r
    }

    /// A single-key command sent here whole by another worker (or the gRPC service).
    fn run_keyed_op(
        &mut self,
        partition: u32,
        slices: &[&[u8]],
        ctx: &ExecCtx,
        timer: Option<SlowTimer>,
    ) -> (Payload, bool) {
        let Some(spec) = cmd::lookup(slices[0]) else {
            return (Payload::Err("ERR unknown command".into()), false);
        };
        // The worker's reply buffer: a short reply travels inline, so that most allocate
        // nothing here.
        let mut reply = std::mem::take(&mut self.reply_buf);
        reply.clear();
        let Some(store) = self.store_mut(partition) else {
            self.reply_buf = reply;
            return (
                Payload::Err("ERR partition not available on this node".into()),
                false,
            );
        };
        let (effect, found) = exec_counted(spec, slices, store, ctx, &mut reply);
        self.count_lookup(found);
        if found == Some(false)
            && let Some(key) = cmd::key_of(slices)
        {
            self.notify_miss(key);
        }
        let wrote = effect == Effect::Wrote;
        if wrote {
            self.mark_dirty(partition);
        }
        // A single-key command sent here whole (or queued in MULTI) is timed here: its
        // time in INFO commandstats and its latency histogram (its connection's worker
        // counts the call, and leaves the histogram out: `sent_keyed`, `TxRan`); not a
        // call of the gRPC service (`slow_for` names no connection), which INFO
        // commandstats does not count either.
        if self.slow_for.is_some()
            && let Some(t) = &timer
        {
            let name = spec.for_args(slices).name;
            let track = self.config.server.latency_tracking;
            self.stats.cmdstats.record_ran(name, t.micros(), track);
        }
        self.op_ran(timer, || slices.to_vec());
        // Copied, so that the worker keeps its buffer for the next command, unless a huge
        // value made the buffer too large to keep: then it travels itself.
        let bytes = if reply.capacity() <= 64 << 10 {
            let bytes = ReplyBytes::from_slice(&reply);
            self.reply_buf = reply;
            bytes
        } else {
            ReplyBytes::take(&mut reply)
        };
        (Payload::Resp(bytes), wrote)
    }

    fn execute_op_body(&mut self, op: Op) -> (Payload, bool) {
        let ctx = self.exec_ctx();
        // The ops a command runs here are timed for the slow log, each with its arguments
        // (a part of a command over several workers: its name and this worker's keys).
        let timer = Some(self.op_timer());
        match op {
            Op::Keyed { partition, args } => {
                // The arguments as slices on the stack (no allocation for a short command).
                super::worker::with_args(args.len(), args.iter(), |slices| {
                    self.run_keyed_op(partition, slices, &ctx, timer)
                })
            }
            Op::MGet { keys } => {
                self.prefetch_keys(keys.iter().map(|(_, k)| k.as_slice()), true);
                let mut elems = Vec::with_capacity(keys.len());
                let mut one = Vec::with_capacity(1);
                for (pos, k) in &keys {
                    let p = self.topo.partition_of(k);
                    one.clear();
                    match self.store(p) {
                        Some(s) => cmd::multi::mget_part(s, &[k], &ctx, &mut one),
                        None => one.push(b"$-1\r\n".to_vec()),
                    }
                    let item = one.pop().unwrap_or_else(|| b"$-1\r\n".to_vec());
                    let found = !item.starts_with(b"$-1");
                    self.count_lookup(Some(found));
                    if !found {
                        self.notify_miss(k);
                    }
                    elems.push((*pos, item));
                }
                self.op_ran(timer, || words(b"MGET", keys.iter().map(|(_, k)| &k[..])));
                (Payload::Elements(elems), false)
            }
            Op::Del { keys, kind } => {
                self.prefetch_keys(keys.iter().map(|k| k.as_slice()), false);
                // Room for the tombstones in every partition first, as for MSET: a full disk
                // fails the whole command, not the partitions after the first (found by a
                // black-box run: a DEL answered with the error had deleted some keys).
                let by_partition = self.by_partition(keys.iter().map(|k| (&k[..], &k[..])));
                for (p, ks) in &by_partition {
                    let Some(s) = self.store_mut(*p) else {
                        continue;
                    };
                    let present: Vec<&[u8]> = ks.iter().copied().filter(|k| s.exists(k)).collect();
                    if let Err(e) = s.make_room_for(&[], &present) {
                        return (Payload::Err(format!("ERR {e}")), false);
                    }
                }
                let r = self.per_partition(&keys, |s, ks| {
                    cmd::multi::del_part(s, ks).map(|n| (n, n > 0))
                });
                self.op_ran(timer, || words(kind.name(), keys.iter().map(|k| &k[..])));
                r
            }
            Op::Exists { keys, kind } => {
                self.prefetch_keys(keys.iter().map(|k| k.as_slice()), false);
                let mut total = 0;
                for k in &keys {
                    let p = self.topo.partition_of(k);
                    let n = self
                        .store(p)
                        .map_or(0, |s| cmd::multi::exists_part(s, &[k.as_slice()], &ctx));
                    self.count_lookup(Some(n > 0));
                    if n == 0 {
                        self.notify_miss(k);
                    }
                    total += n;
                }
                self.op_ran(timer, || words(kind.name(), keys.iter().map(|k| &k[..])));
                (Payload::Int(total), false)
            }
            Op::MSet { pairs, kind } => {
                let r = self.mset_here(&pairs);
                self.op_ran(timer, || pair_words(kind.name(), &pairs));
                r
            }
            Op::MSetNx { pairs } => {
                // All keys are on this worker: check every partition, then set.
                let r = if self.nx_any_present(&pairs) {
                    (Payload::Int(0), false)
                } else {
                    match self.mset_here(&pairs) {
                        (Payload::Ok, wrote) => (Payload::Int(1), wrote),
                        other => other,
                    }
                };
                self.op_ran(timer, || pair_words(b"MSETNX", &pairs));
                r
            }
            Op::DbSize => {
                let n: usize = self
                    .served()
                    .iter()
                    .filter_map(|&p| self.store(p))
                    .map(Store::len)
                    .sum();
                self.op_ran(timer, || vec![b"DBSIZE"]);
                (Payload::Int(n as i64), false)
            }
            Op::Flush { all } => {
                for p in self.served() {
                    let Some(s) = self.store_mut(p) else { continue };
                    if let Err(e) = s.clear() {
                        return (Payload::Err(format!("ERR {e}")), true);
                    }
                    self.mark_dirty(p);
                }
                self.op_ran(timer, || vec![if all { b"FLUSHALL" } else { b"FLUSHDB" }]);
                (Payload::Ok, true)
            }
            Op::Keys { pattern } => {
                let all = pattern.as_slice() == b"*";
                let mut keys = Vec::new();
                for p in self.served() {
                    let Some(s) = self.store(p) else { continue };
                    let mut c = 0;
                    loop {
                        c = s.scan(c, 1024, |k| {
                            if all || glob_match(&pattern, k, false) {
                                keys.push(k.to_vec());
                            }
                        });
                        if c == 0 {
                            break;
                        }
                    }
                }
                self.op_ran(timer, || vec![b"KEYS", &pattern[..]]);
                (Payload::Keys(keys), false)
            }
            Op::Scan {
                mut partition,
                mut cursor,
                count,
                pattern,
                mut keys,
            } => {
                // Like Redis, COUNT is about the work done, not the keys returned: keys
                // visited, matching or not. A partition finished with budget left hands
                // over to the next one, so small or empty keyspaces take one call.
                let mut budget = count.max(1);
                // This part's slow log entry: the cursor it started at and its budget.
                let (from, count) = (
                    ((cursor << 14) | partition as u64).to_string(),
                    budget.to_string(),
                );
                loop {
                    let serves = self.cluster.is_none() || self.served().contains(&partition);
                    let mut visited = 0;
                    let next = match self.store(partition).filter(|_| serves) {
                        Some(s) => s.scan(cursor, budget, |k| {
                            visited += 1;
                            if pattern
                                .as_deref()
                                .is_none_or(|pat| glob_match(pat, k, false))
                            {
                                keys.push(k.to_vec());
                            }
                        }),
                        None => 0,
                    };
                    budget = budget.saturating_sub(visited);
                    let done = next != 0 || budget == 0 || partition + 1 >= self.topo.partitions;
                    if !done {
                        partition += 1;
                        cursor = 0;
                        if self.topo.worker_of(partition) == self.id {
                            continue;
                        }
                    }
                    self.op_ran(timer, || {
                        let mut w = vec![&b"SCAN"[..], from.as_bytes()];
                        if let Some(p) = &pattern {
                            w.extend([&b"MATCH"[..], p]);
                        }
                        w.extend([&b"COUNT"[..], count.as_bytes()]);
                        w
                    });
                    // Stopped here, or going on at `partition`'s start on its owner.
                    let more = (!done).then_some((budget, pattern));
                    let page = Payload::ScanPage {
                        keys,
                        partition,
                        next,
                        more,
                    };
                    return (page, false);
                }
            }
            Op::RandomKey => {
                let candidates: Vec<u32> = self
                    .served()
                    .into_iter()
                    .filter(|&p| self.store(p).is_some_and(|s| !s.is_empty()))
                    .collect();
                if candidates.is_empty() {
                    return (Payload::Keys(Vec::new()), false);
                }
                // From a random partition on: one holding only expired keys has none to give.
                let first = fastrand::usize(..candidates.len());
                let k = (0..candidates.len())
                    .map(|i| candidates[(first + i) % candidates.len()])
                    .find_map(|p| self.store(p).and_then(Store::random_key));
                self.op_ran(timer, || vec![b"RANDOMKEY"]);
                (Payload::Keys(k.into_iter().collect()), false)
            }
            Op::Stats => (Payload::Stats(Box::new(self.collect_stats())), false),
            Op::LatencyReset { events } => (
                Payload::Keys(
                    self.stats
                        .latency_events
                        .reset(&events)
                        .into_iter()
                        .map(String::into_bytes)
                        .collect(),
                ),
                false,
            ),
            Op::ResetStats => {
                self.stats.reset_counters();
                // The instantaneous rates start again from zero, as Redis's do.
                self.rates = Default::default();
                (Payload::Ok, false)
            }
            Op::ClientList => (Payload::Text(self.client_list()), false),
            Op::Publish { p, forward } => {
                if forward {
                    self.forward_publication(&p);
                }
                (Payload::Int(self.deliver_publication(&p)), false)
            }
            Op::PubSubNames { kind, pattern } => (
                Payload::Keys(self.pubsub.names(kind, pattern.as_deref())),
                false,
            ),
            Op::NumSub { kind, names } => {
                let counts = names
                    .iter()
                    .map(|n| self.pubsub.subscribers(kind, n) as i64)
                    .collect();
                (Payload::Counts(counts), false)
            }
            // The worker's loop goes on with what the pause stopped once it is over (not
            // here: this may run inside a transaction's part).
            Op::PauseChanged { .. } => (Payload::Ok, false),
            Op::SlowLog(op) => (self.slowlog_op(op), false),
            Op::ClientKill(filter) => {
                let mut hits = Vec::new();
                let mut subs = Vec::new();
                for (i, c) in self.conns.iter_mut().enumerate() {
                    let Some(c) = c else { continue };
                    // One killed already (earlier in the same transaction) is gone.
                    if !c.client.closing && filter.matches(&c.client) {
                        c.client.closing = true;
                        hits.push(i + super::worker::FIRST_CONN);
                        // A killed subscriber gets no more messages and counts nowhere,
                        // however long its output takes to go (it may never read it).
                        if let Some(s) = c.client.subs.take() {
                            subs.push((i + super::worker::FIRST_CONN, s));
                        }
                    }
                }
                for (t, s) in subs {
                    self.forget_subscriptions(t, &s);
                }
                // A closing connection is only closed when its worker flushes it; without
                // this an idle victim stayed connected until it sent something.
                for &t in &hits {
                    self.mark_conn_dirty(t);
                }
                self.killed.extend_from_slice(&hits);
                (Payload::Int(hits.len() as i64), false)
            }
            Op::ConfigSet { version, config } => {
                self.take_config(version, &config);
                (Payload::Ok, false)
            }
            Op::Repl(r) => {
                let (payload, need) = self.repl_op(r);
                (payload, need != Need::Now)
            }
            // Parked by the message loop; run in place only in a transaction, where it does
            // not block.
            Op::Wait { partition, .. } => {
                let lsn = self.store(partition).map_or(0, |s| s.log_end());
                (Payload::Int(self.acked_replicas(partition, lsn)), false)
            }
            // Taken by the message loop (`msetnx`); never executed in place.
            Op::Move { kind, src, dst } => {
                let r = self.run_move(kind, &src, &dst);
                use super::moves::MoveKind;
                self.op_ran(timer, || match kind {
                    MoveKind::Rename => vec![b"RENAME", &src, &dst],
                    MoveKind::RenameNx => vec![b"RENAMENX", &src, &dst],
                    MoveKind::Copy { replace: false } => vec![b"COPY", &src, &dst],
                    MoveKind::Copy { replace: true } => vec![b"COPY", &src, &dst, b"REPLACE"],
                });
                r
            }
            Op::Combine(mut c) => {
                let argv = std::mem::take(&mut c.argv);
                let r = self.run_combine(*c);
                self.op_ran(timer, || argv.iter().map(|a| &a[..]).collect());
                r
            }
            Op::Versions { keys } => {
                let vs = keys
                    .into_iter()
                    .map(|(i, k)| (i, self.version_of(&k)))
                    .collect();
                (Payload::Versions(vs), false)
            }
            Op::NxStep { .. }
            | Op::NxDecide { .. }
            | Op::GroupStep { .. }
            | Op::SeqVisit(_)
            | Op::Tx(_)
            | Op::MoveStep { .. } => (
                Payload::Err("ERR internal: MSETNX step out of place".into()),
                false,
            ),
            Op::SlotKeys {
                partition,
                slot,
                max,
            } => {
                let mut keys = Vec::new();
                if let Some(s) = self.store(partition) {
                    let mut c = 0;
                    loop {
                        c = s.scan(c, 1024, |k| {
                            if keys.len() < max && crate::slot::key_slot(k) == slot {
                                keys.push(k.to_vec());
                            }
                        });
                        if c == 0 || keys.len() >= max {
                            break;
                        }
                    }
                }
                (Payload::Keys(keys), false)
            }
            Op::Save => {
                // Everything written so far, on disk now (with fsync always it already is).
                for p in self.owned.clone() {
                    if let Some(s) = self.store_mut(p)
                        && let Err(e) = s.sync()
                    {
                        return (Payload::Err(format!("ERR partition {p}: {e}")), false);
                    }
                }
                (Payload::Ok, false)
            }
            Op::Rewrite => {
                for p in self.owned.clone() {
                    if let Some(s) = self.store_mut(p)
                        && let Err(e) = s.roll()
                    {
                        return (Payload::Err(format!("ERR {e}")), false);
                    }
                    let busy = self.merging(p);
                    let dead = self.store(p).map_or(0, |s| s.closed_stats().1);
                    // (In cluster mode a merge also waits for the high watermark.)
                    if !self.start_merge(p) && !busy && dead > 0 && self.cluster.is_none() {
                        // Asked for by hand: say why nothing happens.
                        log::info!(
                            "partition {p}: BGREWRITEAOF: no merge started: the free space ({} bytes) has no room for the live data of any run of closed segments with dead bytes ({dead} dead)",
                            simplekv_engine::free_space(&self.config.storage.dir).unwrap_or(0)
                        );
                    }
                }
                (Payload::Ok, false)
            }
        }
    }

    /// `items` by the partition of their key, in the order each partition first appears.
    fn by_partition<'a, T>(
        &self,
        items: impl Iterator<Item = (&'a [u8], T)>,
    ) -> Vec<(u32, Vec<T>)> {
        let mut out: Vec<(u32, Vec<T>)> = Vec::new();
        for (k, item) in items {
            let p = self.topo.partition_of(k);
            match out.iter_mut().find(|(q, _)| *q == p) {
                Some((_, v)) => v.push(item),
                None => out.push((p, vec![item])),
            }
        }
        out
    }

    /// Runs `f` once per partition over the keys it owns, summing counts.
    fn per_partition(
        &mut self,
        keys: &[Vec<u8>],
        mut f: impl FnMut(&mut Store, &[&[u8]]) -> Result<(i64, bool), String>,
    ) -> (Payload, bool) {
        let by_part = self.by_partition(keys.iter().map(|k| (&k[..], &k[..])));
        let mut total = 0;
        let mut wrote = false;
        for (p, ks) in by_part {
            let Some(s) = self.store_mut(p) else { continue };
            match f(s, &ks) {
                Ok((n, w)) => {
                    total += n;
                    if w {
                        wrote = true;
                        self.mark_dirty(p);
                    }
                }
                Err(e) => return (Payload::Err(e), wrote),
            }
        }
        (Payload::Int(total), wrote)
    }

    /// Applies run-time settings after CONFIG SET.
    pub fn apply_config(&mut self) {
        self.limits = super::worker::limits_of(&self.config);
        // A shorter slow log drops its oldest entries for good, as Redis's.
        self.slowlog
            .truncate(self.config.server.slowlog_max_len as usize);
        if let Some(c) = self.cluster.as_mut() {
            c.min_isr = self.config.cluster.min_insync_replicas as usize;
            c.default_acks = self.config.cluster.acks;
        }
        if let Ok(level) = self
            .config
            .server
            .log_level
            .to_string()
            .parse::<log::LevelFilter>()
        {
            log::set_max_level(level);
        }
        let d = self.durability();
        let min_free = self.config.storage.min_free_space;
        let (max_key, max_value) = (
            self.config.limits.max_key_len as usize,
            self.config.limits.max_value_len as usize,
        );
        for p in self.owned.clone() {
            if let Some(s) = self.store_mut(p) {
                s.set_durability(d);
                s.set_limits(max_key, max_value);
                s.set_min_free_space(min_free);
            }
        }
        self.configure_journal(false);
        self.configure_notifications();
    }

    /// Sends `op` to every worker (running the local part now) and gathers with `gather`.
    pub(super) fn broadcast(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        gather: Gather,
        make: impl Fn() -> Op,
    ) {
        let all: Vec<usize> = (0..self.peers.len()).collect();
        self.broadcast_to(token, out, client, gather, &all, make)
    }

    /// `broadcast` to some of the workers (`gather` waits for as many parts; inside a
    /// transaction, every worker). A PUBLISH's parts count as run once sent
    /// (`Worker::cmd_publish`).
    pub(super) fn broadcast_to(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        gather: Gather,
        workers: &[usize],
        make: impl Fn() -> Op,
    ) {
        if self.tx_plan.is_some() {
            let ops = (0..self.peers.len()).map(|w| (w, make())).collect();
            return self.plan_ops(gather, ops);
        }
        let mut slot = Slot::Waiting(Box::new(Pending { gather, hold: None }));
        let seq = out.next_seq();
        let mut need = Need::Now;
        let acks = self.acks_of(client);
        for &w in workers {
            if w == self.id {
                let (payload, n) = self.execute_op(make(), acks);
                need = need.max(n);
                fill_slot(&mut slot, w as u32, payload);
            } else {
                let op = make();
                let ran_at_send = matches!(op, Op::Publish { .. });
                let reply_to = self.reply_to(token, client, out, seq, w as u32);
                if ran_at_send {
                    out.ran();
                }
                self.send_req(w, Request { reply_to, op, acks });
            }
        }
        self.push_gathered(out, slot, need);
    }

    /// A keyspace-wide command (DBSIZE, FLUSHALL, KEYS, RANDOMKEY): on every worker, and in
    /// standalone mode run whole (`run_whole`), so that it sees or clears the keyspace of one
    /// moment, as in Redis. In cluster mode a node's partitions are independent (each slot's
    /// writes are ordered on its own), as in Redis Cluster.
    fn broadcast_whole(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        gather: Gather,
        make: impl Fn() -> Op,
    ) {
        if self.cluster.is_some() || self.peers.len() < 2 || self.tx_plan.is_some() {
            return self.broadcast(token, out, client, gather, make);
        }
        let parts = (0..self.peers.len()).map(|w| (w, make())).collect();
        self.run_whole(token, out, client, gather, parts);
    }

    /// While EXEC plans a queued server command (`tx_plan` set, `multi::plan`): the ops the
    /// command would run here or send (by worker) and the gather of their payloads, for the
    /// transaction's parts to run.
    pub(super) fn plan_ops(&mut self, gather: Gather, ops: Vec<(usize, Op)>) {
        if let Some(plan) = self.tx_plan.as_mut() {
            plan.ops = ops;
            plan.gather = Some(gather);
        }
    }

    /// A copy of the settings CONFIG SET made, validated and numbered by the worker that took
    /// it; an older copy arriving after a newer one changes nothing.
    fn take_config(&mut self, version: u64, config: &std::sync::Arc<simplekv_conf::Config>) {
        if version > self.config_version {
            self.config_version = version;
            self.config = (**config).clone();
            self.apply_config();
        }
    }

    pub(super) fn collect_gather(&self, finish: Finisher) -> Gather {
        self.collect_gather_of(finish, self.peers.len())
    }

    /// A gather of the parts of `workers` workers (a part for each worker, those not asked
    /// left `Ok`).
    pub(super) fn collect_gather_of(&self, finish: Finisher, workers: usize) -> Gather {
        Gather::Collect {
            parts: vec![Payload::Ok; self.peers.len()],
            missing: workers,
            finish,
        }
    }

    pub(super) fn dispatch_server(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        spec: &'static CommandSpec,
        args: &[&[u8]],
    ) {
        // The slow log times a server command as a whole on this worker; its shares on
        // the others (INFO's statistics, CONFIG SET's copy) are not commands of their own.
        // The keyspace-wide ones, BITOP and LCS are logged by their parts, where they ran,
        // when they went to other workers (`Worker::run_one`; BITOP's and LCS's by the
        // worker that computes); RENAME and COPY too when they ran whole on another worker,
        // but as a whole when they went in steps between workers (which are not timed on
        // their own).
        self.whole_entry = match spec.name {
            "keys" | "scan" | "dbsize" | "randomkey" | "flushdb" | "flushall" | "bitop" | "lcs" => {
                WholeEntry::UnlessAway
            }
            "rename" | "renamenx" | "copy" => WholeEntry::UnlessSentWhole,
            _ => WholeEntry::Always,
        };
        let mut r = Vec::new();
        match spec.name {
            "ping" if client.subs.is_some() && args.len() <= 2 => {
                super::pubsub::write_pong(&mut r, args.get(1).copied())
            }
            "ping" => match args.len() {
                1 => r.extend_from_slice(b"+PONG\r\n"),
                2 => write_bulk(&mut r, args[1]),
                _ => return err(out, "ERR wrong number of arguments for 'ping' command"),
            },
            "echo" => write_bulk(&mut r, args[1]),
            "quit" => {
                write_ok(&mut r);
                client.closing = true;
                // Gone for publishers at once, however long its last replies take to go.
                self.drop_subscriptions(token, client);
            }
            "reset" => {
                // As Redis: the connection's state as a new connection's (the transaction,
                // watches and name dropped, authentication needed again where a password is
                // set), replies on again (CLIENT REPLY), and simplekv's CLIENT ACKS back to
                // the node's default.
                // As Redis: OFF ends (RESET answers), a SKIP that covers RESET itself holds.
                out.silent &= out.reply_mode != ReplyMode::Off;
                out.reply_mode = ReplyMode::On;
                client.tx = None;
                client.watched.clear();
                client.authed = self.config.server.requirepass.is_none();
                client.acks = None;
                client.name = None;
                self.stop_monitoring(token, client);
                self.drop_subscriptions(token, client);
                write_simple(&mut r, b"RESET");
            }
            "select" => match crate::resp::parse::string2ll(args[1]) {
                Some(0) => write_ok(&mut r),
                // Redis parses the index as an int first.
                Some(n) if i32::try_from(n).is_err() => {
                    return err(
                        out,
                        "ERR value is out of range, value must between -2147483648 and 2147483647",
                    );
                }
                Some(_) => return err(out, "ERR DB index is out of range"),
                None => return err(out, "ERR value is not an integer or out of range"),
            },
            "auth" => return self.cmd_auth(out, client, args),
            "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
            | "sunsubscribe" => {
                return self.cmd_subscription(token, out, client, spec.name, args);
            }
            "publish" | "spublish" => return self.cmd_publish(token, out, client, spec.name, args),
            "pubsub" => return self.cmd_pubsub(token, out, client, args),
            "monitor" => {
                if self.tx_plan.is_some() {
                    // As Redis: EXEC expects one reply per command, a stream cannot be one.
                    return err(out, "ERR MONITOR isn't allowed for DENY BLOCKING client");
                }
                if client.monitor {
                    // Redis ignores a second MONITOR: no reply.
                    out.silent = true;
                } else {
                    client.monitor = true;
                    self.shared.monitors.add(self.id);
                    self.monitoring.push(token);
                }
                write_ok(&mut r);
            }
            "rename" | "renamenx" | "copy" => {
                return self.cmd_move(token, out, client, spec.name, args);
            }
            "bitop" | "lcs" => return self.cmd_combine(token, out, client, spec.name, args),
            "hello" => return self.cmd_hello(out, client, args),
            "time" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                write_array_len(&mut r, 2);
                write_bulk(&mut r, now.as_secs().to_string().as_bytes());
                write_bulk(&mut r, now.subsec_micros().to_string().as_bytes());
            }
            "role" => {
                let ends: Vec<(u32, u64)> = self
                    .owned
                    .iter()
                    .filter_map(|&p| self.store(p).map(|s| (p, s.log_end())))
                    .collect();
                super::cluster_cmds::role_reply(
                    self.cluster.as_ref().map(|c| c.routes.as_ref()),
                    &ends,
                    &mut r,
                );
            }
            "cluster" => return self.cmd_cluster(token, out, client, args),
            "wait" => {
                let Some(n) = crate::resp::parse::string2ll(args[1]) else {
                    return err(out, "ERR value is not an integer or out of range");
                };
                let Some(t) = crate::resp::parse::string2ll(args[2]) else {
                    return err(out, "ERR timeout is not an integer or out of range");
                };
                if t < 0 {
                    return err(out, "ERR timeout is negative");
                }
                // Standalone: no replicas to wait for. As Redis without replicas, a WAIT for
                // one or more blocks until its timeout (for good with 0) and answers 0; inside
                // MULTI, or for none, it answers at once. Cluster mode: the followers of the
                // partition this connection wrote last.
                if self.cluster.is_none() {
                    if n <= 0 || self.tx_plan.is_some() {
                        write_integer(&mut r, 0);
                        return out.push_reply(&r);
                    }
                    let seq = out.push_slot(Slot::Waiting(Box::new(Pending {
                        gather: Gather::Single(None),
                        hold: None,
                    })));
                    let reply_to = self.reply_to(token, client, out, seq, 0);
                    return self.park_wait(reply_to, 0, n, t as u64);
                }
                let Some(p) = client.last_write else {
                    write_integer(&mut r, 0);
                    return out.push_reply(&r);
                };
                let owner = self.topo.worker_of(p);
                if self.tx_plan.is_some() {
                    // Inside MULTI, as in Redis, WAIT does not block: its op answers how many
                    // replicas have the partition's records so far (`acked_replicas`).
                    let op = Op::Wait {
                        partition: p,
                        numreplicas: n,
                        timeout_ms: t as u64,
                    };
                    return self.plan_ops(Gather::Single(None), vec![(owner, op)]);
                }
                let seq = out.push_slot(Slot::Waiting(Box::new(Pending {
                    gather: Gather::Single(None),
                    hold: None,
                })));
                let reply_to = self.reply_to(token, client, out, seq, 0);
                if owner == self.id {
                    self.park_wait(reply_to, p, n, t as u64);
                } else {
                    let acks = self.acks_of(client);
                    self.send_req(
                        owner,
                        Request {
                            reply_to,
                            op: Op::Wait {
                                partition: p,
                                numreplicas: n,
                                timeout_ms: t as u64,
                            },
                            acks,
                        },
                    );
                }
                return;
            }
            "slowlog" => return self.slowlog_command(token, out, client, args),
            "lastsave" => {
                write_integer(&mut r, self.shared.last_save.load(Ordering::Relaxed) as i64);
            }
            "save" | "bgsave" => {
                // Every write is in the log already; a save makes all of it durable now
                // (fsync), whatever storage.fsync says. BGSAVE does the same: the fsyncs take
                // each worker a moment, there is no snapshot to fork for.
                // Inside a transaction, Redis answers that it is scheduled.
                let started = match self.tx_plan {
                    Some(_) => "Background saving scheduled",
                    None => "Background saving started",
                };
                let status = if spec.name == "save" {
                    "OK"
                } else {
                    match &args[1..] {
                        [] => started,
                        [a] if a.eq_ignore_ascii_case(b"schedule") => started,
                        _ => return err(out, "ERR syntax error"),
                    }
                };
                let g = self.collect_gather(Finisher::Saved {
                    status,
                    last_save: self.shared.last_save.clone(),
                });
                return self.broadcast(token, out, client, g, || Op::Save);
            }
            "readonly" | "readwrite" if self.cluster.is_none() => {
                return err(out, "ERR This instance has cluster support disabled");
            }
            "readonly" | "readwrite" => write_ok(&mut r),
            "dbsize" => {
                let g = Gather::Sum {
                    total: 0,
                    missing: self.peers.len(),
                    error: None,
                };
                return self.broadcast_whole(token, out, client, g, || Op::DbSize);
            }
            "flushdb" | "flushall" => {
                if let Some(e) = flush_args_error(args) {
                    return err(out, e);
                }
                let g = Gather::AllOk {
                    missing: self.peers.len(),
                    error: None,
                };
                let all = spec.name == "flushall";
                return self.broadcast_whole(token, out, client, g, || Op::Flush { all });
            }
            "keys" => {
                let pattern = args[1].to_vec();
                let g = self.collect_gather(Finisher::Keys);
                return self.broadcast_whole(token, out, client, g, || Op::Keys {
                    pattern: pattern.clone(),
                });
            }
            "randomkey" => {
                let g = self.collect_gather(Finisher::RandomKey);
                return self.broadcast_whole(token, out, client, g, || Op::RandomKey);
            }
            "scan" => return self.cmd_scan(token, out, client, args),
            "info" => {
                let sections = args[1..].iter().map(|a| lower(a)).collect();
                let g = self.collect_gather(Finisher::Info { sections });
                return self.broadcast(token, out, client, g, || Op::Stats);
            }
            "bgrewriteaof" => {
                // Every partition rolls its log and merges it in the background.
                let g = self.collect_gather(Finisher::Status(match self.tx_plan {
                    Some(_) => "Background append only file rewriting scheduled",
                    None => "Background append only file rewriting started",
                }));
                return self.broadcast(token, out, client, g, || Op::Rewrite);
            }
            "config" => return self.cmd_config(token, out, client, args),
            "latency" => match lower(args[1]).as_str() {
                "histogram" => {
                    let names = args[2..].iter().map(|a| lower(a)).collect();
                    let g = self.collect_gather(Finisher::LatencyHistogram { names });
                    return self.broadcast(token, out, client, g, || Op::Stats);
                }
                sub @ ("latest" | "doctor" | "history" | "graph") => {
                    let sub = match sub {
                        "latest" => "latest",
                        "doctor" => "doctor",
                        "history" => "history",
                        _ => "graph",
                    };
                    let event = args
                        .get(2)
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .unwrap_or_default();
                    let threshold = self.config.server.latency_monitor_threshold;
                    let g = self.collect_gather(Finisher::LatencyMonitor {
                        sub,
                        event,
                        threshold,
                    });
                    return self.broadcast(token, out, client, g, || Op::Stats);
                }
                "reset" => {
                    let events: Vec<String> = args[2..]
                        .iter()
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .collect();
                    let g = self.collect_gather(Finisher::DistinctCount);
                    return self.broadcast(token, out, client, g, || Op::LatencyReset {
                        events: events.clone(),
                    });
                }
                "help" => {
                    let lines = [
                        "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                        "DOCTOR",
                        "    Return a human readable latency analysis report.",
                        "GRAPH <event>",
                        "    Return an ASCII latency graph for the <event> class.",
                        "HISTORY <event>",
                        "    Return time-latency samples for the <event> class.",
                        "LATEST",
                        "    Return the latest latency samples for all events.",
                        "RESET [<event> ...]",
                        "    Reset latency data of one or more <event> classes.",
                        "    (default: reset all data for all event classes)",
                        "HISTOGRAM [COMMAND ...]",
                        "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
                        "    If no commands are specified then all histograms are replied.",
                    ];
                    write_help(&mut r, &lines);
                }
                // Redis 7's text (arity errors were answered by dispatch).
                _ => return unknown_subcommand(out, "latency", args[1]),
            },
            "client" => return self.cmd_client(token, out, client, args),
            "command" => return super::commands::cmd_command(out, args),
            "shutdown" => {
                // As Redis 7's shutdownCommand. ABORT cancels a pending shutdown and must never
                // start one (it used to shut the server down); there is no pending shutdown to
                // cancel here, since a shutdown starts at once.
                let (mut save, mut nosave, mut other, mut abort) = (false, false, false, false);
                for a in &args[1..] {
                    match lower(a).as_str() {
                        "save" => save = true,
                        "nosave" => nosave = true,
                        "now" | "force" => other = true,
                        "abort" => abort = true,
                        _ => return err(out, "ERR syntax error"),
                    }
                }
                if (abort && (save || nosave || other)) || (save && nosave) {
                    return err(out, "ERR syntax error");
                }
                if abort {
                    return err(out, "ERR No shutdown in progress.");
                }
                log::warn!(
                    "SHUTDOWN requested by client {} ({})",
                    client.id,
                    client.addr
                );
                client.closing = true;
                if self.cluster.is_some() {
                    // The node moves this node's leaderships away first (controlled shutdown).
                    self.shared
                        .shutdown_requested
                        .store(true, Ordering::Release);
                    return;
                }
                self.shared.shutdown.store(true, Ordering::Release);
                for p in &self.peers {
                    let _ = p.waker.wake();
                }
                return;
            }
            // Their subcommands with a key ran as keyed commands (see `dispatch`).
            "object" | "memory" => return introspection_help(out, spec.name, args[1]),
            _ => {
                return err(
                    out,
                    &format!("ERR command '{}' is not supported by simplekv", spec.name),
                );
            }
        }
        out.push_reply(&r);
    }

    /// CLUSTER subcommands, in Redis Cluster's formats (see `cluster_cmds`).
    fn cmd_cluster(&mut self, token: usize, out: &mut Output, client: &Client, args: &[&[u8]]) {
        use super::cluster_cmds as cc;
        let sub = lower(args[1]);
        let mut r = Vec::new();
        // (A subcommand it does not know was refused by `dispatch`, cluster mode or not.)
        if sub == "help" {
            write_help(
                &mut r,
                &[
                    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "COUNTKEYSINSLOT <slot>",
                    "    Return the number of keys in <slot>.",
                    "GETKEYSINSLOT <slot> <count>",
                    "    Return key names stored by current node in a slot.",
                    "INFO",
                    "    Return information about the cluster.",
                    "KEYSLOT <key>",
                    "    Return the hash slot for <key> (also without cluster mode).",
                    "MYID",
                    "    Return the node id.",
                    "NODES",
                    "    Return cluster configuration seen by node. Output format:",
                    "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
                    "SHARDS",
                    "    Return information about slot range mappings and the nodes associated with them.",
                    "SLOTS",
                    "    Return information about slots range mappings. Each range is made of:",
                    "    start, end, master and replicas IP addresses, ports and ids",
                ],
            );
            return out.push_reply(&r);
        }
        if sub == "keyslot" && args.len() == 3 {
            write_integer(&mut r, crate::slot::key_slot(args[2]) as i64);
            return out.push_reply(&r);
        }
        let Some(rt) = self.cluster.as_ref().map(|c| c.routes.clone()) else {
            return err(out, "ERR This instance has cluster support disabled");
        };
        match (sub.as_str(), args.len()) {
            ("slots", 2) => cc::cluster_slots(&rt, &mut r),
            ("shards", 2) => cc::cluster_shards(&rt, &mut r),
            ("nodes", 2) => write_bulk(&mut r, cc::cluster_nodes(&rt).as_bytes()),
            ("info", 2) => write_bulk(&mut r, cc::cluster_info(&rt).as_bytes()),
            ("myid", 2) => write_bulk(&mut r, cc::myid(&rt).as_bytes()),
            ("countkeysinslot" | "getkeysinslot", _) => {
                let count = sub == "getkeysinslot";
                if args.len() != if count { 4 } else { 3 } {
                    return err(
                        out,
                        &format!("ERR wrong number of arguments for 'cluster|{sub}' command"),
                    );
                }
                let slot = match crate::resp::parse::string2ll(args[2]) {
                    Some(s) if (0..16384).contains(&s) => s as u16,
                    _ => return err(out, "ERR Invalid slot"),
                };
                let max = if count {
                    match crate::resp::parse::string2ll(args[3]) {
                        Some(n) if n >= 0 => n as usize,
                        _ => return err(out, "ERR Invalid number of keys"),
                    }
                } else {
                    usize::MAX
                };
                let p = self.topo.partition_of_slot(slot);
                let owner = self.topo.worker_of(p);
                let finish = if count {
                    Finisher::Keys
                } else {
                    Finisher::Count
                };
                let gather = Gather::Collect {
                    parts: vec![Payload::Ok],
                    missing: 1,
                    finish,
                };
                let op = Op::SlotKeys {
                    partition: p,
                    slot,
                    max,
                };
                if self.tx_plan.is_some() {
                    return self.plan_ops(gather, vec![(owner, op)]);
                }
                let mut slot_reply = Slot::Waiting(Box::new(Pending { hold: None, gather }));
                if owner == self.id {
                    let (payload, need) = self.execute_op(op, self.acks_of(client));
                    fill_slot(&mut slot_reply, 0, payload);
                    return self.push_gathered(out, slot_reply, need);
                }
                let seq = out.push_slot(slot_reply);
                let reply_to = self.reply_to(token, client, out, seq, 0);
                let acks = self.acks_of(client);
                self.send_req(owner, Request { reply_to, op, acks });
                return;
            }
            _ => return unknown_subcommand(out, "cluster", args[1]),
        }
        out.push_reply(&r);
    }

    fn cmd_auth(&mut self, out: &mut Output, client: &mut Client, args: &[&[u8]]) {
        let (user, pass) = match args.len() {
            2 => (None, args[1]),
            3 => (Some(args[1]), args[2]),
            _ => return err(out, "ERR syntax error"),
        };
        match &self.config.server.requirepass {
            // Without a password the default user takes any (as `HELLO ... AUTH` does);
            // only the one-argument form is refused, with Redis's hint.
            None if user == Some(b"default".as_slice()) => {
                client.authed = true;
                out.push_reply(b"+OK\r\n");
            }
            None if user.is_some() => err(
                out,
                "WRONGPASS invalid username-password pair or user is disabled.",
            ),
            None => err(
                out,
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            Some(pw) => {
                if user.is_none_or(|u| u == b"default") && pass == pw.as_bytes() {
                    client.authed = true;
                    out.push_reply(b"+OK\r\n");
                } else {
                    err(
                        out,
                        "WRONGPASS invalid username-password pair or user is disabled.",
                    );
                }
            }
        }
    }

    fn cmd_hello(&mut self, out: &mut Output, client: &mut Client, args: &[&[u8]]) {
        let mut i = 1;
        if args.len() > 1 {
            match crate::resp::parse::string2ll(args[1]) {
                Some(2) => {}
                Some(_) => {
                    return err(
                        out,
                        "NOPROTO unsupported protocol version (this server speaks RESP2 only)",
                    );
                }
                None => {
                    return err(
                        out,
                        "ERR Protocol version is not an integer or out of range",
                    );
                }
            }
            i = 2;
        }
        while i < args.len() {
            match lower(args[i]).as_str() {
                "auth" if i + 2 < args.len() => {
                    // Only the default user exists (as AUTH checks): HELLO used to accept the
                    // password under any user name. Without a password the default user takes
                    // any (Redis's nopass).
                    let (user, pass) = (args[i + 1], args[i + 2]);
                    let pw = self.config.server.requirepass.as_deref();
                    if user != b"default" || pw.is_some_and(|pw| pass != pw.as_bytes()) {
                        return err(
                            out,
                            "WRONGPASS invalid username-password pair or user is disabled.",
                        );
                    }
                    client.authed = true;
                    i += 3;
                }
                "setname" if i + 1 < args.len() => {
                    // Checked as CLIENT SETNAME does: an unchecked name with a space broke the
                    // one-line-per-client format of CLIENT LIST.
                    if !set_client_name(out, client, args[i + 1]) {
                        return;
                    }
                    i += 2;
                }
                _ => {
                    return err(
                        out,
                        &format!(
                            "ERR Syntax error in HELLO option '{}'",
                            String::from_utf8_lossy(args[i])
                        ),
                    );
                }
            }
        }
        if !client.authed {
            return err(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        let mut r = Vec::new();
        write_array_len(&mut r, 14);
        write_bulk(&mut r, b"server");
        write_bulk(&mut r, b"simplekv");
        write_bulk(&mut r, b"version");
        write_bulk(&mut r, super::REDIS_COMPAT_VERSION.as_bytes());
        write_bulk(&mut r, b"proto");
        write_integer(&mut r, 2);
        write_bulk(&mut r, b"id");
        write_integer(&mut r, client.id as i64);
        write_bulk(&mut r, b"mode");
        write_bulk(&mut r, b"standalone");
        write_bulk(&mut r, b"role");
        write_bulk(&mut r, b"master");
        write_bulk(&mut r, b"modules");
        write_array_len(&mut r, 0);
        out.push_reply(&r);
    }

    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]. The cursor packs the partition in its
    /// low 14 bits and the partition's own cursor above them; one call visits up to COUNT
    /// keys, going on into the next partitions (and workers) while that budget lasts.
    fn cmd_scan(&mut self, token: usize, out: &mut Output, client: &Client, args: &[&[u8]]) {
        let Some(cursor) = parse_scan_cursor(args[1]) else {
            return err(out, "ERR invalid cursor");
        };
        let mut count = 10usize;
        let mut pattern = None;
        let mut type_ok = true;
        let mut i = 2;
        while i < args.len() {
            let opt = lower(args[i]);
            if i + 1 >= args.len() {
                return err(out, "ERR syntax error");
            }
            match opt.as_str() {
                "count" => match crate::resp::parse::string2ll(args[i + 1]) {
                    Some(n) if n >= 1 => count = n as usize,
                    Some(_) => return err(out, "ERR syntax error"),
                    None => return err(out, "ERR value is not an integer or out of range"),
                },
                "match" => {
                    if args[i + 1] != b"*" {
                        pattern = Some(args[i + 1].to_vec());
                    }
                }
                "type" => type_ok = lower(args[i + 1]) == "string",
                _ => return err(out, "ERR syntax error"),
            }
            i += 2;
        }
        let partitions = self.topo.partitions as u64;
        let partition = (cursor & 0x3fff) as u32;
        if partition as u64 >= partitions || !type_ok {
            let mut r = Vec::new();
            write_array_len(&mut r, 2);
            write_bulk(&mut r, b"0");
            write_array_len(&mut r, 0);
            return out.push_reply(&r);
        }
        let op = Op::Scan {
            partition,
            cursor: cursor >> 14,
            count,
            pattern,
            keys: Vec::new(),
        };
        let owner = self.topo.worker_of(partition);
        let gather = Gather::Collect {
            parts: vec![Payload::Ok],
            missing: 1,
            finish: Finisher::Scan {
                partition,
                partitions: self.topo.partitions,
            },
        };
        if self.tx_plan.is_some() {
            // In a transaction the page stops where the partitions of the next worker begin
            // (its cursor points there), a shorter page as COUNT allows.
            return self.plan_ops(gather, vec![(owner, op)]);
        }
        let mut slot = Slot::Waiting(Box::new(Pending { hold: None, gather }));
        if owner == self.id {
            let acks = self.acks_of(client);
            let (payload, need) = self.execute_op(op, acks);
            if need == Need::Now && matches!(payload, Payload::ScanPage { more: Some(_), .. }) {
                let seq = out.next_seq();
                let reply_to = self.reply_to(token, client, out, seq, 0);
                let _ = self.forward_scan(reply_to, acks, payload, need);
            } else {
                fill_slot(&mut slot, 0, payload);
                return self.push_gathered(out, slot, need);
            }
        } else {
            let seq = out.next_seq();
            let reply_to = self.reply_to(token, client, out, seq, 0);
            let acks = self.acks_of(client);
            self.send_req(owner, Request { reply_to, op, acks });
        }
        out.push_slot(slot);
    }

    /// A SCAN page that goes on in another worker's partition is sent there (the last
    /// worker answers the same reply slot); any other payload is the answer itself. So is a
    /// page that must wait before it is answered (`need`: cluster mode, keys of writes not
    /// committed yet): it stops where the next worker's partitions begin, and its cursor
    /// goes on from there.
    pub fn forward_scan(
        &mut self,
        reply_to: ReplyTo,
        acks: simplekv_conf::Acks,
        payload: Payload,
        need: Need,
    ) -> Option<Payload> {
        if need != Need::Now {
            return Some(payload);
        }
        match payload {
            Payload::ScanPage {
                keys,
                partition,
                more: Some((budget, pattern)),
                ..
            } => {
                let op = Op::Scan {
                    partition,
                    cursor: 0,
                    count: budget,
                    pattern,
                    keys,
                };
                self.send_req(
                    self.topo.worker_of(partition),
                    Request { reply_to, op, acks },
                );
                None
            }
            other => Some(other),
        }
    }

    fn cmd_config(&mut self, token: usize, out: &mut Output, client: &Client, args: &[&[u8]]) {
        let sub = lower(args[1]);
        match sub.as_str() {
            "get" if args.len() >= 3 => {
                let pairs = self.config.redis_config_pairs();
                let mut hits: Vec<(String, String)> = Vec::new();
                for pat in &args[2..] {
                    let pat_l = lower(pat);
                    let literal = !pat.iter().any(|b| b"[*?".contains(b));
                    for (k, v) in &pairs {
                        if glob_match(pat_l.as_bytes(), k.as_bytes(), true)
                            && !hits.iter().any(|(h, _)| h.eq_ignore_ascii_case(k))
                        {
                            // A name asked for without wildcards comes back as it was
                            // written (`CONFIG GET PORT` gives "PORT"), as in Redis, so a
                            // client reading the reply into a map finds it under its name.
                            let name = if literal {
                                String::from_utf8_lossy(pat).into_owned()
                            } else {
                                k.clone()
                            };
                            hits.push((name, v.clone()));
                        }
                    }
                    // Dotted simplekv names work too.
                    if let Some(v) = self.config.get(&String::from_utf8_lossy(pat))
                        && !hits.iter().any(|(h, _)| h.eq_ignore_ascii_case(&pat_l))
                    {
                        hits.push((pat_l.clone(), v));
                    }
                }
                let mut r = Vec::new();
                write_array_len(&mut r, hits.len() * 2);
                for (k, v) in hits {
                    write_bulk(&mut r, k.as_bytes());
                    write_bulk(&mut r, v.as_bytes());
                }
                out.push_reply(&r);
            }
            // Arity (4 or more) was checked by dispatch; name/value pairs must be complete
            // (Redis answers a syntax error for a name without its value).
            "set" if !args.len().is_multiple_of(2) => err(out, "ERR syntax error"),
            "set" => {
                // Validate on a copy first so a bad value changes nothing anywhere. The
                // conf crate checks every name before any value and words the reply as Redis
                // does (unknown, immutable, duplicate, then invalid values).
                let changes: Vec<(String, String)> = args[2..]
                    .chunks(2)
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(kv[0]).into_owned(),
                            String::from_utf8_lossy(kv[1]).into_owned(),
                        )
                    })
                    .collect();
                // Applied to the one canonical copy, under its lock, and numbered: every
                // worker then takes the newest copy it has been sent, so two CONFIG SETs from
                // connections on different workers end with the same settings everywhere
                // (each worker applying both, in the order they reached it, did not).
                let (version, config) = {
                    let mut canon = self.shared.config.lock().unwrap_or_else(|e| e.into_inner());
                    let mut next = (*canon.1).clone();
                    if let Err(e) = next.set_runtime_many(changes.iter().map(|(n, v)| (n, v))) {
                        return err(out, &e.config_set_reply());
                    }
                    let floor = next.storage.min_free_space;
                    if floor != canon.1.storage.min_free_space
                        && let Some(w) = super::small_floor_warning(floor, self.topo.partitions)
                    {
                        log::warn!("CONFIG SET: {w}");
                    }
                    canon.0 += 1;
                    canon.1 = std::sync::Arc::new(next);
                    (canon.0, canon.1.clone())
                };
                let g = Gather::AllOk {
                    missing: self.peers.len(),
                    error: None,
                };
                self.broadcast(token, out, client, g, || Op::ConfigSet {
                    version,
                    config: config.clone(),
                });
            }
            "resetstat" => {
                // Every worker's counters (each keeps its own), and the process-wide ones.
                use std::sync::atomic::Ordering::Relaxed;
                self.shared.total_connections.store(0, Relaxed);
                self.shared.rejected_connections.store(0, Relaxed);
                self.shared.reset_memory_peak();
                let g = self.collect_gather(Finisher::Status("OK"));
                self.broadcast(token, out, client, g, || Op::ResetStats);
            }
            "rewrite" => err(
                out,
                "ERR CONFIG REWRITE is not supported: edit the config file and restart",
            ),
            "help" => {
                let mut r = Vec::new();
                let lines = [
                    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GET <pattern>",
                    "    Return parameters matching the glob-like <pattern> and their values.",
                    "SET <directive> <value>",
                    "    Set the configuration <directive> to <value>.",
                    "RESETSTAT",
                    "    Reset statistics reported by the INFO command.",
                ];
                write_help(&mut r, &lines);
                out.push_reply(&r);
            }
            // Redis 7's text (arity errors were answered by dispatch).
            _ => unknown_subcommand(out, "config", args[1]),
        }
    }

    fn cmd_client(&mut self, token: usize, out: &mut Output, client: &mut Client, args: &[&[u8]]) {
        let sub = lower(args[1]);
        let mut r = Vec::new();
        match (sub.as_str(), args.len()) {
            ("id", 2) => write_integer(&mut r, client.id as i64),
            ("getname", 2) => match &client.name {
                Some(n) => write_bulk(&mut r, n),
                None => write_null(&mut r),
            },
            ("setname", 3) => {
                if !set_client_name(out, client, args[2]) {
                    return;
                }
                write_ok(&mut r);
            }
            // simplekv: CLIENT ACKS [0|1|all|default] sets (or shows) the acks this
            // connection's writes need in cluster mode (no effect standalone: one copy).
            ("acks", 2) => {
                let a = self.acks_of(client);
                write_bulk(&mut r, a.to_string().as_bytes());
            }
            ("acks", 3) => {
                let v = lower(args[2]);
                if v == "default" {
                    client.acks = None;
                } else {
                    match v.parse::<simplekv_conf::Acks>() {
                        Ok(a) => client.acks = Some(a),
                        Err(_) => {
                            return err(out, "ERR CLIENT ACKS takes 0, 1, all (or -1) or default");
                        }
                    }
                }
                write_ok(&mut r);
            }
            ("list", _) => {
                // As Redis 7: CLIENT LIST [TYPE normal|master|replica|slave|pubsub] or
                // CLIENT LIST ID id [id ...]; every client here is a normal one or a
                // pub/sub one (it subscribes).
                let mut pubsub = None;
                let ids = match (args.get(2).map(|a| lower(a)).as_deref(), args.len()) {
                    (None, _) => None,
                    (Some("type"), 4) => match lower(args[3]).as_str() {
                        "normal" => {
                            pubsub = Some(false);
                            None
                        }
                        "pubsub" => {
                            pubsub = Some(true);
                            None
                        }
                        "master" | "replica" | "slave" => Some(Vec::new()),
                        _ => {
                            let t = String::from_utf8_lossy(args[3]);
                            return err(out, &format!("ERR Unknown client type '{t}'"));
                        }
                    },
                    (Some("id"), n) if n > 3 => {
                        let mut ids = Vec::new();
                        for a in &args[3..] {
                            match crate::resp::parse::string2ll(a) {
                                Some(i) if i > 0 => ids.push(i as u64),
                                Some(_) => {}
                                None => return err(out, "ERR Invalid client ID"),
                            }
                        }
                        Some(ids)
                    }
                    _ => return err(out, "ERR syntax error"),
                };
                let extra = self.client_line(client, out);
                let g = self.collect_gather(Finisher::ClientList { extra, ids, pubsub });
                return self.broadcast(token, out, client, g, || Op::ClientList);
            }
            ("info", 2) => {
                let line = self.client_line(client, out);
                write_bulk(&mut r, line.as_bytes());
            }
            ("kill", _) => {
                // As Redis 7's clientKillCommand. The old form (CLIENT KILL ip:port) may kill
                // the caller and answers +OK or "No such client"; the filter form (ID, ADDR,
                // SKIPME, combined with AND) answers a count and skips the caller unless
                // SKIPME no. Before, both answered a count, the caller was killed by its own ID
                // filter, and ID 0 / negative ids were taken.
                let old_style = args.len() == 3;
                let mut f = super::router::KillFilter::default();
                let mut skipme = !old_style;
                if old_style {
                    f.addr = Some(String::from_utf8_lossy(args[2]).to_string());
                } else {
                    for kv in args[2..].chunks(2) {
                        let [name, value] = kv else {
                            return err(out, "ERR syntax error");
                        };
                        let text = || String::from_utf8_lossy(value).to_string();
                        match lower(name).as_str() {
                            "id" => match crate::resp::parse::string2ll(value) {
                                Some(i) if i > 0 => f.id = Some(i as u64),
                                _ => return err(out, "ERR client-id should be greater than 0"),
                            },
                            "addr" => f.addr = Some(text()),
                            "laddr" => f.laddr = Some(text()),
                            // Every connection is a normal or pub/sub one, of the one user.
                            "type" => match lower(value).as_str() {
                                "normal" => f.pubsub = Some(false),
                                "pubsub" => f.pubsub = Some(true),
                                "master" | "replica" | "slave" => f.nobody = true,
                                _ => {
                                    return err(
                                        out,
                                        &format!("ERR Unknown client type '{}'", text()),
                                    );
                                }
                            },
                            "user" if value == b"default" => {}
                            "user" => {
                                return err(out, &format!("ERR No such user '{}'", text()));
                            }
                            "skipme" => match lower(value).as_str() {
                                "yes" => skipme = true,
                                "no" => skipme = false,
                                _ => return err(out, "ERR syntax error"),
                            },
                            _ => return err(out, "ERR syntax error"),
                        }
                    }
                }
                let killed_self = !skipme && f.matches(client);
                f.caller = client.id;
                if killed_self {
                    client.closing = true;
                }
                let g = self.collect_gather(Finisher::ClientKill {
                    old_style,
                    killed_self,
                });
                return self.broadcast(token, out, client, g, move || Op::ClientKill(f.clone()));
            }
            ("setinfo", 4) => {
                // Redis 7.2's checks; CLIENT LIST and CLIENT INFO show the values.
                let attr = lower(args[2]);
                if attr != "lib-name" && attr != "lib-ver" {
                    return err(
                        out,
                        &format!(
                            "ERR Unrecognized option '{}'",
                            String::from_utf8_lossy(args[2])
                        ),
                    );
                }
                if args[3].iter().any(|b| !(b'!'..=b'~').contains(b)) {
                    return err(
                        out,
                        &format!(
                            "ERR {} cannot contain spaces, newlines or special characters.",
                            String::from_utf8_lossy(args[2])
                        ),
                    );
                }
                let value = Some(args[3].to_vec()).filter(|v| !v.is_empty());
                if attr == "lib-name" {
                    client.lib_name = value;
                } else {
                    client.lib_ver = value;
                }
                write_ok(&mut r)
            }
            // As Redis: OFF and SKIP answer nothing (SKIP does nothing while OFF), ON answers
            // OK. Replies dropped are still counted (errorstats, failed calls).
            ("reply", 3) => match lower(args[2]).as_str() {
                "on" => {
                    out.reply_mode = ReplyMode::On;
                    out.silent = false;
                    write_ok(&mut r);
                }
                "off" => {
                    out.reply_mode = ReplyMode::Off;
                    out.silent = true;
                }
                "skip" => {
                    if out.reply_mode != ReplyMode::Off {
                        out.reply_mode = ReplyMode::Skip;
                    }
                    out.silent = true;
                }
                _ => return err(out, "ERR syntax error"),
            },
            ("pause", 3 | 4) => {
                // As Redis 7.0: the mode is checked before the timeout.
                let mode = match args.get(3).map(|a| lower(a)).as_deref() {
                    None | Some("all") => super::pause::PauseMode::All,
                    Some("write") => super::pause::PauseMode::Write,
                    Some(_) => return err(out, "ERR CLIENT PAUSE mode must be WRITE or ALL"),
                };
                let ms = match crate::resp::parse::string2ll(args[2]) {
                    Some(v) if v < 0 => return err(out, "ERR timeout is negative"),
                    Some(v) => v as u64,
                    None => return err(out, "ERR timeout is not an integer or out of range"),
                };
                self.shared.pause.pause(mode, ms);
                return self.pause_changed(token, out, client);
            }
            ("pause", _) => return subcommand_syntax_error(out, "client", args[1]),
            ("unpause", 2) => {
                self.shared.pause.unpause();
                return self.pause_changed(token, out, client);
            }
            ("no-evict", 3) | ("no-touch", 3) => match lower(args[2]).as_str() {
                "on" | "off" => write_ok(&mut r),
                _ => return err(out, "ERR syntax error"),
            },
            ("help", 2) => {
                let lines = [
                    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "ID",
                    "    Return the ID of the current connection.",
                    "GETNAME",
                    "    Return the name of the current connection.",
                    "SETNAME <name>",
                    "    Assign the name <name> to the current connection.",
                    "INFO",
                    "    Return information about the current client connection.",
                    "LIST",
                    "    Return information about client connections.",
                    "KILL <ip:port>",
                    "    Kill connection made from <ip:port>.",
                    "KILL <option> <value> [<option> <value> [...]]",
                    "    Kill connections. Options are:",
                    "    * ADDR <ip:port>",
                    "      Kill connections made from the specified address",
                    "    * LADDR <ip:port>",
                    "      Kill connections made to specified local address",
                    "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
                    "      Kill connections by type (all of simplekv's are NORMAL).",
                    "    * USER <username>",
                    "      Kill connections authenticated by <username> (only 'default').",
                    "    * ID <client-id>",
                    "      Kill connections by client id.",
                    "    * SKIPME (YES|NO)",
                    "      Skip killing current connection (default: yes).",
                    "PAUSE <timeout> [WRITE|ALL]",
                    "    Suspend all, or just write, clients for <timeout> milliseconds.",
                    "UNPAUSE",
                    "    Stop the current client pause, resuming traffic.",
                    "REPLY (ON|OFF|SKIP)",
                    "    Control the replies sent to the current connection:",
                    "    * ON - Reply to all commands (default).",
                    "    * OFF - Do not reply to any command.",
                    "    * SKIP - Do not reply to the next command.",
                    "ACKS [0|1|ALL|DEFAULT]",
                    "    simplekv, cluster mode: show or set the acks this connection's writes need.",
                    "SETINFO <option> <value>, NO-EVICT (ON|OFF), NO-TOUCH (ON|OFF)",
                    "    SETINFO LIB-NAME|LIB-VER <value>: shown by CLIENT LIST; the others have no",
                    "    effect.",
                ];
                write_help(&mut r, &lines);
            }
            // Redis 7's text (arity errors were answered by dispatch).
            _ => return unknown_subcommand(out, "client", args[1]),
        }
        out.push_reply(&r);
    }

    pub fn client_line(&self, c: &Client, out: &Output) -> String {
        let text = |v: &Option<Vec<u8>>| {
            v.as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned()
        };
        // As Redis: x inside MULTI (and while its EXEC runs), with the commands queued.
        let multi = match (&c.tx, self.exec_of) {
            (Some(t), _) => Some(t.len()),
            (None, Some((id, n))) if id == c.id => Some(n),
            _ => None,
        };
        // Redis's order: O (monitor), P (pub/sub), x (MULTI), b (blocked: stopped by CLIENT
        // PAUSE); N for none.
        let mut flags: String = [
            (c.monitor, 'O'),
            (c.subs.is_some(), 'P'),
            (multi.is_some(), 'x'),
            (c.postponed, 'b'),
        ]
        .iter()
        .filter_map(|&(on, f)| on.then_some(f))
        .collect();
        if flags.is_empty() {
            flags.push('N');
        }
        let subs = |kind| c.subs.as_ref().map_or(0, |s| s.of(kind).len());
        use super::pubsub::Kind;
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db=0 sub={} psub={} ssub={} multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll={} omem={} tot-mem=0 events=r cmd={} user=default redir=-1 resp=2 lib-name={} lib-ver={}\n",
            c.id,
            c.addr,
            c.local_addr,
            text(&c.name),
            c.created.elapsed().as_secs(),
            c.last_active.elapsed().as_secs(),
            flags,
            subs(Kind::Channel),
            subs(Kind::Pattern),
            subs(Kind::Shard),
            multi.map_or(-1, |n| n as i64),
            out.slots.len(),
            out.wbuf.len() - out.wpos,
            c.last_cmd,
            text(&c.lib_name),
            text(&c.lib_ver),
        )
    }

    fn client_list(&self) -> String {
        let mut s = String::new();
        // Not those closing (killed, QUIT): gone as far as clients can tell.
        for c in self.conns.iter().flatten().filter(|c| !c.client.closing) {
            s.push_str(&self.client_line(&c.client, &c.out));
        }
        s
    }
}

/// The key-value pairs at argument indexes `idx` (each a key, its value next).
fn pairs_of(args: &[&[u8]], idx: &[usize]) -> Pairs {
    idx.iter().map(|&i| (args[i], args[i + 1])).collect()
}

/// How the parts of a multi-key command of `n_keys` keys, run by `n_parts` workers, make its
/// reply.
pub(super) fn multi_gather(kind: MultiKind, n_keys: usize, n_parts: usize) -> Gather {
    match kind {
        MultiKind::MGet => Gather::Elements {
            items: vec![None; n_keys],
            missing: n_parts,
            error: None,
        },
        MultiKind::Del | MultiKind::Unlink | MultiKind::Exists | MultiKind::Touch => Gather::Sum {
            total: 0,
            missing: n_parts,
            error: None,
        },
        MultiKind::MSet => Gather::AllOk {
            missing: n_parts,
            error: None,
        },
        MultiKind::MSetNx => Gather::Single(None),
    }
}

/// One worker's part of a multi-key command: its keys are at argument indexes `idx`.
pub(super) fn multi_op(kind: MultiKind, args: &[&[u8]], idx: &[usize]) -> Op {
    match kind {
        MultiKind::MGet => Op::MGet {
            keys: idx
                .iter()
                .map(|&i| ((i - 1) as u32, args[i].to_vec()))
                .collect(),
        },
        MultiKind::Del | MultiKind::Unlink => Op::Del {
            keys: idx.iter().map(|&i| args[i].to_vec()).collect(),
            kind,
        },
        MultiKind::Exists | MultiKind::Touch => Op::Exists {
            keys: idx.iter().map(|&i| args[i].to_vec()).collect(),
            kind,
        },
        MultiKind::MSet => Op::MSet {
            pairs: pairs_of(args, idx),
            kind,
        },
        MultiKind::MSetNx => Op::MSetNx {
            pairs: pairs_of(args, idx),
        },
    }
}

/// FLUSHDB / FLUSHALL take ASYNC or SYNC, nothing else.
pub(super) fn flush_args_error(args: &[&[u8]]) -> Option<&'static str> {
    let ok = match args.len() {
        1 => true,
        2 => matches!(lower(args[1]).as_str(), "async" | "sync"),
        _ => false,
    };
    (!ok).then_some("ERR syntax error")
}

/// Whether an op writes (cluster mode refuses it where writes are refused).
pub(super) fn op_writes(op: &Op) -> bool {
    match op {
        Op::Keyed { args, .. } => args
            .slices()
            .first()
            .and_then(|n| cmd::lookup(n))
            .is_some_and(|s| s.flags.contains(&"write")),
        Op::Del { .. } | Op::MSet { .. } | Op::MSetNx { .. } | Op::Move { .. } => true,
        Op::Tx(part) => part.items.iter().any(|(_, op)| op_writes(op)),
        Op::Combine(c) => c.writes(),
        _ => false,
    }
}

/// Puts one part's payload into a waiting slot; turns the slot Ready when complete.
pub fn fill_slot(slot: &mut Slot, part: u32, payload: Payload) {
    if let Slot::Remote = slot {
        *slot = Slot::Ready(payload_to_resp(payload));
        return;
    }
    let Slot::Waiting(pending) = slot else {
        return;
    };
    fill_gather(&mut pending.gather, part, payload);
    finish_slot(slot);
}

/// `fill_slot` for an EXEC's slot: returns the connection's settings to put back when the
/// transaction completes having run nothing (a watched key changed, or it was refused whole),
/// and, when it completes having run, what that counts (`multi::TxRan`).
pub fn fill_exec_slot(
    slot: &mut Slot,
    part: u32,
    payload: Payload,
) -> (
    Option<Box<super::conn::ClientSettings>>,
    Option<super::multi::TxRan>,
    Vec<u8>,
) {
    let Slot::Waiting(pending) = slot else {
        return (None, None, Vec::new());
    };
    fill_gather(&mut pending.gather, part, payload);
    let ran = super::multi::tx_ran(&pending.gather);
    // A transaction that ran nothing shows monitors its EXEC alone, as Redis does.
    let (undo, exec_line) = match &mut pending.gather {
        Gather::Tx {
            missing: 0,
            aborted,
            error,
            undo,
            monitor,
            ..
        } if *aborted || error.is_some() => {
            (undo.take(), super::monitor::last_line(monitor).to_vec())
        }
        _ => (None, Vec::new()),
    };
    finish_slot(slot);
    (undo, ran, exec_line)
}

/// A waiting slot whose gather is complete becomes its reply (held where it must wait).
fn finish_slot(slot: &mut Slot) {
    if let Some(reply) = finished_reply(slot) {
        let hold = match slot {
            Slot::Waiting(p) => p.hold,
            _ => None,
        };
        *slot = match hold {
            Some(h) => Slot::Held(h, reply.into()),
            None => Slot::Ready(reply.into()),
        };
    }
}

fn fill_gather(gather: &mut Gather, part: u32, payload: Payload) {
    match gather {
        Gather::Single(r) => {
            *r = Some(payload_to_resp(payload).into_vec());
        }
        Gather::Elements {
            items,
            missing,
            error,
        } => {
            match payload {
                Payload::Elements(es) => {
                    for (pos, e) in es {
                        if let Some(it) = items.get_mut(pos as usize) {
                            *it = Some(e);
                        }
                    }
                }
                Payload::Err(e) => *error = Some(e),
                _ => {}
            }
            *missing = missing.saturating_sub(1);
        }
        Gather::Sum {
            total,
            missing,
            error,
        } => {
            match payload {
                Payload::Int(n) => *total += n,
                Payload::Err(e) => *error = Some(e),
                _ => {}
            }
            *missing = missing.saturating_sub(1);
        }
        Gather::AllOk { missing, error } => {
            if let Payload::Err(e) = payload {
                *error = Some(e);
            }
            *missing = missing.saturating_sub(1);
        }
        Gather::AllSet {
            missing,
            all,
            error,
        } => {
            match payload {
                Payload::Int(1) => {}
                Payload::Err(e) => *error = Some(e),
                _ => *all = false,
            }
            *missing = missing.saturating_sub(1);
        }
        Gather::Collect { parts, missing, .. } => {
            if let Some(p) = parts.get_mut(part as usize) {
                *p = payload;
            }
            *missing = missing.saturating_sub(1);
        }
        Gather::Tx {
            items,
            missing,
            error,
            aborted,
            ..
        } => {
            match payload {
                Payload::TxAborted => *aborted = true,
                Payload::Tx(done) => {
                    for (i, p) in done {
                        if let Some(item) = items.get_mut(i as usize) {
                            // A keyspace-wide command's shares, one per worker, each in a
                            // place of its own.
                            let part = match item {
                                Gather::Collect { parts, missing, .. } => parts.len() - *missing,
                                _ => 0,
                            };
                            fill_gather(item, part as u32, p);
                        }
                    }
                }
                Payload::Err(e) => *error = Some(e),
                _ => *error = Some("ERR internal: unexpected transaction reply".into()),
            }
            *missing = missing.saturating_sub(1);
        }
    }
}

pub(super) fn payload_to_resp(p: Payload) -> ReplyBytes {
    let mut r = Vec::new();
    match p {
        Payload::Resp(b) => return b,
        Payload::Int(n) => write_integer(&mut r, n),
        Payload::Ok => write_ok(&mut r),
        Payload::Err(e) => write_error(&mut r, e.as_bytes()),
        _ => write_error(&mut r, b"ERR internal: unexpected reply"),
    }
    r.into()
}

/// The reply of a complete gather (None while parts are missing).
fn finished_reply(slot: &mut Slot) -> Option<Vec<u8>> {
    let Slot::Waiting(pending) = slot else {
        return None;
    };
    gather_reply(&mut pending.gather)
}

/// The reply a gather makes once every part is in (None while some are missing).
pub(super) fn gather_reply(gather: &mut Gather) -> Option<Vec<u8>> {
    let mut r = Vec::new();
    match gather {
        Gather::Single(v) => return v.take(),
        Gather::Elements {
            items,
            missing,
            error,
        } => {
            if *missing > 0 {
                return None;
            }
            if let Some(e) = error {
                write_error(&mut r, e.as_bytes());
                return Some(r);
            }
            write_array_len(&mut r, items.len());
            for it in items.iter() {
                match it {
                    Some(e) => r.extend_from_slice(e),
                    None => write_null(&mut r),
                }
            }
        }
        Gather::Sum {
            total,
            missing,
            error,
        } => return counted(*missing, error, |r| write_integer(r, *total)),
        Gather::AllOk { missing, error } => return counted(*missing, error, write_ok),
        Gather::AllSet {
            missing,
            all,
            error,
        } => return counted(*missing, error, |r| write_integer(r, i64::from(*all))),
        Gather::Collect {
            parts,
            missing,
            finish,
        } => {
            if *missing > 0 {
                return None;
            }
            super::commands::finish(finish, std::mem::take(parts), &mut r);
        }
        Gather::Tx {
            items,
            missing,
            error,
            aborted,
            bare,
            ..
        } => {
            if *missing > 0 {
                return None;
            }
            if let Some(e) = error {
                // EXEC refused as a whole (no room on disk for its writes, a step between
                // workers that went wrong) answers as Redis words a refused EXEC.
                if let Some(why) = e.strip_prefix("ERR ").filter(|_| !*bare) {
                    let e = format!("EXECABORT Transaction discarded because of: {why}");
                    write_error(&mut r, e.as_bytes());
                } else {
                    write_error(&mut r, e.as_bytes());
                }
                return Some(r);
            }
            if *aborted && *bare {
                // Only a step between workers that went wrong stops a command run whole.
                return Some(error_reply(
                    "ERR internal: the command did not run (a step between workers failed)",
                ));
            }
            if *aborted {
                return Some(b"*-1\r\n".to_vec());
            }
            if *bare {
                return Some(items.first_mut().and_then(gather_reply).unwrap_or_else(|| {
                    error_reply("ERR internal: a multi-key command got no reply")
                }));
            }
            write_array_len(&mut r, items.len());
            for item in items.iter_mut() {
                match gather_reply(item) {
                    Some(b) => r.extend_from_slice(&b),
                    None => write_error(
                        &mut r,
                        b"ERR internal: a command of the transaction got no reply",
                    ),
                }
            }
        }
    }
    Some(r)
}

/// The reply of a gather that counts its parts: none while some are missing, then the error
/// one of them gave, or what `write` makes.
fn counted(
    missing: usize,
    error: &Option<String>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Option<Vec<u8>> {
    if missing > 0 {
        return None;
    }
    let mut r = Vec::new();
    match error {
        Some(e) => write_error(&mut r, e.as_bytes()),
        None => write(&mut r),
    }
    Some(r)
}

/// The engine's error for a key or value over its limit, as a reply (None: within them).
pub(super) fn pair_over_limit(
    key: &[u8],
    value: &[u8],
    max_key: usize,
    max_value: usize,
) -> Option<String> {
    let e = if key.len() > max_key {
        simplekv_engine::WriteError::KeyTooLarge {
            len: key.len(),
            max: max_key,
        }
    } else if value.len() > max_value {
        simplekv_engine::WriteError::ValueTooLarge {
            len: value.len(),
            max: max_value,
        }
    } else {
        return None;
    };
    Some(format!("ERR {e}"))
}

/// A SCAN cursor as Redis reads it (`strtoul`): an optional sign, then decimal digits; an
/// empty string is 0 and a negative number wraps (`-1` is the largest cursor, which ends the
/// iteration at once). Leading spaces, other bytes and overflow are invalid.
fn parse_scan_cursor(arg: &[u8]) -> Option<u64> {
    let (negative, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, arg),
    };
    if digits.is_empty() && !arg.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(if negative { n.wrapping_neg() } else { n })
}

/// A command's name and keys, as the slow log shows a part of it.
fn words<'a>(name: &'a [u8], keys: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    std::iter::once(name).chain(keys).collect()
}

/// `words` for MSET's pairs.
fn pair_words<'a>(name: &'a [u8], pairs: &'a Pairs) -> Vec<&'a [u8]> {
    std::iter::once(name)
        .chain(pairs.iter().flat_map(|(k, v)| [k, v]))
        .collect()
}

#[cfg(test)]
mod scan_cursor_tests {
    use super::parse_scan_cursor;

    #[test]
    fn cursors_parse_as_redis_strtoul_does() {
        assert_eq!(parse_scan_cursor(b"0"), Some(0));
        assert_eq!(parse_scan_cursor(b""), Some(0));
        assert_eq!(parse_scan_cursor(b"+7"), Some(7));
        assert_eq!(parse_scan_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_scan_cursor(b"-0"), Some(0));
        assert_eq!(parse_scan_cursor(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"18446744073709551616"[..],
            b" 1",
            b"1 ",
            b"abc",
            b"-",
            b"+",
            b"0x10",
        ] {
            assert_eq!(
                parse_scan_cursor(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
