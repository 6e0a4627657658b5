//! Small identifiers shared by every layer: info hashes (v1 and v2), peer id, hex helpers.
//!
//! Invariants: the v1 info hash and the peer id are exactly 20 bytes, the v2 info hash 32; hex
//! output is lowercase; hex input is parsed strictly (exact length, no sign, no whitespace) and
//! never panics on hostile text.

use std::fmt;

use rand::Rng;

/// The SHA-1 of a torrent's bencoded info dictionary (BitTorrent v1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// The SHA-256 of a torrent's bencoded info dictionary (BitTorrent v2, BEP 52).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV2(pub [u8; 32]);

impl InfoHashV2 {
    /// The first 20 bytes: what stands for a v2 torrent in handshakes, with trackers and in
    /// the DHT (BEP 52).
    pub fn truncated(&self) -> InfoHash {
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.0[..20]);
        InfoHash(out)
    }
}

/// A 20-byte peer id as sent in the handshake and to trackers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

/// bitrush's two-letter Azureus-style client code, `RH` (bitRusH). No client list we know of
/// uses it in either case: libtorrent's `identify_client`, Transmission's `clients.cc`,
/// rtorrent's `client_list.cc` (qBittorrent and Deluge name peers through libtorrent) and
/// WebTorrent's `bittorrent-peerid`. (`BR`, used until 0.1.0, is BitRocket's.)
pub const CLIENT_CODE: [u8; 2] = *b"RH";

/// The client prefix at the start of every peer id this client makes (Azureus style): `-RH`,
/// then this crate's major, minor and patch version as one digit each, then `0`, then `-`;
/// `-RH0100-` for 0.1.0. A digit is `0`-`9`, then `A`-`Z` for 10 to 35 (libtorrent and
/// Transmission read them so; rtorrent reads up to `F`); larger numbers show as `Z`.
pub const PEER_ID_PREFIX: &[u8; 8] = &peer_id_prefix(
    env!("CARGO_PKG_VERSION_MAJOR"),
    env!("CARGO_PKG_VERSION_MINOR"),
    env!("CARGO_PKG_VERSION_PATCH"),
);

/// `-RH<major><minor><patch>0-` from the decimal version numbers (see [`PEER_ID_PREFIX`]).
const fn peer_id_prefix(major: &str, minor: &str, patch: &str) -> [u8; 8] {
    [
        b'-',
        CLIENT_CODE[0],
        CLIENT_CODE[1],
        version_digit(major),
        version_digit(minor),
        version_digit(patch),
        b'0',
        b'-',
    ]
}

/// One version number (decimal text) as a base-36 digit, `Z` when it does not fit.
const fn version_digit(decimal: &str) -> u8 {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let bytes = decimal.as_bytes();
    let mut value: usize = 0;
    let mut i = 0;
    while i < bytes.len() {
        let d = bytes[i];
        if !d.is_ascii_digit() || value >= DIGITS.len() {
            return b'Z';
        }
        value = value * 10 + (d - b'0') as usize;
        i += 1;
    }
    if value < DIGITS.len() {
        DIGITS[value]
    } else {
        b'Z'
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of any bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for &b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The value of one hex digit (either case), or `None`.
pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses exactly `2 * N` hex digits (either case) into `N` bytes.
fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = hex_value(pair[0])?;
        let lo = hex_value(pair[1])?;
        *slot = (hi << 4) | lo;
    }
    Some(out)
}

/// Parses exactly 40 hex digits (either case) into 20 bytes.
pub fn from_hex20(s: &str) -> Option<[u8; 20]> {
    from_hex(s)
}

/// Parses exactly 64 hex digits (either case) into 32 bytes.
pub fn from_hex32(s: &str) -> Option<[u8; 32]> {
    from_hex(s)
}

impl PeerId {
    /// A fresh id from `rng`: the client prefix then 12 random alphanumerics.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> PeerId {
        let mut id = [0u8; 20];
        id[..PEER_ID_PREFIX.len()].copy_from_slice(PEER_ID_PREFIX);
        for slot in &mut id[PEER_ID_PREFIX.len()..] {
            *slot = rng.sample(rand::distributions::Alphanumeric);
        }
        PeerId(id)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}
impl fmt::Display for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHashV2({self})")
    }
}
impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn to_hex_known_values() {
        assert_eq!(to_hex(&[]), "");
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn from_hex20_accepts_both_cases() {
        let lower = "0123456789abcdef0123456789abcdef01234567";
        let upper = "0123456789ABCDEF0123456789ABCDEF01234567";
        let expected = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef, 0x01, 0x23, 0x45, 0x67,
        ];
        assert_eq!(from_hex20(lower), Some(expected));
        assert_eq!(from_hex20(upper), Some(expected));
    }

    #[test]
    fn from_hex20_rejects_bad_input() {
        assert_eq!(from_hex20(""), None);
        assert_eq!(from_hex20(&"a".repeat(39)), None);
        assert_eq!(from_hex20(&"a".repeat(41)), None);
        assert_eq!(from_hex20(&"g".repeat(40)), None);
        assert_eq!(from_hex20(&format!("+{}", "a".repeat(39))), None);
        assert_eq!(from_hex20(&format!(" {}", "a".repeat(39))), None);
        // 40 bytes but multi-byte characters: must not panic, must fail.
        assert_eq!(from_hex20(&"é".repeat(20)), None);
    }

    #[test]
    fn display_is_lowercase_hex() {
        let h = InfoHash([0xAB; 20]);
        assert_eq!(h.to_string(), "ab".repeat(20));
        assert_eq!(format!("{h:?}"), format!("InfoHash({})", "ab".repeat(20)));
    }

    #[test]
    fn v2_hash_hex_and_truncation() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        let h = InfoHashV2(bytes);
        let hex = to_hex(&bytes);
        assert_eq!(h.to_string(), hex);
        assert_eq!(from_hex32(&hex), Some(bytes));
        assert_eq!(from_hex32(&hex.to_uppercase()), Some(bytes));
        assert_eq!(from_hex32(&hex[..63]), None);
        assert_eq!(from_hex32(&format!("{hex}0")), None);
        assert_eq!(from_hex32(&"é".repeat(32)), None);
        assert_eq!(h.truncated().0[..], bytes[..20]);
    }

    #[test]
    fn generated_peer_id_has_prefix_and_alphanumerics() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let id = PeerId::generate(&mut rng);
        assert_eq!(&id.0[..8], PEER_ID_PREFIX);
        assert!(
            id.0[8..].iter().all(|b| b.is_ascii_alphanumeric()),
            "{:?}",
            id.0
        );
        // 62^12 possibilities: two draws colliding means the generator is broken.
        assert_ne!(PeerId::generate(&mut rng), PeerId::generate(&mut rng));
    }

    #[test]
    fn peer_id_prefix_carries_the_client_code_and_the_crate_version() {
        let version = format!(
            "{}{}{}",
            env!("CARGO_PKG_VERSION_MAJOR"),
            env!("CARGO_PKG_VERSION_MINOR"),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        // Single-digit version numbers appear as themselves.
        if version.len() == 3 {
            assert_eq!(PEER_ID_PREFIX, format!("-RH{version}0-").as_bytes());
        }
        assert_eq!(&peer_id_prefix("0", "1", "0"), b"-RH0100-");
        assert_eq!(&peer_id_prefix("1", "12", "35"), b"-RH1CZ0-");
        assert_eq!(
            &peer_id_prefix("2", "36", "999"),
            b"-RH2ZZ0-",
            "too large: Z"
        );
        assert_eq!(
            &peer_id_prefix("", "x", "3"),
            b"-RH0Z30-",
            "not a number: Z"
        );
    }

    proptest! {
        #[test]
        fn hex_round_trip(bytes in proptest::array::uniform20(any::<u8>())) {
            let hex = to_hex(&bytes);
            prop_assert_eq!(hex.len(), 40);
            prop_assert_eq!(from_hex20(&hex), Some(bytes));
            prop_assert_eq!(from_hex20(&hex.to_uppercase()), Some(bytes));
        }

        #[test]
        fn from_hex20_never_panics(s in ".*") {
            let _ = from_hex20(&s);
        }
    }
}
