//! `bitrush daemon` end to end: the real binary on free loopback ports, driven through its
//! REST API (with curl) and through Debian's `transmission-remote`, downloading from
//! libtorrent seeders; restarts after a clean stop and after `kill -9`; hostile API input.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: usize = 1024 * 1024;
/// How long a download in these tests may take (only against a hang).
const DONE_TIMEOUT: Duration = Duration::from_secs(120);

/// A daemon under test: its process and where its API listens. The daemon runs tethered
/// (it dies with the test process however that ends), and dropping the guard kills it and
/// waits for it (a failing test leaves nothing running).
struct DaemonProc {
    /// The tether, the daemon's parent, in one process group with it.
    proc: Proc,
    /// The daemon's own pid, for signals.
    pid: u32,
    api: String,
    /// Where peers reach it (TCP and uTP).
    peer_port: u16,
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

/// Starts `bitrush daemon` on free ports with `state` and `downloads`, plus `extra` (which
/// may name its own `--api`).
fn start_daemon(state: &Path, downloads: &Path, extra: &[&str]) -> DaemonProc {
    start_daemon_logging(state, downloads, extra, None)
}

/// [`start_daemon`] with `RUST_LOG` set to `log`, if given.
fn start_daemon_logging(
    state: &Path,
    downloads: &Path,
    extra: &[&str],
    log: Option<&str>,
) -> DaemonProc {
    let mut args: Vec<String> = vec![
        "daemon".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--download-dir".into(),
        downloads.display().to_string(),
        "--port".into(),
        free_port().to_string(),
        "--save-interval".into(),
        "1".into(),
    ];
    if !extra.contains(&"--api") {
        args.push("--api".into());
        args.push(format!("127.0.0.1:{}", free_port()));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = tethered_bitrush(&args);
    if let Some(log) = log {
        cmd.env("RUST_LOG", log);
    }
    let proc = Proc::spawn("bitrush", cmd);
    let pid = child_pid(proc.pid(), STARTUP_TIMEOUT)
        .unwrap_or_else(|| panic!("the tether started no daemon\n{}", proc.logs()));
    let line = proc
        .wait_for_stdout_line(|l| l.starts_with("API: "), STARTUP_TIMEOUT)
        .unwrap_or_else(|e| panic!("daemon did not start: {e}\n{}", proc.logs()));
    let peers = proc
        .wait_for_stdout_line(|l| l.starts_with("Peer port: "), STARTUP_TIMEOUT)
        .unwrap_or_else(|e| panic!("daemon did not start: {e}\n{}", proc.logs()));
    DaemonProc {
        proc,
        pid,
        api: line["API: ".len()..].trim().replace("0.0.0.0", "127.0.0.1"),
        peer_port: peers["Peer port: ".len()..].trim().parse().expect("a port"),
    }
}

/// An HTTP response: status and body.
struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Runs curl with `args` against `url`.
fn curl(url: &str, args: &[&str]) -> Resp {
    let (status, body) = common::curl(url, args);
    Resp { status, body }
}

impl DaemonProc {
    fn get(&self, path: &str) -> Resp {
        curl(&format!("{}{path}", self.api), &[])
    }

    fn post(&self, path: &str, content_type: &str, body: &str) -> Resp {
        curl(
            &format!("{}{path}", self.api),
            &[
                "-X",
                "POST",
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                body,
            ],
        )
    }

    /// Adds a `.torrent` by upload; returns its id.
    fn add_torrent(&self, torrent: &Path) -> u64 {
        let r = self.post(
            "/api/v1/torrents",
            "application/x-bittorrent",
            &format!("@{}", torrent.display()),
        );
        assert_eq!(r.status, 201, "add: {}", r.body);
        r.json()["id"].as_u64().expect("an id")
    }

    fn torrent(&self, id: u64) -> serde_json::Value {
        let r = self.get(&format!("/api/v1/torrents/{id}"));
        assert_eq!(r.status, 200, "get {id}: {}", r.body);
        r.json()
    }

    /// Pauses seeding torrent `id` through the REST API, waits until it is paused, resumes
    /// it and waits until it seeds again.
    fn pause_and_resume(&mut self, id: u64) {
        self.act(id, "pause");
        self.wait_for(id, "paused", |t| t["state"] == "paused");
        self.act(id, "resume");
        self.wait_for(id, "seeding again", |t| t["state"] == "seeding");
    }

    /// Asks for `action` (`pause`, `resume`) on torrent `id` through the REST API; asserts it
    /// is accepted.
    fn act(&self, id: u64, action: &str) {
        let r = self.post(
            &format!("/api/v1/torrents/{id}/{action}"),
            "application/json",
            "",
        );
        assert_eq!(r.status, 200, "{action} {id}: {}", r.body);
    }

    /// Waits until torrent `id` satisfies `cond`.
    fn wait_for(&mut self, id: u64, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
        let api = self.api.clone();
        let mut last = String::new();
        let waited = self.proc.wait_until(DONE_TIMEOUT, |_| {
            let r = curl(&format!("{api}/api/v1/torrents/{id}"), &[]);
            last = r.body.clone();
            r.status == 200 && cond(&r.json())
        });
        if let Err(e) = waited {
            panic!(
                "torrent {id} never {what}: {e}\nlast: {last}\n{}",
                self.proc.logs()
            );
        }
    }

    fn wait_complete(&mut self, id: u64) {
        self.wait_for(id, "completed", |t| {
            t["left_until_done"] == 0 && t["size_when_done"].as_u64() > Some(0)
        });
    }

    /// SIGINT, then waits for a clean exit (the tether exits with the daemon's status).
    fn stop(mut self) {
        send_signal(self.pid, "INT");
        let status = self.proc.wait_exit(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "daemon did not stop cleanly: {status:?}\n{}",
            self.proc.logs()
        );
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped: it runs no more).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Where [`a_test_process_that_dies_starts_a_daemon`] writes its daemon's pid: set only when
/// [`a_daemon_dies_with_the_test_that_started_it`] runs it.
const ORPHAN_PID_FILE: &str = "BITRUSH_TEST_ORPHAN_PID_FILE";

/// Run by [`a_daemon_dies_with_the_test_that_started_it`] in a test process of its own: starts
/// a daemon, says its pid, and dies without unwinding (no guard is dropped), as a test process
/// killed by a timeout or a signal does.
#[test]
#[ignore = "run by a_daemon_dies_with_the_test_that_started_it"]
fn a_test_process_that_dies_starts_a_daemon() {
    let Some(pid_file) = std::env::var_os(ORPHAN_PID_FILE).map(PathBuf::from) else {
        return;
    };
    // In the starting test's folder, which it removes.
    let dir = pid_file.parent().unwrap();
    let (state, downloads) = (dir.join("state"), dir.join("downloads"));
    std::fs::create_dir_all(&downloads).unwrap();
    let d = start_daemon(&state, &downloads, &[]);
    std::fs::write(&pid_file, d.pid.to_string()).unwrap();
    std::process::abort();
}

#[test]
fn a_daemon_dies_with_the_test_that_started_it() {
    let dir = TestDir::new("daemon-tether");
    let pid_file = dir.join("daemon.pid");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "a_test_process_that_dies_starts_a_daemon",
    ])
    .env(ORPHAN_PID_FILE, &pid_file);
    let out = run_with_timeout("the dying test", cmd, PROCESS_TIMEOUT);
    assert!(!out.status.success(), "it was to abort\n{}", dump(&out));
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("no daemon pid ({e})\n{}", dump(&out)))
        .trim()
        .parse()
        .unwrap();
    // Only against a hang: the daemon goes as soon as its tether sees the test process gone.
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    while !process_gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = process_gone(pid);
    if !gone {
        send_signal(pid, "KILL");
    }
    assert!(gone, "the daemon outlived the test process that started it");
}

/// `transmission-remote` against the daemon at `api` with `args`; returns stdout.
fn remote(api: &str, args: &[&str]) -> String {
    let host = api.trim_start_matches("http://");
    let mut cmd = Command::new(require_tool("transmission-remote"));
    cmd.arg(host).args(args);
    let out = run_checked("transmission-remote", cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn downloaded(dir: &Path) -> PathBuf {
    dir.join("payload.bin")
}

#[test]
fn rest_add_download_pause_resume_and_restart() {
    require_libtorrent();
    let swarm = Swarm::single_file("daemon-rest", 3 * MIB, 16, 41, false);
    let _seeder = swarm.lt_seeder();
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &[]);
    let id = d.add_torrent(&swarm.torrent);
    d.wait_complete(id);
    assert_file_eq(
        &downloaded(&downloads),
        &swarm.data,
        "the daemon's download",
    );
    d.wait_for(id, "seeding", |t| t["state"] == "seeding");
    let files = d.get(&format!("/api/v1/torrents/{id}/files")).json();
    assert_eq!(files[0]["done_bytes"], swarm.data.len() as u64, "{files}");
    // Pause and resume.
    d.pause_and_resume(id);
    let stats = d.get("/api/v1/stats").json();
    assert_eq!(stats["torrents"], 1, "{stats}");
    let metrics = d.get("/metrics").body;
    assert!(
        metrics.contains("bitrush_torrents{state=\"seeding\"} 1"),
        "{metrics}"
    );
    d.stop();
    // A restart brings it back, complete, without fetching anything.
    let mut d = start_daemon(&state, &downloads, &[]);
    d.wait_for(id, "seeding after a restart", |t| {
        t["state"] == "seeding" && t["left_until_done"] == 0
    });
    assert_eq!(d.torrent(id)["name"], "payload.bin");
    d.stop();
}

#[test]
fn transmission_remote_adds_lists_stops_starts_and_removes_with_data() {
    require_libtorrent();
    let swarm = Swarm::single_file("daemon-remote", 2 * MIB, 15, 42, false);
    let _seeder = swarm.lt_seeder();
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &[]);
    let added = remote(&d.api, &["-a", &swarm.torrent.display().to_string()]);
    assert!(added.contains("success"), "{added}");
    d.wait_complete(1);
    assert_file_eq(
        &downloaded(&downloads),
        &swarm.data,
        "the daemon's download",
    );
    let list = remote(&d.api, &["-l"]);
    assert!(
        list.contains("payload.bin") && list.contains("100%"),
        "{list}"
    );
    let info = remote(&d.api, &["-t", "1", "-i"]);
    assert!(info.contains("Percent Done: 100%"), "{info}");
    assert!(info.contains(&swarm.info.info_hash), "{info}");
    remote(&d.api, &["-t", "1", "-S"]);
    d.wait_for(1, "stopped", |t| t["state"] == "paused");
    let list = remote(&d.api, &["-l"]);
    assert!(list.contains("Stopped"), "{list}");
    remote(&d.api, &["-t", "1", "-s"]);
    d.wait_for(1, "started", |t| t["state"] == "seeding");
    let stats = remote(&d.api, &["-st"]);
    assert!(stats.contains("CURRENT SESSION"), "{stats}");
    let session = remote(&d.api, &["-si"]);
    assert!(
        session.contains(&downloads.display().to_string()) || session.contains("downloads"),
        "{session}"
    );
    let removed = remote(&d.api, &["-t", "1", "--remove-and-delete"]);
    assert!(removed.contains("success"), "{removed}");
    assert!(!downloaded(&downloads).exists(), "the data was deleted");
    assert_eq!(d.get("/api/v1/torrents").json(), serde_json::json!([]));
    d.stop();
}

#[test]
fn kill_9_mid_download_keeps_the_progress() {
    require_libtorrent();
    let swarm = Swarm::single_file("daemon-kill", 4 * MIB, 16, 43, false);
    let mut slow = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(256 * 1024));
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &[]);
    let id = d.add_torrent(&swarm.torrent);
    // Some pieces, and a save since (every second).
    d.wait_for(id, "a quarter done", |t| {
        t["done_bytes"].as_u64() >= Some(MIB as u64)
    });
    std::thread::sleep(Duration::from_millis(1500));
    d.proc.kill();
    slow.kill();
    let before = verified_pieces(&downloaded(&downloads), &swarm.info)
        .iter()
        .filter(|&&v| v)
        .count();
    assert!(before > 0);
    // Whether or not a piece was written after the last save, make it so for the file's
    // stamp (the state then no longer matches exactly, as after most crashes).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(downloaded(&downloads))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(file);
    // Back without any seeder: what it shows can only come from the disk. The last saved
    // state still vouches for its pieces: only those written since are hashed.
    let mut d = start_daemon_logging(&state, &downloads, &[], Some("bitrush=info"));
    let piece = 1u64 << 16;
    d.wait_for(id, "its verified pieces back", |t| {
        t["done_bytes"].as_u64() >= Some(before as u64 * piece - piece)
            && t["state"] == "downloading"
    });
    let logs = d.proc.logs();
    assert!(
        logs.contains("checking only the pieces written since the last save"),
        "{logs}"
    );
    let _seeder = swarm.lt_seeder();
    d.wait_complete(id);
    assert_file_eq(&downloaded(&downloads), &swarm.data, "the resumed download");
    d.stop();
}

#[test]
fn hostile_api_input_gets_clear_errors() {
    let dir = TestDir::new("daemon-hostile");
    let state = dir.subdir("state");
    let downloads = dir.subdir("downloads");
    let d = start_daemon(&state, &downloads, &[]);
    // Oversized body.
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![b'x'; 17 * MIB]).unwrap();
    let r = d.post(
        "/api/v1/torrents",
        "application/x-bittorrent",
        &format!("@{}", big.display()),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"].is_string());
    // Not a torrent.
    let r = d.post("/api/v1/torrents", "application/x-bittorrent", "hello");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("torrent"),
        "{}",
        r.body
    );
    // Malformed JSON, unknown fields, bad magnet.
    for body in [
        "{",
        "{\"magnet\": 5}",
        "{\"nope\": 1}",
        "{\"magnet\": \"magnet:?xt=bad\"}",
    ] {
        let r = d.post("/api/v1/torrents", "application/json", body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    // Path traversal in the download folder.
    let link = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567";
    for bad in ["../../etc", "/tmp/../etc", "relative"] {
        let body = serde_json::json!({"magnet": link, "download_dir": bad}).to_string();
        let r = d.post("/api/v1/torrents", "application/json", &body);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // Whatever is saved must load back: an overlong folder or magnet link is refused.
    let long_dir = format!("/{}", "d".repeat(5000));
    let long_link = format!("{link}&dn={}", "n".repeat(70_000));
    for body in [
        serde_json::json!({"magnet": link, "download_dir": long_dir}),
        serde_json::json!({"magnet": long_link}),
    ] {
        let r = d.post("/api/v1/torrents", "application/json", &body.to_string());
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.json()["error"].as_str().unwrap().contains("longer than"));
    }
    // Files cannot be chosen before a magnet link's metadata is known.
    let body = serde_json::json!({"magnet": link, "paused": true}).to_string();
    let r = d.post("/api/v1/torrents", "application/json", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let files = format!("{}/api/v1/torrents/{}/files", d.api, r.json()["id"]);
    let put = |body: &str| curl(&files, &["-X", "PUT", "--data-binary", body]);
    let r = put(r#"{"wanted": [true]}"#);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"].is_string());
    assert_eq!(put(r#"{"wanted": null}"#).status, 200);
    let r = curl(&files.replace("/files", ""), &["-X", "DELETE"]);
    assert_eq!(r.status, 204, "{}", r.body);
    // The event stream takes GET only.
    let r = d.post("/api/v1/events", "application/json", "{}");
    assert_eq!(r.status, 405, "{}", r.body);
    assert!(r.json()["error"].is_string());
    // Path traversal in the torrent's own names: they are made safe, and the torrent stays
    // inside the download folder.
    let data = vec![7u8; 1000];
    let evil = bencode(&dict(&[(
        "info",
        dict(&[
            (
                "files",
                Bv::List(vec![dict(&[
                    ("length", Bv::Int(1000)),
                    (
                        "path",
                        Bv::List(vec![bstr(".."), bstr(".."), bstr("escaped.bin")]),
                    ),
                ])]),
            ),
            ("name", bstr("../../outside")),
            ("piece length", Bv::Int(16384)),
            ("pieces", Bv::Bytes(sha1_pieces(&data, 16384))),
        ]),
    )]));
    let evil_path = dir.join("evil.torrent");
    std::fs::write(&evil_path, evil).unwrap();
    let r = d.post(
        "/api/v1/torrents",
        "application/x-bittorrent",
        &format!("@{}", evil_path.display()),
    );
    if r.status == 201 {
        let t = r.json();
        let name = t["name"].as_str().unwrap();
        assert!(!name.contains('/') && name != "..", "{name}");
        let files = d.get(&format!("/api/v1/torrents/{}/files", t["id"])).json();
        let path = files[0]["path"].as_str().unwrap();
        assert!(!path.split('/').any(|c| c == ".."), "{path}");
        assert_eq!(d.get(&format!("/api/v1/torrents/{}", t["id"])).status, 200);
        let r = curl(
            &format!("{}/api/v1/torrents/{}", d.api, t["id"]),
            &["-X", "DELETE"],
        );
        assert_eq!(r.status, 204, "{}", r.body);
    } else {
        assert_eq!(r.status, 400, "{}", r.body);
    }
    assert!(!dir.join("outside").exists() && !state.join("escaped.bin").exists());
    // Unknown ids and routes, bad ids, wrong methods.
    assert_eq!(d.get("/api/v1/torrents/99").status, 404);
    assert_eq!(d.get("/api/v1/torrents/x").status, 400);
    assert_eq!(d.get("/nope").status, 404);
    let r = curl(&format!("{}/api/v1/stats", d.api), &["-X", "DELETE"]);
    assert_eq!(r.status, 405, "{}", r.body);
    // Transmission RPC: the 409 handshake, then malformed and unknown requests.
    let r = curl(
        &format!("{}/transmission/rpc", d.api),
        &["-X", "POST", "-D", "-"],
    );
    assert!(r.body.starts_with("HTTP/1.1 409"), "{}", r.body);
    let sid = r
        .body
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-transmission-session-id:")
                .map(|v| v.trim().to_string())
        })
        .expect("a session id");
    let rpc = |body: &str| {
        curl(
            &format!("{}/transmission/rpc", d.api),
            &[
                "-X",
                "POST",
                "-H",
                &format!("X-Transmission-Session-Id: {sid}"),
                "--data-binary",
                body,
            ],
        )
    };
    let r = rpc("{\"method\": \"no-such-method\"}");
    assert_eq!(r.status, 200);
    assert!(
        r.json()["result"]
            .as_str()
            .unwrap()
            .contains("not recognized"),
        "{}",
        r.body
    );
    assert_eq!(rpc("not json").status, 400);
    assert_eq!(rpc("{\"method\": 3}").status, 400);
    let r = rpc("{\"method\": \"torrent-add\", \"arguments\": {\"metainfo\": \"aGVsbG8=\"}}");
    assert!(
        r.json()["result"].as_str().unwrap().contains("invalid"),
        "{}",
        r.body
    );
    let r = rpc(&serde_json::json!({"method": "torrent-add", "arguments": {"filename": link, "download-dir": "../x"}}).to_string());
    assert!(
        r.json()["result"]
            .as_str()
            .unwrap()
            .contains("download directory"),
        "{}",
        r.body
    );
    let r =
        rpc("{\"method\": \"torrent-get\", \"arguments\": {\"fields\": [\"id\"], \"ids\": [{}]}}");
    assert_eq!(
        r.json()["arguments"]["torrents"],
        serde_json::json!([]),
        "{}",
        r.body
    );
    // Nothing was added, and the daemon still answers.
    assert_eq!(d.get("/api/v1/torrents").json(), serde_json::json!([]));
    d.stop();
}

#[test]
fn a_non_loopback_api_needs_credentials() {
    let dir = TestDir::new("daemon-auth");
    let state = dir.subdir("state");
    let downloads = dir.subdir("downloads");
    let port = free_port();
    let bind = format!("0.0.0.0:{port}");
    let url = format!("http://127.0.0.1:{port}/api/v1/torrents");
    // Without credentials configured: nobody gets in.
    let d = start_daemon(&state, &downloads, &["--api", &bind]);
    let r = curl(&url, &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.json()["error"].is_string());
    d.stop();
    // With credentials: only requests carrying them.
    let d = start_daemon(
        &state,
        &downloads,
        &[
            "--api",
            &bind,
            "--api-user",
            "me",
            "--api-password",
            "secret",
        ],
    );
    assert_eq!(curl(&url, &[]).status, 401);
    assert_eq!(curl(&url, &["-u", "me:wrong"]).status, 401);
    assert_eq!(curl(&url, &["-u", "me:secret"]).status, 200);
    d.stop();
}

#[test]
fn a_queue_of_two_on_one_port_and_a_magnet_added_through_transmission_remote() {
    require_libtorrent();
    let first = Swarm::single_file("daemon-queue-a", 2 * MIB, 15, 44, false);
    let second = Swarm::tree(
        "daemon-queue-b",
        "album",
        &[("a.bin", MIB), ("b/c.bin", 300_000)],
        15,
        45,
    );
    let _slow = first.lt_seeder_with(&LtSeedOptions::upload_limited(512 * 1024));
    let _seeder = second.lt_seeder();
    let state = first.dir.subdir("state");
    let downloads = first.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &["--max-active-downloads", "1"]);
    let a = d.add_torrent(&first.torrent);
    let link = magnet_link(
        &second.info.info_hash,
        None,
        &[second.tracker.http_url()],
        &[],
    );
    let added = remote(&d.api, &["-a", &link]);
    assert!(added.contains("success"), "{added}");
    let b = a + 1;
    // One download at a time: the magnet waits for the first to finish.
    assert_eq!(d.torrent(b)["state"], "queued_download", "{}", d.torrent(b));
    d.wait_complete(a);
    d.wait_complete(b);
    assert_file_eq(&downloaded(&downloads), &first.data, "the first download");
    assert_tree_eq(&downloads.join("album"), &second.tree);
    let files = remote(&d.api, &["-t", &b.to_string(), "-f"]);
    assert!(
        files.contains("album (2 files)") || files.contains("2 files"),
        "{files}"
    );
    d.stop();
    // Both come back after a restart, the magnet with its metadata.
    let mut d = start_daemon(&state, &downloads, &[]);
    d.wait_for(b, "seeding after a restart", |t| {
        t["state"] == "seeding" && t["name"] == "album" && t["left_until_done"] == 0
    });
    d.wait_for(a, "seeding after a restart", |t| t["state"] == "seeding");
    d.stop();
}

/// The state and download folders of a daemon that seeds `single` (a one-file swarm) and
/// `tree` (a folder named `tree`) from data already in its download folder.
fn seeding_folders(single: &Swarm, tree: &Swarm) -> (PathBuf, PathBuf) {
    let state = single.dir.subdir("state");
    let downloads = single.dir.subdir("downloads");
    std::fs::copy(
        single.seed_dir.join("payload.bin"),
        downloads.join("payload.bin"),
    )
    .unwrap();
    copy_tree(&tree.seed_dir.join("tree"), &downloads.join("tree"));
    (state, downloads)
}

/// Three libtorrent leechers of `daemon`, each `(torrent, folder)`: over plain TCP, with MSE
/// forced (keyed by the info hash) and over uTP alone; returns once all three completed.
fn leech_over_each_transport(
    daemon: std::net::SocketAddr,
    plain: (&Path, &Path),
    mse: (&Path, &Path),
    utp: (&Path, &Path),
) {
    let forced = LtWire {
        encryption: LtEncryption::Forced,
        ..LtWire::default()
    };
    let utp_only = LtWire {
        transport: LtTransport::Utp,
        ..LtWire::default()
    };
    let mut leechers = [(plain, LtWire::default()), (mse, forced), (utp, utp_only)]
        .map(|((torrent, dir), wire)| LtLeecher::start_with(torrent, dir, &[daemon], None, wire));
    for leecher in &mut leechers {
        leecher.wait_complete();
    }
}

#[test]
fn peers_reaching_the_one_port_are_routed_to_their_torrent() {
    require_libtorrent();
    let first = Swarm::single_file("daemon-route-a", MIB, 15, 46, false);
    let second = Swarm::tree(
        "daemon-route-b",
        "tree",
        &[("x.bin", 700_000), ("y.bin", 5)],
        15,
        47,
    );
    let (state, downloads) = seeding_folders(&first, &second);
    let mut d = start_daemon(&state, &downloads, &["--encryption", "prefer"]);
    let a = d.add_torrent(&first.torrent);
    let b = d.add_torrent(&second.torrent);
    d.wait_for(a, "seeding", |t| t["state"] == "seeding");
    d.wait_for(b, "seeding", |t| t["state"] == "seeding");
    let daemon = loopback_addr(d.peer_port);
    // Plain TCP for one torrent, MSE for the other, and uTP.
    let (plain_dir, mse_dir, utp_dir) = (
        first.dir.subdir("plain"),
        second.dir.subdir("mse"),
        first.dir.subdir("utp"),
    );
    leech_over_each_transport(
        daemon,
        (&first.torrent, &plain_dir),
        (&second.torrent, &mse_dir),
        (&first.torrent, &utp_dir),
    );
    assert_file_eq(
        &plain_dir.join("payload.bin"),
        &first.data,
        "over plain TCP",
    );
    assert_file_eq(&utp_dir.join("payload.bin"), &first.data, "over uTP");
    assert_tree_eq(&mse_dir.join("tree"), &second.tree);
    d.stop();
}

#[test]
fn skipped_files_are_not_fetched_until_wanted() {
    require_libtorrent();
    let swarm = Swarm::tree(
        "daemon-files",
        "set",
        &[("a.bin", MIB), ("b/c.bin", 300_000)],
        15,
        48,
    );
    let _seeder = swarm.lt_seeder();
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &[]);
    let r = d.post(
        "/api/v1/torrents?paused=true",
        "application/x-bittorrent",
        &format!("@{}", swarm.torrent.display()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(d.torrent(id)["state"], "paused");
    let r = curl(
        &format!("{}/api/v1/torrents/{id}/files", d.api),
        &["-X", "PUT", "--data-binary", "{\"wanted\": [true, false]}"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()[1]["wanted"], false, "{}", r.body);
    d.act(id, "resume");
    d.wait_complete(id);
    let t = d.torrent(id);
    assert_eq!(t["size_when_done"], MIB as u64, "{t}");
    let set = downloads.join("set");
    assert_file_eq(&set.join("a.bin"), &swarm.tree["a.bin"], "the wanted file");
    let skipped = std::fs::read(set.join("b/c.bin")).unwrap_or_default();
    assert_ne!(
        skipped, swarm.tree["b/c.bin"],
        "the skipped file was not fetched"
    );
    // Wanted after all, through Transmission RPC's files-wanted.
    remote(&d.api, &["-t", &id.to_string(), "-g", "1"]);
    d.wait_for(id, "complete with both files", |t| {
        t["left_until_done"] == 0 && t["size_when_done"].as_u64() > Some(MIB as u64)
    });
    assert_tree_eq(&set, &swarm.tree);
    d.stop();
}

/// The server-sent events in `lines` (a response as `curl -i` prints it: headers first), as
/// (event, data) pairs; comments are left out.
fn sse_events(lines: &[String]) -> Vec<(String, String)> {
    let body = lines.iter().skip_while(|l| !l.is_empty()).skip(1);
    let (mut events, mut kind, mut data) = (Vec::new(), String::new(), String::new());
    for line in body {
        if line.is_empty() {
            if !kind.is_empty() || !data.is_empty() {
                events.push((std::mem::take(&mut kind), std::mem::take(&mut data)));
            }
        } else if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
        }
    }
    events
}

#[test]
fn the_event_stream_shows_an_add_its_progress_to_completion_and_a_remove() {
    require_libtorrent();
    // 4 MiB at 1 MiB/s: several seconds of progress.
    let swarm = Swarm::single_file("daemon-events", 4 * MIB, 16, 49, false);
    let _seeder = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(MIB as u64));
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &[]);
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args(["-sS", "-N", "-i"])
        .arg(format!("{}/api/v1/events", d.api));
    let mut stream = Proc::spawn("curl", cmd);
    let wait_event = |stream: &Proc, name: &str| {
        stream
            .wait_for_stdout_line(|l| l == format!("event: {name}"), DONE_TIMEOUT)
            .unwrap_or_else(|e| panic!("no {name} event: {e}\n{}", stream.logs()));
    };
    wait_event(&stream, "snapshot");
    let id = d.add_torrent(&swarm.torrent);
    d.wait_complete(id);
    let r = curl(
        &format!("{}/api/v1/torrents/{id}", d.api),
        &["-X", "DELETE"],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    wait_event(&stream, "removed");
    let lines = stream.stdout_lines();
    assert!(
        (lines.iter()).any(|l| l.eq_ignore_ascii_case("content-type: text/event-stream")),
        "{lines:?}"
    );
    let events = sse_events(&lines);
    assert_eq!(events[0], ("snapshot".into(), "[]".into()), "{events:?}");
    // Everything about the torrent, in order: added, progress to completion, removed.
    let ours: Vec<(String, serde_json::Value)> = (events.iter().skip(1))
        .map(|(kind, data)| (kind.clone(), serde_json::from_str(data).unwrap()))
        .filter(|(_, data): &(String, serde_json::Value)| data["id"] == id)
        .collect();
    let kinds: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    eprintln!("events about the torrent: {kinds:?}");
    assert_eq!(kinds.first(), Some(&"added"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"removed"), "{kinds:?}");
    assert_eq!(ours[0].1["torrent"]["name"], "payload.bin");
    let done: Vec<u64> = (ours.iter())
        .filter_map(|(_, data)| data["torrent"]["done_bytes"].as_u64())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let size = 4 * MIB as u64;
    assert!(
        (ours.iter()).any(|(k, data)| k == "progress"
            && (1..size).contains(&data["torrent"]["done_bytes"].as_u64().unwrap())),
        "no progress in between: {kinds:?} {done:?}"
    );
    let last = &ours[ours.len() - 2].1["torrent"];
    assert_eq!(last["left_until_done"], 0, "{last}");
    assert_eq!(last["state"], "seeding", "{last}");
    // Stopping the daemon ends the stream.
    d.stop();
    let status = stream.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        stream.logs()
    );
}

/// A raw HTTP response from curl: status, the headers' text and the body's bytes.
struct RawResp {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// Runs curl with `args` against `url`, keeping the body's bytes and the headers.
fn curl_raw(dir: &Path, url: &str, args: &[&str]) -> RawResp {
    let (body_file, header_file) = (dir.join("curl-body"), dir.join("curl-headers"));
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args(["-s", "-S", "-w", "%{http_code}", "--max-time", "100", "-o"])
        .arg(&body_file)
        .arg("-D")
        .arg(&header_file)
        .args(args)
        .arg(url);
    let out = run_checked("curl", cmd, Duration::from_secs(120));
    RawResp {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&header_file).unwrap_or_default(),
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}

/// The lines of `text` that start (after spaces) with `prefix`.
fn line_with<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
}

#[test]
fn rate_limits_set_through_transmission_remote_and_rest_are_kept_across_a_restart() {
    require_libtorrent();
    let swarm = Swarm::single_file("daemon-limits", MIB, 15, 44, false);
    let _seeder = swarm.lt_seeder();
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let mut d = start_daemon(&state, &downloads, &["--max-download-rate", "2M"]);
    let limits = d.get("/api/v1/limits").json();
    assert_eq!(
        limits,
        serde_json::json!({"download": 2 * MIB, "upload": null})
    );
    let session = remote(&d.api, &["-si"]);
    assert!(
        line_with(&session, "Download speed limit:").contains("(Enabled limit: 2.10 MB/s"),
        "{session}"
    );
    assert!(
        line_with(&session, "Upload speed limit:").starts_with("Upload speed limit: Unlimited"),
        "{session}"
    );
    // Global limits as transmission-remote sets them: kB/s of 1000 bytes.
    let set = remote(&d.api, &["-d", "300", "-u", "40"]);
    assert!(set.contains("success"), "{set}");
    assert_eq!(
        d.get("/api/v1/limits").json(),
        serde_json::json!({"download": 300_000, "upload": 40_000})
    );
    let session = remote(&d.api, &["-si"]);
    assert!(
        line_with(&session, "Download speed limit:").starts_with("Download speed limit: 300"),
        "{session}"
    );
    assert!(
        line_with(&session, "Upload speed limit:").starts_with("Upload speed limit: 40"),
        "{session}"
    );
    // A torrent's own limits.
    let added = remote(&d.api, &["-a", &swarm.torrent.display().to_string()]);
    assert!(added.contains("success"), "{added}");
    let set = remote(&d.api, &["-t", "1", "-d", "100"]);
    assert!(set.contains("success"), "{set}");
    let info = remote(&d.api, &["-t", "1", "-i"]);
    assert!(
        line_with(&info, "Download Limit:").starts_with("Download Limit: 100"),
        "{info}"
    );
    assert_eq!(line_with(&info, "Upload Limit:"), "Upload Limit: Unlimited");
    assert_eq!(
        d.get("/api/v1/torrents/1/limits").json(),
        serde_json::json!({"download": 100_000, "upload": null})
    );
    // Through REST: the body replaces both (absent: unlimited).
    let r = curl(
        &format!("{}/api/v1/torrents/1/limits", d.api),
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"upload": 5000}"#,
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let info = remote(&d.api, &["-t", "1", "-i"]);
    assert_eq!(
        line_with(&info, "Download Limit:"),
        "Download Limit: Unlimited"
    );
    assert!(
        line_with(&info, "Upload Limit:").starts_with("Upload Limit: 5"),
        "{info}"
    );
    let bad = curl(
        &format!("{}/api/v1/limits", d.api),
        &["-X", "PUT", "--data-binary", r#"{"down": 5}"#],
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let missing = curl(
        &format!("{}/api/v1/torrents/9/limits", d.api),
        &["-X", "PUT", "--data-binary", "{}"],
    );
    assert_eq!(missing.status, 404, "{}", missing.body);
    d.wait_complete(1);
    assert_file_eq(&downloaded(&downloads), &swarm.data, "the limited download");
    d.stop();
    // Both kinds are saved: a restart without flags keeps them.
    let d = start_daemon(&state, &downloads, &[]);
    assert_eq!(
        d.get("/api/v1/limits").json(),
        serde_json::json!({"download": 300_000, "upload": 40_000})
    );
    assert_eq!(
        d.get("/api/v1/torrents/1/limits").json(),
        serde_json::json!({"download": null, "upload": 5000})
    );
    // -D and -U lift the global limits.
    remote(&d.api, &["-D", "-U"]);
    assert_eq!(
        d.get("/api/v1/limits").json(),
        serde_json::json!({"download": null, "upload": null})
    );
    let session = remote(&d.api, &["-si"]);
    assert!(
        line_with(&session, "Download speed limit:").starts_with("Download speed limit: Unlimited"),
        "{session}"
    );
    d.stop();
}

#[test]
fn a_file_streams_over_http_with_ranges_while_it_downloads() {
    require_libtorrent();
    // 8 MiB in 64 KiB pieces from a seeder sending 512 KiB/s: the whole takes ~16 s.
    let swarm = Swarm::single_file("daemon-stream", 8 * MIB, 16, 45, false);
    let _seeder = swarm.lt_seeder_with(&LtSeedOptions::upload_limited(512 * 1024));
    let state = swarm.dir.subdir("state");
    let downloads = swarm.dir.subdir("downloads");
    let scratch = swarm.dir.subdir("scratch");
    let mut d = start_daemon(&state, &downloads, &[]);
    let id = d.add_torrent(&swarm.torrent);
    let url = format!("{}/api/v1/torrents/{id}/files/0/stream", d.api);
    // A range in the middle, asked for at once: its pieces are fetched first.
    let (first, last) = (5 * MIB + 12_345, 5 * MIB + 12_345 + 300_000);
    let r = curl_raw(&scratch, &url, &["-r", &format!("{first}-{last}")]);
    let left = d.torrent(id)["left_until_done"].as_u64().unwrap_or(0);
    eprintln!("range served with {left} bytes still to download");
    assert_eq!(r.status, 206, "{}", r.headers);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains(&format!("content-range: bytes {first}-{last}/{}", 8 * MIB)),
        "{}",
        r.headers
    );
    assert_bytes_eq(&r.body, &swarm.data[first..=last], "the streamed range");
    // A suffix range and an unsatisfiable one.
    let r = curl_raw(&scratch, &url, &["-r", "-1000"]);
    assert_eq!(r.status, 206, "{}", r.headers);
    assert_bytes_eq(
        &r.body,
        &swarm.data[8 * MIB - 1000..],
        "the last 1000 bytes",
    );
    let r = curl_raw(&scratch, &url, &["-r", &format!("{}-", 8 * MIB)]);
    assert_eq!(r.status, 416, "{}", r.headers);
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains(&format!("content-range: bytes */{}", 8 * MIB)),
        "{}",
        r.headers
    );
    // The whole file, read while the rest downloads, is the payload.
    let r = curl_raw(&scratch, &url, &[]);
    assert_eq!(r.status, 200, "{}", r.headers);
    assert_bytes_eq(&r.body, &swarm.data, "the streamed file");
    d.wait_complete(id);
    assert_file_eq(&downloaded(&downloads), &swarm.data, "the download");
    // No such file, no such torrent.
    let r = curl_raw(
        &scratch,
        &format!("{}/api/v1/torrents/{id}/files/1/stream", d.api),
        &[],
    );
    assert_eq!(r.status, 404);
    let r = curl_raw(
        &scratch,
        &format!("{}/api/v1/torrents/77/files/0/stream", d.api),
        &[],
    );
    assert_eq!(r.status, 404);
    d.stop();
}

/// Waits until the daemon's log has a line with every one of `parts`.
fn wait_for_log(d: &mut DaemonProc, parts: &[&str], timeout: Duration) {
    let waited = d.proc.wait_until(timeout, |p| {
        p.stderr()
            .lines()
            .any(|l| parts.iter().all(|part| l.contains(part)))
    });
    if let Err(e) = waited {
        panic!("no log line with {parts:?}: {e}\n{}", d.proc.logs());
    }
}

#[test]
fn idle_seeds_rest_and_serve_at_once_when_a_peer_comes() {
    require_libtorrent();
    let main = Swarm::single_file("daemon-idle", 2 * MIB, 15, 51, false);
    let tree = Swarm::tree(
        "daemon-idle-tree",
        "tree",
        &[("a.bin", 300_000), ("b.bin", 9)],
        15,
        52,
    );
    let (state, downloads) = seeding_folders(&main, &tree);
    // Many more complete torrents that nobody asks for (their tracker is not there).
    let idle_dir = main.dir.subdir("idle");
    let idle: Vec<(PathBuf, Vec<u8>)> = (0..30u64)
        .map(|i| {
            let src = downloads.join(format!("idle-{i}.bin"));
            let data = write_payload(&src, 40_000 + i as usize, 100 + i);
            let torrent = idle_dir.join(format!("idle-{i}.torrent"));
            mktorrent_to(&src, UNUSED_ANNOUNCE, 15, &torrent);
            (torrent, data)
        })
        .collect();
    let mut d = start_daemon(&state, &downloads, &["--encryption", "prefer"]);
    let main_id = d.add_torrent(&main.torrent);
    d.add_torrent(&tree.torrent);
    let idle_ids: Vec<u64> = idle.iter().map(|(t, _)| d.add_torrent(t)).collect();
    let all = 2 + idle.len() as u64;
    let waited = d.proc.wait_until(DONE_TIMEOUT, |_| {
        curl(&format!("{}/api/v1/stats", d.api), &[]).json()["seeding"] == all
    });
    assert!(waited.is_ok(), "not all seeding\n{}", d.proc.logs());
    d.stop();
    assert_eq!(
        main.tracker.scrape(&main.info.info_hash).0,
        0,
        "the stop was announced"
    );
    // Restarted, every torrent is complete: each rests from the start, with no run at all.
    let mut d = start_daemon_logging(
        &state,
        &downloads,
        &["--encryption", "prefer"],
        Some("bitrush=debug"),
    );
    let stats = d.get("/api/v1/stats").json();
    assert_eq!(stats["seeding"], all, "{stats}");
    // A resting seed still announces.
    main.tracker.wait_for_seeders(&main.info.info_hash, 1);
    // Leechers over plain TCP, MSE and uTP wake their torrents.
    let daemon = loopback_addr(d.peer_port);
    let (plain_dir, mse_dir, utp_dir) = (
        main.dir.subdir("plain"),
        tree.dir.subdir("mse"),
        main.dir.subdir("utp"),
    );
    let (idle_torrent, idle_data) = &idle[7];
    leech_over_each_transport(
        daemon,
        (&main.torrent, &plain_dir),
        (&tree.torrent, &mse_dir),
        (idle_torrent, &utp_dir),
    );
    assert_file_eq(&plain_dir.join("payload.bin"), &main.data, "over plain TCP");
    assert_tree_eq(&mse_dir.join("tree"), &tree.tree);
    assert_file_eq(&utp_dir.join("idle-7.bin"), idle_data, "over uTP");
    // Once its leecher left, the torrent rests again, and wakes again for the next one.
    wait_for_log(
        &mut d,
        &["nobody connected; at rest", "payload.bin"],
        DONE_TIMEOUT,
    );
    let again_dir = main.dir.subdir("again");
    let mut again = LtLeecher::start(&main.torrent, &again_dir, &[daemon], None);
    again.wait_complete();
    assert_file_eq(
        &again_dir.join("payload.bin"),
        &main.data,
        "after resting again",
    );
    assert_eq!(d.torrent(main_id)["state"], "seeding");
    // Pause, resume and remove work on a resting torrent.
    let id = idle_ids[3];
    d.pause_and_resume(id);
    let r = curl(
        &format!("{}/api/v1/torrents/{id}", d.api),
        &["-X", "DELETE"],
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(d.get(&format!("/api/v1/torrents/{id}")).status, 404);
    let stats = d.get("/api/v1/stats").json();
    assert_eq!(stats["seeding"], all - 1, "{stats}");
    d.stop();
}
