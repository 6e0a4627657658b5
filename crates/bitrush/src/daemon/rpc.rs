//! Transmission RPC at `/transmission/rpc`, enough for `transmission-remote` and the tools
//! that speak it (Sonarr, Radarr, FlexGet): the `X-Transmission-Session-Id` handshake (a
//! request without the current id gets 409 and the id), then `{"method", "arguments", "tag"}`
//! requests answered with `{"result", "arguments", "tag"}`.
//!
//! Methods: `torrent-add` (`filename` as a path on the daemon's machine, an http(s) URL or a
//! magnet link; or `metainfo` in base64), `torrent-get`, `torrent-start`,
//! `torrent-start-now`, `torrent-stop`, `torrent-remove` (`delete-local-data`),
//! `torrent-verify`, `torrent-set` (`files-wanted`, `files-unwanted`), `session-get`,
//! `session-set`, `session-stats`, `free-space`. An unknown method is answered with a result
//! naming it, as Transmission does. Torrent ids are the daemon's; `ids` may also name info
//! hashes.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::api::{error, read_body, Api, MAX_BODY};
use super::{AddError, AddRequest, AddSource, Daemon, TorrentStatus, TorrentView};
use crate::queue::{QueueLimits, TorrentId};

const SESSION_HEADER: &str = "x-transmission-session-id";

/// The RPC version we answer as (Transmission 3.00's).
const RPC_VERSION: u64 = 16;

pub(super) async fn handle(
    State(api): State<Api>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id_ok = headers
        .get(SESSION_HEADER)
        .is_some_and(|v| v.as_bytes() == api.session_id.as_bytes());
    if !id_ok || method != Method::POST {
        let mut resp = (
            StatusCode::CONFLICT,
            Json(json!({"error": "send the X-Transmission-Session-Id header of this response"})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&api.session_id) {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        return resp;
    }
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let request: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let Some(name) = request.get("method").and_then(Value::as_str) else {
        return error(StatusCode::BAD_REQUEST, "no `method` string");
    };
    let empty = Map::new();
    let args = match request.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return error(StatusCode::BAD_REQUEST, "`arguments` is not an object"),
    };
    let (result, arguments) = match call(&api.daemon, name, args).await {
        Ok(arguments) => ("success".to_string(), arguments),
        Err(message) => (message, json!({})),
    };
    let mut reply = json!({ "result": result, "arguments": arguments });
    if let Some(tag) = request.get("tag") {
        reply["tag"] = tag.clone();
    }
    Json(reply).into_response()
}

async fn call(daemon: &Daemon, method: &str, args: &Map<String, Value>) -> Result<Value, String> {
    match method {
        "torrent-add" => torrent_add(daemon, args).await,
        "torrent-get" => Ok(torrent_get(daemon, args)),
        "torrent-start" | "torrent-start-now" => {
            for id in ids(daemon, args) {
                daemon.resume(id);
            }
            Ok(json!({}))
        }
        "torrent-stop" => {
            for id in ids(daemon, args) {
                daemon.pause(id);
            }
            Ok(json!({}))
        }
        "torrent-verify" => {
            for id in ids(daemon, args) {
                daemon.recheck(id);
            }
            Ok(json!({}))
        }
        "torrent-remove" => {
            let delete = args
                .get("delete-local-data")
                .is_some_and(|v| v.as_bool() == Some(true) || v.as_i64() == Some(1));
            for id in ids(daemon, args) {
                daemon.remove(id, delete).await;
            }
            Ok(json!({}))
        }
        "torrent-set" => torrent_set(daemon, args),
        "session-get" => Ok(session_get(daemon)),
        "session-set" => session_set(daemon, args),
        "session-stats" => Ok(session_stats(daemon)),
        "free-space" => free_space(args),
        other => Err(format!("method name not recognized: {other}")),
    }
}

/// The torrents `ids` names: absent means all; a number, a hash string, or a list of both.
/// (`recently-active` is every torrent.)
fn ids(daemon: &Daemon, args: &Map<String, Value>) -> Vec<TorrentId> {
    let one = |v: &Value| -> Option<TorrentId> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => crate::types::from_hex20(s)
                .and_then(|h| daemon.find(&crate::types::InfoHash(h)))
                .or_else(|| s.parse().ok()),
            _ => None,
        }
    };
    match args.get("ids") {
        None | Some(Value::Null) => daemon.list().iter().map(|t| t.id).collect(),
        Some(Value::String(s)) if s == "recently-active" => {
            daemon.list().iter().map(|t| t.id).collect()
        }
        Some(Value::Array(list)) => list.iter().filter_map(one).collect(),
        Some(v) => one(v).into_iter().collect(),
    }
}

/// Largest `.torrent` fetched from a URL or read from a path.
const MAX_TORRENT: u64 = MAX_BODY as u64;

async fn torrent_add(daemon: &Daemon, args: &Map<String, Value>) -> Result<Value, String> {
    let download_dir = args
        .get("download-dir")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from);
    let paused = args
        .get("paused")
        .is_some_and(|v| v.as_bool() == Some(true));
    let source = if let Some(b64) = args.get("metainfo").and_then(Value::as_str) {
        let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|_| "invalid or corrupt torrent file (metainfo is not base64)".to_string())?;
        AddSource::Torrent(bytes)
    } else if let Some(name) = args.get("filename").and_then(Value::as_str) {
        if name.len() >= 7 && name[..7].eq_ignore_ascii_case("magnet:") {
            AddSource::Magnet(name.to_string())
        } else if name.starts_with("http://") || name.starts_with("https://") {
            AddSource::Torrent(fetch_url(name).await?)
        } else {
            let len = tokio::fs::metadata(name)
                .await
                .map_err(|e| format!("cannot read {name}: {e}"))?
                .len();
            if len > MAX_TORRENT {
                return Err("invalid or corrupt torrent file (too large)".into());
            }
            AddSource::Torrent(
                tokio::fs::read(name)
                    .await
                    .map_err(|e| format!("cannot read {name}: {e}"))?,
            )
        }
    } else {
        return Err("no filename or metainfo specified".into());
    };
    match daemon.add(AddRequest {
        source,
        download_dir,
        paused,
    }) {
        Ok(id) => {
            let t = daemon.get(id).ok_or("torrent vanished")?;
            Ok(json!({"torrent-added": {"id": t.id, "name": t.name, "hashString": t.info_hash}}))
        }
        Err(AddError::Duplicate(id)) => {
            let t = daemon.get(id).ok_or("torrent vanished")?;
            Ok(
                json!({"torrent-duplicate": {"id": t.id, "name": t.name, "hashString": t.info_hash}}),
            )
        }
        Err(e @ (AddError::Torrent(_) | AddError::Magnet(_) | AddError::V2Only)) => Err(format!(
            "invalid or corrupt torrent file: {}",
            crate::engine::error_chain(&e)
        )),
        Err(e) => Err(crate::engine::error_chain(&e)),
    }
}

/// Fetches a `.torrent` from a URL (bounded).
async fn fetch_url(url: &str) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {}", crate::engine::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("cannot fetch {url}: HTTP {}", resp.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > MAX_TORRENT as usize {
            return Err("invalid or corrupt torrent file (too large)".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Transmission's status numbers.
fn status_code(s: TorrentStatus) -> u64 {
    match s {
        TorrentStatus::Paused | TorrentStatus::Failed => 0,
        TorrentStatus::QueuedDownload => 3,
        TorrentStatus::FetchingMetadata | TorrentStatus::Downloading => 4,
        TorrentStatus::QueuedSeed => 5,
        TorrentStatus::Seeding => 6,
    }
}

fn torrent_get(daemon: &Daemon, args: &Map<String, Value>) -> Value {
    let fields: Vec<&str> = args
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let wanted_ids = ids(daemon, args);
    let torrents: Vec<Value> = wanted_ids
        .into_iter()
        .filter_map(|id| daemon.get(id))
        .map(|t| torrent_fields(daemon, &t, &fields))
        .collect();
    json!({ "torrents": torrents })
}

fn torrent_fields(daemon: &Daemon, t: &TorrentView, fields: &[&str]) -> Value {
    let mut out = Map::new();
    let files = || daemon.files(t.id).unwrap_or_default();
    for &field in fields {
        let value = match field {
            "id" => json!(t.id),
            "hashString" => json!(t.info_hash),
            "name" => json!(t.name),
            "status" => json!(status_code(t.state)),
            "percentDone" => json!(t.percent_done),
            "metadataPercentComplete" => json!(if t.metadata_known { 1.0 } else { 0.0 }),
            "rateDownload" => json!(t.rate_download),
            "rateUpload" => json!(t.rate_upload),
            "totalSize" => json!(t.total_size),
            "sizeWhenDone" => json!(t.size_when_done),
            "leftUntilDone" => json!(t.left_until_done),
            "haveValid" => json!(t.done_bytes),
            "haveUnchecked"
            | "corruptEver"
            | "desiredAvailable"
            | "webseedsSendingToUs"
            | "queuePosition"
            | "bandwidthPriority"
            | "seedRatioMode"
            | "recheckProgress" => {
                json!(0)
            }
            "eta" => json!(t.eta.map_or(-1, |e| i64::try_from(e).unwrap_or(i64::MAX))),
            "peersConnected" => json!(t.peers),
            "peersGettingFromUs" | "peersSendingToUs" => json!(t.peers),
            "uploadRatio" => json!(t.ratio),
            "downloadDir" => json!(t.download_dir.display().to_string()),
            "addedDate" => json!(t.added_date),
            "doneDate" => json!(t.done_date),
            "startDate" | "activityDate" | "dateCreated" => json!(t.added_date),
            "downloadedEver" => json!(t.downloaded_ever),
            "uploadedEver" => json!(t.uploaded_ever),
            "error" => json!(if t.error.is_some() { 3 } else { 0 }),
            "errorString" => json!(t.error.clone().unwrap_or_default()),
            "isFinished" => json!(false),
            "isStalled" => json!(false),
            "isPrivate" => json!(t.private),
            "pieceCount" => json!(t.piece_count),
            "pieceSize" => json!(0),
            "comment" | "creator" => json!(""),
            "magnetLink" => json!(format!("magnet:?xt=urn:btih:{}", t.info_hash)),
            "files" => json!(files()
                .iter()
                .map(
                    |f| json!({"bytesCompleted": f.done_bytes, "length": f.length, "name": f.path})
                )
                .collect::<Vec<_>>()),
            "fileStats" => json!(files()
                .iter()
                .map(|f| json!({"bytesCompleted": f.done_bytes, "wanted": f.wanted, "priority": 0}))
                .collect::<Vec<_>>()),
            "wanted" => json!(files()
                .iter()
                .map(|f| i64::from(f.wanted))
                .collect::<Vec<_>>()),
            "priorities" => json!(files().iter().map(|_| 0).collect::<Vec<_>>()),
            "peers" => json!(daemon
                .peers(t.id)
                .unwrap_or_default()
                .iter()
                .map(|p| json!({
                    "address": p.address,
                    "port": p.port,
                    "clientName": "",
                    "flagStr": if p.outgoing { "" } else { "I" },
                    "isIncoming": !p.outgoing,
                    "isEncrypted": false,
                    "progress": 0.0,
                    "rateToClient": 0,
                    "rateToPeer": 0,
                }))
                .collect::<Vec<_>>()),
            "trackers" | "trackerStats" => json!(daemon
                .trackers(t.id)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(
                    |(i, (tier, url))| json!({"id": i, "tier": tier, "announce": url, "scrape": ""})
                )
                .collect::<Vec<_>>()),
            "webseeds" | "labels" => json!([]),
            _ => continue,
        };
        out.insert(field.to_string(), value);
    }
    Value::Object(out)
}

fn torrent_set(daemon: &Daemon, args: &Map<String, Value>) -> Result<Value, String> {
    let indices = |key: &str| -> Vec<usize> {
        args.get(key)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_u64)
                    .filter_map(|i| usize::try_from(i).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (want, skip) = (indices("files-wanted"), indices("files-unwanted"));
    if want.is_empty() && skip.is_empty() {
        return Ok(json!({}));
    }
    for id in ids(daemon, args) {
        let Some(files) = daemon.files(id) else {
            continue;
        };
        let count = files.iter().map(|f| f.index + 1).max().unwrap_or(0);
        let mut wanted = vec![true; count];
        for f in &files {
            wanted[f.index] = f.wanted;
        }
        for &i in &want {
            if let Some(w) = wanted.get_mut(i) {
                *w = true;
            }
        }
        for &i in &skip {
            if let Some(w) = wanted.get_mut(i) {
                *w = false;
            }
        }
        daemon.set_wanted_files(id, Some(wanted));
    }
    Ok(json!({}))
}

fn session_get(daemon: &Daemon) -> Value {
    let config = daemon.config();
    let limits = daemon.limits();
    json!({
        "version": format!("bitrush {}", env!("CARGO_PKG_VERSION")),
        "rpc-version": RPC_VERSION,
        "rpc-version-minimum": 1,
        "download-dir": config.download_dir.display().to_string(),
        "peer-port": daemon.port(),
        "peer-limit-global": config.max_connections,
        "peer-limit-per-torrent": config.max_peers_per_torrent,
        "dht-enabled": config.dht.is_some(),
        "pex-enabled": true,
        "utp-enabled": config.utp,
        "encryption": match config.encryption {
            crate::mse::Encryption::Require => "required",
            crate::mse::Encryption::Prefer => "preferred",
            crate::mse::Encryption::Disable => "tolerated",
        },
        "download-queue-enabled": true,
        "download-queue-size": limits.max_active_downloads,
        "seed-queue-enabled": true,
        "seed-queue-size": limits.max_active_seeds,
        "speed-limit-down-enabled": false,
        "speed-limit-up-enabled": false,
        "speed-limit-down": 0,
        "speed-limit-up": 0,
        "alt-speed-enabled": false,
        "seedRatioLimited": false,
        "seedRatioLimit": 0.0,
        "start-added-torrents": true,
        "incomplete-dir-enabled": false,
        "config-dir": "",
    })
}

fn session_set(daemon: &Daemon, args: &Map<String, Value>) -> Result<Value, String> {
    let mut limits: QueueLimits = daemon.limits();
    let size = |key: &str| args.get(key).and_then(Value::as_u64).map(|n| n as usize);
    if let Some(n) = size("download-queue-size") {
        limits.max_active_downloads = n;
    }
    if let Some(n) = size("seed-queue-size") {
        limits.max_active_seeds = n;
    }
    daemon.set_limits(limits);
    Ok(json!({}))
}

fn session_stats(daemon: &Daemon) -> Value {
    let s = daemon.stats();
    let uptime = daemon.uptime().as_secs();
    let totals = json!({
        "uploadedBytes": s.uploaded_bytes,
        "downloadedBytes": s.downloaded_bytes,
        "filesAdded": s.torrents,
        "sessionCount": 1,
        "secondsActive": uptime,
    });
    json!({
        "activeTorrentCount": s.downloading + s.seeding,
        "pausedTorrentCount": s.paused,
        "torrentCount": s.torrents,
        "downloadSpeed": s.download_rate,
        "uploadSpeed": s.upload_rate,
        "cumulative-stats": totals,
        "current-stats": totals,
    })
}

fn free_space(args: &Map<String, Value>) -> Result<Value, String> {
    let path = args
        .get("path")
        .and_then(Value::as_str)
        .ok_or("no path given")?;
    let free = free_bytes(std::path::Path::new(path)).map_err(|e| format!("{path}: {e}"))?;
    Ok(json!({ "path": path, "size-bytes": free }))
}

/// Free bytes on the filesystem holding `path` (`df`'s figure for unprivileged users).
fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let out = std::process::Command::new("df")
        .arg("-k")
        .arg("--output=avail")
        .arg(path)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other("no such folder"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<u64>().ok())
        .map(|k| k * 1024)
        .ok_or_else(|| std::io::Error::other("cannot tell the free space"))
}
