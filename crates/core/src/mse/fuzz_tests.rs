//! Hostile input for both MSE roles: each failure the protocol allows ends in its typed error at
//! the byte where it becomes certain, and arbitrary or mutated bytes never panic, keep the
//! receive buffer within its bound and give the same outcome however they are split.
//! Interesting inputs live in `corpus/mse/responder/` (bytes an initiator sends) and
//! `corpus/mse/initiator/` (bytes a responder sends), replayed by [`corpus_replays_cleanly`]
//! against the fixed-key machines of `tests`; `ok-*` files must complete the handshake and
//! `bad-*` files must fail it. [`write_corpus`] (ignored) regenerates the hand-built ones.
//!
//! Run longer with e.g. `PROPTEST_CASES=100000 cargo test --release --lib mse::fuzz_tests`.

use proptest::prelude::*;

use super::tests::{
    feed, fixed_initiator, fixed_responder, key_a, key_b, t0, InitiatorBytes, Machine,
    ResponderBytes, OTHER, SKEY,
};
use super::*;
use crate::bencode::fuzz_tests::{corpus, mutate};

/// A comparable summary of where a machine ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Waiting,
    Established {
        info_hash: InfoHash,
        method: CryptoMethod,
        initial_payload: Vec<u8>,
        received: Vec<u8>,
    },
    Failed(MseError),
}

fn outcome(event: Option<MseEvent>) -> Outcome {
    match event {
        None => Outcome::Waiting,
        Some(MseEvent::Established(e)) => Outcome::Established {
            info_hash: e.info_hash,
            method: e.method,
            initial_payload: e.initial_payload,
            received: e.received,
        },
        Some(MseEvent::Failed(e)) => Outcome::Failed(e),
    }
}

/// Feeds `input` whole, in 7-byte pieces and byte by byte to fresh machines from `make`; all
/// three must end the same way (`feed` checks the buffer bound after every piece).
fn check_with<M: Machine>(make: impl Fn() -> M, input: &[u8]) -> Outcome {
    let now = t0();
    let whole = outcome(feed(&mut make(), now, input, &[usize::MAX]));
    let sevens = outcome(feed(&mut make(), now, input, &[7]));
    assert_eq!(whole, sevens, "7-byte pieces end differently");
    let ones = outcome(feed(&mut make(), now, input, &[1]));
    assert_eq!(whole, ones, "single bytes end differently");
    whole
}

/// Bytes an initiator sent, fed to the fixed responder.
fn check_responder(input: &[u8]) -> Outcome {
    check_with(|| fixed_responder(t0(), Encryption::Prefer), input)
}

/// Bytes a responder sent, fed to the fixed initiator.
fn check_initiator(input: &[u8]) -> Outcome {
    check_with(|| fixed_initiator(t0(), b"ia", Encryption::Prefer), input)
}

fn fails_with(outcome: Outcome, want: MseError) {
    assert_eq!(outcome, Outcome::Failed(want));
}

/// Bytes no marker can be found in (a marker is a hash or keystream: it will not be in a
/// constant run).
fn filler(n: usize) -> Vec<u8> {
    vec![0x42; n]
}

#[test]
fn responder_gives_up_after_the_longest_pad_a() {
    let limit = MAX_PAD + 20;
    let mut input = key_a().public().to_vec();
    input.extend(filler(limit - 1));
    assert_eq!(check_responder(&input), Outcome::Waiting);
    input.push(0x42);
    fails_with(
        check_responder(&input),
        MseError::NoSyncMarker {
            marker: SyncMarker::Req1Hash,
            limit,
        },
    );
    // One byte of PadA too many.
    let input = InitiatorBytes {
        pad_a: filler(MAX_PAD + 1),
        ..Default::default()
    }
    .encode();
    fails_with(
        check_responder(&input),
        MseError::NoSyncMarker {
            marker: SyncMarker::Req1Hash,
            limit,
        },
    );
}

#[test]
fn initiator_gives_up_after_the_longest_pad_b() {
    let limit = MAX_PAD + 8;
    let mut input = key_b().public().to_vec();
    input.extend(filler(limit - 1));
    assert_eq!(check_initiator(&input), Outcome::Waiting);
    input.push(0x42);
    let want = MseError::NoSyncMarker {
        marker: SyncMarker::EncryptedVc,
        limit,
    };
    fails_with(check_initiator(&input), want.clone());
    let input = ResponderBytes {
        pad_b: filler(MAX_PAD + 1),
        ..Default::default()
    }
    .encode();
    fails_with(check_initiator(&input), want.clone());
    // A wrong VC is a marker that never comes.
    let input = ResponderBytes {
        vc: [0, 0, 0, 0, 0, 0, 0, 1],
        stream: filler(600),
        ..Default::default()
    }
    .encode();
    fails_with(check_initiator(&input), want);
}

#[test]
fn oversized_pads_are_refused() {
    for len in [MAX_PAD as u16 + 1, u16::MAX] {
        let input = InitiatorBytes {
            pad_c_len: Some(len),
            ..Default::default()
        }
        .encode();
        fails_with(
            check_responder(&input),
            MseError::PadTooLong {
                pad: Pad::PadC,
                len,
            },
        );
        let input = ResponderBytes {
            pad_d_len: Some(len),
            ..Default::default()
        }
        .encode();
        fails_with(
            check_initiator(&input),
            MseError::PadTooLong {
                pad: Pad::PadD,
                len,
            },
        );
    }
}

#[test]
fn wrong_vc_unknown_torrent_and_bad_keys() {
    let input = InitiatorBytes {
        vc: [0xff; 8],
        ..Default::default()
    }
    .encode();
    fails_with(check_responder(&input), MseError::BadVerificationConstant);
    let input = InitiatorBytes {
        skey: InfoHash([0xee; 20]),
        ..Default::default()
    }
    .encode();
    fails_with(check_responder(&input), MseError::UnknownInfoHash);
    let mut one = [0u8; DH_KEY_LEN];
    one[DH_KEY_LEN - 1] = 1;
    for key in [[0u8; DH_KEY_LEN], one, [0xff; DH_KEY_LEN]] {
        fails_with(check_responder(&key), MseError::InvalidPublicKey);
        fails_with(check_initiator(&key), MseError::InvalidPublicKey);
    }
    // The responder serves OTHER too: naming it is fine.
    let input = InitiatorBytes {
        skey: OTHER,
        ..Default::default()
    }
    .encode();
    assert!(matches!(
        check_responder(&input),
        Outcome::Established { info_hash, .. } if info_hash == OTHER
    ));
}

#[test]
fn a_plain_handshake_is_not_mse() {
    let mut plain = PLAINTEXT_PREFIX.to_vec();
    plain.extend([0u8; 48]);
    plain.extend(filler(600));
    fails_with(
        check_responder(&plain),
        MseError::NoSyncMarker {
            marker: SyncMarker::Req1Hash,
            limit: MAX_PAD + 20,
        },
    );
}

/// A valid exchange in each direction, for mutation.
fn valid_inputs() -> [Vec<u8>; 2] {
    [
        InitiatorBytes {
            pad_a: vec![1; 9],
            pad_c: vec![2; 5],
            stream: b"stream".to_vec(),
            ..Default::default()
        }
        .encode(),
        ResponderBytes {
            pad_b: vec![3; 7],
            pad_d: vec![4; 11],
            stream: b"stream".to_vec(),
            ..Default::default()
        }
        .encode(),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..1500)) {
        check_responder(&input);
        check_initiator(&input);
    }

    #[test]
    fn mutated_handshakes(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..4),
    ) {
        let mut input = valid_inputs()[which].clone();
        mutate(&mut input, &edits);
        if which == 0 {
            check_responder(&input);
        } else {
            check_initiator(&input);
        }
    }
}

#[test]
fn valid_inputs_complete() {
    let [to_responder, to_initiator] = valid_inputs();
    assert!(matches!(
        check_responder(&to_responder),
        Outcome::Established { .. }
    ));
    assert!(matches!(
        check_initiator(&to_initiator),
        Outcome::Established { .. }
    ));
}

/// Replays one role's corpus: `ok-*` must establish, `bad-*` must fail, anything must pass the
/// chunking and bound checks.
fn replay(dir: &str, check: fn(&[u8]) -> Outcome) {
    for (path, bytes) in corpus(dir) {
        let result = std::panic::catch_unwind(|| check(&bytes));
        let Ok(result) = result else {
            panic!("corpus file {} breaks a property", path.display());
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("ok-") {
            assert!(
                matches!(result, Outcome::Established { .. }),
                "{}: {result:?}",
                path.display()
            );
        } else if name.starts_with("bad-") {
            assert!(
                matches!(result, Outcome::Failed(_)),
                "{}: {result:?}",
                path.display()
            );
        }
    }
}

#[test]
fn corpus_replays_cleanly() {
    replay("mse/responder", check_responder);
    replay("mse/initiator", check_initiator);
}

/// The hand-built corpus files must be exactly what their generator below makes (fuzzer finds
/// are added by hand beside them). After changing the fixed keys or adding a case, regenerate
/// them with `BITRUSH_WRITE_CORPUS=1 cargo test -p bitrush-core mse::fuzz_tests::hand_built`.
#[test]
fn hand_built_corpus_is_up_to_date() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/mse");
    let handshake =
        crate::wire::Handshake::new(SKEY, crate::types::PeerId(*b"-BR0001-corpuscorpus"));
    let to_responder: Vec<(&str, InitiatorBytes)> = vec![
        ("ok-minimal", InitiatorBytes::default()),
        (
            "ok-longest-pads",
            InitiatorBytes {
                pad_a: vec![0xa5; MAX_PAD],
                pad_c: vec![0x5a; MAX_PAD],
                ..Default::default()
            },
        ),
        (
            "ok-bt-handshake-then-stream",
            InitiatorBytes {
                ia: handshake.encode().to_vec(),
                stream: vec![0, 0, 0, 1, 2],
                ..Default::default()
            },
        ),
        (
            "ok-empty-ia",
            InitiatorBytes {
                ia: Vec::new(),
                stream: handshake.encode().to_vec(),
                ..Default::default()
            },
        ),
        (
            "ok-plaintext-offer",
            InitiatorBytes {
                provide: CRYPTO_PLAINTEXT,
                stream: b"plain".to_vec(),
                stream_method: CryptoMethod::Plaintext,
                ..Default::default()
            },
        ),
        (
            "ok-unknown-provide-bits",
            InitiatorBytes {
                provide: 0xffff_ffff,
                ..Default::default()
            },
        ),
        (
            "ok-other-torrent",
            InitiatorBytes {
                skey: OTHER,
                ..Default::default()
            },
        ),
        (
            "bad-pad-a-513",
            InitiatorBytes {
                pad_a: vec![0; MAX_PAD + 1],
                ..Default::default()
            },
        ),
        (
            "bad-pad-c-513",
            InitiatorBytes {
                pad_c_len: Some(513),
                ..Default::default()
            },
        ),
        (
            "bad-pad-c-65535",
            InitiatorBytes {
                pad_c_len: Some(u16::MAX),
                ..Default::default()
            },
        ),
        (
            "bad-wrong-vc",
            InitiatorBytes {
                vc: [0, 0, 0, 0, 0, 0, 0, 0x80],
                ..Default::default()
            },
        ),
        (
            "bad-unknown-torrent",
            InitiatorBytes {
                skey: InfoHash([0xee; 20]),
                ..Default::default()
            },
        ),
        (
            "bad-provide-zero",
            InitiatorBytes {
                provide: 0,
                ..Default::default()
            },
        ),
        (
            "bad-provide-unknown-only",
            InitiatorBytes {
                provide: 0x0c,
                ..Default::default()
            },
        ),
    ];
    let to_initiator: Vec<(&str, ResponderBytes)> = vec![
        ("ok-minimal", ResponderBytes::default()),
        (
            "ok-longest-pads",
            ResponderBytes {
                pad_b: vec![0xa5; MAX_PAD],
                pad_d: vec![0x5a; MAX_PAD],
                ..Default::default()
            },
        ),
        (
            "ok-bt-handshake-then-stream",
            ResponderBytes {
                stream: handshake.encode().to_vec(),
                ..Default::default()
            },
        ),
        (
            "ok-plaintext-select",
            ResponderBytes {
                select: CRYPTO_PLAINTEXT,
                stream: handshake.encode().to_vec(),
                ..Default::default()
            },
        ),
        (
            "bad-pad-b-513",
            ResponderBytes {
                pad_b: vec![0; MAX_PAD + 1],
                ..Default::default()
            },
        ),
        (
            "bad-pad-d-513",
            ResponderBytes {
                pad_d_len: Some(513),
                ..Default::default()
            },
        ),
        (
            "bad-pad-d-65535",
            ResponderBytes {
                pad_d_len: Some(u16::MAX),
                ..Default::default()
            },
        ),
        (
            "bad-wrong-vc",
            ResponderBytes {
                vc: [1; 8],
                stream: vec![0; 600],
                ..Default::default()
            },
        ),
        (
            "bad-select-both",
            ResponderBytes {
                select: CRYPTO_RC4 | CRYPTO_PLAINTEXT,
                ..Default::default()
            },
        ),
        (
            "bad-select-zero",
            ResponderBytes {
                select: 0,
                ..Default::default()
            },
        ),
        (
            "bad-select-unknown",
            ResponderBytes {
                select: 0x80,
                ..Default::default()
            },
        ),
    ];
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, b) in to_responder {
        files.push((format!("responder/{name}"), b.encode()));
    }
    for (name, b) in to_initiator {
        files.push((format!("initiator/{name}"), b.encode()));
    }
    let mut p = PLAINTEXT_PREFIX.to_vec();
    p.extend([0u8; 48]);
    files.push(("responder/plain-bt-handshake".into(), p));
    let mut zero_key = vec![0u8; DH_KEY_LEN];
    zero_key.extend([0x42; 40]);
    files.push(("responder/bad-public-key-zero".into(), zero_key.clone()));
    files.push(("initiator/bad-public-key-zero".into(), zero_key));
    let full = InitiatorBytes::default().encode();
    files.push((
        "responder/truncated-in-ia".into(),
        full[..full.len() - 3].to_vec(),
    ));
    let write = std::env::var_os("BITRUSH_WRITE_CORPUS").is_some();
    let mut stale = Vec::new();
    for (name, bytes) in files {
        let path = root.join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "corpus files differ from their generator: {stale:?}"
    );
}
