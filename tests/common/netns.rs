//! [`NetnsPair`]: two network namespaces joined by a veth pair, for peers that refuse loopback
//! addresses (Transmission drops every peer in 127.0.0.0/8), and [`NsTracker`], an opentracker
//! inside one of them.
//!
//! Each pair is private to one test: its names carry the test process's id and a counter, its
//! addresses (`10.77.0.1/30` on side A, `10.77.0.2/30` on side B) exist only inside the two
//! namespaces and are routed nowhere else, so fixed ports are free there by construction.
//! Dropping the pair deletes both namespaces (and with them the veth pair); processes started
//! in them must be dropped first (fixtures declare them before the pair). Pairs left behind by
//! a test process that was killed outright are removed by the next test that makes one.
//! Needs root and `ip` (iproute2).

use std::ffi::OsString;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::payload::TestDir;
use super::procs::{run_checked, run_with_timeout, Proc, STARTUP_TIMEOUT};
use super::tools::{require_tool, support, PYTHON};
use super::torrents::hex_to_bytes;
use super::tracker::percent_encode_bytes;

/// Prefix of every namespace these tests make.
const PREFIX: &str = "brt-";
/// The tracker's port inside side A (the namespace is the test's own: nothing else listens).
pub const NS_TRACKER_PORT: u16 = 6969;

/// One side of a [`NetnsPair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Two network namespaces joined by a veth pair (see the module docs). Deleted on drop.
pub struct NetnsPair {
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let mut cmd = Command::new(require_tool("ip"));
    cmd.args(args);
    run_checked("ip", cmd, Duration::from_secs(30));
}

/// Deletes pairs whose test process no longer runs (names are `brt-<pid>-<n>-<side>`).
fn remove_stale_namespaces() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "del", &name]);
            let _ = run_with_timeout("ip netns del", cmd, Duration::from_secs(30));
        }
    }
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        require_tool("ip");
        remove_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        let pair = NetnsPair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        ip(&["netns", "add", &pair.a]);
        // From here on, drop deletes whatever was made, even if a later step panics.
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "link", "add", "veth-a", "netns", &pair.a, "type", "veth", "peer", "name", "veth-b",
            "netns", &pair.b,
        ]);
        for (ns, dev, addr) in [
            (&pair.a, "veth-a", "10.77.0.1/30"),
            (&pair.b, "veth-b", "10.77.0.2/30"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// The namespace's name.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The side's address on the veth pair.
    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::A => Ipv4Addr::new(10, 77, 0, 1),
            Side::B => Ipv4Addr::new(10, 77, 0, 2),
        }
    }

    /// `cmd` (program, arguments, environment and working directory) run inside `side`
    /// through `ip netns exec`, which execs it: the process keeps the pid and process group
    /// that [`Proc`] kills.
    pub fn command(&self, side: Side, cmd: &Command) -> Command {
        let mut wrapped = Command::new(require_tool("ip"));
        wrapped.args(["netns", "exec", self.name(side)]);
        wrapped.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// `program args...` inside `side`, through `tests/support/tether.py` so that it dies
    /// with the test process even if that is killed outright.
    pub fn tethered(&self, side: Side, program: &Path, args: &[OsString]) -> Command {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(support("tether.py")).arg(program).args(args);
        self.command(side, &cmd)
    }

    /// The body of `GET url` made from inside `side`.
    pub fn http_get(&self, side: Side, url: &str) -> Result<Vec<u8>, String> {
        let mut cmd = Command::new(PYTHON);
        cmd.args([
            "-c",
            "import sys, urllib.request\n\
             sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=5).read())",
            url,
        ]);
        let out = run_with_timeout(
            "http get",
            self.command(side, &cmd),
            Duration::from_secs(30),
        );
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "del", ns]);
            let _ = run_with_timeout("ip netns del", cmd, Duration::from_secs(30));
        }
    }
}

/// An opentracker on side A (`10.77.0.1:6969`, HTTP and UDP), reachable from both sides, that
/// answers only the whitelisted info hashes. Killed on drop.
pub struct NsTracker {
    url: String,
    proc: Proc,
    _dir: TestDir,
}

impl NsTracker {
    /// Starts it with `info_hashes` (40 hex each) whitelisted; returns once it answers.
    pub fn start(ns: &NetnsPair, info_hashes: &[&str]) -> NsTracker {
        let dir = TestDir::new("ns-tracker");
        let wl = dir.join("whitelist.txt");
        let text: String = info_hashes
            .iter()
            .map(|h| format!("{}\n", h.to_ascii_lowercase()))
            .collect();
        fs::write(&wl, text).expect("write whitelist");
        fs::set_permissions(&wl, fs::Permissions::from_mode(0o644)).expect("chmod whitelist");
        let host = ns.addr(Side::A).to_string();
        let port = NS_TRACKER_PORT.to_string();
        let args: Vec<OsString> = ["-i", &host, "-p", &port, "-P", &port, "-w"]
            .iter()
            .map(OsString::from)
            .chain([wl.into_os_string()])
            .collect();
        let mut cmd = ns.tethered(Side::A, &require_tool("opentracker"), &args);
        cmd.current_dir(dir.path());
        let mut proc = Proc::spawn("opentracker", cmd);
        let url = format!("http://{host}:{port}/announce");
        let scrape = format!("http://{host}:{port}/scrape");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(st) = proc.try_status() {
                panic!("opentracker ended ({st})\n{}", proc.logs());
            }
            if ns
                .http_get(Side::B, &scrape)
                .is_ok_and(|b| b.starts_with(b"d5:files"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "opentracker never answered\n{}",
                proc.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
        NsTracker {
            url,
            proc,
            _dir: dir,
        }
    }

    /// `http://10.77.0.1:6969/announce`
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// (complete, incomplete) peer counts for `info_hash`, asked from side B.
    pub fn scrape(&self, ns: &NetnsPair, info_hash: &str) -> (u64, u64) {
        let url = format!(
            "{}?info_hash={}",
            self.url.replace("/announce", "/scrape"),
            percent_encode_bytes(&hex_to_bytes(info_hash))
        );
        let body = ns.http_get(Side::B, &url).unwrap_or_else(|e| panic!("{e}"));
        let num = |key: &[u8]| -> u64 {
            body.windows(key.len())
                .position(|w| w == key)
                .and_then(|i| {
                    let rest = &body[i + key.len()..];
                    let end = rest.iter().position(|&b| b == b'e')?;
                    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
                })
                .unwrap_or(0)
        };
        (num(b"8:completei"), num(b"10:incompletei"))
    }

    /// Waits until the tracker counts at least `n` seeders for `info_hash`.
    pub fn wait_for_seeders(&self, ns: &NetnsPair, info_hash: &str, n: u64) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let (complete, _) = self.scrape(ns, info_hash);
            if complete >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tracker counted {complete} seeders for {info_hash}, wanted {n}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The announce URL of every [`NsTracker`] (`10.77.0.1:6969` inside its pair).
pub const NS_ANNOUNCE: &str = "http://10.77.0.1:6969/announce";

/// The fixture of the namespace tests: a pair, a tracker on side A, a payload
/// (`seed/payload.bin`) and its torrent announcing to that tracker. Fields drop in order: the
/// tracker before the pair; a test's own processes are declared after the fixture's
/// `let`, so they drop first.
pub struct NsSwarm {
    pub tracker: NsTracker,
    pub torrent: std::path::PathBuf,
    pub info_hash: String,
    pub data: Vec<u8>,
    pub seed_dir: std::path::PathBuf,
    pub dir: TestDir,
    pub ns: NetnsPair,
}

impl NsSwarm {
    /// `len` pseudo-random bytes from `seed`, pieces of 2^`piece_len_log2`.
    pub fn single_file(label: &str, len: usize, piece_len_log2: u32, seed: u64) -> NsSwarm {
        let ns = NetnsPair::new();
        let dir = TestDir::new(label);
        let seed_dir = dir.subdir("seed");
        let src = seed_dir.join("payload.bin");
        let data = super::payload::write_payload(&src, len, seed);
        let torrent = dir.join("payload.torrent");
        super::torrents::mktorrent_to(&src, NS_ANNOUNCE, piece_len_log2, &torrent);
        let info_hash = super::torrents::lt_info_hash(&torrent);
        let tracker = NsTracker::start(&ns, &[&info_hash]);
        NsSwarm {
            tracker,
            torrent,
            info_hash,
            data,
            seed_dir,
            dir,
            ns,
        }
    }

    /// Waits until the tracker counts at least `n` seeders.
    pub fn wait_for_seeders(&self, n: u64) {
        self.tracker.wait_for_seeders(&self.ns, &self.info_hash, n);
    }

    /// `bitrush seed` of the payload on side `side` (port 6881), once the tracker counts it
    /// as the `expected_seeders`-th seeder. Killed on drop.
    pub fn bitrush_seeder(&self, side: Side, expected_seeders: u64, extra: &[&str]) -> Proc {
        let mut cmd = super::bitrush::bitrush();
        cmd.arg("seed")
            .arg(&self.torrent)
            .arg(self.seed_dir.join("payload.bin"))
            .args(["--port", "6881"])
            .args(extra);
        let proc = Proc::spawn("bitrush seed", self.ns.command(side, &cmd));
        self.wait_for_seeders(expected_seeders);
        proc
    }

    /// Runs `bitrush download -o <out>/payload.bin` on side `side` to completion and checks
    /// every byte; returns the run's output.
    #[track_caller]
    pub fn bitrush_download_checked(
        &self,
        side: Side,
        label: &str,
        extra: &[&str],
    ) -> std::process::Output {
        let out_path = self.dir.subdir(label).join("payload.bin");
        let cmd = super::bitrush::bitrush_with(super::bitrush::output_args(
            "download",
            &out_path,
            &self.torrent,
            extra,
        ));
        let out = run_with_timeout(
            "bitrush download",
            self.ns.command(side, &cmd),
            super::procs::PROCESS_TIMEOUT,
        );
        super::bitrush::assert_success(&out);
        let got = fs::read(&out_path).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}\n{}",
                out_path.display(),
                super::bitrush::dump(&out)
            )
        });
        super::payload::assert_bytes_eq(&got, &self.data, label);
        out
    }
}
