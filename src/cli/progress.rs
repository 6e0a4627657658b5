//! What a running session shows on stderr, never on stdout: a bar redrawn in place on a
//! terminal; elsewhere (a service, a pipe, a log file, CI) one plain line every few seconds;
//! and a summary line when the download completes and when seeding ends. `-q` silences all of
//! it (errors and warnings still print). Colour only on a terminal, never with `NO_COLOR`.
//!
//! With `--json`, progress goes to stdout instead, as one JSON object per line every second
//! ([`progress_json`]), and the command ends with a summary object ([`summary_json`]).
//!
//! Rates are the engine's (bytes moved in this session over the last seconds), so pieces
//! present at start never show as speed, and the ETA is computed from them, not guessed by the
//! bar from jumps in position.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bitrush::engine::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

/// How often a plain line is printed while downloading.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a plain line is printed while seeding (a seed runs for hours).
const SEED_LINE_INTERVAL: Duration = Duration::from_secs(60);
/// How often a JSON progress object is printed.
const JSON_INTERVAL: Duration = Duration::from_secs(1);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// A bar redrawn in place (stderr is a terminal).
    Bar { colour: bool },
    /// A plain line every few seconds (stderr is not a terminal).
    Lines,
    /// Nothing but errors and warnings (`-q`).
    Quiet,
    /// JSON progress objects on stdout (`--json`).
    Json,
}

impl Style {
    /// The style for this process's stderr.
    pub fn detect(quiet: bool) -> Style {
        if quiet {
            Style::Quiet
        } else if std::io::stderr().is_terminal() {
            Style::Bar {
                colour: colour_enabled(),
            }
        } else {
            Style::Lines
        }
    }
}

/// Whether stderr may carry colour: it is a terminal, `NO_COLOR` is unset or empty
/// (no-color.org), and `TERM` is not `dumb`.
pub fn colour_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    std::io::stderr().is_terminal() && !no_color && !dumb
}

/// What the session is for, which decides its summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A download (`download`, `download_piece` and the magnet variants), seeding afterwards
    /// if `seed_after`.
    Download { seed_after: bool },
    /// Seeding data already complete (`seed`).
    Seed,
}

/// The display task of one session.
pub struct Display {
    task: tokio::task::JoinHandle<Progress>,
}

impl Display {
    /// Shows the snapshots from `rx` until its sender is dropped; `started` is when the command
    /// started (the summary's clock).
    pub fn start(
        rx: watch::Receiver<Progress>,
        style: Style,
        kind: Kind,
        started: Instant,
    ) -> Display {
        Display {
            task: tokio::spawn(show(rx, style, kind, started)),
        }
    }

    /// Waits for the session's end to be shown; returns the last snapshot.
    pub async fn finish(self) -> Progress {
        self.task.await.unwrap_or_default()
    }
}

/// Where the lines go: above the bar, or straight to stderr.
enum Out {
    Bar {
        bar: ProgressBar,
        colour: bool,
        seeding: bool,
    },
    Lines {
        next: Instant,
    },
    Quiet,
    Json {
        next: Instant,
    },
}

impl Out {
    fn new(style: Style) -> Out {
        match style {
            Style::Bar { colour } => {
                let bar = ProgressBar::new(0);
                bar.set_style(bar_style(colour, false));
                bar.enable_steady_tick(Duration::from_millis(120));
                Out::Bar {
                    bar,
                    colour,
                    seeding: false,
                }
            }
            Style::Lines => Out::Lines {
                next: Instant::now() + LINE_INTERVAL,
            },
            Style::Quiet => Out::Quiet,
            Style::Json => Out::Json {
                next: Instant::now(),
            },
        }
    }

    /// A line for the user (a summary), unless quiet.
    fn say(&self, line: &str) {
        match self {
            Out::Bar { bar, .. } => bar.println(line),
            Out::Lines { .. } => eprintln!("{line}"),
            // The command prints the summary object itself.
            Out::Quiet | Out::Json { .. } => {}
        }
    }

    /// Shows snapshot `p`: redraws the bar, or prints a line when one is due.
    fn update(&mut self, p: &Progress, seeding: bool, now: Instant) {
        match self {
            Out::Bar {
                bar,
                colour,
                seeding: drawn_seeding,
            } => {
                if seeding != *drawn_seeding {
                    *drawn_seeding = seeding;
                    bar.set_style(bar_style(*colour, seeding));
                }
                bar.set_length(p.total_bytes);
                bar.set_position(p.done_bytes);
                bar.set_message(status(p, seeding, " · "));
            }
            Out::Lines { next } => {
                if now >= *next {
                    eprintln!(
                        "{}: {}",
                        if seeding { "seeding" } else { "downloading" },
                        status(p, seeding, ", ")
                    );
                    *next = now
                        + if seeding {
                            SEED_LINE_INTERVAL
                        } else {
                            LINE_INTERVAL
                        };
                }
            }
            Out::Json { next } => {
                if now >= *next {
                    println!("{}", progress_json(p, seeding));
                    *next = now + JSON_INTERVAL;
                }
            }
            Out::Quiet => {}
        }
    }

    fn clear(&self) {
        if let Out::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }

    /// When the next plain line is due (`None`: never by the clock).
    fn next_line(&self) -> Option<Instant> {
        match self {
            Out::Lines { next } | Out::Json { next } => Some(*next),
            _ => None,
        }
    }
}

async fn show(
    mut rx: watch::Receiver<Progress>,
    style: Style,
    kind: Kind,
    started: Instant,
) -> Progress {
    let mut out = Out::new(style);
    let mut last = rx.borrow().clone();
    // When the download completed (or seeding began): shown once.
    let mut seeding_since: Option<Instant> = None;
    // JSON objects report the engine's numbers only, never the empty snapshot before its first.
    let mut engine_reported = style != Style::Json;
    loop {
        let line_due = async {
            match out.next_line() {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                last = rx.borrow_and_update().clone();
                engine_reported = true;
            }
            () = line_due => {}
        }
        if !engine_reported {
            continue;
        }
        let now = Instant::now();
        if last.seeding && seeding_since.is_none() {
            seeding_since = Some(now);
            if let Kind::Download { .. } = kind {
                out.say(&download_summary(&last, now.duration_since(started)));
            }
        }
        // A download that does not seed shows no seeding state while it finishes (a stream
        // may take a while to drain to its reader).
        let seeds = !matches!(kind, Kind::Download { seed_after: false });
        out.update(&last, seeding_since.is_some() && seeds, now);
    }
    out.clear();
    let seeded = matches!(kind, Kind::Seed | Kind::Download { seed_after: true });
    if let (Some(since), true) = (seeding_since, seeded) {
        out.say(&seed_summary(&last, since.elapsed()));
    }
    last
}

/// The bar's look: bytes, percent, rate, peers and ETA while downloading; uploads while
/// seeding.
fn bar_style(colour: bool, seeding: bool) -> ProgressStyle {
    let template = match (seeding, colour) {
        (false, true) => "{spinner:.green} [{elapsed_precise}] [{wide_bar:.cyan/blue}] {msg}",
        (false, false) => "{spinner} [{elapsed_precise}] [{wide_bar}] {msg}",
        (true, true) => "{spinner:.green} [{elapsed_precise}] seeding: {msg}",
        (true, false) => "{spinner} [{elapsed_precise}] seeding: {msg}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ ")
}

/// What the bar's message and a plain line say, items joined by `sep`: bytes, percent, rate,
/// peers and ETA while downloading; uploaded bytes, upload rate and peers while seeding.
fn status(p: &Progress, seeding: bool, sep: &str) -> String {
    if seeding {
        return [
            format!("{} uploaded", bytes(p.uploaded_bytes)),
            format!("{}/s up", bytes(p.upload_rate as u64)),
            peers(p.peers),
        ]
        .join(sep);
    }
    let eta = match remaining(p) {
        Some(d) => format!("ETA {}", duration(d)),
        None => "ETA unknown".to_string(),
    };
    [
        format!(
            "{} of {} ({})",
            bytes(p.done_bytes),
            bytes(p.total_bytes),
            percent(p.done_bytes, p.total_bytes)
        ),
        format!("{}/s", bytes(p.rate as u64)),
        peers(p.peers),
        eta,
    ]
    .join(sep)
}

/// A `--json` progress object: bytes, rates, peers and ETA (`null` when unknown).
pub fn progress_json(p: &Progress, seeding: bool) -> serde_json::Value {
    serde_json::json!({
        "event": "progress",
        "state": if seeding { "seeding" } else { "downloading" },
        "downloaded_bytes": p.done_bytes,
        "total_bytes": p.total_bytes,
        "pieces": p.done_pieces,
        "total_pieces": p.total_pieces,
        "received_bytes": p.received_bytes,
        "uploaded_bytes": p.uploaded_bytes,
        "download_rate": p.rate.round() as u64,
        "upload_rate": p.upload_rate.round() as u64,
        "peers": p.peers,
        "eta_seconds": if seeding { None } else { remaining(p).map(|d| d.as_secs()) },
    })
}

/// The `--json` summary object printed when a download ends.
pub fn summary_json(
    p: &Progress,
    elapsed: Duration,
    output: &std::path::Path,
) -> serde_json::Value {
    let fetched = p.done_bytes.saturating_sub(p.present_bytes);
    serde_json::json!({
        "event": "summary",
        "complete": p.done_pieces == p.total_pieces,
        "output": output.display().to_string(),
        "downloaded_bytes": p.done_bytes,
        "total_bytes": p.total_bytes,
        "fetched_bytes": fetched,
        "present_bytes": p.present_bytes,
        "pieces": p.done_pieces,
        "total_pieces": p.total_pieces,
        "uploaded_bytes": p.uploaded_bytes,
        "wasted_bytes": p.wasted_bytes,
        "peers_used": p.peers_used,
        "elapsed_seconds": elapsed.as_secs_f64(),
        "average_rate": (fetched as f64 / elapsed.as_secs_f64().max(1e-3)).round() as u64,
    })
}

/// Time left at the current rate, if anything moves.
fn remaining(p: &Progress) -> Option<Duration> {
    let left = p.total_bytes.saturating_sub(p.done_bytes) as f64;
    (p.rate >= 1.0).then(|| Duration::from_secs_f64((left / p.rate).min(1e9)))
}

/// The line shown when a download completes: what was fetched, how long it took, the average
/// rate, from how many peers, and the bytes wasted (and what was already there, if anything).
fn download_summary(p: &Progress, elapsed: Duration) -> String {
    let fetched = p.done_bytes.saturating_sub(p.present_bytes);
    if fetched == 0 {
        return format!(
            "nothing to download: all {} were already present and verified",
            bytes(p.total_bytes)
        );
    }
    let mut line = format!("downloaded {}", bytes(fetched));
    if p.present_bytes > 0 {
        let _ = write!(
            line,
            " of {} ({} were already present)",
            bytes(p.total_bytes),
            bytes(p.present_bytes)
        );
    }
    let average = fetched as f64 / elapsed.as_secs_f64().max(1e-3);
    let _ = write!(
        line,
        " in {} ({}/s average) from {}, {} wasted",
        duration(elapsed),
        bytes(average as u64),
        peers(p.peers_used),
        bytes(p.wasted_bytes)
    );
    line
}

/// The line shown when seeding ends.
fn seed_summary(p: &Progress, seeded: Duration) -> String {
    let ratio = p.uploaded_bytes as f64 / p.total_bytes.max(1) as f64;
    format!(
        "seeded for {}: uploaded {} (ratio {ratio:.2})",
        duration(seeded),
        bytes(p.uploaded_bytes)
    )
}

/// `1 peer`, `3 peers`.
fn peers(n: usize) -> String {
    if n == 1 {
        "1 peer".to_string()
    } else {
        format!("{n} peers")
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `200.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A share as a percentage with one decimal, rounded down so that only a complete download
/// shows 100%.
fn percent(done: u64, total: u64) -> String {
    if total == 0 || done >= total {
        return "100%".to_string();
    }
    let tenths = (u128::from(done) * 1000 / u128::from(total)) as u64;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// `0.4s`, `12s`, `3m 05s`, `2h 07m`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    }
}

/// A bar for `total` bytes of work (hashing), or `None` when stderr is not a terminal or the
/// user asked for quiet.
pub fn bytes_bar(total: u64, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let template = if colour_enabled() {
        "{spinner:.green} hashing [{elapsed_precise}] [{wide_bar:.cyan/blue}] \
         {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{spinner} hashing [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} \
         {bytes_per_sec} ETA {eta}"
    };
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn downloading() -> Progress {
        Progress {
            done_bytes: 3 * MIB,
            total_bytes: 10 * MIB,
            peers: 2,
            rate: 512.0 * 1024.0,
            ..Progress::default()
        }
    }

    #[test]
    fn units_durations_and_percentages() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 * MIB), "200.0 MiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(duration(Duration::from_secs(7620)), "2h 07m");
        assert_eq!(percent(999, 1000), "99.9%");
        assert_eq!(percent(9999, 10000), "99.9%", "rounded down");
        assert_eq!(percent(1000, 1000), "100%");
        assert_eq!(percent(0, 0), "100%");
        assert_eq!(percent(u64::MAX / 2, u64::MAX), "49.9%");
    }

    #[test]
    fn download_line_has_bytes_percent_rate_peers_and_eta() {
        assert_eq!(
            status(&downloading(), false, ", "),
            "3.0 MiB of 10.0 MiB (30.0%), 512.0 KiB/s, 2 peers, ETA 14s"
        );
        let stalled = Progress {
            rate: 0.0,
            peers: 1,
            ..downloading()
        };
        assert_eq!(
            status(&stalled, false, ", "),
            "3.0 MiB of 10.0 MiB (30.0%), 0 B/s, 1 peer, ETA unknown"
        );
    }

    #[test]
    fn eta_counts_only_what_is_left_at_this_sessions_rate() {
        // Resumed with 9 MiB present: 1 MiB left at 512 KiB/s is 2 s, whatever the resumed
        // bytes would make of the rate.
        let resumed = Progress {
            done_bytes: 9 * MIB,
            present_bytes: 9 * MIB,
            ..downloading()
        };
        assert_eq!(remaining(&resumed), Some(Duration::from_secs(2)));
    }

    #[test]
    fn seeding_shows_uploads_and_peers_without_download_rate_or_eta() {
        let seeding = Progress {
            uploaded_bytes: 5 * MIB,
            upload_rate: 2048.0,
            seeding: true,
            ..downloading()
        };
        let line = status(&seeding, true, ", ");
        assert_eq!(line, "5.0 MiB uploaded, 2.0 KiB/s up, 2 peers");
        assert!(!line.contains("ETA"));
    }

    #[test]
    fn json_objects_carry_bytes_rates_peers_and_eta() {
        let p = Progress {
            done_bytes: MIB,
            total_bytes: 4 * MIB,
            rate: 1024.0 * 1024.0,
            peers: 2,
            ..Progress::default()
        };
        let v = progress_json(&p, false);
        assert_eq!(v["event"], "progress");
        assert_eq!(v["downloaded_bytes"], MIB);
        assert_eq!(v["download_rate"], 1_048_576);
        assert_eq!(v["eta_seconds"], 3);
        assert_eq!(v["peers"], 2);
        let stalled = Progress {
            rate: 0.0,
            ..p.clone()
        };
        assert!(progress_json(&stalled, false)["eta_seconds"].is_null());
        let s = summary_json(&p, Duration::from_secs(2), std::path::Path::new("out"));
        assert_eq!(s["event"], "summary");
        assert_eq!(s["complete"], true, "0 of 0 pieces is complete");
        assert_eq!(s["average_rate"], 524_288);
        assert_eq!(s["output"], "out");
        // One line each: JSON lines never break.
        assert!(!v.to_string().contains('\n') && !s.to_string().contains('\n'));
    }

    #[test]
    fn summaries() {
        let done = Progress {
            done_bytes: 10 * MIB,
            total_bytes: 10 * MIB,
            peers_used: 3,
            wasted_bytes: 16 * 1024,
            ..Progress::default()
        };
        assert_eq!(
            download_summary(&done, Duration::from_secs(4)),
            "downloaded 10.0 MiB in 4.0s (2.5 MiB/s average) from 3 peers, 16.0 KiB wasted"
        );
        let resumed = Progress {
            present_bytes: 6 * MIB,
            peers_used: 1,
            wasted_bytes: 0,
            ..done.clone()
        };
        assert_eq!(
            download_summary(&resumed, Duration::from_secs(2)),
            "downloaded 4.0 MiB of 10.0 MiB (6.0 MiB were already present) in 2.0s \
             (2.0 MiB/s average) from 1 peer, 0 B wasted"
        );
        let complete = Progress {
            present_bytes: 10 * MIB,
            ..done.clone()
        };
        assert_eq!(
            download_summary(&complete, Duration::from_secs(1)),
            "nothing to download: all 10.0 MiB were already present and verified"
        );
        let seeded = Progress {
            uploaded_bytes: 25 * MIB,
            ..done
        };
        assert_eq!(
            seed_summary(&seeded, Duration::from_secs(185)),
            "seeded for 3m 05s: uploaded 25.0 MiB (ratio 2.50)"
        );
    }
}
