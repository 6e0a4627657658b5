//! BEP 10 extension handshake, BEP 9 `ut_metadata` messages and the sans-IO assembler that
//! collects metadata pieces and checks them against the info hash.
//!
//! Invariants: dictionary values are read as bencode byte strings and never assumed to be UTF-8;
//! unknown keys are ignored; every size a peer announces is bounded by [`MAX_METADATA_SIZE`]
//! before anything is allocated for it, and the assembler only holds bytes that peers actually
//! sent (pieces are stored as received, concatenated once at [`MetadataAssembler::finish`]).
//!
//! Policy for a peer's `metadata_size` in its handshake: a negative, non-integer or oversized
//! value is treated as absent (the peer stays usable for everything but metadata). A
//! `ut_metadata` id that is not an integer in `0..=255` makes the handshake an error.

use std::collections::BTreeMap;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::message::id::EXTENDED;
use super::WireError;
use crate::bencode::{self, Value};
use crate::types::InfoHash;

/// The id we assign to `ut_metadata` in our extension handshake.
pub const OUR_UT_METADATA_ID: u8 = 1;
/// The `reqq` we advertise: requests we queue per peer (must match the upload queue bound).
pub const OUR_REQQ: u32 = 2048;
/// The id we ask peers to use for `ut_pex` messages sent to us (BEP 11).
pub const OUR_UT_PEX_ID: u8 = 2;
/// Metadata travels in pieces of this size (the last one shorter).
pub const METADATA_PIECE_LEN: usize = 16 * 1024;
/// Largest metadata we accept.
pub const MAX_METADATA_SIZE: u64 = 16 * 1024 * 1024;
/// The `v` we send.
pub const OUR_CLIENT_NAME: &str = "bitrush 0.1";
/// Longest client name kept from a peer's `v` (longer ones are cut).
const MAX_CLIENT_NAME: usize = 64;

/// The extension handshake dictionary (only the fields we use; unknown keys ignored).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// The id the sender wants for `ut_metadata` messages sent to it (absent or 0: unsupported).
    pub ut_metadata: Option<u8>,
    /// Size of the info dictionary, if the sender has it.
    pub metadata_size: Option<u64>,
    /// `v`, the client name, lossily decoded.
    pub client: Option<String>,
    /// `reqq`: how many outstanding requests the sender queues without dropping any.
    pub reqq: Option<u32>,
    /// The id the sender wants for `ut_pex` messages (BEP 11; absent or 0: unsupported).
    pub ut_pex: Option<u8>,
    /// `p`: the port the sender accepts connections on.
    pub listen_port: Option<u16>,
}

fn malformed(what: &'static str) -> WireError {
    WireError::Malformed { id: EXTENDED, what }
}

fn key(k: &str) -> Vec<u8> {
    k.as_bytes().to_vec()
}

fn int(n: u64) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// Decodes the bencoded dictionary at the start of `payload`; returns it and its length.
fn leading_dict(payload: &[u8]) -> Result<(BTreeMap<Vec<u8>, Value>, usize), WireError> {
    match bencode::decode_prefix(payload) {
        Ok((Value::Dict(d), used)) => Ok((d, used)),
        Ok(_) => Err(malformed("extension payload is not a dictionary")),
        Err(_) => Err(malformed("extension payload is not valid bencode")),
    }
}

impl ExtHandshake {
    /// Our handshake: `ut_metadata` = [`OUR_UT_METADATA_ID`], our client name, and the
    /// metadata size when we know it.
    pub fn ours(metadata_size: Option<u64>) -> ExtHandshake {
        ExtHandshake {
            ut_metadata: Some(OUR_UT_METADATA_ID),
            metadata_size,
            client: Some(OUR_CLIENT_NAME.to_string()),
            reqq: Some(OUR_REQQ),
            ut_pex: None,
            listen_port: None,
        }
    }

    /// Ours in a full session: also `ut_pex` (unless `pex` is off) and our listening port.
    pub fn session(
        metadata_size: Option<u64>,
        pex: bool,
        listen_port: Option<u16>,
    ) -> ExtHandshake {
        ExtHandshake {
            ut_pex: pex.then_some(OUR_UT_PEX_ID),
            listen_port,
            ..ExtHandshake::ours(metadata_size)
        }
    }

    /// The bencoded dictionary (the payload of extended message 0). `m` is always present.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = BTreeMap::new();
        if let Some(id) = self.ut_metadata {
            m.insert(key("ut_metadata"), Value::Int(i64::from(id)));
        }
        if let Some(id) = self.ut_pex {
            m.insert(key("ut_pex"), Value::Int(i64::from(id)));
        }
        let mut d = BTreeMap::new();
        d.insert(key("m"), Value::Dict(m));
        if let Some(size) = self.metadata_size {
            d.insert(key("metadata_size"), int(size));
        }
        if let Some(v) = &self.client {
            d.insert(key("v"), Value::Bytes(v.as_bytes().to_vec()));
        }
        if let Some(n) = self.reqq {
            d.insert(key("reqq"), int(u64::from(n)));
        }
        if let Some(p) = self.listen_port {
            d.insert(key("p"), int(u64::from(p)));
        }
        bencode::encode(&Value::Dict(d))
    }

    /// Parses a peer's handshake payload (trailing bytes after the dictionary are ignored).
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, WireError> {
        let (d, _) = leading_dict(payload)?;
        let m = match d.get(b"m".as_slice()) {
            None => None,
            Some(Value::Dict(m)) => Some(m),
            Some(_) => return Err(malformed("`m` is not a dictionary")),
        };
        let ut_metadata = match m.and_then(|m| m.get(b"ut_metadata".as_slice())) {
            None | Some(Value::Int(0)) => None,
            Some(Value::Int(n)) => {
                Some(u8::try_from(*n).map_err(|_| malformed("ut_metadata id outside 0..=255"))?)
            }
            Some(_) => return Err(malformed("ut_metadata id is not an integer")),
        };
        // ut_pex is optional to us: an odd id means "unsupported" rather than a broken peer.
        let ut_pex = match m.and_then(|m| m.get(b"ut_pex".as_slice())) {
            Some(Value::Int(n)) => u8::try_from(*n).ok().filter(|&id| id != 0),
            _ => None,
        };
        let listen_port = match d.get(b"p".as_slice()) {
            Some(Value::Int(n)) => u16::try_from(*n).ok().filter(|&p| p != 0),
            _ => None,
        };
        let metadata_size = match d.get(b"metadata_size".as_slice()) {
            Some(Value::Int(n)) => u64::try_from(*n).ok().filter(|n| *n <= MAX_METADATA_SIZE),
            _ => None,
        };
        let client = match d.get(b"v".as_slice()) {
            Some(Value::Bytes(b)) => {
                let cut = &b[..b.len().min(MAX_CLIENT_NAME)];
                Some(String::from_utf8_lossy(cut).into_owned())
            }
            _ => None,
        };
        let reqq = match d.get(b"reqq".as_slice()) {
            Some(Value::Int(n)) => u32::try_from(*n).ok().filter(|n| *n > 0),
            _ => None,
        };
        Ok(ExtHandshake {
            ut_metadata,
            metadata_size,
            client,
            reqq,
            ut_pex,
            listen_port,
        })
    }
}

/// Our answer to a peer's `ut_metadata` message: the piece for an in-range request when we
/// have the metadata, a reject for any other request, nothing for data or rejects.
pub fn answer_metadata(info_bytes: Option<&[u8]>, msg: &MetadataMsg) -> Option<MetadataMsg> {
    let MetadataMsg::Request { piece } = *msg else {
        return None;
    };
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN);
    match (info_bytes, start) {
        (Some(bytes), Some(start)) if start < bytes.len() => {
            let end = bytes.len().min(start + METADATA_PIECE_LEN);
            Some(MetadataMsg::Data {
                piece,
                total_size: bytes.len() as u64,
                data: Bytes::copy_from_slice(&bytes[start..end]),
            })
        }
        _ => Some(MetadataMsg::Reject { piece }),
    }
}

/// A `ut_metadata` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataMsg {
    /// Asks for one piece.
    Request {
        /// Piece index.
        piece: u32,
    },
    /// Carries one piece (at most [`METADATA_PIECE_LEN`] bytes).
    Data {
        /// Piece index.
        piece: u32,
        /// Size of the whole metadata (at most [`MAX_METADATA_SIZE`]).
        total_size: u64,
        /// The piece bytes.
        data: Bytes,
    },
    /// The sender will not serve this piece.
    Reject {
        /// Piece index.
        piece: u32,
    },
}

impl MetadataMsg {
    /// The payload after the extended id: a bencoded dictionary, followed by the piece bytes
    /// for `Data`.
    pub fn encode(&self) -> Vec<u8> {
        let (msg_type, piece) = match self {
            MetadataMsg::Request { piece } => (0, *piece),
            MetadataMsg::Data { piece, .. } => (1, *piece),
            MetadataMsg::Reject { piece } => (2, *piece),
        };
        let mut d = BTreeMap::new();
        d.insert(key("msg_type"), Value::Int(msg_type));
        d.insert(key("piece"), Value::Int(i64::from(piece)));
        if let MetadataMsg::Data { total_size, .. } = self {
            d.insert(key("total_size"), int(*total_size));
        }
        let mut out = bencode::encode(&Value::Dict(d));
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Parses a payload; `Data` bytes are sliced from `payload` without copying. An unknown
    /// `msg_type` is an error (BEP 9 says to ignore such messages: the caller may do so).
    pub fn decode(payload: &Bytes) -> Result<MetadataMsg, WireError> {
        let (d, used) = leading_dict(payload)?;
        let get_int = |k: &[u8]| match d.get(k) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let msg_type = get_int(b"msg_type").ok_or(malformed("msg_type missing"))?;
        let piece = get_int(b"piece").ok_or(malformed("piece missing"))?;
        let piece = u32::try_from(piece).map_err(|_| malformed("piece index out of range"))?;
        match msg_type {
            0 => Ok(MetadataMsg::Request { piece }),
            2 => Ok(MetadataMsg::Reject { piece }),
            1 => {
                let total = get_int(b"total_size").ok_or(malformed("total_size missing"))?;
                let total_size = u64::try_from(total)
                    .ok()
                    .filter(|n| *n <= MAX_METADATA_SIZE)
                    .ok_or(malformed("total_size out of range"))?;
                let data = payload.slice(used..);
                if data.len() > METADATA_PIECE_LEN {
                    return Err(malformed("metadata piece longer than 16 KiB"));
                }
                Ok(MetadataMsg::Data {
                    piece,
                    total_size,
                    data,
                })
            }
            _ => Err(malformed("unknown ut_metadata msg_type")),
        }
    }
}

/// Why metadata pieces were refused or the assembled metadata rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    /// Announced size is 0 or above [`MAX_METADATA_SIZE`].
    #[error("metadata size {0} is zero or above the limit")]
    BadSize(u64),
    /// Piece index past the last piece.
    #[error("metadata piece {piece} out of range (have {count} pieces)")]
    PieceOutOfRange {
        /// The index received.
        piece: u32,
        /// How many pieces the metadata has.
        count: u32,
    },
    /// Piece with the wrong number of bytes.
    #[error("metadata piece {piece} has {got} bytes, expected {want}")]
    BadPieceLength {
        /// The index received.
        piece: u32,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// `finish` called before every piece arrived.
    #[error("metadata incomplete")]
    Incomplete,
    /// The SHA-1 of the assembled bytes is not the info hash; all pieces were discarded.
    #[error("metadata does not match the info hash")]
    HashMismatch,
}

/// Collects metadata pieces (sans-IO) and verifies them against the info hash.
#[derive(Clone, Debug)]
pub struct MetadataAssembler {
    total_size: usize,
    pieces: Vec<Option<Bytes>>,
    received: usize,
}

impl MetadataAssembler {
    /// An empty assembler for `total_size` bytes (1..=[`MAX_METADATA_SIZE`]).
    pub fn new(total_size: u64) -> Result<MetadataAssembler, MetadataError> {
        if total_size == 0 || total_size > MAX_METADATA_SIZE {
            return Err(MetadataError::BadSize(total_size));
        }
        // Bounded by MAX_METADATA_SIZE above, so it fits a usize.
        let total = usize::try_from(total_size).map_err(|_| MetadataError::BadSize(total_size))?;
        let count = total.div_ceil(METADATA_PIECE_LEN);
        Ok(MetadataAssembler {
            total_size: total,
            pieces: vec![None; count],
            received: 0,
        })
    }

    /// Size of the whole metadata in bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size as u64
    }

    /// Number of pieces (at most 1024).
    pub fn piece_count(&self) -> u32 {
        u32::try_from(self.pieces.len()).unwrap_or(u32::MAX)
    }

    /// Expected length of `piece`, or `None` if out of range.
    pub fn piece_len(&self, piece: u32) -> Option<usize> {
        let i = usize::try_from(piece).ok()?;
        if i >= self.pieces.len() {
            return None;
        }
        let start = i * METADATA_PIECE_LEN;
        Some((self.total_size - start).min(METADATA_PIECE_LEN))
    }

    /// Whether `piece` has been received.
    pub fn has(&self, piece: u32) -> bool {
        usize::try_from(piece)
            .ok()
            .and_then(|i| self.pieces.get(i))
            .is_some_and(Option::is_some)
    }

    /// The first missing piece at or after `start`, wrapping around; `None` when complete.
    /// Different `start` values let several peers be asked for different pieces.
    pub fn next_missing(&self, start: u32) -> Option<u32> {
        let n = self.pieces.len();
        if n == 0 {
            return None;
        }
        let start = usize::try_from(start).unwrap_or(0) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.pieces[i].is_none())
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Stores one piece after checking its index and exact length (16 KiB except the last).
    /// A duplicate replaces the earlier copy.
    pub fn insert(&mut self, piece: u32, data: Bytes) -> Result<(), MetadataError> {
        let want = self
            .piece_len(piece)
            .ok_or(MetadataError::PieceOutOfRange {
                piece,
                count: self.piece_count(),
            })?;
        if data.len() != want {
            return Err(MetadataError::BadPieceLength {
                piece,
                got: data.len(),
                want,
            });
        }
        // In range: piece_len returned Some.
        if let Some(slot) = self.pieces.get_mut(piece as usize) {
            if slot.replace(data).is_none() {
                self.received += 1;
            }
        }
        Ok(())
    }

    /// Whether every piece has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.pieces.len()
    }

    /// The assembled metadata if its SHA-1 equals `expected`, or its SHA-256 truncated to 20
    /// bytes does (how a v2 magnet link's info hash stands on the wire, BEP 52). On a mismatch
    /// every piece is discarded so the download can start over.
    pub fn finish(&mut self, expected: InfoHash) -> Result<Vec<u8>, MetadataError> {
        if !self.is_complete() {
            return Err(MetadataError::Incomplete);
        }
        let mut out = Vec::with_capacity(self.total_size);
        for piece in self.pieces.iter().flatten() {
            out.extend_from_slice(piece);
        }
        let digest: [u8; 20] = Sha1::digest(&out).into();
        if digest != expected.0 && sha2::Sha256::digest(&out).get(..20) != Some(&expected.0[..]) {
            self.pieces.iter_mut().for_each(|p| *p = None);
            self.received = 0;
            return Err(MetadataError::HashMismatch);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn our_handshake_encodes_expected_dict() {
        let bytes = ExtHandshake::ours(Some(1234)).encode();
        assert_eq!(
            bytes,
            b"d1:md11:ut_metadatai1ee13:metadata_sizei1234e4:reqqi2048e1:v11:bitrush 0.1e".to_vec()
        );
        let none = ExtHandshake::ours(None).encode();
        assert_eq!(
            none,
            b"d1:md11:ut_metadatai1ee4:reqqi2048e1:v11:bitrush 0.1e".to_vec()
        );
    }

    #[test]
    fn decodes_real_world_handshake_with_binary_values() {
        let mut payload = b"d1:ei0e1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e4:reqqi500e11:upload_onlyi0e1:v17:qBittorrent/4.6.06:yourip4:".to_vec();
        payload.extend_from_slice(&[0xc0, 0xa8, 0xff, 0x01]);
        payload.push(b'e');
        let hs = ExtHandshake::decode(&payload).unwrap();
        assert_eq!(hs.ut_metadata, Some(2));
        assert_eq!(hs.metadata_size, Some(31235));
        assert_eq!(hs.client.as_deref(), Some("qBittorrent/4.6.0"));
    }

    #[test]
    fn handshake_edge_cases() {
        // ut_metadata 0 means disabled; non-UTF-8 client name is decoded lossily.
        let hs = ExtHandshake::decode(b"d1:md11:ut_metadatai0ee1:v2:\xff\xfee").unwrap();
        assert_eq!(hs.ut_metadata, None);
        assert_eq!(hs.client.as_deref(), Some("\u{fffd}\u{fffd}"));
        // Oversized or negative metadata_size is treated as absent.
        let hs = ExtHandshake::decode(b"d13:metadata_sizei99999999999ee").unwrap();
        assert_eq!(hs.metadata_size, None);
        let hs = ExtHandshake::decode(b"d13:metadata_sizei-5ee").unwrap();
        assert_eq!(hs.metadata_size, None);
        // Ids above 255, negative ids and non-dict `m` are errors.
        assert!(ExtHandshake::decode(b"d1:md11:ut_metadatai256eee").is_err());
        assert!(ExtHandshake::decode(b"d1:md11:ut_metadatai-1eee").is_err());
        assert!(ExtHandshake::decode(b"d1:mi3ee").is_err());
        assert!(ExtHandshake::decode(b"li1ee").is_err());
        assert!(ExtHandshake::decode(b"").is_err());
        // Empty dict: nothing supported.
        assert_eq!(
            ExtHandshake::decode(b"de").unwrap(),
            ExtHandshake::default()
        );
    }

    #[test]
    fn metadata_msgs_encode_as_bep9() {
        assert_eq!(
            MetadataMsg::Request { piece: 0 }.encode(),
            b"d8:msg_typei0e5:piecei0ee".to_vec()
        );
        let data = MetadataMsg::Data {
            piece: 1,
            total_size: 20000,
            data: Bytes::from_static(b"abc"),
        };
        assert_eq!(
            data.encode(),
            b"d8:msg_typei1e5:piecei1e10:total_sizei20000eeabc".to_vec()
        );
        assert_eq!(
            MetadataMsg::Reject { piece: 3 }.encode(),
            b"d8:msg_typei2e5:piecei3ee".to_vec()
        );
    }

    #[test]
    fn metadata_msg_rejections() {
        let dec = |b: &'static [u8]| MetadataMsg::decode(&Bytes::from_static(b));
        assert!(dec(b"d8:msg_typei7e5:piecei0ee").is_err());
        assert!(dec(b"d8:msg_typei0e5:piecei-1ee").is_err());
        assert!(dec(b"d8:msg_typei0ee").is_err());
        assert!(
            dec(b"d8:msg_typei1e5:piecei0ee").is_err(),
            "data without total_size"
        );
        assert!(dec(b"d8:msg_typei1e5:piecei0e10:total_sizei-1ee").is_err());
        assert!(dec(b"i1e").is_err());
        let mut long = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        long.resize(long.len() + METADATA_PIECE_LEN + 1, 0);
        assert!(MetadataMsg::decode(&Bytes::from(long)).is_err());
    }

    #[test]
    fn data_is_sliced_without_copy() {
        let payload = Bytes::from(
            MetadataMsg::Data {
                piece: 0,
                total_size: 5,
                data: Bytes::from_static(b"hello"),
            }
            .encode(),
        );
        match MetadataMsg::decode(&payload).unwrap() {
            MetadataMsg::Data { data, .. } => {
                assert_eq!(&data[..], b"hello");
                assert_eq!(
                    data.as_ptr() as usize,
                    payload.as_ptr() as usize + payload.len() - 5
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn metadata(len: usize) -> (Vec<u8>, InfoHash) {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let hash: [u8; 20] = Sha1::digest(&bytes).into();
        (bytes, InfoHash(hash))
    }

    #[test]
    fn assembler_collects_and_verifies() {
        let len = 2 * METADATA_PIECE_LEN + 100;
        let (bytes, hash) = metadata(len);
        let mut asm = MetadataAssembler::new(len as u64).unwrap();
        assert_eq!(asm.piece_count(), 3);
        assert_eq!(asm.piece_len(2), Some(100));
        assert_eq!(asm.piece_len(3), None);
        assert_eq!(asm.next_missing(0), Some(0));
        assert_eq!(asm.finish(hash), Err(MetadataError::Incomplete));
        let chunk = |i: usize| {
            Bytes::copy_from_slice(
                &bytes[i * METADATA_PIECE_LEN..len.min((i + 1) * METADATA_PIECE_LEN)],
            )
        };
        asm.insert(2, chunk(2)).unwrap();
        assert_eq!(asm.next_missing(2), Some(0), "wraps around");
        asm.insert(0, chunk(0)).unwrap();
        asm.insert(0, chunk(0)).unwrap(); // duplicate is harmless
        assert!(!asm.is_complete());
        assert_eq!(asm.next_missing(0), Some(1));
        asm.insert(1, chunk(1)).unwrap();
        assert!(asm.is_complete());
        assert_eq!(asm.next_missing(0), None);
        assert_eq!(asm.finish(hash).unwrap(), bytes);
    }

    #[test]
    fn assembler_rejects_bad_input_and_hash_mismatch() {
        assert_eq!(
            MetadataAssembler::new(0).unwrap_err(),
            MetadataError::BadSize(0)
        );
        assert!(MetadataAssembler::new(MAX_METADATA_SIZE + 1).is_err());
        assert!(MetadataAssembler::new(MAX_METADATA_SIZE).is_ok());
        let (bytes, _) = metadata(METADATA_PIECE_LEN + 10);
        let mut asm = MetadataAssembler::new(bytes.len() as u64).unwrap();
        assert!(matches!(
            asm.insert(2, Bytes::new()),
            Err(MetadataError::PieceOutOfRange { piece: 2, count: 2 })
        ));
        assert!(matches!(
            asm.insert(u32::MAX, Bytes::new()),
            Err(MetadataError::PieceOutOfRange { .. })
        ));
        assert!(matches!(
            asm.insert(1, Bytes::from_static(b"short")),
            Err(MetadataError::BadPieceLength {
                want: 10,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            asm.insert(0, Bytes::from(vec![0u8; 10])),
            Err(MetadataError::BadPieceLength { .. })
        ));
        asm.insert(0, Bytes::copy_from_slice(&bytes[..METADATA_PIECE_LEN]))
            .unwrap();
        asm.insert(1, Bytes::copy_from_slice(&bytes[METADATA_PIECE_LEN..]))
            .unwrap();
        assert_eq!(
            asm.finish(InfoHash([0; 20])),
            Err(MetadataError::HashMismatch)
        );
        assert!(!asm.is_complete(), "pieces discarded after mismatch");
        assert_eq!(asm.next_missing(0), Some(0));
    }

    #[test]
    fn metadata_matches_a_truncated_v2_info_hash() {
        let bytes = b"d4:infoi1ee".to_vec();
        let v2: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let mut truncated = [0; 20];
        truncated.copy_from_slice(&v2[..20]);
        for expected in [truncated, Sha1::digest(&bytes).into()] {
            let mut asm = MetadataAssembler::new(bytes.len() as u64).unwrap();
            asm.insert(0, Bytes::from(bytes.clone())).unwrap();
            assert_eq!(asm.finish(InfoHash(expected)), Ok(bytes.clone()));
        }
        let mut asm = MetadataAssembler::new(bytes.len() as u64).unwrap();
        asm.insert(0, Bytes::from(bytes.clone())).unwrap();
        truncated[0] ^= 1;
        assert_eq!(
            asm.finish(InfoHash(truncated)),
            Err(MetadataError::HashMismatch)
        );
    }

    proptest! {
        #[test]
        fn prop_handshake_round_trip(
            ut in proptest::option::of(1u8..=255),
            size in proptest::option::of(0..=MAX_METADATA_SIZE),
            client in proptest::option::of("[ -~]{0,64}"),
            reqq in proptest::option::of(1u32..=u32::MAX),
            ut_pex in proptest::option::of(1u8..=255),
            listen_port in proptest::option::of(1u16..=u16::MAX),
        ) {
            let hs = ExtHandshake {
                ut_metadata: ut,
                metadata_size: size,
                client,
                reqq,
                ut_pex,
                listen_port,
            };
            prop_assert_eq!(ExtHandshake::decode(&hs.encode()), Ok(hs));
        }

        #[test]
        fn prop_metadata_msg_round_trip(
            kind in 0u8..3,
            piece in any::<u32>(),
            total_size in 0..=MAX_METADATA_SIZE,
            data in proptest::collection::vec(any::<u8>(), 0..=METADATA_PIECE_LEN),
        ) {
            let msg = match kind {
                0 => MetadataMsg::Request { piece },
                1 => MetadataMsg::Data { piece, total_size, data: Bytes::from(data) },
                _ => MetadataMsg::Reject { piece },
            };
            let payload = Bytes::from(msg.encode());
            prop_assert_eq!(MetadataMsg::decode(&payload), Ok(msg));
        }

        #[test]
        fn prop_arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ExtHandshake::decode(&bytes);
            let _ = MetadataMsg::decode(&Bytes::from(bytes));
        }

        #[test]
        fn prop_assembler_any_order(len in 1usize..(5 * METADATA_PIECE_LEN), seed in any::<u64>()) {
            let (bytes, hash) = metadata(len);
            let mut asm = MetadataAssembler::new(len as u64).unwrap();
            let n = asm.piece_count();
            let mut order: Vec<u32> = (0..n).collect();
            let mut s = seed;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            for p in order {
                let start = p as usize * METADATA_PIECE_LEN;
                let end = len.min(start + METADATA_PIECE_LEN);
                asm.insert(p, Bytes::copy_from_slice(&bytes[start..end])).unwrap();
            }
            prop_assert!(asm.is_complete());
            prop_assert_eq!(asm.finish(hash), Ok(bytes));
        }
    }

    #[test]
    fn answers_metadata_requests_in_range_only() {
        let meta: Vec<u8> = (0..(METADATA_PIECE_LEN + 10)).map(|i| i as u8).collect();
        let second = answer_metadata(Some(&meta), &MetadataMsg::Request { piece: 1 });
        assert_eq!(
            second,
            Some(MetadataMsg::Data {
                piece: 1,
                total_size: meta.len() as u64,
                data: Bytes::copy_from_slice(&meta[METADATA_PIECE_LEN..]),
            })
        );
        for (have, piece) in [(Some(&meta[..]), 2), (None, 0), (Some(&meta[..]), u32::MAX)] {
            assert_eq!(
                answer_metadata(have, &MetadataMsg::Request { piece }),
                Some(MetadataMsg::Reject { piece })
            );
        }
        assert_eq!(
            answer_metadata(Some(&meta), &MetadataMsg::Reject { piece: 0 }),
            None
        );
    }
}
