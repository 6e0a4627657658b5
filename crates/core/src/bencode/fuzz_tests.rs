//! Fuzz-style property tests of the bencode decoder: arbitrary bytes, bencode-ish token soup and
//! mutated valid encodings must never panic, and whatever decodes must agree with `decode_prefix`,
//! `raw_dict_value`, the canonical encoder and the JSON renderer. Inputs that once broke something
//! (and hand-picked edge cases) live in `corpus/bencode/` and are replayed by
//! [`corpus_replays_cleanly`].
//!
//! Run longer with e.g. `PROPTEST_CASES=100000 cargo test --release --lib bencode::fuzz_tests`.

use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

/// Every property that must hold for any input.
fn check(input: &[u8]) {
    let full = decode(input);
    let prefix = decode_prefix(input);
    match (&full, &prefix) {
        (Ok(v), Ok((pv, used))) => {
            assert_eq!(*used, input.len(), "decode accepted trailing bytes");
            assert_eq!(v, pv);
        }
        (Ok(_), Err(e)) => panic!("decode succeeded but decode_prefix failed: {e}"),
        (Err(_), Ok((pv, used))) => {
            assert!(
                *used < input.len(),
                "prefix used all input but decode failed"
            );
            assert_eq!(decode(&input[..*used]).as_ref(), Ok(pv));
        }
        (Err(_), Err(_)) => {}
    }
    if let Err(BencodeError::Invalid { offset, .. }) = &full {
        assert!(
            *offset <= input.len(),
            "error offset {offset} past the input"
        );
    }
    if let Ok(v) = &full {
        let enc = encode(v);
        assert_eq!(
            decode(&enc).as_ref(),
            Ok(v),
            "canonical encoding does not round-trip"
        );
        assert_eq!(
            enc.len(),
            input.len(),
            "canonical form differs in length from a strict input"
        );
        let json = to_json(v);
        assert!(!json.contains('\n'));
        if let Value::Dict(d) = v {
            for (k, val) in d {
                let raw = raw_dict_value(input, k)
                    .expect("raw_dict_value rejects a dict that decodes")
                    .expect("raw_dict_value misses a key");
                assert_eq!(decode(raw).as_ref(), Ok(val), "raw value differs");
            }
            assert!(matches!(
                raw_dict_value(input, b"\xff no such key"),
                Ok(None)
            ));
        }
    }
    // Never panics, whatever the input.
    let raw = raw_dict_value(input, b"info");
    if matches!(full, Ok(Value::Dict(_))) {
        assert!(raw.is_ok());
    }
}

/// Applies `edits` (position, kind, byte) to `data`: flip, overwrite, insert, delete, duplicate
/// a span, or truncate.
pub(crate) fn mutate(data: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (pos, kind, byte) in edits {
        let at = pos.index(data.len() + 1);
        match kind % 6 {
            0 if at < data.len() => data[at] ^= 1 << (byte % 8),
            1 if at < data.len() => data[at] = *byte,
            2 => data.insert(at, *byte),
            3 if at < data.len() => {
                data.remove(at);
            }
            4 => {
                let end = (at + usize::from(*byte) % 16).min(data.len());
                let span = data[at..end].to_vec();
                data.splice(at..at, span);
            }
            5 => data.truncate(at),
            _ => {}
        }
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (-20i64..20).prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                inner,
                0..8
            )
            .prop_map(Value::Dict),
        ]
    })
}

/// Bytes drawn mostly from bencode's own alphabet, so the decoder gets deep into its states.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"ilde:-0123456789".to_vec()),
            1 => any::<u8>(),
        ],
        0..400,
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&input);
    }

    #[test]
    fn bencode_token_soup(input in token_soup()) {
        check(&input);
    }

    #[test]
    fn mutated_valid_encodings(
        v in arb_value(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        let mut input = encode(&v);
        check(&input);
        mutate(&mut input, &edits);
        check(&input);
    }

    #[test]
    fn nesting_around_the_limit(depth in 0usize..(MAX_DEPTH + 40), dict_every in 0usize..5, inner in 0u8..3) {
        let mut input = Vec::new();
        for level in 0..depth {
            if dict_every > 0 && level % dict_every == 0 {
                input.extend_from_slice(b"d1:k");
            } else {
                input.push(b'l');
            }
        }
        match inner {
            0 => input.extend_from_slice(b"i-7e"),
            1 => input.extend_from_slice(b"3:abc"),
            _ => input.extend_from_slice(b"le"),
        }
        input.extend(std::iter::repeat_n(b'e', depth));
        check(&input);
        let extra = usize::from(inner == 2);
        prop_assert_eq!(decode(&input).is_ok(), depth + extra <= MAX_DEPTH);
    }
}

/// Files of a corpus directory under `corpus/`, sorted; panics if there are none.
pub(crate) fn corpus(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", root.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", root.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read corpus file");
            (p, bytes)
        })
        .collect()
}

/// Replays corpus `dir`: `check` must not panic on any file, files named `ok-*` must be
/// accepted by `accepts` and files named `bad-*` refused.
pub(crate) fn replay_corpus(dir: &str, check: impl Fn(&[u8]), accepts: impl Fn(&[u8]) -> bool) {
    for (path, bytes) in corpus(dir) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        assert!(
            outcome.is_ok(),
            "corpus file {} breaks a property",
            path.display()
        );
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("ok-") {
            assert!(accepts(&bytes), "{} should be accepted", path.display());
        } else if name.starts_with("bad-") {
            assert!(!accepts(&bytes), "{} should be refused", path.display());
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    replay_corpus("bencode", check, |b| decode(b).is_ok());
}
