//! Unit and property tests of the metadata-exchange state machine.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use sha1::{Digest, Sha1};

use super::*;
use crate::wire::extension::METADATA_PIECE_LEN;

fn meta(len: usize, seed: u8) -> (Vec<u8>, InfoHash) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect();
    let hash: [u8; 20] = Sha1::digest(&bytes).into();
    (bytes, InfoHash(hash))
}

fn ext(id: u8, payload: Vec<u8>) -> Message {
    Message::Extended {
        id,
        payload: Bytes::from(payload),
    }
}

/// A peer's extension handshake assigning `ut` to ut_metadata and announcing `size`.
fn handshake(ut: u8, size: u64) -> Message {
    ext(
        0,
        ExtHandshake {
            ut_metadata: Some(ut),
            metadata_size: Some(size),
            client: Some("test".into()),
            ..ExtHandshake::default()
        }
        .encode(),
    )
}

fn piece_of(bytes: &[u8], piece: u32) -> Bytes {
    let start = piece as usize * METADATA_PIECE_LEN;
    let end = bytes.len().min(start + METADATA_PIECE_LEN);
    Bytes::copy_from_slice(bytes.get(start..end).unwrap_or(&[]))
}

fn data(piece: u32, total: u64, bytes: Bytes) -> Message {
    ext(
        OUR_UT_METADATA_ID,
        MetadataMsg::Data {
            piece,
            total_size: total,
            data: bytes,
        }
        .encode(),
    )
}

fn honest_data(bytes: &[u8], piece: u32) -> Message {
    data(piece, bytes.len() as u64, piece_of(bytes, piece))
}

fn drain(f: &mut MetadataFetch) -> Vec<FetchEvent> {
    std::iter::from_fn(|| f.poll_event()).collect()
}

/// The metadata requests among `actions`, as (peer, piece, the id they were sent with).
fn requests(actions: &[FetchEvent]) -> Vec<(PeerKey, u32, u8)> {
    actions
        .iter()
        .filter_map(|a| match a {
            FetchEvent::Send {
                peer,
                msg: Message::Extended { id, payload },
            } => match MetadataMsg::decode(payload) {
                Ok(MetadataMsg::Request { piece }) => Some((*peer, piece, *id)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn drops(actions: &[FetchEvent]) -> Vec<(PeerKey, &PeerFault)> {
    actions
        .iter()
        .filter_map(|a| match a {
            FetchEvent::Drop { peer, fault } => Some((*peer, fault)),
            _ => None,
        })
        .collect()
}

fn fetch(hash: InfoHash) -> MetadataFetch {
    MetadataFetch::new(hash, FetchConfig::default())
}

/// A fetch for `hash` that keeps at most `max_requests` requests outstanding per peer.
fn fetch_capped(hash: InfoHash, max_requests: usize) -> MetadataFetch {
    let cfg = FetchConfig {
        max_requests_per_peer: max_requests,
        ..FetchConfig::default()
    };
    MetadataFetch::new(hash, cfg)
}

/// A copy of `bytes` with the byte at `at` XORed with `mask`, so it fails the hash check.
fn corrupted(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut bad = bytes.to_vec();
    bad[at] ^= mask;
    bad
}

/// Adds each of `peers` and delivers its handshake (ut_metadata id 2, announcing `size`).
fn connect(
    f: &mut MetadataFetch,
    peers: impl IntoIterator<Item = PeerKey>,
    size: u64,
    t0: Instant,
) {
    for k in peers {
        f.handle_connected(t0, k, true);
        f.handle_message(t0, k, &handshake(2, size));
    }
}

/// Drains the pending actions and asserts exactly which drops and which requests they hold.
#[track_caller]
fn expect_actions(
    f: &mut MetadataFetch,
    want_drops: &[(PeerKey, PeerFault)],
    want_requests: &[(PeerKey, u32, u8)],
) {
    let actions = drain(f);
    let want_drops: Vec<(PeerKey, &PeerFault)> = want_drops.iter().map(|(p, e)| (*p, e)).collect();
    assert_eq!(drops(&actions), want_drops, "drops");
    assert_eq!(requests(&actions), want_requests, "requests");
}

/// Has `peer` send every piece of `bytes` in order, then asserts the fetch yields `bytes`.
#[track_caller]
fn finish_from(f: &mut MetadataFetch, peer: PeerKey, bytes: &[u8], t0: Instant) {
    for piece in 0..bytes.len().div_ceil(METADATA_PIECE_LEN) as u32 {
        f.handle_message(t0, peer, &honest_data(bytes, piece));
    }
    assert_eq!(f.poll_metadata().as_deref(), Some(bytes));
}

/// Runs a one-request-at-a-time solo attempt: expects `peer` to be asked for each piece in
/// turn (with ut_metadata id 2) and answers it from `served`.
#[track_caller]
fn solo_attempt(f: &mut MetadataFetch, peer: PeerKey, served: &[u8], t0: Instant) {
    for piece in 0..served.len().div_ceil(METADATA_PIECE_LEN) as u32 {
        assert_eq!(
            requests(&drain(f)),
            vec![(peer, piece, 2)],
            "solo request for piece {piece}"
        );
        f.handle_message(t0, peer, &honest_data(served, piece));
    }
}

/// Peer 1's solo attempt serves `bad`, so it is banned; peer 2 is then asked and finishes with
/// `bytes`.
#[track_caller]
fn solo_liar_is_banned_and_peer_2_finishes(
    f: &mut MetadataFetch,
    bytes: &[u8],
    bad: &[u8],
    t0: Instant,
) {
    solo_attempt(f, 1, bad, t0);
    expect_actions(f, &[(1, PeerFault::HashMismatch)], &[(2, 0, 2)]);
    finish_from(f, 2, bytes, t0);
}

#[test]
fn one_honest_peer_delivers_every_piece() {
    let (bytes, hash) = meta(2 * METADATA_PIECE_LEN + 7, 1);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    f.handle_connected(t0, 1, true);
    assert!(drain(&mut f).is_empty());
    f.handle_message(t0, 1, &handshake(3, bytes.len() as u64));
    let reqs = requests(&drain(&mut f));
    assert_eq!(reqs, vec![(1, 0, 3), (1, 1, 3), (1, 2, 3)]);
    for piece in [2, 0, 1] {
        assert!(!f.is_done());
        f.handle_message(t0, 1, &honest_data(&bytes, piece));
    }
    assert!(f.is_done());
    assert_eq!(f.poll_metadata(), Some(bytes));
    assert_eq!(f.poll_metadata(), None);
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn peers_without_usable_extensions_are_dropped() {
    let (bytes, hash) = meta(100, 2);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    f.handle_connected(t0, 1, false);
    for k in 2..=5 {
        f.handle_connected(t0, k, true);
    }
    f.handle_message(t0, 2, &ext(0, b"d1:md6:ut_pexi1eee".to_vec()));
    f.handle_message(
        t0,
        3,
        &ext(
            0,
            b"d1:md11:ut_metadatai2ee13:metadata_sizei1099511627776ee".to_vec(),
        ),
    );
    f.handle_message(t0, 4, &ext(0, b"not bencode".to_vec()));
    f.handle_message(
        t0,
        5,
        &ext(0, b"d1:md11:ut_metadatai2ee13:metadata_sizei0ee".to_vec()),
    );
    let actions = drain(&mut f);
    let got = drops(&actions);
    assert_eq!(got[0], (1, &PeerFault::NoExtensionProtocol));
    assert_eq!(got[1], (2, &PeerFault::NoUtMetadata));
    assert_eq!(got[2], (3, &PeerFault::NoMetadata));
    assert!(matches!(got[3], (4, &PeerFault::BadHandshake(_))));
    assert_eq!(got[4], (5, &PeerFault::NoMetadata));
    assert!(got.iter().all(|(_, fault)| !fault.is_retryable()));
    assert_eq!(f.peer_count(), 0);
    assert!(!f.is_done());
    let _ = bytes;
}

#[test]
fn binary_values_in_the_handshake_are_fine() {
    let (bytes, hash) = meta(50, 3);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    f.handle_connected(t0, 1, true);
    let mut hs =
        b"d1:md11:ut_metadatai7ee13:metadata_sizei50e1:v4:\xff\xfe\x00\x016:yourip4:".to_vec();
    hs.extend_from_slice(&[127, 0, 0, 1]);
    hs.push(b'e');
    f.handle_message(t0, 1, &ext(0, hs));
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 7)]);
    finish_from(&mut f, 1, &bytes, t0);
}

#[test]
fn silent_handshake_and_silent_request_time_out() {
    let (bytes, hash) = meta(100, 4);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    f.handle_connected(t0, 1, true);
    connect(&mut f, [2], 100, t0);
    assert_eq!(requests(&drain(&mut f)), vec![(2, 0, 2)]);
    assert_eq!(f.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    f.handle_timeout(t0 + Duration::from_secs(9));
    assert!(drain(&mut f).is_empty());
    f.handle_timeout(t0 + Duration::from_secs(10));
    let actions = drain(&mut f);
    let got = drops(&actions);
    assert_eq!(
        got,
        vec![
            (1, &PeerFault::HandshakeTimeout(10)),
            (2, &PeerFault::RequestTimeout { piece: 0, secs: 10 })
        ]
    );
    assert!(got.iter().all(|(_, fault)| fault.is_retryable()));
    // A late answer from a dropped peer is ignored.
    f.handle_message(t0 + Duration::from_secs(11), 2, &honest_data(&bytes, 0));
    assert!(!f.is_done());
}

#[test]
fn reject_and_timeout_move_pieces_to_other_peers() {
    let (bytes, hash) = meta(3 * METADATA_PIECE_LEN, 5);
    let mut f = fetch_capped(hash, 2);
    let t0 = Instant::now();
    connect(&mut f, 1..=3, bytes.len() as u64, t0);
    // Peer 1 gets pieces 0 and 1, peer 2 piece 2, peer 3 nothing.
    assert_eq!(
        requests(&drain(&mut f)),
        vec![(1, 0, 2), (1, 1, 2), (2, 2, 2)]
    );
    f.handle_message(
        t0,
        1,
        &ext(
            OUR_UT_METADATA_ID,
            MetadataMsg::Reject { piece: 1 }.encode(),
        ),
    );
    expect_actions(
        &mut f,
        &[(1, PeerFault::Rejected(1))],
        &[(2, 0, 2), (3, 1, 2)],
    );
    f.handle_message(t0, 3, &honest_data(&bytes, 1));
    f.handle_message(t0, 2, &honest_data(&bytes, 2));
    // Peer 2 never sends piece 0.
    f.handle_timeout(t0 + Duration::from_secs(10));
    expect_actions(
        &mut f,
        &[(2, PeerFault::RequestTimeout { piece: 0, secs: 10 })],
        &[(3, 0, 2)],
    );
    f.handle_message(t0 + Duration::from_secs(10), 3, &honest_data(&bytes, 0));
    assert_eq!(f.poll_metadata(), Some(bytes));
}

#[test]
fn unsolicited_out_of_range_and_misshapen_pieces_drop_the_peer() {
    let (bytes, hash) = meta(METADATA_PIECE_LEN + 10, 6);
    let size = bytes.len() as u64;
    let mut f = fetch(hash);
    let t0 = Instant::now();
    for k in 1..=4 {
        f.handle_connected(t0, k, true);
    }
    f.handle_message(t0, 1, &handshake(2, size));
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 2), (1, 1, 2)]);
    // Out-of-range index.
    f.handle_message(t0, 1, &data(1000, size, Bytes::from_static(b"x")));
    let actions = drain(&mut f);
    assert_eq!(drops(&actions), vec![(1, &PeerFault::Unsolicited(1000))]);
    assert!(requests(&actions).is_empty(), "nobody else is ready");
    f.handle_message(t0, 2, &handshake(2, size));
    assert_eq!(requests(&drain(&mut f)), vec![(2, 0, 2), (2, 1, 2)]);
    // Wrong length for piece 1.
    f.handle_message(t0, 2, &data(1, size, Bytes::from_static(b"short")));
    assert!(matches!(
        drops(&drain(&mut f))[..],
        [(
            2,
            &PeerFault::BadPiece(PieceError::BadPieceLength {
                piece: 1,
                got: 5,
                want: 10
            })
        )]
    ));
    f.handle_message(t0, 3, &handshake(2, size));
    drain(&mut f);
    // total_size that disagrees with the handshake.
    f.handle_message(t0, 3, &data(0, size + 1, piece_of(&bytes, 0)));
    assert_eq!(
        drops(&drain(&mut f)),
        vec![(
            3,
            &PeerFault::SizeMismatch {
                got: size + 1,
                want: size
            }
        )]
    );
    // Negative piece index: a malformed message.
    f.handle_message(t0, 4, &handshake(2, size));
    drain(&mut f);
    f.handle_message(
        t0,
        4,
        &ext(
            OUR_UT_METADATA_ID,
            b"d8:msg_typei1e5:piecei-1e10:total_sizei16394eexx".to_vec(),
        ),
    );
    assert!(matches!(
        drops(&drain(&mut f))[..],
        [(4, &PeerFault::BadMessage(_))]
    ));
    assert_eq!(f.peer_count(), 0);
}

#[test]
fn wrong_hash_from_one_peer_bans_it_and_another_peer_finishes() {
    let (bytes, hash) = meta(2 * METADATA_PIECE_LEN, 7);
    let size = bytes.len() as u64;
    let bad = corrupted(&bytes, 5, 1);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    connect(&mut f, [1], size, t0);
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 2), (1, 1, 2)]);
    f.handle_connected(t0, 2, true);
    f.handle_message(t0, 2, &handshake(5, size));
    assert!(requests(&drain(&mut f)).is_empty(), "all pieces are taken");
    f.handle_message(t0, 1, &honest_data(&bad, 0));
    f.handle_message(t0, 1, &honest_data(&bad, 1));
    expect_actions(
        &mut f,
        &[(1, PeerFault::HashMismatch)],
        &[(2, 0, 5), (2, 1, 5)],
    );
    assert!(!f.is_solo(), "a single source is blamed directly");
    finish_from(&mut f, 2, &bytes, t0);
}

#[test]
fn mixed_sources_with_a_bad_hash_switch_to_single_source_attempts() {
    let (bytes, hash) = meta(2 * METADATA_PIECE_LEN, 8);
    let bad = corrupted(&bytes, METADATA_PIECE_LEN + 3, 0xff);
    let mut f = fetch_capped(hash, 1);
    let t0 = Instant::now();
    // Peer 1 is honest, peer 2 corrupts piece 1.
    connect(&mut f, [1, 2], bytes.len() as u64, t0);
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 2), (2, 1, 2)]);
    f.handle_message(t0, 1, &honest_data(&bytes, 0));
    f.handle_message(t0, 2, &honest_data(&bad, 1));
    assert!(f.is_solo());
    // Nobody is blamed; the next attempt asks peer 1 only.
    expect_actions(&mut f, &[], &[(1, 0, 2)]);
    f.handle_message(t0, 1, &honest_data(&bytes, 0));
    assert_eq!(requests(&drain(&mut f)), vec![(1, 1, 2)]);
    f.handle_message(t0, 1, &honest_data(&bytes, 1));
    assert_eq!(f.poll_metadata(), Some(bytes));
}

#[test]
fn solo_attempt_of_a_liar_bans_it() {
    let (bytes, hash) = meta(2 * METADATA_PIECE_LEN, 9);
    let bad = corrupted(&bytes, 0, 1);
    let mut f = fetch_capped(hash, 1);
    let t0 = Instant::now();
    // Peer 1 lies, peer 2 is honest.
    connect(&mut f, [1, 2], bytes.len() as u64, t0);
    drain(&mut f);
    f.handle_message(t0, 1, &honest_data(&bad, 0));
    f.handle_message(t0, 2, &honest_data(&bytes, 1));
    assert!(f.is_solo());
    solo_liar_is_banned_and_peer_2_finishes(&mut f, &bytes, &bad, t0);
}

#[test]
fn a_lying_size_does_not_pin_the_attempt() {
    let (bytes, hash) = meta(METADATA_PIECE_LEN + 1, 10);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    connect(&mut f, [1], 99, t0);
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 2)]);
    connect(&mut f, [2], bytes.len() as u64, t0);
    assert!(requests(&drain(&mut f)).is_empty(), "other size waits");
    // The liar stays silent and times out; the attempt restarts with the honest size.
    f.handle_timeout(t0 + Duration::from_secs(10));
    expect_actions(
        &mut f,
        &[(1, PeerFault::RequestTimeout { piece: 0, secs: 10 })],
        &[(2, 0, 2), (2, 1, 2)],
    );
    finish_from(&mut f, 2, &bytes, t0);
}

#[test]
fn each_peer_gets_one_solo_attempt() {
    let (bytes, hash) = meta(2 * METADATA_PIECE_LEN, 11);
    let bad = corrupted(&bytes, 1, 1);
    let mut f = fetch_capped(hash, 1);
    let t0 = Instant::now();
    connect(&mut f, [1, 2, 3], bytes.len() as u64, t0);
    // 1: piece 0, 2: piece 1, 3: nothing yet.
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 2), (2, 1, 2)]);
    f.handle_message(t0, 1, &honest_data(&bad, 0));
    assert_eq!(requests(&drain(&mut f)), vec![]);
    f.handle_message(t0, 2, &honest_data(&bytes, 1));
    // Mixed failure: solo on peer 1; peer 3 was never asked.
    assert!(f.is_solo());
    // Peer 1 lies again alone and is banned; peer 2 is next.
    solo_liar_is_banned_and_peer_2_finishes(&mut f, &bytes, &bad, t0);
}

#[test]
fn a_closed_connection_frees_its_pieces() {
    let (bytes, hash) = meta(2 * METADATA_PIECE_LEN, 12);
    let size = bytes.len() as u64;
    let bad = corrupted(&bytes, 1, 1);
    let mut f = fetch_capped(hash, 2);
    let t0 = Instant::now();
    // Peer 1 lies with the right size and gets both pieces first.
    connect(&mut f, [1], size, t0);
    assert_eq!(requests(&drain(&mut f)), vec![(1, 0, 2), (1, 1, 2)]);
    connect(&mut f, [2], size, t0);
    assert!(requests(&drain(&mut f)).is_empty());
    // Peer 1 disconnects: its pieces go to peer 2.
    f.handle_disconnected(t0, 1);
    assert_eq!(requests(&drain(&mut f)), vec![(2, 0, 2), (2, 1, 2)]);
    finish_from(&mut f, 2, &bytes, t0);
    // Messages after completion are ignored.
    f.handle_message(t0, 2, &honest_data(&bad, 0));
    assert!(drain(&mut f).is_empty());
}

#[test]
fn requests_from_the_peer_are_rejected_and_unknown_types_ignored() {
    let (_, hash) = meta(10, 13);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    f.handle_connected(t0, 1, true);
    f.handle_message(t0, 1, &handshake(9, 10));
    drain(&mut f);
    f.handle_message(
        t0,
        1,
        &ext(
            OUR_UT_METADATA_ID,
            MetadataMsg::Request { piece: 4 }.encode(),
        ),
    );
    f.handle_message(
        t0,
        1,
        &ext(OUR_UT_METADATA_ID, b"d8:msg_typei9e5:piecei0ee".to_vec()),
    );
    // Other messages and other extension ids are ignored too.
    f.handle_message(t0, 1, &Message::Have(3));
    f.handle_message(t0, 1, &ext(77, b"garbage".to_vec()));
    let actions = drain(&mut f);
    assert_eq!(
        actions,
        vec![FetchEvent::Send {
            peer: 1,
            msg: ext(9, MetadataMsg::Reject { piece: 4 }.encode()),
        }]
    );
    assert_eq!(f.peer_count(), 1);
}

#[test]
fn pieces_are_spread_over_peers_and_capped_per_peer() {
    let (bytes, hash) = meta(10 * METADATA_PIECE_LEN, 14);
    let mut f = fetch(hash);
    let t0 = Instant::now();
    connect(&mut f, [1, 2], bytes.len() as u64, t0);
    let reqs = requests(&drain(&mut f));
    let to = |p| reqs.iter().filter(|r| r.0 == p).count();
    assert_eq!((to(1), to(2)), (4, 4));
    let mut pieces: Vec<u32> = reqs.iter().map(|r| r.1).collect();
    pieces.sort_unstable();
    pieces.dedup();
    assert_eq!(pieces.len(), 8, "no piece requested twice");
}

/// How a simulated peer behaves.
#[derive(Clone, Debug)]
enum Behavior {
    Honest,
    /// Right size, one corrupted byte in every piece it sends.
    Corrupt,
    /// Announces another size and sends pieces of that size.
    WrongSize,
    /// Never answers requests.
    Silent,
    Rejecter,
    /// Answers with an out-of-range piece index.
    OutOfRange,
    /// Answers with arbitrary payload bytes.
    Garbage(Vec<u8>),
    /// Sends an arbitrary extension handshake.
    BadHandshake(Vec<u8>),
}

fn behavior() -> impl Strategy<Value = Behavior> {
    prop_oneof![
        Just(Behavior::Honest),
        Just(Behavior::Corrupt),
        Just(Behavior::WrongSize),
        Just(Behavior::Silent),
        Just(Behavior::Rejecter),
        Just(Behavior::OutOfRange),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Behavior::Garbage),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Behavior::BadHandshake),
    ]
}

/// The simulated peer's claimed size and the bytes it serves.
fn served(b: &Behavior, bytes: &[u8]) -> Vec<u8> {
    match b {
        Behavior::Corrupt => bytes.iter().map(|x| x ^ 0x5a).collect(),
        Behavior::WrongSize => vec![7u8; bytes.len() + 1],
        _ => bytes.to_vec(),
    }
}

fn answer(b: &Behavior, bytes: &[u8], piece: u32) -> Option<Message> {
    let mine = served(b, bytes);
    match b {
        Behavior::Honest | Behavior::Corrupt | Behavior::WrongSize => {
            Some(honest_data(&mine, piece))
        }
        Behavior::Silent | Behavior::BadHandshake(_) => None,
        Behavior::Rejecter => Some(ext(
            OUR_UT_METADATA_ID,
            MetadataMsg::Reject { piece }.encode(),
        )),
        Behavior::OutOfRange => Some(data(
            piece.saturating_add(10_000),
            mine.len() as u64,
            Bytes::from_static(b"zz"),
        )),
        Behavior::Garbage(g) => Some(ext(OUR_UT_METADATA_ID, g.clone())),
    }
}

/// Runs a fetch against simulated peers, delivering messages in an order driven by `seed`.
/// Returns the metadata if the fetch finished.
fn simulate(
    bytes: &[u8],
    hash: InfoHash,
    peers: &[Behavior],
    seed: u64,
    cfg: FetchConfig,
) -> Result<Option<Vec<u8>>, TestCaseError> {
    let mut f = MetadataFetch::new(hash, cfg);
    let mut now = Instant::now();
    let mut inbox: Vec<VecDeque<Message>> = vec![VecDeque::new(); peers.len()];
    let mut outstanding = vec![0usize; peers.len()];
    let mut alive = vec![true; peers.len()];
    for (i, b) in peers.iter().enumerate() {
        f.handle_connected(now, i as PeerKey, true);
        let hs = match b {
            Behavior::BadHandshake(raw) => ext(0, raw.clone()),
            _ => handshake(2, served(b, bytes).len() as u64),
        };
        inbox[i].push_back(hs);
    }
    let mut rng = seed;
    for _step in 0..20_000 {
        while let Some(action) = f.poll_event() {
            match action {
                FetchEvent::Send { peer, msg } => {
                    let i = peer as usize;
                    prop_assert!(alive[i], "message for a dropped peer");
                    let Message::Extended { id, payload } = &msg else {
                        return Err(TestCaseError::fail("non-extended message sent"));
                    };
                    if !matches!(peers[i], Behavior::BadHandshake(_)) {
                        prop_assert_eq!(*id, 2u8, "sent with the peer's id");
                    }
                    if let Ok(MetadataMsg::Request { piece }) = MetadataMsg::decode(payload) {
                        outstanding[i] += 1;
                        prop_assert!(outstanding[i] <= cfg.max_requests_per_peer);
                        if let Some(reply) = answer(&peers[i], bytes, piece) {
                            inbox[i].push_back(reply);
                        }
                    }
                }
                FetchEvent::Drop { peer, .. } => {
                    let i = peer as usize;
                    prop_assert!(alive[i], "dropped twice");
                    alive[i] = false;
                    inbox[i].clear();
                }
            }
        }
        if f.is_done() {
            let got = f.poll_metadata();
            if let Some(m) = &got {
                let digest: [u8; 20] = Sha1::digest(m).into();
                prop_assert_eq!(InfoHash(digest), hash);
            }
            return Ok(got);
        }
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ready: Vec<usize> = (0..peers.len())
            .filter(|&i| alive[i] && !inbox[i].is_empty())
            .collect();
        if let Some(&i) = ready.get((rng >> 33) as usize % ready.len().max(1)) {
            if let Some(msg) = inbox[i].pop_front() {
                if matches!(&msg, Message::Extended { id, .. } if *id == OUR_UT_METADATA_ID) {
                    outstanding[i] = outstanding[i].saturating_sub(1);
                }
                f.handle_message(now, i as PeerKey, &msg);
            }
        } else if f.peer_count() == 0 {
            return Ok(None);
        } else {
            now += Duration::from_secs(11);
            f.handle_timeout(now);
        }
    }
    Err(TestCaseError::fail("simulation did not end"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the other peers do, one honest peer is enough, and whatever finishes is the
    /// right metadata.
    #[test]
    fn prop_one_honest_peer_suffices(
        len in 1usize..(4 * METADATA_PIECE_LEN),
        mut others in proptest::collection::vec(behavior(), 0..5),
        honest_at in 0usize..6,
        seed in any::<u64>(),
        max_requests in 1usize..5,
    ) {
        let (bytes, hash) = meta(len, (len % 256) as u8);
        let at = honest_at.min(others.len());
        others.insert(at, Behavior::Honest);
        let cfg = FetchConfig { max_requests_per_peer: max_requests, ..FetchConfig::default() };
        let got = simulate(&bytes, hash, &others, seed, cfg)?;
        prop_assert_eq!(got, Some(bytes));
    }

    /// Without an honest peer nothing wrong is ever accepted and the fetch gives up.
    #[test]
    fn prop_no_honest_peer_never_finishes(
        len in 1usize..(3 * METADATA_PIECE_LEN),
        peers in proptest::collection::vec(behavior(), 1..5),
        seed in any::<u64>(),
    ) {
        prop_assume!(peers.iter().all(|b| !matches!(b, Behavior::Honest)));
        let (bytes, hash) = meta(len, 99);
        let got = simulate(&bytes, hash, &peers, seed, FetchConfig::default())?;
        prop_assert_eq!(got, None);
    }

    /// Arbitrary messages in any order never panic the machine.
    #[test]
    fn prop_arbitrary_messages_never_panic(
        msgs in proptest::collection::vec(
            (0u64..3, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..80), 0u64..30),
            0..60,
        ),
    ) {
        let (_, hash) = meta(40, 1);
        let mut f = fetch(hash);
        let t0 = Instant::now();
        connect(&mut f, 0..3, 40, t0);
        for (peer, id, payload, secs) in msgs {
            let now = t0 + Duration::from_secs(secs);
            let id = if id % 3 == 0 { OUR_UT_METADATA_ID } else { id };
            f.handle_message(now, peer, &ext(id, payload));
            f.handle_timeout(now);
            while f.poll_event().is_some() {}
        }
    }
}
