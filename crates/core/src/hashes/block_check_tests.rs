//! Tests of naming a failed piece's bad blocks from a peer's block hashes
//! ([`PieceHashes::block_request`], [`PieceHashes::bad_blocks`]).

use std::sync::Arc;

use proptest::prelude::*;

use super::tests::{full, made, piece, run_job};
use super::*;
use crate::metainfo::{MetaVersion, Metainfo};

/// The honest answer to `req`, computed from the payload as a seeding peer computes it.
fn honest_answer(
    meta: &Metainfo,
    payload: &[u8],
    hashes: &Arc<PieceHashes>,
    req: &HashRequest,
) -> Bytes {
    let job = hashes
        .block_job(req)
        .expect("a request we answer ourselves");
    match run_job(meta, payload, job) {
        Message::Hashes { request, hashes } if request == *req => hashes,
        other => panic!("{req:?} answered with {other:?}"),
    }
}

/// Where [`spoiled`] flips a byte for block `b`: `offset` into it, or the last byte.
fn spot(len: usize, b: u32, offset: usize) -> usize {
    (b as usize * 16 * 1024 + offset).min(len - 1)
}

/// `data` with one byte of each of `blocks` flipped (see [`spot`]).
fn spoiled(data: &[u8], blocks: &[u32], offset: usize) -> Vec<u8> {
    let mut data = data.to_vec();
    for &b in blocks {
        let at = spot(data.len(), b, offset);
        data[at] ^= 0x40;
    }
    data
}

#[test]
fn block_hashes_name_exactly_the_bad_blocks() {
    // 64 KiB pieces of four blocks: "big" has 5 whole pieces and one of 20,000 bytes (two
    // blocks, the second short); "d" is one piece of three blocks (a tree of 4 leaves).
    let files = [("big", 5 * 64 * 1024 + 20_000), ("d", 2 * 16 * 1024 + 7)];
    for version in [MetaVersion::V2, MetaVersion::Hybrid] {
        let (meta, payload) = made(&files, 64 * 1024, version);
        let hashes = Arc::new(full(&meta));
        for i in 0..meta.info.piece_count() {
            let Some(req) = hashes.block_request(i) else {
                continue;
            };
            assert_eq!((req.base_layer, req.proof_layers), (0, 0));
            let data = piece(&meta, &payload, i);
            let answer = honest_answer(&meta, &payload, &hashes, &req);
            let data_blocks = (0..4)
                .filter(|b| {
                    hashes.bad_blocks(i, &spoiled(data, &[*b], 0), &req, &answer) == Some(vec![*b])
                })
                .count();
            assert!(data_blocks >= 2, "piece {i}: {data_blocks} blocks checked");
            assert_eq!(hashes.bad_blocks(i, data, &req, &answer), Some(vec![]));
            let two = spoiled(data, &[0, 1], 100);
            assert_eq!(hashes.bad_blocks(i, &two, &req, &answer), Some(vec![0, 1]));
            // A lie never passes: one hash changed, one too few, or the answer to another
            // request.
            let mut lie = answer.to_vec();
            lie[5] ^= 1;
            assert_eq!(hashes.bad_blocks(i, &two, &req, &lie), None);
            assert_eq!(hashes.bad_blocks(i, &two, &req, &answer[32..]), None);
            let other = HashRequest {
                index: req.index ^ req.length,
                ..req
            };
            assert_eq!(hashes.bad_blocks(i, &two, &other, &answer), None);
        }
        // Pieces 0..=5 of "big" and the one of "d" are checked (their subtrees have leaves).
        let checked = (0..meta.info.piece_count()).filter(|&i| hashes.block_request(i).is_some());
        assert_eq!(checked.count(), 7, "{version:?}");
    }
}

#[test]
fn padding_is_never_blamed_and_single_blocks_need_no_lookup() {
    // "b": a piece of 16 KiB + 5 bytes then padding up to 64 KiB in the payload.
    let (meta, payload) = made(
        &[("b", 16 * 1024 + 5), ("c", 64 * 1024)],
        64 * 1024,
        MetaVersion::Hybrid,
    );
    let hashes = Arc::new(full(&meta));
    let req = hashes.block_request(0).unwrap();
    assert_eq!(
        req.length, 2,
        "a file of one piece: its blocks rounded up to a power of two"
    );
    let answer = honest_answer(&meta, &payload, &hashes, &req);
    let data = piece(&meta, &payload, 0);
    assert_eq!(data.len(), 64 * 1024);
    // Bytes past the file's end have no v2 hash: nobody can be named for them.
    assert_eq!(
        hashes.bad_blocks(0, &spoiled(data, &[2], 0), &req, &answer),
        Some(vec![])
    );
    assert_eq!(
        hashes.bad_blocks(0, &spoiled(data, &[1], 4), &req, &answer),
        Some(vec![1])
    );
    // 16 KiB pieces are one block each; a v1 torrent has no block hashes.
    let (meta, _) = made(&[("x", 5 * 16 * 1024)], 16 * 1024, MetaVersion::V2);
    assert!((0..5).all(|i| full(&meta).block_request(i).is_none()));
    let (meta, _) = made(&[("x", 5 * 64 * 1024)], 64 * 1024, MetaVersion::V1);
    assert!((0..5).all(|i| full(&meta).block_request(i).is_none()));
    // Nor does a v2 piece whose layer is unknown.
    let (meta, _) = made(&[("x", 5 * 64 * 1024)], 64 * 1024, MetaVersion::V2);
    let bare = PieceHashes::new(Arc::new(meta.info.clone()), &Default::default()).unwrap();
    assert!(bare.block_request(0).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_blocks_named_are_the_blocks_spoiled(
        length in 16 * 1024u64 + 1..6 * 128 * 1024,
        pl_shift in 1u32..4,
        spoil in proptest::collection::btree_set(0u32..8, 0..4),
        offset in 0usize..16 * 1024,
        lie_at in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let pl = (16 * 1024) << pl_shift;
        let (meta, payload) = made(&[("x", length)], pl, MetaVersion::V2);
        let hashes = Arc::new(full(&meta));
        let i = meta.info.piece_count() - 1;
        let Some(req) = hashes.block_request(i) else {
            // A last piece of one block (of a file of one piece).
            prop_assert!(length <= 16 * 1024 || meta.info.piece_count() > 1);
            return Ok(());
        };
        let data = piece(&meta, &payload, i);
        let file_bytes = (length - u64::from(i) * u64::from(pl)) as usize;
        let spoil: Vec<u32> = spoil.into_iter().collect();
        let bad_data = spoiled(data, &spoil, offset);
        // The blocks holding a flipped byte of the file (flips in the padding go unseen).
        let mut named: Vec<u32> = spoil
            .iter()
            .map(|&b| spot(data.len(), b, offset))
            .filter(|&at| at < file_bytes)
            .map(|at| (at / (16 * 1024)) as u32)
            .collect();
        named.dedup();
        let mut answer = honest_answer(&meta, &payload, &hashes, &req).to_vec();
        if let Some(at) = lie_at {
            let at = at.index(answer.len());
            answer[at] ^= 0x80;
            prop_assert_eq!(hashes.bad_blocks(i, &bad_data, &req, &answer), None);
        } else {
            prop_assert_eq!(hashes.bad_blocks(i, &bad_data, &req, &answer), Some(named));
        }
    }
}

/// How peer 3 (which has every piece but never unchokes us) answers requests for hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answerer {
    Honest,
    Lies,
    Rejects,
    Silent,
    /// `count` hashes of `byte`s.
    Garbage {
        count: usize,
        byte: u8,
    },
    /// The right hashes, but for another request than ours.
    Stray,
}

/// What a swarm did in [`swarm_with_a_corrupt_block`].
#[derive(Debug, Default)]
struct Run {
    /// Blocks asked for, in order.
    requests: Vec<crate::wire::BlockRef>,
    /// Peers asked for hashes, in order.
    hash_requests: Vec<u64>,
    disconnects: Vec<(u64, crate::swarm::PeerError)>,
    bad_verdicts: u32,
    wasted: u64,
}

/// A v2 torrent of four 64 KiB pieces (four blocks each) downloaded with room for one piece
/// in memory, from peer 1 (honest) and peer 2 (its first block spoiled), two requests each
/// (so they share every piece), while peer 3 has every piece, never unchokes and answers
/// hash requests as `answerer` says (1 and 2 answer honestly). On a hybrid, the peers speak
/// v2 if `upgraded` (as if both sides set the upgrade bit).
fn swarm_with_a_corrupt_block(answerer: Answerer, version: MetaVersion, upgraded: bool) -> Run {
    use crate::swarm::{Bitfield, Config, PeerFeatures, Swarm, SwarmEvent};
    let (meta, payload) = made(&[("x", 4 * 64 * 1024)], 64 * 1024, version);
    let hashes = Arc::new(full(&meta));
    let count = meta.info.piece_count();
    let config = Config {
        max_piece_memory: 64 * 1024,
        min_requests: 2,
        max_requests: 2,
        endgame_duplicates: 1,
        ..Config::default()
    };
    let info = &meta.info;
    let mut swarm = Swarm::new(
        info.piece_length,
        info.total_length,
        Bitfield::new(count),
        Bitfield::full(count),
        config,
        1,
    );
    swarm.set_piece_hashes(hashes.clone());
    let mut t = std::time::Instant::now();
    let full_bits = Message::Bitfield(Bytes::copy_from_slice(Bitfield::full(count).as_bytes()));
    for k in 1..=3 {
        let features = PeerFeatures {
            v2: upgraded,
            ..PeerFeatures::default()
        };
        swarm.handle_connected(t, k, features);
        swarm.handle_message(t, k, full_bits.clone());
        if k != 3 {
            swarm.handle_message(t, k, Message::Unchoke);
        }
    }
    let mut run = Run::default();
    let mut alive = vec![1u64, 2, 3];
    let mut spoiled_one = false;
    for _ in 0..1000 {
        if swarm.is_done() {
            break;
        }
        let mut moved = false;
        for k in alive.clone() {
            let mut out = Vec::new();
            swarm.poll_transmit(t, k, &mut out);
            for msg in out {
                let reply = match msg {
                    Message::Request(b) => {
                        run.requests.push(b);
                        let start = b.index as usize * 64 * 1024 + b.begin as usize;
                        let mut data = payload[start..start + b.length as usize].to_vec();
                        if k == 2 && !spoiled_one {
                            spoiled_one = true;
                            data[7] ^= 1;
                        }
                        Some(Message::Piece {
                            index: b.index,
                            begin: b.begin,
                            data: data.into(),
                        })
                    }
                    Message::HashRequest(req) => {
                        run.hash_requests.push(k);
                        let mut answer = honest_answer(&meta, &payload, &hashes, &req).to_vec();
                        match (k, answerer) {
                            (3, Answerer::Silent) => None,
                            (3, Answerer::Rejects) => Some(Message::HashReject(req)),
                            (3, Answerer::Lies) => {
                                answer[0] ^= 1;
                                Some(Message::Hashes {
                                    request: req,
                                    hashes: answer.into(),
                                })
                            }
                            (3, Answerer::Garbage { count, byte }) => Some(Message::Hashes {
                                request: req,
                                hashes: vec![byte; count * 32].into(),
                            }),
                            (3, Answerer::Stray) => Some(Message::Hashes {
                                request: HashRequest {
                                    index: req.index ^ req.length,
                                    ..req
                                },
                                hashes: answer.into(),
                            }),
                            _ => Some(Message::Hashes {
                                request: req,
                                hashes: answer.into(),
                            }),
                        }
                    }
                    _ => None,
                };
                if let Some(reply) = reply {
                    moved = true;
                    swarm.handle_message(t, k, reply);
                }
            }
        }
        while let Some(event) = swarm.poll_event() {
            match event {
                SwarmEvent::Verify(p) => {
                    moved = true;
                    let good = hashes.check(p.index, &p.data);
                    run.bad_verdicts += u32::from(!good);
                    swarm.handle_verdict(t, p.index, good, p.data);
                }
                SwarmEvent::Disconnect { peer, reason } => {
                    alive.retain(|&k| k != peer);
                    run.disconnects.push((peer, reason));
                }
                _ => {}
            }
        }
        swarm.check_invariants().unwrap();
        if !moved {
            // Only a timer can move things on.
            t += std::time::Duration::from_secs(1);
            swarm.handle_timeout(t);
        }
    }
    assert!(swarm.is_done(), "{run:?}");
    run.wasted = swarm.stats().wasted_bytes;
    run
}

#[test]
fn a_swarm_bans_the_sender_of_a_bad_block_and_refetches_only_that_block() {
    use crate::swarm::PeerError;
    let run = swarm_with_a_corrupt_block(Answerer::Honest, MetaVersion::V2, false);
    // The piece shared by 1 and 2 failed; 3 (which sent none of it) was asked, and only 2 was
    // dropped, for certain.
    assert_eq!(run.bad_verdicts, 1);
    assert_eq!(run.hash_requests, [3]);
    let [(2, PeerError::BadBlocks(piece))] = run.disconnects[..] else {
        panic!("{run:?}")
    };
    // Every block was asked for once, but the bad one, asked for again (of peer 1).
    assert_eq!(run.requests.len(), 16 + 1, "{run:?}");
    let bad = run
        .requests
        .iter()
        .find(|b| b.index == piece && run.requests.iter().filter(|c| c == b).count() == 2);
    assert!(bad.is_some(), "{run:?}");
    assert_eq!(run.wasted, 16 * 1024);
}

#[test]
fn a_lying_answer_drops_the_liar_and_the_next_peer_is_asked() {
    use crate::swarm::PeerError;
    let run = swarm_with_a_corrupt_block(Answerer::Lies, MetaVersion::V2, false);
    assert_eq!(run.hash_requests, [3, 1], "{run:?}");
    assert!(
        matches!(
            run.disconnects[..],
            [(3, PeerError::BadHashes), (2, PeerError::BadBlocks(_))]
        ),
        "{run:?}"
    );
    assert_eq!(run.requests.len(), 16 + 1, "{run:?}");
    // A reject is no crime: the next peer is asked.
    let run = swarm_with_a_corrupt_block(Answerer::Rejects, MetaVersion::V2, false);
    assert_eq!(run.hash_requests, [3, 1], "{run:?}");
    assert!(
        matches!(run.disconnects[..], [(2, PeerError::BadBlocks(_))]),
        "{run:?}"
    );
}

#[test]
fn without_an_answer_in_time_the_piece_fails_as_a_whole() {
    let run = swarm_with_a_corrupt_block(Answerer::Silent, MetaVersion::V2, false);
    assert_eq!(run.hash_requests, [3], "{run:?}");
    // Both senders are put on parole (nobody dropped) and the whole piece comes again.
    assert!(run.disconnects.is_empty(), "{run:?}");
    assert_eq!(run.requests.len(), 16 + 4, "{run:?}");
    assert_eq!(run.wasted, 64 * 1024);
}

#[test]
fn a_hybrid_asks_for_block_hashes_only_on_upgraded_connections() {
    use crate::swarm::PeerError;
    // Peers that did not offer the upgrade are never asked (libtorrent drops a peer that
    // sends it a hash request then): the piece fails as a whole.
    let run = swarm_with_a_corrupt_block(Answerer::Honest, MetaVersion::Hybrid, false);
    assert!(
        run.hash_requests.is_empty() && run.disconnects.is_empty(),
        "{run:?}"
    );
    assert_eq!(run.requests.len(), 16 + 4, "{run:?}");
    // Upgraded, they are, and the bad block's sender is named.
    let run = swarm_with_a_corrupt_block(Answerer::Honest, MetaVersion::Hybrid, true);
    assert_eq!(run.hash_requests, [3], "{run:?}");
    assert!(
        matches!(run.disconnects[..], [(2, PeerError::BadBlocks(_))]),
        "{run:?}"
    );
    assert_eq!(run.requests.len(), 16 + 1, "{run:?}");
}

#[test]
fn an_answer_to_another_request_is_ignored() {
    // Stray hashes are no answer: the check waits for its deadline, then the piece fails as
    // a whole (nobody dropped).
    let run = swarm_with_a_corrupt_block(Answerer::Stray, MetaVersion::V2, false);
    assert_eq!(run.hash_requests, [3], "{run:?}");
    assert!(run.disconnects.is_empty(), "{run:?}");
    assert_eq!(run.requests.len(), 16 + 4, "{run:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Whatever hashes the asked peer sends (any count, any bytes), it is dropped for them and
    /// the next peer's true answer names the bad block's sender.
    #[test]
    fn any_false_answer_drops_the_answerer(count in 0usize..9, byte in any::<u8>()) {
        use crate::swarm::PeerError;
        let run = swarm_with_a_corrupt_block(Answerer::Garbage { count, byte }, MetaVersion::V2, false);
        prop_assert_eq!(&run.hash_requests, &[3, 1]);
        prop_assert!(
            matches!(run.disconnects[..], [(3, PeerError::BadHashes), (2, PeerError::BadBlocks(_))]),
            "{:?}", run
        );
        prop_assert_eq!(run.requests.len(), 16 + 1);
    }
}
