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

/// What libtorrent's `identify_client` calls the client that sent `peer_id`.
fn lt_identify_client(peer_id: &[u8]) -> String {
    let mut cmd = lt_python(
        "import libtorrent as lt, sys; \
         print(lt.identify_client(lt.sha1_hash(bytes.fromhex(sys.argv[1]))))",
    );
    cmd.arg(
        peer_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let out = run_checked("identify_client", cmd, std::time::Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The one-shot commands send the same handshake as ever (protocol, reserved bytes with only
/// the extension bit, info hash) from a peer id whose Azureus-style prefix, `-RH<version>0-`,
/// libtorrent does not take for any client it knows: it names it by its code and version.
#[test]
fn one_shot_handshakes_carry_bitrushs_client_code() {
    let dir = TestDir::new("hs-peer-id");
    let src = dir.join("p.bin");
    write_payload(&src, 50_000, 38);
    let torrent = mktorrent(&src, UNUSED_ANNOUNCE, 15);
    let info_hash = lt_info(&torrent).info_hash;
    let recorder = HandshakeRecorder::start(&info_hash);

    let out = handshake(&torrent, &recorder.addr().to_string());
    assert_success(&out);
    let link = magnet_link(&info_hash, None, &[], &[recorder.addr()]);
    let out = run_bitrush(["magnet_handshake", &link]);
    assert_success(&out);
    assert_eq!(
        stdout_of(&out),
        format!(
            "Peer ID: {}\nPeer Metadata Extension ID: 3\n",
            b"-HR0001-recorder0001"
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    );

    let handshakes = recorder.handshakes();
    assert_eq!(handshakes.len(), 2, "{}", recorder.logs());
    let (major, minor, patch) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
    );
    for hs in &handshakes {
        assert_eq!(hs.len(), 68);
        assert_eq!(&hs[..20], b"\x13BitTorrent protocol");
        assert_eq!(&hs[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0], "reserved bytes");
        assert_eq!(hs[28..48], hex_to_bytes(&info_hash)[..]);
        assert_eq!(
            String::from_utf8_lossy(&hs[48..56]),
            format!("-RH{major}{minor}{patch}0-"),
            "peer id prefix"
        );
        assert_eq!(
            lt_identify_client(&hs[48..]),
            format!("RH {major}.{minor}.{patch}"),
            "libtorrent knows no client by our code, so it shows the code and the version"
        );
    }
}
