//! The 68-byte BitTorrent handshake (BEP 3): `\x13BitTorrent protocol`, 8 reserved bytes,
//! the 20-byte info hash and the 20-byte peer id.
//!
//! Invariants: decoding takes exactly [`HANDSHAKE_LEN`] bytes, so it cannot read out of bounds;
//! only the protocol string is validated (the caller compares the info hash).

use crate::types::{InfoHash, PeerId};

/// Length of a whole handshake on the wire.
pub const HANDSHAKE_LEN: usize = 68;
/// Reserved bytes announcing only the extension protocol (BEP 10): byte 5 = 0x10. The
/// single-purpose commands (`handshake`, `magnet_handshake`, `magnet_info`) send exactly these.
pub const RESERVED_EXTENSIONS: [u8; 8] = [0, 0, 0, 0, 0, 0x10, 0, 0];
/// Reserved bytes of a full session: the extension protocol (BEP 10, byte 5 = 0x10), the fast
/// extension (BEP 6, byte 7 = 0x04) and the DHT (BEP 5, byte 7 = 0x01).
pub const RESERVED_SESSION: [u8; 8] = [0, 0, 0, 0, 0, 0x10, 0, 0x05];
/// BEP 52's upgrade bit (byte 7 = 0x10): the initiator of a connection to a hybrid torrent,
/// made with its v1 info hash, also speaks v2; the receiver may then answer with the v2 info
/// hash (truncated) to upgrade the connection to v2, whose messages (hash requests) it may
/// then carry ([`Handshake::answer_to`], [`Handshake::accepts_answer`]). libtorrent drops a
/// peer that sets it for a v1-only torrent, so it is set only for torrents with v2 metadata.
pub const RESERVED_V2_BYTE: usize = 7;
/// The mask of [`RESERVED_V2_BYTE`].
pub const RESERVED_V2_MASK: u8 = 0x10;
/// The protocol string, preceded on the wire by its length byte (19).
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// A decoded or to-be-sent handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The 8 reserved (feature) bytes.
    pub reserved: [u8; 8],
    /// The torrent the connection is about.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

impl Handshake {
    /// Our handshake for one-shot exchanges: extension protocol announced, nothing else.
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
        Handshake {
            reserved: RESERVED_EXTENSIONS,
            info_hash,
            peer_id,
        }
    }

    /// Our handshake in a full session: extension protocol, fast extension and DHT.
    pub fn session(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
        Handshake {
            reserved: RESERVED_SESSION,
            info_hash,
            peer_id,
        }
    }

    /// The same handshake with the BEP 52 v2 bit set (for a v2-only or hybrid torrent).
    pub fn with_v2(mut self) -> Handshake {
        self.reserved[RESERVED_V2_BYTE] |= RESERVED_V2_MASK;
        self
    }

    /// Our answer to a peer's handshake `theirs`, which named the torrent by one of its
    /// hashes: the same name, except that a hybrid's connection opened with our (v1) hash by a
    /// peer that set the upgrade bit is upgraded to v2 (BEP 52) by answering with `v2_alias`,
    /// the hybrid's truncated v2 hash, if we set the bit too.
    pub fn answer_to(&self, theirs: &Handshake, v2_alias: Option<InfoHash>) -> Handshake {
        match v2_alias {
            Some(alias)
                if theirs.info_hash == self.info_hash
                    && theirs.supports_v2()
                    && self.supports_v2() =>
            {
                self.for_info_hash(alias)
            }
            _ => self.for_info_hash(theirs.info_hash),
        }
    }

    /// Whether `theirs` answers our handshake: it names the torrent as we did, or, when we
    /// offered the upgrade to v2, by `v2_alias` (the upgrade accepted).
    pub fn accepts_answer(&self, theirs: &Handshake, v2_alias: Option<InfoHash>) -> bool {
        theirs.info_hash == self.info_hash
            || (self.supports_v2() && v2_alias.is_some_and(|a| a == theirs.info_hash))
    }

    /// The same handshake for another name of the torrent (a hybrid's v1 or truncated v2
    /// hash: a connection is answered with the hash it was opened with).
    pub fn for_info_hash(&self, info_hash: InfoHash) -> Handshake {
        Handshake { info_hash, ..*self }
    }

    /// The 68-byte wire form.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    /// Fails if the protocol string is not `\x13BitTorrent protocol`.
    pub fn decode(bytes: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, super::WireError> {
        if bytes[0] != 19 {
            return Err(super::WireError::BadHandshake("protocol length is not 19"));
        }
        if &bytes[1..20] != PROTOCOL {
            return Err(super::WireError::BadHandshake(
                "protocol is not \"BitTorrent protocol\"",
            ));
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&bytes[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&bytes[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&bytes[48..68]);
        Ok(Handshake {
            reserved,
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
        })
    }

    /// Whether the sender set the BEP 10 extension-protocol bit.
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// Whether the sender supports the fast extension (BEP 6).
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// Whether the sender speaks BitTorrent v2 (BEP 52's upgrade bit).
    pub fn supports_v2(&self) -> bool {
        self.reserved[RESERVED_V2_BYTE] & RESERVED_V2_MASK != 0
    }

    /// Whether the sender runs a DHT node (BEP 5).
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireError;
    use proptest::prelude::*;

    fn sample() -> Handshake {
        Handshake::new(InfoHash([0xab; 20]), PeerId(*b"-BR0001-abcdefghijkl"))
    }

    #[test]
    fn encodes_exact_layout() {
        let bytes = sample().encode();
        assert_eq!(bytes[0], 19);
        assert_eq!(&bytes[1..20], b"BitTorrent protocol");
        assert_eq!(&bytes[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(&bytes[28..48], &[0xab; 20]);
        assert_eq!(&bytes[48..68], b"-BR0001-abcdefghijkl");
    }

    #[test]
    fn round_trips_and_reports_extensions() {
        let hs = sample();
        let back = Handshake::decode(&hs.encode()).unwrap();
        assert_eq!(back, hs);
        assert!(back.supports_extensions());
        let plain = Handshake {
            reserved: [0; 8],
            ..hs
        };
        assert!(!Handshake::decode(&plain.encode())
            .unwrap()
            .supports_extensions());
    }

    #[test]
    fn the_v2_bit_is_byte_7_0x10_and_only_when_asked_for() {
        let session = Handshake::session(InfoHash([1; 20]), PeerId([2; 20]));
        assert_eq!(session.encode()[20..28], [0, 0, 0, 0, 0, 0x10, 0, 0x05]);
        assert!(!session.supports_v2());
        let v2 = session.with_v2();
        assert_eq!(v2.encode()[20..28], [0, 0, 0, 0, 0, 0x10, 0, 0x15]);
        let back = Handshake::decode(&v2.encode()).unwrap();
        assert!(back.supports_v2() && back.supports_fast() && back.supports_dht());
        // Answering with the other name of a hybrid keeps it.
        assert!(v2.for_info_hash(InfoHash([3; 20])).supports_v2());
    }

    /// BEP 52's upgrade: a v1-hash connection is answered with the v2 hash when both sides
    /// set the bit, and an initiator that offered it takes that answer (and only then).
    #[test]
    fn a_hybrid_connection_is_upgraded_by_answering_with_the_v2_hash() {
        let (v1, alias) = (InfoHash([1; 20]), InfoHash([9; 20]));
        let plain = Handshake::session(v1, PeerId([2; 20]));
        let v2 = plain.with_v2();
        let peer = |h: Handshake| Handshake {
            peer_id: PeerId([3; 20]),
            ..h
        };
        assert_eq!(v2.answer_to(&peer(v2), Some(alias)).info_hash, alias);
        assert_eq!(v2.answer_to(&peer(plain), Some(alias)).info_hash, v1);
        assert_eq!(plain.answer_to(&peer(v2), Some(alias)).info_hash, v1);
        assert_eq!(v2.answer_to(&peer(v2), None).info_hash, v1);
        // A peer that named the v2 hash is answered with it.
        let by_alias = peer(plain.for_info_hash(alias));
        assert_eq!(plain.answer_to(&by_alias, Some(alias)).info_hash, alias);
        // The initiator's side.
        assert!(v2.accepts_answer(&peer(v2), Some(alias)));
        assert!(v2.accepts_answer(&peer(v2.for_info_hash(alias)), Some(alias)));
        assert!(!plain.accepts_answer(&peer(v2.for_info_hash(alias)), Some(alias)));
        assert!(!v2.accepts_answer(&peer(v2.for_info_hash(alias)), None));
        assert!(!v2.accepts_answer(&peer(v2.for_info_hash(InfoHash([4; 20]))), Some(alias)));
    }

    #[test]
    fn rejects_wrong_protocol() {
        let mut bytes = sample().encode();
        bytes[0] = 18;
        assert!(matches!(
            Handshake::decode(&bytes),
            Err(WireError::BadHandshake(_))
        ));
        let mut bytes = sample().encode();
        bytes[5] = b'x';
        assert!(matches!(
            Handshake::decode(&bytes),
            Err(WireError::BadHandshake(_))
        ));
    }

    proptest! {
        #[test]
        fn prop_round_trip(reserved in any::<[u8; 8]>(), ih in any::<[u8; 20]>(), id in any::<[u8; 20]>()) {
            let hs = Handshake { reserved, info_hash: InfoHash(ih), peer_id: PeerId(id) };
            prop_assert_eq!(Handshake::decode(&hs.encode()), Ok(hs));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), HANDSHAKE_LEN)) {
            let mut arr = [0u8; HANDSHAKE_LEN];
            arr.copy_from_slice(&bytes);
            let _ = Handshake::decode(&arr);
        }
    }
}
