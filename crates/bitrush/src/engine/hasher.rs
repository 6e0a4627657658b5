//! Hashing threads: verify assembled pieces away from the network tasks and write the good ones.
//!
//! One long-lived thread per core takes pieces from a channel, so a piece costs no thread
//! hand-off beyond the channel itself (a per-piece blocking task showed up as scheduler time with
//! 16 KiB pieces). Hashing runs in parallel; writes are serialised, because concurrent writers to
//! one file only contend for its inode lock in the kernel, and go out in 256 KiB chunks, which
//! this kernel's page cache takes more cheaply than whole large pieces. Each verdict carries the
//! piece buffer back so the download can reuse it.
//!
//! The threads start with the first piece to verify ([`Hashers`]): a daemon's complete
//! torrents, seeding, never need them, and a thousand of them must not hold two thousand
//! threads.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use super::sink::Sink;
use crate::disk::StorageError;
use crate::hashes::PieceHashes;
use crate::swarm::CompletedPiece;

/// Bytes handed to the kernel per write call.
const WRITE_CHUNK: usize = 256 * 1024;

/// The outcome of checking one piece.
pub struct Verdict {
    pub index: u32,
    /// `Ok(true)`: good and stored; `Ok(false)`: wrong hash; `Err`: good but not stored.
    pub result: Result<bool, StorageError>,
    /// The piece's buffer, for reuse.
    pub buf: Vec<u8>,
}

/// One torrent's hashing threads, started by the first piece sent; they end with this.
pub struct Hashers {
    /// What starting them takes (taken when they start).
    start: Mutex<Option<Start>>,
    /// Their channel, once started.
    tx: OnceLock<mpsc::Sender<CompletedPiece>>,
}

struct Start {
    hashes: Arc<PieceHashes>,
    /// The torrent's name, for the error if the threads cannot start.
    name: String,
    sink: Arc<Sink>,
    threads: usize,
    verdicts: tokio::sync::mpsc::UnboundedSender<Verdict>,
}

impl Hashers {
    /// `threads` hashing threads for this torrent, started when needed.
    pub fn new(
        hashes: Arc<PieceHashes>,
        name: String,
        sink: Arc<Sink>,
        threads: usize,
        verdicts: tokio::sync::mpsc::UnboundedSender<Verdict>,
    ) -> Hashers {
        Hashers {
            start: Mutex::new(Some(Start {
                hashes,
                name,
                sink,
                threads,
                verdicts,
            })),
            tx: OnceLock::new(),
        }
    }

    /// Queues `piece` to be verified (and stored if good), starting the threads first if need
    /// be. If they cannot start, the piece's verdict is that error.
    pub fn send(&self, piece: CompletedPiece) {
        if let Some(tx) = self.tx.get() {
            // The threads live as long as this; a send error means the torrent ends.
            let _ = tx.send(piece);
            return;
        }
        let mut start = self.start.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(piece);
            return;
        }
        let Some(s) = start.take() else {
            return;
        };
        match spawn(s.hashes, s.sink, s.threads, s.verdicts.clone()) {
            Ok(tx) => {
                let _ = tx.send(piece);
                let _ = self.tx.set(tx);
            }
            Err(source) => {
                let _ = s.verdicts.send(Verdict {
                    index: piece.index,
                    result: Err(crate::disk::StorageError::Io {
                        op: "start the hashing threads for",
                        path: s.name,
                        source,
                    }),
                    buf: piece.data,
                });
            }
        }
    }
}

/// Starts `threads` hashing threads; they end when every sender of the returned channel is gone.
fn spawn(
    hashes: Arc<PieceHashes>,
    sink: Arc<Sink>,
    threads: usize,
    verdicts: tokio::sync::mpsc::UnboundedSender<Verdict>,
) -> std::io::Result<mpsc::Sender<CompletedPiece>> {
    let (tx, rx) = mpsc::channel::<CompletedPiece>();
    let rx = Arc::new(Mutex::new(rx));
    let write_lock = Arc::new(Mutex::new(()));
    for i in 0..threads.max(1) {
        let (rx, hashes, sink) = (rx.clone(), hashes.clone(), sink.clone());
        let (verdicts, write_lock) = (verdicts.clone(), write_lock.clone());
        std::thread::Builder::new()
            .name(format!("bitrush-hash-{i}"))
            .spawn(move || loop {
                let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(piece) = next else {
                    return;
                };
                let result = check_and_store(&hashes, &sink, &write_lock, &piece);
                let verdict = Verdict {
                    index: piece.index,
                    result,
                    buf: piece.data,
                };
                if verdicts.send(verdict).is_err() {
                    return;
                }
            })?;
    }
    Ok(tx)
}

fn check_and_store(
    hashes: &PieceHashes,
    sink: &Sink,
    write_lock: &Mutex<()>,
    piece: &CompletedPiece,
) -> Result<bool, StorageError> {
    if !hashes.check(piece.index, &piece.data) {
        return Ok(false);
    }
    let _writing = write_lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut begin = 0u32;
    for chunk in piece.data.chunks(WRITE_CHUNK) {
        sink.store(piece.index, begin, chunk)?;
        begin += chunk.len() as u32;
    }
    Ok(true)
}
