//! Transmission 3.00 as a peer: [`Transmission`], a `transmission-daemon` in the foreground in
//! one side of a [`NetnsPair`] (it refuses loopback peers), driven with `transmission-remote`
//! over its RPC on the namespace's own loopback.
//!
//! Its settings are Transmission's defaults (encryption preferred, uTP on unless a test turns
//! it off) with everything that reaches beyond the test switched off: DHT, local peer
//! discovery, PEX, port forwarding, and the blocklist. The peer port (51413) and RPC port
//! (9091) are its defaults: the namespace is the test's own, so they are free there.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use super::netns::{NetnsPair, Side};
use super::payload::TestDir;
use super::procs::{run_with_timeout, Proc, PROCESS_TIMEOUT, STARTUP_TIMEOUT};
use super::tools::require_tool;

/// Transmission's RPC port inside its namespace.
const RPC: &str = "127.0.0.1:9091";

/// A `transmission-daemon` on one side of a pair. Killed on drop.
pub struct Transmission {
    proc: Proc,
    /// `ip netns exec <ns>` for `transmission-remote`.
    remote: Command,
    _config: TestDir,
}

impl Transmission {
    /// Starts the daemon on `side` with uTP on or off; returns once its RPC answers.
    pub fn start(ns: &NetnsPair, side: Side, utp: bool) -> Transmission {
        let daemon = require_tool("transmission-daemon");
        let config = TestDir::new("transmission-config");
        let settings = format!(
            r#"{{
  "dht-enabled": false,
  "lpd-enabled": false,
  "pex-enabled": false,
  "port-forwarding-enabled": false,
  "blocklist-enabled": false,
  "peer-port": 51413,
  "peer-port-random-on-start": false,
  "rpc-enabled": true,
  "rpc-bind-address": "127.0.0.1",
  "rpc-port": 9091,
  "rpc-authentication-required": false,
  "rpc-whitelist-enabled": true,
  "rpc-whitelist": "127.0.0.1",
  "rpc-host-whitelist-enabled": false,
  "utp-enabled": {utp},
  "download-dir": "{download}",
  "incomplete-dir-enabled": false,
  "ratio-limit-enabled": false,
  "idle-seeding-limit-enabled": false,
  "start-added-torrents": true,
  "message-level": 2
}}
"#,
            download = config.join("downloads").display(),
        );
        fs::write(config.join("settings.json"), settings).expect("write settings.json");
        let args = [
            "-f".into(),
            "-g".into(),
            config.path().as_os_str().to_owned(),
        ];
        let proc = Proc::spawn("transmission-daemon", ns.tethered(side, &daemon, &args));
        let mut remote = Command::new(require_tool("transmission-remote"));
        remote.arg(RPC);
        let remote = ns.command(side, &remote);
        let mut trx = Transmission {
            proc,
            remote,
            _config: config,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !trx.try_remote(&["-l"]).status.success() {
            if let Some(st) = trx.proc.try_status() {
                panic!("transmission-daemon ended ({st})\n{}", trx.proc.logs());
            }
            assert!(
                Instant::now() < deadline,
                "transmission-daemon's RPC never answered\n{}",
                trx.proc.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
        trx
    }

    fn try_remote(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.remote.get_program());
        cmd.args(self.remote.get_args()).args(args);
        run_with_timeout("transmission-remote", cmd, PROCESS_TIMEOUT)
    }

    /// Runs `transmission-remote <rpc> args...`; panics unless it succeeds. Returns stdout.
    fn remote(&self, args: &[&str]) -> String {
        let out = self.try_remote(args);
        assert!(
            out.status.success(),
            "transmission-remote {args:?} failed\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.proc.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds `torrent` with its data in (or to be downloaded to) `dir`; Transmission checks
    /// what is there and starts.
    pub fn add(&self, torrent: &Path, dir: &Path) {
        let torrent = torrent.to_str().expect("UTF-8 path");
        let dir = dir.to_str().expect("UTF-8 path");
        self.remote(&["-a", torrent, "-w", dir]);
    }

    /// The torrent's `transmission-remote -i` fields (`Percent Done`, `State`...).
    fn info(&self, info_hash: &str) -> String {
        self.remote(&["-t", info_hash, "-i"])
    }

    /// Waits until the torrent is complete (verified) and seeding; panics with the daemon's
    /// log after `timeout` (only there against a hang).
    pub fn wait_complete(&mut self, info_hash: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.info(info_hash);
            let done = info.contains("Percent Done: 100%");
            if done && (info.contains("State: Seeding") || info.contains("State: Idle")) {
                return;
            }
            if let Some(st) = self.proc.try_status() {
                panic!("transmission-daemon ended ({st})\n{}", self.proc.logs());
            }
            assert!(
                Instant::now() < deadline,
                "Transmission did not complete after {timeout:?}\n{info}\n{}",
                self.proc.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}
