//! Pure placement and election rules of the controller (no I/O, so they are tested alone).
use std::collections::BTreeMap;

/// Replicas for `partitions` partitions over `brokers` (sorted ids), `rf` each: partition `p`
/// gets the `rf` brokers starting at position `p mod n`, so leaders (first replicas) rotate over
/// the nodes and every node holds about `partitions * rf / n` replicas.
pub fn assign(partitions: u32, brokers: &[u32], rf: u32) -> Result<Vec<Vec<u32>>, String> {
    let n = brokers.len();
    if rf == 0 {
        return Err("replication factor must be at least 1".into());
    }
    if (rf as usize) > n {
        return Err(format!(
            "replication factor {rf} is larger than the {n} live node(s); start more nodes first"
        ));
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    Ok((0..partitions as usize)
        .map(|p| (0..rf as usize).map(|j| sorted[(p + j) % n]).collect())
        .collect())
}

/// Leader election: among live in-sync replicas, the one with the highest log end wins; ties go
/// to the earlier replica in preference order. With `unclean`, a live replica outside the ISR
/// may be chosen when no in-sync one is alive (it may lack acknowledged writes).
pub fn elect(
    replicas: &[u32],
    isr: &[u32],
    live: &[u32],
    log_ends: &BTreeMap<u32, u64>,
    unclean: bool,
) -> Option<Election> {
    let pick = |pool: &mut dyn Iterator<Item = u32>| {
        pool.filter(|r| live.contains(r)).max_by_key(|r| {
            let pref = replicas.iter().position(|x| x == r).unwrap_or(usize::MAX);
            (
                log_ends.get(r).copied().unwrap_or(0),
                std::cmp::Reverse(pref),
            )
        })
    };
    if let Some(l) = pick(&mut replicas.iter().copied().filter(|r| isr.contains(r))) {
        return Some(Election {
            leader: l,
            clean: true,
        });
    }
    if unclean && let Some(l) = pick(&mut replicas.iter().copied()) {
        return Some(Election {
            leader: l,
            clean: false,
        });
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Election {
    pub leader: u32,
    /// False when the leader came from outside the ISR (unclean election).
    pub clean: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_spreads_replicas_and_rotates_leaders() {
        let a = assign(6, &[3, 1, 2], 3).unwrap();
        assert_eq!(a[0], vec![1, 2, 3]);
        assert_eq!(a[1], vec![2, 3, 1]);
        assert_eq!(a[2], vec![3, 1, 2]);
        let mut leaders = BTreeMap::new();
        let mut held = BTreeMap::new();
        for r in &a {
            *leaders.entry(r[0]).or_insert(0) += 1;
            for b in r {
                *held.entry(*b).or_insert(0) += 1;
            }
            let mut d = r.clone();
            d.dedup();
            assert_eq!(d.len(), 3, "distinct replicas");
        }
        assert!(leaders.values().all(|&n| n == 2));
        assert!(held.values().all(|&n| n == 6));
        assert!(
            assign(4, &[1, 2], 3)
                .unwrap_err()
                .contains("larger than the 2 live")
        );
    }

    #[test]
    fn the_live_in_sync_replica_with_the_highest_log_end_wins() {
        let ends = BTreeMap::from([(1, 100), (2, 120), (3, 130)]);
        // 3 has the most but is not in sync: 2 wins.
        let e = elect(&[1, 2, 3], &[1, 2], &[1, 2, 3], &ends, false).unwrap();
        assert_eq!(
            e,
            Election {
                leader: 2,
                clean: true
            }
        );
        // 2 is dead: 1.
        assert_eq!(
            elect(&[1, 2, 3], &[1, 2], &[1, 3], &ends, false)
                .unwrap()
                .leader,
            1
        );
        // Ties go to preference order.
        let tie = BTreeMap::from([(1, 5), (2, 5)]);
        assert_eq!(
            elect(&[2, 1], &[1, 2], &[1, 2], &tie, false)
                .unwrap()
                .leader,
            2
        );
        // No live in-sync replica: nothing, unless unclean election is on.
        assert_eq!(elect(&[1, 2, 3], &[1], &[2, 3], &ends, false), None);
        assert_eq!(
            elect(&[1, 2, 3], &[1], &[2, 3], &ends, true),
            Some(Election {
                leader: 3,
                clean: false
            })
        );
    }
}
