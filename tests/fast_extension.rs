//! The fast extension (BEP 6) against libtorrent, both directions: the messages each side sends
//! are read off libtorrent's own peer log (tests/support/lt_fast.py), and the data must arrive
//! byte-identical.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

/// The `(direction, message)` pairs a `lt_fast.py` run logged, e.g. `("<==", "HAVE_ALL")`.
fn messages(proc: &Proc) -> BTreeSet<(String, String)> {
    proc.stdout_lines()
        .iter()
        .filter_map(|l| l.strip_prefix("MSG "))
        .filter_map(|l| l.split_once(' '))
        .map(|(dir, name)| (dir.to_string(), name.to_string()))
        .collect()
}

fn has(set: &BTreeSet<(String, String)>, dir: &str, name: &str) -> bool {
    set.contains(&(dir.to_string(), name.to_string()))
}

#[test]
fn libtorrent_downloads_from_bitrush_with_the_fast_extension() {
    let swarm = Swarm::single_file("fast-to-lt", 2 * MIB + 77, 16, 501, false);
    let seed = swarm.bitrush_seeder("payload.bin");
    let out = swarm.out_dir("lt-out");
    let mut cmd = support_script("lt_fast.py");
    cmd.arg("leech")
        .arg(&swarm.torrent)
        .arg(&out)
        .arg("--peer")
        .arg(seed.addr().to_string());
    let mut lt = Proc::spawn("lt_fast leech", cmd);
    let done = lt.wait_for_stdout_line(|l| l == "COMPLETE", PROCESS_TIMEOUT);
    assert!(done.is_ok(), "{done:?}\n{}", lt.logs());
    assert_file_eq(
        &out.join("payload.bin"),
        &swarm.data,
        "libtorrent's download",
    );
    let seen = messages(&lt);
    // Our side of the fast extension: have all instead of a bitfield, the allowed-fast set, and
    // suggestions of the pieces it lacks.
    for name in ["HAVE_ALL", "ALLOWED_FAST", "SUGGEST_PIECE"] {
        assert!(
            has(&seen, "<==", name),
            "bitrush sent no {name}: {seen:?}\n{}",
            lt.logs()
        );
    }
    assert!(!has(&seen, "<==", "BITFIELD"), "{seen:?}");
    assert!(has(&seen, "==>", "HAVE_NONE"), "{seen:?}");
    lt.wait_exit(std::time::Duration::from_secs(10));
}

#[test]
fn bitrush_downloads_from_libtorrent_with_the_fast_extension() {
    let swarm = Swarm::single_file("fast-from-lt", 2 * MIB + 5, 16, 502, false);
    let mut cmd = support_script("lt_fast.py");
    cmd.arg("seed").arg(&swarm.torrent).arg(&swarm.seed_dir);
    let lt = Proc::spawn("lt_fast seed", cmd);
    let port = lt.ready_port("libtorrent seeder");
    let link = magnet_link(&swarm.info.info_hash, None, &[], &[loopback_addr(port)]);
    let target = swarm.out_dir("out").join("payload.bin");
    let out = run_bitrush(output_args("download", &target, &link, &[]));
    assert_success(&out);
    assert_file_eq(&target, &swarm.data, "bitrush's download");
    // libtorrent reports what it exchanged through alerts it polls every 50 ms: the download
    // can be over before they are printed.
    let _ = lt.wait_for_stdout_line(|l| l == "MSG <== HAVE_NONE", Duration::from_secs(10));
    let seen = messages(&lt);
    assert!(has(&seen, "==>", "HAVE_ALL"), "{seen:?}\n{}", lt.logs());
    // bitrush, holding nothing, says so the fast way.
    assert!(has(&seen, "<==", "HAVE_NONE"), "{seen:?}\n{}", lt.logs());
}
