//! BEP 19 web seeds (`url-list`): one HTTP(S) server holding the torrent's files, as a sans-IO
//! state machine: [`WebSeed`].
//!
//! A web seed takes part in the [`crate::swarm::Swarm`] as a peer that has every piece and
//! speaks the fast extension, so the swarm's own scheduler decides which blocks it fetches
//! (a block is never asked of it and of a peer at once outside endgame, and hash failures count
//! against it as against any peer). The machine turns the `request`s the swarm queues for it
//! into HTTP range requests and the response bodies back into `piece` messages:
//! - inputs: [`WebSeed::handle_peer_message`] (what the swarm sent the "peer"),
//!   [`WebSeed::handle_response`], [`WebSeed::handle_body`], [`WebSeed::handle_end`] and
//!   [`WebSeed::handle_failed`] (the HTTP exchange), [`WebSeed::handle_swarm_disconnect`], and
//!   time through [`WebSeed::handle_timeout`];
//! - deadlines: [`WebSeed::poll_timeout`];
//! - outputs: [`WebSeed::poll_message`] (messages for the swarm, as from this peer),
//!   [`WebSeed::poll_request`] (the next HTTP request) and [`WebSeed::poll_event`].
//!
//! Requests are served oldest first, one HTTP request at a time: contiguous blocks at the head
//! of the queue (the scheduler hands a web seed neighbouring pieces) make one range, cut where
//! it crosses a file (one request per file; BEP 47 pad files are zeros, never fetched).
//!
//! Invariants: at most [`WebSeedConfig::max_queued_blocks`] requests wait (more are rejected);
//! a range is at most [`WebSeedConfig::max_range_len`] bytes; body bytes are checked against
//! the range before they are used and never buffered beyond one block, so a response longer
//! than asked, a `200` with a whole file instead of a range, or a wrong `Content-Range` fails
//! the request at once. A failure (or no data for `response_timeout`) chokes the peer in the
//! swarm (its blocks go back to the pool) for a doubling back-off; `max_failures` failures in
//! a row, or the swarm dropping it for bad data, drop the web seed for good. Deterministic: the
//! outputs follow from the inputs and times alone.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::metainfo::Info;
use crate::swarm::PeerError;
use crate::tracker::http::percent_encode;
use crate::wire::{BlockRef, Message};

/// Tunables of a web seed.
#[derive(Clone, Debug)]
pub struct WebSeedConfig {
    /// Requests from the swarm waiting to be fetched; more are rejected (fast extension).
    pub max_queued_blocks: usize,
    /// Longest byte range asked in one HTTP request.
    pub max_range_len: u64,
    /// A request that brings no byte for this long has failed.
    pub response_timeout: Duration,
    /// Back-off after the first failure; it doubles with each failure in a row.
    pub min_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Failures in a row after which the web seed is dropped.
    pub max_failures: u32,
    /// A keep-alive goes to the swarm after this long without any message (so that an idle
    /// web seed is not dropped as silent).
    pub keepalive_interval: Duration,
}

impl Default for WebSeedConfig {
    fn default() -> WebSeedConfig {
        WebSeedConfig {
            max_queued_blocks: 1024,
            max_range_len: 16 * 1024 * 1024,
            response_timeout: Duration::from_secs(15),
            min_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            max_failures: 6,
            keepalive_interval: Duration::from_secs(30),
        }
    }
}

/// One HTTP GET to perform: `url` with `Range: bytes=first-last` (inclusive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Names this request in the answers ([`WebSeed::handle_response`] and the rest).
    pub id: u64,
    pub url: String,
    pub first: u64,
    pub last: u64,
}

impl HttpRequest {
    /// The `Range` header's value.
    pub fn range_header(&self) -> String {
        format!("bytes={}-{}", self.first, self.last)
    }
}

/// Why a request to a web seed failed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebSeedError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("it answered 200 with the whole file: no range support")]
    NoRangeSupport,
    #[error("it answered the range {got:?} to a request for bytes {first}-{last}")]
    WrongRange { got: String, first: u64, last: u64 },
    #[error("the body is longer than the {expected} bytes asked for")]
    TooLong { expected: u64 },
    #[error("the body ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("no data for {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange itself failed (connection, TLS, redirects); the driver has the cause.
    #[error("the request failed")]
    Transport,
    #[error("the swarm dropped it")]
    Swarm(#[source] PeerError),
}

/// Why a web seed was given up for good.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebSeedDropped {
    #[error("it sent {0} pieces that failed their hash check")]
    BadData(u32),
    #[error("{count} requests failed in a row")]
    Failures {
        count: u32,
        #[source]
        last: WebSeedError,
    },
}

/// What the driver must do, from [`WebSeed::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebSeedEvent {
    /// Register the web seed with the swarm as a new peer with the fast extension
    /// (`Swarm::handle_connected`), then feed it [`WebSeed::poll_message`]'s messages.
    Join,
    /// A request failed: the driver abandons the HTTP request in flight; the machine tries
    /// again after `retry_in`.
    Failed {
        error: WebSeedError,
        retry_in: Duration,
    },
    /// Given up for good: the driver disconnects it from the swarm (if still there) and ends.
    Dropped(WebSeedDropped),
}

/// A part of a range: bytes of one file from the server, or a pad file's zeros.
#[derive(Clone, Debug)]
enum Segment {
    Http { file: usize, first: u64, last: u64 },
    Zeros(u64),
}

/// The range being fetched: its blocks in order, the segments left, and the block being
/// filled.
#[derive(Debug)]
struct Run {
    blocks: VecDeque<BlockRef>,
    segments: VecDeque<Segment>,
    /// The current block's bytes so far (less than one block).
    partial: BytesMut,
    /// The HTTP request of the front segment, once asked.
    request: Option<ActiveRequest>,
}

#[derive(Debug)]
struct ActiveRequest {
    id: u64,
    /// Bytes the body must have.
    expected: u64,
    received: u64,
    head_seen: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// In the swarm, unchoked: requests are fetched.
    Ready,
    /// Choked (or out of the swarm) until `until`.
    BackingOff {
        until: Instant,
    },
    Dropped,
}

/// One web seed of one torrent.
#[derive(Debug)]
pub struct WebSeed {
    url: String,
    info: Arc<Info>,
    config: WebSeedConfig,
    state: State,
    /// Registered with the swarm (a `Join` was handed out and no disconnect came since).
    joined: bool,
    queue: VecDeque<BlockRef>,
    run: Option<Run>,
    next_id: u64,
    failures: u32,
    /// When the last byte (or the request) was seen: the response timeout counts from it.
    last_progress: Instant,
    /// When a keep-alive is next due to the swarm.
    next_keepalive: Instant,
    messages: VecDeque<Message>,
    events: VecDeque<WebSeedEvent>,
}

impl WebSeed {
    /// A web seed at `url` for the torrent `info`. Its first event is [`WebSeedEvent::Join`].
    pub fn new(now: Instant, url: &str, info: Arc<Info>, config: WebSeedConfig) -> WebSeed {
        let mut seed = WebSeed {
            url: url.to_string(),
            info,
            state: State::Ready,
            joined: false,
            queue: VecDeque::new(),
            run: None,
            next_id: 0,
            failures: 0,
            last_progress: now,
            next_keepalive: now + config.keepalive_interval,
            config,
            messages: VecDeque::new(),
            events: VecDeque::new(),
        };
        seed.join(now);
        seed
    }

    /// The URL as the torrent gives it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of file `file` (BEP 19): a single-file torrent's URL as given, or with the
    /// torrent's name appended when it ends in `/`; a multi-file torrent's URL, `/`, the name
    /// and the file's path, each component percent-encoded. The names are the bytes the
    /// torrent writes, not the ones sanitised for the disk: the server holds the files under
    /// their original names (a case clash, `CON`, a `\`, a name that is not UTF-8).
    pub fn file_url(&self, file: usize) -> String {
        let mut url = self.url.clone();
        if !self.info.multi_file {
            if url.ends_with('/') {
                url.push_str(&percent_encode(self.info.name_as_written()));
            }
            return url;
        }
        if !url.ends_with('/') {
            url.push('/');
        }
        url.push_str(&percent_encode(self.info.name_as_written()));
        if let Some(f) = self.info.files.get(file) {
            for part in f.path_as_written() {
                url.push('/');
                url.push_str(&percent_encode(part));
            }
        }
        url
    }

    /// Whether the web seed was given up.
    pub fn is_dropped(&self) -> bool {
        self.state == State::Dropped
    }

    // ---- inputs ----

    /// A message the swarm queued for this peer: `request`s are queued (or rejected when the
    /// queue is full or we are backing off), `cancel`s drop waiting requests; the rest is
    /// ignored.
    pub fn handle_peer_message(&mut self, now: Instant, msg: &Message) {
        match *msg {
            Message::Request(block) => {
                let fits = u64::from(block.index) * u64::from(self.info.piece_length)
                    + u64::from(block.begin)
                    + u64::from(block.length)
                    <= self.info.total_length;
                if self.state == State::Ready
                    && self.joined
                    && fits
                    && block.length > 0
                    && self.queue.len() < self.config.max_queued_blocks
                    && !self.queue.contains(&block)
                {
                    self.queue.push_back(block);
                } else {
                    self.send(now, Message::Reject(block));
                }
            }
            Message::Cancel(block) => self.queue.retain(|b| *b != block),
            _ => {}
        }
    }

    /// The status and `Content-Range` header of request `id`'s response (after redirects).
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: u64,
        status: u16,
        content_range: Option<&str>,
    ) {
        let Some((first, last, file)) = self.active_http(id) else {
            return;
        };
        let file_len = self.info.files.get(file).map_or(0, |f| f.length);
        let result = match status {
            206 => match content_range.and_then(parse_content_range) {
                Some((a, b)) if a == first && b == last => Ok(()),
                _ => Err(WebSeedError::WrongRange {
                    got: content_range.unwrap_or("").chars().take(80).collect(),
                    first,
                    last,
                }),
            },
            // A server without range support sends the whole file: usable only when that is
            // what we asked for.
            200 if first == 0 && last + 1 == file_len => Ok(()),
            200 => Err(WebSeedError::NoRangeSupport),
            other => Err(WebSeedError::Status(other)),
        };
        match result {
            Ok(()) => {
                if let Some(req) = self.run.as_mut().and_then(|r| r.request.as_mut()) {
                    req.head_seen = true;
                }
                self.last_progress = now;
            }
            Err(e) => self.fail(now, e),
        }
    }

    /// Bytes of request `id`'s body, in order. Whole blocks go to the swarm as `piece`
    /// messages at once; a body longer than the range fails the request before any of the
    /// excess is used.
    pub fn handle_body(&mut self, now: Instant, id: u64, mut data: &[u8]) {
        if self.active_http(id).is_none() {
            return;
        }
        let Some(req) = self.run.as_mut().and_then(|r| r.request.as_mut()) else {
            return;
        };
        if !req.head_seen {
            return;
        }
        let room = req.expected - req.received;
        if data.len() as u64 > room {
            let expected = req.expected;
            self.fail(now, WebSeedError::TooLong { expected });
            return;
        }
        req.received += data.len() as u64;
        self.last_progress = now;
        while !data.is_empty() {
            let used = self.feed(now, data);
            if used == 0 {
                break;
            }
            data = data.get(used..).unwrap_or_default();
        }
    }

    /// Request `id`'s body ended: the next segment (or range) follows.
    pub fn handle_end(&mut self, now: Instant, id: u64) {
        if self.active_http(id).is_none() {
            return;
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let Some(req) = run.request.take() else {
            return;
        };
        if !req.head_seen || req.received < req.expected {
            let (got, expected) = (req.received, req.expected);
            self.fail(now, WebSeedError::Truncated { got, expected });
            return;
        }
        run.segments.pop_front();
        self.failures = 0;
    }

    /// Request `id` failed in the driver (connection, TLS, too many redirects, a body read
    /// error); the driver logs the cause.
    pub fn handle_failed(&mut self, now: Instant, id: u64) {
        if self.active_http(id).is_some() {
            self.fail(now, WebSeedError::Transport);
        }
    }

    /// The swarm disconnected this peer (`SwarmEvent::Disconnect`): for bad data the web seed
    /// is dropped; otherwise it backs off and joins again.
    pub fn handle_swarm_disconnect(&mut self, now: Instant, reason: PeerError) {
        self.joined = false;
        // Whatever was queued for the old connection is void.
        self.messages.clear();
        if let PeerError::BadData(n) = reason {
            self.drop_for_good(WebSeedDropped::BadData(n));
            return;
        }
        if self.state == State::Ready {
            self.fail(now, WebSeedError::Swarm(reason));
        }
    }

    /// Time passed: response timeouts, the end of a back-off, keep-alives.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Dropped => return,
            State::BackingOff { until } if now >= until => {
                self.state = State::Ready;
                if self.joined {
                    self.send(now, Message::Unchoke);
                } else {
                    self.join(now);
                }
            }
            State::BackingOff { .. } => {}
            State::Ready => {
                let waiting = self.run.as_ref().is_some_and(|r| r.request.is_some());
                let timeout = self.config.response_timeout;
                if waiting && now.saturating_duration_since(self.last_progress) >= timeout {
                    self.fail(now, WebSeedError::Timeout(timeout));
                }
            }
        }
        if self.joined && now >= self.next_keepalive {
            self.send(now, Message::KeepAlive);
        }
    }

    // ---- outputs ----

    /// When [`WebSeed::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match self.state {
            State::Dropped => return None,
            State::BackingOff { until } => at(until),
            State::Ready => {
                if self.run.as_ref().is_some_and(|r| r.request.is_some()) {
                    at(self.last_progress + self.config.response_timeout);
                }
            }
        }
        if self.joined {
            at(self.next_keepalive);
        }
        next
    }

    /// The next message for the swarm, as if this peer had sent it.
    pub fn poll_message(&mut self) -> Option<Message> {
        self.messages.pop_front()
    }

    /// The next HTTP request to perform, one at a time: `None` while one is in flight (until
    /// its [`WebSeed::handle_end`]). Taking the queued requests only here, after the driver
    /// handed over all the swarm queued, lets contiguous ones merge into one range. Pad-file
    /// zeros become `piece` messages here too: drain [`WebSeed::poll_message`] afterwards.
    pub fn poll_request(&mut self, now: Instant) -> Option<HttpRequest> {
        if self.state != State::Ready {
            return None;
        }
        loop {
            if self.run.is_none() {
                self.start_run(now)?;
            }
            let run = self.run.as_mut()?;
            match run.segments.front().cloned() {
                None => self.run = None,
                Some(Segment::Zeros(len)) => {
                    run.segments.pop_front();
                    let zeros = [0u8; 4096];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(zeros.len() as u64) as usize;
                        let used = self.feed(now, zeros.get(..n).unwrap_or_default());
                        if used == 0 {
                            break;
                        }
                        left -= used as u64;
                    }
                }
                Some(Segment::Http { file, first, last }) => {
                    if run.request.is_some() {
                        return None;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    run.request = Some(ActiveRequest {
                        id,
                        expected: last - first + 1,
                        received: 0,
                        head_seen: false,
                    });
                    self.last_progress = now;
                    return Some(HttpRequest {
                        id,
                        url: self.file_url(file),
                        first,
                        last,
                    });
                }
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<WebSeedEvent> {
        self.events.pop_front()
    }

    // ---- internals ----

    fn send(&mut self, now: Instant, msg: Message) {
        self.messages.push_back(msg);
        self.next_keepalive = now + self.config.keepalive_interval;
    }

    fn join(&mut self, now: Instant) {
        self.joined = true;
        self.events.push_back(WebSeedEvent::Join);
        self.send(now, Message::HaveAll);
        self.send(now, Message::Unchoke);
    }

    /// The front segment's request, if `id` names it: (first, last, file).
    fn active_http(&self, id: u64) -> Option<(u64, u64, usize)> {
        let run = self.run.as_ref()?;
        if run.request.as_ref()?.id != id {
            return None;
        }
        match run.segments.front()? {
            Segment::Http { file, first, last } => Some((*first, *last, *file)),
            Segment::Zeros(_) => None,
        }
    }

    /// Starts the next range from the requests at the head of the queue, if any wait.
    fn start_run(&mut self, now: Instant) -> Option<()> {
        let first = self.queue.pop_front()?;
        let start = self.offset(first);
        let mut end = start + u64::from(first.length);
        let mut blocks = VecDeque::from([first]);
        while let Some(&next) = self.queue.front() {
            let contiguous = self.offset(next) == end;
            if !contiguous || end - start + u64::from(next.length) > self.config.max_range_len {
                break;
            }
            end += u64::from(next.length);
            blocks.push_back(next);
            self.queue.pop_front();
        }
        self.run = Some(Run {
            blocks,
            segments: self.segments(start, end),
            partial: BytesMut::new(),
            request: None,
        });
        self.last_progress = now;
        Some(())
    }

    /// Puts bytes into the current block; returns how many were used (all of them when no
    /// block waits, which cannot happen for a valid range). A full block goes to the swarm.
    fn feed(&mut self, now: Instant, data: &[u8]) -> usize {
        let Some(run) = self.run.as_mut() else {
            return data.len();
        };
        let Some(&block) = run.blocks.front() else {
            return data.len();
        };
        let need = block.length as usize - run.partial.len();
        let n = need.min(data.len());
        run.partial
            .extend_from_slice(data.get(..n).unwrap_or_default());
        if run.partial.len() == block.length as usize {
            run.blocks.pop_front();
            let bytes: Bytes = run.partial.split().freeze();
            self.send(
                now,
                Message::Piece {
                    index: block.index,
                    begin: block.begin,
                    data: bytes,
                },
            );
        }
        n
    }

    /// The byte range `start..end` of the torrent cut at file boundaries.
    fn segments(&self, start: u64, end: u64) -> VecDeque<Segment> {
        let files = &self.info.files;
        let mut out = VecDeque::new();
        let mut pos = start;
        let mut i = files.partition_point(|f| f.offset + f.length <= pos);
        while pos < end {
            let Some(f) = files.get(i) else {
                // Past the last file: impossible, as the files cover the payload and requests
                // are checked against its length.
                break;
            };
            let stop = end.min(f.offset + f.length);
            if stop > pos {
                if f.attr.pad {
                    out.push_back(Segment::Zeros(stop - pos));
                } else {
                    out.push_back(Segment::Http {
                        file: i,
                        first: pos - f.offset,
                        last: stop - f.offset - 1,
                    });
                }
                pos = stop;
            }
            i += 1;
        }
        out
    }

    fn offset(&self, block: BlockRef) -> u64 {
        u64::from(block.index) * u64::from(self.info.piece_length) + u64::from(block.begin)
    }

    /// A request failed: back off (choked in the swarm, requests returned), or drop the web
    /// seed after too many failures in a row.
    fn fail(&mut self, now: Instant, error: WebSeedError) {
        if self.state == State::Dropped {
            return;
        }
        self.run = None;
        self.queue.clear();
        self.failures += 1;
        if self.failures >= self.config.max_failures {
            self.drop_for_good(WebSeedDropped::Failures {
                count: self.failures,
                last: error,
            });
            return;
        }
        let doublings = (self.failures - 1).min(16);
        let retry_in = self
            .config
            .min_backoff
            .saturating_mul(1 << doublings)
            .min(self.config.max_backoff);
        self.state = State::BackingOff {
            until: now + retry_in,
        };
        if self.joined {
            // A choke returns every block asked of it to the pool (fast extension, no
            // allowed-fast pieces).
            self.send(now, Message::Choke);
        }
        self.events
            .push_back(WebSeedEvent::Failed { error, retry_in });
    }

    fn drop_for_good(&mut self, why: WebSeedDropped) {
        if self.state == State::Dropped {
            return;
        }
        self.state = State::Dropped;
        self.run = None;
        self.queue.clear();
        self.messages.clear();
        self.events.push_back(WebSeedEvent::Dropped(why));
    }

    /// Checks the invariants in the module doc (for tests).
    #[cfg(test)]
    fn check_invariants(&self) -> Result<(), String> {
        if self.queue.len() > self.config.max_queued_blocks {
            return Err(format!("{} requests queued", self.queue.len()));
        }
        if let Some(run) = &self.run {
            let len: u64 = run.blocks.iter().map(|b| u64::from(b.length)).sum();
            if len > self.config.max_range_len {
                return Err(format!("range of {len} bytes"));
            }
            let block = run.blocks.front().map_or(0, |b| b.length as usize);
            if run.partial.len() >= block.max(1) {
                return Err(format!("{} bytes buffered", run.partial.len()));
            }
            if self.state != State::Ready {
                return Err("a range in flight while not ready".into());
            }
        }
        Ok(())
    }
}

/// `bytes first-last/total` (total may be `*`) as (first, last).
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let rest = header.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let parse = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (first, last) = (parse(a)?, parse(b)?);
    let total = total.trim();
    if total != "*" && parse(total).is_none_or(|t| last >= t) {
        return None;
    }
    (first <= last).then_some((first, last))
}
