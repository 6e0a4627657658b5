//! qBittorrent as a peer: [`QBittorrent`], a `qbittorrent-nox` on 127.0.0.1 with its own
//! profile folder, given one torrent on its command line and watched through its Web API
//! (`/api/v2/torrents/info`; authentication is off for localhost in the profile).
//!
//! The profile turns off what reaches beyond the test (DHT, local discovery, PEX, UPnP) and
//! allows several connections from one IP (every peer of a loopback test is 127.0.0.1).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::net::{free_port, loopback_addr};
use super::payload::TestDir;
use super::procs::{Proc, STARTUP_TIMEOUT};
use super::tools::{require_tool, tethered};

/// A `qbittorrent-nox` with one torrent. Killed on drop.
pub struct QBittorrent {
    port: u16,
    webui: u16,
    proc: Proc,
    _profile: TestDir,
}

impl QBittorrent {
    /// Starts it on free ports with `torrent`, its data in (or to be downloaded to)
    /// `save_path`; returns once its Web API lists the torrent.
    pub fn start(torrent: &Path, save_path: &Path) -> QBittorrent {
        let nox = require_tool("qbittorrent-nox");
        let profile = TestDir::new("qbittorrent");
        let config = profile.subdir("qBittorrent/config");
        let (port, webui) = (free_port(), free_port());
        let conf = format!(
            "[LegalNotice]\nAccepted=true\n\n\
             [BitTorrent]\n\
             Session\\DHTEnabled=false\nSession\\LSDEnabled=false\nSession\\PeXEnabled=false\n\
             Session\\MultiConnectionsPerIp=true\nSession\\Port={port}\n\
             Session\\QueueingSystemEnabled=false\n\n\
             [Preferences]\n\
             Connection\\UPnP=false\nConnection\\PortRangeMin={port}\n\
             WebUI\\Address=127.0.0.1\nWebUI\\Port={webui}\nWebUI\\LocalHostAuth=false\n\
             WebUI\\CSRFProtection=false\nWebUI\\HostHeaderValidation=false\n\
             WebUI\\UseUPnP=false\n"
        );
        fs::write(config.join("qBittorrent.conf"), conf).expect("write qBittorrent.conf");
        let mut cmd: Command = tethered(&nox);
        cmd.arg(format!("--profile={}", profile.path().display()))
            .arg(format!("--webui-port={webui}"))
            .arg(format!("--save-path={}", save_path.display()))
            .arg("--skip-dialog=true")
            .arg(torrent);
        let proc = Proc::spawn("qbittorrent-nox", cmd);
        let mut qbt = QBittorrent {
            port,
            webui,
            proc,
            _profile: profile,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !qbt.torrents().is_ok_and(|t| t.contains("\"hash\"")) {
            if let Some(st) = qbt.proc.try_status() {
                panic!("qbittorrent-nox ended ({st})\n{}", qbt.proc.logs());
            }
            assert!(
                Instant::now() < deadline,
                "qBittorrent's Web API never listed the torrent\n{}",
                qbt.proc.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
        qbt
    }

    /// The JSON of `/api/v2/torrents/info`.
    fn torrents(&self) -> Result<String, String> {
        let addr = loopback_addr(self.webui);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "GET /api/v2/torrents/info HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.webui
        );
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        match resp.split_once("\r\n\r\n") {
            Some((head, body)) if head.contains(" 200 ") => Ok(body.to_string()),
            _ => Err(format!("unexpected answer: {resp:?}")),
        }
    }

    /// Waits until its torrent is complete (`"progress":1`); panics after `timeout` (only
    /// there against a hang).
    pub fn wait_complete(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.torrents().unwrap_or_default();
            if info.contains("\"progress\":1,") || info.contains("\"progress\":1}") {
                return;
            }
            if let Some(st) = self.proc.try_status() {
                panic!("qbittorrent-nox ended ({st})\n{}", self.proc.logs());
            }
            assert!(
                Instant::now() < deadline,
                "qBittorrent did not complete after {timeout:?}\n{info}\n{}",
                self.proc.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

listener_accessors!(QBittorrent);
