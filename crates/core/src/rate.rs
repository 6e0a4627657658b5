//! Rate limiting: a token bucket over bytes, sans-IO (time comes in as `now`).
//!
//! A [`TokenBucket`] holds up to `burst` bytes of credit and gains `rate` bytes each second.
//! Bytes are taken after the fact ([`TokenBucket::consume`]: a read already happened, a block
//! was already sent), so the balance may go negative; the driver then waits until
//! [`TokenBucket::poll_timeout`] before moving more bytes. Over any span the bytes moved stay
//! within `burst + rate * span` plus one transfer's overshoot.
//!
//! Credit is kept in nano-bytes (bytes times 10^9), so refills lose nothing to rounding however
//! often they happen. Invariant: `-(largest consume) <= balance <= burst` in bytes, and the
//! balance never changes but by elapsed time or `consume`.

use std::time::{Duration, Instant};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A byte budget refilled at a fixed rate (one per direction per torrent, or one global).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Most credit held, in nano-bytes.
    burst: i128,
    /// Current credit in nano-bytes (negative: debt).
    balance: i128,
    /// When `balance` was last brought up to date.
    updated: Option<Instant>,
}

impl TokenBucket {
    /// A bucket allowing `rate` bytes per second on average, with up to `burst` bytes at once
    /// (at least one second's worth is sensible; 0 is taken as `rate`). It starts full.
    /// `rate` 0 is clamped to 1 byte per second: "no limit" is the absence of a bucket.
    pub fn new(rate: u64, burst: u64) -> TokenBucket {
        let rate = rate.max(1);
        let burst = if burst == 0 { rate } else { burst };
        let burst = i128::from(burst) * NANOS_PER_SEC;
        TokenBucket {
            rate,
            burst,
            balance: burst,
            updated: None,
        }
    }

    /// The bytes per second this bucket allows.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Credits the time passed since the last call (calling it early or late is harmless; time
    /// going backwards credits nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(before) = self.updated {
            let elapsed = now.saturating_duration_since(before).as_nanos();
            let gained = i128::try_from(elapsed)
                .unwrap_or(i128::MAX)
                .saturating_mul(i128::from(self.rate));
            self.balance = self.balance.saturating_add(gained).min(self.burst);
        }
        if self.updated.is_none_or(|t| now > t) {
            self.updated = Some(now);
        }
    }

    /// Takes `bytes` that were just moved; the balance may go into debt.
    pub fn consume(&mut self, now: Instant, bytes: u64) {
        self.handle_timeout(now);
        self.balance = self
            .balance
            .saturating_sub(i128::from(bytes).saturating_mul(NANOS_PER_SEC));
    }

    /// Whether bytes may be moved now (the balance is positive).
    pub fn is_open(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        self.balance > 0
    }

    /// Whole bytes of credit available now (0 in debt).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.handle_timeout(now);
        u64::try_from(self.balance / NANOS_PER_SEC).unwrap_or(0)
    }

    /// When the balance turns positive again, if it is not now (as of the last update).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.balance > 0 {
            return None;
        }
        let updated = self.updated?;
        // Nanoseconds until the balance exceeds zero: (debt / rate) + 1.
        let wait = (-self.balance) / i128::from(self.rate) + 1;
        let wait = u64::try_from(wait).unwrap_or(u64::MAX);
        Some(updated + Duration::from_nanos(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn starts_full_and_refills_at_the_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1000, 2000);
        assert_eq!(b.available(t), 2000);
        b.consume(t, 2000);
        assert_eq!(b.available(t), 0);
        assert!(!b.is_open(t));
        assert_eq!(b.available(t + SEC / 2), 500);
        assert_eq!(b.available(t + SEC * 10), 2000, "capped at the burst");
    }

    #[test]
    fn debt_is_paid_back_before_more_bytes_move() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1000, 1000);
        b.consume(t, 4000); // 3000 in debt
        let ready = b.poll_timeout().expect("in debt");
        assert!(ready > t + SEC * 3 && ready <= t + SEC * 3 + Duration::from_micros(1));
        assert!(!b.is_open(t + SEC * 3 - Duration::from_millis(1)));
        assert!(b.is_open(ready));
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn tiny_steps_lose_nothing_to_rounding() {
        let t = Instant::now();
        let mut b = TokenBucket::new(3, 3);
        b.consume(t, 3);
        // A thousand refills of 1 ms each: 3 bytes per second is 3 bytes.
        for ms in 1..=1000 {
            b.handle_timeout(t + Duration::from_millis(ms));
        }
        assert_eq!(b.available(t + SEC), 3);
    }

    #[test]
    fn time_going_backwards_credits_nothing() {
        let t = Instant::now() + SEC * 10;
        let mut b = TokenBucket::new(100, 100);
        b.consume(t, 100);
        assert_eq!(b.available(t - SEC), 0);
        assert_eq!(b.available(t + SEC), 100);
    }

    #[test]
    fn zero_rate_is_clamped_and_zero_burst_means_one_second() {
        let t = Instant::now();
        let mut b = TokenBucket::new(0, 0);
        assert_eq!(b.rate(), 1);
        assert_eq!(b.available(t), 1);
        let mut b = TokenBucket::new(500, 0);
        assert_eq!(b.available(t), 500);
    }

    proptest! {
        /// A driver that moves bytes only while the bucket is open never exceeds
        /// `burst + rate * elapsed` plus one transfer's overshoot, whatever the schedule.
        #[test]
        fn bytes_moved_stay_within_the_budget(
            rate in 1u64..10_000_000,
            burst in 1u64..10_000_000,
            steps in proptest::collection::vec((0u64..2_000_000, 1u64..100_000), 1..200),
        ) {
            let start = Instant::now();
            let mut b = TokenBucket::new(rate, burst);
            let mut now = start;
            let mut moved: u128 = 0;
            let mut largest: u128 = 0;
            for (gap_us, bytes) in steps {
                now += Duration::from_micros(gap_us);
                if let Some(ready) = b.poll_timeout() {
                    now = now.max(ready);
                }
                prop_assert!(b.is_open(now));
                b.consume(now, bytes);
                moved += u128::from(bytes);
                largest = largest.max(u128::from(bytes));
                let elapsed = now.duration_since(start).as_nanos();
                let budget = u128::from(burst) + u128::from(rate) * elapsed / 1_000_000_000;
                prop_assert!(moved <= budget + largest + 1, "{moved} > {budget} + {largest}");
            }
        }
    }
}
