//! Enumerated setting values and the ZooKeeper connect string.

use std::fmt;
use std::str::FromStr;

/// A string that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?} (expected {expected})")]
pub struct ParseEnumError {
    /// What was being parsed, e.g. "fsync policy".
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted spellings, e.g. "always|everysec|never".
    pub expected: String,
}

macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal,
        { $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal $(| $alias:literal)* ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The config spellings, in declaration order (aliases not included).
            pub const SPELLINGS: &'static [&'static str] = &[$($spelling),+];

            /// The spelling used in config files, `CONFIG GET` and `Display`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            /// Case-insensitive; also accepts the aliases listed in the variant docs.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let t = s.trim();
                $(
                    if t.eq_ignore_ascii_case($spelling) $(|| t.eq_ignore_ascii_case($alias))* {
                        return Ok($name::$variant);
                    }
                )+
                Err(ParseEnumError {
                    what: $what,
                    value: s.to_owned(),
                    expected: Self::SPELLINGS.join("|"),
                })
            }
        }
    };
}

config_enum! {
    /// When the storage log is flushed to disk (`appendfsync` in Redis).
    Fsync, "fsync policy", {
        /// fsync after every write batch, before replying.
        Always = "always",
        /// fsync once a second in the background; a crash loses at most about a second.
        #[default]
        EverySec = "everysec",
        /// Never fsync explicitly; the OS flushes when it wants. Alias: Redis's `no`.
        Never = "never" | "no",
    }
}

impl Fsync {
    /// The spelling Redis uses for `CONFIG GET appendfsync` (`no` instead of `never`), so
    /// tools that compare against Redis's values recognise it.
    pub fn redis_str(self) -> &'static str {
        match self {
            Fsync::Never => "no",
            other => other.as_str(),
        }
    }
}

config_enum! {
    /// How many replicas must have a write before the leader acknowledges it (Kafka's
    /// `acks`).
    Acks, "acks value", {
        /// `0`: reply as soon as the leader has accepted the write, before it is logged.
        None = "0",
        /// `1`: reply once the leader has logged the write.
        Leader = "1",
        /// `all`: reply once every in-sync replica has it (at least `min_insync_replicas`).
        /// Alias: Kafka's `-1`.
        #[default]
        All = "all" | "-1",
    }
}

config_enum! {
    /// Log verbosity.
    LogLevel, "log level", {
        /// Only errors.
        Error = "error",
        /// Errors and warnings. Alias: Redis's `warning`.
        Warn = "warn" | "warning",
        /// Startup, shutdown, cluster membership changes. Alias: Redis's `notice`.
        #[default]
        Info = "info" | "notice",
        /// Per-connection and per-replication-round events. Alias: Redis's `verbose`.
        Debug = "debug" | "verbose",
        /// Everything, including per-command events.
        Trace = "trace",
    }
}

impl LogLevel {
    /// The spelling Redis uses for `CONFIG GET loglevel` (Redis's levels, from most to least
    /// verbose: debug, verbose, notice, warning; it has no errors-only level).
    pub fn redis_str(self) -> &'static str {
        match self {
            LogLevel::Error | LogLevel::Warn => "warning",
            LogLevel::Info => "notice",
            LogLevel::Debug => "verbose",
            LogLevel::Trace => "debug",
        }
    }
}

/// A parsed ZooKeeper connect string: `host:port[,host:port...][/chroot]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConnect {
    /// `host:port` entries in the order given.
    pub hosts: Vec<String>,
    /// The chroot path (`/simplekv`), or `None` for the ZooKeeper root.
    pub chroot: Option<String>,
}

impl ZkConnect {
    /// Describes the accepted form, for error messages.
    pub const EXPECTED: &'static str =
        "a ZooKeeper connect string host:port[,host:port...][/chroot]";

    /// Parses and checks a connect string; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<ZkConnect, String> {
        let (hosts_part, chroot) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        if hosts_part.is_empty() {
            return Err(format!("{}; no host given", Self::EXPECTED));
        }
        let mut hosts = Vec::new();
        for entry in hosts_part.split(',') {
            let entry = entry.trim();
            let Some((host, port)) = entry.rsplit_once(':') else {
                return Err(format!("{}; {entry:?} has no :port", Self::EXPECTED));
            };
            let host_ok = !host.is_empty() && !host.contains(char::is_whitespace);
            if !host_ok {
                return Err(format!("{}; {entry:?} has no host", Self::EXPECTED));
            }
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => {
                    return Err(format!(
                        "{}; port in {entry:?} is not an integer 1..=65535",
                        Self::EXPECTED
                    ));
                }
            }
            hosts.push(entry.to_owned());
        }
        let chroot = match chroot {
            // The Java client treats a lone "/" as no chroot; so do we.
            None | Some("/") => None,
            Some(path) => {
                // ZooKeeper rejects these paths itself, but only once connected, with an
                // error that does not mention the config.
                if path.ends_with('/') || path.contains("//") {
                    return Err(format!(
                        "{}; chroot {path:?} must not end with / or contain //",
                        Self::EXPECTED
                    ));
                }
                if path.split('/').any(|c| c == "." || c == "..") {
                    return Err(format!(
                        "{}; chroot {path:?} must not contain . or .. components",
                        Self::EXPECTED
                    ));
                }
                Some(path.to_owned())
            }
        };
        Ok(ZkConnect { hosts, chroot })
    }

    /// The hosts part alone, comma-separated, as clients that take the chroot separately
    /// expect it.
    pub fn hosts_string(&self) -> String {
        self.hosts.join(",")
    }
}
