//! bitrush-core: BitTorrent protocol logic without I/O.
//!
//! Everything here is plain functions and state machines over bytes, with time and randomness
//! passed in; the compiler keeps it that way (no runtime, socket, clock, file or entropy crate
//! is a dependency). The `bitrush` crate drives these machines over real sockets and files.
//!
//! - [`bencode`], [`metainfo`]: the data formats (`.torrent` files, magnet links).
//! - [`wire`]: the peer protocol's handshake and messages, BEP 10 extensions, BEP 9 metadata.
//! - [`tracker`]: announce messages, the UDP tracker machine, BEP 12 tiers.
//! - [`swarm`]: one torrent's exchange with its peers: pieces, requests, choking.
//! - [`storage`]: pieces mapped onto files, and the fast-resume format.
//! - [`merkle`]: BitTorrent v2 merkle trees (piece layers, roots, proofs).

pub mod bencode;
pub mod merkle;
pub mod metainfo;
pub mod storage;
pub mod swarm;
pub mod tracker;
pub mod types;
pub mod wire;

#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
