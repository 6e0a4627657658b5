//! Streaming and choosing what to download, against libtorrent seeders:
//! `download -o -` (stdout carries exactly the payload, in order; a slow reader keeps memory
//! bounded), `--file`, `--list`, `--only`, `--sequential`, the rate and peer limits, and
//! `--json` lines.

mod common;

use common::*;
use sha1::{Digest, Sha1};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

fn sha1_hex(data: &[u8]) -> String {
    to_hex(&Sha1::digest(data))
}

/// `download -o - <torrent> EXTRA...`, run to completion.
fn run_stream(torrent: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> =
        vec!["download".into(), "-o".into(), "-".into(), torrent.into()];
    args.extend(extra.iter().map(std::ffi::OsString::from));
    run_bitrush(args)
}

#[test]
fn streams_a_single_file_to_stdout_in_order() {
    let swarm = Swarm::single_file("stream-single", 3 * MIB + 777, 16, 71, false);
    let _seeder = swarm.lt_seeder();
    let out = run_stream(&swarm.torrent, &[]);
    assert_success(&out);
    // `| sha1sum`: stdout is the payload and nothing else.
    assert_eq!(
        sha1_hex(&out.stdout),
        sha1_hex(&swarm.data),
        "stdout is not the payload ({} bytes of {})\n{}",
        out.stdout.len(),
        swarm.data.len(),
        stderr_of(&out)
    );
    let err = stderr_of(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("Downloaded ") && l.ends_with(" to -.")),
        "the Downloaded line belongs on stderr\n{err}"
    );
}

#[test]
fn streams_one_file_of_a_tree_chosen_by_index_or_path() {
    // 32 KiB pieces: the chosen files share pieces with their neighbours.
    let files = [
        ("a.bin", 100_003),
        ("sub/b.bin", 700_001),
        ("sub/c.txt", 10),
        ("z.bin", 50_000),
    ];
    let swarm = Swarm::tree("stream-tree", "tree", &files, 15, 72);
    let _seeder = swarm.lt_seeder();
    for (which, path) in [
        ("1", "sub/b.bin"),
        ("tree/z.bin", "z.bin"),
        ("sub/c.txt", "sub/c.txt"),
    ] {
        let out = run_stream(&swarm.torrent, &["--file", which]);
        assert_success(&out);
        let want = &swarm.tree[path];
        assert_eq!(
            sha1_hex(&out.stdout),
            sha1_hex(want),
            "--file {which}: stdout is not {path}\n{}",
            stderr_of(&out)
        );
    }
    // A magnet link streams too (the metadata comes from the seeder first).
    let link = magnet_link(
        &swarm.info.info_hash,
        None,
        &[swarm.tracker.http_url()],
        &[],
    );
    let out = run_bitrush(["download", "-o", "-", "--file", "sub/b.bin", &link]);
    assert_success(&out);
    assert_eq!(
        sha1_hex(&out.stdout),
        sha1_hex(&swarm.tree["sub/b.bin"]),
        "magnet stream"
    );
    // A tree without --file: which file is not guessed.
    let out = run_stream(&swarm.torrent, &[]);
    assert!(assert_cli_error(&out).contains("--file"));
    let out = run_stream(&swarm.torrent, &["--only", "1"]);
    assert!(assert_cli_error(&out).contains("--file"));
    let out = run_stream(&swarm.torrent, &["--file", "9"]);
    assert!(assert_cli_error(&out).contains("no file 9"));
}

/// Peak resident memory (`VmHWM`) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Bytes on disk (allocated blocks: the staged file is sparse) of the file bitrush stages the
/// stream in, found among its open descriptors.
fn staged_bytes(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .find(|target| target.to_string_lossy().contains("bitrush-stream-"))
        .and_then(|target| std::fs::metadata(target).ok())
        .map(|m| m.blocks() * 512)
}

/// Kills the child when dropped (the test may panic mid-read).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_throttled_reader_gets_the_payload_with_bounded_memory() {
    // 96 MiB read at about 24 MiB/s: three times the priority window and the piece budget
    // together, so a client that buffered ahead of the reader would show it.
    let len = 96 * MIB + 12_345;
    let swarm = Swarm::single_file("stream-slow", len, 18, 73, false);
    let _seeder = swarm.lt_seeder();
    let mut cmd: Command = bitrush_with([
        "download".as_ref(),
        "-o".as_ref(),
        "-".as_ref(),
        swarm.torrent.as_os_str(),
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("start bitrush"));
    let pid = child.0.id();
    let mut stdout = child.0.stdout.take().expect("stdout");
    let stderr = child.0.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    const RATE: f64 = 24.0 * MIB as f64;
    let mut started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    let (mut paused, mut staged_during_pause) = (false, 0u64);
    let mut hasher = Sha1::new();
    let mut got = 0usize;
    let mut peak = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        assert!(Instant::now() < deadline, "the stream did not end in time");
        let n = stdout.read(&mut buf).expect("read stdout");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        got += n;
        if !paused && got >= MIB {
            // The reader stops for a while: the download must stop a window ahead of it
            // (32 MiB) instead of fetching the rest (a local seeder sends it in a second or two).
            paused = true;
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(bytes) = staged_bytes(pid) {
                    staged_during_pause = staged_during_pause.max(bytes);
                }
            }
            started = Instant::now() - Duration::from_secs_f64(got as f64 / RATE);
        }
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        // Throttle: never ahead of RATE bytes per second since the start.
        let due = started + Duration::from_secs_f64(got as f64 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let status = child.0.wait().expect("wait");
    let err = stderr_reader.join().unwrap_or_default();
    assert!(status.success(), "bitrush failed: {status}\n{err}");
    assert_eq!(got, len, "stdout length\n{err}");
    assert_eq!(
        to_hex(&hasher.finalize()),
        sha1_hex(&swarm.data),
        "stdout hash"
    );
    assert!(peak > 0, "no /proc reading of bitrush's memory");
    assert!(
        staged_during_pause > 0,
        "the staged file was not found\n{err}"
    );
    assert!(
        staged_during_pause < 40 * MIB as u64,
        "{} MiB were fetched while the reader paused after 1 MiB: no back-pressure\n{err}",
        staged_during_pause / MIB as u64
    );
    assert!(
        peak < 64 * MIB as u64,
        "peak RSS {} MiB while a slow reader streamed {} MiB\n{err}",
        peak / MIB as u64,
        len / MIB
    );
}

#[test]
fn list_prints_the_files_with_index_and_length() {
    let files = [("a.bin", 1_000), ("sub/b.bin", 20_000), ("z", 3)];
    let swarm = Swarm::tree("stream-list", "t", &files, 15, 74);
    let out = run_bitrush([
        "download".as_ref(),
        "--list".as_ref(),
        swarm.torrent.as_os_str(),
    ]);
    assert_success(&out);
    assert_eq!(stdout_of(&out), "0 1000 a.bin\n1 20000 sub/b.bin\n2 3 z\n");
    let out = run_bitrush([
        "download".as_ref(),
        "--list".as_ref(),
        "--json".as_ref(),
        swarm.torrent.as_os_str(),
    ]);
    assert_success(&out);
    let files = &json_lines(&out)[0]["files"];
    assert_eq!(files[1]["path"], "sub/b.bin");
    assert_eq!(files[1]["length"], 20_000);
    assert_eq!(files[2]["index"], 2);
}

/// Sorted indices as `--only` text, runs as ranges: `[0, 1, 2, 5]` -> `0-2,5`.
fn compress(indices: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            indices[i].to_string()
        } else {
            format!("{}-{}", indices[i], indices[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

#[test]
fn only_downloads_the_chosen_files() {
    // Files of whole 32 KiB pieces: no piece is shared, so nothing but the chosen files is
    // written.
    const P: usize = 32 * 1024;
    let files = [
        ("f0.bin", 3 * P),
        ("f1.bin", 2 * P),
        ("f2.bin", P),
        ("d/f3.bin", 5 * P),
        ("d/f4.bin", P),
        ("f5.bin", 2 * P),
    ];
    let swarm = Swarm::tree("stream-only", "t", &files, 15, 75);
    let _seeder = swarm.lt_seeder();
    let out_path = swarm.out_dir("out").join("t");
    // Indices as `--list` numbers the files (the torrent's order), written with a range.
    let chosen = ["f0.bin", "d/f3.bin", "d/f4.bin", "f5.bin"];
    let mut indices: Vec<usize> = swarm
        .info
        .real_files()
        .enumerate()
        .filter(|(_, f)| chosen.contains(&f.path.as_str()))
        .map(|(i, _)| i)
        .collect();
    indices.sort_unstable();
    let only = compress(&indices);
    assert!(only.contains('-'), "{only}");
    let out = run_download(&swarm.torrent, &out_path, &["--only", &only]);
    assert_success(&out);
    for (name, _) in files {
        let path = out_path.join(name);
        if chosen.contains(&name) {
            assert_file_eq(&path, &swarm.tree[name], name);
        } else {
            assert!(!path.exists(), "{name} was not chosen but exists");
        }
    }
    let out = run_download(&swarm.torrent, &out_path, &["--only", "2-1"]);
    assert!(assert_cli_error(&out).contains("backwards"));
    let out = run_download(&swarm.torrent, &out_path, &["--only", "0,6"]);
    assert!(assert_cli_error(&out).contains("no file 6"));
}

#[test]
fn limits_and_sequential_are_accepted_and_the_download_completes() {
    let swarm = Swarm::single_file("stream-limits", 2 * MIB + 5, 16, 76, false);
    let _seeder = swarm.lt_seeder();
    let out_path = swarm.out_dir("out").join("p.bin");
    let out = run_download(
        &swarm.torrent,
        &out_path,
        &[
            "--sequential",
            "--max-download-rate",
            "64M",
            "--max-upload-rate",
            "500K",
            "--max-peers",
            "4",
        ],
    );
    assert_success(&out);
    assert_file_eq(&out_path, &swarm.data, "downloaded file");
    for (flag, bad) in [
        ("--max-download-rate", "fast"),
        ("--max-upload-rate", "-1K"),
        ("--max-download-rate", "0"),
        ("--max-peers", "0"),
        ("--only", "x"),
    ] {
        let arg = format!("{flag}={bad}");
        let out = run_download(&swarm.torrent, &out_path, &[&arg]);
        let line = assert_cli_error(&out);
        assert!(line.contains(bad), "{flag} {bad}: {line}");
    }
}

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout_of(out)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}\n{}", dump(out)))
        })
        .collect()
}

#[test]
fn json_download_prints_progress_objects_and_a_summary() {
    let swarm = Swarm::single_file("stream-json", 4 * MIB + 3, 16, 77, false);
    let _seeder = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(2 * MIB as u64));
    let out_path = swarm.out_dir("out").join("p.bin");
    let out = run_download(&swarm.torrent, &out_path, &["--json"]);
    assert_success(&out);
    assert_file_eq(&out_path, &swarm.data, "downloaded file");
    let lines = json_lines(&out);
    let (summary, progress) = lines.split_last().expect("some JSON lines");
    assert!(!progress.is_empty(), "no progress object\n{}", dump(&out));
    for p in progress {
        assert_eq!(p["event"], "progress");
        for key in [
            "downloaded_bytes",
            "total_bytes",
            "download_rate",
            "upload_rate",
            "peers",
            "eta_seconds",
        ] {
            assert!(p.get(key).is_some(), "progress lacks {key}: {p}");
        }
        assert_eq!(p["total_bytes"], swarm.data.len() as u64);
    }
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["downloaded_bytes"], swarm.data.len() as u64);
    assert_eq!(summary["total_bytes"], swarm.data.len() as u64);
    assert_eq!(summary["output"], out_path.display().to_string());
}

#[test]
fn json_info_peers_and_magnet_parse() {
    let swarm = Swarm::single_file("stream-json-info", 100_000, 15, 78, false);
    let _seeder = swarm.lt_seeder();
    let out = run_bitrush([
        "info".as_ref(),
        swarm.torrent.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_success(&out);
    let info = &json_lines(&out)[0];
    assert_eq!(info["info_hash"], swarm.info.info_hash);
    assert_eq!(info["length"], 100_000);
    assert_eq!(info["piece_length"], 32_768);
    assert_eq!(info["piece_hashes"].as_array().map(Vec::len), Some(4));
    assert_eq!(info["files"][0]["length"], 100_000);

    let out = run_bitrush([
        "peers".as_ref(),
        swarm.torrent.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_success(&out);
    let peers = &json_lines(&out)[0]["peers"];
    assert!(
        peers.as_array().is_some_and(|p| !p.is_empty()),
        "no peers: {peers}"
    );

    let link = format!(
        "magnet:?xt=urn:btih:{}&tr={}",
        swarm.info.info_hash,
        pct("http://127.0.0.1:1/announce")
    );
    let out = run_bitrush(["magnet_parse", &link, "--json"]);
    assert_success(&out);
    let m = &json_lines(&out)[0];
    assert_eq!(m["info_hash"], swarm.info.info_hash);
    assert_eq!(m["tracker"], "http://127.0.0.1:1/announce");
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_bitrush(["completions", shell]);
        assert_success(&out);
        let script = stdout_of(&out);
        assert!(
            script.contains("bitrush") && script.contains("magnet_download"),
            "{shell}: {script}"
        );
    }
    let out = run_bitrush(["man"]);
    assert_success(&out);
    let page = stdout_of(&out);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    assert!(page.contains("max\\-download\\-rate"), "{page}");
    let out = run_bitrush(["completions", "powershell-ish"]);
    assert_cli_error(&out);
}
