//! Building new torrents: the pure half of `bitrush create` (the file walk and the reading live
//! in the `bitrush` crate).
//!
//! A [`Plan`] lays the files out: sorted by path (byte order, component by component, which is
//! also the order of a v2 `file tree`), with BEP 47 pad files after every file that does not
//! end on a piece boundary when the torrent has v2 metadata (none after the last file with
//! data, and none in a single-file torrent), so every v2 piece lies inside one file. It tells
//! which bytes make each piece ([`Plan::piece_parts`]); a [`PieceHasher`] hashes one piece for
//! both versions at once (SHA-1 of the piece, and the root of its v2 merkle subtree); and
//! [`Plan::finish`] turns the hashes into the bencoded torrent, which it parses back so that
//! what it returns is exactly what any reader of the file will see.
//!
//! Piece length `auto` follows libtorrent's table: 16 KiB for up to about 2.6 MB of data,
//! doubling each time the data grows fourfold, up to 8 MiB from about 700 GB.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::{FileEntry, Magnet, MetaVersion, Metainfo, MetainfoError, MAX_PIECE_LENGTH};
use crate::bencode::{encode, Value};
use crate::merkle::{self, Hash, BLOCK_LEN};

/// Data sizes up to which each `auto` piece length is chosen (libtorrent's table: the piece
/// count grows with the square root of the size): 16 KiB, 32 KiB, ... 8 MiB above the last.
const AUTO_PIECE_TABLE: [u64; 10] = [
    2_684_355,
    10_737_418,
    42_949_673,
    171_798_692,
    687_194_767,
    2_748_779_069,
    10_995_116_278,
    43_980_465_111,
    175_921_860_444,
    703_687_441_777,
];

/// Bytes fed to both hashes at a time, so the data is still in cache for the second.
const HASH_STRIDE: usize = BLOCK_LEN as usize;

/// Why a torrent cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The input cannot make a valid torrent (no data, bad piece length, clashing paths).
    #[error("{0}")]
    Invalid(String),
    /// The torrent built does not parse back: a bug, reported rather than written out.
    #[error("the torrent built is invalid")]
    Unreadable(#[source] MetainfoError),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, BuildError> {
    Err(BuildError::Invalid(msg.into()))
}

/// The piece length `auto` picks for `content_length` bytes of data.
pub fn auto_piece_length(content_length: u64) -> u32 {
    let steps = AUTO_PIECE_TABLE
        .iter()
        .take_while(|&&limit| limit < content_length)
        .count();
    BLOCK_LEN << steps
}

/// Whether `piece_length` is allowed: a power of two of at least 16 KiB with v2 metadata; for
/// v1 only also any multiple of 16 KiB (as libtorrent allows). At most 256 MiB.
pub fn check_piece_length(piece_length: u32, version: MetaVersion) -> Result<(), BuildError> {
    let ok = piece_length > 0
        && piece_length <= MAX_PIECE_LENGTH
        && if version.has_v2() {
            piece_length.is_power_of_two() && piece_length >= BLOCK_LEN
        } else {
            piece_length.is_power_of_two() || piece_length.is_multiple_of(BLOCK_LEN)
        };
    if ok {
        Ok(())
    } else if version.has_v2() {
        invalid(format!(
            "piece length {piece_length} is not a power of two from 16 KiB to 256 MiB (needed for v2)"
        ))
    } else {
        invalid(format!(
            "piece length {piece_length} is neither a power of two nor a multiple of 16 KiB up to 256 MiB"
        ))
    }
}

/// A file to put in a torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// Path components below the torrent's folder (for a single file: just its name).
    pub path: Vec<String>,
    pub length: u64,
    /// Marked `x` (BEP 47) so downloaders make it executable.
    pub executable: bool,
}

/// Everything outside the files: trackers, web seeds, flags and the descriptive fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TorrentOptions {
    /// Tracker URLs, each its own tier (`announce` is the first).
    pub trackers: Vec<String>,
    /// BEP 19 web seeds (`url-list`).
    pub web_seeds: Vec<String>,
    /// BEP 27 `private`.
    pub private: bool,
    pub comment: Option<String>,
    /// `info.source` (changes the info hash; private trackers use it).
    pub source: Option<String>,
    /// `creation date`, seconds since the Unix epoch.
    pub creation_date: Option<i64>,
    pub created_by: Option<String>,
}

/// One run of a piece's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiecePart {
    /// `len` bytes at `offset` of plan file `file` (an index into [`Plan::files`]).
    File { file: usize, offset: u64, len: u64 },
    /// Pad-file bytes: zeros, hashed by v1 only.
    Zeros(u64),
}

/// The files of a torrent to be made, laid out in payload order.
#[derive(Clone, Debug)]
pub struct Plan {
    name: String,
    piece_length: u32,
    version: MetaVersion,
    single_file: bool,
    /// Payload order, pad files included.
    files: Vec<FileEntry>,
    total_length: u64,
}

/// The hashes of one piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PieceHashes {
    pub v1: Option<[u8; 20]>,
    pub v2: Option<Hash>,
}

/// A torrent just built.
#[derive(Clone, Debug)]
pub struct Built {
    /// The `.torrent` file's bytes.
    pub bytes: Vec<u8>,
    /// Those bytes parsed back.
    pub metainfo: Metainfo,
    /// The magnet link (both `btih` and `btmh` for a hybrid).
    pub magnet: String,
}

impl Plan {
    /// Lays out `files` (any order; sorted here) for a torrent called `name`. `single_file`:
    /// the torrent is one file named `name` rather than a folder. `piece_length` `None` means
    /// `auto`.
    pub fn new(
        name: &str,
        mut files: Vec<SourceFile>,
        single_file: bool,
        piece_length: Option<u32>,
        version: MetaVersion,
    ) -> Result<Plan, BuildError> {
        if name.is_empty() {
            return invalid("the torrent needs a name");
        }
        if single_file && (files.len() != 1 || files[0].path != [name]) {
            return invalid("a single-file torrent holds exactly one file, named after it");
        }
        if let Some(f) = files
            .iter()
            .find(|f| f.path.is_empty() || f.path.iter().any(String::is_empty))
        {
            return invalid(format!("file path {:?} has an empty component", f.path));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in files.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.path.starts_with(&a.path) {
                return invalid(format!(
                    "{} is both a file and the path of another",
                    a.path.join("/")
                ));
            }
        }
        let content: u64 = files.iter().map(|f| f.length).sum();
        if content == 0 {
            return invalid("there is no data: every file is empty");
        }
        if content > super::MAX_TOTAL_LENGTH {
            return invalid("more than 2^50 bytes of data");
        }
        let piece_length = piece_length.unwrap_or_else(|| auto_piece_length(content));
        check_piece_length(piece_length, version)?;

        let pads = version.has_v2() && !single_file;
        let last_with_data = files.iter().rposition(|f| f.length > 0);
        let mut entries = Vec::with_capacity(files.len() * if pads { 2 } else { 1 });
        let mut offset = 0u64;
        for (i, f) in files.into_iter().enumerate() {
            let mut entry = FileEntry::new(f.path, f.length, offset);
            entry.attr.executable = f.executable;
            offset += f.length;
            entries.push(entry);
            let rem = offset % u64::from(piece_length);
            if pads && f.length > 0 && rem != 0 && Some(i) < last_with_data {
                let len = u64::from(piece_length) - rem;
                let mut pad = FileEntry::new(vec![".pad".into(), len.to_string()], len, offset);
                pad.attr.pad = true;
                entries.push(pad);
                offset += len;
            }
        }
        if offset.div_ceil(u64::from(piece_length)) > u64::from(u32::MAX) {
            return invalid("too many pieces: choose a larger piece length");
        }
        Ok(Plan {
            name: name.to_string(),
            piece_length,
            version,
            single_file,
            files: entries,
            total_length: offset,
        })
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// The files in payload order, pad files included.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    pub fn piece_count(&self) -> u32 {
        // Checked in `new` to fit.
        self.total_length.div_ceil(u64::from(self.piece_length)) as u32
    }

    /// The bytes that make piece `index`, in order (empty past the end).
    pub fn piece_parts(&self, index: u32) -> Vec<PiecePart> {
        let start = u64::from(index) * u64::from(self.piece_length);
        let end = (start + u64::from(self.piece_length)).min(self.total_length);
        let mut parts = Vec::new();
        let first = self.files.partition_point(|f| f.offset + f.length <= start);
        let mut pos = start;
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if pos >= end {
                break;
            }
            if f.length == 0 {
                continue;
            }
            let len = (f.offset + f.length).min(end) - pos;
            parts.push(if f.attr.pad {
                PiecePart::Zeros(len)
            } else {
                PiecePart::File {
                    file: i,
                    offset: pos - f.offset,
                    len,
                }
            });
            pos += len;
        }
        parts
    }

    /// A hasher for piece `index`.
    pub fn piece_hasher(&self, index: u32) -> PieceHasher {
        let v2_width = self.version.has_v2().then(|| {
            let start = u64::from(index) * u64::from(self.piece_length);
            let file = self
                .files
                .iter()
                .find(|f| !f.attr.pad && f.offset <= start && start < f.offset + f.length);
            file.map_or(1, |f| merkle::piece_width(f.length, self.piece_length))
        });
        PieceHasher::new(self.version.has_v1(), v2_width)
    }

    /// The torrent, from the hashes of every piece in order.
    pub fn finish(
        &self,
        hashes: &[PieceHashes],
        opts: &TorrentOptions,
    ) -> Result<Built, BuildError> {
        if hashes.len() != self.piece_count() as usize {
            return invalid(format!(
                "{} piece hashes for {} pieces",
                hashes.len(),
                self.piece_count()
            ));
        }
        let b = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        let mut info: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        info.insert(b"name".to_vec(), b(&self.name));
        info.insert(
            b"piece length".to_vec(),
            Value::Int(i64::from(self.piece_length)),
        );
        if opts.private {
            info.insert(b"private".to_vec(), Value::Int(1));
        }
        if let Some(source) = &opts.source {
            info.insert(b"source".to_vec(), b(source));
        }
        if self.version.has_v1() {
            let mut pieces = Vec::with_capacity(hashes.len() * 20);
            for h in hashes {
                let Some(v1) = h.v1 else {
                    return invalid("a piece has no v1 hash");
                };
                pieces.extend_from_slice(&v1);
            }
            info.insert(b"pieces".to_vec(), Value::Bytes(pieces));
            self.v1_files(&mut info);
        }
        let mut layers = BTreeMap::new();
        if self.version.has_v2() {
            let tree = self.file_tree(hashes, &mut layers)?;
            info.insert(b"file tree".to_vec(), tree);
            info.insert(b"meta version".to_vec(), Value::Int(2));
        }

        let mut top: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        if let Some(first) = opts.trackers.first() {
            top.insert(b"announce".to_vec(), b(first));
        }
        if opts.trackers.len() > 1 {
            let tiers = opts
                .trackers
                .iter()
                .map(|t| Value::List(vec![b(t)]))
                .collect();
            top.insert(b"announce-list".to_vec(), Value::List(tiers));
        }
        if let Some(comment) = &opts.comment {
            top.insert(b"comment".to_vec(), b(comment));
        }
        if let Some(by) = &opts.created_by {
            top.insert(b"created by".to_vec(), b(by));
        }
        if let Some(date) = opts.creation_date {
            top.insert(b"creation date".to_vec(), Value::Int(date));
        }
        match opts.web_seeds.as_slice() {
            [] => {}
            [one] => {
                top.insert(b"url-list".to_vec(), b(one));
            }
            many => {
                let list = many.iter().map(|u| b(u)).collect();
                top.insert(b"url-list".to_vec(), Value::List(list));
            }
        }
        if self.version.has_v2() {
            top.insert(b"piece layers".to_vec(), Value::Dict(layers));
        }
        top.insert(b"info".to_vec(), Value::Dict(info));
        let bytes = encode(&Value::Dict(top));
        let metainfo = Metainfo::from_bytes(&bytes).map_err(BuildError::Unreadable)?;
        let magnet = Magnet {
            info_hash: metainfo.info_hash,
            info_hash_v2: metainfo.info_hash_v2,
            has_v1: metainfo.info.version.has_v1(),
            trackers: opts.trackers.clone(),
            name: Some(self.name.clone()),
            peers: Vec::new(),
            web_seeds: Vec::new(),
        }
        .to_link();
        Ok(Built {
            bytes,
            metainfo,
            magnet,
        })
    }

    /// `length` (single file) or `files` (pad files included), with BEP 47 attributes.
    fn v1_files(&self, info: &mut BTreeMap<Vec<u8>, Value>) {
        let b = |s: &str| Value::Bytes(s.as_bytes().to_vec());
        if self.single_file {
            if let Some(f) = self.files.first() {
                info.insert(b"length".to_vec(), Value::Int(f.length as i64));
                if f.attr.executable {
                    info.insert(b"attr".to_vec(), b("x"));
                }
            }
            return;
        }
        let list = self
            .files
            .iter()
            .map(|f| {
                let mut d = BTreeMap::new();
                d.insert(b"length".to_vec(), Value::Int(f.length as i64));
                d.insert(
                    b"path".to_vec(),
                    Value::List(f.path.iter().map(|c| b(c)).collect()),
                );
                if let Some(attr) = attr_letters(f) {
                    d.insert(b"attr".to_vec(), b(attr));
                }
                Value::Dict(d)
            })
            .collect();
        info.insert(b"files".to_vec(), Value::List(list));
    }

    /// The v2 `file tree`, filling `layers` with the piece layers of files of several pieces.
    fn file_tree(
        &self,
        hashes: &[PieceHashes],
        layers: &mut BTreeMap<Vec<u8>, Value>,
    ) -> Result<Value, BuildError> {
        let piece_length = u64::from(self.piece_length);
        let per_piece = merkle::blocks_per_piece(self.piece_length);
        let mut tree = Value::Dict(BTreeMap::new());
        for f in self.files.iter().filter(|f| !f.attr.pad) {
            let mut leaf = BTreeMap::new();
            leaf.insert(b"length".to_vec(), Value::Int(f.length as i64));
            if let Some(attr) = attr_letters(f) {
                leaf.insert(b"attr".to_vec(), Value::Bytes(attr.as_bytes().to_vec()));
            }
            if f.length > 0 {
                let first = (f.offset / piece_length) as usize;
                let count = f.length.div_ceil(piece_length) as usize;
                let layer: Vec<Hash> = hashes
                    .get(first..first + count)
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|h| h.v2)
                    .collect();
                if layer.len() != count {
                    return invalid(format!("{} lacks v2 piece hashes", f.path.join("/")));
                }
                let root = if count == 1 {
                    layer[0]
                } else {
                    let root = merkle::root_from_piece_layer(&layer, per_piece);
                    layers.insert(root.to_vec(), Value::Bytes(layer.concat()));
                    root
                };
                leaf.insert(b"pieces root".to_vec(), Value::Bytes(root.to_vec()));
            }
            let mut node = &mut tree;
            for component in &f.path {
                let Value::Dict(dir) = node else {
                    return invalid(format!("{} clashes with a file", f.path.join("/")));
                };
                node = dir
                    .entry(component.as_bytes().to_vec())
                    .or_insert_with(|| Value::Dict(BTreeMap::new()));
            }
            let Value::Dict(slot) = node else {
                return invalid(format!("{} clashes with a file", f.path.join("/")));
            };
            slot.insert(Vec::new(), Value::Dict(leaf));
        }
        Ok(tree)
    }
}

/// The BEP 47 `attr` value for a file, if it has any attribute.
fn attr_letters(f: &FileEntry) -> Option<&'static str> {
    match (f.attr.pad, f.attr.executable) {
        (true, _) => Some("p"),
        (false, true) => Some("x"),
        (false, false) => None,
    }
}

/// Hashes one piece for v1 (SHA-1 over the piece, pad zeros included) and v2 (SHA-256 of each
/// 16 KiB block of file data, then the subtree root) in one pass over the data.
#[derive(Clone)]
pub struct PieceHasher {
    sha1: Option<Sha1>,
    v2: Option<BlockHasher>,
}

/// The v2 half of a [`PieceHasher`].
#[derive(Clone)]
struct BlockHasher {
    width: u64,
    leaves: Vec<Hash>,
    current: Sha256,
    current_len: usize,
}

impl PieceHasher {
    /// `v1`: compute the SHA-1; `v2_width`: compute the v2 hash over a subtree of that many
    /// leaves (see [`merkle::piece_width`]).
    pub fn new(v1: bool, v2_width: Option<u64>) -> PieceHasher {
        PieceHasher {
            sha1: v1.then(Sha1::new),
            v2: v2_width.map(|width| BlockHasher {
                width,
                leaves: Vec::new(),
                current: Sha256::new(),
                current_len: 0,
            }),
        }
    }

    /// Feeds file data.
    pub fn update(&mut self, data: &[u8]) {
        for stride in data.chunks(HASH_STRIDE) {
            if let Some(sha1) = &mut self.sha1 {
                sha1.update(stride);
            }
            if let Some(v2) = &mut self.v2 {
                v2.update(stride);
            }
        }
    }

    /// Feeds `len` bytes of pad-file zeros (part of the v1 piece only).
    pub fn zeros(&mut self, len: u64) {
        const ZEROS: [u8; 4096] = [0; 4096];
        if let Some(sha1) = &mut self.sha1 {
            let mut left = len;
            while left > 0 {
                let n = left.min(ZEROS.len() as u64) as usize;
                sha1.update(&ZEROS[..n]);
                left -= n as u64;
            }
        }
    }

    pub fn finish(self) -> PieceHashes {
        PieceHashes {
            v1: self.sha1.map(|h| h.finalize().into()),
            v2: self.v2.map(BlockHasher::finish),
        }
    }
}

impl BlockHasher {
    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (BLOCK_LEN as usize - self.current_len).min(data.len());
            let (now, rest) = data.split_at(take);
            if self.current_len == 0 && take == BLOCK_LEN as usize {
                self.leaves.push(Sha256::digest(now).into());
            } else {
                self.current.update(now);
                self.current_len += take;
                if self.current_len == BLOCK_LEN as usize {
                    self.leaves.push(self.current.finalize_reset().into());
                    self.current_len = 0;
                }
            }
            data = rest;
        }
    }

    fn finish(mut self) -> Hash {
        if self.current_len > 0 {
            self.leaves.push(self.current.finalize_reset().into());
        }
        merkle::merkle_root(&self.leaves, self.width, merkle::ZERO)
    }
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
