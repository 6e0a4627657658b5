//! The byte buffers of one connection: the send buffer (written by the application, read by
//! packetisation and retransmission) and the receive buffer (in-order bytes waiting for the
//! application, plus the reorder buffer of packets that arrived early).
//!
//! Invariants: the send buffer never holds more than its capacity; the receive side never holds
//! more than its capacity in-order and reordered payload bytes together, and at most
//! [`REORDER_PACKETS`] early packets; early packets always leave room for the packet that
//! would make them in order. Bytes are copied once in (application or datagram) and once
//! out (datagram or application); early packets take one extra copy when they become in order.

use std::collections::VecDeque;

/// Early packets kept at most (the span after the one we wait for).
pub const REORDER_PACKETS: usize = 1024;
/// Payload buffers of delivered early packets kept for reuse.
const SPARE_BUFFERS: usize = 64;

/// Outgoing bytes from the first unacknowledged one to the last written one.
#[derive(Debug)]
pub struct SendBuffer {
    data: VecDeque<u8>,
    /// Stream offset of `data[0]`.
    start: u64,
    /// Stream offset of the first byte not yet put in a packet.
    unsent: u64,
    capacity: usize,
}

impl SendBuffer {
    /// An empty buffer holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> SendBuffer {
        SendBuffer {
            data: VecDeque::new(),
            start: 0,
            unsent: 0,
            capacity,
        }
    }

    /// Appends as much of `bytes` as fits; returns how much.
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.free());
        let accepted = bytes.get(..n).unwrap_or_default();
        self.data.extend(accepted);
        n
    }

    /// Room left.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.data.len())
    }

    /// Bytes held (sent but unacknowledged, plus unsent).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes written but not yet put in a packet.
    pub fn unsent_len(&self) -> usize {
        let end = self.start + self.data.len() as u64;
        usize::try_from(end - self.unsent).unwrap_or(usize::MAX)
    }

    /// Stream offset of the next byte to packetise.
    pub fn unsent_offset(&self) -> u64 {
        self.unsent
    }

    /// Marks the next `len` unsent bytes as packetised; returns their stream offset.
    pub fn take_unsent(&mut self, len: usize) -> u64 {
        let at = self.unsent;
        self.unsent += len.min(self.unsent_len()) as u64;
        at
    }

    /// Appends the bytes `[offset, offset + len)` to `out`; the range must lie in the buffer
    /// (anything outside it is skipped).
    pub fn copy_range(&self, offset: u64, len: usize, out: &mut Vec<u8>) {
        let Some(from) = offset
            .checked_sub(self.start)
            .and_then(|d| usize::try_from(d).ok())
        else {
            return;
        };
        let (a, b) = self.data.as_slices();
        let to = from.saturating_add(len);
        if from < a.len() {
            out.extend_from_slice(a.get(from..to.min(a.len())).unwrap_or_default());
        }
        if to > a.len() {
            let (bf, bt) = (from.saturating_sub(a.len()), to - a.len());
            out.extend_from_slice(b.get(bf..bt.min(b.len())).unwrap_or_default());
        }
    }

    /// Drops the bytes before stream offset `offset` (they were acknowledged).
    pub fn release_before(&mut self, offset: u64) {
        let n = offset
            .saturating_sub(self.start)
            .min(self.data.len() as u64);
        self.data.drain(..n as usize);
        self.start += n;
    }
}

/// What [`ReceiveBuffer::accept`] did with a data packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// In order: this many sequence numbers are now delivered (the packet plus the early ones
    /// it made contiguous).
    Delivered(u16),
    /// Early: stored until the gap before it fills.
    Stored,
    /// Already held, beyond the reorder span, or no room: dropped (and not to be acked).
    Dropped,
}

/// In-order bytes for the application plus early packets.
#[derive(Debug)]
pub struct ReceiveBuffer {
    ready: VecDeque<u8>,
    /// Slot `i` holds the packet `i` sequence numbers after the one we wait for; slot 0 is
    /// always empty (that packet is delivered as soon as it comes).
    early: VecDeque<Option<Vec<u8>>>,
    early_bytes: usize,
    early_packets: usize,
    spare: Vec<Vec<u8>>,
    capacity: usize,
    /// Room kept free of early packets for the packet we wait for: the largest payload seen
    /// (at least [`MIN_RESERVE`], at most half the capacity). Without it, packets a sender
    /// wrongly declared lost and sent again could fill the buffer with early data and leave no
    /// room for the one packet that would let it drain.
    reserve: usize,
}

/// Smallest room kept for the next in-order packet (a full Ethernet-sized payload).
const MIN_RESERVE: usize = 1500;

impl ReceiveBuffer {
    /// An empty buffer holding at most `capacity` payload bytes.
    pub fn new(capacity: usize) -> ReceiveBuffer {
        ReceiveBuffer {
            ready: VecDeque::new(),
            early: VecDeque::new(),
            early_bytes: 0,
            early_packets: 0,
            spare: Vec::new(),
            capacity,
            reserve: MIN_RESERVE.min(capacity / 2),
        }
    }

    /// Room left for early packets: the window we advertise.
    pub fn window(&self) -> usize {
        self.capacity
            .saturating_sub(self.ready.len() + self.early_bytes + self.reserve)
    }

    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// In-order bytes waiting for the application.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Payload bytes of early packets.
    pub fn early_bytes(&self) -> usize {
        self.early_bytes
    }

    /// Early packets held.
    pub fn early_packets(&self) -> usize {
        self.early_packets
    }

    /// Takes a data packet `distance` sequence numbers after the one we wait for (0: in order).
    pub fn accept(&mut self, distance: usize, payload: &[u8]) -> Accepted {
        self.reserve = self.reserve.max(payload.len()).min(self.capacity / 2);
        let used = self.ready.len() + self.early_bytes + payload.len();
        let room = if distance == 0 {
            self.capacity
        } else {
            self.capacity.saturating_sub(self.reserve)
        };
        if distance >= REORDER_PACKETS || used > room {
            return Accepted::Dropped;
        }
        if distance > 0 {
            if self.early.len() <= distance {
                self.early.resize_with(distance + 1, || None);
            }
            let Some(slot) = self.early.get_mut(distance) else {
                return Accepted::Dropped;
            };
            if slot.is_some() {
                return Accepted::Dropped;
            }
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(payload);
            *slot = Some(buf);
            self.early_bytes += payload.len();
            self.early_packets += 1;
            return Accepted::Stored;
        }
        self.ready.extend(payload);
        let mut delivered: u16 = 1;
        self.early.pop_front();
        while let Some(Some(_)) = self.early.front() {
            if let Some(Some(buf)) = self.early.pop_front() {
                self.early_bytes -= buf.len();
                self.early_packets -= 1;
                self.ready.extend(buf.iter());
                if self.spare.len() < SPARE_BUFFERS {
                    self.spare.push(buf);
                }
            }
            delivered = delivered.wrapping_add(1);
        }
        Accepted::Delivered(delivered)
    }

    /// Drops early packets `distance` or more after the one we wait for (data past a FIN).
    pub fn truncate_early(&mut self, distance: usize) {
        while self.early.len() > distance {
            if let Some(Some(buf)) = self.early.pop_back() {
                self.early_bytes -= buf.len();
                self.early_packets -= 1;
            }
        }
    }

    /// Moves in-order bytes into `out`; returns how many.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.ready.len());
        let (a, b) = self.ready.as_slices();
        let from_a = n.min(a.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..from_a), a.get(..from_a)) {
            dst.copy_from_slice(src);
        }
        if let (Some(dst), Some(src)) = (out.get_mut(from_a..n), b.get(..n - from_a)) {
            dst.copy_from_slice(src);
        }
        self.ready.drain(..n);
        n
    }

    /// Forgets everything (the application closed the connection).
    pub fn clear(&mut self) {
        self.ready.clear();
        self.ready.shrink_to_fit();
        self.early.clear();
        self.early_bytes = 0;
        self.early_packets = 0;
        self.spare.clear();
    }

    /// Writes the selective-ack bitmask into `out` (at most `out.len()` bytes, a multiple of 4):
    /// bit `i` says whether the packet `i + 2` after our last in-order one (`i + 1` slots after
    /// the one we wait for) is held. Returns its length, 0 when nothing is held.
    pub fn write_sack(&self, out: &mut [u8]) -> usize {
        if self.early_packets == 0 {
            return 0;
        }
        let bits = self.early.len().saturating_sub(1);
        let len = bits.div_ceil(8).div_ceil(4).max(1) * 4;
        let len = len.min(out.len() / 4 * 4);
        let Some(mask) = out.get_mut(..len) else {
            return 0;
        };
        mask.fill(0);
        for (i, slot) in self.early.iter().skip(1).take(len * 8).enumerate() {
            if slot.is_some() {
                if let Some(byte) = mask.get_mut(i / 8) {
                    *byte |= 1 << (i % 8);
                }
            }
        }
        len
    }
}
