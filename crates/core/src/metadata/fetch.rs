//! The metadata exchange (BEP 9) with several peers at once, as a sans-IO state machine.
//!
//! The driver reports connections ([`MetadataFetch::add_peer`]), every message a peer sends
//! ([`MetadataFetch::handle_message`]), closed connections ([`MetadataFetch::remove_peer`]) and
//! the passing of time ([`MetadataFetch::tick`]); it carries out the [`FetchEvent`]s the machine
//! queues: send a message, or drop a peer for a [`PeerFault`].
//!
//! Policy:
//! - A peer must send its extension handshake within the handshake timeout, offer `ut_metadata`
//!   and announce a `metadata_size` in `1..=MAX_METADATA_SIZE`; otherwise it is dropped.
//! - An attempt collects one metadata of one size: the size of the first ready peer. Pieces
//!   (16 KiB) are spread over every ready peer that announced the same size, at most
//!   `max_requests_per_peer` outstanding per peer. A request unanswered within the request
//!   timeout, a `reject`, a piece we did not ask for, a wrong `total_size` or a piece of the
//!   wrong length drops that peer and frees its pieces for the others.
//! - When the assembled metadata fails the SHA-1 check: if one peer sent every piece, that peer
//!   is dropped; if several did, nobody can be blamed, so from then on every attempt takes all
//!   its pieces from a single peer (the "solo" mode), and a peer whose solo attempt fails is
//!   dropped. Each peer can therefore spoil at most one shared attempt and its own solo one.
//! - When no connected peer can continue an attempt, its pieces are discarded and the next
//!   attempt takes the size of the next ready peer, so one lying peer cannot pin a wrong size.
//!
//! Invariants: every allocation is bounded by [`MAX_METADATA_SIZE`] (checked before the
//! assembler exists); requests for one attempt never overlap; a finished metadata always hashes
//! to the info hash; nothing here reads a clock or touches a socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::types::InfoHash;
use crate::wire::extension::{
    ExtHandshake, MetadataAssembler, MetadataError as PieceError, MetadataMsg, MAX_METADATA_SIZE,
    OUR_UT_METADATA_ID,
};
use crate::wire::message::id::EXTENDED;
use crate::wire::{Message, WireError};

/// Identifies one connection to the machine (chosen by the driver, never reused).
pub type PeerKey = u64;

/// Timeouts and limits of a [`MetadataFetch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchConfig {
    /// How long a peer may take to send its extension handshake after being added.
    pub handshake_timeout: Duration,
    /// How long a peer may take to answer one metadata request.
    pub request_timeout: Duration,
    /// Most requests outstanding to one peer.
    pub max_requests_per_peer: usize,
}

impl Default for FetchConfig {
    /// 10 s for the handshake and for each request; 4 requests per peer.
    fn default() -> FetchConfig {
        FetchConfig {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_requests_per_peer: 4,
        }
    }
}

/// Why a peer was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerFault {
    /// Its handshake did not set the extension-protocol bit.
    #[error("does not support the extension protocol")]
    NoExtensionProtocol,
    /// No extension handshake in time.
    #[error("sent no extension handshake within {0} s")]
    HandshakeTimeout(u64),
    /// An extension handshake we cannot parse.
    #[error("bad extension handshake: {0}")]
    BadHandshake(WireError),
    /// Its extension handshake has no `ut_metadata`.
    #[error("does not support ut_metadata")]
    NoUtMetadata,
    /// Its extension handshake has no usable `metadata_size`.
    #[error("offers no metadata (metadata_size missing, zero or above {MAX_METADATA_SIZE} bytes)")]
    NoMetadata,
    /// A `ut_metadata` message we cannot parse.
    #[error("bad ut_metadata message: {0}")]
    BadMessage(WireError),
    /// It rejected one of our requests.
    #[error("rejected our request for metadata piece {0}")]
    Rejected(u32),
    /// It did not answer a request in time.
    #[error("did not send metadata piece {piece} within {secs} s")]
    RequestTimeout {
        /// The piece requested.
        piece: u32,
        /// The timeout in seconds.
        secs: u64,
    },
    /// It sent a piece we had not requested from it (e.g. an out-of-range index).
    #[error("sent metadata piece {0}, which we did not request from it")]
    Unsolicited(u32),
    /// A piece's `total_size` differs from the size in its handshake.
    #[error("sent total_size {got} after announcing metadata_size {want}")]
    SizeMismatch {
        /// `total_size` in the piece.
        got: u64,
        /// `metadata_size` in its handshake.
        want: u64,
    },
    /// A piece the assembler refused (wrong length).
    #[error("{0}")]
    BadPiece(PieceError),
    /// Metadata that only it sent does not hash to the info hash.
    #[error("sent metadata that does not match the info hash")]
    HashMismatch,
}

impl PeerFault {
    /// Whether the peer may be worth trying again later (it was only slow), as opposed to
    /// having shown that it cannot or will not serve correct metadata.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PeerFault::HandshakeTimeout(_) | PeerFault::RequestTimeout { .. }
        )
    }
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchEvent {
    /// Send `msg` to `peer`.
    Send {
        /// The connection.
        peer: PeerKey,
        /// The message (always `Extended`).
        msg: Message,
    },
    /// Close the connection to `peer`; the machine has already forgotten it.
    Drop {
        /// The connection.
        peer: PeerKey,
        /// Why.
        fault: PeerFault,
    },
}

/// One request sent to a peer.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    piece: u32,
    /// The attempt it belongs to; answers for older attempts are ignored.
    generation: u64,
    deadline: Instant,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    AwaitingHandshake { deadline: Instant },
    Ready { ut_metadata: u8, size: u64 },
}

#[derive(Debug)]
struct Peer {
    phase: Phase,
    /// In the order sent (peers answer in order).
    requests: Vec<Outstanding>,
}

impl Peer {
    fn ready_size(&self) -> Option<u64> {
        match self.phase {
            Phase::Ready { size, .. } => Some(size),
            Phase::AwaitingHandshake { .. } => None,
        }
    }
}

/// One try at collecting the metadata.
#[derive(Debug)]
struct Attempt {
    generation: u64,
    size: u64,
    asm: MetadataAssembler,
    /// Who sent each received piece.
    sources: Vec<Option<PeerKey>>,
    /// Whether each piece is requested (in this attempt) from some peer.
    requested: Vec<bool>,
    /// In solo mode, the only peer asked.
    owner: Option<PeerKey>,
}

impl Attempt {
    fn next_free(&self) -> Option<u32> {
        (0..self.asm.piece_count())
            .find(|&p| !self.asm.has(p) && !self.requested.get(p as usize).copied().unwrap_or(true))
    }

    fn set_requested(&mut self, piece: u32, value: bool) {
        if let Some(slot) = self.requested.get_mut(piece as usize) {
            *slot = value;
        }
    }
}

/// Fetches one torrent's metadata from whichever peers the driver connects; see the module
/// docs for the policy.
#[derive(Debug)]
pub struct MetadataFetch {
    info_hash: InfoHash,
    config: FetchConfig,
    peers: BTreeMap<PeerKey, Peer>,
    attempt: Option<Attempt>,
    generation: u64,
    solo: bool,
    actions: VecDeque<FetchEvent>,
    done: Option<Vec<u8>>,
    finished: bool,
}

impl MetadataFetch {
    /// A fetch for the metadata whose SHA-1 is `info_hash`.
    pub fn new(info_hash: InfoHash, config: FetchConfig) -> MetadataFetch {
        MetadataFetch {
            info_hash,
            config,
            peers: BTreeMap::new(),
            attempt: None,
            generation: 0,
            solo: false,
            actions: VecDeque::new(),
            done: None,
            finished: false,
        }
    }

    /// A connection completed its BitTorrent handshake. The driver sends our extension
    /// handshake itself (right after the BitTorrent handshake, as BEP 10 wants).
    pub fn handle_connected(&mut self, now: Instant, peer: PeerKey, supports_extensions: bool) {
        if self.finished || self.peers.contains_key(&peer) {
            return;
        }
        if !supports_extensions {
            self.actions.push_back(FetchEvent::Drop {
                peer,
                fault: PeerFault::NoExtensionProtocol,
            });
            return;
        }
        let deadline = now + self.config.handshake_timeout;
        self.peers.insert(
            peer,
            Peer {
                phase: Phase::AwaitingHandshake { deadline },
                requests: Vec::new(),
            },
        );
    }

    /// A connection closed; its requests go to other peers.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerKey) {
        if self.forget(peer) {
            self.schedule(now);
        }
    }

    /// A message from `peer`. Only extension messages matter; others are ignored.
    pub fn handle_message(&mut self, now: Instant, peer: PeerKey, msg: &Message) {
        if self.finished || !self.peers.contains_key(&peer) {
            return;
        }
        if let Message::Extended { id, payload } = msg {
            if *id == 0 {
                self.on_ext_handshake(peer, payload);
            } else if *id == OUR_UT_METADATA_ID {
                self.on_metadata_msg(peer, payload);
            }
        }
        self.schedule(now);
    }

    /// Drops peers whose handshake or request timed out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let secs = |d: Duration| d.as_secs();
        let mut late = Vec::new();
        for (&key, peer) in &self.peers {
            if let Phase::AwaitingHandshake { deadline } = peer.phase {
                if deadline <= now {
                    late.push((
                        key,
                        PeerFault::HandshakeTimeout(secs(self.config.handshake_timeout)),
                    ));
                    continue;
                }
            }
            if let Some(r) = peer.requests.iter().find(|r| r.deadline <= now) {
                late.push((
                    key,
                    PeerFault::RequestTimeout {
                        piece: r.piece,
                        secs: secs(self.config.request_timeout),
                    },
                ));
            }
        }
        for (key, fault) in late {
            self.drop_peer(key, fault);
        }
        self.schedule(now);
    }

    /// The earliest time [`MetadataFetch::tick`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.peers
            .values()
            .flat_map(|p| {
                let hs = match p.phase {
                    Phase::AwaitingHandshake { deadline } => Some(deadline),
                    Phase::Ready { .. } => None,
                };
                hs.into_iter().chain(p.requests.iter().map(|r| r.deadline))
            })
            .min()
    }

    /// The next thing the driver must do.
    pub fn poll_event(&mut self) -> Option<FetchEvent> {
        self.actions.pop_front()
    }

    /// Whether the metadata has been collected and verified.
    pub fn is_done(&self) -> bool {
        self.finished
    }

    /// The verified metadata (the raw info dictionary), once; `None` before it is complete.
    pub fn poll_metadata(&mut self) -> Option<Vec<u8>> {
        self.done.take()
    }

    /// Peers currently known to the machine (connected and not dropped).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether a failed shared attempt has made every attempt single-source.
    pub fn is_solo(&self) -> bool {
        self.solo
    }

    fn on_ext_handshake(&mut self, key: PeerKey, payload: &[u8]) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if let Phase::Ready { .. } = peer.phase {
            // BEP 10 allows later handshakes as updates; the first one is all we need.
            return;
        }
        let hs = match ExtHandshake::decode(payload) {
            Ok(hs) => hs,
            Err(e) => return self.drop_peer(key, PeerFault::BadHandshake(e)),
        };
        let Some(ut_metadata) = hs.ut_metadata else {
            return self.drop_peer(key, PeerFault::NoUtMetadata);
        };
        // `decode` already turned sizes above the limit into `None`.
        let Some(size) = hs
            .metadata_size
            .filter(|&s| s > 0 && s <= MAX_METADATA_SIZE)
        else {
            return self.drop_peer(key, PeerFault::NoMetadata);
        };
        peer.phase = Phase::Ready { ut_metadata, size };
    }

    fn on_metadata_msg(&mut self, key: PeerKey, payload: &bytes::Bytes) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let Phase::Ready { ut_metadata, size } = peer.phase else {
            // It cannot know our id without our handshake, and we cannot answer it without
            // its own: ignore.
            return;
        };
        let msg = match MetadataMsg::decode(payload) {
            Ok(msg) => msg,
            // BEP 9: messages of an unknown type are ignored.
            Err(WireError::Malformed {
                id: EXTENDED,
                what: "unknown ut_metadata msg_type",
            }) => return,
            Err(e) => return self.drop_peer(key, PeerFault::BadMessage(e)),
        };
        match msg {
            MetadataMsg::Request { piece } => {
                // We have no metadata to give.
                self.actions.push_back(FetchEvent::Send {
                    peer: key,
                    msg: Message::Extended {
                        id: ut_metadata,
                        payload: MetadataMsg::Reject { piece }.encode().into(),
                    },
                });
            }
            MetadataMsg::Reject { piece } => {
                if peer.requests.iter().any(|r| r.piece == piece) {
                    self.drop_peer(key, PeerFault::Rejected(piece));
                }
            }
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => {
                let Some(pos) = peer.requests.iter().position(|r| r.piece == piece) else {
                    return self.drop_peer(key, PeerFault::Unsolicited(piece));
                };
                let request = peer.requests.remove(pos);
                if total_size != size {
                    return self.drop_peer(
                        key,
                        PeerFault::SizeMismatch {
                            got: total_size,
                            want: size,
                        },
                    );
                }
                let Some(attempt) = self
                    .attempt
                    .as_mut()
                    .filter(|a| a.generation == request.generation)
                else {
                    // The answer to a request of an abandoned attempt.
                    return;
                };
                attempt.set_requested(piece, false);
                if let Err(e) = attempt.asm.insert(piece, data) {
                    return self.drop_peer(key, PeerFault::BadPiece(e));
                }
                if let Some(slot) = attempt.sources.get_mut(piece as usize) {
                    *slot = Some(key);
                }
                if attempt.asm.is_complete() {
                    self.finish_attempt();
                }
            }
        }
    }

    /// Checks a complete attempt against the info hash.
    fn finish_attempt(&mut self) {
        let Some(mut attempt) = self.attempt.take() else {
            return;
        };
        match attempt.asm.finish(self.info_hash) {
            Ok(bytes) => {
                self.done = Some(bytes);
                self.finished = true;
                self.peers.clear();
            }
            Err(_) => {
                let sources: BTreeSet<PeerKey> =
                    attempt.sources.iter().flatten().copied().collect();
                let mut it = sources.iter();
                match (it.next(), it.next()) {
                    (Some(&only), None) => self.drop_peer(only, PeerFault::HashMismatch),
                    _ => self.solo = true,
                }
            }
        }
    }

    /// Removes a peer and frees its requests; returns whether it was known.
    fn forget(&mut self, key: PeerKey) -> bool {
        let Some(peer) = self.peers.remove(&key) else {
            return false;
        };
        if let Some(attempt) = self.attempt.as_mut() {
            for r in &peer.requests {
                if r.generation == attempt.generation {
                    attempt.set_requested(r.piece, false);
                }
            }
            if attempt.owner == Some(key) {
                self.attempt = None;
            }
        }
        true
    }

    fn drop_peer(&mut self, peer: PeerKey, fault: PeerFault) {
        if self.forget(peer) {
            self.actions.push_back(FetchEvent::Drop { peer, fault });
        }
    }

    /// Starts an attempt if needed and hands free pieces to ready peers.
    fn schedule(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        if let Some(a) = &self.attempt {
            let usable = match a.owner {
                Some(owner) => self.peers.contains_key(&owner),
                None => self.peers.values().any(|p| p.ready_size() == Some(a.size)),
            };
            if !usable {
                self.attempt = None;
            }
        }
        if self.attempt.is_none() {
            let Some((key, size)) = self
                .peers
                .iter()
                .find_map(|(&k, p)| p.ready_size().map(|s| (k, s)))
            else {
                return;
            };
            let asm = match MetadataAssembler::new(size) {
                Ok(asm) => asm,
                Err(_) => {
                    // Sizes are checked at the handshake; keep the machine sound regardless.
                    self.drop_peer(key, PeerFault::NoMetadata);
                    return self.schedule(now);
                }
            };
            self.generation += 1;
            let count = asm.piece_count() as usize;
            self.attempt = Some(Attempt {
                generation: self.generation,
                size,
                asm,
                sources: vec![None; count],
                requested: vec![false; count],
                owner: self.solo.then_some(key),
            });
        }
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        for (&key, peer) in self.peers.iter_mut() {
            let Phase::Ready { ut_metadata, size } = peer.phase else {
                continue;
            };
            if size != attempt.size || attempt.owner.is_some_and(|o| o != key) {
                continue;
            }
            while peer.requests.len() < self.config.max_requests_per_peer {
                let Some(piece) = attempt.next_free() else {
                    break;
                };
                attempt.set_requested(piece, true);
                peer.requests.push(Outstanding {
                    piece,
                    generation: attempt.generation,
                    deadline: now + self.config.request_timeout,
                });
                self.actions.push_back(FetchEvent::Send {
                    peer: key,
                    msg: Message::Extended {
                        id: ut_metadata,
                        payload: MetadataMsg::Request { piece }.encode().into(),
                    },
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
