//! Trackers beyond one HTTP announce URL: a torrent whose only tracker is UDP opentracker, and
//! announce-lists (BEP 12) whose first tracker is dead (a port nobody listens on), for `peers`,
//! `download` and magnet links.
//!
//! Expected peers are the libtorrent seeders' own ports; expected bytes are the payloads the
//! tests wrote; tier layouts are checked with libtorrent.

mod common;

use common::*;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
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

fn magnet(info_hash: &str, trackers: &[String]) -> String {
    let mut link = format!("magnet:?xt=urn:btih:{info_hash}");
    for t in trackers {
        link.push_str(&format!("&tr={}", pct(t)));
    }
    link
}

/// Creates `<src>.torrent` with mktorrent, one `-a` per tier (a tier's URLs joined by commas).
fn mktorrent_tiers(src: &Path, tiers: &[Vec<String>], piece_len_log2: u32) -> PathBuf {
    let tool = require_tool("mktorrent");
    let mut name = src.file_name().expect("file name").to_os_string();
    name.push(".torrent");
    let out = src.with_file_name(name);
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(tool);
    for tier in tiers {
        cmd.arg("-a").arg(tier.join(","));
    }
    cmd.arg("-l")
        .arg(piece_len_log2.to_string())
        .arg("-o")
        .arg(&out)
        .arg(src);
    run_checked("mktorrent", cmd, Duration::from_secs(60));
    out
}

/// The torrent's trackers grouped by tier, as libtorrent reads them.
fn lt_tiers(torrent: &Path) -> Vec<Vec<String>> {
    require_libtorrent();
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c")
        .arg(
            "import json, sys, libtorrent as lt\n\
             ti = lt.torrent_info(sys.argv[1])\n\
             tiers = {}\n\
             for t in ti.trackers(): tiers.setdefault(t.tier, []).append(t.url)\n\
             print(json.dumps([tiers[k] for k in sorted(tiers)]))",
        )
        .arg(torrent);
    let out = run_checked("lt tiers", cmd, Duration::from_secs(60));
    serde_json::from_slice(&out.stdout).expect("tiers JSON")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A single-file payload, a live opentracker, and a torrent announcing to `tiers(live)`.
struct TieredSwarm {
    tracker: Tracker,
    torrent: PathBuf,
    info_hash: String,
    data: Vec<u8>,
    seed_dir: PathBuf,
    dir: TestDir,
}

fn tiered_swarm(
    label: &str,
    seed: u64,
    tiers: impl Fn(&Tracker) -> Vec<Vec<String>>,
) -> TieredSwarm {
    let dir = TestDir::new(label);
    let seed_dir = dir.subdir("seed");
    let src = seed_dir.join("payload.bin");
    let data = write_payload(&src, 700_000, seed);
    let info_hash = mktorrent_info_hash(&src, 15);
    let tracker = Tracker::start(&[&info_hash]);
    let want = tiers(&tracker);
    let torrent = mktorrent_tiers(&src, &want, 15);
    // libtorrent may reorder URLs within a tier (BEP 12 shuffles them), so compare tiers as
    // sets, and check the order in the file itself.
    let sorted = |tiers: Vec<Vec<String>>| -> Vec<Vec<String>> {
        tiers
            .into_iter()
            .map(|mut t| {
                t.sort();
                t
            })
            .collect()
    };
    assert_eq!(
        sorted(lt_tiers(&torrent)),
        sorted(want.clone()),
        "mktorrent wrote other tiers"
    );
    let raw = std::fs::read(&torrent).expect("read torrent");
    let list_at = find(&raw, b"13:announce-list").expect("announce-list in the torrent");
    let positions: Vec<usize> = want
        .iter()
        .flatten()
        .map(|url| list_at + find(&raw[list_at..], url.as_bytes()).expect("url in announce-list"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "announce-list not in the intended order"
    );
    assert_eq!(lt_info_hash(&torrent), info_hash);
    TieredSwarm {
        tracker,
        torrent,
        info_hash,
        data,
        seed_dir,
        dir,
    }
}

/// `peers` on `torrent`: every line is `ip:port`; returns them.
#[track_caller]
fn peers_of(torrent: &Path) -> Vec<SocketAddr> {
    let out = run_bitrush([OsStr::new("peers"), torrent.as_os_str()]);
    assert_success(&out);
    stdout_of(&out)
        .lines()
        .map(|l| {
            l.parse()
                .unwrap_or_else(|e| panic!("{l:?} is not ip:port ({e})\n{}", dump(&out)))
        })
        .collect()
}

/// `cmd -o OUT source` for a single-file torrent; checks OUT is the payload.
#[track_caller]
fn check_download(cmd: &str, source: &OsStr, out_path: &Path, data: &[u8]) {
    let out = run_bitrush([
        OsStr::new(cmd),
        OsStr::new("-o"),
        out_path.as_os_str(),
        source,
    ]);
    assert_success(&out);
    assert_quiet_stdout(&out);
    let got = std::fs::read(out_path).expect("read download");
    assert_bytes_eq(&got, data, cmd);
}

fn dead_http() -> String {
    format!("http://127.0.0.1:{}/announce", refused_addr().port())
}

fn dead_udp() -> String {
    format!("udp://127.0.0.1:{}/announce", refused_addr().port())
}

#[test]
fn udp_only_tracker_works_for_peers_download_and_magnet_links() {
    let swarm = Swarm::single_file("trackers-udp-only", 900_000, 15, 61, true);
    assert_eq!(swarm.info.trackers, vec![swarm.tracker.udp_url()]);
    let seeder = swarm.lt_seeder();
    let peers = peers_of(&swarm.torrent);
    assert!(peers.contains(&seeder.addr()), "{peers:?}");
    let out_dir = swarm.out_dir("out");
    check_download(
        "download",
        swarm.torrent.as_os_str(),
        &out_dir.join("from-torrent.bin"),
        &swarm.data,
    );
    let link = magnet(&swarm.info.info_hash, &[swarm.tracker.udp_url()]);
    check_download(
        "magnet_download",
        OsStr::new(&link),
        &out_dir.join("from-magnet.bin"),
        &swarm.data,
    );
}

#[test]
fn dead_http_tier_before_a_live_udp_tier() {
    let swarm = tiered_swarm("trackers-dead-http-tier", 62, |t| {
        vec![vec![dead_http()], vec![t.udp_url()]]
    });
    let seeder = LtSeeder::start(&swarm.torrent, &swarm.seed_dir);
    let peers = peers_of(&swarm.torrent);
    assert!(peers.contains(&seeder.addr()), "{peers:?}");
    check_download(
        "download",
        swarm.torrent.as_os_str(),
        &swarm.dir.subdir("out").join("p.bin"),
        &swarm.data,
    );
}

#[test]
fn dead_udp_then_live_http_in_one_tier() {
    let swarm = tiered_swarm("trackers-dead-udp-same-tier", 63, |t| {
        vec![vec![dead_udp(), t.http_url()]]
    });
    let seeder = LtSeeder::start(&swarm.torrent, &swarm.seed_dir);
    let peers = peers_of(&swarm.torrent);
    assert!(peers.contains(&seeder.addr()), "{peers:?}");
    let out_dir = swarm.dir.subdir("out");
    check_download(
        "download",
        swarm.torrent.as_os_str(),
        &out_dir.join("from-torrent.bin"),
        &swarm.data,
    );
    // The same through a magnet link whose first trackers are dead.
    let link = magnet(
        &swarm.info_hash,
        &[dead_http(), dead_udp(), swarm.tracker.http_url()],
    );
    check_download(
        "magnet_download",
        OsStr::new(&link),
        &out_dir.join("from-magnet.bin"),
        &swarm.data,
    );
}

#[test]
fn only_dead_trackers_is_a_clean_error() {
    let dir = TestDir::new("trackers-all-dead");
    let src = dir.join("p.bin");
    write_payload(&src, 50_000, 64);
    let torrent = mktorrent_tiers(&src, &[vec![dead_http(), dead_udp()], vec![dead_udp()]], 15);
    let out = run_bitrush([OsStr::new("peers"), torrent.as_os_str()]);
    let line = assert_cli_error(&out);
    assert!(line.contains("no tracker answered"), "{line}");
    // A download with no reachable tracker and no other peer fails too, rather than waiting.
    let output = dir.join("out.bin");
    let out = run_bitrush([
        OsStr::new("download"),
        OsStr::new("-o"),
        output.as_os_str(),
        torrent.as_os_str(),
    ]);
    let line = assert_cli_error(&out);
    assert!(line.contains("no tracker answered"), "{line}");
    let link = magnet(&lt_info_hash(&torrent), &[dead_http(), dead_udp()]);
    let out = run_bitrush(["magnet_info", &link]);
    let line = assert_cli_error(&out);
    assert!(line.contains("no tracker answered"), "{line}");
}

#[test]
fn peers_lists_the_union_of_every_tier() {
    let dir = TestDir::new("trackers-union");
    let src = dir.join("p.bin");
    write_payload(&src, 50_000, 65);
    let hash = mktorrent_info_hash(&src, 15);
    let first = Tracker::start(&[&hash]);
    let second = Tracker::start(&[&hash]);
    let tiers = vec![vec![first.http_url()], vec![second.udp_url()]];
    let torrent = mktorrent_tiers(&src, &tiers, 15);
    // Each tracker knows a different peer.
    let a = refused_addr();
    let b = std::iter::repeat_with(refused_addr)
        .find(|b| *b != a)
        .expect("a second free port");
    first.announce_fake_peer(&hash, a.port(), true);
    second.announce_fake_peer(&hash, b.port(), true);
    let peers = peers_of(&torrent);
    assert!(peers.contains(&a), "{a} from tier 1 missing: {peers:?}");
    assert!(peers.contains(&b), "{b} from tier 2 missing: {peers:?}");
}
