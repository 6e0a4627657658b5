//! Unit tests of the swarm, one peer or a few at a time, driven by hand on a fixed clock.
//! (Random swarms with hostile peers run in `crate::sim`.)

use super::*;
use crate::wire::pex::{PexFlags, PexMessage, PexPeer};
use crate::wire::ExtHandshake;
use std::collections::BTreeSet;

fn now() -> Instant {
    Instant::now()
}

fn swarm(piece_length: u32, total: u64) -> Swarm {
    swarm_with(piece_length, total, Config::default())
}

fn swarm_with(piece_length: u32, total: u64, config: Config) -> Swarm {
    let count = total.div_ceil(u64::from(piece_length)) as u32;
    Swarm::new(
        piece_length,
        total,
        Bitfield::new(count),
        Bitfield::full(count),
        config,
        7,
    )
}

/// Everything the swarm asked of its driver, sorted by kind.
#[derive(Debug, Default)]
struct Drained {
    verify: Vec<CompletedPiece>,
    disconnect: Vec<(PeerKey, PeerError)>,
    banned: Vec<(PeerKey, PeerError)>,
    wake: BTreeSet<PeerKey>,
}

fn drain(d: &mut Swarm) -> Drained {
    let mut out = Drained::default();
    while let Some(e) = d.poll_event() {
        match e {
            SwarmEvent::Verify(p) => out.verify.push(p),
            SwarmEvent::Disconnect { peer, reason } => out.disconnect.push((peer, reason)),
            SwarmEvent::Banned { peer, reason } => out.banned.push((peer, reason)),
            SwarmEvent::Wake(k) => {
                out.wake.insert(k);
            }
            SwarmEvent::PeersFound(_) => {}
        }
    }
    out
}

fn requests(out: &[Message]) -> Vec<BlockRef> {
    out.iter()
        .filter_map(|m| match m {
            Message::Request(b) => Some(*b),
            _ => None,
        })
        .collect()
}

fn transmit(d: &mut Swarm, key: PeerKey, t: Instant) -> Vec<Message> {
    let mut out = Vec::new();
    d.poll_transmit(t, key, &mut out);
    out
}

fn plain() -> PeerFeatures {
    PeerFeatures::default()
}

fn seeder_joins(d: &mut Swarm, key: PeerKey, t: Instant) -> Vec<Message> {
    d.handle_connected(t, key, plain());
    let full = Bitfield::full(d.geo.piece_count);
    d.handle_message(
        t,
        key,
        Message::Bitfield(Bytes::copy_from_slice(full.as_bytes())),
    );
    d.handle_message(t, key, Message::Unchoke);
    transmit(d, key, t)
}

/// Serves every request in `reqs` from `payload`.
fn serve(d: &mut Swarm, key: PeerKey, reqs: &[BlockRef], payload: &[u8], t: Instant) {
    for r in reqs {
        let start = r.index as usize * d.geo.piece_length as usize + r.begin as usize;
        let data = Bytes::copy_from_slice(&payload[start..start + r.length as usize]);
        d.handle_message(
            t,
            key,
            Message::Piece {
                index: r.index,
                begin: r.begin,
                data,
            },
        );
    }
}

#[test]
fn downloads_everything_from_one_seeder_with_short_last_block() {
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let t = now();
    let mut d = swarm(32 * 1024, payload.len() as u64);
    assert_eq!(d.stats().bytes_left, 100_000);
    let out = seeder_joins(&mut d, 1, t);
    assert!(out.contains(&Message::Interested));
    let mut pending = requests(&out);
    let mut assembled = vec![0u8; payload.len()];
    while !pending.is_empty() {
        serve(&mut d, 1, &pending, &payload, t);
        for piece in drain(&mut d).verify {
            let start = piece.index as usize * 32 * 1024;
            assembled[start..start + piece.data.len()].copy_from_slice(&piece.data);
            d.handle_verdict(t, piece.index, true, piece.data);
        }
        d.check_invariants().unwrap();
        pending = requests(&transmit(&mut d, 1, t));
    }
    assert!(d.is_done());
    assert_eq!(d.stats().bytes_left, 0);
    assert_eq!(d.stats().verified_bytes, 100_000);
    assert_eq!(assembled, payload);
    // The last block of the last piece is shorter: 100000 - 3*32768 = 1696 bytes.
    assert_eq!(d.piece_len(3), 1696);
}

#[test]
fn choke_returns_requests_to_the_pool_for_other_peers() {
    let t = now();
    let mut d = swarm(16 * 1024, 4 * 16 * 1024);
    let first = requests(&seeder_joins(&mut d, 1, t));
    assert_eq!(first.len(), 4);
    d.handle_message(t, 1, Message::Choke);
    d.check_invariants().unwrap();
    let second = requests(&seeder_joins(&mut d, 2, t));
    let mut a: Vec<_> = first.iter().map(|b| b.index).collect();
    let mut b: Vec<_> = second.iter().map(|b| b.index).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn disconnect_mid_piece_loses_only_unfinished_blocks() {
    let payload = vec![5u8; 64 * 1024];
    let t = now();
    let mut d = swarm(64 * 1024, payload.len() as u64);
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    assert_eq!(reqs.len(), 4);
    serve(&mut d, 1, &reqs[..2], &payload, t);
    d.handle_disconnected(1);
    d.check_invariants().unwrap();
    let reqs2 = requests(&seeder_joins(&mut d, 2, t));
    assert_eq!(reqs2, reqs[2..].to_vec());
    serve(&mut d, 2, &reqs2, &payload, t);
    let done = drain(&mut d).verify;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].data, payload);
}

#[test]
fn bad_hash_refetches_and_disconnects_the_repeat_offender() {
    let payload = vec![9u8; 16 * 1024];
    let t = now();
    let mut d = swarm(16 * 1024, payload.len() as u64);
    let mut reqs = requests(&seeder_joins(&mut d, 1, t));
    let mut disconnects = Vec::new();
    for round in 0..3 {
        assert_eq!(reqs.len(), 1, "round {round}");
        serve(&mut d, 1, &reqs, &payload, t);
        let piece = drain(&mut d).verify.pop().unwrap();
        d.handle_verdict(t, piece.index, false, piece.data);
        assert!(!d.is_done());
        disconnects = drain(&mut d).disconnect;
        reqs = requests(&transmit(&mut d, 1, t));
    }
    assert_eq!(disconnects, vec![(1, PeerError::BadData(3))]);
    assert_eq!(d.stats().peers, 0);
    assert_eq!(d.stats().wasted_bytes, 3 * 16 * 1024);
    d.check_invariants().unwrap();
}

#[test]
fn a_sole_sender_that_left_is_named_once_it_reaches_the_failure_limit() {
    // Four pieces of one block, all asked of peer 1 at once; it sends three, all bad.
    let payload = vec![9u8; 4 * 16 * 1024];
    let t = now();
    let mut d = swarm(16 * 1024, payload.len() as u64);
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    assert_eq!(reqs.len(), 4);
    serve(&mut d, 1, &reqs[..3], &payload, t);
    let mut pieces = drain(&mut d).verify.into_iter();
    let first = pieces.next().unwrap();
    // One failure while it is there.
    d.handle_verdict(t, first.index, false, first.data);
    assert!(drain(&mut d).disconnect.is_empty());
    // It leaves before the other two verdicts: its failures are remembered.
    d.handle_disconnected(1);
    assert!(d.remembers(1));
    let second = pieces.next().unwrap();
    d.handle_verdict(t, second.index, false, second.data);
    let out = drain(&mut d);
    assert!(
        out.banned.is_empty() && out.disconnect.is_empty(),
        "{out:?}"
    );
    d.check_invariants().unwrap();
    let third = pieces.next().unwrap();
    d.handle_verdict(t, third.index, false, third.data);
    let out = drain(&mut d);
    assert_eq!(out.banned, vec![(1, PeerError::BadData(3))]);
    assert!(out.disconnect.is_empty(), "{out:?}");
    // Named once, then forgotten: no piece in memory holds its blocks.
    assert!(!d.remembers(1));
    d.check_invariants().unwrap();
}

#[test]
fn a_sender_that_left_is_not_blamed_for_a_shared_piece() {
    // Pieces of two blocks, one request at a time, room for three pieces; two bad pieces
    // alone are the limit.
    let payload = vec![3u8; 4 * 32 * 1024];
    let config = Config {
        max_piece_memory: 3 * 32 * 1024,
        min_requests: 1,
        max_requests: 1,
        max_hash_failures: 2,
        ..Config::default()
    };
    let t = now();
    let mut d = swarm_with(32 * 1024, payload.len() as u64, config);
    // Peer 1 alone sends pieces A and B whole, then starts C.
    let mut reqs = requests(&seeder_joins(&mut d, 1, t));
    let mut alone = Vec::new();
    while alone.len() < 2 {
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        serve(&mut d, 1, &reqs, &payload, t);
        alone.extend(drain(&mut d).verify);
        reqs = requests(&transmit(&mut d, 1, t));
    }
    let [c_first] = reqs[..] else {
        panic!("{reqs:?}")
    };
    // The budget is spent: peer 2 helps with C.
    let second = requests(&seeder_joins(&mut d, 2, t));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].index, c_first.index);
    serve(&mut d, 1, &[c_first], &payload, t);
    serve(&mut d, 2, &second, &payload, t);
    let shared = drain(&mut d).verify.pop().unwrap();
    d.handle_disconnected(1);
    let [a, b] = <[CompletedPiece; 2]>::try_from(alone).unwrap();
    d.handle_verdict(t, a.index, false, a.data);
    assert!(drain(&mut d).banned.is_empty());
    // Had the shared piece counted, this would be its second failure.
    d.handle_verdict(t, shared.index, false, shared.data);
    let out = drain(&mut d);
    assert!(
        out.banned.is_empty() && out.disconnect.is_empty(),
        "{out:?}"
    );
    assert!(d.remembers(1));
    d.handle_verdict(t, b.index, false, b.data);
    assert_eq!(drain(&mut d).banned, vec![(1, PeerError::BadData(2))]);
    assert!(!d.remembers(1));
    // Peer 2 is on parole, not blamed.
    assert_eq!(d.stats().peers, 1);
    d.check_invariants().unwrap();
}

#[test]
fn a_departed_sender_of_good_blocks_is_forgotten_with_its_pieces() {
    let payload = vec![5u8; 4 * 16 * 1024];
    let t = now();
    let mut d = swarm(16 * 1024, payload.len() as u64);
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    serve(&mut d, 1, &reqs[..2], &payload, t);
    d.handle_disconnected(1);
    assert!(d.remembers(1));
    for piece in drain(&mut d).verify {
        d.handle_verdict(t, piece.index, true, piece.data);
        d.check_invariants().unwrap();
    }
    assert!(!d.remembers(1));
    // A peer that sent nothing is never remembered.
    seeder_joins(&mut d, 2, t);
    d.handle_disconnected(2);
    assert!(!d.remembers(2));
    assert!(drain(&mut d).banned.is_empty());
}

#[test]
fn a_v2_sender_of_a_bad_block_that_left_is_named_by_the_block_hashes() {
    let mut rng = StdRng::seed_from_u64(5);
    let torrent = crate::sim::Torrent::generate_v2(&mut rng, 64 * 1024, 4 * 64 * 1024);
    let hashes = torrent.v2.clone().unwrap();
    let payload = torrent.payload.clone();
    let t = now();
    let mut d = swarm(64 * 1024, payload.len() as u64);
    d.set_piece_hashes(hashes.clone());
    // Peer 3 has every piece but never unchokes: it is only asked for block hashes.
    d.handle_connected(t, 3, plain());
    let full = Bitfield::full(d.geo.piece_count);
    d.handle_message(
        t,
        3,
        Message::Bitfield(Bytes::copy_from_slice(full.as_bytes())),
    );
    // Peer 1 sends one piece, its second block spoiled, and leaves at once.
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    let index = reqs[0].index;
    for r in reqs.iter().filter(|r| r.index == index) {
        let start = r.index as usize * 64 * 1024 + r.begin as usize;
        let mut data = payload[start..start + r.length as usize].to_vec();
        if r.begin == 16 * 1024 {
            data[100] ^= 1;
        }
        d.handle_message(
            t,
            1,
            Message::Piece {
                index,
                begin: r.begin,
                data: data.into(),
            },
        );
    }
    let piece = drain(&mut d).verify.pop().unwrap();
    d.handle_disconnected(1);
    assert!(!hashes.check(index, &piece.data));
    d.handle_verdict(t, index, false, piece.data);
    // Held: peer 3 is asked, and its true answer names the sender that left.
    let asked: Vec<crate::wire::HashRequest> = (transmit(&mut d, 3, t).into_iter())
        .filter_map(|m| match m {
            Message::HashRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    let [request] = asked[..] else {
        panic!("{asked:?}")
    };
    assert!(drain(&mut d).banned.is_empty());
    d.handle_message(t, 3, torrent.answer_hashes(&request));
    let out = drain(&mut d);
    assert_eq!(out.banned, vec![(1, PeerError::BadBlocks(index))]);
    assert!(out.disconnect.is_empty(), "{out:?}");
    assert!(!d.remembers(1));
    assert_eq!(d.stats().peers, 1);
    d.check_invariants().unwrap();
}

#[test]
fn endgame_duplicates_then_cancels() {
    let payload = vec![1u8; 16 * 1024];
    let t = now();
    let mut d = swarm(16 * 1024, payload.len() as u64);
    let a = requests(&seeder_joins(&mut d, 1, t));
    let b = requests(&seeder_joins(&mut d, 2, t));
    assert_eq!(
        a, b,
        "the only block is requested from both peers in endgame"
    );
    d.check_invariants().unwrap();
    serve(&mut d, 1, &a, &payload, t);
    assert!(drain(&mut d).wake.contains(&2));
    assert_eq!(transmit(&mut d, 2, t), vec![Message::Cancel(a[0])]);
    d.check_invariants().unwrap();
}

#[test]
fn protocol_violations_disconnect() {
    let t = now();
    let mut d = swarm(16 * 1024, 3 * 16 * 1024);
    d.handle_connected(t, 1, plain());
    d.handle_message(t, 1, Message::Have(3));
    d.handle_connected(t, 2, plain());
    d.handle_message(t, 2, Message::Bitfield(Bytes::from_static(&[0xff])));
    let gone: Vec<PeerKey> = drain(&mut d).disconnect.iter().map(|x| x.0).collect();
    assert_eq!(gone, vec![1, 2]);
    // Input about a forgotten peer is ignored.
    d.handle_message(t, 1, Message::Unchoke);
    assert_eq!(d.stats().peers, 0);
    // A late bitfield replaces what we knew of the peer.
    d.handle_connected(t, 3, plain());
    d.handle_message(t, 3, Message::Have(2));
    d.handle_message(t, 3, Message::Bitfield(Bytes::from_static(&[0x80])));
    assert!(drain(&mut d).disconnect.is_empty());
    assert_eq!(d.scheduler.picker.availability(2), 0);
    assert_eq!(d.scheduler.picker.availability(0), 1);
}

#[test]
fn unrequested_block_is_wasted() {
    let t = now();
    let mut d = swarm(16 * 1024, 2 * 16 * 1024);
    seeder_joins(&mut d, 1, t);
    let bogus = Message::Piece {
        index: 0,
        begin: 0,
        data: Bytes::from(vec![0u8; 100]),
    };
    d.handle_message(t, 1, bogus);
    assert!(drain(&mut d).verify.is_empty());
    assert_eq!(d.stats().wasted_bytes, 100);
}

#[test]
fn stalled_peer_times_out_at_its_deadline() {
    let t = now();
    let mut d = swarm(16 * 1024, 2 * 16 * 1024);
    seeder_joins(&mut d, 1, t);
    let deadline = d.poll_timeout().unwrap();
    assert!(
        deadline <= t + RATE_WINDOW,
        "requests are out: rates are sampled"
    );
    d.handle_timeout(t + Duration::from_secs(1));
    assert!(drain(&mut d).disconnect.is_empty());
    d.handle_timeout(t + Duration::from_secs(30));
    assert!(matches!(
        drain(&mut d).disconnect.as_slice(),
        [(1, PeerError::Timeout(_))]
    ));
    assert_eq!(d.poll_timeout(), None, "no peers, no timers");
}

#[test]
fn idle_peer_gets_keepalives_and_no_busy_ticks() {
    let t = now();
    let mut d = swarm(16 * 1024, 16 * 1024);
    d.handle_connected(t, 1, plain());
    // Nothing moves: the next deadline is the keep-alive, a minute away.
    let first = d.poll_timeout().unwrap();
    assert_eq!(first, t + Config::default().keepalive_interval);
    d.handle_timeout(first);
    assert!(drain(&mut d).wake.contains(&1));
    assert_eq!(transmit(&mut d, 1, first), vec![Message::KeepAlive]);
    // It sent nothing for 150 s: dropped.
    d.handle_timeout(t + Config::default().idle_timeout);
    assert!(matches!(
        drain(&mut d).disconnect.as_slice(),
        [(1, PeerError::Timeout("nothing received"))]
    ));
}

#[test]
fn memory_budget_limits_pieces_in_progress() {
    let t = now();
    let piece = 1024 * 1024;
    let config = Config {
        max_piece_memory: 2 * piece as u64,
        max_requests: 10_000,
        min_requests: 10_000,
        ..Config::default()
    };
    let mut d = swarm_with(piece, 10 * piece as u64, config);
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    let pieces: BTreeSet<u32> = reqs.iter().map(|b| b.index).collect();
    assert_eq!(pieces.len(), 2);
    assert_eq!(reqs.len(), 2 * 64);

    // Every request answered, both pieces handed to the hashers: the peer is idle and the
    // budget spent. The first verdict must wake it (no block will arrive to do so).
    let payload = vec![7u8; 10 * piece as usize];
    serve(&mut d, 1, &reqs, &payload, t);
    assert!(
        requests(&transmit(&mut d, 1, t)).is_empty(),
        "budget spent, yet more requests"
    );
    let drained = drain(&mut d);
    assert_eq!(drained.verify.len(), 2);
    assert!(drained.wake.is_empty());
    let first = drained.verify.into_iter().next().unwrap();
    d.handle_verdict(t, first.index, true, first.data);
    assert!(
        drain(&mut d).wake.contains(&1),
        "idle peer not woken when memory freed"
    );
    let next: BTreeSet<u32> = requests(&transmit(&mut d, 1, t))
        .iter()
        .map(|b| b.index)
        .collect();
    assert_eq!(next.len(), 1, "one piece's memory was freed: {next:?}");
    assert!(next.is_disjoint(&pieces));
    d.check_invariants().unwrap();
}

#[test]
fn pipeline_is_topped_up_in_batches() {
    let t = now();
    // 128 blocks of 16 KiB in 8 pieces; the default pipeline starts at 64 requests and is
    // refilled once a batch (a quarter of it, here 16) has been answered.
    let payload = vec![3u8; 128 * 16 * 1024];
    let mut d = swarm(256 * 1024, payload.len() as u64);
    let first = requests(&seeder_joins(&mut d, 1, t));
    assert_eq!(first.len(), 64);
    serve(&mut d, 1, &first[..15], &payload, t);
    assert!(
        requests(&transmit(&mut d, 1, t)).is_empty(),
        "refilled early"
    );
    serve(&mut d, 1, &first[15..16], &payload, t);
    assert_eq!(requests(&transmit(&mut d, 1, t)).len(), 16);
}

fn seeding(piece_length: u32, total: u64) -> Swarm {
    let count = total.div_ceil(u64::from(piece_length)) as u32;
    let config = Config {
        upload_slots: 2,
        ..Config::default()
    };
    Swarm::new(
        piece_length,
        total,
        Bitfield::full(count),
        Bitfield::full(count),
        config,
        5,
    )
}

fn leecher_joins(d: &mut Swarm, key: PeerKey, t: Instant) -> Vec<Message> {
    d.handle_connected(t, key, plain());
    d.handle_message(t, key, Message::Interested);
    transmit(d, key, t)
}

#[test]
fn seeder_unchokes_into_free_slots_and_serves_valid_requests() {
    let t = now();
    let mut d = seeding(32 * 1024, 40 * 1024);
    let out = leecher_joins(&mut d, 1, t);
    assert!(matches!(out[0], Message::Bitfield(_)));
    assert!(out.contains(&Message::Unchoke), "unchoked at once: {out:?}");
    let block = BlockRef {
        index: 1,
        begin: 0,
        length: 8 * 1024,
    };
    d.handle_message(t, 1, Message::Request(block));
    let other = BlockRef {
        index: 0,
        begin: 16 * 1024,
        length: 16 * 1024,
    };
    d.handle_message(t, 1, Message::Request(other));
    d.handle_message(t, 1, Message::Cancel(other));
    let mut up = Vec::new();
    d.poll_upload(1, 1 << 20, &mut up);
    assert_eq!(up, vec![block]);
    d.handle_uploaded(t, 1, 8 * 1024);
    assert_eq!(d.stats().uploaded_bytes, 8 * 1024);
}

#[test]
fn uninterested_unchoked_peers_do_not_hold_slots_from_newcomers() {
    let t = now();
    let mut d = seeding(32 * 1024, 40 * 1024);
    for k in 1..=2 {
        leecher_joins(&mut d, k, t);
        d.handle_message(t, k, Message::NotInterested);
    }
    let out = leecher_joins(&mut d, 3, t);
    assert!(out.contains(&Message::Unchoke), "{out:?}");
}

/// A slot given up between rechokes (its peer lost interest) goes at once to the interested
/// peer waiting for one, rather than at the next rechoke up to 10 s later.
#[test]
fn a_slot_given_up_goes_at_once_to_a_waiting_peer() {
    let t = now();
    let mut d = seeding(32 * 1024, 40 * 1024);
    for k in 1..=2 {
        assert!(leecher_joins(&mut d, k, t).contains(&Message::Unchoke));
    }
    let out = leecher_joins(&mut d, 3, t);
    assert!(
        !out.contains(&Message::Unchoke),
        "both slots are taken: {out:?}"
    );
    let later = t + Duration::from_secs(1);
    d.handle_message(later, 1, Message::NotInterested);
    let mut woken = Vec::new();
    while let Some(ev) = d.poll_event() {
        if let SwarmEvent::Wake(k) = ev {
            woken.push(k);
        }
    }
    assert_eq!(woken, vec![3]);
    let out = transmit(&mut d, 3, later);
    assert!(out.contains(&Message::Unchoke), "{out:?}");
}

/// The same when the peer holding the slot leaves.
#[test]
fn a_slot_left_free_by_a_departing_peer_goes_at_once_to_a_waiting_peer() {
    let t = now();
    let mut d = seeding(32 * 1024, 40 * 1024);
    for k in 1..=3 {
        leecher_joins(&mut d, k, t);
    }
    while d.poll_event().is_some() {}
    d.handle_disconnected(2);
    let out = transmit(&mut d, 3, t + Duration::from_secs(1));
    assert!(out.contains(&Message::Unchoke), "{out:?}");
}

#[test]
fn invalid_requests_close_the_connection() {
    let t = now();
    let mut d = seeding(32 * 1024, 40 * 1024);
    let bad = [
        BlockRef {
            index: 2,
            begin: 0,
            length: 1,
        },
        BlockRef {
            index: 1,
            begin: 0,
            length: 8 * 1024 + 1,
        },
        BlockRef {
            index: 0,
            begin: 16 * 1024,
            length: 16 * 1024 + 1,
        },
        BlockRef {
            index: 0,
            begin: u32::MAX,
            length: 16,
        },
        BlockRef {
            index: 0,
            begin: 0,
            length: MAX_REQUEST_LEN + 1,
        },
        BlockRef {
            index: 0,
            begin: 0,
            length: 0,
        },
    ];
    for (k, block) in bad.iter().enumerate() {
        let k = k as PeerKey;
        leecher_joins(&mut d, k, t);
        d.handle_message(t, k, Message::Request(*block));
        let gone = drain(&mut d).disconnect;
        assert_eq!(gone.len(), 1, "{block:?}");
        assert_eq!(gone[0].0, k);
    }
    // A leecher must not ask for pieces it was never told we have.
    let mut leech = swarm(16 * 1024, 32 * 1024);
    leecher_joins(&mut leech, 1, t);
    let req = Message::Request(BlockRef {
        index: 0,
        begin: 0,
        length: 16,
    });
    leech.handle_message(t, 1, req);
    assert_eq!(drain(&mut leech).disconnect.len(), 1);
}

#[test]
fn choker_keeps_slots_and_drops_choked_requests() {
    let t = now();
    let mut d = seeding(16 * 1024, 64 * 1024);
    for k in 1..=4 {
        leecher_joins(&mut d, k, t);
    }
    let unchoked = |d: &Swarm| d.peers.values().filter(|p| !p.am_choking).count();
    assert_eq!(unchoked(&d), 2);
    let rechoke = d.poll_timeout().unwrap();
    assert!(rechoke <= t + RECHOKE_INTERVAL);
    d.handle_timeout(t + RECHOKE_INTERVAL);
    assert_eq!(unchoked(&d), 2);
    let choked = *d.peers.iter().find(|(_, p)| p.am_choking).unwrap().0;
    let block = BlockRef {
        index: 0,
        begin: 0,
        length: 16 * 1024,
    };
    d.handle_message(t, choked, Message::Request(block));
    let mut up = Vec::new();
    d.poll_upload(choked, 1 << 20, &mut up);
    assert!(up.is_empty());
}

#[test]
fn optimistic_unchoke_rotates_among_the_rest() {
    let t = now();
    let mut d = seeding(16 * 1024, 64 * 1024);
    for k in 1..=6 {
        leecher_joins(&mut d, k, t);
    }
    let mut optimists = BTreeSet::new();
    let mut at = t;
    for _ in 0..30 {
        at += RECHOKE_INTERVAL;
        for k in 1..=6 {
            d.handle_message(at, k, Message::KeepAlive);
        }
        d.handle_timeout(at);
        optimists.extend(d.choker_optimistic());
        let unchoked = d.peers.values().filter(|p| !p.am_choking).count();
        assert_eq!(unchoked, 2);
    }
    assert!(
        optimists.len() > 2,
        "only {optimists:?} got the optimistic slot"
    );
}

impl Swarm {
    fn choker_optimistic(&self) -> Option<PeerKey> {
        self.choker.optimistic()
    }
}

#[test]
fn overtaken_request_is_taken_as_lost_and_asked_again() {
    let payload = vec![3u8; 32 * 1024];
    let t = now();
    let config = Config {
        endgame_duplicates: 1,
        ..Config::default()
    };
    let mut d = swarm_with(32 * 1024, 32 * 1024, config);
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    assert_eq!(reqs.len(), 2);
    // The peer skips the first request and answers the second.
    let later = t + Duration::from_secs(1);
    serve(&mut d, 1, &reqs[1..], &payload, later);
    d.handle_timeout(t + Duration::from_secs(2));
    assert!(
        requests(&seeder_joins(&mut d, 2, t)).is_empty(),
        "not yet taken as lost"
    );
    let lost_at = t + Duration::from_secs(6);
    d.handle_timeout(lost_at);
    assert!(drain(&mut d).wake.contains(&2));
    assert_eq!(requests(&transmit(&mut d, 2, lost_at)), vec![reqs[0]]);
    d.check_invariants().unwrap();
}

#[test]
fn pipeline_respects_the_peer_reqq() {
    let t = now();
    let mut d = swarm(16 * 1024, 100 * 16 * 1024);
    d.handle_connected(t, 1, plain());
    let hs = ExtHandshake {
        reqq: Some(5),
        ..ExtHandshake::default()
    };
    d.handle_message(
        t,
        1,
        Message::Extended {
            id: 0,
            payload: hs.encode().into(),
        },
    );
    let full = Bitfield::full(100);
    d.handle_message(
        t,
        1,
        Message::Bitfield(Bytes::copy_from_slice(full.as_bytes())),
    );
    d.handle_message(t, 1, Message::Unchoke);
    // One below: Transmission rejects the request that would fill its queue.
    assert_eq!(requests(&transmit(&mut d, 1, t)).len(), 4);
}

#[test]
fn extension_handshake_goes_first_and_metadata_requests_are_answered() {
    let t = now();
    let mut d = seeding(16 * 1024, 16 * 1024);
    let info: Arc<[u8]> = Arc::from(&b"d4:name1:xe"[..]);
    d.set_metadata(info.clone());
    d.handle_connected(
        t,
        1,
        PeerFeatures {
            extensions: true,
            ..PeerFeatures::default()
        },
    );
    let theirs = ExtHandshake {
        ut_metadata: Some(3),
        ..ExtHandshake::default()
    };
    let request = MetadataMsg::Request { piece: 0 };
    for msg in [
        Message::Extended {
            id: 0,
            payload: theirs.encode().into(),
        },
        Message::Extended {
            id: OUR_UT_METADATA_ID,
            payload: request.encode().into(),
        },
    ] {
        d.handle_message(t, 1, msg);
    }
    let out = transmit(&mut d, 1, t);
    let Message::Extended { id: 0, payload } = &out[0] else {
        panic!("first message is not our extension handshake: {:?}", out[0]);
    };
    assert_eq!(
        ExtHandshake::decode(payload).unwrap().metadata_size,
        Some(info.len() as u64)
    );
    let answer = MetadataMsg::Data {
        piece: 0,
        total_size: info.len() as u64,
        data: Bytes::copy_from_slice(&info),
    };
    assert!(out.contains(&Message::Extended {
        id: 3,
        payload: answer.encode().into()
    }));
}

#[test]
fn upload_batches_are_bounded_in_bytes() {
    let t = now();
    let mut d = seeding(256 * 1024, 256 * 1024);
    leecher_joins(&mut d, 1, t);
    for begin in [0, 128 * 1024] {
        let block = BlockRef {
            index: 0,
            begin,
            length: 128 * 1024,
        };
        d.handle_message(t, 1, Message::Request(block));
    }
    let mut up = Vec::new();
    assert!(
        d.poll_upload(1, 64 * 1024, &mut up),
        "one block at least, the rest waits"
    );
    assert_eq!(up.len(), 1);
    assert!(!d.poll_upload(1, 64 * 1024, &mut up));
    assert_eq!(up.len(), 2);
}

// ---- the fast extension (BEP 6) ----

fn fast(allowed: &[u32]) -> PeerFeatures {
    PeerFeatures {
        fast: true,
        allowed_fast: allowed.to_vec(),
        ..PeerFeatures::default()
    }
}

#[test]
fn fast_peers_get_have_all_or_have_none_and_allowed_fast() {
    let t = now();
    let mut seed = seeding(16 * 1024, 4 * 16 * 1024);
    seed.handle_connected(t, 1, fast(&[2, 0]));
    assert_eq!(
        transmit(&mut seed, 1, t),
        vec![
            Message::HaveAll,
            Message::AllowedFast(2),
            Message::AllowedFast(0)
        ]
    );
    let mut leech = swarm(16 * 1024, 4 * 16 * 1024);
    leech.handle_connected(t, 1, fast(&[1]));
    assert_eq!(
        transmit(&mut leech, 1, t),
        vec![Message::HaveNone],
        "no allowed fast for pieces we lack"
    );
    // A plain peer still gets a bitfield, and must not send have all.
    seed.handle_connected(t, 2, plain());
    assert!(matches!(transmit(&mut seed, 2, t)[0], Message::Bitfield(_)));
    leech.handle_connected(t, 3, plain());
    leech.handle_message(t, 3, Message::HaveAll);
    assert!(matches!(
        drain(&mut leech).disconnect.as_slice(),
        [(3, PeerError::Protocol(_))]
    ));
    // A fast peer's have all makes us interested.
    leech.handle_message(t, 1, Message::HaveAll);
    leech.handle_message(t, 1, Message::Unchoke);
    let out = transmit(&mut leech, 1, t);
    assert!(out.contains(&Message::Interested));
    assert_eq!(requests(&out).len(), 4);
}

#[test]
fn a_fast_seed_rejects_what_it_will_not_serve_and_serves_allowed_fast_while_choking() {
    let t = now();
    let mut seed = seeding(16 * 1024, 4 * 16 * 1024);
    // Two slots: peers 1 and 2 are unchoked, 3 stays choked.
    for k in 1..=3 {
        seed.handle_connected(t, k, fast(&[3]));
        seed.handle_message(t, k, Message::HaveNone);
        seed.handle_message(t, k, Message::Interested);
        transmit(&mut seed, k, t);
    }
    let choked = *seed.peers.iter().find(|(_, p)| p.am_choking).unwrap().0;
    let block = |index| BlockRef {
        index,
        begin: 0,
        length: 16 * 1024,
    };
    seed.handle_message(t, choked, Message::Request(block(1)));
    seed.handle_message(t, choked, Message::Request(block(3)));
    assert_eq!(
        transmit(&mut seed, choked, t),
        vec![Message::Reject(block(1))],
        "rejected, not dropped"
    );
    let mut up = Vec::new();
    seed.poll_upload(choked, 1 << 20, &mut up);
    assert_eq!(up, vec![block(3)], "allowed fast is served while choked");
    assert!(drain(&mut seed).disconnect.is_empty());
}

#[test]
fn choking_a_fast_peer_rejects_its_queued_requests() {
    let t = now();
    let mut seed = seeding(16 * 1024, 4 * 16 * 1024);
    seed.handle_connected(t, 1, fast(&[]));
    seed.handle_message(t, 1, Message::HaveNone);
    seed.handle_message(t, 1, Message::Interested);
    transmit(&mut seed, 1, t);
    let req = BlockRef {
        index: 2,
        begin: 0,
        length: 16 * 1024,
    };
    seed.handle_message(t, 1, Message::Request(req));
    // It loses interest: the next rechoke chokes it, and the queued request is rejected.
    seed.handle_message(t, 1, Message::NotInterested);
    seed.handle_message(t, 2, Message::KeepAlive);
    seed.handle_connected(t, 2, fast(&[]));
    seed.handle_message(t, 2, Message::Interested);
    seed.handle_timeout(t + RECHOKE_INTERVAL);
    let out = transmit(&mut seed, 1, t + RECHOKE_INTERVAL);
    assert_eq!(out, vec![Message::Choke, Message::Reject(req)]);
}

#[test]
fn a_fast_peer_that_chokes_us_still_serves_its_allowed_fast_pieces() {
    let t = now();
    let payload = vec![4u8; 4 * 16 * 1024];
    let mut d = swarm(16 * 1024, payload.len() as u64);
    d.handle_connected(t, 1, fast(&[]));
    d.handle_message(t, 1, Message::HaveAll);
    d.handle_message(t, 1, Message::AllowedFast(2));
    let out = transmit(&mut d, 1, t);
    assert!(out.contains(&Message::Interested));
    assert_eq!(
        requests(&out).iter().map(|b| b.index).collect::<Vec<_>>(),
        vec![2],
        "only the allowed-fast piece while choked"
    );
    d.check_invariants().unwrap();
    // Unchoked: the rest is asked for; then a choke keeps only the allowed-fast request.
    d.handle_message(t, 1, Message::Unchoke);
    let more = requests(&transmit(&mut d, 1, t));
    assert_eq!(more.len(), 3);
    d.handle_message(t, 1, Message::Choke);
    d.check_invariants().unwrap();
    assert_eq!(
        d.peers[&1]
            .inflight
            .iter()
            .map(|(b, _)| b.index)
            .collect::<Vec<_>>(),
        vec![2]
    );
    // A reject gives the block back to the pool for another peer.
    let two = BlockRef {
        index: 2,
        begin: 0,
        length: 16 * 1024,
    };
    d.handle_message(t, 1, Message::Reject(two));
    d.check_invariants().unwrap();
    let other = requests(&seeder_joins(&mut d, 2, t));
    assert!(other.contains(&two), "{other:?}");
}

#[test]
fn suggested_pieces_come_first_and_seeds_suggest_rare_ones() {
    let t = now();
    let mut d = swarm(16 * 1024, 8 * 16 * 1024);
    d.handle_connected(t, 1, fast(&[]));
    d.handle_message(t, 1, Message::HaveAll);
    d.handle_message(t, 1, Message::Suggest(5));
    d.handle_message(t, 1, Message::Unchoke);
    let first = requests(&transmit(&mut d, 1, t));
    assert_eq!(first[0].index, 5, "{first:?}");

    let mut seed = seeding(16 * 1024, 8 * 16 * 1024);
    // Peer 1 has pieces 0-5; peer 2 has 0-3: the rarest pieces peer 2 lacks are 6 and 7
    // (nobody has them), then 4 and 5.
    seed.handle_connected(t, 1, fast(&[]));
    seed.handle_message(t, 1, Message::Bitfield(Bytes::from_static(&[0b1111_1100])));
    seed.handle_connected(t, 2, fast(&[]));
    transmit(&mut seed, 2, t);
    seed.handle_message(t, 2, Message::Bitfield(Bytes::from_static(&[0b1111_0000])));
    let suggested: Vec<u32> = transmit(&mut seed, 2, t)
        .into_iter()
        .filter_map(|m| match m {
            Message::Suggest(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(suggested, vec![6, 7, 4, 5]);
}

// ---- peer exchange (BEP 11) ----

fn pex_peer(addr: &str, outgoing: bool) -> PeerFeatures {
    PeerFeatures {
        extensions: true,
        addr: Some(addr.parse().unwrap()),
        outgoing,
        ..PeerFeatures::default()
    }
}

/// The peer's extension handshake: ut_pex on, and its listening port if given.
fn ext_handshake(ut_pex: bool, listen_port: Option<u16>) -> Message {
    let hs = ExtHandshake {
        ut_pex: ut_pex.then_some(7),
        listen_port,
        ..ExtHandshake::default()
    };
    Message::Extended {
        id: 0,
        payload: hs.encode().into(),
    }
}

/// The `ut_pex` messages (sent with the peer's id 7) among `out`.
fn pex_messages(out: &[Message]) -> Vec<PexMessage> {
    out.iter()
        .filter_map(|m| match m {
            Message::Extended { id: 7, payload } => Some(PexMessage::decode(payload).unwrap()),
            _ => None,
        })
        .collect()
}

fn added(m: &PexMessage) -> Vec<String> {
    let mut v: Vec<String> = m.added.iter().map(|p| p.addr.to_string()).collect();
    v.sort();
    v
}

#[test]
fn peer_exchange_tells_each_peer_about_the_others_then_about_those_gone() {
    let t = now();
    let mut d = swarm(16 * 1024, 4 * 16 * 1024);
    d.handle_connected(t, 1, pex_peer("10.0.0.1:1000", true));
    d.handle_connected(t, 2, pex_peer("10.0.0.2:2000", true));
    // An incoming peer: reachable at its address with the port its handshake gives.
    d.handle_connected(t, 3, pex_peer("10.0.0.3:5555", false));
    for k in 1..=3 {
        let port = (k == 3).then_some(3000);
        d.handle_message(t, k, ext_handshake(true, port));
        let ours = transmit(&mut d, k, t);
        let Message::Extended { id: 0, payload } = &ours[0] else {
            panic!("{ours:?}");
        };
        assert_eq!(
            ExtHandshake::decode(payload).unwrap().ut_pex,
            Some(OUR_UT_PEX_ID)
        );
    }
    assert!(d.poll_timeout().unwrap() <= t + PEX_FIRST_DELAY);
    let t1 = t + PEX_FIRST_DELAY;
    d.handle_timeout(t1);
    let to_one = pex_messages(&transmit(&mut d, 1, t1));
    assert_eq!(to_one.len(), 1);
    assert_eq!(added(&to_one[0]), vec!["10.0.0.2:2000", "10.0.0.3:3000"]);
    let to_three = pex_messages(&transmit(&mut d, 3, t1));
    assert_eq!(added(&to_three[0]), vec!["10.0.0.1:1000", "10.0.0.2:2000"]);
    // Nothing new: nothing sent at the next round; then peer 2 leaves and is dropped.
    let t2 = t1 + PEX_INTERVAL;
    for k in 1..=3 {
        d.handle_message(t2, k, Message::KeepAlive);
    }
    d.handle_timeout(t2);
    assert!(pex_messages(&transmit(&mut d, 1, t2)).is_empty());
    d.handle_disconnected(2);
    let t3 = t2 + PEX_INTERVAL;
    d.handle_timeout(t3);
    let to_one = pex_messages(&transmit(&mut d, 1, t3));
    assert_eq!(to_one.len(), 1);
    assert!(to_one[0].added.is_empty());
    assert_eq!(to_one[0].dropped, vec!["10.0.0.2:2000".parse().unwrap()]);
}

#[test]
fn peers_learned_through_pex_are_handed_out_at_most_once_a_half_minute_per_peer() {
    let t = now();
    let mut d = swarm(16 * 1024, 4 * 16 * 1024);
    d.handle_connected(t, 1, pex_peer("10.0.0.1:1000", true));
    d.handle_message(t, 1, ext_handshake(true, None));
    let msg = |port: u16| PexMessage {
        added: vec![PexPeer {
            addr: SocketAddr::from(([10, 9, 9, 9], port)),
            flags: PexFlags::SEED,
        }],
        dropped: Vec::new(),
    };
    let send = |d: &mut Swarm, at: Instant, port: u16| {
        let payload = msg(port).encode().unwrap();
        d.handle_message(
            at,
            1,
            Message::Extended {
                id: OUR_UT_PEX_ID,
                payload: payload.into(),
            },
        );
    };
    send(&mut d, t, 1);
    send(&mut d, t + Duration::from_secs(5), 2);
    send(&mut d, t + PEX_INTERVAL, 3);
    let mut found = Vec::new();
    while let Some(e) = d.poll_event() {
        if let SwarmEvent::PeersFound(p) = e {
            found.extend(p.iter().map(|a| a.port()));
        }
    }
    found.sort();
    assert_eq!(
        found,
        vec![1, 3],
        "the message 5 s after the first is ignored"
    );
}

#[test]
fn without_pex_nothing_is_offered_or_taken() {
    let t = now();
    let config = Config {
        pex: false,
        ..Config::default()
    };
    let mut d = swarm_with(16 * 1024, 4 * 16 * 1024, config);
    d.handle_connected(t, 1, pex_peer("10.0.0.1:1000", true));
    d.handle_connected(t, 2, pex_peer("10.0.0.2:2000", true));
    for k in 1..=2 {
        d.handle_message(t, k, ext_handshake(true, None));
        let ours = transmit(&mut d, k, t);
        let Message::Extended { id: 0, payload } = &ours[0] else {
            panic!("{ours:?}");
        };
        assert_eq!(ExtHandshake::decode(payload).unwrap().ut_pex, None);
    }
    d.handle_timeout(t + PEX_INTERVAL);
    assert!(pex_messages(&transmit(&mut d, 1, t + PEX_INTERVAL)).is_empty());
    let payload = PexMessage {
        added: vec![PexPeer {
            addr: "10.9.9.9:1".parse().unwrap(),
            flags: PexFlags::default(),
        }],
        dropped: Vec::new(),
    }
    .encode()
    .unwrap();
    d.handle_message(
        t,
        1,
        Message::Extended {
            id: OUR_UT_PEX_ID,
            payload: payload.into(),
        },
    );
    assert!(!std::iter::from_fn(|| d.poll_event()).any(|e| matches!(e, SwarmEvent::PeersFound(_))));
}

#[test]
fn received_bytes_and_peers_used_count_this_session_only() {
    let payload = vec![5u8; 2 * 16 * 1024];
    let t = now();
    // Piece 0 is present from the start: it counts neither as received nor as verified.
    let mut have = Bitfield::new(2);
    have.set(0);
    let mut d = Swarm::new(
        16 * 1024,
        payload.len() as u64,
        have,
        Bitfield::full(2),
        Config::default(),
        7,
    );
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    seeder_joins(&mut d, 2, t);
    assert_eq!(d.stats().peers_used, 0, "connected is not used");
    // An unrequested block is received (and wasted) but does not make its sender a used peer.
    let bogus = Message::Piece {
        index: 1,
        begin: 0,
        data: Bytes::from(vec![0u8; 100]),
    };
    d.handle_message(t, 2, bogus);
    assert_eq!((d.stats().received_bytes, d.stats().peers_used), (100, 0));
    serve(&mut d, 1, &reqs, &payload, t);
    let stats = d.stats();
    assert_eq!(stats.received_bytes, 100 + 16 * 1024);
    assert_eq!(stats.peers_used, 1);
    assert_eq!(stats.verified_bytes, 0, "not verified yet");
}

#[test]
fn a_streaming_window_requests_only_inside_it_and_moving_it_wakes_peers() {
    // 16 pieces of one block each: the window admits 2 at a time.
    let payload: Vec<u8> = (0..16 * BLOCK_LEN).map(|i| (i % 253) as u8).collect();
    let t = now();
    let mut d = swarm(BLOCK_LEN, payload.len() as u64);
    d.set_window(Some(0..2));
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    let pieces: BTreeSet<u32> = reqs.iter().map(|b| b.index).collect();
    assert_eq!(pieces, BTreeSet::from([0, 1]), "only the window, in order");
    serve(&mut d, 1, &reqs, &payload, t);
    for piece in drain(&mut d).verify {
        d.handle_verdict(t, piece.index, true, piece.data);
    }
    drain(&mut d);
    // The reader has not moved: nothing more is asked for (back-pressure).
    assert!(requests(&transmit(&mut d, 1, t)).is_empty());
    d.set_window(Some(2..4));
    assert!(drain(&mut d).wake.contains(&1));
    let pieces: BTreeSet<u32> = requests(&transmit(&mut d, 1, t))
        .iter()
        .map(|b| b.index)
        .collect();
    assert_eq!(pieces, BTreeSet::from([2, 3]));
    d.check_invariants().unwrap();
}

#[test]
fn sequential_starts_pieces_in_index_order() {
    let t = now();
    let config = Config {
        sequential: true,
        min_requests: 4,
        max_requests: 4,
        ..Config::default()
    };
    let mut d = swarm_with(BLOCK_LEN, u64::from(BLOCK_LEN) * 32, config);
    let reqs = requests(&seeder_joins(&mut d, 1, t));
    let pieces: Vec<u32> = reqs.iter().map(|b| b.index).collect();
    assert_eq!(pieces, vec![0, 1, 2, 3]);
}

#[test]
fn a_suggestion_outside_the_streaming_window_is_not_started() {
    let t = now();
    let mut d = swarm(BLOCK_LEN, u64::from(BLOCK_LEN) * 16);
    d.set_window(Some(0..2));
    d.handle_connected(t, 1, plain());
    let full = Bitfield::full(16);
    d.handle_message(
        t,
        1,
        Message::Bitfield(Bytes::copy_from_slice(full.as_bytes())),
    );
    d.handle_message(t, 1, Message::Suggest(9));
    d.handle_message(t, 1, Message::Unchoke);
    let pieces: BTreeSet<u32> = requests(&transmit(&mut d, 1, t))
        .iter()
        .map(|b| b.index)
        .collect();
    assert_eq!(pieces, BTreeSet::from([0, 1]));
}

#[test]
fn a_streaming_window_has_its_own_endgame() {
    // Peer 1 took both pieces of the window; peer 2 is asked for duplicates of their blocks
    // (the reader waits on them) rather than for nothing, although pieces past the window
    // are still unrequested.
    let t = now();
    let config = Config {
        min_requests: 4,
        max_requests: 4,
        ..Config::default()
    };
    let mut d = swarm_with(BLOCK_LEN, u64::from(BLOCK_LEN) * 16, config);
    d.set_window(Some(0..2));
    let first: BTreeSet<u32> = requests(&seeder_joins(&mut d, 1, t))
        .iter()
        .map(|b| b.index)
        .collect();
    assert_eq!(first, BTreeSet::from([0, 1]));
    let second: BTreeSet<u32> = requests(&seeder_joins(&mut d, 2, t))
        .iter()
        .map(|b| b.index)
        .collect();
    assert_eq!(
        second,
        BTreeSet::from([0, 1]),
        "duplicates inside the window"
    );
    d.check_invariants().unwrap();
}

/// BEP 6 is agreed only when both handshakes set the bit; the allowed-fast set is the
/// canonical one for an IPv4 peer and empty for an IPv6 one.
#[test]
fn features_are_negotiated_from_both_handshakes() {
    use crate::types::{InfoHash, PeerId};
    use crate::wire::fast::{allowed_fast_set, ALLOWED_FAST_COUNT};
    use crate::wire::Handshake;
    let hash = InfoHash([7; 20]);
    let ours = Handshake::session(hash, PeerId([1; 20]));
    let mut theirs = Handshake::new(hash, PeerId([2; 20]));
    theirs.reserved[7] |= 0x04;
    let v4: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let f = PeerFeatures::negotiate(&ours, &theirs, v4, true, 1000);
    assert!(f.fast && f.extensions && f.outgoing && !f.web_seed);
    assert_eq!(f.addr, Some(v4));
    let expected = allowed_fast_set([10, 1, 2, 3].into(), &hash, 1000, ALLOWED_FAST_COUNT);
    assert_eq!(f.allowed_fast, expected);
    assert_eq!(f.allowed_fast.len(), ALLOWED_FAST_COUNT);

    let v6: SocketAddr = "[::1]:6881".parse().unwrap();
    let f = PeerFeatures::negotiate(&ours, &theirs, v6, false, 1000);
    assert!(f.fast && f.allowed_fast.is_empty());

    theirs.reserved[7] &= !0x04;
    let f = PeerFeatures::negotiate(&ours, &theirs, v4, false, 1000);
    assert!(!f.fast && f.allowed_fast.is_empty());
}

#[test]
fn an_idle_seed_has_no_deadline_before_or_after_a_leecher() {
    let t = now();
    let mut d = seeding(16 * 1024, 4 * 16 * 1024);
    assert_eq!(d.poll_timeout(), None, "no peers, no timers");
    leecher_joins(&mut d, 1, t);
    let req = BlockRef {
        index: 0,
        begin: 0,
        length: 16 * 1024,
    };
    d.handle_message(t, 1, Message::Request(req));
    transmit(&mut d, 1, t);
    d.handle_uploaded(t, 1, 16 * 1024);
    assert!(d.poll_timeout().is_some(), "a connected peer has timers");
    d.handle_disconnected(1);
    drain(&mut d);
    // Whatever was armed for the peer finds nothing to do and leaves no timer behind.
    if let Some(at) = d.poll_timeout() {
        d.handle_timeout(at);
        drain(&mut d);
    }
    assert_eq!(d.poll_timeout(), None);
}

/// BEP 52: a connection speaks v2 when the two handshakes name a hybrid differently: it was
/// opened with the v2 hash, or opened with the v1 hash and answered with the v2 one (the
/// upgrade); the upgrade bit alone is not enough (libtorrent sets it exactly when it did not
/// upgrade).
#[test]
fn v2_is_negotiated_by_the_hash_each_side_named() {
    use crate::types::{InfoHash, PeerId};
    use crate::wire::Handshake;
    let (v1, alias) = (InfoHash([7; 20]), InfoHash([8; 20]));
    let addr: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let ours = Handshake::session(v1, PeerId([1; 20])).with_v2();
    let theirs = Handshake {
        peer_id: PeerId([2; 20]),
        ..ours
    };
    let speaks_v2 =
        |ours: &Handshake, t: &Handshake| PeerFeatures::negotiate(ours, t, addr, true, 9).v2;
    assert!(!speaks_v2(&ours, &theirs));
    // We dialled with v1 and the bit; it answered with the v2 hash.
    assert!(speaks_v2(&ours, &theirs.for_info_hash(alias)));
    // It dialled with v1 and the bit; we answered with the v2 hash.
    let answered = ours.answer_to(&theirs, Some(alias));
    assert!(speaks_v2(&answered, &theirs));
}
