//! Tests for v2 and hybrid metadata: valid torrents come from [`super::super::build`], hostile
//! ones are those with one part changed.

use std::collections::BTreeMap;

use super::super::build::{PiecePart, Plan, TorrentOptions};
use super::super::{MetaVersion, Metainfo, SymlinkTarget};
use crate::bencode::{decode, encode, Value};
use crate::merkle;

const PL: u32 = 16 * 1024;

fn bytes_of(path: &str, len: u64) -> Vec<u8> {
    let seed = path.len() as u8;
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// A valid torrent of `files` (path, length) made by the builder.
fn made(files: &[(&str, u64)], single: bool, version: MetaVersion) -> Vec<u8> {
    let sources = crate::testing::source_files(files);
    let name = if single { files[0].0 } else { "root" };
    let plan = Plan::new(name, sources, single, Some(PL), version).unwrap();
    let hashes: Vec<_> = (0..plan.piece_count())
        .map(|i| {
            let mut h = plan.piece_hasher(i);
            for part in plan.piece_parts(i) {
                match part {
                    PiecePart::File { file, offset, len } => {
                        let f = &plan.files()[file];
                        let all = bytes_of(&f.path.join("/"), f.length);
                        h.update(&all[offset as usize..(offset + len) as usize]);
                    }
                    PiecePart::Zeros(n) => h.zeros(n),
                }
            }
            h.finish()
        })
        .collect();
    plan.finish(&hashes, &TorrentOptions::default())
        .unwrap()
        .bytes
}

type Dict = BTreeMap<Vec<u8>, Value>;

/// Decodes `torrent`, lets `edit` change its top-level dictionary and its info dictionary,
/// and encodes it again.
fn edited(torrent: &[u8], edit: impl FnOnce(&mut Dict, &mut Dict)) -> Vec<u8> {
    let Ok(Value::Dict(mut top)) = decode(torrent) else {
        panic!("not a torrent")
    };
    let Some(Value::Dict(mut info)) = top.remove(&b"info"[..]) else {
        panic!("no info")
    };
    edit(&mut top, &mut info);
    top.insert(b"info".to_vec(), Value::Dict(info));
    encode(&Value::Dict(top))
}

fn err(bytes: &[u8]) -> String {
    match Metainfo::from_bytes(bytes) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e.to_string(),
    }
}

fn b(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn d(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

/// A file-tree leaf of `length` bytes with a made-up root.
fn leaf(length: i64) -> Value {
    let mut props = vec![("length", Value::Int(length))];
    if length > 0 {
        props.push(("pieces root", Value::Bytes(vec![9; 32])));
    }
    d(vec![("", d(props))])
}

/// A v2-only info dictionary around `tree`.
fn v2_torrent(tree: Value) -> Vec<u8> {
    encode(&d(vec![(
        "info",
        d(vec![
            ("file tree", tree),
            ("meta version", Value::Int(2)),
            ("name", b("n")),
            ("piece length", Value::Int(i64::from(PL))),
        ]),
    )]))
}

#[test]
fn v2_only_torrents_parse() {
    let m = Metainfo::from_bytes(&made(
        &[("a", 40_000), ("d/b", 10), ("d/e", 0), ("z", 1)],
        false,
        MetaVersion::V2,
    ))
    .unwrap();
    assert_eq!(m.info.version, MetaVersion::V2);
    assert!(m.info.multi_file && m.info.pieces.is_empty());
    assert_eq!(m.info_hash, m.info_hash_v2.unwrap().truncated());
    assert_eq!(m.info_hash_v1(), None);
    let layout: Vec<(String, u64, u64, bool)> = m
        .info
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.offset, f.length, f.attr.pad))
        .collect();
    let want: Vec<(String, u64, u64, bool)> = [
        ("a", 0, 40_000, false),
        (".pad/9152", 40_000, 9152, true),
        ("d/b", 49_152, 10, false),
        (".pad/16374", 49_162, 16_374, true),
        ("d/e", 65_536, 0, false),
        ("z", 65_536, 1, false),
        (".pad/16383", 65_537, 16_383, true),
    ]
    .iter()
    .map(|(p, o, l, pad)| (p.to_string(), *o, *l, *pad))
    .collect();
    assert_eq!(layout, want);
    assert_eq!(m.info.piece_count(), 5);
    // The last piece is whole: libtorrent's peers ask for its padding too.
    assert_eq!(m.info.piece_len(4), 16_384);
    assert_eq!(m.info.content_length(), 40_011);
    // The 3-piece file has its layer; the small ones use their root.
    assert_eq!(m.piece_hashes_v2(0).map(<[_]>::len), Some(3));
    assert_eq!(
        m.piece_hashes_v2(2),
        m.info.files[2]
            .pieces_root
            .as_ref()
            .map(std::slice::from_ref)
    );
    assert_eq!(m.piece_hashes_v2(1), None);
    assert_eq!(m.piece_hashes_v2(4), None);

    let single = Metainfo::from_bytes(&made(&[("s.bin", 20_000)], true, MetaVersion::V2)).unwrap();
    assert!(!single.info.multi_file);
    assert_eq!(single.info.files.len(), 2);
    assert_eq!(single.info.files[0].path, ["s.bin"]);
    assert!(single.info.files[1].attr.pad);
    assert_eq!(single.info.total_length, 32_768);
}

#[test]
fn meta_version_and_piece_length_rules() {
    let good = made(&[("a", 5)], true, MetaVersion::V2);
    for (value, want) in [
        (
            Value::Int(3),
            "info.meta version 3 is not supported (only 2 is)",
        ),
        (
            Value::Int(1),
            "info.meta version 1 is not supported (only 2 is)",
        ),
        (
            Value::Int(-1),
            "info.meta version -1 is not supported (only 2 is)",
        ),
        (b("2"), "info.meta version is not an integer"),
    ] {
        let bad = edited(&good, |_, info| {
            info.insert(b"meta version".to_vec(), value);
        });
        assert_eq!(err(&bad), want);
    }
    let no_version = edited(&good, |_, info| {
        info.remove(&b"meta version"[..]);
    });
    assert_eq!(err(&no_version), "info.file tree needs meta version 2");
    for pl in [1000, 8192, 3 * 16384] {
        let bad = edited(&good, |_, info| {
            info.insert(b"piece length".to_vec(), Value::Int(pl));
        });
        assert!(
            err(&bad).contains("not a power of two of at least 16 KiB"),
            "{pl}"
        );
    }
    let no_tree = edited(&good, |_, info| {
        info.remove(&b"file tree"[..]);
    });
    assert_eq!(err(&no_tree), "info.file tree is missing");
}

#[test]
fn hostile_file_trees_are_refused_clearly() {
    let cases: Vec<(Value, &str)> = vec![
        (b("x"), "info.file tree is not a dictionary"),
        (d(vec![]), "info.file tree has no files"),
        (
            d(vec![("a", Value::Int(1))]),
            "info.file tree \"a\" is not a dictionary",
        ),
        (
            d(vec![("a", d(vec![("", leaf(1)), ("b", leaf(1))]))]),
            "info.file tree \"a/\" has an empty name",
        ),
        (
            d(vec![("a", d(vec![("", b("x"))]))]),
            "info.file tree \"a\" has properties that are not a dictionary",
        ),
        (
            d(vec![(
                "a",
                d(vec![("", d(vec![("length", Value::Int(-1))]))]),
            )]),
            "info.file tree \"a\".length -1 is negative",
        ),
        (
            d(vec![(
                "a",
                d(vec![("", d(vec![("length", Value::Int(5))]))]),
            )]),
            "info.file tree \"a\" has no pieces root",
        ),
        (
            d(vec![(
                "a",
                d(vec![(
                    "",
                    d(vec![("length", Value::Int(5)), ("pieces root", b("short"))]),
                )]),
            )]),
            "info.file tree \"a\".pieces root is 5 bytes, not 32",
        ),
        (
            d(vec![(
                "a",
                d(vec![(
                    "",
                    d(vec![
                        ("length", Value::Int(5)),
                        ("pieces root", Value::Bytes(vec![0; 32])),
                    ]),
                )]),
            )]),
            "info.file tree \"a\".pieces root is all zeros",
        ),
        (
            d(vec![(
                "a",
                d(vec![(
                    "",
                    d(vec![
                        ("attr", b("p")),
                        ("length", Value::Int(5)),
                        ("pieces root", Value::Bytes(vec![1; 32])),
                    ]),
                )]),
            )]),
            "info.file tree \"a\" is a pad file, which a file tree cannot hold",
        ),
        (
            d(vec![("a", leaf(1)), ("b", leaf(1 << 50))]),
            "info total length exceeds 2^50 bytes (1125899906842624)",
        ),
    ];
    for (tree, want) in cases {
        assert_eq!(err(&v2_torrent(tree)), want);
    }
}

#[test]
fn nesting_is_bounded() {
    let nest = |depth: usize| {
        let mut node = d(vec![("f", leaf(1))]);
        for _ in 0..depth {
            node = d(vec![("d", node)]);
        }
        v2_torrent(node)
    };
    let ok = Metainfo::from_bytes(&nest(super::MAX_TREE_DEPTH)).unwrap();
    assert_eq!(ok.info.files[0].path.len(), super::MAX_TREE_DEPTH + 1);
    assert_eq!(
        err(&nest(super::MAX_TREE_DEPTH + 1)),
        "info.file tree is nested deeper than 100 directories"
    );
    // Deeper still hits the bencode decoder's own bound first: still an error, no overflow.
    assert!(err(&nest(600)).starts_with("invalid bencode"));
}

#[test]
fn unsafe_tree_names_are_sanitised_and_collisions_renamed() {
    let tree = d(vec![
        ("..", d(vec![("..", d(vec![("etc", leaf(1))]))])),
        ("a/b", leaf(1)),
        ("a_b", leaf(1)),
        ("CON", leaf(1)),
        ("C:", leaf(1)),
        ("x\u{202e}gpj.exe", leaf(1)),
    ]);
    let m = Metainfo::from_bytes(&v2_torrent(tree)).unwrap();
    let paths: Vec<String> = m.info.real_files().map(|(_, f)| f.path.join("/")).collect();
    assert_eq!(paths, ["etc", "_", "CON_", "a_b", "a_b.1", "xgpj.exe"]);
    // The names as written stay beside, for web seeds; `a_b` was renamed only for the clash.
    let written: Vec<String> = m
        .info
        .real_files()
        .map(|(_, f)| {
            let parts: Vec<&[u8]> = f.path_as_written();
            String::from_utf8(parts.join(&b'/')).unwrap()
        })
        .collect();
    assert_eq!(
        written,
        ["../../etc", "C:", "CON", "a/b", "a_b", "x\u{202e}gpj.exe"]
    );
    assert!(m
        .info
        .files
        .iter()
        .filter(|f| f.attr.pad)
        .all(|f| f.original_path.is_none()));
}

#[test]
fn a_hybrid_keeps_its_v1_names_as_written() {
    let good = made(&[("a", 20_000), ("b", 5)], false, MetaVersion::Hybrid);
    // `b` becomes `nul` (a device name, still after `a` in the tree) in both halves.
    let renamed = edited(&good, |_, info| {
        if let Some(Value::List(files)) = info.get_mut(&b"files"[..]) {
            for f in files.iter_mut() {
                if let Value::Dict(f) = f {
                    if f.get(&b"path"[..]) == Some(&Value::List(vec![b("b")])) {
                        f.insert(b"path".to_vec(), Value::List(vec![b("nul")]));
                    }
                }
            }
        }
        if let Some(Value::Dict(tree)) = info.get_mut(&b"file tree"[..]) {
            let leaf = tree.remove(&b"b"[..]).unwrap();
            tree.insert(b"nul".to_vec(), leaf);
        }
    });
    let m = Metainfo::from_bytes(&renamed).unwrap();
    assert_eq!(m.info.version, MetaVersion::Hybrid);
    let nul = m
        .info
        .files
        .iter()
        .find(|f| f.path == ["nul_"])
        .expect("the renamed file");
    assert_eq!(nul.path_as_written(), [&b"nul"[..]]);
    assert!(nul.pieces_root.is_some());
}

#[test]
fn piece_layers_are_checked() {
    let good = made(
        &[("big", 5 * u64::from(PL) + 3), ("small", 100)],
        false,
        MetaVersion::V2,
    );
    let m = Metainfo::from_bytes(&good).unwrap();
    let root = m.info.files[0].pieces_root.unwrap();
    let layer = m.piece_layers[&0].concat();
    assert_eq!(layer.len(), 6 * 32);
    let with_layers = |layers: Value| {
        edited(&good, |top, _| {
            top.insert(b"piece layers".to_vec(), layers);
        })
    };
    let one =
        |key: Vec<u8>, value: Value| with_layers(Value::Dict([(key, value)].into_iter().collect()));
    assert_eq!(
        err(&with_layers(b("x"))),
        "piece layers is not a dictionary"
    );
    assert_eq!(
        err(&one(vec![1; 31], Value::Bytes(layer.clone()))),
        "piece layers has a key of 31 bytes, not a 32-byte pieces root"
    );
    assert!(err(&one(root.to_vec(), Value::Int(1))).ends_with("is not a string"));
    assert!(
        err(&one(root.to_vec(), Value::Bytes(layer[..100].to_vec())))
            .ends_with("is 100 bytes, not a multiple of 32")
    );
    assert_eq!(
        err(&one(root.to_vec(), Value::Bytes(layer[..160].to_vec()))),
        "piece layers entry of info file \"big\" has 5 hashes but the file has 6 pieces"
    );
    let mut wrong = layer.clone();
    wrong[0] ^= 1;
    assert_eq!(
        err(&one(root.to_vec(), Value::Bytes(wrong))),
        "piece layers entry of info file \"big\" does not hash to the file's pieces root"
    );
    // Missing layers are allowed (peers can send them); unknown and small-file roots ignored.
    let none = Metainfo::from_bytes(&with_layers(d(vec![]))).unwrap();
    assert!(none.piece_layers.is_empty());
    assert_eq!(none.piece_hashes_v2(0), None);
    let small_root = m.info.files[2].pieces_root.unwrap();
    let extra = with_layers(Value::Dict(
        [
            (root.to_vec(), Value::Bytes(layer.clone())),
            (vec![5; 32], Value::Bytes(vec![0; 64])),
            (small_root.to_vec(), Value::Bytes(vec![0; 32])),
        ]
        .into_iter()
        .collect(),
    ));
    assert_eq!(
        Metainfo::from_bytes(&extra).unwrap().piece_layers,
        m.piece_layers
    );
    // v1 torrents ignore piece layers entirely.
    let v1 = made(&[("f", 5)], true, MetaVersion::V1);
    let v1 = edited(&v1, |top, _| {
        top.insert(b"piece layers".to_vec(), b("junk"));
    });
    assert!(Metainfo::from_bytes(&v1).is_ok());
}

#[test]
fn hybrids_must_agree() {
    let files = [("a", 20_000), ("b", 5), ("c", 0), ("d", 40_000)];
    let good = made(&files, false, MetaVersion::Hybrid);
    let m = Metainfo::from_bytes(&good).unwrap();
    assert_eq!(m.info.version, MetaVersion::Hybrid);
    assert!(m
        .info
        .files
        .iter()
        .filter(|f| !f.attr.pad && f.length > 0)
        .all(|f| f.pieces_root.is_some()));
    let v1_files = |info: &mut Dict| -> Vec<Value> {
        match info.remove(&b"files"[..]) {
            Some(Value::List(l)) => l,
            _ => panic!("no files"),
        }
    };
    type Edit = Box<dyn Fn(&mut Vec<Value>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|l| {
                l.swap(0, 1);
            }),
            "info.files[0] \".pad/12768\" disagrees with info.file tree entry \"a\"",
        ),
        (
            Box::new(|l| {
                l.remove(1);
            }),
            "info.files and info.file tree disagree: 5 entries against 7 (pad files included)",
        ),
        (
            Box::new(|l| {
                if let Value::Dict(f) = &mut l[2] {
                    f.insert(b"path".to_vec(), Value::List(vec![b("B")]));
                }
            }),
            "info.files[2] \"B\" is \"b\" in info.file tree",
        ),
    ];
    for (edit, want) in cases {
        let bad = edited(&good, |_, info| {
            let mut l = v1_files(info);
            edit(&mut l);
            info.insert(b"files".to_vec(), Value::List(l));
        });
        assert_eq!(err(&bad), want);
    }
    // A different length in v1: the piece count or the offsets give it away.
    let longer = edited(&good, |_, info| {
        let mut l = v1_files(info);
        if let Value::Dict(f) = &mut l[0] {
            f.insert(b"length".to_vec(), Value::Int(20_001));
        }
        if let Value::Dict(f) = &mut l[1] {
            f.insert(b"length".to_vec(), Value::Int(12_767));
        }
        info.insert(b"files".to_vec(), Value::List(l));
    });
    assert_eq!(
        err(&longer),
        "info.files[0] \"a\" has length 20001 at offset 0 but 20000 at 0 in info.file tree"
    );
    // libtorrent 2.0.8 adds a pad after the last file too: accepted, same files.
    let tail = edited(&good, |_, info| {
        let mut l = v1_files(info);
        l.push(d(vec![
            ("attr", b("p")),
            ("length", Value::Int(16_384 - 40_000 % 16_384)),
            ("path", Value::List(vec![b(".pad"), b("9152")])),
        ]));
        info.insert(b"files".to_vec(), Value::List(l));
    });
    let t = Metainfo::from_bytes(&tail).unwrap();
    assert_eq!(t.info.total_length, 6 * 16_384);
    assert_eq!(t.info.files.len(), 7);
    assert_eq!(t.info.content_length(), m.info.content_length());
}

#[test]
fn v2_symlinks_and_attributes() {
    let tree = d(vec![
        (
            "link",
            d(vec![(
                "",
                d(vec![
                    ("attr", b("l")),
                    ("symlink path", Value::List(vec![b("d"), b("x")])),
                ]),
            )]),
        ),
        (
            "out",
            d(vec![(
                "",
                d(vec![
                    ("attr", b("l")),
                    ("symlink path", Value::List(vec![b(".."), b("etc")])),
                ]),
            )]),
        ),
        (
            "d",
            d(vec![(
                "x",
                d(vec![(
                    "",
                    d(vec![
                        ("attr", b("xh")),
                        ("length", Value::Int(3)),
                        ("pieces root", Value::Bytes(vec![4; 32])),
                    ]),
                )]),
            )]),
        ),
    ]);
    let m = Metainfo::from_bytes(&v2_torrent(tree)).unwrap();
    let by_path: BTreeMap<String, &super::FileEntry> =
        m.info.files.iter().map(|f| (f.path.join("/"), f)).collect();
    assert_eq!(
        by_path["link"].symlink,
        Some(SymlinkTarget::Inside(vec!["d".into(), "x".into()]))
    );
    assert_eq!(by_path["link"].length, 0);
    assert_eq!(
        by_path["out"].symlink,
        Some(SymlinkTarget::Outside("../etc".into()))
    );
    assert!(by_path["d/x"].attr.executable && by_path["d/x"].attr.hidden);
    assert_eq!(m.info.content_length(), 3);
}

#[test]
fn merkle_roots_of_made_files_match() {
    let len = 3 * u64::from(PL) + 17;
    let m = Metainfo::from_bytes(&made(&[("f", len)], true, MetaVersion::Hybrid)).unwrap();
    let leaves = merkle::block_hashes(&bytes_of("f", len));
    assert_eq!(
        m.info.files[0].pieces_root,
        Some(merkle::file_root(&leaves, PL))
    );
}
