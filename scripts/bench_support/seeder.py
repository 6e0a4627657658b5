#!/usr/bin/python3
"""Host N libtorrent seeders (one session each) in this one process.

Usage: seeder.py --count N [--seed-mode] [--wire tcp|utp|encrypted] [--timeout S] SAVE_DIR TORRENT

Each session listens on its own 127.0.0.1 port (a distinct peer with its own
peer id), uses libtorrent's high_performance_seed() preset with loopback
overrides (TCP only unless --wire says otherwise, no DHT/LSD/UPnP/NAT-PMP)
and announces to the torrent's tracker. By default every session hash-checks the payload when it starts, so
that the timed downloads never pay for lazy piece verification (what
seed_mode does); --seed-mode skips that check.

Prints `READY <port> <port> ...` (flushed) once every session is seeding and
has had a tracker reply; then runs until stdin reaches EOF or a signal. The
sessions run their own C++ threads, so one Python process hosting all of them
is not held back by the GIL (the Python thread only sleeps).
"""

import argparse
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import WIRES, die_with_parent, exit_when_stdin_closes, loopback_settings  # noqa: E402

import libtorrent as lt  # noqa: E402

# The states in which libtorrent 2.0 attaches a peer to a torrent: a torrent added in seed mode
# reports is_seeding while still checking, and drops the peers that connect then.
ACCEPTS_PEERS = (
    lt.torrent_status.downloading,
    lt.torrent_status.finished,
    lt.torrent_status.seeding,
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("save_dir")
    p.add_argument("torrent")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--seed-mode", action="store_true")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--wire", choices=WIRES, default="tcp")
    args = p.parse_args()

    die_with_parent()
    exit_when_stdin_closes(0)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    settings = loopback_settings(lt, lt.high_performance_seed(), args.wire)
    settings.update(
        {
            # Seed forever, whatever the ratio.
            "share_ratio_limit": 0,
            "seed_time_limit": 0,
            "seed_time_ratio_limit": 0,
            "dont_count_slow_torrents": False,
            # Fewer idle threads when dozens of sessions share one process.
            "aio_threads": 4,
        }
    )
    ti = lt.torrent_info(args.torrent)
    sessions, handles = [], []
    for _ in range(args.count):
        ses = lt.session(settings)
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(ti)
        atp.save_path = args.save_dir
        if args.seed_mode:
            atp.flags = lt.torrent_flags.seed_mode
        sessions.append(ses)
        handles.append(ses.add_torrent(atp))

    pending = set(range(args.count))  # sessions without a tracker reply yet
    deadline = time.monotonic() + args.timeout
    while True:
        for i, ses in enumerate(sessions):
            for a in ses.pop_alerts():
                if isinstance(a, lt.tracker_reply_alert):
                    pending.discard(i)
                elif isinstance(a, lt.tracker_error_alert):
                    print("seeder %d: %s" % (i, a.message()), file=sys.stderr, flush=True)
                    os._exit(1)
                elif isinstance(a, (lt.torrent_error_alert, lt.listen_failed_alert,
                                    lt.file_error_alert)):
                    print("seeder %d: %s" % (i, a.message()), file=sys.stderr, flush=True)
        # In seed mode is_seeding holds at once, while libtorrent still checks resume data and
        # drops peers ("torrent is not ready to accept peers"): wait for a state that takes them.
        seeding = all(h.status().is_seeding and h.status().state in ACCEPTS_PEERS for h in handles)
        ports = [s.listen_port() for s in sessions]
        if seeding and all(ports) and not pending:
            break
        if time.monotonic() > deadline:
            print("seeder: not ready after %.0f s (seeding=%s, unannounced=%d)"
                  % (args.timeout, seeding, len(pending)), file=sys.stderr, flush=True)
            os._exit(1)
        time.sleep(0.1)

    print("READY " + " ".join(str(x) for x in ports), flush=True)
    while True:
        time.sleep(1.0)
        for i, ses in enumerate(sessions):
            for a in ses.pop_alerts():
                if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                    print("seeder %d: %s" % (i, a.message()), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
