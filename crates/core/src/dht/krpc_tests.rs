//! KRPC codec tests: BEP 5's own examples, libtorrent's extra keys, every bound, and round
//! trips. The fuzz properties live in `fuzz_tests.rs`.

use core::net::{Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::*;

const A: &[u8; 20] = b"abcdefghij0123456789";
const M: &[u8; 20] = b"mnopqrstuvwxyz123456";

fn decode_ok(bytes: &[u8]) -> Message {
    Message::decode(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

fn malformed(bytes: &[u8]) -> (&'static str, Option<Vec<u8>>) {
    match Message::decode(bytes) {
        Err(KrpcError::Malformed {
            what,
            query_transaction,
        }) => (what, query_transaction),
        other => panic!("expected malformed, got {other:?}"),
    }
}

/// Decodes `bytes`, checks the message, and checks that encoding gives `bytes` back.
fn exact(bytes: &[u8], expected: Message) {
    assert_eq!(decode_ok(bytes), expected);
    assert_eq!(expected.encode(), bytes);
}

fn msg(transaction: &[u8], body: Body) -> Message {
    Message {
        transaction: transaction.to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body,
    }
}

#[test]
fn bep5_examples() {
    exact(
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        msg(
            b"aa",
            Body::Query(Query {
                id: NodeId(*A),
                method: Method::Ping,
                want: None,
            }),
        ),
    );
    exact(
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        msg(
            b"aa",
            Body::Response(Response {
                id: NodeId(*M),
                nodes: None,
                nodes6: None,
                values: vec![],
                token: None,
            }),
        ),
    );
    exact(
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        msg(b"aa", Body::Query(Query { id: NodeId(*A), method: Method::FindNode { target: NodeId(*M) }, want: None })),
    );
    exact(
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        msg(
            b"aa",
            Body::Query(Query { id: NodeId(*A), method: Method::GetPeers { info_hash: InfoHash(*M) }, want: None }),
        ),
    );
    exact(
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
        msg(
            b"aa",
            Body::Response(Response {
                id: NodeId(*A),
                nodes: None,
                nodes6: None,
                values: vec![
                    SocketAddr::from(([b'a', b'x', b'j', b'e'], u16::from_be_bytes(*b".u"))),
                    SocketAddr::from(([b'i', b'd', b'h', b't'], u16::from_be_bytes(*b"nm"))),
                ],
                token: Some(b"aoeusnth".to_vec()),
            }),
        ),
    );
    exact(
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        msg(
            b"aa",
            Body::Query(Query {
                id: NodeId(*A),
                method: Method::AnnouncePeer {
                    info_hash: InfoHash(*M),
                    port: 6881,
                    implied_port: true,
                    token: b"aoeusnth".to_vec(),
                },
                want: None,
            }),
        ),
    );
    exact(
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        msg(
            b"aa",
            Body::Error(ErrorBody {
                code: ERROR_GENERIC,
                message: "A Generic Error Ocurred".into(),
            }),
        ),
    );
}

#[test]
fn extra_keys_are_tolerated_and_kept_where_useful() {
    // A libtorrent answer: `ip` (BEP 42), `v`, and both node families (BEP 32).
    let mut nodes6 = Vec::new();
    nodes6.extend_from_slice(M);
    nodes6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    nodes6.extend_from_slice(&[0x1a, 0xe1]);
    let mut b =
        b"d2:ip6:\x7f\x00\x00\x01\x1a\xe11:rd2:id20:abcdefghij01234567895:nodes26:".to_vec();
    b.extend_from_slice(M);
    b.extend_from_slice(&[127, 0, 0, 2, 0x1a, 0xe2]);
    b.extend_from_slice(b"6:nodes638:");
    b.extend_from_slice(&nodes6);
    b.extend_from_slice(b"1:pi6881e5:token4:\x01\x02\x03\x04e1:t2:\x00\x011:v4:LT\x02\x001:y1:re");
    let m = decode_ok(&b);
    assert_eq!(m.ip, Some(SocketAddr::from(([127, 0, 0, 1], 6881))));
    assert_eq!(m.version.as_deref(), Some(&b"LT\x02\x00"[..]));
    let Body::Response(r) = m.body else {
        panic!("not a response")
    };
    assert_eq!(
        r.nodes,
        Some(vec![(NodeId(*M), SocketAddr::from(([127, 0, 0, 2], 6882)))])
    );
    assert_eq!(
        r.nodes6,
        Some(vec![(
            NodeId(*M),
            SocketAddr::from((Ipv6Addr::LOCALHOST, 6881))
        )])
    );
    assert_eq!(r.token.as_deref(), Some(&[1u8, 2, 3, 4][..]));

    // `ro`, `want` and unknown arguments in a query.
    let q = decode_ok(b"d1:ad2:id20:abcdefghij01234567896:noseedi1e4:wantl2:n62:xx2:n4ee1:q4:ping2:roi1e1:t1:x1:y1:qe");
    assert!(q.read_only);
    let Body::Query(q) = q.body else {
        panic!("not a query")
    };
    assert_eq!(q.want, Some(Want { v4: true, v6: true }));

    // An unknown method keeps its (cut) name; `v` is cut too.
    let long = format!(
        "d1:ad2:id20:abcdefghij0123456789e1:q40:{}1:t1:x1:v30:{}1:y1:qe",
        "m".repeat(40),
        "v".repeat(30)
    );
    let m = decode_ok(long.as_bytes());
    assert_eq!(m.version.map(|v| v.len()), Some(MAX_VERSION_LEN));
    assert!(
        matches!(m.body, Body::Query(Query { method: Method::Unknown(name), .. }) if name.len() == MAX_METHOD_LEN)
    );
}

#[test]
fn announce_port_rules() {
    let announce = |args: &str| {
        let s = format!("d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456{args}e1:q13:announce_peer1:t2:aa1:y1:qe");
        Message::decode(s.as_bytes())
    };
    let ok = announce("12:implied_porti1e5:token1:x").unwrap();
    assert!(matches!(
        ok.body,
        Body::Query(Query {
            method: Method::AnnouncePeer {
                port: 0,
                implied_port: true,
                ..
            },
            ..
        })
    ));
    for bad in [
        "5:token1:x",
        "4:porti-1e5:token1:x",
        "4:porti65536e5:token1:x",
        "4:porti1e",
        "4:port1:x5:token1:x",
    ] {
        let Err(KrpcError::Malformed {
            query_transaction, ..
        }) = announce(bad)
        else {
            panic!("{bad} accepted");
        };
        assert_eq!(
            query_transaction.as_deref(),
            Some(&b"aa"[..]),
            "a bad query can be answered"
        );
    }
    let long_token = format!(
        "4:porti1e5:token{}:{}",
        MAX_TOKEN_LEN + 1,
        "t".repeat(MAX_TOKEN_LEN + 1)
    );
    assert!(announce(&long_token).is_err());
}

#[test]
fn bounds_are_enforced() {
    // ids must be exactly 20 bytes.
    let (what, t) = malformed(b"d1:ad2:id19:abcdefghij012345678e1:q4:ping1:t2:aa1:y1:qe");
    assert_eq!(
        (what, t.as_deref()),
        ("query `id` is not 20 bytes", Some(&b"aa"[..]))
    );
    assert!(
        malformed(b"d1:rd2:id21:abcdefghij0123456789Xe1:t2:aa1:y1:re")
            .1
            .is_none(),
        "responses are not answered"
    );
    // Compact nodes must be whole entries.
    assert_eq!(
        malformed(
            b"d1:rd2:id20:abcdefghij01234567895:nodes27:abcdefghij0123456789abcdefge1:t2:aa1:y1:re"
        )
        .0,
        "`nodes` is not whole compact entries"
    );
    // Values are 6 or 18 bytes.
    assert_eq!(
        malformed(b"d1:rd2:id20:abcdefghij01234567896:valuesl7:abcdefgee1:t2:aa1:y1:re").0,
        "a value is not a compact peer"
    );
    // Counts are capped.
    let too_many_nodes = {
        let n = MAX_NODES + 1;
        let mut b = format!("d1:rd2:id20:abcdefghij01234567895:nodes{}:", n * 26).into_bytes();
        b.extend(std::iter::repeat_n(7u8, n * 26));
        b.extend_from_slice(b"e1:t2:aa1:y1:re");
        b
    };
    assert_eq!(malformed(&too_many_nodes).0, "too many nodes");
    let too_many_values = format!(
        "d1:rd2:id20:abcdefghij01234567896:valuesl{}ee1:t2:aa1:y1:re",
        "6:abcdef".repeat(MAX_VALUES + 1)
    );
    assert_eq!(malformed(too_many_values.as_bytes()).0, "too many values");
    let long_t = format!(
        "d1:rd2:id20:abcdefghij0123456789e1:t{}:{}1:y1:re",
        MAX_TRANSACTION_LEN + 1,
        "t".repeat(MAX_TRANSACTION_LEN + 1)
    );
    assert_eq!(malformed(long_t.as_bytes()).0, "transaction id is too long");
    assert_eq!(
        Message::decode(&vec![b'd'; MAX_DATAGRAM_LEN + 1]),
        Err(KrpcError::TooLong(MAX_DATAGRAM_LEN + 1))
    );
    // Shape errors.
    assert!(matches!(Message::decode(b""), Err(KrpcError::Bencode(_))));
    assert_eq!(malformed(b"le").0, "not a dictionary");
    assert_eq!(malformed(b"d1:t2:aa1:y1:xe").0, "`y` is not q, r or e");
    assert_eq!(malformed(b"d1:ei201e1:t2:aa1:y1:ee").0, "`e` is not a list");
    assert_eq!(
        malformed(b"d1:el2:xxe1:t2:aa1:y1:ee").0,
        "error without an integer code"
    );
    assert_eq!(
        malformed(b"d1:ad2:id20:abcdefghij0123456789e1:t2:aa1:y1:qe").0,
        "query without a method name"
    );
}

#[test]
fn long_error_texts_are_cut_on_a_character_boundary() {
    let mut text = vec![b'a'; MAX_ERROR_TEXT - 1];
    text.extend_from_slice(&[0xff, 0xff]);
    let mut b = format!("d1:eli202e{}:", text.len()).into_bytes();
    b.extend_from_slice(&text);
    b.extend_from_slice(b"e1:t0:1:y1:ee");
    let m = decode_ok(&b);
    let Body::Error(e) = &m.body else {
        panic!("not an error")
    };
    assert!(e.message.len() <= MAX_ERROR_TEXT);
    assert_eq!(Message::decode(&m.encode()).as_ref(), Ok(&m));
}

fn arb_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 20]>().prop_map(NodeId)
}

fn arb_addr(v6: bool) -> BoxedStrategy<SocketAddr> {
    if v6 {
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::from((ip, p)))
            .boxed()
    } else {
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(SocketAddr::from)
            .boxed()
    }
}

fn arb_nodes(v6: bool) -> impl Strategy<Value = Option<Vec<(NodeId, SocketAddr)>>> {
    proptest::option::of(proptest::collection::vec(
        (arb_id(), arb_addr(v6)),
        0..=MAX_NODES,
    ))
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

/// Any message the codec can carry (encoding then decoding gives it back).
pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
    let method = prop_oneof![
        Just(Method::Ping),
        arb_id().prop_map(|target| Method::FindNode { target }),
        any::<[u8; 20]>().prop_map(|h| Method::GetPeers {
            info_hash: InfoHash(h)
        }),
        (
            any::<[u8; 20]>(),
            any::<u16>(),
            any::<bool>(),
            arb_bytes(MAX_TOKEN_LEN)
        )
            .prop_map(|(h, port, implied_port, token)| Method::AnnouncePeer {
                info_hash: InfoHash(h),
                port,
                implied_port,
                token
            }),
        "[a-z_]{1,32}"
            .prop_filter("known method", |m| ![
                "ping",
                "find_node",
                "get_peers",
                "announce_peer"
            ]
            .contains(&m.as_str()))
            .prop_map(|m| Method::Unknown(m.into_bytes())),
    ];
    let want =
        proptest::option::of((any::<bool>(), any::<bool>()).prop_map(|(v4, v6)| Want { v4, v6 }));
    let query = (arb_id(), method, want)
        .prop_map(|(id, method, want)| Body::Query(Query { id, method, want }));
    let values = proptest::collection::vec(prop_oneof![arb_addr(false), arb_addr(true)], 0..40);
    let response = (
        arb_id(),
        arb_nodes(false),
        arb_nodes(true),
        values,
        proptest::option::of(arb_bytes(MAX_TOKEN_LEN)),
    )
        .prop_map(|(id, nodes, nodes6, values, token)| {
            Body::Response(Response {
                id,
                nodes,
                nodes6,
                values,
                token,
            })
        });
    let error = (any::<i64>(), "\\PC{0,60}")
        .prop_map(|(code, message)| Body::Error(ErrorBody { code, message }));
    (
        arb_bytes(MAX_TRANSACTION_LEN),
        proptest::option::of(arb_bytes(MAX_VERSION_LEN)),
        any::<bool>(),
        proptest::option::of(prop_oneof![arb_addr(false), arb_addr(true)]),
        prop_oneof![query, response, error],
    )
        .prop_map(|(transaction, version, read_only, ip, body)| Message {
            transaction,
            version,
            read_only,
            ip,
            body,
        })
}

proptest! {
    #[test]
    fn round_trips(m in arb_message()) {
        let bytes = m.encode();
        prop_assert!(bytes.len() <= MAX_DATAGRAM_LEN, "{} bytes", bytes.len());
        prop_assert_eq!(Message::decode(&bytes), Ok(m));
    }
}
