//! One BEP 19 web seed's task: drives a core [`WebSeed`] over HTTP(S) range requests.
//!
//! The web seed joins the shared [`crate::swarm::Swarm`] as a peer (the swarm's scheduler picks
//! its blocks; its blocks are assembled, verified and written like any peer's). Each pass takes
//! the swarm lock once: the machine's messages go to the swarm, the swarm's requests to the
//! machine. One HTTP request at a time runs in its own task, which hands the response to this
//! one through a small channel (a few body chunks at most), so memory stays bounded whatever the
//! server sends; the machine checks every byte before it is used and the request is abandoned
//! the moment it fails. Redirects are followed up to [`MAX_REDIRECTS`]; HTTPS trusts the same
//! authorities as HTTPS trackers ([`super::tls`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use super::peer::{self, Shared};
use super::tls;
use crate::metainfo::Info;
use crate::swarm::{PeerFeatures, PeerKey};
use crate::webseed::{HttpRequest, WebSeed, WebSeedConfig, WebSeedEvent};

/// Redirects followed for one request (a loop fails the request when it runs out).
pub const MAX_REDIRECTS: usize = 5;

/// Time to set up the connection of one request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Swarm keys of web seeds start here (connection keys count up from 0): web seed `n` uses
/// `WEB_SEED_KEYS + n * 2^32 + j` for its `j`-th time in the swarm.
pub(super) const WEB_SEED_KEYS: PeerKey = 1 << 62;

/// What the HTTP task reports about request `id`.
enum HttpNews {
    Head {
        status: u16,
        content_range: Option<String>,
    },
    Body(Bytes),
    End,
    Failed(reqwest::Error),
}

/// Takes the web seed out of the swarm however its task ends (also when aborted).
struct Membership<'a> {
    shared: &'a Shared,
    key: Option<PeerKey>,
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut st = peer::lock(self.shared);
            st.swarm.handle_disconnected(key);
            st.unregister(key);
            st.dispatch(self.shared, None);
        }
    }
}

/// The HTTP client for web seeds: bounded redirects, the trusted authorities for HTTPS.
fn client(https: bool) -> Result<reqwest::Client, String> {
    tls::client_builder(https)
        .map_err(|e| super::error_chain(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
        .map_err(|e| super::error_chain(&e))
}

/// Performs one request, reporting the head, the body in chunks and the end (or the failure).
async fn fetch(client: reqwest::Client, req: HttpRequest, tx: mpsc::Sender<(u64, HttpNews)>) {
    let id = req.id;
    let result = async {
        let mut resp = client
            .get(&req.url)
            .header(reqwest::header::RANGE, req.range_header())
            .send()
            .await?;
        let content_range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect());
        let head = HttpNews::Head {
            status: resp.status().as_u16(),
            content_range,
        };
        if tx.send((id, head)).await.is_err() {
            return Ok(());
        }
        while let Some(chunk) = resp.chunk().await? {
            if tx.send((id, HttpNews::Body(chunk))).await.is_err() {
                return Ok(());
            }
        }
        let _ = tx.send((id, HttpNews::End)).await;
        Ok::<(), reqwest::Error>(())
    }
    .await;
    if let Err(e) = result {
        let _ = tx.send((id, HttpNews::Failed(e.without_url()))).await;
    }
}

/// Runs web seed number `n` at `url` until it is dropped or the task is aborted.
pub(super) async fn run(shared: Arc<Shared>, n: u32, url: String, info: Arc<Info>) {
    let https = url.to_ascii_lowercase().starts_with("https://");
    let client = match client(https) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(web_seed = %url, error = %e, "not using web seed");
            return;
        }
    };
    let mut seed = WebSeed::new(Instant::now(), &url, info, WebSeedConfig::default());
    let notify = Arc::new(Notify::new());
    let mut member = Membership {
        shared: &shared,
        key: None,
    };
    let (tx, mut rx) = mpsc::channel(4);
    // The request in flight: its id and task.
    let mut http: Option<(u64, JoinHandle<()>)> = None;
    let mut last_error: Option<reqwest::Error> = None;
    // The latest request's URL: a failure names the file asked for, not only the seed.
    let mut asked = String::new();
    let mut joins: PeerKey = 0;
    let mut out = Vec::new();
    loop {
        {
            let mut st = peer::lock(&shared);
            let now = Instant::now();
            if let Some(key) = member.key {
                if let Some(reason) = st.take_close(key) {
                    st.unregister(key);
                    member.key = None;
                    seed.handle_swarm_disconnect(now, reason);
                }
            }
            if seed.poll_timeout().is_some_and(|t| t <= now) {
                seed.handle_timeout(now);
            }
            loop {
                let mut busy = false;
                while let Some(event) = seed.poll_event() {
                    busy = true;
                    match event {
                        WebSeedEvent::Join => {
                            joins += 1;
                            let key = WEB_SEED_KEYS + (PeerKey::from(n) << 32) + joins;
                            let features = PeerFeatures {
                                fast: true,
                                web_seed: true,
                                ..PeerFeatures::default()
                            };
                            st.swarm.handle_connected(now, key, features);
                            st.register(key, notify.clone());
                            member.key = Some(key);
                        }
                        WebSeedEvent::Failed { error, retry_in } => {
                            if let Some((_, task)) = http.take() {
                                task.abort();
                            }
                            let cause = match last_error.take() {
                                Some(e) => format!("{error}: {}", super::error_chain(&e)),
                                None => super::error_chain(&error),
                            };
                            tracing::warn!(
                                web_seed = %url,
                                request = %asked,
                                retry_in = ?retry_in,
                                "web seed request failed: {cause}"
                            );
                        }
                        WebSeedEvent::Dropped(why) => {
                            if let Some((_, task)) = http.take() {
                                task.abort();
                            }
                            let why = match last_error.take() {
                                Some(e) => format!(
                                    "{}: {}",
                                    super::error_chain(&why),
                                    super::error_chain(&e)
                                ),
                                None => super::error_chain(&why),
                            };
                            tracing::warn!(
                                web_seed = %url,
                                request = %asked,
                                "dropping web seed: {why}"
                            );
                            if let Some(key) = member.key.take() {
                                st.swarm.handle_disconnected(key);
                                st.unregister(key);
                                st.dispatch(&shared, None);
                            }
                            return;
                        }
                    }
                }
                if let Some(key) = member.key {
                    while let Some(msg) = seed.poll_message() {
                        busy = true;
                        st.swarm.handle_message(now, key, msg);
                    }
                    st.swarm.poll_transmit(now, key, &mut out);
                    for msg in out.drain(..) {
                        busy = true;
                        seed.handle_peer_message(now, &msg);
                    }
                    if let Some(reason) = st.dispatch(&shared, Some(key)) {
                        busy = true;
                        st.unregister(key);
                        member.key = None;
                        seed.handle_swarm_disconnect(now, reason);
                    }
                }
                if http.is_none() {
                    if let Some(req) = seed.poll_request(now) {
                        busy = true;
                        tracing::debug!(url = %req.url, range = %req.range_header(), "web seed request");
                        let id = req.id;
                        asked.clone_from(&req.url);
                        let task = tokio::spawn(fetch(client.clone(), req, tx.clone()));
                        http = Some((id, task));
                    }
                }
                if !busy {
                    break;
                }
            }
        }
        tokio::select! {
            Some((id, news)) = rx.recv() => {
                let now = Instant::now();
                let current = http.as_ref().is_some_and(|(i, _)| *i == id);
                match news {
                    HttpNews::Head { status, content_range } => {
                        seed.handle_response(now, id, status, content_range.as_deref());
                    }
                    HttpNews::Body(bytes) => seed.handle_body(now, id, &bytes),
                    HttpNews::End => {
                        if current {
                            http = None;
                        }
                        seed.handle_end(now, id);
                    }
                    HttpNews::Failed(e) => {
                        if current {
                            http = None;
                            last_error = Some(e);
                        }
                        seed.handle_failed(now, id);
                    }
                }
            }
            _ = notify.notified() => {}
            () = super::sleep_until(seed.poll_timeout()) => {}
        }
    }
}
