#!/usr/bin/python3
"""Download one torrent through `bitrush daemon`, for scripts/bench's daemon-1g scenario.

    daemon_download.py BITRUSH TORRENT OUTDIR [DAEMON FLAGS...]

Starts the daemon (state in OUTDIR.state, downloads into OUTDIR, the API on a free loopback
port), adds TORRENT through the REST API, polls it every 20 ms until nothing is left to
download, prints `TRANSFER <seconds>` (add request to complete) on stderr, then stops the
daemon with SIGINT and waits for it; exits 0 only if all of that worked. The daemon is this process's child, so the bench's rusage covers it.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import die_with_parent  # noqa: E402

POLL = 0.02


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    bitrush, torrent, outdir = sys.argv[1:4]
    state = outdir.rstrip("/") + ".state"
    api = "127.0.0.1:%d" % free_port()
    base = "http://%s/api/v1" % api
    daemon = subprocess.Popen(
        [bitrush, "daemon", "--state-dir", state, "--download-dir", outdir, "--api", api,
         *sys.argv[4:]],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent)
    try:
        while True:
            try:
                if request("GET", base + "/stats")[0] == 200:
                    break
            except OSError:
                pass
            if daemon.poll() is not None:
                print("the daemon exited at start", file=sys.stderr)
                return 1
            time.sleep(POLL)
        with open(torrent, "rb") as f:
            metainfo = f.read()
        added = time.monotonic()
        status, body = request("POST", base + "/torrents", metainfo,
                               {"Content-Type": "application/x-bittorrent"})
        if status != 201:
            print("add: %d %s" % (status, body[:200]), file=sys.stderr)
            return 1
        tid = json.loads(body)["id"]
        while True:
            status, body = request("GET", "%s/torrents/%d" % (base, tid))
            t = json.loads(body) if status == 200 else {}
            if t.get("state") == "failed":
                print("failed: %s" % t.get("error"), file=sys.stderr)
                return 1
            if t.get("size_when_done", 0) > 0 and t.get("left_until_done") == 0:
                break
            time.sleep(POLL)
        # The download alone, without the daemon's start and stop (poll granularity: POLL).
        print("TRANSFER %.3f" % (time.monotonic() - added), file=sys.stderr, flush=True)
        daemon.send_signal(signal.SIGINT)
        return 0 if daemon.wait(timeout=60) == 0 else 1
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
