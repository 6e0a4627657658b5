//! Fuzz-style properties of the DHT's parsers and of the node fed hostile datagrams: the KRPC
//! decoder and the state loader never panic, whatever decodes re-encodes to the same message,
//! and a node bombarded with arbitrary, mutated and well-formed-but-hostile datagrams stays
//! within its bounds. Inputs that once broke something live in `corpus/krpc/` and are replayed
//! by [`corpus_replays_cleanly`].
//!
//! Run longer with e.g. `PROPTEST_CASES=100000 cargo test --release --lib dht::fuzz_tests`.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::krpc::tests::arb_message;
use super::krpc::{Body, KrpcError, Message, MAX_DATAGRAM_LEN};
use super::*;
use crate::bencode::fuzz_tests::{mutate, replay_corpus};

/// Every property of decoding one datagram.
fn check(datagram: &[u8]) {
    match Message::decode(datagram) {
        Ok(m) => {
            let again = m.encode();
            assert_eq!(
                Message::decode(&again).as_ref(),
                Ok(&m),
                "re-encoding changed the message"
            );
        }
        Err(KrpcError::Malformed {
            query_transaction: Some(t),
            ..
        }) => {
            assert!(t.len() <= krpc::MAX_TRANSACTION_LEN);
        }
        Err(_) => {}
    }
    let _ = Dht::from_state(Instant::now(), datagram, 1, DhtConfig::default());
    let mut dht = Dht::new(Instant::now(), 1, both_families());
    feed(&mut dht, Instant::now(), from(1), datagram);
}

fn both_families() -> DhtConfig {
    DhtConfig {
        ipv6: true,
        ..DhtConfig::default()
    }
}

fn from(n: u16) -> SocketAddr {
    if n.is_multiple_of(3) {
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], n))
    } else {
        SocketAddr::from(([127, 0, (n >> 8) as u8, n as u8], 6881))
    }
}

/// Feeds one datagram and drains the node, checking what it sends.
fn feed(dht: &mut Dht, now: Instant, from: SocketAddr, datagram: &[u8]) {
    dht.handle_datagram(now, from, datagram);
    drain(dht);
}

fn drain(dht: &mut Dht) {
    while let Some((to, bytes)) = dht.poll_transmit() {
        assert!(bytes.len() <= MAX_DATAGRAM_LEN);
        assert_ne!(to.port(), 0);
        let m = Message::decode(&bytes).expect("we send valid KRPC");
        if let Body::Response(r) = m.body {
            assert_eq!(r.id, dht.node_id());
        }
    }
    while dht.poll_event().is_some() {}
}

proptest! {
    #[test]
    fn arbitrary_bytes(datagram in proptest::collection::vec(any::<u8>(), 0..1500)) {
        check(&datagram);
    }

    #[test]
    fn mutated_valid_messages(
        m in arb_message(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        let mut bytes = m.encode();
        check(&bytes);
        mutate(&mut bytes, &edits);
        check(&bytes);
    }

    /// A node fed a long stream of well-formed messages (queries, answers with forged
    /// transaction ids, errors) from many addresses, with time passing, stays bounded and
    /// keeps answering.
    #[test]
    fn a_node_under_a_stream_of_messages_stays_bounded(
        msgs in proptest::collection::vec((arb_message(), 0u16..600, 0u64..2000), 1..120),
    ) {
        let t0 = Instant::now();
        let config = DhtConfig { k: 2, max_in_flight: 8, max_lookups: 2, ..both_families() };
        let mut dht = Dht::new(t0, 9, config);
        dht.add_bootstrap_node(from(1));
        dht.bootstrap(t0);
        dht.get_peers(t0, crate::types::InfoHash([3; 20]));
        let mut now = t0;
        for (m, sender, ms) in msgs {
            now += Duration::from_millis(ms);
            feed(&mut dht, now, from(sender), &m.encode());
            dht.handle_timeout(now);
            drain(&mut dht);
            prop_assert!(dht.node_count() <= 2 * 160 * config.k);
            prop_assert!(dht.in_flight() <= config.max_in_flight);
            prop_assert!(dht.running_lookups() <= config.max_lookups);
            prop_assert!(dht.poll_timeout().is_some_and(|t| t > now));
        }
    }

    #[test]
    fn mutated_states_load_or_fail_cleanly(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        let t0 = Instant::now();
        let mut dht = Dht::new(t0, seed, both_families());
        for n in 1..40u16 {
            let mut id = [0u8; 20];
            id[..8].copy_from_slice(&(seed ^ u64::from(n)).to_be_bytes());
            dht.insert_node(t0, NodeId(id), from(n));
        }
        let mut state = dht.save_state(t0);
        let loaded = Dht::from_state(t0, &state, 1, both_families()).expect("our own state loads");
        prop_assert_eq!(loaded.node_id(), dht.node_id());
        prop_assert_eq!(loaded.node_count(), dht.node_count());
        mutate(&mut state, &edits);
        if let Ok(d) = Dht::from_state(t0, &state, 1, both_families()) {
            prop_assert!(d.node_count() <= 2 * 160 * 8);
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    replay_corpus("krpc", check, |b| Message::decode(b).is_ok());
}
