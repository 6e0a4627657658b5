#!/usr/bin/python3
"""A libtorrent peer that insists on Message Stream Encryption, for bitrush's MSE interop tests.

Usage: lt_mse_peer.py SAVE_DIR TORRENT [--seed] [--connect PORT]

Listens on 127.0.0.1 (any free port) with out_enc_policy and in_enc_policy forced and RC4 as the
only allowed level, adds TORRENT with SAVE_DIR (--seed: the data is there, skip the check), and
with --connect makes libtorrent connect to 127.0.0.1:PORT. Prints `READY <port>` once listening
and the torrent is added (and seeding, with --seed), logs error alerts to stderr, and exits when stdin reaches EOF
(so it dies with the test that started it). DHT, LSD, UPnP, NAT-PMP and uTP are off.
"""

import argparse
import os
import sys
import threading
import time

import libtorrent as lt


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
        "alert_mask": lt.alert.category_t.error_notification,
    })
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save_dir
    # Started at once: a paused (auto-managed) torrent refuses incoming connections.
    atp.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if args.seed:
        atp.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(atp)

    # A seeder must be seeding before a peer can name its torrent in MSE.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ses.listen_port() and (not args.seed or handle.status().is_seeding):
            break
        time.sleep(0.02)
    else:
        print("lt_mse_peer: not ready in time", file=sys.stderr, flush=True)
        sys.exit(1)
    if args.connect:
        handle.connect_peer(("127.0.0.1", args.connect))
    print("READY %d" % ses.listen_port(), flush=True)

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
