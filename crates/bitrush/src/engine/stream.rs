//! Streaming: one file's verified bytes written to a writer (stdout) in order, as they arrive.
//!
//! Pieces are verified and stored as for any download (in a folder the caller provides, a
//! temporary one for `download -o -`), so peers can still be served from disk. A writer thread
//! learns of each good piece, reads the file's bytes back from storage in order and writes them
//! out; after each piece it tells the manager its position, and the manager moves the swarm's
//! priority window ([`crate::swarm::Swarm::set_window`]) to the [`window_pieces`] pieces from
//! there. So pieces just ahead of the reader are fetched first, and a reader that falls behind
//! stops new requests rather than growing a buffer.
//!
//! Memory stays bounded: the swarm's piece budget, one [`CHUNK`] of read-back buffer, and a
//! bitfield. Disk holds what was downloaded (the caller removes the folder).

use std::io::Write;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use super::sink::Sink;
use crate::metainfo::Info;
use crate::swarm::Bitfield;

/// Bytes read back and written per call.
const CHUNK: usize = 256 * 1024;
/// How far ahead of the reader pieces are fetched, in bytes (at least [`MIN_WINDOW`] pieces).
pub const WINDOW_BYTES: u64 = 32 * 1024 * 1024;
/// Fewest pieces in the window, so several peers can work at once even with large pieces.
const MIN_WINDOW: u32 = 4;

/// Where a streamed file's bytes go; taken once by the torrent that streams.
#[derive(Clone)]
pub struct StreamOutput(Arc<Mutex<Option<Box<dyn Write + Send>>>>);

impl StreamOutput {
    pub fn new(out: impl Write + Send + 'static) -> StreamOutput {
        StreamOutput(Arc::new(Mutex::new(Some(Box::new(out)))))
    }

    pub(super) fn take(&self) -> Option<Box<dyn Write + Send>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for StreamOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamOutput")
    }
}

/// What to stream: one file of the torrent, staged in `dir`.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Where pieces are stored meanwhile (the caller creates and removes it).
    pub dir: PathBuf,
    /// The file's index in `Info::files`.
    pub file: usize,
    pub output: StreamOutput,
}

/// The pieces holding file `file`'s bytes (`None`: no such file, or it is empty).
pub fn file_pieces(info: &Info, file: usize) -> Option<RangeInclusive<u32>> {
    let f = info.files.get(file).filter(|f| f.length > 0)?;
    let pl = u64::from(info.piece_length.max(1));
    let first = u32::try_from(f.offset / pl).ok()?;
    let last = u32::try_from((f.offset + f.length - 1) / pl).ok()?;
    Some(first..=last)
}

/// Pieces in the priority window for this piece length.
pub fn window_pieces(piece_length: u32) -> u32 {
    let n = WINDOW_BYTES / u64::from(piece_length.max(1));
    u32::try_from(n).unwrap_or(u32::MAX).max(MIN_WINDOW)
}

/// What the writer thread tells the manager.
#[derive(Debug)]
pub(super) enum StreamEvent {
    /// Every piece before this one is written out: the window starts here.
    Next(u32),
    /// The whole file is written and flushed.
    Done,
    /// Writing failed (the reader went away, say).
    Failed(std::io::Error),
}

/// The writer thread's inbox: the index of each piece verified and stored.
pub(super) type Verified = mpsc::Sender<u32>;

/// Starts the writer thread for `file`; it writes each piece once it is told the piece is
/// verified, and reports on `events`. It ends when done, on a write error, or when the
/// returned sender is dropped.
pub(super) fn spawn(
    sink: Arc<Sink>,
    info: &Info,
    file: usize,
    mut out: Box<dyn Write + Send>,
    events: tokio::sync::mpsc::UnboundedSender<StreamEvent>,
) -> std::io::Result<Verified> {
    let (tx, rx) = mpsc::channel::<u32>();
    let (offset, length) = info
        .files
        .get(file)
        .map_or((0, 0), |f| (f.offset, f.length));
    let piece_length = u64::from(info.piece_length.max(1));
    let pieces = file_pieces(info, file);
    let count = info.piece_count();
    std::thread::Builder::new()
        .name("bitrush-stream".into())
        .spawn(move || {
            let result = match pieces {
                Some(pieces) => write_in_order(
                    &sink,
                    pieces,
                    count,
                    (offset, length, piece_length),
                    &mut *out,
                    &rx,
                    &events,
                ),
                None => Ok(true),
            };
            let event = match result.and_then(|done| out.flush().map(|()| done)) {
                Ok(true) => StreamEvent::Done,
                // Stopped before the end: the manager is already on its way out.
                Ok(false) => return,
                Err(e) => StreamEvent::Failed(e),
            };
            let _ = events.send(event);
        })?;
    Ok(tx)
}

/// Writes the file's bytes piece by piece as they are verified. Returns `Ok(false)` if the
/// manager stopped first.
fn write_in_order(
    sink: &Sink,
    pieces: RangeInclusive<u32>,
    count: u32,
    (offset, length, piece_length): (u64, u64, u64),
    out: &mut dyn Write,
    verified: &mpsc::Receiver<u32>,
    events: &tokio::sync::mpsc::UnboundedSender<StreamEvent>,
) -> std::io::Result<bool> {
    let mut have = Bitfield::new(count);
    let mut buf = vec![0u8; CHUNK];
    let end = offset + length;
    for index in pieces {
        let _ = events.send(StreamEvent::Next(index));
        while !have.get(index) {
            match verified.recv() {
                Ok(i) => {
                    have.set(i);
                }
                Err(_) => return Ok(false),
            }
        }
        let piece_start = u64::from(index) * piece_length;
        let from = offset.max(piece_start);
        let to = end.min(piece_start + piece_length);
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK as u64) as usize;
            let chunk = &mut buf[..n];
            sink.read(index, (at - piece_start) as u32, chunk)
                .map_err(std::io::Error::other)?;
            out.write_all(chunk)?;
            at += n as u64;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitrush_core::testing::info_with;

    #[test]
    fn a_files_pieces_cover_exactly_its_bytes() {
        // Files of 10, 0, 30 and 5 bytes in pieces of 16.
        let info = info_with(&[10, 0, 30, 5], 16);
        assert_eq!(file_pieces(&info, 0), Some(0..=0));
        assert_eq!(file_pieces(&info, 1), None, "an empty file has no piece");
        assert_eq!(file_pieces(&info, 2), Some(0..=2));
        assert_eq!(file_pieces(&info, 3), Some(2..=2));
        assert_eq!(file_pieces(&info, 4), None);
    }

    #[test]
    fn the_window_is_a_few_pieces_at_least() {
        assert_eq!(window_pieces(16 * 1024), 2048);
        assert_eq!(window_pieces(16 * 1024 * 1024), MIN_WINDOW);
        assert_eq!(
            u64::from(window_pieces(0)),
            WINDOW_BYTES,
            "no division by zero"
        );
    }
}
