#!/usr/bin/python3
"""Runs a command with its stderr on a pseudo-terminal, for bitrush's tests.

Usage: in_pty.py PROGRAM [ARGS...]

The command's stdin is /dev/null and its stdout is ours; its stderr is a new pseudo-terminal
(24 rows, 100 columns). Everything written there is copied to our stderr once the command has
exited, and we exit with its exit code.
"""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios


def main():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    captured = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command (every writer of the terminal) is gone
            break
        if not chunk:
            break
        captured += chunk
    code = proc.wait()
    sys.stderr.buffer.write(captured)
    sys.stderr.flush()
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
