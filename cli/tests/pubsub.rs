//! Pub/sub against the real binary (4 workers, connections handed out round robin, so the
//! subscribers of one test sit on every worker): PUBLISH, (P|S)SUBSCRIBE, their
//! unsubscribe commands, PUBSUB, the subscribed context, and a subscriber that does not read.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{
    Server, bulk, expect_reply, info, message, query_err, read_exact_within, read_to_eof, resp,
    sub_replies, sub_reply, wait_until,
};
use redis::{Connection, cmd};

fn server() -> Server {
    Server::start(&["--workers", "4"])
}

fn publish(con: &mut Connection, channel: &str, message: &[u8]) -> i64 {
    cmd("PUBLISH").arg(channel).arg(message).query(con).unwrap()
}

/// A raw connection subscribed to `channel`.
fn subscriber(s: &Server, channel: &[u8]) -> TcpStream {
    let mut c = s.raw();
    expect_reply(
        &mut c,
        &resp(&[b"SUBSCRIBE", channel]),
        &sub_reply("subscribe", Some(channel), 1),
    );
    c
}

fn pmessage(pattern: &[u8], channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = b"*4\r\n$8\r\npmessage\r\n".to_vec();
    m.extend(bulk(pattern));
    m.extend(bulk(channel));
    m.extend(bulk(payload));
    m
}

#[test]
fn publish_reaches_every_subscriber_on_every_worker_in_order() {
    let s = server();
    let mut publisher = s.client();
    // Eight subscribers (two per worker): even ones to the channel, odd ones to a pattern,
    // and the first also to the pattern (it gets each message twice, as in Redis).
    let mut subs: Vec<TcpStream> = (0..8).map(|_| s.raw()).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        if i % 2 == 0 {
            expect_reply(
                c,
                &resp(&[b"SUBSCRIBE", b"news"]),
                &sub_reply("subscribe", Some(b"news"), 1),
            );
        } else {
            expect_reply(
                c,
                &resp(&[b"PSUBSCRIBE", b"n*"]),
                &sub_reply("psubscribe", Some(b"n*"), 1),
            );
        }
    }
    expect_reply(
        &mut subs[0],
        &resp(&[b"PSUBSCRIBE", b"n*"]),
        &sub_reply("psubscribe", Some(b"n*"), 2),
    );
    // A pipeline of messages, binary-safe, with a write between them: each is counted by
    // subscription and arrives in order.
    let mut p = redis::pipe();
    for i in 0..200u32 {
        p.cmd("PUBLISH")
            .arg("news")
            .arg(format!("m{i}\0\r\n").into_bytes());
        if i == 100 {
            p.cmd("SET").arg("news-key").arg("v").ignore();
        }
    }
    let counts: Vec<i64> = p.query(&mut publisher).unwrap();
    assert_eq!(counts, vec![9; 200]);
    for (i, c) in subs.iter_mut().enumerate() {
        let mut want = Vec::new();
        for m in 0..200u32 {
            let payload = format!("m{m}\0\r\n").into_bytes();
            if i % 2 == 0 {
                want.extend(message(b"news", &payload));
            }
            if i % 2 == 1 || i == 0 {
                want.extend(pmessage(b"n*", b"news", &payload));
            }
        }
        // Subscriber 0 gets each message on the channel, then through the pattern.
        let got = read_exact_within(c, want.len(), Duration::from_secs(10));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "subscriber {i}"
        );
    }
    // Nothing for a channel nobody follows, nor on a channel the pattern does not match.
    assert_eq!(publish(&mut publisher, "other", b"x"), 0);
    assert_eq!(publish(&mut publisher, "xnews", b"x"), 0);
    // A subscriber that goes away is no longer counted.
    drop(subs.pop());
    assert!(wait_until(Duration::from_secs(5), || publish(
        &mut publisher,
        "news",
        b"y"
    ) == 8));
}

#[test]
fn a_subscribed_connection_runs_only_the_pubsub_commands_as_in_redis() {
    let s = server();
    let mut c = s.raw();
    expect_reply(
        &mut c,
        &resp(&[b"SUBSCRIBE", b"a", b"b", b"a"]),
        &[
            sub_reply("subscribe", Some(b"a"), 1),
            sub_reply("subscribe", Some(b"b"), 2),
            sub_reply("subscribe", Some(b"a"), 2),
        ]
        .concat(),
    );
    expect_reply(
        &mut c,
        &resp(&[b"GET", b"x"]),
        b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    expect_reply(
        &mut c,
        &resp(&[b"CLIENT", b"LIST"]),
        b"-ERR Can't execute 'client|list': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    expect_reply(&mut c, &resp(&[b"PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    expect_reply(
        &mut c,
        &resp(&[b"PING", b"a", b"b"]),
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    // Nor transactions, as Redis 7.0 answers.
    expect_reply(
        &mut c,
        &resp(&[b"MULTI"]),
        b"-ERR Can't execute 'multi': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    expect_reply(
        &mut c,
        &resp(&[b"EXEC"]),
        b"-EXECABORT Transaction discarded because of: Can't execute 'exec': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    );
    expect_reply(
        &mut c,
        &resp(&[b"PING", b"hi"]),
        b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n",
    );
    // Patterns and channels count together; shard channels on their own.
    expect_reply(
        &mut c,
        &resp(&[b"PSUBSCRIBE", b"h*"]),
        &sub_reply("psubscribe", Some(b"h*"), 3),
    );
    expect_reply(
        &mut c,
        &resp(&[b"SSUBSCRIBE", b"s1"]),
        &sub_reply("ssubscribe", Some(b"s1"), 1),
    );
    expect_reply(
        &mut c,
        &resp(&[b"UNSUBSCRIBE", b"b", b"zz"]),
        &[
            sub_reply("unsubscribe", Some(b"b"), 2),
            sub_reply("unsubscribe", Some(b"zz"), 2),
        ]
        .concat(),
    );
    expect_reply(
        &mut c,
        &resp(&[b"UNSUBSCRIBE"]),
        &sub_reply("unsubscribe", Some(b"a"), 1),
    );
    expect_reply(
        &mut c,
        &resp(&[b"UNSUBSCRIBE"]),
        &sub_reply("unsubscribe", None, 1),
    );
    expect_reply(
        &mut c,
        &resp(&[b"PUNSUBSCRIBE"]),
        &sub_reply("punsubscribe", Some(b"h*"), 0),
    );
    // Still subscribed to a shard channel: still in the subscribed context.
    expect_reply(&mut c, &resp(&[b"ECHO", b"x"]), b"-ERR Can't execute 'echo': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n");
    expect_reply(
        &mut c,
        &resp(&[b"SUNSUBSCRIBE"]),
        &sub_reply("sunsubscribe", Some(b"s1"), 0),
    );
    expect_reply(&mut c, &resp(&[b"PING"]), b"+PONG\r\n");
    expect_reply(&mut c, &resp(&[b"ECHO", b"x"]), b"$1\r\nx\r\n");
    // RESET drops every subscription.
    expect_reply(
        &mut c,
        &resp(&[b"PSUBSCRIBE", b"p1", b"p2"]),
        &sub_replies("psubscribe", &[b"p1", b"p2"], 1),
    );
    expect_reply(&mut c, &resp(&[b"RESET"]), b"+RESET\r\n");
    let mut admin = s.client();
    let n: i64 = cmd("PUBSUB").arg("NUMPAT").query(&mut admin).unwrap();
    assert_eq!(n, 0);
    expect_reply(&mut c, &resp(&[b"PING"]), b"+PONG\r\n");
    // Inside MULTI the (un)subscribe commands are refused and abort the transaction;
    // PUBLISH runs at EXEC.
    let mut listener = subscriber(&s, b"t");
    expect_reply(&mut c, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(
        &mut c,
        &resp(&[b"SUBSCRIBE", b"t"]),
        b"-ERR SUBSCRIBE inside MULTI is not allowed\r\n",
    );
    expect_reply(
        &mut c,
        &resp(&[b"EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    expect_reply(&mut c, &resp(&[b"MULTI"]), b"+OK\r\n");
    expect_reply(&mut c, &resp(&[b"PUBLISH", b"t", b"in-tx"]), b"+QUEUED\r\n");
    expect_reply(&mut c, &resp(&[b"SET", b"k", b"v"]), b"+QUEUED\r\n");
    expect_reply(&mut c, &resp(&[b"EXEC"]), b"*2\r\n:1\r\n+OK\r\n");
    let want = message(b"t", b"in-tx");
    assert_eq!(
        read_exact_within(&mut listener, want.len(), Duration::from_secs(5)),
        want
    );
    // A subscriber is never closed for being idle (as Redis does not time out pub/sub
    // clients); a plain idle connection is.
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg(1)
        .query(&mut admin)
        .unwrap();
    let mut idle = s.raw();
    std::thread::sleep(Duration::from_millis(2500));
    let (_, closed) = read_to_eof(&mut idle, Duration::from_secs(3));
    assert!(closed, "an idle plain connection is closed");
    expect_reply(
        &mut listener,
        &resp(&[b"PING"]),
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n",
    );
}

#[test]
fn pubsub_introspection_counts_over_every_worker() {
    let s = server();
    let mut admin = s.client();
    // Four connections, one per worker, with overlapping subscriptions.
    let mut c: Vec<TcpStream> = (0..4).map(|_| s.raw()).collect();
    c[0].write_all(&resp(&[b"SUBSCRIBE", b"ch1", b"ch2"]))
        .unwrap();
    c[1].write_all(&resp(&[b"SUBSCRIBE", b"ch1"])).unwrap();
    c[1].write_all(&resp(&[b"PSUBSCRIBE", b"p*"])).unwrap();
    c[2].write_all(&resp(&[b"PSUBSCRIBE", b"p*", b"q*"]))
        .unwrap();
    c[3].write_all(&resp(&[b"SSUBSCRIBE", b"sh1"])).unwrap();
    let replies = [
        [
            sub_reply("subscribe", Some(b"ch1"), 1),
            sub_reply("subscribe", Some(b"ch2"), 2),
        ]
        .concat(),
        [
            sub_reply("subscribe", Some(b"ch1"), 1),
            sub_reply("psubscribe", Some(b"p*"), 2),
        ]
        .concat(),
        [
            sub_reply("psubscribe", Some(b"p*"), 1),
            sub_reply("psubscribe", Some(b"q*"), 2),
        ]
        .concat(),
        sub_reply("ssubscribe", Some(b"sh1"), 1),
    ];
    for (conn, want) in c.iter_mut().zip(replies) {
        assert_eq!(
            read_exact_within(conn, want.len(), Duration::from_secs(5)),
            want
        );
    }
    assert!(wait_until(Duration::from_secs(5), || {
        let n: i64 = cmd("PUBSUB").arg("NUMPAT").query(&mut admin).unwrap();
        n == 2
    }));
    let mut channels: Vec<String> = cmd("PUBSUB").arg("CHANNELS").query(&mut admin).unwrap();
    channels.sort();
    assert_eq!(channels, vec!["ch1", "ch2"]);
    let channels: Vec<String> = cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("*2")
        .query(&mut admin)
        .unwrap();
    assert_eq!(channels, vec!["ch2"]);
    let shard: Vec<String> = cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .query(&mut admin)
        .unwrap();
    assert_eq!(shard, vec!["sh1"]);
    let numsub: Vec<redis::Value> = cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("ch1")
        .arg("ch2")
        .arg("none")
        .arg("ch1")
        .query(&mut admin)
        .unwrap();
    let numsub: Vec<String> = numsub
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(numsub, ["ch1", "2", "ch2", "1", "none", "0", "ch1", "2"]);
    let shardnumsub: Vec<redis::Value> = cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg("sh1")
        .query(&mut admin)
        .unwrap();
    assert_eq!(shardnumsub.len(), 2);
    let stats = info(&mut admin, "stats");
    assert_eq!(stats["pubsub_channels"], "2");
    assert_eq!(stats["pubsub_patterns"], "2");
    assert_eq!(stats["pubsubshard_channels"], "1");
    // PUBLISH counts subscriptions: ch1's two, and p*'s two for a channel it matches.
    assert_eq!(publish(&mut admin, "ch1", b"x"), 2);
    assert_eq!(publish(&mut admin, "pa", b"x"), 2);
    // SPUBLISH reaches the shard channel only; PUBLISH does not reach it.
    let n: i64 = cmd("SPUBLISH")
        .arg("sh1")
        .arg("s")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(publish(&mut admin, "sh1", b"x"), 0);
    let want = b"*3\r\n$8\r\nsmessage\r\n$3\r\nsh1\r\n$1\r\ns\r\n";
    assert_eq!(
        read_exact_within(&mut c[3], want.len(), Duration::from_secs(5)),
        want
    );
    // CLIENT LIST TYPE pubsub: the four subscribers with their counts and flag P.
    let list: String = cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut admin)
        .unwrap();
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.lines().all(|l| l.contains(" flags=P ")), "{list}");
    assert!(list.contains(" sub=2 psub=0 ssub=0 "), "{list}");
    assert!(list.contains(" sub=1 psub=1 ssub=0 "), "{list}");
    assert!(list.contains(" sub=0 psub=0 ssub=1 "), "{list}");
    let normal: String = cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    assert_eq!(normal.lines().count(), 1, "{normal}");
    assert!(normal.contains(" flags=N "), "{normal}");
    // CLIENT KILL TYPE pubsub closes them, and their subscriptions go with them.
    let killed: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 4);
    for conn in &mut c {
        let (_, closed) = read_to_eof(conn, Duration::from_secs(5));
        assert!(closed);
    }
    let stats = info(&mut admin, "stats");
    assert_eq!(stats["pubsub_channels"], "0");
    assert_eq!(stats["pubsub_patterns"], "0");
    assert_eq!(publish(&mut admin, "ch1", b"x"), 0);
    // PUBSUB's errors and help, as Redis 7.0.
    assert_eq!(
        common::query_err(&mut admin, cmd("PUBSUB").arg("NUMPAT").arg("x")),
        "ERR wrong number of arguments for 'pubsub|numpat' command"
    );
    assert_eq!(
        common::query_err(&mut admin, cmd("PUBSUB").arg("channels").arg("a").arg("b")),
        "ERR unknown subcommand or wrong number of arguments for 'channels'. Try PUBSUB HELP."
    );
    let help: Vec<String> = cmd("PUBSUB").arg("HELP").query(&mut admin).unwrap();
    assert_eq!(help.len(), 14);
    assert_eq!(
        help[0],
        "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    );
    assert_eq!(help[13], "    Prints this help.");
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_and_the_server_goes_on() {
    let s = server();
    let mut admin = s.client();
    let mut slow = subscriber(&s, b"big");
    let mut fast = s.client();
    let mut fast_sub = fast.as_pubsub();
    fast_sub.subscribe("big").unwrap();
    fast_sub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // 64 MiB past a subscriber that reads nothing: more than the 32 MiB hard limit plus
    // what the sockets hold.
    let payload = vec![b'x'; 1 << 20];
    let mut counts = Vec::new();
    for _ in 0..64 {
        counts.push(publish(&mut admin, "big", &payload));
        let m = fast_sub.get_message().unwrap();
        assert_eq!(m.get_payload_bytes().len(), payload.len());
    }
    assert_eq!(counts[0], 2);
    assert!(counts.iter().all(|&n| (1..=2).contains(&n)), "{counts:?}");
    assert_eq!(
        *counts.last().unwrap(),
        1,
        "the slow subscriber was dropped"
    );
    // The slow one finds its connection closed once it reads what was sent.
    let (_, closed) = read_to_eof(&mut slow, Duration::from_secs(20));
    assert!(closed);
    let clients = info(&mut admin, "clients");
    assert_eq!(clients["connected_clients"], "2");
}

#[test]
fn a_subscriber_told_of_a_write_reads_the_new_value() {
    let s = server();
    let mut publisher = s.client();
    let mut reader = s.client();
    let mut listener = s.client();
    let mut sub = listener.as_pubsub();
    sub.subscribe("changed").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Keys on every worker, each written then announced in one pipeline: a subscriber
    // that reads the key when told about it finds the value announced, or a later one.
    let keys: Vec<String> = (0..16).map(|i| format!("causal{i}")).collect();
    let mut p = redis::pipe();
    for round in 0..20u32 {
        for k in &keys {
            p.cmd("SET").arg(k).arg(round).ignore();
            p.cmd("PUBLISH")
                .arg("changed")
                .arg(format!("{k} {round}"))
                .ignore();
        }
    }
    let () = p.query(&mut publisher).unwrap();
    for _ in 0..20 * keys.len() {
        let m = sub.get_message().unwrap();
        let text: String = m.get_payload().unwrap();
        let (k, round) = text.split_once(' ').unwrap();
        let round: u32 = round.parse().unwrap();
        let v: u32 = cmd("GET").arg(k).query(&mut reader).unwrap();
        assert!(
            v >= round,
            "{k}: read {v} after the message of round {round}"
        );
    }
}

#[test]
fn client_pause_write_holds_publish_and_a_killed_subscriber_counts_nowhere() {
    let s = server();
    let mut admin = s.client();
    let mut sub = subscriber(&s, b"ch");
    // As Redis 7.0: PUBLISH may replicate, so CLIENT PAUSE WRITE holds it.
    let () = cmd("CLIENT")
        .arg("PAUSE")
        .arg(20_000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    let mut p = s.raw();
    p.write_all(&resp(&[b"PUBLISH", b"ch", b"held"])).unwrap();
    let mut buf = [0u8; 64];
    for conn in [&mut p, &mut sub] {
        conn.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            std::io::Read::read(conn, &mut buf).is_err(),
            "nothing while paused"
        );
    }
    let () = cmd("CLIENT").arg("UNPAUSE").query(&mut admin).unwrap();
    assert_eq!(
        read_exact_within(&mut p, 4, Duration::from_secs(5)),
        b":1\r\n"
    );
    let want = message(b"ch", b"held");
    assert_eq!(
        read_exact_within(&mut sub, want.len(), Duration::from_secs(5)),
        want
    );
    // The subscriber stops reading; 16 MiB wait for it, more than the sockets hold.
    let payload = vec![b'x'; 1 << 20];
    for _ in 0..16 {
        assert_eq!(publish(&mut admin, "ch", &payload), 1);
    }
    // Killed, it counts nowhere at once, though its output is still there to write.
    let killed: i64 = cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    let numsub: (String, i64) = cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("ch")
        .query(&mut admin)
        .unwrap();
    assert_eq!(numsub.1, 0);
    assert_eq!(publish(&mut admin, "ch", b"after"), 0);
    assert_eq!(info(&mut admin, "stats")["pubsub_channels"], "0");
}

#[test]
fn client_reply_off_drops_replies_but_not_pubsub_pushes() {
    let s = server();
    let mut admin = s.client();
    let mut c = s.raw();
    // As Redis 7.0: confirmations and messages are push output, which OFF and SKIP leave
    // alone; PING's answer is a reply, dropped.
    c.write_all(&resp(&[b"CLIENT", b"REPLY", b"OFF"])).unwrap();
    expect_reply(
        &mut c,
        &resp(&[b"SUBSCRIBE", b"a"]),
        &sub_reply("subscribe", Some(b"a"), 1),
    );
    assert_eq!(publish(&mut admin, "a", b"m"), 1);
    c.write_all(&resp(&[b"PING"])).unwrap();
    let want = message(b"a", b"m");
    assert_eq!(
        read_exact_within(&mut c, want.len(), Duration::from_secs(5)),
        want
    );
    expect_reply(
        &mut c,
        &resp(&[b"UNSUBSCRIBE"]),
        &sub_reply("unsubscribe", Some(b"a"), 0),
    );
    expect_reply(&mut c, &resp(&[b"CLIENT", b"REPLY", b"ON"]), b"+OK\r\n");
    c.write_all(&resp(&[b"CLIENT", b"REPLY", b"SKIP"])).unwrap();
    expect_reply(
        &mut c,
        &resp(&[b"SUBSCRIBE", b"a", b"b"]),
        &sub_replies("subscribe", &[b"a", b"b"], 1),
    );
    expect_reply(&mut c, &resp(&[b"PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    // A monitor that subscribes gets the subscribed context's error first, as in Redis.
    let mut m = s.raw();
    expect_reply(&mut m, &resp(&[b"MONITOR"]), b"+OK\r\n");
    m.write_all(&resp(&[b"SUBSCRIBE", b"b"])).unwrap();
    m.write_all(&resp(&[b"GET", b"k"])).unwrap();
    // The confirmation, the monitor's line of its own SUBSCRIBE (as Redis writes it), then
    // the error.
    let confirm = sub_reply("subscribe", Some(b"b"), 1);
    let error = b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
    let mut got = read_exact_within(&mut m, confirm.len() + error.len(), Duration::from_secs(5));
    while !got.ends_with(error) {
        got.extend(read_exact_within(&mut m, 1, Duration::from_secs(5)));
    }
    assert!(
        got.starts_with(&confirm),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let line = &got[confirm.len()..got.len() - error.len()];
    assert!(
        line.starts_with(b"+") && line.ends_with(b"\"SUBSCRIBE\" \"b\"\r\n"),
        "{}",
        String::from_utf8_lossy(line)
    );
}

/// The keyspace notifications one command should cause, as Redis 7.0 sends them to a
/// `PSUBSCRIBE __key*@0__:*`: for each (event, key), the keyspace message then the keyevent
/// message.
fn key_events(events: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (event, key) in events {
        let space = format!("__keyspace@0__:{key}");
        let ev = format!("__keyevent@0__:{event}");
        out.extend(pmessage(
            b"__key*@0__:*",
            space.as_bytes(),
            event.as_bytes(),
        ));
        out.extend(pmessage(b"__key*@0__:*", ev.as_bytes(), key.as_bytes()));
    }
    out
}

/// The pub/sub messages in `bytes` (whole `pmessage` arrays), one by one.
fn split_pmessages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        // "*4\r\n" then four bulk strings.
        at += 4;
        for _ in 0..4 {
            let end = at + bytes[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let len: usize = std::str::from_utf8(&bytes[at + 1..end])
                .unwrap()
                .parse()
                .unwrap();
            at = end + 2 + len + 2;
        }
        out.push(bytes[start..at].to_vec());
    }
    out
}

/// Reads `want.len()` bytes from the subscriber and checks they are `want`.
fn expect_bytes(sub: &mut TcpStream, want: &[u8]) {
    let got = read_exact_within(sub, want.len(), Duration::from_secs(5));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// A command's arguments and the (event, key) notifications it causes.
type EventCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

/// Runs `args` and checks the notifications it caused arrive and nothing else: in order for
/// one key; the keys of a command over several workers are published by each key's worker,
/// so only each key's own events keep their order.
fn expect_events(
    con: &mut Connection,
    sub: &mut TcpStream,
    args: &[&str],
    events: &[(&str, &str)],
) {
    let mut c = cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    let _: redis::Value = c.query(con).unwrap();
    let want = key_events(events);
    let got = read_exact_within(sub, want.len(), Duration::from_secs(5));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if events.iter().all(|(_, k)| *k == events[0].1) {
        assert_eq!(text(&got), text(&want), "{args:?}");
    } else {
        assert_same_messages(&got, &want, &format!("{args:?}"));
    }
}

/// `got` holds the messages of `want`, in any order (keys of several workers).
fn assert_same_messages(got: &[u8], want: &[u8], what: &str) {
    let mut g = split_pmessages(got);
    let mut w = split_pmessages(want);
    g.sort();
    w.sort();
    assert_eq!(g, w, "{what}: {}", String::from_utf8_lossy(got));
}

/// `notify-keyspace-events`: each write publishes Redis 7.0's events for its command, on
/// the key's channel (K) and the event's (E), whatever worker owns the key (4 workers, keys
/// spread over them); `n` adds new keys, `m` reads of missing keys, `x` expiries (active,
/// and a write over an expired value), and nothing is published while the flags are empty.
#[test]
fn keyspace_notifications_publish_redis_events_for_each_write() {
    let s = server();
    let mut con = s.client();
    let mut sub = s.raw();
    expect_reply(
        &mut sub,
        &resp(&[b"PSUBSCRIBE", b"__key*@0__:*"]),
        &sub_reply("psubscribe", Some(b"__key*@0__:*"), 1),
    );
    // Off by default: a write publishes nothing (checked by the first event below).
    let _: () = cmd("SET").arg("quiet").arg("v").query(&mut con).unwrap();
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut con)
        .unwrap();
    let shown: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut con)
        .unwrap();
    assert_eq!(shown[1], "AKE");
    let e = &mut sub;
    // Each command, and the events it publishes (keyspace then keyevent message for each).
    let cases: &[EventCase] = &[
        (&["SET", "k1", "v"], &[("set", "k1")]),
        (
            &["SET", "k1", "v2", "EX", "100"],
            &[("set", "k1"), ("expire", "k1")],
        ),
        (&["SET", "k1", "v3", "KEEPTTL"], &[("set", "k1")]),
        (
            &["SETEX", "k2", "100", "v"],
            &[("set", "k2"), ("expire", "k2")],
        ),
        (&["INCR", "n"], &[("incrby", "n")]),
        (&["DECRBY", "n", "5"], &[("incrby", "n")]),
        (&["INCRBYFLOAT", "f", "1.5"], &[("incrbyfloat", "f")]),
        (&["APPEND", "k1", "x"], &[("append", "k1")]),
        (&["SETRANGE", "k1", "1", "z"], &[("setrange", "k1")]),
        (&["SETBIT", "bits", "3", "1"], &[("setbit", "bits")]),
        (&["PERSIST", "k1"], &[("persist", "k1")]),
        (&["EXPIRE", "k1", "100"], &[("expire", "k1")]),
        (&["GETEX", "k1", "PERSIST"], &[("persist", "k1")]),
        (
            &["MSET", "a", "1", "b", "2", "c", "3"],
            &[("set", "a"), ("set", "b"), ("set", "c")],
        ),
        (&["GETSET", "a", "9"], &[("set", "a")]),
        (
            &["RENAME", "a", "a2"],
            &[("rename_from", "a"), ("rename_to", "a2")],
        ),
        (&["COPY", "a2", "a3"], &[("copy_to", "a3")]),
        (&["BITOP", "OR", "dest", "bits", "bits"], &[("set", "dest")]),
        (&["DEL", "b", "missing", "c"], &[("del", "b"), ("del", "c")]),
        (&["GETDEL", "a3"], &[("del", "a3")]),
        (&["EXPIRE", "k2", "-1"], &[("del", "k2")]),
    ];
    for (args, events) in cases {
        expect_events(&mut con, e, args, events);
    }
    // Writes that change nothing publish nothing: the next event is the only one read.
    let _: redis::Value = cmd("SETNX").arg("n").arg("1").query(&mut con).unwrap();
    let _: redis::Value = cmd("PERSIST").arg("n").query(&mut con).unwrap();
    expect_events(&mut con, e, &["UNLINK", "n"], &[("del", "n")]);
    // A transaction's commands publish as they run, at EXEC.
    let (_, _): (String, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t1")
        .arg("v")
        .cmd("SET")
        .arg("t2")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let want = key_events(&[("set", "t1"), ("set", "t2")]);
    let got = read_exact_within(e, want.len(), Duration::from_secs(5));
    assert_same_messages(&got, &want, "EXEC");
    // Expiry: active (the tombstone's write), and a write that finds the value expired.
    let _: () = cmd("SET")
        .arg("gone")
        .arg("v")
        .arg("PX")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let want = [
        key_events(&[("set", "gone"), ("expire", "gone")]),
        key_events(&[("expired", "gone")]),
    ]
    .concat();
    expect_bytes(e, &want);
    expect_events(
        &mut con,
        e,
        &["CONFIG", "SET", "notify-keyspace-events", "KEAn"],
        &[],
    );
    expect_events(
        &mut con,
        e,
        &["SET", "fresh", "v"],
        &[("new", "fresh"), ("set", "fresh")],
    );
    // RENAME and COPY add their destination again, as Redis: `new` whether it existed or not.
    expect_events(
        &mut con,
        e,
        &["COPY", "fresh", "other", "REPLACE"],
        &[("new", "other"), ("copy_to", "other")],
    );
    expect_events(
        &mut con,
        e,
        &["RENAME", "other", "fresh"],
        &[
            ("new", "fresh"),
            ("rename_from", "other"),
            ("rename_to", "fresh"),
        ],
    );
    expect_events(
        &mut con,
        e,
        &["CONFIG", "SET", "notify-keyspace-events", "Em"],
        &[],
    );
    for (read, missing) in [
        (&["GET", "nothing"][..], "nothing"),
        (&["MGET", "fresh", "none"], "none"),
        (&["GETBIT", "m1", "0"], "m1"),
        (&["BITCOUNT", "m2"], "m2"),
        (&["BITFIELD", "m3", "GET", "u8", "0"], "m3"),
        (&["GETSET", "m4", "v"], "m4"),
        (&["COPY", "m5", "fresh"], "m5"),
        (&["BITOP", "OR", "fresh", "m6"], "m6"),
    ] {
        let mut c = cmd(read[0]);
        for a in &read[1..] {
            c.arg(*a);
        }
        let _: redis::Value = c.query(&mut con).unwrap();
        let want = pmessage(
            b"__key*@0__:*",
            b"__keyevent@0__:keymiss",
            missing.as_bytes(),
        );
        expect_bytes(e, &want);
    }
    // Off again: nothing more, then the subscriber still works.
    expect_events(
        &mut con,
        e,
        &["CONFIG", "SET", "notify-keyspace-events", ""],
        &[],
    );
    let _: () = cmd("SET")
        .arg("quiet")
        .arg("again")
        .query(&mut con)
        .unwrap();
    assert_eq!(publish(&mut con, "__keyspace@0__:x", b"by hand"), 1);
    let want = pmessage(b"__key*@0__:*", b"__keyspace@0__:x", b"by hand");
    expect_bytes(e, &want);
    assert_eq!(
        query_err(
            &mut con,
            cmd("CONFIG")
                .arg("SET")
                .arg("notify-keyspace-events")
                .arg("KX")
        ),
        "ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - invalid value for server.notify_keyspace_events: \"KX\" (expected characters from Ag$lshzxeKEtmdn only)"
    );
}
