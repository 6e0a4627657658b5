//! Pieces being put together in memory, and the memory budget they live in.
//!
//! A piece enters when the scheduler starts it ([`Assembly::start`]), collects its blocks
//! ([`Assembly::receive`]), leaves for verification when the last block arrives, and is
//! forgotten once the verdict comes back ([`Assembly::verdict`]); its buffer is then recycled
//! for the next piece. Each block is `Missing`, `Requested(n)` (owed by `n` peers) or
//! `Received`.
//!
//! Invariants:
//! - a piece is in `partials` iff it is being assembled, and in `open` iff it also still has
//!   `Missing` blocks; `missing` and `remaining` count its `Missing` and not-`Received` blocks;
//! - `memory` is the sum of the lengths of the pieces being assembled or verified, and stays
//!   within the budget unless a single piece is larger (then one piece at a time);
//! - a piece is verified at most once at a time (`verifying` holds who sent each of its
//!   blocks);
//! - a piece that failed its check and waits for its block hashes (BEP 52) is `held`: its
//!   memory stays counted until it comes back with [`Assembly::resume`] or is dropped;
//! - only its owner sends or owes blocks of an exclusive piece (one started by a peer on
//!   parole); it stops being exclusive once a block of it is released or its owner leaves it
//!   (choked, gone).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Geometry, PeerKey, BLOCK_LEN};
use crate::wire::BlockRef;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockState {
    Missing,
    Requested(u8),
    Received,
}

#[derive(Debug)]
struct Partial {
    buf: Vec<u8>,
    blocks: Vec<BlockState>,
    /// Blocks in state `Missing`.
    missing: u32,
    /// Blocks not yet `Received`.
    remaining: u32,
    /// Who sent each block (`None` until it is received): one key per block of the pieces in
    /// memory, so a piece's block hashes can name the peer behind a bad block (and all of
    /// them are blamed if its hash fails without them).
    senders: Vec<Option<PeerKey>>,
    /// The peer on parole that started it and alone fetches it.
    exclusive: Option<PeerKey>,
}

/// What receiving a block did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// Not needed (duplicate, not being assembled): the bytes are wasted.
    Unneeded,
    /// Stored; `also_owed` other peers were asked for it too (endgame) and should be cancelled.
    Stored { also_owed: bool },
    /// Stored, and it completed the piece, which now awaits verification.
    Completed { data: Vec<u8>, also_owed: bool },
}

/// Who sent an assembled piece, handed back with its verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Senders {
    /// The sender of each block.
    pub(super) blocks: Vec<PeerKey>,
}

impl Senders {
    /// The distinct senders, in block order.
    pub(super) fn contributors(&self) -> Vec<PeerKey> {
        distinct(self.blocks.iter().copied())
    }
}

/// `keys` without repeats, in their first order (a piece has few senders).
pub(super) fn distinct(keys: impl Iterator<Item = PeerKey>) -> Vec<PeerKey> {
    let mut seen = Vec::new();
    for k in keys {
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    seen
}

/// The pieces in memory.
#[derive(Debug)]
pub(super) struct Assembly {
    max_memory: u64,
    /// Ordered, so that endgame picks follow the inputs alone.
    partials: BTreeMap<u32, Partial>,
    /// Partial pieces that still have `Missing` blocks, lowest index first.
    open: BTreeSet<u32>,
    /// Pieces handed out for verification, with the peers that sent their blocks.
    verifying: HashMap<u32, Senders>,
    /// Failed pieces kept (data and all) while their block hashes are looked up.
    held: BTreeSet<u32>,
    memory: u64,
    /// Buffers of verified pieces, reused for new ones (saves zeroing fresh pages).
    spare: Vec<Vec<u8>>,
}

impl Assembly {
    pub(super) fn new(max_memory: u64) -> Assembly {
        Assembly {
            max_memory,
            partials: BTreeMap::new(),
            open: BTreeSet::new(),
            verifying: HashMap::new(),
            held: BTreeSet::new(),
            memory: 0,
            spare: Vec::new(),
        }
    }

    /// Whether a new piece of `piece_len` bytes fits the budget (one piece always does).
    pub(super) fn has_room(&self, piece_len: u32) -> bool {
        self.memory == 0 || self.memory + u64::from(piece_len) <= self.max_memory
    }

    /// Starts assembling piece `index` with every block `Missing`; an `exclusive` piece is
    /// left to that peer alone.
    pub(super) fn start(&mut self, geo: &Geometry, index: u32, exclusive: Option<PeerKey>) {
        let len = geo.piece_len(index);
        let blocks = geo.block_count(index);
        self.memory += u64::from(len);
        // A recycled buffer keeps its old bytes: every block overwrites its own range before
        // the piece is complete, so zeroing it again is wasted work.
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.resize(len as usize, 0);
        self.partials.insert(
            index,
            Partial {
                buf,
                blocks: vec![BlockState::Missing; blocks as usize],
                missing: blocks,
                remaining: blocks,
                senders: vec![None; blocks as usize],
                exclusive,
            },
        );
        self.open.insert(index);
    }

    /// The sender of every block received of the pieces being assembled or verified (repeats
    /// included).
    pub(super) fn senders(&self) -> impl Iterator<Item = PeerKey> + '_ {
        let assembling = self
            .partials
            .values()
            .flat_map(|p| p.senders.iter().flatten());
        let verifying = self.verifying.values().flat_map(|s| s.blocks.iter());
        assembling.chain(verifying).copied()
    }

    /// Pieces awaiting their verdict.
    pub(super) fn verifying_count(&self) -> usize {
        self.verifying.len()
    }

    /// Whether `index` is being assembled, verified or held.
    #[cfg(test)]
    pub(super) fn is_in_progress(&self, index: u32) -> bool {
        self.partials.contains_key(&index)
            || self.verifying.contains_key(&index)
            || self.held.contains(&index)
    }

    /// The open pieces (with `Missing` blocks) any peer may help with, lowest index first.
    pub(super) fn open_pieces(&self) -> impl Iterator<Item = u32> + '_ {
        self.open
            .iter()
            .copied()
            .filter(|i| self.partials.get(i).is_some_and(|p| p.exclusive.is_none()))
    }

    /// Marks the first `Missing` block of piece `index` requested for peer `key`; `None` if it
    /// has none or the piece is another peer's alone.
    pub(super) fn request_missing(
        &mut self,
        geo: &Geometry,
        index: u32,
        key: PeerKey,
    ) -> Option<BlockRef> {
        let partial = self.partials.get_mut(&index)?;
        if partial.missing == 0 || partial.exclusive.is_some_and(|owner| owner != key) {
            return None;
        }
        let b = partial
            .blocks
            .iter()
            .position(|s| *s == BlockState::Missing)?;
        partial.blocks[b] = BlockState::Requested(1);
        partial.missing -= 1;
        if partial.missing == 0 {
            self.open.remove(&index);
        }
        Some(geo.block_ref(index, b as u32))
    }

    /// Endgame: a block of a piece `has` accepts that fewer than `max` peers owe and that
    /// `skip` does not name (the peer already owes it); marked owed once more.
    pub(super) fn request_duplicate(
        &mut self,
        geo: &Geometry,
        max: u8,
        has: impl Fn(u32) -> bool,
        skip: impl Fn(&BlockRef) -> bool,
    ) -> Option<BlockRef> {
        let mut found = None;
        'pieces: for (&index, partial) in self.partials.iter() {
            if !has(index) || partial.exclusive.is_some() {
                continue;
            }
            for (b, state) in partial.blocks.iter().enumerate() {
                if let BlockState::Requested(n) = *state {
                    let block = geo.block_ref(index, b as u32);
                    if n < max && !skip(&block) {
                        found = Some((block, b, n));
                        break 'pieces;
                    }
                }
            }
        }
        let (block, b, n) = found?;
        if let Some(slot) = self
            .partials
            .get_mut(&block.index)
            .and_then(|p| p.blocks.get_mut(b))
        {
            *slot = BlockState::Requested(n + 1);
        }
        Some(block)
    }

    /// One fewer peer owes `block`; with none left it is `Missing` again.
    pub(super) fn release(&mut self, block: BlockRef) {
        let Some(partial) = self.partials.get_mut(&block.index) else {
            return;
        };
        let b = (block.begin / BLOCK_LEN) as usize;
        if let Some(BlockState::Requested(n)) = partial.blocks.get(b).copied() {
            if n <= 1 {
                partial.blocks[b] = BlockState::Missing;
                partial.missing += 1;
                // Its peer gave up on it (choked, left, dropped requests): anyone may finish it.
                partial.exclusive = None;
                self.open.insert(block.index);
            } else {
                partial.blocks[b] = BlockState::Requested(n - 1);
            }
        }
    }

    /// Piece `index` is no longer `key`'s alone: that peer stopped working on it.
    pub(super) fn share(&mut self, index: u32, key: PeerKey) {
        if let Some(p) = self.partials.get_mut(&index) {
            if p.exclusive == Some(key) {
                p.exclusive = None;
            }
        }
    }

    /// Stores a block that `from` sent and we had asked it for (the caller checked that).
    pub(super) fn receive(&mut self, from: PeerKey, block: BlockRef, data: &[u8]) -> Received {
        let Some(partial) = self.partials.get_mut(&block.index) else {
            return Received::Unneeded;
        };
        let b = (block.begin / BLOCK_LEN) as usize;
        let start = block.begin as usize;
        let (Some(BlockState::Requested(n)), Some(dest)) = (
            partial.blocks.get(b).copied(),
            partial.buf.get_mut(start..start + data.len()),
        ) else {
            return Received::Unneeded;
        };
        dest.copy_from_slice(data);
        partial.blocks[b] = BlockState::Received;
        partial.remaining -= 1;
        if let Some(slot) = partial.senders.get_mut(b) {
            *slot = Some(from);
        }
        let also_owed = n > 1;
        if partial.remaining > 0 {
            return Received::Stored { also_owed };
        }
        match self.partials.remove(&block.index) {
            Some(done) => {
                self.open.remove(&block.index);
                let senders = Senders {
                    blocks: done.senders.into_iter().flatten().collect(),
                };
                self.verifying.insert(block.index, senders);
                Received::Completed {
                    data: done.buf,
                    also_owed,
                }
            }
            None => Received::Unneeded,
        }
    }

    /// The verdict on piece `index` is in: frees its memory and returns who sent it (`None` if
    /// it was not being verified). With `hold`, a failed piece keeps its memory instead: it
    /// is held while its block hashes are looked up (see [`Assembly::resume`]).
    pub(super) fn verdict(&mut self, geo: &Geometry, index: u32, hold: bool) -> Option<Senders> {
        let senders = self.verifying.remove(&index)?;
        if hold {
            self.held.insert(index);
        } else {
            self.memory = self.memory.saturating_sub(u64::from(geo.piece_len(index)));
        }
        Some(senders)
    }

    /// A held piece is given up (its block hashes did not come): its memory is freed.
    pub(super) fn drop_held(&mut self, geo: &Geometry, index: u32) {
        if self.held.remove(&index) {
            self.memory = self.memory.saturating_sub(u64::from(geo.piece_len(index)));
        }
    }

    /// A held piece whose bad blocks are known goes back to assembly: its good blocks stay
    /// (with their senders), the `bad` ones are `Missing` again. `buf` is its data.
    pub(super) fn resume(
        &mut self,
        geo: &Geometry,
        index: u32,
        buf: Vec<u8>,
        senders: &[PeerKey],
        bad: &[u32],
    ) {
        if !self.held.remove(&index) {
            return;
        }
        let count = geo.block_count(index) as usize;
        let mut blocks = vec![BlockState::Received; count];
        let mut kept = vec![None; count];
        for (b, slot) in kept.iter_mut().enumerate() {
            if bad.contains(&(b as u32)) {
                blocks[b] = BlockState::Missing;
            } else {
                *slot = senders.get(b).copied();
            }
        }
        let missing = blocks.iter().filter(|s| **s == BlockState::Missing).count() as u32;
        let mut buf = buf;
        buf.resize(geo.piece_len(index) as usize, 0);
        self.partials.insert(
            index,
            Partial {
                buf,
                blocks,
                missing,
                remaining: missing,
                senders: kept,
                exclusive: None,
            },
        );
        if missing > 0 {
            self.open.insert(index);
        }
    }

    /// Keeps a finished piece's buffer for the next piece, within the budget's worth.
    pub(super) fn recycle(&mut self, buf: Vec<u8>, piece_length: u32) {
        let budget = (self.max_memory / u64::from(piece_length.max(1))) as usize;
        if self.spare.len() < budget && buf.capacity() >= piece_length as usize {
            self.spare.push(buf);
        }
    }

    /// Checks the invariants in the module doc (for tests and the simulation).
    #[cfg(test)]
    pub(super) fn check_invariants(&self, geo: &Geometry) -> Result<(), String> {
        let mut memory = 0u64;
        for (&index, p) in &self.partials {
            memory += u64::from(geo.piece_len(index));
            let missing = p
                .blocks
                .iter()
                .filter(|s| **s == BlockState::Missing)
                .count() as u32;
            let remaining = p
                .blocks
                .iter()
                .filter(|s| **s != BlockState::Received)
                .count() as u32;
            if missing != p.missing || remaining != p.remaining {
                return Err(format!("piece {index}: block counts out of step"));
            }
            if (missing > 0) != self.open.contains(&index) {
                return Err(format!("piece {index}: open set out of step"));
            }
            if self.verifying.contains_key(&index) || self.held.contains(&index) {
                return Err(format!("piece {index}: assembled and verified at once"));
            }
            let sent = p.senders.iter().filter(|s| s.is_some()).count() as u32;
            if sent != p.blocks.len() as u32 - p.remaining {
                return Err(format!("piece {index}: senders out of step"));
            }
            if let Some(owner) = p.exclusive {
                let shared = p.senders.iter().flatten().any(|&c| c != owner)
                    || p.blocks
                        .iter()
                        .any(|s| matches!(s, BlockState::Requested(n) if *n > 1));
                if shared {
                    return Err(format!("piece {index} of peer {owner} alone is shared"));
                }
            }
        }
        for &index in self.verifying.keys().chain(&self.held) {
            memory += u64::from(geo.piece_len(index));
        }
        if memory != self.memory {
            return Err(format!("memory {} but pieces hold {memory}", self.memory));
        }
        if self.memory > self.max_memory.max(u64::from(geo.piece_length)) {
            return Err(format!("memory {} over the budget", self.memory));
        }
        Ok(())
    }

    /// Pieces one peer on parole fetches alone: (piece, that peer, whether it has `Missing`
    /// blocks), for the invariant check.
    #[cfg(test)]
    pub(super) fn exclusive_pieces(&self) -> impl Iterator<Item = (u32, PeerKey, bool)> + '_ {
        self.partials
            .iter()
            .filter_map(|(&i, p)| p.exclusive.map(|owner| (i, owner, p.missing > 0)))
    }

    /// How many peers owe each requested block (for the invariant check).
    #[cfg(test)]
    pub(super) fn owed(&self, geo: &Geometry) -> HashMap<BlockRef, u8> {
        let mut out = HashMap::new();
        for (&index, p) in &self.partials {
            for (b, s) in p.blocks.iter().enumerate() {
                if let BlockState::Requested(n) = s {
                    out.insert(geo.block_ref(index, b as u32), *n);
                }
            }
        }
        out
    }
}
