//! One framed peer connection: connecting, the BitTorrent handshake, and messages in and out.
//!
//! [`PeerStream`] is the one place bytes become messages and back (as mini-redis's
//! `Connection`): it reads whatever the socket has into one buffer, decodes every whole message
//! without copying block data, and gathers outgoing messages into one buffer written in one
//! go. Every driver (downloads, seeding, metadata fetches, the CLI's probes) uses it.
//!
//! Invariants: every wait is bounded (connect, handshake, each write); a frame longer than the
//! stream's limit is refused before anything is buffered for it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::handshake::HANDSHAKE_LEN;
use crate::wire::message::MAX_MESSAGE_LEN;
use crate::wire::{Handshake, Message, MessageDecoder, WireError};

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write to a peer may block before the peer is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the remote side may take to answer our handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connecting to {addr} failed")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    #[error("connection to {addr} failed")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} sent bytes that are not the peer protocol")]
    Wire { addr: SocketAddr, source: WireError },
    #[error("{0} answered for another torrent")]
    WrongInfoHash(SocketAddr),
    #[error("{0} closed the connection")]
    Closed(SocketAddr),
    #[error("{0} stopped reading what we send")]
    WriteTimeout(SocketAddr),
}

impl ConnectionError {
    /// Whether the connection failed in transit (worth trying again later), as opposed to the
    /// peer showing it does not speak the protocol or serve this torrent.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            ConnectionError::Wire { .. } | ConnectionError::WrongInfoHash(_)
        )
    }
}

/// A peer connection with its framing buffers.
#[derive(Debug)]
pub struct PeerStream<S = TcpStream> {
    stream: S,
    addr: SocketAddr,
    decoder: MessageDecoder,
    inbuf: BytesMut,
    outbuf: BytesMut,
}

/// Opens a TCP connection with [`CONNECT_TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> Result<PeerStream, ConnectionError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnectionError::ConnectTimeout(addr)),
        Ok(Err(source)) => Err(ConnectionError::Connect { addr, source }),
        Ok(Ok(stream)) => Ok(PeerStream::new(stream, addr)),
    }
}

impl PeerStream<TcpStream> {
    /// Wraps an open TCP connection.
    pub fn new(stream: TcpStream, addr: SocketAddr) -> PeerStream {
        // Small request messages must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        PeerStream::with_transport(stream, addr)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerStream<S> {
    /// Wraps any byte stream to `addr`.
    pub fn with_transport(stream: S, addr: SocketAddr) -> PeerStream<S> {
        PeerStream {
            stream,
            addr,
            decoder: MessageDecoder::new(MAX_MESSAGE_LEN),
            inbuf: BytesMut::with_capacity(64 * 1024),
            outbuf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts frames up to `max_len` bytes from now on.
    pub fn set_max_message_len(&mut self, max_len: u32) {
        self.decoder = MessageDecoder::new(max_len);
    }

    fn io(&self, source: std::io::Error) -> ConnectionError {
        ConnectionError::Io {
            addr: self.addr,
            source,
        }
    }

    async fn read_handshake(&mut self) -> Result<Handshake, ConnectionError> {
        let mut theirs = [0u8; HANDSHAKE_LEN];
        self.stream
            .read_exact(&mut theirs)
            .await
            .map_err(|e| self.io(e))?;
        Handshake::decode(&theirs).map_err(|source| ConnectionError::Wire {
            addr: self.addr,
            source,
        })
    }

    /// Sends `ours` and reads the peer's handshake; fails if it names another torrent.
    pub async fn handshake_outgoing(
        &mut self,
        ours: &Handshake,
    ) -> Result<Handshake, ConnectionError> {
        let addr = self.addr;
        let exchange = async {
            self.stream
                .write_all(&ours.encode())
                .await
                .map_err(|e| self.io(e))?;
            self.read_handshake().await
        };
        let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(addr))??;
        if theirs.info_hash != ours.info_hash {
            return Err(ConnectionError::WrongInfoHash(addr));
        }
        Ok(theirs)
    }

    /// Reads the handshake of a peer that connected to us; refuses another torrent's info
    /// hash (closing without answering), then sends `ours`.
    pub async fn handshake_incoming(
        &mut self,
        ours: &Handshake,
    ) -> Result<Handshake, ConnectionError> {
        let addr = self.addr;
        let exchange = async {
            let theirs = self.read_handshake().await?;
            if theirs.info_hash != ours.info_hash {
                return Err(ConnectionError::WrongInfoHash(addr));
            }
            self.stream
                .write_all(&ours.encode())
                .await
                .map_err(|e| self.io(e))?;
            Ok(theirs)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(addr))?
    }

    /// Waits for bytes, then appends every whole message received to `out` (at least one
    /// read; possibly no whole message yet). Cancel-safe: nothing read is lost if the future
    /// is dropped.
    pub async fn read_messages(&mut self, out: &mut Vec<Message>) -> Result<(), ConnectionError> {
        let n = self
            .stream
            .read_buf(&mut self.inbuf)
            .await
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ConnectionError::Closed(self.addr));
        }
        while let Some(msg) =
            self.decoder
                .decode(&mut self.inbuf)
                .map_err(|source| ConnectionError::Wire {
                    addr: self.addr,
                    source,
                })?
        {
            out.push(msg);
        }
        if self.inbuf.capacity() - self.inbuf.len() < 32 * 1024 {
            self.inbuf.reserve(256 * 1024);
        }
        Ok(())
    }

    /// Reads until one whole message is in.
    pub async fn read_message(&mut self) -> Result<Message, ConnectionError> {
        loop {
            if let Some(msg) =
                self.decoder
                    .decode(&mut self.inbuf)
                    .map_err(|source| ConnectionError::Wire {
                        addr: self.addr,
                        source,
                    })?
            {
                return Ok(msg);
            }
            let n = self
                .stream
                .read_buf(&mut self.inbuf)
                .await
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(ConnectionError::Closed(self.addr));
            }
        }
    }

    /// Queues `msg`; it goes out with the next [`PeerStream::flush`].
    pub fn queue(&mut self, msg: &Message) {
        msg.encode(&mut self.outbuf);
    }

    /// The outgoing buffer, for callers that append encoded bytes themselves (block uploads).
    pub fn outgoing(&mut self) -> &mut BytesMut {
        &mut self.outbuf
    }

    /// Writes everything queued, within [`WRITE_TIMEOUT`]: a peer that stops reading must not
    /// hold the connection (and its slot) forever.
    pub async fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.outbuf.is_empty() {
            return Ok(());
        }
        let addr = self.addr;
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&self.outbuf))
            .await
            .map_err(|_| ConnectionError::WriteTimeout(addr))?;
        written.map_err(|e| self.io(e))?;
        self.outbuf.clear();
        Ok(())
    }

    /// Queues `msg` and writes it at once.
    pub async fn send(&mut self, msg: &Message) -> Result<(), ConnectionError> {
        self.queue(msg);
        self.flush().await
    }
}

/// Opens a TCP connection to `addr` and exchanges handshakes for `info_hash`.
pub async fn connect_and_handshake(
    addr: SocketAddr,
    ours: &Handshake,
) -> Result<(PeerStream, Handshake), ConnectionError> {
    let mut stream = connect(addr).await?;
    let theirs = stream.handshake_outgoing(ours).await?;
    Ok((stream, theirs))
}
