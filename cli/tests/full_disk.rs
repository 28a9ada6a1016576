//! A full disk: writes get a clear error, the server stays up, reads keep working, nothing
//! acknowledged is lost, and writes succeed again once there is room.
//!
//! Needs to mount a small tmpfs (CI runs as root); elsewhere the test says why it cannot run.
mod common;

use common::{Server, err_text};
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
        ],
    );
    assert!(
        data.join("journal").join("worker-1.1.journal").exists(),
        "the journal is in use"
    );
    let mut c = s.client();
    let value = vec![b'x'; 64 << 10];
    let mut acked = Vec::new();
    let mut first_error = None;
    for i in 0..2000 {
        let key = format!("key{i}");
        match cmd("SET").arg(&key).arg(&value).query::<()>(&mut c) {
            Ok(()) => acked.push(key),
            Err(e) => {
                first_error = Some(err_text(&e));
                break;
            }
        }
    }
    let err = first_error.expect("a 24 MiB file system must fill up");
    assert!(
        err.contains("write to the log failed") && err.contains("No space left"),
        "{err}"
    );
    assert!(
        acked.len() > 50,
        "only {} writes before the disk was full",
        acked.len()
    );
    // Still up, still reading, still refusing writes with the same clear error.
    let pong: String = cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let e = cmd("SET")
        .arg("more")
        .arg(&value)
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("No space left"), "{}", err_text(&e));
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
        &["--fsync", "always", "--set", "storage.journal_size=1mb"],
    );
    let mut c = s.client();
    let n: i64 = cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n as usize, acked.len());
}
