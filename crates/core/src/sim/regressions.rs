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
