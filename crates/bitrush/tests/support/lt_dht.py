#!/usr/bin/python3
"""A small libtorrent DHT on 127.0.0.1 for bitrush's DHT interop test (tests/dht_libtorrent.rs).

Usage: lt_dht.py N

Starts N libtorrent sessions with only the DHT on (loopback only, no default bootstrap routers,
the restrictions meant for the internet off), bootstraps each from the others, waits until every
routing table holds all the other nodes, and prints `READY port1 ... portN` (each node's UDP
port). Then obeys stdin, one command a line:

  add_torrent I HEX     node I joins the swarm of info hash HEX (a magnet without metadata),
                        so it announces its listen port (= its DHT port) on the DHT every
                        few seconds; prints `ADDED HEX`
  get_peers I HEX       node I looks HEX up; prints `PEERS HEX ip:port ...` for every answer
                        that carries peers
  add_node I PORT       node I learns the node at 127.0.0.1:PORT; prints `NODE PORT`

Incoming announces are reported as `STORED HEX ip:port` (useful when a test fails). Exits as soon
as stdin closes, so it never outlives the test that started it.
"""

import os
import shutil
import sys
import tempfile
import threading
import time

import libtorrent as lt

_lock = threading.Lock()


def say(line):
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def settings():
    return {
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": True,
        # No default routers: nothing leaves the machine.
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Every node is on 127.0.0.1: the anti-Sybil rules would drop them all.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        # Announce torrents every few seconds, not every 15 minutes.
        "dht_announce_interval": 3,
        "alert_mask": lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.error_notification,
    }


def routing_table_size(session):
    """Nodes in the session's routing table (asks for a stats alert and waits for it)."""
    session.post_dht_stats()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        session.wait_for_alert(200)
        for a in session.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                return sum(b["num_nodes"] for b in a.routing_table)
    return 0


def pump_alerts(sessions):
    while True:
        for s in sessions:
            for a in s.pop_alerts():
                if isinstance(a, lt.dht_get_peers_reply_alert):
                    peers = " ".join("%s:%d" % p for p in a.peers())
                    say("PEERS %s %s" % (a.info_hash, peers))
                elif isinstance(a, lt.dht_announce_alert):
                    say("STORED %s %s:%d" % (a.info_hash, a.ip, a.port))
        time.sleep(0.05)


def watch_stdin(sessions, save_path):
    for line in sys.stdin:
        cmd = line.split()
        try:
            if cmd[0] == "add_torrent":
                # session.dht_announce needs a flags type these bindings do not export: a
                # torrent makes libtorrent announce by itself.
                atp = lt.add_torrent_params()
                atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(cmd[2])))
                atp.save_path = save_path
                sessions[int(cmd[1])].add_torrent(atp)
                say("ADDED %s" % cmd[2])
            elif cmd[0] == "get_peers":
                sessions[int(cmd[1])].dht_get_peers(lt.sha1_hash(bytes.fromhex(cmd[2])))
            elif cmd[0] == "add_node":
                sessions[int(cmd[1])].add_dht_node(("127.0.0.1", int(cmd[2])))
                say("NODE %s" % cmd[2])
        except Exception as e:  # a bad command must not kill the DHT under the test
            say("ERROR %r: %s" % (line.strip(), e))
    shutil.rmtree(save_path, ignore_errors=True)
    os._exit(0)


def main():
    n = int(sys.argv[1])
    sessions = [lt.session(settings()) for _ in range(n)]
    ports = [s.listen_port() for s in sessions]
    for i, s in enumerate(sessions):
        for j, port in enumerate(ports):
            if i != j:
                s.add_dht_node(("127.0.0.1", port))
    deadline = time.monotonic() + 30
    while any(routing_table_size(s) < n - 1 for s in sessions):
        if time.monotonic() > deadline:
            say("ERROR the libtorrent nodes did not find each other")
            os._exit(1)
        time.sleep(0.2)
    threading.Thread(target=pump_alerts, args=(sessions,), daemon=True).start()
    say("READY " + " ".join(str(p) for p in ports))
    watch_stdin(sessions, tempfile.mkdtemp(prefix="lt_dht."))


if __name__ == "__main__":
    main()
