//! Seeding (`bitrush seed`, `bitrush download --seed`) to real clients, and
//! resuming a download: after SIGINT (with and without trusting the resume
//! state it leaves), after `kill -9`, with the data already complete, and with
//! one piece corrupted on disk.
//!
//! Which pieces a resumed download fetched is read off an honest scripted
//! seeder (tests/support/scripted_peer.py) that logs every block it serves:
//! when it is the only peer with data, the pieces it served are exactly the
//! pieces bitrush fetched again.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Command, ExitStatus, Output};
use std::thread;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// Starts `bitrush download -o OUT TORRENT EXTRA...` in the background.
fn spawn_download(torrent: &Path, out_path: &Path, extra: &[&str]) -> Proc {
    spawn_bitrush(output_args("download", out_path, torrent, extra))
}

/// [`run_download`], which must succeed and leave exactly `want` at `out_path`
/// (`what` names it); returns the run for later messages.
#[track_caller]
fn download_ok(torrent: &Path, out_path: &Path, extra: &[&str], want: &[u8], what: &str) -> Output {
    let out = run_download(torrent, out_path, extra);
    assert_success(&out);
    assert_file_eq(out_path, want, what);
    out
}

fn indices(flags: &[bool], value: bool) -> BTreeSet<u32> {
    flags
        .iter()
        .enumerate()
        .filter(|(_, &f)| f == value)
        .map(|(i, _)| i as u32)
        .collect()
}

/// Downloads the swarm's payload to `out_path` from a libtorrent seeder
/// throttled to 128 KiB/s until at least `min` pieces verify on disk, then
/// hands the running download to `stop`; the seeder is gone on return.
fn partial_download(swarm: &Swarm, out_path: &Path, min: usize, stop: impl FnOnce(&mut Proc)) {
    let _slow = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(128 * 1024));
    let mut first = spawn_download(&swarm.torrent, out_path, &[]);
    wait_for_verified_pieces(&mut first, out_path, &swarm.info, min);
    stop(&mut first);
}

/// Sends SIGINT to `proc` and waits (up to 60 s) for it to exit.
fn interrupt(proc: &mut Proc) -> ExitStatus {
    send_signal(proc.pid(), "INT");
    proc.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit after SIGINT\n{}", proc.logs()))
}

/// An honest scripted seeder of the swarm's payload, announced to its
/// tracker; it logs every block it serves.
fn honest_peer(swarm: &Swarm) -> ScriptedPeer {
    let honest = ScriptedPeer::start(&swarm.torrent, &swarm.seed_dir, "honest");
    swarm
        .tracker
        .announce_fake_peer(&swarm.info.info_hash, honest.port(), true);
    honest
}

/// Waits until at least `min` pieces of the (single-file) output verify
/// against the torrent's hashes while `proc` (a bitrush download) runs.
fn wait_for_verified_pieces(proc: &mut Proc, out_path: &Path, info: &LtInfo, min: usize) {
    let mut have = 0;
    let enough = proc.wait_until(PROCESS_TIMEOUT, |_| {
        have = verified_pieces(out_path, info)
            .iter()
            .filter(|&&v| v)
            .count();
        have >= min
    });
    if let Err(e) = enough {
        panic!(
            "no {min} verified pieces on disk (have {have}): {e}\n{}",
            proc.logs()
        );
    }
}

// ---------------------------------------------------------------------------
// Seeding to other clients
// ---------------------------------------------------------------------------

/// Every entry under `dir` with its contents (directories as `None`).
fn snapshot(dir: &Path) -> BTreeMap<std::path::PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                out.insert(p, None);
            } else {
                out.insert(p.clone(), Some(fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn seed_with_wrong_data_fails_and_never_writes_it() {
    // A peer with the real data is in the swarm: a seed that downloaded would find it.
    let swarm = Swarm::single_file("seed-wrong", MIB + 17, 16, 310, false);
    let _lt = swarm.lt_seeder();
    swarm.tracker.wait_for_seeders(&swarm.info.info_hash, 1);
    let user = swarm.out_dir("user");
    let file = user.join("payload.bin");
    fs::write(&file, vec![0x5a; 500]).unwrap();
    let before = snapshot(&user);
    let out = run_bitrush(["seed".as_ref(), swarm.torrent.as_os_str(), file.as_os_str()]);
    let line = assert_cli_error(&out);
    let pieces = swarm.info.num_pieces;
    assert!(
        line.ends_with(&format!(
            "does not match the torrent: 0 of {pieces} pieces verified"
        )),
        "{}",
        dump(&out)
    );
    assert_eq!(snapshot(&user), before, "seed changed the user's folder");

    // Half the pieces right: still refused without --partial, and still untouched.
    let plen = swarm.info.piece_length as usize;
    let mut half = swarm.data.clone();
    for b in &mut half[(pieces / 2) * plen..] {
        *b ^= 0xff;
    }
    fs::write(&file, &half).unwrap();
    let before = snapshot(&user);
    let out = run_bitrush(["seed".as_ref(), swarm.torrent.as_os_str(), file.as_os_str()]);
    let line = assert_cli_error(&out);
    assert!(
        line.contains(&format!("{} of {pieces} pieces verified", pieces / 2)),
        "{}",
        dump(&out)
    );
    assert_eq!(snapshot(&user), before, "seed changed the user's folder");
}

#[test]
fn seed_of_a_missing_path_creates_nothing() {
    let swarm = Swarm::tree(
        "seed-missing",
        "tree",
        &[("a.bin", 70_000), ("d/b.bin", 9)],
        15,
        311,
    );
    let user = swarm.out_dir("user");
    for missing in [user.join("tree"), user.join("nested").join("tree")] {
        let out = run_bitrush([
            "seed".as_ref(),
            swarm.torrent.as_os_str(),
            missing.as_os_str(),
        ]);
        let line = assert_cli_error(&out);
        assert!(line.contains("does not exist"), "{}", dump(&out));
        assert!(!missing.exists());
    }
    assert!(
        snapshot(&user).is_empty(),
        "seed created {:?}",
        snapshot(&user)
    );
}

#[test]
fn partial_seed_serves_verified_pieces_and_writes_nothing() {
    let swarm = Swarm::single_file("seed-partial", MIB, 16, 312, false);
    let user = swarm.out_dir("user");
    let file = user.join("payload.bin");
    let plen = swarm.info.piece_length as usize;
    let mut data = swarm.data.clone();
    for b in &mut data[plen..] {
        *b = 0;
    }
    fs::write(&file, &data).unwrap();
    let before = snapshot(&user);
    let seed = BitrushSeeder::start(
        &swarm.torrent,
        &file,
        &swarm.tracker,
        &swarm.info.info_hash,
        1,
        &["--partial"],
    );
    let piece = swarm.out_dir("piece").join("0");
    let out = run_bitrush(output_args(
        "download_piece",
        &piece,
        &swarm.torrent,
        &["0"],
    ));
    assert_success(&out);
    assert_file_eq(&piece, &swarm.data[..plen], "piece 0 from the partial seed");
    drop(seed);
    assert_eq!(
        snapshot(&user),
        before,
        "partial seed changed the user's folder"
    );
}

#[test]
fn libtorrent_downloads_single_file_from_bitrush_seed() {
    let swarm = Swarm::single_file("seed-lt", 3 * MIB + 517, 16, 301, false);
    let _seed = swarm.bitrush_seeder("payload.bin");
    // libtorrent finds the seeder through the tracker only.
    let out = swarm.out_dir("lt-out");
    lt_download(&swarm.torrent.to_string_lossy(), &out, &[]);
    assert_file_eq(
        &out.join("payload.bin"),
        &swarm.data,
        "libtorrent's download from bitrush",
    );
}

#[test]
fn libtorrent_downloads_tree_from_bitrush_seed() {
    let files = [
        ("a.bin", 400_001),
        ("empty", 0),
        ("d/b.bin", 70_000),
        ("d/e/c.txt", 12),
        ("z.bin", 2 * 65_536 + 3),
    ];
    let swarm = Swarm::tree("seed-lt-tree", "tree", &files, 15, 302);
    let _seed = swarm.bitrush_seeder("tree");
    let out = swarm.out_dir("lt-out");
    lt_download(&swarm.torrent.to_string_lossy(), &out, &[]);
    assert_tree_eq(&out.join("tree"), &swarm.tree);
}

#[test]
fn aria2_downloads_from_bitrush_seed() {
    let swarm = Swarm::single_file("seed-aria2", 2 * MIB + 99, 16, 303, false);
    let _seed = swarm.bitrush_seeder("payload.bin");
    let out = swarm.out_dir("aria2-out");
    aria2_download(&swarm.torrent, &out);
    assert_file_eq(
        &out.join("payload.bin"),
        &swarm.data,
        "aria2's download from bitrush",
    );
}

#[test]
fn mixed_swarm_of_two_seeders_and_two_leechers_completes() {
    // One bitrush seeder and one libtorrent seeder; a bitrush leecher and a
    // libtorrent leecher download at the same time (and may trade pieces).
    let swarm = Swarm::single_file("seed-mixed", 4 * MIB + 1, 16, 304, false);
    let hash = swarm.info.info_hash.clone();
    let _bitrush_seed = swarm.bitrush_seeder("payload.bin");
    let _lt_seed = swarm.lt_seeder();
    swarm.tracker.wait_for_seeders(&hash, 2);

    let lt_out = swarm.out_dir("lt-out");
    let torrent = swarm.torrent.to_string_lossy().into_owned();
    let lt_dir = lt_out.clone();
    let lt_leecher = thread::spawn(move || lt_download(&torrent, &lt_dir, &[]));

    let out_path = swarm.out_dir("bitrush-out").join("payload.bin");
    let out = run_download(&swarm.torrent, &out_path, &[]);
    let lt_result = lt_leecher.join();
    assert_success(&out);
    assert_file_eq(&out_path, &swarm.data, "bitrush leecher");
    if let Err(e) = lt_result {
        std::panic::resume_unwind(e);
    }
    assert_file_eq(
        &lt_out.join("payload.bin"),
        &swarm.data,
        "libtorrent leecher",
    );
}

#[test]
fn bitrush_leecher_seeds_to_another_bitrush_after_the_first_seeder_left() {
    // A (bitrush seed) -> B (bitrush download --seed) -> C (bitrush download).
    // A stops before C starts, so C can only get the data from B.
    let swarm = Swarm::single_file("seed-relay", 3 * MIB + 7, 16, 305, false);
    let hash = swarm.info.info_hash.clone();
    let mut a = swarm.bitrush_seeder("payload.bin");
    let b_path = swarm.out_dir("b").join("payload.bin");
    let b_port = free_port().to_string();
    let mut b = spawn_download(&swarm.torrent, &b_path, &["--seed", "--port", &b_port]);
    // B announces `completed` once it has everything: two seeders then.
    if let Err(e) = b.wait_until(PROCESS_TIMEOUT, |_| swarm.tracker.scrape(&hash).0 >= 2) {
        panic!("B never became a seeder: {e}\n{}", b.logs());
    }
    assert_file_eq(&b_path, &swarm.data, "B's download");

    send_signal(a.proc.pid(), "TERM");
    let status = a.proc.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "bitrush seed should stop cleanly on SIGTERM ({status:?})\n{}",
        a.logs()
    );

    let c_path = swarm.out_dir("c").join("payload.bin");
    download_ok(
        &swarm.torrent,
        &c_path,
        &[],
        &swarm.data,
        "C's download (from B)",
    );

    assert!(b.try_status().is_none(), "B stopped seeding\n{}", b.logs());
    send_signal(b.pid(), "INT");
    let status = b.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "a completed `download --seed` should exit 0 on SIGINT ({status:?})\n{}",
        b.logs()
    );
}

// ---------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------

#[test]
fn sigint_keeps_verified_pieces_and_resume_fetches_only_the_rest() {
    // 33 pieces of 64 KiB from a seeder throttled to 128 KiB/s: interrupted
    // after a few pieces are on disk.
    let swarm = Swarm::single_file("resume-int", 2 * MIB + 100, 16, 306, false);
    let hash = swarm.info.info_hash.clone();
    let n = swarm.info.num_pieces;
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut interrupted = String::new();
    partial_download(&swarm, &out_path, 4, |first| {
        let status = interrupt(first);
        assert!(
            !status.success() && status.code().is_some(),
            "an interrupted download must exit non-zero by itself ({status})\n{}",
            first.logs()
        );
        let stderr = first.stderr();
        interrupted = stderr
            .lines()
            .find(|l| l.starts_with("error: interrupted"))
            .unwrap_or_else(|| panic!("no `error: interrupted` line\n{}", first.logs()))
            .to_string();
        assert!(!stderr.contains("panicked"), "{}", first.logs());
        // It was the only leecher, and it announced `stopped` on the way out.
        assert_eq!(
            swarm.tracker.scrape(&hash).1,
            0,
            "the tracker still lists the interrupted download\n{}",
            first.logs()
        );
    });
    assert!(
        resume_state(&out_path).exists(),
        "an interrupted download left no resume state"
    );
    let before = verified_pieces(&out_path, &swarm.info);
    let kept = indices(&before, true);
    let missing = indices(&before, false);
    assert!(
        kept.len() >= 4 && !missing.is_empty(),
        "want a partial download, have {} of {n} pieces",
        kept.len()
    );
    // It says how much is kept, where, and how to resume.
    let says = |part: &str| {
        assert!(
            interrupted.contains(part),
            "{part:?} not in {interrupted:?}"
        )
    };
    says(&format!(
        "error: interrupted: {} of {n} pieces (",
        kept.len()
    ));
    says(&format!(
        " of 2.0 MiB) are verified and kept in {}",
        out_path.display()
    ));
    says("; run the same command again to resume");

    // The throttled seeder is gone; the only peer with data now logs every
    // block it serves.
    let honest = honest_peer(&swarm);
    let out = download_ok(
        &swarm.torrent,
        &out_path,
        &[],
        &swarm.data,
        "resumed download",
    );
    let summary = stderr_of(&out);
    assert!(
        summary.lines().any(|l| l.starts_with("downloaded ")
            && l.contains(" of 2.0 MiB (")
            && l.contains(" were already present) in ")),
        "the summary does not tell the pieces fetched from those kept\n{}",
        dump(&out)
    );
    let served = honest.served_pieces();
    let refetched: Vec<_> = served.intersection(&kept).collect();
    assert!(
        refetched.is_empty(),
        "pieces verified before the interruption were fetched again: {refetched:?}\n{}",
        dump(&out)
    );
    assert_eq!(
        served, missing,
        "the resumed run fetched other pieces than the missing ones"
    );
    assert!(
        !resume_state(&out_path).exists(),
        "a complete download kept its resume state"
    );
}

/// Where bitrush keeps the resume state of `out_path`.
fn resume_state(out_path: &Path) -> std::path::PathBuf {
    let mut name = out_path.as_os_str().to_os_string();
    name.push(".bitrush-resume");
    name.into()
}

/// Copies an interrupted output and its resume state to `dest`, with the
/// output's modification time, then flips byte `offset` of the copy and puts
/// that time back: damage the resume state cannot see.
fn damaged_copy(out_path: &Path, dest: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let mtime = fs::metadata(out_path).unwrap().modified().unwrap();
    fs::copy(out_path, dest).unwrap();
    fs::copy(resume_state(out_path), resume_state(dest)).unwrap();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dest)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], offset).unwrap();
    file.set_modified(mtime).unwrap();
}

#[test]
fn resume_state_is_trusted_and_recheck_overrides_it() {
    let swarm = Swarm::single_file("resume-state", 2 * MIB + 100, 16, 310, false);
    let out_dir = swarm.out_dir("out");
    let out_path = out_dir.join("payload.bin");
    partial_download(&swarm, &out_path, 4, |first| {
        interrupt(first);
    });
    assert!(resume_state(&out_path).exists(), "no resume state");
    let before = verified_pieces(&out_path, &swarm.info);
    let (kept, missing) = (indices(&before, true), indices(&before, false));
    assert!(!missing.is_empty(), "the download was not interrupted");
    let damaged = *kept.iter().next().expect("a verified piece");
    let offset = u64::from(damaged) * swarm.info.piece_length + 5;
    let (trusting, checking) = (out_dir.join("trusting.bin"), out_dir.join("checking.bin"));
    damaged_copy(&out_path, &trusting, offset);
    damaged_copy(&out_path, &checking, offset);

    let honest = honest_peer(&swarm);
    // The state vouches for the damaged piece: it is neither hashed nor fetched.
    let out = run_download(&swarm.torrent, &trusting, &[]);
    assert_success(&out);
    assert_eq!(
        honest.served_pieces(),
        missing,
        "the resume state was not trusted\n{}",
        dump(&out)
    );
    let got = fs::read(&trusting).unwrap();
    assert_eq!(got[offset as usize], swarm.data[offset as usize] ^ 0xff);
    assert!(!resume_state(&trusting).exists());

    // `--recheck` hashes everything, finds the damage and fetches that piece.
    let out = download_ok(
        &swarm.torrent,
        &checking,
        &["--recheck"],
        &swarm.data,
        "rechecked output",
    );
    let mut want = missing.clone();
    want.insert(damaged);
    assert_eq!(
        honest.served_pieces(),
        want,
        "--recheck did not fetch the damaged piece again\n{}",
        dump(&out)
    );
}

#[test]
fn resume_after_kill_9_completes() {
    let swarm = Swarm::single_file("resume-kill", 2 * MIB + 3, 16, 307, false);
    let out_path = swarm.out_dir("out").join("payload.bin");
    partial_download(&swarm, &out_path, 3, |first| {
        first.kill(); // SIGKILL: no cleanup at all
    });
    let before = verified_pieces(&out_path, &swarm.info);
    assert!(
        before.iter().any(|&v| v) && before.iter().any(|&v| !v),
        "want a partial download after kill -9"
    );
    let _seeder = swarm.lt_seeder();
    download_ok(
        &swarm.torrent,
        &out_path,
        &[],
        &swarm.data,
        "download resumed after kill -9",
    );
}

#[test]
fn complete_output_finishes_without_contacting_anyone() {
    // The torrent's trackers (HTTP and UDP tiers) are sockets of this test
    // that never answer; afterwards they must have seen nothing.
    let dir = TestDir::new("resume-complete");
    let src = dir.subdir("seed").join("payload.bin");
    let data = write_payload(&src, MIB + 5, 308);
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    http.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let torrent = dir.join("payload.torrent");
    let mut cmd = Command::new(require_tool("mktorrent"));
    cmd.arg("-a")
        .arg(format!(
            "http://127.0.0.1:{}/announce",
            http.local_addr().unwrap().port()
        ))
        .arg("-a")
        .arg(format!(
            "udp://127.0.0.1:{}/announce",
            udp.local_addr().unwrap().port()
        ))
        .arg("-l")
        .arg("16")
        .arg("-o")
        .arg(&torrent)
        .arg(&src);
    run_checked("mktorrent", cmd, Duration::from_secs(60));
    assert_eq!(lt_info(&torrent).trackers.len(), 2);

    let out_path = dir.subdir("out").join("payload.bin");
    fs::copy(&src, &out_path).unwrap();
    let out = download_ok(&torrent, &out_path, &[], &data, "output");

    let mut tcp_connections = 0;
    while http.accept().is_ok() {
        tcp_connections += 1;
    }
    let mut buf = [0u8; 2048];
    let mut datagrams = 0;
    while udp.recv_from(&mut buf).is_ok() {
        datagrams += 1;
    }
    assert_eq!(
        (tcp_connections, datagrams),
        (0, 0),
        "a complete download contacted its trackers\n{}",
        dump(&out)
    );
}

#[test]
fn corrupted_piece_on_disk_is_the_only_one_fetched_again() {
    let swarm = Swarm::single_file("resume-corrupt", MIB + 4321, 16, 309, false);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut bad = swarm.data.clone();
    let piece = 7usize;
    let plen = swarm.info.piece_length as usize;
    for off in [
        piece * plen + 1,
        piece * plen + plen / 2,
        piece * plen + plen - 1,
    ] {
        bad[off] ^= 0xA5;
    }
    fs::write(&out_path, &bad).unwrap();
    let before = verified_pieces(&out_path, &swarm.info);
    assert_eq!(indices(&before, false), BTreeSet::from([piece as u32]));

    let honest = honest_peer(&swarm);
    download_ok(
        &swarm.torrent,
        &out_path,
        &[],
        &swarm.data,
        "repaired output",
    );
    assert_eq!(
        honest.served_pieces(),
        BTreeSet::from([piece as u32]),
        "only the corrupted piece should be fetched again\n{}",
        honest.logs()
    );
}
