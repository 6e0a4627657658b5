//! `bitrush download_piece -o OUT <torrent> <index>`: OUT holds exactly that
//! piece's bytes.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;

const PIECE: usize = 256 * 1024;

fn download_piece(torrent: &Path, index: &str, out_path: &Path) -> std::process::Output {
    run_bitrush([
        OsStr::new("download_piece"),
        OsStr::new("-o"),
        out_path.as_os_str(),
        torrent.as_os_str(),
        OsStr::new(index),
    ])
}

#[track_caller]
fn check_piece(torrent: &Path, index: usize, piece_len: usize, data: &[u8], out_path: &Path) {
    let out = download_piece(torrent, &index.to_string(), out_path);
    assert_success(&out);
    assert_quiet_stdout(&out);
    let got = std::fs::read(out_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", out_path.display(), dump(&out)));
    let start = index * piece_len;
    let end = (start + piece_len).min(data.len());
    assert_bytes_eq(&got, &data[start..end], &format!("piece {index}"));
    assert_no_part_file(out_path);
}

#[track_caller]
fn assert_no_part_file(out_path: &Path) {
    let mut part = out_path.as_os_str().to_os_string();
    part.push(".bitrush-part");
    assert!(
        !Path::new(&part).exists(),
        "{} left behind",
        Path::new(&part).display()
    );
}

#[test]
fn first_middle_and_last_piece_from_libtorrent() {
    // 13 pieces; the last one is 1234 bytes.
    let swarm = Swarm::single_file("piece-lt", 12 * PIECE + 1234, 18, 41, false);
    assert_eq!(swarm.info.num_pieces, 13);
    let _seeder = swarm.lt_seeder();
    let out_dir = swarm.out_dir("out");
    for index in [0, 6, 12] {
        let out_path = out_dir.join(format!("piece-{index}"));
        check_piece(&swarm.torrent, index, PIECE, &swarm.data, &out_path);
    }
    assert_eq!(
        std::fs::metadata(out_dir.join("piece-12")).unwrap().len(),
        1234
    );
}

#[test]
fn piece_from_aria2() {
    let swarm = Swarm::single_file("piece-aria2", 3 * PIECE + 99, 18, 42, false);
    let _seeder = swarm.aria2_seeder(1);
    let out_path = swarm.out_dir("out").join("piece");
    check_piece(&swarm.torrent, 1, PIECE, &swarm.data, &out_path);
}

#[test]
fn piece_spanning_files_of_a_multi_file_torrent() {
    // 32 KiB pieces; piece 1 covers the end of a.bin, all of b.txt and the
    // start of c.bin.
    let files = [("a.bin", 40_000), ("b.txt", 1_000), ("c.bin", 60_000)];
    let swarm = Swarm::tree("piece-tree", "tree", &files, 15, 43);
    let _seeder = swarm.lt_seeder();
    let mut all = Vec::new();
    for (name, _) in files {
        all.extend_from_slice(&swarm.tree[name]);
    }
    let out_dir = swarm.out_dir("out");
    for index in [0, 1, 3] {
        let out_path = out_dir.join(format!("piece-{index}"));
        check_piece(&swarm.torrent, index, 32 * 1024, &all, &out_path);
    }
}

#[test]
fn bad_piece_index_is_an_error() {
    let swarm = Swarm::single_file("piece-range", 3 * PIECE + 5, 18, 44, false);
    assert_eq!(swarm.info.num_pieces, 4);
    let _seeder = swarm.lt_seeder();
    let out_dir = swarm.out_dir("out");
    for index in ["4", "1000000", "-1", "abc", "18446744073709551617"] {
        let out = download_piece(&swarm.torrent, index, &out_dir.join("piece"));
        if let Err(e) = check_cli_error(&out) {
            panic!("piece index {index:?} not rejected cleanly: {e}");
        }
    }
}

#[test]
fn failed_download_keeps_an_existing_output_and_leaves_no_part_file() {
    let dir = TestDir::new("piece-failed");
    let src = dir.join("payload.bin");
    write_payload(&src, 3 * PIECE, 45);
    // Nobody listens at the tracker's address: the download fails.
    let torrent = mktorrent(&src, &format!("http://{}/announce", refused_addr()), 18);
    let out_path = dir.join("piece");
    std::fs::write(&out_path, b"earlier data").unwrap();
    let out = download_piece(&torrent, "1", &out_path);
    if let Err(e) = check_cli_error(&out) {
        panic!("download_piece without a tracker: {e}");
    }
    assert_eq!(std::fs::read(&out_path).unwrap(), b"earlier data");
    assert_no_part_file(&out_path);
}
