//! The process's UDP endpoint: one socket on the peer listener's port number that carries uTP
//! connections and the DHT, told apart by their first bytes (a uTP header's first byte is its
//! version and type; a KRPC message starts with `d`).
//!
//! One task owns the socket. It reads a batch of datagrams, gives each to the uTP socket and
//! the others to the DHT, then sends what both queued, wakes the streams whose connections
//! became readable or writable, hands incoming uTP connections to whoever accepts them, and
//! runs both machines' timers. Streams kick it after they write.
//!
//! Invariants: the task never holds the uTP lock across an await; a batch is bounded
//! ([`MAX_BATCH`]); a datagram longer than [`MAX_DATAGRAM`] is cut (neither protocol sends
//! one); the kernel receive buffer is raised so loopback bursts are not lost, and uTP's total
//! window is kept within it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

use super::dht::{self, DhtHandle, DhtNode, DhtOptions};
use super::utp::{UtpHandle, UtpShared, UtpState, UtpStream, Waiters};
use crate::utp::{DatagramKind, UtpConfig, UtpEvent, UtpSocket};

/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams read in one go before sending what they caused.
const MAX_BATCH: usize = 64;
/// Kernel receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 4 << 20;
/// Incoming uTP connections waiting to be accepted.
const ACCEPT_QUEUE: usize = 64;

/// What to run on the endpoint.
#[derive(Clone, Debug, Default)]
pub struct UdpOptions {
    /// The port (the peer listener's; 0: any).
    pub port: u16,
    /// Run a DHT node.
    pub dht: Option<DhtOptions>,
    /// Speak uTP.
    pub utp: bool,
}

/// The endpoint's services.
#[derive(Debug, Default)]
pub struct Udp {
    pub port: u16,
    pub dht: Option<DhtHandle>,
    pub utp: Option<UtpHandle>,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the UDP socket (DHT and uTP) on port {port}")]
pub struct UdpStartError {
    port: u16,
    source: std::io::Error,
}

fn bind(port: u16) -> std::io::Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // Best effort: a smaller buffer only means a smaller uTP window (set from what we got).
    let _ = sock.set_recv_buffer_size(RECV_BUFFER);
    sock.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Starts the endpoint on `0.0.0.0:port` (the given port, or any if it is taken for UDP).
pub async fn start(opts: UdpOptions) -> Result<Udp, UdpStartError> {
    if opts.dht.is_none() && !opts.utp {
        return Ok(Udp::default());
    }
    let std_socket = match bind(opts.port) {
        Ok(s) => s,
        Err(e) if opts.port != 0 => {
            tracing::warn!(port = opts.port, error = %e, "UDP port taken; using another");
            bind(0).map_err(|source| UdpStartError { port: 0, source })?
        }
        Err(source) => return Err(UdpStartError { port: 0, source }),
    };
    let rcvbuf = socket2::SockRef::from(&std_socket)
        .recv_buffer_size()
        .unwrap_or(1 << 20);
    let socket =
        UdpSocket::from_std(std_socket).map_err(|source| UdpStartError { port: 0, source })?;
    let port = socket.local_addr().map_or(opts.port, |a| a.port());
    let (dht_node, dht_handle) = match opts.dht {
        Some(d) => {
            let (node, handle) = dht::node(d, port);
            (Some(node), Some(handle))
        }
        None => (None, None),
    };
    let (utp, utp_handle, accept_tx) = if opts.utp {
        // The kernel reports twice what it grants; keep uTP's windows within half of it.
        let config = UtpConfig {
            recv_window_total: (rcvbuf / 2).clamp(64 * 1024, 1 << 20),
            ..UtpConfig::default()
        };
        let shared = Arc::new(UtpShared {
            state: Mutex::new(UtpState {
                socket: UtpSocket::new(Instant::now(), config, rand::random()),
                conns: HashMap::new(),
            }),
            kick: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let handle = UtpHandle {
            shared: shared.clone(),
            incoming: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        (Some(shared), Some(handle), Some(tx))
    } else {
        (None, None, None)
    };
    let endpoint = Endpoint {
        socket,
        dht: dht_node,
        utp,
        accept_tx,
        rx: vec![0u8; MAX_DATAGRAM],
        tx: Vec::with_capacity(2048),
        outgoing: Vec::new(),
    };
    tokio::spawn(endpoint.run());
    Ok(Udp {
        port,
        dht: dht_handle,
        utp: utp_handle,
    })
}

struct Endpoint {
    socket: UdpSocket,
    dht: Option<DhtNode>,
    utp: Option<Arc<UtpShared>>,
    accept_tx: Option<mpsc::Sender<(UtpStream, SocketAddr)>>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Datagrams queued under the uTP lock, sent once it is released.
    outgoing: Vec<(SocketAddr, Vec<u8>)>,
}

impl Endpoint {
    /// Gives one datagram to uTP, or else to the DHT.
    fn dispatch(&mut self, now: Instant, n: usize, from: SocketAddr) {
        let data = self.rx.get(..n).unwrap_or(&self.rx);
        let kind = match &self.utp {
            Some(utp) => utp.lock().socket.handle_datagram(now, from, data),
            None => DatagramKind::NotUtp,
        };
        if kind == DatagramKind::NotUtp {
            if let Some(dht) = &mut self.dht {
                dht.dht.handle_datagram(now, from, data);
            }
        }
    }

    /// Runs uTP's timers and carries out its events; queues its datagrams.
    fn drive_utp(&mut self, now: Instant) {
        let Some(shared) = self.utp.clone() else {
            return;
        };
        // Streams nobody took: dropped only once the lock is released, since dropping a stream
        // takes the same lock to close its connection.
        let mut refused = Vec::new();
        let mut st = shared.lock();
        if st.socket.poll_timeout().is_some_and(|t| t <= now) {
            st.socket.handle_timeout(now);
        }
        while let Some(to) = st.socket.poll_transmit(now, &mut self.tx) {
            self.outgoing.push((to, self.tx.clone()));
        }
        while let Some(event) = st.socket.poll_event() {
            match event {
                UtpEvent::Readable(c) => st.readable(c),
                UtpEvent::Writable(c) => st.writable(c),
                UtpEvent::Connected(c) => st.connected(c),
                UtpEvent::Closed { conn, reason } => st.closed(conn, reason),
                UtpEvent::Incoming { conn, from } => {
                    st.conns.insert(conn, Waiters::default());
                    let stream = UtpStream::accepted(shared.clone(), conn);
                    let sent = match &self.accept_tx {
                        Some(tx) => tx.try_send((stream, from)).map_err(|e| e.into_inner().0),
                        None => Err(stream),
                    };
                    if let Err(stream) = sent {
                        // Nobody takes connections now (or too many wait): dropping the stream
                        // closes the connection.
                        tracing::debug!(%from, "uTP connection refused: accept queue full");
                        refused.push(stream);
                    }
                }
            }
        }
        drop(st);
        drop(refused);
    }

    /// Runs the DHT's timers and routes its events; queues its datagrams.
    fn drive_dht(&mut self, now: Instant) {
        let Some(dht) = &mut self.dht else {
            return;
        };
        dht.handle_timeout(now);
        while let Some((to, bytes)) = dht.dht.poll_transmit() {
            self.outgoing.push((to, bytes));
        }
        dht.route_events();
    }

    async fn send_queued(&mut self) {
        for (to, bytes) in self.outgoing.drain(..) {
            if let Err(e) = self.socket.send_to(&bytes, to).await {
                // An unreachable node or peer is everyday business: its protocol times out.
                tracing::trace!(%to, error = %e, "UDP send failed");
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let utp = self
            .utp
            .as_ref()
            .and_then(|u| u.lock().socket.poll_timeout());
        let dht = self.dht.as_ref().map(DhtNode::poll_timeout);
        match (utp, dht) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn run(mut self) {
        let kick = self.utp.clone();
        loop {
            let now = Instant::now();
            self.drive_utp(now);
            self.drive_dht(now);
            self.send_queued().await;
            let deadline = self.deadline();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let kicked = async {
                match &kick {
                    Some(shared) => shared.kick.notified().await,
                    None => std::future::pending().await,
                }
            };
            let dht_input = async {
                match &mut self.dht {
                    Some(dht) => Some(dht.next_input().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.socket.recv_from(&mut self.rx) => {
                    let now = Instant::now();
                    if let Ok((n, from)) = received {
                        self.dispatch(now, n, from);
                    }
                    // Take the rest of the burst before answering it: one ack per connection
                    // per batch.
                    for _ in 1..MAX_BATCH {
                        match self.socket.try_recv_from(&mut self.rx) {
                            Ok((n, from)) => self.dispatch(now, n, from),
                            Err(_) => break,
                        }
                    }
                }
                () = kicked => {}
                input = dht_input => {
                    if let (Some(input), Some(dht)) = (input, &mut self.dht) {
                        if !dht.handle_input(input) {
                            // Send what it queued before stopping (nothing more will come).
                            self.drive_dht(Instant::now());
                            self.send_queued().await;
                            if let Some(dht) = &mut self.dht {
                                dht.finish();
                            }
                            self.dht = None;
                            if self.utp.is_none() {
                                return;
                            }
                        }
                    }
                }
                () = sleep => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utp::packet::{Header, Packet, PacketType};

    fn packet(packet_type: PacketType, connection_id: u16, seq_nr: u16, ack_nr: u16) -> Vec<u8> {
        let header = Header {
            packet_type,
            connection_id,
            timestamp_us: 1,
            timestamp_diff_us: 0,
            wnd_size: 65_536,
            seq_nr,
            ack_nr,
        };
        let mut out = Vec::new();
        Packet::encode(&header, None, &[], &mut out);
        out
    }

    /// Opens a connection as an initiator with receive id `id` (the SYN, then the ack of the
    /// SYN-ACK that confirms it); returns the type of the endpoint's first answer, or `None` if
    /// it never answered.
    fn open(client: &std::net::UdpSocket, to: SocketAddr, id: u16) -> Option<PacketType> {
        client
            .send_to(&packet(PacketType::Syn, id, 1, 0), to)
            .ok()?;
        let mut buf = vec![0u8; 2048];
        let answer = loop {
            // Times out (an error) if the endpoint stopped answering.
            let (n, _) = client.recv_from(&mut buf).ok()?;
            if let Ok(p) = Packet::parse(&buf[..n]) {
                if p.header.connection_id == id {
                    break p.header;
                }
            }
        };
        if answer.packet_type == PacketType::State {
            // Confirmed, it no longer counts against the backlog of half-open connections.
            let ack = packet(
                PacketType::State,
                id.wrapping_add(1),
                2,
                answer.seq_nr.wrapping_sub(1),
            );
            client.send_to(&ack, to).ok()?;
        }
        Some(answer.packet_type)
    }

    /// More connections than the accept queue holds, nobody accepting: the endpoint refuses
    /// the extra ones and goes on serving. (Dropping a refused stream takes the uTP lock, so
    /// dropping it under that lock hung the endpoint for good at the first refusal.) The
    /// endpoint runs on its own runtime, so a hung one cannot hang the test.
    #[test]
    fn a_full_accept_queue_refuses_and_keeps_serving() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let udp = rt
            .block_on(start(UdpOptions {
                port: 0,
                dht: None,
                utp: true,
            }))
            .expect("start the endpoint");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], udp.port));
        let unanswered =
            (0..ACCEPT_QUEUE as u16 + 8).find(|n| open(&client, to, 1000 + 2 * n).is_none());
        if let Some(n) = unanswered {
            // The hung endpoint holds the uTP lock for good: dropping its handle (which takes
            // that lock) or waiting for its workers would hang the test instead of failing it.
            std::mem::forget(udp);
            rt.shutdown_background();
            panic!("connection {n} got no answer (the accept queue holds {ACCEPT_QUEUE})");
        }
        drop(udp);
        rt.shutdown_background();
    }
}
