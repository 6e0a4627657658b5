//! Tests for magnet link parsing.

use super::*;
use crate::types::from_hex32;
use proptest::prelude::*;

const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
/// The same hash in base32 (computed independently with Python's `base64.b32encode`).
const B32: &str = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
/// A v2 info hash (64 hex).
const V2: &str = "d8dd32ac93357c368556af3ac1d95c9d76bd0dff6fa9833ecdac3d53134efabb";
const BYTES: [u8; 20] = [
    0xc1, 0x2f, 0xe1, 0xc0, 0x6b, 0xba, 0x25, 0x4a, 0x9d, 0xc9, 0xf5, 0x19, 0xb3, 0x35, 0xaa, 0x7c,
    0x13, 0x67, 0xa8, 0x8a,
];

fn err(link: &str) -> String {
    match Magnet::parse(link) {
        Ok(m) => panic!("expected an error for {link:?}, got {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn full_link() {
    let link = format!(
        "magnet:?xt=urn:btih:{HEX}&dn=My+File%20name&tr=http%3A%2F%2Ft1%2Fa%3Fx%3D1%2B2\
         &tr=udp://t2:80&x.pe=10.0.0.1:6881&x.pe=%5B::1%5D:51413&x.pe=[fe80::2]:1&foo=bar&xl=5"
    );
    let m = Magnet::parse(&link).unwrap();
    assert_eq!(m.info_hash, InfoHash(BYTES));
    assert_eq!(m.name.as_deref(), Some("My File name"));
    assert_eq!(m.trackers, vec!["http://t1/a?x=1+2", "udp://t2:80"]);
    let peers: Vec<String> = m.peers.iter().map(|p| p.to_string()).collect();
    assert_eq!(peers, vec!["10.0.0.1:6881", "[::1]:51413", "[fe80::2]:1"]);
}

#[test]
fn minimal_links_in_each_hash_form() {
    let hex = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
    assert_eq!(hex.info_hash, InfoHash(BYTES));
    assert!(hex.trackers.is_empty() && hex.peers.is_empty() && hex.name.is_none());
    let upper = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", HEX.to_uppercase())).unwrap();
    assert_eq!(upper, hex);
    let b32 = Magnet::parse(&format!("magnet:?xt=urn:btih:{B32}")).unwrap();
    assert_eq!(b32, hex);
    let b32_lower = Magnet::parse(&format!("MAGNET:?xt=URN:BTIH:{}", B32.to_lowercase())).unwrap();
    assert_eq!(b32_lower, hex);
}

#[test]
fn base32_known_vectors() {
    assert_eq!(from_base32_20(&"A".repeat(32)), Some([0u8; 20]));
    assert_eq!(from_base32_20(&"7".repeat(32)), Some([0xffu8; 20]));
    assert_eq!(from_base32_20(B32), Some(BYTES));
    assert_eq!(from_base32_20(&"A".repeat(31)), None);
    assert_eq!(from_base32_20(&format!("{}1", "A".repeat(31))), None);
    assert_eq!(from_base32_20(&format!("{}=", "A".repeat(31))), None);
    assert_eq!(from_base32_20(&"é".repeat(16)), None);
}

#[test]
fn repeated_or_other_xt() {
    // The same hash twice (hex and base32) is fine; other URN kinds are ignored.
    let link = format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{B32}&xt=urn:sha1:XYZ");
    assert_eq!(Magnet::parse(&link).unwrap().info_hash, InfoHash(BYTES));
    let other = "0".repeat(40);
    assert_eq!(
        err(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}")),
        format!("invalid magnet link: two different info hashes {HEX} and {other}")
    );
    let other_v2 = "0".repeat(64);
    assert_eq!(
        err(&format!(
            "magnet:?xt=urn:btmh:1220{V2}&xt=urn:btmh:1220{other_v2}"
        )),
        format!("invalid magnet link: two different info hashes {V2} and {other_v2}")
    );
}

#[test]
fn v2_and_hybrid_links() {
    let v2 = Magnet::parse(&format!("magnet:?xt=urn:btmh:1220{V2}&dn=x")).unwrap();
    let v2_hash = InfoHashV2(from_hex32(V2).unwrap());
    assert_eq!(v2.info_hash_v2, Some(v2_hash));
    assert!(!v2.has_v1);
    assert_eq!(v2.info_hash_v1(), None);
    assert_eq!(v2.info_hash, v2_hash.truncated());
    let upper = Magnet::parse(&format!(
        "magnet:?xt=URN:BTMH:1220{}&dn=x",
        V2.to_uppercase()
    ))
    .unwrap();
    assert_eq!(upper, v2);

    let both = Magnet::parse(&format!(
        "magnet:?xt=urn:btmh:1220{V2}&xt=urn:btih:{HEX}&tr=http://t/"
    ))
    .unwrap();
    assert_eq!(both.info_hash, InfoHash(BYTES));
    assert_eq!(both.info_hash_v1(), Some(InfoHash(BYTES)));
    assert_eq!(both.info_hash_v2, Some(v2_hash));

    let v1 = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
    assert_eq!(v1.info_hash_v2, None);
    assert!(v1.has_v1);
}

#[test]
fn links_round_trip_through_to_link() {
    let both = Magnet::parse(&format!(
        "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2}&dn=a+b%2Fc&tr=http%3A%2F%2Ft%2Fa%3Fk%3D1\
         &x.pe=10.0.0.1:1&x.pe=[::1]:2"
    ))
    .unwrap();
    let link = both.to_link();
    assert_eq!(
        link,
        format!(
            "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2}&dn=a%20b%2Fc\
             &tr=http%3A%2F%2Ft%2Fa%3Fk%3D1&x.pe=10.0.0.1%3A1&x.pe=%5B%3A%3A1%5D%3A2"
        )
    );
    assert_eq!(Magnet::parse(&link).unwrap(), both);
    let v2_only = Magnet::parse(&format!("magnet:?xt=urn:btmh:1220{V2}")).unwrap();
    assert_eq!(v2_only.to_link(), format!("magnet:?xt=urn:btmh:1220{V2}"));
    assert_eq!(Magnet::parse(&v2_only.to_link()).unwrap(), v2_only);
}

#[test]
fn rejections() {
    assert_eq!(
        err("http://x/?xt=urn:btih:abc"),
        "invalid magnet link: it does not start with \"magnet:?\""
    );
    assert_eq!(
        err("magnet:"),
        "invalid magnet link: it does not start with \"magnet:?\""
    );
    assert_eq!(
        err("magnet:?"),
        "invalid magnet link: missing xt=urn:btih: or xt=urn:btmh: parameter"
    );
    assert_eq!(
        err("magnet:?dn=x&tr=http://t/&xt=urn:sha1:XYZ"),
        "invalid magnet link: missing xt=urn:btih: or xt=urn:btmh: parameter"
    );
    assert_eq!(
        err("magnet:?dn=x&tr=http://t/&xt=urn:btmh:1220ab"),
        "invalid magnet link: v2 info hash \"1220ab\" is not 1220 followed by 64 hex characters"
    );
    // Another multihash function (1114: SHA-256 under a different code) is refused, not misread.
    assert!(err(&format!("magnet:?xt=urn:btmh:1114{V2}")).contains("is not 1220 followed by"));
    assert_eq!(
        err("magnet:?xt=urn:btih:abc"),
        "invalid magnet link: info hash \"abc\" is neither 40 hex nor 32 base32 characters"
    );
    let not_hex = "g".repeat(40);
    assert_eq!(
        err(&format!("magnet:?xt=urn:btih:{not_hex}")),
        format!(
            "invalid magnet link: info hash \"{not_hex}\" is neither 40 hex nor 32 base32 characters"
        )
    );
    let not_b32 = "1".repeat(32);
    assert!(err(&format!("magnet:?xt=urn:btih:{not_b32}")).contains("is neither 40 hex"));
    assert_eq!(
        err(&format!("magnet:?xt=urn:btih:{HEX}&tr=http://a/%zz")),
        "invalid magnet link: bad percent-encoding \"%zz\" in tr parameter"
    );
    assert_eq!(
        err(&format!("magnet:?xt=urn:btih:{HEX}&dn=abc%4")),
        "invalid magnet link: bad percent-encoding \"%4\" in dn parameter"
    );
    assert_eq!(
        err(&format!("magnet:?xt=urn:btih:{HEX}&tr=%ff")),
        "invalid magnet link: tr parameter is not valid UTF-8 after percent-decoding"
    );
    for bad in [
        "1.2.3.4",
        "1.2.3.4:0",
        "1.2.3.4:65536",
        "::1:80",
        "host:80",
        "",
    ] {
        assert_eq!(
            err(&format!("magnet:?xt=urn:btih:{HEX}&x.pe={bad}")),
            format!("invalid magnet link: peer address {bad:?} in x.pe is not ip:port"),
        );
    }
    // Hostile long input is cut short in messages.
    let long = "z".repeat(10_000);
    assert!(err(&format!("magnet:?xt=urn:btih:{long}")).len() < 200);
}

#[test]
fn plus_is_a_space_only_in_dn() {
    let m = Magnet::parse(&format!(
        "magnet:?xt=urn:btih:{HEX}&dn=a+b%2Bc&tr=udp://a+b/"
    ))
    .unwrap();
    assert_eq!(m.name.as_deref(), Some("a b+c"));
    assert_eq!(m.trackers, vec!["udp://a+b/"]);
}

#[test]
fn non_utf8_name_is_lossy_and_empty_params_are_skipped() {
    let m = Magnet::parse(&format!("magnet:?&xt=urn:btih:{HEX}&&dn=a%FFb&tr=&tr=x")).unwrap();
    assert_eq!(m.name.as_deref(), Some("a\u{fffd}b"));
    assert_eq!(m.trackers, vec!["x"]);
}

/// Test-only encoder, independent of the decoder under test.
fn to_base32(bytes: &[u8; 20]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = String::new();
    for b in bytes {
        bits.push_str(&format!("{b:08b}"));
    }
    bits.as_bytes()
        .chunks(5)
        .map(|c| {
            let v = c
                .iter()
                .fold(0usize, |acc, &bit| acc * 2 + usize::from(bit - b'0'));
            char::from(ALPHABET[v])
        })
        .collect()
}

/// Percent-encodes every byte except unreserved ones (and `+` when `keep_plus`).
fn pct(s: &str, keep_plus: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_plus && b == b'+') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn build_then_parse(
        hash in proptest::array::uniform20(any::<u8>()),
        trackers in proptest::collection::vec(".{1,20}", 0..4),
        name in proptest::option::of(".{0,20}"),
        base32 in any::<bool>(),
    ) {
        let hash_text = if base32 {
            to_base32(&hash)
        } else {
            hash.iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut link = format!("magnet:?xt=urn:btih:{hash_text}");
        if let Some(n) = &name {
            link.push_str(&format!("&dn={}", pct(n, false)));
        }
        for t in &trackers {
            link.push_str(&format!("&tr={}", pct(t, true)));
        }
        let m = Magnet::parse(&link).unwrap();
        prop_assert_eq!(m.info_hash, InfoHash(hash));
        prop_assert_eq!(m.trackers, trackers);
        prop_assert_eq!(m.name, name);
        prop_assert!(m.peers.is_empty());
    }

    #[test]
    fn hex_and_base32_forms_agree(hash in proptest::array::uniform20(any::<u8>())) {
        let hex: String = hash.iter().map(|b| format!("{b:02X}")).collect();
        let a = Magnet::parse(&format!("magnet:?xt=urn:btih:{hex}")).unwrap();
        let b = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", to_base32(&hash))).unwrap();
        prop_assert_eq!(a.info_hash, InfoHash(hash));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".*") {
        let _ = Magnet::parse(&s);
        let _ = Magnet::parse(&format!("magnet:?{s}"));
    }

    #[test]
    fn arbitrary_params_never_panic(
        params in proptest::collection::vec(
            ("(xt|tr|dn|x\\.pe|xl)", "(urn:btih:)?[0-9a-zA-Z%+:\\[\\]\\.é]{0,45}"), 0..5),
    ) {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = Magnet::parse(&format!("magnet:?{}", query.join("&")));
    }
}

#[test]
fn web_seeds_from_ws() {
    let link = format!(
        "magnet:?xt=urn:btih:{HEX}&ws=http%3A%2F%2Fw%2Fa%20b&ws=ftp://no/&ws=https://s/\
         &ws=https://s/"
    );
    let m = Magnet::parse(&link).unwrap();
    assert_eq!(m.web_seeds, vec!["http://w/a b", "https://s/"]);
    let again = Magnet::parse(&m.to_link()).unwrap();
    assert_eq!(again, m);
    let many: String = (0..40).map(|i| format!("&ws=http://w/{i}")).collect();
    let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}{many}")).unwrap();
    assert_eq!(m.web_seeds.len(), crate::metainfo::MAX_WEB_SEEDS);
}
