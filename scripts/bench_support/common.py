"""Pieces shared by scripts/bench and its helper processes (Python 3, python3-libtorrent)."""

import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1


def die_with_parent(sig=signal.SIGKILL):
    """preexec_fn / helper start-up: get `sig` when the process that started us dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:
        pass


def exit_when_stdin_closes(code=3, on_exit=None):
    """Exit the process as soon as stdin reaches EOF (the bench driver went away)."""

    def watch():
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

    threading.Thread(target=watch, daemon=True).start()


WIRES = ("tcp", "utp", "encrypted")


def loopback_settings(lt, base=None, wire="tcp"):
    """libtorrent settings for a peer that lives on 127.0.0.1 only.

    `wire` says how it talks to peers, the same on every end of a scenario:
    "tcp" (TCP only: aria2 speaks nothing else, and libtorrent would otherwise
    try uTP first between its own seeders and downloader), "utp" (uTP only:
    enable_outgoing_tcp and enable_incoming_tcp off) or "encrypted" (TCP with
    Message Stream Encryption forced both ways, RC4 only); "transmission" (TCP, across the
    veth pair to the bench's Transmission seeder)."""
    s = dict(base or {})
    s.update(
        {
            "listen_interfaces": "127.0.0.1:0",
            "outgoing_interfaces": "127.0.0.1",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            "allow_multiple_connections_per_ip": True,
            "announce_to_all_trackers": True,
            "announce_to_all_tiers": True,
            "announce_ip": "127.0.0.1",
            "upload_rate_limit": 0,
            "download_rate_limit": 0,
            "stop_tracker_timeout": 1,
            "alert_mask": lt.alert.category_t.error_notification
            | lt.alert.category_t.status_notification
            | lt.alert.category_t.tracker_notification,
        }
    )
    if wire == "utp":
        s.update({"enable_outgoing_utp": True, "enable_incoming_utp": True,
                  "enable_outgoing_tcp": False, "enable_incoming_tcp": False})
    elif wire == "encrypted":
        s.update({"out_enc_policy": lt.enc_policy.pe_forced,
                  "in_enc_policy": lt.enc_policy.pe_forced,
                  "allowed_enc_level": lt.enc_level.pe_rc4,
                  "prefer_rc4": True})
    elif wire == "transmission":
        # Downloading from Transmission across the bench's veth pair (it refuses loopback
        # peers): this side's address. TCP only: over uTP, libtorrent 2.0.8 stalled against
        # Transmission 3.00 at about 30% in this bench (Transmission unchoked it and sent
        # nothing, then dropped it).
        s.update({"listen_interfaces": "10.77.0.2:0", "outgoing_interfaces": "10.77.0.2",
                  "announce_ip": "10.77.0.2"})
    elif wire != "tcp":
        raise ValueError("unknown wire %r" % wire)
    return s


def leecher_settings(lt, wire="tcp"):
    """loopback_settings for a downloading libtorrent: request_queue_time 10 and
    max_out_request_queue 5000 (the defaults are several times slower on loopback)."""
    s = loopback_settings(lt, None, wire)
    s.update({"request_queue_time": 10, "max_out_request_queue": 5000})
    return s


def dht_settings(lt):
    """Settings that turn libtorrent's DHT on for a node on 127.0.0.1: no default routers, and
    the rules meant for the internet (one node per IP, node ids derived from the address, a
    per-IP flood ban) off, and announces every 3 s."""
    return {
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_announce_interval": 3,
        # libtorrent drops every DHT packet (queries and replies alike) from an IP that sent 10 x
        # dht_block_ratelimit (default 5) of them within 10 s, for dht_block_timeout (default
        # 300 s). On loopback all nodes share 127.0.0.1, so a node that announces or is
        # announced to soon bans them all, its lookups time out and its routing table empties.
        "dht_block_ratelimit": 1000000,
        "dht_block_timeout": 1,
        # The default 8000 B/s is meant for a home uplink; nothing is gained by queueing here.
        "dht_upload_rate_limit": 1 << 20,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_notification
        | lt.alert.category_t.dht_operation_notification,
    }
