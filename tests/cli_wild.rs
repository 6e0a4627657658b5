//! Torrents as they are found in the wild: BEP 47 pad files and attributes, `.utf-8` name
//! variants, names that are not UTF-8, unsafe or clashing paths, BitTorrent v2 and hybrid
//! metadata, bytes after the torrent. Each is loaded by `bitrush info` and by libtorrent and
//! must give the same info hashes, piece hashes and files (the same count, sizes and order;
//! the same names except where bitrush deliberately sanitises harder, which the test spells
//! out). Downloads from libtorrent seeders then check what lands on disk: never a pad file,
//! never a path outside the output, executables and inside-only symlinks once complete.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const ANNOUNCE: &str = "http://127.0.0.1:1/announce";

/// What `bitrush info` printed, split into its parts.
#[derive(Debug, Default)]
struct Shown {
    tracker: String,
    length: u64,
    info_hash: Option<String>,
    info_hash_v2: Option<String>,
    piece_length: u64,
    piece_hashes: Vec<String>,
    /// (length, path) of each listed file.
    files: Vec<(u64, String)>,
}

fn bitrush_info(torrent: &Path) -> Shown {
    let out = run_bitrush([Path::new("info"), torrent]);
    assert_success(&out);
    let text = stdout_of(&out);
    let mut shown = Shown::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Tracker URL: ") {
            shown.tracker = v.to_string();
        } else if let Some(v) = line.strip_prefix("Length: ") {
            shown.length = v.parse().expect("length");
        } else if let Some(v) = line.strip_prefix("Info Hash: ") {
            shown.info_hash = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("Info Hash v2: ") {
            shown.info_hash_v2 = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("Piece Length: ") {
            shown.piece_length = v.parse().expect("piece length");
        } else if line == "Piece Hashes:" || line == "Files:" {
            section = if line == "Files:" { "files" } else { "hashes" };
        } else if section == "hashes" {
            shown.piece_hashes.push(line.to_string());
        } else if section == "files" {
            let (len, path) = line.split_once(' ').expect("<length> <path>");
            shown
                .files
                .push((len.parse().expect("file length"), path.to_string()));
        } else {
            panic!("unexpected line {line:?} in\n{text}");
        }
    }
    shown
}

/// Loads `torrent` with both and checks they agree; `paths` are the file paths bitrush must
/// show when they differ from libtorrent's (`None`: libtorrent's). Returns both views.
#[track_caller]
fn agree(torrent: &Path, paths: Option<&[&str]>) -> (Shown, LtInfo) {
    let lt = lt_info(torrent);
    let ours = bitrush_info(torrent);
    assert_eq!(ours.info_hash, lt.info_hash_v1, "v1 info hash");
    assert_eq!(ours.info_hash_v2, lt.info_hash_v2, "v2 info hash");
    assert_eq!(ours.piece_length, lt.piece_length);
    let want_hashes = if lt.info_hash_v1.is_some() {
        &lt.piece_hashes
    } else {
        &lt.piece_hashes_v2
    };
    assert_eq!(&ours.piece_hashes, want_hashes, "piece hashes");
    assert_eq!(ours.length, lt.content_length(), "Length counts real files");
    let lt_files: Vec<(u64, String)> = lt
        .real_files()
        .map(|f| (f.length, f.path.clone()))
        .collect();
    if lt.multi_file {
        let sizes: Vec<u64> = ours.files.iter().map(|f| f.0).collect();
        let lt_sizes: Vec<u64> = lt_files.iter().map(|f| f.0).collect();
        assert_eq!(sizes, lt_sizes, "file sizes in order (pad files left out)");
        let got: Vec<&str> = ours.files.iter().map(|f| f.1.as_str()).collect();
        match paths {
            Some(want) => assert_eq!(got, want, "bitrush's paths"),
            None => {
                let lt_paths: Vec<&str> = lt_files.iter().map(|f| f.1.as_str()).collect();
                assert_eq!(got, lt_paths, "paths as libtorrent reads them");
            }
        }
    } else {
        assert!(ours.files.is_empty());
    }
    (ours, lt)
}

fn file(length: i64, path: &[&[u8]]) -> Bv {
    dict(&[
        ("length", Bv::Int(length)),
        (
            "path",
            Bv::List(path.iter().map(|c| Bv::Bytes(c.to_vec())).collect()),
        ),
    ])
}

/// `base` with more keys.
fn with(base: Bv, extra: &[(&str, Bv)]) -> Bv {
    let Bv::Dict(mut entries) = base else {
        panic!("not a dict")
    };
    for (k, v) in extra {
        entries.retain(|(key, _)| key != k.as_bytes());
        entries.push((k.as_bytes().to_vec(), v.clone()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Bv::Dict(entries)
}

/// A multi-file v1 torrent of `files` with hashes over `data` (or zeros when not given).
fn v1_torrent(files: Vec<Bv>, announce: &str, data: Option<&[u8]>) -> Vec<u8> {
    let total: i64 = files
        .iter()
        .map(|f| match f {
            Bv::Dict(d) => d
                .iter()
                .find(|(k, _)| k == b"length")
                .map_or(0, |(_, v)| match v {
                    Bv::Int(n) => *n,
                    _ => 0,
                }),
            _ => 0,
        })
        .sum();
    let pieces = match data {
        Some(data) => sha1_pieces(data, 16_384),
        None => vec![0; 20 * (total as usize).div_ceil(16_384)],
    };
    bencode(&dict(&[
        ("announce", bstr(announce)),
        (
            "info",
            dict(&[
                ("files", Bv::List(files)),
                ("name", bstr("root")),
                ("piece length", Bv::Int(16_384)),
                ("pieces", Bv::Bytes(pieces)),
            ]),
        ),
    ]))
}

fn write(dir: &TestDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn utf8_variants_win_and_legacy_names_stay_distinct() {
    let dir = TestDir::new("wild-utf8");
    let files = vec![
        with(
            file(3, &[b"\xe9t\xe9", b"old"]),
            &[("path.utf-8", Bv::List(vec![bstr("été"), bstr("nouveau")]))],
        ),
        file(4, &[b"plain \xe2\x9c\x93"]),
    ];
    let t = v1_torrent(files, ANNOUNCE, None);
    agree(&write(&dir, "utf8.torrent", &t), None);

    // Names in a legacy encoding: libtorrent turns the bad bytes into `_` and then tells the
    // clashes apart with suffixes; bitrush reads them as Windows-1252, which keeps them apart.
    let files = vec![
        file(1, &[b"caf\xe9"]),
        file(2, &[b"caf\x82"]),
        file(3, &[b"caf\xc3"]),
    ];
    let t = v1_torrent(files, ANNOUNCE, None);
    let (ours, _) = agree(
        &write(&dir, "legacy.torrent", &t),
        Some(&["café", "caf\u{201a}", "caf\u{c3}"]),
    );
    assert_eq!(ours.files.len(), 3);
}

#[test]
fn unsafe_paths_are_sanitised_and_clashes_renamed() {
    let dir = TestDir::new("wild-unsafe");
    let files = vec![
        file(1, &[b"..", b"..", b"x"]),
        file(2, &[b"a", b".", b"", b"b"]),
        file(3, &[b"/abs"]),
        file(4, &[b"a\\b"]),
        file(5, &[b"ctl\x01"]),
        file(6, &[b"C:", b"d2"]),
        file(7, &[b"con.txt"]),
        file(8, &[b"a.txt"]),
        file(9, &[b"A.TXT"]),
        file(10, &[b"a.txt"]),
        file(11, &[b"d"]),
        file(12, &[b"d", b"x"]),
    ];
    let t = v1_torrent(files, ANNOUNCE, None);
    // libtorrent (Linux build) keeps `C:` and `con.txt`, turns the empty component into `_`
    // and drops the backslash; bitrush strips the drive, suffixes the device name, drops
    // the empty component and replaces the separator.
    agree(
        &write(&dir, "unsafe.torrent", &t),
        Some(&[
            "x", "a/b", "abs", "a_b", "ctl_", "d2", "con_.txt", "a.txt", "A.1.TXT", "a.2.txt",
            "d.1", "d/x",
        ]),
    );
    // Clashes alone are renamed exactly as libtorrent renames them.
    let files = vec![
        file(1, &[b"a.txt"]),
        file(2, &[b"A.TXT"]),
        file(3, &[b"a.txt"]),
        file(4, &[b"d"]),
        file(5, &[b"d", b"x"]),
        file(6, &[b"..", b"d", b"x"]),
    ];
    agree(
        &write(&dir, "clash.torrent", &v1_torrent(files, ANNOUNCE, None)),
        None,
    );
}

#[test]
fn pad_files_attributes_and_symlinks() {
    let dir = TestDir::new("wild-attrs");
    let files = vec![
        file(1000, &[b"x"]),
        with(
            file(15_384, &[b".pad", b"15384"]),
            &[("attr", bstr("p"))],
        ),
        with(file(100, &[b"tool"]), &[("attr", bstr("x"))]),
        // BitComet's pad files predate the attribute: known by name.
        file(16_284, &[b"_____padding_file_0_if you see this file, please update to BitComet 0.85 or above____"]),
        with(file(5, &[b"hidden"]), &[("attr", bstr("h"))]),
        with(
            file(0, &[b"link"]),
            &[
                ("attr", bstr("l")),
                ("symlink path", Bv::List(vec![bstr("tool")])),
            ],
        ),
        with(
            file(0, &[b"escape"]),
            &[
                ("attr", bstr("l")),
                (
                    "symlink path",
                    Bv::List(vec![bstr(".."), bstr(".."), bstr("etc"), bstr("passwd")]),
                ),
            ],
        ),
    ];
    let t = v1_torrent(files, ANNOUNCE, None);
    let (ours, lt) = agree(&write(&dir, "attrs.torrent", &t), None);
    assert_eq!(ours.length, 1105);
    assert_eq!(lt.files.iter().filter(|f| f.pad).count(), 2);
    assert!(lt.files.iter().any(|f| f.executable));
    assert!(!ours.files.iter().any(|f| f.1.contains("pad")));
}

#[test]
fn trailing_bytes_and_tracker_whitespace() {
    let dir = TestDir::new("wild-trailing");
    let mut t = v1_torrent(
        vec![file(10, &[b"f"])],
        "  http://127.0.0.1:1/announce \r\n",
        None,
    );
    t.extend_from_slice(b"\n");
    let (ours, _) = agree(&write(&dir, "newline.torrent", &t), None);
    assert_eq!(ours.tracker, ANNOUNCE);
    t.extend_from_slice(b"d3:fooe and more");
    agree(&write(&dir, "garbage.torrent", &t), None);
}

#[test]
fn v2_and_hybrid_torrents_from_libtorrent() {
    let dir = TestDir::new("wild-v2");
    let root = dir.join("tree");
    write_tree(
        &root,
        &[
            ("big.bin", 200_001),
            ("empty", 0),
            ("one-block", 16_384),
            ("sub/small", 3),
            ("sub/two-pieces", 65_537),
        ],
        71,
    );
    for (version, piece_length) in [
        ("hybrid", 0),
        ("hybrid", 65_536),
        ("v2", 32_768),
        ("v1-padded", 16_384),
    ] {
        let t = dir.join(format!("{version}-{piece_length}.torrent"));
        lt_make_torrent_version(&root, &t, piece_length, &[ANNOUNCE], version);
        let (ours, lt) = agree(&t, None);
        assert_eq!(ours.files.len(), 5, "{version}");
        assert!(lt.files.iter().any(|f| f.pad), "{version}: no pad file");
    }
    let single = dir.join("single.bin");
    write_payload(&single, 123_457, 72);
    for version in ["hybrid", "v2"] {
        let t = dir.join(format!("single-{version}.torrent"));
        lt_make_torrent_version(&single, &t, 16_384, &[ANNOUNCE], version);
        agree(&t, None);
    }
    // Downloading v2-only and hybrid torrents is tested against libtorrent in tests/v2.rs.
}

/// A v2 file-tree leaf of `length` bytes (a made-up root: nothing is downloaded).
fn leaf(length: i64) -> Bv {
    let mut props = vec![("length", Bv::Int(length))];
    if length > 0 {
        props.push(("pieces root", Bv::Bytes(vec![length as u8; 32])));
    }
    dict(&[("", dict(&props))])
}

#[test]
fn v2_file_trees_with_unsafe_names() {
    let dir = TestDir::new("wild-v2-names");
    let tree = dict(&[
        ("..", dict(&[("..", dict(&[("etc", leaf(1))]))])),
        ("CON", leaf(2)),
        ("a/b", leaf(3)),
        ("a_b", leaf(4)),
        ("ok", dict(&[("é", leaf(5))])),
    ]);
    let t = bencode(&dict(&[
        ("announce", bstr(ANNOUNCE)),
        (
            "info",
            dict(&[
                ("file tree", tree),
                ("meta version", Bv::Int(2)),
                ("name", bstr("v2 names")),
                ("piece length", Bv::Int(16_384)),
            ]),
        ),
    ]));
    // libtorrent keeps `CON` and drops the slash (`ab`); bitrush suffixes `CON` and replaces
    // the slash, so `a/b` (first in tree order) becomes `a_b` and the real `a_b` is renamed.
    let (ours, _) = agree(
        &write(&dir, "v2names.torrent", &t),
        Some(&["etc", "CON_", "a_b", "a_b.1", "ok/é"]),
    );
    assert_eq!(ours.length, 15);
}

#[test]
fn magnet_links_of_v2_and_hybrid_torrents() {
    let dir = TestDir::new("wild-magnet");
    let root = dir.join("t");
    write_tree(&root, &[("a", 40_000), ("b/c", 1)], 73);
    for version in ["hybrid", "v2"] {
        let torrent = dir.join(format!("{version}.torrent"));
        lt_make_torrent_version(&root, &torrent, 16_384, &[ANNOUNCE], version);
        let info = lt_info(&torrent);
        // libtorrent's own magnet link for the torrent (btih and btmh for a hybrid).
        let mut cmd = lt_python(
            "import libtorrent as lt, sys; print(lt.make_magnet_uri(lt.torrent_info(sys.argv[1])))",
        );
        cmd.arg(&torrent);
        let link = String::from_utf8(
            run_checked("make_magnet_uri", cmd, std::time::Duration::from_secs(60)).stdout,
        )
        .unwrap();
        let out = run_bitrush(["magnet_parse", link.trim()]);
        assert_success(&out);
        let mut want = format!("Tracker URL: {ANNOUNCE}\n");
        if let Some(v1) = &info.info_hash_v1 {
            want.push_str(&format!("Info Hash: {v1}\n"));
        }
        want.push_str(&format!(
            "Info Hash v2: {}\n",
            info.info_hash_v2.as_deref().unwrap()
        ));
        assert_eq!(stdout_of(&out), want, "{link}");
    }
}

// ---------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------

fn download(torrent: &Path, out_path: &Path) -> std::process::Output {
    run_bitrush([
        OsStr::new("download"),
        OsStr::new("-o"),
        out_path.as_os_str(),
        torrent.as_os_str(),
    ])
}

/// Every path under `root` (folders, files and links), relative, sorted.
fn entries(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn hybrid_with_pad_files_from_libtorrent_defaults() {
    let dir = TestDir::new("wild-dl-hybrid");
    let seed_dir = dir.subdir("seed");
    let root = seed_dir.join("tree");
    let tree = write_tree(
        &root,
        &[
            ("a.bin", 1_000_001),
            ("bin/run.sh", 70_000),
            ("empty", 0),
            ("sub/b.txt", 1_000),
            ("sub/deeper/c.bin", 1_300_007),
            ("z.bin", 262_144),
        ],
        74,
    );
    std::fs::set_permissions(
        root.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // libtorrent's defaults: a hybrid with pad files and its own piece length.
    let placeholder = dir.join("placeholder.torrent");
    lt_make_torrent_version(&root, &placeholder, 0, &[ANNOUNCE], "hybrid");
    let placeholder = lt_info(&placeholder);
    let v1 = placeholder.info_hash_v1.clone().expect("a v1 hash");
    // libtorrent announces both hashes of a hybrid (the v2 one truncated); bitrush the v1 one.
    let tracker = Tracker::start(&[&v1, &placeholder.info_hash]);
    let torrent = dir.join("tree.torrent");
    lt_make_torrent_version(&root, &torrent, 0, &[&tracker.http_url()], "hybrid");
    let info = lt_info(&torrent);
    assert_eq!(info.info_hash_v1.as_deref(), Some(v1.as_str()));
    assert!(info.info_hash_v2.is_some());
    assert!(
        info.files.iter().filter(|f| f.pad).count() >= 4,
        "{:?}",
        info.files
    );
    assert!(info.files.iter().any(|f| f.executable));
    let _seeder = LtSeeder::start(&torrent, &seed_dir);

    let out_dir = dir.subdir("out");
    let out_path = out_dir.join("tree-out");
    let out = download(&torrent, &out_path);
    assert_success(&out);
    assert_quiet_stdout(&out);
    assert_tree_eq(&out_path, &tree);
    // Nothing else: no pad file, no `.pad` folder, nothing beside the output.
    assert!(!out_path.join(".pad").exists());
    assert_eq!(
        entries(&out_path),
        [
            "a.bin",
            "bin",
            "bin/run.sh",
            "empty",
            "sub",
            "sub/b.txt",
            "sub/deeper",
            "sub/deeper/c.bin",
            "z.bin"
        ]
    );
    let beside: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["tree-out"]);
    let mode = std::fs::metadata(out_path.join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o100, 0, "attr x: run.sh is executable ({mode:o})");
    let mode = std::fs::metadata(out_path.join("a.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "a.bin is not executable ({mode:o})");
}

#[test]
fn odd_names_symlinks_and_pads_land_inside_the_output() {
    let dir = TestDir::new("wild-dl-odd");
    // The payload in torrent order; pad bytes are zeros.
    /// Path components, length, `attr`.
    type Part<'a> = (&'a [&'a [u8]], usize, Option<&'a str>);
    let parts: Vec<Part> = vec![
        (&[b"..", b"..", b"evil.txt"], 1_000, None),
        (&[b".pad", b"15384"], 15_384, Some("p")),
        (&[b"sub", b"CON"], 2_000, None),
        (&[b"a.txt"], 300, None),
        (&[b"A.TXT"], 400, None),
        (&[b"/etc", b"tool"], 500, Some("x")),
    ];
    let mut data = Vec::new();
    let mut files = Vec::new();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, (path, len, attr)) in parts.iter().enumerate() {
        let bytes = if *attr == Some("p") {
            vec![0; *len]
        } else {
            payload(*len, 80 + i as u64)
        };
        data.extend_from_slice(&bytes);
        let mut f = file(*len as i64, path);
        if let Some(a) = attr {
            f = with(f, &[("attr", bstr(a))]);
        }
        files.push(f);
        if *attr != Some("p") {
            contents.insert(format!("{i}"), bytes);
        }
    }
    files.push(with(
        file(0, &[b"link"]),
        &[
            ("attr", bstr("l")),
            ("symlink path", Bv::List(vec![bstr("sub"), bstr("CON")])),
        ],
    ));
    files.push(with(
        file(0, &[b"escape"]),
        &[
            ("attr", bstr("l")),
            (
                "symlink path",
                Bv::List(vec![bstr(".."), bstr(".."), bstr("etc"), bstr("passwd")]),
            ),
        ],
    ));
    let placeholder = write(
        &dir,
        "placeholder.torrent",
        &v1_torrent(files.clone(), ANNOUNCE, Some(&data)),
    );
    let lt = lt_info(&placeholder);
    let tracker = Tracker::start(&[&lt.info_hash]);
    let torrent = write(
        &dir,
        "odd.torrent",
        &v1_torrent(files, &tracker.http_url(), Some(&data)),
    );
    // The seeder's files, where libtorrent reads them from.
    let seed_dir = dir.subdir("seed");
    let mut offset = 0usize;
    for f in &lt.files {
        let len = f.length as usize;
        if !f.pad && f.symlink.is_none() {
            let path = seed_dir.join(format!("root/{}", f.path));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data[offset..offset + len]).unwrap();
        }
        offset += len;
    }
    let _seeder = LtSeeder::start(&torrent, &seed_dir);

    let out_dir = dir.subdir("out");
    let out_path = out_dir.join("odd");
    let out = download(&torrent, &out_path);
    assert_success(&out);
    let want: BTreeMap<String, Vec<u8>> = [
        ("evil.txt", "0"),
        ("sub/CON_", "2"),
        ("a.txt", "3"),
        ("A.1.TXT", "4"),
        ("etc/tool", "5"),
    ]
    .into_iter()
    .map(|(path, i)| (path.to_string(), contents[i].clone()))
    .collect();
    // `read_tree` follows the symlink it finds: it points at sub/CON_.
    let mut with_link = want.clone();
    with_link.insert("link".to_string(), contents["2"].clone());
    assert_tree_eq(&out_path, &with_link);
    assert_eq!(
        std::fs::read_link(out_path.join("link")).unwrap(),
        Path::new("sub/CON_")
    );
    assert!(std::fs::symlink_metadata(out_path.join("escape")).is_err());
    assert!(
        stderr_of(&out).contains("symlink skipped"),
        "the escaping symlink is skipped with a warning\n{}",
        dump(&out)
    );
    // Nothing landed beside the output (no `evil.txt` two levels up either).
    let beside: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["odd"]);
    assert!(!dir.path().join("evil.txt").exists());
    let mode = std::fs::metadata(out_path.join("etc/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o100, 0, "attr x ({mode:o})");
}
