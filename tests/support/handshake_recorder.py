#!/usr/bin/python3
"""A peer that records the handshake it is sent, for bitrush's tests.

Usage: handshake_recorder.py INFO_HASH_HEX

Listens on 127.0.0.1 (any free port) and prints `READY <port>`. For every accepted connection
it prints `CONN`, reads the 68-byte handshake and prints `HANDSHAKE <136 hex digits>`, answers
with its own handshake (extension bit set) for INFO_HASH_HEX and an extension handshake that
offers ut_metadata as id 3, then reads until the other side closes. Exits when stdin reaches
EOF (the test went away).
"""

import sys

from peerwire import say, recv_exact, handshake, msg, serve_forever

PEER_ID = b"-HR0001-recorder0001"


def main():
    info_hash = bytes.fromhex(sys.argv[1])

    def handler(conn):
        try:
            theirs = recv_exact(conn, 68)
            say("HANDSHAKE " + theirs.hex())
            conn.sendall(handshake(info_hash, PEER_ID, extensions=True))
            conn.sendall(msg(20, b"\x00" + b"d1:md11:ut_metadatai3ee13:metadata_sizei1000ee"))
            while conn.recv(65536):
                pass
        except (EOFError, OSError):
            pass

    serve_forever(handler)


if __name__ == "__main__":
    main()
