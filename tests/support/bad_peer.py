#!/usr/bin/python3
"""A misbehaving BitTorrent peer on 127.0.0.1, for robustness tests.

Usage: bad_peer.py [--port P] --mode MODE TORRENT SAVE_DIR

Serves a single-file torrent whose data lies at SAVE_DIR/<name>, but:
  corrupt         speaks the protocol correctly (handshake, full bitfield,
                  unchoke) and answers every request with the right block
                  with one byte flipped, so every piece fails its hash check
  garbage         answers the handshake with random bytes
  wrong-infohash  answers with a handshake for another info hash

Prints `READY <port>` (flushed) once listening; prints `SERVED <n>` to
stdout each time it has sent n corrupt blocks (corrupt mode) and `CONN` per
accepted connection. Exits when stdin reaches EOF (the test went away).
"""

import argparse
import hashlib
import os
import struct
import sys
import threading

import libtorrent as lt
from peerwire import say, recv_exact, serve_forever

PEER_ID = b"-BAD001-" + b"0123456789ab"
lock = threading.Lock()
served = 0


def serve(conn, args, info_hash, data, piece_length, num_pieces):
    global served
    try:
        hs = recv_exact(conn, 68)
        if hs[0] != 19 or hs[1:20] != b"BitTorrent protocol" or hs[28:48] != info_hash:
            return
        if args.mode == "garbage":
            conn.sendall(os.urandom(68))
            # keep the connection open a little so the client sees the garbage
            conn.recv(1)
            return
        if args.mode == "wrong-infohash":
            other = hashlib.sha1(b"not the torrent you asked for").digest()
            conn.sendall(bytes([19]) + b"BitTorrent protocol" + bytes(8) + other + PEER_ID)
            conn.recv(1)
            return
        conn.sendall(bytes([19]) + b"BitTorrent protocol" + bytes(8) + info_hash + PEER_ID)
        bitfield = bytearray((num_pieces + 7) // 8)
        for i in range(num_pieces):
            bitfield[i // 8] |= 0x80 >> (i % 8)
        conn.sendall(struct.pack(">IB", 1 + len(bitfield), 5) + bytes(bitfield))
        conn.sendall(struct.pack(">IB", 1, 1))  # unchoke
        while True:
            (length,) = struct.unpack(">I", recv_exact(conn, 4))
            if length == 0:
                continue  # keep-alive
            if length > 1 << 20:
                return
            msg = recv_exact(conn, length)
            if msg[0] == 6 and length == 13:  # request
                index, begin, blen = struct.unpack(">III", msg[1:13])
                if index >= num_pieces or blen > 1 << 17:
                    return
                start = index * piece_length + begin
                block = bytearray(data[start : start + blen])
                if block:
                    block[len(block) // 2] ^= 0xFF
                conn.sendall(struct.pack(">IBII", 9 + len(block), 7, index, begin) + bytes(block))
                with lock:
                    served += 1
                    n = served
                say("SERVED %d" % n)
    except (EOFError, OSError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=["corrupt", "garbage", "wrong-infohash"], required=True)
    args = p.parse_args()

    ti = lt.torrent_info(args.torrent)
    fs = ti.files()
    if fs.num_files() != 1 or "/" in fs.file_path(0).replace(os.sep, "/"):
        print("bad_peer.py serves single-file torrents only", file=sys.stderr)
        sys.exit(2)
    info_hash = bytes.fromhex(str(ti.info_hash()))
    with open(os.path.join(args.save_dir, fs.file_path(0)), "rb") as f:
        data = f.read()

    serve_forever(
        lambda conn: serve(conn, args, info_hash, data, ti.piece_length(), ti.num_pieces()),
        args.port,
    )


if __name__ == "__main__":
    main()
