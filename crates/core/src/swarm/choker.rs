//! The choker: which interested peers we upload to.
//!
//! Every [`RECHOKE_INTERVAL`], interested peers are ranked by how fast they send to us (while
//! downloading) or how fast we send to them (once seeding); the best `upload_slots - 1` are
//! unchoked, plus one optimistic unchoke drawn at random from the rest, rotated every
//! [`OPTIMISTIC_INTERVAL`]. Among equals (most often peers at rate zero) the one that held a
//! slot least recently goes first, newcomers before all, so that peers that say they are
//! interested and then ask for nothing cannot keep the slots from those that would. Between
//! rechokes, a peer that becomes interested while a slot is free is unchoked at once, and a
//! slot given up (its peer lost interest or left) goes at once to the interested peer that
//! waited longest, rather than at the next rechoke.
//!
//! Invariants: a rechoke leaves at most `upload_slots` interested peers unchoked; the timer
//! runs only while some peer is interested.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::peer::PeerState;
use super::PeerKey;
use crate::wire::Message;

/// Time between rechokes.
pub const RECHOKE_INTERVAL: Duration = Duration::from_secs(10);
/// Time between rotations of the optimistic unchoke.
pub const OPTIMISTIC_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(super) struct Choker {
    slots: usize,
    /// The peer holding the optimistic slot.
    optimistic: Option<PeerKey>,
    /// When to rechoke next; `None` while nobody is interested.
    next_rechoke: Option<Instant>,
    /// When the optimistic slot moves on.
    next_rotation: Option<Instant>,
}

impl Choker {
    pub(super) fn new(slots: usize) -> Choker {
        Choker {
            slots,
            optimistic: None,
            next_rechoke: None,
            next_rotation: None,
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.next_rechoke
    }

    /// `peer` said it is interested: unchoked at once if a slot is free (then `true`); the
    /// rechoke timer starts if it was idle.
    pub(super) fn on_interested(
        &mut self,
        now: Instant,
        peer: &mut PeerState,
        others: &BTreeMap<PeerKey, PeerState>,
    ) -> bool {
        if self.next_rechoke.is_none() {
            self.next_rechoke = Some(now + RECHOKE_INTERVAL);
        }
        let busy = others
            .values()
            .filter(|p| !p.am_choking && p.peer_interested)
            .count();
        if peer.am_choking && busy < self.slots {
            peer.am_choking = false;
            peer.last_unchoked = Some(now);
            peer.outbox.push(Message::Unchoke);
            return true;
        }
        false
    }

    /// A peer lost interest or left between rechokes: the slots now free go to the choked interested
    /// peers that held one least recently (newcomers first), who are added to `woken`.
    pub(super) fn fill_free_slots(
        &mut self,
        now: Instant,
        peers: &mut BTreeMap<PeerKey, PeerState>,
        woken: &mut BTreeSet<PeerKey>,
    ) {
        let busy = peers
            .values()
            .filter(|p| !p.am_choking && p.peer_interested)
            .count();
        let free = self.slots.saturating_sub(busy);
        if free == 0 {
            return;
        }
        let mut waiting: Vec<(Option<Instant>, PeerKey)> = peers
            .iter()
            .filter(|(_, p)| p.am_choking && p.peer_interested)
            .map(|(&k, p)| (p.last_unchoked, k))
            .collect();
        // `None` (never held a slot) sorts first, then the longest wait, then the key.
        waiting.sort_unstable();
        for (_, k) in waiting.into_iter().take(free) {
            if let Some(peer) = peers.get_mut(&k) {
                peer.am_choking = false;
                peer.last_unchoked = Some(now);
                peer.outbox.push(Message::Unchoke);
                woken.insert(k);
            }
        }
    }

    /// The peer holding the optimistic slot.
    #[cfg(test)]
    pub(super) fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// Forgets a peer that left.
    pub(super) fn remove_peer(&mut self, key: PeerKey) {
        if self.optimistic == Some(key) {
            self.optimistic = None;
        }
    }

    /// Rechokes if it is time; peers whose choke state changed are added to `woken`.
    pub(super) fn handle_timeout(
        &mut self,
        now: Instant,
        seeding: bool,
        peers: &mut BTreeMap<PeerKey, PeerState>,
        rng: &mut StdRng,
        woken: &mut BTreeSet<PeerKey>,
    ) {
        if self.next_rechoke.is_none_or(|t| now < t) {
            return;
        }
        let rotate = self.next_rotation.is_none_or(|t| now >= t);
        if rotate {
            self.next_rotation = Some(now + OPTIMISTIC_INTERVAL);
        }
        self.rechoke(now, seeding, rotate, peers, rng, woken);
        let anyone_interested = peers.values().any(|p| p.peer_interested);
        self.next_rechoke = anyone_interested.then_some(now + RECHOKE_INTERVAL);
    }

    fn rechoke(
        &mut self,
        now: Instant,
        seeding: bool,
        rotate_optimistic: bool,
        peers: &mut BTreeMap<PeerKey, PeerState>,
        rng: &mut StdRng,
        woken: &mut BTreeSet<PeerKey>,
    ) {
        let mut ranked: Vec<(PeerKey, f64, Option<Instant>)> = peers
            .iter()
            .filter(|(_, p)| p.peer_interested)
            .map(|(&k, p)| {
                let rate = if seeding { p.upload_rate } else { p.rate };
                (k, rate, p.last_unchoked)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        let regular = self.slots.saturating_sub(1);
        let mut unchoke: HashSet<PeerKey> = ranked.iter().take(regular).map(|r| r.0).collect();
        let rest: Vec<PeerKey> = ranked.iter().skip(regular).map(|r| r.0).collect();
        let keep = self
            .optimistic
            .filter(|k| rest.contains(k) && !rotate_optimistic);
        self.optimistic = keep.or_else(|| rest.choose(rng).copied());
        unchoke.extend(self.optimistic);
        for (&k, peer) in peers.iter_mut() {
            let want_unchoked = unchoke.contains(&k);
            if want_unchoked {
                peer.last_unchoked = Some(now);
            }
            if want_unchoked && peer.am_choking {
                peer.am_choking = false;
                peer.outbox.push(Message::Unchoke);
                woken.insert(k);
            } else if !want_unchoked && !peer.am_choking {
                peer.am_choking = true;
                peer.outbox.push(Message::Choke);
                peer.choke_uploads();
                woken.insert(k);
            }
        }
    }
}
