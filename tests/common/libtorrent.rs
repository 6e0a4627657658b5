//! libtorrent as a peer (from Debian's python3-libtorrent, through the
//! `tests/support/lt_*.py` scripts): [`LtSeeder`], [`LtLeecher`] and
//! [`lt_download`], the reference client the tests check bitrush against.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::procs::{run_checked, Proc, PROCESS_TIMEOUT};
use super::tools::support_script;

/// Exit code of `lt_seed.py --exit-after-upload` when it died on purpose.
pub const LT_SEED_DIED_EXIT_CODE: i32 = 42;

/// Options of [`LtSeeder::start_with`].
#[derive(Debug, Clone, Default)]
pub struct LtSeedOptions {
    /// Upload rate limit in bytes/s.
    pub upload_rate_limit: Option<u64>,
    /// Do not announce to the torrents' trackers.
    pub no_announce: bool,
    /// Die abruptly (exit code [`LT_SEED_DIED_EXIT_CODE`]) after uploading
    /// this many payload bytes.
    pub exit_after_upload: Option<u64>,
    /// Peer transports and encryption.
    pub wire: LtWire,
    /// Listen on `[::1]` only (not on 127.0.0.1); its address is then
    /// [`LtSeeder::addr_v6`].
    pub ipv6: bool,
    /// Hash the data before seeding rather than trust it (seed mode): libtorrent then knows
    /// a v2 torrent's block hashes and answers BEP 52 requests for them.
    pub check: bool,
}

/// Which peer transports libtorrent speaks (in and out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LtTransport {
    /// TCP only (the helpers' default: the other test peers speak nothing else).
    #[default]
    Tcp,
    /// uTP only: `enable_outgoing_tcp` and `enable_incoming_tcp` off.
    Utp,
    /// Both, as libtorrent ships.
    Both,
}

/// libtorrent's Message Stream Encryption policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LtEncryption {
    /// Plain connections out, plain or encrypted ones in.
    #[default]
    Default,
    /// RC4-encrypted connections only, both ways (`pe_forced`, `pe_rc4`).
    Forced,
    /// Never MSE, both ways (`pe_disabled`).
    Plaintext,
}

/// How a libtorrent helper connects to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LtWire {
    pub transport: LtTransport,
    pub encryption: LtEncryption,
}

impl LtWire {
    fn args(self, cmd: &mut std::process::Command) {
        let transport = match self.transport {
            LtTransport::Tcp => "tcp",
            LtTransport::Utp => "utp",
            LtTransport::Both => "both",
        };
        let encryption = match self.encryption {
            LtEncryption::Default => "default",
            LtEncryption::Forced => "forced",
            LtEncryption::Plaintext => "plaintext",
        };
        cmd.arg("--transport")
            .arg(transport)
            .arg("--encryption")
            .arg(encryption);
    }
}

impl LtSeedOptions {
    /// Announcing, uploading at most `rate` bytes/s.
    pub fn upload_limited(rate: u64) -> LtSeedOptions {
        LtSeedOptions {
            upload_rate_limit: Some(rate),
            ..LtSeedOptions::default()
        }
    }
}

/// A libtorrent seeder (tests/support/lt_seed.py) on 127.0.0.1. Once
/// started, it is seeding and (unless `no_announce`) has announced to the
/// torrent's tracker. Killed on drop.
pub struct LtSeeder {
    port: u16,
    proc: Proc,
}

impl LtSeeder {
    /// Seeds `torrent` from `save_dir` (which holds the payload as the
    /// torrent names it).
    pub fn start(torrent: &Path, save_dir: &Path) -> LtSeeder {
        Self::start_many(&[torrent], save_dir, &LtSeedOptions::default())
    }

    pub fn start_with(torrent: &Path, save_dir: &Path, opts: &LtSeedOptions) -> LtSeeder {
        Self::start_many(&[torrent], save_dir, opts)
    }

    pub fn start_many(torrents: &[&Path], save_dir: &Path, opts: &LtSeedOptions) -> LtSeeder {
        let mut cmd = support_script("lt_seed.py");
        if let Some(r) = opts.upload_rate_limit {
            cmd.arg("--upload-rate-limit").arg(r.to_string());
        }
        if opts.no_announce {
            cmd.arg("--no-announce");
        }
        if opts.ipv6 {
            cmd.arg("--ipv6");
        }
        if opts.check {
            cmd.arg("--check");
        }
        if let Some(n) = opts.exit_after_upload {
            cmd.arg("--exit-after-upload").arg(n.to_string());
        }
        opts.wire.args(&mut cmd);
        cmd.arg(save_dir).args(torrents);
        let proc = Proc::spawn("lt_seed", cmd);
        let port = proc.ready_port("lt_seed did not get ready");
        LtSeeder { port, proc }
    }

    /// Kills the seeder now (e.g. in the middle of a download).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Exit status if the seeder has ended (e.g. after `exit_after_upload`).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.proc.try_status()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// `[::1]:port()`, for a seeder started with [`LtSeedOptions::ipv6`].
    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port))
    }
}

listener_accessors!(LtSeeder);

/// Downloads `source` (a .torrent path or a magnet URI) into `save_dir` with
/// libtorrent, optionally connecting to `peers` directly; panics unless the
/// download completes.
pub fn lt_download(source: &str, save_dir: &Path, peers: &[SocketAddr]) {
    let mut cmd = support_script("lt_tool.py");
    cmd.arg("download")
        .arg(source)
        .arg(save_dir)
        .arg("--timeout")
        .arg("100");
    for p in peers {
        cmd.arg("--peer").arg(p.to_string());
    }
    run_checked("lt_tool download", cmd, PROCESS_TIMEOUT);
}

/// A libtorrent leecher (tests/support/lt_leech.py) that talks only to
/// `peers`, optionally throttled. Killed on drop.
pub struct LtLeecher {
    pub proc: Proc,
}

impl LtLeecher {
    pub fn start(
        torrent: &Path,
        save_dir: &Path,
        peers: &[SocketAddr],
        download_rate_limit: Option<u64>,
    ) -> LtLeecher {
        Self::start_with(
            torrent,
            save_dir,
            peers,
            download_rate_limit,
            LtWire::default(),
        )
    }

    /// [`LtLeecher::start`] with the given transports and encryption.
    pub fn start_with(
        torrent: &Path,
        save_dir: &Path,
        peers: &[SocketAddr],
        download_rate_limit: Option<u64>,
        wire: LtWire,
    ) -> LtLeecher {
        let mut cmd = support_script("lt_leech.py");
        wire.args(&mut cmd);
        cmd.arg(torrent).arg(save_dir);
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        if let Some(r) = download_rate_limit {
            cmd.arg("--download-rate-limit").arg(r.to_string());
        }
        LtLeecher {
            proc: Proc::spawn("lt_leech", cmd),
        }
    }

    /// Waits until it reports at least `bytes` verified bytes.
    pub fn wait_progress(&self, bytes: u64) {
        let res = self.proc.wait_for_stdout_line(
            |l| {
                l == "COMPLETE"
                    || l.strip_prefix("PROGRESS ")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n >= bytes)
            },
            PROCESS_TIMEOUT,
        );
        if let Err(e) = res {
            panic!(
                "lt_leech never got {bytes} bytes: {e}\n{}",
                self.proc.logs()
            );
        }
    }

    /// Waits for it to complete and exit 0; panics otherwise.
    pub fn wait_complete(&mut self) {
        let status = self.proc.wait_exit(PROCESS_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "lt_leech did not complete ({status:?})\n{}",
            self.proc.logs()
        );
    }
}
