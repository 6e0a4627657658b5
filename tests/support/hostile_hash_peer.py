#!/usr/bin/python3
"""A scripted peer that serves a v2 torrent's metadata honestly, then misbehaves in the BEP 52
hash exchange, for bitrush's tests.

Usage: hostile_hash_peer.py MODE TORRENT

It listens on 127.0.0.1 (any free port) and prints `READY <port>` (flushed). For every
connection it answers the BitTorrent handshake (extension bit set) for TORRENT's info hash
(the v2 hash truncated to 20 bytes), sends an extension handshake offering ut_metadata, serves
every metadata piece asked for, and answers hash requests (message 21) according to MODE:

  bad-proof     a `hashes` message with the right number of hashes, all zero, so they do
                not prove up to the file's root
  reject        a `hash reject`
  out-of-range  a `hashes` message for the requested index plus 4096 (never asked for)

It prints one line per event on stdout: `CONN`, `HANDSHAKE <peer id hex>`, `HASH_REQUEST
<base> <index> <length> <proof layers>`, `SENT`. It never sends a bitfield or any payload. It
runs until its stdin reaches EOF.
"""

import struct
import sys

import libtorrent as lt
from peerwire import PROTOCOL, say, recv_exact, handshake, msg, serve_forever

OUR_UT_METADATA_ID = 3
PIECE = 16 * 1024
PEER_ID = b"-HH0001-hostilehash1"


def send_ext(sock, ext_id, body):
    sock.sendall(msg(20, bytes([ext_id]) + body))


def uncles(length, proof_layers):
    """How many uncle hashes follow `length` requested ones (libtorrent's count)."""
    k = length.bit_length() - 1
    return max(0, proof_layers + 1 - k)


def serve(conn, mode, info_hash, info):
    their_ut = None
    try:
        hs = recv_exact(conn, 68)
        if hs[:20] != PROTOCOL or hs[28:48] != info_hash:
            return
        say("HANDSHAKE %s" % hs[48:68].hex())
        conn.sendall(handshake(info_hash, PEER_ID, extensions=True))
        send_ext(
            conn,
            0,
            b"d1:md11:ut_metadatai%dee13:metadata_sizei%dee" % (OUR_UT_METADATA_ID, len(info)),
        )
        while True:
            (length,) = struct.unpack(">I", recv_exact(conn, 4))
            if length > 1 << 21:
                return
            body = recv_exact(conn, length) if length else b""
            if not body:
                continue
            if body[0] == 21 and len(body) == 49:
                root = body[1:33]
                base, index, count, proof = struct.unpack(">IIII", body[33:49])
                say("HASH_REQUEST %d %d %d %d" % (base, index, count, proof))
                if mode == "reject":
                    conn.sendall(msg(23, body[1:]))
                else:
                    if mode == "out-of-range":
                        index += 4096
                    header = root + struct.pack(">IIII", base, index, count, proof)
                    hashes = bytes(32 * (count + uncles(count, proof)))
                    conn.sendall(msg(22, header + hashes))
                say("SENT")
                continue
            if len(body) < 2 or body[0] != 20:
                continue
            ext_id, payload = body[1], body[2:]
            if ext_id == 0:
                d = lt.bdecode(payload) or {}
                their_ut = (d.get(b"m") or {}).get(b"ut_metadata")
                continue
            if ext_id != OUR_UT_METADATA_ID or not their_ut:
                continue
            d = lt.bdecode(payload) or {}
            piece = d.get(b"piece")
            if d.get(b"msg_type") != 0 or not isinstance(piece, int):
                continue
            chunk = info[piece * PIECE : (piece + 1) * PIECE]
            head = b"d8:msg_typei1e5:piecei%de10:total_sizei%dee" % (piece, len(info))
            send_ext(conn, their_ut, head + chunk)
    except (EOFError, OSError):
        pass


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("bad-proof", "reject", "out-of-range"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, torrent = sys.argv[1], sys.argv[2]
    ti = lt.torrent_info(torrent)
    info = bytes(ti.info_section())
    info_hash = bytes.fromhex(str(ti.info_hashes().v2))[:20]
    serve_forever(lambda conn: serve(conn, mode, info_hash, info))


if __name__ == "__main__":
    main()
