//! Tests of the MSE handshake: known answers computed independently (Python's `pow` and
//! `hashlib`, a separate RC4, RFC 6229), our initiator against our responder under every
//! policy, hand-built peer messages for the choices a peer can make, deadlines, and proptests
//! over paddings, payloads and the chunking of the input. Hostile input is in `fuzz_tests`.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::cipher::{hash, rc4_for, req1, req2, req3, xor20, Side};
use super::dh::KeyPair;
use super::*;

/// 2^0x0102…14 mod P, from Python: `pow(2, int.from_bytes(bytes(range(1, 21)), 'big'), P)`.
pub(super) const KAT_PUBLIC_X1_20: &str = "96e112dab29e8c5272accb9b17b26887ce54a144a4e3b697c7d159b7a817e556b0918db2b4c658e02a87f7e5fb14b18a553e084cbf3dad2d30f16596ccb982d406258c61b30c5c1dae2ddc60bdbd48d79896312aad63238c39e1a633821eb693";

/// The torrent both sides use.
pub(super) const SKEY: InfoHash = InfoHash([
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
]);
/// Another torrent the responder serves.
pub(super) const OTHER: InfoHash = InfoHash([0x5a; 20]);

pub(super) fn hex(b: &[u8]) -> String {
    crate::types::to_hex(b)
}

/// The initiator's fixed key pair (private key twenty 0xaa bytes).
pub(super) fn key_a() -> KeyPair {
    private_key(0xaa)
}

/// The responder's fixed key pair (private key twenty 0xbb bytes).
pub(super) fn key_b() -> KeyPair {
    private_key(0xbb)
}

fn private_key(byte: u8) -> KeyPair {
    let mut b = [0u8; 24];
    b[4..].fill(byte);
    KeyPair::from_private(&b)
}

/// S for the fixed key pairs.
pub(super) fn fixed_secret() -> [u8; DH_KEY_LEN] {
    key_a().shared_secret(key_b().public()).unwrap()
}

pub(super) fn t0() -> Instant {
    Instant::now()
}

/// An initiator with the fixed key, no padding, `ia` as initial payload.
pub(super) fn fixed_initiator(now: Instant, ia: &[u8], policy: Encryption) -> MseInitiator {
    MseInitiator::with_parts(now, SKEY, ia, policy, key_a(), &[], Vec::new()).unwrap()
}

/// A responder with the fixed key, no padding, serving `OTHER` and `SKEY`.
pub(super) fn fixed_responder(now: Instant, policy: Encryption) -> MseResponder {
    MseResponder::with_parts(now, &[OTHER, SKEY], policy, key_b(), Vec::new(), Vec::new()).unwrap()
}

/// What an initiator sends (messages 1 and 3 and stream bytes), built field by field so tests
/// can set each one to anything. `Default` is a valid handshake for the fixed keys.
#[derive(Clone, Debug)]
pub(super) struct InitiatorBytes {
    pub pad_a: Vec<u8>,
    pub skey: InfoHash,
    pub vc: [u8; 8],
    pub provide: u32,
    pub pad_c_len: Option<u16>,
    pub pad_c: Vec<u8>,
    pub ia: Vec<u8>,
    /// Stream bytes after IA, sent as the method the responder will pick (given here).
    pub stream: Vec<u8>,
    pub stream_method: CryptoMethod,
}

impl Default for InitiatorBytes {
    fn default() -> Self {
        InitiatorBytes {
            pad_a: Vec::new(),
            skey: SKEY,
            vc: VC,
            provide: CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            pad_c_len: None,
            pad_c: Vec::new(),
            ia: b"initial payload".to_vec(),
            stream: Vec::new(),
            stream_method: CryptoMethod::Rc4,
        }
    }
}

impl InitiatorBytes {
    pub fn encode(&self) -> Vec<u8> {
        let secret = fixed_secret();
        let mut send = rc4_for(Side::A, &secret, &self.skey);
        let mut out = key_a().public().to_vec();
        out.extend_from_slice(&self.pad_a);
        out.extend_from_slice(&req1(&secret));
        out.extend_from_slice(&xor20(&req2(&self.skey), &req3(&secret)));
        let mut enc = self.vc.to_vec();
        enc.extend_from_slice(&self.provide.to_be_bytes());
        let pad_c_len = self.pad_c_len.unwrap_or(self.pad_c.len() as u16);
        enc.extend_from_slice(&pad_c_len.to_be_bytes());
        enc.extend_from_slice(&self.pad_c);
        enc.extend_from_slice(&(self.ia.len() as u16).to_be_bytes());
        enc.extend_from_slice(&self.ia);
        send.apply(&mut enc);
        out.extend_from_slice(&enc);
        let mut stream = self.stream.clone();
        if self.stream_method == CryptoMethod::Rc4 {
            send.apply(&mut stream);
        }
        out.extend_from_slice(&stream);
        out
    }
}

/// What a responder sends (messages 2 and 4 and stream bytes) to the fixed initiator.
#[derive(Clone, Debug)]
pub(super) struct ResponderBytes {
    pub pad_b: Vec<u8>,
    pub vc: [u8; 8],
    pub select: u32,
    pub pad_d_len: Option<u16>,
    pub pad_d: Vec<u8>,
    /// Stream bytes after PadD, RC4-encrypted unless `select` is plaintext.
    pub stream: Vec<u8>,
}

impl Default for ResponderBytes {
    fn default() -> Self {
        ResponderBytes {
            pad_b: Vec::new(),
            vc: VC,
            select: CRYPTO_RC4,
            pad_d_len: None,
            pad_d: Vec::new(),
            stream: Vec::new(),
        }
    }
}

impl ResponderBytes {
    pub fn encode(&self) -> Vec<u8> {
        let secret = fixed_secret();
        let mut send = rc4_for(Side::B, &secret, &SKEY);
        let mut out = key_b().public().to_vec();
        out.extend_from_slice(&self.pad_b);
        let mut enc = self.vc.to_vec();
        enc.extend_from_slice(&self.select.to_be_bytes());
        let pad_d_len = self.pad_d_len.unwrap_or(self.pad_d.len() as u16);
        enc.extend_from_slice(&pad_d_len.to_be_bytes());
        enc.extend_from_slice(&self.pad_d);
        send.apply(&mut enc);
        out.extend_from_slice(&enc);
        let mut stream = self.stream.clone();
        if self.select != CRYPTO_PLAINTEXT {
            send.apply(&mut stream);
        }
        out.extend_from_slice(&stream);
        out
    }
}

/// Either side, for the helpers below.
pub(super) trait Machine {
    fn input(&mut self, now: Instant, data: &[u8]);
    fn transmit(&mut self) -> Option<Vec<u8>>;
    fn event(&mut self) -> Option<MseEvent>;
    fn buffered(&self) -> usize;
}

macro_rules! impl_machine {
    ($t:ty) => {
        impl Machine for $t {
            fn input(&mut self, now: Instant, data: &[u8]) {
                self.handle_input(now, data)
            }
            fn transmit(&mut self) -> Option<Vec<u8>> {
                self.poll_transmit()
            }
            fn event(&mut self) -> Option<MseEvent> {
                self.poll_event()
            }
            fn buffered(&self) -> usize {
                self.buffered_len()
            }
        }
    };
}
impl_machine!(MseInitiator);
impl_machine!(MseResponder);

/// Feeds `data` to `m` in pieces of the given sizes (cycled), checking the receive buffer's
/// bound after every piece; returns the event, if any.
pub(super) fn feed(
    m: &mut impl Machine,
    now: Instant,
    data: &[u8],
    sizes: &[usize],
) -> Option<MseEvent> {
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        m.input(now, &rest[..n]);
        assert!(
            m.buffered() <= MAX_INITIAL_PAYLOAD,
            "buffer grew to {}",
            m.buffered()
        );
        rest = &rest[n..];
        i += 1;
    }
    m.event()
}

fn all_transmitted(m: &mut impl Machine) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = m.transmit() {
        out.extend(bytes);
    }
    out
}

/// Runs a handshake between `a` and `b`, delivering in pieces of `sizes`; `b_stream` is sent
/// by B right after its handshake messages (encrypted with its fresh cipher). Returns both
/// events.
fn run(
    a: &mut MseInitiator,
    b: &mut MseResponder,
    sizes: &[usize],
    b_stream: &[u8],
) -> (Option<MseEvent>, Option<MseEvent>) {
    let now = t0();
    let (mut ea, mut eb) = (None, None);
    for _ in 0..4 {
        let to_b = all_transmitted(a);
        if eb.is_none() {
            eb = feed(b, now, &to_b, sizes);
        }
        let mut to_a = all_transmitted(b);
        if let Some(MseEvent::Established(est)) = &mut eb {
            if !b_stream.is_empty() && !to_a.is_empty() {
                let mut s = b_stream.to_vec();
                est.send_cipher.apply(&mut s);
                to_a.extend(s);
            }
        }
        if ea.is_none() {
            ea = feed(a, now, &to_a, sizes);
        }
        if ea.is_some() && eb.is_some() {
            break;
        }
    }
    (ea, eb)
}

fn established(e: Option<MseEvent>) -> Box<Established> {
    match e {
        Some(MseEvent::Established(est)) => est,
        other => panic!("expected Established, got {other:?}"),
    }
}

fn failed(e: Option<MseEvent>) -> MseError {
    match e {
        Some(MseEvent::Failed(err)) => err,
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// Checks that the two ends' ciphers agree in both directions on a few messages.
fn check_stream(a: &mut Established, b: &mut Established) {
    for msg in [&b"first"[..], &[0u8; 300], b"x"] {
        let mut wire = msg.to_vec();
        a.send_cipher.apply(&mut wire);
        // (A short message may meet zero keystream bytes by chance.)
        if a.method == CryptoMethod::Rc4 && msg.len() > 16 {
            assert_ne!(wire, msg, "RC4 left the stream unchanged");
        }
        b.recv_cipher.apply(&mut wire);
        assert_eq!(wire, msg);
        let mut wire = msg.to_vec();
        b.send_cipher.apply(&mut wire);
        a.recv_cipher.apply(&mut wire);
        assert_eq!(wire, msg);
    }
}

#[test]
fn rc4_with_discard_matches_rfc_6229() {
    // RFC 6229, 160-bit key 0x0102…14, keystream at offset 1024 (checked with an independent
    // RC4 in Python).
    let key: [u8; 20] = core::array::from_fn(|i| i as u8 + 1);
    let mut c = StreamCipher::rc4(&key);
    let mut ks = [0u8; 16];
    c.apply(&mut ks);
    assert_eq!(hex(&ks), "d0ef0c6b23f128219c352c15881d52c1");
    assert!(!c.is_plaintext());
    let mut p = StreamCipher::plaintext();
    let mut data = *b"as is";
    p.apply(&mut data);
    assert_eq!(&data, b"as is");
    assert!(p.is_plaintext());
}

proptest! {
    /// The hand-written RC4 gives RustCrypto's keystream (after the same 1024-byte discard),
    /// whatever the key and however the data is split across calls.
    #[test]
    fn rc4_matches_rustcrypto_across_any_split(
        key in any::<[u8; 20]>(),
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(0usize..3000, 0..6),
    ) {
        use rc4::{KeyInit, StreamCipher as _};
        let mut reference = rc4::Rc4::new_from_slice(&key).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected = vec![0u8; super::cipher::RC4_DISCARD];
        reference.apply_keystream(&mut expected);
        let mut expected = data.clone();
        reference.apply_keystream(&mut expected);

        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut ours = data.clone();
        let mut cipher = StreamCipher::rc4(&key);
        let mut start = 0;
        for cut in cuts.into_iter().chain([data.len()]) {
            cipher.apply(&mut ours[start..cut]);
            start = cut;
        }
        prop_assert_eq!(ours, expected);
    }
}

#[test]
fn derived_values_match_an_independent_computation() {
    // Python with pow(), hashlib.sha1 and its own RC4, for private keys 0xaa…/0xbb… and
    // SKEY 00 01 … 13.
    let s = fixed_secret();
    assert_eq!(hex(&s), "683995568f59a74c568b45f62145f268348e0a9b4e3ea449b1cf0aeb387d2540d8b429c9ea03cb5c922e0db9cda5f6429fec8a92cb486cf4f7c8f842c00d0026038ceb6aed49cd63593c0b996a0924063906bfdf26912d16d30ec122257bb741");
    assert_eq!(key_b().shared_secret(key_a().public()).unwrap(), s);
    assert_eq!(hex(&req1(&s)), "8186c97694a0ad4fca53cdaf628004d582dcbece");
    assert_eq!(
        hex(&xor20(&req2(&SKEY), &req3(&s))),
        "7c841cac1c15287988d505d2c3053730f462d9c4"
    );
    assert_eq!(
        hex(&hash(&[b"keyA", &s, &SKEY.0])),
        "7432b1be2334b98a83f254319a6f22c6e29e1fc8"
    );
    let mut ks = [0u8; 16];
    rc4_for(Side::B, &s, &SKEY).apply(&mut ks);
    assert_eq!(hex(&ks), "06648c49cc7834617c1d81c8c200c45d");
}

/// A key pair whose 160-bit private key is seventeen `byte`s then `tail`.
fn private_key_ending(byte: u8, tail: [u8; 3]) -> KeyPair {
    let mut b = [0u8; 24];
    b[4..21].fill(byte);
    b[21..].copy_from_slice(&tail);
    KeyPair::from_private(&b)
}

#[test]
fn leading_zero_bytes_of_keys_and_secret_are_kept() {
    // Private keys searched (in Python, with pow() and hashlib.sha1) so that A's public key
    // and S both start with a zero byte (1 in 256 connections each): a side that sent or hashed
    // them without their leading zeros (95 bytes) would fail about one handshake in 128.
    let a = private_key_ending(0xaa, [0x00, 0x02, 0x30]);
    let b = private_key_ending(0xbb, [0x00, 0x00, 0x17]);
    assert_eq!(hex(a.public()), "006899451618f5662802d410761e22d4f8c39fd570d6ad04d389f51c239d391282b05f25159e447c07fc304a5d86b49598fb0d86749a77f571d562cd52776664a3306977267c36ea0e176db0fbf133fbebe0aacaa02065da3b3bdea9c223cbaf");
    assert_eq!(hex(b.public()), "24573f44e0a480681c25dac3f76162c11c01c95abf1e3010f051d282343930224f6f6d59e78f59639d057ca2185136b68df264d756baeb78dc24b8eb7473c80312764c16f8926e02a1cbb220d87d34ec382bb526f4f62b9722d38eb3e9171482");
    let s = a.shared_secret(b.public()).unwrap();
    assert_eq!(hex(&s), "00ef6c426a1c70c00474f42029a789a44dc325694cfa8869da0d121483c6097391ce538eea9fc4e300c5e6cfa5a37ce349b5594452918ef573262b54599c966d704aedfb0c98b7822a15a7d6a1eb0ac28132eff0172688db86ea1981873a7a94");
    assert_eq!(b.shared_secret(a.public()).unwrap(), s);
    assert_eq!(hex(&req1(&s)), "618e7207e6bc07797da3cfce869366e9ed0b7c47");
    assert_eq!(
        hex(&xor20(&req2(&SKEY), &req3(&s))),
        "fd0291302c40f48541f34d195fdbb6e069cc4044"
    );
    assert_eq!(
        hex(&hash(&[b"keyA", &s, &SKEY.0])),
        "a134c84de7d784b1f10089f5c75e2fcd2022df09"
    );

    // On the wire: Ya is all 96 bytes, and the handshake completes.
    let now = t0();
    let mut init =
        MseInitiator::with_parts(now, SKEY, b"ia", Encryption::Require, a, &[], Vec::new())
            .unwrap();
    let ya = all_transmitted(&mut init);
    assert_eq!(ya.len(), DH_KEY_LEN);
    assert_eq!(ya[0], 0);
    let mut resp =
        MseResponder::with_parts(now, &[SKEY], Encryption::Require, b, Vec::new(), Vec::new())
            .unwrap();
    resp.handle_input(now, &ya);
    let (ea, eb) = run(&mut init, &mut resp, &[], b"");
    let (mut ea, mut eb) = (established(ea), established(eb));
    assert_eq!(eb.initial_payload, b"ia");
    check_stream(&mut ea, &mut eb);
}

#[test]
fn wire_bytes_match_an_independent_computation() {
    let now = t0();
    let mut a = fixed_initiator(now, b"hello", Encryption::Prefer);
    let mut b = fixed_responder(now, Encryption::Prefer);
    let ya = all_transmitted(&mut a);
    assert_eq!(hex(&ya), "2cbd6048ede493cb41d78be208c6800fa50addc22d7b0fd0819c1d2e5e4eee7374908a7e4d95692628743517b00f760c5cff09a302c9080eaa944635c7cbf414b2c55a434576acebe6e2e7b61196a8d95ac38bc55e3a0782858b6be9abf031c5");
    b.handle_input(now, &ya);
    let yb = all_transmitted(&mut b);
    assert_eq!(hex(&yb), "c8cf3e69cfc0e87e0658a8aa22da10785ace3a760618f3ce6e8382799b10a9aa9b158971f8fcdfea552f0883f5cc4c15b10ac0713b6c6704dc2091b281149fd66546ec1249c95aaf300cc28ea88871e4f51f049f77a37e2a71dbdcf66995511e");
    a.handle_input(now, &yb);
    let m3 = all_transmitted(&mut a);
    assert_eq!(hex(&m3), "8186c97694a0ad4fca53cdaf628004d582dcbece7c841cac1c15287988d505d2c3053730f462d9c4482707313fad28d2e5eb1941f8ee74b7b4bb600f1c");
    b.handle_input(now, &m3);
    let m4 = all_transmitted(&mut b);
    assert_eq!(hex(&m4), "06648c49cc7834617c1d81cac200");
    let mut eb = established(b.poll_event());
    assert_eq!(eb.initial_payload, b"hello");
    let mut world = *b"world";
    eb.send_cipher.apply(&mut world);
    assert_eq!(hex(&world), "b3324130a9");
    a.handle_input(now, &[m4, world.to_vec()].concat());
    let mut ea = established(a.poll_event());
    assert_eq!(ea.received, b"world");
    let mut again = *b"again";
    ea.send_cipher.apply(&mut again);
    assert_eq!(hex(&again), "79e934b4df");
}

#[test]
fn policy_matrix() {
    use Encryption::*;
    for (ap, bp) in [
        (Prefer, Prefer),
        (Prefer, Require),
        (Require, Prefer),
        (Require, Require),
    ] {
        let mut rng = StdRng::seed_from_u64(3);
        let mut a = MseInitiator::new(t0(), SKEY, b"ia", ap, &mut rng).unwrap();
        let mut b = MseResponder::new(t0(), &[SKEY], bp, &mut rng).unwrap();
        let (ea, eb) = run(&mut a, &mut b, &[usize::MAX], b"");
        let (mut ea, mut eb) = (established(ea), established(eb));
        assert_eq!(ea.method, CryptoMethod::Rc4, "{ap:?} -> {bp:?}");
        assert_eq!(eb.method, CryptoMethod::Rc4);
        assert_eq!(eb.info_hash, SKEY);
        assert_eq!(eb.initial_payload, b"ia");
        assert!(ea.initial_payload.is_empty());
        check_stream(&mut ea, &mut eb);
    }
    let mut rng = StdRng::seed_from_u64(3);
    assert_eq!(
        MseInitiator::new(t0(), SKEY, b"", Disable, &mut rng).err(),
        Some(MseError::Disabled)
    );
    assert_eq!(
        MseResponder::new(t0(), &[SKEY], Disable, &mut rng).err(),
        Some(MseError::Disabled)
    );
    assert!(Prefer.allows_plaintext_handshake());
    assert!(Disable.allows_plaintext_handshake());
    assert!(!Require.allows_plaintext_handshake());
}

#[test]
fn responder_selects_by_policy() {
    use Encryption::*;
    let cases = [
        (Prefer, CRYPTO_PLAINTEXT, Ok(CryptoMethod::Plaintext)),
        (Prefer, CRYPTO_RC4, Ok(CryptoMethod::Rc4)),
        (
            Prefer,
            CRYPTO_RC4 | CRYPTO_PLAINTEXT | 0xf0,
            Ok(CryptoMethod::Rc4),
        ),
        (
            Require,
            CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            Ok(CryptoMethod::Rc4),
        ),
        (
            Require,
            CRYPTO_PLAINTEXT,
            Err(MseError::NoCommonMethod { offered: 1 }),
        ),
        (Prefer, 0, Err(MseError::NoCommonMethod { offered: 0 })),
        (Prefer, 0x04, Err(MseError::NoCommonMethod { offered: 4 })),
    ];
    for (policy, provide, want) in cases {
        let now = t0();
        let mut b = fixed_responder(now, policy);
        let bytes = InitiatorBytes {
            provide,
            stream: b"after".to_vec(),
            stream_method: want.clone().unwrap_or(CryptoMethod::Rc4),
            ..Default::default()
        }
        .encode();
        let event = feed(&mut b, now, &bytes, &[usize::MAX]);
        match want {
            Ok(method) => {
                let est = established(event);
                assert_eq!(est.method, method, "{policy:?} {provide:#x}");
                assert_eq!(
                    est.send_cipher.is_plaintext(),
                    method == CryptoMethod::Plaintext
                );
                assert_eq!(est.initial_payload, b"initial payload");
                assert_eq!(est.received, b"after");
                // crypto_select in message 4 says the same.
                let mut m4 = all_transmitted(&mut b)[DH_KEY_LEN..].to_vec();
                rc4_for(Side::B, &fixed_secret(), &SKEY).apply(&mut m4);
                assert_eq!(m4[8..12], method.bit().to_be_bytes());
            }
            Err(e) => assert_eq!(failed(event), e, "{policy:?} {provide:#x}"),
        }
    }
}

#[test]
fn initiator_checks_the_selection() {
    use Encryption::*;
    let cases = [
        (Prefer, CRYPTO_RC4, Ok(CryptoMethod::Rc4)),
        (Prefer, CRYPTO_PLAINTEXT, Ok(CryptoMethod::Plaintext)),
        (Require, CRYPTO_RC4, Ok(CryptoMethod::Rc4)),
        (Require, CRYPTO_PLAINTEXT, Err(1)),
        (Prefer, CRYPTO_RC4 | CRYPTO_PLAINTEXT, Err(3)),
        (Prefer, 0, Err(0)),
        (Prefer, 0x10, Err(0x10)),
    ];
    for (policy, select, want) in cases {
        let now = t0();
        let mut a = fixed_initiator(now, b"ia", policy);
        let bytes = ResponderBytes {
            select,
            pad_d: vec![7; 33],
            stream: b"stream".to_vec(),
            ..Default::default()
        }
        .encode();
        let event = feed(&mut a, now, &bytes, &[usize::MAX]);
        match want {
            Ok(method) => {
                let mut est = established(event);
                assert_eq!(est.method, method, "{policy:?} {select:#x}");
                assert_eq!(est.info_hash, SKEY);
                assert_eq!(est.received, b"stream");
                let mut more = b"more".to_vec();
                if method == CryptoMethod::Rc4 {
                    let mut b_send = rc4_for(Side::B, &fixed_secret(), &SKEY);
                    b_send.apply(&mut [0u8; 8 + 6 + 33 + 6]);
                    b_send.apply(&mut more);
                }
                est.recv_cipher.apply(&mut more);
                assert_eq!(more, b"more");
            }
            Err(selected) => assert_eq!(failed(event), MseError::BadSelect { selected }),
        }
    }
}

#[test]
fn plaintext_stream_after_the_handshake() {
    let now = t0();
    let mut b = fixed_responder(now, Encryption::Prefer);
    let bytes = InitiatorBytes {
        provide: CRYPTO_PLAINTEXT,
        ia: b"\x13BitTorrent protocol".to_vec(),
        stream: b"plain follows".to_vec(),
        stream_method: CryptoMethod::Plaintext,
        ..Default::default()
    }
    .encode();
    // The IA is still encrypted on the wire, the stream after it is not.
    assert!(!bytes.windows(20).any(|w| w == b"\x13BitTorrent protocol"));
    assert!(bytes.ends_with(b"plain follows"));
    let mut est = established(feed(&mut b, now, &bytes, &[5]));
    assert_eq!(est.initial_payload, b"\x13BitTorrent protocol");
    assert_eq!(est.received, b"plain follows");
    let mut x = *b"unchanged";
    est.send_cipher.apply(&mut x);
    est.recv_cipher.apply(&mut x);
    assert_eq!(&x, b"unchanged");
}

#[test]
fn responder_finds_the_torrent_among_those_it_serves() {
    let mut rng = StdRng::seed_from_u64(11);
    let served: Vec<InfoHash> = (0..50u8).map(|i| InfoHash([i; 20])).collect();
    for want in [served[0], served[17], served[49]] {
        let mut a = MseInitiator::new(t0(), want, b"", Encryption::Require, &mut rng).unwrap();
        let mut b = MseResponder::new(t0(), &served, Encryption::Require, &mut rng).unwrap();
        let (ea, eb) = run(&mut a, &mut b, &[usize::MAX], b"");
        assert_eq!(established(eb).info_hash, want);
        assert_eq!(established(ea).info_hash, want);
    }
}

#[test]
fn input_before_the_event_is_taken_joins_the_stream() {
    let now = t0();
    let mut a = fixed_initiator(now, b"", Encryption::Prefer);
    let bytes = ResponderBytes {
        stream: b"0123456789".to_vec(),
        ..Default::default()
    }
    .encode();
    let (head, tail) = bytes.split_at(bytes.len() - 4);
    a.handle_input(now, head);
    a.handle_input(now, tail);
    let est = established(a.poll_event());
    assert_eq!(est.received, b"0123456789");
    assert!(a.poll_event().is_none());
    assert_eq!(a.poll_timeout(), None);
    a.handle_input(now, b"ignored now");
    assert!(a.poll_event().is_none());
}

#[test]
fn deadline() {
    let now = t0();
    let mut a = fixed_initiator(now, b"", Encryption::Prefer).with_timeout(Duration::from_secs(5));
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(5)));
    a.handle_timeout(now + Duration::from_secs(4));
    assert!(a.poll_event().is_none());
    a.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(failed(a.poll_event()), MseError::Timeout);
    assert_eq!(a.poll_timeout(), None);
    assert!(
        a.poll_transmit().is_none(),
        "nothing is sent after a failure"
    );

    // A timeout beyond what `Instant` can hold is long, not immediate.
    let mut a = fixed_initiator(now, b"", Encryption::Prefer).with_timeout(Duration::MAX);
    assert!(a.poll_timeout().unwrap() > now + Duration::from_secs(24 * 3600));
    a.handle_timeout(now + Duration::from_secs(3600));
    assert!(a.poll_event().is_none());

    let mut b = fixed_responder(now, Encryption::Prefer);
    assert_eq!(b.poll_timeout(), Some(now + HANDSHAKE_TIMEOUT));
    b.handle_input(now + HANDSHAKE_TIMEOUT, &[1; 10]);
    assert_eq!(failed(b.poll_event()), MseError::Timeout);
}

#[test]
fn initial_payload_is_bounded() {
    let mut rng = StdRng::seed_from_u64(1);
    let big = vec![0u8; MAX_INITIAL_PAYLOAD + 1];
    assert_eq!(
        MseInitiator::new(t0(), SKEY, &big, Encryption::Prefer, &mut rng).err(),
        Some(MseError::PayloadTooLong(MAX_INITIAL_PAYLOAD + 1))
    );
    // The largest IA goes through, even byte-sized pieces at the end.
    let ia: Vec<u8> = (0..MAX_INITIAL_PAYLOAD).map(|i| i as u8).collect();
    let mut a = MseInitiator::new(t0(), SKEY, &ia, Encryption::Prefer, &mut rng).unwrap();
    let mut b = MseResponder::new(t0(), &[SKEY], Encryption::Prefer, &mut rng).unwrap();
    let (ea, eb) = run(&mut a, &mut b, &[4096, 1], b"");
    established(ea);
    assert_eq!(established(eb).initial_payload, ia);
}

#[test]
fn tells_plain_handshakes_from_mse() {
    assert_eq!(is_plaintext_handshake(b""), None);
    assert_eq!(is_plaintext_handshake(b"\x13Bit"), None);
    assert_eq!(is_plaintext_handshake(PLAINTEXT_PREFIX), Some(true));
    assert_eq!(
        is_plaintext_handshake(b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0"),
        Some(true)
    );
    assert_eq!(
        is_plaintext_handshake(b"\x13BitTorrent protocoX"),
        Some(false)
    );
    assert_eq!(is_plaintext_handshake(b"\x12"), Some(false));
    let mut rng = StdRng::seed_from_u64(5);
    let mut a = MseInitiator::new(t0(), SKEY, b"", Encryption::Prefer, &mut rng).unwrap();
    let first = a.poll_transmit().unwrap();
    assert_eq!(is_plaintext_handshake(&first), Some(false));
}

proptest! {
    /// Random keys and paddings (from the seed), random payloads and any chunking: both sides
    /// agree on everything.
    #[test]
    fn handshake_survives_any_chunking(
        seed in any::<u64>(),
        ia in proptest::collection::vec(any::<u8>(), 0..200),
        b_stream in proptest::collection::vec(any::<u8>(), 0..100),
        sizes in proptest::collection::vec(1usize..700, 1..8),
        require_a in any::<bool>(),
        require_b in any::<bool>(),
    ) {
        let policy = |r| if r { Encryption::Require } else { Encryption::Prefer };
        let mut rng = StdRng::seed_from_u64(seed);
        let mut a = MseInitiator::new(t0(), SKEY, &ia, policy(require_a), &mut rng).unwrap();
        let mut b = MseResponder::new(t0(), &[OTHER, SKEY], policy(require_b), &mut rng).unwrap();
        let (ea, eb) = run(&mut a, &mut b, &sizes, &b_stream);
        let (mut ea, mut eb) = (established(ea), established(eb));
        prop_assert_eq!(&eb.initial_payload, &ia);
        prop_assert_eq!(&ea.received, &b_stream);
        prop_assert_eq!(eb.info_hash, SKEY);
        check_stream(&mut ea, &mut eb);
    }

    /// Hand-built paddings of every length, delivered one byte at a time.
    #[test]
    fn byte_by_byte_with_any_padding(
        pad_a in 0usize..=MAX_PAD,
        pad_c in 0usize..=MAX_PAD,
        pad_b in 0usize..=MAX_PAD,
        pad_d in 0usize..=MAX_PAD,
    ) {
        let now = t0();
        let mut b = fixed_responder(now, Encryption::Prefer);
        let to_b = InitiatorBytes {
            pad_a: vec![0x11; pad_a],
            pad_c: vec![0x22; pad_c],
            stream: b"tail".to_vec(),
            ..Default::default()
        }
        .encode();
        let eb = established(feed(&mut b, now, &to_b, &[1]));
        prop_assert_eq!(eb.initial_payload.as_slice(), b"initial payload");
        prop_assert_eq!(eb.received.as_slice(), b"tail");

        let mut a = fixed_initiator(now, b"", Encryption::Prefer);
        let to_a = ResponderBytes {
            pad_b: vec![0x33; pad_b],
            pad_d: vec![0x44; pad_d],
            stream: b"tail".to_vec(),
            ..Default::default()
        }
        .encode();
        let ea = established(feed(&mut a, now, &to_a, &[1]));
        prop_assert_eq!(ea.received.as_slice(), b"tail");
    }
}
