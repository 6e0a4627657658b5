//! Fast resume on disk: `<output>.bitrush-resume`, beside the output (as aria2 keeps its
//! `.aria2` file), holding a [`ResumeState`].
//!
//! An interrupted session saves it after flushing its files; the next session trusts it instead
//! of hashing everything again when the info hash, the piece count and every file's length and
//! modification time still match, and falls back to the full recheck otherwise. A completed
//! session removes it. Reading is bounded by the size a state for this torrent can have.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::disk::{Storage, StorageError};
use crate::storage::resume::ResumeState;
use crate::swarm::Bitfield;
use crate::types::InfoHash;

/// `<output>.bitrush-resume`.
pub fn path_for(output: &Path) -> PathBuf {
    super::with_suffix(output, ".bitrush-resume")
}

/// The pieces the saved state vouches for, if there is a state and it still describes the
/// files exactly; `None` means: check the data.
pub fn load(
    output: &Path,
    info_hash: &InfoHash,
    storage: &Storage,
    piece_count: u32,
) -> Option<Bitfield> {
    load_from(&path_for(output), info_hash, storage, piece_count)
}

/// [`load`] from the state at `path` (a daemon keeps its torrents' states in its own folder).
pub fn load_from(
    path: &Path,
    info_hash: &InfoHash,
    storage: &Storage,
    piece_count: u32,
) -> Option<Bitfield> {
    let file_count = storage.layout().file_count();
    // Bitfield, per-file stamps (three integers of at most 20 digits and their framing) and the
    // fixed keys: anything longer was not written by us for this torrent.
    let bound = u64::from(piece_count).div_ceil(8) + 80 * file_count as u64 + 256;
    let len = std::fs::metadata(path).ok()?.len();
    if len > bound {
        tracing::warn!(path = %path.display(), len, "resume state too large; rechecking");
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let state = match ResumeState::decode(&bytes) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring resume state");
            return None;
        }
    };
    let stamps = storage.file_stamps().ok()?;
    if !state.matches(&info_hash.0, piece_count, &stamps) {
        tracing::info!("files changed since the resume state was saved; rechecking");
        return None;
    }
    Bitfield::from_bytes(&state.pieces, piece_count).ok()
}

/// The pieces a state at `path` still vouches for after an unclean stop of a session that kept
/// writing after saving it (see `ResumeState::survives_crash`): only the other pieces need
/// hashing. `None`: no usable state, check everything.
pub fn load_after_crash(
    path: &Path,
    info_hash: &InfoHash,
    storage: &Storage,
    piece_count: u32,
) -> Option<Bitfield> {
    let bound =
        u64::from(piece_count).div_ceil(8) + 80 * storage.layout().file_count() as u64 + 256;
    if std::fs::metadata(path).ok()?.len() > bound {
        return None;
    }
    let state = ResumeState::decode(&std::fs::read(path).ok()?).ok()?;
    let stamps = storage.file_stamps().ok()?;
    if !state.survives_crash(&info_hash.0, piece_count, &stamps) {
        return None;
    }
    Bitfield::from_bytes(&state.pieces, piece_count).ok()
}

/// Flushes the files, then writes the state for `have` atomically (temporary file, fsync,
/// rename).
pub fn save(
    output: &Path,
    info_hash: &InfoHash,
    storage: &Storage,
    have: &Bitfield,
) -> Result<(), StorageError> {
    save_to(&path_for(output), info_hash, storage, have)
}

/// [`save`] to the state at `path`.
pub fn save_to(
    path: &Path,
    info_hash: &InfoHash,
    storage: &Storage,
    have: &Bitfield,
) -> Result<(), StorageError> {
    storage.sync()?;
    let state = ResumeState {
        info_hash: info_hash.0,
        piece_count: have.len(),
        pieces: have.as_bytes().to_vec(),
        files: storage.file_stamps()?,
    };
    let tmp = super::with_suffix(path, ".tmp");
    let io = |p: &Path, source| StorageError::Io {
        op: "write the resume state",
        path: p.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(&state.encode()).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Removes the state (a complete download needs none); a missing one is fine.
pub fn remove(output: &Path) {
    let path = path_for(output);
    if let Err(e) = std::fs::remove_file(&path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove resume state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitrush_core::testing::info_with as info;
    use std::time::{Duration, SystemTime};

    #[test]
    fn saved_state_is_trusted_until_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        let info = info(&[10, 6], 8);
        let storage = Storage::open(&out, &info).unwrap();
        storage.write(0, 0, &[1; 8]).unwrap();
        let hash = InfoHash([3; 20]);
        let mut have = Bitfield::new(2);
        have.set(0);
        assert!(load(&out, &hash, &storage, 2).is_none(), "no state yet");
        save(&out, &hash, &storage, &have).unwrap();
        assert_eq!(load(&out, &hash, &storage, 2), Some(have.clone()));
        // Another torrent, or another piece count: not trusted.
        assert!(load(&out, &InfoHash([4; 20]), &storage, 2).is_none());
        assert!(load(&out, &hash, &storage, 3).is_none());
        // A file touched since (same length, another time): not trusted.
        let f0 = std::fs::OpenOptions::new()
            .write(true)
            .open(out.join("f0"))
            .unwrap();
        f0.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        assert!(load(&out, &hash, &storage, 2).is_none());
        // Saved again, then a file appears: not trusted.
        save(&out, &hash, &storage, &have).unwrap();
        assert!(load(&out, &hash, &storage, 2).is_some());
        storage.write(1, 0, &[2; 8]).unwrap();
        assert!(load(&out, &hash, &storage, 2).is_none());
        remove(&out);
        assert!(!path_for(&out).exists());
        remove(&out);
    }

    #[test]
    fn garbage_or_oversized_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t");
        let info = info(&[10], 8);
        let storage = Storage::open(&out, &info).unwrap();
        let hash = InfoHash([3; 20]);
        std::fs::write(path_for(&out), b"d7:versioni1e").unwrap();
        assert!(load(&out, &hash, &storage, 2).is_none());
        std::fs::write(path_for(&out), vec![b'x'; 1 << 20]).unwrap();
        assert!(load(&out, &hash, &storage, 2).is_none());
    }
}
