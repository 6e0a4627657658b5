//! Fuzz-style property tests of the wire codecs: the message decoder on arbitrary and mutated
//! streams cut at arbitrary points (same result whatever the cuts, no buffer growth beyond the
//! limit, canonical re-encoding), the handshake, the BEP 10 extension handshake, `ut_metadata`
//! messages and the metadata assembler. Interesting inputs live in `corpus/wire/` and
//! `corpus/extension/` and are replayed by [`corpus_replays_cleanly`].
//!
//! Run longer with e.g. `PROPTEST_CASES=100000 cargo test --release --lib wire::fuzz_tests`.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::extension::{answer_metadata, MAX_METADATA_SIZE, METADATA_PIECE_LEN};
use super::handshake::{HANDSHAKE_LEN, PROTOCOL};
use super::message::tests::{arb_bytes, arb_message_with};
use super::message::MAX_MESSAGE_LEN;
use super::*;
use crate::bencode::fuzz_tests::{corpus, mutate};
use crate::types::InfoHash;

/// What decoding a stream yields: the messages, each with the frame bytes it came from, and the
/// error that stopped it (if any).
type Decoded = (Vec<(Message, Vec<u8>)>, Option<WireError>);

/// Feeds `stream` to a decoder in the pieces given by `cuts` (offsets, any order) and decodes
/// everything it can; checks the buffer never grows past what the input and limit justify.
fn decode_split(stream: &[u8], cuts: &[usize], max_len: u32) -> Decoded {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    let mut dec = MessageDecoder::new(max_len);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut consumed = 0usize;
    let bound = 2 * (max_len as usize + 4 + stream.len()) + 64;
    for pair in points.windows(2) {
        buf.extend_from_slice(&stream[pair[0]..pair[1]]);
        loop {
            let before = buf.len();
            let result = dec.decode(&mut buf);
            assert!(
                buf.capacity() <= bound,
                "buffer capacity {} for a {}-byte stream with limit {max_len}",
                buf.capacity(),
                stream.len()
            );
            match result {
                Ok(Some(m)) => {
                    let used = before - buf.len();
                    assert!(used > 0, "a message consumed nothing");
                    out.push((m, stream[consumed..consumed + used].to_vec()));
                    consumed += used;
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => {
                    if let WireError::TooLong(len) = e {
                        assert!(len > max_len);
                        assert_eq!(buf.len(), before, "TooLong consumed bytes");
                    }
                    return (out, Some(e));
                }
            }
        }
    }
    (out, None)
}

/// Every property of decoding `stream` (whole, and cut at `cuts`) with limit `max_len`.
fn check_stream(stream: &[u8], cuts: &[usize], max_len: u32) {
    let whole = decode_split(stream, &[], max_len);
    let split = decode_split(stream, cuts, max_len);
    assert_eq!(whole, split, "decoding depends on how the stream was cut");
    let byte_by_byte = decode_split(stream, &(0..stream.len()).collect::<Vec<_>>(), max_len);
    assert_eq!(whole, byte_by_byte, "decoding byte by byte differs");
    for (msg, frame) in &whole.0 {
        assert!(frame.len() >= 4 && frame.len() - 4 <= max_len as usize);
        if !matches!(msg, Message::Unknown { .. }) {
            let mut again = BytesMut::new();
            msg.encode(&mut again);
            assert_eq!(
                &again[..],
                &frame[..],
                "{msg:?} does not re-encode to its frame"
            );
        }
        if let Message::Extended { id: 0, payload } = msg {
            check_ext_handshake(payload);
        }
        if let Message::Extended { payload, .. } = msg {
            check_metadata_msg(payload);
        }
    }
}

fn check_ext_handshake(payload: &[u8]) {
    if let Ok(hs) = ExtHandshake::decode(payload) {
        assert_ne!(hs.ut_metadata, Some(0));
        assert!(hs.metadata_size.is_none_or(|n| n <= MAX_METADATA_SIZE));
        assert!(hs.reqq.is_none_or(|n| n > 0));
        assert!(hs.client.as_ref().is_none_or(|c| c.chars().count() <= 64));
        let again = ExtHandshake::decode(&hs.encode()).expect("our encoding decodes");
        assert_eq!(again.ut_metadata, hs.ut_metadata);
        assert_eq!(again.metadata_size, hs.metadata_size);
        assert_eq!(again.reqq, hs.reqq);
    }
}

fn check_metadata_msg(payload: &Bytes) {
    if let Ok(msg) = MetadataMsg::decode(payload) {
        if let MetadataMsg::Data {
            data, total_size, ..
        } = &msg
        {
            assert!(data.len() <= METADATA_PIECE_LEN);
            assert!(*total_size <= MAX_METADATA_SIZE);
        }
        let again = MetadataMsg::decode(&Bytes::from(msg.encode())).expect("our encoding decodes");
        assert_eq!(again, msg);
        for info in [None, Some(&payload[..]), Some(&[7u8; 40_000][..])] {
            if let Some(MetadataMsg::Data {
                piece,
                total_size,
                data,
            }) = answer_metadata(info, &msg)
            {
                let info = info.expect("data only when we have metadata");
                let start = piece as usize * METADATA_PIECE_LEN;
                assert_eq!(total_size, info.len() as u64);
                assert_eq!(
                    &data[..],
                    &info[start..(start + METADATA_PIECE_LEN).min(info.len())]
                );
            }
        }
    }
}

fn check_handshake(bytes: &[u8; HANDSHAKE_LEN]) {
    let valid = bytes[0] == 19 && &bytes[1..20] == PROTOCOL;
    match Handshake::decode(bytes) {
        Ok(hs) => {
            assert!(valid);
            assert_eq!(&hs.encode(), bytes);
        }
        Err(_) => assert!(!valid),
    }
}

/// A bencoded extension payload: handshake-like or ut_metadata-like dictionaries.
fn arb_ext_payload() -> impl Strategy<Value = Bytes> {
    let int = prop_oneof![any::<i64>(), -2i64..300, Just(MAX_METADATA_SIZE as i64 + 1)];
    prop_oneof![
        (int.clone(), int.clone(), int.clone(), arb_bytes(80)).prop_map(|(id, size, reqq, v)| {
            let mut p = format!(
                "d1:md11:ut_metadatai{id}ee13:metadata_sizei{size}e4:reqqi{reqq}e1:v{}:",
                v.len()
            )
            .into_bytes();
            p.extend_from_slice(&v);
            p.push(b'e');
            Bytes::from(p)
        }),
        (0i64..4, int.clone(), int, arb_bytes(20_000)).prop_map(|(t, piece, total, data)| {
            let mut p =
                format!("d8:msg_typei{t}e5:piecei{piece}e10:total_sizei{total}ee").into_bytes();
            p.extend_from_slice(&data);
            Bytes::from(p)
        }),
        arb_bytes(64),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    arb_message_with(64, 2000, arb_ext_payload())
}

fn arb_limit() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(MAX_MESSAGE_LEN),
        Just(16 * 1024 + 13),
        0u32..64,
        0u32..3000
    ]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0usize..30_000, 0..12)
}

proptest! {
    #[test]
    fn arbitrary_streams(stream in proptest::collection::vec(any::<u8>(), 0..600), cuts in cuts(), max in arb_limit()) {
        check_stream(&stream, &cuts, max);
    }

    #[test]
    fn mutated_valid_streams(
        msgs in proptest::collection::vec(arb_message(), 0..12),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..6),
        cuts in cuts(),
        max in arb_limit(),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        let mut stream = wire.to_vec();
        check_stream(&stream, &cuts, MAX_MESSAGE_LEN);
        let (got, err) = decode_split(&stream, &cuts, MAX_MESSAGE_LEN);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got.into_iter().map(|m| m.0).collect::<Vec<_>>(), msgs);
        mutate(&mut stream, &edits);
        check_stream(&stream, &cuts, max);
    }

    #[test]
    fn huge_length_prefixes_are_refused_without_reserving(len in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..40), max in arb_limit()) {
        let mut stream = len.to_be_bytes().to_vec();
        stream.extend_from_slice(&tail);
        let mut buf = BytesMut::from(&stream[..]);
        let cap = buf.capacity();
        let result = MessageDecoder::new(max).decode(&mut buf);
        if len > max {
            prop_assert_eq!(result, Err(WireError::TooLong(len)));
            prop_assert_eq!(buf.capacity(), cap);
        }
        check_stream(&stream, &[], max);
    }

    #[test]
    fn arbitrary_handshakes(mut bytes in proptest::collection::vec(any::<u8>(), HANDSHAKE_LEN), valid in any::<bool>()) {
        if valid {
            bytes[0] = 19;
            bytes[1..20].copy_from_slice(PROTOCOL);
        }
        let arr: [u8; HANDSHAKE_LEN] = bytes.try_into().unwrap();
        check_handshake(&arr);
    }

    #[test]
    fn arbitrary_extension_payloads(
        payload in prop_oneof![arb_ext_payload(), arb_bytes(300)],
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 0..4),
    ) {
        check_ext_handshake(&payload);
        check_metadata_msg(&payload);
        let mut mutated = payload.to_vec();
        mutate(&mut mutated, &edits);
        let mutated = Bytes::from(mutated);
        check_ext_handshake(&mutated);
        check_metadata_msg(&mutated);
    }

    #[test]
    fn metadata_assembler_takes_anything(
        total in prop_oneof![any::<u64>(), 0u64..70_000],
        inserts in proptest::collection::vec((0u32..8, 0usize..(METADATA_PIECE_LEN + 2)), 0..12),
    ) {
        let Ok(mut asm) = MetadataAssembler::new(total) else {
            prop_assert!(total == 0 || total > MAX_METADATA_SIZE);
            return Ok(());
        };
        let mut expected = vec![None; asm.piece_count() as usize];
        for (piece, len) in inserts {
            let data = Bytes::from(vec![piece as u8; len]);
            let ok = asm.insert(piece, data.clone()).is_ok();
            prop_assert_eq!(ok, asm.piece_len(piece) == Some(len));
            if ok {
                expected[piece as usize] = Some(data);
            }
        }
        prop_assert_eq!(asm.is_complete(), expected.iter().all(Option::is_some));
        prop_assert_eq!(asm.next_missing(0).is_none(), asm.is_complete());
        if asm.is_complete() {
            let all: Vec<u8> = expected.iter().flatten().flat_map(|b| b.to_vec()).collect();
            prop_assert_eq!(all.len() as u64, total);
            let hash = InfoHash(<[u8; 20]>::from(<sha1::Sha1 as sha1::Digest>::digest(&all)));
            prop_assert_eq!(asm.finish(hash), Ok(all));
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    for (path, bytes) in corpus("wire") {
        for max in [MAX_MESSAGE_LEN, 16 * 1024 + 13, 100, 0] {
            let cuts: Vec<usize> = (0..bytes.len()).step_by(7).collect();
            let outcome = std::panic::catch_unwind(|| check_stream(&bytes, &cuts, max));
            assert!(
                outcome.is_ok(),
                "corpus file {} (limit {max}) breaks a property",
                path.display()
            );
        }
    }
    for (path, bytes) in corpus("extension") {
        let payload = Bytes::from(bytes);
        let outcome = std::panic::catch_unwind(|| {
            check_ext_handshake(&payload);
            check_metadata_msg(&payload);
            if payload.len() >= HANDSHAKE_LEN {
                let hs: [u8; HANDSHAKE_LEN] = payload[..HANDSHAKE_LEN].try_into().unwrap();
                check_handshake(&hs);
            }
        });
        assert!(
            outcome.is_ok(),
            "corpus file {} breaks a property",
            path.display()
        );
    }
}
