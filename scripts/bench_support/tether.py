#!/usr/bin/python3
"""Run a command; kill it when our stdin reaches EOF or we get SIGTERM/SIGINT.

Used by scripts/bench for opentracker, which drops privileges to `nobody` (that
clears PR_SET_PDEATHSIG), so it needs a guardian process."""

import os
import signal
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import die_with_parent, exit_when_stdin_closes  # noqa: E402


def main():
    child = None

    def kill_child(*_):
        try:
            if child is not None:
                child.kill()
                child.wait()
        except Exception:
            pass

    def on_signal(signum, _frame):
        kill_child()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    # SIGTERM (handled above, so the child dies too) if the bench driver dies.
    die_with_parent(signal.SIGTERM)
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)

    exit_when_stdin_closes(0, on_exit=kill_child)

    rc = child.wait()
    sys.exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    main()
