//! CI's bounded chaos configuration: 3 seeds x 16 s of faults against a real 3-node cluster
//! (ZooKeeper and `simplekv` processes on loopback), each history checked for
//! linearizability and lost acknowledged writes. Longer runs: docs/VERIFICATION.md,
//! "Chaos runs".
//!
//! Needs the `simplekv` binary of the `simplekv-cli` package next to this test's directory
//! (`target/debug/simplekv`): `cargo test --workspace` builds it; alone, run
//! `cargo build -p simplekv-cli` first.
use std::path::PathBuf;
use std::time::Duration;

use simplekv_benches::chaos::{self, Config, Status};

/// `target/<profile>/simplekv`: this test runs from `target/<profile>/deps/`.
fn simplekv_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("simplekv"))
        .collect();
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => panic!(
            "the simplekv binary is missing (looked at {candidates:?}): build it first with \
             `cargo build -p simplekv-cli` (`cargo test --workspace` does it)"
        ),
    }
}

#[test]
fn chaos_three_seeds() {
    let out = std::env::temp_dir().join(format!("simplekv-chaos-test-{}", std::process::id()));
    let mut cfg = Config::new(simplekv_bin(), out.clone());
    cfg.seed = 1;
    cfg.runs = 3;
    cfg.seconds = 16;
    cfg.check_time = Duration::from_secs(10);
    let results = chaos::run_many(&cfg);
    assert_eq!(results.len(), 3);
    let bad: Vec<&str> = results
        .iter()
        .filter(|r| matches!(r.status, Status::Anomaly | Status::HarnessError))
        .map(|r| r.summary.as_str())
        .collect();
    assert!(
        bad.is_empty(),
        "chaos runs failed (run folders kept under {}):\n{}",
        out.display(),
        bad.join("\n")
    );
    assert!(results.iter().all(|r| r.ops > 100), "too few operations");
    if results.iter().all(|r| r.status == Status::Valid) {
        let _ = std::fs::remove_dir_all(&out);
    }
}
