//! [`Tracker`]: an opentracker on 127.0.0.1 (HTTP and UDP on one port) that
//! answers only whitelisted info hashes, with the scrapes and fake announces
//! the tests use to watch and populate a swarm.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use super::net::{free_port, loopback_addr};
use super::payload::TestDir;
use super::procs::{Proc, STARTUP_TIMEOUT};
use super::tools::{require_tool, tethered};
use super::torrents::hex_to_bytes;

/// An opentracker (HTTP and UDP on one port, 127.0.0.1 only) that answers
/// only the whitelisted info hashes. Killed on drop.
pub struct Tracker {
    port: u16,
    proc: Proc,
    _dir: TestDir,
}

/// Every byte as `%XX` (query values such as info hashes and peer ids).
pub fn percent_encode_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Plain HTTP/1.0 GET to 127.0.0.1:`port`; returns the body.
fn http_get_port(port: u16, path_and_query: &str) -> Result<Vec<u8>, String> {
    let addr = loopback_addr(port);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    // One write: opentracker answers as soon as it has parsed the request
    // line and closes, so a request split over several segments could leave
    // unread bytes behind and turn the close into a reset.
    let request = format!("GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    match resp.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => Ok(resp[i + 4..].to_vec()),
        None => Err(format!(
            "bad HTTP response from {addr}: {:?}",
            String::from_utf8_lossy(&resp)
        )),
    }
}

impl Tracker {
    /// Starts opentracker on a free port with `info_hashes` (40 hex each)
    /// whitelisted; returns once it accepts TCP connections.
    pub fn start(info_hashes: &[&str]) -> Tracker {
        let opentracker = require_tool("opentracker");
        let dir = TestDir::new("tracker");
        let wl = dir.join("whitelist.txt");
        let mut text = String::new();
        for h in info_hashes {
            assert_eq!(h.len(), 40, "info hash must be 40 hex chars: {h}");
            text.push_str(&h.to_ascii_lowercase());
            text.push('\n');
        }
        fs::write(&wl, text).expect("write whitelist");
        fs::set_permissions(&wl, fs::Permissions::from_mode(0o644)).expect("chmod whitelist");

        let mut last_logs = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = tethered(&opentracker);
            cmd.args(["-i", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .arg("-P")
                .arg(port.to_string())
                .arg("-w")
                .arg(&wl)
                .current_dir(dir.path());
            let mut proc = Proc::spawn("opentracker", cmd);
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            let addr = loopback_addr(port);
            let mut probe_failures = 0;
            loop {
                if proc.try_status().is_some() {
                    // Most likely lost the race for the port: try another.
                    last_logs = proc.logs();
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    // Make sure it is our opentracker (not someone else who
                    // won the race for the port): it answers scrapes.
                    let probe = match info_hashes.first() {
                        Some(h) => http_get_port(
                            port,
                            &format!(
                                "/scrape?info_hash={}",
                                percent_encode_bytes(&hex_to_bytes(h))
                            ),
                        ),
                        None => Ok(b"d5:files".to_vec()),
                    };
                    match probe {
                        Ok(body)
                            if body.starts_with(b"d5:files") && proc.try_status().is_none() =>
                        {
                            return Tracker {
                                port,
                                proc,
                                _dir: dir,
                            };
                        }
                        _ if proc.try_status().is_some() => {
                            last_logs = proc.logs();
                            break;
                        }
                        other => {
                            // A reset or a foreign answer: the port may have
                            // been shared with another test's socket for a
                            // moment. Probe again until the deadline, then
                            // move on to another port.
                            probe_failures += 1;
                            if probe_failures >= 10 || Instant::now() >= deadline {
                                last_logs = format!(
                                    "opentracker on port {port} answered a scrape with {:?}\n{}",
                                    other.map(|b| String::from_utf8_lossy(&b).into_owned()),
                                    proc.logs()
                                );
                                proc.kill();
                                break;
                            }
                        }
                    }
                }
                if Instant::now() >= deadline {
                    panic!("opentracker did not listen on {addr}\n{}", proc.logs());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("opentracker failed to start 5 times\n{last_logs}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/announce`
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/announce", self.port)
    }

    /// `udp://127.0.0.1:PORT/announce`
    pub fn udp_url(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// Plain HTTP/1.0 GET against the tracker; returns the body.
    pub fn http_get(&self, path_and_query: &str) -> Vec<u8> {
        http_get_port(self.port, path_and_query).unwrap_or_else(|e| panic!("{e}"))
    }

    /// (complete, incomplete) peer counts the tracker reports for a hash.
    pub fn scrape(&self, info_hash: &str) -> (u64, u64) {
        let body = self.http_get(&format!(
            "/scrape?info_hash={}",
            percent_encode_bytes(&hex_to_bytes(info_hash))
        ));
        let num = |key: &[u8]| -> u64 {
            match body.windows(key.len()).position(|w| w == key) {
                Some(i) => {
                    let rest = &body[i + key.len()..];
                    let end = rest.iter().position(|&b| b == b'e').unwrap_or(0);
                    std::str::from_utf8(&rest[..end])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                }
                None => 0,
            }
        };
        (num(b"8:completei"), num(b"10:incompletei"))
    }

    /// Waits until the tracker counts at least `n` seeders for `info_hash`.
    pub fn wait_for_seeders(&self, info_hash: &str, n: u64) {
        self.wait_for_scrape(info_hash, n, 0);
    }

    /// Waits until the tracker counts at least `n` leechers for `info_hash`.
    pub fn wait_for_leechers(&self, info_hash: &str, n: u64) {
        self.wait_for_scrape(info_hash, 0, n);
    }

    fn wait_for_scrape(&self, info_hash: &str, seeders: u64, leechers: u64) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let (complete, incomplete) = self.scrape(info_hash);
            if complete >= seeders && incomplete >= leechers {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tracker saw {complete} seeders and {incomplete} leechers for {info_hash}, \
                 wanted {seeders} and {leechers}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Announces a peer at 127.0.0.1:`port` for `info_hash` (as a seeder if
    /// `seeder`), e.g. to list a refused or silent peer in the swarm.
    pub fn announce_fake_peer(&self, info_hash: &str, port: u16, seeder: bool) {
        let peer_id: Vec<u8> = format!("-FK0001-{:012}", port).into_bytes();
        let body = self.http_get(&format!(
            "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={}&event=started&compact=1&numwant=0",
            percent_encode_bytes(&hex_to_bytes(info_hash)),
            percent_encode_bytes(&peer_id),
            if seeder { 0 } else { 1 },
        ));
        assert!(
            body.starts_with(b"d"),
            "fake announce rejected: {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}
