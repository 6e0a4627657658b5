//! Trackerless swarms on a local libtorrent DHT (tests/support/lt_dht_swarm.py: libtorrent
//! sessions with the DHT on 127.0.0.1, bootstrapped from each other): bitrush finds seeders and
//! is found by leechers through the DHT alone, keeps its state between runs, and keeps private
//! torrents off the DHT.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// A libtorrent DHT of `n` nodes, the first `seeders` of them seeding the swarm's torrent.
fn lt_dht(swarm: &Swarm, n: usize, seeders: usize) -> (Proc, Vec<u16>) {
    let mut cmd = support_script("lt_dht_swarm.py");
    cmd.arg(n.to_string());
    if seeders > 0 {
        cmd.arg("--seed")
            .arg(&swarm.torrent)
            .arg(&swarm.seed_dir)
            .arg("--seeders")
            .arg(seeders.to_string());
    }
    let proc = Proc::spawn("lt_dht_swarm", cmd);
    let line = proc
        .wait_for_stdout_line(
            |l| l.starts_with("READY ") || l.starts_with("ERROR"),
            PROCESS_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("libtorrent DHT: {e}\n{}", proc.logs()));
    let ports: Vec<u16> = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{line}\n{}", proc.logs()))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), n);
    (proc, ports)
}

/// bitrush with the DHT on, joining through `bootstrap`, keeping its state in `state_dir`.
fn bitrush_dht(bootstrap: u16, state_dir: &Path) -> Command {
    let mut cmd = bitrush();
    cmd.env_remove("BITRUSH_NO_DHT")
        .env("BITRUSH_DHT_BOOTSTRAP", format!("127.0.0.1:{bootstrap}"))
        .env("BITRUSH_STATE_DIR", state_dir);
    cmd
}

fn trackerless_magnet(info_hash: &str) -> String {
    format!("magnet:?xt=urn:btih:{info_hash}")
}

#[test]
fn trackerless_magnet_downloads_through_the_dht_alone() {
    let swarm = Swarm::single_file("dht-magnet", 3 * MIB + 11, 16, 601, false);
    let (_dht, ports) = lt_dht(&swarm, 5, 2);
    let state = swarm.out_dir("state");
    let target = swarm.out_dir("out").join("payload.bin");
    let mut cmd = bitrush_dht(ports[3], &state);
    cmd.arg("download")
        .arg("-o")
        .arg(&target)
        .arg(trackerless_magnet(&swarm.info.info_hash));
    let out = run_with_timeout("bitrush download (DHT)", cmd, PROCESS_TIMEOUT);
    assert_success(&out);
    assert_file_eq(&target, &swarm.data, "download found through the DHT");
    // The routing table was kept for the next run.
    let saved = std::fs::metadata(state.join("dht.dat")).map(|m| m.len());
    assert!(
        saved.as_ref().is_ok_and(|n| *n > 20),
        "no DHT state saved: {saved:?}\n{}",
        dump(&out)
    );
}

#[test]
fn libtorrent_finds_a_seeding_bitrush_through_the_dht() {
    let swarm = Swarm::single_file("dht-seed", 2 * MIB + 3, 16, 602, false);
    let (mut dht, ports) = lt_dht(&swarm, 5, 0);
    let state = swarm.out_dir("state");
    let port = free_port();
    let mut cmd = bitrush_dht(ports[0], &state);
    cmd.arg("seed")
        .arg(&swarm.torrent)
        .arg(swarm.seed_dir.join("payload.bin"))
        .arg("--port")
        .arg(port.to_string());
    let seed = Proc::spawn("bitrush seed (DHT)", cmd);
    let out = swarm.out_dir("lt-out");
    dht.send_line(&format!(
        "leech 4 {} {}",
        trackerless_magnet(&swarm.info.info_hash),
        out.display()
    ));
    let done = dht.wait_for_stdout_line(|l| l == "COMPLETE 4", PROCESS_TIMEOUT);
    assert!(done.is_ok(), "{done:?}\n{}\n{}", dht.logs(), seed.logs());
    assert_file_eq(
        &out.join("payload.bin"),
        &swarm.data,
        "libtorrent's download",
    );
}

/// Whether some libtorrent node's lookup of `info_hash` returned 127.0.0.1:`port`, asking
/// every second until `deadline`.
fn announced(dht: &mut Proc, info_hash: &str, port: u16, deadline: Instant) -> bool {
    let want = format!("127.0.0.1:{port}");
    while Instant::now() < deadline {
        dht.send_line(&format!("get_peers 2 {info_hash}"));
        std::thread::sleep(Duration::from_secs(1));
        let found = dht.stdout_lines().iter().any(|l| {
            l.starts_with(&format!("PEERS {info_hash}")) && l.split_whitespace().any(|p| p == want)
        });
        if found {
            return true;
        }
    }
    false
}

#[test]
fn a_private_torrent_stays_off_the_dht() {
    let dir = TestDir::new("dht-private");
    let src = dir.subdir("seed").join("payload.bin");
    write_payload(&src, 300_000, 603);
    // Two torrents of the same data, one private: only the private flag differs.
    let public = dir.join("public.torrent");
    let private = dir.join("private.torrent");
    for (path, extra) in [(&public, None), (&private, Some("-p"))] {
        let mut cmd = Command::new(require_tool("mktorrent"));
        cmd.args(["-a", UNUSED_ANNOUNCE, "-l", "15", "-o"])
            .arg(path);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        cmd.arg(&src);
        run_checked("mktorrent", cmd, Duration::from_secs(60));
    }
    let (public_hash, private_hash) = (lt_info_hash(&public), lt_info_hash(&private));
    assert_ne!(public_hash, private_hash);
    let swarm_dir = dir.subdir("lt");
    let mut cmd = support_script("lt_dht_swarm.py");
    cmd.arg("3");
    let mut dht = Proc::spawn("lt_dht_swarm", cmd);
    let line = dht
        .wait_for_stdout_line(|l| l.starts_with("READY "), PROCESS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", dht.logs()));
    let bootstrap: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut seeds = Vec::new();
    let mut ports = Vec::new();
    for torrent in [&public, &private] {
        let port = free_port();
        let mut cmd = bitrush_dht(bootstrap, &swarm_dir);
        cmd.arg("seed")
            .arg(torrent)
            .arg(&src)
            .arg("--port")
            .arg(port.to_string());
        seeds.push(Proc::spawn("bitrush seed", cmd));
        ports.push(port);
    }
    // The public twin shows that an announce would be seen within this time.
    let deadline = Instant::now() + Duration::from_secs(30);
    assert!(
        announced(&mut dht, &public_hash, ports[0], deadline),
        "the public torrent never appeared on the DHT\n{}\n{}",
        dht.logs(),
        seeds[0].logs()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(
        !announced(&mut dht, &private_hash, ports[1], deadline),
        "the private torrent was announced on the DHT\n{}",
        dht.logs()
    );
}
