//! Tests for torrent parsing; every torrent here is bencode written by hand.

use super::*;
use proptest::prelude::*;

/// `<len>:<bytes>`
fn bs(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out
}

/// `i<n>e`
fn int(n: i64) -> Vec<u8> {
    format!("i{n}e").into_bytes()
}

/// `l...e` from already-encoded items.
fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"l".to_vec();
    for item in items {
        out.extend_from_slice(item);
    }
    out.push(b'e');
    out
}

/// `d...e` with keys written in the given order (not necessarily sorted).
fn dict(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"d".to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&bs(k.as_bytes()));
        out.extend_from_slice(v);
    }
    out.push(b'e');
    out
}

/// `n` distinct fake piece hashes as one byte string value.
fn hashes(n: usize) -> Vec<u8> {
    let raw: Vec<u8> = (0..n).flat_map(|i| [i as u8; 20]).collect();
    bs(&raw)
}

fn single_info(name: &str, piece_length: i64, length: i64, n_hashes: usize) -> Vec<u8> {
    dict(&[
        ("length", int(length)),
        ("name", bs(name.as_bytes())),
        ("piece length", int(piece_length)),
        ("pieces", hashes(n_hashes)),
    ])
}

fn file(length: i64, path: &[&str]) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = path.iter().map(|p| bs(p.as_bytes())).collect();
    dict(&[("length", int(length)), ("path", list(&parts))])
}

fn multi_info(files: &[Vec<u8>], piece_length: i64, n_hashes: usize) -> Vec<u8> {
    dict(&[
        ("files", list(files)),
        ("name", bs(b"root")),
        ("piece length", int(piece_length)),
        ("pieces", hashes(n_hashes)),
    ])
}

fn torrent(info: &[u8]) -> Vec<u8> {
    dict(&[("announce", bs(b"http://t/a")), ("info", info.to_vec())])
}

fn info_err(info: &[u8]) -> String {
    match Info::from_bytes(info) {
        Ok(i) => panic!("expected an error, got {i:?}"),
        Err(e) => e.to_string(),
    }
}

/// The error and its causes, joined by ": " as the CLI prints them.
fn torrent_err(bytes: &[u8]) -> String {
    match Metainfo::from_bytes(bytes) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => {
            let mut line = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                line.push_str(": ");
                line.push_str(&cause.to_string());
                source = cause.source();
            }
            line
        }
    }
}

#[test]
fn single_file_torrent() {
    let m = Metainfo::from_bytes(&torrent(&single_info("a.txt", 4, 10, 3))).unwrap();
    assert_eq!(m.announce.as_deref(), Some("http://t/a"));
    assert!(m.announce_list.is_empty());
    assert_eq!(m.tracker_tiers(), vec![vec!["http://t/a".to_string()]]);
    let i = &m.info;
    assert_eq!(i.name, "a.txt");
    assert_eq!(i.piece_length, 4);
    assert_eq!(i.pieces, vec![[0u8; 20], [1u8; 20], [2u8; 20]]);
    assert!(!i.multi_file);
    assert_eq!(i.total_length, 10);
    assert_eq!(i.content_length(), 10);
    assert_eq!(i.version, MetaVersion::V1);
    assert_eq!(m.info_hash_v2, None);
    assert_eq!(m.info_hash_v1(), Some(m.info_hash));
    assert_eq!(i.files, vec![FileEntry::new(vec!["a.txt".into()], 10, 0)]);
    assert_eq!(i.piece_count(), 3);
    assert_eq!(
        (
            i.piece_len(0),
            i.piece_len(1),
            i.piece_len(2),
            i.piece_len(3)
        ),
        (4, 4, 2, 0)
    );
}

#[test]
fn last_piece_full_when_length_is_a_multiple() {
    let i = Info::from_bytes(&single_info("a", 5, 10, 2)).unwrap();
    assert_eq!((i.piece_len(0), i.piece_len(1)), (5, 5));
    let max = Info::from_bytes(&single_info("a", 1 << 28, 1, 1)).unwrap();
    assert_eq!(max.piece_len(0), 1);
    assert_eq!(max.piece_length, 1 << 28);
}

#[test]
fn multi_file_torrent_offsets_and_utf8_variants() {
    let info = dict(&[
        (
            "files",
            list(&[
                file(3, &["a", "x.bin"]),
                file(0, &["empty"]),
                dict(&[
                    ("length", int(6)),
                    ("path", list(&[bs(b"\xffold")])),
                    ("path.utf-8", list(&[bs("b\u{e9}".as_bytes()), bs(b"c")])),
                ]),
            ]),
        ),
        ("name", bs(b"\xfeold")),
        ("name.utf-8", bs("r\u{e9}p".as_bytes())),
        ("piece length", int(4)),
        ("pieces", hashes(3)),
    ]);
    let i = Info::from_bytes(&info).unwrap();
    assert_eq!(i.name, "r\u{e9}p");
    assert!(i.multi_file);
    assert_eq!(i.total_length, 9);
    let got: Vec<(Vec<String>, u64, u64)> = i
        .files
        .iter()
        .map(|f| (f.path.clone(), f.length, f.offset))
        .collect();
    let want: Vec<(Vec<String>, u64, u64)> = vec![
        (vec!["a".into(), "x.bin".into()], 3, 0),
        (vec!["empty".into()], 0, 3),
        (vec!["b\u{e9}".into(), "c".into()], 6, 3),
    ];
    assert_eq!(got, want);
}

#[test]
fn non_utf8_names_are_decoded_as_windows_1252() {
    let info = dict(&[
        ("length", int(1)),
        ("name", bs(b"a\xffb")),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    let i = Info::from_bytes(&info).unwrap();
    assert_eq!(i.name, "a\u{ff}b");
    assert_eq!(i.files[0].path, vec!["a\u{ff}b".to_string()]);
    // Two legacy names that differ only in invalid bytes stay distinct.
    let files = [
        dict(&[("length", int(1)), ("path", list(&[bs(b"caf\xe9")]))]),
        dict(&[("length", int(1)), ("path", list(&[bs(b"caf\x82")]))]),
        dict(&[("length", int(1)), ("path", list(&[bs(b"caf\xc3")]))]),
    ];
    let i = Info::from_bytes(&multi_info(&files, 3, 1)).unwrap();
    let paths: Vec<&str> = i.files.iter().map(|f| f.path[0].as_str()).collect();
    assert_eq!(paths, ["café", "caf\u{201a}", "caf\u{c3}"]);
}

#[test]
fn info_hash_of_known_torrent() {
    // Info keys deliberately written in sorted order; SHA-1 computed independently (Python's
    // hashlib) over exactly these bytes.
    let info: &[u8] =
        b"d6:lengthi5e4:name5:a.txt12:piece lengthi16384e6:pieces20:AAAAAAAAAAAAAAAAAAAAe";
    let mut file = b"d8:announce18:http://t.example/a4:info".to_vec();
    file.extend_from_slice(info);
    file.extend_from_slice(b"7:comment2:hie");
    let m = Metainfo::from_bytes(&file).unwrap();
    assert_eq!(
        m.info_hash.to_string(),
        "57dbb584ee2949d14ea359b3c3e66eba8ff6ac94"
    );
    assert_eq!(m.info_bytes, info.to_vec());
    let direct: [u8; 20] = Sha1::digest(info).into();
    assert_eq!(m.info_hash.0, direct);
    assert_eq!(m.info.total_length, 5);
}

#[test]
fn info_hash_uses_raw_bytes_not_a_reencoding() {
    // Unsorted keys: a re-encoding would sort them and change the hash.
    let info: &[u8] =
        b"d4:name5:a.txt6:lengthi5e6:pieces20:AAAAAAAAAAAAAAAAAAAA12:piece lengthi16384ee";
    let mut file = b"d4:info".to_vec();
    file.extend_from_slice(info);
    file.push(b'e');
    let m = Metainfo::from_bytes(&file).unwrap();
    assert_eq!(
        m.info_hash.to_string(),
        "0644ce2c88d699e7128ff1b83c3e29c401983448"
    );
    assert_eq!(m.info_bytes, info.to_vec());
    assert_eq!(m.announce, None);
    assert!(m.tracker_tiers().is_empty());
}

#[test]
fn announce_list_tiers() {
    let bytes = dict(&[
        ("announce", bs(b"http://main/")),
        (
            "announce-list",
            list(&[
                list(&[bs(b"http://a/"), int(3), bs(b"udp://b:1")]),
                list(&[int(1)]),
                list(&[]),
                bs(b"not a tier"),
                list(&[bs(b""), bs(b"http://c/")]),
            ]),
        ),
        ("info", single_info("f", 1, 1, 1)),
    ]);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    let want = vec![
        vec!["http://a/".to_string(), "udp://b:1".to_string()],
        vec!["http://c/".to_string()],
    ];
    assert_eq!(m.announce_list, want);
    assert_eq!(m.tracker_tiers(), want);

    // All tiers empty: fall back to announce.
    let bytes = dict(&[
        ("announce", bs(b"http://main/")),
        ("announce-list", list(&[list(&[])])),
        ("info", single_info("f", 1, 1, 1)),
    ]);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert!(m.announce_list.is_empty());
    assert_eq!(m.tracker_tiers(), vec![vec!["http://main/".to_string()]]);
}

#[test]
fn top_level_rejections() {
    assert_eq!(torrent_err(b"li1ee"), "torrent is not a dictionary");
    assert_eq!(
        torrent_err(b"d4:infoi03ee"),
        "invalid bencode: leading zero in integer at byte 8"
    );
    assert_eq!(
        torrent_err(b"d8:announce1:xe"),
        "info dictionary is missing"
    );
    assert_eq!(torrent_err(b"d4:infoi1ee"), "info is not a dictionary");
    let info = single_info("f", 1, 1, 1);
    assert_eq!(
        torrent_err(&dict(&[("announce", int(1)), ("info", info.clone())])),
        "announce is not a string"
    );
    assert_eq!(
        torrent_err(&dict(&[
            ("announce-list", bs(b"x")),
            ("info", info.clone())
        ])),
        "announce-list is not a list"
    );
    // Bytes after the top-level dictionary are ignored (a trailing newline is common).
    let mut trailing = torrent(&info);
    let plain = Metainfo::from_bytes(&trailing).unwrap();
    trailing.extend_from_slice(b"\n\r\ngarbage d1:xe");
    assert_eq!(Metainfo::from_bytes(&trailing).unwrap(), plain);
    assert!(torrent_err(b"d4:infoe").starts_with("invalid bencode"));
    // Errors inside info are reported through Metainfo too.
    assert_eq!(
        torrent_err(&torrent(&single_info("f", 0, 1, 1))),
        "info.piece length 0 is out of range"
    );
}

#[test]
fn name_rejections_and_sanitising() {
    assert_eq!(info_err(b"li1ee"), "info is not a dictionary");
    let no_name = dict(&[
        ("length", int(1)),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&no_name), "info.name is missing");
    let int_name = dict(&[
        ("length", int(1)),
        ("name", int(1)),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&int_name), "info.name is not a string");
    for (name, want) in [
        ("a/b", "a_b"),
        ("/etc", "etc"),
        ("a\\b", "a_b"),
        ("a\0b", "a_b"),
        ("c:evil", "evil"),
        ("CON", "CON_"),
        ("nul.txt", "nul_.txt"),
        ("AUX .txt", "AUX _.txt"),
        ("CONSOLE", "CONSOLE"),
        ("ab:c", "ab:c"),
        ("...a", "...a"),
    ] {
        let i = Info::from_bytes(&single_info(name, 1, 1, 1)).unwrap();
        assert_eq!(i.name, want, "name {name:?}");
        assert_eq!(i.files[0].path, [want], "name {name:?}");
    }
    // A name that sanitises to nothing is replaced by the info hash, as libtorrent does.
    for name in ["", ".", "..", "C:", "/"] {
        let bytes = single_info(name, 1, 1, 1);
        let i = Info::from_bytes(&bytes).unwrap();
        assert_eq!(
            i.name,
            crate::types::to_hex(&Sha1::digest(&bytes)),
            "{name:?}"
        );
    }
}

#[test]
fn piece_length_and_pieces_rejections() {
    assert_eq!(
        info_err(&single_info("f", 0, 1, 1)),
        "info.piece length 0 is out of range"
    );
    assert_eq!(
        info_err(&single_info("f", -4, 1, 1)),
        "info.piece length -4 is out of range"
    );
    assert_eq!(
        info_err(&single_info("f", (1 << 28) + 1, 1, 1)),
        "info.piece length 268435457 is out of range"
    );
    let no_pl = dict(&[
        ("length", int(1)),
        ("name", bs(b"f")),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&no_pl), "info.piece length is missing");
    let str_pl = dict(&[
        ("length", int(1)),
        ("name", bs(b"f")),
        ("piece length", bs(b"1")),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&str_pl), "info.piece length is not an integer");

    let pieces = |v: Vec<u8>| {
        dict(&[
            ("length", int(1)),
            ("name", bs(b"f")),
            ("piece length", int(1)),
            ("pieces", v),
        ])
    };
    assert_eq!(
        info_err(&pieces(bs(&[7u8; 41]))),
        "info.pieces length 41 is not a multiple of 20"
    );
    assert_eq!(info_err(&pieces(int(1))), "info.pieces is not a string");
    let no_pieces = dict(&[
        ("length", int(1)),
        ("name", bs(b"f")),
        ("piece length", int(1)),
    ]);
    assert_eq!(info_err(&no_pieces), "info.pieces is missing");

    assert_eq!(
        info_err(&single_info("f", 4, 13, 3)),
        "info.pieces has 3 hashes but the length needs 4"
    );
    assert_eq!(
        info_err(&single_info("f", 4, 8, 3)),
        "info.pieces has 3 hashes but the length needs 2"
    );
}

#[test]
fn length_rejections() {
    assert_eq!(
        info_err(&single_info("f", 1, -1, 0)),
        "info.length -1 is negative"
    );
    assert_eq!(
        info_err(&single_info("f", 1, 0, 0)),
        "info total length is 0"
    );
    assert_eq!(
        info_err(&single_info("f", 1 << 28, (1 << 50) + 1, 0)),
        "info total length exceeds 2^50 bytes (1125899906842624)"
    );
    let str_len = dict(&[
        ("length", bs(b"1")),
        ("name", bs(b"f")),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&str_len), "info.length is not an integer");
    let both = dict(&[
        ("files", list(&[file(1, &["a"])])),
        ("length", int(1)),
        ("name", bs(b"f")),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&both), "info has both length and files");
    let neither = dict(&[
        ("name", bs(b"f")),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&neither), "info has neither length nor files");
    // Exactly 2^50 is allowed (as far as lengths go; the hash count is then wrong).
    assert_eq!(
        info_err(&single_info("f", 1 << 28, 1 << 50, 0)),
        "info.pieces has 0 hashes but the length needs 4194304"
    );
}

#[test]
fn files_rejections() {
    let m = |files: &[Vec<u8>]| info_err(&multi_info(files, 1, 1));
    assert_eq!(m(&[]), "info.files is empty");
    let not_list = dict(&[
        ("files", bs(b"x")),
        ("name", bs(b"root")),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    assert_eq!(info_err(&not_list), "info.files is not a list");
    assert_eq!(
        m(&[file(1, &["a"]), int(3)]),
        "info.files[1] is not a dictionary"
    );
    assert_eq!(
        m(&[dict(&[("path", list(&[bs(b"a")]))])]),
        "info.files[0].length is missing"
    );
    assert_eq!(
        m(&[file(0, &["a"]), file(-2, &["b"])]),
        "info.files[1].length -2 is negative"
    );
    assert_eq!(
        m(&[dict(&[("length", bs(b"1")), ("path", list(&[bs(b"a")]))])]),
        "info.files[0].length is not an integer"
    );
    assert_eq!(
        m(&[dict(&[("length", int(1))])]),
        "info.files[0].path is missing"
    );
    assert_eq!(
        m(&[dict(&[("length", int(1)), ("path", bs(b"a"))])]),
        "info.files[0].path is not a list"
    );
    assert_eq!(m(&[file(1, &[])]), "info.files[0].path is empty");
    assert_eq!(
        m(&[dict(&[
            ("length", int(1)),
            ("path", list(&[bs(b"a"), int(1)]))
        ])]),
        "info.files[0].path[1] is not a string"
    );
}

/// The sanitised paths of a multi-file torrent's files.
fn paths_of(files: &[Vec<u8>]) -> Vec<String> {
    let total: i64 = 3;
    let info = Info::from_bytes(&multi_info(files, total, 1)).unwrap();
    info.files.iter().map(|f| f.path.join("/")).collect()
}

#[test]
fn unsafe_paths_are_sanitised() {
    assert_eq!(
        paths_of(&[
            file(1, &["x", ".."]),
            file(0, &["..", "..", "etc", "passwd"]),
            file(0, &["", ".", "a/b", "c\\d"]),
            file(0, &["/abs", "C:", "D:x", "PRN", "lpt3.log", "n\0l"]),
            file(0, &["..", "."]),
        ]),
        [
            "x",
            "etc/passwd",
            "a_b/c_d",
            "abs/x/PRN_/lpt3_.log/n_l",
            "_",
        ]
    );
    // path.utf-8 wins over path, and is sanitised too.
    assert_eq!(
        paths_of(&[dict(&[
            ("length", int(1)),
            ("path", list(&[bs(b"fine")])),
            ("path.utf-8", list(&[bs(b".."), bs(b"won")])),
        ])]),
        ["won"]
    );
    // A path.utf-8 that is not a list is ignored.
    assert_eq!(
        paths_of(&[dict(&[
            ("length", int(1)),
            ("path", list(&[bs(b"fine")])),
            ("path.utf-8", bs(b"x")),
        ])]),
        ["fine"]
    );
}

/// Each file's path as the torrent writes it, `/`-joined (lossy for display).
fn written_paths(info: &Info) -> Vec<String> {
    info.files
        .iter()
        .map(|f| {
            f.path_as_written()
                .into_iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect()
}

#[test]
fn names_as_written_are_kept_only_where_the_disk_names_differ() {
    // Plain names: no copy at all.
    let plain =
        Info::from_bytes(&multi_info(&[file(1, &["a", "b"]), file(2, &["c"])], 3, 1)).unwrap();
    assert_eq!(plain.original_name, None);
    assert!(plain.files.iter().all(|f| f.original_path.is_none()));
    assert_eq!(plain.name_as_written(), b"root");
    assert_eq!(written_paths(&plain), ["a/b", "c"]);

    let info = dict(&[
        (
            "files",
            list(&[
                file(1, &["x", ".."]),
                file(1, &["a", "b"]),
                file(1, &["A", "B"]),
                dict(&[
                    ("length", int(1)),
                    ("path", list(&[bs(b"fine")])),
                    ("path.utf-8", list(&[bs(b"CON"), bs(b"d\\e")])),
                ]),
                dict(&[("attr", bs(b"p")), ("length", int(1))]),
                dict(&[("length", int(1)), ("path", list(&[bs(b"\xe9")]))]),
            ]),
        ),
        ("name", bs(b"old")),
        ("name.utf-8", bs(b"new/name")),
        ("piece length", int(6)),
        ("pieces", hashes(1)),
    ]);
    let i = Info::from_bytes(&info).unwrap();
    assert_eq!(i.name, "new_name");
    // The name and paths written are those the sanitised ones come from (`.utf-8` first).
    assert_eq!(i.name_as_written(), b"new/name");
    let on_disk: Vec<String> = i.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(
        on_disk,
        ["x", "a/b", "A/B.1", "CON_/d_e", ".pad/1", "\u{e9}"]
    );
    assert_eq!(
        written_paths(&i),
        ["x/..", "a/b", "A/B", "CON/d\\e", ".pad/1", "\u{fffd}"]
    );
    assert_eq!(
        i.files[5].original_path.as_deref(),
        Some(&[Box::from(&b"\xe9"[..])][..])
    );
    // Only the files whose names changed carry a copy.
    let kept: Vec<bool> = i.files.iter().map(|f| f.original_path.is_some()).collect();
    assert_eq!(kept, [true, false, true, true, false, true]);

    // A single file: its path is the torrent's name.
    let single = Info::from_bytes(&single_info("nul.iso", 4, 1, 1)).unwrap();
    assert_eq!(single.name, "nul_.iso");
    assert_eq!(single.name_as_written(), b"nul.iso");
    assert_eq!(written_paths(&single), ["nul.iso"]);
}

#[test]
fn colliding_paths_get_suffixes() {
    assert_eq!(
        paths_of(&[
            file(1, &["a", "b"]),
            file(0, &["c"]),
            file(0, &["a", "b"]),
            file(0, &["A", "B"]),
            file(0, &["a"]),
            file(0, &["x", ".."]),
            file(0, &["x"]),
            file(2, &["a.b", "x.tar.gz"]),
            file(0, &["a.b", "x.tar.gz"]),
        ]),
        [
            "a/b",
            "c",
            "a/b.1",
            "A/B.2",
            "a.1",
            "x",
            "x.1",
            "a.b/x.tar.gz",
            "a.b/x.tar.1.gz",
        ]
    );
    // Same names in different folders are fine.
    assert_eq!(
        paths_of(&[file(1, &["a", "x"]), file(1, &["b", "x"]), file(1, &["x"])]),
        ["a/x", "b/x", "x"]
    );
}

#[test]
fn file_length_sum_overflow_is_rejected() {
    let files = [file(i64::MAX, &["a"]), file(i64::MAX, &["b"])];
    assert_eq!(
        info_err(&multi_info(&files, 1, 1)),
        "info total length exceeds 2^50 bytes (1125899906842624)"
    );
}

proptest! {
    #[test]
    fn piece_lengths_sum_to_total(
        piece_length in 1i64..=64,
        lengths in proptest::collection::vec(0i64..=300, 1..6),
    ) {
        let total: i64 = lengths.iter().sum();
        prop_assume!(total > 0);
        let n = ((total + piece_length - 1) / piece_length) as usize;
        let files: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &l)| file(l, &[&format!("f{i}")]))
            .collect();
        let info = Info::from_bytes(&multi_info(&files, piece_length, n)).unwrap();
        prop_assert_eq!(info.total_length, total as u64);
        prop_assert_eq!(info.piece_count() as usize, n);
        let mut sum = 0u64;
        for i in 0..info.piece_count() {
            let len = info.piece_len(i);
            prop_assert!(len > 0 && i64::from(len) <= piece_length);
            sum += u64::from(len);
        }
        prop_assert_eq!(sum, total as u64);
        prop_assert_eq!(info.piece_len(info.piece_count()), 0);
        let mut offset = 0u64;
        for (f, &l) in info.files.iter().zip(&lengths) {
            prop_assert_eq!(f.offset, offset);
            prop_assert_eq!(f.length, l as u64);
            offset += l as u64;
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Metainfo::from_bytes(&input);
        let _ = Info::from_bytes(&input);
    }

    #[test]
    fn mutated_torrents_never_panic(
        index in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = torrent(&multi_info(
            &[file(3, &["a", "b"]), file(2, &["c"])], 2, 3,
        ));
        let i = index.index(bytes.len());
        bytes[i] = byte;
        if let Ok(m) = Metainfo::from_bytes(&bytes) {
            prop_assert_eq!(m.info.pieces.len() as u64,
                m.info.total_length.div_ceil(u64::from(m.info.piece_length)));
        }
    }
}

#[test]
fn pad_files_attributes_and_symlinks() {
    let files = [
        dict(&[("length", int(3)), ("path", list(&[bs(b"a")]))]),
        dict(&[
            ("attr", bs(b"p")),
            ("length", int(1)),
            ("path", list(&[bs(b".pad"), bs(b"1")])),
        ]),
        // A pad file may omit its path; BitComet's are known by name.
        dict(&[("attr", bs(b"p")), ("length", int(4))]),
        dict(&[
            ("length", int(4)),
            ("path", list(&[bs(b"_____padding_file_0_x")])),
        ]),
        dict(&[
            ("attr", bs(b"xh")),
            ("length", int(4)),
            ("path", list(&[bs(b"bin"), bs(b"run")])),
        ]),
        // A symlink takes no bytes whatever length it claims.
        dict(&[
            ("attr", bs(b"l")),
            ("length", int(99)),
            ("path", list(&[bs(b"link")])),
            (
                "symlink path",
                list(&[bs(b"bin"), bs(b"x"), bs(b".."), bs(b"run")]),
            ),
        ]),
        dict(&[
            ("attr", bs(b"l")),
            ("length", int(0)),
            ("path", list(&[bs(b"up")])),
            ("symlink path", list(&[bs(b".."), bs(b"etc")])),
        ]),
        dict(&[
            ("attr", bs(b"l")),
            ("length", int(0)),
            ("path", list(&[bs(b"abs")])),
            ("symlink path", list(&[bs(b"/etc"), bs(b"passwd")])),
        ]),
        // `l` without a target is an ordinary file.
        dict(&[
            ("attr", bs(b"l")),
            ("length", int(0)),
            ("path", list(&[bs(b"plain")])),
        ]),
    ];
    let info = dict(&[
        ("files", list(&files)),
        ("name", bs(b"root")),
        ("piece length", int(4)),
        ("pieces", hashes(4)),
    ]);
    let i = Info::from_bytes(&info).unwrap();
    assert_eq!(i.total_length, 16);
    assert_eq!(i.content_length(), 7);
    let pads: Vec<(String, bool)> = i
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.attr.pad))
        .collect();
    assert_eq!(
        pads[..4],
        [
            ("a".to_string(), false),
            (".pad/1".to_string(), true),
            (".pad/4".to_string(), true),
            ("_____padding_file_0_x".to_string(), true),
        ]
    );
    let run = &i.files[4];
    assert!(run.attr.executable && run.attr.hidden && !run.attr.pad);
    assert_eq!(
        i.files[5].symlink,
        Some(SymlinkTarget::Inside(vec!["bin".into(), "run".into()]))
    );
    assert_eq!(i.files[5].length, 0);
    assert_eq!(
        i.files[6].symlink,
        Some(SymlinkTarget::Outside("../etc".into()))
    );
    assert_eq!(
        i.files[7].symlink,
        Some(SymlinkTarget::Outside("/etc/passwd".into()))
    );
    assert_eq!(i.files[8].symlink, None);
    assert_eq!(i.real_files().count(), 6);
}

#[test]
fn tracker_urls_are_trimmed() {
    let bytes = dict(&[
        ("announce", bs(b"  http://main/ \r\n")),
        (
            "announce-list",
            list(&[list(&[bs(b"\thttp://a/ "), bs(b"   ")]), list(&[bs(b" ")])]),
        ),
        ("info", single_info("f", 1, 1, 1)),
    ]);
    let m = Metainfo::from_bytes(&bytes).unwrap();
    assert_eq!(m.announce.as_deref(), Some("http://main/"));
    assert_eq!(m.announce_list, vec![vec!["http://a/".to_string()]]);
    let blank = dict(&[
        ("announce", bs(b" \n")),
        ("info", single_info("f", 1, 1, 1)),
    ]);
    assert_eq!(Metainfo::from_bytes(&blank).unwrap().announce, None);
}

#[test]
fn too_many_files_are_refused() {
    // The count is checked before any file is parsed (so these need not be files).
    let mut many = b"l".to_vec();
    for _ in 0..=MAX_FILES {
        many.extend_from_slice(b"i0e");
    }
    many.push(b'e');
    let mut info = b"d5:files".to_vec();
    info.extend_from_slice(&many);
    info.extend_from_slice(b"4:name1:x12:piece lengthi1e6:pieces0:e");
    assert_eq!(
        info_err(&info),
        format!(
            "info.files lists {} files, more than {MAX_FILES}",
            MAX_FILES + 1
        )
    );
}

fn with_url_list(url_list: Vec<u8>) -> Metainfo {
    let bytes = dict(&[
        ("info", single_info("a", 16384, 10, 1)),
        ("url-list", url_list),
    ]);
    Metainfo::from_bytes(&bytes).unwrap()
}

#[test]
fn url_list_as_one_string_or_a_list() {
    assert_eq!(
        with_url_list(bs(b" http://w/a ")).web_seeds,
        vec!["http://w/a".to_string()]
    );
    let list_of = list(&[
        bs(b"https://a/"),
        int(3),
        bs(b"ftp://nope/"),
        bs(b""),
        bs(b"HTTP://b/"),
        bs(b"https://a/"),
    ]);
    assert_eq!(
        with_url_list(list_of).web_seeds,
        vec!["https://a/".to_string(), "HTTP://b/".to_string()]
    );
    assert!(with_url_list(int(1)).web_seeds.is_empty());
    let bytes = dict(&[("info", single_info("a", 16384, 10, 1))]);
    assert!(Metainfo::from_bytes(&bytes).unwrap().web_seeds.is_empty());
}

#[test]
fn url_list_is_capped() {
    let many: Vec<Vec<u8>> = (0..100)
        .map(|i| bs(format!("http://w/{i}").as_bytes()))
        .collect();
    assert_eq!(with_url_list(list(&many)).web_seeds.len(), MAX_WEB_SEEDS);
}
