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
}

impl FaultKind {
    /// The kinds the schedule draws from, with equal weights.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Terminate,
        FaultKind::Wipe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill9",
            FaultKind::Pause => "pause",
            FaultKind::Terminate => "sigterm",
            FaultKind::Wipe => "wipe",
        }
    }

    /// How long the fault lasts before it is healed, in ms (inclusive range).
    fn hold_range(self) -> (u64, u64) {
        match self {
            FaultKind::Kill => (300, 4_000),
            FaultKind::Pause => (500, 5_000),
            FaultKind::Terminate => (300, 3_000),
            FaultKind::Wipe => (300, 2_000),
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
            "after {:>5} ms quiet: {:<7} node {} for {:>5} ms",
            self.gap.as_millis(),
            self.kind.name(),
            self.node,
            self.hold.as_millis()
        )
    }
}

/// The faults of a run of `seconds` on `nodes` nodes, from `seed`: one fault at a time, each
/// after a quiet gap of 0.5-3 s, planned until their nominal times fill the run (healing takes
/// extra time, so the tail of the plan may not be reached; the log says what was).
pub fn plan(seed: u64, seconds: u64, nodes: u32) -> Vec<Fault> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let total = seconds * 1000;
    let mut t = 0u64;
    let mut out = Vec::new();
    // The first fault comes after 1-2.5 s of fault-free traffic.
    let mut gap = rng.u64(1_000..=2_500);
    while out.len() < 1000 {
        let kind = FaultKind::ALL[rng.usize(..FaultKind::ALL.len())];
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
        let a = plan(7, 30, 3);
        assert_eq!(a, plan(7, 30, 3));
        assert_ne!(a, plan(8, 30, 3));
        assert!(!a.is_empty());
        let total: Duration = a.iter().map(|f| f.gap + f.hold).sum();
        assert!(total <= Duration::from_secs(30));
        assert!(a.iter().all(|f| (1..=3).contains(&f.node)));
        // Over many seeds every kind is drawn.
        let kinds: std::collections::HashSet<FaultKind> = (0..20)
            .flat_map(|s| plan(s, 30, 3))
            .map(|f| f.kind)
            .collect();
        assert_eq!(kinds.len(), FaultKind::ALL.len());
    }
}
