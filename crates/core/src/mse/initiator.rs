//! The initiator (A): sends Ya and PadA at once, answers Yb with message 3 (carrying the
//! initial payload), then finds ENCRYPT(VC) within PadB's longest length and reads
//! `crypto_select` and PadD.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::cipher::{rc4_for, req1, req2, req3, xor20, Side, StreamCipher};
use super::dh::KeyPair;
use super::{
    driving_methods, find_marker, random_pad, CryptoMethod, Encryption, Established, Io, MseError,
    MseEvent, Pad, Step, Steps, SyncMarker, CRYPTO_PLAINTEXT, CRYPTO_RC4, DH_KEY_LEN,
    MAX_INITIAL_PAYLOAD, MAX_PAD, VC,
};
use crate::types::InfoHash;

/// Bytes of `crypto_select` and `len(PadD)`.
const SELECT_LEN: usize = 4 + 2;

#[derive(Default)]
enum State {
    /// Waiting for the responder's 96-byte key.
    AwaitYb,
    /// Message 3 is sent; looking for ENCRYPT(VC) after PadB.
    SyncVc {
        marker: [u8; 8],
        scanned: usize,
        send: StreamCipher,
        recv: StreamCipher,
    },
    /// Reading `crypto_select` and `len(PadD)`.
    Select {
        send: StreamCipher,
        recv: StreamCipher,
    },
    /// Skipping PadD.
    PadD {
        len: usize,
        method: CryptoMethod,
        send: StreamCipher,
        recv: StreamCipher,
    },
    /// Finished or failed.
    #[default]
    Done,
}

struct InitiatorSteps {
    keys: KeyPair,
    info_hash: InfoHash,
    crypto_provide: u32,
    pad_c: Vec<u8>,
    initial_payload: Vec<u8>,
    state: State,
}

/// The side that opens the connection: it knows the torrent and sends its BitTorrent handshake
/// as the initial payload. See the [module documentation](super) for how to drive it.
pub struct MseInitiator {
    io: Io,
    steps: InitiatorSteps,
}

impl MseInitiator {
    /// Starts a handshake for `info_hash` at `now`; message 1 (Ya, PadA) is ready to send.
    /// `initial_payload` (normally our 68-byte BitTorrent handshake) goes out encrypted in
    /// message 3. The private key and the paddings are drawn from `rng`.
    ///
    /// Fails with [`MseError::Disabled`] for [`Encryption::Disable`] and
    /// [`MseError::PayloadTooLong`] above [`MAX_INITIAL_PAYLOAD`] bytes.
    pub fn new<R: RngCore + ?Sized>(
        now: Instant,
        info_hash: InfoHash,
        initial_payload: &[u8],
        policy: Encryption,
        rng: &mut R,
    ) -> Result<MseInitiator, MseError> {
        let keys = KeyPair::generate(rng);
        let pad_a = random_pad(rng);
        let pad_c = random_pad(rng);
        MseInitiator::with_parts(now, info_hash, initial_payload, policy, keys, &pad_a, pad_c)
    }

    /// [`MseInitiator::new`] with the key pair and paddings given.
    pub(super) fn with_parts(
        now: Instant,
        info_hash: InfoHash,
        initial_payload: &[u8],
        policy: Encryption,
        keys: KeyPair,
        pad_a: &[u8],
        pad_c: Vec<u8>,
    ) -> Result<MseInitiator, MseError> {
        let crypto_provide = policy.crypto_provide()?;
        if initial_payload.len() > MAX_INITIAL_PAYLOAD {
            return Err(MseError::PayloadTooLong(initial_payload.len()));
        }
        let mut io = Io::new(now);
        io.transmit.extend_from_slice(keys.public());
        io.transmit.extend_from_slice(pad_a);
        Ok(MseInitiator {
            io,
            steps: InitiatorSteps {
                keys,
                info_hash,
                crypto_provide,
                pad_c,
                initial_payload: initial_payload.to_vec(),
                state: State::AwaitYb,
            },
        })
    }

    driving_methods!();
}

impl InitiatorSteps {
    /// Message 3, after the shared secret is known.
    fn message3(&self, secret: &[u8; DH_KEY_LEN], send: &mut StreamCipher, out: &mut Vec<u8>) {
        out.extend_from_slice(&req1(secret));
        out.extend_from_slice(&xor20(&req2(&self.info_hash), &req3(secret)));
        let start = out.len();
        out.extend_from_slice(&VC);
        out.extend_from_slice(&self.crypto_provide.to_be_bytes());
        // Both lengths were bounded at construction (PadC by MAX_PAD, IA by u16::MAX).
        out.extend_from_slice(&(self.pad_c.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.pad_c);
        out.extend_from_slice(&(self.initial_payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.initial_payload);
        if let Some(encrypted) = out.get_mut(start..) {
            send.apply(encrypted);
        }
    }
}

impl Steps for InitiatorSteps {
    type State = State;

    fn state(&mut self) -> &mut State {
        &mut self.state
    }

    fn step(
        &mut self,
        state: State,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Step<State>, MseError> {
        Ok(match state {
            State::AwaitYb => {
                let Some(&yb) = buf.first_chunk::<DH_KEY_LEN>() else {
                    return Ok(Step::Wait(State::AwaitYb));
                };
                buf.drain(..DH_KEY_LEN);
                let secret = self.keys.shared_secret(&yb)?;
                let mut send = rc4_for(Side::A, &secret, &self.info_hash);
                let mut recv = rc4_for(Side::B, &secret, &self.info_hash);
                self.message3(&secret, &mut send, out);
                // VC is zero, so ENCRYPT(VC) is B's first keystream bytes, and computing it
                // advances `recv` past the VC just as decrypting it would.
                let mut marker = VC;
                recv.apply(&mut marker);
                Step::Next(State::SyncVc {
                    marker,
                    scanned: 0,
                    send,
                    recv,
                })
            }
            State::SyncVc {
                marker,
                mut scanned,
                send,
                recv,
            } => match find_marker(buf, &marker, MAX_PAD, &mut scanned) {
                Some(at) => {
                    buf.drain(..at + marker.len());
                    Step::Next(State::Select { send, recv })
                }
                None if buf.len() >= MAX_PAD + marker.len() => {
                    return Err(MseError::NoSyncMarker {
                        marker: SyncMarker::EncryptedVc,
                        limit: MAX_PAD + marker.len(),
                    })
                }
                None => Step::Wait(State::SyncVc {
                    marker,
                    scanned,
                    send,
                    recv,
                }),
            },
            State::Select { send, mut recv } => {
                let Some(&head) = buf.first_chunk::<SELECT_LEN>() else {
                    return Ok(Step::Wait(State::Select { send, recv }));
                };
                buf.drain(..SELECT_LEN);
                let mut head = head;
                recv.apply(&mut head);
                let [s0, s1, s2, s3, l0, l1] = head;
                let selected = u32::from_be_bytes([s0, s1, s2, s3]);
                let method = match selected {
                    CRYPTO_RC4 if self.crypto_provide & CRYPTO_RC4 != 0 => CryptoMethod::Rc4,
                    CRYPTO_PLAINTEXT if self.crypto_provide & CRYPTO_PLAINTEXT != 0 => {
                        CryptoMethod::Plaintext
                    }
                    _ => return Err(MseError::BadSelect { selected }),
                };
                let len = u16::from_be_bytes([l0, l1]);
                if usize::from(len) > MAX_PAD {
                    return Err(MseError::PadTooLong {
                        pad: Pad::PadD,
                        len,
                    });
                }
                Step::Next(State::PadD {
                    len: usize::from(len),
                    method,
                    send,
                    recv,
                })
            }
            State::PadD {
                len,
                method,
                send,
                mut recv,
            } => {
                let Some(pad) = buf.get_mut(..len) else {
                    return Ok(Step::Wait(State::PadD {
                        len,
                        method,
                        send,
                        recv,
                    }));
                };
                recv.apply(pad);
                buf.drain(..len);
                Step::Done(Established {
                    info_hash: self.info_hash,
                    method,
                    send_cipher: method.stream(send),
                    recv_cipher: method.stream(recv),
                    initial_payload: Vec::new(),
                    received: Vec::new(),
                })
            }
            State::Done => Step::Wait(State::Done),
        })
    }

    fn want(&self) -> usize {
        match &self.state {
            State::AwaitYb => DH_KEY_LEN,
            State::SyncVc { marker, .. } => MAX_PAD + marker.len(),
            State::Select { .. } => SELECT_LEN,
            State::PadD { len, .. } => *len,
            State::Done => 0,
        }
    }
}
