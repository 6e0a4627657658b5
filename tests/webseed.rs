//! BEP 19 web seeds against a real HTTP server: nginx (Debian's `nginx-light`), started by each
//! test on a free loopback port with its own prefix, logs and pid file in a temporary folder,
//! in the foreground and tethered to the test (it stops when the test ends, however it ends).
//!
//! - a single-file torrent whose only source is the web seed (`download` and
//!   `download_piece`);
//! - a multi-file torrent (the URL plus the torrent's name and each file's path);
//! - a multi-file torrent whose names bitrush changes for the disk (a case clash, `CON.txt`, a
//!   backslash, a byte that is not UTF-8): the web seed is asked for the names as written;
//! - a hybrid torrent `bitrush create` made, with BEP 47 pad files (never fetched: zeros) and
//!   no tracker at all;
//! - an HTTPS web seed (stunnel4 in front of nginx, trusted through `SSL_CERT_FILE`);
//! - a magnet link's `ws` web seed, once the metadata came from a (slow) libtorrent peer;
//! - a web seed serving corrupted bytes next to an honest libtorrent seeder: the download
//!   completes from the peer and the web seed is dropped with a clear log line;
//! - web seeds that answer with the wrong length, without range support, or with a redirect
//!   loop, next to a libtorrent seeder: each failure is logged and the download completes.
//!
//! Every download is checked byte for byte.

mod common;

use common::*;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

/// nginx serving folders of the test at `/<name>/`, plus `/loop/`, a redirect to itself, and
/// `/norange/<name>/`, which ignores `Range` (a `200` with the whole file). Killed on drop.
struct Nginx {
    port: u16,
    proc: Proc,
    dir: TestDir,
}

impl Nginx {
    /// Serves each `(name, folder)` at `/<name>/` (and without range support at
    /// `/norange/<name>/`).
    fn start(folders: &[(&str, &Path)]) -> Nginx {
        let nginx = require_tool(NGINX);
        let dir = TestDir::new("nginx");
        let d = dir.path().display().to_string();
        let mut last_logs = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut locations = String::new();
            for (name, folder) in folders {
                let f = folder.display();
                locations.push_str(&format!(
                    "location /{name}/ {{ alias {f}/; }}\n\
                     location /norange/{name}/ {{ alias {f}/; max_ranges 0; }}\n"
                ));
            }
            let config = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 default_type application/octet-stream;\n  absolute_redirect off;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location /loop/ {{ return 302 /loop/; }}\n\
                 {locations}  }}\n}}\n"
            );
            let conf = dir.join("nginx.conf");
            fs::write(&conf, config).expect("write nginx config");
            let mut cmd = tethered(&nginx);
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"));
            let mut proc = Proc::spawn("nginx", cmd);
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                if proc.try_status().is_some() {
                    // Most likely lost the race for the port: try another.
                    last_logs = format!(
                        "{}\n{}",
                        proc.logs(),
                        fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                let addr = loopback_addr(port);
                if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    return Nginx { port, proc, dir };
                }
                if Instant::now() >= deadline {
                    panic!("nginx did not listen on port {port}\n{}", proc.logs());
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx failed to start 5 times\n{last_logs}");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

/// A copy of `torrent` whose top-level dictionary also has `url-list` (a list of `urls`); the
/// info dictionary, and so the info hash, are unchanged.
fn with_url_list(torrent: &Path, urls: &[String]) -> PathBuf {
    let mut bytes = fs::read(torrent).expect("read torrent");
    assert_eq!(bytes.pop(), Some(b'e'), "a torrent is a dictionary");
    // `url-list` sorts after every key mktorrent writes (`announce`, `created by`,
    // `creation date`, `info`), so appending keeps the keys in order.
    bytes.extend_from_slice(b"8:url-listl");
    for url in urls {
        bytes.extend_from_slice(format!("{}:{url}", url.len()).as_bytes());
    }
    bytes.extend_from_slice(b"ee");
    let out = torrent.with_extension("webseed.torrent");
    fs::write(&out, bytes).expect("write torrent");
    out
}

/// A torrent of a single file or folder with mktorrent (32 KiB pieces, announcing nowhere)
/// and `url-list` set to `urls`.
fn web_seeded_torrent(src: &Path, urls: &[String]) -> PathBuf {
    let plain = mktorrent(src, UNUSED_ANNOUNCE, 15);
    with_url_list(&plain, urls)
}

fn download(torrent: &Path, out: &Path) -> std::process::Output {
    // No DHT, no uTP: nothing but the web seed (and the tracker, when there is one).
    run_download(torrent, out, &["--no-dht", "--no-utp"])
}

#[test]
fn a_single_file_torrent_from_its_web_seed_alone() {
    let dir = TestDir::new("webseed-single");
    let files = dir.subdir("files");
    let src = files.join("payload.bin");
    let data = write_payload(&src, 1_500_000, 71);
    let nginx = Nginx::start(&[("files", &files)]);
    // A URL ending in '/' gets the torrent's name appended.
    let torrent = web_seeded_torrent(&src, &[nginx.url("files/")]);
    let out = dir.join("out.bin");
    let result = download(&torrent, &out);
    assert_success(&result);
    assert_file_eq(&out, &data, "file downloaded from the web seed");
    // Neighbouring pieces went out as ranges of several pieces.
    let log = fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    let requests = log.lines().filter(|l| l.contains("payload.bin")).count();
    let pieces = data.len().div_ceil(32768);
    assert!(
        requests > 0 && requests < pieces,
        "{requests} requests for {pieces} pieces\n{log}\n{}",
        nginx.proc.logs()
    );
    // `download_piece` uses the web seed too; the last piece is the short one.
    let piece = dir.join("piece");
    let last = pieces - 1;
    let result = run_bitrush(output_args(
        "download_piece",
        &piece,
        &torrent,
        &[&last.to_string(), "--no-dht", "--no-utp"],
    ));
    assert_success(&result);
    assert_file_eq(
        &piece,
        &data[last * 32768..],
        "last piece from the web seed",
    );
}

#[test]
fn a_multi_file_torrent_from_its_web_seed_alone() {
    let dir = TestDir::new("webseed-multi");
    let files = dir.subdir("files");
    let root = files.join("my tree");
    let tree = write_tree(
        &root,
        &[
            ("a.bin", 100_000),
            ("empty", 0),
            ("sub dir/b #1.bin", 40_000),
            ("sub dir/tiny", 7),
            ("z/c.bin", 300_001),
        ],
        72,
    );
    let nginx = Nginx::start(&[("files", &files)]);
    // Without a trailing '/': one is added before the name and path.
    let torrent = web_seeded_torrent(&root, &[nginx.url("files")]);
    let out = dir.join("out");
    let result = download(&torrent, &out);
    assert_success(&result);
    assert_tree_eq(&out, &tree);
}

#[test]
fn names_changed_for_the_disk_are_asked_of_the_web_seed_as_written() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir = TestDir::new("webseed-names");
    let files = dir.subdir("files");
    let root = files.join("clash");
    // Names the server holds as written, which bitrush stores under other names: two that
    // differ only in case (nginx on Linux is case-sensitive, so both exist), a Windows device
    // name, a backslash and a byte that is not UTF-8.
    let served = [
        (&b"docs/Readme.txt"[..], 100_000),
        (b"docs/README.txt", 70_001),
        (b"CON.txt", 5_000),
        (b"back\\slash.bin", 40_000),
        (b"caf\xe9.txt", 33_333),
    ];
    let mut want = std::collections::BTreeMap::new();
    for (i, (raw, len)) in served.iter().enumerate() {
        let path = root.join(OsStr::from_bytes(raw));
        let data = write_payload(&path, *len, 80 + i as u64);
        let stored = match *raw {
            // mktorrent lists `README.txt` before `Readme.txt`: the later one is renamed.
            b"docs/Readme.txt" => "docs/Readme.1.txt",
            b"docs/README.txt" => "docs/README.txt",
            b"CON.txt" => "CON_.txt",
            b"back\\slash.bin" => "back_slash.bin",
            // Not UTF-8: read as Windows-1252.
            _ => "café.txt",
        };
        want.insert(stored.to_string(), data);
    }
    let nginx = Nginx::start(&[("files", &files)]);
    let torrent = web_seeded_torrent(&root, &[nginx.url("files/")]);
    let out = dir.join("out");
    let result = download(&torrent, &out);
    let log = fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    assert!(
        result.status.success(),
        "{}\nnginx access log:\n{log}",
        dump(&result)
    );
    assert_success(&result);
    assert_tree_eq(&out, &want);
    assert!(
        log.lines().all(|l| l.contains(" 206 ")),
        "every request found its file\n{log}"
    );
}

/// A tracked swarm with a libtorrent seeder behind it, and a torrent of the same payload
/// naming `web_seeds` too.
fn swarm_with_web_seeds(
    label: &str,
    len: usize,
    seed: u64,
    lt: &LtSeedOptions,
    web_seeds: impl FnOnce(&Swarm) -> Vec<String>,
) -> (Swarm, LtSeeder, PathBuf) {
    let swarm = Swarm::single_file(label, len, 15, seed, false);
    let seeder = swarm.lt_seeder_with(lt);
    let urls = web_seeds(&swarm);
    let torrent = with_url_list(&swarm.torrent, &urls);
    (swarm, seeder, torrent)
}

#[test]
fn a_corrupting_web_seed_is_dropped_and_peers_finish_the_download() {
    let mut bad_dir = None;
    let mut nginx = None;
    // The peer is slow enough that the web seed has time to send its bad pieces.
    let lt = LtSeedOptions::upload_limited(400_000);
    let (swarm, _seeder, torrent) =
        swarm_with_web_seeds("webseed-corrupt", 2_000_000, 73, &lt, |swarm| {
            let bad = swarm.dir.subdir("bad");
            let mut corrupted = swarm.data.clone();
            for b in corrupted.iter_mut().skip(1000).step_by(4096) {
                *b ^= 0xff;
            }
            fs::write(bad.join("payload.bin"), &corrupted).expect("write corrupted copy");
            let n = Nginx::start(&[("bad", &bad)]);
            let urls = vec![n.url("bad/")];
            nginx = Some(n);
            bad_dir = Some(bad);
            urls
        });
    let out = swarm.out_dir("out").join("payload.bin");
    let result = download(&torrent, &out);
    assert_success(&result);
    assert_file_eq(
        &out,
        &swarm.data,
        "file downloaded next to a corrupting web seed",
    );
    let stderr = stderr_of(&result);
    assert!(
        stderr.contains("dropping web seed")
            && stderr.contains("pieces that failed their hash check"),
        "{}",
        dump(&result)
    );
    drop(nginx);
}

#[test]
fn web_seeds_with_wrong_lengths_no_ranges_or_redirect_loops_are_survived() {
    let mut nginx = None;
    let lt = LtSeedOptions::upload_limited(1_000_000);
    let (swarm, _seeder, torrent) =
        swarm_with_web_seeds("webseed-hostile", 3_000_000, 74, &lt, |swarm| {
            // The same name, but only the first 1000 bytes: every range past them comes
            // back shorter than asked (or refused).
            let short = swarm.dir.subdir("short");
            fs::write(short.join("payload.bin"), &swarm.data[..1000]).expect("write short copy");
            let n = Nginx::start(&[("short", &short), ("files", &swarm.seed_dir)]);
            let urls = vec![n.url("short/"), n.url("norange/files/"), n.url("loop/")];
            nginx = Some(n);
            urls
        });
    let out = swarm.out_dir("out").join("payload.bin");
    let result = download(&torrent, &out);
    assert_success(&result);
    assert_file_eq(
        &out,
        &swarm.data,
        "file downloaded next to hostile web seeds",
    );
    let stderr = stderr_of(&result);
    let failed = |url: &str, why: &str| {
        stderr
            .lines()
            .any(|l| l.contains("web seed request failed") && l.contains(url) && l.contains(why))
    };
    let n = nginx.as_ref().expect("nginx");
    assert!(
        failed(&n.url("short/"), "range") || failed(&n.url("short/"), "416"),
        "{}",
        dump(&result)
    );
    assert!(
        failed(&n.url("norange/files/"), "no range support"),
        "{}",
        dump(&result)
    );
    assert!(failed(&n.url("loop/"), "redirect"), "{}", dump(&result));
}

#[test]
fn a_magnet_links_web_seed_is_used_once_the_metadata_is_known() {
    // The peer alone would take about 20 s; the web seed serves nearly everything.
    let swarm = Swarm::single_file("webseed-magnet", 2_000_000, 15, 75, false);
    let _seeder = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(100_000));
    let nginx = Nginx::start(&[("files", &swarm.seed_dir)]);
    let info_hash = lt_info_hash(&swarm.torrent);
    let link = format!(
        "{}&ws={}",
        magnet_link(&info_hash, None, &[swarm.tracker.http_url()], &[]),
        pct(&nginx.url("files/"))
    );
    let out = swarm.out_dir("out").join("payload.bin");
    let result = run_bitrush(output_args(
        "magnet_download",
        &out,
        &link,
        &["--no-dht", "--no-utp"],
    ));
    assert_success(&result);
    assert_file_eq(
        &out,
        &swarm.data,
        "file downloaded through a magnet link's web seed",
    );
    let log = fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("/files/payload.bin") && l.contains(" 206 ")),
        "no range request reached the web seed\n{log}\n{}",
        dump(&result)
    );
}

#[test]
fn pad_files_are_not_fetched_and_no_tracker_is_needed() {
    let dir = TestDir::new("webseed-pads");
    let files = dir.subdir("files");
    let root = files.join("padded");
    let tree = write_tree(
        &root,
        &[("a.bin", 50_000), ("b.bin", 70_001), ("c/d.bin", 33_333)],
        76,
    );
    let nginx = Nginx::start(&[("files", &files)]);
    let torrent = dir.join("padded.torrent");
    let url = nginx.url("files/");
    let made = run_bitrush([
        "create".as_ref(),
        "-q".as_ref(),
        "--piece-length".as_ref(),
        "32768".as_ref(),
        "-w".as_ref(),
        url.as_ref(),
        "-o".as_ref(),
        torrent.as_os_str(),
        root.as_os_str(),
    ] as [&std::ffi::OsStr; 9]);
    assert_success(&made);
    let out = dir.join("out");
    let result = download(&torrent, &out);
    assert_success(&result);
    assert_tree_eq(&out, &tree);
    let log = fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
    assert!(
        log.lines().all(|l| !l.contains(".pad")) && log.contains("/files/padded/c/d.bin"),
        "{log}"
    );
}

#[test]
fn an_https_web_seed_is_trusted_through_ssl_cert_file() {
    let dir = TestDir::new("webseed-https");
    let files = dir.subdir("files");
    let src = files.join("payload.bin");
    let data = write_payload(&src, 700_000, 77);
    let nginx = Nginx::start(&[("files", &files)]);
    let ca = TestCa::new();
    let cert = ca.server_cert("good", "IP:127.0.0.1, DNS:localhost", false);
    let tls = TlsTerminator::start(nginx.port, &[cert]);
    let url = format!("https://127.0.0.1:{}/files/", tls.port(0));
    let torrent = web_seeded_torrent(&src, &[url]);
    let out = dir.join("out.bin");
    let mut cmd = bitrush_with(output_args(
        "download",
        &out,
        &torrent,
        &["--no-dht", "--no-utp"],
    ));
    cmd.env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", ca.cert());
    let result = run_with_timeout("bitrush", cmd, PROCESS_TIMEOUT);
    assert_success(&result);
    assert_file_eq(&out, &data, "file downloaded from an HTTPS web seed");
}
