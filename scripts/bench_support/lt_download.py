#!/usr/bin/python3
"""Download one torrent with libtorrent into SAVE_DIR; exit 0 once it is complete.

Usage: lt_download.py [--wire tcp|utp|encrypted|transmission] TORRENT SAVE_DIR   (timed by scripts/bench)
       lt_download.py --dht-bootstrap HOST:PORT MAGNET SAVE_DIR  (peers from the DHT only)
       lt_download.py --startup-only            (just interpreter + session start-up)

Loopback-tuned: request_queue_time 10 and max_out_request_queue 5000 (the
defaults are several times slower on loopback), TCP only unless --wire says
otherwise, no DHT/LSD/UPnP/NAT-PMP. On completion it drops the session (sends
the tracker `stopped`, waiting at most stop_tracker_timeout = 1 s) and exits.
Prints `DONE <s>` with the seconds from session start to completion. Exits when
stdin reaches EOF.
"""

import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import die_with_parent, dht_settings, exit_when_stdin_closes, leecher_settings  # noqa: E402,E501

import libtorrent as lt  # noqa: E402


def main():
    die_with_parent()
    exit_when_stdin_closes(3)
    argv = sys.argv[1:]
    wire, bootstrap = "tcp", None
    while argv[:1] in (["--wire"], ["--dht-bootstrap"]) and len(argv) >= 2:
        if argv[0] == "--wire":
            wire = argv[1]
        else:
            host, port = argv[1].rsplit(":", 1)
            bootstrap = (host, int(port))
        argv = argv[2:]
    t0 = time.monotonic()
    settings = leecher_settings(lt, wire)
    if bootstrap:
        settings.update(dht_settings(lt))
    ses = lt.session(settings)
    if argv == ["--startup-only"]:
        del ses
        os._exit(0)
    torrent, save_dir = argv[0], argv[1]
    if bootstrap:
        ses.add_dht_node(bootstrap)
        atp = lt.parse_magnet_uri(torrent)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_dir
    h = ses.add_torrent(atp)
    while True:
        ses.wait_for_alert(50)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                print("lt_download: %s" % a.message(), file=sys.stderr, flush=True)
                os._exit(1)
        if h.status().is_seeding:
            break
    print("DONE %.3f" % (time.monotonic() - t0), flush=True)
    ses.remove_torrent(h)
    del ses  # waits for the 'stopped' announce (stop_tracker_timeout)
    os._exit(0)


if __name__ == "__main__":
    main()
