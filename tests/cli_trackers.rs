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
use std::process::Output;
use std::time::Duration;

/// `magnet:?xt=urn:btih:<hash>&tr=..` (no name, no peers).
fn magnet(info_hash: &str, trackers: &[String]) -> String {
    magnet_link(info_hash, None, trackers, &[])
}

/// The torrent's trackers grouped by tier, as libtorrent reads them.
fn lt_tiers(torrent: &Path) -> Vec<Vec<String>> {
    let mut cmd = lt_python(
        "import json, sys, libtorrent as lt\n\
         ti = lt.torrent_info(sys.argv[1])\n\
         tiers = {}\n\
         for t in ti.trackers(): tiers.setdefault(t.tier, []).append(t.url)\n\
         print(json.dumps([tiers[k] for k in sorted(tiers)]))",
    );
    cmd.arg(torrent);
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
    let out = run_bitrush(output_args(cmd, out_path, source, &[]));
    assert_success(&out);
    assert_quiet_stdout(&out);
    assert_file_eq(out_path, data, cmd);
}

/// `magnet_download` of `link` into `out_dir/from-magnet.bin` yields `data`.
#[track_caller]
fn check_magnet_download(link: &str, out_dir: &Path, data: &[u8]) {
    check_download(
        "magnet_download",
        OsStr::new(link),
        &out_dir.join("from-magnet.bin"),
        data,
    );
}

/// `peers` on `torrent` lists `seeder`, and `download` of it to `out_path`
/// yields `data`.
#[track_caller]
fn check_peers_and_download(torrent: &Path, seeder: SocketAddr, out_path: &Path, data: &[u8]) {
    let peers = peers_of(torrent);
    assert!(peers.contains(&seeder), "{peers:?}");
    check_download("download", torrent.as_os_str(), out_path, data);
}

/// The run failed cleanly because no tracker answered.
#[track_caller]
fn assert_no_tracker_answered(out: &Output) {
    let line = assert_cli_error(out);
    assert!(line.contains("no tracker answered"), "{line}");
}

#[test]
fn udp_only_tracker_works_for_peers_download_and_magnet_links() {
    let swarm = Swarm::single_file("trackers-udp-only", 900_000, 15, 61, true);
    assert_eq!(swarm.info.trackers, vec![swarm.tracker.udp_url()]);
    let seeder = swarm.lt_seeder();
    let out_dir = swarm.out_dir("out");
    check_peers_and_download(
        &swarm.torrent,
        seeder.addr(),
        &out_dir.join("from-torrent.bin"),
        &swarm.data,
    );
    let link = magnet(&swarm.info.info_hash, &[swarm.tracker.udp_url()]);
    check_magnet_download(&link, &out_dir, &swarm.data);
}

#[test]
fn dead_http_tier_before_a_live_udp_tier() {
    let swarm = tiered_swarm("trackers-dead-http-tier", 62, |t| {
        vec![vec![dead_http()], vec![t.udp_url()]]
    });
    let seeder = LtSeeder::start(&swarm.torrent, &swarm.seed_dir);
    check_peers_and_download(
        &swarm.torrent,
        seeder.addr(),
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
    let out_dir = swarm.dir.subdir("out");
    check_peers_and_download(
        &swarm.torrent,
        seeder.addr(),
        &out_dir.join("from-torrent.bin"),
        &swarm.data,
    );
    // The same through a magnet link whose first trackers are dead.
    let link = magnet(
        &swarm.info_hash,
        &[dead_http(), dead_udp(), swarm.tracker.http_url()],
    );
    check_magnet_download(&link, &out_dir, &swarm.data);
}

#[test]
fn only_dead_trackers_is_a_clean_error() {
    let dir = TestDir::new("trackers-all-dead");
    let src = dir.join("p.bin");
    write_payload(&src, 50_000, 64);
    let torrent = mktorrent_tiers(&src, &[vec![dead_http(), dead_udp()], vec![dead_udp()]], 15);
    let out = run_bitrush([OsStr::new("peers"), torrent.as_os_str()]);
    assert_no_tracker_answered(&out);
    // A download with no reachable tracker and no other peer fails too, rather than waiting.
    let output = dir.join("out.bin");
    let out = run_bitrush(output_args("download", &output, &torrent, &[]));
    assert_no_tracker_answered(&out);
    let link = magnet(&lt_info_hash(&torrent), &[dead_http(), dead_udp()]);
    let out = run_bitrush(["magnet_info", &link]);
    assert_no_tracker_answered(&out);
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
