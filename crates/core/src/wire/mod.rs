//! The peer wire protocol (BEP 3) and the extension protocol (BEP 10, BEP 9, BEP 11 `ut_pex`), as
//! pure codecs.
//!
//! Invariants: decoders take bytes in any split and never panic; a length prefix is checked
//! against [`message::MAX_MESSAGE_LEN`] before any buffer grows for it.

pub mod extension;
pub mod fast;
pub mod handshake;
pub mod message;
pub mod pex;

pub use extension::{ExtHandshake, MetadataAssembler, MetadataError, MetadataMsg};
pub use handshake::Handshake;
pub use message::{encode_request, BlockRef, HashRequest, Message, MessageDecoder, WireError};
pub use pex::{PexError, PexFlags, PexMessage, PexPeer};

#[cfg(test)]
mod fuzz_tests;
