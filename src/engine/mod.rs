//! The tokio engine: sockets, timers and threads driving the sans-IO state machines.
//!
//! - [`peer`]: one TCP connection: handshake, then a loop feeding decoded messages to the shared
//!   [`crate::swarm::Download`] and writing what it queues.
//! - [`mod@download`]: one torrent's download: tracker announces, the connection manager, the hashing
//!   threads and the piece sink.
//! - [`tracker`]: HTTP and UDP tracker clients.
//! - [`resume`]: the fast-resume file beside the output.

pub mod download;
pub mod hasher;
pub mod metadata;
pub mod peer;
pub mod resume;
pub mod sink;
pub mod tracker;

pub use download::{
    download, DownloadError, DownloadParams, Outcome, Progress, SeedLimits, Target,
};
