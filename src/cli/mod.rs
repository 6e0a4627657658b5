//! Command-line parsing and dispatch. Stdout carries only each command's specified output;
//! logs, progress and errors go to stderr. Every failure is one line, `error: ...`, and a
//! non-zero exit status.

mod commands;
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
    Download {
        #[arg(short, long)]
        output: PathBuf,
        torrent: PathBuf,
    },
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::Download { output, torrent } => {
            runtime()?.block_on(commands::download(&torrent, &output))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
