"""Start Flower's managed local SuperLink for a simulation, with a deadline a loaded machine meets.

`flwr run . local-simulation` starts the local SuperLink (`:local-in-memory:` in
FLWR_HOME/config.toml) itself, but gives its `flower-superlink` 15 s to answer and then kills it
(Flower 1.42, flwr.cli.constant.LOCAL_SUPERLINK_STARTUP_TIMEOUT): on a busy 2-core machine its
imports alone took longer, and the simulation failed before it began. Started here first, with
Flower's own function and command line, `flwr run` finds it up and uses it.

    python -m zk0.ops.local_superlink [--timeout SECONDS]
        with FLWR_HOME and FLWR_LOCAL_SUPERLINK_HTTP_API_PORT / FLWR_LOCAL_CONTROL_API_PORT set
        as for `flwr run`; returns once it answers (at once if it already does)
"""

from __future__ import annotations

import argparse
import sys

import click
from flwr.cli import local_superlink
from flwr.cli.constant import LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY
from flwr.cli.typing import SuperLinkConnection

STARTUP_SECONDS = 180.0


def start(timeout: float = STARTUP_SECONDS) -> None:
    """Starts the in-memory local SuperLink (the connection train-fl-simulation.sh writes) unless
    it answers already; raises click.ClickException (Flower's words) when it exits or does not
    answer within `timeout` seconds."""
    # Flower reads the deadline from its module at each start (pinned flwr; tests/system/test_local_superlink.py).
    local_superlink.LOCAL_SUPERLINK_STARTUP_TIMEOUT = timeout
    local_superlink.ensure_local_superlink(
        SuperLinkConnection(name="local-simulation", address=LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk0.ops.local_superlink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=STARTUP_SECONDS,
                        help="seconds to wait for it to answer (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        start(args.timeout)
    except click.ClickException as err:
        print(f"zk0: error: {err.format_message()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
