//! The clients: threads doing GET / SET (unique values) on register keys, GET / INCR on
//! counter keys, and MSET / MGET on groups of keys of one hash tag (an MSET gives every key
//! of its group the same unique value, so an MGET that sees different values saw part of an
//! MSET: `torn-group`, an anomaly of its own; each key's part is recorded in the history as
//! a SET or GET of that key), following MOVED and waiting out TRYAGAIN / CLUSTERDOWN /
//! NOREPLICAS within one operation, and recording each operation honestly:
//!
//! - `ok` with the reply;
//! - `fail` only when the reply proves the command was not applied: a refusal the server
//!   gives before executing (MOVED, TRYAGAIN, CLUSTERDOWN, NOREPLICAS, CROSSSLOT, "partition
//!   not available", "not an integer", "disk space low"), or a request that was never
//!   completely sent;
//! - `unknown` otherwise: a timeout, a reset or EOF after sending, "ERR not acknowledged
//!   ... a write may or may not have been applied", any other error or unexpected reply.
//!
//! A mutation is never sent twice: after an unknown outcome the operation ends (sending it
//! again could apply it twice). A read may be sent again after a lost reply (it changes
//! nothing), within the operation's deadline.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::checker::history::{Op, Outcome, Recorder, Ret};

use super::resp::{CallError, Conn, Reply};

/// Client tuning.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read/write timeout of one attempt: past it the outcome is unknown. Above the server's
    /// 5 s acks=all wait, so its "not acknowledged" error arrives before the timeout.
    pub io_timeout: Duration,
    /// How long one operation keeps retrying definite refusals before it is recorded `fail`.
    pub retry_for: Duration,
    /// Mean pause between two operations of one client (uniform in 0..2x).
    pub think: Duration,
}

impl Default for ClientOpts {
    fn default() -> ClientOpts {
        ClientOpts {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_millis(6_000),
            retry_for: Duration::from_millis(3_000),
            think: Duration::from_millis(10),
        }
    }
}

/// The workload's keys: even-numbered ones are registers (GET/SET), odd ones counters
/// (GET/INCR), so INCR never meets a non-integer value.
pub fn keys(m: usize) -> Vec<(String, bool)> {
    (0..m)
        .map(|i| {
            if i % 2 == 0 {
                (format!("reg:{i}"), false)
            } else {
                (format!("ctr:{i}"), true)
            }
        })
        .collect()
}

/// Groups of keys written together by MSET and read together by MGET.
pub const GROUPS: usize = 2;

/// The keys of group `g`: one hash tag, so one slot.
pub fn group_keys(g: usize) -> Vec<String> {
    ["a", "b", "c"]
        .iter()
        .map(|k| format!("{{grp:{g}}}:{k}"))
        .collect()
}

/// How an attempt sequence ended.
enum Attempt {
    Reply(Reply),
    /// Definitely not applied; the text says why.
    Refused(String),
    /// Maybe applied.
    Unknown(String),
}

/// Counts of what clients saw, for the verdict file.
#[derive(Debug, Default, Clone)]
pub struct ClientStats {
    /// Error or condition (first word) → count, over all attempts.
    pub events: BTreeMap<String, u64>,
}

impl ClientStats {
    fn note(&mut self, what: &str) {
        let word = what.split_whitespace().next().unwrap_or("?");
        *self.events.entry(word.to_string()).or_default() += 1;
    }

    /// Notes why an operation ended `fail` or `unknown`: `<outcome>:<first word of why>`.
    fn note_cause(&mut self, outcome: &str, why: &str) {
        let word = why
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .trim_end_matches(':');
        *self.events.entry(format!("{outcome}:{word}")).or_default() += 1;
    }

    pub fn merge(&mut self, o: &ClientStats) {
        for (k, v) in &o.events {
            *self.events.entry(k.clone()).or_default() += v;
        }
    }
}

/// One client: its connections and what it learned of the routes.
pub struct Client {
    pub id: u64,
    nodes: Vec<String>,
    conns: HashMap<String, Conn>,
    /// key → address of the node that last redirected us there (MOVED).
    route: HashMap<Vec<u8>, String>,
    opts: ClientOpts,
    rng: fastrand::Rng,
    next_node: usize,
    pub stats: ClientStats,
}

impl Client {
    pub fn new(id: u64, nodes: Vec<String>, opts: ClientOpts, seed: u64) -> Client {
        let next_node = id as usize % nodes.len().max(1);
        Client {
            id,
            nodes,
            conns: HashMap::new(),
            route: HashMap::new(),
            opts,
            rng: fastrand::Rng::with_seed(seed),
            next_node,
            stats: ClientStats::default(),
        }
    }

    fn pick_addr(&mut self, key: &[u8]) -> String {
        if let Some(a) = self.route.get(key) {
            return a.clone();
        }
        let a = self.nodes[self.next_node % self.nodes.len()].clone();
        self.next_node = (self.next_node + 1) % self.nodes.len();
        a
    }

    /// Sends `args` (the key is `args[1]`) until a reply that is not a redirect or a
    /// retryable refusal, or until `retry_for` passes.
    fn attempt(&mut self, args: &[&[u8]], mutation: bool) -> Attempt {
        let key = args[1].to_vec();
        let start = Instant::now();
        let mut last = String::from("no attempt");
        for n in 0..200u32 {
            if n > 0 {
                if start.elapsed() >= self.opts.retry_for {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20 + self.rng.u64(0..40)));
            }
            let addr = self.pick_addr(&key);
            let mut conn = match self.conns.remove(&addr) {
                Some(c) => c,
                None => {
                    match Conn::connect(&addr, self.opts.connect_timeout, self.opts.io_timeout) {
                        Ok(c) => c,
                        Err(e) => {
                            // Not sent: forget the route, try another node.
                            self.stats.note("connect-error");
                            last = format!("connect {addr}: {e}");
                            self.route.remove(&key);
                            continue;
                        }
                    }
                }
            };
            match conn.call(args) {
                Err(CallError::NotSent(e)) => {
                    self.stats.note("send-error");
                    last = format!("send to {addr}: {e}");
                    self.route.remove(&key);
                    continue;
                }
                Err(CallError::NoReply(e)) => {
                    self.stats.note("no-reply");
                    self.route.remove(&key);
                    last = format!("no reply from {addr}: {e}");
                    if mutation {
                        return Attempt::Unknown(last);
                    }
                    // A read changes nothing: ask again.
                    continue;
                }
                Ok(reply) => {
                    self.conns.insert(addr.clone(), conn);
                    let Reply::Error(e) = reply else {
                        return Attempt::Reply(reply);
                    };
                    self.stats.note(&e);
                    if let Some(rest) = e.strip_prefix("MOVED ") {
                        match rest.split_whitespace().nth(1) {
                            Some(target) if target.contains(':') => {
                                self.route.insert(key.clone(), target.to_string());
                            }
                            _ => return Attempt::Refused(e),
                        }
                        last = e;
                        continue;
                    }
                    let retry = ["TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS", "LOADING"]
                        .iter()
                        .any(|p| e.starts_with(p))
                        || e.starts_with("ERR partition not available");
                    if retry {
                        // Ask another node next time: this one may be fenced or leaving.
                        self.route.remove(&key);
                        last = e;
                        continue;
                    }
                    // "disk space low": refused before anything is written or applied
                    // (`storage.min_free_space`), on the leader, so on no replica either.
                    let definite = e.starts_with("CROSSSLOT")
                        || e.starts_with("ERR disk space low")
                        || e.starts_with("ERR value is not an integer")
                        || e.starts_with("ERR wrong number of arguments")
                        || e.starts_with("ERR unknown command");
                    if definite || !mutation {
                        return Attempt::Refused(e);
                    }
                    return Attempt::Unknown(e);
                }
            }
        }
        Attempt::Refused(format!("gave up after {:?}: {last}", start.elapsed()))
    }

    /// GET, recorded.
    pub fn read(&mut self, rec: &Recorder, key: &str) -> Outcome {
        self.recorded(rec, key, Op::Read, &[b"GET", key.as_bytes()], |r| match r {
            Reply::Bulk(v) => Some(Ret::Value(v)),
            _ => None,
        })
    }

    /// SET key value, recorded.
    pub fn write(&mut self, rec: &Recorder, key: &str, value: &[u8]) -> Outcome {
        let op = Op::Write(value.to_vec());
        self.recorded(
            rec,
            key,
            op,
            &[b"SET", key.as_bytes(), value],
            |r| match r {
                Reply::Status(s) if s == "OK" => Some(Ret::Done),
                _ => None,
            },
        )
    }

    /// INCR key, recorded.
    pub fn incr(&mut self, rec: &Recorder, key: &str) -> Outcome {
        self.recorded(
            rec,
            key,
            Op::Incr(1),
            &[b"INCR", key.as_bytes()],
            |r| match r {
                Reply::Int(n) => Some(Ret::Int(n)),
                _ => None,
            },
        )
    }

    /// MSET of every key of group `g` to `value`, recorded as a SET of each key.
    pub fn mset_group(&mut self, rec: &Recorder, g: usize, value: &[u8]) -> Outcome {
        let keys = group_keys(g);
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for k in &keys {
            args.push(k.as_bytes());
            args.push(value);
        }
        let ops = keys.iter().map(|_| Op::Write(value.to_vec())).collect();
        let outcomes = self.recorded_group(rec, &keys, ops, &args, |r| match r {
            Reply::Status(s) if s == "OK" => Some(vec![Ret::Done; keys.len()]),
            _ => None,
        });
        outcomes.into_iter().next().unwrap_or(Outcome::Fail)
    }

    /// MGET of every key of group `g`, recorded as a GET of each key; values that differ
    /// are part of an MSET seen (`torn-group`).
    pub fn mget_group(&mut self, rec: &Recorder, g: usize) -> Outcome {
        let keys = group_keys(g);
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let ops = keys.iter().map(|_| Op::Read).collect();
        let mut torn = None;
        let outcomes = self.recorded_group(rec, &keys, ops, &args, |r| {
            let Reply::Array(Some(items)) = r else {
                return None;
            };
            let values: Option<Vec<Option<Vec<u8>>>> = items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(v) => Some(v),
                    _ => None,
                })
                .collect();
            let values = values.filter(|v| v.len() == keys.len())?;
            if values.iter().any(|v| *v != values[0]) {
                torn = Some(format!("{values:?}"));
            }
            Some(values.into_iter().map(Ret::Value).collect())
        });
        if let Some(seen) = torn {
            self.stats.note("torn-group");
            eprintln!(
                "chaos: client {}: MGET of group {g} saw part of an MSET: {seen}",
                self.id
            );
        }
        outcomes.into_iter().next().unwrap_or(Outcome::Fail)
    }

    /// Runs one command and records it: `ok` with what `expected` makes of the reply; a
    /// refusal before executing is `fail`; anything else is `unknown` for a mutation (it may
    /// have applied) and `fail` for a read (a read changes nothing).
    fn recorded(
        &mut self,
        rec: &Recorder,
        key: &str,
        op: Op,
        args: &[&[u8]],
        expected: impl FnOnce(Reply) -> Option<Ret>,
    ) -> Outcome {
        let keys = [key.to_string()];
        let outcomes = self.recorded_group(rec, &keys, vec![op], args, |r| {
            expected(r).map(|ret| vec![ret])
        });
        outcomes.into_iter().next().unwrap_or(Outcome::Fail)
    }

    /// `recorded` for a command on several keys, one history operation per key (`ops`, in
    /// the keys' order), all with the command's invocation and completion; `expected` gives
    /// one result per key.
    fn recorded_group(
        &mut self,
        rec: &Recorder,
        keys: &[String],
        ops: Vec<Op>,
        args: &[&[u8]],
        expected: impl FnOnce(Reply) -> Option<Vec<Ret>>,
    ) -> Vec<Outcome> {
        let mutation = ops.iter().any(Op::is_mutation);
        let name = String::from_utf8_lossy(args[0]).into_owned();
        let pending: Vec<_> = keys
            .iter()
            .zip(ops)
            .map(|(k, op)| rec.invoke(self.id, k.as_bytes(), op))
            .collect();
        let unexpected = |me: &mut Client, shown: &str| {
            me.stats.note("unexpected-reply");
            log_surprise(me.id, &name, &keys[0], shown);
            if mutation {
                Outcome::Unknown
            } else {
                Outcome::Fail
            }
        };
        let outcomes: Vec<Outcome> = match self.attempt(args, mutation) {
            Attempt::Reply(r) => {
                let shown = format!("{r:?}");
                match expected(r) {
                    Some(rets) if rets.len() == keys.len() => {
                        rets.into_iter().map(Outcome::Ok).collect()
                    }
                    _ => vec![unexpected(self, &shown); keys.len()],
                }
            }
            Attempt::Refused(e) => {
                self.stats
                    .note_cause(if mutation { "fail" } else { "read-fail" }, &e);
                vec![Outcome::Fail; keys.len()]
            }
            // Only mutations end as unknown.
            Attempt::Unknown(e) => {
                self.stats
                    .note_cause(if mutation { "unknown" } else { "read-unknown" }, &e);
                vec![Outcome::Unknown; keys.len()]
            }
        };
        for (p, o) in pending.into_iter().zip(&outcomes) {
            rec.complete(p, o.clone());
        }
        outcomes
    }

    /// Random operations until `stop` is set, `until` passes or `max_ops` are done.
    pub fn run(
        &mut self,
        rec: &Recorder,
        keys: &[(String, bool)],
        stop: &AtomicBool,
        until: Instant,
        max_ops: u64,
    ) -> u64 {
        let mut seq = 0u64;
        while seq < max_ops && !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let (key, counter) = &keys[self.rng.usize(..keys.len())];
            let mutate = self.rng.bool();
            // One operation in five is on a group.
            if self.rng.usize(..5) == 0 {
                let g = self.rng.usize(..GROUPS);
                if mutate {
                    let v = format!("c{}-{seq}", self.id);
                    self.mset_group(rec, g, v.as_bytes());
                } else {
                    self.mget_group(rec, g);
                }
                seq += 1;
                continue;
            }
            match (mutate, counter) {
                (false, _) => {
                    self.read(rec, key);
                }
                (true, false) => {
                    let v = format!("c{}-{seq}", self.id);
                    self.write(rec, key, v.as_bytes());
                }
                (true, true) => {
                    self.incr(rec, key);
                }
            }
            seq += 1;
            let think = self.opts.think.as_micros() as u64;
            if think > 0 {
                std::thread::sleep(Duration::from_micros(self.rng.u64(0..=2 * think)));
            }
        }
        seq
    }
}

fn log_surprise(client: u64, cmd: &str, key: &str, reply: &str) {
    eprintln!("chaos: client {client}: unexpected reply to {cmd} {key}: {reply}");
}

/// What the clients of a run do.
#[derive(Debug, Clone)]
pub struct Spec {
    pub clients: u64,
    pub nodes: Vec<String>,
    pub keys: Vec<(String, bool)>,
    pub opts: ClientOpts,
    pub seed: u64,
}

/// Starts `spec.clients` client threads until `stop` or `until`; the handle returns their
/// merged stats and their number of operations.
pub fn run_clients(
    spec: &Spec,
    rec: &Arc<Recorder>,
    stop: &Arc<AtomicBool>,
    until: Instant,
) -> std::thread::JoinHandle<(ClientStats, u64)> {
    let spec = spec.clone();
    let rec = Arc::clone(rec);
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let handles: Vec<_> = (0..spec.clients)
            .map(|c| {
                let mut client = Client::new(
                    c + 1,
                    spec.nodes.clone(),
                    spec.opts.clone(),
                    spec.seed.wrapping_mul(1_000_003).wrapping_add(c),
                );
                let keys = spec.keys.clone();
                let rec = Arc::clone(&rec);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let n = client.run(&rec, &keys, &stop, until, 10_000_000);
                    (client.stats, n)
                })
            })
            .collect();
        let mut stats = ClientStats::default();
        let mut ops = 0;
        for h in handles {
            if let Ok((s, n)) = h.join() {
                stats.merge(&s);
                ops += n;
            }
        }
        (stats, ops)
    })
}
