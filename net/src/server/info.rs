//! INFO: the sections Redis tools read, filled from every worker's counters.
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::stats::{ServerInfo, WorkerStats};
use super::worker::Worker;

impl Worker {
    /// This worker's counters plus the process-wide facts.
    pub fn collect_stats(&self) -> WorkerStats {
        let mut s = self.stats.clone();
        s.ops_per_sec = self.rates[0].rate();
        s.input_kbps = self.rates[1].rate() / 1024.0;
        s.output_kbps = self.rates[2].rate() / 1024.0;
        s.clients = self.conns.iter().flatten().count() as u64;
        s.blocked = (self.blocked_by_pause() + self.parked_waits.len()) as u64;
        s.in_timeout_table = self
            .parked_waits
            .iter()
            .filter(|w| w.deadline.is_some())
            .count() as u64;
        for c in self.conns.iter().flatten() {
            s.max_input_buffer = s.max_input_buffer.max(c.rbuf.capacity() as u64);
            let unread = c.out.wbuf.len() - c.out.wpos + c.client.stream_in_slots;
            s.max_output_buffer = s.max_output_buffer.max(unread as u64);
        }
        s.partitions = self.owned.len() as u64;
        s.journals = self.journaling() as u64;
        s.pubsub_names = super::pubsub::Kind::ALL.map(|k| self.pubsub.fingerprints(k));
        for &p in &self.owned {
            let Some(store) = self.store(p) else { continue };
            let st = store.stats();
            s.keys += st.keys as u64;
            s.expires += st.keys_with_expiry as u64;
            s.log_bytes += st.total_bytes;
            s.dead_bytes += st.dead_bytes;
            s.keydir_bytes += st.keydir_bytes as u64;
            s.segments += st.segments as u64;
            s.unsynced += st.unsynced as u64;
            s.log_end_total += st.log_end;
            s.merges_running += store.merge_in_progress() as u64;
            let r = store.recovery_report();
            s.load_records += r.records;
            s.load_scanned += r.segments_read_whole() as u64;
            s.load_from_hints += r.segments_from_hints as u64;
            s.load_shutdown_hints += u64::from(r.active_from_shutdown_hint);
            s.load_ms += r.elapsed.as_millis() as u64;
            // Writes refused before they were applied (no disk space) count as failed
            // writes to the log, like commits that failed.
            s.commit_errors += st.write_errors;
            if let Some(e) = store.write_failing() {
                s.commit_failing = true;
                s.last_commit_error = Some(e.to_string());
            }
            if let Some(c) = self.cluster.as_ref() {
                let r = &c.parts[p as usize];
                let role = match r.role {
                    super::replica::Role::Leader { .. } => "leader",
                    super::replica::Role::Follower { .. } => "follower",
                    super::replica::Role::Idle => "idle",
                };
                let epoch = c.routes.parts.get(p as usize).map_or(0, |x| x.leader_epoch);
                s.repl_lines.push((
                    p,
                    format!(
                        "partition{p}:role={role},leader_epoch={epoch},log_end={},high_watermark={},isr={}",
                        st.log_end, r.hw, r.isr_len
                    ),
                ));
            }
        }
        s.cluster_section = Some(super::cluster_cmds::info_cluster_section(
            self.cluster.as_ref().map(|c| c.routes.as_ref()),
        ));
        let sh = &self.shared;
        s.server = Some(ServerInfo {
            run_id: sh.run_id.clone(),
            port: sh.port.load(Ordering::Relaxed) as u16,
            uptime_secs: sh.started.elapsed().as_secs(),
            workers: self.topo.workers,
            partitions: self.topo.partitions,
            config_file: sh
                .config_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            fsync: self.config.storage.fsync.to_string(),
            hz: self.config.server.hz,
            connected_clients: sh.clients.load(Ordering::Relaxed) as u64,
            total_connections: sh.total_connections.load(Ordering::Relaxed),
            rejected_connections: sh.rejected_connections.load(Ordering::Relaxed),
            memory_peak: sh.note_memory(),
            memory_startup: sh.memory_startup,
            maxclients: self.config.server.maxclients,
            dir: self.config.storage.dir.display().to_string(),
            disk_free: simplekv_engine::free_space(&self.config.storage.dir),
            min_free_space: self.config.storage.min_free_space,
            last_save: sh.last_save.load(Ordering::Relaxed),
            latency_percentiles: self.config.server.latency_tracking.then(|| {
                simplekv_conf::parse_percentiles(
                    &self.config.server.latency_tracking_info_percentiles,
                )
                .unwrap_or_default()
            }),
        });
        s
    }
}

/// Bytes the allocator has handed out and not had back (Redis's `used_memory`): glibc's
/// `mallinfo2`, its in-use chunks plus its mmapped blocks. Falls back to the RSS elsewhere.
pub fn heap_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        rss_bytes()
    }
}

/// Gives the allocator's free memory back to the system (MEMORY PURGE); false where there is
/// no way to.
pub fn purge_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages of the heap to the kernel.
        unsafe { libc::malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's peak resident memory (`VmHWM` in /proc/self/status), 0 where unknown.
pub fn rss_peak_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    // /proc/self/statm: size resident ... in pages.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The machine's memory (`MemTotal` of /proc/meminfo), 0 where unknown.
fn system_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// (system, user) CPU seconds of the process (`RUSAGE_SELF`: every thread) or of its
/// waited-for children.
fn cpu_seconds(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_stime), secs(u.ru_utime))
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2}G", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.2}M", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "errorstats",
    "cluster",
    "keyspace",
];

/// Renders the INFO text for the asked sections ("all"/"everything"/"default" or names).
pub fn render(t: &WorkerStats, asked: &[String]) -> String {
    let want = |name: &str| {
        asked.is_empty()
            || asked.iter().any(|a| {
                a == name
                    || a == "all"
                    || a == "everything"
                    || (a == "default" && DEFAULT_SECTIONS.contains(&name))
            })
    };
    let si = t.server.clone().unwrap_or_default();
    let mut o = String::new();
    if want("server") {
        let _ = write!(
            o,
            "# Server\r\nredis_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nsimplekv_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:{}\r\nconfigured_hz:{}\r\nworkers:{}\r\npartitions:{}\r\nexecutable:{}\r\nconfig_file:{}\r\n\r\n",
            super::REDIS_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION"),
            os_name(),
            std::process::id(),
            si.run_id,
            si.port,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
            si.uptime_secs,
            si.uptime_secs / 86400,
            si.hz,
            si.hz,
            si.workers,
            si.partitions,
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            si.config_file,
        );
    }
    if want("clients") {
        let _ = write!(
            o,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:{}\r\nclient_recent_max_output_buffer:{}\r\nblocked_clients:{}\r\ntracking_clients:0\r\nclients_in_timeout_table:{}\r\n\r\n",
            si.connected_clients,
            si.maxclients,
            t.max_input_buffer,
            t.max_output_buffer,
            t.blocked,
            t.in_timeout_table
        );
    }
    if want("memory") {
        let rss = rss_bytes();
        let used = heap_bytes();
        let peak = si.memory_peak.max(used);
        let total = system_memory_bytes();
        let _ = write!(
            o,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nused_memory_peak_perc:{:.2}%\r\nused_memory_startup:{}\r\nused_memory_overhead:{}\r\nused_memory_dataset:{}\r\nused_memory_dataset_perc:{:.2}%\r\nmem_fragmentation_ratio:{:.2}\r\nkeydir_bytes:{}\r\nkeydir_bytes_human:{}\r\nkeydir_bytes_per_key:{:.1}\r\ntotal_system_memory:{total}\r\ntotal_system_memory_human:{}\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\nmem_allocator:libc\r\n\r\n",
            human(used),
            human(rss),
            human(peak),
            100.0 * used as f64 / peak.max(1) as f64,
            si.memory_startup,
            // The dataset held in memory is the keydir (values live in the logs); the rest
            // of what the allocator holds is overhead: buffers, tables, threads' caches.
            used.saturating_sub(t.keydir_bytes),
            t.keydir_bytes.min(used),
            100.0 * t.keydir_bytes.min(used) as f64 / used.max(1) as f64,
            rss as f64 / used.max(1) as f64,
            t.keydir_bytes,
            human(t.keydir_bytes),
            if t.keys > 0 {
                t.keydir_bytes as f64 / t.keys as f64
            } else {
                0.0
            },
            human(total),
        );
    }
    if want("persistence") {
        let _ = write!(
            o,
            "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\naof_enabled:1\r\naof_rewrite_in_progress:{}\r\naof_last_write_status:{}\r\nappendfsync:{}\r\naof_current_size:{}\r\nlog_bytes:{}\r\nlog_bytes_human:{}\r\nlog_dead_bytes:{}\r\nlog_segments:{}\r\nmerges_completed:{}\r\ncommit_journals:{}\r\ncommit_journal_checkpoints:{}\r\ncommit_journal_direct_syncs:{}\r\ncommit_errors:{}\r\nlast_commit_error:{}\r\ndisk_free_bytes:{}\r\ndisk_min_free_bytes:{}\r\ndisk_space_low:{}\r\ndir:{}\r\nlog_load_records:{}\r\nlog_load_segments_scanned:{}\r\nlog_load_segments_from_hints:{}\r\nlog_load_shutdown_hints:{}\r\nlog_load_ms:{}\r\n\r\n",
            si.last_save,
            (t.merges_running > 0) as u8,
            if t.commit_failing { "err" } else { "ok" },
            si.fsync,
            t.log_bytes,
            t.log_bytes,
            human(t.log_bytes),
            t.dead_bytes,
            t.segments,
            t.merges_done,
            t.journals,
            t.journal_checkpoints,
            t.journal_direct_syncs,
            t.commit_errors,
            t.last_commit_error.as_deref().unwrap_or(""),
            si.disk_free.map(|f| f.to_string()).unwrap_or_default(),
            si.min_free_space,
            (si.min_free_space > 0 && si.disk_free.is_some_and(|f| f <= si.min_free_space)) as u8,
            si.dir,
            t.load_records,
            t.load_scanned,
            t.load_from_hints,
            t.load_shutdown_hints,
            t.load_ms,
        );
    }
    if want("stats") {
        let _ = write!(
            o,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\ntotal_reads_processed:{}\r\ntotal_writes_processed:{}\r\ninstantaneous_ops_per_sec:{:.0}\r\ninstantaneous_input_kbps:{:.2}\r\ninstantaneous_output_kbps:{:.2}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\npubsubshard_channels:{}\r\ntotal_error_replies:{}\r\npipeline_order_waits:{}\r\n\r\n",
            si.total_connections,
            t.commands,
            t.net_in,
            t.net_out,
            t.reads,
            t.writes,
            t.ops_per_sec,
            t.input_kbps,
            t.output_kbps,
            si.rejected_connections,
            t.expired_keys,
            t.hits,
            t.misses,
            distinct(&t.pubsub_names[0]),
            distinct(&t.pubsub_names[1]),
            distinct(&t.pubsub_names[2]),
            t.errors.total,
            t.order_waits,
        );
    }
    if want("replication") {
        let _ = write!(
            o,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\nrepl_backlog_size:0\r\nrepl_backlog_first_byte_offset:0\r\nrepl_backlog_histlen:0\r\n",
            // A standalone Redis master's replication id is random per start, as the run id.
            si.run_id,
            "0".repeat(40),
            t.log_end_total
        );
        for (_, line) in &t.repl_lines {
            let _ = write!(o, "{line}\r\n");
        }
        o.push_str("\r\n");
    }
    if want("cpu") {
        let (sys, user) = cpu_seconds(libc::RUSAGE_SELF);
        let (sys_children, user_children) = cpu_seconds(libc::RUSAGE_CHILDREN);
        let _ = write!(
            o,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:{sys_children:.6}\r\nused_cpu_user_children:{user_children:.6}\r\n\r\n"
        );
    }
    // Not a default section (INFO without arguments leaves it out), as in Redis.
    if asked
        .iter()
        .any(|a| a == "commandstats" || a == "all" || a == "everything")
    {
        o.push_str("# Commandstats\r\n");
        for line in t.cmdstats.lines() {
            o.push_str(&line);
            o.push_str("\r\n");
        }
        o.push_str("\r\n");
    }
    if want("errorstats") {
        o.push_str("# Errorstats\r\n");
        let mut kinds = t.errors.kinds.clone();
        kinds.sort();
        for (kind, count) in kinds {
            let _ = write!(o, "errorstat_{kind}:count={count}\r\n");
        }
        o.push_str("\r\n");
    }
    // Not a default section either (Redis 7.0 shows it for INFO all / everything).
    if asked
        .iter()
        .any(|a| a == "latencystats" || a == "all" || a == "everything")
    {
        o.push_str("# Latencystats\r\n");
        if let Some(percentiles) = &si.latency_percentiles {
            o.push_str(&super::latency::info_lines(
                &t.cmdstats.latencies(),
                percentiles,
            ));
        }
        o.push_str("\r\n");
    }
    if want("cluster")
        && let Some(c) = &t.cluster_section
    {
        o.push_str(c.trim_end_matches("\r\n"));
        o.push_str("\r\n\r\n");
    }
    if want("keyspace") {
        o.push_str("# Keyspace\r\n");
        if t.keys > 0 {
            let _ = write!(o, "db0:keys={},expires={},avg_ttl=0\r\n", t.keys, t.expires);
        }
        o.push_str("\r\n");
    }
    while o.ends_with("\r\n\r\n") {
        o.truncate(o.len() - 2);
    }
    o
}

/// INFO's `os` as Redis gives it: the kernel's name, release and machine (`uname -srm`).
fn os_name() -> &'static str {
    static OS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OS.get_or_init(|| {
        let field = |f: &[libc::c_char]| {
            let bytes: Vec<u8> = f
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        // SAFETY: `utsname` is plain arrays of C chars, for which all zeroes is valid.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: uname writes into the struct it is given, which lives through the call.
        if unsafe { libc::uname(&mut u) } == 0 {
            format!(
                "{} {} {}",
                field(&u.sysname),
                field(&u.release),
                field(&u.machine)
            )
        } else {
            format!("{} {}", std::env::consts::OS, std::env::consts::ARCH)
        }
    })
}

/// How many different values there are among `v`.
fn distinct(v: &[u64]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

#[cfg(test)]
mod os_tests {
    #[test]
    fn the_os_line_names_the_kernel_its_release_and_the_machine_as_redis_does() {
        let os = super::os_name();
        let parts: Vec<&str> = os.split(' ').collect();
        assert_eq!(parts.len(), 3, "{os}");
        #[cfg(target_os = "linux")]
        assert_eq!(parts[0], "Linux", "{os}");
        assert_eq!(parts[2], std::env::consts::ARCH, "{os}");
    }
}
