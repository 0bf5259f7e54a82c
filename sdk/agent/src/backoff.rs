//! Reconnect delays: exponential from `min` to `max`, with jitter (a delay `d` becomes a
//! uniform pick in `[d/2, d]`) so that a fleet restarted together does not reconnect in step.

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
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = jitter(self.ceiling(), rng);
        self.failures = self.failures.saturating_add(1).min(32);
        delay
    }

    /// Starts again from `min` (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A uniform pick in `[d/2, d]`.
pub fn jitter(d: Duration, rng: &mut impl Rng) -> Duration {
    let hi = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.gen_range(hi / 2..=hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceilings_double_from_min_and_stop_at_max() {
        let mut b = Backoff::new(1000 * MS, 15_000 * MS);
        let mut rng = rand::thread_rng();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay(&mut rng);
        }
        assert_eq!(
            ceilings,
            [1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000]
        );
        b.reset();
        assert_eq!(b.ceiling(), 1000 * MS);
    }

    #[test]
    fn delays_stay_within_half_and_full_ceiling() {
        let mut rng = rand::thread_rng();
        let mut b = Backoff::new(500 * MS, 15_000 * MS);
        for _ in 0..1000 {
            let ceiling = b.ceiling();
            let d = b.next_delay(&mut rng);
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} for {ceiling:?}");
            if b.failures > 10 {
                b.reset();
            }
        }
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut b = Backoff::new(1000 * MS, Duration::from_secs(24 * 3600));
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            let d = b.next_delay(&mut rng);
            assert!(d <= Duration::from_secs(24 * 3600));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(24 * 3600));
        // max below min is treated as min.
        let b = Backoff::new(2000 * MS, 1000 * MS);
        assert_eq!(b.ceiling(), 2000 * MS);
    }
}
