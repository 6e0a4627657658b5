#!/usr/bin/python3
"""libtorrent-based helper for bitrush's integration tests.

Subcommands:
  info-hash FILE.torrent                 print the v1 info hash (40 lowercase hex)
  piece-hashes FILE.torrent              print one 40-hex SHA-1 per piece
  info-json FILE.torrent                 print name, sizes, hashes (v1 and v2), trackers,
                                         files (with pad, attributes, symlink, root) as JSON
  download TORRENT_OR_MAGNET SAVE_DIR    download with libtorrent; exit 0 when complete
  check FILE.torrent SAVE_DIR            hash the data in SAVE_DIR; print "<good> <pieces>",
                                         exit 0 when every piece verifies
  make-torrent PATH OUT --piece-length N --tracker URL [--version v1|v2|hybrid|v1-padded]
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


# The states in which libtorrent 2.0 attaches a peer to a torrent (torrent::attach_peer). A
# torrent added in seed mode reports is_seeding at once, while still checking its resume data:
# a peer connecting then is dropped ("torrent is not ready to accept peers"). Helpers say READY
# only once this holds.
ACCEPTS_PEERS = (
    lt.torrent_status.downloading,
    lt.torrent_status.finished,
    lt.torrent_status.seeding,
)


def seeding_and_accepting(status):
    """Whether a torrent seeds and takes peers (see ACCEPTS_PEERS)."""
    return status.is_seeding and status.state in ACCEPTS_PEERS


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


def add_transport_args(parser):
    """--transport and --encryption, read by transport_settings."""
    parser.add_argument(
        "--transport",
        choices=["tcp", "utp", "both"],
        default="tcp",
        help="peer transports in and out (utp: libtorrent's enable_*_tcp off)",
    )
    parser.add_argument(
        "--encryption",
        choices=["default", "forced", "plaintext"],
        default="default",
        help="default: plain out, both in; forced: RC4 only both ways; plaintext: never MSE",
    )


def transport_settings(args):
    """Settings overriding loopback_settings for --transport and --encryption."""
    tcp = args.transport in ("tcp", "both")
    utp = args.transport in ("utp", "both")
    s = {
        "enable_outgoing_tcp": tcp,
        "enable_incoming_tcp": tcp,
        "enable_outgoing_utp": utp,
        "enable_incoming_utp": utp,
    }
    if args.encryption == "forced":
        s.update({
            "out_enc_policy": int(lt.enc_policy.pe_forced),
            "in_enc_policy": int(lt.enc_policy.pe_forced),
            "allowed_enc_level": int(lt.enc_level.pe_rc4),
            "prefer_rc4": True,
        })
    elif args.encryption == "plaintext":
        s.update({
            "out_enc_policy": int(lt.enc_policy.pe_disabled),
            "in_enc_policy": int(lt.enc_policy.pe_disabled),
        })
    return s


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


def v2_piece_hashes(ti, path):
    """The v2 piece hashes file by file (a file's piece layer from the torrent's `piece
    layers`, or its root for a file of one piece), or [] for a v1 torrent."""
    if not ti.info_hashes().has_v2():
        return []
    with open(path, "rb") as f:
        top = lt.bdecode(f.read()) or {}
    layers = top.get(b"piece layers", {})
    fs = ti.files()
    out = []
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file or fs.file_size(i) == 0:
            continue
        root = fs.root(i)
        if root.is_all_zeros():
            continue
        if fs.file_size(i) <= ti.piece_length():
            out.append(root.to_bytes().hex())
        else:
            layer = layers.get(root.to_bytes(), b"")
            out.extend(layer[k:k + 32].hex() for k in range(0, len(layer), 32))
    return out


def cmd_info_json(args):
    ti = lt.torrent_info(args.torrent)
    hashes = ti.info_hashes()
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        full = fs.file_path(i).replace(os.sep, "/")
        # path inside the torrent, without the torrent's name for multi-file torrents
        inner = full.split("/", 1)[1] if "/" in full else full
        flags = fs.file_flags(i)
        root = fs.root(i)
        files.append(
            {
                "path": inner,
                "full_path": full,
                "length": fs.file_size(i),
                "pad": bool(flags & lt.file_storage.flag_pad_file),
                "executable": bool(flags & lt.file_storage.flag_executable),
                "hidden": bool(flags & lt.file_storage.flag_hidden),
                "symlink": fs.symlink(i) if flags & lt.file_storage.flag_symlink else None,
                "root": None if root.is_all_zeros() else root.to_bytes().hex(),
            }
        )
    real = [f for f in files if not f["pad"]]
    out = {
        "name": ti.name(),
        "info_hash": hex_of(ti.info_hash()),
        "info_hash_v1": hex_of(hashes.v1) if hashes.has_v1() else None,
        "info_hash_v2": hex_of(hashes.v2) if hashes.has_v2() else None,
        "total_size": ti.total_size(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "piece_hashes": [hex_of(ti.hash_for_piece(i)) for i in range(ti.num_pieces())]
        if hashes.has_v1()
        else [],
        "piece_hashes_v2": v2_piece_hashes(ti, args.torrent),
        "trackers": [t.url for t in ti.trackers()],
        "multi_file": len(real) > 1 or "/" in real[0]["full_path"],
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


def cmd_check(args):
    """Checks the data in SAVE_DIR against the torrent (v1 and v2 hashes, whichever it has)."""
    settings = loopback_settings()
    settings["alert_mask"] = lt.alert.category_t.all_categories
    ses = lt.session(settings)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(args.torrent)
    atp.save_path = args.save_dir
    # Never download or change anything: only hash what is there.
    atp.flags = lt.torrent_flags.upload_mode
    h = ses.add_torrent(atp)
    deadline = time.monotonic() + args.timeout
    checked = False
    while not checked and time.monotonic() < deadline:
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
            elif isinstance(a, (lt.torrent_error_alert, lt.hash_failed_alert)):
                print("alert: %s" % a.message(), file=sys.stderr, flush=True)
        time.sleep(0.05)
    st = h.status()
    print("%d %d" % (st.num_pieces, atp.ti.num_pieces()))
    return 0 if checked and st.num_pieces == atp.ti.num_pieces() else 1


def cmd_make_torrent(args):
    fs = lt.file_storage()
    lt.add_files(fs, args.path)
    if fs.num_files() == 0:
        print("error: no files under %s" % args.path, file=sys.stderr)
        return 1
    flags = {
        "v1": lt.create_torrent.v1_only,
        "v2": lt.create_torrent.v2_only,
        "hybrid": 0,
        # v1 with BEP 47 pad files, as libtorrent lays out a hybrid.
        "v1-padded": lt.create_torrent.v1_only | lt.create_torrent.canonical_files,
    }[args.version]
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

    s = sub.add_parser("check")
    s.add_argument("torrent")
    s.add_argument("save_dir")
    s.add_argument("--timeout", type=float, default=60.0)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("make-torrent")
    s.add_argument("path")
    s.add_argument("out")
    s.add_argument("--piece-length", type=int, required=True)
    s.add_argument("--tracker", action="append")
    s.add_argument("--private", action="store_true")
    s.add_argument("--version", choices=["v1", "v2", "hybrid", "v1-padded"], default="v1",
                   help="what to make (libtorrent's default is hybrid; 0 as piece length is auto)")
    s.set_defaults(func=cmd_make_torrent)

    args = p.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
