#!/usr/bin/python3
"""A scripted BitTorrent peer on 127.0.0.1 (honest or hostile), for bitrush's tests.

Usage: scripted_peer.py --mode MODE TORRENT SAVE_DIR

Serves a single-file torrent whose data lies at SAVE_DIR/<name>. It listens on
127.0.0.1 (any free port), prints `READY <port>` (flushed), and for every
accepted connection reads the peer's handshake and then behaves as MODE says:

  honest          correct handshake, full bitfield, unchoke, and the right
                  block for every valid request
  oversized       handshake and bitfield, then a frame whose length prefix is
                  0xFFFFFFF0 followed by a trickle of body bytes
  bad-bitfield    handshake, then a bitfield one byte longer than the torrent
                  needs
  spare-bits      handshake, then a bitfield of the right length with every
                  bit set, the spare bits after the last piece included
                  (needs a piece count that is not a multiple of 8)
  have-range      handshake, full bitfield, unchoke, then `have` for piece
                  number <piece count> (one past the last)
  wrong-infohash  a handshake for another info hash
  garbage         68 random bytes where its handshake should be
  unrequested     handshake, full bitfield, then (still choking) a `piece`
                  message with wrong bytes for every block of the torrent,
                  none of them requested; then unchoke and serve honestly
  choke-data      honest, except that the first batch of requests is answered
                  with `choke` followed by wrong bytes for those requests;
                  after 0.5 s it unchokes again and serves honestly
  stall           handshake, full bitfield, unchoke, then reads requests
                  forever and never answers one
  corrupt         handshake, full bitfield, unchoke, and every requested
                  block with some bytes flipped (every piece fails its hash)
  corrupt-first   honest, but the first block it sends has bytes flipped; it
                  answers every BEP 52 hash request with a hash reject, 2 s late
                  (so the block hashes that expose it must come from another
                  peer, which has connected by then)

A v2-only torrent is served under its v2 info hash (truncated to 20 bytes).

With --connect HOST:PORT --cycles N it does not listen: it dials HOST:PORT N
times in a row, sends its handshake first, and behaves as MODE on each
connection until the other side closes it; it prints `CYCLE <k>` after each
one, or `REFUSED <k>` (and stops) if a connection is closed before the
handshake is answered, then `DONE`.

Events on stdout, one per line (flushed): `CONN` per accepted connection,
`HANDSHAKE` once the peer's handshake (for our info hash) was read,
`VIOLATION` once the hostile message went out, `HASH_REQUEST` per hash request
read, `CLOSED` when the remote side
closed or reset the connection, `REQUEST <index> <begin> <length>` per request
read, `SERVED <index> <begin> <length>` per correct block sent, `BOGUS <n>`
after sending n wrong blocks (`BOGUS 1` per block in corrupt mode). Exits when stdin reaches EOF (the test went
away).
"""

import argparse
import hashlib
import os
import socket
import struct
import sys
import threading
import time

import libtorrent as lt
from peerwire import PROTOCOL, say, recv_exact, handshake, msg, exit_when_stdin_closes, serve_forever

PEER_ID = b"-SP0001-scriptedpeer"
BLOCK = 16 * 1024
MODES = [
    "honest",
    "oversized",
    "bad-bitfield",
    "spare-bits",
    "have-range",
    "wrong-infohash",
    "garbage",
    "unrequested",
    "choke-data",
    "stall",
    "corrupt",
    "corrupt-first",
]



def piece_msg(index, begin, block):
    return struct.pack(">IBII", 9 + len(block), 7, index, begin) + block


def full_bitfield(num_pieces, spare=False):
    bf = bytearray((num_pieces + 7) // 8)
    for i in range(num_pieces):
        bf[i // 8] |= 0x80 >> (i % 8)
    if spare:
        for i in range(len(bf)):
            bf[i] = 0xFF
    return bytes(bf)


def flipped(block):
    b = bytearray(block)
    for i in range(0, len(b), 997):
        b[i] ^= 0x5A
    if b:
        b[-1] ^= 0xFF
    return bytes(b)


class Torrent:
    def __init__(self, path, save_dir):
        ti = lt.torrent_info(path)
        fs = ti.files()
        # A v2 torrent's one file may be followed by a pad file up to a whole piece.
        pad = lt.file_storage.flag_pad_file
        real = [i for i in range(fs.num_files()) if not fs.file_flags(i) & pad]
        if real != [0] or "/" in fs.file_path(0).replace(os.sep, "/"):
            print("scripted_peer.py serves single-file torrents only", file=sys.stderr)
            sys.exit(2)
        hashes = ti.info_hashes()
        if hashes.has_v1():
            self.info_hash = bytes.fromhex(str(hashes.v1))
        else:
            self.info_hash = bytes.fromhex(str(hashes.v2))[:20]
        self.piece_length = ti.piece_length()
        self.num_pieces = ti.num_pieces()
        with open(os.path.join(save_dir, fs.file_path(0)), "rb") as f:
            self.data = f.read()
        self.data += bytes(ti.total_size() - len(self.data))

    def piece_len(self, index):
        start = index * self.piece_length
        return max(0, min(self.piece_length, len(self.data) - start))

    def block(self, index, begin, length):
        start = index * self.piece_length + begin
        return self.data[start : start + length]

    def valid(self, index, begin, length):
        return (
            index < self.num_pieces
            and 0 < length <= 1 << 17
            and begin + length <= self.piece_len(index)
        )


def wait_for_close(conn):
    """Reads (and discards) until the remote side closes; then says CLOSED."""
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    say("CLOSED")


def serve(conn, mode, t):
    try:
        hs = recv_exact(conn, 68)
        if hs[:20] != PROTOCOL or hs[28:48] != t.info_hash:
            return
        say("HANDSHAKE")
        behave(conn, mode, t)
    except (EOFError, OSError):
        say("CLOSED")


def behave(conn, mode, t, send_handshake=True):
    """Everything after the peer's handshake was read; may raise EOFError/OSError."""
    if mode == "wrong-infohash":
        other = hashlib.sha1(b"some other torrent").digest()
        conn.sendall(handshake(other, PEER_ID))
        say("VIOLATION")
        wait_for_close(conn)
        return
    if mode == "garbage":
        conn.sendall(os.urandom(68))
        say("VIOLATION")
        wait_for_close(conn)
        return
    if send_handshake:
        conn.sendall(handshake(t.info_hash, PEER_ID))
    if mode == "bad-bitfield":
        conn.sendall(msg(5, full_bitfield(t.num_pieces) + b"\xff"))
        say("VIOLATION")
        wait_for_close(conn)
        return
    if mode == "spare-bits":
        conn.sendall(msg(5, full_bitfield(t.num_pieces, spare=True)))
        say("VIOLATION")
        wait_for_close(conn)
        return
    conn.sendall(msg(5, full_bitfield(t.num_pieces)))
    if mode == "oversized":
        conn.sendall(struct.pack(">I", 0xFFFFFFF0) + b"\x07")
        say("VIOLATION")
        # Keep sending body bytes slowly: a client that waits for (or
        # allocates) the whole 4 GiB frame never closes the connection.
        conn.setblocking(False)
        while True:
            try:
                data = conn.recv(65536)
                if not data:
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                conn.send(b"\x00" * 1024)
            except BlockingIOError:
                pass
            except OSError:
                break
            time.sleep(0.05)
        say("CLOSED")
        return
    if mode == "unrequested":
        n = 0
        for index in range(t.num_pieces):
            for begin in range(0, t.piece_len(index), BLOCK):
                length = min(BLOCK, t.piece_len(index) - begin)
                conn.sendall(piece_msg(index, begin, flipped(t.block(index, begin, length))))
                n += 1
        say("BOGUS %d" % n)
        say("VIOLATION")
    conn.sendall(msg(1))  # unchoke
    if mode == "have-range":
        conn.sendall(msg(4, struct.pack(">I", t.num_pieces)))
        say("VIOLATION")
        wait_for_close(conn)
        return
    choke_trick_pending = mode == "choke-data"
    spoil_next = mode == "corrupt-first"
    buf = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
        requests = []
        while len(buf) >= 4:
            (length,) = struct.unpack(">I", buf[:4])
            if length > 1 << 20:
                return
            if len(buf) < 4 + length:
                break
            body = buf[4 : 4 + length]
            buf = buf[4 + length :]
            if length == 13 and body[0] == 6:
                index, begin, blen = struct.unpack(">III", body[1:13])
                say("REQUEST %d %d %d" % (index, begin, blen))
                requests.append((index, begin, blen))
            elif length == 49 and body[0] == 21:
                say("HASH_REQUEST")
                # Slow to say no: by then the other peers of the test have surely
                # connected, and can be asked in turn.
                time.sleep(2)
                conn.sendall(msg(23, body[1:]))  # hash reject
        if not requests or mode == "stall":
            continue
        if choke_trick_pending:
            choke_trick_pending = False
            out = [msg(0)]  # choke: the requests are void now
            for index, begin, blen in requests:
                if t.valid(index, begin, blen):
                    out.append(piece_msg(index, begin, flipped(t.block(index, begin, blen))))
            conn.sendall(b"".join(out))
            say("BOGUS %d" % (len(out) - 1))
            say("VIOLATION")
            time.sleep(0.5)
            conn.sendall(msg(1))  # unchoke again; serve honestly from now on
            continue
        for index, begin, blen in requests:
            if not t.valid(index, begin, blen):
                return
            if mode == "corrupt" or spoil_next:
                spoil_next = False
                conn.sendall(piece_msg(index, begin, flipped(t.block(index, begin, blen))))
                say("BOGUS 1")
                continue
            conn.sendall(piece_msg(index, begin, t.block(index, begin, blen)))
            say("SERVED %d %d %d" % (index, begin, blen))


def dial(target, cycles, mode, t):
    host, port = target.rsplit(":", 1)
    for k in range(1, cycles + 1):
        conn = socket.create_connection((host, int(port)), timeout=60)
        conn.settimeout(None)
        try:
            conn.sendall(handshake(t.info_hash, PEER_ID))
            try:
                hs = recv_exact(conn, 68)
            except (EOFError, OSError):
                say("REFUSED %d" % k)
                break
            if hs[:20] != PROTOCOL or hs[28:48] != t.info_hash:
                say("REFUSED %d" % k)
                break
            say("HANDSHAKE")
            try:
                behave(conn, mode, t, send_handshake=False)
            except (EOFError, OSError):
                pass
            say("CYCLE %d" % k)
        finally:
            conn.close()
    say("DONE")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("torrent")
    p.add_argument("save_dir")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--connect", help="dial HOST:PORT instead of listening")
    p.add_argument("--cycles", type=int, default=1)
    args = p.parse_args()

    t = Torrent(args.torrent, args.save_dir)
    if args.mode == "spare-bits" and t.num_pieces % 8 == 0:
        print("spare-bits needs a piece count that is not a multiple of 8", file=sys.stderr)
        sys.exit(2)

    if args.connect:
        threading.Thread(target=dial, args=(args.connect, args.cycles, args.mode, t), daemon=True).start()
        exit_when_stdin_closes(0)

    serve_forever(lambda conn: serve(conn, args.mode, t))


if __name__ == "__main__":
    main()
