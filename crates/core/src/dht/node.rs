//! The DHT node: a sans-IO state machine that answers other nodes, keeps the routing tables
//! alive, and runs lookups and announces for the application.
//!
//! Driving it: feed every datagram received on the DHT socket(s) to [`Dht::handle_datagram`],
//! call [`Dht::handle_timeout`] when [`Dht::poll_timeout`] says, and after each call drain
//! [`Dht::poll_transmit`] (datagrams to send, each with its destination, IPv4 or IPv6) and
//! [`Dht::poll_event`]. Addresses are taken as the sockets report them: an IPv4-mapped IPv6
//! address counts as IPv6, so use one socket per family.
//!
//! Invariants: no clock or entropy source is read (time comes in, randomness comes from the
//! seed, so the same inputs give the same outputs); at most `max_in_flight` queries are
//! outstanding and each gets exactly one outcome (its answer, an error, or a timeout after
//! `query_timeout`; lookups do not retransmit: a silent node is replaced by the next closest,
//! and table maintenance pings a questionable node again after [`super::PING_INTERVAL`],
//! so two silent pings make it bad); at most `max_lookups` lookups run at once; queries from
//! others are answered only within a per-IP rate; every queue and table is capped (see
//! [`DhtConfig`]). Hostile datagrams are dropped (malformed queries get error 203) and never
//! panic.

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::compact;
use super::id::{NodeId, ID_BITS};
use super::krpc::{
    Body, ErrorBody, KrpcError, Message, Method, Query, Response, Want, ERROR_METHOD_UNKNOWN,
    ERROR_PROTOCOL,
};
use super::lookup::{Lookup, LookupId};
use super::ratelimit::RateLimiter;
use super::store::{PeerStore, StoreLimits};
use super::table::{Heard, RoutingTable};
use super::token::Tokens;
use crate::bencode::{self, BencodeError, Value};
use crate::types::InfoHash;

/// The `v` we send: client code `BR` and version 0.1.
pub const OUR_VERSION: &[u8; 4] = b"BR\x00\x01";
/// Bootstrap addresses remembered.
pub const MAX_BOOTSTRAP_NODES: usize = 64;
/// Peers put in one `get_peers` answer (50 compact IPv6 peers keep it near 1 KiB).
pub const MAX_VALUES_REPLY: usize = 50;
/// How often the tables are maintained (pings, refreshes), tokens rotated and peers expired.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// Questionable nodes pinged per family and maintenance round.
pub const PINGS_PER_ROUND: usize = 8;
/// Largest saved state accepted (two full tables of IPv6 nodes fit in 100 KiB).
pub const MAX_STATE_LEN: usize = 128 * 1024;
/// First wait before bootstrapping again while the tables are empty; it doubles up to
/// [`BOOTSTRAP_RETRY_MAX`].
pub const BOOTSTRAP_RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between two bootstrap attempts.
pub const BOOTSTRAP_RETRY_MAX: Duration = Duration::from_secs(60);

/// Tunables and bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bucket size and lookup width (BEP 5: 8).
    pub k: usize,
    /// Parallel queries per lookup (3).
    pub alpha: usize,
    /// How long a query may go unanswered (3 s).
    pub query_timeout: Duration,
    /// Queries outstanding at once, all purposes together (256).
    pub max_in_flight: usize,
    /// Lookups running at once (64); more are refused with an immediate end event.
    pub max_lookups: usize,
    /// Datagrams waiting in [`Dht::poll_transmit`]'s queue (512); answers beyond it are
    /// dropped.
    pub max_transmit_queue: usize,
    /// Use IPv4 nodes (true).
    pub ipv4: bool,
    /// Use IPv6 nodes (BEP 32; false: the driver must have an IPv6 socket).
    pub ipv6: bool,
    /// Queries answered per second per source IP (50), and the burst allowed (100).
    pub queries_per_second: u32,
    /// See `queries_per_second`.
    pub query_burst: u32,
    /// Source IPs rate-tracked at once (1024).
    pub max_rate_ips: usize,
    /// Bounds of the store of peers announced to us.
    pub store: StoreLimits,
}

impl Default for DhtConfig {
    fn default() -> DhtConfig {
        DhtConfig {
            k: 8,
            alpha: 3,
            query_timeout: Duration::from_secs(3),
            max_in_flight: 256,
            max_lookups: 64,
            max_transmit_queue: 512,
            ipv4: true,
            ipv6: false,
            queries_per_second: 50,
            query_burst: 100,
            max_rate_ips: 1024,
            store: StoreLimits::default(),
        }
    }
}

/// How an announce names our port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnouncePort {
    /// `implied_port`: the receiving nodes use the UDP source port of the announce (for a
    /// client whose peer port is its DHT port, e.g. uTP on one socket).
    Implied,
    /// This TCP/uTP port.
    Port(u16),
}

/// What the application learns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhtEvent {
    /// Peers of `info_hash` found by a lookup (each reported once per lookup).
    Peers {
        /// The lookup.
        lookup: LookupId,
        /// Its info hash.
        info_hash: InfoHash,
        /// New peers.
        peers: Vec<SocketAddr>,
    },
    /// A [`Dht::get_peers`] lookup ended.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// Its info hash.
        info_hash: InfoHash,
        /// Nodes that answered it.
        answered: usize,
    },
    /// A [`Dht::announce`] ended: its lookup ended and the announces were answered or timed
    /// out.
    AnnounceDone {
        /// The lookup.
        lookup: LookupId,
        /// Its info hash.
        info_hash: InfoHash,
        /// Nodes that confirmed storing us.
        stored: usize,
    },
    /// A bootstrap (or re-bootstrap) lookup of our own id ended.
    Bootstrapped {
        /// Nodes in the routing tables now.
        nodes: usize,
    },
}

/// Why a saved state cannot be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// Bigger than [`MAX_STATE_LEN`].
    #[error("DHT state of {0} bytes is over the limit")]
    TooLong(usize),
    /// Not bencode.
    #[error("DHT state is not valid bencode")]
    Bencode(#[source] BencodeError),
    /// Bencode, but not our format.
    #[error("malformed DHT state: {0}")]
    Malformed(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Bootstrap,
    Refresh,
    GetPeers(InfoHash),
    Announce(InfoHash, AnnouncePort),
}

#[derive(Debug)]
struct Running {
    purpose: Purpose,
    lookup: Lookup,
    /// Set once announces went out: (still pending, confirmed).
    announcing: Option<(usize, usize)>,
}

#[derive(Clone, Copy, Debug)]
enum PendingKind {
    Lookup {
        lookup: LookupId,
        node: Option<NodeId>,
    },
    Ping {
        node: NodeId,
    },
    Announce {
        lookup: LookupId,
        node: NodeId,
    },
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    addr: SocketAddr,
    deadline: Instant,
    kind: PendingKind,
}

/// `now + d`, or `now` if that overflows (no real clock gets there).
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// A Mainline DHT node.
#[derive(Debug)]
pub struct Dht {
    id: NodeId,
    config: DhtConfig,
    rng: StdRng,
    v4: RoutingTable,
    v6: RoutingTable,
    tokens: Tokens,
    store: PeerStore,
    limiter: RateLimiter,
    lookups: BTreeMap<LookupId, Running>,
    next_lookup: u64,
    pending: BTreeMap<u16, Pending>,
    next_transaction: u16,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<DhtEvent>,
    bootstrap_nodes: Vec<SocketAddr>,
    bootstrap_retry: Option<Instant>,
    bootstrap_backoff: Duration,
    next_maintenance: Instant,
}

impl Dht {
    /// A node with a random id drawn from `seed`.
    pub fn new(now: Instant, seed: u64, config: DhtConfig) -> Dht {
        let mut rng = StdRng::seed_from_u64(seed);
        let id = NodeId::random(&mut rng);
        Dht::build(now, id, rng, config)
    }

    /// A node with the given id.
    pub fn with_id(now: Instant, id: NodeId, seed: u64, config: DhtConfig) -> Dht {
        Dht::build(now, id, StdRng::seed_from_u64(seed), config)
    }

    fn build(now: Instant, id: NodeId, mut rng: StdRng, config: DhtConfig) -> Dht {
        let tokens = Tokens::new(now, &mut rng);
        let next_transaction = rng.next_u32() as u16;
        Dht {
            id,
            v4: RoutingTable::new(id, config.k, now),
            v6: RoutingTable::new(id, config.k, now),
            tokens,
            store: PeerStore::new(config.store),
            limiter: RateLimiter::new(
                config.queries_per_second,
                config.query_burst,
                config.max_rate_ips,
            ),
            lookups: BTreeMap::new(),
            next_lookup: 1,
            pending: BTreeMap::new(),
            next_transaction,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            bootstrap_nodes: Vec::new(),
            bootstrap_retry: None,
            bootstrap_backoff: BOOTSTRAP_RETRY_MIN,
            next_maintenance: now,
            rng,
            config,
        }
    }

    /// A node restored from [`Dht::save_state`]: the same id, and the saved nodes in its tables
    /// as questionable (they are pinged, and used to bootstrap). Nodes beyond what the tables
    /// can hold are ignored.
    pub fn from_state(
        now: Instant,
        state: &[u8],
        seed: u64,
        config: DhtConfig,
    ) -> Result<Dht, StateError> {
        if state.len() > MAX_STATE_LEN {
            return Err(StateError::TooLong(state.len()));
        }
        let value = bencode::decode(state).map_err(StateError::Bencode)?;
        let Value::Dict(d) = value else {
            return Err(StateError::Malformed("not a dictionary"));
        };
        let id = d
            .get(b"id".as_slice())
            .and_then(Value::as_bytes)
            .and_then(NodeId::from_slice)
            .ok_or(StateError::Malformed("`id` is not 20 bytes"))?;
        let mut dht = Dht::with_id(now, id, seed, config);
        let cap = ID_BITS.saturating_mul(dht.config.k);
        for (key, v6) in [(b"nodes".as_slice(), false), (b"nodes6".as_slice(), true)] {
            let Some(value) = d.get(key) else { continue };
            let nodes = value
                .as_bytes()
                .and_then(|b| compact::nodes(b, v6))
                .ok_or(StateError::Malformed("nodes are not whole compact entries"))?;
            for (id, addr) in nodes.into_iter().take(cap) {
                if dht.family_enabled(addr) {
                    dht.table_mut(addr).heard(now, id, addr, Heard::Saved);
                }
            }
        }
        Ok(dht)
    }

    /// Our id and the good nodes of both tables, bencoded (`id`, `nodes`, `nodes6`), for
    /// [`Dht::from_state`].
    pub fn save_state(&self, now: Instant) -> Vec<u8> {
        let mut d = BTreeMap::new();
        d.insert(b"id".to_vec(), Value::Bytes(self.id.0.to_vec()));
        for (key, table) in [("nodes", &self.v4), ("nodes6", &self.v6)] {
            let mut out = Vec::new();
            compact::push_nodes(&mut out, &table.good_nodes(now));
            d.insert(key.as_bytes().to_vec(), Value::Bytes(out));
        }
        bencode::encode(&Value::Dict(d))
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Nodes in the routing tables (IPv4 and IPv6 together).
    pub fn node_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Peers others announced to us and that we still store.
    pub fn stored_peer_count(&self) -> usize {
        self.store.len()
    }

    fn family_enabled(&self, addr: SocketAddr) -> bool {
        if addr.is_ipv4() {
            self.config.ipv4
        } else {
            self.config.ipv6
        }
    }

    fn table_mut(&mut self, addr: SocketAddr) -> &mut RoutingTable {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Remembers a node to bootstrap from (an address only: its id is learned from its
    /// answer). At most [`MAX_BOOTSTRAP_NODES`] are kept.
    pub fn add_bootstrap_node(&mut self, addr: SocketAddr) {
        if self.bootstrap_nodes.len() < MAX_BOOTSTRAP_NODES
            && !self.bootstrap_nodes.contains(&addr)
            && addr.port() != 0
        {
            self.bootstrap_nodes.push(addr);
        }
    }

    /// Starts a lookup of our own id from the tables and the bootstrap nodes, which fills the
    /// tables; ends with [`DhtEvent::Bootstrapped`]. While the tables stay empty it is retried
    /// with a growing delay.
    pub fn bootstrap(&mut self, now: Instant) {
        if self
            .lookups
            .values()
            .any(|r| r.purpose == Purpose::Bootstrap)
        {
            return;
        }
        self.bootstrap_retry = None;
        let target = self.id;
        self.start(now, target, Purpose::Bootstrap);
    }

    /// Starts looking for peers of `info_hash`: [`DhtEvent::Peers`] as they come, then
    /// [`DhtEvent::LookupDone`].
    pub fn get_peers(&mut self, now: Instant, info_hash: InfoHash) -> LookupId {
        self.start(now, NodeId::from(info_hash), Purpose::GetPeers(info_hash))
    }

    /// Looks for peers of `info_hash` like [`Dht::get_peers`], then announces us as a peer on
    /// `port` to the `k` closest nodes that answered; ends with [`DhtEvent::AnnounceDone`].
    pub fn announce(&mut self, now: Instant, info_hash: InfoHash, port: AnnouncePort) -> LookupId {
        self.start(
            now,
            NodeId::from(info_hash),
            Purpose::Announce(info_hash, port),
        )
    }

    fn start(&mut self, now: Instant, target: NodeId, purpose: Purpose) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup = self.next_lookup.wrapping_add(1);
        if let Purpose::GetPeers(h) | Purpose::Announce(h, _) = purpose {
            let local = self.store.peers(
                &h,
                self.config.ipv4,
                self.config.ipv6,
                MAX_VALUES_REPLY,
                &mut self.rng,
            );
            if !local.is_empty() {
                self.events.push_back(DhtEvent::Peers {
                    lookup: id,
                    info_hash: h,
                    peers: local,
                });
            }
        }
        if self.lookups.len() >= self.config.max_lookups {
            let running = Running {
                purpose,
                lookup: Lookup::new(self.id, target, Vec::new(), Vec::new()),
                announcing: None,
            };
            self.finished(now, id, running);
            return id;
        }
        let width = self.config.k.saturating_mul(2);
        let mut nodes = Vec::new();
        if self.config.ipv4 {
            nodes.extend(self.v4.closest(now, &target, width));
        }
        if self.config.ipv6 {
            nodes.extend(self.v6.closest(now, &target, width));
        }
        let seeds = if nodes.len() < self.config.k {
            self.bootstrap_nodes
                .iter()
                .copied()
                .filter(|a| self.family_enabled(*a))
                .collect()
        } else {
            Vec::new()
        };
        self.lookups.insert(
            id,
            Running {
                purpose,
                lookup: Lookup::new(self.id, target, nodes, seeds),
                announcing: None,
            },
        );
        self.drive(now);
        id
    }

    /// The next datagram to send and its destination.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// When [`Dht::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline).min();
        Some(match pending {
            Some(p) => p.min(self.next_maintenance),
            None => self.next_maintenance,
        })
    }

    /// Expires unanswered queries and, when due, maintains the tables (pings questionable
    /// nodes, refreshes idle buckets, retries bootstrapping), rotates the token secret and
    /// expires stored peers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(p) = self.pending.remove(&t) {
                self.query_failed(now, p, true);
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = later(now, MAINTENANCE_INTERVAL);
            self.maintain(now);
        }
        self.drive(now);
    }

    fn maintain(&mut self, now: Instant) {
        self.tokens.rotate(now, &mut self.rng);
        self.store.expire(now);
        for v6 in [false, true] {
            if (v6 && !self.config.ipv6) || (!v6 && !self.config.ipv4) {
                continue;
            }
            let table = if v6 { &mut self.v6 } else { &mut self.v4 };
            for (node, addr) in table.take_nodes_to_ping(now, PINGS_PER_ROUND) {
                self.send_query(now, addr, Method::Ping, PendingKind::Ping { node });
            }
            let table = if v6 { &mut self.v6 } else { &mut self.v4 };
            let targets = table.take_refresh_targets(now, 2, &mut self.rng);
            if table.is_empty() {
                // An empty table is the bootstrap's business, not a refresh's.
                continue;
            }
            for target in targets {
                if self.lookups.len() < self.config.max_lookups {
                    self.start(now, target, Purpose::Refresh);
                }
            }
        }
        if self.bootstrap_retry.is_some_and(|t| t <= now) {
            self.bootstrap(now);
        }
    }

    /// Feeds one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if !self.family_enabled(from) || from.port() == 0 {
            return;
        }
        match Message::decode(datagram) {
            Ok(msg) => match msg.body {
                Body::Query(q) => self.answer(now, from, msg.transaction, msg.read_only, q),
                Body::Response(r) => {
                    self.on_response(now, from, &msg.transaction, msg.read_only, r)
                }
                Body::Error(_) => self.on_error(now, from, &msg.transaction),
            },
            Err(KrpcError::Malformed {
                what,
                query_transaction: Some(t),
            }) => {
                if self.limiter.allow(now, from.ip()) {
                    self.reply_error(from, t, ERROR_PROTOCOL, what);
                }
            }
            Err(_) => {}
        }
        self.drive(now);
    }

    fn push_transmit(&mut self, to: SocketAddr, bytes: Vec<u8>) -> bool {
        if self.transmits.len() >= self.config.max_transmit_queue {
            return false;
        }
        self.transmits.push_back((to, bytes));
        true
    }

    fn reply(&mut self, to: SocketAddr, transaction: Vec<u8>, body: Body) {
        let msg = Message {
            transaction,
            version: Some(OUR_VERSION.to_vec()),
            read_only: false,
            ip: Some(to),
            body,
        };
        self.push_transmit(to, msg.encode());
    }

    fn reply_error(&mut self, to: SocketAddr, transaction: Vec<u8>, code: i64, what: &str) {
        let body = Body::Error(ErrorBody {
            code,
            message: what.to_string(),
        });
        self.reply(to, transaction, body);
    }

    /// The closest nodes to `target` of each wanted family, as the `nodes`/`nodes6` fields.
    #[allow(clippy::type_complexity)]
    fn nodes_for(
        &self,
        now: Instant,
        target: &NodeId,
        want: Want,
    ) -> (
        Option<Vec<(NodeId, SocketAddr)>>,
        Option<Vec<(NodeId, SocketAddr)>>,
    ) {
        let k = self.config.k;
        let v4 = (want.v4 && self.config.ipv4).then(|| self.v4.closest(now, target, k));
        let v6 = (want.v6 && self.config.ipv6).then(|| self.v6.closest(now, target, k));
        (v4, v6)
    }

    fn answer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transaction: Vec<u8>,
        read_only: bool,
        q: Query,
    ) {
        if q.id == self.id || !self.limiter.allow(now, from.ip()) {
            return;
        }
        if !read_only {
            self.table_mut(from).heard(now, q.id, from, Heard::Query);
        }
        let want = q.want.unwrap_or(Want {
            v4: from.is_ipv4(),
            v6: from.is_ipv6(),
        });
        let mut response = Response {
            id: self.id,
            nodes: None,
            nodes6: None,
            values: Vec::new(),
            token: None,
        };
        match q.method {
            Method::Ping => {}
            Method::FindNode { target } => {
                (response.nodes, response.nodes6) = self.nodes_for(now, &target, want);
            }
            Method::GetPeers { info_hash } => {
                self.tokens.rotate(now, &mut self.rng);
                response.token = Some(self.tokens.token_for(from.ip()).to_vec());
                response.values = self.store.peers(
                    &info_hash,
                    want.v4,
                    want.v6,
                    MAX_VALUES_REPLY,
                    &mut self.rng,
                );
                (response.nodes, response.nodes6) =
                    self.nodes_for(now, &NodeId::from(info_hash), want);
            }
            Method::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                self.tokens.rotate(now, &mut self.rng);
                if !self.tokens.is_valid(&token, from.ip()) {
                    return self.reply_error(from, transaction, ERROR_PROTOCOL, "bad token");
                }
                let port = if implied_port { from.port() } else { port };
                if port == 0 {
                    return self.reply_error(from, transaction, ERROR_PROTOCOL, "port 0");
                }
                self.store
                    .announce(now, info_hash, SocketAddr::new(from.ip(), port));
            }
            Method::Unknown(_) => {
                return self.reply_error(from, transaction, ERROR_METHOD_UNKNOWN, "method unknown");
            }
        }
        self.reply(from, transaction, Body::Response(response));
    }

    /// The pending query `transaction` sent to `from`, removed; `None` if there is none.
    fn take_pending(&mut self, from: SocketAddr, transaction: &[u8]) -> Option<Pending> {
        let t = u16::from_be_bytes(transaction.try_into().ok()?);
        if self.pending.get(&t)?.addr != from {
            return None;
        }
        self.pending.remove(&t)
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transaction: &[u8],
        read_only: bool,
        r: Response,
    ) {
        let Some(p) = self.take_pending(from, transaction) else {
            return;
        };
        if r.id == self.id {
            // Talking to ourselves (or to a node copying our id): useless for routing.
            return self.query_failed(now, p, true);
        }
        if !read_only {
            self.table_mut(from).heard(now, r.id, from, Heard::Response);
        }
        match p.kind {
            PendingKind::Ping { .. } => {}
            PendingKind::Announce { lookup, .. } => self.announce_settled(lookup, true),
            PendingKind::Lookup { lookup, node } => {
                let mut learned = Vec::new();
                for (nodes, enabled) in [(r.nodes, self.config.ipv4), (r.nodes6, self.config.ipv6)]
                {
                    if enabled {
                        learned.extend(
                            nodes
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|(_, a)| a.port() != 0 && !a.ip().is_unspecified()),
                        );
                    }
                }
                let Some(running) = self.lookups.get_mut(&lookup) else {
                    return;
                };
                let peers = running
                    .lookup
                    .on_response(node, from, r.id, r.token, learned, &r.values);
                if let (false, Purpose::GetPeers(h) | Purpose::Announce(h, _)) =
                    (peers.is_empty(), running.purpose)
                {
                    self.events.push_back(DhtEvent::Peers {
                        lookup,
                        info_hash: h,
                        peers,
                    });
                }
            }
        }
    }

    fn on_error(&mut self, now: Instant, from: SocketAddr, transaction: &[u8]) {
        if let Some(p) = self.take_pending(from, transaction) {
            // It answered, so it is alive, but the query did nothing: for the lookup or the
            // announce it counts as failed; the table is left as it is.
            match p.kind {
                PendingKind::Ping { .. } => {}
                _ => self.query_failed(now, p, false),
            }
        }
    }

    /// A query that timed out (`silent`, which counts against the node) or was answered with
    /// an error.
    fn query_failed(&mut self, now: Instant, p: Pending, silent: bool) {
        match p.kind {
            PendingKind::Ping { node } => {
                if silent {
                    self.table_mut(p.addr).failed(now, &node, p.addr);
                }
            }
            PendingKind::Announce { lookup, node } => {
                if silent {
                    self.table_mut(p.addr).failed(now, &node, p.addr);
                }
                self.announce_settled(lookup, false);
            }
            PendingKind::Lookup { lookup, node } => {
                if let (true, Some(id)) = (silent, node) {
                    self.table_mut(p.addr).failed(now, &id, p.addr);
                }
                if let Some(running) = self.lookups.get_mut(&lookup) {
                    running.lookup.on_failure(node, p.addr);
                }
            }
        }
    }

    fn announce_settled(&mut self, lookup: LookupId, stored: bool) {
        let Some(running) = self.lookups.get_mut(&lookup) else {
            return;
        };
        let Some((pending, confirmed)) = running.announcing.as_mut() else {
            return;
        };
        *pending = pending.saturating_sub(1);
        if stored {
            *confirmed += 1;
        }
        if *pending == 0 {
            let confirmed = *confirmed;
            if let Some(Running {
                purpose: Purpose::Announce(info_hash, _),
                ..
            }) = self.lookups.remove(&lookup)
            {
                self.events.push_back(DhtEvent::AnnounceDone {
                    lookup,
                    info_hash,
                    stored: confirmed,
                });
            }
        }
    }

    /// Sends a query unless the in-flight or transmit bounds forbid it; returns whether sent.
    fn send_query(
        &mut self,
        now: Instant,
        to: SocketAddr,
        method: Method,
        kind: PendingKind,
    ) -> bool {
        if self.pending.len() >= self.config.max_in_flight || !self.family_enabled(to) {
            return false;
        }
        let mut t = self.next_transaction;
        while self.pending.contains_key(&t) {
            t = t.wrapping_add(1);
        }
        self.next_transaction = t.wrapping_add(1);
        let want = (self.config.ipv4 && self.config.ipv6).then_some(Want { v4: true, v6: true });
        let msg = Message {
            transaction: t.to_be_bytes().to_vec(),
            version: Some(OUR_VERSION.to_vec()),
            read_only: false,
            ip: None,
            body: Body::Query(Query {
                id: self.id,
                method,
                want,
            }),
        };
        if !self.push_transmit(to, msg.encode()) {
            return false;
        }
        self.pending.insert(
            t,
            Pending {
                addr: to,
                deadline: later(now, self.config.query_timeout),
                kind,
            },
        );
        true
    }

    /// Sends what the running lookups may send and ends the lookups that are done.
    fn drive(&mut self, now: Instant) {
        let ids: Vec<LookupId> = self.lookups.keys().copied().collect();
        for id in ids {
            self.drive_one(now, id);
        }
    }

    fn drive_one(&mut self, now: Instant, id: LookupId) {
        let (k, alpha) = (self.config.k, self.config.alpha);
        loop {
            let Some(running) = self.lookups.get_mut(&id) else {
                return;
            };
            if running.announcing.is_some() {
                return;
            }
            // Queries still in flight for a finished lookup are left to answer or time out:
            // their outcome still feeds the routing table.
            if running.lookup.is_done(k) {
                if let Some(running) = self.lookups.remove(&id) {
                    self.finished(now, id, running);
                }
                return;
            }
            if self.pending.len() >= self.config.max_in_flight {
                return;
            }
            let Some((node, addr)) = running.lookup.next_query(k, alpha) else {
                return;
            };
            let target = running.lookup.target();
            let method = match running.purpose {
                Purpose::Bootstrap | Purpose::Refresh => Method::FindNode { target },
                Purpose::GetPeers(info_hash) | Purpose::Announce(info_hash, _) => {
                    Method::GetPeers { info_hash }
                }
            };
            if !self.send_query(now, addr, method, PendingKind::Lookup { lookup: id, node }) {
                if let Some(running) = self.lookups.get_mut(&id) {
                    running.lookup.on_failure(node, addr);
                }
                return;
            }
        }
    }

    fn finished(&mut self, now: Instant, id: LookupId, mut running: Running) {
        match running.purpose {
            Purpose::Refresh => {}
            Purpose::Bootstrap => {
                let nodes = self.node_count();
                if nodes == 0 && !self.bootstrap_nodes.is_empty() {
                    self.bootstrap_retry = Some(later(now, self.bootstrap_backoff));
                    self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(BOOTSTRAP_RETRY_MAX);
                } else {
                    self.bootstrap_backoff = BOOTSTRAP_RETRY_MIN;
                }
                self.events.push_back(DhtEvent::Bootstrapped { nodes });
            }
            Purpose::GetPeers(info_hash) => self.events.push_back(DhtEvent::LookupDone {
                lookup: id,
                info_hash,
                answered: running.lookup.answered(),
            }),
            Purpose::Announce(info_hash, port) => {
                let (port, implied_port) = match port {
                    AnnouncePort::Implied => (0, true),
                    AnnouncePort::Port(p) => (p, false),
                };
                let mut sent = 0;
                for (node, addr, token) in running.lookup.announce_targets(self.config.k) {
                    let method = Method::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    };
                    if self.send_query(
                        now,
                        addr,
                        method,
                        PendingKind::Announce { lookup: id, node },
                    ) {
                        sent += 1;
                    }
                }
                if sent == 0 {
                    self.events.push_back(DhtEvent::AnnounceDone {
                        lookup: id,
                        info_hash,
                        stored: 0,
                    });
                } else {
                    running.announcing = Some((sent, 0));
                    self.lookups.insert(id, running);
                }
            }
        }
    }
}

#[cfg(test)]
impl Dht {
    /// Queries outstanding.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Lookups running.
    pub(crate) fn running_lookups(&self) -> usize {
        self.lookups.len()
    }

    /// Puts a node in its table as if it had just answered.
    pub(crate) fn insert_node(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        self.table_mut(addr).heard(now, id, addr, Heard::Response);
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
