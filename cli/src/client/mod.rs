//! `simplekv cli`: a client in the style of redis-cli.
//!
//! ```text
//! simplekv cli [-h HOST] [-p PORT] [-a PASSWORD] [-u URI] [-n DB] [-c] [--raw|--no-raw]
//!              [-x] [-r N] [-i SECONDS] [-e] [--no-auth-warning] [--version] [COMMAND ARGS...]
//! ```
//!
//! - With a command: runs it once and prints the reply. Exit status 0, or 1 on an error reply
//!   or when the server cannot be reached. The arguments are taken as they are (the shell has
//!   already done the quoting).
//! - Without, on a terminal: a REPL (prompt `HOST:PORT> `, or `not connected> `), with line
//!   editing and history in `$SIMPLEKV_HISTFILE` or `~/.simplekv_history` (none without HOME;
//!   an empty `SIMPLEKV_HISTFILE` disables it). Lines are split with redis-cli's quoting rules
//!   (see `quoting`); `help`, `help CMD`, `help @group`, `clear`, `quit`/`exit`, Ctrl-C and
//!   Ctrl-D leave, and a count before a command repeats it (`3 INCR k`), as in redis-cli. Lines with passwords (AUTH...) are not written to the history.
//! - Without, stdin not a terminal: one command per line, one reply each, no prompt. Exit
//!   status 0 even after error replies or connection failures (as redis-cli), which are all
//!   printed; 1 only if stdin cannot be read or stdout written.
//!
//! Replies are printed in redis-cli's terminal format when stdout is a terminal, else raw
//! (see `format`); `--raw` / `--no-raw` force one or the other. Replies go to stdout;
//! connection messages (`Could not connect to simplekv at HOST:PORT: ...`,
//! `Reconnected to HOST:PORT.`, `Error: Server closed the connection`) to stderr.
//!
//! After the server goes away each command first tries to reconnect (and re-sends AUTH with
//! `-a`'s password, or with the last password typed in an AUTH that succeeded).

mod complete;
mod conn;
mod format;
mod grpc;
mod help;
mod quoting;
mod repl;

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args};

use conn::{Connector, RespConnector, Timeouts};
use format::Format;
use repl::Session;

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ClientArgs {
    /// Server host name or address.
    #[arg(short = 'h', long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = default_port())]
    port: u16,
    /// Password to AUTH with after connecting and after every reconnect (or set
    /// SIMPLEKV_CLI_AUTH or REDISCLI_AUTH, which keep it out of the process list).
    #[arg(short = 'a', long = "pass", value_name = "PASSWORD")]
    password: Option<OsString>,
    /// Server URI, redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]; overrides -h, -p and -a (-n
    /// overrides its DB).
    #[arg(short = 'u', value_name = "URI")]
    uri: Option<String>,
    /// Database number to SELECT after connecting (simplekv has one: 0).
    #[arg(short = 'n', value_name = "DB")]
    db: Option<i64>,
    /// Read the command's last argument from stdin (all of it, bytes as they are).
    #[arg(short = 'x')]
    stdin_arg: bool,
    /// Run the command N times (-1: until interrupted). No server at the first run ends it;
    /// one gone later is tried again at most once a second.
    #[arg(short = 'r', value_name = "N", allow_negative_numbers = true)]
    repeat: Option<i64>,
    /// Seconds to wait between repeats with -r (fractions allowed, e.g. 0.1).
    #[arg(short = 'i', value_name = "SECONDS")]
    interval: Option<f64>,
    /// With commands piped on stdin, exit with status 1 if any failed (an error reply or no
    /// connection). A single command always does.
    #[arg(short = 'e')]
    exit_on_error: bool,
    /// Accepted for redis-cli scripts; simplekv prints no warning about -a.
    #[arg(long)]
    no_auth_warning: bool,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
    /// Cluster mode: follow MOVED redirects to the node that leads the key, as redis-cli -c
    /// does (with --grpc, to the gRPC port the redirect names).
    #[arg(short = 'c')]
    cluster: bool,
    /// Print bare replies (the default when stdout is not a terminal).
    #[arg(long, overrides_with = "no_raw")]
    raw: bool,
    /// Print replies formatted for humans even when stdout is not a terminal.
    #[arg(long, overrides_with = "raw")]
    no_raw: bool,
    /// Talk to the gRPC KV service instead of RESP; -p is then the node's gRPC port
    /// (cluster.grpc_port). GET, SET [EX|PX], DEL, EXPIRE, PEXPIRE, TTL, PTTL, MGET, MSET, PING.
    #[arg(long)]
    grpc: bool,
    /// Print help (-h is the host, as in redis-cli).
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// A command to run once, e.g. `set hello world`; without one, an interactive session.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

fn default_port() -> u16 {
    simplekv_conf::ServerConfig::default().port
}

/// The transport: RESP over TCP, or the gRPC KV service with `--grpc`.
fn connector(args: &ClientArgs) -> Box<dyn Connector> {
    if args.grpc {
        return Box::new(grpc::GrpcConnector {
            host: args.host.clone(),
            port: args.port,
        });
    }
    Box::new(RespConnector {
        host: args.host.clone(),
        port: args.port,
        timeouts: Timeouts::default(),
    })
}

/// `$SIMPLEKV_HISTFILE`, else `~/.simplekv_history`; None if empty or HOME is unset.
fn history_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIMPLEKV_HISTFILE") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".simplekv_history"))
}

/// What `-u redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` names.
#[derive(Debug, Default, PartialEq)]
struct Uri {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    db: Option<i64>,
}

/// `%40` → `@`; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_uri(uri: &str) -> Result<Uri, String> {
    let rest = match uri.split_once("://") {
        Some(("redis", rest)) => rest,
        Some(("rediss", _)) => return Err("TLS (rediss://) is not supported".into()),
        _ => return Err("expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]".into()),
    };
    let mut u = Uri::default();
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    if let Some(auth) = auth {
        // As redis-cli reads it: `user:password`, or a password alone; percent-encoded.
        match auth.split_once(':') {
            Some((user, pass)) => {
                u.user = (!user.is_empty()).then(|| percent_decode(user));
                u.password = Some(percent_decode(pass));
            }
            None => u.password = Some(percent_decode(auth)),
        }
    }
    let (hostport, db) = match rest.split_once('/') {
        Some((hp, db)) => (hp, Some(db)),
        None => (rest, None),
    };
    if let Some(db) = db.filter(|d| !d.is_empty()) {
        u.db = Some(
            db.parse()
                .map_err(|_| format!("bad database number '{db}'"))?,
        );
    }
    // `[v6]` or `[v6]:port`; otherwise `host` or `host:port`.
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in '{hostport}'"))?;
        match after {
            "" => (h, None),
            a => (
                h,
                Some(
                    a.strip_prefix(':')
                        .ok_or_else(|| format!("bad port '{a}'"))?,
                ),
            ),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    u.host = (!host.is_empty()).then(|| host.to_string());
    if let Some(p) = port {
        u.port = Some(p.parse().map_err(|_| format!("bad port '{p}'"))?);
    }
    Ok(u)
}

pub fn run(mut args: ClientArgs) -> ExitCode {
    if args.version {
        println!("simplekv cli {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut user = None;
    if let Some(uri) = args.uri.take() {
        let u = match parse_uri(&uri) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("Invalid URI '{uri}': {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(h) = u.host {
            args.host = h;
        }
        if let Some(p) = u.port {
            args.port = p;
        }
        if let Some(p) = u.password {
            args.password = Some(p.into());
        }
        user = u.user;
        args.db = args.db.or(u.db);
    }
    let stdout_tty = io::stdout().is_terminal();
    let format = if args.raw {
        Format::Raw
    } else if args.no_raw || stdout_tty {
        Format::Tty
    } else {
        Format::Raw
    };
    let password = args
        .password
        .clone()
        .or_else(|| std::env::var_os("SIMPLEKV_CLI_AUTH"))
        .or_else(|| std::env::var_os("REDISCLI_AUTH"))
        .map(OsString::into_vec);
    let mut session = Session::new(connector(&args), password, format);
    if let Some(user) = user {
        session.set_user(user.into_bytes());
    }
    if let Some(db) = args.db {
        session.select_db(db);
    }
    session.color = stdout_tty;
    session.follow_redirects = args.cluster;
    // Options come before the command: a first word that looks like one is a mistyped or
    // unknown option (it used to go to the server as a command).
    if let Some(first) = args.command.first()
        && first.len() > 1
        && first.as_encoded_bytes().starts_with(b"-")
    {
        eprintln!(
            "Unrecognized option or bad number of args for: '{}'",
            first.to_string_lossy()
        );
        return ExitCode::FAILURE;
    }
    if !args.command.is_empty() {
        let mut command: Vec<Vec<u8>> = args.command.into_iter().map(OsString::into_vec).collect();
        if args.stdin_arg {
            let mut last = Vec::new();
            if let Err(e) = io::Read::read_to_end(&mut io::stdin(), &mut last) {
                eprintln!(
                    "Cannot read the last argument from stdin: {}",
                    conn::io_text(&e)
                );
                return ExitCode::FAILURE;
            }
            command.push(last);
        }
        let repeat = args.repeat.unwrap_or(1);
        let interval = match args.interval.map(std::time::Duration::try_from_secs_f64) {
            None => std::time::Duration::ZERO,
            Some(Ok(d)) => d,
            Some(Err(_)) => {
                eprintln!("Invalid -i: a number of seconds is expected");
                return ExitCode::FAILURE;
            }
        };
        return repl::one_shot(&mut session, &command, repeat, interval);
    }
    if args.stdin_arg {
        eprintln!("-x needs a command: its last argument is read from stdin");
        return ExitCode::FAILURE;
    }
    if io::stdin().is_terminal() {
        return repl::interactive(&mut session, history_file());
    }
    let stdin = io::stdin();
    let stdout = io::stdout();
    let stderr = io::stderr();
    match repl::piped(
        &mut session,
        &mut stdin.lock(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    ) {
        Ok(true) if args.exit_on_error => ExitCode::FAILURE,
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", conn::io_text(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Uri, parse_uri};

    #[test]
    fn uris_read_as_redis_cli_reads_them() {
        let u = |host: &str, port, user: Option<&str>, pass: Option<&str>, db| Uri {
            host: Some(host.into()),
            port,
            user: user.map(Into::into),
            password: pass.map(Into::into),
            db,
        };
        assert_eq!(
            parse_uri("redis://h").unwrap(),
            u("h", None, None, None, None)
        );
        assert_eq!(
            parse_uri("redis://:p%40ss@10.0.0.1:7000/0").unwrap(),
            u("10.0.0.1", Some(7000), None, Some("p@ss"), Some(0))
        );
        assert_eq!(
            parse_uri("redis://bob:pw@h:1/").unwrap(),
            u("h", Some(1), Some("bob"), Some("pw"), None)
        );
        assert_eq!(
            parse_uri("redis://secret@[::1]:7379").unwrap(),
            u("::1", Some(7379), None, Some("secret"), None)
        );
        assert_eq!(
            parse_uri("redis://[::1]").unwrap(),
            u("::1", None, None, None, None)
        );
        assert!(parse_uri("redis://[::1").is_err());
        assert!(parse_uri("rediss://h").unwrap_err().contains("TLS"));
        assert!(parse_uri("http://h").is_err());
        assert!(parse_uri("redis://h:port").unwrap_err().contains("port"));
        assert!(parse_uri("redis://h/x").unwrap_err().contains("database"));
    }
}
