//! Retry delays: exponential from `min` to `max`, with jitter (a delay `d` becomes a uniform
//! pick in `[d/2, d]`) so that a fleet of GASes restarted together does not call in step.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before jitter for the next attempt: `min * 2^failures`, at most `max`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The (jittered) delay to wait now; the next one will be about twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1).min(32);
        let hi = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::thread_rng().gen_range(hi / 2..=hi))
    }

    /// Starts again from `min` (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_up_to_the_cap() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(15));
        let mut ceilings = Vec::new();
        for _ in 0..7 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} for {ceiling:?}");
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 15, 15, 15]);
        b.reset();
        assert_eq!(b.ceiling(), s(1));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), s(15));
    }
}
