//! Two `UtpSocket`s over a simulated link on virtual time: losses, duplicates, reordering,
//! delay and an optional bottleneck queue, all drawn from a seeded generator so every run is
//! the same. Transfers are checked byte for byte, buffers against their bounds after every step,
//! and LEDBAT against the queueing delay it lets build up.
//!
//! Run longer with e.g. `PROPTEST_CASES=200 cargo test --release -p bitrush-core utp::sim_tests`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use core::net::SocketAddr;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// How the simulated link misbehaves; probabilities in parts per million.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkParams {
    pub loss_ppm: u32,
    pub dup_ppm: u32,
    pub reorder_ppm: u32,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay of a reordered datagram, at most.
    pub reorder_delay: Duration,
    /// Bytes per second through a FIFO bottleneck (both directions share nothing), if any.
    pub rate: Option<u64>,
}

impl LinkParams {
    pub fn clean(delay: Duration) -> LinkParams {
        LinkParams {
            loss_ppm: 0,
            dup_ppm: 0,
            reorder_ppm: 0,
            delay,
            reorder_delay: Duration::ZERO,
            rate: None,
        }
    }
}

struct InFlight {
    at: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A deterministic lossy link between any addresses.
pub(crate) struct Link {
    params: LinkParams,
    rng: StdRng,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// When the bottleneck is free again, per sender.
    busy_until: Vec<(SocketAddr, Instant)>,
    /// Largest queueing delay a datagram met at the bottleneck, per sender, after `watch_from`.
    pub max_queueing: Duration,
    pub watch_from: Option<Instant>,
}

impl Link {
    pub fn new(params: LinkParams, seed: u64) -> Link {
        Link {
            params,
            rng: StdRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            order: 0,
            busy_until: Vec::new(),
            max_queueing: Duration::ZERO,
            watch_from: None,
        }
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.gen_range(0..1_000_000) < ppm
    }

    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let mut at = now + self.params.delay;
        if let Some(rate) = self.params.rate {
            let i = match self.busy_until.iter().position(|(a, _)| *a == from) {
                Some(i) => i,
                None => {
                    self.busy_until.push((from, now));
                    self.busy_until.len() - 1
                }
            };
            let busy = &mut self.busy_until[i].1;
            let start = (*busy).max(now);
            let queued = start - now;
            if self.watch_from.is_some_and(|w| now >= w) {
                self.max_queueing = self.max_queueing.max(queued);
            }
            let serialise = Duration::from_nanos(bytes.len() as u64 * 1_000_000_000 / rate);
            *busy = start + serialise;
            at = *busy + self.params.delay;
        }
        if self.chance(self.params.loss_ppm) {
            return;
        }
        let copies = if self.chance(self.params.dup_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut when = at;
            if self.chance(self.params.reorder_ppm) {
                let max = self.params.reorder_delay.as_micros().max(1) as u64;
                when += Duration::from_micros(self.rng.gen_range(0..max));
            }
            self.order += 1;
            self.queue.push(Reverse(InFlight {
                at: when,
                order: self.order,
                from,
                to,
                bytes: bytes.to_vec(),
            }));
        }
    }

    pub fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(d)| d.at)
    }

    /// The next datagram due at or before `now`: (from, to, bytes).
    pub fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        if self.next_delivery()? > now {
            return None;
        }
        let Reverse(d) = self.queue.pop()?;
        Some((d.from, d.to, d.bytes))
    }
}

/// The byte at `offset` of the test stream `stream`.
pub(crate) fn stream_byte(stream: u64, offset: u64) -> u8 {
    let x = (offset ^ (stream << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// One endpoint: a socket, its connection and its two streams.
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub socket: UtpSocket,
    pub conn: Option<ConnectionId>,
    pub out_stream: u64,
    pub to_send: u64,
    /// Bytes written to the socket so far, and the next ones generated but not yet taken.
    pub sent: u64,
    pending: Vec<u8>,
    pub in_stream: u64,
    pub to_receive: u64,
    pub received: u64,
    pub closed_by_peer: bool,
    pub closed_self: bool,
    /// Closes once everything is sent and received (else waits for the peer's FIN).
    pub closes: bool,
    pub connected: bool,
    pub max_stats: Option<ConnectionStats>,
}

impl Peer {
    pub fn new(now: Instant, port: u16, config: UtpConfig, seed: u64) -> Peer {
        Peer {
            addr: SocketAddr::from(([10, 0, 0, 1], port)),
            socket: UtpSocket::new(now, config, seed),
            conn: None,
            out_stream: 0,
            to_send: 0,
            sent: 0,
            pending: Vec::new(),
            in_stream: 0,
            to_receive: 0,
            received: 0,
            closed_by_peer: false,
            closed_self: false,
            closes: false,
            connected: false,
            max_stats: None,
        }
    }

    /// Events, then reads (checking every byte) and writes as much as the socket takes.
    fn drive_app(&mut self) {
        while let Some(ev) = self.socket.poll_event() {
            match ev {
                UtpEvent::Incoming { conn, .. } => {
                    assert!(self.conn.is_none(), "a second incoming connection");
                    self.conn = Some(conn);
                    self.connected = true;
                }
                UtpEvent::Connected(conn) => {
                    assert_eq!(Some(conn), self.conn);
                    self.connected = true;
                }
                UtpEvent::Closed { conn, reason } => {
                    assert_eq!(Some(conn), self.conn);
                    assert_eq!(reason, CloseReason::PeerClosed, "connection failed");
                    self.closed_by_peer = true;
                }
                UtpEvent::Readable(_) | UtpEvent::Writable(_) => {}
            }
        }
        let Some(conn) = self.conn else {
            return;
        };
        if self.closed_self {
            return;
        }
        let mut buf = [0u8; 8192];
        loop {
            let n = self.socket.read(conn, &mut buf);
            if n == 0 {
                break;
            }
            for (i, b) in buf.iter().take(n).enumerate() {
                let at = self.received + i as u64;
                assert_eq!(*b, stream_byte(self.in_stream, at), "byte {at} differs");
            }
            self.received += n as u64;
            assert!(self.received <= self.to_receive, "more bytes than sent");
        }
        while self.sent < self.to_send && self.connected {
            if self.pending.is_empty() {
                let from = self.sent;
                let len = (self.to_send - from).min(4096);
                self.pending = (from..from + len)
                    .map(|i| stream_byte(self.out_stream, i))
                    .collect();
            }
            let n = self.socket.write(conn, &self.pending);
            self.pending.drain(..n);
            self.sent += n as u64;
            if !self.pending.is_empty() {
                break;
            }
        }
        if let Some(stats) = self.socket.stats(conn) {
            self.check_bounds(&stats);
        }
        if self.closes
            && self.sent == self.to_send
            && self.received == self.to_receive
            && !self.closed_by_peer
            && self.connected
        {
            self.socket.close(conn);
            self.closed_self = true;
        }
    }

    fn check_bounds(&mut self, s: &ConnectionStats) {
        let cfg = *self.socket.config();
        assert!(
            s.send_buffered <= cfg.send_buffer,
            "send buffer over its bound: {s:?}"
        );
        assert!(
            s.recv_buffered + s.reorder_buffered <= cfg.recv_buffer,
            "receive buffer over its bound: {s:?}"
        );
        assert!(s.reorder_packets <= REORDER_PACKETS, "{s:?}");
        assert!(s.packets_in_flight <= MAX_PACKETS_IN_FLIGHT + 1, "{s:?}");
        assert!(
            s.cwnd >= cfg.max_payload && s.cwnd <= cfg.send_buffer,
            "{s:?}"
        );
        // In-flight bytes may exceed a window that shrank after they left, never the buffer.
        assert!(s.bytes_in_flight <= s.send_buffered, "{s:?}");
        let m = self.max_stats.get_or_insert(*s);
        m.cwnd = m.cwnd.max(s.cwnd);
        m.bytes_in_flight = m.bytes_in_flight.max(s.bytes_in_flight);
        m.retransmits = m.retransmits.max(s.retransmits);
    }

    fn done(&self) -> bool {
        (self.closed_self || self.closed_by_peer)
            && self.received == self.to_receive
            && self.socket.connection_count() == 0
    }
}

/// Sends what both sockets have, then moves virtual time to the next delivery or timer and
/// handles it. Returns false when nothing is left to happen.
pub(crate) fn step(
    now: &mut Instant,
    link: &mut Link,
    peers: &mut [&mut Peer],
    buf: &mut Vec<u8>,
) -> bool {
    for p in peers.iter_mut() {
        while let Some(to) = p.socket.poll_transmit(*now, buf) {
            link.send(*now, p.addr, to, buf);
        }
    }
    let next = peers
        .iter()
        .filter_map(|p| p.socket.poll_timeout())
        .chain(link.next_delivery())
        .min();
    let Some(next) = next else {
        return false;
    };
    *now = (*now).max(next);
    while let Some((from, to, bytes)) = link.pop_due(*now) {
        if let Some(p) = peers.iter_mut().find(|p| p.addr == to) {
            assert_eq!(
                p.socket.handle_datagram(*now, from, &bytes),
                DatagramKind::Utp
            );
        }
    }
    for p in peers.iter_mut() {
        p.socket.handle_timeout(*now);
    }
    true
}

/// Config for simulations: timeouts long enough that a lossy link never kills the connection.
pub(crate) fn sim_config() -> UtpConfig {
    UtpConfig {
        connect_timeout: Duration::from_secs(120),
        max_retransmits: 30,
        ..UtpConfig::default()
    }
}

/// Transfers `a_to_b` and `b_to_a` bytes at once; A closes when done and B must then see A's
/// FIN. Returns the virtual time it took and the two endpoints.
pub(crate) fn transfer(
    params: LinkParams,
    config: UtpConfig,
    a_to_b: u64,
    b_to_a: u64,
    seed: u64,
) -> (Duration, Peer, Peer) {
    let start = Instant::now();
    let mut now = start;
    let mut link = Link::new(params, seed);
    let mut a = Peer::new(now, 1000, config, seed ^ 1);
    let mut b = Peer::new(now, 2000, config, seed ^ 2);
    (a.out_stream, b.in_stream, a.to_send, b.to_receive) = (seed, seed, a_to_b, a_to_b);
    (b.out_stream, a.in_stream, b.to_send, a.to_receive) = (!seed, !seed, b_to_a, b_to_a);
    a.closes = true;
    a.conn = Some(a.socket.connect(now, b.addr).expect("connect"));
    let mut buf = Vec::new();
    let limit = start + Duration::from_secs(3600);
    while !(a.done() && b.done()) {
        a.drive_app();
        b.drive_app();
        let progressed = step(&mut now, &mut link, &mut [&mut a, &mut b], &mut buf);
        assert!(
            progressed || (a.done() && b.done()),
            "stalled: nothing scheduled"
        );
        assert!(now < limit, "no end after an hour of virtual time");
    }
    (now - start, a, b)
}

#[test]
fn clean_link_transfers_both_ways_and_closes() {
    let params = LinkParams::clean(Duration::from_millis(5));
    let (took, a, b) = transfer(params, sim_config(), 3 << 20, 2 << 20, 7);
    assert_eq!(a.received, 2 << 20);
    assert_eq!(b.received, 3 << 20);
    let stats = a.max_stats.expect("stats");
    assert_eq!(stats.retransmits, 0, "nothing lost, nothing resent");
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn lossy_reordering_link_moves_twelve_mib_each_way_byte_exact() {
    let params = LinkParams {
        loss_ppm: 20_000,
        dup_ppm: 10_000,
        reorder_ppm: 50_000,
        delay: Duration::from_millis(20),
        reorder_delay: Duration::from_millis(30),
        rate: None,
    };
    let (_, a, b) = transfer(params, sim_config(), 12 << 20, 12 << 20, 42);
    assert_eq!(a.received, 12 << 20);
    assert_eq!(b.received, 12 << 20);
    assert!(b.closed_by_peer);
    let stats = a.max_stats.expect("stats");
    assert!(
        stats.retransmits > 0,
        "a 2% loss link needs retransmissions"
    );
}

#[test]
fn small_buffers_still_deliver_under_loss() {
    let config = UtpConfig {
        send_buffer: 8 * 1024,
        recv_buffer: 6 * 1024,
        max_payload: 700,
        ..sim_config()
    };
    let params = LinkParams {
        loss_ppm: 50_000,
        dup_ppm: 20_000,
        reorder_ppm: 100_000,
        delay: Duration::from_millis(3),
        reorder_delay: Duration::from_millis(10),
        rate: None,
    };
    let (_, a, b) = transfer(params, config, 300_000, 200_000, 3);
    assert_eq!(a.received, 200_000);
    assert_eq!(b.received, 300_000);
    assert!(b.closed_by_peer);
}

#[test]
fn ledbat_keeps_the_bottleneck_queue_near_the_target() {
    // 1 MB/s bottleneck, 10 ms each way. A loss-driven sender would fill the queue up to its
    // whole 1 MiB window (a second of queueing); LEDBAT must hold it near 100 ms.
    let params = LinkParams {
        rate: Some(1_000_000),
        ..LinkParams::clean(Duration::from_millis(10))
    };
    let start = Instant::now();
    let mut now = start;
    let mut link = Link::new(params, 5);
    let config = sim_config();
    let mut a = Peer::new(now, 1000, config, 11);
    let mut b = Peer::new(now, 2000, config, 12);
    a.to_send = u64::MAX / 2;
    b.to_receive = u64::MAX / 2;
    a.conn = Some(a.socket.connect(now, b.addr).expect("connect"));
    let mut buf = Vec::new();
    let warm_up = start + Duration::from_secs(8);
    link.watch_from = Some(warm_up);
    let mut over_target_then_shrunk = false;
    let mut over_target_cwnd: Option<usize> = None;
    while now < start + Duration::from_secs(25) {
        a.drive_app();
        b.drive_app();
        assert!(step(&mut now, &mut link, &mut [&mut a, &mut b], &mut buf));
        let conn = a.conn.expect("conn");
        let s = a.socket.stats(conn).expect("stats");
        if s.queuing_delay
            .is_some_and(|d| d > config.target_delay * 3 / 2)
        {
            over_target_cwnd.get_or_insert(s.cwnd);
        }
        if over_target_cwnd.is_some_and(|c| s.cwnd < c) {
            over_target_then_shrunk = true;
        }
    }
    assert!(
        over_target_then_shrunk,
        "the window never shrank after the delay passed the target"
    );
    let stats = a.socket.stats(a.conn.expect("conn")).expect("stats");
    assert!(
        link.max_queueing < Duration::from_millis(250),
        "queueing delay reached {:?} after warm-up ({stats:?})",
        link.max_queueing
    );
    assert!(
        link.max_queueing > Duration::from_millis(30),
        "LEDBAT should use the queue up to its target, saw {:?}",
        link.max_queueing
    );
    eprintln!(
        "max queueing {:?}, {} bytes, {stats:?}",
        link.max_queueing, b.received
    );
    assert!(
        b.received > 20_000_000,
        "only {} bytes in 25 s at 1 MB/s",
        b.received
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_misbehaving_link_delivers_byte_exact(
        seed in any::<u64>(),
        loss in 0u32..100_000,
        dup in 0u32..100_000,
        reorder in 0u32..300_000,
        delay_ms in 0u64..80,
        reorder_ms in 0u64..100,
        a_to_b in 0u64..400_000,
        b_to_a in 0u64..400_000,
        payload in 200usize..1500,
        nagle in any::<bool>(),
    ) {
        let params = LinkParams {
            loss_ppm: loss,
            dup_ppm: dup,
            reorder_ppm: reorder,
            delay: Duration::from_millis(delay_ms),
            reorder_delay: Duration::from_millis(reorder_ms),
            rate: None,
        };
        let config = UtpConfig { max_payload: payload, nagle, ..sim_config() };
        let (_, a, b) = transfer(params, config, a_to_b, b_to_a, seed);
        prop_assert_eq!(a.received, b_to_a);
        prop_assert_eq!(b.received, a_to_b);
        prop_assert!(b.closed_by_peer);
    }
}
