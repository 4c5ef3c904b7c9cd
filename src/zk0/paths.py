"""Where zk0 keeps generated artefacts that are expensive to rebuild."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`ZK0_CACHE_DIR`, else `$XDG_CACHE_HOME/zk0`, else `~/.cache/zk0`."""
    if "ZK0_CACHE_DIR" in os.environ:
        return Path(os.environ["ZK0_CACHE_DIR"]).expanduser().resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (base / "zk0").resolve()
