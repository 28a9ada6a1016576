//! Redis compatibility for `CONFIG GET` / `CONFIG SET`.

use crate::settings::SETTINGS;
use crate::{ConfError, Config};

/// Redis settings simplekv reports with a fixed value: tools read them (redis-benchmark
/// reads `save` and `appendonly` at start) and scripts written for Redis set them.
const FIXED: &[(&str, &str, &str)] = &[
    (
        "save",
        "",
        "simplekv takes no RDB snapshots; only save \"\" is accepted",
    ),
    (
        "appendonly",
        "yes",
        "simplekv always persists through its log; only appendonly yes is accepted",
    ),
    (
        "databases",
        "1",
        "simplekv has a single database; only databases 1 is accepted",
    ),
    // What clients and tools ask for at start-up. simplekv keeps every value on disk and
    // only its keydir in memory; nothing is evicted.
    (
        "maxmemory",
        "0",
        "simplekv does not evict keys; only maxmemory 0 is accepted",
    ),
    (
        "maxmemory-policy",
        "noeviction",
        "simplekv does not evict keys; only maxmemory-policy noeviction is accepted",
    ),
    (
        "replica-read-only",
        "yes",
        "replicas of simplekv never take writes; only replica-read-only yes is accepted",
    ),
    (
        "slave-read-only",
        "yes",
        "replicas of simplekv never take writes; only slave-read-only yes is accepted",
    ),
];

pub(crate) fn config_pairs(config: &Config) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = SETTINGS
        .iter()
        .map(|s| {
            let name = s.redis_name.unwrap_or(s.name);
            let value = match s.name {
                // It lets a caller pose as a node of the cluster: CONFIG GET only says whether
                // one is set (it is not a run-time setting, so nothing reads it back to set it).
                "cluster.secret" if config.cluster.secret.is_some() => "(set)".to_owned(),
                _ => s.redis_value(config),
            };
            (name.to_owned(), value)
        })
        .collect();
    pairs.extend(
        FIXED
            .iter()
            .map(|(name, value, _)| ((*name).to_owned(), (*value).to_owned())),
    );
    // Read by tools that tell a cluster node from a standalone server (not settable).
    let cluster = if config.is_cluster() { "yes" } else { "no" };
    pairs.push(("cluster-enabled".to_owned(), cluster.to_owned()));
    pairs
}

/// The name a fixed Redis setting goes by (aliases folded: `slave-read-only` is
/// `replica-read-only`), or `None` if `name` is not one.
pub(crate) fn fixed_canonical(name: &str) -> Option<&'static str> {
    let (found, _, _) = FIXED
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))?;
    Some(match *found {
        "slave-read-only" => "replica-read-only",
        other => other,
    })
}

/// `Ok(true)` when `name` is a fixed Redis setting and `value` its fixed value (a no-op),
/// `Ok(false)` when `name` is not a fixed setting, an error for any other value.
pub(crate) fn check_fixed_set(name: &str, value: &str) -> Result<bool, ConfError> {
    let Some((_, fixed, reason)) = FIXED.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name))
    else {
        return Ok(false);
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case(fixed)
        || (name.eq_ignore_ascii_case("maxmemory") && memory_is_zero(value))
    {
        Ok(true)
    } else {
        Err(ConfError::Unsupported {
            name: name.to_owned(),
            reason,
        })
    }
}

/// A value set under a Redis name that means something else to simplekv, in simplekv's
/// words. Redis takes `hz` from 0 to 2147483647 and clamps it into 1..=500 (CONFIG GET then
/// reads the clamped value), so scripts written for it set any value in that range; under
/// its dotted name (`server.hz`, and in a config file) the range is checked instead.
/// `loglevel debug` is Redis's most verbose level, simplekv's `trace` (CONFIG GET loglevel
/// then reads `debug` back); `server.log_level = "debug"` stays simplekv's debug.
pub(crate) fn redis_value(name: &str, value: &str) -> Option<String> {
    if name.eq_ignore_ascii_case("loglevel") && value.eq_ignore_ascii_case("debug") {
        return Some("trace".into());
    }
    if !name.eq_ignore_ascii_case("hz") || value.is_empty() || value.len() > 10 {
        return None;
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = value.parse().ok()?;
    (n <= i32::MAX as u64).then(|| n.clamp(1, 500).to_string())
}

/// A Redis memory value (`0`, `00`, `0kb`, `0GB`, ...) that means no bytes.
fn memory_is_zero(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let digits = ["gb", "mb", "kb", "g", "m", "k", "b"]
        .iter()
        .find_map(|u| lower.strip_suffix(u))
        .unwrap_or(&lower);
    !digits.is_empty() && digits.bytes().all(|b| b == b'0')
}

/// One element of a glob pattern; every element but `Star` matches exactly one byte,
/// which is what makes the single-backtrack-point matcher below exact.
enum Token {
    Star,
    Any,
    Byte(u8),
    Class { negated: bool, items: Vec<(u8, u8)> },
}

impl Token {
    fn matches(&self, byte: u8) -> bool {
        let byte = byte.to_ascii_lowercase();
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(b) => *b == byte,
            Token::Class { negated, items } => {
                items.iter().any(|&(lo, hi)| (lo..=hi).contains(&byte)) != *negated
            }
        }
    }
}

/// Redis's `stringmatchlen` syntax (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), case-insensitive
/// as `CONFIG GET` is.
fn tokenize(pattern: &[u8]) -> Vec<Token> {
    let lower = |b: u8| b.to_ascii_lowercase();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                if !matches!(tokens.last(), Some(Token::Star)) {
                    tokens.push(Token::Star);
                }
            }
            b'?' => tokens.push(Token::Any),
            b'[' => {
                i += 1;
                let negated = pattern.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut items = Vec::new();
                // Like Redis, an unterminated class runs to the end of the pattern.
                while i < pattern.len() && pattern[i] != b']' {
                    if pattern[i] == b'\\' && i + 1 < pattern.len() {
                        i += 1;
                        items.push((lower(pattern[i]), lower(pattern[i])));
                    } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                        let (a, b) = (lower(pattern[i]), lower(pattern[i + 2]));
                        items.push((a.min(b), a.max(b)));
                        i += 2;
                    } else {
                        items.push((lower(pattern[i]), lower(pattern[i])));
                    }
                    i += 1;
                }
                tokens.push(Token::Class { negated, items });
            }
            b'\\' if i + 1 < pattern.len() => {
                i += 1;
                tokens.push(Token::Byte(lower(pattern[i])));
            }
            b => tokens.push(Token::Byte(lower(b))),
        }
        i += 1;
    }
    tokens
}

/// Matches in O(pattern × text) time: a client-supplied `*a*a*a*…` must not be able to
/// make `CONFIG GET` take exponential time.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let tokens = tokenize(pattern);
    let (mut t, mut i) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while i < text.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                backtrack = Some((t, i));
                t += 1;
            }
            Some(token) if token.matches(text[i]) => {
                t += 1;
                i += 1;
            }
            _ => match backtrack {
                Some((star, start)) => {
                    t = star + 1;
                    i = start + 1;
                    backtrack = Some((star, start + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| matches!(token, Token::Star))
}
