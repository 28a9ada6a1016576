//! Typed configuration for simplekv.
//!
//! A [`Config`] starts from defaults for a standalone node, is read from a TOML file
//! ([`Config::load`]), overridden key by key from the command line ([`Config::set_many`],
//! [`Config::parse_override`]) and changed at run time by `CONFIG SET`
//! ([`Config::set_runtime`]). Every key is described once, in [`Config::settings`], and that
//! table drives file parsing, `get`/`set`, validation and `CONFIG GET`, so they cannot
//! disagree about a key's name, range or spelling.
//!
//! ```
//! use simplekv_conf::{Config, Fsync};
//!
//! let mut config = Config::from_toml_str("[storage]\nfsync = \"always\"\n")?;
//! assert_eq!(config.storage.fsync, Fsync::Always);
//! config.set("appendfsync", "no")?;
//! assert_eq!(config.get("storage.fsync").as_deref(), Some("never"));
//! assert!(config.set_runtime("port", "6380").is_err());
//! # Ok::<(), simplekv_conf::ConfError>(())
//! ```

mod error;
mod file;
mod redis;
mod settings;
mod types;
mod units;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfError;
pub use settings::{
    SettingInfo, SettingKind, keyspace_events_from_str, keyspace_events_to_string, notify,
    parse_percentiles,
};
pub use types::{Acks, Fsync, LogLevel, ParseEnumError, ZkConnect};
pub use units::{GIB, KIB, MIB, format_size, parse_size};

/// The whole configuration. Fields are public for reading; change them through
/// [`Config::set`] (or call [`Config::validate`] after changing them directly).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[server]`: listener and client handling.
    pub server: ServerConfig,
    /// `[limits]`: protocol and data size limits.
    pub limits: LimitsConfig,
    /// `[storage]`: the on-disk log.
    pub storage: StorageConfig,
    /// `[cluster]`: ZooKeeper coordination and replication.
    pub cluster: ClusterConfig,
}

/// `[server]`. See [`Config::settings`] for ranges and meanings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on for RESP clients (one host name or IP address).
    pub bind: String,
    /// RESP port.
    pub port: u16,
    /// Worker threads; 0 = one per core.
    pub workers: u32,
    /// Pin each worker to a core.
    pub pin_workers: bool,
    /// Maximum simultaneous client connections.
    pub maxclients: u32,
    /// Password clients must send with AUTH; `None` = no authentication.
    pub requirepass: Option<String>,
    /// Close clients idle for this many seconds; 0 = never.
    pub timeout: u64,
    /// listen(2) backlog.
    pub tcp_backlog: u32,
    /// Set TCP_NODELAY on client sockets.
    pub tcp_nodelay: bool,
    /// A connection's commands take effect in the order it sent them across workers, as in
    /// Redis; false: in order per worker only (pipelines over several workers go faster).
    pub ordered_pipelines: bool,
    /// How long shutdown waits for in-flight work before giving up, in milliseconds.
    pub shutdown_timeout_ms: u64,
    /// Background task (active expiry, cron) frequency, per second.
    pub hz: u32,
    /// Commands that run at least this long (microseconds) go into the slow log (SLOWLOG);
    /// negative: none.
    pub slowlog_log_slower_than: i64,
    /// Entries the slow log keeps, newest first.
    pub slowlog_max_len: u32,
    /// Per-command latency histograms (INFO latencystats, LATENCY HISTOGRAM).
    pub latency_tracking: bool,
    /// The percentiles INFO latencystats shows, space-separated (e.g. "50 99 99.9").
    pub latency_tracking_info_percentiles: String,
    /// Keyspace notifications, as Redis's `notify-keyspace-events` flags ("" = none).
    pub notify_keyspace_events: String,
    /// Durations (ms) from which the latency monitor records a spike; 0 = off.
    pub latency_monitor_threshold: u64,
    /// Log verbosity.
    pub log_level: LogLevel,
}

/// `[limits]`. Sizes are in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Largest RESP bulk string accepted.
    pub proto_max_bulk_len: u64,
    /// Most elements in one RESP multibulk (command arguments).
    pub max_multibulk_len: u64,
    /// Largest unparsed input buffered for one client before it is disconnected.
    pub client_query_buffer_limit: u64,
    /// Longest key.
    pub max_key_len: u64,
    /// Longest value, including values grown by APPEND/SETRANGE.
    pub max_value_len: u64,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Data directory.
    pub dir: PathBuf,
    /// When writes are fsynced.
    pub fsync: Fsync,
    /// Size at which a log segment is closed and a new one started, in bytes.
    pub segment_size: u64,
    /// With fsync = always: size of each of a worker's two commit journal files; 0 = none
    /// (each commit fsyncs the partition logs it wrote).
    pub journal_size: u64,
    /// Storage partitions in standalone mode.
    pub partitions: u32,
    /// Merge a log once dead bytes / total bytes exceeds this.
    pub merge_dead_ratio: f64,
    /// Never merge a log smaller than this many bytes.
    pub merge_min_bytes: u64,
    /// Free disk space kept for deletes and merges: with less free, writes that add data are
    /// refused.
    pub min_free_space: u64,
    /// Write hint files next to closed segments for faster startup.
    pub hint_files: bool,
    /// A clean shutdown describes each active segment holding at least this many bytes of
    /// records in a shutdown hint (with `hint_files`).
    pub shutdown_hint_min_bytes: u64,
    /// Start anyway, dropping data, when an older segment is corrupt.
    pub repair: bool,
    /// Active expiry effort, 1..=10 as in Redis.
    pub active_expire_effort: u32,
}

/// `[cluster]`. With `zk` unset the node is standalone and the rest is ignored, except
/// `grpc_port`, which still enables the gRPC service when set.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// ZooKeeper connect string with optional chroot; `None` = standalone.
    pub zk: Option<String>,
    /// Cluster name (a ZooKeeper path component).
    pub name: String,
    /// This node's id, unique in the cluster. Required in cluster mode.
    pub node_id: Option<u32>,
    /// Host name other nodes and clients use to reach this node; `None` = `server.bind`.
    pub advertise_host: Option<String>,
    /// gRPC (KV and replication) port. Required in cluster mode.
    pub grpc_port: Option<u16>,
    /// Shared by every node of the cluster: replication and controller calls between nodes
    /// carry it and are refused without it. `None` = such calls are not authenticated.
    pub secret: Option<String>,
    /// ZooKeeper session timeout, in milliseconds.
    pub session_timeout_ms: u64,
    /// Replicas that must have a write before it is acknowledged.
    pub acks: Acks,
    /// With `acks = "all"`: fewest in-sync replicas (leader included) for writes to succeed.
    pub min_insync_replicas: u32,
    /// A follower this far behind, in milliseconds, drops out of the in-sync set.
    pub replica_lag_time_max_ms: u64,
    /// How long a leader under load holds records before pushing them to its followers, in
    /// microseconds (0 = every worker turn at once).
    pub replica_push_linger_us: u64,
    /// Allow an out-of-sync replica to become leader (availability over durability).
    pub unclean_leader_election: bool,
    /// How often the controller checks leader balance, in milliseconds.
    pub leader_imbalance_check_ms: u64,
    /// Rebalance leaders when a node's share of non-preferred leaders exceeds this.
    pub leader_imbalance_ratio: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1".to_owned(),
            port: 7379,
            workers: 0,
            pin_workers: true,
            maxclients: 10_000,
            requirepass: None,
            timeout: 0,
            tcp_backlog: 511,
            tcp_nodelay: true,
            ordered_pipelines: true,
            shutdown_timeout_ms: 10_000,
            hz: 10,
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            latency_tracking: true,
            latency_tracking_info_percentiles: "50 99 99.9".to_owned(),
            notify_keyspace_events: String::new(),
            latency_monitor_threshold: 0,
            log_level: LogLevel::Info,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            proto_max_bulk_len: 512 * MIB,
            max_multibulk_len: 1024 * 1024,
            client_query_buffer_limit: GIB,
            max_key_len: MIB,
            max_value_len: 512 * MIB,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: PathBuf::from("./data"),
            fsync: Fsync::EverySec,
            segment_size: 256 * MIB,
            journal_size: 32 * MIB,
            partitions: 16,
            merge_dead_ratio: 0.5,
            merge_min_bytes: 64 * MIB,
            min_free_space: 64 * MIB,
            hint_files: true,
            shutdown_hint_min_bytes: MIB,
            repair: false,
            active_expire_effort: 1,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            zk: None,
            name: "default".to_owned(),
            node_id: None,
            advertise_host: None,
            secret: None,
            grpc_port: None,
            session_timeout_ms: 2_000,
            acks: Acks::All,
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 2_000,
            replica_push_linger_us: 0,
            unclean_leader_election: false,
            leader_imbalance_check_ms: 10_000,
            leader_imbalance_ratio: 0.1,
        }
    }
}

impl ServerConfig {
    /// `timeout` as a duration; `None` when idle clients are never closed.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.timeout > 0).then(|| Duration::from_secs(self.timeout))
    }

    /// `shutdown_timeout_ms` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

impl ClusterConfig {
    /// `session_timeout_ms` as a duration.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }

    /// `replica_lag_time_max_ms` as a duration.
    pub fn replica_lag_time_max(&self) -> Duration {
        Duration::from_millis(self.replica_lag_time_max_ms)
    }

    /// `leader_imbalance_check_ms` as a duration.
    pub fn leader_imbalance_check_interval(&self) -> Duration {
        Duration::from_millis(self.leader_imbalance_check_ms)
    }

    /// The parsed `zk` connect string; `None` in standalone mode or if it does not parse
    /// (which [`Config::validate`] rejects).
    pub fn zk_connect(&self) -> Option<ZkConnect> {
        self.zk.as_deref().and_then(|s| ZkConnect::parse(s).ok())
    }
}

impl Config {
    /// Parses a TOML document over the defaults and validates the result.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfError> {
        let config = file::parse(text, None)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. Errors name the file, and the line and
    /// column for anything wrong inside it.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfError> {
        Config::load_with_overrides(Some(path.as_ref()), std::iter::empty::<(&str, &str)>())
    }

    /// Reads the file (if any) over the defaults, applies `overrides` (`(name, value)`, in
    /// order, later ones winning) and validates once at the end, so that an override can
    /// complete a file that is not valid alone — e.g. one cluster file shared by all nodes
    /// with `--node-id` given per node.
    pub fn load_with_overrides<N, V>(
        path: Option<&Path>,
        overrides: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Config, ConfError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfError::Io {
                    path: path.to_owned(),
                    error,
                })?;
                file::parse(&text, Some(path))?
            }
            None => Config::default(),
        };
        for (name, value) in overrides {
            settings::apply(&mut config, name.as_ref(), value.as_ref())?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Serialises every setting to TOML; [`Config::from_toml_str`] reads it back equal.
    /// Unset optional settings are omitted, which is how TOML spells "none".
    pub fn to_toml_string(&self) -> String {
        file::to_toml_string(self)
    }

    /// Checks every setting's range and the rules between settings. The error names the
    /// setting(s) and what would be accepted.
    pub fn validate(&self) -> Result<(), ConfError> {
        for info in settings::SETTINGS {
            info.check_current(self)?;
        }
        self.check_cross_field()
    }

    /// True when `cluster.zk` is set.
    pub fn is_cluster(&self) -> bool {
        self.cluster.zk.is_some()
    }

    /// The host other nodes and clients should use to reach this node:
    /// `cluster.advertise_host`, or `server.bind` when unset.
    pub fn advertise_host(&self) -> &str {
        self.cluster
            .advertise_host
            .as_deref()
            .unwrap_or(&self.server.bind)
    }

    /// Every setting, in file order.
    pub fn settings() -> &'static [SettingInfo] {
        settings::SETTINGS
    }

    /// Looks a setting up by dotted name (`server.port`) or Redis name (`port`),
    /// case-insensitively.
    pub fn setting(name: &str) -> Option<&'static SettingInfo> {
        settings::lookup(name)
    }

    /// The current value of a setting as text (the form `set` accepts), or `None` for an
    /// unknown name. Unset optional settings read as `""`; sizes read as bytes.
    pub fn get(&self, name: &str) -> Option<String> {
        settings::lookup(name).map(|info| info.get(self))
    }

    /// Sets one setting from text, then re-checks the whole config. On any error the config
    /// is unchanged. For optional settings, `""` means unset.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfError> {
        self.set_many([(name, value)])
    }

    /// Sets several settings at once, checking the rules between settings only after all
    /// are applied, so that e.g. `cluster.zk` and `cluster.node_id` can be turned on
    /// together. All or nothing. Redis's `save`, `appendonly`, `databases`... are taken at
    /// the one value simplekv has and refused with the reason otherwise, as by CONFIG SET.
    pub fn set_many<N, V>(
        &mut self,
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Result<(), ConfError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut next = self.clone();
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            if settings::lookup(name).is_none() && redis::check_fixed_set(name, value)? {
                continue;
            }
            settings::apply(&mut next, name, value)?;
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// `CONFIG SET name value`: like [`Config::set`], but refuses settings that are only
    /// read at startup, and accepts Redis's `save`, `appendonly` and `databases` when set
    /// to the one value simplekv supports (scripts written for Redis set them).
    pub fn set_runtime(&mut self, name: &str, value: &str) -> Result<(), ConfError> {
        self.set_runtime_many([(name, value)])
    }

    /// `CONFIG SET name value [name value ...]`: all or nothing, as in Redis 7.
    pub fn set_runtime_many<N, V>(
        &mut self,
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Result<(), ConfError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let pairs: Vec<(N, V)> = pairs.into_iter().collect();
        // Every name first, as Redis does: unknown, immutable, or the same setting twice
        // (under either of its names) fails before any value is looked at.
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, _) in &pairs {
            let name = name.as_ref();
            let canonical = match redis::fixed_canonical(name) {
                Some(c) => c,
                None => {
                    let info = settings::lookup(name).ok_or_else(|| settings::unknown(name))?;
                    if !info.runtime {
                        return Err(ConfError::Immutable {
                            name: name.to_owned(),
                        });
                    }
                    info.name
                }
            };
            if seen.contains(&canonical) {
                return Err(ConfError::Duplicate {
                    name: name.to_owned(),
                });
            }
            seen.push(canonical);
        }
        let mut next = self.clone();
        for (name, value) in &pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            if redis::check_fixed_set(name, value)? {
                continue;
            }
            let translated = redis::redis_value(name, value);
            let value = translated.as_deref().unwrap_or(value);
            // Redis parses CONFIG SET's numbers and choices strictly: " 100" is not 100
            // (a file or a command-line override may pad them).
            if let Some(info) = settings::lookup(name)
                && info.kind() != settings::SettingKind::Text
                && value.trim() != value
            {
                return Err(ConfError::InvalidValue {
                    name: info.name,
                    value: value.to_owned(),
                    expected: info.accepts(),
                });
            }
            settings::apply(&mut next, name, value)?;
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Splits a command-line override `name=value` (e.g. `storage.fsync=always`) at the
    /// first `=`. Feed the pairs to [`Config::load_with_overrides`] or [`Config::set_many`].
    pub fn parse_override(text: &str) -> Result<(&str, &str), ConfError> {
        match text.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim(), value)),
            _ => Err(ConfError::BadOverride {
                text: text.to_owned(),
            }),
        }
    }

    /// `(name, value)` for `CONFIG GET *`: settings with a Redis name under that name (with
    /// Redis's spellings: `yes`/`no`, sizes in bytes), the rest under their dotted name, and
    /// the fixed entries Redis tools ask for: `save` = `""`, `appendonly` = `yes`,
    /// `databases` = `1`.
    pub fn redis_config_pairs(&self) -> Vec<(String, String)> {
        redis::config_pairs(self)
    }

    /// `CONFIG GET pattern`: the entries of [`Config::redis_config_pairs`] whose name
    /// matches the Redis glob `pattern` (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes),
    /// case-insensitively.
    pub fn redis_config_get(&self, pattern: &str) -> Vec<(String, String)> {
        redis::config_pairs(self)
            .into_iter()
            .filter(|(name, _)| redis::glob_match(pattern.as_bytes(), name.as_bytes()))
            .collect()
    }

    fn check_cross_field(&self) -> Result<(), ConfError> {
        let inconsistent = |names: &[&'static str], message: String| ConfError::Inconsistent {
            names: names.to_vec(),
            message,
        };
        if self.storage.journal_size != 0 && self.storage.journal_size < 64 * KIB {
            return Err(inconsistent(
                &["storage.journal_size"],
                format!(
                    "storage.journal_size is {} bytes; use 0 (no journal) or at least 64kb",
                    self.storage.journal_size
                ),
            ));
        }
        if self.cluster.grpc_port == Some(self.server.port) {
            return Err(inconsistent(
                &["cluster.grpc_port", "server.port"],
                format!(
                    "cluster.grpc_port and server.port are both {}; they must differ",
                    self.server.port
                ),
            ));
        }
        if self.is_cluster() {
            if self.cluster.node_id.is_none() {
                return Err(inconsistent(
                    &["cluster.node_id", "cluster.zk"],
                    "cluster mode (cluster.zk is set) requires cluster.node_id, unique per node"
                        .to_owned(),
                ));
            }
            if self.cluster.grpc_port.is_none() {
                return Err(inconsistent(
                    &["cluster.grpc_port", "cluster.zk"],
                    "cluster mode (cluster.zk is set) requires cluster.grpc_port, the port \
                     other nodes replicate from"
                        .to_owned(),
                ));
            }
            let unspecified = self
                .server
                .bind
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified());
            if unspecified && self.cluster.advertise_host.is_none() {
                return Err(inconsistent(
                    &["cluster.advertise_host", "server.bind"],
                    format!(
                        "cluster mode with server.bind = {:?} requires cluster.advertise_host: \
                         other nodes cannot connect to a wildcard address",
                        self.server.bind
                    ),
                ));
            }
        }
        if self.limits.proto_max_bulk_len > self.limits.client_query_buffer_limit {
            return Err(inconsistent(
                &[
                    "limits.proto_max_bulk_len",
                    "limits.client_query_buffer_limit",
                ],
                format!(
                    "limits.proto_max_bulk_len ({}) exceeds limits.client_query_buffer_limit \
                     ({}): a bulk string that large would get its client disconnected; raise \
                     the buffer limit first",
                    format_size(self.limits.proto_max_bulk_len),
                    format_size(self.limits.client_query_buffer_limit)
                ),
            ));
        }
        Ok(())
    }
}
