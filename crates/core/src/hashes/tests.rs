//! Tests of piece checking, hash answers and the layer fetch, on torrents made by the builder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use sha1::{Digest, Sha1};

use super::fetch::{LayerEvent, LayerFault, LayerFetch, HASH_REQUEST_TIMEOUT};
use super::*;
use crate::metainfo::build::{PiecePart, Plan, TorrentOptions};
use crate::metainfo::{MetaVersion, Metainfo};

fn bytes_of(path: &str, len: u64) -> Vec<u8> {
    let seed = path.len() as u8;
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// A torrent of `files` (path, length) with pieces of `pl` bytes, and its payload (pad bytes
/// included, as pieces carry it).
pub(super) fn made(files: &[(&str, u64)], pl: u32, version: MetaVersion) -> (Metainfo, Vec<u8>) {
    made_lying(files, pl, version, None)
}

/// As [`made`], but the v1 hash of piece `v1_lie` (if any) is that of the piece with its first
/// byte flipped: a hybrid whose halves disagree on that piece.
fn made_lying(
    files: &[(&str, u64)],
    pl: u32,
    version: MetaVersion,
    v1_lie: Option<u32>,
) -> (Metainfo, Vec<u8>) {
    let sources = crate::testing::source_files(files);
    let single = files.len() == 1;
    let name = if single { files[0].0 } else { "root" };
    let plan = Plan::new(name, sources, single, Some(pl), version).unwrap();
    let mut payload = Vec::new();
    let contents: Vec<Vec<u8>> = plan
        .files()
        .iter()
        .map(|f| bytes_of(&f.path.join("/"), f.length))
        .collect();
    let hashes: Vec<_> = (0..plan.piece_count())
        .map(|i| {
            let mut h = plan.piece_hasher(i);
            let start = payload.len();
            for part in plan.piece_parts(i) {
                match part {
                    PiecePart::File { file, offset, len } => {
                        let part = &contents[file][offset as usize..(offset + len) as usize];
                        h.update(part);
                        payload.extend_from_slice(part);
                    }
                    PiecePart::Zeros(n) => {
                        h.zeros(n);
                        payload.extend(std::iter::repeat_n(0, n as usize));
                    }
                }
            }
            let mut hashes = h.finish();
            if v1_lie == Some(i) {
                let mut altered = payload[start..].to_vec();
                altered[0] ^= 1;
                hashes.v1 = Some(Sha1::digest(&altered).into());
            }
            hashes
        })
        .collect();
    let built = plan.finish(&hashes, &TorrentOptions::default()).unwrap();
    let meta = Metainfo::from_bytes(&built.bytes).unwrap();
    // A v2-only torrent's last file is padded to a whole piece too.
    assert!(payload.len() as u64 <= meta.info.total_length);
    payload.resize(meta.info.total_length as usize, 0);
    (meta, payload)
}

pub(super) fn piece<'a>(meta: &Metainfo, payload: &'a [u8], i: u32) -> &'a [u8] {
    let start = i as usize * meta.info.piece_length as usize;
    &payload[start..start + meta.info.piece_len(i) as usize]
}

const PL: u32 = 32 * 1024;
/// Files of 0, 1/2, 1, 1 1/2 and 5 1/4 pieces, and one of a single short block.
const FILES: &[(&str, u64)] = &[
    ("a/empty", 0),
    ("a/half", 16 * 1024),
    ("a/one", 32 * 1024),
    ("b", 48 * 1024 + 5),
    ("c/big", 5 * 32 * 1024 + 8 * 1024),
    ("d", 100),
];

pub(super) fn full(meta: &Metainfo) -> PieceHashes {
    PieceHashes::new(Arc::new(meta.info.clone()), &meta.piece_layers).unwrap()
}

#[test]
fn v2_pieces_check_against_the_file_trees() {
    let (meta, payload) = made(FILES, PL, MetaVersion::V2);
    let hashes = full(&meta);
    assert!(hashes.is_v2());
    assert!(hashes.missing_layers().is_empty());
    for i in 0..meta.info.piece_count() {
        let data = piece(&meta, &payload, i);
        assert!(hashes.check(i, data), "piece {i}");
        let mut bad = data.to_vec();
        bad[0] ^= 1;
        assert!(!hashes.check(i, &bad), "piece {i} altered");
        assert!(!hashes.check(i, &data[1..]), "piece {i} short");
    }
    assert!(!hashes.check(meta.info.piece_count(), &[]));
}

#[test]
fn v1_and_hybrid_pieces_check_by_sha1() {
    for version in [MetaVersion::V1, MetaVersion::Hybrid] {
        let (meta, payload) = made(FILES, PL, version);
        let hashes = full(&meta);
        assert!(!hashes.is_v2());
        for i in 0..meta.info.piece_count() {
            assert!(
                hashes.check(i, piece(&meta, &payload, i)),
                "{version:?} {i}"
            );
        }
        let mut bad = piece(&meta, &payload, 0).to_vec();
        bad[0] ^= 1;
        assert!(!hashes.check(0, &bad));
    }
}

/// A hybrid's pieces must pass both halves: where they disagree, neither version of the piece
/// is good (the one matching the SHA-1 fails the merkle tree, and the other the SHA-1).
#[test]
fn hybrid_pieces_must_pass_both_hashes() {
    let lie = 4;
    let (meta, payload) = made_lying(FILES, PL, MetaVersion::Hybrid, Some(lie));
    let hashes = full(&meta);
    assert!(!hashes.is_v2());
    for i in 0..meta.info.piece_count() {
        assert_eq!(hashes.check(i, piece(&meta, &payload, i)), i != lie, "{i}");
    }
    let mut sha1_twin = piece(&meta, &payload, lie).to_vec();
    sha1_twin[0] ^= 1;
    assert_eq!(
        Sha1::digest(&sha1_twin).as_slice(),
        &meta.info.pieces[lie as usize][..],
        "the piece passes SHA-1"
    );
    assert!(!hashes.check(lie, &sha1_twin), "but not its merkle tree");
    // Without the v2 layers, SHA-1 alone decides (files of one piece keep their root, which
    // the info dictionary carries).
    let sha1_only = PieceHashes::new(Arc::new(meta.info.clone()), &BTreeMap::new()).unwrap();
    let big = meta.info.files.iter().position(|f| f.path == ["c", "big"]);
    let big = &meta.info.files[big.unwrap()];
    assert!(big.offset / u64::from(PL) <= u64::from(lie));
    assert!((big.offset + big.length).div_ceil(u64::from(PL)) > u64::from(lie));
    assert!(sha1_only.check(lie, &sha1_twin));
}

#[test]
fn missing_layers_are_listed_and_their_pieces_never_pass() {
    let (meta, payload) = made(FILES, PL, MetaVersion::V2);
    let info = Arc::new(meta.info.clone());
    let mut hashes = PieceHashes::new(info, &BTreeMap::new()).unwrap();
    let missing = hashes.missing_layers();
    let names: Vec<String> = missing
        .iter()
        .map(|(f, _, _)| meta.info.files[*f].path.join("/"))
        .collect();
    assert_eq!(names, ["b", "c/big"]);
    assert_eq!(missing[1].2, 6);
    for i in 0..meta.info.piece_count() {
        let single = meta.info.files.iter().any(|f| {
            f.offset == u64::from(i) * u64::from(PL)
                && f.length > 0
                && f.length <= 32768
                && !f.attr.pad
        });
        assert_eq!(
            hashes.check(i, piece(&meta, &payload, i)),
            single,
            "piece {i}"
        );
    }
    // Layers are checked on the way in.
    let (big, layer) = meta.piece_layers.iter().nth(1).unwrap();
    assert_eq!(
        hashes.add_layer(*big, &layer[1..]),
        Err(LayerError::WrongSize {
            file: *big,
            got: 5,
            want: 6
        })
    );
    let mut wrong = layer.clone();
    wrong[5][0] ^= 1;
    assert_eq!(
        hashes.add_layer(*big, &wrong),
        Err(LayerError::WrongRoot(*big))
    );
    assert_eq!(hashes.add_layer(1, &[]), Err(LayerError::NoSuchLayer(1)));
    assert_eq!(
        hashes.add_layer(999, &[]),
        Err(LayerError::NoSuchLayer(999))
    );
    hashes.add_layer(*big, layer).unwrap();
    assert_eq!(hashes.missing_layers().len(), 1);
    assert_eq!(hashes.layers().len(), 1);
}

fn request(root: Hash, base: u32, index: u32, length: u32, proof: u32) -> HashRequest {
    HashRequest {
        pieces_root: root,
        base_layer: base,
        index,
        length,
        proof_layers: proof,
    }
}

#[test]
fn answers_prove_up_to_the_root() {
    let (meta, _) = made(&[("big", 37 * 16 * 1024 + 3)], 16 * 1024, MetaVersion::V2);
    let hashes = full(&meta);
    let root = meta.info.files[0].pieces_root.unwrap();
    // 38 pieces of one block: a tree of 64 leaves, 6 levels.
    for (index, length, proof) in [(0, 64, 5), (0, 2, 5), (32, 32, 5), (36, 4, 5), (0, 64, 0)] {
        let req = request(root, 0, index, length, proof);
        let Message::Hashes {
            request: r,
            hashes: h,
        } = hashes.answer(&req)
        else {
            panic!("{req:?} rejected")
        };
        assert_eq!(r, req);
        let h = split_hashes(&h);
        assert_eq!(root_of_answer(&req, &h), Some(root), "{req:?}");
        assert_eq!(
            &h[..2.min(length as usize)],
            &meta.piece_layers[&0][index as usize..][..2.min(length as usize)]
        );
    }
    // A higher base layer: nodes of two pieces each.
    let req = request(root, 1, 0, 32, 4);
    let Message::Hashes { hashes: h, .. } = hashes.answer(&req) else {
        panic!("rejected")
    };
    assert_eq!(root_of_answer(&req, &split_hashes(&h)), Some(root));
    // A request echoed with absurd proof layers fits no answer (and overflows nothing).
    let absurd = request(root, 1, 0, 32, u32::MAX);
    assert_eq!(root_of_answer(&absurd, &split_hashes(&h)), None);
}

#[test]
fn hostile_requests_are_rejected() {
    let (meta, _) = made(&[("big", 37 * 16 * 1024 + 3)], 16 * 1024, MetaVersion::V2);
    let hashes = full(&meta);
    let root = meta.info.files[0].pieces_root.unwrap();
    for req in [
        request(root, 0, 64, 2, 5),       // beyond the level
        request(root, 0, 62, 4, 5),       // runs past it
        request(root, 0, 1, 2, 5),        // unaligned
        request(root, 0, 0, 3, 5),        // not a power of two
        request(root, 0, 0, 1, 5),        // fewer than two
        request(root, 0, 0, 0, 0),        // none
        request(root, 0, 0, 16384, 5),    // too many
        request(root, 0, 0, 2, 6),        // proofs past the root
        request(root, 6, 0, 2, 0),        // the root's own level
        request(root, u32::MAX, 0, 2, 0), // absurd layer
        request(root, 0, u32::MAX, u32::MAX, u32::MAX),
        request([1; 32], 0, 0, 2, 0), // unknown file
    ] {
        assert_eq!(hashes.answer(&req), Message::HashReject(req), "{req:?}");
    }
    // Below the piece layer `answer` knows nothing: those are block jobs, from the data.
    let (meta, _) = made(&[("big", 5 * 32 * 1024)], PL, MetaVersion::V2);
    let root = meta.info.files[0].pieces_root.unwrap();
    let req = request(root, 0, 0, 2, 0);
    assert_eq!(full(&meta).answer(&req), Message::HashReject(req));
    // Nor do we answer for a file whose layer we lack.
    let without = PieceHashes::new(Arc::new(meta.info.clone()), &BTreeMap::new()).unwrap();
    let req = request(root, 1, 0, 8, 2);
    assert!(matches!(full(&meta).answer(&req), Message::Hashes { .. }));
    assert_eq!(without.answer(&req), Message::HashReject(req));
}

/// A peer that answers from `hashes`, altering the first hash when `liar`.
fn serve(hashes: &PieceHashes, msg: &Message, liar: bool) -> Message {
    let Message::HashRequest(req) = msg else {
        panic!("not a request: {msg:?}")
    };
    match hashes.answer(req) {
        Message::Hashes { request, hashes } if liar => {
            let mut h = hashes.to_vec();
            h[0] ^= 1;
            Message::Hashes {
                request,
                hashes: Bytes::from(h),
            }
        }
        other => other,
    }
}

fn fetch_for(meta: &Metainfo) -> LayerFetch {
    LayerFetch::new(PieceHashes::new(Arc::new(meta.info.clone()), &BTreeMap::new()).unwrap())
}

#[test]
fn layers_are_fetched_past_liars_rejects_and_timeouts() {
    // 600 pieces: two requests of 512 hashes.
    let (meta, _) = made(
        &[("x", 600 * 16 * 1024 + 1), ("y", 3 * 16 * 1024)],
        16 * 1024,
        MetaVersion::V2,
    );
    let seed = full(&meta);
    let t0 = Instant::now();
    let mut fetch = fetch_for(&meta);
    assert!(!fetch.is_done());
    // Peer 1 lies, 2 rejects, 3 never answers, 4 is honest (and joins last).
    for peer in 1..=3 {
        fetch.handle_connected(t0, peer);
    }
    let mut now = t0;
    let mut dropped = Vec::new();
    for _ in 0..20 {
        let mut answers = Vec::new();
        while let Some(ev) = fetch.poll_event() {
            match ev {
                LayerEvent::Send { peer, msg } => match peer {
                    1 => answers.push((peer, serve(&seed, &msg, true))),
                    2 => {
                        let Message::HashRequest(r) = msg else {
                            panic!()
                        };
                        answers.push((peer, Message::HashReject(r)));
                    }
                    3 => {}
                    _ => answers.push((peer, serve(&seed, &msg, false))),
                },
                LayerEvent::Drop { peer, fault } => dropped.push((peer, fault)),
            }
        }
        if fetch.is_done() {
            break;
        }
        if answers.is_empty() {
            // Only the silent peer holds a request: it times out, and an honest peer comes.
            assert!(fetch.poll_timeout().is_some());
            now += HASH_REQUEST_TIMEOUT + Duration::from_millis(1);
            fetch.handle_timeout(now);
            fetch.handle_connected(now, 4);
        }
        for (peer, msg) in answers {
            fetch.handle_message(now, peer, &msg);
        }
    }
    assert!(fetch.is_done());
    assert_eq!(fetch.failure(), None);
    let want: BTreeMap<usize, Vec<Hash>> = meta.piece_layers.clone();
    assert_eq!(fetch.poll_layers(), Some(want));
    // The liar is dropped for its hashes; the peers that refused, once nothing else is left
    // for them, so that others can be tried.
    assert_eq!(
        dropped,
        [
            (1, LayerFault::BadHashes { file: 0 }),
            (2, LayerFault::Refused),
            (3, LayerFault::Refused)
        ]
    );
}

#[test]
fn stray_and_unsolicited_hashes() {
    let (meta, _) = made(&[("x", 5 * 16 * 1024)], 16 * 1024, MetaVersion::V2);
    let seed = full(&meta);
    let t0 = Instant::now();
    let mut fetch = fetch_for(&meta);
    fetch.handle_connected(t0, 1);
    let Some(LayerEvent::Send { msg, .. }) = fetch.poll_event() else {
        panic!("no request")
    };
    // Messages from peers it does not know are ignored.
    fetch.handle_message(t0, 9, &serve(&seed, &msg, false));
    assert!(!fetch.is_done());
    // Hashes nobody asked for drop the sender.
    let bogus = Message::Hashes {
        request: request([3; 32], 0, 0, 2, 0),
        hashes: Bytes::from(vec![0; 64]),
    };
    fetch.handle_message(t0, 1, &bogus);
    assert_eq!(
        fetch.poll_event(),
        Some(LayerEvent::Drop {
            peer: 1,
            fault: LayerFault::Unsolicited
        })
    );
    // The request goes to the next peer, whose answer completes the fetch.
    fetch.handle_connected(t0, 2);
    let Some(LayerEvent::Send { peer: 2, msg }) = fetch.poll_event() else {
        panic!("not re-asked")
    };
    // The wrong number of hashes is a bad answer.
    let Message::Hashes { request, hashes } = serve(&seed, &msg, false) else {
        panic!()
    };
    let short = Message::Hashes {
        request,
        hashes: hashes.slice(32..),
    };
    fetch.handle_message(t0, 2, &short);
    assert!(matches!(
        fetch.poll_event(),
        Some(LayerEvent::Drop { peer: 2, .. })
    ));
    fetch.handle_connected(t0, 3);
    let Some(LayerEvent::Send { peer: 3, msg }) = fetch.poll_event() else {
        panic!("not re-asked")
    };
    fetch.handle_message(t0, 3, &serve(&seed, &msg, false));
    assert!(fetch.is_done());
    assert_eq!(fetch.poll_layers(), Some(meta.piece_layers.clone()));
}

/// The torrent the request property test asks about, made once.
fn thirty_eight_pieces() -> &'static (Metainfo, PieceHashes) {
    static MADE: std::sync::OnceLock<(Metainfo, PieceHashes)> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let (meta, _) = made(&[("x", 37 * 16 * 1024 + 3)], 16 * 1024, MetaVersion::V2);
        let hashes = full(&meta);
        (meta, hashes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_request_is_answered_or_rejected_without_panic(
        base in prop_oneof![0u32..8, any::<u32>()],
        index in prop_oneof![0u32..80, any::<u32>()],
        length in prop_oneof![0u32..80, any::<u32>()],
        proof in prop_oneof![0u32..8, any::<u32>()],
    ) {
        let (meta, hashes) = thirty_eight_pieces();
        let root = meta.info.files[0].pieces_root.unwrap();
        let req = request(root, base, index, length, proof);
        match hashes.answer(&req) {
            Message::Hashes { request, hashes } => {
                prop_assert_eq!(request, req);
                prop_assert_eq!(root_of_answer(&req, &split_hashes(&hashes)), Some(root));
            }
            other => prop_assert_eq!(other, Message::HashReject(req)),
        }
    }

    #[test]
    fn layer_fetches_round_trip(
        lengths in proptest::collection::vec(0u64..40 * 16 * 1024, 1..4),
        pl_shift in 0u32..3,
    ) {
        let names = ["p", "q", "r", "s"];
        let files: Vec<(&str, u64)> = names.iter().copied().zip(lengths.iter().copied()).collect();
        prop_assume!(lengths.iter().any(|&l| l > 0));
        let pl = (16 * 1024) << pl_shift;
        let (meta, payload) = made(&files, pl, MetaVersion::V2);
        let seed = full(&meta);
        let mut fetch = fetch_for(&meta);
        let t0 = Instant::now();
        fetch.handle_connected(t0, 1);
        while let Some(LayerEvent::Send { peer, msg }) = fetch.poll_event() {
            fetch.handle_message(t0, peer, &serve(&seed, &msg, false));
        }
        prop_assert!(fetch.is_done());
        let layers = fetch.poll_layers().unwrap();
        prop_assert_eq!(&layers, &meta.piece_layers);
        let fetched = PieceHashes::new(Arc::new(meta.info.clone()), &layers).unwrap();
        for i in 0..meta.info.piece_count() {
            prop_assert!(fetched.check(i, piece(&meta, &payload, i)));
        }
    }
}

#[test]
fn a_seeding_swarm_answers_hash_requests() {
    use crate::swarm::{Bitfield, Config, PeerFeatures, Swarm};
    let (meta, _) = made(&[("big", 37 * 16 * 1024 + 3)], 16 * 1024, MetaVersion::V2);
    let count = meta.info.piece_count();
    let new_swarm = || {
        let have = Bitfield::full(count);
        let info = &meta.info;
        Swarm::new(
            info.piece_length,
            info.total_length,
            have.clone(),
            have,
            Config::default(),
            1,
        )
    };
    let root = meta.info.files[0].pieces_root.unwrap();
    let good = request(root, 0, 32, 32, 5);
    let out_of_range = request(root, 0, 64, 32, 5);
    let t = Instant::now();
    let answers = |swarm: &mut Swarm| {
        swarm.handle_connected(t, 1, PeerFeatures::default());
        swarm.handle_message(t, 1, Message::HashRequest(good));
        swarm.handle_message(t, 1, Message::HashRequest(out_of_range));
        // Stray answers are ignored, not fatal.
        swarm.handle_message(t, 1, Message::HashReject(good));
        let mut out = Vec::new();
        swarm.poll_transmit(t, 1, &mut out);
        out.retain(|m| {
            matches!(
                m,
                Message::Hashes { .. } | Message::HashReject(_) | Message::HashRequest(_)
            )
        });
        assert!(swarm.poll_event().is_none(), "the peer was not dropped");
        out
    };
    let mut seeding = new_swarm();
    seeding.set_piece_hashes(Arc::new(full(&meta)));
    let out = answers(&mut seeding);
    assert!(
        matches!(&out[..], [Message::Hashes { request, hashes }, Message::HashReject(r)]
            if *request == good && *r == out_of_range
                && root_of_answer(&good, &split_hashes(hashes)) == Some(root)),
        "{out:?}"
    );
    // Without hashes every request is rejected.
    let out = answers(&mut new_swarm());
    assert_eq!(
        out,
        [Message::HashReject(good), Message::HashReject(out_of_range)]
    );
}

#[test]
fn a_peer_asking_faster_than_it_reads_gets_rejects_not_answers() {
    use crate::swarm::{Bitfield, Config, PeerFeatures, Swarm};
    let (meta, _) = made(&[("big", 37 * 16 * 1024 + 3)], 16 * 1024, MetaVersion::V2);
    let have = Bitfield::full(meta.info.piece_count());
    let info = &meta.info;
    let mut swarm = Swarm::new(
        info.piece_length,
        info.total_length,
        have.clone(),
        have,
        Config::default(),
        1,
    );
    swarm.set_piece_hashes(Arc::new(full(&meta)));
    let root = meta.info.files[0].pieces_root.unwrap();
    let good = request(root, 0, 32, 32, 5);
    let t = Instant::now();
    swarm.handle_connected(t, 1, PeerFeatures::default());
    for _ in 0..100 {
        swarm.handle_message(t, 1, Message::HashRequest(good));
    }
    let mut out = Vec::new();
    swarm.poll_transmit(t, 1, &mut out);
    let answers = out
        .iter()
        .filter(|m| matches!(m, Message::Hashes { .. }))
        .count();
    let rejects = out
        .iter()
        .filter(|m| matches!(m, Message::HashReject(_)))
        .count();
    assert_eq!((answers, rejects), (4, 96), "{out:?}");
}

/// Every level of a file's whole tree, leaves first, from its data (the textbook way).
fn naive_tree(data: &[u8], piece_length: u32) -> Vec<Vec<Hash>> {
    let tree = Tree::of(data.len() as u64, piece_length);
    let mut leaves = merkle::block_hashes(data);
    leaves.resize(1 << tree.height, merkle::ZERO);
    let mut levels = vec![leaves];
    while levels.last().unwrap().len() > 1 {
        let next = levels
            .last()
            .unwrap()
            .chunks(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
        levels.push(next);
    }
    levels
}

/// Feeds piece `i` of `payload` to `job` as a driver does, block by block.
fn feed(job: &mut BlockHashJob, meta: &Metainfo, payload: &[u8], i: u32) {
    let data = &piece(meta, payload, i)[..job.data_len(i) as usize];
    for block in data.chunks(16 * 1024) {
        job.add_block(block);
    }
}

/// Runs `job` as a driver does, reading its pieces from `payload`.
pub(super) fn run_job(meta: &Metainfo, payload: &[u8], mut job: BlockHashJob) -> Message {
    for i in job.pieces() {
        feed(&mut job, meta, payload, i);
    }
    job.finish()
}

/// A request for block hashes answered from the data: the hashes are the file's leaves (or
/// the nodes of the level asked for), and with their uncles they prove up to the root.
fn assert_block_answer(meta: &Metainfo, payload: &[u8], file: usize, req: HashRequest) {
    let hashes = Arc::new(full(meta));
    let entry = &meta.info.files[file];
    let data = &payload[entry.offset as usize..(entry.offset + entry.length) as usize];
    let tree = naive_tree(data, meta.info.piece_length);
    let job = hashes
        .block_job(&req)
        .unwrap_or_else(|| panic!("{req:?}: no job"));
    let Message::Hashes { request, hashes } = run_job(meta, payload, job) else {
        panic!("{req:?} rejected")
    };
    assert_eq!(request, req);
    let h = split_hashes(&hashes);
    let want = &tree[req.base_layer as usize][req.index as usize..][..req.length as usize];
    assert_eq!(&h[..req.length as usize], want, "{req:?}");
    // The uncles are the tree's: with them the hashes prove up to the level asked for.
    let k = req.length.trailing_zeros();
    let top = req.base_layer + req.proof_layers.max(k - 1) + 1;
    let subtree = merkle::merkle_root(want, req.length.into(), merkle::ZERO);
    let mut at = req.index >> k;
    let mut reached = subtree;
    for uncle in &h[req.length as usize..] {
        reached = if at.is_multiple_of(2) {
            merkle::node_hash(&reached, uncle)
        } else {
            merkle::node_hash(uncle, &reached)
        };
        at /= 2;
    }
    let node = tree[top as usize][(req.index >> (top - req.base_layer)) as usize];
    assert_eq!(reached, node, "{req:?} does not prove");
    if top as usize == tree.len() - 1 {
        assert_eq!(root_of_answer(&req, &h), entry.pieces_root);
    }
}

/// 64 KiB pieces (four blocks each) so that there are layers below the piece layer.
const BIG_PL: u32 = 64 * 1024;

#[test]
fn block_hashes_are_answered_from_the_data() {
    // "big": 5 pieces and a bit (6 pieces, a tree of 8 pieces, 32 leaves, height 5); "d": 3
    // blocks in one piece (a tree of 4 leaves whose root is the file's).
    let files = [("big", 5 * 64 * 1024 + 20_000), ("d", 2 * 16 * 1024 + 7)];
    for version in [MetaVersion::V2, MetaVersion::Hybrid] {
        let (meta, payload) = made(&files, BIG_PL, version);
        let big = meta
            .info
            .files
            .iter()
            .position(|f| f.path == ["big"])
            .unwrap();
        let d = meta
            .info
            .files
            .iter()
            .position(|f| f.path == ["d"])
            .unwrap();
        let root = meta.info.files[big].pieces_root.unwrap();
        for (base, index, length, proof) in [
            (0, 8, 4, 4),  // one piece's blocks up to the root (libtorrent's request)
            (0, 20, 4, 2), // the last, partial piece, up to the piece layer only
            (0, 10, 2, 4), // half a piece: uncles inside the piece, then above it
            (0, 0, 8, 4),  // two pieces
            (1, 4, 2, 3),  // a level between the blocks and the pieces
            (0, 24, 4, 4), // padding past the file's end: no data needed
            (0, 0, 32, 0), // every leaf
        ] {
            assert_block_answer(
                &meta,
                &payload,
                big,
                request(root, base, index, length, proof),
            );
        }
        let d_root = meta.info.files[d].pieces_root.unwrap();
        assert_block_answer(&meta, &payload, d, request(d_root, 0, 2, 2, 1));
        assert_block_answer(&meta, &payload, d, request(d_root, 0, 0, 4, 1));
    }
}

#[test]
fn block_hashes_are_never_vouched_for_bad_or_missing_data() {
    let (meta, payload) = made(&[("big", 5 * 64 * 1024 + 20_000)], BIG_PL, MetaVersion::V2);
    let hashes = Arc::new(full(&meta));
    let root = meta.info.files[0].pieces_root.unwrap();
    let req = request(root, 0, 8, 4, 4);
    // Data that changed on disk since it was verified.
    let mut job = hashes.block_job(&req).unwrap();
    assert_eq!(job.pieces(), 2..3);
    assert_eq!(job.data_len(2), BIG_PL);
    let mut bad = piece(&meta, &payload, 2).to_vec();
    bad[100] ^= 1;
    for block in bad.chunks(16 * 1024) {
        job.add_block(block);
    }
    assert_eq!(job.finish(), Message::HashReject(req));
    // A piece that could not be read (wholly or in part), or one too many.
    let job = hashes.block_job(&req).unwrap();
    assert_eq!(job.finish(), Message::HashReject(req));
    let mut job = hashes.block_job(&req).unwrap();
    job.add_block(&piece(&meta, &payload, 2)[..16 * 1024]);
    assert_eq!(job.finish(), Message::HashReject(req));
    let mut job = hashes.block_job(&req).unwrap();
    feed(&mut job, &meta, &payload, 2);
    feed(&mut job, &meta, &payload, 2);
    assert_eq!(job.finish(), Message::HashReject(req));
    // Blocks of the wrong size.
    for len in [16 * 1024 + 1, 100, 0] {
        let mut job = hashes.block_job(&req).unwrap();
        job.add_block(&vec![0; len]);
        feed(&mut job, &meta, &payload, 2);
        assert_eq!(job.finish(), Message::HashReject(req), "{len}");
    }
    // The last piece holds 20,000 bytes of the file: two blocks, the second short.
    let last = request(root, 0, 20, 4, 4);
    let mut job = hashes.block_job(&last).unwrap();
    assert_eq!((job.pieces(), job.data_len(5)), (5..6, 20_000));
    assert_eq!(job.data_len(4), BIG_PL);
    assert_eq!(job.data_len(99), 0);
    feed(&mut job, &meta, &payload, 5);
    assert!(matches!(job.finish(), Message::Hashes { .. }));
    // Without the layer there is nothing to check the data against.
    let without =
        Arc::new(PieceHashes::new(Arc::new(meta.info.clone()), &BTreeMap::new()).unwrap());
    assert!(without.block_job(&req).is_none());
    // Requests at or above the piece layer are not block jobs; out of bounds ones are nothing.
    assert!(hashes.block_job(&request(root, 2, 0, 2, 0)).is_none());
    for bad in [
        request(root, 0, 32, 4, 4),
        request(root, 0, 9, 4, 4),
        request(root, 0, 8, 4, 5),
        request([7; 32], 0, 8, 4, 4),
    ] {
        assert!(hashes.block_job(&bad).is_none(), "{bad:?}");
        assert_eq!(hashes.answer(&bad), Message::HashReject(bad));
    }
}

#[test]
fn block_hash_requests_read_a_bounded_amount() {
    // 32 KiB pieces: MAX_BLOCK_HASH_BYTES is 512 of them. A file of 600 pieces.
    let pl = 32 * 1024;
    let (meta, _) = made(&[("x", 600 * 32 * 1024)], pl, MetaVersion::V2);
    let hashes = Arc::new(full(&meta));
    let root = meta.info.files[0].pieces_root.unwrap();
    let most = (MAX_BLOCK_HASH_BYTES / u64::from(pl)) as u32;
    let job = hashes
        .block_job(&request(root, 0, 0, 2 * most, 10))
        .unwrap();
    assert_eq!(job.pieces(), 0..most);
    assert!(hashes
        .block_job(&request(root, 0, 0, 4 * most, 10))
        .is_none());
    assert!(hashes.block_job(&request(root, 0, 0, 8192, 10)).is_none());
}

/// The torrent the block request property test asks about, made once.
fn block_fixture() -> &'static (Metainfo, Vec<u8>, Arc<PieceHashes>) {
    static MADE: std::sync::OnceLock<(Metainfo, Vec<u8>, Arc<PieceHashes>)> =
        std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let (meta, payload) = made(&[("x", 9 * 64 * 1024 + 3)], BIG_PL, MetaVersion::V2);
        let hashes = Arc::new(full(&meta));
        (meta, payload, hashes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_block_request_is_answered_truly_or_rejected(
        base in prop_oneof![0u32..3, any::<u32>()],
        index in prop_oneof![0u32..70, any::<u32>()],
        length in prop_oneof![0u32..70, any::<u32>()],
        proof in prop_oneof![0u32..8, any::<u32>()],
    ) {
        let (meta, payload, hashes) = block_fixture();
        let root = meta.info.files[0].pieces_root.unwrap();
        let req = request(root, base, index, length, proof);
        let answer = match hashes.block_job(&req) {
            Some(job) => run_job(meta, payload, job),
            None => hashes.answer(&req),
        };
        match answer {
            Message::Hashes { request, hashes } => {
                prop_assert_eq!(request, req);
                let h = split_hashes(&hashes);
                prop_assert_eq!(root_of_answer(&req, &h), Some(root));
                let tree = naive_tree(&payload[..meta.info.files[0].length as usize], BIG_PL);
                let want = &tree[base as usize][index as usize..][..length as usize];
                prop_assert_eq!(&h[..length as usize], want);
            }
            other => prop_assert_eq!(other, Message::HashReject(req)),
        }
    }
}

#[test]
fn a_seeding_swarm_answers_block_hash_requests_from_its_pieces() {
    use crate::swarm::{Bitfield, Config, PeerFeatures, Swarm};
    let (meta, payload) = made(&[("big", 5 * 64 * 1024 + 20_000)], BIG_PL, MetaVersion::V2);
    let count = meta.info.piece_count();
    let root = meta.info.files[0].pieces_root.unwrap();
    let have_piece_2 = request(root, 0, 8, 4, 4);
    let lacking_piece_3 = request(root, 0, 12, 4, 4);
    let mut have = Bitfield::new(count);
    have.set(2);
    let info = &meta.info;
    let mut swarm = Swarm::new(
        info.piece_length,
        info.total_length,
        have,
        Bitfield::full(count),
        Config::default(),
        1,
    );
    swarm.set_piece_hashes(Arc::new(full(&meta)));
    let t = Instant::now();
    swarm.handle_connected(t, 1, PeerFeatures::default());
    let mut out = Vec::new();
    swarm.poll_transmit(t, 1, &mut out);
    swarm.handle_message(t, 1, Message::HashRequest(have_piece_2));
    swarm.handle_message(t, 1, Message::HashRequest(lacking_piece_3));
    out.clear();
    swarm.poll_transmit(t, 1, &mut out);
    assert_eq!(out, [Message::HashReject(lacking_piece_3)]);
    let mut jobs = Vec::new();
    swarm.poll_hash_jobs(1, &mut jobs);
    assert_eq!(jobs.len(), 1);
    // While the job runs it counts against the peer's queue: 3 more are taken, then rejects.
    for _ in 0..5 {
        swarm.handle_message(t, 1, Message::HashRequest(have_piece_2));
    }
    let mut more = Vec::new();
    swarm.poll_hash_jobs(1, &mut more);
    assert_eq!(more.len(), 3);
    out.clear();
    swarm.poll_transmit(t, 1, &mut out);
    assert_eq!(out, vec![Message::HashReject(have_piece_2); 2]);
    for job in jobs.into_iter().chain(more) {
        let answer = run_job(&meta, &payload, job);
        swarm.handle_hash_answer(1, answer);
    }
    out.clear();
    swarm.poll_transmit(t, 1, &mut out);
    assert_eq!(out.len(), 4);
    for m in &out {
        let Message::Hashes { request, hashes } = m else {
            panic!("{m:?}")
        };
        assert_eq!(*request, have_piece_2);
        assert_eq!(root_of_answer(request, &split_hashes(hashes)), Some(root));
    }
    // Answers for a peer that left are dropped.
    swarm.handle_disconnected(1);
    swarm.handle_hash_answer(1, Message::HashReject(have_piece_2));
    assert!(swarm.poll_event().is_none());
}
