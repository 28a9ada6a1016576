//! Transports. The REPL talks to a [`Backend`] (one open connection) that it gets from a
//! [`Connector`] (which knows how to open one, and is asked again after the connection is lost).
//!
//! [`RespConnector`]/[`RespBackend`] speak RESP2 over TCP. Another transport (a gRPC backend
//! behind a `--grpc` flag, say) only needs its own `Connector` + `Backend` pair, chosen in
//! `client::connector`; nothing else in the client depends on the transport.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use simplekv_net::resp::{Reply, ReplyParser, write_array_len, write_bulk};

/// Why a command got no reply.
#[derive(Debug)]
pub enum ClientError {
    /// No connection could be opened. `target` is e.g. `127.0.0.1:7379`.
    Connect { target: String, source: io::Error },
    /// The server closed the connection (or reset it) before replying.
    Closed,
    /// No reply within the read timeout.
    Timeout,
    /// Any other I/O error on an open connection.
    Io(io::Error),
    /// The server sent something that is not RESP2.
    Protocol(String),
    /// The connection was lost (and made again) inside MULTI or with keys watched: the
    /// server dropped that state, so the command was not sent.
    StateLost(&'static str),
    /// `-n`: the server refused the SELECT (its error), so no command is sent.
    Select(String),
}

/// An I/O error's text without Rust's ` (os error N)` suffix, so it reads like `strerror`:
/// `Connection refused`.
pub fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { target, source } => write!(
                f,
                "Could not connect to simplekv at {target}: {}",
                io_text(source)
            ),
            ClientError::Closed => f.write_str("Error: Server closed the connection"),
            ClientError::Timeout => f.write_str("Error: Timed out waiting for the server's reply"),
            ClientError::Io(e) => write!(f, "Error: {}", io_text(e)),
            ClientError::Protocol(e) => write!(f, "Error: Protocol error: {e}"),
            ClientError::Select(e) => write!(f, "SELECT failed: {e}"),
            ClientError::StateLost(what) => write!(
                f,
                "Error: the connection was lost {what}; the server dropped it, so the command \
                 was not sent. Start again from {}",
                if what.contains("MULTI") {
                    "MULTI"
                } else {
                    "WATCH"
                }
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// One open connection to a server.
pub trait Backend {
    /// Sends one command and waits for its reply. An `Err` means the connection is no longer
    /// usable (the caller drops it); error replies from the server are `Ok(Reply::Error(..))`.
    fn call(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError>;

    /// Waits for one more reply without sending anything: the lines a server streams after
    /// MONITOR. Only RESP connections have such replies.
    fn next_reply(&mut self) -> Result<Reply, ClientError> {
        Err(ClientError::Protocol(
            "this connection does not stream replies".into(),
        ))
    }

    /// Where this backend is connected, for messages: `127.0.0.1:7379`.
    fn describe(&self) -> String;

    /// False when the connection is known to be dead (the server closed it while we were
    /// idle), so the caller reconnects before sending instead of losing the command.
    fn is_alive(&mut self) -> bool {
        true
    }
}

/// Opens backends: once at start, and again after a connection is lost.
pub trait Connector {
    fn connect(&mut self) -> Result<Box<dyn Backend>, ClientError>;

    /// What the prompt calls the server: `127.0.0.1:7379`.
    fn target(&self) -> String;

    /// Points later connections at another server (a cluster redirect).
    fn retarget(&mut self, host: &str, port: u16);
}

/// Timeouts of a RESP connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Per address tried.
    pub connect: Duration,
    /// `None`: wait for a reply as long as it takes (a command may legitimately be slow).
    pub read: Option<Duration>,
    /// Writing a request (the server not reading at all).
    pub write: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: None,
            write: Some(Duration::from_secs(30)),
        }
    }
}

/// RESP2 over TCP to `host:port`.
#[derive(Debug, Clone)]
pub struct RespConnector {
    pub host: String,
    pub port: u16,
    pub timeouts: Timeouts,
}

impl Connector for RespConnector {
    fn connect(&mut self) -> Result<Box<dyn Backend>, ClientError> {
        Ok(Box::new(RespBackend::connect(
            &self.host,
            self.port,
            self.timeouts,
        )?))
    }

    fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn retarget(&mut self, host: &str, port: u16) {
        self.host = host.to_string();
        self.port = port;
    }
}

/// One RESP2 connection.
#[derive(Debug)]
pub struct RespBackend {
    stream: TcpStream,
    target: String,
    /// Bytes received and not yet consumed by a reply.
    buf: Vec<u8>,
    parser: ReplyParser,
}

/// Read size; replies larger than this arrive over several reads.
const READ_CHUNK: usize = 64 * 1024;

impl RespBackend {
    pub fn connect(host: &str, port: u16, t: Timeouts) -> Result<RespBackend, ClientError> {
        let target = format!("{host}:{port}");
        let err = |source| ClientError::Connect {
            target: target.clone(),
            source,
        };
        let addrs = (host, port).to_socket_addrs().map_err(err)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for host");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, t.connect) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream.set_read_timeout(t.read).map_err(err)?;
                    stream.set_write_timeout(t.write).map_err(err)?;
                    return Ok(RespBackend {
                        stream,
                        target,
                        buf: Vec::new(),
                        parser: ReplyParser::new(),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(err(last))
    }
}

/// How an I/O error on an open connection is reported.
fn io_error(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof => ClientError::Closed,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

/// The RESP2 multibulk form of `args`.
pub fn encode_command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut req = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    write_array_len(&mut req, args.len());
    for a in args {
        write_bulk(&mut req, a);
    }
    req
}

impl Backend for RespBackend {
    fn call(&mut self, args: &[Vec<u8>]) -> Result<Reply, ClientError> {
        self.stream
            .write_all(&encode_command(args))
            .map_err(io_error)?;
        self.next_reply()
    }

    fn next_reply(&mut self) -> Result<Reply, ClientError> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if !self.buf.is_empty() {
                match self.parser.parse(&self.buf) {
                    Ok(Some((reply, used))) => {
                        self.buf.drain(..used);
                        return Ok(reply);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.buf.clear();
                        return Err(ClientError::Protocol(e.to_string()));
                    }
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }

    /// Drains whatever arrived unasked (e.g. an error before an idle-timeout close) and
    /// reports whether the peer has closed.
    fn is_alive(&mut self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut chunk = [0u8; 4096];
        let alive = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break false,
                // Unsolicited bytes can only confuse the next reply: dropped.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        self.buf.clear();
        self.parser.reset();
        alive && self.stream.set_nonblocking(false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    fn listener() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        (l, port)
    }

    fn quick() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Some(Duration::from_millis(300)),
            write: Some(Duration::from_secs(2)),
        }
    }

    fn args(a: &[&str]) -> Vec<Vec<u8>> {
        a.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn encodes_multibulk() {
        assert_eq!(
            encode_command(&args(&["SET", "a b", ""])),
            b"*3\r\n$3\r\nSET\r\n$3\r\na b\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn io_text_drops_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(io_text(&e), "Connection refused");
        assert_eq!(io_text(&io::Error::other("plain")), "plain");
    }

    #[test]
    fn refused_connection_message() {
        let (l, port) = listener();
        drop(l);
        let e = RespBackend::connect("127.0.0.1", port, quick()).expect_err("nothing listens");
        assert_eq!(
            e.to_string(),
            format!("Could not connect to simplekv at 127.0.0.1:{port}: Connection refused")
        );
    }

    #[test]
    fn reply_split_over_reads_and_extra_bytes_kept() {
        let (l, port) = listener();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut req = [0u8; 64];
            let n = s.read(&mut req).expect("read");
            assert_eq!(&req[..n], b"*1\r\n$4\r\nPING\r\n");
            s.write_all(b"*2\r\n$3\r\nfo").expect("write");
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b"o\r\n:7\r\n").expect("write");
            let _ = s.read(&mut req).expect("read");
            s.write_all(b"+OK\r\n").expect("write");
        });
        let mut b = RespBackend::connect("127.0.0.1", port, quick()).expect("connect");
        assert_eq!(b.describe(), format!("127.0.0.1:{port}"));
        assert_eq!(
            b.call(&args(&["PING"])).expect("reply"),
            Reply::Array(vec![Reply::bulk("foo"), Reply::Integer(7)])
        );
        assert_eq!(b.call(&args(&["X"])).expect("reply"), Reply::ok());
        server.join().expect("server");
    }

    #[test]
    fn closed_timeout_and_garbage() {
        let (l, port) = listener();
        let server = std::thread::spawn(move || {
            // 1: closes without replying.
            let (s, _) = l.accept().expect("accept");
            drop(s);
            // 2: never replies.
            let (s2, _) = l.accept().expect("accept");
            // 3: not RESP.
            let (mut s3, _) = l.accept().expect("accept");
            let mut req = [0u8; 64];
            let _ = s3.read(&mut req);
            s3.write_all(b"HTTP/1.1 400\r\n").expect("write");
            std::thread::sleep(Duration::from_millis(500));
            drop(s2);
        });
        let mut b = RespBackend::connect("127.0.0.1", port, quick()).expect("connect");
        assert!(matches!(b.call(&args(&["PING"])), Err(ClientError::Closed)));
        let mut b = RespBackend::connect("127.0.0.1", port, quick()).expect("connect");
        let t = Instant::now();
        assert!(matches!(
            b.call(&args(&["PING"])),
            Err(ClientError::Timeout)
        ));
        assert!(t.elapsed() < Duration::from_secs(2));
        let mut b = RespBackend::connect("127.0.0.1", port, quick()).expect("connect");
        match b.call(&args(&["PING"])) {
            Err(e @ ClientError::Protocol(_)) => {
                assert!(e.to_string().starts_with("Error: Protocol error"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        server.join().expect("server");
    }

    #[test]
    fn is_alive_sees_idle_close_and_drops_unsolicited_bytes() {
        let (l, port) = listener();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            s.write_all(b"-ERR idle\r\n").expect("write");
            rx.recv().expect("go");
            let mut req = [0u8; 64];
            let _ = s.read(&mut req).expect("read");
            s.write_all(b":1\r\n").expect("write");
            rx.recv().expect("go");
            drop(s);
            rx.recv().expect("go");
        });
        let mut b = RespBackend::connect("127.0.0.1", port, quick()).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        assert!(b.is_alive());
        tx.send(()).expect("send");
        // The stale `-ERR idle` was dropped: this is the reply to our command.
        assert_eq!(b.call(&args(&["X"])).expect("reply"), Reply::Integer(1));
        tx.send(()).expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.is_alive() {
            assert!(Instant::now() < deadline, "close not seen");
            std::thread::sleep(Duration::from_millis(10));
        }
        tx.send(()).expect("send");
        server.join().expect("server");
    }
}
