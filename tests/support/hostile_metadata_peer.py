#!/usr/bin/python3
"""A scripted peer that misbehaves in the metadata exchange (BEP 9), for bitrush's tests.

Usage: hostile_metadata_peer.py MODE TORRENT

It listens on 127.0.0.1 (any free port) and prints `READY <port>` (flushed). For every
connection it answers the BitTorrent handshake (extension bit set) for TORRENT's info hash,
sends an extension handshake (BEP 10) with binary values in it (a non-UTF-8 `v`, a raw
`yourip`), then answers ut_metadata requests according to MODE:

  wrong-hash  announces the real metadata_size and sends pieces of the right length whose
              bytes are all flipped, so the assembled metadata fails the SHA-1 check
  huge-size   announces an absurd metadata_size (2^40) and answers any request with pieces
              claiming that total_size
  bad-piece   announces the real metadata_size and answers every request with an
              out-of-range piece number (requested + 100000)

It prints one line per event on stdout: `CONN`, `HANDSHAKE <peer id hex>`,
`EXT_HANDSHAKE`, `REQUEST <piece>`, `SENT <piece>`. It never sends a bitfield or any piece of
the payload. It runs until its stdin reaches EOF (the test that started it died or finished).
The torrent's info dictionary is taken from libtorrent (`torrent_info.info_section()`).
"""

import struct
import sys

import libtorrent as lt
from peerwire import PROTOCOL, say, recv_exact, handshake, msg, serve_forever

OUR_UT_METADATA_ID = 3
PIECE = 16 * 1024
PEER_ID = b"-HM0001-hostilepeer1"


def bstr(b):
    return str(len(b)).encode() + b":" + b


def send_ext(sock, ext_id, body):
    sock.sendall(msg(20, bytes([ext_id]) + body))


def ext_handshake(metadata_size):
    # Keys in sorted order, as bencode wants. `v` is not UTF-8; `yourip` is 4 raw bytes.
    return (
        b"d1:md11:ut_metadatai%de6:ut_pexi9ee" % OUR_UT_METADATA_ID
        + b"13:metadata_sizei%de" % metadata_size
        + b"4:reqqi250e"
        + b"1:v"
        + bstr(b"Hostile\xff\xfe\x80/1.0")
        + b"6:yourip"
        + bstr(b"\x7f\x00\x00\x01")
        + b"e"
    )


def data_msg(piece, total_size, data):
    head = b"d8:msg_typei1e5:piecei%de10:total_sizei%dee" % (piece, total_size)
    return head + data


def serve(conn, mode, info_hash, info):
    real_size = len(info)
    announced = 1 << 40 if mode == "huge-size" else real_size
    their_ut = None
    try:
        hs = recv_exact(conn, 68)
        if hs[:20] != PROTOCOL or hs[28:48] != info_hash:
            return
        say("HANDSHAKE %s" % hs[48:68].hex())
        conn.sendall(handshake(info_hash, PEER_ID, extensions=True))
        send_ext(conn, 0, ext_handshake(announced))
        while True:
            (length,) = struct.unpack(">I", recv_exact(conn, 4))
            if length > 1 << 21:
                return
            body = recv_exact(conn, length) if length else b""
            if len(body) < 2 or body[0] != 20:
                continue
            ext_id, payload = body[1], body[2:]
            if ext_id == 0:
                d = lt.bdecode(payload) or {}
                m = d.get(b"m") or {}
                their_ut = m.get(b"ut_metadata")
                say("EXT_HANDSHAKE")
                continue
            if ext_id != OUR_UT_METADATA_ID or not their_ut:
                continue
            d = lt.bdecode(payload) or {}
            if d.get(b"msg_type") != 0:
                continue
            piece = d.get(b"piece")
            if not isinstance(piece, int):
                continue
            say("REQUEST %d" % piece)
            start = piece * PIECE
            chunk = info[start : start + PIECE]
            if mode == "wrong-hash":
                if not chunk:
                    continue
                send_ext(conn, their_ut, data_msg(piece, real_size, bytes(b ^ 0xFF for b in chunk)))
            elif mode == "huge-size":
                send_ext(conn, their_ut, data_msg(piece, announced, chunk or b"x"))
            elif mode == "bad-piece":
                send_ext(conn, their_ut, data_msg(piece + 100000, real_size, chunk or b"x"))
            say("SENT %d" % piece)
    except (EOFError, OSError):
        pass


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("wrong-hash", "huge-size", "bad-piece"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, torrent = sys.argv[1], sys.argv[2]
    ti = lt.torrent_info(torrent)
    info = bytes(ti.info_section())
    info_hash = bytes.fromhex(str(ti.info_hash()))
    serve_forever(lambda conn: serve(conn, mode, info_hash, info))


if __name__ == "__main__":
    main()
