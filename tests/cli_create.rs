//! `bitrush create [-o FILE] [-t URL]... [--v1|--v2|--hybrid] ... PATH`: the torrents it makes
//! are loaded by libtorrent with the info hashes bitrush prints in its magnet link, list the
//! files of the source, and libtorrent verifies the source data against them (SHA-1 for v1,
//! the merkle trees for v2).

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

const TRACKER: &str = "http://127.0.0.1:1/announce";

/// Runs `bitrush create` and returns the magnet link it printed.
#[track_caller]
fn create(args: &[&OsStr]) -> String {
    let mut all: Vec<&OsStr> = vec![OsStr::new("create")];
    all.extend_from_slice(args);
    let out = run_bitrush(all);
    assert_success(&out);
    let stdout = stdout_of(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one magnet link on stdout\n{}", dump(&out));
    assert!(lines[0].starts_with("magnet:?xt=urn:bt"), "{}", dump(&out));
    lines[0].to_string()
}

/// The `xt` hashes of a magnet link: (btih, btmh without the `1220` prefix).
fn magnet_hashes(link: &str) -> (Option<String>, Option<String>) {
    let mut v1 = None;
    let mut v2 = None;
    for param in link.trim_start_matches("magnet:?").split('&') {
        if let Some(h) = param.strip_prefix("xt=urn:btih:") {
            v1 = Some(h.to_string());
        } else if let Some(h) = param.strip_prefix("xt=urn:btmh:1220") {
            v2 = Some(h.to_string());
        }
    }
    (v1, v2)
}

/// libtorrent hashes the data in `save_dir` against `torrent`: every piece must verify.
#[track_caller]
fn lt_verifies(torrent: &Path, save_dir: &Path) {
    let mut cmd = support_script("lt_tool.py");
    cmd.arg("check").arg(torrent).arg(save_dir);
    let out = run_with_timeout("lt_tool check", cmd, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "libtorrent does not verify the data against {}: {}\n{}",
        torrent.display(),
        stdout_of(&out),
        stderr_of(&out)
    );
}

/// Makes `version` torrents of `src` and checks each against libtorrent; `want` is the source
/// tree (relative path -> bytes) as the torrent must list it, `None` for a single file.
#[track_caller]
fn check_versions(dir: &TestDir, src: &Path, want: Option<&[(&str, usize)]>) {
    for version in ["--v1", "--v2", "--hybrid"] {
        let torrent = dir.join(format!("out{version}.torrent"));
        let link = create(&[
            OsStr::new(version),
            OsStr::new("-t"),
            OsStr::new(TRACKER),
            OsStr::new("-o"),
            torrent.as_os_str(),
            src.as_os_str(),
        ]);
        let (v1, v2) = magnet_hashes(&link);
        let info = lt_info(&torrent);
        assert_eq!(info.info_hash_v1, v1, "{version}: v1 hash in {link}");
        assert_eq!(info.info_hash_v2, v2, "{version}: v2 hash in {link}");
        match version {
            "--v1" => assert!(v1.is_some() && v2.is_none(), "{link}"),
            "--v2" => assert!(v1.is_none() && v2.is_some(), "{link}"),
            _ => assert!(v1.is_some() && v2.is_some(), "{link}"),
        }
        assert_eq!(info.trackers, [TRACKER]);
        let name = src.file_name().unwrap().to_str().unwrap();
        assert!(link.contains(&format!("&dn={name}")), "{link}");
        let files: Vec<(String, u64)> = info
            .real_files()
            .map(|f| (f.path.clone(), f.length))
            .collect();
        match want {
            Some(tree) => {
                let mut want: Vec<(String, u64)> = tree
                    .iter()
                    .map(|(p, l)| (p.to_string(), *l as u64))
                    .collect();
                want.sort();
                assert_eq!(files, want, "{version}: files in path order");
                assert!(info.multi_file);
            }
            None => {
                let len = std::fs::metadata(src).unwrap().len();
                assert_eq!(files, [(name.to_string(), len)], "{version}");
                // (libtorrent pads the end of every v2 file in its own view of a v2 torrent.)
                if version != "--v2" {
                    assert_eq!(info.files.len(), 1, "{version}: a single file has no pad");
                }
            }
        }
        if version != "--v1" && want.is_some_and(|t| t.iter().filter(|f| f.1 > 0).count() > 1) {
            assert!(info.files.iter().any(|f| f.pad), "{version}: pad files");
        }
        lt_verifies(&torrent, src.parent().unwrap());
        // `info` shows the same hashes.
        let out = run_bitrush([Path::new("info"), &torrent]);
        assert_success(&out);
        let text = stdout_of(&out);
        if let Some(v1) = &v1 {
            assert!(text.contains(&format!("\nInfo Hash: {v1}\n")), "{text}");
        }
        if let Some(v2) = &v2 {
            assert!(text.contains(&format!("\nInfo Hash v2: {v2}\n")), "{text}");
        }
    }
}

#[test]
fn single_file_in_every_version() {
    let dir = TestDir::new("create-single");
    let src = dir.join("payload.bin");
    write_payload(&src, 300_007, 91);
    check_versions(&dir, &src, None);
}

#[test]
fn folder_tree_with_empty_files_in_every_version() {
    let dir = TestDir::new("create-tree");
    let files: &[(&str, usize)] = &[
        ("a.bin", 100_000),
        ("empty-first", 0),
        ("sub/b.txt", 1_000),
        ("sub/deeper/c.bin", 70_001),
        ("sub/deeper/empty", 0),
        ("sub/one-block", 16_384),
        ("z/last", 3),
    ];
    let root = dir.join("tree");
    write_tree(&root, files, 92);
    check_versions(&dir, &root, Some(files));
}

#[test]
fn zero_byte_file_and_empty_folders_are_refused_like_libtorrent() {
    let dir = TestDir::new("create-empty");
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let only_empty = dir.join("only-empty");
    std::fs::create_dir_all(only_empty.join("sub")).unwrap();
    std::fs::write(only_empty.join("sub/zero"), b"").unwrap();
    for src in [&empty, &only_empty] {
        let out_file = dir.join("x.torrent");
        let out = run_bitrush([
            OsStr::new("create"),
            OsStr::new("-o"),
            out_file.as_os_str(),
            src.as_os_str(),
        ]);
        let line = assert_one_line_error(&out);
        assert!(line.contains("no data"), "{line}");
        assert!(!out_file.exists());
        // libtorrent cannot make a torrent of no data either.
        let mut cmd = support_script("lt_tool.py");
        cmd.arg("make-torrent")
            .arg(src)
            .arg(&out_file)
            .arg("--piece-length")
            .arg("16384")
            .arg("--version")
            .arg("hybrid");
        let lt = run_with_timeout("lt_tool make-torrent", cmd, Duration::from_secs(60));
        assert!(!lt.status.success(), "libtorrent made a torrent of nothing");
    }
}

#[test]
fn auto_piece_length_and_v2_layout_match_libtorrent() {
    let dir = TestDir::new("create-auto");
    let root = dir.join("tree");
    // 3 MiB: libtorrent's table picks 32 KiB.
    write_tree(&root, &[("a", 3 << 20), ("b/c", 12_345), ("d", 0)], 93);
    let ours = dir.join("ours.torrent");
    create(&[
        OsStr::new("--v2"),
        OsStr::new("--no-date"),
        OsStr::new("-o"),
        ours.as_os_str(),
        root.as_os_str(),
    ]);
    let theirs = dir.join("theirs.torrent");
    lt_make_torrent_version(&root, &theirs, 0, &[], "v2");
    let (ours, theirs) = (lt_info(&ours), lt_info(&theirs));
    assert_eq!(ours.piece_length, 32_768);
    assert_eq!(ours.piece_length, theirs.piece_length);
    // A v2 info dictionary leaves nothing to taste: the same folder gives the same hash.
    assert_eq!(ours.info_hash_v2, theirs.info_hash_v2);
}

#[test]
fn options_end_up_in_the_torrent() {
    let dir = TestDir::new("create-options");
    let src = dir.join("f.bin");
    write_payload(&src, 40_000, 94);
    let torrent = dir.join("f.torrent");
    let link = create(&[
        OsStr::new("--v1"),
        OsStr::new("--private"),
        OsStr::new("--piece-length"),
        OsStr::new("65536"),
        OsStr::new("--comment"),
        OsStr::new("a comment"),
        OsStr::new("--source"),
        OsStr::new("SRC"),
        OsStr::new("--no-date"),
        OsStr::new("-t"),
        OsStr::new("http://127.0.0.1:1/a"),
        OsStr::new("-t"),
        OsStr::new("udp://127.0.0.1:2"),
        OsStr::new("-w"),
        OsStr::new("http://127.0.0.1:3/f.bin"),
        OsStr::new("-o"),
        torrent.as_os_str(),
        src.as_os_str(),
    ]);
    let mut cmd = lt_python(
        "import libtorrent as lt, sys, json\n\
         ti = lt.torrent_info(sys.argv[1])\n\
         print(json.dumps({'priv': ti.priv(), 'comment': ti.comment(), 'date': ti.creation_date(),\n\
           'trackers': [[t.url, t.tier] for t in ti.trackers()], 'seeds': [w['url'] for w in ti.web_seeds()],\n\
           'piece_length': ti.piece_length(), 'creator': ti.creator()}))",
    );
    cmd.arg(&torrent);
    let out = run_checked("lt torrent_info", cmd, Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["priv"], true);
    assert_eq!(v["comment"], "a comment");
    assert_eq!(v["date"], 0);
    assert_eq!(v["piece_length"], 65_536);
    assert_eq!(
        v["trackers"],
        serde_json::json!([["http://127.0.0.1:1/a", 0], ["udp://127.0.0.1:2", 1]])
    );
    assert_eq!(v["seeds"], serde_json::json!(["http://127.0.0.1:3/f.bin"]));
    assert!(v["creator"].as_str().unwrap().starts_with("bitrush "));
    assert!(link.contains("&tr=http%3A%2F%2F127.0.0.1%3A1%2Fa&tr=udp%3A%2F%2F127.0.0.1%3A2"));
    // `source` is inside the info dictionary: the hash differs from the same torrent without.
    let plain = dir.join("plain.torrent");
    let plain_link = create(&[
        OsStr::new("--v1"),
        OsStr::new("--private"),
        OsStr::new("--piece-length"),
        OsStr::new("65536"),
        OsStr::new("-o"),
        plain.as_os_str(),
        src.as_os_str(),
    ]);
    assert_ne!(magnet_hashes(&link).0, magnet_hashes(&plain_link).0);
    // Bad piece lengths are one clean error.
    for bad in ["1000", "abc", "24576"] {
        let out = run_bitrush([
            OsStr::new("create"),
            OsStr::new("--piece-length"),
            OsStr::new(bad),
            OsStr::new("-o"),
            plain.as_os_str(),
            src.as_os_str(),
        ]);
        assert!(!out.status.success(), "--piece-length {bad} accepted");
    }
}
