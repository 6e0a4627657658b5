//! What the swarm knows about one connected peer: its pieces, the choke and interest flags of
//! both sides, the blocks each side asked of the other, its measured rates and its timers.
//!
//! Invariants: `inflight` holds each block at most once, oldest request first; `uploads` holds
//! at most `Config::max_upload_queue` blocks; rates are bytes per second smoothed over
//! [`RATE_WINDOW`] samples.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Bitfield, Config, BLOCK_LEN};
use crate::hashes::BlockHashJob;
use crate::wire::fast::{allowed_fast_set, ALLOWED_FAST_COUNT};
use crate::wire::{BlockRef, Handshake, Message};

/// How often rates are sampled (and request pipelines resized) while a peer is active.
pub const RATE_WINDOW: Duration = Duration::from_millis(500);

/// Rates below this count as zero, so an idle peer stops needing rate samples.
const IDLE_RATE: f64 = 1.0;

/// Most pieces remembered per peer from `allowed fast` and `suggest` messages (BEP 6).
pub const MAX_FAST_PIECES: usize = 32;

/// What the peer said it supports in its handshake, and what the driver derived from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerFeatures {
    /// BEP 10 extension protocol.
    pub extensions: bool,
    /// BEP 6 fast extension (both sides set the bit).
    pub fast: bool,
    /// The pieces this peer may request while we choke it: its canonical allowed-fast set
    /// (`crate::wire::fast::allowed_fast_set`); used only with `fast`.
    pub allowed_fast: Vec<u32>,
    /// The peer's address (for peer exchange): the one we dialled, or the remote end of an
    /// incoming connection (whose port is then replaced by the `p` of its extension handshake).
    pub addr: Option<SocketAddr>,
    /// We dialled it (as opposed to it connecting to us).
    pub outgoing: bool,
    /// A BEP 19 web seed behind [`crate::webseed::WebSeed`]: it gets neighbouring pieces
    /// (they merge into one HTTP range) and serves requests in order, rejecting what it drops.
    pub web_seed: bool,
    /// It speaks BitTorrent v2 on this connection (BEP 52): the connection names a hybrid by
    /// its v2 hash, whether opened so or upgraded from the v1 hash (see
    /// [`Handshake::answer_to`]). It may then be asked for hashes. (Every peer of a v2-only
    /// torrent speaks v2 whatever this says.)
    pub v2: bool,
}

impl PeerFeatures {
    /// What a peer at `addr` and we agreed on in the handshakes (`ours` names the torrent as
    /// we sent it or answered with it; a name other than `theirs` is a hybrid's v2 hash, so
    /// the connection speaks v2):
    /// the extension protocol if it offers it, the fast extension (BEP 6) only if both sides
    /// set the bit, and then its canonical allowed-fast set (IPv4 peers only, as BEP 6 defines
    /// the set).
    pub fn negotiate(
        ours: &Handshake,
        theirs: &Handshake,
        addr: SocketAddr,
        outgoing: bool,
        piece_count: u32,
    ) -> PeerFeatures {
        let fast = theirs.supports_fast() && ours.supports_fast();
        let allowed_fast = match addr.ip() {
            IpAddr::V4(ip) if fast => {
                allowed_fast_set(ip, &ours.info_hash, piece_count, ALLOWED_FAST_COUNT)
            }
            _ => Vec::new(),
        };
        PeerFeatures {
            extensions: theirs.supports_extensions(),
            fast,
            allowed_fast,
            addr: Some(addr),
            outgoing,
            web_seed: false,
            v2: theirs.info_hash != ours.info_hash,
        }
    }
}

#[derive(Debug)]
pub(super) struct PeerState {
    /// Both sides speak the fast extension.
    pub(super) fast: bool,
    /// Pieces the peer lets us request while it chokes us.
    pub(super) allowed_in: Vec<u32>,
    /// Pieces we let the peer request while we choke it.
    pub(super) allowed_out: Vec<u32>,
    /// Pieces the peer suggested, oldest first.
    pub(super) suggested: Vec<u32>,
    /// The id the peer wants for `ut_pex` messages (BEP 11), if it speaks peer exchange.
    pub(super) ut_pex: Option<u8>,
    /// Where the peer accepts connections, as told to others through peer exchange (`None`
    /// for an incoming peer that did not say its port).
    pub(super) pex_addr: Option<SocketAddr>,
    pub(super) outgoing: bool,
    /// The remote end of the connection.
    pub(super) remote: Option<SocketAddr>,
    /// Addresses we told this peer about and did not drop since.
    pub(super) pex_sent: BTreeSet<SocketAddr>,
    /// When our next `ut_pex` message to it is due.
    pub(super) next_pex: Option<Instant>,
    /// When its last `ut_pex` message arrived (more than one a minute is ignored).
    pub(super) last_pex_in: Option<Instant>,
    pub(super) has: Bitfield,
    pub(super) peer_choking: bool,
    pub(super) peer_interested: bool,
    pub(super) am_interested: bool,
    pub(super) am_choking: bool,
    /// Blocks the peer asked of us, in order, not yet handed to the driver.
    pub(super) uploads: VecDeque<BlockRef>,
    /// Its requests for block hashes (BEP 52) not yet handed to the driver.
    pub(super) hash_jobs: VecDeque<BlockHashJob>,
    /// Its requests for block hashes the driver is computing.
    pub(super) hash_jobs_running: usize,
    /// Blocks asked of this peer and when, oldest first.
    pub(super) inflight: VecDeque<(BlockRef, Instant)>,
    /// Most requests the peer queues (its `reqq`, or a safe default).
    pub(super) max_outstanding: u32,
    /// The id the peer wants for `ut_metadata` messages sent to it.
    pub(super) ut_metadata: Option<u8>,
    /// Pieces this peer started: it is asked for their blocks first (whole-piece affinity).
    pub(super) current: Vec<u32>,
    pub(super) outbox: Vec<Message>,
    pub(super) last_received: Instant,
    pub(super) last_sent: Instant,
    pub(super) last_block: Instant,
    window_start: Instant,
    window_bytes: u64,
    upload_window_bytes: u64,
    /// Smoothed download rate from this peer.
    pub(super) rate: f64,
    /// Smoothed upload rate to this peer.
    pub(super) upload_rate: f64,
    /// Requests kept in flight: the bandwidth-delay product of its rate, within bounds.
    pub(super) target_requests: u32,
    /// Pieces that failed their hash check with this peer as their only contributor.
    pub(super) hash_failures: u32,
    /// The peer sent at least one block we kept (it counts in `SwarmStats::peers_used`).
    pub(super) delivered: bool,
    /// When it last held one of our upload slots (`None`: never); the choker serves those
    /// that waited longest first among equals.
    pub(super) last_unchoked: Option<Instant>,
    /// It shared a piece that failed: the pieces it starts are its alone until one passes, so
    /// that their failure is surely its own.
    pub(super) on_parole: bool,
    /// A web seed (see [`PeerFeatures::web_seed`]).
    pub(super) web_seed: bool,
    /// It may be asked for hashes (see [`PeerFeatures::v2`]).
    pub(super) v2: bool,
    /// The last piece it started (web seeds prefer the next one).
    pub(super) last_started: Option<u32>,
}

/// Requests we keep outstanding at a peer that did not tell us its `reqq`.
pub const DEFAULT_PEER_REQQ: u32 = 250;

impl PeerState {
    pub(super) fn new(now: Instant, piece_count: u32, config: &Config) -> PeerState {
        PeerState {
            fast: false,
            allowed_in: Vec::new(),
            allowed_out: Vec::new(),
            suggested: Vec::new(),
            ut_pex: None,
            pex_addr: None,
            outgoing: false,
            remote: None,
            pex_sent: BTreeSet::new(),
            next_pex: None,
            last_pex_in: None,
            has: Bitfield::new(piece_count),
            peer_choking: true,
            peer_interested: false,
            am_interested: false,
            am_choking: true,
            uploads: VecDeque::new(),
            hash_jobs: VecDeque::new(),
            hash_jobs_running: 0,
            inflight: VecDeque::new(),
            max_outstanding: DEFAULT_PEER_REQQ,
            ut_metadata: None,
            current: Vec::new(),
            outbox: Vec::new(),
            last_received: now,
            last_sent: now,
            last_block: now,
            window_start: now,
            window_bytes: 0,
            upload_window_bytes: 0,
            rate: 0.0,
            upload_rate: 0.0,
            target_requests: config.min_requests,
            hash_failures: 0,
            delivered: false,
            last_unchoked: None,
            on_parole: false,
            web_seed: false,
            v2: false,
            last_started: None,
        }
    }

    /// We choke the peer: its queued requests are dropped, or, with the fast extension,
    /// rejected (except for pieces it may have while choked).
    pub(super) fn choke_uploads(&mut self) {
        if !self.fast {
            self.uploads.clear();
            return;
        }
        let allowed = &self.allowed_out;
        let mut kept = VecDeque::new();
        for block in self.uploads.drain(..) {
            if allowed.contains(&block.index) {
                kept.push_back(block);
            } else {
                self.outbox.push(Message::Reject(block));
            }
        }
        self.uploads = kept;
    }

    /// Whether we may ask this peer for blocks now: it unchoked us, or it lets us have some
    /// pieces while choked (BEP 6).
    pub(super) fn may_request(&self) -> bool {
        !self.peer_choking || (self.fast && !self.allowed_in.is_empty())
    }

    /// Whether a block of `index` may be asked of this peer now.
    pub(super) fn may_request_piece(&self, index: u32) -> bool {
        !self.peer_choking || (self.fast && self.allowed_in.contains(&index))
    }

    /// Remembers a piece from an `allowed fast` or `suggest` message, within the bound.
    pub(super) fn remember(list: &mut Vec<u32>, index: u32) {
        if list.contains(&index) {
            return;
        }
        if list.len() >= MAX_FAST_PIECES {
            list.remove(0);
        }
        list.push(index);
    }

    /// Requests to keep in flight now.
    pub(super) fn pipeline_target(&self) -> usize {
        self.target_requests.min(self.max_outstanding) as usize
    }

    /// A block we asked for arrived.
    pub(super) fn on_block(&mut self, now: Instant, bytes: u64) {
        self.last_block = now;
        self.window_bytes += bytes;
    }

    /// We sent `bytes` of block data to the peer.
    pub(super) fn on_uploaded(&mut self, bytes: u64) {
        self.upload_window_bytes += bytes;
    }

    /// Whether the peer needs rate samples: data moves or its rates have not decayed yet.
    pub(super) fn is_active(&self) -> bool {
        !self.inflight.is_empty()
            || !self.uploads.is_empty()
            || self.window_bytes > 0
            || self.upload_window_bytes > 0
            || self.rate >= IDLE_RATE
            || self.upload_rate >= IDLE_RATE
    }

    /// Closes the rate window if it is at least [`RATE_WINDOW`] old: updates both rates and
    /// resizes the request pipeline to hold `request_queue_time` worth of the peer's rate.
    pub(super) fn sample_rates(&mut self, now: Instant, config: &Config) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < RATE_WINDOW {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let down = self.window_bytes as f64 / secs;
        self.rate = if self.rate == 0.0 {
            down
        } else {
            0.5 * self.rate + 0.5 * down
        };
        let up = self.upload_window_bytes as f64 / secs;
        self.upload_rate = 0.5 * self.upload_rate + 0.5 * up;
        for r in [&mut self.rate, &mut self.upload_rate] {
            if *r < IDLE_RATE {
                *r = 0.0;
            }
        }
        self.window_start = now;
        self.window_bytes = 0;
        self.upload_window_bytes = 0;
        let bdp = self.rate * config.request_queue_time.as_secs_f64() / f64::from(BLOCK_LEN);
        self.target_requests = (bdp as u32).clamp(config.min_requests, config.max_requests);
    }

    /// The earliest of this peer's own deadlines: idle timeout, keep-alive, request timeout.
    /// (Lost requests are checked with the rate samples, which run while requests are out.)
    pub(super) fn next_deadline(&self, config: &Config) -> Instant {
        let idle = self.last_received + config.idle_timeout;
        let keepalive = self.last_sent + config.keepalive_interval;
        let mut next = idle.min(keepalive);
        if !self.inflight.is_empty() {
            next = next.min(self.last_block + config.request_timeout);
        }
        if let Some(pex) = self.next_pex {
            next = next.min(pex);
        }
        next
    }
}
