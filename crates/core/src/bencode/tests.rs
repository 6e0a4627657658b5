use super::*;
use proptest::prelude::*;

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn dict(pairs: &[(&str, Value)]) -> Value {
    Value::Dict(
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect(),
    )
}

fn msg(input: &[u8]) -> String {
    match decode(input) {
        Ok(v) => panic!("expected an error for {input:?}, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `decode` turns each input into the paired value.
#[track_caller]
fn assert_decodes(cases: &[(&[u8], Value)]) {
    for (input, want) in cases {
        assert_eq!(
            decode(input),
            Ok(want.clone()),
            "decoding {}",
            input.escape_ascii()
        );
    }
}

/// Asserts that `error` (which must fail) reports exactly the paired message for each input.
#[track_caller]
fn assert_errors(error: impl Fn(&[u8]) -> String, cases: &[(&[u8], &str)]) {
    for &(input, want) in cases {
        assert_eq!(error(input), want, "error for {}", input.escape_ascii());
    }
}

/// Asserts that `render` turns each value into the paired output.
#[track_caller]
fn assert_renders<T>(render: impl Fn(&Value) -> T, cases: &[(Value, T)])
where
    T: PartialEq + std::fmt::Debug,
{
    for (value, want) in cases {
        assert_eq!(&render(value), want, "rendering {value:?}");
    }
}

#[test]
fn integers() {
    assert_decodes(&[
        (b"i0e", Value::Int(0)),
        (b"i42e", Value::Int(42)),
        (b"i-42e", Value::Int(-42)),
        (
            b"i9223372036854775807e",
            Value::Int(9_223_372_036_854_775_807),
        ),
        (
            b"i-9223372036854775808e",
            Value::Int(-9_223_372_036_854_775_807 - 1),
        ),
    ]);
}

#[test]
fn integer_errors() {
    assert_errors(
        msg,
        &[
            (b"i03e", "leading zero in integer at byte 1"),
            (b"i-03e", "leading zero in integer at byte 2"),
            (b"i00e", "leading zero in integer at byte 1"),
            (b"i-0e", "negative zero integer at byte 0"),
            (b"i-e", "integer has no digits at byte 2"),
            (b"ie", "integer has no digits at byte 1"),
            (b"i12", "unterminated integer (missing 'e') at byte 3"),
            (b"i", "unterminated integer (missing 'e') at byte 1"),
            (b"i1x2e", "unexpected byte 'x' in integer at byte 2"),
            (b"i+1e", "unexpected byte '+' in integer at byte 1"),
            (b"i--1e", "unexpected byte '-' in integer at byte 2"),
            (
                b"i9223372036854775808e",
                "integer does not fit in 64 bits at byte 0",
            ),
            (
                b"i-9223372036854775809e",
                "integer does not fit in 64 bits at byte 0",
            ),
        ],
    );
}

#[test]
fn byte_strings() {
    assert_decodes(&[
        (b"0:", bytes("")),
        (b"4:spam", bytes("spam")),
        (b"3:\x00\xff:", Value::Bytes(vec![0, 0xff, b':'])),
        (b"10:0123456789", bytes("0123456789")),
    ]);
}

#[test]
fn byte_string_errors() {
    assert_errors(
        msg,
        &[
            (b"03:abc", "leading zero in string length at byte 0"),
            (b"00:", "leading zero in string length at byte 0"),
            (
                b"5:abc",
                "string length 5 exceeds the 3 bytes left at byte 0",
            ),
            (
                b"99999999999999999999999999:x",
                "string length is too large at byte 0",
            ),
            // Large but representable: must be refused before any allocation is attempted.
            (
                b"18446744073709551615:x",
                "string length 18446744073709551615 exceeds the 1 bytes left at byte 0",
            ),
            (b"4spam", "unexpected byte 's' in string length at byte 1"),
            (b"4", "unterminated string length (missing ':') at byte 1"),
            (b"-1:a", "unexpected byte '-' at byte 0"),
        ],
    );
}

#[test]
fn lists_and_dicts() {
    assert_decodes(&[
        (b"le", Value::List(vec![])),
        (b"de", dict(&[])),
        (
            b"l4:spami7ee",
            Value::List(vec![bytes("spam"), Value::Int(7)]),
        ),
        (
            b"d3:cow3:moo4:spaml1:a1:bee",
            dict(&[
                ("cow", bytes("moo")),
                ("spam", Value::List(vec![bytes("a"), bytes("b")])),
            ]),
        ),
        (
            b"lld1:ai1eeee",
            Value::List(vec![Value::List(vec![dict(&[("a", Value::Int(1))])])]),
        ),
    ]);
}

#[test]
fn unsorted_keys_are_accepted_and_reencoded_sorted() {
    let v = decode(b"d1:bi1e1:ai2ee").unwrap();
    assert_eq!(v, dict(&[("a", Value::Int(2)), ("b", Value::Int(1))]));
    assert_eq!(encode(&v), b"d1:ai2e1:bi1ee".to_vec());
}

#[test]
fn container_errors() {
    assert_errors(
        msg,
        &[
            (b"d1:ai1e1:ai2ee", "duplicate dictionary key at byte 7"),
            (
                b"di1ei2ee",
                "dictionary key is not a byte string (found 'i') at byte 1",
            ),
            (b"d1:ae", "dictionary key has no value at byte 4"),
            (
                b"l1:a",
                "unexpected end of input inside a list or dictionary at byte 4",
            ),
            (
                b"d1:a",
                "unexpected end of input inside a list or dictionary at byte 4",
            ),
            (b"", "empty input at byte 0"),
            (b"e", "unexpected byte 'e' at byte 0"),
            (b"x", "unexpected byte 'x' at byte 0"),
            (b"\x00", "unexpected byte 0x00 at byte 0"),
            (b"i1ei2e", "trailing bytes after the value at byte 3"),
            (b"lei", "trailing bytes after the value at byte 2"),
        ],
    );
}

#[test]
fn depth_is_bounded_without_stack_overflow() {
    let deep = vec![b'l'; 100_000];
    assert_eq!(
        msg(&deep),
        format!("nesting deeper than {MAX_DEPTH} levels at byte {MAX_DEPTH}")
    );
    let mut balanced = vec![b'l'; 100_000];
    balanced.extend(std::iter::repeat_n(b'e', 100_000));
    assert!(decode(&balanced).is_err());
    let deep_dicts = b"d1:a".repeat(100_000);
    assert!(decode(&deep_dicts).is_err());

    // Exactly MAX_DEPTH levels is fine; one more is not.
    let mut ok = vec![b'l'; MAX_DEPTH];
    ok.extend(std::iter::repeat_n(b'e', MAX_DEPTH));
    let v = decode(&ok).unwrap();
    assert_eq!(encode(&v), ok);
    let mut too_deep = vec![b'l'; MAX_DEPTH + 1];
    too_deep.extend(std::iter::repeat_n(b'e', MAX_DEPTH + 1));
    assert!(decode(&too_deep).is_err());
}

#[test]
fn decode_prefix_reports_bytes_used() {
    assert_eq!(decode_prefix(b"i1eXYZ"), Ok((Value::Int(1), 3)));
    assert_eq!(decode_prefix(b"4:spamrest"), Ok((bytes("spam"), 6)));
    assert_eq!(
        decode_prefix(b"d1:a0:ee"),
        Ok((dict(&[("a", bytes(""))]), 7))
    );
}

#[test]
fn encode_known_values() {
    assert_renders(
        encode,
        &[
            (Value::Int(-3), b"i-3e".to_vec()),
            (Value::Int(0), b"i0e".to_vec()),
            (bytes(""), b"0:".to_vec()),
            (
                Value::List(vec![bytes("ab"), Value::Int(12)]),
                b"l2:abi12ee".to_vec(),
            ),
            (
                dict(&[("zz", Value::Int(1)), ("a", Value::List(vec![]))]),
                b"d1:ale2:zzi1ee".to_vec(),
            ),
        ],
    );
}

#[test]
fn raw_dict_value_returns_exact_slice() {
    // The info dict has unsorted keys: the raw slice must keep them as written.
    let input = b"d8:announce3:url4:infod1:bi1e1:ai2ee3:zzz0:e";
    assert_eq!(
        raw_dict_value(input, b"info"),
        Ok(Some(&b"d1:bi1e1:ai2ee"[..]))
    );
    assert_eq!(raw_dict_value(input, b"announce"), Ok(Some(&b"3:url"[..])));
    assert_eq!(raw_dict_value(input, b"zzz"), Ok(Some(&b"0:"[..])));
    assert_eq!(raw_dict_value(input, b"missing"), Ok(None));
    assert_eq!(raw_dict_value(b"de", b"info"), Ok(None));
}

#[test]
fn raw_dict_value_validates() {
    assert_errors(
        |input| raw_dict_value(input, b"info").unwrap_err().to_string(),
        &[
            (b"", "empty input at byte 0"),
            (b"li1ee", "top-level value is not a dictionary at byte 0"),
            (b"d4:infoi1eex", "trailing bytes after the value at byte 11"),
            (
                b"d4:infoi1e4:infoi2ee",
                "duplicate dictionary key at byte 10",
            ),
            (b"d1:ai03ee", "leading zero in integer at byte 5"),
            (b"d4:infoe", "dictionary key has no value at byte 7"),
            (
                b"d4:info",
                "unexpected end of input inside a list or dictionary at byte 7",
            ),
            (
                b"d4:infoi1e",
                "unexpected end of input inside a list or dictionary at byte 10",
            ),
            (
                b"di1ei2ee",
                "dictionary key is not a byte string (found 'i') at byte 1",
            ),
            // Errors inside later values are reported even after the key was found.
            (b"d4:infoi1e1:bi-0ee", "negative zero integer at byte 13"),
        ],
    );
}

#[test]
fn json_rendering() {
    assert_renders(
        to_json,
        &[
            (
                Value::List(vec![bytes("a"), Value::Int(1)]),
                r#"["a",1]"#.to_string(),
            ),
            (dict(&[("k", Value::Int(1))]), r#"{"k":1}"#.to_string()),
            (
                dict(&[("b", Value::Int(-2)), ("a", Value::List(vec![]))]),
                r#"{"a":[],"b":-2}"#.to_string(),
            ),
            (dict(&[]), "{}".to_string()),
            (bytes("q\"\\\n\u{1}é"), r#""q\"\\\n\u0001é""#.to_string()),
            (
                Value::Bytes(vec![b'a', 0xff, b'b']),
                "\"a\u{FFFD}b\"".to_string(),
            ),
        ],
    );
    let decoded = decode(b"d4:infod6:lengthi5e4:name3:abcee").unwrap();
    assert_eq!(to_json(&decoded), r#"{"info":{"length":5,"name":"abc"}}"#);
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..6),
                inner,
                0..6
            )
            .prop_map(Value::Dict),
        ]
    })
}

proptest! {
    #[test]
    fn round_trip(v in arb_value()) {
        let enc = encode(&v);
        prop_assert_eq!(decode(&enc), Ok(v.clone()));
        let json = to_json(&v);
        prop_assert!(!json.contains('\n'));
        prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{}", json);
    }

    #[test]
    fn decode_never_panics(input in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(v) = decode(&input) {
            prop_assert_eq!(decode(&encode(&v)), Ok(v));
        }
        let _ = raw_dict_value(&input, b"a");
    }

    #[test]
    fn decode_never_panics_on_bencode_like_bytes(
        input in proptest::collection::vec(
            prop_oneof![Just(b'i'), Just(b'l'), Just(b'd'), Just(b'e'), Just(b':'),
                        Just(b'-'), Just(b'0'), Just(b'1'), Just(b'2'), Just(b'a')],
            0..48,
        )
    ) {
        if let Ok(v) = decode(&input) {
            prop_assert_eq!(decode(&encode(&v)), Ok(v));
        }
        let _ = decode_prefix(&input);
        let _ = raw_dict_value(&input, b"a");
    }

    #[test]
    fn decode_prefix_is_consistent(
        v in arb_value(),
        suffix in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let enc = encode(&v);
        let mut input = enc.clone();
        input.extend_from_slice(&suffix);
        prop_assert_eq!(decode_prefix(&input), Ok((v.clone(), enc.len())));
        if !suffix.is_empty() {
            prop_assert!(decode(&input).is_err());
        }
    }

    #[test]
    fn truncation_is_an_error(v in arb_value(), cut in any::<prop::sample::Index>()) {
        let enc = encode(&v);
        let len = cut.index(enc.len());
        prop_assert!(decode(&enc[..len]).is_err());
        prop_assert!(decode_prefix(&enc[..len]).is_err());
    }

    #[test]
    fn raw_dict_value_matches_encoding(
        map in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 0..6), arb_value(), 0..6),
    ) {
        let enc = encode(&Value::Dict(map.clone()));
        for (k, v) in &map {
            let expected = encode(v);
            prop_assert_eq!(raw_dict_value(&enc, k), Ok(Some(&expected[..])));
        }
    }
}
