//! Where pieces live, without touching a file: the piece-to-file [`Layout`] and the
//! fast-resume state's format ([`resume`]). The `bitrush` crate's `disk` module does the I/O.

mod layout;
pub mod resume;

pub use layout::{Layout, Segment, Segments};

/// Why a layout could not be built or a range mapped.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// A piece index or byte range outside the torrent.
    #[error("invalid piece range: {0}")]
    Range(String),
    /// An `Info` whose lengths, offsets or piece count are inconsistent.
    #[error("inconsistent torrent info: {0}")]
    InvalidInfo(String),
}
