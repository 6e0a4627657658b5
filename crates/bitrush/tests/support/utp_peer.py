#!/usr/bin/python3
"""libtorrent peers that speak uTP only (TCP off both ways), for bitrush's uTP interop tests.

Subcommands (everything on 127.0.0.1; DHT, LSD, UPnP and NAT-PMP off):
  seed SAVE_DIR TORRENT
      Seeds the torrent (its data is in SAVE_DIR). Prints `READY <port>` once seeding.
  leech SAVE_DIR TORRENT PEER_PORT
      Downloads the torrent from 127.0.0.1:PEER_PORT (connect_peer) into SAVE_DIR. Prints
      `CONNECTED` once a peer is connected and `DONE` once the download is complete.
  lt2lt SAVE_DIR TORRENT DEST_DIR [SEEDERS]
      Seeds from SAVE_DIR in SEEDERS sessions (default 1) and downloads into DEST_DIR in
      another, all uTP only; prints `SECONDS <wall time of the download>`.

Every subcommand exits as soon as its stdin reaches EOF (the test that started it is over);
lt2lt exits by itself once done.
"""

import os
import sys
import threading
import time

import libtorrent as lt


def exit_when_stdin_closes():
    def watch():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:
            pass
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def report_errors(ses, who):
    for a in ses.pop_alerts():
        if a.category() & lt.alert.category_t.error_notification:
            print("%s: %s" % (who, a.message()), file=sys.stderr, flush=True)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def utp_only_settings(seeder):
    base = lt.high_performance_seed() if seeder else lt.default_settings()
    base.update(
        {
            "listen_interfaces": "127.0.0.1:0",
            "outgoing_interfaces": "127.0.0.1",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "allow_multiple_connections_per_ip": True,
            "enable_outgoing_tcp": False,
            "enable_incoming_tcp": False,
            "enable_outgoing_utp": True,
            "enable_incoming_utp": True,
            "out_enc_policy": int(lt.enc_policy.pe_disabled),
            "in_enc_policy": int(lt.enc_policy.pe_enabled),
            "alert_mask": lt.alert.category_t.error_notification,
        }
    )
    return base


def add(ses, torrent, save_dir, seed_mode=False):
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = save_dir
    if seed_mode:
        atp.flags |= lt.torrent_flags.seed_mode
    return ses.add_torrent(atp)


def wait_seeding(h, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if h.status().is_seeding:
            return True
        time.sleep(0.02)
    return False


def listen_port(ses, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = ses.listen_port()
        if port:
            return port
        time.sleep(0.02)
    raise SystemExit("error: no listen port")


def cmd_seed(save_dir, torrent):
    ses = lt.session(utp_only_settings(seeder=True))
    h = add(ses, torrent, save_dir)
    if not wait_seeding(h, 120):
        raise SystemExit("error: not seeding (data missing?)")
    say("READY %d" % listen_port(ses))
    while True:
        report_errors(ses, "seed")
        time.sleep(0.2)


def cmd_leech(save_dir, torrent, peer_port):
    ses = lt.session(utp_only_settings(seeder=False))
    h = add(ses, torrent, save_dir)
    h.connect_peer(("127.0.0.1", int(peer_port)))
    connected = False
    while True:
        if not connected and h.get_peer_info():
            connected = True
            say("CONNECTED")
        if h.status().is_seeding:
            say("DONE")
            break
        report_errors(ses, "leech")
        time.sleep(0.02)
    while True:
        time.sleep(1)


def cmd_lt2lt(save_dir, torrent, dest_dir, seeders="1"):
    sessions = []
    ports = []
    for _ in range(int(seeders)):
        ses = lt.session(utp_only_settings(seeder=True))
        if not wait_seeding(add(ses, torrent, save_dir), 300):
            raise SystemExit("error: not seeding")
        sessions.append(ses)
        ports.append(listen_port(ses))
    leecher = lt.session(utp_only_settings(seeder=False))
    lh = add(leecher, torrent, dest_dir)
    start = time.monotonic()
    for port in ports:
        lh.connect_peer(("127.0.0.1", port))
    while not lh.status().is_seeding:
        time.sleep(0.005)
    say("SECONDS %.3f" % (time.monotonic() - start))
    os._exit(0)


def main():
    exit_when_stdin_closes()
    cmd, args = sys.argv[1], sys.argv[2:]
    {"seed": cmd_seed, "leech": cmd_leech, "lt2lt": cmd_lt2lt}[cmd](*args)


if __name__ == "__main__":
    main()
