//! The fast extension's allowed-fast set (BEP 6): the pieces a peer may request from us while
//! we choke it, derived from its IPv4 address and the info hash so that both sides (and other
//! peers behind the same /24) agree on it.

use core::net::Ipv4Addr;

use sha1::{Digest, Sha1};

use crate::types::InfoHash;

/// Pieces in the allowed-fast set we give each peer (libtorrent's default).
pub const ALLOWED_FAST_COUNT: usize = 10;

/// The canonical allowed-fast set of `k` distinct pieces for a peer at `ip` (BEP 6): SHA-1 is
/// iterated over the masked address and the info hash, and each digest yields five piece
/// indices. Empty if the torrent has no pieces; at most `piece_count` pieces.
pub fn allowed_fast_set(
    ip: Ipv4Addr,
    info_hash: &InfoHash,
    piece_count: u32,
    k: usize,
) -> Vec<u32> {
    let k = k.min(piece_count as usize);
    let mut set = Vec::with_capacity(k);
    if k == 0 {
        return set;
    }
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&(u32::from(ip) & 0xffff_ff00).to_be_bytes());
    x.extend_from_slice(&info_hash.0);
    while set.len() < k {
        let digest: [u8; 20] = Sha1::digest(&x).into();
        x = digest.to_vec();
        for chunk in digest.chunks_exact(4) {
            if set.len() >= k {
                break;
            }
            let y = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let index = y % piece_count;
            if !set.contains(&index) {
                set.push(index);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_example_of_bep_6() {
        let ip = Ipv4Addr::new(80, 4, 4, 200);
        let hash = InfoHash([0xaa; 20]);
        assert_eq!(
            allowed_fast_set(ip, &hash, 1313, 7),
            vec![1059, 431, 808, 1217, 287, 376, 1188]
        );
        assert_eq!(
            allowed_fast_set(ip, &hash, 1313, 9),
            vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
        );
        // The same /24 gets the same set.
        assert_eq!(
            allowed_fast_set(Ipv4Addr::new(80, 4, 4, 1), &hash, 1313, 7),
            allowed_fast_set(ip, &hash, 1313, 7)
        );
    }

    #[test]
    fn small_torrents_get_every_piece_once() {
        let hash = InfoHash([1; 20]);
        let mut set = allowed_fast_set(Ipv4Addr::new(10, 0, 0, 1), &hash, 3, 10);
        set.sort();
        assert_eq!(set, vec![0, 1, 2]);
        assert!(allowed_fast_set(Ipv4Addr::LOCALHOST, &hash, 0, 10).is_empty());
    }
}
