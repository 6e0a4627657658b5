//! The daemon's HTTP API (axum): the JSON REST API under `/api/v1` (documented in
//! `docs/api.md`), Transmission RPC at `/transmission/rpc` ([`super::rpc`]), Prometheus
//! metrics at `/metrics` and the web UI at `/` ([`super::webui`]).
//!
//! Invariants: a request body is read up to [`MAX_BODY`] bytes (past that: 413); every
//! failure is a JSON `{"error": "..."}` with a 4xx status, never a panic; with credentials
//! set, every request must carry them (HTTP basic), and on a non-loopback address without
//! credentials every request is refused with 401, so the API is never open to a network by
//! accident.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;

use super::{AddError, AddRequest, AddSource, Daemon, SpeedLimits, WantedError};
use crate::queue::TorrentId;

/// Largest request body accepted (a `.torrent` upload, base64 included).
pub const MAX_BODY: usize = 16 << 20;

/// HTTP basic credentials the API requires.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Who may use the API.
#[derive(Clone, Debug)]
pub enum Access {
    /// Anyone who can reach the address (loopback only).
    Open,
    /// Requests with these credentials.
    Basic(Credentials),
    /// Nobody (a non-loopback address without credentials).
    Refused,
}

impl Access {
    /// The rule for an API bound to `addr` with optional credentials.
    pub fn for_bind(addr: SocketAddr, credentials: Option<Credentials>) -> Access {
        match credentials {
            Some(c) => Access::Basic(c),
            None if addr.ip().is_loopback() => Access::Open,
            None => Access::Refused,
        }
    }
}

#[derive(Clone)]
pub(super) struct Api {
    pub(super) daemon: Daemon,
    access: Access,
    /// Transmission's CSRF token, sent back in `X-Transmission-Session-Id`.
    pub(super) session_id: String,
}

/// A JSON error response.
pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

/// The API's routes over `daemon`.
pub fn router(daemon: Daemon, access: Access) -> Router {
    let api = Api {
        daemon,
        access,
        session_id: format!("{:032x}", rand::random::<u128>()),
    };
    Router::new()
        .route("/api/v1/torrents", get(list).post(add))
        .route("/api/v1/torrents/{id}", get(get_one).delete(remove))
        .route("/api/v1/torrents/{id}/pause", post(pause))
        .route("/api/v1/torrents/{id}/resume", post(resume))
        .route("/api/v1/torrents/{id}/recheck", post(recheck))
        .route("/api/v1/torrents/{id}/files", get(files).put(set_files))
        .route("/api/v1/torrents/{id}/peers", get(peers))
        .route("/api/v1/torrents/{id}/trackers", get(trackers))
        .route(
            "/api/v1/torrents/{id}/files/{index}/stream",
            get(super::stream::stream),
        )
        .route(
            "/api/v1/torrents/{id}/limits",
            get(torrent_limits).put(set_torrent_limits),
        )
        .route("/api/v1/limits", get(speed_limits).put(set_speed_limits))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/events", get(super::events::stream))
        .route("/metrics", get(metrics))
        .route(
            "/transmission/rpc",
            post(super::rpc::handle).get(super::rpc::handle),
        )
        // transmission-remote's default URL ends with a slash.
        .route(
            "/transmission/rpc/",
            post(super::rpc::handle).get(super::rpc::handle),
        )
        .merge(super::webui::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .with_state(api)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    daemon: Daemon,
    access: Access,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(daemon, access))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn authenticate(State(api): State<Api>, req: Request, next: Next) -> Response {
    if let Some(why) = foreign_request(req.method(), req.headers(), &api.access) {
        return error(StatusCode::FORBIDDEN, why);
    }
    let allowed = match &api.access {
        Access::Open => true,
        Access::Refused => false,
        Access::Basic(c) => basic_credentials(req.headers())
            .is_some_and(|(user, password)| user == c.user && password == c.password),
    };
    if allowed {
        return next.run(req).await;
    }
    let mut resp = error(StatusCode::UNAUTHORIZED, "authentication required");
    if matches!(api.access, Access::Basic(_)) {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"bitrush\""),
        );
    }
    resp
}

/// Why a request that a web page elsewhere could have made the user's browser send is refused,
/// if it is one. Any other site may make a browser POST to the API (a "simple" cross-origin
/// request needs no preflight), so a state-changing request whose `Origin` is not the API's
/// own host is refused. And a page on a name that resolves to 127.0.0.1 (DNS rebinding) would
/// be same-origin: without credentials, only loopback addresses and `localhost` are accepted
/// as the `Host`.
fn foreign_request(
    method: &axum::http::Method,
    headers: &HeaderMap,
    access: &Access,
) -> Option<&'static str> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if matches!(access, Access::Open) && !host.is_none_or(is_local_host) {
        return Some("the API answers only to a loopback address or localhost in Host");
    }
    let reads = [
        axum::http::Method::GET,
        axum::http::Method::HEAD,
        axum::http::Method::OPTIONS,
    ];
    if reads.contains(method) {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok();
    let same = match (origin, host) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        _ => false,
    };
    (!same).then_some("cross-origin request refused")
}

/// Whether a `Host` header names this machine: a loopback IP or `localhost`, with any port.
fn is_local_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        // `[::1]:9091`, `127.0.0.1:9091`, `localhost:9091`; a bare IPv6 address has no port.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// A failed request: its status and message (a JSON error once a response).
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
pub(super) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes or broken"),
        )
    })
}

fn parse_id(id: &str) -> Result<TorrentId, ApiError> {
    id.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a torrent id"),
        )
    })
}

fn not_found(id: TorrentId) -> Response {
    error(StatusCode::NOT_FOUND, format!("no torrent with id {id}"))
}

/// An add error as an HTTP status.
pub(super) fn add_status(e: &AddError) -> StatusCode {
    match e {
        AddError::Duplicate(_) => StatusCode::CONFLICT,
        AddError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        AddError::ShuttingDown | AddError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn list(State(api): State<Api>) -> Response {
    Json(api.daemon.list()).into_response()
}

async fn get_one(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match api.daemon.get(id) {
        Some(t) => Json(t).into_response(),
        None => not_found(id),
    }
}

/// `POST /api/v1/torrents` with JSON.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    magnet: Option<String>,
    /// A `.torrent` in base64.
    torrent: Option<String>,
    download_dir: Option<PathBuf>,
    #[serde(default)]
    paused: bool,
}

/// `POST /api/v1/torrents` query (for raw `.torrent` uploads).
#[derive(serde::Deserialize)]
struct AddQuery {
    download_dir: Option<PathBuf>,
    #[serde(default)]
    paused: bool,
}

async fn add(
    State(api): State<Api>,
    query: Result<Query<AddQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req = if json {
        let parsed: AddJson = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        };
        let source = match (parsed.magnet, parsed.torrent) {
            (Some(link), None) => AddSource::Magnet(link),
            (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(bytes) => AddSource::Torrent(bytes),
                Err(_) => return error(StatusCode::BAD_REQUEST, "`torrent` is not base64"),
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "give exactly one of `magnet` and `torrent`",
                )
            }
        };
        AddRequest {
            source,
            download_dir: parsed.download_dir,
            paused: parsed.paused,
        }
    } else {
        let Query(q) = match query {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        };
        let (download_dir, paused) = (q.download_dir, q.paused);
        AddRequest {
            source: AddSource::Torrent(bytes.to_vec()),
            download_dir,
            paused,
        }
    };
    match api.daemon.add(req).await {
        Ok(id) => match api.daemon.get(id) {
            Some(t) => (StatusCode::CREATED, Json(t)).into_response(),
            None => not_found(id),
        },
        Err(e) => error(add_status(&e), crate::engine::error_chain(&e)),
    }
}

async fn pause(State(api): State<Api>, Path(id): Path<String>) -> Response {
    act(&api, &id, |d, id| d.pause(id))
}

async fn resume(State(api): State<Api>, Path(id): Path<String>) -> Response {
    act(&api, &id, |d, id| d.resume(id))
}

async fn recheck(State(api): State<Api>, Path(id): Path<String>) -> Response {
    act(&api, &id, |d, id| d.recheck(id))
}

/// Runs an action on a torrent; answers with the torrent.
fn act(api: &Api, id: &str, f: impl FnOnce(&Daemon, TorrentId) -> bool) -> Response {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    if !f(&api.daemon, id) {
        return not_found(id);
    }
    match api.daemon.get(id) {
        Some(t) => Json(t).into_response(),
        None => not_found(id),
    }
}

#[derive(serde::Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    delete_data: bool,
}

async fn remove(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let delete_data = match query {
        Ok(Query(q)) => q.delete_data,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if api.daemon.remove(id, delete_data).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(id)
    }
}

async fn files(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match api.daemon.files(id) {
        Some(f) => Json(f).into_response(),
        None => not_found(id),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesJson {
    /// One flag per file, by index (`null`: all wanted).
    wanted: Option<Vec<bool>>,
}

async fn set_files(State(api): State<Api>, Path(id): Path<String>, body: Body) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let parsed: FilesJson = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    if let Err(e) = api.daemon.set_wanted_files(id, parsed.wanted) {
        let status = match e {
            WantedError::NoSuchTorrent => return not_found(id),
            WantedError::NoMetadata => StatusCode::CONFLICT,
            WantedError::TooMany { .. } => StatusCode::BAD_REQUEST,
        };
        return error(status, e);
    }
    match api.daemon.files(id) {
        Some(f) => Json(f).into_response(),
        None => not_found(id),
    }
}

async fn peers(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match api.daemon.peers(id) {
        Some(p) => Json(p).into_response(),
        None => not_found(id),
    }
}

async fn trackers(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match api.daemon.trackers(id) {
        Some(t) => {
            let list: Vec<_> = t
                .into_iter()
                .map(|(tier, url)| serde_json::json!({ "tier": tier, "url": url }))
                .collect();
            Json(list).into_response()
        }
        None => not_found(id),
    }
}

/// A JSON [`SpeedLimits`] body (absent or `null` fields: unlimited).
async fn limits_body(body: Body) -> Result<SpeedLimits, Response> {
    let bytes = read_body(body).await.map_err(IntoResponse::into_response)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

async fn speed_limits(State(api): State<Api>) -> Response {
    Json(api.daemon.speed_limits()).into_response()
}

async fn set_speed_limits(State(api): State<Api>, body: Body) -> Response {
    let limits = match limits_body(body).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    api.daemon.set_speed_limits(limits);
    Json(api.daemon.speed_limits()).into_response()
}

async fn torrent_limits(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match api.daemon.torrent_speed_limits(id) {
        Some(l) => Json(l).into_response(),
        None => not_found(id),
    }
}

async fn set_torrent_limits(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let limits = match limits_body(body).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    if api.daemon.set_torrent_speed_limits(id, limits) {
        Json(limits).into_response()
    } else {
        not_found(id)
    }
}

async fn stats(State(api): State<Api>) -> Response {
    Json(api.daemon.stats()).into_response()
}

/// Prometheus text exposition of the session's totals and torrents by state.
async fn metrics(State(api): State<Api>) -> Response {
    let s = api.daemon.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP bitrush_{name} {help}\n# TYPE bitrush_{name} {kind}\nbitrush_{name} {value}\n"
        ));
    };
    metric(
        "downloaded_bytes_total",
        "counter",
        "Payload bytes received.",
        s.downloaded_bytes.to_string(),
    );
    metric(
        "uploaded_bytes_total",
        "counter",
        "Payload bytes sent.",
        s.uploaded_bytes.to_string(),
    );
    metric(
        "download_rate_bytes",
        "gauge",
        "Download rate in bytes per second.",
        s.download_rate.to_string(),
    );
    metric(
        "upload_rate_bytes",
        "gauge",
        "Upload rate in bytes per second.",
        s.upload_rate.to_string(),
    );
    metric("peers", "gauge", "Connected peers.", s.peers.to_string());
    metric(
        "pieces_have",
        "gauge",
        "Verified pieces across torrents.",
        s.pieces_have.to_string(),
    );
    out.push_str("# HELP bitrush_torrents Torrents by state.\n# TYPE bitrush_torrents gauge\n");
    for (state, n) in [
        ("downloading", s.downloading),
        ("seeding", s.seeding),
        ("paused", s.paused),
        ("queued", s.queued),
    ] {
        out.push_str(&format!("bitrush_torrents{{state=\"{state}\"}} {n}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_open_without_credentials() {
        let local: SocketAddr = "127.0.0.1:9091".parse().unwrap();
        let local6: SocketAddr = "[::1]:9091".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:9091".parse().unwrap();
        assert!(matches!(Access::for_bind(local, None), Access::Open));
        assert!(matches!(Access::for_bind(local6, None), Access::Open));
        assert!(matches!(Access::for_bind(any, None), Access::Refused));
        let c = Credentials {
            user: "u".into(),
            password: "p".into(),
        };
        assert!(matches!(Access::for_bind(any, Some(c)), Access::Basic(_)));
    }

    #[test]
    fn requests_another_site_could_forge_are_refused() {
        use axum::http::Method;
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(k.clone(), v.parse().unwrap());
            }
            h
        };
        let open = Access::Open;
        let local = headers(&[(header::HOST, "127.0.0.1:9091")]);
        assert_eq!(foreign_request(&Method::GET, &local, &open), None);
        assert_eq!(foreign_request(&Method::POST, &local, &open), None); // curl: no Origin
        let same = headers(&[
            (header::HOST, "localhost:9091"),
            (header::ORIGIN, "http://localhost:9091"),
        ]);
        assert_eq!(foreign_request(&Method::POST, &same, &open), None);
        let six = headers(&[
            (header::HOST, "[::1]:9091"),
            (header::ORIGIN, "http://[::1]:9091"),
        ]);
        assert_eq!(foreign_request(&Method::DELETE, &six, &open), None);
        let forged = headers(&[
            (header::HOST, "127.0.0.1:9091"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(foreign_request(&Method::POST, &forged, &open).is_some());
        assert_eq!(foreign_request(&Method::GET, &forged, &open), None);
        let opaque = headers(&[(header::HOST, "127.0.0.1:9091"), (header::ORIGIN, "null")]);
        assert!(foreign_request(&Method::POST, &opaque, &open).is_some());
        let rebound = headers(&[(header::HOST, "evil.example:9091")]);
        assert!(foreign_request(&Method::GET, &rebound, &open).is_some());
        // With credentials the Host may be any name (a server behind a proxy); Origin still counts.
        let basic = Access::Basic(Credentials {
            user: "u".into(),
            password: "p".into(),
        });
        assert_eq!(foreign_request(&Method::GET, &rebound, &basic), None);
        assert!(foreign_request(&Method::POST, &forged, &basic).is_some());
    }

    #[test]
    fn basic_credentials_are_read_and_garbage_is_not() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic bWU6czpl".parse().unwrap()); // me:s:e
        assert_eq!(
            basic_credentials(&h),
            Some(("me".to_string(), "s:e".to_string()))
        );
        for bad in ["Basic !!!", "Bearer bWU6c2U=", "Basic bWU=", "Basic //79"] {
            h.insert(header::AUTHORIZATION, bad.parse().unwrap());
            assert_eq!(basic_credentials(&h), None, "{bad}");
        }
    }
}
