//! One torrent's exchange with its peers, as a sans-IO state machine: [`Swarm`].
//!
//! It holds every connected peer's pieces and choke state, the blocks asked of each, the pieces
//! being assembled in memory, and which pieces are still wanted. It follows the crate's driving
//! convention:
//! - inputs: [`Swarm::handle_connected`], [`Swarm::handle_message`],
//!   [`Swarm::handle_disconnected`], [`Swarm::handle_verdict`] (a piece's hash check came back),
//!   [`Swarm::handle_uploaded`], and time through [`Swarm::handle_timeout`];
//! - deadlines: [`Swarm::poll_timeout`];
//! - outputs: [`Swarm::poll_transmit`] (messages for one peer), [`Swarm::poll_upload`] (blocks
//!   one peer asked for, to read from disk and send), [`Swarm::poll_hash_jobs`] (BEP 52 block
//!   hashes one peer asked for, to compute from the pieces on disk and report with
//!   [`Swarm::handle_hash_answer`]) and [`Swarm::poll_event`] (pieces to verify, peers to wake,
//!   disconnect, or ban once gone).
//!
//! Its parts: [`scheduler`] (which block to ask of whom), [`assembly`] (pieces in memory and
//! the memory budget, and who sent each block), [`blockcheck`] (failed v2 pieces held while a
//! peer's block hashes name the bad blocks and their senders), [`choker`] (whom we upload
//! to), [`peer`] (per-peer state and timers), [`picker`] (rarest first) and [`bitfield`].
//!
//! Invariants:
//! - a block is owed by `n` peers (in their `inflight` queues) iff it is `Requested(n)`;
//! - a piece is taken in the picker iff it is being assembled, verified, held for its block
//!   hashes, had, or not wanted;
//! - piece-buffer memory stays within `Config::max_piece_memory` (one piece at a time if a
//!   piece is larger);
//! - nothing is marked had before its hash was verified;
//! - a piece left to one peer on parole (see [`Swarm::handle_verdict`]) is owed by that peer
//!   alone, and is one it is still working on;
//! - a peer the swarm disconnects is forgotten at once; the driver is told with
//!   [`SwarmEvent::Disconnect`] and any later input about it is ignored;
//! - a peer that left is remembered (its key and hash failures only) while a piece being
//!   assembled, verified or held for its block hashes holds a block it sent, and no longer:
//!   a verdict may still prove it sent bad data ([`SwarmEvent::Banned`]).

mod assembly;
pub mod bitfield;
mod blockcheck;
mod choker;
mod peer;
pub mod picker;
mod scheduler;
#[cfg(test)]
mod tests;

use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use self::assembly::{Assembly, Received, Senders};
use self::blockcheck::BlockCheck;
use self::choker::Choker;
use self::peer::PeerState;
use self::scheduler::Scheduler;
use crate::hashes::{BlockHashJob, PieceHashes};
use crate::wire::extension::{answer_metadata, OUR_REQQ, OUR_UT_METADATA_ID, OUR_UT_PEX_ID};
use crate::wire::pex::{PexFlags, PexMessage, PexPeer};
use crate::wire::{BlockRef, ExtHandshake, Message, MetadataMsg};

pub use self::bitfield::{Bitfield, BitfieldError};
pub use self::blockcheck::{BLOCK_HASHES_TIMEOUT, MAX_ASKED, MAX_BLOCK_CHECKS};
pub use self::choker::{OPTIMISTIC_INTERVAL, RECHOKE_INTERVAL};
pub use self::peer::{PeerFeatures, DEFAULT_PEER_REQQ, MAX_FAST_PIECES, RATE_WINDOW};
pub use self::picker::PiecePicker;

/// Size of a requested block (the last block of the last piece may be shorter).
pub const BLOCK_LEN: u32 = 16 * 1024;

/// Largest block a peer may request from us.
pub const MAX_REQUEST_LEN: u32 = 128 * 1024;

/// Pieces a seed suggests to a fast peer when it learns what the peer has.
const SUGGESTIONS: usize = 4;
/// Time between two `ut_pex` messages to one peer (BEP 11: at most one a minute); a peer's
/// messages closer together than half of it are ignored.
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// Delay of the first `ut_pex` message after a peer's extension handshake (so that it lists
/// the peers connected meanwhile).
pub const PEX_FIRST_DELAY: Duration = Duration::from_secs(2);
/// Peers taken from one received `ut_pex` message.
pub const MAX_PEX_LEARNED: usize = 50;

/// The driver's name for one connection (never reused within a swarm).
pub type PeerKey = u64;

/// Tunables of a swarm.
#[derive(Clone, Debug)]
pub struct Config {
    /// Upper bound on bytes of piece buffers held (assembling plus awaiting verification).
    pub max_piece_memory: u64,
    /// Requests kept in flight per peer before its rate is known, and the floor afterwards.
    pub min_requests: u32,
    /// Ceiling of requests in flight per peer.
    pub max_requests: u32,
    /// The pipeline holds this much of the peer's measured rate (bandwidth-delay product). The
    /// rate is itself bounded by the pipeline (at most a full pipeline per round trip), so this
    /// must exceed the round trips of real peers, or the rate measured with `n` requests out
    /// asks for fewer than `n`: a fixed point below what the peer can send. Transmission 3.00
    /// over TCP answers in more than 500 ms; libtorrent's default, 3 s, covers it.
    pub request_queue_time: Duration,
    /// A keep-alive is sent after this long without sending anything.
    pub keepalive_interval: Duration,
    /// A peer that sends nothing for this long is dropped.
    pub idle_timeout: Duration,
    /// A peer that owes us blocks but sends none for this long is dropped (its blocks go to
    /// others).
    pub request_timeout: Duration,
    /// A request this old that later blocks overtook is taken as dropped and asked again.
    pub lost_request_timeout: Duration,
    /// A peer that alone sent this many pieces that failed their hash check is dropped.
    pub max_hash_failures: u32,
    /// How many peers may be asked for the same block in endgame mode.
    pub endgame_duplicates: u8,
    /// Peers we upload to at once (one of them the optimistic unchoke).
    pub upload_slots: usize,
    /// Requests from one peer queued for upload; more are dropped.
    pub max_upload_queue: usize,
    /// Exchange peer addresses with peers (BEP 11); off for private torrents.
    pub pex: bool,
    /// The port we accept peers on, told to peers in our extension handshake.
    pub listen_port: Option<u16>,
    /// Start pieces in index order rather than rarest first.
    pub sequential: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_piece_memory: 32 * 1024 * 1024,
            min_requests: 64,
            max_requests: 1024,
            request_queue_time: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(150),
            request_timeout: Duration::from_secs(20),
            lost_request_timeout: Duration::from_secs(5),
            max_hash_failures: 3,
            endgame_duplicates: 2,
            upload_slots: 8,
            max_upload_queue: OUR_REQQ as usize,
            pex: true,
            listen_port: None,
            sequential: false,
        }
    }
}

/// Why the swarm disconnected a peer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error("peer timed out: {0}")]
    Timeout(&'static str),
    #[error("peer sent {0} pieces that failed their hash check")]
    BadData(u32),
    /// Its blocks of this piece do not match their v2 block hashes (proven, so at once).
    #[error("peer sent blocks of piece {0} that do not match their v2 hashes")]
    BadBlocks(u32),
    /// Its answer to our request for block hashes does not hash to the piece layer.
    #[error("peer sent block hashes that do not match the piece layer")]
    BadHashes,
}

impl PeerError {
    /// Whether the peer is proven to have sent bad data (its address is banned for it).
    pub fn is_bad_data(&self) -> bool {
        matches!(
            self,
            PeerError::BadData(_) | PeerError::BadBlocks(_) | PeerError::BadHashes
        )
    }
}

/// An assembled piece awaiting hash verification.
#[derive(Debug)]
pub struct CompletedPiece {
    pub index: u32,
    pub data: Vec<u8>,
}

/// What the driver must do, from [`Swarm::poll_event`].
#[derive(Debug)]
pub enum SwarmEvent {
    /// Check this piece's hash (away from the network path), store it if good, and report
    /// with [`Swarm::handle_verdict`].
    Verify(CompletedPiece),
    /// Close this connection; the swarm has already forgotten the peer.
    Disconnect { peer: PeerKey, reason: PeerError },
    /// A peer that already left is proven to have sent bad data (the verdict or the block
    /// hashes came after it went): the driver bans its address, as it does for a
    /// [`SwarmEvent::Disconnect`] for bad data. Each key is named at most once, and only while
    /// the swarm remembers it ([`Swarm::remembers`]).
    Banned { peer: PeerKey, reason: PeerError },
    /// This peer has something to send because of another peer's event or a timer: its
    /// driver should call [`Swarm::poll_transmit`].
    Wake(PeerKey),
    /// Peers learned through peer exchange (at most [`MAX_PEX_LEARNED`] per message), to dial.
    PeersFound(Vec<SocketAddr>),
}

/// Counters of a swarm, for progress displays and tracker announces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    /// Bytes of wanted pieces still to verify.
    pub bytes_left: u64,
    /// Payload bytes in pieces verified during this session.
    pub verified_bytes: u64,
    /// Payload bytes received that were not needed (duplicates, unrequested, bad pieces).
    pub wasted_bytes: u64,
    /// Payload bytes received in blocks this session, needed or not (the download rate's
    /// measure).
    pub received_bytes: u64,
    /// Connections that delivered at least one block we kept (a peer that reconnects counts
    /// again).
    pub peers_used: usize,
    /// Payload bytes sent to peers.
    pub uploaded_bytes: u64,
    /// Connected peers.
    pub peers: usize,
    /// Pieces handed out for verification and not reported back yet.
    pub verifying: usize,
}

/// Piece and block sizes of a torrent.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    piece_length: u32,
    total_length: u64,
    piece_count: u32,
}

impl Geometry {
    /// Length of piece `index` (the last one may be shorter).
    fn piece_len(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.piece_length);
        let len = self.total_length.saturating_sub(start);
        len.min(u64::from(self.piece_length)) as u32
    }

    fn block_count(&self, index: u32) -> u32 {
        self.piece_len(index).div_ceil(BLOCK_LEN)
    }

    fn block_ref(&self, index: u32, block: u32) -> BlockRef {
        let begin = block * BLOCK_LEN;
        BlockRef {
            index,
            begin,
            length: self.piece_len(index).saturating_sub(begin).min(BLOCK_LEN),
        }
    }
}

/// One torrent's peers and pieces.
#[derive(Debug)]
pub struct Swarm {
    config: Config,
    geo: Geometry,
    have: Bitfield,
    wanted: Bitfield,
    /// Wanted pieces not had yet.
    wanted_left: u32,
    stats: SwarmStats,
    scheduler: Scheduler,
    assembly: Assembly,
    choker: Choker,
    /// Ordered, as `to_wake`: no per-process hash order may reach the outputs.
    peers: BTreeMap<PeerKey, PeerState>,
    /// Assembled pieces not yet handed out.
    completed: VecDeque<CompletedPiece>,
    /// Peers learned through peer exchange, not yet handed out.
    found: Vec<Vec<SocketAddr>>,
    disconnects: VecDeque<(PeerKey, PeerError)>,
    to_wake: BTreeSet<PeerKey>,
    /// When the peers' rates and timers are next looked at; `None` without peers.
    next_tick: Option<Instant>,
    rng: StdRng,
    /// The raw info dictionary, served to peers that ask for it with `ut_metadata`.
    info_bytes: Option<Arc<[u8]>>,
    /// The v2 hashes that answer peers' BEP 52 hash requests (none: every request is
    /// rejected) and tell the bad blocks of a failed piece.
    piece_hashes: Option<Arc<PieceHashes>>,
    /// Failed pieces held while their block hashes are looked up (at most
    /// [`MAX_BLOCK_CHECKS`]), oldest first.
    block_checks: Vec<BlockCheck>,
    /// Peers gone while a piece in memory (being assembled, verified, or held for its block
    /// hashes) holds a block they sent, with their hash failures: its verdict may still prove
    /// them guilty. A key is forgotten once no such piece holds its blocks, or once named, so
    /// there is at most one per block in memory (about `max_piece_memory / BLOCK_LEN`: 2,048
    /// by default), and none once the pieces in memory are judged.
    departed: BTreeMap<PeerKey, u32>,
    /// Departed peers proven to have sent bad data, not yet handed out (each key once).
    banned: VecDeque<(PeerKey, PeerError)>,
}

/// `hashes` answers (BEP 52) queued or being computed for one peer at most; further requests
/// are rejected.
const MAX_QUEUED_HASH_ANSWERS: usize = 4;

impl Swarm {
    /// A swarm for the `wanted` pieces of a torrent, of which `have` are present and verified.
    /// `seed` fixes every random choice (piece order, optimistic unchokes).
    pub fn new(
        piece_length: u32,
        total_length: u64,
        have: Bitfield,
        wanted: Bitfield,
        config: Config,
        seed: u64,
    ) -> Swarm {
        let piece_count = have.len();
        let geo = Geometry {
            piece_length,
            total_length,
            piece_count,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut picker = PiecePicker::new(piece_count, &mut rng);
        picker.set_sequential(config.sequential);
        let mut wanted_left = 0;
        let mut bytes_left = 0;
        for i in 0..piece_count {
            if have.get(i) || !wanted.get(i) {
                picker.take(i);
            } else {
                wanted_left += 1;
                bytes_left += u64::from(geo.piece_len(i));
            }
        }
        Swarm {
            scheduler: Scheduler::new(picker, config.endgame_duplicates),
            assembly: Assembly::new(config.max_piece_memory),
            choker: Choker::new(config.upload_slots),
            config,
            geo,
            have,
            wanted,
            wanted_left,
            stats: SwarmStats {
                bytes_left,
                ..SwarmStats::default()
            },
            peers: BTreeMap::new(),
            completed: VecDeque::new(),
            found: Vec::new(),
            disconnects: VecDeque::new(),
            to_wake: BTreeSet::new(),
            next_tick: None,
            rng,
            info_bytes: None,
            piece_hashes: None,
            block_checks: Vec::new(),
            departed: BTreeMap::new(),
            banned: VecDeque::new(),
        }
    }

    /// The raw info dictionary, served to peers that ask for it (BEP 9).
    pub fn set_metadata(&mut self, info_bytes: Arc<[u8]>) {
        self.info_bytes = Some(info_bytes);
    }

    /// Sets the priority window for streaming: new pieces are started only inside `window`,
    /// lowest index first (pieces already started finish wherever they are), so a reader
    /// that falls behind stops new requests. `None` lifts it. Peers are woken to ask for the
    /// pieces a moved window opened.
    pub fn set_window(&mut self, window: Option<core::ops::Range<u32>>) {
        self.scheduler.picker.set_window(window);
        self.to_wake.extend(self.peers.keys().copied());
    }

    /// The hashes that answer peers' BEP 52 hash requests (a v2 or hybrid torrent).
    pub fn set_piece_hashes(&mut self, hashes: Arc<PieceHashes>) {
        self.piece_hashes = Some(hashes);
    }

    // ---- queries ----

    /// Whether every wanted piece is present and verified.
    pub fn is_done(&self) -> bool {
        self.wanted_left == 0
    }

    /// The pieces we have (verified).
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// The counters.
    pub fn stats(&self) -> SwarmStats {
        SwarmStats {
            peers: self.peers.len(),
            verifying: self.assembly.verifying_count(),
            ..self.stats
        }
    }

    /// Length of piece `index` (the last one may be shorter).
    pub fn piece_len(&self, index: u32) -> u32 {
        self.geo.piece_len(index)
    }

    /// Whether `key`, a peer that left, may still be named by a [`SwarmEvent::Banned`] (a
    /// piece in memory holds a block it sent). Drivers that map keys to addresses keep the
    /// address of a departed key while this holds, and no longer.
    pub fn remembers(&self, key: PeerKey) -> bool {
        self.departed.contains_key(&key)
    }

    // ---- inputs ----

    /// A peer finished the BitTorrent handshake. Our extension handshake (if it speaks BEP 10)
    /// and our bitfield (if we have anything) are queued for it, in that order.
    pub fn handle_connected(&mut self, now: Instant, key: PeerKey, features: PeerFeatures) {
        let mut peer = PeerState::new(now, self.geo.piece_count, &self.config);
        peer.fast = features.fast;
        peer.outgoing = features.outgoing;
        peer.web_seed = features.web_seed;
        // Every peer of a v2-only torrent speaks v2; a hybrid's only if it connected with the
        // v2 hash or both sides offered the upgrade.
        let v2_only = self.piece_hashes.as_ref().is_some_and(|h| h.is_v2());
        peer.v2 = !features.web_seed && (features.v2 || v2_only);
        // A peer we dialled accepts connections where we reached it; an incoming one says
        // where in its extension handshake.
        peer.pex_addr = features.addr.filter(|_| features.outgoing);
        peer.remote = features.addr;
        if features.extensions {
            let metadata_size = self.info_bytes.as_ref().map(|b| b.len() as u64);
            let ours =
                ExtHandshake::session(metadata_size, self.config.pex, self.config.listen_port);
            peer.outbox.push(Message::Extended {
                id: 0,
                payload: ours.encode().into(),
            });
        }
        let count = self.have.count();
        if peer.fast && count == self.geo.piece_count {
            peer.outbox.push(Message::HaveAll);
        } else if peer.fast && count == 0 {
            peer.outbox.push(Message::HaveNone);
        } else if count > 0 {
            peer.outbox.push(Message::Bitfield(Bytes::copy_from_slice(
                self.have.as_bytes(),
            )));
        }
        if peer.fast {
            // BEP 6: pieces it may request even while we choke it (those we have).
            for index in features.allowed_fast {
                if self.have.get(index) && peer.allowed_out.len() < peer::MAX_FAST_PIECES {
                    peer.allowed_out.push(index);
                    peer.outbox.push(Message::AllowedFast(index));
                }
            }
        }
        let deadline = peer.next_deadline(&self.config);
        // A reused key: the old connection's state goes first (and the key now names this
        // peer, not one that left).
        self.forget(key);
        self.departed.remove(&key);
        self.peers.insert(key, peer);
        self.arm_tick(deadline);
    }

    /// A message from `key`. A protocol violation disconnects the peer.
    pub fn handle_message(&mut self, now: Instant, key: PeerKey, msg: Message) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        // A peer we upload to that loses interest gives up its slot.
        let slot_given_up = msg == Message::NotInterested && !peer.am_choking;
        // Answers to our requests for block hashes may drop peers, this one too: they are
        // looked at once it is back among the peers.
        let hash_answer =
            matches!(msg, Message::Hashes { .. } | Message::HashReject(_)).then(|| msg.clone());
        let result = self.on_message(now, key, &mut peer, msg);
        let active = peer.is_active();
        self.peers.insert(key, peer);
        if slot_given_up {
            self.choker
                .fill_free_slots(now, &mut self.peers, &mut self.to_wake);
        }
        match result {
            Ok(()) if active => self.arm_tick(now + RATE_WINDOW),
            Ok(()) => {}
            Err(reason) => self.disconnect(key, reason),
        }
        if let Some(answer) = hash_answer {
            self.on_block_hashes(key, answer);
        }
    }

    /// The connection to `key` closed (or the driver closed it after a
    /// [`SwarmEvent::Disconnect`]): its blocks go back to the pool.
    pub fn handle_disconnected(&mut self, key: PeerKey) {
        if self.forget(key) {
            // Its blocks are free again: others may want them.
            self.to_wake.extend(self.peers.keys().copied());
        }
    }

    /// The hash check of piece `index` came back: `good` pieces are stored and announced, bad
    /// ones requested again. `buf` is the piece's buffer, kept for the next piece.
    ///
    /// A bad piece with v2 hashes (more than one block) is first held while a v2 peer that has
    /// it tells us its block hashes ([`blockcheck`]): every peer that sent a bad block is then
    /// dropped at once (the hashes prove it), the good blocks are kept and only the bad ones
    /// asked for again. This is done even when one peer sent the whole piece: the proof costs
    /// one small request, and saves fetching its good blocks again. Without v2 hashes, a
    /// peer to ask, a free slot, or an answer in time, a bad piece from one peer counts
    /// against it; one that several peers sent puts them all on parole instead (the pieces
    /// they start are theirs alone until one passes), so that a liar cannot get honest peers
    /// dropped.
    ///
    /// A sender that left before the verdict (or the block hashes) came is judged by the same
    /// rules, with the hash failures it had: found guilty, it is named with
    /// [`SwarmEvent::Banned`] so that the driver bans its address.
    pub fn handle_verdict(&mut self, now: Instant, index: u32, good: bool, buf: Vec<u8>) {
        let request = (!good && self.block_checks.len() < MAX_BLOCK_CHECKS)
            .then(|| self.piece_hashes.as_ref()?.block_request(index))
            .flatten()
            .filter(|_| buf.len() == self.geo.piece_len(index) as usize);
        let Some(senders) = self.assembly.verdict(&self.geo, index, request.is_some()) else {
            self.assembly.recycle(buf, self.geo.piece_length);
            return;
        };
        if std::mem::take(&mut self.scheduler.memory_starved) {
            // Memory is free again: peers idle for lack of it need a nudge (no block will
            // arrive to wake them).
            let room = self.peers.iter().filter(|(_, p)| {
                !p.peer_choking && p.am_interested && p.inflight.len() < p.pipeline_target()
            });
            self.to_wake.extend(room.map(|(&k, _)| k));
        }
        if good {
            self.assembly.recycle(buf, self.geo.piece_length);
            if let [k] = senders.contributors()[..] {
                if let Some(peer) = self.peers.get_mut(&k) {
                    peer.on_parole = false;
                }
            }
            self.on_piece_verified(index);
            self.prune_departed();
            return;
        }
        match request {
            Some(request) => {
                let deadline = now + BLOCK_HASHES_TIMEOUT;
                self.arm_tick(deadline);
                self.ask_block_hashes(BlockCheck {
                    index,
                    buf,
                    senders,
                    request,
                    asked: Vec::new(),
                    deadline,
                });
            }
            None => {
                self.assembly.recycle(buf, self.geo.piece_length);
                self.piece_failed(index, senders);
            }
        }
        self.arm_tick(now + RATE_WINDOW);
    }

    /// A bad piece whose bad blocks are not known: it is fetched again whole, and its
    /// contributors blamed as [`Swarm::handle_verdict`] says.
    fn piece_failed(&mut self, index: u32, senders: Senders) {
        let len = u64::from(self.geo.piece_len(index));
        self.stats.wasted_bytes += len;
        self.scheduler.picker.release(index);
        let contributors = senders.contributors();
        let shared = contributors.len() > 1;
        let max = self.config.max_hash_failures;
        for k in contributors {
            if let Some(peer) = self.peers.get_mut(&k) {
                if shared {
                    peer.on_parole = true;
                    continue;
                }
                peer.hash_failures += 1;
                if peer.hash_failures >= max {
                    let failures = peer.hash_failures;
                    self.disconnect(k, PeerError::BadData(failures));
                }
                continue;
            }
            // Gone before its verdict: a piece it sent alone counts as it would if it were
            // here (parole means nothing to a peer that left).
            let Some(failures) = self.departed.get_mut(&k).filter(|_| !shared) else {
                continue;
            };
            *failures += 1;
            if *failures >= max {
                let failures = *failures;
                self.departed.remove(&k);
                self.banned.push_back((k, PeerError::BadData(failures)));
            }
        }
        self.prune_departed();
        // Peers idle for lack of work may now fetch this piece again.
        self.to_wake.extend(self.peers.keys().copied());
    }

    /// Asks the next peer for `check`'s block hashes: a v2 peer that has the piece and was
    /// not asked yet, those that sent none of it first (then by key, so runs replay). With
    /// none left, or [`MAX_ASKED`] asked, the piece fails as one without v2 hashes does.
    fn ask_block_hashes(&mut self, mut check: BlockCheck) {
        let index = check.index;
        let next = self
            .peers
            .iter()
            .filter(|(k, p)| p.v2 && p.has.get(index) && !check.asked.contains(k))
            .map(|(&k, _)| (check.senders.blocks.contains(&k), k))
            .min()
            .map(|(_, k)| k)
            .filter(|_| check.asked.len() < MAX_ASKED);
        let Some(key) = next else {
            self.give_up_block_check(check);
            return;
        };
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.outbox.push(Message::HashRequest(check.request));
            self.to_wake.insert(key);
        }
        check.asked.push(key);
        self.block_checks.push(check);
    }

    fn give_up_block_check(&mut self, check: BlockCheck) {
        self.assembly.drop_held(&self.geo, check.index);
        self.assembly.recycle(check.buf, self.geo.piece_length);
        self.piece_failed(check.index, check.senders);
    }

    /// `key`'s `hashes` or `hash reject` message: if it answers a block check, the piece's bad
    /// blocks are found and their senders dropped, or the next peer is asked.
    fn on_block_hashes(&mut self, key: PeerKey, msg: Message) {
        let (request, hashes) = match msg {
            Message::Hashes { request, hashes } => (request, Some(hashes)),
            Message::HashReject(request) => (request, None),
            _ => return,
        };
        let Some(pos) = self
            .block_checks
            .iter()
            .position(|c| c.awaits(key, &request))
        else {
            // Stray (or late, after another peer answered): ignored.
            return;
        };
        let check = self.block_checks.remove(pos);
        let Some(hashes) = hashes else {
            self.ask_block_hashes(check);
            return;
        };
        let bad = self
            .piece_hashes
            .as_ref()
            .and_then(|h| h.bad_blocks(check.index, &check.buf, &request, &hashes));
        match bad {
            None => {
                self.disconnect(key, PeerError::BadHashes);
                self.ask_block_hashes(check);
            }
            // Every hashed byte is right (a hybrid's SHA-1 failed on padding, or its halves
            // disagree): nobody can be named.
            Some(bad) if bad.is_empty() => self.give_up_block_check(check),
            Some(bad) => {
                let guilty = check.guilty(&bad);
                let wasted: u64 = bad
                    .iter()
                    .map(|&b| u64::from(self.geo.block_ref(check.index, b).length))
                    .sum();
                self.stats.wasted_bytes += wasted;
                self.assembly.resume(
                    &self.geo,
                    check.index,
                    check.buf,
                    &check.senders.blocks,
                    &bad,
                );
                for k in guilty {
                    let reason = PeerError::BadBlocks(check.index);
                    if self.departed.remove(&k).is_some() {
                        self.banned.push_back((k, reason));
                    } else {
                        self.disconnect(k, reason);
                    }
                }
                self.prune_departed();
                self.to_wake.extend(self.peers.keys().copied());
            }
        }
    }

    /// The driver sent `bytes` of block data to `key` (after [`Swarm::poll_upload`]).
    pub fn handle_uploaded(&mut self, now: Instant, key: PeerKey, bytes: u64) {
        self.stats.uploaded_bytes += bytes;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.on_uploaded(bytes);
            self.arm_tick(now + RATE_WINDOW);
        }
    }

    /// Time passed: rates, pipeline sizes, keep-alives, lost requests, timeouts, rechokes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let seeding = self.is_done();
        self.choker.handle_timeout(
            now,
            seeding,
            &mut self.peers,
            &mut self.rng,
            &mut self.to_wake,
        );
        if self.next_tick.is_none_or(|t| now < t) {
            return;
        }
        while let Some(pos) = self.block_checks.iter().position(|c| c.deadline <= now) {
            let check = self.block_checks.remove(pos);
            self.give_up_block_check(check);
        }
        let mut timed_out = Vec::new();
        let mut active = false;
        let mut reclaimed = false;
        let mut next_deadline: Option<Instant> = None;
        let pex_due = self
            .peers
            .values()
            .any(|p| p.next_pex.is_some_and(|t| t <= now));
        let reachable = if pex_due { self.pex_list() } else { Vec::new() };
        for (&key, peer) in self.peers.iter_mut() {
            if peer.next_pex.is_some_and(|t| t <= now) {
                peer.next_pex = Some(now + PEX_INTERVAL);
                if Self::queue_pex(peer, &reachable) {
                    self.to_wake.insert(key);
                }
            }
            peer.sample_rates(now, &self.config);
            // A web seed fetches requests in order and rejects those it gives up.
            reclaimed |= !peer.web_seed
                && Scheduler::reclaim_lost(
                    now,
                    self.config.lost_request_timeout,
                    &mut self.assembly,
                    peer,
                );
            if now.saturating_duration_since(peer.last_received) >= self.config.idle_timeout {
                timed_out.push((key, "nothing received"));
                continue;
            }
            if !peer.inflight.is_empty()
                && now.saturating_duration_since(peer.last_block) >= self.config.request_timeout
            {
                timed_out.push((key, "requested blocks never came"));
                continue;
            }
            if now.saturating_duration_since(peer.last_sent) >= self.config.keepalive_interval
                && peer.outbox.is_empty()
            {
                peer.outbox.push(Message::KeepAlive);
                self.to_wake.insert(key);
            }
            active |= peer.is_active();
            let d = peer.next_deadline(&self.config);
            next_deadline = Some(next_deadline.map_or(d, |n| n.min(d)));
        }
        for (key, why) in timed_out {
            self.disconnect(key, PeerError::Timeout(why));
        }
        if reclaimed {
            // Reclaimed blocks may be wanted by peers with room.
            self.to_wake.extend(self.peers.keys().copied());
        }
        self.next_tick = if active {
            Some(now + RATE_WINDOW)
        } else {
            next_deadline
        };
        if let Some(d) = self.block_checks.iter().map(|c| c.deadline).min() {
            self.arm_tick(d);
        }
    }

    // ---- outputs ----

    /// When [`Swarm::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tick, self.choker.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Tops up `key`'s request pipeline and appends every message queued for it to `out`.
    pub fn poll_transmit(&mut self, now: Instant, key: PeerKey, out: &mut Vec<Message>) {
        let done = self.is_done();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !done {
            self.scheduler
                .fill(now, key, &self.geo, &mut self.assembly, peer);
        }
        if !peer.outbox.is_empty() {
            peer.last_sent = now;
            out.append(&mut peer.outbox);
        }
        if peer.is_active() {
            self.arm_tick(now + RATE_WINDOW);
        }
    }

    /// Takes the blocks `key` asked for, oldest first, up to `max_bytes` of block data (at
    /// least one block); the driver reads them from disk, sends them as `piece` messages and
    /// reports with [`Swarm::handle_uploaded`]. Returns whether more requests are waiting.
    pub fn poll_upload(&mut self, key: PeerKey, max_bytes: u64, out: &mut Vec<BlockRef>) -> bool {
        let Some(peer) = self.peers.get_mut(&key) else {
            return false;
        };
        let mut bytes = 0u64;
        while let Some(&block) = peer.uploads.front() {
            if bytes > 0 && bytes + u64::from(block.length) > max_bytes {
                break;
            }
            bytes += u64::from(block.length);
            peer.uploads.pop_front();
            out.push(block);
        }
        !peer.uploads.is_empty()
    }

    /// Hands `key`'s requests for block hashes to the driver (see [`BlockHashJob`]): it reads
    /// their pieces, away from the network path, and reports each answer with
    /// [`Swarm::handle_hash_answer`].
    pub fn poll_hash_jobs(&mut self, key: PeerKey, out: &mut Vec<BlockHashJob>) {
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.hash_jobs_running += peer.hash_jobs.len();
            out.extend(peer.hash_jobs.drain(..));
        }
    }

    /// The answer to a job from [`Swarm::poll_hash_jobs`] ([`BlockHashJob::finish`]), queued
    /// for `key` (dropped if it left meanwhile).
    pub fn handle_hash_answer(&mut self, key: PeerKey, answer: Message) {
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.hash_jobs_running = peer.hash_jobs_running.saturating_sub(1);
            peer.outbox.push(answer);
        }
    }

    /// The next thing the driver must do: pieces to verify first, then disconnects, bans,
    /// peers found, then wake-ups.
    pub fn poll_event(&mut self) -> Option<SwarmEvent> {
        if let Some(piece) = self.completed.pop_front() {
            return Some(SwarmEvent::Verify(piece));
        }
        if let Some((peer, reason)) = self.disconnects.pop_front() {
            return Some(SwarmEvent::Disconnect { peer, reason });
        }
        if let Some((peer, reason)) = self.banned.pop_front() {
            return Some(SwarmEvent::Banned { peer, reason });
        }
        if let Some(peers) = self.found.pop() {
            return Some(SwarmEvent::PeersFound(peers));
        }
        let key = *self.to_wake.iter().next()?;
        self.to_wake.remove(&key);
        Some(SwarmEvent::Wake(key))
    }

    // ---- internals ----

    /// Every connected peer's address as peer exchange tells it, with what we know of it.
    fn pex_list(&self) -> Vec<PexPeer> {
        self.peers
            .values()
            .filter_map(|p| {
                let addr = p.pex_addr?;
                let mut flags = PexFlags::default();
                if p.has.is_full() {
                    flags = flags | PexFlags::SEED;
                }
                if p.outgoing {
                    flags = flags | PexFlags::OUTGOING;
                }
                Some(PexPeer { addr, flags })
            })
            .collect()
    }

    /// Queues a `ut_pex` message to `peer`: the reachable peers it was not told about yet and
    /// those gone since (each list bounded). Returns whether anything was queued.
    fn queue_pex(peer: &mut PeerState, reachable: &[PexPeer]) -> bool {
        let Some(id) = peer.ut_pex else {
            return false;
        };
        let own = peer.pex_addr;
        let current: BTreeSet<SocketAddr> = reachable
            .iter()
            .map(|p| p.addr)
            .filter(|a| Some(*a) != own)
            .collect();
        let added: Vec<PexPeer> = reachable
            .iter()
            .filter(|p| Some(p.addr) != own && !peer.pex_sent.contains(&p.addr))
            .take(crate::wire::pex::MAX_ADDED)
            .copied()
            .collect();
        let dropped: Vec<SocketAddr> = peer
            .pex_sent
            .iter()
            .filter(|a| !current.contains(a))
            .take(crate::wire::pex::MAX_DROPPED)
            .copied()
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return false;
        }
        for a in &dropped {
            peer.pex_sent.remove(a);
        }
        peer.pex_sent.extend(added.iter().map(|p| p.addr));
        let Ok(payload) = (PexMessage { added, dropped }).encode() else {
            return false;
        };
        peer.outbox.push(Message::Extended {
            id,
            payload: payload.into(),
        });
        true
    }

    /// Makes the tick due by `at` at the latest.
    fn arm_tick(&mut self, at: Instant) {
        self.next_tick = Some(self.next_tick.map_or(at, |t| t.min(at)));
    }

    /// Removes a peer and queues its disconnection.
    fn disconnect(&mut self, key: PeerKey, reason: PeerError) {
        if self.forget(key) {
            if reason.is_bad_data() {
                // The driver bans it for this disconnection: nothing left to prove (and a
                // block check given up as it left may have named it already).
                self.departed.remove(&key);
                self.banned.retain(|(k, _)| *k != key);
            }
            self.disconnects.push_back((key, reason));
            self.to_wake.extend(self.peers.keys().copied());
        }
    }

    /// Whether a piece in memory (being assembled, verified, or held) holds a block `key` sent.
    fn holds_blocks_of(&self, key: PeerKey) -> bool {
        self.assembly.senders().any(|k| k == key)
            || (self.block_checks.iter()).any(|c| c.senders.blocks.contains(&key))
    }

    /// Forgets the departed peers no piece in memory holds a block of any more.
    fn prune_departed(&mut self) {
        if self.departed.is_empty() {
            return;
        }
        let held: BTreeSet<PeerKey> = (self.assembly.senders())
            .chain((self.block_checks.iter()).flat_map(|c| c.senders.blocks.iter().copied()))
            .filter(|k| self.departed.contains_key(k))
            .collect();
        self.departed.retain(|k, _| held.contains(k));
    }

    /// Forgets a peer: its availability, its owed blocks, its slot. Returns whether it was
    /// known.
    fn forget(&mut self, key: PeerKey) -> bool {
        let Some(mut peer) = self.peers.remove(&key) else {
            return false;
        };
        self.scheduler.picker.remove_peer(&peer.has);
        Scheduler::release_all(&mut self.assembly, key, &mut peer);
        self.choker.remove_peer(key);
        self.to_wake.remove(&key);
        // Remembered first: a block check given up below may already judge it.
        if self.holds_blocks_of(key) {
            self.departed.insert(key, peer.hash_failures);
        }
        // Block checks waiting on it ask someone else.
        while let Some(pos) = self
            .block_checks
            .iter()
            .position(|c| c.asked.last() == Some(&key))
        {
            let check = self.block_checks.remove(pos);
            self.ask_block_hashes(check);
        }
        if !peer.am_choking && peer.peer_interested {
            // Its upload slot is free. No input time comes with a disconnection: the last
            // exchange with it stands in (it only orders who waited longest).
            let at = peer.last_received.max(peer.last_sent);
            self.choker
                .fill_free_slots(at, &mut self.peers, &mut self.to_wake);
        }
        if self.peers.is_empty() {
            self.next_tick = None;
        }
        true
    }

    /// Whether we still need piece `index`.
    fn needs(&self, index: u32) -> bool {
        self.wanted.get(index) && !self.have.get(index)
    }

    fn become_interested(&self, peer: &mut PeerState) {
        if !peer.am_interested && !self.is_done() {
            peer.am_interested = true;
            peer.outbox.push(Message::Interested);
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        key: PeerKey,
        peer: &mut PeerState,
        msg: Message,
    ) -> Result<(), PeerError> {
        peer.last_received = now;
        match msg {
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => {}
            // BEP 52: answers to block checks, looked at by `handle_message` once the peer is
            // back among the peers (layers are fetched before the swarm starts, see
            // `hashes::fetch`).
            Message::Hashes { .. } | Message::HashReject(_) => {}
            Message::HashRequest(request) => {
                // An answer can be 256 KiB for a 49-byte request, and block hashes cost reading
                // the pieces: a peer that asks faster than it reads is refused past a few
                // answers queued or being computed, as reject_request refuses blocks (a
                // reject is no larger than its request).
                let queued = (peer.outbox.iter())
                    .filter(|m| matches!(m, Message::Hashes { .. }))
                    .count()
                    + peer.hash_jobs.len()
                    + peer.hash_jobs_running;
                let hashes = self
                    .piece_hashes
                    .as_ref()
                    .filter(|_| queued < MAX_QUEUED_HASH_ANSWERS);
                match hashes.map(|h| (h, h.block_job(&request))) {
                    // Block hashes come from the data: only pieces we have can vouch for them.
                    Some((_, Some(job))) if job.pieces().all(|i| self.have.get(i)) => {
                        peer.hash_jobs.push_back(job);
                    }
                    Some((_, Some(_))) | None => peer.outbox.push(Message::HashReject(request)),
                    Some((hashes, None)) => peer.outbox.push(hashes.answer(&request)),
                }
            }
            Message::Extended { id, payload } => self.on_extended(now, peer, id, &payload),
            Message::Choke => {
                peer.peer_choking = true;
                // Without the fast extension a choke discards every pending request; with it,
                // requests for allowed-fast pieces stand.
                Scheduler::release_choked(&mut self.assembly, key, peer);
            }
            Message::Unchoke => peer.peer_choking = false,
            Message::Interested => {
                peer.peer_interested = true;
                self.choker.on_interested(now, peer, &self.peers);
            }
            Message::NotInterested => peer.peer_interested = false,
            Message::Have(index) => {
                if index >= self.geo.piece_count {
                    return Err(PeerError::Protocol(format!(
                        "have for piece {index} of {}",
                        self.geo.piece_count
                    )));
                }
                if peer.has.set(index) {
                    self.scheduler.picker.inc(index);
                    if self.needs(index) {
                        self.become_interested(peer);
                    }
                }
            }
            Message::Bitfield(bytes) => {
                // BEP 3 puts the bitfield first, but real clients (aria2) also send one later
                // to say what they have: accept it as a replacement.
                let has = Bitfield::from_bytes(&bytes, self.geo.piece_count)
                    .map_err(|e| PeerError::Protocol(e.to_string()))?;
                self.set_pieces(peer, has);
            }
            Message::HaveAll | Message::HaveNone => {
                if !peer.fast {
                    return Err(PeerError::Protocol(
                        "have all/none without the fast extension".into(),
                    ));
                }
                let has = if matches!(msg, Message::HaveAll) {
                    Bitfield::full(self.geo.piece_count)
                } else {
                    Bitfield::new(self.geo.piece_count)
                };
                self.set_pieces(peer, has);
            }
            Message::Request(block) => {
                self.check_request(block)?;
                let allowed_while_choked = peer.fast && peer.allowed_out.contains(&block.index);
                let serve = self.have.get(block.index)
                    && (!peer.am_choking || allowed_while_choked)
                    && peer.uploads.len() < self.config.max_upload_queue;
                if serve {
                    peer.uploads.push_back(block);
                } else if peer.fast {
                    // BEP 6: a request we will not serve is rejected, not dropped.
                    peer.outbox.push(Message::Reject(block));
                } else if !self.have.get(block.index) {
                    return Err(PeerError::Protocol(format!(
                        "request {block:?}: we do not have that piece"
                    )));
                }
                // Otherwise (choked, or past the queue) a plain peer's request is dropped: it
                // was sent before our choke arrived.
            }
            Message::Reject(block) => {
                if peer.fast {
                    Scheduler::on_reject(&mut self.assembly, peer, block);
                }
            }
            Message::AllowedFast(index) => {
                if peer.fast && index < self.geo.piece_count {
                    PeerState::remember(&mut peer.allowed_in, index);
                    if self.needs(index) && peer.has.get(index) {
                        self.become_interested(peer);
                    }
                }
            }
            Message::Suggest(index) => {
                if index < self.geo.piece_count {
                    PeerState::remember(&mut peer.suggested, index);
                }
            }
            Message::Cancel(block) => peer.uploads.retain(|b| *b != block),
            Message::Piece { index, begin, data } => {
                self.on_block(now, key, peer, index, begin, data);
            }
        }
        Ok(())
    }

    fn on_block(
        &mut self,
        now: Instant,
        key: PeerKey,
        peer: &mut PeerState,
        index: u32,
        begin: u32,
        data: Bytes,
    ) {
        let len = data.len() as u64;
        self.stats.received_bytes += len;
        let Some(pos) = peer.inflight.iter().position(|(b, _)| {
            b.index == index && b.begin == begin && b.length as usize == data.len()
        }) else {
            // Not asked of this peer (or already cancelled): drop it.
            self.stats.wasted_bytes += len;
            return;
        };
        let block = peer.inflight.remove(pos).map_or(
            BlockRef {
                index,
                begin,
                length: len as u32,
            },
            |(b, _)| b,
        );
        peer.on_block(now, len);
        let also_owed = match self.assembly.receive(key, block, &data) {
            Received::Unneeded => {
                self.stats.wasted_bytes += len;
                return;
            }
            Received::Stored { also_owed } => also_owed,
            Received::Completed { data, also_owed } => {
                self.completed.push_back(CompletedPiece { index, data });
                also_owed
            }
        };
        if !std::mem::replace(&mut peer.delivered, true) {
            self.stats.peers_used += 1;
        }
        if also_owed {
            // Endgame: others were asked for this block too; cancel theirs.
            for (&other_key, other) in self.peers.iter_mut() {
                if let Some(p) = other.inflight.iter().position(|(b, _)| *b == block) {
                    other.inflight.remove(p);
                    other.outbox.push(Message::Cancel(block));
                    self.to_wake.insert(other_key);
                }
            }
        }
    }

    fn on_piece_verified(&mut self, index: u32) {
        if self.have.get(index) {
            return;
        }
        self.have.set(index);
        let len = u64::from(self.geo.piece_len(index));
        if self.wanted.get(index) {
            self.wanted_left = self.wanted_left.saturating_sub(1);
            self.stats.bytes_left = self.stats.bytes_left.saturating_sub(len);
        }
        self.stats.verified_bytes += len;
        let done = self.is_done();
        for (&k, peer) in self.peers.iter_mut() {
            if !peer.has.get(index) {
                peer.outbox.push(Message::Have(index));
                self.to_wake.insert(k);
            }
            if done && peer.am_interested {
                peer.am_interested = false;
                peer.outbox.push(Message::NotInterested);
                self.to_wake.insert(k);
            }
        }
    }

    /// A request must name a block inside a piece of the torrent, at most [`MAX_REQUEST_LEN`]
    /// long (whether we have the piece is the caller's question).
    fn check_request(&self, block: BlockRef) -> Result<(), PeerError> {
        let bad = |why: &str| Err(PeerError::Protocol(format!("request {block:?}: {why}")));
        if block.index >= self.geo.piece_count {
            return bad("no such piece");
        }
        if block.length == 0 || block.length > MAX_REQUEST_LEN {
            return bad("bad length");
        }
        let end = u64::from(block.begin) + u64::from(block.length);
        if end > u64::from(self.geo.piece_len(block.index)) {
            return bad("past the end of the piece");
        }
        Ok(())
    }

    /// The peer told us all it has (a bitfield, or BEP 6 have all/none): availability and
    /// interest follow. A seed suggests to a fast peer the pieces rarest among its peers that it
    /// lacks, to spread them.
    fn set_pieces(&mut self, peer: &mut PeerState, has: Bitfield) {
        self.scheduler.picker.remove_peer(&peer.has);
        self.scheduler.picker.add_peer(&has);
        peer.has = has;
        if peer.has.iter_set().any(|i| self.needs(i)) {
            self.become_interested(peer);
        }
        if peer.fast && self.is_done() {
            let picker = &self.scheduler.picker;
            let mut lacking: Vec<u32> =
                self.have.iter_set().filter(|&i| !peer.has.get(i)).collect();
            lacking.sort_by_key(|&i| (picker.availability(i), i));
            for index in lacking.into_iter().take(SUGGESTIONS) {
                peer.outbox.push(Message::Suggest(index));
            }
        }
    }

    /// BEP 10/9: records the peer's extension handshake (its `ut_metadata` id and `reqq`) and
    /// answers its metadata requests. Malformed extension messages are ignored: they are
    /// optional.
    fn on_extended(&mut self, now: Instant, peer: &mut PeerState, id: u8, payload: &Bytes) {
        if id == 0 {
            if let Ok(hs) = ExtHandshake::decode(payload) {
                peer.ut_metadata = hs.ut_metadata.filter(|&i| i != 0);
                if let Some(n) = hs.reqq {
                    // Transmission rejects the request that would fill its queue: it holds at
                    // most `reqq - 1`.
                    peer.max_outstanding = n.saturating_sub(1).max(1);
                }
                if let (Some(port), Some(remote), false) =
                    (hs.listen_port, peer.remote, peer.outgoing)
                {
                    peer.pex_addr = Some(SocketAddr::new(remote.ip(), port));
                }
                if self.config.pex && peer.ut_pex.is_none() && hs.ut_pex.is_some() {
                    peer.next_pex = Some(now + PEX_FIRST_DELAY);
                    self.arm_tick(now + PEX_FIRST_DELAY);
                }
                peer.ut_pex = hs.ut_pex.filter(|_| self.config.pex);
            }
        } else if id == OUR_UT_PEX_ID {
            let too_soon = peer
                .last_pex_in
                .is_some_and(|t| now.saturating_duration_since(t) < PEX_INTERVAL / 2);
            if !self.config.pex || too_soon {
                return;
            }
            peer.last_pex_in = Some(now);
            if let Ok(msg) = PexMessage::decode(payload) {
                let peers: Vec<SocketAddr> = msg
                    .added
                    .iter()
                    .map(|p| p.addr)
                    .filter(|a| a.port() != 0)
                    .take(MAX_PEX_LEARNED)
                    .collect();
                if !peers.is_empty() {
                    self.found.push(peers);
                }
            }
        } else if id == OUR_UT_METADATA_ID {
            let (Some(their_id), Ok(msg)) = (peer.ut_metadata, MetadataMsg::decode(payload)) else {
                return;
            };
            if let Some(answer) = answer_metadata(self.info_bytes.as_deref(), &msg) {
                peer.outbox.push(Message::Extended {
                    id: their_id,
                    payload: answer.encode().into(),
                });
            }
        }
    }

    /// Checks the invariants in the module doc; for tests and the simulation.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        self.assembly.check_invariants(&self.geo)?;
        let mut owed: std::collections::HashMap<BlockRef, u8> = Default::default();
        let exclusive: BTreeMap<u32, PeerKey> = self
            .assembly
            .exclusive_pieces()
            .map(|(i, owner, _)| (i, owner))
            .collect();
        for (i, owner, missing) in self.assembly.exclusive_pieces() {
            // Its owner alone can finish it: it must be there and still on it.
            let on_it = self
                .peers
                .get(&owner)
                .is_some_and(|p| p.current.contains(&i));
            if missing && !on_it {
                return Err(format!(
                    "piece {i} is left to peer {owner}, which is not on it"
                ));
            }
        }
        for (k, p) in &self.peers {
            let mut seen = std::collections::HashSet::new();
            for (b, _) in &p.inflight {
                if !seen.insert(*b) {
                    return Err(format!("peer {k} owes {b:?} twice"));
                }
                *owed.entry(*b).or_default() += 1;
                if exclusive.get(&b.index).is_some_and(|o| o != k) {
                    return Err(format!("peer {k} owes {b:?} of another peer's piece"));
                }
            }
            if p.uploads.len() > self.config.max_upload_queue {
                return Err(format!("peer {k} has {} uploads queued", p.uploads.len()));
            }
        }
        if self.block_checks.len() > MAX_BLOCK_CHECKS {
            return Err(format!("{} block checks", self.block_checks.len()));
        }
        for c in &self.block_checks {
            if !self.assembly.is_in_progress(c.index) || c.asked.len() > MAX_ASKED {
                return Err(format!("block check of piece {} out of step", c.index));
            }
        }
        for &k in self.departed.keys() {
            if self.peers.contains_key(&k) || !self.holds_blocks_of(k) {
                return Err(format!("departed peer {k} is connected or holds no block"));
            }
        }
        if owed != self.assembly.owed(&self.geo) {
            return Err("blocks owed by peers differ from the requested blocks".into());
        }
        for i in 0..self.geo.piece_count {
            let should_be_taken =
                self.have.get(i) || !self.wanted.get(i) || self.assembly.is_in_progress(i);
            if self.scheduler.picker.is_taken(i) != should_be_taken {
                return Err(format!("piece {i}: picker out of step"));
            }
        }
        let left: u64 = (0..self.geo.piece_count)
            .filter(|&i| self.needs(i))
            .map(|i| u64::from(self.geo.piece_len(i)))
            .sum();
        if left != self.stats.bytes_left {
            return Err(format!("bytes left {} != {left}", self.stats.bytes_left));
        }
        Ok(())
    }
}
