//! The byte streams a peer connection runs over: TCP or uTP, plain or wrapped in Message
//! Stream Encryption, behind one boxed type ([`BoxStream`]) so the peer protocol above does not
//! care.
//!
//! [`MseStream`] applies an established MSE session's RC4 ciphers to everything read and
//! written; [`mse_initiate`] and [`mse_accept`] drive the core's sans-IO handshakes over any
//! stream; [`sniff`] tells a plain BitTorrent handshake from an MSE one on an incoming
//! connection by its first bytes.
//!
//! Invariants: every handshake wait is bounded (the machines' own deadline); bytes read past a
//! handshake are never lost (they are returned to the caller, decrypted, to start the peer
//! stream with); a write is acknowledged only once its bytes went through the cipher, so the
//! keystream and the stream never drift apart.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::mse::{
    is_plaintext_handshake, Encryption, MseError, MseEvent, MseHandshake, MseInitiator,
    MseResponder, StreamCipher,
};
use crate::types::InfoHash;

/// A stream a peer connection can run over.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Any peer transport, boxed.
pub type BoxStream = Box<dyn AsyncStream>;

/// Largest plaintext taken from one write before it is encrypted and sent.
const MAX_ENCRYPT_CHUNK: usize = 256 * 1024;

/// A stream whose bytes pass through MSE's RC4 (or, if the peer chose plaintext, through
/// nothing).
pub struct MseStream {
    inner: BoxStream,
    send: StreamCipher,
    recv: StreamCipher,
    /// Encrypted bytes accepted from the caller and not yet written.
    out: Vec<u8>,
    out_pos: usize,
}

impl MseStream {
    fn new(inner: BoxStream, send: StreamCipher, recv: StreamCipher) -> MseStream {
        MseStream {
            inner,
            send,
            recv,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Writes out what is buffered; `Ready(Ok)` once nothing is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for MseStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.recv.apply(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

impl AsyncWrite for MseStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.send.is_plaintext() && this.out.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let n = data.len().min(MAX_ENCRYPT_CHUNK);
        this.out.extend_from_slice(&data[..n]);
        this.send.apply(&mut this.out);
        // The bytes are ours now (the keystream moved on): report them written and push them
        // out as far as the socket takes them.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// Why an MSE handshake did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MseFailure {
    #[error("the encryption handshake failed")]
    Handshake(#[source] MseError),
    #[error("the connection broke during the encryption handshake")]
    Io(#[source] io::Error),
    #[error("the peer closed the connection during the encryption handshake")]
    Closed,
}

/// Runs a handshake over `stream` to its end; returns the established session.
async fn drive(
    machine: &mut MseHandshake,
    stream: &mut BoxStream,
    first: &[u8],
) -> Result<crate::mse::Established, MseFailure> {
    if !first.is_empty() {
        machine.handle_input(Instant::now(), first);
    }
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(bytes) = machine.poll_transmit() {
            stream.write_all(&bytes).await.map_err(MseFailure::Io)?;
        }
        match machine.poll_event() {
            Some(MseEvent::Established(est)) => {
                // The responder's last message is queued with the event: it goes first.
                while let Some(bytes) = machine.poll_transmit() {
                    stream.write_all(&bytes).await.map_err(MseFailure::Io)?;
                }
                return Ok(*est);
            }
            Some(MseEvent::Failed(e)) => return Err(MseFailure::Handshake(e)),
            None => {}
        }
        let Some(deadline) = machine.poll_timeout() else {
            return Err(MseFailure::Handshake(MseError::Timeout));
        };
        let read = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            stream.read(&mut buf),
        )
        .await;
        match read {
            Ok(Ok(0)) => return Err(MseFailure::Closed),
            Ok(Ok(n)) => machine.handle_input(Instant::now(), buf.get(..n).unwrap_or(&buf)),
            Ok(Err(e)) => return Err(MseFailure::Io(e)),
            Err(_) => machine.handle_timeout(Instant::now()),
        }
    }
}

/// Encrypts an outgoing connection: MSE with `initial_payload` (our BitTorrent handshake)
/// carried inside. Returns the encrypted stream and the peer's stream bytes already read and
/// decrypted (the start of its BitTorrent handshake, usually).
pub async fn mse_initiate(
    mut stream: BoxStream,
    info_hash: InfoHash,
    initial_payload: &[u8],
    policy: Encryption,
) -> Result<(BoxStream, Vec<u8>), MseFailure> {
    let mut machine = MseHandshake::Initiator(
        MseInitiator::new(
            Instant::now(),
            info_hash,
            initial_payload,
            policy,
            &mut rand::thread_rng(),
        )
        .map_err(MseFailure::Handshake)?,
    );
    let est = drive(&mut machine, &mut stream, &[]).await?;
    let stream: BoxStream = Box::new(MseStream::new(stream, est.send_cipher, est.recv_cipher));
    Ok((stream, est.received))
}

/// Answers an incoming MSE handshake whose first bytes (`first`) were already read, for one of
/// the `served` torrents. Returns the stream, the torrent asked for, and the peer's stream
/// bytes already read and decrypted (its initial payload, normally its BitTorrent handshake,
/// then whatever followed).
pub async fn mse_accept(
    mut stream: BoxStream,
    first: &[u8],
    served: &[InfoHash],
    policy: Encryption,
) -> Result<(BoxStream, InfoHash, Vec<u8>), MseFailure> {
    let mut machine = MseHandshake::Responder(
        MseResponder::new(Instant::now(), served, policy, &mut rand::thread_rng())
            .map_err(MseFailure::Handshake)?,
    );
    let est = drive(&mut machine, &mut stream, first).await?;
    let mut received = est.initial_payload;
    received.extend_from_slice(&est.received);
    let info_hash = est.info_hash;
    let stream: BoxStream = Box::new(MseStream::new(stream, est.send_cipher, est.recv_cipher));
    Ok((stream, info_hash, received))
}

/// How an incoming connection begins.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// A plain BitTorrent handshake.
    Plain,
    /// An MSE handshake.
    Encrypted,
}

/// Reads the first bytes of an incoming connection until they tell a plain BitTorrent
/// handshake from an MSE one (at most 20 bytes); returns which, and the bytes read. `None` if
/// the peer closed first.
pub async fn sniff(stream: &mut BoxStream) -> io::Result<Option<(Opening, Vec<u8>)>> {
    let mut first = Vec::with_capacity(20);
    let mut byte = [0u8; 20];
    loop {
        let want = 20 - first.len();
        let n = stream.read(&mut byte[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        first.extend_from_slice(&byte[..n]);
        match is_plaintext_handshake(&first) {
            Some(true) => return Ok(Some((Opening::Plain, first))),
            Some(false) => return Ok(Some((Opening::Encrypted, first))),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Handshake;

    /// An MSE handshake over an in-memory pipe, then bytes both ways through the ciphers.
    #[tokio::test]
    async fn encrypted_streams_carry_the_handshake_and_data_both_ways() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let hash = InfoHash([3; 20]);
        let ours = Handshake::new(hash, crate::types::PeerId([1; 20])).encode();
        let initiator = tokio::spawn(async move {
            let (mut s, received) = mse_initiate(Box::new(a), hash, &ours, Encryption::Require)
                .await
                .unwrap();
            s.write_all(b"after the handshake").await.unwrap();
            s.flush().await.unwrap();
            let mut back = vec![0u8; 4];
            s.read_exact(&mut back).await.unwrap();
            (received, back)
        });
        let mut b: BoxStream = Box::new(b);
        let (opening, first) = sniff(&mut b).await.unwrap().unwrap();
        assert_eq!(opening, Opening::Encrypted);
        let (mut s, found, mut received) =
            mse_accept(b, &first, &[InfoHash([9; 20]), hash], Encryption::Prefer)
                .await
                .unwrap();
        assert_eq!(found, hash);
        assert_eq!(
            &received[..68],
            &ours[..],
            "the initial payload is our handshake"
        );
        received.drain(..68);
        let mut rest = vec![0u8; b"after the handshake".len() - received.len()];
        s.read_exact(&mut rest).await.unwrap();
        received.extend_from_slice(&rest);
        assert_eq!(received, b"after the handshake");
        s.write_all(b"pong").await.unwrap();
        s.flush().await.unwrap();
        let (_, back) = initiator.await.unwrap();
        assert_eq!(back, b"pong");
    }

    #[tokio::test]
    async fn plain_handshakes_are_told_apart_from_mse() {
        let (mut a, b) = tokio::io::duplex(1024);
        let hs = Handshake::new(InfoHash([3; 20]), crate::types::PeerId([1; 20])).encode();
        // Dribbled one byte at a time: the decision waits for the 20th.
        tokio::spawn(async move {
            for byte in hs {
                a.write_all(&[byte]).await.unwrap();
            }
            a
        });
        let mut b: BoxStream = Box::new(b);
        let (opening, first) = sniff(&mut b).await.unwrap().unwrap();
        assert_eq!(opening, Opening::Plain);
        assert_eq!(first.len(), 20);
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_during_mse_is_an_error() {
        let (a, b) = tokio::io::duplex(1024);
        drop(b);
        let err = mse_initiate(Box::new(a), InfoHash([3; 20]), &[], Encryption::Prefer)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, MseFailure::Io(_) | MseFailure::Closed),
            "{err}"
        );
    }
}
