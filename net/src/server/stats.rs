//! Counters each worker keeps for INFO, summed across workers on request.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Process-wide state the workers share. Only atomics, but for `requirepass`, which no
/// worker reads on its hot path.
pub struct Shared {
    pub clients: AtomicUsize,
    pub next_client_id: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    /// The next slow log entry's id (`slowlog`).
    pub slowlog_ids: AtomicU64,
    /// LASTSAVE: the start, or the last SAVE/BGSAVE that fsynced every log (unix seconds; set
    /// once every worker's part succeeded, `Finisher::Saved`).
    pub last_save: std::sync::Arc<AtomicU64>,
    /// The most heap bytes seen in use (`info::heap_bytes`) by an INFO since the start or
    /// the last CONFIG RESETSTAT (see `note_memory`).
    pub memory_peak: AtomicU64,
    /// Heap bytes in use at start, before the partitions opened (`used_memory_startup`).
    pub memory_startup: u64,
    pub shutdown: AtomicBool,
    /// SHUTDOWN in cluster mode: the node runs a controlled shutdown first (see
    /// `ServerHandle::shutdown_requested`), then stops the workers.
    pub shutdown_requested: AtomicBool,
    /// Workers that finished their in-flight work during shutdown.
    pub drained: AtomicUsize,
    pub started: Instant,
    pub run_id: String,
    pub port: AtomicUsize,
    pub config_file: Option<std::path::PathBuf>,
    /// The settings as CONFIG SET left them, and how many CONFIG SETs made them: changed
    /// under this lock only, then sent to every worker (see `Op::ConfigSet`). Front doors
    /// other than the workers' RESP connections (the gRPC KV service) read the password and
    /// limits from here; workers read their own copy.
    pub config: std::sync::Mutex<(u64, std::sync::Arc<simplekv_conf::Config>)>,
    /// Pub/sub subscriptions (of every kind), per worker: PUBLISH runs on the workers with
    /// some, and answers 0 at once while there are none (`pubsub`).
    pub subscriptions: WorkerCounts,
    /// The connections in MONITOR mode, per worker.
    pub monitors: WorkerCounts,
    /// CLIENT PAUSE (`pause`).
    pub pause: super::pause::ClientPause,
}

impl Shared {
    /// INFO's `used_memory_peak`: the process's peak resident memory, which the kernel keeps
    /// at no cost (`VmHWM`), or the most heap in use any INFO saw, whichever is larger (so
    /// that it is never below `used_memory`). Redis samples its allocator's counter on a
    /// timer; asking glibc for its statistics walks its free lists under the arenas' locks,
    /// which a worker on its hot path must not wait for, so simplekv asks only when asked.
    pub fn note_memory(&self) -> u64 {
        let used = super::info::heap_bytes();
        let before = self
            .memory_peak
            .fetch_max(used, std::sync::atomic::Ordering::Relaxed);
        before.max(used).max(super::info::rss_peak_bytes())
    }

    /// CONFIG RESETSTAT: the peak starts again from now (the kernel's too, where it lets).
    pub fn reset_memory_peak(&self) {
        self.memory_peak
            .store(0, std::sync::atomic::Ordering::Relaxed);
        // "5" resets the peak resident size (Linux 4.0 and later); nothing else changes.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

/// A rate as Redis's instantaneous metrics give it (`instantaneous_ops_per_sec`...): the
/// counter is sampled at most every 100 ms and the rate is the mean of the last 16 samples.
#[derive(Clone, Debug, Default)]
pub struct RateSampler {
    rates: [f64; 16],
    next: usize,
    last: Option<(Instant, u64)>,
}

impl RateSampler {
    const PERIOD: Duration = Duration::from_millis(100);

    /// Takes `value` (a growing counter) at `now`.
    pub fn sample(&mut self, now: Instant, value: u64) {
        if let Some((t, v)) = self.last {
            let dt = now.saturating_duration_since(t);
            if dt < Self::PERIOD {
                return;
            }
            self.rates[self.next] = value.saturating_sub(v) as f64 / dt.as_secs_f64();
            self.next = (self.next + 1) % self.rates.len();
        }
        self.last = Some((now, value));
    }

    /// Per second, over the last 16 samples.
    pub fn rate(&self) -> f64 {
        self.rates.iter().sum::<f64>() / self.rates.len() as f64
    }
}

/// One worker's counters; `merge` adds another's.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    pub keys: u64,
    pub expires: u64,
    pub clients: u64,
    /// Connections waiting: in WAIT, or stopped by CLIENT PAUSE (INFO `blocked_clients`).
    pub blocked: u64,
    /// Of those, the ones waiting with a deadline (WAIT with a timeout: INFO
    /// `clients_in_timeout_table`).
    pub in_timeout_table: u64,
    /// The largest query buffer (allocated) and unread output among the connections (INFO
    /// `client_recent_max_input_buffer`, `client_recent_max_output_buffer`).
    pub max_input_buffer: u64,
    pub max_output_buffer: u64,
    pub commands: u64,
    pub net_in: u64,
    pub net_out: u64,
    /// Reads from and writes to client sockets that moved bytes (INFO
    /// `total_reads_processed`, `total_writes_processed`).
    pub reads: u64,
    pub writes: u64,
    /// Instantaneous rates (see [`RateSampler`]): commands, and KiB in and out, per second.
    pub ops_per_sec: f64,
    pub input_kbps: f64,
    pub output_kbps: f64,
    pub hits: u64,
    pub misses: u64,
    /// Commands that waited for a connection's commands in flight on another worker to run
    /// (INFO `pipeline_order_waits`; see `server.ordered_pipelines`).
    pub order_waits: u64,
    pub expired_keys: u64,
    pub log_bytes: u64,
    pub dead_bytes: u64,
    pub keydir_bytes: u64,
    pub segments: u64,
    pub partitions: u64,
    pub merges_running: u64,
    pub merges_done: u64,
    pub commit_errors: u64,
    /// The last write or fsync of the logs failed (INFO `aof_last_write_status:err`); a
    /// later successful write clears it.
    pub commit_failing: bool,
    pub last_commit_error: Option<String>,
    /// Workers committing through a commit journal (fsync always).
    pub journals: u64,
    /// Journal checkpoints completed (every partition log fsynced after a switch).
    pub journal_checkpoints: u64,
    /// Commits of a partition fsynced directly because its records did not fit in the journal
    /// (a checkpoint still running, or a batch larger than a journal file).
    pub journal_direct_syncs: u64,
    pub unsynced: u64,
    /// What opening the partition logs did (INFO `log_load_*`): records loaded, segments
    /// scanned, segments loaded from hint files, active segments loaded from shutdown hints,
    /// and the time it took (the slowest worker's; each opens its partitions in turn).
    pub load_records: u64,
    pub load_scanned: u64,
    pub load_from_hints: u64,
    pub load_shutdown_hints: u64,
    pub load_ms: u64,
    /// (partition, keys, expires) for the keyspace section.
    pub log_end_total: u64,
    pub pending_remote: u64,
    pub server: Option<ServerInfo>,
    /// Cluster mode: the INFO cluster section (the same from every worker).
    pub cluster_section: Option<String>,
    /// Cluster mode: one INFO replication line per partition held here, by partition.
    pub repl_lines: Vec<(u32, String)>,
    /// Error replies sent (INFO stats `total_error_replies`, INFO errorstats).
    pub errors: super::conn::ErrorTally,
    /// Calls by command (INFO commandstats).
    pub cmdstats: CmdStats,
    /// Fingerprints of the channels, patterns and shard channels with subscribers (INFO
    /// stats counts the distinct ones over the workers; `pubsub::Registry::fingerprints`).
    pub pubsub_names: [Vec<u64>; 3],
    /// The latency monitor's spikes (LATENCY LATEST and the others; CONFIG RESETSTAT keeps
    /// them, as Redis's).
    pub latency_events: super::latency_monitor::LatencyEvents,
}

/// One command's line of INFO commandstats, and its latency histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmdStat {
    pub calls: u64,
    /// Time it ran on its connection's worker (parts run on other workers are not in it).
    pub usec: u64,
    /// Refused before it ran (wrong arity, NOAUTH, a refused subcommand).
    pub rejected: u64,
    /// Ran and answered an error.
    pub failed: u64,
    /// How long its calls ran, where they ran (INFO latencystats, LATENCY HISTOGRAM).
    pub latency: super::latency::Histogram,
}

/// Hashes the address of a command's name: one multiplication per command.
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// INFO commandstats, by command name (a subcommand as `config|get`, as Redis 7 names it).
///
/// Names are `&'static str`s, nearly all from the command table, so a call is found by the
/// address of its name (`by_addr`, no string hashed or compared); a name first seen at an
/// address is looked up by its text (`by_name`), so that a name held at two addresses still
/// has one line.
#[derive(Clone, Debug, Default)]
pub struct CmdStats {
    stats: Vec<(&'static str, CmdStat)>,
    by_addr: HashMap<u64, usize, BuildHasherDefault<AddrHasher>>,
    by_name: HashMap<&'static str, usize>,
}

impl CmdStats {
    #[inline]
    fn get(&mut self, name: &'static str) -> &mut CmdStat {
        // A name's address alone could be the address of a shorter name at its start.
        let addr = (name.as_ptr() as u64) ^ ((name.len() as u64) << 48);
        let i = match self.by_addr.get(&addr) {
            Some(&i) => i,
            None => {
                let next = self.stats.len();
                let i = *self.by_name.entry(name).or_insert(next);
                if i == next {
                    self.stats.push((name, CmdStat::default()));
                }
                self.by_addr.insert(addr, i);
                i
            }
        };
        &mut self.stats[i].1
    }

    /// A call of `name` refused before it ran.
    pub fn record_rejected(&mut self, name: &'static str) {
        self.get(name).rejected += 1;
    }

    /// A call of `name` that ran `usec` here, counted in its latency histogram too when
    /// `track` (one lookup for both).
    #[inline]
    pub fn record_call(&mut self, name: &'static str, usec: u64, track: bool) {
        let s = self.get(name);
        s.calls += 1;
        s.usec += usec;
        if track {
            s.latency.record_usec(usec);
        }
    }

    /// A call counted by another worker (its connection's) that ran here for `usec`: its
    /// time, and its latency when `track`ed.
    pub fn record_ran(&mut self, name: &'static str, usec: u64, track: bool) {
        let s = self.get(name);
        s.usec += usec;
        if track {
            s.latency.record_usec(usec);
        }
    }

    /// The latency histograms with calls, by name.
    pub fn latencies(&self) -> Vec<(&'static str, &super::latency::Histogram)> {
        let mut v: Vec<_> = self
            .stats
            .iter()
            .filter(|(_, s)| s.latency.calls() > 0)
            .map(|(n, s)| (*n, &s.latency))
            .collect();
        v.sort_unstable_by_key(|(n, _)| *n);
        v
    }

    /// Calls that answered an error.
    pub fn failed(&mut self, names: &mut Vec<&'static str>) {
        for name in names.drain(..) {
            self.get(name).failed += 1;
        }
    }

    pub fn absorb(&mut self, o: &CmdStats) {
        for (name, o) in &o.stats {
            let s = self.get(name);
            s.calls += o.calls;
            s.usec += o.usec;
            s.rejected += o.rejected;
            s.failed += o.failed;
            s.latency.merge(&o.latency);
        }
    }

    /// The lines of INFO commandstats, by name.
    pub fn lines(&self) -> Vec<String> {
        // Not a command only timed here for another worker's connection (or the gRPC
        // service) and never called here or anywhere: no line, as in Redis.
        let mut v: Vec<(&str, &CmdStat)> = self
            .stats
            .iter()
            .filter(|(_, s)| s.calls + s.rejected + s.failed > 0)
            .map(|(n, s)| (*n, s))
            .collect();
        v.sort_unstable_by_key(|(n, _)| *n);
        v.into_iter()
            .map(|(n, s)| {
                let per_call = if s.calls > 0 {
                    s.usec as f64 / s.calls as f64
                } else {
                    0.0
                };
                format!(
                    "cmdstat_{n}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}",
                    s.calls, s.usec, s.rejected, s.failed
                )
            })
            .collect()
    }
}

/// Process-wide facts for INFO, the same from every worker.
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    pub run_id: String,
    pub port: u16,
    pub uptime_secs: u64,
    pub workers: u32,
    pub partitions: u32,
    pub config_file: String,
    pub fsync: String,
    pub hz: u32,
    pub connected_clients: u64,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub memory_peak: u64,
    pub memory_startup: u64,
    pub maxclients: u32,
    pub dir: String,
    /// Bytes free on the data directory's file system (`None`: unknown).
    pub disk_free: Option<u64>,
    pub min_free_space: u64,
    /// LASTSAVE (INFO persistence `rdb_last_save_time`).
    pub last_save: u64,
    /// The percentiles INFO latencystats shows (`server.latency_tracking_info_percentiles`),
    /// none while `server.latency_tracking` is off (as Redis: the section's title alone).
    pub latency_percentiles: Option<Vec<f64>>,
}

/// A count per worker, shared by the workers (monitoring connections, subscriptions), with
/// their total: a worker looks at the total on its hot path, one relaxed load.
pub struct WorkerCounts {
    per_worker: Box<[AtomicU32]>,
    total: AtomicU32,
}

impl WorkerCounts {
    pub fn new(workers: usize) -> WorkerCounts {
        WorkerCounts {
            per_worker: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            total: AtomicU32::new(0),
        }
    }

    /// Whether any worker counts one.
    pub fn active(&self) -> bool {
        self.total.load(Ordering::Relaxed) > 0
    }

    /// Worker `w` counts one more (before its client hears of it: `Release`).
    pub fn add(&self, w: usize) {
        if let Some(n) = self.per_worker.get(w) {
            n.fetch_add(1, Ordering::Release);
            self.total.fetch_add(1, Ordering::Release);
        }
    }

    /// Worker `w` counts one less.
    pub fn remove(&self, w: usize) {
        if let Some(n) = self.per_worker.get(w) {
            n.fetch_sub(1, Ordering::Release);
            self.total.fetch_sub(1, Ordering::Release);
        }
    }

    /// The workers that count some.
    pub fn workers(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_worker
            .iter()
            .enumerate()
            .filter(|(_, n)| n.load(Ordering::Acquire) > 0)
            .map(|(w, _)| w)
    }
}

impl WorkerStats {
    /// Moves a connection's error replies (counted as they reach its output) into these,
    /// after each command, so that a later INFO or RESETSTAT, even in the same pipeline,
    /// sees them.
    #[inline]
    pub fn take_errors(&mut self, out: &mut super::conn::Output) {
        if out.errors.total > 0 {
            self.errors.absorb(&std::mem::take(&mut out.errors));
            self.cmdstats.failed(&mut out.failed_cmds);
        }
    }

    /// CONFIG RESETSTAT: the counters Redis resets (commands, traffic, hits and misses,
    /// expired keys, error replies); what describes the state of the logs stays.
    pub fn reset_counters(&mut self) {
        self.commands = 0;
        self.net_in = 0;
        self.net_out = 0;
        self.reads = 0;
        self.writes = 0;
        self.hits = 0;
        self.misses = 0;
        self.order_waits = 0;
        self.expired_keys = 0;
        self.errors = Default::default();
        self.cmdstats = Default::default();
    }

    pub fn merge(&mut self, o: &WorkerStats) {
        self.latency_events.merge(&o.latency_events);
        self.keys += o.keys;
        self.expires += o.expires;
        self.clients += o.clients;
        self.blocked += o.blocked;
        self.in_timeout_table += o.in_timeout_table;
        self.max_input_buffer = self.max_input_buffer.max(o.max_input_buffer);
        self.max_output_buffer = self.max_output_buffer.max(o.max_output_buffer);
        self.commands += o.commands;
        self.net_in += o.net_in;
        self.net_out += o.net_out;
        self.reads += o.reads;
        self.writes += o.writes;
        self.ops_per_sec += o.ops_per_sec;
        self.input_kbps += o.input_kbps;
        self.output_kbps += o.output_kbps;
        self.hits += o.hits;
        self.misses += o.misses;
        self.order_waits += o.order_waits;
        self.expired_keys += o.expired_keys;
        self.log_bytes += o.log_bytes;
        self.dead_bytes += o.dead_bytes;
        self.keydir_bytes += o.keydir_bytes;
        self.segments += o.segments;
        self.partitions += o.partitions;
        self.merges_running += o.merges_running;
        self.merges_done += o.merges_done;
        self.commit_errors += o.commit_errors;
        self.commit_failing |= o.commit_failing;
        self.journals += o.journals;
        self.journal_checkpoints += o.journal_checkpoints;
        self.journal_direct_syncs += o.journal_direct_syncs;
        if o.last_commit_error.is_some() {
            self.last_commit_error = o.last_commit_error.clone();
        }
        self.unsynced += o.unsynced;
        self.load_records += o.load_records;
        self.load_scanned += o.load_scanned;
        self.load_from_hints += o.load_from_hints;
        self.load_shutdown_hints += o.load_shutdown_hints;
        self.load_ms = self.load_ms.max(o.load_ms);
        self.log_end_total += o.log_end_total;
        self.pending_remote += o.pending_remote;
        if self.server.is_none() {
            self.server = o.server.clone();
        }
        if self.cluster_section.is_none() {
            self.cluster_section = o.cluster_section.clone();
        }
        self.repl_lines.extend(o.repl_lines.iter().cloned());
        for (mine, theirs) in self.pubsub_names.iter_mut().zip(&o.pubsub_names) {
            mine.extend_from_slice(theirs);
        }
        self.errors.absorb(&o.errors);
        self.cmdstats.absorb(&o.cmdstats);
        self.repl_lines.sort_by_key(|(p, _)| *p);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::RateSampler;

    #[test]
    fn a_command_name_has_one_line_wherever_its_text_lives() {
        // The same name at two addresses (leaked so that they differ), and a name that is
        // the start of another at the same address.
        let a: &'static str = Box::leak(String::from("get").into_boxed_str());
        let b: &'static str = Box::leak(String::from("get").into_boxed_str());
        assert_ne!(a.as_ptr(), b.as_ptr());
        let long: &'static str = "config|get";
        let short: &'static str = &long[..6];
        let mut s = super::CmdStats::default();
        s.record_call(a, 3, false);
        s.record_call(b, 4, false);
        s.record_call(a, 5, false);
        s.record_rejected(short);
        s.record_call(long, 1, false);
        let mut o = super::CmdStats::default();
        o.record_call("get", 10, false);
        s.absorb(&o);
        assert_eq!(
            s.lines(),
            [
                "cmdstat_config:calls=0,usec=0,usec_per_call=0.00,rejected_calls=1,failed_calls=0",
                "cmdstat_config|get:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0",
                "cmdstat_get:calls=4,usec=22,usec_per_call=5.50,rejected_calls=0,failed_calls=0",
            ]
        );
    }

    #[test]
    fn counts_are_kept_per_worker() {
        let m = super::WorkerCounts::new(3);
        assert!(!m.active());
        m.add(2);
        m.add(2);
        m.add(0);
        assert!(m.active());
        assert_eq!(m.workers().collect::<Vec<_>>(), vec![0, 2]);
        m.remove(2);
        m.remove(0);
        assert_eq!(m.workers().collect::<Vec<_>>(), vec![2]);
        m.remove(2);
        assert!(!m.active());
        // A worker out of range counts nothing.
        m.add(7);
        assert!(!m.active());
    }

    #[test]
    fn rate_is_the_mean_of_the_last_sixteen_samples_taken_100_ms_apart() {
        let mut r = RateSampler::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        r.sample(ms(0), 0);
        assert_eq!(r.rate(), 0.0);
        // 1000 per second for 16 samples.
        for i in 1..=16 {
            r.sample(ms(i * 100), i * 100);
            // Samples closer than 100 ms are skipped.
            r.sample(ms(i * 100 + 50), i * 100 + 1_000_000);
        }
        assert!((r.rate() - 1000.0).abs() < 1e-6, "{}", r.rate());
        // Idle from then on: the rate falls as zero samples replace the old ones.
        for i in 17..=24 {
            r.sample(ms(i * 100), 1600);
        }
        assert!((r.rate() - 500.0).abs() < 1e-6, "{}", r.rate());
        // A counter cannot go back; if it did (a reset), the sample is zero, not negative.
        r.sample(ms(2500), 0);
        assert!(r.rate() >= 0.0);
    }
}
