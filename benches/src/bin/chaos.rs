//! `chaos`: fault-injection runs against a real 3-node simplekv cluster on loopback, each
//! checked for linearizability and lost acknowledged writes. See docs/VERIFICATION.md,
//! "Chaos runs".
//!
//! ```text
//! cargo build -p simplekv-cli
//! cargo run -p simplekv-benches --bin chaos -- --seed 1 --runs 100 --seconds 30
//! ```
//!
//! Exit status: 0 every run valid (or undecided by the checker's budget), 1 an anomaly,
//! 2 a harness error.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use simplekv_benches::chaos::{self, Config};

#[derive(Parser, Debug)]
#[command(about = "Randomized fault injection with a linearizability check")]
struct Args {
    /// First seed: it fixes the fault schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runs, with seeds SEED..SEED+RUNS; one summary line each.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Seconds of traffic under faults per run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    clients: u64,
    /// Keys (even-numbered: registers for GET/SET; odd-numbered: counters for GET/INCR).
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Partitions of the cluster (3 nodes, replication factor 3).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Mean pause between two operations of a client, in ms (uniform in 0..2x).
    #[arg(long, default_value_t = 10)]
    think_ms: u64,
    /// Linearizability search time per key, in seconds (then the key is "unknown").
    #[arg(long, default_value_t = 30)]
    check_secs: u64,
    /// The simplekv binary [default: next to this one, else
    /// $CARGO_TARGET_DIR or ~/.cache/simplekv-target, /debug/simplekv].
    #[arg(long)]
    simplekv: Option<PathBuf>,
    /// Parent folder of the run folders [default: a new /tmp/simplekv-chaos-*].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the nodes' data and logs after valid runs too.
    #[arg(long)]
    keep: bool,
    /// Nodes on loopback even as root (no network namespaces: no partitions, no full disks).
    #[arg(long)]
    loopback: bool,
    /// A setting for every node, as `simplekv server --set` takes it (repeatable), e.g.
    /// `--node-set storage.fsync=always --node-set storage.journal_size=64kb`.
    #[arg(long = "node-set", value_name = "NAME=VALUE")]
    node_set: Vec<String>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    chaos::stop_on_signals();
    let mut cfg = Config::new(
        a.simplekv.unwrap_or_else(chaos::default_simplekv_path),
        a.out.unwrap_or_else(chaos::default_out_dir),
    );
    cfg.seed = a.seed;
    cfg.runs = a.runs.max(1);
    cfg.seconds = a.seconds.max(1);
    cfg.clients = a.clients.max(1);
    cfg.keys = a.keys.max(1);
    cfg.partitions = a.partitions.max(1);
    cfg.think = Duration::from_millis(a.think_ms);
    cfg.check_time = Duration::from_secs(a.check_secs.max(1));
    cfg.keep = a.keep;
    cfg.loopback = a.loopback;
    cfg.node_settings = a.node_set;
    eprintln!(
        "chaos: {} run(s) from seed {}, {} s each, {} clients, {} keys; simplekv {}; output {}",
        cfg.runs,
        cfg.seed,
        cfg.seconds,
        cfg.clients,
        cfg.keys,
        cfg.simplekv.display(),
        cfg.out.display()
    );
    let results = chaos::run_many(&cfg);
    let worst = chaos::worst(&results);
    let count = |s| results.iter().filter(|r| r.status == s).count();
    println!(
        "chaos: {} run(s): {} valid, {} unknown, {} anomalies, {} harness errors; {} ops, {} faults; {}",
        results.len(),
        count(chaos::Status::Valid),
        count(chaos::Status::Unknown),
        count(chaos::Status::Anomaly),
        count(chaos::Status::HarnessError),
        results.iter().map(|r| r.ops).sum::<usize>(),
        results.iter().map(|r| r.faults_injected).sum::<usize>(),
        cfg.out.display()
    );
    ExitCode::from(worst.exit_code())
}
