//! Magnet links end to end: `magnet_parse`, `magnet_handshake`, `magnet_info`,
//! `magnet_download_piece`, `magnet_download`, and magnet links given to `download` /
//! `download_piece`, against libtorrent seeders, opentracker, and scripted peers that
//! misbehave in the metadata exchange (tests/support/hostile_metadata_peer.py).
//!
//! Expected values come from libtorrent (lt_tool.py, ext_probe.py) and from the payloads the
//! tests wrote, never from bitrush itself.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// `magnet:?xt=urn:btih:<hash>&dn=..&tr=..&x.pe=..`
fn magnet(info_hash: &str, trackers: &[String], peers: &[SocketAddr]) -> String {
    magnet_link(info_hash, Some("test+payload"), trackers, peers)
}

/// [`magnet`] for the swarm's torrent with its HTTP tracker and no peers.
fn tracker_magnet(swarm: &Swarm) -> String {
    magnet(&swarm.info.info_hash, &[swarm.tracker.http_url()], &[])
}

/// libtorrent's size of the torrent's info dictionary.
fn lt_metadata_size(torrent: &Path) -> u64 {
    let mut cmd = lt_python(
        "import libtorrent as lt, sys; print(lt.torrent_info(sys.argv[1]).metadata_size())",
    );
    cmd.arg(torrent);
    let out = run_checked("metadata size", cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("metadata size")
}

/// The peer's extension handshake as read by tests/support/ext_probe.py.
fn ext_probe(addr: SocketAddr, info_hash: &str) -> serde_json::Value {
    let mut cmd = support_script("ext_probe.py");
    cmd.arg(addr.to_string()).arg(info_hash);
    let out = run_checked("ext_probe", cmd, Duration::from_secs(60));
    serde_json::from_slice(&out.stdout).expect("ext_probe JSON")
}

/// A scripted peer misbehaving in the metadata exchange.
struct Hostile {
    port: u16,
    proc: Proc,
}

impl Hostile {
    fn start(mode: &str, torrent: &Path) -> Hostile {
        let mut cmd = support_script("hostile_metadata_peer.py");
        cmd.arg(mode).arg(torrent);
        let proc = Proc::spawn(&format!("hostile peer ({mode})"), cmd);
        let port = proc.ready_port("hostile peer not ready");
        Hostile { port, proc }
    }

    fn addr(&self) -> SocketAddr {
        loopback_addr(self.port)
    }

    /// Whether bitrush completed the BitTorrent handshake with it.
    fn was_contacted(&self) -> bool {
        self.proc
            .stdout_lines()
            .iter()
            .any(|l| l.starts_with("HANDSHAKE "))
    }

    fn requests(&self) -> usize {
        self.proc
            .stdout_lines()
            .iter()
            .filter(|l| l.starts_with("REQUEST "))
            .count()
    }
}

/// A multi-file tree whose info dictionary needs several 16 KiB metadata pieces: many files
/// with long names (the payload itself stays around 1.5 MiB).
fn many_files() -> Vec<(String, usize)> {
    (0..360)
        .map(|i| {
            (
                format!(
                    "folder-with-a-rather-long-name-{:02}/a-file-with-a-long-descriptive-name-number-{i:04}.bin",
                    i % 7
                ),
                1000 + (i * 37) % 7000,
            )
        })
        .collect()
}

fn many_files_swarm(label: &str, seed: u64) -> Swarm {
    let files = many_files();
    let refs: Vec<(&str, usize)> = files.iter().map(|(p, l)| (p.as_str(), *l)).collect();
    let swarm = Swarm::tree(label, "many", &refs, 15, seed);
    let size = lt_metadata_size(&swarm.torrent);
    assert!(
        size > 2 * 16384,
        "metadata of {size} bytes should span at least three 16 KiB pieces"
    );
    swarm
}

/// The stdout of a successful run.
#[track_caller]
fn ok_stdout<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = run_bitrush(args);
    assert_success(&out);
    stdout_of(&out)
}

/// Runs `CMD -o OUT LINK EXTRA...`, which must succeed.
#[track_caller]
fn run_ok_to(cmd: &str, out: &Path, link: &str, extra: &[&str]) -> Output {
    let run = run_bitrush(output_args(cmd, out, link, extra));
    assert_success(&run);
    run
}

/// `magnet_info` on `link` prints what `info` prints for the swarm's torrent,
/// which matches libtorrent's view.
#[track_caller]
fn check_magnet_info(swarm: &Swarm, link: &str) {
    let got = ok_stdout(["magnet_info", link]);
    let want = ok_stdout([Path::new("info"), swarm.torrent.as_path()]);
    assert_eq!(got, want, "magnet_info differs from info on the torrent");
    check_info_output(&got, &swarm.info, &swarm.tracker.http_url());
}

/// The swarm's tracker lists its one seeder and no leecher any more after
/// `cmd` ran.
#[track_caller]
fn assert_no_leecher_left(swarm: &Swarm, cmd: &str) {
    assert_eq!(
        swarm.tracker.scrape(&swarm.info.info_hash),
        (1, 0),
        "tracker still lists a leecher after {cmd}"
    );
}

/// Checks `magnet_info` output against libtorrent's view of the torrent.
#[track_caller]
fn check_info_output(stdout: &str, info: &LtInfo, tracker: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&format!("Tracker URL: {tracker}").as_str())
    );
    assert!(lines.contains(&format!("Length: {}", info.total_size).as_str()));
    assert!(lines.contains(&format!("Info Hash: {}", info.info_hash).as_str()));
    assert!(lines.contains(&format!("Piece Length: {}", info.piece_length).as_str()));
    let start = lines
        .iter()
        .position(|l| *l == "Piece Hashes:")
        .expect("Piece Hashes: line");
    let hashes: Vec<String> = lines[start + 1..]
        .iter()
        .take_while(|l| **l != "Files:")
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        hashes, info.piece_hashes,
        "piece hashes differ from libtorrent's"
    );
    if info.multi_file {
        let files_at = lines.iter().position(|l| *l == "Files:").expect("Files:");
        let want: Vec<String> = info
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| format!("{} {}", f.length, f.path))
            .collect();
        let got: Vec<String> = lines[files_at + 1..]
            .iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(got, want, "files differ from libtorrent's");
    }
}

#[test]
fn magnet_parse_prints_first_tracker_and_info_hash() {
    let dir = TestDir::new("magnet-parse");
    let (torrent, _) = unannounced_torrent(&dir, 40_000, 31);
    let hash = lt_info_hash(&torrent);
    let link = magnet(
        &hash.to_ascii_uppercase(),
        &[
            "http://127.0.0.1:1/announce?x=1&y=2".to_string(),
            "udp://127.0.0.1:2/announce".to_string(),
        ],
        &[],
    );
    let out = ok_stdout(["magnet_parse", &link]);
    assert_eq!(
        out,
        format!("Tracker URL: http://127.0.0.1:1/announce?x=1&y=2\nInfo Hash: {hash}\n")
    );
    // A link that is not a magnet link: one clean error line.
    let bad = run_bitrush(["magnet_parse", "magnet:?dn=no-hash"]);
    let line = assert_one_line_error(&bad);
    assert!(line.contains("magnet"), "{line}");
}

#[test]
fn magnet_handshake_reports_libtorrents_peer_id_and_metadata_id() {
    let swarm = Swarm::single_file("magnet-handshake", 200_000, 15, 32, false);
    let seeder = swarm.lt_seeder();
    let link = tracker_magnet(&swarm);
    let out = ok_stdout(["magnet_handshake", &link]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let peer_id = lines[0].strip_prefix("Peer ID: ").expect("Peer ID line");
    assert_eq!(peer_id.len(), 40, "{out}");
    assert!(
        peer_id.starts_with("2d4c54"),
        "libtorrent ids start with -LT: {out}"
    );
    let id: u64 = lines[1]
        .strip_prefix("Peer Metadata Extension ID: ")
        .expect("extension id line")
        .parse()
        .expect("a number");
    assert!(id >= 1, "{out}");
    let probe = ext_probe(seeder.addr(), &swarm.info.info_hash);
    assert_eq!(
        probe["m"]["ut_metadata"].as_u64(),
        Some(id),
        "libtorrent advertises {probe}"
    );
    assert_no_leecher_left(&swarm, "magnet_handshake");
}

#[test]
fn magnet_info_matches_info_and_libtorrent_for_multi_piece_metadata() {
    let swarm = many_files_swarm("magnet-info", 33);
    let _seeder = swarm.lt_seeder();
    check_magnet_info(&swarm, &tracker_magnet(&swarm));
    // We announced a port nobody listens on; `stopped` took it off the tracker again.
    assert_no_leecher_left(&swarm, "magnet_info");
}

#[test]
fn magnet_download_of_a_multi_file_torrent_is_byte_identical() {
    let swarm = many_files_swarm("magnet-download-tree", 34);
    let _seeder = swarm.lt_seeder();
    let link = tracker_magnet(&swarm);
    let out_dir = swarm.out_dir("out");
    let target = out_dir.join("many");
    let out = run_ok_to("magnet_download", &target, &link, &[]);
    assert_quiet_stdout(&out);
    assert_tree_eq(&target, &swarm.tree);
}

#[test]
fn download_accepts_a_magnet_link_in_place_of_a_torrent_file() {
    let swarm = Swarm::single_file("magnet-download-file", 1_500_000, 15, 35, false);
    let _seeder = swarm.lt_seeder();
    let link = tracker_magnet(&swarm);
    let out_file = swarm.out_dir("out").join("payload.bin");
    let out = run_ok_to("download", &out_file, &link, &[]);
    assert_quiet_stdout(&out);
    assert_file_eq(&out_file, &swarm.data, "downloaded file");
}

#[test]
fn magnet_download_piece_from_an_x_pe_peer_matches_libtorrents_hash() {
    use sha1::{Digest, Sha1};
    let swarm = Swarm::single_file("magnet-piece", 1_000_000, 15, 36, false);
    // No tracker in the link: the seeder is reached through x.pe only.
    let seeder = swarm.lt_seeder_with(&LtSeedOptions {
        no_announce: true,
        ..LtSeedOptions::default()
    });
    let link = magnet(&swarm.info.info_hash, &[], &[seeder.addr()]);
    let piece_len = swarm.info.piece_length as usize;
    let out_dir = swarm.out_dir("out");
    for (cmd, index) in [("magnet_download_piece", 5usize), ("download_piece", 30)] {
        let path = out_dir.join(format!("{cmd}-{index}"));
        run_ok_to(cmd, &path, &link, &[&index.to_string()]);
        let got = std::fs::read(&path).expect("read piece");
        let end = swarm.data.len().min((index + 1) * piece_len);
        assert_bytes_eq(&got, &swarm.data[index * piece_len..end], cmd);
        let digest = to_hex(&Sha1::digest(&got));
        assert_eq!(digest, swarm.info.piece_hashes[index], "{cmd}");
    }
    // Out of range, known only once the metadata is in: a clean error.
    let count = swarm.info.num_pieces.to_string();
    let out = run_bitrush(output_args(
        "magnet_download_piece",
        &out_dir.join("none"),
        &link,
        &[&count],
    ));
    let line = assert_cli_error(&out);
    assert!(line.contains("out of range"), "{line}");
}

/// One hostile peer alone: the fetch fails with a clear error naming its fault.
fn hostile_alone(mode: &str, label: &str, expected: &str) {
    let dir = TestDir::new(label);
    let (torrent, _) = unannounced_torrent(&dir, 300_000, 37);
    let hash = lt_info_hash(&torrent);
    let hostile = Hostile::start(mode, &torrent);
    let link = magnet(&hash, &[], &[hostile.addr()]);
    let out = run_bitrush(["magnet_info", &link]);
    let line = assert_cli_error(&out);
    assert!(line.contains(expected), "expected {expected:?} in {line:?}");
    assert!(stdout_of(&out).is_empty(), "{}", dump(&out));
    assert!(hostile.was_contacted(), "{}", hostile.proc.logs());
}

#[test]
fn hostile_peer_with_the_wrong_hash_alone_is_a_clean_error() {
    hostile_alone(
        "wrong-hash",
        "magnet-hostile-hash",
        "does not match the info hash",
    );
}

#[test]
fn hostile_peer_with_an_absurd_metadata_size_alone_is_a_clean_error() {
    hostile_alone("huge-size", "magnet-hostile-size", "offers no metadata");
}

#[test]
fn hostile_peer_with_out_of_range_pieces_alone_is_a_clean_error() {
    hostile_alone(
        "bad-piece",
        "magnet-hostile-piece",
        "which we did not request",
    );
}

#[test]
fn hostile_metadata_peers_do_not_stop_an_honest_seeder() {
    let swarm = many_files_swarm("magnet-hostile-swarm", 38);
    let _seeder = swarm.lt_seeder();
    let hostiles: Vec<Hostile> = ["wrong-hash", "huge-size", "bad-piece"]
        .iter()
        .map(|mode| Hostile::start(mode, &swarm.torrent))
        .collect();
    // A peer that accepts connections and never says a word.
    let silent = SilentPeer::start();
    // The hostile peers come first (x.pe), the honest one through the tracker.
    let mut addrs: Vec<SocketAddr> = hostiles.iter().map(Hostile::addr).collect();
    addrs.push(silent.addr());
    let link = magnet(&swarm.info.info_hash, &[swarm.tracker.http_url()], &addrs);

    check_magnet_info(&swarm, &link);

    let target = swarm.out_dir("out").join("many");
    run_ok_to("magnet_download", &target, &link, &[]);
    assert_tree_eq(&target, &swarm.tree);
    for h in &hostiles {
        assert!(h.was_contacted(), "{}", h.proc.logs());
    }
    // The absurd size is refused before anything is requested.
    assert_eq!(hostiles[1].requests(), 0, "{}", hostiles[1].proc.logs());
}
