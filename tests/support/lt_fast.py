#!/usr/bin/python3
"""A libtorrent peer that logs the peer-protocol messages it exchanges, for the fast-extension
(BEP 6) tests.

Usage: lt_fast.py leech TORRENT SAVE_DIR --peer IP:PORT [--timeout S]
       lt_fast.py seed TORRENT SAVE_DIR [--timeout S]

Binds 127.0.0.1 only, TCP only, plaintext, no DHT/LSD/UPnP/NAT-PMP, no tracker. Prints one
`MSG <== NAME` (received) or `MSG ==> NAME` (sent) line per peer message other than blocks and
requests, `READY PORT` once a seed listens, and `COMPLETE` when a leech has everything (then
exits 0). Exits 1 after the timeout, and at once when stdin reaches EOF.
"""

import argparse
import os
import re
import sys
import threading
import time

import libtorrent as lt

from lt_tool import loopback_settings, seeding_and_accepting
from peerwire import exit_when_stdin_closes, say

# "... <== HAVE_ALL [ ... ]" / "... ==> ALLOWED_FAST [ ... ]"
MESSAGE = re.compile(r"(<==|==>) ([A-Z_]+)")
NOISE = {"PIECE", "REQUEST", "HANDSHAKE", "EXTENSIONS", "EXTENDED_HANDSHAKE", "KEEPALIVE"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["leech", "seed"])
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--peer")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    threading.Thread(target=exit_when_stdin_closes, args=(3,), daemon=True).start()

    settings = loopback_settings(0)
    settings["alert_mask"] = lt.alert.category_t.peer_log_notification
    ses = lt.session(settings)
    os.makedirs(args.save_dir, exist_ok=True)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save_dir
    atp.flags |= lt.torrent_flags.override_trackers
    atp.trackers = []
    h = ses.add_torrent(atp)
    peer = None
    if args.peer:
        host, port = args.peer.rsplit(":", 1)
        peer = (host, int(port))
        h.connect_peer(peer)
    ready = False
    deadline = time.monotonic() + args.timeout
    seen = set()
    while time.monotonic() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.peer_log_alert):
                m = MESSAGE.search(a.message())
                if m and m.group(2) not in NOISE and m.groups() not in seen:
                    seen.add(m.groups())
                    say("MSG %s %s" % m.groups())
        st = h.status()
        if args.role == "seed" and not ready and seeding_and_accepting(st):
            ready = True
            say("READY %d" % ses.listen_port())
        if args.role == "leech" and st.is_seeding:
            say("COMPLETE")
            return 0
        time.sleep(0.05)
    print("lt_fast: timed out", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)
