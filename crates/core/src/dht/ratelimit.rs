//! Per-source-IP rate limiting of the queries we answer: a token bucket per IP.
//!
//! Invariants: at most `max_ips` IPs are tracked; when the table is full, the IP seen longest
//! ago is forgotten (a forgotten IP starts again with a full bucket, which only ever allows
//! `burst` extra queries). Arithmetic is in thousandths of a query, saturating.

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::time::Instant;

const MILLI: u64 = 1000;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Thousandths of a query available.
    tokens: u64,
    last: Instant,
}

/// Token buckets keyed by source IP.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u64,
    burst: u64,
    max_ips: usize,
    buckets: BTreeMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// `per_second` queries a second on average, `burst` at once, for up to `max_ips` IPs.
    pub fn new(per_second: u32, burst: u32, max_ips: usize) -> RateLimiter {
        RateLimiter {
            per_second: u64::from(per_second),
            burst: u64::from(burst.max(1)),
            max_ips: max_ips.max(1),
            buckets: BTreeMap::new(),
        }
    }

    /// Whether a query from `ip` at `now` may be answered (and counts it if so).
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let full = self.burst.saturating_mul(MILLI);
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_ips {
            let stalest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(ip, _)| *ip);
            if let Some(old) = stalest {
                self.buckets.remove(&old);
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: full,
            last: now,
        });
        let elapsed_ms = now.saturating_duration_since(b.last).as_millis();
        let refill = u64::try_from(elapsed_ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(self.per_second);
        b.tokens = b.tokens.saturating_add(refill).min(full);
        b.last = b.last.max(now);
        if b.tokens >= MILLI {
            b.tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_per_ip() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, 100);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert_eq!((0..8).filter(|_| r.allow(t0, a)).count(), 5);
        assert!(r.allow(t0, b), "another IP has its own bucket");
        assert!(!r.allow(t0 + Duration::from_millis(50), a));
        assert!(r.allow(t0 + Duration::from_millis(100), a));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            (0..8).filter(|_| r.allow(later, a)).count(),
            5,
            "refill capped at the burst"
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 1, 4);
        for n in 0..100u8 {
            assert!(r.allow(t0 + Duration::from_secs(u64::from(n)), [10, 0, 0, n].into()));
            assert!(r.buckets.len() <= 4);
        }
    }
}
