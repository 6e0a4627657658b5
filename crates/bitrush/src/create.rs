//! Making `.torrent` files from a file or a folder (BEP 3 single- and multi-file layouts).
//!
//! Folder entries are taken in byte order of their relative paths, so the same tree always gives
//! the same info hash. Symbolic links and special files are refused rather than followed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::bencode::{encode, Value};

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot read {path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

/// Builds a `.torrent` for `path` (a file or a folder) with the given piece length (a power of
/// two from 16 KiB) and optional tracker URL; returns the bencoded file.
pub fn create_torrent(
    path: &Path,
    piece_length: u32,
    announce: Option<&str>,
) -> Result<Vec<u8>, CreateError> {
    if !piece_length.is_power_of_two() || piece_length < 16 * 1024 {
        return Err(CreateError::Invalid(format!(
            "piece length {piece_length} is not a power of two of at least 16 KiB"
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CreateError::Invalid(format!("{} has no usable name", path.display())))?
        .to_string();
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    let mut files: Vec<(Vec<String>, PathBuf, u64)> = Vec::new();
    if meta.is_file() {
        files.push((vec![name.clone()], path.to_path_buf(), meta.len()));
    } else if meta.is_dir() {
        walk(path, &mut Vec::new(), &mut files)?;
        files.sort_by(|a, b| a.0.cmp(&b.0));
    } else {
        return Err(CreateError::Invalid(format!(
            "{} is neither a file nor a folder",
            path.display()
        )));
    }
    let total: u64 = files.iter().map(|f| f.2).sum();
    if total == 0 {
        return Err(CreateError::Invalid(format!(
            "{} holds no data",
            path.display()
        )));
    }

    let mut pieces = Vec::new();
    let mut hasher = Sha1::new();
    let mut in_piece = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (_, file_path, len) in &files {
        let mut file = std::fs::File::open(file_path).map_err(io_err(file_path))?;
        let mut left = *len;
        while left > 0 {
            let want = (u64::from(piece_length) - in_piece)
                .min(left)
                .min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..want])
                .map_err(io_err(file_path))?;
            hasher.update(&buf[..want]);
            in_piece += want as u64;
            left -= want as u64;
            if in_piece == u64::from(piece_length) {
                pieces.extend_from_slice(&hasher.finalize_reset());
                in_piece = 0;
            }
        }
    }
    if in_piece > 0 {
        pieces.extend_from_slice(&hasher.finalize_reset());
    }

    let mut info = BTreeMap::new();
    info.insert(b"name".to_vec(), bytes(&name));
    info.insert(
        b"piece length".to_vec(),
        Value::Int(i64::from(piece_length)),
    );
    info.insert(b"pieces".to_vec(), Value::Bytes(pieces));
    if meta.is_file() {
        info.insert(b"length".to_vec(), Value::Int(total as i64));
    } else {
        let list = files
            .iter()
            .map(|(components, _, len)| {
                let mut f = BTreeMap::new();
                f.insert(b"length".to_vec(), Value::Int(*len as i64));
                f.insert(
                    b"path".to_vec(),
                    Value::List(components.iter().map(|c| bytes(c)).collect()),
                );
                Value::Dict(f)
            })
            .collect();
        info.insert(b"files".to_vec(), Value::List(list));
    }
    let mut top = BTreeMap::new();
    if let Some(url) = announce {
        top.insert(b"announce".to_vec(), bytes(url));
    }
    top.insert(b"created by".to_vec(), bytes("bitrush"));
    top.insert(b"info".to_vec(), Value::Dict(info));
    Ok(encode(&Value::Dict(top)))
}

fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, PathBuf, u64)>,
) -> Result<(), CreateError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| CreateError::Invalid(format!("{} is not a UTF-8 name", path.display())))?;
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        prefix.push(name);
        if meta.is_dir() {
            walk(&path, prefix, out)?;
        } else if meta.is_file() {
            out.push((prefix.clone(), path, meta.len()));
        } else {
            return Err(CreateError::Invalid(format!(
                "{} is a link or special file",
                path.display()
            )));
        }
        prefix.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;

    #[test]
    fn single_file_torrent_parses_back_with_correct_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.bin");
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &payload).unwrap();
        let bytes = create_torrent(&path, 16 * 1024, Some("http://127.0.0.1:1/announce")).unwrap();
        let meta = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(meta.info.total_length, 40_000);
        assert_eq!(meta.info.pieces.len(), 3);
        for (i, chunk) in payload.chunks(16 * 1024).enumerate() {
            assert_eq!(meta.info.pieces[i], <[u8; 20]>::from(Sha1::digest(chunk)));
        }
        assert_eq!(
            meta.announce.as_deref(),
            Some("http://127.0.0.1:1/announce")
        );
    }

    #[test]
    fn folder_torrent_lists_files_in_path_order_with_pieces_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/z.txt"), vec![1u8; 20_000]).unwrap();
        std::fs::write(root.join("a.txt"), vec![2u8; 5]).unwrap();
        std::fs::write(root.join("b/empty"), b"").unwrap();
        let meta = Metainfo::from_bytes(&create_torrent(&root, 16 * 1024, None).unwrap()).unwrap();
        let paths: Vec<String> = meta.info.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["a.txt", "b/c/z.txt", "b/empty"]);
        let mut all = vec![2u8; 5];
        all.extend(vec![1u8; 20_000]);
        assert_eq!(
            meta.info.pieces[0],
            <[u8; 20]>::from(Sha1::digest(&all[..16 * 1024]))
        );
        assert_eq!(
            meta.info.pieces[1],
            <[u8; 20]>::from(Sha1::digest(&all[16 * 1024..]))
        );
    }

    #[test]
    fn rejects_bad_piece_length_and_empty_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        assert!(create_torrent(&path, 16 * 1024, None).is_err());
        std::fs::write(&path, b"x").unwrap();
        assert!(create_torrent(&path, 20_000, None).is_err());
    }
}
