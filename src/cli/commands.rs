//! One function per command: parse arguments into library types, call the library, print.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use bitrush::engine::connection::Transports;
use bitrush::engine::dht::{DhtHandle, DhtOptions};
use bitrush::engine::limits::RateLimits;
use bitrush::engine::probe::{self, probe_announcer};
use bitrush::engine::stream::{Stream, StreamOutput};
use bitrush::engine::udp::{Udp, UdpOptions};
use bitrush::engine::{self, Outcome, Progress, SeedLimits, Target, TorrentParams};
use bitrush::metainfo::Metainfo;
use bitrush::mse::Encryption;
use bitrush::tracker::Event;
use bitrush::wire::Handshake;

use super::progress::{Display, Kind, Style};

/// Largest `.torrent` file we read.
const MAX_TORRENT_FILE: u64 = 64 * 1024 * 1024;

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

pub fn info(path: &Path, json: bool) -> anyhow::Result<()> {
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
    if json {
        println!("{}", info_json(&tracker, &meta.info, &hashes, &v2_hashes));
    } else {
        print_info(&tracker, &meta.info, hashes, &v2_hashes);
    }
    Ok(())
}

/// `info --json`: the same facts as the text block, as one object.
fn info_json(
    tracker: &str,
    info: &bitrush::metainfo::Info,
    hashes: &InfoHashes,
    v2_hashes: &[[u8; 32]],
) -> serde_json::Value {
    let pieces: Vec<String> = if info.version.has_v1() {
        info.pieces
            .iter()
            .map(|h| bitrush::types::to_hex(h))
            .collect()
    } else {
        v2_hashes
            .iter()
            .map(|h| bitrush::types::to_hex(h))
            .collect()
    };
    serde_json::json!({
        "name": info.name,
        "tracker": tracker,
        "length": info.content_length(),
        "info_hash": hashes.v1.map(|h| h.to_string()),
        "info_hash_v2": hashes.v2.map(|h| h.to_string()),
        "piece_length": info.piece_length,
        "piece_hashes": pieces,
        "multi_file": info.multi_file,
        "files": super::select::list_json(info)["files"],
    })
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

pub async fn peers(path: &Path, json: bool) -> anyhow::Result<()> {
    let meta = load_torrent(path)?;
    let tiers = meta.tracker_tiers();
    if tiers.is_empty() {
        bail!("{} names no tracker", path.display());
    }
    let announcer = probe_announcer(meta.info_hash, engine::new_peer_id());
    let req = announcer.request(Event::Started, 0, 0, meta.info.total_length);
    let resp = engine::tracker::announce_all(&tiers, &req).await?;
    let mut out = String::new();
    if json {
        let peers: Vec<String> = resp.peers.iter().map(ToString::to_string).collect();
        out = format!("{}\n", serde_json::json!({ "peers": peers }));
    } else {
        for peer in resp.peers {
            out.push_str(&format!("{peer}\n"));
        }
    }
    print!("{out}");
    // We do not listen on the port we announced: take ourselves off the trackers' lists.
    probe::announce_stopped(&announcer, &tiers).await;
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
    let ours = Handshake::new(meta.info_hash, engine::new_peer_id());
    let (_, theirs) = engine::connection::connect_and_handshake(addr, &ours).await?;
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
    /// BEP 19 web seeds.
    pub web_seeds: Vec<String>,
    /// BEP 27: trackers only (no DHT, no peer exchange).
    pub private: bool,
    /// v2 piece layers by file index (from the file, or fetched from peers).
    pub piece_layers: std::collections::BTreeMap<usize, bitrush::metainfo::PieceLayer>,
}

impl From<Metainfo> for Torrent {
    fn from(meta: Metainfo) -> Torrent {
        Torrent {
            trackers: meta.tracker_tiers(),
            private: meta.info.private,
            info: meta.info,
            info_bytes: meta.info_bytes,
            info_hash: meta.info_hash,
            peers: Vec::new(),
            web_seeds: meta.web_seeds,
            piece_layers: meta.piece_layers,
        }
    }
}

/// Where the DHT starts from.
#[derive(Clone, Debug)]
pub(super) struct DhtSettings {
    /// `host:port` of the nodes to join through.
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept between runs.
    pub state_file: Option<std::path::PathBuf>,
}

/// How a session runs beyond its target.
#[derive(Clone, Debug)]
pub(super) struct SessionOptions {
    /// Port to listen on for incoming peers, TCP and the DHT's UDP (0: any free port).
    pub port: u16,
    /// Use the DHT (`None`: no DHT).
    pub dht: Option<DhtSettings>,
    /// Dial and accept TCP.
    pub tcp: bool,
    /// Dial and accept uTP.
    pub utp: bool,
    /// MSE policy.
    pub encryption: Encryption,
    /// Exchange peers with peers (BEP 11).
    pub pex: bool,
    /// Download from the torrent's web seeds (BEP 19).
    pub web_seeds: bool,
    /// Keep seeding after completion, until these limits (or Ctrl-C).
    pub seed: Option<SeedLimits>,
    /// Hash existing data even when a resume state vouches for it.
    pub recheck: bool,
    /// Show no progress and no summary (`-q`).
    pub quiet: bool,
    /// When the command started, the summary's clock (`None`: when the session starts).
    pub started: Option<std::time::Instant>,
    /// Most connections we open.
    pub max_peers: usize,
    /// Download and upload rate limits (shared by every connection of the session).
    pub rate_limits: RateLimits,
    /// Fetch pieces in index order.
    pub sequential: bool,
    /// Only these files (indices into `Info::files`; `None`: all).
    pub files: Option<Vec<usize>>,
    /// Progress as JSON lines on stdout.
    pub json: bool,
}

/// The sockets of a session: the TCP listener for peers and the DHT node on the same port
/// number.
pub(super) struct Network {
    pub listener: tokio::net::TcpListener,
    pub port: u16,
    pub dht: Option<DhtHandle>,
    pub transports: Transports,
}

impl Default for SessionOptions {
    /// Any port, no DHT, peer exchange, TCP and uTP, encryption preferred.
    fn default() -> SessionOptions {
        SessionOptions {
            port: 0,
            dht: None,
            tcp: true,
            utp: true,
            encryption: Encryption::Prefer,
            pex: true,
            web_seeds: true,
            seed: None,
            recheck: false,
            quiet: false,
            started: None,
            max_peers: 50,
            rate_limits: RateLimits::default(),
            sequential: false,
            files: None,
            json: false,
        }
    }
}

impl Network {
    /// Binds the listener on `opts.port` and starts the UDP endpoint (DHT and uTP, as asked) on
    /// its port number.
    pub async fn start(opts: &SessionOptions) -> anyhow::Result<Network> {
        let listener = engine::connection::bind_listener(opts.port)
            .with_context(|| format!("cannot listen on port {}", opts.port))?;
        let port = listener.local_addr().map_or(opts.port, |a| a.port());
        let udp = start_udp(port, opts.dht.as_ref(), opts.utp).await;
        Ok(Network {
            listener,
            port,
            dht: udp.dht,
            transports: Transports {
                tcp: opts.tcp,
                utp: udp.utp,
                encryption: opts.encryption,
                memory: Default::default(),
                limits: opts.rate_limits.clone(),
            },
        })
    }
}

/// Starts the UDP endpoint on `port` (0: any) with the DHT and uTP as asked; a failure is
/// logged, not fatal: TCP, trackers and peer exchange still work.
pub(super) async fn start_udp(port: u16, dht: Option<&DhtSettings>, utp: bool) -> Udp {
    let opts = UdpOptions {
        port,
        dht: dht.map(|d| DhtOptions {
            bootstrap: d.bootstrap.clone(),
            state_file: d.state_file.clone(),
        }),
        utp,
    };
    match engine::udp::start(opts).await {
        Ok(udp) => udp,
        Err(e) => {
            tracing::warn!(error = %engine::error_chain(&e), "running without the DHT and uTP");
            Udp::default()
        }
    }
}

/// What a download needs, from a `.torrent` file or (fetched with the DHT if any) a magnet link.
async fn torrent_from(path: &Path, network: &Network) -> anyhow::Result<Torrent> {
    match super::magnet::as_link(path) {
        Some(link) => {
            super::magnet::torrent_from_magnet(
                link,
                network.dht.clone(),
                network.transports.clone(),
            )
            .await
        }
        None => Ok(load_torrent(path)?.into()),
    }
}

/// Runs a session (download, then seeding if asked) until done or Ctrl-C/SIGTERM; returns the
/// last progress snapshot.
pub(super) async fn run_session(
    torrent: Torrent,
    target: Target,
    opts: &SessionOptions,
    network: Network,
) -> anyhow::Result<Progress> {
    let Network {
        listener,
        port,
        dht,
        transports,
    } = network;
    let (tx, rx) = tokio::sync::watch::channel(Default::default());
    let kind = match target {
        Target::Existing { .. } => Kind::Seed,
        Target::Files(_) | Target::Piece { .. } | Target::Stream(_) => Kind::Download {
            seed_after: opts.seed.is_some(),
        },
    };
    let started = opts.started.unwrap_or_else(std::time::Instant::now);
    let style = if opts.json {
        Style::Json
    } else {
        Style::detect(opts.quiet)
    };
    let display = Display::start(rx, style, kind, started);
    let shown_target = target.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let params = TorrentParams {
        info: Arc::new(torrent.info),
        info_bytes: Some(torrent.info_bytes.into()),
        info_hash: torrent.info_hash,
        trackers: torrent.trackers,
        peers: torrent.peers,
        web_seeds: if opts.web_seeds {
            torrent.web_seeds
        } else {
            Vec::new()
        },
        target,
        peer_id: engine::new_peer_id(),
        listener: Some(listener),
        port,
        max_peers: opts.max_peers,
        config: bitrush::swarm::Config {
            sequential: opts.sequential,
            ..Default::default()
        },
        seed: opts.seed,
        assume_complete: false,
        recheck: opts.recheck,
        progress: Some(tx),
        shutdown: Some(stop_rx),
        dht: dht.clone(),
        private: torrent.private,
        pex: opts.pex,
        transports: transports.clone(),
        hosted: None,
        files: opts.files.clone(),
        piece_layers: torrent.piece_layers,
    };
    let result = engine::run_torrent(params).await;
    if let Some(dht) = &dht {
        dht.shutdown().await;
    }
    let last = display.finish().await;
    match result? {
        Outcome::Complete => Ok(last),
        Outcome::Interrupted => Err(anyhow!(interrupted(&shown_target, &last))),
    }
}

/// What an interrupted session says: what is kept, and that the same command resumes.
fn interrupted(target: &Target, last: &Progress) -> String {
    match target {
        Target::Piece { index, .. } => {
            format!("interrupted before piece {index} was complete; nothing was written")
        }
        Target::Stream(_) => format!(
            "interrupted: {} of {} pieces were verified; nothing is kept",
            last.done_pieces, last.total_pieces
        ),
        Target::Files(path) | Target::Existing { path, .. } => format!(
            "interrupted: {} of {} pieces ({} of {}) are verified and kept in {}; \
             run the same command again to resume",
            last.done_pieces,
            last.total_pieces,
            super::progress::bytes(last.done_bytes),
            super::progress::bytes(last.total_bytes),
            path.display()
        ),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub(super) async fn wait_for_signal() {
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

pub async fn download_piece(
    path: &Path,
    index: u32,
    output: &Path,
    opts: &SessionOptions,
) -> anyhow::Result<()> {
    let network = Network::start(opts).await?;
    let torrent = torrent_from(path, &network).await?;
    let count = torrent.info.piece_count();
    if index >= count {
        bail!("piece index {index} is out of range (the torrent has {count} pieces)");
    }
    let target = Target::Piece {
        index,
        path: output.to_path_buf(),
    };
    run_session(torrent, target, opts, network).await?;
    println!("Piece {index} downloaded to {}.", output.display());
    Ok(())
}

/// What to download of a torrent, and how to report it (`download`'s choices).
#[derive(Clone, Debug, Default)]
pub(super) struct Choice {
    /// Print the files and exit.
    pub list: bool,
    /// Only these files.
    pub only: Option<super::select::OnlyFiles>,
    /// The file to stream (`-o -`).
    pub file: Option<String>,
    /// Fetch pieces in order.
    pub sequential: bool,
    /// JSON lines on stdout.
    pub json: bool,
}

/// `-o -`: stream to stdout.
fn is_stdout(output: &Path) -> bool {
    output.as_os_str() == "-"
}

pub async fn download(
    path: &Path,
    output: Option<&Path>,
    opts: &SessionOptions,
    choice: &Choice,
) -> anyhow::Result<()> {
    let mut opts = SessionOptions {
        sequential: choice.sequential,
        json: choice.json,
        ..opts.clone()
    };
    let stream = output.is_some_and(is_stdout);
    if stream && choice.json {
        bail!("--json cannot be used with -o -: stdout carries the data");
    }
    if stream && opts.seed.is_some() {
        bail!(
            "-o - streams the data and keeps nothing to seed: leave out --seed and the seed limits"
        );
    }
    if stream && choice.only.is_some() {
        bail!("-o - streams one file: choose it with --file, not --only");
    }
    if choice.file.is_some() && !stream {
        bail!("--file chooses the file to stream: use it with -o -");
    }
    let network = Network::start(&opts).await?;
    let torrent = torrent_from(path, &network).await?;
    let info = &torrent.info;
    if choice.list {
        if choice.json {
            println!("{}", super::select::list_json(info));
        } else {
            print!("{}", super::select::list_lines(info));
        }
        return Ok(());
    }
    let Some(output) = output else {
        bail!("-o PATH is needed (or --list)");
    };
    if let Some(only) = &choice.only {
        opts.files = Some(only.resolve(info).map_err(|e| anyhow!(e))?);
    }
    let staging;
    let target = if stream {
        let file = match &choice.file {
            Some(which) => super::select::resolve_file(info, which).map_err(|e| anyhow!(e))?,
            None => {
                let mut real = info.real_files();
                match (real.next(), real.next()) {
                    (Some((i, _)), None) => i,
                    _ => bail!(
                        "-o - streams one file: choose it with --file INDEX|PATH (see --list)"
                    ),
                }
            }
        };
        staging = tempfile::Builder::new()
            .prefix("bitrush-stream-")
            .tempdir()
            .context("cannot create a temporary folder for the stream")?;
        let stdout = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot write to stdout")?;
        Target::Stream(Stream {
            dir: staging.path().to_path_buf(),
            file,
            output: StreamOutput::new(std::fs::File::from(stdout)),
        })
    } else {
        Target::Files(output.to_path_buf())
    };
    let started = opts.started.unwrap_or_else(std::time::Instant::now);
    let last = run_session(torrent, target, &opts, network).await?;
    let line = format!("Downloaded {} to {}.", path.display(), output.display());
    if opts.json {
        println!(
            "{}",
            super::progress::summary_json(&last, started.elapsed(), output)
        );
    } else if stream {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
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
    let network = Network::start(&opts).await?;
    run_session(meta.into(), target, &opts, network).await?;
    Ok(())
}
