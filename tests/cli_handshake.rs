//! `bitrush handshake <file.torrent> <ip:port>`: prints exactly
//! `Peer ID: <40 lowercase hex>` of the remote peer.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

/// Runs `bitrush handshake TORRENT ADDR` to completion.
fn handshake(torrent: &Path, addr: &str) -> Output {
    run_bitrush([Path::new("handshake"), torrent, Path::new(addr)])
}

/// Runs `handshake` against `addr` and returns the peer id hex, asserting
/// the exact output format.
#[track_caller]
fn handshake_peer_id(torrent: &Path, addr: &str) -> String {
    let out = handshake(torrent, addr);
    assert_success(&out);
    let stdout = stdout_of(&out);
    let id = stdout
        .strip_prefix("Peer ID: ")
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("stdout must be `Peer ID: <hex>\\n`\n{}", dump(&out)));
    assert!(
        id.len() == 40
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "peer id must be 40 lowercase hex digits\n{}",
        dump(&out)
    );
    id.to_string()
}

#[test]
fn handshake_with_libtorrent() {
    let swarm = Swarm::single_file("hs-lt", 200_000, 15, 31, false);
    let seeder = swarm.lt_seeder();
    let id = handshake_peer_id(&swarm.torrent, &seeder.addr().to_string());
    // libtorrent's peer ids start with "-LT".
    assert!(id.starts_with("2d4c54"), "not a libtorrent peer id: {id}");
}

#[test]
fn handshake_with_aria2() {
    let swarm = Swarm::single_file("hs-aria2", 200_000, 15, 32, false);
    let seeder = swarm.aria2_seeder(1);
    let id = handshake_peer_id(&swarm.torrent, &seeder.addr().to_string());
    // aria2's peer ids start with "A2-".
    assert!(id.starts_with("41322d"), "not an aria2 peer id: {id}");
}

#[test]
fn refused_connection_is_an_error() {
    let swarm = Swarm::single_file("hs-refused", 50_000, 15, 33, false);
    let out = handshake(&swarm.torrent, &refused_addr().to_string());
    assert_cli_error(&out);
    assert!(stdout_of(&out).is_empty(), "{}", dump(&out));
}

#[test]
fn peer_without_the_torrent_is_an_error() {
    // A libtorrent session seeding another torrent drops a handshake for an
    // info hash it does not have.
    let dir = TestDir::new("hs-other");
    let mine = dir.join("mine.bin");
    write_payload(&mine, 50_000, 34);
    let mine_torrent = mktorrent(&mine, "http://127.0.0.1:1/announce", 15);
    let other = dir.join("other.bin");
    write_payload(&other, 50_000, 35);
    let other_torrent = mktorrent(&other, "http://127.0.0.1:1/announce", 15);
    let seeder = LtSeeder::start_with(
        &other_torrent,
        dir.path(),
        &LtSeedOptions {
            no_announce: true,
            ..Default::default()
        },
    );
    let out = handshake(&mine_torrent, &seeder.addr().to_string());
    assert_cli_error(&out);
}

#[test]
fn silent_peer_times_out_with_an_error() {
    // The peer accepts the connection but never answers: bitrush must give
    // up by itself (well before the harness kills it) with an error.
    let swarm = Swarm::single_file("hs-silent", 50_000, 15, 36, false);
    let silent = SilentPeer::start();
    let out = handshake(&swarm.torrent, &silent.addr().to_string());
    assert_cli_error(&out);
}

#[test]
fn malformed_address_is_an_error() {
    let swarm = Swarm::single_file("hs-badaddr", 50_000, 15, 37, false);
    // No host names: resolving one could leave the machine.
    for addr in ["127.0.0.1", "127.0.0.1:99999", "127.0.0.1:abc", ""] {
        let out = handshake(&swarm.torrent, addr);
        if let Err(e) = check_cli_error(&out) {
            panic!("bad address {addr:?} not rejected cleanly: {e}");
        }
    }
}
