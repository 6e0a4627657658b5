//! The tokio engine: sockets, timers and threads driving the core's state machines. It moves
//! bytes and timers; every protocol rule lives in `bitrush_core`.
//!
//! - [`torrent`]: one torrent, driving a [`crate::session::Session`] and a
//!   [`crate::swarm::Swarm`]: announces, the connection set, the listener, hashing, shutdown.
//! - [`dormant`]: a daemon's seeds nobody is connected to, reduced to their sessions and
//!   driven together by one task (their announces) until a peer comes.
//! - [`peer`]: one connection's task over the shared swarm.
//! - [`connection`]: the framed peer stream every driver uses (connect, handshake, messages).
//! - [`dht`]: the process's DHT node, shared by its torrents.
//! - [`udp`]: the UDP endpoint carrying the DHT and uTP on the listener's port number;
//!   [`utp`]: uTP connections as streams; [`transport`]: plain or MSE-encrypted streams.
//! - [`metadata`]: fetching a magnet link's info dictionary from peers.
//! - [`probe`]: one-shot handshakes and peer lookups for the CLI's single-purpose commands.
//! - [`tracker`]: HTTP(S) and UDP tracker clients; [`tls`]: the trusted authorities for HTTPS.
//! - [`webseed`]: one BEP 19 web seed's task (HTTP range requests into the swarm).
//! - [`hasher`], [`sink`], [`resume`]: piece verification threads, where pieces are stored, and
//!   the fast-resume file beside the output; [`stream`]: verified data to a writer, in order.
//! - [`limits`]: download and upload rate limits shared by connections.

pub mod connection;
pub mod dht;
pub mod dormant;
pub mod hasher;
pub mod limits;
pub mod metadata;
pub mod peer;
pub mod probe;
pub mod resume;
pub mod sink;
pub mod stream;
pub mod tls;
pub mod torrent;
pub mod tracker;
pub mod transport;
pub mod udp;
pub mod utp;
pub mod webseed;

/// `path` with `suffix` appended to its last component (`out.bin` → `out.bin.bitrush-part`):
/// where bitrush keeps files that belong to an output, beside it.
pub(crate) fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    name.into()
}

/// Sleeps until `at`, a deadline from a state machine's `poll_timeout()` (never resolves for
/// `None`).
pub(crate) async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// A fresh peer id for a session (the client prefix and random characters).
pub fn new_peer_id() -> crate::types::PeerId {
    crate::types::PeerId::generate(&mut rand::thread_rng())
}

/// Gives the allocator's free memory back to the system. glibc keeps the pages of freed
/// memory in its arenas, and the work of many runs leaves them strewn with the few
/// allocations that outlive it: after a thousand torrents' runs end, most of a daemon's
/// resident memory is such free space (measured: 45 MiB resident of which 3.5 MiB in use, 23
/// MiB after this). Takes a few milliseconds; elsewhere than on glibc, nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists, under its
    // locks; it takes no pointer and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes every thread allocate from glibc's main arena instead of up to eight per core. A
/// daemon lives long and holds many small allocations: per-thread arenas each keep their own
/// free pages strewn among them, which `malloc_trim` cannot give back (measured on 1,000
/// resting torrents: 0.4 MiB less resident with one arena). Small allocations still come
/// from each thread's cache without the arena's lock. Call it before any thread is spawned;
/// elsewhere than on glibc, nothing.
pub fn share_one_allocator_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator, under its lock; it takes no
    // pointer.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// An error and its causes as one line, joined by ": " (each error's message never repeats
/// its source's, so nothing is shown twice).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

pub use torrent::{
    run_hosted, run_torrent, ConnectedPeer, Dormant, Hosted, HostedEnd, Outcome, Progress,
    SeedLimits, Target, TorrentError, TorrentParams,
};
