//! MSE's hashes and keys, and [`StreamCipher`], the per-direction cipher a connection keeps
//! after the handshake.
//!
//! HASH is SHA-1. The initiator (A) encrypts with RC4 keyed by HASH('keyA', S, SKEY) and the
//! responder (B) with HASH('keyB', S, SKEY); both drop the first 1024 bytes of keystream.

use sha1::{Digest, Sha1};

use super::DH_KEY_LEN;
use crate::types::InfoHash;

/// Keystream bytes dropped after keying RC4 (they leak the most about the key).
pub const RC4_DISCARD: usize = 1024;

/// SHA-1 of the concatenated parts.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// HASH('req1', S): the marker the responder searches for after PadA.
pub(crate) fn req1(secret: &[u8; DH_KEY_LEN]) -> [u8; 20] {
    hash(&[b"req1", secret])
}

/// HASH('req2', SKEY): what names the torrent, once unmasked.
pub(crate) fn req2(skey: &InfoHash) -> [u8; 20] {
    hash(&[b"req2", &skey.0])
}

/// HASH('req3', S): the mask over HASH('req2', SKEY).
pub(crate) fn req3(secret: &[u8; DH_KEY_LEN]) -> [u8; 20] {
    hash(&[b"req3", secret])
}

/// `a xor b`.
pub(crate) fn xor20(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    let mut out = *a;
    for (o, b) in out.iter_mut().zip(b) {
        *o ^= b;
    }
    out
}

/// Which side's key: A (the initiator) sends with keyA, B (the responder) with keyB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

/// RC4 keyed with HASH('keyA'|'keyB', S, SKEY), its first 1024 bytes discarded.
pub(crate) fn rc4_for(side: Side, secret: &[u8; DH_KEY_LEN], skey: &InfoHash) -> StreamCipher {
    let label: &[u8] = match side {
        Side::A => b"keyA",
        Side::B => b"keyB",
    };
    StreamCipher::rc4(&hash(&[label, secret, &skey.0]))
}

/// One direction of a connection: RC4 or plaintext. Applying it to bytes encrypts (outgoing) or
/// decrypts (incoming) them in place, continuing the keystream where the last call stopped, so
/// every byte of the direction must pass through it exactly once and in order.
pub struct StreamCipher {
    rc4: Option<Box<Rc4>>,
}

impl StreamCipher {
    /// A cipher that leaves bytes as they are.
    pub fn plaintext() -> StreamCipher {
        StreamCipher { rc4: None }
    }

    /// RC4 with `key`, the first [`RC4_DISCARD`] keystream bytes already dropped.
    pub fn rc4(key: &[u8; 20]) -> StreamCipher {
        let mut rc4 = Rc4::new(key);
        let mut discard = [0u8; RC4_DISCARD];
        rc4.apply(&mut discard);
        StreamCipher {
            rc4: Some(Box::new(rc4)),
        }
    }

    /// Encrypts or decrypts `data` in place (the same operation for RC4; nothing for plaintext).
    pub fn apply(&mut self, data: &mut [u8]) {
        if let Some(rc4) = &mut self.rc4 {
            rc4.apply(data);
        }
    }

    /// Whether this direction is unencrypted.
    pub fn is_plaintext(&self) -> bool {
        self.rc4.is_none()
    }
}

/// RC4 (the key schedule and keystream of the original cipher).
///
/// Written here rather than taken from RustCrypto's `rc4` crate for speed: RC4 is what bounds an
/// encrypted download (every payload byte passes through it on both ends). The crate runs one
/// byte at a time through its generic in/out buffers, at about 490 MB/s on the benchmark
/// machine; this loop keeps `i`, `j` and the state in registers and cache, XORs eight keystream
/// bytes at once, and runs at about 750 MB/s. The crate stays as the tests' reference: the
/// keystreams are compared for random keys and random splits of the data.
struct Rc4 {
    /// The permutation of 0..=255 (held as `u32` to spare the loop byte-to-word conversions).
    state: [u32; 256],
    i: u32,
    j: u32,
}

impl Rc4 {
    /// The key-scheduling algorithm over a non-empty key.
    fn new(key: &[u8; 20]) -> Rc4 {
        let mut state: [u32; 256] = core::array::from_fn(|n| n as u32);
        let mut j = 0u32;
        for (n, k) in (0..256).zip(key.iter().cycle()) {
            j = (j + state[n] + u32::from(*k)) & 0xff;
            state.swap(n, j as usize);
        }
        Rc4 { state, i: 0, j: 0 }
    }

    /// XORs the next `data.len()` keystream bytes into `data`.
    fn apply(&mut self, data: &mut [u8]) {
        let (mut i, mut j) = (self.i, self.j);
        let state = &mut self.state;
        let mut words = data.chunks_exact_mut(8);
        for word in &mut words {
            let mut keystream = [0u8; 8];
            for k in &mut keystream {
                *k = next_byte(state, &mut i, &mut j);
            }
            for (b, k) in word.iter_mut().zip(keystream) {
                *b ^= k;
            }
        }
        for b in words.into_remainder() {
            *b ^= next_byte(state, &mut i, &mut j);
        }
        self.i = i;
        self.j = j;
    }
}

/// One step of RC4's pseudo-random generation: `i` and `j` stay below 256, so every index is in
/// bounds and the checks fold away.
#[inline(always)]
fn next_byte(state: &mut [u32; 256], i: &mut u32, j: &mut u32) -> u8 {
    *i = (*i + 1) & 0xff;
    let si = state[*i as usize];
    *j = (*j + si) & 0xff;
    let sj = state[*j as usize];
    state[*i as usize] = sj;
    state[*j as usize] = si;
    state[((si + sj) & 0xff) as usize] as u8
}

impl std::fmt::Debug for StreamCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keystream state.
        f.write_str(if self.is_plaintext() {
            "StreamCipher(plaintext)"
        } else {
            "StreamCipher(rc4)"
        })
    }
}
