//! The progress displays: a bar on stderr with bytes, rate, peers and ETA for sessions, and a
//! bytes bar for `create`; drawn only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use bitrush::engine::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

/// Draws progress snapshots from `rx` until the sender is dropped. Returns `None` (drawing
/// nothing) when stderr is not a terminal.
pub fn spawn(mut rx: watch::Receiver<Progress>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner:.green} [{elapsed_precise}] [{wide_bar:.cyan/blue}] {bytes}/{total_bytes} \
             {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let p = rx.borrow_and_update().clone();
            bar.set_length(p.total_bytes);
            bar.set_position(p.done_bytes);
            bar.set_message(format!(
                "{}/s · {} peers",
                indicatif::HumanBytes(p.rate as u64),
                p.peers
            ));
        }
        bar.finish_and_clear();
    }))
}

/// A bar for `total` bytes of work (hashing), or `None` when stderr is not a terminal.
pub fn bytes_bar(total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner:.green} hashing [{elapsed_precise}] [{wide_bar:.cyan/blue}] \
             {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}
