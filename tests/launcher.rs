//! `./your_bittorrent.sh`: says when it builds (and shows cargo's progress) so a first build does
//! not look hung, builds quietly when nothing changed, and keeps stdout for the command alone.
//!
//! The script runs from a copy in a scratch project, with a stand-in `cargo` first in PATH that
//! logs how it was called and "builds" a stand-in binary: a real build takes minutes.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// The stand-in cargo: logs its arguments; without `--quiet` it talks like cargo (on stderr
/// and, to check the script keeps it off stdout, on stdout) and "builds"; with `--quiet` it
/// builds only a missing binary, silently.
const FAKE_CARGO: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_CARGO_LOG"
bin="$FAKE_PROJECT/target/dist/bitrush"
case " $* " in
*" --quiet "*) [ -x "$bin" ] && exit 0 ;;
*) echo "   Compiling bitrush-cli v0.1.0" >&2; echo "cargo talking on stdout" ;;
esac
mkdir -p "$(dirname "$bin")"
printf '#!/bin/sh\necho "OUT $*"\necho ERR >&2\n' > "$bin"
chmod +x "$bin"
"#;

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A scratch project holding a copy of the script, and the stand-in cargo.
struct Project {
    dir: TestDir,
}

impl Project {
    fn new() -> Project {
        let dir = TestDir::new("launcher");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("your_bittorrent.sh");
        let text = fs::read_to_string(script).expect("read your_bittorrent.sh");
        write_executable(&dir.join("your_bittorrent.sh"), &text);
        fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"bitrush-cli\"\n",
        )
        .unwrap();
        fs::write(dir.join("Cargo.lock"), "").unwrap();
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::create_dir_all(dir.join("crates/core/src")).unwrap();
        fs::write(dir.join("crates/core/src/lib.rs"), "").unwrap();
        fs::create_dir_all(dir.join("crates/core/tests")).unwrap();
        fs::create_dir_all(dir.join("bin")).unwrap();
        write_executable(&dir.join("bin/cargo"), FAKE_CARGO);
        Project { dir }
    }

    /// Runs `./your_bittorrent.sh ARGS` from another folder.
    fn run(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(self.dir.join("your_bittorrent.sh"));
        cmd.args(args)
            .current_dir(std::env::temp_dir())
            .env("PATH", path)
            .env_remove("CARGO_TARGET_DIR")
            .env("FAKE_PROJECT", self.dir.path())
            .env("FAKE_CARGO_LOG", self.dir.join("cargo.log"));
        let out = run_with_timeout("your_bittorrent.sh", cmd, Duration::from_secs(60));
        assert_success(&out);
        out
    }

    /// The calls to cargo so far, one line each.
    fn cargo_calls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("cargo.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Writes `text` to `rel` and dates it far in the future: newer than the binary, whatever
    /// the file system's clock granularity.
    fn edit(&self, rel: &str, text: &str) {
        let path = self.dir.join(rel);
        fs::write(&path, text).expect("write");
        let status = Command::new("touch")
            .args(["-d", "2100-01-01"])
            .arg(&path)
            .status()
            .expect("run touch");
        assert!(status.success());
    }
}

#[test]
fn first_run_says_it_builds_and_shows_cargo_progress_on_stderr_only() {
    let p = Project::new();
    let out = p.run(&["decode", "i1e"]);
    assert_eq!(stdout_of(&out), "OUT decode i1e\n", "{}", dump(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.starts_with("building bitrush (first run only)…\n"),
        "{}",
        dump(&out)
    );
    assert!(
        stderr.contains("Compiling bitrush-cli"),
        "cargo's progress is hidden\n{}",
        dump(&out)
    );
    assert!(stderr.contains("cargo talking on stdout"), "{}", dump(&out));
    assert!(stderr.ends_with("ERR\n"), "{}", dump(&out));
    let calls = p.cargo_calls();
    assert_eq!(calls.len(), 1);
    assert!(!calls[0].contains("--quiet"), "{calls:?}");
}

#[test]
fn nothing_to_build_is_quiet_and_an_edit_is_announced() {
    let p = Project::new();
    p.run(&["info", "x.torrent"]);

    // Up to date: cargo checks quietly, and only the command speaks.
    let out = p.run(&["info", "x.torrent"]);
    assert_eq!(stdout_of(&out), "OUT info x.torrent\n");
    assert_eq!(stderr_of(&out), "ERR\n", "{}", dump(&out));
    assert!(
        p.cargo_calls()[1].contains("--quiet"),
        "{:?}",
        p.cargo_calls()
    );

    // A crate's test file is not part of the binary: still nothing to say.
    p.edit("crates/core/tests/t.rs", "// edited\n");
    let out = p.run(&["info", "x.torrent"]);
    assert_eq!(stderr_of(&out), "ERR\n", "{}", dump(&out));

    // An edited source: said, with cargo's progress.
    p.edit("crates/core/src/lib.rs", "// edited\n");
    let out = p.run(&["info", "x.torrent"]);
    assert_eq!(stdout_of(&out), "OUT info x.torrent\n");
    assert!(
        stderr_of(&out).starts_with("rebuilding bitrush (sources changed)…\n")
            && stderr_of(&out).contains("Compiling bitrush-cli"),
        "{}",
        dump(&out)
    );
}

#[test]
fn quiet_builds_quietly() {
    let p = Project::new();
    let out = p.run(&["-q", "download", "-o", "out", "x.torrent"]);
    assert_eq!(stdout_of(&out), "OUT -q download -o out x.torrent\n");
    assert_eq!(stderr_of(&out), "ERR\n", "{}", dump(&out));
    assert!(p.cargo_calls()[0].contains("--quiet"));
}
