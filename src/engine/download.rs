//! One torrent's download, from the first announce to the last verified piece.
//!
//! A single manager task owns the connection set and the announce schedule. Peer connections
//! run as their own tasks over the shared [`SwarmState`]. Assembled pieces are hashed (and
//! written, if good) on tokio's blocking pool, so SHA-1 and disk never stall a socket; at most
//! `hash_threads` run at once. Memory stays bounded by the download's piece-memory budget:
//! pieces waiting for their hash count against it until their verdict comes back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};

use super::peer::{self, PeerConnError, Shared, SwarmState};
use crate::metainfo::Info;
use crate::storage::{Storage, StorageError};
use crate::swarm::{Bitfield, Config, Download, PeerKey, BLOCK_LEN};
use crate::tracker::{AnnounceRequest, AnnounceResponse, Event, TrackerError};
use crate::types::{InfoHash, PeerId};

/// What to produce.
#[derive(Clone, Debug)]
pub enum Target {
    /// The whole torrent: the file itself (single-file) or a directory (multi-file).
    Files(PathBuf),
    /// One piece, written alone to `path`.
    Piece { index: u32, path: PathBuf },
}

/// Everything a download needs.
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
    /// The port announced to trackers.
    pub port: u16,
    /// Most connections open at once.
    pub max_peers: usize,
    pub config: Config,
    /// Receives a snapshot a few times a second.
    pub progress: Option<watch::Sender<Progress>>,
}

/// A snapshot of a running download.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Verified bytes of wanted pieces (including those present at start).
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub peers: usize,
    /// Recent download rate in bytes per second.
    pub rate: f64,
}

/// Why a download stopped before finishing.
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
}

/// Where verified pieces go.
enum Sink {
    Files(Storage),
    Piece(std::fs::File, PathBuf),
}

impl Sink {
    fn store(&self, index: u32, data: &[u8]) -> Result<(), StorageError> {
        match self {
            Sink::Files(storage) => storage.write(index, 0, data),
            Sink::Piece(file, path) => {
                use std::os::unix::fs::FileExt;
                file.write_all_at(data, 0)
                    .and_then(|()| file.set_len(data.len() as u64))
                    .map_err(|source| StorageError::Io {
                        path: path.display().to_string(),
                        source,
                    })
            }
        }
    }

    fn sync(&self) -> Result<(), StorageError> {
        match self {
            Sink::Files(storage) => storage.sync(),
            Sink::Piece(file, path) => file.sync_data().map_err(|source| StorageError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// The result of one hashing job: piece index and whether it was good and stored.
type Verdict = (u32, Result<bool, StorageError>);

/// Downloads the target and returns once every wanted piece is verified and on disk.
pub async fn download(params: DownloadParams) -> Result<(), DownloadError> {
    let info = params.info.clone();
    let piece_count = info.piece_count();
    let (sink, wanted) = match &params.target {
        Target::Files(path) => {
            let (path, info2) = (path.clone(), info.clone());
            let storage = tokio::task::spawn_blocking(move || Storage::open(&path, &info2))
                .await
                .map_err(|e| StorageError::Range(e.to_string()))??;
            (Sink::Files(storage), Bitfield::full(piece_count))
        }
        Target::Piece { index, path } => {
            if *index >= piece_count {
                return Err(DownloadError::PieceOutOfRange {
                    index: *index,
                    count: piece_count,
                });
            }
            let file = std::fs::File::create(path).map_err(|source| StorageError::Io {
                path: path.display().to_string(),
                source,
            })?;
            let mut wanted = Bitfield::new(piece_count);
            wanted.set(*index);
            (Sink::Piece(file, path.clone()), wanted)
        }
    };
    let sink = Arc::new(sink);
    let total_bytes = wanted
        .iter_set()
        .map(|i| u64::from(info.piece_len(i)))
        .sum::<u64>();
    let download = Download::new(
        info.piece_length,
        info.total_length,
        Bitfield::new(piece_count),
        wanted,
        params.config.clone(),
        rand::random(),
    );
    let (completed_tx, completed_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(SwarmState {
            download,
            wakers: HashMap::new(),
        }),
        completed_tx,
        max_message_len: max_message_len(piece_count),
        info_bytes: params.info_bytes.clone(),
    });
    let mut manager = Manager {
        params,
        info,
        shared,
        sink,
        completed_rx,
        total_bytes,
        peers: JoinSet::new(),
        peer_handles: HashMap::new(),
        candidates: VecDeque::new(),
        known: HashSet::new(),
        connected: HashSet::new(),
        banned: HashSet::new(),
        next_key: 0,
        last_error: None,
    };
    manager.run().await
}

/// Largest peer message we accept: a block with its header, an extension message, or the
/// bitfield for this torrent, whichever is largest.
fn max_message_len(piece_count: u32) -> u32 {
    let bitfield = piece_count.div_ceil(8) + 1;
    bitfield.max(BLOCK_LEN * 8 + 13).max(64 * 1024)
}

struct Manager {
    params: DownloadParams,
    info: Arc<Info>,
    shared: Arc<Shared>,
    sink: Arc<Sink>,
    completed_rx: mpsc::UnboundedReceiver<crate::swarm::CompletedPiece>,
    total_bytes: u64,
    peers: JoinSet<(PeerKey, SocketAddr, Result<(), PeerConnError>)>,
    peer_handles: HashMap<PeerKey, (AbortHandle, SocketAddr)>,
    candidates: VecDeque<SocketAddr>,
    /// Every address ever queued (so a re-announce does not queue it twice).
    known: HashSet<SocketAddr>,
    connected: HashSet<SocketAddr>,
    banned: HashSet<SocketAddr>,
    next_key: PeerKey,
    last_error: Option<String>,
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
            uploaded: 0,
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
        for &addr in peers {
            if !self.banned.contains(&addr) && !self.connected.contains(&addr) {
                if !self.known.contains(&addr) || !self.candidates.contains(&addr) {
                    self.candidates.push_back(addr);
                }
                self.known.insert(addr);
            }
        }
    }

    fn connect_more(&mut self) {
        while self.connected.len() < self.params.max_peers {
            let Some(addr) = self.candidates.pop_front() else {
                break;
            };
            if self.connected.contains(&addr) || self.banned.contains(&addr) {
                continue;
            }
            self.connected.insert(addr);
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
                (key, addr, result)
            });
            self.peer_handles.insert(key, (handle, addr));
        }
    }

    fn progress(&self, rate: f64) -> Progress {
        let st = self.lock();
        let left = st.download.bytes_left();
        Progress {
            done_bytes: self.total_bytes.saturating_sub(left),
            total_bytes: self.total_bytes,
            peers: st.download.peer_count(),
            rate,
        }
    }

    async fn run(&mut self) -> Result<(), DownloadError> {
        let extra = self.params.peers.clone();
        self.add_candidates(&extra);
        self.connect_more();

        let hash_permits = Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ));
        let mut hashing: JoinSet<Verdict> = JoinSet::new();
        let mut announce: JoinSet<Result<AnnounceResponse, TrackerError>> = JoinSet::new();
        let have_trackers = self.params.trackers.iter().any(|t| !t.is_empty());
        let mut next_announce = Instant::now();
        let mut first_announce = true;
        let mut announce_failures = 0u32;
        let mut progress_tick = tokio::time::interval(Duration::from_millis(250));
        let mut last_sample = (Instant::now(), 0u64);
        let mut rate = 0.0;

        loop {
            if self.lock().download.is_done() {
                break;
            }
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
            if self.peers.is_empty()
                && self.candidates.is_empty()
                && announce.is_empty()
                && hashing.is_empty()
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
                Some(piece) = self.completed_rx.recv() => {
                    let permit = hash_permits.clone().acquire_owned().await;
                    let (info, sink) = (self.info.clone(), self.sink.clone());
                    hashing.spawn_blocking(move || {
                        let _permit = permit;
                        let good = info
                            .pieces
                            .get(piece.index as usize)
                            .is_some_and(|h| Sha1::digest(&piece.data).as_slice() == h);
                        let stored = if good { sink.store(piece.index, &piece.data).map(|()| true) } else { Ok(false) };
                        (piece.index, stored)
                    });
                }
                Some(joined) = hashing.join_next() => {
                    let (index, verdict) = joined.map_err(|e| StorageError::Range(e.to_string()))?;
                    let good = verdict?;
                    if !good {
                        tracing::warn!(piece = index, "piece failed its hash check; fetching it again");
                    }
                    let banned = {
                        let mut st = self.lock();
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
                    if let Ok((key, addr, result)) = joined {
                        self.peer_handles.remove(&key);
                        self.connected.remove(&addr);
                        if let Err(e) = result {
                            tracing::debug!(%addr, error = %e, "peer connection ended");
                            self.last_error = Some(e.to_string());
                        }
                    }
                    self.connect_more();
                }
                Some(joined) = announce.join_next() => {
                    let response = joined.map_err(|e| DownloadError::Tracker(TrackerError::Malformed(e.to_string())))?;
                    match response {
                        Ok(resp) => {
                            if let Some(w) = &resp.warning {
                                tracing::warn!(warning = %w, "tracker warning");
                            }
                            announce_failures = 0;
                            self.add_candidates(&resp.peers);
                            self.connect_more();
                            let interval = resp.interval.unwrap_or(1800).max(resp.min_interval.unwrap_or(0));
                            next_announce = Instant::now() + self.reannounce_delay(interval);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "announce failed");
                            announce_failures += 1;
                            if self.peers.is_empty() && self.candidates.is_empty() && self.params.peers.is_empty() && announce_failures == 1 {
                                return Err(DownloadError::Tracker(e));
                            }
                            self.last_error = Some(e.to_string());
                            next_announce = Instant::now() + Duration::from_secs(5 * u64::from(announce_failures));
                        }
                    }
                }
                _ = tokio::time::sleep(until_announce), if have_trackers && announce.is_empty() => {}
                _ = progress_tick.tick() => {
                    let p = self.progress(rate);
                    let now = Instant::now();
                    let dt = now.duration_since(last_sample.0).as_secs_f64();
                    if dt >= 1.0 {
                        let sample = p.done_bytes.saturating_sub(last_sample.1) as f64 / dt;
                        rate = if rate == 0.0 { sample } else { 0.6 * sample + 0.4 * rate };
                        last_sample = (now, p.done_bytes);
                    }
                    if let Some(tx) = &self.params.progress {
                        let _ = tx.send(p);
                    }
                    if self.peers.is_empty() && self.candidates.is_empty() && announce.is_empty() {
                        // Nobody to talk to: ask the trackers again soon.
                        next_announce = next_announce.min(Instant::now() + Duration::from_secs(2));
                    }
                }
            }
        }

        self.peers.abort_all();
        let sink = self.sink.clone();
        tokio::task::spawn_blocking(move || sink.sync())
            .await
            .map_err(|e| StorageError::Range(e.to_string()))??;
        if let Some(tx) = &self.params.progress {
            let _ = tx.send(self.progress(rate));
        }
        if have_trackers {
            // Best effort: the download is complete whatever the trackers say.
            for event in [Event::Completed, Event::Stopped] {
                let req = self.announce_request(event);
                let _ = tokio::time::timeout(
                    Duration::from_secs(3),
                    super::tracker::announce_all(&self.params.trackers, &req),
                )
                .await;
            }
        }
        Ok(())
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
