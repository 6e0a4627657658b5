//! IPv6 peers and trackers: a libtorrent seeder listening on `[::1]` only, which bitrush
//! reaches through a magnet link's `x.pe=[::1]:PORT` and through an HTTP tracker on `[::1]`
//! that answers with BEP 7's `peers6`. That tracker is scripted here: Debian's opentracker is
//! built for IPv4 only (`opentracker -i ::1` exits with "V4 Tracker is V4 only!").

mod common;

use common::*;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// An HTTP tracker on `[::1]` that answers every announce with the same `peers6` list and an
/// empty `peers`, and remembers the request lines. Stops its thread on drop.
struct Ipv6Tracker {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ipv6Tracker {
    fn start(peers: &[SocketAddr]) -> Ipv6Tracker {
        let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind [::1]:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let mut compact = Vec::new();
        for peer in peers {
            let SocketAddr::V6(v6) = peer else {
                panic!("{peer} is not an IPv6 address")
            };
            compact.extend_from_slice(&v6.ip().octets());
            compact.extend_from_slice(&v6.port().to_be_bytes());
        }
        let mut body = format!("d8:intervali1800e5:peers0:6:peers6{}:", compact.len()).into_bytes();
        body.extend_from_slice(&compact);
        body.push(b'e');
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(&body);

        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let conn = match listener.accept() {
                    Ok((conn, _)) => conn,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if let Some(line) = answer(conn, &response) {
                    seen.lock().unwrap().push(line);
                }
            }
        });
        Ipv6Tracker {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://[::1]:PORT/announce`
    fn url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request head from `conn` and sends `response`; returns the request line.
fn answer(mut conn: std::net::TcpStream, response: &[u8]) -> Option<String> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    conn.write_all(response).ok()?;
    let text = String::from_utf8_lossy(&head);
    text.lines().next().map(str::to_string)
}

impl Drop for Ipv6Tracker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A payload, its torrent (announcing nowhere) and a libtorrent seeder of it on `[::1]` only.
fn ipv6_seeded(label: &str, seed: u64) -> (TestDir, std::path::PathBuf, Vec<u8>, LtSeeder) {
    let dir = TestDir::new(label);
    let (torrent, data) = unannounced_torrent(&dir, 700_000, seed);
    let seeder = LtSeeder::start_with(
        &torrent,
        dir.path(),
        &LtSeedOptions {
            no_announce: true,
            ipv6: true,
            ..LtSeedOptions::default()
        },
    );
    (dir, torrent, data, seeder)
}

#[test]
fn magnet_link_with_an_ipv6_peer() {
    let (dir, torrent, data, seeder) = ipv6_seeded("ipv6-magnet", 71);
    let out_dir = dir.subdir("out");
    let info_hash = lt_info_hash(&torrent);
    // The peer as links carry it: in brackets, raw or percent-encoded.
    let raw = magnet_link(&info_hash, None, &[], &[seeder.addr_v6()]);
    let encoded = format!(
        "magnet:?xt=urn:btih:{info_hash}&x.pe={}",
        pct(&seeder.addr_v6().to_string())
    );
    assert!(raw.contains("&x.pe=[::1]:"), "{raw}");
    for (i, link) in [raw, encoded].iter().enumerate() {
        let output = out_dir.join(format!("from-magnet-{i}.bin"));
        let out = run_bitrush(output_args("magnet_download", &output, link, &[]));
        assert_success(&out);
        assert_file_eq(&output, &data, "magnet download from a peer on [::1]");
    }
}

#[test]
fn ipv6_tracker_with_peers6_for_peers_and_download() {
    let (dir, unannounced, data, seeder) = ipv6_seeded("ipv6-tracker", 72);
    let tracker = Ipv6Tracker::start(&[seeder.addr_v6()]);
    assert!(tracker.url().starts_with("http://[::1]:"));
    let torrent = dir.join("v6.torrent");
    mktorrent_to(&dir.join("p.bin"), &tracker.url(), 15, &torrent);
    assert_eq!(lt_info_hash(&torrent), lt_info_hash(&unannounced));

    let out = run_bitrush([OsStr::new("peers"), torrent.as_os_str()]);
    assert_success(&out);
    assert_eq!(stdout_of(&out), format!("{}\n", seeder.addr_v6()));

    let output = dir.subdir("out").join("p.bin");
    let out = run_bitrush(output_args("download", &output, &torrent, &[]));
    assert_success(&out);
    assert_file_eq(
        &output,
        &data,
        "download from a peer a tracker on [::1] named",
    );
    assert!(
        tracker
            .requests()
            .iter()
            .all(|r| r.starts_with("GET /announce?info_hash=")),
        "{:?}",
        tracker.requests()
    );
}
