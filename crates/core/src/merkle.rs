//! BitTorrent v2 merkle trees (BEP 52): SHA-256 over 16 KiB blocks.
//!
//! Each file has its own tree. A leaf is the SHA-256 of one 16 KiB block of the file (the last
//! block may be shorter: its hash covers only its bytes). The leaves are padded with zero
//! hashes (32 zero bytes) to a power-of-two count, and each node is the SHA-256 of its two
//! children. The *piece layer* is the layer `log2(piece_length / 16 KiB)` above the leaves:
//! one hash per piece, each the root of a subtree of `piece_length / 16 KiB` leaves. A file of
//! at most one piece has no piece layer: its root is taken over its blocks padded to the next
//! power of two (not to a whole piece), so a file of one 16 KiB block has the block's hash as
//! its root. A larger file's root is the root of its piece layer padded with the hash of an
//! all-zero piece subtree.
//!
//! Invariants: nothing here allocates more than the hashes it is given (a padded width is
//! walked level by level, never materialised); proofs longer than [`MAX_PROOF_LEN`] are
//! refused; no function panics on any input.

use sha2::{Digest, Sha256};

/// Bytes per leaf block.
pub const BLOCK_LEN: u32 = 16 * 1024;
/// Most sibling hashes a proof may hold: a tree of 2^64 leaves, more than any file has blocks.
pub const MAX_PROOF_LEN: usize = 64;

/// A SHA-256 node of a tree.
pub type Hash = [u8; 32];
/// The hash standing for a leaf beyond the end of a file.
pub const ZERO: Hash = [0; 32];

/// SHA-256 of one block of data (a leaf).
pub fn block_hash(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The parent of two nodes.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of an all-zero subtree of `2^levels` leaves (`levels == 0`: the zero leaf).
/// Levels above 64 are treated as 64.
pub fn pad_hash(levels: u32) -> Hash {
    let mut h = ZERO;
    for _ in 0..levels.min(64) {
        h = node_hash(&h, &h);
    }
    h
}

/// The root of a tree whose bottom layer is `nodes` followed by copies of `pad` up to `width`
/// entries. `width` is rounded up to a power of two no smaller than `nodes.len()` (and at
/// least 1). Costs `O(nodes.len() + log2(width))` hashes; the padding is never materialised.
pub fn merkle_root(nodes: &[Hash], width: u64, pad: Hash) -> Hash {
    let width = width
        .max(nodes.len() as u64)
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 63);
    let mut layer: Vec<Hash> = nodes.to_vec();
    let mut pad = pad;
    let mut span = width;
    if layer.is_empty() {
        layer.push(pad);
    }
    while span > 1 {
        layer = parent_layer(&layer, &pad);
        pad = node_hash(&pad, &pad);
        span /= 2;
    }
    layer.first().copied().unwrap_or(pad)
}

/// Number of leaves in one piece's subtree (`piece_length / 16 KiB`, at least 1).
pub fn blocks_per_piece(piece_length: u32) -> u32 {
    (piece_length / BLOCK_LEN).max(1)
}

/// The leaf width of the subtree covering one piece of a file of `file_length` bytes: a whole
/// piece's blocks, or for a file of at most one piece its block count rounded up to a power of
/// two (whose root is then the file's root).
pub fn piece_width(file_length: u64, piece_length: u32) -> u64 {
    if file_length > u64::from(piece_length) {
        u64::from(blocks_per_piece(piece_length))
    } else {
        file_length
            .div_ceil(u64::from(BLOCK_LEN))
            .max(1)
            .checked_next_power_of_two()
            .unwrap_or(1)
    }
}

/// The leaf hashes of `data` (consecutive 16 KiB blocks, the last one possibly short).
pub fn block_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks(BLOCK_LEN as usize).map(block_hash).collect()
}

/// The hash of one piece from its data: the root of its blocks padded with zero leaves to
/// `width` (see [`piece_width`]).
pub fn piece_root(data: &[u8], width: u64) -> Hash {
    merkle_root(&block_hashes(data), width, ZERO)
}

/// A file's piece layer from its leaf hashes: one subtree root per `blocks_per_piece` leaves.
pub fn piece_layer(leaves: &[Hash], blocks_per_piece: u32) -> Vec<Hash> {
    let per = blocks_per_piece.max(1) as usize;
    leaves
        .chunks(per)
        .map(|chunk| merkle_root(chunk, per as u64, ZERO))
        .collect()
}

/// A file's root (`pieces root`) from its piece layer (for a file of more than one piece).
pub fn root_from_piece_layer(layer: &[Hash], blocks_per_piece: u32) -> Hash {
    let levels = blocks_per_piece.max(1).trailing_zeros();
    merkle_root(layer, layer.len() as u64, pad_hash(levels))
}

/// A file's root from all its leaf hashes and the torrent's piece length.
pub fn file_root(leaves: &[Hash], piece_length: u32) -> Hash {
    let per = blocks_per_piece(piece_length);
    if leaves.len() as u64 <= u64::from(per) {
        merkle_root(leaves, leaves.len() as u64, ZERO)
    } else {
        root_from_piece_layer(&piece_layer(leaves, per), per)
    }
}

/// The sibling hashes from node `index` of the bottom layer (`nodes` padded with `pad` to
/// `width`) up to the root, bottom first: what a peer sends to prove that node. `None` if
/// `index` is outside the padded width.
pub fn merkle_proof(nodes: &[Hash], width: u64, pad: Hash, index: u64) -> Option<Vec<Hash>> {
    let width = width
        .max(nodes.len() as u64)
        .max(1)
        .checked_next_power_of_two()?;
    if index >= width {
        return None;
    }
    let mut layer: Vec<Hash> = nodes.to_vec();
    let mut pad = pad;
    let mut index = index;
    let mut span = width;
    let mut proof = Vec::new();
    while span > 1 {
        let sibling = usize::try_from(index ^ 1).ok();
        proof.push(sibling.and_then(|s| layer.get(s)).copied().unwrap_or(pad));
        layer = parent_layer(&layer, &pad);
        pad = node_hash(&pad, &pad);
        index /= 2;
        span /= 2;
    }
    Some(proof)
}

/// The root reached from `node` at position `index` of its layer by hashing in the sibling
/// hashes of `proof` (bottom first). `None` if the proof is longer than [`MAX_PROOF_LEN`] or
/// `index` does not fit in a tree of that height.
pub fn root_from_proof(node: &Hash, index: u64, proof: &[Hash]) -> Option<Hash> {
    if proof.len() > MAX_PROOF_LEN || (proof.len() < 64 && index >> proof.len() != 0) {
        return None;
    }
    let mut node = *node;
    let mut index = index;
    for sibling in proof {
        node = if index & 1 == 0 {
            node_hash(&node, sibling)
        } else {
            node_hash(sibling, &node)
        };
        index >>= 1;
    }
    Some(node)
}

/// Whether block `index` of a file (its data) is proven against the file's `root` by `proof`
/// (the siblings from the leaf up).
pub fn verify_block(data: &[u8], index: u64, proof: &[Hash], root: &Hash) -> bool {
    data.len() <= BLOCK_LEN as usize
        && root_from_proof(&block_hash(data), index, proof).as_ref() == Some(root)
}

/// Whether piece `index` of a file of `file_length` bytes (its data) is proven against the
/// file's `root` by `proof` (the siblings from the piece layer up; empty for a file of one
/// piece).
pub fn verify_piece(
    data: &[u8],
    index: u64,
    file_length: u64,
    piece_length: u32,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    let width = piece_width(file_length, piece_length);
    if data.len() as u64 > width.saturating_mul(u64::from(BLOCK_LEN)) {
        return false;
    }
    root_from_proof(&piece_root(data, width), index, proof).as_ref() == Some(root)
}

/// The layer above `layer`: each pair hashed, a missing right sibling being `pad`.
fn parent_layer(layer: &[Hash], pad: &Hash) -> Vec<Hash> {
    layer
        .chunks(2)
        .map(|pair| {
            let left = pair.first().unwrap_or(pad);
            node_hash(left, pair.get(1).unwrap_or(pad))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(data: &[u8]) -> Hash {
        block_hash(data)
    }

    /// The textbook tree: materialise every padded leaf, hash pairwise.
    fn naive_root(nodes: &[Hash], width: usize, pad: Hash) -> Hash {
        let mut layer: Vec<Hash> = nodes.to_vec();
        layer.resize(width, pad);
        while layer.len() > 1 {
            layer = layer.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        layer[0]
    }

    #[test]
    fn small_trees_by_hand() {
        let a = h(b"a");
        let b = h(b"b");
        assert_eq!(merkle_root(&[a], 1, ZERO), a);
        assert_eq!(merkle_root(&[a, b], 2, ZERO), node_hash(&a, &b));
        assert_eq!(
            merkle_root(&[a, b], 4, ZERO),
            node_hash(&node_hash(&a, &b), &node_hash(&ZERO, &ZERO))
        );
        // Width is rounded up to a power of two that holds every node.
        assert_eq!(
            merkle_root(&[a, b, a], 3, ZERO),
            naive_root(&[a, b, a], 4, ZERO)
        );
        assert_eq!(merkle_root(&[], 0, ZERO), ZERO);
        assert_eq!(merkle_root(&[], 4, ZERO), pad_hash(2));
    }

    #[test]
    fn pad_hash_is_the_root_of_zero_leaves() {
        for levels in 0..6u32 {
            assert_eq!(
                pad_hash(levels),
                naive_root(&[], 1 << levels, ZERO),
                "{levels}"
            );
        }
        assert_eq!(pad_hash(1000), pad_hash(64));
    }

    #[test]
    fn huge_widths_are_not_materialised() {
        let a = h(b"x");
        let root = merkle_root(&[a], 1 << 40, ZERO);
        let mut want = a;
        for level in 0..40 {
            want = node_hash(&want, &pad_hash(level));
        }
        assert_eq!(root, want);
        assert_eq!(
            merkle_root(&[a], u64::MAX, ZERO),
            merkle_root(&[a], 1 << 63, ZERO)
        );
    }

    #[test]
    fn file_roots_follow_bep52() {
        let piece_length = 4 * BLOCK_LEN;
        let data: Vec<u8> = (0..(9 * BLOCK_LEN + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        let leaves = block_hashes(&data);
        assert_eq!(leaves.len(), 10);
        // 10 blocks, 4 per piece: 3 pieces, the last of 2 blocks padded to 4 leaves.
        let layer = piece_layer(&leaves, 4);
        assert_eq!(layer.len(), 3);
        assert_eq!(layer[2], naive_root(&leaves[8..], 4, ZERO));
        for (i, chunk) in data.chunks(piece_length as usize).enumerate() {
            assert_eq!(piece_root(chunk, 4), layer[i]);
        }
        // The root is the root of all 16 leaves (10 real, 6 zero), also via the piece layer.
        let root = file_root(&leaves, piece_length);
        assert_eq!(root, naive_root(&leaves, 16, ZERO));
        assert_eq!(root, root_from_piece_layer(&layer, 4));

        // One piece or less: blocks padded to the next power of two, not to a whole piece.
        let small = &data[..3 * BLOCK_LEN as usize];
        let small_leaves = block_hashes(small);
        assert_eq!(
            file_root(&small_leaves, piece_length),
            naive_root(&small_leaves, 4, ZERO)
        );
        let tiny = &data[..10];
        assert_eq!(file_root(&block_hashes(tiny), piece_length), h(tiny));
        assert_eq!(piece_width(10, piece_length), 1);
        assert_eq!(piece_width(3 * u64::from(BLOCK_LEN), piece_length), 4);
        assert_eq!(piece_width(u64::from(piece_length) + 1, piece_length), 4);
        assert_eq!(piece_root(tiny, piece_width(10, piece_length)), h(tiny));
    }

    #[test]
    fn proofs_verify_blocks_and_pieces() {
        let piece_length = 2 * BLOCK_LEN;
        let data: Vec<u8> = (0..(5 * BLOCK_LEN + 7)).map(|i| (i % 241) as u8).collect();
        let leaves = block_hashes(&data);
        let root = file_root(&leaves, piece_length);
        for (i, block) in data.chunks(BLOCK_LEN as usize).enumerate() {
            let proof = merkle_proof(&leaves, leaves.len() as u64, ZERO, i as u64).unwrap();
            assert_eq!(proof.len(), 3);
            assert!(verify_block(block, i as u64, &proof, &root));
            assert!(!verify_block(block, (i as u64) ^ 1, &proof, &root));
            let mut bad = block.to_vec();
            bad[0] ^= 1;
            assert!(!verify_block(&bad, i as u64, &proof, &root));
        }
        let layer = piece_layer(&leaves, 2);
        let file_length = data.len() as u64;
        let pad = pad_hash(1);
        for (i, piece) in data.chunks(piece_length as usize).enumerate() {
            let proof = merkle_proof(&layer, layer.len() as u64, pad, i as u64).unwrap();
            assert!(verify_piece(
                piece,
                i as u64,
                file_length,
                piece_length,
                &proof,
                &root
            ));
            assert!(!verify_piece(
                &piece[1..],
                i as u64,
                file_length,
                piece_length,
                &proof,
                &root
            ));
            let short = &proof[..proof.len() - 1];
            assert!(!verify_piece(
                piece,
                i as u64,
                file_length,
                piece_length,
                short,
                &root
            ));
        }
        // A piece with more data than its subtree covers is refused, not truncated.
        let too_long = vec![0u8; 3 * BLOCK_LEN as usize];
        assert!(!verify_piece(
            &too_long,
            0,
            file_length,
            piece_length,
            &[],
            &root
        ));
        assert!(merkle_proof(&layer, 4, pad, 4).is_none());
    }

    #[test]
    fn hostile_proofs_are_refused() {
        let node = h(b"n");
        assert!(root_from_proof(&node, 0, &[ZERO; MAX_PROOF_LEN + 1]).is_none());
        // Index beyond the height the proof describes.
        assert!(root_from_proof(&node, 4, &[ZERO, ZERO]).is_none());
        assert!(root_from_proof(&node, u64::MAX, &[ZERO; 64]).is_some());
        assert_eq!(root_from_proof(&node, 0, &[]), Some(node));
        assert!(!verify_block(&[0; BLOCK_LEN as usize + 1], 0, &[], &node));
    }

    proptest! {
        #[test]
        fn root_matches_naive_and_proofs_round_trip(
            n in 1usize..40,
            extra in 0u32..3,
            seed in any::<u8>(),
            pick in any::<prop::sample::Index>(),
        ) {
            let nodes: Vec<Hash> = (0..n).map(|i| h(&[seed, i as u8])).collect();
            let width = (n as u64).next_power_of_two() << extra;
            let pad = pad_hash(u32::from(seed % 3));
            let root = merkle_root(&nodes, width, pad);
            prop_assert_eq!(root, naive_root(&nodes, width as usize, pad));
            let index = pick.index(width as usize) as u64;
            let proof = merkle_proof(&nodes, width, pad, index).unwrap();
            let leaf = nodes.get(index as usize).copied().unwrap_or(pad);
            prop_assert_eq!(root_from_proof(&leaf, index, &proof), Some(root));
        }

        #[test]
        fn root_from_proof_never_panics(
            index in any::<u64>(),
            len in 0usize..70,
        ) {
            let _ = root_from_proof(&ZERO, index, &vec![ZERO; len]);
        }
    }
}
