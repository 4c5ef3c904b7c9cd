"""Keep logs under a size cap while the process that writes them runs.

Every component zk0bot starts (SuperLink, SuperExec, proxies, SuperNodes, executors) starts
this beside itself, as the child of its session's shell just before that shell becomes the
component (`exec`): its session log, and for the public proxy nginx's own `proxy.log` and
`fleet-traffic.log` (one line per Fleet request). Every CHECK_SECONDS each log that passed
MAX_BYTES is copied to LOG.1 and truncated, so the two files hold at most about
2 x MAX_BYTES. It exits once its parent is gone. Copy-and-truncate rather than
rename-and-reopen: nginx's workers (an unprivileged user when zk0bot runs as root) could not
reopen a path inside the admin's 0700 directory, while an O_APPEND descriptor (nginx's, or a
shell's `>>`) simply carries on at the start of the truncated file.

    python -m zk0.ops.log_cap MAX_BYTES LOG [LOG...]
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

CHECK_SECONDS = 10.0
USAGE = "usage: python -m zk0.ops.log_cap MAX_BYTES LOG [LOG...]"


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


def watch(logs: list[Path], max_bytes: int, parent: int, every: float = CHECK_SECONDS) -> None:
    """Cap the logs every `every` seconds until `parent` is no longer this process's parent."""
    while os.getppid() == parent:
        for log in logs:
            cap(log, max_bytes)
        time.sleep(every)
    for log in logs:  # what the component wrote last
        cap(log, max_bytes)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit(USAGE)
    watch([Path(log) for log in argv[1:]], int(argv[0]), os.getppid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
