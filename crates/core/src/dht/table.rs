//! The routing table of one address family: k-buckets over the XOR distance to our id (BEP 5).
//!
//! Bucket `i` holds the nodes whose id shares exactly `i` leading bits with ours, except the
//! last bucket, which holds every node sharing at least as many; only that last bucket (the one
//! covering our own id) splits when full, so the table describes the space near us in detail
//! and the far halves coarsely.
//!
//! Liveness (time passed in): a node is *good* if it answered one of our queries and we heard
//! from it (an answer or a query) within [`GOOD_FOR`]; *bad* after [`FAILURES_BAD`] queries in
//! a row went unanswered; *questionable* otherwise (including nodes that only ever queried us
//! and nodes loaded from a saved state). Questionable nodes are handed out for pinging; a bad
//! node is replaced by the freshest node of its bucket's replacement cache, or by the next new
//! node that falls in its bucket.
//!
//! Invariants: our own id is never stored; an id appears at most once (nodes and replacement
//! caches together); every bucket holds at most `k` nodes and `k` replacements; there are at
//! most [`ID_BITS`] buckets, so the table never holds more than `2 · 160 · k` entries.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::id::{NodeId, ID_BITS};

/// How long an answer (or a query from a node that once answered) keeps a node good.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// A bucket nothing happened in for this long is refreshed with a lookup.
pub const REFRESH_AFTER: Duration = Duration::from_secs(15 * 60);
/// Unanswered queries in a row that make a node bad.
pub const FAILURES_BAD: u8 = 2;
/// Least time between two pings of the same questionable node.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// How we heard from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// It answered our query: proof that it is reachable at that address.
    Response,
    /// It sent us a query (its source address could be forged, so it proves little).
    Query,
    /// It came from a saved state: nothing heard yet in this session.
    Saved,
}

/// The liveness of a node at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Answered recently.
    Good,
    /// Not heard from for a while, or never answered.
    Questionable,
    /// Failed to answer [`FAILURES_BAD`] queries in a row.
    Bad,
}

#[derive(Clone, Debug)]
struct Entry {
    id: NodeId,
    addr: SocketAddr,
    /// Last answer to one of our queries.
    last_response: Option<Instant>,
    /// Last answer or query.
    last_heard: Option<Instant>,
    failures: u8,
    /// Not to be pinged again before this.
    next_ping: Option<Instant>,
}

impl Entry {
    fn new(id: NodeId, addr: SocketAddr) -> Entry {
        Entry {
            id,
            addr,
            last_response: None,
            last_heard: None,
            failures: 0,
            next_ping: None,
        }
    }

    fn status(&self, now: Instant) -> Status {
        if self.failures >= FAILURES_BAD {
            return Status::Bad;
        }
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < GOOD_FOR);
        if self.failures == 0 && self.last_response.is_some() && recent(self.last_heard) {
            Status::Good
        } else {
            Status::Questionable
        }
    }

    fn record(&mut self, now: Instant, heard: Heard) {
        match heard {
            Heard::Response => {
                self.last_response = Some(now);
                self.last_heard = Some(now);
                self.failures = 0;
                self.next_ping = None;
            }
            Heard::Query => self.last_heard = Some(now),
            Heard::Saved => {}
        }
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: Vec<Entry>,
    /// Last time a node was added to it or answered from it.
    last_changed: Instant,
}

/// One family's routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    own: NodeId,
    k: usize,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table around `own` with buckets of `k` (at least 1) nodes.
    pub fn new(own: NodeId, k: usize, now: Instant) -> RoutingTable {
        RoutingTable {
            own,
            k: k.max(1),
            buckets: vec![Bucket {
                nodes: Vec::new(),
                replacements: Vec::new(),
                last_changed: now,
            }],
        }
    }

    /// The bucket an id falls in (`id` must not be ours).
    fn bucket_of(&self, id: &NodeId) -> usize {
        self.own
            .common_prefix_len(id)
            .min(self.buckets.len().saturating_sub(1))
    }

    /// Nodes in the table (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    /// Whether the table has no node.
    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.nodes.is_empty())
    }

    /// The liveness of the node `id`, if the table holds it.
    #[cfg(test)]
    pub fn status(&self, now: Instant, id: &NodeId) -> Option<Status> {
        let b = self.buckets.get(self.bucket_of(id))?;
        b.nodes.iter().find(|e| e.id == *id).map(|e| e.status(now))
    }

    /// Records that we heard from `id` at `addr`. A node answering from a new address replaces
    /// the entry at that address and moves an entry that is not good; a query never moves or
    /// replaces anything.
    pub fn heard(&mut self, now: Instant, id: NodeId, addr: SocketAddr, heard: Heard) {
        if id == self.own || addr.port() == 0 {
            return;
        }
        if !self.settle_address_conflicts(now, &id, addr, heard) {
            return;
        }
        let mut pending: Option<Entry> = None;
        loop {
            let index = self.bucket_of(&id);
            let splittable = index + 1 == self.buckets.len() && self.buckets.len() < ID_BITS;
            let k = self.k;
            let bucket = &mut self.buckets[index];
            // After the conflicts are settled, an entry with this id has this address.
            if let Some(e) = bucket.nodes.iter_mut().find(|e| e.id == id) {
                e.record(now, heard);
                if heard == Heard::Response {
                    bucket.last_changed = now;
                }
                return;
            }
            let cached = bucket.replacements.iter().position(|e| e.id == id);
            let mut entry = match (pending.take(), cached) {
                (Some(e), _) => e,
                (None, Some(pos)) => bucket.replacements.remove(pos),
                (None, None) => Entry::new(id, addr),
            };
            entry.record(now, heard);
            if bucket.nodes.len() < k {
                bucket.nodes.push(entry);
                bucket.last_changed = now;
                return;
            }
            if splittable {
                pending = Some(entry);
                self.split();
                continue;
            }
            if let Some(bad) = bucket
                .nodes
                .iter()
                .position(|e| e.status(now) == Status::Bad)
            {
                bucket.nodes[bad] = entry;
                bucket.last_changed = now;
                return;
            }
            if bucket.replacements.len() >= k {
                // Keep the cache fresh: the node heard from longest ago goes.
                let oldest = (0..bucket.replacements.len())
                    .min_by_key(|&i| bucket.replacements[i].last_heard);
                if let Some(i) = oldest {
                    bucket.replacements.remove(i);
                }
            }
            bucket.replacements.push(entry);
            return;
        }
    }

    /// Handles another entry holding `addr` or `id` under a different address or id. Returns
    /// whether the new sighting should go on to be recorded.
    fn settle_address_conflicts(
        &mut self,
        now: Instant,
        id: &NodeId,
        addr: SocketAddr,
        heard: Heard,
    ) -> bool {
        for bucket in &mut self.buckets {
            for list in [&mut bucket.nodes, &mut bucket.replacements] {
                if let Some(pos) = list.iter().position(|e| e.addr == addr && e.id != *id) {
                    if heard != Heard::Response {
                        return false;
                    }
                    // The node at this address restarted with a new id.
                    list.remove(pos);
                }
                if let Some(e) = list.iter_mut().find(|e| e.id == *id && e.addr != addr) {
                    if heard != Heard::Response || e.status(now) == Status::Good {
                        return false;
                    }
                    e.addr = addr;
                }
            }
        }
        true
    }

    /// Splits the last bucket: the nodes sharing more bits with us move to a new last bucket.
    fn split(&mut self) {
        let depth = self.buckets.len();
        let own = self.own;
        let Some(last) = self.buckets.last_mut() else {
            return;
        };
        let deeper = |e: &Entry| own.common_prefix_len(&e.id) >= depth;
        let (moved, kept): (Vec<Entry>, Vec<Entry>) = last.nodes.drain(..).partition(deeper);
        last.nodes = kept;
        let (moved_r, kept_r): (Vec<Entry>, Vec<Entry>) =
            last.replacements.drain(..).partition(deeper);
        last.replacements = kept_r;
        let last_changed = last.last_changed;
        self.buckets.push(Bucket {
            nodes: moved,
            replacements: moved_r,
            last_changed,
        });
    }

    /// Records that a query to `id` at `addr` went unanswered. A node that turns bad is
    /// replaced at once by its bucket's freshest answering replacement, if any.
    pub fn failed(&mut self, now: Instant, id: &NodeId, addr: SocketAddr) {
        if *id == self.own {
            return;
        }
        let index = self.bucket_of(id);
        let bucket = &mut self.buckets[index];
        if let Some(pos) = bucket
            .replacements
            .iter()
            .position(|e| e.id == *id && e.addr == addr)
        {
            bucket.replacements.remove(pos);
            return;
        }
        let Some(pos) = bucket
            .nodes
            .iter()
            .position(|e| e.id == *id && e.addr == addr)
        else {
            return;
        };
        let e = &mut bucket.nodes[pos];
        e.failures = e.failures.saturating_add(1);
        if e.status(now) != Status::Bad {
            return;
        }
        let best = (0..bucket.replacements.len())
            .filter(|&i| bucket.replacements[i].last_response.is_some())
            .max_by_key(|&i| bucket.replacements[i].last_response);
        if let Some(i) = best {
            let fresh = bucket.replacements.remove(i);
            bucket.nodes[pos] = fresh;
            bucket.last_changed = now;
        }
    }

    /// Up to `count` nodes that are not bad, closest to `target` first.
    pub fn closest(
        &self,
        now: Instant,
        target: &NodeId,
        count: usize,
    ) -> Vec<(NodeId, SocketAddr)> {
        let mut all: Vec<&Entry> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.status(now) != Status::Bad)
            .collect();
        all.sort_by_key(|e| e.id.distance(target));
        all.into_iter()
            .take(count)
            .map(|e| (e.id, e.addr))
            .collect()
    }

    /// Every good node (for saving the table).
    pub fn good_nodes(&self, now: Instant) -> Vec<(NodeId, SocketAddr)> {
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.status(now) == Status::Good)
            .map(|e| (e.id, e.addr))
            .collect()
    }

    /// Up to `max` questionable nodes due for a ping; each is not handed out again for
    /// [`PING_INTERVAL`].
    pub fn take_nodes_to_ping(&mut self, now: Instant, max: usize) -> Vec<(NodeId, SocketAddr)> {
        let mut out = Vec::new();
        for e in self.buckets.iter_mut().flat_map(|b| b.nodes.iter_mut()) {
            if out.len() >= max {
                break;
            }
            if e.status(now) == Status::Questionable && e.next_ping.is_none_or(|t| t <= now) {
                e.next_ping = now.checked_add(PING_INTERVAL);
                out.push((e.id, e.addr));
            }
        }
        out
    }

    /// Random targets in the buckets nothing happened in for [`REFRESH_AFTER`] (each bucket
    /// is then considered fresh again), at most `max`.
    pub fn take_refresh_targets(
        &mut self,
        now: Instant,
        max: usize,
        rng: &mut impl RngCore,
    ) -> Vec<NodeId> {
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if out.len() >= max {
                break;
            }
            if now.saturating_duration_since(b.last_changed) >= REFRESH_AFTER {
                b.last_changed = now;
                out.push(self.own.random_in_bucket(i, rng));
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
