//! Whole-network tests on virtual time: 50 nodes exchange datagrams through a deterministic
//! in-memory network (random latency, optional loss), bootstrap from one node, and one node
//! finds the peer another announced. All addresses are loopback ones and nothing leaves memory.

use core::net::SocketAddr;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::types::InfoHash;

/// A deterministic network of DHT nodes.
struct Sim {
    now: Instant,
    nodes: Vec<Dht>,
    addrs: Vec<SocketAddr>,
    by_addr: BTreeMap<SocketAddr, usize>,
    /// Datagrams in flight, by delivery time and sequence number.
    in_transit: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    rng: StdRng,
    loss_per_mille: u32,
    /// Every event, with the node it came from.
    events: Vec<(usize, DhtEvent)>,
    datagrams: u64,
}

impl Sim {
    /// `n` nodes (IPv4 on 127.0.x.y, or IPv6 on [::1] with distinct ports), all bootstrapping
    /// from node 0, started 100 ms apart.
    fn new(n: usize, v6: bool, loss_per_mille: u32, seed: u64) -> Sim {
        let t0 = Instant::now();
        let config = DhtConfig {
            ipv4: !v6,
            ipv6: v6,
            ..DhtConfig::default()
        };
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| {
                if v6 {
                    SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 20000 + i as u16))
                } else {
                    SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250 + 1) as u8], 6881))
                }
            })
            .collect();
        let mut sim = Sim {
            now: t0,
            nodes: (0..n)
                .map(|i| Dht::new(t0, seed ^ (i as u64 + 1), config))
                .collect(),
            by_addr: addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect(),
            addrs,
            in_transit: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed),
            loss_per_mille,
            events: Vec::new(),
            datagrams: 0,
        };
        for i in 0..n {
            if i > 0 {
                let boot = sim.addrs[0];
                sim.nodes[i].add_bootstrap_node(boot);
                let start = sim.now;
                sim.nodes[i].bootstrap(start);
                sim.drain(i);
            }
            sim.run_for(Duration::from_millis(100));
        }
        sim
    }

    /// Moves node `i`'s outgoing datagrams into the network and records its events.
    fn drain(&mut self, i: usize) {
        while let Some((to, bytes)) = self.nodes[i].poll_transmit() {
            self.datagrams += 1;
            if self.rng.gen_range(0..1000) < self.loss_per_mille {
                continue;
            }
            let at = self.now + Duration::from_millis(self.rng.gen_range(5..60));
            self.seq += 1;
            self.in_transit
                .insert((at, self.seq), (self.addrs[i], to, bytes));
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.events.push((i, e));
        }
    }

    /// Advances to the next delivery or timer and handles everything due then; false when
    /// nothing is scheduled before `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        let next_delivery = self.in_transit.keys().next().map(|(t, _)| *t);
        let next_timer = self.nodes.iter().filter_map(Dht::poll_timeout).min();
        let Some(next) = next_delivery.into_iter().chain(next_timer).min() else {
            return false;
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        while let Some(entry) = self.in_transit.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (from, to, bytes) = entry.remove();
            if let Some(&j) = self.by_addr.get(&to) {
                let now = self.now;
                self.nodes[j].handle_datagram(now, from, &bytes);
                self.drain(j);
            }
        }
        for j in 0..self.nodes.len() {
            if self.nodes[j].poll_timeout().is_some_and(|t| t <= self.now) {
                let now = self.now;
                self.nodes[j].handle_timeout(now);
                self.drain(j);
            }
        }
        true
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
        self.now = self.now.max(limit);
    }

    /// Runs until `found` matches an event (returning it) or `d` of virtual time passed.
    fn run_until<T>(
        &mut self,
        d: Duration,
        mut found: impl FnMut(&(usize, DhtEvent)) -> Option<T>,
    ) -> Option<T> {
        let limit = self.now + d;
        let mut seen = 0;
        loop {
            while seen < self.events.len() {
                if let Some(t) = found(&self.events[seen]) {
                    return Some(t);
                }
                seen += 1;
            }
            if !self.step(limit) {
                return None;
            }
        }
    }

    /// Node `i` calls `f` at the current time, and its output enters the network.
    fn with<T>(&mut self, i: usize, f: impl FnOnce(&mut Dht, Instant) -> T) -> T {
        let now = self.now;
        let t = f(&mut self.nodes[i], now);
        self.drain(i);
        t
    }
}

const HASH: InfoHash = InfoHash([0x5a; 20]);

/// Announces from node `announcer` and looks up from node `searcher`; returns the announce's
/// confirmed count and the peers found.
fn announce_then_find(
    sim: &mut Sim,
    announcer: usize,
    searcher: usize,
    port: AnnouncePort,
) -> (usize, Vec<SocketAddr>) {
    let lookup = sim.with(announcer, |d, now| d.announce(now, HASH, port));
    let stored = sim
        .run_until(Duration::from_secs(60), |(_, e)| match e {
            DhtEvent::AnnounceDone {
                lookup: l, stored, ..
            } if *l == lookup => Some(*stored),
            _ => None,
        })
        .expect("announce never ended");
    let lookup = sim.with(searcher, |d, now| d.get_peers(now, HASH));
    let mut peers = Vec::new();
    sim.run_until(Duration::from_secs(60), |(i, e)| match e {
        DhtEvent::Peers {
            lookup: l,
            peers: p,
            info_hash,
        } if *l == lookup => {
            assert_eq!((*i, *info_hash), (searcher, HASH));
            peers.extend(p.iter().copied());
            None
        }
        DhtEvent::LookupDone {
            lookup: l,
            answered,
            ..
        } if *l == lookup => {
            assert!(
                *answered >= 8,
                "the lookup heard from only {answered} nodes"
            );
            Some(())
        }
        _ => None,
    })
    .expect("lookup never ended");
    (stored, peers)
}

/// The nodes closest to `target` by global knowledge.
fn truly_closest(sim: &Sim, target: &NodeId, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..sim.nodes.len()).collect();
    all.sort_by_key(|&i| sim.nodes[i].node_id().distance(target));
    all.truncate(count);
    all
}

#[test]
fn fifty_nodes_bootstrap_announce_and_find_each_other() {
    let mut sim = Sim::new(50, false, 0, 1);
    sim.run_for(Duration::from_secs(20));
    // Early nodes bootstrap into a small network; they learn the later ones as those query them.
    let bootstrapped = sim
        .events
        .iter()
        .filter(|(_, e)| matches!(e, DhtEvent::Bootstrapped { nodes } if *nodes > 0))
        .count();
    assert_eq!(bootstrapped, 49, "every node but the first bootstraps");
    for (i, node) in sim.nodes.iter().enumerate() {
        assert!(
            node.node_count() >= 8,
            "node {i} knows only {} nodes",
            node.node_count()
        );
    }

    let (stored, peers) = announce_then_find(&mut sim, 10, 40, AnnouncePort::Port(7777));
    assert!(stored >= 6, "only {stored} nodes stored the announce");
    let expected = SocketAddr::new(sim.addrs[10].ip(), 7777);
    assert!(peers.contains(&expected), "{expected} not among {peers:?}");
    // The announce went where it belongs: to the nodes closest to the info hash.
    let closest = truly_closest(&sim, &NodeId::from(HASH), 8);
    let holding = closest
        .iter()
        .filter(|&&i| sim.nodes[i].stored_peer_count() > 0)
        .count();
    assert!(
        holding >= 6,
        "only {holding} of the 8 closest nodes hold the peer"
    );
    let anywhere = sim
        .nodes
        .iter()
        .filter(|n| n.stored_peer_count() > 0)
        .count();
    assert!(anywhere <= 8, "announced to {anywhere} nodes");
}

#[test]
fn lookups_succeed_with_ten_percent_loss() {
    let mut sim = Sim::new(50, false, 100, 2);
    sim.run_for(Duration::from_secs(30));
    let (stored, peers) = announce_then_find(&mut sim, 3, 33, AnnouncePort::Port(4242));
    assert!(stored >= 3, "only {stored} nodes stored the announce");
    assert!(peers.contains(&SocketAddr::new(sim.addrs[3].ip(), 4242)));
}

#[test]
fn ipv6_nodes_find_each_other_with_an_implied_port() {
    let mut sim = Sim::new(30, true, 0, 3);
    sim.run_for(Duration::from_secs(20));
    let (stored, peers) = announce_then_find(&mut sim, 7, 21, AnnouncePort::Implied);
    assert!(stored >= 6);
    assert!(
        peers.contains(&sim.addrs[7]),
        "implied port should be the announcer's DHT address"
    );
}

#[test]
fn the_network_is_deterministic_and_quiet_once_settled() {
    let trace = |seed| {
        let mut sim = Sim::new(20, false, 50, seed);
        sim.run_for(Duration::from_secs(10));
        announce_then_find(&mut sim, 2, 12, AnnouncePort::Port(1));
        let before = sim.datagrams;
        // Ten idle minutes: only maintenance traffic (a few pings and refreshes per node).
        sim.run_for(Duration::from_secs(600));
        let idle = sim.datagrams - before;
        (format!("{:?}", sim.events), sim.datagrams, idle)
    };
    let (a, n, idle) = trace(9);
    assert_eq!((a.clone(), n), {
        let (b, m, _) = trace(9);
        (b, m)
    });
    assert!(idle < 20 * 200, "{idle} datagrams in ten idle minutes");
}
