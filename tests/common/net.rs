//! Loopback addresses: free ports, addresses where nobody listens (refused
//! peers, dead trackers), [`SilentPeer`] that accepts connections and never
//! answers, [`DroppingPeer`] that closes each connection at once and counts
//! them, and the `listener_accessors!` macro that gives the helpers listening
//! on a port their `port()`, `addr()` and `logs()`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to :0, then
/// released). Callers that start a server on it must cope with losing a race.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `127.0.0.1:port`.
pub fn loopback_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An address on 127.0.0.1 where (a moment ago) nobody listened: connecting
/// to it is refused.
pub fn refused_addr() -> SocketAddr {
    loopback_addr(free_port())
}

/// An HTTP announce URL on 127.0.0.1 where nobody listens.
pub fn dead_http() -> String {
    format!("http://127.0.0.1:{}/announce", refused_addr().port())
}

/// A UDP announce URL on 127.0.0.1 where nobody listens.
pub fn dead_udp() -> String {
    format!("udp://127.0.0.1:{}/announce", refused_addr().port())
}

/// Gives helpers with `port` and `proc` fields their `port()`, `addr()` and
/// `logs()` accessors. For the modules of `common`: the paths in it are
/// relative to a sibling of this module.
macro_rules! listener_accessors {
    ($($ty:ty),+ $(,)?) => {$(
        impl $ty {
            /// The port it listens on (127.0.0.1).
            pub fn port(&self) -> u16 {
                self.port
            }

            /// `127.0.0.1:port()`.
            pub fn addr(&self) -> ::std::net::SocketAddr {
                super::net::loopback_addr(self.port)
            }

            /// Everything it printed so far (for failure messages).
            pub fn logs(&self) -> String {
                self.proc.logs()
            }
        }
    )+};
}

/// A peer that accepts TCP connections on 127.0.0.1 and never sends a byte
/// (it reads and discards whatever it gets). Stops its thread on drop.
pub struct SilentPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentPeer {
    pub fn start() -> SilentPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind silent peer");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut conns: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(true);
                        conns.push(s);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {}
                }
                // Drain input so the peer's writes never block; keep the
                // connection open until told to stop.
                conns.retain_mut(|c| match c.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                thread::sleep(Duration::from_millis(20));
            }
        });
        SilentPeer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A peer that accepts TCP connections on 127.0.0.1 and closes each one at
/// once, before any handshake (a peer that keeps dropping us), counting them.
/// Stops its thread on drop.
pub struct DroppingPeer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DroppingPeer {
    pub fn start() -> DroppingPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind dropping peer");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    // Dropped at once: the dialler sees its connection closed.
                    Ok(_) => {
                        accepted2.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        DroppingPeer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many connections it has accepted (and dropped) so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DroppingPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
