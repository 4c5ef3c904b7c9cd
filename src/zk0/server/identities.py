"""The names the server admin registered node keys under, by Flower node id.

`zk0bot server register node.pub --name robot-7` keeps each key in `$SERVER_DIR/nodes/`
with the name (`<key>.name`) and the node id Flower gave it (`<key>.id`). Node ids change
at every SuperLink restart, names do not: on every (re)registration zk0bot rewrites one
JSON map {"<node id>": "<name>"} (`python -m zk0.server.identities KEY_DIR`, which prints it
for zk0bot to write; with OUT it writes OUT itself) and points the
ServerApp at it with ZK0_NODE_NAMES. `registered_names` reads it back for log lines and
metrics; a name is what the admin typed, so it is cleaned before it is shown anywhere.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

NAMES_ENV = "ZK0_NODE_NAMES"
MAX_NAME = 64


def clean_name(raw: object) -> str:
    """A name fit for one log line: printable characters only, stripped, at most MAX_NAME long."""
    if not isinstance(raw, str):
        return ""
    return "".join(ch for ch in raw if ch.isprintable()).strip()[:MAX_NAME].strip()


def _node_id(raw: str) -> int | None:
    """Flower node ids are unsigned 64-bit integers, written in decimal."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value < 2**64 else None


def registered_names(path: str | None = None) -> dict[int, str]:
    """{node id: name} from the map at `path` (default: $ZK0_NODE_NAMES).

    Never raises: a missing, unreadable or garbled file gives {}, and an entry whose id is
    not a node id or whose name is empty once cleaned is left out.
    """
    path = path if path is not None else os.environ.get(NAMES_ENV)
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    names = {}
    for raw_id, raw_name in data.items():
        node_id, name = _node_id(raw_id), clean_name(raw_name)
        if node_id is not None and name:
            names[node_id] = name
    return names


def names_in_key_dir(key_dir: Path) -> dict[int, str]:
    """{node id: name} of the keys kept in zk0bot's nodes/ directory (<key>.id beside <key>.name)."""
    names = {}
    for id_file in sorted(key_dir.glob("*.id")):
        name_file = id_file.with_suffix(".name")
        try:
            node_id = _node_id(id_file.read_text(encoding="utf-8"))
            name = clean_name(name_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if node_id is not None and name:
            names[node_id] = name
    return names


def names_json(key_dir: Path) -> str:
    return json.dumps({str(k): v for k, v in names_in_key_dir(key_dir).items()}, indent=1) + "\n"


def write_names(key_dir: Path, out: Path) -> None:
    """Write the map atomically, so a ServerApp reading it never sees half a file."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(names_json(key_dir))
    tmp.replace(out)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m zk0.server.identities KEY_DIR [OUT_JSON]")
    if len(sys.argv) == 2:
        sys.stdout.write(names_json(Path(sys.argv[1])))
    else:
        write_names(Path(sys.argv[1]), Path(sys.argv[2]))
