//! Waits between failed POSTs: exponential, capped, with jitter, so that
//! gateways that lost the backend together do not come back in step.
//!
//! Sans-IO: the caller gives the failure count and owns the clock; the
//! jitter comes from a seeded generator, so tests are exact.

use std::time::Duration;

/// Exponential backoff with "equal jitter": after `n` failures the wait
/// is drawn from `[d/2, d]`, `d = min(max, min * 2^(n-1))`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    rng: u64,
}

impl Backoff {
    /// Waits between `min_ms` and `max_ms`; `seed` drives the jitter.
    pub fn new(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        Backoff {
            min_ms: min_ms.max(1),
            max_ms: max_ms.max(min_ms).max(1),
            rng: seed | 1,
        }
    }

    /// The wait after the `failures`-th failure in a row (1 for the first).
    pub fn wait(&mut self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(40);
        let d = self.min_ms.saturating_mul(1 << shift).min(self.max_ms);
        let half = d / 2;
        let jitter = self.next() % (d - half + 1);
        Duration::from_millis(half + jitter)
    }

    /// xorshift64*: cheap, and good enough to spread retries.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter() {
        let mut b = Backoff::new(100, 1000, 42);
        for (n, d) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (60, 1000),
        ] {
            for _ in 0..50 {
                let w = b.wait(n).as_millis() as u64;
                assert!(
                    w >= d / 2 && w <= d,
                    "failure {n}: {w} not in [{}, {d}]",
                    d / 2
                );
            }
        }
    }

    #[test]
    fn two_seeds_spread() {
        let (mut a, mut b) = (Backoff::new(100, 30_000, 1), Backoff::new(100, 30_000, 2));
        let same = (0..20).filter(|_| a.wait(8) == b.wait(8)).count();
        assert!(same < 5, "{same} of 20 waits equal");
    }
}
