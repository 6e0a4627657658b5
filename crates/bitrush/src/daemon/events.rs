//! The REST API's stream of changes: `GET /api/v1/events`, as server-sent events
//! (`text/event-stream`).
//!
//! A client's stream opens with a `snapshot` event (every torrent, as `GET /api/v1/torrents`
//! lists them), then carries the changes: `added`, `state` (its state, error, name or
//! metadata changed), `progress` (its counters, rates or peers changed; at most one per
//! torrent every [`PROGRESS_EVERY`]) with the torrent as `GET /api/v1/torrents/{id}` shows
//! it, and `removed` with its id. One publisher task finds the changes by comparing the
//! torrents with what it last published, when the daemon says something changed and once
//! every [`PROGRESS_EVERY`]; it sleeps while nobody listens (and then forgets what it
//! published: the next listener is sent everything again, as `added`).
//!
//! Memory is bounded whatever the clients do: each event is serialised once, into one ring
//! of [`QUEUE`] events shared by every client. A client that falls further behind skips what
//! it missed and is sent a `lagged` event (how many it missed), then a fresh `snapshot`. At
//! most [`MAX_STREAMS`] clients at once (the others get 503). Streams end when the daemon
//! shuts down; a comment every [`KEEP_ALIVE`] keeps proxies from closing an idle stream and
//! finds clients that went away.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::{broadcast, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::api::{error, Api};
use super::{Daemon, TorrentStatus, TorrentView};
use crate::queue::TorrentId;

/// Events kept for clients that read slowly, across all clients.
pub const QUEUE: usize = 1024;
/// Most event streams open at once.
pub const MAX_STREAMS: usize = 32;
/// The least time between two `progress` events of one torrent.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often an idle stream carries a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event, serialised once for every client.
#[derive(Debug)]
pub(super) struct Published {
    kind: &'static str,
    data: String,
}

/// The daemon's side of the event streams.
pub(super) struct Hub {
    events: broadcast::Sender<Arc<Published>>,
    /// Poked when something may have changed (the publisher looks at once).
    changed: Notify,
    streams: Arc<Semaphore>,
    /// `true` once the daemon shuts down: every stream ends.
    closing: watch::Sender<bool>,
}

impl Hub {
    pub(super) fn new() -> Hub {
        Hub {
            events: broadcast::channel(QUEUE).0,
            changed: Notify::new(),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closing: watch::channel(false).0,
        }
    }

    /// Something may have changed: the publisher looks now rather than at its next tick.
    pub(super) fn poke(&self) {
        self.changed.notify_one();
    }

    /// Ends every stream.
    pub(super) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// What the publisher last published of a torrent.
struct Shown {
    torrent: TorrentView,
    /// When its last `progress` (or `state`) event went out.
    at: Instant,
}

/// What a `state` event is about.
type StateOf<'a> = (
    TorrentStatus,
    Option<&'a str>,
    &'a str,
    bool,
    u64,
    u32,
    u64,
    &'a std::path::Path,
);

fn state_of(t: &TorrentView) -> StateOf<'_> {
    (
        t.state,
        t.error.as_deref(),
        &t.name,
        t.metadata_known,
        t.total_size,
        t.piece_count,
        t.done_date,
        &t.download_dir,
    )
}

/// What a `progress` event is about.
type ProgressOf = ((u64, u64, u32, Option<u64>), (u64, u64, usize), (u64, u64));

fn progress_of(t: &TorrentView) -> ProgressOf {
    (
        (t.done_bytes, t.size_when_done, t.pieces_have, t.eta),
        (t.rate_download, t.rate_upload, t.peers),
        (t.downloaded_ever, t.uploaded_ever),
    )
}

fn published(kind: &'static str, data: serde_json::Value) -> Published {
    Published {
        kind,
        data: data.to_string(),
    }
}

fn with_torrent(kind: &'static str, t: &TorrentView) -> Published {
    published(kind, serde_json::json!({ "id": t.id, "torrent": t }))
}

/// The events that take what was published (`shown`) to `torrents` at `now`, and `shown`
/// brought up to date. A torrent's progress waits until [`PROGRESS_EVERY`] passed since its
/// last event (it goes out at a later call).
fn changes(
    shown: &mut HashMap<TorrentId, Shown>,
    torrents: &[TorrentView],
    now: Instant,
) -> Vec<Published> {
    let mut out = Vec::new();
    let present: HashSet<TorrentId> = torrents.iter().map(|t| t.id).collect();
    let mut gone: Vec<TorrentId> = (shown.keys())
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    gone.sort_unstable();
    for id in gone {
        shown.remove(&id);
        out.push(published("removed", serde_json::json!({ "id": id })));
    }
    for t in torrents {
        let Some(last) = shown.get_mut(&t.id) else {
            out.push(with_torrent("added", t));
            shown.insert(
                t.id,
                Shown {
                    torrent: t.clone(),
                    at: now,
                },
            );
            continue;
        };
        let kind = if state_of(&last.torrent) != state_of(t) {
            "state"
        } else if progress_of(&last.torrent) != progress_of(t)
            && now.duration_since(last.at) >= PROGRESS_EVERY
        {
            "progress"
        } else {
            continue;
        };
        out.push(with_torrent(kind, t));
        *last = Shown {
            torrent: t.clone(),
            at: now,
        };
    }
    out
}

impl Daemon {
    /// The publisher task: runs for the daemon's life.
    pub(super) async fn publish_events(&self) {
        let hub = &self.0.events;
        let mut shown: HashMap<TorrentId, Shown> = HashMap::new();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if hub.events.receiver_count() == 0 {
                shown.clear();
                hub.changed.notified().await;
                continue;
            }
            tokio::select! {
                _ = tick.tick() => {}
                () = hub.changed.notified() => {}
            }
            let torrents = self.list();
            for event in changes(&mut shown, &torrents, Instant::now()) {
                // Nobody listening any more is fine.
                let _ = hub.events.send(Arc::new(event));
            }
        }
    }
}

/// What a client's stream sends next.
#[derive(Debug)]
enum Out {
    /// Every torrent.
    Snapshot(String),
    /// This many events were missed.
    Lagged(u64),
    Event(Arc<Published>),
}

/// One client's stream.
struct Client {
    daemon: Daemon,
    events: broadcast::Receiver<Arc<Published>>,
    closing: watch::Receiver<bool>,
    /// A snapshot to send before the next event.
    snapshot_due: bool,
    /// Its place among [`MAX_STREAMS`], given back when the stream ends.
    _slot: OwnedSemaphorePermit,
}

fn snapshot(daemon: &Daemon) -> Out {
    Out::Snapshot(serde_json::json!(daemon.list()).to_string())
}

/// A client's stream of [`Out`]s, or `None` if [`MAX_STREAMS`] are open.
fn client(daemon: Daemon) -> Option<impl Stream<Item = Out>> {
    let slot = daemon.0.events.streams.clone().try_acquire_owned().ok()?;
    // Subscribed before the snapshot is taken: nothing after it is missed.
    let events = daemon.0.events.events.subscribe();
    daemon.0.events.poke();
    let closing = daemon.0.events.closing.subscribe();
    let client = Client {
        daemon,
        events,
        closing,
        snapshot_due: true,
        _slot: slot,
    };
    Some(futures_util::stream::unfold(client, |mut c| async move {
        if *c.closing.borrow() {
            return None;
        }
        if std::mem::take(&mut c.snapshot_due) {
            let out = snapshot(&c.daemon);
            return Some((out, c));
        }
        let received = tokio::select! {
            received = c.events.recv() => received,
            _ = c.closing.changed() => return None,
        };
        let out = match received {
            Ok(event) => Out::Event(event),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                c.snapshot_due = true;
                Out::Lagged(missed)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((out, c))
    }))
}

/// `GET /api/v1/events`.
pub(super) async fn stream(State(api): State<Api>) -> Response {
    let Some(client) = client(api.daemon) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAMS} event streams are open already"),
        );
    };
    let events = futures_util::StreamExt::map(client, |out| {
        Ok::<Event, Infallible>(match out {
            Out::Snapshot(list) => Event::default().event("snapshot").data(list),
            Out::Lagged(missed) => Event::default()
                .event("lagged")
                .data(serde_json::json!({ "missed": missed }).to_string()),
            Out::Event(e) => Event::default().event(e.kind).data(&e.data),
        })
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;
    use futures_util::StreamExt;

    fn torrent(id: TorrentId, done: u64) -> TorrentView {
        TorrentView {
            id,
            info_hash: format!("{id:040x}"),
            name: format!("t{id}"),
            state: TorrentStatus::Downloading,
            download_dir: "/d".into(),
            total_size: 100,
            size_when_done: 100,
            done_bytes: done,
            left_until_done: 100 - done,
            percent_done: done as f64 / 100.0,
            pieces_have: 0,
            piece_count: 1,
            rate_download: 0,
            rate_upload: 0,
            downloaded_ever: done,
            uploaded_ever: 0,
            ratio: 0.0,
            eta: None,
            peers: 0,
            added_date: 1,
            done_date: 0,
            error: None,
            metadata_known: true,
            private: false,
        }
    }

    fn kinds(events: &[Published]) -> Vec<(&'static str, u64)> {
        (events.iter())
            .map(|e| {
                let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                (e.kind, data["id"].as_u64().unwrap())
            })
            .collect()
    }

    #[test]
    fn changes_are_published_with_progress_at_most_once_a_second_per_torrent() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut shown = HashMap::new();
        let events = changes(&mut shown, &[torrent(1, 0), torrent(2, 0)], at(0));
        assert_eq!(kinds(&events), vec![("added", 1), ("added", 2)]);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&events[0].data).unwrap()["torrent"]["name"],
            "t1"
        );
        assert!(changes(&mut shown, &[torrent(1, 0), torrent(2, 0)], at(10)).is_empty());
        // Progress within the second waits; then goes out, once.
        assert!(changes(&mut shown, &[torrent(1, 10), torrent(2, 0)], at(500)).is_empty());
        let events = changes(&mut shown, &[torrent(1, 20), torrent(2, 0)], at(1000));
        assert_eq!(kinds(&events), vec![("progress", 1)]);
        let sent: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(sent["torrent"]["done_bytes"], 20, "the latest counters");
        assert!(changes(&mut shown, &[torrent(1, 30), torrent(2, 0)], at(1999)).is_empty());
        // A change of state goes out at once.
        let mut seeding = torrent(1, 100);
        seeding.state = TorrentStatus::Seeding;
        let events = changes(&mut shown, &[seeding.clone(), torrent(2, 0)], at(2001));
        assert_eq!(kinds(&events), vec![("state", 1)]);
        // A removal, and a torrent added in its place.
        let events = changes(&mut shown, &[seeding, torrent(3, 0)], at(2002));
        assert_eq!(kinds(&events), vec![("removed", 2), ("added", 3)]);
        assert_eq!(events[0].data, r#"{"id":2}"#);
    }

    #[tokio::test]
    async fn a_slow_client_is_told_it_lagged_and_gets_a_fresh_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let id = testing::add_paused(&daemon, testing::torrent(&[("a", 5, false)], 16384)).await;
        let stream = client(daemon.clone()).expect("a stream");
        futures_util::pin_mut!(stream);
        let Some(Out::Snapshot(list)) = stream.next().await else {
            panic!("no snapshot first");
        };
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list[0]["id"], id);
        // More events than the ring holds, none read meanwhile.
        for n in 0..QUEUE + 10 {
            let e = published("removed", serde_json::json!({ "id": n }));
            daemon.0.events.events.send(Arc::new(e)).unwrap();
        }
        // (The publisher may have sent an event of its own meanwhile.)
        assert!(matches!(stream.next().await, Some(Out::Lagged(n)) if n >= 10));
        assert!(matches!(stream.next().await, Some(Out::Snapshot(_))));
        assert!(matches!(stream.next().await, Some(Out::Event(_))));
        daemon.shutdown().await;
        // Shutting down ends the stream, whatever is left in the ring.
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn streams_are_limited() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let open: Vec<_> = (0..MAX_STREAMS)
            .map(|_| client(daemon.clone()).expect("a stream"))
            .collect();
        assert!(client(daemon.clone()).is_none());
        drop(open);
        assert!(client(daemon.clone()).is_some());
        daemon.shutdown().await;
    }
}
