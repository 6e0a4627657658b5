#!/usr/bin/python3
"""A libtorrent DHT swarm on 127.0.0.1 for bitrush's trackerless tests (tests/dht.rs).

Usage: lt_dht_swarm.py N [--seed TORRENT SAVE_DIR --seeders K]

Starts N libtorrent sessions with the DHT on (loopback only, no default routers, the rules meant
for the internet off), TCP peers on the same port number as the DHT, bootstraps each from the
others, and makes the first K seed TORRENT from SAVE_DIR, announced on the DHT only (no
tracker). Prints `READY port1 ... portN` once every node knows the others and the seeders
verified their data. Then obeys stdin, one command a line:

  leech I MAGNET SAVE_DIR   node I downloads MAGNET (peers from the DHT only) into SAVE_DIR;
                            prints `COMPLETE I` when it has everything
  get_peers I HEX           node I looks HEX up; prints `PEERS HEX ip:port ...` per answer

Exits as soon as stdin closes, so it never outlives the test that started it.
"""

import argparse
import os
import sys
import threading
import time

import libtorrent as lt

from lt_tool import seeding_and_accepting
from peerwire import say


def settings():
    return {
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_announce_interval": 3,
        # libtorrent drops every DHT packet from an IP that sent more than 10 x
        # dht_block_ratelimit in 10 s, for dht_block_timeout s; every node here shares
        # 127.0.0.1, so a busy one would cut all the others off.
        "dht_block_ratelimit": 1000000,
        "dht_block_timeout": 1,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_enabled),
        "alert_mask": lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_operation_notification
        | lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification,
    }


def routing_table_size(session):
    session.post_dht_stats()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        session.wait_for_alert(200)
        for a in session.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                return sum(b["num_nodes"] for b in a.routing_table)
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int)
    p.add_argument("--seed", nargs=2, metavar=("TORRENT", "SAVE_DIR"))
    p.add_argument("--seeders", type=int, default=1)
    args = p.parse_args()
    sessions = [lt.session(settings()) for _ in range(args.n)]
    ports = [s.listen_port() for s in sessions]
    for i, s in enumerate(sessions):
        for j, port in enumerate(ports):
            if i != j:
                s.add_dht_node(("127.0.0.1", port))
    seeds = []
    if args.seed:
        for s in sessions[: args.seeders]:
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(args.seed[0])
            atp.save_path = args.seed[1]
            atp.flags |= lt.torrent_flags.override_trackers
            atp.trackers = []
            seeds.append(s.add_torrent(atp))
    deadline = time.monotonic() + 30
    while any(routing_table_size(s) < args.n - 1 for s in sessions) or any(
        not seeding_and_accepting(h.status()) for h in seeds
    ):
        if time.monotonic() > deadline:
            say("ERROR the libtorrent nodes did not get ready")
            os._exit(1)
        time.sleep(0.2)
    leeches = {}
    lock = threading.Lock()

    def pump():
        while True:
            for s in sessions:
                for a in s.pop_alerts():
                    if isinstance(a, lt.dht_get_peers_reply_alert):
                        say("PEERS %s %s" % (a.info_hash, " ".join("%s:%d" % x for x in a.peers())))
            with lock:
                for i, h in list(leeches.items()):
                    if h.status().is_seeding:
                        say("COMPLETE %d" % i)
                        del leeches[i]
            time.sleep(0.05)

    threading.Thread(target=pump, daemon=True).start()
    say("READY " + " ".join(str(x) for x in ports))
    for line in sys.stdin:
        cmd = line.split()
        try:
            if cmd[0] == "leech":
                i = int(cmd[1])
                atp = lt.parse_magnet_uri(cmd[2])
                atp.save_path = cmd[3]
                with lock:
                    leeches[i] = sessions[i].add_torrent(atp)
            elif cmd[0] == "get_peers":
                sessions[int(cmd[1])].dht_get_peers(lt.sha1_hash(bytes.fromhex(cmd[2])))
        except Exception as e:
            say("ERROR %r: %s" % (line.strip(), e))
    os._exit(0)


if __name__ == "__main__":
    main()
