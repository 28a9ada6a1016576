//! A full disk: writes get a clear error, the server stays up, reads keep working, nothing
//! acknowledged is lost, and writes succeed again once there is room.
//!
//! Needs to mount a small tmpfs (CI runs as root); elsewhere the test says why it cannot run.
mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Server, err_text, resp};
use redis::cmd;

#[path = "../../engine/tests/support/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

#[test]
fn a_full_disk_gives_write_errors_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount_or_skip("24m") else {
        return;
    };
    let data = fs.path().join("data");
    // Space to give back later, to check that writes work again once there is room.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 6 << 20]).unwrap();
    let s = Server::start_in(
        &data,
        &[
            "--fsync",
            "always",
            "--workers",
            "2",
            "--set",
            "storage.segment_size=4mb",
            // Commits go through 1 MiB journal files (4 MiB for two workers, allocated at
            // start), so the disk fills up under the partition logs' writes.
            "--set",
            "storage.journal_size=1mb",
            // The disk itself full, not the space kept free (tested below).
            "--set",
            "storage.min_free_space=0",
        ],
    );
    // Each worker opens its journal as it starts: worker 1 may still be at it when worker 0
    // answers the first command.
    let journal = data.join("journal").join("worker-1.1.journal");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !journal.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(journal.exists(), "the journal is in use");
    let mut c = s.client();
    let value = vec![b'x'; 64 << 10];
    let mut acked = Vec::new();
    let mut first_error = None;
    for i in 0..2000 {
        let key = format!("key{i}");
        match cmd("SET").arg(&key).arg(&value).query::<()>(&mut c) {
            Ok(()) => acked.push(key),
            Err(e) => {
                first_error = Some((key, err_text(&e)));
                break;
            }
        }
    }
    let (refused, err) = first_error.expect("a 24 MiB file system must fill up");
    assert!(
        err.contains("write to the log failed") && err.contains("No space left"),
        "{err}"
    );
    assert!(
        acked.len() > 50,
        "only {} writes before the disk was full",
        acked.len()
    );
    // Still up, still reading, still refusing writes with the same clear error (a partition
    // whose log still has space set aside takes small writes meanwhile; the refused key's has
    // none).
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let e = cmd("SET")
        .arg(&refused)
        .arg(&value)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("No space left"), "{}", err_text(&e));
    // Nothing a refused write did is seen, not even by the commands pipelined right after it
    // (found by a black-box run: they saw its value, which then vanished).
    let mut raw = s.raw();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = resp(&[b"SET", refused.as_bytes(), &value]);
    req.extend(resp(&[b"GET", refused.as_bytes()]));
    req.extend(resp(&[b"EXISTS", refused.as_bytes()]));
    raw.write_all(&req).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    while !(got.ends_with(b":0\r\n") || got.ends_with(b":1\r\n")) {
        let n = raw.read(&mut buf).expect("the pipeline's replies");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("-ERR write to the log failed"), "{got}");
    assert!(got.ends_with("\r\n$-1\r\n:0\r\n"), "{got}");
    for k in acked.iter().step_by(7) {
        let v: Vec<u8> = cmd("GET").arg(k).query(&mut c).unwrap();
        assert_eq!(v.len(), value.len(), "acknowledged {k} lost");
    }
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n as usize, acked.len(), "no refused write is visible");
    let persistence =
        |c: &mut redis::Connection| -> String { cmd("INFO").arg("persistence").query(c).unwrap() };
    assert!(persistence(&mut c).contains("aof_last_write_status:err"));
    // Room again: writes work, without a restart, and the status is ok again once every
    // worker has written (small values, keys spread over both workers).
    std::fs::remove_file(&filler).unwrap();
    let _: () = cmd("SET").arg(&refused).arg(&value).query(&mut c).unwrap();
    acked.push(refused);
    let _: () = cmd("SET").arg("after").arg(&value).query(&mut c).unwrap();
    acked.push("after".into());
    for i in 0..32 {
        let key = format!("small{i}");
        let _: () = cmd("SET").arg(&key).arg("v").query(&mut c).unwrap();
        acked.push(key);
    }
    let p = persistence(&mut c);
    assert!(p.contains("aof_last_write_status:ok"), "{p}");
    assert!(
        !p.contains("commit_errors:0\r"),
        "the errors stay counted: {p}"
    );
    drop(s);
    // Restart on the same (full) directory: everything acknowledged is there.
    let s = Server::start_in(
        &data,
        &[
            "--fsync",
            "always",
            "--set",
            "storage.journal_size=1mb",
            "--set",
            "storage.min_free_space=0",
        ],
    );
    let mut c = s.client();
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n as usize, acked.len());
}

/// Found by a black-box run: on a nearly full disk an MSET was answered with the error and had
/// its first keys set (space was taken key by key). It gets room for all of them first.
#[test]
fn an_mset_the_disk_has_no_room_for_sets_none_of_its_keys() {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let data = fs.path().join("data");
    let args = [
        "--fsync",
        "always",
        "--workers",
        "1",
        "--set",
        "storage.partitions=1",
        "--set",
        "storage.journal_size=0",
        "--set",
        "storage.segment_size=1mb",
        "--set",
        "storage.min_free_space=0",
    ];
    let mut s = Server::start_in(&data, &args);
    let mut c = s.client();
    let () = cmd("SET").arg("seed").arg("x").query(&mut c).unwrap();
    // Every free byte taken: the log has only what it set aside when "seed" was written.
    let filler = fs.fill("filler");
    let value = vec![b'v'; 150_000];
    let mut mset = cmd("MSET");
    for i in 0..10 {
        mset.arg(format!("m{i}")).arg(&value);
    }
    let e = mset.query::<()>(&mut c).unwrap_err();
    assert!(err_text(&e).contains("No space left"), "{}", err_text(&e));
    let mut exists = cmd("EXISTS");
    for i in 0..10 {
        exists.arg(format!("m{i}"));
    }
    let n: i64 = exists.query(&mut c).unwrap();
    assert_eq!(n, 0, "keys of the refused MSET are set");
    s.kill9();
    std::fs::remove_file(&filler).unwrap();
    let s = Server::start_in(&data, &args);
    let n: i64 = exists.query(&mut s.client()).unwrap();
    assert_eq!(n, 0, "keys of the refused MSET came back");
}

/// With less free than `storage.min_free_space`, SET is refused with an error naming the
/// setting while DEL goes on; merges start by themselves (whatever `merge_dead_ratio` says),
/// run in the space kept free and, once they have freed enough, writes resume. Without the floor, a disk filled by
/// overwrites had no room for a merge's output, and every write, DEL included, was refused
/// until space was freed by hand.
#[test]
fn under_the_free_space_floor_sets_are_refused_and_deletes_and_merges_free_room() {
    let Some(fs) = Tmpfs::mount_or_skip("32m") else {
        return;
    };
    let data = fs.path().join("data");
    let args = [
        "--workers",
        "1",
        "--set",
        "storage.partitions=2",
        "--set",
        "storage.segment_size=1mb",
        "--set",
        "storage.min_free_space=8mb",
        // No merge would start on its own above the floor.
        "--set",
        "storage.merge_dead_ratio=0.95",
        "--set",
        "storage.merge_min_bytes=1gb",
    ];
    let s = Server::start_in(&data, &args);
    let mut c = s.client();
    let value = vec![b'v'; 32 << 10];
    // 3.2 MiB live, written three times over.
    for _ in 0..3 {
        for i in 0..100 {
            let () = cmd("SET")
                .arg(format!("k{i}"))
                .arg(&value)
                .query(&mut c)
                .unwrap();
        }
    }
    let info =
        |c: &mut redis::Connection| -> String { cmd("INFO").arg("persistence").query(c).unwrap() };
    assert!(
        info(&mut c).contains("disk_space_low:0"),
        "{}",
        info(&mut c)
    );
    // Leave 6 MiB free: under the 8 MiB floor.
    fs.fill_leaving("filler", 6 << 20);
    let mut taken = 0;
    let err = loop {
        match cmd("SET")
            .arg(format!("new{taken}"))
            .arg(&value)
            .query::<()>(&mut c)
        {
            Ok(()) => taken += 1,
            Err(e) => break err_text(&e),
        }
        assert!(taken < 64, "SETs go on under the floor");
    };
    assert!(
        err.contains("disk space low") && err.contains("storage.min_free_space"),
        "{err}"
    );
    let p = info(&mut c);
    assert!(p.contains("disk_space_low:1"), "{p}");
    assert!(
        p.contains(&format!("disk_min_free_bytes:{}", 8 << 20)),
        "{p}"
    );
    // DEL goes on under the floor.
    for i in 0..100 {
        let n: i64 = cmd("DEL").arg(format!("k{i}")).query(&mut c).unwrap();
        assert_eq!(n, 1);
    }
    // Merges start, run in the space kept free, and free the dead logs: SET works again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !info(&mut c).contains("disk_space_low:0") {
        assert!(
            std::time::Instant::now() < deadline,
            "no merge freed space: {}",
            info(&mut c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = info(&mut c);
    assert!(!p.contains("merges_completed:0\r"), "{p}");
    let () = cmd("SET").arg("after").arg(&value).query(&mut c).unwrap();
    drop(s);
    let s = Server::start_in(&data, &args);
    let mut c = s.client();
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(
        n as usize,
        taken + 1,
        "the keys set before and after the floor, none of k*"
    );
}

/// Found by a black-box run: on a full disk an MSET over two workers was answered with the
/// error and had the keys of one worker set (each worker got room for its part only as it
/// ran it). Every worker now sets room aside for its part at its step, before any part
/// runs: MSET, MSETNX, DEL and EXEC over several workers are refused whole.
#[test]
fn a_command_over_two_workers_on_a_full_disk_is_refused_whole() {
    commands_over_two_partitions_on_a_full_disk_are_refused_whole("2");
}

/// The same with both partitions on one worker (found by a black-box run: a DEL answered
/// with the error had deleted its keys in the first partition).
#[test]
fn a_command_over_two_partitions_of_a_worker_on_a_full_disk_is_refused_whole() {
    commands_over_two_partitions_on_a_full_disk_are_refused_whole("1");
}

fn commands_over_two_partitions_on_a_full_disk_are_refused_whole(workers: &str) {
    let Some(fs) = Tmpfs::mount_or_skip("16m") else {
        return;
    };
    let data = fs.path().join("data");
    // Two partitions (with two workers, one each): slot 5061 ({bar}) is partition 0's, 12182
    // ({foo}) partition 1's.
    let args = [
        "--workers",
        workers,
        "--set",
        "storage.partitions=2",
        "--set",
        "storage.segment_size=1mb",
        "--set",
        "storage.min_free_space=0",
    ];
    let mut s = Server::start_in(&data, &args);
    let mut c = s.client();
    // Keys long enough that their tombstones need more room than worker 1 will have left.
    let long = |tag: &str| format!("{{{tag}}}{}", "k".repeat(2000));
    for k in [long("bar"), long("foo")] {
        let () = cmd("SET").arg(k).arg("x").query(&mut c).unwrap();
    }
    let filler = fs.fill("filler");
    // Partition 1's log uses up the space it set aside; partition 0's keeps about 256 KiB.
    let mut n = 0;
    for size in [32 << 10, 4 << 10, 256] {
        while cmd("SET")
            .arg(format!("{{foo}}f{n}"))
            .arg(vec![b'f'; size])
            .query::<()>(&mut c)
            .is_ok()
        {
            n += 1;
        }
    }
    let value = vec![b'v'; 8 << 10];
    let e = cmd("MSET")
        .arg("{bar}m")
        .arg(&value)
        .arg("{foo}m")
        .arg(&value)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("No space left"), "{}", err_text(&e));
    absent(&mut c, &["{bar}m", "{foo}m"]);
    let e = cmd("MSETNX")
        .arg("{bar}n")
        .arg(&value)
        .arg("{foo}n")
        .arg(&value)
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("No space left"), "{}", err_text(&e));
    absent(&mut c, &["{bar}n", "{foo}n"]);
    let () = cmd("MULTI").query(&mut c).unwrap();
    let queued: String = cmd("MSET")
        .arg("{bar}t")
        .arg(&value)
        .arg("{foo}t")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    assert_eq!(queued, "QUEUED");
    let e = cmd("EXEC").query::<redis::Value>(&mut c);
    let e = err_text(&e.expect_err("EXEC refused whole"));
    assert!(
        e.contains("write to the log failed") && e.contains("No space left"),
        "{e}"
    );
    // Refused whole, as Redis words an EXEC refused whole, on one worker as on two.
    assert!(
        e.starts_with("EXECABORT Transaction discarded because of:"),
        "{e}"
    );
    absent(&mut c, &["{bar}t", "{foo}t"]);
    // A DEL's tombstones need room too: refused whole, both keys kept.
    let both = [long("bar"), long("foo")];
    let e = cmd("DEL").arg(&both).query::<i64>(&mut c).unwrap_err();
    assert!(err_text(&e).contains("No space left"), "{}", err_text(&e));
    let kept: i64 = cmd("EXISTS").arg(&both).query(&mut c).unwrap();
    assert_eq!(kept, 2, "a refused DEL deleted a key");
    // Worker 0 still writes into the room it kept: nothing of the refused commands is held.
    let () = cmd("SET")
        .arg("{bar}after")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    s.kill9();
    std::fs::remove_file(&filler).unwrap();
    let s = Server::start_in(&data, &args);
    let mut c = s.client();
    absent(
        &mut c,
        &["{bar}m", "{foo}m", "{bar}n", "{foo}n", "{bar}t", "{foo}t"],
    );
    let () = cmd("MSET")
        .arg("{bar}m")
        .arg(&value)
        .arg("{foo}m")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    let n: i64 = cmd("EXISTS")
        .arg(&["{bar}m", "{foo}m"])
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let n: i64 = cmd("EXISTS").arg(&both).query(&mut c).unwrap();
    assert_eq!(n, 2);
}

/// Found by a review: in a transaction, a write queued before an MSET over two workers
/// could take the disk room set aside for the MSET (all of it was given back before the
/// first command ran) and leave it half applied; and the floor was checked against the free
/// space before a write, so one large write could go far below it. Now every write of an
/// EXEC gets its room (a bound on it where the value is known only when the command runs)
/// before any runs, and an EXEC without room for all is refused whole, as Redis refuses a
/// transaction with commands that add data when out of memory: on one worker as on two.
/// Runs `cmds` in MULTI/EXEC: EXEC's reply.
fn exec(c: &mut redis::Connection, cmds: &[Vec<Vec<u8>>]) -> redis::RedisResult<redis::Value> {
    let () = cmd("MULTI").query(c).unwrap();
    for a in cmds {
        let mut q = cmd(std::str::from_utf8(&a[0]).unwrap());
        for x in &a[1..] {
            q.arg(x);
        }
        let queued: String = q.query(c).unwrap();
        assert_eq!(queued, "QUEUED");
    }
    cmd("EXEC").query::<redis::Value>(c)
}

/// A command's arguments.
fn v(a: &[&[u8]]) -> Vec<Vec<u8>> {
    a.iter().map(|x| x.to_vec()).collect()
}

/// EXEC was refused whole for want of disk space.
fn refused(r: redis::RedisResult<redis::Value>) {
    let e = err_text(&r.expect_err("EXEC refused whole"));
    assert!(
        e.starts_with("EXECABORT Transaction discarded because of: disk space low"),
        "{e}"
    );
}

/// None of `keys` exists (those of a refused command).
fn absent(c: &mut redis::Connection, keys: &[&str]) {
    let n: i64 = cmd("EXISTS").arg(keys).query(c).unwrap();
    assert_eq!(n, 0, "keys of a refused command are set: {keys:?}");
}

/// A server with two workers, one partition each, and a 16 MiB floor, on `fs`.
fn two_workers_with_a_16mb_floor(fs: &Tmpfs) -> Server {
    Server::start_in(
        &fs.path().join("data"),
        &[
            "--workers",
            "2",
            "--set",
            "storage.partitions=2",
            "--set",
            "storage.min_free_space=16mb",
        ],
    )
}

#[test]
fn under_the_floor_a_transaction_is_refused_whole_or_applied_whole() {
    let Some(fs) = Tmpfs::mount_or_skip("64m") else {
        return;
    };
    let s = two_workers_with_a_16mb_floor(&fs);
    let mut c = s.client();
    let () = cmd("SET").arg("{bar}x").arg("x").query(&mut c).unwrap();
    let () = cmd("SET").arg("{foo}x").arg("x").query(&mut c).unwrap();
    // 2 MiB over the floor.
    fs.fill_leaving("filler", 18 << 20);
    let big = vec![b'b'; 3 << 20];
    // Over two workers: the SET has no room (3 MiB with 2 MiB over the floor).
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", &big]),
            v(&[b"MSET", b"{bar}b", b"1", b"{foo}c", b"1"]),
        ],
    ));
    // On one worker: the INCR before the SET does not run either.
    refused(exec(
        &mut c,
        &[v(&[b"INCR", b"{bar}n"]), v(&[b"SET", b"{bar}a", &big])],
    ));
    // A SETRANGE's room is counted to its offset.
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}s", b"x"]),
            v(&[b"SETRANGE", b"{bar}s", b"3000000", b"y"]),
        ],
    ));
    // An APPEND's room counts the value a SET before it in the transaction leaves (each
    // alone fits in what is left, not both).
    let half = vec![b'h'; 1200 << 10];
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}p", &half]),
            v(&[b"APPEND", b"{bar}p", b"x"]),
        ],
    ));
    absent(
        &mut c,
        &["{bar}a", "{bar}b", "{foo}c", "{bar}n", "{bar}s", "{bar}p"],
    );
    // Within the room left, all of it runs.
    let r = exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"APPEND", b"{bar}a", b"+more"]),
            v(&[b"INCR", b"{bar}n"]),
            v(&[b"MSET", b"{bar}b", b"1", b"{foo}c", b"1"]),
        ],
    )
    .expect("EXEC within the room left");
    assert_eq!(
        r,
        redis::Value::Array(vec![
            redis::Value::Okay,
            redis::Value::Int(10),
            redis::Value::Int(1),
            redis::Value::Okay,
        ])
    );
    let got: Vec<Option<String>> = cmd("MGET")
        .arg(&["{bar}a", "{bar}n", "{bar}b", "{foo}c"])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        got,
        ["small+more", "1", "1", "1"].map(|x| Some(x.to_string()))
    );
    // Under the floor, a transaction that only deletes still runs.
    fs.fill_leaving("filler2", 8 << 20);
    // (Past the space the log has reserved already, which the refused transactions above
    // left up to 1.5 MiB of: writes within it take nothing more from the disk.)
    refused(exec(&mut c, &[v(&[b"SET", b"{bar}y", &big])]));
    let r = exec(
        &mut c,
        &[
            v(&[b"GETDEL", b"{bar}x"]),
            v(&[b"DEL", b"{foo}x", b"{bar}a"]),
        ],
    )
    .expect("deletes under the floor");
    assert_eq!(
        r,
        redis::Value::Array(vec![
            redis::Value::BulkString(b"x".to_vec()),
            redis::Value::Int(2),
        ])
    );
    absent(&mut c, &["{bar}x", "{foo}x", "{bar}a", "{bar}y"]);
}

#[test]
fn under_the_floor_a_transaction_that_carries_data_between_workers_is_refused_whole() {
    // RENAME, COPY, BITOP and MSETNX over keys of two workers run in sequence, a worker at
    // a time: each write's room is set aside before any of them runs.
    let Some(fs) = Tmpfs::mount_or_skip("64m") else {
        return;
    };
    let s = two_workers_with_a_16mb_floor(&fs);
    let mut c = s.client();
    let big = vec![b'b'; 3 << 20];
    let () = cmd("SET").arg("{bar}big").arg(&big).query(&mut c).unwrap();
    let () = cmd("SET").arg("{foo}big").arg(&big).query(&mut c).unwrap();
    let () = cmd("SET").arg("{bar}x").arg("x").query(&mut c).unwrap();
    // 2 MiB over the floor: each transaction below would write 3 MiB on one worker.
    fs.fill_leaving("filler", 18 << 20);
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"RENAME", b"{bar}big", b"{foo}moved"]),
            v(&[b"INCR", b"{foo}n"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"INCR", b"{bar}n"]),
            v(&[b"COPY", b"{foo}big", b"{bar}copy"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{foo}a", b"small"]),
            v(&[b"BITOP", b"OR", b"{bar}or", b"{foo}big", b"{bar}x"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"MSETNX", b"{bar}m1", b"1", b"{foo}m2", &big]),
        ],
    ));
    // A write that may not happen (a command that fails on what it finds, a condition)
    // leaves the value's length as it was for the commands after it: a RENAME, COPY or
    // APPEND of the 3 MiB value after an INCR or SET NX of it needs room for all of it.
    refused(exec(
        &mut c,
        &[
            v(&[b"INCR", b"{bar}big"]),
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"RENAME", b"{bar}big", b"{foo}moved"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"SET", b"{bar}big", b"x", b"NX"]),
            v(&[b"COPY", b"{bar}big", b"{foo}copy"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"MSETNX", b"{bar}big", b"x", b"{foo}big", b"y"]),
            v(&[b"APPEND", b"{bar}big", b"z"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"INCRBYFLOAT", b"{bar}big", b"1.5"]),
            v(&[b"APPEND", b"{bar}big", b"z"]),
        ],
    ));
    // Nor do commands that may fail on their options, or a RENAME of a key onto itself.
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"SETEX", b"{bar}big", b"0", b"x"]),
            v(&[b"APPEND", b"{bar}big", b"z"]),
        ],
    ));
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"RENAME", b"{bar}big", b"{bar}big"]),
            v(&[b"APPEND", b"{bar}big", b"z"]),
        ],
    ));
    // A source renamed earlier in the transaction is sized by what it holds then.
    refused(exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}x", &big]),
            v(&[b"RENAME", b"{bar}x", b"{foo}x2"]),
        ],
    ));
    absent(
        &mut c,
        &[
            "{bar}a",
            "{foo}moved",
            "{foo}n",
            "{bar}n",
            "{bar}copy",
            "{foo}a",
            "{bar}or",
            "{bar}m1",
            "{foo}m2",
            "{foo}x2",
            "{foo}copy",
        ],
    );
    let lens: Vec<i64> = ["{bar}big", "{foo}big", "{bar}x"]
        .iter()
        .map(|k| cmd("STRLEN").arg(k).query(&mut c).unwrap())
        .collect();
    assert_eq!(lens, [3 << 20, 3 << 20, 1]);
    // Within the room left, all of it runs.
    let r = exec(
        &mut c,
        &[
            v(&[b"SET", b"{bar}a", b"small"]),
            v(&[b"RENAME", b"{bar}x", b"{foo}x2"]),
            v(&[b"COPY", b"{foo}x2", b"{bar}x3"]),
            v(&[b"BITOP", b"OR", b"{foo}or", b"{bar}x3", b"{foo}x2"]),
            v(&[b"MSETNX", b"{bar}m1", b"1", b"{foo}m2", b"2"]),
            v(&[b"GET", b"{foo}x2"]),
        ],
    )
    .expect("EXEC within the room left");
    assert_eq!(
        r,
        redis::Value::Array(vec![
            redis::Value::Okay,
            redis::Value::Okay,
            redis::Value::Int(1),
            redis::Value::Int(1),
            redis::Value::Int(1),
            redis::Value::BulkString(b"x".to_vec()),
        ])
    );
    let got: Vec<Option<String>> = cmd("MGET")
        .arg(&[
            "{bar}a", "{bar}x", "{bar}x3", "{foo}or", "{bar}m1", "{foo}m2",
        ])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        got,
        [
            Some("small"),
            None,
            Some("x"),
            Some("x"),
            Some("1"),
            Some("2")
        ]
        .map(|x| x.map(str::to_string))
    );
}

/// A leader whose disk fills up while it leads hands its partition over to an in-sync replica
/// that can write, instead of answering every write with the disk's error until space is
/// freed by hand: every write it acknowledged is on the new leader, writes go in there, and
/// once its disk has room again the node says so, catches up and is in sync again.
#[test]
fn a_leader_whose_disk_fills_up_hands_its_partition_to_an_in_sync_replica() {
    use common::cluster::{LocalCluster, get, set};
    let Some(fs) = Tmpfs::mount_or_skip("32m") else {
        return;
    };
    let mut c = LocalCluster::start(
        3,
        1,
        3,
        &[
            ("cluster.leader_imbalance_ratio", "1.0"),
            ("storage.segment_size", "4mb"),
            // The disk itself full, not the space kept free (that refuses writes and keeps
            // the leadership: every replica holds the same data).
            ("storage.min_free_space", "0"),
        ],
    );
    c.wait_for_full_isr(Duration::from_secs(30));
    // The preferred leader of partition 0 gets a small disk of its own (empty: it copies
    // the log from the leader meanwhile), then leads again.
    let node = c.leader_of(0).expect("leader");
    let epoch = c.partition_state(0).leader_epoch;
    c.kill9(node);
    c.set_data_dir(node, fs.path().join("data"));
    c.restart(node);
    // Back in the ISR of the leadership that replaced it: the state from before the kill
    // (still full while the dead node's session lasted) must not count, or the election
    // asked below finds it out of the ISR and moves nothing (the request is acted on once).
    let back_in_sync = common::wait_until(Duration::from_secs(30), || {
        let st = c.partition_state(0);
        st.leader_epoch > epoch && st.isr.len() == 3
    });
    assert!(back_in_sync, "{:?}", c.partition_state(0));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simplekv"))
        .args(["cluster", "rebalance", "--zk", &c.zk_connect()])
        .output()
        .expect("simplekv cluster rebalance");
    assert!(out.status.success(), "{out:?}");
    let back = common::wait_until(Duration::from_secs(30), || c.leader_of(0) == Some(node));
    assert!(back, "{:?}\n{}", c.partition_state(0), c.all_log_tails());
    c.wait_for_leaders(Duration::from_secs(30));
    set(&c, node, "before", "1").expect("a write before the disk fills");

    let filler = fs.fill("filler");
    let from = c.log_len(node);
    let value = "v".repeat(64 << 10);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let key = format!("key{i}");
        match set(&c, node, &key, &value) {
            Ok(()) => acked.push(key),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a write refused on the full disk");
    assert!(refused.contains("no space left"), "{refused}");
    let moved = common::wait_until(Duration::from_secs(30), || {
        c.leader_of(0).is_some_and(|l| l != node)
    });
    assert!(moved, "{:?}\n{}", c.partition_state(0), c.all_log_tails());
    assert!(
        c.log_since(node, from).contains("cannot take writes"),
        "{}",
        c.log_tail(node)
    );
    let leader = c.leader_of(0).expect("leader");
    // Nothing acknowledged is lost, and writes go in again (through the full node too: it
    // redirects them).
    assert_eq!(get(&c, leader, "before").as_deref(), Some("1"));
    for k in &acked {
        assert_eq!(get(&c, leader, k).as_deref(), Some(value.as_str()), "{k}");
    }
    // (The node may take a moment to learn that it leads no more.)
    let through = common::wait_until(Duration::from_secs(10), || {
        set(&c, node, "during", "2").is_ok()
    });
    assert!(
        through,
        "a write through the full node\n{}",
        c.all_log_tails()
    );
    assert_eq!(get(&c, leader, "during").as_deref(), Some("2"));
    let st = c.partition_state(0);
    assert!(!st.isr.contains(&node), "it left the ISR: {st:?}");

    // Room again: the node finds out by itself (a probe of its log every second), says it
    // can lead again, catches up and is in sync again.
    std::fs::remove_file(&filler).expect("free the disk");
    let again = common::wait_until(Duration::from_secs(30), || {
        c.log_since(node, from).contains("writes partition 0 again")
    });
    assert!(again, "{}", c.log_tail(node));
    c.wait_for_full_isr(Duration::from_secs(30));
    set(&c, leader, "after", "3").expect("a write once every replica is in sync");
    assert_eq!(get(&c, node, "during").as_deref(), Some("2"));
    assert_eq!(get(&c, node, "after").as_deref(), Some("3"));
}
