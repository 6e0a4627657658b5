//! Parsing `.torrent` files and bare info dictionaries: BitTorrent v1 (BEP 3), v2 (BEP 52) and
//! hybrids of both, with the file attributes of BEP 47.
//!
//! Invariants of a parsed [`Info`]:
//! - `1 <= piece_length <= 2^28`, and a power of two of at least 16 KiB when the torrent has
//!   v2 metadata; `0 < total_length <= 2^50`; [`Info::piece_count`] is
//!   `ceil(total_length / piece_length)` and fits in a `u32`; `pieces` holds exactly that many
//!   SHA-1 hashes when the torrent has v1 metadata and none for a v2-only torrent;
//! - `files` is non-empty and in payload order (the v1 `files` list, or the v2 `file tree`'s
//!   order), BEP 47 pad files included, with cumulative offsets summing to `total_length`;
//!   symlinks have length 0;
//! - every path component is a sanitised name (see [`super::names`]), and no two files that
//!   are not pad files have paths equal ignoring ASCII case, nor is one's path a directory of
//!   another's; the name and paths as the torrent writes them (what a web seed serves them
//!   under) are kept beside, in `Info::original_name` and `FileEntry::original_path`, only
//!   where they differ from the sanitised ones (so a torrent with plain names carries no copy);
//! - with v2 metadata every non-empty regular file has its `pieces root` and starts on a piece
//!   boundary (a v2-only torrent gets a pad entry after each file that does not end on one,
//!   the last included, as libtorrent lays it out, so piece indices and lengths mean the same
//!   thing to both); a hybrid's v1 and v2 halves describe the same files, lengths and offsets.
//!
//! The info hashes are taken over the info dictionary's raw bytes as they appear in the file,
//! never over a re-encoding: SHA-1 for v1, SHA-256 for v2.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::names::{
    decode_name, original_if_changed, resolve_collisions, sanitize_component, sanitize_path,
};
use super::quoted;
use crate::bencode::{self, Value};
use crate::merkle;
use crate::types::{to_hex, InfoHash, InfoHashV2};

/// Largest accepted `piece length` (256 MiB).
pub const MAX_PIECE_LENGTH: u32 = 1 << 28;
/// Largest accepted total payload (1 PiB).
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;
/// Most files a torrent may list (entries of a v1 `files` list, pad files included, or files
/// of a v2 `file tree`).
pub const MAX_FILES: usize = 1 << 21;
/// Deepest directory nesting accepted in a v2 `file tree` (libtorrent's limit too).
pub const MAX_TREE_DEPTH: usize = 100;
/// Smallest piece length of a v2 torrent (one merkle block).
const MIN_V2_PIECE_LENGTH: u32 = merkle::BLOCK_LEN;

/// BEP 47 file attributes (`attr`); a symlink is told by [`FileEntry::symlink`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileAttr {
    /// `p`: padding that aligns the next file to a piece; its bytes are zeros and it is never
    /// written to disk.
    pub pad: bool,
    /// `x`: the file is made executable once complete.
    pub executable: bool,
    /// `h`: hidden (a Windows notion; accepted and kept).
    pub hidden: bool,
}

/// Where a BEP 47 symlink points, relative to the torrent's root folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SymlinkTarget {
    /// Sanitised components of a target inside the torrent's folder (`..` resolved).
    Inside(Vec<String>),
    /// A target that leaves the torrent's folder (absolute, or too many `..`): never created.
    /// The text is the target as the torrent gives it, for the warning.
    Outside(String),
}

/// A file inside the torrent, in payload order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Sanitised path components relative to the torrent's root (for a single-file torrent:
    /// just its name).
    pub path: Vec<String>,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's concatenated payload.
    pub offset: u64,
    pub attr: FileAttr,
    /// `Some` for a BEP 47 symlink (attr `l` with a `symlink path`; its length is 0).
    pub symlink: Option<SymlinkTarget>,
    /// The root of the file's v2 merkle tree (`pieces root`), for non-empty regular files of
    /// torrents with v2 metadata.
    pub pieces_root: Option<[u8; 32]>,
    /// The path's components as the torrent writes them (raw bytes, before sanitising and
    /// collision renaming), only when they differ from `path`; see
    /// [`FileEntry::path_as_written`].
    pub original_path: Option<Box<[Box<[u8]>]>>,
}

impl FileEntry {
    /// A regular file without attributes.
    pub fn new(path: Vec<String>, length: u64, offset: u64) -> FileEntry {
        FileEntry {
            path,
            length,
            offset,
            attr: FileAttr::default(),
            symlink: None,
            pieces_root: None,
            original_path: None,
        }
    }

    /// The path's components as the torrent writes them: the names a web seed holds the file
    /// under (BEP 19). Never for the disk: use `path`.
    pub fn path_as_written(&self) -> Vec<&[u8]> {
        match self.original_path.as_deref() {
            Some(parts) => parts.iter().map(|p| &p[..]).collect(),
            None => self.path.iter().map(|p| p.as_bytes()).collect(),
        }
    }
}

/// Which metadata versions an info dictionary carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    /// BitTorrent v1 only: SHA-1 piece hashes.
    V1,
    /// BitTorrent v2 only (`meta version` 2, a `file tree`, no `pieces`).
    V2,
    /// Both, describing the same files.
    Hybrid,
}

impl MetaVersion {
    /// Whether there are v1 piece hashes.
    pub fn has_v1(self) -> bool {
        matches!(self, MetaVersion::V1 | MetaVersion::Hybrid)
    }

    /// Whether there is a v2 file tree.
    pub fn has_v2(self) -> bool {
        matches!(self, MetaVersion::V2 | MetaVersion::Hybrid)
    }
}

/// The info dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The sanitised name: the file (single-file torrent) or folder created on disk.
    pub name: String,
    /// The name as the torrent writes it (raw bytes of `name.utf-8` or `name`), only when it
    /// differs from `name`; see [`Info::name_as_written`].
    pub original_name: Option<Box<[u8]>>,
    pub piece_length: u32,
    /// The v1 SHA-1 piece hashes (empty for a v2-only torrent).
    pub pieces: Vec<[u8; 20]>,
    /// Every file in payload order, pad files included.
    pub files: Vec<FileEntry>,
    /// True when the torrent is a folder (a v1 `files` list, or a v2 tree that is not a
    /// single file at its root).
    pub multi_file: bool,
    /// Length of the whole payload, pad files included (what pieces are cut from).
    pub total_length: u64,
    /// BEP 27 `private=1`: peers come from the trackers only (no DHT, no peer exchange).
    pub private: bool,
    pub version: MetaVersion,
}

/// A file's v2 piece layer: the SHA-256 of each of its pieces.
pub type PieceLayer = Vec<[u8; 32]>;

/// A parsed `.torrent` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    pub announce: Option<String>,
    /// BEP 12 tiers, as in the file (may be empty); URLs trimmed of surrounding whitespace.
    pub announce_list: Vec<Vec<String>>,
    pub info: Info,
    /// The 20-byte hash that names the torrent on the wire and to trackers: the v1 info hash,
    /// or for a v2-only torrent the v2 info hash truncated to 20 bytes.
    pub info_hash: InfoHash,
    /// The v2 info hash (SHA-256 of the info dictionary), when the torrent has v2 metadata.
    pub info_hash_v2: Option<InfoHashV2>,
    /// The info dictionary's raw bytes exactly as in the file.
    pub info_bytes: Vec<u8>,
    /// BEP 19 web seeds (`url-list`, a string or a list): the `http://` and `https://` URLs,
    /// trimmed, at most [`MAX_WEB_SEEDS`]; anything else there is ignored, as libtorrent does.
    pub web_seeds: Vec<String>,
    /// The v2 piece layers (`piece layers`), by file index, for the files of more than one
    /// piece whose layer the torrent carries (it may leave them to be fetched from peers).
    /// Each was checked against the file's `pieces root`.
    pub piece_layers: BTreeMap<usize, PieceLayer>,
}

/// Why a torrent is invalid; the message names the key, e.g.
/// `info.pieces length 41 is not a multiple of 20`.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not valid bencode.
    #[error("invalid bencode")]
    Bencode(#[from] crate::bencode::BencodeError),
    /// The bencode is valid but the torrent's contents are not.
    #[error("{0}")]
    Invalid(String),
}

type Dict = BTreeMap<Vec<u8>, Value>;

fn invalid<T>(msg: impl Into<String>) -> Result<T, MetainfoError> {
    Err(MetainfoError::Invalid(msg.into()))
}

/// A tracker URL as written, trimmed; `None` if nothing is left.
fn tracker_url(bytes: &[u8]) -> Option<String> {
    let url = decode_name(bytes);
    let url = url.trim();
    (!url.is_empty()).then(|| url.to_string())
}

/// Most web seeds taken from a torrent's `url-list`.
pub const MAX_WEB_SEEDS: usize = 16;

/// The usable URLs of a `url-list` (a string, or a list of strings): HTTP(S) only, no
/// duplicates, at most [`MAX_WEB_SEEDS`].
fn web_seeds(value: Option<&Value>) -> Vec<String> {
    let candidates: Vec<&[u8]> = match value {
        Some(Value::Bytes(b)) => vec![&b[..]],
        Some(Value::List(list)) => list.iter().filter_map(|v| v.as_bytes()).collect(),
        _ => Vec::new(),
    };
    let mut out: Vec<String> = Vec::new();
    for url in candidates.into_iter().filter_map(tracker_url) {
        let lower = url.to_ascii_lowercase();
        let http = lower.starts_with("http://") || lower.starts_with("https://");
        if http && !out.contains(&url) && out.len() < MAX_WEB_SEEDS {
            out.push(url);
        }
    }
    out
}

impl Metainfo {
    /// Parses a whole `.torrent` file. Bytes after the top-level dictionary (a trailing
    /// newline is common) are ignored, as other clients do.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let (top, used) = bencode::decode_prefix(bytes)?;
        let bytes = bytes.get(..used).unwrap_or(bytes);
        let Value::Dict(top) = top else {
            return invalid("torrent is not a dictionary");
        };

        let announce = match top.get(&b"announce"[..]) {
            None => None,
            Some(Value::Bytes(b)) => tracker_url(b),
            Some(_) => return invalid("announce is not a string"),
        };

        let announce_list = match top.get(&b"announce-list"[..]) {
            None => Vec::new(),
            Some(Value::List(tiers)) => tiers
                .iter()
                .filter_map(|tier| {
                    let urls: Vec<String> = tier
                        .as_list()?
                        .iter()
                        .filter_map(|url| url.as_bytes())
                        .filter_map(tracker_url)
                        .collect();
                    (!urls.is_empty()).then_some(urls)
                })
                .collect(),
            Some(_) => return invalid("announce-list is not a list"),
        };

        let info_dict = match top.get(&b"info"[..]) {
            None => return invalid("info dictionary is missing"),
            Some(Value::Dict(d)) => d,
            Some(_) => return invalid("info is not a dictionary"),
        };
        let Some(raw) = bencode::raw_dict_value(bytes, b"info")? else {
            return invalid("info dictionary is missing");
        };
        let info = Info::from_dict(info_dict, raw)?;
        let (info_hash, info_hash_v2) = info_hashes(raw, info.version);
        let piece_layers = if info.version.has_v2() {
            super::v2::piece_layers(top.get(&b"piece layers"[..]), &info)?
        } else {
            BTreeMap::new()
        };

        let web_seeds = web_seeds(top.get(&b"url-list"[..]));
        Ok(Metainfo {
            announce,
            announce_list,
            info,
            info_hash,
            info_hash_v2,
            info_bytes: raw.to_vec(),
            web_seeds,
            piece_layers,
        })
    }

    /// Tracker tiers to use: `announce-list` if present and non-empty, else `[[announce]]`.
    pub fn tracker_tiers(&self) -> Vec<Vec<String>> {
        if !self.announce_list.is_empty() {
            self.announce_list.clone()
        } else if let Some(url) = &self.announce {
            vec![vec![url.clone()]]
        } else {
            Vec::new()
        }
    }

    /// The v1 info hash, unless the torrent is v2-only.
    pub fn info_hash_v1(&self) -> Option<InfoHash> {
        self.info.version.has_v1().then_some(self.info_hash)
    }

    /// The v2 hashes of file `file`'s pieces: its piece layer, or for a file of one piece its
    /// `pieces root`. `None` for pad files, empty files, symlinks, v1 torrents, and files whose
    /// layer the torrent does not carry.
    pub fn piece_hashes_v2(&self, file: usize) -> Option<&[[u8; 32]]> {
        let entry = self.info.files.get(file)?;
        if entry.length > u64::from(self.info.piece_length) {
            self.piece_layers.get(&file).map(Vec::as_slice)
        } else {
            entry.pieces_root.as_ref().map(std::slice::from_ref)
        }
    }
}

/// The info hashes of an info dictionary's raw bytes: the 20-byte hash that names the torrent
/// on the wire (SHA-1, or for a v2-only torrent the SHA-256 truncated) and, when it has v2
/// metadata, the v2 hash (SHA-256).
pub fn info_hashes(info_bytes: &[u8], version: MetaVersion) -> (InfoHash, Option<InfoHashV2>) {
    let v2 = version
        .has_v2()
        .then(|| InfoHashV2(Sha256::digest(info_bytes).into()));
    match v2 {
        Some(v2) if !version.has_v1() => (v2.truncated(), Some(v2)),
        _ => (InfoHash(Sha1::digest(info_bytes).into()), v2),
    }
}

/// A hybrid torrent's second name: its truncated v2 hash, which peers of its v2 swarm connect
/// with (`None` for v1-only and v2-only torrents, which have one name).
pub fn hybrid_v2_alias(info_bytes: &[u8], version: MetaVersion) -> Option<InfoHash> {
    if !(version.has_v1() && version.has_v2()) {
        return None;
    }
    info_hashes(info_bytes, version).1.map(|v2| v2.truncated())
}

/// A byte-string field, preferring the `<key>.utf-8` variant when it is a byte string.
fn string_field<'a>(dict: &'a Dict, key: &str) -> Option<&'a Value> {
    let utf8_key = format!("{key}.utf-8");
    match dict.get(utf8_key.as_bytes()) {
        Some(v @ Value::Bytes(_)) => Some(v),
        _ => dict.get(key.as_bytes()),
    }
}

/// A non-negative length field.
pub(super) fn length_field(dict: &Dict, what: &str) -> Result<u64, MetainfoError> {
    match dict.get(&b"length"[..]) {
        None => invalid(format!("{what}.length is missing")),
        Some(Value::Int(n)) => match u64::try_from(*n) {
            Ok(n) => Ok(n),
            Err(_) => invalid(format!("{what}.length {n} is negative")),
        },
        Some(_) => invalid(format!("{what}.length is not an integer")),
    }
}

/// The BEP 47 `attr` letters of a file dictionary; whether it says `l` (symlink).
pub(super) fn attributes(dict: &Dict) -> (FileAttr, bool) {
    let mut attr = FileAttr::default();
    let mut symlink = false;
    if let Some(Value::Bytes(letters)) = dict.get(&b"attr"[..]) {
        for c in letters {
            match c {
                b'p' => attr.pad = true,
                b'x' => attr.executable = true,
                b'h' => attr.hidden = true,
                b'l' => symlink = true,
                _ => {}
            }
        }
    }
    (attr, symlink)
}

/// The target of a symlink from its `symlink path` components (relative to the torrent's
/// root): `..` is resolved, and a target that would leave the root, or starts at an absolute
/// path, stays outside (never created). `None` if there is no usable `symlink path` list.
pub(super) fn symlink_target(dict: &Dict) -> Option<SymlinkTarget> {
    let Some(Value::List(parts)) = dict.get(&b"symlink path"[..]) else {
        return None;
    };
    let raw: Vec<&[u8]> = parts.iter().filter_map(Value::as_bytes).collect();
    if raw.len() != parts.len() {
        return None;
    }
    let shown = || {
        raw.iter()
            .map(|p| decode_name(p).into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    let absolute = raw.first().is_some_and(|first| {
        matches!(first, [b'/' | b'\\', ..])
            || matches!(first, [d, b':', ..] if d.is_ascii_alphabetic())
    });
    if absolute {
        return Some(SymlinkTarget::Outside(shown()));
    }
    let mut inside: Vec<String> = Vec::new();
    for part in &raw {
        if *part == b".." {
            if inside.pop().is_none() {
                return Some(SymlinkTarget::Outside(shown()));
            }
        } else if let Some(name) = sanitize_component(part) {
            inside.push(name);
        }
    }
    if inside.is_empty() {
        // A link to the root itself is a loop.
        return Some(SymlinkTarget::Outside(shown()));
    }
    Some(SymlinkTarget::Inside(inside))
}

/// `info.files[index]`.
fn v1_file(item: &Value, index: usize, offset: u64) -> Result<FileEntry, MetainfoError> {
    let what = format!("info.files[{index}]");
    let Value::Dict(file) = item else {
        return invalid(format!("{what} is not a dictionary"));
    };
    let (mut attr, is_link) = attributes(file);
    let symlink = if is_link { symlink_target(file) } else { None };
    // A symlink takes no payload bytes whatever length it claims (as in libtorrent).
    let length = if symlink.is_some() {
        0
    } else {
        length_field(file, &what)?
    };
    let path = match file.get(&b"path.utf-8"[..]) {
        Some(v @ Value::List(_)) => Some(v),
        _ => file.get(&b"path"[..]),
    };
    let (path, original_path) = match path {
        Some(Value::List(parts)) if !parts.is_empty() => {
            let mut raw = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let Value::Bytes(b) = part else {
                    return invalid(format!("{what}.path[{j}] is not a string"));
                };
                raw.push(b.as_slice());
            }
            let path = sanitize_path(raw.iter().copied());
            let original = original_if_changed(&raw, &path);
            (path, original)
        }
        Some(Value::List(_)) if attr.pad => (vec![".pad".to_string(), length.to_string()], None),
        Some(Value::List(_)) => return invalid(format!("{what}.path is empty")),
        None if attr.pad => (vec![".pad".to_string(), length.to_string()], None),
        None => return invalid(format!("{what}.path is missing")),
        Some(_) => return invalid(format!("{what}.path is not a list")),
    };
    // BitComet's pad files predate BEP 47's attribute.
    if path
        .last()
        .is_some_and(|name| name.starts_with("_____padding_file_"))
    {
        attr.pad = true;
    }
    Ok(FileEntry {
        path,
        length,
        offset,
        attr,
        symlink,
        pieces_root: None,
        original_path,
    })
}

/// The v1 `files` list (or the single file of `length`) and whether it was a list. `name` and
/// `original_name` are the torrent's (a single file's path).
fn v1_files(
    info: &Dict,
    name: &str,
    original_name: Option<&[u8]>,
) -> Result<(Vec<FileEntry>, bool), MetainfoError> {
    match (info.get(&b"length"[..]), info.get(&b"files"[..])) {
        (Some(_), Some(_)) => invalid("info has both length and files"),
        (None, None) => invalid("info has neither length nor files"),
        (Some(_), None) => {
            let (attr, is_link) = attributes(info);
            let symlink = if is_link { symlink_target(info) } else { None };
            let length = if symlink.is_some() {
                0
            } else {
                length_field(info, "info")?
            };
            let file = FileEntry {
                attr,
                symlink,
                original_path: original_name.map(|n| Box::from([Box::from(n)])),
                ..FileEntry::new(vec![name.to_string()], length, 0)
            };
            Ok((vec![file], false))
        }
        (None, Some(list)) => {
            let Value::List(items) = list else {
                return invalid("info.files is not a list");
            };
            if items.is_empty() {
                return invalid("info.files is empty");
            }
            if items.len() > MAX_FILES {
                return invalid(format!(
                    "info.files lists {} files, more than {MAX_FILES}",
                    items.len()
                ));
            }
            let mut files = Vec::with_capacity(items.len());
            let mut offset = 0u64;
            for (index, item) in items.iter().enumerate() {
                let file = v1_file(item, index, offset)?;
                offset = offset
                    .checked_add(file.length)
                    .filter(|&o| o <= MAX_TOTAL_LENGTH)
                    .map_or_else(too_big, Ok)?;
                files.push(file);
            }
            Ok((files, true))
        }
    }
}

fn too_big<T>() -> Result<T, MetainfoError> {
    invalid(format!(
        "info total length exceeds 2^50 bytes ({MAX_TOTAL_LENGTH})"
    ))
}

impl Info {
    /// Parses a bare bencoded info dictionary (e.g. fetched with ut_metadata).
    pub fn from_bytes(info_bytes: &[u8]) -> Result<Info, MetainfoError> {
        match bencode::decode(info_bytes)? {
            Value::Dict(d) => Info::from_dict(&d, info_bytes),
            _ => invalid("info is not a dictionary"),
        }
    }

    /// Validates a decoded info dictionary; `raw` is its bytes (to name a nameless torrent
    /// after its hash, as libtorrent does).
    fn from_dict(info: &Dict, raw: &[u8]) -> Result<Info, MetainfoError> {
        let v2 = match info.get(&b"meta version"[..]) {
            None => false,
            Some(Value::Int(2)) => true,
            Some(Value::Int(n)) => {
                return invalid(format!(
                    "info.meta version {n} is not supported (only 2 is)"
                ))
            }
            Some(_) => return invalid("info.meta version is not an integer"),
        };
        if !v2 && info.contains_key(&b"file tree"[..]) {
            return invalid("info.file tree needs meta version 2");
        }

        let piece_length = match info.get(&b"piece length"[..]) {
            None => return invalid("info.piece length is missing"),
            Some(Value::Int(n)) => match u32::try_from(*n) {
                Ok(n) if (1..=MAX_PIECE_LENGTH).contains(&n) => n,
                _ => return invalid(format!("info.piece length {n} is out of range")),
            },
            Some(_) => return invalid("info.piece length is not an integer"),
        };
        if v2 && (piece_length < MIN_V2_PIECE_LENGTH || !piece_length.is_power_of_two()) {
            return invalid(format!(
                "info.piece length {piece_length} is not a power of two of at least 16 KiB (v2)"
            ));
        }

        let raw_name: &[u8] = match string_field(info, "name") {
            None => return invalid("info.name is missing"),
            Some(Value::Bytes(b)) => b,
            Some(_) => return invalid("info.name is not a string"),
        };
        let has_v1 = !v2 || info.contains_key(&b"files"[..]) || info.contains_key(&b"length"[..]);
        let name = sanitize_component(raw_name).unwrap_or_else(|| {
            if has_v1 {
                to_hex(&Sha1::digest(raw))
            } else {
                to_hex(&Sha256::digest(raw))
            }
        });
        let original_name = (raw_name != name.as_bytes()).then(|| Box::from(raw_name));

        let pieces = if has_v1 {
            match info.get(&b"pieces"[..]) {
                None => return invalid("info.pieces is missing"),
                Some(Value::Bytes(b)) => {
                    if b.len() % 20 != 0 {
                        return invalid(format!(
                            "info.pieces length {} is not a multiple of 20",
                            b.len()
                        ));
                    }
                    b.chunks_exact(20)
                        .map(|c| {
                            let mut h = [0u8; 20];
                            h.copy_from_slice(c);
                            h
                        })
                        .collect::<Vec<[u8; 20]>>()
                }
                Some(_) => return invalid("info.pieces is not a string"),
            }
        } else {
            Vec::new()
        };

        let v1 = if has_v1 {
            Some(v1_files(info, &name, original_name.as_deref())?)
        } else {
            None
        };
        let tree = if v2 {
            let has_files = info.contains_key(&b"files"[..]);
            Some(super::v2::file_tree(info, has_files)?)
        } else {
            None
        };
        let (mut files, multi_file, version) = match (v1, tree) {
            (Some((files, multi)), None) => (files, multi, MetaVersion::V1),
            (None, Some(tree)) => (
                super::v2::with_pad_files(tree.files, piece_length)?,
                !tree.single_file,
                MetaVersion::V2,
            ),
            (Some((files, multi)), Some(tree)) => (
                super::v2::merge_hybrid(files, tree.files, piece_length)?,
                multi,
                MetaVersion::Hybrid,
            ),
            (None, None) => return invalid("info has neither length nor files"),
        };
        resolve_collisions(&mut files);

        let total_length = files
            .last()
            .map(|f| f.offset.saturating_add(f.length))
            .unwrap_or(0);
        if total_length == 0 {
            return invalid("info total length is 0");
        }
        if total_length > MAX_TOTAL_LENGTH {
            return too_big();
        }
        let needed = total_length.div_ceil(u64::from(piece_length));
        if u32::try_from(needed).is_err() {
            return invalid(format!("info needs {needed} pieces, more than 2^32 - 1"));
        }
        if version.has_v1() {
            let have = pieces.len() as u64;
            if have != needed {
                return invalid(format!(
                    "info.pieces has {have} hashes but the length needs {needed}"
                ));
            }
        }

        // Any other value (or type) than the integer 1 means public, as libtorrent reads it.
        let private = matches!(info.get(&b"private"[..]), Some(Value::Int(1)));
        Ok(Info {
            name,
            original_name,
            piece_length,
            pieces,
            files,
            multi_file,
            total_length,
            private,
            version,
        })
    }

    /// The name as the torrent writes it: what a web seed holds the torrent under (BEP 19).
    /// Never for the disk: use `name`.
    pub fn name_as_written(&self) -> &[u8] {
        self.original_name
            .as_deref()
            .unwrap_or(self.name.as_bytes())
    }

    /// Number of pieces: `ceil(total_length / piece_length)`.
    pub fn piece_count(&self) -> u32 {
        let count = self
            .total_length
            .div_ceil(u64::from(self.piece_length.max(1)));
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Length of piece `index` (the last one may be shorter). Caller ensures `index < piece_count`;
    /// an index past the end gives 0.
    pub fn piece_len(&self, index: u32) -> u32 {
        let count = u64::from(self.piece_count());
        let index = u64::from(index);
        let piece_length = u64::from(self.piece_length);
        if index.saturating_add(1) < count {
            self.piece_length
        } else if index.saturating_add(1) == count {
            let before = piece_length.saturating_mul(index);
            u32::try_from(self.total_length.saturating_sub(before)).unwrap_or(0)
        } else {
            0
        }
    }

    /// Bytes of the real files (pad files left out): what the user gets.
    pub fn content_length(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.attr.pad)
            .map(|f| f.length)
            .sum()
    }

    /// The files the user sees, with their indices: every file but the pad files.
    pub fn real_files(&self) -> impl Iterator<Item = (usize, &FileEntry)> + '_ {
        self.files.iter().enumerate().filter(|(_, f)| !f.attr.pad)
    }
}

/// Quoted `a/b/c` of a path, for messages.
pub(super) fn shown_path(path: &[String]) -> String {
    quoted(&path.join("/"))
}

#[cfg(test)]
#[path = "torrent_tests.rs"]
mod tests;
