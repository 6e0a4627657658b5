#!/usr/bin/python3
"""A local DHT of N libtorrent nodes on 127.0.0.1, the first K seeding one torrent, no tracker.

Usage: dht_swarm.py --nodes N --seeders K SAVE_DIR TORRENT

Each node is a session with the DHT on (loopback rules, no default routers) and TCP peers on the
same port number, bootstrapped from all the others; the seeders use the high_performance_seed
preset, check their data and announce it on the DHT only. Prints `READY <port> ...` (node 0's
port first: the one downloaders bootstrap from) once every routing table holds other nodes (8, or
all if fewer) and get_peers lookups from a node that does not seed have found all K seeders.
Exits with status 1 if that takes longer than --timeout. Then runs until stdin reaches EOF or a
signal.
"""

import argparse
import os
import signal
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import die_with_parent, dht_settings, exit_when_stdin_closes, loopback_settings  # noqa: E402,E501

import libtorrent as lt  # noqa: E402

ACCEPTS_PEERS = (
    lt.torrent_status.downloading,
    lt.torrent_status.finished,
    lt.torrent_status.seeding,
)


def routing_table_sizes(sessions):
    """How many nodes each session's routing table holds (None if it did not say within 5 s: a
    loaded machine may be late, which says nothing about the table)."""
    for ses in sessions:
        ses.post_dht_stats()
    sizes = [None] * len(sessions)
    deadline = time.monotonic() + 5
    while None in sizes and time.monotonic() < deadline:
        for i, ses in enumerate(sessions):
            for a in ses.pop_alerts():
                if isinstance(a, lt.dht_stats_alert):
                    sizes[i] = sum(b["num_nodes"] for b in a.routing_table)
        time.sleep(0.05)
    return sizes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("save_dir")
    p.add_argument("torrent")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--seeders", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300.0)
    args = p.parse_args()
    die_with_parent()
    exit_when_stdin_closes(0)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    ti = lt.torrent_info(args.torrent)
    sessions, seeds = [], []
    for i in range(args.nodes):
        base = lt.high_performance_seed() if i < args.seeders else None
        s = loopback_settings(lt, base)
        s.update(dht_settings(lt))
        s.update({"share_ratio_limit": 0, "seed_time_limit": 0, "seed_time_ratio_limit": 0,
                  "aio_threads": 2})
        sessions.append(lt.session(s))
    ports = [s.listen_port() for s in sessions]
    for i, ses in enumerate(sessions):
        for j, port in enumerate(ports):
            if i != j:
                ses.add_dht_node(("127.0.0.1", port))
    for ses in sessions[: args.seeders]:
        atp = lt.add_torrent_params()
        atp.ti = lt.torrent_info(ti)
        atp.save_path = args.save_dir
        atp.flags |= lt.torrent_flags.override_trackers
        atp.trackers = []
        seeds.append(ses.add_torrent(atp))

    deadline = time.monotonic() + args.timeout
    probe = sessions[-1]
    found, ready = set(), False
    want = min(args.nodes - 1, 8)
    rebootstrap = [time.monotonic() + 5] * len(sessions)
    while True:
        if time.monotonic() > deadline:
            print("dht_swarm: not ready after %.0f s (seeding: %s, routing tables: %s, %d of %d "
                  "seeders found)" % (args.timeout, ready, routing_table_sizes(sessions),
                                      len(found), args.seeders), file=sys.stderr, flush=True)
            os._exit(1)
        ready = all(h.status().is_seeding and h.status().state in ACCEPTS_PEERS for h in seeds)
        # A routing table keeps at most 8 nodes per bucket, so not every node knows all others.
        # A node whose first pings were lost: bootstrap it once more (every 5 s at most).
        sizes = routing_table_sizes(sessions)
        for i, (ses, size) in enumerate(zip(sessions, sizes)):
            if size is not None and size < want and time.monotonic() > rebootstrap[i]:
                rebootstrap[i] = time.monotonic() + 5
                for port in ports:
                    if port != ses.listen_port():
                        ses.add_dht_node(("127.0.0.1", port))
        if ready and all(size is not None and size >= want for size in sizes):
            probe.dht_get_peers(ti.info_hash())
            t = time.monotonic() + 3
            while time.monotonic() < t and len(found) < args.seeders:
                probe.wait_for_alert(200)
                for a in probe.pop_alerts():
                    if isinstance(a, lt.dht_get_peers_reply_alert):
                        found.update(port for _ip, port in a.peers())
                found &= set(ports[: args.seeders])
            # A seeder announces every 3 s (dht_announce_interval): one not found yet soon is.
            if len(found) >= args.seeders:
                break
        time.sleep(0.2)
    print("dht_swarm: %d of %d seeders found by get_peers" % (len(found), args.seeders),
          file=sys.stderr, flush=True)
    print("READY " + " ".join(str(x) for x in ports), flush=True)
    while True:
        time.sleep(1.0)
        for ses in sessions:
            ses.pop_alerts()


if __name__ == "__main__":
    main()
