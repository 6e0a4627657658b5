//! Checking pieces against a torrent's hashes, and the BitTorrent v2 hash exchange (BEP 52).
//!
//! [`PieceHashes`] says whether an assembled piece is good: by its v1 SHA-1 when the torrent
//! has v1 metadata, and by the v2 merkle tree of the file the piece belongs to when it has v2
//! metadata (a v2 piece never spans files: the metainfo lays files out on piece boundaries).
//! A hybrid's piece must pass both, so a hybrid whose halves disagree cannot slip a piece
//! through the weaker hash; where a hybrid's layer is not known (yet) its SHA-1 alone decides.
//! Checking both costs one SHA-1 and one SHA-256 pass over the piece, plus a hash per level of
//! the piece's subtree: no more than the two passes. The piece at the end of a file holds only
//! the file's bytes in its subtree; the pad bytes that follow it in the payload are not
//! hashed.
//!
//! The same value answers peers' `hash request`s: from the piece layer up, from the layers it
//! knows; below it (block hashes), from the data of the pieces the request covers, which the
//! driver reads for a [`BlockHashJob`] (we keep no block hashes), checked against the piece
//! layer before they are vouched for. It names the bad blocks of a piece that failed, from a
//! peer's block hashes checked against the piece layer ([`PieceHashes::block_request`],
//! [`PieceHashes::bad_blocks`]). It also tells which layers are still missing (a magnet
//! link's info dictionary carries no `piece layers`, nor need a `.torrent`: [`fetch`] gets them
//! from peers).
//!
//! Invariants: every layer held has one hash per piece of its file and hashes to the file's
//! `pieces root` (checked on the way in, whatever the source); an answer never holds more than
//! [`MAX_HASHES`] hashes plus one uncle per tree level; one answer of block hashes reads at
//! most [`MAX_BLOCK_HASH_BYTES`] (or one piece); nothing panics on any request.

#[cfg(test)]
mod block_check_tests;
pub mod fetch;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::merkle::{self, Hash};
use crate::metainfo::{Info, PieceLayer};
use crate::wire::{HashRequest, Message};

/// Most hashes one `hash request` may ask for (as libtorrent: 8192 piece hashes cover a
/// file of 128 GiB at 16 MiB pieces; larger files are asked for in several requests).
pub const MAX_HASHES: u32 = 8192;
/// Most leaves asked for to check one failed piece's blocks ([`PieceHashes::block_request`]):
/// pieces up to 32 MiB, whose answer (64 KiB) stays within what any peer accepts as one
/// message (a 128 KiB block's).
pub const MAX_BLOCK_CHECK_LEAVES: u32 = 2048;
/// Hashes we ask for in one request when a piece layer is larger than that.
pub const REQUEST_CHUNK: u32 = 512;

/// Why a piece layer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayerError {
    /// No file of the torrent has this index, or it has no layer (one piece or less, empty,
    /// a pad file).
    #[error("file {0} has no piece layer")]
    NoSuchLayer(usize),
    /// The layer has the wrong number of hashes.
    #[error("the piece layer of file {file} has {got} hashes, not {want}")]
    WrongSize { file: usize, got: usize, want: u64 },
    /// The layer does not hash to the file's `pieces root`.
    #[error("the piece layer of file {0} does not hash to its pieces root")]
    WrongRoot(usize),
}

/// One file with v2 data: where its pieces are and its hashes.
#[derive(Clone, Debug)]
struct V2File {
    /// Index in `Info::files`.
    file: usize,
    /// Global index of its first piece.
    first_piece: u32,
    length: u64,
    root: Hash,
    /// The tree above the piece layer, bottom (the piece layer itself) first, each level
    /// without its padding; `None` while the layer is unknown. Files of one piece have the
    /// root alone.
    levels: Option<Arc<Vec<Vec<Hash>>>>,
}

impl V2File {
    fn pieces(&self, piece_length: u32) -> u64 {
        self.length.div_ceil(u64::from(piece_length))
    }
}

/// The expected hashes of a torrent's pieces (see the module doc).
#[derive(Clone, Debug)]
pub struct PieceHashes {
    info: Arc<Info>,
    /// v2 files with data, by first piece (empty for torrents verified by SHA-1).
    files: Vec<V2File>,
    /// Position in `files` of each distinct `pieces root`.
    by_root: HashMap<Hash, usize>,
}

impl PieceHashes {
    /// The hashes of `info`'s pieces, with the v2 `layers` known so far (by file index, as
    /// `Metainfo::piece_layers`). Each layer is checked against its file's root.
    pub fn new(
        info: Arc<Info>,
        layers: &BTreeMap<usize, PieceLayer>,
    ) -> Result<PieceHashes, LayerError> {
        let piece_length = u64::from(info.piece_length);
        let mut files = Vec::new();
        let mut by_root = HashMap::new();
        if info.version.has_v2() {
            for (file, entry) in info.files.iter().enumerate() {
                let Some(root) = entry.pieces_root.filter(|_| entry.length > 0) else {
                    continue;
                };
                if entry.attr.pad || !entry.offset.is_multiple_of(piece_length) {
                    continue;
                }
                let Ok(first_piece) = u32::try_from(entry.offset / piece_length) else {
                    continue;
                };
                let single = entry.length <= piece_length;
                by_root.entry(root).or_insert(files.len());
                files.push(V2File {
                    file,
                    first_piece,
                    length: entry.length,
                    root,
                    levels: single.then(|| Arc::new(vec![vec![root]])),
                });
            }
        }
        let mut hashes = PieceHashes {
            info,
            files,
            by_root,
        };
        for (file, layer) in layers {
            hashes.add_layer(*file, layer)?;
        }
        Ok(hashes)
    }

    /// Adds the piece layer of file `file` (an index into `Info::files`) after checking it
    /// against the file's root.
    pub fn add_layer(&mut self, file: usize, layer: &[Hash]) -> Result<(), LayerError> {
        let piece_length = self.info.piece_length;
        let Some(pos) = self.files.iter().position(|f| f.file == file) else {
            return Err(LayerError::NoSuchLayer(file));
        };
        let entry = &self.files[pos];
        let want = entry.pieces(piece_length);
        if want <= 1 {
            return Err(LayerError::NoSuchLayer(file));
        }
        if layer.len() as u64 != want {
            return Err(LayerError::WrongSize {
                file,
                got: layer.len(),
                want,
            });
        }
        let per_piece = merkle::blocks_per_piece(piece_length);
        if merkle::root_from_piece_layer(layer, per_piece) != entry.root {
            return Err(LayerError::WrongRoot(file));
        }
        let levels = Arc::new(tree_levels(layer, pad_level(piece_length)));
        let root = entry.root;
        // Files with the same content share a root and so a layer.
        for f in self.files.iter_mut().filter(|f| f.root == root) {
            f.levels = Some(levels.clone());
        }
        Ok(())
    }

    /// Where file `file`'s v2 data lies: its first (global) piece and its length in bytes;
    /// `None` for a file without v2 data (empty, a pad file, or a v1 torrent).
    pub fn file_pieces(&self, file: usize) -> Option<(u32, u64)> {
        self.files
            .iter()
            .find(|f| f.file == file)
            .map(|f| (f.first_piece, f.length))
    }

    /// Files (indices into `Info::files`) whose piece layer is still unknown, with their root
    /// and piece count; one per distinct root.
    pub fn missing_layers(&self) -> Vec<(usize, Hash, u64)> {
        let mut seen = std::collections::HashSet::new();
        self.files
            .iter()
            .filter(|f| f.levels.is_none() && seen.insert(f.root))
            .map(|f| (f.file, f.root, f.pieces(self.info.piece_length)))
            .collect()
    }

    /// Every piece layer known, by file index (files of more than one piece only).
    pub fn layers(&self) -> BTreeMap<usize, PieceLayer> {
        let piece_length = self.info.piece_length;
        self.files
            .iter()
            .filter(|f| f.pieces(piece_length) > 1)
            .filter_map(|f| Some((f.file, f.levels.as_ref()?.first()?.clone())))
            .collect()
    }

    /// Pieces in the torrent.
    pub fn piece_count(&self) -> u32 {
        self.info.piece_count()
    }

    /// Whether pieces are checked with the v2 merkle trees (a v2-only torrent).
    pub fn is_v2(&self) -> bool {
        !self.info.version.has_v1()
    }

    /// Whether `data` is piece `index` of the torrent: its SHA-1 matches (v1 and hybrid
    /// torrents) and its subtree root matches its file's piece layer (v2 and hybrid; a
    /// hybrid's piece whose layer is unknown is judged by its SHA-1 alone). False for an
    /// unknown index, a piece of the wrong length, or a v2-only piece whose layer is unknown.
    pub fn check(&self, index: u32, data: &[u8]) -> bool {
        if index >= self.info.piece_count() || data.len() != self.info.piece_len(index) as usize {
            return false;
        }
        let has_v1 = self.info.version.has_v1();
        let sha1_matches = || {
            let expected = self.info.pieces.get(index as usize);
            expected.is_some_and(|h| Sha1::digest(data).as_slice() == h)
        };
        if has_v1 && !sha1_matches() {
            return false;
        }
        self.check_v2(index, data).unwrap_or(has_v1)
    }

    /// The v2 verdict on piece `index`, or `None` when no file's known layer covers it.
    fn check_v2(&self, index: u32, data: &[u8]) -> Option<bool> {
        let piece = self.v2_piece(index)?;
        // Only the file's bytes are hashed; what follows it in the last piece is padding.
        let data = data
            .get(..piece.file_bytes.min(data.len() as u64) as usize)
            .unwrap_or(data);
        Some(merkle::piece_root(data, piece.width) == piece.expected)
    }

    /// Where piece `index` lies in its file's tree, if a known layer covers it.
    fn v2_piece(&self, index: u32) -> Option<V2Piece<'_>> {
        let piece_length = self.info.piece_length;
        let at = self.files.partition_point(|f| f.first_piece <= index);
        let file = self.files.get(at.checked_sub(1)?)?;
        let within = u64::from(index - file.first_piece);
        if within >= file.pieces(piece_length) {
            return None;
        }
        let expected = *file.levels.as_ref()?.first()?.get(within as usize)?;
        Some(V2Piece {
            file,
            within,
            expected,
            file_bytes: file.length - within * u64::from(piece_length),
            width: merkle::piece_width(file.length, piece_length),
        })
    }

    /// The `hash request` for the block hashes of piece `index` (BEP 52): base layer 0, the
    /// piece's subtree of leaves, no proof (the subtree's root is the piece's entry in the
    /// layer, which we hold). `None` when no known layer covers the piece, or its subtree is a
    /// single leaf (a bad piece of one block needs no lookup to find its bad block).
    pub fn block_request(&self, index: u32) -> Option<HashRequest> {
        let piece = self.v2_piece(index)?;
        if piece.width < 2 || piece.width > u64::from(MAX_BLOCK_CHECK_LEAVES) {
            return None;
        }
        Some(HashRequest {
            pieces_root: piece.file.root,
            base_layer: 0,
            index: u32::try_from(piece.within.checked_mul(piece.width)?).ok()?,
            length: u32::try_from(piece.width).ok()?,
            proof_layers: 0,
        })
    }

    /// Which 16 KiB blocks of piece `index`'s `data` do not match their hash, judged by
    /// `hashes`, a peer's answer to [`PieceHashes::block_request`]. `None` when the answer does
    /// not prove against the piece's entry in the layer (it is not the truth, whoever sent
    /// it) or `request` is not that request. Blocks wholly past the file's end (padding) have
    /// no hash and are never reported; an empty list means every hashed byte is right.
    pub fn bad_blocks(
        &self,
        index: u32,
        data: &[u8],
        request: &HashRequest,
        hashes: &[u8],
    ) -> Option<Vec<u32>> {
        let piece = self.v2_piece(index)?;
        // Without proof layers the answer is the subtree's leaves alone: checked for size
        // before anything is made of the peer's bytes.
        let right_size = hashes.len() as u64 == piece.width.checked_mul(32)?;
        if self.block_request(index).as_ref() != Some(request) || !right_size {
            return None;
        }
        let leaves = split_hashes(hashes);
        if merkle::merkle_root(&leaves, piece.width, merkle::ZERO) != piece.expected {
            return None;
        }
        let file_bytes = piece.file_bytes.min(data.len() as u64) as usize;
        let data = data.get(..file_bytes)?;
        let bad = data
            .chunks(merkle::BLOCK_LEN as usize)
            .zip(&leaves)
            .enumerate()
            .filter(|(_, (block, leaf))| merkle::block_hash(block) != **leaf)
            .map(|(b, _)| b as u32)
            .collect();
        Some(bad)
    }

    /// Our answer to a peer's `hash request` from the hashes we keep: the hashes, or a `hash
    /// reject` when the request is out of bounds (see [`check_request`]), names a file whose
    /// layer we do not know, or asks for a layer below the piece layer (those are answered
    /// from the data: [`PieceHashes::block_job`]).
    pub fn answer(&self, request: &HashRequest) -> Message {
        self.hashes_for(request)
            .map(|hashes| Message::Hashes {
                request: *request,
                hashes: Bytes::from(hashes.concat()),
            })
            .unwrap_or(Message::HashReject(*request))
    }

    /// The work of answering `request` when it asks for a layer below the piece layer (block
    /// hashes): the pieces whose data the answer is computed from. `None` when the request is
    /// not such a request, is out of bounds, names a file whose layer we do not know, or would
    /// read more than [`MAX_BLOCK_HASH_BYTES`] (or one piece, if larger).
    pub fn block_job(self: &Arc<Self>, request: &HashRequest) -> Option<BlockHashJob> {
        let spot = self.locate(request)?;
        let shift = spot.piece_level.checked_sub(request.base_layer)?;
        if shift == 0 {
            return None;
        }
        let piece_length = self.info.piece_length;
        // The requested nodes (and their uncles below the piece layer) lie in these pieces of
        // the file; pieces past its end are padding, hashed without data.
        let first = u64::from(request.index) >> shift;
        let end = (u64::from(request.index) + u64::from(request.length))
            .div_ceil(1 << shift)
            .min(spot.file.pieces(piece_length));
        let count = end.saturating_sub(first);
        if count > (MAX_BLOCK_HASH_BYTES / u64::from(piece_length)).max(1) {
            return None;
        }
        let start = u32::try_from(u64::from(spot.file.first_piece) + first).ok()?;
        let stop = u32::try_from(u64::from(start) + count).ok()?;
        Some(BlockHashJob {
            hashes: self.clone(),
            request: *request,
            pieces: start..stop,
            leaves: Vec::new(),
            current: Vec::new(),
            failed: false,
        })
    }

    /// Where `request`'s file and its known levels are, if it is in bounds.
    fn locate(&self, request: &HashRequest) -> Option<Spot<'_>> {
        let file = self.files.get(*self.by_root.get(&request.pieces_root)?)?;
        let levels = file.levels.as_ref()?;
        let piece_length = self.info.piece_length;
        let tree = Tree::of(file.length, piece_length);
        check_request(request, &tree)?;
        let piece_level = if file.pieces(piece_length) > 1 {
            pad_level(piece_length)
        } else {
            // The lone root stands at the top of a file of one piece.
            tree.height
        };
        Some(Spot {
            file,
            levels,
            piece_level,
        })
    }

    fn hashes_for(&self, request: &HashRequest) -> Option<Vec<Hash>> {
        let spot = self.locate(request)?;
        // Only the levels from the piece layer up are known.
        request.base_layer.checked_sub(spot.piece_level)?;
        collect_answer(request, spot.piece_level, spot.levels, |_, _| None)
    }
}

/// A piece of a file with a known layer.
struct V2Piece<'a> {
    file: &'a V2File,
    /// Its index among the file's pieces.
    within: u64,
    /// Its entry in the piece layer.
    expected: Hash,
    /// The file's bytes from the piece's start (more than the piece but for the last one).
    file_bytes: u64,
    /// Leaves under it (see [`merkle::piece_width`]).
    width: u64,
}

/// A request's file in [`PieceHashes`], with the level its known hashes start at.
struct Spot<'a> {
    file: &'a V2File,
    levels: &'a Arc<Vec<Vec<Hash>>>,
    /// The level of the piece layer (of the root, for a file of one piece).
    piece_level: u32,
}

/// The hashes answering `request`: the base nodes, then the uncles above their subtree. Nodes
/// at or above `piece_level` come from `levels` (bottom first, unpadded), those below from
/// `below(level, index)`. `None` if a node is unknown.
fn collect_answer(
    request: &HashRequest,
    piece_level: u32,
    levels: &[Vec<Hash>],
    below: impl Fn(u32, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    let node = |level: u32, j: u64| -> Option<Hash> {
        let Some(h) = level.checked_sub(piece_level) else {
            return below(level, j);
        };
        let known = levels
            .get(h as usize)
            .and_then(|l| l.get(usize::try_from(j).ok()?));
        Some(known.copied().unwrap_or_else(|| merkle::pad_hash(level)))
    };
    let (base, index) = (request.base_layer, u64::from(request.index));
    let k = request.length.trailing_zeros();
    let uncles = request.proof_layers.saturating_add(1).saturating_sub(k);
    let mut out = Vec::with_capacity((request.length as usize).saturating_add(uncles as usize));
    for i in 0..u64::from(request.length) {
        out.push(node(base, index + i)?);
    }
    for h in k..=request.proof_layers {
        out.push(node(base + h, (index >> h) ^ 1)?);
    }
    Some(out)
}

/// Most bytes of piece data read and hashed to answer one request for block hashes (at least
/// one piece is always allowed): 16 MiB, what libtorrent asks for with one piece's blocks at a
/// large piece size. Together with the cap on answers queued per peer it bounds what one peer
/// can make us read.
pub const MAX_BLOCK_HASH_BYTES: u64 = 16 * 1024 * 1024;

/// A request for hashes below the piece layer, answered from the data of the pieces it covers
/// (which we must have): the driver reads, for each of [`BlockHashJob::pieces`] in order, the
/// first [`BlockHashJob::data_len`] bytes, feeds them 16 KiB block by block to
/// [`BlockHashJob::add_block`] (so no more than a block need be in memory), and sends what
/// [`BlockHashJob::finish`] returns. Each piece is checked against the piece layer once its
/// blocks are in, so data that went bad on disk is never vouched for: the request is rejected
/// instead.
#[derive(Clone, Debug)]
pub struct BlockHashJob {
    hashes: Arc<PieceHashes>,
    request: HashRequest,
    pieces: std::ops::Range<u32>,
    /// The leaf hashes of the pieces done, each piece padded to its subtree's width.
    leaves: Vec<Hash>,
    /// The leaf hashes of the piece being read.
    current: Vec<Hash>,
    failed: bool,
}

impl BlockHashJob {
    /// The torrent's pieces to read, in order (empty when only padding is asked for).
    pub fn pieces(&self) -> std::ops::Range<u32> {
        self.pieces.clone()
    }

    /// The bytes of piece `index` that hold the file's data, from the piece's start: what to
    /// read of it (the pad bytes that may follow are not hashed). 0 for a piece of another
    /// file.
    pub fn data_len(&self, index: u32) -> u32 {
        let Some(spot) = self.hashes.locate(&self.request) else {
            return 0;
        };
        let Some(within) = index.checked_sub(spot.file.first_piece) else {
            return 0;
        };
        let piece_length = self.hashes.info.piece_length;
        let start = u64::from(within) * u64::from(piece_length);
        let left = spot.file.length.saturating_sub(start);
        left.min(u64::from(self.hashes.info.piece_len(index))) as u32
    }

    /// The request being answered.
    pub fn request(&self) -> &HashRequest {
        &self.request
    }

    /// The next 16 KiB block of the pieces' data, in order (shorter only at the end of a
    /// piece's data).
    pub fn add_block(&mut self, block: &[u8]) {
        if !self.take_block(block) {
            self.failed = true;
        }
    }

    fn take_block(&mut self, block: &[u8]) -> bool {
        let Some(spot) = self.hashes.locate(&self.request) else {
            return false;
        };
        let per = 1usize << spot.piece_level;
        let done = self.leaves.len() / per;
        let count = self.pieces.end.saturating_sub(self.pieces.start) as usize;
        if self.failed || done >= count {
            return false;
        }
        let index = self.pieces.start + done as u32;
        let data_len = self.data_len(index) as usize;
        let block_len = merkle::BLOCK_LEN as usize;
        let offset = self.current.len() * block_len;
        if data_len <= offset || block.len() != (data_len - offset).min(block_len) {
            return false;
        }
        self.current.push(merkle::block_hash(block));
        if self.current.len() < data_len.div_ceil(block_len) {
            return true;
        }
        // The piece is in: its subtree must hash to its entry in the layer.
        let mut leaves = std::mem::take(&mut self.current);
        if leaves.len() > per {
            return false;
        }
        leaves.resize(per, merkle::ZERO);
        let within = (index - spot.file.first_piece) as usize;
        let expected = spot.levels.first().and_then(|l| l.get(within));
        if expected != Some(&merkle::merkle_root(&leaves, per as u64, merkle::ZERO)) {
            return false;
        }
        self.leaves.extend_from_slice(&leaves);
        true
    }

    /// The answer: the hashes, or a `hash reject` if a piece was missing or did not match
    /// its hash.
    pub fn finish(self) -> Message {
        self.answer()
            .map(|hashes| Message::Hashes {
                request: self.request,
                hashes: Bytes::from(hashes.concat()),
            })
            .unwrap_or(Message::HashReject(self.request))
    }

    fn answer(&self) -> Option<Vec<Hash>> {
        let spot = self.hashes.locate(&self.request)?;
        let per = 1u64 << spot.piece_level;
        let count = u64::from(self.pieces.end.saturating_sub(self.pieces.start));
        if self.failed || !self.current.is_empty() || self.leaves.len() as u64 != count * per {
            return None;
        }
        // The levels of the pieces' subtrees below the piece layer, leaves first.
        let mut below = vec![self.leaves.clone()];
        for _ in 1..spot.piece_level {
            let next = below
                .last()?
                .chunks_exact(2)
                .map(|p| merkle::node_hash(&p[0], &p[1]))
                .collect();
            below.push(next);
        }
        let first_leaf =
            u64::from(self.pieces.start.saturating_sub(spot.file.first_piece)).saturating_mul(per);
        let file_leaves = spot
            .file
            .pieces(self.hashes.info.piece_length)
            .saturating_mul(per);
        collect_answer(&self.request, spot.piece_level, spot.levels, |level, j| {
            if j >= file_leaves >> level {
                return Some(merkle::pad_hash(level));
            }
            let local = j.checked_sub(first_leaf >> level)?;
            below
                .get(level as usize)?
                .get(usize::try_from(local).ok()?)
                .copied()
        })
    }
}

/// log2 of the leaves under one piece: the level of a file's piece layer.
fn pad_level(piece_length: u32) -> u32 {
    merkle::blocks_per_piece(piece_length).trailing_zeros()
}

/// Every level of the tree above `layer` (itself first), unpadded; the pad of level `h` is
/// the root of an all-zero subtree `base + h` levels high.
fn tree_levels(layer: &[Hash], base: u32) -> Vec<Vec<Hash>> {
    let mut levels = vec![layer.to_vec()];
    let mut h = 0;
    while levels.last().is_some_and(|l| l.len() > 1) {
        let pad = merkle::pad_hash(base + h);
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let next = below
            .chunks(2)
            .map(|p| merkle::node_hash(p.first().unwrap_or(&pad), p.get(1).unwrap_or(&pad)))
            .collect();
        levels.push(next);
        h += 1;
    }
    levels
}

/// The shape of one file's merkle tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    /// Levels above the leaves up to the root (log2 of the padded leaf count).
    pub height: u32,
}

impl Tree {
    /// The tree of a file of `length` bytes (its 16 KiB blocks padded to a power of two; a
    /// file of more than one piece to whole pieces).
    pub fn of(length: u64, piece_length: u32) -> Tree {
        let blocks = length.div_ceil(u64::from(merkle::BLOCK_LEN)).max(1);
        let per_piece = u64::from(merkle::blocks_per_piece(piece_length));
        let leaves = if length > u64::from(piece_length) {
            blocks.div_ceil(per_piece).saturating_mul(per_piece)
        } else {
            blocks
        };
        let leaves = leaves.checked_next_power_of_two().unwrap_or(1 << 63);
        Tree {
            height: leaves.trailing_zeros(),
        }
    }
}

/// Whether `request` is one we answer for a file of tree `tree`: `base_layer` inside the tree,
/// `length` a power of two from 2 to [`MAX_HASHES`] that `index` is a multiple of,
/// `[index, index + length)` inside that level, and proofs that stop below the root.
/// Returns the width of the base level.
pub fn check_request(request: &HashRequest, tree: &Tree) -> Option<u64> {
    let base = request.base_layer;
    if base >= tree.height {
        return None;
    }
    let width = 1u64 << (tree.height - base);
    let (index, length) = (u64::from(request.index), u64::from(request.length));
    let ok = (2..=u64::from(MAX_HASHES)).contains(&length)
        && length.is_power_of_two()
        && index.is_multiple_of(length)
        && index + length <= width
        && request.proof_layers < tree.height - base;
    ok.then_some(width)
}

/// The root reached from the hashes of an answer to `request` (the requested hashes, then the
/// uncles above their subtree), or `None` when their count does not fit the request.
pub fn root_of_answer(request: &HashRequest, hashes: &[Hash]) -> Option<Hash> {
    let length = request.length as usize;
    let k = request.length.trailing_zeros();
    let uncles = request.proof_layers.saturating_add(1).saturating_sub(k) as usize;
    if hashes.len() != length.checked_add(uncles)? || length == 0 {
        return None;
    }
    let (base, proof) = hashes.split_at(length);
    let subtree = merkle::merkle_root(base, request.length.into(), merkle::ZERO);
    merkle::root_from_proof(&subtree, u64::from(request.index) >> k, proof)
}

/// Splits 32-byte hashes out of a `hashes` message body (whose length the codec made a
/// multiple of 32).
pub fn split_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0; 32];
            h.copy_from_slice(c);
            h
        })
        .collect()
}
