"""Running a command as an ordinary user, uid 65534 (`nobody`), from tests that run as root in CI.

An ordinary Debian user's PATH has no /sbin or /usr/sbin, and cannot read root's home or
pytest's root-only temporary directory: the helpers here give such a user a PATH, a
directory of its own, and the command prefix that switches to it. Like a service account,
uid 65534 has a nologin login shell, and its environment (`user_env`) has no SHELL.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A service account's environment: a plain PATH, its own HOME and no SHELL (programs that
    fall back to the login shell, as tmux does, get uid 65534's nologin). It keeps this xdist
    worker's ZK0_LOCAL_PORTS (conftest.py), so that its servers stay off other workers' ports."""
    ports = {"ZK0_LOCAL_PORTS": os.environ["ZK0_LOCAL_PORTS"]} if "ZK0_LOCAL_PORTS" in os.environ else {}
    return {"PATH": USER_PATH, "HOME": str(home), "LANG": "C.UTF-8", **ports, **extra}


def as_nobody() -> list[str]:
    """The prefix that runs a command as uid 65534; skips the test unless root or already that user."""
    if os.geteuid() == NOBODY:
        return []
    if os.geteuid() != 0:
        pytest.skip("runs as uid 65534: needs root (to switch to it) or that user")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def give_to_nobody(path: Path) -> None:
    """Makes path and everything under it belong to uid 65534 (a no-op when that is who we are)."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, entry) for entry in dirs + files)):
            os.lchown(name, NOBODY, NOBODY)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A fresh directory that uid 65534 owns, outside pytest's root-only tmp dir; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="zk0-nobody-"))
    path.chmod(0o755)
    give_to_nobody(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def user_path_without(bin_dir: Path, *names: str) -> str:
    """A PATH of one directory holding links to USER_PATH's commands except `names` (as if not installed)."""
    bin_dir.mkdir(parents=True)
    for directory in USER_PATH.split(os.pathsep):
        for entry in os.scandir(directory):
            link = bin_dir / entry.name
            if entry.name in names or os.path.lexists(link) or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(bin_dir)
