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
