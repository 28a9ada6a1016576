//! Errors, worded so that the user can fix the config without reading the source.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong reading, changing or checking a [`Config`](crate::Config).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// A name that is neither a dotted setting name nor a Redis name.
    #[error("unknown setting {name:?}{}", Suggestion(*suggestion))]
    UnknownSetting {
        /// The name as given.
        name: String,
        /// The closest known dotted name, when one is close enough to be a likely typo.
        suggestion: Option<&'static str>,
    },

    /// A value that does not parse or is out of range for its setting.
    #[error("invalid value for {name}: {value:?} (expected {expected})")]
    InvalidValue {
        /// Dotted setting name, e.g. `server.port`.
        name: &'static str,
        /// The rejected value as given (or as currently set, when found by `validate`).
        value: String,
        /// What would have been accepted, e.g. `an integer 1..=65535`.
        expected: String,
    },

    /// Settings that are each valid but not together.
    #[error("{message}")]
    Inconsistent {
        /// Dotted names of the settings involved.
        names: Vec<&'static str>,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// `CONFIG SET` on a setting that is only read at startup.
    #[error(
        "CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"
    )]
    Immutable {
        /// The name as given.
        name: String,
    },

    /// `CONFIG SET` naming one setting twice (under either of its names).
    #[error("CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter")]
    Duplicate {
        /// The second name as given.
        name: String,
    },

    /// `CONFIG SET` of a Redis setting that simplekv only reports (`save`, `appendonly`,
    /// `databases`) to anything but its fixed value.
    #[error("CONFIG SET failed (possibly related to argument '{name}') - {reason}")]
    Unsupported {
        /// The name as given.
        name: String,
        /// Why the value cannot change.
        reason: &'static str,
    },

    /// A command-line override that is not `name=value`.
    #[error("invalid setting override {text:?} (expected name=value, e.g. storage.fsync=always)")]
    BadOverride {
        /// The override as given.
        text: String,
    },

    /// The config file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why. Part of the message rather than a `source`, so it is not printed twice.
        error: std::io::Error,
    },

    /// The file is not valid TOML.
    #[error("{}TOML parse error at line {line}, column {column}: {message}", Origin(path.as_ref()))]
    Toml {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// 1-based.
        line: usize,
        /// 1-based, in characters.
        column: usize,
        /// The parser's description.
        message: String,
    },

    /// A setting error found in a config file, with where it was found.
    #[error("{}{}{error}", Origin(path.as_ref()), Location(*location))]
    InFile {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// 1-based line and column of the offending key or value, when known.
        location: Option<(usize, usize)>,
        /// The error itself.
        error: Box<ConfError>,
    },
}

impl ConfError {
    /// The error with any file context removed: what actually went wrong.
    pub fn root(&self) -> &ConfError {
        match self {
            ConfError::InFile { error, .. } => error.root(),
            other => other,
        }
    }

    /// The dotted setting name (or, for unknown/immutable names, the name as given) that the
    /// error is about, if it is about one.
    pub fn setting(&self) -> Option<&str> {
        match self.root() {
            ConfError::UnknownSetting { name, .. }
            | ConfError::Immutable { name }
            | ConfError::Duplicate { name }
            | ConfError::Unsupported { name, .. } => Some(name),
            ConfError::InvalidValue { name, .. } => Some(name),
            ConfError::Inconsistent { names, .. } => names.first().copied(),
            _ => None,
        }
    }

    /// The error line for a `CONFIG SET` reply, without the leading `-` and trailing CRLF,
    /// in the wording Redis uses so that clients matching on it keep working.
    pub fn config_set_reply(&self) -> String {
        let text = match self.root() {
            ConfError::UnknownSetting { name, .. } => {
                format!("ERR Unknown option or number of arguments for CONFIG SET - '{name}'")
            }
            err @ ConfError::InvalidValue { name, .. } => {
                let arg = crate::settings::find_dotted(name)
                    .and_then(|s| s.redis_name)
                    .unwrap_or(name);
                format!("ERR CONFIG SET failed (possibly related to argument '{arg}') - {err}")
            }
            err @ ConfError::Inconsistent { .. } => format!("ERR CONFIG SET failed - {err}"),
            err => format!("ERR {err}"),
        };
        // A RESP simple error ends at the first CR or LF; a client-supplied name could
        // otherwise inject a second reply.
        text.replace(['\r', '\n'], " ")
    }
}

struct Suggestion(Option<&'static str>);

impl fmt::Display for Suggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, " (did you mean {name:?}?)"),
            None => Ok(()),
        }
    }
}

struct Origin<'a>(Option<&'a PathBuf>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "config file {}: ", path.display()),
            None => Ok(()),
        }
    }
}

struct Location(Option<(usize, usize)>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, "line {line}, column {column}: "),
            None => Ok(()),
        }
    }
}
