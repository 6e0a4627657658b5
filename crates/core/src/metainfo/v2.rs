//! BEP 52 metadata: the `file tree`, the pad entries that align a v2 torrent's files to pieces,
//! the consistency of a hybrid's v1 and v2 halves, and the `piece layers`.
//!
//! Invariants: the tree walk is bounded by [`MAX_TREE_DEPTH`] directories and [`MAX_FILES`]
//! files (so its recursion and its output are bounded); every name is sanitised like a v1
//! path (the names as written kept beside where they differ); every piece layer kept has one
//! hash per piece of its file and hashes to the file's `pieces root`.

use std::collections::{BTreeMap, HashMap};

use super::names::{original_if_changed, sanitize_component};
use super::torrent::{
    attributes, length_field, shown_path, symlink_target, FileEntry, Info, PieceLayer, MAX_FILES,
    MAX_TREE_DEPTH,
};
use super::MetainfoError;
use crate::bencode::Value;
use crate::merkle;
use crate::types::to_hex;

type Dict = BTreeMap<Vec<u8>, Value>;

fn invalid<T>(msg: impl Into<String>) -> Result<T, MetainfoError> {
    Err(MetainfoError::Invalid(msg.into()))
}

/// The files of a `file tree`, in tree order, without offsets or pad entries yet.
pub(super) struct Tree {
    pub files: Vec<FileEntry>,
    /// The tree is one file at its root and the info has no v1 `files` list.
    pub single_file: bool,
}

/// A tree node is a file when it holds exactly the empty key.
fn leaf_properties(node: &Dict) -> Option<&Value> {
    match node.iter().next() {
        Some((key, props)) if node.len() == 1 && key.is_empty() => Some(props),
        _ => None,
    }
}

/// Parses `info.file tree`. `has_files`: the info also has a v1 `files` list (then even a
/// lone file sits in the torrent's folder).
pub(super) fn file_tree(info: &Dict, has_files: bool) -> Result<Tree, MetainfoError> {
    let root = match info.get(&b"file tree"[..]) {
        None => return invalid("info.file tree is missing"),
        Some(Value::Dict(d)) => d,
        Some(_) => return invalid("info.file tree is not a dictionary"),
    };
    let single_file = !has_files
        && root.len() == 1
        && root
            .values()
            .next()
            .and_then(Value::as_dict)
            .and_then(leaf_properties)
            .is_some();
    let mut files = Vec::new();
    walk(root, &mut Vec::new(), &mut Vec::new(), 0, &mut files)?;
    if files.is_empty() {
        return invalid("info.file tree has no files");
    }
    Ok(Tree { files, single_file })
}

/// Adds the files under `node` (a directory at `prefix`, `depth` levels deep) to `out`.
/// `raw_prefix` is the same directory as the tree writes it (every key, dropped ones too).
fn walk<'a>(
    node: &'a Dict,
    prefix: &mut Vec<String>,
    raw_prefix: &mut Vec<&'a [u8]>,
    depth: usize,
    out: &mut Vec<FileEntry>,
) -> Result<(), MetainfoError> {
    if depth > MAX_TREE_DEPTH {
        return invalid(format!(
            "info.file tree is nested deeper than {MAX_TREE_DEPTH} directories"
        ));
    }
    for (key, value) in node {
        let shown = |prefix: &[String]| {
            let mut path = prefix.to_vec();
            path.push(super::names::decode_name(key).into_owned());
            shown_path(&path)
        };
        if key.is_empty() {
            return invalid(format!(
                "info.file tree {} has an empty name",
                shown(prefix)
            ));
        }
        let Value::Dict(child) = value else {
            return invalid(format!(
                "info.file tree {} is not a dictionary",
                shown(prefix)
            ));
        };
        let name = sanitize_component(key);
        let pushed = match name {
            Some(name) => {
                prefix.push(name);
                true
            }
            None => false,
        };
        raw_prefix.push(key);
        let result = match leaf_properties(child) {
            Some(props) => {
                if out.len() >= MAX_FILES {
                    return invalid(format!("info.file tree has more than {MAX_FILES} files"));
                }
                let path = if prefix.is_empty() {
                    vec!["_".to_string()]
                } else {
                    prefix.clone()
                };
                let what = format!("info.file tree {}", shown_path(&path));
                let original_path = original_if_changed(raw_prefix, &path);
                leaf(props, path, &what).map(|f| out.push(FileEntry { original_path, ..f }))
            }
            None => walk(child, prefix, raw_prefix, depth + 1, out),
        };
        raw_prefix.pop();
        if pushed {
            prefix.pop();
        }
        result?;
    }
    Ok(())
}

/// A file's properties (the dictionary under its empty key).
fn leaf(props: &Value, path: Vec<String>, what: &str) -> Result<FileEntry, MetainfoError> {
    let Value::Dict(props) = props else {
        return invalid(format!("{what} has properties that are not a dictionary"));
    };
    let (attr, is_link) = attributes(props);
    if attr.pad {
        return invalid(format!(
            "{what} is a pad file, which a file tree cannot hold"
        ));
    }
    let symlink = if is_link { symlink_target(props) } else { None };
    let length = if symlink.is_some() {
        0
    } else {
        length_field(props, what)?
    };
    let pieces_root = if length > 0 {
        match props.get(&b"pieces root"[..]) {
            None => return invalid(format!("{what} has no pieces root")),
            Some(Value::Bytes(b)) => match <[u8; 32]>::try_from(b.as_slice()) {
                Ok(root) if root != [0; 32] => Some(root),
                Ok(_) => return invalid(format!("{what}.pieces root is all zeros")),
                Err(_) => {
                    return invalid(format!("{what}.pieces root is {} bytes, not 32", b.len()))
                }
            },
            Some(_) => return invalid(format!("{what}.pieces root is not a string")),
        }
    } else {
        None
    };
    Ok(FileEntry {
        attr,
        symlink,
        pieces_root,
        ..FileEntry::new(path, length, 0)
    })
}

/// A pad entry of `length` bytes at `offset` (named as libtorrent and BEP 47 name them).
fn pad_entry(length: u64, offset: u64) -> FileEntry {
    let mut pad = FileEntry::new(vec![".pad".to_string(), length.to_string()], length, offset);
    pad.attr.pad = true;
    pad
}

/// Bytes of padding after a file ending at `end` so the next file starts on a piece.
fn padding_after(end: u64, piece_length: u32) -> u64 {
    let rem = end % u64::from(piece_length);
    if rem == 0 {
        0
    } else {
        u64::from(piece_length) - rem
    }
}

/// The tree's files laid out in one payload: offsets set and a pad entry after every file
/// that does not end on a piece boundary, the last one included (a v2 torrent's pieces never
/// span files). This is libtorrent's layout: its peers count the last piece of a v2-only
/// torrent as a whole piece and may ask for the padding's blocks.
pub(super) fn with_pad_files(
    files: Vec<FileEntry>,
    piece_length: u32,
) -> Result<Vec<FileEntry>, MetainfoError> {
    lay_out(files, piece_length, |_| true)
}

/// Offsets and pads for `files`; `pad_after(i)` says whether file `i` may be followed by a pad.
fn lay_out(
    files: Vec<FileEntry>,
    piece_length: u32,
    pad_after: impl Fn(usize) -> bool,
) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut out = Vec::with_capacity(files.len().saturating_mul(2));
    let mut offset = 0u64;
    for (i, mut file) in files.into_iter().enumerate() {
        file.offset = offset;
        offset = grow(offset, file.length)?;
        let has_data = file.length > 0;
        out.push(file);
        if has_data && pad_after(i) {
            let pad = padding_after(offset, piece_length);
            if pad > 0 {
                out.push(pad_entry(pad, offset));
                offset = grow(offset, pad)?;
            }
        }
    }
    Ok(out)
}

fn grow(offset: u64, length: u64) -> Result<u64, MetainfoError> {
    match offset.checked_add(length) {
        Some(o) if o <= super::MAX_TOTAL_LENGTH => Ok(o),
        _ => invalid(format!(
            "info total length exceeds 2^50 bytes ({})",
            super::MAX_TOTAL_LENGTH
        )),
    }
}

/// Whether a file holds payload that both halves of a hybrid must agree on.
fn carries_data(f: &FileEntry) -> bool {
    !f.attr.pad && f.length > 0
}

/// Checks that a hybrid's v1 files (`v1`, pads included) and v2 tree (`tree`) describe the
/// same payload, as libtorrent does: the tree laid out with a pad after every file that does
/// not end on a piece (the last one's pad optional) must line up entry by entry with the v1
/// list, and every entry with data must have the same path, length and offset. Returns the
/// v1 list with each file's `pieces root`.
pub(super) fn merge_hybrid(
    mut v1: Vec<FileEntry>,
    tree: Vec<FileEntry>,
    piece_length: u32,
) -> Result<Vec<FileEntry>, MetainfoError> {
    let mut v2 = lay_out(tree, piece_length, |_| true)?;
    if v2.len() == v1.len() + 1 {
        // Hybrids made before libtorrent 2.0.8 have no pad after the last file.
        if let Some(last) = v2.iter().rposition(|f| f.length > 0) {
            if v2.get(last).is_some_and(|f| f.attr.pad) {
                let removed = v2.remove(last);
                for f in v2.iter_mut().skip(last) {
                    f.offset = f.offset.saturating_sub(removed.length);
                }
            }
        }
    }
    if v1.len() != v2.len() {
        return invalid(format!(
            "info.files and info.file tree disagree: {} entries against {} (pad files included)",
            v1.len(),
            v2.len()
        ));
    }
    for (index, (a, b)) in v1.iter_mut().zip(&v2).enumerate() {
        let what = format!("info.files[{index}] {}", shown_path(&a.path));
        if carries_data(a) != carries_data(b) {
            return invalid(format!(
                "{what} disagrees with info.file tree entry {}",
                shown_path(&b.path)
            ));
        }
        if !carries_data(a) {
            continue;
        }
        if a.path != b.path {
            return invalid(format!(
                "{what} is {} in info.file tree",
                shown_path(&b.path)
            ));
        }
        if a.length != b.length || a.offset != b.offset {
            return invalid(format!(
                "{what} has length {} at offset {} but {} at {} in info.file tree",
                a.length, a.offset, b.length, b.offset
            ));
        }
        a.pieces_root = b.pieces_root;
    }
    Ok(v1)
}

/// Parses and checks the top-level `piece layers` against the files of `info`.
pub(super) fn piece_layers(
    value: Option<&Value>,
    info: &Info,
) -> Result<BTreeMap<usize, PieceLayer>, MetainfoError> {
    let Some(value) = value else {
        return Ok(BTreeMap::new());
    };
    let Value::Dict(layers) = value else {
        return invalid("piece layers is not a dictionary");
    };
    let mut by_root: HashMap<[u8; 32], &[u8]> = HashMap::with_capacity(layers.len());
    for (key, value) in layers {
        let Ok(root) = <[u8; 32]>::try_from(key.as_slice()) else {
            return invalid(format!(
                "piece layers has a key of {} bytes, not a 32-byte pieces root",
                key.len()
            ));
        };
        let Value::Bytes(hashes) = value else {
            return invalid(format!(
                "piece layers entry {} is not a string",
                to_hex(&root)
            ));
        };
        if hashes.len() % 32 != 0 {
            return invalid(format!(
                "piece layers entry {} is {} bytes, not a multiple of 32",
                to_hex(&root),
                hashes.len()
            ));
        }
        by_root.insert(root, hashes);
    }
    let piece_length = u64::from(info.piece_length);
    let per_piece = merkle::blocks_per_piece(info.piece_length);
    let mut checked: HashMap<[u8; 32], PieceLayer> = HashMap::new();
    let mut out = BTreeMap::new();
    for (index, file) in info.files.iter().enumerate() {
        // A file of one piece or less has no layer: its root is its only piece hash.
        let Some(root) = file.pieces_root.filter(|_| file.length > piece_length) else {
            continue;
        };
        let Some(bytes) = by_root.get(&root) else {
            continue;
        };
        if let Some(layer) = checked.get(&root) {
            out.insert(index, layer.clone());
            continue;
        }
        let pieces = file.length.div_ceil(piece_length);
        let have = bytes.len() as u64 / 32;
        let what = format!("piece layers entry of info file {}", shown_path(&file.path));
        if have != pieces {
            return invalid(format!(
                "{what} has {have} hashes but the file has {pieces} pieces"
            ));
        }
        let layer: PieceLayer = crate::hashes::split_hashes(bytes);
        if merkle::root_from_piece_layer(&layer, per_piece) != root {
            return invalid(format!("{what} does not hash to the file's pieces root"));
        }
        checked.insert(root, layer.clone());
        out.insert(index, layer);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "v2_tests.rs"]
mod tests;
