//! The session (connection state, reconnects, AUTH, help) and the three ways of driving it:
//! an interactive REPL on a terminal, commands piped on stdin, and one command from argv.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{Config, Editor};
use simplekv_net::resp::Reply;

use super::complete::LineHelper;
use super::conn::{Backend, ClientError, Connector};
use super::format::{Format, format_reply_to};
use super::help::Docs;
use super::quoting::split_args;

/// What the caller of [`Session::handle_line`] should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
    /// `clear`: clear the screen (only meaningful on a terminal).
    Clear,
}

/// How one command went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply other than an error.
    Ok,
    /// The server answered with an error reply.
    ErrorReply,
    /// No reply: not connected, or the connection failed.
    Failed,
}

/// A connection to one server that survives the server going away.
///
/// Before every command the session checks that its connection is still open (a server that
/// was restarted closed it) and reconnects if needed, then re-sends AUTH. While no connection
/// can be made the prompt is `not connected> ` and each command tries again.
pub struct Session {
    connector: Box<dyn Connector>,
    backend: Option<Box<dyn Backend>>,
    /// The AUTH command to send after every connect: from `-a`, or the last successful AUTH
    /// typed in the session.
    auth: Option<Vec<Vec<u8>>>,
    /// A connection has been tried before (so a new one is announced).
    tried: bool,
    /// A connection has succeeded before (so a new one is a *re*connection).
    connected_once: bool,
    /// COMMAND DOCS of the current connection, fetched on the first `help`.
    docs: Option<Docs>,
    pub format: Format,
    /// ANSI colors in help output.
    pub color: bool,
    /// `-c`: a MOVED reply sends the command again to the node it names.
    pub follow_redirects: bool,
    /// Inside MULTI on the current connection (the prompt shows `(TX)`).
    in_multi: bool,
    /// WATCH is in force on the current connection.
    watching: bool,
    /// The connection was lost with MULTI or WATCH in force: the next command is not sent.
    lost: Option<&'static str>,
    /// `-n`: the SELECT to send after every connect.
    select: Option<Vec<Vec<u8>>>,
}

/// Redirects followed for one command before its last MOVED is shown as the reply.
const MAX_REDIRECTS: usize = 16;

/// `MOVED <slot> <host>:<port>` → (slot, host, port).
fn moved_to(reply: &Reply) -> Option<(&str, &str, u16)> {
    let Reply::Error(e) = reply else { return None };
    let text = std::str::from_utf8(e).ok()?;
    let mut words = text.strip_prefix("MOVED ")?.split(' ');
    let slot = words.next()?;
    let (host, port) = words.next()?.rsplit_once(':')?;
    Some((slot, host, port.parse().ok()?))
}

fn eq_ignore_case(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

impl Session {
    pub fn new(
        connector: Box<dyn Connector>,
        password: Option<Vec<u8>>,
        format: Format,
    ) -> Session {
        Session {
            connector,
            backend: None,
            auth: password.map(|p| vec![b"AUTH".to_vec(), p]),
            tried: false,
            connected_once: false,
            docs: None,
            format,
            color: false,
            follow_redirects: false,
            in_multi: false,
            watching: false,
            lost: None,
            select: None,
        }
    }

    /// A user name for AUTH (from `-u`): `AUTH user password`.
    pub fn set_user(&mut self, user: Vec<u8>) {
        if let Some(auth) = self.auth.as_mut() {
            auth.insert(1, user);
        }
    }

    /// `-n DB`: SELECT it after every connect.
    pub fn select_db(&mut self, db: i64) {
        self.select = Some(vec![b"SELECT".to_vec(), db.to_string().into_bytes()]);
    }

    pub fn is_connected(&self) -> bool {
        self.backend.is_some()
    }

    /// `127.0.0.1:7379> `, `127.0.0.1:7379(TX)> ` inside MULTI, or `not connected> `.
    pub fn prompt(&self) -> String {
        if self.is_connected() {
            let tx = if self.in_multi { "(TX)" } else { "" };
            format!("{}{tx}> ", self.connector.target())
        } else {
            "not connected> ".to_string()
        }
    }

    fn disconnect(&mut self) {
        self.backend = None;
        self.docs = None;
        // The server drops a connection's transaction and watches with it.
        if self.in_multi {
            self.lost = Some("inside MULTI (the queued commands were discarded, none ran)");
        } else if self.watching {
            self.lost = Some("while keys were watched (the watches are gone)");
        }
        self.in_multi = false;
        self.watching = false;
    }

    /// Follows MULTI / EXEC / DISCARD / WATCH / UNWATCH / RESET replies.
    fn track(&mut self, args: &[Vec<u8>], reply: &Reply) {
        let Some(name) = args.first() else { return };
        let ok = !matches!(reply, Reply::Error(_));
        if eq_ignore_case(name, "multi") && ok {
            self.in_multi = true;
        } else if ["exec", "discard", "reset"]
            .iter()
            .any(|n| eq_ignore_case(name, n))
        {
            // EXEC and DISCARD end the transaction and every watch, even when refused
            // (EXECABORT); outside MULTI they change nothing that was in force.
            if self.in_multi || eq_ignore_case(name, "reset") {
                self.watching = false;
            }
            self.in_multi = false;
        } else if eq_ignore_case(name, "watch") && ok {
            self.watching = true;
        } else if eq_ignore_case(name, "unwatch") && ok && !self.in_multi {
            self.watching = false;
        }
    }

    /// Makes sure there is a live connection, opening one if needed. Notices (reconnected,
    /// AUTH failed) go to `err`; a failure to connect is returned.
    pub fn ensure_connected(&mut self, err: &mut dyn Write) -> Result<(), ClientError> {
        if let Some(b) = self.backend.as_mut() {
            if b.is_alive() {
                return Ok(());
            }
            self.disconnect();
        }
        let announce = self.tried;
        self.tried = true;
        let mut backend = self.connector.connect()?;
        if let Some(auth) = &self.auth
            && let Reply::Error(e) = backend.call(auth)?
        {
            let _ = writeln!(err, "AUTH failed: {}", String::from_utf8_lossy(&e));
        }
        // As redis-cli: without the database asked for there is no connection (a command
        // would run on another database).
        if let Some(select) = &self.select
            && let Reply::Error(e) = backend.call(select)?
        {
            return Err(ClientError::Select(
                String::from_utf8_lossy(&e).into_owned(),
            ));
        }
        if announce {
            let verb = if self.connected_once {
                "Reconnected"
            } else {
                "Connected"
            };
            let _ = writeln!(err, "{verb} to {}.", backend.describe());
        }
        self.connected_once = true;
        self.backend = Some(backend);
        Ok(())
    }

    /// Sends one command (connecting first if needed) and returns its reply; with
    /// `follow_redirects`, the reply of the node a MOVED leads to.
    pub fn call(&mut self, args: &[Vec<u8>], err: &mut dyn Write) -> Result<Reply, ClientError> {
        // A transaction (and its watches) lives on the connection it began on: a command of
        // it sent again elsewhere would run alone (an EXEC there answers "EXEC without
        // MULTI"), so a redirect inside one is shown, not followed.
        let in_tx = self.in_multi
            || self.watching
            || args
                .first()
                .is_some_and(|a| eq_ignore_case(a, "exec") || eq_ignore_case(a, "discard"));
        let mut reply = self.call_here(args, err)?;
        for _ in 0..MAX_REDIRECTS {
            if !self.follow_redirects || in_tx {
                break;
            }
            let Some((slot, host, port)) = moved_to(&reply) else {
                break;
            };
            if self.format == Format::Tty {
                let _ = writeln!(
                    err,
                    "-> Redirected to slot [{slot}] located at {host}:{port}"
                );
            }
            let (host, port) = (host.to_string(), port);
            self.disconnect();
            self.connector.retarget(&host, port);
            // Not announced as a reconnection: the redirect said where it goes.
            self.tried = false;
            reply = self.call_here(args, err)?;
        }
        Ok(reply)
    }

    fn call_here(&mut self, args: &[Vec<u8>], err: &mut dyn Write) -> Result<Reply, ClientError> {
        // A connection found dead here loses MULTI and WATCH with it: refuse to send the
        // command alone on a new connection (it would run outside the transaction).
        if self.backend.as_mut().is_some_and(|b| !b.is_alive()) {
            self.disconnect();
        }
        if let Some(what) = self.lost.take() {
            return Err(ClientError::StateLost(what));
        }
        self.ensure_connected(err)?;
        let Some(backend) = self.backend.as_mut() else {
            return Err(ClientError::Closed);
        };
        match backend.call(args) {
            Ok(reply) => {
                self.track(args, &reply);
                // Remember a password typed in the session for the next reconnect.
                let is_auth = args.first().is_some_and(|c| eq_ignore_case(c, "auth"));
                if is_auth && matches!(args.len(), 2 | 3) && matches!(reply, Reply::Simple(_)) {
                    self.auth = Some(args.to_vec());
                }
                Ok(reply)
            }
            Err(e) => {
                // A transaction or watches in force are gone with the connection: the next
                // command is refused, and says why (this one's error does not).
                self.disconnect();
                Err(e)
            }
        }
    }

    /// Runs a command and prints its reply to `out`, or the failure to `err`.
    pub fn command(
        &mut self,
        args: &[Vec<u8>],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<Outcome> {
        // The server would answer nothing, and this client waits for every answer (redis-cli
        // hangs there): said instead of sent.
        if let [c, r, mode] = args
            && eq_ignore_case(c, "client")
            && eq_ignore_case(r, "reply")
            && (eq_ignore_case(mode, "off") || eq_ignore_case(mode, "skip"))
        {
            writeln!(
                err,
                "CLIENT REPLY OFF and SKIP are not sent from this client: it reads an answer \
                 to every command it sends (use them from a program that does not)"
            )?;
            return Ok(Outcome::Failed);
        }
        match self.call(args, err) {
            Ok(reply) => {
                out.write_all(&format_reply_to(args, &reply, self.format))?;
                out.flush()?;
                if let [c] = args
                    && eq_ignore_case(c, "monitor")
                    && matches!(&reply, Reply::Simple(ok) if ok == b"OK")
                {
                    return self.stream_monitor(out, err);
                }
                Ok(if matches!(reply, Reply::Error(_)) {
                    Outcome::ErrorReply
                } else {
                    Outcome::Ok
                })
            }
            // SHUTDOWN's success is the server closing the connection, as redis-cli takes it.
            Err(ClientError::Closed)
                if args.first().is_some_and(|a| eq_ignore_case(a, "shutdown")) =>
            {
                Ok(Outcome::Ok)
            }
            Err(e) => {
                writeln!(err, "{e}")?;
                Ok(Outcome::Failed)
            }
        }
    }

    /// After MONITOR: prints each line the server streams, as it comes, until the connection
    /// closes (or Ctrl-C ends the process, as in redis-cli).
    fn stream_monitor(&mut self, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<Outcome> {
        loop {
            let Some(backend) = self.backend.as_mut() else {
                return Ok(Outcome::Failed);
            };
            match backend.next_reply() {
                Ok(Reply::Simple(line)) => {
                    out.write_all(&line)?;
                    out.write_all(b"\n")?;
                }
                Ok(other) => out.write_all(&format_reply_to(&[], &other, self.format))?,
                Err(e) => {
                    self.disconnect();
                    writeln!(err, "{e}")?;
                    return Ok(Outcome::Failed);
                }
            }
            out.flush()?;
        }
    }

    /// `help [words]`: the server's COMMAND DOCS, fetched once per connection; this build's
    /// own when the server cannot answer them (not reachable, AUTH needed first, gRPC).
    pub fn help(
        &mut self,
        words: &[Vec<u8>],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<Outcome> {
        // Docs cached for a connection that has gone are stale.
        if self.backend.as_mut().is_some_and(|b| !b.is_alive()) {
            self.disconnect();
        }
        // Inside MULTI the server would queue COMMAND DOCS (or refuse it and fail the
        // transaction); after a lost MULTI the user must hear of it from their next command.
        let server_docs = if self.docs.is_some() || self.lost.is_some() || self.in_multi {
            None
        } else {
            // A failure is no command's: it falls back to the built-in docs, unreported.
            match self.call_here(&[b"COMMAND".to_vec(), b"DOCS".to_vec()], err) {
                Ok(reply @ Reply::Array(_)) => Some(Docs::from_reply(&reply)),
                _ => None,
            }
        };
        if let Some(d) = server_docs {
            self.docs = Some(d);
        }
        let built_in;
        let docs = match &self.docs {
            Some(d) => d,
            None => {
                built_in = Docs::built_in();
                &built_in
            }
        };
        let outcome = if words.is_empty() {
            let target = if self.is_connected() {
                format!("connected to {}", self.connector.target())
            } else {
                format!(
                    "not connected to {} (help from this build)",
                    self.connector.target()
                )
            };
            docs.write_overview(&target, out)?;
            Outcome::Ok
        } else if docs.write_help(words, self.color, out)? {
            Outcome::Ok
        } else {
            Outcome::ErrorReply
        };
        out.flush()?;
        Ok(outcome)
    }

    /// One line typed or piped: split (redis-cli quoting), then quit/exit, clear, help, or a
    /// command for the server. An unbalanced quote prints `Invalid argument(s)`.
    ///
    /// Typed at the prompt, a line may start with a count, as in redis-cli: `3 INCR k` runs
    /// `INCR k` three times (a count below 1 is refused), and `connect HOST PORT` moves the
    /// session to another server.
    pub fn handle_line(
        &mut self,
        line: &[u8],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<Flow> {
        let args = match split_args(line) {
            Ok(args) => args,
            Err(e) => {
                writeln!(out, "{e}")?;
                out.flush()?;
                return Ok(Flow::Continue);
            }
        };
        let count = match args.as_slice() {
            [first, _, ..] if !first.is_empty() && first.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(first)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
            }
            [first, _, ..]
                if first.first() == Some(&b'-') && first[1..].iter().all(u8::is_ascii_digit) =>
            {
                Some(0)
            }
            [first, host, port] if eq_ignore_case(first, "connect") => {
                self.connect_to(host, port, err)?;
                return Ok(Flow::Continue);
            }
            _ => return Ok(self.run_args(&args, out, err)?.0),
        };
        let Some(count) = count.filter(|&n| n > 0) else {
            writeln!(out, "Invalid redis-cli repeat command option value.")?;
            out.flush()?;
            return Ok(Flow::Continue);
        };
        for _ in 0..count {
            let (flow, _) = self.run_args(&args[1..], out, err)?;
            if flow != Flow::Continue {
                return Ok(flow);
            }
        }
        Ok(Flow::Continue)
    }

    /// `connect HOST PORT` at the prompt, as in redis-cli: drops the connection (with its
    /// transaction and watches) and connects to that server; the prompt says where it is.
    fn connect_to(&mut self, host: &[u8], port: &[u8], err: &mut dyn Write) -> io::Result<()> {
        let host = String::from_utf8_lossy(host).into_owned();
        let Some(port) = std::str::from_utf8(port)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p > 0)
        else {
            writeln!(
                err,
                "Invalid port {:?}: a number 1..=65535",
                String::from_utf8_lossy(port)
            )?;
            return Ok(());
        };
        self.disconnect();
        // Leaving on purpose: nothing of the old connection's state is owed a notice.
        self.lost = None;
        self.connector.retarget(&host, port);
        // Announced as a connection, not a reconnection (the user said where it goes).
        self.tried = false;
        self.connected_once = false;
        if let Err(e) = self.ensure_connected(err) {
            writeln!(err, "{e}")?;
        }
        Ok(())
    }

    /// One line, also telling how its command went (no repeat count: piped input).
    fn run_line(
        &mut self,
        line: &[u8],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<(Flow, Outcome)> {
        match split_args(line) {
            Ok(args) => self.run_args(&args, out, err),
            Err(e) => {
                writeln!(out, "{e}")?;
                out.flush()?;
                Ok((Flow::Continue, Outcome::Failed))
            }
        }
    }

    fn run_args(
        &mut self,
        args: &[Vec<u8>],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> io::Result<(Flow, Outcome)> {
        let Some(first) = args.first() else {
            return Ok((Flow::Continue, Outcome::Ok));
        };
        if eq_ignore_case(first, "quit") || eq_ignore_case(first, "exit") {
            return Ok((Flow::Quit, Outcome::Ok));
        }
        if eq_ignore_case(first, "clear") && args.len() == 1 {
            return Ok((Flow::Clear, Outcome::Ok));
        }
        let outcome = if eq_ignore_case(first, "help") || first == b"?" {
            self.help(args.get(1..).unwrap_or_default(), out, err)?
        } else {
            self.command(args, out, err)?
        };
        Ok((Flow::Continue, outcome))
    }
}

/// Lines not to keep in the history file: they carry passwords.
pub fn is_sensitive(line: &str) -> bool {
    let Ok(args) = split_args(line.as_bytes()) else {
        return false;
    };
    let word = |i: usize, w: &str| args.get(i).is_some_and(|a| eq_ignore_case(a, w));
    word(0, "auth")
        || (word(0, "hello") && args.iter().any(|a| eq_ignore_case(a, "auth")))
        || (word(0, "acl") && word(1, "setuser"))
        || (word(0, "config")
            && word(1, "set")
            && args.iter().skip(2).step_by(2).any(|a| {
                eq_ignore_case(a, "requirepass")
                    || eq_ignore_case(a, "masterauth")
                    || eq_ignore_case(a, "server.requirepass")
            }))
}

/// The least time between two tries of a repeated command (-r) while the server is gone.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// `simplekv cli CMD ARGS...`: runs it `repeat` times (-1 or less: until interrupted),
/// `interval` apart; exit 0 if the last run got a reply, 1 on an error reply or no
/// connection (no server at the first run ends the repeats; later, tries go at most one a
/// second until it is back).
pub fn one_shot(
    session: &mut Session,
    args: &[Vec<u8>],
    repeat: i64,
    interval: std::time::Duration,
) -> ExitCode {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let is_help = args
        .first()
        .is_some_and(|a| eq_ignore_case(a, "help") || a == b"?");
    let mut outcome = Ok(Outcome::Ok);
    let mut run = 0i64;
    while repeat < 0 || run < repeat {
        if run > 0 && !interval.is_zero() {
            std::thread::sleep(interval);
        }
        run += 1;
        let (mut out, mut err) = (stdout.lock(), stderr.lock());
        outcome = if is_help {
            session.help(args.get(1..).unwrap_or_default(), &mut out, &mut err)
        } else {
            session.command(args, &mut out, &mut err)
        };
        if outcome.is_err() {
            break;
        }
        if matches!(outcome, Ok(Outcome::Failed)) && (repeat < 0 || run < repeat) {
            // No server: nothing to repeat at first, as redis-cli; later (it went away
            // while repeating) try again, but at most once a second, not in a busy loop.
            if run == 1 {
                break;
            }
            std::thread::sleep(RETRY_PAUSE.saturating_sub(interval));
        }
    }
    match outcome {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Commands read from `input`, one per line, until EOF or `quit`. Error replies and failed
/// connections are printed but do not stop the loop (as redis-cli); the result says whether
/// any command failed so (for `-e`). Only failing to read the input or write the output is
/// an `Err`.
pub fn piped(
    session: &mut Session,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<bool> {
    let mut line = Vec::new();
    let mut failed = false;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(failed);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let (flow, outcome) = session.run_line(&line, out, err)?;
        failed |= matches!(outcome, Outcome::ErrorReply | Outcome::Failed);
        if flow == Flow::Quit {
            return Ok(failed);
        }
    }
}

/// The interactive REPL on a terminal: line editing and history (rustyline), Tab completion
/// and argument hints (`complete.rs`); Ctrl-C, Ctrl-D, `quit` and `exit` leave (redis-cli
/// leaves on Ctrl-C too).
pub fn interactive(session: &mut Session, history: Option<PathBuf>) -> ExitCode {
    let config = Config::builder()
        .auto_add_history(false)
        .max_history_size(1000)
        .and_then(|c| c.history_ignore_dups(true))
        .map(|c| c.build())
        .unwrap_or_default();
    let mut editor: Editor<LineHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    editor.set_helper(Some(LineHelper::new(Docs::built_in(), session.color)));
    if let Some(h) = &history {
        // A missing file is the normal first run.
        let _ = editor.load_history(h);
    }
    let stdout = io::stdout();
    let stderr = io::stderr();
    // Connect up front so the first prompt tells whether the server is there.
    if let Err(e) = session.ensure_connected(&mut stderr.lock()) {
        eprintln!("{e}");
    }
    loop {
        let line = match editor.readline(&session.prompt()) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => return ExitCode::SUCCESS,
            Err(ReadlineError::Eof) => return ExitCode::SUCCESS,
            // Bytes that are not UTF-8 (a Latin-1 terminal, pasted binary, half a character
            // left by Backspace): the line editor cannot take them. The line is dropped, not
            // the session; the editor read past them.
            Err(ReadlineError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                eprintln!(
                    "The line typed is not valid UTF-8 and was not sent; write other bytes \
                     as \\xNN inside double quotes (\"caf\\xe9\")."
                );
                continue;
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // Several lines pasted at once arrive as one (bracketed paste): each is a command of
        // its own, as if typed one after another.
        for line in line.split('\n').map(|l| l.trim_end_matches('\r')) {
            if line.trim().is_empty() {
                continue;
            }
            if !is_sensitive(line) {
                let _ = editor.add_history_entry(line);
                if let Some(h) = &history {
                    let _ = editor.save_history(h);
                }
            }
            let flow = session.handle_line(line.as_bytes(), &mut stdout.lock(), &mut stderr.lock());
            match flow {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => return ExitCode::SUCCESS,
                Ok(Flow::Clear) => {
                    let _ = editor.clear_screen();
                }
                Err(_) => return ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::conn::{RespConnector, Timeouts};
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[test]
    fn moved_replies_are_parsed_and_others_are_not_redirects() {
        let e = |s: &str| Reply::Error(s.as_bytes().to_vec());
        assert_eq!(
            moved_to(&e("MOVED 3999 127.0.0.1:7002")),
            Some(("3999", "127.0.0.1", 7002))
        );
        assert_eq!(
            moved_to(&e("MOVED 1 ::1:7002")),
            Some(("1", "::1", 7002)),
            "the port is after the last colon"
        );
        assert_eq!(moved_to(&e("MOVED 1 127.0.0.1")), None);
        assert_eq!(moved_to(&e("MOVED 1 127.0.0.1:notaport")), None);
        assert_eq!(moved_to(&e("ASK 1 127.0.0.1:7002")), None);
        assert_eq!(moved_to(&e("ERR MOVED 1 127.0.0.1:7002")), None);
        assert_eq!(moved_to(&Reply::Simple(b"MOVED 1 h:1".to_vec())), None);
    }

    fn session(port: u16, password: Option<&str>, format: Format) -> Session {
        let connector = RespConnector {
            host: "127.0.0.1".into(),
            port,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                read: Some(Duration::from_secs(5)),
                write: Some(Duration::from_secs(5)),
            },
        };
        Session::new(
            Box::new(connector),
            password.map(|p| p.as_bytes().to_vec()),
            format,
        )
    }

    /// Reads one RESP command from `s`; None at EOF. Requests are multibulks, which have the
    /// same framing as an array reply of bulk strings.
    fn read_command(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<Vec<u8>>> {
        loop {
            if let Ok(Some((reply, used))) = simplekv_net::resp::parse_reply(buf) {
                buf.drain(..used);
                let Reply::Array(items) = reply else {
                    return None;
                };
                return Some(
                    items
                        .into_iter()
                        .map(|i| match i {
                            Reply::Bulk(b) => b,
                            _ => Vec::new(),
                        })
                        .collect(),
                );
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A fake server for one connection on a fixed `port`: sends every command to `seen`,
    /// answers with `answer(args)`, and closes when `answer` gives None (without replying) or
    /// after answering `limit` commands.
    fn serve_one(
        port: u16,
        seen: mpsc::Sender<Vec<Vec<u8>>>,
        limit: usize,
        answer: impl Fn(&[Vec<u8>]) -> Option<Vec<u8>> + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind fixed port");
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            drop(l);
            let mut buf = Vec::new();
            for _ in 0..limit {
                let Some(args) = read_command(&mut s, &mut buf) else {
                    return;
                };
                let _ = seen.send(args.clone());
                match answer(&args) {
                    Some(bytes) => s.write_all(&bytes).expect("write"),
                    None => return,
                }
            }
        })
    }

    fn strs(v: &[Vec<u8>]) -> Vec<String> {
        v.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    fn line(s: &mut Session, l: &str) -> (Flow, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let flow = s.handle_line(l.as_bytes(), &mut out, &mut err).expect("io");
        (
            flow,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    /// MONITOR prints OK, then each line the server streams as redis-cli does (without the
    /// `+`), until the connection ends.
    #[test]
    fn monitor_prints_the_streamed_lines_until_the_connection_ends() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let server = serve_one(port, tx, 1, |_| {
            Some(b"+OK\r\n+1.000001 [0 127.0.0.1:9] \"PING\"\r\n+2.000002 [0 127.0.0.1:9] \"GET\" \"k\"\r\n".to_vec())
        });
        let mut s = session(port, None, Format::Tty);
        let (_, out, err) = line(&mut s, "monitor");
        server.join().expect("server");
        assert_eq!(
            out,
            "OK\n1.000001 [0 127.0.0.1:9] \"PING\"\n2.000002 [0 127.0.0.1:9] \"GET\" \"k\"\n"
        );
        assert_eq!(err, "Error: Server closed the connection\n");
        let sent: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(sent, vec![vec!["monitor".to_string()]]);
    }

    /// redis-cli's repeat count at the prompt (found missing by a black-box comparison).
    #[test]
    fn a_count_before_a_typed_command_repeats_it() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let server = serve_one(port, tx, 3, |_| Some(b":1\r\n".to_vec()));
        let mut s = session(port, None, Format::Tty);
        for bad in ["0 incr a", "-2 incr a"] {
            let (_, out, _) = line(&mut s, bad);
            assert_eq!(out, "Invalid redis-cli repeat command option value.\n");
        }
        let (_, out, _) = line(&mut s, "3 incr a");
        assert_eq!(out, "(integer) 1\n".repeat(3));
        server.join().expect("server");
        let sent: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(sent, vec![vec!["incr".to_string(), "a".to_string()]; 3]);
    }

    /// `connect HOST PORT` at the prompt moves the session, as in redis-cli (found missing by
    /// a black-box comparison): a transaction of the old connection is dropped with it, the
    /// next command goes to the new server, and a bad port or a server that is not there says
    /// so.
    #[test]
    fn connect_at_the_prompt_moves_the_session_to_another_server() {
        let (a, b) = (free_port(), free_port());
        let (tx, rx) = mpsc::channel();
        let first = serve_one(a, tx.clone(), 2, |_| Some(b"+OK\r\n".to_vec()));
        let second = serve_one(b, tx, 1, |_| Some(b"$3\r\nbee\r\n".to_vec()));
        let mut s = session(a, None, Format::Tty);
        line(&mut s, "multi");
        assert_eq!(s.prompt(), format!("127.0.0.1:{a}(TX)> "));
        let (_, _, err) = line(&mut s, "connect 127.0.0.1 0");
        assert!(err.contains("Invalid port"), "{err}");
        let (flow, out, err) = line(&mut s, &format!("connect 127.0.0.1 {b}"));
        assert_eq!((flow, out.as_str(), err.as_str()), (Flow::Continue, "", ""));
        assert_eq!(s.prompt(), format!("127.0.0.1:{b}> "), "not in MULTI there");
        let (_, out, _) = line(&mut s, "get k");
        assert_eq!(out, "\"bee\"\n");
        first.join().expect("first");
        second.join().expect("second");
        let sent: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(
            sent,
            vec![vec!["multi".to_string()], vec!["get".into(), "k".into()]]
        );
        let gone = free_port();
        let (_, _, err) = line(&mut s, &format!("connect 127.0.0.1 {gone}"));
        assert!(err.contains(&gone.to_string()), "{err}");
        assert_eq!(s.prompt(), "not connected> ");
    }

    /// A connection lost inside MULTI (or with WATCH in force) took the transaction with it:
    /// the next command is refused, not sent alone on a new connection where it would run
    /// outside the transaction; after that the session goes on as usual.
    #[test]
    fn a_command_typed_after_a_lost_multi_is_not_sent_alone() {
        for (start, what) in [
            ("multi", "inside MULTI"),
            ("watch k", "while keys were watched"),
        ] {
            let port = free_port();
            let (tx, rx) = mpsc::channel();
            let first = serve_one(port, tx.clone(), 2, |args| {
                Some(match strs(args)[0].to_uppercase().as_str() {
                    "MULTI" | "WATCH" => b"+OK\r\n".to_vec(),
                    _ => b"+QUEUED\r\n".to_vec(),
                })
            });
            let mut s = session(port, None, Format::Tty);
            line(&mut s, start);
            if start == "multi" {
                assert_eq!(s.prompt(), format!("127.0.0.1:{port}(TX)> "));
            }
            line(&mut s, "incr a");
            // The fake server closes after two commands, as a server restart would.
            first.join().expect("first");
            let second = serve_one(port, tx.clone(), 1, |_| Some(b":1\r\n".to_vec()));
            let (_, out, err) = line(&mut s, "incr a");
            assert_eq!(out, "");
            assert!(err.contains(what) && err.contains("not sent"), "{err}");
            assert_eq!(s.prompt(), "not connected> ", "{start}");
            let (_, out, err) = line(&mut s, "incr b");
            assert_eq!(out, "(integer) 1\n", "{start}");
            assert_eq!(
                err,
                format!("Reconnected to 127.0.0.1:{port}.\n"),
                "{start}"
            );
            second.join().expect("second");
            let sent: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
            assert_eq!(sent.len(), 3, "{sent:?}");
            assert_eq!(sent[2], ["incr", "b"]);
        }
    }

    /// The connection failing under a command typed inside MULTI: that command's error, then
    /// the next one refused (it would run outside the transaction on a new connection).
    #[test]
    fn a_connection_failing_under_a_queued_command_refuses_the_next_one() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let first = serve_one(port, tx.clone(), 2, |args| {
            (strs(args)[0].to_uppercase() == "MULTI").then(|| b"+OK\r\n".to_vec())
        });
        let mut s = session(port, None, Format::Tty);
        line(&mut s, "multi");
        let (_, _, err) = line(&mut s, "incr a");
        assert_eq!(err, "Error: Server closed the connection\n");
        first.join().expect("first");
        let (_, out, err) = line(&mut s, "incr b");
        assert_eq!(out, "");
        assert!(
            err.contains("inside MULTI") && err.contains("not sent"),
            "{err}"
        );
        // Nothing was sent for it: no server listens, and no connection was tried.
        let sent: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(sent, [vec!["multi"], vec!["incr", "a"]]);
    }

    /// With -c, a MOVED inside a transaction is shown, not followed: sent again to another
    /// node the command would run alone, outside the transaction.
    #[test]
    fn a_redirect_inside_a_transaction_is_not_followed() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let server = serve_one(port, tx, 3, |args| {
            Some(match strs(args)[0].to_uppercase().as_str() {
                "MULTI" => b"+OK\r\n".to_vec(),
                _ => b"-MOVED 1 127.0.0.1:1\r\n".to_vec(),
            })
        });
        let mut s = session(port, None, Format::Raw);
        s.follow_redirects = true;
        line(&mut s, "multi");
        let (_, out, _) = line(&mut s, "incr a");
        assert_eq!(out, "MOVED 1 127.0.0.1:1\n");
        let (_, out, _) = line(&mut s, "exec");
        assert_eq!(out, "MOVED 1 127.0.0.1:1\n");
        server.join().expect("server");
        assert_eq!(rx.try_iter().count(), 3, "nothing sent elsewhere");
    }

    /// SHUTDOWN succeeds by closing the connection: nothing to report, as redis-cli.
    #[test]
    fn shutdown_closing_the_connection_is_its_success() {
        let port = free_port();
        let (tx, _rx) = mpsc::channel();
        let server = serve_one(port, tx, 1, |_| None);
        let mut s = session(port, None, Format::Tty);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = s
            .command(&[b"SHUTDOWN".to_vec()], &mut out, &mut err)
            .expect("io");
        assert_eq!((outcome, out.len(), err.len()), (Outcome::Ok, 0, 0));
        server.join().expect("server");
    }

    #[test]
    fn reconnects_after_the_server_goes_away_and_re_auths() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        // First server: answers AUTH and one GET, then dies.
        let first = serve_one(port, tx.clone(), usize::MAX, |args| {
            match strs(args)[0].to_uppercase().as_str() {
                "AUTH" => Some(b"+OK\r\n".to_vec()),
                "GET" => Some(b"$1\r\nv\r\n".to_vec()),
                _ => None,
            }
        });
        let mut s = session(port, Some("pw"), Format::Tty);
        assert_eq!(s.prompt(), "not connected> ");
        let (flow, out, err) = line(&mut s, "get k");
        assert_eq!(
            (flow, out.as_str(), err.as_str()),
            (Flow::Continue, "\"v\"\n", "")
        );
        assert_eq!(s.prompt(), format!("127.0.0.1:{port}> "));
        assert_eq!(strs(&rx.recv().expect("auth")), ["AUTH", "pw"]);
        assert_eq!(strs(&rx.recv().expect("get")), ["get", "k"]);
        // The server answers PING by closing: the command fails, the session is disconnected.
        let (_, out, err) = line(&mut s, "ping");
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("", "Error: Server closed the connection\n")
        );
        first.join().expect("first");
        assert_eq!(strs(&rx.recv().expect("ping")), ["ping"]);
        assert_eq!(s.prompt(), "not connected> ");
        // Nothing listens: each command tries to connect and says it could not.
        for _ in 0..2 {
            let (_, out, err) = line(&mut s, "get k");
            assert_eq!(out, "");
            assert_eq!(
                err,
                format!("Could not connect to simplekv at 127.0.0.1:{port}: Connection refused\n")
            );
            assert_eq!(s.prompt(), "not connected> ");
        }
        // A server again: reconnect, AUTH again, announce it, run the command.
        // (It closes right after answering INCR.)
        let second = serve_one(port, tx, 2, |args| {
            match strs(args)[0].to_uppercase().as_str() {
                "AUTH" => Some(b"+OK\r\n".to_vec()),
                "INCR" => Some(b":5\r\n".to_vec()),
                _ => None,
            }
        });
        let (_, out, err) = line(&mut s, "incr n");
        assert_eq!(out, "(integer) 5\n");
        assert_eq!(err, format!("Reconnected to 127.0.0.1:{port}.\n"));
        assert_eq!(strs(&rx.recv().expect("auth")), ["AUTH", "pw"]);
        assert_eq!(strs(&rx.recv().expect("incr")), ["incr", "n"]);
        assert_eq!(s.prompt(), format!("127.0.0.1:{port}> "));
        // The server closing while we are idle is noticed before sending: the command goes to
        // a new connection instead of failing.
        second.join().expect("second");
        assert_eq!(s.prompt(), format!("127.0.0.1:{port}> "));
        let (tx3, rx3) = mpsc::channel();
        let third = serve_one(port, tx3, usize::MAX, |args| {
            match strs(args)[0].to_uppercase().as_str() {
                "AUTH" => Some(b"-WRONGPASS invalid password\r\n".to_vec()),
                "SET" => Some(b"+OK\r\n".to_vec()),
                _ => None,
            }
        });
        let (_, out, err) = line(&mut s, "set a b");
        assert_eq!(out, "OK\n");
        assert_eq!(
            err,
            format!("AUTH failed: WRONGPASS invalid password\nReconnected to 127.0.0.1:{port}.\n")
        );
        assert_eq!(strs(&rx3.recv().expect("auth")), ["AUTH", "pw"]);
        assert_eq!(strs(&rx3.recv().expect("set")), ["set", "a", "b"]);
        drop(s);
        third.join().expect("third");
    }

    #[test]
    fn first_connection_is_silent_and_a_late_one_is_announced() {
        let port = free_port();
        let (tx, _rx) = mpsc::channel();
        let mut s = session(port, None, Format::Raw);
        let (_, _, err) = line(&mut s, "ping");
        assert!(
            err.starts_with("Could not connect to simplekv at 127.0.0.1:"),
            "{err}"
        );
        let server = serve_one(port, tx, usize::MAX, |_| Some(b"+PONG\r\n".to_vec()));
        let (_, out, err) = line(&mut s, "ping");
        assert_eq!(
            (out.as_str(), err.as_str()),
            (
                "PONG\n",
                format!("Connected to 127.0.0.1:{port}.\n").as_str()
            )
        );
        drop(s);
        server.join().expect("server");

        let port = free_port();
        let (tx, _rx) = mpsc::channel();
        let server = serve_one(port, tx, usize::MAX, |_| Some(b"+PONG\r\n".to_vec()));
        let mut s = session(port, None, Format::Raw);
        assert_eq!(line(&mut s, "ping").2, "");
        drop(s);
        server.join().expect("server");
    }

    #[test]
    fn typed_auth_is_remembered_for_reconnects() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let first = serve_one(port, tx.clone(), usize::MAX, |args| {
            match strs(args)[0].to_uppercase().as_str() {
                "AUTH" if strs(args)[1] == "bad" => Some(b"-WRONGPASS no\r\n".to_vec()),
                "AUTH" => Some(b"+OK\r\n".to_vec()),
                _ => None,
            }
        });
        let mut s = session(port, None, Format::Raw);
        assert_eq!(line(&mut s, "auth bad").1, "WRONGPASS no\n");
        assert_eq!(line(&mut s, "auth good").1, "OK\n");
        let _ = line(&mut s, "closeit");
        first.join().expect("first");
        let second = serve_one(port, tx, usize::MAX, |_| Some(b"+OK\r\n".to_vec()));
        let _ = line(&mut s, "ping");
        let got: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(
            got,
            [
                vec!["auth", "bad"],
                vec!["auth", "good"],
                vec!["closeit"],
                vec!["auth", "good"],
                vec!["ping"]
            ]
        );
        drop(s);
        second.join().expect("second");
    }

    #[test]
    fn lines_quit_clear_and_invalid_quoting() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let server = serve_one(port, tx, usize::MAX, |_| Some(b"+OK\r\n".to_vec()));
        let mut s = session(port, None, Format::Tty);
        assert_eq!(
            line(&mut s, "set \"a"),
            (
                Flow::Continue,
                "Invalid argument(s)\n".into(),
                String::new()
            )
        );
        assert_eq!(line(&mut s, "   ").0, Flow::Continue);
        assert_eq!(line(&mut s, "CLEAR").0, Flow::Clear);
        assert_eq!(line(&mut s, "QUIT").0, Flow::Quit);
        assert_eq!(line(&mut s, "exit").0, Flow::Quit);
        // `clear` with arguments is a command for the server.
        assert_eq!(line(&mut s, "clear x").1, "OK\n");
        assert_eq!(strs(&rx.recv().expect("cmd")), ["clear", "x"]);
        // Nothing else reached the server.
        assert!(rx.try_recv().is_err());
        drop(s);
        server.join().expect("server");
    }

    #[test]
    fn piped_reads_lines_until_eof_or_quit() {
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let server = serve_one(port, tx, usize::MAX, |args| {
            Some(format!(":{}\r\n", args.len()).into_bytes())
        });
        let mut s = session(port, None, Format::Raw);
        let mut input: &[u8] = b"a\n\nb \"c d\" e\r\nbad \"quote\nquit\nnever\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        piped(&mut s, &mut input, &mut out, &mut err).expect("piped");
        assert_eq!(String::from_utf8_lossy(&out), "1\n3\nInvalid argument(s)\n");
        assert!(err.is_empty());
        let got: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(got, [vec!["a"], vec!["b", "c d", "e"]]);
        drop(s);
        server.join().expect("server");
    }

    #[test]
    fn command_docs_fetched_once_per_connection() {
        let docs = || {
            let set = Reply::Array(vec![
                Reply::bulk("summary"),
                Reply::bulk("Set it"),
                Reply::bulk("group"),
                Reply::bulk("string"),
            ]);
            Reply::Array(vec![Reply::bulk("set"), set]).to_bytes()
        };
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        // Closes after two commands: a second DOCS would take PING's place.
        let first = serve_one(port, tx.clone(), 2, move |args| {
            Some(if strs(args)[0] == "COMMAND" {
                docs()
            } else {
                b"+PONG\r\n".to_vec()
            })
        });
        let mut s = session(port, None, Format::Raw);
        let (_, out, _) = line(&mut s, "help set");
        assert_eq!(out, "\n  SET\n  summary: Set it\n  group: string\n\n");
        assert_eq!(line(&mut s, "help SET").1, out);
        assert_eq!(line(&mut s, "help nosuch").1, "No help for 'nosuch'.\n");
        assert_eq!(line(&mut s, "ping").1, "PONG\n");
        first.join().expect("first");
        let got: Vec<Vec<String>> = rx.try_iter().map(|a| strs(&a)).collect();
        assert_eq!(got, [vec!["COMMAND", "DOCS"], vec!["ping"]]);
        // A new connection fetches them again; an error reply is shown and not cached.
        let second = serve_one(port, tx, usize::MAX, move |args| {
            Some(if strs(args)[0] == "COMMAND" {
                docs()
            } else {
                b"+OK\r\n".to_vec()
            })
        });
        let (_, out, err) = line(&mut s, "help");
        assert_eq!(err, format!("Reconnected to 127.0.0.1:{port}.\n"));
        assert!(out.contains("@string\n  SET  Set it\n"), "{out}");
        assert_eq!(strs(&rx.recv().expect("docs")), ["COMMAND", "DOCS"]);
        drop(s);
        second.join().expect("second");

        let port = free_port();
        let (tx, rx) = mpsc::channel();
        let third = serve_one(port, tx, usize::MAX, |_| {
            Some(b"-NOAUTH Authentication required.\r\n".to_vec())
        });
        let mut s = session(port, None, Format::Tty);
        // A server that wants AUTH first: help from this build's docs, asked again each time.
        for _ in 0..2 {
            let out = line(&mut s, "help get").1;
            assert!(
                out.contains("GET key") && out.contains("group: string"),
                "{out}"
            );
        }
        assert_eq!(rx.try_iter().count(), 2);
        drop(s);
        third.join().expect("third");
    }

    #[test]
    fn sensitive_lines_stay_out_of_history() {
        for l in [
            "auth pw",
            "AUTH user pw",
            "hello 3 AUTH u p",
            "acl setuser bob on >pw",
            "config set requirepass x",
            "CONFIG SET maxclients 5 masterauth y",
        ] {
            assert!(is_sensitive(l), "{l}");
        }
        for l in [
            "get auth",
            "config set maxclients 5",
            "hello 3",
            "set \"a",
            "",
        ] {
            assert!(!is_sensitive(l), "{l}");
        }
    }
}
