//! Compact address formats shared by the DHT (BEP 5, BEP 32) and `ut_pex` (BEP 11): a peer is
//! 6 bytes (IPv4, port) or 18 bytes (IPv6, port), big-endian; a node is its 20-byte id followed
//! by its compact address (26 or 38 bytes).
//!
//! Invariants: decoders take whole strings and refuse any length that is not a multiple of the
//! entry size (they never read a partial entry); the family of each entry follows its size.

use core::net::{IpAddr, SocketAddr};

use super::id::{NodeId, ID_LEN};
use crate::tracker::{compact_v4, compact_v6};

/// A compact IPv4 peer.
pub const PEER_V4_LEN: usize = 6;
/// A compact IPv6 peer.
pub const PEER_V6_LEN: usize = 18;
/// A compact IPv4 node.
pub const NODE_V4_LEN: usize = ID_LEN + PEER_V4_LEN;
/// A compact IPv6 node.
pub const NODE_V6_LEN: usize = ID_LEN + PEER_V6_LEN;

/// Appends the compact form of `addr` (6 or 18 bytes by family).
pub fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// One compact peer of either size; `None` for any other length.
pub fn peer(bytes: &[u8]) -> Option<SocketAddr> {
    match bytes.len() {
        PEER_V4_LEN => compact_v4(bytes).next(),
        PEER_V6_LEN => compact_v6(bytes).next(),
        _ => None,
    }
}

/// Compact peers of one family (`v6` picks 18-byte entries); `None` if the length is not a
/// multiple of the entry size.
pub fn peers(bytes: &[u8], v6: bool) -> Option<Vec<SocketAddr>> {
    let size = if v6 { PEER_V6_LEN } else { PEER_V4_LEN };
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    Some(if v6 {
        compact_v6(bytes).collect()
    } else {
        compact_v4(bytes).collect()
    })
}

/// Compact nodes of one family; `None` if the length is not a multiple of the entry size.
pub fn nodes(bytes: &[u8], v6: bool) -> Option<Vec<(NodeId, SocketAddr)>> {
    let size = if v6 { NODE_V6_LEN } else { NODE_V4_LEN };
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    bytes
        .chunks_exact(size)
        .map(|c| {
            let (id, addr) = c.split_at(ID_LEN);
            Some((NodeId::from_slice(id)?, peer(addr)?))
        })
        .collect()
}

/// Appends compact nodes (each `id ++ address`).
pub fn push_nodes<'a>(
    out: &mut Vec<u8>,
    nodes: impl IntoIterator<Item = &'a (NodeId, SocketAddr)>,
) {
    for (id, addr) in nodes {
        out.extend_from_slice(&id.0);
        push_addr(out, *addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    #[test]
    fn known_encoding() {
        let mut out = Vec::new();
        push_addr(&mut out, SocketAddr::from(([127, 0, 0, 1], 0x1ae1)));
        assert_eq!(out, [127, 0, 0, 1, 0x1a, 0xe1]);
        assert_eq!(peers(&out[..5], false), None);
        assert_eq!(nodes(&[0; 27], false), None);
        assert_eq!(nodes(&[0; 39], true), None);
        assert_eq!(peer(&[0; 7]), None);
    }

    proptest! {
        #[test]
        fn addresses_round_trip(addr in arb_addr(), id in any::<[u8; 20]>()) {
            let mut out = Vec::new();
            push_addr(&mut out, addr);
            prop_assert_eq!(peer(&out), Some(addr));
            prop_assert_eq!(peers(&out, addr.is_ipv6()), Some(vec![addr]));
            let mut n = Vec::new();
            push_nodes(&mut n, &[(NodeId(id), addr)]);
            prop_assert_eq!(nodes(&n, addr.is_ipv6()), Some(vec![(NodeId(id), addr)]));
        }
    }
}
