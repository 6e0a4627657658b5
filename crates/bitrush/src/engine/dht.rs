//! The process's DHT node: one core [`Dht`], driven by the UDP endpoint task ([`super::udp`])
//! on the peer listener's port number and shared by every torrent through a cloneable
//! [`DhtHandle`].
//!
//! The endpoint feeds it the datagrams that are not uTP, sends what it queues, runs its timers,
//! and this module routes the peers a lookup finds to whoever asked. The routing table is loaded
//! from the state file at start and saved (atomically) every few minutes and at shutdown, so the
//! next run needs no bootstrap. Bootstrap host names are resolved in the background with a
//! timeout.
//!
//! Invariants: every lookup ends (the machine ends each one); at most [`MAX_LOOKUPS`] requests
//! wait for an answer; nothing here blocks the runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::dht::{AnnouncePort, Dht, DhtConfig, DhtEvent, LookupId, MAX_STATE_LEN};
use crate::types::InfoHash;

/// The routers a fresh node bootstraps from when none are given.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "router.utorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "dht.libtorrent.org:25401",
];
/// Lookups waiting for an answer at once (more are answered "done" at once).
pub const MAX_LOOKUPS: usize = 64;
/// How often the routing table is saved while running.
const SAVE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How long resolving one bootstrap name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start the node.
#[derive(Clone, Debug)]
pub struct DhtOptions {
    /// `host:port` of nodes to bootstrap from (empty: none, so nothing is contacted until a
    /// peer tells us of a node).
    pub bootstrap: Vec<String>,
    /// Where the routing table is kept between runs.
    pub state_file: Option<PathBuf>,
}

/// What a lookup reports.
#[derive(Debug)]
pub enum LookupReply {
    /// Peers found (more may follow).
    Peers(Vec<SocketAddr>),
    /// The lookup is over; `answered` nodes replied (0: the DHT reached nobody).
    Done { answered: usize },
}

pub(super) enum Command {
    Lookup {
        info_hash: InfoHash,
        announce: Option<u16>,
        reply: mpsc::Sender<LookupReply>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A way to reach the DHT task; cheap to clone.
#[derive(Clone, Debug)]
pub struct DhtHandle {
    tx: mpsc::Sender<Command>,
    port: u16,
}

impl DhtHandle {
    /// The UDP port the node listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Looks for peers of `info_hash`, announcing `announce` (our TCP port) to the closest
    /// nodes if given. Replies arrive on the returned channel, ending with
    /// [`LookupReply::Done`].
    pub async fn lookup(
        &self,
        info_hash: InfoHash,
        announce: Option<u16>,
    ) -> mpsc::Receiver<LookupReply> {
        let (reply, rx) = mpsc::channel(16);
        let cmd = Command::Lookup {
            info_hash,
            announce,
            reply,
        };
        if let Err(mpsc::error::SendError(Command::Lookup { reply, .. })) = self.tx.send(cmd).await
        {
            let _ = reply.try_send(LookupReply::Done { answered: 0 });
        }
        rx
    }

    /// Saves the routing table and stops the node.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Builds the node (from the saved routing table if any) and starts resolving the bootstrap
/// names; the endpoint task drives it.
pub(super) fn node(opts: DhtOptions, port: u16) -> (DhtNode, DhtHandle) {
    let now = Instant::now();
    let seed = rand::random();
    let saved = opts.state_file.as_deref().and_then(read_state);
    let dht = match saved {
        Some(bytes) => {
            Dht::from_state(now, &bytes, seed, DhtConfig::default()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the saved DHT state");
                Dht::new(now, seed, DhtConfig::default())
            })
        }
        None => Dht::new(now, seed, DhtConfig::default()),
    };
    tracing::debug!(port, nodes = dht.node_count(), "DHT node started");
    let (tx, rx) = mpsc::channel(64);
    let (resolved_tx, resolved_rx) = mpsc::channel(64);
    for name in opts.bootstrap {
        let resolved_tx = resolved_tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(&name)).await {
                Ok(Ok(addrs)) => {
                    for addr in addrs.filter(SocketAddr::is_ipv4) {
                        let _ = resolved_tx.send(addr).await;
                    }
                }
                Ok(Err(e)) => tracing::debug!(%name, error = %e, "cannot resolve a DHT router"),
                Err(_) => tracing::debug!(%name, "resolving a DHT router timed out"),
            }
        });
    }
    let node = DhtNode {
        dht,
        commands: rx,
        resolved: resolved_rx,
        resolving: true,
        lookups: HashMap::new(),
        state_file: opts.state_file,
        next_save: now + SAVE_INTERVAL,
        stopped: None,
    };
    (node, DhtHandle { tx, port })
}

fn read_state(path: &Path) -> Option<Vec<u8>> {
    let len = std::fs::metadata(path).ok()?.len();
    if len > MAX_STATE_LEN as u64 {
        tracing::warn!(path = %path.display(), len, "DHT state too large; ignored");
        return None;
    }
    std::fs::read(path).ok()
}

/// Writes the state atomically (temporary file, then rename); best effort.
fn write_state(path: &Path, bytes: &[u8]) {
    let tmp = super::with_suffix(path, ".tmp");
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot save the DHT state");
    }
}

/// The DHT as the endpoint task drives it.
pub(super) struct DhtNode {
    pub(super) dht: Dht,
    commands: mpsc::Receiver<Command>,
    resolved: mpsc::Receiver<SocketAddr>,
    resolving: bool,
    lookups: HashMap<LookupId, mpsc::Sender<LookupReply>>,
    state_file: Option<PathBuf>,
    next_save: Instant,
    /// Told once the node saved its state and stopped (a shutdown request).
    stopped: Option<oneshot::Sender<()>>,
}

/// What woke the endpoint for the DHT.
pub(super) enum DhtInput {
    Command(Option<Command>),
    Resolved(Option<SocketAddr>),
}

impl DhtNode {
    /// When the node next needs the endpoint's attention.
    pub(super) fn poll_timeout(&self) -> Instant {
        self.dht
            .poll_timeout()
            .map_or(self.next_save, |t| t.min(self.next_save))
    }

    /// Runs the node's timers and its periodic save.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if self.dht.poll_timeout().is_some_and(|t| t <= now) {
            self.dht.handle_timeout(now);
        }
        if now >= self.next_save {
            self.save(now);
        }
    }

    /// Routes the machine's events to the lookups waiting for them.
    pub(super) fn route_events(&mut self) {
        while let Some(event) = self.dht.poll_event() {
            match event {
                DhtEvent::Peers { lookup, peers, .. } => {
                    if let Some(reply) = self.lookups.get(&lookup) {
                        let _ = reply.try_send(LookupReply::Peers(peers));
                    }
                }
                DhtEvent::LookupDone {
                    lookup, answered, ..
                } => {
                    if let Some(reply) = self.lookups.remove(&lookup) {
                        let _ = reply.try_send(LookupReply::Done { answered });
                    }
                }
                DhtEvent::AnnounceDone { lookup, stored, .. } => {
                    tracing::debug!(stored, "DHT announce done");
                    if let Some(reply) = self.lookups.remove(&lookup) {
                        let _ = reply.try_send(LookupReply::Done { answered: stored });
                    }
                }
                DhtEvent::Bootstrapped { nodes } => tracing::debug!(nodes, "DHT bootstrapped"),
            }
        }
    }

    /// Waits for a command or a resolved bootstrap address.
    pub(super) async fn next_input(&mut self) -> DhtInput {
        tokio::select! {
            cmd = self.commands.recv() => DhtInput::Command(cmd),
            addr = self.resolved.recv(), if self.resolving => DhtInput::Resolved(addr),
        }
    }

    /// Carries out an input; returns `false` once the node stopped.
    pub(super) fn handle_input(&mut self, input: DhtInput) -> bool {
        let now = Instant::now();
        match input {
            DhtInput::Resolved(Some(addr)) => {
                self.dht.add_bootstrap_node(addr);
                self.dht.bootstrap(now);
            }
            DhtInput::Resolved(None) => self.resolving = false,
            DhtInput::Command(Some(Command::Lookup {
                info_hash,
                announce,
                reply,
            })) => {
                if self.lookups.len() >= MAX_LOOKUPS {
                    let _ = reply.try_send(LookupReply::Done { answered: 0 });
                    return true;
                }
                let id = match announce {
                    Some(port) => self.dht.announce(now, info_hash, AnnouncePort::Port(port)),
                    None => self.dht.get_peers(now, info_hash),
                };
                self.lookups.insert(id, reply);
            }
            DhtInput::Command(Some(Command::Shutdown(done))) => {
                self.save(now);
                self.stopped = Some(done);
                return false;
            }
            DhtInput::Command(None) => {
                self.save(now);
                return false;
            }
        }
        true
    }

    /// Tells whoever asked for the shutdown that it is done.
    pub(super) fn finish(&mut self) {
        if let Some(done) = self.stopped.take() {
            let _ = done.send(());
        }
    }

    fn save(&mut self, now: Instant) {
        if let Some(path) = &self.state_file {
            write_state(path, &self.dht.save_state(now));
        }
        self.next_save = now + SAVE_INTERVAL;
    }
}
