#!/usr/bin/python3
"""A libtorrent peer that insists on Message Stream Encryption, for bitrush's MSE interop tests.

Usage: lt_mse_peer.py SAVE_DIR TORRENT [--seed] [--connect PORT]

Listens on 127.0.0.1 (any free port) with out_enc_policy and in_enc_policy forced and RC4 as the
only allowed level, adds TORRENT with SAVE_DIR (--seed: the data is there, skip the check), and
with --connect makes libtorrent connect to 127.0.0.1:PORT. Prints `READY <port> <state>` once
listening and the torrent accepts peers (and is seeding, with --seed), logs error alerts to
stderr, and exits when stdin reaches EOF (so it dies with the test that started it). DHT, LSD,
UPnP, NAT-PMP and uTP are off. With BITRUSH_LT_PEER_LOG=1 in the environment it also logs
libtorrent's peer log (each connection's steps, MSE included, and why it was closed) to stderr.

"Accepts peers" is libtorrent 2.0's own test in torrent::attach_peer: the state must be
downloading, finished or seeding. Until then (checking_resume_data, checking_files) an incoming
connection is dropped with "torrent is not ready to accept peers" right after its MSE handshake.
`is_seeding` is not enough: in seed mode it is true from the moment the torrent is added, while the
resume check still runs.
"""

import argparse
import os
import sys
import threading
import time

import libtorrent as lt

PEER_LOG = os.environ.get("BITRUSH_LT_PEER_LOG") == "1"
# The states in which libtorrent 2.0 attaches an incoming peer to the torrent.
ACCEPTS_PEERS = (
    lt.torrent_status.downloading,
    lt.torrent_status.finished,
    lt.torrent_status.seeding,
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("save_dir")
    p.add_argument("torrent")
    p.add_argument("--seed", action="store_true")
    p.add_argument("--connect", type=int, default=0)
    args = p.parse_args()

    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "out_enc_policy": int(lt.enc_policy.forced),
        "in_enc_policy": int(lt.enc_policy.forced),
        "allowed_enc_level": int(lt.enc_level.rc4),
        "alert_mask": lt.alert.category_t.error_notification
        | (lt.alert.category_t.peer_log_notification if PEER_LOG else 0),
    })
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save_dir
    # Started at once: a paused (auto-managed) torrent refuses incoming connections.
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if args.seed:
        atp.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(atp)

    # A peer that connects before the torrent accepts peers completes MSE and is then dropped.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = handle.status()
        if ses.listen_port() and st.state in ACCEPTS_PEERS and (not args.seed or st.is_seeding):
            break
        time.sleep(0.02)
    else:
        print("lt_mse_peer: not ready in time (state %s)" % st.state, file=sys.stderr, flush=True)
        sys.exit(1)
    if args.connect:
        handle.connect_peer(("127.0.0.1", args.connect))
    print("READY %d %s" % (ses.listen_port(), st.state), flush=True)

    stop = threading.Event()

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.is_set():
        for a in ses.pop_alerts():
            print("lt_mse_peer alert: %s" % a.message(), file=sys.stderr, flush=True)
        stop.wait(0.1)
    os._exit(0)


if __name__ == "__main__":
    main()
