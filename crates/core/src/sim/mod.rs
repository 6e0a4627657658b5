//! An in-memory swarm on virtual time, for tests (as quinn's `Pair`): bitrush [`Swarm`]s and
//! scripted peers, honest and hostile ([`peers`]), exchange [`Message`]s over simulated links,
//! stepped deterministically from a seed.
//!
//! The driver follows the swarm's driving convention as the engine does
//! (`bitrush::engine::{peer, torrent}`): a swarm takes every message that reaches a link at one
//! instant (one read), then the driver drains `poll_transmit` and one batch of `poll_upload`
//! for that peer (the next batch once this one is on the wire), then `poll_event`. `Verify`
//! is answered with a SHA-1 check against the torrent's piece hashes after a short delay (a
//! good piece is written to the node's disk first), `Wake` services that peer, and
//! `Disconnect` closes the link at that end (the other end is told once what was already
//! sent has reached it). A node is an address: as the engine's session does, a swarm bans
//! the node behind a `Disconnect` for bad data or a `Banned` (a peer proven bad after it
//! left), and every later link between the two is refused. Time jumps to the earliest of the
//! next delivery, verdict or scripted timer and every swarm's `poll_timeout()`, where
//! `handle_timeout` is called.
//!
//! Links carry messages in order each way, after the link's latency plus the time to send
//! them at its bandwidth (if limited); a closed end drops whatever reaches it. One seeded
//! [`StdRng`] decides everything random, so a seed replays the same run. `SIM_VERBOSE=1`
//! prints every step to stderr, to follow a failing case.
//!
//! Checked after every step ([`Sim::step`]): every swarm's `check_invariants()`, and what can
//! be seen from outside: a swarm asks only for pieces it lacks, only of peers that said they
//! have them and that unchoked it; it uploads only verified pieces and only to peers it
//! unchoked; it marks had only pieces whose hash the sim verified; it names with `Banned` only
//! peers that left; and virtual time moves on.

mod peers;
mod props;
mod regressions;
mod scenarios;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha1::{Digest, Sha1};

use crate::hashes::PieceHashes;
use crate::merkle;
use crate::metainfo::{FileEntry, Info, MetaVersion};
use crate::swarm::{Bitfield, Config, PeerError, PeerFeatures, PeerKey, Swarm, SwarmEvent};
use crate::wire::{BlockRef, HashRequest, Message};

pub(crate) use self::peers::{Behaviour, BitfieldFault, RequestFault, ScriptedPeer, Tick};

/// A node of the simulation (its index).
pub(crate) type NodeId = usize;

/// A connection between two nodes; also the [`PeerKey`] both ends use for it.
pub(crate) type LinkId = PeerKey;

/// Most block data uploaded to one peer in one pass, as the engine's `UPLOAD_BATCH_BYTES`.
const UPLOAD_BATCH_BYTES: u64 = 256 * 1024;

/// Steps at one instant before the run counts as stuck (time must move on).
const MAX_STEPS_WITHOUT_TIME: u64 = 200_000;

/// A torrent's payload and piece hashes.
#[derive(Debug)]
pub(crate) struct Torrent {
    pub piece_length: u32,
    pub payload: Bytes,
    pub hashes: Vec<[u8; 20]>,
    /// A v2-only torrent's hashes (one file, its piece layer known): pieces are checked
    /// against its merkle tree instead of `hashes`, and peers ask for block hashes.
    pub v2: Option<Arc<PieceHashes>>,
}

impl Torrent {
    /// `total_length` random bytes (from `rng`) cut into pieces of `piece_length`.
    pub fn generate(rng: &mut impl RngCore, piece_length: u32, total_length: usize) -> Torrent {
        let mut payload = vec![0u8; total_length];
        rng.fill_bytes(&mut payload);
        let hashes = payload
            .chunks(piece_length as usize)
            .map(|p| Sha1::digest(p).into())
            .collect();
        Torrent {
            piece_length,
            payload: payload.into(),
            hashes,
            v2: None,
        }
    }

    /// As [`Torrent::generate`], but a v2-only torrent of one file (`piece_length` at least
    /// 16 KiB, a power of two).
    pub fn generate_v2(rng: &mut impl RngCore, piece_length: u32, total_length: usize) -> Torrent {
        let mut torrent = Torrent::generate(rng, piece_length, total_length);
        let leaves = merkle::block_hashes(&torrent.payload);
        let mut file = FileEntry::new(vec!["x".into()], total_length as u64, 0);
        file.pieces_root = Some(merkle::file_root(&leaves, piece_length));
        let info = Info {
            name: "x".into(),
            original_name: None,
            piece_length,
            pieces: Vec::new(),
            files: vec![file],
            multi_file: false,
            total_length: total_length as u64,
            private: false,
            version: MetaVersion::V2,
        };
        let mut layers = BTreeMap::new();
        if torrent.piece_count() > 1 {
            let per_piece = merkle::blocks_per_piece(piece_length);
            layers.insert(0, merkle::piece_layer(&leaves, per_piece));
        }
        let hashes = PieceHashes::new(Arc::new(info), &layers).expect("a consistent layer");
        torrent.v2 = Some(Arc::new(hashes));
        torrent
    }

    /// Whether `data` is piece `index`, by the torrent's hashes.
    fn check(&self, index: u32, data: &[u8]) -> bool {
        match &self.v2 {
            Some(v2) => v2.check(index, data),
            None => self
                .hashes
                .get(index as usize)
                .is_some_and(|h| Sha1::digest(data).as_slice() == h),
        }
    }

    /// The answer of a peer that has every piece to a `hash request` (a reject without v2
    /// hashes), computing block hashes from the payload as the engine does from its disk.
    pub fn answer_hashes(&self, request: &HashRequest) -> Message {
        let Some(v2) = &self.v2 else {
            return Message::HashReject(*request);
        };
        let Some(mut job) = v2.block_job(request) else {
            return v2.answer(request);
        };
        for i in job.pieces() {
            let data = &self.payload[self.piece_range(i)];
            let data = data.get(..job.data_len(i) as usize).unwrap_or(data);
            for block in data.chunks(merkle::BLOCK_LEN as usize) {
                job.add_block(block);
            }
        }
        job.finish()
    }

    pub fn piece_count(&self) -> u32 {
        self.hashes.len() as u32
    }

    pub fn total_length(&self) -> u64 {
        self.payload.len() as u64
    }

    pub fn piece_len(&self, index: u32) -> u32 {
        let start = u64::from(index) * u64::from(self.piece_length);
        self.total_length()
            .saturating_sub(start)
            .min(u64::from(self.piece_length)) as u32
    }

    /// Byte range of `block` in the payload, if it lies inside one piece.
    pub fn range(&self, block: BlockRef) -> Option<std::ops::Range<usize>> {
        let end = u64::from(block.begin) + u64::from(block.length);
        if block.index >= self.piece_count() || end > u64::from(self.piece_len(block.index)) {
            return None;
        }
        let start = block.index as usize * self.piece_length as usize + block.begin as usize;
        Some(start..start + block.length as usize)
    }

    /// Byte range of piece `index` in the payload.
    fn piece_range(&self, index: u32) -> std::ops::Range<usize> {
        let start = index as usize * self.piece_length as usize;
        start..start + self.piece_len(index) as usize
    }

    pub fn full(&self) -> Bitfield {
        Bitfield::full(self.piece_count())
    }
}

/// Latency and bandwidth of a link (the same both ways).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkSpec {
    pub latency: Duration,
    /// Bytes per second each way; `None` for no limit.
    pub bandwidth: Option<u64>,
}

impl LinkSpec {
    pub fn fast() -> LinkSpec {
        LinkSpec {
            latency: Duration::from_millis(10),
            bandwidth: None,
        }
    }

    /// A random link: latency from 1 to 200 ms, no limit or 64 KiB/s to 16 MiB/s.
    fn random(rng: &mut StdRng) -> LinkSpec {
        LinkSpec {
            latency: Duration::from_millis(rng.gen_range(1..=200)),
            bandwidth: rng
                .gen_bool(0.5)
                .then(|| rng.gen_range(64 * 1024..=16 * 1024 * 1024)),
        }
    }
}

/// One end of a link, with what that end has seen of the other (for the outside checks).
#[derive(Debug)]
struct End {
    node: NodeId,
    open: bool,
    /// When this end's outgoing wire is free again.
    busy_until: Instant,
    /// Pieces the other end announced (as delivered here).
    remote_has: Bitfield,
    /// Whether the other end chokes this one (as delivered here).
    remote_choking: bool,
    /// Whether this end chokes the other (as sent).
    choking: bool,
}

#[derive(Debug)]
struct Link {
    ends: [End; 2],
    spec: LinkSpec,
}

/// A bitrush swarm and its disk.
#[derive(Debug)]
pub(crate) struct SwarmNode {
    pub swarm: Swarm,
    /// The node's copy of the payload: pieces land here once their hash verified.
    pub disk: Vec<u8>,
    /// Pieces on disk (verified by the sim, or there from the start).
    pub on_disk: Bitfield,
    pub wanted: Bitfield,
    /// Nodes it banned for bad data: links with them are refused.
    pub banned: BTreeSet<NodeId>,
}

#[derive(Debug)]
pub(crate) enum Node {
    Swarm(Box<SwarmNode>),
    Script(ScriptedPeer),
}

/// What happened, for the scenarios to assert on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// Swarm `node` dropped its link to `peer`.
    Dropped {
        node: NodeId,
        peer: NodeId,
        link: LinkId,
        reason: PeerError,
    },
    /// Swarm `node` named `peer`, gone from `link`, as a sender of bad data: it is banned.
    Banned {
        node: NodeId,
        peer: NodeId,
        link: LinkId,
        reason: PeerError,
    },
    /// A link between swarm `node` and `peer`, which it banned, was refused.
    Refused { node: NodeId, peer: NodeId },
    /// `peer` closed its link to swarm `node`.
    ClosedByPeer {
        node: NodeId,
        peer: NodeId,
        link: LinkId,
    },
    /// Swarm `node` asked `peer` for `block`.
    Requested {
        node: NodeId,
        peer: NodeId,
        block: BlockRef,
    },
    /// A piece's hash check came back to swarm `node`.
    Verdict {
        node: NodeId,
        index: u32,
        good: bool,
    },
}

#[derive(Debug)]
enum Action {
    Connect {
        a: NodeId,
        b: NodeId,
        spec: LinkSpec,
        extensions: bool,
    },
    Deliver {
        link: LinkId,
        to: usize,
        msg: Message,
    },
    /// The other end closed; `to` learns of it.
    Closed { link: LinkId, to: usize },
    Verdict {
        node: NodeId,
        index: u32,
        data: Vec<u8>,
    },
    /// A scripted peer's timer on one of its links.
    Timer {
        node: NodeId,
        link: LinkId,
        tick: Tick,
    },
    /// A swarm node has more uploads waiting for `link`.
    Service { node: NodeId, link: LinkId },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What a scripted peer asks the sim to do.
#[derive(Debug)]
pub(crate) enum Output {
    Send(LinkId, Message),
    Close(LinkId),
    /// Call its `on_timer` for this link after the delay.
    Timer(LinkId, Duration, Tick),
}

/// The simulated network and its nodes.
pub(crate) struct Sim {
    start: Instant,
    now: Instant,
    rng: StdRng,
    pub torrent: Arc<Torrent>,
    nodes: Vec<Node>,
    links: Vec<Link>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// Swarm peers to service (after a wake-up), in order.
    work: VecDeque<(NodeId, LinkId)>,
    pub log: Vec<Record>,
    /// Breaches of the outside checks, reported by the next [`Sim::step`].
    errors: Vec<String>,
    steps: u64,
    steps_at_now: u64,
    /// A digest of everything that happened, to compare two runs of one seed.
    trace: DefaultHasher,
    /// Longest hash check, drawn per piece.
    pub max_verify_delay: Duration,
    /// Print every step to stderr (`SIM_VERBOSE=1`), to follow a failing case.
    verbose: bool,
}

impl Sim {
    /// A network for `torrent` at virtual time `start`, every random choice drawn from `seed`.
    pub fn new(start: Instant, seed: u64, torrent: Torrent) -> Sim {
        Sim {
            start,
            now: start,
            rng: StdRng::seed_from_u64(seed),
            torrent: Arc::new(torrent),
            nodes: Vec::new(),
            links: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            work: VecDeque::new(),
            log: Vec::new(),
            errors: Vec::new(),
            steps: 0,
            steps_at_now: 0,
            trace: DefaultHasher::new(),
            max_verify_delay: Duration::from_millis(5),
            verbose: std::env::var_os("SIM_VERBOSE").is_some(),
        }
    }

    // ---- building ----

    /// A bitrush swarm with pieces `have` on disk, wanting `wanted`.
    pub fn add_swarm(&mut self, have: Bitfield, wanted: Bitfield, config: Config) -> NodeId {
        let t = &self.torrent;
        let mut disk = vec![0u8; t.payload.len()];
        for i in have.iter_set() {
            let r = t.piece_range(i);
            disk[r.clone()].copy_from_slice(&t.payload[r]);
        }
        let seed = self.rng.gen();
        let mut swarm = Swarm::new(
            t.piece_length,
            t.total_length(),
            have.clone(),
            wanted.clone(),
            config,
            seed,
        );
        if let Some(v2) = &t.v2 {
            swarm.set_piece_hashes(v2.clone());
        }
        self.nodes.push(Node::Swarm(Box::new(SwarmNode {
            swarm,
            disk,
            on_disk: have,
            wanted,
            banned: BTreeSet::new(),
        })));
        self.nodes.len() - 1
    }

    /// A bitrush swarm that has every piece.
    pub fn add_seeder(&mut self, config: Config) -> NodeId {
        let full = self.torrent.full();
        self.add_swarm(full.clone(), full, config)
    }

    /// A bitrush swarm that has nothing and wants everything.
    pub fn add_downloader(&mut self, config: Config) -> NodeId {
        let n = self.torrent.piece_count();
        self.add_swarm(Bitfield::new(n), Bitfield::full(n), config)
    }

    pub fn add_script(&mut self, behaviour: Behaviour) -> NodeId {
        let peer = ScriptedPeer::new(behaviour, self.torrent.clone());
        self.nodes.push(Node::Script(peer));
        self.nodes.len() - 1
    }

    /// Connects `a` and `b` after `after` (both ends see the handshake done at once).
    pub fn connect_after(&mut self, after: Duration, a: NodeId, b: NodeId, spec: LinkSpec) {
        let both_swarms = self.is_swarm(a) && self.is_swarm(b);
        // Scripted peers do not speak BEP 10; two swarms sometimes do.
        let extensions = both_swarms && self.rng.gen_bool(0.5);
        let at = self.now + after;
        self.schedule(
            at,
            Action::Connect {
                a,
                b,
                spec,
                extensions,
            },
        );
    }

    pub fn connect(&mut self, a: NodeId, b: NodeId, spec: LinkSpec) {
        self.connect_after(Duration::ZERO, a, b, spec);
    }

    /// Connects `a` and `b` over a random link after a random delay of up to a second.
    pub fn connect_random(&mut self, a: NodeId, b: NodeId) {
        let spec = LinkSpec::random(&mut self.rng);
        let after = Duration::from_millis(self.rng.gen_range(0..1000));
        self.connect_after(after, a, b, spec);
    }

    // ---- queries ----

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn is_swarm(&self, node: NodeId) -> bool {
        matches!(self.nodes.get(node), Some(Node::Swarm(_)))
    }

    pub fn node(&self, node: NodeId) -> &SwarmNode {
        match &self.nodes[node] {
            Node::Swarm(s) => s,
            Node::Script(_) => panic!("node {node} is a scripted peer"),
        }
    }

    pub fn swarm(&self, node: NodeId) -> &Swarm {
        &self.node(node).swarm
    }

    pub fn script(&self, node: NodeId) -> &ScriptedPeer {
        match &self.nodes[node] {
            Node::Script(p) => p,
            Node::Swarm(_) => panic!("node {node} is a swarm"),
        }
    }

    /// Whether swarm `node` has every wanted piece on disk, byte for byte.
    pub fn is_complete(&self, node: NodeId) -> bool {
        let n = self.node(node);
        n.swarm.is_done()
            && n.wanted.iter_set().all(|i| {
                let r = self.torrent.piece_range(i);
                n.on_disk.get(i) && n.disk[r.clone()] == self.torrent.payload[r]
            })
    }

    /// Why `node` dropped `peer`, for each of their links it dropped.
    pub fn drops(&self, node: NodeId, peer: NodeId) -> Vec<PeerError> {
        self.reasons(node, peer, false)
    }

    /// Why `node` banned `peer` after it left (see [`Record::Banned`]).
    pub fn bans(&self, node: NodeId, peer: NodeId) -> Vec<PeerError> {
        self.reasons(node, peer, true)
    }

    /// The reasons of `node`'s drops of `peer`, or of its bans of `peer` after it left.
    fn reasons(&self, node: NodeId, peer: NodeId, bans: bool) -> Vec<PeerError> {
        self.log
            .iter()
            .filter_map(|r| match r {
                Record::Dropped {
                    node: n,
                    peer: p,
                    reason,
                    ..
                }
                | Record::Banned {
                    node: n,
                    peer: p,
                    reason,
                    ..
                } if *n == node && *p == peer && matches!(r, Record::Banned { .. }) == bans => {
                    Some(reason.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Blocks swarm `node` asked of `peer`, in order (repeats included).
    pub fn requested(&self, node: NodeId, peer: NodeId) -> Vec<BlockRef> {
        self.log
            .iter()
            .filter_map(|r| match r {
                Record::Requested {
                    node: n,
                    peer: p,
                    block,
                } if *n == node && *p == peer => Some(*block),
                _ => None,
            })
            .collect()
    }

    /// Hash verdicts of swarm `node`: (good, bad).
    pub fn verdicts(&self, node: NodeId) -> (usize, usize) {
        let mut counts = (0, 0);
        for r in &self.log {
            if let Record::Verdict { node: n, good, .. } = r {
                if *n == node {
                    if *good {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                    }
                }
            }
        }
        counts
    }

    /// Links between `a` and `b`: (all made so far, still open at `a`'s end).
    pub fn links_between(&self, a: NodeId, b: NodeId) -> (usize, usize) {
        let mut counts = (0, 0);
        for l in &self.links {
            for e in 0..2 {
                if l.ends[e].node == a && l.ends[1 - e].node == b {
                    counts.0 += 1;
                    counts.1 += usize::from(l.ends[e].open);
                }
            }
        }
        counts
    }

    /// Whether scripted leecher `leecher` got every block from `node` (over some link).
    pub fn leeched_all_from(&self, leecher: NodeId, node: NodeId) -> bool {
        let p = self.script(leecher);
        self.links.iter().enumerate().any(|(id, l)| {
            (0..2).any(|e| l.ends[e].node == leecher && l.ends[1 - e].node == node)
                && p.leeched_all(id as LinkId)
        })
    }

    /// Links on which swarm `node` currently unchokes the other end.
    pub fn unchoked_by(&self, node: NodeId) -> usize {
        self.links
            .iter()
            .flat_map(|l| l.ends.iter())
            .filter(|e| e.node == node && e.open && !e.choking)
            .count()
    }

    /// The digest of the run so far.
    pub fn trace_digest(&self) -> u64 {
        self.trace.finish()
    }

    // ---- running ----

    /// Steps until `done` holds (then `Ok(true)`), virtual time passes `limit`, or nothing is
    /// left to do (then `Ok(false)`). Any broken invariant is an error naming the step.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, String> {
        loop {
            if done(self) {
                return Ok(true);
            }
            if self.elapsed() > limit || !self.step()? {
                return Ok(false);
            }
        }
    }

    /// Runs until every swarm that wants something has it all (or `limit`).
    pub fn run_to_completion(&mut self, limit: Duration) -> Result<bool, String> {
        let downloaders: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| self.is_swarm(n))
            .collect();
        self.run_until(limit, |sim| {
            downloaders.iter().all(|&n| sim.swarm(n).is_done())
        })
    }

    /// One step: the earliest timeout or scheduled action, with everything it causes, then the
    /// checks. `Ok(false)` when nothing is left to happen.
    pub fn step(&mut self) -> Result<bool, String> {
        let next_action = self.queue.peek().map(|s| s.0.at);
        let next_timeout = self
            .nodes
            .iter()
            .filter_map(|n| match n {
                Node::Swarm(s) => s.swarm.poll_timeout(),
                Node::Script(_) => None,
            })
            .min();
        let (at, timeout) = match (next_action, next_timeout) {
            (None, None) => return Ok(false),
            (Some(a), Some(t)) if t <= a => (t, true),
            (None, Some(t)) => (t, true),
            (Some(a), _) => (a, false),
        };
        self.advance(at)?;
        if timeout {
            for node in 0..self.nodes.len() {
                let now = self.now;
                if let Node::Swarm(s) = &mut self.nodes[node] {
                    if s.swarm.poll_timeout().is_some_and(|t| t <= now) {
                        if self.verbose {
                            eprintln!("{:?} timeout at node {node}", now - self.start);
                        }
                        s.swarm.handle_timeout(now);
                        self.dispatch(node);
                    }
                }
            }
        } else if let Some(Reverse(s)) = self.queue.pop() {
            if self.verbose {
                eprintln!("{:?} {:?}", self.elapsed(), s.action);
            }
            self.apply(s.action);
        }
        self.drain_work()?;
        self.check()?;
        Ok(true)
    }

    fn advance(&mut self, at: Instant) -> Result<(), String> {
        self.steps += 1;
        if at > self.now {
            self.now = at;
            self.steps_at_now = 0;
        } else {
            self.steps_at_now += 1;
            if self.steps_at_now > MAX_STEPS_WITHOUT_TIME {
                return Err(format!(
                    "stuck: {} steps at {:?} without time moving on",
                    self.steps_at_now,
                    self.elapsed()
                ));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        let mut errors = std::mem::take(&mut self.errors);
        for (i, n) in self.nodes.iter().enumerate() {
            let Node::Swarm(s) = n else { continue };
            if let Err(e) = s.swarm.check_invariants() {
                errors.push(format!("node {i}: {e}"));
            }
            if let Some(p) = s.swarm.have().iter_set().find(|&p| !s.on_disk.get(p)) {
                errors.push(format!("node {i}: piece {p} had but never verified"));
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        Err(format!(
            "step {} at {:?}: {}",
            self.steps,
            self.elapsed(),
            errors.join("; ")
        ))
    }

    fn schedule(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            action,
        }));
    }

    fn note(&mut self, what: impl Hash) {
        (self.now - self.start).hash(&mut self.trace);
        what.hash(&mut self.trace);
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Connect {
                a,
                b,
                spec,
                extensions,
            } => self.open_link(a, b, spec, extensions),
            Action::Deliver { link, to, msg } => self.deliver(link, to, msg),
            Action::Closed { link, to } => self.closed(link, to),
            Action::Verdict { node, index, data } => self.verdict(node, index, data),
            Action::Timer { node, link, tick } => {
                self.note(("timer", node, link));
                self.run_script(node, |p, now, out| p.on_timer(now, link, tick, out));
            }
            Action::Service { node, link } => self.service(node, link),
        }
    }

    fn open_link(&mut self, a: NodeId, b: NodeId, spec: LinkSpec, extensions: bool) {
        for (node, peer) in [(a, b), (b, a)] {
            if let Node::Swarm(s) = &self.nodes[node] {
                if s.banned.contains(&peer) {
                    // As the engine's session: a banned address is neither dialled nor
                    // accepted.
                    self.note(("refuse", node, peer));
                    self.log.push(Record::Refused { node, peer });
                    return;
                }
            }
        }
        let link = self.links.len() as LinkId;
        self.note(("connect", a, b, link));
        let n = self.torrent.piece_count();
        let end = |node| End {
            node,
            open: true,
            busy_until: self.now,
            remote_has: Bitfield::new(n),
            remote_choking: true,
            choking: true,
        };
        self.links.push(Link {
            ends: [end(a), end(b)],
            spec,
        });
        for node in [a, b] {
            let now = self.now;
            match &mut self.nodes[node] {
                Node::Swarm(s) => {
                    s.swarm.handle_connected(
                        now,
                        link,
                        PeerFeatures {
                            extensions,
                            // The scripted peers speak the base protocol only.
                            fast: false,
                            allowed_fast: Vec::new(),
                            addr: None,
                            outgoing: node == a,
                            web_seed: false,
                            v2: false,
                        },
                    );
                    self.service(node, link);
                }
                Node::Script(_) => {
                    self.run_script(node, |p, _, out| p.on_connected(link, out));
                }
            }
        }
    }

    /// Which end of `link` belongs to `node`.
    fn end_of(&self, link: LinkId, node: NodeId) -> usize {
        usize::from(self.links[link as usize].ends[0].node != node)
    }

    fn peer_of(&self, link: LinkId, node: NodeId) -> NodeId {
        let e = self.end_of(link, node);
        self.links[link as usize].ends[1 - e].node
    }

    /// Sends `msg` from `node`'s end of `link`.
    fn send(&mut self, node: NodeId, link: LinkId, msg: Message) {
        let from = self.end_of(link, node);
        let now = self.now;
        let l = &mut self.links[link as usize];
        if !l.ends[from].open {
            return;
        }
        match msg {
            Message::Choke => l.ends[from].choking = true,
            Message::Unchoke => l.ends[from].choking = false,
            _ => {}
        }
        let size = wire_len(&msg);
        let start = l.ends[from].busy_until.max(now);
        let serialize = l.spec.bandwidth.map_or(Duration::ZERO, |bw| {
            Duration::from_nanos(size * 1_000_000_000 / bw.max(1))
        });
        l.ends[from].busy_until = start + serialize;
        let at = start + serialize + l.spec.latency;
        self.schedule(
            at,
            Action::Deliver {
                link,
                to: 1 - from,
                msg,
            },
        );
    }

    /// Closes `node`'s end of `link`; the other end learns of it after what is in flight.
    fn close(&mut self, node: NodeId, link: LinkId) {
        let from = self.end_of(link, node);
        let l = &mut self.links[link as usize];
        if !l.ends[from].open {
            return;
        }
        l.ends[from].open = false;
        let at = l.ends[from].busy_until.max(self.now) + l.spec.latency;
        self.note(("close", node, link));
        self.schedule(at, Action::Closed { link, to: 1 - from });
    }

    /// `msg` reaches end `to` of `link`. A swarm also takes every other message that arrives
    /// on that link at the same instant before it is serviced, as the engine handles all it
    /// read at once (so a `cancel` right behind its `request` is honoured).
    fn deliver(&mut self, link: LinkId, to: usize, msg: Message) {
        if !self.links[link as usize].ends[to].open {
            return;
        }
        let node = self.links[link as usize].ends[to].node;
        if !self.is_swarm(node) {
            self.observe(link, to, &msg);
            self.run_script(node, |p, now, out| p.on_message(now, link, msg, out));
            return;
        }
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            self.observe(link, to, &msg);
            let now = self.now;
            if let Node::Swarm(s) = &mut self.nodes[node] {
                s.swarm.handle_message(now, link, msg);
            }
            let same_read = self.queue.peek().is_some_and(|Reverse(s)| {
                s.at == now && matches!(s.action, Action::Deliver { link: l, to: t, .. } if l == link && t == to)
            });
            if same_read {
                if let Some(Reverse(Scheduled {
                    action: Action::Deliver { msg, .. },
                    ..
                })) = self.queue.pop()
                {
                    next = Some(msg);
                }
            }
        }
        self.service(node, link);
    }

    /// Notes what end `to` of `link` learns from `msg` (for the outside checks).
    fn observe(&mut self, link: LinkId, to: usize, msg: &Message) {
        let end = &mut self.links[link as usize].ends[to];
        let node = end.node;
        match msg {
            Message::Choke => end.remote_choking = true,
            Message::Unchoke => end.remote_choking = false,
            Message::Have(i) => {
                end.remote_has.set(*i);
            }
            Message::Bitfield(bits) => {
                if let Ok(has) = Bitfield::from_bytes(bits, end.remote_has.len()) {
                    end.remote_has = has;
                }
            }
            _ => {}
        }
        self.note(("deliver", node, link, msg_digest(msg)));
    }

    fn closed(&mut self, link: LinkId, to: usize) {
        let end = &mut self.links[link as usize].ends[to];
        if !end.open {
            return;
        }
        end.open = false;
        let node = end.node;
        let peer = self.links[link as usize].ends[1 - to].node;
        self.note(("closed", node, link));
        match &mut self.nodes[node] {
            Node::Swarm(s) => {
                s.swarm.handle_disconnected(link);
                self.log.push(Record::ClosedByPeer { node, peer, link });
                self.dispatch(node);
            }
            Node::Script(p) => p.on_closed(link),
        }
    }

    fn verdict(&mut self, node: NodeId, index: u32, data: Vec<u8>) {
        let good = self.torrent.check(index, &data);
        self.note(("verdict", node, index, good));
        self.log.push(Record::Verdict { node, index, good });
        let now = self.now;
        let r = self.torrent.piece_range(index);
        let Node::Swarm(s) = &mut self.nodes[node] else {
            return;
        };
        if good {
            if data.len() == r.len() {
                s.disk[r].copy_from_slice(&data);
                s.on_disk.set(index);
            } else {
                self.errors.push(format!(
                    "node {node}: piece {index} has {} bytes",
                    data.len()
                ));
            }
        }
        s.swarm.handle_verdict(now, index, good, data);
        self.dispatch(node);
    }

    /// As the engine's peer task after an input: sends what the swarm queued for `link`, then
    /// one batch of uploads (the rest waits for the wire), then carries out the events.
    fn service(&mut self, node: NodeId, link: LinkId) {
        let now = self.now;
        let end = self.end_of(link, node);
        if !self.links[link as usize].ends[end].open {
            return;
        }
        let peer = self.peer_of(link, node);
        let Node::Swarm(s) = &mut self.nodes[node] else {
            return;
        };
        // Block hashes asked of it come from its disk, as the engine reads them.
        let mut jobs = Vec::new();
        s.swarm.poll_hash_jobs(link, &mut jobs);
        for mut job in jobs {
            for i in job.pieces() {
                let piece = &s.disk[self.torrent.piece_range(i)];
                let data = piece.get(..job.data_len(i) as usize).unwrap_or(piece);
                for block in data.chunks(merkle::BLOCK_LEN as usize) {
                    job.add_block(block);
                }
            }
            s.swarm.handle_hash_answer(link, job.finish());
        }
        let mut out = Vec::new();
        s.swarm.poll_transmit(now, link, &mut out);
        let mut blocks = Vec::new();
        let more = s.swarm.poll_upload(link, UPLOAD_BATCH_BYTES, &mut blocks);
        let mut uploads = Vec::new();
        for b in &blocks {
            match self.torrent.range(*b) {
                Some(r) if s.on_disk.get(b.index) => uploads.push(Message::Piece {
                    index: b.index,
                    begin: b.begin,
                    data: Bytes::copy_from_slice(&s.disk[r]),
                }),
                _ => self.errors.push(format!(
                    "node {node}: uploads {b:?}, which it does not have"
                )),
            }
        }
        let uploaded: u64 = blocks.iter().map(|b| u64::from(b.length)).sum();
        for msg in &out {
            self.check_sent(node, link, end, msg);
        }
        if self.verbose && !out.is_empty() {
            eprintln!("node {node} sends on link {link}: {out:?}");
        }
        for msg in out {
            if let Message::Request(block) = msg {
                self.log.push(Record::Requested { node, peer, block });
            }
            self.send(node, link, msg);
        }
        if !uploads.is_empty() && self.links[link as usize].ends[end].choking {
            self.errors
                .push(format!("node {node}: uploads to {peer}, which it chokes"));
        }
        for msg in uploads {
            self.send(node, link, msg);
        }
        if uploaded > 0 {
            if let Node::Swarm(s) = &mut self.nodes[node] {
                s.swarm.handle_uploaded(now, link, uploaded);
            }
        }
        if more {
            // Like the engine, the next batch goes once this one is on the wire.
            let at = self.links[link as usize].ends[end].busy_until.max(now);
            self.schedule(at, Action::Service { node, link });
        }
        self.dispatch(node);
    }

    /// The outside checks on a message a swarm sends.
    fn check_sent(&mut self, node: NodeId, link: LinkId, end: usize, msg: &Message) {
        let Message::Request(block) = msg else {
            return;
        };
        let e = &self.links[link as usize].ends[end];
        let why = if self.node(node).swarm.have().get(block.index) {
            "a piece it has"
        } else if !e.remote_has.get(block.index) {
            "a piece the peer never announced"
        } else if e.remote_choking {
            "while choked"
        } else if self.torrent.range(*block).is_none() {
            "outside the torrent"
        } else {
            return;
        };
        self.errors.push(format!(
            "node {node}: requests {block:?} on link {link}: {why}"
        ));
    }

    /// Carries out swarm `node`'s events.
    fn dispatch(&mut self, node: NodeId) {
        loop {
            let Node::Swarm(s) = &mut self.nodes[node] else {
                return;
            };
            let Some(event) = s.swarm.poll_event() else {
                return;
            };
            match event {
                SwarmEvent::Verify(piece) => {
                    self.note(("verify", node, piece.index));
                    let delay = self.rng.gen_range(Duration::ZERO..=self.max_verify_delay);
                    let at = self.now + delay;
                    self.schedule(
                        at,
                        Action::Verdict {
                            node,
                            index: piece.index,
                            data: piece.data,
                        },
                    );
                }
                SwarmEvent::Wake(link) => {
                    self.note(("wake", node, link));
                    self.work.push_back((node, link));
                }
                SwarmEvent::Disconnect { peer: link, reason } => {
                    self.note(("drop", node, link));
                    if self.verbose {
                        eprintln!("node {node} drops link {link}: {reason}");
                    }
                    if let Node::Swarm(s) = &mut self.nodes[node] {
                        // As the engine's task ending: harmless after the swarm forgot it.
                        s.swarm.handle_disconnected(link);
                    }
                    let Some(l) = self.links.get(link as usize) else {
                        self.errors
                            .push(format!("node {node}: disconnects unknown link {link}"));
                        continue;
                    };
                    let peer = l.ends[1 - self.end_of(link, node)].node;
                    if let (true, Node::Swarm(s)) = (reason.is_bad_data(), &mut self.nodes[node]) {
                        s.banned.insert(peer);
                    }
                    self.log.push(Record::Dropped {
                        node,
                        peer,
                        link,
                        reason,
                    });
                    self.close(node, link);
                }
                SwarmEvent::Banned { peer: link, reason } => {
                    self.note(("ban", node, link));
                    let Some(l) = self.links.get(link as usize) else {
                        self.errors
                            .push(format!("node {node}: bans unknown link {link}"));
                        continue;
                    };
                    let end = self.end_of(link, node);
                    let peer = l.ends[1 - end].node;
                    if l.ends[end].open {
                        self.errors
                            .push(format!("node {node}: bans link {link}, still connected"));
                    }
                    if let Node::Swarm(s) = &mut self.nodes[node] {
                        s.banned.insert(peer);
                    }
                    self.log.push(Record::Banned {
                        node,
                        peer,
                        link,
                        reason,
                    });
                }
                SwarmEvent::PeersFound(_) => {
                    // Links carry no extension handshake here, so no peer exchange happens.
                    self.errors
                        .push(format!("node {node}: peers found without peer exchange"));
                }
            }
        }
    }

    fn drain_work(&mut self) -> Result<(), String> {
        let mut n = 0u64;
        while let Some((node, link)) = self.work.pop_front() {
            n += 1;
            if n > MAX_STEPS_WITHOUT_TIME {
                return Err(format!("node {node}: wake-ups never end"));
            }
            let Some(l) = self.links.get(link as usize) else {
                self.errors
                    .push(format!("node {node}: wakes unknown link {link}"));
                continue;
            };
            let end = self.end_of(link, node);
            if l.ends[end].node == node && l.ends[end].open {
                self.service(node, link);
            }
        }
        Ok(())
    }

    fn run_script(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut ScriptedPeer, Instant, &mut Vec<Output>),
    ) {
        let now = self.now;
        let mut out = Vec::new();
        if let Node::Script(p) = &mut self.nodes[node] {
            f(p, now, &mut out);
        }
        for o in out {
            match o {
                Output::Send(link, msg) => self.send(node, link, msg),
                Output::Close(link) => self.close(node, link),
                Output::Timer(link, after, tick) => {
                    self.schedule(now + after, Action::Timer { node, link, tick })
                }
            }
        }
    }
}

/// Bytes `msg` takes on the wire, length prefix included.
fn wire_len(msg: &Message) -> u64 {
    4 + match msg {
        Message::KeepAlive => 0,
        Message::Choke
        | Message::Unchoke
        | Message::Interested
        | Message::NotInterested
        | Message::Unknown { .. } => 1,
        Message::Have(_) => 5,
        Message::Bitfield(b) => 1 + b.len() as u64,
        Message::Request(_) | Message::Cancel(_) => 13,
        Message::Piece { data, .. } => 9 + data.len() as u64,
        Message::Port(_) => 3,
        Message::HaveAll | Message::HaveNone => 1,
        Message::Suggest(_) | Message::AllowedFast(_) => 5,
        Message::Reject(_) => 13,
        Message::Extended { payload, .. } => 2 + payload.len() as u64,
        Message::HashRequest(_) | Message::HashReject(_) => 49,
        Message::Hashes { hashes, .. } => 49 + hashes.len() as u64,
    }
}

/// A summary of `msg` for the trace.
fn msg_digest(msg: &Message) -> (u8, u32, u32, u64) {
    match msg {
        Message::KeepAlive => (255, 0, 0, 0),
        Message::Choke => (0, 0, 0, 0),
        Message::Unchoke => (1, 0, 0, 0),
        Message::Interested => (2, 0, 0, 0),
        Message::NotInterested => (3, 0, 0, 0),
        Message::Have(i) => (4, *i, 0, 0),
        Message::Bitfield(b) => (5, b.len() as u32, 0, 0),
        Message::Request(b) => (6, b.index, b.begin, u64::from(b.length)),
        Message::Piece { index, begin, data } => (7, *index, *begin, data.len() as u64),
        Message::Cancel(b) => (8, b.index, b.begin, u64::from(b.length)),
        Message::Port(p) => (9, u32::from(*p), 0, 0),
        Message::Suggest(i) => (0x0d, *i, 0, 0),
        Message::HaveAll => (0x0e, 0, 0, 0),
        Message::HaveNone => (0x0f, 0, 0, 0),
        Message::Reject(b) => (0x10, b.index, b.begin, u64::from(b.length)),
        Message::AllowedFast(i) => (0x11, *i, 0, 0),
        Message::Extended { id, payload } => (20, u32::from(*id), 0, payload.len() as u64),
        Message::Unknown { id } => (254, u32::from(*id), 0, 0),
        Message::HashRequest(r) => (21, r.index, r.length, u64::from(r.base_layer)),
        Message::Hashes { request, hashes } => (22, request.index, 0, hashes.len() as u64),
        Message::HashReject(r) => (23, r.index, r.length, u64::from(r.base_layer)),
    }
}
