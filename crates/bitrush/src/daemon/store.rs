//! The daemon's state directory: `<state-dir>/torrents/<info hash>.{torrent,json,resume}`.
//!
//! The `.torrent` holds the metainfo (for a magnet link, written once its metadata is fetched:
//! the info dictionary exactly as fetched, with the link's trackers); the `.json` the
//! torrent's settings and counters ([`Saved`]); the `.resume` the engine's fast-resume state
//! (`crate::engine::resume`). Every write goes to a temporary file that is synced, then
//! renamed over the old one, so a crash leaves either the old or the new file, never a torn
//! one. Reading is bounded: at most [`MAX_TORRENTS`] settings files of at most
//! [`MAX_SETTINGS_LEN`] bytes, torrents of at most [`MAX_TORRENT_LEN`] bytes.
//!
//! One [`Writer`] owns the `.torrent`, `.json` and `session.json` files: a thread of its own
//! (never a runtime thread, never under the daemon's state lock) writes what the daemon
//! queues, in the order it was queued. The daemon queues under its state lock, so the files
//! follow the state's own order: the last state queued is the one left on disk, and a removal
//! queued after a torrent's last save leaves nothing of it. The queue keeps only the latest
//! wish per torrent (a newer save replaces an older one not yet written; a removal drops
//! both), so it holds at most one entry per torrent and never grows with the rate of
//! changes. The `.resume` is the engine's, written by the torrent's run; a removal is queued
//! only once that run ended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use crate::metainfo::{Metainfo, PieceLayer, MAX_FILES};
use crate::queue::{TorrentId, MAX_TORRENTS};
use crate::storage::resume::ResumeState;
use crate::swarm::Bitfield;
use crate::types::InfoHash;

/// Largest settings file read, and written: the file selection (one byte per file, at most
/// [`MAX_FILES`]) and 1 MiB for the rest, which the daemon keeps well under it (a magnet link
/// of at most [`MAX_MAGNET_LEN`] bytes, its name taken from it, a download directory of at
/// most [`MAX_DOWNLOAD_DIR_LEN`] bytes, each escaped at worst to six bytes a byte, and a few
/// numbers). [`Store::save`] refuses anything longer, so whatever is saved loads back.
pub const MAX_SETTINGS_LEN: u64 = (1 << 20) + MAX_FILES as u64;
/// Longest magnet link a torrent is added by (it is saved in its settings).
pub const MAX_MAGNET_LEN: usize = 64 << 10;
/// Longest download directory given over the API, in bytes (Linux's `PATH_MAX`).
pub const MAX_DOWNLOAD_DIR_LEN: usize = 4096;
/// Largest `.torrent` read.
pub const MAX_TORRENT_LEN: u64 = 64 << 20;

/// A torrent's settings and counters, as saved.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub id: TorrentId,
    /// Saved as 40 hex digits.
    #[serde(with = "hex_hash")]
    pub info_hash: InfoHash,
    pub name: Box<str>,
    /// The link it was added by, until its metadata is known.
    pub magnet: Option<Box<str>>,
    /// Shared: torrents loaded together (or added without a directory of their own) point to
    /// one copy of their common directory.
    #[serde(with = "shared_path")]
    pub download_dir: Arc<Path>,
    pub paused: bool,
    /// Which files to fetch, one flag per file of the layout, pad files included (`None`:
    /// all; files past the end are wanted). Saved as a string of `1` and `0`, one byte a file
    /// (a list of booleans, as older versions wrote, is read too).
    #[serde(default, with = "file_flags")]
    pub wanted_files: Option<Arc<[bool]>>,
    /// Seconds since the Unix epoch.
    pub added_date: u64,
    /// When the download completed (0: not yet).
    pub done_date: u64,
    /// Payload bytes sent and received over every run.
    pub uploaded: u64,
    pub downloaded: u64,
    /// This torrent's own rate limits, bytes per second (`None`: unlimited).
    #[serde(default)]
    pub download_limit: Option<u64>,
    #[serde(default)]
    pub upload_limit: Option<u64>,
}

/// The daemon's own settings, as saved in `<state-dir>/session.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSettings {
    /// The global rate limits, bytes per second (`None`: unlimited).
    #[serde(default)]
    pub download_limit: Option<u64>,
    #[serde(default)]
    pub upload_limit: Option<u64>,
}

/// The state directory.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    /// `<state-dir>/session.json`.
    session: PathBuf,
}

/// A saved torrent: its settings, its metainfo if known, and the pieces its resume state
/// lists (not yet checked against the files; the engine does that when it runs).
pub type Loaded = (Saved, Option<Metainfo>, Option<Bitfield>);

impl Store {
    /// Opens (creating) `<state_dir>/torrents`.
    pub fn open(state_dir: &Path) -> std::io::Result<Store> {
        let dir = state_dir.join("torrents");
        std::fs::create_dir_all(&dir)?;
        Ok(Store {
            dir,
            session: state_dir.join("session.json"),
        })
    }

    /// Saves the daemon's own settings.
    fn save_session(&self, settings: &SessionSettings) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(settings).map_err(std::io::Error::other)?;
        write_atomically(&self.session, &json)
    }

    /// The daemon's saved settings (defaults when none were saved or the file is unreadable).
    pub fn load_session(&self) -> SessionSettings {
        read_bounded(&self.session, MAX_SETTINGS_LEN)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn path(&self, info_hash: &InfoHash, ext: &str) -> PathBuf {
        self.dir.join(format!("{info_hash}.{ext}"))
    }

    /// Where the engine keeps this torrent's resume state.
    pub fn resume_path(&self, info_hash: &InfoHash) -> PathBuf {
        self.path(info_hash, "resume")
    }

    /// Saves the settings; refuses (`InvalidInput`) settings too long to load back.
    fn save(&self, saved: &Saved) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
        if json.len() as u64 > MAX_SETTINGS_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "settings of {} bytes would not load back (at most {MAX_SETTINGS_LEN})",
                    json.len()
                ),
            ));
        }
        write_atomically(&self.path(&saved.info_hash, "json"), &json)
    }

    /// Saves the metainfo.
    fn save_torrent(&self, info_hash: &InfoHash, bytes: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.path(info_hash, "torrent"), bytes)
    }

    /// Deletes every file of a torrent; missing ones are fine.
    fn remove(&self, info_hash: &InfoHash) {
        for ext in ["json", "torrent", "resume"] {
            let path = self.path(info_hash, ext);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete");
                }
            }
        }
    }

    /// Every saved torrent, by id; unreadable ones are skipped with a warning.
    pub fn load_all(&self) -> Vec<Loaded> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut loaded = Vec::new();
        let mut dirs = HashSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            if loaded.len() >= MAX_TORRENTS {
                tracing::warn!("too many saved torrents; the rest are not loaded");
                break;
            }
            match self.load_one(&path) {
                Ok(mut one) => {
                    // Most torrents share their directory: one copy of it.
                    one.0.download_dir = super::shared(&mut dirs, one.0.download_dir);
                    loaded.push(one)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping saved torrent")
                }
            }
        }
        loaded.sort_by_key(|(s, _, _)| s.id);
        loaded
    }

    fn load_one(&self, path: &Path) -> std::io::Result<Loaded> {
        let bytes = read_bounded(path, MAX_SETTINGS_LEN)?;
        let saved: Saved = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        let hash = saved.info_hash;
        let torrent_path = self.path(&hash, "torrent");
        let metainfo = match read_bounded(&torrent_path, MAX_TORRENT_LEN) {
            Ok(bytes) => match Metainfo::from_bytes(&bytes) {
                Ok(m) if m.info_hash == hash => Some(m),
                _ => {
                    tracing::warn!(path = %torrent_path.display(), "ignoring a bad saved torrent");
                    None
                }
            },
            Err(_) => None,
        };
        let have = metainfo.as_ref().and_then(|m| {
            let count = m.info.piece_count();
            let bound = u64::from(count).div_ceil(8) + 80 * m.info.files.len() as u64 + 256;
            let bytes = read_bounded(&self.resume_path(&hash), bound).ok()?;
            let state = ResumeState::decode(&bytes).ok()?;
            (state.info_hash == hash.0 && state.piece_count == count)
                .then(|| Bitfield::from_bytes(&state.pieces, count).ok())
                .flatten()
        });
        Ok((saved, metainfo, have))
    }
}

/// Tells a caller how its queued write went.
pub type Ack = oneshot::Sender<std::io::Result<()>>;

/// What the writer is still to do for one torrent, the latest wishes merged.
#[derive(Default)]
struct Pending {
    /// Delete its files first (it was removed; anything after is a new addition).
    remove: bool,
    torrent: Option<Arc<[u8]>>,
    settings: Option<Saved>,
    acks: Vec<Ack>,
}

#[derive(Default)]
struct Queue {
    torrents: HashMap<InfoHash, Pending>,
    session: Option<SessionSettings>,
    /// Answered once everything queued before them is written.
    flushes: Vec<oneshot::Sender<()>>,
    /// No more writes: the thread ends once the queue is empty.
    closed: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.torrents.is_empty() && self.session.is_none() && self.flushes.is_empty()
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The one writer of the state directory's settings and metainfo files (see the module
/// documentation); cheap to clone. Its thread ends once every handle is dropped and the
/// queue is written.
#[derive(Clone)]
pub struct Writer(Arc<WriterHandle>);

struct WriterHandle {
    shared: Arc<Shared>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Starts the writer's thread over `store`.
    pub fn start(store: Store) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("bitrush-state".into())
            .spawn(move || write_loop(&store, &thread_shared))?;
        Ok(Writer(Arc::new(WriterHandle { shared })))
    }

    fn queue(&self, f: impl FnOnce(&mut Queue)) {
        f(&mut lock(&self.0.shared.queue));
        self.0.shared.wake.notify_one();
    }

    fn torrent(&self, info_hash: InfoHash, f: impl FnOnce(&mut Pending)) {
        self.queue(|q| f(q.torrents.entry(info_hash).or_default()));
    }

    /// Queues a torrent's settings; `ack`, if given, hears how writing them went.
    pub fn save(&self, info_hash: InfoHash, saved: Saved, ack: Option<Ack>) {
        self.torrent(info_hash, |p| {
            p.settings = Some(saved);
            p.acks.extend(ack);
        });
    }

    /// Queues a torrent's metainfo.
    pub fn save_torrent(&self, info_hash: InfoHash, bytes: Arc<[u8]>) {
        self.torrent(info_hash, |p| p.torrent = Some(bytes));
    }

    /// Queues the deletion of every file of a torrent (what was queued for it and not yet
    /// written is dropped).
    pub fn remove(&self, info_hash: InfoHash, ack: Option<Ack>) {
        self.torrent(info_hash, |p| {
            p.remove = true;
            p.torrent = None;
            p.settings = None;
            p.acks.extend(ack);
        });
    }

    /// Queues the daemon's own settings.
    pub fn save_session(&self, settings: SessionSettings) {
        self.queue(|q| q.session = Some(settings));
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.queue(|q| q.flushes.push(tx));
        let _ = rx.await;
    }
}

/// The writer's thread: takes the whole queue, writes it, and again, until closed.
fn write_loop(store: &Store, shared: &Shared) {
    loop {
        let batch = {
            let mut q = lock(&shared.queue);
            while q.is_empty() && !q.closed {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.is_empty() {
                return;
            }
            let closed = q.closed;
            std::mem::replace(
                &mut *q,
                Queue {
                    closed,
                    ..Queue::default()
                },
            )
        };
        for (info_hash, pending) in batch.torrents {
            let result = write_pending(store, &info_hash, &pending);
            if let Err(e) = &result {
                tracing::warn!(torrent = %info_hash, error = %e, "cannot save the torrent's state");
            }
            answer(pending.acks, &result);
        }
        if let Some(settings) = batch.session {
            if let Err(e) = store.save_session(&settings) {
                tracing::warn!(error = %e, "cannot save the daemon's settings");
            }
        }
        for flush in batch.flushes {
            let _ = flush.send(());
        }
    }
}

fn write_pending(store: &Store, info_hash: &InfoHash, pending: &Pending) -> std::io::Result<()> {
    if pending.remove {
        store.remove(info_hash);
    }
    if let Some(bytes) = &pending.torrent {
        store.save_torrent(info_hash, bytes)?;
    }
    if let Some(saved) = &pending.settings {
        store.save(saved)?;
    }
    Ok(())
}

fn answer(acks: Vec<Ack>, result: &std::io::Result<()>) {
    for ack in acks {
        let _ = ack.send(match result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        });
    }
}

/// Reads a regular file of at most `max` bytes. The length is checked while reading, not only
/// before: a device such as /dev/zero says 0 and never ends, a file may grow meanwhile, and a
/// FIFO would block.
pub(super) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it.
///
/// The temporary file has a name of its own, so two writers of one path never write into each
/// other's file (the last rename wins whole).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// An info hash as 40 hex digits (either case read).
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::InfoHash;

    pub fn serialize<S: Serializer>(hash: &InfoHash, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(hash)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<InfoHash, D::Error> {
        let text = String::deserialize(d)?;
        crate::types::from_hex20(&text)
            .map(InfoHash)
            .ok_or_else(|| serde::de::Error::custom("an info hash is 40 hex digits"))
    }
}

/// A shared path, saved as a path is.
mod shared_path {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(path: &Arc<Path>, s: S) -> Result<S::Ok, S::Error> {
        path.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Path>, D::Error> {
        PathBuf::deserialize(d).map(Arc::from)
    }
}

/// The file selection in settings: a string of `1` (wanted) and `0` (skipped), or, as older
/// versions wrote it, a list of booleans.
mod file_flags {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flags {
        Text(String),
        List(Vec<bool>),
    }

    pub fn serialize<S: Serializer>(flags: &Option<Arc<[bool]>>, s: S) -> Result<S::Ok, S::Error> {
        match flags {
            Some(flags) => {
                let text: String = flags.iter().map(|&w| if w { '1' } else { '0' }).collect();
                s.serialize_some(&text)
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<[bool]>>, D::Error> {
        match Option::<Flags>::deserialize(d)? {
            None => Ok(None),
            Some(Flags::List(list)) => Ok(Some(list.into())),
            Some(Flags::Text(text)) => text
                .bytes()
                .map(|b| match b {
                    b'1' => Ok(true),
                    b'0' => Ok(false),
                    _ => Err(serde::de::Error::custom("file flags are `1` or `0`")),
                })
                .collect::<Result<Arc<[bool]>, _>>()
                .map(Some),
        }
    }
}

/// A `.torrent` for a torrent's metadata: `announce-list` (when there are trackers), the
/// info dictionary's bytes exactly as known (so the info hash is unchanged), the v2 `piece
/// layers` known (those fetched from peers too, so no peer is needed for them again) and the
/// web seeds (`url-list`). Keys in bencode order.
pub(super) fn metainfo_bytes(trackers: &[Vec<String>], meta: &super::Meta) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(s);
    }
    let mut out = b"d".to_vec();
    let tiers: Vec<&Vec<String>> = trackers.iter().filter(|t| !t.is_empty()).collect();
    if let Some(first) = tiers.first().and_then(|t| t.first()) {
        string(&mut out, b"announce");
        string(&mut out, first.as_bytes());
        string(&mut out, b"announce-list");
        out.push(b'l');
        for tier in tiers {
            out.push(b'l');
            for url in tier {
                string(&mut out, url.as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
    }
    string(&mut out, b"info");
    out.extend_from_slice(&meta.info_bytes);
    // Keyed by pieces root, sorted, each once (identical files share a root and a layer).
    let layers: BTreeMap<[u8; 32], &PieceLayer> = (meta.piece_layers.iter())
        .filter_map(|(&file, layer)| Some((meta.info.files.get(file)?.pieces_root?, layer)))
        .collect();
    if !layers.is_empty() {
        string(&mut out, b"piece layers");
        out.push(b'd');
        for (root, layer) in layers {
            string(&mut out, &root);
            string(&mut out, layer.as_flattened());
        }
        out.push(b'e');
    }
    if !meta.web_seeds.is_empty() {
        string(&mut out, b"url-list");
        out.push(b'l');
        for url in &meta.web_seeds {
            string(&mut out, url.as_bytes());
        }
        out.push(b'e');
    }
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_refuse_devices_and_long_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.torrent");
        std::fs::write(&path, [7u8; 10]).unwrap();
        assert_eq!(read_bounded(&path, 10).unwrap(), vec![7u8; 10]);
        assert!(read_bounded(&path, 9).is_err());
        // It says 0 bytes and never ends.
        assert!(read_bounded(Path::new("/dev/zero"), 10).is_err());
        assert!(read_bounded(dir.path(), 10).is_err());
    }

    /// The daemon's metadata of a parsed `.torrent`.
    fn meta(m: &Metainfo) -> super::super::Meta {
        super::super::Meta {
            info: Arc::new(m.info.clone()),
            info_bytes: m.info_bytes.clone().into(),
            web_seeds: m.web_seeds.clone(),
            piece_layers: m.piece_layers.clone(),
        }
    }

    #[test]
    fn fetched_metadata_becomes_a_torrent_with_the_same_info_hash() {
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let fetched = Metainfo::from_bytes(&[&b"d4:info"[..], info, b"e"].concat()).unwrap();
        let bytes = metainfo_bytes(&[vec!["http://t/announce".into()], vec![]], &meta(&fetched));
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.info_bytes, info.to_vec());
        assert_eq!(
            m.tracker_tiers(),
            vec![vec!["http://t/announce".to_string()]]
        );
        let bare = Metainfo::from_bytes(&metainfo_bytes(&[], &meta(&fetched))).unwrap();
        assert_eq!(bare.info_hash, m.info_hash);
    }

    #[test]
    fn piece_layers_and_web_seeds_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Two files of several pieces, one of them twice (one root, one layer).
        let (a, b) = (vec![1u8; 40_000], vec![2u8; 50_000]);
        for (name, data) in [("a", &a), ("b", &b), ("c", &a)] {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        let opts = crate::create::CreateOptions {
            version: crate::metainfo::MetaVersion::V2,
            piece_length: Some(16_384),
            torrent: crate::metainfo::build::TorrentOptions {
                web_seeds: vec!["http://w/".into()],
                ..Default::default()
            },
            threads: 1,
        };
        let source = crate::create::Source::scan(dir.path()).unwrap();
        let m = source.create(&opts, &|_| {}).unwrap().metainfo;
        assert_eq!(m.piece_layers.len(), 3);
        let mut fetched = meta(&m);
        let again = Metainfo::from_bytes(&metainfo_bytes(&[], &fetched)).unwrap();
        assert_eq!(again.piece_layers, m.piece_layers);
        assert_eq!(again.web_seeds, m.web_seeds);
        assert_eq!(again.info_hash, m.info_hash);
        fetched.piece_layers.clear();
        fetched.web_seeds.clear();
        let bare = Metainfo::from_bytes(&metainfo_bytes(&[], &fetched)).unwrap();
        assert!(bare.piece_layers.is_empty() && bare.web_seeds.is_empty());
    }

    #[test]
    fn settings_round_trip_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let saved = Saved {
            id: 7,
            info_hash: InfoHash([0x42; 20]),
            name: "x".into(),
            magnet: Some("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567".into()),
            download_dir: Path::new("/tmp").into(),
            paused: true,
            wanted_files: Some(vec![true, false].into()),
            added_date: 1,
            done_date: 0,
            uploaded: 3,
            downloaded: 4,
            download_limit: Some(1000),
            upload_limit: None,
        };
        store.save(&saved).unwrap();
        let json = serde_json::to_value(&saved).unwrap();
        assert_eq!(json["info_hash"], "42".repeat(20));
        assert_eq!(json["download_dir"], "/tmp");
        std::fs::write(dir.path().join("torrents/garbage.json"), b"{").unwrap();
        let mut bad_hash = json.clone();
        bad_hash["info_hash"] = "not hex".into();
        let bad_hash = serde_json::to_vec(&bad_hash).unwrap();
        std::fs::write(dir.path().join("torrents/bad-hash.json"), bad_hash).unwrap();
        let loaded = store.load_all();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0.id, 7);
        assert_eq!(loaded[0].0.info_hash, saved.info_hash);
        assert_eq!(
            loaded[0].0.wanted_files.as_deref(),
            Some(&[true, false][..])
        );
        assert_eq!(loaded[0].0.download_limit, Some(1000));
        assert!(loaded[0].1.is_none());
        std::fs::remove_file(dir.path().join("torrents/bad-hash.json")).unwrap();
        store.remove(&saved.info_hash);
        assert!(store.load_all().is_empty());
    }

    #[test]
    fn torrents_loaded_share_their_common_download_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, download_dir) in ["/d", "/e", "/d"].into_iter().enumerate() {
            let hash = InfoHash([i as u8; 20]);
            let saved = Saved {
                id: i as u64,
                download_dir: Path::new(download_dir).into(),
                ..saved(&hash, "x")
            };
            store.save(&saved).unwrap();
        }
        let loaded = store.load_all();
        let dirs: Vec<&Arc<Path>> = loaded.iter().map(|(s, _, _)| &s.download_dir).collect();
        let paths: Vec<&Path> = dirs.iter().map(|d| &***d).collect();
        assert_eq!(paths, [Path::new("/d"), Path::new("/e"), Path::new("/d")]);
        assert!(Arc::ptr_eq(dirs[0], dirs[2]));
    }

    fn saved(hash: &InfoHash, name: &str) -> Saved {
        Saved {
            id: 1,
            info_hash: *hash,
            name: name.into(),
            magnet: None,
            download_dir: Path::new("/tmp").into(),
            paused: false,
            wanted_files: None,
            added_date: 1,
            done_date: 0,
            uploaded: 0,
            downloaded: 0,
            download_limit: None,
            upload_limit: None,
        }
    }

    #[tokio::test]
    async fn the_writer_leaves_the_last_state_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let writer = Writer::start(store.clone()).unwrap();
        let (a, b) = (InfoHash([1; 20]), InfoHash([2; 20]));
        let names = |store: &Store| -> Vec<String> {
            store
                .load_all()
                .into_iter()
                .map(|(s, _, _)| s.name.into())
                .collect()
        };
        // A newer save wins over an older one, whether or not it was written meanwhile.
        writer.save(a, saved(&a, "old"), None);
        writer.save(a, saved(&a, "new"), None);
        writer.flush().await;
        assert_eq!(names(&store), vec!["new"]);
        // A removal queued after a save leaves nothing, the engine's resume state included.
        std::fs::write(store.resume_path(&a), b"resume").unwrap();
        writer.save(a, saved(&a, "newer"), None);
        let (ack, removed) = oneshot::channel();
        writer.remove(a, Some(ack));
        removed.await.unwrap().unwrap();
        assert!(names(&store).is_empty());
        assert!(!store.resume_path(&a).exists());
        // A save queued after a removal (the torrent added again) is kept.
        writer.save(b, saved(&b, "b"), None);
        writer.remove(b, None);
        writer.save_torrent(b, b"d4:infoi0ee".as_slice().into());
        let (ack, written) = oneshot::channel();
        writer.save(b, saved(&b, "b again"), Some(ack));
        written.await.unwrap().unwrap();
        assert_eq!(names(&store), vec!["b again"]);
        assert!(dir.path().join(format!("torrents/{b}.torrent")).exists());
        // Failures reach the caller (settings too long to load back are refused).
        let bad = Saved {
            name: "x".repeat(MAX_SETTINGS_LEN as usize).into(),
            ..saved(&a, "bad")
        };
        let (ack, written) = oneshot::channel();
        writer.save(a, bad, Some(ack));
        assert!(written.await.unwrap().is_err());
    }

    #[test]
    fn the_longest_settings_the_daemon_makes_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Control characters: escaped to six bytes each.
        let worst = |len: usize| "\u{1}".repeat(len);
        let hash = InfoHash([3; 20]);
        let longest = Saved {
            id: u64::MAX,
            name: worst(MAX_MAGNET_LEN).into(),
            magnet: Some(worst(MAX_MAGNET_LEN).into()),
            download_dir: Path::new(&worst(MAX_DOWNLOAD_DIR_LEN)).into(),
            wanted_files: Some(vec![false; MAX_FILES].into()),
            added_date: u64::MAX,
            done_date: u64::MAX,
            uploaded: u64::MAX,
            downloaded: u64::MAX,
            download_limit: Some(u64::MAX),
            upload_limit: Some(u64::MAX),
            ..saved(&hash, "")
        };
        store.save(&longest).unwrap();
        let loaded = store.load_all();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[0].0.wanted_files.as_deref().map(<[bool]>::len),
            Some(MAX_FILES)
        );
        assert_eq!(loaded[0].0.name, longest.name);
        // Anything longer is refused rather than written (it would not load back).
        let longer = Saved {
            name: worst(MAX_SETTINGS_LEN as usize / 6).into(),
            ..longest
        };
        let refused = store.save(&longer).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(store.load_all()[0].0.name, loaded[0].0.name);
    }

    #[test]
    fn file_selections_are_saved_compactly_and_read_in_both_forms() {
        let hash = InfoHash([4; 20]);
        let selected = Saved {
            wanted_files: Some(vec![true, false, true].into()),
            ..saved(&hash, "x")
        };
        let json = serde_json::to_value(&selected).unwrap();
        assert_eq!(json["wanted_files"], "101");
        let read: Saved = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read.wanted_files.as_deref(), Some(&[true, false, true][..]));
        let mut old = json.clone();
        old["wanted_files"] = serde_json::json!([false, true]);
        let read: Saved = serde_json::from_value(old).unwrap();
        assert_eq!(read.wanted_files.as_deref(), Some(&[false, true][..]));
        let mut none = json.clone();
        none["wanted_files"] = serde_json::Value::Null;
        assert_eq!(
            serde_json::from_value::<Saved>(none).unwrap().wanted_files,
            None
        );
        let mut bad = json;
        bad["wanted_files"] = serde_json::json!("10x");
        assert!(serde_json::from_value::<Saved>(bad).is_err());
    }

    #[test]
    fn session_settings_round_trip_and_default_when_missing_or_bad() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_session(), SessionSettings::default());
        let settings = SessionSettings {
            download_limit: Some(5),
            upload_limit: Some(6),
        };
        store.save_session(&settings).unwrap();
        assert_eq!(store.load_session(), settings);
        std::fs::write(dir.path().join("session.json"), b"[").unwrap();
        assert_eq!(store.load_session(), SessionSettings::default());
    }
}
