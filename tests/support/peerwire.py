"""Small helpers shared by the scripted test peers: line output and exact socket reads.

Imported by bad_peer.py, scripted_peer.py, hostile_metadata_peer.py and ext_probe.py, which run
as scripts from this folder (so it is on their import path).
"""

import struct
import sys
import threading

_lock = threading.Lock()


def say(line):
    """Prints one line to stdout at once, whatever thread calls."""
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def recv_exact(sock, n):
    """Reads exactly n bytes or raises EOFError if the connection closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def msg(msg_id, payload=b""):
    """A length-prefixed peer message."""
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload
