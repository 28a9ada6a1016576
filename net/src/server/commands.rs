//! Replies assembled from every worker's part (INFO, KEYS, CLIENT LIST, ...) and COMMAND.

use super::conn::Output;
use super::dispatch::Finisher;
use super::router::Payload;
use super::stats::WorkerStats;
use crate::cmd;
use crate::resp::encode::{
    write_array_len, write_bulk, write_error, write_integer, write_null, write_simple,
};

/// The keys every part returned, in part order.
fn all_keys(parts: Vec<Payload>) -> Vec<Vec<u8>> {
    parts
        .into_iter()
        .flat_map(|p| match p {
            Payload::Keys(k) => k,
            _ => Vec::new(),
        })
        .collect()
}

/// The parts' integers added up.
fn int_sum(parts: &[Payload]) -> i64 {
    parts
        .iter()
        .map(|p| match p {
            Payload::Int(n) => *n,
            _ => 0,
        })
        .sum()
}

/// Builds the reply of a finished broadcast from its parts.
pub fn finish(f: &Finisher, parts: Vec<Payload>, r: &mut Vec<u8>) {
    if let Some(e) = parts.iter().find_map(|p| match p {
        Payload::Err(e) => Some(e.clone()),
        _ => None,
    }) {
        write_error(r, e.as_bytes());
        return;
    }
    match f {
        Finisher::Keys => {
            let keys = all_keys(parts);
            write_array_len(r, keys.len());
            for k in keys {
                write_bulk(r, &k);
            }
        }
        Finisher::Count => write_integer(r, all_keys(parts).len() as i64),
        Finisher::RandomKey => {
            let keys = all_keys(parts);
            if keys.is_empty() {
                write_null(r);
            } else {
                write_bulk(r, &keys[fastrand::usize(..keys.len())]);
            }
        }
        Finisher::ClientList { extra, ids, pubsub } => {
            // The caller's own line is `extra`; inside a transaction its connection may also
            // sit among its worker's when the list is taken there.
            let own = extra.split(' ').next().unwrap_or_default();
            let mut text = String::new();
            for p in parts {
                if let Payload::Text(t) = p {
                    let others = t.split_inclusive('\n');
                    text.extend(others.filter(|l| l.split(' ').next() != Some(own)));
                }
            }
            text.push_str(extra);
            if let Some(ids) = ids {
                // One line per client, each starting with `id=<n> `.
                let wanted = |line: &str| {
                    line.strip_prefix("id=")
                        .and_then(|l| l.split(' ').next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|id| ids.contains(&id))
                };
                text = text.split_inclusive('\n').filter(|l| wanted(l)).collect();
            }
            if let Some(pubsub) = pubsub {
                // TYPE pubsub: the lines whose flags have P; TYPE normal: the others.
                let has_p = |line: &str| {
                    line.split(' ')
                        .find_map(|f| f.strip_prefix("flags="))
                        .is_some_and(|f| f.contains('P'))
                };
                text = text
                    .split_inclusive('\n')
                    .filter(|l| has_p(l) == *pubsub)
                    .collect();
            }
            write_bulk(r, text.as_bytes());
        }
        Finisher::Scan {
            partition: start,
            partitions,
        } => {
            let (keys, partition, next, more) = match parts.into_iter().next() {
                Some(Payload::ScanPage {
                    keys,
                    partition,
                    next,
                    more,
                }) => (keys, partition, next, more.is_some()),
                // No page (cannot happen today): go on after the partition asked for
                // rather than end the iteration.
                _ => (Vec::new(), *start, 0, false),
            };
            // Next cursor: same partition further on, or the next partition from its start
            // (`partition` itself when the page was to go on there: a transaction's page
            // stops where another worker's partitions begin).
            let cursor = if next != 0 {
                (next << 14) | partition as u64
            } else if more {
                partition as u64
            } else if partition + 1 < *partitions {
                (partition + 1) as u64
            } else {
                0
            };
            write_array_len(r, 2);
            write_bulk(r, cursor.to_string().as_bytes());
            write_array_len(r, keys.len());
            for k in keys {
                write_bulk(r, &k);
            }
        }
        Finisher::ClientKill {
            old_style,
            killed_self,
        } => {
            let killed = int_sum(&parts) + i64::from(*killed_self);
            match (old_style, killed) {
                (true, 0) => write_error(r, b"ERR No such client"),
                (true, _) => write_simple(r, b"OK"),
                (false, n) => write_integer(r, n),
            }
        }
        Finisher::Status(s) => write_simple(r, s.as_bytes()),
        Finisher::Saved { status, last_save } => {
            // Every part succeeded (an error is the reply, above).
            let now = simplekv_engine::system_clock() / 1000;
            last_save.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
            write_simple(r, status.as_bytes());
        }
        Finisher::SlowLog { count, max_len } => {
            let entries = parts
                .into_iter()
                .flat_map(|p| match p {
                    Payload::SlowLog(e) => e,
                    _ => Vec::new(),
                })
                .collect();
            super::slowlog::write_entries(r, entries, *count, *max_len);
        }
        Finisher::Sum { max } => write_integer(r, int_sum(&parts).min(*max)),
        Finisher::Distinct { count } => {
            let mut names = all_keys(parts);
            names.sort_unstable();
            names.dedup();
            if *count {
                write_integer(r, names.len() as i64);
            } else {
                write_array_len(r, names.len());
                for n in names {
                    write_bulk(r, &n);
                }
            }
        }
        Finisher::NumSub { names } => {
            let mut totals = vec![0; names.len()];
            for p in parts {
                if let Payload::Counts(c) = p {
                    totals.iter_mut().zip(c).for_each(|(t, n)| *t += n);
                }
            }
            write_array_len(r, 2 * names.len());
            for (n, total) in names.iter().zip(totals) {
                write_bulk(r, n);
                write_integer(r, total);
            }
        }
        Finisher::LatencyHistogram { names } => {
            let mut total = super::stats::CmdStats::default();
            for p in &parts {
                if let Payload::Stats(s) = p {
                    total.absorb(&s.cmdstats);
                }
            }
            r.extend_from_slice(&super::latency::histogram_reply(&total.latencies(), names));
        }
        Finisher::LatencyMonitor {
            sub,
            event,
            threshold,
        } => {
            use super::latency_monitor as lm;
            let mut total = lm::LatencyEvents::default();
            for p in &parts {
                if let Payload::Stats(s) = p {
                    total.merge(&s.latency_events);
                }
            }
            match *sub {
                "latest" => lm::latest_reply(&total, r),
                "history" => lm::history_reply(&total, event, r),
                "graph" => {
                    let now = simplekv_engine::system_clock() / 1000;
                    lm::graph_reply(&total, event, now, r);
                }
                _ => {
                    let report = lm::doctor_report(&total, *threshold);
                    write_bulk(r, report.as_bytes());
                }
            }
        }
        Finisher::DistinctCount => {
            let mut names = all_keys(parts);
            names.sort();
            names.dedup();
            write_integer(r, names.len() as i64);
        }
        Finisher::Info { sections } => {
            let mut total = WorkerStats::default();
            for p in &parts {
                if let Payload::Stats(s) = p {
                    total.merge(s);
                }
            }
            let text = super::info::render(&total, sections);
            write_bulk(r, text.as_bytes());
        }
    }
}

/// COMMAND, COMMAND COUNT / INFO / DOCS / LIST (what redis-cli uses for hints and help).
pub fn cmd_command(out: &mut Output, args: &[&[u8]]) {
    let mut r = Vec::new();
    let sub = args
        .get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
    match sub.as_deref() {
        None => {
            write_array_len(&mut r, cmd::COMMANDS.len());
            for spec in cmd::COMMANDS {
                cmd::table::write_command_info(spec, &mut r);
            }
        }
        Some("count") if args.len() == 2 => write_integer(&mut r, cmd::COMMANDS.len() as i64),
        Some("list") => {
            let Some(filter) = ListFilter::parse(&args[2..]) else {
                write_error(&mut r, b"ERR syntax error");
                return out.push_reply(&r);
            };
            let names: Vec<&str> = cmd::COMMANDS
                .iter()
                .flat_map(|c| std::iter::once(c).chain(c.subcommands.iter()))
                .filter(|c| filter.keeps(c))
                .map(|c| c.name)
                .collect();
            write_array_len(&mut r, names.len());
            for n in names {
                write_bulk(&mut r, n.as_bytes());
            }
        }
        Some("info") => {
            let names: Vec<&[u8]> = args[2..].to_vec();
            if names.is_empty() {
                write_array_len(&mut r, cmd::COMMANDS.len());
                for spec in cmd::COMMANDS {
                    cmd::table::write_command_info(spec, &mut r);
                }
            } else {
                write_array_len(&mut r, names.len());
                for n in names {
                    match cmd::table::lookup_full(n) {
                        Some(spec) => cmd::table::write_command_info(spec, &mut r),
                        None => write_null(&mut r),
                    }
                }
            }
        }
        Some("docs") => {
            let specs: Vec<&cmd::CommandSpec> = if args.len() == 2 {
                cmd::COMMANDS.iter().collect()
            } else {
                args[2..]
                    .iter()
                    .filter_map(|n| cmd::table::lookup_full(n))
                    .collect()
            };
            write_array_len(&mut r, specs.len() * 2);
            for spec in specs {
                write_bulk(&mut r, spec.name.as_bytes());
                cmd::table::write_command_docs(spec, &mut r);
            }
        }
        Some(sub @ ("getkeys" | "getkeysandflags")) if args.len() >= 3 => {
            getkeys(&args[2..], sub == "getkeysandflags", &mut r)
        }
        Some("help") if args.len() == 2 => {
            let lines = [
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand)",
                "    Return details about all commands.",
                "COUNT",
                "    Return the total number of commands in this server.",
                "INFO [<command-name> ...]",
                "    Return details about multiple commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "DOCS [<command-name> ...]",
                "    Return documentation details about multiple commands.",
                "    If no command names are given, documentation details for all",
                "    commands are returned.",
                "GETKEYS <full-command>",
                "    Return the keys from a full command.",
                "GETKEYSANDFLAGS <full-command>",
                "    Return the keys and the access flags from a full command.",
                "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
                "    Return a list of all commands in this server.",
            ];
            crate::resp::encode::write_help(&mut r, &lines);
        }
        // Redis 7's text, with the subcommand as given (arity errors were answered by dispatch).
        Some(_) => return super::dispatch::unknown_subcommand(out, "command", args[1]),
    }
    out.push_reply(&r);
}

/// COMMAND LIST's FILTERBY.
enum ListFilter<'a> {
    All,
    /// No modules here: nothing matches.
    Module,
    AclCat(&'a [u8]),
    Pattern(&'a [u8]),
}

impl<'a> ListFilter<'a> {
    /// The arguments after LIST: none, or `FILTERBY <kind> <arg>`; `None` is a syntax error.
    fn parse(rest: &[&'a [u8]]) -> Option<ListFilter<'a>> {
        match rest {
            [] => Some(ListFilter::All),
            [by, kind, arg] if by.eq_ignore_ascii_case(b"filterby") => {
                match kind.to_ascii_lowercase().as_slice() {
                    b"module" => Some(ListFilter::Module),
                    b"aclcat" => Some(ListFilter::AclCat(arg)),
                    b"pattern" => Some(ListFilter::Pattern(arg)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn keeps(&self, c: &cmd::CommandSpec) -> bool {
        match self {
            ListFilter::All => true,
            ListFilter::Module => false,
            ListFilter::AclCat(cat) => c.acl_categories.iter().any(|a| {
                a.strip_prefix('@')
                    .is_some_and(|a| a.as_bytes().eq_ignore_ascii_case(cat))
            }),
            ListFilter::Pattern(p) => crate::glob::glob_match(p, c.name.as_bytes(), true),
        }
    }
}

/// COMMAND GETKEYS / GETKEYSANDFLAGS on a full command line, as Redis 7.0 answers them.
/// Whether a BITFIELD only reads (Redis's bitfieldGetKeys: only GET and OVERFLOW, well
/// formed; anything else counts as a write, the safer guess).
fn bitfield_reads_only(argv: &[&[u8]]) -> bool {
    let mut i = 2;
    while i < argv.len() {
        let left = argv.len() - i - 1;
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"get") && left >= 2 {
            i += 3;
        } else if a.eq_ignore_ascii_case(b"overflow") && left >= 1 {
            i += 2;
        } else {
            return false;
        }
    }
    true
}

fn getkeys(argv: &[&[u8]], with_flags: bool, r: &mut Vec<u8>) {
    let Some(spec) = cmd::table::lookup_argv(argv) else {
        return write_error(r, b"ERR Invalid command specified");
    };
    if spec.key_specs.iter().all(|k| k.flags.contains(&"not_key")) {
        return write_error(r, b"ERR The command has no key arguments");
    }
    if !cmd::table::arity_ok(spec, argv.len()) {
        return write_error(r, b"ERR Invalid number of arguments specified for command");
    }
    let Some(keys) = cmd::table::keys_by_specs(spec, argv).filter(|k| !k.is_empty()) else {
        return write_error(r, b"ERR Invalid arguments specified for command");
    };
    write_array_len(r, keys.len());
    for (pos, flags) in keys {
        // SET's key flags depend on its GET option (Redis's setGetKeys).
        let flags: &[&str] = if flags.contains(&"variable_flags") && spec.name == "set" {
            if argv[3.min(argv.len())..]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(b"get"))
            {
                &["RW", "access", "update"]
            } else {
                &["OW", "update"]
            }
        } else if flags.contains(&"variable_flags") && spec.name == "bitfield" {
            if bitfield_reads_only(argv) {
                &["RO", "access"]
            } else {
                &["RW", "access", "update"]
            }
        } else {
            flags
        };
        if with_flags {
            write_array_len(r, 2);
            write_bulk(r, argv[pos]);
            write_array_len(r, flags.len());
            for f in flags {
                write_simple(r, f.as_bytes());
            }
        } else {
            write_bulk(r, argv[pos]);
        }
    }
}
