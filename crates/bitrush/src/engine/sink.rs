//! Where verified pieces are written and uploads are read: the torrent's files, or a single
//! piece's file for `download_piece`.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::disk::{Storage, StorageError};
use crate::storage::LayoutError;

/// The destination of a download.
pub enum Sink {
    Files(Storage),
    /// One piece, stored alone at offset 0 of a file.
    Piece {
        index: u32,
        file: std::fs::File,
        path: PathBuf,
    },
}

impl Sink {
    fn io_error(op: &'static str, path: &std::path::Path, source: std::io::Error) -> StorageError {
        StorageError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }

    /// Writes verified data at byte `begin` of piece `index`.
    pub fn store(&self, index: u32, begin: u32, data: &[u8]) -> Result<(), StorageError> {
        match self {
            Sink::Files(storage) => storage.write(index, begin, data),
            Sink::Piece { file, path, .. } => file
                .write_all_at(data, u64::from(begin))
                .map_err(|e| Self::io_error("write to", path, e)),
        }
    }

    /// Reads `buf.len()` bytes at `begin` of piece `index` (a piece we have).
    pub fn read(&self, index: u32, begin: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        match self {
            Sink::Files(storage) => storage.read(index, begin, buf),
            Sink::Piece {
                index: ours,
                file,
                path,
            } => {
                if index != *ours {
                    return Err(LayoutError::Range(format!("piece {index} is not stored")).into());
                }
                file.read_exact_at(buf, u64::from(begin))
                    .map_err(|e| Self::io_error("read", path, e))
            }
        }
    }
}
