//! Parsing `.torrent` files and bare info dictionaries.
//!
//! Invariants of a parsed [`Info`]: `1 <= piece_length <= 2^28`; `0 < total_length <= 2^50`;
//! `pieces.len() == ceil(total_length / piece_length)`; `files` is non-empty, in torrent order,
//! with cumulative offsets summing to `total_length`; every path component (and the name) is
//! safe to join onto a download folder on Unix and Windows; no two files share a path and no
//! file's path is a directory of another. The info hash is the SHA-1 of the info dictionary's
//! raw bytes as they appear in the file, never of a re-encoding.

use std::collections::{BTreeMap, HashMap};

use sha1::{Digest, Sha1};

use super::quoted;
use crate::bencode::{self, Value};
use crate::types::InfoHash;

/// Largest accepted `piece length` (256 MiB).
pub const MAX_PIECE_LENGTH: u32 = 1 << 28;
/// Largest accepted total payload (1 PiB).
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;

/// A file inside the torrent, in torrent order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Sanitised path components relative to the torrent's root (for a single-file torrent:
    /// just the name).
    pub path: Vec<String>,
    pub length: u64,
    /// Offset of the file's first byte in the torrent's concatenated payload.
    pub offset: u64,
}

/// The info dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub piece_length: u32,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// True when the info dictionary has a `files` list (output is a directory).
    pub multi_file: bool,
    pub total_length: u64,
    /// BEP 27 `private=1`: peers come from the trackers only (no DHT, no peer exchange).
    pub private: bool,
}

/// A parsed `.torrent` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    pub announce: Option<String>,
    /// BEP 12 tiers, as in the file (may be empty).
    pub announce_list: Vec<Vec<String>>,
    pub info: Info,
    pub info_hash: InfoHash,
    /// The info dictionary's raw bytes exactly as in the file (its SHA-1 is `info_hash`).
    pub info_bytes: Vec<u8>,
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

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Metainfo {
    /// Parses a whole `.torrent` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
        let Value::Dict(top) = bencode::decode(bytes)? else {
            return invalid("torrent is not a dictionary");
        };

        let announce = match top.get(&b"announce"[..]) {
            None => None,
            Some(Value::Bytes(b)) if b.is_empty() => None,
            Some(Value::Bytes(b)) => Some(lossy(b)),
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
                        .filter(|url| !url.is_empty())
                        .map(lossy)
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
        let info = Info::from_dict(info_dict)?;
        let Some(raw) = bencode::raw_dict_value(bytes, b"info")? else {
            return invalid("info dictionary is missing");
        };
        let info_hash = InfoHash(Sha1::digest(raw).into());

        Ok(Metainfo {
            announce,
            announce_list,
            info,
            info_hash,
            info_bytes: raw.to_vec(),
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
}

/// Why a single path component (or the name) is unsafe to use as a file name, if it is.
fn is_unsafe_component(c: &str) -> bool {
    if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\\', '\0']) {
        return true;
    }
    // Drive forms such as `C:` or `c:foo` (absolute forms start with a separator, caught above).
    let b = c.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return true;
    }
    is_reserved_windows_name(c)
}

/// CON, PRN, AUX, NUL, COM1-9, LPT1-9 in any case, with or without an extension
/// (Windows also ignores trailing spaces before the extension).
fn is_reserved_windows_name(c: &str) -> bool {
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    match upper.as_bytes() {
        b"CON" | b"PRN" | b"AUX" | b"NUL" => true,
        [b'C', b'O', b'M', d] | [b'L', b'P', b'T', d] => (b'1'..=b'9').contains(d),
        _ => false,
    }
}

/// A byte-string field decoded lossily, preferring the `<key>.utf-8` variant when it is a
/// byte string.
fn string_field<'a>(dict: &'a Dict, key: &str) -> Option<&'a Value> {
    let utf8_key = format!("{key}.utf-8");
    match dict.get(utf8_key.as_bytes()) {
        Some(v @ Value::Bytes(_)) => Some(v),
        _ => dict.get(key.as_bytes()),
    }
}

/// A non-negative length field.
fn length_field(dict: &Dict, what: &str) -> Result<u64, MetainfoError> {
    match dict.get(&b"length"[..]) {
        None => invalid(format!("{what}.length is missing")),
        Some(Value::Int(n)) => match u64::try_from(*n) {
            Ok(n) => Ok(n),
            Err(_) => invalid(format!("{what}.length {n} is negative")),
        },
        Some(_) => invalid(format!("{what}.length is not an integer")),
    }
}

/// The path of `info.files[index]`, each component checked.
fn file_path(file: &Dict, index: usize) -> Result<Vec<String>, MetainfoError> {
    let what = format!("info.files[{index}].path");
    let path = match file.get(&b"path.utf-8"[..]) {
        Some(v @ Value::List(_)) => v,
        _ => match file.get(&b"path"[..]) {
            Some(v) => v,
            None => return invalid(format!("{what} is missing")),
        },
    };
    let Value::List(parts) = path else {
        return invalid(format!("{what} is not a list"));
    };
    if parts.is_empty() {
        return invalid(format!("{what} is empty"));
    }
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let Value::Bytes(b) = part else {
            return invalid(format!("{what}[{j}] is not a string"));
        };
        let component = lossy(b);
        if is_unsafe_component(&component) {
            return invalid(format!(
                "{what} component {} is not allowed",
                quoted(&component)
            ));
        }
        out.push(component);
    }
    Ok(out)
}

/// Rejects two files with the same path, or a file whose path is another's directory.
/// Walks a flat tree (parent node, component) -> node, so the cost is linear in the input.
fn check_unique_paths(files: &[FileEntry]) -> Result<(), MetainfoError> {
    // Node 0 is the root folder. For each node: the file index that created it, and whether
    // it is a file (leaf) rather than a folder.
    let mut edges: HashMap<(usize, &str), usize> = HashMap::new();
    let mut owner: Vec<usize> = vec![0];
    let mut is_file: Vec<bool> = vec![false];
    for (index, file) in files.iter().enumerate() {
        let mut node = 0usize;
        let last = file.path.len().saturating_sub(1);
        for (j, component) in file.path.iter().enumerate() {
            let next = match edges.get(&(node, component.as_str())) {
                Some(&child) => {
                    let (other, other_is_file) = (owner[child], is_file[child]);
                    if j == last || other_is_file {
                        let how = if j == last && other_is_file {
                            "duplicates"
                        } else {
                            "conflicts with"
                        };
                        return invalid(format!(
                            "info.files[{index}].path {} {how} info.files[{other}]",
                            quoted(&file.path.join("/"))
                        ));
                    }
                    child
                }
                None => {
                    let child = owner.len();
                    owner.push(index);
                    is_file.push(j == last);
                    edges.insert((node, component.as_str()), child);
                    child
                }
            };
            node = next;
        }
    }
    Ok(())
}

impl Info {
    /// Parses a bare bencoded info dictionary (e.g. fetched with ut_metadata).
    pub fn from_bytes(info_bytes: &[u8]) -> Result<Info, MetainfoError> {
        match bencode::decode(info_bytes)? {
            Value::Dict(d) => Info::from_dict(&d),
            _ => invalid("info is not a dictionary"),
        }
    }

    /// Validates a decoded info dictionary.
    fn from_dict(info: &Dict) -> Result<Info, MetainfoError> {
        let name = match string_field(info, "name") {
            None => return invalid("info.name is missing"),
            Some(Value::Bytes(b)) => lossy(b),
            Some(_) => return invalid("info.name is not a string"),
        };
        if is_unsafe_component(&name) {
            return invalid(format!("info.name {} is not allowed", quoted(&name)));
        }

        let piece_length = match info.get(&b"piece length"[..]) {
            None => return invalid("info.piece length is missing"),
            Some(Value::Int(n)) => match u32::try_from(*n) {
                Ok(n) if (1..=MAX_PIECE_LENGTH).contains(&n) => n,
                _ => return invalid(format!("info.piece length {n} is out of range")),
            },
            Some(_) => return invalid("info.piece length is not an integer"),
        };

        let pieces = match info.get(&b"pieces"[..]) {
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
        };

        let too_big = || {
            invalid(format!(
                "info total length exceeds 2^50 bytes ({MAX_TOTAL_LENGTH})"
            ))
        };
        let (files, multi_file) = match (info.get(&b"length"[..]), info.get(&b"files"[..])) {
            (Some(_), Some(_)) => return invalid("info has both length and files"),
            (None, None) => return invalid("info has neither length nor files"),
            (Some(_), None) => {
                let length = length_field(info, "info")?;
                let file = FileEntry {
                    path: vec![name.clone()],
                    length,
                    offset: 0,
                };
                (vec![file], false)
            }
            (None, Some(list)) => {
                let Value::List(items) = list else {
                    return invalid("info.files is not a list");
                };
                if items.is_empty() {
                    return invalid("info.files is empty");
                }
                let mut files = Vec::with_capacity(items.len());
                let mut offset = 0u64;
                for (index, item) in items.iter().enumerate() {
                    let Value::Dict(file) = item else {
                        return invalid(format!("info.files[{index}] is not a dictionary"));
                    };
                    let length = length_field(file, &format!("info.files[{index}]"))?;
                    let path = file_path(file, index)?;
                    files.push(FileEntry {
                        path,
                        length,
                        offset,
                    });
                    offset = match offset.checked_add(length) {
                        Some(o) if o <= MAX_TOTAL_LENGTH => o,
                        _ => return too_big(),
                    };
                }
                check_unique_paths(&files)?;
                (files, true)
            }
        };

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
        let have = pieces.len() as u64;
        if have != needed {
            return invalid(format!(
                "info.pieces has {have} hashes but the length needs {needed}"
            ));
        }
        if u32::try_from(have).is_err() {
            return invalid(format!("info.pieces has {have} hashes, more than 2^32 - 1"));
        }

        // Any other value (or type) than the integer 1 means public, as libtorrent reads it.
        let private = matches!(info.get(&b"private"[..]), Some(Value::Int(1)));
        Ok(Info {
            name,
            piece_length,
            pieces,
            files,
            multi_file,
            total_length,
            private,
        })
    }

    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Length of piece `index` (the last one may be shorter). Caller ensures `index < piece_count`;
    /// an index past the end gives 0.
    pub fn piece_len(&self, index: u32) -> u32 {
        let count = self.pieces.len() as u64;
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
}

#[cfg(test)]
#[path = "torrent_tests.rs"]
mod tests;
