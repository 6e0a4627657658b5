//! `bitrush create`: makes a `.torrent` from a file or a folder, writes it, and prints its
//! magnet link (the progress bar and warnings go to stderr).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bitrush::create::{CreateOptions, Source, CREATED_BY};
use bitrush::metainfo::build::TorrentOptions;
use bitrush::metainfo::MetaVersion;

/// What `bitrush create` was asked to make.
pub struct CreateArgs {
    pub path: PathBuf,
    pub output: Option<PathBuf>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    /// `None`: `auto`.
    pub piece_length: Option<u32>,
    pub private: bool,
    pub version: MetaVersion,
    pub comment: Option<String>,
    pub source: Option<String>,
    pub no_date: bool,
    /// No progress bar and no summary line (`-q`).
    pub quiet: bool,
}

/// `--piece-length`: a number of bytes, or `None` for `auto`.
#[derive(Clone, Copy, Debug)]
pub struct PieceLength(pub Option<u32>);

/// Parses `--piece-length`.
pub fn parse_piece_length(text: &str) -> Result<PieceLength, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(PieceLength(None));
    }
    text.parse::<u32>()
        .map(|n| PieceLength(Some(n)))
        .map_err(|_| format!("{text:?} is neither a number of bytes nor `auto`"))
}

pub fn create(args: CreateArgs) -> anyhow::Result<()> {
    let source =
        Source::scan(&args.path).with_context(|| format!("cannot read {}", args.path.display()))?;
    for skipped in source.skipped() {
        eprintln!("warning: skipped {skipped}");
    }
    let creation_date = (!args.no_date).then(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let opts = CreateOptions {
        version: args.version,
        piece_length: args.piece_length,
        torrent: TorrentOptions {
            trackers: args.trackers,
            web_seeds: args.web_seeds,
            private: args.private,
            comment: args.comment,
            source: args.source,
            creation_date,
            created_by: Some(CREATED_BY.to_string()),
        },
        threads: 0,
    };
    let bar = super::progress::bytes_bar(source.content_length(), args.quiet);
    let built = source.create(&opts, &|done| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let built =
        built.with_context(|| format!("cannot make a torrent of {}", args.path.display()))?;
    let output = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("{}.torrent", source.name())));
    write_atomically(&output, &built.bytes)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let info = &built.metainfo.info;
    if !args.quiet {
        eprintln!(
            "wrote {}: {} files, {} bytes, {} pieces of {} bytes",
            output.display(),
            info.real_files().count(),
            info.content_length(),
            info.piece_count(),
            info.piece_length
        );
    }
    println!("{}", built.magnet);
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
