//! Every RESP command the server supports, end to end against the real binary, with Redis 7
//! semantics and reply/error texts. Servers run 4 workers (more than the cores of a small
//! machine on purpose) so that keys live on several workers and commands cross between them.
mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, expect_reply, info, query_err, read_to_eof, resp, wait_until, worker_of};
use redis::{Connection, Value, cmd};

const WORKERS: u32 = 4;
const PARTITIONS: u32 = 16;

fn server() -> Server {
    Server::start(&["--workers", "4"])
}

fn server_with(extra: &[&str]) -> Server {
    let mut args = vec!["--workers", "4"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn set(con: &mut Connection, k: &str, v: &str) {
    let () = cmd("SET").arg(k).arg(v).query(con).unwrap();
}

fn get(con: &mut Connection, k: &str) -> Option<String> {
    cmd("GET").arg(k).query(con).unwrap()
}

fn int(con: &mut Connection, c: &mut redis::Cmd) -> i64 {
    c.query(con).unwrap()
}

/// `n` keys named `{prefix}{i}`, as many on every worker (partitions own contiguous slot
/// ranges, so similar short names tend to share one).
fn spread_keys(prefix: &str, n: usize) -> Vec<String> {
    let per = n.div_ceil(WORKERS as usize);
    let mut taken = [0usize; WORKERS as usize];
    let mut keys = Vec::with_capacity(n);
    for i in 0.. {
        if keys.len() == n {
            break;
        }
        let k = format!("{prefix}{i}");
        let w = worker_of(k.as_bytes(), PARTITIONS, WORKERS);
        if taken[w] < per {
            taken[w] += 1;
            keys.push(k);
        }
    }
    if n >= WORKERS as usize {
        assert!(taken.iter().all(|&t| t > 0), "keys cover every worker");
    }
    keys
}

#[test]
fn connection_and_server_info_commands_answer_as_redis() {
    let s = server();
    let mut c = s.client();
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let v: String = cmd("PING").arg("hello").query(&mut c).unwrap();
    assert_eq!(v, "hello");
    let v: Vec<u8> = cmd("ECHO").arg(&b"a\0b\r\n"[..]).query(&mut c).unwrap();
    assert_eq!(v, b"a\0b\r\n");
    assert_eq!(
        query_err(&mut c, cmd("PING").arg("a").arg("b")),
        "ERR wrong number of arguments for 'ping' command"
    );
    let () = cmd("SELECT").arg(0).query(&mut c).unwrap();
    // One database only (CONFIG GET databases is 1): Redis's answer for an index past it.
    assert_eq!(
        query_err(&mut c, cmd("SELECT").arg(1)),
        "ERR DB index is out of range"
    );
    assert_eq!(
        query_err(&mut c, cmd("SELECT").arg("x")),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        query_err(&mut c, cmd("SELECT").arg("2147483648")),
        "ERR value is out of range, value must between -2147483648 and 2147483647"
    );
    let (secs, micros): (String, String) = cmd("TIME").query(&mut c).unwrap();
    let t = secs.parse::<i64>().unwrap() * 1000 + micros.parse::<i64>().unwrap() / 1000;
    assert!((t - now_ms()).abs() < 5_000, "TIME {t} vs {}", now_ms());
    assert!(micros.parse::<u32>().unwrap() < 1_000_000);
    let role: Value = cmd("ROLE").query(&mut c).unwrap();
    assert_eq!(
        role,
        Value::Array(vec![
            Value::BulkString(b"master".to_vec()),
            Value::Int(0),
            Value::Array(vec![])
        ])
    );
}

#[test]
fn quit_replies_ok_then_closes_without_running_what_follows() {
    let s = server();
    let mut raw = s.raw();
    raw.write_all(b"PING\r\nQUIT\r\nSET after-quit 1\r\n")
        .unwrap();
    let (got, closed) = read_to_eof(&mut raw, Duration::from_secs(5));
    assert_eq!(got, b"+PONG\r\n+OK\r\n");
    assert!(closed, "QUIT closes the connection");
    let mut c = s.client();
    assert_eq!(get(&mut c, "after-quit"), None);
}

#[test]
fn hello_2_is_accepted_and_3_is_noproto() {
    let s = server();
    let mut c = s.client();
    let v: HashMap<String, Value> = cmd("HELLO").arg(2).query(&mut c).unwrap();
    assert_eq!(v["proto"], Value::Int(2));
    assert_eq!(v["server"], Value::BulkString(b"simplekv".to_vec()));
    assert_eq!(v["version"], Value::BulkString(b"7.0.15".to_vec()));
    assert_eq!(v["role"], Value::BulkString(b"master".to_vec()));
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert_eq!(v["id"], Value::Int(id));
    let v: HashMap<String, Value> = cmd("HELLO").query(&mut c).unwrap();
    assert_eq!(v["proto"], Value::Int(2));
    let e = query_err(&mut c, cmd("HELLO").arg(3));
    assert!(e.starts_with("NOPROTO "), "{e}");
    assert_eq!(
        query_err(&mut c, cmd("HELLO").arg("x")),
        "ERR Protocol version is not an integer or out of range"
    );
    // SETNAME checks the name as CLIENT SETNAME does.
    let v: HashMap<String, Value> = cmd("HELLO")
        .arg(2)
        .arg("SETNAME")
        .arg("via-hello")
        .query(&mut c)
        .unwrap();
    assert_eq!(v["proto"], Value::Int(2));
    let name: String = cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "via-hello");
    assert_eq!(
        query_err(&mut c, cmd("HELLO").arg(2).arg("SETNAME").arg("a b")),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(
        query_err(&mut c, cmd("HELLO").arg(2).arg("SETNAME")),
        "ERR Syntax error in HELLO option 'SETNAME'"
    );
    let name: String = cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "via-hello");
    // Without a password the default user takes any: HELLO AUTH default works.
    let v: HashMap<String, Value> = cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("default")
        .arg("anything")
        .query(&mut c)
        .unwrap();
    assert_eq!(v["proto"], Value::Int(2));
    // The connection stays usable in RESP2.
    set(&mut c, "k", "v");
    assert_eq!(get(&mut c, "k").as_deref(), Some("v"));
}

#[test]
fn requirepass_demands_auth_before_anything_else() {
    let s = server_with(&["--requirepass", "s3cret"]);
    let mut raw = s.raw();
    expect_reply(
        &mut raw,
        b"GET k\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    expect_reply(
        &mut raw,
        b"SET k v\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    // Arity is checked first, as in Redis 7.
    expect_reply(
        &mut raw,
        b"GET\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
    );
    // CLIENT SETINFO labels the connection before AUTH (client libraries send it on
    // connect); other CLIENT subcommands need AUTH.
    expect_reply(
        &mut raw,
        b"CLIENT SETINFO LIB-NAME redis-py\r\n",
        b"+OK\r\n",
    );
    expect_reply(
        &mut raw,
        b"CLIENT SETNAME x\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    expect_reply(
        &mut raw,
        b"AUTH nope\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    expect_reply(
        &mut raw,
        b"AUTH someone s3cret\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    expect_reply(
        &mut raw,
        b"HELLO 2 AUTH default nope\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    expect_reply(
        &mut raw,
        b"HELLO 2 AUTH bob s3cret\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    expect_reply(
        &mut raw,
        b"PING\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    expect_reply(&mut raw, b"AUTH s3cret\r\n", b"+OK\r\n");
    expect_reply(&mut raw, b"SET k v\r\n", b"+OK\r\n");
    expect_reply(&mut raw, b"PING\r\n", b"+PONG\r\n");
    // AUTH default <pass> and HELLO ... AUTH work too.
    let mut raw2 = s.raw();
    expect_reply(&mut raw2, b"AUTH default s3cret\r\n", b"+OK\r\n");
    expect_reply(&mut raw2, b"GET k\r\n", b"$1\r\nv\r\n");
    let mut c = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(get(&mut c, "k").as_deref(), Some("v"));
    let hello: HashMap<String, Value> = cmd("HELLO")
        .arg(2)
        .arg("AUTH")
        .arg("default")
        .arg("s3cret")
        .query(&mut s.client())
        .unwrap();
    assert_eq!(hello["proto"], Value::Int(2));
    // A connection that never authenticated: free once the password is removed, held again
    // once one is set, as in Redis.
    let mut never = s.raw();
    expect_reply(
        &mut never,
        b"PING\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    expect_reply(&mut raw, b"CONFIG SET requirepass \"\"\r\n", b"+OK\r\n");
    expect_reply(&mut never, b"GET k\r\n", b"$1\r\nv\r\n");
    expect_reply(&mut raw, b"CONFIG SET requirepass again\r\n", b"+OK\r\n");
    expect_reply(
        &mut never,
        b"GET k\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    expect_reply(&mut raw, b"GET k\r\n", b"$1\r\nv\r\n");

    // Without a password configured, AUTH is Redis's configuration error.
    let s2 = server();
    assert_eq!(
        query_err(&mut s2.client(), cmd("AUTH").arg("x")),
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
    // ... but the default user takes any password, so clients configured with a user name
    // (redis://default:pw@host) connect; other users do not exist.
    let ok: String = cmd("AUTH")
        .arg("default")
        .arg("anything")
        .query(&mut s2.client())
        .unwrap();
    assert_eq!(ok, "OK");
    let mut c2 = redis::Client::open(format!("redis://default:pw@127.0.0.1:{}/", s2.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(get(&mut c2, "k"), None);
    assert_eq!(
        query_err(&mut s2.client(), cmd("AUTH").arg("alice").arg("pw")),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
}

#[test]
fn set_with_expiry_and_condition_options() {
    let s = server();
    let mut c = s.client();
    // NX / XX
    let r: Option<String> = cmd("SET")
        .arg("k")
        .arg("1")
        .arg("XX")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    assert_eq!(get(&mut c, "k"), None);
    let r: Option<String> = cmd("SET")
        .arg("k")
        .arg("1")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = cmd("SET")
        .arg("k")
        .arg("2")
        .arg("nx")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, None);
    let r: Option<String> = cmd("SET")
        .arg("k")
        .arg("3")
        .arg("xx")
        .query(&mut c)
        .unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    assert_eq!(get(&mut c, "k").as_deref(), Some("3"));
    // GET, alone and with NX/XX (Redis 7 allows NX GET).
    let old: Option<String> = cmd("SET")
        .arg("k")
        .arg("4")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("3"));
    let old: Option<String> = cmd("SET")
        .arg("k")
        .arg("5")
        .arg("NX")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("4"));
    assert_eq!(
        get(&mut c, "k").as_deref(),
        Some("4"),
        "NX refused the write"
    );
    let old: Option<String> = cmd("SET")
        .arg("new")
        .arg("x")
        .arg("XX")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old, None);
    assert_eq!(get(&mut c, "new"), None);
    let old: Option<String> = cmd("SET")
        .arg("new")
        .arg("x")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old, None);
    assert_eq!(get(&mut c, "new").as_deref(), Some("x"));
    // EX / PX / EXAT / PXAT
    let () = cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl = int(&mut c, cmd("TTL").arg("k"));
    assert!((99..=100).contains(&ttl), "{ttl}");
    let () = cmd("SET")
        .arg("k")
        .arg("v")
        .arg("PX")
        .arg(50_000)
        .query(&mut c)
        .unwrap();
    let pttl = int(&mut c, cmd("PTTL").arg("k"));
    assert!((45_000..=50_000).contains(&pttl), "{pttl}");
    let at = now_ms() / 1000 + 200;
    let () = cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EXAT")
        .arg(at)
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("EXPIRETIME").arg("k")), at);
    let at_ms = now_ms() + 300_000;
    let () = cmd("SET")
        .arg("k")
        .arg("v")
        .arg("PXAT")
        .arg(at_ms)
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("PEXPIRETIME").arg("k")), at_ms);
    // KEEPTTL keeps it; a plain SET clears it.
    let () = cmd("SET")
        .arg("k")
        .arg("w")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("PEXPIRETIME").arg("k")), at_ms);
    assert_eq!(get(&mut c, "k").as_deref(), Some("w"));
    let old: Option<String> = cmd("SET")
        .arg("k")
        .arg("x")
        .arg("XX")
        .arg("GET")
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("w"));
    assert_eq!(int(&mut c, cmd("PEXPIRETIME").arg("k")), at_ms);
    set(&mut c, "k", "plain");
    assert_eq!(int(&mut c, cmd("TTL").arg("k")), -1);
    // A PXAT in the past stores an already expired key.
    let () = cmd("SET")
        .arg("past")
        .arg("v")
        .arg("PXAT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(get(&mut c, "past"), None);
    // Errors.
    for bad in [
        vec!["k", "v", "NX", "XX"],
        vec!["k", "v", "EX", "10", "PX", "10"],
        vec!["k", "v", "EX", "10", "KEEPTTL"],
        vec!["k", "v", "EX"],
        vec!["k", "v", "bogus"],
    ] {
        assert_eq!(
            query_err(&mut c, cmd("SET").arg(&bad)),
            "ERR syntax error",
            "{bad:?}"
        );
    }
    for bad in [
        vec!["k", "v", "EX", "0"],
        vec!["k", "v", "EX", "-1"],
        vec!["k", "v", "PX", "0"],
        vec!["k", "v", "EXAT", "0"],
        vec!["k", "v", "EX", "9223372036854775807"],
    ] {
        assert_eq!(
            query_err(&mut c, cmd("SET").arg(&bad)),
            "ERR invalid expire time in 'set' command",
            "{bad:?}"
        );
    }
    assert_eq!(
        query_err(&mut c, cmd("SET").arg("k").arg("v").arg("EX").arg("ten")),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        get(&mut c, "k").as_deref(),
        Some("plain"),
        "errors write nothing"
    );
}

#[test]
fn set_variants_and_get_with_side_effects() {
    let s = server();
    let mut c = s.client();
    assert_eq!(int(&mut c, cmd("SETNX").arg("a").arg("1")), 1);
    assert_eq!(int(&mut c, cmd("SETNX").arg("a").arg("2")), 0);
    assert_eq!(get(&mut c, "a").as_deref(), Some("1"));

    let () = cmd("SETEX")
        .arg("e")
        .arg(100)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!((99..=100).contains(&int(&mut c, cmd("TTL").arg("e"))));
    let () = cmd("PSETEX")
        .arg("p")
        .arg(100_000)
        .arg("v")
        .query(&mut c)
        .unwrap();
    assert!((95_000..=100_000).contains(&int(&mut c, cmd("PTTL").arg("p"))));
    assert_eq!(
        query_err(&mut c, cmd("SETEX").arg("e").arg(0).arg("v")),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("PSETEX").arg("e").arg(-5).arg("v")),
        "ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("SETEX").arg("e").arg("x").arg("v")),
        "ERR value is not an integer or out of range"
    );

    // GETSET returns the old value and drops the TTL.
    let old: Option<String> = cmd("GETSET").arg("e").arg("new").query(&mut c).unwrap();
    assert_eq!(old.as_deref(), Some("v"));
    assert_eq!(int(&mut c, cmd("TTL").arg("e")), -1);
    let old: Option<String> = cmd("GETSET").arg("none").arg("x").query(&mut c).unwrap();
    assert_eq!(old, None);
    assert_eq!(get(&mut c, "none").as_deref(), Some("x"));

    let v: Option<String> = cmd("GETDEL").arg("none").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("x"));
    assert_eq!(get(&mut c, "none"), None);
    let v: Option<String> = cmd("GETDEL").arg("none").query(&mut c).unwrap();
    assert_eq!(v, None);

    // GETEX: plain, EX, PX, EXAT, PXAT, PERSIST.
    set(&mut c, "g", "val");
    let v: Option<String> = cmd("GETEX").arg("g").query(&mut c).unwrap();
    assert_eq!(v.as_deref(), Some("val"));
    assert_eq!(int(&mut c, cmd("TTL").arg("g")), -1);
    let v: Option<String> = cmd("GETEX")
        .arg("g")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    assert_eq!(v.as_deref(), Some("val"));
    assert!((99..=100).contains(&int(&mut c, cmd("TTL").arg("g"))));
    let _: Option<String> = cmd("GETEX")
        .arg("g")
        .arg("PX")
        .arg(200_000)
        .query(&mut c)
        .unwrap();
    assert!(int(&mut c, cmd("PTTL").arg("g")) > 150_000);
    let at = now_ms() / 1000 + 500;
    let _: Option<String> = cmd("GETEX")
        .arg("g")
        .arg("EXAT")
        .arg(at)
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("EXPIRETIME").arg("g")), at);
    let _: Option<String> = cmd("GETEX").arg("g").arg("PERSIST").query(&mut c).unwrap();
    assert_eq!(int(&mut c, cmd("TTL").arg("g")), -1);
    let v: Option<String> = cmd("GETEX")
        .arg("g")
        .arg("PXAT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some("val"),
        "the value is returned, then the key goes"
    );
    assert_eq!(get(&mut c, "g"), None);
    let v: Option<String> = cmd("GETEX")
        .arg("missing")
        .arg("EX")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, None);
    set(&mut c, "g", "val");
    assert_eq!(
        query_err(
            &mut c,
            cmd("GETEX").arg("g").arg("EX").arg(10).arg("PERSIST")
        ),
        "ERR syntax error"
    );
    assert_eq!(
        query_err(&mut c, cmd("GETEX").arg("g").arg("EX").arg(0)),
        "ERR invalid expire time in 'getex' command"
    );
}

#[test]
fn mget_mset_keep_order_across_workers() {
    let s = server();
    let mut c = s.client();
    let keys = spread_keys("mk:", 64);
    let mut m = cmd("MSET");
    for k in &keys {
        m.arg(k).arg(format!("val-{k}"));
    }
    let () = m.query(&mut c).unwrap();
    let mut q = cmd("MGET");
    let mut expect = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        q.arg(k);
        expect.push(Some(format!("val-{k}")));
        if i % 5 == 0 {
            q.arg(format!("missing-{i}"));
            expect.push(None);
        }
    }
    // A key asked twice is answered twice.
    q.arg(&keys[3]);
    expect.push(Some(format!("val-{}", keys[3])));
    let got: Vec<Option<String>> = q.query(&mut c).unwrap();
    assert_eq!(got, expect);
    // A later duplicate wins; MSET clears TTLs.
    let () = cmd("SETEX")
        .arg(&keys[0])
        .arg(100)
        .arg("x")
        .query(&mut c)
        .unwrap();
    let () = cmd("MSET")
        .arg(&keys[0])
        .arg("first")
        .arg(&keys[0])
        .arg("second")
        .query(&mut c)
        .unwrap();
    assert_eq!(get(&mut c, &keys[0]).as_deref(), Some("second"));
    assert_eq!(int(&mut c, cmd("TTL").arg(&keys[0])), -1);
    assert_eq!(
        query_err(&mut c, cmd("MSET").arg("a").arg("1").arg("b")),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("MSET").arg("a")),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        query_err(&mut c, &cmd("MGET")),
        "ERR wrong number of arguments for 'mget' command"
    );
}

#[test]
fn msetnx_is_all_or_nothing_on_one_worker_and_across_workers() {
    let s = server();
    let mut c = s.client();
    assert_eq!(
        int(
            &mut c,
            cmd("MSETNX")
                .arg("{user1}.a")
                .arg("1")
                .arg("{user1}.b")
                .arg("2")
        ),
        1
    );
    assert_eq!(get(&mut c, "{user1}.b").as_deref(), Some("2"));
    assert_eq!(
        int(
            &mut c,
            cmd("MSETNX")
                .arg("{user1}.c")
                .arg("3")
                .arg("{user1}.a")
                .arg("9")
        ),
        0
    );
    assert_eq!(get(&mut c, "{user1}.c"), None, "all or nothing");
    assert_eq!(get(&mut c, "{user1}.a").as_deref(), Some("1"));

    // Keys on every worker. Connections land on workers in turn, so over four of them the
    // connection's own worker is first, in the middle, last, or not involved.
    let keys = spread_keys("nx:", 8);
    let by_worker = |k: &String| worker_of(k.as_bytes(), PARTITIONS, WORKERS);
    for round in 0..4 {
        let mut c = s.client();
        let fresh: Vec<String> = keys.iter().map(|k| format!("{k}:{round}")).collect();
        let mut m = cmd("MSETNX");
        for k in &fresh {
            m.arg(k).arg(format!("v-{k}"));
        }
        assert_eq!(int(&mut c, &mut m), 1, "round {round}");
        for k in &fresh {
            assert_eq!(get(&mut c, k), Some(format!("v-{k}")));
        }
        // One key present, on each worker in turn: nothing written.
        for taken in &fresh {
            let mut m = cmd("MSETNX");
            let mut new_keys = Vec::new();
            for k in &keys {
                let n = format!("{k}:{round}:new");
                m.arg(&n).arg("x");
                new_keys.push(n);
            }
            m.arg(taken).arg("x");
            assert_eq!(
                int(&mut c, &mut m),
                0,
                "{taken} exists (worker {})",
                by_worker(taken)
            );
            let mut ex = cmd("EXISTS");
            for n in &new_keys {
                ex.arg(n);
            }
            assert_eq!(int(&mut c, &mut ex), 0, "an MSETNX that answered 0 wrote");
            assert_eq!(get(&mut c, taken), Some(format!("v-{taken}")));
        }
    }

    // Pipelined: the command after an MSETNX sees it, whichever worker the key is on.
    let mut c = s.client();
    let mut p = redis::pipe();
    let mut m = cmd("MSETNX");
    for k in &keys {
        m.arg(format!("{k}:p")).arg("pv");
    }
    p.add_command(m);
    for k in &keys {
        p.cmd("GET").arg(format!("{k}:p"));
    }
    p.cmd("MSETNX")
        .arg(format!("{}:p", keys[0]))
        .arg("again")
        .arg("fresh:p")
        .arg("x");
    p.cmd("EXISTS").arg("fresh:p");
    let got: Vec<Value> = p.query(&mut c).unwrap();
    assert_eq!(got[0], Value::Int(1));
    for v in &got[1..=keys.len()] {
        assert_eq!(*v, Value::BulkString(b"pv".to_vec()));
    }
    assert_eq!(got[keys.len() + 1], Value::Int(0));
    assert_eq!(got[keys.len() + 2], Value::Int(0));
    assert_eq!(
        query_err(&mut c, cmd("MSETNX").arg("a").arg("1").arg("b")),
        "ERR wrong number of arguments for 'msetnx' command"
    );
}

/// A command pipelined before an MSETNX runs before it, even when the MSETNX's first steps
/// are on other workers than that command's key.
#[test]
fn msetnx_runs_after_the_commands_pipelined_before_it() {
    let s = server();
    let mut c = s.client();
    let mut p = redis::pipe();
    let n = 300;
    for i in 0..n {
        p.cmd("SET").arg(format!("x{i}")).arg("v").ignore();
        p.cmd("MSETNX")
            .arg(format!("a{i}"))
            .arg(1)
            .arg(format!("b{i}"))
            .arg(2)
            .arg(format!("x{i}"))
            .arg(3);
        p.cmd("INCR").arg(format!("n{i}")).ignore();
        p.cmd("MSETNX")
            .arg(format!("n{i}"))
            .arg(7)
            .arg(format!("c{i}"))
            .arg(1)
            .arg(format!("d{i}"))
            .arg(1);
    }
    let got: Vec<i64> = p.query(&mut c).unwrap();
    assert_eq!(
        got,
        vec![0; 2 * n],
        "an MSETNX ran ahead of a command sent before it"
    );
    let keys: Vec<String> = cmd("KEYS").arg("[abcd]*").query(&mut c).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Concurrent MSETNX over overlapping keys on all workers: each key ends up with the value of
/// exactly one MSETNX that answered 1, every MSETNX that answered 1 has all of its keys, and
/// none that answered 0 left anything. Workers taken in opposite orders by different clients
/// must not wait on each other (the test would hang).
#[test]
fn concurrent_msetnx_on_overlapping_keys_is_atomic_and_never_stalls() {
    let s = server();
    let pool = spread_keys("race:", 24);
    let started = Instant::now();
    for round in 0..4u64 {
        let handles: Vec<_> = (0..6u64)
            .map(|t| {
                let mut c = s.client();
                // A worker left holding would stall every client: fail instead of hanging.
                c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut rng = round * 1_000_003 + t * 7919 + 1;
                    let mut next = || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    let mut done = Vec::new();
                    for i in 0..60 {
                        let n = 2 + (next() % 3) as usize;
                        let mut ks: Vec<String> = Vec::new();
                        while ks.len() < n {
                            let k = pool[(next() % pool.len() as u64) as usize].clone();
                            if !ks.contains(&k) {
                                ks.push(k);
                            }
                        }
                        let v = format!("t{t}-{i}");
                        let mut m = cmd("MSETNX");
                        for k in &ks {
                            m.arg(k).arg(&v);
                        }
                        let r: i64 = m.query(&mut c).unwrap();
                        done.push((v, ks, r));
                    }
                    done
                })
            })
            .collect();
        let results: Vec<(String, Vec<String>, i64)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let mut c = s.client();
        let mut winners: HashMap<String, Vec<String>> = HashMap::new();
        for (v, ks, r) in &results {
            assert!(*r == 0 || *r == 1, "{r}");
            if *r == 1 {
                winners.insert(v.clone(), ks.clone());
                for k in ks {
                    assert_eq!(
                        get(&mut c, k).as_ref(),
                        Some(v),
                        "round {round}: {k} of {v}"
                    );
                }
            }
        }
        assert!(!winners.is_empty());
        for k in &pool {
            if let Some(v) = get(&mut c, k) {
                let ks = winners
                    .get(&v)
                    .unwrap_or_else(|| panic!("{k} = {v}, from an MSETNX that answered 0"));
                assert!(ks.contains(k));
            }
        }
        let () = cmd("FLUSHALL").query(&mut c).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Redis runs every command whole: a reader never sees an MSET over several workers half
/// applied (MGET mixing two MSETs, or an MSET and a DEL), nor DBSIZE or KEYS counting half a
/// DEL. Writers overwrite and delete one group of keys spread over every worker while
/// readers check that each read is of one moment.
#[test]
fn mset_over_several_workers_is_never_seen_half_applied() {
    let s = server();
    let keys = spread_keys("whole:", 8);
    let started = Instant::now();
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let mut c = s.client();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let keys = keys.clone();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    if (i + t) % 7 == 0 {
                        let () = cmd("DEL").arg(&keys).query(&mut c).unwrap();
                    } else {
                        let v = format!("t{t}-{i}");
                        let mut m = cmd("MSET");
                        for k in &keys {
                            m.arg(k).arg(&v);
                        }
                        let () = m.query(&mut c).unwrap();
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3u64)
        .map(|t| {
            let mut c = s.client();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let keys = keys.clone();
            std::thread::spawn(move || {
                let mut seen = HashSet::new();
                for i in 0..300 {
                    let values: Vec<Option<String>> = cmd("MGET").arg(&keys).query(&mut c).unwrap();
                    assert!(
                        values.iter().all(|v| *v == values[0]),
                        "reader {t}, read {i}: MGET saw a write halfway: {values:?}"
                    );
                    seen.insert(values[0].clone());
                    let n: usize = match i % 3 {
                        0 => cmd("DBSIZE").query(&mut c).unwrap(),
                        1 => cmd("EXISTS").arg(&keys).query(&mut c).unwrap(),
                        _ => {
                            let ks: Vec<String> = cmd("KEYS").arg("whole:*").query(&mut c).unwrap();
                            ks.len()
                        }
                    };
                    assert!(
                        n == 0 || n == keys.len(),
                        "reader {t}, read {i}: counted {n} keys"
                    );
                }
                seen.len()
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let distinct: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    // The readers ran alongside the writers, not all before or after them.
    assert!(distinct > 3, "readers saw only {distinct} states");
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// Multi-key commands over several workers, pipelined with single-key ones, answer as if
/// run one after another in the order sent (each sees every command before it).
#[test]
fn pipelined_multi_key_commands_over_several_workers_run_in_order() {
    let s = server();
    let keys = spread_keys("order:", 8);
    let mut c = s.client();
    let mut pipe = redis::pipe();
    for i in 0..150 {
        let v = format!("v{i}");
        let mut m = cmd("MSET");
        for k in &keys {
            m.arg(k).arg(&v);
        }
        pipe.add_command(m);
        pipe.cmd("MGET").arg(&keys);
        pipe.cmd("GET").arg(&keys[i % keys.len()]);
        pipe.cmd("APPEND").arg(&keys[(i + 1) % keys.len()]).arg("+");
        pipe.cmd("MGET").arg(&keys);
        if i % 5 == 4 {
            pipe.cmd("DEL").arg(&keys[..3]);
            pipe.cmd("EXISTS").arg(&keys);
        }
    }
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    let mut r = replies.into_iter();
    let mut next = || r.next().expect("a reply per command");
    let text = |v: &Value| -> Option<String> { redis::from_redis_value(v.clone()).unwrap() };
    for i in 0..150 {
        let v = format!("v{i}");
        assert_eq!(next(), Value::Okay, "MSET {i}");
        let all: Vec<Option<String>> = redis::from_redis_value(next()).unwrap();
        assert!(
            all.iter().all(|x| x.as_deref() == Some(v.as_str())),
            "MGET {i}: {all:?}"
        );
        assert_eq!(text(&next()).as_deref(), Some(v.as_str()), "GET {i}");
        let n: usize = redis::from_redis_value(next()).unwrap();
        assert_eq!(n, v.len() + 1, "APPEND {i}");
        let all: Vec<Option<String>> = redis::from_redis_value(next()).unwrap();
        for (j, x) in all.iter().enumerate() {
            let want = if j == (i + 1) % keys.len() {
                format!("{v}+")
            } else {
                v.clone()
            };
            assert_eq!(
                x.as_deref(),
                Some(want.as_str()),
                "MGET after APPEND {i}, key {j}"
            );
        }
        if i % 5 == 4 {
            let n: usize = redis::from_redis_value(next()).unwrap();
            assert_eq!(n, 3, "DEL {i}");
            let n: usize = redis::from_redis_value(next()).unwrap();
            assert_eq!(n, keys.len() - 3, "EXISTS {i}");
        }
    }
}

/// BITOP and LCS over keys on several workers read one moment, as in Redis: with two keys
/// always set together to one value, XOR is all zeros and the LCS is the whole value.
#[test]
fn bitop_and_lcs_over_several_workers_read_one_moment() {
    let s = server();
    let workers = |k: &str| worker_of(k.as_bytes(), PARTITIONS, WORKERS);
    let keys = spread_keys("pair:", WORKERS as usize);
    let (a, b) = (keys[0].clone(), keys[1].clone());
    assert_ne!(workers(&a), workers(&b));
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let mut c = s.client();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                for i in 0..400u64 {
                    let v = format!("{t}{i:05}");
                    let () = cmd("MSET")
                        .arg(&a)
                        .arg(&v)
                        .arg(&b)
                        .arg(&v)
                        .query(&mut c)
                        .unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|t| {
            let mut c = s.client();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let (a, b) = (a.clone(), b.clone());
            // A destination on yet another worker where there is one.
            let dest = spread_keys(&format!("xor{t}:"), WORKERS as usize)
                .into_iter()
                .find(|k| workers(k) != workers(&a) && workers(k) != workers(&b))
                .unwrap_or_else(|| format!("xor{t}"));
            std::thread::spawn(move || {
                for i in 0..200 {
                    let len: usize = cmd("BITOP")
                        .arg("XOR")
                        .arg(&dest)
                        .arg(&a)
                        .arg(&b)
                        .query(&mut c)
                        .unwrap();
                    let x: Option<Vec<u8>> = cmd("GET").arg(&dest).query(&mut c).unwrap();
                    let x = x.unwrap_or_default();
                    assert_eq!(x.len(), len, "reader {t}, read {i}");
                    assert!(
                        x.iter().all(|&b| b == 0),
                        "reader {t}, read {i}: BITOP mixed two writes: {x:?}"
                    );
                    let common: usize =
                        cmd("LCS").arg(&a).arg(&b).arg("LEN").query(&mut c).unwrap();
                    assert!(
                        common == 0 || common == 6,
                        "reader {t}, read {i}: LCS mixed two writes ({common})"
                    );
                }
            })
        })
        .collect();
    for w in writers.into_iter().chain(readers) {
        w.join().unwrap();
    }
}

#[test]
fn del_unlink_exists_count_across_workers() {
    let s = server();
    let mut c = s.client();
    let keys = spread_keys("d:", 40);
    for k in &keys {
        set(&mut c, k, "v");
    }
    let mut ex = cmd("EXISTS");
    ex.arg(&keys).arg(&keys[0]).arg(&keys[1]).arg("nope");
    assert_eq!(int(&mut c, &mut ex), 42, "EXISTS counts duplicates");
    // TOUCH counts as EXISTS does (no access times are kept to update).
    let mut touch = cmd("TOUCH");
    touch.arg(&keys).arg(&keys[0]).arg("nope");
    assert_eq!(int(&mut c, &mut touch), 41);
    let mut del = cmd("DEL");
    del.arg(&keys[..20]).arg(&keys[0]).arg("nope");
    assert_eq!(int(&mut c, &mut del), 20, "DEL counts each key once");
    let mut unl = cmd("UNLINK");
    unl.arg(&keys[10..]).arg("nope");
    assert_eq!(int(&mut c, &mut unl), 20);
    let mut ex = cmd("EXISTS");
    ex.arg(&keys);
    assert_eq!(int(&mut c, &mut ex), 0);
    assert_eq!(int(&mut c, &mut cmd("DBSIZE")), 0);
    assert_eq!(
        query_err(&mut c, &cmd("DEL")),
        "ERR wrong number of arguments for 'del' command"
    );
}

#[test]
fn expire_family_with_nx_xx_gt_lt_and_ttl_replies() {
    let s = server();
    let mut c = s.client();
    assert_eq!(int(&mut c, cmd("TTL").arg("missing")), -2);
    assert_eq!(int(&mut c, cmd("PTTL").arg("missing")), -2);
    assert_eq!(int(&mut c, cmd("EXPIRETIME").arg("missing")), -2);
    assert_eq!(int(&mut c, cmd("PEXPIRETIME").arg("missing")), -2);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("missing").arg(10)), 0);
    assert_eq!(int(&mut c, cmd("PERSIST").arg("missing")), 0);
    set(&mut c, "k", "v");
    assert_eq!(int(&mut c, cmd("TTL").arg("k")), -1);
    assert_eq!(int(&mut c, cmd("PTTL").arg("k")), -1);
    assert_eq!(int(&mut c, cmd("EXPIRETIME").arg("k")), -1);
    assert_eq!(int(&mut c, cmd("PERSIST").arg("k")), 0);
    // No TTL counts as infinite: XX and GT refuse, NX and LT set.
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(100).arg("XX")), 0);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(100).arg("GT")), 0);
    assert_eq!(int(&mut c, cmd("TTL").arg("k")), -1);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(100).arg("LT")), 1);
    assert_eq!(int(&mut c, cmd("PERSIST").arg("k")), 1);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(100).arg("NX")), 1);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(200).arg("NX")), 0);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(200).arg("xx")), 1);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(100).arg("gt")), 0);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(300).arg("GT")), 1);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(400).arg("LT")), 0);
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(150).arg("LT")), 1);
    let ttl = int(&mut c, cmd("TTL").arg("k"));
    assert!((149..=150).contains(&ttl), "{ttl}");
    assert_eq!(int(&mut c, cmd("PEXPIRE").arg("k").arg(120_000)), 1);
    let pttl = int(&mut c, cmd("PTTL").arg("k"));
    assert!((115_000..=120_000).contains(&pttl), "{pttl}");
    let at = now_ms() / 1000 + 1000;
    assert_eq!(int(&mut c, cmd("EXPIREAT").arg("k").arg(at)), 1);
    assert_eq!(int(&mut c, cmd("EXPIRETIME").arg("k")), at);
    assert_eq!(int(&mut c, cmd("PEXPIRETIME").arg("k")), at * 1000);
    let at_ms = now_ms() + 777_777;
    assert_eq!(int(&mut c, cmd("PEXPIREAT").arg("k").arg(at_ms)), 1);
    assert_eq!(int(&mut c, cmd("PEXPIRETIME").arg("k")), at_ms);
    assert_eq!(
        int(&mut c, cmd("PEXPIREAT").arg("k").arg(at_ms + 1).arg("LT")),
        0
    );
    assert_eq!(int(&mut c, cmd("PERSIST").arg("k")), 1);
    assert_eq!(int(&mut c, cmd("TTL").arg("k")), -1);
    // Errors.
    assert_eq!(
        query_err(&mut c, cmd("EXPIRE").arg("k").arg(10).arg("NX").arg("XX")),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        query_err(&mut c, cmd("EXPIRE").arg("k").arg(10).arg("GT").arg("LT")),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        query_err(&mut c, cmd("EXPIRE").arg("k").arg(10).arg("bogus")),
        "ERR Unsupported option bogus"
    );
    assert_eq!(
        query_err(&mut c, cmd("EXPIRE").arg("k").arg("ten")),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        query_err(&mut c, cmd("EXPIRE").arg("k").arg(i64::MAX)),
        "ERR invalid expire time in 'expire' command"
    );
    // A time in the past deletes the key at once.
    assert_eq!(int(&mut c, cmd("EXPIRE").arg("k").arg(-1)), 1);
    assert_eq!(int(&mut c, cmd("EXISTS").arg("k")), 0);
    assert_eq!(int(&mut c, cmd("TTL").arg("k")), -2);
    set(&mut c, "k2", "v");
    assert_eq!(int(&mut c, cmd("PEXPIREAT").arg("k2").arg(1)), 1);
    assert_eq!(get(&mut c, "k2"), None);
}

#[test]
fn keys_expire_when_read_and_when_nobody_reads_them() {
    let s = server_with(&["--set", "server.hz=50"]);
    let mut c = s.client();
    // Lazy: a read after the deadline finds nothing.
    let () = cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(150)
        .query(&mut c)
        .unwrap();
    assert_eq!(get(&mut c, "short").as_deref(), Some("v"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&mut c, "short"), None);
    assert_eq!(int(&mut c, cmd("TTL").arg("short")), -2);
    assert_eq!(int(&mut c, cmd("EXISTS").arg("short")), 0);

    // Active: keys nobody reads on every worker disappear from DBSIZE by themselves.
    let keys = spread_keys("vol:", 200);
    let mut p = redis::pipe();
    for k in &keys {
        p.cmd("SET").arg(k).arg("v").arg("PX").arg(200).ignore();
    }
    for i in 0..10 {
        p.cmd("SET").arg(format!("stay:{i}")).arg("v").ignore();
    }
    let () = p.query(&mut c).unwrap();
    assert_eq!(int(&mut c, &mut cmd("DBSIZE")), 210);
    // INFO's expires count may lag a little behind DBSIZE (the engine prunes its list of
    // keys with a TTL lazily), but it gets there too.
    let ok = wait_until(Duration::from_secs(10), || {
        int(&mut c, &mut cmd("DBSIZE")) == 10
            && info(&mut c, "keyspace")["db0"] == "keys=10,expires=0,avg_ttl=0"
    });
    assert!(
        ok,
        "DBSIZE still {} after active expiry had time to run",
        int(&mut c, &mut cmd("DBSIZE"))
    );
    let stats = info(&mut c, "stats");
    let expired: u64 = stats["expired_keys"].parse().unwrap();
    assert!(expired >= 200, "expired_keys {expired}");
    let ks = info(&mut c, "keyspace");
    assert_eq!(ks["db0"], "keys=10,expires=0,avg_ttl=0");
}

#[test]
fn counters_and_type_follow_redis_rules() {
    let s = server();
    let mut c = s.client();
    let t: String = cmd("TYPE").arg("nothing").query(&mut c).unwrap();
    assert_eq!(t, "none");
    set(&mut c, "s", "x");
    let t: String = cmd("TYPE").arg("s").query(&mut c).unwrap();
    assert_eq!(t, "string");

    assert_eq!(int(&mut c, cmd("INCR").arg("n")), 1);
    assert_eq!(int(&mut c, cmd("INCRBY").arg("n").arg(41)), 42);
    assert_eq!(int(&mut c, cmd("DECR").arg("n")), 41);
    assert_eq!(int(&mut c, cmd("DECRBY").arg("n").arg(50)), -9);
    assert_eq!(int(&mut c, cmd("INCRBY").arg("n").arg(-1)), -10);
    assert_eq!(get(&mut c, "n").as_deref(), Some("-10"));
    // Counters keep the TTL.
    let () = cmd("SETEX")
        .arg("t")
        .arg(100)
        .arg("5")
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("INCR").arg("t")), 6);
    assert!(int(&mut c, cmd("TTL").arg("t")) > 90);
    let not_int = "ERR value is not an integer or out of range";
    assert_eq!(query_err(&mut c, cmd("INCR").arg("s")), not_int);
    set(&mut c, "sp", " 1");
    assert_eq!(query_err(&mut c, cmd("INCR").arg("sp")), not_int);
    assert_eq!(
        query_err(&mut c, cmd("INCRBY").arg("n").arg("1.5")),
        not_int
    );
    assert_eq!(query_err(&mut c, cmd("DECRBY").arg("n").arg("x")), not_int);
    set(&mut c, "max", &i64::MAX.to_string());
    assert_eq!(
        query_err(&mut c, cmd("INCR").arg("max")),
        "ERR increment or decrement would overflow"
    );
    set(&mut c, "min", &i64::MIN.to_string());
    assert_eq!(
        query_err(&mut c, cmd("DECR").arg("min")),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        query_err(&mut c, cmd("DECRBY").arg("n").arg(i64::MIN)),
        "ERR decrement would overflow"
    );
    assert_eq!(get(&mut c, "max"), Some(i64::MAX.to_string()));

    let f: String = cmd("INCRBYFLOAT")
        .arg("f")
        .arg("10.5")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.5");
    let f: String = cmd("INCRBYFLOAT")
        .arg("f")
        .arg("0.1")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "10.6");
    let f: String = cmd("INCRBYFLOAT").arg("f").arg("-5").query(&mut c).unwrap();
    assert_eq!(f, "5.6");
    set(&mut c, "e", "5.0e3");
    let f: String = cmd("INCRBYFLOAT")
        .arg("e")
        .arg("2.0e2")
        .query(&mut c)
        .unwrap();
    assert_eq!(f, "5200");
    let f: String = cmd("INCRBYFLOAT").arg("n").arg("1").query(&mut c).unwrap();
    assert_eq!(f, "-9");
    assert_eq!(
        query_err(&mut c, cmd("INCRBYFLOAT").arg("s").arg("1")),
        "ERR value is not a valid float"
    );
    assert_eq!(
        query_err(&mut c, cmd("INCRBYFLOAT").arg("f").arg("abc")),
        "ERR value is not a valid float"
    );
    assert_eq!(
        query_err(&mut c, cmd("INCRBYFLOAT").arg("f").arg("inf")),
        "ERR increment would produce NaN or Infinity"
    );
    assert_eq!(get(&mut c, "f").as_deref(), Some("5.6"));
}

#[test]
fn string_range_commands_follow_redis_rules() {
    let s = server();
    let mut c = s.client();
    assert_eq!(int(&mut c, cmd("APPEND").arg("a").arg("Hello")), 5);
    assert_eq!(int(&mut c, cmd("APPEND").arg("a").arg(" World")), 11);
    assert_eq!(int(&mut c, cmd("STRLEN").arg("a")), 11);
    assert_eq!(int(&mut c, cmd("STRLEN").arg("missing")), 0);
    let r = |c: &mut Connection, a: i64, b: i64| -> String {
        cmd("GETRANGE").arg("a").arg(a).arg(b).query(c).unwrap()
    };
    assert_eq!(r(&mut c, 0, 4), "Hello");
    assert_eq!(r(&mut c, -5, -1), "World");
    assert_eq!(r(&mut c, 0, -1), "Hello World");
    assert_eq!(r(&mut c, 5, 1), "");
    assert_eq!(r(&mut c, 0, 100), "Hello World");
    assert_eq!(r(&mut c, 100, 200), "");
    assert_eq!(r(&mut c, -100, 2), "Hel");
    let sub: String = cmd("SUBSTR").arg("a").arg(6).arg(7).query(&mut c).unwrap();
    assert_eq!(sub, "Wo");
    let v: String = cmd("GETRANGE")
        .arg("missing")
        .arg(0)
        .arg(5)
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "");
    assert_eq!(
        int(&mut c, cmd("SETRANGE").arg("a").arg(6).arg("Redis")),
        11
    );
    assert_eq!(get(&mut c, "a").as_deref(), Some("Hello Redis"));
    assert_eq!(int(&mut c, cmd("SETRANGE").arg("z").arg(3).arg("ab")), 5);
    let v: Vec<u8> = cmd("GET").arg("z").query(&mut c).unwrap();
    assert_eq!(v, b"\0\0\0ab");
    assert_eq!(int(&mut c, cmd("SETRANGE").arg("empty").arg(0).arg("")), 0);
    assert_eq!(int(&mut c, cmd("EXISTS").arg("empty")), 0);
    assert_eq!(
        query_err(&mut c, cmd("SETRANGE").arg("a").arg(-1).arg("x")),
        "ERR offset is out of range"
    );
    assert_eq!(
        query_err(&mut c, cmd("SETRANGE").arg("a").arg(536_870_912).arg("x")),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(
        query_err(&mut c, cmd("GETRANGE").arg("a").arg("x").arg(1)),
        "ERR value is not an integer or out of range"
    );
    // APPEND and SETRANGE keep the TTL.
    let () = cmd("SETEX")
        .arg("t")
        .arg(100)
        .arg("v")
        .query(&mut c)
        .unwrap();
    int(&mut c, cmd("APPEND").arg("t").arg("w"));
    int(&mut c, cmd("SETRANGE").arg("t").arg(0).arg("x"));
    assert!(int(&mut c, cmd("TTL").arg("t")) > 90);
    assert_eq!(get(&mut c, "t").as_deref(), Some("xw"));
}

#[test]
fn binary_safe_keys_and_values() {
    let s = server();
    let mut c = s.client();
    let keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\0".to_vec(),
        b"a\0b".to_vec(),
        b"line\r\nbreak".to_vec(),
        b"\xff\xfe\x80".to_vec(),
        b"*1\r\n$4\r\nPING\r\n".to_vec(),
        (0..=255u8).collect(),
    ];
    let value: Vec<u8> = (0..=255u8).rev().chain(*b"\r\n$-1\r\n\0").collect();
    for (i, k) in keys.iter().enumerate() {
        let mut v = value.clone();
        v.push(i as u8);
        let () = cmd("SET").arg(k).arg(&v).query(&mut c).unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        let mut v = value.clone();
        v.push(i as u8);
        let got: Vec<u8> = cmd("GET").arg(k).query(&mut c).unwrap();
        assert_eq!(got, v, "key {k:?}");
        assert_eq!(int(&mut c, cmd("STRLEN").arg(k)), v.len() as i64);
    }
    let got: Vec<Option<Vec<u8>>> = cmd("MGET").arg(&keys).query(&mut c).unwrap();
    assert_eq!(got.len(), keys.len());
    assert!(got.iter().all(|v| v.is_some()));
    let mut all: Vec<Vec<u8>> = cmd("KEYS").arg("*").query(&mut c).unwrap();
    all.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(all, want);
    // An empty value is a value.
    let () = cmd("SET").arg("ev").arg("").query(&mut c).unwrap();
    let got: Option<Vec<u8>> = cmd("GET").arg("ev").query(&mut c).unwrap();
    assert_eq!(got, Some(Vec::new()));
    assert_eq!(int(&mut c, cmd("DEL").arg(&keys)), keys.len() as i64);
}

#[test]
fn keyspace_commands_see_every_worker_and_flush_empties_all() {
    let s = server();
    let mut c = s.client();
    let r: Option<String> = cmd("RANDOMKEY").query(&mut c).unwrap();
    assert_eq!(r, None);
    let keys = spread_keys("user:", 50);
    for k in &keys {
        set(&mut c, k, "v");
    }
    for i in 0..7 {
        set(&mut c, &format!("other:{i}"), "v");
    }
    assert_eq!(int(&mut c, &mut cmd("DBSIZE")), 57);
    let mut got: Vec<String> = cmd("KEYS").arg("user:*").query(&mut c).unwrap();
    got.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want);
    let got: Vec<String> = cmd("KEYS").arg("other:[0-2]").query(&mut c).unwrap();
    assert_eq!(got.len(), 3);
    let got: Vec<String> = cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert_eq!(got.len(), 57);
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let k: String = cmd("RANDOMKEY").query(&mut c).unwrap();
        assert!(k.starts_with("user:") || k.starts_with("other:"), "{k}");
        seen.insert(worker_of(k.as_bytes(), PARTITIONS, WORKERS));
    }
    assert!(seen.len() > 1, "RANDOMKEY draws from several workers");
    let () = cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(int(&mut c, &mut cmd("DBSIZE")), 0);
    let got: Vec<String> = cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(got.is_empty());
    for k in &keys {
        set(&mut c, k, "v");
    }
    let () = cmd("FLUSHALL").arg("SYNC").query(&mut c).unwrap();
    assert_eq!(int(&mut c, &mut cmd("DBSIZE")), 0);
    assert_eq!(get(&mut c, &keys[0]), None);
    let () = cmd("FLUSHALL").arg("ASYNC").query(&mut c).unwrap();
    assert_eq!(
        query_err(&mut c, cmd("FLUSHDB").arg("bogus")),
        "ERR syntax error"
    );
}

/// One SCAN call: the next cursor and the keys.
fn scan_page(
    c: &mut Connection,
    cursor: &str,
    pattern: Option<&str>,
    count: usize,
) -> (String, Vec<String>) {
    let mut q = cmd("SCAN");
    q.arg(cursor);
    if let Some(p) = pattern {
        q.arg("MATCH").arg(p);
    }
    q.arg("COUNT").arg(count);
    q.query(c).unwrap()
}

fn scan_all(c: &mut Connection, pattern: Option<&str>, count: usize) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    let mut calls = 0;
    loop {
        let (next, keys) = scan_page(c, &cursor, pattern, count);
        out.extend(keys);
        calls += 1;
        assert!(calls < 100_000, "SCAN does not terminate");
        if next == "0" {
            return out;
        }
        cursor = next;
    }
}

#[test]
fn scan_returns_every_key_exactly_once() {
    let s = server();
    let mut c = s.client();
    let keys = spread_keys("user:", 1000);
    let mut p = redis::pipe();
    for k in &keys {
        p.cmd("SET").arg(k).arg("v").ignore();
    }
    for i in 0..300 {
        p.cmd("SET").arg(format!("other:{i}")).arg("v").ignore();
    }
    let () = p.query(&mut c).unwrap();
    let want: HashSet<String> = keys.iter().cloned().collect();
    for count in [1, 7, 100, 5000] {
        let got = scan_all(&mut c, Some("user:*"), count);
        let set: HashSet<String> = got.iter().cloned().collect();
        assert_eq!(got.len(), set.len(), "COUNT {count}: duplicates");
        assert_eq!(set, want, "COUNT {count}");
    }
    let all = scan_all(&mut c, None, 10);
    assert_eq!(all.len(), 1300);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 1300);
    // COUNT is the work per call across partitions and workers: a large one takes the whole
    // (small) keyspace in one call, and a call on an empty keyspace ends at once.
    let (next, got) = scan_page(&mut c, "0", None, 10_000);
    assert_eq!((next.as_str(), got.len()), ("0", 1300));
    let (next, got) = scan_page(&mut c, "0", Some("other:*"), 10_000);
    assert_eq!((next.as_str(), got.len()), ("0", 300));
    let (next, got) = scan_page(&mut c, "0", None, 100);
    assert_ne!(next, "0");
    assert!(
        (1..=100).contains(&got.len()),
        "{} keys for COUNT 100",
        got.len()
    );
    let empty = server();
    let (next, got): (String, Vec<String>) = cmd("SCAN").arg(0).query(&mut empty.client()).unwrap();
    assert_eq!((next.as_str(), got.len()), ("0", 0));
    // TYPE string is everything; any other type nothing.
    let (_, k): (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("list")
        .query(&mut c)
        .unwrap();
    assert!(k.is_empty());
    assert_eq!(
        query_err(&mut c, cmd("SCAN").arg("abc")),
        "ERR invalid cursor"
    );
    // As Redis's strtoul: -1 is the largest cursor (the iteration is over), "" is 0.
    let (next, k): (String, Vec<String>) = cmd("SCAN").arg(-1).query(&mut c).unwrap();
    assert_eq!((next.as_str(), k.len()), ("0", 0));
    assert_eq!(
        query_err(&mut c, cmd("SCAN").arg(0).arg("COUNT").arg(0)),
        "ERR syntax error"
    );
    assert_eq!(
        query_err(&mut c, cmd("SCAN").arg(0).arg("MATCH")),
        "ERR syntax error"
    );
}

#[test]
fn info_sections_have_their_fields() {
    let s = server();
    let mut c = s.client();
    set(&mut c, "a", "1");
    let () = cmd("SETEX")
        .arg("b")
        .arg(100)
        .arg("1")
        .query(&mut c)
        .unwrap();
    // Key lookups as Redis counts them: GET, STRLEN, GETRANGE, TTL, TYPE, MGET and EXISTS
    // per key, SET ... GET; not INCR or SET.
    let _ = get(&mut c, "a");
    let _ = get(&mut c, "nope");
    int(&mut c, cmd("STRLEN").arg("nope"));
    let _: String = cmd("GETRANGE")
        .arg("nope")
        .arg(0)
        .arg(1)
        .query(&mut c)
        .unwrap();
    int(&mut c, cmd("TTL").arg("b"));
    let _: String = cmd("TYPE").arg("nope").query(&mut c).unwrap();
    let _: Vec<Option<String>> = cmd("MGET")
        .arg("a")
        .arg("nope")
        .arg("b")
        .query(&mut c)
        .unwrap();
    int(&mut c, cmd("EXISTS").arg("a").arg("nope"));
    int(&mut c, cmd("INCR").arg("ctr"));
    let _: Option<String> = cmd("SET")
        .arg("a")
        .arg("1")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    int(&mut c, cmd("DEL").arg("ctr"));
    let all: String = cmd("INFO").query(&mut c).unwrap();
    for h in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Errorstats",
        "# Keyspace",
    ] {
        assert!(all.contains(h), "INFO has {h}");
    }
    let num = |m: &HashMap<String, String>, k: &str| -> u64 {
        m.get(k)
            .unwrap_or_else(|| panic!("field {k} missing"))
            .parse()
            .unwrap_or_else(|_| panic!("field {k} = {:?} is not a number", m[k]))
    };
    let srv = info(&mut c, "server");
    assert_eq!(srv["redis_version"], "7.0.15");
    assert_eq!(srv["redis_mode"], "standalone");
    assert_eq!(num(&srv, "tcp_port"), s.port as u64);
    assert_eq!(num(&srv, "process_id"), s.pid() as u64);
    assert_eq!(srv["run_id"].len(), 40);
    num(&srv, "uptime_in_seconds");
    assert!(
        !srv.contains_key("connected_clients"),
        "only the asked section"
    );
    let cl = info(&mut c, "clients");
    assert_eq!(num(&cl, "connected_clients"), 1);
    assert_eq!(num(&cl, "maxclients"), 10000);
    assert_eq!(num(&cl, "tracking_clients"), 0);
    assert_eq!(num(&cl, "clients_in_timeout_table"), 0);
    // Another connection half way through a 100 kB value: the largest query buffer.
    let mut half = s.raw();
    half.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nh\r\n$100000\r\n")
        .unwrap();
    half.write_all(&[b'x'; 60_000]).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        num(&info(&mut c, "clients"), "client_recent_max_input_buffer") >= 60_000
    }));
    num(&cl, "client_recent_max_output_buffer");
    let st = info(&mut c, "stats");
    assert!(num(&st, "total_commands_processed") >= 5);
    assert!(num(&st, "total_connections_received") >= 1);
    assert_eq!(num(&st, "keyspace_hits"), 6);
    assert_eq!(num(&st, "keyspace_misses"), 6);
    num(&st, "expired_keys");
    num(&st, "rejected_connections");
    // Instantaneous rates, sampled every 100 ms as Redis does: above zero while commands flow.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        let _: String = cmd("PING").query(&mut c).unwrap();
    }
    let st = info(&mut c, "stats");
    for k in [
        "instantaneous_ops_per_sec",
        "instantaneous_input_kbps",
        "instantaneous_output_kbps",
    ] {
        let v: f64 = st[k]
            .parse()
            .unwrap_or_else(|_| panic!("{k} = {:?}", st[k]));
        assert!(v > 0.0, "{k} = {v}");
    }
    let pe = info(&mut c, "persistence");
    assert_eq!(num(&pe, "aof_enabled"), 1);
    assert_eq!(num(&pe, "loading"), 0);
    assert_eq!(pe["aof_last_write_status"], "ok");
    assert_eq!(pe["appendfsync"], "everysec");
    let ks = info(&mut c, "keyspace");
    assert_eq!(ks["db0"], "keys=2,expires=1,avg_ttl=0");
    assert!(num(&st, "total_reads_processed") >= 10);
    assert!(num(&st, "total_writes_processed") >= 10);
    assert!(num(&pe, "aof_current_size") > 0);
    let re = info(&mut c, "replication");
    assert_eq!(re["role"], "master");
    assert_eq!(num(&re, "connected_slaves"), 0);
    assert_eq!(re["master_replid"].len(), 40);
    assert_eq!(re["master_replid2"], "0".repeat(40));
    assert_eq!(num(&re, "repl_backlog_active"), 0);
    let me = info(&mut c, "memory");
    assert!(num(&me, "used_memory") > 0);
    assert_eq!(
        num(&me, "used_memory_overhead") + num(&me, "used_memory_dataset"),
        num(&me, "used_memory")
    );
    assert!(num(&me, "used_memory_dataset") > 0, "the keydir holds keys");
    assert_eq!(num(&me, "maxmemory"), 0);
    assert!(num(&me, "total_system_memory") > num(&me, "used_memory"));
    assert!(
        num(&me, "used_memory_peak") >= num(&me, "used_memory"),
        "{me:?}"
    );
    assert!(num(&me, "used_memory_startup") > 0, "{me:?}");
    // Error replies, counted by kind, whichever worker answered them.
    assert_eq!(num(&info(&mut c, "stats"), "total_error_replies"), 0);
    for key in ["a", "b", "c", "d"] {
        let r: redis::RedisResult<String> = cmd("INCRBYFLOAT").arg(key).arg("x").query(&mut c);
        assert!(r.is_err());
    }
    let r: redis::RedisResult<String> = cmd("NOSUCHCOMMAND").query(&mut c);
    assert!(r.is_err());
    assert_eq!(num(&info(&mut c, "stats"), "total_error_replies"), 5);
    let es = info(&mut c, "errorstats");
    assert_eq!(es["errorstat_ERR"], "count=5");
    // CONFIG RESETSTAT zeroes the counters of every worker, not only this connection's.
    for i in 0..64 {
        let _ = get(&mut c, &format!("missing:{i}"));
    }
    assert!(num(&info(&mut c, "stats"), "keyspace_misses") >= 64);
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let st = info(&mut c, "stats");
    assert_eq!(num(&st, "keyspace_misses"), 0);
    assert_eq!(num(&st, "keyspace_hits"), 0);
    assert_eq!(num(&st, "total_error_replies"), 0);
    assert!(num(&st, "total_commands_processed") <= 2);
    assert!(!info(&mut c, "errorstats").contains_key("errorstat_ERR"));
    // Within one pipeline: INFO counts the errors sent before it, RESETSTAT clears them
    // (errors this worker answered itself; one answered by another worker is counted when
    // its answer is written out).
    let mut raw = s.raw();
    raw.write_all(b"NOSUCH\r\nGET\r\nINFO stats\r\nCONFIG RESETSTAT\r\nINFO stats\r\nQUIT\r\n")
        .unwrap();
    let (out, closed) = read_to_eof(&mut raw, Duration::from_secs(10));
    assert!(closed);
    let out = String::from_utf8_lossy(&out);
    let counts: Vec<&str> = out
        .split("total_error_replies:")
        .skip(1)
        .map(|rest| rest.split("\r\n").next().unwrap())
        .collect();
    assert_eq!(counts, ["2", "0"], "{out}");
    let cpu = info(&mut c, "cpu");
    for k in ["used_cpu_sys", "used_cpu_user", "used_cpu_sys_children"] {
        let v: f64 = cpu[k]
            .parse()
            .unwrap_or_else(|_| panic!("{k} = {:?}", cpu[k]));
        assert!(v >= 0.0);
    }
    let busy: f64 =
        cpu["used_cpu_sys"].parse::<f64>().unwrap() + cpu["used_cpu_user"].parse::<f64>().unwrap();
    assert!(busy > 0.0, "{cpu:?}");
    let srv = info(&mut c, "server");
    assert_eq!(srv["configured_hz"], srv["hz"]);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(num(&srv, "server_time_usec").abs_diff(now_us) < 60_000_000);
    // Several sections at once, any case.
    let two: String = cmd("INFO")
        .arg("SERVER")
        .arg("Keyspace")
        .query(&mut c)
        .unwrap();
    assert!(two.contains("# Server") && two.contains("# Keyspace"));
    assert!(!two.contains("# Clients"));
}

/// CONFIG SETs sent at the same moment from connections on different workers leave every
/// worker with the same settings (each worker used to apply them in the order they reached
/// it, which could differ: a race seen in about one round in fifteen).
#[test]
fn simultaneous_config_sets_leave_every_worker_with_the_same_settings() {
    let s = server();
    let get_on_many = || -> HashSet<String> {
        (0..24)
            .map(|_| {
                let mut c = s.client();
                let v: Vec<String> = cmd("CONFIG")
                    .arg("GET")
                    .arg("maxclients")
                    .query(&mut c)
                    .unwrap();
                v[1].clone()
            })
            .collect()
    };
    for round in 0..60u32 {
        let conns: Vec<Connection> = (0..16).map(|_| s.client()).collect();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(conns.len()));
        let threads: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let () = cmd("CONFIG")
                        .arg("SET")
                        .arg("maxclients")
                        .arg(2000 + round * 16 + i as u32)
                        .query(&mut c)
                        .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let seen = get_on_many();
        assert_eq!(seen.len(), 1, "round {round}: workers disagree: {seen:?}");
    }
}

#[test]
fn config_get_reports_and_config_set_applies_or_refuses() {
    let s = server();
    let mut c = s.client();
    let get_cfg = |c: &mut Connection, p: &str| -> HashMap<String, String> {
        cmd("CONFIG").arg("GET").arg(p).query(c).unwrap()
    };
    // What redis-benchmark asks for at start.
    let v: HashMap<String, String> = cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .arg("appendonly")
        .query(&mut c)
        .unwrap();
    assert_eq!(v["save"], "");
    assert_eq!(v["appendonly"], "yes");
    assert_eq!(get_cfg(&mut c, "maxclients")["maxclients"], "10000");
    // A name without wildcards comes back as written, as Redis answers.
    assert_eq!(get_cfg(&mut c, "MAXCLIENTS")["MAXCLIENTS"], "10000");
    assert_eq!(get_cfg(&mut c, "MAX*")["maxclients"], "10000");
    // Asked for by client libraries at start-up.
    assert_eq!(
        get_cfg(&mut c, "maxmemory-policy")["maxmemory-policy"],
        "noeviction"
    );
    assert_eq!(
        get_cfg(&mut c, "notify-keyspace-events")["notify-keyspace-events"],
        ""
    );
    let g = get_cfg(&mut c, "max*");
    assert!(g.contains_key("maxclients"), "{g:?}");
    assert!(g.keys().all(|k| k.starts_with("max")), "{g:?}");
    assert_eq!(get_cfg(&mut c, "appendfsync")["appendfsync"], "everysec");
    assert!(get_cfg(&mut c, "no-such-setting").is_empty());

    // Runtime-changeable: takes effect.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(123)
        .query(&mut c)
        .unwrap();
    assert_eq!(get_cfg(&mut c, "maxclients")["maxclients"], "123");
    assert_eq!(info(&mut c, "clients")["maxclients"], "123");
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("pw")
        .query(&mut c)
        .unwrap();
    for _ in 0..4 {
        // New connections land on every worker in turn: each must ask for the password.
        let mut raw = s.raw();
        expect_reply(
            &mut raw,
            b"GET a\r\n",
            b"-NOAUTH Authentication required.\r\n",
        );
        expect_reply(&mut raw, b"AUTH pw\r\n", b"+OK\r\n");
    }
    set(&mut c, "still", "authed");
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query(&mut c)
        .unwrap();
    expect_reply(&mut s.raw(), b"GET still\r\n", b"$6\r\nauthed\r\n");

    // Immutable and invalid: refused with Redis's texts, nothing changes.
    assert_eq!(
        query_err(&mut c, cmd("CONFIG").arg("SET").arg("port").arg(1)),
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    );
    assert_eq!(
        query_err(&mut c, cmd("CONFIG").arg("SET").arg("nosuch").arg(1)),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
    let e = query_err(
        &mut c,
        cmd("CONFIG").arg("SET").arg("maxclients").arg("lots"),
    );
    assert!(
        e.starts_with("ERR CONFIG SET failed (possibly related to argument 'maxclients') - "),
        "{e}"
    );
    assert_eq!(get_cfg(&mut c, "maxclients")["maxclients"], "123");
    // Rules between settings hold for the end state, whatever the order of the pairs.
    for (a, b) in [
        ("proto-max-bulk-len", "client-query-buffer-limit"),
        ("client-query-buffer-limit", "proto-max-bulk-len"),
    ] {
        let () = cmd("CONFIG")
            .arg("SET")
            .arg(a)
            .arg("2gb")
            .arg(b)
            .arg("2gb")
            .query(&mut c)
            .unwrap();
        // Down again: the bulk limit to 512mb, the buffer to 1gb.
        let down = |n: &str| {
            if n == "proto-max-bulk-len" {
                "512mb"
            } else {
                "1gb"
            }
        };
        let () = cmd("CONFIG")
            .arg("SET")
            .arg(a)
            .arg(down(a))
            .arg(b)
            .arg(down(b))
            .query(&mut c)
            .unwrap_or_else(|e| panic!("{a} then {b}: {e}"));
    }
    assert_eq!(
        get_cfg(&mut c, "proto-max-bulk-len")["proto-max-bulk-len"],
        (512u64 << 20).to_string()
    );
    assert_eq!(
        query_err(&mut c, cmd("CONFIG").arg("SET").arg("maxclients")),
        "ERR wrong number of arguments for 'config|set' command"
    );
    assert_eq!(
        query_err(
            &mut c,
            cmd("CONFIG")
                .arg("SET")
                .arg("maxclients")
                .arg(5)
                .arg("timeout")
        ),
        "ERR syntax error",
        "as Redis 7 answers a name without its value"
    );
    assert_eq!(get_cfg(&mut c, "maxclients")["maxclients"], "123");
    assert_eq!(
        query_err(
            &mut c,
            cmd("CONFIG")
                .arg("SET")
                .arg("maxclients")
                .arg(5)
                .arg("MAXCLIENTS")
                .arg(6)
        ),
        "ERR CONFIG SET failed (possibly related to argument 'MAXCLIENTS') - duplicate parameter"
    );
    assert_eq!(get_cfg(&mut c, "maxclients")["maxclients"], "123");
    assert_eq!(
        query_err(
            &mut c,
            cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg("Ex?")
        ),
        "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - invalid value for server.notify_keyspace_events: \"Ex?\" (expected characters from Ag$lshzxeKEtmdn only)"
    );
    assert_eq!(
        query_err(&mut c, cmd("CONFIG").arg("bogus")),
        "ERR unknown subcommand 'bogus'. Try CONFIG HELP."
    );
}

#[test]
fn command_introspection_matches_the_command_table() {
    let s = server();
    let mut c = s.client();
    let n: i64 = cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    let all: Vec<Value> = cmd("COMMAND").query(&mut c).unwrap();
    assert_eq!(all.len() as i64, n);
    assert!(n >= 50, "{n}");
    let info: Vec<Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .arg("nosuchcmd")
        .arg("SET")
        .query(&mut c)
        .unwrap();
    assert_eq!(info.len(), 3);
    let Value::Array(get) = &info[0] else {
        panic!("{:?}", info[0])
    };
    assert_eq!(get[0], Value::BulkString(b"get".to_vec()));
    assert_eq!(get[1], Value::Int(2));
    assert_eq!(get[3], Value::Int(1));
    assert_eq!(get[4], Value::Int(1));
    assert_eq!(get[5], Value::Int(1));
    assert_eq!(info[1], Value::Nil);
    let Value::Array(set) = &info[2] else {
        panic!("{:?}", info[2])
    };
    assert_eq!(set[1], Value::Int(-3));
    // The transaction commands are in the table too (clients probe for them).
    let tx: Vec<Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("multi")
        .arg("exec")
        .arg("discard")
        .arg("watch")
        .arg("unwatch")
        .query(&mut c)
        .unwrap();
    assert!(tx.iter().all(|e| matches!(e, Value::Array(_))), "{tx:?}");
    let keys: Vec<String> = cmd("COMMAND")
        .arg("GETKEYS")
        .arg("watch")
        .arg("a")
        .arg("b")
        .query(&mut c)
        .unwrap();
    assert_eq!(keys, ["a", "b"]);
    let docs: Vec<Value> = cmd("COMMAND").arg("DOCS").arg("get").query(&mut c).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0], Value::BulkString(b"get".to_vec()));
    let Value::Array(doc) = &docs[1] else {
        panic!("{:?}", docs[1])
    };
    assert!(doc.contains(&Value::BulkString(b"summary".to_vec())));
    assert_eq!(
        query_err(&mut c, cmd("COMMAND").arg("COUNT").arg("x")),
        "ERR wrong number of arguments for 'command|count' command"
    );
    // Subcommands by their full names, as Redis 7.
    let info: Vec<Value> = cmd("COMMAND")
        .arg("INFO")
        .arg("object|encoding")
        .arg("CLIENT|ID")
        .arg("client|tracking")
        .query(&mut c)
        .unwrap();
    let Value::Array(enc) = &info[0] else {
        panic!("{:?}", info[0])
    };
    assert_eq!(enc[0], Value::BulkString(b"object|encoding".to_vec()));
    assert_eq!(enc[1], Value::Int(3));
    assert_eq!(enc[3], Value::Int(2), "first key after the subcommand");
    assert!(matches!(&info[1], Value::Array(_)), "{:?}", info[1]);
    assert_eq!(info[2], Value::Nil, "not implemented, so not listed");
    let docs: Vec<Value> = cmd("COMMAND")
        .arg("DOCS")
        .arg("memory|usage")
        .query(&mut c)
        .unwrap();
    assert_eq!(docs[0], Value::BulkString(b"memory|usage".to_vec()));
    // GETKEYS and GETKEYSANDFLAGS go by the (sub)command's key specs.
    let keys = |c: &mut Connection, line: &[&str]| -> Vec<Value> {
        let mut q = cmd("COMMAND");
        q.arg("GETKEYS").arg(line);
        q.query(c).unwrap()
    };
    let bulk = |v: &[&str]| -> Vec<Value> {
        v.iter()
            .map(|s| Value::BulkString(s.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(keys(&mut c, &["OBJECT", "ENCODING", "k"]), bulk(&["k"]));
    assert_eq!(
        keys(&mut c, &["memory", "usage", "k", "SAMPLES", "5"]),
        bulk(&["k"])
    );
    assert_eq!(
        keys(&mut c, &["MSET", "a", "1", "b", "2"]),
        bulk(&["a", "b"])
    );
    assert_eq!(
        keys(&mut c, &["DEL", "a", "b", "c"]),
        bulk(&["a", "b", "c"])
    );
    for (line, e) in [
        (&["OBJECT", "FOO", "k"][..], "ERR Invalid command specified"),
        (&["NOSUCH", "k"], "ERR Invalid command specified"),
        (
            &["GET", "a", "b"],
            "ERR Invalid number of arguments specified for command",
        ),
        (&["PING", "x"], "ERR The command has no key arguments"),
        (&["OBJECT", "HELP"], "ERR The command has no key arguments"),
    ] {
        let mut q = cmd("COMMAND");
        q.arg("GETKEYS").arg(line);
        assert_eq!(query_err(&mut c, &q), e, "{line:?}");
    }
    let flagged = |c: &mut Connection, line: &[&str]| -> Vec<(String, Vec<String>)> {
        let mut q = cmd("COMMAND");
        q.arg("GETKEYSANDFLAGS").arg(line);
        q.query(c).unwrap()
    };
    let pairs = |v: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
        v.iter()
            .map(|(k, f)| (k.to_string(), f.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        flagged(&mut c, &["SET", "k", "v"]),
        pairs(&[("k", &["OW", "update"])])
    );
    assert_eq!(
        flagged(&mut c, &["SET", "k", "v", "get"]),
        pairs(&[("k", &["RW", "access", "update"])])
    );
    assert_eq!(
        flagged(&mut c, &["DEL", "a", "b"]),
        pairs(&[("a", &["RM", "delete"]), ("b", &["RM", "delete"])])
    );
    assert_eq!(
        flagged(&mut c, &["OBJECT", "ENCODING", "k"]),
        pairs(&[("k", &["RO"])])
    );
    // BITFIELD's depend on its subcommands (Redis's bitfieldGetKeys).
    assert_eq!(
        flagged(
            &mut c,
            &["BITFIELD", "k", "GET", "u8", "0", "OVERFLOW", "SAT"]
        ),
        pairs(&[("k", &["RO", "access"])])
    );
    assert_eq!(
        flagged(
            &mut c,
            &["BITFIELD", "k", "GET", "u8", "0", "INCRBY", "u8", "0", "1"]
        ),
        pairs(&[("k", &["RW", "access", "update"])])
    );
    // LIST names subcommands too, and filters.
    let list: Vec<String> = cmd("COMMAND").arg("LIST").query(&mut c).unwrap();
    assert!(list.iter().any(|n| n == "object|encoding"), "{list:?}");
    assert!(!list.iter().any(|n| n == "client|tracking"), "{list:?}");
    let mut obj: Vec<String> = cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("PATTERN")
        .arg("OBJ*")
        .query(&mut c)
        .unwrap();
    obj.sort();
    assert_eq!(
        obj,
        [
            "object",
            "object|encoding",
            "object|freq",
            "object|help",
            "object|idletime",
            "object|refcount"
        ]
    );
    let strings: Vec<String> = cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("ACLCAT")
        .arg("string")
        .query(&mut c)
        .unwrap();
    assert!(strings.iter().any(|n| n == "incrbyfloat"), "{strings:?}");
    assert!(!strings.iter().any(|n| n == "ping"), "{strings:?}");
    let none: Vec<String> = cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("MODULE")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert!(none.is_empty());
    for bad in [&["foo"][..], &["FILTERBY"], &["FILTERBY", "bar", "x"]] {
        let mut q = cmd("COMMAND");
        q.arg("LIST").arg(bad);
        assert_eq!(query_err(&mut c, &q), "ERR syntax error", "{bad:?}");
    }
}

#[test]
fn client_commands_name_list_and_kill_connections() {
    let s = server();
    let mut c = s.client();
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let name: Option<String> = cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, None);
    let () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut c)
        .unwrap();
    let name: Option<String> = cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name.as_deref(), Some("tester"));
    // Unknown subcommands point at CLIENT HELP, so it answers.
    let help: Vec<String> = cmd("CLIENT").arg("HELP").query(&mut c).unwrap();
    assert!(help.iter().any(|l| l.starts_with("SETNAME")), "{help:?}");
    // CLIENT LIST filters as Redis 7's.
    let me: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    let mut other = s.client();
    let other_id: i64 = cmd("CLIENT").arg("ID").query(&mut other).unwrap();
    let list = |c: &mut Connection, args: &[&str]| -> String {
        let mut q = cmd("CLIENT");
        q.arg("LIST").arg(args);
        q.query(c).unwrap()
    };
    let ids_in = |text: &str| -> Vec<i64> {
        let mut v: Vec<i64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(ids_in(&list(&mut c, &["ID", &me.to_string()])), [me]);
    let both = list(&mut c, &["ID", &other_id.to_string(), "0", &me.to_string()]);
    let mut want = vec![me, other_id];
    want.sort_unstable();
    assert_eq!(ids_in(&both), want);
    assert!(ids_in(&list(&mut c, &["TYPE", "normal"])).contains(&other_id));
    assert_eq!(list(&mut c, &["TYPE", "pubsub"]), "");
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("LIST").arg("TYPE").arg("foo")),
        "ERR Unknown client type 'foo'"
    );
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("LIST").arg("ID").arg("abc")),
        "ERR Invalid client ID"
    );
    for bad in [&["ID"][..], &["TYPE", "normal", "x"], &["bogus"]] {
        assert_eq!(
            query_err(&mut c, cmd("CLIENT").arg("LIST").arg(bad)),
            "ERR syntax error",
            "{bad:?}"
        );
    }
    drop(other);
    // Every HELP ends as Redis's do.
    for (command, first) in [
        ("CLIENT", "CLIENT"),
        ("CONFIG", "CONFIG"),
        ("COMMAND", "COMMAND"),
    ] {
        let help: Vec<String> = cmd(command).arg("HELP").query(&mut c).unwrap();
        assert!(help[0].starts_with(first), "{help:?}");
        assert_eq!(
            help[help.len() - 2..],
            ["HELP", "    Prints this help."],
            "{command}"
        );
    }
    let () = cmd("CLIENT")
        .arg("NO-EVICT")
        .arg("on")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("NO-EVICT").arg("maybe")),
        "ERR syntax error"
    );
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("SETNAME").arg("a b")),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    // Connections on every worker are listed, each once.
    let others: Vec<Connection> = (0..5).map(|_| s.client()).collect();
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 6, "{list}");
    let ids: HashSet<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ids.len(), 6);
    let me = lines
        .iter()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .expect("own line");
    assert!(me.contains(" name=tester "), "{me}");
    // The last command by its full name, as Redis 7.
    assert!(me.contains(" cmd=client|list "), "{me}");
    drop(others);
    // After a command Redis's lookup does not find (or an unknown subcommand): cmd=NULL.
    let mut probe = s.client();
    let _: () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("probe")
        .query(&mut probe)
        .unwrap();
    for bad in [&["NOSUCH", "x"][..], &["CLIENT", "NOPE"]] {
        let mut q = cmd(bad[0]);
        for a in &bad[1..] {
            q.arg(*a);
        }
        assert!(q.query::<Value>(&mut probe).is_err());
        let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        let line = list
            .lines()
            .find(|l| l.contains(" name=probe "))
            .expect("the probe's line");
        assert!(line.contains(" cmd=NULL "), "{bad:?}: {line}");
    }

    // CLIENT KILL closes the other connection at once, even if it is idle.
    let mut victim = s.raw();
    victim.write_all(b"CLIENT ID\r\n").unwrap();
    let vid = read_int_reply(&mut victim);
    let n: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(vid)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let (rest, closed) = read_to_eof(&mut victim, Duration::from_secs(3));
    assert!(closed, "killed client still open");
    assert!(rest.is_empty(), "{rest:?}");
    let n: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(999_999)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);
    for bad in ["0", "-1", "x"] {
        assert_eq!(
            query_err(&mut c, cmd("CLIENT").arg("KILL").arg("ID").arg(bad)),
            "ERR client-id should be greater than 0"
        );
    }
    assert_eq!(
        query_err(
            &mut c,
            cmd("CLIENT").arg("KILL").arg("ID").arg(5).arg("ADDR")
        ),
        "ERR syntax error"
    );
    // The filter form skips the caller unless SKIPME no; filters combine with AND.
    let n: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0, "CLIENT KILL ID <own id> skips the caller");
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let mut other = s.raw();
    other.write_all(b"CLIENT ID\r\n").unwrap();
    let oid = read_int_reply(&mut other);
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let oaddr = list
        .lines()
        .find(|l| l.starts_with(&format!("id={oid} ")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("addr=")))
        .unwrap()
        .to_string();
    let n: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(oid)
        .arg("ADDR")
        .arg("1.2.3.4:5")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0, "ID and ADDR must both match");
    // TYPE, USER and LADDR filters, as Redis 7.0's.
    let mut third = s.raw();
    third.write_all(b"CLIENT ID\r\n").unwrap();
    let tid = read_int_reply(&mut third);
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let laddr = list
        .lines()
        .find(|l| l.starts_with(&format!("id={tid} ")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("laddr=")))
        .unwrap()
        .to_string();
    for filter in [
        &["TYPE", "master"][..],
        &["TYPE", "pubsub"],
        &["LADDR", "1.2.3.4:5"],
    ] {
        let mut q = cmd("CLIENT");
        q.arg("KILL").arg("ID").arg(tid).arg(filter);
        let n: i64 = q.query(&mut c).unwrap();
        assert_eq!(n, 0, "{filter:?}");
    }
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("KILL").arg("TYPE").arg("bogus")),
        "ERR Unknown client type 'bogus'"
    );
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("KILL").arg("USER").arg("nobody")),
        "ERR No such user 'nobody'"
    );
    let n: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(tid)
        .arg("LADDR")
        .arg(&laddr)
        .arg("TYPE")
        .arg("normal")
        .arg("USER")
        .arg("default")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let (_, closed) = read_to_eof(&mut third, Duration::from_secs(3));
    assert!(closed);
    // CLIENT SETINFO checks its option and value as Redis 7.2.
    let () = cmd("CLIENT")
        .arg("SETINFO")
        .arg("LIB-NAME")
        .arg("redis-rs")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("SETINFO").arg("bad").arg("x")),
        "ERR Unrecognized option 'bad'"
    );
    assert_eq!(
        query_err(
            &mut c,
            cmd("CLIENT").arg("SETINFO").arg("lib-ver").arg("1 2")
        ),
        "ERR lib-ver cannot contain spaces, newlines or special characters."
    );
    // The values are kept and shown, as Redis 7.2 (an empty value clears one).
    let () = cmd("CLIENT")
        .arg("SETINFO")
        .arg("lib-ver")
        .arg("0.25.1")
        .query(&mut c)
        .unwrap();
    let info: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(
        info.trim_end().ends_with(
            " cmd=client|info user=default redir=-1 resp=2 lib-name=redis-rs lib-ver=0.25.1"
        ),
        "{info}"
    );
    let () = cmd("CLIENT")
        .arg("SETINFO")
        .arg("lib-name")
        .arg("")
        .query(&mut c)
        .unwrap();
    let info: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(info.contains(" lib-name= lib-ver=0.25.1"), "{info}");
    // The old form (CLIENT KILL ip:port) answers +OK or "No such client".
    let () = cmd("CLIENT").arg("KILL").arg(&oaddr).query(&mut c).unwrap();
    let (_, closed) = read_to_eof(&mut other, Duration::from_secs(3));
    assert!(closed);
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("KILL").arg(&oaddr)),
        "ERR No such client"
    );
    // SKIPME no with the caller's own ID: answered, then closed.
    let mut me = s.raw();
    me.write_all(b"CLIENT ID\r\n").unwrap();
    let my = read_int_reply(&mut me);
    me.write_all(format!("CLIENT KILL ID {my} SKIPME no\r\nPING\r\n").as_bytes())
        .unwrap();
    let (got, closed) = read_to_eof(&mut me, Duration::from_secs(3));
    assert_eq!(got, b":1\r\n");
    assert!(closed);
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("ID").arg("x")),
        "ERR wrong number of arguments for 'client|id' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("CLIENT").arg("bogus")),
        "ERR unknown subcommand 'bogus'. Try CLIENT HELP."
    );
}

/// Reads one integer reply (`:<n>\r\n`).
fn read_int_reply(s: &mut std::net::TcpStream) -> i64 {
    use std::io::Read;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut b).unwrap();
        line.push(b[0]);
    }
    assert_eq!(line[0], b':', "{line:?}");
    std::str::from_utf8(&line[1..line.len() - 2])
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn bgrewriteaof_keeps_the_data() {
    let s = server_with(&["--set", "storage.segment_size=1mb"]);
    let mut c = s.client();
    let keys = spread_keys("rw:", 300);
    let big = "x".repeat(2000);
    // Overwrite each key a few times so there is garbage to drop.
    for round in 0..3 {
        let mut p = redis::pipe();
        for k in &keys {
            p.cmd("SET").arg(k).arg(format!("{round}{big}")).ignore();
        }
        let () = p.query(&mut c).unwrap();
    }
    int(&mut c, cmd("DEL").arg(&keys[..50]));
    let () = cmd("SETEX")
        .arg(&keys[60])
        .arg(1000)
        .arg("ttl")
        .query(&mut c)
        .unwrap();
    let r: String = cmd("BGREWRITEAOF").query(&mut c).unwrap();
    assert_eq!(r, "Background append only file rewriting started");
    let check = |c: &mut Connection| {
        assert_eq!(int(c, &mut cmd("DBSIZE")), 250);
        let got: Vec<Option<String>> = cmd("MGET").arg(&keys).query(c).unwrap();
        for (i, v) in got.iter().enumerate() {
            match i {
                0..50 => assert_eq!(v, &None),
                60 => assert_eq!(v.as_deref(), Some("ttl")),
                _ => assert_eq!(v.as_deref(), Some(format!("2{big}").as_str()), "{i}"),
            }
        }
        assert!(int(c, cmd("TTL").arg(&keys[60])) > 900);
    };
    check(&mut c);
    let ok = wait_until(Duration::from_secs(20), || {
        info(&mut c, "persistence")["aof_rewrite_in_progress"] == "0"
    });
    assert!(ok, "rewrite never finished");
    check(&mut c);
    let mut s = s;
    s.restart();
    check(&mut s.client());
}

#[test]
fn shutdown_exits_zero_and_data_survives_restart() {
    let mut s = server();
    let mut c = s.client();
    let keys = spread_keys("sd:", 100);
    for k in &keys {
        set(&mut c, k, k);
    }
    // Bad flags and ABORT (nothing to abort) are refused and stop nothing.
    for bad in [&["bogus"][..], &["save", "nosave"], &["abort", "now"]] {
        assert_eq!(
            query_err(&mut c, cmd("SHUTDOWN").arg(bad)),
            "ERR syntax error",
            "{bad:?}"
        );
    }
    assert_eq!(
        query_err(&mut c, cmd("SHUTDOWN").arg("ABORT")),
        "ERR No shutdown in progress."
    );
    assert_eq!(get(&mut c, &keys[0]).as_deref(), Some(keys[0].as_str()));
    let mut raw = s.raw();
    raw.write_all(b"SHUTDOWN NOSAVE\r\n").unwrap();
    let (got, closed) = read_to_eof(&mut raw, Duration::from_secs(10));
    assert!(closed);
    assert!(got.is_empty(), "SHUTDOWN has no reply on success: {got:?}");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    s.restart();
    let mut c = s.client();
    let got: Vec<Option<String>> = cmd("MGET").arg(&keys).query(&mut c).unwrap();
    let want: Vec<Option<String>> = keys.iter().map(|k| Some(k.clone())).collect();
    assert_eq!(got, want);
}

#[test]
fn pipeline_of_10k_commands_replies_in_order() {
    let s = server();
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..10_000 {
        match i % 4 {
            0 => p.cmd("SET").arg(format!("p:{i}")).arg(i),
            1 => p.cmd("GET").arg(format!("p:{}", i - 1)),
            2 => p.cmd("INCR").arg(format!("ctr:{}", i % 37)),
            _ => p.cmd("EXISTS").arg(format!("p:{}", i - 3)).arg("nope"),
        };
    }
    let replies: Vec<Value> = p.query(&mut c).unwrap();
    assert_eq!(replies.len(), 10_000);
    let mut counters: HashMap<usize, i64> = HashMap::new();
    for (i, r) in replies.iter().enumerate() {
        let want = match i % 4 {
            0 => Value::Okay,
            1 => Value::BulkString((i - 1).to_string().into_bytes()),
            2 => {
                let n = counters.entry(i % 37).or_default();
                *n += 1;
                Value::Int(*n)
            }
            _ => Value::Int(1),
        };
        assert_eq!(r, &want, "reply {i}");
    }
}

#[test]
fn fifty_concurrent_clients_keep_every_update() {
    let s = server();
    let counters = spread_keys("cnt:", 16);
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let mut c = s.client();
            let counters = counters.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let k = format!("t{t}:{i}");
                    let () = cmd("SET").arg(&k).arg(i).query(&mut c).unwrap();
                    let v: i64 = cmd("GET").arg(&k).query(&mut c).unwrap();
                    assert_eq!(v, i);
                    let _: i64 = cmd("INCR")
                        .arg(&counters[(t + i as usize) % counters.len()])
                        .query(&mut c)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = s.client();
    let values: Vec<i64> = cmd("MGET").arg(&counters).query(&mut c).unwrap();
    assert_eq!(values.iter().sum::<i64>(), 50 * 100);
    assert_eq!(int(&mut c, &mut cmd("DBSIZE")), 50 * 100 + 16);
    let v: i64 = cmd("GET").arg("t49:99").query(&mut c).unwrap();
    assert_eq!(v, 99);
}

#[test]
fn unknown_command_and_wrong_arity_keep_the_connection_open() {
    let s = server();
    let mut c = s.client();
    assert_eq!(
        query_err(&mut c, cmd("foo").arg("a")),
        "ERR unknown command 'foo', with args beginning with: 'a' "
    );
    assert_eq!(
        query_err(&mut c, &cmd("foo")),
        "ERR unknown command 'foo', with args beginning with: "
    );
    assert_eq!(
        query_err(&mut c, &cmd("GET")),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("GET").arg("a").arg("b")),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("SET").arg("a")),
        "ERR wrong number of arguments for 'set' command"
    );
    set(&mut c, "after", "errors");
    assert_eq!(get(&mut c, "after").as_deref(), Some("errors"));
    // Redis's wording exactly: arguments quoted up to 128 bytes in all, newlines blanked so
    // the error stays one line.
    let mut raw = s.raw();
    let long = "x".repeat(200);
    let req = resp(&[b"nope\r\ncmd", long.as_bytes(), b"y"]);
    let want = format!(
        "-ERR unknown command 'nope  cmd', with args beginning with: '{}' \r\n",
        "x".repeat(128)
    );
    expect_reply(&mut raw, &req, want.as_bytes());
    let args: Vec<&[u8]> = std::iter::once(&b"nope"[..])
        .chain(std::iter::repeat_n(&b"abcdefghij"[..], 30))
        .collect();
    let want = format!(
        "-ERR unknown command 'nope', with args beginning with: {}\r\n",
        "'abcdefghij' ".repeat(10)
    );
    expect_reply(&mut raw, &resp(&args), want.as_bytes());
    expect_reply(&mut raw, b"PING\r\n", b"+PONG\r\n");
}

/// Keys `{prefix}{i}`, one on each worker, in worker order.
fn one_per_worker(prefix: &str) -> Vec<String> {
    let mut keys = vec![String::new(); WORKERS as usize];
    for i in 0.. {
        let k = format!("{prefix}{i}");
        let w = worker_of(k.as_bytes(), PARTITIONS, WORKERS);
        if keys[w].is_empty() {
            keys[w] = k;
        }
        if keys.iter().all(|k| !k.is_empty()) {
            return keys;
        }
    }
    unreachable!()
}

/// MULTI queues commands and EXEC runs them in order, answering each one's reply in an array,
/// whichever workers their keys live on; a command that fails as it runs leaves its error in
/// the array and the others run, as in Redis. Commands pipelined after EXEC see it.
#[test]
fn exec_runs_the_queued_commands_in_order_across_workers() {
    let s = server();
    let mut raw = s.raw();
    let k = one_per_worker("tx:");
    let (k0, k1, k2, k3) = (&k[0], &k[1], &k[2], &k[3]);
    let mut req = resp(&[b"MULTI"]);
    let queued: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", k0.as_bytes(), b"1"],
        vec![b"INCR", k0.as_bytes()],
        vec![
            b"MSET",
            k1.as_bytes(),
            b"a",
            k2.as_bytes(),
            b"b",
            k3.as_bytes(),
            b"c",
        ],
        vec![
            b"MGET",
            k0.as_bytes(),
            k1.as_bytes(),
            k2.as_bytes(),
            k3.as_bytes(),
            b"tx:none",
        ],
        vec![b"INCR", k1.as_bytes()],
        vec![b"APPEND", k2.as_bytes(), b"x"],
        vec![b"DEL", k3.as_bytes(), k1.as_bytes()],
        vec![b"PING"],
        vec![b"ECHO", b"hi"],
    ];
    for q in &queued {
        req.extend(resp(q));
    }
    req.extend(resp(&[b"EXEC"]));
    req.extend(resp(&[
        b"MGET",
        k0.as_bytes(),
        k1.as_bytes(),
        k2.as_bytes(),
        k3.as_bytes(),
    ]));
    let want = format!(
        "+OK\r\n{}*9\r\n+OK\r\n:2\r\n+OK\r\n*5\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$-1\r\n\
         -ERR value is not an integer or out of range\r\n:2\r\n:2\r\n+PONG\r\n$2\r\nhi\r\n\
         *4\r\n$1\r\n2\r\n$-1\r\n$2\r\nbx\r\n$-1\r\n",
        "+QUEUED\r\n".repeat(queued.len())
    );
    expect_reply(&mut raw, &req, want.as_bytes());
    // An empty transaction; WATCH pipelined with the transaction (the versions of keys on
    // other workers are in before EXEC checks them).
    expect_reply(&mut raw, b"MULTI\r\nEXEC\r\n", b"+OK\r\n*0\r\n");
    let mut req = resp(&[
        b"WATCH",
        k0.as_bytes(),
        k1.as_bytes(),
        k2.as_bytes(),
        k3.as_bytes(),
    ]);
    req.extend(resp(&[b"MULTI"]));
    req.extend(resp(&[b"GET", k2.as_bytes()]));
    req.extend(resp(&[b"EXEC"]));
    expect_reply(
        &mut raw,
        &req,
        b"+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n$2\r\nbx\r\n",
    );
    let mut c = s.client();
    let (ok, n, v): (String, i64, Option<String>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(k3)
        .arg("5")
        .cmd("INCRBY")
        .arg(k3)
        .arg(10)
        .cmd("GET")
        .arg(k2)
        .query(&mut c)
        .unwrap();
    assert_eq!((ok.as_str(), n, v.as_deref()), ("OK", 15, Some("bx")));
    // The errors inside EXEC's array count in INFO errorstats, as in Redis (one from a part
    // another worker ran, one from this connection's worker, one found when EXEC planned).
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let mut req = resp(&[b"MULTI"]);
    for k in [k0, k1, k2, k3] {
        req.extend(resp(&[b"SET", k.as_bytes(), b"text"]));
        req.extend(resp(&[b"INCR", k.as_bytes()]));
    }
    req.extend(resp(&[b"MSET", k0.as_bytes(), b"v", k1.as_bytes()]));
    req.extend(resp(&[b"EXEC"]));
    let not_int = "-ERR value is not an integer or out of range\r\n";
    let want = format!(
        "+OK\r\n{}*9\r\n{}-ERR wrong number of arguments for 'mset' command\r\n",
        "+QUEUED\r\n".repeat(9),
        format!("+OK\r\n{not_int}").repeat(4)
    );
    expect_reply(&mut raw, &req, want.as_bytes());
    let stats = info(&mut c, "stats");
    assert_eq!(stats["total_error_replies"], "5", "{stats:?}");
    let errors = info(&mut c, "errorstats");
    assert_eq!(errors["errorstat_ERR"], "count=5", "{errors:?}");
    // A transaction a watched key aborted ran none of its commands: they are no calls in
    // commandstats, and the error EXEC's plan found (the odd MSET) is no error reply anyone
    // got. With only commands EXEC answers itself, and with a part on a worker as well.
    for with_part in [false, true] {
        let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
        let mut req = resp(&[b"WATCH", k1.as_bytes()]);
        req.extend(resp(&[b"MULTI"]));
        req.extend(resp(&[b"MSET", k0.as_bytes(), b"v", k1.as_bytes()]));
        if with_part {
            req.extend(resp(&[b"SET", k2.as_bytes(), b"w"]));
        }
        let queued = "+QUEUED\r\n".repeat(1 + usize::from(with_part));
        expect_reply(&mut raw, &req, format!("+OK\r\n+OK\r\n{queued}").as_bytes());
        let () = cmd("SET").arg(k1).arg("changed").query(&mut c).unwrap();
        expect_reply(&mut raw, &resp(&[b"EXEC"]), b"*-1\r\n");
        let stats = info(&mut c, "stats");
        assert_eq!(stats["total_error_replies"], "0", "{with_part}: {stats:?}");
        let cs = info(&mut c, "commandstats");
        assert!(!cs.contains_key("cmdstat_mset"), "{with_part}: {cs:?}");
    }
    // Run, they count: the queued commands as calls, the planned error as a failed one.
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let mut req = resp(&[b"MULTI"]);
    req.extend(resp(&[b"MSET", k0.as_bytes(), b"v", k1.as_bytes()]));
    req.extend(resp(&[b"SET", k2.as_bytes(), b"w"]));
    req.extend(resp(&[b"EXEC"]));
    let want = "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR wrong number of arguments for 'mset' command\r\n+OK\r\n";
    expect_reply(&mut raw, &req, want.as_bytes());
    let cs = info(&mut c, "commandstats");
    assert!(
        cs["cmdstat_mset"].contains("calls=1,") && cs["cmdstat_mset"].contains("failed_calls=1"),
        "{cs:?}"
    );
    assert!(cs["cmdstat_set"].contains("calls=1,"), "{cs:?}");
    assert_eq!(info(&mut c, "stats")["total_error_replies"], "1");
}

/// Server commands queued in MULTI run when EXEC runs the queue, in queue order and with the
/// replies they give outside a transaction, as in Redis: INFO counts the keys the transaction
/// wrote before it, CLIENT GETNAME reads back the SETNAME before it, CLIENT LIST lists the
/// caller once, CLIENT KILL closes another connection (which a second KILL and a LIST after
/// it no longer find), an error is its place in the array while the rest runs, and SCAN
/// pages taken inside transactions walk every key. A transaction that runs nothing (a watched
/// key changed) leaves the connection's name as it was.
#[test]
fn server_commands_inside_a_transaction_run_at_exec_in_queue_order() {
    let s = server();
    let mut c = s.client();
    let mut other = s.client();
    let other_id: i64 = cmd("CLIENT").arg("ID").query(&mut other).unwrap();
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    let keys = spread_keys("txs:", 40);
    let mut p = redis::pipe();
    p.atomic();
    for k in &keys {
        p.cmd("SET").arg(k).arg("v").ignore();
    }
    p.cmd("INFO").arg("keyspace");
    p.cmd("CONFIG").arg("GET").arg("slowlog-max-len");
    p.cmd("CLIENT").arg("SETNAME").arg("txname");
    p.cmd("CLIENT").arg("GETNAME");
    p.cmd("CLIENT").arg("LIST").arg("ID").arg(id).arg(other_id);
    p.cmd("CLIENT").arg("KILL").arg("ID").arg(other_id);
    p.cmd("CLIENT").arg("KILL").arg("ID").arg(other_id);
    p.cmd("CLIENT").arg("LIST").arg("ID").arg(id).arg(other_id);
    p.cmd("WAIT").arg(0).arg(0);
    p.cmd("COMMAND").arg("COUNT");
    p.cmd("DBSIZE");
    p.cmd("LASTSAVE");
    type Replies = (
        String,
        Vec<String>,
        (),
        String,
        String,
        i64,
        i64,
        String,
        i64,
        i64,
        i64,
        i64,
    );
    let (keyspace, got, (), name, list, killed, again, after, waited, count, dbsize, lastsave): Replies =
        p.query(&mut c).unwrap();
    assert!(keyspace.contains("db0:keys=40,"), "{keyspace}");
    assert_eq!(got, ["slowlog-max-len", "128"]);
    assert_eq!(name, "txname");
    assert_eq!(again, 0, "killed already");
    assert_eq!(after.lines().count(), 1, "{after}");
    // The caller once (with the name it took before), and the other client.
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("id={id} ")) && l.contains(" name=txname ")),
        "{list}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("id={other_id} "))),
        "{list}"
    );
    assert_eq!((killed, waited, dbsize), (1, 0, 40));
    assert!(count > 80, "COMMAND COUNT {count}");
    assert!(lastsave > 0);
    assert!(cmd("PING").query::<String>(&mut other).is_err(), "killed");
    let name: String = cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "txname");

    // An error of a command as it runs is its place in the array, as in Redis.
    let mut raw = s.raw();
    expect_reply(
        &mut raw,
        b"MULTI\r\nCLIENT KILL ID 0\r\nCONFIG GET hz\r\nSLOWLOG RESET\r\nSLOWLOG LEN\r\n\
          SCAN 0 COUNT 1 TYPE hash\r\nBGSAVE\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*6\r\n\
          -ERR client-id should be greater than 0\r\n\
          *2\r\n$2\r\nhz\r\n$2\r\n10\r\n+OK\r\n:0\r\n*2\r\n$1\r\n0\r\n*0\r\n\
          +Background saving scheduled\r\n",
    );

    // A watched key changed: nothing runs, and what CLIENT SETNAME, CLIENT SETINFO and
    // HELLO's SETNAME did as EXEC planned them is taken back.
    let k = &keys[1];
    let set_name = format!("CLIENT SETNAME before\r\nWATCH {k}\r\n");
    expect_reply(&mut raw, set_name.as_bytes(), b"+OK\r\n+OK\r\n");
    set(&mut c, k, "changed");
    let mut req = b"MULTI\r\nCLIENT SETNAME aborted\r\nCLIENT SETINFO LIB-NAME lib\r\n".to_vec();
    req.extend(format!("HELLO 2 SETNAME hello\r\nSET {k} lost\r\nEXEC\r\n").as_bytes());
    req.extend(b"CLIENT GETNAME\r\n");
    expect_reply(
        &mut raw,
        &req,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n$6\r\nbefore\r\n",
    );
    assert_eq!(get(&mut c, k).as_deref(), Some("changed"));
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let line = list
        .lines()
        .find(|l| l.contains(" name=before "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains(" lib-name= "), "{line}");

    // SCAN inside transactions, a page per EXEC, walks every key once.
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..1000 {
        let ((next, page),): ((String, Vec<String>),) = redis::pipe()
            .atomic()
            .cmd("SCAN")
            .arg(&cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut c)
            .unwrap();
        seen.extend(page);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0", "the scan ended");
    let want: HashSet<String> = keys.iter().cloned().collect();
    assert_eq!(seen, want);
}

/// A command refused while queued (unknown, wrong arity, not allowed in a transaction) makes
/// EXEC answer EXECABORT and run nothing, as in Redis; DISCARD drops the queue.
#[test]
fn a_transaction_with_a_refused_command_runs_nothing() {
    let s = server();
    let mut raw = s.raw();
    for (refused, why) in [
        (
            b"NOPE\r\n".to_vec(),
            "-ERR unknown command 'NOPE', with args beginning with: \r\n",
        ),
        (
            b"GET\r\n".to_vec(),
            "-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (
            b"SAVE\r\n".to_vec(),
            "-ERR Command not allowed inside a transaction\r\n",
        ),
        (
            b"SHUTDOWN NOSAVE\r\n".to_vec(),
            "-ERR Command not allowed inside a transaction\r\n",
        ),
        (
            b"CLIENT NOPE\r\n".to_vec(),
            "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n",
        ),
        (
            b"CONFIG SET hz 20\r\n".to_vec(),
            "-ERR 'config|set' is not supported inside MULTI: it changes every worker at once, and a transaction that runs nothing (a watched key changed) could not take it back; send it on its own\r\n",
        ),
    ] {
        let mut req = b"MULTI\r\nSET txr:a 1\r\n".to_vec();
        req.extend(refused);
        req.extend(b"INCR txr:b\r\nMULTI\r\nWATCH txr:a\r\nEXEC\r\nGET txr:a\r\nEXISTS txr:b\r\n");
        let want = format!(
            "+OK\r\n+QUEUED\r\n{why}+QUEUED\r\n-ERR MULTI calls can not be nested\r\n\
             -ERR WATCH inside MULTI is not allowed\r\n\
             -EXECABORT Transaction discarded because of previous errors.\r\n$-1\r\n:0\r\n"
        );
        expect_reply(&mut raw, &req, want.as_bytes());
    }
    expect_reply(
        &mut raw,
        b"multi\r\nSET txr:a 1\r\nDISCARD\r\nSET txr:a 2\r\nGET txr:a\r\n",
        b"+OK\r\n+QUEUED\r\n+OK\r\n+OK\r\n$1\r\n2\r\n",
    );
    expect_reply(
        &mut raw,
        b"EXEC\r\nDISCARD\r\nEXEC x\r\nWATCH\r\n",
        b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n\
          -EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n\
          -ERR wrong number of arguments for 'watch' command\r\n",
    );
    // A refused EXEC ends the transaction; an MSET with a key and no value is queued (its
    // arity only counts arguments) and fails as it runs, as in Redis.
    expect_reply(
        &mut raw,
        b"MULTI\r\nSET txr:a 9\r\nEXEC x\r\nEXEC\r\nGET txr:a\r\n\
          MULTI\r\nMSET txr:a 1 txr:b\r\nSET txr:c 1\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n\
          -EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n\
          -ERR EXEC without MULTI\r\n$1\r\n2\r\n\
          +OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-ERR wrong number of arguments for 'mset' command\r\n+OK\r\n",
    );
    // CLIENT LIST shows a transaction under way, and QUIT still ends the connection in one.
    let mut c = s.client();
    let id: i64 = cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    expect_reply(&mut raw, b"MULTI\r\nSET txr:a 3\r\n", b"+OK\r\n+QUEUED\r\n");
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let line = list
        .lines()
        .find(|l| !l.starts_with(&format!("id={id} ")))
        .expect("the other connection");
    assert!(
        line.contains(" flags=x ") && line.contains(" multi=1 "),
        "{line}"
    );
    // Once a command is refused, nothing more is queued: multi= stays at what was, as in
    // Redis.
    expect_reply(
        &mut raw,
        b"GET\r\nSET txr:b 1\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n+QUEUED\r\n",
    );
    let list: String = cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    let line = list
        .lines()
        .find(|l| !l.starts_with(&format!("id={id} ")))
        .expect("the other connection");
    assert!(line.contains(" multi=1 "), "{line}");
    expect_reply(&mut raw, b"QUIT\r\n", b"+OK\r\n");
    assert_eq!(get(&mut c, "txr:a"), Some("2".into()));
    // While EXEC runs, the caller's own line still shows its transaction: flags=x and the
    // commands it queued, as Redis shows them.
    let (info, list): (String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("txr:d")
        .arg(1)
        .ignore()
        .cmd("CLIENT")
        .arg("INFO")
        .cmd("CLIENT")
        .arg("LIST")
        .query(&mut c)
        .unwrap();
    let own = list
        .lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .expect("the caller's line");
    for line in [info.trim_end(), own] {
        assert!(
            line.contains(" flags=x ") && line.contains(" multi=3 ") && line.contains(" cmd=exec "),
            "{line}"
        );
    }
    let after: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    assert!(
        after.contains(" flags=N ") && after.contains(" multi=-1 "),
        "{after}"
    );
}

/// RESET gives the connection a new connection's state: no transaction, no watches, not
/// authenticated where a password is set; it runs even inside MULTI and before AUTH.
#[test]
fn reset_gives_the_connection_a_new_connections_state() {
    let s = server_with(&["--requirepass", "pw"]);
    let mut raw = s.raw();
    expect_reply(
        &mut raw,
        b"RESET\r\nAUTH pw\r\nWATCH r:k\r\nMULTI\r\nSET r:k 1\r\nRESET\r\nEXEC\r\nGET r:k\r\n",
        b"+RESET\r\n+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n+RESET\r\n\
          -EXECABORT Transaction discarded because of: NOAUTH Authentication required.\r\n\
          -NOAUTH Authentication required.\r\n",
    );
    // The watch went with it: a change to the key no longer aborts.
    expect_reply(
        &mut raw,
        b"AUTH pw\r\nWATCH r:k\r\nRESET\r\nAUTH pw\r\nSET r:k 2\r\nMULTI\r\nGET r:k\r\nEXEC\r\n",
        b"+OK\r\n+OK\r\n+RESET\r\n+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n$1\r\n2\r\n",
    );
}

fn watch(c: &mut Connection, keys: &[&str]) {
    let () = cmd("WATCH").arg(keys).query(c).unwrap();
}

/// MULTI, one SET, EXEC: whether it ran (false: EXEC answered a null array).
fn exec_set(c: &mut Connection, k: &str, v: &str) -> bool {
    let () = cmd("MULTI").query(c).unwrap();
    let q: String = cmd("SET").arg(k).arg(v).query(c).unwrap();
    assert_eq!(q, "QUEUED");
    let r: Value = cmd("EXEC").query(c).unwrap();
    match r {
        Value::Nil => false,
        Value::Array(v) if v.len() == 1 => true,
        other => panic!("EXEC answered {other:?}"),
    }
}

/// WATCH: EXEC runs nothing (a null array) if a watched key was written, deleted, created,
/// given or stripped of an expiry, or expired since; reads do not count, and EXEC, DISCARD and
/// UNWATCH end the watch.
#[test]
fn exec_after_watch_runs_only_if_no_watched_key_changed() {
    let s = server();
    let mut a = s.client();
    let mut b = s.client();
    let k = one_per_worker("w:");
    let all: Vec<&str> = k.iter().map(String::as_str).collect();
    set(&mut b, &k[1], "v");
    set(&mut b, &k[2], "v");
    // Unchanged (read by others, the absent one still absent): it runs.
    watch(&mut a, &all);
    let _ = get(&mut b, &k[1]);
    let _: i64 = cmd("EXISTS").arg(&k[3]).query(&mut b).unwrap();
    assert!(exec_set(&mut a, &k[0], "1"));
    type Change = fn(&mut Connection, &str);
    let changes: [(&str, usize, Change); 7] = [
        ("written", 1, |c, k| set(c, k, "v")),
        ("created", 3, |c, k| set(c, k, "new")),
        ("deleted", 3, |c, k| {
            let _: i64 = cmd("DEL").arg(k).query(c).unwrap();
        }),
        ("created and deleted again", 3, |c, k| {
            set(c, k, "briefly");
            let _: i64 = cmd("DEL").arg(k).query(c).unwrap();
        }),
        ("given an expiry", 2, |c, k| {
            let _: i64 = cmd("EXPIRE").arg(k).arg(100).query(c).unwrap();
        }),
        ("stripped of its expiry", 2, |c, k| {
            let _: i64 = cmd("PERSIST").arg(k).query(c).unwrap();
        }),
        ("written with the same value", 1, |c, k| set(c, k, "v")),
    ];
    for (what, i, change) in changes {
        watch(&mut a, &all);
        change(&mut b, &k[i]);
        assert!(
            !exec_set(&mut a, &k[0], what),
            "ran though a key was {what}"
        );
        assert_eq!(get(&mut a, &k[0]), Some("1".into()), "{what}");
    }
    // Its own writes count too, as in Redis.
    watch(&mut a, &[&k[2]]);
    set(&mut a, &k[2], "mine");
    assert!(!exec_set(&mut a, &k[0], "own"));
    // A key that expires after WATCH.
    let () = cmd("SET")
        .arg(&k[3])
        .arg("x")
        .arg("PX")
        .arg(80)
        .query(&mut b)
        .unwrap();
    watch(&mut a, &[&k[3]]);
    std::thread::sleep(Duration::from_millis(150));
    assert!(!exec_set(&mut a, &k[0], "expired"));
    // EXEC (run or not), DISCARD and UNWATCH each end the watch.
    for end in ["EXEC", "DISCARD", "UNWATCH"] {
        watch(&mut a, &all);
        match end {
            "EXEC" => assert!(exec_set(&mut a, &k[0], "2")),
            "DISCARD" => {
                let () = cmd("MULTI").query(&mut a).unwrap();
                let () = cmd("DISCARD").query(&mut a).unwrap();
            }
            _ => {
                let () = cmd("UNWATCH").query(&mut a).unwrap();
            }
        }
        set(&mut b, &k[1], "again");
        assert!(exec_set(&mut a, &k[0], "3"), "still watching after {end}");
    }
    // FLUSHALL changes the keys it deletes, as in Redis 7: not one absent and still absent.
    let () = cmd("FLUSHALL").query(&mut b).unwrap();
    watch(&mut a, &[&k[3]]);
    let () = cmd("FLUSHALL").query(&mut b).unwrap();
    assert!(
        exec_set(&mut a, &k[0], "after a flush"),
        "an absent key flushed"
    );
    watch(&mut a, &[&k[0]]);
    let () = cmd("FLUSHALL").query(&mut b).unwrap();
    assert!(!exec_set(&mut a, &k[1], "flushed"), "a present key flushed");
    assert_eq!(get(&mut a, &k[1]), None);
}

/// WATCH pipelined after a multi-key command over several workers, and before another one:
/// EXEC still waits for the watched versions from their workers (a multi-key command may
/// not overtake WATCH's wait), so it runs when nothing changed the watched key, however
/// slow that key's worker is to answer.
#[test]
fn pipelined_watch_is_not_overtaken_by_multi_key_commands() {
    let s = server();
    let k = one_per_worker("pw:");
    // Keeps the watched key's worker busy: pipelines of multi-key commands holding it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let mut c = s.client();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let stop = stop.clone();
        let (a, b) = (k[2].clone(), k[3].clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && rounds < 2000 {
                let mut p = redis::pipe();
                for i in 0..50 {
                    p.cmd("MSET").arg(&a).arg(i).arg(&b).arg(i).ignore();
                }
                let () = p.query(&mut c).unwrap();
                rounds += 1;
            }
        })
    };
    let mut c = s.client();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let watched = one_per_worker("pw-w:")[3].clone();
    for i in 0..200 {
        let () = cmd("MSET")
            .arg(&k[0])
            .arg(i)
            .arg(&k[1])
            .arg(i)
            .query(&mut c)
            .unwrap();
        let (_, _, _, _, done): ((), Vec<Option<String>>, (), String, Value) = redis::pipe()
            .cmd("WATCH")
            .arg(&watched)
            .cmd("MGET")
            .arg(&k[0])
            .arg(&k[1])
            .cmd("MULTI")
            .cmd("SET")
            .arg(&watched)
            .arg(i)
            .cmd("EXEC")
            .query(&mut c)
            .unwrap();
        assert!(
            matches!(done, Value::Array(ref v) if v.len() == 1),
            "round {i}: EXEC {done:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
}

/// The optimistic-locking loop client libraries run (WATCH, read, MULTI, write, EXEC, again
/// if it was aborted) loses no update when several clients race on one counter.
#[test]
fn watch_loops_of_racing_clients_lose_no_increment() {
    let s = server();
    const CLIENTS: usize = 4;
    const EACH: i64 = 40;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut c = s.client();
            std::thread::spawn(move || {
                let mut retries = 0;
                for _ in 0..EACH {
                    for attempt in 0.. {
                        assert!(attempt < 10_000, "no progress");
                        watch(&mut c, &["race:n"]);
                        let n: Option<i64> = cmd("GET").arg("race:n").query(&mut c).unwrap();
                        let ran: Option<(String,)> = redis::pipe()
                            .atomic()
                            .cmd("SET")
                            .arg("race:n")
                            .arg(n.unwrap_or(0) + 1)
                            .query(&mut c)
                            .unwrap();
                        if ran.is_some() {
                            break;
                        }
                        retries += 1;
                    }
                }
                retries
            })
        })
        .collect();
    let retries: i64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let mut c = s.client();
    let n: i64 = cmd("GET").arg("race:n").query(&mut c).unwrap();
    assert_eq!(n, CLIENTS as i64 * EACH, "{retries} retries");
}

/// redis-py, unchanged: its default pipeline is a MULTI/EXEC transaction, and its
/// `transaction()` helper runs a WATCH-and-retry loop.
#[test]
fn redis_py_transactions_work_unchanged() {
    let s = server();
    let script = format!(
        r#"
import redis
r = redis.Redis(host="127.0.0.1", port={port}, socket_timeout=10)
p = r.pipeline()
p.set("py:a", 1).incr("py:a").mget("py:a", "py:b").set("py:b", "x").get("py:b")
assert p.execute() == [True, 2, [b"2", None], True, b"x"]
def bump(pipe):
    n = int(pipe.get("py:n") or 0)
    pipe.multi()
    pipe.set("py:n", n + 1)
for _ in range(20):
    r.transaction(bump, "py:n")
assert r.get("py:n") == b"20"
print("ok")
"#,
        port = s.port
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (scripts/setup.sh installs it with python3-redis)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A transaction over several workers is isolated: one that reads two keys never sees the
/// halfway state of one that increments both.
#[test]
fn transactions_over_several_workers_never_see_each_other_halfway() {
    let s = server();
    let k = one_per_worker("iso:");
    let (x, y) = (k[0].clone(), k[3].clone());
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = s.client();
            let (x, y) = (x.clone(), y.clone());
            std::thread::spawn(move || {
                for _ in 0..300 {
                    let _: (i64, i64) = redis::pipe()
                        .atomic()
                        .incr(&x, 1)
                        .incr(&y, 1)
                        .query(&mut c)
                        .unwrap();
                }
            })
        })
        .collect();
    let mut c = s.client();
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !writers.iter().all(|w| w.is_finished()) && Instant::now() < deadline {
        let (a, b): (Option<i64>, Option<i64>) = redis::pipe()
            .atomic()
            .get(&x)
            .get(&y)
            .query(&mut c)
            .unwrap();
        assert_eq!(a, b, "a transaction saw another one halfway");
        reads += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .get(&x)
        .get(&y)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (600, 600), "after {reads} reads");
}

/// RENAME, RENAMENX and COPY move or copy a value with its expiry, between keys on any two
/// workers (or the same one), with Redis's replies.
#[test]
fn rename_renamenx_and_copy_carry_the_value_and_its_expiry_between_any_workers() {
    let s = server();
    let mut c = s.client();
    let a = one_per_worker("mva:");
    let b = one_per_worker("mvb:");
    for (i, src) in a.iter().enumerate() {
        for (j, dst) in b.iter().enumerate() {
            let at = format!("src on worker {i}, dst on worker {j}");
            let () = cmd("SET")
                .arg(src)
                .arg("v")
                .arg("EX")
                .arg(100)
                .query(&mut c)
                .unwrap();
            let () = cmd("RENAME").arg(src).arg(dst).query(&mut c).unwrap();
            assert_eq!(get(&mut c, dst), Some("v".into()), "{at}");
            assert_eq!(get(&mut c, src), None, "{at}");
            let ttl = int(&mut c, cmd("TTL").arg(dst));
            assert!((90..=100).contains(&ttl), "{at}: ttl {ttl}");
            // RENAMENX onto an existing key changes nothing; onto a free one it moves.
            set(&mut c, src, "w");
            assert_eq!(int(&mut c, cmd("RENAMENX").arg(src).arg(dst)), 0, "{at}");
            assert_eq!(get(&mut c, src), Some("w".into()), "{at}");
            assert_eq!(get(&mut c, dst), Some("v".into()), "{at}");
            let _: i64 = cmd("DEL").arg(dst).query(&mut c).unwrap();
            assert_eq!(int(&mut c, cmd("RENAMENX").arg(src).arg(dst)), 1, "{at}");
            assert_eq!(get(&mut c, dst), Some("w".into()), "{at}");
            assert_eq!(int(&mut c, cmd("TTL").arg(dst)), -1, "{at}");
            // COPY keeps the source; onto an existing key only with REPLACE.
            let () = cmd("SET")
                .arg(src)
                .arg("x")
                .arg("PX")
                .arg(500_000)
                .query(&mut c)
                .unwrap();
            assert_eq!(int(&mut c, cmd("COPY").arg(src).arg(dst)), 0, "{at}");
            assert_eq!(get(&mut c, dst), Some("w".into()), "{at}");
            assert_eq!(
                int(&mut c, cmd("COPY").arg(src).arg(dst).arg("REPLACE")),
                1,
                "{at}"
            );
            assert_eq!(get(&mut c, src), Some("x".into()), "{at}");
            assert_eq!(get(&mut c, dst), Some("x".into()), "{at}");
            assert!(int(&mut c, cmd("PTTL").arg(dst)) > 400_000, "{at}");
            let _: i64 = cmd("DEL").arg(src).arg(dst).query(&mut c).unwrap();
            assert_eq!(int(&mut c, cmd("COPY").arg(src).arg(dst)), 0, "{at}");
            assert_eq!(
                query_err(&mut c, cmd("RENAME").arg(src).arg(dst)),
                "ERR no such key",
                "{at}"
            );
        }
    }
    let k = &a[0];
    set(&mut c, k, "same");
    let () = cmd("RENAME").arg(k).arg(k).query(&mut c).unwrap();
    assert_eq!(int(&mut c, cmd("RENAMENX").arg(k).arg(k)), 0);
    assert_eq!(get(&mut c, k), Some("same".into()));
    for (args, e) in [
        (
            vec!["COPY", k, k],
            "ERR source and destination objects are the same",
        ),
        (
            vec!["COPY", k, "o", "DB", "1"],
            "ERR DB index is out of range",
        ),
        (
            vec!["COPY", k, "o", "DB", "x"],
            "ERR value is not an integer or out of range",
        ),
        (vec!["COPY", k, "o", "NOPE"], "ERR syntax error"),
        (vec!["RENAME", "mv:none", "o"], "ERR no such key"),
        (vec!["RENAMENX", "mv:none", "o"], "ERR no such key"),
    ] {
        assert_eq!(
            query_err(&mut c, cmd(args[0]).arg(&args[1..])),
            e,
            "{args:?}"
        );
    }
    // Inside MULTI, with both keys on one worker or on two.
    let (x, y) = (format!("{{{k}}}.x"), format!("{{{k}}}.y"));
    set(&mut c, &x, "1");
    let r: (String, Option<String>, i64) = redis::pipe()
        .atomic()
        .rename(&x, &y)
        .get(&y)
        .cmd("COPY")
        .arg(&y)
        .arg(&x)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, ("OK".into(), Some("1".into()), 1));
    let mut raw = s.raw();
    let mut req = resp(&[b"MULTI"]);
    req.extend(resp(&[b"SET", a[0].as_bytes(), b"moved"]));
    req.extend(resp(&[b"RENAME", a[0].as_bytes(), a[1].as_bytes()]));
    req.extend(resp(&[b"GET", a[1].as_bytes()]));
    req.extend(resp(&[b"EXISTS", a[0].as_bytes()]));
    req.extend(resp(&[b"EXEC"]));
    expect_reply(
        &mut raw,
        &req,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n+OK\r\n$5\r\nmoved\r\n:0\r\n",
    );
}

/// A value passed around keys on every worker by RENAME is, in any transaction's view,
/// always under exactly one key: a RENAME over two workers is atomic.
#[test]
fn a_key_renamed_across_workers_is_never_seen_in_two_places_or_none() {
    let s = server();
    let k = one_per_worker("ring:");
    let mut c = s.client();
    set(&mut c, &k[0], "token");
    let mover = {
        let mut c = s.client();
        let k = k.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                let () = cmd("RENAME")
                    .arg(&k[i % 4])
                    .arg(&k[(i + 1) % 4])
                    .query(&mut c)
                    .unwrap();
            }
        })
    };
    let mut looks = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mover.is_finished() && Instant::now() < deadline {
        let seen = exists_in_one_transaction(&mut c, &k);
        assert_eq!(seen.iter().sum::<i64>(), 1, "{seen:?}");
        looks += 1;
    }
    mover.join().unwrap();
    assert_eq!(
        get(&mut c, &k[0]),
        Some("token".into()),
        "after {looks} looks"
    );
}

/// Bitmap commands on string values, end to end (their rules are checked against a model in
/// `net/src/cmd/bits.rs`).
#[test]
fn bitmap_commands_read_and_write_string_values() {
    let s = server();
    let mut c = s.client();
    assert_eq!(int(&mut c, cmd("SETBIT").arg("bm").arg(7).arg(1)), 0);
    assert_eq!(int(&mut c, cmd("SETBIT").arg("bm").arg(100).arg(1)), 0);
    assert_eq!(int(&mut c, cmd("GETBIT").arg("bm").arg(100)), 1);
    assert_eq!(int(&mut c, cmd("STRLEN").arg("bm")), 13);
    assert_eq!(int(&mut c, cmd("BITCOUNT").arg("bm")), 2);
    assert_eq!(int(&mut c, cmd("BITPOS").arg("bm").arg(1).arg(1)), 100);
    assert_eq!(int(&mut c, cmd("BITPOS").arg("bm").arg(0)), 0);
    set(&mut c, "bm2", "foobar");
    assert_eq!(
        int(&mut c, cmd("BITCOUNT").arg("bm2").arg(5).arg(30).arg("BIT")),
        17
    );
    assert_eq!(
        query_err(&mut c, cmd("SETBIT").arg("bm").arg(-1).arg(1)),
        "ERR bit offset is not an integer or out of range"
    );
    assert_eq!(
        query_err(&mut c, cmd("GETBIT").arg("bm")),
        "ERR wrong number of arguments for 'getbit' command"
    );
}

#[test]
fn lastsave_save_and_wait_answer_as_in_redis() {
    let s = server();
    let mut c = s.client();
    let t: i64 = cmd("LASTSAVE").query(&mut c).unwrap();
    assert!((t - now_ms() / 1000).abs() < 60);
    let n: i64 = cmd("WAIT").arg(0).arg(0).query(&mut c).unwrap();
    assert_eq!(n, 0);
    // No replicas: as Redis, a WAIT for one blocks until its timeout, then answers 0; the
    // connection's next command waits behind it.
    let mut raw = s.raw();
    let start = Instant::now();
    raw.write_all(&[resp(&[b"WAIT", b"1", b"300"]), resp(&[b"PING"])].concat())
        .unwrap();
    let got = read_n(&mut raw, 11, Duration::from_secs(5));
    assert_eq!(got, b":0\r\n+PONG\r\n");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    // With no timeout it waits for good; closing the connection ends it.
    raw.write_all(&resp(&[b"WAIT", b"1", b"0"])).unwrap();
    assert_eq!(read_n(&mut raw, 1, Duration::from_millis(300)), b"");
    let blocked = || info(&mut s.client(), "clients")["blocked_clients"].clone();
    assert_eq!(blocked(), "1");
    // Without a timeout it is not in Redis's timeout table; with one it is.
    let in_table = || info(&mut s.client(), "clients")["clients_in_timeout_table"].clone();
    assert_eq!(in_table(), "0");
    let mut timed = s.raw();
    timed.write_all(&resp(&[b"WAIT", b"1", b"60000"])).unwrap();
    assert!(wait_until(Duration::from_secs(5), || in_table() == "1"));
    drop(timed);
    drop(raw);
    assert!(wait_until(Duration::from_secs(5), || blocked() == "0"));
    assert_eq!(
        query_err(&mut c, cmd("WAIT").arg(0).arg(-1)),
        "ERR timeout is negative"
    );
    assert_eq!(
        query_err(&mut c, cmd("WAIT").arg(0).arg("soon")),
        "ERR timeout is not an integer or out of range"
    );
    // Cluster commands on a standalone server: Redis's answer without cluster support.
    assert_eq!(
        query_err(&mut c, &cmd("READONLY")),
        "ERR This instance has cluster support disabled"
    );
    // SAVE and BGSAVE fsync every log now; LASTSAVE is the time of the last one.
    set(&mut c, "before-save", "v");
    std::thread::sleep(Duration::from_millis(1100));
    let () = cmd("SAVE").query(&mut c).unwrap();
    let saved: i64 = cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(saved > t, "LASTSAVE {saved} after SAVE, {t} before");
    for args in [&["BGSAVE"][..], &["BGSAVE", "schedule"]] {
        let mut q = cmd(args[0]);
        q.arg(&args[1..]);
        let status: String = q.query(&mut c).unwrap();
        assert_eq!(status, "Background saving started");
    }
    for args in [&["now"][..], &["schedule", "x"]] {
        assert_eq!(
            query_err(&mut c, cmd("BGSAVE").arg(args)),
            "ERR syntax error"
        );
    }
    let persistence = info(&mut c, "persistence");
    assert_eq!(persistence["rdb_last_save_time"], saved.to_string());
    assert_eq!(persistence["rdb_bgsave_in_progress"], "0");
    assert!(
        query_err(&mut c, cmd("MEMORY").arg("STATS"))
            .starts_with("ERR MEMORY STATS is not supported")
    );
    set(&mut c, "k", "v");
    assert_eq!(get(&mut c, "k").as_deref(), Some("v"));
}

#[test]
fn object_and_memory_usage_run_on_the_key_owner() {
    // Four workers: most keys live on a worker other than the connection's.
    let s = Server::start(&["--workers", "4"]);
    let mut c = s.client();
    for i in 0..40 {
        let k = format!("intro:{i}");
        let v = if i % 2 == 0 {
            i.to_string()
        } else {
            "x".repeat(i * 3)
        };
        set(&mut c, &k, &v);
        let enc: String = cmd("OBJECT").arg("ENCODING").arg(&k).query(&mut c).unwrap();
        let want = if i % 2 == 0 {
            "int"
        } else if i * 3 <= 44 {
            "embstr"
        } else {
            "raw"
        };
        assert_eq!(enc, want, "{k}");
        let n: i64 = cmd("object").arg("refcount").arg(&k).query(&mut c).unwrap();
        assert_eq!(n, 1);
        let bytes: i64 = cmd("MEMORY").arg("USAGE").arg(&k).query(&mut c).unwrap();
        assert!((48..1000).contains(&bytes), "{k}: {bytes}");
        assert!(
            query_err(&mut c, cmd("OBJECT").arg("IDLETIME").arg(&k))
                .contains("idle time not tracked")
        );
    }
    let none: Option<String> = cmd("OBJECT")
        .arg("ENCODING")
        .arg("intro:none")
        .query(&mut c)
        .unwrap();
    assert_eq!(none, None);
    let none: Option<i64> = cmd("MEMORY")
        .arg("USAGE")
        .arg("intro:none")
        .query(&mut c)
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(
        query_err(&mut c, cmd("OBJECT").arg("ENCODING")),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        query_err(&mut c, cmd("OBJECT").arg("FOO").arg("k")),
        "ERR unknown subcommand 'FOO'. Try OBJECT HELP."
    );
    assert_eq!(
        query_err(
            &mut c,
            cmd("MEMORY")
                .arg("USAGE")
                .arg("intro:0")
                .arg("SAMPLES")
                .arg("-1")
        ),
        "ERR syntax error"
    );
    let help: Vec<String> = cmd("OBJECT").arg("HELP").query(&mut c).unwrap();
    assert!(help[0].starts_with("OBJECT <subcommand>"), "{help:?}");
    let help: Vec<String> = cmd("MEMORY").arg("HELP").query(&mut c).unwrap();
    assert!(
        help.iter().any(|l| l.starts_with("USAGE <key>")),
        "{help:?}"
    );
    let () = cmd("MEMORY").arg("PURGE").query(&mut c).unwrap();
    // used_memory is the allocator's bytes in use, apart from the resident size.
    let me = info(&mut c, "memory");
    let num = |k: &str| -> u64 { me[k].parse().unwrap() };
    assert!(
        num("used_memory") > 0 && num("used_memory_rss") > 0,
        "{me:?}"
    );
    assert_ne!(num("used_memory"), num("used_memory_rss"), "{me:?}");
    assert!(me.contains_key("mem_fragmentation_ratio"), "{me:?}");
}

#[test]
fn odd_layouts_route_every_command() {
    // More workers than partitions (idle workers still take connections), and counts that do
    // not divide each other.
    for (partitions, workers) in [(1u32, 3u32), (5, 2), (7, 4)] {
        let p = format!("storage.partitions={partitions}");
        let w = workers.to_string();
        let s = Server::start(&["--workers", &w, "--set", &p]);
        // One connection per worker (they are dealt round robin).
        let mut conns: Vec<Connection> = (0..workers).map(|_| s.client()).collect();
        let keys: Vec<String> = (0..300).map(|i| format!("odd:{i}")).collect();
        let mut m = cmd("MSET");
        for k in &keys {
            m.arg(k).arg(k);
        }
        let () = m.query(&mut conns[0]).unwrap();
        for c in conns.iter_mut() {
            assert_eq!(int(c, &mut cmd("DBSIZE")), 300);
        }
        for c in conns.iter_mut() {
            let got: Vec<String> = cmd("MGET").arg(&keys).query(c).unwrap();
            assert_eq!(got, keys, "{partitions}/{workers}");
            let scanned = scan_all(c, Some("odd:*"), 16);
            assert_eq!(scanned.len(), 300, "{partitions}/{workers}");
            assert_eq!(scanned.iter().collect::<HashSet<_>>().len(), 300);
            let all: Vec<String> = cmd("KEYS").arg("odd:*").query(c).unwrap();
            assert_eq!(all.len(), 300);
            let r: String = cmd("RANDOMKEY").query(c).unwrap();
            assert!(r.starts_with("odd:") || r == "ctr", "{r}");
            assert_eq!(
                int(c, cmd("INCR").arg("ctr")),
                int(c, cmd("GET").arg("ctr"))
            );
        }
        assert_eq!(int(&mut conns[1], cmd("DEL").arg(&keys)), 300);
        assert_eq!(int(&mut conns[0], &mut cmd("DBSIZE")), 1);
    }
}

/// BITFIELD reads and writes integers inside a string; BITOP combines strings on any mix of
/// workers into a destination on any worker; LCS compares two keys on any workers. Each
/// answers as Redis 7.0 does.
#[test]
fn bitfield_bitop_and_lcs_work_on_keys_of_any_workers() {
    let s = server();
    let mut c = s.client();
    let r: Vec<Option<i64>> = cmd("BITFIELD")
        .arg("bf")
        .arg(&[
            "SET", "u8", "#1", "200", "INCRBY", "i5", "100", "1", "GET", "u4", "0",
        ])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, [Some(0), Some(1), Some(0)]);
    let r: Vec<Option<i64>> = cmd("BITFIELD")
        .arg("bf")
        .arg(&[
            "OVERFLOW", "FAIL", "INCRBY", "u8", "#1", "100", "GET", "u8", "8",
        ])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, [None, Some(200)]);
    let r: Vec<i64> = cmd("BITFIELD_RO")
        .arg("bf")
        .arg(&["GET", "u8", "8"])
        .query(&mut c)
        .unwrap();
    assert_eq!(r, [200]);
    assert_eq!(
        query_err(
            &mut c,
            cmd("BITFIELD_RO").arg("bf").arg(&["SET", "u8", "0", "1"])
        ),
        "ERR BITFIELD_RO only supports the GET subcommand"
    );
    // Sources and destination on every combination of workers.
    let a = one_per_worker("bop-a:");
    let b = one_per_worker("bop-b:");
    let d = one_per_worker("bop-d:");
    for (i, ka) in a.iter().enumerate() {
        for (j, kb) in b.iter().enumerate() {
            for (k, kd) in d.iter().enumerate() {
                let at = format!("a on {i}, b on {j}, dest on {k}");
                let () = cmd("SET")
                    .arg(ka)
                    .arg(b"\xff\x0f\x01")
                    .query(&mut c)
                    .unwrap();
                let () = cmd("SET").arg(kb).arg(b"\xf0").query(&mut c).unwrap();
                let () = cmd("SET")
                    .arg(kd)
                    .arg("old")
                    .arg("EX")
                    .arg(100)
                    .query(&mut c)
                    .unwrap();
                let mut p = redis::pipe();
                p.cmd("BITOP").arg("AND").arg(kd).arg(ka).arg(kb);
                // Pipelined behind it: reads the result, as Redis would.
                p.cmd("GET").arg(kd).cmd("TTL").arg(kd);
                p.cmd("BITOP")
                    .arg("XOR")
                    .arg(kd)
                    .arg(ka)
                    .arg(kb)
                    .arg("bop-missing");
                p.cmd("GET").arg(kd);
                let (n, v, ttl, n2, v2): (i64, Vec<u8>, i64, i64, Vec<u8>) =
                    p.query(&mut c).unwrap();
                assert_eq!((n, v, ttl), (3, vec![0xf0, 0, 0], -1), "{at}");
                assert_eq!((n2, v2), (3, vec![0x0f, 0x0f, 0x01]), "{at}");
                let lcs: Vec<u8> = cmd("LCS").arg(ka).arg(kd).query(&mut c).unwrap();
                assert_eq!(lcs, [0x0f, 0x01], "{at}");
            }
        }
    }
    // A source named several times, on workers other than the destination's, is read once
    // and counted each time.
    let () = cmd("SET").arg(&a[1]).arg("ab").query(&mut c).unwrap();
    let n: i64 = cmd("BITOP")
        .arg("XOR")
        .arg(&d[0])
        .arg(&a[1])
        .arg(&a[1])
        .arg(&b[2])
        .arg(&a[1])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let v: Vec<u8> = cmd("GET").arg(&d[0]).query(&mut c).unwrap();
    assert_eq!(v, [b'a' ^ 0xf0, b'b']);
    let () = cmd("SET")
        .arg(&a[1])
        .arg(b"\xff\x0f\x01")
        .query(&mut c)
        .unwrap();
    let not: i64 = cmd("BITOP")
        .arg("NOT")
        .arg(&d[0])
        .arg(&a[1])
        .query(&mut c)
        .unwrap();
    assert_eq!(not, 3);
    let v: Vec<u8> = cmd("GET").arg(&d[0]).query(&mut c).unwrap();
    assert_eq!(v, [0x00, 0xf0, 0xfe]);
    // An empty result deletes the destination.
    let n: i64 = cmd("BITOP")
        .arg("OR")
        .arg(&d[0])
        .arg("none1")
        .arg("none2")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(get(&mut c, &d[0]), None);
    assert_eq!(
        query_err(&mut c, cmd("BITOP").arg("NOT").arg("x").arg("y").arg("z")),
        "ERR BITOP NOT must be called with a single source key."
    );
    set(&mut c, "lcs1", "ohmytext");
    set(&mut c, "lcs2", "mynewtext");
    let lcs: String = cmd("LCS").arg("lcs1").arg("lcs2").query(&mut c).unwrap();
    assert_eq!(lcs, "mytext");
    assert_eq!(
        int(&mut c, cmd("LCS").arg("lcs1").arg("lcs2").arg("LEN")),
        6
    );
    let idx: redis::Value = cmd("LCS")
        .arg(&["lcs1", "lcs2", "IDX", "MINMATCHLEN", "4", "WITHMATCHLEN"])
        .query(&mut c)
        .unwrap();
    let ints = |v: &[i64]| redis::Value::Array(v.iter().map(|&n| redis::Value::Int(n)).collect());
    let expect = redis::Value::Array(vec![
        redis::Value::BulkString(b"matches".to_vec()),
        redis::Value::Array(vec![redis::Value::Array(vec![
            ints(&[4, 7]),
            ints(&[5, 8]),
            redis::Value::Int(4),
        ])]),
        redis::Value::BulkString(b"len".to_vec()),
        redis::Value::Int(6),
    ]);
    assert_eq!(idx, expect);
    // Inside MULTI, with keys on one worker or on several.
    let mut p = redis::pipe();
    p.atomic()
        .cmd("BITOP")
        .arg("OR")
        .arg("{t}d")
        .arg("{t}a")
        .arg("{t}b")
        .cmd("LCS")
        .arg("{t}a")
        .arg("{t}d");
    let (n, l): (i64, String) = p.query(&mut c).unwrap();
    assert_eq!((n, l.as_str()), (0, ""));
    let mut p = redis::pipe();
    p.atomic()
        .set(&a[1], "ab")
        .set(&b[2], "\x01\x01\x04")
        .cmd("BITOP")
        .arg("OR")
        .arg(&d[0])
        .arg(&a[1])
        .arg(&b[2])
        .get(&d[0])
        .cmd("LCS")
        .arg(&a[1])
        .arg(&d[0]);
    let r: (String, String, i64, Vec<u8>, String) = p.query(&mut c).unwrap();
    assert_eq!(
        r,
        ("OK".into(), "OK".into(), 3, b"ac\x04".to_vec(), "a".into())
    );
}

/// DBSIZE, KEYS, RANDOMKEY, FLUSHDB, FLUSHALL and SELECT run inside a transaction (redis-py's
/// default pipeline is one), each over every worker's share, in queue order with the rest.
#[test]
fn keyspace_wide_commands_run_inside_a_transaction() {
    let s = server();
    let mut c = s.client();
    let keys = one_per_worker("ksw:");
    for k in &keys {
        set(&mut c, k, "v");
    }
    let mut p = redis::pipe();
    p.atomic()
        .cmd("SELECT")
        .arg(0)
        .cmd("DBSIZE")
        .cmd("KEYS")
        .arg("ksw:*")
        .cmd("RANDOMKEY")
        .cmd("FLUSHDB")
        .cmd("DBSIZE")
        .cmd("SET")
        .arg(&keys[1])
        .arg("w")
        .cmd("KEYS")
        .arg("*")
        .cmd("FLUSHALL")
        .arg("SYNC")
        .cmd("EXISTS")
        .arg(&keys[1]);
    #[allow(clippy::type_complexity)]
    let (sel, n, mut found, random, (), n2, (), after, (), exists): (
        String,
        i64,
        Vec<String>,
        String,
        (),
        i64,
        (),
        Vec<String>,
        (),
        i64,
    ) = p.query(&mut c).unwrap();
    found.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!((sel.as_str(), n, found), ("OK", keys.len() as i64, want));
    assert!(keys.contains(&random), "{random}");
    assert_eq!((n2, after, exists), (0, vec![keys[1].clone()], 0));
    // Their argument errors are answered in EXEC's array, as in Redis.
    let mut p = redis::pipe();
    p.atomic()
        .cmd("SET")
        .arg("ksw:x")
        .arg(1)
        .cmd("FLUSHDB")
        .arg("LATER");
    let e = p.query::<()>(&mut c).unwrap_err();
    assert!(e.to_string().contains("syntax error"), "{e}");
    assert_eq!(get(&mut c, "ksw:x").as_deref(), Some("1"));
}

/// Inside MULTI, RENAME, RENAMENX, COPY, MSETNX, BITOP and LCS take keys on any workers and
/// see what the commands queued before them did, as in Redis: such a transaction runs in
/// sequence, carrying values from worker to worker (`net/src/server/seqtx.rs`). The
/// expected replies are redis-server 7's for the same queue.
#[test]
fn transactions_carry_values_between_workers_as_redis_runs_them() {
    let s = server();
    let k = one_per_worker("sq:");
    let mut raw = s.raw();
    let (k0, k1, k2, k3) = (
        k[0].as_bytes(),
        k[1].as_bytes(),
        k[2].as_bytes(),
        k[3].as_bytes(),
    );
    let queue: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", k0, b"5"],
        vec![b"RENAME", k0, k1],
        vec![b"INCR", k1],
        vec![b"EXISTS", k0],
        vec![b"COPY", k1, k2],
        vec![b"COPY", k1, k2],
        vec![b"COPY", k1, k2, b"REPLACE"],
        vec![b"RENAMENX", k2, k1],
        vec![b"RENAMENX", k2, k3],
        vec![b"RENAME", k0, k3],
        vec![b"MSETNX", k0, b"a", k3, b"b"],
        vec![b"MSETNX", k0, b"a", k2, b"b"],
        vec![b"MGET", k0, k1, k2, k3],
        vec![b"BITOP", b"XOR", k0, k1, k2],
        vec![b"LCS", k1, k3],
        vec![b"GET", k0],
        vec![b"PEXPIRE", k3, b"100000"],
        vec![b"RENAME", k3, k0],
        vec![b"TTL", k0],
        vec![b"COPY", k1, k2, b"NOPE"],
        vec![b"DBSIZE"],
    ];
    let mut req = resp(&[b"MULTI"]);
    let mut want = b"+OK\r\n".to_vec();
    for c in &queue {
        req.extend(resp(c));
        want.extend(b"+QUEUED\r\n");
    }
    req.extend(resp(&[b"EXEC"]));
    want.extend(
        &b"*21\r\n+OK\r\n+OK\r\n:6\r\n:0\r\n:1\r\n:0\r\n:1\r\n:0\r\n:1\r\n\
           -ERR no such key\r\n:0\r\n:1\r\n*4\r\n$1\r\na\r\n$1\r\n6\r\n$1\r\nb\r\n$1\r\n6\r\n\
           :1\r\n$1\r\n6\r\n$1\r\nT\r\n:1\r\n+OK\r\n:100\r\n-ERR syntax error\r\n:3\r\n"[..],
    );
    expect_reply(&mut raw, &req, &want);
    // The same through a client library, with the writes seen by plain commands after.
    let mut c = s.client();
    assert_eq!(get(&mut c, &k[0]), Some("6".into()));
    assert_eq!(get(&mut c, &k[2]), Some("b".into()));
    assert_eq!(int(&mut c, cmd("EXISTS").arg(&k[3])), 0);
    // An MSETNX over the value limit fails alone, as on one worker; the rest runs.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("limits.max_value_len")
        .arg(10)
        .query(&mut c)
        .unwrap();
    let mut req = resp(&[b"MULTI"]);
    req.extend(resp(&[b"SET", k3, b"x"]));
    req.extend(resp(&[b"MSETNX", k1, b"a value of 20 bytes!", k2, b"b"]));
    req.extend(resp(&[b"GET", k3]));
    req.extend(resp(&[b"EXEC"]));
    expect_reply(
        &mut raw,
        &req,
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n\
          -ERR value is 20 bytes, over the limit of 10 (limits.max_value_len)\r\n$1\r\nx\r\n",
    );
}

/// A transaction running in sequence checks its watched keys as any other: a watched key
/// changed makes EXEC answer nil with nothing of it done, on every worker.
#[test]
fn a_watched_transaction_in_sequence_runs_nothing_when_a_key_changed() {
    let s = server();
    let k = one_per_worker("sqw:");
    let mut c = s.client();
    let mut other = s.client();
    set(&mut c, &k[0], "v");
    // RENAME from worker 0 to worker 3, and a SET on worker 1, in one transaction.
    let exec = |c: &mut Connection| -> Option<(String, String)> {
        redis::pipe()
            .atomic()
            .cmd("RENAME")
            .arg(&k[0])
            .arg(&k[3])
            .set(&k[1], "x")
            .query(c)
            .unwrap()
    };
    for (w, watched) in k.iter().enumerate() {
        let () = cmd("WATCH").arg(watched).query(&mut c).unwrap();
        set(&mut other, watched, &format!("changed{w}"));
        assert_eq!(exec(&mut c), None, "watching {watched} on worker {w}");
        let after: Vec<Option<String>> = (0..4).map(|i| get(&mut c, &k[i])).collect();
        let expect: Vec<Option<String>> = (0..4)
            .map(|i| (i <= w).then(|| format!("changed{i}")))
            .collect();
        assert_eq!(after, expect, "watching {watched} on worker {w}");
    }
    // Nothing changed since WATCH: it runs.
    let () = cmd("WATCH").arg(&k[2]).query(&mut c).unwrap();
    assert_eq!(exec(&mut c), Some(("OK".into(), "OK".into())));
    let after: Vec<Option<String>> = (0..4).map(|i| get(&mut c, &k[i])).collect();
    let expect = [None, Some("x"), Some("changed2"), Some("changed0")];
    assert_eq!(after, expect.map(|v| v.map(String::from)));
}

/// Two values moved around keys on every worker by transactions that run in sequence
/// (RENAME, or COPY then DEL, with a read of the new place) are, in any other transaction's
/// or multi-key command's view, always under exactly one key each, and each mover reads its
/// value where it just put it.
#[test]
fn values_moved_by_transactions_across_workers_are_always_in_exactly_one_place() {
    let s = server();
    let rings = [one_per_worker("sqa:"), one_per_worker("sqb:")];
    let mut c = s.client();
    for (r, ring) in rings.iter().enumerate() {
        set(&mut c, &ring[0], &format!("token{r}"));
    }
    let movers: Vec<_> = rings
        .iter()
        .enumerate()
        .map(|(r, ring)| {
            let mut c = s.client();
            let ring = ring.clone();
            std::thread::spawn(move || {
                let token = format!("token{r}");
                for i in 0..200 {
                    let step = 1 + 2 * r;
                    let (from, to) = (&ring[i * step % 4], &ring[(i + 1) * step % 4]);
                    let got: Option<String> = if i % 2 == 0 {
                        let (_, v): (String, Option<String>) = redis::pipe()
                            .atomic()
                            .rename(from, to)
                            .get(to)
                            .query(&mut c)
                            .unwrap();
                        v
                    } else {
                        let (copied, deleted, v): (i64, i64, Option<String>) = redis::pipe()
                            .atomic()
                            .cmd("COPY")
                            .arg(from)
                            .arg(to)
                            .del(from)
                            .get(to)
                            .query(&mut c)
                            .unwrap();
                        assert_eq!((copied, deleted), (1, 1), "move {i} of ring {r}");
                        v
                    };
                    assert_eq!(got.as_deref(), Some(token.as_str()), "move {i} of ring {r}");
                }
            })
        })
        .collect();
    let all: Vec<&String> = rings.iter().flatten().collect();
    let mut looks = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while movers.iter().any(|m| !m.is_finished()) && Instant::now() < deadline {
        let seen: Vec<Option<String>> = cmd("MGET").arg(&all).query(&mut c).unwrap();
        for (r, ring) in seen.chunks(4).enumerate() {
            let present: Vec<&String> = ring.iter().flatten().collect();
            assert_eq!(present, [&format!("token{r}")], "{seen:?}");
        }
        let exists = exists_in_one_transaction(&mut c, &all);
        assert_eq!(exists.iter().sum::<i64>(), 2, "{exists:?}");
        looks += 1;
    }
    for m in movers {
        m.join().unwrap();
    }
    // 200 moves of one place each, and of two places each.
    for (r, ring) in rings.iter().enumerate() {
        let token = Some(format!("token{r}"));
        assert_eq!(get(&mut c, &ring[0]), token, "ring {r} after {looks} looks");
    }
}

/// INFO's used_memory_peak keeps the most memory the server held (a 20 MB value half sent
/// holds its query buffer), and CONFIG RESETSTAT starts it again, as in Redis.
#[test]
fn info_memory_peak_remembers_the_most_memory_held() {
    let s = server();
    let mut c = s.client();
    let mem = |c: &mut Connection| {
        let me = info(c, "memory");
        let n = |k: &str| me[k].parse::<u64>().unwrap();
        (n("used_memory"), n("used_memory_peak"))
    };
    let (_, peak_before) = mem(&mut c);
    let mut raw = s.raw();
    let len = 20_000_000;
    raw.write_all(format!("*3\r\n$3\r\nSET\r\n$4\r\nbig1\r\n${len}\r\n").as_bytes())
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..19 {
        raw.write_all(&chunk).unwrap();
    }
    // Held while the value is incomplete: INFO samples it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = mem(&mut c);
    while held.1 < peak_before + 19_000_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        held = mem(&mut c);
    }
    assert!(
        held.1 >= peak_before + 19_000_000,
        "{held:?} from {peak_before}"
    );
    raw.write_all(&vec![b'x'; len - 19 * (1 << 20)]).unwrap();
    raw.write_all(b"\r\n").unwrap();
    let mut ok = [0u8; 5];
    raw.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let () = cmd("DEL").arg("big1").query(&mut c).unwrap();
    drop(raw);
    // The buffer is gone; the peak stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = mem(&mut c);
    while after.0 >= held.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = mem(&mut c);
    }
    assert!(
        after.0 < held.0 && after.1 >= held.1,
        "{after:?} after {held:?}"
    );
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let reset = mem(&mut c);
    assert!(
        reset.1 < held.1 && reset.1 >= reset.0,
        "{reset:?} after {held:?}"
    );
}

/// A worker holding for a command over several workers still serves single-key commands on
/// keys that command does not touch, from its own connections; the command's own keys wait.
/// Here worker 0 holds for an MSET whose step waits behind a long LCS on worker 3: a GET of
/// another key of worker 0 answers long before the LCS ends, from the one probe connection
/// that lives on worker 0 (connections are spread round robin), and the MSET's key there
/// is read only with the MSET applied.
/// Runs `LCS a b LEN` twice on `lc` to time it here (build and machine; the faster run, as a
/// busy machine can slow one down a lot), then again in a thread from `start`, which answers
/// how long after `start` it ended. Returns a sixth of the measured time: the step the
/// caller's timeline goes by.
fn lcs_in_background(
    mut lc: Connection,
    a: String,
    b: String,
) -> (Duration, Instant, std::thread::JoinHandle<Duration>) {
    let lcs_len = move |lc: &mut Connection| {
        let n: i64 = cmd("LCS").arg(&a).arg(&b).arg("LEN").query(lc).unwrap();
        assert!(n > 0);
    };
    let took = |lc: &mut Connection| {
        let t = Instant::now();
        lcs_len(lc);
        t.elapsed()
    };
    let step = took(&mut lc).min(took(&mut lc)) / 6;
    let start = Instant::now();
    let lcs = std::thread::spawn(move || {
        lcs_len(&mut lc);
        start.elapsed()
    });
    (step, start, lcs)
}

#[test]
fn a_held_worker_serves_keys_the_held_command_does_not_touch() {
    let s = server();
    let k = one_per_worker("hw:");
    let (la, lb) = (format!("{{{}}}a", k[3]), format!("{{{}}}b", k[3]));
    let m = one_per_worker("hm:");
    let g = one_per_worker("hg:");
    let mut c = s.client();
    set(&mut c, &la, &"ab".repeat(3000));
    set(&mut c, &lb, &"ba".repeat(3000));
    set(&mut c, &g[0], "free");
    set(&mut c, &m[0], "old");
    // Every connection is made first (a client library's handshake on a connection of the
    // busy worker would wait for the LCS). Connections go to the workers round robin, so
    // WORKERS of them have one on each; an MSET read by the LCS's worker only runs after it.
    let probes: Vec<Connection> = (0..WORKERS).map(|_| s.client()).collect();
    let msets: Vec<std::net::TcpStream> = (0..WORKERS).map(|_| s.raw()).collect();
    let lc = s.client();
    let (step, start, lcs) = lcs_in_background(lc, la, lb);
    std::thread::sleep(step);
    let mset_req = resp(&[b"MSET", m[0].as_bytes(), b"new", m[3].as_bytes(), b"new"]);
    let mset = std::thread::spawn(move || {
        let mut msets = msets;
        for c in &mut msets {
            c.write_all(&mset_req).unwrap();
        }
        for c in &mut msets {
            let mut ok = [0u8; 5];
            c.read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"+OK\r\n");
        }
        start.elapsed()
    });
    std::thread::sleep(step);
    let gets: Vec<_> = probes
        .into_iter()
        .map(|mut p| {
            let (g0, m0) = (g[0].clone(), m[0].clone());
            std::thread::spawn(move || {
                let free: Option<String> = cmd("GET").arg(&g0).query(&mut p).unwrap();
                let at = start.elapsed();
                let held: Option<String> = cmd("GET").arg(&m0).query(&mut p).unwrap();
                (free, at, held)
            })
        })
        .collect();
    let gets: Vec<_> = gets.into_iter().map(|t| t.join().unwrap()).collect();
    let (lcs_at, mset_at) = (lcs.join().unwrap(), mset.join().unwrap());
    for (free, _, held) in &gets {
        assert_eq!(free.as_deref(), Some("free"));
        assert_eq!(
            held.as_deref(),
            Some("new"),
            "the MSET's key is read only once it ran"
        );
    }
    let first = gets.iter().map(|(_, at, _)| *at).min().unwrap();
    assert!(
        first + step / 2 < lcs_at && mset_at + step / 2 > lcs_at,
        "a free key answered at {first:?}, the LCS at {lcs_at:?}, the MSET at {mset_at:?}: {gets:?}"
    );
}

/// A read in `pipelines_past_a_hold`: key, value, sent at, answered at.
type TimedRead = (String, Option<String>, Duration, Duration);

/// What `pipelines_past_a_hold` saw.
struct PipelinesPastAHold {
    /// Each pipeline's two keys, in the order it wrote them.
    pairs: Vec<(String, String)>,
    seen: Vec<TimedRead>,
    checked: Vec<TimedRead>,
    lcs_at: Duration,
}

impl PipelinesPastAHold {
    /// Pipelines whose second key was seen new before their first key was read old: their
    /// SETs took effect out of order.
    fn out_of_order(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (first, second) in &self.pairs {
            let second_new = self
                .seen
                .iter()
                .filter(|(k, v, _, _)| k == second && v.as_deref() == Some("new"))
                .map(|(_, _, _, answered)| *answered)
                .min();
            let Some(new_at) = second_new else {
                continue;
            };
            for (_, v, sent, _) in self.checked.iter().filter(|(k, ..)| k == first) {
                if *sent > new_at && v.as_deref() == Some("old") {
                    out.push(format!(
                        "{first} read old at {sent:?}, after {second} was seen new at {new_at:?}"
                    ));
                }
            }
        }
        out
    }
}

/// Redis runs a connection's commands one after another: once another client has seen the
/// effect of a pipeline's second command, nobody sees the state before its first. Here the
/// first `SET` of each pipeline goes to a worker held still (for an MSET that waits on a long
/// LCS elsewhere) and the second to a free one. "Seers" read the second keys while the hold
/// lasts; then "checkers" read the first keys (the held worker's own client runs those
/// reads meanwhile: the hold does not touch them). Checks that both kinds of reads ran
/// during the hold, and that the pipelines took effect in the end. On a busy machine the LCS
/// may end before the reads were sent (its timing run was slow): tried up to three times.
fn pipelines_past_a_hold(s: &Server) -> PipelinesPastAHold {
    let mut tries = Vec::new();
    for _ in 0..3 {
        match pipelines_past_a_hold_once(s) {
            Ok(run) => return run,
            Err(e) => tries.push(e),
        }
    }
    panic!("the reads never ran during the hold: {tries:#?}");
}

fn pipelines_past_a_hold_once(s: &Server) -> Result<PipelinesPastAHold, String> {
    let k = one_per_worker("po:");
    let (la, lb) = (format!("{{{}}}a", k[3]), format!("{{{}}}b", k[3]));
    let m = one_per_worker("pm:");
    // One pair per pipelining connection: the first key on worker 0 (held), the second on
    // worker 1.
    let pairs: Vec<(String, String)> = (0..WORKERS)
        .map(|i| {
            let x = one_per_worker(&format!("px{i}:"));
            (x[0].clone(), x[1].clone())
        })
        .collect();
    let mut c = s.client();
    set(&mut c, &la, &"ab".repeat(3000));
    set(&mut c, &lb, &"ba".repeat(3000));
    for (first, second) in &pairs {
        set(&mut c, first, "old");
        set(&mut c, second, "old");
    }
    // Connections go to the workers round robin: WORKERS of each kind put one on each.
    let seers: Vec<Connection> = (0..WORKERS).map(|_| s.client()).collect();
    let checkers: Vec<Connection> = (0..WORKERS).map(|_| s.client()).collect();
    let mut pipes: Vec<std::net::TcpStream> = (0..WORKERS).map(|_| s.raw()).collect();
    let mut msets: Vec<std::net::TcpStream> = (0..WORKERS).map(|_| s.raw()).collect();
    let lc = s.client();
    let (step, start, lcs) = lcs_in_background(lc, la, lb);
    std::thread::sleep(step);
    // Worker 0 holds for these MSETs until worker 3 is done with the LCS (the one sent from
    // worker 3 is read only then).
    let mset_req = resp(&[b"MSET", m[0].as_bytes(), b"1", m[3].as_bytes(), b"1"]);
    for c in &mut msets {
        c.write_all(&mset_req).unwrap();
    }
    std::thread::sleep(step);
    for (p, (first, second)) in pipes.iter_mut().zip(&pairs) {
        let mut req = resp(&[b"SET", first.as_bytes(), b"new"]);
        req.extend(resp(&[b"SET", second.as_bytes(), b"new"]));
        p.write_all(&req).unwrap();
    }
    // Each reader reads its keys one after another; (key, value, sent at, answered at).
    let read_all = |readers: Vec<Connection>, keys: Vec<String>| -> Vec<_> {
        readers
            .into_iter()
            .map(|mut r| {
                let keys = keys.clone();
                std::thread::spawn(move || {
                    let seen: Vec<_> = keys
                        .iter()
                        .map(|key| {
                            let sent = start.elapsed();
                            let value = get(&mut r, key);
                            (key.clone(), value, sent, start.elapsed())
                        })
                        .collect();
                    seen
                })
            })
            .collect()
    };
    std::thread::sleep(step / 2);
    let seen = read_all(seers, pairs.iter().map(|p| p.1.clone()).collect());
    std::thread::sleep(step);
    let checked = read_all(checkers, pairs.iter().map(|p| p.0.clone()).collect());
    let seen: Vec<_> = seen.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let checked: Vec<_> = checked
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let lcs_at = lcs.join().unwrap();
    for p in &mut pipes {
        let mut ok = [0u8; 10];
        p.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n+OK\r\n");
    }
    for c in &mut msets {
        let mut ok = [0u8; 5];
        c.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"+OK\r\n");
    }
    // Both kinds of reads ran during the hold, and a checker saw a first key not written
    // yet (else this test shows nothing). Only pipelines from workers 1 and 2 can show the
    // disorder: worker 0's runs its first SET during the hold, worker 3's after the LCS.
    let early = |reads: &[(String, Option<String>, Duration, Duration)]| {
        reads.iter().filter(|r| r.3 < lcs_at).count()
    };
    let held_old = checked
        .iter()
        .any(|(_, v, _, answered)| v.as_deref() == Some("old") && *answered < lcs_at);
    for (first, second) in &pairs {
        assert_eq!(get(&mut c, first).as_deref(), Some("new"));
        assert_eq!(get(&mut c, second).as_deref(), Some("new"));
    }
    if !(early(&seen) > 0 && early(&checked) > 0 && held_old) {
        return Err(format!(
            "reads did not run during the hold (LCS done at {lcs_at:?}): seen {seen:?}, checked {checked:?}"
        ));
    }
    Ok(PipelinesPastAHold {
        pairs,
        seen,
        checked,
        lcs_at,
    })
}

#[test]
fn a_pipeline_takes_effect_in_order_across_workers() {
    let s = server();
    let run = pipelines_past_a_hold(&s);
    assert!(order_waits(&s) > 0, "INFO counts the commands that waited");
    let wrong = run.out_of_order();
    assert!(
        wrong.is_empty(),
        "{wrong:?} (LCS done at {:?}): seen {:?}, checked {:?}",
        run.lcs_at,
        run.seen,
        run.checked
    );
}

/// INFO stats `pipeline_order_waits`.
fn order_waits(s: &Server) -> u64 {
    let info: String = cmd("INFO").arg("stats").query(&mut s.client()).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("pipeline_order_waits:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has pipeline_order_waits")
}

/// `server.ordered_pipelines = false` (set at run time) keeps the order per worker only:
/// the same pipelines are seen out of order.
#[test]
fn unordered_pipelines_take_effect_per_worker() {
    let s = server();
    let mut c = s.client();
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("server.ordered_pipelines")
        .arg("no")
        .query(&mut c)
        .unwrap();
    let run = pipelines_past_a_hold(&s);
    assert_eq!(order_waits(&s), 0);
    assert!(
        !run.out_of_order().is_empty(),
        "LCS done at {:?}: seen {:?}, checked {:?}",
        run.lcs_at,
        run.seen,
        run.checked
    );
}

/// EXISTS of each key, all in one MULTI/EXEC (one moment of the keyspace).
fn exists_in_one_transaction(c: &mut Connection, keys: &[impl redis::ToRedisArgs]) -> Vec<i64> {
    let mut p = redis::pipe();
    p.atomic();
    for key in keys {
        p.exists(key);
    }
    p.query(c).unwrap()
}

/// SLOWLOG GET's entries: (id, unix time, microseconds, arguments, client address, name).
type SlowEntry = (i64, i64, i64, Vec<String>, String, String);

fn slowlog(c: &mut Connection, count: Option<i64>) -> Vec<SlowEntry> {
    let mut q = cmd("SLOWLOG");
    q.arg("GET");
    if let Some(n) = count {
        q.arg(n);
    }
    q.query(c).unwrap()
}

#[test]
fn slowlog_keeps_slow_commands_of_every_worker_as_redis_shows_them() {
    let s = server();
    let mut c = s.client();
    let () = cmd("CLIENT")
        .arg("SETNAME")
        .arg("tester")
        .query(&mut c)
        .unwrap();
    let info: String = cmd("CLIENT").arg("INFO").query(&mut c).unwrap();
    let addr = info
        .split(' ')
        .find_map(|f| f.strip_prefix("addr="))
        .unwrap()
        .to_string();
    let cfg: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("slowlog-*")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        cfg,
        ["slowlog-log-slower-than", "10000", "slowlog-max-len", "128"]
    );
    // Every command from here on.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let () = cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let started = now_ms() / 1000;
    // Keys on every worker: those of other workers are timed where they run.
    let keys = spread_keys("slow", 8);
    for k in &keys {
        set(&mut c, k, "v");
    }
    let long = "x".repeat(200);
    set(&mut c, &keys[0], &long);
    // 41 arguments, on one worker (one hash tag): one entry.
    let mut mset = cmd("MSET");
    for i in 0..20 {
        mset.arg(format!("{{t}}k{i}")).arg(i);
    }
    let () = mset.query(&mut c).unwrap();
    let _ = query_err(&mut c, cmd("AUTH").arg("someone").arg("secret"));
    // Over two workers: one entry, where it computes.
    let _: String = cmd("LCS")
        .arg(&keys[1])
        .arg(&keys[2])
        .query(&mut c)
        .unwrap();
    // Commands refused before they run are not logged (as in Redis).
    let _ = query_err(&mut c, cmd("NOSUCHCOMMAND").arg("pw"));
    let _ = query_err(&mut c, &cmd("GET"));
    let _ = query_err(&mut c, cmd("CLIENT").arg("NOSUCH"));
    // A transaction's commands are entries of their own; EXEC and MULTI's queueing are not
    // (MULTI itself is, as in Redis).
    let () = cmd("MULTI").query(&mut c).unwrap();
    let _: String = cmd("APPEND").arg(&keys[1]).arg("t").query(&mut c).unwrap();
    let _: String = cmd("GET").arg(&keys[2]).query(&mut c).unwrap();
    let _: Value = cmd("EXEC").query(&mut c).unwrap();
    let () = cmd("MULTI").query(&mut c).unwrap();
    let () = cmd("DISCARD").query(&mut c).unwrap();
    // Parts run on other workers are entries named as the command, with its options.
    let _: i64 = cmd("LCS")
        .arg(&keys[1])
        .arg(&keys[2])
        .arg("len")
        .query(&mut c)
        .unwrap();
    let _: i64 = cmd("BITOP")
        .arg("or")
        .arg("slowdest")
        .arg(&keys[1])
        .arg(&keys[2])
        .query(&mut c)
        .unwrap();
    let _: i64 = cmd("TOUCH").arg(&keys).query(&mut c).unwrap();
    let _: i64 = cmd("COPY")
        .arg(&keys[3])
        .arg(&keys[4])
        .arg("REPLACE")
        .query(&mut c)
        .unwrap();
    let gone = spread_keys("gone", 8);
    for k in &gone {
        set(&mut c, k, "v");
    }
    let _: i64 = cmd("UNLINK").arg(&gone).query(&mut c).unwrap();
    let _: Value = cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    let all = slowlog(&mut c, Some(-1));
    let args: Vec<Vec<String>> = all.iter().map(|e| e.3.clone()).collect();
    let ids: Vec<i64> = all.iter().map(|e| e.0).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for e in &all {
        assert_eq!(
            (e.4.as_str(), e.5.as_str()),
            (addr.as_str(), "tester"),
            "{e:?}"
        );
        assert!(e.1 >= started - 1 && e.1 <= now_ms() / 1000 + 1, "{e:?}");
        assert!(e.2 >= 0, "{e:?}");
    }
    // Each SET once, wherever its key lives.
    for k in &keys {
        let n = args
            .iter()
            .filter(|a| *a == &["SET", k.as_str(), "v"])
            .count();
        assert_eq!(n, 1, "SET {k}: {args:?}");
    }
    let cut = format!("{}... (72 more bytes)", "x".repeat(128));
    assert!(
        args.contains(&vec!["SET".into(), keys[0].clone(), cut]),
        "{args:?}"
    );
    let m = args.iter().find(|a| a[0] == "MSET").expect("the MSET");
    assert_eq!(m.len(), 32);
    assert_eq!((m[29].as_str(), m[30].as_str()), ("{t}k14", "14"));
    assert_eq!(m[31], "... (10 more arguments)");
    assert!(args.contains(&vec![
        "AUTH".into(),
        "(redacted)".into(),
        "(redacted)".into()
    ]));
    let append = vec!["APPEND".to_string(), keys[1].clone(), "t".into()];
    assert!(args.contains(&append), "{args:?}");
    assert!(
        args.contains(&vec!["GET".to_string(), keys[2].clone()]),
        "{args:?}"
    );
    assert!(args.contains(&vec!["MULTI".to_string()]), "{args:?}");
    assert!(args.contains(&vec!["DISCARD".to_string()]), "{args:?}");
    assert!(
        !args.iter().any(|a| a[0].eq_ignore_ascii_case("exec")),
        "{args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|a| a[0] == "NOSUCHCOMMAND" || a == &["GET".to_string()] || a[0] == "CLIENT"),
        "{args:?}"
    );
    let lcs = vec!["LCS".to_string(), keys[1].clone(), keys[2].clone()];
    assert_eq!(args.iter().filter(|a| **a == lcs).count(), 1, "{args:?}");
    let named = |words: &[&str]| {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        args.iter().filter(|a| **a == w).count()
    };
    assert_eq!(named(&["LCS", &keys[1], &keys[2], "len"]), 1, "{args:?}");
    assert_eq!(
        named(&["BITOP", "or", "slowdest", &keys[1], &keys[2]]),
        1,
        "{args:?}"
    );
    assert_eq!(
        named(&["COPY", &keys[3], &keys[4], "REPLACE"]),
        1,
        "{args:?}"
    );
    // TOUCH and UNLINK by their parts, every key once, under their own names.
    for (name, ks) in [("TOUCH", &keys), ("UNLINK", &gone)] {
        let mut seen: Vec<&String> = args
            .iter()
            .filter(|a| a[0] == name)
            .flat_map(|a| &a[1..])
            .collect();
        seen.sort();
        let mut want: Vec<&String> = ks.iter().collect();
        want.sort();
        assert_eq!(seen, want, "{name}: {args:?}");
    }
    assert!(
        !args.iter().any(|a| a[0] == "EXISTS" || a[0] == "DEL"),
        "{args:?}"
    );
    // SCAN's parts: where each started, and its budget (the first as the client sent it).
    let scans: Vec<&Vec<String>> = args.iter().filter(|a| a[0] == "SCAN").collect();
    assert_eq!(
        scans.last().map(|a| a.as_slice()),
        Some(&["SCAN", "0", "COUNT", "1000"].map(String::from)[..]),
        "{args:?}"
    );
    for a in &scans {
        assert!(
            a.len() == 4 && a[1].parse::<u64>().is_ok() && a[2] == "COUNT",
            "{a:?}"
        );
    }
    // GET's count: 10 by default, the newest.
    let ten = slowlog(&mut c, None);
    assert_eq!(ten.len(), 10);
    let two = slowlog(&mut c, Some(2));
    assert_eq!(two.len(), 2);
    assert!(two[0].0 > ten[0].0, "the newest come first");
    let len = int(&mut c, cmd("SLOWLOG").arg("LEN"));
    assert!(len as usize >= all.len(), "{len} < {}", all.len());
    // slowlog-max-len bounds it, the newest kept.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-max-len")
        .arg("3")
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("SLOWLOG").arg("LEN")), 3);
    let three = slowlog(&mut c, Some(-1));
    assert_eq!(three.len(), 3);
    assert!(three[0].0 > two[0].0);
    // Longer again: the entries it dropped stay dropped (the CONFIG SET is the fourth).
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-max-len")
        .arg("128")
        .query(&mut c)
        .unwrap();
    assert_eq!(int(&mut c, cmd("SLOWLOG").arg("LEN")), 4);
    // Redis's errors.
    for (q, e) in [
        (
            cmd("SLOWLOG").arg("GET").arg("-2").clone(),
            "ERR count should be greater than or equal to -1",
        ),
        (
            cmd("SLOWLOG").arg("GET").arg("x").clone(),
            "ERR count should be greater than or equal to -1",
        ),
        (
            cmd("SLOWLOG").arg("GET").arg("1").arg("2").clone(),
            "ERR unknown subcommand or wrong number of arguments for 'GET'. Try SLOWLOG HELP.",
        ),
        (
            cmd("SLOWLOG").arg("LEN").arg("x").clone(),
            "ERR wrong number of arguments for 'slowlog|len' command",
        ),
        (
            cmd("SLOWLOG").arg("NOPE").clone(),
            "ERR unknown subcommand 'NOPE'. Try SLOWLOG HELP.",
        ),
    ] {
        assert_eq!(query_err(&mut c, &q), e);
    }
    let help: Vec<String> = cmd("SLOWLOG").arg("HELP").query(&mut c).unwrap();
    assert_eq!(help.len(), 12, "{help:?}");
    assert_eq!(help.iter().filter(|l| *l == "HELP").count(), 1, "{help:?}");
    // Off: nothing is logged (the RESET itself neither).
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("-1")
        .query(&mut c)
        .unwrap();
    let cfg: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("slowlog-log-slower-than")
        .query(&mut c)
        .unwrap();
    assert_eq!(cfg[1], "-1");
    let () = cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    for k in &keys {
        set(&mut c, k, "w");
    }
    assert_eq!(int(&mut c, cmd("SLOWLOG").arg("LEN")), 0);
    // A threshold no command reaches here logs none either.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("60000000")
        .query(&mut c)
        .unwrap();
    for k in &keys {
        set(&mut c, k, "w");
    }
    assert_eq!(int(&mut c, cmd("SLOWLOG").arg("LEN")), 0);
}

#[test]
fn a_transaction_runs_at_the_time_of_exec_on_every_worker() {
    let s = server();
    let mut c = s.client();
    // An LCS of two 2000-byte strings between the commands takes milliseconds.
    let text = |seed: u64| -> String {
        let mut x = seed;
        (0..2000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + (x >> 60) as u8) as char
            })
            .collect()
    };
    // Over four workers (in sequence: LCS and RENAME cross them), and on one.
    let spread = spread_keys("frozen", 4);
    let tagged: Vec<String> = (0..4).map(|i| format!("{{f}}{i}")).collect();
    for keys in [spread, tagged] {
        set(&mut c, &keys[1], &text(1));
        set(&mut c, &keys[2], &text(2));
        let () = cmd("MULTI").query(&mut c).unwrap();
        for q in [
            cmd("SET").arg(&keys[0]).arg("v").arg("PX").arg(1).clone(),
            cmd("LCS").arg(&keys[1]).arg(&keys[2]).arg("LEN").clone(),
            cmd("GET").arg(&keys[0]).clone(),
            cmd("PTTL").arg(&keys[0]).clone(),
            cmd("RENAME").arg(&keys[0]).arg(&keys[3]).clone(),
            cmd("GET").arg(&keys[3]).clone(),
        ] {
            let queued: String = q.query(&mut c).unwrap();
            assert_eq!(queued, "QUEUED");
        }
        let r: Vec<Value> = cmd("EXEC")
            .query(&mut c)
            .unwrap_or_else(|e| panic!("{keys:?}: {e}"));
        assert_eq!(r[0], Value::Okay);
        assert!(matches!(r[1], Value::Int(n) if n > 0), "{r:?}");
        assert_eq!(
            r[2..],
            [
                Value::BulkString(b"v".to_vec()),
                Value::Int(1),
                Value::Okay,
                Value::BulkString(b"v".to_vec()),
            ],
            "{keys:?}"
        );
        // After it, by the clock, the key is gone.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(get(&mut c, &keys[3]), None);
    }
}

#[test]
fn info_commandstats_counts_calls_rejections_and_failures_as_redis() {
    let s = server();
    let mut c = s.client();
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    // Keys of every worker: a command is counted once, on its connection's worker.
    for k in spread_keys("cs", 4) {
        set(&mut c, &k, "1");
    }
    let _: Option<String> = cmd("GET").arg("cs0").query(&mut c).unwrap();
    let _ = query_err(&mut c, &cmd("GET"));
    set(&mut c, "word", "x");
    let _ = query_err(&mut c, cmd("INCR").arg("word"));
    let _: i64 = cmd("INCR").arg("n").query(&mut c).unwrap();
    let _: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut c)
        .unwrap();
    let () = cmd("MULTI").query(&mut c).unwrap();
    let _: String = cmd("SET").arg("t").arg("1").query(&mut c).unwrap();
    let _: String = cmd("UNWATCH").query(&mut c).unwrap();
    // Errors among EXEC's replies: failed calls of their commands, one from the worker that
    // ran it, one answered as EXEC planned it.
    let _: String = cmd("INCR").arg("word").query(&mut c).unwrap();
    let _: String = cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(0)
        .query(&mut c)
        .unwrap();
    // (The client library makes an error inside the array the whole reply's.)
    let e = cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert!(e.to_string().contains("not an integer"), "{e}");
    // Refused before running: rejected, not failed; inside MULTI too (SAVE may not be
    // queued, and the transaction is discarded).
    let _ = query_err(&mut c, cmd("EXEC").arg("x"));
    let () = cmd("MULTI").query(&mut c).unwrap();
    let e = query_err(&mut c, &cmd("SAVE"));
    assert!(e.contains("not allowed inside a transaction"), "{e}");
    let () = cmd("DISCARD").query(&mut c).unwrap();
    let text: String = cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    let stats: HashMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split_once(':'))
        .collect();
    let field = |cmd: &str, name: &str| -> u64 {
        let line = stats.get(cmd).unwrap_or_else(|| panic!("{cmd}: {text}"));
        line.split(',')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{cmd} {name}: {line}"))
    };
    // SET: four, "word", and the one EXEC ran.
    assert_eq!(field("set", "calls"), 6, "{text}");
    assert_eq!(field("get", "calls"), 1, "{text}");
    assert_eq!(field("get", "rejected_calls"), 1, "{text}");
    assert_eq!(field("incr", "calls"), 3, "{text}");
    assert_eq!(field("incr", "failed_calls"), 2, "{text}");
    assert_eq!(field("client|kill", "calls"), 1, "{text}");
    assert_eq!(field("client|kill", "failed_calls"), 1, "{text}");
    assert_eq!(field("config|get", "calls"), 1, "{text}");
    assert_eq!(field("multi", "calls"), 2, "{text}");
    assert_eq!(field("exec", "calls"), 1, "{text}");
    assert_eq!(field("exec", "rejected_calls"), 1, "{text}");
    assert_eq!(field("save", "rejected_calls"), 1, "{text}");
    assert_eq!(field("save", "calls"), 0, "{text}");
    assert_eq!(field("exec", "failed_calls"), 0, "{text}");
    assert_eq!(
        field("unwatch", "calls"),
        1,
        "queued, counted as EXEC ran it: {text}"
    );
    assert_eq!(field("config|resetstat", "calls"), 1, "{text}");
    assert!(stats["set"].contains(",usec_per_call="), "{text}");
    // total_commands_processed: commands that ran, those of the transaction as EXEC ran them
    // (RESETSTAT, 4 SETs, GET, SET, INCR x2, CONFIG GET, MULTI, SET, UNWATCH, INCR, CLIENT
    // KILL, EXEC, MULTI, DISCARD, INFO).
    assert_eq!(
        info(&mut c, "stats")["total_commands_processed"],
        "19",
        "not the refused GET, EXEC and SAVE"
    );
    // Not a default section; in INFO all.
    let plain: String = cmd("INFO").query(&mut c).unwrap();
    assert!(!plain.contains("# Commandstats"));
    let all: String = cmd("INFO").arg("all").query(&mut c).unwrap();
    assert!(all.contains("# Commandstats\r\ncmdstat_"), "{all}");
    // CONFIG RESETSTAT clears it (and is the first call counted after).
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let text: String = cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("cmdstat_")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("cmdstat_config|resetstat:calls=1,"),
        "{text}"
    );
}

/// CLIENT REPLY OFF answers nothing until ON (which answers OK); SKIP drops the next
/// command's reply only (and does nothing while OFF). The commands run all the same, on
/// every worker, with replies held for fsync always too, and their errors still count.
/// Refused inside MULTI: it would cut replies out of EXEC's array.
#[test]
fn client_reply_off_and_skip_drop_replies_but_the_commands_run() {
    let s = server_with(&["--fsync", "always"]);
    let on = |w: usize| {
        (0..)
            .map(|i| format!("reply:{i}"))
            .find(|k| worker_of(k.as_bytes(), PARTITIONS, WORKERS) == w)
            .unwrap()
    };
    let (a, b) = (on(0), on(3));
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut t = s.raw();
    let mut req = Vec::new();
    for c in [
        &[&b"CLIENT"[..], b"REPLY", b"OFF"][..],
        &[b"SET", a, b"1"],
        &[b"SET", b, b"2"],
        &[b"INCR", a],
        &[b"GET", b],
        &[b"NOSUCHCOMMAND"],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"CLIENT", b"REPLY", b"ON"],
        &[b"GET", a],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"GET", b],
        &[b"MGET", a, b],
        &[b"CLIENT", b"REPLY", b"SKIP"],
        &[b"CLIENT", b"REPLY", b"ON"],
    ] {
        req.extend_from_slice(&resp(c));
    }
    expect_reply(
        &mut t,
        &req,
        b"+OK\r\n$1\r\n2\r\n*2\r\n$1\r\n2\r\n$1\r\n2\r\n+OK\r\n",
    );
    // Nothing else was sent: the next reply is the next command's.
    expect_reply(&mut t, &resp(&[b"PING"]), b"+PONG\r\n");
    let errors = info(&mut s.client(), "errorstats");
    assert_eq!(errors["errorstat_ERR"], "count=1", "{errors:?}");
    expect_reply(
        &mut t,
        &[
            resp(&[b"MULTI"]),
            resp(&[b"CLIENT", b"REPLY", b"OFF"]),
            resp(&[b"EXEC"]),
            resp(&[b"PING"]),
        ]
        .concat(),
        b"+OK\r\n-ERR Command not allowed inside a transaction\r\n\
          -EXECABORT Transaction discarded because of previous errors.\r\n+PONG\r\n",
    );
    expect_reply(
        &mut t,
        &resp(&[b"CLIENT", b"REPLY", b"MAYBE"]),
        b"-ERR syntax error\r\n",
    );
    // RESET turns replies back on, and answers; a SKIP covering RESET itself holds. An
    // empty command is the one a SKIP covers.
    expect_reply(
        &mut t,
        &[
            resp(&[b"CLIENT", b"REPLY", b"OFF"]),
            resp(&[b"PING"]),
            resp(&[b"RESET"]),
            resp(&[b"PING"]),
            resp(&[b"CLIENT", b"REPLY", b"SKIP"]),
            resp(&[b"RESET"]),
            resp(&[b"ECHO", b"a"]),
            resp(&[b"CLIENT", b"REPLY", b"SKIP"]),
            b"*0\r\n".to_vec(),
            resp(&[b"ECHO", b"b"]),
        ]
        .concat(),
        b"+RESET\r\n+PONG\r\n$1\r\na\r\n$1\r\nb\r\n",
    );
}

/// A protocol error is a reply like any other for CLIENT REPLY: under OFF nothing is sent
/// and the connection is closed; a SKIP drops it (as Redis, which then leaves the connection
/// open without reading it: here it is closed); after the skipped command it is sent. It
/// counts in errorstats either way.
#[test]
fn a_protocol_error_under_client_reply_off_is_not_sent() {
    let s = Server::start(&[]);
    let before = info(&mut s.client(), "errorstats");
    assert_eq!(before.get("errorstat_ERR"), None, "{before:?}");
    let error = "-ERR Protocol error: invalid multibulk length\r\n";
    for (pre, expect) in [
        (&["CLIENT REPLY OFF", "PING"][..], String::new()),
        (&["CLIENT REPLY SKIP"][..], String::new()),
        (&["CLIENT REPLY SKIP", "PING"][..], error.to_string()),
        (
            &["CLIENT REPLY OFF", "CLIENT REPLY ON"][..],
            format!("+OK\r\n{error}"),
        ),
    ] {
        let mut t = s.raw();
        let mut req: Vec<u8> = pre
            .iter()
            .flat_map(|c| resp(&c.split(' ').map(str::as_bytes).collect::<Vec<_>>()))
            .collect();
        req.extend_from_slice(b"*-5x\r\n");
        t.write_all(&req).unwrap();
        let (got, closed) = read_to_eof(&mut t, Duration::from_secs(5));
        assert!(closed, "{pre:?}: the connection stays open");
        assert_eq!(String::from_utf8_lossy(&got), expect, "{pre:?}");
    }
    let errors = info(&mut s.client(), "errorstats");
    assert_eq!(errors["errorstat_ERR"], "count=4", "{errors:?}");
}

/// Reads MONITOR lines from `m` until one ends with `last` (10 s at most): each as
/// `(client address, the quoted arguments)`, its timestamp checked for Redis's format.
fn monitor_lines(m: &mut std::net::TcpStream, last: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = format!("{last}\r\n");
    while !raw.ends_with(end.as_bytes()) && Instant::now() < deadline {
        m.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match m.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8(raw).expect("monitor lines are ASCII");
    text.split_terminator("\r\n")
        .map(|l| {
            // +1339518083.107412 [0 127.0.0.1:60866] "get" "x"
            let (stamp, rest) = l.split_once(" [0 ").unwrap_or_else(|| panic!("{l:?}"));
            let (secs, micros) = stamp[1..].split_once('.').expect("seconds.micros");
            assert!(stamp.starts_with('+'), "{l:?}");
            assert!(secs.parse::<u64>().unwrap() > 1_600_000_000, "{l:?}");
            assert!(micros.len() == 6 && micros.parse::<u32>().is_ok(), "{l:?}");
            let (addr, args) = rest.split_once("] ").expect("address");
            (addr.to_string(), args.to_string())
        })
        .collect()
}

/// MONITOR streams each command clients run, on any worker, as Redis writes it: in the
/// order each client sent them, not the commands refused before running nor the admin ones,
/// a transaction's commands once EXEC ran them (then EXEC), credentials redacted. A monitor
/// may not touch keys, and RESET ends it. (Lines checked against Redis 7.0.15 side by side.)
#[test]
fn monitor_streams_the_commands_clients_run_as_redis_writes_them() {
    let s = server();
    let mut m1 = s.raw();
    let mut m2 = s.raw();
    expect_reply(&mut m1, &resp(&[b"MONITOR"]), b"+OK\r\n");
    expect_reply(&mut m2, &resp(&[b"MONITOR"]), b"+OK\r\n");
    let mut c = s.raw();
    let me = c.local_addr().unwrap().to_string();
    let keys = spread_keys("mon", 8);
    let mut expected = Vec::new();
    for k in &keys {
        expect_reply(
            &mut c,
            &resp(&[b"SET", k.as_bytes(), b"v\x00\"x"]),
            b"+OK\r\n",
        );
        expected.push(format!("\"SET\" \"{k}\" \"v\\x00\\\"x\""));
    }
    let mget: Vec<&[u8]> = std::iter::once(&b"MGET"[..])
        .chain(keys.iter().map(|k| k.as_bytes()))
        .collect();
    let _ = common::roundtrip(&mut c, &resp(&mget), 1);
    let _ = read_to_eof(&mut c, Duration::from_millis(200));
    expected.push(
        std::iter::once("\"MGET\"".to_string())
            .chain(keys.iter().map(|k| format!("\"{k}\"")))
            .collect::<Vec<_>>()
            .join(" "),
    );
    // Refused before running, or admin: not shown.
    let _ = common::roundtrip(&mut c, &resp(&[b"NOSUCH", b"a"]), 1);
    let _ = common::roundtrip(&mut c, &resp(&[b"GET"]), 1);
    let _ = read_to_eof(&mut c, Duration::from_millis(100));
    let _ = common::roundtrip(&mut c, &resp(&[b"CONFIG", b"GET", b"port"]), 1);
    let _ = read_to_eof(&mut c, Duration::from_millis(100));
    let auth = common::roundtrip(&mut c, &resp(&[b"AUTH", b"secret"]), 1);
    let auth = [auth, read_to_eof(&mut c, Duration::from_millis(100)).0].concat();
    assert!(auth.starts_with(b"-ERR AUTH"), "{auth:?}");
    expected.push("\"AUTH\" \"(redacted)\"".into());
    // A transaction: its commands when EXEC runs them, then EXEC.
    expect_reply(&mut c, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut c, &resp(&[b"SET", b"t", b"1"]), b"+QUEUED\r\n");
    expect_reply(&mut c, &resp(&[b"INCR", b"t"]), b"+QUEUED\r\n");
    expect_reply(&mut c, &resp(&[b"EXEC"]), b"*2\r\n+OK\r\n:2\r\n");
    for l in [
        "\"MULTI\"",
        "\"SET\" \"t\" \"1\"",
        "\"INCR\" \"t\"",
        "\"EXEC\"",
    ] {
        expected.push(l.into());
    }
    // Aborted by a watched key another client changed: EXEC alone.
    expect_reply(&mut c, &resp(&[b"WATCH", b"t"]), b"+OK\r\n");
    let mut other = s.client();
    set(&mut other, "t", "changed");
    expect_reply(&mut c, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut c, &resp(&[b"INCR", b"t"]), b"+QUEUED\r\n");
    expect_reply(&mut c, &resp(&[b"EXEC"]), b"*-1\r\n");
    for l in ["\"WATCH\" \"t\"", "\"MULTI\"", "\"EXEC\""] {
        expected.push(l.into());
    }
    // MONITOR inside a transaction is refused as Redis refuses it there.
    expect_reply(&mut c, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut c, &resp(&[b"MONITOR"]), b"+QUEUED\r\n");
    expect_reply(
        &mut c,
        &resp(&[b"EXEC"]),
        b"*1\r\n-ERR MONITOR isn't allowed for DENY BLOCKING client\r\n",
    );
    for l in ["\"MULTI\"", "\"EXEC\""] {
        expected.push(l.into());
    }
    // A transaction over two workers, and a command pipelined behind it: the command's line
    // comes after the transaction's (which come when it ran), EXEC as it was typed.
    let w = |k: &str| worker_of(k.as_bytes(), PARTITIONS, WORKERS);
    let k1 = &keys[0];
    let k2 = keys
        .iter()
        .find(|k| w(k) != w(k1))
        .expect("keys on two workers");
    let pipeline = [
        resp(&[b"MULTI"]),
        resp(&[b"GET", k1.as_bytes()]),
        resp(&[b"GET", k2.as_bytes()]),
        resp(&[b"exec"]),
        resp(&[b"MGET", k1.as_bytes(), k2.as_bytes()]),
    ]
    .concat();
    let _ = common::roundtrip(&mut c, &pipeline, 1);
    let _ = read_to_eof(&mut c, Duration::from_millis(300));
    for l in [
        "\"MULTI\"".to_string(),
        format!("\"GET\" \"{k1}\""),
        format!("\"GET\" \"{k2}\""),
        "\"exec\"".to_string(),
        format!("\"MGET\" \"{k1}\" \"{k2}\""),
    ] {
        expected.push(l);
    }
    expect_reply(&mut c, &resp(&[b"PING"]), b"+PONG\r\n");
    expected.push("\"PING\"".into());

    for m in [&mut m1, &mut m2] {
        let got: Vec<(String, String)> = monitor_lines(m, "] \"PING\"")
            .into_iter()
            .filter(|(addr, _)| *addr == me)
            .collect();
        let args: Vec<&str> = got.iter().map(|(_, a)| a.as_str()).collect();
        assert_eq!(args, expected);
    }
    let list = common::roundtrip(&mut c, &resp(&[b"CLIENT", b"LIST"]), 1);
    let list = [list, read_to_eof(&mut c, Duration::from_millis(300)).0].concat();
    assert_eq!(
        String::from_utf8_lossy(&list).matches("flags=O").count(),
        2,
        "{}",
        String::from_utf8_lossy(&list)
    );

    // The monitor itself: keys are out of reach, PING is shown (to itself too), a second
    // MONITOR is ignored (no reply), RESET ends it.
    expect_reply(
        &mut m1,
        &resp(&[b"GET", b"t"]),
        b"-ERR Replica can't interact with the keyspace\r\n",
    );
    m1.write_all(&resp(&[b"PING"])).unwrap();
    let own = String::from_utf8(read_to_eof(&mut m1, Duration::from_millis(500)).0).unwrap();
    let (pong, line) = own.split_once("\r\n").unwrap_or_default();
    assert_eq!(pong, "+PONG", "{own:?}");
    assert!(line.ends_with("] \"PING\"\r\n"), "{own:?}");
    assert_eq!(line.matches("\r\n").count(), 1, "{own:?}");
    m1.write_all(&resp(&[b"MONITOR"])).unwrap();
    expect_reply(&mut m1, &resp(&[b"RESET"]), b"+RESET\r\n");
    expect_reply(&mut m1, &resp(&[b"GET", b"t"]), b"$7\r\nchanged\r\n");
    expect_reply(&mut c, &resp(&[b"ECHO", b"after"]), b"$5\r\nafter\r\n");
    let rest = read_to_eof(&mut m1, Duration::from_millis(500)).0;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let got = monitor_lines(&mut m2, "] \"ECHO\" \"after\"");
    assert!(
        got.iter()
            .any(|(a, l)| *a == me && l == "\"ECHO\" \"after\""),
        "{got:?}"
    );

    // A monitor only reads: the idle timeout leaves it open, as Redis leaves its replicas.
    let mut admin = s.client();
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg(1)
        .query(&mut admin)
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut fresh = s.raw();
    expect_reply(&mut fresh, &resp(&[b"ECHO", b"late"]), b"$4\r\nlate\r\n");
    let got = monitor_lines(&mut m2, "] \"ECHO\" \"late\"");
    assert!(got.iter().any(|(_, l)| l == "\"ECHO\" \"late\""), "{got:?}");
}

/// Found by a differential run: a monitor reading as fast as it could was closed, as "more
/// than 64 MiB behind", when one 20 MiB binary value made an 80 MiB line and another command
/// followed it. The limit is on a monitor that does not keep up, as Redis's output buffer
/// limits: over 64 MiB for 10 s, or over 256 MiB.
#[test]
fn a_monitor_that_keeps_up_is_not_closed_by_one_large_value() {
    let s = server();
    let mut m = s.raw();
    expect_reply(&mut m, &resp(&[b"MONITOR"]), b"+OK\r\n");
    let mut c = s.raw();
    let value = vec![0xffu8; 20 << 20];
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut total = 0usize;
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        m.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while Instant::now() < deadline {
            match m.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    tail.extend_from_slice(&buf[..n]);
                    let keep = tail.len().saturating_sub(64);
                    tail.drain(..keep);
                    if tail.ends_with(b"\"ECHO\" \"done\"\r\n") {
                        return (total, true);
                    }
                }
                Err(_) => {}
            }
        }
        (total, false)
    });
    expect_reply(&mut c, &resp(&[b"SET", b"big", &value]), b"+OK\r\n");
    expect_reply(&mut c, &resp(&[b"ECHO", b"done"]), b"$4\r\ndone\r\n");
    let (total, done) = reader.join().unwrap();
    assert!(
        done,
        "the monitor got {total} bytes, not the line after the large one"
    );
    assert!(total > 80 << 20, "{total}");
}

/// Reads from `s` until `want` bytes came or `timeout` passed.
fn read_n(s: &mut std::net::TcpStream, want: usize, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn client_pause_write_stops_writes_on_every_worker_until_unpause() {
    let s = server();
    let mut admin = s.client();
    let keys = spread_keys("pz", 8);
    // A key that expires during the pause: hidden, but not deleted until the pause ends.
    let () = cmd("SET")
        .arg("pz-exp")
        .arg("1")
        .arg("PX")
        .arg(50)
        .query(&mut admin)
        .unwrap();
    // A transaction queued before the pause: its EXEC waits.
    let mut q = s.raw();
    expect_reply(&mut q, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut q, &resp(&[b"SET", b"pz-q", b"q"]), b"+QUEUED\r\n");
    let () = cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    q.write_all(&resp(&[b"EXEC"])).unwrap();
    // Writes to keys of every worker, then a read: the first write stops the connection.
    let mut w = s.raw();
    let mut pipeline = Vec::new();
    for k in &keys {
        pipeline.extend(resp(&[b"SET", k.as_bytes(), b"v"]));
    }
    pipeline.extend(resp(&[b"GET", keys[0].as_bytes()]));
    w.write_all(&pipeline).unwrap();
    // In a transaction a read is queued at once; a write waits (as in Redis) to be queued.
    let mut x = s.raw();
    expect_reply(&mut x, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut x, &resp(&[b"GET", keys[1].as_bytes()]), b"+QUEUED\r\n");
    x.write_all(&resp(&[b"SET", keys[1].as_bytes(), b"tx"]))
        .unwrap();
    assert_eq!(read_n(&mut w, 1, Duration::from_millis(400)), b"");
    assert_eq!(read_n(&mut x, 1, Duration::from_millis(100)), b"");
    // Reads go on, and see none of the writes.
    for k in &keys {
        assert_eq!(get(&mut admin, k), None, "{k}");
    }
    assert_eq!(get(&mut admin, "pz-exp"), None);
    // A transaction that only reads runs; one that writes waits.
    let mut r = s.raw();
    expect_reply(&mut r, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut r, &resp(&[b"GET", b"pz-exp"]), b"+QUEUED\r\n");
    expect_reply(&mut r, &resp(&[b"EXEC"]), b"*1\r\n$-1\r\n");
    assert_eq!(read_n(&mut q, 1, Duration::from_millis(100)), b"");
    // A stopped client that goes away is closed, not kept until the pause ends.
    let mut gone = s.raw();
    gone.write_all(&resp(&[b"SET", b"pz-gone", b"1"])).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        info(&mut admin, "clients")["blocked_clients"] == "4"
    }));
    drop(gone);
    assert!(wait_until(Duration::from_secs(5), || {
        info(&mut admin, "clients")["blocked_clients"] == "3"
    }));
    let list: String = cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    assert_eq!(list.matches(" flags=b ").count(), 1, "{list}");
    assert_eq!(list.matches(" flags=xb ").count(), 2, "{list}");
    assert!(list.contains("cmd=set "), "{list}");
    // Active expiry deletes nothing meanwhile (its deletes are writes too).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(info(&mut admin, "stats")["expired_keys"], "0");

    let () = cmd("CLIENT").arg("UNPAUSE").query(&mut admin).unwrap();
    let mut want = b"+OK\r\n".repeat(keys.len());
    want.extend_from_slice(b"$1\r\nv\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut w, want.len(), Duration::from_secs(5))),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(read_n(&mut x, 9, Duration::from_secs(5)), b"+QUEUED\r\n");
    let exec = common::roundtrip(&mut x, &resp(&[b"EXEC"]), 4);
    assert!(exec.starts_with(b"*2\r\n"), "{exec:?}");
    assert_eq!(read_n(&mut q, 9, Duration::from_secs(5)), b"*1\r\n+OK\r\n");
    assert_eq!(get(&mut admin, "pz-q").as_deref(), Some("q"));
    assert_eq!(
        get(&mut admin, "pz-gone"),
        None,
        "the closed client's write never ran"
    );
    for k in &keys[2..] {
        assert_eq!(get(&mut admin, k).as_deref(), Some("v"), "{k}");
    }
    assert!(wait_until(Duration::from_secs(5), || {
        info(&mut admin, "stats")["expired_keys"] == "1"
    }));
    assert_eq!(info(&mut admin, "clients")["blocked_clients"], "0");
}

/// A pause that lands while a connection's pipeline over several workers is half run stops
/// it where it is; the rest runs after, every command answered once.
#[test]
fn client_pause_landing_mid_pipeline_stops_it_and_loses_nothing() {
    let s = server();
    let mut admin = s.raw();
    let keys = spread_keys("pm", 8);
    for round in 0..5 {
        let mut w = s.raw();
        let mut pipeline = Vec::new();
        for i in 0..40 {
            pipeline.extend(resp(&[b"INCR", keys[i % keys.len()].as_bytes()]));
        }
        w.write_all(&pipeline).unwrap();
        let mode: &[u8] = if round % 2 == 0 { b"WRITE" } else { b"ALL" };
        expect_reply(
            &mut admin,
            &resp(&[b"CLIENT", b"PAUSE", b"300", mode]),
            b"+OK\r\n",
        );
        // Each key is incremented 5 times a round, in the pipeline's order.
        let want: String = (0..40)
            .map(|i| format!(":{}\r\n", round * 5 + i / keys.len() + 1))
            .collect();
        let got = read_n(&mut w, want.len(), Duration::from_secs(10));
        assert_eq!(String::from_utf8_lossy(&got), want, "round {round}");
    }
    let mut c = s.client();
    let total: i64 = keys
        .iter()
        .map(|k| get(&mut c, k).map_or(0, |v| v.parse::<i64>().unwrap()))
        .sum();
    assert_eq!(total, 5 * 40);
}

#[test]
fn client_pause_all_stops_every_command_until_its_deadline() {
    let s = server();
    let mut admin = s.raw();
    // As Redis: the mode is checked before the timeout; errors leave nothing paused.
    let e = query_err(
        &mut s.client(),
        cmd("CLIENT").arg("PAUSE").arg("x").arg("READ"),
    );
    assert!(e.contains("CLIENT PAUSE mode must be WRITE or ALL"), "{e}");
    let e = query_err(&mut s.client(), cmd("CLIENT").arg("PAUSE").arg("-1"));
    assert!(e.contains("timeout is negative"), "{e}");
    let e = query_err(&mut s.client(), cmd("CLIENT").arg("PAUSE").arg("1.5"));
    assert!(
        e.contains("timeout is not an integer or out of range"),
        "{e}"
    );
    let mut c = s.raw();
    let keys = spread_keys("pa", 4);
    for k in &keys {
        expect_reply(&mut c, &resp(&[b"SET", k.as_bytes(), b"1"]), b"+OK\r\n");
    }
    // A pause already on keeps the later end, and the stricter mode: ALL for 300 ms given
    // during a WRITE pause of 1200 ms makes it ALL for 1200 ms.
    let start = Instant::now();
    expect_reply(
        &mut admin,
        &resp(&[b"CLIENT", b"PAUSE", b"1200", b"WRITE"]),
        b"+OK\r\n",
    );
    expect_reply(
        &mut admin,
        &resp(&[b"CLIENT", b"PAUSE", b"300", b"ALL"]),
        b"+OK\r\n",
    );
    let mut pipeline = resp(&[b"PING"]);
    for k in &keys {
        pipeline.extend(resp(&[b"GET", k.as_bytes()]));
    }
    c.write_all(&pipeline).unwrap();
    let mut want = b"+PONG\r\n".to_vec();
    want.extend_from_slice(&b"$1\r\n1\r\n".repeat(keys.len()));
    let got = read_n(&mut c, want.len(), Duration::from_secs(10));
    let waited = start.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert!(
        waited >= Duration::from_millis(1150),
        "answered after {waited:?}, before the pause ended"
    );
    // Over: nothing is paused any more.
    expect_reply(&mut c, &resp(&[b"SET", b"pa-after", b"1"]), b"+OK\r\n");
}

/// LATENCY HISTOGRAM's reply for one command: (calls, [(µs, calls at most that long)]).
fn latency_histogram(v: &Value, name: &str) -> Option<(i64, Vec<(i64, i64)>)> {
    let Value::Array(items) = v else {
        panic!("{v:?}")
    };
    let at = items
        .chunks(2)
        .find(|p| p[0] == Value::BulkString(name.as_bytes().to_vec()))?;
    let Value::Array(fields) = &at[1] else {
        panic!("{at:?}")
    };
    assert_eq!(fields[0], Value::BulkString(b"calls".to_vec()));
    assert_eq!(fields[2], Value::BulkString(b"histogram_usec".to_vec()));
    let (Value::Int(calls), Value::Array(buckets)) = (&fields[1], &fields[3]) else {
        panic!("{fields:?}")
    };
    let buckets = buckets
        .chunks(2)
        .map(|b| match b {
            [Value::Int(us), Value::Int(n)] => (*us, *n),
            other => panic!("{other:?}"),
        })
        .collect();
    Some((*calls, buckets))
}

/// The latency monitor: with `latency-monitor-threshold`, a command that runs that long is a
/// `command` spike (a `fast-command` one for a command flagged fast, as GET), in LATENCY
/// LATEST, HISTORY, GRAPH and DOCTOR as Redis answers them, until LATENCY RESET; off, nothing
/// is recorded.
#[test]
fn the_latency_monitor_records_slow_commands_as_redis_does() {
    let s = server();
    let mut c = s.client();
    let latest = |c: &mut redis::Connection| -> Vec<(String, i64, i64, i64)> {
        cmd("LATENCY").arg("LATEST").query(c).unwrap()
    };
    // The commands' own events: on a loaded machine a worker's other work (an expire cycle)
    // may take a millisecond too, and is then rightly in LATEST as well.
    let commands_latest = |c: &mut redis::Connection| -> Vec<(String, i64, i64, i64)> {
        let mut l = latest(c);
        l.retain(|e| e.0 == "command" || e.0 == "fast-command");
        l
    };
    let big = vec![b'x'; 64 << 20];
    // Off by default.
    let () = cmd("SET").arg("big").arg(&big).query(&mut c).unwrap();
    assert!(latest(&mut c).is_empty());
    let doctor: String = cmd("LATENCY").arg("DOCTOR").query(&mut c).unwrap();
    assert!(doctor.contains("latency monitor is off"), "{doctor}");
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("latency-monitor-threshold")
        .arg("1")
        .query(&mut c)
        .unwrap();
    // Copying 64 MiB takes more than a millisecond, into the log and into a reply.
    let () = cmd("SET").arg("big").arg(&big).query(&mut c).unwrap();
    let got: Vec<u8> = cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(got.len(), big.len());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let l = commands_latest(&mut c);
    let names: Vec<&str> = l.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names, ["command", "fast-command"], "{l:?}");
    for (name, t, ms, max) in &l {
        assert!((now - 5..=now + 1).contains(t), "{name}: {t} vs {now}");
        assert!(*ms >= 1 && max >= ms, "{l:?}");
    }
    let hist: Vec<(i64, i64)> = cmd("LATENCY")
        .arg("HISTORY")
        .arg("command")
        .query(&mut c)
        .unwrap();
    assert_eq!(hist.last().map(|h| (h.0, h.1)), Some((l[0].1, l[0].2)));
    let none: Vec<(i64, i64)> = cmd("LATENCY")
        .arg("HISTORY")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    assert!(none.is_empty());
    let graph: String = cmd("LATENCY")
        .arg("GRAPH")
        .arg("command")
        .query(&mut c)
        .unwrap();
    assert!(graph.starts_with("command - high "), "{graph}");
    assert!(graph.contains(&"-".repeat(80)), "{graph}");
    assert_eq!(
        query_err(&mut c, cmd("LATENCY").arg("GRAPH").arg("nosuch")),
        "ERR No samples available for event 'nosuch'"
    );
    let doctor: String = cmd("LATENCY").arg("DOCTOR").query(&mut c).unwrap();
    assert!(doctor.contains(". command: "), "{doctor}");
    assert!(doctor.contains(". fast-command: "), "{doctor}");
    assert!(doctor.contains("SLOWLOG GET"), "{doctor}");
    let n: i64 = cmd("LATENCY")
        .arg("RESET")
        .arg("command")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    // fast-command, and any other event recorded meanwhile.
    let left = latest(&mut c).len() as i64;
    let n: i64 = cmd("LATENCY").arg("RESET").query(&mut c).unwrap();
    assert!(left >= 1 && n >= left, "{n} reset, {left} in LATEST before");
    assert!(commands_latest(&mut c).is_empty());
    // CONFIG RESETSTAT keeps the series; turned off, nothing more is recorded.
    let () = cmd("SET").arg("big").arg(&big).query(&mut c).unwrap();
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    assert_eq!(commands_latest(&mut c).len(), 1);
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("latency-monitor-threshold")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let _: i64 = cmd("LATENCY").arg("RESET").query(&mut c).unwrap();
    let () = cmd("SET").arg("big").arg(&big).query(&mut c).unwrap();
    assert!(latest(&mut c).is_empty());
    let help: Vec<String> = cmd("LATENCY").arg("HELP").query(&mut c).unwrap();
    for sub in [
        "DOCTOR",
        "GRAPH <event>",
        "HISTORY <event>",
        "LATEST",
        "RESET [<event> ...]",
    ] {
        assert!(help.iter().any(|l| l == sub), "{sub}: {help:?}");
    }
}

#[test]
fn latency_tracking_keeps_redis_histograms_per_command() {
    let s = server();
    let mut c = s.client();
    // Keys on every worker: the workers' histograms are merged.
    let keys = spread_keys("lat", 200);
    for k in &keys {
        set(&mut c, k, "v");
    }
    for k in &keys[..100] {
        assert_eq!(get(&mut c, k).as_deref(), Some("v"));
    }
    let hist: Value = cmd("LATENCY")
        .arg("HISTOGRAM")
        .arg("set")
        .arg("GET")
        .arg("nosuch")
        .query(&mut c)
        .unwrap();
    // Buckets at 1024 << k ns, named in µs as Redis names them (the last one, past 2^29
    // ns, at 1073741).
    let mut levels: Vec<i64> = (0..20)
        .map(|k| (((1032u64 << k) - 1) / 1000) as i64)
        .collect();
    levels.push(1_073_741);
    assert_eq!(&levels[..7], &[1, 2, 4, 8, 16, 33, 66]);
    for (name, calls) in [("set", 200), ("get", 100)] {
        let (n, buckets) = latency_histogram(&hist, name).expect(name);
        assert_eq!(n, calls, "{name}");
        assert_eq!(
            buckets.last().map(|b| b.1),
            Some(calls),
            "{name}: {buckets:?}"
        );
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
        );
        assert!(buckets.iter().all(|b| levels.contains(&b.0)), "{buckets:?}");
    }
    assert!(latency_histogram(&hist, "nosuch").is_none());
    // INFO latencystats: only when asked for (or all / everything), as in Redis.
    let text: String = cmd("INFO").arg("latencystats").query(&mut c).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("latency_percentiles_usec_set:"))
        .unwrap_or_else(|| panic!("{text}"));
    let values: Vec<f64> = line
        .split(':')
        .nth(1)
        .unwrap()
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            assert!(["p50", "p99", "p99.9"].contains(&k), "{line}");
            v.parse().unwrap()
        })
        .collect();
    assert_eq!(values.len(), 3, "{line}");
    assert!(values[0] > 0.0 && values[0] <= values[1] && values[1] <= values[2]);
    let plain: String = cmd("INFO").query(&mut c).unwrap();
    assert!(!plain.contains("# Latencystats"));
    let all: String = cmd("INFO").arg("everything").query(&mut c).unwrap();
    assert!(all.contains("latency_percentiles_usec_get:"));
    // The percentiles shown, checked as Redis checks them.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("latency-tracking-info-percentiles")
        .arg("0 99.99 100")
        .query(&mut c)
        .unwrap();
    let text: String = cmd("INFO").arg("latencystats").query(&mut c).unwrap();
    let get_line = text
        .lines()
        .find(|l| l.starts_with("latency_percentiles_usec_get:p0="))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        get_line.contains(",p99.99=") && get_line.contains(",p100="),
        "{get_line}"
    );
    let e = query_err(
        &mut c,
        cmd("CONFIG")
            .arg("SET")
            .arg("latency-tracking-info-percentiles")
            .arg("50 101"),
    );
    assert!(e.contains("should sit between [0.0,100.0]"), "{e}");
    // Turned off, nothing more is counted; CONFIG RESETSTAT empties the histograms.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("latency-tracking")
        .arg("no")
        .query(&mut c)
        .unwrap();
    // A key on every worker: those of other workers are timed by their owner.
    for k in spread_keys("lat", WORKERS as usize) {
        set(&mut c, &k, "w");
    }
    let hist: Value = cmd("LATENCY")
        .arg("HISTOGRAM")
        .arg("set")
        .query(&mut c)
        .unwrap();
    assert_eq!(latency_histogram(&hist, "set").unwrap().0, 200);
    // INFO shows the section's title alone then, as Redis does.
    let text: String = cmd("INFO").arg("latencystats").query(&mut c).unwrap();
    assert_eq!(text.trim_end(), "# Latencystats", "{text}");
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let hist: Value = cmd("LATENCY").arg("HISTOGRAM").query(&mut c).unwrap();
    assert_eq!(hist, Value::Array(vec![]));
    let help: Vec<String> = cmd("LATENCY").arg("HELP").query(&mut c).unwrap();
    assert_eq!(help.iter().filter(|l| *l == "HELP").count(), 1, "{help:?}");
    assert!(help.iter().any(|l| l.starts_with("HISTOGRAM")), "{help:?}");
    let e = query_err(&mut c, cmd("LATENCY").arg("NOSUCH"));
    assert!(
        e.contains("unknown subcommand 'NOSUCH'. Try LATENCY HELP."),
        "{e}"
    );
}

fn config_set(c: &mut redis::Connection, name: &str, value: &str) {
    let () = cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(c)
        .unwrap();
}

/// As in Redis: EXEC is timed (INFO commandstats, latency tracking) but is no slow log entry;
/// the commands it runs are timed each where it ran, and counted once.
#[test]
fn exec_is_timed_and_its_commands_are_timed_where_they_ran() {
    let s = server();
    let mut c = s.client();
    config_set(&mut c, "slowlog-log-slower-than", "0");
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let _: () = cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    // Values large enough that writing each takes microseconds; keys on every worker.
    let big = "x".repeat(2 << 20);
    let keys = spread_keys("txt", WORKERS as usize * 2);
    let mut p = redis::pipe();
    p.atomic();
    for k in &keys {
        p.cmd("SET").arg(k).arg(&big).ignore();
    }
    let () = p.query(&mut c).unwrap();
    let stats: String = cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    let field = |name: &str, key: &str| -> u64 {
        let line = stats
            .lines()
            .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {stats}"));
        line.split([':', ','])
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{line}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("exec", "calls"), 1, "{stats}");
    assert_eq!(field("set", "calls"), keys.len() as u64, "{stats}");
    assert!(
        field("set", "usec") > 0,
        "the SETs ran for their time: {stats}"
    );
    assert!(field("exec", "usec") > 0, "EXEC ran for its time: {stats}");
    let hist: Value = cmd("LATENCY")
        .arg("HISTOGRAM")
        .arg("exec")
        .arg("set")
        .query(&mut c)
        .unwrap();
    assert_eq!(latency_histogram(&hist, "exec").map(|h| h.0), Some(1));
    assert_eq!(
        latency_histogram(&hist, "set").map(|h| h.0),
        Some(keys.len() as i64)
    );
    // The slow log has the SETs, each where it ran, and not EXEC (nor MULTI: logged
    // before the SETs, as Redis logs it).
    let log: Vec<Value> = cmd("SLOWLOG").arg("GET").arg("-1").query(&mut c).unwrap();
    let names: Vec<String> = log
        .iter()
        .filter_map(|e| match e {
            Value::Array(f) => match f.get(3) {
                Some(Value::Array(args)) => match args.first() {
                    Some(Value::BulkString(n)) => Some(String::from_utf8_lossy(n).to_lowercase()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "set").count(),
        keys.len(),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "exec"), "{names:?}");
    // With the slow log and latency tracking off, the time still counts in commandstats.
    config_set(&mut c, "slowlog-log-slower-than", "-1");
    config_set(&mut c, "latency-tracking", "no");
    let () = cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let () = p.query(&mut c).unwrap();
    let stats: String = cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    let usec = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_set:"))
        .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{stats}");
}

/// As in Redis, CLIENT KILL answers once the connections it killed are closed: whichever
/// worker holds them, a client told that a connection was killed finds it closed (a CLI
/// inside MULTI must not send its next command on it).
#[test]
fn client_kill_answers_after_the_killed_connections_are_closed() {
    let s = server();
    let mut c = s.client();
    for round in 0..20 {
        let mut victims: Vec<std::net::TcpStream> = (0..8).map(|_| s.raw()).collect();
        for v in &mut victims {
            expect_reply(v, b"PING\r\n", b"+PONG\r\n");
        }
        let n: i64 = cmd("CLIENT")
            .arg(&["KILL", "TYPE", "NORMAL", "SKIPME", "yes"])
            .query(&mut c)
            .unwrap();
        assert_eq!(n, 8, "round {round}");
        for (i, v) in victims.iter_mut().enumerate() {
            v.set_nonblocking(true).unwrap();
            let mut b = [0u8; 16];
            match v.read(&mut b) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => {
                    panic!("round {round}: victim {i} not closed when KILL answered: {other:?}")
                }
            }
        }
    }
}
