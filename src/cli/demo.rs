//! `bitrush demo`: the whole client on a swarm it builds itself on loopback, offline.
//!
//! It writes a generated payload to a temporary folder, makes a torrent for it, starts a few
//! in-process seeders on 127.0.0.1 (full sessions, the same code that seeds for real), downloads
//! the torrent from them with the full client and its progress display, checks the result byte
//! for byte, and removes everything it wrote.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use bitrush::create::create_torrent;
use bitrush::engine::{self, SeedLimits, Target, TorrentParams};
use bitrush::metainfo::Metainfo;
use rand::{RngCore, SeedableRng};

/// A temporary folder removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_payload(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6269_7472_7573_6821);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

fn files_equal(a: &Path, b: &Path) -> anyhow::Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Runs the demo: `size_mib` MiB served by `seeders` local seeders; `quiet`: only the result
/// line (on stdout) and errors.
pub async fn demo(size_mib: u64, seeders: usize, quiet: bool) -> anyhow::Result<()> {
    if size_mib == 0 || seeders == 0 {
        bail!("the demo needs a size of at least 1 MiB and at least one seeder");
    }
    let dir = TempDir(std::env::temp_dir().join(format!("bitrush-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)
        .with_context(|| format!("cannot create {}", dir.0.display()))?;
    let payload = dir.0.join("payload.bin");
    let size = size_mib * 1024 * 1024;
    if !quiet {
        eprintln!(
            "demo: writing a {size_mib} MiB payload and its torrent in {}",
            dir.0.display()
        );
    }
    write_payload(&payload, size).context("cannot write the demo payload")?;
    let torrent = create_torrent(&payload, 1 << 20, None)?;
    let meta = Metainfo::from_bytes(&torrent)?;
    let info = Arc::new(meta.info.clone());
    let info_bytes: Arc<[u8]> = meta.info_bytes.clone().into();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut seeds = tokio::task::JoinSet::new();
    for _ in 0..seeders {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?);
        seeds.spawn(engine::run_torrent(TorrentParams {
            info: info.clone(),
            info_bytes: Some(info_bytes.clone()),
            info_hash: meta.info_hash,
            trackers: Vec::new(),
            peers: Vec::new(),
            web_seeds: Vec::new(),
            target: Target::Existing {
                path: payload.clone(),
                partial: false,
            },
            peer_id: engine::new_peer_id(),
            listener: Some(listener),
            port: 0,
            max_peers: 50,
            config: Default::default(),
            seed: Some(SeedLimits::default()),
            assume_complete: true,
            recheck: false,
            progress: None,
            shutdown: Some(stop_rx.clone()),
            dht: None,
            private: false,
            pex: false,
            transports: Default::default(),
            hosted: None,
            files: None,
            piece_layers: Default::default(),
        }));
    }
    if !quiet {
        eprintln!(
            "demo: {seeders} seeders listening on {addrs:?}; downloading with the full client"
        );
    }

    let output = dir.0.join("downloaded.bin");
    let started = Instant::now();
    let torrent = super::commands::Torrent {
        peers: addrs,
        ..super::commands::Torrent::from(meta)
    };
    // Offline and on loopback only: no DHT, TCP without encryption (the seeders speak that).
    let opts = super::commands::SessionOptions {
        quiet,
        started: Some(started),
        utp: false,
        encryption: bitrush::mse::Encryption::Disable,
        ..super::commands::SessionOptions::default()
    };
    let network = super::commands::Network::start(&opts).await?;
    let result =
        super::commands::run_session(torrent, Target::Files(output.clone()), &opts, network).await;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    while seeds.join_next().await.is_some() {}
    result?;
    if !files_equal(&payload, &output)? {
        bail!("the downloaded file differs from the payload");
    }
    println!(
        "Downloaded {size_mib} MiB from {seeders} local seeders in {elapsed:.2} s ({:.0} MiB/s); \
         the output matches the payload byte for byte.",
        size_mib as f64 / elapsed.max(1e-9)
    );
    Ok(())
}
