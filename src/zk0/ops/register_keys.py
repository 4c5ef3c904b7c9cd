"""Register SuperNode public keys with the SuperLink, many in one process (`zk0bot server
register` and the re-registration at `server start`).

    python -m zk0.ops.register_keys KEY_FILE...

Uses the flwr CLI's own Control API client and default connection ($FLWR_HOME/config.toml,
zk0bot's admin connection with its token). Prints one line per key as it is done,
`KEY_FILE<TAB>RESULT`, RESULT being Flower's node id, `in use` (the key is registered
already) or `error: <reason>`: a key's failure, whatever it raised, is that key's line, and
the caller matches lines to keys by name, so what registered is known even if the batch
stops. Exits non-zero, with one line (no tab) saying why, only when no request can be made. One `flwr supernode register` per key
costs a CLI start-up (~3 s here): 200 keys took minutes; in one process they take seconds.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import click
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.utils import flwr_cli_exc_handler, init_http_client_from_connection
from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611
from flwr.supercore.primitives.asymmetric import public_key_to_bytes, uses_nist_ec_curve

IN_USE = "already in use"


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


def main(argv: list[str]) -> int:
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # flwr names the connection
            client = init_http_client_from_connection(read_superlink_connection(None))
    except (click.ClickException, OSError, ValueError) as err:
        print(f"cannot reach the SuperLink's Control API: {one_line(str(err))}")
        return 1
    try:
        for key_file in argv:
            print(f"{key_file}\t{register(client, key_file)}", flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
