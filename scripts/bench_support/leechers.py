#!/usr/bin/python3
"""Host N libtorrent leechers (one session each) of one torrent in this one process.

Usage: leechers.py --count N [--wire tcp|utp|encrypted] TORRENT SAVE_DIR

Leecher i downloads into SAVE_DIR/i with the same loopback settings as
lt_download.py. Exits 0 once every leecher is complete (printing `DONE <s>`),
1 on a torrent or file error; exits when stdin reaches EOF. Used by the seeding
scenarios of scripts/bench, which time the seeder under test through it.
"""

import argparse
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import WIRES, die_with_parent, exit_when_stdin_closes, leecher_settings  # noqa: E402

import libtorrent as lt  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--wire", choices=WIRES, default="tcp")
    args = p.parse_args()
    die_with_parent()
    exit_when_stdin_closes(3)
    t0 = time.monotonic()
    ti = lt.torrent_info(args.torrent)
    sessions, handles = [], []
    for i in range(args.count):
        ses = lt.session(leecher_settings(lt, args.wire))
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(ti)
        atp.save_path = os.path.join(args.save_dir, str(i))
        sessions.append(ses)
        handles.append(ses.add_torrent(atp))
    while True:
        time.sleep(0.05)
        for ses in sessions:
            for a in ses.pop_alerts():
                if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                    print("leechers: %s" % a.message(), file=sys.stderr, flush=True)
                    os._exit(1)
        if all(h.status().is_seeding for h in handles):
            break
    print("DONE %.3f" % (time.monotonic() - t0), flush=True)
    for ses, h in zip(sessions, handles):
        ses.remove_torrent(h)
    os._exit(0)


if __name__ == "__main__":
    main()
