//! Single-thread engine figures: put and get throughput, keydir bytes per key, and open time
//! with and without hint files, and of one active segment with and without the shutdown hint
//! a clean shutdown leaves.
//!
//! `cargo run --release -p simplekv-benches --bin engine-report -- [KEYS] [VALUE_BYTES] [SEGMENT_MB]`
//! (defaults: 1,000,000 keys of 16 bytes, 100-byte values, 16 MiB segments, in a temporary
//! directory).
use simplekv_benches::{key, ops_per_sec, timed, value};
use simplekv_engine::{Durability, Options, Store};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let vlen: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seg_mb: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("p0");
    let opts = Options {
        durability: Durability::EverySec,
        segment_size: seg_mb << 20,
        ..Options::default()
    };
    let values: Vec<Vec<u8>> = (0..1024).map(|i| value(i, vlen)).collect();

    let mut store = Store::open(&dir, opts.clone()).expect("open");
    let ((), put_time) = timed(|| put_all(&mut store, n, &values));
    let stats = store.stats();
    let mut order: Vec<u64> = (0..n).collect();
    fastrand::seed(7);
    fastrand::shuffle(&mut order);
    let (found, get_time) = timed(|| {
        let mut found = 0u64;
        for &i in &order {
            if store.get_with(&key(i), |v| v.len()).expect("get").is_some() {
                found += 1;
            }
        }
        found
    });
    assert_eq!(found, n);
    // Close the active segment too, so every segment can have a hint file.
    store.roll().expect("roll");
    let hint_jobs = store.take_hint_jobs();
    let segments = stats.segments;
    drop(store);

    // Open without hints (scanning every segment), then write hints and open again.
    let no_hints = Options {
        use_hints: false,
        ..opts.clone()
    };
    let (s, open_scan) = timed(|| Store::open(&dir, no_hints).expect("open"));
    assert_eq!(s.len() as u64, n);
    drop(s);
    for j in hint_jobs {
        j.run().expect("hint");
    }
    let (s, open_hints) = timed(|| Store::open(&dir, opts.clone()).expect("open"));
    assert_eq!(s.len() as u64, n);
    let from_hints = s.recovery_report().segments_from_hints;
    drop(s);

    // The same keys in one active segment (as in a server whose partitions never filled a
    // segment), opened after a clean shutdown (its shutdown hint) and after a crash (a scan).
    let active_dir = tmp.path().join("p1");
    let one_segment = Options {
        segment_size: simplekv_engine::options::MAX_SEGMENT_SIZE,
        ..opts.clone()
    };
    let mut store = Store::open(&active_dir, one_segment.clone()).expect("open");
    put_all(&mut store, n, &values);
    store.sync().expect("sync");
    let (wrote, shint_write) = timed(|| store.close_with_shutdown_hint(0).expect("shutdown hint"));
    assert!(wrote, "a shutdown hint for the active segment");
    let (s, open_shint) = timed(|| Store::open(&active_dir, one_segment.clone()).expect("open"));
    assert_eq!(s.len() as u64, n);
    assert!(s.recovery_report().active_from_shutdown_hint);
    drop(s);
    let (s, open_active_scan) =
        timed(|| Store::open(&active_dir, one_segment.clone()).expect("open"));
    assert_eq!(s.len() as u64, n);
    assert!(!s.recovery_report().active_from_shutdown_hint);
    drop(s);

    println!("engine-report: {n} keys of 16 bytes, {vlen}-byte values, {segments} segments");
    println!(
        "  put (commit every 64):  {:>10.0} ops/s",
        ops_per_sec(n, put_time)
    );
    println!(
        "  get (random order):     {:>10.0} ops/s",
        ops_per_sec(n, get_time)
    );
    println!(
        "  keydir:                 {:>10.1} bytes/key ({:.1} beyond the 16 key bytes)",
        stats.keydir_bytes as f64 / n as f64,
        stats.keydir_bytes as f64 / n as f64 - 16.0
    );
    println!(
        "  open, scanning:         {:>10.0} ms",
        open_scan.as_secs_f64() * 1000.0
    );
    println!(
        "  open, with hints:       {:>10.0} ms ({from_hints} of {segments} segments from hints)",
        open_hints.as_secs_f64() * 1000.0
    );
    println!(
        "  open, one active segment, scanning:        {:>6.0} ms",
        open_active_scan.as_secs_f64() * 1000.0
    );
    println!(
        "  open, one active segment, shutdown hint:   {:>6.0} ms (written at shutdown in {:.0} ms)",
        open_shint.as_secs_f64() * 1000.0,
        shint_write.as_secs_f64() * 1000.0
    );
}

/// Puts keys 0..n, committing every 64 writes: the server commits once per event-loop turn,
/// modelled as 64 writes.
fn put_all(store: &mut Store, n: u64, values: &[Vec<u8>]) {
    for i in 0..n {
        store
            .put(&key(i), &values[(i % 1024) as usize], None)
            .expect("put");
        if i % 64 == 63 {
            store.commit().expect("commit");
        }
    }
    store.commit().expect("commit");
}
