//! Command-line parsing and dispatch. Stdout carries only each command's specified output;
//! logs, progress and errors go to stderr. Every failure is one line, `error: ...`, and a
//! non-zero exit status.

mod commands;
mod demo;
mod magnet;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bitrush", version, about = "A fast BitTorrent client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a bencoded value and print it as JSON.
    Decode { value: String },
    /// Show a torrent file's metadata (never contacts the tracker).
    Info { torrent: PathBuf },
    /// Ask the torrent's trackers for peers; one ip:port per line.
    Peers { torrent: PathBuf },
    /// Handshake with one peer and print its peer id.
    Handshake { torrent: PathBuf, peer: String },
    /// Download one piece, SHA-1 verified, to a file.
    #[command(name = "download_piece")]
    DownloadPiece {
        #[arg(short, long)]
        output: PathBuf,
        torrent: PathBuf,
        index: u32,
    },
    /// Download a whole torrent: a file (single-file torrent) or a directory (multi-file).
    /// Existing data at the output is checked (or vouched for by the resume state an
    /// interrupted run left beside it) and only what is missing is fetched.
    Download {
        #[arg(short, long)]
        output: PathBuf,
        torrent: PathBuf,
        #[command(flatten)]
        session: SessionArgs,
        /// Keep seeding after the download completes (until a limit or Ctrl-C).
        #[arg(long)]
        seed: bool,
    },
    /// Print a magnet link's first tracker and info hash (contacts nothing).
    #[command(name = "magnet_parse")]
    MagnetParse { link: String },
    /// Handshake with a peer of a magnet link; print its peer id and ut_metadata id.
    #[command(name = "magnet_handshake")]
    MagnetHandshake { link: String },
    /// Fetch a magnet link's metadata from peers and show it like `info`.
    #[command(name = "magnet_info")]
    MagnetInfo { link: String },
    /// Download one piece of a magnet link's torrent, SHA-1 verified, to a file.
    #[command(name = "magnet_download_piece")]
    MagnetDownloadPiece {
        #[arg(short, long)]
        output: PathBuf,
        link: String,
        index: u32,
    },
    /// Download a magnet link's torrent: a file (single-file) or a directory (multi-file).
    #[command(name = "magnet_download")]
    MagnetDownload {
        #[arg(short, long)]
        output: PathBuf,
        link: String,
    },
    /// Build a swarm of local seeders on loopback with a generated payload and download it with
    /// the full client (works offline).
    Demo {
        /// Payload size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Number of local seeders.
        #[arg(long, default_value_t = 3)]
        seeders: usize,
    },
    /// Seed existing data: verify it, announce, and serve peers until a limit or Ctrl-C.
    /// The data is only read, never written: data that does not match the torrent is an error.
    Seed {
        torrent: PathBuf,
        /// The downloaded file (single-file torrent) or directory (multi-file).
        path: PathBuf,
        #[command(flatten)]
        session: SessionArgs,
        /// Seed the pieces that verify even if others do not (they are never downloaded).
        #[arg(long)]
        partial: bool,
    },
}

#[derive(clap::Args, Clone, Debug)]
struct SessionArgs {
    /// Port to accept peers on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Stop seeding once uploaded bytes reach this multiple of the torrent size.
    #[arg(long)]
    seed_ratio: Option<f64>,
    /// Stop seeding after this many seconds.
    #[arg(long)]
    seed_time: Option<u64>,
    /// Hash all existing data at the output even if its resume state vouches for it.
    #[arg(long)]
    recheck: bool,
}

impl SessionArgs {
    fn options(&self, seed: bool) -> commands::SessionOptions {
        let limits = bitrush::engine::SeedLimits {
            ratio: self.seed_ratio,
            time: self.seed_time.map(std::time::Duration::from_secs),
        };
        commands::SessionOptions {
            port: self.port,
            seed: seed.then_some(limits),
            recheck: self.recheck,
        }
    }
}

/// Runs the command line; prints errors as one line on stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", as ripgrep prints them: no error's message
/// repeats its source's, so each cause is shown once.
fn error_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Decode { value } => commands::decode(&value),
        Command::Info { torrent } => commands::info(&torrent),
        Command::Peers { torrent } => runtime()?.block_on(commands::peers(&torrent)),
        Command::Handshake { torrent, peer } => {
            runtime()?.block_on(commands::handshake(&torrent, &peer))
        }
        Command::DownloadPiece {
            output,
            torrent,
            index,
        } => runtime()?.block_on(commands::download_piece(&torrent, index, &output)),
        Command::Download {
            output,
            torrent,
            session,
            seed,
        } => runtime()?.block_on(commands::download(
            &torrent,
            &output,
            &session.options(seed),
        )),
        Command::MagnetParse { link } => magnet::magnet_parse(&link),
        Command::MagnetHandshake { link } => runtime()?.block_on(magnet::magnet_handshake(&link)),
        Command::MagnetInfo { link } => runtime()?.block_on(magnet::magnet_info(&link)),
        Command::MagnetDownloadPiece {
            output,
            link,
            index,
        } => runtime()?.block_on(magnet::magnet_download_piece(&link, index, &output)),
        Command::MagnetDownload { output, link } => {
            runtime()?.block_on(magnet::magnet_download(&link, &output))
        }
        Command::Demo { size_mib, seeders } => runtime()?.block_on(demo::demo(size_mib, seeders)),
        Command::Seed {
            torrent,
            path,
            session,
            partial,
        } => runtime()?.block_on(commands::seed(
            &torrent,
            &path,
            partial,
            &session.options(true),
        )),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
