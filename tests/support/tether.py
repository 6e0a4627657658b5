#!/usr/bin/python3
"""Run a command and kill it when our stdin reaches EOF.

Usage: tether.py CMD [ARG ...]

The test that starts a helper (opentracker, aria2c) through this wrapper keeps
the write end of our stdin; when the test process goes away for any reason,
stdin closes and the command is killed, so nothing outlives the test run.
Exits with the command's exit status when it ends on its own (128 + the signal's number when
a signal ended it).
"""

import os
import signal
import subprocess
import sys
import threading

from peerwire import exit_when_stdin_closes


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)

    def kill_child():
        # As a process group's leader (as the tests start us), the whole group: the
        # command's own children too (chromedriver's browser).
        if os.getpgid(0) == os.getpid():
            os.killpg(0, signal.SIGKILL)
        child.kill()
        child.wait()

    threading.Thread(target=exit_when_stdin_closes, args=(0, kill_child), daemon=True).start()

    def on_term(signum, _frame):
        try:
            child.kill()
        except Exception:
            pass
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rc = child.wait()
    # os._exit, not sys.exit: the watcher thread blocks reading stdin, and an interpreter
    # shutting down around it aborts ("could not acquire lock for <stdin>"), which would hide
    # the command's own exit status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if rc >= 0 else 128 - rc)


if __name__ == "__main__":
    main()
