//! The session timeout ZooKeeper grants, asked of each server directly.
//!
//! ZooKeeper does not take a client's session timeout as given: each server clamps it into
//! its `minSessionTimeout..=maxSessionTimeout` (by default 2 to 20 times its `tickTime`, so
//! 4 s to 40 s with the usual `tickTime=2000`). A node's safety rests on the timeout it was
//! configured with: it stops leading once ZooKeeper has been silent for two thirds of it, and
//! its replication lease is a quarter of it, both before ZooKeeper may expire its session and
//! let the controller elect another leader. A server that grants less than asked breaks that
//! order: the other nodes could elect a new leader while this one still serves. The client
//! library keeps the granted value to itself, so the node opens a short session of its own on
//! each server (the connect handshake, then a close; all servers at once), reads the grant,
//! and refuses to register when it is below `cluster.session_timeout_ms` (see the control
//! thread's `open_session`). ZooKeeper clamps the timeout again when the client reconnects to
//! another server, so servers that did not answer then are asked again every few seconds,
//! and a cut grant found later gives the session up (`Ctl::on_grants`).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What one server granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The server, as written in the connect string.
    pub server: String,
    pub timeout: Duration,
}

/// What the servers of a connect string answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// The smallest grant, `None` when no server answered.
    pub smallest: Option<Grant>,
    /// Servers that did not answer (down, cut off, or not resolvable now): to be asked
    /// later, since the client may reconnect to one of them, and ZooKeeper then clamps the
    /// session's timeout anew by that server's bounds.
    pub unreached: Vec<String>,
}

/// The servers of `hosts` (`host:port[,host:port...]`, a chroot allowed after them).
pub fn servers(hosts: &str) -> Vec<String> {
    let hosts = hosts.split('/').next().unwrap_or_default();
    hosts
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Asks each of `servers` (at once, each within `wait`) which session timeout it grants
/// when asked for `asked`.
pub fn ask_all(servers: &[String], asked: Duration, wait: Duration) -> Grants {
    let answers: Vec<(String, Option<Duration>)> = std::thread::scope(|scope| {
        let asks: Vec<_> = servers
            .iter()
            .map(|server| (server, scope.spawn(move || ask(server, asked, wait))))
            .collect();
        asks.into_iter()
            .map(|(server, h)| (server.clone(), h.join().ok().flatten()))
            .collect()
    });
    let mut grants = Grants::default();
    for (server, answer) in answers {
        match answer {
            None => grants.unreached.push(server),
            Some(timeout) => {
                if grants.smallest.as_ref().is_none_or(|g| timeout < g.timeout) {
                    grants.smallest = Some(Grant { server, timeout });
                }
            }
        }
    }
    grants
}

/// The smallest session timeout any server of `hosts` grants when asked for `asked`
/// (`ask_all` over `servers(hosts)`); `None` when none answered within `wait`.
pub fn smallest_grant(hosts: &str, asked: Duration, wait: Duration) -> Option<Grant> {
    ask_all(&servers(hosts), asked, wait).smallest
}

/// The grant of one server, or `None` when it could not be asked: each of its addresses is
/// tried in turn, the whole within `wait`.
fn ask(server: &str, asked: Duration, wait: Duration) -> Option<Duration> {
    let deadline = Instant::now() + wait;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = server
        .to_socket_addrs()
        .ok()?
        .find_map(|addr: SocketAddr| TcpStream::connect_timeout(&addr, left()).ok())?;
    s.set_write_timeout(Some(left())).ok()?;
    s.set_nodelay(true).ok()?;
    let asked_ms = i32::try_from(asked.as_millis()).unwrap_or(i32::MAX);
    s.write_all(&connect_request(asked_ms)).ok()?;
    s.set_read_timeout(Some(left())).ok()?;
    let granted = read_connect_response(&mut s)?;
    // Close the session at once rather than leave it to expire (a request without body:
    // xid, op code -11). The answer is not waited for.
    let mut close = Vec::with_capacity(12);
    close.extend_from_slice(&8i32.to_be_bytes());
    close.extend_from_slice(&1i32.to_be_bytes());
    close.extend_from_slice(&(-11i32).to_be_bytes());
    let _ = s.write_all(&close);
    // A server that cannot give a session (read-only, or not serving yet) closes the
    // connection instead; 0 would say the same.
    (granted > 0).then(|| Duration::from_millis(granted as u64))
}

/// ZooKeeper's connect request for a new session: protocol version 0, last zxid seen 0, the
/// timeout, session id 0, a 16-byte zero password, not read-only; length-prefixed.
fn connect_request(timeout_ms: i32) -> Vec<u8> {
    let mut body = Vec::with_capacity(45);
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&timeout_ms.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&16i32.to_be_bytes());
    body.extend_from_slice(&[0u8; 16]);
    body.push(0);
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The timeout field of a connect response (length, protocol version, timeout, ...).
fn read_connect_response(r: &mut impl Read) -> Option<i32> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let len = i32::from_be_bytes(len);
    // Version, timeout, session id and the password's length at least; a real answer is
    // about 40 bytes.
    if !(20..=1024).contains(&len) {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).ok()?;
    Some(i32::from_be_bytes(body[4..8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_request_has_zookeepers_layout() {
        let req = connect_request(6000);
        assert_eq!(&req[..4], &45i32.to_be_bytes());
        assert_eq!(req.len(), 49);
        assert_eq!(&req[16..20], &6000i32.to_be_bytes());
        assert_eq!(&req[28..32], &16i32.to_be_bytes());
    }

    #[test]
    fn the_granted_timeout_is_read_and_nonsense_is_refused() {
        let mut answer = Vec::new();
        answer.extend_from_slice(&37i32.to_be_bytes());
        answer.extend_from_slice(&0i32.to_be_bytes());
        answer.extend_from_slice(&4000i32.to_be_bytes());
        answer.extend_from_slice(&0x1234i64.to_be_bytes());
        answer.extend_from_slice(&16i32.to_be_bytes());
        answer.extend_from_slice(&[7u8; 16]);
        answer.push(0);
        assert_eq!(read_connect_response(&mut &answer[..]), Some(4000));
        assert_eq!(read_connect_response(&mut &answer[..20]), None);
        let huge = i32::MAX.to_be_bytes();
        assert_eq!(read_connect_response(&mut &huge[..]), None);
    }

    #[test]
    fn servers_that_cannot_be_reached_grant_nothing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let hosts = format!("127.0.0.1:{port},no-port-here/simplekv");
        let g = ask_all(
            &servers(&hosts),
            Duration::from_secs(6),
            Duration::from_secs(2),
        );
        assert_eq!(g.smallest, None);
        assert_eq!(
            g.unreached,
            vec![format!("127.0.0.1:{port}"), "no-port-here".to_string()]
        );
    }
}
