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

fn assert_tree_eq(got_root: &Path, want: &std::collections::BTreeMap<String, Vec<u8>>) {
    let got = read_tree(got_root);
    let got_names: Vec<_> = got.keys().collect();
    let want_names: Vec<_> = want.keys().collect();
    assert_eq!(got_names, want_names, "file lists differ");
    for (k, v) in want {
        assert_bytes_eq(&got[k], v, k);
    }
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
    let src = dir.join("p.bin");
    let data = write_payload(&src, 100_000, 3);
    let torrent = mktorrent(&src, "http://127.0.0.1:1/announce", 15);
    let info = lt_info(&torrent);
    assert_eq!(info.piece_length, 32768);
    assert_eq!(info.total_size, 100_000);
    assert!(!info.multi_file);
    assert_eq!(info.num_pieces, 4);
    let ours: Vec<String> = data
        .chunks(32768)
        .map(|c| Sha1::digest(c).iter().map(|b| format!("{b:02x}")).collect())
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
    let dir = TestDir::new("harness-lt2aria");
    let seed = dir.subdir("seed");
    let src = seed.join("payload.bin");
    let data = write_payload(&src, 3 * 1024 * 1024 + 777, 1);
    let (tracker, torrent, info) = tracked_torrent(&src, 18, false);
    assert_eq!(info.num_pieces, 13);
    let _seeder = LtSeeder::start(&torrent, &seed);
    assert_eq!(tracker.scrape(&info.info_hash).0, 1);
    let out = dir.subdir("out");
    aria2_download(&torrent, &out);
    assert_bytes_eq(
        &std::fs::read(out.join("payload.bin")).unwrap(),
        &data,
        "payload",
    );
}

#[test]
fn lt_downloads_from_aria2_seeder_via_http_tracker() {
    let dir = TestDir::new("harness-aria2lt");
    let seed = dir.subdir("seed");
    let src = seed.join("payload.bin");
    let data = write_payload(&src, 2 * 1024 * 1024 + 5, 2);
    let (tracker, torrent, info) = tracked_torrent(&src, 18, false);
    let _seeder = Aria2Seeder::start(&torrent, &seed);
    tracker.wait_for_seeders(&info.info_hash, 1);
    let out = dir.subdir("out");
    lt_download(torrent.to_str().unwrap(), &out, &[]);
    assert_bytes_eq(
        &std::fs::read(out.join("payload.bin")).unwrap(),
        &data,
        "payload",
    );
}

#[test]
fn aria2_downloads_multi_file_tree_via_http_tracker() {
    let dir = TestDir::new("harness-tree");
    let seed = dir.subdir("seed");
    let want = write_tree(&seed.join("tree"), TREE, 5);
    let (_tracker, torrent, info) = tracked_torrent(&seed.join("tree"), 15, false);
    assert!(info.multi_file);
    assert_eq!(info.name, "tree");
    let paths: Vec<_> = info.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, TREE.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    let _seeder = LtSeeder::start(&torrent, &seed);
    let out = dir.subdir("out");
    aria2_download(&torrent, &out);
    assert_tree_eq(&out.join("tree"), &want);
}

/// aria2 only speaks UDP trackers with its DHT on, so UDP is checked with
/// libtorrent on both ends.
#[test]
fn lt_downloads_multi_file_tree_via_udp_tracker() {
    let dir = TestDir::new("harness-udp-tree");
    let seed = dir.subdir("seed");
    let want = write_tree(&seed.join("tree"), TREE, 6);
    let (tracker, torrent, info) = tracked_torrent(&seed.join("tree"), 15, true);
    assert_eq!(info.trackers, vec![tracker.udp_url()]);
    let _seeder = LtSeeder::start(&torrent, &seed);
    let out = dir.subdir("out");
    lt_download(torrent.to_str().unwrap(), &out, &[]);
    assert_tree_eq(&out.join("tree"), &want);
}

#[test]
fn seeder_dying_mid_download_leaves_the_other_serving() {
    let dir = TestDir::new("harness-dying");
    let seed = dir.subdir("seed");
    let src = seed.join("payload.bin");
    let data = write_payload(&src, 4 * 1024 * 1024, 6);
    let (tracker, torrent, info) = tracked_torrent(&src, 18, false);
    let mut dying = LtSeeder::start_with(
        &torrent,
        &seed,
        &LtSeedOptions {
            upload_rate_limit: Some(512 * 1024),
            exit_after_upload: Some(512 * 1024),
            ..Default::default()
        },
    );
    let _steady = LtSeeder::start_with(
        &torrent,
        &seed,
        &LtSeedOptions {
            upload_rate_limit: Some(1024 * 1024),
            ..Default::default()
        },
    );
    assert_eq!(tracker.scrape(&info.info_hash).0, 2);
    let out = dir.subdir("out");
    aria2_download(&torrent, &out);
    assert_bytes_eq(
        &std::fs::read(out.join("payload.bin")).unwrap(),
        &data,
        "payload",
    );
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
    let src = dir.join("p.bin");
    write_payload(&src, 40_000, 9);
    let torrent = mktorrent(&src, "http://127.0.0.1:1/announce", 15);
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
    let dir = TestDir::new("harness-corrupt");
    let seed = dir.subdir("seed");
    let src = seed.join("payload.bin");
    let data = write_payload(&src, 2 * 1024 * 1024 + 1, 7);
    let (tracker, torrent, info) = tracked_torrent(&src, 18, false);
    let corrupt = BadPeer::start(&torrent, &seed, BadPeerMode::Corrupt);
    let garbage = BadPeer::start(&torrent, &seed, BadPeerMode::Garbage);
    let wrong = BadPeer::start(&torrent, &seed, BadPeerMode::WrongInfoHash);
    for p in [&corrupt, &garbage, &wrong] {
        tracker.announce_fake_peer(&info.info_hash, p.port(), true);
    }
    let _honest = LtSeeder::start_with(
        &torrent,
        &seed,
        &LtSeedOptions {
            upload_rate_limit: Some(1024 * 1024),
            ..Default::default()
        },
    );
    let out = dir.subdir("out");
    lt_download(torrent.to_str().unwrap(), &out, &[]);
    assert_bytes_eq(
        &std::fs::read(out.join("payload.bin")).unwrap(),
        &data,
        "payload",
    );
    assert!(corrupt.served_blocks() > 0, "{}", corrupt.logs());
    assert!(garbage.connections() > 0, "{}", garbage.logs());
    assert!(wrong.connections() > 0, "{}", wrong.logs());
}
