"""Where zk0 keeps generated artefacts that are expensive to rebuild."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """`ZK0_CACHE_DIR`, else `$XDG_CACHE_HOME/zk0`, else `~/.cache/zk0`."""
    if "ZK0_CACHE_DIR" in os.environ:
        return Path(os.environ["ZK0_CACHE_DIR"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base / "zk0").resolve()


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """Return `target`, calling `build(staging_dir)` first if `target/marker` is missing.

    Safe when several processes (server and clients) race: each builds into a private
    staging directory beside `target` and the first atomic rename wins.
    """
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
