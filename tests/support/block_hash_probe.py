#!/usr/bin/python3
"""Asks a peer for BEP 52 block hashes (hash requests at base layer 0, with proofs) and checks
each answer against the data and the torrent's `pieces root`, for bitrush's tests.

Usage: block_hash_probe.py HOST:PORT TORRENT DATA [--libtorrent]

TORRENT is a single-file v2 (or hybrid) torrent and DATA its file. With `--libtorrent`, the
peer is not HOST:PORT but a libtorrent session this script starts on 127.0.0.1 that checks
DATA in full (no seed mode) before it is asked.

It connects (handshake for the v2 hash truncated to 20 bytes, or the v1 hash of a hybrid,
with the v2 bit set) and sends, one at a time, the request libtorrent sends for one piece's
blocks after a hash failure (base 0, the piece's blocks, proofs up to the root) for the first,
a middle and the last piece, then two block hashes with their uncles inside the piece, then
every block hash of the file. It first prints `HANDSHAKE v1` or `HANDSHAKE v2`, the hash the
peer answered with (a v2-only torrent has only the v2 one). For each request it prints one line:
`VERIFIED <base> <index> <length> <proof layers>` when the hashes are the blocks' SHA-256
and they and the uncles prove up to the root, `REJECTED ...` for a hash reject, `BAD ... <why>`
otherwise. It exits 0 after the last one.
"""

import hashlib
import os
import socket
import struct
import sys
import time

import libtorrent as lt
from peerwire import PROTOCOL, recv_exact, msg

BLOCK = 16 * 1024
PEER_ID = b"-BP0001-blockhashprb"


def sha(data):
    return hashlib.sha256(data).digest()


def tree_levels(data, piece_length):
    """Every level of the file's merkle tree, leaves first (BEP 52 padding)."""
    leaves = [sha(data[i : i + BLOCK]) for i in range(0, len(data), BLOCK)] or [bytes(32)]
    if len(data) > piece_length:
        per = piece_length // BLOCK
        leaves += [bytes(32)] * (-len(leaves) % per)
    width = 1
    while width < len(leaves):
        width *= 2
    leaves += [bytes(32)] * (width - len(leaves))
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([sha(below[i] + below[i + 1]) for i in range(0, len(below), 2)])
    return levels


def read_answer(conn, root):
    """The next hashes (22) or hash reject (23) message for `root`; skips everything else."""
    while True:
        (length,) = struct.unpack(">I", recv_exact(conn, 4))
        if length > 1 << 22:
            raise EOFError("message of %d bytes" % length)
        body = recv_exact(conn, length) if length else b""
        if body and body[0] in (22, 23) and body[1:33] == root:
            return body[0], struct.unpack(">IIII", body[33:49]), body[49:]


def check(levels, request, hashes):
    base, index, length, proof = request
    k = length.bit_length() - 1
    uncles = max(0, proof + 1 - k)
    got = [hashes[i : i + 32] for i in range(0, len(hashes), 32)]
    if len(got) != length + uncles:
        return "%d hashes, not %d" % (len(got), length + uncles)
    if got[:length] != levels[base][index : index + length]:
        return "the hashes are not the tree's"
    node, at = levels[base + k][index >> k], index >> k
    for uncle in got[length:]:
        node = sha(node + uncle) if at % 2 == 0 else sha(uncle + node)
        at //= 2
    top = base + max(proof, k - 1) + 1
    if node != levels[top][index >> (top - base)]:
        return "the uncles do not prove"
    return None


def libtorrent_peer(torrent, data):
    """A libtorrent session seeding `data`, checked in full; returns its port and session."""
    settings = lt.default_settings()
    settings.update({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
    })
    ses = lt.session(settings)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(torrent)
    atp.save_path = os.path.dirname(os.path.abspath(data))
    atp.flags |= lt.torrent_flags.override_trackers
    atp.trackers = []
    h = ses.add_torrent(atp)
    deadline = time.time() + 60
    while not h.status().is_seeding:
        if time.time() > deadline:
            sys.exit("libtorrent did not verify the data")
        time.sleep(0.05)
    return ses.listen_port(), ses


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[4:] not in ([], ["--libtorrent"]):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    addr, torrent, data_path = sys.argv[1:4]
    ti = lt.torrent_info(torrent)
    hashes = ti.info_hashes()
    v2_hash = bytes.fromhex(str(hashes.v2))[:20]
    info_hash = bytes.fromhex(str(hashes.v1))[:20] if hashes.has_v1() else v2_hash
    fs = ti.files()
    root = bytes.fromhex(str(fs.root(0)))
    piece_length = ti.piece_length()
    data = open(data_path, "rb").read()
    levels = tree_levels(data, piece_length)
    height = len(levels) - 1
    per = piece_length // BLOCK
    pieces = (len(data) + piece_length - 1) // piece_length
    keep = None
    if sys.argv[4:]:
        port, keep = libtorrent_peer(torrent, data_path)
        addr = "127.0.0.1:%d" % port
    host, port = addr.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=30)
    # The v2 bit (byte 7, 0x10): libtorrent takes hash messages on a hybrid's v1 connection
    # only from a peer that set it, and then answers with the v2 hash.
    conn.sendall(PROTOCOL + b"\x00\x00\x00\x00\x00\x10\x00\x10" + info_hash + PEER_ID)
    hs = recv_exact(conn, 68)
    if hs[:20] != PROTOCOL or hs[28:48] not in (info_hash, v2_hash):
        sys.exit("wrong handshake")
    # Which name the peer answered with: a hybrid's v2 hash upgrades the connection.
    print("HANDSHAKE %s" % ("v2" if hs[28:48] == v2_hash else "v1"), flush=True)
    conn.sendall(msg(2))  # interested
    requests = [(0, p * per, per, height - 1) for p in (0, pieces // 2, pieces - 1)]
    requests.append((0, per + 2, 2, height - 1))
    requests.append((0, 0, len(levels[0]), height - 1))
    for req in requests:
        conn.sendall(msg(21, root + struct.pack(">IIII", *req)))
        kind, echoed, body = read_answer(conn, root)
        line = "%d %d %d %d" % req
        if echoed != req:
            print("BAD %s answered %s" % (line, echoed), flush=True)
        elif kind == 23:
            print("REJECTED %s" % line, flush=True)
        else:
            why = check(levels, req, body)
            print(("BAD %s %s" % (line, why)) if why else ("VERIFIED %s" % line), flush=True)
    conn.close()
    del keep


if __name__ == "__main__":
    main()
