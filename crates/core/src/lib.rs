//! bitrush-core: BitTorrent protocol logic without I/O.
//!
//! Everything here is plain functions and state machines over bytes, with time and randomness
//! passed in; the compiler keeps it that way (no runtime, socket, clock, file or entropy crate
//! is a dependency). The `bitrush` crate drives these machines over real sockets and files.
//!
//! - [`bencode`], [`metainfo`]: the data formats (`.torrent` files, magnet links).
//! - [`wire`]: the peer protocol's handshake and messages, BEP 10 extensions, BEP 9 messages,
//!   BEP 11 peer exchange.
//! - [`mse`]: Message Stream Encryption, the obfuscated handshake that may precede the wire one.
//! - [`metadata`]: fetching a magnet link's info dictionary from several peers.
//! - [`dht`]: the Mainline DHT node (BEP 5, BEP 32).
//! - [`tracker`]: announce messages, the UDP tracker machine, BEP 12 tiers.
//! - [`swarm`]: one torrent's exchange with its peers: pieces, requests, choking.
//! - [`session`]: the rules around it: announces, whom to dial, give-up, seed limits.
//! - [`storage`]: pieces mapped onto files, and the fast-resume format.
//! - [`utp`]: the Micro Transport Protocol (BEP 29) over a UDP socket.
//! - [`queue`]: the daemon's queue: which of many torrents run at once.
//! - [`rate`]: the token bucket behind rate limits.
//! - [`merkle`]: BitTorrent v2 merkle trees (piece layers, roots, proofs).
//! - [`webseed`]: BEP 19 web seeds: swarm requests as HTTP range requests.
//! - [`hashes`]: checking pieces (v1 SHA-1 or v2 merkle), BEP 52 hash requests and answers.

pub mod bencode;
pub mod dht;
pub mod hashes;
pub mod merkle;
pub mod metadata;
pub mod metainfo;
pub mod mse;
pub mod queue;
pub mod rate;
pub mod session;
#[cfg(test)]
mod sim;
pub mod storage;
pub mod swarm;
pub mod tracker;
pub mod types;
pub mod utp;
pub mod webseed;
pub mod wire;

#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;
