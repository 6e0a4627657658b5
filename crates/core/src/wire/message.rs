//! Length-prefixed peer messages (BEP 3, the BEP 6 fast extension, BEP 10 `extended`, the
//! DHT `port` message and the BEP 52 hash messages): incremental framing, decoding and encoding.
//!
//! Invariants: the 4-byte length prefix is compared with the decoder's limit before anything is
//! reserved or allocated for it; every fixed-size message has its exact size checked; `Piece`
//! data, bitfields and extension payloads are split off the input buffer without copying.
//! Bytes that do not form a whole message yet stay in the buffer untouched.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest message accepted: 2 MiB, enough for a 128 KiB block plus header and for a
/// bitfield of 16 million pieces.
pub const MAX_MESSAGE_LEN: u32 = 1 << 21;

/// Message ids (BEP 3, BEP 5 `port`, BEP 10 `extended`).
pub mod id {
    /// `choke`
    pub const CHOKE: u8 = 0;
    /// `unchoke`
    pub const UNCHOKE: u8 = 1;
    /// `interested`
    pub const INTERESTED: u8 = 2;
    /// `not interested`
    pub const NOT_INTERESTED: u8 = 3;
    /// `have`
    pub const HAVE: u8 = 4;
    /// `bitfield`
    pub const BITFIELD: u8 = 5;
    /// `request`
    pub const REQUEST: u8 = 6;
    /// `piece`
    pub const PIECE: u8 = 7;
    /// `cancel`
    pub const CANCEL: u8 = 8;
    /// `port` (DHT)
    pub const PORT: u8 = 9;
    /// `suggest piece` (BEP 6)
    pub const SUGGEST: u8 = 13;
    /// `have all` (BEP 6)
    pub const HAVE_ALL: u8 = 14;
    /// `have none` (BEP 6)
    pub const HAVE_NONE: u8 = 15;
    /// `reject request` (BEP 6)
    pub const REJECT: u8 = 16;
    /// `allowed fast` (BEP 6)
    pub const ALLOWED_FAST: u8 = 17;
    /// `extended` (BEP 10)
    pub const EXTENDED: u8 = 20;
    /// `hash request` (BEP 52)
    pub const HASH_REQUEST: u8 = 21;
    /// `hashes` (BEP 52)
    pub const HASHES: u8 = 22;
    /// `hash reject` (BEP 52)
    pub const HASH_REJECT: u8 = 23;
}

/// Bytes of a BEP 52 hash request after the message id: pieces root, base layer, index,
/// length, proof layers.
const HASH_REQUEST_LEN: usize = 32 + 4 * 4;

/// A BEP 52 `hash request` (also the header of `hashes` and `hash reject`): `length` hashes
/// of the layer `base_layer` levels above the 16 KiB leaves of the file whose merkle root is
/// `pieces_root`, from `index` on, with the uncle hashes of `proof_layers` layers above them.
/// Nothing is checked here beyond the sizes; see [`crate::hashes`] for the bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashRequest {
    pub pieces_root: [u8; 32],
    pub base_layer: u32,
    pub index: u32,
    pub length: u32,
    pub proof_layers: u32,
}

impl HashRequest {
    /// Reads the 48 bytes after the message id (`b` must hold at least that many).
    fn read(b: &[u8]) -> Option<HashRequest> {
        let root = b.get(..32)?;
        let word = |at: usize| b.get(at..at + 4).map(be_u32);
        let mut pieces_root = [0; 32];
        pieces_root.copy_from_slice(root);
        Some(HashRequest {
            pieces_root,
            base_layer: word(32)?,
            index: word(36)?,
            length: word(40)?,
            proof_layers: word(44)?,
        })
    }

    fn put(&self, out: &mut BytesMut) {
        out.put_slice(&self.pieces_root);
        out.put_u32(self.base_layer);
        out.put_u32(self.index);
        out.put_u32(self.length);
        out.put_u32(self.proof_layers);
    }
}

/// A block within a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Piece index.
    pub index: u32,
    /// Byte offset within the piece.
    pub begin: u32,
    /// Block length in bytes.
    pub length: u32,
}

/// One peer-wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A zero-length frame.
    KeepAlive,
    /// The sender will not serve our requests.
    Choke,
    /// The sender will serve our requests.
    Unchoke,
    /// The sender wants pieces we have.
    Interested,
    /// The sender wants nothing from us.
    NotInterested,
    /// The sender completed this piece.
    Have(u32),
    /// The sender's pieces, high bit of the first byte is piece 0 (length not checked here).
    Bitfield(Bytes),
    /// A block request.
    Request(BlockRef),
    /// Block data.
    Piece {
        /// Piece index.
        index: u32,
        /// Byte offset within the piece.
        begin: u32,
        /// The block bytes.
        data: Bytes,
    },
    /// Withdraws a request.
    Cancel(BlockRef),
    /// The sender's DHT port.
    Port(u16),
    /// BEP 6: the sender suggests we download this piece.
    Suggest(u32),
    /// BEP 6: the sender has every piece (instead of a bitfield).
    HaveAll,
    /// BEP 6: the sender has no piece (instead of a bitfield).
    HaveNone,
    /// BEP 6: the sender will not serve this request.
    Reject(BlockRef),
    /// BEP 6: we may request this piece even while the sender chokes us.
    AllowedFast(u32),
    /// BEP 10: `id` 0 is the extension handshake, others are the ids we assigned.
    Extended {
        /// Extended message id.
        id: u8,
        /// Payload after the extended id.
        payload: Bytes,
    },
    /// BEP 52: the sender asks for merkle tree hashes.
    HashRequest(HashRequest),
    /// BEP 52: the hashes asked for by `request` (the requested ones, then the proof's uncle
    /// hashes), 32 bytes each; the length is a multiple of 32, not checked against `request`
    /// here.
    Hashes {
        /// The request answered.
        request: HashRequest,
        /// The hashes, concatenated.
        hashes: Bytes,
    },
    /// BEP 52: the sender will not answer this hash request.
    HashReject(HashRequest),
    /// A message id we do not know; ignored by the caller.
    Unknown {
        /// The unknown message id.
        id: u8,
    },
}

/// Why peer-wire bytes were rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A length prefix above the decoder's limit.
    #[error("message length {0} exceeds the limit")]
    TooLong(u32),
    /// A message whose size or content does not fit its id.
    #[error("malformed message id {id}: {what}")]
    Malformed {
        /// The message id (20 for extension messages).
        id: u8,
        /// What was wrong.
        what: &'static str,
    },
    /// A handshake with the wrong protocol string.
    #[error("bad handshake: {0}")]
    BadHandshake(&'static str),
}

/// Incremental decoder: feed bytes into a `BytesMut`, take whole messages out.
#[derive(Debug)]
pub struct MessageDecoder {
    max_len: u32,
}

impl MessageDecoder {
    /// A decoder rejecting frames longer than `max_len` bytes (length prefix excluded).
    pub fn new(max_len: u32) -> MessageDecoder {
        MessageDecoder { max_len }
    }

    /// Takes one whole message off the front of `buf`, or `Ok(None)` if more bytes are needed
    /// (then `buf` has room reserved for the rest of the frame, at most `max_len + 4` bytes).
    /// `Piece` data and bitfields are split off `buf` without copying.
    ///
    /// On `TooLong` nothing is consumed; on `Malformed` the offending frame is consumed. Either
    /// way the connection should be dropped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WireError> {
        let Some(prefix) = buf.get(..4) else {
            buf.reserve(4 - buf.len());
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > self.max_len {
            return Err(WireError::TooLong(len));
        }
        if len == 0 {
            buf.advance(4);
            return Ok(Some(Message::KeepAlive));
        }
        // len <= max_len <= u32::MAX, so this fits a usize on every supported target.
        let frame = 4usize.saturating_add(len as usize);
        if buf.len() < frame {
            buf.reserve(frame - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let body = buf.split_to(len as usize);
        decode_body(body).map(Some)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes a frame body (id first), whose length is at least 1.
fn decode_body(mut body: BytesMut) -> Result<Message, WireError> {
    let msg_id = body[0];
    let len = body.len();
    let exact = |want: usize, what: &'static str| {
        if len == want {
            Ok(())
        } else {
            Err(WireError::Malformed { id: msg_id, what })
        }
    };
    let msg = match msg_id {
        id::CHOKE => exact(1, "choke must be empty").map(|_| Message::Choke)?,
        id::UNCHOKE => exact(1, "unchoke must be empty").map(|_| Message::Unchoke)?,
        id::INTERESTED => exact(1, "interested must be empty").map(|_| Message::Interested)?,
        id::NOT_INTERESTED => {
            exact(1, "not interested must be empty").map(|_| Message::NotInterested)?
        }
        id::HAVE => {
            exact(5, "have must be 5 bytes")?;
            Message::Have(be_u32(&body[1..5]))
        }
        id::BITFIELD => {
            body.advance(1);
            Message::Bitfield(body.freeze())
        }
        id::REQUEST | id::CANCEL | id::REJECT => {
            exact(13, "request/cancel/reject must be 13 bytes")?;
            let block = BlockRef {
                index: be_u32(&body[1..5]),
                begin: be_u32(&body[5..9]),
                length: be_u32(&body[9..13]),
            };
            match msg_id {
                id::REQUEST => Message::Request(block),
                id::CANCEL => Message::Cancel(block),
                _ => Message::Reject(block),
            }
        }
        id::SUGGEST | id::ALLOWED_FAST => {
            exact(5, "suggest/allowed fast must be 5 bytes")?;
            let index = be_u32(&body[1..5]);
            if msg_id == id::SUGGEST {
                Message::Suggest(index)
            } else {
                Message::AllowedFast(index)
            }
        }
        id::HAVE_ALL => exact(1, "have all must be empty").map(|_| Message::HaveAll)?,
        id::HAVE_NONE => exact(1, "have none must be empty").map(|_| Message::HaveNone)?,
        id::PIECE => {
            if len < 9 {
                return Err(WireError::Malformed {
                    id: msg_id,
                    what: "piece shorter than 9 bytes",
                });
            }
            let index = be_u32(&body[1..5]);
            let begin = be_u32(&body[5..9]);
            body.advance(9);
            Message::Piece {
                index,
                begin,
                data: body.freeze(),
            }
        }
        id::PORT => {
            exact(3, "port must be 3 bytes")?;
            Message::Port(u16::from_be_bytes([body[1], body[2]]))
        }
        id::EXTENDED => {
            if len < 2 {
                return Err(WireError::Malformed {
                    id: msg_id,
                    what: "extended message without extended id",
                });
            }
            let ext_id = body[1];
            body.advance(2);
            Message::Extended {
                id: ext_id,
                payload: body.freeze(),
            }
        }
        id::HASH_REQUEST | id::HASH_REJECT => {
            exact(1 + HASH_REQUEST_LEN, "hash request/reject must be 49 bytes")?;
            let request =
                body.get(1..)
                    .and_then(HashRequest::read)
                    .ok_or(WireError::Malformed {
                        id: msg_id,
                        what: "hash request/reject must be 49 bytes",
                    })?;
            if msg_id == id::HASH_REQUEST {
                Message::HashRequest(request)
            } else {
                Message::HashReject(request)
            }
        }
        id::HASHES => {
            let malformed = WireError::Malformed {
                id: msg_id,
                what: "hashes must be a 49-byte header and whole 32-byte hashes",
            };
            if len < 1 + HASH_REQUEST_LEN || !(len - 1 - HASH_REQUEST_LEN).is_multiple_of(32) {
                return Err(malformed);
            }
            let request = body.get(1..).and_then(HashRequest::read).ok_or(malformed)?;
            body.advance(1 + HASH_REQUEST_LEN);
            Message::Hashes {
                request,
                hashes: body.freeze(),
            }
        }
        other => Message::Unknown { id: other },
    };
    Ok(msg)
}

/// Frame length for a payload of `n` bytes plus `header` bytes. Our own messages are far below
/// `u32::MAX`; saturate rather than wrap if a caller ever passes something absurd.
fn frame_len(header: usize, n: usize) -> u32 {
    u32::try_from(header.saturating_add(n)).unwrap_or(u32::MAX)
}

/// Appends a `request` message for `block` (17 bytes) to `out`.
pub fn encode_request(block: BlockRef, out: &mut BytesMut) {
    put_block(out, id::REQUEST, block);
}

/// A message naming a block: `request`, `cancel` or `reject`.
fn put_block(out: &mut BytesMut, msg_id: u8, block: BlockRef) {
    out.reserve(17);
    out.put_u32(13);
    out.put_u8(msg_id);
    out.put_u32(block.index);
    out.put_u32(block.begin);
    out.put_u32(block.length);
}

/// A message naming a piece: `have`, `suggest` or `allowed fast`.
fn put_index(out: &mut BytesMut, msg_id: u8, index: u32) {
    out.reserve(9);
    out.put_u32(5);
    out.put_u8(msg_id);
    out.put_u32(index);
}

/// Appends only the 13-byte header of a `piece` message carrying `data_len` bytes, so the
/// caller can send the block bytes from their own buffer without copying them.
pub fn encode_piece_header(index: u32, begin: u32, data_len: usize, out: &mut BytesMut) {
    out.reserve(13);
    out.put_u32(frame_len(9, data_len));
    out.put_u8(id::PIECE);
    out.put_u32(index);
    out.put_u32(begin);
}

impl Message {
    /// Appends the wire form (length prefix included) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Choke => put_bare(out, id::CHOKE),
            Message::Unchoke => put_bare(out, id::UNCHOKE),
            Message::Interested => put_bare(out, id::INTERESTED),
            Message::NotInterested => put_bare(out, id::NOT_INTERESTED),
            Message::Unknown { id } => put_bare(out, *id),
            Message::HaveAll => put_bare(out, id::HAVE_ALL),
            Message::HaveNone => put_bare(out, id::HAVE_NONE),
            Message::Have(index) => put_index(out, id::HAVE, *index),
            Message::Suggest(index) => put_index(out, id::SUGGEST, *index),
            Message::AllowedFast(index) => put_index(out, id::ALLOWED_FAST, *index),
            Message::Bitfield(bits) => {
                out.reserve(5 + bits.len());
                out.put_u32(frame_len(1, bits.len()));
                out.put_u8(id::BITFIELD);
                out.put_slice(bits);
            }
            Message::Request(block) => encode_request(*block, out),
            Message::Cancel(block) => put_block(out, id::CANCEL, *block),
            Message::Reject(block) => put_block(out, id::REJECT, *block),
            Message::Piece { index, begin, data } => {
                out.reserve(13 + data.len());
                encode_piece_header(*index, *begin, data.len(), out);
                out.put_slice(data);
            }
            Message::Port(port) => {
                out.reserve(7);
                out.put_u32(3);
                out.put_u8(id::PORT);
                out.put_u16(*port);
            }
            Message::HashRequest(request) | Message::HashReject(request) => {
                let msg_id = match self {
                    Message::HashRequest(_) => id::HASH_REQUEST,
                    _ => id::HASH_REJECT,
                };
                out.reserve(5 + HASH_REQUEST_LEN);
                out.put_u32(frame_len(1, HASH_REQUEST_LEN));
                out.put_u8(msg_id);
                request.put(out);
            }
            Message::Hashes { request, hashes } => {
                out.reserve(5 + HASH_REQUEST_LEN + hashes.len());
                out.put_u32(frame_len(1 + HASH_REQUEST_LEN, hashes.len()));
                out.put_u8(id::HASHES);
                request.put(out);
                out.put_slice(hashes);
            }
            Message::Extended { id: ext, payload } => {
                out.reserve(6 + payload.len());
                out.put_u32(frame_len(2, payload.len()));
                out.put_u8(id::EXTENDED);
                out.put_u8(*ext);
                out.put_slice(payload);
            }
        }
    }
}

fn put_bare(out: &mut BytesMut, msg_id: u8) {
    out.reserve(5);
    out.put_u32(1);
    out.put_u8(msg_id);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(dec: &mut MessageDecoder, buf: &mut BytesMut) -> Vec<Message> {
        let mut out = Vec::new();
        while let Some(m) = dec.decode(buf).unwrap() {
            out.push(m);
        }
        out
    }

    fn enc(m: &Message) -> BytesMut {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        b
    }

    #[test]
    fn encodes_known_layouts() {
        assert_eq!(&enc(&Message::KeepAlive)[..], &[0, 0, 0, 0]);
        assert_eq!(&enc(&Message::Interested)[..], &[0, 0, 0, 1, 2]);
        assert_eq!(&enc(&Message::Have(258))[..], &[0, 0, 0, 5, 4, 0, 0, 1, 2]);
        assert_eq!(&enc(&Message::Port(6881))[..], &[0, 0, 0, 3, 9, 0x1a, 0xe1]);
        // BEP 6.
        assert_eq!(&enc(&Message::HaveAll)[..], &[0, 0, 0, 1, 14]);
        assert_eq!(&enc(&Message::HaveNone)[..], &[0, 0, 0, 1, 15]);
        assert_eq!(
            &enc(&Message::Suggest(2))[..],
            &[0, 0, 0, 5, 13, 0, 0, 0, 2]
        );
        assert_eq!(
            &enc(&Message::AllowedFast(3))[..],
            &[0, 0, 0, 5, 17, 0, 0, 0, 3]
        );
        let block = BlockRef {
            index: 1,
            begin: 2,
            length: 3,
        };
        assert_eq!(
            &enc(&Message::Reject(block))[..],
            &[0, 0, 0, 13, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        let req = BlockRef {
            index: 1,
            begin: 0x4000,
            length: 0x4000,
        };
        assert_eq!(
            &enc(&Message::Request(req))[..],
            &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0]
        );
        let piece = Message::Piece {
            index: 2,
            begin: 3,
            data: Bytes::from_static(b"xyz"),
        };
        assert_eq!(
            &enc(&piece)[..],
            &[0, 0, 0, 12, 7, 0, 0, 0, 2, 0, 0, 0, 3, b'x', b'y', b'z']
        );
        let ext = Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"de"),
        };
        assert_eq!(&enc(&ext)[..], &[0, 0, 0, 4, 20, 0, b'd', b'e']);
    }

    #[test]
    fn encode_request_matches_message_encode() {
        let block = BlockRef {
            index: 7,
            begin: 16384,
            length: 100,
        };
        let mut a = BytesMut::new();
        encode_request(block, &mut a);
        assert_eq!(a, enc(&Message::Request(block)));
    }

    #[test]
    fn decodes_byte_by_byte() {
        let msgs = vec![
            Message::KeepAlive,
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Piece {
                index: 1,
                begin: 2,
                data: Bytes::from(vec![9u8; 100]),
            },
            Message::Unchoke,
        ];
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            got.extend(decode_all(&mut dec, &mut buf));
        }
        assert_eq!(got, msgs);
        assert!(buf.is_empty());
    }

    #[test]
    fn too_long_is_rejected_before_reserving() {
        let mut dec = MessageDecoder::new(1000);
        let mut buf = BytesMut::from(&[0u8, 0, 3, 233, 7][..]); // 1001
        let cap_before = buf.capacity();
        assert_eq!(dec.decode(&mut buf), Err(WireError::TooLong(1001)));
        assert_eq!(buf.capacity(), cap_before);
        assert_eq!(buf.len(), 5, "nothing consumed");
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            MessageDecoder::new(MAX_MESSAGE_LEN).decode(&mut buf),
            Err(WireError::TooLong(u32::MAX))
        );
    }

    #[test]
    fn incomplete_frame_reserves_the_rest() {
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        let mut buf = BytesMut::new();
        buf.put_u32(9 + 16384);
        buf.put_u8(id::PIECE);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= 4 + 9 + 16384);
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn piece_data_is_not_copied() {
        let mut wire = BytesMut::new();
        Message::Piece {
            index: 0,
            begin: 0,
            data: Bytes::from(vec![1u8; 64]),
        }
        .encode(&mut wire);
        let start = wire.as_ptr() as usize;
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        match dec.decode(&mut wire).unwrap() {
            Some(Message::Piece { data, .. }) => {
                assert_eq!(data.as_ptr() as usize, start + 13);
                assert_eq!(&data[..], &[1u8; 64][..]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_sizes_are_malformed() {
        let cases: &[(&[u8], u8)] = &[
            (&[0, 0, 0, 2, 0, 0], 0),             // choke with payload
            (&[0, 0, 0, 2, 3, 9], 3),             // not interested with payload
            (&[0, 0, 0, 4, 4, 0, 0, 0], 4),       // short have
            (&[0, 0, 0, 6, 4, 0, 0, 0, 0, 0], 4), // long have
            (&[0, 0, 0, 12, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 6), // short request
            (&[0, 0, 0, 2, 9, 0], 9),             // short port
            (&[0, 0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0], 7), // short piece
            (&[0, 0, 0, 1, 20], 20),              // extended without id
        ];
        for (bytes, want_id) in cases {
            let mut buf = BytesMut::from(*bytes);
            match MessageDecoder::new(MAX_MESSAGE_LEN).decode(&mut buf) {
                Err(WireError::Malformed { id, .. }) => assert_eq!(id, *want_id),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_ids_are_consumed() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 24, 1, 2, 0, 0, 0, 1, 1][..]);
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        assert_eq!(
            decode_all(&mut dec, &mut buf),
            vec![Message::Unknown { id: 24 }, Message::Unchoke]
        );
    }

    #[test]
    fn empty_piece_and_bitfield_are_allowed() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 5, 0, 0, 0, 9, 7, 0, 0, 0, 1, 0, 0, 0, 2][..]);
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        assert_eq!(
            decode_all(&mut dec, &mut buf),
            vec![
                Message::Bitfield(Bytes::new()),
                Message::Piece {
                    index: 1,
                    begin: 2,
                    data: Bytes::new()
                }
            ]
        );
    }

    /// Any block reference (indices and lengths unchecked).
    pub(crate) fn arb_block() -> impl Strategy<Value = BlockRef> {
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(index, begin, length)| BlockRef {
            index,
            begin,
            length,
        })
    }

    /// Up to `max` arbitrary bytes.
    pub(crate) fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    /// Any message: bitfields up to `bitfield_max` bytes, blocks up to `piece_max`, extension
    /// payloads from `extended`.
    pub(crate) fn arb_message_with(
        bitfield_max: usize,
        piece_max: usize,
        extended: impl Strategy<Value = Bytes> + 'static,
    ) -> impl Strategy<Value = Message> {
        prop_oneof![
            Just(Message::KeepAlive),
            Just(Message::Choke),
            Just(Message::Unchoke),
            Just(Message::Interested),
            Just(Message::NotInterested),
            any::<u32>().prop_map(Message::Have),
            arb_bytes(bitfield_max).prop_map(Message::Bitfield),
            arb_block().prop_map(Message::Request),
            arb_block().prop_map(Message::Cancel),
            (any::<u32>(), any::<u32>(), arb_bytes(piece_max))
                .prop_map(|(index, begin, data)| Message::Piece { index, begin, data }),
            any::<u16>().prop_map(Message::Port),
            any::<u32>().prop_map(Message::Suggest),
            Just(Message::HaveAll),
            Just(Message::HaveNone),
            arb_block().prop_map(Message::Reject),
            any::<u32>().prop_map(Message::AllowedFast),
            (any::<u8>(), extended).prop_map(|(id, payload)| Message::Extended { id, payload }),
            arb_hash_request().prop_map(Message::HashRequest),
            arb_hash_request().prop_map(Message::HashReject),
            (arb_hash_request(), 0usize..4).prop_map(|(request, n)| Message::Hashes {
                request,
                hashes: Bytes::from(vec![request.pieces_root[0]; 32 * n]),
            }),
            prop_oneof![10u8..=12, 18u8..=19, 24u8..=255].prop_map(|id| Message::Unknown { id }),
        ]
    }

    /// Any hash request (fields unchecked).
    pub(crate) fn arb_hash_request() -> impl Strategy<Value = HashRequest> {
        (any::<[u8; 32]>(), any::<[u32; 4]>()).prop_map(|(pieces_root, w)| HashRequest {
            pieces_root,
            base_layer: w[0],
            index: w[1],
            length: w[2],
            proof_layers: w[3],
        })
    }

    #[test]
    fn hash_messages_have_bep52_layouts() {
        let request = HashRequest {
            pieces_root: [7; 32],
            base_layer: 1,
            index: 2,
            length: 3,
            proof_layers: 4,
        };
        let body: Vec<u8> = [7u8; 32]
            .iter()
            .copied()
            .chain([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
            .collect();
        let mut want = vec![0, 0, 0, 49, 21];
        want.extend_from_slice(&body);
        assert_eq!(&enc(&Message::HashRequest(request))[..], &want[..]);
        want[4] = 23;
        assert_eq!(&enc(&Message::HashReject(request))[..], &want[..]);
        let hashes = Message::Hashes {
            request,
            hashes: Bytes::from(vec![9u8; 64]),
        };
        let mut want = vec![0, 0, 0, 113, 22];
        want.extend_from_slice(&body);
        want.extend_from_slice(&[9; 64]);
        assert_eq!(&enc(&hashes)[..], &want[..]);
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        let mut buf = BytesMut::from(&want[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(hashes));
    }

    #[test]
    fn hash_messages_of_wrong_sizes_are_malformed() {
        let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
        for (id, body_len) in [
            (21u8, 47usize),
            (21, 49),
            (23, 0),
            (22, 47),
            (22, 48 + 31),
            (22, 48 + 33),
        ] {
            let mut frame = BytesMut::new();
            frame.put_u32(1 + body_len as u32);
            frame.put_u8(id);
            frame.put_slice(&vec![0; body_len]);
            assert!(
                matches!(dec.decode(&mut frame), Err(WireError::Malformed { .. })),
                "id {id} with {body_len} bytes"
            );
        }
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        arb_message_with(300, 300, arb_bytes(300))
    }

    proptest! {
        #[test]
        fn prop_split_anywhere_decodes_identically(
            msgs in proptest::collection::vec(arb_message(), 0..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut wire = BytesMut::new();
            for m in &msgs {
                m.encode(&mut wire);
            }
            let wire = wire.freeze();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut dec = MessageDecoder::new(MAX_MESSAGE_LEN);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for pair in points.windows(2) {
                buf.extend_from_slice(&wire[pair[0]..pair[1]]);
                while let Some(m) = dec.decode(&mut buf).unwrap() {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0u32..600) {
            let mut dec = MessageDecoder::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
