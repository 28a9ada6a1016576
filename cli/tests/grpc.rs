//! The gRPC KV service against a running server: every method, missing keys, expiry, bad
//! arguments, and a server that is down.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Environment};
use simplekv_proto::kv::*;
use simplekv_proto::kv_grpc::KvClient;

fn start() -> (common::Server, KvClient, u16) {
    let s = common::Server::start(&["--grpc-port", common::ANY_PORT]);
    let gport = s.extra_ports[0];
    let env = Arc::new(Environment::new(1));
    let ch = ChannelBuilder::new(env).connect(&format!("127.0.0.1:{gport}"));
    (s, KvClient::new(ch), gport)
}

fn opt() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(10))
}

fn code(s: &protobuf::MessageField<Status>) -> Code {
    s.as_ref()
        .map(|s| s.code.enum_value_or(Code::INTERNAL))
        .unwrap_or(Code::OK)
}

fn set(c: &KvClient, k: &[u8], v: &[u8], ttl_ms: u64) -> SetReply {
    let mut r = SetRequest::new();
    r.key = k.to_vec();
    r.value = v.to_vec();
    r.ttl_ms = ttl_ms;
    c.set_opt(&r, opt()).expect("set")
}

fn get(c: &KvClient, k: &[u8]) -> GetReply {
    let mut r = GetRequest::new();
    r.key = k.to_vec();
    c.get_opt(&r, opt()).expect("get")
}

fn ttl(c: &KvClient, k: &[u8]) -> i64 {
    let mut r = TtlRequest::new();
    r.key = k.to_vec();
    c.ttl_opt(&r, opt()).expect("ttl").ttl_ms
}

#[test]
fn get_set_del_round_trip_and_match_resp() {
    let (s, c, _) = start();
    assert_eq!(code(&set(&c, b"k\0bin", b"v\r\n", 0).status), Code::OK);
    let g = get(&c, b"k\0bin");
    assert!(g.found);
    assert_eq!(g.value, b"v\r\n");
    assert_eq!(code(&g.status), Code::OK);
    let missing = get(&c, b"nope");
    assert!(!missing.found);
    assert_eq!(code(&missing.status), Code::OK);
    // Both front doors see the same data.
    let mut con = s.client();
    let v: Vec<u8> = redis::cmd("GET")
        .arg(&b"k\0bin"[..])
        .query(&mut con)
        .unwrap();
    assert_eq!(v, b"v\r\n");
    let _: () = redis::cmd("SET")
        .arg("from-resp")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!(get(&c, b"from-resp").value, b"x");

    let mut d = DelRequest::new();
    d.keys = vec![b"k\0bin".to_vec(), b"from-resp".to_vec(), b"nope".to_vec()];
    let r = c.del_opt(&d, opt()).unwrap();
    assert_eq!(r.deleted, 2);
    assert!(!get(&c, b"from-resp").found);
}

#[test]
fn ttl_and_expire_follow_pttl_and_pexpire() {
    let (_s, c, _) = start();
    assert_eq!(ttl(&c, b"missing"), -2);
    set(&c, b"plain", b"v", 0);
    assert_eq!(ttl(&c, b"plain"), -1);
    set(&c, b"short", b"v", 300);
    let t = ttl(&c, b"short");
    assert!((1..=300).contains(&t), "{t}");
    let mut e = ExpireRequest::new();
    e.key = b"plain".to_vec();
    e.ttl_ms = 60_000;
    assert!(c.expire_opt(&e, opt()).unwrap().applied);
    assert!(ttl(&c, b"plain") > 59_000);
    e.key = b"missing".to_vec();
    assert!(!c.expire_opt(&e, opt()).unwrap().applied);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&c, b"short").found {
        assert!(
            Instant::now() < deadline,
            "key with a 300 ms TTL never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ttl(&c, b"short"), -2);
}

#[test]
fn mset_and_mget_span_every_worker_and_keep_order() {
    let (_s, c, _) = start();
    let mut m = MSetRequest::new();
    for i in 0..200 {
        let mut kv = KeyValue::new();
        kv.key = format!("key{i}").into_bytes();
        kv.value = format!("val{i}").into_bytes();
        m.pairs.push(kv);
    }
    assert_eq!(code(&c.m_set_opt(&m, opt()).unwrap().status), Code::OK);
    let mut g = MGetRequest::new();
    g.keys = (0..201).map(|i| format!("key{i}").into_bytes()).collect();
    let r = c.m_get_opt(&g, opt()).unwrap();
    assert_eq!(r.values.len(), 201);
    for i in 0..200 {
        assert!(r.values[i].found);
        assert_eq!(r.values[i].value, format!("val{i}").into_bytes());
    }
    assert!(!r.values[200].found);
}

#[test]
fn bad_arguments_get_the_resp_error_as_invalid_argument() {
    let s = common::Server::start(&[
        "--grpc-port",
        common::ANY_PORT,
        "--set",
        "limits.max_value_len=1kb",
        "--set",
        "limits.max_multibulk_len=1024",
    ]);
    let gport = s.extra_ports[0];
    let env = Arc::new(Environment::new(1));
    let c = KvClient::new(ChannelBuilder::new(env).connect(&format!("127.0.0.1:{gport}")));
    let r = set(&c, b"big", &[7u8; 2000], 0);
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(
        r.status.message.contains("max_value_len"),
        "{}",
        r.status.message
    );
    assert!(!get(&c, b"big").found, "nothing stored");
    let r = c.m_set_opt(&MSetRequest::new(), opt()).unwrap();
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    let r = c.del_opt(&DelRequest::new(), opt()).unwrap();
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    // As many keys as a RESP command may carry arguments, no more.
    let mut many = MGetRequest::new();
    many.keys = (0..1023).map(|i| format!("k{i}").into_bytes()).collect();
    assert_eq!(code(&c.m_get_opt(&many, opt()).unwrap().status), Code::OK);
    many.keys.push(b"one-more".to_vec());
    let r = c.m_get_opt(&many, opt()).unwrap();
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(
        r.status.message.contains("max_multibulk_len"),
        "{}",
        r.status.message
    );
    let r = c.m_get_opt(&MGetRequest::new(), opt()).unwrap();
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    // An acks value the service does not know is refused, not taken for the default.
    let mut req = SetRequest::new();
    req.key = b"k".to_vec();
    req.value = b"v".to_vec();
    req.acks = protobuf::EnumOrUnknown::from_i32(99);
    let r = c.set_opt(&req, opt()).unwrap();
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(r.status.message.contains("acks"), "{}", r.status.message);
    // A TTL past what the commands take: Redis's error, not a parse error.
    let r = set(&c, b"k", b"v", u64::MAX);
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(
        r.status.message.contains("invalid expire time in 'set'"),
        "{}",
        r.status.message
    );
    assert!(!get(&c, b"k").found, "nothing stored");
}

#[test]
fn a_server_that_is_down_gives_a_clear_error_without_hanging() {
    let (mut s, c, _) = start();
    set(&c, b"a", b"b", 0);
    s.kill9();
    let started = Instant::now();
    let mut r = GetRequest::new();
    r.key = b"a".to_vec();
    let err = c
        .get_opt(&r, CallOption::default().timeout(Duration::from_secs(3)))
        .expect_err("the server is down");
    assert!(started.elapsed() < Duration::from_secs(8));
    let text = err.to_string();
    assert!(
        text.contains("UNAVAILABLE") || text.contains("DEADLINE_EXCEEDED"),
        "{text}"
    );
}

fn cli_grpc(port: u16, input: &str) -> (String, bool) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(["cli", "--grpc", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run simplekv cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn the_cli_talks_to_the_grpc_service_with_the_same_replies() {
    let (_s, _c, gport) = start();
    let (out, ok) = cli_grpc(
        gport,
        "ping\nset hello 1\nget hello\nexpire hello 200\nttl hello\nmset a 1 b 2\nmget a b nope\ndel hello a\nget hello\nincr x\n\
         set k v ex\nset k v nx\nexpire k 10 nx\nauth\nauth x\nget hello\nauth default x\n",
    );
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..8],
        ["PONG", "OK", "1", "1", "200", "OK", "1", "2"],
        "{out}"
    );
    assert_eq!(lines[8], "", "nil of mget");
    assert_eq!(lines[9], "2", "{out}");
    assert_eq!(lines[10], "", "get of a deleted key");
    assert!(lines[11].contains("not available over gRPC"), "{out}");
    // Errors as Redis words them, or saying what the service does not take.
    assert_eq!(lines[12], "ERR syntax error", "{out}");
    assert!(lines[13].contains("SET takes EX or PX only"), "{out}");
    assert!(
        lines[14].contains("NX, XX, GT or LT is not available"),
        "{out}"
    );
    assert_eq!(
        lines[15], "ERR wrong number of arguments for 'auth' command",
        "{out}"
    );
    // A password for a server without one is refused as over RESP, and not kept.
    assert!(
        lines[16].starts_with("ERR AUTH <password> called without any password configured"),
        "{out}"
    );
    assert_eq!(lines[17], "", "{out}");
    // AUTH default <anything> is the user without a password, as over RESP.
    assert_eq!(lines[18], "OK", "{out}");
}

/// `requirepass` holds for the gRPC service too: a call carries the password in its
/// metadata (`authorization: Bearer <password>`), and CONFIG SET changes it for both doors.
#[test]
fn a_password_protects_the_grpc_service_as_it_does_resp() {
    let s = common::Server::start(&["--grpc-port", common::ANY_PORT, "--requirepass", "s3cret"]);
    let gport = s.extra_ports[0];
    let env = Arc::new(Environment::new(1));
    let c = KvClient::new(ChannelBuilder::new(env).connect(&format!("127.0.0.1:{gport}")));
    let with = |pw: &str| {
        let mut m = grpcio::MetadataBuilder::new();
        m.add_str("authorization", &format!("Bearer {pw}")).unwrap();
        opt().headers(m.build())
    };
    let mut r = SetRequest::new();
    r.key = b"k".to_vec();
    r.value = b"v".to_vec();
    let anon = c.set_opt(&r, opt()).expect("set");
    assert_eq!(code(&anon.status), Code::UNAUTHENTICATED);
    let wrong = c.set_opt(&r, with("nope")).expect("set");
    assert_eq!(code(&wrong.status), Code::UNAUTHENTICATED);
    assert_eq!(
        code(&c.set_opt(&r, with("s3cret")).expect("set").status),
        Code::OK
    );
    let mut g = GetRequest::new();
    g.key = b"k".to_vec();
    assert!(!c.get_opt(&g, opt()).expect("get").found);
    assert_eq!(c.get_opt(&g, with("s3cret")).expect("get").value, b"v");
    // CONFIG SET over RESP changes it for gRPC too.
    let mut conn = s.client();
    redis::cmd("AUTH")
        .arg("s3cret")
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("n3w")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(
        code(&c.get_opt(&g, with("s3cret")).expect("get").status),
        Code::UNAUTHENTICATED
    );
    assert_eq!(c.get_opt(&g, with("n3w")).expect("get").value, b"v");
    // The CLI sends AUTH's password with every call.
    let (out, _) = cli_grpc(
        gport,
        "get k\nauth wrong\nget k\nauth n3w\nget k\nping hello\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NOAUTH"), "{out}");
    assert!(lines[1].starts_with("WRONGPASS"), "{out}");
    assert!(lines[2].starts_with("NOAUTH"), "{out}");
    assert_eq!(lines[3..], ["OK", "v", "hello"], "{out}");
}

/// A gRPC request may be as large as a RESP query (gRPC alone stops at 4 MiB).
#[test]
fn values_over_four_mib_go_through_grpc_both_ways() {
    let (_s, c, gport) = start();
    let big: Vec<u8> = (0..6 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(code(&set(&c, b"big", &big, 0).status), Code::OK);
    let env = Arc::new(Environment::new(1));
    let reader = KvClient::new(
        ChannelBuilder::new(env)
            .max_receive_message_len(-1)
            .connect(&format!("127.0.0.1:{gport}")),
    );
    let g = get(&reader, b"big");
    assert!(g.found && g.value == big, "{} bytes back", g.value.len());
    let (out, ok) = cli_grpc(gport, "strlen big\nget big\n");
    assert!(ok);
    let mut lines = out.lines();
    assert!(
        lines.next().is_some_and(|l| l.contains("not available")),
        "{out:.200}"
    );
    assert_eq!(lines.next().map(str::len), Some(6 << 20));
}

/// `proto-max-bulk-len` bounds a value sent over gRPC as it bounds a RESP argument, as
/// CONFIG SET leaves it; nothing of a refused request is written.
#[test]
fn values_over_proto_max_bulk_len_are_refused_over_grpc() {
    let (s, c, _) = start();
    let mut conn = s.client();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg("1mb")
        .query::<()>(&mut conn)
        .unwrap();
    let fits = vec![b'x'; 1 << 20];
    let over = vec![b'y'; (1 << 20) + 1];
    assert_eq!(code(&set(&c, b"fits", &fits, 0).status), Code::OK);
    let r = set(&c, b"over", &over, 0);
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(
        r.status.message.contains("proto-max-bulk-len"),
        "{}",
        r.status.message
    );
    // Keys too, even where limits.max_key_len would take them.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("limits.max_key_len")
        .arg("4mb")
        .query::<()>(&mut conn)
        .unwrap();
    let r = set(&c, &over, b"v", 0);
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(
        r.status.message.contains("proto-max-bulk-len"),
        "{}",
        r.status.message
    );
    let mut m = MSetRequest::new();
    for (k, v) in [(&b"a"[..], &b"1"[..]), (b"b", &over)] {
        let mut kv = KeyValue::new();
        kv.key = k.to_vec();
        kv.value = v.to_vec();
        m.pairs.push(kv);
    }
    let r = c.m_set_opt(&m, opt()).unwrap();
    assert_eq!(code(&r.status), Code::INVALID_ARGUMENT);
    assert!(!get(&c, b"over").found && !get(&c, b"a").found);
    assert_eq!(get(&c, b"fits").value.len(), 1 << 20);
    // Raised again, the same value goes through.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg("2mb")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(code(&set(&c, b"over", &over, 0).status), Code::OK);
}

/// A gRPC port already served makes a second server fail to start, as a taken RESP port does
/// (gRPC's default SO_REUSEPORT would let both bind it and split the connections).
#[test]
fn a_second_server_on_a_taken_grpc_port_does_not_start() {
    let (_s, _c, gport) = start();
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = common::run_to_exit(
        &dir.path().join("data"),
        &["--grpc-port", &gport.to_string()],
        Duration::from_secs(20),
    );
    assert_ne!(code, Some(0), "{log}");
    assert!(code.is_some(), "still running: {log}");
    assert!(log.contains("gRPC"), "{log}");
}

#[test]
fn client_pause_holds_grpc_writes_until_it_is_lifted() {
    let (s, c, _) = start();
    let mut con = s.client();
    assert_eq!(code(&set(&c, b"before", b"1", 0).status), Code::OK);
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .query(&mut con)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = c.clone();
    let t = std::thread::spawn(move || {
        let r = set(&writer, b"during", b"2", 0);
        let _ = tx.send(code(&r.status));
    });
    // Reads go on while the write waits.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    assert_eq!(get(&c, b"before").value, b"1");
    assert!(!get(&c, b"during").found);
    let blocked: String = redis::cmd("INFO").arg("clients").query(&mut con).unwrap();
    assert!(blocked.contains("blocked_clients:1"), "{blocked}");
    let started = Instant::now();
    let () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut con).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(Code::OK));
    assert!(started.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
    assert_eq!(get(&c, b"during").value, b"2");
}
