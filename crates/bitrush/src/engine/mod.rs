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

/// `path` with `suffix` appended to its last component (`out.bin` → `out.bin.bitrush-part`):
/// where bitrush keeps files that belong to an output, beside it.
pub(crate) fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    name.into()
}

/// A fresh peer id for a session (the client prefix and random characters).
pub fn new_peer_id() -> crate::types::PeerId {
    crate::types::PeerId::generate(&mut rand::thread_rng())
}

pub use download::{
    download, DownloadError, DownloadParams, Outcome, Progress, SeedLimits, Target,
};
