"""Register SuperNode public keys with the SuperLink, many in one process (`zk0bot server
register` and the re-registration at `server start`), and keep each in the server's nodes/.

    python -m zk0.ops.register_keys SERVER_DIR NAME KEY_FILE...

Uses the flwr CLI's own Control API client and default connection ($FLWR_HOME/config.toml,
zk0bot's admin connection with its token), from SERVER_DIR (flwr reads a connection name as an
app path where the working directory holds a matching folder). Each registered key is kept in
SERVER_DIR/nodes/ for restarts, `server nodes` and the ServerApp's labels: <id>.pub (the key),
<id>.id (Flower's node id) and <id>.name (NAME for a single key, else the name kept before, else
the key's comment, else its file name). Prints one line per key as it is done: `ok <node id> <name>`
or `refused <key file>: <reason>`; a key's failure, whatever it raised, is that key's line.
Exits 0, or 3 when any key was refused (the others are registered and kept), or 1 with one
line when a file cannot be written (naming the zk0bot command to run again, ZK0_RETRY_COMMAND). One `flwr supernode register` per key costs a CLI start-up
(~3 s here): 200 keys took minutes; in one process they take seconds.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import click
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import flwr_cli_exc_handler, init_http_client_from_connection
from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, uses_nist_ec_curve

from zk0.util.atomic import write_text

IN_USE = "already in use"
KEYS_REFUSED = 3


def public_key(key_file: str) -> bytes:
    """The key as Flower stores it; ValueError with the reason (flwr's own loader exits the process)."""
    try:
        with open(key_file, "rb") as file:
            key = serialization.load_ssh_public_key(file.read())
    except (OSError, ValueError, UnsupportedAlgorithm) as err:
        raise ValueError(f"not a readable SSH public key ({err})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not uses_nist_ec_curve(key):
        raise ValueError("not a NIST elliptic-curve key (node keys come from ssh-keygen -t ecdsa -b 384)")
    return public_key_to_bytes(key)


def register(client, key_file: str) -> str:
    """One key's line: its node id, `in use` or `error: <Flower's reason>`."""
    try:
        key = public_key(key_file)
    except ValueError as err:
        return f"error: {err}"
    said = io.StringIO()  # what flwr prints before it exits: the reason, off our stdout
    try:
        with contextlib.redirect_stdout(said), flwr_cli_exc_handler():
            reply = client.RegisterNode(request=RegisterNodeRequest(public_key=key))
    except KeyboardInterrupt:
        raise
    except click.ClickException as err:
        message = one_line(err.format_message())
        return "in use" if IN_USE in message else f"error: {message}"
    except BaseException as err:  # flwr_exit's SystemExit, click's Exit, gRPC/HTTP errors: this key's failure
        return f"error: {one_line(said.getvalue()) or one_line(str(err)) or type(err).__name__}"
    return str(reply.node_id) if reply.node_id else "error: the SuperLink gave no node id"


def one_line(text: str) -> str:
    return " ".join(text.split())


def keep(nodes_dir: Path, key_file: Path, result: str, name: str) -> str:
    """Keep a key Flower registered (RESULT: its node id, or `in use`); the key's output line."""
    from zk0.ops.commands import kept_key

    kept = kept_key(nodes_dir, key_file)
    if result.startswith("error: "):
        return f"refused {key_file}: {result[len('error: '):]}"
    node_id = result
    if result == "in use":
        id_file = kept.with_suffix(".id")
        node_id = id_file.read_text().strip() if id_file.is_file() else "(already registered)"
    nodes_dir.mkdir(parents=True, exist_ok=True)
    if not (kept.with_suffix(".pub").exists() and kept.with_suffix(".pub").samefile(key_file)):
        _write(kept.with_suffix(".pub"), key_file.read_text())
    if node_id != "(already registered)":
        _write(kept.with_suffix(".id"), f"{node_id}\n")
    name_file = kept.with_suffix(".name")
    if not name and name_file.is_file() and name_file.stat().st_size:
        name = name_file.read_text().rstrip("\n")
    else:
        if not name:
            fields = [line.split() for line in key_file.read_text().splitlines()]
            name = "".join(c for parts in fields if len(parts) > 2 for c in parts[2] if c.isprintable())
        _write(name_file, f"{name or key_file.name.removesuffix('.pub')}\n")
    return f"ok {node_id} {name or key_file.name.removesuffix('.pub')}"


def _write(path: Path, text: str) -> None:
    """PATH whole or not at all (0600); a failure is one line naming the zk0bot command to rerun."""
    try:
        write_text(path, text)
        path.chmod(0o600)
    except OSError as err:
        retry = os.environ.get("ZK0_RETRY_COMMAND", "zk0bot server register")
        raise OSError(f"cannot write {path}: {(err.strerror or str(err)).lower()}; free space on its disk "
                      f"(df -h {path.parent}), then run '{retry}' again") from None


def main(argv: list[str]) -> int:
    server_dir, name = Path(argv[0]).resolve(), argv[1]
    keys = [Path(key).resolve() for key in argv[2:]]
    os.chdir(server_dir)
    client = None
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # flwr names the connection
            client = init_http_client_from_connection(read_superlink_connection(None))
    except (click.ClickException, OSError, ValueError) as err:
        unreachable = f"error: no reply (cannot reach the SuperLink's Control API: {one_line(str(err))})"
    refused = False
    try:
        for key in keys:
            line = keep(server_dir / "nodes", key, register(client, str(key)) if client else unreachable, name)
            refused |= line.startswith("refused ")
            print(line, flush=True)
    except OSError as err:
        print(f"zk0bot: error: {err}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()
    return KEYS_REFUSED if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
