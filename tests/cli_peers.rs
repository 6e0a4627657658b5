//! `bitrush peers <file.torrent>`: asks the torrent's tracker (opentracker
//! here) and prints one `ip:port` per line.

mod common;

use common::*;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Output;

/// Runs `peers` and returns the listed addresses, asserting every stdout
/// line is an `ip:port`.
#[track_caller]
fn peers_of(torrent: &Path) -> Vec<SocketAddrV4> {
    let out = run_bitrush([Path::new("peers"), torrent]);
    assert_success(&out);
    let stdout = stdout_of(&out);
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse::<SocketAddrV4>().unwrap_or_else(|e| {
                panic!("stdout line {l:?} is not ip:port ({e})\n{}", dump(&out))
            })
        })
        .collect()
}

/// `127.0.0.1:port`, as `peers` lists it.
fn loopback(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new([127, 0, 0, 1].into(), port)
}

/// A libtorrent seeder in a swarm whose tracker speaks UDP if `udp`, else
/// HTTP: `peers` must list it.
#[track_caller]
fn check_lists_lt_seeder(label: &str, seed: u64, udp: bool) {
    let swarm = Swarm::single_file(label, 300_000, 15, seed, udp);
    let seeder = swarm.lt_seeder();
    let peers = peers_of(&swarm.torrent);
    assert!(
        peers.contains(&loopback(seeder.port())),
        "seeder 127.0.0.1:{} not listed: {peers:?}",
        seeder.port()
    );
}

/// `peers` on the torrent of a fresh 50 000-byte payload (from `seed`) in
/// `dir` whose only tracker is `url`; asserts it fails cleanly.
#[track_caller]
fn peers_error(dir: &TestDir, seed: u64, url: &str) -> Output {
    let src = dir.join("payload.bin");
    write_payload(&src, 50_000, seed);
    let torrent = mktorrent(&src, url, 15);
    let out = run_bitrush([Path::new("peers"), &torrent]);
    assert_cli_error(&out);
    out
}

#[test]
fn lists_lt_seeder_from_http_tracker() {
    check_lists_lt_seeder("peers-http", 21, false);
}

#[test]
fn lists_lt_seeder_from_udp_tracker() {
    check_lists_lt_seeder("peers-udp", 22, true);
}

#[test]
fn lists_several_peers() {
    let swarm = Swarm::single_file("peers-many", 300_000, 15, 23, false);
    let lt = swarm.lt_seeder();
    let aria2 = swarm.aria2_seeder(2);
    let refused = refused_addr();
    swarm
        .tracker
        .announce_fake_peer(&swarm.info.info_hash, refused.port(), false);
    let peers = peers_of(&swarm.torrent);
    for port in [lt.port(), aria2.port(), refused.port()] {
        assert!(
            peers.contains(&loopback(port)),
            "127.0.0.1:{port} not listed: {peers:?}"
        );
    }
}

#[test]
fn unreachable_http_tracker_is_an_error() {
    let dir = TestDir::new("peers-dead-http");
    peers_error(&dir, 24, &dead_http());
}

#[test]
fn unreachable_udp_tracker_is_an_error() {
    // Nobody listens on the port: the kernel answers with ICMP port
    // unreachable, so a client has no reason to wait long.
    let dir = TestDir::new("peers-dead-udp");
    peers_error(&dir, 25, &dead_udp());
}

#[test]
fn tracker_failure_reason_is_reported() {
    // A running tracker that does not serve this torrent answers with a
    // bencoded `failure reason`; bitrush must fail and say why.
    let dir = TestDir::new("peers-refused");
    let other = dir.join("other.bin");
    write_payload(&other, 20_000, 26);
    let other_hash = mktorrent_info_hash(&other, 15);
    let tracker = Tracker::start(&[&other_hash]);
    let out = peers_error(&dir, 27, &tracker.http_url());
    assert!(
        stderr_of(&out).contains("not authorized"),
        "the tracker's failure reason should be shown\n{}",
        dump(&out)
    );
}
