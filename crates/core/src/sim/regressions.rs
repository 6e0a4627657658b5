//! The smallest scenarios that showed each bug the simulation found in the swarm, kept as
//! regression tests (the bugs are described on each test).

use std::time::Duration;

use super::scenarios::{config, sim};
use super::*;

const KIB: usize = 1024;

/// Bug: the swarm kept its peers, its pieces in assembly and its peers to wake in hash maps
/// with per-process random keys, and let their iteration order reach its outputs: endgame
/// duplicates were asked in a different order, and wake-ups and timeouts came in a different
/// order, from one run to the next with the same inputs, times and seed.
#[test]
fn endgame_duplicates_follow_the_inputs_alone() {
    let run = || {
        // Every block is owed by the first seeder when the second arrives: all the second is
        // asked for are endgame duplicates.
        let mut sim = sim(1, 16 * KIB as u32, 24 * 16 * KIB);
        let d = sim.add_downloader(config());
        let first = sim.add_script(Behaviour::Honest);
        let second = sim.add_script(Behaviour::Honest);
        sim.connect(d, first, LinkSpec::fast());
        sim.connect_after(Duration::from_millis(1), d, second, LinkSpec::fast());
        let asked = sim
            .run_until(Duration::from_secs(60), |s| {
                !s.requested(d, second).is_empty()
            })
            .unwrap();
        assert!(asked);
        sim.requested(d, second)
    };
    assert_eq!(run(), run());
}

/// The same bug, seen in the order of wake-ups (a verified piece wakes every peer to send
/// `have`) and of disconnections (stallers timing out together).
#[test]
fn wakeups_and_timeouts_follow_the_inputs_alone() {
    let run = || {
        let mut sim = sim(2, 16 * KIB as u32, 8 * 16 * KIB);
        let d = sim.add_downloader(config());
        let stallers: Vec<NodeId> = (0..12)
            .map(|_| sim.add_script(Behaviour::Staller))
            .collect();
        let idle: Vec<NodeId> = (0..12).map(|_| sim.add_script(Behaviour::Idle)).collect();
        for &p in stallers.iter().chain(&idle) {
            sim.connect(d, p, LinkSpec::fast());
        }
        let honest = sim.add_script(Behaviour::Honest);
        sim.connect_after(Duration::from_secs(30), d, honest, LinkSpec::fast());
        assert!(sim.run_to_completion(Duration::from_secs(600)).unwrap());
        (sim.trace_digest(), sim.log)
    };
    assert_eq!(run(), run());
}

/// Bug: a piece that failed its hash check counted against every peer that sent a block of
/// it, so a liar that slipped bad blocks into an honest peer's pieces got the honest peer
/// dropped (and, in the engine, banned) along with itself. Here the memory budget holds one
/// piece, so the two peers share every piece until the swarm tells them apart.
#[test]
fn a_liar_cannot_get_an_honest_peer_dropped() {
    let mut sim = sim(3, 32 * KIB as u32, 24 * 32 * KIB);
    let d = sim.add_downloader(Config {
        max_piece_memory: 32 * KIB as u64,
        min_requests: 1,
        ..config()
    });
    let liar = sim.add_script(Behaviour::Corrupt { every: 1 });
    let honest = sim.add_script(Behaviour::Honest);
    sim.connect(d, liar, LinkSpec::fast());
    sim.connect(d, honest, LinkSpec::fast());
    assert!(sim.run_to_completion(Duration::from_secs(600)).unwrap());
    assert!(sim.is_complete(d));
    assert_eq!(sim.drops(d, honest), vec![]);
    let max = config().max_hash_failures;
    assert_eq!(sim.drops(d, liar), vec![PeerError::BadData(max)]);
    // One shared failure, then the liar's own pieces until it was dropped.
    assert_eq!(sim.verdicts(d).1, 1 + max as usize);
}

/// Bug (in the first form of the fix above): a piece started by a peer on parole stayed that
/// peer's alone after a choke took the peer off it, so nobody, not even that peer once it
/// unchoked again, could finish it, and the download stalled. Here the second peer chokes
/// right behind every block it serves, so its pieces are always left half done.
#[test]
fn a_choke_frees_the_pieces_of_a_peer_on_parole() {
    let mut sim = sim(0, 32 * KIB as u32, 4 * 32 * KIB);
    let d = sim.add_downloader(Config {
        max_piece_memory: 32 * KIB as u64,
        min_requests: 1,
        ..config()
    });
    let liar = sim.add_script(Behaviour::Corrupt { every: 1 });
    let choker = sim.add_script(Behaviour::ChokeAfter {
        every: 1,
        pause: Duration::from_millis(3),
    });
    let link = LinkSpec {
        latency: Duration::from_millis(1),
        bandwidth: None,
    };
    sim.connect(d, liar, link);
    sim.connect(d, choker, link);
    assert!(sim.run_to_completion(Duration::from_secs(600)).unwrap());
    assert!(sim.is_complete(d));
    assert_eq!(sim.drops(d, choker), vec![]);
}

/// Bug: a seeder's choker ranked interested peers by how fast it sent to them and broke ties by
/// peer key, so peers that said they were interested and then asked for nothing (all at rate
/// zero, like a newcomer) kept the regular upload slots for good; a real leecher arriving after
/// them waited for the optimistic slot to land on it among all of them (hours of virtual time
/// with 200 of them). Now equals take turns, those that waited longest first.
#[test]
fn interested_idlers_do_not_keep_the_upload_slots() {
    let mut sim = sim(5, 32 * KIB as u32, 200 * KIB);
    let (slots, hogs) = (4, 50);
    let seeder = sim.add_seeder(Config {
        upload_slots: slots,
        ..config()
    });
    for _ in 0..hogs {
        let hog = sim.add_script(Behaviour::Hog);
        sim.connect(seeder, hog, LinkSpec::fast());
    }
    let d = sim.add_downloader(config());
    sim.connect_after(Duration::from_secs(1), d, seeder, LinkSpec::fast());
    // Its turn comes once every idler before it had one, `slots - 1` of them per rechoke.
    let turns = (hogs / (slots - 1) + 2) as u32;
    let rechoke = crate::swarm::RECHOKE_INTERVAL;
    assert!(sim.run_to_completion(rechoke * turns).unwrap());
    assert!(sim.is_complete(d));
}

/// Bug: a peer's request pipeline held `request_queue_time` (500 ms) worth of its measured
/// rate, and that rate was itself bounded by the pipeline: at most `min_requests` blocks per
/// round trip. Against a peer that answers more slowly than 500 ms (Transmission 3.00 over
/// TCP, a long link) the rate measured with 64 requests out asked for 64 requests again, a
/// fixed point far below what the peer could send (from Transmission: 1.7 MiB/s where aria2
/// took 5.7). Here an 800 ms round trip at 8 MiB/s: 64 requests a round trip would make
/// 1.25 MiB/s (20 s for 24 MiB); the link's bandwidth allows 3 s.
#[test]
fn the_pipeline_grows_to_fill_a_long_round_trip() {
    let mut sim = sim(7, 256 * KIB as u32, 24 * 1024 * KIB);
    let d = sim.add_downloader(config());
    let s = sim.add_seeder(config());
    let link = LinkSpec {
        latency: Duration::from_millis(400),
        bandwidth: Some(8 * 1024 * KIB as u64),
    };
    sim.connect(d, s, link);
    assert!(sim.run_to_completion(Duration::from_secs(600)).unwrap());
    assert!(
        sim.elapsed() < Duration::from_secs(8),
        "24 MiB took {:?} of virtual time",
        sim.elapsed()
    );
}
