//! The sans-IO download state machine: which peer has what, which blocks are asked of whom,
//! how pieces are assembled and handed out for verification. The engine feeds it peer messages
//! and the time, carries out what it queues (messages to send, pieces to hash) and reports hash
//! results back. Nothing here touches a socket, a clock or a file.

pub mod bitfield;
pub mod download;
pub mod picker;

pub use bitfield::{Bitfield, BitfieldError};
pub use download::{CompletedPiece, Config, Download, PeerError, PeerKey, BLOCK_LEN};
pub use picker::PiecePicker;
