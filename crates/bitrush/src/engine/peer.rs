//! One peer connection: connect, handshake, and the message loop.
//!
//! The loop reads whatever the socket has into one buffer, decodes every whole message in it
//! without copying block data, hands them to the shared download state under one lock, then
//! writes everything the state queued for this peer. Another peer's event (a `have` to announce,
//! an endgame `cancel`) wakes the loop through its [`Notify`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::sink::Sink;
use crate::disk::StorageError;
use crate::swarm::{CompletedPiece, Download, PeerKey};
use crate::types::{InfoHash, PeerId};
use crate::wire::handshake::HANDSHAKE_LEN;
use crate::wire::message::encode_piece_header;
use crate::wire::BlockRef;
use crate::wire::{Handshake, MessageDecoder, WireError};

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write to a peer may block before the peer is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the remote side may take to answer our handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most block data read from disk for one peer in one go (bounds upload memory per peer).
const UPLOAD_BATCH_BYTES: u64 = 256 * 1024;

/// Appends a `piece` message for each block to `out`; returns the payload bytes read.
fn read_blocks(sink: &Sink, blocks: &[BlockRef], out: &mut BytesMut) -> Result<u64, StorageError> {
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

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum PeerConnError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("handshake with {0}: timed out")]
    HandshakeTimeout(SocketAddr),
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    Wire { addr: SocketAddr, source: WireError },
    #[error("{0}: peer answered for another torrent")]
    WrongInfoHash(SocketAddr),
    #[error("{addr}: {source}")]
    Peer {
        addr: SocketAddr,
        source: crate::swarm::PeerError,
    },
    #[error("{0}: connection closed by peer")]
    Closed(SocketAddr),
    #[error("{0}: peer stopped reading what we send")]
    WriteTimeout(SocketAddr),
    #[error("reading a block to upload failed")]
    Storage(#[from] StorageError),
    #[error("the task reading blocks to upload failed")]
    UploadTask(#[source] tokio::task::JoinError),
}

/// Opens a TCP connection with [`CONNECT_TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, PeerConnError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(PeerConnError::ConnectTimeout(addr)),
        Ok(Err(source)) => Err(PeerConnError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            // Small request messages must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// Sends our handshake and reads the peer's; fails if it names another torrent.
pub async fn exchange_handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
    info_hash: InfoHash,
    peer_id: PeerId,
) -> Result<Handshake, PeerConnError> {
    let ours = Handshake::new(info_hash, peer_id);
    let io = |source| PeerConnError::Io { addr, source };
    let exchange = async {
        stream.write_all(&ours.encode()).await.map_err(io)?;
        let mut theirs = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut theirs).await.map_err(io)?;
        Handshake::decode(&theirs).map_err(|source| PeerConnError::Wire { addr, source })
    };
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| PeerConnError::HandshakeTimeout(addr))??;
    if theirs.info_hash != info_hash {
        return Err(PeerConnError::WrongInfoHash(addr));
    }
    Ok(theirs)
}

/// Answers an incoming connection: reads the peer's handshake, refuses another torrent's info
/// hash (closing without answering), then sends ours.
pub async fn accept_handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
    info_hash: InfoHash,
    peer_id: PeerId,
) -> Result<Handshake, PeerConnError> {
    let io = |source| PeerConnError::Io { addr, source };
    let exchange = async {
        let mut theirs = [0u8; HANDSHAKE_LEN];
        stream.read_exact(&mut theirs).await.map_err(io)?;
        let theirs =
            Handshake::decode(&theirs).map_err(|source| PeerConnError::Wire { addr, source })?;
        if theirs.info_hash != info_hash {
            return Err(PeerConnError::WrongInfoHash(addr));
        }
        let ours = Handshake::new(info_hash, peer_id);
        stream.write_all(&ours.encode()).await.map_err(io)?;
        Ok(theirs)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| PeerConnError::HandshakeTimeout(addr))?
}

/// State shared by all connections of one download.
pub struct Shared {
    pub state: Mutex<SwarmState>,
    /// Where assembled pieces go to be verified.
    pub completed_tx: std::sync::mpsc::Sender<CompletedPiece>,
    /// Largest message accepted from a peer.
    pub max_message_len: u32,
    /// Where pieces are stored; uploads are read from it.
    pub sink: Arc<Sink>,
}

/// The download state and the way to wake each connection, under one lock.
pub struct SwarmState {
    pub download: Download,
    pub wakers: std::collections::HashMap<PeerKey, Arc<Notify>>,
}

impl SwarmState {
    /// Hands assembled pieces to the hashers and wakes connections with queued messages.
    pub fn dispatch(&mut self, completed_tx: &std::sync::mpsc::Sender<CompletedPiece>) {
        for piece in self.download.take_completed() {
            // The receiver lives as long as the download; a send error means it is ending.
            let _ = completed_tx.send(piece);
        }
        for key in self.download.take_wakeups() {
            if let Some(n) = self.wakers.get(&key) {
                n.notify_one();
            }
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, SwarmState> {
    // A poisoned lock means another connection panicked; the state itself is still consistent
    // at every unlock point, so carry on.
    shared.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a connection that has completed its handshake until it fails or the task is dropped.
pub async fn run(
    shared: Arc<Shared>,
    key: PeerKey,
    addr: SocketAddr,
    stream: TcpStream,
    theirs: Handshake,
) -> Result<(), PeerConnError> {
    let notify = Arc::new(Notify::new());
    {
        let mut st = lock(&shared);
        st.download
            .add_peer(key, Instant::now(), theirs.supports_extensions());
        st.wakers.insert(key, notify.clone());
    }
    // Removes the peer however the connection ends, also when its task is aborted (a ban).
    let _leave = Leave {
        shared: &shared,
        key,
    };
    message_loop(&shared, key, addr, stream, &notify).await
}

/// Takes a peer out of the swarm state when dropped: its blocks go back to the pool and the other
/// connections are woken to take them.
struct Leave<'a> {
    shared: &'a Shared,
    key: PeerKey,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut st = lock(self.shared);
        st.download.remove_peer(self.key);
        st.wakers.remove(&self.key);
        // Its blocks are free again: others may want them.
        let others: Vec<Arc<Notify>> = st.wakers.values().cloned().collect();
        drop(st);
        for n in others {
            n.notify_one();
        }
    }
}

async fn message_loop(
    shared: &Shared,
    key: PeerKey,
    addr: SocketAddr,
    stream: TcpStream,
    notify: &Notify,
) -> Result<(), PeerConnError> {
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(256 * 1024);
    let mut outbuf = BytesMut::with_capacity(16 * 1024);
    let mut decoder = MessageDecoder::new(shared.max_message_len);
    let mut incoming = Vec::new();
    let mut outgoing = Vec::new();
    let mut uploads = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let peer_err = |source| PeerConnError::Peer { addr, source };
    loop {
        let more_uploads = {
            let mut st = lock(shared);
            let now = Instant::now();
            for msg in incoming.drain(..) {
                st.download
                    .handle_message(key, msg, now)
                    .map_err(peer_err)?;
            }
            st.download.poll_outgoing(key, now, &mut outgoing);
            let more = st
                .download
                .take_uploads(key, UPLOAD_BATCH_BYTES, &mut uploads);
            st.dispatch(&shared.completed_tx);
            more
        };
        for msg in outgoing.drain(..) {
            msg.encode(&mut outbuf);
        }
        if !uploads.is_empty() {
            let sink = shared.sink.clone();
            let blocks = std::mem::take(&mut uploads);
            let buf = std::mem::take(&mut outbuf);
            let (blocks, buf, sent) = tokio::task::spawn_blocking(move || {
                let mut buf = buf;
                let sent = read_blocks(&sink, &blocks, &mut buf);
                (blocks, buf, sent)
            })
            .await
            .map_err(PeerConnError::UploadTask)?;
            outbuf = buf;
            uploads = blocks;
            uploads.clear();
            lock(shared).download.uploaded(key, sent?);
        }
        if !outbuf.is_empty() {
            // A peer that stops reading must not hold the connection (and its slot) forever.
            tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&outbuf))
                .await
                .map_err(|_| PeerConnError::WriteTimeout(addr))?
                .map_err(|source| PeerConnError::Io { addr, source })?;
            outbuf.clear();
        }
        tokio::select! {
            // Incoming messages first; then, while requests wait, straight on to the next batch.
            biased;
            read = rd.read_buf(&mut inbuf) => {
                let n = read.map_err(|source| PeerConnError::Io { addr, source })?;
                if n == 0 {
                    return Err(PeerConnError::Closed(addr));
                }
                while let Some(msg) = decoder
                    .decode(&mut inbuf)
                    .map_err(|source| PeerConnError::Wire { addr, source })?
                {
                    incoming.push(msg);
                }
                if inbuf.capacity() - inbuf.len() < 32 * 1024 {
                    inbuf.reserve(256 * 1024);
                }
            }
            _ = notify.notified() => {}
            _ = ticker.tick() => {
                lock(shared).download.tick(key, Instant::now()).map_err(peer_err)?;
            }
            () = std::future::ready(()), if more_uploads => {}
        }
    }
}
