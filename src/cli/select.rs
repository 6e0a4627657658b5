//! Choosing what to download and how fast, from the command line: `--only` file ranges,
//! `--file INDEX|PATH`, rate values with `K`/`M`/`G` suffixes, and `--list`.
//!
//! File indices are those `--list` prints: the torrent's files in order, pad files left out.
//! Every parser takes hostile text: it never panics, bounds what it builds (at most
//! [`MAX_ONLY_ITEMS`] ranges), and says what is wrong in one line.

use std::ops::RangeInclusive;

use bitrush::metainfo::Info;

/// Most comma-separated items in one `--only`.
pub const MAX_ONLY_ITEMS: usize = 1024;

/// `--only 0,3-5`: file index ranges, as given (checked against a torrent by
/// [`OnlyFiles::resolve`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlyFiles(Vec<RangeInclusive<u32>>);

/// Parses `--only`: comma-separated indices (`3`) and inclusive ranges (`3-5`).
pub fn parse_only(text: &str) -> Result<OnlyFiles, String> {
    let mut ranges = Vec::new();
    for item in text.split(',') {
        if ranges.len() == MAX_ONLY_ITEMS {
            return Err(format!("more than {MAX_ONLY_ITEMS} items"));
        }
        let item = item.trim();
        let index = |s: &str| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{item:?} is not a file index or a range like 3-5"));
            }
            s.parse::<u32>()
                .map_err(|_| format!("file index {s} is too large"))
        };
        let range = match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (index(a)?, index(b)?);
                if a > b {
                    return Err(format!("range {item:?} goes backwards"));
                }
                a..=b
            }
            None => {
                let i = index(item)?;
                i..=i
            }
        };
        ranges.push(range);
    }
    Ok(OnlyFiles(ranges))
}

impl OnlyFiles {
    /// The chosen files as indices into `info.files` (pad files skipped), in order, without
    /// duplicates. Every index must name a file.
    pub fn resolve(&self, info: &Info) -> Result<Vec<usize>, String> {
        let real: Vec<usize> = info.real_files().map(|(i, _)| i).collect();
        let mut chosen = vec![false; real.len()];
        for range in &self.0 {
            if *range.end() as usize >= real.len() {
                return Err(format!(
                    "--only: there is no file {} (the torrent has {} files, 0 to {}; see --list)",
                    range.end(),
                    real.len(),
                    real.len().saturating_sub(1)
                ));
            }
            for i in range.clone() {
                chosen[i as usize] = true;
            }
        }
        Ok(real
            .into_iter()
            .zip(chosen)
            .filter_map(|(i, c)| c.then_some(i))
            .collect())
    }
}

/// `--file INDEX|PATH`: the file's index in `info.files`. A number is a `--list` index; else
/// the path as `--list` prints it (with or without the torrent's folder name first).
pub fn resolve_file(info: &Info, which: &str) -> Result<usize, String> {
    let real: Vec<(usize, String)> = info
        .real_files()
        .map(|(i, f)| (i, f.path.join("/")))
        .collect();
    if !which.is_empty() && which.bytes().all(|b| b.is_ascii_digit()) {
        return which
            .parse::<usize>()
            .ok()
            .and_then(|n| real.get(n))
            .map(|(i, _)| *i)
            .ok_or_else(|| {
                format!(
                    "--file: there is no file {which} (the torrent has {} files; see --list)",
                    real.len()
                )
            });
    }
    let trimmed = which.trim_start_matches("./");
    let without_name = trimmed
        .strip_prefix(info.name.as_str())
        .and_then(|rest| rest.strip_prefix('/'));
    real.iter()
        .find(|(_, path)| path == trimmed || Some(path.as_str()) == without_name)
        .map(|(i, _)| *i)
        .ok_or_else(|| format!("--file: the torrent has no file {which:?} (see --list)"))
}

/// The `--list` lines: `<index> <length> <path>` for each file (pad files left out).
pub fn list_lines(info: &Info) -> String {
    let mut out = String::new();
    for (n, (_, f)) in info.real_files().enumerate() {
        out.push_str(&format!("{n} {} {}\n", f.length, f.path.join("/")));
    }
    out
}

/// `--list --json`: `{"files": [{"index", "length", "path"}, ...]}`.
pub fn list_json(info: &Info) -> serde_json::Value {
    let files: Vec<serde_json::Value> = info
        .real_files()
        .enumerate()
        .map(|(n, (_, f))| {
            serde_json::json!({"index": n, "length": f.length, "path": f.path.join("/")})
        })
        .collect();
    serde_json::json!({ "files": files })
}

/// Parses a rate in bytes per second: a positive number with an optional `K`, `M` or `G`
/// suffix (powers of 1024, either case, an optional `B` or `iB` after it): `500K`, `2M`,
/// `1.5M`, `65536`.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a rate like 500K or 2M (bytes per second)");
    let lower = t.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (number, unit) = match lower.as_bytes().last() {
        Some(b'k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some(b'm') => (&lower[..lower.len() - 1], 1 << 20),
        Some(b'g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    // Digits and at most one point only: no signs, exponents, `inf` or `nan`.
    let digits_ok = !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && number != ".";
    if !digits_ok || number.len() > 32 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * unit as f64;
    if bytes < 1.0 {
        return Err(format!(
            "{text:?} is below 1 byte per second (leave the option out for no limit)"
        ));
    }
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitrush::metainfo::{FileEntry, MetaVersion};
    use proptest::prelude::*;

    fn info(paths: &[&str]) -> Info {
        let mut offset = 0;
        let files = paths
            .iter()
            .map(|p| {
                let f = FileEntry::new(p.split('/').map(String::from).collect(), 10, offset);
                offset += 10;
                f
            })
            .collect();
        Info {
            name: "folder".into(),
            original_name: None,
            piece_length: 16384,
            pieces: vec![[0; 20]],
            files,
            multi_file: true,
            total_length: offset,
            private: false,
            version: MetaVersion::V1,
        }
    }

    #[test]
    fn only_takes_indices_and_ranges() {
        let only = parse_only("0,3-5, 2").unwrap();
        let i = info(&["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(only.resolve(&i).unwrap(), vec![0, 2, 3, 4, 5]);
        assert_eq!(parse_only("1-1").unwrap().resolve(&i).unwrap(), vec![1]);
    }

    #[test]
    fn only_skips_pad_files_in_its_numbering() {
        let mut i = info(&["a", ".pad/5", "b"]);
        i.files[1].attr.pad = true;
        assert_eq!(parse_only("1").unwrap().resolve(&i).unwrap(), vec![2]);
        assert!(parse_only("2").unwrap().resolve(&i).is_err());
    }

    #[test]
    fn only_refuses_bad_input_in_one_line() {
        for bad in [
            "",
            ",",
            "1,",
            "a",
            "-1",
            "1-",
            "5-3",
            "1-2-3",
            "1.5",
            "+1",
            "99999999999",
            " - ",
        ] {
            let e = parse_only(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
        let many = vec!["1"; MAX_ONLY_ITEMS + 1].join(",");
        assert!(parse_only(&many).unwrap_err().contains("more than"));
        let e = parse_only("0-4000000000")
            .unwrap()
            .resolve(&info(&["a"]))
            .unwrap_err();
        assert!(e.contains("no file 4000000000"), "{e}");
    }

    #[test]
    fn file_is_an_index_or_a_path() {
        let i = info(&["a.txt", "sub/b.bin"]);
        assert_eq!(resolve_file(&i, "1"), Ok(1));
        assert_eq!(resolve_file(&i, "sub/b.bin"), Ok(1));
        assert_eq!(resolve_file(&i, "folder/sub/b.bin"), Ok(1));
        assert_eq!(resolve_file(&i, "./a.txt"), Ok(0));
        assert!(resolve_file(&i, "2").is_err());
        assert!(resolve_file(&i, "99999999999999999999999").is_err());
        assert!(resolve_file(&i, "nope").is_err());
        assert!(resolve_file(&i, "").is_err());
    }

    #[test]
    fn list_prints_index_length_and_path() {
        let mut i = info(&["a", ".pad/6", "d/b"]);
        i.files[1].attr.pad = true;
        assert_eq!(list_lines(&i), "0 10 a\n1 10 d/b\n");
        assert_eq!(
            list_json(&i).to_string(),
            r#"{"files":[{"index":0,"length":10,"path":"a"},{"index":1,"length":10,"path":"d/b"}]}"#
        );
    }

    #[test]
    fn rates_take_binary_suffixes() {
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_rate("2m"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_rate("1.5M"), Ok(1536 * 1024));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("100KB"), Ok(100 * 1024));
        assert_eq!(parse_rate("100KiB"), Ok(100 * 1024));
        assert_eq!(parse_rate("65536"), Ok(65536));
        for bad in [
            "",
            "K",
            "0",
            "0.1",
            "-5K",
            "1e6",
            "inf",
            "nan",
            "5T",
            "1.2.3M",
            ".",
            "5 K M",
            "0x10",
            "99999999999999999999G",
        ] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{e}");
        }
    }

    proptest! {
        #[test]
        fn rate_parsing_never_panics(text in "\\PC{0,40}") {
            let _ = parse_rate(&text);
        }

        #[test]
        fn rates_round_trip(n in 1u64..1_000_000, unit in 0usize..4) {
            let (suffix, mult) = [("", 1u64), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)][unit];
            prop_assert_eq!(parse_rate(&format!("{n}{suffix}")), Ok(n * mult));
        }

        #[test]
        fn only_parsing_never_panics_and_resolves_within_bounds(
            text in "[0-9,\\- ]{0,40}",
            files in 1usize..20,
        ) {
            let names: Vec<String> = (0..files).map(|i| format!("f{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let i = info(&refs);
            if let Ok(only) = parse_only(&text) {
                if let Ok(chosen) = only.resolve(&i) {
                    prop_assert!(chosen.iter().all(|&c| c < files));
                    prop_assert!(chosen.windows(2).all(|w| w[0] < w[1]));
                }
            }
        }

        #[test]
        fn every_listed_index_is_chosen(set in proptest::collection::btree_set(0u32..30, 1..10)) {
            let text = set.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            let names: Vec<String> = (0..30).map(|i| format!("f{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let chosen = parse_only(&text).unwrap().resolve(&info(&refs)).unwrap();
            let expected: Vec<usize> = set.iter().map(|&i| i as usize).collect();
            prop_assert_eq!(chosen, expected);
        }
    }
}
