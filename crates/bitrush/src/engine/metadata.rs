//! Getting a magnet link's info dictionary from peers (BEP 9): the driver of a core
//! [`Session`] (announces, whom to dial, give-up) and a [`MetadataFetch`] (which peer to ask for
//! which metadata piece, and whom to drop).
//!
//! Each connection is one task that does the handshakes, sends our extension handshake at once,
//! then forwards the peer's extension messages to the fetch loop and writes what the loop asks
//! it to. Peers that misbehave (wrong hash, absurd sizes, bad pieces, rejects) are never asked
//! again; slow ones may be tried again later. Once a tracker has taken our announce, the fetch
//! ends with a `stopped`: we announced a port nobody listens on.
//!
//! A v2-only torrent's info dictionary carries no piece layers (BEP 52), so when they are asked
//! for ([`fetch_torrent_metadata`]) the same connections then fetch them with hash requests
//! (a core [`LayerFetch`]) before the fetch ends.
//!
//! Invariants: every wait is bounded (connects, handshakes, each metadata request, announces)
//! and the session gives up after [`MAX_ANNOUNCE_ROUNDS`] answered announces with nobody left
//! to try, so the fetch ends by itself; at most [`MAX_CONNECTIONS`] connections are open; the
//! bytes returned hash to the info hash and parse as an [`Info`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::connection::{self, ConnectionError, Transports};
use super::dht::{DhtHandle, LookupReply};
use super::probe::probe_announcer;
use super::tracker::{self, AnnounceError, AnnounceFailures, NoTrackerAnswered};
use crate::hashes::fetch::{LayerEvent, LayerFault, LayerFetch};
use crate::hashes::PieceHashes;
use crate::metadata::{FetchConfig, FetchEvent, MetadataFetch, PeerFault};
use crate::metainfo::{Info, MetainfoError, PieceLayer};
use crate::session::{
    CloseKind, Finish, GiveUp, Session, SessionConfig, SessionEvent, SessionParams,
};
use crate::tracker::AnnounceResponse;
use crate::types::{InfoHash, PeerId};
use crate::wire::{ExtHandshake, Handshake, Message};

/// Most peer connections open at once while fetching metadata.
pub const MAX_CONNECTIONS: usize = 5;
/// Announces answered before the fetch gives up when nobody is left to try.
pub const MAX_ANNOUNCE_ROUNDS: u32 = 3;
/// Messages queued for one connection before it counts as stuck and is dropped.
const OUTGOING_QUEUE: usize = 64;

/// What went wrong with the last peer tried.
#[derive(Debug, thiserror::Error)]
pub enum PeerProblem {
    #[error("{addr} was dropped")]
    Fault { addr: SocketAddr, source: PeerFault },
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("{0} does not read what we send")]
    Stuck(SocketAddr),
    #[error("{addr} was dropped")]
    Layers {
        addr: SocketAddr,
        source: LayerFault,
    },
}

/// Why the metadata could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The magnet link names neither trackers nor peers.
    #[error("no trackers and no peers to ask for the metadata")]
    NoSources,
    /// No tracker answered and no peer was known otherwise.
    #[error(transparent)]
    Trackers(#[from] NoTrackerAnswered),
    /// The trackers answered but knew no peers.
    #[error("no peers known for info hash {0}")]
    NoPeers(InfoHash),
    /// Every peer failed; the source is the last failure.
    #[error("could not get the metadata for {info_hash} from any peer")]
    NoPeerSentMetadata {
        info_hash: InfoHash,
        source: PeerProblem,
    },
    /// The metadata hashes to the info hash but is not a valid info dictionary.
    #[error("the metadata matches info hash {info_hash} but is not a valid info dictionary")]
    Invalid {
        info_hash: InfoHash,
        source: MetainfoError,
    },
    /// The info dictionary came, but no peer sent the piece layers it lacks.
    #[error("no peer sent the piece layers of v2 torrent {info_hash}")]
    NoPieceLayers {
        info_hash: InfoHash,
        #[source]
        source: Option<PeerProblem>,
    },
    /// A task of the fetch failed.
    #[error("a metadata fetch task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn has_trackers(trackers: &[Vec<String>]) -> bool {
    trackers.iter().any(|t| !t.is_empty())
}

/// Fetches and verifies the info dictionary of `info_hash` from peers found through `trackers`
/// (BEP 12 tiers) and `peers`. Returns it parsed and as raw bytes (whose SHA-1 is `info_hash`,
/// or whose SHA-256 starts with it).
pub async fn fetch_metadata(source: Sources<'_>) -> Result<(Info, Vec<u8>), MetadataError> {
    fetch(source, false)
        .await
        .map(|fetched| (fetched.info, fetched.info_bytes))
}

/// A torrent's metadata from peers: the info dictionary and, for a v2-only torrent, the piece
/// layers.
pub struct Fetched {
    pub info: Info,
    pub info_bytes: Vec<u8>,
    /// By file index, each checked against its file's root (empty unless v2-only).
    pub piece_layers: BTreeMap<usize, PieceLayer>,
}

/// As [`fetch_metadata`], and for a v2-only torrent also its piece layers (BEP 52 hash
/// requests on the same connections).
pub async fn fetch_torrent_metadata(source: Sources<'_>) -> Result<Fetched, MetadataError> {
    fetch(source, true).await
}

/// Where a torrent's metadata (or piece layers) is looked for, and how peers are reached.
pub struct Sources<'a> {
    /// The torrent's name in the swarm asked (for a hybrid's layers, its truncated v2 hash).
    pub info_hash: InfoHash,
    /// Trackers in BEP 12 tiers.
    pub trackers: &'a [Vec<String>],
    /// Peers known already (a magnet link's `x.pe`, say).
    pub peers: &'a [SocketAddr],
    pub peer_id: PeerId,
    pub dht: Option<DhtHandle>,
    pub transports: Transports,
}

async fn fetch(source: Sources<'_>, want_layers: bool) -> Result<Fetched, MetadataError> {
    let info_hash = source.info_hash;
    let mut fetcher = Fetcher::new(source, want_layers)?;
    let bytes = fetcher.run().await?;
    let info =
        Info::from_bytes(&bytes).map_err(|source| MetadataError::Invalid { info_hash, source })?;
    Ok(Fetched {
        info,
        info_bytes: bytes,
        piece_layers: std::mem::take(&mut fetcher.piece_layers),
    })
}

/// Fetches the piece layers `hashes` lacks (a v2 or hybrid torrent whose `.torrent` file did
/// not carry them all: BEP 52 lets it leave them to peers) with hash requests to peers found
/// through `trackers`, `peers` and the DHT. Returns them by file index, each checked against
/// its file's root; ends with [`MetadataError::NoPieceLayers`] when no peer serves them.
pub async fn fetch_piece_layers(
    source: Sources<'_>,
    hashes: PieceHashes,
) -> Result<BTreeMap<usize, PieceLayer>, MetadataError> {
    let mut fetcher = Fetcher::new(source, true)?;
    fetcher.layers_only = true;
    fetcher.layers = Some((LayerFetch::new(hashes), Vec::new()));
    fetcher.run().await?;
    Ok(std::mem::take(&mut fetcher.piece_layers))
}

impl Fetcher {
    fn new(source: Sources<'_>, want_layers: bool) -> Result<Fetcher, MetadataError> {
        let Sources {
            info_hash,
            trackers,
            peers,
            peer_id,
            dht,
            transports,
        } = source;
        if !has_trackers(trackers) && peers.is_empty() && dht.is_none() {
            return Err(MetadataError::NoSources);
        }
        let now = Instant::now();
        let session = Session::new(
            now,
            SessionParams {
                announcer: probe_announcer(info_hash, peer_id),
                trackers: trackers.to_vec(),
                peers: peers.to_vec(),
                total_length: 0,
                config: SessionConfig {
                    max_peers: MAX_CONNECTIONS,
                    max_incoming: 0,
                    seed: None,
                    give_up_after_announces: Some(MAX_ANNOUNCE_ROUNDS),
                    dht: dht.is_some(),
                    dht_announce: false,
                    ..SessionConfig::default()
                }
                .into(),
            },
        );
        let (events_tx, events_rx) = mpsc::channel(256);
        let (dht_tx, dht_rx) = mpsc::channel(64);
        Ok(Fetcher {
            transports,
            dht,
            dht_tx,
            dht_rx,
            info_hash,
            handshake: Handshake::new(info_hash, peer_id),
            session,
            machine: MetadataFetch::new(info_hash, FetchConfig::default()),
            events_tx,
            events_rx,
            conns: JoinSet::new(),
            handles: HashMap::new(),
            next_key: 0,
            announces: JoinSet::new(),
            announce_failures: AnnounceFailures::default(),
            last_problem: None,
            metadata: None,
            dht_found: 0,
            want_layers,
            layers: None,
            connected: BTreeSet::new(),
            piece_layers: BTreeMap::new(),
            layers_only: false,
        })
    }
}

/// What a connection task tells the fetch loop.
enum PeerEvent {
    /// The BitTorrent handshake is done.
    Connected { key: u64, supports_extensions: bool },
    /// An extension message arrived.
    Message { key: u64, msg: Message },
}

struct Conn {
    addr: SocketAddr,
    abort: AbortHandle,
    tx: mpsc::Sender<Message>,
}

/// What a DHT lookup task reports to the fetch loop: peers, then `None` when it is over.
type DhtFound = Option<Vec<SocketAddr>>;

struct Fetcher {
    transports: Transports,
    dht: Option<DhtHandle>,
    dht_tx: mpsc::Sender<DhtFound>,
    dht_rx: mpsc::Receiver<DhtFound>,
    info_hash: InfoHash,
    handshake: Handshake,
    session: Session,
    machine: MetadataFetch,
    events_tx: mpsc::Sender<PeerEvent>,
    events_rx: mpsc::Receiver<PeerEvent>,
    conns: JoinSet<(u64, Result<(), ConnectionError>)>,
    handles: HashMap<u64, Conn>,
    next_key: u64,
    announces: JoinSet<(String, Result<AnnounceResponse, AnnounceError>)>,
    announce_failures: AnnounceFailures,
    last_problem: Option<PeerProblem>,
    metadata: Option<Vec<u8>>,
    /// Peers the running DHT lookup found so far.
    dht_found: usize,
    /// Fetch a v2-only torrent's piece layers after its info dictionary.
    want_layers: bool,
    /// The layer fetch, with the info dictionary it is for, once that came.
    layers: Option<(LayerFetch, Vec<u8>)>,
    /// Connections whose handshake is done.
    connected: BTreeSet<u64>,
    /// The layers fetched.
    piece_layers: BTreeMap<usize, PieceLayer>,
    /// The info dictionary is known: only the layers are fetched, and the metadata fetch
    /// hears of no peer.
    layers_only: bool,
}

impl Fetcher {
    /// Closes a connection and tells the session how it ended.
    fn close(&mut self, key: u64, kind: CloseKind) {
        self.connected.remove(&key);
        if let Some((layers, _)) = &mut self.layers {
            layers.handle_disconnected(Instant::now(), key);
        }
        if let Some(conn) = self.handles.remove(&key) {
            conn.abort.abort();
            self.session
                .handle_connection_closed(Instant::now(), conn.addr, true, kind);
        }
    }

    fn connect(&mut self, addr: SocketAddr) {
        let key = self.next_key;
        self.next_key += 1;
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        let (events, ours) = (self.events_tx.clone(), self.handshake);
        let transports = self.transports.clone();
        let abort = self.conns.spawn(async move {
            let result = connection_task(key, addr, ours, transports, events, rx).await;
            (key, result)
        });
        self.handles.insert(key, Conn { addr, abort, tx });
    }

    /// Carries out what the fetch machine asked for.
    fn apply_machine(&mut self) {
        let now = Instant::now();
        while let Some(event) = self.machine.poll_event() {
            match event {
                FetchEvent::Send { peer, msg } => {
                    let sent = self
                        .handles
                        .get(&peer)
                        .is_some_and(|c| c.tx.try_send(msg).is_ok());
                    if !sent {
                        // Gone, or not reading what we send.
                        if let Some(conn) = self.handles.get(&peer) {
                            self.last_problem = Some(PeerProblem::Stuck(conn.addr));
                        }
                        self.close(peer, CloseKind::Transient);
                        self.machine.handle_disconnected(now, peer);
                    }
                }
                FetchEvent::Drop { peer, fault } => {
                    let kind = if fault.is_retryable() {
                        CloseKind::Transient
                    } else {
                        // It cannot or will not serve correct metadata: never again.
                        CloseKind::Banned
                    };
                    if let Some(conn) = self.handles.get(&peer) {
                        tracing::debug!(addr = %conn.addr, %fault, "dropping peer");
                        self.last_problem = Some(PeerProblem::Fault {
                            addr: conn.addr,
                            source: fault,
                        });
                    }
                    self.close(peer, kind);
                }
            }
        }
        if self.metadata.is_none() && self.layers.is_none() {
            if let Some(bytes) = self.machine.poll_metadata() {
                match self.layer_fetch(&bytes) {
                    Some(mut fetch) => {
                        for &key in &self.connected {
                            fetch.handle_connected(now, key);
                        }
                        self.layers = Some((fetch, bytes));
                    }
                    None => {
                        self.metadata = Some(bytes);
                        self.session.handle_shutdown(now);
                    }
                }
            }
        }
        self.apply_layers();
    }

    /// The fetch of the piece layers `info_bytes` lacks, if asked for and it lacks some.
    fn layer_fetch(&self, info_bytes: &[u8]) -> Option<LayerFetch> {
        if !self.want_layers {
            return None;
        }
        let info = Info::from_bytes(info_bytes).ok()?;
        let hashes = PieceHashes::new(info.into(), &BTreeMap::new()).ok()?;
        (hashes.is_v2() && !hashes.missing_layers().is_empty()).then(|| LayerFetch::new(hashes))
    }

    /// Carries out what the layer fetch asked for; ends the fetch once it has every layer.
    fn apply_layers(&mut self) {
        let Some((layers, _)) = &mut self.layers else {
            return;
        };
        let mut dropped = Vec::new();
        while let Some(event) = layers.poll_event() {
            match event {
                LayerEvent::Send { peer, msg } => {
                    let sent = self
                        .handles
                        .get(&peer)
                        .is_some_and(|c| c.tx.try_send(msg).is_ok());
                    if !sent {
                        dropped.push((peer, None));
                    }
                }
                LayerEvent::Drop { peer, fault } => dropped.push((peer, Some(fault))),
            }
        }
        let done = layers.is_done();
        for (peer, fault) in dropped {
            // A peer without the layers will not have them on a second try either.
            let kind = match fault {
                Some(_) => CloseKind::Banned,
                None => CloseKind::Transient,
            };
            if let Some(conn) = self.handles.get(&peer) {
                tracing::debug!(addr = %conn.addr, ?fault, "dropping peer");
                self.last_problem = Some(match fault {
                    Some(source) => PeerProblem::Layers {
                        addr: conn.addr,
                        source,
                    },
                    None => PeerProblem::Stuck(conn.addr),
                });
            }
            self.close(peer, kind);
            self.machine.handle_disconnected(Instant::now(), peer);
        }
        if done {
            if let Some((layers, bytes)) = self.layers.take() {
                if let Some(e) = layers.failure() {
                    tracing::warn!(error = %e, "fetched piece layers do not check out");
                }
                self.piece_layers = layers.poll_layers().unwrap_or_default();
                self.metadata = Some(bytes);
                self.session.handle_shutdown(Instant::now());
            }
        }
    }

    /// Asks the DHT for peers (we do not listen, so nothing is announced).
    fn spawn_dht_lookup(&self) {
        let (tx, dht, info_hash) = (self.dht_tx.clone(), self.dht.clone(), self.info_hash);
        tokio::spawn(async move {
            if let Some(dht) = dht {
                let mut replies = dht.lookup(info_hash, None).await;
                while let Some(LookupReply::Peers(peers)) = replies.recv().await {
                    if tx.send(Some(peers)).await.is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(None).await;
        });
    }

    /// Carries out the session's events; returns how it finished, once it has.
    fn apply_session(&mut self) -> Option<Finish> {
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Announce { url, request } => {
                    self.announces.spawn(async move {
                        let result = tracker::announce(&url, &request).await;
                        (url, result)
                    });
                }
                SessionEvent::Connect(addr) => self.connect(addr),
                SessionEvent::DhtLookup { .. } => self.spawn_dht_lookup(),
                SessionEvent::Stalled(why) => tracing::warn!("no progress: {why}"),
                // A metadata fetch never seeds.
                SessionEvent::Seeding | SessionEvent::Dormant => {}
                SessionEvent::Finished(finish) => return Some(finish),
            }
        }
        None
    }

    async fn run(&mut self) -> Result<Vec<u8>, MetadataError> {
        let finish = loop {
            let now = Instant::now();
            if self.machine.poll_timeout().is_some_and(|t| t <= now) {
                self.machine.handle_timeout(now);
            }
            if let Some((layers, _)) = &mut self.layers {
                if layers.poll_timeout().is_some_and(|t| t <= now) {
                    layers.handle_timeout(now);
                }
            }
            self.apply_machine();
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
            if let Some(finish) = self.apply_session() {
                break finish;
            }
            let layers_deadline = self.layers.as_ref().and_then(|(l, _)| l.poll_timeout());
            let deadline = [
                self.machine.poll_timeout(),
                self.session.poll_timeout(),
                layers_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    let now = Instant::now();
                    match event {
                        PeerEvent::Connected { key, supports_extensions } => {
                            if self.handles.contains_key(&key) {
                                self.connected.insert(key);
                                if !self.layers_only {
                                    self.machine.handle_connected(now, key, supports_extensions);
                                }
                                if let Some((layers, _)) = &mut self.layers {
                                    layers.handle_connected(now, key);
                                }
                            }
                        }
                        PeerEvent::Message { key, msg } => {
                            if self.handles.contains_key(&key) {
                                match &mut self.layers {
                                    Some((layers, _)) if !matches!(msg, Message::Extended { .. }) => {
                                        layers.handle_message(now, key, &msg);
                                    }
                                    _ if self.layers_only => {}
                                    _ => self.machine.handle_message(now, key, &msg),
                                }
                            }
                        }
                    }
                }
                Some(joined) = self.conns.join_next() => {
                    let (key, result) = match joined {
                        Ok(ended) => ended,
                        // A connection we dropped and aborted: already closed.
                        Err(e) if e.is_cancelled() => continue,
                        Err(e) => return Err(MetadataError::Task(e)),
                    };
                    if let Err(e) = result {
                        let kind = e.close_kind();
                        tracing::debug!(error = %super::error_chain(&e), "connection ended");
                        self.last_problem = Some(e.into());
                        self.close(key, kind);
                    } else {
                        self.close(key, CloseKind::Ours);
                    }
                    self.machine.handle_disconnected(Instant::now(), key);
                }
                Some(joined) = self.announces.join_next() => {
                    let (url, result) = joined.map_err(MetadataError::Task)?;
                    let now = Instant::now();
                    match result {
                        Ok(resp) => {
                            if let Some(w) = &resp.warning {
                                tracing::warn!(tracker = %url, warning = %w, "tracker warning");
                            }
                            self.session.handle_announce_response(now, &url, &resp);
                        }
                        Err(e) => {
                            tracing::warn!(tracker = %url, error = %super::error_chain(&e), "announce failed");
                            self.session.handle_announce_failure(now, &url);
                            self.announce_failures.0.push((url, e));
                        }
                    }
                }
                Some(found) = self.dht_rx.recv() => match found {
                    Some(peers) => {
                        self.dht_found += peers.len();
                        self.session.handle_peers(&peers);
                    }
                    None => {
                        let found = std::mem::take(&mut self.dht_found);
                        self.session.handle_dht_done(Instant::now(), found);
                    }
                },
                () = super::sleep_until(deadline) => {}
            }
        };
        self.conns.abort_all();
        self.announces.abort_all();
        if let Some(bytes) = self.metadata.take() {
            return Ok(bytes);
        }
        if self.layers.is_some() {
            return Err(MetadataError::NoPieceLayers {
                info_hash: self.info_hash,
                source: self.last_problem.take(),
            });
        }
        Err(match (finish, self.last_problem.take()) {
            (Finish::GaveUp(GiveUp::NoTrackerAnswered), _) => {
                NoTrackerAnswered(std::mem::take(&mut self.announce_failures)).into()
            }
            (_, Some(source)) => MetadataError::NoPeerSentMetadata {
                info_hash: self.info_hash,
                source,
            },
            (_, None) => MetadataError::NoPeers(self.info_hash),
        })
    }
}

/// One connection: handshakes, then forwards extension messages and writes what it is given.
/// Ends when the peer closes, on an error, when the fetch loop goes away, or when aborted.
async fn connection_task(
    key: u64,
    addr: SocketAddr,
    ours: Handshake,
    transports: Transports,
    events: mpsc::Sender<PeerEvent>,
    mut outgoing: mpsc::Receiver<Message>,
) -> Result<(), ConnectionError> {
    let (mut conn, theirs) = connection::dial(addr, &ours, None, &transports).await?;
    let supports_extensions = theirs.supports_extensions();
    let connected = PeerEvent::Connected {
        key,
        supports_extensions,
    };
    if events.send(connected).await.is_err() {
        return Ok(());
    }
    if supports_extensions {
        // BEP 10: our extension handshake right after the BitTorrent handshake.
        conn.send(&Message::Extended {
            id: 0,
            payload: ExtHandshake::ours(None).encode().into(),
        })
        .await?;
    }
    let mut incoming = Vec::new();
    loop {
        tokio::select! {
            read = conn.read_messages(&mut incoming) => {
                read?;
                for msg in incoming.drain(..) {
                    // Extension messages carry the metadata; BEP 52 hash messages the layers.
                    if let Message::Extended { .. } | Message::Hashes { .. } | Message::HashReject(_) = msg {
                        if events.send(PeerEvent::Message { key, msg }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            msg = outgoing.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                conn.send(&msg).await?;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::extension::{answer_metadata, OUR_UT_METADATA_ID};
    use crate::wire::message::MAX_MESSAGE_LEN;
    use crate::wire::MessageDecoder;
    use crate::wire::MetadataMsg;
    use bytes::BytesMut;
    use sha1::{Digest, Sha1};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A valid single-file info dictionary of about `name_len` bytes.
    pub(crate) fn info_dict(name_len: usize) -> (Vec<u8>, InfoHash) {
        let name = "n".repeat(name_len);
        let mut bytes = format!(
            "d6:lengthi5e4:name{}:{name}12:piece lengthi16384e6:pieces20:",
            name.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&[7u8; 20]);
        bytes.push(b'e');
        let hash = InfoHash(Sha1::digest(&bytes).into());
        (bytes, hash)
    }

    /// A peer on 127.0.0.1 that sends a bitfield before its extension handshake (binary `v`)
    /// and serves `info` over ut_metadata, for one connection.
    pub(crate) async fn metadata_peer(info: Vec<u8>, info_hash: InfoHash) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let serve = async {
                let (mut s, _) = listener.accept().await?;
                let mut hs = [0u8; 68];
                s.read_exact(&mut hs).await?;
                s.write_all(&Handshake::new(info_hash, crate::engine::new_peer_id()).encode())
                    .await?;
                let mut out = BytesMut::new();
                Message::Bitfield(vec![0u8; 3].into()).encode(&mut out);
                let mut ext = b"d1:md11:ut_metadatai5ee13:metadata_sizei".to_vec();
                ext.extend_from_slice(format!("{}e1:v3:", info.len()).as_bytes());
                ext.extend_from_slice(b"\xff\xfe\x00e");
                Message::Extended {
                    id: 0,
                    payload: ext.into(),
                }
                .encode(&mut out);
                s.write_all(&out).await?;
                let mut decoder = MessageDecoder::new(MAX_MESSAGE_LEN);
                let mut buf = BytesMut::new();
                while s.read_buf(&mut buf).await? > 0 {
                    while let Ok(Some(msg)) = decoder.decode(&mut buf) {
                        let Message::Extended { id: 5, payload } = msg else {
                            continue;
                        };
                        let Ok(req) = MetadataMsg::decode(&payload) else {
                            continue;
                        };
                        if let Some(answer) = answer_metadata(Some(&info), &req) {
                            let mut out = BytesMut::new();
                            Message::Extended {
                                id: OUR_UT_METADATA_ID,
                                payload: answer.encode().into(),
                            }
                            .encode(&mut out);
                            s.write_all(&out).await?;
                        }
                    }
                }
                Ok::<(), std::io::Error>(())
            };
            // The client may hang up at any point; that ends the peer.
            let _ = serve.await;
        });
        addr
    }

    #[tokio::test]
    async fn fetches_multi_piece_metadata_from_a_peer() {
        let (info, hash) = info_dict(40_000);
        let addr = metadata_peer(info.clone(), hash).await;
        let (parsed, bytes) = fetch_metadata(Sources {
            info_hash: hash,
            trackers: &[],
            peers: &[addr],
            peer_id: crate::engine::new_peer_id(),
            dht: None,
            transports: Transports::default(),
        })
        .await
        .unwrap();
        assert_eq!(bytes, info);
        assert_eq!(parsed.total_length, 5);
        // The wrong info hash: the peer answers the handshake for the right one only.
        let addr = metadata_peer(info, hash).await;
        let err = fetch_metadata(Sources {
            info_hash: InfoHash([9; 20]),
            trackers: &[],
            peers: &[addr],
            peer_id: crate::engine::new_peer_id(),
            dht: None,
            transports: Transports::default(),
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, MetadataError::NoPeerSentMetadata { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_sources_is_an_error() {
        let err = fetch_metadata(Sources {
            info_hash: InfoHash([2; 20]),
            trackers: &[],
            peers: &[],
            peer_id: crate::engine::new_peer_id(),
            dht: None,
            transports: Transports::default(),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, MetadataError::NoSources), "{err}");
    }
}
