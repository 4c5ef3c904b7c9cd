"""`zk0bot status --json`: what runs on this machine as one JSON object, for monitors.

zk0bot.sh writes what only it can see (it owns the tmux sessions and probes the server) as
tab-separated lines on stdin; this reads the settings zk0bot keeps under ZK0_HOME (server.env,
clients/*/client.env), adds the SuperLink's node counts and newest runs (through the flwr CLI,
FLWR_HOME from the environment) when the server is healthy, and prints the object:

    version <TAB> VALUE
    healthy <TAB> yes|no                 (the SuperLink and the admin port answer)
    pane <TAB> SESSION <TAB> PID         (one per running tmux session)

    python -m zk0.ops.health HOME [--runs-dir DIR --connection NAME] < facts
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from zk0.ops.admin import AdminError, flwr, json_reply, recent_runs


SERVER_SESSIONS = ("zk0-superlink", "zk0-superexec", "zk0-proxy", "zk0-admin-proxy")
SERVER_KEYS = ("port", "host", "names", "mode", "link_port", "admin_port")
CLIENT_KEYS = ("server", "address", "port", "threads")


def parse(lines: list[str], home: Path) -> dict:
    from zk0.ops.commands import settings

    facts = [line.rstrip("\n").split("\t") for line in lines]
    panes = {fields[1]: int(fields[2]) for fields in facts if fields[0] == "pane" and len(fields) == 3}
    said = {fields[0]: fields[1] for fields in facts if len(fields) == 2}
    state: dict = {"version": said.get("version"), "sessions": {}, "server": None, "clients": []}

    def session(name: str) -> int | None:
        state["sessions"][name] = {"running": name in panes, "pid": panes.get(name)}
        return panes.get(name)

    server = settings(home / "server" / "server.env")
    if server:
        for name in SERVER_SESSIONS:
            session(name)
        state["server"] = {key: int(server[key]) if server.get(key, "").isdigit() else server.get(key, "")
                           for key in SERVER_KEYS} | {"healthy": said.get("healthy") == "yes"}
    for env in sorted((home / "clients").glob("*/client.env")):
        client = settings(env)
        entry = {"dataset": client.get("dataset-uri", "")}
        for kind in ("zk0-supernode", "zk0-executor"):
            pid = session(f"{kind}-{env.parent.name}")
            entry[kind] = str(pid) if pid else "stopped"
        state["clients"].append(entry | {key: client.get(key, "") for key in CLIENT_KEYS})
    return state


def node_counts(connection: str) -> dict | None:
    reply = json_reply(flwr("supernode", "list", connection, "--format", "json").stdout)
    if "nodes" not in reply:
        return None
    return dict(Counter(str(node.get("status")) for node in reply["nodes"]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m zk0.ops.health", description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--runs-dir")
    parser.add_argument("--connection")
    args = parser.parse_args(argv)
    state = parse(sys.stdin.readlines(), args.home)
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
