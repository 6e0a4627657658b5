//! bitrush against qBittorrent (`qbittorrent-nox`, libtorrent 2.0 inside) on loopback, both
//! ways, byte for byte: qBittorrent downloads from a seeding bitrush and seeds to a downloading
//! one.

mod common;

use common::*;

const MIB: usize = 1024 * 1024;

#[test]
fn qbittorrent_downloads_from_a_seeding_bitrush() {
    let swarm = Swarm::single_file("qbt-leech", 9 * MIB + 313, 18, 601, false);
    let _seed = swarm.bitrush_seeder("payload.bin");
    let dir = swarm.out_dir("qbittorrent");
    let mut qbt = QBittorrent::start(&swarm.torrent, &dir);
    qbt.wait_complete(PROCESS_TIMEOUT);
    assert_file_eq(&dir.join("payload.bin"), &swarm.data, "qBittorrent's copy");
}

#[test]
fn downloads_from_a_seeding_qbittorrent() {
    let swarm = Swarm::single_file("qbt-seed", 9 * MIB + 4242, 18, 602, false);
    let _qbt = QBittorrent::start(&swarm.torrent, &swarm.seed_dir);
    swarm.tracker.wait_for_seeders(&swarm.info.info_hash, 1);
    let out_path = swarm.out_dir("bitrush").join("payload.bin");
    let out = run_download(&swarm.torrent, &out_path, &[]);
    assert_success(&out);
    let got = std::fs::read(&out_path).expect("read the download");
    assert_bytes_eq(&got, &swarm.data, "bitrush's copy");
}
