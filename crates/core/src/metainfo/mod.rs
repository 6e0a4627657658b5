//! Torrent metadata: `.torrent` files (BEP 3, BEP 12 announce-list) and magnet links (BEP 9).
//!
//! Invariants of a parsed [`Info`]: `1 <= piece_length <= 2^28`, `0 < total_length <= 2^50`,
//! `pieces.len() == ceil(total_length / piece_length)`, every file path component and the name
//! are safe file names (no `..`, `.`, empty, drive/absolute, separator- or NUL-containing, or
//! reserved Windows device names), no two files collide, and file offsets are cumulative.
//! A [`Metainfo`]'s info hash is the SHA-1 of the info dictionary's raw bytes in the file.

mod magnet;
mod torrent;

pub use magnet::{Magnet, MagnetError};
pub use torrent::{FileEntry, Info, Metainfo, MetainfoError, MAX_PIECE_LENGTH, MAX_TOTAL_LENGTH};

#[cfg(test)]
mod fuzz_tests;

/// Longest text quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 80;

/// `s` in double quotes with escapes, cut short if very long (it may come from hostile input).
fn quoted(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX_QUOTED_CHARS).collect();
        format!("{head:?}...")
    }
}
