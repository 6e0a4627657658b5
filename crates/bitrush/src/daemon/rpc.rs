//! Transmission RPC at `/transmission/rpc`, enough for `transmission-remote` and the tools
//! that speak it (Sonarr, Radarr, FlexGet): the `X-Transmission-Session-Id` handshake (a
//! request without the current id gets 409 and the id), then `{"method", "arguments", "tag"}`
//! requests answered with `{"result", "arguments", "tag"}`.
//!
//! Methods: `torrent-add` (`filename` as a path on the daemon's machine, an http(s) URL or a
//! magnet link; or `metainfo` in base64), `torrent-get`, `torrent-start`,
//! `torrent-start-now`, `torrent-stop`, `torrent-remove` (`delete-local-data`),
//! `torrent-verify`, `torrent-set` (`files-wanted`, `files-unwanted`, `downloadLimit`,
//! `downloadLimited`, `uploadLimit`, `uploadLimited`), `session-get`,
//! `session-set`, `session-stats`, `free-space`. An unknown method is answered with a result
//! naming it, as Transmission does. Torrent ids are the daemon's; `ids` may also name info
//! hashes.
//!
//! Speed limits are in kB/s of 1000 bytes, as Transmission counts them; "enabled" flags map
//! to a limit being set (a disabled limit is not remembered).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::api::{error, read_body, Api, MAX_BODY};
use super::{AddError, AddRequest, AddSource, Daemon, Snapshot, SpeedLimits, TorrentStatus};
use crate::queue::{QueueLimits, TorrentId};

/// Whether Transmission's `filename` is a magnet link (any case, as Transmission accepts it).
fn is_magnet_link(name: &str) -> bool {
    name.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"))
}

const SESSION_HEADER: &str = "x-transmission-session-id";

/// The RPC version we answer as (Transmission 3.00's).
const RPC_VERSION: u64 = 16;

/// Bytes in Transmission's kB (its speeds are in kB/s).
const SPEED_K: u64 = 1000;

/// The limit Transmission shows while none is set (its default, in kB/s).
const DEFAULT_SPEED_KBPS: u64 = 100;

/// A limit in bytes per second as Transmission's value (kB/s) and enabled flag.
fn speed_kbps(limit: Option<u64>) -> (u64, bool) {
    match limit {
        Some(bytes) => (bytes / SPEED_K, true),
        None => (DEFAULT_SPEED_KBPS, false),
    }
}

/// Applies Transmission's `<value>` (kB/s) and `<enabled>` keys to a limit in bytes per
/// second: a value alone changes an enabled limit, `enabled` alone turns it on (at the
/// default) or off.
fn apply_speed(
    limit: &mut Option<u64>,
    args: &Map<String, Value>,
    value: &str,
    enabled: &str,
) -> Result<(), String> {
    let kbps = match args.get(value) {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or(format!("`{value}` is not a number of kB/s"))?,
        ),
    };
    let on = match args.get(enabled) {
        None => None,
        Some(v) => Some(v.as_bool().ok_or(format!("`{enabled}` is not a boolean"))?),
    };
    let bytes = |k: u64| k.saturating_mul(SPEED_K);
    *limit = match (kbps, on) {
        (_, Some(false)) => None,
        (Some(k), Some(true)) => Some(bytes(k)),
        (None, Some(true)) => limit.or(Some(bytes(DEFAULT_SPEED_KBPS))),
        (Some(k), None) => limit.map(|_| bytes(k)),
        (None, None) => *limit,
    };
    Ok(())
}

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
        "free-space" => free_space(args).await,
        other => Err(format!("method name not recognized: {other}")),
    }
}

/// The torrents `ids` names: absent means all; a number, a hash string, or a list of both
/// (each torrent once, in queue order: a list naming one torrent a million times costs no
/// more than the torrents held). `recently-active` is every torrent.
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
        None | Some(Value::Null) => daemon.ids(),
        Some(Value::String(s)) if s == "recently-active" => daemon.ids(),
        Some(Value::Array(list)) => {
            let named: std::collections::HashSet<TorrentId> = list.iter().filter_map(one).collect();
            daemon
                .ids()
                .into_iter()
                .filter(|id| named.contains(id))
                .collect()
        }
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
        if is_magnet_link(name) {
            AddSource::Magnet(name.to_string())
        } else if name.starts_with("http://") || name.starts_with("https://") {
            AddSource::Torrent(fetch_url(name).await?)
        } else {
            let path = std::path::PathBuf::from(name);
            let read =
                tokio::task::spawn_blocking(move || super::store::read_bounded(&path, MAX_TORRENT))
                    .await
                    .map_err(|e| format!("cannot read {name}: {e}"))?;
            AddSource::Torrent(read.map_err(|e| format!("cannot read {name}: {e}"))?)
        }
    } else {
        return Err("no filename or metainfo specified".into());
    };
    match daemon
        .add(AddRequest {
            source,
            download_dir,
            paused,
        })
        .await
    {
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
        Err(e @ (AddError::Torrent(_) | AddError::Magnet(_))) => Err(format!(
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

/// The torrents asked for, as they stood at one moment (one snapshot under the state lock),
/// turned into JSON after the lock is released.
fn torrent_get(daemon: &Daemon, args: &Map<String, Value>) -> Value {
    let fields: Vec<&str> = args
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let snapshots = daemon.snapshots(&ids(daemon, args));
    let torrents: Vec<Value> = (snapshots.iter())
        .map(|s| torrent_fields(daemon, s, &fields))
        .collect();
    json!({ "torrents": torrents })
}

fn torrent_fields(daemon: &Daemon, snapshot: &Snapshot, fields: &[&str]) -> Value {
    let mut out = Map::new();
    let t = &snapshot.view();
    // Worked out once, for the first field that needs them.
    let files = std::cell::OnceCell::new();
    let files = || files.get_or_init(|| snapshot.files());
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
            "peers" => json!(snapshot
                .peers()
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
            "trackers" | "trackerStats" => json!(snapshot
                .trackers()
                .iter()
                .enumerate()
                .map(
                    |(i, (tier, url))| json!({"id": i, "tier": tier, "announce": url, "scrape": ""})
                )
                .collect::<Vec<_>>()),
            "webseeds" | "labels" => json!([]),
            "downloadLimit" | "downloadLimited" | "uploadLimit" | "uploadLimited" => {
                let limits = snapshot.limits();
                let (down, down_on) = speed_kbps(limits.download);
                let (up, up_on) = speed_kbps(limits.upload);
                match field {
                    "downloadLimit" => json!(down),
                    "downloadLimited" => json!(down_on),
                    "uploadLimit" => json!(up),
                    _ => json!(up_on),
                }
            }
            "honorsSessionLimits" => json!(true),
            "peer-limit" => json!(daemon.config().max_peers_per_torrent),
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
    let ids = ids(daemon, args);
    let speed_keys = [
        "downloadLimit",
        "downloadLimited",
        "uploadLimit",
        "uploadLimited",
    ];
    if speed_keys.iter().any(|k| args.contains_key(*k)) {
        for &id in &ids {
            let Some(mut limits) = daemon.torrent_speed_limits(id) else {
                continue;
            };
            apply_speed(
                &mut limits.download,
                args,
                "downloadLimit",
                "downloadLimited",
            )?;
            apply_speed(&mut limits.upload, args, "uploadLimit", "uploadLimited")?;
            daemon.set_torrent_speed_limits(id, limits);
        }
    }
    if want.is_empty() && skip.is_empty() {
        return Ok(json!({}));
    }
    for id in ids {
        // Unknown torrents and those whose files are not known yet are left alone.
        let Some(files) = daemon.files(id).filter(|f| !f.is_empty()) else {
            continue;
        };
        // Files come in index order, from 0.
        let mut wanted: Vec<bool> = files.iter().map(|f| f.wanted).collect();
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
        // As many flags as files: it cannot be refused.
        let _ = daemon.set_wanted_files(id, Some(wanted));
    }
    Ok(json!({}))
}

fn session_get(daemon: &Daemon) -> Value {
    let config = daemon.config();
    let limits = daemon.limits();
    let speed = daemon.speed_limits();
    let (down, down_on) = speed_kbps(speed.download);
    let (up, up_on) = speed_kbps(speed.upload);
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
        "speed-limit-down-enabled": down_on,
        "speed-limit-up-enabled": up_on,
        "speed-limit-down": down,
        "speed-limit-up": up,
        "alt-speed-enabled": false,
        "alt-speed-down": 50,
        "alt-speed-up": 50,
        "alt-speed-time-enabled": false,
        "alt-speed-time-begin": 540,
        "alt-speed-time-end": 1020,
        "alt-speed-time-day": 127,
        "units": {
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"],
            "speed-bytes": SPEED_K,
            "size-units": ["kB", "MB", "GB", "TB"],
            "size-bytes": 1000,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"],
            "memory-bytes": 1024,
        },
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
    let mut speed: SpeedLimits = daemon.speed_limits();
    apply_speed(
        &mut speed.download,
        args,
        "speed-limit-down",
        "speed-limit-down-enabled",
    )?;
    apply_speed(
        &mut speed.upload,
        args,
        "speed-limit-up",
        "speed-limit-up-enabled",
    )?;
    if speed != daemon.speed_limits() {
        daemon.set_speed_limits(speed);
    }
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

/// How long `free-space` waits for `df` (a hung network mount must not hang the request).
const FREE_SPACE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn free_space(args: &Map<String, Value>) -> Result<Value, String> {
    let path = args
        .get("path")
        .and_then(Value::as_str)
        .ok_or("no path given")?;
    // `df` is a child process waited for: on a blocking thread, never a runtime thread.
    let folder = std::path::PathBuf::from(path);
    let asked = tokio::task::spawn_blocking(move || free_bytes(&folder));
    let free = match tokio::time::timeout(FREE_SPACE_TIMEOUT, asked).await {
        Ok(Ok(free)) => free.map_err(|e| format!("{path}: {e}"))?,
        Ok(Err(e)) => return Err(format!("{path}: {e}")),
        Err(_) => return Err(format!("{path}: no answer from df")),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnet_links_are_told_from_paths_without_slicing_inside_a_character() {
        assert!(is_magnet_link("MAGNET:?xt=urn:btih:00"));
        assert!(!is_magnet_link("ééééé"));
        assert!(!is_magnet_link("magnet"));
        assert!(!is_magnet_link("/tmp/x.torrent"));
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[tokio::test]
    async fn free_space_is_asked_off_the_runtime_and_errors_are_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let got = free_space(&args(json!({ "path": path }))).await.unwrap();
        assert_eq!(got["path"], json!(path));
        assert!(got["size-bytes"].as_u64().is_some_and(|n| n > 0), "{got}");
        let missing = dir.path().join("missing").display().to_string();
        assert!(free_space(&args(json!({ "path": missing }))).await.is_err());
        assert!(free_space(&args(json!({}))).await.is_err());
    }

    #[tokio::test]
    async fn torrent_get_answers_from_one_snapshot_of_the_torrents_asked() {
        use super::super::testing;
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let names: Vec<String> = (0..20_000).map(|n| format!("f{n}")).collect();
        let files: Vec<(&str, u64, bool)> = names.iter().map(|n| (n.as_str(), 3, false)).collect();
        let big = testing::add_paused(&daemon, testing::torrent_named("big", &files, 16384)).await;
        let small = testing::torrent_named("small", &[("a", 5, false)], 16384);
        let hash = crate::metainfo::Metainfo::from_bytes(&small)
            .unwrap()
            .info_hash;
        let small = testing::add_paused(&daemon, small).await;
        daemon.set_wanted_files(big, Some(vec![false; 7])).unwrap();
        let fields = json!([
            "id",
            "name",
            "files",
            "wanted",
            "sizeWhenDone",
            "downloadLimited"
        ]);
        let got = torrent_get(&daemon, &args(json!({ "fields": fields })));
        let list = got["torrents"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0]["id"].clone(), list[0]["name"].clone()),
            (json!(big), json!("big"))
        );
        assert_eq!(list[0]["files"].as_array().unwrap().len(), 20_000);
        let wanted = list[0]["wanted"].as_array().unwrap();
        assert_eq!(wanted.iter().filter(|w| **w == json!(0)).count(), 7);
        assert_eq!(
            list[0]["sizeWhenDone"],
            json!(daemon.get(big).unwrap().size_when_done)
        );
        assert_eq!(list[0]["downloadLimited"], json!(false));
        // By info hash, and unknown ids left out.
        let by_hash = json!({ "ids": [hash.to_string(), 99], "fields": ["id"] });
        let got = torrent_get(&daemon, &args(by_hash));
        assert_eq!(got["torrents"], json!([{ "id": small }]));
        // Each torrent once, in queue order.
        let twice = json!({ "ids": [small, small, big, small], "fields": ["id"] });
        let got = torrent_get(&daemon, &args(twice));
        assert_eq!(got["torrents"], json!([{ "id": big }, { "id": small }]));
        daemon.shutdown().await;
    }

    #[tokio::test]
    async fn file_indices_in_rpc_leave_pad_files_out() {
        use super::super::testing;
        let dir = tempfile::tempdir().unwrap();
        let daemon = testing::start(dir.path()).await;
        let torrent = testing::padded_torrent();
        let id = testing::add_paused(&daemon, torrent).await;
        torrent_set(&daemon, &args(json!({"ids": [id], "files-unwanted": [1]}))).unwrap();
        let fields = json!(["files", "fileStats", "wanted", "priorities"]);
        let got = torrent_get(&daemon, &args(json!({"ids": [id], "fields": fields})));
        let t = &got["torrents"][0];
        let names: Vec<&str> = (t["files"].as_array().unwrap().iter())
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a.bin", "b.bin", "c.bin"]);
        assert_eq!(t["wanted"], json!([1, 0, 1]));
        let stats: Vec<bool> = (t["fileStats"].as_array().unwrap().iter())
            .map(|f| f["wanted"].as_bool().unwrap())
            .collect();
        assert_eq!(stats, vec![true, false, true]);
        assert_eq!(t["priorities"], json!([0, 0, 0]));
        torrent_set(
            &daemon,
            &args(json!({"ids": [id], "files-wanted": [1], "files-unwanted": [2]})),
        )
        .unwrap();
        let got = torrent_get(&daemon, &args(json!({"ids": [id], "fields": ["wanted"]})));
        assert_eq!(got["torrents"][0]["wanted"], json!([1, 1, 0]));
        daemon.shutdown().await;
    }

    #[test]
    fn transmission_speed_keys_map_to_limits_in_bytes() {
        let mut limit = None;
        let set = |limit: &mut Option<u64>, v: Value| apply_speed(limit, &args(v), "d", "e");
        set(&mut limit, json!({"d": 100, "e": true})).unwrap();
        assert_eq!(limit, Some(100_000));
        assert_eq!(speed_kbps(limit), (100, true));
        set(&mut limit, json!({"d": 250})).unwrap();
        assert_eq!(
            limit,
            Some(250_000),
            "a value alone changes an enabled limit"
        );
        set(&mut limit, json!({"e": false})).unwrap();
        assert_eq!(limit, None);
        set(&mut limit, json!({"d": 7})).unwrap();
        assert_eq!(limit, None, "a value alone leaves a disabled limit off");
        set(&mut limit, json!({"e": true})).unwrap();
        assert_eq!(limit, Some(DEFAULT_SPEED_KBPS * SPEED_K));
        assert_eq!(speed_kbps(None), (DEFAULT_SPEED_KBPS, false));
        assert!(set(&mut limit, json!({"d": "fast"})).is_err());
        assert!(set(&mut limit, json!({"e": 1})).is_err());
        assert!(set(&mut limit, json!({"d": -1})).is_err());
    }
}
