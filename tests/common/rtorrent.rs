//! rtorrent 0.9.8 (rakshasa's libtorrent 0.13.8 inside) as a peer: [`RTorrent`], a headless
//! `rtorrent` (`system.daemon.set`) on 127.0.0.1 with a configuration the test writes, its own
//! session folder and port, and one torrent loaded and started by that configuration. It is
//! watched over XML-RPC through an SCGI Unix socket in its folder (`d.complete`).
//!
//! rtorrent takes peers on loopback (unlike Transmission), but it keeps one peer per IP address
//! (its peer list is keyed by address alone): on loopback, its own entry in the tracker's answer
//! and a seeder's are both 127.0.0.1, and if its own comes first it never dials the seeder. A
//! downloading rtorrent therefore runs in one side of a [`NetnsPair`]
//! ([`RTorrent::start_in`]); a seeding one, dialled by its peers, runs on loopback
//! ([`RTorrent::start`]). The configuration turns off what reaches beyond the test (DHT, PEX,
//! UDP trackers) and sets the encryption policy of the test ([`RtEncryption`]); everything else
//! is rtorrent's default.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::net::free_port;
use super::netns::{NetnsPair, Side};
use super::payload::TestDir;
use super::procs::{Proc, STARTUP_TIMEOUT};
use super::tools::{require_tool, tethered};

/// rtorrent's encryption policy (`protocol.encryption.set`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtEncryption {
    /// rtorrent's default: plaintext only, MSE refused both ways.
    Off,
    /// MSE with RC4 required both ways: plaintext peers are refused.
    Required,
}

/// A headless `rtorrent` with one torrent. Killed on drop.
pub struct RTorrent {
    port: u16,
    proc: Proc,
    /// The SCGI socket of its XML-RPC interface.
    socket: PathBuf,
    /// The torrent's info hash as rtorrent names it (upper-case hex).
    hash: String,
    dir: TestDir,
}

impl RTorrent {
    /// Starts it on 127.0.0.1 and a free port with `torrent` (info hash `info_hash`), its data
    /// in (or to be downloaded to) `data_dir`; returns once its XML-RPC interface knows the
    /// torrent (it may still be checking the data: see [`RTorrent::wait_complete`]).
    pub fn start(
        torrent: &Path,
        data_dir: &Path,
        info_hash: &str,
        encryption: RtEncryption,
    ) -> RTorrent {
        Self::launch(None, torrent, data_dir, info_hash, encryption)
    }

    /// [`RTorrent::start`] inside `side` of `ns` (for a torrent announced to the pair's
    /// tracker).
    pub fn start_in(
        ns: &NetnsPair,
        side: Side,
        torrent: &Path,
        data_dir: &Path,
        info_hash: &str,
        encryption: RtEncryption,
    ) -> RTorrent {
        Self::launch(Some((ns, side)), torrent, data_dir, info_hash, encryption)
    }

    fn launch(
        netns: Option<(&NetnsPair, Side)>,
        torrent: &Path,
        data_dir: &Path,
        info_hash: &str,
        encryption: RtEncryption,
    ) -> RTorrent {
        let rtorrent = require_tool("rtorrent");
        let dir = TestDir::new("rtorrent");
        let session = dir.subdir("session");
        let socket = dir.join("rpc.sock");
        let port = free_port();
        let encryption = match encryption {
            RtEncryption::Off => "none",
            RtEncryption::Required => "allow_incoming,try_outgoing,require,require_RC4",
        };
        let rc = format!(
            "directory.default.set = \"{data}\"\n\
             session.path.set = \"{session}\"\n\
             network.port_range.set = {port}-{port}\n\
             network.port_random.set = no\n\
             network.scgi.open_local = \"{socket}\"\n\
             dht.mode.set = disable\n\
             protocol.pex.set = no\n\
             trackers.use_udp.set = no\n\
             protocol.encryption.set = {encryption}\n\
             system.daemon.set = true\n\
             log.open_file = \"main\", \"{log}\"\n\
             log.add_output = \"debug\", \"main\"\n\
             load.start_verbose = \"{torrent}\"\n",
            data = data_dir.display(),
            session = session.display(),
            socket = socket.display(),
            log = dir.join("rtorrent.log").display(),
            torrent = torrent.display(),
        );
        let rc_path = dir.join("rtorrent.rc");
        fs::write(&rc_path, rc).expect("write rtorrent.rc");
        // -n: no ~/.rtorrent.rc; the test's own file instead.
        let args: [OsString; 3] = [
            "-n".into(),
            "-o".into(),
            format!("import={}", rc_path.display()).into(),
        ];
        let cmd = match netns {
            Some((ns, side)) => ns.tethered(side, &rtorrent, &args),
            None => {
                let mut cmd = tethered(&rtorrent);
                cmd.args(&args);
                cmd
            }
        };
        let proc = Proc::spawn("rtorrent", cmd);
        let mut rt = RTorrent {
            port,
            proc,
            socket,
            hash: info_hash.to_ascii_uppercase(),
            dir,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while let Err(e) = rt.call("d.name", &[]) {
            if let Some(st) = rt.proc.try_status() {
                panic!("rtorrent ended ({st})\n{}", rt.logs());
            }
            assert!(
                Instant::now() < deadline,
                "rtorrent's XML-RPC never knew the torrent: {e}\n{}",
                rt.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
        rt
    }

    /// Calls `method` on the torrent (its hash first, then `params` as strings) over SCGI and
    /// returns the XML answer, or why there is none (a fault included).
    fn call(&self, method: &str, params: &[&str]) -> Result<String, String> {
        let param = |v: &str| format!("<param><value><string>{v}</string></value></param>");
        let params: String = std::iter::once(self.hash.as_str())
            .chain(params.iter().copied())
            .map(param)
            .collect();
        let body = format!(
            "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName>\
             <params>{params}</params></methodCall>"
        );
        let headers = format!("CONTENT_LENGTH\0{}\0SCGI\x001\0", body.len());
        let request = format!("{}:{headers},{body}", headers.len());
        let mut s = UnixStream::connect(&self.socket).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        if resp.contains("<fault>") || !resp.contains("<methodResponse>") {
            return Err(format!("{method}: {resp}"));
        }
        Ok(resp)
    }

    /// Whether rtorrent has every piece of the torrent, checked (`d.complete`).
    fn complete(&self) -> Result<bool, String> {
        let resp = self.call("d.complete", &[])?;
        Ok(resp.contains("<i8>1</i8>") || resp.contains("<i4>1</i4>"))
    }

    /// Waits until the torrent is complete (downloaded, or its data checked); panics with
    /// rtorrent's log after `timeout` (only there against a hang).
    pub fn wait_complete(&mut self, timeout: Duration) {
        if let Err(e) = self.try_wait_complete(timeout) {
            panic!("{e}");
        }
    }

    /// [`RTorrent::wait_complete`] that says why it gave up (rtorrent's log included) instead
    /// of panicking, for a caller that has more logs to add.
    pub fn try_wait_complete(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.complete();
            if state == Ok(true) {
                return Ok(());
            }
            if let Some(st) = self.proc.try_status() {
                return Err(format!("rtorrent ended ({st})\n{}", self.logs()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "rtorrent did not complete after {timeout:?} ({state:?}, {:?} bytes done)\n{}",
                    self.call("d.bytes_done", &[]),
                    self.logs()
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its output and its log file (for failure messages).
    pub fn logs(&self) -> String {
        let log = fs::read_to_string(self.dir.join("rtorrent.log")).unwrap_or_default();
        format!("{}--- rtorrent.log ---\n{log}", self.proc.logs())
    }
}
