#!/usr/bin/python3
"""libtorrent swarms where some peers can only be found through peer exchange (BEP 11), for
tests/pex.rs. Everything on 127.0.0.1, TCP, plaintext, no DHT/LSD/UPnP/NAT-PMP.

  lt_pex.py hidden TORRENT SAVE_DIR --hidden N --announcer-rate BPS
      An announcing leecher A (announces to the torrent's tracker, downloads at most BPS
      bytes/s into a folder of its own, so it stays a leecher and keeps its peers: libtorrent
      drops seed-to-seed connections) and N hidden seeders of SAVE_DIR that never announce and
      connect to A, so only A (and its peer exchange) knows them. Prints
      `READY A_PORT HIDDEN_PORT...`; then, for each `stats` line on stdin, `UPLOADED PORT
      BYTES` per session and `END`.

  lt_pex.py learner TORRENT DIR --peer IP:PORT
      Two slow leechers (downloading at 32 KiB/s, so they stay in the swarm) that both connect
      to IP:PORT only: L never learns of S from anyone but that peer's peer exchange. Prints
      `READY S_PORT`, then `SAW_HIDDEN` once L is connected to S.

Exits as soon as stdin closes.
"""

import argparse
import os
import sys
import threading
import time

import libtorrent as lt

from lt_tool import ACCEPTS_PEERS, loopback_settings, seeding_and_accepting
from peerwire import exit_when_stdin_closes, say


def session(download_rate=0):
    s = loopback_settings(0)
    s.update({
        "download_rate_limit": download_rate,
        "ignore_limits_on_local_network": False,
        "announce_ip": "127.0.0.1",
        "alert_mask": lt.alert.category_t.error_notification,
    })
    return lt.session(s)


def add(ses, torrent, save_dir, announce, seed):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_dir
    if seed:
        atp.flags |= lt.torrent_flags.seed_mode
    if not announce:
        atp.flags |= lt.torrent_flags.override_trackers
        atp.trackers = []
    return ses.add_torrent(atp)


def wait_ready(handles, timeout=90):
    deadline = time.monotonic() + timeout
    while not all(seeding_and_accepting(h.status()) for h in handles):
        if time.monotonic() > deadline:
            say("ERROR seeders not ready")
            os._exit(1)
        time.sleep(0.05)


def hidden(args):
    a_ses = session(args.announcer_rate)
    a = add(a_ses, args.torrent, os.path.join(args.save_dir, "announcer"), True, False)
    sessions = [session() for _ in range(args.hidden)]
    hs = [add(s, args.torrent, args.save_dir, False, True) for s in sessions]
    wait_ready(hs)
    # A must take peers before it dials (a torrent still checking drops its connections).
    deadline = time.monotonic() + 60
    while a.status().state not in ACCEPTS_PEERS:
        if time.monotonic() > deadline:
            say("ERROR the announcer never got ready")
            os._exit(1)
        time.sleep(0.05)
    # The hidden seeders dial A (their extension handshakes tell it their listening ports,
    # which its peer exchange passes on).
    for h in hs:
        h.connect_peer(("127.0.0.1", a_ses.listen_port()))
    # A announces once it is connected to every hidden seeder (generous: CI machines are slow).
    deadline = time.monotonic() + 60
    while sum(1 for p in a.get_peer_info() if p.seed) < len(hs):
        if time.monotonic() > deadline:
            say("ERROR the announcer did not reach the hidden seeders (its peers: %s; theirs: %s)"
                % ([(p.ip, p.seed) for p in a.get_peer_info()],
                   [(str(h.status().state), h.status().num_peers) for h in hs]))
            os._exit(1)
        time.sleep(0.05)
    a.force_reannounce()
    say("READY %d %s" % (a_ses.listen_port(), " ".join(str(s.listen_port()) for s in sessions)))
    all_ = [(a_ses, a)] + list(zip(sessions, hs))
    for line in sys.stdin:
        if line.strip() == "stats":
            for s, h in all_:
                say("UPLOADED %d %d" % (s.listen_port(), h.status().total_payload_upload))
            say("END")
    os._exit(0)


def learner(args):
    host, port = args.peer.rsplit(":", 1)
    target = (host, int(port))
    s_ses, l_ses = session(32 * 1024), session(32 * 1024)
    s = add(s_ses, args.torrent, os.path.join(args.dir, "s"), False, False)
    leech = add(l_ses, args.torrent, os.path.join(args.dir, "l"), False, False)
    s.connect_peer(target)
    leech.connect_peer(target)
    hidden_port = s_ses.listen_port()
    say("READY %d" % hidden_port)
    deadline = time.monotonic() + 100
    while time.monotonic() < deadline:
        if any(p.ip[1] == hidden_port for p in leech.get_peer_info()):
            say("SAW_HIDDEN")
            break
        time.sleep(0.05)
    threading.Event().wait()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    h = sub.add_parser("hidden")
    h.add_argument("torrent")
    h.add_argument("save_dir")
    h.add_argument("--hidden", type=int, default=2)
    h.add_argument("--announcer-rate", type=int, default=16 * 1024)
    lr = sub.add_parser("learner")
    lr.add_argument("torrent")
    lr.add_argument("dir")
    lr.add_argument("--peer", required=True)
    args = p.parse_args()
    if args.role == "learner":
        threading.Thread(target=exit_when_stdin_closes, args=(3,), daemon=True).start()
        learner(args)
    else:
        hidden(args)


if __name__ == "__main__":
    main()
