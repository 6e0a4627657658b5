//! Pure mapping of piece byte ranges onto the torrent's files (no I/O).
//!
//! Invariants of a built [`Layout`]: `piece_length > 0`; file offsets are cumulative and sum to
//! `total_length`; `piece_count == ceil(total_length / piece_length)` and equals the number of
//! v1 piece hashes (a v2-only torrent has none). Pad files are files like any other here: the
//! disk layer reads them as zeros and never writes them. Zero-length files own no bytes and never appear in a [`Segment`]. Every range is
//! checked against its piece before mapping, so a [`Segments`] iterator only yields in-bounds,
//! non-empty segments.

use std::iter::FusedIterator;

use super::LayoutError;
use crate::metainfo::Info;

/// A contiguous run of a piece's bytes inside one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the file in torrent order (`Info::files`).
    pub file: usize,
    /// Byte offset inside that file.
    pub offset: u64,
    /// Number of bytes (never 0).
    pub len: u32,
}

/// A non-empty file's byte range in the torrent's concatenated payload.
#[derive(Clone, Copy, Debug)]
struct Span {
    file: usize,
    start: u64,
    end: u64,
}

/// Where each piece's bytes live: pure arithmetic over file offsets and lengths.
#[derive(Clone, Debug)]
pub struct Layout {
    piece_length: u32,
    piece_count: u32,
    total_length: u64,
    file_lengths: Vec<u64>,
    /// Non-empty files only, sorted by `start`, contiguous and covering `0..total_length`.
    spans: Vec<Span>,
}

impl Layout {
    /// Builds the layout of `info`, re-checking the invariants it relies on (refused with
    /// [`LayoutError::InvalidInfo`]).
    pub fn new(info: &Info) -> Result<Layout, LayoutError> {
        if info.piece_length == 0 {
            return Err(LayoutError::InvalidInfo("piece length is 0".into()));
        }
        let mut pos: u64 = 0;
        let mut file_lengths = Vec::with_capacity(info.files.len());
        let mut spans = Vec::with_capacity(info.files.len());
        for (i, f) in info.files.iter().enumerate() {
            if f.offset != pos {
                return Err(LayoutError::InvalidInfo(format!(
                    "file {i} offset {} is not the cumulative length {pos}",
                    f.offset
                )));
            }
            let end = pos.checked_add(f.length).ok_or_else(|| {
                LayoutError::InvalidInfo(format!("file {i} length {} overflows", f.length))
            })?;
            if f.length > 0 {
                spans.push(Span {
                    file: i,
                    start: pos,
                    end,
                });
            }
            file_lengths.push(f.length);
            pos = end;
        }
        if pos != info.total_length {
            return Err(LayoutError::InvalidInfo(format!(
                "file lengths sum to {pos} but total length is {}",
                info.total_length
            )));
        }
        let count = info.total_length.div_ceil(u64::from(info.piece_length));
        let piece_count = u32::try_from(count).map_err(|_| {
            LayoutError::InvalidInfo(format!("{count} pieces do not fit in a u32 index"))
        })?;
        if info.version.has_v1() && info.pieces.len() as u64 != count {
            return Err(LayoutError::InvalidInfo(format!(
                "{} piece hashes for {count} pieces",
                info.pieces.len()
            )));
        }
        Ok(Layout {
            piece_length: info.piece_length,
            piece_count,
            total_length: info.total_length,
            file_lengths,
            spans,
        })
    }

    /// Nominal piece length (every piece but possibly the last).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Total payload length in bytes.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Number of files, zero-length ones included.
    pub fn file_count(&self) -> usize {
        self.file_lengths.len()
    }

    /// Length of file `file`, or `None` if there is no such file.
    pub fn file_length(&self, file: usize) -> Option<u64> {
        self.file_lengths.get(file).copied()
    }

    /// Length of piece `index` (the last one may be shorter); `Range` if `index` is out of range.
    pub fn piece_len(&self, index: u32) -> Result<u32, LayoutError> {
        if index >= self.piece_count {
            return Err(LayoutError::Range(format!(
                "piece {index} out of range (torrent has {} pieces)",
                self.piece_count
            )));
        }
        let start = u64::from(index) * u64::from(self.piece_length);
        let rest = self.total_length.saturating_sub(start);
        // `rest` > 0 since index < piece_count; min with a u32 keeps it in u32.
        Ok(rest.min(u64::from(self.piece_length)) as u32)
    }

    /// Maps `len` bytes at `begin` of piece `index` onto files, in payload order. The range must
    /// lie inside the piece, else `Range`. A zero `len` yields no segment. Allocation-free.
    pub fn segments(&self, index: u32, begin: u32, len: u32) -> Result<Segments<'_>, LayoutError> {
        let piece_len = self.piece_len(index)?;
        let end = u64::from(begin) + u64::from(len);
        if end > u64::from(piece_len) {
            return Err(LayoutError::Range(format!(
                "piece {index} range {begin}+{len} exceeds piece length {piece_len}"
            )));
        }
        let pos = u64::from(index) * u64::from(self.piece_length) + u64::from(begin);
        // First non-empty file whose end lies beyond `pos`.
        let next = self.spans.partition_point(|s| s.end <= pos);
        Ok(Segments {
            spans: &self.spans,
            next,
            pos,
            remaining: len,
        })
    }
}

/// Iterator over the [`Segment`]s of a checked range; see [`Layout::segments`].
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    spans: &'a [Span],
    next: usize,
    pos: u64,
    remaining: u32,
}

impl Iterator for Segments<'_> {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        if self.remaining == 0 {
            return None;
        }
        let Some(span) = self.spans.get(self.next) else {
            // Unreachable with the layout invariants; stop rather than yield garbage.
            self.remaining = 0;
            return None;
        };
        let avail = span.end.saturating_sub(self.pos);
        let take = avail.min(u64::from(self.remaining)) as u32;
        if take == 0 {
            self.remaining = 0;
            return None;
        }
        let seg = Segment {
            file: span.file,
            offset: self.pos.saturating_sub(span.start),
            len: take,
        };
        self.pos += u64::from(take);
        self.remaining -= take;
        self.next += 1;
        Some(seg)
    }
}

impl FusedIterator for Segments<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;
    use crate::testing::info_with;
    use proptest::prelude::*;

    /// Brute-force oracle: (file, offset in file) of payload byte `p`.
    fn owner(lengths: &[u64], p: u64) -> (usize, u64) {
        let mut start = 0;
        for (i, &l) in lengths.iter().enumerate() {
            if p < start + l {
                return (i, p - start);
            }
            start += l;
        }
        panic!("byte {p} beyond payload");
    }

    /// Checks every byte of the range against the oracle and that segments are in-bounds.
    fn check_range(layout: &Layout, lengths: &[u64], index: u32, begin: u32, len: u32) {
        let mut p = u64::from(index) * u64::from(layout.piece_length()) + u64::from(begin);
        let mut total = 0u64;
        for seg in layout.segments(index, begin, len).unwrap() {
            assert!(seg.len > 0, "empty segment");
            assert!(
                seg.offset + u64::from(seg.len) <= lengths[seg.file],
                "outside file"
            );
            for k in 0..u64::from(seg.len) {
                assert_eq!(owner(lengths, p), (seg.file, seg.offset + k), "byte {p}");
                p += 1;
            }
            total += u64::from(seg.len);
        }
        assert_eq!(total, u64::from(len));
    }

    #[test]
    fn piece_spanning_three_files_skips_empty_file() {
        let lengths = [3, 0, 2, 5];
        let layout = Layout::new(&info_with(&lengths, 8)).unwrap();
        assert_eq!(layout.piece_count(), 2);
        assert_eq!(layout.piece_len(1).unwrap(), 2);
        let segs: Vec<_> = layout.segments(0, 0, 8).unwrap().collect();
        assert_eq!(
            segs,
            vec![
                Segment {
                    file: 0,
                    offset: 0,
                    len: 3
                },
                Segment {
                    file: 2,
                    offset: 0,
                    len: 2
                },
                Segment {
                    file: 3,
                    offset: 0,
                    len: 3
                },
            ]
        );
        let segs: Vec<_> = layout.segments(1, 0, 2).unwrap().collect();
        assert_eq!(
            segs,
            vec![Segment {
                file: 3,
                offset: 3,
                len: 2
            }]
        );
        // A range starting exactly at a file boundary after an empty file.
        let segs: Vec<_> = layout.segments(0, 3, 1).unwrap().collect();
        assert_eq!(
            segs,
            vec![Segment {
                file: 2,
                offset: 0,
                len: 1
            }]
        );
    }

    #[test]
    fn out_of_range_requests_refused() {
        let layout = Layout::new(&info_with(&[10], 4)).unwrap();
        assert!(matches!(
            layout.segments(3, 0, 1),
            Err(LayoutError::Range(_))
        ));
        assert!(matches!(
            layout.segments(2, 0, 3),
            Err(LayoutError::Range(_))
        ));
        assert!(matches!(
            layout.segments(0, 3, 2),
            Err(LayoutError::Range(_))
        ));
        assert!(matches!(
            layout.segments(0, u32::MAX, u32::MAX),
            Err(LayoutError::Range(_))
        ));
        assert!(matches!(
            layout.segments(u32::MAX, 0, 1),
            Err(LayoutError::Range(_))
        ));
        assert_eq!(layout.segments(2, 2, 0).unwrap().count(), 0);
        assert_eq!(layout.segments(2, 0, 2).unwrap().count(), 1);
    }

    #[test]
    fn empty_torrent_has_no_pieces() {
        let layout = Layout::new(&info_with(&[0, 0], 16)).unwrap();
        assert_eq!(layout.piece_count(), 0);
        assert!(layout.segments(0, 0, 0).is_err());
    }

    #[test]
    fn inconsistent_info_refused() {
        let mut info = info_with(&[5, 5], 4);
        info.piece_length = 0;
        assert!(matches!(
            Layout::new(&info),
            Err(LayoutError::InvalidInfo(_))
        ));

        let mut info = info_with(&[5, 5], 4);
        info.files[1].offset = 4;
        assert!(matches!(
            Layout::new(&info),
            Err(LayoutError::InvalidInfo(_))
        ));

        let mut info = info_with(&[5, 5], 4);
        info.total_length = 11;
        assert!(matches!(
            Layout::new(&info),
            Err(LayoutError::InvalidInfo(_))
        ));

        let mut info = info_with(&[5, 5], 4);
        info.pieces.pop();
        assert!(matches!(
            Layout::new(&info),
            Err(LayoutError::InvalidInfo(_))
        ));

        let mut info = info_with(&[5], 4);
        info.files[0].length = u64::MAX;
        info.files
            .push(FileEntry::new(vec!["x".into()], 2, u64::MAX));
        assert!(matches!(
            Layout::new(&info),
            Err(LayoutError::InvalidInfo(_))
        ));

        // More pieces than a u32 can index.
        let mut info = info_with(&[0], 1);
        info.files[0].length = 1 << 33;
        info.total_length = 1 << 33;
        assert!(matches!(
            Layout::new(&info),
            Err(LayoutError::InvalidInfo(_))
        ));
    }

    fn lengths_strategy() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(prop_oneof![Just(0u64), 1u64..40, 40u64..300], 1..10)
    }

    proptest! {
        #[test]
        fn whole_pieces_tile_the_payload(lengths in lengths_strategy(), piece_length in 1u32..100) {
            let layout = Layout::new(&info_with(&lengths, piece_length)).unwrap();
            let total: u64 = lengths.iter().sum();
            let mut pos = 0u64;
            for index in 0..layout.piece_count() {
                let pl = layout.piece_len(index).unwrap();
                prop_assert!(pl > 0 && pl <= piece_length);
                for seg in layout.segments(index, 0, pl).unwrap() {
                    // Each segment starts exactly where the previous one ended.
                    let file_start: u64 = lengths[..seg.file].iter().sum();
                    prop_assert_eq!(file_start + seg.offset, pos);
                    prop_assert!(seg.len > 0);
                    prop_assert!(seg.offset + u64::from(seg.len) <= lengths[seg.file]);
                    pos += u64::from(seg.len);
                }
                prop_assert_eq!(pos, u64::from(index) * u64::from(piece_length) + u64::from(pl));
            }
            prop_assert_eq!(pos, total);
            prop_assert!(layout.segments(layout.piece_count(), 0, 0).is_err());
        }

        #[test]
        fn sub_ranges_match_oracle(
            lengths in lengths_strategy(),
            piece_length in 1u32..100,
            picks in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..8),
        ) {
            let layout = Layout::new(&info_with(&lengths, piece_length)).unwrap();
            prop_assume!(layout.piece_count() > 0);
            for (a, b, c) in picks {
                let index = a % layout.piece_count();
                let pl = layout.piece_len(index).unwrap();
                let begin = b % (pl + 1);
                let len = c % (pl - begin + 1);
                check_range(&layout, &lengths, index, begin, len);
                prop_assert!(layout.segments(index, begin, pl - begin + 1).is_err());
            }
        }
    }
}
