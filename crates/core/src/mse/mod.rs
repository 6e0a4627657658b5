//! Message Stream Encryption (MSE, also called Protocol Encryption): the obfuscated handshake
//! that precedes the BitTorrent handshake when a peer asks for "encryption", as two sans-IO state
//! machines, [`MseInitiator`] (A, who connects) and [`MseResponder`] (B, who accepts).
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
//! 5 A->B: ENCRYPT2(payload stream)
//! ```
//!
//! Y is a Diffie-Hellman public key on the 768-bit MSE prime, S the shared secret, SKEY the
//! torrent's info hash, ENCRYPT RC4 keyed per direction ([`StreamCipher`]), VC eight zero bytes, and
//! ENCRYPT2 whatever `crypto_select` chose: RC4 (continuing ENCRYPT's keystream) or plaintext.
//! IA, the initial payload, carries A's BitTorrent handshake.
//!
//! Driving (the crate's convention): construct with `now` and randomness, send what
//! `poll_transmit` returns, feed every received byte to `handle_input`, call `handle_timeout` at
//! `poll_timeout`, and drain `poll_event` until it yields [`MseEvent::Established`] or
//! [`MseEvent::Failed`]. Then drain `poll_transmit` once more and send it *before* anything
//! encrypted with the established cipher: the responder's last handshake message is queued
//! together with the event.
//!
//! Invariants: no byte is read past what the current step needs, so the stream that follows the
//! handshake is never misparsed as handshake; a sync-marker search gives up after the longest
//! padding (512 bytes) plus the marker; padding lengths above 512 are refused; the receive buffer
//! never holds more than the current step allows (at most the 65535-byte IA); hostile input
//! ends in [`MseEvent::Failed`] with a typed [`MseError`], never a panic.

mod cipher;
mod dh;
mod initiator;
mod responder;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

pub use cipher::{StreamCipher, RC4_DISCARD};
pub use initiator::MseInitiator;
pub use responder::MseResponder;

/// Either side of a handshake, driven alike: for drivers that serve both roles.
pub enum MseHandshake {
    Initiator(MseInitiator),
    Responder(MseResponder),
}

impl MseHandshake {
    /// See [`MseInitiator::handle_input`].
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        match self {
            Self::Initiator(m) => m.handle_input(now, data),
            Self::Responder(m) => m.handle_input(now, data),
        }
    }

    /// See [`MseInitiator::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::Initiator(m) => m.handle_timeout(now),
            Self::Responder(m) => m.handle_timeout(now),
        }
    }

    /// See [`MseInitiator::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Initiator(m) => m.poll_timeout(),
            Self::Responder(m) => m.poll_timeout(),
        }
    }

    /// See [`MseInitiator::poll_transmit`].
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        match self {
            Self::Initiator(m) => m.poll_transmit(),
            Self::Responder(m) => m.poll_transmit(),
        }
    }

    /// See [`MseInitiator::poll_event`].
    pub fn poll_event(&mut self) -> Option<MseEvent> {
        match self {
            Self::Initiator(m) => m.poll_event(),
            Self::Responder(m) => m.poll_event(),
        }
    }
}

use crate::types::InfoHash;

/// Length of a Diffie-Hellman public key and of the shared secret on the wire.
pub const DH_KEY_LEN: usize = 96;
/// The longest PadA, PadB, PadC or PadD.
pub const MAX_PAD: usize = 512;
/// The verification constant: eight zero bytes, sent encrypted.
pub const VC: [u8; 8] = [0; 8];
/// `crypto_provide` / `crypto_select` bit for a plaintext stream after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide` / `crypto_select` bit for an RC4 stream after the handshake.
pub const CRYPTO_RC4: u32 = 0x02;
/// The longest initial payload (its length is a 16-bit field).
pub const MAX_INITIAL_PAYLOAD: usize = u16::MAX as usize;
/// How long a handshake may take unless `with_timeout` says otherwise.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// The first bytes of a plain BitTorrent handshake: `\x13BitTorrent protocol`.
pub const PLAINTEXT_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";

/// Whether a connection's first bytes are a plain BitTorrent handshake (`Some(true)`), an MSE
/// handshake (`Some(false)`: a public key cannot start with the 20-byte protocol prefix except by
/// a 2^-160 chance), or cannot be told yet (`None`: fewer than 20 bytes, all matching the
/// prefix). The bytes looked at must then be fed to whichever handshake reads the connection.
pub fn is_plaintext_handshake(first_bytes: &[u8]) -> Option<bool> {
    let n = first_bytes.len().min(PLAINTEXT_PREFIX.len());
    if first_bytes[..n] != PLAINTEXT_PREFIX[..n] {
        Some(false)
    } else if n == PLAINTEXT_PREFIX.len() {
        Some(true)
    } else {
        None
    }
}

/// What a connection accepts, for both roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// Offer RC4 and plaintext, choose RC4 when the peer offers it; plain BitTorrent
    /// connections (no MSE) are accepted too.
    Prefer,
    /// RC4 only; plain BitTorrent connections are refused.
    Require,
    /// No MSE at all: callers send and accept only the plain handshake, and the MSE machines
    /// refuse to be built.
    Disable,
}

impl Encryption {
    /// Whether a connection without MSE (a plain BitTorrent handshake) is acceptable.
    pub fn allows_plaintext_handshake(self) -> bool {
        !matches!(self, Encryption::Require)
    }

    /// The `crypto_provide` bits an initiator sends.
    fn crypto_provide(self) -> Result<u32, MseError> {
        match self {
            Encryption::Prefer => Ok(CRYPTO_RC4 | CRYPTO_PLAINTEXT),
            Encryption::Require => Ok(CRYPTO_RC4),
            Encryption::Disable => Err(MseError::Disabled),
        }
    }

    /// The method a responder picks from the peer's `crypto_provide`, if any is acceptable.
    /// Bits we do not know are ignored (a later revision may add methods).
    fn select(self, provided: u32) -> Option<CryptoMethod> {
        match self {
            _ if provided & CRYPTO_RC4 != 0 => Some(CryptoMethod::Rc4),
            Encryption::Prefer if provided & CRYPTO_PLAINTEXT != 0 => Some(CryptoMethod::Plaintext),
            _ => None,
        }
    }
}

/// The stream method chosen by `crypto_select`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoMethod {
    /// After the handshake the stream is sent as is.
    Plaintext,
    /// After the handshake the stream stays RC4-encrypted.
    Rc4,
}

impl CryptoMethod {
    fn bit(self) -> u32 {
        match self {
            CryptoMethod::Plaintext => CRYPTO_PLAINTEXT,
            CryptoMethod::Rc4 => CRYPTO_RC4,
        }
    }

    /// The cipher for the stream after the handshake: the handshake's RC4 goes on, or is
    /// dropped for plaintext.
    fn stream(self, rc4: StreamCipher) -> StreamCipher {
        match self {
            CryptoMethod::Rc4 => rc4,
            CryptoMethod::Plaintext => StreamCipher::plaintext(),
        }
    }
}

/// Which synchronisation marker was not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMarker {
    /// The initiator's search for ENCRYPT(VC) after Yb and PadB.
    EncryptedVc,
    /// The responder's search for HASH('req1', S) after Ya and PadA.
    Req1Hash,
}

impl fmt::Display for SyncMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncMarker::EncryptedVc => "encrypted verification constant",
            SyncMarker::Req1Hash => "HASH('req1', S)",
        })
    }
}

/// Which padding field was too long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad {
    /// The initiator's padding inside the encrypted part of message 3.
    PadC,
    /// The responder's padding inside message 4.
    PadD,
}

impl fmt::Display for Pad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pad::PadC => "PadC",
            Pad::PadD => "PadD",
        })
    }
}

/// Why a handshake failed (or could not start).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    /// The policy is [`Encryption::Disable`].
    #[error("encryption is disabled")]
    Disabled,
    /// The initial payload does not fit its 16-bit length.
    #[error("initial payload of {0} bytes is longer than {MAX_INITIAL_PAYLOAD}")]
    PayloadTooLong(usize),
    /// The peer's public key is 0, 1, P-1 or not below P.
    #[error("the peer's Diffie-Hellman key is out of range")]
    InvalidPublicKey,
    /// The marker did not appear within the longest padding.
    #[error("no {marker} within {limit} bytes after the peer's key")]
    NoSyncMarker {
        /// What was searched for.
        marker: SyncMarker,
        /// Bytes searched: the longest padding plus the marker.
        limit: usize,
    },
    /// The responder decrypted a verification constant that is not zero.
    #[error("the verification constant is not zero")]
    BadVerificationConstant,
    /// A padding length above [`MAX_PAD`].
    #[error("{pad} of {len} bytes is longer than {MAX_PAD}")]
    PadTooLong {
        /// Which padding.
        pad: Pad,
        /// Its announced length.
        len: u16,
    },
    /// HASH('req2', SKEY) names no torrent this responder serves.
    #[error("the peer asks for a torrent we do not serve")]
    UnknownInfoHash,
    /// The initiator offers no method our policy accepts.
    #[error("the peer offers crypto methods {offered:#x}, none of which our policy accepts")]
    NoCommonMethod {
        /// The peer's `crypto_provide`.
        offered: u32,
    },
    /// The responder selected something other than exactly one method we offered.
    #[error("the peer selected crypto method {selected:#x}, which we did not offer")]
    BadSelect {
        /// The peer's `crypto_select`.
        selected: u32,
    },
    /// The handshake did not finish before its deadline.
    #[error("the encryption handshake timed out")]
    Timeout,
}

/// A finished handshake: everything the connection needs to carry on.
#[derive(Debug)]
pub struct Established {
    /// The torrent (SKEY) the connection is about: the initiator's own, or the one the
    /// responder found among those it serves.
    pub info_hash: InfoHash,
    /// The method `crypto_select` chose.
    pub method: CryptoMethod,
    /// Apply to every byte sent from now on (its keystream continues the handshake's).
    pub send_cipher: StreamCipher,
    /// Apply to every byte received after [`Established::received`].
    pub recv_cipher: StreamCipher,
    /// On the responder: the initiator's IA, decrypted (normally its 68-byte BitTorrent
    /// handshake; empty if it sends the handshake in the stream instead). Empty on the
    /// initiator, which receives none.
    pub initial_payload: Vec<u8>,
    /// Stream bytes that arrived with the end of the handshake, already decrypted. They follow
    /// the initial payload in the peer's stream.
    pub received: Vec<u8>,
}

/// What a handshake machine reports.
#[derive(Debug)]
pub enum MseEvent {
    /// The handshake is done.
    Established(Box<Established>),
    /// The handshake failed; the connection should be closed.
    Failed(MseError),
}

/// The steps of one role, driven by [`Io`].
trait Steps {
    /// The role's states; the default is the final one.
    type State: Default;
    /// The current state, to move out of while stepping.
    fn state(&mut self) -> &mut Self::State;
    /// How many buffered bytes the current step can use; input beyond this waits, so the
    /// buffer is bounded by the step.
    fn want(&self) -> usize;
    /// One step from `state`: consumes its bytes from the front of `buf` and queues bytes to
    /// send on `out`. When the handshake is done, the bytes left in `buf` belong to the stream
    /// and are still as received.
    fn step(
        &mut self,
        state: Self::State,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Step<Self::State>, MseError>;
}

/// Runs `steps` as far as the buffered bytes allow.
fn advance<S: Steps>(
    steps: &mut S,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<Option<Established>, MseError> {
    loop {
        let state = std::mem::take(steps.state());
        match steps.step(state, buf, out)? {
            Step::Next(state) => *steps.state() = state,
            Step::Wait(state) => {
                *steps.state() = state;
                return Ok(None);
            }
            Step::Done(established) => return Ok(Some(established)),
        }
    }
}

/// What one step of a role's machine leads to.
enum Step<S> {
    /// Go on with this state.
    Next(S),
    /// Stay in this state until more bytes arrive.
    Wait(S),
    /// The handshake is done.
    Done(Established),
}

/// The buffers, outputs and deadline both roles share.
struct Io {
    buf: Vec<u8>,
    transmit: Vec<u8>,
    event: Option<MseEvent>,
    started: Instant,
    timeout: Duration,
    finished: bool,
}

impl Io {
    fn new(now: Instant) -> Io {
        Io {
            buf: Vec::new(),
            transmit: Vec::new(),
            event: None,
            started: now,
            timeout: HANDSHAKE_TIMEOUT,
            finished: false,
        }
    }

    fn deadline(&self) -> Instant {
        // A timeout too large for `Instant` means "a year", not "now".
        self.started
            .checked_add(self.timeout)
            .or_else(|| {
                self.started
                    .checked_add(Duration::from_secs(365 * 24 * 3600))
            })
            .unwrap_or(self.started)
    }

    fn handle_input(&mut self, steps: &mut impl Steps, now: Instant, mut data: &[u8]) {
        self.handle_timeout(now);
        if self.finished {
            // Bytes that arrive before the driver took the event still belong to the stream.
            if let Some(MseEvent::Established(est)) = &mut self.event {
                let start = est.received.len();
                est.received.extend_from_slice(data);
                est.recv_cipher.apply(&mut est.received[start..]);
            }
            return;
        }
        while !data.is_empty() {
            // `advance` leaves less than `want` buffered, so at least one byte goes in.
            let room = steps.want().saturating_sub(self.buf.len()).max(1);
            let (head, rest) = data.split_at(room.min(data.len()));
            self.buf.extend_from_slice(head);
            data = rest;
            match advance(steps, &mut self.buf, &mut self.transmit) {
                Ok(None) => {}
                Ok(Some(mut est)) => {
                    let mut received = std::mem::take(&mut self.buf);
                    received.extend_from_slice(data);
                    est.recv_cipher.apply(&mut received);
                    est.received = received;
                    self.finished = true;
                    self.event = Some(MseEvent::Established(Box::new(est)));
                    return;
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, error: MseError) {
        self.finished = true;
        self.buf = Vec::new();
        self.transmit = Vec::new();
        self.event = Some(MseEvent::Failed(error));
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.finished && now >= self.deadline() {
            self.fail(MseError::Timeout);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.finished).then(|| self.deadline())
    }

    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }
}

/// Generates the driving methods shared by both roles (they differ only in their steps).
macro_rules! driving_methods {
    () => {
        /// Feeds bytes received from the peer, in order. Bytes that arrive after the
        /// [`MseEvent::Established`] event was taken are ignored: from then on the driver
        /// decrypts with [`Established::recv_cipher`] itself.
        pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
            self.io.handle_input(&mut self.steps, now, data);
        }

        /// Fails the handshake with [`MseError::Timeout`] once its deadline has passed;
        /// calling it early or late is harmless.
        pub fn handle_timeout(&mut self, now: Instant) {
            self.io.handle_timeout(now);
        }

        /// When [`Self::handle_timeout`] must next be called; `None` once finished.
        pub fn poll_timeout(&self) -> Option<Instant> {
            self.io.poll_timeout()
        }

        /// The next bytes to send, if any.
        pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
            self.io.poll_transmit()
        }

        /// The outcome, once: [`MseEvent::Established`] or [`MseEvent::Failed`].
        pub fn poll_event(&mut self) -> Option<MseEvent> {
            self.io.event.take()
        }

        /// Bytes held in the receive buffer (for the tests' memory bound).
        #[cfg(test)]
        pub(super) fn buffered_len(&self) -> usize {
            self.io.buf.len()
        }

        /// Sets how long the whole handshake may take, counted from construction.
        pub fn with_timeout(mut self, timeout: Duration) -> Self {
            self.io.timeout = timeout;
            self
        }
    };
}
use driving_methods;

/// Where `marker` starts in `buf` at an offset of at most `max_offset`, looking only at
/// offsets from `*scanned` on and advancing `*scanned` past those ruled out (so a buffer that
/// grows byte by byte is scanned once overall).
fn find_marker(buf: &[u8], marker: &[u8], max_offset: usize, scanned: &mut usize) -> Option<usize> {
    let last = buf.len().checked_sub(marker.len())?.min(max_offset);
    while *scanned <= last {
        let at = *scanned;
        if buf.get(at..at + marker.len()) == Some(marker) {
            return Some(at);
        }
        *scanned += 1;
    }
    None
}

/// `len` random padding bytes, `len` uniform in `0..=MAX_PAD`.
fn random_pad<R: rand::RngCore + ?Sized>(rng: &mut R) -> Vec<u8> {
    let len = (rng.next_u32() % (MAX_PAD as u32 + 1)) as usize;
    let mut pad = vec![0u8; len];
    rng.fill_bytes(&mut pad);
    pad
}
