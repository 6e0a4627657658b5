"""Small helpers shared by the scripted test peers: line output, exact socket reads, the
BitTorrent handshake and message framing, and the listen-until-stdin-closes life of a test peer.

Imported by scripted_peer.py, hostile_metadata_peer.py, ext_probe.py, handshake_recorder.py,
lt_seed.py, lt_leech.py, lt_tool.py and tether.py, which run as scripts from this folder (so it
is on their import path).
"""

import os
import socket
import struct
import sys
import threading

_lock = threading.Lock()

# The first 20 bytes of every BitTorrent handshake.
PROTOCOL = b"\x13BitTorrent protocol"


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


def handshake(info_hash, peer_id, extensions=False):
    """The 68-byte handshake for info_hash (20 bytes) from peer_id (20 bytes); with
    `extensions`, its reserved bytes announce the extension protocol (BEP 10)."""
    reserved = b"\x00\x00\x00\x00\x00\x10\x00\x00" if extensions else bytes(8)
    return PROTOCOL + reserved + info_hash + peer_id


def msg(msg_id, payload=b""):
    """A length-prefixed peer message."""
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


def exit_when_stdin_closes(code=0, on_exit=None):
    """Blocks until stdin reaches EOF (the test that started us ended), runs `on_exit` (if
    given, errors ignored), then exits at once."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    if on_exit is not None:
        try:
            on_exit()
        except Exception:
            pass
    os._exit(code)


def serve_forever(handler, port=0):
    """Listens on 127.0.0.1:port and prints `READY <port>`; each connection says `CONN` and runs
    handler(conn) in its own thread, then is closed, until stdin closes."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    say("READY %d" % srv.getsockname()[1])

    def handle(conn):
        try:
            handler(conn)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def accept_loop():
        while True:
            conn, _ = srv.accept()
            say("CONN")
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    exit_when_stdin_closes(0)
