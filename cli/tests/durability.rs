//! What survives a crash or a stop: with `fsync always` every acknowledged write survives
//! SIGKILL at any moment; with `everysec` a clean stop (SHUTDOWN, SIGTERM) loses nothing; and a
//! data directory is never opened by two servers, nor with another partition count.
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, info, run_to_exit};
use redis::cmd;

/// Every `(key, value)` must be there with that value.
fn assert_all_present(s: &Server, expect: &HashMap<String, String>, what: &str) {
    let mut c = s.client();
    let keys: Vec<&String> = expect.keys().collect();
    for chunk in keys.chunks(500) {
        let got: Vec<Option<String>> = cmd("MGET").arg(chunk).query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v.as_deref(),
                Some(expect[*k].as_str()),
                "{what}: acknowledged key {k} lost or wrong"
            );
        }
    }
}

/// Deleted keys must stay deleted.
fn assert_all_absent(s: &Server, keys: &[String], what: &str) {
    let mut c = s.client();
    for chunk in keys.chunks(500) {
        let n: i64 = cmd("EXISTS").arg(chunk).query(&mut c).unwrap();
        assert_eq!(n, 0, "{what}: an acknowledged DEL was undone");
    }
}

#[test]
fn fsync_always_keeps_every_acknowledged_write_across_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ["--workers", "4", "--fsync", "always"];
    let mut rng = fastrand::Rng::with_seed(0xd0_0d1e);
    // What the writers saw acknowledged: key -> value, and acknowledged deletes.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let deleted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut s = Server::start_in(&dir, &args);
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let mut c = s.client();
                let (acked, deleted, stop) = (acked.clone(), deleted.clone(), stop.clone());
                std::thread::spawn(move || {
                    for i in 0u64.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let k = format!("r{round}:t{t}:{i}");
                        let v = format!("{i}-{}", "x".repeat((i % 50) as usize));
                        // SET, and now and then a DEL of an earlier key or an overwrite.
                        let r: redis::RedisResult<()> = cmd("SET").arg(&k).arg(&v).query(&mut c);
                        if r.is_err() {
                            break; // the server is gone
                        }
                        acked.lock().unwrap().insert(k, v);
                        if i % 7 == 3 {
                            // While the DEL is in flight the key may or may not survive a
                            // crash; once acknowledged, its absence must.
                            let old = format!("r{round}:t{t}:{}", i - 3);
                            acked.lock().unwrap().remove(&old);
                            let r: redis::RedisResult<i64> = cmd("DEL").arg(&old).query(&mut c);
                            if r.is_err() {
                                break;
                            }
                            deleted.lock().unwrap().push(old);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(150..600)));
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        s.restart();
        let expect = acked.lock().unwrap().clone();
        assert!(
            expect.keys().any(|k| k.starts_with(&format!("r{round}:"))),
            "round {round}: nothing was acknowledged before the kill"
        );
        assert_all_present(&s, &expect, &format!("round {round}"));
        assert_all_absent(&s, &deleted.lock().unwrap(), &format!("round {round}"));
    }
}

/// Writes `n` keys named `{prefix}{i}` (with a TTL on some) through a pipeline.
fn write_keys(s: &Server, prefix: &str, n: usize) -> HashMap<String, String> {
    let mut c = s.client();
    let mut p = redis::pipe();
    let mut m = HashMap::new();
    for i in 0..n {
        let k = format!("{prefix}{i}");
        let v = format!("value-{i}");
        if i % 10 == 0 {
            p.cmd("SETEX").arg(&k).arg(3600).arg(&v).ignore();
        } else {
            p.cmd("SET").arg(&k).arg(&v).ignore();
        }
        m.insert(k, v);
    }
    let () = p.query(&mut c).unwrap();
    m
}

#[test]
fn everysec_data_survives_shutdown_and_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ["--workers", "4", "--fsync", "everysec"];
    let mut s = Server::start_in(&dir, &args);
    let mut all = write_keys(&s, "a:", 2000);
    // SHUTDOWN right after the writes, well inside the one-second window.
    let mut c = s.client();
    let _ = cmd("SHUTDOWN").query::<redis::Value>(&mut c);
    assert_eq!(s.wait_exit(Duration::from_secs(20)), Some(0));
    s.restart();
    assert_all_present(&s, &all, "after SHUTDOWN");
    let mut c = s.client();
    let ttl: i64 = cmd("TTL").arg("a:10").query(&mut c).unwrap();
    assert!(
        (3000..=3600).contains(&ttl),
        "TTL kept across restart: {ttl}"
    );
    let ttl: i64 = cmd("TTL").arg("a:11").query(&mut c).unwrap();
    assert_eq!(ttl, -1);

    all.extend(write_keys(&s, "b:", 2000));
    let n: i64 = cmd("DEL").arg("a:1").arg("a:2").query(&mut c).unwrap();
    assert_eq!(n, 2);
    all.remove("a:1");
    all.remove("a:2");
    // A hangup (the terminal it ran in closed) does nothing; SIGTERM twice at once (as
    // `timeout` sends it, to the process and to its group) is still one clean shutdown.
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.is_running(), "SIGHUP stopped the server");
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    // SAFETY: as above.
    unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
    assert_eq!(s.terminate(), Some(0), "SIGTERM is a clean exit");
    s.restart();
    assert_all_present(&s, &all, "after SIGTERM");
    assert_all_absent(&s, &["a:1".into(), "a:2".into()], "after SIGTERM");
    let n: i64 = cmd("DBSIZE").query(&mut s.client()).unwrap();
    assert_eq!(n as usize, all.len());
}

#[test]
fn data_survives_kill9_after_a_log_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = [
        "--workers",
        "4",
        "--fsync",
        "always",
        "--set",
        "storage.segment_size=1mb",
    ];
    let mut s = Server::start_in(&dir, &args);
    let mut c = s.client();
    let big = "y".repeat(3000);
    for round in 0..3 {
        let mut p = redis::pipe();
        for i in 0..400 {
            p.cmd("SET")
                .arg(format!("m:{i}"))
                .arg(format!("{round}{big}"))
                .ignore();
        }
        let () = p.query(&mut c).unwrap();
    }
    let n: i64 = cmd("DEL").arg("m:0").arg("m:1").query(&mut c).unwrap();
    assert_eq!(n, 2);
    let _: String = cmd("BGREWRITEAOF").query(&mut c).unwrap();
    let done = common::wait_until(Duration::from_secs(20), || {
        info(&mut c, "persistence")["aof_rewrite_in_progress"] == "0"
    });
    assert!(done, "rewrite never finished");
    s.kill9();
    s.restart();
    let mut c = s.client();
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 398);
    let v: Option<String> = cmd("GET").arg("m:0").query(&mut c).unwrap();
    assert_eq!(v, None, "a deleted key came back after the rewrite");
    let v: String = cmd("GET").arg("m:399").query(&mut c).unwrap();
    assert_eq!(v, format!("2{big}"));
}

/// Starts a second server on `dir` and expects it to refuse: non-zero exit, stderr
/// containing every one of `needles`.
fn assert_refuses(dir: &Path, extra: &[&str], needles: &[&str]) {
    let started = Instant::now();
    let (code, stderr) = run_to_exit(dir, extra, Duration::from_secs(30));
    assert!(
        code.is_some_and(|c| c != 0),
        "second start: exit {code:?}, stderr:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusing took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_second_server_on_the_same_directory_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--workers", "2"]);
    let mut c = s.client();
    let () = cmd("SET").arg("mine").arg("1").query(&mut c).unwrap();
    assert_refuses(
        &dir,
        &["--workers", "2"],
        &["in use by another simplekv process (pid ", "lock"],
    );
    // Another worker count does not get around it either.
    assert_refuses(&dir, &["--workers", "3"], &["lock"]);
    // The first one is unharmed.
    assert!(s.is_running());
    let v: String = cmd("GET").arg("mine").query(&mut c).unwrap();
    assert_eq!(v, "1");
    let () = cmd("SET").arg("mine").arg("2").query(&mut c).unwrap();
    s.kill9();
    // Once it is gone, the directory opens again (the lock died with the process).
    let s2 = Server::start_in(&dir, &["--workers", "2"]);
    let v: String = cmd("GET").arg("mine").query(&mut s2.client()).unwrap();
    assert_eq!(v, "2");
}

#[test]
fn another_partition_count_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--set", "storage.partitions=8"]);
    let data = write_keys(&s, "p:", 500);
    assert_eq!(s.terminate(), Some(0));
    assert_refuses(
        &dir,
        &["--set", "storage.partitions=16"],
        &["storage.partitions = 8", "16"],
    );
    assert_refuses(&dir, &[], &["storage.partitions = 8"]);
    // With the right count everything is there.
    let s = Server::start_in(&dir, &["--set", "storage.partitions=8"]);
    assert_all_present(&s, &data, "reopened with the same partition count");
    drop(s);
    // Found by a black-box run: without the file that records the count, another count
    // was taken, and most keys were not found.
    std::fs::remove_file(dir.join("simplekv.meta")).unwrap();
    assert_refuses(&dir, &[], &["no simplekv.meta", "8 partition directories"]);
    let s = Server::start_in(&dir, &["--set", "storage.partitions=8"]);
    assert_all_present(&s, &data, "reopened with the count its directories have");
}

/// Found by a black-box run: with one partition directory deleted, the server started and
/// served its keys as absent.
#[test]
fn a_deleted_partition_directory_is_refused_unless_repairing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--set", "storage.partitions=4"]);
    let data = write_keys(&s, "d:", 200);
    assert_eq!(s.terminate(), Some(0));
    std::fs::remove_dir_all(dir.join("partitions").join("00002")).unwrap();
    assert_refuses(
        &dir,
        &["--set", "storage.partitions=4"],
        &["00002 are missing", "storage.repair = true"],
    );
    let s = Server::start_in(
        &dir,
        &[
            "--set",
            "storage.partitions=4",
            "--set",
            "storage.repair=true",
        ],
    );
    let n: i64 = cmd("DBSIZE").query(&mut s.client()).unwrap();
    assert!(
        n > 0 && (n as usize) < data.len(),
        "the other partitions' keys: {n}"
    );
}

/// Found by a black-box run: a start refused because one partition could not be opened took
/// the whole shutdown timeout (10 s) to exit, and meanwhile accepted clients and answered them
/// from the other partitions, as if it were up.
#[test]
fn a_partition_that_cannot_be_opened_stops_the_start_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--workers", "2"]);
    write_keys(&s, "k:", 50);
    assert_eq!(s.terminate(), Some(0));
    let seg = dir
        .join("partitions")
        .join("00003")
        .join("00000000000000000000.log");
    std::fs::write(&seg, [0xffu8; 100]).unwrap();
    let started = Instant::now();
    assert_refuses(
        &dir,
        &["--workers", "2"],
        &["partition 3", "00000000000000000000.log"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusing took {:?}",
        started.elapsed()
    );
}

#[test]
fn everysec_acknowledged_writes_survive_sigterm_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--workers", "4", "--fsync", "everysec"]);
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let writers: Vec<_> = (0..6)
        .map(|t| {
            let mut c = s.client();
            let acked = acked.clone();
            std::thread::spawn(move || {
                // Pipelines of cross-worker MSETs and SETs, until the server goes away.
                for batch in 0u64.. {
                    let mut p = redis::pipe();
                    let mut pairs = Vec::new();
                    for i in 0..20 {
                        let k = format!("t{t}:{batch}:{i}");
                        let v = format!("{batch}.{i}");
                        if i % 2 == 0 {
                            p.cmd("SET").arg(&k).arg(&v).ignore();
                        } else {
                            p.cmd("MSET")
                                .arg(&k)
                                .arg(&v)
                                .arg(format!("{k}m"))
                                .arg(&v)
                                .ignore();
                            pairs.push((format!("{k}m"), v.clone()));
                        }
                        pairs.push((k, v));
                    }
                    if p.query::<()>(&mut c).is_err() {
                        return batch;
                    }
                    acked.lock().unwrap().extend(pairs);
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.terminate(), Some(0), "SIGTERM under load is a clean exit");
    for w in writers {
        assert!(w.join().unwrap() > 0, "a writer got nothing done");
    }
    s.restart();
    let expect = acked.lock().unwrap().clone();
    assert_all_present(&s, &expect, "after SIGTERM under load");
}

#[test]
fn ttls_survive_a_restart_and_keys_that_expired_while_down_stay_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--workers", "2"]);
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..100 {
        p.cmd("SET")
            .arg(format!("short:{i}"))
            .arg("v")
            .arg("PX")
            .arg(300)
            .ignore();
        p.cmd("SET")
            .arg(format!("long:{i}"))
            .arg("v")
            .arg("EX")
            .arg(1000)
            .ignore();
    }
    let () = p.query(&mut c).unwrap();
    let at: i64 = cmd("PEXPIRETIME").arg("long:7").query(&mut c).unwrap();
    assert_eq!(s.terminate(), Some(0));
    std::thread::sleep(Duration::from_millis(400));
    s.restart();
    let mut c = s.client();
    let n: i64 = cmd("EXISTS")
        .arg((0..100).map(|i| format!("short:{i}")).collect::<Vec<_>>())
        .query(&mut c)
        .unwrap();
    assert_eq!(
        n, 0,
        "keys that expired while the server was down came back"
    );
    let v: Option<String> = cmd("GET").arg("short:3").query(&mut c).unwrap();
    assert_eq!(v, None);
    assert_eq!(
        cmd("PEXPIRETIME")
            .arg("long:7")
            .query::<i64>(&mut c)
            .unwrap(),
        at,
        "the absolute expiry is kept"
    );
    let ok = common::wait_until(Duration::from_secs(5), || {
        cmd("DBSIZE").query::<i64>(&mut c).unwrap() == 100
    });
    assert!(ok, "expired keys still counted after restart");
}

/// Values in closed segments deleted afterwards are dead, but their tombstones sit in the
/// active segment, outside any merge: a merge keeps them and frees nothing. It is not tried
/// again until the closed segments change; a roll (BGREWRITEAOF) then frees the space.
/// (Before, the same merge ran again every few seconds, rewriting the segments forever.)
#[test]
fn a_merge_that_frees_nothing_is_not_repeated_until_the_segments_change() {
    let s = Server::start(&[
        "--workers",
        "1",
        "--set",
        "storage.partitions=1",
        "--set",
        "storage.segment_size=1mb",
        "--set",
        "storage.merge_min_bytes=0",
        "--set",
        "storage.merge_dead_ratio=0.1",
    ]);
    let mut c = s.client();
    let value = "v".repeat(100 << 10);
    for i in 0..30 {
        let _: () = cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value)
            .query(&mut c)
            .unwrap();
    }
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let _: i64 = cmd("DEL").arg(&keys).query(&mut c).unwrap();
    let merges = |c: &mut redis::Connection| -> u64 {
        info(c, "persistence")["merges_completed"].parse().unwrap()
    };
    let log_bytes =
        |c: &mut redis::Connection| -> u64 { info(c, "persistence")["log_bytes"].parse().unwrap() };
    let deadline = Instant::now() + Duration::from_secs(20);
    while merges(&mut c) == 0 {
        assert!(Instant::now() < deadline, "no merge started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several merge checks (every server tick) later, no other merge ran.
    std::thread::sleep(Duration::from_secs(2));
    let after = merges(&mut c);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        merges(&mut c),
        after,
        "a merge that freed nothing ran again"
    );
    assert!(after <= 2, "{after} merges");
    assert!(log_bytes(&mut c) > 2 << 20, "nothing could be freed yet");
    let _: String = cmd("BGREWRITEAOF").query(&mut c).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while log_bytes(&mut c) > 1 << 20 {
        assert!(Instant::now() < deadline, "the rewrite freed nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A command's writes to one partition are one write batch on disk, so a kill -9 that
/// interrupts the write of a turn (a `pwrite` of a few MB of MSETs, cut short by the signal)
/// leaves each MSET whole or absent. Each group's keys share a hash tag (one partition) and
/// each MSET gives all of them the same number, so a torn one shows as a group whose keys
/// hold different numbers. Before write batches, 4 of 40 groups came back torn this way.
#[test]
fn multi_key_writes_are_all_or_nothing_across_kill9() {
    const GROUPS: u64 = 4;
    const KEYS: usize = 8;
    let mut s = Server::start(&[]);
    let pad = "x".repeat(128 << 10);
    let mut seen = 0;
    for round in 0..8u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..GROUPS)
            .map(|g| {
                let mut conn = s.raw();
                let stop = stop.clone();
                let pad = pad.clone();
                std::thread::spawn(move || {
                    let keys: Vec<String> = (0..KEYS).map(|k| format!("{{g{g}}}k{k}")).collect();
                    let mut reply = [0u8; 5];
                    for n in 0..100_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let val = format!("{n}:{pad}");
                        let mut args: Vec<&[u8]> = vec![b"MSET"];
                        for k in &keys {
                            args.push(k.as_bytes());
                            args.push(val.as_bytes());
                        }
                        if conn.write_all(&common::resp(&args)).is_err()
                            || conn.read_exact(&mut reply).is_err()
                        {
                            break;
                        }
                        assert_eq!(&reply, b"+OK\r\n");
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 70 * round));
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        for l in loaders {
            l.join().unwrap();
        }
        s.restart();
        let mut c = s.client();
        for g in 0..GROUPS {
            let keys: Vec<String> = (0..KEYS).map(|k| format!("{{g{g}}}k{k}")).collect();
            let got: Vec<Option<String>> = cmd("MGET").arg(&keys).query(&mut c).unwrap();
            let numbers: Vec<Option<&str>> = got
                .iter()
                .map(|v| v.as_deref().map(|v| v.split(':').next().unwrap_or("")))
                .collect();
            assert!(
                numbers.iter().all(|n| *n == numbers[0]),
                "round {round}: group {g} came back with part of an MSET: {numbers:?}"
            );
            seen += usize::from(numbers[0].is_some());
        }
    }
    assert!(seen > 0, "no MSET was ever written");
}

/// The one log of a single-partition data directory.
fn only_log(dir: &Path) -> std::path::PathBuf {
    let logs = common::log_files(dir);
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

/// A block of zeros inside records the server fsynced (a write the device lost), with whole
/// records after it, is what a power cut leaves of records never fsynced: it used to be cut
/// as a torn write, the acknowledged values after it gone with a warning. Each worker records
/// how far its logs were fsynced (recovery points: every 2 s, and at shutdown), and the start
/// refuses damage below them; `storage.repair` drops it, saying so.
#[test]
fn a_lost_block_of_fsynced_records_is_refused_at_start_not_cut() {
    for clean_stop in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let args = ["--workers", "1", "--set", "storage.partitions=1"];
        let mut s = Server::start_in(&dir, &args);
        // In several turns, so the records after the damage are other write batches.
        let written: usize = (0..8)
            .map(|i| write_keys(&s, &format!("pt{i}-"), 100).len())
            .sum();
        let log = only_log(&dir);
        let len = std::fs::metadata(&log).unwrap().len();
        assert!(len > 16 * 1024, "{len}");
        if clean_stop {
            assert_eq!(s.terminate(), Some(0));
        } else {
            // The background fsync (everysec), then the points that say so.
            let points_dir = dir.join(simplekv_engine::points::POINTS_DIR);
            let covered = common::wait_until(Duration::from_secs(15), || {
                simplekv_engine::points::read_dir(&points_dir)
                    .ok()
                    .and_then(|(by, _)| by.get(&0).cloned())
                    .is_some_and(|ps| ps.iter().any(|p| p.synced >= len))
            });
            assert!(covered, "the points come to cover the log");
            s.kill9();
        }
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[8192..12288].fill(0);
        std::fs::write(&log, &bytes).unwrap();
        assert_refuses(&dir, &args, &["corrupt record", "its recovery point"]);
        let repair = [&args[..], &["--set", "storage.repair=true"]].concat();
        let s = Server::start_in(&dir, &repair);
        let mut c = s.client();
        let kept: usize = cmd("DBSIZE").query(&mut c).unwrap();
        assert!(kept > 0 && kept < written, "{kept} of {written}");
    }
}

/// A clean stop describes an active segment of more than 1 MiB in a shutdown hint, so that
/// the next start reads no values from it; that start removes the hint before it writes, and
/// a crash after it finds every write by scanning again. With `fsync = always` the clean stop
/// also empties the commit journal (everything in it is in the fsynced logs), or the start
/// would read the active segment whole for the journal's sake.
#[test]
fn a_clean_stop_leaves_a_shutdown_hint_that_the_next_start_reads_and_removes() {
    for fsync in ["everysec", "always"] {
        clean_stop_round_trip(fsync);
    }
}

fn clean_stop_round_trip(fsync: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = [
        "--workers",
        "1",
        "--set",
        "storage.partitions=1",
        "--fsync",
        fsync,
    ];
    let mut s = Server::start_in(&dir, &args);
    let big = "v".repeat(600);
    let mut c = s.client();
    let mut all = HashMap::new();
    for round in 0..4 {
        let mut p = redis::pipe();
        for i in 0..600 {
            let k = format!("sh{round}-{i}");
            let v = format!("{i}-{big}");
            p.cmd("SET").arg(&k).arg(&v).ignore();
            all.insert(k, v);
        }
        let () = p.query(&mut c).unwrap();
    }
    let n: i64 = cmd("DEL").arg("sh0-1").arg("sh0-2").query(&mut c).unwrap();
    assert_eq!(n, 2);
    all.remove("sh0-1");
    all.remove("sh0-2");
    let log = only_log(&dir);
    let hint = log.with_extension("shint");
    assert!(std::fs::metadata(&log).unwrap().len() > 1 << 20);
    assert!(!hint.exists(), "no shutdown hint while the server runs");
    assert_eq!(s.terminate(), Some(0));
    assert!(hint.exists(), "a clean stop describes the active segment");

    s.restart();
    assert!(
        !hint.exists(),
        "the start removed the hint it read ({fsync})"
    );
    assert_eq!(
        load_info(&s),
        (1, 0),
        "shutdown hints used, segments scanned ({fsync})"
    );
    assert_all_present(&s, &all, "started from the shutdown hint");
    assert_all_absent(&s, &["sh0-1".into(), "sh0-2".into()], "deleted before");
    let mut c = s.client();
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n as usize, all.len());
    all.extend(write_keys(&s, "after:", 500));
    let n: i64 = cmd("DEL").arg("sh1-5").query(&mut c).unwrap();
    assert_eq!(n, 1);
    all.remove("sh1-5");
    // Only the OS has the last writes (everysec): a crash keeps them, and the start scans.
    s.restart();
    assert!(!hint.exists());
    assert_eq!(
        load_info(&s),
        (0, 1),
        "after kill -9 the start scans ({fsync})"
    );
    assert_all_present(&s, &all, "after kill -9 following a start from the hint");
    assert_all_absent(&s, &["sh1-5".into()], "deleted after the start");
}

#[test]
fn the_shutdown_hint_threshold_is_a_runtime_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ["--workers", "1", "--set", "storage.partitions=1"];
    let mut s = Server::start_in(&dir, &args);
    let all = write_keys(&s, "small:", 300);
    let log = only_log(&dir);
    let hint = log.with_extension("shint");
    assert!(std::fs::metadata(&log).unwrap().len() < 1 << 20);
    assert_eq!(s.terminate(), Some(0));
    assert!(!hint.exists(), "under the default 1mb: no shutdown hint");
    s.restart();
    assert_eq!(load_info(&s), (0, 1), "the start scanned the small segment");
    let mut c = s.client();
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("storage.shutdown_hint_min_bytes")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let got: Vec<String> = cmd("CONFIG")
        .arg("GET")
        .arg("storage.shutdown_hint_min_bytes")
        .query(&mut c)
        .unwrap();
    assert_eq!(got, ["storage.shutdown_hint_min_bytes", "0"]);
    assert_eq!(s.terminate(), Some(0));
    assert!(
        hint.exists(),
        "with 0, every non-empty active segment gets one"
    );
    s.restart();
    assert_eq!(
        load_info(&s),
        (1, 0),
        "the start read the small segment's hint"
    );
    assert_all_present(&s, &all, "started from a small shutdown hint");
}

/// INFO persistence's (`log_load_shutdown_hints`, `log_load_segments_scanned`).
fn load_info(s: &Server) -> (u64, u64) {
    let info: String = cmd("INFO")
        .arg("persistence")
        .query(&mut s.client())
        .unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in {info}"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (
        field("log_load_shutdown_hints"),
        field("log_load_segments_scanned"),
    )
}
