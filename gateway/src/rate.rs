//! The frame-rate limit of one connection: a token bucket on the core's
//! clock (protocol section 3.3). It holds at most `burst` tokens, starts
//! full, and refills at `per_sec` tokens a second; every frame takes one.
//! Time comes from the caller, so the policy is tested on a fake clock.

use std::cell::Cell;

/// A token bucket.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: Cell<f32>,
    refill_ms: Cell<u64>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at `now_ms`.
    pub(crate) fn full(burst: u32, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: Cell::new(burst as f32),
            refill_ms: Cell::new(now_ms),
        }
    }

    /// Takes one token, refilling first by the time elapsed since the last
    /// refill. False (nothing taken) when the bucket is empty.
    pub(crate) fn take(&self, now_ms: u64, per_sec: u32, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.refill_ms.get());
        let mut t = self.tokens.get();
        if elapsed > 0 {
            t = (t + elapsed as f32 * per_sec as f32 / 1000.0).min(burst as f32);
            self.refill_ms.set(now_ms);
        }
        if t >= 1.0 {
            self.tokens.set(t - 1.0);
            true
        } else {
            self.tokens.set(t);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses() {
        let b = TokenBucket::full(5, 0);
        for i in 0..5 {
            assert!(b.take(0, 100, 5), "token {i}");
        }
        assert!(!b.take(0, 100, 5));
    }

    #[test]
    fn it_refills_at_the_rate_and_never_above_the_burst() {
        let b = TokenBucket::full(2, 0);
        assert!(b.take(0, 100, 2) && b.take(0, 100, 2));
        assert!(!b.take(5, 100, 2), "half a token after 5 ms at 100/s");
        assert!(b.take(10, 100, 2), "one token after 10 ms");
        assert!(!b.take(10, 100, 2));
        // A long quiet spell fills it to the burst, not beyond.
        assert!(b.take(60_000, 100, 2) && b.take(60_000, 100, 2));
        assert!(!b.take(60_000, 100, 2));
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let b = TokenBucket::full(1, 100);
        assert!(b.take(100, 1000, 1));
        assert!(!b.take(50, 1000, 1));
    }
}
