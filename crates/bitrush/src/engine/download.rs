//! One torrent's session, from the first announce to the last verified piece, and on as a seed
//! if asked.
//!
//! A single manager task owns the connection set, the listener and the announce schedule. Peer
//! connections run as their own tasks over the shared [`SwarmState`]. Assembled pieces are
//! hashed (and written, if good) by the [`super::hasher`] threads, so SHA-1 and disk never stall
//! a socket. Memory stays bounded by the download's
//! piece-memory budget: pieces waiting for their hash count against it until their verdict comes
//! back. Existing data at the output is vouched for by the resume state an interrupted session
//! left ([`super::resume`]) or else checked piece by piece first, on all cores.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use super::hasher::{self, Verdict};
use super::peer::{self, PeerConnError, Shared, SwarmState};
use super::resume;
use super::sink::Sink;
use crate::disk::{Storage, StorageError};
use crate::metainfo::Info;
use crate::swarm::{Bitfield, Config, Download, PeerKey, BLOCK_LEN};
use crate::tracker::{AnnounceRequest, AnnounceResponse, Event, TrackerError};
use crate::types::{InfoHash, PeerId};

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
}

/// When a seed stops (whichever comes first; neither set: until shutdown).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedLimits {
    /// Uploaded bytes divided by the torrent's size.
    pub ratio: Option<f64>,
    /// Time spent seeding after the download completed.
    pub time: Option<Duration>,
}

/// Everything a session needs.
pub struct DownloadParams {
    pub info: Arc<Info>,
    /// The raw info dictionary, when known, to serve to peers asking for metadata.
    pub info_bytes: Option<Arc<[u8]>>,
    pub info_hash: InfoHash,
    /// BEP 12 tracker tiers (may be empty when `peers` is given).
    pub trackers: Vec<Vec<String>>,
    /// Peers known without a tracker (e.g. a magnet's `x.pe`).
    pub peers: Vec<SocketAddr>,
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
}

/// A snapshot of a running session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Verified bytes of wanted pieces (including those present at start).
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub uploaded_bytes: u64,
    pub peers: usize,
    /// Recent download rate in bytes per second.
    pub rate: f64,
    /// The download is complete and the session is seeding.
    pub seeding: bool,
}

/// How a session ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every wanted piece is verified and on disk.
    Complete,
    /// Stopped by the shutdown signal before completing.
    Interrupted,
}

/// Why a session stopped before finishing.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("piece index {index} is out of range (the torrent has {count} pieces)")]
    PieceOutOfRange { index: u32, count: u32 },
    #[error("{0}")]
    Tracker(TrackerError),
    #[error("no peer could be reached ({0})")]
    NoPeers(String),
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("{0} does not exist: there is nothing to seed")]
    NoData(String),
    #[error("{path} does not match the torrent: {verified} of {total} pieces verified")]
    DataMismatch {
        path: String,
        verified: u32,
        total: u32,
    },
}

/// Runs a session until the target is complete (and seeding is over), or shutdown.
pub async fn download(mut params: DownloadParams) -> Result<Outcome, DownloadError> {
    let info = params.info.clone();
    let piece_count = info.piece_count();
    let (sink, wanted, have) = match &params.target {
        Target::Files(path) => {
            let existed = path.exists();
            let (path, info2) = (path.clone(), info.clone());
            let (info_hash, use_resume) = (params.info_hash, existed && !params.recheck);
            let (storage, vouched) = tokio::task::spawn_blocking(move || {
                let storage = Storage::open(&path, &info2)?;
                let vouched = use_resume
                    .then(|| resume::load(&path, &info_hash, &storage, piece_count))
                    .flatten();
                Ok::<_, StorageError>((storage, vouched))
            })
            .await
            .map_err(|e| DownloadError::Task(e.to_string()))??;
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
            } else if existed {
                recheck(storage.clone(), info.clone()).await?
            } else {
                Bitfield::new(piece_count)
            };
            (storage, Bitfield::full(piece_count), have)
        }
        Target::Existing { path, partial } => {
            if std::fs::symlink_metadata(path).is_err() {
                return Err(DownloadError::NoData(path.display().to_string()));
            }
            let (path2, info2) = (path.clone(), info.clone());
            let storage =
                tokio::task::spawn_blocking(move || Storage::open_existing(&path2, &info2))
                    .await
                    .map_err(|e| DownloadError::Task(e.to_string()))??;
            let storage = Arc::new(Sink::Files(storage));
            let have = if params.assume_complete {
                Bitfield::full(piece_count)
            } else {
                recheck(storage.clone(), info.clone()).await?
            };
            let verified = have.count();
            if verified < piece_count && !(*partial && verified > 0) {
                return Err(DownloadError::DataMismatch {
                    path: path.display().to_string(),
                    verified,
                    total: piece_count,
                });
            }
            // We want exactly what we have: the session never requests a piece, so nothing
            // is ever written.
            (storage, have.clone(), have)
        }
        Target::Piece { index, path } => {
            if *index >= piece_count {
                return Err(DownloadError::PieceOutOfRange {
                    index: *index,
                    count: piece_count,
                });
            }
            let part = part_path(path);
            let file = std::fs::File::create(&part).map_err(|source| StorageError::Io {
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
            (Arc::new(sink), wanted, Bitfield::new(piece_count))
        }
    };
    let total_bytes = wanted
        .iter_set()
        .map(|i| u64::from(info.piece_len(i)))
        .sum::<u64>();
    let mut download = Download::new(
        info.piece_length,
        info.total_length,
        have,
        wanted,
        params.config.clone(),
        rand::random(),
    );
    if let Some(info_bytes) = &params.info_bytes {
        download.set_metadata(info_bytes.clone());
    }
    let (verdict_tx, verdict_rx) = mpsc::unbounded_channel();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let completed_tx = hasher::spawn(info.clone(), sink.clone(), threads, verdict_tx)
        .map_err(|e| DownloadError::Task(format!("cannot start hashing threads: {e}")))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(SwarmState {
            download,
            wakers: HashMap::new(),
        }),
        completed_tx,
        max_message_len: max_message_len(piece_count),
        sink: sink.clone(),
    });
    if let Some(listener) = &params.listener {
        if let Ok(addr) = listener.local_addr() {
            params.port = addr.port();
        }
    }
    let piece_file = match &params.target {
        Target::Piece { path, .. } => Some((part_path(path), path.clone())),
        Target::Files(_) | Target::Existing { .. } => None,
    };
    let mut manager = Manager {
        listener: params.listener.take(),
        shutdown: params.shutdown.take(),
        params,
        info,
        shared,
        verdict_rx,
        total_bytes,
        peers: JoinSet::new(),
        peer_handles: HashMap::new(),
        candidates: VecDeque::new(),
        queued: HashSet::new(),
        connected: HashSet::new(),
        incoming: 0,
        banned: HashSet::new(),
        next_key: 0,
        last_error: None,
        failures: HashMap::new(),
    };
    let result = manager.run().await;
    drop(manager);
    if let Some((part, path)) = piece_file {
        if matches!(result, Ok(Outcome::Complete)) {
            std::fs::rename(&part, &path).map_err(|source| StorageError::Io {
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

/// `<path>.bitrush-part`: where a single piece is written until it is verified.
fn part_path(path: &std::path::Path) -> PathBuf {
    super::with_suffix(path, ".bitrush-part")
}

/// Hashes every piece already at the output, on all cores; returns the pieces that match.
async fn recheck(sink: Arc<Sink>, info: Arc<Info>) -> Result<Bitfield, DownloadError> {
    let count = info.piece_count();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32;
    let mut jobs = JoinSet::new();
    for t in 0..threads {
        let (sink, info) = (sink.clone(), info.clone());
        jobs.spawn_blocking(move || -> Result<Vec<u32>, StorageError> {
            let Sink::Files(storage) = &*sink else {
                return Ok(Vec::new());
            };
            let mut good = Vec::new();
            let mut scratch = Vec::new();
            for index in (t..count).step_by(threads as usize) {
                if let Some(hash) = info.pieces.get(index as usize) {
                    if storage.piece_matches(index, hash, &mut scratch)? {
                        good.push(index);
                    }
                }
            }
            Ok(good)
        });
    }
    let mut have = Bitfield::new(count);
    while let Some(joined) = jobs.join_next().await {
        for index in joined.map_err(|e| DownloadError::Task(e.to_string()))?? {
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

/// How often a dialled peer whose connection failed in transit is tried again.
const MAX_CONNECTION_RETRIES: u32 = 2;

type PeerResult = (PeerKey, Option<SocketAddr>, Result<(), PeerConnError>);

struct Manager {
    params: DownloadParams,
    listener: Option<TcpListener>,
    shutdown: Option<watch::Receiver<bool>>,
    info: Arc<Info>,
    shared: Arc<Shared>,
    verdict_rx: mpsc::UnboundedReceiver<Verdict>,
    total_bytes: u64,
    /// Connection tasks; an outgoing one reports the address it dialled.
    peers: JoinSet<PeerResult>,
    peer_handles: HashMap<PeerKey, (AbortHandle, SocketAddr)>,
    candidates: VecDeque<SocketAddr>,
    /// The addresses in `candidates` (trackers may list thousands: no linear search).
    queued: HashSet<SocketAddr>,
    /// Addresses we dialled that are still connected.
    connected: HashSet<SocketAddr>,
    incoming: usize,
    banned: HashSet<SocketAddr>,
    next_key: PeerKey,
    last_error: Option<String>,
    /// Transient connection failures per dialled address.
    failures: HashMap<SocketAddr, u32>,
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

/// Accepts the next connection, or waits forever without a listener.
async fn accept(
    listener: &Option<TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Manager {
    fn lock(&self) -> std::sync::MutexGuard<'_, SwarmState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn announce_request(&self, event: Event) -> AnnounceRequest {
        let st = self.lock();
        AnnounceRequest {
            info_hash: self.params.info_hash,
            peer_id: self.params.peer_id,
            port: self.params.port,
            uploaded: st.download.uploaded_bytes(),
            downloaded: st.download.verified_bytes(),
            left: st.download.bytes_left(),
            event,
            numwant: Some(200),
            key: u32::from_be_bytes([
                self.params.peer_id.0[16],
                self.params.peer_id.0[17],
                self.params.peer_id.0[18],
                self.params.peer_id.0[19],
            ]),
        }
    }

    fn add_candidates(&mut self, peers: &[SocketAddr]) {
        let own_port = self.listener.as_ref().map(|_| self.params.port);
        for &addr in peers {
            let is_self = own_port == Some(addr.port()) && addr.ip().is_loopback();
            if !is_self
                && !self.banned.contains(&addr)
                && !self.connected.contains(&addr)
                && self.queued.insert(addr)
            {
                self.candidates.push_back(addr);
            }
        }
    }

    fn connect_more(&mut self, done: bool) {
        while self.connected.len() < self.params.max_peers && !done {
            let Some(addr) = self.candidates.pop_front() else {
                break;
            };
            self.queued.remove(&addr);
            if self.banned.contains(&addr) || !self.connected.insert(addr) {
                continue; // banned since it was queued, or already connected
            }
            let key = self.next_key;
            self.next_key += 1;
            let shared = self.shared.clone();
            let (info_hash, peer_id) = (self.params.info_hash, self.params.peer_id);
            let handle = self.peers.spawn(async move {
                let result = async {
                    let mut stream = peer::connect(addr).await?;
                    let theirs =
                        peer::exchange_handshake(&mut stream, addr, info_hash, peer_id).await?;
                    peer::run(shared, key, addr, stream, theirs).await
                }
                .await;
                (key, Some(addr), result)
            });
            self.peer_handles.insert(key, (handle, addr));
        }
    }

    fn on_incoming(&mut self, mut stream: tokio::net::TcpStream, addr: SocketAddr) {
        if self.incoming >= self.params.max_peers || self.banned.contains(&addr) {
            return; // Dropping the stream closes it: the connection limit holds.
        }
        self.incoming += 1;
        let key = self.next_key;
        self.next_key += 1;
        let shared = self.shared.clone();
        let (info_hash, peer_id) = (self.params.info_hash, self.params.peer_id);
        let handle = self.peers.spawn(async move {
            let _ = stream.set_nodelay(true);
            let result = async {
                let theirs = peer::accept_handshake(&mut stream, addr, info_hash, peer_id).await?;
                peer::run(shared, key, addr, stream, theirs).await
            }
            .await;
            (key, None, result)
        });
        self.peer_handles.insert(key, (handle, addr));
    }

    /// Bookkeeping for a connection task that was aborted (a banned peer) and so returned no
    /// result: frees its outgoing or incoming slot. (`peer::run` takes the peer out of the swarm
    /// state when its task is dropped.)
    fn forget_aborted(&mut self, task: tokio::task::Id) {
        let key = self
            .peer_handles
            .iter()
            .find(|(_, (handle, _))| handle.id() == task)
            .map(|(&key, _)| key);
        if let Some((_, addr)) = key.and_then(|key| self.peer_handles.remove(&key)) {
            // A dialled connection is known by the address we dialled; any other was incoming.
            if !self.connected.remove(&addr) {
                self.incoming = self.incoming.saturating_sub(1);
            }
        }
    }

    fn progress(&self, rate: f64) -> Progress {
        let st = self.lock();
        let left = st.download.bytes_left();
        Progress {
            done_bytes: self.total_bytes.saturating_sub(left),
            total_bytes: self.total_bytes,
            uploaded_bytes: st.download.uploaded_bytes(),
            peers: st.download.peer_count(),
            rate,
            seeding: st.download.is_done(),
        }
    }

    fn seed_over(&self, seeding_since: Option<Instant>) -> bool {
        let Some(since) = seeding_since else {
            return false;
        };
        let Some(limits) = self.params.seed else {
            return true;
        };
        let ratio_met = limits.ratio.is_some_and(|r| {
            let up = self.lock().download.uploaded_bytes() as f64;
            up >= r * self.info.total_length as f64
        });
        let time_met = limits.time.is_some_and(|t| since.elapsed() >= t);
        ratio_met || time_met
    }

    /// Gives a completed download what only complete files get (executable bits, symlinks;
    /// see `Storage::finish`).
    async fn finish_files(&self) -> Result<(), DownloadError> {
        let sink = self.shared.sink.clone();
        tokio::task::spawn_blocking(move || match &*sink {
            Sink::Files(storage) => storage.finish(),
            Sink::Piece { .. } => Ok(()),
        })
        .await
        .map_err(|e| DownloadError::Task(e.to_string()))??;
        Ok(())
    }

    async fn run(&mut self) -> Result<Outcome, DownloadError> {
        let extra = self.params.peers.clone();
        self.add_candidates(&extra);

        let mut announce: JoinSet<Result<AnnounceResponse, TrackerError>> = JoinSet::new();
        let have_trackers = self.params.trackers.iter().any(|t| !t.is_empty());
        let mut next_announce = Instant::now();
        let mut first_announce = true;
        let mut announce_failures = 0u32;
        let mut progress_tick = tokio::time::interval(Duration::from_millis(250));
        let mut rechoke_tick = tokio::time::interval(Duration::from_secs(10));
        let mut rechokes = 0u64;
        let mut last_sample = (Instant::now(), 0u64);
        let mut rate = 0.0;
        let mut seeding_since: Option<Instant> = None;
        let mut outcome = Outcome::Complete;
        let mut shutdown = self.shutdown.take();
        let mut completed_announced = false;

        loop {
            let done = self.lock().download.is_done();
            if done && seeding_since.is_none() {
                seeding_since = Some(Instant::now());
                self.finish_files().await?;
                if self.params.seed.is_none() {
                    break;
                }
                if !first_announce && have_trackers {
                    // Tell the trackers we completed (best effort, in the background).
                    completed_announced = true;
                    let req = self.announce_request(Event::Completed);
                    let tiers = self.params.trackers.clone();
                    tokio::spawn(async move {
                        let _ = super::tracker::announce_all(&tiers, &req).await;
                    });
                }
                tracing::info!("download complete; seeding");
            }
            if self.seed_over(seeding_since) {
                break;
            }
            self.connect_more(done);
            if have_trackers && announce.is_empty() && Instant::now() >= next_announce {
                let event = if first_announce {
                    Event::Started
                } else {
                    Event::None
                };
                first_announce = false;
                let req = self.announce_request(event);
                let tiers = self.params.trackers.clone();
                announce.spawn(async move { super::tracker::announce_all(&tiers, &req).await });
            }
            if !done
                && self.peers.is_empty()
                && self.candidates.is_empty()
                && announce.is_empty()
                && self.lock().download.verifying_count() == 0
                && (!have_trackers || announce_failures >= 3)
            {
                let why = self
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no peers known".to_string());
                return Err(DownloadError::NoPeers(why));
            }
            let until_announce = next_announce.saturating_duration_since(Instant::now());
            tokio::select! {
                () = shutdown_signal(&mut shutdown) => {
                    outcome = if done { Outcome::Complete } else { Outcome::Interrupted };
                    break;
                }
                Some(verdict) = self.verdict_rx.recv() => {
                    let index = verdict.index;
                    let good = verdict.result?;
                    if !good {
                        tracing::warn!(piece = index, "piece failed its hash check; fetching it again");
                    }
                    let banned = {
                        let mut st = self.lock();
                        st.download.recycle(verdict.buf);
                        let banned = st.download.piece_verified(index, good);
                        st.dispatch(&self.shared.completed_tx);
                        banned
                    };
                    for key in banned {
                        if let Some((handle, addr)) = self.peer_handles.get(&key) {
                            tracing::warn!(%addr, "banning peer for sending bad data");
                            self.banned.insert(*addr);
                            handle.abort();
                        }
                    }
                }
                Some(joined) = self.peers.join_next() => {
                    // A task aborted on a ban returns no result: free its slot here.
                    let joined = joined.map_err(|e| self.forget_aborted(e.id()));
                    if let Ok((key, dialled, result)) = joined {
                        self.peer_handles.remove(&key);
                        match dialled {
                            Some(addr) => { self.connected.remove(&addr); }
                            None => self.incoming = self.incoming.saturating_sub(1),
                        }
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "peer connection ended");
                            // A connection that failed in transit is tried again a couple of
                            // times; one that broke the protocol is not.
                            let transient = matches!(
                                e,
                                PeerConnError::Io { .. } | PeerConnError::Closed(_) | PeerConnError::Connect { .. }
                            );
                            if let (true, Some(addr)) = (transient, dialled) {
                                let failures = self.failures.entry(addr).or_insert(0);
                                *failures += 1;
                                if *failures <= MAX_CONNECTION_RETRIES {
                                    self.add_candidates(&[addr]);
                                }
                            }
                            self.last_error = Some(e.to_string());
                        }
                    }
                }
                accepted = accept(&self.listener) => {
                    match accepted {
                        Ok((stream, addr)) => self.on_incoming(stream, addr),
                        Err(e) => tracing::warn!(error = %e, "accepting a connection failed"),
                    }
                }
                Some(joined) = announce.join_next() => {
                    let response = joined.map_err(|e| DownloadError::Task(e.to_string()))?;
                    match response {
                        Ok(resp) => {
                            if let Some(w) = &resp.warning {
                                tracing::warn!(warning = %w, "tracker warning");
                            }
                            announce_failures = 0;
                            self.add_candidates(&resp.peers);
                            let interval = resp.interval.unwrap_or(1800).max(resp.min_interval.unwrap_or(0));
                            next_announce = Instant::now() + self.reannounce_delay(interval);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "announce failed");
                            announce_failures += 1;
                            let alone = self.peers.is_empty() && self.candidates.is_empty();
                            if alone && self.params.peers.is_empty() && announce_failures == 1 {
                                return Err(DownloadError::Tracker(e));
                            }
                            self.last_error = Some(e.to_string());
                            next_announce = Instant::now() + Duration::from_secs(5 * u64::from(announce_failures.min(12)));
                        }
                    }
                }
                _ = tokio::time::sleep(until_announce), if have_trackers && announce.is_empty() => {}
                _ = rechoke_tick.tick() => {
                    rechokes += 1;
                    let mut st = self.lock();
                    st.download.rechoke(rechokes.is_multiple_of(3));
                    st.dispatch(&self.shared.completed_tx);
                }
                _ = progress_tick.tick() => {
                    let p = self.progress(rate);
                    let now = Instant::now();
                    let dt = now.duration_since(last_sample.0).as_secs_f64();
                    if dt >= 1.0 {
                        let sample = p.done_bytes.saturating_sub(last_sample.1) as f64 / dt;
                        rate = if rate == 0.0 { sample } else { 0.6 * sample + 0.4 * rate };
                        last_sample = (now, p.done_bytes);
                    }
                    tracing::trace!(done = p.done_bytes, peers = p.peers, verifying = self.lock().download.verifying_count(), "progress");
                    if let Some(tx) = &self.params.progress {
                        let _ = tx.send(p);
                    }
                    if !done && self.peers.is_empty() && self.candidates.is_empty() && announce.is_empty() {
                        // Nobody to talk to: ask the trackers again soon.
                        next_announce = next_announce.min(Instant::now() + Duration::from_secs(2));
                    }
                }
            }
        }

        self.peers.abort_all();
        // Let the hashing threads finish what they hold, so every good piece received is stored.
        while self.lock().download.verifying_count() > 0 {
            let Some(verdict) = self.verdict_rx.recv().await else {
                break;
            };
            let good = matches!(verdict.result, Ok(true));
            self.lock().download.piece_verified(verdict.index, good);
        }
        if let Some(tx) = &self.params.progress {
            let _ = tx.send(self.progress(rate));
        }
        self.save_resume(outcome).await;
        if have_trackers && !first_announce {
            // Best effort: what is on disk stands whatever the trackers say.
            let done = self.lock().download.is_done();
            let mut events = Vec::new();
            if done && !completed_announced {
                events.push(Event::Completed);
            }
            events.push(Event::Stopped);
            for event in events {
                let req = self.announce_request(event);
                let _ = tokio::time::timeout(
                    Duration::from_secs(3),
                    super::tracker::announce_all(&self.params.trackers, &req),
                )
                .await;
            }
        }
        Ok(outcome)
    }

    /// Leaves a resume state beside an interrupted download's output (so the next run need not
    /// hash everything again) and removes a stale one once the download is complete. Best
    /// effort: without the state the next run rechecks, which is always safe.
    async fn save_resume(&self, outcome: Outcome) {
        let Target::Files(output) = &self.params.target else {
            return;
        };
        if self.params.assume_complete {
            return;
        }
        let output = output.clone();
        if outcome == Outcome::Complete {
            let _ = tokio::task::spawn_blocking(move || resume::remove(&output)).await;
            return;
        }
        let have = self.lock().download.have().clone();
        let (sink, info_hash) = (self.shared.sink.clone(), self.params.info_hash);
        let saved = tokio::task::spawn_blocking(move || match &*sink {
            Sink::Files(storage) => resume::save(&output, &info_hash, storage, &have),
            Sink::Piece { .. } => Ok(()),
        })
        .await;
        match saved {
            Ok(Ok(())) => tracing::info!("resume state saved"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the resume state"),
            Err(e) => tracing::warn!(error = %e, "cannot save the resume state"),
        }
    }

    /// Time until the next announce: the tracker's interval, or sooner while we lack peers.
    fn reannounce_delay(&self, interval: u32) -> Duration {
        let interval = Duration::from_secs(u64::from(interval.max(1)));
        if self.connected.len() < self.params.max_peers / 2 {
            interval.min(Duration::from_secs(30))
        } else {
            interval
        }
    }
}
