//! [`Swarm`]: the fixture most tests start from, a payload with its torrent
//! and a tracker that whitelists it, to which a test adds seeders (libtorrent,
//! aria2, bitrush) and leechers.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::aria2::Aria2Seeder;
use super::bitrush::BitrushSeeder;
use super::libtorrent::{LtSeedOptions, LtSeeder};
use super::payload::{copy_tree, write_payload, write_tree, TestDir};
use super::torrents::{tracked_torrent, LtInfo};
use super::tracker::Tracker;

/// A payload (one file, or a folder tree) in `seed_dir`, its torrent and a
/// tracker that whitelists it (no seeder yet). Fields drop in order:
/// tracker, then dir.
pub struct Swarm {
    pub tracker: Tracker,
    pub torrent: PathBuf,
    pub info: LtInfo,
    /// The payload (single-file torrents only; empty for trees).
    pub data: Vec<u8>,
    /// For trees: path inside the torrent -> contents.
    pub tree: BTreeMap<String, Vec<u8>>,
    /// Where the payload lies, as a seeder's save path.
    pub seed_dir: PathBuf,
    pub dir: TestDir,
}

impl Swarm {
    /// `len` pseudo-random bytes (from `seed`) as `payload.bin`, pieces of
    /// 2^`piece_len_log2`, announced over UDP if `udp`, else HTTP.
    pub fn single_file(
        label: &str,
        len: usize,
        piece_len_log2: u32,
        seed: u64,
        udp: bool,
    ) -> Swarm {
        Self::with_payload(label, piece_len_log2, udp, |seed_dir| {
            let src = seed_dir.join("payload.bin");
            let data = write_payload(&src, len, seed);
            (src, data, BTreeMap::new())
        })
    }

    /// A folder `name` holding `files` (relative path, length), as a
    /// multi-file torrent announced over HTTP.
    pub fn tree(
        label: &str,
        name: &str,
        files: &[(&str, usize)],
        piece_len_log2: u32,
        seed: u64,
    ) -> Swarm {
        Self::tree_announced(label, name, files, piece_len_log2, seed, false)
    }

    /// Like [`Swarm::tree`], announced over UDP if `udp`, else HTTP.
    pub fn tree_announced(
        label: &str,
        name: &str,
        files: &[(&str, usize)],
        piece_len_log2: u32,
        seed: u64,
        udp: bool,
    ) -> Swarm {
        Self::with_payload(label, piece_len_log2, udp, |seed_dir| {
            let root = seed_dir.join(name);
            let tree = write_tree(&root, files, seed);
            (root, Vec::new(), tree)
        })
    }

    /// A swarm whose payload `write` lays out in the seed dir, returning the
    /// torrent's source path, the single file's data and the tree's files.
    fn with_payload(
        label: &str,
        piece_len_log2: u32,
        udp: bool,
        write: impl FnOnce(&Path) -> (PathBuf, Vec<u8>, BTreeMap<String, Vec<u8>>),
    ) -> Swarm {
        let dir = TestDir::new(label);
        let seed_dir = dir.subdir("seed");
        let (src, data, tree) = write(&seed_dir);
        let (tracker, torrent, info) = tracked_torrent(&src, piece_len_log2, udp);
        Swarm {
            tracker,
            torrent,
            info,
            data,
            tree,
            seed_dir,
            dir,
        }
    }

    /// Starts a libtorrent seeder on the payload (announced once started).
    pub fn lt_seeder(&self) -> LtSeeder {
        LtSeeder::start(&self.torrent, &self.seed_dir)
    }

    pub fn lt_seeder_with(&self, opts: &LtSeedOptions) -> LtSeeder {
        LtSeeder::start_with(&self.torrent, &self.seed_dir, opts)
    }

    /// Starts `bitrush seed` on `name` in the seed dir, the swarm's first
    /// seeder (returns once the tracker counts it).
    pub fn bitrush_seeder(&self, name: &str) -> BitrushSeeder {
        self.bitrush_seeder_with(name, &[])
    }

    /// [`Swarm::bitrush_seeder`] with `extra` options to `bitrush seed`.
    pub fn bitrush_seeder_with(&self, name: &str, extra: &[&str]) -> BitrushSeeder {
        BitrushSeeder::start(
            &self.torrent,
            &self.seed_dir.join(name),
            &self.tracker,
            &self.info.info_hash,
            1,
            extra,
        )
    }

    /// Starts an aria2 seeder on a private copy of the payload and waits
    /// until the tracker counts `expected_seeders` seeders (this one
    /// included).
    pub fn aria2_seeder(&self, expected_seeders: u64) -> Aria2Seeder {
        self.aria2_seeder_with(expected_seeders, &[])
    }

    /// [`Swarm::aria2_seeder`] with `extra` aria2c options.
    pub fn aria2_seeder_with(&self, expected_seeders: u64, extra: &[&str]) -> Aria2Seeder {
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let copy = self.dir.subdir(format!(
            "aria2-seed-{}",
            COPIES.fetch_add(1, Ordering::SeqCst)
        ));
        for e in fs::read_dir(&self.seed_dir).expect("read seed dir") {
            let e = e.expect("dir entry");
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".torrent") {
                continue;
            }
            copy_tree(&e.path(), &copy.join(name));
        }
        let seeder = Aria2Seeder::start_with(&self.torrent, &copy, extra);
        self.tracker
            .wait_for_seeders(&self.info.info_hash, expected_seeders);
        seeder
    }

    /// A fresh (0755) directory under the test dir for outputs.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        self.dir.subdir(name)
    }
}
