//! The settings registry: one entry per key, driving file parsing, `get`/`set`,
//! validation, `CONFIG GET` and the README table.

use std::path::PathBuf;

use crate::types::{Acks, Fsync, LogLevel, ZkConnect};
use crate::units::{GIB, MIB, format_size, parse_size};
use crate::{ConfError, Config};

/// Describes one setting.
#[derive(Debug)]
pub struct SettingInfo {
    /// Dotted name, `section.key`, e.g. `server.port`. Also the TOML location.
    pub name: &'static str,
    /// The Redis `CONFIG GET`/`SET` name, when Redis has the same setting.
    pub redis_name: Option<&'static str>,
    /// Whether `CONFIG SET` may change it while the server runs.
    pub runtime: bool,
    /// One or two sentences for `--help`, the README and example files.
    pub help: &'static str,
    pub(crate) access: Access,
}

/// The type and range of a setting, for help output and documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SettingKind {
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A whole number in `min..=max` that may be negative.
    SignedInteger {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// A byte size in `min..=max`: a number of bytes, or a number with a Redis unit.
    Size {
        /// Smallest accepted, in bytes.
        min: u64,
        /// Largest accepted, in bytes.
        max: u64,
    },
    /// A decimal number in `min..=max`.
    Float {
        /// Smallest accepted.
        min: f64,
        /// Largest accepted.
        max: f64,
    },
    /// `true`/`false` (also `yes`/`no` outside TOML files).
    Bool,
    /// Free-form text, checked as described by [`SettingInfo::accepts`].
    Text,
    /// One of the listed spellings.
    Choice(&'static [&'static str]),
}

type Get<T> = fn(&Config) -> T;
type Set<T> = fn(&mut Config, T);

/// How a setting is read, written and checked. Integers are widened to `u64` here; the
/// range check runs before `set`, so the narrowing casts in the table cannot truncate.
#[derive(Debug)]
pub(crate) enum Access {
    Int {
        min: u64,
        max: u64,
        get: Get<u64>,
        set: Set<u64>,
    },
    OptInt {
        min: u64,
        max: u64,
        get: Get<Option<u64>>,
        set: Set<Option<u64>>,
    },
    SignedInt {
        min: i64,
        max: i64,
        get: Get<i64>,
        set: Set<i64>,
    },
    Size {
        min: u64,
        max: u64,
        get: Get<u64>,
        set: Set<u64>,
    },
    Float {
        min: f64,
        max: f64,
        get: Get<f64>,
        set: Set<f64>,
    },
    Bool {
        get: Get<bool>,
        set: Set<bool>,
    },
    Text {
        accepts: &'static str,
        check: fn(&str) -> Result<(), String>,
        get: Get<String>,
        set: Set<String>,
    },
    OptText {
        accepts: &'static str,
        check: fn(&str) -> Result<(), String>,
        get: Get<Option<String>>,
        set: Set<Option<String>>,
    },
    Choice {
        values: &'static [&'static str],
        get: Get<&'static str>,
        /// Returns false when the text is not one of the values (or their aliases).
        set: fn(&mut Config, &str) -> bool,
        /// Redis's spelling for `CONFIG GET`, when it differs.
        redis_get: Option<Get<&'static str>>,
    },
}

const SIZE_UNITS: &str = "bytes, or with a unit: k, kb, m, mb, g, gb";

impl SettingInfo {
    /// The TOML table, e.g. `server`.
    pub fn section(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(s, _)| s)
    }

    /// The key inside the table, e.g. `port`.
    pub fn key(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(_, k)| k)
    }

    /// The setting's type and range.
    pub fn kind(&self) -> SettingKind {
        match self.access {
            Access::Int { min, max, .. } | Access::OptInt { min, max, .. } => {
                SettingKind::Integer { min, max }
            }
            Access::SignedInt { min, max, .. } => SettingKind::SignedInteger { min, max },
            Access::Size { min, max, .. } => SettingKind::Size { min, max },
            Access::Float { min, max, .. } => SettingKind::Float { min, max },
            Access::Bool { .. } => SettingKind::Bool,
            Access::Text { .. } | Access::OptText { .. } => SettingKind::Text,
            Access::Choice { values, .. } => SettingKind::Choice(values),
        }
    }

    /// Whether the setting may be unset (`None`); `""` unsets it in `set`.
    pub fn is_optional(&self) -> bool {
        matches!(self.access, Access::OptInt { .. } | Access::OptText { .. })
    }

    /// What values are accepted, as it appears in error messages, e.g.
    /// `an integer 1..=65535`.
    pub fn accepts(&self) -> String {
        let base = match self.access {
            Access::Int { min, max, .. } | Access::OptInt { min, max, .. } => {
                format!("an integer {min}..={max}")
            }
            Access::SignedInt { min, max, .. } => format!("an integer {min}..={max}"),
            Access::Size { min, max, .. } => format!(
                "a size {}..={} ({SIZE_UNITS})",
                format_size(min),
                format_size(max)
            ),
            Access::Float { min, max, .. } => format!("a number {min}..={max}"),
            Access::Bool { .. } => "true or false (or yes/no)".to_owned(),
            Access::Text { accepts, .. } | Access::OptText { accepts, .. } => accepts.to_owned(),
            Access::Choice { values, .. } => format!("one of {}", values.join("|")),
        };
        if self.is_optional() {
            format!("{base}, or \"\" for none")
        } else {
            base
        }
    }

    /// The default, in the form [`SettingInfo::get`] returns (`""` for none).
    pub fn default_value(&self) -> String {
        self.get(&Config::default())
    }

    /// The setting's current value as text: what `Config::get` returns and `set` accepts.
    pub fn get(&self, config: &Config) -> String {
        match self.access {
            Access::Int { get, .. } | Access::Size { get, .. } => get(config).to_string(),
            Access::OptInt { get, .. } => get(config).map(|v| v.to_string()).unwrap_or_default(),
            Access::SignedInt { get, .. } => get(config).to_string(),
            Access::Float { get, .. } => get(config).to_string(),
            Access::Bool { get, .. } => get(config).to_string(),
            Access::Text { get, .. } => get(config),
            Access::OptText { get, .. } => get(config).unwrap_or_default(),
            Access::Choice { get, .. } => get(config).to_owned(),
        }
    }

    /// The value as `CONFIG GET` shows it: Redis spellings (`yes`/`no`, `appendfsync no`).
    pub fn redis_value(&self, config: &Config) -> String {
        match self.access {
            Access::Bool { get, .. } => if get(config) { "yes" } else { "no" }.to_owned(),
            Access::Choice {
                redis_get: Some(redis_get),
                ..
            } => redis_get(config).to_owned(),
            _ => self.get(config),
        }
    }

    /// The value as it is written in a TOML file, or `None` when unset.
    pub(crate) fn toml_value(&self, config: &Config) -> Option<toml::Value> {
        let int = |v: u64| toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        Some(match self.access {
            Access::Int { get, .. } => int(get(config)),
            Access::OptInt { get, .. } => int(get(config)?),
            Access::SignedInt { get, .. } => toml::Value::Integer(get(config)),
            Access::Size { get, .. } => {
                let bytes = get(config);
                let text = format_size(bytes);
                if text.bytes().all(|b| b.is_ascii_digit()) {
                    int(bytes)
                } else {
                    toml::Value::String(text)
                }
            }
            Access::Float { get, .. } => toml::Value::Float(get(config)),
            Access::Bool { get, .. } => toml::Value::Boolean(get(config)),
            Access::Text { get, .. } => toml::Value::String(get(config)),
            Access::OptText { get, .. } => toml::Value::String(get(config)?),
            Access::Choice { get, .. } => toml::Value::String(get(config).to_owned()),
        })
    }

    /// Parses `value`, checks this setting's range and stores it. Does not check rules
    /// between settings. On error `config` is unchanged.
    pub(crate) fn apply(&self, config: &mut Config, value: &str) -> Result<(), ConfError> {
        let invalid = |expected: String| ConfError::InvalidValue {
            name: self.name,
            value: value.to_owned(),
            expected,
        };
        let reject = || invalid(self.accepts());
        match self.access {
            Access::Int { min, max, set, .. } => {
                let v = parse_uint(value).filter(|v| (min..=max).contains(v));
                set(config, v.ok_or_else(reject)?);
            }
            Access::OptInt { min, max, set, .. } => {
                if value.trim().is_empty() {
                    set(config, None);
                } else {
                    let v = parse_uint(value).filter(|v| (min..=max).contains(v));
                    set(config, Some(v.ok_or_else(reject)?));
                }
            }
            Access::SignedInt { min, max, set, .. } => {
                let v = parse_int(value).filter(|v| (min..=max).contains(v));
                set(config, v.ok_or_else(reject)?);
            }
            Access::Size { min, max, set, .. } => {
                let v = parse_size(value).filter(|v| (min..=max).contains(v));
                set(config, v.ok_or_else(reject)?);
            }
            Access::Float { min, max, set, .. } => {
                // contains() is false for NaN, so "nan" is rejected with the range message.
                let v = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| (min..=max).contains(v));
                set(config, v.ok_or_else(reject)?);
            }
            Access::Bool { set, .. } => set(config, parse_bool(value).ok_or_else(reject)?),
            Access::Text { check, set, .. } => {
                check(value).map_err(invalid)?;
                set(config, value.to_owned());
            }
            Access::OptText { check, set, .. } => {
                if value.is_empty() {
                    set(config, None);
                } else {
                    check(value).map_err(invalid)?;
                    set(config, Some(value.to_owned()));
                }
            }
            Access::Choice { set, .. } => {
                if !set(config, value) {
                    return Err(reject());
                }
            }
        }
        Ok(())
    }

    /// Checks the current value against this setting's range (for configs whose fields
    /// were assigned directly).
    pub(crate) fn check_current(&self, config: &Config) -> Result<(), ConfError> {
        let ok = match self.access {
            Access::Int { min, max, get, .. } | Access::Size { min, max, get, .. } => {
                (min..=max).contains(&get(config))
            }
            Access::OptInt { min, max, get, .. } => {
                get(config).is_none_or(|v| (min..=max).contains(&v))
            }
            Access::SignedInt { min, max, get, .. } => (min..=max).contains(&get(config)),
            Access::Float { min, max, get, .. } => (min..=max).contains(&get(config)),
            Access::Text { check, get, .. } => {
                let value = get(config);
                return check(&value).map_err(|expected| ConfError::InvalidValue {
                    name: self.name,
                    value,
                    expected,
                });
            }
            Access::OptText { check, get, .. } => match get(config) {
                // Some("") can only come from direct assignment; it means "unset" to
                // `set`, so treat it the same here rather than as an empty password/host.
                Some(value) if !value.is_empty() => {
                    return check(&value).map_err(|expected| ConfError::InvalidValue {
                        name: self.name,
                        value,
                        expected,
                    });
                }
                _ => true,
            },
            Access::Bool { .. } | Access::Choice { .. } => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ConfError::InvalidValue {
                name: self.name,
                value: self.get(config),
                expected: self.accepts(),
            })
        }
    }
}

/// Digits only: `u64::from_str` would also take a leading `+`, which no other tool here
/// accepts and which would make `get` disagree with what was set.
fn parse_uint(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `parse_uint`, with an optional leading `-`.
fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `yes`/`no` as well as `true`/`false`: `CONFIG SET` callers use Redis's spelling.
fn parse_bool(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") || text.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

const HOST_ACCEPTS: &str = "one host name or IP address, without spaces";

fn check_host(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 255 || value.contains(|c: char| c.is_whitespace()) {
        return Err(HOST_ACCEPTS.to_owned());
    }
    Ok(())
}

const DIR_ACCEPTS: &str = "a non-empty directory path";

fn check_dir(value: &str) -> Result<(), String> {
    if value.is_empty() || value.contains('\0') {
        return Err(DIR_ACCEPTS.to_owned());
    }
    Ok(())
}

const NAME_ACCEPTS: &str =
    "1 to 64 characters from A-Z a-z 0-9 . _ - (it is a ZooKeeper path component), not . or ..";

fn check_cluster_name(value: &str) -> Result<(), String> {
    let chars_ok = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if value.is_empty() || value.len() > 64 || !chars_ok || value == "." || value == ".." {
        return Err(NAME_ACCEPTS.to_owned());
    }
    Ok(())
}

fn check_zk(value: &str) -> Result<(), String> {
    if value.contains(char::is_whitespace) {
        return Err(format!("{}; no spaces", ZkConnect::EXPECTED));
    }
    ZkConnect::parse(value).map(|_| ())
}

fn check_any(_: &str) -> Result<(), String> {
    Ok(())
}

/// The bits of `notify-keyspace-events`, as Redis numbers them.
pub mod notify {
    pub const KEYSPACE: u32 = 1 << 0;
    pub const KEYEVENT: u32 = 1 << 1;
    pub const GENERIC: u32 = 1 << 2;
    pub const STRING: u32 = 1 << 3;
    pub const LIST: u32 = 1 << 4;
    pub const SET: u32 = 1 << 5;
    pub const HASH: u32 = 1 << 6;
    pub const ZSET: u32 = 1 << 7;
    pub const EXPIRED: u32 = 1 << 8;
    pub const EVICTED: u32 = 1 << 9;
    pub const STREAM: u32 = 1 << 10;
    pub const KEY_MISS: u32 = 1 << 11;
    pub const MODULE: u32 = 1 << 12;
    pub const NEW: u32 = 1 << 13;
    /// `A`: every class but key misses and new keys.
    pub const ALL: u32 =
        GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;
}

/// Redis's `keyspaceEventsStringToFlags`: `None` for a character it does not know.
pub fn keyspace_events_from_str(value: &str) -> Option<u32> {
    use notify::*;
    value.chars().try_fold(0, |flags, c| {
        Some(
            flags
                | match c {
                    'A' => ALL,
                    'g' => GENERIC,
                    '$' => STRING,
                    'l' => LIST,
                    's' => SET,
                    'h' => HASH,
                    'z' => ZSET,
                    'x' => EXPIRED,
                    'e' => EVICTED,
                    'K' => KEYSPACE,
                    'E' => KEYEVENT,
                    't' => STREAM,
                    'm' => KEY_MISS,
                    'd' => MODULE,
                    'n' => NEW,
                    _ => return None,
                },
        )
    })
}

/// Redis's `keyspaceEventsFlagsToString`: what CONFIG GET shows. Redis leaves `n` out
/// after `A` (though it keeps the flag); here it is shown, so that the value read back and
/// set again keeps it.
pub fn keyspace_events_to_string(flags: u32) -> String {
    use notify::*;
    let mut s = String::new();
    if flags & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
        ] {
            if flags & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [
        (NEW, 'n'),
        (KEYSPACE, 'K'),
        (KEYEVENT, 'E'),
        (KEY_MISS, 'm'),
    ] {
        if flags & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn check_keyspace_events(value: &str) -> Result<(), String> {
    keyspace_events_from_str(value)
        .map(|_| ())
        .ok_or_else(|| "characters from Ag$lshzxeKEtmdn only".to_owned())
}

fn check_percentiles(value: &str) -> Result<(), String> {
    parse_percentiles(value).map(|_| ())
}

/// `server.latency_tracking_info_percentiles` as numbers (Redis's checks and texts).
pub fn parse_percentiles(value: &str) -> Result<Vec<f64>, String> {
    value
        .split_whitespace()
        .map(|p| match p.parse::<f64>() {
            Ok(v) if v.is_nan() => {
                Err("Invalid latency-tracking-info-percentiles parameters".to_owned())
            }
            Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
            Ok(_) => Err(
                "latency-tracking-info-percentiles parameters should sit between [0.0,100.0]"
                    .to_owned(),
            ),
            Err(_) => Err("Invalid latency-tracking-info-percentiles parameters".to_owned()),
        })
        .collect()
}

/// It travels in gRPC metadata, which takes printable ASCII.
fn check_secret(value: &str) -> Result<(), String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("printable ASCII without spaces".to_owned());
    }
    Ok(())
}

/// Setter for a `Choice`: parses with the enum's `FromStr`.
fn choose<T: std::str::FromStr>(
    config: &mut Config,
    text: &str,
    field: fn(&mut Config) -> &mut T,
) -> bool {
    match text.parse() {
        Ok(v) => {
            *field(config) = v;
            true
        }
        Err(_) => false,
    }
}

/// The registry. Order is the order of the TOML file and the README table.
pub(crate) static SETTINGS: &[SettingInfo] = &[
    // ---------------------------------------------------------------- [server]
    SettingInfo {
        name: "server.bind",
        redis_name: Some("bind"),
        runtime: false,
        help: "Address to listen on for RESP clients. Use 0.0.0.0 or :: for all interfaces.",
        access: Access::Text {
            accepts: HOST_ACCEPTS,
            check: check_host,
            get: |c| c.server.bind.clone(),
            set: |c, v| c.server.bind = v,
        },
    },
    SettingInfo {
        name: "server.port",
        redis_name: Some("port"),
        runtime: false,
        help: "TCP port for RESP clients.",
        access: Access::Int {
            min: 1,
            max: 65535,
            get: |c| u64::from(c.server.port),
            set: |c, v| c.server.port = v as u16,
        },
    },
    SettingInfo {
        name: "server.workers",
        redis_name: None,
        runtime: false,
        help: "Worker threads serving clients; 0 = one per CPU core.",
        access: Access::Int {
            min: 0,
            max: 1024,
            get: |c| u64::from(c.server.workers),
            set: |c, v| c.server.workers = v as u32,
        },
    },
    SettingInfo {
        name: "server.pin_workers",
        redis_name: None,
        runtime: false,
        help: "Pin each worker thread to its own CPU core; turn off on a machine whose cores are shared with busy processes (e.g. its own clients), where a pinned worker cannot move away from them.",
        access: Access::Bool {
            get: |c| c.server.pin_workers,
            set: |c, v| c.server.pin_workers = v,
        },
    },
    SettingInfo {
        name: "server.maxclients",
        redis_name: Some("maxclients"),
        runtime: true,
        help: "Maximum simultaneous client connections; further connections are refused \
               with an error.",
        access: Access::Int {
            min: 1,
            max: 1_000_000,
            get: |c| u64::from(c.server.maxclients),
            set: |c, v| c.server.maxclients = v as u32,
        },
    },
    SettingInfo {
        name: "server.requirepass",
        redis_name: Some("requirepass"),
        runtime: true,
        help: "Password clients must give with AUTH before other commands; unset = no \
               authentication.",
        access: Access::OptText {
            accepts: "any text",
            check: check_any,
            get: |c| c.server.requirepass.clone(),
            set: |c, v| c.server.requirepass = v,
        },
    },
    SettingInfo {
        name: "server.timeout",
        redis_name: Some("timeout"),
        runtime: true,
        help: "Close a client after this many seconds idle; 0 = never.",
        access: Access::Int {
            min: 0,
            max: i32::MAX as u64,
            get: |c| c.server.timeout,
            set: |c, v| c.server.timeout = v,
        },
    },
    SettingInfo {
        name: "server.tcp_backlog",
        redis_name: Some("tcp-backlog"),
        runtime: false,
        help: "listen(2) backlog; the kernel caps it at net.core.somaxconn.",
        access: Access::Int {
            min: 1,
            max: 65535,
            get: |c| u64::from(c.server.tcp_backlog),
            set: |c, v| c.server.tcp_backlog = v as u32,
        },
    },
    SettingInfo {
        name: "server.tcp_nodelay",
        redis_name: None,
        runtime: false,
        help: "Disable Nagle's algorithm on client sockets (lower latency for small replies).",
        access: Access::Bool {
            get: |c| c.server.tcp_nodelay,
            set: |c, v| c.server.tcp_nodelay = v,
        },
    },
    SettingInfo {
        name: "server.ordered_pipelines",
        redis_name: None,
        runtime: true,
        help: "A connection's commands take effect in the order it sent them, as in Redis, \
               also when their keys live on different workers (a pipeline pays a hop between \
               workers per change of worker). false: in order per worker only; another \
               client may see a pipeline's later write before an earlier one on another \
               worker.",
        access: Access::Bool {
            get: |c| c.server.ordered_pipelines,
            set: |c, v| c.server.ordered_pipelines = v,
        },
    },
    SettingInfo {
        name: "server.shutdown_timeout_ms",
        redis_name: None,
        runtime: false,
        help: "On shutdown, wait at most this long (ms) for in-flight commands, flushes and \
               replication before exiting anyway.",
        access: Access::Int {
            min: 0,
            max: 3_600_000,
            get: |c| c.server.shutdown_timeout_ms,
            set: |c, v| c.server.shutdown_timeout_ms = v,
        },
    },
    SettingInfo {
        name: "server.hz",
        redis_name: Some("hz"),
        runtime: true,
        help: "Background task frequency per second (active expiry, cron), as Redis's hz.",
        access: Access::Int {
            min: 1,
            max: 500,
            get: |c| u64::from(c.server.hz),
            set: |c, v| c.server.hz = v as u32,
        },
    },
    SettingInfo {
        name: "server.slowlog_log_slower_than",
        redis_name: Some("slowlog-log-slower-than"),
        runtime: true,
        help: "Commands that run at least this many microseconds go into the slow log \
               (SLOWLOG GET); 0 logs every command, -1 none. A command is \
               timed where it runs: a part on another worker is an entry of its own.",
        access: Access::SignedInt {
            min: -1,
            max: i64::MAX,
            get: |c| c.server.slowlog_log_slower_than,
            set: |c, v| c.server.slowlog_log_slower_than = v,
        },
    },
    SettingInfo {
        name: "server.slowlog_max_len",
        redis_name: Some("slowlog-max-len"),
        runtime: true,
        help: "Entries the slow log keeps (the newest); each takes at most 32 arguments of \
               128 bytes.",
        access: Access::Int {
            min: 0,
            max: 1_000_000,
            get: |c| u64::from(c.server.slowlog_max_len),
            set: |c, v| c.server.slowlog_max_len = v as u32,
        },
    },
    SettingInfo {
        name: "server.latency_tracking",
        redis_name: Some("latency-tracking"),
        runtime: true,
        help: "Keep a latency histogram per command (INFO latencystats, LATENCY HISTOGRAM), \
               as Redis 7; a command is timed where it runs.",
        access: Access::Bool {
            get: |c| c.server.latency_tracking,
            set: |c, v| c.server.latency_tracking = v,
        },
    },
    SettingInfo {
        name: "server.latency_tracking_info_percentiles",
        redis_name: Some("latency-tracking-info-percentiles"),
        runtime: true,
        help: "The percentiles INFO latencystats shows for each command, separated by spaces, \
               each 0..=100; empty for none.",
        access: Access::Text {
            accepts: "percentiles (0..=100) separated by spaces",
            check: check_percentiles,
            get: |c| c.server.latency_tracking_info_percentiles.clone(),
            set: |c, v| c.server.latency_tracking_info_percentiles = v,
        },
    },
    SettingInfo {
        name: "server.latency_monitor_threshold",
        redis_name: Some("latency-monitor-threshold"),
        runtime: true,
        help: "The latency monitor (LATENCY LATEST, HISTORY, GRAPH, DOCTOR) records every \
               command, expiry pass, fsync or merge step that takes at least this many \
               milliseconds; 0 = off.",
        access: Access::Int {
            min: 0,
            max: i64::MAX as u64,
            get: |c| c.server.latency_monitor_threshold,
            set: |c, v| c.server.latency_monitor_threshold = v,
        },
    },
    SettingInfo {
        name: "server.notify_keyspace_events",
        redis_name: Some("notify-keyspace-events"),
        runtime: true,
        help: "Keyspace notifications published on __keyspace@0__:<key> (K) and \
               __keyevent@0__:<event> (E), as Redis's flags: g generic, $ string, x expired, \
               n new key, m key miss, A = g$lshzxetd; \"\" for none.",
        access: Access::Text {
            accepts: "Redis's notify-keyspace-events flags (K E g $ l s h z x e t d m n A)",
            check: check_keyspace_events,
            get: |c| c.server.notify_keyspace_events.clone(),
            set: |c, v| {
                c.server.notify_keyspace_events =
                    keyspace_events_to_string(keyspace_events_from_str(&v).unwrap_or_default())
            },
        },
    },
    SettingInfo {
        name: "server.log_level",
        redis_name: Some("loglevel"),
        runtime: true,
        help: "Log verbosity. Redis's warning/notice/verbose are accepted as warn/info/debug; \
               CONFIG GET loglevel answers in Redis's words (trace = debug, error = warning).",
        access: Access::Choice {
            values: LogLevel::SPELLINGS,
            get: |c| c.server.log_level.as_str(),
            set: |c, v| choose(c, v, |c| &mut c.server.log_level),
            redis_get: Some(|c| c.server.log_level.redis_str()),
        },
    },
    // ---------------------------------------------------------------- [limits]
    SettingInfo {
        name: "limits.proto_max_bulk_len",
        redis_name: Some("proto-max-bulk-len"),
        runtime: true,
        help: "Largest RESP bulk string (one argument) accepted; must not exceed \
               client_query_buffer_limit.",
        access: Access::Size {
            min: MIB,
            max: 4 * GIB,
            get: |c| c.limits.proto_max_bulk_len,
            set: |c, v| c.limits.proto_max_bulk_len = v,
        },
    },
    SettingInfo {
        name: "limits.max_multibulk_len",
        redis_name: None,
        runtime: false,
        help: "Most arguments in one command (RESP multibulk length).",
        access: Access::Int {
            min: 1024,
            max: i32::MAX as u64,
            get: |c| c.limits.max_multibulk_len,
            set: |c, v| c.limits.max_multibulk_len = v,
        },
    },
    SettingInfo {
        name: "limits.client_query_buffer_limit",
        redis_name: Some("client-query-buffer-limit"),
        runtime: true,
        help: "A client whose unparsed input exceeds this is disconnected.",
        access: Access::Size {
            min: MIB,
            max: 16 * GIB,
            get: |c| c.limits.client_query_buffer_limit,
            set: |c, v| c.limits.client_query_buffer_limit = v,
        },
    },
    SettingInfo {
        name: "limits.max_key_len",
        redis_name: None,
        runtime: true,
        help: "Longest key accepted; longer keys get an error reply.",
        access: Access::Size {
            min: 1,
            max: 512 * MIB,
            get: |c| c.limits.max_key_len,
            set: |c, v| c.limits.max_key_len = v,
        },
    },
    SettingInfo {
        name: "limits.max_value_len",
        redis_name: None,
        runtime: true,
        help: "Longest value, including values grown by APPEND or SETRANGE.",
        access: Access::Size {
            min: 1,
            max: 4 * GIB,
            get: |c| c.limits.max_value_len,
            set: |c, v| c.limits.max_value_len = v,
        },
    },
    // ---------------------------------------------------------------- [storage]
    SettingInfo {
        name: "storage.dir",
        redis_name: Some("dir"),
        runtime: false,
        help: "Data directory (log segments, hint files). Created if missing.",
        access: Access::Text {
            accepts: DIR_ACCEPTS,
            check: check_dir,
            get: |c| c.storage.dir.to_string_lossy().into_owned(),
            set: |c, v| c.storage.dir = PathBuf::from(v),
        },
    },
    SettingInfo {
        name: "storage.fsync",
        redis_name: Some("appendfsync"),
        runtime: true,
        help: "When writes reach the disk: always (before replying), everysec (a crash loses \
               up to ~1 s), never (the OS decides). Redis's no = never.",
        access: Access::Choice {
            values: Fsync::SPELLINGS,
            get: |c| c.storage.fsync.as_str(),
            set: |c, v| choose(c, v, |c| &mut c.storage.fsync),
            redis_get: Some(|c| c.storage.fsync.redis_str()),
        },
    },
    SettingInfo {
        name: "storage.segment_size",
        redis_name: None,
        runtime: false,
        help: "A log segment is closed and a new one started at this size.",
        access: Access::Size {
            min: MIB,
            max: 3 * GIB,
            get: |c| c.storage.segment_size,
            set: |c, v| c.storage.segment_size = v,
        },
    },
    SettingInfo {
        name: "storage.journal_size",
        redis_name: None,
        runtime: false,
        help: "With fsync always: size of each of a worker's two commit journal files, so a \
               commit fsyncs one file instead of every partition log it wrote (disk used: 2 x \
               workers x this). 0 = no journal; otherwise at least 64kb.",
        access: Access::Size {
            min: 0,
            max: GIB,
            get: |c| c.storage.journal_size,
            set: |c, v| c.storage.journal_size = v,
        },
    },
    SettingInfo {
        name: "storage.partitions",
        redis_name: None,
        runtime: false,
        help: "Storage partitions in standalone mode (keys are hashed across them). Fixed \
               once data exists.",
        access: Access::Int {
            min: 1,
            max: 16384,
            get: |c| u64::from(c.storage.partitions),
            set: |c, v| c.storage.partitions = v as u32,
        },
    },
    SettingInfo {
        name: "storage.merge_dead_ratio",
        redis_name: None,
        runtime: true,
        help: "Merge (compact) a partition's log in the background once dead bytes / total \
               bytes exceeds this.",
        access: Access::Float {
            min: 0.05,
            max: 0.95,
            get: |c| c.storage.merge_dead_ratio,
            set: |c, v| c.storage.merge_dead_ratio = v,
        },
    },
    SettingInfo {
        name: "storage.merge_min_bytes",
        redis_name: None,
        runtime: true,
        help: "Never merge a log smaller than this, whatever its dead ratio.",
        access: Access::Size {
            min: 0,
            max: 1024 * GIB,
            get: |c| c.storage.merge_min_bytes,
            set: |c, v| c.storage.merge_min_bytes = v,
        },
    },
    SettingInfo {
        name: "storage.min_free_space",
        redis_name: None,
        runtime: true,
        help: "Disk space kept free for deletes and merges: with less free on the data \
               directory's file system, writes that add data are refused (DEL, UNLINK, \
               FLUSHALL and merges go on) until merges free space again. 0 turns it off.",
        access: Access::Size {
            min: 0,
            max: 1024 * GIB,
            get: |c| c.storage.min_free_space,
            set: |c, v| c.storage.min_free_space = v,
        },
    },
    SettingInfo {
        name: "storage.hint_files",
        redis_name: None,
        runtime: false,
        help: "Write a hint file (keys and offsets) for each closed segment so startup need \
               not read values.",
        access: Access::Bool {
            get: |c| c.storage.hint_files,
            set: |c, v| c.storage.hint_files = v,
        },
    },
    SettingInfo {
        name: "storage.shutdown_hint_min_bytes",
        redis_name: None,
        runtime: true,
        help: "With hint_files: a clean shutdown describes each partition's active segment \
               holding at least this many bytes of records in a shutdown hint, so the next \
               start reads its keys, not its values. Smaller ones are read whole at start, \
               about as fast as the hint is written. 0 = every non-empty one.",
        access: Access::Size {
            min: 0,
            max: 1024 * GIB,
            get: |c| c.storage.shutdown_hint_min_bytes,
            set: |c, v| c.storage.shutdown_hint_min_bytes = v,
        },
    },
    SettingInfo {
        name: "storage.repair",
        redis_name: None,
        runtime: false,
        help: "When an older segment is corrupt or records are missing (a segment file, a \
               partition directory), drop what is lost and start, instead of refusing to \
               start. A torn tail of the newest segment is always truncated. A cluster node \
               that drops anything takes a new storage id: it is in sync for no partition \
               until it has caught up again.",
        access: Access::Bool {
            get: |c| c.storage.repair,
            set: |c, v| c.storage.repair = v,
        },
    },
    SettingInfo {
        name: "storage.active_expire_effort",
        redis_name: Some("active-expire-effort"),
        runtime: true,
        help: "CPU spent actively expiring keys, 1 (least) to 10, as Redis.",
        access: Access::Int {
            min: 1,
            max: 10,
            get: |c| u64::from(c.storage.active_expire_effort),
            set: |c, v| c.storage.active_expire_effort = v as u32,
        },
    },
    // ---------------------------------------------------------------- [cluster]
    SettingInfo {
        name: "cluster.zk",
        redis_name: None,
        runtime: false,
        help: "ZooKeeper connect string with optional chroot, e.g. \
               127.0.0.1:2181/simplekv. Unset = standalone.",
        access: Access::OptText {
            accepts: ZkConnect::EXPECTED,
            check: check_zk,
            get: |c| c.cluster.zk.clone(),
            set: |c, v| c.cluster.zk = v,
        },
    },
    SettingInfo {
        name: "cluster.name",
        redis_name: None,
        runtime: false,
        help: "Cluster name; several clusters can share one ZooKeeper chroot.",
        access: Access::Text {
            accepts: NAME_ACCEPTS,
            check: check_cluster_name,
            get: |c| c.cluster.name.clone(),
            set: |c, v| c.cluster.name = v,
        },
    },
    SettingInfo {
        name: "cluster.node_id",
        redis_name: None,
        runtime: false,
        help: "This node's id, unique in the cluster. Required in cluster mode.",
        access: Access::OptInt {
            min: 0,
            max: i32::MAX as u64,
            get: |c| c.cluster.node_id.map(u64::from),
            set: |c, v| c.cluster.node_id = v.map(|v| v as u32),
        },
    },
    SettingInfo {
        name: "cluster.advertise_host",
        redis_name: None,
        runtime: false,
        help: "Host name or address other nodes and clients use to reach this node; unset = \
               server.bind. Required when bind is a wildcard address in cluster mode.",
        access: Access::OptText {
            accepts: HOST_ACCEPTS,
            check: check_host,
            get: |c| c.cluster.advertise_host.clone(),
            set: |c, v| c.cluster.advertise_host = v,
        },
    },
    SettingInfo {
        name: "cluster.secret",
        redis_name: None,
        runtime: false,
        help: "Shared by every node of the cluster: replication and controller calls between \
               nodes carry it and are refused without it; unset = they are not authenticated \
               (keep the gRPC port on a private network then).",
        access: Access::OptText {
            accepts: "printable ASCII without spaces",
            check: check_secret,
            get: |c| c.cluster.secret.clone(),
            set: |c, v| c.cluster.secret = v,
        },
    },
    SettingInfo {
        name: "cluster.grpc_port",
        redis_name: None,
        runtime: false,
        help: "Port of the gRPC KV and replication service. Required in cluster mode; unset \
               in standalone mode = service off.",
        access: Access::OptInt {
            min: 1,
            max: 65535,
            get: |c| c.cluster.grpc_port.map(u64::from),
            set: |c, v| c.cluster.grpc_port = v.map(|v| v as u16),
        },
    },
    SettingInfo {
        name: "cluster.session_timeout_ms",
        redis_name: None,
        runtime: false,
        help: "ZooKeeper session timeout; a node silent this long is considered dead. \
               ZooKeeper grants 2 tickTimes up to its maxSessionTimeout (by default 20 \
               tickTimes); a node times itself by this value, so it refuses to register \
               with a ZooKeeper that grants less.",
        access: Access::Int {
            min: 1_000,
            max: 600_000,
            get: |c| c.cluster.session_timeout_ms,
            set: |c, v| c.cluster.session_timeout_ms = v,
        },
    },
    SettingInfo {
        name: "cluster.acks",
        redis_name: None,
        runtime: true,
        help: "Acknowledge a write after: 0 = the leader accepted it, 1 = the leader logged \
               it, all = every in-sync replica has it. Kafka's -1 = all.",
        access: Access::Choice {
            values: Acks::SPELLINGS,
            get: |c| c.cluster.acks.as_str(),
            set: |c, v| choose(c, v, |c| &mut c.cluster.acks),
            redis_get: None,
        },
    },
    SettingInfo {
        name: "cluster.min_insync_replicas",
        redis_name: None,
        runtime: true,
        help: "With acks = all, writes fail unless at least this many replicas (leader \
               included) are in sync.",
        access: Access::Int {
            min: 1,
            max: 255,
            get: |c| u64::from(c.cluster.min_insync_replicas),
            set: |c, v| c.cluster.min_insync_replicas = v as u32,
        },
    },
    SettingInfo {
        name: "cluster.replica_lag_time_max_ms",
        redis_name: None,
        runtime: false,
        help: "A follower that has not caught up for this long leaves the in-sync set.",
        access: Access::Int {
            min: 100,
            max: 600_000,
            get: |c| c.cluster.replica_lag_time_max_ms,
            set: |c, v| c.cluster.replica_lag_time_max_ms = v,
        },
    },
    SettingInfo {
        name: "cluster.replica_push_linger_us",
        redis_name: None,
        runtime: false,
        help: "While records keep coming, a leader holds them up to this many microseconds \
               before pushing them to its followers, so one push (a gRPC message to each \
               follower and an acknowledgement back) carries several worker turns: fewer \
               messages, but more latency; measured on loopback it cost more than it saved, \
               hence 0 = push every turn at once. An idle leader always pushes at once.",
        access: Access::Int {
            min: 0,
            max: 100_000,
            get: |c| c.cluster.replica_push_linger_us,
            set: |c, v| c.cluster.replica_push_linger_us = v,
        },
    },
    SettingInfo {
        name: "cluster.unclean_leader_election",
        redis_name: None,
        runtime: false,
        help: "Let an out-of-sync replica become leader when no in-sync one is left: \
               available again sooner, but acknowledged writes can be lost.",
        access: Access::Bool {
            get: |c| c.cluster.unclean_leader_election,
            set: |c, v| c.cluster.unclean_leader_election = v,
        },
    },
    SettingInfo {
        name: "cluster.leader_imbalance_check_ms",
        redis_name: None,
        runtime: false,
        help: "How often the controller checks whether leaders should move back to their \
               preferred replicas.",
        access: Access::Int {
            min: 1_000,
            max: 86_400_000,
            get: |c| c.cluster.leader_imbalance_check_ms,
            set: |c, v| c.cluster.leader_imbalance_check_ms = v,
        },
    },
    SettingInfo {
        name: "cluster.leader_imbalance_ratio",
        redis_name: None,
        runtime: false,
        help: "Move leaders back when a node's share of partitions it should lead but does \
               not exceeds this; 1.0 = never.",
        access: Access::Float {
            min: 0.0,
            max: 1.0,
            get: |c| c.cluster.leader_imbalance_ratio,
            set: |c, v| c.cluster.leader_imbalance_ratio = v,
        },
    },
];

/// Exact dotted name, as written in a TOML file.
pub(crate) fn find_dotted(name: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Dotted name or Redis name, case-insensitive; `-` and `_` are interchangeable in dotted
/// names so that `--set storage.segment-size=...` works like a command-line flag would.
pub(crate) fn lookup(name: &str) -> Option<&'static SettingInfo> {
    let name = name.trim().to_ascii_lowercase();
    let dotted = name.replace('-', "_");
    SETTINGS
        .iter()
        .find(|s| s.name == dotted || s.redis_name == Some(name.as_str()))
}

/// Parses and stores one setting by any accepted name, without cross-field checks.
pub(crate) fn apply(config: &mut Config, name: &str, value: &str) -> Result<(), ConfError> {
    lookup(name)
        .ok_or_else(|| unknown(name))?
        .apply(config, value)
}

/// The error for an unknown name, with a suggestion when one is close.
pub(crate) fn unknown(name: &str) -> ConfError {
    ConfError::UnknownSetting {
        name: name.to_owned(),
        suggestion: suggest(name),
    }
}

/// The setting a misspelt name most likely meant: the same key under another (or no)
/// section, else the nearest name by edit distance if the distance is small.
pub(crate) fn suggest(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase().replace('-', "_");
    let key = name.rsplit('.').next().unwrap_or(&name);
    if let Some(s) = SETTINGS.iter().find(|s| s.key() == key) {
        return Some(s.name);
    }
    let (distance, best) = SETTINGS
        .iter()
        .map(|s| {
            let to_name = edit_distance(&name, s.name);
            let to_redis = s
                .redis_name
                .map_or(usize::MAX, |r| edit_distance(&name, &r.replace('-', "_")));
            let to_key = edit_distance(key, s.key());
            (to_name.min(to_redis).min(to_key), s.name)
        })
        .min_by_key(|&(d, _)| d)?;
    (distance <= 2 || distance * 4 <= name.len()).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}
