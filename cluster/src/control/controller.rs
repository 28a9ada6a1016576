//! The controller's decisions for one partition state (pure: the control thread reads, probes
//! and writes around them, so the rules are tested alone).
use std::collections::{BTreeMap, BTreeSet};

use crate::assign;
use crate::zk::layout::PartitionState;

/// What the controller knows about the nodes when it decides.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    pub live: BTreeSet<u32>,
    pub shutting_down: BTreeSet<u32>,
    /// Every in-sync replica, the leader among them, registered again since the state was
    /// written (a ZooKeeper outage expired every session, or they all restarted): any of
    /// them may have come back with less than it had (a wiped disk), so the leader is chosen
    /// again among them by log end, in a new leader epoch, and only the replicas with as
    /// long a log stay in sync (see the control thread's `nodes_for`).
    pub reelect: bool,
    /// Replicas that said they cannot lead this partition and have not written it since
    /// (`/admin/cannot_lead`): no preferred-leader election moves it to them.
    pub unable: BTreeSet<u32>,
    /// In-sync replicas registered with another storage id than the one they joined the ISR
    /// with (`PartitionState::lost_storage`: a wiped disk): not in sync, whatever the ISR
    /// says. They never win a clean election, lose a leadership they have, and leave the
    /// ISR once someone else leads.
    pub wiped: BTreeSet<u32>,
    /// The storage id of each live node that told one (recorded for the leader of an unclean
    /// election, the only member of its new ISR).
    pub storage: BTreeMap<u32, u64>,
}

impl Nodes {
    /// May lead and be in sync: registered and not leaving.
    pub fn eligible(&self, b: u32) -> bool {
        self.live.contains(&b) && !self.shutting_down.contains(&b)
    }

    /// May lead in a clean election: eligible, and has what it held when it joined the ISR.
    pub fn synced(&self, b: u32) -> bool {
        self.eligible(b) && !self.wiped.contains(&b)
    }

    pub fn eligible_list(&self) -> Vec<u32> {
        self.live
            .iter()
            .copied()
            .filter(|b| !self.shutting_down.contains(b))
            .collect()
    }
}

/// A new state for a partition and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub next: PartitionState,
    /// The new leader came from outside the ISR.
    pub unclean: bool,
}

/// True when the partition's leader has to be replaced (dead, gone or leaving) or chosen
/// again (`Nodes::reelect`).
pub fn needs_leader(s: &PartitionState, nodes: &Nodes) -> bool {
    if nodes.reelect {
        return true;
    }
    match s.leader {
        Some(l) => !nodes.eligible(l) || nodes.wiped.contains(&l),
        None => true,
    }
}

/// The ISR as far as it is still in sync: without the members that lost their storage.
fn synced(s: &PartitionState, nodes: &Nodes) -> Vec<u32> {
    s.isr
        .iter()
        .copied()
        .filter(|b| !nodes.wiped.contains(b))
        .collect()
}

/// The replicas an election would choose from (the probe is asked for their log ends).
pub fn candidates(s: &PartitionState, nodes: &Nodes, unclean: bool) -> Vec<u32> {
    let clean: Vec<u32> = s
        .replicas
        .iter()
        .copied()
        .filter(|r| s.isr.contains(r) && nodes.synced(*r))
        .collect();
    if !clean.is_empty() || !unclean {
        return clean;
    }
    s.replicas
        .iter()
        .copied()
        .filter(|r| nodes.eligible(*r))
        .collect()
}

/// The state the controller with epoch `epoch` should write, or `None` when `s` is right as it
/// is. Applying a decision and deciding again on the result gives `None` (so a controller that
/// re-reads what it wrote does not loop).
pub fn decide(
    s: &PartitionState,
    nodes: &Nodes,
    log_ends: &BTreeMap<u32, u64>,
    unclean: bool,
    preferred: bool,
    epoch: u64,
) -> Option<Decision> {
    let mut next = s.clone();
    let mut was_unclean = false;
    if needs_leader(s, nodes) {
        // Among equal logs, a replica that said it cannot lead this partition comes last.
        let (able, unable): (Vec<u32>, Vec<u32>) = s
            .replicas
            .iter()
            .copied()
            .partition(|r| !nodes.unable.contains(r));
        let order: Vec<u32> = able.into_iter().chain(unable).collect();
        let isr = synced(s, nodes);
        match assign::elect(&order, &isr, &nodes.eligible_list(), log_ends, unclean) {
            Some(e) => {
                next.leader = Some(e.leader);
                next.leader_epoch = s.leader_epoch.saturating_add(1);
                if e.clean {
                    next.isr.retain(|b| nodes.eligible(*b));
                    if nodes.reelect {
                        // A shorter log may lack acknowledged records (a wiped disk): it
                        // joins again once caught up.
                        let end = |b: &u32| log_ends.get(b).copied().unwrap_or(0);
                        let best = end(&e.leader);
                        next.isr.retain(|b| *b == e.leader || end(b) >= best);
                    }
                } else {
                    next.isr = vec![e.leader];
                    next.isr_storage.clear();
                    if let Some(&id) = nodes.storage.get(&e.leader) {
                        next.isr_storage.insert(e.leader, id);
                    }
                    was_unclean = true;
                }
            }
            // A leader that is leaving but still alive keeps the partition when nobody else
            // can take it: going leaderless would only make it unavailable sooner. Not one
            // that lost its storage: it may lack acknowledged records that only replicas
            // which are down still have.
            None if s
                .leader
                .is_some_and(|l| nodes.live.contains(&l) && !nodes.wiped.contains(&l)) => {}
            None => {
                // The ISR stays as it was, so that a member coming back can lead again (it
                // has every acknowledged write; nobody else does).
                next.leader = None;
                if s.leader.is_some() {
                    next.leader_epoch = s.leader_epoch.saturating_add(1);
                }
            }
        }
    } else if preferred
        && let Some(&pref) = s.replicas.first()
        && Some(pref) != s.leader
        && nodes.synced(pref)
        && s.isr.contains(&pref)
        && !nodes.unable.contains(&pref)
    {
        next.leader = Some(pref);
        next.leader_epoch = s.leader_epoch.saturating_add(1);
    }
    // Out of the ISR go dead and leaving nodes, and those that lost their storage, as long
    // as the leader itself stays in it.
    if let Some(l) = next.leader {
        let shrunk: Vec<u32> = next
            .isr
            .iter()
            .copied()
            .filter(|b| *b == l || nodes.synced(*b))
            .collect();
        if shrunk.contains(&l) {
            next.isr = shrunk;
        }
    }
    next.isr_storage.retain(|b, _| next.isr.contains(b));
    if next == *s {
        return None;
    }
    next.controller_epoch = epoch;
    Some(Decision {
        next,
        unclean: was_unclean,
    })
}

/// True when, for some node, the share of the partitions it prefers to lead but does not
/// (while it could: live, in sync, not leaving) exceeds `ratio`.
pub fn imbalanced<'a>(
    states: impl Iterator<Item = &'a PartitionState>,
    nodes: &Nodes,
    ratio: f64,
) -> bool {
    let mut per: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    for s in states {
        let Some(&pref) = s.replicas.first() else {
            continue;
        };
        let e = per.entry(pref).or_default();
        e.0 += 1;
        if s.leader != Some(pref) && nodes.eligible(pref) && s.isr.contains(&pref) {
            e.1 += 1;
        }
    }
    per.values()
        .any(|&(n, off)| n > 0 && off > 0 && f64::from(off) / f64::from(n) > ratio)
}
