//! Interop of bitrush's DHT node with libtorrent's, on 127.0.0.1: five libtorrent sessions
//! (`tests/support/lt_dht.py`) form a DHT; our node, driven here over a plain `UdpSocket`,
//! bootstraps from one of them, finds the peer another one announced, and announces itself so
//! that a libtorrent `dht_get_peers` finds it.
//!
//! The driver is the sans-IO convention in its simplest form: send what `poll_transmit` gives,
//! receive with a read timeout no later than `poll_timeout`, call `handle_timeout` when due.
//! Every wait is bounded; the helper exits when its stdin closes (when this test ends, however
//! it ends).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bitrush_core::dht::{AnnouncePort, Dht, DhtConfig, DhtEvent, LookupId};
use bitrush_core::types::{to_hex, InfoHash};

const PYTHON: &str = "/usr/bin/python3";
const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lt_dht.py");
/// libtorrent nodes in the test DHT.
const LT_NODES: usize = 5;
/// Longest any phase may take; the test never waits longer than a few of these.
const PHASE: Duration = Duration::from_secs(45);

/// The libtorrent DHT: the helper process and its output lines.
struct LtDht {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    ports: Vec<u16>,
}

impl LtDht {
    fn start(n: usize) -> LtDht {
        let mut child = Command::new(PYTHON)
            .arg(HELPER)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON} {HELPER}: {e} (needs python3-libtorrent)")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lt = LtDht {
            child,
            stdin,
            lines,
            ports: Vec::new(),
        };
        let ready = lt
            .lines
            .recv_timeout(PHASE)
            .unwrap_or_else(|e| panic!("libtorrent DHT not ready: {e}"));
        let ports = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected helper output: {ready}"));
        lt.ports = ports.split(' ').map(|p| p.parse().expect("port")).collect();
        assert_eq!(lt.ports.len(), n);
        lt
    }

    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("helper stdin");
        writeln!(stdin, "{command}").expect("write to the helper");
        stdin.flush().expect("flush the helper's stdin");
    }
}

impl Drop for LtDht {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our DHT node on its own UDP socket, and the events it produced.
struct Node {
    dht: Dht,
    socket: UdpSocket,
    events: Vec<DhtEvent>,
}

impl Node {
    fn new(seed: u64) -> Node {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        Node {
            dht: Dht::new(Instant::now(), seed, DhtConfig::default()),
            socket,
            events: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    /// One round of the driving loop: send, wait for a datagram (at most until the next
    /// deadline or 50 ms), handle it, handle the timeout if due.
    fn turn(&mut self) {
        while let Some((to, bytes)) = self.dht.poll_transmit() {
            // Loopback sends only fail if the peer is gone: the DHT copes with the silence.
            let _ = self.socket.send_to(&bytes, to);
        }
        self.events
            .extend(std::iter::from_fn(|| self.dht.poll_event()));
        let now = Instant::now();
        let wait = self
            .dht
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        self.socket
            .set_read_timeout(Some(wait))
            .expect("set read timeout");
        let mut buf = [0u8; 65536];
        match self.socket.recv_from(&mut buf) {
            Ok((n, from)) => self.dht.handle_datagram(Instant::now(), from, &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // An ICMP "port unreachable" from a previous send: nothing to read.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => panic!("recv_from: {e}"),
        }
        let now = Instant::now();
        if self.dht.poll_timeout().is_some_and(|t| t <= now) {
            self.dht.handle_timeout(now);
        }
        while let Some((to, bytes)) = self.dht.poll_transmit() {
            let _ = self.socket.send_to(&bytes, to);
        }
        self.events
            .extend(std::iter::from_fn(|| self.dht.poll_event()));
    }

    /// Drives the node until `done` returns something or `limit` passes.
    fn drive_until<T>(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Node) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.turn();
            if let Some(t) = done(self) {
                return Some(t);
            }
        }
        None
    }

    /// Runs lookup `lookup` to its end; returns every peer it reported and its end event.
    fn finish_lookup(&mut self, lookup: LookupId) -> (Vec<SocketAddr>, DhtEvent) {
        let mut peers = Vec::new();
        let end = self.drive_until(PHASE, |node| {
            let mut end = None;
            for e in node.events.drain(..) {
                match e {
                    DhtEvent::Peers {
                        lookup: l,
                        peers: p,
                        ..
                    } if l == lookup => peers.extend(p),
                    DhtEvent::LookupDone { lookup: l, .. }
                    | DhtEvent::AnnounceDone { lookup: l, .. }
                        if l == lookup =>
                    {
                        end = Some(e)
                    }
                    _ => {}
                }
            }
            end
        });
        (
            peers,
            end.unwrap_or_else(|| panic!("lookup {lookup:?} did not end")),
        )
    }
}

#[test]
fn dht_interop_with_libtorrent() {
    let mut lt = LtDht::start(LT_NODES);
    let mut node = Node::new(0x0b17_5eed);

    // Bootstrap from one libtorrent node: the others are learned from its answers.
    node.dht.add_bootstrap_node(lt.addr(1));
    node.dht.bootstrap(Instant::now());
    let nodes = node
        .drive_until(PHASE, |n| {
            n.events.drain(..).find_map(|e| match e {
                DhtEvent::Bootstrapped { nodes } => Some(nodes),
                _ => None,
            })
        })
        .expect("bootstrap never ended");
    assert_eq!(
        nodes, LT_NODES,
        "every libtorrent node should answer and enter our table"
    );

    // A libtorrent node joins a swarm and announces it; our get_peers must find it.
    let wanted = InfoHash([0xa1; 20]);
    lt.send(&format!("add_torrent 0 {}", to_hex(&wanted.0)));
    let announcer = lt.addr(0);
    let start = Instant::now();
    loop {
        let lookup = node.dht.get_peers(Instant::now(), wanted);
        let (peers, end) = node.finish_lookup(lookup);
        let DhtEvent::LookupDone { answered, .. } = end else {
            panic!("unexpected end {end:?}");
        };
        assert!(
            answered >= LT_NODES - 1,
            "only {answered} libtorrent nodes answered get_peers"
        );
        if peers.contains(&announcer) {
            break;
        }
        assert!(
            start.elapsed() < PHASE,
            "libtorrent's announce of {announcer} never found (last: {peers:?})"
        );
        node.drive_until(Duration::from_secs(1), |_| None::<()>);
    }

    // We announce (implied port: our DHT port); a libtorrent node's dht_get_peers must find us.
    let ours = InfoHash([0xb2; 20]);
    let hex = to_hex(&ours.0);
    let lookup = node
        .dht
        .announce(Instant::now(), ours, AnnouncePort::Implied);
    let (_, end) = node.finish_lookup(lookup);
    let DhtEvent::AnnounceDone { stored, .. } = end else {
        panic!("unexpected end {end:?}");
    };
    assert!(
        stored >= LT_NODES - 1,
        "only {stored} libtorrent nodes accepted our announce (tokens?)"
    );
    let me = format!("{}", node.addr());
    let start = Instant::now();
    let found = loop {
        lt.send(&format!("get_peers {} {hex}", LT_NODES - 1));
        let found = node.drive_until(Duration::from_secs(3), |_| {
            while let Ok(line) = lt.lines.try_recv() {
                let mut words = line.split(' ');
                if words.next() == Some("PEERS")
                    && words.next() == Some(hex.as_str())
                    && words.any(|p| p == me)
                {
                    return Some(line);
                }
            }
            None
        });
        if let Some(line) = found {
            break line;
        }
        assert!(
            start.elapsed() < PHASE,
            "libtorrent never found our announce of {me}"
        );
    };
    assert!(found.contains(&me));
}
