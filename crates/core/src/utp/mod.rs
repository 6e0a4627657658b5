//! uTP, the Micro Transport Protocol (BEP 29): reliable, ordered byte streams over UDP with
//! LEDBAT congestion control, as a sans-IO state machine.
//!
//! One [`UtpSocket`] serves one UDP socket: the driver feeds it every datagram received
//! ([`UtpSocket::handle_datagram`], which says which ones are not uTP so that the DHT can have
//! them), sends what [`UtpSocket::poll_transmit`] produces, calls [`UtpSocket::handle_timeout`]
//! at [`UtpSocket::poll_timeout`], and reacts to [`UtpSocket::poll_event`]. The application
//! side is [`UtpSocket::connect`], [`UtpSocket::write`], [`UtpSocket::read`],
//! [`UtpSocket::close`] and [`UtpSocket::reset`].
//!
//! Invariants: no clock or entropy is read here (times and a seed come in); hostile datagrams
//! never panic; every table and buffer is capped ([`UtpConfig`] says the caps), whatever
//! windows or sequence numbers a peer announces.
//!
//! Speed: bytes are copied once into the send buffer and once from it into each datagram, once
//! from a datagram into the receive buffer and once out to the application; no allocation per
//! packet once the buffers have grown. Acks go out when the driver drains
//! [`UtpSocket::poll_transmit`], so a driver that handles a whole batch of datagrams first
//! sends one ack per connection per batch. The driver should give the UDP socket a large
//! receive buffer (`SO_RCVBUF`, several MiB) and keep [`UtpConfig::recv_window_total`] within
//! it: on loopback a burst that overflows the kernel buffer is lost, and the sender's recovery
//! costs far more than a smaller window.
//!
//! Packet size: a fixed payload of [`UtpConfig::max_payload`] bytes (1400 by default, so a data
//! datagram with a 32-byte selective ack stays under 1472 bytes, the IPv4 Ethernet limit) and
//! no path-MTU discovery: it fits every ordinary path, and on loopback the per-packet cost it
//! saves would matter less than the window.

mod buffers;
mod congestion;
mod connection;
pub mod packet;
mod socket;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod packet_tests;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod socket_tests;

use core::net::SocketAddr;
use std::time::Duration;

pub use buffers::REORDER_PACKETS;
pub use connection::MAX_PACKETS_IN_FLIGHT;
pub use socket::{DatagramKind, UtpSocket};

/// The smallest receive window a connection announces, however many share the total.
pub const MIN_WINDOW_SHARE: usize = 16 * 1024;

/// Settings of a [`UtpSocket`] and its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtpConfig {
    /// Payload bytes per data packet (clamped to 128..=65400). Default 1400.
    pub max_payload: usize,
    /// Per-connection send buffer: written but unacknowledged bytes (at least two packets).
    /// It also caps the congestion window. Default 1 MiB.
    pub send_buffer: usize,
    /// Per-connection receive buffer: bytes not yet read plus early packets (at least two
    /// packets); the window we advertise is what is left of it, within the connection's share
    /// of [`UtpConfig::recv_window_total`]. Default 1 MiB.
    pub recv_buffer: usize,
    /// The receive windows of all connections together, at most: each connection that
    /// received data in the last second announces an equal share of it (never less than
    /// [`MIN_WINDOW_SHARE`]). Bursts from all peers land in the one UDP socket's kernel buffer
    /// before they are read, and a datagram that does not fit is lost, which costs far more
    /// than a smaller window: keep this below what the socket's `SO_RCVBUF` holds (the kernel
    /// charges about 2.3 KiB per 1.4 KiB datagram, so about half of it). Default 1 MiB, for a
    /// 2 MiB or larger buffer.
    pub recv_window_total: usize,
    /// Connections at most, incoming and outgoing. Default 1024.
    pub max_connections: usize,
    /// Incoming connections whose peer has not yet sent anything after its SYN, at most;
    /// further SYNs are refused with a RESET. Default 64.
    pub accept_backlog: usize,
    /// Accept incoming connections at all. Default true.
    pub accept_incoming: bool,
    /// Time for the handshake to finish (SYN retransmitted after 1 s, 2 s, 4 s...), and for an
    /// incoming connection to be confirmed. Default 6 s.
    pub connect_timeout: Duration,
    /// A connection that received nothing for this long is closed. Default 5 min.
    pub idle_timeout: Duration,
    /// Smallest retransmission timeout (BEP 29: 500 ms).
    pub min_rto: Duration,
    /// Retransmission timeouts in a row after which the peer is declared dead (the timeout
    /// doubles each time). Default 5.
    pub max_retransmits: u32,
    /// LEDBAT's queueing-delay target (BEP 29: 100 ms).
    pub target_delay: Duration,
    /// Hold a small packet while another small one is unacknowledged (Nagle). Default true.
    pub nagle: bool,
}

impl Default for UtpConfig {
    fn default() -> UtpConfig {
        UtpConfig {
            max_payload: 1400,
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            recv_window_total: 1 << 20,
            max_connections: 1024,
            accept_backlog: 64,
            accept_incoming: true,
            connect_timeout: Duration::from_secs(6),
            idle_timeout: Duration::from_secs(300),
            min_rto: Duration::from_millis(500),
            max_retransmits: 5,
            target_delay: Duration::from_millis(100),
            nagle: true,
        }
    }
}

impl UtpConfig {
    /// The settings with every value within its bounds.
    fn clamped(mut self) -> UtpConfig {
        self.max_payload = self.max_payload.clamp(128, 65_400);
        self.send_buffer = self.send_buffer.max(2 * self.max_payload);
        self.recv_buffer = self
            .recv_buffer
            .clamp(2 * self.max_payload, u32::MAX as usize);
        self.recv_window_total = self.recv_window_total.max(MIN_WINDOW_SHARE);
        self.max_connections = self.max_connections.max(1);
        self.min_rto = self.min_rto.max(Duration::from_millis(1));
        self.target_delay = self.target_delay.max(Duration::from_micros(1));
        self
    }
}

/// The application's handle on a connection. Handles are never reused within a socket, so a
/// stale one is simply unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent FIN and every byte before it has been read.
    PeerClosed,
    /// The peer sent RESET (also its refusal of our SYN).
    Reset,
    /// No answer to our SYN (or no confirmation of the peer's) within the connect timeout.
    ConnectTimeout,
    /// Our packets went unacknowledged through [`UtpConfig::max_retransmits`] timeouts.
    TimedOut,
    /// Nothing received for [`UtpConfig::idle_timeout`].
    IdleTimeout,
}

/// What happened, per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UtpEvent {
    /// Our connection's handshake finished.
    Connected(ConnectionId),
    /// A peer opened a connection to us; it can be written to at once.
    Incoming {
        /// The new connection.
        conn: ConnectionId,
        /// Who opened it.
        from: SocketAddr,
    },
    /// Bytes arrived since the last `Readable` was polled: read until `read` returns 0.
    Readable(ConnectionId),
    /// A write was cut short earlier and at least half the send buffer is free again.
    Writable(ConnectionId),
    /// The connection ended; the handle is dead (reads and writes return 0). Not emitted after
    /// the application's own `close` or `reset`.
    Closed {
        /// The connection.
        conn: ConnectionId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a command failed.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum UtpError {
    /// [`UtpConfig::max_connections`] connections are open.
    #[error("too many uTP connections")]
    TooManyConnections,
    /// Every connection id towards that peer is taken.
    #[error("no free uTP connection id for this peer")]
    NoConnectionId,
}

/// A connection's counters and windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Congestion window, bytes.
    pub cwnd: usize,
    /// Still in slow start.
    pub slow_start: bool,
    /// Payload sent, neither acknowledged nor declared lost.
    pub bytes_in_flight: usize,
    /// Packets sent and not yet cumulatively acknowledged.
    pub packets_in_flight: usize,
    /// The window the peer advertised last.
    pub peer_window: usize,
    /// Smoothed round-trip time, once measured.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout (with backoff).
    pub rto: Duration,
    /// Queueing delay behind our packets, as last measured by LEDBAT.
    pub queuing_delay: Option<Duration>,
    /// Bytes in the send buffer.
    pub send_buffered: usize,
    /// In-order bytes waiting for `read`.
    pub recv_buffered: usize,
    /// Payload bytes held out of order.
    pub reorder_buffered: usize,
    /// Packets held out of order.
    pub reorder_packets: usize,
    /// Datagrams sent.
    pub packets_sent: u64,
    /// Packets accepted.
    pub packets_received: u64,
    /// Data, SYN and FIN packets sent again.
    pub retransmits: u64,
}
