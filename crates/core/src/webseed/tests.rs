//! Tests of the web seed machine: URLs, ranges cut at files, and whole downloads through a real
//! [`Swarm`] from an in-memory HTTP server that may lie (wrong lengths, no range support,
//! garbage, failed transfers), on virtual time.

use std::collections::HashMap;

use proptest::prelude::*;
use sha1::{Digest, Sha1};

use super::*;
use crate::metainfo::FileAttr;
use crate::swarm::{Bitfield, Config, PeerFeatures, Swarm, SwarmEvent};

/// How the test server answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Honest,
    /// `200` and the whole file, as a server without range support does.
    WholeFile,
    /// The range and one byte more.
    Longer,
    /// One byte short.
    Shorter,
    /// A `Content-Range` for other bytes.
    OtherRange,
    /// The right length of wrong bytes.
    Garbage,
    /// `404`.
    NotFound,
    /// The exchange fails in the driver (refused, redirect loop, TLS).
    Transport,
    /// Nothing at all: the response never comes.
    Silence,
}

/// A torrent: its info (with real hashes) and the files' contents.
struct Fixture {
    info: Arc<Info>,
    /// Each file's bytes (zeros for pad files).
    files: Vec<Vec<u8>>,
    payload: Vec<u8>,
}

fn fixture(lengths: &[u64], pads: &[usize], piece_length: u32, multi: bool) -> Fixture {
    let mut info = crate::testing::info_with(lengths, piece_length);
    info.multi_file = multi;
    if !multi {
        info.name = "one file.bin".into();
        info.files[0].path = vec![info.name.clone()];
    }
    let mut files = Vec::new();
    let mut payload = Vec::new();
    for (i, f) in info.files.iter_mut().enumerate() {
        let bytes: Vec<u8> = if pads.contains(&i) {
            f.attr = FileAttr {
                pad: true,
                ..FileAttr::default()
            };
            vec![0; f.length as usize]
        } else {
            (0..f.length)
                .map(|j| (j * 7 + i as u64 * 13) as u8)
                .collect()
        };
        payload.extend_from_slice(&bytes);
        files.push(bytes);
    }
    info.pieces = payload
        .chunks(piece_length as usize)
        .map(|c| Sha1::digest(c).into())
        .collect();
    Fixture {
        info: Arc::new(info),
        files,
        payload,
    }
}

fn config() -> WebSeedConfig {
    WebSeedConfig {
        max_failures: 4,
        ..WebSeedConfig::default()
    }
}

/// A swarm whose only peer is one web seed, and the server behind it.
struct Harness {
    now: Instant,
    fx: Fixture,
    swarm: Swarm,
    seed: WebSeed,
    key: u64,
    /// URL -> file index.
    urls: HashMap<String, usize>,
    requests: Vec<HttpRequest>,
    events: Vec<WebSeedEvent>,
    /// Bytes of each body given in one `handle_body` call.
    chunk: usize,
}

impl Harness {
    fn new(fx: Fixture, url: &str, chunk: usize) -> Harness {
        let now = Instant::now();
        let count = fx.info.piece_count();
        let swarm = Swarm::new(
            fx.info.piece_length,
            fx.info.total_length,
            Bitfield::new(count),
            Bitfield::full(count),
            Config::default(),
            7,
        );
        let seed = WebSeed::new(now, url, fx.info.clone(), config());
        let urls = (0..fx.info.files.len())
            .map(|i| (seed.file_url(i), i))
            .collect();
        Harness {
            now,
            fx,
            swarm,
            seed,
            key: 0,
            urls,
            requests: Vec::new(),
            events: Vec::new(),
            chunk: chunk.max(1),
        }
    }

    /// Passes messages and events between the swarm and the web seed until both are quiet;
    /// returns the HTTP requests the web seed asked for meanwhile.
    fn settle(&mut self) -> Vec<HttpRequest> {
        let mut asked = Vec::new();
        for _ in 0..10_000 {
            let mut busy = false;
            while let Some(ev) = self.seed.poll_event() {
                busy = true;
                match &ev {
                    WebSeedEvent::Join => {
                        self.key += 1;
                        let features = PeerFeatures {
                            fast: true,
                            web_seed: true,
                            ..PeerFeatures::default()
                        };
                        self.swarm.handle_connected(self.now, self.key, features);
                    }
                    WebSeedEvent::Dropped(_) => self.swarm.handle_disconnected(self.key),
                    WebSeedEvent::Failed { .. } => {}
                }
                self.events.push(ev);
            }
            while let Some(msg) = self.seed.poll_message() {
                busy = true;
                self.swarm.handle_message(self.now, self.key, msg);
            }
            let mut out = Vec::new();
            self.swarm.poll_transmit(self.now, self.key, &mut out);
            for msg in &out {
                self.seed.handle_peer_message(self.now, msg);
            }
            while let Some(ev) = self.swarm.poll_event() {
                busy = true;
                match ev {
                    SwarmEvent::Verify(piece) => {
                        let good = self
                            .fx
                            .info
                            .pieces
                            .get(piece.index as usize)
                            .is_some_and(|h| Sha1::digest(&piece.data)[..] == h[..]);
                        self.swarm
                            .handle_verdict(self.now, piece.index, good, piece.data);
                    }
                    SwarmEvent::Disconnect { peer, reason } if peer == self.key => {
                        self.seed.handle_swarm_disconnect(self.now, reason);
                    }
                    _ => {}
                }
            }
            while let Some(req) = self.seed.poll_request(self.now) {
                busy = true;
                asked.push(req);
            }
            self.seed.check_invariants().unwrap();
            self.swarm.check_invariants().unwrap();
            if !busy && out.is_empty() {
                return asked;
            }
        }
        panic!("no rest");
    }

    /// Answers `req` as `answer` says.
    fn answer(&mut self, req: &HttpRequest, answer: Answer) {
        let file = *self.urls.get(&req.url).expect("a URL of the torrent");
        let body_of =
            |fx: &Fixture| fx.files[file][req.first as usize..=req.last as usize].to_vec();
        let (status, range, body) = match answer {
            Answer::Honest => (206, req.range_header().replace('=', " "), body_of(&self.fx)),
            Answer::WholeFile => (200, String::new(), self.fx.files[file].clone()),
            Answer::Longer => {
                let mut b = body_of(&self.fx);
                b.push(1);
                (206, req.range_header().replace('=', " "), b)
            }
            Answer::Shorter => {
                let mut b = body_of(&self.fx);
                b.pop();
                (206, req.range_header().replace('=', " "), b)
            }
            Answer::OtherRange => (
                206,
                format!("bytes {}-{}/*", req.first + 1, req.last + 1),
                body_of(&self.fx),
            ),
            Answer::Garbage => {
                let b = body_of(&self.fx).iter().map(|x| x ^ 0x5a).collect();
                (206, req.range_header().replace('=', " "), b)
            }
            Answer::NotFound => (404, String::new(), b"not found".to_vec()),
            Answer::Transport => {
                self.seed.handle_failed(self.now, req.id);
                return;
            }
            Answer::Silence => return,
        };
        let range = (!range.is_empty()).then(|| format!("{range}/{}", self.fx.files[file].len()));
        self.seed
            .handle_response(self.now, req.id, status, range.as_deref());
        for chunk in body.chunks(self.chunk) {
            self.seed.handle_body(self.now, req.id, chunk);
        }
        self.seed.handle_end(self.now, req.id);
        self.seed.check_invariants().unwrap();
    }

    /// Runs until the download completes, the web seed is dropped, or `steps` steps;
    /// `answer` picks each request's fate from its number.
    fn run(&mut self, steps: usize, mut answer: impl FnMut(usize) -> Answer) {
        for _ in 0..steps {
            let asked = self.settle();
            if self.swarm.is_done() || self.seed.is_dropped() {
                return;
            }
            if asked.is_empty() {
                let next = [self.seed.poll_timeout(), self.swarm.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .expect("something to wait for");
                self.now = next.max(self.now);
                self.seed.handle_timeout(self.now);
                self.swarm.handle_timeout(self.now);
                continue;
            }
            for req in asked {
                let fate = answer(self.requests.len());
                self.requests.push(req.clone());
                self.answer(&req, fate);
            }
        }
    }

    fn failures(&self) -> Vec<WebSeedError> {
        self.events
            .iter()
            .filter_map(|e| match e {
                WebSeedEvent::Failed { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    fn dropped(&self) -> Option<WebSeedDropped> {
        self.events.iter().find_map(|e| match e {
            WebSeedEvent::Dropped(why) => Some(why.clone()),
            _ => None,
        })
    }
}

#[test]
fn file_urls_follow_bep_19() {
    let single = fixture(&[100], &[], 16384, false);
    let now = Instant::now();
    let info = single.info.clone();
    let s = WebSeed::new(now, "http://h/dir/", info.clone(), config());
    assert_eq!(s.file_url(0), "http://h/dir/one%20file.bin");
    let s = WebSeed::new(now, "http://h/exact.iso", info, config());
    assert_eq!(s.file_url(0), "http://h/exact.iso");
    let mut multi = crate::testing::info_with(&[1, 2], 16384);
    multi.name = "my torrent".into();
    multi.files[1].path = vec!["sub dir".into(), "é#?.txt".into()];
    let multi = Arc::new(multi);
    let s = WebSeed::new(now, "https://h/seed", multi.clone(), config());
    assert_eq!(s.file_url(0), "https://h/seed/my%20torrent/f0");
    assert_eq!(
        s.file_url(1),
        "https://h/seed/my%20torrent/sub%20dir/%C3%A9%23%3F.txt"
    );
    let s = WebSeed::new(now, "https://h/seed/", multi, config());
    assert_eq!(s.file_url(0), "https://h/seed/my%20torrent/f0");
}

/// A byte string.
fn bytes(b: &[u8]) -> crate::bencode::Value {
    crate::bencode::Value::Bytes(b.to_vec())
}

/// A dictionary of `pairs`.
fn dict(pairs: Vec<(&[u8], crate::bencode::Value)>) -> crate::bencode::Value {
    crate::bencode::Value::Dict(pairs.into_iter().map(|(k, v)| (k.to_vec(), v)).collect())
}

/// A v1 info dictionary named `name` holding a byte per file at each raw path (a single file
/// named `name` when `paths` is `None`), parsed as any torrent is: names sanitised for the
/// disk, clashes renamed.
fn parsed(name: &[u8], paths: Option<&[Vec<Vec<u8>>]>) -> Arc<Info> {
    use crate::bencode::Value;
    let mut info = vec![
        (&b"name"[..], bytes(name)),
        (b"piece length", Value::Int(16384)),
        (b"pieces", bytes(&[0; 20])),
    ];
    match paths {
        None => info.push((b"length", Value::Int(1))),
        Some(paths) => {
            let files = paths
                .iter()
                .map(|path| {
                    let parts = path.iter().map(|p| bytes(p)).collect();
                    dict(vec![
                        (b"length", Value::Int(1)),
                        (b"path", Value::List(parts)),
                    ])
                })
                .collect();
            info.push((b"files", Value::List(files)));
        }
    }
    let encoded = crate::bencode::encode(&dict(info));
    Arc::new(Info::from_bytes(&encoded).expect("a valid torrent"))
}

/// `a/b` components as raw paths.
fn raw_paths(paths: &[&[u8]]) -> Vec<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| p.split(|&b| b == b'/').map(<[u8]>::to_vec).collect())
        .collect()
}

#[test]
fn file_urls_carry_the_names_as_written_not_as_sanitised() {
    let now = Instant::now();
    let long = [&[b'x'; 300][..], b".mkv"].concat();
    let paths = raw_paths(&[
        b"back\\slash/CON",
        b"caf\xe9.txt",
        b"docs/Readme.txt",
        b"docs/README.txt",
        &long,
        b"plain/file.bin",
    ]);
    let info = parsed(b"my\\torrent", Some(&paths));
    // The disk gets the sanitised names...
    assert_eq!(info.name, "my_torrent");
    let on_disk: Vec<String> = info.files.iter().map(|f| f.path.join("/")).collect();
    let cut = format!("{}.mkv", "x".repeat(236));
    assert_eq!(
        on_disk,
        [
            "back_slash/CON_",
            "café.txt",
            "docs/Readme.txt",
            "docs/README.1.txt",
            &cut,
            "plain/file.bin"
        ]
    );
    // ...the web seed the names as written.
    let s = WebSeed::new(now, "http://h/seed/", info.clone(), config());
    let long_url = format!("{}.mkv", "x".repeat(300));
    assert_eq!(
        (0..info.files.len())
            .map(|i| s.file_url(i))
            .collect::<Vec<_>>(),
        [
            "http://h/seed/my%5Ctorrent/back%5Cslash/CON".to_string(),
            "http://h/seed/my%5Ctorrent/caf%E9.txt".into(),
            "http://h/seed/my%5Ctorrent/docs/Readme.txt".into(),
            "http://h/seed/my%5Ctorrent/docs/README.txt".into(),
            format!("http://h/seed/my%5Ctorrent/{long_url}"),
            "http://h/seed/my%5Ctorrent/plain/file.bin".into(),
        ]
    );
    // Names sanitising left alone keep no copy.
    assert!(info.files[2].original_path.is_none());
    assert!(info.files[5].original_path.is_none());
}

#[test]
fn a_single_files_url_carries_its_name_as_written() {
    let now = Instant::now();
    for (raw, on_disk, url) in [
        (&b"CON"[..], "CON_", "http://h/d/CON"),
        (b"caf\xe9.iso", "café.iso", "http://h/d/caf%E9.iso"),
        (b"a\\b", "a_b", "http://h/d/a%5Cb"),
        ("é".as_bytes(), "é", "http://h/d/%C3%A9"),
    ] {
        let info = parsed(raw, None);
        assert_eq!(info.name, on_disk);
        assert_eq!(info.files[0].path, [on_disk]);
        let s = WebSeed::new(now, "http://h/d/", info.clone(), config());
        assert_eq!(s.file_url(0), url);
        // A URL naming the file itself is used as it is.
        let s = WebSeed::new(now, "http://h/d/x.iso", info, config());
        assert_eq!(s.file_url(0), "http://h/d/x.iso");
    }
}

#[test]
fn a_v2_file_trees_names_go_out_as_written() {
    use crate::bencode::Value;
    let leaf = || {
        dict(vec![(
            b"",
            dict(vec![
                (b"length", Value::Int(1)),
                (b"pieces root", bytes(&[7; 32])),
            ]),
        )])
    };
    let tree = dict(vec![
        (b"README", leaf()),
        (b"Readme", leaf()),
        (
            b"a\\b",
            dict(vec![(b"CON", leaf()), (b"..", dict(vec![(b"x", leaf())]))]),
        ),
    ]);
    let info = dict(vec![
        (b"file tree", tree),
        (b"meta version", Value::Int(2)),
        (b"name", bytes(b"t\xff")),
        (b"piece length", Value::Int(16384)),
    ]);
    let info = Arc::new(Info::from_bytes(&crate::bencode::encode(&info)).unwrap());
    let s = WebSeed::new(Instant::now(), "http://h", info.clone(), config());
    let real: Vec<(String, String)> = info
        .real_files()
        .map(|(i, f)| (f.path.join("/"), s.file_url(i)))
        .collect();
    let want = [
        ("README", "http://h/t%FF/README"),
        ("Readme.1", "http://h/t%FF/Readme"),
        // A `..` is dropped for the disk but stays in the URL, as written.
        ("a_b/x", "http://h/t%FF/a%5Cb/../x"),
        ("a_b/CON_", "http://h/t%FF/a%5Cb/CON"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(real, want);
}

/// `%XX` escapes undone (a test's own decoder, independent of the encoder).
fn percent_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).expect("two hex digits"));
        } else {
            out.push(b);
        }
    }
    out
}

/// Name components likely to be changed for the disk, or any bytes at all.
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            &b"a"[..],
            b"A",
            b"con",
            b"..",
            b".",
            b"",
            b"x\\y",
            b"caf\xe9",
            b"C:",
            b"a/b",
        ])
        .prop_map(<[u8]>::to_vec),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    /// Whatever the torrent's names, each file's URL decodes back to the torrent's own bytes:
    /// the name, then every path component (a single file: just the name).
    #[test]
    fn file_urls_decode_to_the_names_as_written(
        name in name_bytes(),
        paths in proptest::collection::vec(proptest::collection::vec(name_bytes(), 1..4), 1..6),
        multi in any::<bool>(),
    ) {
        let info = parsed(&name, multi.then_some(&paths[..]));
        let s = WebSeed::new(Instant::now(), "http://h/s/", info.clone(), config());
        let written: Vec<Vec<Vec<u8>>> = if multi {
            paths.iter().map(|p| [vec![name.clone()], p.clone()].concat()).collect()
        } else {
            vec![vec![name.clone()]]
        };
        prop_assert_eq!(info.files.len(), written.len());
        for (i, want) in written.into_iter().enumerate() {
            let url = s.file_url(i);
            let rest = url.strip_prefix("http://h/s/").expect("the seed's URL first");
            let got: Vec<Vec<u8>> = rest.split('/').map(percent_decode).collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn content_range_parsing() {
    assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9)));
    assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5)));
    assert_eq!(parse_content_range(" bytes  3-4 / 100 "), Some((3, 4)));
    for bad in [
        "",
        "bytes",
        "bytes */10",
        "bytes 9-0/10",
        "bytes 0-10/10",
        "bytes -1-2/5",
        "bytes 0-1",
        "items 0-1/2",
        "bytes 0-99999999999999999999999/*",
        "bytes 0-+1/5",
    ] {
        assert_eq!(parse_content_range(bad), None, "{bad:?}");
    }
}

#[test]
fn content_range_corpus_replays_cleanly() {
    crate::bencode::fuzz_tests::replay_corpus(
        "content_range",
        |b| {
            let _ = parse_content_range(&String::from_utf8_lossy(b));
        },
        |b| std::str::from_utf8(b).is_ok_and(|s| parse_content_range(s).is_some()),
    );
}

#[test]
fn a_web_seed_alone_downloads_a_single_file_in_merged_ranges() {
    let fx = fixture(&[300_000], &[], 32768, false);
    let pieces = fx.info.piece_count() as usize;
    let mut h = Harness::new(fx, "http://h/", 5000);
    h.run(1000, |_| Answer::Honest);
    assert!(h.swarm.is_done());
    assert!(h.failures().is_empty());
    // Neighbouring pieces go out as one range.
    assert!(
        h.requests.len() < pieces,
        "{} requests for {pieces} pieces",
        h.requests.len()
    );
    assert!(h
        .requests
        .iter()
        .all(|r| r.url == "http://h/one%20file.bin"));
}

#[test]
fn a_multi_file_torrent_is_fetched_per_file_and_pad_files_are_zeros() {
    // Files shorter than a block, a pad file, files across piece boundaries.
    let fx = fixture(&[10, 40_000, 0, 16_374, 1, 70_000, 5], &[3], 16384, true);
    let mut h = Harness::new(fx, "http://h/s", 777);
    h.run(1000, |_| Answer::Honest);
    assert!(h.swarm.is_done());
    assert!(h.failures().is_empty());
    assert!(h.requests.iter().all(|r| !r.url.ends_with("/f3")));
    assert!(h.requests.iter().all(|r| !r.url.ends_with("/f2")));
    assert!(h.requests.iter().any(|r| r.url.ends_with("/t/f6")));
}

#[test]
fn a_200_for_the_whole_file_is_fine_when_the_whole_file_was_asked() {
    let fx = fixture(&[1000], &[], 16384, false);
    let mut h = Harness::new(fx, "http://h/f", 100);
    h.run(100, |_| Answer::WholeFile);
    assert!(h.swarm.is_done());
}

#[test]
fn no_range_support_backs_off_then_drops_the_seed() {
    let fx = fixture(&[3_000_000], &[], 32768, false);
    let mut h = Harness::new(fx, "http://h/f", 4096);
    h.run(100, |_| Answer::WholeFile);
    assert!(!h.swarm.is_done());
    assert_eq!(h.failures(), vec![WebSeedError::NoRangeSupport; 3]);
    assert!(matches!(
        h.dropped(),
        Some(WebSeedDropped::Failures {
            count: 4,
            last: WebSeedError::NoRangeSupport
        })
    ));
    // Back-off doubles.
    let delays: Vec<Duration> = h
        .events
        .iter()
        .filter_map(|e| match e {
            WebSeedEvent::Failed { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    let s = Duration::from_secs(5);
    assert_eq!(delays, vec![s, s * 2, s * 4]);
    assert_eq!(h.swarm.stats().verified_bytes, 0);
}

#[test]
fn wrong_lengths_and_ranges_fail_the_request_and_use_no_excess() {
    for (answer, expect) in [
        (Answer::Longer, WebSeedError::TooLong { expected: 0 }),
        (
            Answer::Shorter,
            WebSeedError::Truncated {
                got: 0,
                expected: 0,
            },
        ),
        (
            Answer::OtherRange,
            WebSeedError::WrongRange {
                got: String::new(),
                first: 0,
                last: 0,
            },
        ),
        (Answer::NotFound, WebSeedError::Status(404)),
        (Answer::Transport, WebSeedError::Transport),
        (
            Answer::Silence,
            WebSeedError::Timeout(config().response_timeout),
        ),
    ] {
        let fx = fixture(&[3_000_000], &[], 32768, false);
        let mut h = Harness::new(fx, "http://h/f", 1 << 20);
        h.run(10_000, |_| answer);
        let failures = h.failures();
        assert_eq!(failures.len(), 3, "{answer:?}: {failures:?} {:?}", h.events);
        assert!(
            failures
                .iter()
                .all(|f| std::mem::discriminant(f) == std::mem::discriminant(&expect)),
            "{answer:?}: {failures:?}"
        );
        assert!(h.seed.is_dropped(), "{answer:?}");
        // Nothing verified from a lying server (whole blocks before the excess may arrive,
        // but never a whole piece here: each answer is a single range of several pieces whose
        // last block is cut).
        assert!(!h.swarm.is_done(), "{answer:?}");
    }
}

#[test]
fn garbage_gets_the_seed_dropped_for_bad_data() {
    let fx = fixture(&[300_000], &[], 32768, false);
    let mut h = Harness::new(fx, "http://h/f", 3000);
    h.run(100, |_| Answer::Garbage);
    assert_eq!(h.dropped(), Some(WebSeedDropped::BadData(3)));
    assert!(h.failures().is_empty());
    assert_eq!(h.swarm.stats().verified_bytes, 0);
}

#[test]
fn a_failure_then_success_resumes_after_the_backoff() {
    let fx = fixture(&[300_000], &[], 32768, false);
    let mut h = Harness::new(fx, "http://h/f", 3000);
    let start = h.now;
    h.run(1000, |n| {
        if n < 2 {
            Answer::Transport
        } else {
            Answer::Honest
        }
    });
    assert!(h.swarm.is_done());
    assert_eq!(h.failures().len(), 2);
    assert!(h.now >= start + Duration::from_secs(15));
}

#[test]
fn requests_past_the_cap_or_while_backing_off_are_rejected() {
    let fx = fixture(&[1 << 20], &[], 16384, false);
    let now = Instant::now();
    let cfg = WebSeedConfig {
        max_queued_blocks: 2,
        ..config()
    };
    let mut s = WebSeed::new(now, "http://h/f", fx.info.clone(), cfg);
    while s.poll_message().is_some() {}
    let block = |i: u32| BlockRef {
        index: i,
        begin: 0,
        length: 16384,
    };
    // Two wait; the third and fourth are rejected.
    for i in 0..4 {
        s.handle_peer_message(now, &Message::Request(block(i)));
    }
    assert_eq!(s.poll_message(), Some(Message::Reject(block(2))));
    assert_eq!(s.poll_message(), Some(Message::Reject(block(3))));
    // Out of the torrent: rejected.
    let past = BlockRef {
        index: 64,
        begin: 0,
        length: 1,
    };
    s.handle_peer_message(now, &Message::Request(past));
    assert_eq!(s.poll_message(), Some(Message::Reject(past)));
    // The two waiting are neighbours: one range.
    let req = s.poll_request(now).unwrap();
    assert_eq!((req.first, req.last), (0, 32767));
    assert_eq!(s.poll_request(now), None, "one at a time");
    s.handle_failed(now, req.id);
    assert_eq!(s.poll_message(), Some(Message::Choke));
    s.handle_peer_message(now, &Message::Request(block(5)));
    assert_eq!(s.poll_message(), Some(Message::Reject(block(5))));
    assert_eq!(s.poll_request(now), None);
    // Stale answers to the failed request are ignored.
    s.handle_response(now, req.id, 206, Some("bytes 0-16383/1048576"));
    s.handle_body(now, req.id, &[0; 100]);
    assert_eq!(s.poll_message(), None);
    s.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(s.poll_message(), Some(Message::Unchoke));
}

#[test]
fn contiguous_requests_merge_up_to_the_range_cap_and_split_at_files() {
    let fx = fixture(&[20_000, 100_000], &[], 16384, true);
    let now = Instant::now();
    let cfg = WebSeedConfig {
        max_range_len: 3 * 16384,
        ..config()
    };
    let mut s = WebSeed::new(now, "http://h/", fx.info.clone(), cfg);
    assert_eq!(s.poll_event(), Some(WebSeedEvent::Join));
    assert_eq!(s.poll_message(), Some(Message::HaveAll));
    assert_eq!(s.poll_message(), Some(Message::Unchoke));
    let block = |i: u32| BlockRef {
        index: i,
        begin: 0,
        length: fx.info.piece_len(i),
    };
    for i in 0..6 {
        s.handle_peer_message(now, &Message::Request(block(i)));
    }
    // Pieces 0..=2 (bytes 0..49152) cross from f0 into f1: two requests, one after the other.
    let r = s.poll_request(now).unwrap();
    assert_eq!(
        (r.url.as_str(), r.first, r.last),
        ("http://h/t/f0", 0, 19999)
    );
    s.handle_response(now, r.id, 206, Some("bytes 0-19999/20000"));
    s.handle_body(now, r.id, &fx.payload[..20000]);
    assert_eq!(
        s.poll_message()
            .map(|m| matches!(m, Message::Piece { index: 0, .. })),
        Some(true)
    );
    s.handle_end(now, r.id);
    let r = s.poll_request(now).unwrap();
    assert_eq!(
        (r.url.as_str(), r.first, r.last),
        ("http://h/t/f1", 0, 29151)
    );
    s.handle_response(now, r.id, 206, Some("bytes 0-29151/100000"));
    s.handle_body(now, r.id, &fx.payload[20000..49152]);
    s.handle_end(now, r.id);
    let pieces: Vec<u32> = std::iter::from_fn(|| s.poll_message())
        .filter_map(|m| match m {
            Message::Piece { index, data, .. } => Some((index, data.len())),
            _ => None,
        })
        .map(|(i, len)| {
            assert_eq!(len, 16384);
            i
        })
        .collect();
    assert_eq!(pieces, vec![1, 2]);
    // Then pieces 3..=5.
    let r = s.poll_request(now).unwrap();
    assert_eq!(
        (r.url.as_str(), r.first, r.last),
        ("http://h/t/f1", 29152, 78303)
    );
}

proptest! {
    /// Any header text parses or is refused without panicking; what parses is a valid range.
    #[test]
    fn content_range_never_panics(text in "(bytes)? ?[0-9*/ -]{0,30}|\\PC{0,40}") {
        if let Some((first, last)) = parse_content_range(&text) {
            prop_assert!(first <= last);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the server does, nothing panics, the invariants hold after every step, and
    /// what verifies is the torrent's data (the swarm checks hashes).
    #[test]
    fn hostile_servers_never_break_the_machine(
        lengths in proptest::collection::vec(0u64..40_000, 1..5),
        piece_kb in 1u32..4,
        answers in proptest::collection::vec(0u8..12, 1..40),
        chunk in 1usize..20_000,
        multi in any::<bool>(),
    ) {
        let lengths = if multi { lengths } else { vec![lengths.iter().sum::<u64>().max(1)] };
        if lengths.iter().sum::<u64>() == 0 {
            return Ok(());
        }
        let fx = fixture(&lengths, &[], piece_kb * 16384, multi);
        let mut h = Harness::new(fx, "http://h/", chunk);
        h.run(200, |step| match answers[step % answers.len()] {
            0 => Answer::WholeFile,
            1 => Answer::Longer,
            2 => Answer::Shorter,
            3 => Answer::OtherRange,
            4 => Answer::Garbage,
            5 => Answer::NotFound,
            6 => Answer::Transport,
            7 => Answer::Silence,
            _ => Answer::Honest,
        });
        if answers.iter().all(|&a| a >= 8) {
            prop_assert!(h.swarm.is_done());
        }
    }
}
