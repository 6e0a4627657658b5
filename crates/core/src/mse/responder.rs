//! The responder (B): answers Ya with Yb and PadB, finds HASH('req1', S) within PadA's longest
//! length, tells which served torrent HASH('req2', SKEY) xor HASH('req3', S) names, checks VC,
//! picks a method from `crypto_provide`, reads PadC and the initial payload, and sends
//! message 4.

use std::time::{Duration, Instant};

use rand::RngCore;

use super::cipher::{rc4_for, req1, req2, req3, xor20, Side, StreamCipher};
use super::dh::KeyPair;
use super::{
    driving_methods, find_marker, random_pad, CryptoMethod, Encryption, Established, Io, MseError,
    MseEvent, Pad, Step, Steps, SyncMarker, DH_KEY_LEN, MAX_PAD, VC,
};
use crate::types::InfoHash;

/// Bytes of the masked SKEY hash.
const SKEY_HASH_LEN: usize = 20;
/// Bytes of VC, `crypto_provide` and `len(PadC)`.
const PROVIDE_LEN: usize = 8 + 4 + 2;

#[derive(Default)]
enum State {
    /// Waiting for the initiator's 96-byte key.
    AwaitYa,
    /// Yb is sent; looking for HASH('req1', S) after PadA.
    SyncReq1 {
        secret: Box<[u8; DH_KEY_LEN]>,
        marker: [u8; 20],
        scanned: usize,
    },
    /// Reading HASH('req2', SKEY) xor HASH('req3', S).
    Skey { secret: Box<[u8; DH_KEY_LEN]> },
    /// Reading VC, `crypto_provide` and `len(PadC)`.
    Provide {
        info_hash: InfoHash,
        send: StreamCipher,
        recv: StreamCipher,
    },
    /// Reading PadC and `len(IA)`.
    PadC {
        len: usize,
        info_hash: InfoHash,
        method: CryptoMethod,
        send: StreamCipher,
        recv: StreamCipher,
    },
    /// Reading IA.
    Ia {
        len: usize,
        info_hash: InfoHash,
        method: CryptoMethod,
        send: StreamCipher,
        recv: StreamCipher,
    },
    /// Finished or failed.
    #[default]
    Done,
}

struct ResponderSteps {
    keys: KeyPair,
    policy: Encryption,
    /// The torrents we serve; HASH('req2', SKEY) is computed for each only when the peer's
    /// masked hash arrives.
    served: Vec<InfoHash>,
    pad_b: Vec<u8>,
    pad_d: Vec<u8>,
    state: State,
}

/// The side that accepts the connection: it learns the torrent from the initiator's masked
/// SKEY hash. See the [module documentation](super) for how to drive it.
pub struct MseResponder {
    io: Io,
    steps: ResponderSteps,
}

impl MseResponder {
    /// Starts waiting, at `now`, for an initiator asking for one of `served` (our torrents'
    /// info hashes: the list is copied, and finding the peer's torrent hashes each entry once).
    /// The private key and the paddings are drawn from `rng`.
    ///
    /// Fails with [`MseError::Disabled`] for [`Encryption::Disable`].
    pub fn new<R: RngCore + ?Sized>(
        now: Instant,
        served: &[InfoHash],
        policy: Encryption,
        rng: &mut R,
    ) -> Result<MseResponder, MseError> {
        let keys = KeyPair::generate(rng);
        let pad_b = random_pad(rng);
        let pad_d = random_pad(rng);
        MseResponder::with_parts(now, served, policy, keys, pad_b, pad_d)
    }

    /// [`MseResponder::new`] with the key pair and paddings given.
    pub(super) fn with_parts(
        now: Instant,
        served: &[InfoHash],
        policy: Encryption,
        keys: KeyPair,
        pad_b: Vec<u8>,
        pad_d: Vec<u8>,
    ) -> Result<MseResponder, MseError> {
        policy.crypto_provide()?;
        Ok(MseResponder {
            io: Io::new(now),
            steps: ResponderSteps {
                keys,
                policy,
                served: served.to_vec(),
                pad_b,
                pad_d,
                state: State::AwaitYa,
            },
        })
    }

    driving_methods!();
}

impl ResponderSteps {
    /// Message 4: ENCRYPT(VC, crypto_select, len(PadD), PadD).
    fn message4(&self, method: CryptoMethod, send: &mut StreamCipher, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&VC);
        out.extend_from_slice(&method.bit().to_be_bytes());
        // PadD is at most MAX_PAD bytes (drawn or given by this module).
        out.extend_from_slice(&(self.pad_d.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.pad_d);
        if let Some(encrypted) = out.get_mut(start..) {
            send.apply(encrypted);
        }
    }
}

impl Steps for ResponderSteps {
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
            State::AwaitYa => {
                let Some(&ya) = buf.first_chunk::<DH_KEY_LEN>() else {
                    return Ok(Step::Wait(State::AwaitYa));
                };
                buf.drain(..DH_KEY_LEN);
                let secret = Box::new(self.keys.shared_secret(&ya)?);
                out.extend_from_slice(self.keys.public());
                out.extend_from_slice(&self.pad_b);
                Step::Next(State::SyncReq1 {
                    marker: req1(&secret),
                    secret,
                    scanned: 0,
                })
            }
            State::SyncReq1 {
                secret,
                marker,
                mut scanned,
            } => match find_marker(buf, &marker, MAX_PAD, &mut scanned) {
                Some(at) => {
                    buf.drain(..at + marker.len());
                    Step::Next(State::Skey { secret })
                }
                None if buf.len() >= MAX_PAD + marker.len() => {
                    return Err(MseError::NoSyncMarker {
                        marker: SyncMarker::Req1Hash,
                        limit: MAX_PAD + marker.len(),
                    })
                }
                None => Step::Wait(State::SyncReq1 {
                    secret,
                    marker,
                    scanned,
                }),
            },
            State::Skey { secret } => {
                let Some(&masked) = buf.first_chunk::<SKEY_HASH_LEN>() else {
                    return Ok(Step::Wait(State::Skey { secret }));
                };
                buf.drain(..SKEY_HASH_LEN);
                let wanted = xor20(&masked, &req3(&secret));
                let info_hash = *self
                    .served
                    .iter()
                    .find(|ih| req2(ih) == wanted)
                    .ok_or(MseError::UnknownInfoHash)?;
                Step::Next(State::Provide {
                    info_hash,
                    send: rc4_for(Side::B, &secret, &info_hash),
                    recv: rc4_for(Side::A, &secret, &info_hash),
                })
            }
            State::Provide {
                info_hash,
                send,
                mut recv,
            } => {
                let Some(&head) = buf.first_chunk::<PROVIDE_LEN>() else {
                    return Ok(Step::Wait(State::Provide {
                        info_hash,
                        send,
                        recv,
                    }));
                };
                buf.drain(..PROVIDE_LEN);
                let mut head = head;
                recv.apply(&mut head);
                let [v0, v1, v2, v3, v4, v5, v6, v7, p0, p1, p2, p3, l0, l1] = head;
                if [v0, v1, v2, v3, v4, v5, v6, v7] != VC {
                    return Err(MseError::BadVerificationConstant);
                }
                let offered = u32::from_be_bytes([p0, p1, p2, p3]);
                let method = self
                    .policy
                    .select(offered)
                    .ok_or(MseError::NoCommonMethod { offered })?;
                let len = u16::from_be_bytes([l0, l1]);
                if usize::from(len) > MAX_PAD {
                    return Err(MseError::PadTooLong {
                        pad: Pad::PadC,
                        len,
                    });
                }
                Step::Next(State::PadC {
                    len: usize::from(len),
                    info_hash,
                    method,
                    send,
                    recv,
                })
            }
            State::PadC {
                len,
                info_hash,
                method,
                send,
                mut recv,
            } => {
                // PadC, then the 2-byte len(IA).
                let Some(pad_and_len) = buf.get_mut(..len + 2) else {
                    return Ok(Step::Wait(State::PadC {
                        len,
                        info_hash,
                        method,
                        send,
                        recv,
                    }));
                };
                recv.apply(pad_and_len);
                let ia_len = match pad_and_len.last_chunk::<2>() {
                    Some(&l) => usize::from(u16::from_be_bytes(l)),
                    None => 0,
                };
                buf.drain(..len + 2);
                Step::Next(State::Ia {
                    len: ia_len,
                    info_hash,
                    method,
                    send,
                    recv,
                })
            }
            State::Ia {
                len,
                info_hash,
                method,
                mut send,
                mut recv,
            } => {
                let Some(ia) = buf.get_mut(..len) else {
                    return Ok(Step::Wait(State::Ia {
                        len,
                        info_hash,
                        method,
                        send,
                        recv,
                    }));
                };
                // IA is always RC4: it was sent before the initiator knew our choice.
                recv.apply(ia);
                let initial_payload: Vec<u8> = buf.drain(..len).collect();
                self.message4(method, &mut send, out);
                Step::Done(Established {
                    info_hash,
                    method,
                    send_cipher: method.stream(send),
                    recv_cipher: method.stream(recv),
                    initial_payload,
                    received: Vec::new(),
                })
            }
            State::Done => Step::Wait(State::Done),
        })
    }

    fn want(&self) -> usize {
        match &self.state {
            State::AwaitYa => DH_KEY_LEN,
            State::SyncReq1 { marker, .. } => MAX_PAD + marker.len(),
            State::Skey { .. } => SKEY_HASH_LEN,
            State::Provide { .. } => PROVIDE_LEN,
            State::PadC { len, .. } => len + 2,
            State::Ia { len, .. } => *len,
            State::Done => 0,
        }
    }
}
