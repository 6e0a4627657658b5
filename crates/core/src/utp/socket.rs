//! The per-UDP-socket multiplexer: routes datagrams to connections by (peer address, connection
//! id), accepts SYNs, answers strays with RESET, and round-robins transmissions.
//!
//! Invariants: at most [`UtpConfig::max_connections`] connections and
//! [`UtpConfig::accept_backlog`] unconfirmed incoming ones; at most [`STATELESS_QUEUE`] pending
//! RESET replies (more are dropped); the event queue holds at most one `Readable` and one
//! `Writable` per connection plus one `Incoming`/`Connected` and one `Closed` per connection;
//! connection handles are never reused (slot index plus a generation).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use core::net::SocketAddr;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::connection::{Connection, Events};
use super::packet::{looks_like_utp, Header, Packet, PacketType, HEADER_LEN, MAX_SACK_LEN};
use super::{ConnectionId, ConnectionStats, UtpConfig, UtpError, UtpEvent};

/// RESET replies (to strays and refused SYNs) waiting to be sent, at most.
pub const STATELESS_QUEUE: usize = 64;
/// Random connection ids tried before `connect` gives up.
const ID_ATTEMPTS: usize = 64;
/// How often the window shares are recomputed.
const SHARE_REFRESH: Duration = Duration::from_millis(50);
/// A connection counts as receiving if data came within this long.
const ACTIVE_RECEIVER: Duration = Duration::from_secs(1);

/// What a datagram was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum DatagramKind {
    /// uTP (handled, or dropped as malformed or stray).
    Utp,
    /// Not uTP: its first byte is not a uTP type/version byte (`0x01`, `0x11`, `0x21`, `0x31`,
    /// `0x41`) or it is shorter than a uTP header. DHT messages (`d...`) land here.
    NotUtp,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    conn: Option<Box<Connection>>,
}

/// All uTP connections over one UDP socket.
#[derive(Debug)]
pub struct UtpSocket {
    config: UtpConfig,
    /// Zero of our microsecond timestamps.
    epoch: Instant,
    rng: StdRng,
    slots: Vec<Slot>,
    free: Vec<usize>,
    live: usize,
    routes: BTreeMap<(SocketAddr, u16), usize>,
    /// The last route used: most datagrams in a burst go to the same connection.
    last_route: Option<((SocketAddr, u16), usize)>,
    /// Connections that may have something to send, in round-robin order.
    ready: VecDeque<usize>,
    events: VecDeque<UtpEvent>,
    stateless: VecDeque<(SocketAddr, Header)>,
    /// When the window shares are next recomputed, and the current share.
    next_share_refresh: Instant,
    window_share: usize,
}

fn id_of(index: usize, generation: u32) -> ConnectionId {
    ConnectionId((u64::from(generation) << 32) | index as u64)
}

impl UtpSocket {
    /// A socket with no connections; `seed` drives connection ids and initial sequence numbers.
    pub fn new(now: Instant, config: UtpConfig, seed: u64) -> UtpSocket {
        UtpSocket {
            config: config.clamped(),
            epoch: now,
            rng: StdRng::seed_from_u64(seed),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            routes: BTreeMap::new(),
            last_route: None,
            ready: VecDeque::new(),
            events: VecDeque::new(),
            stateless: VecDeque::new(),
            next_share_refresh: now,
            window_share: config.clamped().recv_window_total,
        }
    }

    /// Splits [`UtpConfig::recv_window_total`] among the connections that received data
    /// lately (at most every [`SHARE_REFRESH`]).
    fn refresh_window_shares(&mut self, now: Instant) {
        if now < self.next_share_refresh {
            return;
        }
        self.next_share_refresh = now + SHARE_REFRESH;
        let since = now.checked_sub(ACTIVE_RECEIVER).unwrap_or(self.epoch);
        let conns = self.slots.iter_mut().filter_map(|s| s.conn.as_deref_mut());
        let active = conns
            .filter(|c| c.received_data_since(since))
            .count()
            .max(1);
        let share = (self.config.recv_window_total / active).max(super::MIN_WINDOW_SHARE);
        self.window_share = share;
        for c in self.slots.iter_mut().filter_map(|s| s.conn.as_deref_mut()) {
            c.set_window_share(share);
        }
    }

    /// The settings in force (after clamping).
    pub fn config(&self) -> &UtpConfig {
        &self.config
    }

    /// The largest datagram [`UtpSocket::poll_transmit`] produces.
    pub fn max_datagram_size(&self) -> usize {
        HEADER_LEN + 2 + MAX_SACK_LEN.max(32 + self.config.max_payload)
    }

    /// Open connections (including those closing in the background).
    pub fn connection_count(&self) -> usize {
        self.live
    }

    fn index_of(&self, conn: ConnectionId) -> Option<usize> {
        let index = usize::try_from(conn.0 & u64::from(u32::MAX)).ok()?;
        let slot = self.slots.get(index)?;
        (u64::from(slot.generation) == conn.0 >> 32 && slot.conn.is_some()).then_some(index)
    }

    fn conn_mut(&mut self, conn: ConnectionId) -> Option<(usize, &mut Connection)> {
        let index = self.index_of(conn)?;
        let c = self.slots.get_mut(index)?.conn.as_deref_mut()?;
        Some((index, c))
    }

    fn lookup(&mut self, from: SocketAddr, id: u16) -> Option<usize> {
        if let Some((key, index)) = self.last_route {
            if key == (from, id) {
                return Some(index);
            }
        }
        let index = *self.routes.get(&(from, id))?;
        self.last_route = Some(((from, id), index));
        Some(index)
    }

    fn insert(&mut self, mut conn: Connection) -> ConnectionId {
        conn.set_window_share(self.window_share);
        let key = (conn.peer, conn.recv_id);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
        };
        let generation = match self.slots.get_mut(index) {
            Some(slot) => {
                slot.conn = Some(Box::new(conn));
                slot.generation
            }
            None => 0,
        };
        self.routes.insert(key, index);
        self.live += 1;
        self.enqueue(index);
        id_of(index, generation)
    }

    fn remove(&mut self, index: usize) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(conn) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.routes.remove(&(conn.peer, conn.recv_id));
        if self.last_route.is_some_and(|(_, i)| i == index) {
            self.last_route = None;
        }
        self.free.push(index);
        self.live -= 1;
    }

    fn enqueue(&mut self, index: usize) {
        if let Some(conn) = self
            .slots
            .get_mut(index)
            .and_then(|s| s.conn.as_deref_mut())
        {
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(index);
            }
        }
    }

    /// After anything touched connection `index`: forget it if it ended, queue it if it has
    /// something to send.
    fn settle(&mut self, index: usize) {
        let Some(conn) = self.slots.get(index).and_then(|s| s.conn.as_deref()) else {
            return;
        };
        if conn.is_finished() {
            self.remove(index);
        } else if conn.wants_transmit() {
            self.enqueue(index);
        }
    }

    /// Runs `f` on connection `index` with its event sink, then settles it.
    fn with_conn<R>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut Connection, &mut Events) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(index)?;
        let id = id_of(index, slot.generation);
        let conn = slot.conn.as_deref_mut()?;
        let mut ev = Events {
            id,
            queue: &mut self.events,
        };
        let r = f(conn, &mut ev);
        #[cfg(test)]
        conn.check_invariants();
        self.settle(index);
        Some(r)
    }

    fn queue_reset(&mut self, to: SocketAddr, header: Header) {
        if self.stateless.len() < STATELESS_QUEUE {
            self.stateless.push_back((to, header));
        }
    }

    fn timestamp(&self, now: Instant) -> u32 {
        // Truncation is the point: only differences of these timestamps count.
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// A RESET answering packet `h` from a peer we have no connection with.
    fn stray_reset(&mut self, now: Instant, h: &Header) -> Header {
        Header {
            packet_type: PacketType::Reset,
            connection_id: h.connection_id,
            timestamp_us: self.timestamp(now),
            timestamp_diff_us: 0,
            wnd_size: 0,
            seq_nr: self.rng.gen(),
            ack_nr: h.seq_nr,
        }
    }

    /// Feeds one received datagram. Returns [`DatagramKind::NotUtp`] for datagrams of another
    /// protocol on the same port (e.g. the DHT's bencoded messages), which are left untouched.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> DatagramKind {
        if !looks_like_utp(bytes) {
            return DatagramKind::NotUtp;
        }
        let Ok(pkt) = Packet::parse(bytes) else {
            return DatagramKind::Utp;
        };
        let h = pkt.header;
        // A SYN names the initiator's receive id; ours is one more.
        let our_id = if h.packet_type == PacketType::Syn {
            h.connection_id.wrapping_add(1)
        } else {
            h.connection_id
        };
        let index = match self.lookup(from, our_id) {
            Some(i) => Some(i),
            // Be lenient with RESETs that name our send id (libutp sends those).
            None if h.packet_type == PacketType::Reset => [1u16, u16::MAX]
                .into_iter()
                .filter_map(|d| self.routes.get(&(from, h.connection_id.wrapping_add(d))))
                .copied()
                .find(|&i| {
                    self.slots
                        .get(i)
                        .and_then(|s| s.conn.as_deref())
                        .is_some_and(|c| c.send_id == h.connection_id)
                }),
            None => None,
        };
        match (index, h.packet_type) {
            (Some(i), _) => {
                self.with_conn(i, |c, ev| c.handle_packet(now, &pkt, ev));
            }
            (None, PacketType::Syn) => self.accept(now, from, &h),
            (None, PacketType::Data | PacketType::Fin) => {
                let reset = self.stray_reset(now, &h);
                self.queue_reset(from, reset);
            }
            (None, _) => {}
        }
        DatagramKind::Utp
    }

    fn accept(&mut self, now: Instant, from: SocketAddr, syn: &Header) {
        let half_open = self
            .slots
            .iter()
            .filter_map(|s| s.conn.as_deref())
            .filter(|c| c.incoming && !c.confirmed)
            .count();
        if !self.config.accept_incoming
            || self.live >= self.config.max_connections
            || half_open >= self.config.accept_backlog
        {
            let reset = self.stray_reset(now, syn);
            self.queue_reset(from, reset);
            return;
        }
        let seq = self.rng.gen();
        let conn = Connection::incoming(now, self.config, self.epoch, from, syn, seq);
        let id = self.insert(conn);
        self.events.push_back(UtpEvent::Incoming { conn: id, from });
    }

    /// Opens a connection to `addr`; `Connected` or `Closed` follows. Bytes may be written at
    /// once: they go out when the handshake is done.
    pub fn connect(&mut self, now: Instant, addr: SocketAddr) -> Result<ConnectionId, UtpError> {
        if self.live >= self.config.max_connections {
            return Err(UtpError::TooManyConnections);
        }
        let recv_id = (0..ID_ATTEMPTS)
            .map(|_| self.rng.gen::<u16>())
            .find(|id| !self.routes.contains_key(&(addr, *id)))
            .ok_or(UtpError::NoConnectionId)?;
        let seq = self.rng.gen();
        let conn = Connection::outgoing(now, self.config, self.epoch, addr, recv_id, seq);
        Ok(self.insert(conn))
    }

    /// Buffers as much of `data` as the send buffer holds; returns how much (0 for an unknown,
    /// closed or closing connection). A short write earns a `Writable` later.
    pub fn write(&mut self, conn: ConnectionId, data: &[u8]) -> usize {
        let Some((index, c)) = self.conn_mut(conn) else {
            return 0;
        };
        let n = c.write(data);
        self.settle(index);
        n
    }

    /// In-order bytes waiting to be read (0 for an unknown connection), so a reader can size
    /// its buffer to what is there.
    pub fn readable_len(&self, conn: ConnectionId) -> usize {
        self.index_of(conn)
            .and_then(|i| self.slots.get(i))
            .and_then(|slot| slot.conn.as_deref())
            .map_or(0, Connection::readable_len)
    }

    /// Moves received in-order bytes into `buf`; returns how many (0: nothing buffered, or an
    /// unknown or closed connection).
    pub fn read(&mut self, conn: ConnectionId, buf: &mut [u8]) -> usize {
        let Some(index) = self.index_of(conn) else {
            return 0;
        };
        self.with_conn(index, |c, ev| c.read(buf, ev)).unwrap_or(0)
    }

    /// Closes gracefully: what was written is still delivered, then FIN. The handle is dead at
    /// once and no event follows; received bytes not yet read are dropped.
    pub fn close(&mut self, conn: ConnectionId) {
        if let Some((index, c)) = self.conn_mut(conn) {
            c.close();
            self.settle(index);
        }
    }

    /// Aborts: sends RESET and forgets the connection at once; no event follows.
    pub fn reset(&mut self, now: Instant, conn: ConnectionId) {
        if let Some((index, c)) = self.conn_mut(conn) {
            let (peer, header, connecting) = (c.peer, c.reset_header(now), c.is_connecting());
            c.abort();
            if !connecting {
                self.queue_reset(peer, header);
            }
            self.settle(index);
        }
    }

    /// The peer of a live connection.
    pub fn peer_addr(&self, conn: ConnectionId) -> Option<SocketAddr> {
        let index = self.index_of(conn)?;
        Some(self.slots.get(index)?.conn.as_deref()?.peer)
    }

    /// Windows and counters of a live connection.
    pub fn stats(&self, conn: ConnectionId) -> Option<ConnectionStats> {
        let index = self.index_of(conn)?;
        Some(self.slots.get(index)?.conn.as_deref()?.stats())
    }

    /// Runs due timers (retransmissions, handshake and idle timeouts). Early or late calls are
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            let due = self
                .slots
                .get(index)
                .and_then(|s| s.conn.as_deref())
                .and_then(Connection::next_deadline)
                .is_some_and(|d| d <= now);
            if due {
                self.with_conn(index, |c, ev| c.handle_timeout(now, ev));
            }
        }
    }

    /// When [`UtpSocket::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| s.conn.as_deref())
            .filter_map(Connection::next_deadline)
            .min()
    }

    /// Writes the next datagram to send into `out` (cleared first; its capacity is reused) and
    /// returns its destination, or `None` when nothing is due. Drain it after every batch of
    /// received datagrams: acks go out then, one per connection per batch.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((to, header)) = self.stateless.pop_front() {
            Packet::encode(&header, None, &[], out);
            return Some(to);
        }
        self.refresh_window_shares(now);
        while let Some(index) = self.ready.pop_front() {
            let Some(conn) = self
                .slots
                .get_mut(index)
                .and_then(|s| s.conn.as_deref_mut())
            else {
                continue;
            };
            conn.queued = false;
            let sent = conn.poll_transmit(now, out);
            #[cfg(test)]
            conn.check_invariants();
            if sent {
                let peer = conn.peer;
                conn.queued = true;
                self.ready.push_back(index);
                return Some(peer);
            }
            // Nothing to send now (e.g. the window is full): it is queued again by the next
            // packet, timer or command that touches it.
            if conn.is_finished() {
                self.remove(index);
            }
        }
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<UtpEvent> {
        let event = self.events.pop_front()?;
        match event {
            UtpEvent::Readable(id) => {
                if let Some((_, c)) = self.conn_mut(id) {
                    c.readable_polled();
                }
            }
            UtpEvent::Writable(id) => {
                if let Some((_, c)) = self.conn_mut(id) {
                    c.writable_polled();
                }
            }
            _ => {}
        }
        Some(event)
    }
}
