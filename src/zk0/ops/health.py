"""`zk0bot status --json`: what runs on this machine as one JSON object, for monitors.

zk0bot.sh writes what it knows as tab-separated lines on stdin (it owns the tmux sessions
and settings); this adds the SuperLink's node counts and newest runs (through the flwr CLI,
FLWR_HOME from the environment) when the server is healthy, and prints the object:

    session <TAB> NAME <TAB> PID (empty: not running)
    server <TAB> KEY <TAB> VALUE         (port, host, admin_port, link_port, mode, healthy)
    client <TAB> DATASET <TAB> KEY <TAB> VALUE
    version <TAB> VALUE

    python -m zk0.ops.health [--runs-dir DIR --connection NAME] < facts
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from zk0.ops.admin import AdminError, flwr, json_reply, recent_runs


def parse(lines: list[str]) -> dict:
    state: dict = {"version": None, "sessions": {}, "server": None, "clients": {}}
    for line in lines:
        fields = line.rstrip("\n").split("\t")
        if fields[0] == "session" and len(fields) == 3:
            state["sessions"][fields[1]] = {"running": bool(fields[2]), "pid": int(fields[2]) if fields[2] else None}
        elif fields[0] == "server" and len(fields) == 3:
            state["server"] = state["server"] or {}
            value = fields[2]
            state["server"][fields[1]] = int(value) if value.isdigit() else value == "yes" if fields[1] == "healthy" else value
        elif fields[0] == "client" and len(fields) == 4:
            state["clients"].setdefault(fields[1], {"dataset": fields[1]})[fields[2]] = fields[3]
        elif fields[0] == "version" and len(fields) == 2:
            state["version"] = fields[1]
    state["clients"] = list(state["clients"].values())
    return state


def node_counts(connection: str) -> dict | None:
    reply = json_reply(flwr("supernode", "list", connection, "--format", "json").stdout)
    if "nodes" not in reply:
        return None
    return dict(Counter(str(node.get("status")) for node in reply["nodes"]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk0.ops.health", description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir")
    parser.add_argument("--connection")
    args = parser.parse_args(argv)
    state = parse(sys.stdin.readlines())
    server = state["server"]
    if server is not None and server.get("healthy") and args.connection:
        server["nodes"] = node_counts(args.connection)
        try:
            server["runs"] = recent_runs(Path(args.runs_dir), args.connection, 5)
        except AdminError:
            server["runs"] = None
    print(json.dumps(state, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
