//! The commit journal (`fsync always`): acknowledged writes survive losing every byte of the
//! partition logs that was not fsynced (what a power cut does to the page cache), journal files
//! that fill up and switch many times, and restarts with another worker count.
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, info, log_files, run_to_exit, wait_until};
use redis::cmd;

/// Acknowledged state: key -> value, and keys whose DEL was acknowledged.
#[derive(Default)]
struct Acked {
    values: HashMap<String, String>,
    deleted: HashSet<String>,
}

/// Runs `threads` writers against `s` for `run_for` (SETs, overwrites, DELs and INCRs), then
/// kills the server with SIGKILL while they are still writing.
fn write_then_kill(s: &mut Server, tag: &str, threads: usize, run_for: Duration) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let mut c = s.client();
            let (acked, stop, tag) = (acked.clone(), stop.clone(), tag.to_owned());
            std::thread::spawn(move || {
                for i in 0u64..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = format!("{tag}:t{t}:{}", i % 5000);
                    let v = format!("{i}-{}", "v".repeat((i % 40) as usize));
                    if i % 11 == 5 {
                        // Once acknowledged, the absence must survive.
                        acked.lock().unwrap().values.remove(&k);
                        if cmd("DEL").arg(&k).query::<i64>(&mut c).is_err() {
                            break;
                        }
                        acked.lock().unwrap().deleted.insert(k);
                    } else if i % 13 == 7 {
                        let ck = format!("{tag}:t{t}:counter");
                        let Ok(n) = cmd("INCR").arg(&ck).query::<i64>(&mut c) else {
                            // In flight at the kill: either value may survive.
                            acked.lock().unwrap().values.remove(&ck);
                            break;
                        };
                        acked.lock().unwrap().values.insert(ck, n.to_string());
                    } else {
                        if cmd("SET").arg(&k).arg(&v).query::<()>(&mut c).is_err() {
                            let mut a = acked.lock().unwrap();
                            a.values.remove(&k);
                            a.deleted.remove(&k);
                            break;
                        }
                        let mut a = acked.lock().unwrap();
                        a.deleted.remove(&k);
                        a.values.insert(k, v);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(run_for);
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    Arc::try_unwrap(acked)
        .ok()
        .expect("writers are done")
        .into_inner()
        .unwrap()
}

fn check(s: &Server, acked: &Acked, what: &str) {
    let mut c = s.client();
    let keys: Vec<&String> = acked.values.keys().collect();
    assert!(!keys.is_empty(), "{what}: nothing was acknowledged");
    for chunk in keys.chunks(500) {
        let got: Vec<Option<String>> = cmd("MGET").arg(chunk).query(&mut c).unwrap();
        for (k, v) in chunk.iter().zip(got) {
            assert_eq!(
                v.as_deref(),
                Some(acked.values[*k].as_str()),
                "{what}: acknowledged write to {k} lost or wrong"
            );
        }
    }
    let deleted: Vec<&String> = acked.deleted.iter().collect();
    for chunk in deleted.chunks(500) {
        let n: i64 = cmd("EXISTS").arg(chunk).query(&mut c).unwrap();
        assert_eq!(n, 0, "{what}: an acknowledged DEL was undone");
    }
}

#[test]
fn fsync_always_writes_survive_losing_every_unsynced_log_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // A journal far larger than what the test writes never fills up, so the partition logs
    // are never fsynced after their segments were created: everything past each segment's
    // 64-byte header is exactly what a power cut may take from them.
    let mut s = Server::start_in(
        &dir,
        &[
            "--workers",
            "2",
            "--fsync",
            "always",
            "--set",
            "storage.journal_size=32mb",
        ],
    );
    let acked = write_then_kill(&mut s, "cut", 4, Duration::from_millis(700));
    let logs = log_files(&dir);
    let total: u64 = logs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(
        total < 16 << 20,
        "the premise needs less than half a journal file of log ({total} bytes)"
    );
    let mut cut = 0;
    for p in &logs {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        cut += f.metadata().unwrap().len().saturating_sub(64);
        f.set_len(64).unwrap();
    }
    assert!(cut > 0, "the logs held no records to lose");
    s.restart();
    check(&s, &acked, "after losing the unsynced log tails");
    // The replayed records were fsynced into the logs and the journal started over: a second
    // crash straight away loses nothing either.
    s.restart();
    check(&s, &acked, "after a second restart");
}

#[test]
fn journal_files_that_switch_often_lose_nothing_across_kill9_and_fewer_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // 64 KiB journal files fill up every few hundred writes: many switches and checkpoints.
    let small = ["--fsync", "always", "--set", "storage.journal_size=64kb"];
    let mut s = Server::start_in(&dir, &[&["--workers", "3"], &small[..]].concat());
    let first = write_then_kill(&mut s, "a", 4, Duration::from_millis(600));
    drop(s);
    // Another worker count: worker 2's journal is replayed by the others' partitions' owners,
    // then removed.
    let mut s = Server::start_in(&dir, &[&["--workers", "2"], &small[..]].concat());
    check(&s, &first, "restart with 2 workers");
    // Fill the 64 KiB files a few times over: checkpoints run and free them.
    let mut c = s.client();
    for i in 0..3000 {
        let () = cmd("SET")
            .arg(format!("fill:{i}"))
            .arg("f".repeat(100))
            .query(&mut c)
            .unwrap();
    }
    let p = info(&mut c, "persistence");
    assert_eq!(p["commit_journals"], "2", "{p:?}");
    let checkpoints: u64 = p["commit_journal_checkpoints"].parse().unwrap();
    assert!(checkpoints >= 2, "switches made checkpoints: {p:?}");
    assert!(
        !dir.join("journal").join("worker-2.0.journal").exists(),
        "the journal of a worker that no longer exists is removed"
    );
    let second = write_then_kill(&mut s, "b", 4, Duration::from_millis(600));
    s.restart();
    check(&s, &first, "first batch after the second crash");
    check(&s, &second, "second batch after the second crash");
    // Without fsync always the journal files go (their frames must never replay over a log
    // cut back later), and the data stays.
    drop(s);
    let s = Server::start_in(&dir, &["--workers", "2", "--fsync", "everysec"]);
    check(&s, &second, "restart with fsync everysec");
    assert_eq!(info(&mut s.client(), "persistence")["commit_journals"], "0");
    let left = std::fs::read_dir(dir.join("journal")).unwrap().count();
    assert_eq!(left, 0, "journal files left without fsync always");
}

#[test]
fn config_set_appendfsync_always_starts_the_journal_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start_in(&dir, &["--workers", "2", "--fsync", "everysec"]);
    let mut c = s.client();
    assert_eq!(info(&mut c, "persistence")["commit_journals"], "0");
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query(&mut c)
        .unwrap();
    let journal = dir.join("journal");
    assert!(
        wait_until(Duration::from_secs(10), || {
            journal.join("worker-0.1.journal").exists()
                && journal.join("worker-1.1.journal").exists()
        }),
        "every worker opens its journal when fsync becomes always"
    );
    assert!(
        wait_until(
            Duration::from_secs(10),
            || info(&mut c, "persistence")["commit_journals"] == "2"
        ),
        "both workers commit through their journals"
    );
    let acked = write_then_kill(&mut s, "rt", 2, Duration::from_millis(400));
    for p in log_files(&dir) {
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(64).unwrap();
    }
    s.restart();
    check(&s, &acked, "after losing the unsynced log tails");
}

/// One worker, one partition (so one log), fsync always and the smallest journal, which a
/// value of more than 64 KiB does not fit in.
const ONE_LOG_SMALL_JOURNAL: [&str; 8] = [
    "--workers",
    "1",
    "--fsync",
    "always",
    "--set",
    "storage.journal_size=64kb",
    "--set",
    "storage.partitions=1",
];

/// Flips a bit of the byte `offset` bytes past where `needle` starts, in the one log that
/// holds it.
fn flip_after(dir: &Path, needle: &[u8], offset: usize) {
    let mut flipped = 0;
    for path in log_files(dir) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + offset] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1, "one log holds the bytes to damage");
}

/// A value too big for the journal goes to its log with an fsync of its own. Records of the
/// same log journaled before it must not let a damaged byte below it pass for a torn write at
/// the next start: cut there, the journal would put its own records back and the big value,
/// acknowledged, would be gone without a word. Once every log is fsynced the journal starts
/// over, so the damage is reported instead (and `storage.repair` says what it drops).
#[test]
fn damage_below_a_value_too_big_for_the_journal_is_reported_not_cut_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ONE_LOG_SMALL_JOURNAL;
    let mut s = Server::start_in(&dir, &args);
    let mut c = s.client();
    for i in 0..5 {
        let () = cmd("SET")
            .arg(format!("small:{i}"))
            .arg(format!("marker{i}-").repeat(20))
            .query(&mut c)
            .unwrap();
    }
    let big = vec![b'B'; 100 * 1024];
    let () = cmd("SET").arg("big").arg(&big).query(&mut c).unwrap();
    let p = info(&mut c, "persistence");
    assert_eq!(p["commit_journal_direct_syncs"], "1", "{p:?}");
    s.kill9();
    // Inside small:2's value: a whole record with a later LSN follows it.
    flip_after(&dir, "marker2-".repeat(20).as_bytes(), 10);
    let (code, stderr) = run_to_exit(&dir, &args, Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0) && stderr.contains("corrupt record"),
        "a start over damaged synced records must refuse (exit {code:?}):\n{stderr}"
    );
}

/// A flipped byte in the last record of a log, one an fsync vouched for (here a value too big
/// for the journal, fsynced straight to its log), is damage, not a torn write: the start is
/// refused (it was cut away with a warning, the acknowledged value gone), and
/// `storage.repair` drops it saying so.
#[test]
fn a_damaged_synced_last_record_is_reported_not_cut_as_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ONE_LOG_SMALL_JOURNAL;
    let mut s = Server::start_in(&dir, &args);
    let mut c = s.client();
    let () = cmd("SET").arg("small").arg("hello").query(&mut c).unwrap();
    let big = vec![b'B'; 300_000];
    let () = cmd("SET").arg("big").arg(&big).query(&mut c).unwrap();
    s.kill9();
    flip_after(&dir, &big[..64], 150_000);
    let (code, stderr) = run_to_exit(&dir, &args, Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0) && stderr.contains("corrupt record"),
        "a start over a damaged synced record must refuse (exit {code:?}):\n{stderr}"
    );
    let repair = [&args[..], &["--set", "storage.repair=true"]].concat();
    let s = Server::start_in(&dir, &repair);
    let mut c = s.client();
    let small: String = cmd("GET").arg("small").query(&mut c).unwrap();
    assert_eq!(small, "hello");
    let gone: Option<Vec<u8>> = cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(gone, None, "repair drops the damaged record");
}

/// fsync always, then everysec at run time: the journal stays open, idle, for always to come
/// back. Its frames must not outlive the switch: records written since are in no journal,
/// and a damaged byte among them, below the frames' first LSN no more, was cut at the next
/// start as a torn write the replay would mend (nothing to mend: the values were gone with a
/// warning). The switch fsyncs every log and restarts the journal, so the damage is reported.
#[test]
fn damage_in_writes_after_fsync_left_always_is_reported_not_cut_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let args = ONE_LOG_SMALL_JOURNAL;
    let mut s = Server::start_in(&dir, &args);
    let mut c = s.client();
    let () = cmd("SET")
        .arg("always")
        .arg("journaled")
        .query(&mut c)
        .unwrap();
    let p = info(&mut c, "persistence");
    assert_eq!(p["commit_journals"], "1", "{p:?}");
    let () = cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query(&mut c)
        .unwrap();
    for i in 0..5 {
        let () = cmd("SET")
            .arg(format!("everysec:{i}"))
            .arg(format!("marker{i}-").repeat(20))
            .query(&mut c)
            .unwrap();
    }
    s.kill9();
    // Inside everysec:2's value: whole records with later LSNs follow it.
    flip_after(&dir, "marker2-".repeat(20).as_bytes(), 10);
    let (code, stderr) = run_to_exit(&dir, &args, Duration::from_secs(20));
    assert!(
        code.is_some_and(|c| c != 0) && stderr.contains("corrupt record"),
        "a start over damaged records must refuse (exit {code:?}):\n{stderr}"
    );
}
