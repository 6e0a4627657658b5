//! Making `.torrent` files from a file or a folder (`bitrush create`): BitTorrent v1, v2 or
//! hybrid. The layout and the bencoding are the core's ([`crate::metainfo::build`]); this module
//! walks the folder and reads the data.
//!
//! The walk ([`Source::scan`]), as libtorrent, mktorrent and Transmission do it: hidden files
//! are included; symbolic links are followed (a link to a file adds that file's data under the
//! link's name, a link to a folder adds the folder's tree), except broken links and links back
//! to a folder being walked, which are skipped with a warning, as are sockets, FIFOs and
//! devices. Names must be UTF-8. The order of the files in the torrent is the byte order of
//! their paths, so the same tree always makes the same torrent. Files with the owner's execute
//! bit get BEP 47 attr `x`.
//!
//! The hashing ([`Source::create`]): every piece is read once (positioned reads, at most
//! [`READ_CHUNK`] at a time) and hashed for v1 and v2 at once, on one thread per core; each
//! thread takes the next piece not yet taken, so the data is read in order overall.

use std::collections::HashMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::metainfo::build::{
    BuildError, Built, PieceHashes, PiecePart, Plan, SourceFile, TorrentOptions,
};
use crate::metainfo::MetaVersion;

/// Largest single read while hashing.
pub const READ_CHUNK: usize = 1 << 20;

/// The `created by` this library writes.
pub const CREATED_BY: &str = concat!("bitrush ", env!("CARGO_PKG_VERSION"));

/// Why a torrent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Reading the named file or folder failed.
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The data cannot make a torrent (no data, a bad piece length, ...).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Something on disk a torrent cannot name.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CreateError + '_ {
    move |source| CreateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How to make the torrent.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub version: MetaVersion,
    /// `None`: chosen from the data size (see [`crate::metainfo::build`]).
    pub piece_length: Option<u32>,
    pub torrent: TorrentOptions,
    /// Hashing threads; 0 means one per core.
    pub threads: usize,
}

impl Default for CreateOptions {
    /// A hybrid torrent (as libtorrent makes by default), `auto` piece length, every core.
    fn default() -> CreateOptions {
        CreateOptions {
            version: MetaVersion::Hybrid,
            piece_length: None,
            torrent: TorrentOptions::default(),
            threads: 0,
        }
    }
}

/// The files found at a path, ready to be hashed.
#[derive(Clone, Debug)]
pub struct Source {
    name: String,
    single_file: bool,
    files: Vec<(SourceFile, PathBuf)>,
    skipped: Vec<String>,
}

impl Source {
    /// Lists the file at `path`, or every file under the folder at `path` (see the module docs
    /// for what is followed and what is skipped).
    pub fn scan(path: &Path) -> Result<Source, CreateError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        let named = match path.file_name() {
            Some(name) => PathBuf::from(name),
            None => path.canonicalize().map_err(io_err(path))?,
        };
        let name = named
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CreateError::Invalid(format!("{} has no UTF-8 name", path.display())))?
            .to_string();
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        if meta.is_file() {
            let file = SourceFile {
                path: vec![name.clone()],
                length: meta.len(),
                executable: meta.mode() & 0o100 != 0,
            };
            files.push((file, path.to_path_buf()));
        } else if meta.is_dir() {
            let mut walk = Walk {
                ancestors: vec![(meta.dev(), meta.ino())],
                files: &mut files,
                skipped: &mut skipped,
            };
            walk.dir(path, &mut Vec::new())?;
        } else {
            return Err(CreateError::Invalid(format!(
                "{} is neither a file nor a folder",
                path.display()
            )));
        }
        Ok(Source {
            name,
            single_file: meta.is_file(),
            files,
            skipped,
        })
    }

    /// The torrent's name (the file's or the folder's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of data to hash.
    pub fn content_length(&self) -> u64 {
        self.files.iter().map(|(f, _)| f.length).sum()
    }

    /// Number of files found.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// What the walk left out, one line each (`path: why`).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Hashes the data and builds the torrent. `progress` is called with the number of bytes
    /// hashed so far (from any hashing thread).
    pub fn create(
        &self,
        opts: &CreateOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Built, CreateError> {
        let sources = self.files.iter().map(|(f, _)| f.clone()).collect();
        let plan = Plan::new(
            &self.name,
            sources,
            self.single_file,
            opts.piece_length,
            opts.version,
        )?;
        let by_path: HashMap<&[String], &Path> = self
            .files
            .iter()
            .map(|(f, p)| (f.path.as_slice(), p.as_path()))
            .collect();
        let disk: Vec<Option<&Path>> = plan
            .files()
            .iter()
            .map(|f| {
                (!f.attr.pad)
                    .then(|| by_path.get(f.path.as_slice()).copied())
                    .flatten()
            })
            .collect();
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let hashes = hash_pieces(&plan, &disk, threads, progress)?;
        Ok(plan.finish(&hashes, &opts.torrent)?)
    }
}

/// The recursive folder walk of [`Source::scan`].
struct Walk<'a> {
    /// (device, inode) of each folder being walked, to notice links that loop.
    ancestors: Vec<(u64, u64)>,
    files: &'a mut Vec<(SourceFile, PathBuf)>,
    skipped: &'a mut Vec<String>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, prefix: &mut Vec<String>) -> Result<(), CreateError> {
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| {
                CreateError::Invalid(format!("{} is not a UTF-8 name", path.display()))
            })?;
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let is_link =
                        std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                    if is_link {
                        self.skipped
                            .push(format!("{}: broken symbolic link", path.display()));
                        continue;
                    }
                    return Err(io_err(&path)(e));
                }
            };
            prefix.push(name);
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if self.ancestors.contains(&id) {
                    self.skipped.push(format!(
                        "{}: symbolic link back to a folder being added",
                        path.display()
                    ));
                } else {
                    self.ancestors.push(id);
                    self.dir(&path, prefix)?;
                    self.ancestors.pop();
                }
            } else if meta.is_file() {
                let file = SourceFile {
                    path: prefix.clone(),
                    length: meta.len(),
                    executable: meta.mode() & 0o100 != 0,
                };
                self.files.push((file, path));
            } else {
                self.skipped
                    .push(format!("{}: not a regular file", path.display()));
            }
            prefix.pop();
        }
        Ok(())
    }
}

/// Hashes every piece of `plan` on `threads` threads; `disk[i]` is where plan file `i` is read
/// from (`None` for pad files).
fn hash_pieces(
    plan: &Plan,
    disk: &[Option<&Path>],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<PieceHashes>, CreateError> {
    let count = plan.piece_count();
    let next = AtomicU32::new(0);
    let hashed = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<CreateError>> = Mutex::new(None);
    let results: Mutex<Vec<(u32, PieceHashes)>> = Mutex::new(Vec::with_capacity(count as usize));
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, count.max(1) as usize) {
            scope.spawn(|| {
                let mut reader = Reader::new(disk);
                let mut mine = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    match reader.hash_piece(plan, index) {
                        Ok((hashes, bytes)) => {
                            mine.push((index, hashes));
                            progress(hashed.fetch_add(bytes, Ordering::Relaxed) + bytes);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            break;
                        }
                    }
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(mine);
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_unstable_by_key(|(index, _)| *index);
    Ok(results.into_iter().map(|(_, h)| h).collect())
}

/// One hashing thread's open file and read buffer.
struct Reader<'a> {
    disk: &'a [Option<&'a Path>],
    open: Option<(usize, std::fs::File)>,
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn new(disk: &'a [Option<&'a Path>]) -> Reader<'a> {
        Reader {
            disk,
            open: None,
            buf: vec![0; READ_CHUNK],
        }
    }

    /// The hashes of piece `index` and the file bytes it read.
    fn hash_piece(&mut self, plan: &Plan, index: u32) -> Result<(PieceHashes, u64), CreateError> {
        let mut hasher = plan.piece_hasher(index);
        let mut bytes = 0u64;
        for part in plan.piece_parts(index) {
            match part {
                PiecePart::Zeros(len) => hasher.zeros(len),
                PiecePart::File { file, offset, len } => {
                    let path = self.disk.get(file).copied().flatten().ok_or_else(|| {
                        CreateError::Invalid(format!("no file on disk for entry {file}"))
                    })?;
                    if self.open.as_ref().map(|(f, _)| *f) != Some(file) {
                        let handle = std::fs::File::open(path).map_err(io_err(path))?;
                        self.open = Some((file, handle));
                    }
                    let Some((_, handle)) = &self.open else {
                        continue;
                    };
                    let mut done = 0u64;
                    while done < len {
                        let n = (len - done).min(READ_CHUNK as u64) as usize;
                        let chunk = &mut self.buf[..n];
                        handle.read_exact_at(chunk, offset + done).map_err(|e| {
                            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                                CreateError::Invalid(format!(
                                    "{} shrank while it was being hashed",
                                    path.display()
                                ))
                            } else {
                                io_err(path)(e)
                            }
                        })?;
                        hasher.update(chunk);
                        done += n as u64;
                    }
                    bytes += len;
                }
            }
        }
        Ok((hasher.finish(), bytes))
    }
}

/// Builds a v1 `.torrent` for `path` (a file or a folder) with the given piece length and
/// optional tracker; returns the bencoded file. (What the demo makes: the engine verifies v1.)
pub fn create_torrent(
    path: &Path,
    piece_length: u32,
    announce: Option<&str>,
) -> Result<Vec<u8>, CreateError> {
    let opts = CreateOptions {
        version: MetaVersion::V1,
        piece_length: Some(piece_length),
        torrent: TorrentOptions {
            trackers: announce.map(String::from).into_iter().collect(),
            created_by: Some(CREATED_BY.to_string()),
            ..TorrentOptions::default()
        },
        threads: 0,
    };
    Ok(Source::scan(path)?.create(&opts, &|_| {})?.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;
    use crate::metainfo::Metainfo;
    use sha1::{Digest, Sha1};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn single_file_torrent_parses_back_with_correct_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.bin");
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &payload).unwrap();
        let bytes = create_torrent(&path, 16 * 1024, Some("http://127.0.0.1:1/announce")).unwrap();
        let meta = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(meta.info.total_length, 40_000);
        assert_eq!(meta.info.pieces.len(), 3);
        assert_eq!(meta.info.version, MetaVersion::V1);
        for (i, chunk) in payload.chunks(16 * 1024).enumerate() {
            assert_eq!(meta.info.pieces[i], <[u8; 20]>::from(Sha1::digest(chunk)));
        }
        assert_eq!(
            meta.announce.as_deref(),
            Some("http://127.0.0.1:1/announce")
        );
    }

    #[test]
    fn folder_torrent_lists_files_in_path_order_with_pieces_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::write(root.join("b/c/z.txt"), vec![1u8; 20_000]).unwrap();
        std::fs::write(root.join("a.txt"), vec![2u8; 5]).unwrap();
        std::fs::write(root.join("b/empty"), b"").unwrap();
        let meta = Metainfo::from_bytes(&create_torrent(&root, 16 * 1024, None).unwrap()).unwrap();
        let paths: Vec<String> = meta.info.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["a.txt", "b/c/z.txt", "b/empty"]);
        let mut all = vec![2u8; 5];
        all.extend(vec![1u8; 20_000]);
        assert_eq!(
            meta.info.pieces[0],
            <[u8; 20]>::from(Sha1::digest(&all[..16 * 1024]))
        );
        assert_eq!(
            meta.info.pieces[1],
            <[u8; 20]>::from(Sha1::digest(&all[16 * 1024..]))
        );
    }

    #[test]
    fn rejects_bad_piece_length_and_empty_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        assert!(create_torrent(&path, 16 * 1024, None)
            .unwrap_err()
            .to_string()
            .contains("no data"));
        std::fs::write(&path, b"x").unwrap();
        assert!(create_torrent(&path, 20_000, None).is_err());
        let empty_dir = dir.path().join("nothing");
        std::fs::create_dir_all(empty_dir.join("sub")).unwrap();
        std::fs::write(empty_dir.join("sub/zero"), b"").unwrap();
        let opts = CreateOptions::default();
        assert!(Source::scan(&empty_dir)
            .unwrap()
            .create(&opts, &|_| {})
            .is_err());
    }

    #[test]
    fn hybrid_folder_with_links_hidden_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
        std::fs::write(root.join("sub/big"), &big).unwrap();
        std::fs::write(root.join(".hidden"), b"secret").unwrap();
        std::fs::write(root.join("run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("sub/big", root.join("alias")).unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("broken")).unwrap();
        let fifo = root.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        let source = Source::scan(&root).unwrap();
        let mut skipped = source.skipped().to_vec();
        skipped.sort();
        let mut want = vec![
            format!("{}: broken symbolic link", root.join("broken").display()),
            format!(
                "{}: symbolic link back to a folder being added",
                root.join("sub/up").display()
            ),
        ];
        if made.is_ok_and(|s| s.success()) {
            want.push(format!("{}: not a regular file", fifo.display()));
        }
        want.sort();
        assert_eq!(skipped, want);
        assert_eq!(source.name(), "tree");
        assert_eq!(source.file_count(), 4);
        let seen = AtomicU64::new(0);
        let opts = CreateOptions {
            piece_length: Some(32 * 1024),
            threads: 3,
            ..CreateOptions::default()
        };
        let built = source
            .create(&opts, &|n| {
                seen.fetch_max(n, Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), source.content_length());
        let m = &built.metainfo;
        assert_eq!(m.info.version, MetaVersion::Hybrid);
        let real: Vec<(String, bool)> = m
            .info
            .real_files()
            .map(|(_, f)| (f.path.join("/"), f.attr.executable))
            .collect();
        assert_eq!(
            real,
            [
                (".hidden".to_string(), false),
                ("alias".to_string(), false),
                ("run.sh".to_string(), true),
                ("sub/big".to_string(), false),
            ]
        );
        let alias = m.info.files.iter().find(|f| f.path == ["alias"]).unwrap();
        let leaves = merkle::block_hashes(&big);
        assert_eq!(
            alias.pieces_root,
            Some(merkle::file_root(&leaves, 32 * 1024))
        );
        assert!(built.magnet.contains("&dn=tree"));
    }

    #[test]
    fn thread_counts_do_not_change_the_torrent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(&root).unwrap();
        for (i, len) in [70_000usize, 1, 0, 33_333].into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|j| (j * (i + 3)) as u8).collect();
            std::fs::write(root.join(format!("f{i}")), data).unwrap();
        }
        let source = Source::scan(&root).unwrap();
        for version in [MetaVersion::V1, MetaVersion::V2, MetaVersion::Hybrid] {
            let make = |threads| {
                let opts = CreateOptions {
                    version,
                    piece_length: Some(16 * 1024),
                    threads,
                    ..CreateOptions::default()
                };
                source.create(&opts, &|_| {}).unwrap().bytes
            };
            assert_eq!(make(1), make(4), "{version:?}");
        }
    }

    #[test]
    fn a_file_that_shrinks_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 50_000]).unwrap();
        let source = Source::scan(&path).unwrap();
        std::fs::write(&path, vec![1u8; 10]).unwrap();
        let err = source
            .create(&CreateOptions::default(), &|_| {})
            .unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
    }
}
