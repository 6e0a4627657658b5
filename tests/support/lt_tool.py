#!/usr/bin/python3
"""libtorrent-based helper for bitrush's integration tests.

Subcommands:
  info-hash FILE.torrent                 print the v1 info hash (40 lowercase hex)
  piece-hashes FILE.torrent              print one 40-hex SHA-1 per piece
  info-json FILE.torrent                 print name, sizes, hashes, trackers, files as JSON
  download TORRENT_OR_MAGNET SAVE_DIR    download with libtorrent; exit 0 when complete
  make-torrent PATH OUT --piece-length N --tracker URL
                                         create a torrent with lt.create_torrent

Everything binds 127.0.0.1 only; DHT, LSD, UPnP and NAT-PMP are off.
"""

import argparse
import json
import os
import sys
import threading
import time

import libtorrent as lt

from peerwire import exit_when_stdin_closes


def loopback_settings(port=0):
    return {
        "listen_interfaces": "127.0.0.1:%d" % port,
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        # TCP only: the other clients here (bitrush, aria2, scripted_peer.py)
        # do not speak uTP, and uTP-first would delay connecting to them.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Plaintext peer connections out (other clients need not speak MSE);
        # encrypted or plain ones accepted in.
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_enabled),
        "request_queue_time": 10,
        "max_out_request_queue": 5000,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification,
    }


def die_when_stdin_closes():
    """Exit the process (code 3) as soon as stdin reaches EOF (the parent test died)."""
    threading.Thread(target=exit_when_stdin_closes, args=(3,), daemon=True).start()


def hex_of(h):
    """Hex of a sha1_hash or of raw digest bytes (hash_for_piece returns bytes)."""
    if isinstance(h, (bytes, bytearray)):
        return bytes(h).hex()
    return str(h)


def cmd_info_hash(args):
    ti = lt.torrent_info(args.torrent)
    print(hex_of(ti.info_hash()))
    return 0


def cmd_piece_hashes(args):
    ti = lt.torrent_info(args.torrent)
    for i in range(ti.num_pieces()):
        print(hex_of(ti.hash_for_piece(i)))
    return 0


def cmd_info_json(args):
    ti = lt.torrent_info(args.torrent)
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        full = fs.file_path(i).replace(os.sep, "/")
        # path inside the torrent, without the torrent's name for multi-file torrents
        inner = full.split("/", 1)[1] if "/" in full else full
        files.append(
            {
                "path": inner,
                "full_path": full,
                "length": fs.file_size(i),
                "pad": bool(fs.file_flags(i) & lt.file_storage.flag_pad_file),
            }
        )
    out = {
        "name": ti.name(),
        "info_hash": hex_of(ti.info_hash()),
        "total_size": ti.total_size(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "piece_hashes": [hex_of(ti.hash_for_piece(i)) for i in range(ti.num_pieces())],
        "trackers": [t.url for t in ti.trackers()],
        "multi_file": fs.num_files() > 1 or "/" in fs.file_path(0).replace(os.sep, "/"),
        "files": files,
    }
    print(json.dumps(out))
    return 0


def cmd_download(args):
    if args.stdin_watch:
        die_when_stdin_closes()
    ses = lt.session(loopback_settings(args.port))
    os.makedirs(args.save_dir, exist_ok=True)
    if args.source.startswith("magnet:"):
        atp = lt.parse_magnet_uri(args.source)
    else:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(args.source)
    atp.save_path = args.save_dir
    h = ses.add_torrent(atp)
    for peer in args.peer or []:
        host, port = peer.rsplit(":", 1)
        h.connect_peer((host, int(port)))
    deadline = time.monotonic() + args.timeout
    last = None
    while time.monotonic() < deadline:
        st = h.status()
        if st.is_seeding or st.state == lt.torrent_status.seeding:
            if args.verbose:
                print("complete", file=sys.stderr, flush=True)
            return 0
        for a in ses.pop_alerts():
            if args.verbose or isinstance(a, lt.torrent_error_alert):
                print("alert: %s" % a.message(), file=sys.stderr, flush=True)
        if args.verbose:
            cur = (st.state, round(st.progress, 3), st.num_peers)
            if cur != last:
                print("status: %s" % (cur,), file=sys.stderr, flush=True)
                last = cur
        time.sleep(0.1)
    print("error: download did not complete within %ss" % args.timeout, file=sys.stderr)
    return 1


def cmd_make_torrent(args):
    fs = lt.file_storage()
    lt.add_files(fs, args.path)
    if fs.num_files() == 0:
        print("error: no files under %s" % args.path, file=sys.stderr)
        return 1
    flags = 0
    if args.v1_only:
        flags |= lt.create_torrent.v1_only
    ct = lt.create_torrent(fs, args.piece_length, flags=flags)
    for url in args.tracker or []:
        ct.add_tracker(url)
    if args.private:
        ct.set_priv(True)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(args.path)))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("info-hash")
    s.add_argument("torrent")
    s.set_defaults(func=cmd_info_hash)

    s = sub.add_parser("piece-hashes")
    s.add_argument("torrent")
    s.set_defaults(func=cmd_piece_hashes)

    s = sub.add_parser("info-json")
    s.add_argument("torrent")
    s.set_defaults(func=cmd_info_json)

    s = sub.add_parser("download")
    s.add_argument("source", help="a .torrent file or a magnet URI")
    s.add_argument("save_dir")
    s.add_argument("--port", type=int, default=0, help="listen port (0 = any free)")
    s.add_argument("--peer", action="append", help="extra peer ip:port to connect to")
    s.add_argument("--timeout", type=float, default=120.0)
    s.add_argument("--stdin-watch", action="store_true", help="exit when stdin closes")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("make-torrent")
    s.add_argument("path")
    s.add_argument("out")
    s.add_argument("--piece-length", type=int, required=True)
    s.add_argument("--tracker", action="append")
    s.add_argument("--private", action="store_true")
    s.add_argument("--v1-only", action="store_true", default=True)
    s.add_argument("--hybrid", dest="v1_only", action="store_false")
    s.set_defaults(func=cmd_make_torrent)

    args = p.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
