//! Which items a rank's batch holds: a pure function of the plan's integers.
//!
//! # The order (algorithm `fisher-yates-sha256`, version 1)
//!
//! Without a seed the order is the split's listing order. With one, it is the Fisher-Yates
//! shuffle of `0..n` (for `i` from `n-1` down to `1`, swap `i` with `j` uniform in `0..=i`),
//! `j = (u * (i+1)) >> 64` for the next 64-bit word `u` of the stream: block `k` of the stream
//! is `SHA-256("medserve-order-v1" 0 seed 0 epoch 0 n 0 k)` (numbers in decimal, `0` a zero
//! byte), read as four little-endian u64 words. So the order depends on (seed, epoch, n) only:
//! not on the request's order, the worker, the replica or the time.
//!
//! # The plan
//!
//! Global step `g` covers permutation positions `[g*B*W, (g+1)*B*W)` and rank `R` takes
//! `g*B*W + R*B ..+ B`, so a job keeping `B*W` while changing `W` keeps the epoch's order.
//! `drop_last` drops the last partial step; otherwise positions past `n` wrap to the start of
//! the permutation (`p - n`, modulo `n`) and are marked as padding.

use sha2::{Digest, Sha256};

/// The ordering algorithm's name, as the plan reports it.
pub const ORDER_ALGORITHM: &str = "fisher-yates-sha256";
/// Its version: any change to the order is a new version.
pub const ORDER_VERSION: u32 = 1;

/// Largest batch (and `POST .../batch` id list).
pub const MAX_BATCH: usize = 1024;
/// Largest world size.
pub const MAX_WORLD: usize = 65_536;

/// The integers that fix an epoch's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub samples: usize,
    pub batch_size: usize,
    pub world_size: usize,
    pub drop_last: bool,
}

impl Plan {
    fn global(&self) -> usize {
        self.batch_size * self.world_size
    }

    /// Batches per rank per epoch (= global steps).
    pub fn steps(&self) -> usize {
        if self.drop_last {
            self.samples / self.global()
        } else {
            self.samples.div_ceil(self.global())
        }
    }

    /// Samples repeated to fill the last step (0 with `drop_last`).
    pub fn padded(&self) -> usize {
        if self.drop_last {
            0
        } else {
            self.steps() * self.global() - self.samples
        }
    }

    /// The permutation positions of rank `rank`'s batch `step`, each with whether it is
    /// padding. `step < steps()` and `rank < world_size` are the caller's to check.
    pub fn slots(&self, step: usize, rank: usize) -> Vec<(usize, bool)> {
        let start = step * self.global() + rank * self.batch_size;
        (start..start + self.batch_size)
            .map(|p| {
                if p < self.samples {
                    (p, false)
                } else {
                    ((p - self.samples) % self.samples, true)
                }
            })
            .collect()
    }
}

/// The epoch's order of `n` items: `order[position]` is an index into the listing.
pub fn order(seed: Option<u64>, epoch: u64, n: usize) -> Vec<u32> {
    let mut out: Vec<u32> = (0..n as u32).collect();
    let Some(seed) = seed else {
        return out;
    };
    let prefix = format!("medserve-order-v1\0{seed}\0{epoch}\0{n}\0");
    let mut words = Vec::new();
    let mut block = 0u64;
    for i in (1..n).rev() {
        if words.is_empty() {
            let d = Sha256::new()
                .chain_update(prefix.as_bytes())
                .chain_update(block.to_string().as_bytes())
                .finalize();
            block += 1;
            // Popped from the end: reverse so word 0 of a block is used first.
            words.extend(
                d.chunks_exact(8)
                    .rev()
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            );
        }
        let u = words.pop().expect("refilled above");
        let j = ((u as u128 * (i as u128 + 1)) >> 64) as usize;
        out.swap(i, j);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_fixed_by_seed_epoch_and_count() {
        assert_eq!(order(None, 5, 4), vec![0, 1, 2, 3]);
        assert!(order(Some(1), 0, 0).is_empty());
        assert_eq!(order(Some(1), 0, 1), vec![0]);
        for n in [2, 3, 10, 1000] {
            let o = order(Some(7), 2, n);
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
            assert_eq!(o, order(Some(7), 2, n));
        }
        assert_ne!(order(Some(7), 0, 100), order(Some(7), 1, 100));
        assert_ne!(order(Some(7), 0, 100), order(Some(8), 0, 100));
        // Every position is reachable by every item: first-position counts over many seeds.
        let mut first = [0usize; 4];
        for s in 0..4000 {
            first[order(Some(s), 0, 4)[0] as usize] += 1;
        }
        assert!(first.iter().all(|&c| (850..1150).contains(&c)), "{first:?}");
    }

    #[test]
    fn plan_counts_pads_and_slots() {
        let p = Plan {
            samples: 10,
            batch_size: 3,
            world_size: 2,
            drop_last: false,
        };
        assert_eq!((p.steps(), p.padded()), (2, 2));
        let mut seen = vec![0; 10];
        let mut pads = 0;
        for step in 0..p.steps() {
            for rank in 0..2 {
                for (pos, pad) in p.slots(step, rank) {
                    if pad {
                        pads += 1;
                    } else {
                        seen[pos] += 1;
                    }
                }
            }
        }
        assert_eq!(seen, vec![1; 10]);
        assert_eq!(pads, 2);
        // The pads repeat the start of the permutation.
        assert_eq!(p.slots(1, 1), vec![(9, false), (0, true), (1, true)]);
        let d = Plan {
            drop_last: true,
            ..p
        };
        assert_eq!((d.steps(), d.padded()), (1, 0));
        // Keeping B*W keeps the order: W=2, B=3 is W=1, B=6, rank by rank.
        let one = Plan {
            batch_size: 6,
            world_size: 1,
            ..p
        };
        for step in 0..2 {
            let mut two = p.slots(step, 0);
            two.extend(p.slots(step, 1));
            assert_eq!(two, one.slots(step, 0));
        }
        // Padding wraps around more than once on tiny splits.
        let tiny = Plan {
            samples: 2,
            batch_size: 5,
            world_size: 1,
            drop_last: false,
        };
        let positions: Vec<usize> = tiny.slots(0, 0).into_iter().map(|s| s.0).collect();
        assert_eq!(positions, vec![0, 1, 0, 1, 0]);
        let empty = Plan { samples: 0, ..tiny };
        assert_eq!(empty.steps(), 0);
    }
}
