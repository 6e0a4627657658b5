//! Which blocks to ask of which peer.
//!
//! A peer that unchoked us gets its request pipeline topped up, in batches, to its target depth
//! (the bandwidth-delay product of its rate, capped by its `reqq`). Blocks are chosen in this
//! order: pieces this peer already works on (whole-piece affinity keeps pieces from being
//! spread over many slow peers), then a new piece by rarest first if the memory budget allows,
//! then blocks of other open pieces it has, then, in endgame (nothing left unrequested),
//! duplicates of blocks other peers owe. A web seed gets the piece after the last one it
//! started when that one is free, else the first of the free pieces just before the picker's
//! choice (contiguous pieces make one HTTP range). The pieces a peer on parole starts are its
//! alone (nobody helps, and it asks for no duplicates), so that their hash check judges it
//! alone.
//!
//! Invariants: a block is requested from a peer at most once at a time; a new piece is started
//! only within the memory budget; when the budget stops a peer, `memory_starved` is set so the
//! next verdict that frees memory wakes the peers with room.

use std::time::Instant;

use super::assembly::Assembly;
use super::peer::PeerState;
use super::picker::PiecePicker;
use super::{Geometry, PeerKey};
use crate::wire::{BlockRef, Message};

/// Most pieces a web seed's new stretch starts before the picker's choice.
const WEB_SEED_LOOK_BACK: u32 = 256;

/// Most requests held back to be sent together when a peer's pipeline is nearly full.
const REQUEST_BATCH: usize = 32;

#[derive(Debug)]
pub(super) struct Scheduler {
    pub(super) picker: PiecePicker,
    endgame_duplicates: u8,
    /// A peer wanted a new piece but the memory budget was spent.
    pub(super) memory_starved: bool,
}

impl Scheduler {
    pub(super) fn new(picker: PiecePicker, endgame_duplicates: u8) -> Scheduler {
        Scheduler {
            picker,
            endgame_duplicates,
            memory_starved: false,
        }
    }

    /// Tops up `peer`'s request pipeline, queueing `request` messages in its outbox.
    pub(super) fn fill(
        &mut self,
        now: Instant,
        key: PeerKey,
        geo: &Geometry,
        assembly: &mut Assembly,
        peer: &mut PeerState,
    ) {
        if !peer.may_request() || !peer.am_interested {
            return;
        }
        if peer.inflight.is_empty() {
            // Starting afresh: measure the time to the next block from now.
            peer.last_block = now;
        }
        let target = peer.pipeline_target();
        // Top up in batches, not one request per block received: fewer, fuller sends wake
        // both sides less often.
        let batch = (target / 4).clamp(1, REQUEST_BATCH);
        if !peer.inflight.is_empty() && peer.inflight.len() + batch > target {
            return;
        }
        while peer.inflight.len() < target {
            let Some(block) = self.next_block(key, geo, assembly, peer) else {
                break;
            };
            peer.inflight.push_back((block, now));
            peer.outbox.push(Message::Request(block));
        }
    }

    /// Chooses the next block to ask of `peer` and marks it requested.
    fn next_block(
        &mut self,
        key: PeerKey,
        geo: &Geometry,
        assembly: &mut Assembly,
        peer: &mut PeerState,
    ) -> Option<BlockRef> {
        // While it chokes us (fast extension), only its allowed-fast pieces may be asked for.
        let choked = peer.peer_choking;
        // 1. Pieces this peer already works on.
        while let Some(&index) = peer.current.first() {
            if peer.may_request_piece(index) {
                if let Some(block) = assembly.request_missing(geo, index, key) {
                    return Some(block);
                }
            }
            peer.current.remove(0);
        }
        // 2. A new piece, if memory allows: an allowed-fast one while choked, else one the peer
        // suggested, else the rarest.
        if assembly.has_room(geo.piece_length) {
            let pickable =
                |i: &u32| peer.has.get(*i) && !self.picker.is_taken(*i) && self.picker.admits(*i);
            let chosen = if choked {
                peer.allowed_in.iter().copied().find(pickable)
            } else {
                let suggested = peer.suggested.iter().rev().copied().find(pickable);
                let picked = suggested.or_else(|| self.picker.pick(&peer.has));
                if peer.web_seed {
                    // Neighbours merge into one HTTP range: a web seed takes the piece after
                    // its last one when it can, else the start of the free stretch around the
                    // picker's choice (looking back a bounded way).
                    let next = peer.last_started.and_then(|i| i.checked_add(1));
                    next.filter(pickable).or_else(|| {
                        picked.map(|p| {
                            let mut first = p;
                            while p - first < WEB_SEED_LOOK_BACK
                                && first.checked_sub(1).is_some_and(|i| pickable(&i))
                            {
                                first -= 1;
                            }
                            first
                        })
                    })
                } else {
                    picked
                }
            };
            if let Some(index) = chosen {
                self.picker.take(index);
                assembly.start(geo, index, peer.on_parole.then_some(key));
                peer.current.push(index);
                peer.last_started = Some(index);
                return assembly.request_missing(geo, index, key);
            }
        } else if self.picker.has_pickable() {
            self.memory_starved = true;
        }
        // 3. Help with other pieces in progress.
        let open = assembly
            .open_pieces()
            .find(|&i| peer.has.get(i) && peer.may_request_piece(i));
        if let Some(index) = open {
            peer.current.push(index);
            return assembly.request_missing(geo, index, key);
        }
        // 4. Endgame: nothing left unrequested; ask for blocks others owe us too.
        if !choked && !self.picker.has_pickable() && !peer.on_parole {
            let inflight = &peer.inflight;
            let has = &peer.has;
            return assembly.request_duplicate(
                geo,
                self.endgame_duplicates,
                |i| has.get(i),
                |b| inflight.iter().any(|(x, _)| x == b),
            );
        }
        None
    }

    /// Peers serve requests in order: a request older than `lost_after` that later blocks
    /// overtook was dropped by the peer. It goes back to the pool for whoever asks next.
    /// Returns whether any was.
    pub(super) fn reclaim_lost(
        now: Instant,
        lost_after: std::time::Duration,
        assembly: &mut Assembly,
        peer: &mut PeerState,
    ) -> bool {
        let mut any = false;
        while let Some(&(block, sent)) = peer.inflight.front() {
            let overtaken = peer.last_block > sent;
            if !overtaken || now.saturating_duration_since(sent) < lost_after {
                break;
            }
            peer.inflight.pop_front();
            assembly.release(block);
            any = true;
        }
        any
    }

    /// Returns every block `peer` (`key`) owes us to the pool, and the pieces it had alone.
    pub(super) fn release_all(assembly: &mut Assembly, key: PeerKey, peer: &mut PeerState) {
        for (block, _) in std::mem::take(&mut peer.inflight) {
            assembly.release(block);
        }
        for index in peer.current.drain(..) {
            assembly.share(index, key);
        }
    }

    /// The peer choked us: blocks it may still send (allowed-fast pieces, fast extension) stay
    /// owed; the others go back to the pool (a fast peer rejects them; a plain one drops them).
    pub(super) fn release_choked(assembly: &mut Assembly, key: PeerKey, peer: &mut PeerState) {
        if !peer.fast || peer.allowed_in.is_empty() {
            Self::release_all(assembly, key, peer);
            return;
        }
        let allowed = &peer.allowed_in;
        let mut kept = std::collections::VecDeque::new();
        for (block, sent) in std::mem::take(&mut peer.inflight) {
            if allowed.contains(&block.index) {
                kept.push_back((block, sent));
            } else {
                assembly.release(block);
            }
        }
        peer.inflight = kept;
        // The pieces it no longer works on are no longer its alone (see `release_all`).
        for index in std::mem::take(&mut peer.current) {
            if allowed.contains(&index) {
                peer.current.push(index);
            } else {
                assembly.share(index, key);
            }
        }
    }

    /// The peer rejected our request for `block` (fast extension): it goes back to the pool.
    pub(super) fn on_reject(assembly: &mut Assembly, peer: &mut PeerState, block: BlockRef) {
        if let Some(pos) = peer.inflight.iter().position(|(b, _)| *b == block) {
            peer.inflight.remove(pos);
            assembly.release(block);
        }
    }
}
