//! Behaviour of `UtpSocket` against a hand-driven peer: the handshake on the wire, windows,
//! fast retransmit, timeouts, RESET, Nagle, the accept backlog and datagrams of other protocols.

use std::time::{Duration, Instant};

use core::net::SocketAddr;

use super::packet::{Header, Packet, PacketType};
use super::*;

pub(crate) const US: &str = "10.0.0.1:6881";
pub(crate) const PEER: &str = "10.0.0.2:7000";

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// The peer side, driven by hand: it answers our SYN and sends what a test asks.
#[derive(Clone)]
pub(crate) struct RawPeer {
    pub addr: SocketAddr,
    /// Our receive id (what the peer puts in its packets).
    pub conn_id: u16,
    /// The peer's next sequence number.
    pub seq_nr: u16,
    /// The last of our sequence numbers the peer acks.
    pub ack_nr: u16,
    pub wnd: u32,
}

impl RawPeer {
    pub fn packet(&mut self, ptype: PacketType, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            packet_type: ptype,
            connection_id: self.conn_id,
            timestamp_us: 1000,
            timestamp_diff_us: 5000,
            wnd_size: self.wnd,
            seq_nr: self.seq_nr,
            ack_nr: self.ack_nr,
        };
        if ptype == PacketType::Data || ptype == PacketType::Fin {
            self.seq_nr = self.seq_nr.wrapping_add(1);
        }
        let mut out = Vec::new();
        Packet::encode(&h, None, payload, &mut out);
        out
    }

    pub fn state_with_sack(&self, sack: &[u8]) -> Vec<u8> {
        let h = Header {
            packet_type: PacketType::State,
            connection_id: self.conn_id,
            timestamp_us: 1000,
            timestamp_diff_us: 5000,
            wnd_size: self.wnd,
            seq_nr: self.seq_nr,
            ack_nr: self.ack_nr,
        };
        let mut out = Vec::new();
        Packet::encode(&h, Some(sack), &[], &mut out);
        out
    }
}

/// Every datagram the socket has to send now, parsed into (header, payload).
pub(crate) fn drain(s: &mut UtpSocket, now: Instant) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(_to) = s.poll_transmit(now, &mut buf) {
        let p = Packet::parse(&buf).expect("we send valid packets");
        out.push((p.header, p.payload.to_vec()));
    }
    out
}

pub(crate) fn events(s: &mut UtpSocket) -> Vec<UtpEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Our socket connected to a raw peer that advertises `wnd`.
pub(crate) fn connected(
    config: UtpConfig,
    wnd: u32,
) -> (UtpSocket, ConnectionId, RawPeer, Instant) {
    let now = Instant::now();
    let mut s = UtpSocket::new(now, config, 99);
    let conn = s.connect(now, addr(PEER)).expect("connect");
    let sent = drain(&mut s, now);
    assert_eq!(sent.len(), 1);
    let syn = sent[0].0;
    assert_eq!(syn.packet_type, PacketType::Syn);
    let mut peer = RawPeer {
        addr: addr(PEER),
        conn_id: syn.connection_id,
        seq_nr: 500,
        ack_nr: syn.seq_nr,
        wnd,
    };
    let synack = peer.packet(PacketType::State, &[]);
    assert_eq!(
        s.handle_datagram(now, peer.addr, &synack),
        DatagramKind::Utp
    );
    assert_eq!(events(&mut s), vec![UtpEvent::Connected(conn)]);
    (s, conn, peer, now)
}

#[test]
fn connection_ids_follow_bep29_both_ways() {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 100_000);
    assert_eq!(s.write(conn, b"hello"), 5);
    let sent = drain(&mut s, now);
    let (h, payload) = &sent[0];
    assert_eq!(h.packet_type, PacketType::Data);
    assert_eq!(
        h.connection_id,
        peer.conn_id.wrapping_add(1),
        "send id = receive id + 1"
    );
    assert_eq!(
        h.ack_nr, 499,
        "the SYN-ACK's seq_nr is the peer's first data packet"
    );
    assert_eq!(payload, b"hello");
    // Incoming: the SYN's id is our send id, ours to receive on is one more.
    let mut acceptor = UtpSocket::new(now, UtpConfig::default(), 5);
    peer.seq_nr = 77;
    let syn = peer.packet(PacketType::Syn, &[]);
    let _ = acceptor.handle_datagram(now, addr(US), &syn);
    let Some(UtpEvent::Incoming { conn: c, from }) = acceptor.poll_event() else {
        panic!("no Incoming event");
    };
    assert_eq!(from, addr(US));
    let synack = drain(&mut acceptor, now);
    assert_eq!(synack.len(), 1);
    let h = synack[0].0;
    assert_eq!(
        (h.packet_type, h.connection_id, h.ack_nr),
        (PacketType::State, peer.conn_id, 77)
    );
    // Data written at once follows the SYN-ACK, starting at its sequence number.
    assert_eq!(acceptor.write(c, b"x"), 1);
    let data = drain(&mut acceptor, now);
    assert_eq!(data[0].0.seq_nr, h.seq_nr);
    // A repeated SYN (our SYN-ACK was lost) gets the same SYN-ACK again.
    let _ = acceptor.handle_datagram(now, addr(US), &syn);
    let again = drain(&mut acceptor, now);
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].0.packet_type, again[0].0.seq_nr),
        (PacketType::State, h.seq_nr)
    );
}

#[test]
fn the_peer_window_is_respected_and_a_shut_window_is_probed() {
    let config = UtpConfig::default();
    let (mut s, conn, mut peer, now) = connected(config, 3000);
    assert_eq!(s.write(conn, &[7u8; 100_000]), 100_000);
    let sent = drain(&mut s, now);
    let bytes: usize = sent.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(
        sent.len(),
        2,
        "two 1400-byte packets fit a 3000-byte window"
    );
    assert_eq!(bytes, 2800);
    // The peer acks both but its window is shut.
    peer.ack_nr = sent[1].0.seq_nr;
    peer.wnd = 0;
    let ack = peer.packet(PacketType::State, &[]);
    let _ = s.handle_datagram(now, peer.addr, &ack);
    assert!(
        drain(&mut s, now).is_empty(),
        "nothing goes into a shut window"
    );
    // After a timeout, one probe goes out anyway.
    let deadline = s.poll_timeout().expect("a probe timer");
    assert!(deadline > now);
    s.handle_timeout(deadline);
    let probe = drain(&mut s, deadline);
    assert_eq!(probe.len(), 1);
    assert_eq!(probe[0].1.len(), 1400);
}

#[test]
fn a_huge_advertised_window_does_not_grow_our_buffers() {
    let config = UtpConfig {
        send_buffer: 64 * 1024,
        ..UtpConfig::default()
    };
    let (mut s, conn, mut peer, mut now) = connected(config, u32::MAX);
    assert_eq!(
        s.write(conn, &vec![1u8; 10 << 20]),
        64 * 1024,
        "the send buffer caps writes"
    );
    for _ in 0..200 {
        let sent = drain(&mut s, now);
        let Some(last) = sent.last() else { break };
        let stats = s.stats(conn).expect("stats");
        assert!(stats.bytes_in_flight <= 64 * 1024);
        assert!(stats.cwnd <= 64 * 1024);
        peer.ack_nr = last.0.seq_nr;
        now += Duration::from_millis(1);
        let ack = peer.packet(PacketType::State, &[]);
        let _ = s.handle_datagram(now, peer.addr, &ack);
        let _ = s.write(conn, &vec![1u8; 1 << 20]);
        assert!(s.stats(conn).expect("stats").send_buffered <= 64 * 1024);
    }
}

#[test]
fn three_duplicate_acks_resend_the_missing_packet() {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 1 << 20);
    assert_eq!(s.write(conn, &[3u8; 1400 * 4]), 5600);
    let sent = drain(&mut s, now);
    assert_eq!(sent.len(), 4);
    let first = sent[0].0.seq_nr;
    // The peer got packets 2..4 but not 1: three acks of the SYN.
    peer.ack_nr = first.wrapping_sub(1);
    for _ in 0..2 {
        let dup = peer.packet(PacketType::State, &[]);
        let _ = s.handle_datagram(now, peer.addr, &dup);
        assert!(drain(&mut s, now).is_empty());
    }
    let dup = peer.packet(PacketType::State, &[]);
    let _ = s.handle_datagram(now, peer.addr, &dup);
    let resent = drain(&mut s, now);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].0.seq_nr, first);
    assert_eq!(s.stats(conn).expect("stats").retransmits, 1);
}

#[test]
fn a_selective_ack_hole_is_resent_and_acked_packets_are_not() {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 1 << 20);
    assert_eq!(s.write(conn, &[3u8; 1400 * 4]), 5600);
    let sent = drain(&mut s, now);
    let first = sent[0].0.seq_nr;
    // Packet 1 acked, 2 missing, 3 and 4 selectively acked: only 2 acked after it, no loss yet.
    peer.ack_nr = first;
    let sack = peer.state_with_sack(&[0b11, 0, 0, 0]);
    let _ = s.handle_datagram(now, peer.addr, &sack);
    assert!(drain(&mut s, now).is_empty());
    assert_eq!(s.write(conn, &[4u8; 1400 * 2]), 2800);
    let more = drain(&mut s, now);
    assert_eq!(more.len(), 2);
    // Now 3, 4, 5 and 6 are held: the hole at 2 is a loss.
    let sack = peer.state_with_sack(&[0b1111, 0, 0, 0]);
    let _ = s.handle_datagram(now, peer.addr, &sack);
    let resent = drain(&mut s, now);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].0.seq_nr, first.wrapping_add(1));
}

#[test]
fn timeouts_back_off_and_declare_the_peer_dead() {
    let config = UtpConfig::default();
    let (mut s, conn, _peer, now) = connected(config, 1 << 20);
    assert_eq!(s.write(conn, b"anyone there?"), 13);
    assert_eq!(drain(&mut s, now).len(), 1);
    let mut last_rto = Duration::ZERO;
    let mut t = now;
    let mut sends = 1;
    while let Some(deadline) = s.poll_timeout() {
        t = deadline;
        s.handle_timeout(t);
        let ev = events(&mut s);
        if let Some(UtpEvent::Closed { reason, .. }) = ev.first() {
            assert_eq!(*reason, CloseReason::TimedOut);
            break;
        }
        sends += drain(&mut s, t).len();
        let rto = s.stats(conn).expect("alive").rto;
        assert!(
            rto > last_rto,
            "the timeout grows: {rto:?} after {last_rto:?}"
        );
        last_rto = rto;
    }
    assert_eq!(sends, 1 + config.max_retransmits as usize);
    assert!(
        t - now > Duration::from_secs(10),
        "gave up after {:?}",
        t - now
    );
    assert_eq!(s.connection_count(), 0);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn an_unanswered_syn_times_out_and_a_silent_peer_idles_out() {
    let config = UtpConfig::default();
    let now = Instant::now();
    let mut s = UtpSocket::new(now, config, 1);
    let conn = s.connect(now, addr(PEER)).expect("connect");
    let mut syns = drain(&mut s, now).len();
    let mut t = now;
    while let Some(d) = s.poll_timeout() {
        t = d;
        s.handle_timeout(t);
        syns += drain(&mut s, t).len();
    }
    assert_eq!(t - now, config.connect_timeout);
    assert_eq!(syns, 3, "SYN at 0, 1 and 3 s");
    assert_eq!(
        events(&mut s),
        vec![UtpEvent::Closed {
            conn,
            reason: CloseReason::ConnectTimeout
        }]
    );
    let (mut s, conn, _peer, now) = connected(config, 1 << 20);
    let idle = s.poll_timeout().expect("idle timer");
    assert_eq!(idle, now + config.idle_timeout);
    s.handle_timeout(idle);
    assert_eq!(
        events(&mut s),
        vec![UtpEvent::Closed {
            conn,
            reason: CloseReason::IdleTimeout
        }]
    );
}

#[test]
fn reset_both_ways() {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 1 << 20);
    // A RESET acking what we never sent is a blind guess: ignored.
    let real_ack = peer.ack_nr;
    peer.ack_nr = real_ack.wrapping_add(1000);
    let forged = peer.packet(PacketType::Reset, &[]);
    let _ = s.handle_datagram(now, peer.addr, &forged);
    assert!(events(&mut s).is_empty());
    peer.ack_nr = real_ack;
    let rst = peer.packet(PacketType::Reset, &[]);
    let _ = s.handle_datagram(now, peer.addr, &rst);
    assert_eq!(
        events(&mut s),
        vec![UtpEvent::Closed {
            conn,
            reason: CloseReason::Reset
        }]
    );
    assert_eq!(s.write(conn, b"x"), 0, "the handle is dead");
    let (mut s, conn, peer, now) = connected(UtpConfig::default(), 1 << 20);
    s.reset(now, conn);
    let sent = drain(&mut s, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.packet_type, PacketType::Reset);
    assert_eq!(sent[0].0.connection_id, peer.conn_id.wrapping_add(1));
    assert!(events(&mut s).is_empty());
    assert_eq!(s.connection_count(), 0);
}

#[test]
fn strays_get_a_reset_and_other_protocols_are_handed_back() {
    let now = Instant::now();
    let mut s = UtpSocket::new(now, UtpConfig::default(), 1);
    let mut stray = RawPeer {
        addr: addr(PEER),
        conn_id: 4242,
        seq_nr: 9,
        ack_nr: 1,
        wnd: 1000,
    };
    let data = stray.packet(PacketType::Data, b"late");
    assert_eq!(s.handle_datagram(now, stray.addr, &data), DatagramKind::Utp);
    let sent = drain(&mut s, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (
            sent[0].0.packet_type,
            sent[0].0.connection_id,
            sent[0].0.ack_nr
        ),
        (PacketType::Reset, 4242, 9)
    );
    let state = stray.packet(PacketType::State, &[]);
    let _ = s.handle_datagram(now, stray.addr, &state);
    assert!(drain(&mut s, now).is_empty(), "a stray ack is ignored");
    let dht = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    assert_eq!(
        s.handle_datagram(now, stray.addr, dht),
        DatagramKind::NotUtp
    );
    assert_eq!(
        s.handle_datagram(now, stray.addr, &[]),
        DatagramKind::NotUtp
    );
    // uTP-looking but malformed: ours, dropped.
    let mut bad = data.clone();
    bad[1] = 1;
    bad.truncate(21);
    assert_eq!(s.handle_datagram(now, stray.addr, &bad), DatagramKind::Utp);
    assert!(drain(&mut s, now).is_empty());
}

#[test]
fn the_accept_backlog_bounds_half_open_connections() {
    let config = UtpConfig {
        accept_backlog: 4,
        ..UtpConfig::default()
    };
    let now = Instant::now();
    let mut s = UtpSocket::new(now, config, 1);
    for port in 0..10u16 {
        let mut p = RawPeer {
            addr: SocketAddr::from(([10, 0, 0, 9], 1000 + port)),
            conn_id: port,
            seq_nr: 1,
            ack_nr: 0,
            wnd: 1000,
        };
        let syn = p.packet(PacketType::Syn, &[]);
        let _ = s.handle_datagram(now, p.addr, &syn);
    }
    assert_eq!(s.connection_count(), 4);
    let sent = drain(&mut s, now);
    let resets = sent
        .iter()
        .filter(|(h, _)| h.packet_type == PacketType::Reset)
        .count();
    assert_eq!(resets, 6, "SYNs past the backlog are refused");
    // Unconfirmed connections expire after the connect timeout.
    s.handle_timeout(now + config.connect_timeout);
    assert_eq!(s.connection_count(), 0);
    let closed = events(&mut s)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                UtpEvent::Closed {
                    reason: CloseReason::ConnectTimeout,
                    ..
                }
            )
        })
        .count();
    assert_eq!(closed, 4);
}

#[test]
fn nagle_holds_small_writes_until_the_small_packet_is_acked() {
    for nagle in [true, false] {
        let config = UtpConfig {
            nagle,
            ..UtpConfig::default()
        };
        let (mut s, conn, mut peer, now) = connected(config, 1 << 20);
        assert_eq!(s.write(conn, b"request1"), 8);
        let first = drain(&mut s, now);
        assert_eq!(first.len(), 1);
        assert_eq!(s.write(conn, b"request2"), 8);
        assert_eq!(s.write(conn, b"request3"), 8);
        let held = drain(&mut s, now);
        if !nagle {
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].1, b"request2request3");
            continue;
        }
        assert!(held.is_empty(), "coalesced until the first is acked");
        peer.ack_nr = first[0].0.seq_nr;
        let ack = peer.packet(PacketType::State, &[]);
        let _ = s.handle_datagram(now, peer.addr, &ack);
        let next = drain(&mut s, now);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1, b"request2request3");
    }
}

#[test]
fn data_beyond_the_reorder_span_or_the_fin_is_dropped() {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 1 << 20);
    let start = peer.seq_nr;
    peer.seq_nr = start.wrapping_add(REORDER_PACKETS as u16 + 5);
    let far = peer.packet(PacketType::Data, b"far");
    let _ = s.handle_datagram(now, peer.addr, &far);
    assert!(drain(&mut s, now).is_empty(), "not even acked");
    assert_eq!(s.readable_len(conn), 0, "dropped bytes are not readable");
    peer.seq_nr = start;
    let data = peer.packet(PacketType::Data, b"abc");
    let fin = peer.packet(PacketType::Fin, &[]);
    let after = peer.packet(PacketType::Data, b"after the end");
    for p in [&after, &fin, &data] {
        let _ = s.handle_datagram(now, peer.addr, p);
    }
    let acks = drain(&mut s, now);
    assert_eq!(
        acks.last().expect("acked").0.ack_nr,
        start.wrapping_add(1),
        "FIN acked"
    );
    assert_eq!(s.readable_len(conn), 3, "in-order bytes up to the FIN");
    let mut buf = [0u8; 64];
    assert_eq!(s.read(conn, &mut buf), 3);
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(s.readable_len(conn), 0);
    assert_eq!(
        events(&mut s).last(),
        Some(&UtpEvent::Closed {
            conn,
            reason: CloseReason::PeerClosed
        })
    );
    // Our FIN follows; its acknowledgement ends the connection.
    let fin = drain(&mut s, now);
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].0.packet_type, PacketType::Fin);
    peer.ack_nr = fin[0].0.seq_nr;
    let ack = peer.packet(PacketType::State, &[]);
    let _ = s.handle_datagram(now, peer.addr, &ack);
    let linger = s.poll_timeout().expect("linger");
    s.handle_timeout(linger);
    assert_eq!(s.connection_count(), 0);
}

#[test]
fn acks_for_unsent_packets_are_ignored() {
    let (mut s, conn, mut peer, now) = connected(UtpConfig::default(), 1 << 20);
    assert_eq!(s.write(conn, b"x"), 1);
    let sent = drain(&mut s, now);
    peer.ack_nr = sent[0].0.seq_nr.wrapping_add(10);
    let forged = peer.packet(PacketType::Data, b"forged");
    let _ = s.handle_datagram(now, peer.addr, &forged);
    let mut buf = [0u8; 16];
    assert_eq!(s.read(conn, &mut buf), 0, "the whole packet is ignored");
    assert_eq!(s.stats(conn).expect("stats").packets_in_flight, 1);
}

#[test]
fn connections_receiving_data_share_the_total_window() {
    let config = UtpConfig {
        recv_window_total: 200_000,
        ..UtpConfig::default()
    };
    let mut now = Instant::now();
    let mut s = UtpSocket::new(now, config, 4);
    let mut peers = Vec::new();
    for port in [7001u16, 7002] {
        let peer_addr = SocketAddr::from(([10, 0, 0, 2], port));
        let conn = s.connect(now, peer_addr).expect("connect");
        let syn = drain(&mut s, now)[0].0;
        let mut peer = RawPeer {
            addr: peer_addr,
            conn_id: syn.connection_id,
            seq_nr: 100,
            ack_nr: syn.seq_nr,
            wnd: 1 << 20,
        };
        let synack = peer.packet(PacketType::State, &[]);
        let _ = s.handle_datagram(now, peer_addr, &synack);
        peers.push((conn, peer));
    }
    let window_after_data = |s: &mut UtpSocket, now, peer: &mut RawPeer| {
        let data = peer.packet(PacketType::Data, &[1u8; 1000]);
        let _ = s.handle_datagram(now, peer.addr, &data);
        let acks = drain(s, now);
        acks.last().expect("an ack").0.wnd_size as usize
    };
    let (_, p0) = &mut peers[0];
    // The share caps the window, not the bytes waiting to be read (those left the kernel).
    assert_eq!(window_after_data(&mut s, now, p0), 200_000);
    now += Duration::from_millis(100);
    let (_, p1) = &mut peers[1];
    let _ = window_after_data(&mut s, now, p1);
    now += Duration::from_millis(100);
    for (conn, peer) in peers.iter_mut() {
        let mut sink = [0u8; 4096];
        while s.read(*conn, &mut sink) > 0 {}
        assert_eq!(
            window_after_data(&mut s, now, peer),
            100_000,
            "two receivers, half each"
        );
    }
    // A second later only the one still receiving keeps a share: it gets it all back.
    now += Duration::from_millis(1500);
    let (_, p0) = &mut peers[0];
    assert_eq!(window_after_data(&mut s, now, p0), 200_000);
}

#[test]
fn a_short_write_earns_one_writable_once_half_the_buffer_is_free() {
    let config = UtpConfig {
        send_buffer: 16 * 1400,
        ..UtpConfig::default()
    };
    let (mut s, conn, mut peer, now) = connected(config, 1 << 20);
    assert_eq!(s.write(conn, &[9u8; 100_000]), 16 * 1400);
    let mut sent = drain(&mut s, now);
    assert!(events(&mut s).is_empty());
    // Acking a quarter frees too little; acking half frees enough; once is enough.
    for (acked, writable) in [(3usize, false), (8, true), (12, false)] {
        while sent.len() <= acked {
            sent.extend(drain(&mut s, now));
            peer.ack_nr = sent[sent.len().min(acked) - 1].0.seq_nr;
            let ack = peer.packet(PacketType::State, &[]);
            let _ = s.handle_datagram(now, peer.addr, &ack);
            sent.extend(drain(&mut s, now));
        }
        peer.ack_nr = sent[acked].0.seq_nr;
        let ack = peer.packet(PacketType::State, &[]);
        let _ = s.handle_datagram(now, peer.addr, &ack);
        assert_eq!(
            events(&mut s) == vec![UtpEvent::Writable(conn)],
            writable,
            "after acking {} packets",
            acked + 1
        );
    }
}
