//! Fixtures for the daemon's unit tests: a daemon on free loopback ports in a temporary state
//! directory (no DHT, no uTP), and `.torrent` files built by hand (pad files included).

use std::path::Path;
use std::time::Duration;

use super::{AddRequest, AddSource, Daemon, DaemonConfig};
use crate::queue::{QueueLimits, TorrentId};

/// A daemon's settings for a test: state and downloads under `dir`, any free peer port.
pub(super) fn config(dir: &Path) -> DaemonConfig {
    DaemonConfig {
        state_dir: dir.join("state"),
        download_dir: dir.join("downloads"),
        port: 0,
        max_connections: 16,
        max_peers_per_torrent: 8,
        limits: QueueLimits::default(),
        dht: None,
        tcp: true,
        utp: false,
        encryption: crate::mse::Encryption::Prefer,
        save_every: Duration::from_secs(3600),
        max_download_rate: None,
        max_upload_rate: None,
    }
}

/// Starts a daemon with [`config`].
pub(super) async fn start(dir: &Path) -> Daemon {
    Daemon::start(config(dir)).await.expect("the daemon starts")
}

/// Three files with a BEP 47 pad file after the first, 16-byte pieces: `a.bin` (piece 0 and
/// its pad), `b.bin` (pieces 1 and 2), `c.bin` (piece 3). The user's files are 0, 1 and 2;
/// the layout's are 0, 2 and 3.
pub(super) fn padded_torrent() -> Vec<u8> {
    torrent(
        &[
            ("a.bin", 10, false),
            (".pad/6", 6, true),
            ("b.bin", 32, false),
            ("c.bin", 16, false),
        ],
        16,
    )
}

/// A v1 multi-file `.torrent` named `t` whose files are `(name, length, pad)` in order, with
/// all-zero piece hashes (nothing is ever downloaded against them).
pub(super) fn torrent(files: &[(&str, u64, bool)], piece_length: u32) -> Vec<u8> {
    torrent_named("t", files, piece_length)
}

/// [`torrent`] named `name` (its folder in the download directory).
pub(super) fn torrent_named(name: &str, files: &[(&str, u64, bool)], piece_length: u32) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(s);
    }
    let total: u64 = files.iter().map(|f| f.1).sum();
    let pieces = total.div_ceil(u64::from(piece_length)) as usize;
    let mut out = b"d4:infod5:filesl".to_vec();
    for &(name, length, pad) in files {
        out.push(b'd');
        if pad {
            string(&mut out, b"attr");
            string(&mut out, b"p");
        }
        string(&mut out, b"length");
        out.extend_from_slice(format!("i{length}e").as_bytes());
        string(&mut out, b"path");
        out.push(b'l');
        for part in name.split('/') {
            string(&mut out, part.as_bytes());
        }
        out.extend_from_slice(b"ee");
    }
    out.push(b'e');
    string(&mut out, b"name");
    string(&mut out, name.as_bytes());
    string(&mut out, b"piece length");
    out.extend_from_slice(format!("i{piece_length}e").as_bytes());
    string(&mut out, b"pieces");
    string(&mut out, &vec![0u8; 20 * pieces]);
    out.extend_from_slice(b"ee");
    out
}

/// Adds `torrent`'s bytes, paused (nothing runs); returns its id.
pub(super) async fn add_paused(daemon: &Daemon, torrent: Vec<u8>) -> TorrentId {
    add(daemon, torrent, true).await
}

/// Adds `torrent`'s bytes; returns its id.
pub(super) async fn add(daemon: &Daemon, torrent: Vec<u8>, paused: bool) -> TorrentId {
    daemon
        .add(AddRequest {
            source: AddSource::Torrent(torrent),
            download_dir: None,
            paused,
        })
        .await
        .expect("added")
}

/// The info hashes of the torrents a daemon restarted on `dir` finds, with whether their
/// metadata came back too.
pub(super) async fn restarted(dir: &Path) -> Vec<(String, bool)> {
    let daemon = start(dir).await;
    let found = (daemon.list().into_iter())
        .map(|t| (t.info_hash, t.metadata_known))
        .collect();
    daemon.shutdown().await;
    found
}
