//! bitrush against rtorrent 0.9.8, both ways, byte for byte: rtorrent seeds to a downloading
//! bitrush on loopback and downloads from a seeding bitrush across a network namespace pair
//! (it keeps one peer per address: see `common::rtorrent`), with rtorrent's default
//! encryption policy (plaintext only: bitrush's preferred MSE falls back to plaintext) and
//! with MSE required on both ends. The rate is logged, never asserted (the benchmark's
//! `rtorrent` scenario compares it with aria2 and libtorrent).

mod common;

use common::*;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

/// Logs how fast `bytes` went in `elapsed` (for the eye, never asserted).
fn log_rate(what: &str, bytes: usize, elapsed: Duration) {
    let mib_s = bytes as f64 / MIB as f64 / elapsed.as_secs_f64();
    eprintln!("{what}: {bytes} bytes in {elapsed:.2?} ({mib_s:.1} MiB/s)");
}

/// rtorrent (with `encryption`) seeds a fresh payload; bitrush (with `extra`) downloads it.
fn download_from_rtorrent(label: &str, seed: u64, encryption: RtEncryption, extra: &[&str]) {
    let swarm = Swarm::single_file(label, 9 * MIB + 1234, 18, seed, false);
    let mut rt = RTorrent::start(
        &swarm.torrent,
        &swarm.seed_dir,
        &swarm.info.info_hash,
        encryption,
    );
    rt.wait_complete(PROCESS_TIMEOUT);
    swarm.tracker.wait_for_seeders(&swarm.info.info_hash, 1);
    let out_path = swarm.out_dir("bitrush").join("payload.bin");
    let started = Instant::now();
    let out = run_download(&swarm.torrent, &out_path, extra);
    if !out.status.success() {
        eprintln!("{}", rt.logs());
    }
    assert_success(&out);
    log_rate(
        &format!("bitrush from rtorrent ({label})"),
        swarm.data.len(),
        started.elapsed(),
    );
    assert_file_eq(&out_path, &swarm.data, "bitrush's copy");
}

/// bitrush (with `extra`) seeds a fresh payload on one side of a namespace pair; rtorrent
/// (with `encryption`) downloads it on the other (on loopback it would keep either the seeder or
/// its own tracker entry: one peer per address).
fn rtorrent_downloads(label: &str, seed: u64, encryption: RtEncryption, extra: &[&str]) {
    let swarm = NsSwarm::single_file(label, 8 * MIB + 4321, 18, seed);
    let seed = swarm.bitrush_seeder(Side::B, 1, extra);
    let dir = swarm.dir.subdir("rtorrent");
    let started = Instant::now();
    let mut rt = RTorrent::start_in(
        &swarm.ns,
        Side::A,
        &swarm.torrent,
        &dir,
        &swarm.info_hash,
        encryption,
    );
    if let Err(e) = rt.try_wait_complete(PROCESS_TIMEOUT) {
        panic!("{e}\n{}", seed.logs());
    }
    log_rate(
        &format!("rtorrent from bitrush ({label})"),
        swarm.data.len(),
        started.elapsed(),
    );
    assert_file_eq(&dir.join("payload.bin"), &swarm.data, "rtorrent's copy");
}

#[test]
fn downloads_from_a_seeding_rtorrent() {
    download_from_rtorrent("rt-seed", 701, RtEncryption::Off, &[]);
}

#[test]
fn downloads_from_rtorrent_with_encryption_required() {
    download_from_rtorrent(
        "rt-seed-mse",
        702,
        RtEncryption::Required,
        &["--encryption", "require"],
    );
}

#[test]
fn rtorrent_downloads_from_a_seeding_bitrush() {
    rtorrent_downloads("rt-leech", 703, RtEncryption::Off, &[]);
}

#[test]
fn rtorrent_downloads_from_bitrush_with_encryption_required() {
    rtorrent_downloads(
        "rt-leech-mse",
        704,
        RtEncryption::Required,
        &["--encryption", "require"],
    );
}
