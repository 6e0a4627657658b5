//! One scenario per hostile behaviour, as `tests/hostile_peers.rs` runs them against real
//! processes, asserting from the swarms' state and the recorded events what happened: who was
//! dropped and why, which blocks were asked again of whom, what was wasted, and that every
//! download still completed byte-identical.
//!
//! Where a hostile peer must be dropped by the swarm itself, it is alone with the downloader
//! at first (so the download cannot finish); the honest seeder joins afterwards.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::swarm::RATE_WINDOW;

const KIB: usize = 1024;
/// Generous bound on virtual time for a download (a hang fails, it does not spin forever).
const LIMIT: Duration = Duration::from_secs(3600);

/// A sim over `total` random bytes in pieces of `piece_length`, both drawn from `seed`.
pub(super) fn sim(seed: u64, piece_length: u32, total: usize) -> Sim {
    let mut rng = StdRng::seed_from_u64(seed);
    let torrent = Torrent::generate(&mut rng, piece_length, total);
    Sim::new(Instant::now(), seed, torrent)
}

/// Runs until `node` dropped or lost every link to `peer`.
fn run_until_gone(sim: &mut Sim, node: NodeId, peer: NodeId) {
    let gone = sim
        .run_until(LIMIT, |s| {
            let (made, open) = s.links_between(node, peer);
            made > 0 && open == 0
        })
        .unwrap();
    assert!(gone, "{node} kept its link to {peer}: {:?}", sim.log);
}

#[track_caller]
fn complete(sim: &mut Sim, downloaders: &[NodeId]) {
    let done = sim.run_to_completion(LIMIT).unwrap();
    assert!(done, "incomplete after {:?}", sim.elapsed());
    for &d in downloaders {
        assert!(sim.is_complete(d), "node {d} is not byte-identical");
    }
}

pub(super) fn config() -> Config {
    Config::default()
}

/// Pieces whose hash check failed at `node`.
fn failed_pieces(sim: &Sim, node: NodeId) -> BTreeSet<u32> {
    sim.log
        .iter()
        .filter_map(|r| match r {
            Record::Verdict {
                node: n,
                index,
                good: false,
            } if *n == node => Some(*index),
            _ => None,
        })
        .collect()
}

#[test]
fn honest_swarm_completes_everywhere() {
    let mut sim = sim(1, 32 * KIB as u32, 300 * KIB + 7);
    let seeder = sim.add_seeder(config());
    let honest = sim.add_script(Behaviour::Honest);
    let a = sim.add_downloader(config());
    let b = sim.add_downloader(config());
    for d in [a, b] {
        sim.connect_random(d, seeder);
        sim.connect_random(d, honest);
    }
    sim.connect_random(a, b);
    complete(&mut sim, &[a, b]);
    assert!(sim.log.iter().all(|r| !matches!(
        r,
        Record::Dropped { .. } | Record::Verdict { good: false, .. }
    )));
    assert_eq!(sim.script(honest).stats.invalid_requests, 0);
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut sim = sim(seed, 16 * KIB as u32, 200 * KIB);
        let seeder = sim.add_seeder(config());
        let storm = sim.add_script(Behaviour::ChokeStorm {
            period: Duration::from_millis(70),
            toggles: 20,
        });
        let corrupt = sim.add_script(Behaviour::Corrupt { every: 2 });
        let downloaders: Vec<NodeId> = (0..3).map(|_| sim.add_downloader(config())).collect();
        for &d in &downloaders {
            for p in [seeder, storm, corrupt] {
                sim.connect_random(d, p);
            }
        }
        sim.connect_random(downloaders[0], downloaders[1]);
        complete(&mut sim, &downloaders);
        (sim.trace_digest(), sim.elapsed(), sim.log)
    };
    let first = run(3);
    assert_eq!(first, run(3));
    assert_ne!(first.0, run(4).0);
}

#[test]
fn corrupt_peer_is_dropped_and_its_pieces_come_from_others() {
    // 32 KiB pieces: the liar gets many pieces in its first batch of requests.
    let mut sim = sim(401, 32 * KIB as u32, 512 * KIB + 11);
    let d = sim.add_downloader(config());
    let liar = sim.add_script(Behaviour::Corrupt { every: 1 });
    sim.connect(d, liar, LinkSpec::fast());
    run_until_gone(&mut sim, d, liar);
    let max = config().max_hash_failures;
    assert_eq!(sim.drops(d, liar), vec![PeerError::BadData(max)]);
    let failed = failed_pieces(&sim, d);
    assert!(failed.len() >= max as usize, "{failed:?}");
    assert_eq!(sim.verdicts(d).0, 0, "a corrupt piece passed");
    let stats = sim.swarm(d).stats();
    let failed_bytes: u64 = failed
        .iter()
        .map(|&i| u64::from(sim.torrent.piece_len(i)))
        .sum();
    assert!(stats.wasted_bytes >= failed_bytes, "{stats:?}");
    assert_eq!(stats.peers, 0);

    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    // Every piece that failed was fetched again from the honest peer.
    let again: BTreeSet<u32> = sim.requested(d, honest).iter().map(|b| b.index).collect();
    assert!(failed.is_subset(&again), "{failed:?} not all in {again:?}");
    assert_eq!(sim.script(liar).stats.connections, 1);
}

#[test]
fn partly_corrupt_peer_among_honest_ones() {
    let mut sim = sim(402, 32 * KIB as u32, 400 * KIB);
    let d = sim.add_downloader(config());
    let liar = sim.add_script(Behaviour::Corrupt { every: 3 });
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, liar, LinkSpec::fast());
    sim.connect_after(Duration::from_millis(5), d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert!(sim.verdicts(d).1 > 0, "no corrupt piece was assembled");
    assert!(
        sim.drops(d, honest).is_empty(),
        "the honest peer was dropped"
    );
}

#[test]
fn protocol_violations_drop_the_connection() {
    // 33 pieces: the bitfield has 7 spare bits.
    let mut sim = sim(403, 16 * KIB as u32, 33 * 16 * KIB - 5);
    assert_eq!(sim.torrent.piece_count() % 8, 1);
    let d = sim.add_downloader(config());
    let hostile: Vec<NodeId> = [
        Behaviour::BadBitfield(BitfieldFault::TooLong),
        Behaviour::BadBitfield(BitfieldFault::TooShort),
        Behaviour::BadBitfield(BitfieldFault::SpareBits),
        Behaviour::HaveOutOfRange,
    ]
    .into_iter()
    .map(|b| sim.add_script(b))
    .collect();
    for &p in &hostile {
        sim.connect_random(d, p);
    }
    for &p in &hostile {
        run_until_gone(&mut sim, d, p);
        let drops = sim.drops(d, p);
        assert!(
            matches!(drops.as_slice(), [PeerError::Protocol(_)]),
            "{:?}: {drops:?}",
            sim.script(p).behaviour
        );
        assert_eq!(sim.script(p).stats.violations, 1);
    }
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect_random(d, honest);
    complete(&mut sim, &[d]);
    assert_eq!(sim.verdicts(d).1, 0);
}

#[test]
fn invalid_requests_drop_the_connection() {
    let mut sim = sim(404, 32 * KIB as u32, 100 * KIB);
    let seeder = sim.add_seeder(config());
    let d = sim.add_downloader(config());
    let at_seeder: Vec<NodeId> = [
        RequestFault::TooLong,
        RequestFault::Empty,
        RequestFault::PastPieceEnd,
        RequestFault::NoSuchPiece,
    ]
    .into_iter()
    .map(|f| sim.add_script(Behaviour::BadRequest(f)))
    .collect();
    let at_leecher = sim.add_script(Behaviour::BadRequest(RequestFault::NotHad));
    for &p in &at_seeder {
        sim.connect_random(seeder, p);
    }
    sim.connect_random(d, at_leecher);
    for &p in &at_seeder {
        run_until_gone(&mut sim, seeder, p);
        let drops = sim.drops(seeder, p);
        assert!(
            matches!(drops.as_slice(), [PeerError::Protocol(_)]),
            "{drops:?}"
        );
    }
    run_until_gone(&mut sim, d, at_leecher);
    assert!(matches!(
        sim.drops(d, at_leecher).as_slice(),
        [PeerError::Protocol(_)]
    ));
    // The seeder keeps serving.
    sim.connect_random(d, seeder);
    complete(&mut sim, &[d]);
    assert_eq!(sim.swarm(seeder).stats().peers, 1);
}

/// A trickster sends wrong blocks nobody asked for (or after a choke), then serves honestly
/// beside a throttled honest seeder: its bogus blocks are wasted, none is used, and it is used
/// once it behaves.
fn bogus_blocks_are_ignored(trick: Behaviour, seed: u64) {
    let mut sim = sim(seed, 32 * KIB as u32, 512 * KIB + 77);
    let d = sim.add_downloader(config());
    let trickster = sim.add_script(trick);
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, trickster, LinkSpec::fast());
    let slow = LinkSpec {
        latency: Duration::from_millis(20),
        bandwidth: Some(128 * 1024),
    };
    sim.connect(d, honest, slow);
    complete(&mut sim, &[d]);
    let tricks = &sim.script(trickster).stats;
    assert!(tricks.bogus > 0, "{trick:?} never sent its bogus blocks");
    assert_eq!(sim.verdicts(d).1, 0, "bogus blocks were used");
    assert!(tricks.served > 0, "{trick:?} was not used once it behaved");
    assert!(sim.drops(d, trickster).is_empty());
    assert!(
        sim.swarm(d).stats().wasted_bytes >= u64::from(tricks.bogus) * 16 * 1024 - 16 * 1024,
        "{:?}",
        sim.swarm(d).stats()
    );
}

#[test]
fn unrequested_blocks_are_ignored() {
    bogus_blocks_are_ignored(Behaviour::Unrequested, 405);
}

#[test]
fn blocks_after_a_choke_are_ignored() {
    let pause = Duration::from_millis(500);
    bogus_blocks_are_ignored(Behaviour::ChokeData { pause }, 406);
}

#[test]
fn stalled_peer_is_dropped_and_its_blocks_go_to_others() {
    let mut sim = sim(407, 32 * KIB as u32, 256 * KIB + 9);
    let d = sim.add_downloader(config());
    let staller = sim.add_script(Behaviour::Staller);
    sim.connect(d, staller, LinkSpec::fast());
    run_until_gone(&mut sim, d, staller);
    assert_eq!(
        sim.drops(d, staller),
        vec![PeerError::Timeout("requested blocks never came")]
    );
    // Dropped at the request timeout, not before (its first requests left at once).
    let timeout = config().request_timeout;
    assert!(sim.elapsed() >= timeout && sim.elapsed() <= timeout + 2 * RATE_WINDOW);
    let owed: HashSet<BlockRef> = sim.requested(d, staller).into_iter().collect();
    assert!(!owed.is_empty());

    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    let asked: HashSet<BlockRef> = sim.requested(d, honest).into_iter().collect();
    assert!(
        owed.is_subset(&asked),
        "the staller's blocks were not asked again"
    );
    assert_eq!(sim.script(staller).stats.served, 0);
}

#[test]
fn slow_peer_is_used_and_a_slower_one_dropped() {
    let mut sim = sim(408, 32 * KIB as u32, 256 * KIB);
    let d = sim.add_downloader(config());
    let slow = sim.add_script(Behaviour::Slow {
        delay: Duration::from_secs(2),
    });
    sim.connect(d, slow, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert!(sim.drops(d, slow).is_empty());
    assert!(sim.elapsed() >= Duration::from_secs(2));

    let mut sim = sim_slower();
    let d = 0;
    let (slower, honest) = (1, 2);
    run_until_gone(&mut sim, d, slower);
    assert_eq!(
        sim.drops(d, slower),
        vec![PeerError::Timeout("requested blocks never came")]
    );
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
}

/// A downloader (node 0) beside a peer slower than the request timeout (node 1), and an honest
/// seeder (node 2), not connected yet.
fn sim_slower() -> Sim {
    let mut sim = sim(409, 32 * KIB as u32, 256 * KIB);
    let d = sim.add_downloader(config());
    let slower = sim.add_script(Behaviour::Slow {
        delay: config().request_timeout + Duration::from_secs(10),
    });
    sim.add_script(Behaviour::Honest);
    sim.connect(d, slower, LinkSpec::fast());
    sim
}

#[test]
fn disconnect_mid_piece_loses_only_the_missing_blocks() {
    // 4 pieces of 4 blocks, all asked of the quitter at once; it serves 3 and leaves.
    let mut sim = sim(410, 64 * KIB as u32, 256 * KIB);
    let d = sim.add_downloader(config());
    let quitter = sim.add_script(Behaviour::DisconnectMidPiece { blocks: 3 });
    sim.connect(d, quitter, LinkSpec::fast());
    run_until_gone(&mut sim, d, quitter);
    assert!(
        sim.drops(d, quitter).is_empty(),
        "the quitter left by itself"
    );
    assert!(sim.log.contains(&Record::ClosedByPeer {
        node: d,
        peer: quitter,
        link: 0
    }));
    let asked = sim.requested(d, quitter);
    assert_eq!(asked.len(), 16);
    assert_eq!(sim.swarm(d).stats().peers, 0);

    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    // Exactly the blocks the quitter did not send were asked again.
    let again: HashSet<BlockRef> = sim.requested(d, honest).into_iter().collect();
    let missing: HashSet<BlockRef> = asked[3..].iter().copied().collect();
    assert_eq!(again, missing);
    assert_eq!(sim.swarm(d).stats().wasted_bytes, 0);
}

#[test]
fn choke_storm_releases_requests_and_completes() {
    let mut sim = sim(411, 32 * KIB as u32, 512 * KIB);
    // A short pipeline, topped up as blocks come: requests are in flight when chokes land.
    let d = sim.add_downloader(Config {
        min_requests: 2,
        ..config()
    });
    let storm = sim.add_script(Behaviour::ChokeStorm {
        period: Duration::from_millis(30),
        toggles: 100,
    });
    let spec = LinkSpec {
        latency: Duration::from_millis(10),
        bandwidth: Some(1024 * 1024),
    };
    sim.connect(d, storm, spec);
    complete(&mut sim, &[d]);
    assert!(sim.drops(d, storm).is_empty());
    // Chokes discarded requests, which were asked again.
    let asked = sim.requested(d, storm);
    let distinct: HashSet<BlockRef> = asked.iter().copied().collect();
    assert!(asked.len() > distinct.len(), "no request was repeated");
    assert_eq!(sim.script(storm).stats.invalid_requests, 0);
}

#[test]
fn peer_that_never_unchokes_gets_no_requests() {
    let mut sim = sim(412, 32 * KIB as u32, 256 * KIB);
    let d = sim.add_downloader(config());
    let coy = sim.add_script(Behaviour::NeverUnchoke);
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, coy, LinkSpec::fast());
    // The honest seeder comes much later: the download waits, without dropping the coy peer.
    sim.connect_after(Duration::from_secs(600), d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert!(sim.requested(d, coy).is_empty());
    assert_eq!(sim.script(coy).stats.requests, 0);
    assert_eq!(sim.links_between(d, coy), (1, 1));
}

#[test]
fn seeder_serves_through_a_flood_of_connections() {
    let mut sim = sim(413, 32 * KIB as u32, 200 * KIB);
    let slots = 4;
    let seeder = sim.add_seeder(Config {
        upload_slots: slots,
        ..config()
    });
    let flood: Vec<NodeId> = (0..200).map(|_| sim.add_script(Behaviour::Idle)).collect();
    for &p in &flood {
        sim.connect(seeder, p, LinkSpec::fast());
    }
    let d = sim.add_downloader(config());
    sim.connect_after(Duration::from_secs(1), d, seeder, LinkSpec::fast());
    let mut most_unchoked = 0;
    let done = sim
        .run_until(LIMIT, |s| {
            most_unchoked = most_unchoked.max(s.unchoked_by(seeder));
            s.swarm(d).is_done()
        })
        .unwrap();
    assert!(done);
    assert!(sim.is_complete(d));
    assert!((1..=slots).contains(&most_unchoked), "{most_unchoked}");
    assert_eq!(sim.swarm(seeder).stats().peers, 201);
    let open: usize = flood
        .iter()
        .map(|&p| sim.script(p).open_connections())
        .sum();
    assert_eq!(open, 200);
}

#[test]
fn seeder_serves_a_leecher_that_cancels() {
    let mut sim = sim(414, 32 * KIB as u32, 300 * KIB + 3);
    let seeder = sim.add_seeder(config());
    let leecher = sim.add_script(Behaviour::Leecher {
        pipeline: 8,
        cancel_every: 3,
    });
    sim.connect(seeder, leecher, LinkSpec::fast());
    let blocks = (300 * KIB + 3).div_ceil(16 * KIB) as u32;
    let done = sim
        .run_until(LIMIT, |s| s.script(leecher).stats.leeched >= blocks)
        .unwrap();
    assert!(done);
    let stats = &sim.script(leecher).stats;
    assert_eq!(stats.corrupt_received, 0);
    assert!(
        stats.cancels == 0 && stats.requests == 0,
        "a leecher is not asked"
    );
    // Every third request was cancelled right behind it and not served: each block went once.
    assert_eq!(stats.leeched, blocks);
    let uploaded = sim.swarm(seeder).stats().uploaded_bytes;
    assert_eq!(uploaded, sim.torrent.total_length());
    assert!(sim.drops(seeder, leecher).is_empty());
}

#[test]
fn partial_seeders_that_complete_later_serve_everything() {
    let minute = Duration::from_secs(60);
    let mut s = sim(415, 16 * KIB as u32, 16 * 16 * KIB);
    let d = s.add_downloader(config());
    // One has the even pieces, one the odd; each announces the rest only after a minute.
    let even = s.add_script(Behaviour::Partial {
        mask: 0b0101_0101,
        later: minute,
    });
    let odd = s.add_script(Behaviour::Partial {
        mask: 0b1010_1010,
        later: minute,
    });
    s.connect(d, even, LinkSpec::fast());
    s.connect(d, odd, LinkSpec::fast());
    complete(&mut s, &[d]);
    assert!(s.elapsed() < minute, "waited for the late pieces");
    for (p, parity) in [(even, 0), (odd, 1)] {
        assert!(s.requested(d, p).iter().all(|b| b.index % 2 == parity));
        assert_eq!(s.script(p).stats.invalid_requests, 0);
    }

    // Nobody has piece 0 until one peer announces it with `have`.
    let mut sim = sim(416, 16 * KIB as u32, 8 * 16 * KIB);
    let d = sim.add_downloader(config());
    let late = sim.add_script(Behaviour::Partial {
        mask: 0b1111_1110,
        later: minute,
    });
    sim.connect(d, late, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert!(sim.elapsed() >= minute);
}

#[test]
fn liars_one_after_another_are_each_dropped_and_give_back_their_blocks() {
    // As a peer dialling again and again with corrupt data: 20 connections, each dropped after
    // its third bad piece; the honest seeder that comes last finishes the download.
    let mut sim = sim(418, 32 * KIB as u32, 1024 * KIB + 1);
    let d = sim.add_downloader(config());
    let liars: Vec<NodeId> = (0..20)
        .map(|_| sim.add_script(Behaviour::Corrupt { every: 1 }))
        .collect();
    for (i, &liar) in liars.iter().enumerate() {
        sim.connect_after(Duration::from_secs(5 * i as u64), d, liar, LinkSpec::fast());
    }
    for &liar in &liars {
        run_until_gone(&mut sim, d, liar);
    }
    let max = config().max_hash_failures;
    for &liar in &liars {
        assert_eq!(sim.drops(d, liar), vec![PeerError::BadData(max)]);
    }
    let stats = sim.swarm(d).stats();
    assert_eq!((stats.peers, stats.verified_bytes), (0, 0));
    let (good, bad) = sim.verdicts(d);
    assert_eq!(good, 0);
    assert!(bad >= 20 * max as usize, "{bad}");

    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert_eq!(sim.swarm(d).stats().peers, 1);
}

/// BEP 52: a v2 piece that an honest peer and a corrupting one both sent fails; its block
/// hashes, asked of a peer and checked against the piece layer, name the corrupting peer,
/// which alone is dropped, and only the bad block is fetched again.
#[test]
fn v2_block_hashes_name_the_sender_of_a_bad_block() {
    let run = |seed: u64| {
        let mut rng = StdRng::seed_from_u64(seed);
        let torrent = Torrent::generate_v2(&mut rng, 64 * KIB as u32, 8 * 64 * KIB - 5);
        let mut sim = Sim::new(Instant::now(), seed, torrent);
        // Room for one piece and two requests per peer: the two peers share every piece.
        let d = sim.add_downloader(Config {
            max_piece_memory: 64 * KIB as u64,
            min_requests: 2,
            max_requests: 2,
            endgame_duplicates: 1,
            ..config()
        });
        let honest = sim.add_script(Behaviour::Honest);
        // Its first block is spoiled, the rest are right.
        let corrupt = sim.add_script(Behaviour::Corrupt { every: 1000 });
        sim.connect(d, honest, LinkSpec::fast());
        sim.connect(d, corrupt, LinkSpec::fast());
        complete(&mut sim, &[d]);
        (sim, d, honest, corrupt)
    };
    for seed in [413, 414, 415] {
        let (sim, d, honest, corrupt) = run(seed);
        assert!(
            matches!(sim.drops(d, corrupt)[..], [PeerError::BadBlocks(_)]),
            "{:?}",
            sim.log
        );
        assert!(sim.drops(d, honest).is_empty(), "{:?}", sim.log);
        let failed: Vec<u32> = failed_pieces(&sim, d).into_iter().collect();
        let [piece] = failed[..] else {
            panic!("failed pieces {failed:?}")
        };
        assert_eq!(sim.verdicts(d), (8, 1));
        // The failed piece had blocks of both; of its four blocks, one (the corrupt peer's
        // first) was asked for again, of the honest peer.
        let of_piece = |p| -> Vec<BlockRef> {
            (sim.requested(d, p).into_iter())
                .filter(|b| b.index == piece)
                .collect()
        };
        let (from_honest, from_corrupt) = (of_piece(honest), of_piece(corrupt));
        assert!(!from_corrupt.is_empty() && !from_honest.is_empty());
        assert_eq!(
            from_honest.len() + from_corrupt.len(),
            4 + 1,
            "{:?}",
            sim.log
        );
        let again = from_honest.iter().find(|b| from_corrupt.contains(b));
        assert_eq!(again, from_corrupt.first(), "{:?}", sim.log);
        // One peer was asked for the hashes, once.
        let asked =
            sim.script(honest).stats.hash_requests + sim.script(corrupt).stats.hash_requests;
        assert_eq!(asked, 1);
        assert_eq!(sim.swarm(d).stats().wasted_bytes, 16 * KIB as u64);
    }
}

/// Whether `node` refused a link with `peer`, or made a second one, after running on.
fn reconnect(sim: &mut Sim, node: NodeId, peer: NodeId) -> bool {
    sim.connect(node, peer, LinkSpec::fast());
    let limit = sim.elapsed() + Duration::from_secs(60);
    let refused = Record::Refused { node, peer };
    let settled = sim
        .run_until(limit, |s| {
            s.log.contains(&refused) || s.links_between(node, peer).0 > 1
        })
        .unwrap();
    assert!(settled, "the reconnection never came");
    sim.log.contains(&refused)
}

/// A corrupt peer that sends its bad data and leaves before any verdict is banned all the
/// same when the verdicts come, and refused when it comes back: with v1 hashes once three
/// pieces it sent alone failed; with v2 hashes for one bad block, named by the block hashes
/// (a piece shared with an honest peer, which the v1 rule would not blame).
#[test]
fn a_corrupt_peer_that_left_before_its_verdicts_is_banned_and_refused() {
    let max = config().max_hash_failures;
    // v1: one-block pieces, each of its bad blocks a piece of its own.
    let mut sim = sim(419, 16 * KIB as u32, 256 * KIB);
    let d = sim.add_downloader(config());
    let runner = sim.add_script(Behaviour::CorruptThenLeave { blocks: max });
    sim.connect(d, runner, LinkSpec::fast());
    run_until_gone(&mut sim, d, runner);
    assert!(sim.drops(d, runner).is_empty(), "it left by itself");
    assert_eq!(sim.verdicts(d), (0, 0), "it left before the verdicts");
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert_eq!(sim.verdicts(d).1, max as usize);
    assert_eq!(sim.bans(d, runner), vec![PeerError::BadData(max)]);
    assert!(reconnect(&mut sim, d, runner), "{:?}", sim.log);
    assert_eq!(sim.script(runner).stats.connections, 1);
    assert!(sim.bans(d, honest).is_empty() && sim.drops(d, honest).is_empty());

    // v2: one bad block, the rest of its piece from the honest peer.
    let mut rng = StdRng::seed_from_u64(420);
    let torrent = Torrent::generate_v2(&mut rng, 64 * KIB as u32, 4 * 64 * KIB);
    let mut sim = Sim::new(Instant::now(), 420, torrent);
    let d = sim.add_downloader(config());
    let runner = sim.add_script(Behaviour::CorruptThenLeave { blocks: 1 });
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, runner, LinkSpec::fast());
    run_until_gone(&mut sim, d, runner);
    let [bad] = sim.requested(d, runner)[..1] else {
        unreachable!()
    };
    sim.connect(d, honest, LinkSpec::fast());
    complete(&mut sim, &[d]);
    assert_eq!(sim.verdicts(d).1, 1);
    assert_eq!(sim.bans(d, runner), vec![PeerError::BadBlocks(bad.index)]);
    // Only the bad block was fetched again.
    assert_eq!(sim.swarm(d).stats().wasted_bytes, 16 * KIB as u64);
    assert!(reconnect(&mut sim, d, runner), "{:?}", sim.log);
    assert_eq!(sim.script(runner).stats.connections, 1);
    assert!(sim.bans(d, honest).is_empty() && sim.drops(d, honest).is_empty());
}
