//! Recovery of a damaged last segment (`simplekv_engine::Store::open`).
//!
//! Each input writes a small partition with a real `Store` (puts, deletes, expiry changes,
//! clears, rolls, leader epochs; 4 KiB segments so several exist), optionally writes the hint
//! files of the closed segments, then damages the last segment file in one of three ways:
//!
//! - mode 0: XOR bytes at fuzzer-chosen offsets (header included);
//! - mode 1: truncate it to a fuzzer-chosen length;
//! - mode 2: truncate it, then append fuzzer-chosen garbage (a torn write).
//!
//! and reopens it. Expected, with `k` = the records that end before the first damaged byte
//! (all records of earlier segments included), checked against a model of what was written:
//!
//! - damage inside the 64-byte segment header is an error (a damaged header is never guessed
//!   at), except a file cut shorter than the header, which holds no record and is dropped;
//! - damage that cannot be a torn write (a whole record whose checksum fails, followed by
//!   whole records or all there itself: bit rot, not a crash) may be refused with
//!   `OpenError::CorruptSegment` naming the damaged segment at or after the first damaged
//!   record; the partition is then opened with `repair`, which must give what follows. A cut
//!   alone (mode 1) is always a torn tail and never refused;
//! - otherwise `open` succeeds, the visible state (every key's value and expiry, the key
//!   count, what a full SCAN returns) is exactly the model after the first `k` records, the
//!   log ends at LSN `k`, the report counts `k` records and the bytes cut from the tail, and
//!   the leader-epoch cache keeps only epochs that start before `k`;
//! - the recovered store takes new writes (with or without a roll in between), and reopening
//!   it gives them on top of the same state with nothing more cut.
//!
//! A damaged record that still decodes (a CRC collision the fuzzer constructed) cannot be
//! told from a good one by any reader; such inputs are skipped. So are damaged segment headers
//! that still decode (magic and CRC check: the fuzzer rewrote bytes 20..64, CRC included, with
//! a torn write, and libFuzzer's comparison tracing hands it the right CRC) and name the same
//! base as the file name: they are valid headers.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use simplekv_engine::record::{self, RecordIter};
use simplekv_engine::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use simplekv_engine::{OpenError, Options, Store};

#[path = "common/log.rs"]
#[macro_use]
mod log;
use log::{KEYS, Model, Written, apply, check_state, damage, opts, scratch, segments, write_log};

fn run(u: &mut Unstructured<'_>, dir: &Path) -> ArbResult<()> {
    // ---- write a log
    let Written {
        mut store,
        state: _,
        recs,
        epochs,
    } = write_log(u, dir)?;
    if u.arbitrary::<bool>()? {
        for job in store.take_hint_jobs() {
            trace!("hint job: {}", job.hint.display());
            job.run().expect("hint job");
        }
    }
    drop(store);

    // ---- the files hold exactly the records written, LSN 0.. in order
    let segs = segments(dir);
    let mut all = Vec::new(); // (segment index, offset, end) per record
    for (i, (base, path)) in segs.iter().enumerate() {
        let bytes = fs::read(path).expect("read segment");
        let body = &bytes[SEGMENT_HEADER_LEN..];
        let mut it = RecordIter::new(body);
        for (off, r) in it.by_ref() {
            let lsn = all.len() as u64;
            assert_eq!(r.header.lsn, lsn, "segment {base}: LSNs not consecutive");
            assert!(lsn >= *base);
            let w = &recs[lsn as usize];
            assert_eq!(
                (r.header.tag, r.key, r.value),
                (w.tag, &w.key[..], &w.value[..])
            );
            assert_eq!(r.header.expire, w.expire);
            let start = SEGMENT_HEADER_LEN + off;
            all.push((i, start, start + r.header.record_len()));
        }
        assert_eq!(
            it.error(),
            None,
            "segment {base} has a bad record before damage"
        );
    }
    assert_eq!(all.len(), recs.len(), "records missing from the files");
    let (last_base, last_path) = segs.last().expect("a segment exists").clone();
    let last_idx = segs.len() - 1;
    let orig = fs::read(&last_path).expect("read last segment");
    let in_earlier = all.iter().filter(|r| r.0 < last_idx).count();
    assert_eq!(in_earlier as u64, last_base);

    // ---- damage the last segment
    let mode = u.int_in_range(0..=2u8)?;
    let mut bytes = orig.clone();
    if let Some(at) = damage(u, &mut bytes, mode)?
        && record::decode(&bytes[at..]).is_ok()
    {
        return Ok(()); // a valid record is not garbage
    }
    // First damaged byte: first difference, or the cut.
    let first_bad = orig
        .iter()
        .zip(&bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(orig.len().min(bytes.len()));
    let kept_last: Vec<_> = all
        .iter()
        .filter(|r| r.0 == last_idx && r.2 <= first_bad)
        .collect();
    // The record holding the first damaged byte must not decode any more, or nobody can
    // tell it is damaged.
    if let Some(hit) = all.iter().find(|r| r.0 == last_idx && r.2 > first_bad)
        && let Some(rest) = bytes.get(hit.1..)
        && let Ok(r) = record::decode(rest)
        && r.header.lsn >= (in_earlier + kept_last.len()) as u64
    {
        return Ok(());
    }
    trace!(
        "segments {:?}; damage mode {mode} to {} ({} -> {} bytes), first damaged byte {first_bad}",
        segs.iter().map(|s| s.0).collect::<Vec<_>>(),
        last_path.display(),
        orig.len(),
        bytes.len()
    );
    fs::write(&last_path, &bytes).expect("write damaged segment");

    let header_damaged = first_bad < SEGMENT_HEADER_LEN && bytes.len() >= SEGMENT_HEADER_LEN;
    // A damaged header that is still a valid header of this file cannot be told from a good one.
    if header_damaged
        && let Ok(h) = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_LEN])
        && h.base == last_base
    {
        trace!("damaged header still decodes: {h:?}; skipped");
        return Ok(());
    }
    let header_torn = bytes.len() < SEGMENT_HEADER_LEN;
    let k = in_earlier + if header_torn { 0 } else { kept_last.len() };
    let kept_end = kept_last.last().map_or(SEGMENT_HEADER_LEN, |r| r.2);

    // ---- reopen
    let reopened = Store::open(dir, opts());
    if header_damaged {
        assert!(
            reopened.is_err(),
            "a damaged segment header (byte {first_bad}) was accepted"
        );
        return Ok(());
    }
    // Damage that cannot be a torn write (a whole record with a flipped bit, followed by
    // whole records or all there itself) is refused, naming the record, as damage inside the
    // log; with `repair` the open then drops it and everything after it. A cut alone is always
    // a torn tail.
    let (store, repaired) = match reopened {
        Ok(s) => (s, false),
        Err(OpenError::CorruptSegment { path, offset, .. }) if mode != 1 => {
            assert_eq!(path, last_path, "the damaged segment is the one named");
            assert!(
                offset as usize >= first_bad.min(kept_end) && (offset as usize) < bytes.len(),
                "refused at byte {offset}, first damaged byte {first_bad}"
            );
            trace!("refused as damage inside the log at byte {offset}; opening with repair");
            let o = Options {
                repair: true,
                ..opts()
            };
            let s = Store::open(dir, o).unwrap_or_else(|e| panic!("open with repair: {e}"));
            (s, true)
        }
        Err(e) => {
            panic!("open failed although only the tail past byte {first_bad} was damaged: {e}")
        }
    };
    let mut want = Model::new();
    for r in &recs[..k] {
        apply(&mut want, r);
    }
    check_state(&store, &want, "after recovery");
    assert_eq!(store.log_end(), k as u64, "log end after recovery");
    let report = store.recovery_report().clone();
    assert_eq!(report.records, k as u64, "records recovered");
    let cut = if header_torn {
        0
    } else {
        (bytes.len() - kept_end) as u64
    };
    let dropped = report.truncated_tail_bytes + report.repaired_bytes_dropped;
    assert_eq!(
        dropped, cut,
        "bytes cut from the tail (repaired: {repaired})"
    );
    let want_epochs: Vec<(u32, u64)> = epochs
        .iter()
        .copied()
        .filter(|&(_, s)| s < k as u64)
        .collect();
    let got_epochs: Vec<(u32, u64)> = store
        .epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_lsn))
        .collect();
    assert_eq!(got_epochs, want_epochs, "leader-epoch cache after recovery");

    // ---- the recovered log takes writes (in the recovered segment and, after a roll, in a
    // new one) and reopens to exactly them, with nothing more cut. The hint jobs of the rolls
    // are not run: a crash may always come before them.
    trace!("recovered: k = {k}, report {:?}", store.recovery_report());
    let mut store = store;
    let key = u.choose(KEYS)?.to_vec();
    trace!("put {key:?} = after");
    store.put(&key, b"after", None).expect("put after recovery");
    want.insert(key, (b"after".to_vec(), 0));
    if u.arbitrary::<bool>()? {
        trace!("roll after recovery");
        store.roll().expect("roll after recovery");
    }
    let key = u.choose(KEYS)?.to_vec();
    trace!("put {key:?} = after-2");
    store
        .put(&key, b"after-2", None)
        .expect("put after recovery");
    want.insert(key, (b"after-2".to_vec(), 0));
    store.commit().expect("commit after recovery");
    check_state(&store, &want, "after recovery and writes");
    drop(store);
    trace!(
        "after the writes: segments {:?}",
        segments(dir)
            .iter()
            .map(|(b, p)| (*b, fs::metadata(p).map_or(0, |m| m.len())))
            .collect::<Vec<_>>()
    );
    let store = Store::open(dir, opts()).expect("reopen after recovery");
    trace!("reopened: report {:?}", store.recovery_report());
    check_state(&store, &want, "reopened after recovery and writes");
    assert_eq!(store.log_end(), k as u64 + 2);
    assert_eq!(store.recovery_report().truncated_tail_bytes, 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch("recovery");
    let _ = fs::remove_dir_all(dir);
    let _ = run(&mut Unstructured::new(data), dir);
    let _ = fs::remove_dir_all(dir);
});
