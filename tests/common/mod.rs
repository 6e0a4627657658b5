//! Shared helpers for bitrush's integration tests (`mod common;` in each test
//! file).
//!
//! Everything here talks to 127.0.0.1 only. Every helper process is started in
//! its own process group and killed (the whole group) when its guard is
//! dropped; helper processes also watch their stdin, which only the test
//! process holds, so they die even if the test process is killed outright.
//!
//! External tools (`opentracker`, `mktorrent`, `aria2c`, `/usr/bin/python3`
//! with `libtorrent`) are required: a missing tool makes the test panic with a
//! message naming it, never skip.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The Python that has the `libtorrent` module (not a pyenv shim).
pub const PYTHON: &str = "/usr/bin/python3";
/// Upper bound for one run of the bitrush binary. Only there to stop a hung
/// process; no test asserts on how long anything takes.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a helper (tracker, seeder) to become ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Exit code of `lt_seed.py --exit-after-upload` when it died on purpose.
pub const LT_SEED_DIED_EXIT_CODE: i32 = 42;

// ---------------------------------------------------------------------------
// Paths and tools
// ---------------------------------------------------------------------------

/// Absolute path of a script in `tests/support/`.
pub fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("support")
        .join(name)
}

/// Finds `tool` in PATH or panics loudly: tests never skip for a missing tool.
pub fn require_tool(tool: &str) -> PathBuf {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        assert!(
            p.is_file(),
            "required tool `{tool}` is missing; install it (see .ci/run)"
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join(tool);
        if let Ok(meta) = fs::metadata(&cand) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return cand;
            }
        }
    }
    panic!("required tool `{tool}` not found in PATH; install it (see .ci/run)");
}

/// Checks once that `/usr/bin/python3` can import `libtorrent`; panics if not.
pub fn require_libtorrent() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    let res = CHECK.get_or_init(|| {
        if !Path::new(PYTHON).is_file() {
            return Err(format!("{PYTHON} is missing"));
        }
        let out = Command::new(PYTHON)
            .args(["-c", "import libtorrent"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {PYTHON}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{PYTHON} cannot import libtorrent: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = res {
        panic!("required tool python3-libtorrent unusable: {e}; install it (see .ci/run)");
    }
}

/// A command running `tests/support/<name>` with the libtorrent Python
/// (checked first).
pub fn support_script(name: &str) -> Command {
    require_libtorrent();
    let mut cmd = Command::new(PYTHON);
    cmd.arg(support(name));
    cmd
}

/// A command running the Python `code` (`-c`) with libtorrent available.
pub fn lt_python(code: &str) -> Command {
    require_libtorrent();
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(code);
    cmd
}

// ---------------------------------------------------------------------------
// Temporary directories and payloads
// ---------------------------------------------------------------------------

/// A world-readable (0755) temporary directory under /tmp, removed on drop
/// (kept if `BITRUSH_KEEP_TEST_DIRS` is set, for debugging).
///
/// World-readable because opentracker drops privileges to `nobody` and must
/// still read its whitelist file.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bitrush-tests-{label}-"))
            .tempdir_in("/tmp")
            .expect("create temp dir under /tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod 755 temp dir");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates (mode 0755) and returns the sub-directory `rel`.
    pub fn subdir<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).expect("create sub dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod sub dir");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("BITRUSH_KEEP_TEST_DIRS").is_some() {
                eprintln!("keeping test dir {}", dir.keep().display());
            }
        }
    }
}

/// Deterministic pseudo-random bytes (splitmix64), different for each seed.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `payload(len, seed)` to `path` (creating parent dirs) and returns it.
pub fn write_payload(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create payload parent dir");
    }
    let data = payload(len, seed);
    fs::write(path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    data
}

/// Creates a tree of payload files under `root` from `(relative path, length)`
/// pairs; returns relative path -> contents. Each file gets its own seed.
pub fn write_tree(root: &Path, files: &[(&str, usize)], seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let data = write_payload(&root.join(rel), *len, seed.wrapping_add(i as u64 * 7919));
        map.insert(rel.to_string(), data);
    }
    map
}

/// Reads every regular file under `root`: relative path ("a/b.txt") -> bytes.
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = fs::symlink_metadata(&p).expect("stat");
            if meta.is_dir() {
                walk(root, &p, map);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                map.insert(rel, fs::read(&p).expect("read file"));
            }
        }
    }
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    map
}

/// Recursively copies `src` (file or directory) to `dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    let meta = fs::metadata(src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
    if meta.is_dir() {
        fs::create_dir_all(dst).expect("create dir");
        for e in fs::read_dir(src).expect("read dir") {
            let e = e.expect("dir entry");
            copy_tree(&e.path(), &dst.join(e.file_name()));
        }
    } else {
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
}

/// Short description of how two byte slices differ (for assertion messages).
pub fn describe_difference(got: &[u8], want: &[u8]) -> String {
    if got == want {
        return "identical".into();
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    format!(
        "got {} bytes, want {} bytes, first differing offset {:?}",
        got.len(),
        want.len(),
        first.or(Some(got.len().min(want.len())))
    )
}

/// Asserts that `got` equals `want` without dumping megabytes on failure.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: contents differ: {}",
        describe_difference(got, want)
    );
}

/// Asserts the file at `path` holds exactly `want` (`what` names it).
#[track_caller]
pub fn assert_file_eq(path: &Path, want: &[u8], what: &str) {
    let got =
        fs::read(path).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", path.display()));
    assert_bytes_eq(&got, want, what);
}

/// Asserts the files under `got_root` are exactly `want` (relative path ->
/// contents, as [`write_tree`] returns).
#[track_caller]
pub fn assert_tree_eq(got_root: &Path, want: &BTreeMap<String, Vec<u8>>) {
    let got = read_tree(got_root);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "files under {} differ from the torrent's",
        got_root.display()
    );
    for (name, data) in want {
        assert_bytes_eq(&got[name], data, name);
    }
}

// ---------------------------------------------------------------------------
// Ports and fake peers
// ---------------------------------------------------------------------------

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to :0, then
/// released). Callers that start a server on it must cope with losing a race.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `127.0.0.1:port`.
pub fn loopback_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An address on 127.0.0.1 where (a moment ago) nobody listened: connecting
/// to it is refused.
pub fn refused_addr() -> SocketAddr {
    loopback_addr(free_port())
}

/// An HTTP announce URL on 127.0.0.1 where nobody listens.
pub fn dead_http() -> String {
    format!("http://127.0.0.1:{}/announce", refused_addr().port())
}

/// A UDP announce URL on 127.0.0.1 where nobody listens.
pub fn dead_udp() -> String {
    format!("udp://127.0.0.1:{}/announce", refused_addr().port())
}

/// Gives helpers with `port` and `proc` fields their `port()`, `addr()` and
/// `logs()` accessors.
macro_rules! listener_accessors {
    ($($ty:ty),+ $(,)?) => {$(
        impl $ty {
            /// The port it listens on (127.0.0.1).
            pub fn port(&self) -> u16 {
                self.port
            }

            /// `127.0.0.1:port()`.
            pub fn addr(&self) -> SocketAddr {
                loopback_addr(self.port)
            }

            /// Everything it printed so far (for failure messages).
            pub fn logs(&self) -> String {
                self.proc.logs()
            }
        }
    )+};
}

/// A peer that accepts TCP connections on 127.0.0.1 and never sends a byte
/// (it reads and discards whatever it gets). Stops its thread on drop.
pub struct SilentPeer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentPeer {
    pub fn start() -> SilentPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind silent peer");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            let mut conns: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(true);
                        conns.push(s);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {}
                }
                // Drain input so the peer's writes never block; keep the
                // connection open until told to stop.
                conns.retain_mut(|c| match c.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
                thread::sleep(Duration::from_millis(20));
            }
        });
        SilentPeer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Captured {
    stdout_lines: Vec<String>,
    stderr: String,
    stdout_eof: bool,
}

struct Shared {
    data: Mutex<Captured>,
    cond: Condvar,
}

/// A background helper process in its own process group. Its stdout is
/// collected line by line, its stderr as text; its stdin is a pipe that is
/// closed when the guard drops. Dropping the guard kills the whole group.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn kill_group(pid: u32) {
    // The child was started with process_group(0), so its pgid is its pid.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Starts `cmd` in a new process group with `stdin` and stdout/stderr piped;
/// panics if it cannot start.
fn spawn_in_group(name: &str, cmd: &mut Command, stdin: Stdio) -> Child {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"))
}

impl Proc {
    /// Spawns `cmd` (stdin/stdout/stderr piped, new process group).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = spawn_in_group(name, &mut cmd, Stdio::piped());
        let shared = Arc::new(Shared {
            data: Mutex::new(Captured::default()),
            cond: Condvar::new(),
        });
        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("stdout piped");
        let sh = shared.clone();
        readers.push(thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        sh.data.lock().unwrap().stdout_lines.push(text);
                        sh.cond.notify_all();
                    }
                }
            }
            sh.data.lock().unwrap().stdout_eof = true;
            sh.cond.notify_all();
        }));
        let mut stderr = child.stderr.take().expect("stderr piped");
        let sh = shared.clone();
        readers.push(thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        sh.data.lock().unwrap().stderr.push_str(&text);
                    }
                }
            }
        }));
        let stdin = child.stdin.take();
        Proc {
            name: name.to_string(),
            child,
            stdin,
            shared,
            readers,
            status: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stdout line satisfies `pred` and returns it. Fails if the
    /// process closes stdout first or `timeout` passes.
    pub fn wait_for_stdout_line<F: Fn(&str) -> bool>(
        &self,
        pred: F,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        let mut data = self.shared.data.lock().unwrap();
        loop {
            while seen < data.stdout_lines.len() {
                if pred(&data.stdout_lines[seen]) {
                    return Ok(data.stdout_lines[seen].clone());
                }
                seen += 1;
            }
            if data.stdout_eof {
                return Err(format!("{} closed its stdout", self.name));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{} not ready after {timeout:?}", self.name));
            }
            data = self
                .shared
                .cond
                .wait_timeout(data, (deadline - now).min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    /// Waits for the `READY <port>` line of a helper script and returns the
    /// port; panics with `not_ready`, the reason and the logs otherwise.
    pub fn ready_port(&self, not_ready: &str) -> u16 {
        let line = self
            .wait_for_stdout_line(|l| l.starts_with("READY "), STARTUP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{not_ready}: {e}\n{}", self.logs()));
        line["READY ".len()..].trim().parse().expect("READY <port>")
    }

    /// Everything captured so far (for failure messages).
    pub fn logs(&self) -> String {
        let d = self.shared.data.lock().unwrap();
        let mut s = format!("--- {} stdout ---\n", self.name);
        for l in &d.stdout_lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&format!("--- {} stderr ---\n{}", self.name, d.stderr));
        s
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.shared.data.lock().unwrap().stdout_lines.clone()
    }

    pub fn stderr(&self) -> String {
        self.shared.data.lock().unwrap().stderr.clone()
    }

    /// The exit status if the process has ended (without blocking).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                self.join_readers();
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Kills the whole process group and reaps the process.
    pub fn kill(&mut self) {
        drop(self.stdin.take());
        if self.try_status().is_none() {
            kill_group(self.pid());
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        // Once reaped, the pid may be reused by another process group, so the
        // group is only ever killed before the leader is reaped.
        self.join_readers();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to completion with stdout/stderr captured, in its own process
/// group; kills the group and panics if it runs longer than `timeout`.
pub fn run_with_timeout(name: &str, mut cmd: Command, timeout: Duration) -> Output {
    let mut child = spawn_in_group(name, &mut cmd, Stdio::null());
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let status = match status {
        Some(st) => st,
        None => {
            // Not reaped yet, so the pgid is still ours to kill.
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "{name} did not finish within {timeout:?} and was killed ({cmd:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Runs `cmd` with a timeout and panics (with its output) unless it exits 0.
pub fn run_checked(name: &str, cmd: Command, timeout: Duration) -> Output {
    let out = run_with_timeout(name, cmd, timeout);
    assert!(
        out.status.success(),
        "{name} failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------
// Torrent creation and inspection (mktorrent, libtorrent)
// ---------------------------------------------------------------------------

/// Creates `<src>.torrent` next to `src` (a file or a folder) with mktorrent:
/// pieces of 2^`piece_len_log2` bytes, announce URL `announce`.
pub fn mktorrent(src: &Path, announce: &str, piece_len_log2: u32) -> PathBuf {
    mktorrent_tiers(src, &[vec![announce.to_string()]], piece_len_log2)
}

/// Like [`mktorrent`] with an announce-list: one `-a` per tier (a tier's
/// URLs joined by commas).
pub fn mktorrent_tiers(src: &Path, tiers: &[Vec<String>], piece_len_log2: u32) -> PathBuf {
    let out = next_to(src, ".torrent");
    mktorrent_tiers_to(src, tiers, piece_len_log2, &out);
    out
}

/// `src`'s file name with `suffix` appended, in `src`'s folder.
fn next_to(src: &Path, suffix: &str) -> PathBuf {
    let mut name = src.file_name().expect("file name").to_os_string();
    name.push(suffix);
    src.with_file_name(name)
}

/// Like [`mktorrent`] with an explicit output path (overwritten if present).
pub fn mktorrent_to(src: &Path, announce: &str, piece_len_log2: u32, out: &Path) {
    mktorrent_tiers_to(src, &[vec![announce.to_string()]], piece_len_log2, out);
}

/// Like [`mktorrent_tiers`] with an explicit output path (overwritten if
/// present).
fn mktorrent_tiers_to(src: &Path, tiers: &[Vec<String>], piece_len_log2: u32, out: &Path) {
    let tool = require_tool("mktorrent");
    // mktorrent refuses to overwrite (and 1.1 has no -f).
    let _ = fs::remove_file(out);
    let mut cmd = Command::new(tool);
    for tier in tiers {
        cmd.arg("-a").arg(tier.join(","));
    }
    cmd.arg("-l")
        .arg(piece_len_log2.to_string())
        .arg("-o")
        .arg(out)
        .arg(src);
    run_checked("mktorrent", cmd, Duration::from_secs(60));
}

/// An announce URL where no tracker runs (port 1), for torrents that are
/// never announced.
pub const UNUSED_ANNOUNCE: &str = "http://127.0.0.1:1/announce";

/// Writes `p.bin` (`len` bytes of [`payload`] from `seed`) into `dir` and
/// makes its torrent (32 KiB pieces, announcing to [`UNUSED_ANNOUNCE`]);
/// returns the torrent and the payload.
pub fn unannounced_torrent(dir: &TestDir, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let src = dir.join("p.bin");
    let data = write_payload(&src, len, seed);
    (mktorrent(&src, UNUSED_ANNOUNCE, 15), data)
}

/// The info hash (per libtorrent) that mktorrent gives `src` with pieces of
/// 2^`piece_len_log2` bytes. The announce URL is not part of the info dict,
/// so this lets a test whitelist a torrent before it knows the tracker port.
pub fn mktorrent_info_hash(src: &Path, piece_len_log2: u32) -> String {
    let tmp = next_to(src, ".placeholder.torrent");
    mktorrent_to(src, UNUSED_ANNOUNCE, piece_len_log2, &tmp);
    let hash = lt_info_hash(&tmp);
    fs::remove_file(&tmp).expect("remove placeholder torrent");
    hash
}

/// A tracker that whitelists `src`'s torrent, and that torrent
/// (`<src>.torrent`, announcing to the tracker over UDP if `udp`, else HTTP)
/// with libtorrent's view of it.
pub fn tracked_torrent(src: &Path, piece_len_log2: u32, udp: bool) -> (Tracker, PathBuf, LtInfo) {
    let hash = mktorrent_info_hash(src, piece_len_log2);
    let tracker = Tracker::start(&[&hash]);
    let url = if udp {
        tracker.udp_url()
    } else {
        tracker.http_url()
    };
    let torrent = mktorrent(src, &url, piece_len_log2);
    let info = lt_info(&torrent);
    assert_eq!(
        info.info_hash, hash,
        "info hash changed with the announce URL"
    );
    (tracker, torrent, info)
}

/// Creates a torrent with libtorrent's `create_torrent` (v1 only).
pub fn lt_make_torrent(src: &Path, out: &Path, piece_length: u32, trackers: &[&str]) {
    lt_make_torrent_version(src, out, piece_length, trackers, "v1");
}

/// Creates a torrent with libtorrent's `create_torrent`: `version` is `v1`, `v2`, `hybrid`
/// (libtorrent's default: v1 and v2, with BEP 47 pad files) or `v1-padded` (v1 laid out with
/// pad files as a hybrid is); `piece_length` 0 lets libtorrent choose.
pub fn lt_make_torrent_version(
    src: &Path,
    out: &Path,
    piece_length: u32,
    trackers: &[&str],
    version: &str,
) {
    let mut cmd = support_script("lt_tool.py");
    cmd.arg("make-torrent")
        .arg(src)
        .arg(out)
        .arg("--piece-length")
        .arg(piece_length.to_string())
        .arg("--version")
        .arg(version);
    for t in trackers {
        cmd.arg("--tracker").arg(t);
    }
    run_checked("lt_tool make-torrent", cmd, Duration::from_secs(60));
}

/// One file of a torrent as libtorrent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtFile {
    /// Path inside the torrent, '/'-joined, without the torrent's name for
    /// multi-file torrents (for a single-file torrent: the name).
    pub path: String,
    pub length: u64,
    pub pad: bool,
    /// BEP 47 attributes `x` and `h`.
    pub executable: bool,
    pub hidden: bool,
    /// For a symlink: its target as libtorrent resolved it (torrent name included).
    pub symlink: Option<String>,
    /// The v2 `pieces root` (64 hex), if any.
    pub root: Option<String>,
}

/// A torrent's metadata as parsed by libtorrent (the reference for tests).
#[derive(Debug, Clone)]
pub struct LtInfo {
    pub name: String,
    /// libtorrent's `info_hash()`: the v2 hash truncated to 20 bytes when the torrent has v2
    /// metadata (hybrids included), else the v1 hash.
    pub info_hash: String,
    pub info_hash_v1: Option<String>,
    pub info_hash_v2: Option<String>,
    /// Pad files included.
    pub total_size: u64,
    pub piece_length: u64,
    pub num_pieces: usize,
    /// v1 piece hashes (none for a v2-only torrent).
    pub piece_hashes: Vec<String>,
    /// v2 piece hashes, file by file (64 hex each).
    pub piece_hashes_v2: Vec<String>,
    pub trackers: Vec<String>,
    pub multi_file: bool,
    /// Every file, pad files included.
    pub files: Vec<LtFile>,
}

impl LtInfo {
    /// The files that are not pad files.
    pub fn real_files(&self) -> impl Iterator<Item = &LtFile> {
        self.files.iter().filter(|f| !f.pad)
    }

    /// Bytes of the files that are not pad files.
    pub fn content_length(&self) -> u64 {
        self.real_files().map(|f| f.length).sum()
    }
}

/// Parses `torrent` with libtorrent (`lt_tool.py info-json`).
pub fn lt_info(torrent: &Path) -> LtInfo {
    let mut cmd = support_script("lt_tool.py");
    cmd.arg("info-json").arg(torrent);
    let out = run_checked("lt_tool info-json", cmd, Duration::from_secs(60));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lt_tool info-json JSON");
    let s = |k: &str| v[k].as_str().expect(k).to_string();
    let opt = |k: &str| v[k].as_str().map(String::from);
    let u = |k: &str| v[k].as_u64().expect(k);
    let strs = |k: &str| {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|x| x.as_str().expect(k).to_string())
            .collect::<Vec<_>>()
    };
    LtInfo {
        name: s("name"),
        info_hash: s("info_hash"),
        info_hash_v1: opt("info_hash_v1"),
        info_hash_v2: opt("info_hash_v2"),
        total_size: u("total_size"),
        piece_length: u("piece_length"),
        num_pieces: u("num_pieces") as usize,
        piece_hashes: strs("piece_hashes"),
        piece_hashes_v2: strs("piece_hashes_v2"),
        trackers: strs("trackers"),
        multi_file: v["multi_file"].as_bool().expect("multi_file"),
        files: v["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| LtFile {
                path: f["path"].as_str().expect("path").to_string(),
                length: f["length"].as_u64().expect("length"),
                pad: f["pad"].as_bool().expect("pad"),
                executable: f["executable"].as_bool().expect("executable"),
                hidden: f["hidden"].as_bool().expect("hidden"),
                symlink: f["symlink"].as_str().map(String::from),
                root: f["root"].as_str().map(String::from),
            })
            .collect(),
    }
}

/// The v1 info hash (40 lowercase hex) according to libtorrent.
pub fn lt_info_hash(torrent: &Path) -> String {
    lt_info(torrent).info_hash
}

/// The piece hashes (40 lowercase hex each) according to libtorrent.
pub fn lt_piece_hashes(torrent: &Path) -> Vec<String> {
    lt_info(torrent).piece_hashes
}

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

// ---------------------------------------------------------------------------
// Hand-built bencode (for torrents bitrush must accept or reject)
// ---------------------------------------------------------------------------

/// A bencode value. Dictionaries keep the order given (so tests can build
/// unsorted ones on purpose); use [`dict`] for sorted keys.
#[derive(Debug, Clone)]
pub enum Bv {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bv>),
    Dict(Vec<(Vec<u8>, Bv)>),
}

pub fn bstr(s: &str) -> Bv {
    Bv::Bytes(s.as_bytes().to_vec())
}

/// A dictionary with keys sorted as bencode requires.
pub fn dict(entries: &[(&str, Bv)]) -> Bv {
    let mut v: Vec<(Vec<u8>, Bv)> = entries
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Bv::Dict(v)
}

pub fn bencode(v: &Bv) -> Vec<u8> {
    fn enc(v: &Bv, out: &mut Vec<u8>) {
        match v {
            Bv::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bv::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bv::List(l) => {
                out.push(b'l');
                for x in l {
                    enc(x, out);
                }
                out.push(b'e');
            }
            Bv::Dict(d) => {
                out.push(b'd');
                for (k, x) in d {
                    enc(&Bv::Bytes(k.clone()), out);
                    enc(x, out);
                }
                out.push(b'e');
            }
        }
    }
    let mut out = Vec::new();
    enc(v, &mut out);
    out
}

/// SHA-1 of each `piece_length` chunk of `data`, concatenated (the `pieces`
/// value of an info dict).
pub fn sha1_pieces(data: &[u8], piece_length: usize) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    data.chunks(piece_length)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Magnet links
// ---------------------------------------------------------------------------

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `magnet:?xt=urn:btih:<hash>`, then `&dn=<dn>` (given encoded) if any, a
/// percent-encoded `&tr=` per tracker and an `&x.pe=` per peer.
pub fn magnet_link(
    info_hash: &str,
    dn: Option<&str>,
    trackers: &[String],
    peers: &[SocketAddr],
) -> String {
    let mut link = format!("magnet:?xt=urn:btih:{info_hash}");
    if let Some(dn) = dn {
        link.push_str(&format!("&dn={dn}"));
    }
    for t in trackers {
        link.push_str(&format!("&tr={}", pct(t)));
    }
    for p in peers {
        link.push_str(&format!("&x.pe={p}"));
    }
    link
}

// ---------------------------------------------------------------------------
// opentracker
// ---------------------------------------------------------------------------

/// An opentracker (HTTP and UDP on one port, 127.0.0.1 only) that answers
/// only the whitelisted info hashes. Killed on drop.
pub struct Tracker {
    port: u16,
    proc: Proc,
    _dir: TestDir,
}

fn percent_encode_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    assert_eq!(hex.len() % 2, 0, "odd hex length: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
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
            let mut cmd = Command::new(PYTHON);
            cmd.arg(support("tether.py"))
                .arg(&opentracker)
                .args(["-i", "127.0.0.1", "-p"])
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
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let (complete, _) = self.scrape(info_hash);
            if complete >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tracker saw {complete} seeders for {info_hash}, wanted {n}\n{}",
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

// ---------------------------------------------------------------------------
// Seeders
// ---------------------------------------------------------------------------

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
        if let Some(n) = opts.exit_after_upload {
            cmd.arg("--exit-after-upload").arg(n.to_string());
        }
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
}

listener_accessors!(LtSeeder);

/// How a [`BadPeer`] misbehaves (see tests/support/bad_peer.py).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPeerMode {
    /// Correct protocol, but every block it sends has one byte flipped.
    Corrupt,
    /// Answers the handshake with random bytes.
    Garbage,
    /// Answers with a handshake for another info hash.
    WrongInfoHash,
}

/// A misbehaving peer (tests/support/bad_peer.py) on 127.0.0.1 for a
/// single-file torrent whose data lies in `save_dir`. It does not announce:
/// use [`Tracker::announce_fake_peer`] with its port. Killed on drop.
pub struct BadPeer {
    port: u16,
    proc: Proc,
}

impl BadPeer {
    pub fn start(torrent: &Path, save_dir: &Path, mode: BadPeerMode) -> BadPeer {
        let mode = match mode {
            BadPeerMode::Corrupt => "corrupt",
            BadPeerMode::Garbage => "garbage",
            BadPeerMode::WrongInfoHash => "wrong-infohash",
        };
        let mut cmd = support_script("bad_peer.py");
        cmd.arg("--mode").arg(mode).arg(torrent).arg(save_dir);
        let proc = Proc::spawn(&format!("bad_peer {mode}"), cmd);
        let port = proc.ready_port("bad_peer did not get ready");
        BadPeer { port, proc }
    }

    /// How many connections it has accepted so far.
    pub fn connections(&self) -> usize {
        self.proc
            .stdout_lines()
            .iter()
            .filter(|l| *l == "CONN")
            .count()
    }

    /// How many corrupt blocks it has sent so far.
    pub fn served_blocks(&self) -> usize {
        self.proc
            .stdout_lines()
            .iter()
            .filter(|l| l.starts_with("SERVED "))
            .count()
    }
}

listener_accessors!(BadPeer);

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
        let aria2c = require_tool("aria2c");
        let mut last_logs = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(PYTHON);
            cmd.arg(support("tether.py")).arg(&aria2c);
            aria2_base_args(&mut cmd, dir, port);
            cmd.arg("--seed-ratio=0.0")
                .arg("--seed-time=600")
                .arg("--check-integrity=true")
                .arg("--bt-seed-unverified=true")
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
    let aria2c = require_tool("aria2c");
    let mut cmd = Command::new(aria2c);
    aria2_base_args(&mut cmd, dir, free_port());
    cmd.arg("--seed-time=0")
        .arg("--show-console-readout=false")
        .arg("--bt-stop-timeout=100")
        .arg(torrent);
    run_checked("aria2c download", cmd, PROCESS_TIMEOUT);
}

// ---------------------------------------------------------------------------
// Swarm fixtures
// ---------------------------------------------------------------------------

/// A payload (one file, or a folder tree) in `seed_dir`, its torrent and a
/// tracker that whitelists it (no seeder yet). Fields drop in order:
/// tracker, then dir.
pub struct Swarm {
    pub tracker: Tracker,
    pub torrent: PathBuf,
    pub info: LtInfo,
    /// The payload (single-file torrents only; empty for trees).
    pub data: Vec<u8>,
    /// For trees: path inside the torrent -> contents.
    pub tree: BTreeMap<String, Vec<u8>>,
    /// Where the payload lies, as a seeder's save path.
    pub seed_dir: PathBuf,
    pub dir: TestDir,
}

impl Swarm {
    /// `len` pseudo-random bytes (from `seed`) as `payload.bin`, pieces of
    /// 2^`piece_len_log2`, announced over UDP if `udp`, else HTTP.
    pub fn single_file(
        label: &str,
        len: usize,
        piece_len_log2: u32,
        seed: u64,
        udp: bool,
    ) -> Swarm {
        Self::with_payload(label, piece_len_log2, udp, |seed_dir| {
            let src = seed_dir.join("payload.bin");
            let data = write_payload(&src, len, seed);
            (src, data, BTreeMap::new())
        })
    }

    /// A folder `name` holding `files` (relative path, length), as a
    /// multi-file torrent announced over HTTP.
    pub fn tree(
        label: &str,
        name: &str,
        files: &[(&str, usize)],
        piece_len_log2: u32,
        seed: u64,
    ) -> Swarm {
        Self::tree_announced(label, name, files, piece_len_log2, seed, false)
    }

    /// Like [`Swarm::tree`], announced over UDP if `udp`, else HTTP.
    pub fn tree_announced(
        label: &str,
        name: &str,
        files: &[(&str, usize)],
        piece_len_log2: u32,
        seed: u64,
        udp: bool,
    ) -> Swarm {
        Self::with_payload(label, piece_len_log2, udp, |seed_dir| {
            let root = seed_dir.join(name);
            let tree = write_tree(&root, files, seed);
            (root, Vec::new(), tree)
        })
    }

    /// A swarm whose payload `write` lays out in the seed dir, returning the
    /// torrent's source path, the single file's data and the tree's files.
    fn with_payload(
        label: &str,
        piece_len_log2: u32,
        udp: bool,
        write: impl FnOnce(&Path) -> (PathBuf, Vec<u8>, BTreeMap<String, Vec<u8>>),
    ) -> Swarm {
        let dir = TestDir::new(label);
        let seed_dir = dir.subdir("seed");
        let (src, data, tree) = write(&seed_dir);
        let (tracker, torrent, info) = tracked_torrent(&src, piece_len_log2, udp);
        Swarm {
            tracker,
            torrent,
            info,
            data,
            tree,
            seed_dir,
            dir,
        }
    }

    /// Starts a libtorrent seeder on the payload (announced once started).
    pub fn lt_seeder(&self) -> LtSeeder {
        LtSeeder::start(&self.torrent, &self.seed_dir)
    }

    pub fn lt_seeder_with(&self, opts: &LtSeedOptions) -> LtSeeder {
        LtSeeder::start_with(&self.torrent, &self.seed_dir, opts)
    }

    /// Starts `bitrush seed` on `name` in the seed dir, the swarm's first
    /// seeder (returns once the tracker counts it).
    pub fn bitrush_seeder(&self, name: &str) -> BitrushSeeder {
        BitrushSeeder::start(
            &self.torrent,
            &self.seed_dir.join(name),
            &self.tracker,
            &self.info.info_hash,
            1,
            &[],
        )
    }

    /// Starts an aria2 seeder on a private copy of the payload and waits
    /// until the tracker counts `expected_seeders` seeders (this one
    /// included).
    pub fn aria2_seeder(&self, expected_seeders: u64) -> Aria2Seeder {
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let copy = self.dir.subdir(format!(
            "aria2-seed-{}",
            COPIES.fetch_add(1, Ordering::SeqCst)
        ));
        for e in fs::read_dir(&self.seed_dir).expect("read seed dir") {
            let e = e.expect("dir entry");
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".torrent") {
                continue;
            }
            copy_tree(&e.path(), &copy.join(name));
        }
        let seeder = Aria2Seeder::start(&self.torrent, &copy);
        self.tracker
            .wait_for_seeders(&self.info.info_hash, expected_seeders);
        seeder
    }

    /// A fresh (0755) directory under the test dir for outputs.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        self.dir.subdir(name)
    }
}

// ---------------------------------------------------------------------------
// The bitrush binary
// ---------------------------------------------------------------------------

/// A `Command` for the bitrush binary built by cargo for these tests.
pub fn bitrush() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitrush"));
    cmd.env_remove("RUST_LOG").env("RUST_BACKTRACE", "1");
    cmd
}

/// A [`bitrush`] command with `args`.
pub fn bitrush_with(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Command {
    let mut cmd = bitrush();
    cmd.args(args);
    cmd
}

/// Runs bitrush with `args` to completion (killed after [`PROCESS_TIMEOUT`]).
pub fn run_bitrush(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Output {
    run_with_timeout("bitrush", bitrush_with(args), PROCESS_TIMEOUT)
}

/// Starts bitrush in the background (killed when the guard drops).
pub fn spawn_bitrush(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Proc {
    Proc::spawn("bitrush", bitrush_with(args))
}

/// The arguments `CMD -o OUT SOURCE EXTRA...` of a command that writes `out`.
pub fn output_args(
    cmd: &str,
    out: &Path,
    source: impl AsRef<OsStr>,
    extra: &[&str],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![cmd.into(), "-o".into(), out.into(), source.as_ref().into()];
    args.extend(extra.iter().map(OsString::from));
    args
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Human-readable dump of a run, for assertion messages.
pub fn dump(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        truncate_for_message(&stdout_of(out)),
        truncate_for_message(&stderr_of(out))
    )
}

fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 4000;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... ({} bytes in all)", &s[..cut], s.len())
    }
}

/// Asserts the run exited 0 and did not panic.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(out.status.success(), "expected success\n{}", dump(out));
    assert!(
        !stderr_of(out).contains("panicked"),
        "panicked\n{}",
        dump(out)
    );
}

/// Checks the run failed cleanly: a non-zero exit code (not a signal), no
/// panic, and a stderr line starting with `error:` (returned).
pub fn check_cli_error(out: &Output) -> Result<String, String> {
    if out.status.success() {
        return Err(format!("expected failure, got success\n{}", dump(out)));
    }
    if out.status.code().is_none() {
        return Err(format!("killed by a signal (crash?)\n{}", dump(out)));
    }
    let err = stderr_of(out);
    if err.contains("panicked") {
        return Err(format!("panicked\n{}", dump(out)));
    }
    match err.lines().find(|l| l.starts_with("error:")) {
        Some(l) => Ok(l.to_string()),
        None => Err(format!(
            "no stderr line starts with `error:`\n{}",
            dump(out)
        )),
    }
}

/// Like [`check_cli_error`], and stderr is exactly that one line (for
/// commands that log nothing: decode, info).
pub fn check_one_line_error(out: &Output) -> Result<String, String> {
    let line = check_cli_error(out)?;
    let err = stderr_of(out);
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    if lines != 1 {
        return Err(format!(
            "stderr should be exactly one `error:` line\n{}",
            dump(out)
        ));
    }
    Ok(line)
}

/// Asserts [`check_cli_error`]; returns the `error:` line.
#[track_caller]
pub fn assert_cli_error(out: &Output) -> String {
    check_cli_error(out).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts [`check_one_line_error`]; returns the `error:` line.
#[track_caller]
pub fn assert_one_line_error(out: &Output) -> String {
    check_one_line_error(out).unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts stdout has at most one line (downloads print nothing but maybe a
/// final summary line; logs must go to stderr).
#[track_caller]
pub fn assert_quiet_stdout(out: &Output) {
    let s = stdout_of(out);
    assert!(
        s.lines().count() <= 1,
        "stdout must have at most one line (logs belong on stderr)\n{}",
        dump(out)
    );
}

// ---------------------------------------------------------------------------
// Seeding, resume and hostile peers (tests/seed_resume.rs, tests/hostile_peers.rs)
// ---------------------------------------------------------------------------

/// Sends signal `sig` (`"INT"`, `"TERM"`, ...) to process `pid` alone (not its group).
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed: {status}");
}

/// The peak virtual memory size (`VmPeak`, bytes) of a running process.
pub fn vm_peak(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    let kib: u64 = line
        .trim_start_matches("VmPeak:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// For a single-file torrent: which pieces of the file at `path` match the
/// torrent's hashes (per libtorrent). A missing or short file counts as
/// missing pieces.
pub fn verified_pieces(path: &Path, info: &LtInfo) -> Vec<bool> {
    use sha1::{Digest, Sha1};
    let data = fs::read(path).unwrap_or_default();
    let plen = info.piece_length as usize;
    (0..info.num_pieces)
        .map(|i| {
            let start = i * plen;
            let end = (start + plen).min(info.total_size as usize);
            end <= data.len() && to_hex(&Sha1::digest(&data[start..end])) == info.piece_hashes[i]
        })
        .collect()
}

/// `bitrush seed` running in the background (killed on drop).
pub struct BitrushSeeder {
    port: u16,
    pub proc: Proc,
}

impl BitrushSeeder {
    /// Starts `bitrush seed TORRENT PATH --port P EXTRA...` on a free port and
    /// waits until `tracker` counts `expected_seeders` seeders for `info_hash`
    /// (this one included). Retries on another port if it lost the race for
    /// one; panics if it fails otherwise.
    pub fn start(
        torrent: &Path,
        path: &Path,
        tracker: &Tracker,
        info_hash: &str,
        expected_seeders: u64,
        extra: &[&str],
    ) -> BitrushSeeder {
        let mut last_logs = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = bitrush();
            cmd.arg("seed")
                .arg(torrent)
                .arg(path)
                .arg("--port")
                .arg(port.to_string())
                .args(extra);
            let mut proc = Proc::spawn("bitrush seed", cmd);
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                if proc.try_status().is_some() {
                    proc.wait_exit(Duration::from_secs(5));
                    last_logs = proc.logs();
                    if last_logs.contains("cannot listen") {
                        break; // lost the race for the port: try another
                    }
                    panic!("bitrush seed exited early\n{last_logs}");
                }
                if tracker.scrape(info_hash).0 >= expected_seeders {
                    return BitrushSeeder { port, proc };
                }
                assert!(
                    Instant::now() < deadline,
                    "tracker never counted {expected_seeders} seeders with bitrush seed\n{}\n{}",
                    proc.logs(),
                    tracker.logs()
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("bitrush seed failed to listen on a free port\n{last_logs}");
    }
}

listener_accessors!(BitrushSeeder);

/// A scripted peer (tests/support/scripted_peer.py) for a single-file torrent
/// whose data lies in `save_dir`: honest, or hostile in one of the ways its
/// `--mode` names. It does not announce: use [`Tracker::announce_fake_peer`].
/// Killed on drop.
pub struct ScriptedPeer {
    port: u16,
    proc: Proc,
}

impl ScriptedPeer {
    pub fn start(torrent: &Path, save_dir: &Path, mode: &str) -> ScriptedPeer {
        let mut cmd = support_script("scripted_peer.py");
        cmd.arg("--mode").arg(mode).arg(torrent).arg(save_dir);
        let proc = Proc::spawn(&format!("scripted_peer {mode}"), cmd);
        let port = proc.ready_port("scripted_peer did not get ready");
        ScriptedPeer { port, proc }
    }

    /// A scripted peer that does not listen but dials `target` `cycles` times
    /// in a row, behaving as `mode` on each connection (see the script).
    pub fn dial(
        torrent: &Path,
        save_dir: &Path,
        mode: &str,
        target: SocketAddr,
        cycles: usize,
    ) -> ScriptedPeer {
        let mut cmd = support_script("scripted_peer.py");
        cmd.arg("--mode")
            .arg(mode)
            .arg("--connect")
            .arg(target.to_string())
            .arg("--cycles")
            .arg(cycles.to_string())
            .arg(torrent)
            .arg(save_dir);
        let proc = Proc::spawn(&format!("scripted_peer {mode} dialling {target}"), cmd);
        ScriptedPeer { port: 0, proc }
    }

    /// How many stdout lines so far equal `word` or start with `word `.
    pub fn count(&self, word: &str) -> usize {
        let with_space = format!("{word} ");
        self.proc
            .stdout_lines()
            .iter()
            .filter(|l| *l == word || l.starts_with(&with_space))
            .count()
    }

    /// Waits (up to `timeout`, only against a hang) for a stdout line equal to
    /// `word` or starting with `word `.
    pub fn wait_for(&self, word: &str, timeout: Duration) -> Result<String, String> {
        let with_space = format!("{word} ");
        self.proc
            .wait_for_stdout_line(|l| l == word || l.starts_with(&with_space), timeout)
    }

    /// The pieces it served at least one correct block of.
    pub fn served_pieces(&self) -> std::collections::BTreeSet<u32> {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("SERVED "))
            .filter_map(|rest| rest.split(' ').next()?.parse().ok())
            .collect()
    }

    /// Payload bytes it served in correct blocks.
    pub fn served_bytes(&self) -> u64 {
        self.proc
            .stdout_lines()
            .iter()
            .filter_map(|l| l.strip_prefix("SERVED "))
            .filter_map(|rest| rest.split(' ').nth(2)?.parse::<u64>().ok())
            .sum()
    }
}

listener_accessors!(ScriptedPeer);

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
        let mut cmd = support_script("lt_leech.py");
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
