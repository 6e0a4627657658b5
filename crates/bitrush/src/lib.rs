//! bitrush: a BitTorrent client library.
//!
//! The protocol logic lives in [`bitrush_core`] (re-exported here module by module); this crate
//! is what moves its bytes and timers:
//! - [`disk`]: the torrent's files, with positioned, synchronous reads and writes;
//! - [`create`]: making `.torrent` files from a file or folder on disk;
//! - [`daemon`]: many torrents in one session, driven over HTTP (REST and Transmission RPC);
//! - [`engine`]: the tokio driver that owns sockets, timers and threads and feeds the state
//!   machines.

pub use bitrush_core::{
    bencode, dht, hashes, merkle, metadata, metainfo, mse, queue, rate, session, storage, swarm,
    tracker, types, utp, webseed, wire,
};

pub mod create;
pub mod daemon;
pub mod disk;
pub mod engine;
