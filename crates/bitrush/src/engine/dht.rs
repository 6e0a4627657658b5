//! The process's DHT node: one UDP socket on the peer listener's port number driving one core
//! [`Dht`], shared by every torrent through a cloneable [`DhtHandle`].
//!
//! The task reads datagrams into the machine, sends what it queues, runs its timers, and routes
//! the peers a lookup finds to whoever asked. The routing table is loaded from the state file at
//! start and saved (atomically) every few minutes and at shutdown, so the next run needs no
//! bootstrap. Bootstrap host names are resolved in the background with a timeout.
//!
//! Invariants: every lookup ends (the machine ends each one); at most [`MAX_LOOKUPS`] requests
//! wait for an answer; a datagram longer than [`MAX_DATAGRAM`] is cut (KRPC messages are far
//! smaller); nothing here blocks the runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
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
/// Largest datagram read.
const MAX_DATAGRAM: usize = 4096;
/// Lookups waiting for an answer at once (more are answered "done" at once).
pub const MAX_LOOKUPS: usize = 64;
/// How often the routing table is saved while running.
const SAVE_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How long resolving one bootstrap name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start the node.
#[derive(Clone, Debug)]
pub struct DhtOptions {
    /// UDP port (the peer listener's; 0: any).
    pub port: u16,
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

enum Command {
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

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the DHT's UDP socket on port {port}")]
pub struct DhtStartError {
    port: u16,
    source: std::io::Error,
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

/// Starts the node: binds `0.0.0.0:port` (the given port, or any if it is taken for UDP),
/// loads the saved routing table, and begins bootstrapping.
pub async fn start(opts: DhtOptions) -> Result<DhtHandle, DhtStartError> {
    let socket = match UdpSocket::bind(("0.0.0.0", opts.port)).await {
        Ok(s) => s,
        Err(e) if opts.port != 0 => {
            tracing::warn!(port = opts.port, error = %e, "DHT port taken for UDP; using another");
            UdpSocket::bind(("0.0.0.0", 0))
                .await
                .map_err(|source| DhtStartError { port: 0, source })?
        }
        Err(source) => return Err(DhtStartError { port: 0, source }),
    };
    let port = socket.local_addr().map_or(opts.port, |a| a.port());
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
    drop(resolved_tx);
    let node = Node {
        dht,
        socket,
        commands: rx,
        resolved: resolved_rx,
        lookups: HashMap::new(),
        state_file: opts.state_file,
        next_save: now + SAVE_INTERVAL,
    };
    tokio::spawn(node.run());
    Ok(DhtHandle { tx, port })
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

struct Node {
    dht: Dht,
    socket: UdpSocket,
    commands: mpsc::Receiver<Command>,
    resolved: mpsc::Receiver<SocketAddr>,
    lookups: HashMap<LookupId, mpsc::Sender<LookupReply>>,
    state_file: Option<PathBuf>,
    next_save: Instant,
}

impl Node {
    async fn flush(&mut self) {
        while let Some((to, bytes)) = self.dht.poll_transmit() {
            if let Err(e) = self.socket.send_to(&bytes, to).await {
                // An unreachable node is the DHT's everyday business: it times out.
                tracing::trace!(%to, error = %e, "DHT send failed");
            }
        }
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

    fn save(&mut self, now: Instant) {
        if let Some(path) = &self.state_file {
            write_state(path, &self.dht.save_state(now));
        }
        self.next_save = now + SAVE_INTERVAL;
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut resolving = true;
        loop {
            let now = Instant::now();
            if self.dht.poll_timeout().is_some_and(|t| t <= now) {
                self.dht.handle_timeout(now);
            }
            if now >= self.next_save {
                self.save(now);
            }
            self.flush().await;
            let deadline = self
                .dht
                .poll_timeout()
                .map_or(self.next_save, |t| t.min(self.next_save));
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        self.dht.handle_datagram(Instant::now(), from, buf.get(..n).unwrap_or(&buf));
                    }
                }
                addr = self.resolved.recv(), if resolving => match addr {
                    Some(addr) => {
                        self.dht.add_bootstrap_node(addr);
                        self.dht.bootstrap(Instant::now());
                    }
                    None => resolving = false,
                },
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Lookup { info_hash, announce, reply }) => {
                        if self.lookups.len() >= MAX_LOOKUPS {
                            let _ = reply.try_send(LookupReply::Done { answered: 0 });
                            continue;
                        }
                        let now = Instant::now();
                        let id = match announce {
                            Some(port) => self.dht.announce(now, info_hash, AnnouncePort::Port(port)),
                            None => self.dht.get_peers(now, info_hash),
                        };
                        self.lookups.insert(id, reply);
                    }
                    Some(Command::Shutdown(done)) => {
                        self.save(Instant::now());
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.save(Instant::now());
                        return;
                    }
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
        }
    }
}
