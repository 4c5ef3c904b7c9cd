"""Crash-safe writes: a reader sees the old content or the new, never a mix.

    write_bytes(path, data) / write_text(path, text)   replace one file
    with replace_dir(target) as staging: ...           fill `staging`, then it replaces `target`
    surviving_dir(target)                              what to read after a crash mid-replace
    point_link(link, target)                           re-point a symlink

Everything is staged beside its target (same filesystem, so the rename is atomic) under a
hidden name (`.NAME.partial`), fsynced, then renamed into place. A crash leaves at most a
hidden `.NAME.partial` (cleared by the next write) or, for a directory, a `.NAME.old`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_bytes(path: Path, data: bytes) -> None:
    staging = _partial(path)
    try:
        with open(staging, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)  # a full disk leaves the old file or none, and no partial
        raise
    _fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


@contextmanager
def replace_dir(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory; when the block ends normally it becomes `target`.

    The previous `target` is renamed to `.NAME.old` first and removed after the swap, so a
    crash between the two renames leaves it for `surviving_dir`. When the block raises, the
    staging directory stays (hidden) and `target` is untouched.
    """
    staging, old = _partial(target), _old(target)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    yield staging
    for path in staging.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def surviving_dir(target: Path) -> Path:
    """`target`, or the previous version a crash between `replace_dir`'s renames left behind."""
    old = _old(target)
    return old if not target.exists() and old.is_dir() else target


def point_link(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` (kept as given: relative stays relative)."""
    staging = _partial(link)
    if staging.is_symlink() or staging.exists():
        staging.unlink()
    staging.symlink_to(target)
    os.replace(staging, link)


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
