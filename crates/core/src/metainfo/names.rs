//! File names from torrents made safe: sanitised, never refused (as libtorrent does).
//!
//! A name component from a torrent becomes a name that is safe to create inside the download
//! folder on Unix and Windows, or is dropped:
//! - text that is not valid UTF-8 is decoded as Windows-1252 (the common legacy encoding; the 5
//!   bytes it leaves undefined map to U+0081..U+009D), which maps distinct byte strings to
//!   distinct names;
//! - leading separators and a leading drive (`C:`) are stripped; `/`, `\` and control
//!   characters inside are replaced by `_`; the bidirectional-override characters that can
//!   disguise an extension are removed;
//! - empty, `.` and `..` components are dropped; a path left with no component becomes `_`;
//! - Windows device names (`CON`, `nul.txt`, `COM1`...) get `_` after their stem (`CON_`,
//!   `nul_.txt`);
//! - components longer than [`MAX_COMPONENT_BYTES`] are cut, keeping a short extension.
//!
//! [`resolve_collisions`] then renames files whose paths clash (ignoring ASCII case, as
//! libtorrent does, so the tree also works on case-insensitive file systems): the later file
//! gets `.1`, `.2`, ... before its extension; directories keep their names.
//!
//! Sanitised names are for the disk only: where a name changed, the bytes the torrent wrote
//! are kept beside it ([`original_if_changed`]) for a web seed's URLs.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::FileEntry;

/// Longest name component kept, in bytes (file systems allow 255; the rest is room for a
/// collision suffix).
pub const MAX_COMPONENT_BYTES: usize = 240;
/// Longest extension kept when a long component is cut (dot included).
const MAX_KEPT_EXTENSION: usize = 10;

/// Windows-1252 for bytes 0x80..=0x9F; the undefined ones keep their Latin-1 code point.
const CP1252_HIGH: [char; 32] = [
    '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
];

/// The text of a name: UTF-8 as is, anything else decoded as Windows-1252 (injective).
pub fn decode_name(raw: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(raw) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            raw.iter()
                .map(|&b| match b {
                    0x80..=0x9f => CP1252_HIGH[usize::from(b - 0x80)],
                    _ => char::from(b),
                })
                .collect(),
        ),
    }
}

/// Characters that reverse the display direction and can disguise an extension.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// CON, PRN, AUX, NUL, COM0-9, LPT0-9 (and the superscript-digit forms) in any case, with or
/// without an extension; Windows ignores trailing spaces before the extension.
pub fn is_reserved_windows_name(c: &str) -> bool {
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    let mut chars = upper.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    match (prefix.as_str(), rest.as_slice()) {
        ("CON" | "PRN" | "AUX" | "NUL", []) => true,
        ("COM" | "LPT", [d]) => d.is_ascii_digit() || matches!(d, '¹' | '²' | '³'),
        _ => false,
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// One name component made safe, or `None` if it is dropped (see the module docs).
pub fn sanitize_component(raw: &[u8]) -> Option<String> {
    let text = decode_name(raw);
    let mut rest: &str = &text;
    loop {
        rest = rest.trim_start_matches(['/', '\\']);
        match rest.as_bytes() {
            [drive, b':', ..] if drive.is_ascii_alphabetic() => rest = rest.get(2..).unwrap_or(""),
            _ => break,
        }
    }
    let mut name: String = rest
        .chars()
        .filter(|&c| !is_bidi_control(c))
        .map(|c| {
            if c == '/' || c == '\\' || c.is_ascii_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    if name.len() > MAX_COMPONENT_BYTES {
        let extension = name
            .rfind('.')
            .filter(|&dot| dot > 0 && name.len() - dot <= MAX_KEPT_EXTENSION)
            .map(|dot| name[dot..].to_string())
            .unwrap_or_default();
        let stem = cut(&name, MAX_COMPONENT_BYTES - extension.len()).to_string();
        name = stem + &extension;
    }
    if is_reserved_windows_name(&name) {
        let stem_end = name.find('.').unwrap_or(name.len());
        name.insert(stem_end, '_');
    }
    Some(name)
}

/// A path's raw components made safe; dropped components vanish, and a path left empty
/// becomes `_` (as libtorrent names it).
pub fn sanitize_path<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let out: Vec<String> = parts.into_iter().filter_map(sanitize_component).collect();
    if out.is_empty() {
        vec!["_".to_string()]
    } else {
        out
    }
}

/// The raw components of a path, kept beside its sanitised `path` only when the bytes differ
/// (the common case keeps nothing).
pub fn original_if_changed(raw: &[&[u8]], path: &[String]) -> Option<Box<[Box<[u8]>]>> {
    let same = raw.len() == path.len() && raw.iter().zip(path).all(|(r, p)| *r == p.as_bytes());
    (!same).then(|| raw.iter().map(|r| Box::from(*r)).collect())
}

/// `components` joined with `/`, in ASCII lower case: the key two paths collide on.
fn collision_key(components: &[String]) -> String {
    components.join("/").to_ascii_lowercase()
}

/// `name` with `.n` before its extension (`a.txt` -> `a.1.txt`, `.bashrc` -> `.bashrc.1`).
fn with_suffix(name: &str, n: u64) -> String {
    match name.rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{}.{n}{}", &name[..dot], &name[dot..]),
        None => format!("{name}.{n}"),
    }
}

/// Renames the later of any two files (pad files aside: they never reach the disk) whose paths
/// are equal ignoring ASCII case, or whose path is a directory of another file: it gets the
/// first free `.1`, `.2`, ... suffix. Directories are never renamed. A renamed file keeps its
/// path as written in `original_path` (set here if sanitising had not already). Linear in the
/// number of files (each base name remembers the last suffix it handed out).
pub fn resolve_collisions(files: &mut [FileEntry]) {
    let mut taken: HashSet<String> = HashSet::new();
    for f in files.iter().filter(|f| !f.attr.pad) {
        for depth in 1..f.path.len() {
            taken.insert(collision_key(&f.path[..depth]));
        }
    }
    let mut next_suffix: HashMap<String, u64> = HashMap::new();
    for f in files.iter_mut().filter(|f| !f.attr.pad) {
        let key = collision_key(&f.path);
        if taken.insert(key.clone()) {
            continue;
        }
        let Some(last) = f.path.last().cloned() else {
            continue;
        };
        let mut n = next_suffix.get(&key).copied().unwrap_or(1);
        loop {
            let renamed = with_suffix(&last, n);
            let mut path = f.path.clone();
            if let Some(slot) = path.last_mut() {
                *slot = renamed;
            }
            n += 1;
            if taken.insert(collision_key(&path)) {
                if f.original_path.is_none() {
                    // Unchanged by sanitising, so the old path is the raw one.
                    f.original_path =
                        Some(f.path.iter().map(|c| Box::from(c.as_bytes())).collect());
                }
                f.path = path;
                break;
            }
        }
        next_suffix.insert(key, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(raw: &[u8]) -> Option<String> {
        sanitize_component(raw)
    }

    #[test]
    fn components_are_sanitised_not_refused() {
        assert_eq!(s(b"plain.txt").as_deref(), Some("plain.txt"));
        for dropped in [
            &b""[..],
            b".",
            b"..",
            b"/",
            b"\\\\",
            b"C:",
            b"c:\\",
            b"\xe2\x80\xae",
        ] {
            assert_eq!(s(dropped), None, "{dropped:?}");
        }
        assert_eq!(s(b"/etc").as_deref(), Some("etc"));
        assert_eq!(s(b"a/b\\c").as_deref(), Some("a_b_c"));
        assert_eq!(s(b"C:evil").as_deref(), Some("evil"));
        assert_eq!(s(b"C:C:\\/x").as_deref(), Some("x"));
        assert_eq!(s(b"C:\\Windows\\x").as_deref(), Some("Windows_x"));
        assert_eq!(s(b"ab:c").as_deref(), Some("ab:c"));
        assert_eq!(s(b"a\0b\x1fc\x7f").as_deref(), Some("a_b_c_"));
        assert_eq!(s(b"...").as_deref(), Some("..."));
        assert_eq!(s(b"..a").as_deref(), Some("..a"));
        // Right-to-left override hiding an extension.
        assert_eq!(
            s("evil\u{202e}txt.exe".as_bytes()).as_deref(),
            Some("eviltxt.exe")
        );
        assert_eq!(s("é ü".as_bytes()).as_deref(), Some("é ü"));
    }

    #[test]
    fn reserved_device_names_get_a_suffix() {
        for (raw, want) in [
            ("CON", "CON_"),
            ("nul.txt", "nul_.txt"),
            ("Com7.tar.gz", "Com7_.tar.gz"),
            ("lpt1", "lpt1_"),
            ("COM0", "COM0_"),
            ("aux .txt", "aux _.txt"),
            ("COM¹", "COM¹_"),
        ] {
            assert_eq!(s(raw.as_bytes()).as_deref(), Some(want), "{raw}");
            assert!(!is_reserved_windows_name(want), "{want}");
        }
        for ok in ["CONSOLE", "COM10", "LPT", "auxiliary.txt", "a.con", "NULL"] {
            assert_eq!(s(ok.as_bytes()).as_deref(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn long_components_are_cut_keeping_the_extension() {
        let long = format!("{}.mkv", "x".repeat(300));
        let cut = s(long.as_bytes()).unwrap();
        assert_eq!(cut.len(), MAX_COMPONENT_BYTES);
        assert!(cut.ends_with("x.mkv"));
        let no_ext = "é".repeat(200);
        let cut = s(no_ext.as_bytes()).unwrap();
        assert_eq!(cut, "é".repeat(120));
        let long_ext = format!("a.{}", "e".repeat(300));
        assert_eq!(s(long_ext.as_bytes()).unwrap().len(), MAX_COMPONENT_BYTES);
    }

    #[test]
    fn legacy_encodings_become_distinct_valid_names() {
        // "café" in Latin-1 and in CP437: both invalid UTF-8, both kept apart.
        let latin1 = s(b"caf\xe9").unwrap();
        let cp437 = s(b"caf\x82").unwrap();
        assert_eq!(latin1, "café");
        assert_eq!(cp437, "caf\u{201a}");
        assert_ne!(latin1, cp437);
        let undefined = s(b"x\x81\x8d\x8f\x90\x9d").unwrap();
        assert_eq!(undefined.chars().count(), 6);
    }

    #[test]
    fn paths_drop_components_and_never_end_empty() {
        let p = |parts: &[&[u8]]| sanitize_path(parts.iter().copied());
        assert_eq!(p(&[b"a", b"..", b"", b".", b"b"]), ["a", "b"]);
        assert_eq!(p(&[b"..", b".."]), ["_"]);
        assert_eq!(p(&[]), ["_"]);
    }

    fn entry(path: &[&str], pad: bool) -> FileEntry {
        let mut f = FileEntry::new(path.iter().map(|c| c.to_string()).collect(), 1, 0);
        f.attr.pad = pad;
        f
    }

    fn paths(files: &[FileEntry]) -> Vec<String> {
        files.iter().map(|f| f.path.join("/")).collect()
    }

    #[test]
    fn collisions_get_numbered_suffixes() {
        let mut files = vec![
            entry(&["a.txt"], false),
            entry(&["A.TXT"], false),
            entry(&["a.txt"], false),
            entry(&["a.1.txt"], false),
            entry(&["d"], false),
            entry(&["d", "x"], false),
            entry(&[".pad", "3"], true),
            entry(&[".pad", "3"], true),
            entry(&["noext"], false),
            entry(&["noext"], false),
            entry(&[".hidden"], false),
            entry(&[".hidden"], false),
        ];
        resolve_collisions(&mut files);
        assert_eq!(
            paths(&files),
            [
                "a.txt",
                "A.1.TXT",
                "a.2.txt",
                // Its own name was taken by a renamed file first: first come, first served.
                "a.1.1.txt",
                "d.1",
                "d/x",
                ".pad/3",
                ".pad/3",
                "noext",
                "noext.1",
                ".hidden",
                ".hidden.1",
            ]
        );
    }

    #[test]
    fn renamed_files_keep_their_path_as_written() {
        let mut files = vec![entry(&["d", "a.txt"], false), entry(&["D", "A.txt"], false)];
        let kept: Box<[Box<[u8]>]> = Box::new([Box::from(&b"raw"[..])]);
        let mut earlier = entry(&["x"], false);
        earlier.original_path = Some(kept.clone());
        files.push(earlier.clone());
        files.push(earlier);
        resolve_collisions(&mut files);
        assert_eq!(paths(&files), ["d/a.txt", "D/A.1.txt", "x", "x.1"]);
        assert_eq!(files[0].original_path, None);
        let written: Vec<&[u8]> = files[1].path_as_written();
        assert_eq!(written, [&b"D"[..], b"A.txt"]);
        // A path sanitising had already changed keeps its raw bytes, not the sanitised ones.
        assert_eq!(files[3].original_path, Some(kept));
    }

    #[test]
    fn originals_are_kept_only_when_they_differ() {
        let path = |p: &[&str]| p.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(original_if_changed(&[b"a", b"b"], &path(&["a", "b"])), None);
        assert!(original_if_changed(&[b"a", b".."], &path(&["a"])).is_some());
        assert!(original_if_changed(&[b"CON"], &path(&["CON_"])).is_some());
        assert!(original_if_changed(&[b"ab"], &path(&["a", "b"])).is_some());
    }

    #[test]
    fn many_identical_names_stay_linear() {
        let mut files: Vec<FileEntry> = (0..20_000).map(|_| entry(&["same"], false)).collect();
        resolve_collisions(&mut files);
        let unique: HashSet<String> = paths(&files).into_iter().collect();
        assert_eq!(unique.len(), 20_000);
        assert_eq!(files[19_999].path, ["same.19999"]);
    }

    proptest! {
        #[test]
        fn sanitised_components_are_safe(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(c) = sanitize_component(&raw) {
                prop_assert!(!c.is_empty() && c != "." && c != "..");
                prop_assert!(!c.contains(['/', '\\']) && !c.chars().any(|ch| ch.is_ascii_control()));
                prop_assert!(c.len() <= MAX_COMPONENT_BYTES + 1);
                prop_assert!(!is_reserved_windows_name(&c));
                let b = c.as_bytes();
                prop_assert!(!(b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'));
            }
        }

        #[test]
        fn resolved_paths_are_unique(
            names in proptest::collection::vec(
                proptest::collection::vec(prop::sample::select(vec!["a", "A", "a.x", "a.1.x", "b"]), 1..3),
                1..12,
            )
        ) {
            let mut files: Vec<FileEntry> = names.iter().map(|p| entry(p, false)).collect();
            resolve_collisions(&mut files);
            let keys: Vec<String> = files.iter().map(|f| collision_key(&f.path)).collect();
            let unique: HashSet<&String> = keys.iter().collect();
            prop_assert_eq!(unique.len(), keys.len());
            // No file sits where another file's directory is.
            for f in &files {
                for g in &files {
                    if g.path.len() > f.path.len() {
                        prop_assert_ne!(collision_key(&g.path[..f.path.len()]), collision_key(&f.path));
                    }
                }
            }
        }
    }
}
