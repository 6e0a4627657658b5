#!/usr/bin/python3
"""Download a torrent with libtorrent from given peers, optionally throttled, reporting progress.

Usage: lt_leech.py TORRENT SAVE_DIR --peer IP:PORT [--peer ...]
                   [--download-rate-limit BPS] [--timeout S]

Binds 127.0.0.1 only (DHT, LSD, UPnP, NAT-PMP, uTP off) and does not announce
to the torrent's trackers: it talks only to the peers given. Prints
`PROGRESS <bytes done>` (flushed) each time the verified byte count changes,
`COMPLETE` once the torrent is complete (then exits 0), or exits 1 after the
timeout. Exits at once when stdin reaches EOF (the test that started it died).
"""

import argparse
import os
import sys
import time

import libtorrent as lt

from lt_tool import add_transport_args, transport_settings, die_when_stdin_closes, loopback_settings


def main():
    p = argparse.ArgumentParser()
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--peer", action="append", required=True)
    p.add_argument("--download-rate-limit", type=int, default=0, help="bytes/s, 0 = unlimited")
    p.add_argument("--timeout", type=float, default=100.0)
    add_transport_args(p)
    args = p.parse_args()

    die_when_stdin_closes()

    settings = loopback_settings(0)
    settings.update(
        {
            # libtorrent's default request queue, not the seeders' deep one
            "request_queue_time": 3,
            "max_out_request_queue": 500,
            "download_rate_limit": args.download_rate_limit,
            "ignore_limits_on_local_network": False,
            "alert_mask": lt.alert.category_t.error_notification,
        }
    )
    settings.update(transport_settings(args))
    ses = lt.session(settings)
    os.makedirs(args.save_dir, exist_ok=True)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save_dir
    atp.flags |= lt.torrent_flags.override_trackers
    atp.trackers = []
    h = ses.add_torrent(atp)
    peers = []
    for peer in args.peer:
        host, port = peer.rsplit(":", 1)
        peers.append((host, int(port)))
    for peer in peers:
        h.connect_peer(peer)

    deadline = time.monotonic() + args.timeout
    last = -1
    last_connect = time.monotonic()
    while time.monotonic() < deadline:
        for a in ses.pop_alerts():
            print("lt_leech alert: %s" % a.message(), file=sys.stderr, flush=True)
        st = h.status()
        if st.total_wanted_done != last:
            last = st.total_wanted_done
            print("PROGRESS %d" % last, flush=True)
        if st.is_seeding:
            print("COMPLETE", flush=True)
            return 0
        if st.num_peers == 0 and time.monotonic() - last_connect > 2:
            # Not connected (refused, or dropped): try the given peers again.
            last_connect = time.monotonic()
            for peer in peers:
                h.connect_peer(peer)
        time.sleep(0.05)
    print("lt_leech: not complete after %ss" % args.timeout, file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    # os._exit: a daemon thread still blocks on stdin, so a normal interpreter
    # shutdown could abort on the stdin lock.
    os._exit(rc)
