//! `bitrush download -o OUT <torrent>`: downloads the whole torrent from
//! real peers (libtorrent, aria2) found through opentracker. A single-file
//! torrent lands at OUT; a multi-file torrent becomes a directory OUT holding
//! the torrent's tree (the torrent's name is not repeated under OUT).

mod common;

use common::*;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// Downloads a single-file torrent and checks OUT is byte-identical.
#[track_caller]
fn check_single_file_download(swarm: &Swarm) {
    let out_path = swarm.out_dir("out").join("downloaded.bin");
    let out = run_download(&swarm.torrent, &out_path, &[]);
    assert_success(&out);
    assert_quiet_stdout(&out);
    let got = std::fs::read(&out_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", out_path.display(), dump(&out)));
    assert_bytes_eq(&got, &swarm.data, "downloaded file");
}

/// Downloads a multi-file torrent to OUT (`name` in a fresh output folder)
/// and checks OUT holds exactly the torrent's tree.
#[track_caller]
fn check_tree_download(swarm: &Swarm, name: &str) {
    let out_path = swarm.out_dir("out").join(name);
    let out = run_download(&swarm.torrent, &out_path, &[]);
    assert_success(&out);
    assert_quiet_stdout(&out);
    assert_tree_eq(&out_path, &swarm.tree);
}

#[test]
fn single_file_from_libtorrent() {
    // Not a multiple of the piece length: the last piece is short.
    let swarm = Swarm::single_file("dl-lt", 5 * MIB + 1234, 18, 51, false);
    let _seeder = swarm.lt_seeder();
    check_single_file_download(&swarm);
}

#[test]
fn multi_file_tree_from_libtorrent() {
    // 32 KiB pieces: files straddle pieces, some files are smaller than a
    // piece, one is empty, and the tree is nested.
    let files = [
        ("a.bin", 700_000),
        ("empty.dat", 0),
        ("sub/b.txt", 1_000),
        ("sub/deeper/c.bin", 300_007),
        ("sub/small", 10),
        ("z/last.bin", 3 * 65_536 + 1),
    ];
    let swarm = Swarm::tree("dl-tree", "tree", &files, 15, 52);
    assert!(swarm.info.multi_file);
    let _seeder = swarm.lt_seeder();
    check_tree_download(&swarm, "tree-out");
}

#[test]
fn single_file_from_aria2() {
    let swarm = Swarm::single_file("dl-aria2", 3 * MIB + 4321, 18, 53, false);
    let _seeder = swarm.aria2_seeder(1);
    check_single_file_download(&swarm);
}

#[test]
fn multi_file_tree_from_aria2() {
    let files = [
        ("one.bin", 150_000),
        ("two/three.bin", 90_001),
        ("two/four", 3),
    ];
    let swarm = Swarm::tree("dl-tree-aria2", "t", &files, 15, 54);
    let _seeder = swarm.aria2_seeder(1);
    check_tree_download(&swarm, "t-out");
}

#[test]
fn from_several_seeders_at_once() {
    let swarm = Swarm::single_file("dl-many", 6 * MIB + 77, 18, 55, false);
    let _lt1 = swarm.lt_seeder();
    let _lt2 = swarm.lt_seeder();
    let _aria2 = swarm.aria2_seeder(3);
    check_single_file_download(&swarm);
}

#[test]
fn seeder_dying_mid_download() {
    // Seeder A is throttled and dies abruptly once it has uploaded 512 KiB;
    // seeder B (also throttled, so A gets its share) keeps serving.
    let swarm = Swarm::single_file("dl-dying", 4 * MIB, 18, 56, false);
    let mut dying = swarm.lt_seeder_with(&LtSeedOptions {
        upload_rate_limit: Some(512 * 1024),
        exit_after_upload: Some(512 * 1024),
        ..Default::default()
    });
    let _steady = swarm.lt_seeder_with(&LtSeedOptions {
        upload_rate_limit: Some(MIB as u64),
        ..Default::default()
    });
    check_single_file_download(&swarm);
    let status = dying.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(LT_SEED_DIED_EXIT_CODE),
        "seeder A never uploaded 512 KiB to bitrush, so it did not die \
         mid-download (bitrush should use both seeders)\n{}",
        dying.logs()
    );
}

#[test]
fn survives_refused_and_silent_peers_in_the_swarm() {
    let swarm = Swarm::single_file("dl-badpeers", 2 * MIB + 3, 18, 57, false);
    let silent = SilentPeer::start();
    let refused = refused_addr();
    let hash = &swarm.info.info_hash;
    swarm.tracker.announce_fake_peer(hash, refused.port(), true);
    swarm.tracker.announce_fake_peer(hash, silent.port(), true);
    let _seeder = swarm.lt_seeder();
    assert_eq!(swarm.tracker.scrape(hash).0, 3);
    check_single_file_download(&swarm);
}

#[test]
fn single_file_via_udp_tracker() {
    let swarm = Swarm::single_file("dl-udp", 2 * MIB + 5, 18, 58, true);
    let _seeder = swarm.lt_seeder();
    check_single_file_download(&swarm);
}

#[test]
fn piece_length_not_a_power_of_two() {
    // 48 KiB pieces (three 16 KiB blocks), made by libtorrent.
    let dir = TestDir::new("dl-48k");
    let seed_dir = dir.subdir("seed");
    let src = seed_dir.join("odd.bin");
    let data = write_payload(&src, MIB + 100, 59);
    let hash = {
        let tmp = dir.join("tmp.torrent");
        lt_make_torrent(&src, &tmp, 48 * 1024, &["http://127.0.0.1:1/announce"]);
        lt_info_hash(&tmp)
    };
    let tracker = Tracker::start(&[&hash]);
    let torrent = dir.join("odd.torrent");
    lt_make_torrent(&src, &torrent, 48 * 1024, &[&tracker.http_url()]);
    let info = lt_info(&torrent);
    assert_eq!(info.info_hash, hash);
    assert_eq!(info.piece_length, 48 * 1024);
    let _seeder = LtSeeder::start(&torrent, &seed_dir);
    let out_path = dir.subdir("out").join("odd.bin");
    let out = run_download(&torrent, &out_path, &[]);
    assert_success(&out);
    assert_bytes_eq(&std::fs::read(&out_path).unwrap(), &data, "downloaded file");
}

#[test]
fn one_byte_torrent() {
    let swarm = Swarm::single_file("dl-tiny", 1, 15, 60, false);
    assert_eq!(swarm.info.num_pieces, 1);
    let _seeder = swarm.lt_seeder();
    check_single_file_download(&swarm);
}

#[test]
fn rejects_corrupt_data_and_survives_misbehaving_peers() {
    // One peer serves every block with a flipped byte (every piece it
    // delivers fails its SHA-1), one answers the handshake with garbage,
    // one with another info hash. The honest seeder is throttled so the
    // liars get their chance; the result must still be byte-identical.
    let swarm = Swarm::single_file("dl-liars", 2 * MIB + 11, 18, 61, false);
    let hash = &swarm.info.info_hash;
    let corrupt = BadPeer::start(&swarm.torrent, &swarm.seed_dir, BadPeerMode::Corrupt);
    let garbage = BadPeer::start(&swarm.torrent, &swarm.seed_dir, BadPeerMode::Garbage);
    let wrong = BadPeer::start(&swarm.torrent, &swarm.seed_dir, BadPeerMode::WrongInfoHash);
    for peer in [&corrupt, &garbage, &wrong] {
        swarm.tracker.announce_fake_peer(hash, peer.port(), true);
    }
    let _honest = swarm.lt_seeder_with(&LtSeedOptions {
        upload_rate_limit: Some(MIB as u64),
        ..Default::default()
    });
    check_single_file_download(&swarm);
    assert!(
        corrupt.served_blocks() > 0,
        "bitrush never took a block from the corrupt peer, so hash checking \
         was not exercised\n{}",
        corrupt.logs()
    );
}
