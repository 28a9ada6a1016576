//! A full disk under a store where the failure can only show when a batch is written (no
//! space reserved ahead): the records it drops take their whole batch with them.
use crate::test_tmpfs::Tmpfs;
use crate::{Durability, Options, Store, WriteError};

/// Found by a black-box run (a full disk, BGREWRITEAOF, fsync always): a roll in the middle of
/// a turn wrote the turn's buffered records, the disk had no room, the reload after the failed
/// write dropped them, and the turn's commit then found nothing left to write and succeeded,
/// so the commands that had written them were answered OK.
#[test]
fn records_a_failed_write_dropped_fail_their_whole_batch() {
    let Some(fs) = Tmpfs::mount_or_skip("4m") else {
        return;
    };
    let data = fs.path().join("p");
    let opts = Options {
        segment_size: 1 << 20,
        durability: Durability::Always,
        write_batches: true,
        ..Options::default()
    };
    let mut s = Store::open(&data, opts.clone()).expect("open");
    s.put(b"a", b"1", None).expect("put");
    s.commit().expect("commit");
    s.stop_reserving();
    let filler = fs.fill("filler");
    s.put(b"b", &[7u8; 8192], None).expect("applied, buffered");
    assert!(
        s.roll().is_err(),
        "the roll writes the buffer to a full disk"
    );
    std::fs::remove_file(&filler).expect("free");
    s.put(b"c", b"3", None).expect("applied after the failure");
    match s.commit_write() {
        Err(WriteError::BatchDropped(why)) => assert!(why.contains("No space left"), "{why}"),
        other => panic!("commit of a batch that lost records: {other:?}"),
    }
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(
        s.get(b"c").expect("get"),
        None,
        "the rest of the batch goes too"
    );
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
    // The next batch is not affected.
    s.put(b"d", b"4", None).expect("put");
    s.commit().expect("commit");
    drop(s);
    let s = Store::open(&data, opts).expect("reopen");
    assert_eq!(s.get(b"a").expect("get").as_deref(), Some(&b"1"[..]));
    assert_eq!(s.get(b"b").expect("get"), None);
    assert_eq!(s.get(b"c").expect("get"), None);
    assert_eq!(s.get(b"d").expect("get").as_deref(), Some(&b"4"[..]));
}
