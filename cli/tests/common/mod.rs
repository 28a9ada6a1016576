//! Starts the real `simplekv` binary on a free loopback port for integration tests.
#![allow(dead_code)]

pub mod cluster;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// In a server's extra arguments: a free port, drawn again on each start attempt (read it
/// back from `Server::extra_ports`).
pub const ANY_PORT: &str = "{any-port}";

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    /// The ports `ANY_PORT` stood for in the running server's arguments, in order.
    pub extra_ports: Vec<u16>,
    child: Option<Child>,
    extra: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("addr").port()
}

impl Server {
    /// A server on a fresh data directory.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let mut s = Server {
            port: 0,
            extra_ports: Vec::new(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    /// A server on an existing data directory (kept by the caller).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        let mut s = Server {
            port: 0,
            extra_ports: Vec::new(),
            dir: dir.to_path_buf(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _tmp: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        for attempt in 0..5 {
            let port = free_port();
            self.extra_ports.clear();
            let extra: Vec<String> = self
                .extra
                .iter()
                .map(|a| {
                    if a == ANY_PORT {
                        let p = free_port();
                        self.extra_ports.push(p);
                        p.to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_simplekv"));
            cmd.arg("server")
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(&self.dir)
                .arg("--log-level")
                .arg("warn")
                .arg("--no-pin")
                .args(&extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn simplekv");
            let stderr = child.stderr.take().expect("stderr");
            let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[server] {line}");
                    let _ = lines_tx.send(line);
                }
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut port_taken = false;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    // A free port went to another test in the meantime (tests run in
                    // parallel, and a port is only free until someone binds it): try others.
                    // That may be the RESP port or one of `extra_ports` (gRPC logs the same
                    // words).
                    std::thread::sleep(Duration::from_millis(50));
                    port_taken = lines_rx
                        .try_iter()
                        .any(|l| l.contains("Address already in use"));
                    if port_taken {
                        break;
                    }
                    panic!("simplekv exited during startup with {status} (attempt {attempt})");
                }
                if ping(port) {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if port_taken {
                continue;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("simplekv did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect")
    }

    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Waits for the process to exit by itself (e.g. after SHUTDOWN).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // A server started with a password answers NOAUTH: up all the same.
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

/// Sends raw bytes and reads what comes back until `expect_len` bytes or EOF/timeout.
pub fn roundtrip(s: &mut TcpStream, req: &[u8], expect_len: usize) -> Vec<u8> {
    s.write_all(req).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < expect_len {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

/// Reads until the peer closes the connection (true) or `timeout` passes (false).
pub fn read_to_eof(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left)).expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the server closed (unread input left behind) is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false);
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Writes `req` and reads exactly `expect.len()` bytes, which must equal `expect`.
pub fn expect_reply(s: &mut TcpStream, req: &[u8], expect: &[u8]) {
    let got = roundtrip(s, req, expect.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expect),
        "reply to {:?}",
        String::from_utf8_lossy(req)
    );
}

/// A RESP multibulk request.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The whole error line of a server error reply, e.g. `ERR syntax error`.
pub fn err_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// Runs `cmd`, which must fail; returns the error line.
pub fn query_err(con: &mut redis::Connection, cmd: &redis::Cmd) -> String {
    match cmd.query::<redis::Value>(con) {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => err_text(&e),
    }
}

/// Fields of an INFO reply (`name:value` lines).
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// INFO `section`, parsed.
pub fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    parse_info(&text)
}

/// Runs `simplekv server` on `dir` expecting it to exit by itself (a refused start); returns
/// its exit code (None if it was still running after `timeout` and had to be killed) and
/// everything it wrote to stderr.
pub fn run_to_exit(dir: &Path, extra: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .arg("server")
        .arg("--port")
        .arg(free_port().to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--log-level")
        .arg("warn")
        .arg("--no-pin")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn simplekv");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, reader.join().unwrap_or_default())
}

/// Polls `f` until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The worker that owns `key` on a server with this layout (as the server routes it).
pub fn worker_of(key: &[u8], partitions: u32, workers: u32) -> usize {
    let t = simplekv_net::server::router::Topology {
        partitions,
        workers,
    };
    t.worker_of(t.partition_of(key))
}

impl Server {
    /// The extra arguments as the running server got them (`ANY_PORT` as the same ports).
    fn same_extra(&self) -> Vec<String> {
        let mut ports = self.extra_ports.iter();
        self.extra
            .iter()
            .map(|a| {
                if a == ANY_PORT
                    && let Some(p) = ports.next()
                {
                    p.to_string()
                } else {
                    a.clone()
                }
            })
            .collect()
    }

    /// SIGKILL, then a new server on the same port and data directory: to a client this is
    /// a crash and restart at the same address.
    pub fn restart_same_port(&mut self) {
        self.kill9();
        self.respawn_same_port();
    }

    /// Starts the server again on its previous port and data directory after `kill9` (or
    /// `terminate`). Retries for a while if the port is not free yet.
    pub fn respawn_same_port(&mut self) {
        assert!(self.child.is_none(), "still running");
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = Command::new(env!("CARGO_BIN_EXE_simplekv"))
                .arg("server")
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(&self.dir)
                .arg("--log-level")
                .arg("warn")
                .arg("--no-pin")
                .args(self.same_extra())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn simplekv");
            let stderr = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[server] {line}");
                }
            });
            let up_by = Instant::now() + Duration::from_secs(20);
            while Instant::now() < up_by {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if ping(port) {
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(
                Instant::now() < deadline,
                "simplekv did not restart on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Every partition log file (`*.log`) under the data directory.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in std::fs::read_dir(dir.join("partitions")).unwrap() {
        for f in std::fs::read_dir(part.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                out.push(p);
            }
        }
    }
    out
}

// ---------------------------------------------------------------- pub/sub

/// Reads exactly `want` bytes (or fails the test after `timeout`).
pub fn read_exact_within(s: &mut TcpStream, want: usize, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < want {
        assert!(
            Instant::now() < deadline,
            "got {} of {want} bytes: {:?}",
            out.len(),
            String::from_utf8_lossy(&out[out.len().saturating_sub(200)..])
        );
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf[..(want - out.len()).min(65536)]) {
            Ok(0) => panic!("closed after {} of {want} bytes", out.len()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    out
}

/// A pub/sub `message` as a subscriber reads it.
pub fn message(channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = b"*3\r\n$7\r\nmessage\r\n".to_vec();
    m.extend(bulk(channel));
    m.extend(bulk(payload));
    m
}

/// A RESP bulk string.
pub fn bulk(b: &[u8]) -> Vec<u8> {
    let mut v = format!("${}\r\n", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.extend_from_slice(b"\r\n");
    v
}

/// A (un)subscribe reply: kind, channel (null: none) and the connection's count.
pub fn sub_reply(kind: &str, channel: Option<&[u8]>, count: i64) -> Vec<u8> {
    let mut v = b"*3\r\n".to_vec();
    v.extend(bulk(kind.as_bytes()));
    match channel {
        Some(c) => v.extend(bulk(c)),
        None => v.extend_from_slice(b"$-1\r\n"),
    }
    v.extend(format!(":{count}\r\n").into_bytes());
    v
}

/// The replies of one subscribe command naming new `channels`, the count going up from
/// `first`.
pub fn sub_replies(kind: &str, channels: &[&[u8]], first: i64) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, c) in channels.iter().enumerate() {
        v.extend(sub_reply(kind, Some(c), first + i as i64));
    }
    v
}
