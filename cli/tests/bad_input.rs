//! Hostile and broken input: random bytes, absurd declared lengths, frames cut short, inline
//! quoting, values over the limits, too many clients, byte-at-a-time writes. The server must
//! answer as Redis does (a protocol error closes the connection), never crash, never lose or
//! corrupt what was stored before, and keep serving everyone else.
mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{
    Server, expect_reply, info, query_err, read_to_eof, resp, roundtrip, wait_until, worker_of,
};
use redis::cmd;

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--workers", "4"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Writes `req`, then expects exactly `reply` followed by the server closing the connection.
fn expect_error_and_close(s: &Server, req: &[u8], reply: &[u8]) {
    let mut c = s.raw();
    c.write_all(req).unwrap();
    let (got, closed) = read_to_eof(&mut c, Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply),
        "reply to {:?}",
        String::from_utf8_lossy(&req[..req.len().min(80)])
    );
    assert!(
        closed,
        "connection left open after {:?}",
        String::from_utf8_lossy(&req[..req.len().min(80)])
    );
}

/// The server is up, answers a fresh connection, and `keys` still hold `key` as their value.
fn assert_healthy(s: &mut Server, keys: &[String]) {
    assert!(s.is_running(), "server process died");
    let mut c = s.client();
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    if !keys.is_empty() {
        let got: Vec<Option<String>> = cmd("MGET").arg(keys).query(&mut c).unwrap();
        for (k, v) in keys.iter().zip(got) {
            assert_eq!(v.as_deref(), Some(k.as_str()), "key {k}");
        }
    }
}

fn seed(s: &Server, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("intact:{i}")).collect();
    let mut c = s.client();
    let mut p = redis::pipe();
    for k in &keys {
        p.cmd("SET").arg(k).arg(k).ignore();
    }
    let () = p.query(&mut c).unwrap();
    keys
}

/// Waits until the server counts exactly `n` connected clients (closes are asynchronous).
fn wait_clients(s: &Server, n: u64) {
    let mut c = s.client();
    let ok = wait_until(Duration::from_secs(5), || {
        info(&mut c, "clients")["connected_clients"] == (n + 1).to_string()
    });
    assert!(
        ok,
        "connected_clients is {}, want {} (plus the asking one)",
        info(&mut c, "clients")["connected_clients"],
        n
    );
}

#[test]
fn random_bytes_never_crash_the_server_or_touch_stored_data() {
    let mut s = server(&[]);
    let keys = seed(&s, 200);
    let mut rng = fastrand::Rng::with_seed(0x5eed_cafe);
    // Pure noise, protocol-looking noise, and valid frames with random corruption.
    let alphabet = b"*$\r\n0123456789-+ \"'\\x\0aZ";
    for round in 0..300 {
        let len = rng.usize(1..2000);
        let mut data: Vec<u8> = match round % 3 {
            0 => (0..len).map(|_| rng.u8(..)).collect(),
            1 => (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect(),
            _ => {
                let mut d = resp(&[b"GET", b"intact:1"]);
                d.extend(resp(&[b"ECHO", &vec![b'x'; rng.usize(0..300)]]));
                for _ in 0..rng.usize(1..6) {
                    let i = rng.usize(..d.len());
                    d[i] = rng.u8(..);
                }
                d
            }
        };
        // Never let noise spell a real command that changes data: the bytes are random, the
        // chance is nil, but keep the test deterministic about it.
        for w in [
            &b"FLUSH"[..],
            b"flush",
            b"SHUTDOWN",
            b"shutdown",
            b"DEL",
            b"del",
        ] {
            while let Some(i) = data.windows(w.len()).position(|x| x == w) {
                data[i] = b'#';
            }
        }
        let mut c = s.raw();
        c.write_all(&data).unwrap();
        // Half-close: the server answers what it can, then closes its side too.
        let _ = c.shutdown(Shutdown::Write);
        let (_, closed) = read_to_eof(&mut c, Duration::from_secs(5));
        assert!(closed, "round {round}: connection not closed after EOF");
        if round % 50 == 0 {
            assert_healthy(&mut s, &keys[..10]);
        }
    }
    assert_healthy(&mut s, &keys);
    wait_clients(&s, 0);
}

#[test]
fn huge_declared_bulk_lengths_are_refused_then_the_connection_closes() {
    let mut s = server(&[]);
    let keys = seed(&s, 20);
    let invalid = b"-ERR Protocol error: invalid bulk length\r\n";
    expect_error_and_close(&s, b"*1\r\n$999999999999\r\n", invalid);
    expect_error_and_close(&s, b"*1\r\n$2147483648\r\n", invalid);
    // proto-max-bulk-len is 512mb by default: one byte over is refused, at it is waited for.
    expect_error_and_close(&s, b"*1\r\n$536870913\r\n", invalid);
    expect_error_and_close(
        &s,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$99999999999999999999\r\n",
        invalid,
    );
    let mut c = s.raw();
    c.write_all(b"*1\r\n$536870912\r\nabc").unwrap();
    let (got, closed) = read_to_eof(&mut c, Duration::from_millis(300));
    assert!(got.is_empty() && !closed, "{got:?} {closed}");
    drop(c);
    // Negative lengths: a bulk is an error, a multibulk an empty command (as Redis).
    expect_error_and_close(&s, b"*1\r\n$-1\r\n", invalid);
    expect_error_and_close(&s, b"*2\r\n$3\r\nGET\r\n$-5\r\n", invalid);
    let mut c = s.raw();
    expect_reply(&mut c, b"*-1\r\n*-10\r\n*0\r\nPING\r\n", b"+PONG\r\n");
    expect_error_and_close(
        &s,
        b"*-\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    );
    expect_error_and_close(
        &s,
        b"*1\r\nGET\r\n",
        b"-ERR Protocol error: expected '$', got 'G'\r\n",
    );
    // What came before the bad frame in the same packet is answered first.
    expect_error_and_close(
        &s,
        b"PING\r\n*1\r\n$-3\r\nPING\r\n",
        b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n",
    );
    assert_healthy(&mut s, &keys);
}

#[test]
fn multibulk_counts_over_the_limit_are_refused() {
    let mut s = server(&[]);
    let keys = seed(&s, 20);
    let invalid = b"-ERR Protocol error: invalid multibulk length\r\n";
    expect_error_and_close(&s, b"*1048577\r\n", invalid);
    expect_error_and_close(&s, b"*3000000000\r\n", invalid);
    expect_error_and_close(&s, b"*99999999999999999999999\r\n", invalid);
    // Exactly at the limit is accepted (and waits for its elements).
    let mut c = s.raw();
    c.write_all(b"*1048576\r\n$4\r\nPING\r\n").unwrap();
    let (got, closed) = read_to_eof(&mut c, Duration::from_millis(300));
    assert!(got.is_empty() && !closed, "{got:?} {closed}");
    assert_healthy(&mut s, &keys);
}

#[test]
fn million_element_headers_without_data_cost_nothing() {
    let mut s = server(&[]);
    let keys = seed(&s, 20);
    let rss_before: u64 = info(&mut s.client(), "memory")["used_memory_rss"]
        .parse()
        .unwrap();
    // Many clients each declare a million arguments (and a huge first bulk), send nothing
    // more, and go away. A server that reserved room for what was declared would need
    // gigabytes.
    for _ in 0..5 {
        let conns: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut c = s.raw();
                c.write_all(b"*1000000\r\n$536870912\r\nab").unwrap();
                c
            })
            .collect();
        // Every one is still waiting for data, none got an answer.
        std::thread::sleep(Duration::from_millis(50));
        drop(conns);
    }
    wait_clients(&s, 0);
    let rss_after: u64 = info(&mut s.client(), "memory")["used_memory_rss"]
        .parse()
        .unwrap();
    assert!(
        rss_after < rss_before + (64 << 20),
        "RSS grew from {rss_before} to {rss_after}"
    );
    assert_healthy(&mut s, &keys);
}

#[test]
fn frames_cut_short_then_disconnect_leave_no_trace() {
    let mut s = server(&[]);
    let keys = seed(&s, 20);
    let halves: [&[u8]; 8] = [
        b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$5\r\nval",
        b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$5\r\nvalue\r",
        b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n",
        b"*3\r\n$3\r\nSET\r\n$4",
        b"*3\r\n$3\r\nSE",
        b"*3\r",
        b"SET half value",
        b"SET half \"value",
    ];
    for half in halves {
        // Abrupt close, half-close, and close after a complete command before the half.
        for mode in 0..3 {
            let mut c = s.raw();
            if mode == 2 {
                c.write_all(b"PING\r\n").unwrap();
            }
            c.write_all(half).unwrap();
            match mode {
                0 => drop(c),
                _ => {
                    c.shutdown(Shutdown::Write).unwrap();
                    let (got, closed) = read_to_eof(&mut c, Duration::from_secs(5));
                    assert!(closed, "{:?}", String::from_utf8_lossy(half));
                    let want: &[u8] = if mode == 2 { b"+PONG\r\n" } else { b"" };
                    assert_eq!(got, want, "{:?}", String::from_utf8_lossy(half));
                }
            }
        }
    }
    let mut c = s.client();
    let v: Option<String> = cmd("GET").arg("half").query(&mut c).unwrap();
    assert_eq!(v, None, "an incomplete command ran");
    drop(c);
    wait_clients(&s, 0);
    assert_healthy(&mut s, &keys);
}

#[test]
fn a_client_that_half_closes_still_gets_every_reply() {
    let s = server(&[]);
    let keys: Vec<String> = (0..200).map(|i| format!("hc:{i}")).collect();
    let mut req = Vec::new();
    for k in &keys {
        req.extend(resp(&[b"SET", k.as_bytes(), k.as_bytes()]));
    }
    let mut want = b"+OK\r\n".repeat(keys.len());
    for k in &keys {
        req.extend(resp(&[b"GET", k.as_bytes()]));
        want.extend(format!("${}\r\n{k}\r\n", k.len()).as_bytes());
    }
    req.extend_from_slice(b"PING\r\n");
    want.extend_from_slice(b"+PONG\r\n");
    let mut c = s.raw();
    c.write_all(&req).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (got, closed) = read_to_eof(&mut c, Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert!(closed, "the server closes once it has answered");
}

#[test]
fn inline_commands_with_quotes() {
    let mut s = server(&[]);
    let keys = seed(&s, 10);
    let mut c = s.raw();
    expect_reply(&mut c, b"SET \"a b\" 'c d'\r\n", b"+OK\r\n");
    expect_reply(&mut c, b"GET \"a b\"\r\n", b"$3\r\nc d\r\n");
    expect_reply(&mut c, b"SET esc \"\\x41\\n\\t\\\"q\\\"\"\n", b"+OK\r\n");
    expect_reply(&mut c, b"GET esc\r\n", b"$6\r\nA\n\t\"q\"\r\n");
    expect_reply(&mut c, b"SET s 'it\\'s'\r\n", b"+OK\r\n");
    expect_reply(&mut c, b"GET s\r\n", b"$4\r\nit's\r\n");
    expect_reply(
        &mut c,
        b"   \r\n\r\nEXISTS   \"a b\"  s   esc\r\n",
        b":3\r\n",
    );
    expect_reply(
        &mut c,
        b"SET \"\" empty\r\nGET ''\r\n",
        b"+OK\r\n$5\r\nempty\r\n",
    );
    let mut rc = s.client();
    let v: String = cmd("GET").arg("a b").query(&mut rc).unwrap();
    assert_eq!(v, "c d");
    // Unbalanced quotes: Redis's protocol error, then close.
    let unbalanced = b"-ERR Protocol error: unbalanced quotes in request\r\n";
    expect_error_and_close(&s, b"SET \"a b 'c d'\r\n", unbalanced);
    expect_error_and_close(&s, b"SET 'a b\r\n", unbalanced);
    expect_error_and_close(&s, b"SET \"a\"b c\r\n", unbalanced);
    expect_error_and_close(
        &s,
        b"PING\r\nGET \"x\r\n",
        b"+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n",
    );
    // An inline line over 64 KiB without a newline.
    expect_error_and_close(
        &s,
        &vec![b'a'; 70 * 1024],
        b"-ERR Protocol error: too big inline request\r\n",
    );
    assert_healthy(&mut s, &keys);
}

#[test]
fn values_over_max_value_len_are_refused_and_nothing_is_stored() {
    let mut s = server(&[
        "--set",
        "limits.max_value_len=1kb",
        "--set",
        "limits.max_key_len=64",
    ]);
    let keys = seed(&s, 10);
    let mut c = s.client();
    let over = "v".repeat(1025);
    let at = "v".repeat(1024);
    let too_big = "ERR value is 1025 bytes, over the limit of 1024 (limits.max_value_len)";
    assert_eq!(query_err(&mut c, cmd("SET").arg("big").arg(&over)), too_big);
    assert_eq!(
        query_err(&mut c, cmd("SETEX").arg("big").arg(100).arg(&over)),
        too_big
    );
    assert_eq!(
        query_err(&mut c, cmd("SETNX").arg("big").arg(&over)),
        too_big
    );
    assert_eq!(
        query_err(&mut c, cmd("GETSET").arg("big").arg(&over)),
        too_big
    );
    assert_eq!(
        query_err(&mut c, cmd("SET").arg("big").arg(&over).arg("GET")),
        too_big
    );
    let exists: i64 = cmd("EXISTS").arg("big").query(&mut c).unwrap();
    assert_eq!(exists, 0);
    // At the limit it fits; growing past it is refused and the old value stays.
    let () = cmd("SET").arg("edge").arg(&at).query(&mut c).unwrap();
    assert_eq!(
        query_err(&mut c, cmd("APPEND").arg("edge").arg("x")),
        too_big
    );
    assert_eq!(
        query_err(&mut c, cmd("SETRANGE").arg("edge").arg(1024).arg("x")),
        too_big
    );
    assert_eq!(
        query_err(&mut c, cmd("SETRANGE").arg("new").arg(1024).arg("x")),
        too_big
    );
    let v: String = cmd("GET").arg("edge").query(&mut c).unwrap();
    assert_eq!(v, at);
    let exists: i64 = cmd("EXISTS").arg("new").query(&mut c).unwrap();
    assert_eq!(exists, 0);
    // MSET is all or nothing, wherever its keys live.
    let spread: Vec<String> = (0..40).map(|i| format!("ms:{i}")).collect();
    let workers: std::collections::HashSet<usize> = spread
        .iter()
        .map(|k| worker_of(k.as_bytes(), 16, 4))
        .collect();
    assert!(workers.len() > 1);
    let mut m = cmd("MSET");
    for k in &spread {
        m.arg(k).arg("small");
    }
    m.arg("ms:big").arg(&over);
    assert_eq!(query_err(&mut c, &m), too_big);
    let n: i64 = cmd("EXISTS")
        .arg(&spread)
        .arg("ms:big")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0, "MSET wrote part of its pairs");
    let long_key = "k".repeat(65);
    let mut m = cmd("MSET");
    for k in &spread {
        m.arg(k).arg("small");
    }
    m.arg(&long_key).arg("v");
    assert_eq!(
        query_err(&mut c, &m),
        "ERR key is 65 bytes, over the limit of 64 (limits.max_key_len)"
    );
    assert_eq!(
        query_err(&mut c, cmd("SET").arg(&long_key).arg("v")),
        "ERR key is 65 bytes, over the limit of 64 (limits.max_key_len)"
    );
    // RENAME and COPY to a key over the limit, from keys on every worker (the destination's
    // worker lower or higher than the source's): refused, and the source stays.
    for k in &spread {
        let () = cmd("SET").arg(k).arg("kept").query(&mut c).unwrap();
        for verb in ["RENAME", "RENAMENX", "COPY"] {
            assert_eq!(
                query_err(&mut c, cmd(verb).arg(k).arg(&long_key)),
                "ERR key is 65 bytes, over the limit of 64 (limits.max_key_len)",
                "{verb} {k}"
            );
            let v: Option<String> = cmd("GET").arg(k).query(&mut c).unwrap();
            assert_eq!(v.as_deref(), Some("kept"), "{verb} {k}");
        }
        let _: i64 = cmd("DEL").arg(k).query(&mut c).unwrap();
    }
    let n: i64 = cmd("EXISTS")
        .arg(&spread)
        .arg(&long_key)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0, "MSET wrote part of its pairs");
    let r: redis::RedisResult<i64> = cmd("MSETNX")
        .arg("{t}a")
        .arg("1")
        .arg("{t}b")
        .arg(&over)
        .query(&mut c);
    assert_eq!(common::err_text(&r.unwrap_err()), too_big);
    let n: i64 = cmd("EXISTS").arg("{t}a").arg("{t}b").query(&mut c).unwrap();
    assert_eq!(n, 0);
    // And over the wire as a raw bulk, the connection stays usable.
    let mut raw = s.raw();
    let want = format!("-{too_big}\r\n");
    expect_reply(
        &mut raw,
        &resp(&[b"SET", b"rawbig", over.as_bytes()]),
        want.as_bytes(),
    );
    expect_reply(&mut raw, b"EXISTS rawbig\r\n", b":0\r\n");
    assert_healthy(&mut s, &keys);
}

#[test]
fn config_set_max_value_len_takes_effect() {
    let s = server(&["--set", "limits.max_value_len=1kb"]);
    let mut c = s.client();
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("limits.max_value_len")
        .arg("2kb")
        .query(&mut c)
        .unwrap();
    let v = "v".repeat(1500);
    let r: redis::RedisResult<()> = cmd("SET").arg("k").arg(&v).query(&mut c);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn clients_over_maxclients_are_refused_and_the_others_keep_working() {
    let s = server(&["--set", "server.maxclients=5"]);
    let mut conns: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut c = s.raw();
            expect_reply(&mut c, b"PING\r\n", b"+PONG\r\n");
            c
        })
        .collect();
    for _ in 0..3 {
        let mut extra = s.raw();
        let (got, closed) = read_to_eof(&mut extra, Duration::from_secs(5));
        assert_eq!(got, b"-ERR max number of clients reached\r\n");
        assert!(closed);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let k = format!("k{i}");
        expect_reply(c, &resp(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
        expect_reply(c, &resp(&[b"GET", k.as_bytes()]), b"$1\r\nv\r\n");
    }
    // A slot frees when a client leaves.
    drop(conns.pop());
    let ok = wait_until(Duration::from_secs(5), || {
        let mut c = s.raw();
        let got = roundtrip(&mut c, b"PING\r\n", 7);
        if got == b"+PONG\r\n" {
            conns.push(c);
            true
        } else {
            false
        }
    });
    assert!(ok, "no room after a client left");
    let mut extra = s.raw();
    let (got, _) = read_to_eof(&mut extra, Duration::from_secs(5));
    assert_eq!(got, b"-ERR max number of clients reached\r\n");
    drop(conns);
    let mut c = None;
    assert!(wait_until(Duration::from_secs(5), || {
        c = redis::Client::open(s.url()).unwrap().get_connection().ok();
        c.as_mut()
            .is_some_and(|c| cmd("PING").query::<String>(c).is_ok())
    }));
    let st = info(c.as_mut().unwrap(), "stats");
    let rejected: u64 = st["rejected_connections"].parse().unwrap();
    assert!(rejected >= 4, "{rejected}");
}

#[test]
fn byte_at_a_time_pipelines_work() {
    let s = server(&[]);
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for i in 0..20 {
        let k = format!("bat:{i}");
        stream.extend(resp(&[
            b"SET",
            k.as_bytes(),
            format!("v\r\n{i}").as_bytes(),
        ]));
        want.extend_from_slice(b"+OK\r\n");
        stream.extend(format!("GET {k}\r\n").as_bytes());
        let v = format!("v\r\n{i}");
        want.extend(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
    }
    stream.extend(resp(&[b"MGET", b"bat:0", b"bat:19", b"nope"]));
    want.extend_from_slice(b"*3\r\n$4\r\nv\r\n0\r\n$5\r\nv\r\n19\r\n$-1\r\n");
    stream.extend_from_slice(b"*-1\r\n\r\nPING\n");
    want.extend_from_slice(b"+PONG\r\n");
    let mut c = s.raw();
    c.set_nodelay(true).unwrap();
    for b in &stream {
        c.write_all(std::slice::from_ref(b)).unwrap();
    }
    let got = roundtrip(&mut c, b"", want.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    // Nothing extra arrives.
    let (rest, closed) = read_to_eof(&mut c, Duration::from_millis(200));
    assert!(rest.is_empty() && !closed, "{rest:?}");
}

#[test]
fn a_client_that_does_not_read_is_paused_then_gets_every_reply_in_order() {
    let s = server(&[]);
    let mut c = s.client();
    // Keys on every worker, and a big value so that the replies outgrow the write buffer cap.
    let keys: Vec<String> = (0..64).map(|i| format!("{{slot{i}}}k")).collect();
    let workers: std::collections::HashSet<usize> = keys
        .iter()
        .map(|k| worker_of(k.as_bytes(), 16, 4))
        .collect();
    assert_eq!(workers.len(), 4);
    for k in &keys {
        let () = cmd("SET").arg(k).arg(k).query(&mut c).unwrap();
    }
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let () = cmd("SET").arg(&keys[1]).arg(&big).query(&mut c).unwrap();
    // 40k small commands (far more than the 4096 replies a connection may have in flight)
    // and 80 GETs of 1 MiB (more than the 64 MiB of queued output), sent by one thread while
    // nobody reads.
    let mut req = Vec::new();
    let mut want: Vec<Vec<u8>> = Vec::new();
    for i in 0..40_000usize {
        let k = &keys[i % keys.len()];
        if k == &keys[1] {
            req.extend(resp(&[b"EXISTS", k.as_bytes()]));
            want.push(b":1\r\n".to_vec());
        } else {
            req.extend(resp(&[b"GET", k.as_bytes()]));
            want.push(format!("${}\r\n{k}\r\n", k.len()).into_bytes());
        }
        if i % 500 == 0 {
            req.extend(resp(&[b"GET", keys[1].as_bytes()]));
            let mut w = format!("${}\r\n", big.len()).into_bytes();
            w.extend_from_slice(&big);
            w.extend_from_slice(b"\r\n");
            want.push(w);
        }
    }
    req.extend_from_slice(b"PING\r\n");
    want.push(b"+PONG\r\n".to_vec());
    let want: Vec<u8> = want.concat();
    let mut conn = s.raw();
    let mut writer = conn.try_clone().unwrap();
    let t = std::thread::spawn(move || writer.write_all(&req).unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    let got = roundtrip(&mut conn, b"", want.len());
    t.join().unwrap();
    assert_eq!(got.len(), want.len(), "replies missing");
    if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
        panic!(
            "replies differ at byte {i}: got {:?}, want {:?}",
            String::from_utf8_lossy(&got[i.saturating_sub(40)..(i + 40).min(got.len())]),
            String::from_utf8_lossy(&want[i.saturating_sub(40)..(i + 40).min(want.len())])
        );
    }
    let (rest, closed) = read_to_eof(&mut conn, Duration::from_millis(200));
    assert!(rest.is_empty() && !closed);
}

/// Replies other workers owe a connection count against its limits too: clients that send
/// GETs of large values and never read cannot make the server hold more than the write-buffer
/// cap plus a bounded number of owed replies each (1.26 GB of RSS here with 256 KiB values
/// when only the number of queued replies was bounded; about 240 MB now).
#[test]
fn a_client_that_does_not_read_cannot_make_other_workers_buffer_without_bound() {
    let s = Server::start(&["--workers", "2"]);
    let mut c = s.client();
    // Keys of worker 0 only; of the two slow connections below (accepted round robin), one
    // sits on worker 1 and has every reply owed by worker 0.
    let keys: Vec<String> = (0..200)
        .map(|i| format!("big{i}"))
        .filter(|k| worker_of(k.as_bytes(), 16, 2) == 0)
        .take(32)
        .collect();
    assert_eq!(keys.len(), 32);
    let value = vec![b'v'; 256 << 10];
    for k in &keys {
        let () = cmd("SET").arg(k).arg(&value).query(&mut c).unwrap();
    }
    let pid = s.pid();
    let before = vm_rss(pid);
    let chunk: Vec<u8> = keys
        .iter()
        .cycle()
        .take(keys.len() * 10)
        .flat_map(|k| resp(&[b"GET", k.as_bytes()]))
        .collect();
    let mut slow: Vec<TcpStream> = (0..2).map(|_| small_window_conn(s.port)).collect();
    let mut peak = before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let mut blocked = true;
        for conn in &mut slow {
            match conn.write(&chunk) {
                Ok(_) => blocked = false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        if blocked {
            std::thread::sleep(Duration::from_millis(20));
        }
        peak = peak.max(vm_rss(pid));
    }
    assert!(
        peak < before + (768 << 20),
        "RSS grew from {before} to {peak} for two clients that do not read"
    );
    // Everyone else is still served, and the stored values are intact.
    drop(slow);
    let got: Vec<u8> = cmd("GET").arg(&keys[3]).query(&mut c).unwrap();
    assert_eq!(got, value);
}

/// A non-blocking connection with a 4 KiB receive buffer set before connecting, so the
/// server can hand it almost nothing (its replies stay queued in the server).
fn small_window_conn(port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped in
    // a TcpStream (which then closes it); the pointers are to live locals of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let stream = TcpStream::from_raw_fd(fd);
        let small: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "setsockopt");
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream.set_nonblocking(true).unwrap();
        stream
    }
}

/// The resident set of a process, from /proc (bytes).
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
