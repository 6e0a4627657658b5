//! Fuzz-style property tests: arbitrary bytes, mutated valid packets and hostile packets aimed at
//! a live connection (impossible sequence and ack numbers, huge windows, selective acks for
//! anything, extension chains that repeat or overrun) must never panic, and the connection's
//! counters and buffers must stay consistent and bounded (`check_invariants` runs after every
//! packet in test builds). Inputs that once broke something live in `corpus/utp/` and are
//! replayed by [`corpus_replays_cleanly`].
//!
//! Run longer with e.g. `PROPTEST_CASES=100000 cargo test --release -p bitrush-core utp::fuzz`.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::packet::{looks_like_utp, Header, Packet, PacketType, HEADER_LEN};
use super::socket_tests::{addr, connected, drain, events, RawPeer, US};
use super::*;
use crate::bencode::fuzz_tests::{mutate, replay_corpus};

/// Parser properties: a parsed packet's parts lie inside the datagram, and re-encoding it (minus
/// unknown extensions) parses back to the same thing.
fn check_parse(bytes: &[u8]) {
    let Ok(p) = Packet::parse(bytes) else {
        return;
    };
    assert!(looks_like_utp(bytes));
    assert!(p.payload.len() + HEADER_LEN <= bytes.len());
    assert!(bytes.ends_with(p.payload));
    let mut again = Vec::new();
    Packet::encode(&p.header, p.sack, p.payload, &mut again);
    let q = Packet::parse(&again).expect("re-encoding parses");
    assert_eq!((q.header, q.sack, q.payload), (p.header, p.sack, p.payload));
}

/// A connection with data in flight both ways and a packet held out of order.
fn busy_connection() -> (UtpSocket, ConnectionId, RawPeer, Instant) {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 100_000);
    assert_eq!(s.write(conn, &[5u8; 20_000]), 20_000);
    let _ = drain(&mut s, now);
    let held = peer.seq_nr.wrapping_add(2);
    let first = peer.packet(PacketType::Data, b"first");
    let early = RawPeer {
        seq_nr: held,
        ..peer.clone()
    }
    .packet(PacketType::Data, b"early");
    for p in [&first, &early] {
        let _ = s.handle_datagram(now, peer.addr, p);
    }
    let _ = drain(&mut s, now);
    (s, conn, peer, now)
}

/// Feeds `packets` to a busy connection (as they are, and with their connection id made ours),
/// then runs it on for a while: nothing may panic and the bounds must hold.
fn check_connection(packets: &[Vec<u8>]) {
    let (mut s, conn, peer, mut now) = busy_connection();
    let config = *s.config();
    for bytes in packets {
        now += Duration::from_millis(3);
        let _ = s.handle_datagram(now, peer.addr, bytes);
        if bytes.len() >= 4 {
            let mut ours = bytes.clone();
            ours[2..4].copy_from_slice(&peer.conn_id.to_be_bytes());
            let _ = s.handle_datagram(now, peer.addr, &ours);
        }
        let _ = drain(&mut s, now);
        let _ = events(&mut s);
        let mut buf = [0u8; 4096];
        while s.read(conn, &mut buf) > 0 {}
        let _ = s.write(conn, &[1u8; 3000]);
        if let Some(st) = s.stats(conn) {
            assert!(st.send_buffered <= config.send_buffer);
            assert!(st.recv_buffered + st.reorder_buffered <= config.recv_buffer);
            assert!(st.reorder_packets <= REORDER_PACKETS);
            assert!(st.packets_in_flight <= MAX_PACKETS_IN_FLIGHT + 1);
            assert!(st.cwnd >= config.max_payload && st.cwnd <= config.send_buffer);
        }
    }
    // Let every timer run out: the connection must end by itself.
    for _ in 0..100 {
        let Some(t) = s.poll_timeout() else { break };
        now = now.max(t);
        s.handle_timeout(now);
        let _ = drain(&mut s, now);
        let _ = events(&mut s);
    }
    assert_eq!(s.poll_timeout(), None, "a dead peer's connection must end");
    // The same bytes at a listening socket (SYN floods, strays).
    let mut listener = UtpSocket::new(now, config, 3);
    for bytes in packets {
        let _ = listener.handle_datagram(now, addr(US), bytes);
        let _ = drain(&mut listener, now);
        let _ = events(&mut listener);
    }
    assert!(listener.connection_count() <= config.accept_backlog);
}

/// One packet of any type with the given fields and a raw extension chain: `(id, claimed
/// length, body)` triples whose body may be shorter than claimed.
fn raw_packet(h: &Header, chain: &[(u8, u8, Vec<u8>)], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    h.write(chain.first().map_or(0, |e| e.0), &mut out);
    for (i, (_, len, body)) in chain.iter().enumerate() {
        out.push(chain.get(i + 1).map_or(0, |e| e.0));
        out.push(*len);
        out.extend_from_slice(body);
    }
    out.extend_from_slice(payload);
    out
}

fn arb_chain() -> impl Strategy<Value = Vec<(u8, u8, Vec<u8>)>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(1u8), Just(2u8), Just(3u8), 1u8..=255],
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..40),
        ),
        0..6,
    )
}

/// Packets for our connection: sequence and ack numbers near the real ones or anywhere,
/// windows from 0 to `u32::MAX`.
fn arb_hostile(conn_id: u16, seq_base: u16, ack_base: u16) -> impl Strategy<Value = Vec<u8>> {
    (
        super::packet_tests::arb_type(),
        prop_oneof![
            (-40i32..40).prop_map(move |d| seq_base.wrapping_add(d as u16)),
            any::<u16>()
        ],
        prop_oneof![
            (-40i32..40).prop_map(move |d| ack_base.wrapping_add(d as u16)),
            any::<u16>()
        ],
        prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
        any::<u32>(),
        arb_chain(),
        proptest::collection::vec(any::<u8>(), 0..1500),
    )
        .prop_map(
            move |(packet_type, seq_nr, ack_nr, wnd_size, ts, chain, payload)| {
                let h = Header {
                    packet_type,
                    connection_id: conn_id,
                    timestamp_us: ts,
                    timestamp_diff_us: ts.rotate_left(7),
                    wnd_size,
                    seq_nr,
                    ack_nr,
                };
                raw_packet(&h, &chain, &payload)
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_bytes_parse_safely(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_parse(&bytes);
    }

    #[test]
    fn mutated_packets_parse_safely(
        h in super::packet_tests::arb_header(),
        chain in arb_chain(),
        payload in proptest::collection::vec(any::<u8>(), 0..100),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..6),
    ) {
        let mut bytes = raw_packet(&h, &chain, &payload);
        check_parse(&bytes);
        mutate(&mut bytes, &edits);
        check_parse(&bytes);
    }

    #[test]
    fn hostile_packets_leave_a_connection_consistent(
        packets in proptest::collection::vec(arb_hostile(0, 500, 0), 1..12),
    ) {
        // The connection id is patched to ours by `check_connection`; sequence numbers near 500
        // are near the raw peer's, acks anywhere (ours start at a random number).
        check_connection(&packets);
    }

    #[test]
    fn arbitrary_datagrams_at_a_connection(
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
    ) {
        check_connection(&packets);
    }
}

#[test]
fn hostile_acks_near_our_sequence_numbers() {
    // Acks aimed at the packets really in flight (the random strategy rarely hits them).
    let (mut s, conn, peer, mut now) = busy_connection();
    let ours = s.stats(conn).expect("stats");
    assert!(ours.packets_in_flight > 1);
    let mut buf = Vec::new();
    let _ = s.write(conn, b"more");
    let to = s.poll_transmit(now, &mut buf);
    let last = to
        .and_then(|_| Packet::parse(&buf).ok())
        .map_or(0, |p| p.header.seq_nr);
    for (i, ack) in (0..40u16).map(|d| last.wrapping_sub(d)).enumerate() {
        for sack_len in [0usize, 1, 3, 4, 32, 255] {
            let h = Header {
                packet_type: PacketType::State,
                connection_id: peer.conn_id,
                timestamp_us: i as u32,
                timestamp_diff_us: u32::MAX - i as u32,
                wnd_size: if i % 2 == 0 { u32::MAX } else { 0 },
                seq_nr: peer.seq_nr,
                ack_nr: ack,
            };
            let sack = vec![0b1010_1101u8.rotate_left(i as u32); sack_len];
            let mut out = Vec::new();
            Packet::encode(&h, (sack_len > 0).then_some(&sack[..]), &[], &mut out);
            now += Duration::from_millis(1);
            let _ = s.handle_datagram(now, peer.addr, &out);
            let _ = drain(&mut s, now);
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    replay_corpus(
        "utp",
        |bytes| {
            check_parse(bytes);
            check_connection(&[bytes.to_vec()]);
        },
        |bytes| Packet::parse(bytes).is_ok(),
    );
}
