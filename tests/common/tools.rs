//! Where the tests find their tools: the `tests/support/` scripts, external
//! programs looked up in PATH, and the Python that has `libtorrent`. A missing
//! tool makes the test panic with a message naming it, never skip.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The Python that has the `libtorrent` module (not a pyenv shim).
pub const PYTHON: &str = "/usr/bin/python3";

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

/// A command running `program` through `tests/support/tether.py`, which kills
/// it when the test process goes away (for tools that do not watch their
/// stdin: opentracker, aria2c).
pub fn tethered(program: &Path) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(support("tether.py")).arg(program);
    cmd
}

/// A command running the Python `code` (`-c`) with libtorrent available.
pub fn lt_python(code: &str) -> Command {
    require_libtorrent();
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-c").arg(code);
    cmd
}

/// `curl` with `args` against `url` (an HTTP API on loopback): the status (0 if curl got
/// none) and the body.
pub fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args([
        "-s",
        "-S",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--max-time",
        "30",
    ])
    .args(args)
    .arg(url);
    let out = super::procs::run_checked("curl", cmd, std::time::Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
