#!/usr/bin/python3
"""Seed one or more torrents with libtorrent on 127.0.0.1 for bitrush's tests.

Usage: lt_seed.py [--port P] [--upload-rate-limit BPS] [--no-announce] [--ipv6]
                  [--exit-after-upload BYTES] SAVE_DIR TORRENT [TORRENT ...]

Prints `READY <port>` on stdout (flushed) once every torrent is in seeding
state and (unless --no-announce) has had a successful tracker reply, then runs
until killed or until stdin reaches EOF (so it dies with the test that started
it). With --exit-after-upload it dies abruptly (exit code 42) once it has
uploaded that many payload bytes: a seeder that vanishes mid-download. DHT, LSD, UPnP and NAT-PMP are off; it listens on
127.0.0.1 only (with --ipv6, on [::1] only) and announces to the torrents' trackers (unless
--no-announce).
"""

import argparse
import os
import sys
import threading
import time

import libtorrent as lt

from lt_tool import add_transport_args, transport_settings, loopback_settings, seeding_and_accepting
from peerwire import exit_when_stdin_closes

# Exit code used when --exit-after-upload made the seeder die on purpose.
DIED_EXIT_CODE = 42


def main():
    p = argparse.ArgumentParser()
    p.add_argument("save_dir")
    p.add_argument("torrents", nargs="+")
    p.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")
    p.add_argument("--upload-rate-limit", type=int, default=0, help="bytes/s, 0 = unlimited")
    p.add_argument("--no-announce", action="store_true", help="do not contact trackers")
    p.add_argument("--ipv6", action="store_true", help="listen on [::1] only, not on 127.0.0.1")
    p.add_argument(
        "--exit-after-upload",
        type=int,
        default=0,
        help="die abruptly (exit code %d) once this many payload bytes were uploaded" % DIED_EXIT_CODE,
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="hash the data before seeding (no seed mode): a v2 torrent's block hashes are then known",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="max seconds to reach seeding state")
    p.add_argument("--verbose", action="store_true")
    add_transport_args(p)
    args = p.parse_args()

    settings = loopback_settings(args.port)
    if args.ipv6:
        settings.update({"listen_interfaces": "[::1]:%d" % args.port, "outgoing_interfaces": "::1"})
    settings.update({
        "announce_ip": "::1" if args.ipv6 else "127.0.0.1",
        "upload_rate_limit": args.upload_rate_limit,
        # do not rate-limit local peers differently from others
        "ignore_limits_on_local_network": False,
        # keep seeding regardless of ratio / time
        "share_ratio_limit": 0,
        "seed_time_limit": 0,
        "seed_time_ratio_limit": 0,
        "active_seeds": 1000,
        "active_limit": 1000,
        "dont_count_slow_torrents": False,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification,
    })
    settings.update(transport_settings(args))
    ses = lt.session(settings)

    handles = []
    for path in args.torrents:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(path)
        atp.save_path = args.save_dir
        # Seed mode trusts the data unread, so libtorrent knows no block hashes then and
        # rejects BEP 52 requests for them.
        atp.flags = lt.torrent_flags.seed_mode
        if args.check:
            atp.flags &= ~lt.torrent_flags.seed_mode
        if args.no_announce:
            atp.flags |= lt.torrent_flags.override_trackers
            atp.trackers = []
        handles.append(ses.add_torrent(atp))

    # Torrents that must have announced successfully before READY, so that a
    # test asking the tracker right after READY finds this seeder.
    must_announce = set()
    if not args.no_announce:
        for h in handles:
            if h.trackers():
                must_announce.add(str(h.info_hash()))

    # listen_port() is only known once the listen socket is open.
    deadline = time.monotonic() + args.timeout
    port = 0
    while time.monotonic() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.tracker_reply_alert):
                must_announce.discard(str(a.handle.info_hash()))
            if args.verbose or isinstance(
                a, (lt.torrent_error_alert, lt.listen_failed_alert, lt.tracker_error_alert)
            ):
                print("lt_seed alert: %s" % a.message(), file=sys.stderr, flush=True)
        port = ses.listen_port()
        states = [h.status() for h in handles]
        if port and not must_announce and all(seeding_and_accepting(s) for s in states):
            break
        time.sleep(0.05)
    else:
        print(
            "lt_seed: not ready after %ss (port=%s, unannounced=%s, states=%s)"
            % (args.timeout, port, sorted(must_announce), [str(s.state) for s in states]),
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)

    print("READY %d" % port, flush=True)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()

    poll = 0.02 if args.exit_after_upload else 0.2
    while True:
        for a in ses.pop_alerts():
            if args.verbose or isinstance(a, lt.torrent_error_alert):
                print("lt_seed alert: %s" % a.message(), file=sys.stderr, flush=True)
        if args.exit_after_upload:
            uploaded = sum(h.status().total_payload_upload for h in handles)
            if uploaded >= args.exit_after_upload:
                print("lt_seed: dying after uploading %d bytes" % uploaded, file=sys.stderr, flush=True)
                # Abrupt death: no tracker 'stopped' event, sockets just close.
                os._exit(DIED_EXIT_CODE)
        time.sleep(poll)


if __name__ == "__main__":
    main()
