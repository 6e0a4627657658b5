//! Unit and property tests of the packet codec, sequence arithmetic, buffers and congestion
//! control.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::buffers::{Accepted, ReceiveBuffer, SendBuffer};
use super::congestion::{BaseDelay, Ledbat, RttEstimator};
use super::packet::*;

pub(crate) fn arb_type() -> impl Strategy<Value = PacketType> {
    prop::sample::select(vec![
        PacketType::Data,
        PacketType::Fin,
        PacketType::State,
        PacketType::Reset,
        PacketType::Syn,
    ])
}

pub(crate) fn arb_header() -> impl Strategy<Value = Header> {
    (
        arb_type(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(
            |(packet_type, connection_id, ts, diff, wnd, seq_nr, ack_nr)| Header {
                packet_type,
                connection_id,
                timestamp_us: ts,
                timestamp_diff_us: diff,
                wnd_size: wnd,
                seq_nr,
                ack_nr,
            },
        )
}

fn sample_header() -> Header {
    Header {
        packet_type: PacketType::Data,
        connection_id: 0x1234,
        timestamp_us: 0xdead_beef,
        timestamp_diff_us: 7,
        wnd_size: 1 << 20,
        seq_nr: 65535,
        ack_nr: 1,
    }
}

proptest! {
    #[test]
    fn encode_parse_round_trip(
        header in arb_header(),
        sack in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255)),
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let mut out = Vec::new();
        Packet::encode(&header, sack.as_deref(), &payload, &mut out);
        prop_assert_eq!(out.len(), HEADER_LEN + sack.as_ref().map_or(0, |s| s.len() + 2) + payload.len());
        prop_assert!(looks_like_utp(&out));
        let p = Packet::parse(&out).expect("own encoding parses");
        prop_assert_eq!(p.header, header);
        prop_assert_eq!(p.sack, sack.as_deref());
        prop_assert_eq!(p.payload, &payload[..]);
    }

    #[test]
    fn seq_less_is_a_strict_order_on_half_the_circle(a in any::<u16>(), d in 1u16..0x8000) {
        let b = a.wrapping_add(d);
        prop_assert!(seq_less(a, b));
        prop_assert!(!seq_less(b, a));
        prop_assert!(!seq_less(a, a));
    }

    #[test]
    fn ts_less_wraps(a in any::<u32>(), d in 1u32..0x8000_0000) {
        prop_assert!(ts_less(a, a.wrapping_add(d)));
        prop_assert!(!ts_less(a.wrapping_add(d), a));
    }

    #[test]
    fn send_buffer_copies_any_range_across_the_ring_seam(
        chunks in proptest::collection::vec(1usize..700, 1..20),
        release in proptest::collection::vec(0usize..900, 1..20),
    ) {
        let mut b = SendBuffer::new(2000);
        let mut written: u64 = 0;
        let mut start: u64 = 0;
        for (len, rel) in chunks.iter().zip(release.iter().cycle()) {
            let data: Vec<u8> = (written..written + *len as u64).map(|i| i as u8).collect();
            let n = b.write(&data);
            written += n as u64;
            prop_assert!(b.len() <= 2000);
            start = (start + *rel as u64).min(written);
            b.release_before(start);
            let mut out = Vec::new();
            b.copy_range(start, (written - start) as usize, &mut out);
            let expect: Vec<u8> = (start..written).map(|i| i as u8).collect();
            prop_assert_eq!(out, expect);
        }
    }
}

#[test]
fn parse_rejects_what_is_not_a_packet() {
    let mut out = Vec::new();
    Packet::encode(&sample_header(), None, b"abc", &mut out);
    assert_eq!(Packet::parse(&out[..19]), Err(PacketError::TooShort(19)));
    let mut v2 = out.clone();
    v2[0] = (v2[0] & 0xf0) | 2;
    assert_eq!(Packet::parse(&v2), Err(PacketError::Version(2)));
    let mut t5 = out.clone();
    t5[0] = 0x51;
    assert_eq!(Packet::parse(&t5), Err(PacketError::Type(5)));
    // An extension whose two-byte prefix is cut.
    let mut cut = out[..HEADER_LEN].to_vec();
    cut[1] = 1;
    cut.push(0);
    assert_eq!(Packet::parse(&cut), Err(PacketError::ExtensionOverrun(20)));
    // An extension whose body runs past the end.
    let mut over = out[..HEADER_LEN].to_vec();
    over[1] = 1;
    over.extend_from_slice(&[0, 8, 1, 2, 3]);
    assert_eq!(Packet::parse(&over), Err(PacketError::ExtensionOverrun(20)));
}

#[test]
fn unknown_extensions_are_skipped_and_the_first_sack_wins() {
    let mut out = Vec::new();
    sample_header().write(3, &mut out);
    // close reason (3), then an unknown (77), then two SACKs
    out.extend_from_slice(&[77, 4, 0, 0, 0, 9]);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&[1, 3, 0b101, 0, 0]);
    out.extend_from_slice(&[0, 4, 0xff, 0xff, 0xff, 0xff]);
    out.extend_from_slice(b"payload");
    let p = Packet::parse(&out).expect("parses");
    assert_eq!(p.sack, Some(&[0b101u8, 0, 0][..]));
    assert_eq!(p.payload, b"payload");
}

#[test]
fn a_long_chain_of_empty_extensions_ends_with_the_datagram() {
    let mut out = Vec::new();
    sample_header().write(9, &mut out);
    for _ in 0..1000 {
        out.extend_from_slice(&[9, 0]);
    }
    // The chain claims another extension but the datagram ends.
    assert!(matches!(
        Packet::parse(&out),
        Err(PacketError::ExtensionOverrun(_))
    ));
    out.extend_from_slice(&[0, 0]);
    assert_eq!(Packet::parse(&out).expect("parses").payload, b"");
}

#[test]
fn only_utp_type_and_version_bytes_look_like_utp() {
    let dht = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    assert!(!looks_like_utp(dht));
    assert!(!looks_like_utp(b""));
    let mut out = Vec::new();
    Packet::encode(&sample_header(), None, &[], &mut out);
    for t in 0..16u8 {
        for v in 0..16u8 {
            out[0] = (t << 4) | v;
            assert_eq!(
                looks_like_utp(&out),
                t <= 4 && v == 1,
                "first byte {:#04x}",
                out[0]
            );
        }
    }
    assert!(!looks_like_utp(&out[..19]));
}

#[test]
fn receive_buffer_reorders_and_sacks() {
    let mut r = ReceiveBuffer::new(100_000);
    assert_eq!(r.accept(2, b"cc"), Accepted::Stored);
    assert_eq!(r.accept(4, b"ee"), Accepted::Stored);
    assert_eq!(r.accept(2, b"cc"), Accepted::Dropped, "duplicate");
    let mut sack = [0u8; 128];
    // bit i = packet i + 2 after the last in-order one = slot i + 1
    assert_eq!(r.write_sack(&mut sack), 4);
    assert_eq!(sack[..4], [0b1010, 0, 0, 0]);
    assert_eq!(r.accept(0, b"a"), Accepted::Delivered(1));
    assert_eq!(
        r.accept(0, b"b"),
        Accepted::Delivered(2),
        "b makes c contiguous"
    );
    assert_eq!(r.accept(0, b"d"), Accepted::Delivered(2));
    assert_eq!(r.write_sack(&mut sack), 0);
    let mut out = [0u8; 16];
    assert_eq!(r.read(&mut out), 7);
    assert_eq!(&out[..7], b"abccdee");
}

#[test]
fn receive_buffer_keeps_room_for_the_packet_it_waits_for() {
    let mut r = ReceiveBuffer::new(10_000);
    // Early packets stop short of the reserve...
    let mut stored = 0;
    for d in 1..100 {
        if r.accept(d, &[0u8; 1000]) == Accepted::Stored {
            stored += 1;
        }
    }
    assert_eq!(
        stored, 8,
        "10 000 bytes minus a 1500-byte reserve hold 8 early packets"
    );
    assert_eq!(r.window(), 500);
    // ...so the one that makes them in order always fits.
    assert_eq!(r.accept(0, &[0u8; 1400]), Accepted::Delivered(9));
    assert!(r.ready_len() <= 10_000);
    let mut sink = vec![0u8; 20_000];
    assert_eq!(r.read(&mut sink), 9400);
    assert_eq!(r.window(), 10_000 - 1500);
}

#[test]
fn receive_buffer_drops_beyond_the_reorder_span() {
    let mut r = ReceiveBuffer::new(1 << 24);
    assert_eq!(r.accept(super::REORDER_PACKETS, b"x"), Accepted::Dropped);
    assert_eq!(r.accept(super::REORDER_PACKETS - 1, b"x"), Accepted::Stored);
    let mut sack = [0u8; 128];
    assert_eq!(r.write_sack(&mut sack), 128, "the bitmask is capped");
}

#[test]
fn rtt_estimator_follows_bep29() {
    let mut e = RttEstimator::new(Duration::from_millis(500));
    assert_eq!(e.rto(), Duration::from_secs(1), "before any sample");
    e.sample(Duration::from_millis(100));
    assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
    assert_eq!(
        e.rto(),
        Duration::from_millis(500),
        "100 + 4·50 is under the floor"
    );
    for _ in 0..50 {
        e.sample(Duration::from_millis(400));
    }
    let srtt = e.srtt().expect("sampled");
    assert!(srtt > Duration::from_millis(390) && srtt <= Duration::from_millis(400));
    assert!(e.rto() >= srtt);
}

#[test]
fn ledbat_grows_under_target_and_backs_off_above_it() {
    let t0 = Instant::now();
    let mss = 1400;
    let mut cc = Ledbat::new(mss, 4 * mss, 1 << 20, Duration::from_millis(100));
    // Base delay 20 ms (plus an arbitrary clock offset that wraps).
    let base: u32 = u32::MAX - 5_000;
    cc.delay_sample(t0, base.wrapping_add(20_000));
    for _ in 0..50 {
        cc.delay_sample(t0, base.wrapping_add(20_000));
        let w = cc.window();
        cc.on_ack(mss, w, None, true);
    }
    let grown = cc.window();
    assert!(grown > 4 * mss, "slow start grows: {grown}");
    // Queueing delay of 250 ms, well above the 100 ms target.
    for _ in 0..200 {
        cc.delay_sample(t0, base.wrapping_add(270_000));
        let w = cc.window();
        cc.on_ack(mss, w, None, true);
    }
    assert!(!cc.in_slow_start());
    assert!(
        cc.window() < grown,
        "{} should be below {grown}",
        cc.window()
    );
    assert_eq!(cc.queuing_delay(), Some(Duration::from_millis(250)));
    // It never drops below one packet.
    for _ in 0..2000 {
        cc.delay_sample(t0, base.wrapping_add(2_000_000));
        cc.on_ack(mss, mss, None, true);
    }
    assert_eq!(cc.window(), mss);
}

#[test]
fn ledbat_window_stays_bounded_and_idle_senders_do_not_grow() {
    let t0 = Instant::now();
    let mut cc = Ledbat::new(1000, 4000, 50_000, Duration::from_millis(100));
    for _ in 0..10_000 {
        cc.delay_sample(t0, 1000);
        cc.on_ack(1000, 1000, None, true);
    }
    assert_eq!(cc.window(), 50_000);
    let mut idle = Ledbat::new(1000, 4000, 50_000, Duration::from_millis(100));
    idle.delay_sample(t0, 1000);
    idle.on_ack(1000, 1000, None, false);
    assert_eq!(
        idle.window(),
        4000,
        "an application-limited sender keeps its window"
    );
    idle.on_loss();
    assert_eq!(idle.window(), 2000);
    idle.on_timeout();
    assert_eq!(idle.window(), 1000);
    assert!(idle.in_slow_start());
}

#[test]
fn base_delay_forgets_old_minutes() {
    let t0 = Instant::now();
    let mut b = BaseDelay::new();
    assert_eq!(b.add(t0, 50_000), 0);
    assert_eq!(b.add(t0 + Duration::from_secs(10), 80_000), 30_000);
    // Three minutes later the 50 ms minimum has aged out; 70 ms is the new base.
    let later = t0 + Duration::from_secs(200);
    assert_eq!(b.add(later, 70_000), 0);
    assert_eq!(b.base(), Some(70_000));
    // A sample wrapping past u32::MAX is still compared the short way round.
    let mut w = BaseDelay::new();
    w.add(t0, u32::MAX - 10);
    assert_eq!(w.add(t0, 5), 16);
    assert_eq!(w.base(), Some(u32::MAX - 10));
}
