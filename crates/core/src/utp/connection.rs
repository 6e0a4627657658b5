//! One uTP connection: handshake, reliable ordered delivery, acks and selective acks, fast
//! retransmit, retransmission timeouts, LEDBAT, flow control, Nagle, FIN and RESET.
//!
//! Invariants:
//! - `sent` holds every packet from the oldest unacknowledged one to the newest, in sequence
//!   order, at most [`MAX_PACKETS_IN_FLIGHT`] of them; `bytes_in_flight` is the payload of those
//!   neither acknowledged nor declared lost. A new packet leaves only when it fits
//!   `min(cwnd, peer window)` (or as a probe when nothing is in flight); only a fast
//!   retransmission, which the acks show is missing, may go over.
//! - An ack for a sequence number we never sent makes the whole packet ignored; data further
//!   ahead than the reorder span or past the peer's FIN is dropped unacknowledged.
//! - The send and receive buffers never exceed their configured capacities, whatever window the
//!   peer advertises; the advertised window is the room left in the receive buffer (less room
//!   kept for the packet we wait for), within this connection's share of the socket's total.
//! - A FIN takes the next sequence number but does not advance it (as libtorrent does), so our
//!   later STATE packets carry the FIN's number.
//! - Once the application closed or was told `Closed`, no more events are produced for it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::buffers::{Accepted, ReceiveBuffer, SendBuffer, REORDER_PACKETS};
use super::congestion::{Ledbat, RttEstimator, MAX_RTO};
use super::packet::{seq_less, Header, Packet, PacketType, EXTENSION_SACK, MAX_SACK_LEN};
use super::{CloseReason, ConnectionId, ConnectionStats, UtpConfig, UtpEvent};
use core::net::SocketAddr;

/// Packets in flight at most: below libtorrent's reorder span (1 MiB / 1100 bytes), so a peer
/// never drops a packet for being too far ahead.
pub const MAX_PACKETS_IN_FLIGHT: usize = 900;
/// Selective-ack bytes a data packet carries at most (so that it stays under the datagram
/// budget); a longer bitmask goes in a separate STATE packet.
const MAX_DATA_SACK_LEN: usize = 32;
/// Duplicate acks that declare the next packet lost.
const DUP_ACK_LIMIT: u32 = 3;
/// Selectively acked packets after a hole that declare it lost.
const SACK_LOSS_THRESHOLD: u32 = 3;
/// Timeouts in a row that end our FIN's wait for an ack once the peer closed its side.
const FIN_RETRIES: u32 = 2;
/// Initial congestion window, in packets.
const INITIAL_WINDOW_PACKETS: usize = 4;
/// Time kept after the close handshake to ack a retransmitted FIN.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Our SYN is out, no answer yet.
    SynSent,
    /// Handshake done.
    Connected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Syn,
    Data,
    Fin,
}

#[derive(Clone, Copy, Debug)]
struct SentPacket {
    seq: u16,
    kind: Kind,
    /// Stream offset of the payload (for SYN and FIN: where the stream stood).
    offset: u64,
    len: u32,
    sent_at: Instant,
    transmissions: u8,
    acked: bool,
    /// Waiting to be (re)transmitted; not counted in flight.
    lost: bool,
    /// Already declared lost by duplicate or selective acks once since the last timeout.
    fast_resent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fin {
    /// Not closing.
    None,
    /// Close requested: FIN after the unsent bytes.
    Pending,
    /// FIN sent (with the sequence number `seq_nr` stays at).
    Sent,
    /// Our FIN was acknowledged.
    Acked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum App {
    /// The application holds the connection.
    Open,
    /// The application closed it or was told `Closed`: no more events; received data is
    /// acknowledged and dropped.
    Gone,
}

/// Where a connection's events go.
pub struct Events<'a> {
    pub id: ConnectionId,
    pub queue: &'a mut VecDeque<UtpEvent>,
}

impl Events<'_> {
    fn push(&mut self, event: UtpEvent) {
        self.queue.push_back(event);
    }
}

/// One connection's state.
#[derive(Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub recv_id: u16,
    pub send_id: u16,
    pub incoming: bool,
    /// An incoming connection is unconfirmed until the peer sends something after its SYN.
    pub confirmed: bool,
    state: State,
    cfg: UtpConfig,
    epoch: Instant,

    // Sending.
    seq_nr: u16,
    /// The peer's cumulative ack (everything up to it arrived).
    acked_seq: u16,
    sent: VecDeque<SentPacket>,
    send_buf: SendBuffer,
    bytes_in_flight: usize,
    lost_packets: usize,
    peer_wnd: usize,
    cc: Ledbat,
    rtt: RttEstimator,
    timeouts: u32,
    rto_deadline: Option<Instant>,
    dup_acks: u32,
    /// Losses of packets up to this one belong to the window already cut.
    recovery_seq: u16,
    /// Nagle: the undersized data packet in flight, if any.
    small_in_flight: Option<u16>,
    /// A packet may be sent despite a closed peer window (timer fired with nothing in flight).
    probe: bool,
    fin: Fin,

    // Receiving.
    ack_nr: u16,
    /// The sequence number of the SYN (ours or the peer's).
    syn_seq: u16,
    /// Our first sequence number.
    initial_seq: u16,
    /// An incoming connection's SYN came again: repeat the SYN-ACK.
    syn_ack_pending: bool,
    recv: ReceiveBuffer,
    remote_fin: Option<u16>,
    eof: bool,
    ack_pending: bool,
    reply_micro: u32,
    last_adv_wnd: usize,
    /// This connection's share of the socket's total window (set by the socket).
    window_share: usize,
    /// When payload last arrived (the socket shares its window among recent receivers).
    last_data: Option<Instant>,

    // Application and life cycle.
    app: App,
    readable_queued: bool,
    writable_queued: bool,
    want_writable: bool,
    connect_deadline: Option<Instant>,
    last_recv: Instant,
    linger_deadline: Option<Instant>,
    finished: bool,
    /// In the socket's transmit queue.
    pub queued: bool,

    packets_sent: u64,
    packets_received: u64,
    retransmits: u64,
}

impl Connection {
    fn new(
        now: Instant,
        cfg: UtpConfig,
        epoch: Instant,
        peer: SocketAddr,
        ids: (u16, u16),
        seq_nr: u16,
    ) -> Connection {
        let mss = cfg.max_payload;
        Connection {
            peer,
            recv_id: ids.0,
            send_id: ids.1,
            incoming: false,
            confirmed: true,
            state: State::SynSent,
            cfg,
            epoch,
            seq_nr,
            acked_seq: seq_nr.wrapping_sub(1),
            sent: VecDeque::new(),
            send_buf: SendBuffer::new(cfg.send_buffer),
            bytes_in_flight: 0,
            lost_packets: 0,
            peer_wnd: mss,
            cc: Ledbat::new(
                mss,
                mss * INITIAL_WINDOW_PACKETS,
                cfg.send_buffer,
                cfg.target_delay,
            ),
            rtt: RttEstimator::new(cfg.min_rto),
            timeouts: 0,
            rto_deadline: None,
            dup_acks: 0,
            recovery_seq: seq_nr.wrapping_sub(1),
            small_in_flight: None,
            probe: false,
            fin: Fin::None,
            ack_nr: 0,
            syn_seq: 0,
            initial_seq: seq_nr,
            syn_ack_pending: false,
            recv: ReceiveBuffer::new(cfg.recv_buffer),
            remote_fin: None,
            eof: false,
            ack_pending: false,
            reply_micro: 0,
            last_adv_wnd: cfg.recv_buffer,
            window_share: cfg.recv_window_total,
            last_data: None,
            app: App::Open,
            readable_queued: false,
            writable_queued: false,
            want_writable: false,
            connect_deadline: Some(now + cfg.connect_timeout),
            last_recv: now,
            linger_deadline: None,
            finished: false,
            queued: false,
            packets_sent: 0,
            packets_received: 0,
            retransmits: 0,
        }
    }

    /// We open a connection: receive id `recv_id`, send id `recv_id + 1`; the SYN is queued.
    pub fn outgoing(
        now: Instant,
        cfg: UtpConfig,
        epoch: Instant,
        peer: SocketAddr,
        recv_id: u16,
        seq_nr: u16,
    ) -> Connection {
        let mut c = Connection::new(
            now,
            cfg,
            epoch,
            peer,
            (recv_id, recv_id.wrapping_add(1)),
            seq_nr,
        );
        c.sent.push_back(SentPacket {
            seq: seq_nr,
            kind: Kind::Syn,
            offset: 0,
            len: 0,
            sent_at: now,
            transmissions: 0,
            acked: false,
            lost: true,
            fast_resent: false,
        });
        c.lost_packets = 1;
        c.syn_seq = seq_nr;
        c.seq_nr = seq_nr.wrapping_add(1);
        c
    }

    /// A peer's SYN opened a connection: receive id = its id + 1, send id = its id; the
    /// SYN-ACK (a STATE) is queued. The connection stays unconfirmed until the peer sends more.
    pub fn incoming(
        now: Instant,
        cfg: UtpConfig,
        epoch: Instant,
        peer: SocketAddr,
        syn: &Header,
        seq_nr: u16,
    ) -> Connection {
        let mut c = Connection::new(
            now,
            cfg,
            epoch,
            peer,
            (syn.connection_id.wrapping_add(1), syn.connection_id),
            seq_nr,
        );
        c.incoming = true;
        c.confirmed = false;
        c.state = State::Connected;
        c.ack_nr = syn.seq_nr;
        c.syn_seq = syn.seq_nr;
        c.syn_ack_pending = true;
        // libtorrent's SYN says 0; assume one packet until the peer's next packet tells.
        c.peer_wnd = (syn.wnd_size as usize).max(cfg.max_payload);
        c.reply_micro = c.timestamp(now).wrapping_sub(syn.timestamp_us);
        c.packets_received = 1;
        c
    }

    fn timestamp(&self, now: Instant) -> u32 {
        // Truncation is the point: the clock wraps every 71 minutes and only differences count.
        now.saturating_duration_since(self.epoch).as_micros() as u32
    }

    /// The connection is over and can be forgotten.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Still connecting (our SYN unanswered).
    pub fn is_connecting(&self) -> bool {
        self.state == State::SynSent
    }

    /// The application still holds it.
    pub fn is_open(&self) -> bool {
        self.app == App::Open && !self.finished
    }

    /// The last sequence number we sent (the FIN's once it is out).
    fn last_sent_seq(&self) -> u16 {
        match self.fin {
            // The FIN did not advance `seq_nr`.
            Fin::Sent | Fin::Acked => self.seq_nr,
            Fin::None | Fin::Pending => self.seq_nr.wrapping_sub(1),
        }
    }

    fn mss(&self) -> usize {
        self.cfg.max_payload
    }

    fn rto(&self) -> Duration {
        let backoff = 1u32 << self.timeouts.min(16);
        self.rtt.rto().saturating_mul(backoff).min(MAX_RTO)
    }

    fn window(&self) -> usize {
        self.cc.window().min(self.peer_wnd)
    }

    fn fail(&mut self, reason: CloseReason, ev: &mut Events) {
        if self.app == App::Open {
            ev.push(UtpEvent::Closed {
                conn: ev.id,
                reason,
            });
            self.app = App::Gone;
        }
        self.finished = true;
    }

    /// Handles a packet routed to this connection.
    pub fn handle_packet(&mut self, now: Instant, pkt: &Packet, ev: &mut Events) {
        let h = pkt.header;
        if h.packet_type == PacketType::Syn {
            // The peer did not get our SYN-ACK: send it again.
            if self.incoming && h.seq_nr == self.syn_seq && !self.confirmed {
                self.syn_ack_pending = true;
            }
            return;
        }
        if seq_less(self.last_sent_seq(), h.ack_nr) {
            return;
        }
        if h.packet_type == PacketType::Reset {
            // (Only one that acks something we sent: a blind third party cannot reset us.)
            self.fail(CloseReason::Reset, ev);
            return;
        }
        if self.state == State::SynSent {
            // Only the SYN-ACK tells where the peer's sequence numbers start: a data packet
            // overtaking it is dropped (and sent again by the peer).
            if h.packet_type != PacketType::State || h.ack_nr != self.syn_seq {
                return;
            }
            self.state = State::Connected;
            // The SYN-ACK's sequence number is the peer's first data packet's.
            self.ack_nr = h.seq_nr.wrapping_sub(1);
            self.connect_deadline = None;
            if self.app == App::Open {
                ev.push(UtpEvent::Connected(ev.id));
            }
        }
        if !self.confirmed {
            self.confirmed = true;
            self.connect_deadline = None;
        }
        self.last_recv = now;
        self.packets_received += 1;
        if h.timestamp_us != 0 {
            self.reply_micro = self.timestamp(now).wrapping_sub(h.timestamp_us);
        }
        // uTorrent has been seen sending i32::MAX for "no sample".
        if h.timestamp_diff_us != 0 && h.timestamp_diff_us != i32::MAX as u32 {
            self.cc.delay_sample(now, h.timestamp_diff_us);
        }
        self.peer_wnd = h.wnd_size as usize;
        self.process_acks(now, &h, pkt.sack, ev);
        match h.packet_type {
            PacketType::Data => self.receive_data(now, h.seq_nr, pkt.payload, ev),
            PacketType::Fin => self.receive_fin(h.seq_nr, ev),
            _ => {}
        }
        self.check_closed(now);
    }

    fn process_acks(&mut self, now: Instant, h: &Header, sack: Option<&[u8]>, ev: &mut Events) {
        let in_flight_before = self.bytes_in_flight;
        let mut acked_bytes = 0usize;
        let mut min_rtt: Option<Duration> = None;
        let progressed = seq_less(self.acked_seq, h.ack_nr);
        if progressed {
            self.acked_seq = h.ack_nr;
            self.dup_acks = 0;
            self.timeouts = 0;
            while let Some(p) = self.sent.front() {
                if seq_less(h.ack_nr, p.seq) {
                    break;
                }
                if let Some(p) = self.sent.pop_front() {
                    self.account_acked(now, &p, &mut acked_bytes, &mut min_rtt);
                }
            }
        } else if h.packet_type == PacketType::State
            && h.ack_nr == self.acked_seq
            && self.bytes_in_flight > 0
        {
            self.dup_acks += 1;
        }
        if let (Some(bits), Some(front)) = (sack, self.sent.front().map(|p| p.seq)) {
            self.process_sack(now, h.ack_nr, front, bits, &mut acked_bytes, &mut min_rtt);
        }
        // Selectively acked packets may now lead the queue.
        while self.sent.front().is_some_and(|p| p.acked) {
            self.sent.pop_front();
        }
        self.release_acked();
        if self.dup_acks >= DUP_ACK_LIMIT {
            self.dup_acks = 0;
            if let Some(i) = self.sent.iter().position(|p| !p.acked) {
                if self.sent.get(i).is_some_and(|p| !p.lost && !p.fast_resent) {
                    self.declare_lost(i);
                }
            }
        }
        if acked_bytes > 0 {
            let cwnd_limited = in_flight_before + self.mss() >= self.cc.window();
            self.cc
                .on_ack(acked_bytes, in_flight_before, min_rtt, cwnd_limited);
        }
        if progressed || acked_bytes > 0 {
            // (A FIN carries no bytes but still waits for its ack.)
            let waiting = self.bytes_in_flight > 0 || self.fin == Fin::Sent;
            self.rto_deadline = if waiting {
                Some(now + self.rto())
            } else {
                None
            };
            self.maybe_writable(ev);
        }
    }

    fn process_sack(
        &mut self,
        now: Instant,
        ack_nr: u16,
        front: u16,
        bits: &[u8],
        acked_bytes: &mut usize,
        min_rtt: &mut Option<Duration>,
    ) {
        let first = ack_nr.wrapping_add(2);
        for (byte_index, byte) in bits.iter().enumerate() {
            if *byte == 0 {
                continue;
            }
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let seq = first.wrapping_add((byte_index * 8 + bit) as u16);
                let index = usize::from(seq.wrapping_sub(front));
                let Some(p) = self.sent.get(index).copied() else {
                    continue;
                };
                if p.seq != seq || p.acked {
                    continue;
                }
                self.account_acked(now, &p, acked_bytes, min_rtt);
                if let Some(slot) = self.sent.get_mut(index) {
                    slot.acked = true;
                    slot.lost = false;
                }
            }
        }
        // A hole followed by enough acked packets is a loss.
        let mut acked_after = 0;
        for i in (0..self.sent.len()).rev() {
            let Some(p) = self.sent.get(i) else {
                continue;
            };
            if p.acked {
                acked_after += 1;
            } else if acked_after >= SACK_LOSS_THRESHOLD && !p.lost && !p.fast_resent {
                self.declare_lost(i);
            }
        }
    }

    /// Bookkeeping for a packet acknowledged (cumulatively or selectively).
    fn account_acked(
        &mut self,
        now: Instant,
        p: &SentPacket,
        acked_bytes: &mut usize,
        min_rtt: &mut Option<Duration>,
    ) {
        if p.acked {
            return;
        }
        if p.lost {
            self.lost_packets -= 1;
        } else {
            self.bytes_in_flight -= p.len as usize;
        }
        *acked_bytes += p.len as usize;
        if p.transmissions == 1 {
            let rtt = now.saturating_duration_since(p.sent_at);
            self.rtt.sample(rtt);
            *min_rtt = Some(min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        if self.small_in_flight == Some(p.seq) {
            self.small_in_flight = None;
        }
        if p.kind == Kind::Fin {
            self.fin = Fin::Acked;
        }
    }

    fn declare_lost(&mut self, index: usize) {
        let Some(p) = self.sent.get_mut(index) else {
            return;
        };
        p.lost = true;
        p.fast_resent = true;
        let (seq, len) = (p.seq, p.len as usize);
        self.bytes_in_flight -= len;
        self.lost_packets += 1;
        if seq_less(self.recovery_seq, seq) {
            // One window cut per window of data.
            self.cc.on_loss();
            self.recovery_seq = self.seq_nr.wrapping_sub(1);
        }
    }

    fn release_acked(&mut self) {
        let upto = self
            .sent
            .front()
            .map_or(self.send_buf.unsent_offset(), |p| p.offset);
        self.send_buf.release_before(upto);
    }

    fn maybe_writable(&mut self, ev: &mut Events) {
        if self.want_writable
            && self.app == App::Open
            && self.send_buf.free() >= self.send_buf.capacity() / 2
        {
            self.want_writable = false;
            if !self.writable_queued {
                self.writable_queued = true;
                ev.push(UtpEvent::Writable(ev.id));
            }
        }
    }

    fn receive_data(&mut self, now: Instant, seq: u16, payload: &[u8], ev: &mut Events) {
        self.last_data = Some(now);
        if self.remote_fin.is_some_and(|fin| !seq_less(seq, fin)) {
            return;
        }
        let distance = seq.wrapping_sub(self.ack_nr.wrapping_add(1));
        if distance >= 0x8000 {
            // Already delivered: our ack was probably lost, repeat it.
            self.ack_pending = true;
            return;
        }
        let distance = usize::from(distance);
        if distance >= REORDER_PACKETS {
            return;
        }
        if self.app == App::Gone {
            // Nobody reads: acknowledge in-order packets and drop the bytes.
            if distance == 0 {
                self.ack_nr = seq;
                self.ack_pending = true;
                self.reach_fin(ev);
            }
            return;
        }
        // Every packet in the span gets an ack: it only claims what we really hold.
        self.ack_pending = true;
        match self.recv.accept(distance, payload) {
            Accepted::Delivered(n) => {
                self.ack_nr = self.ack_nr.wrapping_add(n);
                if self.recv.ready_len() > 0 && !self.readable_queued {
                    self.readable_queued = true;
                    ev.push(UtpEvent::Readable(ev.id));
                }
                self.reach_fin(ev);
            }
            Accepted::Stored | Accepted::Dropped => {}
        }
    }

    fn receive_fin(&mut self, seq: u16, ev: &mut Events) {
        self.ack_pending = true;
        if self.remote_fin.is_none() {
            let distance = usize::from(seq.wrapping_sub(self.ack_nr.wrapping_add(1)));
            if distance >= REORDER_PACKETS {
                return;
            }
            self.remote_fin = Some(seq);
            self.recv.truncate_early(distance);
        }
        self.reach_fin(ev);
    }

    /// Once everything before the peer's FIN arrived, ack the FIN and end the read side.
    fn reach_fin(&mut self, ev: &mut Events) {
        if self.remote_fin == Some(self.ack_nr.wrapping_add(1)) {
            self.ack_nr = self.ack_nr.wrapping_add(1);
            self.eof = true;
            self.ack_pending = true;
        }
        if self.eof {
            self.maybe_peer_closed(ev);
        }
    }

    fn maybe_peer_closed(&mut self, ev: &mut Events) {
        if self.eof && self.app == App::Open && self.recv.ready_len() == 0 {
            ev.push(UtpEvent::Closed {
                conn: ev.id,
                reason: CloseReason::PeerClosed,
            });
            self.app = App::Gone;
            self.recv.clear();
            if self.fin == Fin::None {
                self.fin = Fin::Pending;
            }
        }
    }

    fn check_closed(&mut self, now: Instant) {
        if self.fin == Fin::Acked && self.linger_deadline.is_none() {
            // Wait a little for the peer's FIN (or its retransmission) to ack it.
            let wait = if self.eof {
                LINGER
            } else {
                LINGER.max(self.rto() * 2)
            };
            self.linger_deadline = Some(now + wait);
        }
    }

    /// Application write: buffers what fits, returns how much.
    pub fn write(&mut self, data: &[u8]) -> usize {
        if !self.is_open() || self.fin != Fin::None {
            return 0;
        }
        let n = self.send_buf.write(data);
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }

    /// In-order bytes the application may read now.
    pub fn readable_len(&self) -> usize {
        if self.is_open() {
            self.recv.ready_len()
        } else {
            0
        }
    }

    /// Application read: moves in-order bytes into `buf`.
    pub fn read(&mut self, buf: &mut [u8], ev: &mut Events) -> usize {
        if !self.is_open() {
            return 0;
        }
        let n = self.recv.read(buf);
        // Tell a sender stalled on our window that it opened.
        if self.advertised_window()
            >= self.last_adv_wnd + self.window_share.min(self.recv.capacity()) / 4
        {
            self.ack_pending = true;
        }
        self.maybe_peer_closed(ev);
        n
    }

    /// A `Readable` event was taken off the queue.
    pub fn readable_polled(&mut self) {
        self.readable_queued = false;
    }

    /// A `Writable` event was taken off the queue.
    pub fn writable_polled(&mut self) {
        self.writable_queued = false;
    }

    /// Application close: flush, then FIN; no more events. A connection still connecting is
    /// simply dropped.
    pub fn close(&mut self) {
        self.app = App::Gone;
        self.recv.clear();
        if self.state == State::SynSent {
            self.finished = true;
        } else if self.fin == Fin::None {
            self.fin = Fin::Pending;
        }
    }

    /// The RESET that aborts this connection.
    pub fn reset_header(&self, now: Instant) -> Header {
        Header {
            packet_type: PacketType::Reset,
            connection_id: self.send_id,
            timestamp_us: self.timestamp(now),
            timestamp_diff_us: self.reply_micro,
            wnd_size: 0,
            seq_nr: self.seq_nr,
            ack_nr: self.ack_nr,
        }
    }

    /// Marks the connection aborted (the socket sends the RESET).
    pub fn abort(&mut self) {
        self.app = App::Gone;
        self.finished = true;
    }

    /// When `handle_timeout` must next run for this connection.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let idle = self.last_recv + self.cfg.idle_timeout;
        [
            self.rto_deadline,
            self.connect_deadline,
            self.linger_deadline,
            Some(idle),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant, ev: &mut Events) {
        if self.finished {
            return;
        }
        if self.connect_deadline.is_some_and(|d| now >= d) {
            self.fail(CloseReason::ConnectTimeout, ev);
            return;
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            self.fail(CloseReason::IdleTimeout, ev);
            return;
        }
        if self.linger_deadline.is_some_and(|d| now >= d) {
            self.finished = true;
            return;
        }
        if self.rto_deadline.is_some_and(|d| now >= d) {
            self.on_rto(now, ev);
        }
    }

    fn on_rto(&mut self, now: Instant, ev: &mut Events) {
        self.rto_deadline = None;
        if self.sent.iter().any(|p| !p.acked && !p.lost) {
            self.timeouts += 1;
            // Our FIN answering the peer's may go unacked because the peer is already gone.
            let only_fin = self.sent.iter().all(|p| p.acked || p.kind == Kind::Fin);
            let limit = if only_fin && self.eof {
                FIN_RETRIES
            } else {
                self.cfg.max_retransmits
            };
            if self.state == State::Connected && self.timeouts > limit {
                self.fail(CloseReason::TimedOut, ev);
                return;
            }
            for i in 0..self.sent.len() {
                let Some(p) = self.sent.get_mut(i) else {
                    break;
                };
                p.fast_resent = false;
                if !p.acked && !p.lost {
                    p.lost = true;
                    self.bytes_in_flight -= p.len as usize;
                    self.lost_packets += 1;
                }
            }
            if self.state == State::Connected {
                self.cc.on_timeout();
                self.recovery_seq = self.seq_nr.wrapping_sub(1);
            }
            self.rto_deadline = Some(now + self.rto());
        } else if self.window_blocked() {
            self.probe = true;
        }
    }

    /// Unsent data waits on a peer window too small for it while nothing is in flight.
    fn window_blocked(&self) -> bool {
        let unsent = self.send_buf.unsent_len();
        self.state == State::Connected
            && unsent > 0
            && self.bytes_in_flight == 0
            && self.peer_wnd < unsent.min(self.mss())
    }

    /// Something could go out now (or the queue entry is stale, which is harmless).
    pub fn wants_transmit(&self) -> bool {
        !self.finished
            && (self.ack_pending
                || self.syn_ack_pending
                || self.lost_packets > 0
                || self.send_buf.unsent_len() > 0
                || self.fin == Fin::Pending)
    }

    /// Writes the next datagram into `out`, if there is one to send now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.finished {
            return false;
        }
        if self.lost_packets > 0 && self.retransmit(now, out) {
            return true;
        }
        if self.state == State::SynSent {
            return false;
        }
        if self.syn_ack_pending {
            // The SYN-ACK goes before any data (the peer learns our first sequence number from
            // it) and names that number however many data packets followed.
            self.syn_ack_pending = false;
            self.write_packet(now, PacketType::State, self.initial_seq, MAX_SACK_LEN, out);
            return true;
        }
        if self.send_data(now, out) || self.send_fin(now, out) {
            return true;
        }
        if self.ack_pending {
            self.write_packet(now, PacketType::State, self.seq_nr, MAX_SACK_LEN, out);
            return true;
        }
        false
    }

    fn retransmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        let Some(i) = self.sent.iter().position(|p| p.lost && !p.acked) else {
            return false;
        };
        let Some(p) = self.sent.get(i).copied() else {
            return false;
        };
        let len = p.len as usize;
        // A fast retransmission (the acks say it is missing) goes out whatever the window, as
        // libtorrent does: waiting for room would stall the stream behind the hole.
        if !p.fast_resent && self.bytes_in_flight > 0 && self.bytes_in_flight + len > self.window()
        {
            return false;
        }
        let ptype = match p.kind {
            Kind::Syn => PacketType::Syn,
            Kind::Data => PacketType::Data,
            Kind::Fin => PacketType::Fin,
        };
        self.write_packet(now, ptype, p.seq, MAX_DATA_SACK_LEN, out);
        self.send_buf.copy_range(p.offset, len, out);
        if let Some(slot) = self.sent.get_mut(i) {
            slot.lost = false;
            slot.sent_at = now;
            slot.transmissions = slot.transmissions.saturating_add(1);
            if slot.transmissions > 1 {
                self.retransmits += 1;
            }
        }
        self.lost_packets -= 1;
        self.bytes_in_flight += len;
        self.rto_deadline.get_or_insert(now + self.rto());
        true
    }

    fn send_data(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        let unsent = self.send_buf.unsent_len();
        if unsent == 0 || self.sent.len() >= MAX_PACKETS_IN_FLIGHT {
            return false;
        }
        let mss = self.mss();
        let mut len = unsent.min(mss);
        let room = self.window().saturating_sub(self.bytes_in_flight);
        if len > room {
            // Send a partial packet only when it fits all that is left (no silly windows), or
            // as a probe when the peer's window stayed shut.
            if self.bytes_in_flight == 0 && self.probe {
                self.probe = false;
            } else {
                if self.bytes_in_flight == 0 && self.rto_deadline.is_none() {
                    self.rto_deadline = Some(now + self.rto());
                }
                return false;
            }
        }
        if len < mss && self.cfg.nagle && self.small_in_flight.is_some() && self.fin == Fin::None {
            return false;
        }
        len = len.min(u32::MAX as usize);
        let offset = self.send_buf.take_unsent(len);
        let seq = self.seq_nr;
        self.write_packet(now, PacketType::Data, seq, MAX_DATA_SACK_LEN, out);
        self.send_buf.copy_range(offset, len, out);
        self.sent.push_back(SentPacket {
            seq,
            kind: Kind::Data,
            offset,
            len: len as u32,
            sent_at: now,
            transmissions: 1,
            acked: false,
            lost: false,
            fast_resent: false,
        });
        if len < mss {
            self.small_in_flight = Some(seq);
        }
        self.seq_nr = seq.wrapping_add(1);
        self.bytes_in_flight += len;
        self.rto_deadline.get_or_insert(now + self.rto());
        true
    }

    fn send_fin(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.fin != Fin::Pending || self.send_buf.unsent_len() > 0 {
            return false;
        }
        let seq = self.seq_nr;
        self.write_packet(now, PacketType::Fin, seq, MAX_DATA_SACK_LEN, out);
        self.sent.push_back(SentPacket {
            seq,
            kind: Kind::Fin,
            offset: self.send_buf.unsent_offset(),
            len: 0,
            sent_at: now,
            transmissions: 1,
            acked: false,
            lost: false,
            fast_resent: false,
        });
        self.fin = Fin::Sent;
        self.rto_deadline.get_or_insert(now + self.rto());
        true
    }

    /// The receive window we announce: the room left in the receive buffer, within our share
    /// of the socket's total (all of it once the application is gone: we drop what comes).
    fn advertised_window(&self) -> usize {
        let room = if self.app == App::Gone {
            self.recv.capacity()
        } else {
            self.recv.window()
        };
        room.min(self.window_share)
    }

    /// Sets this connection's share of the socket's total receive window.
    pub fn set_window_share(&mut self, share: usize) {
        self.window_share = share;
    }

    /// Payload arrived at or after `since`.
    pub fn received_data_since(&self, since: Instant) -> bool {
        self.last_data.is_some_and(|t| t >= since)
    }

    /// Writes a header (and a selective ack of at most `max_sack` bytes when packets are held
    /// out of order) into `out`. Every packet carries our ack, so the pending ack is cleared
    /// when the whole bitmask fit.
    fn write_packet(
        &mut self,
        now: Instant,
        ptype: PacketType,
        seq_nr: u16,
        max_sack: usize,
        out: &mut Vec<u8>,
    ) {
        let wnd = self.advertised_window();
        let syn = ptype == PacketType::Syn;
        let header = Header {
            packet_type: ptype,
            connection_id: if syn { self.recv_id } else { self.send_id },
            timestamp_us: self.timestamp(now),
            timestamp_diff_us: self.reply_micro,
            wnd_size: u32::try_from(wnd).unwrap_or(u32::MAX),
            seq_nr,
            ack_nr: if syn { 0 } else { self.ack_nr },
        };
        let mut sack = [0u8; MAX_SACK_LEN];
        let full = self.recv.write_sack(&mut sack);
        out.clear();
        if full > 0 && !syn {
            let len = full.min(max_sack / 4 * 4);
            header.write(EXTENSION_SACK, out);
            out.push(0);
            out.push(len as u8);
            out.extend_from_slice(sack.get(..len).unwrap_or_default());
            if len == full {
                self.ack_pending = false;
            }
        } else {
            header.write(0, out);
            if !syn {
                self.ack_pending = false;
            }
        }
        self.last_adv_wnd = wnd;
        self.packets_sent += 1;
    }

    /// Recounts what the counters summarise (tests only).
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let lost = self.sent.iter().filter(|p| p.lost && !p.acked).count();
        assert_eq!(lost, self.lost_packets, "lost count: {:?}", self.sent);
        let in_flight: usize = self
            .sent
            .iter()
            .filter(|p| !p.lost && !p.acked)
            .map(|p| p.len as usize)
            .sum();
        assert_eq!(in_flight, self.bytes_in_flight, "bytes in flight");
        for (i, p) in self.sent.iter().enumerate() {
            let first = self.sent.front().map_or(0, |f| f.seq);
            assert_eq!(p.seq, first.wrapping_add(i as u16), "sequence gap");
        }
    }

    /// Counters and windows, for tests and diagnostics.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            cwnd: self.cc.window(),
            slow_start: self.cc.in_slow_start(),
            bytes_in_flight: self.bytes_in_flight,
            packets_in_flight: self.sent.len(),
            peer_window: self.peer_wnd,
            srtt: self.rtt.srtt(),
            rto: self.rto(),
            queuing_delay: self.cc.queuing_delay(),
            send_buffered: self.send_buf.len(),
            recv_buffered: self.recv.ready_len(),
            reorder_buffered: self.recv.early_bytes(),
            reorder_packets: self.recv.early_packets(),
            packets_sent: self.packets_sent,
            packets_received: self.packets_received,
            retransmits: self.retransmits,
        }
    }
}
