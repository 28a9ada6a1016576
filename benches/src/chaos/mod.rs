//! The chaos tool (`cargo run -p simplekv-benches --bin chaos`): a real cluster of `simplekv`
//! processes on loopback, concurrent recorded clients, faults on a schedule drawn from a seed,
//! then the checker (`crate::checker`) on the recorded history. See docs/VERIFICATION.md,
//! "Chaos runs".
//!
//! - [`cluster`]: ZooKeeper-backed node processes (spawn, SIGKILL, SIGSTOP/SIGCONT, SIGTERM,
//!   wipe, bounded waits for registration, leaders, full ISR);
//! - [`net`]: one network namespace per node on a bridge, and link cuts;
//! - [`disk`]: a small tmpfs per node, and filling it;
//! - [`faults`]: the fault kinds and the seeded schedule;
//! - [`workload`]: the client threads and how each outcome is classified;
//! - [`resp`]: the RESP2 client they use;
//! - [`runner`]: one run (or many) from start to verdict, and the run folder.
pub mod cluster;
pub mod disk;
pub mod faults;
pub mod net;
pub mod resp;
pub mod runner;
pub mod workload;

pub use runner::{
    Config, RunResult, Status, default_out_dir, default_simplekv_path, run_many, stop_on_signals,
    worst,
};
