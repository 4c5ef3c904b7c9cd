"""Run a command that appends to a log, keeping that log under a size cap.

nginx writes `fleet-traffic.log` (one line per Fleet request) for as long as the server
runs. Every CHECK_SECONDS this copies the log to LOG.1 and truncates it once it passes
MAX_BYTES, so the two files hold at most about 2 x MAX_BYTES. Copy-and-truncate rather than
rename-and-reopen: nginx's workers (an unprivileged user when zk0bot runs as root) could not
reopen a path inside the admin's 0700 directory, while the O_APPEND descriptor they inherited
simply carries on at the start of the truncated file.

    python -m zk0.ops.log_cap LOG MAX_BYTES -- COMMAND [ARGS...]

Exits with the command's status; a TERM or INT is passed on to it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

CHECK_SECONDS = 10.0


def cap(log: Path, max_bytes: int) -> bool:
    """Move the log's content to LOG.1 once it is larger than max_bytes; True if it did."""
    try:
        if log.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    kept = log.with_name(log.name + ".1")
    shutil.copyfile(log, kept)
    os.truncate(log, 0)
    return True


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--" or not argv[1].isdigit():
        sys.exit("usage: python -m zk0.ops.log_cap LOG MAX_BYTES -- COMMAND [ARGS...]")
    log, max_bytes, command = Path(argv[0]), int(argv[1]), argv[3:]
    child = subprocess.Popen(command)  # noqa: S603
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: child.send_signal(received))
    while True:
        try:
            return child.wait(timeout=CHECK_SECONDS)
        except subprocess.TimeoutExpired:
            cap(log, max_bytes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
