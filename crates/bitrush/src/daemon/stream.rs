//! Streaming a torrent's file over HTTP while it downloads:
//! `GET /api/v1/torrents/{id}/files/{index}/stream`, with `Range` (one range; `206` and
//! `Content-Range`, `416` for a range outside the file).
//!
//! The response is read from disk piece by piece, and a piece is read only once it is verified
//! (the run's progress lists it), so unverified bytes are never served. Each time the reader
//! reaches a new piece it sets its torrent's priority window
//! ([`crate::swarm::Swarm::set_window`]) to the [`window_pieces`] pieces from there, up to the
//! end of its range: the pieces it needs next are fetched first, and nothing past the window
//! is started meanwhile (a window already verified is lifted instead, so the rest of the
//! torrent downloads while the reader catches up). One window per torrent: the latest
//! reader's; it is lifted when that reader goes (its response ends or the client hangs up).
//!
//! Memory is bounded: one [`CHUNK`] buffer per response, and the body is pulled by the
//! connection only as fast as the client reads it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::api::{error, Api};
use super::Daemon;
use crate::disk::Storage;
use crate::engine::stream::window_pieces;
use crate::metainfo::Info;
use crate::queue::TorrentId;

/// Most bytes read from disk and sent at once.
const CHUNK: u64 = 256 * 1024;
/// How often a waiting reader looks again when no run reports progress (paused, queued).
const RECHECK: Duration = Duration::from_secs(1);

/// Where a streamed file's bytes are.
pub(super) struct Source {
    pub(super) info: Arc<Info>,
    /// The torrent's output: the file itself (single-file) or its folder.
    pub(super) output: PathBuf,
    /// The file's first byte in the torrent's payload.
    pub(super) offset: u64,
    pub(super) length: u64,
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// No (usable) range: the whole file, `200`.
    Whole,
    /// Bytes `start..end` (end exclusive), `206`.
    Part(u64, u64),
    /// A range outside the file: `416`.
    Unsatisfiable,
}

/// Reads a `Range` header (RFC 9110): one `bytes=` range, `a-b`, `a-` or `-suffix`. Several
/// ranges or a malformed header are ignored (the whole file is sent, as the RFC allows).
fn parse_range(header: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last), last.trim().is_empty()) {
        // `-suffix`: the last `suffix` bytes.
        (None, Some(suffix), _) if first.trim().is_empty() => {
            if suffix == 0 || len == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(len.saturating_sub(suffix), len)
            }
        }
        (Some(start), _, true) if start < len => Wanted::Part(start, len),
        (Some(start), Some(end), _) if start <= end => {
            if start < len {
                Wanted::Part(start, end.saturating_add(1).min(len))
            } else {
                Wanted::Unsatisfiable
            }
        }
        (Some(_), _, true) => Wanted::Unsatisfiable,
        _ => Wanted::Whole,
    }
}

/// A media type from the file name, so players and browsers know what they get.
fn content_type(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("mp4" | "m4v") => "video/mp4",
        Some("mkv") => "video/x-matroska",
        Some("webm") => "video/webm",
        Some("avi") => "video/x-msvideo",
        Some("mp3") => "audio/mpeg",
        Some("flac") => "audio/flac",
        Some("ogg" | "oga") => "audio/ogg",
        Some("m4a") => "audio/mp4",
        Some("txt" | "srt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

pub(super) async fn stream(
    State(api): State<Api>,
    Path((id, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (Ok(id), Ok(index)) = (id.parse::<TorrentId>(), index.parse::<usize>()) else {
        return error(StatusCode::BAD_REQUEST, "the id and file index are numbers");
    };
    let Some(source) = api.daemon.stream_source(id, index) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no file {index} in torrent {id} (or its metadata is not known yet)"),
        );
    };
    let len = source.length;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, len) {
        Wanted::Whole => (StatusCode::OK, 0, len),
        Wanted::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        Wanted::Unsatisfiable => {
            let mut resp = error(StatusCode::RANGE_NOT_SATISFIABLE, "range outside the file");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let name = source
        .info
        .files
        .get(index)
        .map_or_else(PathBuf::new, |f| f.path.iter().collect::<PathBuf>());
    let reader = Reader {
        reader: api.daemon.new_reader(),
        daemon: api.daemon.clone(),
        id,
        pos: start,
        end,
        storage: None,
        steered: None,
        source,
    };
    let body = Body::from_stream(futures_util::stream::unfold(reader, |mut r| async move {
        let chunk = r.next_chunk().await?;
        Some((chunk, r))
    }));
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&name)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// One response's position in its file; lifts its window when dropped.
struct Reader {
    daemon: Daemon,
    id: TorrentId,
    reader: u64,
    source: Source,
    /// The next byte to send, relative to the file.
    pos: u64,
    /// One past the last byte to send.
    end: u64,
    /// The torrent's files, opened read-only once the first piece is verified.
    storage: Option<Arc<Storage>>,
    /// The piece the window was last steered from.
    steered: Option<u32>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.daemon.release_window(self.id, self.reader);
    }
}

impl Reader {
    /// The next chunk of the range (`None`: all sent), waiting for its piece to be verified.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.pos >= self.end {
            return None;
        }
        let info = self.source.info.clone();
        let piece_length = u64::from(info.piece_length.max(1));
        let at = self.source.offset + self.pos;
        let last_byte = self.source.offset + self.end - 1;
        let (Ok(piece), Ok(last_piece)) = (
            u32::try_from(at / piece_length),
            u32::try_from(last_byte / piece_length),
        ) else {
            return Some(Err(std::io::Error::other("piece index out of range")));
        };
        if self.steered != Some(piece) {
            // The window follows the reader: the pieces just ahead of it, up to its range's end.
            let end = piece
                .saturating_add(window_pieces(info.piece_length))
                .min(last_piece.saturating_add(1));
            self.daemon.steer_window(self.id, self.reader, piece, end);
            self.steered = Some(piece);
        }
        if let Err(e) = self.wait_for(piece).await {
            return Some(Err(e));
        }
        let storage = match &self.storage {
            Some(s) => s.clone(),
            None => {
                let (output, info) = (self.source.output.clone(), info.clone());
                let opened =
                    tokio::task::spawn_blocking(move || Storage::open_existing(&output, &info))
                        .await;
                match opened {
                    Ok(Ok(s)) => self.storage.insert(Arc::new(s)).clone(),
                    Ok(Err(e)) => return Some(Err(std::io::Error::other(e))),
                    Err(e) => return Some(Err(std::io::Error::other(e))),
                }
            }
        };
        let piece_end = (u64::from(piece) + 1) * piece_length;
        let len = CHUNK
            .min(piece_end - at)
            .min(self.source.offset + self.end - at);
        // Both fit: `at - piece start` is under the piece length, `len` at most CHUNK.
        let begin = (at - u64::from(piece) * piece_length) as u32;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            storage.read(piece, begin, &mut buf).map(|()| buf)
        })
        .await;
        match read {
            Ok(Ok(buf)) => {
                self.pos += len;
                Some(Ok(Bytes::from(buf)))
            }
            Ok(Err(e)) => Some(Err(std::io::Error::other(e))),
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    }

    /// Waits until `piece` is verified.
    async fn wait_for(&self, piece: u32) -> std::io::Result<()> {
        loop {
            let Some((verified, progress)) = self.daemon.piece_verified(self.id, piece) else {
                return Err(std::io::Error::other("the torrent was removed"));
            };
            if verified {
                return Ok(());
            }
            match progress {
                Some(mut rx) => {
                    let _ = tokio::time::timeout(RECHECK, rx.changed()).await;
                }
                None => tokio::time::sleep(RECHECK).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let len = 1000;
        assert_eq!(parse_range(None, len), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=0-99"), len), Wanted::Part(0, 100));
        assert_eq!(
            parse_range(Some("bytes=500-"), len),
            Wanted::Part(500, 1000)
        );
        assert_eq!(
            parse_range(Some("bytes=-100"), len),
            Wanted::Part(900, 1000)
        );
        assert_eq!(parse_range(Some("bytes=-5000"), len), Wanted::Part(0, 1000));
        assert_eq!(
            parse_range(Some("bytes=990-5000"), len),
            Wanted::Part(990, 1000)
        );
        assert_eq!(parse_range(Some("bytes=1000-"), len), Wanted::Unsatisfiable);
        assert_eq!(
            parse_range(Some("bytes=1000-1001"), len),
            Wanted::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=-0"), len), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        // Ignored: several ranges, another unit, garbage, a backwards range.
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), len), Wanted::Whole);
        assert_eq!(parse_range(Some("items=0-1"), len), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), len), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=+1-2"), len), Wanted::Whole);
        assert_eq!(parse_range(Some("bytes=5-1"), len), Wanted::Whole);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), len),
            Wanted::Whole
        );
    }
}
