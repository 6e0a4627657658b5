//! A bounded, thread-safe cache of open file handles (least recently used is closed first).
//!
//! Torrents may hold 10,000+ files, more than a process's descriptor limit allows open at once,
//! so handles are opened lazily and at most `capacity` stay cached. The mutex only guards the
//! map: handles are handed out as `Arc<File>` and all I/O happens outside the lock, so evicting a
//! handle never disturbs a read or write in flight (the descriptor closes when its last user is
//! done). Opening a file happens outside the lock too; if two threads race, one handle wins.
//! Only writers create missing files (`create`), so a read of a missing file stays `NotFound`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Bounded LRU map from file index to open handle (read-write, or read-only for data we must
/// never modify).
#[derive(Debug)]
pub(super) struct HandleCache {
    capacity: usize,
    writable: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Logical clock; bumped on every access.
    tick: u64,
    /// File index → (handle, last access tick).
    open: HashMap<usize, (Arc<File>, u64)>,
}

impl HandleCache {
    /// A cache keeping at most `capacity` (at least 1) read-write handles open.
    pub(super) fn new(capacity: usize) -> HandleCache {
        HandleCache {
            capacity: capacity.max(1),
            writable: true,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A cache of read-only handles: files are opened without write access and never created.
    pub(super) fn read_only(capacity: usize) -> HandleCache {
        HandleCache {
            writable: false,
            ..HandleCache::new(capacity)
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle for file `file` at `path`, opening it on a miss (creating it if missing only
    /// when `create` and the cache is writable).
    pub(super) fn get(&self, file: usize, path: &Path, create: bool) -> std::io::Result<Arc<File>> {
        {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some((handle, last)) = inner.open.get_mut(&file) {
                *last = tick;
                return Ok(Arc::clone(handle));
            }
        }
        let opened = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(self.writable)
                .create(create && self.writable)
                .truncate(false)
                .open(path)?,
        );
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((handle, last)) = inner.open.get_mut(&file) {
            *last = tick;
            return Ok(Arc::clone(handle));
        }
        while inner.open.len() >= self.capacity {
            let oldest = inner
                .open
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(&k, _)| k);
            match oldest {
                Some(k) => inner.open.remove(&k),
                None => break,
            };
        }
        inner.open.insert(file, (Arc::clone(&opened), tick));
        Ok(opened)
    }

    /// Number of handles currently cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether file `file` currently has a cached handle.
    #[cfg(test)]
    pub(super) fn contains(&self, file: usize) -> bool {
        self.lock().open.contains_key(&file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..4)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, b"x").unwrap();
                p
            })
            .collect();
        let cache = HandleCache::new(2);
        cache.get(0, &paths[0], false).unwrap();
        cache.get(1, &paths[1], false).unwrap();
        cache.get(0, &paths[0], false).unwrap(); // 0 is now more recent than 1
        cache.get(2, &paths[2], false).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(0) && cache.contains(2) && !cache.contains(1));
        // A handle held by a caller survives eviction.
        let h3 = cache.get(3, &paths[3], false).unwrap();
        cache.get(1, &paths[1], false).unwrap();
        cache.get(2, &paths[2], false).unwrap();
        assert!(!cache.contains(3));
        assert!(h3.metadata().is_ok());
    }

    #[test]
    fn missing_file_is_created_only_by_writers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing");
        let cache = HandleCache::new(4);
        assert!(cache.get(0, &p, false).is_err());
        assert!(!p.exists());
        assert_eq!(cache.len(), 0);
        // A writer creates it (empty; data comes with the write).
        let h = cache.get(0, &p, true).unwrap();
        assert_eq!(h.metadata().unwrap().len(), 0);
        assert!(p.exists());
    }

    #[test]
    fn read_only_cache_never_creates_and_opens_without_write_access() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let cache = HandleCache::read_only(4);
        assert!(cache.get(0, &missing, true).is_err());
        assert!(!missing.exists());
        let present = dir.path().join("present");
        std::fs::write(&present, b"data").unwrap();
        let mut perms = std::fs::metadata(&present).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&present, perms).unwrap();
        let h = cache.get(1, &present, false).unwrap();
        use std::os::unix::fs::FileExt;
        assert!(h.write_at(b"x", 0).is_err(), "a read-only handle wrote");
        assert_eq!(std::fs::read(&present).unwrap(), b"data");
    }
}
