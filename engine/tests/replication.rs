//! The replication API: records keep their LSN and epoch from leader to follower, truncation
//! restores older values, and the leader-epoch cache answers OffsetsForLeaderEpoch.
use simplekv_engine::{Durability, Options, Store, WriteError, record};

fn opts() -> Options {
    Options {
        segment_size: 8 << 10,
        durability: Durability::Never,
        ..Options::default()
    }
}

fn pull(leader: &Store, follower: &mut Store, max_bytes: usize) -> usize {
    let mut n = 0;
    loop {
        let b = leader.read_records(follower.log_end(), max_bytes).unwrap();
        if b.count == 0 {
            return n;
        }
        n += follower.append_records(&b.bytes).unwrap();
    }
}

#[test]
fn replicated_records_keep_their_lsn_and_epoch() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Store::open(ld.path(), opts()).unwrap();
    let mut follower = Store::open(fd.path(), opts()).unwrap();
    leader.begin_epoch(1).unwrap();
    for i in 0..500u32 {
        leader
            .put(format!("k{i}").as_bytes(), &i.to_le_bytes(), None)
            .unwrap();
    }
    leader.begin_epoch(3).unwrap();
    leader.delete(b"k1").unwrap();
    leader.commit().unwrap();
    assert_eq!(pull(&leader, &mut follower, 1000), 501);
    assert_eq!(follower.log_end(), leader.log_end());
    assert_eq!(
        follower.epoch_cache().entries(),
        leader.epoch_cache().entries()
    );
    follower.commit().unwrap();
    let all = follower.read_records(0, usize::MAX).unwrap();
    let mut lsns = Vec::new();
    for (_, r) in record::RecordIter::new(&all.bytes) {
        lsns.push((r.header.lsn, r.header.epoch));
    }
    assert_eq!(lsns.len(), 501);
    assert!(lsns.iter().enumerate().all(|(i, &(l, _))| l == i as u64));
    assert_eq!(lsns[499].1, 1);
    assert_eq!(lsns[500].1, 3);
    assert_eq!(follower.get(b"k1").unwrap(), None);
    assert_eq!(follower.get(b"k42").unwrap().unwrap(), 42u32.to_le_bytes());
    follower.commit().unwrap();
    drop(follower);
    let follower = Store::open(fd.path(), opts()).unwrap();
    assert_eq!(follower.log_end(), 501);
    assert_eq!(follower.end_offset_for_epoch(1), Some((1, 500)));
}

#[test]
fn reads_only_return_records_handed_to_the_os() {
    let ld = tempfile::tempdir().unwrap();
    let mut leader = Store::open(ld.path(), opts()).unwrap();
    leader.put(b"a", b"1", None).unwrap();
    assert_eq!(leader.read_records(0, 100).unwrap().count, 0);
    leader.commit().unwrap();
    assert_eq!(leader.read_records(0, 100).unwrap().count, 1);
}

#[test]
fn a_batch_with_a_bad_record_or_an_old_lsn_is_refused_whole() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Store::open(ld.path(), opts()).unwrap();
    let mut follower = Store::open(fd.path(), opts()).unwrap();
    for i in 0..10u32 {
        leader.put(&i.to_le_bytes(), b"v", None).unwrap();
    }
    leader.commit().unwrap();
    let b = leader.read_records(0, usize::MAX).unwrap();
    let mut bad = b.bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        follower.append_records(&bad),
        Err(WriteError::BadReplicatedRecord { .. })
    ));
    assert_eq!(follower.log_end(), 0);
    assert_eq!(follower.len(), 0);
    follower.append_records(&b.bytes).unwrap();
    assert!(matches!(
        follower.append_records(&b.bytes),
        Err(WriteError::LsnNotIncreasing { .. })
    ));
    assert_eq!(follower.len(), 10);
}

#[test]
fn truncation_removes_records_from_the_lsn_and_restores_older_values() {
    let fd = tempfile::tempdir().unwrap();
    let mut s = Store::open(fd.path(), opts()).unwrap();
    s.begin_epoch(1).unwrap();
    for i in 0..300u32 {
        s.put(format!("k{}", i % 50).as_bytes(), &i.to_le_bytes(), None)
            .unwrap();
    }
    s.commit().unwrap();
    let cut = s.log_end();
    s.begin_epoch(2).unwrap();
    for i in 0..300u32 {
        s.put(format!("k{}", i % 50).as_bytes(), b"divergent", None)
            .unwrap();
    }
    s.delete(b"k0").unwrap();
    s.commit().unwrap();
    s.truncate_to(cut).unwrap();
    assert_eq!(s.log_end(), cut);
    assert_eq!(s.get(b"k0").unwrap().unwrap(), 250u32.to_le_bytes());
    assert_eq!(s.get(b"k49").unwrap().unwrap(), 299u32.to_le_bytes());
    assert_eq!(s.end_offset_for_epoch(2), Some((1, cut)), "epoch 2 is gone");
    // Appending after the truncation continues at the cut, and all of it survives reopen.
    s.begin_epoch(3).unwrap();
    assert_eq!(s.put(b"new", b"x", None).unwrap(), cut);
    s.commit().unwrap();
    drop(s);
    let s = Store::open(fd.path(), opts()).unwrap();
    assert_eq!(s.log_end(), cut + 1);
    assert_eq!(s.get(b"k0").unwrap().unwrap(), 250u32.to_le_bytes());
    assert!(s.exists(b"new"));
}

#[test]
fn truncating_everything_keeps_numbering_from_the_cut() {
    let fd = tempfile::tempdir().unwrap();
    let mut s = Store::open(fd.path(), opts()).unwrap();
    for i in 0..1000u32 {
        s.put(&i.to_le_bytes(), &[0u8; 32], None).unwrap();
    }
    s.commit().unwrap();
    s.truncate_to(0).unwrap();
    assert_eq!(s.len(), 0);
    assert_eq!(s.log_end(), 0);
    s.put(b"a", b"b", None).unwrap();
    s.commit().unwrap();
    drop(s);
    let s = Store::open(fd.path(), opts()).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.log_end(), 1);
}

#[test]
fn a_follower_converges_after_the_leader_merged_records_it_had_not_fetched() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = Store::open(ld.path(), opts()).unwrap();
    let mut follower = Store::open(fd.path(), opts()).unwrap();
    for i in 0..200u32 {
        leader
            .put(format!("k{}", i % 20).as_bytes(), &i.to_le_bytes(), None)
            .unwrap();
    }
    leader.commit().unwrap();
    pull(&leader, &mut follower, 4096);
    for i in 0..400u32 {
        leader
            .put(
                format!("k{}", i % 30).as_bytes(),
                &(i + 1000).to_le_bytes(),
                None,
            )
            .unwrap();
    }
    leader.delete(b"k3").unwrap();
    leader.commit().unwrap();
    // The cleaner keeps tombstones the follower has not seen yet.
    leader.merge_now(follower.log_end()).unwrap();
    pull(&leader, &mut follower, 4096);
    for i in 0..30u32 {
        let k = format!("k{i}");
        assert_eq!(
            follower.get(k.as_bytes()).unwrap(),
            leader.get(k.as_bytes()).unwrap(),
            "{k}"
        );
    }
    assert_eq!(follower.len(), leader.len());
}

/// A store whose records of a test all fit in one segment.
fn open_one_segment(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        Options {
            segment_size: 1 << 20,
            ..opts()
        },
    )
    .unwrap()
}

/// Keys of the records in `bytes`, in order.
fn keys_of(bytes: &[u8]) -> Vec<String> {
    record::RecordIter::new(bytes)
        .map(|(_, r)| String::from_utf8_lossy(r.key).into_owned())
        .collect()
}

/// Reads go on where the last one stopped (the leader reads each turn's records right after
/// writing them), and still find the right records when the log was cut and rewritten in
/// between with records of other sizes, or the read starts somewhere else.
#[test]
fn consecutive_reads_return_the_right_records_across_a_truncation() {
    let ld = tempfile::tempdir().unwrap();
    let mut leader = open_one_segment(ld.path());
    for i in 0..10 {
        leader.put(format!("a{i}").as_bytes(), b"v", None).unwrap();
    }
    leader.commit().unwrap();
    let first = leader.read_records(0, 200).unwrap();
    let n = first.count as u64;
    assert!(n > 1 && n < 10, "a read limited by bytes: {n}");
    assert_eq!(keys_of(&first.bytes)[0], "a0");
    let rest = leader.read_records(n, usize::MAX).unwrap();
    assert_eq!(keys_of(&rest.bytes)[0], format!("a{n}"));
    assert_eq!(rest.next_lsn, 10);
    for i in 10..15 {
        leader.put(format!("a{i}").as_bytes(), b"v", None).unwrap();
    }
    leader.commit().unwrap();
    let b = leader.read_records(10, usize::MAX).unwrap();
    assert_eq!(keys_of(&b.bytes), ["a10", "a11", "a12", "a13", "a14"]);

    // Cut at 10 and write records of another size: LSN 11, where the last read stopped,
    // now starts somewhere else.
    let part = leader.read_records(10, 1).unwrap();
    assert_eq!((part.count, part.next_lsn), (1, 11));
    leader.truncate_to(10).unwrap();
    for i in 10..14 {
        let key = format!("rewritten-with-a-longer-key-{i}");
        leader.put(key.as_bytes(), b"value", None).unwrap();
    }
    leader.commit().unwrap();
    let b = leader.read_records(11, usize::MAX).unwrap();
    assert_eq!(
        keys_of(&b.bytes),
        [
            "rewritten-with-a-longer-key-11",
            "rewritten-with-a-longer-key-12",
            "rewritten-with-a-longer-key-13"
        ]
    );
    let b = leader.read_records(12, usize::MAX).unwrap();
    assert_eq!(keys_of(&b.bytes)[0], "rewritten-with-a-longer-key-12");
    // Out of order: an earlier start than where the last read stopped.
    let b = leader.read_records(3, usize::MAX).unwrap();
    assert_eq!(keys_of(&b.bytes)[0], "a3");
    assert_eq!(b.next_lsn, 14);
}

/// Records before the start of a read are stepped over by their headers alone, but damage
/// there still fails the read instead of silently skipping records: a length that runs past
/// the written bytes, or the wanted record's LSN damaged so that it would be stepped over.
#[test]
fn damage_in_records_a_read_steps_over_is_reported() {
    use std::os::unix::fs::FileExt;
    let ld = tempfile::tempdir().unwrap();
    let mut leader = open_one_segment(ld.path());
    for i in 0..100 {
        leader
            .put(format!("k{i:03}").as_bytes(), b"v", None)
            .unwrap();
    }
    leader.commit().unwrap();
    let seg = std::fs::read_dir(ld.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment file");
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    // Every record is the same size: header, 4-byte key, 1-byte value.
    let rec = record::HEADER_LEN as u64 + 5;
    let at = |i: u64| 64 + i * rec;
    assert_eq!(leader.read_records(50, usize::MAX).unwrap().count, 50);

    // Record 50's LSN (bytes 4..12) made 10: a read from 50 would step over it.
    file.write_all_at(&10u64.to_le_bytes(), at(50) + 4).unwrap();
    let err = leader.read_records(50, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    file.write_all_at(&50u64.to_le_bytes(), at(50) + 4).unwrap();
    assert_eq!(leader.read_records(50, usize::MAX).unwrap().count, 50);

    // Record 20's value length (bytes 29..33) made 1 MiB: stepping over it runs off the end.
    file.write_all_at(&(1u32 << 20).to_le_bytes(), at(20) + 29)
        .unwrap();
    let err = leader.read_records(60, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("bytes"), "{err}");
}
