//! Validates the test harness itself (tests/common, tests/support) with
//! reference clients only: opentracker, libtorrent and aria2 must be able to
//! exchange data through it before bitrush is tested against them.

mod common;

use common::*;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// Payload laid out as a mktorrent folder torrent would be (nested dirs,
/// an empty file, files smaller than a piece).
const TREE: &[(&str, usize)] = &[
    ("a.bin", 700_000),
    ("empty.dat", 0),
    ("sub/b.txt", 1000),
    ("sub/deeper/c.bin", 300_007),
    ("sub/small", 10),
];

const MIB: usize = 1024 * 1024;

/// Asserts `out_dir` holds the single-file payload `want` as `payload.bin`.
#[track_caller]
fn assert_payload_in(out_dir: &Path, want: &[u8]) {
    assert_file_eq(&out_dir.join("payload.bin"), want, "payload");
}

#[test]
fn payload_is_deterministic_and_seed_dependent() {
    let a = payload(10_001, 7);
    assert_eq!(a.len(), 10_001);
    assert_eq!(a, payload(10_001, 7));
    assert_ne!(a, payload(10_001, 8));
    assert_eq!(&payload(100, 7)[..], &a[..100]);
}

#[test]
fn libtorrent_agrees_with_our_own_sha1_of_pieces() {
    use sha1::{Digest, Sha1};
    let dir = TestDir::new("harness-hashes");
    let (torrent, data) = unannounced_torrent(&dir, 100_000, 3);
    let info = lt_info(&torrent);
    assert_eq!(info.piece_length, 32768);
    assert_eq!(info.total_size, 100_000);
    assert!(!info.multi_file);
    assert_eq!(info.num_pieces, 4);
    let ours: Vec<String> = data
        .chunks(32768)
        .map(|c| to_hex(&Sha1::digest(c)))
        .collect();
    assert_eq!(info.piece_hashes, ours);
    assert_eq!(
        info.trackers,
        vec!["http://127.0.0.1:1/announce".to_string()]
    );
}

#[test]
fn tracker_whitelist_scrape_and_fake_peers() {
    let dir = TestDir::new("harness-tracker");
    let src = dir.join("p.bin");
    write_payload(&src, 50_000, 4);
    let (tracker, _torrent, info) = tracked_torrent(&src, 15, false);
    assert_eq!(tracker.scrape(&info.info_hash), (0, 0));
    let silent = SilentPeer::start();
    tracker.announce_fake_peer(&info.info_hash, silent.port(), true);
    tracker.announce_fake_peer(&info.info_hash, refused_addr().port(), false);
    assert_eq!(tracker.scrape(&info.info_hash), (1, 1));
    // A hash that is not whitelisted is refused.
    let body = tracker.http_get(&format!(
        "/announce?info_hash={}&peer_id=-FK0001-000000000000&port=1&uploaded=0&downloaded=0&left=0&compact=1",
        "%01".repeat(20)
    ));
    assert!(
        String::from_utf8_lossy(&body).contains("not authorized"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    // The silent peer accepts connections.
    TcpStream::connect_timeout(&silent.addr(), Duration::from_secs(5)).expect("silent peer");
    // Nobody listens at a refused address.
    assert!(TcpStream::connect_timeout(&refused_addr(), Duration::from_secs(5)).is_err());
}

#[test]
fn aria2_downloads_from_lt_seeder_via_http_tracker() {
    let swarm = Swarm::single_file("harness-lt2aria", 3 * MIB + 777, 18, 1, false);
    assert_eq!(swarm.info.num_pieces, 13);
    let _seeder = swarm.lt_seeder();
    assert_eq!(swarm.tracker.scrape(&swarm.info.info_hash).0, 1);
    let out = swarm.out_dir("out");
    aria2_download(&swarm.torrent, &out);
    assert_payload_in(&out, &swarm.data);
}

#[test]
fn lt_downloads_from_aria2_seeder_via_http_tracker() {
    let swarm = Swarm::single_file("harness-aria2lt", 2 * MIB + 5, 18, 2, false);
    let _seeder = Aria2Seeder::start(&swarm.torrent, &swarm.seed_dir);
    swarm.tracker.wait_for_seeders(&swarm.info.info_hash, 1);
    let out = swarm.out_dir("out");
    lt_download(swarm.torrent.to_str().unwrap(), &out, &[]);
    assert_payload_in(&out, &swarm.data);
}

#[test]
fn aria2_downloads_multi_file_tree_via_http_tracker() {
    let swarm = Swarm::tree("harness-tree", "tree", TREE, 15, 5);
    let info = &swarm.info;
    assert!(info.multi_file);
    assert_eq!(info.name, "tree");
    let paths: Vec<_> = info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, TREE.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    let _seeder = swarm.lt_seeder();
    let out = swarm.out_dir("out");
    aria2_download(&swarm.torrent, &out);
    assert_tree_eq(&out.join("tree"), &swarm.tree);
}

/// aria2 only speaks UDP trackers with its DHT on, so UDP is checked with
/// libtorrent on both ends.
#[test]
fn lt_downloads_multi_file_tree_via_udp_tracker() {
    let swarm = Swarm::tree_announced("harness-udp-tree", "tree", TREE, 15, 6, true);
    assert_eq!(swarm.info.trackers, vec![swarm.tracker.udp_url()]);
    let _seeder = swarm.lt_seeder();
    let out = swarm.out_dir("out");
    lt_download(swarm.torrent.to_str().unwrap(), &out, &[]);
    assert_tree_eq(&out.join("tree"), &swarm.tree);
}

#[test]
fn seeder_dying_mid_download_leaves_the_other_serving() {
    let swarm = Swarm::single_file("harness-dying", 4 * MIB, 18, 6, false);
    let mut dying = swarm.lt_seeder_with(&LtSeedOptions {
        exit_after_upload: Some(512 * 1024),
        ..LtSeedOptions::upload_limited(512 * 1024)
    });
    let _steady = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(MIB as u64));
    assert_eq!(swarm.tracker.scrape(&swarm.info.info_hash).0, 2);
    let out = swarm.out_dir("out");
    aria2_download(&swarm.torrent, &out);
    assert_payload_in(&out, &swarm.data);
    let st = dying.wait_exit(Duration::from_secs(30));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(LT_SEED_DIED_EXIT_CODE),
        "the rate-limited seeder should have died mid-download\n{}",
        dying.logs()
    );
}

#[test]
fn killed_seeder_stops_listening() {
    let dir = TestDir::new("harness-kill");
    let (torrent, _) = unannounced_torrent(&dir, 40_000, 9);
    let mut seeder = LtSeeder::start_with(
        &torrent,
        dir.path(),
        &LtSeedOptions {
            no_announce: true,
            ..Default::default()
        },
    );
    let addr = seeder.addr();
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("seeder listens");
    seeder.kill();
    assert!(seeder.try_status().is_some());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err());
}

#[test]
fn corrupt_peer_is_caught_by_libtorrent() {
    let swarm = Swarm::single_file("harness-corrupt", 2 * MIB + 1, 18, 7, false);
    let bad_peer = |mode| BadPeer::start(&swarm.torrent, &swarm.seed_dir, mode);
    let corrupt = bad_peer(BadPeerMode::Corrupt);
    let garbage = bad_peer(BadPeerMode::Garbage);
    let wrong = bad_peer(BadPeerMode::WrongInfoHash);
    for p in [&corrupt, &garbage, &wrong] {
        swarm
            .tracker
            .announce_fake_peer(&swarm.info.info_hash, p.port(), true);
    }
    let _honest = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(MIB as u64));
    let out = swarm.out_dir("out");
    lt_download(swarm.torrent.to_str().unwrap(), &out, &[]);
    assert_payload_in(&out, &swarm.data);
    assert!(corrupt.served_blocks() > 0, "{}", corrupt.logs());
    assert!(garbage.connections() > 0, "{}", garbage.logs());
    assert!(wrong.connections() > 0, "{}", wrong.logs());
}
