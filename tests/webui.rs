//! The web UI in a real browser: Debian's headless Chromium, driven through chromedriver
//! (WebDriver) with fantoccini, against the real daemon (with HTTP basic credentials, as on a
//! server) and libtorrent seeders on free loopback ports. In the page: add a magnet link and
//! watch it reach 100 % (live, from the daemon's event stream), upload a `.torrent` (file
//! picker) and drop one, skip a file, set global and per-torrent speed limits (read back from
//! the API), pause, resume, remove with its data. Screenshots at desktop (1280x800) and phone
//! (390x844) widths, light and dark, are kept under `target/webui-screenshots/`.
//!
//! Chromium and chromedriver are required: without them the test fails, naming them.

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Only against a hang: how long the page may take to show what a step waits for.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const USER: &str = "me";
const PASSWORD: &str = "s3cret";

/// The browser's flags: headless, and none of the sandboxes a container lacks.
const CHROMIUM_ARGS: [&str; 4] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
];

/// Starts chromedriver on a free port; returns it with its WebDriver URL.
fn start_chromedriver() -> (Proc, String) {
    let driver = require_tool("chromedriver");
    let port = free_port();
    // Tethered: it goes when the test process goes, however that ends.
    let mut cmd = tethered(&driver);
    cmd.arg(format!("--port={port}"));
    let proc = Proc::spawn("chromedriver", cmd);
    proc.wait_for_stdout_line(|l| l.contains("started successfully"), STARTUP_TIMEOUT)
        .unwrap_or_else(|e| panic!("chromedriver did not start: {e}\n{}", proc.logs()));
    (proc, format!("http://127.0.0.1:{port}"))
}

/// A new browser session (dark if `dark`: the page then sees `prefers-color-scheme: dark`).
async fn browser(webdriver: &str, dark: bool) -> Client {
    let mut args: Vec<&str> = CHROMIUM_ARGS.to_vec();
    if dark {
        args.push("--force-dark-mode");
    }
    let binary = require_tool("chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": binary, "args": args },
    });
    let Value::Object(caps) = caps else {
        unreachable!("a JSON object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(webdriver)
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session: {e}"))
}

/// Starts `bitrush daemon` with credentials on free loopback ports; returns it and its API's
/// `host:port`.
fn start_daemon(state: &Path, downloads: &Path) -> (Proc, String) {
    let args: Vec<String> = vec![
        "daemon".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--download-dir".into(),
        downloads.display().to_string(),
        "--port".into(),
        free_port().to_string(),
        "--api".into(),
        format!("127.0.0.1:{}", free_port()),
        "--api-user".into(),
        USER.into(),
        "--api-password".into(),
        PASSWORD.into(),
    ];
    // Tethered too: the daemon does not watch its stdin.
    let proc = Proc::spawn("bitrush", tethered_bitrush(&args));
    let line = proc
        .wait_for_stdout_line(|l| l.starts_with("API: "), STARTUP_TIMEOUT)
        .unwrap_or_else(|e| panic!("daemon did not start: {e}\n{}", proc.logs()));
    let host = line["API: http://".len()..].trim().to_string();
    (proc, host)
}

/// Where the screenshots go: `target/webui-screenshots/` beside this test's binary.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/webui-<hash>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lies under target/");
    let dir = target.join("webui-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir
}

/// Polls `probe` (every 200 ms) until it gives a value; fails naming `what` after
/// [`STEP_TIMEOUT`], with the daemon's logs.
async fn wait_for<T, F, Fut>(daemon: &Proc, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}\n{}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rows of the torrent list as the page shows them: id, name, state and percent.
async fn rows(c: &Client) -> Vec<Value> {
    let script = r##"
        return [...document.querySelectorAll("#torrent-rows tr")].map((tr) => ({
            id: Number(tr.dataset.id),
            name: tr.querySelector(".name-button").textContent,
            state: tr.querySelector(".state").textContent,
            percent: tr.querySelector(".percent").textContent,
        }));"##;
    match c.execute(script, vec![]).await.expect("read the list") {
        Value::Array(rows) => rows,
        other => panic!("not a list: {other}"),
    }
}

/// The row named `name`, once the page shows it satisfying `cond`.
async fn wait_row(
    c: &Client,
    daemon: &Proc,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(daemon, &format!("{name} {what}"), || async {
        rows(c)
            .await
            .into_iter()
            .find(|r| r["name"] == name && cond(r))
    })
    .await
}

/// Waits until the element `css` selects shows `text`.
async fn wait_text(c: &Client, daemon: &Proc, css: &str, text: &str) {
    wait_for(daemon, &format!("{text:?} in {css}"), || async {
        let el = c.find(Locator::Css(css)).await.ok()?;
        let shown = el.text().await.ok()?;
        shown.contains(text).then_some(())
    })
    .await
}

/// Clicks what `css` selects.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

/// Saves a screenshot of the page at `width` x `height` as `<name>.png`.
async fn screenshot(c: &Client, name: &str, width: u32, height: u32) {
    c.set_window_size(width, height).await.expect("resize");
    // Let the layout settle and a poll land after the resize.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Screenshots of the list and of a torrent's files at both widths, named after `theme`.
async fn screenshots(c: &Client, theme: &str, detail_id: u64) {
    screenshot(c, &format!("desktop-{theme}"), 1280, 800).await;
    screenshot(c, &format!("phone-{theme}"), 390, 844).await;
    click(c, &format!("tr[data-id='{detail_id}'] .name-button")).await;
    click(c, "#tab-files").await;
    screenshot(c, &format!("phone-{theme}-files"), 390, 844).await;
    screenshot(c, &format!("desktop-{theme}-files"), 1280, 800).await;
    click(c, "#detail-close").await;
}

#[test]
fn the_page_adds_a_magnet_downloads_it_and_pauses_resumes_and_removes_it() {
    require_libtorrent();
    let (_chromedriver, webdriver) = start_chromedriver();
    // Slow enough for the page to show it in progress.
    let first = Swarm::single_file("webui-a", 4 * MIB, 15, 61, false);
    let _first_seeder = first.lt_seeder_with(&LtSeedOptions::upload_limited(MIB as u64));
    let second = Swarm::tree(
        "webui-b",
        "album",
        &[("one.flac", MIB), ("cover/front.jpg", 200_000)],
        15,
        62,
    );
    let _second_seeder = second.lt_seeder();
    // Dropped on the page; slow, so it is still downloading in the screenshots.
    let third = Swarm::tree(
        "webui-c",
        "video-collection",
        &[("episode-01.mkv", 8 * MIB), ("episode-02.mkv", 8 * MIB)],
        16,
        63,
    );
    let _third_seeder = third.lt_seeder_with(&LtSeedOptions::upload_limited(96 * 1024));
    let state = first.dir.subdir("state");
    let downloads = first.dir.subdir("downloads");
    let (daemon, api) = start_daemon(&state, &downloads);
    let page = format!("http://{USER}:{PASSWORD}@{api}/");
    // The page is behind the API's credentials, like the API.
    assert_eq!(
        http_status(&format!("http://{api}/"), None),
        "401 application/json"
    );
    assert_eq!(
        http_status(
            &format!("http://{api}/"),
            Some(&format!("{USER}:{PASSWORD}"))
        ),
        "200 text/html; charset=utf-8"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let second_id = rt.block_on(async {
        let c = browser(&webdriver, false).await;
        c.set_window_size(1280, 800).await.expect("resize");
        c.goto(&page).await.expect("open the page");
        // The API answered the page's own requests (with the page's credentials): the list is
        // empty, not unreachable.
        wait_for(&daemon, "the empty list", || async {
            let shown = c
                .execute(
                    "return !document.getElementById('empty').hidden \
                     && document.getElementById('offline').hidden",
                    vec![],
                )
                .await
                .expect("script");
            (shown == Value::Bool(true)).then_some(())
        })
        .await;
        // Kept up to date by the daemon's event stream (through the page's credentials).
        wait_for(&daemon, "the event stream open", || async {
            let updates = c
                .execute("return document.body.dataset.updates", vec![])
                .await
                .expect("script");
            (updates == json!("stream")).then_some(())
        })
        .await;

        screenshot(&c, "phone-light-empty", 390, 844).await;
        c.set_window_size(1280, 800).await.expect("resize");

        // A magnet link, typed and added with the keyboard.
        let link = magnet_link(
            &first.info.info_hash,
            None,
            &[first.tracker.http_url()],
            &[],
        );
        let input = c.find(Locator::Css("#magnet")).await.expect("magnet field");
        input
            .send_keys(&link_keys(&link))
            .await
            .expect("type the link");
        let row = wait_row(&c, &daemon, "payload.bin", "in progress", |r| {
            r["percent"] != "—"
        })
        .await;
        eprintln!("the page showed {row}");
        let first_id = row["id"].as_u64().expect("an id");
        wait_row(&c, &daemon, "payload.bin", "at 100 %", |r| {
            r["percent"] == "100 %"
        })
        .await;
        wait_row(&c, &daemon, "payload.bin", "seeding", |r| {
            r["state"] == "Seeding"
        })
        .await;
        assert_file_eq(
            &downloads.join("payload.bin"),
            &first.data,
            "the download added in the page",
        );

        // A .torrent through the file picker, added paused.
        click(&c, "#add-paused").await;
        c.find(Locator::Css("#torrent-file"))
            .await
            .expect("file input")
            .send_keys(&second.torrent.display().to_string())
            .await
            .expect("pick the file");
        let second_id = wait_row(&c, &daemon, "album", "paused", |r| r["state"] == "Paused").await
            ["id"]
            .as_u64()
            .expect("an id");
        click(&c, "#add-paused").await;
        // A magnet with no tracker and no peer: it fails, and the page says why.
        let lost = magnet_link(
            "0123456789abcdef0123456789abcdef01234567",
            Some("nobody-seeds-this"),
            &[],
            &[],
        );
        input.send_keys(&link_keys(&lost)).await.expect("type");
        wait_row(&c, &daemon, "nobody-seeds-this", "failed", |r| {
            r["state"] == "Failed"
        })
        .await;

        // Skip a file of the album, then resume it: only the wanted file arrives.
        click(&c, &format!("tr[data-id='{second_id}'] .name-button")).await;
        click(&c, "#tab-files").await;
        let skip = "//ul[@id='files']/li[contains(., 'one.flac')]//input";
        let skip = wait_for(&daemon, "the album's files", || async {
            c.find(Locator::XPath(skip)).await.ok()
        })
        .await;
        skip.click().await.expect("skip one.flac");
        // The daemon's answer is shown before the torrent runs again.
        let skipped = "//ul[@id='files']/li[contains(., 'one.flac') and @data-wanted='false']";
        wait_for(&daemon, "one.flac skipped", || async {
            c.find(Locator::XPath(skipped)).await.ok()
        })
        .await;
        click(&c, "#detail-close").await;
        click(
            &c,
            &format!("tr[data-id='{second_id}'] button[data-action='resume']"),
        )
        .await;
        wait_row(&c, &daemon, "album", "done with its wanted file", |r| {
            r["state"] == "Seeding" && r["percent"] == "100 %"
        })
        .await;
        let album = downloads.join("album");
        assert_file_eq(
            &album.join("cover/front.jpg"),
            &second.tree["cover/front.jpg"],
            "the wanted file",
        );
        assert!(
            !album.join("one.flac").exists()
                || std::fs::read(album.join("one.flac")).ok().as_deref()
                    != Some(&second.tree["one.flac"][..]),
            "a skipped file was downloaded"
        );

        // A .torrent dropped on the page (a drop event carrying the file, as a drag from a
        // file manager delivers it).
        let torrent = std::fs::read(&third.torrent).expect("read the torrent");
        let drop = r#"
            const file = new File([new Uint8Array(arguments[0])], "video.torrent");
            const data = new DataTransfer();
            data.items.add(file);
            for (const type of ["dragenter", "dragover", "drop"]) {
                const event = new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data });
                document.querySelector("main").dispatchEvent(event);
            }"#;
        c.execute(drop, vec![json!(torrent)])
            .await
            .expect("drop the file");
        wait_row(&c, &daemon, "video-collection", "downloading", |r| {
            r["state"] == "Downloading" && r["percent"] != "0.0 %"
        })
        .await;

        // Its details: overview, trackers and the seeder among its peers.
        let third_id = rows(&c)
            .await
            .iter()
            .find(|r| r["name"] == "video-collection")
            .and_then(|r| r["id"].as_u64())
            .expect("the dropped torrent's row");
        click(&c, &format!("tr[data-id='{third_id}'] .name-button")).await;
        wait_text(&c, &daemon, "#overview", &third.info.info_hash).await;
        click(&c, "#tab-trackers").await;
        wait_text(&c, &daemon, "#trackers", &third.tracker.http_url()).await;
        click(&c, "#tab-peers").await;
        wait_text(&c, &daemon, "#peers", "127.0.0.1:").await;
        screenshot(&c, "desktop-light-peers", 1280, 800).await;
        click(&c, "#detail-close").await;

        screenshots(&c, "light", second_id).await;
        let dark = browser(&webdriver, true).await;
        dark.goto(&page).await.expect("open the page");
        wait_row(&dark, &daemon, "album", "in the dark page", |_| true).await;
        screenshots(&dark, "dark", second_id).await;
        dark.close().await.expect("close the dark session");

        // Pause and resume with the buttons.
        c.set_window_size(1280, 800).await.expect("resize");
        let row_css = format!("tr[data-id='{first_id}']");
        click(&c, &format!("{row_css} button[data-action='pause']")).await;
        wait_row(&c, &daemon, "payload.bin", "paused", |r| {
            r["state"] == "Paused"
        })
        .await;
        click(&c, &format!("{row_css} button[data-action='resume']")).await;
        wait_row(&c, &daemon, "payload.bin", "seeding again", |r| {
            r["state"] == "Seeding"
        })
        .await;

        // Global speed limits, set in the page: the API has them.
        click(&c, "#limits-open").await;
        let down = c.find(Locator::Css("#limit-down")).await.expect("the field");
        down.send_keys("512").await.expect("type a limit");
        screenshot(&c, "desktop-light-limits", 1280, 800).await;
        click(&c, "#limits-save").await;
        let limits = json!({"download": 512 * 1024, "upload": null});
        wait_for(&daemon, "the global limit in the API", || async {
            (api_json(&api, "/api/v1/limits") == limits).then_some(())
        })
        .await;
        wait_text(&c, &daemon, "#total-down-limit", "512 KiB/s").await;
        // A torrent's own limit, in its details.
        click(&c, &format!("tr[data-id='{second_id}'] .name-button")).await;
        let loaded = format!("#torrent-limits[data-loaded='{second_id}']");
        wait_for(&daemon, "the torrent's limits", || async {
            c.find(Locator::Css(&loaded)).await.ok()
        })
        .await;
        let up = c.find(Locator::Css("#torrent-limit-up")).await.expect("the field");
        up.send_keys("64").await.expect("type a limit");
        screenshot(&c, "phone-light-torrent-limits", 390, 844).await;
        c.set_window_size(1280, 800).await.expect("resize");
        click(&c, "#torrent-limits-save").await;
        let own = format!("/api/v1/torrents/{second_id}/limits");
        let limits = json!({"download": null, "upload": 64 * 1024});
        wait_for(&daemon, "the torrent's limit in the API", || async {
            (api_json(&api, &own) == limits).then_some(())
        })
        .await;
        click(&c, "#detail-close").await;
        // An emptied field lifts the global limit.
        click(&c, "#limits-open").await;
        let down = c.find(Locator::Css("#limit-down")).await.expect("the field");
        assert_eq!(down.prop("value").await.expect("its value").as_deref(), Some("512"));
        down.clear().await.expect("empty the field");
        click(&c, "#limits-save").await;
        let none = json!({"download": null, "upload": null});
        wait_for(&daemon, "no global limit in the API", || async {
            (api_json(&api, "/api/v1/limits") == none).then_some(())
        })
        .await;
        assert_eq!(api_json(&api, &own), limits, "the torrent keeps its own");

        // Escape cancels a removal (checked at the end: the album is still there).
        click(
            &c,
            &format!("tr[data-id='{second_id}'] button[data-action='remove']"),
        )
        .await;
        c.active_element()
            .await
            .expect("the focused button")
            .send_keys(&fantoccini::key::Key::Escape.to_string())
            .await
            .expect("press Escape");
        wait_for(&daemon, "the dialog closed", || async {
            let open = c
                .execute("return document.getElementById('remove-dialog').open", vec![])
                .await
                .ok()?;
            (open == Value::Bool(false)).then_some(())
        })
        .await;

        // Remove with its data, confirmed in the dialog.
        click(&c, &format!("{row_css} button[data-action='remove']")).await;
        click(&c, "#remove-data").await;
        screenshot(&c, "desktop-light-remove", 1280, 800).await;
        click(&c, "#remove-confirm").await;
        wait_for(&daemon, "the torrent gone", || async {
            let gone = rows(&c).await.iter().all(|r| r["name"] != "payload.bin");
            gone.then_some(())
        })
        .await;
        wait_for(&daemon, "its data deleted", || async {
            (!downloads.join("payload.bin").exists()).then_some(())
        })
        .await;
        c.close().await.expect("close the session");
        second_id
    });
    assert_eq!(
        http_status(
            &format!("http://{api}/api/v1/torrents/{second_id}"),
            Some(&format!("{USER}:{PASSWORD}"))
        ),
        "200 application/json",
        "the removal cancelled with Escape happened"
    );
    drop(daemon);
}

/// `link` then Enter, as typed keys.
fn link_keys(link: &str) -> String {
    format!("{link}{}", fantoccini::key::Key::Enter)
}

/// The JSON at `path` of the API at `api` (`host:port`), with the test's credentials.
fn api_json(api: &str, path: &str) -> Value {
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args(["-s", "-u", &format!("{USER}:{PASSWORD}")])
        .arg(format!("http://{api}{path}"));
    let out = run_checked("curl", cmd, Duration::from_secs(30));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `curl`'s status code and content type for a GET of `url`, with `user:password` if given.
fn http_status(url: &str, credentials: Option<&str>) -> String {
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{content_type}",
    ]);
    if let Some(c) = credentials {
        cmd.args(["-u", c]);
    }
    cmd.arg(url);
    let out = run_checked("curl", cmd, Duration::from_secs(30));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
