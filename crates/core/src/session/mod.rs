//! One torrent's session rules, as a sans-IO state machine: [`Session`].
//!
//! Where the [`crate::swarm::Swarm`] decides what to exchange with connected peers, the session
//! decides everything around it: when to announce to which tracker (BEP 12 tiers through
//! [`TrackerList`], `started`/`completed`/`stopped`), which addresses to dial and when to try
//! them again ([`PeerCandidates`]), when to give up, when seeding is over, and how to say why
//! no progress is made. It follows the crate's driving convention:
//! - inputs: [`Session::handle_transfer`] (the swarm's counters), [`Session::handle_peers`],
//!   [`Session::handle_announce_response`] / [`Session::handle_announce_failure`],
//!   [`Session::handle_connection_established`], [`Session::handle_connection_closed`],
//!   [`Session::handle_incoming`], [`Session::handle_shutdown`], and time through
//!   [`Session::handle_timeout`];
//! - deadlines: [`Session::poll_timeout`];
//! - outputs: [`Session::poll_event`] ([`SessionEvent`]: announce to this tracker, dial this
//!   address, seeding began, no progress and why, gone dormant, finished).
//!
//! A seed nobody is connected to for [`SessionConfig::dormant_after`] goes dormant
//! ([`SessionEvent::Dormant`]): its driver may then drop everything but the session, which
//! keeps announcing. A dormant session's only deadlines are its announces (and DHT lookups).
//!
//! Invariants: at most one announce per tier is in flight; at most `max_peers` dialled
//! connections are open; a session that announced ends with `stopped` to every tier that
//! answered (bounded by [`FINAL_ANNOUNCE_TIMEOUT`]); a session never announces if its data was
//! complete from the start and it does not seed; a session goes dormant only with no
//! connection, no piece being verified and no announce or DHT lookup in flight.

pub mod candidates;
#[cfg(test)]
mod tests;

use core::net::SocketAddr;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tracker::tiers::Urgency;
use crate::tracker::{AnnounceRequest, AnnounceResponse, Announcer, Event, TrackerList};

pub use candidates::{CandidateCounts, CloseKind, PeerCandidates};

/// How long the closing announces (`completed`, `stopped`) may take in all.
pub const FINAL_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(3);
/// First wait before asking the trackers again when we have nobody to talk to; doubles up to
/// [`MAX_STARVING_WAIT`].
pub const FIRST_STARVING_WAIT: Duration = Duration::from_secs(2);
/// Longest wait between announces while starving.
pub const MAX_STARVING_WAIT: Duration = Duration::from_secs(60);
/// No progress for this long is reported (then every [`STALL_REPORT_INTERVAL`]).
pub const STALL_REPORT_AFTER: Duration = Duration::from_secs(30);
/// Time between two reports of the same lack of progress.
pub const STALL_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Trackers failing this many times in a row, with nobody else to ask, end a download.
pub const MAX_ANNOUNCE_FAILURES: u32 = 3;
/// Time between DHT lookups (and announces) while peers are plentiful.
pub const DHT_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// First wait before another DHT lookup when we have nobody to talk to; doubles up to
/// [`MAX_STARVING_WAIT`].
pub const FIRST_DHT_RETRY: Duration = Duration::from_secs(5);
/// DHT lookups in a row that found no peer, with nobody else to ask, end a download.
pub const MAX_EMPTY_DHT_LOOKUPS: u32 = 3;
/// How long a seed a daemon hosts stays ready for peers after the last one left before it
/// goes dormant ([`SessionConfig::dormant_after`]): long enough for a peer that reconnects at
/// once (a transport retry, a restarted client) to find it ready.
pub const DORMANT_AFTER: Duration = Duration::from_secs(60);

/// When a seed stops (whichever comes first; neither set: until shutdown).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeedLimits {
    /// Uploaded bytes divided by the torrent's size.
    pub ratio: Option<f64>,
    /// Time spent seeding after the download completed.
    pub time: Option<Duration>,
}

/// Tunables of a session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionConfig {
    /// Most dialled connections open at once.
    pub max_peers: usize,
    /// Most incoming connections open at once.
    pub max_incoming: usize,
    /// Keep seeding after the download completes, until these limits; `None`: stop at once.
    pub seed: Option<SeedLimits>,
    /// Most addresses remembered.
    pub max_known_peers: usize,
    /// Give up once this many announces were answered and nobody is left to try (a metadata
    /// fetch does; a download keeps asking as long as a tracker answers).
    pub give_up_after_announces: Option<u32>,
    /// Look for peers on the DHT (never for private torrents).
    pub dht: bool,
    /// Announce ourselves in DHT lookups (we listen for peers).
    pub dht_announce: bool,
    /// Seeding with no connection for this long, the session goes dormant
    /// ([`SessionEvent::Dormant`]); `None`: never.
    pub dormant_after: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            max_peers: 50,
            max_incoming: 50,
            seed: None,
            max_known_peers: candidates::DEFAULT_MAX_KNOWN,
            give_up_after_announces: None,
            dht: false,
            dht_announce: false,
            dormant_after: None,
        }
    }
}

/// The swarm's counters, as the session needs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Payload bytes uploaded this session.
    pub uploaded: u64,
    /// Payload bytes verified this session.
    pub downloaded: u64,
    /// Bytes of wanted pieces still missing.
    pub left: u64,
    /// Pieces awaiting their hash check.
    pub verifying: usize,
    /// Peers connected and past their handshake.
    pub peers: usize,
}

/// Why a download makes no progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Every tracker fails and no peer is known otherwise.
    TrackersFailing,
    /// The trackers answer but know no peer.
    NoPeersKnown,
    /// Every known peer refused us, dropped us or timed out, `given_up` of them many times.
    PeersUnreachable { known: usize, given_up: usize },
    /// Every known peer was banned for bad data.
    AllBanned { banned: usize },
    /// Connected peers send nothing: they choke us or lack what we need.
    PeersSendNothing { peers: usize },
}

impl core::fmt::Display for Stall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Stall::TrackersFailing => f.write_str("every tracker fails and no peer is known"),
            Stall::NoPeersKnown => {
                f.write_str("the trackers and the DHT know no peers for this torrent")
            }
            Stall::PeersUnreachable { known: 1, .. } => f.write_str(
                "the only known peer refuses or drops our connections; \
                 retrying at growing intervals",
            ),
            Stall::PeersUnreachable { known, given_up } => {
                write!(f, "none of the {known} known peers accepts our connections")?;
                if given_up > 0 {
                    write!(f, " ({given_up} of them failed repeatedly)")?;
                }
                f.write_str("; retrying at growing intervals")
            }
            Stall::AllBanned { banned: 1 } => {
                f.write_str("the only known peer was banned for sending bad data")
            }
            Stall::AllBanned { banned } => {
                write!(
                    f,
                    "all {banned} known peers were banned for sending bad data"
                )
            }
            Stall::PeersSendNothing { peers: 1 } => f.write_str(
                "the only connected peer sends nothing (it chokes us or lacks the pieces we need)",
            ),
            Stall::PeersSendNothing { peers } => write!(
                f,
                "{peers} connected peers send nothing (they choke us or lack the pieces we need)"
            ),
        }
    }
}

/// Why a session gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// No tracker answered the first announce, and no peer is known otherwise.
    NoTrackerAnswered,
    /// Nobody left to try: no peer connected or worth dialling, and no tracker to ask.
    NoPeers,
}

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Every wanted piece is verified (and seeding, if asked, is over).
    Complete,
    /// Stopped by [`Session::handle_shutdown`] before completing.
    Interrupted,
    /// Given up; nothing was announced on the way out.
    GaveUp(GiveUp),
}

/// What the driver must do, from [`Session::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Announce to this tracker; report with [`Session::handle_announce_response`] or
    /// [`Session::handle_announce_failure`].
    Announce {
        url: String,
        request: AnnounceRequest,
    },
    /// Dial this address; report with [`Session::handle_connection_established`] and
    /// [`Session::handle_connection_closed`].
    Connect(SocketAddr),
    /// Look for peers on the DHT (and announce our port if `announce`); report the peers with
    /// [`Session::handle_peers`] and the end with [`Session::handle_dht_done`].
    DhtLookup { announce: bool },
    /// The download completed; seeding begins.
    Seeding,
    /// No progress for a while, and why.
    Stalled(Stall),
    /// Seeding with nobody connected for [`SessionConfig::dormant_after`]: the driver may drop
    /// everything kept for peers and keep only the session, driving its announces, until a
    /// peer connects ([`Session::handle_incoming`] wakes it). Nothing is in flight.
    Dormant,
    /// The session is over: close every connection and stop.
    Finished(Finish),
}

#[derive(Debug)]
enum Phase {
    Running,
    /// Closing announces under way; finished when none is pending or at the deadline. Boxed:
    /// a session spends its life running, and a thousand resting ones would each carry the
    /// room of its tables.
    Closing(Box<Closing>),
    Finished,
}

#[derive(Debug)]
struct Closing {
    finish: Finish,
    /// Events still to send, per tracker, in order.
    pending: HashMap<String, VecDeque<Event>>,
    /// Trackers with an announce in flight.
    waiting: HashSet<String>,
    deadline: Instant,
}

/// The announce in flight for one tier.
#[derive(Debug)]
struct InFlight {
    tier: usize,
    /// The tracker asked.
    asked: String,
    /// The ones to try next if it fails.
    next: VecDeque<String>,
}

/// What a session needs at its start.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Who we are to trackers (info hash, peer id, port, key).
    pub announcer: Announcer,
    /// BEP 12 tiers (may be empty).
    pub trackers: Vec<Vec<String>>,
    /// Peers known without a tracker (a magnet link's `x.pe`).
    pub peers: Vec<SocketAddr>,
    /// The torrent's size, for the seed ratio.
    pub total_length: u64,
    /// Shared: the many sessions of a daemon may point to one copy.
    pub config: Arc<SessionConfig>,
}

/// One torrent's session.
#[derive(Debug)]
pub struct Session {
    announcer: Announcer,
    trackers: TrackerList,
    /// At most one per tier, sorted by tier (smaller than a map: a resting session keeps an
    /// empty one).
    in_flight: Vec<InFlight>,
    candidates: PeerCandidates,
    config: Arc<SessionConfig>,
    total_length: u64,
    /// Dialled connections open.
    outgoing: u32,
    /// Incoming connections open.
    incoming: u32,
    transfer: Transfer,
    /// Whether [`Session::handle_transfer`] was ever called (the first call tells whether the
    /// data was complete from the start).
    started_transfer: bool,
    complete_at_start: bool,
    seeding_since: Option<Instant>,
    /// Some peer was ever known (from any source).
    heard_of_peers: bool,
    /// Announces answered so far.
    answered_announces: u32,
    starving_wait: Duration,
    last_progress: Instant,
    next_stall_report: Option<Instant>,
    phase: Phase,
    events: VecDeque<SessionEvent>,
    /// The latest time passed in (trackers never asked are due then).
    now: Instant,
    /// When the next DHT lookup is due (`None` while one runs or without the DHT).
    next_dht: Option<Instant>,
    dht_in_flight: bool,
    /// DHT lookups in a row that found no peer.
    empty_dht_lookups: u32,
    dht_wait: Duration,
    /// An input changed something [`Session::handle_timeout`] must look at: it is due at once.
    dirty: bool,
    /// Since when the session seeds with nobody connected (`None`: it does not).
    quiet_since: Option<Instant>,
    /// [`SessionEvent::Dormant`] was given and no peer connected since.
    dormant: bool,
}

impl Session {
    /// A session starting at `now`.
    pub fn new(now: Instant, params: SessionParams) -> Session {
        let mut candidates = PeerCandidates::new(params.config.max_known_peers);
        candidates.set_own_port(params.announcer.port);
        let mut session = Session {
            announcer: params.announcer,
            trackers: TrackerList::new(params.trackers),
            in_flight: Vec::new(),
            candidates,
            config: params.config,
            total_length: params.total_length,
            outgoing: 0,
            incoming: 0,
            transfer: Transfer::default(),
            started_transfer: false,
            complete_at_start: false,
            seeding_since: None,
            heard_of_peers: false,
            answered_announces: 0,
            starving_wait: FIRST_STARVING_WAIT,
            last_progress: now,
            next_stall_report: None,
            phase: Phase::Running,
            events: VecDeque::new(),
            now,
            dirty: true,
            next_dht: None,
            dht_in_flight: false,
            empty_dht_lookups: 0,
            dht_wait: FIRST_DHT_RETRY,
            quiet_since: None,
            dormant: false,
        };
        if session.config.dht {
            session.next_dht = Some(now);
        }
        session.handle_peers(&params.peers);
        session
    }

    /// Who we are to trackers.
    pub fn announcer(&self) -> &Announcer {
        &self.announcer
    }

    /// Whether the session ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished)
    }

    /// The dial queue's counts.
    pub fn candidate_counts(&self) -> CandidateCounts {
        self.candidates.counts()
    }

    /// Whether `addr` is banned.
    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.candidates.is_banned(addr)
    }

    fn is_done(&self) -> bool {
        self.started_transfer && self.transfer.left == 0
    }

    /// Whether the session went dormant ([`SessionEvent::Dormant`]) and no peer connected
    /// since.
    pub fn is_dormant(&self) -> bool {
        self.dormant
    }

    /// Gives back the spare room of its queues and tables (for a session kept long with
    /// little to do, as a dormant one: each holds only what it uses).
    pub fn shrink_to_fit(&mut self) {
        self.events.shrink_to_fit();
        self.in_flight.shrink_to_fit();
    }

    // ---- inputs ----

    /// The swarm's counters now. Call it before the first [`Session::handle_timeout`]: data
    /// complete from the start is never announced unless seeding.
    pub fn handle_transfer(&mut self, now: Instant, transfer: Transfer) {
        self.now = self.now.max(now);
        if !self.started_transfer {
            self.started_transfer = true;
            self.complete_at_start = transfer.left == 0;
        }
        if transfer.downloaded > self.transfer.downloaded {
            self.last_progress = now;
            self.next_stall_report = None;
        }
        let old = self.transfer;
        // Only what the rules look at makes the session due (not every verified piece).
        let seed_ratio =
            self.seeding_since.is_some() && self.config.seed.is_some_and(|l| l.ratio.is_some());
        self.dirty |= (transfer.left == 0) != (old.left == 0)
            || (transfer.peers == 0) != (old.peers == 0)
            || (transfer.verifying == 0) != (old.verifying == 0)
            || (seed_ratio && transfer.uploaded != old.uploaded);
        self.transfer = transfer;
    }

    /// Peers heard of (from a tracker, the DHT, peer exchange or a magnet link). A seed keeps
    /// none: it dials nobody.
    pub fn handle_peers(&mut self, peers: &[SocketAddr]) {
        self.dirty = true;
        // (A seed whose data went missing downloads again: it keeps them again.)
        let seeding = self.seeding_since.is_some() && self.is_done();
        for &addr in peers {
            self.heard_of_peers |= addr.port() != 0;
            if !seeding {
                self.candidates.add(addr);
            }
        }
    }

    /// `url` answered an announce.
    pub fn handle_announce_response(
        &mut self,
        now: Instant,
        url: &str,
        response: &AnnounceResponse,
    ) {
        self.trackers.on_success(url, now, response);
        self.answered_announces = self.answered_announces.saturating_add(1);
        self.handle_peers(&response.peers);
        self.announce_done(now, url);
    }

    /// An announce to `url` failed (the driver keeps the error itself).
    pub fn handle_announce_failure(&mut self, now: Instant, url: &str) {
        self.dirty = true;
        self.trackers.on_failure(url, now);
        if let Some(tier) = self.trackers.tier_of(url) {
            let i = self.in_flight_index(tier);
            if let Some(f) = i.ok().and_then(|i| self.in_flight.get_mut(i)) {
                if f.asked == url {
                    // BEP 12: on to the next tracker of the tier.
                    if let Some(next) = f.next.pop_front() {
                        f.asked = next.clone();
                        let request = self.request_for(&next);
                        self.events
                            .push_back(SessionEvent::Announce { url: next, request });
                        return;
                    }
                }
            }
        }
        self.announce_done(now, url);
    }

    /// A DHT lookup asked for with [`SessionEvent::DhtLookup`] ended, having found `found`
    /// peers (already given to [`Session::handle_peers`]).
    pub fn handle_dht_done(&mut self, now: Instant, found: usize) {
        self.dirty = true;
        self.dht_in_flight = false;
        let starving = self.outgoing + self.incoming == 0 && !self.candidates.has_ready();
        let wait = if found > 0 {
            self.empty_dht_lookups = 0;
            self.dht_wait = FIRST_DHT_RETRY;
            if starving {
                FIRST_DHT_RETRY
            } else {
                DHT_INTERVAL
            }
        } else {
            self.empty_dht_lookups = self.empty_dht_lookups.saturating_add(1);
            let wait = if starving {
                self.dht_wait
            } else {
                DHT_INTERVAL
            };
            self.dht_wait = (self.dht_wait * 2).min(MAX_STARVING_WAIT);
            wait
        };
        self.next_dht = Some(now + wait);
    }

    /// A connection we dialled to `addr` completed its handshake.
    pub fn handle_connection_established(&mut self, addr: SocketAddr) {
        self.candidates.on_established(addr);
        self.starving_wait = FIRST_STARVING_WAIT;
    }

    /// A connection ended: one we dialled to `addr` (`outgoing`), or an incoming one.
    pub fn handle_connection_closed(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        outgoing: bool,
        kind: CloseKind,
    ) {
        self.dirty = true;
        if outgoing {
            self.outgoing = self.outgoing.saturating_sub(1);
            self.candidates.on_closed(now, addr, kind);
        } else {
            self.incoming = self.incoming.saturating_sub(1);
            if kind == CloseKind::Banned {
                self.candidates.ban(addr);
            }
        }
    }

    /// Bans `addr` for bad data proven after its connection ended (the swarm's verdict came
    /// late, see `SwarmEvent::Banned`): it is never dialled again, and refused when it
    /// connects.
    pub fn ban(&mut self, addr: SocketAddr) {
        self.candidates.ban(addr);
    }

    /// A peer connected to us from `addr`. Returns whether to accept it (within the incoming
    /// limit, not banned, not finishing); an accepted connection is reported closed later.
    pub fn handle_incoming(&mut self, addr: SocketAddr) -> bool {
        let accept = matches!(self.phase, Phase::Running)
            && (self.incoming as usize) < self.config.max_incoming
            && !self.candidates.is_banned(&addr);
        if accept {
            self.incoming = self.incoming.saturating_add(1);
            self.dormant = false;
            self.quiet_since = None;
            self.dirty = true;
        }
        accept
    }

    /// Stop: the closing announces go out, then [`SessionEvent::Finished`].
    pub fn handle_shutdown(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Running) {
            let finish = if self.is_done() {
                Finish::Complete
            } else {
                Finish::Interrupted
            };
            self.close(now, finish);
        }
    }

    /// Time passed: announces due, addresses to dial, seed limits, give-up, reports.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.dirty = false;
        self.candidates.handle_timeout(now);
        match &mut self.phase {
            Phase::Finished => return,
            Phase::Closing(c) => {
                let over = (c.waiting.is_empty() && c.pending.values().all(VecDeque::is_empty))
                    || now >= c.deadline;
                if over {
                    let finish = c.finish;
                    self.finish(finish);
                }
                return;
            }
            Phase::Running => {}
        }
        let done = self.is_done();
        if done && self.seeding_since.is_none() {
            self.seeding_since = Some(now);
            self.candidates.forget_all_but_banned();
            if self.config.seed.is_none() {
                self.close(now, Finish::Complete);
                return;
            }
            self.events.push_back(SessionEvent::Seeding);
            if !self.complete_at_start {
                // Tell the trackers that had our `started` (those that answered) that we
                // completed.
                for url in self.trackers.answered() {
                    let request = self.request(Event::Completed);
                    self.events
                        .push_back(SessionEvent::Announce { url, request });
                }
            }
        }
        if self.seed_over(now) {
            self.close(now, Finish::Complete);
            return;
        }
        self.announce_due(now, done);
        self.dht_due(now);
        self.dial(done);
        if !done {
            if let Some(reason) = self.give_up() {
                self.finish(Finish::GaveUp(reason));
                return;
            }
            self.report_stall(now);
        }
        self.rest(now, done);
    }

    // ---- outputs ----

    /// When [`Session::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        match &self.phase {
            Phase::Finished => return None,
            Phase::Closing(c) => return Some(c.deadline),
            Phase::Running => {}
        }
        if self.dirty {
            return Some(self.now);
        }
        let done = self.is_done();
        if !done && (self.outgoing as usize) < self.config.max_peers && self.candidates.has_ready()
        {
            return Some(self.now);
        }
        // A tier with an announce in flight is due again only once it ends (which makes the
        // session due): counting it would wake the driver at once, over and over.
        let urgency = self.urgency(done);
        for tier in (0..self.trackers.tiers().len()).filter(|&t| !self.tier_in_flight(t)) {
            consider(self.trackers.tier_next_announce(tier, self.now, urgency));
        }
        consider(self.next_dht);
        if !done {
            // A seed never dials: addresses waiting out a retry are no reason to wake it.
            consider(self.candidates.poll_timeout());
        }
        // Whatever is in flight makes the session due when it ends.
        let settled = self.in_flight.is_empty() && !self.dht_in_flight;
        if !self.dormant && settled {
            if let (Some(since), Some(after)) = (self.quiet_since, self.config.dormant_after) {
                consider(since.checked_add(after));
            }
        }
        if let (Some(since), Some(t)) = (self.seeding_since, self.config.seed.and_then(|l| l.time))
        {
            consider(since.checked_add(t));
        }
        if !done {
            consider(Some(
                self.next_stall_report
                    .unwrap_or(self.last_progress + STALL_REPORT_AFTER),
            ));
        }
        next
    }

    /// The next thing the driver must do.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    // ---- internals ----

    /// Where `tier`'s announce in flight is in `in_flight` (`Err`: where it would go).
    fn in_flight_index(&self, tier: usize) -> Result<usize, usize> {
        self.in_flight.binary_search_by_key(&tier, |f| f.tier)
    }

    fn tier_in_flight(&self, tier: usize) -> bool {
        self.in_flight_index(tier).is_ok()
    }

    fn urgency(&self, done: bool) -> Urgency {
        if done {
            Urgency::Normal
        } else if self.outgoing + self.incoming == 0 && !self.candidates.has_ready() {
            Urgency::Starving(self.starving_wait)
        } else if (self.outgoing as usize) < self.config.max_peers / 2 {
            Urgency::MorePeers
        } else {
            Urgency::Normal
        }
    }

    fn request(&self, event: Event) -> AnnounceRequest {
        let t = &self.transfer;
        // Before the size is known (a magnet link), a positive `left` says we are a leecher.
        let left = if self.started_transfer { t.left } else { 1 };
        self.announcer
            .request(event, t.uploaded, t.downloaded, left)
    }

    /// The regular announce to `url`: `started` the first time it answers.
    fn request_for(&self, url: &str) -> AnnounceRequest {
        // A tracker that answered took our `started`.
        let event = if self.trackers.has_answered(url) {
            Event::None
        } else {
            Event::Started
        };
        self.request(event)
    }

    fn announce_due(&mut self, now: Instant, done: bool) {
        let urgency = self.urgency(done);
        let mut sent = false;
        for (tier, urls) in self.trackers.due(now, urgency) {
            let Err(at) = self.in_flight_index(tier) else {
                continue;
            };
            let mut urls: VecDeque<String> = urls.into();
            let Some(url) = urls.pop_front() else {
                continue;
            };
            let request = self.request_for(&url);
            self.in_flight.insert(
                at,
                InFlight {
                    tier,
                    asked: url.clone(),
                    next: urls,
                },
            );
            self.events
                .push_back(SessionEvent::Announce { url, request });
            sent = true;
        }
        if sent && matches!(urgency, Urgency::Starving(_)) && self.trackers.any_answered() {
            self.starving_wait = (self.starving_wait * 2).min(MAX_STARVING_WAIT);
        }
    }

    /// An announce to `url` ended (answered, or failed with no other tracker to try).
    fn announce_done(&mut self, now: Instant, url: &str) {
        if let Some(tier) = self.trackers.tier_of(url) {
            if let Ok(i) = self.in_flight_index(tier) {
                if self.in_flight.get(i).is_some_and(|f| f.asked == url) {
                    self.in_flight.remove(i);
                }
            }
        }
        if let Phase::Closing(c) = &mut self.phase {
            c.waiting.remove(url);
            if let Some(event) = c.pending.get_mut(url).and_then(VecDeque::pop_front) {
                c.waiting.insert(url.to_string());
                let request = self.request(event);
                self.events.push_back(SessionEvent::Announce {
                    url: url.to_string(),
                    request,
                });
            }
            self.handle_timeout(now);
        }
    }

    fn dht_due(&mut self, now: Instant) {
        if self.next_dht.is_some_and(|t| t <= now) && !self.dht_in_flight {
            self.next_dht = None;
            self.dht_in_flight = true;
            self.events.push_back(SessionEvent::DhtLookup {
                announce: self.config.dht_announce,
            });
        }
    }

    fn dial(&mut self, done: bool) {
        while !done && (self.outgoing as usize) < self.config.max_peers {
            let Some(addr) = self.candidates.next_to_dial() else {
                break;
            };
            self.outgoing = self.outgoing.saturating_add(1);
            self.events.push_back(SessionEvent::Connect(addr));
        }
    }

    /// Notes whether the seed is quiet (nobody connected, nothing verifying) and, once it has
    /// been for [`SessionConfig::dormant_after`] with nothing in flight, goes dormant.
    fn rest(&mut self, now: Instant, done: bool) {
        let Some(after) = self.config.dormant_after else {
            return;
        };
        let t = &self.transfer;
        let quiet = done
            && self.seeding_since.is_some()
            && self.outgoing + self.incoming == 0
            && t.peers == 0
            && t.verifying == 0;
        if !quiet {
            self.quiet_since = None;
            self.dormant = false;
            return;
        }
        let since = *self.quiet_since.get_or_insert(now);
        let idle = self.in_flight.is_empty() && !self.dht_in_flight && self.events.is_empty();
        if !self.dormant && idle && now.saturating_duration_since(since) >= after {
            self.dormant = true;
            self.events.push_back(SessionEvent::Dormant);
        }
    }

    fn seed_over(&self, now: Instant) -> bool {
        let (Some(since), Some(limits)) = (self.seeding_since, self.config.seed) else {
            return false;
        };
        let ratio_met = limits
            .ratio
            .is_some_and(|r| self.transfer.uploaded as f64 >= r * self.total_length as f64);
        let time_met = limits
            .time
            .is_some_and(|t| now.saturating_duration_since(since) >= t);
        ratio_met || time_met
    }

    fn give_up(&self) -> Option<GiveUp> {
        let alone = self.outgoing + self.incoming == 0 && self.transfer.peers == 0;
        if !alone || !self.in_flight.is_empty() || self.dht_in_flight || self.transfer.verifying > 0
        {
            return None;
        }
        let have_trackers = !self.trackers.is_empty();
        if have_trackers
            && !self.config.dht
            && !self.heard_of_peers
            && !self.trackers.any_answered()
            && self.trackers.all_failing(1)
        {
            return Some(GiveUp::NoTrackerAnswered);
        }
        let trackers_exhausted = !have_trackers
            || self.trackers.all_failing(MAX_ANNOUNCE_FAILURES)
            || self
                .config
                .give_up_after_announces
                .is_some_and(|n| self.answered_announces >= n);
        let dht_exhausted = !self.config.dht || self.empty_dht_lookups >= MAX_EMPTY_DHT_LOOKUPS;
        (trackers_exhausted && dht_exhausted && !self.candidates.has_hope())
            .then_some(GiveUp::NoPeers)
    }

    fn report_stall(&mut self, now: Instant) {
        let due = self
            .next_stall_report
            .unwrap_or(self.last_progress + STALL_REPORT_AFTER);
        if now < due {
            return;
        }
        self.next_stall_report = Some(now + STALL_REPORT_INTERVAL);
        let counts = self.candidates.counts();
        let known = counts.ready + counts.dialled + counts.retrying + counts.given_up;
        let stall = if self.transfer.peers > 0 {
            Stall::PeersSendNothing {
                peers: self.transfer.peers,
            }
        } else if known == 0 && counts.banned > 0 {
            Stall::AllBanned {
                banned: counts.banned,
            }
        } else if known > 0 {
            Stall::PeersUnreachable {
                known,
                given_up: counts.given_up,
            }
        } else if !self.trackers.is_empty() && !self.trackers.any_answered() && !self.config.dht {
            Stall::TrackersFailing
        } else {
            Stall::NoPeersKnown
        };
        self.events.push_back(SessionEvent::Stalled(stall));
    }

    /// Starts the closing announces (if we ever announced), then finishes.
    fn close(&mut self, now: Instant, finish: Finish) {
        let mut pending = HashMap::new();
        for url in self.trackers.working_fronts() {
            let mut events = VecDeque::new();
            // A seed told the trackers when seeding began; otherwise they hear it now.
            let completed_owed =
                finish == Finish::Complete && !self.complete_at_start && self.config.seed.is_none();
            if completed_owed {
                events.push_back(Event::Completed);
            }
            events.push_back(Event::Stopped);
            pending.insert(url, events);
        }
        let mut waiting = HashSet::new();
        for (url, events) in pending.iter_mut() {
            if let Some(event) = events.pop_front() {
                waiting.insert(url.clone());
                let request = self.request(event);
                self.events.push_back(SessionEvent::Announce {
                    url: url.clone(),
                    request,
                });
            }
        }
        self.in_flight.clear();
        self.phase = Phase::Closing(Box::new(Closing {
            finish,
            pending,
            waiting,
            deadline: now + FINAL_ANNOUNCE_TIMEOUT,
        }));
        self.handle_timeout(now);
    }

    fn finish(&mut self, finish: Finish) {
        self.phase = Phase::Finished;
        self.events.push_back(SessionEvent::Finished(finish));
    }
}
