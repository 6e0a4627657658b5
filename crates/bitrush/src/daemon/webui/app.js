// The bitrush web UI: keeps the torrent list in step with the daemon's REST API (/api/v1),
// live from its event stream (/api/v1/events) and, while that is not open, by polling every
// second (every ten seconds besides it, to catch up on anything missed). Rows are updated in
// place (keyed by torrent id) so that keyboard focus and hover survive a refresh; every value
// goes in through textContent, never as markup. Same-origin requests carry the page's HTTP
// basic credentials by themselves.
"use strict";

// From the origin, never the page's URL: a page opened with user:password@ in its address
// keeps the credentials in its URL, and fetch refuses URLs that carry them (the browser still
// sends them from its authentication cache).
const API = location.origin + "/api/v1";
const POLL_MS = 1000;
// Polling besides an open event stream.
const RESYNC_MS = 10000;

const STATES = {
  paused: "Paused",
  failed: "Failed",
  queued_download: "Queued",
  queued_seed: "Queued to seed",
  fetching_metadata: "Fetching metadata",
  downloading: "Downloading",
  seeding: "Seeding",
};

const $ = (id) => document.getElementById(id);
const rows = new Map(); // torrent id -> { tr, cells }
let torrents = [];
let detailId = null;
let live = false; // the event stream is open
let removeId = null;

// ---- formatting ------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
}

const rate = (n) => (n > 0 ? bytes(n) + "/s" : "—");

function duration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function percent(fraction) {
  const p = Math.floor(fraction * 1000) / 10;
  return (p >= 100 ? "100" : p.toFixed(1)) + " %";
}

const date = (secs) => (secs > 0 ? new Date(secs * 1000).toLocaleString() : "—");

// ---- API -------------------------------------------------------------------

async function api(method, path, body, contentType) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.body = body;
    opts.headers["Content-Type"] = contentType || "application/json";
  }
  const resp = await fetch(API + path, opts);
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    // A body that is not JSON: the status says enough.
  }
  if (!resp.ok) {
    const err = new Error((data && data.error) || resp.status + " " + resp.statusText);
    err.status = resp.status;
    throw err;
  }
  return data;
}

let toastTimer = null;
function toast(message, isError) {
  const t = $("toast");
  t.textContent = message;
  t.classList.toggle("error", !!isError);
  t.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("shown"), isError ? 8000 : 3000);
}

// ---- the list --------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function makeRow(t) {
  const tr = el("tr");
  tr.dataset.id = t.id;
  const c = {};

  const name = el("td", "name");
  c.name = el("button", "link name-button");
  c.name.type = "button";
  c.name.addEventListener("click", () => openDetail(t.id));
  const progress = el("div", "progress");
  c.bar = el("div", "meter");
  c.bar.setAttribute("role", "progressbar");
  c.bar.setAttribute("aria-valuemin", "0");
  c.bar.setAttribute("aria-valuemax", "100");
  c.fill = el("div", "fill");
  c.bar.append(c.fill);
  c.percent = el("span", "percent");
  progress.append(c.bar, c.percent);
  c.error = el("p", "row-error");
  name.append(c.name, progress, c.error);

  const cell = (cls, label) => {
    const td = el("td", cls);
    td.dataset.label = label;
    const v = el("span", "value");
    td.append(v);
    return [td, v];
  };
  let td;
  const tds = [name];
  [td, c.size] = cell("num size", "Size");
  tds.push(td);
  [td, c.down] = cell("num down", "Down");
  tds.push(td);
  [td, c.up] = cell("num up", "Up");
  tds.push(td);
  [td, c.eta] = cell("num eta", "ETA");
  tds.push(td);
  [td, c.peers] = cell("num peers", "Peers");
  tds.push(td);
  const state = el("td", "state-cell");
  c.state = el("span", "state");
  state.append(c.state);
  tds.push(state);

  const actions = el("td", "actions");
  c.toggle = el("button", "toggle");
  c.toggle.type = "button";
  c.toggle.addEventListener("click", () => toggle(t.id));
  c.remove = el("button", "remove danger-quiet", "Remove");
  c.remove.type = "button";
  c.remove.dataset.action = "remove";
  c.remove.addEventListener("click", () => askRemove(t.id));
  actions.append(c.toggle, c.remove);
  tds.push(actions);

  tr.append(...tds);
  return { tr, c };
}

// Writes only what changed: with hundreds of rows, a refresh then costs little layout work.
function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function setAttr(e, name, value) {
  if (e.getAttribute(name) !== value) e.setAttribute(name, value);
}

function updateRow(row, t) {
  const c = row.c;
  setAttr(row.tr, "data-state", t.state);
  setText(c.name, t.name);
  setAttr(c.name, "title", t.name);
  setAttr(c.name, "aria-label", "Details of " + t.name);
  const pct = Math.max(0, Math.min(1, t.percent_done));
  const width = pct * 100 + "%";
  if (c.fill.style.width !== width) c.fill.style.width = width;
  setAttr(c.bar, "aria-valuenow", String(Math.floor(pct * 100)));
  setAttr(c.bar, "aria-label", "Progress of " + t.name);
  setText(c.percent, t.metadata_known ? percent(pct) : "—");
  setText(c.error, t.error || "");
  c.error.hidden = !t.error;
  setText(c.size, t.metadata_known ? bytes(t.size_when_done) : "—");
  setText(c.down, rate(t.rate_download));
  setText(c.up, rate(t.rate_upload));
  setText(c.eta, t.state === "downloading" ? duration(t.eta) : "—");
  setText(c.peers, String(t.peers));
  setText(c.state, STATES[t.state] || t.state);
  setAttr(c.state, "data-state", t.state);
  const stopped = t.state === "paused" || t.state === "failed";
  const label = stopped ? "Resume" : "Pause";
  setText(c.toggle, label);
  setAttr(c.toggle, "data-action", label.toLowerCase());
  setAttr(c.toggle, "aria-label", label + " " + t.name);
  setAttr(c.remove, "aria-label", "Remove " + t.name);
}

function matchesFilter(t) {
  switch ($("filter").value) {
    case "active":
      return t.rate_download > 0 || t.rate_upload > 0 || t.state === "fetching_metadata";
    case "downloading":
      return ["downloading", "fetching_metadata", "queued_download"].includes(t.state);
    case "seeding":
      return t.state === "seeding" || t.state === "queued_seed";
    case "paused":
      return t.state === "paused" || t.state === "failed";
    default:
      return true;
  }
}

function render() {
  const body = $("torrent-rows");
  const seen = new Set();
  let previous = null;
  for (const t of torrents) {
    if (!matchesFilter(t)) continue;
    seen.add(t.id);
    let row = rows.get(t.id);
    if (!row) {
      row = makeRow(t);
      rows.set(t.id, row);
    }
    updateRow(row, t);
    // Keep queue order without moving rows that are already in place (moving drops focus).
    const want = previous ? previous.nextSibling : body.firstChild;
    if (want !== row.tr) body.insertBefore(row.tr, want);
    previous = row.tr;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  $("empty").hidden = torrents.length > 0;
  $("torrents").hidden = torrents.length === 0;
}

function renderTotals(stats) {
  $("total-down").textContent = rate(stats.download_rate);
  $("total-up").textContent = rate(stats.upload_rate);
  $("total-count").textContent = stats.torrents + (stats.torrents === 1 ? " torrent" : " torrents");
  const active = stats.download_rate > 0 ? "↓ " + rate(stats.download_rate) + " · " : "";
  document.title = active + "bitrush";
}

async function poll() {
  try {
    const [list, stats, limits] = await Promise.all([
      api("GET", "/torrents"),
      api("GET", "/stats"),
      api("GET", "/limits"),
    ]);
    torrents = list;
    $("offline").hidden = true;
    render();
    renderTotals(stats);
    renderLimits(limits);
    if (detailId !== null) await refreshDetail();
  } catch (e) {
    $("offline").textContent =
      e.status === 401
        ? "The daemon asks for its user name and password: reload the page to sign in."
        : "Cannot reach the bitrush daemon. Retrying…";
    $("offline").hidden = false;
  }
  setTimeout(poll, live ? RESYNC_MS : POLL_MS);
}

// ---- the event stream ------------------------------------------------------

// Totals worked out from the list, as /stats would give them.
function totalsOf(list) {
  const sum = (key) => list.reduce((n, t) => n + t[key], 0);
  return { download_rate: sum("rate_download"), upload_rate: sum("rate_upload"), torrents: list.length };
}

function changed(id) {
  $("offline").hidden = true;
  render();
  renderTotals(totalsOf(torrents));
  if (detailId !== null && (id === undefined || id === detailId)) refreshDetail();
}

function upsert(t) {
  const i = torrents.findIndex((x) => x.id === t.id);
  if (i >= 0) torrents[i] = t;
  else torrents.push(t);
}

function listen() {
  if (typeof EventSource === "undefined") return;
  // The browser reconnects by itself after an error; meanwhile polling takes over.
  const source = new EventSource(API + "/events");
  const setLive = (on) => {
    live = on;
    document.body.dataset.updates = on ? "stream" : "polling";
  };
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("error", () => setLive(false));
  source.addEventListener("snapshot", (e) => {
    torrents = JSON.parse(e.data);
    changed();
  });
  for (const kind of ["added", "state", "progress"]) {
    source.addEventListener(kind, (e) => {
      const data = JSON.parse(e.data);
      upsert(data.torrent);
      changed(data.id);
    });
  }
  source.addEventListener("removed", (e) => {
    const id = JSON.parse(e.data).id;
    torrents = torrents.filter((t) => t.id !== id);
    changed(id);
  });
}

async function refresh() {
  try {
    torrents = await api("GET", "/torrents");
    render();
  } catch (_) {
    // The next poll shows the daemon as unreachable.
  }
}

// ---- actions ---------------------------------------------------------------

const byId = (id) => torrents.find((t) => t.id === id);

async function toggle(id) {
  const t = byId(id);
  if (!t) return;
  const stopped = t.state === "paused" || t.state === "failed";
  try {
    await api("POST", "/torrents/" + id + (stopped ? "/resume" : "/pause"));
    await refresh();
  } catch (e) {
    toast(e.message, true);
  }
}

function askRemove(id) {
  const t = byId(id);
  if (!t) return;
  removeId = id;
  $("remove-name").textContent = t.name;
  $("remove-data").checked = false;
  $("remove-dialog").returnValue = "";
  $("remove-dialog").showModal();
  $("remove-cancel").focus();
}

async function doRemove() {
  if ($("remove-dialog").returnValue !== "remove" || removeId === null) return;
  const id = removeId;
  removeId = null;
  const withData = $("remove-data").checked;
  const t = byId(id);
  try {
    await api("DELETE", "/torrents/" + id + (withData ? "?delete_data=true" : ""));
    toast("Removed " + (t ? t.name : "the torrent") + (withData ? " and its files" : ""));
    if (detailId === id) $("detail-dialog").close();
    await refresh();
  } catch (e) {
    toast(e.message, true);
  }
}

async function addMagnet(event) {
  event.preventDefault();
  const input = $("magnet");
  const magnet = input.value.trim();
  if (!magnet) return;
  try {
    const t = await api("POST", "/torrents", JSON.stringify({ magnet, paused: $("add-paused").checked }));
    input.value = "";
    toast("Added " + t.name);
    await refresh();
  } catch (e) {
    toast(e.message, true);
  }
}

async function addFiles(files) {
  const paused = $("add-paused").checked ? "?paused=true" : "";
  for (const file of files) {
    try {
      const t = await api("POST", "/torrents" + paused, file, "application/x-bittorrent");
      toast("Added " + t.name);
    } catch (e) {
      toast(file.name + ": " + e.message, true);
    }
  }
  await refresh();
}

// ---- speed limits ----------------------------------------------------------

// The API counts bytes per second; the page shows KiB/s.
const KIB = 1024;

// A limit as its field shows it (empty: none).
const limitText = (n) => (n === null || n === undefined ? "" : String(Math.max(1, Math.round(n / KIB))));

// A field's limit in bytes per second (null: none; the field's own check refuses the rest).
function limitOf(input) {
  const kib = input.valueAsNumber;
  return Number.isFinite(kib) && kib > 0 ? Math.round(kib * KIB) : null;
}

// The global limits beside the session's rates.
function renderLimits(limits) {
  const note = (n) => (n === null ? "" : "/ " + bytes(n) + "/s");
  setText($("total-down-limit"), note(limits.download));
  setText($("total-up-limit"), note(limits.upload));
}

async function openLimits() {
  try {
    const limits = await api("GET", "/limits");
    $("limit-down").value = limitText(limits.download);
    $("limit-up").value = limitText(limits.upload);
  } catch (e) {
    toast(e.message, true);
    return;
  }
  $("limits-dialog").returnValue = "";
  $("limits-dialog").showModal();
  $("limit-down").focus();
}

async function saveLimits() {
  if ($("limits-dialog").returnValue !== "save") return;
  const body = { download: limitOf($("limit-down")), upload: limitOf($("limit-up")) };
  try {
    renderLimits(await api("PUT", "/limits", JSON.stringify(body)));
    toast("Speed limits saved");
  } catch (e) {
    toast(e.message, true);
  }
}

async function loadTorrentLimits(id) {
  try {
    const limits = await api("GET", "/torrents/" + id + "/limits");
    if (detailId !== id) return;
    $("torrent-limit-down").value = limitText(limits.download);
    $("torrent-limit-up").value = limitText(limits.upload);
    $("torrent-limits").dataset.loaded = String(id);
  } catch (_) {
    // Removed meanwhile: the dialog closes with the next refresh.
  }
}

async function saveTorrentLimits(event) {
  event.preventDefault();
  const id = detailId;
  if (id === null) return;
  const body = { download: limitOf($("torrent-limit-down")), upload: limitOf($("torrent-limit-up")) };
  try {
    await api("PUT", "/torrents/" + id + "/limits", JSON.stringify(body));
    toast("Speed limits of " + (byId(id) ? byId(id).name : "the torrent") + " saved");
  } catch (e) {
    toast(e.message, true);
  }
}

// ---- detail ----------------------------------------------------------------

function fact(dl, term, value) {
  dl.append(el("dt", null, term), el("dd", null, value));
}

async function refreshDetail() {
  const id = detailId;
  const t = byId(id);
  if (!t) {
    $("detail-dialog").close();
    return;
  }
  $("detail-title").textContent = t.name;
  const dl = $("overview");
  dl.replaceChildren();
  fact(dl, "State", STATES[t.state] || t.state);
  fact(dl, "Progress", t.metadata_known ? percent(t.percent_done) + " of " + bytes(t.size_when_done) : "—");
  fact(dl, "Total size", t.metadata_known ? bytes(t.total_size) : "—");
  fact(dl, "Pieces", t.pieces_have + " of " + t.piece_count);
  fact(dl, "Downloaded", bytes(t.downloaded_ever));
  fact(dl, "Uploaded", bytes(t.uploaded_ever) + " (ratio " + t.ratio.toFixed(2) + ")");
  fact(dl, "Info hash", t.info_hash);
  fact(dl, "Saved in", t.download_dir);
  fact(dl, "Added", date(t.added_date));
  fact(dl, "Completed", date(t.done_date));
  if (t.error) fact(dl, "Error", t.error);

  const tab = currentTab();
  try {
    if (tab === "files") renderFiles(await api("GET", "/torrents/" + id + "/files"));
    if (tab === "peers") renderPeers(await api("GET", "/torrents/" + id + "/peers"));
    if (tab === "trackers") renderTrackers(await api("GET", "/torrents/" + id + "/trackers"));
  } catch (_) {
    // Removed meanwhile, or the daemon went away: the list shows it.
  }
}

function renderFiles(files) {
  const ul = $("files");
  if (files.length === 0) {
    ul.replaceChildren(el("li", "hint", "The file list is known once the metadata is fetched."));
    return;
  }
  // Rebuild only when the set of files changed, so a checkbox keeps its focus.
  if (ul.children.length !== files.length || !ul.querySelector("input")) {
    ul.replaceChildren();
    for (const f of files) {
      const li = el("li");
      const label = el("label", "check");
      const box = el("input");
      box.type = "checkbox";
      box.dataset.index = f.index;
      box.addEventListener("change", setWanted);
      label.append(box, el("span", "file-path", f.path));
      li.append(label, el("span", "file-size"));
      ul.append(li);
    }
  }
  files.forEach((f, i) => {
    const li = ul.children[i];
    li.querySelector("input").checked = f.wanted;
    li.dataset.wanted = String(f.wanted);
    const done = f.length > 0 ? f.done_bytes / f.length : 1;
    li.querySelector(".file-size").textContent = percent(done) + " of " + bytes(f.length);
  });
}

async function setWanted() {
  const boxes = [...$("files").querySelectorAll("input")];
  const wanted = boxes.map((b) => b.checked);
  try {
    renderFiles(await api("PUT", "/torrents/" + detailId + "/files", JSON.stringify({ wanted })));
  } catch (e) {
    toast(e.message, true);
  }
}

function renderPeers(peers) {
  const body = $("peers");
  body.replaceChildren();
  if (peers.length === 0) {
    const tr = el("tr");
    const td = el("td", "hint", "No connected peers.");
    td.colSpan = 2;
    tr.append(td);
    body.append(tr);
  }
  for (const p of peers) {
    const tr = el("tr");
    const addr = p.address.includes(":") ? "[" + p.address + "]:" + p.port : p.address + ":" + p.port;
    tr.append(el("td", "mono", addr), el("td", null, p.outgoing ? "Outgoing" : "Incoming"));
    body.append(tr);
  }
}

function renderTrackers(trackers) {
  const body = $("trackers");
  body.replaceChildren();
  if (trackers.length === 0) {
    const tr = el("tr");
    const td = el("td", "hint", "No trackers: peers come from the DHT and peer exchange.");
    td.colSpan = 2;
    tr.append(td);
    body.append(tr);
  }
  for (const t of trackers) {
    const tr = el("tr");
    tr.append(el("td", "num", String(t.tier + 1)), el("td", "mono", t.url));
    body.append(tr);
  }
}

const TABS = ["overview", "files", "peers", "trackers"];

function currentTab() {
  return TABS.find((name) => $("tab-" + name).getAttribute("aria-selected") === "true");
}

function selectTab(name, focus) {
  for (const n of TABS) {
    const on = n === name;
    const tab = $("tab-" + n);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("panel-" + n).hidden = !on;
    if (on && focus) tab.focus();
  }
  $("files").replaceChildren();
  refreshDetail();
}

function openDetail(id) {
  detailId = id;
  delete $("torrent-limits").dataset.loaded;
  $("torrent-limit-down").value = "";
  $("torrent-limit-up").value = "";
  loadTorrentLimits(id);
  selectTab("overview", false);
  $("detail-dialog").showModal();
  $("detail-close").focus();
}

// ---- wiring ----------------------------------------------------------------

function init() {
  $("add-magnet-form").addEventListener("submit", addMagnet);
  $("torrent-file").addEventListener("change", (e) => {
    addFiles([...e.target.files]);
    e.target.value = "";
  });
  $("filter").addEventListener("change", render);
  $("remove-dialog").addEventListener("close", doRemove);
  $("limits-open").addEventListener("click", openLimits);
  $("limits-dialog").addEventListener("close", saveLimits);
  $("torrent-limits").addEventListener("submit", saveTorrentLimits);
  $("detail-close").addEventListener("click", () => $("detail-dialog").close());
  $("detail-dialog").addEventListener("close", () => {
    detailId = null;
  });
  for (const name of TABS) {
    $("tab-" + name).addEventListener("click", () => selectTab(name, false));
  }
  // Arrow keys move between tabs, as in every tab list.
  document.querySelector(".tabs").addEventListener("keydown", (e) => {
    const i = TABS.indexOf(currentTab());
    let next = null;
    if (e.key === "ArrowRight") next = TABS[(i + 1) % TABS.length];
    if (e.key === "ArrowLeft") next = TABS[(i + TABS.length - 1) % TABS.length];
    if (e.key === "Home") next = TABS[0];
    if (e.key === "End") next = TABS[TABS.length - 1];
    if (next) {
      e.preventDefault();
      selectTab(next, true);
    }
  });

  // Drag and drop of .torrent files anywhere on the page.
  let depth = 0;
  const overlay = $("drop-overlay");
  const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth++;
    overlay.hidden = false;
  });
  document.addEventListener("dragover", (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    addFiles([...e.dataTransfer.files]);
  });

  document.body.dataset.updates = "polling";
  poll();
  listen();
}

init();
