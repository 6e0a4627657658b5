//! The peers other nodes announced to us with `announce_peer`, per info hash, with expiry.
//!
//! Invariants: at most [`StoreLimits::per_info_hash`] peers per info hash and
//! [`StoreLimits::total`] peers overall; an announce that finds its swarm full replaces that
//! swarm's stalest peer, one that finds the store full is dropped (existing peers stay until
//! they expire [`PEER_TTL`] after their last announce). Iteration order is deterministic.

use core::net::SocketAddr;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::RngCore;

use crate::types::InfoHash;

/// How long an announce is remembered (peers re-announce about every 15 to 30 minutes).
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);

/// Bounds of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Peers kept per info hash.
    pub per_info_hash: usize,
    /// Peers kept overall (bounds memory to about 100 bytes each).
    pub total: usize,
}

impl Default for StoreLimits {
    /// 100 peers per info hash (libtorrent's reply size), 20 000 in all.
    fn default() -> StoreLimits {
        StoreLimits {
            per_info_hash: 100,
            total: 20_000,
        }
    }
}

/// Announced peers.
#[derive(Debug)]
pub struct PeerStore {
    limits: StoreLimits,
    swarms: BTreeMap<InfoHash, BTreeMap<SocketAddr, Instant>>,
    total: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> PeerStore {
        PeerStore {
            limits,
            swarms: BTreeMap::new(),
            total: 0,
        }
    }

    /// Records that `peer` announced `info_hash` at `now`.
    pub fn announce(&mut self, now: Instant, info_hash: InfoHash, peer: SocketAddr) {
        if self.limits.per_info_hash == 0 {
            return;
        }
        let full = self.total >= self.limits.total;
        let swarm = match self.swarms.get_mut(&info_hash) {
            Some(s) => s,
            None if full => return,
            None => self.swarms.entry(info_hash).or_default(),
        };
        if let Some(seen) = swarm.get_mut(&peer) {
            *seen = now;
            return;
        }
        if swarm.len() >= self.limits.per_info_hash || full {
            let stalest = swarm.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a);
            match stalest {
                Some(old) => {
                    swarm.remove(&old);
                }
                None => return,
            }
        } else {
            self.total += 1;
        }
        swarm.insert(peer, now);
    }

    /// Up to `max` peers of `info_hash` whose family is wanted, a random choice when there are
    /// more.
    pub fn peers(
        &self,
        info_hash: &InfoHash,
        v4: bool,
        v6: bool,
        max: usize,
        rng: &mut impl RngCore,
    ) -> Vec<SocketAddr> {
        let Some(swarm) = self.swarms.get(info_hash) else {
            return Vec::new();
        };
        let mut peers: Vec<SocketAddr> = swarm
            .keys()
            .filter(|a| if a.is_ipv4() { v4 } else { v6 })
            .copied()
            .collect();
        if peers.len() > max {
            peers.shuffle(rng);
            peers.truncate(max);
        }
        peers
    }

    /// Forgets peers that have not announced for [`PEER_TTL`].
    pub fn expire(&mut self, now: Instant) {
        let mut removed = 0;
        self.swarms.retain(|_, swarm| {
            let before = swarm.len();
            swarm.retain(|_, t| now.saturating_duration_since(*t) < PEER_TTL);
            removed += before - swarm.len();
            !swarm.is_empty()
        });
        self.total -= removed;
    }

    /// Peers stored in all.
    pub fn len(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn peer(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    #[test]
    fn announces_expire_and_refresh() {
        let t0 = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut store = PeerStore::new(StoreLimits::default());
        let h = InfoHash([1; 20]);
        store.announce(t0, h, peer(1));
        store.announce(t0 + Duration::from_secs(600), h, peer(2));
        store.announce(t0 + Duration::from_secs(600), h, peer(2));
        assert_eq!(store.len(), 2);
        store.expire(t0 + PEER_TTL);
        assert_eq!(store.peers(&h, true, true, 10, &mut rng), vec![peer(2)]);
        store.expire(t0 + PEER_TTL + Duration::from_secs(600));
        assert_eq!(store.len(), 0);
        assert!(store.peers(&h, true, true, 10, &mut rng).is_empty());
    }

    #[test]
    fn families_and_reply_size() {
        let t0 = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut store = PeerStore::new(StoreLimits::default());
        let h = InfoHash([2; 20]);
        let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9));
        store.announce(t0, h, v6);
        for n in 1..=30 {
            store.announce(t0, h, peer(n));
        }
        assert_eq!(store.peers(&h, false, true, 50, &mut rng), vec![v6]);
        assert_eq!(store.peers(&h, true, false, 50, &mut rng).len(), 30);
        assert_eq!(store.peers(&h, true, true, 8, &mut rng).len(), 8);
    }

    proptest! {
        /// Whatever is announced, no swarm and not the whole store outgrow their limits, and
        /// the running total matches the contents.
        #[test]
        fn bounded(ops in proptest::collection::vec((0u8..6, 0u16..40, 0u64..4000), 0..400)) {
            let t0 = Instant::now();
            let limits = StoreLimits { per_info_hash: 7, total: 20 };
            let mut store = PeerStore::new(limits);
            for (hash, port, secs) in ops {
                let now = t0 + Duration::from_secs(secs);
                if port == 0 {
                    store.expire(now);
                } else {
                    store.announce(now, InfoHash([hash; 20]), peer(port));
                }
                let sum: usize = store.swarms.values().map(BTreeMap::len).sum();
                prop_assert_eq!(sum, store.len());
                prop_assert!(store.len() <= limits.total);
                prop_assert!(store.swarms.values().all(|s| s.len() <= limits.per_info_hash && !s.is_empty()));
            }
        }
    }
}
