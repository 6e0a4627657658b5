//! One torrent, from the first announce to the last verified piece, and on as a seed if asked:
//! the driver of a core [`Session`] and [`Swarm`].
//!
//! The manager task owns the listener, the announces in flight and the connection tasks; it
//! carries out what the session asks (announce here, dial there, stop) and reports back what
//! happened, and it runs the swarm's timers. Peer connections run as their own tasks over the
//! shared swarm ([`super::peer`]). Assembled pieces are hashed (and written, if good) by the
//! [`super::hasher`] threads, so SHA-1 and disk never stall a socket. No protocol rule lives
//! here: timing, retries, give-up and seed limits are the session's and the swarm's.
//!
//! A download may be limited to some files ([`TorrentParams::files`]), or stream one file in
//! order to a writer ([`Target::Stream`]): the manager then moves the swarm's priority window
//! as the writer reports its position (see [`super::stream`]).
//!
//! Existing data at the output is vouched for by the resume state an interrupted session left
//! ([`super::resume`]) or else checked piece by piece first, on all cores.
//!
//! A torrent a daemon hosts ([`run_hosted`]) ends its run when its session goes dormant (a
//! seed nobody connected to for a while): the run hands back the session alone
//! ([`Dormant`]), which [`super::dormant`] keeps announcing, and the next peer starts a run
//! again from it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::connection::{self, PeerStream, Transports};
use super::dht::{DhtHandle, LookupReply};
use super::hasher::{self, Verdict};
use super::limits::{ConnectionLimits, RateLimits};
use super::metadata::MetadataError;
use super::peer::{self, PeerTaskError, Shared, SwarmState};
use super::resume;
use super::sink::Sink;
use super::stream::{self, Stream, StreamEvent};
use super::tracker::{self, AnnounceError, AnnounceFailures, NoTrackerAnswered};
use super::transport::BoxStream;
use super::utp::{UtpHandle, UtpStream};
use super::webseed;
use crate::disk::{Storage, StorageError};
use crate::hashes::{LayerError, PieceHashes};
use crate::merkle;
use crate::metainfo::{hybrid_v2_alias, Info, PieceLayer};
use crate::session::{
    CloseKind, Finish, GiveUp, Session, SessionConfig, SessionEvent, SessionParams, Transfer,
    DORMANT_AFTER,
};
use crate::swarm::{
    Bitfield, Config, PeerError, PeerFeatures, PeerKey, Swarm, SwarmStats, BLOCK_LEN,
};
use crate::tracker::{AnnounceResponse, Announcer, NUMWANT};
use crate::types::{InfoHash, PeerId};
use crate::wire::Handshake;

pub use crate::session::SeedLimits;

/// What to produce.
#[derive(Clone, Debug)]
pub enum Target {
    /// The whole torrent: the file itself (single-file) or a directory (multi-file).
    Files(PathBuf),
    /// One piece, written alone to `path`: first to a `.bitrush-part` file beside it, renamed
    /// to `path` once verified, so a failed run neither leaves a partial file nor touches an
    /// existing one.
    Piece { index: u32, path: PathBuf },
    /// Existing data to seed (a file, or a multi-file torrent's directory), opened read-only:
    /// it is verified and served but never written, created, cut or given a resume file. Data
    /// that does not fully verify is an error, unless `partial`, which seeds the pieces that do.
    Existing { path: PathBuf, partial: bool },
    /// One file's verified bytes, in order, to a writer (see [`super::stream`]); pieces are
    /// staged in the stream's folder and nothing is kept or resumed.
    Stream(Stream),
}

/// Everything a torrent needs.
pub struct TorrentParams {
    pub info: Arc<Info>,
    /// The raw info dictionary, when known, to serve to peers asking for metadata.
    pub info_bytes: Option<Arc<[u8]>>,
    pub info_hash: InfoHash,
    /// BEP 12 tracker tiers (may be empty when `peers` is given).
    pub trackers: Vec<Vec<String>>,
    /// Peers known without a tracker (e.g. a magnet's `x.pe`).
    pub peers: Vec<SocketAddr>,
    /// BEP 19 web seeds (`url-list`, a magnet's `ws`): HTTP(S) servers holding the files.
    pub web_seeds: Vec<String>,
    pub target: Target,
    pub peer_id: PeerId,
    /// Accepts incoming connections; its port is announced. Without it, `port` is announced.
    pub listener: Option<TcpListener>,
    pub port: u16,
    /// Most outgoing connections open at once (incoming ones may add as many again).
    pub max_peers: usize,
    pub config: Config,
    /// Keep seeding after the download completes.
    pub seed: Option<SeedLimits>,
    /// Trust that the data at the target is complete and correct, skipping the check (for data
    /// this process just wrote, e.g. the demo's seeders).
    pub assume_complete: bool,
    /// Hash existing data even when the resume state beside the output vouches for it.
    pub recheck: bool,
    /// Receives a snapshot a few times a second.
    pub progress: Option<watch::Sender<Progress>>,
    /// Set to `true` to stop: in-flight pieces are dropped, verified ones flushed, `stopped`
    /// announced.
    pub shutdown: Option<watch::Receiver<bool>>,
    /// The process's DHT node, to find peers and announce ourselves (unused for private
    /// torrents).
    pub dht: Option<DhtHandle>,
    /// The torrent is private (BEP 27): trackers only, no DHT, no peer exchange.
    pub private: bool,
    /// Exchange peers with peers (BEP 11; never for private torrents).
    pub pex: bool,
    /// How peers are reached: TCP, uTP, encryption (and the rate limits).
    pub transports: Transports,
    /// The v2 piece layers by file index (`Metainfo::piece_layers`, or fetched from peers
    /// for a magnet link): a v2-only torrent's pieces are checked against them, and peers'
    /// hash requests answered from them.
    pub piece_layers: BTreeMap<usize, PieceLayer>,
    /// For [`Target::Files`]: download only the pieces of these files (indices into
    /// `Info::files`; `None`: all). Pieces shared with other files are written whole, so
    /// neighbouring files may get those bytes.
    pub files: Option<Vec<usize>>,
    /// Set when a daemon hosts this torrent among others.
    pub hosted: Option<Hosted>,
}

/// What a torrent gets from a daemon hosting many: the connections its shared listener routed
/// here, the daemon-wide connection limit, a resume state kept in the daemon's state directory
/// and saved periodically, and the files to fetch.
pub struct Hosted {
    /// Incoming connections for this torrent, their handshake read but not yet answered
    /// ([`connection::accept_unanswered`]).
    pub incoming: mpsc::Receiver<(PeerStream, Handshake)>,
    /// Connections open at once across the daemon: each connection task holds a permit, and a
    /// dial or an incoming connection without one is given up.
    pub connection_slots: Arc<Semaphore>,
    /// Where the resume state lives (instead of beside the output). It is kept once the
    /// download is complete, so a restart seeds without hashing everything again.
    pub resume_file: PathBuf,
    /// How often the resume state is saved while the torrent runs (a `kill -9` loses at most
    /// this much progress: the pieces written since are hashed again).
    pub save_every: Duration,
    /// Which files to fetch, by index in `info.files` (`None`: all). The pieces overlapping a
    /// wanted file are wanted.
    pub wanted_files: Option<Vec<bool>>,
    /// This torrent's own download and upload limits, obeyed together with the session's
    /// ([`Transports::limits`]).
    pub limits: RateLimits,
    /// The priority window an HTTP stream asks for ([`crate::swarm::Swarm::set_window`]:
    /// pieces are started only inside it; `None`: anywhere). Applied at start and on every
    /// change.
    pub window: watch::Receiver<Option<std::ops::Range<u32>>>,
    /// Where the piece layers go once those the metadata lacked came from peers (all the
    /// torrent's layers known then), for the host to keep: the torrent's next run, a seed's
    /// above all, must not depend on a peer sending them again.
    pub fetched_layers: Option<oneshot::Sender<BTreeMap<usize, PieceLayer>>>,
    /// The session of the run that went dormant before, to go on with (its announce schedule,
    /// totals and replies still to come); `None`: a new session.
    pub resumed: Option<Dormant>,
}

/// A seed at rest: its run ended because nobody was connected, and only what announces it
/// is kept ([`run_hosted`] ends with it; [`Hosted::resumed`] starts a run from it).
pub struct Dormant {
    pub(super) session: Session,
    /// Announces and DHT lookups still out, owed to the session (one list: a resting seed
    /// carries an empty one).
    pub(super) out: Vec<Out>,
    /// Bytes uploaded and verified by the runs before (each run's swarm counts from zero; the
    /// session's totals go on).
    pub(super) uploaded: u64,
    pub(super) downloaded: u64,
}

/// Where an announce's answer comes.
pub(super) type AnnounceAnswer = oneshot::Receiver<Result<AnnounceResponse, AnnounceError>>;

/// A task of a resting seed still out.
pub(super) enum Out {
    /// An announce to this tracker URL.
    Announce(String, AnnounceAnswer),
    /// A DHT lookup (it answers with the number of peers found).
    Lookup(oneshot::Receiver<usize>),
}

impl Dormant {
    /// A seed that starts at rest: its data is complete (as its resume state says), so only
    /// its session runs until a peer connects. Its first deadline is its `started` announce.
    pub fn new(params: &TorrentParams) -> Dormant {
        let now = Instant::now();
        let mut session = new_session(now, params);
        session.handle_transfer(now, Transfer::default());
        Dormant {
            session,
            out: Vec::new(),
            uploaded: 0,
            downloaded: 0,
        }
    }
}

/// How a hosted torrent's run ended.
pub enum HostedEnd {
    Ended(Outcome),
    /// Its session went dormant: nobody is connected; keep announcing with it.
    Dormant {
        dormant: Box<Dormant>,
        /// The channel of connections routed here ([`Hosted::incoming`]), closed: whatever
        /// it still holds came as the run ended, and needs a run again.
        incoming: mpsc::Receiver<(PeerStream, Handshake)>,
    },
}

/// The session of a torrent starting at `now`.
fn new_session(now: Instant, params: &TorrentParams) -> Session {
    // A hosted torrent is reached through its daemon's listener, on `port`.
    let listening = params.listener.is_some() || params.hosted.is_some();
    Session::new(
        now,
        SessionParams {
            announcer: Announcer {
                info_hash: params.info_hash,
                peer_id: params.peer_id,
                port: params.port,
                key: rand::random(),
                numwant: NUMWANT,
                ipv6: tracker::announce_ipv6(
                    params.listener.as_ref().and_then(|l| l.local_addr().ok()),
                ),
            },
            trackers: params.trackers.clone(),
            peers: params.peers.clone(),
            total_length: params.info.total_length,
            config: shared_config(SessionConfig {
                max_peers: params.max_peers,
                max_incoming: params.max_peers,
                seed: params.seed,
                dht: params.dht.is_some() && !params.private,
                dht_announce: listening,
                // Only a daemon keeps a session once its run ends.
                dormant_after: params.hosted.is_some().then_some(DORMANT_AFTER),
                ..SessionConfig::default()
            }),
        },
    )
}

/// Most distinct session configurations [`shared_config`] remembers.
const MAX_SHARED_CONFIGS: usize = 32;

/// One copy of each session configuration in use: a daemon's torrents all have the same one
/// or two (a thousand resting seeds would each carry their own). At most
/// [`MAX_SHARED_CONFIGS`] are remembered, the ones no session uses any more forgotten; beyond
/// that, a session gets a copy of its own.
fn shared_config(config: SessionConfig) -> Arc<SessionConfig> {
    static SHARED: Mutex<Vec<Weak<SessionConfig>>> = Mutex::new(Vec::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    shared.retain(|c| c.strong_count() > 0);
    if let Some(same) = (shared.iter())
        .filter_map(Weak::upgrade)
        .find(|c| **c == config)
    {
        return same;
    }
    let config = Arc::new(config);
    if shared.len() < MAX_SHARED_CONFIGS {
        shared.push(Arc::downgrade(&config));
    }
    config
}

/// A connected peer, as the progress snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedPeer {
    pub addr: SocketAddr,
    /// We dialled it (rather than it us).
    pub outgoing: bool,
}

/// A snapshot of a running torrent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Verified bytes of wanted pieces (including those present at start).
    pub done_bytes: u64,
    /// Bytes of the wanted pieces.
    pub total_bytes: u64,
    /// Wanted bytes already present and verified when the session began (a resume state or a
    /// recheck vouched for them): `done_bytes` minus what this session verified.
    pub present_bytes: u64,
    /// Verified wanted pieces (including those present at start).
    pub done_pieces: u32,
    /// Wanted pieces.
    pub total_pieces: u32,
    /// Payload bytes received from peers this session, needed or not.
    pub received_bytes: u64,
    /// Payload bytes received but not needed: duplicates, unrequested blocks, pieces that
    /// failed their hash check.
    pub wasted_bytes: u64,
    /// Payload bytes sent to peers this session.
    pub uploaded_bytes: u64,
    /// Connected peers.
    pub peers: usize,
    /// Connections that delivered at least one block we kept, this session.
    pub peers_used: usize,
    /// Recent download rate in bytes per second: payload received this session only, so
    /// pieces present at start never count as speed.
    pub rate: f64,
    /// Recent upload rate in bytes per second.
    pub upload_rate: f64,
    /// The download is complete and the torrent is seeding.
    pub seeding: bool,
    /// The verified pieces (hosted torrents only: a daemon shows them file by file).
    pub have: Option<Arc<Bitfield>>,
    /// The connected peers (hosted torrents only).
    pub connected: Vec<ConnectedPeer>,
}

/// How a torrent ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every wanted piece is verified and on disk.
    Complete,
    /// Stopped by the shutdown signal before completing.
    Interrupted,
}

/// Why a torrent stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("piece index {index} is out of range (the torrent has {count} pieces)")]
    PieceOutOfRange { index: u32, count: u32 },
    #[error(transparent)]
    NoTrackerAnswered(#[from] NoTrackerAnswered),
    #[error("no peer could be reached")]
    NoPeers(#[source] Option<PeerTaskError>),
    #[error("an internal task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("{0} does not exist: there is nothing to seed")]
    NoData(String),
    #[error("cannot write the stream")]
    Stream(#[source] std::io::Error),
    #[error("cannot start the stream writer")]
    StreamThread(#[source] std::io::Error),
    #[error("the torrent's piece layers are unusable")]
    PieceLayers(#[from] LayerError),
    #[error("the v2 torrent lacks the piece layers of {missing} files")]
    MissingPieceLayers {
        missing: usize,
        #[source]
        source: Option<MetadataError>,
    },
    #[error("{path} does not match the torrent: {verified} of {total} pieces verified")]
    DataMismatch {
        path: String,
        verified: u32,
        total: u32,
    },
}

/// Runs a torrent until the target is complete (and seeding is over), or shutdown.
pub async fn run_torrent(params: TorrentParams) -> Result<Outcome, TorrentError> {
    match run(params).await? {
        HostedEnd::Ended(outcome) => Ok(outcome),
        // Only hosted torrents go dormant, and they run through `run_hosted`.
        HostedEnd::Dormant { .. } => Ok(Outcome::Interrupted),
    }
}

/// Runs a torrent a daemon hosts ([`TorrentParams::hosted`]) as [`run_torrent`] does, except
/// that a seed nobody connects to ends its run dormant, handing its session back.
pub async fn run_hosted(params: TorrentParams) -> Result<HostedEnd, TorrentError> {
    run(params).await
}

async fn run(mut params: TorrentParams) -> Result<HostedEnd, TorrentError> {
    let info = params.info.clone();
    let piece_count = info.piece_count();
    let mut hashes = PieceHashes::new(info.clone(), &params.piece_layers)?;
    if let Target::Existing { path, .. } = &params.target {
        if !hashes.missing_layers().is_empty() {
            hashes = layers_from_data(path.clone(), info.clone(), hashes).await?;
        }
    }
    // A seed never waits on peers for the hashes of its own data: a layer its data did not
    // give leaves those pieces unverified, which the check of the data reports.
    let seeding_existing = matches!(params.target, Target::Existing { .. });
    let hashes = if hashes.missing_layers().is_empty() || seeding_existing {
        Arc::new(hashes)
    } else {
        match complete_layers(&mut params, hashes).await? {
            Some(hashes) => {
                let keeper = params.hosted.as_mut().and_then(|h| h.fetched_layers.take());
                if let Some(keeper) = keeper {
                    let _ = keeper.send(hashes.layers());
                }
                Arc::new(hashes)
            }
            None => return Ok(HostedEnd::Ended(Outcome::Interrupted)),
        }
    };
    let (sink, wanted, have) = open_target(&params, &hashes).await?;
    if let Some(listener) = &params.listener {
        if let Ok(addr) = listener.local_addr() {
            params.port = addr.port();
        }
    }
    // A hosted torrent is reached through its daemon's listener, on `port`.
    let listening = params.listener.is_some() || params.hosted.is_some();
    let resumed = params.hosted.as_mut().and_then(|h| h.resumed.take());
    let config = Config {
        pex: params.pex && !params.private,
        listen_port: listening.then_some(params.port),
        ..params.config.clone()
    };
    let wanted_bytes: u64 = wanted
        .iter_set()
        .map(|i| u64::from(info.piece_len(i)))
        .sum();
    let total_pieces = wanted.count();
    let mut swarm = Swarm::new(
        info.piece_length,
        info.total_length,
        have,
        wanted,
        config,
        rand::random(),
    );
    if let Some(info_bytes) = &params.info_bytes {
        swarm.set_metadata(info_bytes.clone());
    }
    if info.version.has_v2() {
        swarm.set_piece_hashes(hashes.clone());
    }
    let total_bytes = wanted_bytes;
    let (verdict_tx, verdict_rx) = mpsc::unbounded_channel();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let verify_tx =
        hasher::Hashers::new(hashes, info.name.clone(), sink.clone(), threads, verdict_tx);
    let shared = Arc::new(Shared {
        state: Mutex::new(SwarmState::new(swarm)),
        verify_tx,
        max_message_len: max_message_len(piece_count),
        sink: sink.clone(),
        timer: Notify::new(),
        limits: ConnectionLimits {
            session: params.transports.limits.clone(),
            torrent: params
                .hosted
                .as_ref()
                .map(|h| h.limits.clone())
                .unwrap_or_default(),
        },
    });
    let (dht_tx, dht_rx) = mpsc::channel(64);
    let (session, base, announces) = match resumed {
        Some(dormant) => {
            let mut announces = JoinSet::new();
            for out in dormant.out {
                match out {
                    Out::Announce(url, answer) => {
                        announces.spawn(async move {
                            let result = answer.await.unwrap_or(Err(AnnounceError::Lost));
                            (url, result)
                        });
                    }
                    Out::Lookup(lookup) => {
                        let tx = dht_tx.clone();
                        tokio::spawn(async move {
                            let found = lookup.await.unwrap_or(0);
                            let _ = tx.send(DhtResult::Done { found }).await;
                        });
                    }
                }
            }
            (
                dormant.session,
                (dormant.uploaded, dormant.downloaded),
                announces,
            )
        }
        None => (new_session(Instant::now(), &params), (0, 0), JoinSet::new()),
    };
    let piece_file = match &params.target {
        Target::Piece { path, .. } => Some((part_path(path), path.clone())),
        Target::Files(_) | Target::Existing { .. } | Target::Stream(_) => None,
    };
    let (stream_tx, stream_rx) = mpsc::unbounded_channel();
    let streaming = match &params.target {
        Target::Stream(s) => {
            let out = s.output.take().ok_or_else(|| {
                TorrentError::Stream(std::io::Error::other("the stream output was already used"))
            })?;
            let verified = stream::spawn(sink.clone(), &info, s.file, out, stream_tx)
                .map_err(TorrentError::StreamThread)?;
            Some(Streaming {
                verified,
                events: stream_rx,
                window: stream::window_pieces(info.piece_length),
                current: 0..0,
                end: stream::file_pieces(&info, s.file).map_or(0, |p| p.end().saturating_add(1)),
                done: false,
            })
        }
        _ => None,
    };
    let (incoming, connection_slots, window) = match params.hosted.as_mut() {
        Some(hosted) => {
            let (_, closed) = mpsc::channel(1);
            let mut window = hosted.window.clone();
            // Apply the window in force when the run starts.
            window.mark_changed();
            (
                Some(std::mem::replace(&mut hosted.incoming, closed)),
                Some(hosted.connection_slots.clone()),
                Some(window),
            )
        }
        None => (None, None, None),
    };
    let mut manager = Manager {
        incoming,
        connection_slots,
        last_have: None,
        dht_tx,
        dht_rx,
        listener: params.listener.take(),
        shutdown: params.shutdown.take(),
        handshake: session_handshake(&params),
        v2_alias: v2_alias(&params),
        params,
        session,
        shared,
        verdict_rx,
        total_bytes,
        peers: JoinSet::new(),
        web_seeds: JoinSet::new(),
        conns: HashMap::new(),
        departed: HashMap::new(),
        next_key: 0,
        announces,
        base,
        announce_failures: AnnounceFailures::default(),
        last_peer_error: None,
        files_finished: false,
        rate: RateMeter::default(),
        progress_idle: false,
        saved_have: None,
        total_pieces,
        streaming,
        window,
    };
    let result = match manager.run().await {
        Ok(Stop::Ended(outcome)) => Ok(HostedEnd::Ended(outcome)),
        Ok(Stop::Dormant) => {
            let (uploaded, downloaded) = manager.totals();
            let mut incoming = manager.incoming.unwrap_or_else(|| mpsc::channel(1).1);
            // A connection routed from now on is refused at once, so the daemon knows to start
            // a run again rather than lose it in a channel nobody reads.
            incoming.close();
            return Ok(HostedEnd::Dormant {
                dormant: Box::new(Dormant {
                    session: manager.session,
                    out: Vec::new(),
                    uploaded,
                    downloaded,
                }),
                incoming,
            });
        }
        Err(e) => Err(e),
    };
    drop(manager);
    if let Some((part, path)) = piece_file {
        if matches!(result, Ok(HostedEnd::Ended(Outcome::Complete))) {
            std::fs::rename(&part, &path).map_err(|source| StorageError::Io {
                op: "move the verified piece to",
                path: path.display().to_string(),
                source,
            })?;
        } else {
            // Best effort: the error being returned matters more than a leftover part file.
            let _ = std::fs::remove_file(&part);
        }
    }
    result
}

/// Computes the piece layers `hashes` lacks from the data to seed at `path` (a v2 `.torrent`
/// may leave them out): each piece of the file hashed as a merkle subtree, the layer kept only
/// if it hashes to the file's `pieces root`. A file that cannot be read or does not match is
/// left without its layer (the check of the data then reports it).
async fn layers_from_data(
    path: PathBuf,
    info: Arc<Info>,
    mut hashes: PieceHashes,
) -> Result<PieceHashes, TorrentError> {
    tokio::task::spawn_blocking(move || {
        if std::fs::symlink_metadata(&path).is_err() {
            return hashes;
        }
        let Ok(storage) = Storage::open_existing(&path, &info) else {
            return hashes;
        };
        let piece_length = u64::from(info.piece_length);
        let per_piece = u64::from(merkle::blocks_per_piece(info.piece_length));
        let mut buf = vec![0u8; info.piece_length as usize];
        for (file, _root, _pieces) in hashes.missing_layers() {
            let Some((first, length)) = hashes.file_pieces(file) else {
                continue;
            };
            let mut layer = Vec::new();
            let (mut offset, mut index) = (0u64, first);
            while offset < length {
                // The file's own bytes: the last piece's tail (a pad file, or nothing) is
                // not part of its tree.
                let n = (length - offset).min(piece_length) as usize;
                if storage.read(index, 0, &mut buf[..n]).is_err() {
                    break;
                }
                layer.push(merkle::piece_root(&buf[..n], per_piece));
                offset += n as u64;
                index = index.saturating_add(1);
            }
            match hashes.add_layer(file, &layer) {
                Ok(()) => tracing::debug!(file, "piece layer computed from the data"),
                Err(e) => tracing::warn!(file, error = %e, "the data does not give this file's piece layer"),
            }
        }
        hashes
    })
    .await
    .map_err(TorrentError::Task)
}

/// Our handshake for the torrent's peers: a torrent with v2 metadata sets BEP 52's v2 bit,
/// so that a hybrid's connections made with its v1 hash can be upgraded to v2.
fn session_handshake(params: &TorrentParams) -> Handshake {
    let ours = Handshake::session(params.info_hash, params.peer_id);
    if params.info.version.has_v2() {
        ours.with_v2()
    } else {
        ours
    }
}

/// A hybrid torrent's truncated v2 hash (`None` for v1-only and v2-only torrents, whose one
/// hash is `params.info_hash`, and when the info dictionary's bytes are not at hand).
fn v2_alias(params: &TorrentParams) -> Option<InfoHash> {
    hybrid_v2_alias(params.info_bytes.as_deref()?, params.info.version)
}

/// Fetches from peers the piece layers `hashes` lacks (a `.torrent` without them, or a magnet
/// link's metadata), as libtorrent does, before anything is checked against them. A v2-only
/// torrent cannot do without them; a hybrid gives up after
/// [`HYBRID_LAYERS_WAIT`](crate::hashes::fetch::HYBRID_LAYERS_WAIT) and goes on with SHA-1 for
/// the files whose layer did not come. `None`: stopped meanwhile.
async fn complete_layers(
    params: &mut TorrentParams,
    mut hashes: PieceHashes,
) -> Result<Option<PieceHashes>, TorrentError> {
    let missing = hashes.missing_layers().len();
    let hybrid = params.info.version.has_v1();
    tracing::info!(
        missing,
        "fetching the piece layers the metadata lacks from peers"
    );
    let dht = params.dht.clone().filter(|_| !params.private);
    // A hybrid's layers are asked for in its v2 swarm, under its v2 hash (truncated): only v2
    // peers are there, and libtorrent takes hash messages on a connection made with the v1
    // hash only from a peer that offered to upgrade it to v2.
    let source = super::metadata::Sources {
        info_hash: v2_alias(params).unwrap_or(params.info_hash),
        trackers: &params.trackers,
        peers: &params.peers,
        peer_id: params.peer_id,
        dht,
        transports: params.transports.clone(),
    };
    let fetch = super::metadata::fetch_piece_layers(source, hashes.clone());
    let wait = if hybrid {
        crate::hashes::fetch::HYBRID_LAYERS_WAIT
    } else {
        Duration::MAX
    };
    let mut shutdown = params.shutdown.clone();
    let fetched = tokio::select! {
        fetched = tokio::time::timeout(wait, fetch) => fetched,
        () = shutdown_signal(&mut shutdown) => return Ok(None),
    };
    let problem = match fetched {
        Ok(Ok(layers)) => {
            for (file, layer) in &layers {
                hashes.add_layer(*file, layer)?;
            }
            None
        }
        Ok(Err(e)) => Some(e),
        Err(_) => None,
    };
    let left = hashes.missing_layers().len();
    if left == 0 {
        return Ok(Some(hashes));
    }
    if hybrid {
        tracing::warn!(
            missing = left,
            "no peer sent the piece layers of the hybrid torrent; checking those files with SHA-1 alone"
        );
        return Ok(Some(hashes));
    }
    Err(TorrentError::MissingPieceLayers {
        missing: left,
        source: problem,
    })
}

/// Opens what the target names; returns where pieces go, the wanted pieces and those had.
async fn open_target(
    params: &TorrentParams,
    hashes: &Arc<PieceHashes>,
) -> Result<(Arc<Sink>, Bitfield, Bitfield), TorrentError> {
    let info = params.info.clone();
    let piece_count = info.piece_count();
    match &params.target {
        Target::Files(path) => {
            let existed = path.exists();
            let (path, info2) = (path.clone(), info.clone());
            let (info_hash, use_resume) = (params.info_hash, existed && !params.recheck);
            let resume_file = params.hosted.as_ref().map(|h| h.resume_file.clone());
            let hosted = resume_file.is_some();
            let (storage, vouched, survived) = tokio::task::spawn_blocking(move || {
                let storage = Storage::open(&path, &info2)?;
                let resume_file = resume_file.unwrap_or_else(|| resume::path_for(&path));
                let vouched = use_resume
                    .then(|| resume::load_from(&resume_file, &info_hash, &storage, piece_count))
                    .flatten();
                // A hosted torrent saves while it runs: after a crash its last state still
                // vouches for the pieces it lists, and only the others are checked.
                let survived = (hosted && use_resume && vouched.is_none())
                    .then(|| {
                        resume::load_after_crash(&resume_file, &info_hash, &storage, piece_count)
                    })
                    .flatten();
                Ok::<_, StorageError>((storage, vouched, survived))
            })
            .await
            .map_err(TorrentError::Task)??;
            let storage = Arc::new(Sink::Files(storage));
            let have = if params.assume_complete {
                Bitfield::full(piece_count)
            } else if let Some(have) = vouched {
                tracing::info!(
                    have = have.count(),
                    of = piece_count,
                    "resume state accepted; existing data not rechecked"
                );
                have
            } else if let Some(known) = survived {
                tracing::info!(
                    known = known.count(),
                    of = piece_count,
                    "stopped uncleanly: checking only the pieces written since the last save"
                );
                recheck(storage.clone(), hashes.clone(), Some(known)).await?
            } else if existed {
                recheck(storage.clone(), hashes.clone(), None).await?
            } else {
                Bitfield::new(piece_count)
            };
            let hosted_files = params.hosted.as_ref().and_then(|h| h.wanted_files.as_ref());
            let wanted = match (&params.files, hosted_files) {
                (Some(files), _) => files_wanted(&info, files),
                (None, Some(files)) => wanted_pieces(&info, files),
                (None, None) => Bitfield::full(piece_count),
            };
            Ok((storage, wanted, have))
        }
        Target::Stream(s) => {
            let (root, info2) = (s.dir.join("data"), info.clone());
            let storage = tokio::task::spawn_blocking(move || Storage::open(&root, &info2))
                .await
                .map_err(TorrentError::Task)??;
            let wanted = files_wanted(&info, &[s.file]);
            Ok((
                Arc::new(Sink::Files(storage)),
                wanted,
                Bitfield::new(piece_count),
            ))
        }
        Target::Existing { path, partial } => {
            if std::fs::symlink_metadata(path).is_err() {
                return Err(TorrentError::NoData(path.display().to_string()));
            }
            let (path2, info2) = (path.clone(), info.clone());
            let storage =
                tokio::task::spawn_blocking(move || Storage::open_existing(&path2, &info2))
                    .await
                    .map_err(TorrentError::Task)??;
            let storage = Arc::new(Sink::Files(storage));
            let have = if params.assume_complete {
                Bitfield::full(piece_count)
            } else {
                recheck(storage.clone(), hashes.clone(), None).await?
            };
            let verified = have.count();
            if verified < piece_count && !(*partial && verified > 0) {
                return Err(TorrentError::DataMismatch {
                    path: path.display().to_string(),
                    verified,
                    total: piece_count,
                });
            }
            // We want exactly what we have: the swarm never requests a piece, so nothing is
            // ever written.
            Ok((storage, have.clone(), have))
        }
        Target::Piece { index, path } => {
            if *index >= piece_count {
                return Err(TorrentError::PieceOutOfRange {
                    index: *index,
                    count: piece_count,
                });
            }
            let part = part_path(path);
            let file = std::fs::File::create(&part).map_err(|source| StorageError::Io {
                op: "create",
                path: part.display().to_string(),
                source,
            })?;
            let mut wanted = Bitfield::new(piece_count);
            wanted.set(*index);
            let sink = Sink::Piece {
                index: *index,
                file,
                path: part,
            };
            Ok((Arc::new(sink), wanted, Bitfield::new(piece_count)))
        }
    }
}

/// The pieces overlapping the files marked wanted (by index in `info.files`; files past the
/// end of `files` are wanted).
pub fn wanted_pieces(info: &Info, files: &[bool]) -> Bitfield {
    let indices: Vec<usize> = (info.files.iter().enumerate())
        .filter(|(i, f)| !f.attr.pad && files.get(*i).copied().unwrap_or(true))
        .map(|(i, _)| i)
        .collect();
    files_wanted(info, &indices)
}

/// The pieces holding any byte of `files` (indices into `Info::files`; unknown ones are
/// ignored).
fn files_wanted(info: &Info, files: &[usize]) -> Bitfield {
    let mut wanted = Bitfield::new(info.piece_count());
    for &f in files {
        if let Some(pieces) = stream::file_pieces(info, f) {
            for i in pieces {
                wanted.set(i);
            }
        }
    }
    wanted
}

/// The writer of a streaming download, as the manager sees it.
struct Streaming {
    /// Tells the writer each piece verified and stored.
    verified: stream::Verified,
    events: mpsc::UnboundedReceiver<StreamEvent>,
    /// Pieces in the priority window.
    window: u32,
    /// The window in force (never past `end`).
    current: std::ops::Range<u32>,
    /// One past the file's last piece.
    end: u32,
    /// The whole file was written.
    done: bool,
}

/// The next event of the stream writer, or never without one.
async fn stream_event(streaming: &mut Option<Streaming>) -> Option<StreamEvent> {
    match streaming {
        Some(s) if !s.done => s.events.recv().await,
        _ => std::future::pending().await,
    }
}

/// `<path>.bitrush-part`: where a single piece is written until it is verified.
fn part_path(path: &std::path::Path) -> PathBuf {
    super::with_suffix(path, ".bitrush-part")
}

/// Hashes every piece already at the output, on all cores, except those `known` to be good;
/// returns the pieces that match (with the known ones).
async fn recheck(
    sink: Arc<Sink>,
    hashes: Arc<PieceHashes>,
    known: Option<Bitfield>,
) -> Result<Bitfield, TorrentError> {
    let count = hashes.piece_count();
    let known = Arc::new(known.unwrap_or_else(|| Bitfield::new(count)));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    let mut jobs = JoinSet::new();
    for t in 0..threads {
        let (sink, hashes, known) = (sink.clone(), hashes.clone(), known.clone());
        jobs.spawn_blocking(move || -> Result<Vec<u32>, StorageError> {
            let Sink::Files(storage) = &*sink else {
                return Ok(Vec::new());
            };
            let mut good = Vec::new();
            let mut scratch = Vec::new();
            for index in (t..count).step_by(threads as usize) {
                if known.get(index) {
                    good.push(index);
                    continue;
                }
                if storage.piece_passes(index, &mut scratch, |data| hashes.check(index, data))? {
                    good.push(index);
                }
            }
            Ok(good)
        });
    }
    let mut have = Bitfield::new(count);
    while let Some(joined) = jobs.join_next().await {
        for index in joined.map_err(TorrentError::Task)?? {
            have.set(index);
        }
    }
    tracing::info!(have = have.count(), of = count, "checked existing data");
    Ok(have)
}

/// Largest peer message we accept: a block with its header, an extension message, or the
/// bitfield for this torrent, whichever is largest.
fn max_message_len(piece_count: u32) -> u32 {
    let bitfield = piece_count.div_ceil(8) + 1;
    bitfield.max(BLOCK_LEN * 8 + 13).max(64 * 1024)
}

/// A connection task's identity, whether its handshake completed, and how it ended.
type PeerResult = (PeerKey, bool, Result<(), PeerTaskError>);

/// How a connection task gets its peer.
enum PeerSource {
    /// We dial it.
    Dial,
    /// It connected to our own listener.
    Accepted(BoxStream),
    /// It connected to a daemon's shared listener, which read its handshake.
    Routed(PeerStream, Handshake),
}

/// What the manager knows of a connection task.
struct Conn {
    addr: SocketAddr,
    outgoing: bool,
}

/// The recent download and upload rates, for the progress snapshot: the bytes moved over the
/// last [`RATE_SPAN`] of samples (or since the first sample, early on), so a rate shows from
/// the second snapshot on and only counters of this session (bytes received and sent) count.
/// At most `RATE_SPAN / PROGRESS_INTERVAL + 3` samples are kept (one more for the report made
/// at completion).
#[derive(Default)]
struct RateMeter {
    /// (when, bytes received, bytes uploaded), oldest first.
    samples: std::collections::VecDeque<(Instant, u64, u64)>,
}

/// How far back the rates look.
const RATE_SPAN: Duration = Duration::from_secs(5);

impl RateMeter {
    /// Records the session's counters at `now`; returns the (download, upload) rates in bytes
    /// per second.
    fn sample(&mut self, now: Instant, stats: &SwarmStats) -> (f64, f64) {
        let (received, uploaded) = (stats.received_bytes, stats.uploaded_bytes);
        self.samples.push_back((now, received, uploaded));
        // Keep the newest sample at least RATE_SPAN old as the base, drop older ones.
        while self
            .samples
            .get(1)
            .is_some_and(|&(at, _, _)| now.duration_since(at) >= RATE_SPAN)
        {
            self.samples.pop_front();
        }
        let Some(&(since, received0, uploaded0)) = self.samples.front() else {
            return (0.0, 0.0);
        };
        let span = now.duration_since(since).as_secs_f64();
        if span <= 0.0 {
            return (0.0, 0.0);
        }
        (
            received.saturating_sub(received0) as f64 / span,
            uploaded.saturating_sub(uploaded0) as f64 / span,
        )
    }
}

/// How often the progress snapshot is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Why the manager's loop ended.
enum Stop {
    Ended(Outcome),
    /// The session went dormant and nothing is in flight: the run ends, the session rests.
    Dormant,
}

/// What a DHT lookup task reports to the manager.
enum DhtResult {
    Peers(Vec<SocketAddr>),
    Done { found: usize },
}

struct Manager {
    /// Connections routed here by a daemon's shared listener.
    incoming: Option<mpsc::Receiver<(PeerStream, Handshake)>>,
    /// The daemon-wide connection limit.
    connection_slots: Option<Arc<Semaphore>>,
    /// The last `have` snapshot shown (shared until a piece is added).
    last_have: Option<Arc<Bitfield>>,
    dht_tx: mpsc::Sender<DhtResult>,
    dht_rx: mpsc::Receiver<DhtResult>,
    params: TorrentParams,
    listener: Option<TcpListener>,
    shutdown: Option<watch::Receiver<bool>>,
    handshake: Handshake,
    /// A hybrid's truncated v2 hash, which peers of its v2 swarm connect with.
    v2_alias: Option<InfoHash>,
    session: Session,
    shared: Arc<Shared>,
    verdict_rx: mpsc::UnboundedReceiver<Verdict>,
    total_bytes: u64,
    peers: JoinSet<PeerResult>,
    /// The web seeds' tasks ([`webseed`]), until each is dropped or the download completes.
    web_seeds: JoinSet<()>,
    conns: HashMap<PeerKey, Conn>,
    /// Addresses of connections that ended while the swarm may still prove they sent bad
    /// data ([`Swarm::remembers`](crate::swarm::Swarm::remembers)), to ban them then. Pruned
    /// on every pass, so it holds no more keys than the swarm remembers (plus the one that
    /// just ended).
    departed: HashMap<PeerKey, SocketAddr>,
    next_key: PeerKey,
    announces: JoinSet<(String, Result<AnnounceResponse, AnnounceError>)>,
    /// Bytes uploaded and verified by the runs before this one (hosted torrents that rested):
    /// the session's totals go on from them.
    base: (u64, u64),
    /// Every announce failure so far (for the error when no tracker ever answers).
    announce_failures: AnnounceFailures,
    /// The last connection failure (for the error when no peer can be reached).
    last_peer_error: Option<PeerTaskError>,
    /// What only complete files get (executable bits, symlinks) was done.
    files_finished: bool,
    rate: RateMeter,
    /// A hosted torrent's last progress report showed nothing moving (no peer, no rate): its
    /// reports pause until something happens, so a thousand idle torrents cost no wake-ups.
    progress_idle: bool,
    /// Verified pieces when the resume state was last saved (periodic saves of a hosted
    /// torrent are skipped while it is unchanged).
    saved_have: Option<u32>,
    /// Wanted pieces.
    total_pieces: u32,
    /// The writer of a streaming download.
    streaming: Option<Streaming>,
    /// A hosted torrent's priority window, set by its daemon's HTTP streams.
    window: Option<watch::Receiver<Option<std::ops::Range<u32>>>>,
}

/// The next priority window a daemon asks for, or never (none, or the daemon dropped it).
async fn window_change(
    rx: &mut Option<watch::Receiver<Option<std::ops::Range<u32>>>>,
) -> Option<std::ops::Range<u32>> {
    let Some(r) = rx else {
        return std::future::pending().await;
    };
    if r.changed().await.is_err() {
        *rx = None;
        return std::future::pending().await;
    }
    r.borrow_and_update().clone()
}

/// Waits for the shutdown signal, or forever without one.
async fn shutdown_signal(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
        None => std::future::pending().await,
    }
}

/// Accepts the next TCP connection, or waits forever without a listener (or without TCP).
async fn accept(
    listener: &Option<TcpListener>,
    tcp: bool,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) if tcp => l.accept().await,
        _ => std::future::pending().await,
    }
}

/// Accepts the next uTP connection, or waits forever without uTP.
async fn accept_utp(utp: Option<&UtpHandle>) -> Option<(UtpStream, SocketAddr)> {
    match utp {
        Some(u) => u.accept().await,
        None => std::future::pending().await,
    }
}

/// An IPv4 address seen through a dual-stack socket (`::ffff:a.b.c.d`) as the IPv4 one.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The next connection a daemon routed here, or never without a daemon.
async fn recv_routed(
    rx: &mut Option<mpsc::Receiver<(PeerStream, Handshake)>>,
) -> Option<(PeerStream, Handshake)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How a connection's end counts for the session's dial queue.
fn close_kind(result: &Result<(), PeerTaskError>) -> CloseKind {
    match result {
        Ok(()) => CloseKind::Ours,
        Err(PeerTaskError::Dropped { source, .. }) if source.is_bad_data() => CloseKind::Banned,
        Err(PeerTaskError::Dropped {
            source: PeerError::Protocol(_),
            ..
        }) => CloseKind::Protocol,
        Err(PeerTaskError::Connection(e)) => e.close_kind(),
        Err(_) => CloseKind::Transient,
    }
}

impl Manager {
    fn lock(&self) -> std::sync::MutexGuard<'_, SwarmState> {
        peer::lock(&self.shared)
    }

    fn transfer(&self) -> (Transfer, bool) {
        let st = self.lock();
        let stats = st.swarm.stats();
        let transfer = Transfer {
            uploaded: self.base.0 + stats.uploaded_bytes,
            downloaded: self.base.1 + stats.verified_bytes,
            left: stats.bytes_left,
            verifying: stats.verifying,
            // A web seed backing off is out of the swarm but still a source: the session must
            // not give up while one remains.
            peers: stats.peers.max(self.web_seeds.len()),
        };
        (transfer, st.swarm.is_done())
    }

    /// The session's totals: bytes uploaded and verified, this run and the ones before.
    fn totals(&self) -> (u64, u64) {
        let stats = self.lock().swarm.stats();
        (
            self.base.0 + stats.uploaded_bytes,
            self.base.1 + stats.verified_bytes,
        )
    }

    /// Whether the run may end and leave its session to rest: the session went dormant and
    /// nothing of the run is still going (a connection, an announce, a hash check).
    fn may_rest(&self) -> bool {
        self.params.hosted.is_some()
            && self.session.is_dormant()
            && self.conns.is_empty()
            && self.incoming.as_ref().is_none_or(|rx| rx.is_empty())
            && self.announces.is_empty()
            && self.lock().swarm.stats().verifying == 0
    }

    fn progress(&mut self, now: Instant) -> Progress {
        let hosted = self.params.hosted.is_some();
        let shown = self.last_have.as_ref().map(|h| h.count());
        let (stats, done, have, connected, new_have) = {
            let st = self.lock();
            let have = st.swarm.have().count();
            let new_have =
                (hosted && shown != Some(have)).then(|| Arc::new(st.swarm.have().clone()));
            let connected: Vec<ConnectedPeer> = if hosted {
                self.conns
                    .iter()
                    .filter(|(key, _)| st.is_connected(**key))
                    .map(|(_, c)| ConnectedPeer {
                        addr: c.addr,
                        outgoing: c.outgoing,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (
                st.swarm.stats(),
                st.swarm.is_done(),
                have,
                connected,
                new_have,
            )
        };
        if new_have.is_some() {
            self.last_have = new_have;
        }
        let done_bytes = self.total_bytes.saturating_sub(stats.bytes_left);
        let total_pieces = self.total_pieces;
        let (rate, upload_rate) = self.rate.sample(now, &stats);
        Progress {
            done_bytes,
            total_bytes: self.total_bytes,
            present_bytes: done_bytes.saturating_sub(stats.verified_bytes),
            done_pieces: have,
            total_pieces,
            received_bytes: stats.received_bytes,
            wasted_bytes: stats.wasted_bytes,
            uploaded_bytes: stats.uploaded_bytes,
            peers: stats.peers,
            peers_used: stats.peers_used,
            rate,
            upload_rate,
            seeding: done,
            have: self.last_have.clone(),
            connected,
        }
    }

    /// Starts a task per web seed (at most [`crate::metainfo::MAX_WEB_SEEDS`]), unless there is
    /// nothing to download.
    fn spawn_web_seeds(&mut self) {
        if matches!(self.params.target, Target::Existing { .. }) || self.lock().swarm.is_done() {
            return;
        }
        let urls = self
            .params
            .web_seeds
            .iter()
            .take(crate::metainfo::MAX_WEB_SEEDS);
        for (n, url) in (0u32..).zip(urls) {
            let (shared, info) = (self.shared.clone(), self.params.info.clone());
            self.web_seeds
                .spawn(webseed::run(shared, n, url.clone(), info));
        }
    }

    /// Starts a connection task: dialled (`outgoing`) or accepted. Under a daemon-wide
    /// connection limit without a free slot, a dial counts as failed in transit (the session
    /// tries the address again later) and an incoming connection is closed.
    fn spawn_peer(&mut self, addr: SocketAddr, source: PeerSource) {
        let outgoing = matches!(source, PeerSource::Dial);
        let permit: Option<OwnedSemaphorePermit> = match &self.connection_slots {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::debug!(%addr, "no connection slot free");
                    self.session.handle_connection_closed(
                        Instant::now(),
                        addr,
                        outgoing,
                        CloseKind::Transient,
                    );
                    return;
                }
            },
            None => None,
        };
        let key = self.next_key;
        self.next_key += 1;
        let shared = self.shared.clone();
        let ours = self.handshake;
        let transports = self.params.transports.clone();
        let v2_alias = self.v2_alias;
        let piece_count = self.params.info.piece_count();
        self.peers.spawn(async move {
            let mut established = false;
            let _permit = permit;
            let result = async {
                // `named`: the torrent's name on this connection as we sent or answered it.
                let (conn, theirs, named) = match source {
                    PeerSource::Dial => {
                        let (conn, theirs) =
                            connection::dial(addr, &ours, v2_alias, &transports).await?;
                        (conn, theirs, ours)
                    }
                    PeerSource::Accepted(stream) => {
                        connection::accept(stream, addr, &ours, v2_alias, transports.encryption)
                            .await?
                    }
                    PeerSource::Routed(mut conn, theirs) => {
                        // Routed by the hash it named (a hybrid has two): answered with it, or
                        // upgraded to v2 (BEP 52).
                        let answer = ours.answer_to(&theirs, v2_alias);
                        conn.answer_handshake(&answer).await?;
                        (conn, theirs, answer)
                    }
                };
                let features =
                    PeerFeatures::negotiate(&named, &theirs, addr, outgoing, piece_count);
                established = true;
                peer::run(shared, key, conn, features).await
            }
            .await;
            (key, established, result)
        });
        self.conns.insert(key, Conn { addr, outgoing });
    }

    fn on_peer_ended(
        &mut self,
        key: PeerKey,
        established: bool,
        result: Result<(), PeerTaskError>,
    ) {
        let Some(conn) = self.conns.remove(&key) else {
            return;
        };
        // Kept while the swarm may still name it (pruned at once otherwise).
        self.departed.insert(key, conn.addr);
        self.take_swarm_news();
        let kind = close_kind(&result);
        if conn.outgoing && established {
            // It worked for a while: its earlier failures are forgiven.
            self.session.handle_connection_established(conn.addr);
        }
        if let Err(e) = result {
            if kind == CloseKind::Banned {
                let reason = super::error_chain(&e);
                tracing::warn!(addr = %conn.addr, %reason, "banning peer for sending bad data");
            } else {
                tracing::debug!(error = %super::error_chain(&e), "peer connection ended");
            }
            self.last_peer_error = Some(e);
        }
        self.session
            .handle_connection_closed(Instant::now(), conn.addr, conn.outgoing, kind);
    }

    /// Takes what the peer tasks left for the session, under one lock: addresses learned
    /// through peer exchange (to dial), and peers the swarm proved, after they left, to have
    /// sent bad data (their addresses banned). Then forgets the departed addresses the swarm
    /// can no longer name (under the same lock: a key named later is still remembered now).
    fn take_swarm_news(&mut self) {
        let mut bans = Vec::new();
        let discovered = {
            let mut st = peer::lock(&self.shared);
            for (key, reason) in std::mem::take(&mut st.banned) {
                let addr =
                    (self.conns.get(&key).map(|c| c.addr)).or_else(|| self.departed.remove(&key));
                bans.extend(addr.map(|addr| (addr, reason)));
            }
            if !self.departed.is_empty() {
                self.departed.retain(|&k, _| st.swarm.remembers(k));
            }
            std::mem::take(&mut st.discovered)
        };
        for (addr, reason) in bans {
            tracing::warn!(%addr, %reason, "banning peer for sending bad data (found after it left)");
            self.session.ban(addr);
        }
        if !discovered.is_empty() {
            self.session.handle_peers(&discovered);
        }
    }

    fn on_announce(&mut self, url: String, result: Result<AnnounceResponse, AnnounceError>) {
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

    /// Gives a completed download what only complete files get (executable bits, symlinks;
    /// see `Storage::finish`).
    async fn finish_files(&self) -> Result<(), TorrentError> {
        if self.params.files.is_some() || matches!(self.params.target, Target::Stream(_)) {
            // Part of the torrent: files outside the selection may be partial or missing.
            return Ok(());
        }
        let sink = self.shared.sink.clone();
        tokio::task::spawn_blocking(move || match &*sink {
            Sink::Files(storage) => storage.finish(),
            Sink::Piece { .. } => Ok(()),
        })
        .await
        .map_err(TorrentError::Task)??;
        Ok(())
    }

    /// Runs a DHT lookup for this torrent, forwarding what it finds to the manager.
    fn spawn_dht_lookup(&self, announce: bool) {
        let tx = self.dht_tx.clone();
        let Some(dht) = self.params.dht.clone() else {
            // The session asks only when it was given a DHT; answer "nothing found" anyway.
            let _ = tx.try_send(DhtResult::Done { found: 0 });
            return;
        };
        let (info_hash, port) = (self.params.info_hash, self.params.port);
        tokio::spawn(async move {
            let mut replies = dht.lookup(info_hash, announce.then_some(port)).await;
            let mut found = 0;
            while let Some(reply) = replies.recv().await {
                match reply {
                    LookupReply::Peers(peers) => {
                        found += peers.len();
                        if tx.send(DhtResult::Peers(peers)).await.is_err() {
                            return;
                        }
                    }
                    LookupReply::Done { .. } => break,
                }
            }
            let _ = tx.send(DhtResult::Done { found }).await;
        });
    }

    /// Whether a streaming download waits for its reader: every piece of the window is had,
    /// so nothing progresses by design (no stall to report).
    fn reader_holds_back(&self) -> bool {
        let Some(s) = &self.streaming else {
            return false;
        };
        let st = self.lock();
        let have = st.swarm.have();
        s.current.clone().all(|i| have.get(i))
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
                SessionEvent::Connect(addr) => self.spawn_peer(addr, PeerSource::Dial),
                SessionEvent::DhtLookup { announce } => self.spawn_dht_lookup(announce),
                SessionEvent::Seeding => tracing::info!("download complete; seeding"),
                SessionEvent::Dormant => tracing::debug!("nobody connected; at rest"),
                SessionEvent::Stalled(_) if self.reader_holds_back() => {}
                SessionEvent::Stalled(why) => tracing::warn!("no progress: {why}"),
                SessionEvent::Finished(finish) => return Some(finish),
            }
        }
        None
    }

    async fn run(&mut self) -> Result<Stop, TorrentError> {
        let mut progress_tick = tokio::time::interval(PROGRESS_INTERVAL);
        // Paused while idle: no burst of missed ticks when reports resume.
        progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let save_every = self.params.hosted.as_ref().map(|h| h.save_every);
        let mut save_tick = tokio::time::interval(save_every.unwrap_or(Duration::from_secs(3600)));
        // The first tick is immediate: nothing to save yet.
        save_tick.tick().await;
        let mut shutdown = self.shutdown.take();
        self.spawn_web_seeds();
        let finish = loop {
            let now = Instant::now();
            {
                let mut st = self.lock();
                if st.swarm.poll_timeout().is_some_and(|t| t <= now) {
                    st.swarm.handle_timeout(now);
                    st.dispatch(&self.shared, None);
                }
            }
            self.take_swarm_news();
            let (transfer, done) = self.transfer();
            if done && !self.files_finished {
                self.files_finished = true;
                // Web seeds only download.
                self.web_seeds.abort_all();
                self.finish_files().await?;
                // Completion is news at once (a daemon's API shows it), not at the next tick.
                if self.params.progress.is_some() {
                    let p = self.progress(now);
                    if let Some(tx) = &self.params.progress {
                        let _ = tx.send(p);
                    }
                }
            }
            self.session.handle_transfer(now, transfer);
            if self.session.poll_timeout().is_some_and(|t| t <= now) {
                self.session.handle_timeout(now);
            }
            if let Some(finish) = self.apply_session() {
                break Some(finish);
            }
            if self.may_rest() {
                break None;
            }
            let deadline = {
                let mut st = self.lock();
                let deadline = match (st.swarm.poll_timeout(), self.session.poll_timeout()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                st.armed = deadline;
                deadline
            };
            let report =
                self.params.progress.is_some() && !(self.progress_idle && self.conns.is_empty());
            let mut ticked = false;
            tokio::select! {
                () = shutdown_signal(&mut shutdown) => {
                    shutdown = None;
                    self.session.handle_shutdown(Instant::now());
                }
                Some(verdict) = self.verdict_rx.recv() => {
                    let index = verdict.index;
                    let good = verdict.result?;
                    if !good {
                        tracing::warn!(piece = index, "piece failed its hash check; fetching it again");
                    }
                    if let (true, Some(s)) = (good, &self.streaming) {
                        // The writer ends only when done or failing; its event says which.
                        let _ = s.verified.send(index);
                    }
                    let mut st = self.lock();
                    st.swarm.handle_verdict(Instant::now(), index, good, verdict.buf);
                    st.dispatch(&self.shared, None);
                }
                Some(_) = self.web_seeds.join_next() => {}
                window = window_change(&mut self.window) => {
                    let mut st = peer::lock(&self.shared);
                    st.swarm.set_window(window);
                    st.dispatch(&self.shared, None);
                }
                Some(event) = stream_event(&mut self.streaming) => match event {
                    StreamEvent::Next(next) => {
                        if let Some(s) = &mut self.streaming {
                            s.current = next..next.saturating_add(s.window).min(s.end);
                            let mut st = peer::lock(&self.shared);
                            st.swarm.set_window(Some(s.current.clone()));
                            st.dispatch(&self.shared, None);
                        }
                    }
                    StreamEvent::Done => {
                        if let Some(s) = &mut self.streaming {
                            s.done = true;
                        }
                    }
                    StreamEvent::Failed(e) => return Err(TorrentError::Stream(e)),
                },
                Some(joined) = self.peers.join_next() => {
                    match joined {
                        Ok((key, established, result)) => self.on_peer_ended(key, established, result),
                        Err(e) => return Err(TorrentError::Task(e)),
                    }
                }
                accepted = accept(&self.listener, self.params.transports.tcp) => {
                    match accepted {
                        Ok((stream, addr)) => {
                            let _ = stream.set_nodelay(true);
                            let addr = canonical(addr);
                            if self.session.handle_incoming(addr) {
                                self.spawn_peer(addr, PeerSource::Accepted(Box::new(stream)));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "accepting a connection failed"),
                    }
                }
                Some((conn, theirs)) = recv_routed(&mut self.incoming) => {
                    let addr = canonical(conn.addr());
                    if self.session.handle_incoming(addr) {
                        self.spawn_peer(addr, PeerSource::Routed(conn, theirs));
                    }
                }
                _ = save_tick.tick(), if save_every.is_some() => {
                    let have = self.lock().swarm.have().count();
                    if self.saved_have != Some(have) {
                        self.save_resume(None).await;
                        self.saved_have = Some(have);
                    }
                }
                // A daemon accepts uTP itself and routes each connection to its torrent.
                accepted = accept_utp(
                    self.params.transports.utp.as_ref().filter(|_| self.params.hosted.is_none())
                ) => {
                    if let Some((stream, addr)) = accepted {
                        if self.session.handle_incoming(addr) {
                            self.spawn_peer(addr, PeerSource::Accepted(Box::new(stream)));
                        }
                    }
                }
                Some(joined) = self.announces.join_next() => {
                    let (url, result) = joined.map_err(TorrentError::Task)?;
                    self.on_announce(url, result);
                }
                Some(result) = self.dht_rx.recv() => match result {
                    DhtResult::Peers(peers) => self.session.handle_peers(&peers),
                    DhtResult::Done { found } => {
                        tracing::debug!(found, "DHT lookup done");
                        self.session.handle_dht_done(Instant::now(), found);
                    }
                },
                () = super::sleep_until(deadline) => {}
                () = self.shared.timer.notified() => {}
                _ = progress_tick.tick(), if report => {
                    ticked = true;
                    let p = self.progress(Instant::now());
                    self.progress_idle = self.params.hosted.is_some()
                        && p.peers == 0
                        && p.rate == 0.0
                        && p.upload_rate == 0.0;
                    if let Some(tx) = &self.params.progress {
                        let _ = tx.send(p);
                    }
                }
            }
            if !ticked {
                // Something happened: report again until it is idle once more.
                self.progress_idle = false;
            }
        };
        self.peers.abort_all();
        self.web_seeds.abort_all();
        self.announces.abort_all();
        let Some(finish) = finish else {
            // At rest: keep what a restart needs, and show the last state.
            let have = self.lock().swarm.have().count();
            if self.saved_have != Some(have) {
                self.save_resume(None).await;
            }
            if self.params.progress.is_some() {
                let p = self.progress(Instant::now());
                if let Some(tx) = &self.params.progress {
                    let _ = tx.send(p);
                }
            }
            return Ok(Stop::Dormant);
        };
        // Let the hashing threads finish what they hold, so every good piece received is stored.
        while self.lock().swarm.stats().verifying > 0 {
            let Some(verdict) = self.verdict_rx.recv().await else {
                break;
            };
            let good = matches!(verdict.result, Ok(true));
            self.lock()
                .swarm
                .handle_verdict(Instant::now(), verdict.index, good, verdict.buf);
        }
        if self.params.progress.is_some() {
            let p = self.progress(Instant::now());
            if let Some(tx) = &self.params.progress {
                let _ = tx.send(p);
            }
        }
        match finish {
            Finish::Complete => {
                if !self.finish_stream(&mut shutdown).await? {
                    return Ok(Stop::Ended(Outcome::Interrupted));
                }
                self.save_resume(Some(Outcome::Complete)).await;
                Ok(Stop::Ended(Outcome::Complete))
            }
            Finish::Interrupted => {
                self.save_resume(Some(Outcome::Interrupted)).await;
                Ok(Stop::Ended(Outcome::Interrupted))
            }
            Finish::GaveUp(GiveUp::NoTrackerAnswered) => {
                Err(NoTrackerAnswered(std::mem::take(&mut self.announce_failures)).into())
            }
            Finish::GaveUp(GiveUp::NoPeers) => {
                Err(TorrentError::NoPeers(self.last_peer_error.take()))
            }
        }
    }

    /// Waits for the stream writer (if streaming) to write out the last pieces, which takes
    /// as long as the reader wants. Returns `false` if the shutdown signal came first.
    async fn finish_stream(
        &mut self,
        shutdown: &mut Option<watch::Receiver<bool>>,
    ) -> Result<bool, TorrentError> {
        let Some(s) = &mut self.streaming else {
            return Ok(true);
        };
        while !s.done {
            let event = tokio::select! {
                event = s.events.recv() => event,
                () = shutdown_signal(shutdown) => return Ok(false),
            };
            match event {
                Some(StreamEvent::Done) => s.done = true,
                Some(StreamEvent::Next(_)) => {}
                Some(StreamEvent::Failed(e)) => return Err(TorrentError::Stream(e)),
                None => {
                    return Err(TorrentError::Stream(std::io::Error::other(
                        "the stream writer stopped",
                    )))
                }
            }
        }
        Ok(true)
    }

    /// Leaves a resume state beside an interrupted download's output (so the next run need not
    /// hash everything again) and removes a stale one once the download is complete. A hosted
    /// torrent keeps its state in the daemon's folder, saves it while running (`outcome` is
    /// `None` then) and keeps it once complete. Best effort: without the state the next run
    /// rechecks, which is always safe.
    async fn save_resume(&self, outcome: Option<Outcome>) {
        let Target::Files(output) = &self.params.target else {
            return;
        };
        if self.params.assume_complete {
            return;
        }
        let path = match &self.params.hosted {
            Some(hosted) => hosted.resume_file.clone(),
            None if outcome == Some(Outcome::Complete) => {
                let output = output.clone();
                let _ = tokio::task::spawn_blocking(move || resume::remove(&output)).await;
                return;
            }
            None => resume::path_for(output),
        };
        let have = self.lock().swarm.have().clone();
        let (sink, info_hash) = (self.shared.sink.clone(), self.params.info_hash);
        let saved = tokio::task::spawn_blocking(move || match &*sink {
            Sink::Files(storage) => resume::save_to(&path, &info_hash, storage, &have),
            Sink::Piece { .. } => Ok(()),
        })
        .await;
        match saved {
            Ok(Ok(())) => tracing::debug!("resume state saved"),
            Ok(Err(e)) => {
                tracing::warn!(error = %super::error_chain(&e), "cannot save the resume state")
            }
            Err(e) => tracing::warn!(error = %e, "cannot save the resume state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_of_the_same_configuration_share_one_copy() {
        // Numbers no other test uses, so tests running meanwhile do not change the outcome.
        let config = |max_peers| SessionConfig {
            max_peers,
            max_incoming: 4321,
            ..SessionConfig::default()
        };
        let a = shared_config(config(1234));
        let b = shared_config(config(1234));
        assert!(Arc::ptr_eq(&a, &b));
        let other = shared_config(config(1235));
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(*other, config(1235));
        // Once nobody uses it, it is forgotten: the next one is a fresh copy.
        let weak = Arc::downgrade(&a);
        drop((a, b));
        let again = shared_config(config(1234));
        assert_eq!(weak.strong_count(), 0);
        assert_eq!(*again, config(1234));
    }

    fn stats(received: u64, uploaded: u64, bytes_left: u64) -> SwarmStats {
        SwarmStats {
            received_bytes: received,
            uploaded_bytes: uploaded,
            bytes_left,
            ..SwarmStats::default()
        }
    }

    #[test]
    fn rate_shows_from_the_second_sample() {
        let t = Instant::now();
        let mut meter = RateMeter::default();
        assert_eq!(meter.sample(t, &stats(0, 0, 1 << 30)), (0.0, 0.0));
        // 64 KiB in the first quarter second: 256 KiB/s at once, not after a warm-up second.
        let (down, up) = meter.sample(t + PROGRESS_INTERVAL, &stats(65_536, 0, 1 << 30));
        assert_eq!((down, up), (262_144.0, 0.0));
    }

    #[test]
    fn rate_counts_only_bytes_moved_in_this_session() {
        let t = Instant::now();
        let mut meter = RateMeter::default();
        // Resumed: 900 MiB of 1 GiB present at start, nothing received yet.
        meter.sample(t, &stats(0, 0, 100 << 20));
        // One second later, 1 MiB received (and 100 MiB "done" would be a huge rate if the
        // present bytes counted).
        let (down, _) = meter.sample(t + Duration::from_secs(1), &stats(1 << 20, 0, 99 << 20));
        assert_eq!(down, f64::from(1 << 20));
    }

    #[test]
    fn rates_follow_the_last_span_and_uploads_count_apart() {
        let t = Instant::now();
        let mut meter = RateMeter::default();
        let mut last = (0.0, 0.0);
        // 1 MiB/s down for 10 s, then nothing; 100 KiB/s up throughout.
        for tick in 0..=80u64 {
            let at = t + PROGRESS_INTERVAL * tick as u32;
            let secs = tick / 4;
            let received = secs.min(10) << 20;
            last = meter.sample(at, &stats(received, secs * 102_400, 0));
            assert!(meter.samples.len() <= 22, "bounded");
            if tick == 36 {
                assert_eq!(last.0, f64::from(1 << 20), "steady rate at 9 s");
            }
        }
        assert_eq!(last, (0.0, 102_400.0), "the download stopped long ago");
    }
}
