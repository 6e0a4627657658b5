//! Getting a torrent's info dictionary from peers (BEP 9), for magnet links.
//!
//! [`fetch_metadata`] announces to the trackers (with `left` = 1: the size is not known yet),
//! connects to a few peers at a time, and drives the sans-IO
//! [`MetadataFetch`] with what they send. Each
//! connection is one task that does the handshakes, sends our extension handshake at once, then
//! forwards the peer's extension messages to the fetch loop and writes what the loop asks it to.
//! Peers that misbehave (wrong hash, absurd sizes, bad pieces, rejects) are never asked again;
//! slow ones may be retried after a new announce. [`handshake_with_extensions`] and
//! [`find_peers`] serve the `magnet_handshake` command. Once a tracker has taken our announce,
//! the fetch ends with a `stopped` ([`announce_stopped`]): we announced a port nobody listens on.
//!
//! Invariants: every wait is bounded (connect, handshakes, each metadata request, announces),
//! and announces happen at most [`MAX_ANNOUNCE_ROUNDS`] times, so the fetch ends by itself;
//! at most [`MAX_CONNECTIONS`] connections are open; frames are bounded by
//! [`MAX_MESSAGE_LEN`]; the bytes returned hash to the info hash and parse as an [`Info`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::peer::{self, PeerConnError};
use crate::metainfo::{Info, MetainfoError};
use crate::tracker::{AnnounceRequest, AnnounceResponse, Event, TrackerError};
use crate::types::{InfoHash, PeerId};
use crate::wire::message::MAX_MESSAGE_LEN;
use crate::wire::metadata_fetch::{Action, FetchConfig, MetadataFetch, PeerKey};
use crate::wire::{ExtHandshake, Handshake, Message, MessageDecoder};

/// Most peer connections open at once while fetching metadata.
pub const MAX_CONNECTIONS: usize = 5;
/// Most announces (to every tier) during one fetch.
pub const MAX_ANNOUNCE_ROUNDS: u32 = 3;
/// How long a peer may take to send its extension handshake after ours.
pub const EXT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The port we announce (we do not listen yet; `stopped` takes the entry off again).
const ANNOUNCE_PORT: u16 = 6881;
/// How long the closing `stopped` announce may take.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a peer whose connection broke is tried again.
const MAX_CONNECTION_RETRIES: u32 = 2;
/// Pause before announcing again when every known peer failed.
const REANNOUNCE_DELAY: Duration = Duration::from_secs(2);
/// Messages queued for one connection before it counts as stuck and is dropped.
const OUTGOING_QUEUE: usize = 64;
/// Most non-handshake messages read while waiting for an extension handshake.
const MAX_MESSAGES_BEFORE_EXT_HANDSHAKE: usize = 1024;

/// Why a handshake with extensions failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Connecting or the BitTorrent handshake failed, or the connection broke.
    #[error(transparent)]
    Conn(#[from] PeerConnError),
    /// No extension handshake within [`EXT_HANDSHAKE_TIMEOUT`].
    #[error("{0}: sent no extension handshake within {secs} s", secs = EXT_HANDSHAKE_TIMEOUT.as_secs())]
    ExtTimeout(SocketAddr),
    /// Too many other messages and no extension handshake.
    #[error("{0}: sent {MAX_MESSAGES_BEFORE_EXT_HANDSHAKE} messages but no extension handshake")]
    ExtMissing(SocketAddr),
}

/// Why the metadata could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The magnet link names neither trackers nor peers.
    #[error("no trackers and no peers to ask for the metadata")]
    NoSources,
    /// No tracker answered and no peer was known otherwise.
    #[error("{0}")]
    Tracker(TrackerError),
    /// The trackers answered but knew no peers.
    #[error("no peers known for info hash {0}")]
    NoPeers(InfoHash),
    /// Every peer failed; the message names the last failure.
    #[error("could not get the metadata for {info_hash} from any peer (last problem: {last})")]
    NoPeerSentMetadata {
        /// The torrent.
        info_hash: InfoHash,
        /// The last peer's failure, `addr: why`.
        last: String,
    },
    /// No peer completed the handshakes.
    #[error("no peer completed the handshake (last problem: {0})")]
    NoHandshake(String),
    /// The metadata hashes to the info hash but is not a valid info dictionary.
    #[error(
        "the metadata matches info hash {info_hash} but is not a valid info dictionary: {source}"
    )]
    Invalid {
        /// The torrent.
        info_hash: InfoHash,
        /// What is wrong with it.
        source: MetainfoError,
    },
}

fn announce_request(info_hash: InfoHash, peer_id: PeerId, event: Event) -> AnnounceRequest {
    AnnounceRequest {
        info_hash,
        peer_id,
        port: ANNOUNCE_PORT,
        uploaded: 0,
        downloaded: 0,
        // Unknown until the metadata arrives; a positive value says we are a leecher.
        left: 1,
        event,
        numwant: Some(200),
        key: u32::from_be_bytes([peer_id.0[16], peer_id.0[17], peer_id.0[18], peer_id.0[19]]),
    }
}

fn has_trackers(trackers: &[Vec<String>]) -> bool {
    trackers.iter().any(|t| !t.is_empty())
}

/// Tells the trackers we are gone (best effort, within 2 s): the port we
/// announced while looking for peers is not one anybody can reach.
pub async fn announce_stopped(info_hash: InfoHash, trackers: &[Vec<String>], peer_id: PeerId) {
    if !has_trackers(trackers) {
        return;
    }
    let req = announce_request(info_hash, peer_id, Event::Stopped);
    let _ = tokio::time::timeout(
        STOPPED_TIMEOUT,
        super::tracker::announce_all(trackers, &req),
    )
    .await;
}

/// `first` then the peers of `more` not already listed.
fn merge_peers(first: &[SocketAddr], more: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut seen = HashSet::new();
    first
        .iter()
        .chain(more)
        .copied()
        .filter(|a| seen.insert(*a))
        .collect()
}

/// The peers to try for a torrent: `peers` (e.g. a magnet's `x.pe`) first, then whatever the
/// trackers return. A tracker failure is an error only when no peer is known otherwise.
pub async fn find_peers(
    info_hash: InfoHash,
    trackers: &[Vec<String>],
    peers: &[SocketAddr],
    peer_id: PeerId,
) -> Result<Vec<SocketAddr>, MetadataError> {
    if !has_trackers(trackers) {
        if peers.is_empty() {
            return Err(MetadataError::NoSources);
        }
        return Ok(peers.to_vec());
    }
    let req = announce_request(info_hash, peer_id, Event::Started);
    match super::tracker::announce_all(trackers, &req).await {
        Ok(resp) => {
            let all = merge_peers(peers, &resp.peers);
            if all.is_empty() {
                return Err(MetadataError::NoPeers(info_hash));
            }
            Ok(all)
        }
        Err(e) if peers.is_empty() => Err(MetadataError::Tracker(e)),
        Err(e) => {
            tracing::warn!(error = %e, "announce failed; trying the magnet link's peers");
            Ok(peers.to_vec())
        }
    }
}

/// Sends our extension handshake (BEP 10) and reads messages until the peer's arrives, within
/// [`EXT_HANDSHAKE_TIMEOUT`]. Other messages before it (bitfield, have...) are skipped.
pub async fn exchange_ext_handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
) -> Result<ExtHandshake, HandshakeError> {
    let io = |source| PeerConnError::Io { addr, source };
    let wire = |source| PeerConnError::Wire { addr, source };
    let exchange = async {
        let mut out = BytesMut::new();
        Message::Extended {
            id: 0,
            payload: ExtHandshake::ours(None).encode().into(),
        }
        .encode(&mut out);
        stream.write_all(&out).await.map_err(io)?;
        let mut decoder = MessageDecoder::new(MAX_MESSAGE_LEN);
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        let mut skipped = 0usize;
        loop {
            while let Some(msg) = decoder.decode(&mut inbuf).map_err(wire)? {
                if let Message::Extended { id: 0, payload } = msg {
                    return Ok(ExtHandshake::decode(&payload).map_err(wire)?);
                }
                skipped += 1;
                if skipped > MAX_MESSAGES_BEFORE_EXT_HANDSHAKE {
                    return Err(HandshakeError::ExtMissing(addr));
                }
            }
            if stream.read_buf(&mut inbuf).await.map_err(io)? == 0 {
                return Err(PeerConnError::Closed(addr).into());
            }
        }
    };
    tokio::time::timeout(EXT_HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| HandshakeError::ExtTimeout(addr))?
}

/// Connects to `addr`, exchanges BitTorrent handshakes and, if the peer supports the extension
/// protocol, extension handshakes.
pub async fn handshake_with_extensions(
    addr: SocketAddr,
    info_hash: InfoHash,
    peer_id: PeerId,
) -> Result<(Handshake, Option<ExtHandshake>), HandshakeError> {
    let mut stream = peer::connect(addr).await?;
    let theirs = peer::exchange_handshake(&mut stream, addr, info_hash, peer_id).await?;
    if !theirs.supports_extensions() {
        return Ok((theirs, None));
    }
    let ext = exchange_ext_handshake(&mut stream, addr).await?;
    Ok((theirs, Some(ext)))
}

/// Tries `peers` in order, [`MAX_CONNECTIONS`] at a time, and returns the first one to
/// complete [`handshake_with_extensions`]; the others are abandoned.
pub async fn handshake_any(
    peers: &[SocketAddr],
    info_hash: InfoHash,
    peer_id: PeerId,
) -> Result<(SocketAddr, Handshake, Option<ExtHandshake>), MetadataError> {
    type Attempt = (
        SocketAddr,
        Result<(Handshake, Option<ExtHandshake>), HandshakeError>,
    );
    let mut pending = peers.iter().copied();
    let mut running: JoinSet<Attempt> = JoinSet::new();
    let mut last = "no peers".to_string();
    loop {
        while running.len() < MAX_CONNECTIONS {
            let Some(addr) = pending.next() else { break };
            running.spawn(async move {
                (
                    addr,
                    handshake_with_extensions(addr, info_hash, peer_id).await,
                )
            });
        }
        let Some(joined) = running.join_next().await else {
            return Err(MetadataError::NoHandshake(last));
        };
        match joined {
            Ok((addr, Ok((hs, ext)))) => return Ok((addr, hs, ext)),
            Ok((addr, Err(e))) => {
                tracing::debug!(%addr, error = %e, "handshake failed");
                last = e.to_string();
            }
            Err(e) => last = e.to_string(),
        }
    }
}

/// Fetches and verifies the info dictionary of `info_hash` from peers found through `trackers`
/// (BEP 12 tiers) and `peers`. Returns it parsed and as raw bytes (whose SHA-1 is `info_hash`).
pub async fn fetch_metadata(
    info_hash: InfoHash,
    trackers: &[Vec<String>],
    peers: &[SocketAddr],
    peer_id: PeerId,
) -> Result<(Info, Vec<u8>), MetadataError> {
    if !has_trackers(trackers) && peers.is_empty() {
        return Err(MetadataError::NoSources);
    }
    let (events_tx, events_rx) = mpsc::channel(256);
    let mut fetcher = Fetcher {
        info_hash,
        peer_id,
        trackers: trackers.to_vec(),
        extra_peers: peers.to_vec(),
        machine: MetadataFetch::new(info_hash, FetchConfig::default()),
        events_tx,
        events_rx,
        conns: JoinSet::new(),
        handles: HashMap::new(),
        candidates: VecDeque::new(),
        queued: HashSet::new(),
        active: HashSet::new(),
        banned: HashSet::new(),
        next_key: 0,
        last_problem: None,
        seen_any_peer: false,
        announced: false,
        failures: HashMap::new(),
    };
    let result = fetcher.run().await;
    if fetcher.announced {
        announce_stopped(info_hash, trackers, peer_id).await;
    }
    let bytes = result?;
    let info =
        Info::from_bytes(&bytes).map_err(|source| MetadataError::Invalid { info_hash, source })?;
    Ok((info, bytes))
}

/// What a connection task tells the fetch loop.
enum PeerEvent {
    /// The BitTorrent handshake is done.
    Connected {
        key: PeerKey,
        supports_extensions: bool,
    },
    /// An extension message arrived.
    Message { key: PeerKey, msg: Message },
}

struct Conn {
    addr: SocketAddr,
    abort: AbortHandle,
    tx: mpsc::Sender<Message>,
}

type ConnResult = (PeerKey, SocketAddr, Result<(), PeerConnError>);

struct Fetcher {
    info_hash: InfoHash,
    peer_id: PeerId,
    trackers: Vec<Vec<String>>,
    extra_peers: Vec<SocketAddr>,
    machine: MetadataFetch,
    events_tx: mpsc::Sender<PeerEvent>,
    events_rx: mpsc::Receiver<PeerEvent>,
    conns: JoinSet<ConnResult>,
    handles: HashMap<PeerKey, Conn>,
    candidates: VecDeque<SocketAddr>,
    /// The addresses in `candidates`.
    queued: HashSet<SocketAddr>,
    /// Addresses with an open connection.
    active: HashSet<SocketAddr>,
    /// Peers that showed they cannot or will not serve correct metadata.
    banned: HashSet<SocketAddr>,
    next_key: PeerKey,
    last_problem: Option<String>,
    seen_any_peer: bool,
    /// Some tracker took our announce: it gets a `stopped` when the fetch ends.
    announced: bool,
    /// Connection failures per address: a broken connection is retried a few times.
    failures: HashMap<SocketAddr, u32>,
}

impl Fetcher {
    fn add_candidates(&mut self, peers: &[SocketAddr]) {
        for &addr in peers {
            self.seen_any_peer = true;
            if !self.banned.contains(&addr)
                && !self.active.contains(&addr)
                && self.queued.insert(addr)
            {
                self.candidates.push_back(addr);
            }
        }
    }

    fn connect_more(&mut self) {
        while self.handles.len() < MAX_CONNECTIONS {
            let Some(addr) = self.candidates.pop_front() else {
                return;
            };
            self.queued.remove(&addr);
            if self.banned.contains(&addr) || self.active.contains(&addr) {
                continue;
            }
            let key = self.next_key;
            self.next_key += 1;
            let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
            let (events, info_hash, peer_id) =
                (self.events_tx.clone(), self.info_hash, self.peer_id);
            let abort = self.conns.spawn(async move {
                let result = connection(key, addr, info_hash, peer_id, events, rx).await;
                (key, addr, result)
            });
            self.active.insert(addr);
            self.handles.insert(key, Conn { addr, abort, tx });
        }
    }

    fn close(&mut self, key: PeerKey) -> Option<SocketAddr> {
        let conn = self.handles.remove(&key)?;
        conn.abort.abort();
        self.active.remove(&conn.addr);
        Some(conn.addr)
    }

    /// Carries out what the state machine asked for.
    fn apply_actions(&mut self) {
        let now = Instant::now();
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send { peer, msg } => {
                    let sent = self
                        .handles
                        .get(&peer)
                        .is_some_and(|c| c.tx.try_send(msg).is_ok());
                    if !sent {
                        // Gone, or not reading what we send.
                        if let Some(addr) = self.close(peer) {
                            self.last_problem = Some(format!("{addr}: not reading our messages"));
                        }
                        self.machine.remove_peer(peer, now);
                    }
                }
                Action::Drop { peer, fault } => {
                    if let Some(addr) = self.close(peer) {
                        tracing::debug!(%addr, %fault, "dropping peer");
                        self.last_problem = Some(format!("{addr}: {fault}"));
                        if !fault.is_retryable() {
                            self.banned.insert(addr);
                        }
                    }
                }
            }
        }
    }

    async fn run(&mut self) -> Result<Vec<u8>, MetadataError> {
        let have_trackers = has_trackers(&self.trackers);
        let extra = self.extra_peers.clone();
        self.add_candidates(&extra);
        let mut announce: JoinSet<Result<AnnounceResponse, TrackerError>> = JoinSet::new();
        let mut rounds = 0u32;
        let mut next_announce = have_trackers.then(Instant::now);
        let mut tracker_error: Option<TrackerError> = None;
        let result = loop {
            self.connect_more();
            if have_trackers
                && announce.is_empty()
                && rounds < MAX_ANNOUNCE_ROUNDS
                && next_announce.is_some_and(|t| Instant::now() >= t)
            {
                let event = if rounds == 0 {
                    Event::Started
                } else {
                    Event::None
                };
                let req = announce_request(self.info_hash, self.peer_id, event);
                let tiers = self.trackers.clone();
                announce.spawn(async move { super::tracker::announce_all(&tiers, &req).await });
                rounds += 1;
                next_announce = None;
            }
            let idle = self.handles.is_empty() && self.candidates.is_empty() && announce.is_empty();
            if idle {
                if have_trackers && rounds < MAX_ANNOUNCE_ROUNDS {
                    next_announce.get_or_insert_with(|| Instant::now() + REANNOUNCE_DELAY);
                } else {
                    break Err(self.give_up(tracker_error.take()));
                }
            }
            let tick_at = self.machine.next_deadline();
            let announce_at = next_announce.filter(|_| announce.is_empty());
            tokio::select! {
                Some(event) = self.events_rx.recv() => {
                    let now = Instant::now();
                    match event {
                        PeerEvent::Connected { key, supports_extensions } => {
                            if self.handles.contains_key(&key) {
                                self.machine.add_peer(key, supports_extensions, now);
                            }
                        }
                        PeerEvent::Message { key, msg } => {
                            if self.handles.contains_key(&key) {
                                self.machine.handle_message(key, &msg, now);
                            }
                        }
                    }
                }
                Some(joined) = self.conns.join_next() => {
                    if let Ok((key, addr, result)) = joined {
                        if self.close(key).is_some() {
                            if let Err(e) = result {
                                tracing::debug!(%addr, error = %e, "connection ended");
                                self.last_problem = Some(e.to_string());
                                // A connection that broke (not a peer we banned) gets another try.
                                let failures = self.failures.entry(addr).or_insert(0);
                                *failures += 1;
                                if *failures <= MAX_CONNECTION_RETRIES {
                                    self.add_candidates(&[addr]);
                                }
                            }
                        }
                        self.machine.remove_peer(key, Instant::now());
                    }
                }
                Some(joined) = announce.join_next() => {
                    match joined {
                        Ok(Ok(resp)) => {
                            self.announced = true;
                            if let Some(w) = &resp.warning {
                                tracing::warn!(warning = %w, "tracker warning");
                            }
                            // The magnet's own peers get another chance with each round.
                            let mut peers = resp.peers;
                            peers.extend(self.extra_peers.iter().copied());
                            self.add_candidates(&peers);
                        }
                        Ok(Err(e)) => {
                            if self.extra_peers.is_empty() && !self.seen_any_peer {
                                break Err(MetadataError::Tracker(e));
                            }
                            tracing::warn!(error = %e, "announce failed");
                            tracker_error = Some(e);
                        }
                        Err(e) => {
                            tracker_error = Some(TrackerError::Io(e.to_string()));
                        }
                    }
                }
                _ = sleep_until(tick_at), if tick_at.is_some() => {
                    self.machine.tick(Instant::now());
                }
                _ = sleep_until(announce_at), if announce_at.is_some() => {}
            }
            self.apply_actions();
            if let Some(bytes) = self.machine.take_metadata() {
                break Ok(bytes);
            }
        };
        self.conns.abort_all();
        announce.abort_all();
        result
    }

    fn give_up(&mut self, tracker_error: Option<TrackerError>) -> MetadataError {
        match (self.last_problem.take(), tracker_error) {
            (Some(last), _) => MetadataError::NoPeerSentMetadata {
                info_hash: self.info_hash,
                last,
            },
            (None, Some(e)) if !self.seen_any_peer => MetadataError::Tracker(e),
            _ => MetadataError::NoPeers(self.info_hash),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// One connection: handshakes, then forwards extension messages and writes what it is given.
/// Ends when the peer closes, on an error, when the fetch loop goes away, or when aborted.
async fn connection(
    key: PeerKey,
    addr: SocketAddr,
    info_hash: InfoHash,
    peer_id: PeerId,
    events: mpsc::Sender<PeerEvent>,
    mut outgoing: mpsc::Receiver<Message>,
) -> Result<(), PeerConnError> {
    let mut stream = peer::connect(addr).await?;
    let theirs = peer::exchange_handshake(&mut stream, addr, info_hash, peer_id).await?;
    let supports_extensions = theirs.supports_extensions();
    let connected = PeerEvent::Connected {
        key,
        supports_extensions,
    };
    if events.send(connected).await.is_err() {
        return Ok(());
    }
    let io = |source| PeerConnError::Io { addr, source };
    let mut out = BytesMut::with_capacity(1024);
    if supports_extensions {
        // BEP 10: our extension handshake right after the BitTorrent handshake.
        Message::Extended {
            id: 0,
            payload: ExtHandshake::ours(None).encode().into(),
        }
        .encode(&mut out);
        stream.write_all(&out).await.map_err(io)?;
        out.clear();
    }
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = MessageDecoder::new(MAX_MESSAGE_LEN);
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    loop {
        tokio::select! {
            read = rd.read_buf(&mut inbuf) => {
                if read.map_err(io)? == 0 {
                    return Err(PeerConnError::Closed(addr));
                }
                while let Some(msg) = decoder
                    .decode(&mut inbuf)
                    .map_err(|source| PeerConnError::Wire { addr, source })?
                {
                    if let Message::Extended { .. } = msg {
                        if events.send(PeerEvent::Message { key, msg }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                if inbuf.capacity() - inbuf.len() < 16 * 1024 {
                    inbuf.reserve(64 * 1024);
                }
            }
            msg = outgoing.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                msg.encode(&mut out);
                wr.write_all(&out).await.map_err(io)?;
                out.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_order_and_drops_duplicates() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "[::1]:3".parse().unwrap();
        assert_eq!(merge_peers(&[b, a], &[a, c, b]), vec![b, a, c]);
        assert!(merge_peers(&[], &[]).is_empty());
    }

    #[test]
    fn announces_as_a_leecher_of_unknown_size() {
        let req = announce_request(
            InfoHash([1; 20]),
            crate::engine::new_peer_id(),
            Event::Started,
        );
        assert_eq!(req.left, 1);
        assert_eq!(req.downloaded, 0);
        assert_eq!(req.event, Event::Started);
    }

    use crate::wire::extension::{answer_metadata, OUR_UT_METADATA_ID};
    use crate::wire::MetadataMsg;
    use sha1::{Digest, Sha1};
    use tokio::net::TcpListener;

    /// A valid single-file info dictionary of about `name_len` bytes.
    fn info_dict(name_len: usize) -> (Vec<u8>, InfoHash) {
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
    async fn metadata_peer(info: Vec<u8>, info_hash: InfoHash) -> SocketAddr {
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
    async fn extension_handshake_after_other_messages() {
        let (info, hash) = info_dict(10);
        let addr = metadata_peer(info.clone(), hash).await;
        let (theirs, ext) = handshake_with_extensions(addr, hash, crate::engine::new_peer_id())
            .await
            .unwrap();
        assert!(theirs.supports_extensions());
        let ext = ext.unwrap();
        assert_eq!(ext.ut_metadata, Some(5));
        assert_eq!(ext.metadata_size, Some(info.len() as u64));
        assert_eq!(ext.client.as_deref(), Some("\u{fffd}\u{fffd}\0"));
    }

    #[tokio::test]
    async fn fetches_multi_piece_metadata_from_a_peer() {
        let (info, hash) = info_dict(40_000);
        let addr = metadata_peer(info.clone(), hash).await;
        let (parsed, bytes) = fetch_metadata(hash, &[], &[addr], crate::engine::new_peer_id())
            .await
            .unwrap();
        assert_eq!(bytes, info);
        assert_eq!(parsed.total_length, 5);
        // The wrong info hash: the peer answers the handshake for the right one only.
        let addr = metadata_peer(info, hash).await;
        let err = fetch_metadata(
            InfoHash([9; 20]),
            &[],
            &[addr],
            crate::engine::new_peer_id(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, MetadataError::NoPeerSentMetadata { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_sources_is_an_error() {
        let err = fetch_metadata(InfoHash([2; 20]), &[], &[], crate::engine::new_peer_id())
            .await
            .unwrap_err();
        assert!(matches!(err, MetadataError::NoSources), "{err}");
        let err = find_peers(
            InfoHash([2; 20]),
            &[vec![]],
            &[],
            crate::engine::new_peer_id(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, MetadataError::NoSources), "{err}");
    }
}
