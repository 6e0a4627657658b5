//! Tests for building torrents: layouts, piece parts and hashes checked against independent
//! computations over the whole payload.

use super::*;
use crate::metainfo::MetaVersion::{Hybrid, V1, V2};
use proptest::prelude::*;

fn data(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn src(path: &str, len: u64) -> SourceFile {
    SourceFile {
        path: path.split('/').map(String::from).collect(),
        length: len,
        executable: false,
    }
}

/// Hashes every piece of `plan` from `contents` (by joined path), as `bitrush create` does.
fn hash_all(plan: &Plan, contents: &BTreeMap<String, Vec<u8>>) -> Vec<PieceHashes> {
    (0..plan.piece_count())
        .map(|i| {
            let mut h = plan.piece_hasher(i);
            for part in plan.piece_parts(i) {
                match part {
                    PiecePart::File { file, offset, len } => {
                        let f = &plan.files()[file];
                        let bytes = &contents[&f.path.join("/")];
                        h.update(&bytes[offset as usize..(offset + len) as usize]);
                    }
                    PiecePart::Zeros(n) => h.zeros(n),
                }
            }
            h.finish()
        })
        .collect()
}

fn build(
    name: &str,
    files: &[(&str, u64)],
    single: bool,
    piece_length: u32,
    version: MetaVersion,
) -> (Built, BTreeMap<String, Vec<u8>>) {
    let contents: BTreeMap<String, Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, (p, len))| (p.to_string(), data(*len, i as u8)))
        .collect();
    let sources = files.iter().map(|(p, len)| src(p, *len)).collect();
    let plan = Plan::new(name, sources, single, Some(piece_length), version).unwrap();
    let hashes = hash_all(&plan, &contents);
    let opts = TorrentOptions {
        trackers: vec!["http://t/a".into(), "udp://u:1".into()],
        created_by: Some("test".into()),
        ..TorrentOptions::default()
    };
    (plan.finish(&hashes, &opts).unwrap(), contents)
}

/// The payload as v1 sees it: files in order with zeros for pad files.
fn payload(m: &Metainfo, contents: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in &m.info.files {
        if f.attr.pad {
            out.extend(std::iter::repeat_n(0u8, f.length as usize));
        } else {
            out.extend_from_slice(&contents[&f.path.join("/")]);
        }
    }
    out
}

#[track_caller]
fn check_hashes(built: &Built, contents: &BTreeMap<String, Vec<u8>>) {
    let m = &built.metainfo;
    let pl = m.info.piece_length;
    if m.info.version.has_v1() {
        let all = payload(m, contents);
        let want: Vec<[u8; 20]> = all
            .chunks(pl as usize)
            .map(|c| Sha1::digest(c).into())
            .collect();
        assert_eq!(m.info.pieces, want);
    }
    if m.info.version.has_v2() {
        for (i, f) in m.info.files.iter().enumerate() {
            if f.attr.pad || f.length == 0 {
                assert!(f.pieces_root.is_none());
                continue;
            }
            let leaves = merkle::block_hashes(&contents[&f.path.join("/")]);
            assert_eq!(
                f.pieces_root,
                Some(merkle::file_root(&leaves, pl)),
                "{:?}",
                f.path
            );
            assert_eq!(f.offset % u64::from(pl), 0, "v2 files start on a piece");
            if f.length > u64::from(pl) {
                let layer = merkle::piece_layer(&leaves, merkle::blocks_per_piece(pl));
                assert_eq!(m.piece_layers.get(&i), Some(&layer));
            }
        }
    }
}

#[test]
fn auto_piece_length_follows_libtorrent() {
    assert_eq!(auto_piece_length(1), 16 * 1024);
    assert_eq!(auto_piece_length(2_684_355), 16 * 1024);
    assert_eq!(auto_piece_length(2_684_356), 32 * 1024);
    assert_eq!(auto_piece_length(687_194_767), 256 * 1024);
    assert_eq!(auto_piece_length(1 << 30), 512 * 1024);
    assert_eq!(auto_piece_length(4 << 30), 1 << 20);
    assert_eq!(auto_piece_length(u64::MAX), 16 << 20);
}

#[test]
fn piece_length_rules() {
    for v in [V2, Hybrid] {
        assert!(check_piece_length(16 * 1024, v).is_ok());
        assert!(check_piece_length(1 << 28, v).is_ok());
        assert!(check_piece_length(8 * 1024, v).is_err());
        assert!(check_piece_length(48 * 1024, v).is_err());
        assert!(check_piece_length(1 << 29, v).is_err());
    }
    assert!(check_piece_length(48 * 1024, V1).is_ok());
    assert!(check_piece_length(1024, V1).is_ok());
    assert!(check_piece_length(1000, V1).is_err());
    assert!(check_piece_length(0, V1).is_err());
}

#[test]
fn hybrid_folder_has_pad_files_between_files_only() {
    let pl = 32 * 1024;
    let (built, contents) = build(
        "tree",
        &[
            ("b/two", 40_000),
            ("a", 100),
            ("b/empty", 0),
            ("c", 70_000),
            ("d", 5),
            ("z-empty", 0),
        ],
        false,
        pl,
        Hybrid,
    );
    let m = &built.metainfo;
    assert_eq!(m.info.version, Hybrid);
    let layout: Vec<(String, u64, bool)> = m
        .info
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.length, f.attr.pad))
        .collect();
    let want = [
        ("a", 100, false),
        (".pad/32668", 32_668, true),
        ("b/empty", 0, false),
        ("b/two", 40_000, false),
        (".pad/25536", 25_536, true),
        ("c", 70_000, false),
        (".pad/28304", 28_304, true),
        ("d", 5, false),
        ("z-empty", 0, false),
    ];
    let want: Vec<(String, u64, bool)> = want
        .iter()
        .map(|(p, l, pad)| (p.to_string(), *l, *pad))
        .collect();
    assert_eq!(layout, want);
    assert_eq!(m.info.content_length(), 110_105);
    check_hashes(&built, &contents);
    assert!(built.magnet.starts_with(&format!(
        "magnet:?xt=urn:btih:{}&xt=urn:btmh:1220{}&dn=tree&tr=http%3A%2F%2Ft%2Fa&tr=udp%3A%2F%2Fu%3A1",
        m.info_hash,
        m.info_hash_v2.unwrap()
    )));
    assert_eq!(m.announce.as_deref(), Some("http://t/a"));
    assert_eq!(m.announce_list.len(), 2);
}

#[test]
fn every_version_and_shape_parses_back_with_the_right_hashes() {
    let pl = 16 * 1024;
    for version in [V1, V2, Hybrid] {
        let (built, contents) = build("one.bin", &[("one.bin", 100_000)], true, pl, version);
        let m = &built.metainfo;
        assert!(!m.info.multi_file);
        // Only a v2-only torrent pads its last file (as libtorrent lays it out).
        assert_eq!(
            m.info.files.len(),
            if version == V2 { 2 } else { 1 },
            "{version:?}: pads of a single file"
        );
        assert_eq!(m.info.version, version);
        check_hashes(&built, &contents);

        let (built, contents) = build(
            "dir",
            &[("x/1", 16_384), ("x/2", 1), ("y", 50_000), ("zero", 0)],
            false,
            pl,
            version,
        );
        assert!(built.metainfo.info.multi_file);
        assert_eq!(built.metainfo.info.content_length(), 66_385);
        check_hashes(&built, &contents);
        match version {
            V1 => {
                assert!(built.magnet.starts_with("magnet:?xt=urn:btih:"));
                assert!(!built.magnet.contains("btmh"));
                assert!(built.metainfo.info.files.iter().all(|f| !f.attr.pad));
            }
            V2 => {
                assert!(built.magnet.starts_with("magnet:?xt=urn:btmh:1220"));
                assert_eq!(
                    built.metainfo.info_hash,
                    built.metainfo.info_hash_v2.unwrap().truncated()
                );
                assert!(built.metainfo.info.pieces.is_empty());
            }
            Hybrid => assert!(built.magnet.contains("btih") && built.magnet.contains("btmh")),
        }
    }
}

#[test]
fn piece_parts_cover_files_and_pads() {
    let plan = Plan::new(
        "t",
        vec![src("a", 10), src("b", 20)],
        false,
        Some(16 * 1024),
        Hybrid,
    )
    .unwrap();
    assert_eq!(plan.piece_count(), 2);
    assert_eq!(
        plan.piece_parts(0),
        [
            PiecePart::File {
                file: 0,
                offset: 0,
                len: 10
            },
            PiecePart::Zeros(16_374)
        ]
    );
    assert_eq!(
        plan.piece_parts(1),
        [PiecePart::File {
            file: 2,
            offset: 0,
            len: 20
        }]
    );
    assert!(plan.piece_parts(2).is_empty());
    // v1 pieces cross files.
    let plan = Plan::new("t", vec![src("a", 10), src("b", 20)], false, Some(16), V1).unwrap();
    assert_eq!(
        plan.piece_parts(0),
        [
            PiecePart::File {
                file: 0,
                offset: 0,
                len: 10
            },
            PiecePart::File {
                file: 1,
                offset: 0,
                len: 6
            }
        ]
    );
}

#[test]
fn executable_files_carry_attr_x() {
    let mut f = src("run.sh", 3);
    f.executable = true;
    for (single, name) in [(true, "run.sh"), (false, "dir")] {
        let files = if single {
            vec![f.clone()]
        } else {
            vec![f.clone(), src("b", 1)]
        };
        let plan = Plan::new(name, files, single, None, Hybrid).unwrap();
        let mut contents = BTreeMap::new();
        contents.insert("run.sh".to_string(), data(3, 0));
        contents.insert("b".to_string(), data(1, 1));
        let built = plan
            .finish(&hash_all(&plan, &contents), &TorrentOptions::default())
            .unwrap();
        let run = built
            .metainfo
            .info
            .files
            .iter()
            .find(|e| e.path == ["run.sh"])
            .unwrap();
        assert!(run.attr.executable, "single: {single}");
    }
}

#[test]
fn options_end_up_in_the_torrent() {
    let plan = Plan::new("f", vec![src("f", 5)], true, None, V1).unwrap();
    let mut contents = BTreeMap::new();
    contents.insert("f".to_string(), data(5, 0));
    let hashes = hash_all(&plan, &contents);
    let plain = plan.finish(&hashes, &TorrentOptions::default()).unwrap();
    let opts = TorrentOptions {
        trackers: vec!["http://t/".into()],
        web_seeds: vec!["http://w/".into()],
        private: true,
        comment: Some("c".into()),
        source: Some("s".into()),
        creation_date: Some(1_700_000_000),
        created_by: Some("bitrush".into()),
    };
    let built = plan.finish(&hashes, &opts).unwrap();
    let text = String::from_utf8_lossy(&built.bytes);
    for needle in [
        "7:privatei1e",
        "6:source1:s",
        "7:comment1:c",
        "13:creation datei1700000000e",
        "8:url-list9:http://w/",
        "8:announce9:http://t/",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    assert!(!text.contains("announce-list"));
    // `source` and `private` live in the info dictionary: the hash changes.
    assert_ne!(built.metainfo.info_hash, plain.metainfo.info_hash);
    let two = TorrentOptions {
        web_seeds: vec!["http://a/".into(), "http://b/".into()],
        ..TorrentOptions::default()
    };
    let text = String::from_utf8_lossy(&plan.finish(&hashes, &two).unwrap().bytes).into_owned();
    assert!(text.contains("8:url-listl9:http://a/9:http://b/e"));
}

#[test]
fn bad_plans_are_refused() {
    let e = |r: Result<Plan, BuildError>| r.unwrap_err().to_string();
    assert!(e(Plan::new("t", vec![src("a", 0)], false, None, Hybrid)).contains("no data"));
    assert!(e(Plan::new("t", vec![], false, None, V1)).contains("no data"));
    assert!(e(Plan::new(
        "t",
        vec![src("a", 1), src("a/b", 1)],
        false,
        None,
        V1
    ))
    .contains("both a file and the path"));
    assert!(e(Plan::new(
        "t",
        vec![src("a", 1), src("a", 1)],
        false,
        None,
        V1
    ))
    .contains("both a file and the path"));
    assert!(e(Plan::new("x", vec![src("y", 1)], true, None, V1)).contains("single-file"));
    assert!(
        e(Plan::new("t", vec![src("a", 1)], false, Some(1000), Hybrid)).contains("piece length")
    );
    assert!(e(Plan::new("", vec![src("a", 1)], false, None, V1)).contains("name"));
    let plan = Plan::new("t", vec![src("a", 1)], false, None, V1).unwrap();
    assert!(plan.finish(&[], &TorrentOptions::default()).is_err());
    assert!(plan
        .finish(&[PieceHashes::default()], &TorrentOptions::default())
        .is_err());
}

#[test]
fn hasher_accepts_any_chunking() {
    let bytes = data(100_000, 3);
    let width = merkle::piece_width(100_000, 1 << 17);
    let mut whole = PieceHasher::new(true, Some(width));
    whole.update(&bytes);
    let whole = whole.finish();
    for step in [1usize, 7, 16_383, 16_385, 65_536] {
        let mut h = PieceHasher::new(true, Some(width));
        for chunk in bytes.chunks(step) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), whole, "step {step}");
    }
    assert_eq!(whole.v1, Some(Sha1::digest(&bytes).into()));
    assert_eq!(whole.v2, Some(merkle::piece_root(&bytes, width)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn built_torrents_always_parse_back(
        lengths in proptest::collection::vec(prop_oneof![Just(0u64), 1u64..40_000, Just(16_384u64)], 1..6),
        shift in 0u32..3,
        version in prop::sample::select(vec![V1, V2, Hybrid]),
    ) {
        prop_assume!(lengths.iter().sum::<u64>() > 0);
        let names: Vec<String> = (0..lengths.len()).map(|i| format!("d{}/f{i}", i % 2)).collect();
        let files: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(lengths.iter().copied()).collect();
        let (built, contents) = build("p", &files, false, (16 * 1024) << shift, version);
        check_hashes(&built, &contents);
        prop_assert_eq!(built.metainfo.info.content_length(), lengths.iter().sum::<u64>());
    }
}
