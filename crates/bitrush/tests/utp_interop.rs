//! uTP interoperability with libtorrent 2.0 (`python3-libtorrent`), TCP disabled on its side:
//! our `UtpSocket`, driven by a tiny blocking test driver over a `std::net::UdpSocket`,
//! downloads a file from a libtorrent seeder, and serves one to a libtorrent downloader.
//!
//! The driver follows the core's convention: feed every datagram to `handle_datagram`, drain
//! `poll_transmit` after each batch, call `handle_timeout` when `poll_timeout` says, and react
//! to `poll_event`. No engine code is involved.
//!
//! Throughput over uTP is measured by `scripts/bench --scenario 1g-utp` (the whole client).

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use bitrush::create::create_torrent;
use bitrush_core::metainfo::Metainfo;
use bitrush_core::types::PeerId;
use bitrush_core::utp::packet::{Packet, PacketType};
use bitrush_core::utp::{CloseReason, ConnectionId, UtpConfig, UtpEvent, UtpSocket};
use bitrush_core::wire::handshake::{Handshake, HANDSHAKE_LEN};
use bitrush_core::wire::message::{BlockRef, Message, MessageDecoder, MAX_MESSAGE_LEN};
use bytes::BytesMut;

const PYTHON: &str = "/usr/bin/python3";
/// Upper bound for any exchange with libtorrent; only there to stop a hung test.
const DEADLINE: Duration = Duration::from_secs(120);
const BLOCK: u32 = 16 * 1024;
const PEER_ID: PeerId = PeerId(*b"-BR0001-utp-interop-");

fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/utp_peer.py")
}

/// A libtorrent helper process; killed (with its process group) when dropped.
struct Helper {
    child: Child,
    _stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Helper {
    fn start(args: &[&str]) -> Helper {
        let mut child = Command::new(PYTHON)
            .arg(helper())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start /usr/bin/python3 (python3-libtorrent is required)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            child,
            _stdin: stdin,
            lines,
        }
    }

    /// Waits for a line starting with `prefix`; returns the rest.
    fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => {
                    return line[prefix.len()..].trim().to_string()
                }
                Ok(_) => {}
                Err(e) => panic!("no `{prefix}` line from the libtorrent helper: {e}"),
            }
        }
    }

    fn try_line(&self) -> Option<String> {
        self.lines.try_recv().ok()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let pgid = -(self.child.id() as i32);
        let _ = Command::new("kill")
            .arg("-9")
            .arg("--")
            .arg(pgid.to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A payload file and its torrent in a temporary folder.
struct Fixture {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    torrent: PathBuf,
    meta: Metainfo,
    payload: Vec<u8>,
}

fn fixture(len: usize, piece_length: u32) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("seed");
    fs::create_dir(&data_dir).expect("mkdir");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ len as u64;
    let payload: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let file = data_dir.join("payload.bin");
    fs::write(&file, &payload).expect("write payload");
    let bytes = create_torrent(&file, piece_length, None).expect("create torrent");
    let torrent = dir.path().join("payload.torrent");
    fs::write(&torrent, &bytes).expect("write torrent");
    let meta = Metainfo::from_bytes(&bytes).expect("parse torrent");
    Fixture {
        _dir: dir,
        data_dir,
        torrent,
        meta,
        payload,
    }
}

/// The test driver: one UDP socket, one `UtpSocket`.
struct Driver {
    udp: UdpSocket,
    utp: UtpSocket,
    rx: Vec<u8>,
    tx: Vec<u8>,
    events: Vec<UtpEvent>,
    datagrams: u64,
    /// FIN and RESET packets received (to check the close handshake).
    fins_in: u32,
    resets_in: u32,
}

impl Driver {
    /// A driver on a fresh 127.0.0.1 socket. Its kernel receive buffer is raised as far as the
    /// system allows (as the engine should), and the total window we announce kept to half of
    /// it: a burst that overflows the buffer is lost, which costs far more than a small window.
    fn new() -> Driver {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("udp socket");
        // Capped by net.core.rmem_max; the kernel reports twice what it grants.
        let _ = sock.set_recv_buffer_size(4 << 20);
        let rcvbuf = sock.recv_buffer_size().expect("SO_RCVBUF");
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind udp");
        let config = UtpConfig {
            recv_window_total: (rcvbuf / 2).min(1 << 20),
            ..UtpConfig::default()
        };
        Driver {
            udp: sock.into(),
            utp: UtpSocket::new(Instant::now(), config, 0x5eed),
            rx: vec![0u8; 65536],
            tx: Vec::new(),
            events: Vec::new(),
            datagrams: 0,
            fins_in: 0,
            resets_in: 0,
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().expect("local addr")
    }

    fn flush(&mut self) {
        while let Some(to) = self.utp.poll_transmit(Instant::now(), &mut self.tx) {
            self.udp.send_to(&self.tx, to).expect("send_to");
        }
    }

    fn handle(&mut self, n: usize, from: SocketAddr) {
        self.datagrams += 1;
        if let Ok(p) = Packet::parse(&self.rx[..n]) {
            match p.header.packet_type {
                PacketType::Fin => self.fins_in += 1,
                PacketType::Reset => self.resets_in += 1,
                _ => {}
            }
        }
        let kind = self
            .utp
            .handle_datagram(Instant::now(), from, &self.rx[..n]);
        assert_eq!(
            kind,
            bitrush_core::utp::DatagramKind::Utp,
            "libtorrent sent a non-uTP datagram"
        );
    }

    /// Waits up to `wait` for datagrams (less if a timer is due), handles every datagram that is
    /// queued, runs the timers, sends what is due and collects the events.
    fn pump(&mut self, wait: Duration) {
        self.flush();
        let now = Instant::now();
        let until_timer = self
            .utp
            .poll_timeout()
            .map_or(wait, |t| t.saturating_duration_since(now));
        let timeout = wait.min(until_timer).max(Duration::from_micros(50));
        self.udp.set_read_timeout(Some(timeout)).expect("timeout");
        match self.udp.recv_from(&mut self.rx) {
            Ok((n, from)) => {
                self.handle(n, from);
                // Take the whole burst before answering: acks go out once per batch.
                self.udp.set_nonblocking(true).expect("nonblocking");
                for _ in 0..512 {
                    match self.udp.recv_from(&mut self.rx) {
                        Ok((n, from)) => self.handle(n, from),
                        Err(_) => break,
                    }
                }
                self.udp.set_nonblocking(false).expect("blocking");
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("recv_from: {e}"),
        }
        self.utp.handle_timeout(Instant::now());
        self.flush();
        while let Some(ev) = self.utp.poll_event() {
            if let UtpEvent::Closed { reason, .. } = ev {
                assert_eq!(reason, CloseReason::PeerClosed, "uTP connection failed");
            }
            self.events.push(ev);
        }
    }

    fn take_event(&mut self, pred: impl Fn(&UtpEvent) -> bool) -> Option<UtpEvent> {
        let i = self.events.iter().position(pred)?;
        Some(self.events.remove(i))
    }

    /// Writes all of `data`, pumping while the send buffer is full.
    fn write_all(&mut self, conn: ConnectionId, mut data: &[u8], deadline: Instant) {
        while !data.is_empty() {
            let n = self.utp.write(conn, data);
            data = &data[n..];
            if !data.is_empty() {
                assert!(Instant::now() < deadline, "write timed out");
                self.pump(Duration::from_millis(5));
            }
        }
    }

    /// Moves everything readable into `inbox`.
    fn read_into(&mut self, conn: ConnectionId, inbox: &mut BytesMut) {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let n = self.utp.read(conn, &mut buf);
            if n == 0 {
                break;
            }
            inbox.extend_from_slice(&buf[..n]);
        }
    }
}

/// Reads and checks the peer's handshake off `inbox`, pumping until it is there.
fn read_handshake(d: &mut Driver, conn: ConnectionId, inbox: &mut BytesMut, info_hash: [u8; 20]) {
    let deadline = Instant::now() + DEADLINE;
    while inbox.len() < HANDSHAKE_LEN {
        assert!(Instant::now() < deadline, "no handshake from libtorrent");
        d.pump(Duration::from_millis(20));
        d.read_into(conn, inbox);
    }
    let raw = inbox.split_to(HANDSHAKE_LEN);
    let hs =
        Handshake::decode(raw[..].try_into().expect("68 bytes")).expect("a BitTorrent handshake");
    assert_eq!(hs.info_hash.0, info_hash, "handshake for another torrent");
    assert_ne!(hs.peer_id, PEER_ID);
}

fn encode(m: &Message, out: &mut Vec<u8>) {
    let mut b = BytesMut::new();
    m.encode(&mut b);
    out.extend_from_slice(&b);
}

/// One seeder we download from.
struct Remote {
    conn: ConnectionId,
    inbox: BytesMut,
    decoder: MessageDecoder,
    unchoked: bool,
    outstanding: usize,
    /// Blocks still to request from this seeder.
    todo: VecDeque<BlockRef>,
}

/// Connects to uTP-only libtorrent seeders, all over our one UDP socket, and downloads the
/// whole torrent (piece `i` from seeder `i mod n`), keeping `pipeline` requests out per seeder.
/// Returns the bytes and the time from the first request to the last block.
fn download(
    d: &mut Driver,
    seeders: &[SocketAddr],
    fx: &Fixture,
    pipeline: usize,
) -> (Vec<u8>, Duration) {
    let deadline = Instant::now() + DEADLINE;
    let info = &fx.meta.info;
    let blocks_per_piece = info.piece_length.div_ceil(BLOCK) as usize;
    let mut remotes: Vec<Remote> = seeders
        .iter()
        .map(|addr| {
            let conn = d.utp.connect(Instant::now(), *addr).expect("connect");
            let hs = Handshake::new(fx.meta.info_hash, PEER_ID).encode();
            d.write_all(conn, &hs, deadline);
            Remote {
                conn,
                inbox: BytesMut::new(),
                decoder: MessageDecoder::new(MAX_MESSAGE_LEN),
                unchoked: false,
                outstanding: 0,
                todo: VecDeque::new(),
            }
        })
        .collect();
    let mut nblocks = 0;
    for piece in 0..info.piece_count() {
        let len = info.piece_len(piece);
        let todo = &mut remotes[piece as usize % seeders.len()].todo;
        for begin in (0..len).step_by(BLOCK as usize) {
            todo.push_back(BlockRef {
                index: piece,
                begin,
                length: BLOCK.min(len - begin),
            });
            nblocks += 1;
        }
    }
    for r in &mut remotes {
        while d
            .take_event(|e| *e == UtpEvent::Connected(r.conn))
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "uTP handshake with libtorrent timed out"
            );
            d.pump(Duration::from_millis(20));
        }
        read_handshake(d, r.conn, &mut r.inbox, fx.meta.info_hash.0);
        let mut out = Vec::new();
        encode(&Message::Interested, &mut out);
        d.write_all(r.conn, &out, deadline);
    }
    let mut file = vec![0u8; info.total_length as usize];
    let mut received = vec![false; info.piece_count() as usize * blocks_per_piece];
    let mut got = 0usize;
    let mut started = None;
    let mut out = Vec::new();
    while got < nblocks {
        assert!(
            Instant::now() < deadline,
            "download from libtorrent timed out at {got} of {nblocks} blocks"
        );
        for r in &mut remotes {
            if !r.unchoked || r.outstanding >= pipeline || r.todo.is_empty() {
                continue;
            }
            out.clear();
            while r.outstanding < pipeline {
                let Some(b) = r.todo.pop_front() else { break };
                encode(&Message::Request(b), &mut out);
                r.outstanding += 1;
            }
            started.get_or_insert_with(Instant::now);
            d.write_all(r.conn, &out, deadline);
        }
        d.pump(Duration::from_millis(10));
        for r in &mut remotes {
            d.read_into(r.conn, &mut r.inbox);
            while let Some(m) = r.decoder.decode(&mut r.inbox).expect("valid peer messages") {
                match m {
                    Message::Unchoke => r.unchoked = true,
                    Message::Choke => panic!("libtorrent choked us"),
                    Message::Piece { index, begin, data } => {
                        let i = index as usize * blocks_per_piece + (begin / BLOCK) as usize;
                        assert!(!received[i], "block {index}/{begin} twice");
                        received[i] = true;
                        let at = index as usize * info.piece_length as usize + begin as usize;
                        file[at..at + data.len()].copy_from_slice(&data);
                        got += 1;
                        r.outstanding -= 1;
                    }
                    _ => {}
                }
            }
        }
    }
    let took = started.map_or(Duration::ZERO, |s| s.elapsed());
    // Close: our FIN goes out after what we wrote; libtorrent answers with its own FIN, and
    // the connections end once the FINs are acknowledged.
    for r in &remotes {
        d.utp.close(r.conn);
    }
    while d.utp.connection_count() > 0 {
        assert!(Instant::now() < deadline, "the close handshake never ended");
        d.pump(Duration::from_millis(20));
    }
    assert_eq!(
        d.fins_in as usize,
        remotes.len(),
        "one FIN from each seeder"
    );
    assert_eq!(d.resets_in, 0);
    (file, took)
}

#[test]
fn downloads_a_file_from_a_utp_only_libtorrent_seeder() {
    let fx = fixture(5 * 1024 * 1024 + 12_345, 256 * 1024);
    let seeder = Helper::start(&[
        "seed",
        fx.data_dir.to_str().expect("utf-8 path"),
        fx.torrent.to_str().expect("utf-8 path"),
    ]);
    let port: u16 = seeder.expect_line("READY", DEADLINE).parse().expect("port");
    let mut d = Driver::new();
    let (file, _) = download(&mut d, &[SocketAddr::from(([127, 0, 0, 1], port))], &fx, 64);
    assert!(
        file == fx.payload,
        "the downloaded file differs from the seeded one"
    );
}

/// Waits for a peer to connect to the driver.
fn accept_one(d: &mut Driver) -> ConnectionId {
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "libtorrent never connected over uTP"
        );
        d.pump(Duration::from_millis(20));
        if let Some(UtpEvent::Incoming { conn, from }) =
            d.take_event(|e| matches!(e, UtpEvent::Incoming { .. }))
        {
            assert!(from.ip().is_loopback());
            return conn;
        }
    }
}

/// Serves `fx` as a seed on connection `conn` until the helper prints `DONE`.
fn seed_to(d: &mut Driver, conn: ConnectionId, fx: &Fixture, leecher: &Helper) {
    let deadline = Instant::now() + DEADLINE;
    let mut inbox = BytesMut::new();
    read_handshake(d, conn, &mut inbox, fx.meta.info_hash.0);
    let info = &fx.meta.info;
    let mut out = Handshake::new(fx.meta.info_hash, PEER_ID).encode().to_vec();
    let pieces = info.piece_count() as usize;
    let mut bitfield = vec![0u8; pieces.div_ceil(8)];
    for i in 0..pieces {
        bitfield[i / 8] |= 0x80 >> (i % 8);
    }
    encode(&Message::Bitfield(bitfield.into()), &mut out);
    encode(&Message::Unchoke, &mut out);
    d.write_all(conn, &out, deadline);
    let mut decoder = MessageDecoder::new(MAX_MESSAGE_LEN);
    let mut served = 0;
    loop {
        if let Some(line) = leecher.try_line() {
            if line == "DONE" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "libtorrent did not finish downloading from us ({served} blocks served)"
        );
        d.pump(Duration::from_millis(10));
        d.read_into(conn, &mut inbox);
        while let Some(m) = decoder.decode(&mut inbox).expect("valid peer messages") {
            if let Message::Request(b) = m {
                let at = b.index as usize * info.piece_length as usize + b.begin as usize;
                let data = fx
                    .payload
                    .get(at..at + b.length as usize)
                    .expect("request in range");
                let mut msg = BytesMut::new();
                bitrush_core::wire::message::encode_piece_header(
                    b.index,
                    b.begin,
                    data.len(),
                    &mut msg,
                );
                msg.extend_from_slice(data);
                d.write_all(conn, &msg, deadline);
                served += 1;
            }
        }
    }
    assert!(served > 0);
}

#[test]
fn a_utp_only_libtorrent_connects_to_us_and_downloads_from_our_seed() {
    let fx = fixture(700 * 1024 + 77, 64 * 1024);
    let mut d = Driver::new();
    let leech_dir = tempfile::tempdir().expect("temp dir");
    let port = d.local_addr().port().to_string();
    let leecher = Helper::start(&[
        "leech",
        leech_dir.path().to_str().expect("utf-8 path"),
        fx.torrent.to_str().expect("utf-8 path"),
        &port,
    ]);
    let conn = accept_one(&mut d);
    seed_to(&mut d, conn, &fx, &leecher);
    let got = fs::read(leech_dir.path().join("payload.bin")).expect("libtorrent wrote the file");
    assert!(got == fx.payload, "libtorrent's copy differs");
    // Two seeds have nothing to trade: libtorrent closes with a FIN, which ends our side.
    let deadline = Instant::now() + DEADLINE;
    while d
        .take_event(|e| matches!(e, UtpEvent::Closed { .. }))
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "libtorrent never closed the connection"
        );
        d.pump(Duration::from_millis(20));
    }
    assert_eq!((d.fins_in, d.resets_in), (1, 0));
}
