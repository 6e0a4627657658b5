//! uTP packets (BEP 29): the 20-byte header, the extension chain and the selective-ack bitmask,
//! plus wrapping sequence-number arithmetic.
//!
//! Invariants: [`Packet::parse`] never panics and never reads past the datagram: each extension's
//! two-byte prefix and its length are checked against the bytes left before they are used, so a
//! chain that claims more than the datagram holds is an error, and a chain can hold at most
//! `len / 2` extensions (each one consumes at least two bytes). Unknown extensions are skipped;
//! only the first selective ack counts. Nothing is allocated: the bitmask and the payload borrow
//! the datagram.

use thiserror::Error;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The only protocol version (low nibble of the first byte).
pub const VERSION: u8 = 1;
/// Extension id of the selective ack.
pub const EXTENSION_SACK: u8 = 1;
/// Bytes of the selective-ack bitmask we send at most: a multiple of 4 as BEP 29 asks, and
/// enough for 1024 packets past the one we wait for (our reorder buffer's span).
pub const MAX_SACK_LEN: usize = 128;

/// The five packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Payload.
    Data = 0,
    /// The sender's last packet: no more data after its sequence number.
    Fin = 1,
    /// An acknowledgement without payload.
    State = 2,
    /// Abort the connection.
    Reset = 3,
    /// Open a connection.
    Syn = 4,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<PacketType> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }
}

/// Why bytes are not a well-formed uTP packet.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("datagram of {0} bytes is shorter than the uTP header")]
    TooShort(usize),
    /// A version other than 1.
    #[error("unknown uTP version {0}")]
    Version(u8),
    /// A type nibble above 4.
    #[error("unknown uTP packet type {0}")]
    Type(u8),
    /// An extension header or body runs past the end of the datagram.
    #[error("extension chain overruns the datagram at byte {0}")]
    ExtensionOverrun(usize),
}

/// The fixed part of every packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the packet is.
    pub packet_type: PacketType,
    /// The receiver's connection id (the initiator's receive id in a SYN).
    pub connection_id: u16,
    /// The sender's clock when sending, in microseconds (wrapping).
    pub timestamp_us: u32,
    /// The sender's clock at its last receipt minus that packet's timestamp (wrapping): the
    /// one-way delay of our packets plus the clocks' offset.
    pub timestamp_diff_us: u32,
    /// Bytes the sender can still receive.
    pub wnd_size: u32,
    /// The packet's sequence number (data, FIN, SYN) or the next one (STATE).
    pub seq_nr: u16,
    /// The last sequence number the sender received in order.
    pub ack_nr: u16,
}

impl Header {
    /// Appends the 20 header bytes, with `first_extension` in the extension field.
    pub fn write(&self, first_extension: u8, out: &mut Vec<u8>) {
        out.push(((self.packet_type as u8) << 4) | VERSION);
        out.push(first_extension);
        out.extend_from_slice(&self.connection_id.to_be_bytes());
        out.extend_from_slice(&self.timestamp_us.to_be_bytes());
        out.extend_from_slice(&self.timestamp_diff_us.to_be_bytes());
        out.extend_from_slice(&self.wnd_size.to_be_bytes());
        out.extend_from_slice(&self.seq_nr.to_be_bytes());
        out.extend_from_slice(&self.ack_nr.to_be_bytes());
    }
}

/// A parsed packet borrowing its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The fixed header.
    pub header: Header,
    /// The first selective-ack bitmask, if any: bit `i` (least significant bit first within
    /// each byte) stands for sequence number `ack_nr + 2 + i`.
    pub sack: Option<&'a [u8]>,
    /// The bytes after the extension chain.
    pub payload: &'a [u8],
}

/// True when `bytes` looks like uTP rather than another protocol sharing the UDP port: at least
/// a header long, version nibble 1 and a known type (first byte `0x01`, `0x11`, `0x21`, `0x31`
/// or `0x41`). A DHT message (bencoded, starting with `d` = `0x64`) or a UDP tracker packet never
/// passes.
pub fn looks_like_utp(bytes: &[u8]) -> bool {
    match bytes.first() {
        Some(&b) => bytes.len() >= HEADER_LEN && b & 0x0f == VERSION && b >> 4 <= 4,
        None => false,
    }
}

// The header is a fixed-size array and every offset below is a constant inside it.
fn be16(b: &[u8; HEADER_LEN], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Packet<'a> {
    /// Parses a datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let Some(fixed) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(PacketError::TooShort(bytes.len()));
        };
        let version = fixed[0] & 0x0f;
        if version != VERSION {
            return Err(PacketError::Version(version));
        }
        let packet_type =
            PacketType::from_nibble(fixed[0] >> 4).ok_or(PacketError::Type(fixed[0] >> 4))?;
        let header = Header {
            packet_type,
            connection_id: be16(fixed, 2),
            timestamp_us: be32(fixed, 4),
            timestamp_diff_us: be32(fixed, 8),
            wnd_size: be32(fixed, 12),
            seq_nr: be16(fixed, 16),
            ack_nr: be16(fixed, 18),
        };
        let mut extension = fixed[1];
        let mut at = HEADER_LEN;
        let mut sack = None;
        while extension != 0 {
            let (Some(&next), Some(&len)) = (bytes.get(at), bytes.get(at + 1)) else {
                return Err(PacketError::ExtensionOverrun(at));
            };
            let body = bytes
                .get(at + 2..at + 2 + usize::from(len))
                .ok_or(PacketError::ExtensionOverrun(at))?;
            if extension == EXTENSION_SACK && sack.is_none() {
                sack = Some(body);
            }
            extension = next;
            at += 2 + usize::from(len);
        }
        Ok(Packet {
            header,
            sack,
            payload: bytes.get(at..).unwrap_or_default(),
        })
    }

    /// Encodes a packet: the header, a selective ack if `sack` is given (its length must be at
    /// most 255; BEP 29 wants a multiple of 4), then the payload.
    pub fn encode(header: &Header, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match sack {
            Some(bits) => {
                header.write(EXTENSION_SACK, out);
                out.push(0);
                out.push(u8::try_from(bits.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(bits.get(..255).unwrap_or(bits));
            }
            None => header.write(0, out),
        }
        out.extend_from_slice(payload);
    }
}

/// `a` comes before `b` in wrapping 16-bit sequence space (the shorter way round).
pub fn seq_less(a: u16, b: u16) -> bool {
    (b.wrapping_sub(a) as i16) > 0
}

/// `a` comes before `b` in wrapping 32-bit timestamp space.
pub fn ts_less(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}
