//! Fixtures shared by this crate's tests and the `bitrush` crate's (feature `testing`).

use crate::metainfo::build::SourceFile;
use crate::metainfo::{FileEntry, Info, MetaVersion};

/// A multi-file `Info` named `t` with the given file lengths (files `f0`, `f1`, ...) and
/// all-zero piece hashes.
pub fn info_with(lengths: &[u64], piece_length: u32) -> Info {
    let mut offset = 0;
    let files = lengths
        .iter()
        .enumerate()
        .map(|(i, &length)| {
            let f = FileEntry::new(vec![format!("f{i}")], length, offset);
            offset += length;
            f
        })
        .collect();
    let count = offset.div_ceil(u64::from(piece_length)) as usize;
    Info {
        name: "t".into(),
        original_name: None,
        piece_length,
        pieces: vec![[0; 20]; count],
        files,
        multi_file: true,
        total_length: offset,
        private: false,
        version: MetaVersion::V1,
    }
}

/// Files for the torrent builder from `(path, length)` pairs, `/` separating path parts.
pub fn source_files(files: &[(&str, u64)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(p, len)| SourceFile {
            path: p.split('/').map(String::from).collect(),
            length: *len,
            executable: false,
        })
        .collect()
}
