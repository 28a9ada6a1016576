//! The command table: what every supported command is (arity, flags, key positions, docs) and
//! the `COMMAND INFO` / `COMMAND DOCS` encoders that report it the way Redis 7.0 does.
//!
//! The data itself lives in `defs.rs`, mirrored from a real Redis 7.0 server.
use crate::resp::{write_array_len, write_bulk, write_integer, write_simple};

pub use super::defs::COMMANDS;

/// How the server runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One key at `args[1]`: runs on the store that owns it (`exec_keyed`).
    Keyed,
    /// Several keys, possibly on several stores: split by owner, run per store, merged.
    Multi(MultiKind),
    /// No keys, or keys the server handles itself.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiKind {
    MGet,
    MSet,
    MSetNx,
    Del,
    Unlink,
    Exists,
    /// EXISTS under another name: counts the keys that exist.
    Touch,
}

/// One argument in `COMMAND DOCS`.
#[derive(Debug)]
pub struct ArgDoc {
    pub name: &'static str,
    /// "key", "string", "integer", "double", "pure-token", "oneof", "block", "unix-time", "pattern"
    pub typ: &'static str,
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    /// The alternatives of a "oneof", the parts of a "block".
    pub sub: &'static [ArgDoc],
    /// Index into the command's `key_specs` for "key" arguments.
    pub key_spec_index: Option<i32>,
    pub since: Option<&'static str>,
    pub deprecated_since: Option<&'static str>,
    /// The token is repeated before every value (`multiple_token` in Redis).
    pub multiple_token: bool,
}

impl ArgDoc {
    pub const DEFAULT: ArgDoc = ArgDoc {
        name: "",
        typ: "string",
        token: None,
        optional: false,
        multiple: false,
        sub: &[],
        key_spec_index: None,
        since: None,
        deprecated_since: None,
        multiple_token: false,
    };
}

/// Where a key spec starts looking for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    Unknown,
    Index(i32),
    Keyword {
        keyword: &'static str,
        startfrom: i32,
    },
}

/// How a key spec finds its keys from where the search began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    Unknown,
    Range {
        lastkey: i32,
        keystep: i32,
        limit: i32,
    },
    Keynum {
        keynumidx: i32,
        firstkey: i32,
        keystep: i32,
    },
}

/// A Redis 7 key specification (the 9th element of `COMMAND INFO`).
#[derive(Debug)]
pub struct KeySpec {
    pub notes: Option<&'static str>,
    pub flags: &'static [&'static str],
    pub begin_search: BeginSearch,
    pub find_keys: FindKeys,
}

#[derive(Debug)]
pub struct CommandSpec {
    /// Lowercase; subcommands are `container|sub`, as Redis names them.
    pub name: &'static str,
    /// N: exactly N arguments including the name; -N: at least N.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    /// Empty when Redis gives none.
    pub complexity: &'static str,
    pub arguments: &'static [ArgDoc],
    pub kind: Kind,
    /// As `COMMAND INFO` lists them, with the implicit ones (`@write`, `@fast`, `@slow`...).
    pub acl_categories: &'static [&'static str],
    pub tips: &'static [&'static str],
    pub key_specs: &'static [KeySpec],
    pub doc_flags: &'static [&'static str],
    pub deprecated_since: Option<&'static str>,
    pub replaced_by: Option<&'static str>,
    pub history: &'static [(&'static str, &'static str)],
    /// Sorted by name.
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    pub const DEFAULT: CommandSpec = CommandSpec {
        name: "",
        arity: 0,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        group: "",
        since: "",
        summary: "",
        complexity: "",
        arguments: &[],
        kind: Kind::Server,
        acl_categories: &[],
        tips: &[],
        key_specs: &[],
        doc_flags: &[],
        deprecated_since: None,
        replaced_by: None,
        history: &[],
        subcommands: &[],
    };

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// The subcommand `sub` (any case) of a container command such as CONFIG.
    pub fn subcommand(&self, sub: &[u8]) -> Option<&'static CommandSpec> {
        self.subcommands.iter().find(|s| {
            s.name
                .split_once('|')
                .is_some_and(|(_, n)| n.as_bytes().eq_ignore_ascii_case(sub))
        })
    }
}

/// Longest command name in the table; longer inputs cannot match.
const MAX_NAME_LEN: usize = 16;

/// Finds a command by name, in any case, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let lower = &*lower;
    // GET and SET are most of the traffic in the workloads simplekv is for: skip the binary
    // search (about eight string comparisons) for them.
    if lower.len() == 3 {
        let (get, set) = *HOT.get_or_init(|| (find(b"get"), find(b"set")));
        match lower {
            b"get" => return get,
            b"set" => return set,
            _ => {}
        }
    }
    find(lower)
}

static HOT: std::sync::OnceLock<(Option<&'static CommandSpec>, Option<&'static CommandSpec>)> =
    std::sync::OnceLock::new();

/// For each first letter `a`..`z`, the run of the (sorted) table whose names start with it.
static BY_LETTER: std::sync::OnceLock<[(u16, u16); 26]> = std::sync::OnceLock::new();

fn by_letter() -> &'static [(u16, u16); 26] {
    BY_LETTER.get_or_init(|| {
        let mut runs = [(0u16, 0u16); 26];
        for (i, c) in COMMANDS.iter().enumerate() {
            if let Some(f) = c.name.bytes().next().filter(u8::is_ascii_lowercase) {
                let run = &mut runs[usize::from(f - b'a')];
                if run.1 == 0 {
                    run.0 = i as u16;
                }
                run.1 = i as u16 + 1;
            }
        }
        runs
    })
}

/// The command named `lower` (lowercase): among those of its first letter, a few compared
/// by length first, rather than a binary search's eight string comparisons over the table.
fn find(lower: &[u8]) -> Option<&'static CommandSpec> {
    let first = *lower.first()?;
    match by_letter().get(usize::from(first.wrapping_sub(b'a'))) {
        Some(&(start, end)) => COMMANDS[usize::from(start)..usize::from(end)]
            .iter()
            .find(|c| c.name.as_bytes() == lower),
        None => COMMANDS
            .binary_search_by(|c| c.name.as_bytes().cmp(lower))
            .ok()
            .and_then(|i| COMMANDS.get(i)),
    }
}

/// Redis's arity rule; `argc` counts the command name.
/// A command, or a subcommand named `container|sub` (how COMMAND INFO and DOCS name them).
pub fn lookup_full(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&b| b == b'|') {
        Some(i) => lookup(&name[..i])?.subcommand(&name[i + 1..]),
        None => lookup(name),
    }
}

impl MultiKind {
    /// MSET and MSETNX take key-value pairs.
    pub fn takes_pairs(self) -> bool {
        matches!(self, MultiKind::MSet | MultiKind::MSetNx)
    }

    /// The command's name, as a slow log entry of one worker's part shows it.
    pub fn name(self) -> &'static [u8] {
        match self {
            MultiKind::MGet => b"MGET",
            MultiKind::MSet => b"MSET",
            MultiKind::MSetNx => b"MSETNX",
            MultiKind::Del => b"DEL",
            MultiKind::Unlink => b"UNLINK",
            MultiKind::Exists => b"EXISTS",
            MultiKind::Touch => b"TOUCH",
        }
    }
}

impl CommandSpec {
    /// Redis's `may_replicate` flag, which COMMAND INFO does not show (so the generated
    /// table lacks it): of simplekv's commands, PUBLISH and SPUBLISH, which Redis passes on
    /// to its replicas. CLIENT PAUSE WRITE holds them and a monitor may not run them.
    pub fn may_replicate(&self) -> bool {
        matches!(self.name, "publish" | "spublish")
    }

    /// The spec a command line is checked against: a container's subcommand when one of
    /// its subcommands is named (`client|list`), else this one.
    /// Whether the container knows subcommand `sub`: one of its table's, or one simplekv
    /// answers beyond them (its CLIENT ACKS, Redis 7.2's CLIENT SETINFO and NO-TOUCH, and
    /// those it answers with what to use instead). Any other is refused before the command
    /// runs or is queued in MULTI, as Redis refuses a subcommand it does not know.
    /// The subcommand of `args` this container refuses (see `knows_subcommand`), if any.
    pub fn refused_subcommand<'a>(&self, args: &[&'a [u8]]) -> Option<&'a [u8]> {
        args.get(1)
            .copied()
            .filter(|sub| !self.subcommands.is_empty() && !self.knows_subcommand(sub))
    }

    pub fn knows_subcommand(&self, sub: &[u8]) -> bool {
        const MORE: &[(&str, &str)] = &[
            ("client", "acks"),
            ("client", "setinfo"),
            ("client", "no-touch"),
            ("config", "rewrite"),
            ("memory", "doctor"),
            ("memory", "stats"),
            ("memory", "malloc-stats"),
        ];
        self.subcommand(sub).is_some()
            || MORE
                .iter()
                .any(|(c, s)| *c == self.name && s.as_bytes().eq_ignore_ascii_case(sub))
    }

    pub fn for_args(&'static self, args: &[&[u8]]) -> &'static CommandSpec {
        match args.get(1) {
            Some(sub) if !self.subcommands.is_empty() => self.subcommand(sub).unwrap_or(self),
            _ => self,
        }
    }
}

/// The command a full command line runs: the container's subcommand when it has
/// subcommands and one is given (Redis's lookupCommand).
pub fn lookup_argv(argv: &[&[u8]]) -> Option<&'static CommandSpec> {
    let spec = lookup(argv.first()?)?;
    if spec.subcommands.is_empty() || argv.len() == 1 {
        return Some(spec);
    }
    spec.subcommand(argv[1])
}

/// The keys of a full command line found by its key specs, each with its spec's flags, as
/// Redis's getKeysUsingKeySpecs; `None` when the arguments do not fit a spec.
pub fn keys_by_specs(
    spec: &CommandSpec,
    argv: &[&[u8]],
) -> Option<Vec<(usize, &'static [&'static str])>> {
    let argc = argv.len() as i64;
    let mut keys = Vec::new();
    for ks in spec.key_specs {
        if ks.flags.contains(&"not_key") {
            continue;
        }
        let first = match ks.begin_search {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword { keyword, startfrom } => {
                let from = i64::from(startfrom);
                let (start, end) = if from > 0 {
                    (from, argc - 1)
                } else {
                    (argc + from, 1)
                };
                let mut i = start;
                let mut found = None;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if argv[i as usize].eq_ignore_ascii_case(keyword.as_bytes()) {
                        found = Some(i + 1);
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                match found {
                    Some(f) => f,
                    None => continue,
                }
            }
            BeginSearch::Unknown => return None,
        };
        let (first, last, step) = match ks.find_keys {
            FindKeys::Range {
                lastkey,
                keystep,
                limit,
            } => {
                let (lastkey, limit) = (i64::from(lastkey), i64::from(limit));
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit == 0 {
                    argc + lastkey
                } else {
                    first + ((argc - first) / limit + lastkey)
                };
                (first, last, i64::from(keystep))
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                let idx = first + i64::from(keynumidx);
                if idx >= argc {
                    return None;
                }
                let n = crate::resp::string2ll(argv[idx as usize]).filter(|n| *n >= 0)?;
                let first = first + i64::from(firstkey);
                (first, first + n - 1, i64::from(keystep))
            }
            FindKeys::Unknown => return None,
        };
        if last >= argc || last < first || first >= argc {
            return None;
        }
        let mut i = first;
        while i <= last {
            keys.push((i as usize, ks.flags));
            i += step.max(1);
        }
    }
    Some(keys)
}

pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(spec.arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

fn write_simples(out: &mut Vec<u8>, items: &[&str]) {
    write_array_len(out, items.len());
    for s in items {
        write_simple(out, s.as_bytes());
    }
}

fn write_bulks(out: &mut Vec<u8>, items: &[&str]) {
    write_array_len(out, items.len());
    for s in items {
        write_bulk(out, s.as_bytes());
    }
}

fn write_key_spec(ks: &KeySpec, out: &mut Vec<u8>) {
    write_array_len(out, if ks.notes.is_some() { 8 } else { 6 });
    if let Some(notes) = ks.notes {
        write_bulk(out, b"notes");
        write_bulk(out, notes.as_bytes());
    }
    write_bulk(out, b"flags");
    write_simples(out, ks.flags);
    write_bulk(out, b"begin_search");
    write_array_len(out, 4);
    write_bulk(out, b"type");
    match ks.begin_search {
        BeginSearch::Unknown => {
            write_bulk(out, b"unknown");
            write_bulk(out, b"spec");
            write_array_len(out, 0);
        }
        BeginSearch::Index(pos) => {
            write_bulk(out, b"index");
            write_bulk(out, b"spec");
            write_array_len(out, 2);
            write_bulk(out, b"index");
            write_integer(out, pos.into());
        }
        BeginSearch::Keyword { keyword, startfrom } => {
            write_bulk(out, b"keyword");
            write_bulk(out, b"spec");
            write_array_len(out, 4);
            write_bulk(out, b"keyword");
            write_bulk(out, keyword.as_bytes());
            write_bulk(out, b"startfrom");
            write_integer(out, startfrom.into());
        }
    }
    write_bulk(out, b"find_keys");
    write_array_len(out, 4);
    write_bulk(out, b"type");
    match ks.find_keys {
        FindKeys::Unknown => {
            write_bulk(out, b"unknown");
            write_bulk(out, b"spec");
            write_array_len(out, 0);
        }
        FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } => {
            write_bulk(out, b"range");
            write_bulk(out, b"spec");
            write_array_len(out, 6);
            for (k, v) in [("lastkey", lastkey), ("keystep", keystep), ("limit", limit)] {
                write_bulk(out, k.as_bytes());
                write_integer(out, v.into());
            }
        }
        FindKeys::Keynum {
            keynumidx,
            firstkey,
            keystep,
        } => {
            write_bulk(out, b"keynum");
            write_bulk(out, b"spec");
            write_array_len(out, 6);
            for (k, v) in [
                ("keynumidx", keynumidx),
                ("firstkey", firstkey),
                ("keystep", keystep),
            ] {
                write_bulk(out, k.as_bytes());
                write_integer(out, v.into());
            }
        }
    }
}

/// Appends the `COMMAND INFO` entry for one spec: name, arity, flags, first key, last key,
/// step, ACL categories, tips, key specs, subcommands.
pub fn write_command_info(spec: &CommandSpec, out: &mut Vec<u8>) {
    write_array_len(out, 10);
    write_bulk(out, spec.name.as_bytes());
    write_integer(out, spec.arity.into());
    write_simples(out, spec.flags);
    write_integer(out, spec.first_key.into());
    write_integer(out, spec.last_key.into());
    write_integer(out, spec.step.into());
    write_simples(out, spec.acl_categories);
    write_bulks(out, spec.tips);
    write_array_len(out, spec.key_specs.len());
    for ks in spec.key_specs {
        write_key_spec(ks, out);
    }
    write_array_len(out, spec.subcommands.len());
    for sub in spec.subcommands {
        write_command_info(sub, out);
    }
}

fn write_args(args: &[ArgDoc], out: &mut Vec<u8>) {
    write_array_len(out, args.len());
    for a in args {
        let flags: Vec<&str> = [
            (a.optional, "optional"),
            (a.multiple, "multiple"),
            (a.multiple_token, "multiple_token"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        let nested = a.typ == "oneof" || a.typ == "block";
        let fields = 2
            + usize::from(a.key_spec_index.is_some())
            + usize::from(a.token.is_some())
            + usize::from(a.since.is_some())
            + usize::from(a.deprecated_since.is_some())
            + usize::from(!flags.is_empty())
            + usize::from(nested);
        write_array_len(out, fields * 2);
        write_bulk(out, b"name");
        write_bulk(out, a.name.as_bytes());
        write_bulk(out, b"type");
        write_bulk(out, a.typ.as_bytes());
        if let Some(i) = a.key_spec_index {
            write_bulk(out, b"key_spec_index");
            write_integer(out, i.into());
        }
        if let Some(t) = a.token {
            write_bulk(out, b"token");
            write_bulk(out, t.as_bytes());
        }
        if let Some(s) = a.since {
            write_bulk(out, b"since");
            write_bulk(out, s.as_bytes());
        }
        if let Some(s) = a.deprecated_since {
            write_bulk(out, b"deprecated_since");
            write_bulk(out, s.as_bytes());
        }
        if !flags.is_empty() {
            write_bulk(out, b"flags");
            write_simples(out, &flags);
        }
        if nested {
            write_bulk(out, b"arguments");
            write_args(a.sub, out);
        }
    }
}

/// Appends the body of one spec's `COMMAND DOCS` map entry, as the RESP2 flat array
/// `summary, .., since, .., group, .., complexity, .., [doc_flags, deprecated_since,
/// replaced_by, history,] arguments, .., [subcommands]`, each field only when Redis has it.
pub fn write_command_docs(spec: &CommandSpec, out: &mut Vec<u8>) {
    let fields = 1
        + usize::from(!spec.summary.is_empty())
        + usize::from(!spec.since.is_empty())
        + usize::from(!spec.complexity.is_empty())
        + usize::from(!spec.doc_flags.is_empty())
        + usize::from(spec.deprecated_since.is_some())
        + usize::from(spec.replaced_by.is_some())
        + usize::from(!spec.history.is_empty())
        + usize::from(!spec.arguments.is_empty())
        + usize::from(!spec.subcommands.is_empty());
    write_array_len(out, fields * 2);
    if !spec.summary.is_empty() {
        write_bulk(out, b"summary");
        write_bulk(out, spec.summary.as_bytes());
    }
    if !spec.since.is_empty() {
        write_bulk(out, b"since");
        write_bulk(out, spec.since.as_bytes());
    }
    write_bulk(out, b"group");
    write_bulk(out, spec.group.as_bytes());
    if !spec.complexity.is_empty() {
        write_bulk(out, b"complexity");
        write_bulk(out, spec.complexity.as_bytes());
    }
    if !spec.doc_flags.is_empty() {
        write_bulk(out, b"doc_flags");
        write_simples(out, spec.doc_flags);
    }
    if let Some(s) = spec.deprecated_since {
        write_bulk(out, b"deprecated_since");
        write_bulk(out, s.as_bytes());
    }
    if let Some(s) = spec.replaced_by {
        write_bulk(out, b"replaced_by");
        write_bulk(out, s.as_bytes());
    }
    if !spec.history.is_empty() {
        write_bulk(out, b"history");
        write_array_len(out, spec.history.len());
        for (since, change) in spec.history {
            write_array_len(out, 2);
            write_bulk(out, since.as_bytes());
            write_bulk(out, change.as_bytes());
        }
    }
    if !spec.arguments.is_empty() {
        write_bulk(out, b"arguments");
        write_args(spec.arguments, out);
    }
    if !spec.subcommands.is_empty() {
        write_bulk(out, b"subcommands");
        write_array_len(out, spec.subcommands.len() * 2);
        for sub in spec.subcommands {
            write_bulk(out, sub.name.as_bytes());
            write_command_docs(sub, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Reply, parse_reply};

    fn info(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_command_info(lookup(name.as_bytes()).unwrap(), &mut out);
        out
    }

    #[test]
    fn every_command_is_found_by_its_name_in_any_case() {
        for c in COMMANDS {
            assert!(
                std::ptr::eq(lookup(c.name.as_bytes()).unwrap(), c),
                "{}",
                c.name
            );
            let upper = c.name.to_ascii_uppercase();
            assert!(
                std::ptr::eq(lookup(upper.as_bytes()).unwrap(), c),
                "{}",
                c.name
            );
        }
        for missing in [
            "", "a", "zzz", "gett", "ge", "getex2", "{", "`get", "_", "set ",
        ] {
            assert!(lookup(missing.as_bytes()).is_none(), "{missing:?}");
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        // `lookup` binary-searches the table.
        for w in COMMANDS.windows(2) {
            assert!(w[0].name < w[1].name, "{} / {}", w[0].name, w[1].name);
        }
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.name.len() <= MAX_NAME_LEN, "{}", c.name);
            for s in c.subcommands {
                assert!(s.name.starts_with(&format!("{}|", c.name)), "{}", s.name);
            }
        }
    }

    #[test]
    fn lookup_any_case() {
        assert_eq!(lookup(b"get").unwrap().name, "get");
        assert_eq!(lookup(b"GET").unwrap().name, "get");
        assert_eq!(lookup(b"IncrByFloat").unwrap().name, "incrbyfloat");
        assert_eq!(lookup(b"bgrewriteaof").unwrap().name, "bgrewriteaof");
        for missing in [
            &b""[..],
            b"ge",
            b"gett",
            b"get ",
            b"hget",
            b"config|get",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"\xff\xfe",
        ] {
            assert!(lookup(missing).is_none(), "{missing:?}");
        }
        for c in COMMANDS {
            assert!(std::ptr::eq(lookup(c.name.as_bytes()).unwrap(), c));
            assert!(std::ptr::eq(
                lookup(c.name.to_ascii_uppercase().as_bytes()).unwrap(),
                c
            ));
        }
    }

    #[test]
    fn every_listed_command_has_its_kind() {
        let keyed = "get set setnx setex psetex getset getdel getex expire pexpire expireat \
                     pexpireat ttl pttl expiretime pexpiretime persist type incr decr incrby \
                     decrby incrbyfloat append strlen getrange setrange substr setbit getbit \
                     bitcount bitpos bitfield bitfield_ro";
        for name in keyed.split_whitespace() {
            let c = lookup(name.as_bytes()).unwrap();
            assert_eq!(c.kind, Kind::Keyed, "{name}");
            // The server routes these by args[1].
            assert_eq!((c.first_key, c.last_key, c.step), (1, 1, 1), "{name}");
            // exec_keyed picks the implementing module by group.
            assert!(["string", "generic", "bitmap"].contains(&c.group), "{name}");
        }
        let multi = [
            ("mget", MultiKind::MGet),
            ("mset", MultiKind::MSet),
            ("msetnx", MultiKind::MSetNx),
            ("del", MultiKind::Del),
            ("unlink", MultiKind::Unlink),
            ("exists", MultiKind::Exists),
            ("touch", MultiKind::Touch),
        ];
        for (name, kind) in multi {
            assert_eq!(lookup(name.as_bytes()).unwrap().kind, Kind::Multi(kind));
        }
        let server = "ping echo quit hello auth select dbsize scan keys randomkey flushdb \
                      flushall info config command client role time shutdown bgrewriteaof \
                      wait cluster readonly readwrite lastsave save bgsave memory object rename \
                      renamenx copy reset bitop lcs slowlog monitor latency multi exec discard watch
                      unwatch publish subscribe unsubscribe psubscribe punsubscribe pubsub \
                      spublish ssubscribe sunsubscribe";
        // The transaction commands are found by their group (`Worker::dispatch`).
        for name in server.split_whitespace() {
            let tx = ["multi", "exec", "discard", "watch", "unwatch"].contains(&name);
            assert_eq!(
                lookup(name.as_bytes()).unwrap().group == "transactions",
                tx,
                "{name}"
            );
        }
        for name in server.split_whitespace() {
            assert_eq!(
                lookup(name.as_bytes()).unwrap().kind,
                Kind::Server,
                "{name}"
            );
        }
        // Subcommands with a key run like keyed commands, the key after the subcommand
        // (`key_of`): only OBJECT's and MEMORY's have one.
        for container in COMMANDS {
            for sub in container.subcommands {
                if super::super::keyed_subcommand(sub) {
                    assert!(
                        ["object", "memory"].contains(&container.name),
                        "{}",
                        sub.name
                    );
                    assert_eq!(
                        (sub.first_key, sub.last_key, sub.step),
                        (2, 2, 1),
                        "{}",
                        sub.name
                    );
                }
            }
        }
        let listed =
            keyed.split_whitespace().count() + multi.len() + server.split_whitespace().count();
        assert_eq!(COMMANDS.len(), listed);
    }

    #[test]
    fn flags_arity_and_keys_as_redis_7_0() {
        let spec = |n: &str| lookup(n.as_bytes()).unwrap();
        let shape = |n: &str| {
            let c = spec(n);
            (c.arity, c.flags, c.first_key, c.last_key, c.step)
        };
        assert_eq!(shape("get"), (2, &["readonly", "fast"][..], 1, 1, 1));
        assert_eq!(shape("set"), (-3, &["write", "denyoom"][..], 1, 1, 1));
        assert_eq!(shape("del"), (-2, &["write"][..], 1, -1, 1));
        assert_eq!(shape("mset"), (-3, &["write", "denyoom"][..], 1, -1, 2));
        assert_eq!(shape("mget"), (-2, &["readonly", "fast"][..], 1, -1, 1));
        assert_eq!(shape("ping"), (-1, &["fast"][..], 0, 0, 0));
        assert_eq!(shape("command"), (-1, &["loading", "stale"][..], 0, 0, 0));
        assert_eq!(shape("substr"), (4, &["readonly"][..], 1, 1, 1));
        assert_eq!(shape("getrange"), (4, &["readonly"][..], 1, 1, 1));
        assert_eq!(shape("config"), (-2, &[][..], 0, 0, 0));
        assert_eq!(spec("getset").deprecated_since, Some("6.2.0"));
        let get = spec("config").subcommand(b"GET").unwrap();
        assert_eq!((get.name, get.arity), ("config|get", -3));
        assert!(spec("config").subcommand(b"nope").is_none());
        assert!(spec("get").subcommand(b"get").is_none());
        assert!(spec("keys").has_flag("readonly"));
        assert!(!spec("keys").has_flag("write"));
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").unwrap();
        assert!(!arity_ok(get, 1));
        assert!(arity_ok(get, 2));
        assert!(!arity_ok(get, 3));
        let set = lookup(b"set").unwrap();
        assert!(!arity_ok(set, 2));
        assert!(arity_ok(set, 3));
        assert!(arity_ok(set, 9));
        assert!(arity_ok(set, usize::MAX));
        let ping = lookup(b"ping").unwrap();
        assert!(arity_ok(ping, 1));
        assert!(arity_ok(ping, 2));
    }

    // The byte strings below are what redis-server 7.0.15 sent for the same requests.
    #[test]
    fn command_info_bytes_match_redis() {
        assert_eq!(
            info("get"),
            &b"*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*3\r\n\
+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n\
$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n\
:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n\
:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n"[..]
        );
        assert_eq!(
            info("MSET"),
            &b"*10\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n:1\r\n:-1\r\n:2\r\n*3\r\n\
+@write\r\n+@string\r\n+@slow\r\n*2\r\n$26\r\nrequest_policy:multi_shard\r\n$29\r\n\
response_policy:all_succeeded\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+OW\r\n+update\r\n$12\r\n\
begin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n\
$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n\
:-1\r\n$7\r\nkeystep\r\n:2\r\n$5\r\nlimit\r\n:0\r\n*0\r\n"[..]
        );
    }

    #[test]
    fn command_docs_bytes_match_redis() {
        let mut out = Vec::new();
        write_command_docs(lookup(b"getex").unwrap(), &mut out);
        assert_eq!(
            out,
            &b"*10\r\n$7\r\nsummary\r\n$56\r\nGet the value of a key and optionally set its \
expiration\r\n$5\r\nsince\r\n$5\r\n6.2.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n$10\r\ncomplexity\r\n\
$4\r\nO(1)\r\n$9\r\narguments\r\n*2\r\n*6\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n\
$14\r\nkey_spec_index\r\n:0\r\n*8\r\n$4\r\nname\r\n$10\r\nexpiration\r\n$4\r\ntype\r\n$5\r\n\
oneof\r\n$5\r\nflags\r\n*1\r\n+optional\r\n$9\r\narguments\r\n*5\r\n*6\r\n$4\r\nname\r\n$7\r\n\
seconds\r\n$4\r\ntype\r\n$7\r\ninteger\r\n$5\r\ntoken\r\n$2\r\nEX\r\n*6\r\n$4\r\nname\r\n$12\r\n\
milliseconds\r\n$4\r\ntype\r\n$7\r\ninteger\r\n$5\r\ntoken\r\n$2\r\nPX\r\n*6\r\n$4\r\nname\r\n\
$17\r\nunix-time-seconds\r\n$4\r\ntype\r\n$9\r\nunix-time\r\n$5\r\ntoken\r\n$4\r\nEXAT\r\n*6\r\n\
$4\r\nname\r\n$22\r\nunix-time-milliseconds\r\n$4\r\ntype\r\n$9\r\nunix-time\r\n$5\r\ntoken\r\n\
$4\r\nPXAT\r\n*6\r\n$4\r\nname\r\n$7\r\npersist\r\n$4\r\ntype\r\n$10\r\npure-token\r\n$5\r\n\
token\r\n$7\r\nPERSIST\r\n"[..]
        );
    }

    fn field<'a>(map: &'a [Reply], key: &str) -> Option<&'a Reply> {
        map.chunks(2)
            .find(|kv| kv[0] == Reply::bulk(key))
            .map(|kv| &kv[1])
    }

    #[test]
    fn every_entry_is_one_well_formed_reply() {
        for c in COMMANDS {
            let out = info(c.name);
            let (reply, used) = parse_reply(&out).unwrap().unwrap();
            assert_eq!(used, out.len(), "{}", c.name);
            let Reply::Array(items) = reply else {
                panic!("{}", c.name)
            };
            assert_eq!(items.len(), 10);
            assert_eq!(items[0], Reply::bulk(c.name));
            let Reply::Array(subs) = &items[9] else {
                panic!()
            };
            assert_eq!(subs.len(), c.subcommands.len());

            let mut out = Vec::new();
            write_command_docs(c, &mut out);
            let (reply, used) = parse_reply(&out).unwrap().unwrap();
            assert_eq!(used, out.len(), "{}", c.name);
            let Reply::Array(map) = reply else { panic!() };
            assert_eq!(field(&map, "group"), Some(&Reply::bulk(c.group)));
            assert_eq!(
                field(&map, "arguments").is_some(),
                !c.arguments.is_empty(),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn container_docs_nest_their_subcommands() {
        let mut out = Vec::new();
        write_command_docs(lookup(b"config").unwrap(), &mut out);
        let (Reply::Array(map), _) = parse_reply(&out).unwrap().unwrap() else {
            panic!()
        };
        let Some(Reply::Array(subs)) = field(&map, "subcommands") else {
            panic!("{map:?}")
        };
        let names: Vec<_> = subs.iter().step_by(2).cloned().collect();
        assert_eq!(
            names,
            [
                "config|get",
                "config|help",
                "config|resetstat",
                "config|set"
            ]
            .map(Reply::bulk)
        );
        let Reply::Array(get) = &subs[1] else {
            panic!()
        };
        assert_eq!(
            field(get, "summary"),
            Some(&Reply::bulk("Get the values of configuration parameters"))
        );
    }
}
