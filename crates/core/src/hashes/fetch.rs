//! Fetching the piece layers a v2 torrent's info dictionary does not carry (BEP 52 `hash
//! request`s), from several peers, as a sans-IO state machine: [`LayerFetch`].
//!
//! Each missing layer is asked for in requests of at most [`REQUEST_CHUNK`] hashes of the
//! piece layer (the layer padded to a power of two), each with the uncle hashes that prove it
//! up to the file's root. Driving convention: [`LayerFetch::handle_connected`],
//! [`LayerFetch::handle_message`], [`LayerFetch::handle_disconnected`],
//! [`LayerFetch::handle_timeout`] in; [`LayerFetch::poll_timeout`]; [`LayerFetch::poll_event`]
//! out until `None`; the layers with [`LayerFetch::poll_layers`] once [`LayerFetch::is_done`].
//!
//! Policy: one request per peer at a time, spread over the peers; a request unanswered within
//! the timeout, or rejected, goes to another peer (the peer is not asked for it again), and a
//! peer left with nothing it would serve is dropped so the driver can try others; an answer
//! that does not prove its hashes up to the root, or that we did not ask for, drops the peer. Invariants: at most [`MAX_LAYER_PEERS`] peers are tracked; every hash kept was proven
//! against the file's root; the layers handed out were checked once more as whole layers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{root_of_answer, split_hashes, LayerError, PieceHashes, Tree, REQUEST_CHUNK};
use crate::merkle::Hash;
use crate::metainfo::PieceLayer;
use crate::wire::{HashRequest, Message};

/// The driver's name for one connection.
pub type PeerKey = u64;

/// Peers tracked at once; more are ignored.
pub const MAX_LAYER_PEERS: usize = 64;

/// How long a peer may take to answer a hash request.
pub const HASH_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a hybrid torrent waits for the piece layers its metadata lacks before it is
/// checked with SHA-1 alone (its v1 half vouches for every piece: the layers only add the v2
/// check, and a swarm of v1 peers never sends them).
pub const HYBRID_LAYERS_WAIT: Duration = Duration::from_secs(20);

/// Why a peer was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayerFault {
    /// Hashes that do not prove up to the file's root, or the wrong number of them.
    #[error("sent hashes for file {file} that do not match its pieces root")]
    BadHashes { file: usize },
    /// Hashes we did not ask it for.
    #[error("sent hashes we did not ask for")]
    Unsolicited,
    /// It rejected or let time out requests we still need, and nobody is left to ask it for.
    #[error("does not serve the piece layers we need")]
    Refused,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum LayerEvent {
    /// Send `msg` (a hash request) to `peer`.
    Send { peer: PeerKey, msg: Message },
    /// Close the connection to `peer`; the machine has forgotten it.
    Drop { peer: PeerKey, fault: LayerFault },
}

/// One request's worth of a layer.
#[derive(Debug)]
struct Chunk {
    file: usize,
    request: HashRequest,
    /// Pieces of the file (real hashes in the layer).
    pieces: u64,
    state: ChunkState,
    /// Peers that rejected it or let it time out.
    refused: BTreeSet<PeerKey>,
}

#[derive(Debug)]
enum ChunkState {
    Pending,
    Asked { peer: PeerKey, deadline: Instant },
    Done(Vec<Hash>),
}

/// The fetch of every missing piece layer of a torrent (see the module doc).
#[derive(Debug)]
pub struct LayerFetch {
    hashes: PieceHashes,
    chunks: Vec<Chunk>,
    /// Connected peers, and whether a request of ours is with them.
    peers: BTreeMap<PeerKey, bool>,
    events: VecDeque<LayerEvent>,
    /// A finished layer that did not check out as a whole (only possible with colliding
    /// proofs): kept for the driver's error.
    failed: Option<LayerError>,
}

impl LayerFetch {
    /// A fetch of the layers `hashes` is missing.
    pub fn new(hashes: PieceHashes) -> LayerFetch {
        let piece_length = hashes.info.piece_length;
        let piece_level = super::pad_level(piece_length);
        let mut chunks = Vec::new();
        for (file, root, pieces) in hashes.missing_layers() {
            let length = hashes.info.files.get(file).map_or(0, |f| f.length);
            let tree = Tree::of(length, piece_length);
            let levels = tree.height.saturating_sub(piece_level);
            let width = 1u64 << levels.min(63);
            let step = width.min(u64::from(REQUEST_CHUNK));
            let mut index = 0;
            while index < pieces {
                let request = HashRequest {
                    pieces_root: root,
                    base_layer: piece_level,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    length: step as u32,
                    proof_layers: levels.saturating_sub(1),
                };
                chunks.push(Chunk {
                    file,
                    request,
                    pieces,
                    state: ChunkState::Pending,
                    refused: BTreeSet::new(),
                });
                index += step;
            }
        }
        LayerFetch {
            hashes,
            chunks,
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            failed: None,
        }
    }

    /// A peer's handshake is done: it may be asked.
    pub fn handle_connected(&mut self, now: Instant, peer: PeerKey) {
        if self.peers.len() < MAX_LAYER_PEERS {
            self.peers.entry(peer).or_insert(false);
            self.assign(now);
        }
    }

    /// The connection to `peer` closed: its request goes to others.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerKey) {
        self.forget(peer);
        self.assign(now);
    }

    /// A message from `peer`; anything but `hashes` and `hash reject` is ignored.
    pub fn handle_message(&mut self, now: Instant, peer: PeerKey, msg: &Message) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        match msg {
            Message::Hashes { request, hashes } => {
                let Some(pos) = self.asked_of(peer, request) else {
                    // A late answer to a request that timed out is harmless; hashes we never
                    // asked anyone for are not.
                    if !self.chunks.iter().any(|c| c.request == *request) {
                        self.drop_peer(peer, LayerFault::Unsolicited);
                        self.assign(now);
                    }
                    return;
                };
                let hashes = split_hashes(hashes);
                let chunk = &mut self.chunks[pos];
                if root_of_answer(request, &hashes) != Some(request.pieces_root) {
                    let file = chunk.file;
                    chunk.state = ChunkState::Pending;
                    chunk.refused.insert(peer);
                    self.drop_peer(peer, LayerFault::BadHashes { file });
                } else {
                    let real = chunk.pieces.saturating_sub(u64::from(request.index));
                    let mut kept = hashes;
                    kept.truncate(real.min(u64::from(request.length)) as usize);
                    chunk.state = ChunkState::Done(kept);
                    let file = chunk.file;
                    self.peers.insert(peer, false);
                    self.finish_layer(file);
                }
            }
            Message::HashReject(request) => {
                if let Some(pos) = self.asked_of(peer, request) {
                    let chunk = &mut self.chunks[pos];
                    chunk.state = ChunkState::Pending;
                    chunk.refused.insert(peer);
                    self.peers.insert(peer, false);
                }
            }
            _ => return,
        }
        self.assign(now);
    }

    /// Requests that timed out go to other peers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for chunk in &mut self.chunks {
            if let ChunkState::Asked { peer, deadline } = chunk.state {
                if deadline <= now {
                    chunk.state = ChunkState::Pending;
                    chunk.refused.insert(peer);
                    if let Some(busy) = self.peers.get_mut(&peer) {
                        *busy = false;
                    }
                }
            }
        }
        self.assign(now);
    }

    /// The earliest request deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.chunks
            .iter()
            .filter_map(|c| match c.state {
                ChunkState::Asked { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// The next thing to do.
    pub fn poll_event(&mut self) -> Option<LayerEvent> {
        self.events.pop_front()
    }

    /// Whether every layer was fetched (check [`LayerFetch::failure`]).
    pub fn is_done(&self) -> bool {
        self.chunks.is_empty()
    }

    /// A whole layer that failed its final check (see [`LayerFetch::new`]'s invariants).
    pub fn failure(&self) -> Option<&LayerError> {
        self.failed.as_ref()
    }

    /// The verified layers (by file index), once [`LayerFetch::is_done`] without failure.
    pub fn poll_layers(&self) -> Option<BTreeMap<usize, PieceLayer>> {
        (self.is_done() && self.failed.is_none()).then(|| self.hashes.layers())
    }

    fn asked_of(&self, peer: PeerKey, request: &HashRequest) -> Option<usize> {
        self.chunks.iter().position(|c| {
            c.request == *request
                && matches!(c.state, ChunkState::Asked { peer: p, .. } if p == peer)
        })
    }

    fn forget(&mut self, peer: PeerKey) {
        self.peers.remove(&peer);
        for chunk in &mut self.chunks {
            if matches!(chunk.state, ChunkState::Asked { peer: p, .. } if p == peer) {
                chunk.state = ChunkState::Pending;
            }
        }
    }

    fn drop_peer(&mut self, peer: PeerKey, fault: LayerFault) {
        self.forget(peer);
        self.events.push_back(LayerEvent::Drop { peer, fault });
    }

    /// Hands pending chunks to idle peers that have not refused them.
    fn assign(&mut self, now: Instant) {
        for chunk in &mut self.chunks {
            if !matches!(chunk.state, ChunkState::Pending) {
                continue;
            }
            let idle = self
                .peers
                .iter_mut()
                .find(|(p, busy)| !**busy && !chunk.refused.contains(p));
            let Some((&peer, busy)) = idle else {
                continue;
            };
            *busy = true;
            chunk.state = ChunkState::Asked {
                peer,
                deadline: now + HASH_REQUEST_TIMEOUT,
            };
            self.events.push_back(LayerEvent::Send {
                peer,
                msg: Message::HashRequest(chunk.request),
            });
        }
        let useless: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(p, busy)| {
                let refused_needed = self
                    .chunks
                    .iter()
                    .any(|c| !matches!(c.state, ChunkState::Done(_)) && c.refused.contains(p));
                !**busy && refused_needed
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in useless {
            self.drop_peer(peer, LayerFault::Refused);
        }
    }

    /// Moves the layer of `file` into the hashes once all its chunks are in.
    fn finish_layer(&mut self, file: usize) {
        let mut layer = Vec::new();
        for chunk in self.chunks.iter().filter(|c| c.file == file) {
            match &chunk.state {
                ChunkState::Done(hashes) => layer.extend_from_slice(hashes),
                _ => return,
            }
        }
        if let Err(e) = self.hashes.add_layer(file, &layer) {
            self.failed = Some(e);
        }
        self.chunks.retain(|c| c.file != file);
    }
}
