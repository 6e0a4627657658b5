//! Pieces of a v2 torrent that failed their check, held while a peer tells us their block
//! hashes (BEP 52 `hash request` at base layer 0), so that the peer behind a bad block is
//! known for certain and only the bad blocks are fetched again (as libtorrent does).
//!
//! An answer is believed only if it hashes to the piece's entry in the piece layer, which is
//! itself checked against the file's root from the info dictionary: whoever answers, a lie
//! cannot pass (and marks the liar), so any v2 peer that has the piece may be asked.
//!
//! Invariants: at most [`MAX_BLOCK_CHECKS`] pieces are held per swarm (their memory stays
//! within the swarm's piece budget, counted by the assembly); each is asked of one peer at a
//! time and of at most [`MAX_ASKED`] peers in all, within one deadline
//! ([`BLOCK_HASHES_TIMEOUT`]) for every attempt; a held piece is always in
//! `Assembly::held`.

use std::time::{Duration, Instant};

use super::assembly::{distinct, Senders};
use super::PeerKey;
use crate::wire::HashRequest;

/// Failed pieces whose block hashes are looked up at once; a piece failing while that many
/// are held is treated as a piece without v2 hashes would be.
pub const MAX_BLOCK_CHECKS: usize = 2;
/// Peers asked in turn for one piece's block hashes (after a reject, a lie or a departure).
pub const MAX_ASKED: usize = 3;
/// How long the lookups of one piece may take in all before the piece is given up as a whole.
pub const BLOCK_HASHES_TIMEOUT: Duration = Duration::from_secs(10);

/// One failed piece waiting for its block hashes.
#[derive(Debug)]
pub(super) struct BlockCheck {
    pub(super) index: u32,
    /// The piece's data as it failed.
    pub(super) buf: Vec<u8>,
    /// Who sent each of its blocks.
    pub(super) senders: Senders,
    /// Our request (see `PieceHashes::block_request`).
    pub(super) request: HashRequest,
    /// Peers asked so far; the last one is the one we wait for.
    pub(super) asked: Vec<PeerKey>,
    pub(super) deadline: Instant,
}

impl BlockCheck {
    /// Whether `key`'s answer to `request` is the one this check waits for.
    pub(super) fn awaits(&self, key: PeerKey, request: &HashRequest) -> bool {
        self.asked.last() == Some(&key) && self.request == *request
    }

    /// The distinct senders of the `bad` blocks, in block order.
    pub(super) fn guilty(&self, bad: &[u32]) -> Vec<PeerKey> {
        distinct(
            bad.iter()
                .filter_map(|&b| self.senders.blocks.get(b as usize).copied()),
        )
    }
}
