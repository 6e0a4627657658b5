//! The download state machine for one torrent.
//!
//! It tracks every connected peer (what it has, choke state, the blocks asked of it), the pieces
//! being assembled in memory, and which pieces are still wanted. Events come in as peer messages
//! and ticks with the time passed in; results come out as messages queued per peer (drained by
//! the engine into its socket) and completed pieces to verify (hashed by the engine off the
//! network tasks, the verdict reported back with [`Download::piece_verified`]).
//!
//! Invariants:
//! - a block is `Requested(n)` iff exactly `n` peers hold it in their `inflight` queue;
//! - a piece is in `partials` iff it is being assembled; it is taken in the picker iff it is
//!   partial, being verified, had, or not wanted;
//! - memory for piece buffers (partial and being verified) stays within `Config::max_piece_memory`
//!   unless a single piece is larger, in which case one piece at a time is assembled;
//! - nothing is marked had before its hash was verified.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::bitfield::Bitfield;
use super::picker::PiecePicker;
use crate::wire::extension::{answer_metadata, OUR_REQQ, OUR_UT_METADATA_ID};
use crate::wire::{BlockRef, Message};
use crate::wire::{ExtHandshake, MetadataMsg};

/// Size of a requested block (the last block of the last piece may be shorter).
pub const BLOCK_LEN: u32 = 16 * 1024;

/// Engine-assigned identity of a connection.
pub type PeerKey = u64;

/// Tunables of the download.
#[derive(Clone, Debug)]
pub struct Config {
    /// Upper bound on bytes of piece buffers held (assembling plus awaiting verification).
    pub max_piece_memory: u64,
    /// Requests kept in flight per peer before its rate is known, and the floor afterwards.
    pub min_requests: u32,
    /// Ceiling of requests in flight per peer.
    pub max_requests: u32,
    /// The pipeline holds this much of the peer's measured rate (bandwidth-delay product).
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
    /// A peer that contributed to this many pieces failing their hash check is dropped.
    pub max_hash_failures: u32,
    /// How many peers may be asked for the same block in endgame mode.
    pub endgame_duplicates: u8,
    /// Peers we upload to at once (one of them the optimistic unchoke).
    pub upload_slots: usize,
    /// Requests from one peer queued for upload; more are dropped.
    pub max_upload_queue: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_piece_memory: 32 * 1024 * 1024,
            min_requests: 64,
            max_requests: 1024,
            request_queue_time: Duration::from_millis(500),
            keepalive_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(150),
            request_timeout: Duration::from_secs(20),
            lost_request_timeout: Duration::from_secs(5),
            max_hash_failures: 3,
            endgame_duplicates: 2,
            upload_slots: 8,
            max_upload_queue: OUR_REQQ as usize,
        }
    }
}

/// Why a peer must be disconnected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    #[error("peer timed out: {0}")]
    Timeout(&'static str),
    #[error("peer sent {0} pieces that failed their hash check")]
    BadData(u32),
}

/// Requests we keep outstanding at a peer that did not tell us its `reqq`.
pub const DEFAULT_PEER_REQQ: u32 = 250;

/// Largest block a peer may request from us.
pub const MAX_REQUEST_LEN: u32 = 128 * 1024;

/// An assembled piece awaiting hash verification.
#[derive(Debug)]
pub struct CompletedPiece {
    pub index: u32,
    pub data: Vec<u8>,
}

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
    /// Peers that sent blocks of this piece (blamed if its hash fails).
    contributors: Vec<PeerKey>,
}

#[derive(Debug)]
struct Peer {
    has: Bitfield,
    peer_choking: bool,
    peer_interested: bool,
    am_interested: bool,
    am_choking: bool,
    /// Blocks the peer asked of us, in order, not yet handed to the engine.
    uploads: VecDeque<BlockRef>,
    /// Bytes we sent this peer in the current rate window.
    upload_window_bytes: u64,
    /// Smoothed upload rate to this peer, bytes per second.
    upload_rate: f64,
    /// Blocks asked of this peer and when, oldest first.
    inflight: VecDeque<(BlockRef, Instant)>,
    /// Most requests the peer queues (its `reqq`, or a safe default).
    max_outstanding: u32,
    /// The id the peer wants for `ut_metadata` messages sent to it.
    ut_metadata: Option<u8>,
    /// Pieces this peer started: it is asked for their blocks first (whole-piece affinity).
    current: Vec<u32>,
    outbox: Vec<Message>,
    last_received: Instant,
    last_sent: Instant,
    last_block: Instant,
    window_start: Instant,
    window_bytes: u64,
    /// Smoothed download rate from this peer, bytes per second.
    rate: f64,
    target_requests: u32,
    hash_failures: u32,
}

/// Most requests held back to be sent together when a peer's pipeline is nearly full.
const REQUEST_BATCH: usize = 32;

/// The state of one torrent's download.
#[derive(Debug)]
pub struct Download {
    config: Config,
    piece_length: u32,
    total_length: u64,
    piece_count: u32,
    have: Bitfield,
    wanted: Bitfield,
    wanted_left: u32,
    /// Bytes in the `wanted_left` pieces.
    bytes_left: u64,
    picker: PiecePicker,
    partials: HashMap<u32, Partial>,
    /// Partial pieces that still have `Missing` blocks.
    open_partials: BTreeSet<u32>,
    verifying: HashMap<u32, Vec<PeerKey>>,
    piece_memory: u64,
    peers: HashMap<PeerKey, Peer>,
    completed: Vec<CompletedPiece>,
    /// Peers whose outbox got messages from another peer's event.
    to_wake: HashSet<PeerKey>,
    /// A peer wanted a new piece but the piece memory budget was spent: when a verdict frees
    /// memory, the peers with room in their pipelines are woken (nothing else would wake a peer
    /// whose requests have all been answered).
    memory_starved: bool,
    /// Payload bytes in verified pieces fetched in this session.
    verified_bytes: u64,
    /// Payload bytes received in blocks we did not need (duplicates, unrequested).
    wasted_bytes: u64,
    /// Payload bytes sent to peers.
    uploaded_bytes: u64,
    /// The peer currently given the optimistic unchoke.
    optimistic: Option<PeerKey>,
    rng: StdRng,
    /// Piece buffers of finished pieces, reused for new ones.
    spare_buffers: Vec<Vec<u8>>,
    /// The raw info dictionary, when known.
    info_bytes: Option<Arc<[u8]>>,
}

impl Download {
    /// A download of the `wanted` pieces, of which `have` are already present and verified.
    pub fn new(
        piece_length: u32,
        total_length: u64,
        have: Bitfield,
        wanted: Bitfield,
        config: Config,
        seed: u64,
    ) -> Download {
        let piece_count = have.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut picker = PiecePicker::new(piece_count, &mut rng);
        let mut wanted_left = 0;
        let mut bytes_left = 0;
        for i in 0..piece_count {
            if have.get(i) || !wanted.get(i) {
                picker.take(i);
            } else {
                wanted_left += 1;
                let start = u64::from(i) * u64::from(piece_length);
                bytes_left += total_length
                    .saturating_sub(start)
                    .min(u64::from(piece_length));
            }
        }
        Download {
            config,
            piece_length,
            total_length,
            piece_count,
            have,
            wanted,
            wanted_left,
            bytes_left,
            picker,
            partials: HashMap::new(),
            open_partials: BTreeSet::new(),
            verifying: HashMap::new(),
            piece_memory: 0,
            peers: HashMap::new(),
            completed: Vec::new(),
            to_wake: HashSet::new(),
            memory_starved: false,
            verified_bytes: 0,
            wasted_bytes: 0,
            uploaded_bytes: 0,
            optimistic: None,
            rng,
            spare_buffers: Vec::new(),
            info_bytes: None,
        }
    }

    /// Length of piece `index` (the last one may be shorter).
    pub fn piece_len(&self, index: u32) -> u32 {
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
            length: (self.piece_len(index) - begin).min(BLOCK_LEN),
        }
    }

    /// Whether every wanted piece is present and verified.
    pub fn is_done(&self) -> bool {
        self.wanted_left == 0
    }

    /// Pieces we have (verified).
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Bytes of wanted pieces still to fetch.
    pub fn bytes_left(&self) -> u64 {
        self.bytes_left
    }

    /// Payload bytes in pieces verified during this download.
    pub fn verified_bytes(&self) -> u64 {
        self.verified_bytes
    }

    /// Bytes received that were not needed.
    pub fn wasted_bytes(&self) -> u64 {
        self.wasted_bytes
    }

    /// Number of connected peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Number of peers that are not choking us.
    pub fn unchoked_peer_count(&self) -> usize {
        self.peers.values().filter(|p| !p.peer_choking).count()
    }

    /// A peer finished the handshake. Queues our bitfield if we have anything.
    pub fn add_peer(&mut self, key: PeerKey, now: Instant, supports_extensions: bool) {
        let mut outbox = Vec::new();
        if supports_extensions {
            // BEP 10: our extension handshake goes first, before any other message.
            let metadata_size = self.info_bytes.as_ref().map(|b| b.len() as u64);
            outbox.push(Message::Extended {
                id: 0,
                payload: ExtHandshake::ours(metadata_size).encode().into(),
            });
        }
        if self.have.count() > 0 {
            outbox.push(Message::Bitfield(Bytes::copy_from_slice(
                self.have.as_bytes(),
            )));
        }
        self.peers.insert(
            key,
            Peer {
                has: Bitfield::new(self.piece_count),
                peer_choking: true,
                peer_interested: false,
                am_interested: false,
                am_choking: true,
                uploads: VecDeque::new(),
                upload_window_bytes: 0,
                upload_rate: 0.0,
                inflight: VecDeque::new(),
                max_outstanding: DEFAULT_PEER_REQQ,
                ut_metadata: None,
                current: Vec::new(),
                outbox,
                last_received: now,
                last_sent: now,
                last_block: now,
                window_start: now,
                window_bytes: 0,
                rate: 0.0,
                target_requests: self.config.min_requests,
                hash_failures: 0,
            },
        );
    }

    /// A peer disconnected: its availability is forgotten and its requests go back to the pool.
    pub fn remove_peer(&mut self, key: PeerKey) {
        if let Some(mut peer) = self.peers.remove(&key) {
            self.picker.remove_peer(&peer.has);
            self.release_inflight(&mut peer);
        }
        self.to_wake.remove(&key);
    }

    /// Returns every block the peer owes us to the `Missing` pool.
    fn release_inflight(&mut self, peer: &mut Peer) {
        for (block, _) in std::mem::take(&mut peer.inflight) {
            self.release_block(block);
        }
        peer.current.clear();
    }

    /// One fewer peer owes us `block`; with none left it is `Missing` again.
    fn release_block(&mut self, block: BlockRef) {
        {
            if let Some(partial) = self.partials.get_mut(&block.index) {
                let b = (block.begin / BLOCK_LEN) as usize;
                if let Some(BlockState::Requested(n)) = partial.blocks.get(b).copied() {
                    if n <= 1 {
                        partial.blocks[b] = BlockState::Missing;
                        partial.missing += 1;
                        self.open_partials.insert(block.index);
                    } else {
                        partial.blocks[b] = BlockState::Requested(n - 1);
                    }
                }
            }
        }
    }

    /// Handles one message from a peer. An error means: disconnect it (then call
    /// [`Download::remove_peer`]).
    pub fn handle_message(
        &mut self,
        key: PeerKey,
        msg: Message,
        now: Instant,
    ) -> Result<(), PeerError> {
        let Some(mut peer) = self.peers.remove(&key) else {
            return Ok(());
        };
        let result = self.handle_with(key, &mut peer, msg, now);
        self.peers.insert(key, peer);
        result
    }

    fn handle_with(
        &mut self,
        key: PeerKey,
        peer: &mut Peer,
        msg: Message,
        now: Instant,
    ) -> Result<(), PeerError> {
        peer.last_received = now;
        match msg {
            Message::KeepAlive | Message::Port(_) | Message::Unknown { .. } => {}
            Message::Extended { id, payload } => self.on_extended(peer, id, &payload),
            Message::Choke => {
                peer.peer_choking = true;
                // Without the fast extension a choke discards every pending request.
                self.release_inflight(peer);
            }
            Message::Unchoke => peer.peer_choking = false,
            Message::Interested => {
                peer.peer_interested = true;
                let unchoked = self.peers.values().filter(|p| !p.am_choking).count();
                if peer.am_choking && unchoked < self.config.upload_slots {
                    // A free slot: no need to wait for the next rechoke.
                    peer.am_choking = false;
                    peer.outbox.push(Message::Unchoke);
                }
            }
            Message::NotInterested => peer.peer_interested = false,
            Message::Have(index) => {
                if index >= self.piece_count {
                    return Err(PeerError::Protocol(format!(
                        "have for piece {index} of {}",
                        self.piece_count
                    )));
                }
                if !peer.has.get(index) {
                    peer.has.set(index);
                    self.picker.inc(index);
                    if self.needs(index) {
                        self.become_interested(peer);
                    }
                }
            }
            Message::Bitfield(bytes) => {
                // BEP 3 puts the bitfield first, but real clients (aria2) also send one later
                // to say what they have: accept it as a replacement.
                let has = Bitfield::from_bytes(&bytes, self.piece_count)
                    .map_err(|e| PeerError::Protocol(e.to_string()))?;
                self.picker.remove_peer(&peer.has);
                self.picker.add_peer(&has);
                peer.has = has;
                if peer.has.iter_set().any(|i| self.needs(i)) {
                    self.become_interested(peer);
                }
            }
            Message::Request(block) => {
                self.check_request(block)?;
                // Requests sent before our choke arrived are dropped, as are those past the queue.
                if !peer.am_choking && peer.uploads.len() < self.config.max_upload_queue {
                    peer.uploads.push_back(block);
                }
            }
            Message::Cancel(block) => peer.uploads.retain(|b| *b != block),
            Message::Piece { index, begin, data } => {
                self.on_block(key, peer, index, begin, data, now);
            }
        }
        Ok(())
    }

    /// Whether we still need piece `index`.
    fn needs(&self, index: u32) -> bool {
        self.wanted.get(index) && !self.have.get(index)
    }

    fn become_interested(&mut self, peer: &mut Peer) {
        if !peer.am_interested && !self.is_done() {
            peer.am_interested = true;
            peer.outbox.push(Message::Interested);
        }
    }

    fn on_block(
        &mut self,
        key: PeerKey,
        peer: &mut Peer,
        index: u32,
        begin: u32,
        data: Bytes,
        now: Instant,
    ) {
        let len = data.len() as u64;
        let Some(pos) = peer.inflight.iter().position(|(b, _)| {
            b.index == index && b.begin == begin && b.length as usize == data.len()
        }) else {
            // Not asked of this peer (or already cancelled): drop it.
            self.wasted_bytes += len;
            return;
        };
        peer.inflight.remove(pos);
        peer.last_block = now;
        peer.window_bytes += len;
        let block = (begin / BLOCK_LEN) as usize;
        let Some(partial) = self.partials.get_mut(&index) else {
            self.wasted_bytes += len;
            return;
        };
        let state = partial.blocks[block];
        match state {
            BlockState::Received | BlockState::Missing => {
                self.wasted_bytes += len;
                return;
            }
            BlockState::Requested(n) => {
                let start = begin as usize;
                partial.buf[start..start + data.len()].copy_from_slice(&data);
                partial.blocks[block] = BlockState::Received;
                partial.remaining -= 1;
                if !partial.contributors.contains(&key) {
                    partial.contributors.push(key);
                }
                if n > 1 {
                    // Endgame: others were asked for this block too; cancel theirs.
                    let wanted = BlockRef {
                        index,
                        begin,
                        length: data.len() as u32,
                    };
                    for (&other_key, other) in self.peers.iter_mut() {
                        if let Some(p) = other.inflight.iter().position(|(b, _)| *b == wanted) {
                            other.inflight.remove(p);
                            other.outbox.push(Message::Cancel(wanted));
                            self.to_wake.insert(other_key);
                        }
                    }
                }
            }
        }
        if partial.remaining == 0 {
            if let Some(partial) = self.partials.remove(&index) {
                self.open_partials.remove(&index);
                self.verifying.insert(index, partial.contributors);
                self.completed.push(CompletedPiece {
                    index,
                    data: partial.buf,
                });
            }
        }
    }

    /// A request must name a block inside a piece we have, at most [`MAX_REQUEST_LEN`] long.
    fn check_request(&self, block: BlockRef) -> Result<(), PeerError> {
        let bad = |why: &str| Err(PeerError::Protocol(format!("request {block:?}: {why}")));
        if block.index >= self.piece_count {
            return bad("no such piece");
        }
        if block.length == 0 || block.length > MAX_REQUEST_LEN {
            return bad("bad length");
        }
        let end = u64::from(block.begin) + u64::from(block.length);
        if end > u64::from(self.piece_len(block.index)) {
            return bad("past the end of the piece");
        }
        if !self.have.get(block.index) {
            return bad("we do not have that piece");
        }
        Ok(())
    }

    /// Takes the blocks the peer asked for, oldest first, up to `max_bytes` of block data (at
    /// least one block); the engine reads them from disk and sends them as `piece` messages, then
    /// reports with [`Download::uploaded`]. Returns whether more requests are waiting.
    pub fn take_uploads(&mut self, key: PeerKey, max_bytes: u64, out: &mut Vec<BlockRef>) -> bool {
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

    /// The engine sent `bytes` of block data to the peer.
    pub fn uploaded(&mut self, key: PeerKey, bytes: u64) {
        self.uploaded_bytes += bytes;
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.upload_window_bytes += bytes;
        }
    }

    /// The raw info dictionary, served to peers that ask for it with `ut_metadata`.
    pub fn set_metadata(&mut self, info_bytes: Arc<[u8]>) {
        self.info_bytes = Some(info_bytes);
    }

    /// BEP 10/9: records the peer's extension handshake (its `ut_metadata` id and `reqq`) and
    /// answers its metadata requests. Malformed extension messages are ignored: they are optional.
    fn on_extended(&mut self, peer: &mut Peer, id: u8, payload: &Bytes) {
        if id == 0 {
            if let Ok(hs) = ExtHandshake::decode(payload) {
                peer.ut_metadata = hs.ut_metadata.filter(|&i| i != 0);
                if let Some(n) = hs.reqq {
                    peer.max_outstanding = n.max(1);
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

    /// Payload bytes sent to peers.
    pub fn uploaded_bytes(&self) -> u64 {
        self.uploaded_bytes
    }

    /// The choker (BEP 3 in spirit): every interested peer is ranked by how fast it sends to us
    /// (while downloading) or how fast we send to it (once done); the best `upload_slots - 1`
    /// are unchoked, plus one optimistic unchoke that rotates each time `rotate_optimistic` is
    /// set (the engine sets it every third call, i.e. about every 30 s).
    pub fn rechoke(&mut self, rotate_optimistic: bool) {
        let seeding = self.is_done();
        let mut ranked: Vec<(PeerKey, f64)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.peer_interested)
            .map(|(&k, p)| (k, if seeding { p.upload_rate } else { p.rate }))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let regular = self.config.upload_slots.saturating_sub(1);
        let mut unchoke: HashSet<PeerKey> = ranked.iter().take(regular).map(|r| r.0).collect();
        let rest: Vec<PeerKey> = ranked.iter().skip(regular).map(|r| r.0).collect();
        let keep = self
            .optimistic
            .filter(|k| rest.contains(k) && !rotate_optimistic);
        self.optimistic = keep.or_else(|| {
            use rand::seq::SliceRandom;
            rest.choose(&mut self.rng).copied()
        });
        unchoke.extend(self.optimistic);
        for (&k, peer) in self.peers.iter_mut() {
            let want_unchoked = unchoke.contains(&k);
            if want_unchoked && peer.am_choking {
                peer.am_choking = false;
                peer.outbox.push(Message::Unchoke);
                self.to_wake.insert(k);
            } else if !want_unchoked && !peer.am_choking {
                peer.am_choking = true;
                peer.uploads.clear();
                peer.outbox.push(Message::Choke);
                self.to_wake.insert(k);
            }
        }
    }

    /// Pieces handed out for verification and not yet reported back.
    pub fn verifying_count(&self) -> usize {
        self.verifying.len()
    }

    /// Returns a piece buffer for reuse by the next piece (saves zeroing fresh pages).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        let budget = (self.config.max_piece_memory / u64::from(self.piece_length.max(1))) as usize;
        if self.spare_buffers.len() < budget && buf.capacity() >= self.piece_length as usize {
            self.spare_buffers.push(buf);
        }
    }

    /// Takes the pieces assembled since the last call; the engine verifies each and reports
    /// with [`Download::piece_verified`].
    pub fn take_completed(&mut self) -> Vec<CompletedPiece> {
        std::mem::take(&mut self.completed)
    }

    /// The engine checked piece `index`'s hash (and, if good, stored it). Returns peers that must
    /// be disconnected for sending bad data.
    pub fn piece_verified(&mut self, index: u32, good: bool) -> Vec<PeerKey> {
        let Some(contributors) = self.verifying.remove(&index) else {
            return Vec::new();
        };
        self.piece_memory = self
            .piece_memory
            .saturating_sub(u64::from(self.piece_len(index)));
        if std::mem::take(&mut self.memory_starved) {
            let room = self.peers.iter().filter(|(_, p)| {
                !p.peer_choking
                    && p.am_interested
                    && p.inflight.len() < p.target_requests.min(p.max_outstanding) as usize
            });
            self.to_wake.extend(room.map(|(&k, _)| k));
        }
        let mut banned = Vec::new();
        if good {
            if !self.have.get(index) && self.have.set(index) {
                let len = u64::from(self.piece_len(index));
                self.wanted_left = self.wanted_left.saturating_sub(1);
                self.bytes_left = self.bytes_left.saturating_sub(len);
                self.verified_bytes += len;
            }
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
        } else {
            self.picker.release(index);
            for k in contributors {
                if let Some(peer) = self.peers.get_mut(&k) {
                    peer.hash_failures += 1;
                    if peer.hash_failures >= self.config.max_hash_failures {
                        banned.push(k);
                    }
                }
            }
            // Peers idle for lack of work may now fetch this piece again.
            self.to_wake.extend(self.peers.keys().copied());
        }
        banned
    }

    /// Peers that have something to send because of another peer's event; the engine wakes them.
    pub fn take_wakeups(&mut self) -> Vec<PeerKey> {
        self.to_wake.drain().collect()
    }

    /// Periodic upkeep for one peer: rate estimate, pipeline size, keep-alives and timeouts.
    pub fn tick(&mut self, key: PeerKey, now: Instant) -> Result<(), PeerError> {
        let Some(mut peer) = self.peers.remove(&key) else {
            return Ok(());
        };
        let result = self.tick_with(&mut peer, now);
        self.peers.insert(key, peer);
        result
    }

    fn tick_with(&mut self, peer: &mut Peer, now: Instant) -> Result<(), PeerError> {
        let elapsed = now.saturating_duration_since(peer.window_start);
        if elapsed >= Duration::from_millis(500) {
            let sample = peer.window_bytes as f64 / elapsed.as_secs_f64();
            peer.rate = if peer.rate == 0.0 {
                sample
            } else {
                0.5 * peer.rate + 0.5 * sample
            };
            let up = peer.upload_window_bytes as f64 / elapsed.as_secs_f64();
            peer.upload_rate = 0.5 * peer.upload_rate + 0.5 * up;
            peer.window_start = now;
            peer.window_bytes = 0;
            peer.upload_window_bytes = 0;
            let bdp = peer.rate * self.config.request_queue_time.as_secs_f64() / BLOCK_LEN as f64;
            peer.target_requests =
                (bdp as u32).clamp(self.config.min_requests, self.config.max_requests);
        }
        if now.saturating_duration_since(peer.last_received) >= self.config.idle_timeout {
            return Err(PeerError::Timeout("nothing received"));
        }
        if !peer.inflight.is_empty()
            && now.saturating_duration_since(peer.last_block) >= self.config.request_timeout
        {
            return Err(PeerError::Timeout("requested blocks never came"));
        }
        // Peers serve requests in order: a request older than `lost_request_timeout` that
        // later blocks overtook was dropped by the peer. Give it to whoever asks next.
        while let Some(&(block, sent)) = peer.inflight.front() {
            let overtaken = peer.last_block > sent;
            if !overtaken || now.saturating_duration_since(sent) < self.config.lost_request_timeout
            {
                break;
            }
            peer.inflight.pop_front();
            self.release_block(block);
        }
        if now.saturating_duration_since(peer.last_sent) >= self.config.keepalive_interval
            && peer.outbox.is_empty()
        {
            peer.outbox.push(Message::KeepAlive);
        }
        if peer.hash_failures >= self.config.max_hash_failures {
            return Err(PeerError::BadData(peer.hash_failures));
        }
        Ok(())
    }

    /// Tops up the peer's request pipeline, then hands over everything queued for it.
    /// The engine writes the messages to the peer's socket.
    pub fn poll_outgoing(&mut self, key: PeerKey, now: Instant, out: &mut Vec<Message>) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        self.fill_requests(&mut peer, now);
        if !peer.outbox.is_empty() {
            peer.last_sent = now;
            out.append(&mut peer.outbox);
        }
        self.peers.insert(key, peer);
    }

    fn fill_requests(&mut self, peer: &mut Peer, now: Instant) {
        if peer.peer_choking || !peer.am_interested || self.is_done() {
            return;
        }
        if peer.inflight.is_empty() {
            // Starting afresh: measure the time to the next block from now.
            peer.last_block = now;
        }
        let target = peer.target_requests.min(peer.max_outstanding) as usize;
        // Top up in batches, not one request per block received: fewer, fuller sends wake
        // both sides less often.
        let batch = (target / 4).clamp(1, REQUEST_BATCH);
        if !peer.inflight.is_empty() && peer.inflight.len() + batch > target {
            return;
        }
        while peer.inflight.len() < target {
            let Some(block) = self.next_block(peer) else {
                break;
            };
            peer.inflight.push_back((block, now));
            peer.outbox.push(Message::Request(block));
        }
    }

    /// Chooses the next block to ask of `peer` and marks it requested.
    fn next_block(&mut self, peer: &mut Peer) -> Option<BlockRef> {
        // 1. Pieces this peer already works on.
        while let Some(&index) = peer.current.first() {
            if let Some(block) = self.request_missing(index) {
                return Some(block);
            }
            peer.current.remove(0);
        }
        // 2. A new piece, rarest first, if memory allows.
        let piece_len = u64::from(self.piece_length);
        if self.piece_memory == 0 || self.piece_memory + piece_len <= self.config.max_piece_memory {
            if let Some(index) = self.picker.pick(&peer.has) {
                self.start_piece(index);
                peer.current.push(index);
                return self.request_missing(index);
            }
        } else if self.picker.has_pickable() {
            self.memory_starved = true;
        }
        // 3. Help with other pieces in progress.
        let open: Option<u32> = self
            .open_partials
            .iter()
            .copied()
            .find(|&i| peer.has.get(i));
        if let Some(index) = open {
            peer.current.push(index);
            return self.request_missing(index);
        }
        // 4. Endgame: nothing left unrequested; ask for blocks others owe us too.
        if !self.picker.has_pickable() {
            return self.request_duplicate(peer);
        }
        None
    }

    fn start_piece(&mut self, index: u32) {
        self.picker.take(index);
        let len = self.piece_len(index);
        let blocks = self.block_count(index);
        self.piece_memory += u64::from(len);
        self.partials.insert(
            index,
            Partial {
                buf: {
                    // A recycled buffer keeps its old bytes: every block overwrites its own
                    // range before the piece is complete, so zeroing it again is wasted work.
                    let mut buf = self.spare_buffers.pop().unwrap_or_default();
                    buf.resize(len as usize, 0);
                    buf
                },
                blocks: vec![BlockState::Missing; blocks as usize],
                missing: blocks,
                remaining: blocks,
                contributors: Vec::new(),
            },
        );
        self.open_partials.insert(index);
    }

    /// Marks the first missing block of partial piece `index` as requested.
    fn request_missing(&mut self, index: u32) -> Option<BlockRef> {
        let partial = self.partials.get_mut(&index)?;
        if partial.missing == 0 {
            return None;
        }
        let b = partial
            .blocks
            .iter()
            .position(|s| *s == BlockState::Missing)?;
        partial.blocks[b] = BlockState::Requested(1);
        partial.missing -= 1;
        if partial.missing == 0 {
            self.open_partials.remove(&index);
        }
        Some(self.block_ref(index, b as u32))
    }

    /// Endgame: a block already requested from fewer than `endgame_duplicates` peers, which
    /// this peer has and does not owe us yet.
    fn request_duplicate(&mut self, peer: &Peer) -> Option<BlockRef> {
        let max = self.config.endgame_duplicates;
        let mut found = None;
        'pieces: for (&index, partial) in self.partials.iter() {
            if !peer.has.get(index) {
                continue;
            }
            for (b, state) in partial.blocks.iter().enumerate() {
                if let BlockState::Requested(n) = *state {
                    if n < max {
                        let block = self.block_ref(index, b as u32);
                        if !peer.inflight.iter().any(|(b, _)| *b == block) {
                            found = Some((block, b, n));
                            break 'pieces;
                        }
                    }
                }
            }
        }
        let (block, b, n) = found?;
        if let Some(partial) = self.partials.get_mut(&block.index) {
            partial.blocks[b] = BlockState::Requested(n + 1);
        }
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    fn download(piece_length: u32, total: u64) -> Download {
        let count = total.div_ceil(u64::from(piece_length)) as u32;
        Download::new(
            piece_length,
            total,
            Bitfield::new(count),
            Bitfield::full(count),
            Config::default(),
            7,
        )
    }

    fn requests(out: &[Message]) -> Vec<BlockRef> {
        out.iter()
            .filter_map(|m| match m {
                Message::Request(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    fn seeder_joins(d: &mut Download, key: PeerKey, t: Instant) -> Vec<Message> {
        d.add_peer(key, t, false);
        let count = d.piece_count;
        let full = Bitfield::full(count);
        d.handle_message(
            key,
            Message::Bitfield(Bytes::copy_from_slice(full.as_bytes())),
            t,
        )
        .unwrap();
        d.handle_message(key, Message::Unchoke, t).unwrap();
        let mut out = Vec::new();
        d.poll_outgoing(key, t, &mut out);
        out
    }

    /// Serves every request in `reqs` from `payload`.
    fn serve(d: &mut Download, key: PeerKey, reqs: &[BlockRef], payload: &[u8], t: Instant) {
        for r in reqs {
            let start = r.index as usize * d.piece_length as usize + r.begin as usize;
            let data = Bytes::copy_from_slice(&payload[start..start + r.length as usize]);
            d.handle_message(
                key,
                Message::Piece {
                    index: r.index,
                    begin: r.begin,
                    data,
                },
                t,
            )
            .unwrap();
        }
    }

    #[test]
    fn downloads_everything_from_one_seeder_with_short_last_block() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let t = now();
        let mut d = download(32 * 1024, payload.len() as u64);
        assert_eq!(d.bytes_left(), 100_000);
        let out = seeder_joins(&mut d, 1, t);
        assert!(out.contains(&Message::Interested));
        let mut pending = requests(&out);
        let mut assembled = vec![0u8; payload.len()];
        while !pending.is_empty() {
            serve(&mut d, 1, &pending, &payload, t);
            for piece in d.take_completed() {
                let start = piece.index as usize * 32 * 1024;
                assembled[start..start + piece.data.len()].copy_from_slice(&piece.data);
                d.piece_verified(piece.index, true);
            }
            let mut out = Vec::new();
            d.poll_outgoing(1, t, &mut out);
            pending = requests(&out);
        }
        assert!(d.is_done());
        assert_eq!(d.bytes_left(), 0);
        assert_eq!(d.verified_bytes(), 100_000);
        assert_eq!(assembled, payload);
        // The last block of the last piece is shorter: 100000 - 3*32768 = 1696 bytes.
        assert_eq!(d.piece_len(3), 1696);
    }

    #[test]
    fn choke_returns_requests_to_the_pool_for_other_peers() {
        let t = now();
        let mut d = download(16 * 1024, 4 * 16 * 1024);
        let first = requests(&seeder_joins(&mut d, 1, t));
        assert_eq!(first.len(), 4);
        d.handle_message(1, Message::Choke, t).unwrap();
        let second = requests(&seeder_joins(&mut d, 2, t));
        let mut a: Vec<_> = first.iter().map(|b| b.index).collect();
        let mut b: Vec<_> = second.iter().map(|b| b.index).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn disconnect_mid_piece_loses_only_unfinished_blocks() {
        let payload = vec![5u8; 64 * 1024];
        let t = now();
        let mut d = download(64 * 1024, payload.len() as u64);
        let reqs = requests(&seeder_joins(&mut d, 1, t));
        assert_eq!(reqs.len(), 4);
        serve(&mut d, 1, &reqs[..2], &payload, t);
        d.remove_peer(1);
        let reqs2 = requests(&seeder_joins(&mut d, 2, t));
        assert_eq!(reqs2, reqs[2..].to_vec());
        serve(&mut d, 2, &reqs2, &payload, t);
        let done = d.take_completed();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].data, payload);
    }

    #[test]
    fn bad_hash_refetches_and_bans_repeat_offender() {
        let payload = vec![9u8; 16 * 1024];
        let t = now();
        let mut d = download(16 * 1024, payload.len() as u64);
        let mut banned = Vec::new();
        let mut reqs = requests(&seeder_joins(&mut d, 1, t));
        for _ in 0..3 {
            assert_eq!(reqs.len(), 1);
            serve(&mut d, 1, &reqs, &payload, t);
            let piece = d.take_completed().pop().unwrap();
            banned = d.piece_verified(piece.index, false);
            assert!(!d.is_done());
            let mut out = Vec::new();
            d.poll_outgoing(1, t, &mut out);
            reqs = requests(&out);
        }
        assert_eq!(banned, vec![1]);
        assert_eq!(d.tick(1, t), Err(PeerError::BadData(3)));
    }

    #[test]
    fn endgame_duplicates_then_cancels() {
        let payload = vec![1u8; 16 * 1024];
        let t = now();
        let mut d = download(16 * 1024, payload.len() as u64);
        let a = requests(&seeder_joins(&mut d, 1, t));
        let b = requests(&seeder_joins(&mut d, 2, t));
        assert_eq!(
            a, b,
            "the only block is requested from both peers in endgame"
        );
        serve(&mut d, 1, &a, &payload, t);
        assert_eq!(d.take_wakeups(), vec![2]);
        let mut out = Vec::new();
        d.poll_outgoing(2, t, &mut out);
        assert_eq!(out, vec![Message::Cancel(a[0])]);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let t = now();
        let mut d = download(16 * 1024, 3 * 16 * 1024);
        d.add_peer(1, t, false);
        assert!(d.handle_message(1, Message::Have(3), t).is_err());
        d.add_peer(2, t, false);
        assert!(d
            .handle_message(2, Message::Bitfield(Bytes::from_static(&[0xff])), t)
            .is_err());
        // A late bitfield replaces what we knew of the peer.
        d.add_peer(3, t, false);
        d.handle_message(3, Message::Have(2), t).unwrap();
        d.handle_message(3, Message::Bitfield(Bytes::from_static(&[0x80])), t)
            .unwrap();
        assert_eq!(d.picker.availability(2), 0);
        assert_eq!(d.picker.availability(0), 1);
    }

    #[test]
    fn unrequested_block_is_ignored() {
        let t = now();
        let mut d = download(16 * 1024, 2 * 16 * 1024);
        seeder_joins(&mut d, 1, t);
        let bogus = Message::Piece {
            index: 0,
            begin: 0,
            data: Bytes::from(vec![0u8; 100]),
        };
        d.handle_message(1, bogus, t).unwrap();
        assert!(d.take_completed().is_empty());
        assert_eq!(d.wasted_bytes(), 100);
    }

    #[test]
    fn stalled_peer_times_out() {
        let t = now();
        let mut d = download(16 * 1024, 2 * 16 * 1024);
        seeder_joins(&mut d, 1, t);
        assert!(d.tick(1, t + Duration::from_secs(1)).is_ok());
        assert!(matches!(
            d.tick(1, t + Duration::from_secs(30)),
            Err(PeerError::Timeout(_))
        ));
    }

    #[test]
    fn memory_budget_limits_pieces_in_progress() {
        let t = now();
        let piece = 1024 * 1024;
        let config = Config {
            max_piece_memory: 2 * piece as u64,
            max_requests: 10_000,
            min_requests: 10_000,
            ..Config::default()
        };
        let mut d = Download::new(
            piece,
            10 * piece as u64,
            Bitfield::new(10),
            Bitfield::full(10),
            config,
            3,
        );
        let reqs = requests(&seeder_joins(&mut d, 1, t));
        let pieces: BTreeSet<u32> = reqs.iter().map(|b| b.index).collect();
        assert_eq!(pieces.len(), 2);
        assert_eq!(reqs.len(), 2 * 64);

        // Every request answered, both pieces handed to the hashers: the peer is idle and the
        // budget spent. The first verdict must wake it (no block will arrive to do so).
        let payload = vec![7u8; 10 * piece as usize];
        serve(&mut d, 1, &reqs, &payload, t);
        let mut out = Vec::new();
        d.poll_outgoing(1, t, &mut out);
        assert!(requests(&out).is_empty(), "budget spent, yet {out:?}");
        let done = d.take_completed();
        assert_eq!(done.len(), 2);
        assert!(d.take_wakeups().is_empty());
        d.piece_verified(done[0].index, true);
        assert_eq!(
            d.take_wakeups(),
            vec![1],
            "idle peer not woken when memory freed"
        );
        d.poll_outgoing(1, t, &mut out);
        let next: BTreeSet<u32> = requests(&out).iter().map(|b| b.index).collect();
        assert_eq!(next.len(), 1, "one piece's memory was freed: {next:?}");
        assert!(next.is_disjoint(&pieces));
    }

    #[test]
    fn pipeline_is_topped_up_in_batches() {
        let t = now();
        // 128 blocks of 16 KiB in 8 pieces; the default pipeline starts at 64 requests and is
        // refilled once a batch (a quarter of it, here 16) has been answered.
        let mut out = Vec::new();
        let payload = vec![3u8; 128 * 16 * 1024];
        let mut d = download(256 * 1024, payload.len() as u64);
        let first = requests(&seeder_joins(&mut d, 1, t));
        assert_eq!(first.len(), 64);
        serve(&mut d, 1, &first[..15], &payload, t);
        d.poll_outgoing(1, t, &mut out);
        assert!(requests(&out).is_empty(), "refilled early: {out:?}");
        serve(&mut d, 1, &first[15..16], &payload, t);
        d.poll_outgoing(1, t, &mut out);
        assert_eq!(requests(&out).len(), 16);
    }

    fn seeding(piece_length: u32, total: u64) -> Download {
        let count = total.div_ceil(u64::from(piece_length)) as u32;
        let config = Config {
            upload_slots: 2,
            ..Config::default()
        };
        Download::new(
            piece_length,
            total,
            Bitfield::full(count),
            Bitfield::full(count),
            config,
            5,
        )
    }

    fn leecher_joins(d: &mut Download, key: PeerKey, t: Instant) -> Vec<Message> {
        d.add_peer(key, t, false);
        d.handle_message(key, Message::Interested, t).unwrap();
        let mut out = Vec::new();
        d.poll_outgoing(key, t, &mut out);
        out
    }

    #[test]
    fn seeder_unchokes_into_free_slots_and_serves_valid_requests() {
        let t = now();
        let mut d = seeding(32 * 1024, 40 * 1024);
        let out = leecher_joins(&mut d, 1, t);
        assert!(matches!(out[0], Message::Bitfield(_)));
        assert!(out.contains(&Message::Unchoke));
        let block = BlockRef {
            index: 1,
            begin: 0,
            length: 8 * 1024,
        };
        d.handle_message(1, Message::Request(block), t).unwrap();
        let other = BlockRef {
            index: 0,
            begin: 16 * 1024,
            length: 16 * 1024,
        };
        d.handle_message(1, Message::Request(other), t).unwrap();
        d.handle_message(1, Message::Cancel(other), t).unwrap();
        let mut up = Vec::new();
        d.take_uploads(1, 1 << 20, &mut up);
        assert_eq!(up, vec![block]);
        d.uploaded(1, 8 * 1024);
        assert_eq!(d.uploaded_bytes(), 8 * 1024);
    }

    #[test]
    fn invalid_requests_close_the_connection() {
        let t = now();
        let mut d = seeding(32 * 1024, 40 * 1024);
        let bad = [
            BlockRef {
                index: 2,
                begin: 0,
                length: 1,
            },
            BlockRef {
                index: 1,
                begin: 0,
                length: 8 * 1024 + 1,
            },
            BlockRef {
                index: 0,
                begin: 16 * 1024,
                length: 16 * 1024 + 1,
            },
            BlockRef {
                index: 0,
                begin: u32::MAX,
                length: 16,
            },
            BlockRef {
                index: 0,
                begin: 0,
                length: MAX_REQUEST_LEN + 1,
            },
            BlockRef {
                index: 0,
                begin: 0,
                length: 0,
            },
        ];
        for (k, block) in bad.iter().enumerate() {
            leecher_joins(&mut d, k as PeerKey, t);
            assert!(
                d.handle_message(k as PeerKey, Message::Request(*block), t)
                    .is_err(),
                "{block:?}"
            );
            d.remove_peer(k as PeerKey);
        }
        // A leecher must not ask for pieces it was never told we have.
        let mut leech = download(16 * 1024, 32 * 1024);
        leecher_joins(&mut leech, 1, t);
        let req = Message::Request(BlockRef {
            index: 0,
            begin: 0,
            length: 16,
        });
        assert!(leech.handle_message(1, req, t).is_err());
    }

    #[test]
    fn choker_keeps_slots_and_drops_choked_requests() {
        let t = now();
        let mut d = seeding(16 * 1024, 64 * 1024);
        for k in 1..=4 {
            leecher_joins(&mut d, k, t);
        }
        let unchoked = |d: &Download| d.peers.values().filter(|p| !p.am_choking).count();
        assert_eq!(unchoked(&d), 2);
        d.rechoke(true);
        assert_eq!(unchoked(&d), 2);
        let choked = *d.peers.iter().find(|(_, p)| p.am_choking).unwrap().0;
        let block = BlockRef {
            index: 0,
            begin: 0,
            length: 16 * 1024,
        };
        d.handle_message(choked, Message::Request(block), t)
            .unwrap();
        let mut up = Vec::new();
        d.take_uploads(choked, 1 << 20, &mut up);
        assert!(up.is_empty());
    }

    #[test]
    fn overtaken_request_is_taken_as_lost_and_asked_again() {
        let payload = vec![3u8; 32 * 1024];
        let t = now();
        let config = Config {
            endgame_duplicates: 1,
            ..Config::default()
        };
        let mut d = Download::new(
            32 * 1024,
            32 * 1024,
            Bitfield::new(1),
            Bitfield::full(1),
            config,
            1,
        );
        let reqs = requests(&seeder_joins(&mut d, 1, t));
        assert_eq!(reqs.len(), 2);
        // The peer skips the first request and answers the second.
        let later = t + Duration::from_secs(1);
        serve(&mut d, 1, &reqs[1..], &payload, later);
        d.tick(1, t + Duration::from_secs(2)).unwrap();
        assert!(
            requests(&seeder_joins(&mut d, 2, t)).is_empty(),
            "not yet taken as lost"
        );
        d.tick(1, t + Duration::from_secs(6)).unwrap();
        let mut out = Vec::new();
        d.poll_outgoing(2, t + Duration::from_secs(6), &mut out);
        assert_eq!(requests(&out), vec![reqs[0]]);
    }

    #[test]
    fn pipeline_respects_the_peer_reqq() {
        let t = now();
        let mut d = download(16 * 1024, 100 * 16 * 1024);
        d.add_peer(1, t, false);
        let hs = ExtHandshake {
            reqq: Some(5),
            ..ExtHandshake::default()
        };
        d.handle_message(
            1,
            Message::Extended {
                id: 0,
                payload: hs.encode().into(),
            },
            t,
        )
        .unwrap();
        let full = Bitfield::full(100);
        d.handle_message(
            1,
            Message::Bitfield(Bytes::copy_from_slice(full.as_bytes())),
            t,
        )
        .unwrap();
        d.handle_message(1, Message::Unchoke, t).unwrap();
        let mut out = Vec::new();
        d.poll_outgoing(1, t, &mut out);
        assert_eq!(requests(&out).len(), 5);
    }

    #[test]
    fn extension_handshake_goes_first_and_metadata_requests_are_answered() {
        let t = now();
        let mut d = seeding(16 * 1024, 16 * 1024);
        let info: Arc<[u8]> = Arc::from(&b"d4:name1:xe"[..]);
        d.set_metadata(info.clone());
        d.add_peer(1, t, true);
        let theirs = ExtHandshake {
            ut_metadata: Some(3),
            ..ExtHandshake::default()
        };
        let request = MetadataMsg::Request { piece: 0 };
        for msg in [
            Message::Extended {
                id: 0,
                payload: theirs.encode().into(),
            },
            Message::Extended {
                id: OUR_UT_METADATA_ID,
                payload: request.encode().into(),
            },
        ] {
            d.handle_message(1, msg, t).unwrap();
        }
        let mut out = Vec::new();
        d.poll_outgoing(1, t, &mut out);
        let Message::Extended { id: 0, payload } = &out[0] else {
            panic!("first message is not our extension handshake: {:?}", out[0]);
        };
        assert_eq!(
            ExtHandshake::decode(payload).unwrap().metadata_size,
            Some(info.len() as u64)
        );
        let answer = MetadataMsg::Data {
            piece: 0,
            total_size: info.len() as u64,
            data: Bytes::copy_from_slice(&info),
        };
        assert!(out.contains(&Message::Extended {
            id: 3,
            payload: answer.encode().into()
        }));
    }

    #[test]
    fn upload_batches_are_bounded_in_bytes() {
        let t = now();
        let mut d = seeding(256 * 1024, 256 * 1024);
        leecher_joins(&mut d, 1, t);
        for begin in [0, 128 * 1024] {
            let block = BlockRef {
                index: 0,
                begin,
                length: 128 * 1024,
            };
            d.handle_message(1, Message::Request(block), t).unwrap();
        }
        let mut up = Vec::new();
        assert!(
            d.take_uploads(1, 64 * 1024, &mut up),
            "one block at least, the rest waits"
        );
        assert_eq!(up.len(), 1);
        assert!(!d.take_uploads(1, 64 * 1024, &mut up));
        assert_eq!(up.len(), 2);
    }
}
