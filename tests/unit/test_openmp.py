"""zk0 makes torch's OpenMP threads sleep, not spin, while they wait (zk0/__init__.py).

What libgomp took is read from its own report (OMP_DISPLAY_ENV=VERBOSE, printed when torch
loads it): GOMP_SPINCOUNT 0 is the passive policy. Each check runs in a fresh interpreter, since
libgomp reads its environment once, when it is loaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def spin_count(code: str, **env: str) -> int:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("OMP_", "GOMP_"))}
    run = subprocess.run([sys.executable, "-c", code], env={**environ, "OMP_DISPLAY_ENV": "VERBOSE", **env},
                         capture_output=True, text=True, timeout=300, check=True)
    counts = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", run.stderr)
    assert len(counts) == 1, f"libgomp printed no settings (has torch's OpenMP runtime changed?): {run.stderr[-2000:]}"
    return int(counts[0])


@pytest.mark.parametrize("code", [
    "import zk0, torch",
    # How Flower's processes load the apps: Flower first, then the app module, then torch.
    "import flwr.clientapp, flwr.serverapp, flwr.simulation, zk0.client_app, zk0.server_app",
])
def test_torch_threads_sleep_while_they_wait(code):
    assert spin_count(code) == 0


def test_torch_imported_first_keeps_the_spinning_default():
    """The reason zk0 must be imported before torch: libgomp has read its settings by then."""
    assert spin_count("import torch, zk0") > 0


def test_an_operators_own_policy_is_kept():
    assert spin_count("import zk0, torch", OMP_WAIT_POLICY="ACTIVE") > 0
