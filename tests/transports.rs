//! The transports bitrush speaks, against the reference clients: uTP (BEP 29) with libtorrent
//! speaking nothing else, and Message Stream Encryption with libtorrent and aria2 forcing RC4,
//! each way; `--encryption require` refusing plaintext peers and `disable` never sending MSE.

mod common;

use common::*;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

const UTP_ONLY: LtWire = LtWire {
    transport: LtTransport::Utp,
    encryption: LtEncryption::Default,
};
const FORCED_TCP: LtWire = LtWire {
    transport: LtTransport::Tcp,
    encryption: LtEncryption::Forced,
};
const FORCED_UTP: LtWire = LtWire {
    transport: LtTransport::Utp,
    encryption: LtEncryption::Forced,
};
const ARIA2_RC4_ONLY: [&str; 2] = ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"];

fn lt_seeder(swarm: &Swarm, wire: LtWire) -> LtSeeder {
    swarm.lt_seeder_with(&LtSeedOptions {
        wire,
        ..LtSeedOptions::default()
    })
}

/// Downloads the swarm's payload with `extra` options and checks every byte.
#[track_caller]
fn download_checked(swarm: &Swarm, label: &str, extra: &[&str]) {
    let out_path = swarm.out_dir(label).join("payload.bin");
    let out = run_download(&swarm.torrent, &out_path, extra);
    assert_success(&out);
    let got = std::fs::read(&out_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", out_path.display(), dump(&out)));
    assert_bytes_eq(&got, &swarm.data, label);
}

/// A libtorrent leecher with `wire` fetches the payload from `seed` alone.
#[track_caller]
fn lt_leech_checked(swarm: &Swarm, seed: &BitrushSeeder, label: &str, wire: LtWire) {
    let out = swarm.out_dir(label);
    let mut leecher = LtLeecher::start_with(&swarm.torrent, &out, &[seed.addr()], None, wire);
    leecher.wait_complete();
    assert_file_eq(&out.join("payload.bin"), &swarm.data, label);
}

#[test]
fn downloads_from_utp_only_libtorrent_seeders() {
    let swarm = Swarm::single_file("tp-utp-in", 6 * MIB + 4321, 16, 401, false);
    // libtorrent accepts TCP connections and closes them at once: only uTP gets data. By
    // default bitrush dials a peer on this host over TCP first, so this also covers falling
    // back to uTP when a peer drops the TCP connection.
    let _a = lt_seeder(&swarm, UTP_ONLY);
    let _b = lt_seeder(&swarm, UTP_ONLY);
    swarm.tracker.wait_for_seeders(&swarm.info.info_hash, 2);
    download_checked(&swarm, "default", &[]);
    download_checked(&swarm, "no-tcp", &["--no-tcp"]);
}

#[test]
fn utp_only_libtorrent_downloads_from_a_seeding_bitrush() {
    let swarm = Swarm::single_file("tp-utp-out", 5 * MIB + 999, 16, 402, false);
    let seed = swarm.bitrush_seeder("payload.bin");
    lt_leech_checked(&swarm, &seed, "lt-utp", UTP_ONLY);
}

#[test]
fn no_utp_does_not_reach_a_utp_only_seeder() {
    let swarm = Swarm::single_file("tp-no-utp", MIB, 16, 403, false);
    let _seeder = lt_seeder(&swarm, UTP_ONLY);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut proc = spawn_bitrush([
        "download".as_ref(),
        "--no-utp".as_ref(),
        "-o".as_ref(),
        out_path.as_os_str(),
        swarm.torrent.as_os_str(),
    ]);
    // Over TCP libtorrent drops us after the handshake; the stall report says so.
    let stalled = proc.wait_until(Duration::from_secs(90), |p| {
        p.stderr().contains("no progress")
    });
    assert!(stalled.is_ok(), "{stalled:?}\n{}", proc.logs());
    proc.kill();
    let got = std::fs::read(&out_path).unwrap_or_default();
    assert!(
        got.iter().all(|&b| b == 0),
        "no payload byte may come over TCP"
    );
}

#[test]
fn encrypted_downloads_from_libtorrent_forcing_rc4_over_tcp_and_utp() {
    let swarm = Swarm::single_file("tp-enc-in", 6 * MIB + 17, 16, 404, false);
    let _tcp = lt_seeder(&swarm, FORCED_TCP);
    let _utp = lt_seeder(&swarm, FORCED_UTP);
    swarm.tracker.wait_for_seeders(&swarm.info.info_hash, 2);
    download_checked(&swarm, "prefer", &[]);
    download_checked(&swarm, "require", &["--encryption", "require"]);
    download_checked(
        &swarm,
        "require-utp",
        &["--encryption", "require", "--no-tcp"],
    );
    download_checked(
        &swarm,
        "require-tcp",
        &["--encryption", "require", "--no-utp"],
    );
}

#[test]
fn libtorrent_forcing_rc4_downloads_from_a_bitrush_requiring_encryption() {
    let swarm = Swarm::single_file("tp-enc-out", 4 * MIB + 3, 16, 405, false);
    let seed = swarm.bitrush_seeder_with("payload.bin", &["--encryption", "require"]);
    lt_leech_checked(&swarm, &seed, "lt-tcp", FORCED_TCP);
    lt_leech_checked(&swarm, &seed, "lt-utp", FORCED_UTP);
}

#[test]
fn encrypted_both_ways_with_aria2_requiring_rc4() {
    let swarm = Swarm::single_file("tp-enc-aria2", 3 * MIB + 5, 16, 406, false);
    let _aria2 = swarm.aria2_seeder_with(1, &ARIA2_RC4_ONLY);
    download_checked(&swarm, "from-aria2", &["--encryption", "require"]);

    let other = Swarm::single_file("tp-enc-aria2-up", 2 * MIB + 77, 16, 407, false);
    let _seed = other.bitrush_seeder_with("payload.bin", &["--encryption", "require"]);
    let out = other.out_dir("aria2-out");
    aria2_download_with(&other.torrent, &out, &ARIA2_RC4_ONLY);
    assert_file_eq(&out.join("payload.bin"), &other.data, "aria2's download");
}

#[test]
fn require_refuses_plaintext_peers_both_ways_and_says_so() {
    let plaintext = LtWire {
        transport: LtTransport::Tcp,
        encryption: LtEncryption::Plaintext,
    };
    // Outgoing: the only seeder speaks plaintext only.
    let swarm = Swarm::single_file("tp-require", MIB, 16, 408, false);
    let _seeder = lt_seeder(&swarm, plaintext);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut proc = spawn_bitrush([
        "download".as_ref(),
        "--encryption".as_ref(),
        "require".as_ref(),
        "-o".as_ref(),
        out_path.as_os_str(),
        swarm.torrent.as_os_str(),
    ]);
    let refused = proc.wait_until(Duration::from_secs(60), |p| {
        p.stderr()
            .contains("does not complete an encryption handshake, and encryption is required")
    });
    assert!(refused.is_ok(), "{refused:?}\n{}", proc.logs());
    proc.kill();
    let got = std::fs::read(&out_path).unwrap_or_default();
    assert!(got.iter().all(|&b| b == 0), "nothing may come in plain");

    // Incoming: a plaintext-only libtorrent dials a seeding bitrush that requires encryption.
    let other = Swarm::single_file("tp-require-in", MIB, 16, 409, false);
    let mut seed = other.bitrush_seeder_with("payload.bin", &["--encryption", "require"]);
    let lt_out = other.out_dir("lt-out");
    let _leecher = LtLeecher::start_with(&other.torrent, &lt_out, &[seed.addr()], None, plaintext);
    let refused = seed.proc.wait_until(Duration::from_secs(60), |p| {
        p.stderr()
            .contains("refusing a plaintext connection from the peer: encryption is required")
    });
    assert!(refused.is_ok(), "{refused:?}\n{}", seed.proc.logs());
}

/// The first bytes bitrush sends a peer, per connection, through a magnet naming only that
/// peer (which never serves the metadata, so bitrush keeps trying).
fn first_bytes_sent(label: &str, extra: &[&str], connections: usize) -> Vec<Vec<u8>> {
    let hash = "0123456789abcdef0123456789abcdef01234567";
    let recorder = HandshakeRecorder::start(hash);
    let dir = TestDir::new(label);
    let magnet = format!("magnet:?xt=urn:btih:{hash}&x.pe={}", recorder.addr());
    let out_path = dir.path().join("out.bin");
    let mut args: Vec<&std::ffi::OsStr> = vec!["magnet_download".as_ref()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.extend(["-o".as_ref(), out_path.as_os_str(), magnet.as_ref()]);
    let mut proc = spawn_bitrush(args);
    let seen = proc.wait_until(Duration::from_secs(90), |_| {
        recorder.handshakes().len() >= connections
    });
    assert!(
        seen.is_ok(),
        "{seen:?}\n{}\n{}",
        proc.logs(),
        recorder.logs()
    );
    proc.kill();
    recorder.handshakes()
}

const PLAIN_START: &[u8] = b"\x13BitTorrent protocol";

#[test]
fn disable_sends_plain_handshakes_only_and_prefer_tries_mse_first() {
    let plain = first_bytes_sent("tp-disable", &["--encryption", "disable"], 1);
    for (i, first) in plain.iter().enumerate() {
        assert!(
            first.starts_with(PLAIN_START),
            "connection {i} did not start with a plain handshake: {first:02x?}"
        );
    }
    let preferred = first_bytes_sent("tp-prefer", &[], 2);
    assert!(
        !preferred[0].starts_with(PLAIN_START),
        "prefer must start with MSE: {:02x?}",
        preferred[0]
    );
    assert!(
        preferred[1].starts_with(PLAIN_START),
        "after MSE failed, prefer dials in plain: {:02x?}",
        preferred[1]
    );
}
