//! `simplekv cli`: a client in the style of redis-cli.
//!
//! ```text
//! simplekv cli [-h HOST] [-p PORT] [-a PASSWORD] [--raw|--no-raw] [COMMAND ARGS...]
//! ```
//!
//! - With a command: runs it once and prints the reply. Exit status 0, or 1 on an error reply
//!   or when the server cannot be reached. The arguments are taken as they are (the shell has
//!   already done the quoting).
//! - Without, on a terminal: a REPL (prompt `HOST:PORT> `, or `not connected> `), with line
//!   editing and history in `$SIMPLEKV_HISTFILE` or `~/.simplekv_history` (none without HOME;
//!   an empty `SIMPLEKV_HISTFILE` disables it). Lines are split with redis-cli's quoting rules
//!   (see `quoting`); `help`, `help CMD`, `help @group`, `clear`, `quit`/`exit`, Ctrl-C clears
//!   the line, Ctrl-D leaves. Lines with passwords (AUTH...) are not written to the history.
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
    /// SIMPLEKV_CLI_AUTH, which keeps it out of the process list).
    #[arg(short = 'a', long = "pass", value_name = "PASSWORD")]
    password: Option<OsString>,
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

pub fn run(args: ClientArgs) -> ExitCode {
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
        .map(OsString::into_vec);
    let mut session = Session::new(connector(&args), password, format);
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
        let command: Vec<Vec<u8>> = args.command.into_iter().map(OsString::into_vec).collect();
        return repl::one_shot(&mut session, &command);
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", conn::io_text(&e));
            ExitCode::FAILURE
        }
    }
}
