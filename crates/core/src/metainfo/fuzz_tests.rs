//! Fuzz-style property tests of `.torrent` and magnet parsing: arbitrary bytes and mutated valid
//! torrents never panic, and every torrent that parses satisfies the invariants the rest of the
//! client relies on (see the module docs of `metainfo`). Generated valid torrents must parse.
//! Interesting inputs live in `corpus/metainfo/` (and `corpus/magnet/`) and are
//! replayed by [`corpus_replays_cleanly`].
//!
//! Run longer with e.g. `PROPTEST_CASES=100000 cargo test --release --lib metainfo::fuzz_tests`.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use sha1::{Digest, Sha1};

use super::build::{PiecePart, Plan, SourceFile, TorrentOptions};
use super::*;
use crate::bencode::fuzz_tests::{mutate, replay_corpus};
use crate::bencode::{self, Value};

/// The invariants of a parsed torrent (see `torrent.rs`).
fn check_parsed(m: &Metainfo) {
    let info = &m.info;
    assert!((1..=MAX_PIECE_LENGTH).contains(&info.piece_length));
    assert!(info.total_length > 0 && info.total_length <= MAX_TOTAL_LENGTH);
    let needed = info.total_length.div_ceil(u64::from(info.piece_length));
    assert_eq!(u64::from(info.piece_count()), needed);
    if info.version.has_v1() {
        assert_eq!(info.pieces.len() as u64, needed);
    } else {
        assert!(info.pieces.is_empty());
    }
    assert!(!info.files.is_empty());
    assert_ne!(info.original_name.as_deref(), Some(info.name.as_bytes()));
    let mut offset = 0u64;
    let mut seen = HashSet::new();
    let mut dirs = HashSet::new();
    for f in &info.files {
        assert_eq!(f.offset, offset, "file offsets are not cumulative");
        offset += f.length;
        assert!(!f.path.is_empty());
        for c in f.path.iter().chain(std::iter::once(&info.name)) {
            assert_eq!(
                names::sanitize_component(c.as_bytes()).as_ref(),
                Some(c),
                "unsafe component {c:?}"
            );
        }
        if let Some(original) = &f.original_path {
            let same = original.len() == f.path.len()
                && original
                    .iter()
                    .zip(&f.path)
                    .all(|(o, p)| o[..] == *p.as_bytes());
            assert!(!same, "a copy of an unchanged path {:?}", f.path);
        }
        if f.symlink.is_some() {
            assert_eq!(f.length, 0);
        }
        if f.attr.pad {
            continue;
        }
        let key = f.path.join("/").to_ascii_lowercase();
        assert!(seen.insert(key), "duplicate path {:?}", f.path);
        for depth in 1..f.path.len() {
            dirs.insert(f.path[..depth].join("/").to_ascii_lowercase());
        }
        if info.version.has_v2() && f.length > 0 && f.symlink.is_none() {
            assert!(f.pieces_root.is_some(), "{:?} has no pieces root", f.path);
            assert_eq!(
                f.offset % u64::from(info.piece_length),
                0,
                "v2 file off a piece"
            );
        }
    }
    assert!(seen.is_disjoint(&dirs), "a file is also a directory");
    assert_eq!(offset, info.total_length);
    if !info.multi_file {
        assert_eq!(info.real_files().count(), 1);
    }
    let sum: u64 = (0..info.piece_count())
        .map(|i| u64::from(info.piece_len(i)))
        .sum();
    assert_eq!(sum, info.total_length, "piece lengths do not add up");
    assert_eq!(info.piece_len(info.piece_count()), 0);
    let sha1: [u8; 20] = Sha1::digest(&m.info_bytes).into();
    let sha256: [u8; 32] = sha2::Sha256::digest(&m.info_bytes).into();
    match info.version {
        MetaVersion::V1 => {
            assert_eq!(m.info_hash.0, sha1);
            assert_eq!(m.info_hash_v2, None);
        }
        MetaVersion::Hybrid => {
            assert_eq!(m.info_hash.0, sha1);
            assert_eq!(m.info_hash_v2.map(|h| h.0), Some(sha256));
        }
        MetaVersion::V2 => {
            assert_eq!(m.info_hash_v2.map(|h| h.0), Some(sha256));
            assert_eq!(m.info_hash.0[..], sha256[..20]);
            assert!(info.piece_length.is_power_of_two() && info.piece_length >= 16 * 1024);
        }
    }
    for (&index, layer) in &m.piece_layers {
        let f = &info.files[index];
        assert_eq!(
            layer.len() as u64,
            f.length.div_ceil(u64::from(info.piece_length))
        );
        let per = crate::merkle::blocks_per_piece(info.piece_length);
        assert_eq!(
            Some(crate::merkle::root_from_piece_layer(layer, per)),
            f.pieces_root
        );
    }
    let again = Info::from_bytes(&m.info_bytes).expect("info bytes re-parse");
    assert_eq!(&again, info);
    for tier in m.tracker_tiers() {
        assert!(!tier.is_empty());
        assert!(tier.iter().all(|u| !u.is_empty() && u.trim() == u));
    }
}

fn check(input: &[u8]) {
    if let Ok(m) = Metainfo::from_bytes(input) {
        check_parsed(&m);
        // A torrent that parses starts with valid bencode whose `info` is a dictionary.
        assert!(matches!(
            bencode::decode_prefix(input),
            Ok((Value::Dict(_), _))
        ));
    }
    if let Ok(info) = Info::from_bytes(input) {
        assert!(info.total_length > 0);
        if info.version.has_v1() {
            assert_eq!(info.pieces.len() as u32, info.piece_count());
        }
    }
}

fn check_magnet(link: &str) {
    if let Ok(m) = Magnet::parse(link) {
        assert!(m.trackers.iter().all(|t| !t.is_empty()));
        assert!(m.peers.iter().all(|p| p.port() != 0));
    }
}

fn b(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// A torrent: name, piece length, files (path components, length), trackers. When `hostile` is
/// false the names are safe and unique, so it must parse.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    piece_length: u32,
    files: Vec<(Vec<String>, u64)>,
    single: bool,
    announce: Option<String>,
    tiers: Vec<Vec<String>>,
}

/// Starts with `f`, so it is never a reserved Windows device name.
fn safe_name() -> impl Strategy<Value = String> {
    "f[a-z0-9_]{0,5}(\\.[a-z]{1,3})?"
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => safe_name(),
        1 => prop::sample::select(vec![
            "", ".", "..", "a/b", "a\\b", "nul\0", "C:", "c:x", "CON", "lpt1.txt", "aux ", "é",
            "..."
        ])
        .prop_map(String::from),
    ]
}

fn spec(hostile: bool) -> impl Strategy<Value = Spec> {
    let name = if hostile {
        any_name().boxed()
    } else {
        safe_name().boxed()
    };
    let component = if hostile {
        any_name().boxed()
    } else {
        safe_name().boxed()
    };
    let files = proptest::collection::vec(
        (
            proptest::collection::vec(component, 1..4),
            prop_oneof![0u64..3, 0u64..70_000, Just(16_384u64), Just(32_768u64)],
        ),
        1..6,
    );
    let piece_length = prop_oneof![
        Just(1u32),
        Just(1000u32),
        Just(16_384u32),
        Just(32_768u32),
        Just(1u32 << 18),
        1u32..100_000,
    ];
    let url = "(http|udp)://127\\.0\\.0\\.1:[0-9]{1,5}/announce";
    (
        name,
        piece_length,
        files,
        any::<bool>(),
        proptest::option::of(url),
        proptest::collection::vec(proptest::collection::vec(url, 0..3), 0..3),
    )
        .prop_map(|(name, piece_length, mut files, single, announce, tiers)| {
            if single {
                files.truncate(1);
            }
            // At most 5,000 pieces, so a case stays fast.
            let total: u64 = files.iter().map(|f| f.1).sum();
            let piece_length = piece_length.max(total.div_ceil(5_000) as u32);
            Spec {
                name,
                piece_length,
                files,
                single,
                announce,
                tiers,
            }
        })
}

impl Spec {
    fn total(&self) -> u64 {
        self.files.iter().map(|f| f.1).sum()
    }

    /// Whether the spec describes a torrent the parser must accept: any with data (names
    /// are sanitised and clashes renamed, never refused).
    fn acceptable(&self) -> bool {
        self.total() > 0
    }

    fn encode(&self, hash_seed: u8) -> Vec<u8> {
        let count = self.total().div_ceil(u64::from(self.piece_length));
        let pieces: Vec<u8> = (0..count * 20)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(hash_seed))
            .collect();
        let mut info = vec![
            ("name", b(&self.name)),
            ("piece length", Value::Int(i64::from(self.piece_length))),
            ("pieces", Value::Bytes(pieces)),
        ];
        if self.single {
            info.push(("length", Value::Int(self.files[0].1 as i64)));
        } else {
            let files = self
                .files
                .iter()
                .map(|(path, len)| {
                    dict(vec![
                        ("length", Value::Int(*len as i64)),
                        ("path", Value::List(path.iter().map(|c| b(c)).collect())),
                    ])
                })
                .collect();
            info.push(("files", Value::List(files)));
        }
        let mut top = vec![("info", dict(info))];
        if let Some(a) = &self.announce {
            top.push(("announce", b(a)));
        }
        if !self.tiers.is_empty() {
            let tiers = self
                .tiers
                .iter()
                .map(|t| Value::List(t.iter().map(|u| b(u)).collect()))
                .collect();
            top.push(("announce-list", Value::List(tiers)));
        }
        bencode::encode(&dict(top))
    }
}

/// A v2 or hybrid torrent from the builder, with made-up hashes (nothing checks piece data).
fn built(version: MetaVersion, lengths: &[u64], shift: u32, seed: u8) -> Option<Vec<u8>> {
    let files = lengths
        .iter()
        .enumerate()
        .map(|(i, &length)| SourceFile {
            path: vec![format!("d{}", i % 3), format!("f{i}")],
            length,
            executable: i % 2 == 0,
        })
        .collect();
    let plan = Plan::new("t", files, false, Some((16 * 1024) << shift), version).ok()?;
    let hashes: Vec<_> = (0..plan.piece_count())
        .map(|i| {
            let mut h = plan.piece_hasher(i);
            h.update(&[seed, i as u8]);
            for part in plan.piece_parts(i) {
                if let PiecePart::Zeros(n) = part {
                    h.zeros(n);
                }
            }
            h.finish()
        })
        .collect();
    let opts = TorrentOptions {
        trackers: vec![" http://t/a ".into()],
        ..TorrentOptions::default()
    };
    Some(plan.finish(&hashes, &opts).ok()?.bytes)
}

proptest! {
    #[test]
    fn built_v2_torrents_survive_mutation(
        version in prop::sample::select(vec![MetaVersion::V2, MetaVersion::Hybrid]),
        lengths in proptest::collection::vec(prop_oneof![Just(0u64), 1u64..70_000], 1..5),
        shift in 0u32..2,
        seed in any::<u8>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..4),
    ) {
        let Some(mut bytes) = built(version, &lengths, shift, seed) else {
            return Ok(());
        };
        let m = Metainfo::from_bytes(&bytes).expect("a built torrent parses");
        check_parsed(&m);
        prop_assert_eq!(m.info.version, version);
        mutate(&mut bytes, &edits);
        check(&bytes);
    }

    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&input);
    }

    #[test]
    fn generated_torrents_parse_with_their_invariants(s in spec(false), seed in any::<u8>()) {
        let bytes = s.encode(seed);
        let parsed = Metainfo::from_bytes(&bytes);
        if s.acceptable() {
            let m = parsed.expect("a valid torrent is rejected");
            check_parsed(&m);
            prop_assert_eq!(m.info.total_length, s.total());
            prop_assert_eq!(m.info.multi_file, !s.single);
            prop_assert_eq!(m.info.files.len(), s.files.len());
        } else {
            prop_assert!(parsed.is_err(), "an invalid torrent is accepted: {:?}", s);
        }
    }

    #[test]
    fn mutated_torrents(
        s in spec(true),
        seed in any::<u8>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..5),
    ) {
        let mut bytes = s.encode(seed);
        check(&bytes);
        mutate(&mut bytes, &edits);
        check(&bytes);
    }

    #[test]
    fn arbitrary_magnet_links(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("magnet:?".to_string()),
                Just("xt=urn:btih:".to_string()),
                Just("&".to_string()),
                Just("=".to_string()),
                Just("%".to_string()),
                Just("tr=".to_string()),
                Just("dn=".to_string()),
                Just("x.pe=".to_string()),
                "[0-9a-fA-F]{0,40}",
                "[A-Z2-7]{32}",
                "%[0-9a-fA-F]{0,2}",
                "[0-9.:\\[\\]]{0,24}",
                any::<String>(),
            ],
            0..12,
        ),
    ) {
        check_magnet(&parts.concat());
    }
}

/// A magnet corpus file as a link (one line of text).
fn corpus_link(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\n')
        .to_string()
}

#[test]
fn corpus_replays_cleanly() {
    replay_corpus("metainfo", check, |b| Metainfo::from_bytes(b).is_ok());
    replay_corpus(
        "magnet",
        |b| check_magnet(&corpus_link(b)),
        |b| Magnet::parse(&corpus_link(b)).is_ok(),
    );
}
