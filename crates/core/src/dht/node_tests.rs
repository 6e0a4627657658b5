//! Unit tests of the node: what it answers, tokens, the peer store, rate limits, timeouts,
//! bootstrap retries, bounds, state saving and determinism. Whole-network behaviour is in
//! `sim_tests.rs`.

use super::*;
use crate::dht::krpc::{ErrorBody, ERROR_METHOD_UNKNOWN, ERROR_PROTOCOL};
use crate::dht::{table, token};

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 6000 + u16::from(n)))
}

fn nid(n: u8) -> NodeId {
    NodeId([n; 20])
}

const OWN: NodeId = NodeId([0x80; 20]);
const HASH: InfoHash = InfoHash([0x81; 20]);

fn query(t: &[u8], id: NodeId, method: Method) -> Vec<u8> {
    Message {
        transaction: t.to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body: Body::Query(Query {
            id,
            method,
            want: None,
        }),
    }
    .encode()
}

/// Everything the node sent, decoded.
fn sent(dht: &mut Dht) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| dht.poll_transmit())
        .map(|(to, b)| (to, Message::decode(&b).expect("valid KRPC")))
        .collect()
}

fn events(dht: &mut Dht) -> Vec<DhtEvent> {
    std::iter::from_fn(|| dht.poll_event()).collect()
}

/// Sends a query from `from` and returns the single answer.
fn ask(dht: &mut Dht, now: Instant, from: SocketAddr, id: NodeId, method: Method) -> Message {
    dht.handle_datagram(now, from, &query(b"qq", id, method));
    let mut out = sent(dht);
    assert_eq!(out.len(), 1, "expected one answer, got {out:?}");
    let (to, m) = out.remove(0);
    assert_eq!(to, from);
    assert_eq!(m.transaction, b"qq");
    m
}

fn response(m: Message) -> Response {
    match m.body {
        Body::Response(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn error(m: Message) -> ErrorBody {
    match m.body {
        Body::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn node_with_neighbours(t0: Instant) -> Dht {
    let mut dht = Dht::with_id(t0, OWN, 1, DhtConfig::default());
    for n in 1..=20 {
        dht.insert_node(t0, nid(n), addr(n));
    }
    dht
}

#[test]
fn answers_ping_find_node_and_get_peers() {
    let t0 = Instant::now();
    let mut dht = node_with_neighbours(t0);
    let me = addr(100);
    let m = ask(&mut dht, t0, me, nid(100), Method::Ping);
    assert_eq!(m.ip, Some(me), "BEP 42 `ip` tells the querier its address");
    assert_eq!(m.version.as_deref(), Some(&OUR_VERSION[..]));
    let r = response(m);
    assert_eq!(r.id, OWN);
    assert_eq!(r.nodes, None);

    let r = response(ask(
        &mut dht,
        t0,
        me,
        nid(100),
        Method::FindNode { target: nid(3) },
    ));
    let nodes = r.nodes.expect("nodes");
    assert_eq!(nodes.len(), 8);
    assert_eq!(nodes[0], (nid(3), addr(3)), "closest first");
    assert_eq!(
        r.nodes6, None,
        "an IPv4 querier without `want` gets IPv4 nodes only"
    );

    let r = response(ask(
        &mut dht,
        t0,
        me,
        nid(100),
        Method::GetPeers { info_hash: HASH },
    ));
    assert!(r.values.is_empty());
    assert_eq!(r.nodes.map(|n| n.len()), Some(8));
    assert_eq!(r.token.map(|t| t.len()), Some(token::TOKEN_LEN));
}

#[test]
fn announces_need_a_fresh_token_from_the_same_ip() {
    let t0 = Instant::now();
    let mut dht = node_with_neighbours(t0);
    let (a, b) = (addr(100), addr(101));
    let token = response(ask(
        &mut dht,
        t0,
        a,
        nid(100),
        Method::GetPeers { info_hash: HASH },
    ))
    .token
    .expect("token");
    let announce = |token: &[u8], port: u16, implied_port: bool| Method::AnnouncePeer {
        info_hash: HASH,
        port,
        implied_port,
        token: token.to_vec(),
    };

    let e = error(ask(
        &mut dht,
        t0,
        b,
        nid(101),
        announce(&token, 7000, false),
    ));
    assert_eq!(e.code, ERROR_PROTOCOL, "another IP's token accepted");
    let e = error(ask(
        &mut dht,
        t0,
        a,
        nid(100),
        announce(b"nope", 7000, false),
    ));
    assert_eq!((e.code, e.message.as_str()), (ERROR_PROTOCOL, "bad token"));
    let e = error(ask(&mut dht, t0, a, nid(100), announce(&token, 0, false)));
    assert_eq!(e.code, ERROR_PROTOCOL, "port 0 stored");

    response(ask(
        &mut dht,
        t0,
        a,
        nid(100),
        announce(&token, 7000, false),
    ));
    response(ask(&mut dht, t0, a, nid(100), announce(&token, 1, true)));
    assert_eq!(dht.stored_peer_count(), 2);
    let r = response(ask(
        &mut dht,
        t0,
        b,
        nid(101),
        Method::GetPeers { info_hash: HASH },
    ));
    let mut values = r.values;
    values.sort();
    assert_eq!(
        values,
        vec![a, SocketAddr::new(a.ip(), 7000)],
        "implied port is the source port"
    );

    // Still good after one rotation, refused after two.
    let later = t0 + token::ROTATION;
    dht.handle_timeout(later);
    sent(&mut dht);
    response(ask(
        &mut dht,
        later,
        a,
        nid(100),
        announce(&token, 7001, false),
    ));
    let much_later = later + token::ROTATION;
    dht.handle_timeout(much_later);
    sent(&mut dht);
    let e = error(ask(
        &mut dht,
        much_later,
        a,
        nid(100),
        announce(&token, 7002, false),
    ));
    assert_eq!(e.code, ERROR_PROTOCOL);
}

#[test]
fn malformed_and_unknown_queries_get_errors_and_other_junk_is_dropped() {
    let t0 = Instant::now();
    let mut dht = node_with_neighbours(t0);
    let e = error(ask(
        &mut dht,
        t0,
        addr(100),
        nid(100),
        Method::Unknown(b"vote".to_vec()),
    ));
    assert_eq!(e.code, ERROR_METHOD_UNKNOWN);

    dht.handle_datagram(t0, addr(100), b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe");
    let out = sent(&mut dht);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.transaction, b"xy");
    assert_eq!(error(out[0].1.clone()).code, ERROR_PROTOCOL);

    for junk in [
        &b""[..],
        b"garbage",
        b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re",
        b"d1:eli201e1:xe1:t2:aa1:y1:ee",
    ] {
        dht.handle_datagram(t0, addr(100), junk);
        assert!(sent(&mut dht).is_empty(), "answered {junk:?}");
    }
    // Port 0 and disabled families are ignored outright.
    dht.handle_datagram(
        t0,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &query(b"aa", nid(1), Method::Ping),
    );
    dht.handle_datagram(
        t0,
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 1)),
        &query(b"aa", nid(1), Method::Ping),
    );
    assert!(sent(&mut dht).is_empty());
    assert!(events(&mut dht).is_empty());
}

#[test]
fn queries_are_rate_limited_per_source_ip() {
    let t0 = Instant::now();
    let config = DhtConfig {
        queries_per_second: 2,
        query_burst: 3,
        ..DhtConfig::default()
    };
    let mut dht = Dht::with_id(t0, OWN, 1, config);
    let ping = query(b"aa", nid(1), Method::Ping);
    for _ in 0..10 {
        dht.handle_datagram(t0, addr(1), &ping);
    }
    assert_eq!(sent(&mut dht).len(), 3);
    dht.handle_datagram(t0, addr(2), &ping);
    assert_eq!(
        sent(&mut dht).len(),
        1,
        "another IP is not limited by the first"
    );
    dht.handle_datagram(t0 + Duration::from_millis(500), addr(1), &ping);
    assert_eq!(sent(&mut dht).len(), 1);
}

#[test]
fn queriers_enter_the_table_unless_read_only_and_get_pinged() {
    let t0 = Instant::now();
    let mut dht = Dht::with_id(t0, OWN, 1, DhtConfig::default());
    let mut ro = Message::decode(&query(b"aa", nid(2), Method::Ping)).unwrap();
    ro.read_only = true;
    dht.handle_datagram(t0, addr(2), &ro.encode());
    dht.handle_datagram(t0, addr(1), &query(b"aa", nid(1), Method::Ping));
    sent(&mut dht);
    assert_eq!(dht.node_count(), 1);
    // It never answered us: the next maintenance pings it.
    dht.handle_timeout(t0);
    let pings = sent(&mut dht);
    assert_eq!(pings.len(), 1);
    assert_eq!(pings[0].0, addr(1));
    assert!(
        matches!(&pings[0].1.body, Body::Query(Query { method: Method::Ping, id, .. }) if *id == OWN)
    );
    // Two silent pings make it bad: it is no longer handed out.
    let t1 = t0 + DhtConfig::default().query_timeout;
    dht.handle_timeout(t1);
    let t2 = t0 + table::PING_INTERVAL;
    dht.handle_timeout(t2);
    assert_eq!(sent(&mut dht).len(), 1, "second ping");
    dht.handle_timeout(t2 + DhtConfig::default().query_timeout);
    let r = response(ask(
        &mut dht,
        t2,
        addr(3),
        nid(3),
        Method::FindNode { target: nid(1) },
    ));
    assert_eq!(
        r.nodes,
        Some(vec![(nid(3), addr(3))]),
        "bad node handed out"
    );
}

#[test]
fn a_silent_bootstrap_node_times_out_and_bootstrap_is_retried() {
    let t0 = Instant::now();
    let mut dht = Dht::with_id(t0, OWN, 1, DhtConfig::default());
    dht.add_bootstrap_node(addr(1));
    dht.add_bootstrap_node(addr(1));
    dht.bootstrap(t0);
    let out = sent(&mut dht);
    assert_eq!(out.len(), 1);
    assert!(
        matches!(&out[0].1.body, Body::Query(Query { method: Method::FindNode { target }, .. }) if *target == OWN)
    );
    let timeout = t0 + DhtConfig::default().query_timeout;
    assert!(dht.poll_timeout().is_some_and(|t| t <= timeout));
    dht.handle_timeout(timeout);
    assert_eq!(events(&mut dht), vec![DhtEvent::Bootstrapped { nodes: 0 }]);
    let retry = timeout + BOOTSTRAP_RETRY_MIN + MAINTENANCE_INTERVAL;
    dht.handle_timeout(retry);
    let out = sent(&mut dht);
    assert_eq!(out.len(), 1, "bootstrap not retried: {out:?}");
    assert_eq!(out[0].0, addr(1));
}

#[test]
fn lookups_with_nothing_to_ask_end_at_once_and_are_capped() {
    let t0 = Instant::now();
    let mut dht = Dht::with_id(t0, OWN, 1, DhtConfig::default());
    let l = dht.announce(t0, HASH, AnnouncePort::Port(1));
    assert_eq!(
        events(&mut dht),
        vec![DhtEvent::AnnounceDone {
            lookup: l,
            info_hash: HASH,
            stored: 0
        }]
    );

    let config = DhtConfig {
        max_lookups: 1,
        ..DhtConfig::default()
    };
    let mut dht = Dht::with_id(t0, OWN, 1, config);
    dht.insert_node(t0, nid(1), addr(1));
    let first = dht.get_peers(t0, HASH);
    let second = dht.get_peers(t0, HASH);
    assert_ne!(first, second);
    assert_eq!(dht.running_lookups(), 1);
    assert_eq!(
        events(&mut dht),
        vec![DhtEvent::LookupDone {
            lookup: second,
            info_hash: HASH,
            answered: 0
        }]
    );
}

#[test]
fn a_lookup_walks_towards_the_target_and_announces_with_tokens() {
    let t0 = Instant::now();
    let mut dht = Dht::with_id(
        t0,
        OWN,
        1,
        DhtConfig {
            k: 2,
            ..DhtConfig::default()
        },
    );
    // One far node knows two close ones.
    dht.insert_node(t0, nid(0x01), addr(1));
    let l = dht.announce(t0, HASH, AnnouncePort::Implied);
    let out = sent(&mut dht);
    assert_eq!(out.len(), 1);
    let t = out[0].1.transaction.clone();
    let reply =
        |id: NodeId, t: Vec<u8>, nodes: Vec<(NodeId, SocketAddr)>, values: Vec<SocketAddr>| {
            Message {
                transaction: t,
                version: None,
                read_only: false,
                ip: None,
                body: Body::Response(Response {
                    id,
                    nodes: Some(nodes),
                    nodes6: None,
                    values,
                    token: Some(id.0[..4].to_vec()),
                }),
            }
            .encode()
        };
    let peer = SocketAddr::from(([10, 9, 9, 9], 9999));
    dht.handle_datagram(
        t0,
        addr(1),
        &reply(
            nid(0x01),
            t.clone(),
            vec![(nid(0x81), addr(0x81)), (nid(0x82), addr(0x82))],
            vec![peer],
        ),
    );
    // The same answer again (a replay) is ignored.
    dht.handle_datagram(
        t0,
        addr(1),
        &reply(
            nid(0x01),
            t,
            vec![],
            vec![SocketAddr::from(([1, 1, 1, 1], 1))],
        ),
    );
    assert_eq!(
        events(&mut dht),
        vec![DhtEvent::Peers {
            lookup: l,
            info_hash: HASH,
            peers: vec![peer]
        }]
    );
    let mut out = sent(&mut dht);
    out.sort_by_key(|(to, _)| *to);
    assert_eq!(
        out.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![addr(0x81), addr(0x82)]
    );
    for (to, m) in out {
        let id = if to == addr(0x81) {
            nid(0x81)
        } else {
            nid(0x82)
        };
        dht.handle_datagram(t0, to, &reply(id, m.transaction, vec![], vec![peer]));
    }
    // Both close nodes answered: announce to them with their own tokens and implied port.
    let announces = sent(&mut dht);
    assert_eq!(announces.len(), 2);
    for (to, m) in &announces {
        let Body::Query(Query {
            method:
                Method::AnnouncePeer {
                    token,
                    implied_port,
                    info_hash,
                    ..
                },
            ..
        }) = &m.body
        else {
            panic!("not an announce: {m:?}");
        };
        assert!(*implied_port);
        assert_eq!(*info_hash, HASH);
        let expected = if *to == addr(0x81) {
            nid(0x81)
        } else {
            nid(0x82)
        };
        assert_eq!(token[..], expected.0[..4]);
    }
    assert!(events(&mut dht).is_empty(), "announce ended early");
    let (to, m) = &announces[0];
    dht.handle_datagram(
        t0,
        *to,
        &reply(
            nid(if *to == addr(0x81) { 0x81 } else { 0x82 }),
            m.transaction.clone(),
            vec![],
            vec![],
        ),
    );
    dht.handle_timeout(t0 + DhtConfig::default().query_timeout);
    assert_eq!(
        events(&mut dht),
        vec![DhtEvent::AnnounceDone {
            lookup: l,
            info_hash: HASH,
            stored: 1
        }]
    );
    assert_eq!(dht.node_count(), 3, "answering nodes join the table");
}

#[test]
fn state_round_trips_and_hostile_states_are_refused() {
    let t0 = Instant::now();
    let config = DhtConfig {
        ipv6: true,
        ..DhtConfig::default()
    };
    let mut dht = Dht::with_id(t0, OWN, 1, config);
    dht.insert_node(t0, nid(1), addr(1));
    let v6 = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 7));
    dht.insert_node(t0, nid(2), v6);
    let state = dht.save_state(t0);
    let back = Dht::from_state(t0, &state, 2, config).unwrap();
    assert_eq!(back.node_id(), OWN);
    assert_eq!(back.node_count(), 2);
    assert_eq!(
        back.save_state(t0).len(),
        Dht::with_id(t0, OWN, 1, config).save_state(t0).len(),
        "loaded nodes are not good yet"
    );
    // IPv6 off: its saved nodes are skipped.
    assert_eq!(
        Dht::from_state(t0, &state, 2, DhtConfig::default())
            .unwrap()
            .node_count(),
        1
    );

    assert!(matches!(
        Dht::from_state(t0, b"", 1, config),
        Err(StateError::Bencode(_))
    ));
    assert_eq!(
        Dht::from_state(t0, b"le", 1, config).err(),
        Some(StateError::Malformed("not a dictionary"))
    );
    assert!(Dht::from_state(t0, b"d2:id3:abce", 1, config).is_err());
    assert!(Dht::from_state(t0, b"d2:id20:abcdefghij01234567895:nodes3:abce", 1, config).is_err());
    assert_eq!(
        Dht::from_state(t0, &vec![b'd'; MAX_STATE_LEN + 1], 1, config).err(),
        Some(StateError::TooLong(MAX_STATE_LEN + 1))
    );
}

#[test]
fn same_seed_and_inputs_give_the_same_outputs() {
    let run = || {
        let t0 = Instant::now();
        let mut dht = Dht::new(t0, 42, DhtConfig::default());
        dht.add_bootstrap_node(addr(1));
        dht.bootstrap(t0);
        dht.get_peers(t0, HASH);
        dht.handle_datagram(
            t0,
            addr(2),
            &query(b"aa", nid(2), Method::GetPeers { info_hash: HASH }),
        );
        dht.handle_timeout(t0 + Duration::from_secs(60));
        let out: Vec<_> = std::iter::from_fn(|| dht.poll_transmit()).collect();
        (dht.node_id(), out, events(&mut dht))
    };
    assert_eq!(run(), run());
}
