//! Command-line parsing and dispatch. Stdout carries only each command's specified output;
//! logs, progress and errors go to stderr. Every failure is one line, `error: ...`, and a
//! non-zero exit status.

mod commands;
mod create;
mod daemon;
mod demo;
mod magnet;
mod progress;
mod select;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bitrush::metainfo::MetaVersion;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bitrush",
    version,
    about = "A fast BitTorrent client",
    after_help = "Stdout carries only each command's result; progress, logs and errors go to \
                  stderr. Progress is a bar on a terminal and a plain line every few seconds \
                  elsewhere; -q silences it. Colour only on a terminal, never with NO_COLOR.\n\n\
                  Example:\n  bitrush download -o ubuntu.iso ubuntu.torrent"
)]
struct Cli {
    /// Show no progress and no summary on stderr (errors and warnings still show).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a bencoded value and print it as JSON.
    #[command(
        after_help = "Example:\n  $ bitrush decode d3:foo3:bar5:helloi52ee\n  \
                            {\"foo\":\"bar\",\"hello\":52}"
    )]
    Decode {
        /// The bencoded value (quote it for the shell if it holds spaces or special characters).
        value: String,
    },
    /// Show a torrent file's metadata (never contacts the tracker).
    #[command(after_help = "Example:\n  bitrush info ubuntu.torrent")]
    Info {
        /// The .torrent file.
        torrent: PathBuf,
        /// Print one JSON object instead of the text block.
        #[arg(long)]
        json: bool,
    },
    /// Ask the torrent's trackers for peers; one ip:port per line.
    #[command(after_help = "Example:\n  bitrush peers ubuntu.torrent")]
    Peers {
        /// The .torrent file.
        torrent: PathBuf,
        /// Print one JSON object (`{"peers": ["ip:port", ...]}`) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Handshake with one peer and print its peer id.
    #[command(after_help = "Example:\n  bitrush handshake ubuntu.torrent 203.0.113.7:6881")]
    Handshake {
        /// The .torrent file.
        torrent: PathBuf,
        /// The peer's address, IP:PORT (a name resolves too: HOST:PORT).
        peer: String,
    },
    /// Download one piece, SHA-1 verified, to a file.
    #[command(
        name = "download_piece",
        after_help = "Example:\n  bitrush download_piece -o piece-0.bin ubuntu.torrent 0"
    )]
    DownloadPiece {
        /// Where to write the piece (replaced only once the piece is verified).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The .torrent file, or a magnet link (quoted).
        torrent: PathBuf,
        /// The piece's index, from 0.
        index: u32,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Download a whole torrent: a file (single-file torrent) or a directory (multi-file).
    /// Existing data at the output is checked (or vouched for by the resume state an
    /// interrupted run left beside it) and only what is missing is fetched.
    #[command(after_help = "Examples:\n  \
        bitrush download -o ubuntu.iso ubuntu.torrent\n  \
        bitrush download -o ubuntu.iso 'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0'\n  \
        bitrush download --seed-ratio 2 -o ubuntu.iso ubuntu.torrent   # then seed to ratio 2\n  \
        bitrush download -o - movie.torrent | mpv -                # stream to stdout, in order\n  \
        bitrush download --list photos.torrent                     # the files, with indices\n  \
        bitrush download --only 0,3-5 -o photos photos.torrent     # only those files")]
    Download {
        /// Where to put the data: the file itself (single-file torrent) or the directory that
        /// becomes the torrent's folder (multi-file); `-` streams it to stdout, in order.
        #[arg(short, long, value_name = "PATH", required_unless_present = "list")]
        output: Option<PathBuf>,
        /// The .torrent file, or a magnet link (quoted).
        torrent: PathBuf,
        #[command(flatten)]
        session: SessionArgs,
        /// Keep seeding after the download completes (until a limit or Ctrl-C).
        #[arg(long)]
        seed: bool,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Print a magnet link's first tracker and info hash (contacts nothing).
    #[command(
        name = "magnet_parse",
        after_help = "Example:\n  bitrush magnet_parse \
                      'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0&tr=http%3A%2F%2Ftracker.example.org%2Fannounce'"
    )]
    MagnetParse {
        /// The magnet link (quote it: it holds `&`).
        link: String,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Handshake with a peer of a magnet link; print its peer id and ut_metadata id.
    #[command(
        name = "magnet_handshake",
        after_help = "Example:\n  bitrush magnet_handshake \
                      'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0&tr=http%3A%2F%2Ftracker.example.org%2Fannounce'"
    )]
    MagnetHandshake {
        /// The magnet link (quote it: it holds `&`); its trackers and `x.pe` peers are asked.
        link: String,
    },
    /// Fetch a magnet link's metadata from peers and show it like `info`.
    #[command(
        name = "magnet_info",
        after_help = "Example:\n  bitrush magnet_info \
                      'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0&tr=http%3A%2F%2Ftracker.example.org%2Fannounce'"
    )]
    MagnetInfo {
        /// The magnet link (quote it: it holds `&`).
        link: String,
        #[command(flatten)]
        dht: DhtArgs,
    },
    /// Download one piece of a magnet link's torrent, SHA-1 verified, to a file.
    #[command(
        name = "magnet_download_piece",
        after_help = "Example:\n  bitrush magnet_download_piece -o piece-0.bin \
                      'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0' 0"
    )]
    MagnetDownloadPiece {
        /// Where to write the piece (replaced only once the piece is verified).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The magnet link (quote it: it holds `&`).
        link: String,
        /// The piece's index, from 0.
        index: u32,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Download a magnet link's torrent: a file (single-file) or a directory (multi-file).
    #[command(
        name = "magnet_download",
        after_help = "Examples:\n  bitrush magnet_download -o ubuntu.iso \
                      'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0'\n  \
                      bitrush magnet_download --seed --port 6881 -o ubuntu.iso \
                      'magnet:?xt=urn:btih:3b245504cf5f11bbdbe1201cea6a6bf45aee1bc0'"
    )]
    MagnetDownload {
        /// Where to put the data: the file itself (single-file torrent) or the directory that
        /// becomes the torrent's folder (multi-file); `-` streams it to stdout, in order.
        #[arg(short, long, value_name = "PATH", required_unless_present = "list")]
        output: Option<PathBuf>,
        /// The magnet link (quote it: it holds `&`).
        link: String,
        #[command(flatten)]
        session: SessionArgs,
        /// Keep seeding after the download completes (until a limit or Ctrl-C).
        #[arg(long)]
        seed: bool,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Build a swarm of local seeders on loopback with a generated payload and download it with
    /// the full client (works offline).
    #[command(after_help = "Example:\n  bitrush demo --size-mib 64 --seeders 2")]
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
    #[command(
        verbatim_doc_comment,
        after_help = "Examples:\n  \
            bitrush create -t http://tracker.example.org/announce holiday-photos/\n  \
            bitrush create --v1 --private -t http://tracker.example.org/announce -o iso.torrent ubuntu.iso"
    )]
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
    /// Run as a service: many torrents in one session, driven over HTTP (a JSON REST API,
    /// Transmission RPC at /transmission/rpc for transmission-remote and the tools that speak
    /// it, and Prometheus metrics at /metrics; see docs/api.md). Torrents, their settings and
    /// progress are kept in the state directory and come back after a restart. Stops cleanly
    /// on Ctrl-C or SIGTERM.
    #[command(after_help = "Examples:\n  \
        bitrush daemon --download-dir ~/Downloads\n  \
        bitrush daemon --state-dir /var/lib/bitrush --download-dir /srv/torrents --port 6881 --api 0.0.0.0:9091 --api-user me --api-password secret")]
    Daemon {
        /// Where downloads go unless a torrent says otherwise (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        download_dir: PathBuf,
        /// Address of the HTTP API. Any address but loopback requires --api-user and
        /// --api-password (else every request gets 401).
        #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9091")]
        api: std::net::SocketAddr,
        /// The API's user name (HTTP basic authentication).
        #[arg(
            long,
            value_name = "NAME",
            requires = "api_password",
            env = "BITRUSH_API_USER"
        )]
        api_user: Option<String>,
        /// The API's password.
        #[arg(
            long,
            value_name = "PASSWORD",
            requires = "api_user",
            env = "BITRUSH_API_PASSWORD"
        )]
        api_password: Option<String>,
        /// Peer connections open at once across all torrents.
        #[arg(long, default_value_t = 500)]
        max_connections: usize,
        /// Peer connections a torrent dials at once, at most.
        #[arg(long, default_value_t = 50)]
        max_peers: usize,
        /// Torrents downloading at once (the others wait in the queue).
        #[arg(long, default_value_t = 5)]
        max_active_downloads: usize,
        /// Torrents seeding at once (the others wait in the queue).
        #[arg(long, default_value_t = 100)]
        max_active_seeds: usize,
        /// How often progress is saved while torrents run, in seconds (after a crash, pieces
        /// verified since are checked again).
        #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
        save_interval: u64,
        /// Most download bytes per second across all torrents, e.g. 500K or 2M (K, M, G:
        /// powers of 1024); replaces the limit saved in the state directory.
        #[arg(long, value_name = "RATE", value_parser = select::parse_rate)]
        max_download_rate: Option<u64>,
        /// Most upload bytes per second across all torrents, e.g. 500K or 2M; replaces the
        /// limit saved in the state directory.
        #[arg(long, value_name = "RATE", value_parser = select::parse_rate)]
        max_upload_rate: Option<u64>,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    #[command(after_help = "Examples:\n  \
        bitrush completions bash > ~/.local/share/bash-completion/completions/bitrush\n  \
        bitrush completions zsh > ~/.zfunc/_bitrush\n  \
        bitrush completions fish > ~/.config/fish/completions/bitrush.fish")]
    Completions {
        /// The shell.
        shell: ShellArg,
    },
    /// Print the manual page (roff) to stdout.
    #[command(after_help = "Example:\n  bitrush man > bitrush.1 && man ./bitrush.1")]
    Man,
    /// Seed existing data: verify it, announce, and serve peers until a limit or Ctrl-C.
    /// The data is only read, never written: data that does not match the torrent is an error.
    #[command(after_help = "Examples:\n  \
        bitrush seed ubuntu.torrent ubuntu.iso\n  \
        bitrush seed --port 6881 --seed-ratio 2 ubuntu.torrent ubuntu.iso")]
    Seed {
        /// The .torrent file.
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
    /// Do not download from the torrent's web seeds (BEP 19 `url-list`, a magnet's `ws`).
    #[arg(long)]
    no_webseeds: bool,
    /// Do not use uTP (BEP 29), only TCP.
    #[arg(long, conflicts_with = "no_tcp")]
    no_utp: bool,
    /// Do not use TCP, only uTP.
    #[arg(long)]
    no_tcp: bool,
    /// Message Stream Encryption: `prefer` tries it first and falls back to plain (and accepts
    /// both), `require` refuses plain connections both ways, `disable` never uses it.
    #[arg(long, value_enum, default_value_t = EncryptionArg::Prefer)]
    encryption: EncryptionArg,
}

/// The `--encryption` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum EncryptionArg {
    Prefer,
    Require,
    Disable,
}

impl From<EncryptionArg> for bitrush::mse::Encryption {
    fn from(e: EncryptionArg) -> bitrush::mse::Encryption {
        match e {
            EncryptionArg::Prefer => bitrush::mse::Encryption::Prefer,
            EncryptionArg::Require => bitrush::mse::Encryption::Require,
            EncryptionArg::Disable => bitrush::mse::Encryption::Disable,
        }
    }
}

/// The shells `completions` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

/// What to download of a torrent, and how to report it.
#[derive(clap::Args, Clone, Debug, Default)]
struct SelectArgs {
    /// Print the torrent's files (`<index> <length> <path>`, one per line) and exit.
    #[arg(long, conflicts_with_all = ["only", "file", "seed"])]
    list: bool,
    /// Download only these files: indices as `--list` shows them, e.g. `0,3-5`.
    #[arg(long, value_name = "LIST", value_parser = select::parse_only)]
    only: Option<select::OnlyFiles>,
    /// With `-o -`: the file of a multi-file torrent to stream, by index (see `--list`) or path.
    #[arg(long, value_name = "INDEX|PATH", conflicts_with = "only")]
    file: Option<String>,
    /// Fetch pieces in order (rather than rarest first).
    #[arg(long)]
    sequential: bool,
    /// Print progress as JSON objects, one per line, on stdout, and a final summary object.
    #[arg(long)]
    json: bool,
}

/// Rate and connection limits.
#[derive(clap::Args, Clone, Debug)]
struct LimitArgs {
    /// Most download bytes per second, e.g. 500K or 2M (K, M, G: powers of 1024).
    #[arg(long, value_name = "RATE", value_parser = select::parse_rate)]
    max_download_rate: Option<u64>,
    /// Most upload bytes per second, e.g. 500K or 2M (K, M, G: powers of 1024).
    #[arg(long, value_name = "RATE", value_parser = select::parse_rate)]
    max_upload_rate: Option<u64>,
    /// Most peer connections we open (incoming ones may add as many again).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..))]
    max_peers: u16,
}

#[derive(clap::Args, Clone, Debug)]
struct SessionArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Seed until uploaded bytes reach this multiple of the torrent's size (after a download:
    /// implies --seed).
    #[arg(long, value_name = "RATIO", value_parser = parse_seed_ratio)]
    seed_ratio: Option<f64>,
    /// Seed for this many seconds (after a download: implies --seed).
    #[arg(long, value_name = "SECONDS")]
    seed_time: Option<u64>,
    /// Hash all existing data at the output even if its resume state vouches for it.
    #[arg(long)]
    recheck: bool,
}

/// `--seed-ratio`: a positive number.
fn parse_seed_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

impl NetworkArgs {
    fn options(&self, quiet: bool) -> commands::SessionOptions {
        commands::SessionOptions {
            port: self.port,
            dht: self.dht.options(),
            pex: !self.no_pex,
            web_seeds: !self.no_webseeds,
            quiet,
            started: Some(std::time::Instant::now()),
            tcp: !self.no_tcp,
            utp: !self.no_utp,
            encryption: self.encryption.into(),
            ..commands::SessionOptions::default()
        }
    }
}

impl SessionArgs {
    /// The session's options; a seed limit implies `seed`.
    fn options(&self, seed: bool, quiet: bool) -> commands::SessionOptions {
        let limits = bitrush::engine::SeedLimits {
            ratio: self.seed_ratio,
            time: self.seed_time.map(std::time::Duration::from_secs),
        };
        let seed = seed || limits.ratio.is_some() || limits.time.is_some();
        let mut opts = commands::SessionOptions {
            seed: seed.then_some(limits),
            recheck: self.recheck,
            max_peers: usize::from(self.limits.max_peers),
            ..self.network.options(quiet)
        };
        opts.rate_limits = bitrush::engine::limits::RateLimits::new(
            self.limits.max_download_rate,
            self.limits.max_upload_rate,
        );
        opts
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
    // Warnings for the user by default; with RUST_LOG (debugging) each line also names its
    // module.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(progress::colour_enabled())
        .with_target(filter.is_some())
        .with_env_filter(filter.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn")))
        .init();
    match run(cli.command, cli.quiet) {
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

fn run(command: Command, quiet: bool) -> anyhow::Result<()> {
    match command {
        Command::Decode { value } => commands::decode(&value),
        Command::Info { torrent, json } => commands::info(&torrent, json),
        Command::Peers { torrent, json } => runtime()?.block_on(commands::peers(&torrent, json)),
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
            &network.options(quiet),
        )),
        Command::Download {
            output,
            torrent,
            session,
            seed,
            select,
        } => runtime()?.block_on(commands::download(
            &torrent,
            output.as_deref(),
            &session.options(seed, quiet),
            &select.choice(),
        )),
        Command::MagnetParse { link, json } => magnet::magnet_parse(&link, json),
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
            &network.options(quiet),
        )),
        Command::MagnetDownload {
            output,
            link,
            session,
            seed,
            select,
        } => runtime()?.block_on(commands::download(
            Path::new(&link),
            output.as_deref(),
            &session.options(seed, quiet),
            &select.choice(),
        )),
        Command::Completions { shell } => {
            let shell = match shell {
                ShellArg::Bash => clap_complete::Shell::Bash,
                ShellArg::Zsh => clap_complete::Shell::Zsh,
                ShellArg::Fish => clap_complete::Shell::Fish,
            };
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "bitrush", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let cli = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(cli.clone()).render(&mut out)?;
            // Then each command's own options, one section per command.
            for sub in cli.get_subcommands().filter(|c| c.get_name() != "help") {
                out.extend_from_slice(
                    format!(".SH \"BITRUSH {}\"\n", sub.get_name().to_uppercase()).as_bytes(),
                );
                let page = clap_mangen::Man::new(sub.clone());
                page.render_description_section(&mut out)?;
                page.render_synopsis_section(&mut out)?;
                page.render_options_section(&mut out)?;
            }
            std::io::Write::write_all(&mut std::io::stdout(), &out)?;
            Ok(())
        }
        Command::Demo { size_mib, seeders } => {
            runtime()?.block_on(demo::demo(size_mib, seeders, quiet))
        }
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
            quiet,
        }),
        Command::Daemon {
            download_dir,
            api,
            api_user,
            api_password,
            max_connections,
            max_peers,
            max_active_downloads,
            max_active_seeds,
            save_interval,
            max_download_rate,
            max_upload_rate,
            network,
        } => {
            let state_dir = network
                .dht
                .state_dir
                .clone()
                .or_else(default_state_dir)
                .ok_or_else(|| anyhow::anyhow!("no state directory: give --state-dir"))?;
            let credentials = api_user
                .zip(api_password)
                .map(|(user, password)| bitrush::daemon::api::Credentials { user, password });
            // Before the runtime's threads exist, so they share the one arena.
            bitrush::engine::share_one_allocator_arena();
            runtime()?.block_on(daemon::daemon(daemon::DaemonArgs {
                state_dir,
                download_dir,
                api,
                credentials,
                max_connections,
                max_peers,
                limits: bitrush::queue::QueueLimits {
                    max_active_downloads,
                    max_active_seeds,
                },
                save_every: std::time::Duration::from_secs(save_interval),
                max_download_rate,
                max_upload_rate,
                session: network.options(quiet),
            }))
        }
        Command::Seed {
            torrent,
            path,
            session,
            partial,
        } => runtime()?.block_on(commands::seed(
            &torrent,
            &path,
            partial,
            &session.options(true, quiet),
        )),
    }
}

impl SelectArgs {
    fn choice(self) -> commands::Choice {
        commands::Choice {
            list: self.list,
            only: self.only,
            file: self.file,
            sequential: self.sequential,
            json: self.json,
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn every_argument_is_described_and_every_command_has_an_example() {
        let mut cli = Cli::command();
        cli.build();
        // `help` is clap's own.
        for cmd in cli.get_subcommands().filter(|c| c.get_name() != "help") {
            let name = cmd.get_name();
            let after = cmd.get_after_help().map(ToString::to_string);
            assert!(
                after
                    .is_some_and(|text| text.contains("Example")
                        && text.contains(&format!("bitrush {name} "))),
                "`bitrush {name} --help` shows no example of the command"
            );
            for arg in cmd.get_arguments() {
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "`bitrush {name}`: {} has no description",
                    arg.get_id()
                );
            }
        }
    }

    fn session_options(args: &[&str]) -> commands::SessionOptions {
        match Cli::try_parse_from(args).expect("valid arguments").command {
            Command::Download { session, seed, .. }
            | Command::MagnetDownload { session, seed, .. } => session.options(seed, false),
            _ => unreachable!("a download command"),
        }
    }

    #[test]
    fn a_seed_limit_implies_seed_after_a_download() {
        for cmd in ["download", "magnet_download"] {
            let opts = session_options(&["bitrush", cmd, "-o", "out", "src", "--seed-time", "60"]);
            let limits = opts.seed.expect("--seed-time implies --seed");
            assert_eq!(limits.time, Some(Duration::from_secs(60)));
            let opts =
                session_options(&["bitrush", cmd, "-o", "out", "src", "--seed-ratio", "1.5"]);
            assert_eq!(opts.seed.and_then(|l| l.ratio), Some(1.5));
            assert!(session_options(&["bitrush", cmd, "-o", "out", "src"])
                .seed
                .is_none());
            let plain_seed = session_options(&["bitrush", cmd, "-o", "out", "src", "--seed"]);
            assert_eq!(
                plain_seed.seed,
                Some(bitrush::engine::SeedLimits::default())
            );
        }
        for bad in ["0", "-1", "nan", "inf", "x"] {
            let args = [
                "bitrush",
                "download",
                "-o",
                "out",
                "src",
                "--seed-ratio",
                bad,
            ];
            assert!(Cli::try_parse_from(args).is_err(), "--seed-ratio {bad}");
        }
    }

    #[test]
    fn quiet_is_accepted_before_and_after_the_command() {
        for args in [
            &["bitrush", "-q", "download", "-o", "out", "src"][..],
            &["bitrush", "download", "-o", "out", "src", "--quiet"][..],
        ] {
            assert!(Cli::try_parse_from(args).expect("valid arguments").quiet);
        }
        let cli = Cli::try_parse_from(["bitrush", "info", "x.torrent"]).expect("valid");
        assert!(!cli.quiet);
    }
}
