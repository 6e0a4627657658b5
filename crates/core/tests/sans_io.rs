//! The core crate stays sans-IO: its dependencies include no runtime or socket crate, and its
//! sources (outside test code) call no socket, file, clock or entropy API. Time and randomness
//! are passed in by the `bitrush` crate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// APIs that do I/O, read a clock or draw entropy.
const FORBIDDEN: &[&str] = &[
    "std::net",
    "std::fs",
    "std::thread",
    "std::process",
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "OsRng",
    "from_entropy",
    "rand::random",
    "tokio",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part of a source file that is not test code: test-only files (`*tests.rs`, the
/// simulation, fixtures) are skipped whole, and a file is cut at its `#[cfg(test)]` module.
fn production_code(path: &Path, text: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let in_sim = path.components().any(|c| c.as_os_str() == "sim");
    if name.ends_with("tests.rs") || name == "testing.rs" || in_sim {
        return None;
    }
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next_is_test_mod = lines.peek().is_some_and(|l| {
            l.trim_start().starts_with("mod ") || l.trim_start().starts_with("pub(crate) mod ")
        });
        if line.trim() == "#[cfg(test)]"
            && next_is_test_mod
            && !lines.peek().is_some_and(|l| l.trim_end().ends_with(';'))
        {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    Some(code)
}

#[test]
fn sources_use_no_io_clock_or_entropy_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut found = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let Some(code) = production_code(path, &text) else {
            continue;
        };
        for (n, line) in code.lines().enumerate() {
            for api in FORBIDDEN {
                if line.contains(api) {
                    found.push(format!(
                        "{}:{}: {api}: {}",
                        path.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O in the core crate:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_catches_what_it_forbids() {
    let code = production_code(
        Path::new("src/x.rs"),
        "fn f() { let t = std::time::Instant::now(); }\n#[cfg(test)]\nmod tests {\n fn g() { std::fs::read(\"x\"); }\n}\n",
    )
    .unwrap();
    assert!(code.contains("Instant::now"));
    assert!(!code.contains("std::fs"));
    assert!(production_code(Path::new("src/a/fuzz_tests.rs"), "std::fs").is_none());
}

#[test]
fn dependencies_include_no_runtime_or_socket_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "bitrush-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("bitrush-core"), "{tree}");
    for banned in [
        "tokio",
        "reqwest",
        "hyper",
        "mio ",
        "socket2",
        "getrandom",
        "async-std",
    ] {
        assert!(
            !tree.lines().any(|l| l.starts_with(banned)),
            "bitrush-core depends on {banned}:\n{tree}"
        );
    }
}
