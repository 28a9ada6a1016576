//! Engine benchmarks, with fjall (LSM) and redb (B-tree) doing the same work in the same run,
//! so every figure can be read as a ratio.
//!
//! `cargo bench -p simplekv-benches --bench engine` (100k keys by default;
//! `SIMPLEKV_BENCH_KEYS=1000000` for the 1M-key runs, `SIMPLEKV_BENCH_SIZES=16,256,4096`).
//! Durability is matched at "written to the OS, no fsync per operation" for all three.
use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};
use simplekv_benches::{key, value};
use simplekv_engine::{Durability, Options, Store};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

fn keys() -> u64 {
    std::env::var("SIMPLEKV_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn sizes() -> Vec<usize> {
    std::env::var("SIMPLEKV_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 256, 4096])
}

fn opts() -> Options {
    Options {
        durability: Durability::Never,
        segment_size: 64 << 20,
        ..Options::default()
    }
}

fn load_simplekv(dir: &Path, n: u64, size: usize) -> Store {
    let mut s = Store::open(dir, opts()).expect("open");
    let v = value(1, size);
    for i in 0..n {
        s.put(&key(i), &v, None).expect("put");
        if i % 256 == 255 {
            s.commit().expect("commit");
        }
    }
    s.commit().expect("commit");
    s
}

fn load_fjall(dir: &Path, n: u64, size: usize) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir).open().expect("fjall");
    let ks = db
        .keyspace("kv", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    let v = value(1, size);
    for i in 0..n {
        ks.insert(key(i), &v).expect("insert");
    }
    (db, ks)
}

fn load_redb(path: &Path, n: u64, size: usize) -> redb::Database {
    let db = redb::Database::create(path).expect("redb");
    let v = value(1, size);
    let mut i = 0;
    while i < n {
        let mut tx = db.begin_write().expect("tx");
        tx.set_durability(redb::Durability::None)
            .expect("durability");
        {
            let mut t = tx.open_table(TABLE).expect("table");
            for j in i..(i + 10_000).min(n) {
                t.insert(&key(j)[..], &v[..]).expect("insert");
            }
        }
        tx.commit().expect("commit");
        i += 10_000;
    }
    db
}

fn bench_put(c: &mut Criterion) {
    let n = keys();
    let mut g = c.benchmark_group("put");
    g.sample_size(10);
    for size in sizes() {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("simplekv", size), &size, |b, &size| {
            b.iter_batched(
                || tempfile::tempdir().expect("tmp"),
                |d| load_simplekv(d.path(), n, size),
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(BenchmarkId::new("fjall", size), &size, |b, &size| {
            b.iter_batched(
                || tempfile::tempdir().expect("tmp"),
                |d| load_fjall(d.path(), n, size),
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(BenchmarkId::new("redb", size), &size, |b, &size| {
            b.iter_batched(
                || tempfile::tempdir().expect("tmp"),
                |d| load_redb(&d.path().join("db"), n, size),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn bench_get(c: &mut Criterion) {
    let n = keys();
    let mut g = c.benchmark_group("get");
    for size in sizes() {
        let d = tempfile::tempdir().expect("tmp");
        let s = load_simplekv(&d.path().join("s"), n, size);
        let (_db, ks) = load_fjall(&d.path().join("f"), n, size);
        let r = load_redb(&d.path().join("r"), n, size);
        // hot: one key again and again; cold: keys in a random order over the whole set.
        for (name, hot) in [("hot", true), ("cold", false)] {
            let mut rng = fastrand::Rng::with_seed(3);
            let mut next = move || if hot { 42 } else { rng.u64(..n) };
            g.bench_function(BenchmarkId::new(format!("simplekv/{name}"), size), |b| {
                b.iter(|| black_box(s.get_with(&key(next()), |v| v.len()).expect("get")))
            });
            g.bench_function(BenchmarkId::new(format!("fjall/{name}"), size), |b| {
                b.iter(|| black_box(ks.get(key(next())).expect("get").map(|v| v.len())))
            });
            let tx = r.begin_read().expect("read");
            let t = tx.open_table(TABLE).expect("table");
            g.bench_function(BenchmarkId::new(format!("redb/{name}"), size), |b| {
                b.iter(|| {
                    black_box(
                        t.get(&key(next())[..])
                            .expect("get")
                            .map(|v| v.value().len()),
                    )
                })
            });
        }
    }
    g.finish();
}

fn bench_delete_and_scan(c: &mut Criterion) {
    let n = keys();
    let mut g = c.benchmark_group("scan+delete");
    g.sample_size(10);
    let size = 256;
    g.throughput(Throughput::Elements(n));
    g.bench_function("simplekv/scan-all", |b| {
        let d = tempfile::tempdir().expect("tmp");
        let s = load_simplekv(d.path(), n, size);
        b.iter(|| {
            let mut c = 0;
            let mut seen = 0u64;
            loop {
                c = s.scan(c, 1000, |_| seen += 1);
                if c == 0 {
                    break;
                }
            }
            black_box(seen)
        })
    });
    g.bench_function("simplekv/delete-all", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().expect("tmp");
                let s = load_simplekv(d.path(), n, size);
                (d, s)
            },
            |(_d, mut s)| {
                for i in 0..n {
                    s.delete(&key(i)).expect("delete");
                }
                s.commit().expect("commit");
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_open_and_merge(c: &mut Criterion) {
    let n = keys();
    let mut g = c.benchmark_group("open+merge");
    g.sample_size(10);
    let size = 100;
    for hints in [true, false] {
        let d = tempfile::tempdir().expect("tmp");
        let mut s = load_simplekv(d.path(), n, size);
        s.roll().expect("roll");
        for j in s.take_hint_jobs() {
            j.run().expect("hint");
        }
        drop(s);
        let o = Options {
            use_hints: hints,
            ..opts()
        };
        g.bench_function(
            BenchmarkId::new(if hints { "open/hints" } else { "open/scan" }, n),
            |b| b.iter(|| black_box(Store::open(d.path(), o.clone()).expect("open").len())),
        );
    }
    g.bench_function(BenchmarkId::new("merge/half-dead", n), |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().expect("tmp");
                let mut s = load_simplekv(d.path(), n, size);
                for i in (0..n).step_by(2) {
                    s.put(&key(i), b"overwritten", None).expect("put");
                }
                s.commit().expect("commit");
                (d, s)
            },
            |(_d, mut s)| black_box(s.merge_now(u64::MAX).expect("merge")),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(
    engine,
    bench_put,
    bench_get,
    bench_delete_and_scan,
    bench_open_and_merge
);
criterion_main!(engine);
