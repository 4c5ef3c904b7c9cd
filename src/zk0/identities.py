"""The names the server admin registered with the nodes' keys, by Flower node id.

zk0bot writes them to the JSON file named by $ZK0_NODE_NAMES ({"<node id>": "<name>"}) on
every (re)registration; without it (simulation) nodes have no registered names.
"""

from __future__ import annotations

import json
import os
import re

MAX_NAME_CHARS = 64


def registered_names(path: str | None = None) -> dict[int, str]:
    """Node id -> registered name; {} when there is no readable map."""
    path = path or os.environ.get("ZK0_NODE_NAMES")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    names = {}
    for node, name in raw.items():
        if isinstance(name, str) and str(node).isdigit():
            names[int(node)] = re.sub(r"[^\x20-\x7e]", "?", name)[:MAX_NAME_CHARS]
    return names
