//! One framed peer connection: dialling and accepting it over TCP or uTP, plain or encrypted
//! (MSE), the BitTorrent handshake, and messages in and out.
//!
//! [`PeerStream`] is the one place bytes become messages and back (as mini-redis's
//! `Connection`): it reads whatever the transport has into one buffer, decodes every whole
//! message without copying block data, and gathers outgoing messages into one buffer written in
//! one go. Every driver (downloads, seeding, metadata fetches, the CLI's probes) uses it.
//!
//! [`dial`] and [`accept`] apply the session's [`Transports`]: the transport that worked with the
//! peer before; else, for a peer on this host, TCP first; else uTP with a head start over TCP
//! (the first to connect wins); the other transport when the peer drops us over one; with
//! encryption `prefer`, MSE first and a plain retry if the peer does not speak it, `require`
//! MSE only, `disable` never. An incoming connection is told plain or encrypted by its first
//! bytes.
//!
//! Invariants: every wait is bounded (connect, MSE, handshake, each write); a frame longer than
//! the stream's limit is refused before anything is buffered for it; bytes read ahead of the
//! BitTorrent handshake (sniffing, MSE) are kept in the receive buffer, never lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::transport::{self, BoxStream, MseFailure, Opening};
use super::utp::{UtpConnectError, UtpHandle};
use crate::mse::Encryption;
use crate::session::CloseKind;
use crate::types::InfoHash;

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
    #[error("the encryption handshake with {addr} failed")]
    Encryption {
        addr: SocketAddr,
        source: MseFailure,
    },
    #[error("{0} connected without encryption, which is required")]
    PlaintextRefused(SocketAddr),
    #[error("{0} asked for encryption, which is disabled")]
    EncryptionRefused(SocketAddr),
    #[error("uTP connection to {addr} failed")]
    Utp {
        addr: SocketAddr,
        source: UtpConnectError,
    },
    #[error("no transport to reach {0} (TCP and uTP are both off)")]
    NoTransport(SocketAddr),
}

impl ConnectionError {
    /// Whether the connection failed in transit (worth trying again later), as opposed to the
    /// peer showing it does not speak the protocol or serve this torrent.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            ConnectionError::Wire { .. }
                | ConnectionError::WrongInfoHash(_)
                | ConnectionError::PlaintextRefused(_)
                | ConnectionError::EncryptionRefused(_)
                | ConnectionError::NoTransport(_)
        )
    }

    /// How this end of a connection counts in the session's dial queue, the same for downloads
    /// and metadata fetches: in transit it may be dialled again after a backoff; a peer that
    /// does not speak the protocol or serve the torrent is not worth trying soon (bans are for
    /// bad data only).
    pub fn close_kind(&self) -> CloseKind {
        if self.is_transient() {
            CloseKind::Transient
        } else {
            CloseKind::Protocol
        }
    }
}

/// A peer connection with its framing buffers.
pub struct PeerStream<S = BoxStream> {
    stream: S,
    addr: SocketAddr,
    decoder: MessageDecoder,
    inbuf: BytesMut,
    outbuf: BytesMut,
}

/// Binds a TCP listener on every address, IPv6 and IPv4 alike when the system allows (a
/// dual-stack socket), else IPv4 only.
pub fn bind_listener(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let dual = (|| {
        let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
        sock.set_only_v6(false)?;
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
        sock.listen(1024)?;
        sock.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(sock.into())
    })();
    match dual {
        Ok(listener) => Ok(listener),
        Err(_) => {
            let sock = std::net::TcpListener::bind(("0.0.0.0", port))?;
            sock.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(sock)
        }
    }
}

/// Opens a TCP connection with [`CONNECT_TIMEOUT`].
pub async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, ConnectionError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnectionError::ConnectTimeout(addr)),
        Ok(Err(source)) => Err(ConnectionError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            // Small request messages must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// Opens a plain TCP connection (for the CLI's probes, which must send exactly their bytes).
pub async fn connect(addr: SocketAddr) -> Result<PeerStream, ConnectionError> {
    let stream = connect_tcp(addr).await?;
    Ok(PeerStream::with_transport(Box::new(stream), addr))
}

/// How long a uTP dial runs alone before TCP is dialled next to it (the first transport to
/// connect wins). uTP goes first, as in libtorrent and Transmission, since it yields to other
/// traffic; the head start keeps a peer that ignores uTP from costing a full uTP timeout.
/// Peers on this host are the exception: they get TCP first (`on_this_host`).
pub const UTP_HEAD_START: Duration = Duration::from_millis(500);

/// Whether `addr` is on this host (loopback, IPv4-mapped included): such a peer is dialled over
/// TCP first. uTP's reason to go first, yielding to other traffic on a shared link, does not
/// apply where there is no link, and there its datagram-at-a-time work costs both ends several
/// times TCP's CPU: a qBittorrent seeder spent 2.0 s of CPU per 256 MiB sent over uTP against
/// 0.45 s over TCP, and downloads from it took up to twice as long as libtorrent's over TCP. A
/// peer with no uTP (rtorrent, aria2) is also spared the head start.
fn on_this_host(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Peer addresses remembered by [`TransportMemory`], at most (then it starts over).
const TRANSPORT_MEMORY_MAX: usize = 16_384;

/// A byte transport to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Utp,
}

/// Which transport each peer last completed a handshake on, so the next dial goes that way
/// first. Shared by every torrent of a session; bounded.
#[derive(Debug, Default)]
pub struct TransportMemory {
    known: std::sync::Mutex<HashMap<SocketAddr, TransportKind>>,
}

impl TransportMemory {
    fn get(&self, addr: SocketAddr) -> Option<TransportKind> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(&addr).copied()
    }

    fn remember(&self, addr: SocketAddr, kind: TransportKind) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= TRANSPORT_MEMORY_MAX && !known.contains_key(&addr) {
            known.clear();
        }
        known.insert(addr, kind);
    }
}

/// How a session reaches peers.
#[derive(Clone, Debug)]
pub struct Transports {
    /// Dial and accept TCP.
    pub tcp: bool,
    /// The process's uTP socket, to dial and accept uTP (`None`: no uTP).
    pub utp: Option<UtpHandle>,
    /// MSE: `prefer`, `require` or `disable`.
    pub encryption: Encryption,
    /// What worked with each peer before.
    pub memory: Arc<TransportMemory>,
    /// Download and upload rate limits shared by every connection made with these transports.
    pub limits: super::limits::RateLimits,
}

impl Default for Transports {
    /// TCP only, plain handshakes.
    fn default() -> Transports {
        Transports {
            tcp: true,
            utp: None,
            encryption: Encryption::Disable,
            memory: Arc::default(),
            limits: Default::default(),
        }
    }
}

impl Transports {
    /// The enabled transport other than `kind`, if any.
    fn other(&self, kind: TransportKind) -> Option<TransportKind> {
        match kind {
            TransportKind::Tcp => self.utp.is_some().then_some(TransportKind::Utp),
            TransportKind::Utp => self.tcp.then_some(TransportKind::Tcp),
        }
    }

    /// Opens a byte stream to `addr` over `kind`.
    async fn open_over(
        &self,
        addr: SocketAddr,
        kind: TransportKind,
    ) -> Result<BoxStream, ConnectionError> {
        match (kind, &self.utp) {
            (TransportKind::Tcp, _) if self.tcp => Ok(Box::new(connect_tcp(addr).await?)),
            (TransportKind::Utp, Some(utp)) => match utp.connect(addr).await {
                Ok(stream) => Ok(Box::new(stream)),
                Err(source) => Err(ConnectionError::Utp { addr, source }),
            },
            _ => Err(ConnectionError::NoTransport(addr)),
        }
    }

    /// Opens a byte stream to `addr`: the way that worked last time, else TCP for a peer on
    /// this host, else uTP with a head start over TCP (the first to connect wins; the other
    /// attempt is dropped). Whichever goes first alone, the other is tried if it fails.
    async fn open(&self, addr: SocketAddr) -> Result<(BoxStream, TransportKind), ConnectionError> {
        let Some(utp) = self.utp.as_ref().filter(|_| self.tcp) else {
            let kind = if self.tcp {
                TransportKind::Tcp
            } else {
                TransportKind::Utp
            };
            return Ok((self.open_over(addr, kind).await?, kind));
        };
        let first = self
            .memory
            .get(addr)
            .or_else(|| on_this_host(addr).then_some(TransportKind::Tcp));
        if let Some(kind) = first {
            return match self.open_over(addr, kind).await {
                Ok(stream) => Ok((stream, kind)),
                Err(e) => {
                    tracing::debug!(%addr, error = %super::error_chain(&e), "trying the other transport");
                    let other = self.other(kind).ok_or(e)?;
                    Ok((self.open_over(addr, other).await?, other))
                }
            };
        }
        let utp_dial = utp.connect(addr);
        tokio::pin!(utp_dial);
        let mut utp_error = None;
        tokio::select! {
            res = &mut utp_dial => match res {
                Ok(stream) => return Ok((Box::new(stream), TransportKind::Utp)),
                Err(source) => utp_error = Some(source),
            },
            () = tokio::time::sleep(UTP_HEAD_START) => {}
        }
        let tcp_dial = connect_tcp(addr);
        tokio::pin!(tcp_dial);
        loop {
            tokio::select! {
                res = &mut utp_dial, if utp_error.is_none() => match res {
                    Ok(stream) => return Ok((Box::new(stream), TransportKind::Utp)),
                    Err(source) => utp_error = Some(source),
                },
                res = &mut tcp_dial => return match res {
                    Ok(stream) => Ok((Box::new(stream), TransportKind::Tcp)),
                    // TCP failed: uTP is the last chance.
                    Err(tcp_error) => match utp_error {
                        Some(_) => Err(tcp_error),
                        None => match utp_dial.await {
                            Ok(stream) => Ok((Box::new(stream), TransportKind::Utp)),
                            Err(_) => Err(tcp_error),
                        },
                    },
                },
            }
        }
    }
}

/// Whether a failure over one transport says the peer may not serve it (closed or reset our
/// connection before the handshake), so the other transport is worth a try.
fn transport_refused(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::Closed(_)
            | ConnectionError::Io { .. }
            | ConnectionError::Encryption { .. }
    )
}

/// Dials `addr` and exchanges BitTorrent handshakes (inside MSE unless encryption is off; with
/// `prefer`, a peer that does not speak MSE is dialled again in plain). A peer that drops us
/// over one transport is tried over the other; the transport that worked is remembered.
///
/// `v2_alias` is a hybrid torrent's truncated v2 hash: a peer may answer our handshake (with
/// the v1 hash and the BEP 52 upgrade bit) with it, upgrading the connection to v2.
pub async fn dial(
    addr: SocketAddr,
    ours: &Handshake,
    v2_alias: Option<InfoHash>,
    transports: &Transports,
) -> Result<(PeerStream, Handshake), ConnectionError> {
    let ours = &Answerable { ours, v2_alias };
    let (stream, kind) = transports.open(addr).await?;
    let result = match handshake_over(stream, kind, addr, ours, transports).await {
        Err(e) if transport_refused(&e) => match transports.other(kind) {
            Some(other) => {
                tracing::debug!(%addr, error = %super::error_chain(&e), ?other, "trying the other transport");
                let stream = transports.open_over(addr, other).await?;
                handshake_over(stream, other, addr, ours, transports)
                    .await
                    .map(|done| (done, other))
            }
            None => Err(e),
        },
        other => other.map(|done| (done, kind)),
    };
    let (done, kind) = result?;
    transports.memory.remember(addr, kind);
    Ok(done)
}

/// Our handshake, and the other name of the torrent a peer may answer it with.
#[derive(Clone, Copy)]
struct Answerable<'a> {
    ours: &'a Handshake,
    v2_alias: Option<InfoHash>,
}

impl Answerable<'_> {
    fn check(&self, theirs: Handshake, addr: SocketAddr) -> Result<Handshake, ConnectionError> {
        if !self.ours.accepts_answer(&theirs, self.v2_alias) {
            return Err(ConnectionError::WrongInfoHash(addr));
        }
        Ok(theirs)
    }
}

/// The BitTorrent handshake over a fresh stream of `kind`, inside MSE as the policy says.
async fn handshake_over(
    stream: BoxStream,
    kind: TransportKind,
    addr: SocketAddr,
    answerable: &Answerable<'_>,
    transports: &Transports,
) -> Result<(PeerStream, Handshake), ConnectionError> {
    let ours = answerable.ours;
    let stream = if transports.encryption == Encryption::Disable {
        stream
    } else {
        let encrypted = transport::mse_initiate(
            stream,
            ours.info_hash,
            &ours.encode(),
            transports.encryption,
        )
        .await;
        match encrypted {
            Ok((stream, received)) => {
                let mut conn = PeerStream::with_received(stream, addr, &received);
                let theirs = conn.handshake_after_payload().await?;
                return Ok((conn, answerable.check(theirs, addr)?));
            }
            Err(source) if transports.encryption == Encryption::Require => {
                tracing::warn!(%addr, "not connecting: the peer does not complete an encryption handshake, and encryption is required");
                return Err(ConnectionError::Encryption { addr, source });
            }
            Err(e) => {
                tracing::debug!(%addr, error = %super::error_chain(&e), "no encryption; dialling again in plain");
                transports.open_over(addr, kind).await?
            }
        }
    };
    let mut conn = PeerStream::with_transport(stream, addr);
    let theirs = conn.exchange_handshakes(ours).await?;
    Ok((conn, answerable.check(theirs, addr)?))
}

/// Takes an incoming connection: tells plain from encrypted by its first bytes, applies the
/// encryption policy, reads the peer's handshake (refusing other torrents than `ours`), and
/// answers it.
///
/// `v2_alias` is a hybrid torrent's truncated v2 hash: BEP 52 peers of its v2 swarm connect
/// with it, and are answered with it; so are those that connect with the v1 hash and offer
/// the upgrade to v2 (see [`Handshake::answer_to`]). Returns the connection, the peer's
/// handshake and our answer.
pub async fn accept(
    stream: BoxStream,
    addr: SocketAddr,
    ours: &Handshake,
    v2_alias: Option<InfoHash>,
    encryption: Encryption,
) -> Result<(PeerStream, Handshake, Handshake), ConnectionError> {
    let known: Vec<InfoHash> = std::iter::once(ours.info_hash).chain(v2_alias).collect();
    let (mut conn, theirs) = accept_unanswered(stream, addr, &known, encryption).await?;
    if !known.contains(&theirs.info_hash) {
        return Err(ConnectionError::WrongInfoHash(addr));
    }
    let answer = ours.answer_to(&theirs, v2_alias);
    conn.answer_handshake(&answer).await?;
    Ok((conn, theirs, answer))
}

/// The first half of [`accept`] for a listener shared by several torrents: sniffs plain or
/// encrypted, applies the policy (an MSE peer must name one of `known`), and reads the peer's
/// handshake without answering it, so the caller can route the connection by the info hash
/// it names and the torrent answers with [`PeerStream::answer_handshake`].
pub async fn accept_unanswered(
    mut stream: BoxStream,
    addr: SocketAddr,
    known: &[crate::types::InfoHash],
    encryption: Encryption,
) -> Result<(PeerStream, Handshake), ConnectionError> {
    let sniffed = tokio::time::timeout(HANDSHAKE_TIMEOUT, transport::sniff(&mut stream))
        .await
        .map_err(|_| ConnectionError::HandshakeTimeout(addr))?
        .map_err(|source| ConnectionError::Io { addr, source })?;
    let Some((opening, first)) = sniffed else {
        return Err(ConnectionError::Closed(addr));
    };
    let (stream, received, found) = match opening {
        Opening::Plain if !encryption.allows_plaintext_handshake() => {
            tracing::warn!(%addr, "refusing a plaintext connection from the peer: encryption is required");
            return Err(ConnectionError::PlaintextRefused(addr));
        }
        Opening::Plain => (stream, first, None),
        Opening::Encrypted if encryption == Encryption::Disable => {
            return Err(ConnectionError::EncryptionRefused(addr));
        }
        Opening::Encrypted => {
            let (stream, found, received) =
                transport::mse_accept(stream, &first, known, encryption)
                    .await
                    .map_err(|source| ConnectionError::Encryption { addr, source })?;
            (stream, received, Some(found))
        }
    };
    let mut conn = PeerStream::with_received(stream, addr, &received);
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.read_handshake())
        .await
        .map_err(|_| ConnectionError::HandshakeTimeout(addr))??;
    // Inside MSE the handshake must name the torrent the encryption was keyed with.
    if found.is_some_and(|found| found != theirs.info_hash) {
        return Err(ConnectionError::WrongInfoHash(addr));
    }
    Ok((conn, theirs))
}

impl<S: AsyncRead + AsyncWrite + Unpin> PeerStream<S> {
    /// Wraps any byte stream to `addr`.
    pub fn with_transport(stream: S, addr: SocketAddr) -> PeerStream<S> {
        PeerStream::with_received(stream, addr, &[])
    }

    /// Wraps a byte stream whose first bytes (`received`) were already read (sniffing, MSE).
    pub fn with_received(stream: S, addr: SocketAddr, received: &[u8]) -> PeerStream<S> {
        let mut inbuf = BytesMut::with_capacity(64 * 1024);
        inbuf.extend_from_slice(received);
        PeerStream {
            stream,
            addr,
            decoder: MessageDecoder::new(MAX_MESSAGE_LEN),
            inbuf,
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

    /// Reads the peer's 68-byte handshake (through the receive buffer, which may hold its
    /// start already).
    async fn read_handshake(&mut self) -> Result<Handshake, ConnectionError> {
        while self.inbuf.len() < HANDSHAKE_LEN {
            let n = self
                .stream
                .read_buf(&mut self.inbuf)
                .await
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
        let mut theirs = [0u8; HANDSHAKE_LEN];
        theirs.copy_from_slice(&self.inbuf[..HANDSHAKE_LEN]);
        self.inbuf.advance(HANDSHAKE_LEN);
        Handshake::decode(&theirs).map_err(|source| ConnectionError::Wire {
            addr: self.addr,
            source,
        })
    }

    /// Reads the peer's handshake after ours went out inside MSE's initial payload (the caller
    /// checks the torrent it names).
    async fn handshake_after_payload(&mut self) -> Result<Handshake, ConnectionError> {
        let addr = self.addr;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.read_handshake())
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(addr))?
    }

    /// Sends `ours` and reads the peer's handshake; fails if it names another torrent.
    pub async fn handshake_outgoing(
        &mut self,
        ours: &Handshake,
    ) -> Result<Handshake, ConnectionError> {
        let theirs = self.exchange_handshakes(ours).await?;
        Answerable {
            ours,
            v2_alias: None,
        }
        .check(theirs, self.addr)
    }

    /// Sends `ours` and reads the peer's handshake (the caller checks the torrent it names).
    async fn exchange_handshakes(
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
        tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout(addr))?
    }

    /// Answers the handshake of a peer that connected to us (read by
    /// [`accept_unanswered`]) with `ours`.
    pub async fn answer_handshake(&mut self, ours: &Handshake) -> Result<(), ConnectionError> {
        let addr = self.addr;
        let bytes = ours.encode();
        let write = self.stream.write_all(&bytes);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, write).await {
            Err(_) => Err(ConnectionError::HandshakeTimeout(addr)),
            Ok(Err(e)) => Err(self.io(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Waits for bytes, then appends every whole message received to `out` (at least one
    /// read; possibly no whole message yet). Cancel-safe: nothing read is lost if the future
    /// is dropped.
    pub async fn read_messages(&mut self, out: &mut Vec<Message>) -> Result<(), ConnectionError> {
        // Messages that arrived with the handshake (or past an earlier decode) are already
        // whole in the buffer: hand them out before waiting on a peer that may wait on us.
        let before = out.len();
        self.decode_buffered(out)?;
        if out.len() > before {
            return Ok(());
        }
        let n = self
            .stream
            .read_buf(&mut self.inbuf)
            .await
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(ConnectionError::Closed(self.addr));
        }
        self.decode_buffered(out)
    }

    /// Appends every whole message in the receive buffer to `out`.
    fn decode_buffered(&mut self, out: &mut Vec<Message>) -> Result<(), ConnectionError> {
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
        let write = async {
            self.stream.write_all(&self.outbuf).await?;
            // An encrypting transport may hold the tail of what it took.
            self.stream.flush().await
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, write)
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

/// Opens a plain TCP connection to `addr` and exchanges handshakes for `info_hash`.
pub async fn connect_and_handshake(
    addr: SocketAddr,
    ours: &Handshake,
) -> Result<(PeerStream, Handshake), ConnectionError> {
    let mut stream = connect(addr).await?;
    let theirs = stream.handshake_outgoing(ours).await?;
    Ok((stream, theirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{InfoHash, PeerId};

    /// Downloads and metadata fetches count a connection's end alike: a peer of another
    /// torrent is set aside, not banned (the metadata fetch banned it), and a reset is retried.
    #[test]
    fn close_kinds_leave_bans_to_bad_data() {
        let addr: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        assert_eq!(
            ConnectionError::WrongInfoHash(addr).close_kind(),
            CloseKind::Protocol
        );
        assert_eq!(
            ConnectionError::PlaintextRefused(addr).close_kind(),
            CloseKind::Protocol
        );
        let reset = ConnectionError::Io {
            addr,
            source: std::io::ErrorKind::ConnectionReset.into(),
        };
        assert_eq!(reset.close_kind(), CloseKind::Transient);
        assert_eq!(
            ConnectionError::Closed(addr).close_kind(),
            CloseKind::Transient
        );
    }

    /// A peer that sends its handshake and first messages in one burst, then waits for us:
    /// the messages that came with the handshake must be handed out without another read
    /// (aria2 does this after an MSE handshake).
    #[tokio::test]
    async fn messages_that_came_with_the_handshake_are_not_stuck_in_the_buffer() {
        let hash = InfoHash([5; 20]);
        let mut burst = Handshake::new(hash, PeerId([2; 20])).encode().to_vec();
        burst.extend_from_slice(&[0, 0, 0, 1, 2]); // interested
        burst.extend_from_slice(&[0, 0, 0, 5, 4, 0, 0, 0, 7]); // have 7
        let (ours_end, _theirs_end) = tokio::io::duplex(1024);
        let addr: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        let mut conn = PeerStream::with_received(ours_end, addr, &burst);
        let theirs = conn.handshake_after_payload().await.unwrap();
        assert_eq!((theirs.peer_id, theirs.info_hash), (PeerId([2; 20]), hash));
        let mut out = Vec::new();
        // The other end never writes again: a read here would hang the test.
        tokio::time::timeout(Duration::from_secs(5), conn.read_messages(&mut out))
            .await
            .expect("buffered messages are returned without waiting for more bytes")
            .unwrap();
        assert_eq!(out, vec![Message::Interested, Message::Have(7)]);
    }

    #[test]
    fn loopback_addresses_are_on_this_host() {
        for local in [
            "127.0.0.1:1",
            "127.9.8.7:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(on_this_host(local.parse().unwrap()), "{local}");
        }
        for remote in [
            "10.77.0.1:1",
            "192.168.1.2:1",
            "[::ffff:10.0.0.1]:1",
            "[2001:db8::1]:1",
        ] {
            assert!(!on_this_host(remote.parse().unwrap()), "{remote}");
        }
    }

    /// A peer on this host that takes both transports (qBittorrent) is reached over TCP: with
    /// uTP's head start, uTP won every time on loopback, at several times TCP's CPU.
    #[tokio::test]
    async fn a_peer_on_this_host_is_dialled_over_tcp_first() {
        let udp_options = |port| super::super::udp::UdpOptions {
            port,
            dht: None,
            utp: true,
        };
        let theirs = super::super::udp::start(udp_options(0)).await.unwrap();
        let their_utp = theirs.utp.expect("uTP on");
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", theirs.port))
            .await
            .unwrap();
        let addr = tcp.local_addr().unwrap();
        // Both transports accept (and keep) whatever comes.
        tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = tcp.accept().await {
                kept.push(s);
            }
        });
        tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Some((s, _)) = their_utp.accept().await {
                kept.push(s);
            }
        });
        let ours = super::super::udp::start(udp_options(0)).await.unwrap();
        let transports = Transports {
            utp: ours.utp,
            ..Transports::default()
        };
        transports
            .open_over(addr, TransportKind::Utp)
            .await
            .expect("the peer takes uTP too");
        let (_stream, kind) = transports.open(addr).await.unwrap();
        assert_eq!(kind, TransportKind::Tcp);
    }
}
