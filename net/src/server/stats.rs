//! Counters each worker keeps for INFO, summed across workers on request.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Instant;

/// Process-wide state the workers share. Only atomics: nothing here is locked.
pub struct Shared {
    pub clients: AtomicUsize,
    pub next_client_id: AtomicU64,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
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
}

/// One worker's counters; `merge` adds another's.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    pub keys: u64,
    pub expires: u64,
    pub clients: u64,
    pub commands: u64,
    pub net_in: u64,
    pub net_out: u64,
    pub hits: u64,
    pub misses: u64,
    pub expired_keys: u64,
    pub log_bytes: u64,
    pub dead_bytes: u64,
    pub keydir_bytes: u64,
    pub segments: u64,
    pub partitions: u64,
    pub merges_running: u64,
    pub merges_done: u64,
    pub commit_errors: u64,
    pub last_commit_error: Option<String>,
    /// Workers committing through a commit journal (fsync always).
    pub journals: u64,
    /// Journal checkpoints completed (every partition log fsynced after a switch).
    pub journal_checkpoints: u64,
    /// Commits of a partition fsynced directly because its records did not fit in the journal
    /// (a checkpoint still running, or a batch larger than a journal file).
    pub journal_direct_syncs: u64,
    pub unsynced: u64,
    /// (partition, keys, expires) for the keyspace section.
    pub log_end_total: u64,
    pub pending_remote: u64,
    pub server: Option<ServerInfo>,
    /// Cluster mode: the INFO cluster section (the same from every worker).
    pub cluster_section: Option<String>,
    /// Cluster mode: one INFO replication line per partition held here, by partition.
    pub repl_lines: Vec<(u32, String)>,
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
    pub maxclients: u32,
    pub dir: String,
}

impl WorkerStats {
    pub fn merge(&mut self, o: &WorkerStats) {
        self.keys += o.keys;
        self.expires += o.expires;
        self.clients += o.clients;
        self.commands += o.commands;
        self.net_in += o.net_in;
        self.net_out += o.net_out;
        self.hits += o.hits;
        self.misses += o.misses;
        self.expired_keys += o.expired_keys;
        self.log_bytes += o.log_bytes;
        self.dead_bytes += o.dead_bytes;
        self.keydir_bytes += o.keydir_bytes;
        self.segments += o.segments;
        self.partitions += o.partitions;
        self.merges_running += o.merges_running;
        self.merges_done += o.merges_done;
        self.commit_errors += o.commit_errors;
        self.journals += o.journals;
        self.journal_checkpoints += o.journal_checkpoints;
        self.journal_direct_syncs += o.journal_direct_syncs;
        if o.last_commit_error.is_some() {
            self.last_commit_error = o.last_commit_error.clone();
        }
        self.unsynced += o.unsynced;
        self.log_end_total += o.log_end_total;
        self.pending_remote += o.pending_remote;
        if self.server.is_none() {
            self.server = o.server.clone();
        }
        if self.cluster_section.is_none() {
            self.cluster_section = o.cluster_section.clone();
        }
        self.repl_lines.extend(o.repl_lines.iter().cloned());
        self.repl_lines.sort_by_key(|(p, _)| *p);
    }
}
