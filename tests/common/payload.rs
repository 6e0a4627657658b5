//! Files on disk: [`TestDir`] (a world-readable temporary directory), the
//! deterministic payloads and file trees the tests seed, copies of them, and
//! comparisons that report how bytes differ without dumping them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A world-readable (0755) temporary directory under /tmp, removed on drop
/// (kept if `BITRUSH_KEEP_TEST_DIRS` is set, for debugging).
///
/// World-readable because opentracker drops privileges to `nobody` and must
/// still read its whitelist file.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bitrush-tests-{label}-"))
            .tempdir_in("/tmp")
            .expect("create temp dir under /tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod 755 temp dir");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates (mode 0755) and returns the sub-directory `rel`.
    pub fn subdir<P: AsRef<Path>>(&self, rel: P) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(&p).expect("create sub dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod sub dir");
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("BITRUSH_KEEP_TEST_DIRS").is_some() {
                eprintln!("keeping test dir {}", dir.keep().display());
            }
        }
    }
}

/// Deterministic pseudo-random bytes (splitmix64), different for each seed.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `payload(len, seed)` to `path` (creating parent dirs) and returns it.
pub fn write_payload(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create payload parent dir");
    }
    let data = payload(len, seed);
    fs::write(path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    data
}

/// Creates a tree of payload files under `root` from `(relative path, length)`
/// pairs; returns relative path -> contents. Each file gets its own seed.
pub fn write_tree(root: &Path, files: &[(&str, usize)], seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for (i, (rel, len)) in files.iter().enumerate() {
        let data = write_payload(&root.join(rel), *len, seed.wrapping_add(i as u64 * 7919));
        map.insert(rel.to_string(), data);
    }
    map
}

/// Reads every regular file under `root`: relative path ("a/b.txt") -> bytes.
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<String, Vec<u8>>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = fs::symlink_metadata(&p).expect("stat");
            if meta.is_dir() {
                walk(root, &p, map);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                map.insert(rel, fs::read(&p).expect("read file"));
            }
        }
    }
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    map
}

/// Recursively copies `src` (file or directory) to `dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    let meta = fs::metadata(src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
    if meta.is_dir() {
        fs::create_dir_all(dst).expect("create dir");
        for e in fs::read_dir(src).expect("read dir") {
            let e = e.expect("dir entry");
            copy_tree(&e.path(), &dst.join(e.file_name()));
        }
    } else {
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
}

/// Short description of how two byte slices differ (for assertion messages).
pub fn describe_difference(got: &[u8], want: &[u8]) -> String {
    if got == want {
        return "identical".into();
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    format!(
        "got {} bytes, want {} bytes, first differing offset {:?}",
        got.len(),
        want.len(),
        first.or(Some(got.len().min(want.len())))
    )
}

/// Asserts that `got` equals `want` without dumping megabytes on failure.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: contents differ: {}",
        describe_difference(got, want)
    );
}

/// Asserts the file at `path` holds exactly `want` (`what` names it).
#[track_caller]
pub fn assert_file_eq(path: &Path, want: &[u8], what: &str) {
    let got =
        fs::read(path).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", path.display()));
    assert_bytes_eq(&got, want, what);
}

/// Asserts the files under `got_root` are exactly `want` (relative path ->
/// contents, as [`write_tree`] returns).
#[track_caller]
pub fn assert_tree_eq(got_root: &Path, want: &BTreeMap<String, Vec<u8>>) {
    assert!(
        got_root.is_dir(),
        "{} is not a directory",
        got_root.display()
    );
    let got = read_tree(got_root);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "files under {} differ from the torrent's",
        got_root.display()
    );
    for (name, data) in want {
        assert_bytes_eq(&got[name], data, name);
    }
}
