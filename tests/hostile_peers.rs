//! Hostile peers: scripted peers (tests/support/scripted_peer.py) that break
//! the protocol or send bad data, a flood of connections against a seeder,
//! and a destination bitrush cannot write to. Each download must still
//! complete byte-identical from an honest libtorrent seeder, or fail with one
//! clear error line.
//!
//! Where a hostile peer must have been dropped by bitrush (not by bitrush
//! exiting), the download runs with only hostile peers at first, so it cannot
//! finish; the honest seeder joins once every hostile peer saw its connection
//! closed.

mod common;

use common::*;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: usize = 1024 * 1024;
/// How long a hostile peer may take to see the effect it waits for (only
/// against a hang: no assertion is about time).
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `bitrush download -o OUT TORRENT EXTRA...` in the background, logging
/// warnings to stderr.
fn spawn_download_logged(torrent: &Path, out_path: &Path, extra: &[&str]) -> Proc {
    let mut cmd = bitrush_with(output_args("download", out_path, torrent, extra));
    cmd.env("RUST_LOG", "bitrush=warn");
    Proc::spawn("bitrush download", cmd)
}

/// Waits for the background download to exit 0 and checks the output.
fn finish_download(proc: &mut Proc, out_path: &Path, want: &[u8]) {
    let status = proc.wait_exit(PROCESS_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "download did not succeed ({status:?})\n{}",
        proc.logs()
    );
    assert!(!proc.stderr().contains("panicked"), "{}", proc.logs());
    let got = fs::read(out_path).unwrap_or_else(|e| panic!("read output: {e}\n{}", proc.logs()));
    assert_bytes_eq(&got, want, "downloaded file");
}

/// A libtorrent seeder that does not announce, so it never contacts the
/// scripted peers listed on the tracker (whose logs must show bitrush's
/// connections only); it is listed on the tracker for bitrush to find.
fn quiet_lt_seeder(swarm: &Swarm, upload_rate_limit: Option<u64>) -> LtSeeder {
    let seeder = swarm.lt_seeder_with(&LtSeedOptions {
        upload_rate_limit,
        no_announce: true,
        ..Default::default()
    });
    swarm
        .tracker
        .announce_fake_peer(&swarm.info.info_hash, seeder.port(), true);
    seeder
}

#[track_caller]
fn assert_running(proc: &mut Proc, what: &str) {
    assert!(
        proc.try_status().is_none(),
        "bitrush ended while {what}\n{}",
        proc.logs()
    );
}

/// The peers bitrush's log says it banned (`127.0.0.1:PORT` each).
fn banned_addrs(stderr: &str) -> std::collections::BTreeSet<String> {
    stderr
        .lines()
        .filter(|l| l.contains("banning peer"))
        .filter_map(|l| {
            let at = l.find("127.0.0.1:")?;
            let rest = &l[at + "127.0.0.1:".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some(format!("127.0.0.1:{digits}"))
        })
        .collect()
}

/// The 68-byte handshake for `info_hash_hex` (no extension bits).
fn handshake_bytes(info_hash_hex: &str) -> Vec<u8> {
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0u8; 8]);
    hs.extend_from_slice(&hex_to_bytes(info_hash_hex));
    hs.extend_from_slice(b"-TS0001-flood0000000");
    hs
}

/// Reads until the remote side closes the connection; returns the bytes read.
/// Fails if it stays open for `EVENT_TIMEOUT` (against a hang).
fn read_until_closed(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(got),
            Err(e) => return Err(format!("connection not closed: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------
// Peers that bitrush downloads from
// ---------------------------------------------------------------------------

#[test]
fn corrupt_peer_is_banned_and_its_pieces_come_from_others() {
    // 32 KiB pieces: the liar gets many pieces in its first batch of requests.
    let swarm = Swarm::single_file("hostile-corrupt", 2 * MIB + 11, 15, 401, false);
    let hash = swarm.info.info_hash.clone();
    let liar = BadPeer::start(&swarm.torrent, &swarm.seed_dir, BadPeerMode::Corrupt);
    swarm.tracker.announce_fake_peer(&hash, liar.port(), true);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut dl = spawn_download_logged(&swarm.torrent, &out_path, &[]);

    // With only the liar around, every piece fails until it is banned.
    if let Err(e) = dl.wait_until(EVENT_TIMEOUT, |dl| dl.stderr().contains("banning peer")) {
        panic!(
            "the corrupt peer was never banned: {e}\n{}\n{}",
            dl.logs(),
            liar.logs()
        );
    }
    let stderr = dl.stderr();
    let ban = stderr
        .lines()
        .find(|l| l.contains("banning peer"))
        .unwrap()
        .to_string();
    assert!(
        ban.contains(&format!("127.0.0.1:{}", liar.port())),
        "banned someone else: {ban}"
    );
    assert!(
        stderr.matches("failed its hash check").count() >= 3,
        "a peer is banned after 3 bad pieces\n{}",
        dl.logs()
    );

    // The honest seeder joins; the liar's address keeps coming back from the
    // tracker but must not be dialled again. (Before the ban it may have seen two
    // connections: an encrypted handshake it cannot read, then the plain redial.)
    let before = liar.connections();
    assert!(before >= 1, "the liar was never connected to");
    let _honest = quiet_lt_seeder(&swarm, None);
    finish_download(&mut dl, &out_path, &swarm.data);
    assert_eq!(
        liar.connections(),
        before,
        "bitrush connected to a banned peer again\n{}",
        dl.logs()
    );
}

#[test]
fn protocol_violations_drop_the_connection() {
    // 33 pieces of 64 KiB: the bitfield has 7 spare bits.
    let swarm = Swarm::single_file("hostile-proto", 2 * MIB + 5, 16, 402, false);
    assert_eq!(swarm.info.num_pieces % 8, 1);
    let hash = swarm.info.info_hash.clone();
    let modes = [
        "oversized",
        "bad-bitfield",
        "spare-bits",
        "have-range",
        "wrong-infohash",
    ];
    let peers: Vec<ScriptedPeer> = modes
        .iter()
        .map(|m| ScriptedPeer::start(&swarm.torrent, &swarm.seed_dir, m))
        .collect();
    for p in &peers {
        swarm.tracker.announce_fake_peer(&hash, p.port(), true);
    }
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut dl = spawn_download_logged(&swarm.torrent, &out_path, &[]);
    // Nobody honest yet: the download cannot end, so a closed connection is
    // bitrush dropping the peer.
    for (mode, p) in modes.iter().zip(&peers) {
        if let Err(e) = p.wait_for("VIOLATION", EVENT_TIMEOUT) {
            panic!("{mode}: bitrush never connected: {e}\n{}", p.logs());
        }
        if let Err(e) = p.wait_for("CLOSED", EVENT_TIMEOUT) {
            panic!("{mode}: bitrush kept the connection: {e}\n{}", p.logs());
        }
        assert_running(&mut dl, &format!("dealing with the {mode} peer"));
    }
    // The 4 GiB frame was refused before anything was reserved for it.
    let peak = vm_peak(dl.pid()).expect("VmPeak of bitrush");
    assert!(
        peak < 3 << 30,
        "bitrush reserved {peak} bytes of address space after a 4 GiB length prefix"
    );

    let _honest = quiet_lt_seeder(&swarm, None);
    finish_download(&mut dl, &out_path, &swarm.data);
    assert!(
        !dl.stderr().contains("failed its hash check"),
        "{}",
        dl.logs()
    );
}

/// Runs a download with a scripted peer in `mode` (which serves honestly after
/// its trick) and a throttled libtorrent seeder; checks nothing bad was used.
fn check_ignored_bogus_blocks(label: &str, mode: &str, seed: u64) {
    let swarm = Swarm::single_file(label, 2 * MIB + 77, 16, seed, false);
    let hash = swarm.info.info_hash.clone();
    let trickster = ScriptedPeer::start(&swarm.torrent, &swarm.seed_dir, mode);
    swarm
        .tracker
        .announce_fake_peer(&hash, trickster.port(), true);
    let _honest = quiet_lt_seeder(&swarm, Some(512 * 1024));
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut dl = spawn_download_logged(&swarm.torrent, &out_path, &[]);
    finish_download(&mut dl, &out_path, &swarm.data);
    assert!(
        trickster.bogus_blocks() > 0,
        "the {mode} peer never got to send its bogus blocks\n{}",
        trickster.logs()
    );
    assert!(
        !dl.stderr().contains("failed its hash check"),
        "bogus blocks from the {mode} peer were used\n{}",
        dl.logs()
    );
    assert!(
        trickster.count("SERVED") > 0,
        "the {mode} peer was dropped instead of being used once it behaved\n{}\n{}",
        trickster.logs(),
        dl.logs()
    );
}

#[test]
fn unrequested_blocks_are_ignored() {
    check_ignored_bogus_blocks("hostile-unrequested", "unrequested", 403);
}

#[test]
fn blocks_after_a_choke_are_ignored() {
    check_ignored_bogus_blocks("hostile-choke", "choke-data", 404);
}

#[test]
fn stalled_peer_loses_its_blocks_to_others() {
    let swarm = Swarm::single_file("hostile-stall", 2 * MIB + 9, 16, 405, false);
    let hash = swarm.info.info_hash.clone();
    let staller = ScriptedPeer::start(&swarm.torrent, &swarm.seed_dir, "stall");
    swarm
        .tracker
        .announce_fake_peer(&hash, staller.port(), true);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut dl = spawn_download_logged(&swarm.torrent, &out_path, &[]);
    if let Err(e) = staller.wait_for("REQUEST", EVENT_TIMEOUT) {
        panic!("bitrush never asked the stalling peer: {e}\n{}", dl.logs());
    }
    let _honest = swarm.lt_seeder();
    finish_download(&mut dl, &out_path, &swarm.data);
    assert_eq!(staller.count("SERVED"), 0);
}

#[test]
fn banned_incoming_peers_give_back_their_slots_and_blocks() {
    // 32 KiB pieces (two blocks each). A scripted peer dials bitrush 60 times
    // in a row and answers every request with corrupt data, so each of its
    // connections is banned. 60 exceeds the 50 incoming slots unless a banned
    // connection gives its slot back, and the blocks it still owed must go
    // back to the pool for the honest seeder that comes afterwards.
    let swarm = Swarm::single_file("hostile-banned-in", MIB + 1, 15, 410, false);
    let hash = swarm.info.info_hash.clone();
    let out_path = swarm.out_dir("out").join("payload.bin");
    let port = free_port();
    let mut dl = spawn_download_logged(&swarm.torrent, &out_path, &["--port", &port.to_string()]);
    // It listens before it announces.
    if let Err(e) = dl.wait_until(EVENT_TIMEOUT, |_| swarm.tracker.scrape(&hash).1 >= 1) {
        panic!("bitrush never announced: {e}\n{}", dl.logs());
    }
    let cycles = 60;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let dialler = ScriptedPeer::dial(&swarm.torrent, &swarm.seed_dir, "corrupt", target, cycles);
    if let Err(e) = dialler.wait_for("DONE", PROCESS_TIMEOUT) {
        panic!(
            "the dialler did not finish: {e}\n{}\n{}",
            dialler.logs(),
            dl.logs()
        );
    }
    assert_eq!(
        dialler.count("REFUSED"),
        0,
        "bitrush stopped accepting peers after banning some\n{}\n{}",
        dialler.logs(),
        dl.logs()
    );
    assert_eq!(dialler.count("CYCLE"), cycles);
    // The last connections may be judged after the dialler is done (a peer that left before
    // its pieces failed is banned once they do).
    if let Err(e) = dl.wait_until(EVENT_TIMEOUT, |p| banned_addrs(&p.stderr()).len() >= cycles) {
        panic!(
            "only {} connections were banned: {e}\n{}",
            banned_addrs(&dl.stderr()).len(),
            dl.logs()
        );
    }
    assert_running(&mut dl, "being attacked");
    let _honest = swarm.lt_seeder();
    finish_download(&mut dl, &out_path, &swarm.data);
}

// ---------------------------------------------------------------------------
// Peers that connect to a bitrush seeder
// ---------------------------------------------------------------------------

#[test]
fn seeder_keeps_its_connection_limit_under_a_flood() {
    let swarm = Swarm::single_file("hostile-flood", 3 * MIB + 1, 16, 406, false);
    let hash = swarm.info.info_hash.clone();
    let seeder = swarm.bitrush_seeder("payload.bin");
    // A real leecher, throttled so the flood hits in the middle of its download.
    let lt_out = swarm.out_dir("lt-out");
    let mut leecher = LtLeecher::start(&swarm.torrent, &lt_out, &[seeder.addr()], Some(512 * 1024));
    leecher.wait_progress(128 * 1024);

    // 200 connections, each with a valid handshake, held open.
    let hs = handshake_bytes(&hash);
    let mut flood = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(seeder.addr()).expect("connect to the seeder");
        // The seeder may already have dropped us (over the limit): ignore.
        let _ = s.write_all(&hs);
        flood.push(s);
    }
    let mut answered = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut theirs = [0u8; 68];
        match s.read_exact(&mut theirs) {
            Ok(()) => {
                assert_eq!(&theirs[..20], &hs[..20], "not a handshake");
                assert_eq!(
                    &theirs[28..48],
                    &hs[28..48],
                    "handshake for another torrent"
                );
                answered += 1;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
                ) => {}
            Err(e) => panic!("the seeder neither answered nor closed a connection: {e}"),
        }
    }
    // 50 incoming connections at most, one of them the libtorrent leecher.
    assert!(
        (1..=49).contains(&answered),
        "{answered} of 200 flood connections were served next to the leecher (limit 50)"
    );
    leecher.wait_complete();
    assert_bytes_eq(
        &fs::read(lt_out.join("payload.bin")).unwrap(),
        &swarm.data,
        "libtorrent's download during the flood",
    );
    drop(flood);
    let mut seeder = seeder;
    assert!(
        seeder.proc.try_status().is_none(),
        "the seeder died\n{}",
        seeder.logs()
    );
}

#[test]
fn seeder_drops_misbehaving_incoming_peers_and_keeps_serving() {
    let swarm = Swarm::single_file("hostile-incoming", MIB + 3, 15, 407, false);
    let hash = swarm.info.info_hash.clone();
    let seeder = swarm.bitrush_seeder("payload.bin");
    let n = swarm.info.num_pieces as u32;
    // A wrong info hash: closed without a handshake in return.
    {
        let other = "0123456789abcdef0123456789abcdef01234567";
        let mut s = TcpStream::connect(seeder.addr()).unwrap();
        s.write_all(&handshake_bytes(other)).unwrap();
        let got = read_until_closed(&mut s).unwrap();
        assert!(
            got.is_empty(),
            "answered a handshake for another torrent: {got:?}"
        );
    }
    // After a valid handshake, each of these messages must end the connection.
    let request = |index: u32, begin: u32, length: u32| {
        let mut m = vec![0, 0, 0, 13, 6];
        for v in [index, begin, length] {
            m.extend_from_slice(&v.to_be_bytes());
        }
        m
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("length prefix 0xFFFFFFF0", vec![0xFF, 0xFF, 0xFF, 0xF0, 7]),
        ("request past the last piece", request(n, 0, 16384)),
        ("request longer than 128 KiB", request(0, 0, 128 * 1024 + 1)),
        (
            "request past the end of the piece",
            request(0, 32 * 1024 - 1, 2),
        ),
        ("have for a piece past the last", {
            let mut m = vec![0, 0, 0, 5, 4];
            m.extend_from_slice(&n.to_be_bytes());
            m
        }),
    ];
    for (what, msg) in &bad {
        let mut s = TcpStream::connect(seeder.addr()).unwrap();
        s.write_all(&handshake_bytes(&hash)).unwrap();
        let mut theirs = [0u8; 68];
        s.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        s.read_exact(&mut theirs)
            .unwrap_or_else(|e| panic!("{what}: no handshake from the seeder: {e}"));
        // Interested first, so a request is one we could be served.
        s.write_all(&[0, 0, 0, 1, 2]).unwrap();
        s.write_all(msg).unwrap();
        if let Err(e) = read_until_closed(&mut s) {
            panic!("{what}: {e}\n{}", seeder.logs());
        }
    }
    let out = swarm.out_dir("lt-out");
    lt_download(&swarm.torrent.to_string_lossy(), &out, &[seeder.addr()]);
    assert_bytes_eq(
        &fs::read(out.join("payload.bin")).unwrap(),
        &swarm.data,
        "libtorrent's download after the hostile peers",
    );
}

// ---------------------------------------------------------------------------
// Destinations bitrush cannot write
// ---------------------------------------------------------------------------

/// A clear error line says what went wrong once (not once per error layer).
#[track_caller]
fn assert_says_once(line: &str, what: &str) {
    assert_eq!(
        line.matches(what).count(),
        1,
        "error line should say {what:?} exactly once: {line}"
    );
}

#[test]
fn unwritable_output_is_one_clear_error() {
    let swarm = Swarm::single_file("hostile-unwritable", 100_000, 15, 408, false);
    // A parent that is a regular file (root ignores permission bits, so
    // permissions would not stop a test running as root).
    let blocker = swarm.dir.join("not-a-directory");
    fs::write(&blocker, b"x").unwrap();
    let out = run_download(&swarm.torrent, &blocker.join("payload.bin"), &[]);
    let line = assert_one_line_error(&out);
    assert!(
        line.contains("not-a-directory"),
        "error names no path: {line}"
    );
    assert_says_once(&line, "os error");
    assert_eq!(fs::read(&blocker).unwrap(), b"x");

    assert!(
        line.contains("cannot create the directory"),
        "error does not say what failed: {line}"
    );

    // An existing directory where the single file should go: the error says so and what to
    // pass instead.
    let dir_out = swarm.out_dir("a-directory");
    let out = run_download(&swarm.torrent, &dir_out, &[]);
    let line = assert_one_line_error(&out);
    assert!(line.contains("a-directory is a directory"), "{line}");
    assert!(
        line.contains(&format!("a-directory/{}", swarm.info.name)),
        "no suggestion of the file's path: {line}"
    );
}

#[test]
fn full_disk_is_a_clean_error() {
    // A 256 KiB tmpfs, mounted in a private mount namespace that vanishes
    // with the process (needs root, as in CI).
    let swarm = Swarm::single_file("hostile-diskfull", 2 * MIB, 16, 409, false);
    let _seeder = swarm.lt_seeder();
    let mnt = swarm.out_dir("small-disk");
    let unshare = require_tool("unshare");
    let script = r#"mount -t tmpfs -o size=256k bitrush-test "$1" || { echo "MOUNT FAILED" >&2; exit 99; }
exec "$2" download -o "$1/payload.bin" "$3""#;
    let mut cmd = Command::new(unshare);
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(&mnt)
    .arg(env!("CARGO_BIN_EXE_bitrush"))
    .arg(&swarm.torrent)
    .env_remove("RUST_LOG");
    let out = run_with_timeout("bitrush download onto a full disk", cmd, PROCESS_TIMEOUT);
    assert!(
        !stderr_of(&out).contains("MOUNT FAILED"),
        "cannot mount a tmpfs (this test needs root)\n{}",
        dump(&out)
    );
    let line = assert_cli_error(&out);
    assert!(
        line.contains("No space left on device"),
        "error does not say the disk is full: {line}\n{}",
        dump(&out)
    );
    assert_says_once(&line, "No space left on device");
    // Nothing was mounted outside the private namespace.
    assert!(fs::read_dir(&mnt).unwrap().next().is_none());
}
