//! `simplekv cli` against a real server: one-shot mode, commands piped on stdin (raw and
//! `--no-raw`), quoting of binary values, errors, help, AUTH, reconnecting after a restart, and
//! the interactive REPL on a pseudo-terminal.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{Server, free_port};

/// No single client run or expected line may take longer than this.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Run {
    code: Option<i32>,
    out: Vec<u8>,
    err: String,
}

impl Run {
    fn out(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    fn lines(&self) -> Vec<String> {
        self.out().lines().map(str::to_string).collect()
    }
}

fn client_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_simplekv"));
    cmd.arg("cli")
        .args(args)
        .env("SIMPLEKV_HISTFILE", "")
        .env_remove("SIMPLEKV_CLI_AUTH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `simplekv cli ARGS` with `input` on stdin (then EOF); killed after [`TIMEOUT`].
fn cli(args: &[&str], input: &[u8]) -> Run {
    let mut child = client_command(args).spawn().expect("spawn cli");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(o)) => Run {
            code: o.status.code(),
            out: o.stdout,
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("wait: {e}"),
        Err(_) => {
            // SAFETY: signalling our own child, which has not been reaped (the waiter thread
            // is still blocked on it).
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            panic!("simplekv cli {args:?} did not finish within {TIMEOUT:?}");
        }
    }
}

fn port(s: &Server) -> String {
    s.port.to_string()
}

/// The original README session.
const README_SESSION: &str =
    "set hello 1\nget hello\nexpire hello 200\nttl hello\ndel hello\nget hello\n";

fn assert_ttl(line: &str, prefix: &str) {
    assert!(
        line == format!("{prefix}200") || line == format!("{prefix}199"),
        "ttl line {line:?}"
    );
}

#[test]
fn readme_session_piped_is_raw() {
    let s = Server::start(&[]);
    let r = cli(&["-p", &port(&s)], README_SESSION.as_bytes());
    assert_eq!(r.code, Some(0), "stderr: {}", r.err);
    assert_eq!(r.err, "");
    let l = r.lines();
    assert_eq!(l.len(), 6, "{l:?}");
    assert_eq!(&l[..3], ["OK", "1", "1"]);
    assert_ttl(&l[3], "");
    // nil is an empty line.
    assert_eq!(&l[4..], ["1", ""]);
}

#[test]
fn readme_session_no_raw_is_formatted() {
    let s = Server::start(&[]);
    let r = cli(&["--no-raw", "-p", &port(&s)], README_SESSION.as_bytes());
    assert_eq!(r.code, Some(0), "stderr: {}", r.err);
    let l = r.lines();
    assert_eq!(l.len(), 6, "{l:?}");
    assert_eq!(&l[..3], ["OK", "\"1\"", "(integer) 1"]);
    assert_ttl(&l[3], "(integer) ");
    assert_eq!(&l[4..], ["(integer) 1", "(nil)"]);
    // The last of --raw / --no-raw wins.
    let r = cli(&["--raw", "--no-raw", "-p", &port(&s)], b"ping\n");
    assert_eq!(r.out(), "PONG\n");
    let r = cli(
        &["--no-raw", "--raw", "-p", &port(&s)],
        b"mset a 1 b 2\nmget a b nosuch\n",
    );
    assert_eq!(r.out(), "OK\n1\n2\n\n");
    // Arrays, numbered, and the empty array.
    let r = cli(
        &["--no-raw", "-p", &port(&s)],
        b"mget a b nosuch\nkeys nomatch*\n",
    );
    assert_eq!(r.out(), "1) \"1\"\n2) \"2\"\n3) (nil)\n(empty array)\n");
}

#[test]
fn one_shot_output_and_exit_codes() {
    let s = Server::start(&[]);
    let p = port(&s);
    let r = cli(&["-p", &p, "set", "k", "v"], b"");
    assert_eq!(
        (r.code, r.out(), r.err.as_str()),
        (Some(0), "OK\n".into(), "")
    );
    let r = cli(&["-p", &p, "get", "k"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "v\n".into()));
    let r = cli(&["-p", &p, "--no-raw", "get", "k"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "\"v\"\n".into()));
    let r = cli(&["-p", &p, "--no-raw", "get", "missing"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "(nil)\n".into()));
    // -h is the host, as in redis-cli.
    let r = cli(&["-h", "127.0.0.1", "-p", &p, "exists", "k"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "1\n".into()));
    // Arguments after the command are the command's, even if they look like options.
    let r = cli(&["-p", &p, "set", "n", "-5"], b"");
    assert_eq!(r.code, Some(0), "{}", r.err);
    let r = cli(&["-p", &p, "--no-raw", "incrby", "n", "-1"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "(integer) -6\n".into()));
    let r = cli(&["-p", &p, "get", "--raw"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "\n".into()));
    // An error reply: printed, exit 1.
    let r = cli(&["-p", &p, "incr", "k"], b"");
    assert_eq!(r.code, Some(1));
    assert_eq!(r.out(), "ERR value is not an integer or out of range\n");
    let r = cli(&["-p", &p, "--no-raw", "nosuchcommand", "x"], b"");
    assert_eq!(r.code, Some(1));
    assert!(
        r.out().starts_with("(error) ERR unknown command"),
        "{}",
        r.out()
    );
    // An unknown or mistyped option is not sent as a command.
    for bad in ["--bogus", "-V", "--pas"] {
        let r = cli(&["-p", &p, bad, "get", "k"], b"");
        assert_eq!(r.code, Some(1), "{bad}");
        assert_eq!(r.out(), "", "{bad}");
        assert!(
            r.err.contains(&format!(
                "Unrecognized option or bad number of args for: '{bad}'"
            )),
            "{bad}: {}",
            r.err
        );
    }
    // INFO, CLIENT LIST/INFO: their text as it is, even formatted, as redis-cli prints them.
    for args in [
        &["--no-raw", "info", "keyspace"][..],
        &["--raw", "info", "keyspace"],
    ] {
        let mut a = vec!["-p", p.as_str()];
        a.extend_from_slice(args);
        let r = cli(&a, b"");
        assert_eq!(r.code, Some(0));
        assert!(
            r.out().starts_with("# Keyspace\r\ndb0:keys="),
            "{:?}",
            r.out()
        );
        assert!(
            r.out().ends_with("\r\n") && !r.out().ends_with("\n\n"),
            "{:?}",
            r.out()
        );
    }
    let r = cli(&["-p", &p, "--no-raw", "client", "info"], b"");
    assert!(
        r.out().starts_with("id=") && r.out().ends_with("resp=2 lib-name= lib-ver=\n"),
        "{:?}",
        r.out()
    );
    // Stdin is not read in one-shot mode.
    let r = cli(&["-p", &p, "ping"], b"set k other\n");
    assert_eq!((r.code, r.out()), (Some(0), "PONG\n".into()));
    assert_eq!(cli(&["-p", &p, "get", "k"], b"").out(), "v\n");
}

#[test]
fn one_shot_nothing_listening() {
    let p = free_port().to_string();
    let r = cli(&["-p", &p, "ping"], b"");
    assert_eq!(r.code, Some(1));
    assert_eq!(r.out(), "");
    assert_eq!(
        r.err,
        format!("Could not connect to simplekv at 127.0.0.1:{p}: Connection refused\n")
    );
    // Repeating with no server: one try, as redis-cli (not a busy loop of them).
    let r = cli(&["-p", &p, "-r", "-1", "ping"], b"");
    assert_eq!(r.code, Some(1));
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    // Help needs no server: this build's own docs.
    let r = cli(&["-p", &p, "help", "get"], b"");
    assert_eq!((r.code, r.err.as_str()), (Some(0), ""));
    assert!(r.out().contains("GET key"), "{}", r.out());
    // Piped mode prints the failure for every command and exits 0, as redis-cli does.
    let r = cli(&["-p", &p], b"ping\nping\n");
    assert_eq!(r.code, Some(0));
    assert_eq!(r.out(), "");
    let refused = format!("Could not connect to simplekv at 127.0.0.1:{p}: Connection refused");
    assert_eq!(r.err.lines().collect::<Vec<_>>(), [&refused, &refused]);
}

#[test]
fn quoting_round_trips_binary_values() {
    let s = Server::start(&[]);
    let p = port(&s);
    let input = concat!(
        r#"set "a b" "x\x00y\r\n""#,
        "\n",
        r#"strlen "a b""#,
        "\n",
        r#"get 'a b'"#,
        "\n",
        r#"set "\xff\xfe" '\x00'"#,
        "\n",
        "strlen \"\\xff\\xfe\"\n",
        "append \"q\\\"uote\" \"\\t\\\\\"\n",
        "get 'q\"uote'\n",
    );
    let r = cli(&["-p", &p], input.as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.err);
    // Raw mode prints the value's bytes as they are.
    assert_eq!(r.out, b"OK\n5\nx\x00y\r\n\nOK\n4\n2\n\t\\\n");
    let r = cli(
        &["--no-raw", "-p", &p],
        b"get \"a b\"\nget \"\\xff\\xfe\"\n",
    );
    assert_eq!(r.out(), "\"x\\x00y\\r\\n\"\n\"\\\\x00\"\n");
    // One-shot raw output is the exact bytes too.
    assert_eq!(cli(&["-p", &p, "get", "a b"], b"").out, b"x\x00y\r\n\n");
    // The stored values are the exact bytes (checked with another client).
    let mut con = s.client();
    let v: Vec<u8> = redis::cmd("GET").arg("a b").query(&mut con).expect("GET");
    assert_eq!(v, b"x\x00y\r\n");
    let v: Vec<u8> = redis::cmd("GET")
        .arg(b"\xff\xfe")
        .query(&mut con)
        .expect("GET");
    assert_eq!(v, b"\\x00");
    // One-shot arguments are not unquoted again: the shell already did it.
    let r = cli(&["-p", &p, "set", "lit", r"a\x00"], b"");
    assert_eq!(r.code, Some(0));
    assert_eq!(cli(&["-p", &p, "strlen", "lit"], b"").out(), "5\n");
}

#[test]
fn errors_are_shown_and_the_session_goes_on() {
    let s = Server::start(&[]);
    let input =
        "nosuchcommand a\nget\nset \"unbalanced\nset 'x\nset \"a\"b c\nset k v\n\n   \nget k\n";
    let r = cli(&["--no-raw", "-p", &port(&s)], input.as_bytes());
    assert_eq!(r.code, Some(0), "{}", r.err);
    assert_eq!(r.err, "");
    let l = r.lines();
    assert_eq!(l.len(), 7, "{l:?}");
    assert!(
        l[0].starts_with("(error) ERR unknown command 'nosuchcommand'"),
        "{}",
        l[0]
    );
    assert_eq!(
        l[1],
        "(error) ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        &l[2..],
        [
            "Invalid argument(s)",
            "Invalid argument(s)",
            "Invalid argument(s)",
            "OK",
            "\"v\""
        ]
    );
    // Raw: the error text alone.
    let r = cli(&["-p", &port(&s)], b"get\nget k\n");
    assert_eq!(
        r.out(),
        "ERR wrong number of arguments for 'get' command\nv\n"
    );
    // CLIENT REPLY OFF / SKIP would leave the client waiting for an answer that never
    // comes: said, not sent, and the session goes on.
    let r = cli(
        &["-p", &port(&s)],
        b"client reply off\nclient reply skip\nclient reply on\nget k\n",
    );
    assert_eq!(r.out(), "OK\nv\n");
    assert_eq!(
        r.err
            .matches("CLIENT REPLY OFF and SKIP are not sent")
            .count(),
        2
    );
}

#[test]
fn quit_and_exit_stop_reading() {
    let s = Server::start(&[]);
    for word in ["quit", "EXIT"] {
        let r = cli(
            &["-p", &port(&s)],
            format!("ping\n{word}\nset late 1\n").as_bytes(),
        );
        assert_eq!((r.code, r.out()), (Some(0), "PONG\n".into()));
    }
    assert_eq!(cli(&["-p", &port(&s), "exists", "late"], b"").out(), "0\n");
}

#[test]
fn help_from_command_docs() {
    let s = Server::start(&[]);
    let p = port(&s);
    let r = cli(&["-p", &p], b"help set\nhelp client kill\nhelp nosuch\n");
    assert_eq!(r.code, Some(0), "{}", r.err);
    let out = r.out();
    assert!(
        out.contains(
            "\n  SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT \
             unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]\n  \
             summary: Set the string value of a key\n  since: 1.0.0\n  group: string\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  CLIENT KILL ip:port|[ID client-id]|[TYPE NORMAL|MASTER|SLAVE|"),
        "{out}"
    );
    assert!(out.contains("No help for 'nosuch'."), "{out}");
    // Not coloured when stdout is not a terminal.
    assert!(!out.contains('\x1b'));
    // `help` alone: every command with its summary, by group.
    let r = cli(&["-p", &p, "help"], b"");
    assert_eq!(r.code, Some(0));
    let out = r.out();
    let string = out.find("\n@string\n").expect("string group");
    let get = out.find("\n  GET ").expect("GET listed");
    let conn = out.find("\n@connection\n").expect("connection group");
    let ping = out.find("\n  PING ").expect("PING listed");
    assert!(string < get && conn < ping && ping < string, "{out}");
    assert!(
        out[get..]
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("Get the value of a key"))
    );
    // `help @group`.
    let r = cli(&["-p", &p, "help", "@string"], b"");
    assert!(
        r.out().contains("  INCRBYFLOAT key increment\n"),
        "{}",
        r.out()
    );
    assert!(!r.out().contains("PING") && !r.out().contains("group:"));
    // One-shot help for an unknown command fails.
    assert_eq!(cli(&["-p", &p, "help", "nosuch"], b"").code, Some(1));
}

#[test]
fn password_is_sent_on_connect() {
    let s = Server::start(&["--requirepass", "s3cret"]);
    let p = port(&s);
    let r = cli(&["-p", &p, "-a", "s3cret", "set", "k", "v"], b"");
    assert_eq!(
        (r.code, r.out(), r.err.as_str()),
        (Some(0), "OK\n".into(), "")
    );
    let r = cli(&["-p", &p, "get", "k"], b"");
    assert_eq!(r.code, Some(1));
    assert!(r.out().starts_with("NOAUTH"), "{}", r.out());
    let r = cli(&["-p", &p, "-a", "wrong", "get", "k"], b"");
    assert_eq!(r.code, Some(1));
    assert!(r.err.starts_with("AUTH failed: WRONGPASS"), "{}", r.err);
    // Also from the environment.
    let mut cmd = client_command(&["-p", &p, "get", "k"]);
    cmd.env("SIMPLEKV_CLI_AUTH", "s3cret").stdin(Stdio::null());
    let o = cmd.output().expect("run");
    assert_eq!((o.status.code(), o.stdout), (Some(0), b"v\n".to_vec()));
    // AUTH typed in a piped session works as any command.
    let r = cli(&["-p", &p], b"auth s3cret\nget k\n");
    assert_eq!(r.out(), "OK\nv\n");
}

/// A client reading commands from a pipe that the test writes to over time.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<Vec<u8>>,
    err: Receiver<Vec<u8>>,
}

fn line_reader(r: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

impl Live {
    fn start(args: &[&str]) -> Live {
        let mut child = client_command(args).spawn().expect("spawn cli");
        let stdin = child.stdin.take();
        let out = line_reader(child.stdout.take().expect("stdout"));
        let err = line_reader(child.stderr.take().expect("stderr"));
        Live {
            child,
            stdin,
            out,
            err,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    fn next(rx: &Receiver<Vec<u8>>, what: &str) -> String {
        match rx.recv_timeout(TIMEOUT) {
            Ok(l) => String::from_utf8_lossy(&l)
                .trim_end_matches('\n')
                .to_string(),
            Err(e) => panic!("no {what} line within {TIMEOUT:?}: {e}"),
        }
    }

    fn out_line(&self) -> String {
        Self::next(&self.out, "stdout")
    }

    fn err_line(&self) -> String {
        Self::next(&self.err, "stderr")
    }

    /// Closes stdin and waits for the exit status.
    fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(self.err.try_recv().is_err(), "unexpected stderr output");
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("cli did not exit after EOF");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reconnects_after_the_server_restarts() {
    let mut s = Server::start(&["--requirepass", "pw"]);
    let p = port(&s);
    let mut c = Live::start(&["-p", &p, "-a", "pw"]);
    c.send("set k1 v1");
    assert_eq!(c.out_line(), "OK");

    // The server dies: the next commands say it cannot be reached, and nothing else.
    s.kill9();
    let refused = format!("Could not connect to simplekv at 127.0.0.1:{p}: Connection refused");
    c.send("get k1");
    assert_eq!(c.err_line(), refused);
    c.send("ping");
    assert_eq!(c.err_line(), refused);

    // Back on the same port: the next command reconnects (AUTH again) and runs.
    s.respawn_same_port();
    c.send("set k2 v2");
    assert_eq!(c.err_line(), format!("Reconnected to 127.0.0.1:{p}."));
    assert_eq!(c.out_line(), "OK");
    c.send("get k2");
    assert_eq!(c.out_line(), "v2");

    // Killed and restarted while the client sits idle: the dead connection is noticed before
    // the command is sent, so the command is not lost.
    s.restart_same_port();
    c.send("incr counter");
    assert_eq!(c.err_line(), format!("Reconnected to 127.0.0.1:{p}."));
    assert_eq!(c.out_line(), "1");
    c.send("incr counter");
    assert_eq!(c.out_line(), "2");
    assert_eq!(c.finish(), Some(0));
}

/// The REPL on a pseudo-terminal: prompts, tty formatting, reconnect messages, history,
/// Ctrl-C and Ctrl-D.
mod pty {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::sync::{Arc, Mutex};

    pub struct Pty {
        child: Child,
        master: std::fs::File,
        seen: Arc<Mutex<Vec<u8>>>,
        /// How much of `seen` earlier expectations consumed.
        pos: usize,
    }

    impl Pty {
        pub fn start(args: &[&str], term: &str, histfile: &std::path::Path) -> Pty {
            let mut master: libc::c_int = -1;
            let mut slave: libc::c_int = -1;
            // SAFETY: openpty writes two new descriptors into the provided ints; the other
            // arguments may be null.
            let rc = unsafe {
                libc::openpty(
                    &mut master,
                    &mut slave,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            assert_eq!(rc, 0, "openpty");
            // SAFETY: both descriptors were just opened by openpty and are owned by nobody
            // else.
            let (master, slave) =
                unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
            let child = Command::new(env!("CARGO_BIN_EXE_simplekv"))
                .arg("cli")
                .args(args)
                .env("TERM", term)
                .env("SIMPLEKV_HISTFILE", histfile)
                .env_remove("SIMPLEKV_CLI_AUTH")
                .stdin(Stdio::from(slave.try_clone().expect("dup")))
                .stdout(Stdio::from(slave.try_clone().expect("dup")))
                .stderr(Stdio::from(slave))
                .spawn()
                .expect("spawn cli");
            let master = std::fs::File::from(master);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let mut reader = master.try_clone().expect("dup master");
            let sink = Arc::clone(&seen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                // Ends with EIO once the child (the last holder of the slave) has exited.
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    sink.lock().expect("lock").extend_from_slice(&buf[..n]);
                }
            });
            Pty {
                child,
                master,
                seen,
                pos: 0,
            }
        }

        /// The client on a terminal (TERM=xterm) against port `p`, at its first prompt;
        /// the directory holds its history file.
        pub fn at_prompt(p: &str) -> (Pty, String, tempfile::TempDir) {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut t = Pty::start(&["-p", p], "xterm", &tmp.path().join("history"));
            let prompt = format!("127.0.0.1:{p}> ");
            t.expect(&prompt);
            (t, prompt, tmp)
        }

        pub fn type_bytes(&mut self, b: &[u8]) {
            self.master.write_all(b).expect("write to pty");
        }

        /// Types `line`, then waits for `want` and for the next `prompt`.
        pub fn answer(&mut self, line: &[u8], want: &str, prompt: &str) {
            self.type_bytes(line);
            self.expect(want);
            self.expect(prompt);
        }

        /// Waits until `want` appears after what earlier calls consumed; returns the text
        /// before it.
        pub fn expect(&mut self, want: &str) -> String {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                {
                    let seen = self.seen.lock().expect("lock");
                    let text = String::from_utf8_lossy(&seen[self.pos..]).into_owned();
                    if let Some(i) = text.find(want) {
                        // Byte offsets agree as long as the output is valid UTF-8 up to here.
                        self.pos += text[..i + want.len()].len();
                        return text[..i].to_string();
                    }
                    if Instant::now() > deadline {
                        panic!("{want:?} not seen within {TIMEOUT:?}; got {text:?}");
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        pub fn wait_exit(mut self) -> Option<i32> {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                if let Ok(Some(st)) = self.child.try_wait() {
                    return st.code();
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("cli did not exit");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Pty {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn repl_on_a_terminal_prompts_and_reconnects() {
    let mut s = Server::start(&[]);
    let p = port(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let hist = tmp.path().join("history");
    // TERM=dumb: rustyline prints the prompt and reads plain lines (no escape sequences).
    let mut t = pty::Pty::start(&["-p", &p], "dumb", &hist);
    let prompt = format!("127.0.0.1:{p}> ");
    t.expect(&prompt);
    t.answer(b"set hello \"x\\x00y\"\n", "OK\r\n", &prompt);
    // On a terminal replies are formatted for humans without --no-raw.
    t.answer(b"get hello\n", "\"x\\x00y\"\r\n", &prompt);
    t.answer(b"auth nopassword\n", "(error) ", &prompt);
    t.answer(b"set \"broken\n", "Invalid argument(s)\r\n", &prompt);
    // Bytes that are not UTF-8 (a Latin-1 terminal): the line is dropped, not the session.
    t.answer(b"set latin caf\xe9\n", "not valid UTF-8", &prompt);
    t.answer(b"echo still\n", "\"still\"\r\n", &prompt);

    s.kill9();
    t.type_bytes(b"get hello\n");
    t.expect(&format!(
        "Could not connect to simplekv at 127.0.0.1:{p}: Connection refused\r\n"
    ));
    t.expect("not connected> ");
    s.respawn_same_port();
    t.type_bytes(b"echo back\n");
    t.expect(&format!("Reconnected to 127.0.0.1:{p}.\r\n"));
    t.expect("\"back\"\r\n");
    t.expect(&prompt);
    t.type_bytes(b"quit\n");
    assert_eq!(t.wait_exit(), Some(0));

    // The history kept the commands typed, but not the one with a password.
    let h = std::fs::read_to_string(&hist).expect("history file");
    assert!(h.contains("get hello") && h.contains("echo back"), "{h}");
    assert!(!h.contains("nopassword"), "{h}");
}

#[test]
fn repl_line_editing_ctrl_c_and_ctrl_d() {
    let s = Server::start(&[]);
    let p = port(&s);
    let tmp = tempfile::tempdir().expect("tempdir");
    let hist = tmp.path().join("history");
    std::fs::write(&hist, "#V2\nset from history\n").expect("seed history");
    // A real terminal: rustyline in raw mode, keys one by one.
    let mut t = pty::Pty::start(&["-p", &p], "xterm", &hist);
    let prompt = format!("127.0.0.1:{p}> ");
    t.expect(&prompt);
    // Up arrow recalls the history loaded from the file; Enter runs it.
    t.type_bytes(b"\x1b[A\r");
    t.expect("OK");
    t.expect(&prompt);
    // Ctrl-A / editing: type "et k", go home, insert "g".
    t.type_bytes(b"et from\x01g\r");
    t.expect("\"history\"");
    t.expect(&prompt);
    // A byte that is not UTF-8 typed in raw mode: the line is dropped, the session goes on.
    t.type_bytes(b"get caf\xe9\r");
    t.expect("not valid UTF-8");
    t.expect(&prompt);
    // Ctrl-C leaves, as in redis-cli, and the line being typed is not sent.
    t.type_bytes(b"set dropped 1\x03");
    assert_eq!(t.wait_exit(), Some(0));
    let n: i64 = redis::cmd("EXISTS")
        .arg("dropped")
        .query(&mut s.client())
        .expect("exists");
    assert_eq!(n, 0);
    // Ctrl-D on an empty line leaves.
    let mut t = pty::Pty::start(&["-p", &p], "xterm", &hist);
    t.expect(&prompt);
    t.type_bytes(b"\x04");
    assert_eq!(t.wait_exit(), Some(0));
}

/// redis-cli's one-shot options: -x (last argument from stdin), -r/-i (repeat), -u (URI),
/// -n (database), -e (piped failures in the exit status), --no-auth-warning, --version.
#[test]
fn redis_cli_one_shot_options() {
    let s = Server::start(&["--requirepass", "pw"]);
    let p = port(&s);
    let value: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = cli(
        &[
            "-p",
            &p,
            "-a",
            "pw",
            "--no-auth-warning",
            "-x",
            "set",
            "big",
        ],
        &value,
    );
    assert_eq!(
        (r.code, r.out(), r.err.as_str()),
        (Some(0), "OK\n".into(), "")
    );
    let r = cli(&["-p", &p, "-a", "pw", "strlen", "big"], b"");
    assert_eq!(r.out(), "200000\n");
    let r = cli(
        &["-p", &p, "-a", "pw", "-r", "3", "-i", "0.01", "incr", "c"],
        b"",
    );
    assert_eq!(
        (r.code, r.lines().join(",")),
        (Some(0), "1,2,3".to_string())
    );
    let uri = format!("redis://:pw@127.0.0.1:{p}/0");
    let r = cli(&["-u", &uri, "get", "c"], b"");
    assert_eq!((r.code, r.out()), (Some(0), "3\n".into()));
    // A database that cannot be selected: nothing is sent (FLUSHDB would empty database 0).
    let r = cli(&["-u", &uri, "-n", "1", "flushdb"], b"");
    assert_eq!(r.code, Some(1));
    assert!(
        r.err
            .contains("SELECT failed: ERR DB index is out of range"),
        "{}",
        r.err
    );
    assert_eq!(cli(&["-u", &uri, "get", "c"], b"").out(), "3\n");
    assert!(cli(&["-u", "rediss://h", "ping"], b"").err.contains("TLS"));
    let mut cmd = client_command(&["-p", &p, "get", "c"]);
    cmd.env("REDISCLI_AUTH", "pw").stdin(Stdio::null());
    assert_eq!(cmd.output().expect("run").stdout, b"3\n");
    // Piped: an error reply fails the run only with -e.
    let piped = b"incr c\nincr big\nget c\n";
    let r = cli(&["-p", &p, "-a", "pw"], piped);
    assert_eq!(r.code, Some(0));
    let r = cli(&["-p", &p, "-a", "pw", "-e"], piped);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.lines()[0], "5");
    let r = cli(&["--version"], b"");
    assert!(r.out().starts_with("simplekv cli "), "{}", r.out());
}

/// Lines pasted at once (bracketed paste) run one by one, as typed; a connection lost
/// inside MULTI does not let the next command run on its own.
#[test]
fn repl_runs_pasted_lines_one_by_one_and_keeps_transactions_whole() {
    let s = Server::start(&[]);
    let p = port(&s);
    let (mut t, prompt, _tmp) = pty::Pty::at_prompt(&p);
    t.type_bytes(b"\x1b[200~set pa 1\rincr pa\rget pa\x1b[201~\r");
    t.expect("OK");
    t.expect("(integer) 2");
    t.expect("\"2\"");
    t.expect(&prompt);
    // MULTI, then the server drops the connection: the next INCR is not sent alone.
    t.type_bytes(b"multi\r");
    t.expect(&format!("127.0.0.1:{p}(TX)> "));
    t.type_bytes(b"incr tx\r");
    t.expect("QUEUED");
    let mut c = s.client();
    let _: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "NORMAL", "SKIPME", "yes"])
        .query(&mut c)
        .expect("kill");
    t.type_bytes(b"incr tx\r");
    t.expect("inside MULTI");
    t.expect("not connected> ");
    t.type_bytes(b"get tx\r");
    t.expect("(nil)");
    t.type_bytes(b"\x04");
    assert_eq!(t.wait_exit(), Some(0));
}

/// Tab completes command names (in the case typed) and subcommands, and the arguments still
/// to type are shown after the cursor, as redis-cli does.
#[test]
fn repl_completes_commands_on_tab_and_hints_their_arguments() {
    let s = Server::start(&[]);
    let p = port(&s);
    let (mut t, prompt, _tmp) = pty::Pty::at_prompt(&p);
    // `setr` + Tab is SETRANGE, the only command starting so; the hint names its arguments.
    t.type_bytes(b"setr\t");
    t.expect("setrange");
    t.expect("key offset value");
    t.type_bytes(b" tk 0 abc\r");
    t.expect("(integer) 3");
    t.expect(&prompt);
    t.type_bytes(b"config g\t");
    t.expect("config get");
    t.expect("parameter");
    t.type_bytes(b" maxclients\r");
    t.expect("\"10000\"");
    t.expect(&prompt);
    t.type_bytes(b"get tk ");
    t.type_bytes(b"\r");
    t.expect("\"abc\"");
    t.type_bytes(b"\x04");
    assert_eq!(t.wait_exit(), Some(0));
}
