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
//! (once the metadata is known), its settings (`.json`) and its resume state (`.resume`), each
//! written atomically (temporary file, fsync, rename); settings on every change and
//! periodically, so a restart after a clean stop or `kill -9` brings every torrent back.
//!
//! Rate limits: one pair of global buckets shared by every connection (through
//! [`Transports::limits`]) and one pair per torrent ([`Hosted::limits`](crate::engine::Hosted));
//! both may change while torrents run. HTTP streams ([`stream`]) read verified pieces from
//! disk and move their torrent's priority window (the latest reader's wins; it is lifted when
//! that reader goes).
//!
//! Invariants: the state lock is never held across an await; a torrent's next run starts only
//! once its previous run ended (so two runs never share files); a removed torrent's files are
//! deleted only after its run ended; a torrent runs or rests, never both; an incoming
//! connection for a torrent whose run is going to rest is kept and starts the next run.

pub mod api;
mod rpc;
pub mod store;
mod stream;
mod webui;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::engine::connection::{self, PeerStream, Transports};
use crate::engine::dht::{DhtHandle, DhtOptions};
use crate::engine::dormant::DormantSeeds;
use crate::engine::limits::RateLimits;
use crate::engine::metadata::fetch_metadata;
use crate::engine::torrent::wanted_pieces;
use crate::engine::udp::{self, UdpOptions};
use crate::engine::{
    error_chain, new_peer_id, run_hosted, Dormant, Hosted, HostedEnd, Outcome, Progress,
    SeedLimits, Target, TorrentParams,
};
use crate::metainfo::{Info, Magnet, Metainfo};
use crate::mse::Encryption;
use crate::queue::{QueueEvent, QueueLimits, QueueState, TorrentId, TorrentQueue};
use crate::session::Finish;
use crate::swarm::Bitfield;
use crate::types::{InfoHash, PeerId};
use crate::wire::Handshake;

use store::{Saved, SessionSettings, Store};

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
    #[error("BitTorrent v2-only torrents cannot be downloaded yet")]
    V2Only,
    #[error("the download directory must be an absolute path without `..`: {0}")]
    DownloadDir(String),
    #[error("the daemon is full")]
    Full(#[source] crate::queue::QueueError),
    #[error("cannot save the torrent in the state directory")]
    Store(#[source] std::io::Error),
    #[error("the daemon is shutting down")]
    ShuttingDown,
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
    info_hash: InfoHash,
    meta: Option<Meta>,
    trackers: Vec<Vec<String>>,
    peers: Vec<SocketAddr>,
    run: Option<Run>,
    /// The torrent rests: its session is in the daemon's dormant seeds (never with `run`).
    resting: Option<Resting>,
    /// Connections that came while its run was going to rest, for the next run (at most
    /// [`ROUTE_QUEUE`]).
    waiting: Vec<(PeerStream, Handshake)>,
    /// The last snapshot of a run (or what the resume state says, before any).
    last: Progress,
    /// Hash everything on the next start.
    recheck: bool,
    error: Option<String>,
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
        info_hash: InfoHash,
        meta: Option<Meta>,
        trackers: Vec<Vec<String>>,
        peers: Vec<SocketAddr>,
        last: Progress,
    ) -> Entry {
        Entry {
            saved,
            info_hash,
            meta,
            trackers,
            peers,
            run: None,
            resting: None,
            waiting: Vec::new(),
            last,
            recheck: false,
            error: None,
            limits: None,
            window: None,
            window_reader: 0,
        }
    }

    /// The torrent's own rate limits.
    fn limits(&mut self) -> &RateLimits {
        let (download, upload) = (self.saved.download_limit, self.saved.upload_limit);
        (self.limits).get_or_insert_with(|| RateLimits::adjustable(download, upload))
    }

    /// The priority window's channel.
    fn window(&mut self) -> &watch::Sender<Option<std::ops::Range<u32>>> {
        self.window.get_or_insert_with(|| watch::channel(None).0)
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
    /// Where the listener sends each running or resting torrent's incoming connections.
    routes: HashMap<InfoHash, Route>,
    next_id: TorrentId,
    shutting_down: bool,
}

struct Inner {
    config: DaemonConfig,
    store: Store,
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

/// A download directory given over the API: absolute, and no `..` anywhere.
pub fn check_download_dir(dir: &Path) -> Result<(), AddError> {
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
        let store = Store::open(&config.state_dir).map_err(|source| StartError::StateDir {
            path: config.state_dir.display().to_string(),
            source,
        })?;
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
        let mut settings = store.load_session();
        if let Some(rate) = config.max_download_rate {
            settings.download_limit = Some(rate);
        }
        if let Some(rate) = config.max_upload_rate {
            settings.upload_limit = Some(rate);
        }
        if config.max_download_rate.is_some() || config.max_upload_rate.is_some() {
            if let Err(e) = store.save_session(&settings) {
                tracing::warn!(error = %e, "cannot save the rate limits");
            }
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
                routes: HashMap::new(),
                next_id: 1,
                shutting_down: false,
            }),
            store,
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
        daemon.load();
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
    fn load(&self) {
        let saved = self.0.store.load_all();
        let mut st = self.state();
        for (saved, metainfo, resume) in saved {
            let info_hash = match crate::types::from_hex20(&saved.info_hash).map(InfoHash) {
                Some(h) => h,
                None => continue,
            };
            let (meta, trackers, peers) = match (metainfo, &saved.magnet) {
                (Some(m), _) => {
                    let tiers = m.tracker_tiers();
                    // Moved, not copied: what a thousand torrents keep is allocated once.
                    let meta = Meta {
                        info: Arc::new(m.info),
                        info_bytes: m.info_bytes.into(),
                        web_seeds: m.web_seeds,
                    };
                    (Some(meta), tiers, Vec::new())
                }
                (None, Some(link)) => match Magnet::parse(link) {
                    Ok(m) => (None, magnet_tiers(&m), m.peers),
                    Err(_) => continue,
                },
                (None, None) => continue,
            };
            if st.torrents.values().any(|e| e.info_hash == info_hash) {
                continue;
            }
            let id = saved.id;
            let last = match (&meta, resume) {
                (Some(meta), Some(have)) => {
                    progress_from_have(&meta.info, &have, saved.wanted_files.as_deref())
                }
                _ => Progress::default(),
            };
            let complete = meta.is_some() && last.total_bytes > 0 && last.seeding;
            if st.queue.add(id, complete, saved.paused).is_err() {
                continue;
            }
            st.next_id = st.next_id.max(id + 1);
            st.torrents.insert(
                id,
                Box::new(Entry::new(saved, info_hash, meta, trackers, peers, last)),
            );
        }
        tracing::info!(torrents = st.torrents.len(), "loaded saved torrents");
        self.apply_queue(&mut st);
    }

    /// Adds a torrent; returns its id.
    pub fn add(&self, req: AddRequest) -> Result<TorrentId, AddError> {
        let download_dir = match req.download_dir {
            Some(dir) => {
                check_download_dir(&dir)?;
                dir
            }
            None => self.0.config.download_dir.clone(),
        };
        let (info_hash, meta, trackers, peers, magnet, name, torrent_bytes) = match req.source {
            AddSource::Torrent(bytes) => {
                let m = Metainfo::from_bytes(&bytes).map_err(AddError::Torrent)?;
                if !m.info.version.has_v1() {
                    return Err(AddError::V2Only);
                }
                let meta = Meta {
                    info: Arc::new(m.info.clone()),
                    info_bytes: m.info_bytes.clone().into(),
                    web_seeds: m.web_seeds.clone(),
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
        let mut st = self.state();
        if st.shutting_down {
            return Err(AddError::ShuttingDown);
        }
        if let Some((&id, _)) = st.torrents.iter().find(|(_, e)| e.info_hash == info_hash) {
            return Err(AddError::Duplicate(id));
        }
        let id = st.next_id;
        let saved = Saved {
            id,
            info_hash: info_hash.to_string(),
            name,
            magnet,
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
        if let Some(bytes) = &torrent_bytes {
            self.0
                .store
                .save_torrent(&info_hash, bytes)
                .map_err(AddError::Store)?;
        }
        self.0.store.save(&saved).map_err(AddError::Store)?;
        st.queue
            .add(id, false, req.paused)
            .map_err(AddError::Full)?;
        st.next_id += 1;
        st.torrents.insert(
            id,
            Box::new(Entry::new(
                saved,
                info_hash,
                meta,
                trackers,
                peers,
                Progress::default(),
            )),
        );
        self.apply_queue(&mut st);
        Ok(id)
    }

    /// Carries out the queue's decisions.
    fn apply_queue(&self, st: &mut State) {
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
            && entry.waiting.is_empty()
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
            info_hash: entry.info_hash,
            meta: entry.meta.clone(),
            trackers: entry.trackers.clone(),
            peers: entry.peers.clone(),
            output_dir: entry.saved.download_dir.clone(),
            wanted_files: entry.saved.wanted_files.clone(),
            recheck: std::mem::take(&mut entry.recheck),
            stop: stop_rx,
            progress: progress_tx,
            incoming: route_rx,
            fetching: fetching.clone(),
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
        let info_hash = entry.info_hash;
        if let (true, Some(meta)) = (rest, entry.meta.clone()) {
            // Nothing to do until a peer comes: only the session, to announce.
            let dormant = Dormant::new(&job.params(meta));
            self.0.dormant.insert(id, dormant);
            entry.resting = Some(Resting { stopping: false });
            st.routes.insert(info_hash, (id, None));
            return;
        }
        for waiting in entry.waiting.drain(..) {
            let _ = route_tx.try_send(waiting);
        }
        let task = tokio::spawn(job.run());
        entry.run = Some(Run {
            stop: stop_tx,
            progress: progress_rx,
            task: Some(task),
            stopping: false,
            fetching,
        });
        st.routes.insert(info_hash, (id, Some(route_tx)));
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
        let Some(run) = entry.run.take() else {
            return;
        };
        self.0
            .runs_ended
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let last = run.progress.borrow().clone();
        fold_run(entry, last);
        while let Ok(waiting) = incoming.try_recv() {
            if entry.waiting.len() < ROUTE_QUEUE {
                entry.waiting.push(waiting);
            }
        }
        let _ = self.0.store.save(&entry.saved);
        if entry.window.as_ref().is_some_and(|w| w.borrow().is_none()) {
            entry.window = None;
        }
        entry.limits = None;
        self.0.dormant.insert(id, *dormant);
        entry.resting = Some(Resting { stopping: false });
        let info_hash = entry.info_hash;
        st.routes.insert(info_hash, (id, None));
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        if run.stopping || shutting_down {
            self.stop_activity(id, entry);
        } else if !entry.waiting.is_empty() {
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
        let info_hash = entry.info_hash;
        if st
            .routes
            .get(&info_hash)
            .is_some_and(|(owner, _)| *owner == id)
        {
            st.routes.remove(&info_hash);
        }
        if st.shutting_down {
            return;
        }
        if !resting.stopping {
            // It ended by itself (its seeding limits).
            st.queue
                .handle_stopped(id, matches!(finish, Finish::GaveUp(_)));
        } else if matches!(
            st.queue.state(id),
            Some(QueueState::Downloading | QueueState::Seeding)
        ) {
            self.start_run(&mut st, id);
        }
        self.apply_queue(&mut st);
        if let Some(entry) = st.torrents.get_mut(&id) {
            if entry.run.is_none() && entry.resting.is_none() {
                entry.waiting.clear();
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
        entry.saved.name = meta.info.name.clone();
        if let Err(e) = self.0.store.save_torrent(&entry.info_hash, metainfo_bytes) {
            tracing::warn!(error = %e, "cannot save the fetched metadata");
        }
        let _ = self.0.store.save(&entry.saved);
    }

    /// A run reports whether the wanted data is complete.
    fn on_complete(&self, id: TorrentId, complete: bool) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        if complete && entry.saved.done_date == 0 {
            entry.saved.done_date = unix_now();
            let _ = self.0.store.save(&entry.saved);
        }
        st.queue.handle_complete(id, complete);
        self.apply_queue(&mut st);
    }

    /// A run ended: fold in its counters, and start the next run if the queue still wants it
    /// running (a recheck or new file selection restarts it this way).
    fn on_ended(&self, id: TorrentId, result: Result<Outcome, String>) {
        let mut st = self.state();
        let Some(entry) = st.torrents.get_mut(&id) else {
            return;
        };
        let Some(run) = entry.run.take() else {
            return;
        };
        self.0
            .runs_ended
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let last = run.progress.borrow().clone();
        fold_run(entry, last);
        let info_hash = entry.info_hash;
        let stopping = run.stopping;
        if let Err(e) = &result {
            tracing::warn!(torrent = %entry.saved.name, error = %e, "torrent stopped");
            entry.error = Some(e.clone());
        }
        let _ = self.0.store.save(&entry.saved);
        if st
            .routes
            .get(&info_hash)
            .is_some_and(|(owner, _)| *owner == id)
        {
            st.routes.remove(&info_hash);
        }
        if st.shutting_down {
            return;
        }
        if !stopping {
            st.queue.handle_stopped(id, result.is_err());
        } else if matches!(
            st.queue.state(id),
            Some(QueueState::Downloading | QueueState::Seeding)
        ) {
            self.start_run(&mut st, id);
        }
        self.apply_queue(&mut st);
        if let Some(entry) = st.torrents.get_mut(&id) {
            if entry.run.is_none() && entry.resting.is_none() {
                // Connections for a torrent that does not run are closed.
                entry.waiting.clear();
            }
            let _ = self.0.store.save(&entry.saved);
        }
    }

    /// Routes an incoming connection to its torrent once its handshake is read; at most
    /// [`MAX_HANDSHAKING`] at once (the others are closed).
    fn route(&self, stream: crate::engine::transport::BoxStream, addr: SocketAddr) {
        let Ok(permit) = self.0.handshaking.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "too many incoming handshakes; closing");
            return;
        };
        let known: Vec<InfoHash> = self.state().routes.keys().copied().collect();
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
        let Some((id, tx)) = st.routes.get(&theirs.info_hash).cloned() else {
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
        if entry.waiting.len() < ROUTE_QUEUE {
            entry.waiting.push(waiting);
        }
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
            let saved: Vec<Saved> = {
                let st = self.state();
                written.retain(|id, _| st.torrents.contains_key(id));
                st.torrents
                    .iter()
                    .filter_map(|(id, e)| {
                        let run = e.run.as_ref()?;
                        let p = run.progress.borrow();
                        let mut saved = e.saved.clone();
                        saved.uploaded += p.uploaded_bytes;
                        saved.downloaded += p.received_bytes;
                        let counters = (saved.uploaded, saved.downloaded);
                        (written.insert(*id, counters) != Some(counters)).then_some(saved)
                    })
                    .collect()
            };
            for s in saved {
                if let Err(e) = self.0.store.save(&s) {
                    tracing::warn!(error = %e, "cannot save torrent settings");
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
            let _ = self.0.store.save(&e.saved);
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
        let _ = self.0.store.save(&e.saved);
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

    /// Chooses the files to fetch (by index; `None`: all). A running torrent restarts with
    /// the new choice.
    pub fn set_wanted_files(&self, id: TorrentId, wanted: Option<Vec<bool>>) -> bool {
        let mut st = self.state();
        let Some(e) = st.torrents.get_mut(&id) else {
            return false;
        };
        e.saved.wanted_files = wanted;
        let _ = self.0.store.save(&e.saved);
        // It may not be complete any more: it will not rest before a run says so.
        e.last.seeding = false;
        self.stop_activity(id, e);
        // Whether it is complete now is known once it runs again.
        st.queue.handle_complete(id, false);
        self.apply_queue(&mut st);
        true
    }

    /// Removes a torrent, and its data if asked, once its run (if any) ended.
    pub async fn remove(&self, id: TorrentId, delete_data: bool) -> bool {
        let (entry, task) = {
            let mut st = self.state();
            let Some(mut entry) = st.torrents.remove(&id) else {
                return false;
            };
            st.queue.remove(id);
            if st
                .routes
                .get(&entry.info_hash)
                .is_some_and(|(owner, _)| *owner == id)
            {
                st.routes.remove(&entry.info_hash);
            }
            self.stop_activity(id, &mut entry);
            let task = entry.run.as_mut().and_then(|run| run.task.take());
            self.apply_queue(&mut st);
            (entry, task)
        };
        if let Some(task) = task {
            let _ = task.await;
        }
        self.0.store.remove(&entry.info_hash);
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
        true
    }

    /// Stops every torrent (each saves its resume state), saves every setting and stops the
    /// DHT.
    pub async fn shutdown(&self) {
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
        let saved: Vec<Saved> = self
            .state()
            .torrents
            .values()
            .map(|e| e.saved.clone())
            .collect();
        for s in saved {
            let _ = self.0.store.save(&s);
        }
        if let Some(dht) = &self.0.dht {
            dht.shutdown().await;
        }
    }

    /// Every torrent, in queue order.
    pub fn list(&self) -> Vec<TorrentView> {
        let st = self.state();
        st.queue
            .ids()
            .into_iter()
            .filter_map(|id| view(&st, id))
            .collect()
    }

    /// One torrent.
    pub fn get(&self, id: TorrentId) -> Option<TorrentView> {
        view(&self.state(), id)
    }

    /// The id of the torrent with this info hash.
    pub fn find(&self, info_hash: &InfoHash) -> Option<TorrentId> {
        let st = self.state();
        st.torrents
            .iter()
            .find(|(_, e)| e.info_hash == *info_hash)
            .map(|(&id, _)| id)
    }

    /// A torrent's files with their progress.
    pub fn files(&self, id: TorrentId) -> Option<Vec<FileView>> {
        let st = self.state();
        let entry = st.torrents.get(&id)?;
        let (progress, _) = current(entry);
        let Some(meta) = &entry.meta else {
            return Some(Vec::new());
        };
        let wanted = entry.saved.wanted_files.as_deref();
        Some(file_views(&meta.info, progress.have.as_deref(), wanted))
    }

    /// A torrent's connected peers.
    pub fn peers(&self, id: TorrentId) -> Option<Vec<PeerView>> {
        let st = self.state();
        let entry = st.torrents.get(&id)?;
        let (progress, _) = current(entry);
        Some(
            progress
                .connected
                .iter()
                .map(|p| PeerView {
                    address: p.addr.ip().to_string(),
                    port: p.addr.port(),
                    outgoing: p.outgoing,
                })
                .collect(),
        )
    }

    /// A torrent's trackers (tier, URL).
    pub fn trackers(&self, id: TorrentId) -> Option<Vec<(usize, String)>> {
        let st = self.state();
        let entry = st.torrents.get(&id)?;
        Some(
            entry
                .trackers
                .iter()
                .enumerate()
                .flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u.clone())))
                .collect(),
        )
    }

    /// Totals across torrents.
    pub fn stats(&self) -> SessionStats {
        let list = self.list();
        let mut stats = SessionStats {
            torrents: list.len(),
            ..SessionStats::default()
        };
        for t in &list {
            match t.state {
                TorrentStatus::Downloading | TorrentStatus::FetchingMetadata => {
                    stats.downloading += 1
                }
                TorrentStatus::Seeding => stats.seeding += 1,
                TorrentStatus::Paused | TorrentStatus::Failed => stats.paused += 1,
                TorrentStatus::QueuedDownload | TorrentStatus::QueuedSeed => stats.queued += 1,
            }
            stats.download_rate += t.rate_download;
            stats.upload_rate += t.rate_upload;
            stats.downloaded_bytes += t.downloaded_ever;
            stats.uploaded_bytes += t.uploaded_ever;
            stats.peers += t.peers;
            stats.pieces_have += u64::from(t.pieces_have);
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
    pub fn set_speed_limits(&self, limits: SpeedLimits) -> std::io::Result<()> {
        self.0.rate_limits.set(limits.download, limits.upload);
        self.0.store.save_session(&SessionSettings {
            download_limit: limits.download,
            upload_limit: limits.upload,
        })
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
        if let Some(l) = &e.limits {
            l.set(limits.download, limits.upload);
        }
        if let Err(e) = self.0.store.save(&e.saved) {
            tracing::warn!(error = %e, "cannot save torrent settings");
        }
        true
    }

    /// A torrent's file to stream: its metadata, where its data lives, and the file's place
    /// (`None`: no such torrent or file, or the metadata is not known yet).
    fn stream_source(&self, id: TorrentId, index: usize) -> Option<stream::Source> {
        let st = self.state();
        let e = st.torrents.get(&id)?;
        let meta = e.meta.as_ref()?;
        let file = meta.info.files.get(index)?;
        if file.attr.pad {
            return None;
        }
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
        e.window_reader = reader;
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
        if e.window_reader != reader {
            return;
        }
        if let Some(w) = &e.window {
            w.send_if_modified(|w| w.take().is_some());
        }
    }
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

fn view(st: &State, id: TorrentId) -> Option<TorrentView> {
    let entry = st.torrents.get(&id)?;
    let (p, fetching) = current(entry);
    let status = match st.queue.state(id)? {
        QueueState::Paused => TorrentStatus::Paused,
        QueueState::Failed => TorrentStatus::Failed,
        QueueState::QueuedDownload => TorrentStatus::QueuedDownload,
        QueueState::QueuedSeed => TorrentStatus::QueuedSeed,
        QueueState::Downloading if fetching => TorrentStatus::FetchingMetadata,
        QueueState::Downloading => TorrentStatus::Downloading,
        QueueState::Seeding => TorrentStatus::Seeding,
    };
    let (total_size, piece_count, private) = entry.meta.as_ref().map_or((0, 0, false), |m| {
        (
            m.info.content_length(),
            m.info.piece_count(),
            m.info.private,
        )
    });
    let size_when_done = if p.total_bytes > 0 {
        p.total_bytes
    } else {
        entry.meta.as_ref().map_or(0, |m| {
            let wanted = wanted_for(&m.info, entry.saved.wanted_files.as_deref());
            wanted
                .iter_set()
                .map(|i| u64::from(m.info.piece_len(i)))
                .sum()
        })
    };
    let left = size_when_done.saturating_sub(p.done_bytes);
    let downloaded_ever = entry.saved.downloaded + p.received_bytes;
    let uploaded_ever = entry.saved.uploaded + p.uploaded_bytes;
    let rate = p.rate.max(0.0) as u64;
    Some(TorrentView {
        id,
        info_hash: entry.info_hash.to_string(),
        name: entry.saved.name.clone(),
        state: status,
        download_dir: entry.saved.download_dir.clone(),
        total_size,
        size_when_done,
        done_bytes: p.done_bytes,
        left_until_done: left,
        percent_done: if size_when_done == 0 {
            if entry.meta.is_some() {
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
        added_date: entry.saved.added_date,
        done_date: entry.saved.done_date,
        error: entry.error.clone(),
        metadata_known: entry.meta.is_some(),
        private,
    })
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

/// Each real file with the bytes of it inside verified pieces.
fn file_views(info: &Info, have: Option<&Bitfield>, wanted: Option<&[bool]>) -> Vec<FileView> {
    let piece_length = u64::from(info.piece_length.max(1));
    info.real_files()
        .map(|(index, f)| {
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
                index,
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
    fetching: Arc<std::sync::atomic::AtomicBool>,
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
    fn params(&mut self, meta: Meta) -> TorrentParams {
        let inner = &self.daemon.0;
        let (_, closed) = mpsc::channel(1);
        TorrentParams {
            info: meta.info.clone(),
            info_bytes: Some(meta.info_bytes.clone()),
            web_seeds: meta.web_seeds.clone(),
            files: None,
            // v2-only torrents are refused; hybrids are checked with their SHA-1 hashes.
            piece_layers: Default::default(),
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
            }),
        }
    }

    async fn drive(&mut self) -> Result<HostedEnd, String> {
        let inner = self.daemon.0.clone();
        let meta = match self.meta.clone() {
            Some(meta) => meta,
            None => {
                let fetch = fetch_metadata(
                    self.info_hash,
                    &self.trackers,
                    &self.peers,
                    inner.peer_id,
                    inner.dht.clone(),
                    inner.transports.clone(),
                );
                let fetched = tokio::select! {
                    fetched = fetch => fetched,
                    () = stopped(&mut self.stop) => return Ok(HostedEnd::Ended(Outcome::Interrupted)),
                };
                let (info, info_bytes) = fetched.map_err(|e| error_chain(&e))?;
                let meta = Meta {
                    info: Arc::new(info),
                    info_bytes: info_bytes.into(),
                    web_seeds: Vec::new(),
                };
                let torrent = store::metainfo_bytes(&self.trackers, &meta.info_bytes);
                self.daemon.on_metadata(self.id, &meta, &torrent);
                self.fetching
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                meta
            }
        };
        if !meta.info.version.has_v1() {
            return Err(AddError::V2Only.to_string());
        }
        let params = self.params(meta);
        let mut watch = self.progress.subscribe();
        watch.mark_unchanged();
        let run = run_hosted(params);
        tokio::pin!(run);
        let mut reported: Option<bool> = None;
        loop {
            tokio::select! {
                result = &mut run => return result.map_err(|e| error_chain(&e)),
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
}
