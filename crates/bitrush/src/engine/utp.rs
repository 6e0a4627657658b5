//! uTP connections as tokio streams: [`UtpStream`] reads and writes one connection of the
//! process's [`UtpSocket`], which the UDP endpoint task ([`super::udp`]) drives.
//!
//! The socket lives under a mutex shared by the streams and the endpoint: a stream's
//! `poll_read`/`poll_write` move bytes in or out of the connection's buffers and, when there are
//! none, leave a waker that the endpoint wakes on the connection's `Readable`/`Writable`/
//! `Closed` event. After a write, a close or a read that reopens the window, the stream kicks
//! the endpoint so it sends what the socket queued.
//!
//! Invariants: a connection's entry exists from `connect`/accept until its stream is dropped;
//! a dropped stream closes its connection gracefully (FIN after the queued data).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::utp::{CloseReason, ConnectionId, UtpError, UtpSocket};

/// Why a uTP connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UtpConnectError {
    #[error("no uTP connection could be opened")]
    Socket(#[source] UtpError),
    #[error("the uTP handshake with {addr} failed ({reason:?})")]
    Closed {
        addr: SocketAddr,
        reason: CloseReason,
    },
    #[error("the uTP endpoint is gone")]
    EndpointGone,
}

/// What a connection's stream waits for.
#[derive(Default)]
pub(super) struct Waiters {
    read: Option<Waker>,
    write: Option<Waker>,
    /// Told once the handshake of a connection we opened is over.
    connected: Option<oneshot::Sender<Result<(), CloseReason>>>,
    /// Why the connection ended, once it did.
    pub(super) closed: Option<CloseReason>,
}

/// The socket and its connections' waiters.
pub(super) struct UtpState {
    pub(super) socket: UtpSocket,
    pub(super) conns: HashMap<ConnectionId, Waiters>,
}

/// State shared by the endpoint task and the streams.
pub(super) struct UtpShared {
    pub(super) state: Mutex<UtpState>,
    /// Wakes the endpoint task to send what the socket queued.
    pub(super) kick: Notify,
}

impl UtpShared {
    pub(super) fn lock(&self) -> MutexGuard<'_, UtpState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl UtpState {
    /// The connection became readable: wake its reader.
    pub(super) fn readable(&mut self, conn: ConnectionId) {
        if let Some(w) = self.conns.get_mut(&conn).and_then(|w| w.read.take()) {
            w.wake();
        }
    }

    /// The connection has room to write again: wake its writer.
    pub(super) fn writable(&mut self, conn: ConnectionId) {
        if let Some(w) = self.conns.get_mut(&conn).and_then(|w| w.write.take()) {
            w.wake();
        }
    }

    /// The handshake of a connection we opened finished.
    pub(super) fn connected(&mut self, conn: ConnectionId) {
        if let Some(tx) = self.conns.get_mut(&conn).and_then(|w| w.connected.take()) {
            let _ = tx.send(Ok(()));
        }
    }

    /// The connection ended: everyone waiting on it is told.
    pub(super) fn closed(&mut self, conn: ConnectionId, reason: CloseReason) {
        if let Some(w) = self.conns.get_mut(&conn) {
            w.closed = Some(reason);
            if let Some(tx) = w.connected.take() {
                let _ = tx.send(Err(reason));
            }
            for waker in [w.read.take(), w.write.take()].into_iter().flatten() {
                waker.wake();
            }
        }
    }
}

/// A handle on the process's uTP socket: dial out, and take incoming connections.
#[derive(Clone)]
pub struct UtpHandle {
    pub(super) shared: Arc<UtpShared>,
    pub(super) incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<(UtpStream, SocketAddr)>>>,
}

impl std::fmt::Debug for UtpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UtpHandle")
    }
}

impl UtpHandle {
    /// Opens a uTP connection to `addr` and waits for its handshake (bounded by the socket's
    /// connect timeout).
    pub async fn connect(&self, addr: SocketAddr) -> Result<UtpStream, UtpConnectError> {
        let (tx, rx) = oneshot::channel();
        let conn = {
            let mut st = self.shared.lock();
            let conn = st
                .socket
                .connect(Instant::now(), addr)
                .map_err(UtpConnectError::Socket)?;
            st.conns.insert(
                conn,
                Waiters {
                    connected: Some(tx),
                    ..Waiters::default()
                },
            );
            conn
        };
        self.shared.kick.notify_one();
        let stream = UtpStream {
            shared: self.shared.clone(),
            conn,
        };
        match rx.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(reason)) => Err(UtpConnectError::Closed { addr, reason }),
            Err(_) => Err(UtpConnectError::EndpointGone),
        }
    }

    /// The next incoming connection, or `None` once the endpoint is gone.
    pub async fn accept(&self) -> Option<(UtpStream, SocketAddr)> {
        self.incoming.lock().await.recv().await
    }
}

/// One uTP connection as a byte stream.
pub struct UtpStream {
    shared: Arc<UtpShared>,
    conn: ConnectionId,
}

impl UtpStream {
    /// A stream for a connection the endpoint accepted (its waiters are registered).
    pub(super) fn accepted(shared: Arc<UtpShared>, conn: ConnectionId) -> UtpStream {
        UtpStream { shared, conn }
    }
}

fn closed_error(reason: CloseReason) -> io::Error {
    let kind = match reason {
        CloseReason::PeerClosed => io::ErrorKind::BrokenPipe,
        CloseReason::Reset => io::ErrorKind::ConnectionReset,
        CloseReason::ConnectTimeout | CloseReason::TimedOut | CloseReason::IdleTimeout => {
            io::ErrorKind::TimedOut
        }
    };
    io::Error::new(kind, format!("uTP connection closed ({reason:?})"))
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        // Initialise only what can be filled: a fresh buffer's whole spare capacity (often
        // 64 KiB or more) would otherwise be zeroed on every read, under the endpoint's lock.
        let want = st.socket.readable_len(this.conn).min(buf.remaining());
        let n = st.socket.read(this.conn, buf.initialize_unfilled_to(want));
        if n > 0 {
            buf.advance(n);
            drop(st);
            // Reading frees window: the next ack tells the peer.
            this.shared.kick.notify_one();
            return Poll::Ready(Ok(()));
        }
        let Some(w) = st.conns.get_mut(&this.conn) else {
            return Poll::Ready(Ok(()));
        };
        match w.closed {
            // The peer finished sending and everything was read: end of stream.
            Some(CloseReason::PeerClosed) => Poll::Ready(Ok(())),
            Some(reason) => Poll::Ready(Err(closed_error(reason))),
            None => {
                w.read = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if let Some(reason) = st.conns.get(&this.conn).and_then(|w| w.closed) {
            return Poll::Ready(Err(closed_error(reason)));
        }
        let n = st.socket.write(this.conn, data);
        if n > 0 {
            drop(st);
            this.shared.kick.notify_one();
            return Poll::Ready(Ok(n));
        }
        match st.conns.get_mut(&this.conn) {
            Some(w) => {
                w.write = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the connection's send buffer; the endpoint sends them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shared.lock().socket.close(this.conn);
        this.shared.kick.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.socket.close(self.conn);
        st.conns.remove(&self.conn);
        drop(st);
        self.shared.kick.notify_one();
    }
}
