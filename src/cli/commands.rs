//! One function per command: parse arguments into library types, call the library, print.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bitrush::engine::{self, DownloadParams, Outcome, SeedLimits, Target};
use bitrush::metainfo::Metainfo;
use bitrush::tracker::{AnnounceRequest, Event};
use bitrush::types::PeerId;

/// Largest `.torrent` file we read.
const MAX_TORRENT_FILE: u64 = 64 * 1024 * 1024;
/// The port we announce (no listener yet).
const ANNOUNCE_PORT: u16 = 6881;

pub fn decode(value: &str) -> anyhow::Result<()> {
    let v = bitrush::bencode::decode(value.as_bytes()).context("invalid bencode")?;
    println!("{}", bitrush::bencode::to_json(&v));
    Ok(())
}

fn load_torrent(path: &Path) -> anyhow::Result<Metainfo> {
    let shown = path.display();
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    if len > MAX_TORRENT_FILE {
        bail!("invalid torrent: {shown} is {len} bytes, more than the {MAX_TORRENT_FILE} allowed");
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    Metainfo::from_bytes(&bytes).with_context(|| format!("invalid torrent: {shown}"))
}

pub fn info(path: &Path) -> anyhow::Result<()> {
    let meta = load_torrent(path)?;
    let tracker = meta
        .tracker_tiers()
        .first()
        .and_then(|t| t.first().cloned())
        .unwrap_or_default();
    let v2_hashes: Vec<[u8; 32]> = (0..meta.info.files.len())
        .filter_map(|i| meta.piece_hashes_v2(i))
        .flatten()
        .copied()
        .collect();
    let hashes = InfoHashes {
        v1: meta.info_hash_v1(),
        v2: meta.info_hash_v2,
    };
    print_info(&tracker, &meta.info, hashes, &v2_hashes);
    Ok(())
}

/// The info hashes a torrent is shown with.
pub(super) struct InfoHashes {
    /// The v1 hash (`Info Hash:`), absent for v2-only torrents.
    pub v1: Option<bitrush::types::InfoHash>,
    /// The v2 hash (`Info Hash v2:`), for v2 and hybrid torrents.
    pub v2: Option<bitrush::types::InfoHashV2>,
}

/// Prints the `info` block (shared by `info` and `magnet_info`): `Length` counts the real
/// files (not pad files); a v2-only torrent shows `Info Hash v2` in place of `Info Hash` and
/// its piece-layer hashes (`v2_hashes`, file by file) as `Piece Hashes`.
pub(super) fn print_info(
    tracker: &str,
    info: &bitrush::metainfo::Info,
    hashes: InfoHashes,
    v2_hashes: &[[u8; 32]],
) {
    let mut out = String::new();
    out.push_str(&format!("Tracker URL: {tracker}\n"));
    out.push_str(&format!("Length: {}\n", info.content_length()));
    if let Some(v1) = hashes.v1 {
        out.push_str(&format!("Info Hash: {v1}\n"));
    }
    if let Some(v2) = hashes.v2 {
        out.push_str(&format!("Info Hash v2: {v2}\n"));
    }
    out.push_str(&format!("Piece Length: {}\n", info.piece_length));
    out.push_str("Piece Hashes:\n");
    if info.version.has_v1() {
        for hash in &info.pieces {
            out.push_str(&bitrush::types::to_hex(hash));
            out.push('\n');
        }
    } else {
        for hash in v2_hashes {
            out.push_str(&bitrush::types::to_hex(hash));
            out.push('\n');
        }
    }
    if info.multi_file {
        out.push_str("Files:\n");
        for (_, f) in info.real_files() {
            out.push_str(&format!("{} {}\n", f.length, f.path.join("/")));
        }
    }
    print!("{out}");
}

fn announce_request(meta: &Metainfo, peer_id: PeerId) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: meta.info_hash,
        peer_id,
        port: ANNOUNCE_PORT,
        uploaded: 0,
        downloaded: 0,
        left: meta.info.total_length,
        event: Event::Started,
        numwant: Some(200),
        key: rand::random(),
    }
}

pub async fn peers(path: &Path) -> anyhow::Result<()> {
    let meta = load_torrent(path)?;
    let tiers = meta.tracker_tiers();
    if tiers.is_empty() {
        bail!("{} names no tracker", path.display());
    }
    let req = announce_request(&meta, engine::new_peer_id());
    let resp = engine::tracker::announce_all(&tiers, &req).await?;
    let mut out = String::new();
    for peer in resp.peers {
        out.push_str(&format!("{peer}\n"));
    }
    print!("{out}");
    // We do not listen on the port we announced: take ourselves off the trackers' lists.
    let stopped = AnnounceRequest {
        event: Event::Stopped,
        ..req
    };
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        engine::tracker::announce_all(&tiers, &stopped),
    )
    .await;
    Ok(())
}

async fn resolve(peer: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = peer.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(peer)
        .await
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| anyhow!("invalid peer address {peer:?}: expected ip:port"))
}

pub async fn handshake(path: &Path, peer: &str) -> anyhow::Result<()> {
    let meta = load_torrent(path)?;
    let addr = resolve(peer).await?;
    let mut stream = engine::peer::connect(addr).await?;
    let theirs =
        engine::peer::exchange_handshake(&mut stream, addr, meta.info_hash, engine::new_peer_id())
            .await?;
    println!("Peer ID: {}", theirs.peer_id);
    Ok(())
}

/// What a download needs to know about a torrent, from a `.torrent` file or a magnet link.
pub(super) struct Torrent {
    pub info: bitrush::metainfo::Info,
    pub info_bytes: Vec<u8>,
    pub info_hash: bitrush::types::InfoHash,
    pub trackers: Vec<Vec<String>>,
    pub peers: Vec<SocketAddr>,
}

impl From<Metainfo> for Torrent {
    fn from(meta: Metainfo) -> Torrent {
        Torrent {
            trackers: meta.tracker_tiers(),
            info: meta.info,
            info_bytes: meta.info_bytes,
            info_hash: meta.info_hash,
            peers: Vec::new(),
        }
    }
}

/// How a session runs beyond its target.
#[derive(Clone, Debug, Default)]
pub(super) struct SessionOptions {
    /// Port to listen on for incoming peers (0: any free port).
    pub port: u16,
    /// Keep seeding after completion, until these limits (or Ctrl-C).
    pub seed: Option<SeedLimits>,
    /// Hash existing data even when a resume state vouches for it.
    pub recheck: bool,
}

/// Runs a download with the progress display; returns when the target is complete.
pub(super) async fn run_download(torrent: Torrent, target: Target) -> anyhow::Result<()> {
    run_session(torrent, target, &SessionOptions::default()).await
}

/// Runs a session (download, then seeding if asked) until done or Ctrl-C/SIGTERM.
pub(super) async fn run_session(
    torrent: Torrent,
    target: Target,
    opts: &SessionOptions,
) -> anyhow::Result<()> {
    // Pieces are verified with the v1 SHA-1 hashes for now; a v2-only torrent has none.
    if !torrent.info.version.has_v1() {
        bail!("this is a BitTorrent v2-only torrent: bitrush can show it (`info`) but not download or seed it yet");
    }
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", opts.port))
        .await
        .with_context(|| format!("cannot listen on port {}", opts.port))?;
    let (tx, rx) = tokio::sync::watch::channel(Default::default());
    let bar = super::progress::spawn(rx);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let total = torrent.info.total_length;
    let params = DownloadParams {
        info: Arc::new(torrent.info),
        info_bytes: Some(torrent.info_bytes.into()),
        info_hash: torrent.info_hash,
        trackers: torrent.trackers,
        peers: torrent.peers,
        target,
        peer_id: engine::new_peer_id(),
        listener: Some(listener),
        port: opts.port,
        max_peers: 50,
        config: Default::default(),
        seed: opts.seed,
        assume_complete: false,
        recheck: opts.recheck,
        progress: Some(tx),
        shutdown: Some(stop_rx),
    };
    let result = engine::download(params).await;
    if let Some(bar) = bar {
        let _ = bar.await;
    }
    match result? {
        Outcome::Complete => Ok(()),
        Outcome::Interrupted => {
            bail!("interrupted; verified pieces are kept (of {total} bytes), run again to resume")
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

pub async fn download_piece(path: &Path, index: u32, output: &Path) -> anyhow::Result<()> {
    let torrent: Torrent = match super::magnet::as_link(path) {
        Some(link) => super::magnet::torrent_from_magnet(link).await?,
        None => load_torrent(path)?.into(),
    };
    let count = torrent.info.piece_count();
    if index >= count {
        bail!("piece index {index} is out of range (the torrent has {count} pieces)");
    }
    run_download(
        torrent,
        Target::Piece {
            index,
            path: output.to_path_buf(),
        },
    )
    .await?;
    println!("Piece {index} downloaded to {}.", output.display());
    Ok(())
}

pub async fn download(path: &Path, output: &Path, opts: &SessionOptions) -> anyhow::Result<()> {
    let torrent: Torrent = match super::magnet::as_link(path) {
        Some(link) => super::magnet::torrent_from_magnet(link).await?,
        None => load_torrent(path)?.into(),
    };
    run_session(torrent, Target::Files(output.to_path_buf()), opts).await?;
    println!("Downloaded {} to {}.", path.display(), output.display());
    Ok(())
}

/// Seeds existing data: verifies it (read-only), then serves it until the limits or Ctrl-C.
pub async fn seed(
    path: &Path,
    data: &Path,
    partial: bool,
    opts: &SessionOptions,
) -> anyhow::Result<()> {
    let meta = load_torrent(path)?;
    let opts = SessionOptions {
        seed: Some(opts.seed.unwrap_or_default()),
        ..opts.clone()
    };
    let target = Target::Existing {
        path: data.to_path_buf(),
        partial,
    };
    run_session(meta.into(), target, &opts).await
}
