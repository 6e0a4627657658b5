//! `ut_pex` codec tests: known payloads, bounds, round trips, and the fuzz properties (never a
//! panic, whatever decodes re-encodes to the same message) over arbitrary and mutated bytes and
//! the `corpus/pex/` regression inputs.

use core::net::{Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;
use crate::bencode::fuzz_tests::{mutate, replay_corpus};

fn v4(a: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, a], port))
}

fn v6(a: u16, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, a), port))
}

/// Every property that must hold for any payload.
fn check(payload: &[u8]) {
    if let Ok(m) = PexMessage::decode(payload) {
        assert!(m.added.len() <= 2 * MAX_RECEIVED && m.dropped.len() <= 2 * MAX_RECEIVED);
        // IPv4 first, then IPv6.
        assert!(m
            .added
            .windows(2)
            .all(|w| !(w[0].addr.is_ipv6() && w[1].addr.is_ipv4())));
        if m.added.len() <= MAX_ADDED && m.dropped.len() <= MAX_DROPPED {
            let again = m.encode().expect("within the sending limits");
            assert_eq!(
                PexMessage::decode(&again),
                Ok(m),
                "re-encoding changed the message"
            );
        }
    }
}

#[test]
fn decodes_a_libtorrent_style_message() {
    // added: 10.0.0.1:6881 (seed, uTP); added6: [2001:db8::5]:51413 (encryption); dropped:
    // 10.0.0.2:80; empty dropped6.
    let mut p = b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f1:\x066:added618:".to_vec();
    p.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5).octets());
    p.extend_from_slice(&51413u16.to_be_bytes());
    p.extend_from_slice(b"8:added6.f1:\x017:dropped6:\x0a\x00\x00\x02\x00\x508:dropped60:e");
    let m = PexMessage::decode(&p).unwrap();
    assert_eq!(
        m.added,
        vec![
            PexPeer {
                addr: v4(1, 6881),
                flags: PexFlags::SEED | PexFlags::UTP,
            },
            PexPeer {
                addr: v6(5, 51413),
                flags: PexFlags::ENCRYPTION,
            },
        ]
    );
    assert!(m.added[0].flags.contains(PexFlags::SEED));
    assert!(!m.added[0].flags.contains(PexFlags::OUTGOING));
    assert_eq!(m.dropped, vec![v4(2, 80)]);
    assert_eq!(
        m.encode().unwrap(),
        p,
        "our encoding is libtorrent's layout"
    );
}

#[test]
fn missing_flags_mean_none_but_mismatched_flags_are_refused() {
    let m = PexMessage::decode(b"d5:added6:\x0a\x00\x00\x01\x00\x01e").unwrap();
    assert_eq!(
        m.added,
        vec![PexPeer {
            addr: v4(1, 1),
            flags: PexFlags::default()
        }]
    );
    assert_eq!(
        PexMessage::decode(b"d5:added6:\x0a\x00\x00\x01\x00\x017:added.f2:\x01\x01e"),
        Err(PexError::Malformed("flags do not match the added peers"))
    );
    assert!(matches!(
        PexMessage::decode(b"d5:added5:\x0a\x00\x00\x01\x00e"),
        Err(PexError::Malformed(_))
    ));
    assert!(matches!(
        PexMessage::decode(b"d7:droppedi1ee"),
        Err(PexError::Malformed(_))
    ));
    assert!(matches!(
        PexMessage::decode(b"le"),
        Err(PexError::Malformed(_))
    ));
    assert!(matches!(
        PexMessage::decode(b"d5:added0:e trailing"),
        Err(PexError::Bencode(_))
    ));
    assert_eq!(PexMessage::decode(b"de"), Ok(PexMessage::default()));
}

#[test]
fn limits_on_both_sides() {
    let many = PexMessage {
        added: (0..=MAX_ADDED as u16)
            .map(|n| PexPeer {
                addr: v6(n, 1),
                flags: PexFlags::OUTGOING,
            })
            .collect(),
        dropped: Vec::new(),
    };
    assert_eq!(
        many.encode(),
        Err(PexError::TooMany {
            list: "added",
            count: MAX_ADDED + 1
        })
    );
    let full = PexMessage {
        added: many.added[..MAX_ADDED].to_vec(),
        dropped: (0..MAX_DROPPED as u16).map(|n| v6(n, 2)).collect(),
    };
    let bytes = full.encode().unwrap();
    assert!(
        bytes.len() < 2048,
        "a full message takes {} bytes",
        bytes.len()
    );
    let dropped = PexMessage {
        added: Vec::new(),
        dropped: vec![v4(1, 1); MAX_DROPPED + 1],
    };
    assert!(matches!(
        dropped.encode(),
        Err(PexError::TooMany {
            list: "dropped",
            ..
        })
    ));

    let mut p = format!("d7:dropped{}:", 6 * (MAX_RECEIVED + 1)).into_bytes();
    p.extend(std::iter::repeat_n(1u8, 6 * (MAX_RECEIVED + 1)));
    p.push(b'e');
    assert_eq!(
        PexMessage::decode(&p),
        Err(PexError::TooMany {
            list: "dropped",
            count: MAX_RECEIVED + 1
        })
    );
    assert_eq!(
        PexMessage::decode(&vec![b'x'; MAX_PAYLOAD_LEN + 1]),
        Err(PexError::TooLong(MAX_PAYLOAD_LEN + 1))
    );
}

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
    ]
}

fn arb_message() -> impl Strategy<Value = PexMessage> {
    (
        proptest::collection::vec((arb_addr(), any::<u8>()), 0..=MAX_ADDED),
        proptest::collection::vec(arb_addr(), 0..=MAX_DROPPED),
    )
        .prop_map(|(added, dropped)| PexMessage {
            added: added
                .into_iter()
                .map(|(addr, f)| PexPeer {
                    addr,
                    flags: PexFlags(f),
                })
                .collect(),
            dropped,
        })
}

/// IPv4 entries first, each family in its original order: the order decoding gives.
fn families_in_order<T: Clone>(items: &[T], is_v4: impl Fn(&T) -> bool) -> Vec<T> {
    let mut out: Vec<T> = items.iter().filter(|i| is_v4(i)).cloned().collect();
    out.extend(items.iter().filter(|i| !is_v4(i)).cloned());
    out
}

proptest! {
    #[test]
    fn round_trips(m in arb_message()) {
        let bytes = m.encode().unwrap();
        let back = PexMessage::decode(&bytes).unwrap();
        prop_assert_eq!(back.added, families_in_order(&m.added, |p| p.addr.is_ipv4()));
        prop_assert_eq!(back.dropped, families_in_order(&m.dropped, |a| a.is_ipv4()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(p in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&p);
    }

    #[test]
    fn mutated_messages_never_panic(
        m in arb_message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        let mut p = m.encode().unwrap();
        mutate(&mut p, &edits);
        check(&p);
    }
}

#[test]
fn corpus_replays_cleanly() {
    replay_corpus("pex", check, |p| PexMessage::decode(p).is_ok());
}
