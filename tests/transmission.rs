//! bitrush against Transmission 3.00, both ways, in two network namespaces the tests make
//! (Transmission refuses loopback peers): Transmission with its default settings (uTP on,
//! encryption preferred) downloads from a seeding bitrush — its uTP-to-TCP fallback is
//! broken, so this needs our uTP server — and seeds to a downloading bitrush, over uTP and,
//! with uTP off, over TCP. Each transfer is checked byte for byte; the rate is logged, never
//! asserted (the benchmark's `transmission` scenario compares it with aria2 and libtorrent).

mod common;

use common::*;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Logs how fast `bytes` went in `elapsed` (for the eye, never asserted).
fn log_rate(what: &str, bytes: usize, elapsed: Duration) {
    let mib_s = bytes as f64 / MIB as f64 / elapsed.as_secs_f64();
    eprintln!("{what}: {bytes} bytes in {elapsed:.2?} ({mib_s:.1} MiB/s)");
}

#[test]
fn transmission_downloads_from_a_seeding_bitrush() {
    let swarm = NsSwarm::single_file("trx-leech", 12 * MIB + 777, 18, 501);
    let _seed = swarm.bitrush_seeder(Side::B, 1, &[]);
    let mut trx = Transmission::start(&swarm.ns, Side::A, true);
    let dir = swarm.dir.subdir("transmission");
    let started = Instant::now();
    trx.add(&swarm.torrent, &dir);
    trx.wait_complete(&swarm.info_hash, PROCESS_TIMEOUT);
    log_rate(
        "Transmission from bitrush",
        swarm.data.len(),
        started.elapsed(),
    );
    assert_file_eq(&dir.join("payload.bin"), &swarm.data, "Transmission's copy");
}

/// Transmission seeds `swarm`'s payload (uTP on or off); bitrush downloads it.
fn download_from_transmission(label: &str, utp: bool, extra: &[&str]) {
    let swarm = NsSwarm::single_file(label, 12 * MIB + 4321, 18, 502);
    let what = format!("bitrush from Transmission ({label})");
    let mut trx = Transmission::start(&swarm.ns, Side::A, utp);
    trx.add(&swarm.torrent, &swarm.seed_dir);
    trx.wait_complete(&swarm.info_hash, PROCESS_TIMEOUT);
    swarm.wait_for_seeders(1);
    let started = Instant::now();
    swarm.bitrush_download_checked(Side::B, "bitrush", extra);
    log_rate(&what, swarm.data.len(), started.elapsed());
}

#[test]
fn downloads_from_transmission_with_default_settings() {
    download_from_transmission("trx-seed-default", true, &[]);
}

#[test]
fn downloads_from_transmission_over_tcp() {
    download_from_transmission("trx-seed-tcp", false, &["--no-utp"]);
}
