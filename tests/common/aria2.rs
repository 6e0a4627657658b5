//! aria2 as a peer: [`Aria2Seeder`] and [`aria2_download`], on loopback with
//! DHT, local discovery and peer exchange off, the second reference client.

use std::path::Path;
use std::process::Command;

use super::net::free_port;
use super::procs::{run_checked, Proc, PROCESS_TIMEOUT, STARTUP_TIMEOUT};
use super::tools::{require_tool, tethered};

/// Common aria2c flags: loopback only, no DHT/LSD/PEX, quiet.
fn aria2_base_args(cmd: &mut Command, dir: &Path, listen_port: u16) {
    cmd.arg("--no-conf=true")
        .arg("-d")
        .arg(dir)
        .arg(format!("--listen-port={listen_port}"))
        .arg("--interface=127.0.0.1")
        .arg("--disable-ipv6=true")
        .arg("--enable-dht=false")
        .arg("--enable-dht6=false")
        .arg("--bt-enable-lpd=false")
        .arg("--enable-peer-exchange=false")
        .arg("--file-allocation=none")
        .arg("--summary-interval=0")
        .arg("--console-log-level=notice")
        .arg(format!("--stop-with-process={}", std::process::id()));
}

/// An aria2c seeder on 127.0.0.1 seeding `torrent` from `dir` (payload laid
/// out as the torrent names it). Give it its own copy of the data: aria2
/// writes control files next to it. Killed on drop.
///
/// `start` returns once aria2 listens; use [`Tracker::wait_for_seeders`] to
/// wait until it has announced. aria2 handles UDP trackers only with its DHT
/// on (which stays off here), so give it torrents with an HTTP tracker.
pub struct Aria2Seeder {
    port: u16,
    proc: Proc,
}

impl Aria2Seeder {
    pub fn start(torrent: &Path, dir: &Path) -> Aria2Seeder {
        Self::start_with(torrent, dir, &[])
    }

    /// [`Aria2Seeder::start`] with `extra` aria2c options.
    pub fn start_with(torrent: &Path, dir: &Path, extra: &[&str]) -> Aria2Seeder {
        let aria2c = require_tool("aria2c");
        let mut last_logs = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = tethered(&aria2c);
            aria2_base_args(&mut cmd, dir, port);
            cmd.arg("--seed-ratio=0.0")
                .arg("--seed-time=600")
                .arg("--check-integrity=true")
                .arg("--bt-seed-unverified=true")
                .args(extra)
                .arg(torrent);
            let proc = Proc::spawn("aria2c seeder", cmd);
            let want = format!("listening on TCP port {port}");
            match proc
                .wait_for_stdout_line(|l| l.contains("listening on TCP port"), STARTUP_TIMEOUT)
            {
                Ok(line) if line.contains(&want) => return Aria2Seeder { port, proc },
                Ok(_) | Err(_) => last_logs = proc.logs(),
            }
        }
        panic!("aria2c seeder failed to listen on a free port\n{last_logs}");
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

listener_accessors!(Aria2Seeder);

/// Downloads `torrent` into `dir` with aria2c (peers from the torrent's
/// tracker) and waits for it to exit; panics unless it succeeds.
pub fn aria2_download(torrent: &Path, dir: &Path) {
    aria2_download_with(torrent, dir, &[]);
}

/// [`aria2_download`] with `extra` aria2c options.
pub fn aria2_download_with(torrent: &Path, dir: &Path, extra: &[&str]) {
    let aria2c = require_tool("aria2c");
    let mut cmd = Command::new(aria2c);
    aria2_base_args(&mut cmd, dir, free_port());
    cmd.arg("--seed-time=0")
        .arg("--show-console-readout=false")
        .arg("--bt-stop-timeout=100")
        .args(extra)
        .arg(torrent);
    run_checked("aria2c download", cmd, PROCESS_TIMEOUT);
}
