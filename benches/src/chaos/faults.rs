//! The fault model and the schedule: drawn up front from the seed, so the same seed gives the
//! same faults, in the same order, on the same nodes, with the same durations.
//!
//! Adding a fault kind: a variant of [`FaultKind`] (its name, its hold time range in
//! [`FaultKind::hold_range`], whether it is in [`FaultKind::ALL`]), its injection and healing
//! in `runner.rs` (`inject` / `heal`), and a line in docs/VERIFICATION.md.
use std::fmt;
use std::time::Duration;

/// What is done to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL (a crash), then start it again after the hold.
    Kill,
    /// SIGSTOP (a long GC pause, a hung machine) for the hold, then SIGCONT. Holds go past
    /// the 2 s ZooKeeper session timeout (leadership moves away) and below it (it does not).
    Pause,
    /// SIGTERM (controlled shutdown: leadership moves away first), wait for the exit, start
    /// again after the hold.
    Terminate,
    /// SIGKILL, delete the data directory (a replaced disk), start it again after the hold.
    /// Injected only when every partition's ISR is full (so every partition keeps another
    /// in-sync copy); otherwise skipped, and logged as such.
    Wipe,
    /// Network: the node is cut from every other node and from ZooKeeper (the minority side
    /// of a split; with 3 nodes the majority keeps 2 nodes and ZooKeeper). Clients still
    /// reach it.
    Isolate,
    /// Network: the node is cut from the other nodes but keeps its ZooKeeper session (it
    /// stays registered; replication to and from it stops).
    CutPeers,
    /// Network: the current controller (found at injection; the planned node if there is
    /// none) is isolated as in `Isolate`.
    IsolateController,
    /// Network: the leader of partition `(node - 1) % partitions` (found at injection) is cut
    /// from ZooKeeper only; it still reaches its followers and they it.
    CutLeaderFromZk,
    /// Disk: the node's file system is filled (every append, roll, hint file and fsync gets
    /// ENOSPC) for the hold, then freed.
    DiskFull,
    /// Disk and crash: the node's file system is filled, then the leader of a partition it
    /// follows in sync (found at injection) is killed (SIGKILL), so that the controller may
    /// name this node leader while it cannot write; the disk is freed and the killed node
    /// started again after the hold. Skipped when the node follows no partition in sync.
    DiskFullFailover,
    /// Disk, while leading: the node's file system is filled, then values are written
    /// through it to a key (none the clients use) of a partition it leads with another
    /// replica in sync (found at injection), until one is refused: its log's writes now fail
    /// on the disk, past the room its segments had allocated ahead, and the leadership
    /// should move. Freed after the hold. Skipped when it leads no such partition. With
    /// `storage.min_free_space` above 0 (the default) the floor refuses those writes first
    /// and the leader keeps its partitions, as designed: run with
    /// `--node-set storage.min_free_space=0` to reach the log's own failure.
    DiskFullLeader,
    /// Control: a preferred-leader election is requested (`simplekv cluster rebalance`):
    /// leaderships that moved away after earlier faults move back while clients write. The
    /// node is not used.
    Rebalance,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Terminate,
        FaultKind::Wipe,
        FaultKind::Isolate,
        FaultKind::CutPeers,
        FaultKind::IsolateController,
        FaultKind::CutLeaderFromZk,
        FaultKind::DiskFull,
        FaultKind::DiskFullFailover,
        FaultKind::DiskFullLeader,
        FaultKind::Rebalance,
    ];

    /// The kinds that need only process control (no namespaces, no mounts: any user).
    pub const PROCESS: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Terminate,
        FaultKind::Wipe,
        FaultKind::Rebalance,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill9",
            FaultKind::Pause => "pause",
            FaultKind::Terminate => "sigterm",
            FaultKind::Wipe => "wipe",
            FaultKind::Isolate => "isolate",
            FaultKind::CutPeers => "cut-peers",
            FaultKind::IsolateController => "isolate-controller",
            FaultKind::CutLeaderFromZk => "cut-leader-zk",
            FaultKind::DiskFull => "disk-full",
            FaultKind::DiskFullFailover => "disk-full-failover",
            FaultKind::DiskFullLeader => "disk-full-leader",
            FaultKind::Rebalance => "rebalance",
        }
    }

    /// Whether it acts on the network (needs the nodes in namespaces).
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::Isolate
                | FaultKind::CutPeers
                | FaultKind::IsolateController
                | FaultKind::CutLeaderFromZk
        )
    }

    /// How long the fault lasts before it is healed, in ms (inclusive range).
    fn hold_range(self) -> (u64, u64) {
        match self {
            FaultKind::Kill => (300, 4_000),
            FaultKind::Pause => (500, 5_000),
            FaultKind::Terminate => (300, 3_000),
            FaultKind::Wipe => (300, 2_000),
            // Below and above the 2 s session timeout and the 2 s replica lag limit.
            FaultKind::Isolate
            | FaultKind::CutPeers
            | FaultKind::IsolateController
            | FaultKind::CutLeaderFromZk => (500, 6_000),
            FaultKind::DiskFull => (500, 5_000),
            // Past the 2 s session timeout, so the killed leader is replaced meanwhile.
            FaultKind::DiskFullFailover => (3_000, 6_000),
            // Time for the leader to report and the controller to move the partition.
            FaultKind::DiskFullLeader => (1_000, 5_000),
            // Quiet time after the request (the election itself takes milliseconds).
            FaultKind::Rebalance => (300, 2_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Quiet time after the previous fault was healed (after the start, for the first).
    pub gap: Duration,
    pub kind: FaultKind,
    /// Node id, 1-based.
    pub node: u32,
    /// How long the fault lasts.
    pub hold: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "after {:>5} ms quiet: {:<18} node {} for {:>5} ms",
            self.gap.as_millis(),
            self.kind.name(),
            self.node,
            self.hold.as_millis()
        )
    }
}

/// The faults of a run of `seconds` on `nodes` nodes, from `seed`, drawn from `kinds` with
/// equal weights: one fault at a time, each after a quiet gap of 0.5-3 s, planned until their
/// nominal times fill the run (healing takes extra time, so the tail of the plan may not be
/// reached; the log says what was). The same seed and kinds give the same schedule.
pub fn plan(seed: u64, seconds: u64, nodes: u32, kinds: &[FaultKind]) -> Vec<Fault> {
    let kinds = if kinds.is_empty() {
        &FaultKind::PROCESS[..]
    } else {
        kinds
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = seconds * 1000;
    let mut t = 0u64;
    let mut out = Vec::new();
    // The first fault comes after 1-2.5 s of fault-free traffic.
    let mut gap = rng.u64(1_000..=2_500);
    while out.len() < 1000 {
        let kind = kinds[rng.usize(..kinds.len())];
        let node = rng.u32(1..=nodes.max(1));
        let (lo, hi) = kind.hold_range();
        let hold = rng.u64(lo..=hi);
        if t + gap + hold > total {
            break;
        }
        t += gap + hold;
        out.push(Fault {
            gap: Duration::from_millis(gap),
            kind,
            node,
            hold: Duration::from_millis(hold),
        });
        gap = rng.u64(500..=3_000);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let all = &FaultKind::ALL[..];
        let a = plan(7, 30, 3, all);
        assert_eq!(a, plan(7, 30, 3, all));
        assert_ne!(a, plan(8, 30, 3, all));
        assert!(!a.is_empty());
        let total: Duration = a.iter().map(|f| f.gap + f.hold).sum();
        assert!(total <= Duration::from_secs(30));
        assert!(a.iter().all(|f| (1..=3).contains(&f.node)));
        // Over many seeds every kind is drawn.
        let kinds: std::collections::HashSet<FaultKind> = (0..40)
            .flat_map(|s| plan(s, 30, 3, all))
            .map(|f| f.kind)
            .collect();
        assert_eq!(kinds.len(), FaultKind::ALL.len());
        // Restricted to the process kinds, only those are drawn.
        assert!(
            (0..20)
                .flat_map(|s| plan(s, 30, 3, &FaultKind::PROCESS))
                .all(|f| FaultKind::PROCESS.contains(&f.kind))
        );
    }
}
