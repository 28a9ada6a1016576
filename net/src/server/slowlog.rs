//! SLOWLOG: the commands that ran for at least `server.slowlog_log_slower_than`
//! microseconds, as Redis keeps them (id, unix time, duration, arguments, client address
//! and name), newest first, at most `server.slowlog_max_len`.
//!
//! A command is timed where it runs, from its dispatch to its reply (not its reading or
//! sending). One that runs on its connection's worker is one entry (`Worker::run_one`).
//! One that goes to other workers is an entry for each part, timed where it ran
//! (`execute_op`): a single-key command on another worker is timed there; an MGET, MSET,
//! DEL, EXISTS, KEYS, SCAN, DBSIZE or FLUSHALL over several workers is an entry per
//! worker's part, with the command's name and that worker's keys. A server command (INFO,
//! CONFIG, CLIENT, SLOWLOG, ...) is one entry on its connection's worker, its shares on the
//! other workers are not commands of their own. A BITOP or LCS over several workers is
//! timed where it computes (the last worker it visits). RENAME and COPY between two workers
//! go in steps that are not timed on their own: the entry is the command's time on its
//! connection's worker. The commands of a transaction are entries of
//! their own (EXEC, and commands queued after MULTI, are not), as in Redis.
//!
//! Each worker keeps its own log (no lock between them; ids come from one counter, given as
//! an entry goes into a log), an entry of a part that ran elsewhere going to its
//! connection's worker, which adds the client's address and name. SLOWLOG GET / LEN / RESET
//! ask every worker: together they hold the newest entries.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::sync::atomic::Ordering;

use super::conn::{Client, Output};
use super::dispatch::{Finisher, err, unknown_subcommand};
use super::router::{Msg, Op, Payload, ReplyTo};
use super::worker::Worker;
use crate::resp::encode::{write_array_len, write_bulk, write_help, write_integer};

/// Arguments an entry keeps; the last one kept then says how many more there were.
const MAX_ARGS: usize = 32;
/// Bytes an argument keeps; the rest is said as a count.
const MAX_STRING: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix time, seconds, when it was logged.
    pub time: u64,
    pub micros: u64,
    pub args: Vec<Vec<u8>>,
    /// The client's `ip:port` and name (empty when it has none or left before).
    pub addr: String,
    pub name: String,
}

impl SlowEntry {
    /// An entry for a command that ran `micros`, without its client and id yet (given as
    /// it goes into a log).
    pub fn new<'a>(micros: u64, args: impl ExactSizeIterator<Item = &'a [u8]>) -> Self {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        SlowEntry {
            id: 0,
            time,
            micros,
            args: entry_args(args),
            addr: String::new(),
            name: String::new(),
        }
    }
}

/// One worker's log, newest first.
#[derive(Debug, Default)]
pub struct SlowLog {
    entries: VecDeque<SlowEntry>,
}

impl SlowLog {
    pub fn push(&mut self, e: SlowEntry, max_len: usize) {
        self.entries.push_front(e);
        self.entries.truncate(max_len);
    }

    /// The newest `n` (at most `max_len`: a log shortened by CONFIG SET since).
    pub fn newest(&self, n: usize, max_len: usize) -> Vec<SlowEntry> {
        self.entries.iter().take(n.min(max_len)).cloned().collect()
    }

    pub fn len(&self, max_len: usize) -> usize {
        self.entries.len().min(max_len)
    }

    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// Keeps the newest `max_len` (`slowlog-max-len` lowered).
    pub fn truncate(&mut self, max_len: usize) {
        self.entries.truncate(max_len);
    }
}

/// A command's timing.
#[derive(Debug, Clone, Copy)]
pub struct SlowTimer {
    start: Instant,
}

impl SlowTimer {
    pub fn start() -> SlowTimer {
        SlowTimer {
            start: Instant::now(),
        }
    }

    /// The microseconds it took, when at least `threshold` (the one set when it ended, as
    /// Redis reads it: a CONFIG SET that turns the log on is logged, one that turns it off
    /// not); `None` for a negative threshold (the log is off).
    pub fn slow(&self, threshold: i64) -> Option<u64> {
        let us = self.micros();
        is_slow(us, threshold).then_some(us)
    }

    /// The microseconds since it started.
    pub fn micros(&self) -> u64 {
        duration_micros(self.start.elapsed())
    }
}

/// Whether `us` goes into the log at `threshold` (negative: the log is off).
fn is_slow(us: u64, threshold: i64) -> bool {
    u64::try_from(threshold).is_ok_and(|t| us >= t)
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The arguments as the log keeps them (Redis's rules): at most 32, the 32nd then saying
/// `... (N more arguments)`; each at most 128 bytes, then `... (N more bytes)`. Passwords
/// (AUTH's arguments, HELLO's after AUTH, CONFIG SET requirepass's value) are
/// `(redacted)`.
pub fn entry_args<'a>(args: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let argc = args.len();
    let kept = argc.min(MAX_ARGS);
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(kept);
    for (i, a) in args.enumerate() {
        if i + 1 == kept && argc > kept {
            out.push(format!("... ({} more arguments)", argc - kept + 1).into_bytes());
            break;
        }
        let mut s = a[..a.len().min(MAX_STRING)].to_vec();
        if a.len() > MAX_STRING {
            s.extend_from_slice(format!("... ({} more bytes)", a.len() - MAX_STRING).as_bytes());
        }
        out.push(s);
    }
    for i in secrets(&out) {
        if let Some(a) = out.get_mut(i) {
            *a = b"(redacted)".to_vec();
        }
    }
    out
}

/// Where a command's arguments hold passwords.
fn secrets(args: &[Vec<u8>]) -> Vec<usize> {
    let is = |i: usize, word: &[u8]| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word));
    if is(0, b"auth") {
        (1..args.len()).collect()
    } else if is(0, b"hello") {
        // HELLO [protover [AUTH username password] [SETNAME name]]
        (2..args.len())
            .find(|&i| is(i, b"auth"))
            .map_or(Vec::new(), |i| vec![i + 1, i + 2])
    } else if is(0, b"config") && is(1, b"set") {
        // By either name of the setting, however spelled; refused or not.
        let secret = |a: &[u8]| {
            std::str::from_utf8(a)
                .ok()
                .and_then(simplekv_conf::Config::setting)
                .is_some_and(|s| matches!(s.name, "server.requirepass" | "cluster.secret"))
        };
        (2..args.len())
            .step_by(2)
            .filter(|&i| secret(&args[i]))
            .map(|i| i + 1)
            .collect()
    } else {
        Vec::new()
    }
}

/// SLOWLOG GET's reply: the newest `n` of every worker's entries (each worker's newest
/// first), at most `max_len`.
pub fn write_entries(r: &mut Vec<u8>, mut entries: Vec<SlowEntry>, n: usize, max_len: usize) {
    entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
    entries.truncate(n.min(max_len));
    write_array_len(r, entries.len());
    for e in entries {
        write_array_len(r, 6);
        write_integer(r, e.id as i64);
        write_integer(r, e.time as i64);
        write_integer(r, e.micros as i64);
        write_array_len(r, e.args.len());
        for a in &e.args {
            write_bulk(r, a);
        }
        write_bulk(r, e.addr.as_bytes());
        write_bulk(r, e.name.as_bytes());
    }
}

impl Worker {
    fn slowlog_max_len(&self) -> usize {
        self.config.server.slowlog_max_len as usize
    }

    /// Puts `entry` into this worker's log, with the next id.
    fn log_slow(&mut self, mut entry: SlowEntry) {
        entry.id = self.shared.slowlog_ids.fetch_add(1, Ordering::Relaxed);
        let max = self.slowlog_max_len();
        self.slowlog.push(entry, max);
    }

    /// A timer for an op (`execute_op`): always, as its time counts in INFO commandstats
    /// (a single-key command's, `run_keyed_op`) whatever the slow log, latency tracking and
    /// the latency monitor are set to, as a command's on its connection's worker does.
    pub(super) fn op_timer(&self) -> SlowTimer {
        SlowTimer::start()
    }

    /// Logs an op `timer` found slow; `words`: its arguments (the command's, or its name and
    /// the keys of this worker's part). The client is filled in by its connection's worker.
    pub(super) fn op_ran<'a>(
        &mut self,
        timer: Option<SlowTimer>,
        words: impl FnOnce() -> Vec<&'a [u8]>,
    ) {
        let Some(timer) = timer else { return };
        let monitor = self.config.server.latency_monitor_threshold;
        let spike = monitor > 0 && timer.micros() / 1000 >= monitor;
        let threshold = self.config.server.slowlog_log_slower_than;
        let slow = timer.slow(threshold);
        if slow.is_none() && !spike {
            return;
        }
        let words = words();
        if spike {
            let us = timer.micros();
            self.command_spike(words.first().copied().unwrap_or_default(), us);
        }
        let Some(us) = slow else { return };
        let entry = SlowEntry::new(us, words.into_iter());
        match self.slow_for {
            Some(rt) => self.slow_pending.push((rt, entry)),
            None => self.log_slow(entry),
        }
    }

    /// Before a connection's command runs (`Worker::run_one`): its timer (none for commands
    /// queued after MULTI, which are timed when EXEC runs them), and where the turn's queues
    /// stand.
    pub(super) fn slow_begin(
        &mut self,
        token: usize,
        client: &Client,
        out: &mut Output,
        args: &[&[u8]],
    ) -> SlowMark {
        let queued = client.tx.is_some() && !args[0].eq_ignore_ascii_case(b"discard");
        let exec = args[0].eq_ignore_ascii_case(b"exec");
        self.whole_entry = WholeEntry::UnlessAway;
        out.not_run = false;
        out.cmd = "";
        self.slow_for = Some(ReplyTo {
            worker: self.id,
            token,
            conn_id: client.id,
            seq: 0,
            part: 0,
        });
        SlowMark {
            // EXEC is timed too (INFO commandstats, latency tracking, the latency monitor),
            // but is no slow log entry: its commands are, each where it ran, as in Redis.
            timer: (!queued || exec).then(SlowTimer::start),
            exec,
            parts_logged: self.slow_pending.len(),
            steps: self.nx_out.len(),
            owed: out.in_flight,
        }
    }

    /// After it ran: one entry for a command that ran here only (not one per op it ran), or
    /// an entry per part where each ran for one that went to other workers (the ops' own),
    /// or as `whole_entry` says; none for EXEC. Returns the microseconds it took here (none
    /// when not timed: queued in MULTI).
    pub(super) fn slow_end(
        &mut self,
        mark: SlowMark,
        client: &Client,
        out: &Output,
        args: &[&[u8]],
    ) -> Option<u64> {
        self.slow_for = None;
        let timer = mark.timer?;
        let us = timer.micros();
        if !out.not_run && self.config.server.latency_monitor_threshold > 0 {
            self.command_spike(args[0], us);
        }
        if mark.exec {
            return Some(us);
        }
        let in_steps = self.nx_out.len() > mark.steps;
        let went = in_steps || out.in_flight > mark.owed;
        let whole = match self.whole_entry {
            WholeEntry::Always => true,
            WholeEntry::UnlessAway => !went,
            WholeEntry::UnlessSentWhole => !went || in_steps,
        };
        if out.not_run || !whole {
            return Some(us);
        }
        self.slow_pending.truncate(mark.parts_logged);
        if is_slow(us, self.config.server.slowlog_log_slower_than) {
            self.log_slow_command(client, args, us);
        }
        Some(us)
    }

    /// The latency monitor: a command (`name`, any case) that ran `us` microseconds, as a
    /// `fast-command` or `command` spike by its COMMAND INFO flags, as Redis.
    fn command_spike(&mut self, name: &[u8], us: u64) {
        let threshold = self.config.server.latency_monitor_threshold;
        if threshold == 0 || us / 1000 < threshold {
            return;
        }
        let fast = crate::cmd::lookup(name).is_some_and(|s| s.has_flag("fast"));
        let event = if fast { "fast-command" } else { "command" };
        self.latency_spike(event, std::time::Duration::from_micros(us));
    }

    /// Logs a command of one of this worker's connections that ran `us`.
    pub(super) fn log_slow_command(&mut self, client: &Client, args: &[&[u8]], us: u64) {
        let mut entry = SlowEntry::new(us, args.iter().copied());
        entry.addr.clone_from(&client.addr);
        entry.name = client_name(client);
        self.log_slow(entry);
    }

    /// Logs an entry of an op run for connection `rt` of this worker, with its client.
    pub(super) fn log_slow_for(&mut self, rt: ReplyTo, mut entry: SlowEntry) {
        if let Some(c) = self.conn_mut(rt.token)
            && c.client.id == rt.conn_id
        {
            entry.addr.clone_from(&c.client.addr);
            entry.name = client_name(&c.client);
        }
        self.log_slow(entry);
    }

    /// The turn's entries of ops run for connections: those of this worker's get their
    /// client here, the others go to their workers.
    pub(super) fn place_slow_entries(&mut self) {
        if self.slow_pending.is_empty() {
            return;
        }
        for (rt, entry) in std::mem::take(&mut self.slow_pending) {
            if rt.worker == self.id {
                self.log_slow_for(rt, entry);
            } else if let Some(out) = self.req_out.get_mut(rt.worker) {
                out.push(Msg::Slow(rt, Box::new(entry)));
            }
        }
    }

    /// This worker's part of SLOWLOG GET / LEN / RESET.
    pub(super) fn slowlog_op(&mut self, op: SlowOp) -> Payload {
        let max = self.slowlog_max_len();
        match op {
            SlowOp::Get(n) => Payload::SlowLog(self.slowlog.newest(n, max)),
            SlowOp::Len => Payload::Int(self.slowlog.len(max) as i64),
            SlowOp::Reset => {
                self.slowlog.reset();
                Payload::Ok
            }
        }
    }

    /// SLOWLOG: its subcommands ask every worker (`Op::SlowLog`).
    pub(super) fn slowlog_command(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        args: &[&[u8]],
    ) {
        let sub = args[1].to_ascii_lowercase();
        let max = self.slowlog_max_len();
        let (op, finish) = match (sub.as_slice(), args.len()) {
            (b"get", 2 | 3) => {
                let n = match args.get(2) {
                    None => 10,
                    Some(a) => match crate::resp::parse::string2ll(a) {
                        Some(-1) => usize::MAX,
                        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                        _ => {
                            return err(out, "ERR count should be greater than or equal to -1");
                        }
                    },
                };
                (
                    SlowOp::Get(n),
                    Finisher::SlowLog {
                        count: n,
                        max_len: max,
                    },
                )
            }
            (b"len", 2) => (SlowOp::Len, Finisher::Sum { max: max as i64 }),
            (b"reset", 2) => (SlowOp::Reset, Finisher::Status("OK")),
            (b"help", 2) => {
                let mut r = Vec::new();
                write_help(
                    &mut r,
                    &[
                        "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                        "GET [<count>]",
                        "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                        "    Entries are made of:",
                        "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                        "    client name",
                        "LEN",
                        "    Return the length of the slowlog.",
                        "RESET",
                        "    Reset the slowlog.",
                    ],
                );
                return out.push_reply(&r);
            }
            (b"get" | b"len" | b"reset" | b"help", _) => {
                return super::dispatch::subcommand_syntax_error(out, "slowlog", args[1]);
            }
            _ => return unknown_subcommand(out, "slowlog", args[1]),
        };
        let g = self.collect_gather(finish);
        self.broadcast(token, out, client, g, || Op::SlowLog(op));
    }
}

/// Where a connection's command stood when it started (`Worker::slow_begin`).
pub(super) struct SlowMark {
    timer: Option<SlowTimer>,
    exec: bool,
    /// Entries of ops run for connections (`slow_pending`), requests in steps (`nx_out`)
    /// and answers owed to the connection (`Output::in_flight`) then.
    parts_logged: usize,
    steps: usize,
    owed: usize,
}

/// When a command that went to other workers is still one entry as a whole.
#[derive(Debug, Clone, Copy, Default)]
pub enum WholeEntry {
    /// Unless it went: then its parts are entries where they ran (data commands, KEYS,
    /// BITOP, ...).
    #[default]
    UnlessAway,
    /// Always: its shares elsewhere are not commands of their own (INFO, CONFIG SET, ...).
    Always,
    /// When it went in steps between workers, which are not timed on their own; a part
    /// when it ran whole on another worker (RENAME, COPY).
    UnlessSentWhole,
}

/// What SLOWLOG asks each worker.
#[derive(Debug, Clone, Copy)]
pub enum SlowOp {
    Get(usize),
    Len,
    Reset,
}

fn client_name(c: &Client) -> String {
    c.name
        .as_deref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        entry_args(a.iter().map(|s| s.as_bytes()))
    }

    fn text(v: Vec<Vec<u8>>) -> Vec<String> {
        v.into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn arguments_are_cut_as_redis_cuts_them() {
        let long = "x".repeat(200);
        assert_eq!(
            text(args(&["set", "k", &long])),
            [
                "set",
                "k",
                &format!("{}... (72 more bytes)", "x".repeat(128))
            ]
        );
        let many: Vec<String> = std::iter::once("MSET".to_string())
            .chain((0..40).map(|i| format!("k{i}")))
            .collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        let got = text(args(&many));
        assert_eq!(got.len(), 32);
        assert_eq!(got[30], "k29");
        assert_eq!(got[31], "... (10 more arguments)");
        // Exactly 32 are all kept.
        assert_eq!(text(args(&many[..32])).last().unwrap(), "k30");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            text(args(&["AUTH", "user", "pw"])),
            ["AUTH", "(redacted)", "(redacted)"]
        );
        assert_eq!(
            text(args(&["HELLO", "2", "AUTH", "user", "pw", "SETNAME", "n"])),
            [
                "HELLO",
                "2",
                "AUTH",
                "(redacted)",
                "(redacted)",
                "SETNAME",
                "n"
            ]
        );
        assert_eq!(
            text(args(&["CONFIG", "SET", "requirepass", "pw"])),
            ["CONFIG", "SET", "requirepass", "(redacted)"]
        );
        assert_eq!(
            text(args(&["CONFIG", "SET", "maxclients", "5"])),
            ["CONFIG", "SET", "maxclients", "5"]
        );
        assert_eq!(
            text(args(&[
                "config",
                "set",
                "hz",
                "5",
                "Server.RequirePass",
                "pw"
            ])),
            [
                "config",
                "set",
                "hz",
                "5",
                "Server.RequirePass",
                "(redacted)"
            ]
        );
        assert_eq!(
            text(args(&["CONFIG", "SET", "cluster.secret", "s"])),
            ["CONFIG", "SET", "cluster.secret", "(redacted)"]
        );
    }

    #[test]
    fn the_log_keeps_the_newest_and_get_merges_workers_by_id() {
        let mut a = SlowLog::default();
        let mut b = SlowLog::default();
        let e = |id| SlowEntry {
            id,
            ..SlowEntry::new(5, [b"get".as_slice()].into_iter())
        };
        for id in [1, 4, 5] {
            a.push(e(id), 2);
        }
        for id in [2, 3] {
            b.push(e(id), 2);
        }
        assert_eq!(a.len(128), 2);
        assert_eq!(a.len(1), 1);
        let mut all = a.newest(10, 2);
        all.extend(b.newest(10, 2));
        let mut r = Vec::new();
        write_entries(&mut r, all, 3, 128);
        let ids: Vec<u64> = {
            let s = String::from_utf8(r).unwrap();
            s.split("\r\n")
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0] == "*6")
                .map(|w| w[1][1..].parse().unwrap())
                .collect()
        };
        assert_eq!(ids, [5, 4, 3]);
    }
}
