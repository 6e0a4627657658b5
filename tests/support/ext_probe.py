#!/usr/bin/python3
"""Reads a peer's extension handshake (BEP 10), independently of bitrush, for its tests.

Usage: ext_probe.py HOST:PORT INFO_HASH_HEX

Connects, sends a BitTorrent handshake with the extension bit and an extension handshake that
supports nothing, reads messages until the peer's extension handshake arrives (at most 30 s),
and prints it as one JSON line: {"m": {name: id, ...}, "metadata_size": n or null}. Exits 1 on
any failure.
"""

import json
import socket
import struct
import sys

import libtorrent as lt
from peerwire import recv_exact, handshake, msg


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    info_hash = bytes.fromhex(sys.argv[2])
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.settimeout(30)
    sock.sendall(handshake(info_hash, b"-PR0001-extprobe0001", extensions=True))
    hs = recv_exact(sock, 68)
    if not hs[25] & 0x10:
        print("error: peer does not support the extension protocol", file=sys.stderr)
        return 1
    sock.sendall(msg(20, b"\x00" + b"d1:mdee"))
    for _ in range(10000):
        (length,) = struct.unpack(">I", recv_exact(sock, 4))
        body = recv_exact(sock, length) if length else b""
        if len(body) >= 2 and body[0] == 20 and body[1] == 0:
            d = lt.bdecode(body[2:])
            m = {k.decode("latin-1"): v for k, v in (d.get(b"m") or {}).items()}
            print(json.dumps({"m": m, "metadata_size": d.get(b"metadata_size")}))
            return 0
    print("error: no extension handshake", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
