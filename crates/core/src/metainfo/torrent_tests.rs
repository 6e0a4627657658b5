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
    assert_eq!(
        i.files,
        vec![FileEntry {
            path: vec!["a.txt".into()],
            length: 10,
            offset: 0
        }]
    );
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
fn non_utf8_names_are_converted_lossily() {
    let info = dict(&[
        ("length", int(1)),
        ("name", bs(b"a\xffb")),
        ("piece length", int(1)),
        ("pieces", hashes(1)),
    ]);
    let i = Info::from_bytes(&info).unwrap();
    assert_eq!(i.name, "a\u{fffd}b");
    assert_eq!(i.files[0].path, vec!["a\u{fffd}b".to_string()]);
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
    let mut trailing = torrent(&info);
    trailing.push(b'\n');
    assert!(torrent_err(&trailing).starts_with("invalid bencode: trailing bytes"));
    // Errors inside info are reported through Metainfo too.
    assert_eq!(
        torrent_err(&torrent(&single_info("f", 0, 1, 1))),
        "info.piece length 0 is out of range"
    );
}

#[test]
fn name_rejections() {
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
    for (name, shown) in [
        ("", r#""""#),
        (".", r#"".""#),
        ("..", r#""..""#),
        ("a/b", r#""a/b""#),
        ("/etc", r#""/etc""#),
        ("a\\b", r#""a\\b""#),
        ("a\0b", r#""a\0b""#),
        ("C:", r#""C:""#),
        ("c:evil", r#""c:evil""#),
        ("CON", r#""CON""#),
        ("nul.txt", r#""nul.txt""#),
        ("Com7.tar.gz", r#""Com7.tar.gz""#),
        ("lpt1", r#""lpt1""#),
        ("AUX .txt", r#""AUX .txt""#),
    ] {
        assert_eq!(
            info_err(&single_info(name, 1, 1, 1)),
            format!("info.name {shown} is not allowed"),
            "name {name:?}"
        );
    }
    for ok in [
        "CONSOLE",
        "COM0",
        "COM10",
        "LPT",
        "auxiliary.txt",
        "a.",
        "ab:c",
        "...a",
    ] {
        assert!(
            Info::from_bytes(&single_info(ok, 1, 1, 1)).is_ok(),
            "{ok:?}"
        );
    }
    let long = "/".repeat(1000);
    let msg = info_err(&single_info(&long, 1, 1, 1));
    assert!(msg.len() < 200, "{msg}");
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
    assert_eq!(
        m(&[file(0, &["a"]), file(0, &["b"]), file(1, &["x", ".."])]),
        r#"info.files[2].path component ".." is not allowed"#
    );
    for bad in ["", ".", "a/b", "a\\b", "C:", "PRN", "lpt3.log", "x\0"] {
        let msg = m(&[file(1, &["ok", bad])]);
        assert!(
            msg.starts_with("info.files[0].path component ") && msg.ends_with(" is not allowed"),
            "{bad:?}: {msg}"
        );
    }
    // A bad path.utf-8 is checked too (it is preferred over path).
    assert_eq!(
        m(&[dict(&[
            ("length", int(1)),
            ("path", list(&[bs(b"fine")])),
            ("path.utf-8", list(&[bs(b"..")])),
        ])]),
        r#"info.files[0].path component ".." is not allowed"#
    );
}

#[test]
fn duplicate_and_conflicting_paths() {
    let m = |files: &[Vec<u8>]| info_err(&multi_info(files, 1, 1));
    assert_eq!(
        m(&[file(1, &["a", "b"]), file(0, &["c"]), file(0, &["a", "b"])]),
        r#"info.files[2].path "a/b" duplicates info.files[0]"#
    );
    assert_eq!(
        m(&[file(1, &["a"]), file(0, &["a", "b"])]),
        r#"info.files[1].path "a/b" conflicts with info.files[0]"#
    );
    assert_eq!(
        m(&[file(1, &["a", "b"]), file(0, &["a"])]),
        r#"info.files[1].path "a" conflicts with info.files[0]"#
    );
    // Same names in different folders are fine.
    let ok = multi_info(
        &[file(1, &["a", "x"]), file(1, &["b", "x"]), file(1, &["x"])],
        3,
        1,
    );
    assert_eq!(Info::from_bytes(&ok).unwrap().files.len(), 3);
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
