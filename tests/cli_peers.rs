//! `bitrush peers <file.torrent>`: asks the torrent's tracker (opentracker
//! here) and prints one `ip:port` per line.

mod common;

use common::*;
use std::net::SocketAddrV4;
use std::path::Path;

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

fn loopback(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new([127, 0, 0, 1].into(), port)
}

#[test]
fn lists_lt_seeder_from_http_tracker() {
    let swarm = Swarm::single_file("peers-http", 300_000, 15, 21, false);
    let seeder = swarm.lt_seeder();
    let peers = peers_of(&swarm.torrent);
    assert!(
        peers.contains(&loopback(seeder.port())),
        "seeder 127.0.0.1:{} not listed: {peers:?}",
        seeder.port()
    );
}

#[test]
fn lists_lt_seeder_from_udp_tracker() {
    let swarm = Swarm::single_file("peers-udp", 300_000, 15, 22, true);
    let seeder = swarm.lt_seeder();
    let peers = peers_of(&swarm.torrent);
    assert!(
        peers.contains(&loopback(seeder.port())),
        "seeder 127.0.0.1:{} not listed: {peers:?}",
        seeder.port()
    );
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
    let src = dir.join("payload.bin");
    write_payload(&src, 50_000, 24);
    let url = format!("http://127.0.0.1:{}/announce", refused_addr().port());
    let torrent = mktorrent(&src, &url, 15);
    let out = run_bitrush([Path::new("peers"), &torrent]);
    assert_cli_error(&out);
}

#[test]
fn unreachable_udp_tracker_is_an_error() {
    // Nobody listens on the port: the kernel answers with ICMP port
    // unreachable, so a client has no reason to wait long.
    let dir = TestDir::new("peers-dead-udp");
    let src = dir.join("payload.bin");
    write_payload(&src, 50_000, 25);
    let url = format!("udp://127.0.0.1:{}/announce", refused_addr().port());
    let torrent = mktorrent(&src, &url, 15);
    let out = run_bitrush([Path::new("peers"), &torrent]);
    assert_cli_error(&out);
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
    let src = dir.join("payload.bin");
    write_payload(&src, 50_000, 27);
    let torrent = mktorrent(&src, &tracker.http_url(), 15);
    let out = run_bitrush([Path::new("peers"), &torrent]);
    assert_cli_error(&out);
    assert!(
        stderr_of(&out).contains("not authorized"),
        "the tracker's failure reason should be shown\n{}",
        dump(&out)
    );
}
