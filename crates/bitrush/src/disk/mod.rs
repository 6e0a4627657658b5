//! Storage: where each piece's bytes live on disk, and positioned reads and writes.
//!
//! [`Layout`] is pure arithmetic mapping torrent byte ranges onto files. [`Storage`] holds the
//! torrent's file paths and performs synchronous positioned I/O (`pread`/`pwrite`); it is
//! `Send + Sync`, so hashing and disk threads share it through an `Arc`.
//!
//! Invariants and choices:
//! - Every path is re-checked at open (defence in depth): each component must be a plain name
//!   (no `..`, `.`, empty, absolute, `/`, `\` or NUL), no two files may share a path, and no
//!   existing symlink inside the torrent's tree is followed.
//! - BEP 47 pad files never touch the disk: no file or folder is made for them, their bytes
//!   read as zeros, and writes to them are dropped (a piece is written only once its hash
//!   verified, so those bytes were zeros).
//! - Files are created on their first write, not at open: a torrent of 10,000 small files must
//!   not spend its first second creating inodes on the async runtime. Open only creates the
//!   directories and the zero-length files (which no write ever touches), refuses a path that
//!   exists but is not a regular file, and cuts an existing file longer than its torrent length
//!   (existing bytes within the length are kept: resume depends on it). So once every piece has
//!   been written, every file exists at exactly its torrent length and nothing else.
//! - What only a complete download gets is applied by [`Storage::finish`]: the executable bit
//!   (attr `x`) and the symlinks (attr `l`) whose target stays inside the output (others are
//!   skipped with a warning).
//! - A read never creates a file: a missing file reads as `NotFound` (a piece mismatch on resume).
//! - Handles are opened lazily and at most [`MAX_OPEN_FILES`] stay open (least recently used
//!   closed first), so torrents with 10,000+ files work under ordinary descriptor limits.
//! - Every read or write is range-checked against its piece before touching a file.

mod handles;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha1::{Digest, Sha1};

use crate::metainfo::{Info, SymlinkTarget};
use crate::storage::resume::FileStamp;
use crate::storage::LayoutError;
pub use crate::storage::{Layout, Segment, Segments};
use handles::HandleCache;

/// Most file handles a [`Storage`] keeps open at once.
pub const MAX_OPEN_FILES: usize = 256;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error on the named file or directory; `op` says what was being done.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// A single-file torrent's output names an existing directory.
    #[error("{path} is a directory, but this torrent is a single file: pass the file's path, e.g. {path}/{name}")]
    OutputIsDirectory { path: String, name: String },
    /// A piece range or torrent layout the disk cannot map.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A file path that could escape the output directory (or collide with another file).
    #[error("unsafe path in torrent: {0}")]
    UnsafePath(String),
    /// A write to storage opened read-only (existing data being seeded).
    #[error("{0}: opened read-only")]
    ReadOnly(String),
}

fn range_err(why: String) -> StorageError {
    LayoutError::Range(why).into()
}

fn invalid_info(why: String) -> StorageError {
    LayoutError::InvalidInfo(why).into()
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// What one entry of the torrent is on disk.
#[derive(Debug)]
enum Slot {
    /// A regular file; `executable`: BEP 47 attr `x`.
    Regular { path: PathBuf, executable: bool },
    /// A pad file: zeros, never on disk.
    Pad,
    /// A BEP 47 symlink, made by [`Storage::finish`].
    Symlink {
        path: PathBuf,
        target: SymlinkTarget,
    },
}

impl Slot {
    fn path(&self) -> Option<&Path> {
        match self {
            Slot::Regular { path, .. } | Slot::Symlink { path, .. } => Some(path),
            Slot::Pad => None,
        }
    }
}

/// A torrent's files opened for reading and writing.
#[derive(Debug)]
pub struct Storage {
    layout: Layout,
    /// The output: the file of a single-file torrent, the folder of a multi-file one.
    root: PathBuf,
    /// Each entry's place on disk, in torrent order.
    slots: Vec<Slot>,
    /// Set by writes, cleared by [`Storage::sync`].
    dirty: Vec<AtomicBool>,
    handles: HandleCache,
    /// Opened by [`Storage::open_existing`]: writes are refused.
    read_only: bool,
}

impl Storage {
    /// Prepares the torrent's files under `output` (directories and zero-length files created,
    /// over-long files cut; other files are created by their first write): for a single-file
    /// torrent `output` is the file itself; for a multi-file torrent a directory holding the
    /// torrent's tree. Existing data is kept.
    pub fn open(output: &Path, info: &Info) -> Result<Storage, StorageError> {
        Storage::open_with_limit(output, info, MAX_OPEN_FILES)
    }

    fn open_with_limit(
        output: &Path,
        info: &Info,
        max_open: usize,
    ) -> Result<Storage, StorageError> {
        let layout = Layout::new(info)?;
        let slots = if info.multi_file {
            multi_file_slots(output, info, true)?
        } else {
            let slots = single_file_slot(output, info)?;
            if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io_err("create the directory", parent, e))?;
            }
            if output.is_dir() {
                return Err(StorageError::OutputIsDirectory {
                    path: output.display().to_string(),
                    name: info.name.clone(),
                });
            }
            slots
        };
        for (slot, f) in slots.iter().zip(&info.files) {
            if let Slot::Regular { path, .. } = slot {
                prepare_file(path, f.length)?;
            }
        }
        Ok(Storage::with_slots(layout, output, slots, max_open, false))
    }

    /// Opens the torrent's files at `output` for reading only: nothing is created, cut or
    /// written, so data the user asked us to seed can never be damaged. `output` itself must
    /// exist (files inside a multi-file tree may be missing: their pieces fail verification).
    pub fn open_existing(output: &Path, info: &Info) -> Result<Storage, StorageError> {
        let layout = Layout::new(info)?;
        std::fs::metadata(output).map_err(|e| io_err("read", output, e))?;
        let slots = if info.multi_file {
            multi_file_slots(output, info, false)?
        } else {
            single_file_slot(output, info)?
        };
        Ok(Storage::with_slots(
            layout,
            output,
            slots,
            MAX_OPEN_FILES,
            true,
        ))
    }

    fn with_slots(
        layout: Layout,
        output: &Path,
        slots: Vec<Slot>,
        max_open: usize,
        read_only: bool,
    ) -> Storage {
        let dirty = slots.iter().map(|_| AtomicBool::new(false)).collect();
        let handles = if read_only {
            HandleCache::read_only(max_open)
        } else {
            HandleCache::new(max_open)
        };
        Storage {
            layout,
            root: output.to_path_buf(),
            slots,
            dirty,
            handles,
            read_only,
        }
    }

    /// The piece-to-file mapping.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Full path of file `file` (torrent order), or `None` if there is no such file or it is a
    /// pad file (which has no place on disk).
    pub fn file_path(&self, file: usize) -> Option<&Path> {
        self.slots.get(file).and_then(Slot::path)
    }

    /// Whether file `file` is a pad file (its bytes are zeros and never on disk).
    pub fn is_pad(&self, file: usize) -> bool {
        matches!(self.slots.get(file), Some(Slot::Pad))
    }

    /// The open handle of file `file`; `create` makes a missing file (writes do, reads don't).
    fn handle(&self, file: usize, create: bool) -> Result<(Arc<File>, &Path), StorageError> {
        let path = match self.slots.get(file) {
            Some(Slot::Regular { path, .. }) => path,
            _ => return Err(range_err(format!("no regular file {file}"))),
        };
        let handle = self
            .handles
            .get(file, path, create)
            .map_err(|e| io_err(if create { "create" } else { "open" }, path, e))?;
        Ok((handle, path))
    }

    /// Writes `data` at byte `begin` of piece `index` (may span files; pad-file bytes are
    /// dropped).
    pub fn write(&self, index: u32, begin: u32, data: &[u8]) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::ReadOnly(self.root.display().to_string()));
        }
        let len = u32::try_from(data.len())
            .map_err(|_| range_err(format!("piece {index} write of {} bytes", data.len())))?;
        let mut done = 0usize;
        for seg in self.layout.segments(index, begin, len)? {
            let end = done + seg.len as usize;
            let chunk = data
                .get(done..end)
                .ok_or_else(|| range_err(format!("piece {index} segment overrun")))?;
            done = end;
            if self.is_pad(seg.file) {
                continue;
            }
            let (handle, path) = self.handle(seg.file, true)?;
            if let Some(flag) = self.dirty.get(seg.file) {
                flag.store(true, Ordering::Release);
            }
            handle
                .write_all_at(chunk, seg.offset)
                .map_err(|e| io_err("write to", path, e))?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at byte `begin` of piece `index` (pad-file bytes read as zeros).
    pub fn read(&self, index: u32, begin: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        let len = u32::try_from(buf.len())
            .map_err(|_| range_err(format!("piece {index} read of {} bytes", buf.len())))?;
        let mut done = 0usize;
        for seg in self.layout.segments(index, begin, len)? {
            let end = done + seg.len as usize;
            let chunk = buf
                .get_mut(done..end)
                .ok_or_else(|| range_err(format!("piece {index} segment overrun")))?;
            done = end;
            if self.is_pad(seg.file) {
                chunk.fill(0);
                continue;
            }
            let (handle, path) = self.handle(seg.file, false)?;
            handle
                .read_exact_at(chunk, seg.offset)
                .map_err(|e| io_err("read", path, e))?;
        }
        Ok(())
    }

    /// Flushes file data to disk (`fdatasync` on every file written since the last sync).
    pub fn sync(&self) -> Result<(), StorageError> {
        for (file, flag) in self.dirty.iter().enumerate() {
            if !flag.swap(false, Ordering::AcqRel) {
                continue;
            }
            // fsync applies to the inode, so a freshly reopened handle flushes earlier writes
            // made through an evicted one.
            let result = self
                .handle(file, false)
                .and_then(|(h, path)| h.sync_data().map_err(|e| io_err("flush", path, e)));
            if let Err(e) = result {
                flag.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Each file's length and modification time now (`None` if it does not exist, and always
    /// for pad files), in torrent order: what a resume state is checked against. Symlinks are
    /// not followed.
    pub fn file_stamps(&self) -> Result<Vec<Option<FileStamp>>, StorageError> {
        self.slots
            .iter()
            .map(|slot| {
                let Some(path) = slot.path() else {
                    return Ok(None);
                };
                match std::fs::symlink_metadata(path) {
                    Ok(m) => Ok(Some(FileStamp {
                        length: m.len(),
                        mtime_secs: m.mtime(),
                        mtime_nanos: u32::try_from(m.mtime_nsec()).unwrap_or(0),
                    })),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(io_err("inspect", path, e)),
                }
            })
            .collect()
    }

    /// Reads piece `index` into `scratch` and tells whether its SHA-1 equals `expected` (used for
    /// resume). A short or missing file counts as a mismatch; other I/O errors and an
    /// out-of-range `index` are errors.
    pub fn piece_matches(
        &self,
        index: u32,
        expected: &[u8; 20],
        scratch: &mut Vec<u8>,
    ) -> Result<bool, StorageError> {
        self.piece_passes(index, scratch, |data| {
            Sha1::digest(data).as_slice() == expected.as_slice()
        })
    }

    /// Reads piece `index` into `scratch` and tells whether `check` accepts it (a v2 piece's
    /// merkle check, say); missing data counts as a failure, as in [`Storage::piece_matches`].
    pub fn piece_passes(
        &self,
        index: u32,
        scratch: &mut Vec<u8>,
        check: impl FnOnce(&[u8]) -> bool,
    ) -> Result<bool, StorageError> {
        let len = self.layout.piece_len(index)?;
        scratch.clear();
        scratch.resize(len as usize, 0);
        match self.read(index, 0, scratch) {
            Ok(()) => Ok(check(scratch.as_slice())),
            Err(StorageError::Io { source, .. })
                if matches!(
                    source.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::NotFound
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Applies what only a complete download gets (BEP 47): files marked `x` become executable
    /// (an execute bit for each read bit), and each symlink is created if its target stays
    /// inside the output; a symlink whose target would leave it, or whose place is taken, is
    /// skipped with a warning. Idempotent; does nothing on read-only storage.
    pub fn finish(&self) -> Result<(), StorageError> {
        if self.read_only {
            return Ok(());
        }
        for slot in &self.slots {
            match slot {
                Slot::Regular {
                    path,
                    executable: true,
                } => make_executable(path)?,
                Slot::Symlink { path, target } => self.make_symlink(path, target),
                Slot::Regular { .. } | Slot::Pad => {}
            }
        }
        Ok(())
    }

    /// Creates the symlink at `path` (inside the output) for `target`, or warns why not.
    fn make_symlink(&self, path: &Path, target: &SymlinkTarget) {
        let skip = |why: &str| {
            tracing::warn!(link = %path.display(), "symlink skipped: {why}");
        };
        let components = match target {
            SymlinkTarget::Inside(components) => components,
            SymlinkTarget::Outside(text) => {
                return skip(&format!("its target {text:?} is outside the download"));
            }
        };
        let depth = path
            .strip_prefix(&self.root)
            .map(|rel| rel.components().count().saturating_sub(1))
            .unwrap_or(0);
        let mut text = PathBuf::new();
        for _ in 0..depth {
            text.push("..");
        }
        text.extend(components);
        let resolved = self.root.join(components.iter().collect::<PathBuf>());
        if !stays_inside(&self.root, &resolved) {
            return skip("its target leads outside the download through an existing link");
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(path).ok().as_deref() != Some(text.as_path()) {
                    skip("another symlink is in its place");
                }
            }
            Ok(_) => skip("a file is in its place"),
            Err(_) => {
                if let Err(e) = std::os::unix::fs::symlink(&text, path) {
                    skip(&e.to_string());
                }
            }
        }
    }
}

/// Whether `target` (a path under `root`) resolves inside `root`: its longest existing
/// ancestor, with every link followed, lies under `root`'s real path.
fn stays_inside(root: &Path, target: &Path) -> bool {
    let Ok(real_root) = root.canonicalize() else {
        return false;
    };
    let mut probe = Some(target);
    while let Some(p) = probe {
        if std::fs::symlink_metadata(p).is_ok() {
            return p
                .canonicalize()
                .is_ok_and(|real| real.starts_with(&real_root));
        }
        probe = p.parent();
    }
    false
}

/// Adds an execute bit for each read bit of `path`'s mode (a missing file is left alone).
fn make_executable(path: &Path) -> Result<(), StorageError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path, e)),
    };
    let mode = meta.permissions().mode();
    let wanted = mode | ((mode & 0o444) >> 2);
    if wanted != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))
            .map_err(|e| io_err("make executable", path, e))?;
    }
    Ok(())
}

/// True if `c` is a single plain path component that cannot escape its parent.
fn is_safe_component(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && !c.contains(['/', '\\', '\0'])
        && matches!(
            Path::new(c).components().collect::<Vec<_>>().as_slice(),
            [Component::Normal(_)]
        )
}

/// The slot of a single-file torrent: `output` itself.
fn single_file_slot(output: &Path, info: &Info) -> Result<Vec<Slot>, StorageError> {
    let regular = |f: &crate::metainfo::FileEntry| Slot::Regular {
        path: output.to_path_buf(),
        executable: f.attr.executable,
    };
    match info.files.as_slice() {
        [f] => Ok(vec![regular(f)]),
        // A v2 single-file torrent is padded to a whole piece.
        [f, pad] if pad.attr.pad && !f.attr.pad => Ok(vec![regular(f), Slot::Pad]),
        files => Err(invalid_info(format!(
            "single-file torrent with {} file entries",
            files.len()
        ))),
    }
}

/// Checks every file's components and builds `output/<components>` for each entry, creating
/// the directories when `create` (and otherwise leaving the tree untouched). Pad files get no
/// place.
fn multi_file_slots(output: &Path, info: &Info, create: bool) -> Result<Vec<Slot>, StorageError> {
    let mut seen: HashSet<&[String]> = HashSet::with_capacity(info.files.len());
    for (i, f) in info.real_files() {
        if f.path.is_empty() || !f.path.iter().all(|c| is_safe_component(c)) {
            return Err(StorageError::UnsafePath(format!("file {i}: {:?}", f.path)));
        }
        if !seen.insert(f.path.as_slice()) {
            return Err(StorageError::UnsafePath(format!(
                "file {i}: duplicate path {:?}",
                f.path
            )));
        }
    }
    if create {
        std::fs::create_dir_all(output).map_err(|e| io_err("create the directory", output, e))?;
    }
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut slots = Vec::with_capacity(info.files.len());
    for f in &info.files {
        if f.attr.pad {
            slots.push(Slot::Pad);
            continue;
        }
        let mut path = output.to_path_buf();
        let Some((name, dirs)) = f.path.split_last() else {
            return Err(StorageError::UnsafePath(format!("empty path {:?}", f.path)));
        };
        for d in dirs {
            path.push(d);
            if made.contains(&path) {
                continue;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StorageError::UnsafePath(format!(
                        "{} is a symlink",
                        path.display()
                    )))
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound && !create => {}
                Err(e) if e.kind() == ErrorKind::NotFound => match std::fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create the directory", &path, e)),
                },
                Err(e) => return Err(io_err("inspect", &path, e)),
            }
            made.insert(path.clone());
        }
        path.push(name);
        if let Some(target) = &f.symlink {
            slots.push(Slot::Symlink {
                path,
                target: target.clone(),
            });
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.file_type().is_symlink() {
                return Err(StorageError::UnsafePath(format!(
                    "{} is a symlink",
                    path.display()
                )));
            }
        }
        slots.push(Slot::Regular {
            path,
            executable: f.attr.executable,
        });
    }
    Ok(slots)
}

/// Readies `path` for a file of `length` bytes without writing data: a missing file is left for
/// its first write (or created now if empty), a longer one is cut to `length`, and anything that
/// is not a regular file is refused with the OS's own error from trying to open it.
fn prepare_file(path: &Path, length: u64) -> Result<(), StorageError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() <= length => return Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound && length > 0 => return Ok(()),
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io_err("inspect", path, e)),
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    let current = file
        .metadata()
        .map_err(|e| io_err("inspect", path, e))?
        .len();
    if current > length {
        file.set_len(length).map_err(|e| io_err("cut", path, e))?;
    }
    Ok(())
}

/// Deletes a torrent's data at `output` (its file, or its folder for a multi-file torrent):
/// exactly the torrent's files and symlinks, then the folders among them left empty, deepest
/// first. Anything else in those folders (a user's own files) stays. Missing files are fine.
pub fn delete_data(output: &Path, info: &Info) -> std::io::Result<()> {
    let gone = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    if !info.multi_file {
        return gone(std::fs::remove_file(output));
    }
    let mut dirs: Vec<PathBuf> = vec![output.to_path_buf()];
    for (_, f) in info.real_files() {
        let path = output.join(f.path.iter().collect::<PathBuf>());
        gone(std::fs::remove_file(&path))?;
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(output) && *d != output) {
            dirs.push(d.to_path_buf());
            dir = d.parent();
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        // Not empty: something else lives there, and it stays.
        let _ = std::fs::remove_dir(&d);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{FileEntry, SymlinkTarget};
    use bitrush_core::testing::info_with;
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn deleting_data_removes_the_torrents_files_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        let mut info = info_with(&[3, 4, 5], 16);
        info.files[1].path = vec!["sub".into(), "f1".into()];
        info.files[2].path = vec!["own".into(), "f2".into()];
        for f in &info.files {
            let p = out.join(f.path.iter().collect::<PathBuf>());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        // The user's file in one of the torrent's folders.
        std::fs::write(out.join("own").join("mine.txt"), b"keep").unwrap();
        delete_data(&out, &info).unwrap();
        assert!(!out.join("f0").exists());
        assert!(!out.join("sub").exists(), "an emptied folder goes");
        assert!(!out.join("own").join("f2").exists());
        assert_eq!(
            std::fs::read(out.join("own").join("mine.txt")).unwrap(),
            b"keep"
        );
        // Again: nothing left to delete is not an error.
        delete_data(&out, &info).unwrap();
    }

    fn payload(n: u64) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sha1(data: &[u8]) -> [u8; 20] {
        Sha1::digest(data).into()
    }

    /// Fills `info.pieces` with the real hashes of `data`.
    fn with_hashes(mut info: Info, data: &[u8]) -> Info {
        info.pieces = data.chunks(info.piece_length as usize).map(sha1).collect();
        info
    }

    /// The expected contents of each file, sliced from the payload.
    fn file_slices<'a>(info: &Info, data: &'a [u8]) -> Vec<&'a [u8]> {
        info.files
            .iter()
            .map(|f| &data[f.offset as usize..(f.offset + f.length) as usize])
            .collect()
    }

    fn write_all_pieces(storage: &Storage, info: &Info, data: &[u8]) {
        for (i, chunk) in data.chunks(info.piece_length as usize).enumerate() {
            storage.write(i as u32, 0, chunk).unwrap();
        }
    }

    #[test]
    fn storage_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Storage>();
    }

    #[test]
    fn piece_spanning_three_files_with_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [3, 0, 2, 5];
        let data = payload(10);
        let info = with_hashes(info_with(&lengths, 8), &data);
        let out = dir.path().join("t");
        let storage = Storage::open(&out, &info).unwrap();
        storage.write(0, 0, &data[..8]).unwrap();
        storage.write(1, 0, &data[8..]).unwrap();
        assert_eq!(std::fs::read(out.join("f0")).unwrap(), &data[0..3]);
        assert_eq!(std::fs::read(out.join("f1")).unwrap(), b"");
        assert_eq!(std::fs::read(out.join("f2")).unwrap(), &data[3..5]);
        assert_eq!(std::fs::read(out.join("f3")).unwrap(), &data[5..10]);
        let mut buf = [0u8; 4];
        storage.read(0, 2, &mut buf).unwrap();
        assert_eq!(&buf, &data[2..6]);
        let mut scratch = Vec::new();
        assert!(storage
            .piece_matches(0, &info.pieces[0], &mut scratch)
            .unwrap());
        assert!(storage
            .piece_matches(1, &info.pieces[1], &mut scratch)
            .unwrap());
    }

    #[test]
    fn open_existing_never_creates_cuts_or_writes() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload(100);
        let info = with_hashes(info_with(&[40, 60], 16), &data);
        // A missing output is an error and stays missing.
        let missing = dir.path().join("missing");
        assert!(matches!(
            Storage::open_existing(&missing, &info),
            Err(StorageError::Io { .. })
        ));
        assert!(!missing.exists());
        // A tree with one over-long file and one missing file: opened as is, nothing changes.
        let out = dir.path().join("t");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("f0"), vec![1u8; 500]).unwrap();
        let storage = Storage::open_existing(&out, &info).unwrap();
        assert!(!out.join("f1").exists());
        assert_eq!(std::fs::metadata(out.join("f0")).unwrap().len(), 500);
        assert!(matches!(
            storage.write(0, 0, &data[..16]),
            Err(StorageError::ReadOnly(_))
        ));
        let mut scratch = Vec::new();
        assert!(!storage
            .piece_matches(0, &info.pieces[0], &mut scratch)
            .unwrap());
        assert_eq!(std::fs::read(out.join("f0")).unwrap(), vec![1u8; 500]);
        assert!(!out.join("f1").exists());
    }

    #[test]
    fn reopening_keeps_data_and_exact_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload(100);
        let info = with_hashes(info_with(&[40, 60], 16), &data);
        let out = dir.path().join("t");
        {
            let storage = Storage::open(&out, &info).unwrap();
            write_all_pieces(&storage, &info, &data);
            storage.sync().unwrap();
        }
        let storage = Storage::open(&out, &info).unwrap();
        let mut scratch = Vec::new();
        for i in 0..storage.layout().piece_count() {
            assert!(storage
                .piece_matches(i, &info.pieces[i as usize], &mut scratch)
                .unwrap());
        }
        assert_eq!(std::fs::read(out.join("f1")).unwrap(), &data[40..]);

        // A longer file is cut to its torrent length, a shorter one left for writes; data kept.
        drop(storage);
        let f0 = out.join("f0");
        let mut long = data[..40].to_vec();
        long.extend_from_slice(b"extra");
        std::fs::write(&f0, &long).unwrap();
        std::fs::write(out.join("f1"), &data[40..50]).unwrap();
        let storage = Storage::open(&out, &info).unwrap();
        assert_eq!(std::fs::read(&f0).unwrap(), &data[..40]);
        assert_eq!(std::fs::read(out.join("f1")).unwrap(), &data[40..50]);
        assert!(storage
            .piece_matches(0, &info.pieces[0], &mut scratch)
            .unwrap());
        assert!(!storage
            .piece_matches(4, &info.pieces[4], &mut scratch)
            .unwrap());
    }

    #[test]
    fn single_file_torrent_writes_output_path() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload(50);
        let mut info = with_hashes(info_with(&[50], 16), &data);
        info.multi_file = false;
        info.files[0].path = vec!["ignored".into()];
        let out = dir.path().join("sub").join("file.bin");
        let storage = Storage::open(&out, &info).unwrap();
        write_all_pieces(&storage, &info, &data);
        assert_eq!(std::fs::read(&out).unwrap(), data);
        assert_eq!(storage.file_path(0), Some(out.as_path()));

        info.files.push(FileEntry::new(vec!["x".into()], 0, 50));
        assert!(matches!(
            Storage::open(&out, &info),
            Err(StorageError::Layout(LayoutError::InvalidInfo(_)))
        ));
    }

    #[test]
    fn unsafe_paths_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        let bad: [&[&str]; 8] = [
            &[".."],
            &["a", "..", "b"],
            &["."],
            &[""],
            &["a/b"],
            &["/etc"],
            &["a\\b"],
            &[],
        ];
        for components in bad {
            let mut info = info_with(&[5], 4);
            info.files[0].path = components.iter().map(|s| s.to_string()).collect();
            let r = Storage::open(&out, &info);
            assert!(
                matches!(r, Err(StorageError::UnsafePath(_))),
                "{components:?}: {r:?}"
            );
        }
        let mut info = info_with(&[1, 1], 4);
        info.files[1].path = info.files[0].path.clone();
        assert!(matches!(
            Storage::open(&out, &info),
            Err(StorageError::UnsafePath(_))
        ));
        // Nothing was created for refused torrents.
        assert!(!out.exists());
    }

    #[test]
    fn symlink_inside_tree_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("d")).unwrap();
        let mut info = info_with(&[5], 4);
        info.files[0].path = vec!["d".into(), "x".into()];
        assert!(matches!(
            Storage::open(&out, &info),
            Err(StorageError::UnsafePath(_))
        ));
        std::os::unix::fs::symlink(elsewhere.join("y"), out.join("y")).unwrap();
        info.files[0].path = vec!["y".into()];
        assert!(matches!(
            Storage::open(&out, &info),
            Err(StorageError::UnsafePath(_))
        ));
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
    }

    #[test]
    fn out_of_range_refused() {
        let dir = tempfile::tempdir().unwrap();
        let info = info_with(&[10, 10], 8);
        let storage = Storage::open(&dir.path().join("t"), &info).unwrap();
        let mut buf = [0u8; 5];
        assert!(matches!(
            storage.write(3, 0, b"x"),
            Err(StorageError::Layout(LayoutError::Range(_)))
        ));
        assert!(matches!(
            storage.write(2, 0, &[0; 5]),
            Err(StorageError::Layout(LayoutError::Range(_)))
        ));
        assert!(matches!(
            storage.write(0, 6, &[0; 3]),
            Err(StorageError::Layout(LayoutError::Range(_)))
        ));
        assert!(matches!(
            storage.read(2, 1, &mut buf[..4]),
            Err(StorageError::Layout(LayoutError::Range(_)))
        ));
        assert!(matches!(
            storage.read(u32::MAX, u32::MAX, &mut buf),
            Err(StorageError::Layout(LayoutError::Range(_)))
        ));
        let mut scratch = Vec::new();
        assert!(matches!(
            storage.piece_matches(3, &[0; 20], &mut scratch),
            Err(StorageError::Layout(LayoutError::Range(_)))
        ));
        // Nothing was written: no file was created, and reading the missing file fails.
        assert!(!dir.path().join("t/f1").exists());
        assert!(matches!(
            storage.read(2, 0, &mut buf[..4]),
            Err(StorageError::Io { .. })
        ));
    }

    #[test]
    fn files_are_created_by_their_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [0, 10, 0, 6];
        let data = payload(16);
        let mut info = with_hashes(info_with(&lengths, 8), &data);
        info.files[3].path = vec!["sub".into(), "f3".into()];
        let out = dir.path().join("t");
        let storage = Storage::open(&out, &info).unwrap();
        // Open made the directories and the empty files, nothing else.
        assert_eq!(std::fs::read(out.join("f0")).unwrap(), b"");
        assert_eq!(std::fs::read(out.join("f2")).unwrap(), b"");
        assert!(out.join("sub").is_dir());
        assert!(!out.join("f1").exists() && !out.join("sub/f3").exists());
        let mut scratch = Vec::new();
        assert!(!storage
            .piece_matches(1, &info.pieces[1], &mut scratch)
            .unwrap());
        assert!(!out.join("sub/f3").exists(), "a read created a file");
        // Last piece first: f1 and f3 appear, f1 short until piece 0 lands.
        storage.write(1, 0, &data[8..]).unwrap();
        assert_eq!(std::fs::metadata(out.join("f1")).unwrap().len(), 10);
        assert_eq!(std::fs::read(out.join("sub/f3")).unwrap(), &data[10..]);
        storage.write(0, 0, &data[..8]).unwrap();
        assert_eq!(std::fs::read(out.join("f1")).unwrap(), &data[..10]);
    }

    #[test]
    fn file_stamps_follow_writes() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload(20);
        let info = with_hashes(info_with(&[10, 10], 8), &data);
        let storage = Storage::open(&dir.path().join("t"), &info).unwrap();
        assert_eq!(storage.file_stamps().unwrap(), vec![None, None]);
        storage.write(0, 0, &data[..8]).unwrap();
        let first = storage.file_stamps().unwrap();
        assert_eq!(first[0].map(|s| s.length), Some(8));
        assert_eq!(first[1], None);
        // A later write changes the stamp (length here; the time may not tick).
        storage.write(1, 0, &data[8..16]).unwrap();
        let second = storage.file_stamps().unwrap();
        assert_ne!(first, second);
        assert_eq!(second[0].map(|s| s.length), Some(10));
        assert_eq!(second[1].map(|s| s.length), Some(6));
    }

    #[test]
    fn a_directory_where_a_file_belongs_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        std::fs::create_dir_all(out.join("f0")).unwrap();
        let info = info_with(&[5], 4);
        let err = Storage::open(&out, &info).unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("f0"), "{err}");
    }

    #[test]
    fn missing_or_short_file_is_mismatch_not_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload(20);
        let info = with_hashes(info_with(&[10, 10], 8), &data);
        let out = dir.path().join("t");
        let storage = Storage::open(&out, &info).unwrap();
        write_all_pieces(&storage, &info, &data);
        let mut scratch = Vec::new();
        assert!(storage
            .piece_matches(1, &info.pieces[1], &mut scratch)
            .unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(out.join("f1"))
            .unwrap()
            .set_len(3)
            .unwrap();
        assert!(storage
            .piece_matches(0, &info.pieces[0], &mut scratch)
            .unwrap());
        assert!(!storage
            .piece_matches(1, &info.pieces[1], &mut scratch)
            .unwrap());
        assert!(matches!(
            storage.read(1, 0, &mut [0; 8]),
            Err(StorageError::Io { .. })
        ));
        // Deleted file whose handle is not cached: reopening fails with NotFound.
        let fresh = Storage::open_with_limit(&out, &info, 1).unwrap();
        std::fs::remove_file(out.join("f1")).unwrap();
        assert!(!fresh
            .piece_matches(2, &info.pieces[2], &mut scratch)
            .unwrap());
        let err = fresh.read(2, 0, &mut [0; 4]).unwrap_err();
        assert!(err.to_string().contains("f1"), "{err}");
    }

    #[test]
    fn many_files_with_small_handle_limit() {
        let dir = tempfile::tempdir().unwrap();
        let lengths: Vec<u64> = (0..300).map(|i| i % 7).collect();
        let total: u64 = lengths.iter().sum();
        let data = payload(total);
        let info = with_hashes(info_with(&lengths, 64), &data);
        let out = dir.path().join("t");
        let storage = Storage::open_with_limit(&out, &info, 4).unwrap();
        write_all_pieces(&storage, &info, &data);
        assert!(storage.handles.len() <= 4);
        storage.sync().unwrap();
        assert!(storage.dirty.iter().all(|d| !d.load(Ordering::Acquire)));
        for (i, expected) in file_slices(&info, &data).into_iter().enumerate() {
            assert_eq!(std::fs::read(out.join(format!("f{i}"))).unwrap(), expected);
        }
    }

    #[test]
    fn concurrent_writers_share_storage() {
        let dir = tempfile::tempdir().unwrap();
        let lengths = [100, 0, 37, 263, 1, 99];
        let data = payload(lengths.iter().sum());
        let info = with_hashes(info_with(&lengths, 32), &data);
        let out = dir.path().join("t");
        let storage = Arc::new(Storage::open_with_limit(&out, &info, 2).unwrap());
        let pieces: Vec<(u32, Vec<u8>)> = data
            .chunks(32)
            .enumerate()
            .map(|(i, c)| (i as u32, c.to_vec()))
            .collect();
        std::thread::scope(|s| {
            for part in pieces.chunks(4) {
                let storage = Arc::clone(&storage);
                s.spawn(move || {
                    for (i, chunk) in part {
                        storage.write(*i, 0, chunk).unwrap();
                    }
                });
            }
        });
        let mut scratch = Vec::new();
        for (i, h) in info.pieces.iter().enumerate() {
            assert!(storage.piece_matches(i as u32, h, &mut scratch).unwrap());
        }
    }

    /// A payload whose pad-file bytes are zeros.
    fn padded_payload(info: &Info) -> Vec<u8> {
        let mut data = payload(info.total_length);
        for f in info.files.iter().filter(|f| f.attr.pad) {
            data[f.offset as usize..(f.offset + f.length) as usize].fill(0);
        }
        data
    }

    fn pad(info: &mut Info, file: usize) {
        info.files[file].attr.pad = true;
        info.files[file].path = vec![".pad".into(), info.files[file].length.to_string()];
    }

    #[test]
    fn pad_files_never_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut info = info_with(&[10, 6, 16, 3, 0], 16);
        pad(&mut info, 1);
        pad(&mut info, 3);
        let data = padded_payload(&info);
        let info = with_hashes(info, &data);
        let out = dir.path().join("t");
        let storage = Storage::open(&out, &info).unwrap();
        assert!(storage.is_pad(1) && !storage.is_pad(0));
        assert_eq!(storage.file_path(1), None);
        // Writes over pad ranges are dropped, whatever the bytes.
        let mut garbage = data.clone();
        garbage[10..16].fill(0xee);
        write_all_pieces(&storage, &info, &garbage);
        assert!(!out.join(".pad").exists(), "a pad file reached the disk");
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["f0", "f2", "f4"]);
        assert_eq!(std::fs::read(out.join("f0")).unwrap(), &data[..10]);
        assert_eq!(std::fs::read(out.join("f2")).unwrap(), &data[16..32]);
        // Reads of pad ranges are zeros, so every piece verifies.
        let mut buf = [0xffu8; 8];
        storage.read(0, 8, &mut buf).unwrap();
        assert_eq!(&buf[..2], &data[8..10]);
        assert_eq!(&buf[2..], &[0; 6]);
        let mut scratch = Vec::new();
        for (i, h) in info.pieces.iter().enumerate() {
            assert!(
                storage.piece_matches(i as u32, h, &mut scratch).unwrap(),
                "{i}"
            );
        }
        assert_eq!(storage.file_stamps().unwrap()[1], None);
        storage.sync().unwrap();
        // Seeding reads them the same way, without any file for them.
        let seed = Storage::open_existing(&out, &info).unwrap();
        for (i, h) in info.pieces.iter().enumerate() {
            assert!(
                seed.piece_matches(i as u32, h, &mut scratch).unwrap(),
                "{i}"
            );
        }
    }

    #[test]
    fn finish_makes_executables_and_inside_symlinks_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut info = info_with(&[4, 4, 0, 0, 0, 0], 8);
        info.files[0].path = vec!["bin".into(), "run".into()];
        info.files[0].attr.executable = true;
        info.files[1].path = vec!["data".into()];
        info.files[2].path = vec!["sub".into(), "link".into()];
        info.files[2].symlink = Some(SymlinkTarget::Inside(vec!["bin".into(), "run".into()]));
        info.files[3].path = vec!["escape".into()];
        info.files[3].symlink = Some(SymlinkTarget::Outside("../../etc/passwd".into()));
        info.files[4].path = vec!["via".into()];
        info.files[4].symlink = Some(SymlinkTarget::Inside(vec!["out".into(), "x".into()]));
        info.files[5].path = vec!["dirlink".into()];
        info.files[5].symlink = Some(SymlinkTarget::Inside(vec!["bin".into()]));
        let data = payload(8);
        let info = with_hashes(info, &data);
        let out = dir.path().join("t");
        let storage = Storage::open(&out, &info).unwrap();
        // Nothing is made where a symlink goes until the download is complete.
        assert!(std::fs::symlink_metadata(out.join("sub/link")).is_err());
        write_all_pieces(&storage, &info, &data);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&out.join("bin/run")) & 0o111, 0);
        // A link the user made inside the output, pointing outside, must not be followed.
        std::os::unix::fs::symlink(dir.path(), out.join("out")).unwrap();
        storage.finish().unwrap();
        storage.finish().unwrap();
        let run_mode = mode(&out.join("bin/run"));
        assert_eq!(run_mode & 0o111, (run_mode & 0o444) >> 2);
        assert_ne!(run_mode & 0o100, 0);
        assert_eq!(mode(&out.join("data")) & 0o111, 0);
        assert_eq!(
            std::fs::read_link(out.join("sub/link")).unwrap(),
            Path::new("../bin/run")
        );
        assert_eq!(std::fs::read(out.join("sub/link")).unwrap(), &data[..4]);
        assert_eq!(
            std::fs::read_link(out.join("dirlink")).unwrap(),
            Path::new("bin")
        );
        assert!(std::fs::symlink_metadata(out.join("escape")).is_err());
        assert!(std::fs::symlink_metadata(out.join("via")).is_err());
        // Read-only storage (seeding) changes nothing.
        let dir2 = tempfile::tempdir().unwrap();
        let seeded = dir2.path().join("t");
        std::fs::create_dir_all(seeded.join("bin")).unwrap();
        std::fs::write(seeded.join("bin/run"), &data[..4]).unwrap();
        Storage::open_existing(&seeded, &info)
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(mode(&seeded.join("bin/run")) & 0o111, 0);
        assert!(std::fs::symlink_metadata(seeded.join("sub/link")).is_err());
    }

    #[test]
    fn single_file_executable() {
        let dir = tempfile::tempdir().unwrap();
        let data = payload(5);
        let mut info = with_hashes(info_with(&[5], 8), &data);
        info.multi_file = false;
        info.files[0].attr.executable = true;
        let out = dir.path().join("tool");
        let storage = Storage::open(&out, &info).unwrap();
        storage.write(0, 0, &data).unwrap();
        storage.finish().unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_ne!(mode & 0o100, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Every piece written in random order, in random block splits, reads back as the
        /// payload: per file on disk and through `read`.
        #[test]
        fn multi_file_round_trip(
            lengths in prop::collection::vec(prop_oneof![Just(0u64), 1u64..50, 50u64..400], 1..8),
            piece_length in 1u32..128,
            seed in any::<u64>(),
            order_seed in any::<u64>(),
        ) {
            use rand::{seq::SliceRandom, Rng, SeedableRng};
            let total: u64 = lengths.iter().sum();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let data: Vec<u8> = (0..total).map(|_| rng.gen()).collect();
            let info = with_hashes(info_with(&lengths, piece_length), &data);
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("t");
            let storage = Storage::open(&out, &info).unwrap();

            // Random blocks: each piece split at a random point, all blocks shuffled.
            let mut blocks = Vec::new();
            for (i, chunk) in data.chunks(piece_length as usize).enumerate() {
                let cut = rng.gen_range(0..=chunk.len());
                blocks.push((i as u32, 0u32, &chunk[..cut]));
                blocks.push((i as u32, cut as u32, &chunk[cut..]));
            }
            blocks.shuffle(&mut rand::rngs::StdRng::seed_from_u64(order_seed));
            for (i, begin, block) in blocks {
                storage.write(i, begin, block).unwrap();
            }
            storage.sync().unwrap();

            for (i, expected) in file_slices(&info, &data).into_iter().enumerate() {
                let on_disk = std::fs::read(out.join(format!("f{i}"))).unwrap();
                prop_assert_eq!(on_disk.as_slice(), expected);
            }
            let mut scratch = Vec::new();
            for (i, chunk) in data.chunks(piece_length as usize).enumerate() {
                let mut buf = vec![0u8; chunk.len()];
                storage.read(i as u32, 0, &mut buf).unwrap();
                prop_assert_eq!(buf.as_slice(), chunk);
                prop_assert!(storage.piece_matches(i as u32, &info.pieces[i], &mut scratch).unwrap());
            }
        }
    }
}
