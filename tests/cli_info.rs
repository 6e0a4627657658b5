//! `bitrush info <file.torrent>`: exact output, with expected values from
//! libtorrent (never from bitrush); malformed torrents fail with one `error:`
//! line and no panic.

mod common;

use common::*;
use std::path::Path;

const ANNOUNCE: &str = "http://127.0.0.1:6969/announce";

/// The exact lines `info` must print for a torrent, built from libtorrent's
/// view of it: `Length` counts the real files (pad files left out), a hybrid
/// shows both info hashes, a v2-only torrent its v2 hash and piece layers.
fn expected_lines(announce: &str, info: &LtInfo) -> Vec<String> {
    let mut v = vec![
        format!("Tracker URL: {announce}"),
        format!("Length: {}", info.content_length()),
    ];
    if let Some(v1) = &info.info_hash_v1 {
        v.push(format!("Info Hash: {v1}"));
    }
    if let Some(v2) = &info.info_hash_v2 {
        v.push(format!("Info Hash v2: {v2}"));
    }
    v.push(format!("Piece Length: {}", info.piece_length));
    v.push("Piece Hashes:".to_string());
    if info.info_hash_v1.is_some() {
        v.extend(info.piece_hashes.iter().cloned());
    } else {
        v.extend(info.piece_hashes_v2.iter().cloned());
    }
    if info.multi_file {
        v.push("Files:".to_string());
        for f in info.real_files() {
            v.push(format!("{} {}", f.length, f.path));
        }
    }
    v
}

#[track_caller]
fn check_info(torrent: &Path, announce: &str) -> LtInfo {
    let info = lt_info(torrent);
    let out = run_bitrush([Path::new("info"), torrent]);
    assert_success(&out);
    let stdout = stdout_of(&out);
    assert!(
        stdout.ends_with('\n'),
        "stdout must end with a newline\n{}",
        dump(&out)
    );
    let got: Vec<&str> = stdout.lines().collect();
    let want = expected_lines(announce, &info);
    assert_eq!(got, want, "info output differs\n{}", dump(&out));
    info
}

#[test]
fn single_file_torrent_from_mktorrent() {
    let dir = TestDir::new("info-single");
    let src = dir.join("payload.bin");
    write_payload(&src, 100_000, 11);
    let torrent = mktorrent(&src, ANNOUNCE, 15);
    let info = check_info(&torrent, ANNOUNCE);
    assert_eq!(info.num_pieces, 4, "last piece is shorter");
    assert!(!info.multi_file);
}

#[test]
fn single_file_torrent_with_exact_multiple_of_piece_length() {
    let dir = TestDir::new("info-exact");
    let src = dir.join("exact.bin");
    write_payload(&src, 4 * 262_144, 12);
    let torrent = mktorrent(&src, ANNOUNCE, 18);
    let info = check_info(&torrent, ANNOUNCE);
    assert_eq!(info.num_pieces, 4);
}

#[test]
fn multi_file_torrent_from_mktorrent() {
    let dir = TestDir::new("info-multi");
    let root = dir.join("tree");
    write_tree(
        &root,
        &[
            ("a.bin", 70_000),
            ("empty.dat", 0),
            ("sub/b.txt", 1000),
            ("sub/deeper/c.bin", 40_007),
            ("sub/small", 10),
        ],
        13,
    );
    let torrent = mktorrent(&root, ANNOUNCE, 15);
    let info = check_info(&torrent, ANNOUNCE);
    assert!(info.multi_file);
    assert_eq!(info.files.len(), 5);
}

#[test]
fn single_file_torrent_from_libtorrent() {
    let dir = TestDir::new("info-lt");
    let src = dir.join("lt.bin");
    write_payload(&src, 50_000, 14);
    let torrent = dir.join("lt.torrent");
    lt_make_torrent(&src, &torrent, 16_384, &[ANNOUNCE]);
    let info = check_info(&torrent, ANNOUNCE);
    assert_eq!(info.piece_length, 16_384);
    assert_eq!(info.num_pieces, 4);
}

#[test]
fn hand_built_torrent_with_unknown_keys_hashes_the_raw_info_dict() {
    // Unknown keys inside info must be kept when hashing: the info hash is
    // the SHA-1 of the info dict's bytes exactly as they appear in the file.
    let data = payload(40_000, 15);
    let info = dict(&[
        ("length", Bv::Int(data.len() as i64)),
        ("name", bstr("hand.bin")),
        ("piece length", Bv::Int(16_384)),
        ("pieces", Bv::Bytes(sha1_pieces(&data, 16_384))),
        ("private", Bv::Int(1)),
        ("source", bstr("bitrush-tests")),
        (
            "x-extra",
            dict(&[
                (
                    "list",
                    Bv::List(vec![Bv::Int(-1), bstr(""), Bv::List(vec![])]),
                ),
                ("z", dict(&[])),
            ]),
        ),
    ]);
    let torrent_bytes = bencode(&dict(&[
        ("announce", bstr(ANNOUNCE)),
        ("comment", bstr("unknown top-level keys are fine too")),
        ("info", info),
        ("zzz-unknown", Bv::List(vec![Bv::Int(7)])),
    ]));
    let dir = TestDir::new("info-hand");
    let torrent = dir.join("hand.torrent");
    std::fs::write(&torrent, torrent_bytes).unwrap();
    let info = check_info(&torrent, ANNOUNCE);
    assert_eq!(info.num_pieces, 3);
}

#[test]
fn hand_built_multi_file_torrent() {
    let a = payload(20_000, 16);
    let b = payload(5, 17);
    let mut all = a.clone();
    all.extend_from_slice(&b);
    let info = dict(&[
        (
            "files",
            Bv::List(vec![
                dict(&[
                    ("length", Bv::Int(a.len() as i64)),
                    ("path", Bv::List(vec![bstr("dir one"), bstr("a.bin")])),
                ]),
                dict(&[
                    ("length", Bv::Int(b.len() as i64)),
                    ("path", Bv::List(vec![bstr("b")])),
                ]),
            ]),
        ),
        ("name", bstr("hand tree")),
        ("piece length", Bv::Int(16_384)),
        ("pieces", Bv::Bytes(sha1_pieces(&all, 16_384))),
    ]);
    let bytes = bencode(&dict(&[("announce", bstr(ANNOUNCE)), ("info", info)]));
    let dir = TestDir::new("info-hand-multi");
    let torrent = dir.join("hand multi.torrent");
    std::fs::write(&torrent, bytes).unwrap();
    let info = check_info(&torrent, ANNOUNCE);
    assert!(info.multi_file);
    assert_eq!(
        info.files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["dir one/a.bin", "b"]
    );
}

/// A folder with a file that fills pieces exactly, one that does not, an
/// empty one and a nested one: libtorrent pads all but the aligned ones.
fn padded_tree(dir: &TestDir) -> std::path::PathBuf {
    let root = dir.join("tree");
    write_tree(
        &root,
        &[
            ("a.bin", 70_000),
            ("aligned.bin", 65_536),
            ("empty.dat", 0),
            ("sub/b.txt", 1000),
            ("sub/deeper/c.bin", 40_007),
        ],
        19,
    );
    root
}

#[test]
fn hybrid_multi_file_torrent_with_pad_files_from_libtorrent() {
    let dir = TestDir::new("info-hybrid");
    let torrent = dir.join("hybrid.torrent");
    lt_make_torrent_version(&padded_tree(&dir), &torrent, 16_384, &[ANNOUNCE], "hybrid");
    let info = check_info(&torrent, ANNOUNCE);
    assert!(info.info_hash_v1.is_some() && info.info_hash_v2.is_some());
    assert!(
        info.files.iter().filter(|f| f.pad).count() >= 3,
        "libtorrent made no pad files: {:?}",
        info.files
    );
    assert!(info.content_length() < info.total_size);
}

#[test]
fn v2_only_torrents_from_libtorrent() {
    let dir = TestDir::new("info-v2");
    let torrent = dir.join("v2.torrent");
    lt_make_torrent_version(&padded_tree(&dir), &torrent, 32_768, &[ANNOUNCE], "v2");
    let info = check_info(&torrent, ANNOUNCE);
    assert!(info.info_hash_v1.is_none());
    // a.bin 3 pieces, aligned.bin 2, sub/b.txt 1, sub/deeper/c.bin 2.
    assert_eq!(info.piece_hashes_v2.len(), 8);

    let src = dir.join("single.bin");
    write_payload(&src, 100_000, 20);
    let single = dir.join("single.torrent");
    lt_make_torrent_version(&src, &single, 16_384, &[ANNOUNCE], "v2");
    let info = check_info(&single, ANNOUNCE);
    assert!(!info.multi_file);
    assert_eq!(info.piece_hashes_v2.len(), 7);
}

#[test]
fn hybrid_single_file_and_padded_v1_from_libtorrent() {
    let dir = TestDir::new("info-hybrid-single");
    let src = dir.join("one.bin");
    write_payload(&src, 50_001, 21);
    let torrent = dir.join("one.torrent");
    lt_make_torrent_version(&src, &torrent, 0, &[ANNOUNCE], "hybrid");
    check_info(&torrent, ANNOUNCE);

    let padded = dir.join("padded.torrent");
    lt_make_torrent_version(
        &padded_tree(&dir),
        &padded,
        16_384,
        &[ANNOUNCE],
        "v1-padded",
    );
    let info = check_info(&padded, ANNOUNCE);
    assert!(info.info_hash_v2.is_none() && info.files.iter().any(|f| f.pad));
}

#[test]
fn unsafe_paths_are_sanitised_like_libtorrent_and_trailing_bytes_ignored() {
    let dir = TestDir::new("info-sanitised");
    for (i, paths) in [
        &[&["ok.txt"][..], &["..", "evil.txt"]][..],
        &[&["sub", "..", "..", "evil.txt"]],
    ]
    .into_iter()
    .enumerate()
    {
        let torrent = dir.join(format!("unsafe{i}.torrent"));
        std::fs::write(&torrent, torrent_with_info(multi_file_info(paths))).unwrap();
        let info = check_info(&torrent, ANNOUNCE);
        assert!(info.files.iter().all(|f| !f.path.contains("..")));
    }
    let mut bytes = torrent_with_info(dict(&good_single_info()));
    bytes.extend_from_slice(b"\n");
    let newline = dir.join("newline.torrent");
    std::fs::write(&newline, &bytes).unwrap();
    check_info(&newline, ANNOUNCE);
    bytes.extend_from_slice(b"garbage after the dictionary");
    let garbage = dir.join("garbage.torrent");
    std::fs::write(&garbage, &bytes).unwrap();
    check_info(&garbage, ANNOUNCE);
}

fn good_single_info() -> Vec<(&'static str, Bv)> {
    let data = payload(40_000, 18);
    vec![
        ("length", Bv::Int(data.len() as i64)),
        ("name", bstr("x.bin")),
        ("piece length", Bv::Int(16_384)),
        ("pieces", Bv::Bytes(sha1_pieces(&data, 16_384))),
    ]
}

fn with(mut base: Vec<(&'static str, Bv)>, key: &'static str, value: Option<Bv>) -> Bv {
    base.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        base.push((key, v));
    }
    dict(&base)
}

fn torrent_with_info(info: Bv) -> Vec<u8> {
    bencode(&dict(&[("announce", bstr(ANNOUNCE)), ("info", info)]))
}

fn multi_file_info(paths: &[&[&str]]) -> Bv {
    let files: Vec<Bv> = paths
        .iter()
        .map(|p| {
            dict(&[
                ("length", Bv::Int(1000)),
                ("path", Bv::List(p.iter().map(|c| bstr(c)).collect())),
            ])
        })
        .collect();
    let total = 1000 * paths.len();
    dict(&[
        ("files", Bv::List(files)),
        ("name", bstr("tree")),
        ("piece length", Bv::Int(16_384)),
        ("pieces", Bv::Bytes(sha1_pieces(&payload(total, 1), 16_384))),
    ])
}

#[test]
fn malformed_torrents_fail_with_one_error_line() {
    let good = torrent_with_info(dict(&good_single_info()));
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "pieces length not a multiple of 20",
            torrent_with_info(with(
                good_single_info(),
                "pieces",
                Some(Bv::Bytes(vec![7; 39])),
            )),
        ),
        (
            "missing info",
            bencode(&dict(&[("announce", bstr(ANNOUNCE))])),
        ),
        (
            "info is not a dictionary",
            bencode(&dict(&[("announce", bstr(ANNOUNCE)), ("info", bstr("x"))])),
        ),
        (
            "missing piece length",
            torrent_with_info(with(good_single_info(), "piece length", None)),
        ),
        (
            "missing pieces",
            torrent_with_info(with(good_single_info(), "pieces", None)),
        ),
        (
            "negative length",
            torrent_with_info(with(good_single_info(), "length", Some(Bv::Int(-5)))),
        ),
        ("truncated file", good[..good.len() / 2].to_vec()),
        ("truncated by one byte", good[..good.len() - 1].to_vec()),
        ("not bencode", b"hello, I am not a torrent\n".to_vec()),
        ("empty file", Vec::new()),
        ("a bencoded list", b"li1ei2ee".to_vec()),
    ];
    // Sanity check: the unmodified torrent is fine, so failures below are
    // about the defect each case introduces.
    let dir = TestDir::new("info-bad");
    let good_path = dir.join("good.torrent");
    std::fs::write(&good_path, &good).unwrap();
    let out = run_bitrush([Path::new("info"), &good_path]);
    assert_success(&out);

    let mut failures = Vec::new();
    for (i, (what, bytes)) in cases.drain(..).enumerate() {
        let path = dir.join(format!("bad{i}.torrent"));
        std::fs::write(&path, bytes).unwrap();
        let out = run_bitrush([Path::new("info"), &path]);
        if let Err(e) = check_one_line_error(&out) {
            failures.push(format!("{what}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "malformed torrents not rejected cleanly:\n{}",
        failures.join("\n")
    );
}

#[test]
fn missing_file_fails_with_one_error_line() {
    let dir = TestDir::new("info-missing");
    let out = run_bitrush([Path::new("info"), &dir.join("does-not-exist.torrent")]);
    assert_one_line_error(&out);
}
