//! Fast-resume state (sans-IO): which pieces were verified when a session stopped, and each
//! file's length and modification time at that moment, as a small bencoded dictionary.
//!
//! Invariants: the state is trusted only for the same info hash, the same piece count, and files
//! that all still have the recorded length and modification time ([`ResumeState::matches`]);
//! anything else means a full recheck. The engine writes it only after the data it describes is
//! flushed, and atomically, so a crash leaves the previous state or the new one. Decoding bounds
//! every count by the input's own length and never trusts a field it has not checked.

use std::collections::BTreeMap;

use crate::bencode::{self, Value};

/// Format version written in every state; others are refused.
pub const RESUME_VERSION: i64 = 1;

/// A file's length and modification time (seconds and nanoseconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub length: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
}

/// What a stopped session leaves for the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    pub info_hash: [u8; 20],
    pub piece_count: u32,
    /// The verified pieces as a BitTorrent bitfield (high bit first).
    pub pieces: Vec<u8>,
    /// One entry per torrent file, in torrent order; `None` for a file that did not exist.
    pub files: Vec<Option<FileStamp>>,
}

/// Why a resume state was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResumeError {
    #[error("resume state is not bencode: {0}")]
    Bencode(String),
    #[error("resume state field {0} is missing or invalid")]
    Field(&'static str),
    #[error("resume state version {0} is not supported")]
    Version(i64),
}

impl ResumeState {
    /// The bencoded state.
    pub fn encode(&self) -> Vec<u8> {
        let files = self
            .files
            .iter()
            .map(|f| match f {
                Some(s) => Value::List(vec![
                    Value::Int(i64::try_from(s.length).unwrap_or(i64::MAX)),
                    Value::Int(s.mtime_secs),
                    Value::Int(i64::from(s.mtime_nanos)),
                ]),
                None => Value::List(Vec::new()),
            })
            .collect();
        let mut d = BTreeMap::new();
        d.insert(b"files".to_vec(), Value::List(files));
        d.insert(b"info hash".to_vec(), Value::Bytes(self.info_hash.to_vec()));
        d.insert(
            b"piece count".to_vec(),
            Value::Int(i64::from(self.piece_count)),
        );
        d.insert(b"pieces".to_vec(), Value::Bytes(self.pieces.clone()));
        d.insert(b"version".to_vec(), Value::Int(RESUME_VERSION));
        bencode::encode(&Value::Dict(d))
    }

    /// Parses a state written by [`ResumeState::encode`]; checks every field's type and range
    /// (the bitfield's length against the piece count included).
    pub fn decode(bytes: &[u8]) -> Result<ResumeState, ResumeError> {
        let value = bencode::decode(bytes).map_err(|e| ResumeError::Bencode(e.to_string()))?;
        let d = value.as_dict().ok_or(ResumeError::Field("(root)"))?;
        let version = d
            .get(&b"version"[..])
            .and_then(Value::as_int)
            .ok_or(ResumeError::Field("version"))?;
        if version != RESUME_VERSION {
            return Err(ResumeError::Version(version));
        }
        let info_hash: [u8; 20] = d
            .get(&b"info hash"[..])
            .and_then(Value::as_bytes)
            .and_then(|b| b.try_into().ok())
            .ok_or(ResumeError::Field("info hash"))?;
        let piece_count = d
            .get(&b"piece count"[..])
            .and_then(Value::as_int)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(ResumeError::Field("piece count"))?;
        let pieces = d
            .get(&b"pieces"[..])
            .and_then(Value::as_bytes)
            .filter(|p| p.len() as u64 == u64::from(piece_count).div_ceil(8))
            .ok_or(ResumeError::Field("pieces"))?
            .to_vec();
        let files = d
            .get(&b"files"[..])
            .and_then(Value::as_list)
            .ok_or(ResumeError::Field("files"))?
            .iter()
            .map(decode_stamp)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResumeState {
            info_hash,
            piece_count,
            pieces,
            files,
        })
    }

    /// True if this state describes `info_hash` with `piece_count` pieces and `files` (the
    /// stamps taken now) are exactly the recorded ones.
    pub fn matches(
        &self,
        info_hash: &[u8; 20],
        piece_count: u32,
        files: &[Option<FileStamp>],
    ) -> bool {
        &self.info_hash == info_hash && self.piece_count == piece_count && self.files == files
    }

    /// True if this state still vouches for its pieces after an unclean stop (a crash, `kill
    /// -9`) of a session that went on writing after saving it: same torrent and piece count,
    /// and every file the state saw still exists, at least as long as it was. Writes after the
    /// save only add pieces (a verified piece is never written again), so the pieces recorded
    /// stand and only the others need checking. A file that shrank or vanished means someone
    /// else touched the data: no trust.
    pub fn survives_crash(
        &self,
        info_hash: &[u8; 20],
        piece_count: u32,
        files: &[Option<FileStamp>],
    ) -> bool {
        &self.info_hash == info_hash
            && self.piece_count == piece_count
            && self.files.len() == files.len()
            && self
                .files
                .iter()
                .zip(files)
                .all(|(then, now)| match (then, now) {
                    (None, _) => true,
                    (Some(then), Some(now)) => now.length >= then.length,
                    (Some(_), None) => false,
                })
    }
}

fn decode_stamp(v: &Value) -> Result<Option<FileStamp>, ResumeError> {
    let bad = ResumeError::Field("files");
    match v.as_list().ok_or(bad.clone())? {
        [] => Ok(None),
        [length, secs, nanos] => {
            let length = length.as_int().and_then(|n| u64::try_from(n).ok());
            let mtime_secs = secs.as_int();
            let mtime_nanos = nanos
                .as_int()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n < 1_000_000_000);
            match (length, mtime_secs, mtime_nanos) {
                (Some(length), Some(mtime_secs), Some(mtime_nanos)) => Ok(Some(FileStamp {
                    length,
                    mtime_secs,
                    mtime_nanos,
                })),
                _ => Err(bad),
            }
        }
        _ => Err(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ResumeState {
        ResumeState {
            info_hash: [7; 20],
            piece_count: 10,
            pieces: vec![0b1010_0000, 0b1100_0000],
            files: vec![
                Some(FileStamp {
                    length: 5,
                    mtime_secs: 1_700_000_000,
                    mtime_nanos: 123,
                }),
                None,
            ],
        }
    }

    #[test]
    fn round_trip_and_matching() {
        let s = sample();
        let back = ResumeState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        assert!(back.matches(&[7; 20], 10, &s.files));
        assert!(!back.matches(&[8; 20], 10, &s.files));
        assert!(!back.matches(&[7; 20], 11, &s.files));
        let mut touched = s.files.clone();
        if let Some(Some(f)) = touched.first_mut() {
            f.mtime_nanos += 1;
        }
        assert!(!back.matches(&[7; 20], 10, &touched));
        assert!(!back.matches(&[7; 20], 10, &s.files[..1]));
    }

    #[test]
    fn a_crash_keeps_the_recorded_pieces_unless_a_file_shrank_or_vanished() {
        let s = sample();
        let stamp = |length, secs| {
            Some(FileStamp {
                length,
                mtime_secs: secs,
                mtime_nanos: 0,
            })
        };
        // Written to since (new time, longer, a file that appeared): still vouched for.
        assert!(s.survives_crash(&[7; 20], 10, &[stamp(5, 1_800_000_000), None]));
        assert!(s.survives_crash(&[7; 20], 10, &[stamp(9, 1), stamp(3, 1)]));
        // Shrunk, vanished, another torrent or shape: not.
        assert!(!s.survives_crash(&[7; 20], 10, &[stamp(4, 1), None]));
        assert!(!s.survives_crash(&[7; 20], 10, &[None, None]));
        assert!(!s.survives_crash(&[8; 20], 10, &s.files));
        assert!(!s.survives_crash(&[7; 20], 11, &s.files));
        assert!(!s.survives_crash(&[7; 20], 10, &s.files[..1]));
    }

    /// `bytes` with the one occurrence of `from` replaced by `to`.
    fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        [&bytes[..at], to.as_bytes(), &bytes[at + from.len()..]].concat()
    }

    #[test]
    fn refuses_inconsistent_fields() {
        let enc = |f: &dyn Fn(&mut ResumeState)| {
            let mut s = sample();
            f(&mut s);
            s.encode()
        };
        // A bitfield that does not fit the piece count.
        let short = enc(&|s| {
            s.pieces.pop();
        });
        assert_eq!(
            ResumeState::decode(&short),
            Err(ResumeError::Field("pieces"))
        );
        let bad_version = replace(&sample().encode(), "7:versioni1e", "7:versioni2e");
        assert_eq!(
            ResumeState::decode(&bad_version),
            Err(ResumeError::Version(2))
        );
        let bad_nanos = replace(&sample().encode(), "i123e", "i1000000000e");
        assert_eq!(
            ResumeState::decode(&bad_nanos),
            Err(ResumeError::Field("files"))
        );
        let negative_len = replace(&sample().encode(), "li5e", "li-5e");
        assert_eq!(
            ResumeState::decode(&negative_len),
            Err(ResumeError::Field("files"))
        );
        assert!(matches!(
            ResumeState::decode(b"d7:versioni1ee"),
            Err(ResumeError::Field("info hash"))
        ));
        assert!(matches!(
            ResumeState::decode(b"le"),
            Err(ResumeError::Field("(root)"))
        ));
        assert!(matches!(
            ResumeState::decode(b"d7:version"),
            Err(ResumeError::Bencode(_))
        ));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            info_hash in any::<[u8; 20]>(),
            piece_count in 0u32..2000,
            seed in any::<u64>(),
            files in prop::collection::vec(
                prop::option::of((0u64..u64::MAX / 2, any::<i64>(), 0u32..1_000_000_000)),
                0..20,
            ),
        ) {
            let len = piece_count.div_ceil(8) as usize;
            let pieces = (0..len).map(|i| (seed >> (i % 64)) as u8).collect();
            let s = ResumeState {
                info_hash,
                piece_count,
                pieces,
                files: files
                    .into_iter()
                    .map(|f| f.map(|(length, mtime_secs, mtime_nanos)| FileStamp {
                        length,
                        mtime_secs,
                        mtime_nanos,
                    }))
                    .collect(),
            };
            prop_assert_eq!(ResumeState::decode(&s.encode()), Ok(s));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = ResumeState::decode(&bytes);
        }
    }
}
