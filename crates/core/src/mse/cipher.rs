//! MSE's hashes and keys, and [`StreamCipher`], the per-direction cipher a connection keeps
//! after the handshake.
//!
//! HASH is SHA-1. The initiator (A) encrypts with RC4 keyed by HASH('keyA', S, SKEY) and the
//! responder (B) with HASH('keyB', S, SKEY); both drop the first 1024 bytes of keystream.

use rc4::{KeyInit, Rc4, StreamCipher as _};
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
        let mut rc4 = match Rc4::new_from_slice(key) {
            Ok(rc4) => rc4,
            Err(_) => unreachable!("RC4 takes keys of 1 to 256 bytes"),
        };
        let mut discard = [0u8; RC4_DISCARD];
        rc4.apply_keystream(&mut discard);
        StreamCipher {
            rc4: Some(Box::new(rc4)),
        }
    }

    /// Encrypts or decrypts `data` in place (the same operation for RC4; nothing for plaintext).
    pub fn apply(&mut self, data: &mut [u8]) {
        if let Some(rc4) = &mut self.rc4 {
            rc4.apply_keystream(data);
        }
    }

    /// Whether this direction is unencrypted.
    pub fn is_plaintext(&self) -> bool {
        self.rc4.is_none()
    }
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
