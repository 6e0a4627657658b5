//! Message Stream Encryption against real clients: our `MseInitiator` connects to a libtorrent
//! seeder and to an aria2 seeder that both insist on RC4, completes MSE, sends the BitTorrent
//! handshake inside it and downloads one block; a libtorrent session with forced encryption
//! (told to connect to us) and an aria2 downloader requiring RC4 (which finds us through
//! opentracker) connect to our `MseResponder`. A tiny blocking driver (std `TcpStream` with
//! timeouts) stands in for the engine, which these tests do not touch.
//!
//! Needs `/usr/bin/python3` with `libtorrent` (Debian's python3-libtorrent), `aria2c` and
//! `opentracker`. Every helper exits when its test ends (the Python ones and the tethered
//! opentracker when their stdin closes, aria2 through `--stop-with-process`, all of them killed
//! on drop), and every wait has a deadline. `BITRUSH_LT_PEER_LOG=1` makes the libtorrent helper
//! print its peer log, which says why libtorrent closed a connection.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitrush::create::create_torrent;
use bitrush_core::metainfo::Metainfo;
use bitrush_core::mse::{
    is_plaintext_handshake, CryptoMethod, Encryption, Established, MseEvent, MseHandshake,
    MseInitiator, MseResponder, StreamCipher,
};
use bitrush_core::types::{InfoHash, PeerId};
use bitrush_core::wire::Handshake;
use rand::rngs::StdRng;
use rand::SeedableRng;

const PYTHON: &str = "/usr/bin/python3";
/// The longest any single step may take (helper start-up, a handshake, a message).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const PIECE_LENGTH: u32 = 256 * 1024;
const BLOCK: usize = 16 * 1024;

/// A file and its torrent (no tracker) in a temporary folder.
struct Fixture {
    dir: tempfile::TempDir,
    torrent: PathBuf,
    info_hash: InfoHash,
    pieces: u32,
    data: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let data: Vec<u8> = (0..PIECE_LENGTH as usize * 3 + 12345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let file = dir.path().join("seed").join("payload.bin");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &data).unwrap();
        let bytes = create_torrent(&file, PIECE_LENGTH, None).expect("create torrent");
        let meta = Metainfo::from_bytes(&bytes).expect("parse torrent");
        let torrent = dir.path().join("payload.torrent");
        std::fs::write(&torrent, &bytes).unwrap();
        Fixture {
            torrent,
            info_hash: meta.info_hash,
            pieces: meta.info.piece_count(),
            data,
            dir,
        }
    }

    /// The same torrent with `announce` as its tracker (the info hash does not change).
    fn torrent_with_tracker(&self, announce: &str) -> PathBuf {
        let bytes = create_torrent(
            &self.seed_dir().join("payload.bin"),
            PIECE_LENGTH,
            Some(announce),
        )
        .expect("create torrent");
        let meta = Metainfo::from_bytes(&bytes).expect("parse torrent");
        assert_eq!(meta.info_hash, self.info_hash);
        let path = self.dir.path().join("tracked.torrent");
        std::fs::write(&path, &bytes).unwrap();
        path
    }

    fn seed_dir(&self) -> PathBuf {
        self.dir.path().join("seed")
    }

    fn empty_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

/// A helper process, ended and reaped on drop.
struct Helper {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
    /// It exits by itself when its stdin closes.
    exits_with_stdin: bool,
}

impl Helper {
    fn spawn(name: &'static str, cmd: &mut Command, exits_with_stdin: bool) -> Helper {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper {
            name,
            child,
            lines,
            exits_with_stdin,
        }
    }

    fn libtorrent(fixture: &Fixture, save_dir: &Path, extra: &[&str]) -> Helper {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/lt_mse_peer.py");
        Helper::spawn(
            "lt_mse_peer.py",
            Command::new(PYTHON)
                .arg(script)
                .arg(save_dir)
                .arg(&fixture.torrent)
                .args(extra),
            true,
        )
    }

    /// The port of the libtorrent helper's `READY <port> <state>` line, whose state must be
    /// one in which libtorrent attaches incoming peers: a peer that connects earlier (while the
    /// resume data is checked) completes MSE and is then dropped with "torrent is not ready to
    /// accept peers", which looks like an MSE failure.
    fn ready_port(&self) -> u16 {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("READY ") => break line,
                Ok(_) => {}
                Err(e) => panic!("{} never became ready: {e}", self.name),
            }
        };
        let mut words = line.split_whitespace().skip(1);
        let port = words.next().and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("no port in {line:?}"));
        let state = words.next().unwrap_or_default();
        assert!(
            ["downloading", "finished", "seeding"].contains(&state),
            "{} said {line:?}: its torrent does not accept peers yet",
            self.name
        );
        port
    }
}

impl Drop for Helper {
    /// Closes stdin, which ends the Python helpers (and makes the tether end what it runs),
    /// then kills whatever is still running (after a grace period for those helpers).
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let grace = if self.exits_with_stdin { 5 } else { 0 };
        let deadline = Instant::now() + Duration::from_secs(grace);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an MSE machine over `stream` until it reports; sends what it queued with the outcome.
fn drive(m: &mut MseHandshake, stream: &mut TcpStream) -> Established {
    match try_drive(m, stream) {
        Ok(est) => est,
        Err(e) => panic!("{e}"),
    }
}

/// Drives `m` over `stream` until it is established; a failed handshake panics, while a
/// connection the peer closed or reset is returned as an error (a peer that listens before
/// it knows its torrent does that, and the caller may dial again).
fn try_drive(m: &mut MseHandshake, stream: &mut TcpStream) -> Result<Established, String> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(bytes) = m.poll_transmit() {
            stream
                .write_all(&bytes)
                .map_err(|e| format!("send handshake bytes: {e}"))?;
        }
        match m.poll_event() {
            Some(MseEvent::Established(est)) => {
                while let Some(bytes) = m.poll_transmit() {
                    stream
                        .write_all(&bytes)
                        .map_err(|e| format!("send handshake bytes: {e}"))?;
                }
                return Ok(*est);
            }
            Some(MseEvent::Failed(e)) => panic!("MSE handshake failed: {e}"),
            None => {}
        }
        let now = Instant::now();
        let deadline = m
            .poll_timeout()
            .expect("a running handshake has a deadline");
        let wait = deadline
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(1), Duration::from_millis(200));
        stream.set_read_timeout(Some(wait)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Err("peer closed the connection during MSE".into()),
            Ok(n) => m.handle_input(Instant::now(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                m.handle_timeout(Instant::now())
            }
            Err(e) => return Err(format!("read during MSE: {e}")),
        }
    }
}

/// The connection after MSE: everything passes through the established ciphers.
struct Peer {
    stream: TcpStream,
    send: StreamCipher,
    recv: StreamCipher,
    /// Decrypted bytes not consumed yet.
    pending: Vec<u8>,
}

impl Peer {
    fn new(stream: TcpStream, est: Established) -> Peer {
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        Peer {
            stream,
            send: est.send_cipher,
            recv: est.recv_cipher,
            pending: est.received,
        }
    }

    fn write(&mut self, data: &[u8]) {
        let mut wire = data.to_vec();
        self.send.apply(&mut wire);
        self.stream.write_all(&wire).expect("send");
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = [0u8; 16 * 1024];
        while self.pending.len() < n {
            let got = self.stream.read(&mut buf).expect("read from peer");
            assert!(got > 0, "peer closed the connection");
            let start = self.pending.len();
            self.pending.extend_from_slice(&buf[..got]);
            self.recv.apply(&mut self.pending[start..]);
        }
        self.pending.drain(..n).collect()
    }

    fn read_handshake(&mut self) -> Handshake {
        let bytes: [u8; 68] = self.read_exact(68).try_into().unwrap();
        Handshake::decode(&bytes).expect("peer's BitTorrent handshake")
    }

    /// The next message (id, payload), skipping keep-alives.
    fn read_message(&mut self) -> (u8, Vec<u8>) {
        loop {
            let len = u32::from_be_bytes(self.read_exact(4).try_into().unwrap()) as usize;
            assert!(len <= BLOCK + 13, "message of {len} bytes");
            if len > 0 {
                let body = self.read_exact(len);
                return (body[0], body[1..].to_vec());
            }
        }
    }

    /// Skips messages until one with `id`.
    fn read_until(&mut self, id: u8) -> Vec<u8> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while Instant::now() < deadline {
            let (got, payload) = self.read_message();
            if got == id {
                return payload;
            }
        }
        panic!("no message {id} in time");
    }

    fn send_message(&mut self, id: u8, payload: &[u8]) {
        let mut msg = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        msg.push(id);
        msg.extend_from_slice(payload);
        self.write(&msg);
    }
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            // aria2 may not listen yet.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot connect to 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Our initiator against a seeder on `port`: MSE with RC4 required, the BitTorrent handshake
/// as initial payload, the peer's handshake and bitfield, then block 0 checked against the file.
fn download_one_block(fixture: &Fixture, port: u16, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ours = Handshake::new(fixture.info_hash, PeerId::generate(&mut rng));
    // aria2 listens before it has loaded its torrent and closes connections for it until
    // then: dial again on a closed connection, within the step's time.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let (stream, est) = loop {
        let mut stream = connect(port);
        let init = MseInitiator::new(
            Instant::now(),
            fixture.info_hash,
            &ours.encode(),
            Encryption::Require,
            &mut rng,
        )
        .expect("initiator")
        .with_timeout(STEP_TIMEOUT);
        match try_drive(&mut MseHandshake::Initiator(init), &mut stream) {
            Ok(est) => break (stream, est),
            Err(e) if Instant::now() < deadline => {
                eprintln!("{e}; dialling again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(est.method, CryptoMethod::Rc4);
    assert_eq!(est.info_hash, fixture.info_hash);
    let mut peer = Peer::new(stream, est);

    let theirs = peer.read_handshake();
    assert_eq!(theirs.info_hash, fixture.info_hash);
    let bitfield = peer.read_until(5);
    assert_eq!(bitfield.len(), fixture.pieces.div_ceil(8) as usize);
    for piece in 0..fixture.pieces {
        let bit = bitfield[(piece / 8) as usize] & (0x80 >> (piece % 8));
        assert_ne!(bit, 0, "the seeder lacks piece {piece}");
    }

    peer.send_message(2, &[]); // interested
    peer.read_until(1); // unchoke
    let mut request = Vec::new();
    for field in [0u32, 0, BLOCK as u32] {
        request.extend_from_slice(&field.to_be_bytes());
    }
    peer.send_message(6, &request);
    let piece = peer.read_until(7);
    assert_eq!(&piece[..8], &[0u8; 8], "piece 0, offset 0");
    assert!(
        piece[8..] == fixture.data[..BLOCK],
        "block 0 differs from the file"
    );
}

#[test]
fn initiator_downloads_a_block_from_libtorrent_with_forced_rc4() {
    let fixture = Fixture::new();
    let lt = Helper::libtorrent(&fixture, &fixture.seed_dir(), &["--seed"]);
    download_one_block(&fixture, lt.ready_port(), 1);
}

#[test]
fn responder_accepts_libtorrent_with_forced_rc4() {
    let fixture = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let leech_dir = fixture.empty_dir("leech");
    let lt = Helper::libtorrent(&fixture, &leech_dir, &["--connect", &port.to_string()]);
    lt.ready_port();

    let (mut peer, theirs, ia_len) = accept_mse(&listener, fixture.info_hash, 2);
    assert_eq!(
        ia_len, 68,
        "libtorrent sends its handshake as the initial payload"
    );
    assert!(theirs.supports_extensions());
    let mut rng = StdRng::seed_from_u64(2);
    peer.write(&Handshake::new(fixture.info_hash, PeerId::generate(&mut rng)).encode());
    expect_extension_handshake(&mut peer);
    drop(lt);
}

/// Accepts one connection on `listener`, tells MSE from a plain handshake as an engine would,
/// runs our responder (serving `info_hash` and another torrent, RC4 required) and reads the
/// peer's BitTorrent handshake, from the initial payload or from the stream after it. Also
/// returns the initial payload's length.
fn accept_mse(listener: &TcpListener, info_hash: InfoHash, seed: u64) -> (Peer, Handshake, usize) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("the peer never connected: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();

    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while is_plaintext_handshake(&first).is_none() {
        let n = stream.read(&mut buf).expect("first bytes");
        assert!(n > 0, "the peer closed the connection");
        first.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        is_plaintext_handshake(&first),
        Some(false),
        "a plain handshake"
    );

    let mut rng = StdRng::seed_from_u64(seed);
    let mut resp = MseResponder::new(
        Instant::now(),
        &[InfoHash([0x77; 20]), info_hash],
        Encryption::Require,
        &mut rng,
    )
    .expect("responder")
    .with_timeout(STEP_TIMEOUT);
    resp.handle_input(Instant::now(), &first);
    let mut est = drive(&mut MseHandshake::Responder(resp), &mut stream);
    assert_eq!(est.method, CryptoMethod::Rc4);
    assert_eq!(est.info_hash, info_hash);

    // The initial payload comes first in the peer's stream.
    let ia_len = est.initial_payload.len();
    let mut stream_bytes = std::mem::take(&mut est.initial_payload);
    stream_bytes.append(&mut est.received);
    est.received = stream_bytes;
    let mut peer = Peer::new(stream, est);
    let theirs = peer.read_handshake();
    assert_eq!(theirs.info_hash, info_hash);
    (peer, theirs, ia_len)
}

/// The peer's extension handshake arrives through the cipher as a bencoded dictionary.
fn expect_extension_handshake(peer: &mut Peer) {
    let ext = peer.read_until(20);
    assert_eq!(ext[0], 0, "extension handshake id");
    assert_eq!(ext.get(1), Some(&b'd'));
    assert_eq!(ext.last(), Some(&b'e'));
}

#[test]
fn initiator_downloads_a_block_from_aria2_with_required_rc4() {
    let fixture = Fixture::new();
    // aria2 takes a port, not 0: take a free one and hand it over.
    let port = free_port();
    let _aria2 = aria2(
        &fixture.seed_dir(),
        &fixture.torrent,
        port,
        &[
            "--seed-time=5",
            "--seed-ratio=0.0",
            "--bt-seed-unverified=true",
        ],
    );
    download_one_block(&fixture, port, 3);
}

/// opentracker on a free loopback port, answering only `info_hash`; killed on drop (and by
/// the project's tether script if the test process dies).
struct Tracker {
    _proc: Helper,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Tracker {
    fn start(info_hash: InfoHash) -> Tracker {
        use std::os::unix::fs::PermissionsExt;
        // opentracker chroots and drops to `nobody`: its folder must be world-readable.
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let whitelist = dir.path().join("whitelist.txt");
        std::fs::write(&whitelist, format!("{}\n", hex(&info_hash.0))).unwrap();
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
        let tether = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/tether.py");
        let port = free_port();
        let proc = Helper::spawn(
            "opentracker",
            Command::new(PYTHON)
                .arg(tether)
                .args(["opentracker", "-i", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-P")
                .arg(port.to_string())
                .arg("-w")
                .arg(&whitelist)
                .current_dir(dir.path()),
            true,
        );
        Tracker {
            _proc: proc,
            _dir: dir,
            port,
        }
    }

    fn announce_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// Announces a seeder at 127.0.0.1:`port`, retrying until the tracker answers.
    fn announce_seeder(&self, info_hash: InfoHash, port: u16) {
        let pct = |b: &[u8]| b.iter().map(|b| format!("%{b:02x}")).collect::<String>();
        let request = format!(
            "GET /announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left=0\
             &event=started&compact=1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
            pct(&info_hash.0),
            pct(b"-BR0001-msetestpeer0"),
        );
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let answer = TcpStream::connect(("127.0.0.1", self.port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(request.as_bytes())?;
                let mut body = Vec::new();
                s.read_to_end(&mut body)?;
                Ok(body)
            });
            match answer {
                Ok(body) if body.windows(8).any(|w| w == b"interval") => return,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => panic!("the tracker did not take our announce: {other:?}"),
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A port nobody listens on right now (for programs that cannot be given port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// aria2 with `args` plus the options every test here needs: no DHT, LSD or PEX, RC4 required,
/// a given listen port, and an exit when this test process ends.
fn aria2(dir: &Path, torrent: &Path, listen_port: u16, args: &[&str]) -> Helper {
    Helper::spawn(
        "aria2c",
        Command::new("aria2c")
            .arg("-d")
            .arg(dir)
            .arg(format!("--listen-port={listen_port}"))
            .arg(format!("--stop-with-process={}", std::process::id()))
            .args([
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--bt-require-crypto=true",
                "--bt-min-crypto-level=arc4",
                "--summary-interval=0",
                "--console-log-level=warn",
            ])
            .args(args)
            .arg(torrent),
        false,
    )
}

#[test]
fn responder_accepts_aria2_with_required_rc4() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let our_port = listener.local_addr().unwrap().port();
    let fixture = Fixture::new();
    let tracker = Tracker::start(fixture.info_hash);
    let torrent = fixture.torrent_with_tracker(&tracker.announce_url());
    // aria2 cannot be told to connect to a peer: it learns our address from the tracker.
    tracker.announce_seeder(fixture.info_hash, our_port);
    let leech_dir = fixture.empty_dir("leech");
    let _aria2 = aria2(&leech_dir, &torrent, free_port(), &["--seed-time=0"]);

    let (mut peer, theirs, ia_len) = accept_mse(&listener, fixture.info_hash, 4);
    // Unlike libtorrent, aria2 sends its handshake in the stream after MSE: the other path.
    assert_eq!(ia_len, 0, "aria2 1.36 sends an empty initial payload");
    assert!(theirs.supports_extensions());
    let mut rng = StdRng::seed_from_u64(4);
    peer.write(&Handshake::new(fixture.info_hash, PeerId::generate(&mut rng)).encode());
    expect_extension_handshake(&mut peer);
}
