//! The daemon: one session holding many torrents, driven over HTTP ([`api`]).
//!
//! A [`Daemon`] owns what its torrents share: one listening port (TCP and uTP) whose incoming
//! connections are routed to the torrent their handshake names, one DHT node, one peer id, and
//! a connection limit across all torrents. Which torrents run is the core's [`TorrentQueue`]
//! (at most N downloads and M seeds); each running torrent is the engine's
//! [`run_torrent`](crate::engine::run_torrent) in its own task, hosted
//! ([`Hosted`](crate::engine::Hosted)): connections come from the shared listener and its
//! resume state lives in the state directory, saved periodically. A magnet link's metadata is
//! fetched first, by the same task.
//!
//! A seed nobody is connected to rests: its run ends once its session goes dormant, and a
//! complete torrent starts at rest without a run at all (nothing is opened or checked until
//! a peer asks for it). A resting seed is only its session, kept announcing by the engine's
//! [`DormantSeeds`]; the first peer whose handshake names it starts a run from that session
//! and is handed to it.
//!
//! Persistence ([`store`]): every torrent has, in `<state-dir>/torrents/`, its `.torrent`
//! (once the metadata is known; rewritten with the piece layers a run fetched from peers, so
//! no later run waits on peers for them), its settings (`.json`) and its resume state
//! (`.resume`), each
//! written atomically (temporary file, fsync, rename); settings on every change and
//! periodically, so a restart after a clean stop or `kill -9` brings every torrent back. One
//! writer thread ([`store::Writer`]) writes settings and metainfo in the order they are queued,
//! and they are queued under the state lock: the files follow the state's order (the last
//! state wins, a removed torrent stays removed). A removal queues the deletion of its files
//! once its run ended; an addition of the same torrent meanwhile waits for it.
//!
//! Rate limits: one pair of global buckets shared by every connection (through
//! [`Transports::limits`]) and one pair per torrent ([`Hosted::limits`](crate::engine::Hosted));
//! both may change while torrents run. HTTP streams ([`stream`]) read verified pieces from
//! disk and move their torrent's priority window (the latest reader's wins; it is lifted when
//! that reader goes).
//!
//! Invariants: the state lock is never held across an await, nor while a file is written or
//! synced, nor while answers are built (readers copy a [`Snapshot`] of what they need:
//! counters and shared pointers, never a copy of a file list); a torrent's next run starts
//! only once its previous run ended (so two runs never share files), also when it is removed
//! and added again; a removed torrent's files are deleted only after its run ended; a torrent
//! runs or rests, never both; an incoming connection for a torrent whose run is going to rest
//! is kept and starts the next run.

pub mod api;
mod events;
mod rpc;
pub mod store;
mod stream;
#[cfg(test)]
mod testing;
mod webui;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::engine::connection::{self, PeerStream, Transports};
use crate::engine::dht::{DhtHandle, DhtOptions};
use crate::engine::dormant::DormantSeeds;
use crate::engine::limits::RateLimits;
use crate::engine::metadata::{fetch_metadata, Sources};
use crate::engine::torrent::wanted_pieces;
use crate::engine::udp::{self, UdpOptions};
use crate::engine::{
    error_chain, new_peer_id, run_hosted, Dormant, Hosted, HostedEnd, Outcome, Progress,
    SeedLimits, Target, TorrentParams,
};
use crate::metainfo::{hybrid_v2_alias, Info, Magnet, Metainfo, PieceLayer};
use crate::mse::Encryption;
use crate::queue::{QueueEvent, QueueLimits, QueueState, TorrentId, TorrentQueue};
use crate::session::Finish;
use crate::swarm::Bitfield;
use crate::types::{InfoHash, PeerId};
use crate::wire::Handshake;

use store::{Saved, SessionSettings, Store, Writer};

/// How a daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where torrents, their settings and resume states are kept.
    pub state_dir: PathBuf,
    /// Where torrents are downloaded unless told otherwise.
    pub download_dir: PathBuf,
    /// The peer port, TCP and UDP (0: any free port).
    pub port: u16,
    /// Peer connections open at once across all torrents.
    pub max_connections: usize,
    /// Outgoing connections per torrent, at most.
    pub max_peers_per_torrent: usize,
    /// How many torrents download and seed at once.
    pub limits: QueueLimits,
    /// The DHT node's settings (`None`: no DHT).
    pub dht: Option<DhtOptions>,
    pub tcp: bool,
    pub utp: bool,
    pub encryption: Encryption,
    /// How often settings and resume states are saved while torrents run.
    pub save_every: Duration,
    /// Global rate limits given at start, bytes per second: each replaces the saved one
    /// (`None`: keep the saved one).
    pub max_download_rate: Option<u64>,
    pub max_upload_rate: Option<u64>,
}

/// Download and upload rate limits in bytes per second (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedLimits {
    #[serde(default)]
    pub download: Option<u64>,
    #[serde(default)]
    pub upload: Option<u64>,
}

/// Why a torrent could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("invalid torrent file")]
    Torrent(#[source] crate::metainfo::MetainfoError),
    #[error("invalid magnet link")]
    Magnet(#[source] crate::metainfo::MagnetError),
    #[error("this torrent is already added (id {0})")]
    Duplicate(TorrentId),
    #[error("the download directory must be an absolute path without `..`: {0}")]
    DownloadDir(String),
    #[error(
        "the download directory is longer than {} bytes",
        store::MAX_DOWNLOAD_DIR_LEN
    )]
    DownloadDirTooLong,
    #[error("the magnet link is longer than {} bytes", store::MAX_MAGNET_LEN)]
    MagnetTooLong,
    #[error("the daemon is full")]
    Full(#[source] crate::queue::QueueError),
    #[error("cannot save the torrent in the state directory")]
    Store(#[source] std::io::Error),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// Why a file selection was refused.
#[derive(Debug, thiserror::Error)]
pub enum WantedError {
    #[error("no such torrent")]
    NoSuchTorrent,
    #[error("the torrent's files are not known until its metadata is fetched")]
    NoMetadata,
    #[error("{given} flags for a torrent of {files} files")]
    TooMany { given: usize, files: usize },
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on port {port}")]
    Listen { port: u16, source: std::io::Error },
    #[error("cannot use the state directory {path}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
}

/// What to add.
pub enum AddSource {
    /// A `.torrent` file's bytes.
    Torrent(Vec<u8>),
    /// A magnet link.
    Magnet(String),
}

/// An add request.
pub struct AddRequest {
    pub source: AddSource,
    /// Where to download (`None`: the daemon's download directory).
    pub download_dir: Option<PathBuf>,
    /// Add without starting.
    pub paused: bool,
}

/// The metadata of a torrent, once known.
#[derive(Clone)]
struct Meta {
    info: Arc<Info>,
    info_bytes: Arc<[u8]>,
    /// The torrent's web seeds (BEP 19; none for metadata fetched through a magnet link).
    web_seeds: Vec<String>,
    /// The v2 piece layers the `.torrent` carries (those it lacks, and a magnet link's, the
    /// engine fetches from peers).
    piece_layers: BTreeMap<usize, PieceLayer>,
}

/// One run of a torrent.
struct Run {
    stop: watch::Sender<bool>,
    progress: watch::Receiver<Progress>,
    task: Option<JoinHandle<()>>,
    /// We asked it to stop (so its end is not the torrent stopping by itself).
    stopping: bool,
    /// Its metadata is still being fetched.
    fetching: Arc<std::sync::atomic::AtomicBool>,
}

struct Entry {
    saved: Saved,
    meta: Option<Meta>,
    trackers: Arc<Vec<Vec<String>>>,
    /// A magnet link's peers.
    peers: Box<[SocketAddr]>,
    /// Boxed: most torrents of a daemon rest, without a run.
    run: Option<Box<Run>>,
    /// The torrent rests: its session is in the daemon's dormant seeds (never with `run`).
    resting: Option<Resting>,
    /// What its runs and streams use; `None` while it has none of it (a torrent resting
    /// quietly, as most of a daemon's do).
    live: Option<Box<Live>>,
    /// The last snapshot of a run (or what the resume state says, before any).
    last: Progress,
    /// Hash everything on the next start.
    recheck: bool,
    error: Option<Box<str>>,
}

/// What a torrent keeps for its runs and streams.
#[derive(Default)]
struct Live {
    /// Connections that came while its run was going to rest, for the next run (at most
    /// [`ROUTE_QUEUE`]).
    waiting: Vec<(PeerStream, Handshake)>,
    /// This torrent's own rate limits, shared with its run's connections (made for a run, and
    /// dropped while it rests; `saved` holds their values).
    limits: Option<RateLimits>,
    /// The priority window HTTP streams ask for (kept across runs; made when first needed,
    /// dropped while the torrent rests without one).
    window: Option<watch::Sender<Option<std::ops::Range<u32>>>>,
    /// The stream reader whose window is in force.
    window_reader: u64,
}

impl Entry {
    fn new(
        saved: Saved,
        meta: Option<Meta>,
        trackers: Arc<Vec<Vec<String>>>,
        peers: Box<[SocketAddr]>,
        last: Progress,
    ) -> Entry {
        Entry {
            saved,
            meta,
            trackers,
            peers,
            run: None,
            resting: None,
            live: None,
            last,
            recheck: false,
            error: None,
        }
    }

    fn live(&mut self) -> &mut Live {
        self.live.get_or_insert_default()
    }

    /// Drops what its runs and streams used if nothing is left of it.
    fn settle(&mut self) {
        let unused = |l: &Live| l.waiting.is_empty() && l.limits.is_none() && l.window.is_none();
        if self.live.as_deref().is_some_and(unused) {
            self.live = None;
        }
    }

    /// Connections waiting for its next run.
    fn waiting(&self) -> &[(PeerStream, Handshake)] {
        self.live.as_ref().map_or(&[], |l| &l.waiting)
    }

    /// Keeps a connection for its next run (at most [`ROUTE_QUEUE`]).
    fn keep_waiting(&mut self, waiting: (PeerStream, Handshake)) {
        let live = self.live();
        if live.waiting.len() < ROUTE_QUEUE {
            live.waiting.push(waiting);
        }
    }

    /// The torrent's own rate limits.
    fn limits(&mut self) -> &RateLimits {
        let (download, upload) = (self.saved.download_limit, self.saved.upload_limit);
        (self.live().limits).get_or_insert_with(|| RateLimits::adjustable(download, upload))
    }

    /// The priority window's channel.
    fn window(&mut self) -> &watch::Sender<Option<std::ops::Range<u32>>> {
        self.live()
            .window
            .get_or_insert_with(|| watch::channel(None).0)
    }
}

/// A resting torrent.
struct Resting {
    /// We asked it to stop (its closing announces are out).
    stopping: bool,
}

/// Where incoming connections for a torrent go: its run's channel, or nowhere yet (it rests,
/// and the first one starts a run).
type Route = (TorrentId, Option<mpsc::Sender<(PeerStream, Handshake)>>);

struct State {
    queue: TorrentQueue,
    /// Boxed: the map's spare room holds pointers, not entries.
    torrents: BTreeMap<TorrentId, Box<Entry>>,
    /// The id of each torrent in `torrents`, by info hash.
    by_hash: HashMap<InfoHash, TorrentId>,
    /// Where the listener sends each running torrent's incoming connections, and a hybrid's
    /// under its truncated v2 hash too, running or resting (a resting torrent is found through
    /// `by_hash`: see [`route_of`]).
    routes: HashMap<InfoHash, Route>,
    next_id: TorrentId,
    shutting_down: bool,
    /// Torrents being added: their files are being written, under the id they will have.
    adding: HashMap<InfoHash, TorrentId>,
    /// Torrents being removed: their run ends and their files go; an addition of the same
    /// torrent waits until the sender is dropped (then every trace of the old one is gone).
    removing: HashMap<InfoHash, watch::Receiver<()>>,
}

struct Inner {
    config: DaemonConfig,
    /// The default download directory (`config`'s), shared by the torrents added to it.
    download_dir: Arc<Path>,
    /// The state directory, read at start (and where the engine keeps resume states).
    store: Store,
    /// Writes every change of the saved state, in order.
    writer: Writer,
    /// The event streams of the REST API.
    events: events::Hub,
    state: Mutex<State>,
    peer_id: PeerId,
    port: u16,
    dht: Option<DhtHandle>,
    /// The sessions of the resting torrents.
    dormant: DormantSeeds,
    /// The task driving them (stopped last at shutdown).
    dormant_task: Mutex<Option<JoinHandle<()>>>,
    /// Runs that ended (at rest or not): the periodic save gives the memory they freed back
    /// when this moved.
    runs_ended: std::sync::atomic::AtomicU64,
    transports: Transports,
    /// The global rate limits (also in `transports`).
    rate_limits: RateLimits,
    /// Numbers stream readers.
    next_reader: std::sync::atomic::AtomicU64,
    slots: Arc<Semaphore>,
    /// Incoming connections in their handshake.
    handshaking: Arc<Semaphore>,
    started: std::time::Instant,
    /// The listener tasks, stopped at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A running daemon; cheap to clone.
#[derive(Clone)]
pub struct Daemon(Arc<Inner>);

/// Connections waiting for their torrent's task, per torrent.
const ROUTE_QUEUE: usize = 16;

/// Most incoming connections in their handshake at once (the rest are closed).
const MAX_HANDSHAKING: usize = 256;

/// The current time as seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A download directory given over the API: absolute, no `..` anywhere, and at most
/// [`store::MAX_DOWNLOAD_DIR_LEN`] bytes.
pub fn check_download_dir(dir: &Path) -> Result<(), AddError> {
    if dir.as_os_str().len() > store::MAX_DOWNLOAD_DIR_LEN {
        return Err(AddError::DownloadDirTooLong);
    }
    let bad = !dir.is_absolute()
        || dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if bad {
        Err(AddError::DownloadDir(dir.display().to_string()))
    } else {
        Ok(())
    }
}

impl Daemon {
    /// Binds the peer port, starts the DHT and uTP, loads the saved torrents and starts those
    /// the queue lets run.
    pub async fn start(config: DaemonConfig) -> Result<Daemon, StartError> {
        let state_error = |source| StartError::StateDir {
            path: config.state_dir.display().to_string(),
            source,
        };
        // Reading the state directory blocks: off the runtime's threads.
        let state_dir = config.state_dir.clone();
        let (store, mut settings, saved) = tokio::task::spawn_blocking(move || {
            let store = Store::open(&state_dir)?;
            let settings = store.load_session();
            let saved = store.load_all();
            Ok((store, settings, saved))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(state_error)?;
        let writer = Writer::start(store.clone()).map_err(state_error)?;
        let listener =
            connection::bind_listener(config.port).map_err(|source| StartError::Listen {
                port: config.port,
                source,
            })?;
        let port = listener.local_addr().map_or(config.port, |a| a.port());
        let udp = match udp::start(UdpOptions {
            port,
            dht: config.dht.clone(),
            utp: config.utp,
        })
        .await
        {
            Ok(udp) => udp,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "running without the DHT and uTP");
                udp::Udp::default()
            }
        };
        if let Some(rate) = config.max_download_rate {
            settings.download_limit = Some(rate);
        }
        if let Some(rate) = config.max_upload_rate {
            settings.upload_limit = Some(rate);
        }
        if config.max_download_rate.is_some() || config.max_upload_rate.is_some() {
            writer.save_session(settings);
        }
        let rate_limits = RateLimits::adjustable(settings.download_limit, settings.upload_limit);
        let transports = Transports {
            tcp: config.tcp,
            utp: udp.utp,
            encryption: config.encryption,
            memory: Default::default(),
            limits: rate_limits.clone(),
        };
        let (dormant, dormant_task, mut rested) = DormantSeeds::start(udp.dht.clone());
        let daemon = Daemon(Arc::new(Inner {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            handshaking: Arc::new(Semaphore::new(MAX_HANDSHAKING)),
            state: Mutex::new(State {
                queue: TorrentQueue::new(config.limits),
                torrents: BTreeMap::new(),
                by_hash: HashMap::new(),
                routes: HashMap::new(),
                next_id: 1,
                shutting_down: false,
                adding: HashMap::new(),
                removing: HashMap::new(),
            }),
            store,
            writer,
            events: events::Hub::new(),
            download_dir: config.download_dir.as_path().into(),
            config,
            peer_id: new_peer_id(),
            port,
            dht: udp.dht,
            dormant,
            dormant_task: Mutex::new(Some(dormant_task)),
            runs_ended: std::sync::atomic::AtomicU64::new(0),
            transports,
            rate_limits,
            next_reader: std::sync::atomic::AtomicU64::new(1),
            started: std::time::Instant::now(),
            tasks: Mutex::new(Vec::new()),
        }));
        daemon.load(saved);
        let mut tasks = Vec::new();
        let d = daemon.clone();
        tasks.push(tokio::spawn(async move { d.accept_tcp(listener).await }));
        if let Some(utp) = daemon.0.transports.utp.clone() {
            let d = daemon.clone();
            tasks.push(tokio::spawn(async move {
                while let Some((stream, addr)) = utp.accept().await {
                    d.route(Box::new(stream), addr);
                }
            }));
        }
        let d = daemon.clone();
        tasks.push(tokio::spawn(async move { d.save_periodically().await }));
        let d = daemon.clone();
        tasks.push(tokio::spawn(async move { d.publish_events().await }));
        let d = daemon.clone();
        tasks.push(tokio::spawn(async move {
            while let Some((id, finish)) = rested.recv().await {
                d.on_rest_ended(id, finish);
            }
        }));
        *lock(&daemon.0.tasks) = tasks;
        Ok(daemon)
    }

    /// The peer port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The daemon's settings.
    pub fn config(&self) -> &DaemonConfig {
        &self.0.config
    }

    /// How long the daemon has run.
    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.0.state)
    }

    /// Loads every saved torrent (in id order) into the queue.
    fn load(&self, saved: Vec<store::Loaded>) {
        let mut entries = Vec::with_capacity(saved.len());
        let mut hashes = HashMap::with_capacity(saved.len());
        // Torrents from one tracker (one passkey) share their list: one copy of it.
        let mut tracker_lists: HashSet<Arc<Vec<Vec<String>>>> = HashSet::new();
        for (mut saved, metainfo, resume) in saved {
            let info_hash = saved.info_hash;
            let (meta, trackers, peers) = match (metainfo, &saved.magnet) {
                (Some(m), _) => {
                    let trackers = m.tracker_tiers();
                    // Moved, not copied: what a thousand torrents keep is allocated once.
                    let meta = Meta {
                        info: Arc::new(m.info),
                        info_bytes: m.info_bytes.into(),
                        web_seeds: m.web_seeds,
                        piece_layers: m.piece_layers,
                    };
                    (Some(meta), trackers, Box::default())
                }
                (None, Some(link)) => match Magnet::parse(link) {
                    Ok(m) => (None, magnet_tiers(&m), m.peers.into()),
                    Err(_) => continue,
                },
                (None, None) => continue,
            };
            if hashes.insert(info_hash, saved.id).is_some() {
                continue;
            }
            if let (Some(meta), Some(wanted)) = (&meta, saved.wanted_files.as_mut()) {
                if let Some(files) = wanted.get(..meta.info.files.len()) {
                    *wanted = files.into();
                }
            }
            let last = match (&meta, resume) {
                (Some(meta), Some(have)) => {
                    progress_from_have(&meta.info, &have, saved.wanted_files.as_deref())
                }
                _ => Progress::default(),
            };
            let trackers = shared(&mut tracker_lists, Arc::new(trackers));
            entries.push(Box::new(Entry::new(saved, meta, trackers, peers, last)));
        }
        let mut st = self.state();
        let queued = st.queue.add_all(entries.iter().map(|e| {
            let complete = e.meta.is_some() && e.last.total_bytes > 0 && e.last.seeding;
            (e.saved.id, complete, e.saved.paused)
        }));
        for (entry, queued) in entries.into_iter().zip(queued) {
            if queued.is_err() {
                continue;
            }
            let id = entry.saved.id;
            st.next_id = st.next_id.max(id.saturating_add(1));
            st.by_hash.insert(entry.saved.info_hash, id);
            st.torrents.insert(id, entry);
        }
        // Built again in one go: a map filled in key order keeps its nodes half empty.
        st.torrents = std::mem::take(&mut st.torrents).into_iter().collect();
        tracing::info!(torrents = st.torrents.len(), "loaded saved torrents");
        self.apply_queue(&mut st);
    }

    /// Adds a torrent once its files are saved; returns its id. The same torrent being
    /// removed meanwhile is waited for (its files must go before the new ones are written).
    pub async fn add(&self, req: AddRequest) -> Result<TorrentId, AddError> {
        let download_dir = match req.download_dir {
            Some(dir) => {
                check_download_dir(&dir)?;
                dir.into()
            }
            None => Arc::clone(&self.0.download_dir),
        };
        let (info_hash, meta, trackers, peers, magnet, name, torrent_bytes) = match req.source {
            AddSource::Torrent(bytes) => {
                let m = Metainfo::from_bytes(&bytes).map_err(AddError::Torrent)?;
                let meta = Meta {
                    info: Arc::new(m.info.clone()),
                    info_bytes: m.info_bytes.clone().into(),
                    web_seeds: m.web_seeds.clone(),
                    piece_layers: m.piece_layers.clone(),
                };
                (
                    m.info_hash,
                    Some(meta),
                    m.tracker_tiers(),
                    Vec::new(),
                    None,
                    m.info.name.clone(),
                    Some(bytes),
                )
            }
            AddSource::Magnet(link) => {
                if link.len() > store::MAX_MAGNET_LEN {
                    return Err(AddError::MagnetTooLong);
                }
                let m = Magnet::parse(&link).map_err(AddError::Magnet)?;
                let name = m.name.clone().unwrap_or_else(|| m.info_hash.to_string());
                (
                    m.info_hash,
                    None,
                    magnet_tiers(&m),
                    m.peers.clone(),
                    Some(link),
                    name,
                    None,
                )
            }
        };
        let torrent_bytes: Option<Arc<[u8]>> = torrent_bytes.map(Into::into);
        let (id, saved, written) = loop {
            let mut removal = {
                let mut st = self.state();
                if st.shutting_down {
                    return Err(AddError::ShuttingDown);
                }
                // The same torrent still being removed: its run and files go first.
                if let Some(removal) = st.removing.get(&info_hash) {
                    removal.clone()
                } else {
                    if let Some(id) = find_in(&st, &info_hash) {
                        return Err(AddError::Duplicate(id));
                    }
                    if st.queue.len() + st.adding.len() >= crate::queue::MAX_TORRENTS {
                        return Err(AddError::Full(crate::queue::QueueError::Full));
                    }
                    let id = st.next_id;
                    st.next_id += 1;
                    st.adding.insert(info_hash, id);
                    let saved = Saved {
                        id,
                        info_hash,
                        name: name.into(),
                        magnet: magnet.map(Into::into),
                        download_dir,
                        paused: req.paused,
                        wanted_files: None,
                        added_date: unix_now(),
                        done_date: 0,
                        uploaded: 0,
                        downloaded: 0,
                        download_limit: None,
                        upload_limit: None,
                    };
                    if let Some(bytes) = torrent_bytes {
                        self.0.writer.save_torrent(info_hash, bytes);
                    }
                    let (ack, written) = oneshot::channel();
                    self.0.writer.save(info_hash, saved.clone(), Some(ack));
                    break (id, saved, written);
                }
            };
            // Ends (as an error) once the removal is done.
            let _ = removal.changed().await;
        };
        let entry = Box::new(Entry::new(
            saved,
            meta,
            Arc::new(trackers),
            peers.into(),
            Progress::default(),
        ));
        // Finished by a task of its own: a caller that goes away (a client hanging up) must
        // not leave the torrent reserved and never shown.
        let daemon = self.clone();
        let finish = tokio::spawn(async move { daemon.finish_add(entry, written).await });
        finish
            .await
            .unwrap_or_else(|e| Err(AddError::Store(std::io::Error::other(e))))?;
        Ok(id)
    }

    /// The end of an addition: once its files are on disk it is shown and may run (a 201 means
    /// it survives a restart); if they could not be written, it is dropped.
    async fn finish_add(
        &self,
        entry: Box<Entry>,
        written: oneshot::Receiver<std::io::Result<()>>,
    ) -> Result<(), AddError> {
        let result = written
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the state writer stopped")));
        let (id, info_hash) = (entry.saved.id, entry.saved.info_hash);
        let mut st = self.state();
        st.adding.remove(&info_hash);
        let added = result
            .map_err(AddError::Store)
            .and_then(|()| (st.queue.add(id, false, entry.saved.paused)).map_err(AddError::Full));
        if let Err(e) = added {
            self.0.writer.remove(info_hash, None);
            return Err(e);
        }
        st.by_hash.insert(info_hash, id);
        st.torrents.insert(id, entry);
        self.apply_queue(&mut st);
        Ok(())
    }

    /// Carries out the queue's decisions (called after every change of the state: event
    /// streams look for changes then).
    fn apply_queue(&self, st: &mut State) {
        self.0.events.poke();
        while let Some(event) = st.queue.poll_event() {
            match event {
                QueueEvent::Start(id) => self.start_run(st, id),
                QueueEvent::Stop(id) => {
                    if let Some(e) = st.torrents.get_mut(&id) {
                        self.stop_activity(id, e);
                    }
                }
            }
        }
    }

    /// Starts `id`, unless its run is still ending (its end starts the next): at rest if it is
    /// a complete seed with nothing owed (no recheck, no peer waiting), else a run.
    fn start_run(&self, st: &mut State, id: TorrentId) {
        self.start_torrent(st, id, None);
    }

    /// [`Daemon::start_run`]; a run goes on with `resumed`, the session `id` rested with.
    fn start_torrent(&self, st: &mut State, id: TorrentId, resumed: Option<Dormant>) {
        if st.shutting_down {
            return;
        }
        let seeding = st.queue.state(id) == Some(QueueState::Seeding);
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        if entry.run.is_some() || entry.resting.is_some() {
            return;
        }
        entry.error = None;
        let rest = resumed.is_none()
            && seeding
            && !entry.recheck
            && entry.waiting().is_empty()
            && entry.meta.is_some()
            && entry.last.seeding
            && entry.last.total_bytes > 0;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (progress_tx, progress_rx) = watch::channel(entry.last.clone());
        let (route_tx, route_rx) = mpsc::channel(ROUTE_QUEUE);
        let fetching = Arc::new(std::sync::atomic::AtomicBool::new(entry.meta.is_none()));
        let mut job = Job {
            daemon: self.clone(),
            id,
            info_hash: entry.saved.info_hash,
            meta: entry.meta.clone(),
            trackers: entry.trackers.as_ref().clone(),
            peers: entry.peers.to_vec(),
            output_dir: entry.saved.download_dir.to_path_buf(),
            wanted_files: entry.saved.wanted_files.as_deref().map(<[bool]>::to_vec),
            recheck: std::mem::take(&mut entry.recheck),
            stop: stop_rx,
            progress: progress_tx,
            incoming: route_rx,
            // A resting torrent has no connections to limit.
            limits: if rest {
                RateLimits::default()
            } else {
                entry.limits().clone()
            },
            // A resting torrent needs no window (a run subscribes when it starts).
            window: if rest {
                watch::channel(None).1
            } else {
                entry.window().subscribe()
            },
            resumed,
        };
        if let (true, Some(meta)) = (rest, entry.meta.clone()) {
            // Nothing to do until a peer comes: only the session, to announce.
            let dormant = Dormant::new(&job.params(meta, None));
            self.0.dormant.insert(id, dormant);
            entry.resting = Some(Resting { stopping: false });
            set_routes(st, id, None);
            return;
        }
        if let Some(live) = entry.live.as_mut() {
            for waiting in live.waiting.drain(..) {
                let _ = route_tx.try_send(waiting);
            }
        }
        let task = tokio::spawn(job.run());
        entry.run = Some(Box::new(Run {
            stop: stop_tx,
            progress: progress_rx,
            task: Some(task),
            stopping: false,
            fetching,
        }));
        set_routes(st, id, Some(route_tx));
    }

    /// A peer wants resting torrent `id`: a run starts from its session, with the connections
    /// waiting for it.
    fn wake(&self, st: &mut State, id: TorrentId) {
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        if entry.resting.as_ref().is_none_or(|r| r.stopping) {
            return;
        }
        let Some(dormant) = self.0.dormant.take(id) else {
            return;
        };
        entry.resting = None;
        tracing::debug!(torrent = %entry.saved.name, "a peer came; running again");
        self.start_torrent(st, id, Some(dormant));
    }

    /// Asks whatever runs for `id` to stop: its run, or its resting session (which sends its
    /// closing announces). Its end is reported to [`Daemon::on_ended`] or
    /// [`Daemon::on_rest_ended`].
    fn stop_activity(&self, id: TorrentId, entry: &mut Entry) {
        if let Some(run) = entry.run.as_mut() {
            run.stopping = true;
            let _ = run.stop.send(true);
        }
        if let Some(resting) = entry.resting.as_mut() {
            if !resting.stopping {
                resting.stopping = true;
                self.0.dormant.stop(id);
            }
        }
    }

    /// A run ended at rest: its session joins the dormant seeds, unless it was asked to stop
    /// meanwhile (then it stops from there), and connections that came as it ended start the
    /// next run at once.
    fn on_dormant(
        &self,
        id: TorrentId,
        dormant: Box<Dormant>,
        mut incoming: mpsc::Receiver<(PeerStream, Handshake)>,
    ) {
        let mut st = self.state();
        let shutting_down = st.shutting_down;
        let Some(entry) = st.torrents.get_mut(&id) else {
            // Removed meanwhile: it still says `stopped` to its trackers.
            self.0.dormant.insert(id, *dormant);
            self.0.dormant.stop(id);
            return;
        };
        let Some(run) = self.end_run(entry) else {
            return;
        };
        while let Ok(waiting) = incoming.try_recv() {
            entry.keep_waiting(waiting);
        }
        save(&self.0.writer, entry);
        if let Some(live) = entry.live.as_mut() {
            if live.window.as_ref().is_some_and(|w| w.borrow().is_none()) {
                live.window = None;
            }
            live.limits = None;
        }
        entry.settle();
        self.0.dormant.insert(id, *dormant);
        entry.resting = Some(Resting { stopping: false });
        set_routes(&mut st, id, None);
        self.0.events.poke();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        if run.stopping || shutting_down {
            self.stop_activity(id, entry);
        } else if !entry.waiting().is_empty() {
            self.wake(&mut st, id);
        } else {
            tracing::debug!(torrent = %entry.saved.name, "nobody connected; at rest");
        }
    }

    /// A resting torrent's session ended (we stopped it): start it again if the queue still
    /// wants it running (a recheck or a new file selection stops it this way).
    fn on_rest_ended(&self, id: TorrentId, finish: Finish) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        let Some(resting) = entry.resting.take() else {
            return;
        };
        st.routes.retain(|_, (owner, _)| *owner != id);
        // Unless we stopped it, it ended by itself (its seeding limits).
        let gave_up = matches!(finish, Finish::GaveUp(_));
        self.after_end(&mut st, id, resting.stopping, gave_up);
    }

    /// What follows the end of a torrent's run or rest: one that stopped by itself (`failed`:
    /// on an error) is reported to the queue; one we stopped starts again if the queue still
    /// wants it running (a recheck or a new file selection stops it this way). Connections
    /// kept for a torrent that then neither runs nor rests are closed.
    fn after_end(&self, st: &mut State, id: TorrentId, stopped_by_us: bool, failed: bool) {
        if st.shutting_down {
            return;
        }
        if !stopped_by_us {
            st.queue.handle_stopped(id, failed);
        } else if matches!(
            st.queue.state(id),
            Some(QueueState::Downloading | QueueState::Seeding)
        ) {
            self.start_run(st, id);
        }
        self.apply_queue(st);
        if let Some(entry) = st.torrents.get_mut(&id) {
            if entry.run.is_none() && entry.resting.is_none() {
                if let Some(live) = entry.live.as_mut() {
                    live.waiting.clear();
                }
                entry.settle();
            }
        }
    }

    /// A run's metadata arrived: keep it.
    fn on_metadata(&self, id: TorrentId, meta: &Meta, metainfo_bytes: &[u8]) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        entry.meta = Some(meta.clone());
        entry.saved.name = meta.info.name.as_str().into();
        if let Some(run) = &entry.run {
            run.fetching
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        self.0.events.poke();
        self.0
            .writer
            .save_torrent(entry.saved.info_hash, metainfo_bytes.into());
        save(&self.0.writer, entry);
        // A hybrid found through a magnet link is reached under its v2 hash from now on too.
        let info_hash = entry.saved.info_hash;
        if let Some(alias) = hybrid_v2_alias(&meta.info_bytes, meta.info.version) {
            if let Some(route) = st.routes.get(&info_hash).cloned() {
                st.routes.entry(alias).or_insert(route);
            }
        }
    }

    /// A run got the piece layers its metadata lacked from peers: they join the saved
    /// `.torrent`, so no later run waits on peers for them.
    fn on_layers(&self, id: TorrentId, layers: BTreeMap<usize, PieceLayer>) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        let Some(meta) = entry.meta.as_mut() else {
            return;
        };
        meta.piece_layers = layers;
        let torrent = store::metainfo_bytes(&entry.trackers, meta);
        self.0
            .writer
            .save_torrent(entry.saved.info_hash, torrent.into());
    }

    /// A run reports whether the wanted data is complete.
    fn on_complete(&self, id: TorrentId, complete: bool) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        if complete && entry.saved.done_date == 0 {
            entry.saved.done_date = unix_now();
            save(&self.0.writer, entry);
        }
        st.queue.handle_complete(id, complete);
        self.apply_queue(&mut st);
    }

    /// Takes a torrent's run that ended and folds its last report in (`None`: no run).
    fn end_run(&self, entry: &mut Entry) -> Option<Box<Run>> {
        let run = entry.run.take()?;
        self.0
            .runs_ended
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let last = run.progress.borrow().clone();
        fold_run(entry, last);
        Some(run)
    }

    /// A run ended: fold in its counters, and start the next run if the queue still wants it
    /// running (a recheck or new file selection restarts it this way).
    fn on_ended(&self, id: TorrentId, result: Result<Outcome, String>) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        let Some(run) = self.end_run(entry) else {
            return;
        };
        let stopping = run.stopping;
        if let Err(e) = &result {
            tracing::warn!(torrent = %entry.saved.name, error = %e, "torrent stopped");
            entry.error = Some(e.as_str().into());
        }
        save(&self.0.writer, entry);
        st.routes.retain(|_, (owner, _)| *owner != id);
        self.after_end(&mut st, id, stopping, result.is_err());
    }

    /// Routes an incoming connection to its torrent once its handshake is read; at most
    /// [`MAX_HANDSHAKING`] at once (the others are closed).
    fn route(&self, stream: crate::engine::transport::BoxStream, addr: SocketAddr) {
        let Ok(permit) = self.0.handshaking.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "too many incoming handshakes; closing");
            return;
        };
        let known: Vec<InfoHash> = {
            let st = self.state();
            let resting = (st.torrents.values())
                .filter(|e| e.resting.is_some())
                .map(|e| e.saved.info_hash);
            st.routes.keys().copied().chain(resting).collect()
        };
        let d = self.clone();
        let encryption = self.0.transports.encryption;
        tokio::spawn(async move {
            let _permit = permit;
            let (conn, theirs) =
                match connection::accept_unanswered(stream, addr, &known, encryption).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(%addr, error = %error_chain(&e), "incoming connection");
                        return;
                    }
                };
            d.deliver(conn, theirs);
        });
    }

    /// Hands an incoming connection whose handshake was read to its torrent's run, starting
    /// the run if the torrent rests; a torrent whose run is going to rest keeps it for the
    /// next run. Beyond [`ROUTE_QUEUE`] waiting, it is closed.
    fn deliver(&self, conn: PeerStream, theirs: Handshake) {
        let mut st = self.state();
        let Some((id, tx)) = route_of(&st, &theirs.info_hash) else {
            return;
        };
        let waiting = match tx {
            Some(tx) => match tx.try_send((conn, theirs)) {
                Err(mpsc::error::TrySendError::Closed(waiting)) => waiting,
                // Delivered, or too many waiting already.
                _ => return,
            },
            None => (conn, theirs),
        };
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        entry.keep_waiting(waiting);
        if entry.resting.is_some() {
            self.wake(&mut st, id);
        }
    }

    async fn accept_tcp(&self, listener: tokio::net::TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    if !self.0.transports.tcp {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    self.route(Box::new(stream), addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Saves every running torrent's settings whose counters moved, every `save_every`, and
    /// gives the memory of runs that ended since back to the system.
    async fn save_periodically(&self) {
        let mut tick = tokio::time::interval(self.0.config.save_every);
        tick.tick().await;
        // The counters last saved, per torrent (an idle torrent is not written again).
        let mut written: HashMap<TorrentId, (u64, u64)> = HashMap::new();
        // Runs ended when free memory was last given back (never yet: the start's announces
        // leave some too).
        let mut trimmed = None;
        loop {
            tick.tick().await;
            let ended = self.0.runs_ended.load(std::sync::atomic::Ordering::Relaxed);
            if trimmed != Some(ended) {
                trimmed = Some(ended);
                crate::engine::release_free_memory();
            }
            // Queued under the lock, so a change or removal made after this snapshot is
            // queued after it, and written after it.
            let st = self.state();
            written.retain(|id, _| st.torrents.contains_key(id));
            for (id, e) in &st.torrents {
                let Some(run) = e.run.as_ref() else {
                    continue;
                };
                let (uploaded, received) = {
                    let p = run.progress.borrow();
                    (p.uploaded_bytes, p.received_bytes)
                };
                let counters = (e.saved.uploaded + uploaded, e.saved.downloaded + received);
                if written.insert(*id, counters) != Some(counters) {
                    let mut saved = e.saved.clone();
                    (saved.uploaded, saved.downloaded) = counters;
                    self.0.writer.save(e.saved.info_hash, saved, None);
                }
            }
        }
    }

    /// Stops a torrent (it stays, paused).
    pub fn pause(&self, id: TorrentId) -> bool {
        let mut st = self.state();
        if !st.torrents.contains_key(&id) {
            return false;
        }
        st.queue.pause(id);
        self.apply_queue(&mut st);
        if let Some(e) = st.torrents.get_mut(&id) {
            e.saved.paused = true;
            save(&self.0.writer, e);
        }
        true
    }

    /// Lets a paused or failed torrent run again (when the queue has room).
    pub fn resume(&self, id: TorrentId) -> bool {
        let mut st = self.state();
        let Some(e) = st.torrents.get_mut(&id) else {
            return false;
        };
        e.saved.paused = false;
        e.error = None;
        save(&self.0.writer, e);
        st.queue.resume(id);
        self.apply_queue(&mut st);
        true
    }

    /// Hashes all of a torrent's data again: now if it runs, else when it next starts.
    pub fn recheck(&self, id: TorrentId) -> bool {
        let mut st = self.state();
        let Some(e) = st.torrents.get_mut(&id) else {
            return false;
        };
        e.recheck = true;
        self.stop_activity(id, e);
        true
    }

    /// Chooses the files to fetch (by index among the user's files, as [`Daemon::files`]
    /// numbers them; `None`: all; files past the end of the list are wanted). A running
    /// torrent restarts with the new choice.
    pub fn set_wanted_files(
        &self,
        id: TorrentId,
        wanted: Option<Vec<bool>>,
    ) -> Result<(), WantedError> {
        let mut st = self.state();
        let e = st.torrents.get_mut(&id).ok_or(WantedError::NoSuchTorrent)?;
        e.saved.wanted_files = match (&e.meta, wanted) {
            (_, None) => None,
            (None, Some(_)) => return Err(WantedError::NoMetadata),
            (Some(meta), Some(wanted)) => {
                let files = meta.info.real_files().count();
                if wanted.len() > files {
                    return Err(WantedError::TooMany {
                        given: wanted.len(),
                        files,
                    });
                }
                Some(layout_wanted(&meta.info, &wanted).into())
            }
        };
        save(&self.0.writer, e);
        // It may not be complete any more: it will not rest before a run says so.
        e.last.seeding = false;
        self.stop_activity(id, e);
        // Whether it is complete now is known once it runs again.
        st.queue.handle_complete(id, false);
        self.apply_queue(&mut st);
        Ok(())
    }

    /// Removes a torrent at once from the session; its files, and its data if asked, once its
    /// run (if any) ended. Returns when all of it is gone (the removal goes on if the caller
    /// goes away: a cancelled request never leaves a removed torrent's files behind).
    pub async fn remove(&self, id: TorrentId, delete_data: bool) -> bool {
        let (entry, task, done) = {
            let mut st = self.state();
            let Some(mut entry) = st.torrents.remove(&id) else {
                return false;
            };
            st.by_hash.remove(&entry.saved.info_hash);
            st.queue.remove(id);
            st.routes.retain(|_, (owner, _)| *owner != id);
            self.stop_activity(id, &mut entry);
            let task = entry.run.as_mut().and_then(|run| run.task.take());
            let (done, removal) = watch::channel(());
            st.removing.insert(entry.saved.info_hash, removal);
            self.apply_queue(&mut st);
            (entry, task, done)
        };
        let daemon = self.clone();
        let removal = tokio::spawn(async move {
            daemon.finish_removal(entry, task, delete_data).await;
            drop(done);
        });
        let _ = removal.await;
        true
    }

    /// The end of a removal: once the run ended (its last resume state written), the files
    /// in the state directory go, then the data if asked; then an addition of the same
    /// torrent may go ahead.
    async fn finish_removal(
        &self,
        entry: Box<Entry>,
        task: Option<JoinHandle<()>>,
        delete_data: bool,
    ) {
        if let Some(task) = task {
            let _ = task.await;
        }
        let (ack, removed) = oneshot::channel();
        self.0.writer.remove(entry.saved.info_hash, Some(ack));
        let _ = removed.await;
        if delete_data {
            if let Some(meta) = &entry.meta {
                let path = entry.saved.download_dir.join(&meta.info.name);
                let (out, info) = (path.clone(), meta.info.clone());
                let removed =
                    tokio::task::spawn_blocking(move || crate::disk::delete_data(&out, &info))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete data");
                }
            }
        }
        self.state().removing.remove(&entry.saved.info_hash);
    }

    /// Stops every torrent (each saves its resume state), saves every setting and stops the
    /// DHT.
    pub async fn shutdown(&self) {
        self.0.events.close();
        for task in lock(&self.0.tasks).drain(..) {
            task.abort();
        }
        let tasks: Vec<JoinHandle<()>> = {
            let mut st = self.state();
            st.shutting_down = true;
            st.torrents
                .iter_mut()
                .filter_map(|(&id, e)| {
                    self.stop_activity(id, e);
                    e.run.as_mut()?.task.take()
                })
                .collect()
        };
        for task in tasks {
            let _ = task.await;
        }
        // Resting seeds say `stopped` too (bounded by the session's closing deadline).
        self.0.dormant.wait_empty().await;
        if let Some(task) = lock(&self.0.dormant_task).take() {
            task.abort();
        }
        // Removals under way finish (their files must not come back at the next start).
        let removals: Vec<watch::Receiver<()>> = self.state().removing.values().cloned().collect();
        for mut removal in removals {
            let _ = removal.changed().await;
        }
        for e in self.state().torrents.values() {
            save(&self.0.writer, e);
        }
        self.0.writer.flush().await;
        if let Some(dht) = &self.0.dht {
            dht.shutdown().await;
        }
    }

    /// Every torrent's id, in queue order.
    pub fn ids(&self) -> Vec<TorrentId> {
        self.state().queue.ids()
    }

    /// What the API shows of torrents `ids` (unknown ones left out), copied under the state
    /// lock: counters and shared pointers only, so the work of building views and files
    /// happens after the lock is released, whatever the size of the torrents.
    pub fn snapshots(&self, ids: &[TorrentId]) -> Vec<Snapshot> {
        let st = self.state();
        ids.iter().filter_map(|&id| snapshot(&st, id)).collect()
    }

    /// Every torrent, in queue order.
    pub fn list(&self) -> Vec<TorrentView> {
        let snapshots = {
            let st = self.state();
            let ids = st.queue.ids();
            ids.into_iter()
                .filter_map(|id| snapshot(&st, id))
                .collect::<Vec<_>>()
        };
        snapshots.iter().map(Snapshot::view).collect()
    }

    /// One torrent.
    pub fn get(&self, id: TorrentId) -> Option<TorrentView> {
        self.snapshot(id).map(|s| s.view())
    }

    fn snapshot(&self, id: TorrentId) -> Option<Snapshot> {
        snapshot(&self.state(), id)
    }

    /// The id of the torrent with this info hash.
    pub fn find(&self, info_hash: &InfoHash) -> Option<TorrentId> {
        find_in(&self.state(), info_hash)
    }

    /// A torrent's files with their progress.
    pub fn files(&self, id: TorrentId) -> Option<Vec<FileView>> {
        self.snapshot(id).map(|s| s.files())
    }

    /// A torrent's connected peers.
    pub fn peers(&self, id: TorrentId) -> Option<Vec<PeerView>> {
        self.snapshot(id).map(|s| s.peers())
    }

    /// A torrent's trackers (tier, URL).
    pub fn trackers(&self, id: TorrentId) -> Option<Vec<(usize, String)>> {
        self.snapshot(id).map(|s| s.trackers())
    }

    /// Totals across torrents.
    pub fn stats(&self) -> SessionStats {
        // Counted in place: building every torrent's view for this (a UI or a metrics scraper
        // polls it) would allocate a few hundred bytes per torrent each time.
        let st = self.state();
        let mut stats = SessionStats::default();
        for (&id, entry) in &st.torrents {
            let (p, fetching) = current(entry);
            let Some(state) = status(&st, id, fetching) else {
                continue;
            };
            stats.torrents += 1;
            match state {
                TorrentStatus::Downloading | TorrentStatus::FetchingMetadata => {
                    stats.downloading += 1
                }
                TorrentStatus::Seeding => stats.seeding += 1,
                TorrentStatus::Paused | TorrentStatus::Failed => stats.paused += 1,
                TorrentStatus::QueuedDownload | TorrentStatus::QueuedSeed => stats.queued += 1,
            }
            stats.download_rate += p.rate.max(0.0) as u64;
            stats.upload_rate += p.upload_rate.max(0.0) as u64;
            stats.downloaded_bytes += entry.saved.downloaded + p.received_bytes;
            stats.uploaded_bytes += entry.saved.uploaded + p.uploaded_bytes;
            stats.peers += p.peers;
            stats.pieces_have += u64::from(p.done_pieces);
        }
        stats
    }

    /// Changes the queue's limits.
    pub fn set_limits(&self, limits: QueueLimits) {
        let mut st = self.state();
        st.queue.set_limits(limits);
        self.apply_queue(&mut st);
    }

    /// The queue's limits.
    pub fn limits(&self) -> QueueLimits {
        self.state().queue.limits()
    }

    /// The global rate limits.
    pub fn speed_limits(&self) -> SpeedLimits {
        let (download, upload) = self.0.rate_limits.rates();
        SpeedLimits { download, upload }
    }

    /// Changes the global rate limits (at once, for every connection) and saves them.
    pub fn set_speed_limits(&self, limits: SpeedLimits) {
        // Under the state lock, as every queued write: two changes are saved in their order.
        let _st = self.state();
        self.0.rate_limits.set(limits.download, limits.upload);
        self.0.writer.save_session(SessionSettings {
            download_limit: limits.download,
            upload_limit: limits.upload,
        });
    }

    /// A torrent's own rate limits (`None`: no such torrent).
    pub fn torrent_speed_limits(&self, id: TorrentId) -> Option<SpeedLimits> {
        let st = self.state();
        let e = st.torrents.get(&id)?;
        Some(SpeedLimits {
            download: e.saved.download_limit,
            upload: e.saved.upload_limit,
        })
    }

    /// Changes a torrent's own rate limits (at once, for its connections) and saves them;
    /// `false` if there is no such torrent.
    pub fn set_torrent_speed_limits(&self, id: TorrentId, limits: SpeedLimits) -> bool {
        let mut st = self.state();
        let Some(e) = st.torrents.get_mut(&id) else {
            return false;
        };
        e.saved.download_limit = limits.download;
        e.saved.upload_limit = limits.upload;
        if let Some(l) = e.live.as_ref().and_then(|l| l.limits.as_ref()) {
            l.set(limits.download, limits.upload);
        }
        save(&self.0.writer, e);
        true
    }

    /// A torrent's file to stream: its metadata, where its data lives, and the file's place
    /// (`None`: no such torrent or file, or the metadata is not known yet).
    fn stream_source(&self, id: TorrentId, index: usize) -> Option<stream::Source> {
        let st = self.state();
        let e = st.torrents.get(&id)?;
        let meta = e.meta.as_ref()?;
        let (_, file) = meta.info.real_files().nth(index)?;
        Some(stream::Source {
            info: meta.info.clone(),
            output: e.saved.download_dir.join(&meta.info.name),
            offset: file.offset,
            length: file.length,
        })
    }

    /// A new stream reader's number.
    fn new_reader(&self) -> u64 {
        self.0
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether piece `piece` of torrent `id` is verified, and the progress of its run to wait
    /// on for more (`None`: the torrent is gone).
    fn piece_verified(
        &self,
        id: TorrentId,
        piece: u32,
    ) -> Option<(bool, Option<watch::Receiver<Progress>>)> {
        let st = self.state();
        let e = st.torrents.get(&id)?;
        // Marked seen before the progress is read: a report sent after it wakes the waiter.
        let progress = e.run.as_ref().map(|r| {
            let mut rx = r.progress.clone();
            rx.mark_unchanged();
            rx
        });
        let (p, _) = current(e);
        let had = p.have.as_ref().is_some_and(|h| h.get(piece))
            || (p.seeding && p.total_bytes > 0 && e.saved.wanted_files.is_none());
        Some((had, progress))
    }

    /// Reader `reader` is at piece `from` and wants the pieces `from..end` fetched first: they
    /// become the torrent's window (the latest reader's wins), unless all are verified, when
    /// the window is lifted so the rest of the torrent downloads meanwhile.
    fn steer_window(&self, id: TorrentId, reader: u64, from: u32, end: u32) {
        let mut st = self.state();
        let Some(e) = st.torrents.get_mut(&id) else {
            return;
        };
        let (p, _) = current(e);
        let all_had = p
            .have
            .as_ref()
            .is_some_and(|h| (from..end).all(|i| h.get(i)));
        e.live().window_reader = reader;
        let window = (!all_had).then_some(from..end);
        e.window().send_if_modified(|w| {
            let changed = *w != window;
            *w = window;
            changed
        });
    }

    /// Lifts the window if reader `reader` set the one in force (its response ended).
    fn release_window(&self, id: TorrentId, reader: u64) {
        let mut st = self.state();
        let Some(e) = st.torrents.get_mut(&id) else {
            return;
        };
        let Some(live) = e.live.as_ref().filter(|l| l.window_reader == reader) else {
            return;
        };
        if let Some(w) = &live.window {
            w.send_if_modified(|w| w.take().is_some());
        }
    }
}

/// Queues a torrent's settings for saving.
fn save(writer: &Writer, entry: &Entry) {
    writer.save(entry.saved.info_hash, entry.saved.clone(), None);
}

/// The id of the torrent with this info hash, or of the one being added with it.
fn find_in(st: &State, info_hash: &InfoHash) -> Option<TorrentId> {
    (st.by_hash.get(info_hash))
        .or_else(|| st.adding.get(info_hash))
        .copied()
}

/// Routes torrent `id`'s incoming connections to `route` (its run's channel, or `None`
/// while it rests): under its info hash, and a hybrid's under its truncated v2 hash too (its v2
/// swarm's name). A resting torrent's info hash is not kept in the routes: [`route_of`] finds
/// it among the torrents (a thousand resting ones take no room there).
fn set_routes(st: &mut State, id: TorrentId, route: Option<mpsc::Sender<(PeerStream, Handshake)>>) {
    let Some(entry) = st.torrents.get(&id) else {
        return;
    };
    let info_hash = entry.saved.info_hash;
    let alias = (entry.meta.as_ref()).and_then(|m| hybrid_v2_alias(&m.info_bytes, m.info.version));
    if let Some(alias) = alias {
        st.routes.insert(alias, (id, route.clone()));
    }
    if route.is_some() {
        st.routes.insert(info_hash, (id, route));
    } else {
        st.routes.remove(&info_hash);
    }
}

/// Where incoming connections naming `info_hash` go: a route, or a resting torrent.
fn route_of(st: &State, info_hash: &InfoHash) -> Option<Route> {
    if let Some(route) = st.routes.get(info_hash) {
        return Some(route.clone());
    }
    let &id = st.by_hash.get(info_hash)?;
    let resting = st.torrents.get(&id)?.resting.is_some();
    resting.then_some((id, None))
}

/// Folds the last report of a run that ended into the torrent: its counters into the saved
/// totals, and what it showed (with nothing moving and nobody connected) as its state.
fn fold_run(entry: &mut Entry, last: Progress) {
    entry.saved.uploaded += last.uploaded_bytes;
    entry.saved.downloaded += last.received_bytes;
    entry.last = Progress {
        uploaded_bytes: 0,
        received_bytes: 0,
        rate: 0.0,
        upload_rate: 0.0,
        peers: 0,
        connected: Vec::new(),
        ..last
    };
}

/// One copy of equal values: the one in `seen` equal to `value` if there is one, else `value`
/// (then remembered).
fn shared<T: Eq + std::hash::Hash + ?Sized>(seen: &mut HashSet<Arc<T>>, value: Arc<T>) -> Arc<T> {
    if let Some(same) = seen.get(&value) {
        return Arc::clone(same);
    }
    seen.insert(Arc::clone(&value));
    value
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Each `tr` of a magnet link as its own tier.
fn magnet_tiers(m: &Magnet) -> Vec<Vec<String>> {
    m.trackers.iter().map(|t| vec![t.clone()]).collect()
}

/// A torrent's state as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TorrentStatus {
    Paused,
    Failed,
    QueuedDownload,
    QueuedSeed,
    FetchingMetadata,
    Downloading,
    Seeding,
}

/// A torrent as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TorrentView {
    pub id: TorrentId,
    pub info_hash: String,
    pub name: String,
    pub state: TorrentStatus,
    pub download_dir: PathBuf,
    /// Bytes of the real files.
    pub total_size: u64,
    /// Bytes of the wanted pieces.
    pub size_when_done: u64,
    /// Verified bytes of the wanted pieces.
    pub done_bytes: u64,
    pub left_until_done: u64,
    /// 0 to 1.
    pub percent_done: f64,
    pub pieces_have: u32,
    pub piece_count: u32,
    pub rate_download: u64,
    pub rate_upload: u64,
    pub downloaded_ever: u64,
    pub uploaded_ever: u64,
    pub ratio: f64,
    /// Seconds to completion at the current rate (`None`: unknown or done).
    pub eta: Option<u64>,
    pub peers: usize,
    pub added_date: u64,
    pub done_date: u64,
    pub error: Option<String>,
    pub metadata_known: bool,
    pub private: bool,
}

/// A file of a torrent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileView {
    /// Its place among the torrent's files as the user sees them: BEP 47 pad files are left
    /// out, so the index counts only real files (every API numbers files this way).
    pub index: usize,
    pub path: String,
    pub length: u64,
    /// Bytes of the file inside verified pieces.
    pub done_bytes: u64,
    pub wanted: bool,
}

/// A connected peer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerView {
    pub address: String,
    pub port: u16,
    pub outgoing: bool,
}

/// Totals across torrents.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SessionStats {
    pub torrents: usize,
    pub downloading: usize,
    pub seeding: usize,
    pub paused: usize,
    pub queued: usize,
    pub download_rate: u64,
    pub upload_rate: u64,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub peers: usize,
    pub pieces_have: u64,
}

/// The latest progress of a torrent and whether its metadata is being fetched.
fn current(entry: &Entry) -> (Progress, bool) {
    match &entry.run {
        Some(run) => (
            run.progress.borrow().clone(),
            run.fetching.load(std::sync::atomic::Ordering::Relaxed),
        ),
        None => (entry.last.clone(), false),
    }
}

/// A torrent's state as the API names it (`None`: not in the queue).
fn status(st: &State, id: TorrentId, fetching: bool) -> Option<TorrentStatus> {
    Some(match st.queue.state(id)? {
        QueueState::Paused => TorrentStatus::Paused,
        QueueState::Failed => TorrentStatus::Failed,
        QueueState::QueuedDownload => TorrentStatus::QueuedDownload,
        QueueState::QueuedSeed => TorrentStatus::QueuedSeed,
        QueueState::Downloading if fetching => TorrentStatus::FetchingMetadata,
        QueueState::Downloading => TorrentStatus::Downloading,
        QueueState::Seeding => TorrentStatus::Seeding,
    })
}

/// A torrent as it stood when the state lock was held: what the API shows of it, to be
/// worked out once the lock is released.
pub struct Snapshot {
    id: TorrentId,
    info_hash: InfoHash,
    status: TorrentStatus,
    progress: Progress,
    meta: Option<Meta>,
    name: String,
    download_dir: Arc<Path>,
    added_date: u64,
    done_date: u64,
    /// Payload counters of the runs before this one.
    uploaded: u64,
    downloaded: u64,
    wanted_files: Option<Arc<[bool]>>,
    trackers: Arc<Vec<Vec<String>>>,
    error: Option<String>,
    limits: SpeedLimits,
}

fn snapshot(st: &State, id: TorrentId) -> Option<Snapshot> {
    let entry = st.torrents.get(&id)?;
    let (progress, fetching) = current(entry);
    let status = status(st, id, fetching)?;
    let saved = &entry.saved;
    Some(Snapshot {
        id,
        info_hash: entry.saved.info_hash,
        status,
        progress,
        meta: entry.meta.clone(),
        name: saved.name.to_string(),
        download_dir: saved.download_dir.clone(),
        added_date: saved.added_date,
        done_date: saved.done_date,
        uploaded: saved.uploaded,
        downloaded: saved.downloaded,
        wanted_files: saved.wanted_files.clone(),
        trackers: entry.trackers.clone(),
        error: entry.error.as_deref().map(String::from),
        limits: SpeedLimits {
            download: saved.download_limit,
            upload: saved.upload_limit,
        },
    })
}

impl Snapshot {
    pub fn id(&self) -> TorrentId {
        self.id
    }

    /// The torrent's own rate limits.
    pub fn limits(&self) -> SpeedLimits {
        self.limits
    }

    /// The torrent as the API shows it.
    pub fn view(&self) -> TorrentView {
        let p = &self.progress;
        let (total_size, piece_count, private) = self.meta.as_ref().map_or((0, 0, false), |m| {
            (
                m.info.content_length(),
                m.info.piece_count(),
                m.info.private,
            )
        });
        let size_when_done = if p.total_bytes > 0 {
            p.total_bytes
        } else {
            self.meta.as_ref().map_or(0, |m| {
                let wanted = wanted_for(&m.info, self.wanted_files.as_deref());
                wanted
                    .iter_set()
                    .map(|i| u64::from(m.info.piece_len(i)))
                    .sum()
            })
        };
        let left = size_when_done.saturating_sub(p.done_bytes);
        let downloaded_ever = self.downloaded + p.received_bytes;
        let uploaded_ever = self.uploaded + p.uploaded_bytes;
        let rate = p.rate.max(0.0) as u64;
        TorrentView {
            id: self.id,
            info_hash: self.info_hash.to_string(),
            name: self.name.clone(),
            state: self.status,
            download_dir: self.download_dir.to_path_buf(),
            total_size,
            size_when_done,
            done_bytes: p.done_bytes,
            left_until_done: left,
            percent_done: if size_when_done == 0 {
                if self.meta.is_some() {
                    1.0
                } else {
                    0.0
                }
            } else {
                p.done_bytes as f64 / size_when_done as f64
            },
            pieces_have: p.done_pieces,
            piece_count,
            rate_download: rate,
            rate_upload: p.upload_rate.max(0.0) as u64,
            downloaded_ever,
            uploaded_ever,
            ratio: if downloaded_ever == 0 {
                0.0
            } else {
                uploaded_ever as f64 / downloaded_ever as f64
            },
            eta: (left > 0 && rate > 0).then(|| left / rate),
            peers: p.peers,
            added_date: self.added_date,
            done_date: self.done_date,
            error: self.error.clone(),
            metadata_known: self.meta.is_some(),
            private,
        }
    }

    /// Its files with their progress (none while the metadata is unknown).
    pub fn files(&self) -> Vec<FileView> {
        let Some(meta) = &self.meta else {
            return Vec::new();
        };
        let have = self.progress.have.as_deref();
        file_views(&meta.info, have, self.wanted_files.as_deref())
    }

    /// Its connected peers.
    pub fn peers(&self) -> Vec<PeerView> {
        (self.progress.connected.iter())
            .map(|p| PeerView {
                address: p.addr.ip().to_string(),
                port: p.addr.port(),
                outgoing: p.outgoing,
            })
            .collect()
    }

    /// Its trackers (tier, URL).
    pub fn trackers(&self) -> Vec<(usize, String)> {
        (self.trackers.iter().enumerate())
            .flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u.clone())))
            .collect()
    }
}

/// The wanted pieces for a file selection (`None`: all).
fn wanted_for(info: &Info, files: Option<&[bool]>) -> Bitfield {
    match files {
        Some(files) => wanted_pieces(info, files),
        None => Bitfield::full(info.piece_count()),
    }
}

/// What a resume state's pieces amount to, before the torrent runs.
fn progress_from_have(info: &Info, have: &Bitfield, files: Option<&[bool]>) -> Progress {
    let wanted = wanted_for(info, files);
    let (mut total, mut done) = (0u64, 0u64);
    let (mut total_pieces, mut done_pieces) = (0u32, 0u32);
    for i in wanted.iter_set() {
        let len = u64::from(info.piece_len(i));
        total += len;
        total_pieces += 1;
        if have.get(i) {
            done += len;
            done_pieces += 1;
        }
    }
    Progress {
        done_bytes: done,
        total_bytes: total,
        present_bytes: done,
        done_pieces,
        total_pieces,
        seeding: done == total,
        have: Some(Arc::new(have.clone())),
        ..Progress::default()
    }
}

/// A choice of the user's files (by their index among the real files, pad files left out)
/// as one flag per file of the layout (pad files included), as the engine and the saved
/// settings take it. Files past the end of `wanted` are wanted; pad files are never fetched
/// for themselves, whatever their flag.
fn layout_wanted(info: &Info, wanted: &[bool]) -> Vec<bool> {
    let mut layout = vec![true; info.files.len()];
    for (user, (index, _)) in info.real_files().enumerate() {
        if let Some(flag) = layout.get_mut(index) {
            *flag = wanted.get(user).copied().unwrap_or(true);
        }
    }
    layout
}

/// Each real file (pad files left out, numbered from 0 in that order: the index every API
/// shows) with the bytes of it inside verified pieces. `wanted` is by layout index.
fn file_views(info: &Info, have: Option<&Bitfield>, wanted: Option<&[bool]>) -> Vec<FileView> {
    let piece_length = u64::from(info.piece_length.max(1));
    info.real_files()
        .enumerate()
        .map(|(user, (index, f))| {
            let mut done = 0u64;
            if let (Some(have), true) = (have, f.length > 0) {
                let (start, end) = (f.offset, f.offset + f.length);
                let (first, last) = (start / piece_length, (end - 1) / piece_length);
                for piece in first..=last {
                    if u32::try_from(piece).is_ok_and(|p| have.get(p)) {
                        let p_start = piece * piece_length;
                        let p_end = p_start + piece_length;
                        done += end.min(p_end) - start.max(p_start);
                    }
                }
            }
            FileView {
                index: user,
                path: f.path.join("/"),
                length: f.length,
                done_bytes: done,
                wanted: wanted.and_then(|w| w.get(index).copied()).unwrap_or(true),
            }
        })
        .collect()
}

/// One run of a torrent, in its own task: its metadata first if need be, then the engine.
struct Job {
    daemon: Daemon,
    id: TorrentId,
    info_hash: InfoHash,
    meta: Option<Meta>,
    trackers: Vec<Vec<String>>,
    peers: Vec<SocketAddr>,
    output_dir: PathBuf,
    wanted_files: Option<Vec<bool>>,
    recheck: bool,
    stop: watch::Receiver<bool>,
    progress: watch::Sender<Progress>,
    incoming: mpsc::Receiver<(PeerStream, Handshake)>,
    limits: RateLimits,
    window: watch::Receiver<Option<std::ops::Range<u32>>>,
    /// The session it rested with, to go on with.
    resumed: Option<Dormant>,
}

/// Waits until `rx` says stop.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Job {
    async fn run(mut self) {
        let (daemon, id) = (self.daemon.clone(), self.id);
        match self.drive().await {
            Ok(HostedEnd::Dormant { dormant, incoming }) => {
                daemon.on_dormant(id, dormant, incoming)
            }
            Ok(HostedEnd::Ended(outcome)) => daemon.on_ended(id, Ok(outcome)),
            Err(e) => daemon.on_ended(id, Err(e)),
        }
    }

    /// What the engine needs to run (or rest) this torrent with its metadata `meta`.
    fn params(
        &mut self,
        meta: Meta,
        fetched_layers: Option<oneshot::Sender<BTreeMap<usize, PieceLayer>>>,
    ) -> TorrentParams {
        let inner = &self.daemon.0;
        let (_, closed) = mpsc::channel(1);
        TorrentParams {
            info: meta.info.clone(),
            info_bytes: Some(meta.info_bytes.clone()),
            web_seeds: meta.web_seeds.clone(),
            files: None,
            piece_layers: meta.piece_layers.clone(),
            info_hash: self.info_hash,
            trackers: self.trackers.clone(),
            peers: self.peers.clone(),
            target: Target::Files(self.output_dir.join(&meta.info.name)),
            peer_id: inner.peer_id,
            listener: None,
            port: inner.port,
            max_peers: inner.config.max_peers_per_torrent,
            config: Default::default(),
            seed: Some(SeedLimits::default()),
            assume_complete: false,
            recheck: self.recheck,
            progress: Some(self.progress.clone()),
            shutdown: Some(self.stop.clone()),
            dht: inner.dht.clone(),
            private: meta.info.private,
            pex: true,
            transports: inner.transports.clone(),
            hosted: Some(Hosted {
                incoming: std::mem::replace(&mut self.incoming, closed),
                connection_slots: inner.slots.clone(),
                resume_file: inner.store.resume_path(&self.info_hash),
                save_every: inner.config.save_every,
                wanted_files: self.wanted_files.clone(),
                limits: self.limits.clone(),
                window: self.window.clone(),
                resumed: self.resumed.take(),
                fetched_layers,
            }),
        }
    }

    async fn drive(&mut self) -> Result<HostedEnd, String> {
        let inner = self.daemon.0.clone();
        let meta = match self.meta.clone() {
            Some(meta) => meta,
            None => {
                let fetch = fetch_metadata(Sources {
                    info_hash: self.info_hash,
                    trackers: &self.trackers,
                    peers: &self.peers,
                    peer_id: inner.peer_id,
                    dht: inner.dht.clone(),
                    transports: inner.transports.clone(),
                });
                let fetched = tokio::select! {
                    fetched = fetch => fetched,
                    () = stopped(&mut self.stop) => {
                        return Ok(HostedEnd::Ended(Outcome::Interrupted));
                    }
                };
                let (info, info_bytes) = fetched.map_err(|e| error_chain(&e))?;
                let meta = Meta {
                    info: Arc::new(info),
                    info_bytes: info_bytes.into(),
                    web_seeds: Vec::new(),
                    piece_layers: BTreeMap::new(),
                };
                let torrent = store::metainfo_bytes(&self.trackers, &meta);
                self.daemon.on_metadata(self.id, &meta, &torrent);
                meta
            }
        };
        let (layers_tx, mut fetched_layers) = oneshot::channel();
        let params = self.params(meta, Some(layers_tx));
        let mut watch = self.progress.subscribe();
        watch.mark_unchanged();
        let run = run_hosted(params);
        tokio::pin!(run);
        let mut reported: Option<bool> = None;
        let mut layers_kept = false;
        loop {
            tokio::select! {
                result = &mut run => return result.map_err(|e| error_chain(&e)),
                layers = &mut fetched_layers, if !layers_kept => {
                    layers_kept = true;
                    if let Ok(layers) = layers {
                        self.daemon.on_layers(self.id, layers);
                    }
                }
                changed = watch.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let seeding = watch.borrow_and_update().seeding;
                    if reported != Some(seeding) {
                        reported = Some(seeding);
                        self.daemon.on_complete(self.id, seeding);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitrush_core::testing::info_with;

    #[test]
    fn equal_values_are_shared() {
        let mut seen = HashSet::new();
        let list = |url: &str| Arc::new(vec![vec![url.to_string()]]);
        let a = shared(&mut seen, list("http://a/announce"));
        let b = shared(&mut seen, list("http://b/announce"));
        let a2 = shared(&mut seen, list("http://a/announce"));
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b, list("http://b/announce"));
    }

    #[test]
    fn download_dirs_must_be_absolute_without_parent_steps() {
        assert!(check_download_dir(Path::new("/srv/torrents")).is_ok());
        for bad in ["relative", "../x", "/srv/../etc", "/srv/a/.."] {
            assert!(check_download_dir(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn wanted_files_want_the_pieces_they_overlap() {
        // Files of 10, 6 and 16 bytes in pieces of 8: [0..10) [10..16) [16..32).
        let info = info_with(&[10, 6, 16], 8);
        let set = |files: &[bool]| -> Vec<u32> { wanted_pieces(&info, files).iter_set().collect() };
        assert_eq!(set(&[true, false, false]), vec![0, 1]);
        assert_eq!(set(&[false, true, false]), vec![1]);
        assert_eq!(set(&[false, false, true]), vec![2, 3]);
        assert_eq!(
            set(&[false, false]),
            vec![2, 3],
            "files past the list are wanted"
        );
        assert_eq!(set(&[false, false, false]), Vec::<u32>::new());
    }

    #[test]
    fn files_and_progress_from_verified_pieces() {
        let info = info_with(&[10, 6, 16], 8);
        let mut have = Bitfield::new(4);
        have.set(1);
        have.set(3);
        let files = file_views(&info, Some(&have), Some(&[true, true, false]));
        let done: Vec<u64> = files.iter().map(|f| f.done_bytes).collect();
        // Piece 1 is [8..16): 2 bytes of f0, all 6 of f1; piece 3 is the last 8 of f2.
        assert_eq!(done, vec![2, 6, 8]);
        assert_eq!(
            files.iter().map(|f| f.wanted).collect::<Vec<_>>(),
            vec![true, true, false]
        );
        let p = progress_from_have(&info, &have, Some(&[true, true, false]));
        assert_eq!((p.done_bytes, p.total_bytes), (8, 16));
        assert!(!p.seeding);
        let all = progress_from_have(&info, &Bitfield::full(4), None);
        assert!(all.seeding && all.done_bytes == 32);
    }

    #[tokio::test]
    async fn a_torrent_added_again_while_its_removal_ends_stays_added() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let torrent = testing::torrent(&[("a.bin", 100_000, false)], 16384);
        let hash = Metainfo::from_bytes(&torrent)
            .unwrap()
            .info_hash
            .to_string();
        let id = testing::add(&daemon, torrent.clone(), false).await;
        assert!(daemon
            .get(id)
            .is_some_and(|t| t.state == TorrentStatus::Downloading));
        let removing = tokio::spawn({
            let daemon = daemon.clone();
            async move { daemon.remove(id, false).await }
        });
        // Gone from the list while its run still ends: added again at once.
        while daemon.get(id).is_some() {
            tokio::task::yield_now().await;
        }
        let again = testing::add(&daemon, torrent, false).await;
        assert!(removing.await.unwrap());
        assert!(daemon.get(again).is_some());
        daemon.shutdown().await;
        assert_eq!(testing::restarted(dir.path()).await, vec![(hash, true)]);
    }

    #[tokio::test]
    async fn a_removed_torrent_stays_removed_while_saves_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let config = DaemonConfig {
            save_every: Duration::from_millis(1),
            ..testing::config(dir.path())
        };
        let daemon = Daemon::start(config).await.unwrap();
        let mut torrents = Vec::new();
        for n in 0..8u64 {
            let bytes =
                testing::torrent_named(&format!("t{n}"), &[("a.bin", 20_000, false)], 16384);
            torrents.push(testing::add(&daemon, bytes, false).await);
        }
        // Paused, resumed and removed while the periodic saves run.
        for (n, &id) in torrents.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(3)).await;
            if n % 2 == 0 {
                assert!(daemon.pause(id) && daemon.resume(id));
            } else {
                assert!(daemon.remove(id, false).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let kept: Vec<(String, bool)> = (daemon.list().into_iter())
            .map(|t| (t.info_hash, true))
            .collect();
        assert_eq!(kept.len(), 4);
        daemon.shutdown().await;
        let mut found = testing::restarted(dir.path()).await;
        found.sort();
        let mut kept = kept;
        kept.sort();
        assert_eq!(found, kept);
    }

    #[tokio::test]
    async fn session_stats_add_up_the_torrents_views() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        for n in 0..5u64 {
            let bytes =
                testing::torrent_named(&format!("t{n}"), &[("a.bin", 40_000, false)], 16384);
            if n % 2 == 0 {
                testing::add_paused(&daemon, bytes).await;
            } else {
                testing::add(&daemon, bytes, false).await;
            }
        }
        let (list, stats) = (daemon.list(), daemon.stats());
        let count = |f: fn(&TorrentStatus) -> bool| list.iter().filter(|t| f(&t.state)).count();
        assert_eq!(stats.torrents, 5);
        assert_eq!(count(|s| *s == TorrentStatus::Paused), 3);
        assert_eq!(
            stats.paused,
            count(|s| matches!(s, TorrentStatus::Paused | TorrentStatus::Failed))
        );
        assert_eq!(
            stats.downloading,
            count(|s| matches!(
                s,
                TorrentStatus::Downloading | TorrentStatus::FetchingMetadata
            ))
        );
        assert_eq!(stats.seeding, count(|s| *s == TorrentStatus::Seeding));
        let sum = |f: fn(&TorrentView) -> u64| list.iter().map(f).sum::<u64>();
        assert_eq!(stats.downloaded_bytes, sum(|t| t.downloaded_ever));
        assert_eq!(stats.uploaded_bytes, sum(|t| t.uploaded_ever));
        assert_eq!(stats.pieces_have, sum(|t| u64::from(t.pieces_have)));
        daemon.shutdown().await;
    }

    #[tokio::test]
    async fn torrents_are_found_by_info_hash_through_adds_removals_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let torrents: Vec<Vec<u8>> = (0..3)
            .map(|n| testing::torrent_named(&format!("t{n}"), &[("a", 100, false)], 16384))
            .collect();
        let hash = |t: &[u8]| Metainfo::from_bytes(t).unwrap().info_hash;
        let mut ids = Vec::new();
        for t in &torrents {
            ids.push(testing::add_paused(&daemon, t.clone()).await);
        }
        for (t, &id) in torrents.iter().zip(&ids) {
            assert_eq!(daemon.find(&hash(t)), Some(id));
        }
        let again = daemon.add(AddRequest {
            source: AddSource::Torrent(torrents[1].clone()),
            download_dir: None,
            paused: true,
        });
        assert!(matches!(again.await, Err(AddError::Duplicate(id)) if id == ids[1]));
        assert!(daemon.remove(ids[1], false).await);
        assert_eq!(daemon.find(&hash(&torrents[1])), None);
        let readded = testing::add_paused(&daemon, torrents[1].clone()).await;
        assert_eq!(daemon.find(&hash(&torrents[1])), Some(readded));
        assert!(readded > ids[2], "ids are never reused");
        daemon.shutdown().await;
        // A second settings file naming a torrent already loaded is skipped.
        let json = dir
            .path()
            .join(format!("state/torrents/{}.json", hash(&torrents[0])));
        let mut copy: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        copy["id"] = serde_json::json!(u64::MAX);
        std::fs::write(
            dir.path().join("state/torrents/copy.json"),
            copy.to_string(),
        )
        .unwrap();
        let daemon = testing::start(dir.path()).await;
        assert_eq!(daemon.list().len(), 3);
        assert_eq!(daemon.find(&hash(&torrents[0])), Some(ids[0]));
        assert_eq!(daemon.find(&hash(&torrents[1])), Some(readded));
        daemon.shutdown().await;
    }

    #[tokio::test]
    async fn a_selection_of_many_thousand_files_loads_back() {
        const FILES: usize = 150_000;
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let names: Vec<String> = (0..FILES).map(|n| format!("f{n}")).collect();
        let files: Vec<(&str, u64, bool)> = names.iter().map(|n| (n.as_str(), 1, false)).collect();
        let id = testing::add_paused(&daemon, testing::torrent(&files, 16384)).await;
        let wanted: Vec<bool> = (0..FILES).map(|n| n % 3 != 0).collect();
        daemon.set_wanted_files(id, Some(wanted.clone())).unwrap();
        daemon.shutdown().await;
        let daemon = testing::start(dir.path()).await;
        let shown = daemon.files(id).expect("the torrent is back");
        assert_eq!(shown.iter().map(|f| f.wanted).collect::<Vec<_>>(), wanted);
        daemon.shutdown().await;
    }

    #[tokio::test]
    async fn an_add_whose_caller_goes_away_still_completes() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let torrent = testing::torrent(&[("a", 100, false)], 16384);
        let hash = Metainfo::from_bytes(&torrent).unwrap().info_hash;
        // Polled once (the torrent is reserved and its files queued), then dropped, as axum
        // drops a handler whose client hung up.
        let add = daemon.add(AddRequest {
            source: AddSource::Torrent(torrent),
            download_dir: None,
            paused: true,
        });
        let _ = tokio::time::timeout(Duration::ZERO, add).await;
        let id = daemon.find(&hash).expect("reserved or added");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while daemon.get(id).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the add never completed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        daemon.shutdown().await;
        assert_eq!(
            testing::restarted(dir.path()).await,
            vec![(hash.to_string(), true)]
        );
    }

    #[tokio::test]
    async fn file_indices_leave_pad_files_out_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let torrent = testing::padded_torrent();
        let id = testing::add_paused(&daemon, torrent).await;
        let files = daemon.files(id).unwrap();
        let shown: Vec<(usize, &str)> = files.iter().map(|f| (f.index, f.path.as_str())).collect();
        assert_eq!(shown, vec![(0, "a.bin"), (1, "b.bin"), (2, "c.bin")]);
        // Skipping the user's second file skips b, not the pad file.
        daemon
            .set_wanted_files(id, Some(vec![true, false, true]))
            .unwrap();
        let wanted: Vec<bool> = daemon.files(id).unwrap().iter().map(|f| f.wanted).collect();
        assert_eq!(wanted, vec![true, false, true]);
        assert_eq!(daemon.get(id).unwrap().size_when_done, 32, "pieces 0 and 3");
        // A list that stops early leaves the files after it wanted.
        daemon.set_wanted_files(id, Some(vec![false])).unwrap();
        // No more flags than files.
        assert!(matches!(
            daemon.set_wanted_files(id, Some(vec![true; 4])),
            Err(WantedError::TooMany { given: 4, files: 3 })
        ));
        let wanted: Vec<bool> = daemon.files(id).unwrap().iter().map(|f| f.wanted).collect();
        assert_eq!(wanted, vec![false, true, true]);
        assert_eq!(daemon.get(id).unwrap().size_when_done, 48, "pieces 1 to 3");
        // Streams name files the same way.
        let source = daemon.stream_source(id, 1).unwrap();
        assert_eq!((source.offset, source.length), (16, 32));
        assert_eq!(daemon.stream_source(id, 2).unwrap().offset, 48);
        assert!(daemon.stream_source(id, 3).is_none());
        daemon.shutdown().await;
    }
}
