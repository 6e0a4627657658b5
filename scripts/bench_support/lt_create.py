#!/usr/bin/python3
"""Makes a .torrent with libtorrent's create_torrent, for the `create` bench scenario.

    lt_create.py PATH OUT --piece-length N --version v1|v2|hybrid
"""

import argparse
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import die_with_parent  # noqa: E402

import libtorrent as lt  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("out")
    p.add_argument("--piece-length", type=int, required=True)
    p.add_argument("--version", choices=["v1", "v2", "hybrid"], required=True)
    args = p.parse_args()
    die_with_parent()
    fs = lt.file_storage()
    lt.add_files(fs, args.path)
    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only,
             "hybrid": 0}[args.version]
    ct = lt.create_torrent(fs, args.piece_length, flags=flags)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(args.path)))
    with open(args.out, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
