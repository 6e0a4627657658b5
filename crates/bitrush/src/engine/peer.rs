//! One peer connection's task: the loop that feeds the peer's messages to the shared
//! [`Swarm`] and writes what the swarm queues for it.
//!
//! Each pass takes the swarm lock once: it hands over every message read since the last pass,
//! takes the peer's outgoing messages and upload requests, and carries out the swarm's events
//! (pieces to the hashing threads, wake-ups and disconnections for other peers, bans of peers
//! gone for the manager). Blocks to upload are read from disk on the blocking pool, never
//! under the lock. Another peer's event (a `have` to announce, an endgame `cancel`, a
//! disconnection) wakes the task through its [`Notify`].
//!
//! Rate limits ([`super::limits`]): block data read is taken from the download bucket, and
//! while it is in debt the socket is not read; blocks sent are taken from the upload bucket,
//! and while it is in debt no request is served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::connection::{ConnectionError, PeerStream};
use super::sink::Sink;
use crate::disk::StorageError;
use crate::hashes::BlockHashJob;
use crate::swarm::{PeerError, PeerFeatures, PeerKey, Swarm, SwarmEvent, BLOCK_LEN};
use crate::wire::message::encode_piece_header;
use crate::wire::{BlockRef, Message};

/// Most block data read from disk for one peer in one go (bounds upload memory per peer).
const UPLOAD_BATCH_BYTES: u64 = 256 * 1024;

/// Why a peer task ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerTaskError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("dropped {addr}")]
    Dropped { addr: SocketAddr, source: PeerError },
    #[error("reading a block to upload failed")]
    Upload(#[from] StorageError),
    #[error("the task reading blocks to upload failed")]
    UploadTask(#[source] tokio::task::JoinError),
}

/// A connection as the swarm state knows it.
struct PeerSlot {
    notify: Arc<Notify>,
    /// Set when the swarm disconnected this peer because of another peer's event or a timer.
    close: Option<PeerError>,
}

/// State shared by all connections of one torrent and its manager.
pub(super) struct Shared {
    pub(super) state: Mutex<SwarmState>,
    /// Where assembled pieces go to be verified.
    pub(super) verify_tx: super::hasher::Hashers,
    /// Largest message accepted from a peer.
    pub(super) max_message_len: u32,
    /// Where pieces are stored; uploads are read from it.
    pub(super) sink: Arc<Sink>,
    /// Wakes the manager when the swarm's next deadline moved earlier than it sleeps.
    pub(super) timer: Notify,
    /// Download and upload rate limits (the session's and the torrent's).
    pub(super) limits: super::limits::ConnectionLimits,
}

/// The swarm and the way to reach each connection, under one lock.
pub(super) struct SwarmState {
    pub(super) swarm: Swarm,
    peers: HashMap<PeerKey, PeerSlot>,
    /// The deadline the manager sleeps until.
    pub(super) armed: Option<Instant>,
    /// Peers learned through peer exchange, for the manager's session (bounded).
    pub(super) discovered: Vec<std::net::SocketAddr>,
    /// Peers that had left when the swarm proved they sent bad data, for the manager to ban
    /// their addresses (bounded).
    pub(super) banned: Vec<(PeerKey, PeerError)>,
}

/// Most addresses from peer exchange waiting for the manager.
const MAX_DISCOVERED: usize = 1000;
/// Most bans waiting for the manager (it takes them on every pass; the swarm names each
/// departed peer once, and remembers at most one per block in memory).
const MAX_BANNED: usize = 4096;

impl SwarmState {
    /// Whether the connection `key` completed its handshake and is known to the swarm.
    pub(super) fn is_connected(&self, key: PeerKey) -> bool {
        self.peers.contains_key(&key)
    }

    pub(super) fn new(swarm: Swarm) -> SwarmState {
        SwarmState {
            swarm,
            peers: HashMap::new(),
            armed: None,
            discovered: Vec::new(),
            banned: Vec::new(),
        }
    }

    /// Makes `key` reachable for the swarm's events (wake-ups, disconnections), for drivers
    /// other than [`run`] (web seeds).
    pub(super) fn register(&mut self, key: PeerKey, notify: Arc<Notify>) {
        self.peers.insert(
            key,
            PeerSlot {
                notify,
                close: None,
            },
        );
    }

    /// Forgets `key`; returns why the swarm disconnected it, if it did.
    pub(super) fn unregister(&mut self, key: PeerKey) -> Option<PeerError> {
        self.peers.remove(&key).and_then(|slot| slot.close)
    }

    /// Why the swarm disconnected `key`, if it did since the last call.
    pub(super) fn take_close(&mut self, key: PeerKey) -> Option<PeerError> {
        self.peers.get_mut(&key).and_then(|slot| slot.close.take())
    }

    /// Carries out the swarm's events. Returns why `me` must close, if the swarm said so.
    pub(super) fn dispatch(&mut self, shared: &Shared, me: Option<PeerKey>) -> Option<PeerError> {
        let mut mine = None;
        while let Some(event) = self.swarm.poll_event() {
            match event {
                SwarmEvent::Verify(piece) => {
                    shared.verify_tx.send(piece);
                }
                SwarmEvent::Wake(key) if Some(key) != me => {
                    if let Some(slot) = self.peers.get(&key) {
                        slot.notify.notify_one();
                    }
                }
                SwarmEvent::Wake(_) => {}
                SwarmEvent::Disconnect { peer, reason } if Some(peer) == me => mine = Some(reason),
                SwarmEvent::Disconnect { peer, reason } => {
                    if let Some(slot) = self.peers.get_mut(&peer) {
                        slot.close = Some(reason);
                        slot.notify.notify_one();
                    }
                }
                SwarmEvent::Banned { peer, reason } => {
                    if self.banned.len() < MAX_BANNED {
                        self.banned.push((peer, reason));
                    }
                    shared.timer.notify_one();
                }
                SwarmEvent::PeersFound(peers) => {
                    let room = MAX_DISCOVERED.saturating_sub(self.discovered.len());
                    self.discovered.extend(peers.into_iter().take(room));
                    shared.timer.notify_one();
                }
            }
        }
        if let Some(due) = self.swarm.poll_timeout() {
            if self.armed.is_none_or(|armed| due < armed) {
                shared.timer.notify_one();
            }
        }
        mine
    }
}

pub(super) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, SwarmState> {
    // A poisoned lock means another connection panicked; the state itself is still consistent
    // at every unlock point, so carry on.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends a `piece` message for each block to `out`; returns the payload bytes read.
fn read_blocks(
    sink: &Sink,
    blocks: &[BlockRef],
    out: &mut bytes::BytesMut,
) -> Result<u64, StorageError> {
    let mut sent = 0;
    for b in blocks {
        encode_piece_header(b.index, b.begin, b.length as usize, out);
        let start = out.len();
        out.resize(start + b.length as usize, 0);
        sink.read(b.index, b.begin, &mut out[start..])?;
        sent += u64::from(b.length);
    }
    Ok(sent)
}

/// Answers requests for block hashes (BEP 52) from the pieces on disk, read in chunks of
/// [`UPLOAD_BATCH_BYTES`] (a multiple of the 16 KiB block), so one peer's jobs hold no more
/// than that in memory. A piece that cannot be read leaves its job short, which answers with
/// a reject.
fn answer_hash_jobs(sink: &Sink, jobs: Vec<BlockHashJob>) -> Vec<Message> {
    let mut buf = vec![0u8; UPLOAD_BATCH_BYTES as usize];
    jobs.into_iter()
        .map(|mut job| {
            'pieces: for index in job.pieces() {
                let len = job.data_len(index);
                let mut begin = 0;
                while begin < len {
                    let n = (len - begin).min(UPLOAD_BATCH_BYTES as u32);
                    let chunk = &mut buf[..n as usize];
                    if sink.read(index, begin, chunk).is_err() {
                        break 'pieces;
                    }
                    for block in chunk.chunks(BLOCK_LEN as usize) {
                        job.add_block(block);
                    }
                    begin += n;
                }
            }
            job.finish()
        })
        .collect()
}

/// Runs a connection that completed its handshake until it fails, the swarm drops it, or the
/// task is aborted.
pub(super) async fn run(
    shared: Arc<Shared>,
    key: PeerKey,
    mut conn: PeerStream,
    features: PeerFeatures,
) -> Result<(), PeerTaskError> {
    conn.set_max_message_len(shared.max_message_len);
    let notify = Arc::new(Notify::new());
    {
        let mut st = lock(&shared);
        st.swarm.handle_connected(Instant::now(), key, features);
        st.peers.insert(
            key,
            PeerSlot {
                notify: notify.clone(),
                close: None,
            },
        );
        st.dispatch(&shared, Some(key));
    }
    // Takes the peer out of the swarm however the connection ends, also when its task is
    // aborted.
    let _leave = Leave {
        shared: &shared,
        key,
    };
    message_loop(&shared, key, &mut conn, &notify).await
}

/// Takes a peer out of the swarm state when dropped: its blocks go back to the pool and the
/// other connections are woken to take them.
struct Leave<'a> {
    shared: &'a Shared,
    key: PeerKey,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut st = lock(self.shared);
        st.swarm.handle_disconnected(self.key);
        st.peers.remove(&self.key);
        st.dispatch(self.shared, None);
    }
}

async fn message_loop(
    shared: &Shared,
    key: PeerKey,
    conn: &mut PeerStream,
    notify: &Notify,
) -> Result<(), PeerTaskError> {
    let addr = conn.addr();
    let mut incoming = Vec::new();
    let mut outgoing = Vec::new();
    let mut uploads = Vec::new();
    let mut hash_jobs = Vec::new();
    let limits = &shared.limits;
    loop {
        let now = Instant::now();
        let received: u64 = incoming
            .iter()
            .map(|m| match m {
                Message::Piece { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum();
        limits.consume_download(now, received);
        let upload_wait = limits.upload_wait(now);
        let more_uploads = {
            let mut st = lock(shared);
            for msg in incoming.drain(..) {
                st.swarm.handle_message(now, key, msg);
            }
            st.swarm.poll_transmit(now, key, &mut outgoing);
            let more = upload_wait.is_none()
                && st.swarm.poll_upload(key, UPLOAD_BATCH_BYTES, &mut uploads);
            st.swarm.poll_hash_jobs(key, &mut hash_jobs);
            let closed = st.peers.get_mut(&key).and_then(|slot| slot.close.take());
            if let Some(source) = st.dispatch(shared, Some(key)).or(closed) {
                return Err(PeerTaskError::Dropped { addr, source });
            }
            more
        };
        for msg in outgoing.drain(..) {
            conn.queue(&msg);
        }
        if !uploads.is_empty() {
            let sink = shared.sink.clone();
            let blocks = std::mem::take(&mut uploads);
            let buf = std::mem::take(conn.outgoing());
            let (blocks, buf, sent) = tokio::task::spawn_blocking(move || {
                let mut buf = buf;
                let sent = read_blocks(&sink, &blocks, &mut buf);
                (blocks, buf, sent)
            })
            .await
            .map_err(PeerTaskError::UploadTask)?;
            *conn.outgoing() = buf;
            uploads = blocks;
            uploads.clear();
            let sent = sent?;
            limits.consume_upload(Instant::now(), sent);
            let mut st = lock(shared);
            st.swarm.handle_uploaded(Instant::now(), key, sent);
            st.dispatch(shared, Some(key));
        }
        if !hash_jobs.is_empty() {
            let (sink, jobs) = (shared.sink.clone(), std::mem::take(&mut hash_jobs));
            let answers = tokio::task::spawn_blocking(move || answer_hash_jobs(&sink, jobs))
                .await
                .map_err(PeerTaskError::UploadTask)?;
            let mut st = lock(shared);
            for answer in answers {
                st.swarm.handle_hash_answer(key, answer);
            }
            st.swarm.poll_transmit(Instant::now(), key, &mut outgoing);
            if let Some(source) = st.dispatch(shared, Some(key)) {
                return Err(PeerTaskError::Dropped { addr, source });
            }
            drop(st);
            for msg in outgoing.drain(..) {
                conn.queue(&msg);
            }
        }
        conn.flush().await?;
        let read_wait = limits.download_wait(Instant::now());
        // Whichever budget reopens first wakes the loop (an upload must not wait out the
        // download's debt).
        let wake = match (read_wait, upload_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            // Incoming messages first; then, while requests wait, straight on to the next batch.
            biased;
            read = conn.read_messages(&mut incoming), if read_wait.is_none() => read?,
            _ = notify.notified() => {}
            () = std::future::ready(()), if more_uploads => {}
            () = super::sleep_until(wake), if wake.is_some() => {}
        }
    }
}
