//! Announce tokens (BEP 5): a `get_peers` answer carries a token bound to the querier's IP, and
//! an `announce_peer` is accepted only with a token we gave that IP recently.
//!
//! A token is the first [`TOKEN_LEN`] bytes of SHA-1(secret ‖ IP). The secret is replaced every
//! [`ROTATION`]; tokens made with the current or the previous secret are accepted, so a token
//! stays valid for between 5 and 10 minutes. Nothing is stored per querier.

use core::net::IpAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha1::{Digest, Sha1};

/// How often the secret changes.
pub const ROTATION: Duration = Duration::from_secs(5 * 60);
/// Bytes in a token we hand out.
pub const TOKEN_LEN: usize = 8;

/// The current and previous secrets.
#[derive(Debug)]
pub struct Tokens {
    current: [u8; 20],
    previous: [u8; 20],
    rotated_at: Instant,
}

impl Tokens {
    /// Fresh secrets at `now`.
    pub fn new(now: Instant, rng: &mut impl RngCore) -> Tokens {
        let mut t = Tokens {
            current: [0; 20],
            previous: [0; 20],
            rotated_at: now,
        };
        rng.fill_bytes(&mut t.current);
        rng.fill_bytes(&mut t.previous);
        t
    }

    /// Rotates as many times as [`ROTATION`] periods passed since the last rotation (at most
    /// twice: after that both secrets are fresh anyway).
    pub fn rotate(&mut self, now: Instant, rng: &mut impl RngCore) {
        for _ in 0..2 {
            if now.saturating_duration_since(self.rotated_at) < ROTATION {
                return;
            }
            self.previous = self.current;
            rng.fill_bytes(&mut self.current);
            self.rotated_at = self.rotated_at.checked_add(ROTATION).unwrap_or(now);
        }
        // Long idle: restart the period now rather than catching up period by period.
        if now.saturating_duration_since(self.rotated_at) >= ROTATION {
            self.rotated_at = now;
        }
    }

    /// The token for `ip` under the current secret.
    pub fn token_for(&self, ip: IpAddr) -> [u8; TOKEN_LEN] {
        make(&self.current, ip)
    }

    /// Whether `token` was made for `ip` with the current or the previous secret.
    pub fn is_valid(&self, token: &[u8], ip: IpAddr) -> bool {
        token == make(&self.current, ip) || token == make(&self.previous, ip)
    }
}

fn make(secret: &[u8; 20], ip: IpAddr) -> [u8; TOKEN_LEN] {
    let mut h = Sha1::new();
    h.update(secret);
    match ip.to_canonical() {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
    let digest = h.finalize();
    let mut out = [0u8; TOKEN_LEN];
    out.copy_from_slice(&digest[..TOKEN_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tokens_live_for_two_periods_and_are_bound_to_the_ip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t0 = Instant::now();
        let mut tokens = Tokens::new(t0, &mut rng);
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let token = tokens.token_for(ip);
        assert!(tokens.is_valid(&token, ip));
        assert!(!tokens.is_valid(&token, other));
        assert!(!tokens.is_valid(&token[..4], ip));

        tokens.rotate(t0 + ROTATION - Duration::from_secs(1), &mut rng);
        assert_eq!(tokens.token_for(ip), token, "rotated early");
        tokens.rotate(t0 + ROTATION, &mut rng);
        assert_ne!(tokens.token_for(ip), token);
        assert!(tokens.is_valid(&token, ip), "previous secret refused");
        tokens.rotate(t0 + ROTATION * 2, &mut rng);
        assert!(!tokens.is_valid(&token, ip), "token outlived two rotations");
    }

    #[test]
    fn a_long_idle_replaces_both_secrets_and_restarts_the_period() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let t0 = Instant::now();
        let mut tokens = Tokens::new(t0, &mut rng);
        let ip: IpAddr = [10, 1, 2, 3].into();
        let token = tokens.token_for(ip);
        let late = t0 + ROTATION * 7 + Duration::from_secs(3);
        tokens.rotate(late, &mut rng);
        assert!(!tokens.is_valid(&token, ip));
        assert_eq!(tokens.rotated_at, late);
    }
}
