//! Which gateway each connection goes to when `--target` lists several.
//!
//! A cluster is tested by where its users sit: a chat pair split over two
//! nodes sends every message across the cluster, a pair on one node is the
//! in-node baseline. So the choice follows the scenario's own layout of
//! connections (pair k is connections 2k and 2k+1, group g of S members is
//! connections gS .. gS+S-1) rather than the order connections open in.
//!
//! The choice depends on the connection's global index alone: every
//! `--shard` process puts a user on the same target, and no state or I/O
//! is involved, so the rules are tested here on their own.

use clap::ValueEnum;
use serde::Serialize;

/// How connections are spread over the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// The two users of a pair on different targets, a group's members
    /// over all targets: traffic crosses nodes.
    Spread,
    /// Connection i on target i mod N, whatever pairs that makes.
    RoundRobin,
    /// A pair (a whole group) on one target, pairs spread over the
    /// targets: traffic stays within a node.
    Together,
}

impl Placement {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Spread => "spread",
            Placement::RoundRobin => "round-robin",
            Placement::Together => "together",
        }
    }
}

/// How a scenario numbers its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Connections on their own (idle).
    Alone,
    /// Pair k is connection 2k (sender) and 2k+1 (receiver).
    Pairs,
    /// Group g is connections g*members .. g*members + members - 1.
    Groups {
        /// Members per group (at least 1).
        members: u32,
    },
}

/// The target (an index into the target list of `targets` entries) of
/// connection `id` of a scenario laid out as `layout`.
pub fn target_of(placement: Placement, layout: Layout, targets: usize, id: u32) -> usize {
    let n = targets.max(1) as u64;
    let id = u64::from(id);
    let t = match (placement, layout) {
        (Placement::RoundRobin, _) | (_, Layout::Alone) => id % n,
        (Placement::Together, Layout::Pairs) => (id / 2) % n,
        (Placement::Together, Layout::Groups { members }) => (id / u64::from(members.max(1))) % n,
        (Placement::Spread, Layout::Pairs) => {
            let (pair, side) = (id / 2, id % 2);
            let home = pair % n;
            if side == 0 || n == 1 {
                home
            } else {
                // The receiver 1 ..= n-1 targets further on, that distance
                // turning with each round of pairs over the targets, so
                // every ordered pair of nodes carries traffic.
                (home + 1 + (pair / n) % (n - 1)) % n
            }
        }
        (Placement::Spread, Layout::Groups { members }) => {
            let members = u64::from(members.max(1));
            (id / members + id % members) % n
        }
    };
    // Below `targets`, which is a usize.
    t as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_puts_the_two_users_of_every_pair_on_different_targets() {
        for n in 2..6 {
            let mut seen = vec![vec![0u32; n]; n];
            for pair in 0..200u32 {
                let a = target_of(Placement::Spread, Layout::Pairs, n, 2 * pair);
                let b = target_of(Placement::Spread, Layout::Pairs, n, 2 * pair + 1);
                assert!(a < n && b < n);
                assert_ne!(a, b, "pair {pair} on {n} targets");
                seen[a][b] += 1;
            }
            // Every ordered pair of distinct targets carries some pairs.
            for (a, row) in seen.iter().enumerate() {
                for (b, &k) in row.iter().enumerate() {
                    assert_eq!(k > 0, a != b, "{n} targets: {a} -> {b}: {k}");
                }
            }
        }
    }

    #[test]
    fn spread_puts_a_group_on_every_target() {
        for n in 2..5 {
            for g in 0..10u32 {
                let members = 6;
                let mut on = vec![0; n];
                for m in 0..members {
                    on[target_of(
                        Placement::Spread,
                        Layout::Groups { members },
                        n,
                        g * members + m,
                    )] += 1;
                }
                assert!(on.iter().all(|&k| k > 0), "group {g} on {n}: {on:?}");
            }
        }
    }

    #[test]
    fn together_keeps_a_pair_and_a_group_on_one_target() {
        let n = 3;
        let mut pairs_on = vec![0; n];
        for pair in 0..30u32 {
            let a = target_of(Placement::Together, Layout::Pairs, n, 2 * pair);
            let b = target_of(Placement::Together, Layout::Pairs, n, 2 * pair + 1);
            assert_eq!(a, b);
            pairs_on[a] += 1;
        }
        assert_eq!(pairs_on, vec![10, 10, 10]);
        let layout = Layout::Groups { members: 4 };
        for g in 0..9u32 {
            let first = target_of(Placement::Together, layout, n, g * 4);
            for m in 1..4 {
                assert_eq!(target_of(Placement::Together, layout, n, g * 4 + m), first);
            }
        }
    }

    #[test]
    fn round_robin_takes_the_connection_index() {
        for layout in [Layout::Alone, Layout::Pairs, Layout::Groups { members: 5 }] {
            let got: Vec<usize> = (0..7)
                .map(|i| target_of(Placement::RoundRobin, layout, 3, i))
                .collect();
            assert_eq!(got, vec![0, 1, 2, 0, 1, 2, 0]);
        }
    }

    #[test]
    fn one_target_takes_everything() {
        for p in [
            Placement::Spread,
            Placement::RoundRobin,
            Placement::Together,
        ] {
            for layout in [Layout::Alone, Layout::Pairs, Layout::Groups { members: 3 }] {
                for i in 0..50 {
                    assert_eq!(target_of(p, layout, 1, i), 0);
                    assert_eq!(target_of(p, layout, 0, i), 0);
                }
            }
        }
    }

    #[test]
    fn every_shard_places_a_user_alike() {
        // Shards own disjoint ranges of pairs; a connection's target is the
        // same whether one process or the shard that owns it places it.
        let pairs = 17;
        let whole: Vec<usize> = (0..2 * pairs)
            .map(|i| target_of(Placement::Spread, Layout::Pairs, 3, i))
            .collect();
        for count in 1..5 {
            let mut by_shards = vec![usize::MAX; whole.len()];
            for index in 0..count {
                let shard = crate::cli::Shard { index, count };
                for k in shard.range(pairs) {
                    for id in [2 * k, 2 * k + 1] {
                        by_shards[id as usize] = target_of(Placement::Spread, Layout::Pairs, 3, id);
                    }
                }
            }
            assert_eq!(by_shards, whole, "{count} shards");
        }
    }
}
