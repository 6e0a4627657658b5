//! Random swarms under proptest: a seed, a small torrent (a few pieces of random, not always
//! block-aligned sizes), bitrush downloaders (some resuming, some wanting only part of it),
//! bitrush seeders and scripted peers, hostile ones among them, over random links, with
//! random swarm tunables. Each runs to completion or a virtual-time bound with every swarm's
//! invariants checked after every step ([`Sim::step`]). With an honest seeder present every
//! downloader must finish byte-identical and no honest peer may be dropped; none is ever
//! banned. Whatever the swarm, bitrush sends no request a scripted peer finds invalid,
//! uploads no wrong block, verifies each piece once, and counts what failed as wasted.
//!
//! 1,000 swarms by default; `PROPTEST_CASES` overrides it.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

/// Proptest cases: `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Virtual time a swarm with an honest seeder gets to finish.
const LIMIT_HONEST: Duration = Duration::from_secs(3600);
/// Virtual time a swarm without one runs (for the invariants only).
const LIMIT_HOSTILE: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct DownloaderSpec {
    /// Pieces on disk at the start: bit `i % 8` of the mask for piece `i`.
    have: u8,
    /// Pieces wanted, in the same way.
    wanted: u8,
}

#[derive(Clone, Debug)]
struct Spec {
    seed: u64,
    piece_length: u32,
    pieces: u32,
    /// Bytes the last piece is short of a full one.
    short_last: u32,
    downloaders: Vec<DownloaderSpec>,
    seeders: usize,
    scripted: Vec<Behaviour>,
    /// Pieces' worth of piece memory.
    memory_pieces: u64,
    min_requests: u32,
    endgame_duplicates: u8,
    upload_slots: usize,
    /// Longest hash check.
    verify_delay: Duration,
    /// A v2-only torrent (where the piece length allows: a power of two of 16 KiB or more):
    /// pieces checked against merkle trees, failed ones by their block hashes.
    v2: bool,
}

impl Spec {
    fn honest_seeder(&self) -> bool {
        self.seeders > 0 || self.scripted.iter().any(|&b| seeds_honestly(b))
    }

    fn is_v2(&self) -> bool {
        self.v2 && self.piece_length.is_power_of_two() && self.piece_length >= 16 * 1024
    }

    fn config(&self) -> Config {
        Config {
            max_piece_memory: self.memory_pieces * u64::from(self.piece_length),
            min_requests: self.min_requests,
            endgame_duplicates: self.endgame_duplicates,
            upload_slots: self.upload_slots,
            ..Config::default()
        }
    }
}

/// Whether a scripted peer of this behaviour ends up serving every piece correctly.
fn seeds_honestly(b: Behaviour) -> bool {
    matches!(b, Behaviour::Honest | Behaviour::Partial { .. })
}

/// Whether a scripted peer of this behaviour breaks no rule (so must never be dropped).
fn is_honest(b: Behaviour) -> bool {
    seeds_honestly(b) || matches!(b, Behaviour::Leecher { .. })
}

fn ms(range: std::ops::Range<u64>) -> impl Strategy<Value = Duration> {
    range.prop_map(Duration::from_millis)
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    let bitfield = prop_oneof![
        Just(BitfieldFault::TooLong),
        Just(BitfieldFault::TooShort),
        Just(BitfieldFault::SpareBits),
    ];
    let request = prop_oneof![
        Just(RequestFault::TooLong),
        Just(RequestFault::Empty),
        Just(RequestFault::PastPieceEnd),
        Just(RequestFault::NoSuchPiece),
        Just(RequestFault::NotHad),
    ];
    prop_oneof![
        4 => Just(Behaviour::Honest),
        2 => (1u32..4).prop_map(|every| Behaviour::Corrupt { every }),
        1 => Just(Behaviour::Staller),
        1 => ms(100..40_000).prop_map(|delay| Behaviour::Slow { delay }),
        1 => bitfield.prop_map(Behaviour::BadBitfield),
        1 => Just(Behaviour::HaveOutOfRange),
        1 => request.prop_map(Behaviour::BadRequest),
        1 => Just(Behaviour::Unrequested),
        1 => ms(10..2000).prop_map(|pause| Behaviour::ChokeData { pause }),
        1 => (0u32..20).prop_map(|blocks| Behaviour::DisconnectMidPiece { blocks }),
        1 => (1u32..8).prop_map(|blocks| Behaviour::CorruptThenLeave { blocks }),
        1 => (ms(10..500), 1u32..40)
            .prop_map(|(period, toggles)| Behaviour::ChokeStorm { period, toggles }),
        1 => (1u32..8, ms(0..3000)).prop_map(|(every, pause)| Behaviour::ChokeAfter { every, pause }),
        1 => Just(Behaviour::NeverUnchoke),
        1 => Just(Behaviour::Idle),
        1 => Just(Behaviour::Hog),
        2 => (any::<u8>(), ms(0..5000)).prop_map(|(mask, later)| Behaviour::Partial { mask, later }),
        2 => (1u32..64, prop_oneof![Just(0u32), 2u32..8]).prop_map(|(pipeline, cancel_every)| Behaviour::Leecher {
            pipeline,
            cancel_every
        }),
    ]
}

fn downloader() -> impl Strategy<Value = DownloaderSpec> {
    let have = prop_oneof![3 => Just(0u8), 1 => any::<u8>()];
    let wanted = prop_oneof![3 => Just(0xFFu8), 1 => any::<u8>()];
    (have, wanted).prop_map(|(have, wanted)| DownloaderSpec { have, wanted })
}

fn spec() -> impl Strategy<Value = Spec> {
    let piece_length = prop_oneof![
        Just(16 * 1024u32),
        Just(32 * 1024),
        Just(64 * 1024),
        Just(24 * 1024),
        Just(20_000),
        Just(5_000),
        Just(128 * 1024),
    ];
    (
        any::<u64>(),
        piece_length,
        1u32..=24,
        any::<u32>(),
        proptest::collection::vec(downloader(), 1..=4),
        0usize..=2,
        proptest::collection::vec(behaviour(), 0..=8),
        (
            prop_oneof![Just(1u64), Just(2), Just(3), Just(1000)],
            prop_oneof![Just(1u32), Just(4), Just(64)],
            1u8..=3,
            1usize..=4,
            ms(0..200),
        ),
        any::<bool>(),
    )
        .prop_map(
            |(seed, piece_length, pieces, short, downloaders, seeders, scripted, tunables, v2)| {
                let (memory_pieces, min_requests, endgame_duplicates, upload_slots, verify_delay) =
                    tunables;
                Spec {
                    seed,
                    piece_length,
                    pieces,
                    short_last: short % piece_length,
                    downloaders,
                    seeders,
                    scripted,
                    memory_pieces,
                    min_requests,
                    endgame_duplicates,
                    upload_slots,
                    verify_delay,
                    v2,
                }
            },
        )
}

fn mask(bits: u8, pieces: u32) -> Bitfield {
    let mut b = Bitfield::new(pieces);
    for i in (0..pieces).filter(|i| bits & (1 << (i % 8)) != 0) {
        b.set(i);
    }
    b
}

/// The sim of `spec`, its downloaders, and its honest seeders (bitrush or scripted).
fn build(spec: &Spec) -> (Sim, Vec<NodeId>, Vec<NodeId>) {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let total = spec.pieces as usize * spec.piece_length as usize - spec.short_last as usize;
    let torrent = if spec.is_v2() {
        Torrent::generate_v2(&mut rng, spec.piece_length, total)
    } else {
        Torrent::generate(&mut rng, spec.piece_length, total)
    };
    let mut sim = Sim::new(Instant::now(), spec.seed, torrent);
    sim.max_verify_delay = spec.verify_delay;
    let config = spec.config();
    let mut swarms = Vec::new();
    let mut honest = Vec::new();
    for _ in 0..spec.seeders {
        let s = sim.add_seeder(config.clone());
        swarms.push(s);
        honest.push(s);
    }
    let mut downloaders = Vec::new();
    for d in &spec.downloaders {
        let node = sim.add_swarm(
            mask(d.have, spec.pieces),
            mask(d.wanted, spec.pieces),
            config.clone(),
        );
        swarms.push(node);
        downloaders.push(node);
    }
    for (i, &a) in swarms.iter().enumerate() {
        for &b in &swarms[i + 1..] {
            sim.connect_random(a, b);
        }
    }
    for &b in &spec.scripted {
        let p = sim.add_script(b);
        if is_honest(b) {
            honest.push(p);
        }
        for &s in &swarms {
            sim.connect_random(s, p);
        }
    }
    (sim, downloaders, honest)
}

/// Runs `spec`'s swarm and checks the outcome; returns the trace digest.
fn run(spec: &Spec) -> Result<u64, TestCaseError> {
    let (mut sim, downloaders, honest) = build(spec);
    let limit = if spec.honest_seeder() {
        LIMIT_HONEST
    } else {
        LIMIT_HOSTILE
    };
    let done = sim
        .run_to_completion(limit)
        .map_err(|e| TestCaseError::fail(format!("{e}\nlog: {:?}", sim.log)))?;
    for i in 0..spec.scripted.len() {
        let node = spec.seeders + spec.downloaders.len() + i;
        let stats = &sim.script(node).stats;
        prop_assert_eq!(stats.invalid_requests, 0);
        prop_assert_eq!(stats.corrupt_received, 0);
    }
    // The counters agree with the verdicts: each piece verified once, failures wasted.
    for &d in &downloaders {
        let (mut verified, mut failed, mut had) = (0u64, 0u64, Bitfield::new(spec.pieces));
        for r in &sim.log {
            if let Record::Verdict { node, index, good } = *r {
                let len = u64::from(sim.torrent.piece_len(index));
                if node != d {
                    continue;
                }
                if !good {
                    failed += len;
                } else {
                    prop_assert!(!had.get(index), "piece {} verified twice", index);
                    had.set(index);
                    verified += len;
                }
            }
        }
        let stats = sim.swarm(d).stats();
        prop_assert_eq!(stats.verified_bytes, verified);
        // A failed v2 piece whose bad blocks were found wastes only those.
        let least_wasted = if spec.is_v2() { failed.min(1) } else { failed };
        prop_assert!(
            stats.wasted_bytes >= least_wasted,
            "{:?} but {} failed",
            stats,
            failed
        );
    }
    // Whatever the swarm, no honest peer is ever banned (dropped for bad data, or named after
    // it left).
    for r in &sim.log {
        let banned = match r {
            Record::Dropped { peer, reason, .. } if reason.is_bad_data() => Some(peer),
            Record::Banned { peer, .. } => Some(peer),
            _ => None,
        };
        prop_assert!(
            banned.is_none_or(|p| !honest.contains(p)),
            "an honest peer was banned: {:?}",
            r
        );
    }
    // Every leecher gets everything from every bitrush seeder, however busy its slots.
    let leechers: Vec<NodeId> = (0..spec.scripted.len())
        .filter(|&i| matches!(spec.scripted[i], Behaviour::Leecher { .. }))
        .map(|i| spec.seeders + spec.downloaders.len() + i)
        .collect();
    if done && spec.seeders > 0 && !leechers.is_empty() {
        let served = sim
            .run_until(sim.elapsed() + LIMIT_HONEST, |s| {
                leechers
                    .iter()
                    .all(|&l| (0..spec.seeders).all(|seeder| s.leeched_all_from(l, seeder)))
            })
            .map_err(|e| TestCaseError::fail(format!("{e}\nlog: {:?}", sim.log)))?;
        prop_assert!(served, "a leecher was not served by {:?}", sim.elapsed());
    }
    if spec.honest_seeder() {
        prop_assert!(
            done,
            "incomplete after {:?}\nlog: {:?}",
            sim.elapsed(),
            sim.log
        );
        for &d in &downloaders {
            prop_assert!(sim.is_complete(d), "node {} is not byte-identical", d);
        }
        for r in &sim.log {
            if let Record::Dropped { peer, .. } = r {
                prop_assert!(
                    !honest.contains(peer),
                    "an honest peer was dropped: {:?}",
                    r
                );
            }
        }
    }
    Ok(sim.trace_digest())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000)))]

    #[test]
    fn random_swarms_keep_their_invariants_and_complete(spec in spec()) {
        run(&spec)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000) / 20))]

    #[test]
    fn random_swarms_replay_from_their_seed(spec in spec()) {
        prop_assert_eq!(run(&spec)?, run(&spec)?);
    }
}

/// Cases the property test once failed on, replayed as they were found (a change to the
/// strategies would otherwise lose them).
#[test]
fn past_failures() {
    // Every peer left was on parole when the only piece in progress lost its owner; parole
    // kept them from finishing it and the download stalled.
    let spec = Spec {
        seed: 10985501519800476370,
        piece_length: 65536,
        pieces: 3,
        short_last: 49152,
        downloaders: vec![
            DownloaderSpec {
                have: 0,
                wanted: 255,
            },
            DownloaderSpec {
                have: 0,
                wanted: 38,
            },
        ],
        seeders: 1,
        scripted: vec![
            Behaviour::Corrupt { every: 2 },
            Behaviour::DisconnectMidPiece { blocks: 4 },
            Behaviour::DisconnectMidPiece { blocks: 1 },
        ],
        memory_pieces: 1,
        min_requests: 1,
        endgame_duplicates: 1,
        upload_slots: 2,
        verify_delay: Duration::from_millis(5),
        v2: false,
    };
    let (mut sim, _, _) = build(&spec);
    eprintln!(
        "RESULT {:?}",
        sim.run_to_completion(Duration::from_secs(100))
            .map_err(|e| e[..200].to_string())
    );
    eprintln!("STATE {:#?}", sim.swarm(2));
}
