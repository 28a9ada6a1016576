//! Open-loop latency at a fixed request rate, coordinated-omission aware.
//!
//! `cargo run --release -p simplekv-benches --bin latency -- --port 6379 --rate 30000 [OPTIONS]`
//!
//! N connections each send SET or GET (RESP2, by hand) on a fixed schedule — connection `c`
//! sends request `i` at `start + offset_c + i * N / rate` — whether or not earlier replies have
//! come back, so a slow reply never delays (and hides) the requests behind it. A request's
//! latency is measured from its *intended* send time to the arrival of its reply; a server
//! that stalls for 10 ms is charged for every request that should have been sent during the
//! stall, as a client with a steady arrival rate would see it. Each connection has a writer
//! thread (sleeps until the next send is due, then writes every due request in one `write`)
//! and a reader thread (blocking reads, replies matched to requests in order).
//!
//! Besides the latency from intended send time it reports the *service* time (from the actual
//! `write`) and the sender's own lateness (actual minus intended send time: the client's share
//! of the figures, thread wake-up slack included) so the two can be told apart.
//!
//! Options (defaults in brackets):
//!   --host H          server address, loopback only [127.0.0.1]
//!   --port P          server port [6379]
//!   --rate R          total requests per second, all connections together (required)
//!   --connections N   connections, each with a writer and a reader thread [16]
//!   --duration S      measured seconds, at most 600 [10]
//!   --warmup S        seconds sent at the same rate before measuring [2]
//!   --test set|get    command [set]
//!   --size B          SET value bytes [3]
//!   --keyspace K      keys key:000000000000 .. key:K-1, picked at random [100000]
//!   --load N          first SET keys 0..N (pipelined, one connection), e.g. before GET [0]
//!   --seed S          random seed [1]
//!   --label TEXT      name printed with the results [server]
//!   --json            print one JSON object instead of the table
//!
//! Every loop is bounded: a run sends exactly rate × (warmup + duration) requests and gives up
//! on replies 10 s after the last intended send (unanswered requests are reported as missing).
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const GRACE: Duration = Duration::from_secs(10);
const NOT_SENT: u64 = u64::MAX;

#[derive(Clone, Debug)]
struct Args {
    host: String,
    port: u16,
    rate: f64,
    connections: usize,
    duration: f64,
    warmup: f64,
    test: String,
    size: usize,
    keyspace: u64,
    load: u64,
    seed: u64,
    label: String,
    json: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!("latency: {msg}\n(see the comment at the top of benches/src/bin/latency.rs)");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 6379,
        rate: 0.0,
        connections: 16,
        duration: 10.0,
        warmup: 2.0,
        test: "set".into(),
        size: 3,
        keyspace: 100_000,
        load: 0,
        seed: 1,
        label: "server".into(),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            a.json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            usage("usage");
        }
        let v = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| -> f64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")))
        };
        match flag.as_str() {
            "--host" => a.host = v,
            "--port" => a.port = num(&v) as u16,
            "--rate" => a.rate = num(&v),
            "--connections" => a.connections = num(&v) as usize,
            "--duration" => a.duration = num(&v),
            "--warmup" => a.warmup = num(&v),
            "--test" => a.test = v.to_ascii_lowercase(),
            "--size" => a.size = num(&v) as usize,
            "--keyspace" => a.keyspace = num(&v) as u64,
            "--load" => a.load = num(&v) as u64,
            "--seed" => a.seed = num(&v) as u64,
            "--label" => a.label = v,
            _ => usage(&format!("unknown option {flag}")),
        }
    }
    // Written to also refuse NaN.
    if a.rate.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        usage("--rate must be > 0");
    }
    if a.connections == 0 || a.connections > 1024 {
        usage("--connections must be 1..=1024");
    }
    if !(a.duration > 0.0 && a.duration <= 600.0 && (0.0..=60.0).contains(&a.warmup)) {
        usage("--duration must be in (0, 600] and --warmup in [0, 60]");
    }
    if a.test != "set" && a.test != "get" {
        usage("--test must be set or get");
    }
    if a.keyspace == 0 || a.keyspace > 1_000_000_000_000 {
        usage("--keyspace must be 1..=10^12");
    }
    if a.load > 100_000_000 {
        usage("--load must be at most 10^8");
    }
    a
}

/// The server's address; anything but loopback is refused (this tool is a load generator).
fn resolve(a: &Args) -> SocketAddr {
    let addr = (a.host.as_str(), a.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .unwrap_or_else(|| usage(&format!("cannot resolve {}", a.host)));
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !loopback {
        usage(&format!("{} is not a loopback address", addr.ip()));
    }
    addr
}

fn key(i: u64) -> [u8; 16] {
    simplekv_benches::key(i)
}

/// Appends one RESP2 request for key `k` to `out`.
fn encode(out: &mut Vec<u8>, test: &str, k: u64, value: &[u8]) {
    let key = key(k);
    if test == "set" {
        out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$16\r\n");
        out.extend_from_slice(&key);
        out.extend_from_slice(format!("\r\n${}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$16\r\n");
        out.extend_from_slice(&key);
        out.extend_from_slice(b"\r\n");
    }
}

/// Length of the complete RESP2 reply at the start of `buf` (simple, error, integer, bulk or
/// a flat array of those), `None` if incomplete; the flag tells whether it was an error.
fn reply_len(buf: &[u8]) -> Option<(usize, bool)> {
    let line_end = |from: usize| -> Option<usize> {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
    };
    let first = *buf.first()?;
    let end = line_end(0)?;
    match first {
        b'+' | b':' => Some((end, false)),
        b'-' => Some((end, true)),
        b'$' => {
            let n: i64 = std::str::from_utf8(&buf[1..end - 2]).ok()?.parse().ok()?;
            if n < 0 {
                return Some((end, false));
            }
            let total = end + n as usize + 2;
            (buf.len() >= total).then_some((total, false))
        }
        b'*' => {
            let n: i64 = std::str::from_utf8(&buf[1..end - 2]).ok()?.parse().ok()?;
            let mut pos = end;
            for _ in 0..n.max(0) {
                let (len, _) = reply_len(&buf[pos..])?;
                pos += len;
            }
            Some((pos, false))
        }
        _ => Some((end, true)),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| usage(&format!("cannot connect to {addr}: {e}")));
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// Pipelined SET of keys `0..n`, 1000 per write; bounded by `n` and a 10-minute deadline.
fn load(addr: SocketAddr, n: u64, size: usize) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let value = vec![b'x'; size];
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut out = Vec::new();
    let mut inbuf = vec![0u8; 1 << 16];
    let mut pending = Vec::new();
    let mut i = 0;
    while i < n {
        if Instant::now() > deadline {
            usage("--load did not finish within 10 minutes");
        }
        let batch = (n - i).min(1000);
        out.clear();
        for k in i..i + batch {
            encode(&mut out, "set", k, &value);
        }
        s.write_all(&out).expect("write");
        let mut got = 0;
        while got < batch {
            let r = s.read(&mut inbuf).expect("read");
            if r == 0 {
                usage("server closed the connection during --load");
            }
            pending.extend_from_slice(&inbuf[..r]);
            let mut pos = 0;
            while let Some((len, err)) = reply_len(&pending[pos..]) {
                if err {
                    usage(&format!(
                        "server error during --load: {}",
                        String::from_utf8_lossy(&pending[pos..pos + len]).trim_end()
                    ));
                }
                pos += len;
                got += 1;
            }
            pending.drain(..pos);
        }
        i += batch;
    }
}

struct ConnResult {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    lateness: Histogram<u64>,
    sent: u64,
    received: u64,
    errors: u64,
}

fn hist() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 1000 s, 3 significant digits.
    Histogram::new_with_bounds(1, 1_000_000_000_000, 3).expect("histogram bounds")
}

/// One connection: a writer on the schedule and a reader that matches replies in order.
fn run_conn(
    a: &Args,
    addr: SocketAddr,
    c: usize,
    start: Instant,
    total: u64,
    interval_ns: f64,
) -> ConnResult {
    let stream = connect(addr);
    let offset_ns = interval_ns * c as f64 / a.connections as f64;
    let intended = move |i: u64| (offset_ns + interval_ns * i as f64) as u64;
    let warmup_ns = (a.warmup * 1e9) as u64;
    let last_ns = intended(total.saturating_sub(1));
    let deadline = start + Duration::from_nanos(last_ns) + GRACE;
    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(NOT_SENT)).collect());

    let mut w = stream.try_clone().expect("clone socket");
    w.set_write_timeout(Some(Duration::from_secs(1))).ok();
    let sent_w = sent_at.clone();
    let test = a.test.clone();
    let (size, keyspace, seed) = (a.size, a.keyspace, a.seed);
    let writer = std::thread::spawn(move || {
        precise_sleep();
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003).wrapping_add(c as u64));
        let value = vec![b'v'; size];
        let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut sent = 0u64;
        while sent < total {
            let now = Instant::now();
            if now > deadline {
                break;
            }
            let el = now.duration_since(start).as_nanos() as f64;
            // Every request whose intended time has come, in one write.
            let due = if el < offset_ns {
                0
            } else {
                (((el - offset_ns) / interval_ns) as u64 + 1).min(total)
            };
            if due > sent {
                out.clear();
                for _ in sent..due {
                    encode(&mut out, &test, rng.u64(..keyspace), &value);
                }
                let t = Instant::now().duration_since(start).as_nanos() as u64;
                for i in sent..due {
                    sent_w[i as usize].store(t, Ordering::Release);
                }
                if let Err(e) = write_all_until(&mut w, &out, deadline) {
                    eprintln!("latency: connection {c}: write: {e}");
                    break;
                }
                sent = due;
            }
            if sent < total {
                let next = start + Duration::from_nanos(intended(sent));
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
        }
        sent
    });

    let mut r = stream;
    r.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut res = ConnResult {
        latency: hist(),
        service: hist(),
        lateness: hist(),
        sent: 0,
        received: 0,
        errors: 0,
    };
    let mut buf = vec![0u8; 1 << 16];
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut next = 0u64;
    while next < total && Instant::now() < deadline {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) => {
                eprintln!("latency: connection {c}: read: {e}");
                break;
            }
        };
        let now_ns = Instant::now().duration_since(start).as_nanos() as u64;
        pending.extend_from_slice(&buf[..n]);
        let mut pos = 0;
        while next < total {
            let Some((len, err)) = reply_len(&pending[pos..]) else {
                break;
            };
            pos += len;
            let i = next;
            next += 1;
            res.errors += err as u64;
            let want = intended(i);
            if want < warmup_ns {
                continue;
            }
            let sent = sent_at[i as usize].load(Ordering::Acquire);
            let sent = if sent == NOT_SENT { want } else { sent };
            res.latency
                .saturating_record(now_ns.saturating_sub(want).max(1));
            res.service
                .saturating_record(now_ns.saturating_sub(sent).max(1));
            res.lateness
                .saturating_record(sent.saturating_sub(want).max(1));
        }
        pending.drain(..pos);
    }
    res.received = next;
    res.sent = writer.join().expect("writer thread");
    res
}

/// Asks for 1 µs timer slack on this thread (Linux `prctl(PR_SET_TIMERSLACK)`; the default
/// 50 µs would show up as sender lateness). Best effort: elsewhere it does nothing.
fn precise_sleep() {
    #[cfg(target_os = "linux")]
    {
        unsafe extern "C" {
            fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
        }
        const PR_SET_TIMERSLACK: i32 = 29;
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches no memory of ours.
        let _ = unsafe { prctl(PR_SET_TIMERSLACK, 1_000, 0, 0, 0) };
    }
}

fn write_all_until(w: &mut TcpStream, mut buf: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(std::io::Error::other("connection closed")),
            Ok(n) => buf = &buf[n..],
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if Instant::now() > deadline {
                    return Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn main() {
    let a = parse_args();
    let addr = resolve(&a);
    if a.load > 0 {
        let t = Instant::now();
        load(addr, a.load, a.size);
        eprintln!(
            "latency: loaded {} keys in {:.1} s",
            a.load,
            t.elapsed().as_secs_f64()
        );
    }
    let per_conn_rate = a.rate / a.connections as f64;
    let interval_ns = 1e9 / per_conn_rate;
    let per_conn = ((a.warmup + a.duration) * per_conn_rate).round().max(1.0) as u64;
    // Start a little in the future so every connection is open before its first send.
    let start = Instant::now() + Duration::from_millis(100 + 2 * a.connections as u64);
    let threads: Vec<_> = (0..a.connections)
        .map(|c| {
            let a = a.clone();
            std::thread::spawn(move || run_conn(&a, addr, c, start, per_conn, interval_ns))
        })
        .collect();
    let mut latency = hist();
    let mut service = hist();
    let mut lateness = hist();
    let (mut sent, mut received, mut errors) = (0u64, 0u64, 0u64);
    for t in threads {
        let r = t.join().expect("connection thread");
        latency.add(&r.latency).expect("merge histogram");
        service.add(&r.service).expect("merge histogram");
        lateness.add(&r.lateness).expect("merge histogram");
        sent += r.sent;
        received += r.received;
        errors += r.errors;
    }
    let total = per_conn * a.connections as u64;
    let missing = total - received;
    let achieved = latency.len() as f64 / a.duration;
    if a.json {
        println!(
            "{{\"label\":\"{}\",\"test\":\"{}\",\"size\":{},\"rate\":{:.0},\"achieved\":{:.0},\"connections\":{},\"duration\":{},\"measured\":{},\"sent\":{},\"missing\":{},\"errors\":{},\
             \"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\
             \"service_p50_us\":{:.1},\"service_p99_us\":{:.1},\"service_p999_us\":{:.1},\"service_max_us\":{:.1},\
             \"late_p50_us\":{:.1},\"late_p99_us\":{:.1},\"late_max_us\":{:.1}}}",
            a.label.replace('"', "'"),
            a.test,
            a.size,
            a.rate,
            achieved,
            a.connections,
            a.duration,
            latency.len(),
            sent,
            missing,
            errors,
            us(&latency, 0.50),
            us(&latency, 0.90),
            us(&latency, 0.99),
            us(&latency, 0.999),
            latency.max() as f64 / 1000.0,
            us(&service, 0.50),
            us(&service, 0.99),
            us(&service, 0.999),
            service.max() as f64 / 1000.0,
            us(&lateness, 0.50),
            us(&lateness, 0.99),
            lateness.max() as f64 / 1000.0,
        );
    } else {
        println!(
            "{}: {} -d {} at {:.0}/s over {} connections, {:.0} s (+{:.0} s warm-up): \
             {} measured ({:.0}/s), {} sent, {} missing, {} errors",
            a.label,
            a.test.to_uppercase(),
            a.size,
            a.rate,
            a.connections,
            a.duration,
            a.warmup,
            latency.len(),
            achieved,
            sent,
            missing,
            errors
        );
        println!("                   p50      p90      p99    p99.9      max   (µs)");
        for (name, h) in [
            ("latency (intended)", &latency),
            ("service (actual)", &service),
            ("sender lateness", &lateness),
        ] {
            println!(
                "{name:<18} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                us(h, 0.50),
                us(h, 0.90),
                us(h, 0.99),
                us(h, 0.999),
                h.max() as f64 / 1000.0
            );
        }
    }
    if missing > 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::reply_len;

    #[test]
    fn replies_are_framed() {
        assert_eq!(reply_len(b"+OK\r\n"), Some((5, false)));
        assert_eq!(reply_len(b"+OK\r"), None);
        assert_eq!(reply_len(b"-ERR x\r\n+OK\r\n"), Some((8, true)));
        assert_eq!(reply_len(b"$-1\r\n"), Some((5, false)));
        assert_eq!(reply_len(b"$3\r\nabc\r\n"), Some((9, false)));
        assert_eq!(reply_len(b"$3\r\nab"), None);
        assert_eq!(reply_len(b":12\r\n"), Some((5, false)));
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n$-1\r\n"), Some((16, false)));
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n"), None);
    }
}
