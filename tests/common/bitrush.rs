//! The bitrush binary under test: commands for it, runs to completion or in
//! the background, [`BitrushSeeder`], and the checks every CLI test makes of a
//! run (exit status, no panic, one `error:` line, quiet stdout).

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output};

use super::net::free_port;
use super::procs::{run_with_timeout, Proc, PROCESS_TIMEOUT, STARTUP_TIMEOUT};
use super::tools::tethered;
use super::tracker::Tracker;

/// A `Command` for the bitrush binary built by cargo for these tests. The DHT is off (tests
/// never reach beyond loopback: the default routers are on the internet); DHT tests turn it
/// back on with local bootstrap nodes.
pub fn bitrush() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitrush"));
    cmd.env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .env("BITRUSH_NO_DHT", "1")
        .env_remove("BITRUSH_DHT_BOOTSTRAP")
        .env_remove("BITRUSH_STATE_DIR");
    cmd
}

/// A [`bitrush`] command with `args`.
pub fn bitrush_with(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Command {
    let mut cmd = bitrush();
    cmd.args(args);
    cmd
}

/// A [`bitrush`] command with `args`, run through `tests/support/tether.py` with bitrush's
/// test environment: bitrush does not watch its stdin, and the tether kills it when the test
/// process goes, however that ends (a panic, a timeout, a signal). Signals meant for bitrush
/// itself go to the tether's child: see [`child_pid`](super::procs::child_pid).
pub fn tethered_bitrush(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Command {
    let plain = bitrush();
    let mut cmd = tethered(Path::new(plain.get_program()));
    cmd.args(args);
    for (key, value) in plain.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
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

/// Runs `bitrush download -o OUT TORRENT EXTRA...` to completion (`torrent`
/// may also be a magnet link).
pub fn run_download(torrent: impl AsRef<OsStr>, out_path: &Path, extra: &[&str]) -> Output {
    run_bitrush(output_args("download", out_path, torrent, extra))
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
            let counted = proc.wait_until(STARTUP_TIMEOUT, |_| {
                tracker.scrape(info_hash).0 >= expected_seeders
            });
            match counted {
                Ok(()) => return BitrushSeeder { port, proc },
                // Lost the race for the port: try another.
                Err(_) if proc.logs().contains("cannot listen") => last_logs = proc.logs(),
                Err(e) => panic!(
                    "tracker never counted {expected_seeders} seeders with bitrush seed: {e}\n{}\n{}",
                    proc.logs(),
                    tracker.logs()
                ),
            }
        }
        panic!("bitrush seed failed to listen on a free port\n{last_logs}");
    }
}

listener_accessors!(BitrushSeeder);
