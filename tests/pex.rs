//! Peer exchange (BEP 11) with libtorrent, both ways: bitrush reaches peers that only another
//! peer's exchange tells of, and tells libtorrent of peers it would not know otherwise
//! (tests/support/lt_pex.py).

mod common;

use common::*;

const MIB: usize = 1024 * 1024;

#[test]
fn bitrush_downloads_from_peers_known_only_through_peer_exchange() {
    let swarm = Swarm::single_file("pex-hidden", 3 * MIB + 13, 16, 701, false);
    let mut cmd = support_script("lt_pex.py");
    cmd.arg("hidden")
        .arg(&swarm.torrent)
        .arg(&swarm.seed_dir)
        .args(["--hidden", "2", "--announcer-rate", "8192"]);
    let mut lt = Proc::spawn("lt_pex hidden", cmd);
    let line = lt
        .wait_for_stdout_line(
            |l| l.starts_with("READY") || l.starts_with("ERROR"),
            PROCESS_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", lt.logs()));
    assert!(line.starts_with("READY"), "{line}\n{}", lt.logs());
    let ports: Vec<u16> = line
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 3, "{line}\n{}", lt.logs());
    // The tracker knows only the announcer, a leecher downloading at 8 KiB/s: almost everything
    // must come from the hidden seeders, which only its peer exchange names.
    swarm.tracker.wait_for_leechers(&swarm.info.info_hash, 1);
    let out = run_download(
        &swarm.torrent,
        &swarm.out_dir("out").join("payload.bin"),
        &[],
    );
    assert_success(&out);
    assert_file_eq(
        &swarm.out_dir("out").join("payload.bin"),
        &swarm.data,
        "download through peers found by peer exchange",
    );
    lt.send_line("stats");
    lt.wait_for_stdout_line(|l| l == "END", PROCESS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", lt.logs()));
    let uploaded = |port: u16| -> u64 {
        lt.stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("UPLOADED "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(p, _)| p.parse() == Ok(port))
            .map(|(_, n)| n.parse().unwrap())
            .next_back()
            .unwrap()
    };
    let hidden: u64 = ports[1..].iter().map(|&p| uploaded(p)).sum();
    assert!(
        hidden as usize >= swarm.data.len() / 2,
        "the hidden seeders sent only {hidden} bytes (announcer: {})\n{}",
        uploaded(ports[0]),
        lt.logs()
    );
}

#[test]
fn libtorrent_learns_peers_from_bitrush_peer_exchange() {
    let swarm = Swarm::single_file("pex-teach", 2 * MIB + 9, 16, 702, false);
    let seed = swarm.bitrush_seeder("payload.bin");
    let mut cmd = support_script("lt_pex.py");
    cmd.arg("learner")
        .arg(&swarm.torrent)
        .arg(swarm.out_dir("lt-out"))
        .arg("--peer")
        .arg(seed.addr().to_string());
    let lt = Proc::spawn("lt_pex learner", cmd);
    // S and L know only bitrush; L reaches S only if bitrush's peer exchange told it of S.
    let saw = lt.wait_for_stdout_line(|l| l == "SAW_HIDDEN", PROCESS_TIMEOUT);
    assert!(saw.is_ok(), "{saw:?}\n{}\n{}", lt.logs(), seed.logs());
}
