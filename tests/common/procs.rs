//! Child processes: [`Proc`], a background helper in its own process group
//! whose output is captured and which is killed (the whole group) on drop;
//! [`run_with_timeout`] for commands run to completion; signals and memory
//! readings of a running process. Timeouts here only stop a hung process: no
//! test asserts on how long anything takes.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for one run of the bitrush binary. Only there to stop a hung
/// process; no test asserts on how long anything takes.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a helper (tracker, seeder) to become ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

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

    /// Writes `line` and a newline to the process's stdin (a helper's command).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to the helper's stdin");
        stdin.flush().expect("flush the helper's stdin");
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

    /// Polls `cond` (every 50 ms) until it holds while the process runs.
    /// Fails, saying why, if the process ends first (its output is then all
    /// in [`Proc::logs`]) or `timeout` passes (only there against a hang).
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&Proc) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return Ok(());
            }
            if let Some(st) = self.try_status() {
                self.join_readers();
                return Err(format!("{} ended ({st})", self.name));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "gave up after {timeout:?} ({} still running)",
                    self.name
                ));
            }
            thread::sleep(Duration::from_millis(50));
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

/// The pid of `parent`'s child process (the program a tether runs), once it has one; `None`
/// after `timeout`.
pub fn child_pid(parent: u32, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let children = fs::read_dir("/proc").into_iter().flatten().flatten();
        let child = children
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    // `pid (comm) state ppid ...`: the command may hold spaces and parentheses.
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
                        == Some(parent)
                })
            });
        if child.is_some() || Instant::now() >= deadline {
            return child;
        }
        thread::sleep(Duration::from_millis(20));
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
