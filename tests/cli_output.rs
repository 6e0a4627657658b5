//! What a user sees on stderr while bitrush works, stdout staying exactly as specified: a
//! plain progress line every few seconds when stderr is not a terminal (bytes, percent, rate,
//! peers, ETA), a summary when a download completes and when seeding ends, nothing but errors
//! with `-q`, colour only on a terminal and never with `NO_COLOR`, a seeding display with
//! uploads and no ETA, and a reason (with back-off) when no peer lets a download progress.
//!
//! Terminals are real pseudo-terminals (tests/support/in_pty.py). Rates are only ever checked
//! against an upper bound a throttled seeder cannot exceed, never against a speed this machine
//! must reach.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The `downloading: ` lines of a run's stderr, parsed.
#[derive(Debug)]
struct ProgressLine {
    done: f64,
    total: f64,
    rate: f64,
    text: String,
}

/// `512 B`, `1.5 KiB`, `3.0 MiB` as bytes.
fn parse_bytes(text: &str) -> Option<f64> {
    let (value, unit) = text.trim().split_once(' ')?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => KIB as f64,
        "MiB" => MIB as f64,
        "GiB" => (MIB * KIB) as f64,
        _ => return None,
    };
    Some(value.parse::<f64>().ok()? * scale)
}

/// Parses `downloading: 1.2 MiB of 4.0 MiB (30.2%), 240.0 KiB/s, 2 peers, ETA 12s`.
fn parse_progress_line(line: &str) -> Option<ProgressLine> {
    let rest = line.strip_prefix("downloading: ")?;
    let mut items = rest.split(", ");
    let (amounts, rate, peers, eta) = (items.next()?, items.next()?, items.next()?, items.next()?);
    let (done, rest) = amounts.split_once(" of ")?;
    let (total, percent) = rest.split_once(" (")?;
    let ok = percent.ends_with("%)")
        && (peers.ends_with(" peers") || peers == "1 peer")
        && eta.starts_with("ETA ")
        && items.next().is_none();
    ok.then_some(ProgressLine {
        done: parse_bytes(done)?,
        total: parse_bytes(total)?,
        rate: parse_bytes(rate.strip_suffix("/s")?)?,
        text: line.to_string(),
    })
}

/// Every progress line of `stderr` (a line that starts like one must parse).
fn progress_lines(stderr: &str) -> Vec<ProgressLine> {
    stderr
        .lines()
        .filter(|l| l.starts_with("downloading: "))
        .map(|l| parse_progress_line(l).unwrap_or_else(|| panic!("malformed progress line {l:?}")))
        .collect()
}

/// Whether `text` holds an SGR (colour) escape sequence: ESC `[`, digits and `;`, then `m`.
fn has_colour(text: &str) -> bool {
    text.match_indices("\x1b[").any(|(i, _)| {
        let rest = &text[i + 2..];
        let params = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b';')
            .count();
        rest.as_bytes().get(params) == Some(&b'm')
    })
}

/// Runs bitrush with `args` with its stderr on a pseudo-terminal; the terminal's output comes
/// back as the run's stderr.
fn run_in_terminal(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = support_script("in_pty.py");
    cmd.arg(env!("CARGO_BIN_EXE_bitrush")).args(args);
    // The same environment as `bitrush()` gives the binary.
    let plain = bitrush();
    for (key, value) in plain.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.env_remove("NO_COLOR").env("TERM", "xterm-256color");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    run_with_timeout("bitrush in a terminal", cmd, PROCESS_TIMEOUT)
}

/// The exact stdout line of a successful `download`.
fn downloaded_line(torrent: &Path, out_path: &Path) -> String {
    format!(
        "Downloaded {} to {}.\n",
        torrent.display(),
        out_path.display()
    )
}

#[test]
fn plain_progress_lines_and_a_summary_when_stderr_is_not_a_terminal() {
    // 3 MiB from a seeder throttled to 256 KiB/s: about 12 s, so several progress lines.
    let cap = 256 * KIB;
    let swarm = Swarm::single_file("out-lines", 3 * MIB as usize, 18, 71, false);
    let _seeder = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(cap));
    let out_path = swarm.out_dir("out").join("payload.bin");
    let out = run_download(&swarm.torrent, &out_path, &[]);
    assert_success(&out);
    assert_eq!(stdout_of(&out), downloaded_line(&swarm.torrent, &out_path));
    assert_file_eq(&out_path, &swarm.data, "downloaded file");

    let stderr = stderr_of(&out);
    let lines = progress_lines(&stderr);
    assert!(!lines.is_empty(), "no progress line\n{}", dump(&out));
    for line in &lines {
        assert_eq!(line.total, (3 * MIB) as f64, "{}", line.text);
        assert!(line.done < line.total, "{}", line.text);
        assert!(line.text.contains(", 1 peer, "), "{}", line.text);
        assert!(
            line.rate <= (2 * cap) as f64,
            "a seeder capped at {cap} B/s cannot give this rate: {}",
            line.text
        );
    }
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("downloaded "))
        .unwrap_or_else(|| panic!("no summary\n{}", dump(&out)));
    assert!(
        summary.starts_with("downloaded 3.0 MiB in ")
            && summary.contains(" average) from 1 peer, ")
            && summary.ends_with(" wasted"),
        "{summary}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a pipe\n{}",
        dump(&out)
    );
}

#[test]
fn quiet_shows_nothing_but_errors() {
    let swarm = Swarm::single_file("out-quiet", 600_000, 15, 72, false);
    let _seeder = swarm.lt_seeder();
    let out_path = swarm.out_dir("out").join("payload.bin");
    let out = run_download(&swarm.torrent, &out_path, &["-q"]);
    assert_success(&out);
    assert_eq!(stdout_of(&out), downloaded_line(&swarm.torrent, &out_path));
    assert_eq!(stderr_of(&out), "", "-q printed something\n{}", dump(&out));

    // An error still shows, alone.
    let lonely_dir = TestDir::new("out-quiet-lonely");
    let (lonely, _) = unannounced_torrent(&lonely_dir, 40_000, 73);
    let out = run_bitrush(output_args(
        "download",
        &swarm.out_dir("out2").join("x.bin"),
        &lonely,
        &["--quiet"],
    ));
    let line = assert_cli_error(&out);
    assert!(line.starts_with("error: no tracker answered"), "{line}");
}

#[test]
fn a_resumed_download_at_a_capped_rate_counts_only_this_sessions_bytes() {
    // 20 pieces of 256 KiB; the first 8 are already at the output, the rest (3 MiB) come from a
    // seeder throttled to 256 KiB/s (about 12 s).
    let cap = 256 * KIB;
    let piece = 256 * KIB as usize;
    let swarm = Swarm::single_file("out-resumed", 20 * piece, 18, 74, false);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut partial = swarm.data.clone();
    partial[8 * piece..].fill(0);
    std::fs::write(&out_path, &partial).expect("write the partial output");
    let _seeder = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(cap));

    let out = run_download(&swarm.torrent, &out_path, &[]);
    assert_success(&out);
    assert_eq!(stdout_of(&out), downloaded_line(&swarm.torrent, &out_path));
    assert_file_eq(&out_path, &swarm.data, "resumed download");
    let stderr = stderr_of(&out);
    let lines = progress_lines(&stderr);
    assert!(!lines.is_empty(), "no progress line\n{}", dump(&out));
    for line in &lines {
        // The 2 MiB present at start count as done, never as speed.
        assert!(line.done >= (2 * MIB) as f64, "{}", line.text);
        assert!(
            line.rate <= (2 * cap) as f64,
            "the rate counts bytes this session did not download: {}",
            line.text
        );
    }
    assert!(
        stderr
            .lines()
            .any(|l| l
                .starts_with("downloaded 3.0 MiB of 5.0 MiB (2.0 MiB were already present) in ")),
        "no summary of a resumed download\n{}",
        dump(&out)
    );
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    // A tracker that refuses: a warning (coloured on a terminal) and then an error.
    let dir = TestDir::new("out-colour");
    let (torrent, _) = unannounced_torrent(&dir, 40_000, 75);
    let out_path = dir.join("out.bin");
    let args = output_args("download", &out_path, &torrent, &[]);
    let args: Vec<&str> = args.iter().map(|a| a.to_str().expect("utf-8")).collect();

    let piped = run_bitrush(&args);
    let line = assert_cli_error(&piped);
    assert!(
        !has_colour(&stderr_of(&piped)),
        "colour in a pipe\n{}",
        dump(&piped)
    );
    // The refused tracker's cause, once, without the HTTP stack's layers.
    assert!(
        line.starts_with(&format!(
            "error: no tracker answered: {UNUSED_ANNOUNCE}: cannot connect: "
        )) && line.matches(": ").count() == 4,
        "{line}"
    );

    let terminal = run_in_terminal(&args, &[]);
    assert!(
        has_colour(&stderr_of(&terminal)),
        "no colour on a terminal\n{}",
        dump(&terminal)
    );
    for no_color in ["1", "yes"] {
        let plain = run_in_terminal(&args, &[("NO_COLOR", no_color)]);
        assert!(
            stderr_of(&plain).contains("error: no tracker answered"),
            "{}",
            dump(&plain)
        );
        assert!(
            !has_colour(&stderr_of(&plain)),
            "colour with NO_COLOR={no_color}\n{}",
            dump(&plain)
        );
    }
}

#[test]
fn seeding_shows_uploads_and_peers_and_a_seed_time_implies_seed() {
    let swarm = Swarm::single_file("out-seeding", 300_000, 15, 76, false);
    let _seeder = swarm.lt_seeder();
    let out_path = swarm.out_dir("out").join("payload.bin");

    // `--seed-time` without `--seed`: the download seeds for that long, then says so.
    let out = run_download(&swarm.torrent, &out_path, &["--seed-time", "2"]);
    assert_success(&out);
    assert_eq!(stdout_of(&out), downloaded_line(&swarm.torrent, &out_path));
    let stderr = stderr_of(&out);
    let summary = stderr
        .lines()
        .position(|l| l.starts_with("downloaded "))
        .unwrap_or_else(|| panic!("no download summary\n{}", dump(&out)));
    let seeded = stderr
        .lines()
        .position(|l| l.starts_with("seeded for ") && l.contains(": uploaded "))
        .unwrap_or_else(|| panic!("--seed-time did not seed\n{}", dump(&out)));
    assert!(summary < seeded, "{}", dump(&out));

    // On a terminal, `seed` draws uploads, upload rate and peers: no download rate, no ETA.
    let torrent = swarm.torrent.to_str().expect("utf-8");
    let data = out_path.to_str().expect("utf-8");
    let seed = run_in_terminal(&["seed", torrent, data, "--seed-time", "2"], &[]);
    assert_success(&seed);
    let screen = stderr_of(&seed);
    assert!(
        screen.contains("seeding: ")
            && screen.contains(" uploaded · ")
            && screen.contains("/s up · "),
        "{}",
        dump(&seed)
    );
    assert!(!screen.contains("ETA"), "{}", dump(&seed));
    assert!(screen.contains("seeded for "), "{}", dump(&seed));
}

#[test]
fn a_peer_that_keeps_dropping_us_is_dialled_with_back_off_and_the_reason_is_said() {
    let swarm = Swarm::single_file("out-stalled", 200_000, 15, 77, false);
    let dropping = DroppingPeer::start();
    swarm
        .tracker
        .announce_fake_peer(&swarm.info.info_hash, dropping.port(), true);
    let out_path = swarm.out_dir("out").join("payload.bin");
    let mut proc = spawn_bitrush(output_args("download", &out_path, &swarm.torrent, &[]));
    // The reason comes once nothing has progressed for a while (30 s).
    let said = proc.wait_until(PROCESS_TIMEOUT, |p| p.stderr().contains("no progress: "));
    if let Err(e) = said {
        panic!("no reason given: {e}\n{}", proc.logs());
    }
    let dials = dropping.connections();
    send_signal(proc.pid(), "INT");
    proc.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no exit after SIGINT\n{}", proc.logs()));
    let stderr = proc.stderr();
    // Re-dialling every 2 s would be 15 dials by now; backing off from 5 s, 3 or 4.
    assert!(
        (1..=6).contains(&dials),
        "{dials} dials before the stall report\n{}",
        proc.logs()
    );
    let reason = stderr
        .lines()
        .find(|l| l.contains("no progress: "))
        .expect("seen above");
    assert!(
        reason.contains("WARN no progress: ")
            && reason.ends_with("; retrying at growing intervals"),
        "{reason}"
    );
    assert!(
        stderr.contains(&format!(
            "error: interrupted: 0 of {} pieces (0 B of ",
            swarm.info.num_pieces
        )),
        "{}",
        proc.logs()
    );
}

#[test]
fn progress_line_parser_accepts_only_the_documented_shape() {
    let line = parse_progress_line(
        "downloading: 1.2 MiB of 4.0 MiB (30.2%), 240.0 KiB/s, 2 peers, ETA 12s",
    )
    .expect("documented shape");
    assert_eq!(line.total, (4 * MIB) as f64);
    assert_eq!(line.rate, 240.0 * KIB as f64);
    assert!(parse_progress_line("downloading: 1.2 MiB, 240.0 KiB/s").is_none());
    assert!(has_colour("a \x1b[33mWARN\x1b[0m b"));
    assert!(!has_colour("\x1b[2K\x1b[1A redraw"));
}
