//! One iterative lookup (Kademlia's node lookup, BEP 5's `get_peers` traversal): query the
//! closest known nodes `alpha` at a time, learn closer nodes from their answers, and stop once
//! the `k` closest nodes that did not fail have all answered.
//!
//! Invariants: at most `alpha` queries in flight; a node is queried at most once; only a node
//! within the `k` closest live candidates is queried (closest first); the candidate list is
//! cut to [`MAX_CANDIDATES`] (never dropping a node with a query in flight, and the cut only
//! ever removes the farthest); at most [`MAX_QUERIES`] queries in all; peers are reported once
//! each, up to [`MAX_PEERS`].

use core::net::SocketAddr;
use std::collections::BTreeSet;

use super::id::NodeId;

/// Nodes remembered per lookup.
pub const MAX_CANDIDATES: usize = 64;
/// Queries one lookup may send (a lookup over a healthy DHT needs 20 to 40).
pub const MAX_QUERIES: usize = 128;
/// Distinct peers one lookup reports (later ones are not reported).
pub const MAX_PEERS: usize = 1000;

/// Identifies a lookup started with [`super::Dht::get_peers`] or [`super::Dht::announce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    Querying,
    Answered { token: Option<Vec<u8>> },
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    id: NodeId,
    addr: SocketAddr,
    state: State,
}

/// The progress of one lookup.
#[derive(Debug)]
pub struct Lookup {
    /// Our id: never a candidate.
    own: NodeId,
    target: NodeId,
    candidates: Vec<Candidate>,
    /// Bootstrap addresses whose ids are unknown: queried first, outside the closeness rule.
    seeds: Vec<(SocketAddr, State)>,
    in_flight: usize,
    queries: usize,
    peers: BTreeSet<SocketAddr>,
}

impl Lookup {
    /// A lookup by node `own` for `target`, starting from known `nodes` and id-less `seeds`.
    pub fn new(
        own: NodeId,
        target: NodeId,
        nodes: Vec<(NodeId, SocketAddr)>,
        seeds: Vec<SocketAddr>,
    ) -> Lookup {
        let mut l = Lookup {
            own,
            target,
            candidates: Vec::new(),
            seeds: Vec::new(),
            in_flight: 0,
            queries: 0,
            peers: BTreeSet::new(),
        };
        l.add_nodes(nodes);
        for s in seeds {
            // A seed already known with its id is queried as that node, not twice.
            if !l.seeds.iter().any(|(a, _)| *a == s) && !l.candidates.iter().any(|c| c.addr == s) {
                l.seeds.push((s, State::Fresh));
            }
        }
        l
    }

    /// The id looked for.
    pub fn target(&self) -> NodeId {
        self.target
    }

    /// Adds nodes learned from an answer (our own id, duplicates of a known id or address are
    /// skipped), then cuts the list to [`MAX_CANDIDATES`].
    pub fn add_nodes(&mut self, nodes: impl IntoIterator<Item = (NodeId, SocketAddr)>) {
        for (id, addr) in nodes {
            if id == self.own || self.candidates.iter().any(|c| c.id == id || c.addr == addr) {
                continue;
            }
            let d = id.distance(&self.target);
            let at = self
                .candidates
                .partition_point(|c| c.id.distance(&self.target) < d);
            self.candidates.insert(
                at,
                Candidate {
                    id,
                    addr,
                    state: State::Fresh,
                },
            );
        }
        while self.candidates.len() > MAX_CANDIDATES {
            match self
                .candidates
                .iter()
                .rposition(|c| c.state != State::Querying)
            {
                Some(i) => {
                    self.candidates.remove(i);
                }
                None => break,
            }
        }
    }

    /// The next node to query, if one may be queried now; it counts as in flight from here on.
    /// A `None` id means an id-less bootstrap address.
    pub fn next_query(&mut self, k: usize, alpha: usize) -> Option<(Option<NodeId>, SocketAddr)> {
        if self.in_flight >= alpha || self.queries >= MAX_QUERIES {
            return None;
        }
        let pick = if let Some(seed) = self.seeds.iter_mut().find(|(_, s)| *s == State::Fresh) {
            seed.1 = State::Querying;
            (None, seed.0)
        } else {
            let mut live = 0;
            let mut found = None;
            for c in &mut self.candidates {
                if live >= k {
                    break;
                }
                match c.state {
                    State::Failed => {}
                    State::Fresh => {
                        c.state = State::Querying;
                        found = Some((Some(c.id), c.addr));
                        break;
                    }
                    State::Querying | State::Answered { .. } => live += 1,
                }
            }
            found?
        };
        self.in_flight += 1;
        self.queries += 1;
        Some(pick)
    }

    fn settle(&mut self, node: Option<NodeId>, addr: SocketAddr, state: State) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match node {
            None => {
                if let Some(seed) = self.seeds.iter_mut().find(|(a, _)| *a == addr) {
                    seed.1 = state;
                }
            }
            Some(id) => {
                if let Some(c) = self
                    .candidates
                    .iter_mut()
                    .find(|c| c.id == id && c.addr == addr)
                {
                    c.state = state;
                }
            }
        }
    }

    /// Records an answer to the query sent to `node` at `addr`: the responder (`responder` is
    /// the id it gave) is marked answered with its token, its nodes become candidates, and the
    /// peers not reported before are returned.
    pub fn on_response(
        &mut self,
        node: Option<NodeId>,
        addr: SocketAddr,
        responder: NodeId,
        token: Option<Vec<u8>>,
        nodes: Vec<(NodeId, SocketAddr)>,
        values: &[SocketAddr],
    ) -> Vec<SocketAddr> {
        let answered = State::Answered { token };
        self.settle(node, addr, answered.clone());
        if node.is_none() && responder != self.own {
            // A bootstrap node told us its id: it is a candidate like any other.
            self.add_nodes([(responder, addr)]);
            if let Some(c) = self
                .candidates
                .iter_mut()
                .find(|c| c.id == responder && c.addr == addr)
            {
                if c.state == State::Fresh {
                    c.state = answered;
                }
            }
        }
        self.add_nodes(nodes);
        let mut fresh = Vec::new();
        for &p in values {
            if self.peers.len() >= MAX_PEERS {
                break;
            }
            if p.port() != 0 && self.peers.insert(p) {
                fresh.push(p);
            }
        }
        fresh
    }

    /// Records that the query to `node` at `addr` failed (timed out or answered an error).
    pub fn on_failure(&mut self, node: Option<NodeId>, addr: SocketAddr) {
        self.settle(node, addr, State::Failed);
    }

    /// Whether the lookup is over: no bootstrap address is pending and the `k` closest live
    /// candidates have all answered (or every candidate answered or failed), or the query
    /// budget is spent and nothing is in flight.
    pub fn is_done(&self, k: usize) -> bool {
        if self.queries >= MAX_QUERIES && self.in_flight == 0 {
            return true;
        }
        if self
            .seeds
            .iter()
            .any(|(_, s)| matches!(s, State::Fresh | State::Querying))
        {
            return false;
        }
        let mut answered = 0;
        for c in &self.candidates {
            if answered >= k {
                break;
            }
            match c.state {
                State::Failed => {}
                State::Answered { .. } => answered += 1,
                State::Fresh | State::Querying => return false,
            }
        }
        true
    }

    /// How many candidates answered.
    pub fn answered(&self) -> usize {
        self.candidates
            .iter()
            .filter(|c| matches!(c.state, State::Answered { .. }))
            .count()
    }

    /// The `k` closest nodes that answered with a token, and their tokens (where to announce).
    pub fn announce_targets(&self, k: usize) -> Vec<(NodeId, SocketAddr, Vec<u8>)> {
        self.candidates
            .iter()
            .filter_map(|c| match &c.state {
                State::Answered { token: Some(t) } => Some((c.id, c.addr, t.clone())),
                _ => None,
            })
            .take(k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> (NodeId, SocketAddr) {
        let mut id = [0u8; 20];
        id[19] = n;
        (NodeId(id), SocketAddr::from(([127, 0, 0, n], 7000)))
    }

    const OWN: NodeId = NodeId([0xff; 20]);

    #[test]
    fn queries_closest_first_alpha_at_a_time_and_stops_after_the_k_closest_answer() {
        let target = NodeId([0; 20]);
        let mut l = Lookup::new(OWN, target, (1..=6).rev().map(node).collect(), Vec::new());
        let k = 2;
        let q: Vec<_> = std::iter::from_fn(|| l.next_query(k, 3)).collect();
        // Only the two closest may be queried while neither has failed.
        assert_eq!(
            q,
            vec![(Some(node(1).0), node(1).1), (Some(node(2).0), node(2).1)]
        );
        assert!(!l.is_done(k));
        l.on_failure(Some(node(1).0), node(1).1);
        assert_eq!(l.next_query(k, 3), Some((Some(node(3).0), node(3).1)));
        let peers = l.on_response(
            Some(node(2).0),
            node(2).1,
            node(2).0,
            Some(b"tk".to_vec()),
            vec![],
            &[node(9).1, node(9).1],
        );
        assert_eq!(peers, vec![node(9).1], "peers reported once");
        assert!(!l.is_done(k));
        l.on_response(Some(node(3).0), node(3).1, node(3).0, None, vec![], &[]);
        assert!(l.is_done(k));
        assert_eq!(l.answered(), 2);
        assert_eq!(
            l.announce_targets(k),
            vec![(node(2).0, node(2).1, b"tk".to_vec())]
        );
    }

    #[test]
    fn closer_nodes_from_answers_are_queried_next_and_seeds_go_first() {
        let target = NodeId([0; 20]);
        let seed = SocketAddr::from(([127, 0, 0, 200], 1));
        let mut l = Lookup::new(OWN, target, vec![node(50)], vec![seed, seed]);
        assert_eq!(l.next_query(8, 1), Some((None, seed)));
        assert_eq!(l.next_query(8, 1), None, "alpha = 1");
        let seed_id = node(60).0;
        l.on_response(
            None,
            seed,
            seed_id,
            None,
            vec![node(5), node(4), (OWN, node(7).1)],
            &[],
        );
        assert_eq!(l.in_flight, 0);
        assert_eq!(l.next_query(8, 1), Some((Some(node(4).0), node(4).1)));
        l.on_response(Some(node(4).0), node(4).1, node(4).0, None, vec![], &[]);
        assert_eq!(l.next_query(8, 1), Some((Some(node(5).0), node(5).1)));
        l.on_failure(Some(node(5).0), node(5).1);
        assert_eq!(l.next_query(8, 1), Some((Some(node(50).0), node(50).1)));
        l.on_response(Some(node(50).0), node(50).1, node(50).0, None, vec![], &[]);
        assert_eq!(l.next_query(8, 1), None, "the seed answered already");
        assert!(l.is_done(8));

        // A seed whose address is a known node is not queried a second time.
        let mut l = Lookup::new(OWN, target, vec![node(50)], vec![node(50).1]);
        assert_eq!(l.next_query(8, 3), Some((Some(node(50).0), node(50).1)));
        assert_eq!(l.next_query(8, 3), None);
    }

    #[test]
    fn candidates_and_queries_are_bounded() {
        let target = NodeId([0; 20]);
        let mut l = Lookup::new(OWN, target, Vec::new(), Vec::new());
        for round in 0..4u8 {
            let nodes = (0..=255u8).map(|n| {
                let mut id = [round; 20];
                id[19] = n;
                (NodeId(id), SocketAddr::from(([10, round, 0, n], 1)))
            });
            l.add_nodes(nodes);
            assert!(l.candidates.len() <= MAX_CANDIDATES);
        }
        let mut sent = 0;
        while let Some((id, addr)) = l.next_query(usize::MAX, 1) {
            sent += 1;
            l.on_failure(id, addr);
        }
        assert_eq!(sent, MAX_CANDIDATES);
        assert!(l.is_done(8));
    }
}
