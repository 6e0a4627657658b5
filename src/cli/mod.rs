//! Command-line parsing and dispatch. Stdout carries only each command's specified output;
//! logs, progress and errors go to stderr. Every failure is one line, `error: ...`, and a
//! non-zero exit status.

mod commands;
mod create;
mod demo;
mod magnet;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bitrush::metainfo::MetaVersion;
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
        #[command(flatten)]
        network: NetworkArgs,
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
    MagnetInfo {
        link: String,
        #[command(flatten)]
        dht: DhtArgs,
    },
    /// Download one piece of a magnet link's torrent, SHA-1 verified, to a file.
    #[command(name = "magnet_download_piece")]
    MagnetDownloadPiece {
        #[arg(short, long)]
        output: PathBuf,
        link: String,
        index: u32,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Download a magnet link's torrent: a file (single-file) or a directory (multi-file).
    #[command(name = "magnet_download")]
    MagnetDownload {
        #[arg(short, long)]
        output: PathBuf,
        link: String,
        #[command(flatten)]
        session: SessionArgs,
        /// Keep seeding after the download completes (until a limit or Ctrl-C).
        #[arg(long)]
        seed: bool,
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
    /// Make a .torrent from a file or a folder and print its magnet link.
    ///
    /// The torrent is hybrid by default (BitTorrent v1 and v2 in one file, as libtorrent makes
    /// them): pieces are hashed with SHA-1 and SHA-256 at once, on every core, and pad files
    /// (BEP 47) align each file to a piece. A folder's files are listed in byte order of their
    /// paths, so the same folder always gives the same torrent. Hidden files are included.
    /// Symbolic links are followed, as libtorrent, mktorrent and Transmission do: a link to a
    /// file adds that file's data under the link's name, a link to a folder adds its tree;
    /// broken links, links back to a folder being added, and special files (sockets, FIFOs,
    /// devices) are skipped with a warning. Files with the owner's execute bit are marked `x`
    /// so downloaders make them executable. File names must be UTF-8.
    #[command(verbatim_doc_comment)]
    Create {
        /// The file or folder to share.
        path: PathBuf,
        /// Where to write the torrent [default: <name>.torrent in the current folder].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// A tracker URL (repeatable: each its own tier; the first is `announce`).
        #[arg(short = 't', long = "tracker", value_name = "URL")]
        trackers: Vec<String>,
        /// A web seed URL (BEP 19, repeatable).
        #[arg(short = 'w', long = "web-seed", value_name = "WEB_SEED_URL")]
        web_seeds: Vec<String>,
        /// Piece length in bytes, or `auto`: 16 KiB for up to about 2.6 MB of data, doubling
        /// each time the data grows fourfold (256 KiB up to 687 MB, 1 MiB up to 11 GB), up to
        /// 8 MiB from about 700 GB, as libtorrent chooses. v2 and hybrid torrents need a power
        /// of two of at least 16 KiB; v1 also accepts multiples of 16 KiB.
        #[arg(long, value_name = "BYTES|auto", default_value = "auto", value_parser = create::parse_piece_length)]
        piece_length: create::PieceLength,
        /// Mark the torrent private (BEP 27: trackers only, no DHT or peer exchange).
        #[arg(long)]
        private: bool,
        /// Make a BitTorrent v1 torrent only.
        #[arg(long, conflicts_with_all = ["v2", "hybrid"])]
        v1: bool,
        /// Make a BitTorrent v2 torrent only (BEP 52).
        #[arg(long, conflicts_with_all = ["v1", "hybrid"])]
        v2: bool,
        /// Make a hybrid torrent, v1 and v2 (the default).
        #[arg(long, conflicts_with_all = ["v1", "v2"])]
        hybrid: bool,
        /// A comment stored in the torrent.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// A `source` tag in the info dictionary (changes the info hash; private trackers use
        /// it to tell their torrents apart).
        #[arg(long, value_name = "TEXT")]
        source: Option<String>,
        /// Leave out the creation date, so the same data always gives the same file.
        #[arg(long)]
        no_date: bool,
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

/// How bitrush reaches the DHT.
#[derive(clap::Args, Clone, Debug)]
struct DhtArgs {
    /// Do not use the DHT (find peers through trackers and peer exchange only).
    #[arg(
        long,
        env = "BITRUSH_NO_DHT",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    no_dht: bool,
    /// A DHT node to join through, HOST:PORT (repeatable; replaces the default routers).
    #[arg(
        long = "dht-bootstrap",
        value_name = "HOST:PORT",
        env = "BITRUSH_DHT_BOOTSTRAP",
        value_delimiter = ','
    )]
    dht_bootstrap: Vec<String>,
    /// Where state is kept between runs (the DHT's routing table) [default:
    /// $XDG_STATE_HOME/bitrush, or ~/.local/state/bitrush].
    #[arg(long, value_name = "DIR", env = "BITRUSH_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl DhtArgs {
    fn options(&self) -> Option<commands::DhtSettings> {
        if self.no_dht {
            return None;
        }
        let bootstrap = if self.dht_bootstrap.is_empty() {
            bitrush::engine::dht::DEFAULT_BOOTSTRAP
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            self.dht_bootstrap.clone()
        };
        let state_dir = self.state_dir.clone().or_else(default_state_dir);
        Some(commands::DhtSettings {
            bootstrap,
            state_file: state_dir.map(|d| d.join("dht.dat")),
        })
    }
}

/// `$XDG_STATE_HOME/bitrush`, else `~/.local/state/bitrush`.
fn default_state_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty());
    match xdg {
        Some(dir) => Some(PathBuf::from(dir).join("bitrush")),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".local/state/bitrush")),
    }
}

/// Where a session listens and how it finds peers besides trackers.
#[derive(clap::Args, Clone, Debug)]
struct NetworkArgs {
    /// Port to accept peers on, TCP and the DHT's UDP (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    dht: DhtArgs,
    /// Do not exchange peer addresses with peers (peer exchange, BEP 11).
    #[arg(long)]
    no_pex: bool,
}

#[derive(clap::Args, Clone, Debug)]
struct SessionArgs {
    #[command(flatten)]
    network: NetworkArgs,
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

impl NetworkArgs {
    fn options(&self) -> commands::SessionOptions {
        commands::SessionOptions {
            port: self.port,
            dht: self.dht.options(),
            pex: !self.no_pex,
            ..commands::SessionOptions::default()
        }
    }
}

impl SessionArgs {
    fn options(&self, seed: bool) -> commands::SessionOptions {
        let limits = bitrush::engine::SeedLimits {
            ratio: self.seed_ratio,
            time: self.seed_time.map(std::time::Duration::from_secs),
        };
        commands::SessionOptions {
            port: self.network.port,
            dht: self.network.dht.options(),
            pex: !self.network.no_pex,
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
            network,
        } => runtime()?.block_on(commands::download_piece(
            &torrent,
            index,
            &output,
            &network.options(),
        )),
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
        Command::MagnetInfo { link, dht } => {
            runtime()?.block_on(magnet::magnet_info(&link, dht.options()))
        }
        Command::MagnetDownloadPiece {
            output,
            link,
            index,
            network,
        } => runtime()?.block_on(commands::download_piece(
            Path::new(&link),
            index,
            &output,
            &network.options(),
        )),
        Command::MagnetDownload {
            output,
            link,
            session,
            seed,
        } => runtime()?.block_on(commands::download(
            Path::new(&link),
            &output,
            &session.options(seed),
        )),
        Command::Demo { size_mib, seeders } => runtime()?.block_on(demo::demo(size_mib, seeders)),
        Command::Create {
            path,
            output,
            trackers,
            web_seeds,
            piece_length,
            private,
            v1,
            v2,
            hybrid: _,
            comment,
            source,
            no_date,
        } => create::create(create::CreateArgs {
            path,
            output,
            trackers,
            web_seeds,
            piece_length: piece_length.0,
            private,
            version: match (v1, v2) {
                (true, _) => MetaVersion::V1,
                (_, true) => MetaVersion::V2,
                _ => MetaVersion::Hybrid,
            },
            comment,
            source,
            no_date,
        }),
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
