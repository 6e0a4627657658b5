//! Torrent files and what they hold: torrents made with mktorrent or
//! libtorrent, libtorrent's view of a torrent ([`LtInfo`], the reference the
//! tests compare bitrush with), hand-built bencode for torrents bitrush must
//! accept or reject, and magnet links.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::payload::{write_payload, TestDir};
use super::procs::run_checked;
use super::tools::{require_tool, support_script};
use super::tracker::Tracker;

// ---------------------------------------------------------------------------
// Torrent creation and inspection (mktorrent, libtorrent)
// ---------------------------------------------------------------------------

/// Creates `<src>.torrent` next to `src` (a file or a folder) with mktorrent:
/// pieces of 2^`piece_len_log2` bytes, announce URL `announce`.
pub fn mktorrent(src: &Path, announce: &str, piece_len_log2: u32) -> PathBuf {
    mktorrent_tiers(src, &[vec![announce.to_string()]], piece_len_log2)
}

/// Like [`mktorrent`] with an announce-list: one `-a` per tier (a tier's
/// URLs joined by commas).
pub fn mktorrent_tiers(src: &Path, tiers: &[Vec<String>], piece_len_log2: u32) -> PathBuf {
    let out = next_to(src, ".torrent");
    mktorrent_tiers_to(src, tiers, piece_len_log2, &out);
    out
}

/// `src`'s file name with `suffix` appended, in `src`'s folder.
fn next_to(src: &Path, suffix: &str) -> PathBuf {
    let mut name = src.file_name().expect("file name").to_os_string();
    name.push(suffix);
    src.with_file_name(name)
}

/// Like [`mktorrent`] with an explicit output path (overwritten if present).
pub fn mktorrent_to(src: &Path, announce: &str, piece_len_log2: u32, out: &Path) {
    mktorrent_tiers_to(src, &[vec![announce.to_string()]], piece_len_log2, out);
}

/// Like [`mktorrent_tiers`] with an explicit output path (overwritten if
/// present).
fn mktorrent_tiers_to(src: &Path, tiers: &[Vec<String>], piece_len_log2: u32, out: &Path) {
    let tool = require_tool("mktorrent");
    // mktorrent refuses to overwrite (and 1.1 has no -f).
    let _ = fs::remove_file(out);
    let mut cmd = Command::new(tool);
    for tier in tiers {
        cmd.arg("-a").arg(tier.join(","));
    }
    cmd.arg("-l")
        .arg(piece_len_log2.to_string())
        .arg("-o")
        .arg(out)
        .arg(src);
    run_checked("mktorrent", cmd, Duration::from_secs(60));
}

/// An announce URL where no tracker runs (port 1), for torrents that are
/// never announced.
pub const UNUSED_ANNOUNCE: &str = "http://127.0.0.1:1/announce";

/// Writes `p.bin` (`len` bytes of [`payload`] from `seed`) into `dir` and
/// makes its torrent (32 KiB pieces, announcing to [`UNUSED_ANNOUNCE`]);
/// returns the torrent and the payload.
pub fn unannounced_torrent(dir: &TestDir, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let src = dir.join("p.bin");
    let data = write_payload(&src, len, seed);
    (mktorrent(&src, UNUSED_ANNOUNCE, 15), data)
}

/// The info hash (per libtorrent) that mktorrent gives `src` with pieces of
/// 2^`piece_len_log2` bytes. The announce URL is not part of the info dict,
/// so this lets a test whitelist a torrent before it knows the tracker port.
pub fn mktorrent_info_hash(src: &Path, piece_len_log2: u32) -> String {
    let tmp = next_to(src, ".placeholder.torrent");
    mktorrent_to(src, UNUSED_ANNOUNCE, piece_len_log2, &tmp);
    let hash = lt_info_hash(&tmp);
    fs::remove_file(&tmp).expect("remove placeholder torrent");
    hash
}

/// A tracker that whitelists `src`'s torrent, and that torrent
/// (`<src>.torrent`, announcing to the tracker over UDP if `udp`, else HTTP)
/// with libtorrent's view of it.
pub fn tracked_torrent(src: &Path, piece_len_log2: u32, udp: bool) -> (Tracker, PathBuf, LtInfo) {
    let hash = mktorrent_info_hash(src, piece_len_log2);
    let tracker = Tracker::start(&[&hash]);
    let url = if udp {
        tracker.udp_url()
    } else {
        tracker.http_url()
    };
    let torrent = mktorrent(src, &url, piece_len_log2);
    let info = lt_info(&torrent);
    assert_eq!(
        info.info_hash, hash,
        "info hash changed with the announce URL"
    );
    (tracker, torrent, info)
}

/// Creates a torrent with libtorrent's `create_torrent` (v1 only).
pub fn lt_make_torrent(src: &Path, out: &Path, piece_length: u32, trackers: &[&str]) {
    lt_make_torrent_version(src, out, piece_length, trackers, "v1");
}

/// Creates a torrent with libtorrent's `create_torrent`: `version` is `v1`, `v2`, `hybrid`
/// (libtorrent's default: v1 and v2, with BEP 47 pad files) or `v1-padded` (v1 laid out with
/// pad files as a hybrid is); `piece_length` 0 lets libtorrent choose.
pub fn lt_make_torrent_version(
    src: &Path,
    out: &Path,
    piece_length: u32,
    trackers: &[&str],
    version: &str,
) {
    let mut cmd = support_script("lt_tool.py");
    cmd.arg("make-torrent")
        .arg(src)
        .arg(out)
        .arg("--piece-length")
        .arg(piece_length.to_string())
        .arg("--version")
        .arg(version);
    for t in trackers {
        cmd.arg("--tracker").arg(t);
    }
    run_checked("lt_tool make-torrent", cmd, Duration::from_secs(60));
}

/// One file of a torrent as libtorrent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtFile {
    /// Path inside the torrent, '/'-joined, without the torrent's name for
    /// multi-file torrents (for a single-file torrent: the name).
    pub path: String,
    pub length: u64,
    pub pad: bool,
    /// BEP 47 attributes `x` and `h`.
    pub executable: bool,
    pub hidden: bool,
    /// For a symlink: its target as libtorrent resolved it (torrent name included).
    pub symlink: Option<String>,
    /// The v2 `pieces root` (64 hex), if any.
    pub root: Option<String>,
}

/// A torrent's metadata as parsed by libtorrent (the reference for tests).
#[derive(Debug, Clone)]
pub struct LtInfo {
    pub name: String,
    /// libtorrent's `info_hash()`: the v2 hash truncated to 20 bytes when the torrent has v2
    /// metadata (hybrids included), else the v1 hash.
    pub info_hash: String,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    /// Pad files included.
    pub total_size: u64,
    pub piece_length: u64,
    pub num_pieces: usize,
    /// v1 piece hashes (none for a v2-only torrent).
    pub piece_hashes: Vec<String>,
    /// v2 piece hashes, file by file (64 hex each).
    pub piece_hashes_v2: Vec<String>,
    pub trackers: Vec<String>,
    pub multi_file: bool,
    /// Every file, pad files included.
    pub files: Vec<LtFile>,
}

impl LtInfo {
    /// The files that are not pad files.
    pub fn real_files(&self) -> impl Iterator<Item = &LtFile> {
        self.files.iter().filter(|f| !f.pad)
    }

    /// Bytes of the files that are not pad files.
    pub fn content_length(&self) -> u64 {
        self.real_files().map(|f| f.length).sum()
    }
}

/// Parses `torrent` with libtorrent (`lt_tool.py info-json`).
pub fn lt_info(torrent: &Path) -> LtInfo {
    let mut cmd = support_script("lt_tool.py");
    cmd.arg("info-json").arg(torrent);
    let out = run_checked("lt_tool info-json", cmd, Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lt_tool info-json JSON");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    let opt = |k: &str| v[k].as_str().map(String::from);
    let u = |k: &str| v[k].as_u64().expect(k);
    let strs = |k: &str| {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|x| x.as_str().expect(k).to_string())
            .collect::<Vec<_>>()
    };
    LtInfo {
        name: s("name"),
        info_hash: s("info_hash"),
        info_hash_v1: opt("info_hash_v1"),
        info_hash_v2: opt("info_hash_v2"),
        total_size: u("total_size"),
        piece_length: u("piece_length"),
        num_pieces: u("num_pieces") as usize,
        piece_hashes: strs("piece_hashes"),
        piece_hashes_v2: strs("piece_hashes_v2"),
        trackers: strs("trackers"),
        multi_file: v["multi_file"].as_bool().expect("multi_file"),
        files: v["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| LtFile {
                path: f["path"].as_str().expect("path").to_string(),
                length: f["length"].as_u64().expect("length"),
                pad: f["pad"].as_bool().expect("pad"),
                executable: f["executable"].as_bool().expect("executable"),
                hidden: f["hidden"].as_bool().expect("hidden"),
                symlink: f["symlink"].as_str().map(String::from),
                root: f["root"].as_str().map(String::from),
            })
            .collect(),
    }
}

/// The v1 info hash (40 lowercase hex) according to libtorrent.
pub fn lt_info_hash(torrent: &Path) -> String {
    lt_info(torrent).info_hash
}

/// The piece hashes (40 lowercase hex each) according to libtorrent.
pub fn lt_piece_hashes(torrent: &Path) -> Vec<String> {
    lt_info(torrent).piece_hashes
}

/// For a single-file torrent: which pieces of the file at `path` match the
/// torrent's hashes (per libtorrent). A missing or short file counts as
/// missing pieces.
pub fn verified_pieces(path: &Path, info: &LtInfo) -> Vec<bool> {
    use sha1::{Digest, Sha1};
    let data = fs::read(path).unwrap_or_default();
    let plen = info.piece_length as usize;
    (0..info.num_pieces)
        .map(|i| {
            let start = i * plen;
            let end = (start + plen).min(info.total_size as usize);
            end <= data.len() && to_hex(&Sha1::digest(&data[start..end])) == info.piece_hashes[i]
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Hand-built bencode (for torrents bitrush must accept or reject)
// ---------------------------------------------------------------------------

/// A bencode value. Dictionaries keep the order given (so tests can build
/// unsorted ones on purpose); use [`dict`] for sorted keys.
#[derive(Debug, Clone)]
pub enum Bv {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bv>),
    Dict(Vec<(Vec<u8>, Bv)>),
}

pub fn bstr(s: &str) -> Bv {
    Bv::Bytes(s.as_bytes().to_vec())
}

/// A dictionary with keys sorted as bencode requires.
pub fn dict(entries: &[(&str, Bv)]) -> Bv {
    let mut v: Vec<(Vec<u8>, Bv)> = entries
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Bv::Dict(v)
}

pub fn bencode(v: &Bv) -> Vec<u8> {
    fn enc(v: &Bv, out: &mut Vec<u8>) {
        match v {
            Bv::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bv::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bv::List(l) => {
                out.push(b'l');
                for x in l {
                    enc(x, out);
                }
                out.push(b'e');
            }
            Bv::Dict(d) => {
                out.push(b'd');
                for (k, x) in d {
                    enc(&Bv::Bytes(k.clone()), out);
                    enc(x, out);
                }
                out.push(b'e');
            }
        }
    }
    let mut out = Vec::new();
    enc(v, &mut out);
    out
}

/// SHA-1 of each `piece_length` chunk of `data`, concatenated (the `pieces`
/// value of an info dict).
pub fn sha1_pieces(data: &[u8], piece_length: usize) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    data.chunks(piece_length)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `hex` (an info hash, say); panics on anything but pairs of
/// hex digits.
pub fn hex_to_bytes(hex: &str) -> Vec<u8> {
    assert_eq!(hex.len() % 2, 0, "odd hex length: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

// ---------------------------------------------------------------------------
// Magnet links
// ---------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `magnet:?xt=urn:btih:<hash>`, then `&dn=<dn>` (given encoded) if any, a
/// percent-encoded `&tr=` per tracker and an `&x.pe=` per peer.
pub fn magnet_link(
    info_hash: &str,
    dn: Option<&str>,
    trackers: &[String],
    peers: &[SocketAddr],
) -> String {
    let mut link = format!("magnet:?xt=urn:btih:{info_hash}");
    if let Some(dn) = dn {
        link.push_str(&format!("&dn={dn}"));
    }
    for t in trackers {
        link.push_str(&format!("&tr={}", pct(t)));
    }
    for p in peers {
        link.push_str(&format!("&x.pe={p}"));
    }
    link
}
