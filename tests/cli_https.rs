//! HTTPS trackers: opentracker behind stunnel4, with a certificate authority the test makes
//! with openssl. Told to trust it through `SSL_CERT_FILE`, bitrush's `peers`, `download` and
//! `magnet_download` work through a tracker named only by its https URL (the libtorrent seeder
//! announces over plain HTTP to the same opentracker). Without that authority, or with a
//! certificate that expired or names another host, or with an `SSL_CERT_FILE` that does not
//! exist, each command fails with one clear line naming the tracker.

mod common;

use common::*;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The certificates stunnel serves, by position in [`TlsTerminator`].
const GOOD: usize = 0;
const WRONG_NAME: usize = 1;
const EXPIRED: usize = 2;

/// A payload whose torrent names only an https tracker URL, the opentracker behind it, and the
/// authority that signed the tracker's certificates. Fields drop in order: the TLS terminator
/// first, the directory last.
struct HttpsSwarm {
    tls: TlsTerminator,
    tracker: Tracker,
    ca: TestCa,
    /// The torrent naming the https URL of the certificate [`GOOD`] only.
    torrent: PathBuf,
    /// The same torrent announcing over plain HTTP, for the libtorrent seeder.
    http_torrent: PathBuf,
    info_hash: String,
    data: Vec<u8>,
    seed_dir: PathBuf,
    dir: TestDir,
}

impl HttpsSwarm {
    fn new(label: &str, seed: u64) -> HttpsSwarm {
        let dir = TestDir::new(label);
        let seed_dir = dir.subdir("seed");
        let src = seed_dir.join("payload.bin");
        let data = write_payload(&src, 600_000, seed);
        let info_hash = mktorrent_info_hash(&src, 15);
        let tracker = Tracker::start(&[&info_hash]);
        let ca = TestCa::new();
        let certs = [
            ca.server_cert("good", "IP:127.0.0.1, DNS:localhost", false),
            ca.server_cert("wrong-name", "DNS:tracker.invalid", false),
            ca.server_cert("expired", "IP:127.0.0.1, DNS:localhost", true),
        ];
        let tls = TlsTerminator::start(tracker.port(), &certs);
        let torrent = dir.join("https.torrent");
        mktorrent_to(&src, &tls.https_url(GOOD), 15, &torrent);
        let http_torrent = dir.join("http.torrent");
        mktorrent_to(&src, &tracker.http_url(), 15, &http_torrent);
        // The announce URL is outside the info dictionary: one torrent, two trackers' URLs.
        assert_eq!(lt_info_hash(&torrent), info_hash);
        assert_eq!(lt_info_hash(&http_torrent), info_hash);
        HttpsSwarm {
            tls,
            tracker,
            ca,
            torrent,
            http_torrent,
            info_hash,
            data,
            seed_dir,
            dir,
        }
    }

    /// A torrent of the same payload naming only the https URL of certificate `i`.
    fn torrent_for(&self, i: usize) -> PathBuf {
        let torrent = self.dir.join(format!("https-{i}.torrent"));
        mktorrent_to(
            &self.seed_dir.join("payload.bin"),
            &self.tls.https_url(i),
            15,
            &torrent,
        );
        torrent
    }

    /// bitrush with `args`, trusting the test's authority (`SSL_CERT_FILE`) or not.
    fn run(&self, trust: bool, args: &[&OsStr]) -> Output {
        let mut cmd = without_cert_env(bitrush_with(args));
        if trust {
            cmd.env("SSL_CERT_FILE", self.ca.cert());
        }
        run_with_timeout("bitrush", cmd, PROCESS_TIMEOUT)
    }
}

/// `cmd` with the system's certificate store as its only source of trust.
fn without_cert_env(mut cmd: Command) -> Command {
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    cmd
}

/// `peers` printed `ip:port` lines; returns them.
#[track_caller]
fn peer_lines(out: &Output) -> Vec<SocketAddr> {
    assert_success(out);
    stdout_of(out)
        .lines()
        .map(|l| {
            l.parse()
                .unwrap_or_else(|e| panic!("{l:?} is not ip:port ({e})\n{}", dump(out)))
        })
        .collect()
}

/// The run failed with one `error:` line naming `url` and saying `why`.
#[track_caller]
fn assert_tracker_error(out: &Output, url: &str, why: &str) {
    let line = assert_cli_error(out);
    assert!(line.contains(url), "the error does not name {url}: {line}");
    assert!(line.contains(why), "the error does not say {why:?}: {line}");
}

#[test]
fn https_tracker_for_peers_download_and_magnet_links() {
    let swarm = HttpsSwarm::new("https-tracker", 91);
    let seeder = LtSeeder::start(&swarm.http_torrent, &swarm.seed_dir);
    swarm.tracker.wait_for_seeders(&swarm.info_hash, 1);

    let peers = peer_lines(&swarm.run(true, &[OsStr::new("peers"), swarm.torrent.as_os_str()]));
    assert!(peers.contains(&seeder.addr()), "{peers:?}");

    let out_dir = swarm.dir.subdir("out");
    let output = out_dir.join("from-torrent.bin");
    let args = output_args("download", &output, &swarm.torrent, &[]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = swarm.run(true, &args);
    assert_success(&out);
    assert_file_eq(&output, &swarm.data, "download through an https tracker");

    let link = magnet_link(&swarm.info_hash, None, &[swarm.tls.https_url(GOOD)], &[]);
    let output = out_dir.join("from-magnet.bin");
    let args = output_args("magnet_download", &output, &link, &[]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = swarm.run(true, &args);
    assert_success(&out);
    assert_file_eq(
        &output,
        &swarm.data,
        "magnet download through an https tracker",
    );
}

#[test]
fn https_certificate_problems_are_one_clear_line() {
    let swarm = HttpsSwarm::new("https-refused", 92);
    let peers =
        |torrent: &Path, trust: bool| swarm.run(trust, &[OsStr::new("peers"), torrent.as_os_str()]);
    let url = swarm.tls.https_url(GOOD);

    // Not signed by any authority the system trusts.
    let out = peers(&swarm.torrent, false);
    assert_tracker_error(&out, &url, "TLS certificate not trusted");
    let line = assert_cli_error(&out);
    assert!(line.contains("no tracker answered"), "{line}");

    // A download fails the same way rather than waiting for peers.
    let output = swarm.dir.join("never.bin");
    let args = output_args("download", &output, &swarm.torrent, &[]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    assert_tracker_error(
        &swarm.run(false, &args),
        &url,
        "TLS certificate not trusted",
    );

    // Trusted authority, but a certificate for another host, or one that expired.
    let wrong_name = swarm.torrent_for(WRONG_NAME);
    assert_tracker_error(
        &peers(&wrong_name, true),
        &swarm.tls.https_url(WRONG_NAME),
        "TLS certificate for another name (wrong host name)",
    );
    let expired = swarm.torrent_for(EXPIRED);
    assert_tracker_error(
        &peers(&expired, true),
        &swarm.tls.https_url(EXPIRED),
        "TLS certificate expired",
    );

    // SSL_CERT_FILE names a file that is not there, or one without a certificate: said so,
    // not "not trusted".
    let missing = swarm.dir.join("no-such-ca.pem");
    let empty = swarm.dir.join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").expect("write empty.pem");
    for (file, why) in [
        (&missing, format!("cannot read {}", missing.display())),
        (&empty, "no usable certificate in it".to_string()),
    ] {
        let mut cmd = without_cert_env(bitrush_with([
            OsStr::new("peers"),
            swarm.torrent.as_os_str(),
        ]));
        cmd.env("SSL_CERT_FILE", file);
        let out = run_with_timeout("bitrush", cmd, PROCESS_TIMEOUT);
        assert_tracker_error(
            &out,
            &url,
            &format!(
                "no certificate authority to check HTTPS trackers against \
                 (from SSL_CERT_FILE={}): {why}",
                file.display()
            ),
        );
    }
}
