//! Torrent metadata: `.torrent` files (BEP 3, BEP 12 announce-list, BEP 47 pad files and
//! attributes, BEP 52 v2 and hybrid metadata), magnet links (BEP 9, v1 and v2 hashes), and
//! building new torrents ([`build`]).
//!
//! Torrents are read as they are found in the wild: unsafe or clashing names are sanitised
//! rather than refused (see [`names`]), bytes after the top-level dictionary are ignored, and
//! tracker URLs are trimmed. The invariants of a parsed [`Info`] are listed in `torrent.rs`:
//! consistent lengths, offsets and piece counts, safe and distinct paths, and for v2 metadata
//! file-aligned pieces and checked piece layers.

pub mod build;
mod magnet;
pub mod names;
mod torrent;
mod v2;

pub use magnet::{Magnet, MagnetError};
pub use torrent::{
    hybrid_v2_alias, info_hashes, FileAttr, FileEntry, Info, MetaVersion, Metainfo, MetainfoError,
    PieceLayer, SymlinkTarget, MAX_FILES, MAX_PIECE_LENGTH, MAX_TOTAL_LENGTH, MAX_TREE_DEPTH,
    MAX_WEB_SEEDS,
};

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
