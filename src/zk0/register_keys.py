"""Register SuperNode public keys with the SuperLink, many in one process (`zk0bot server
register` and the re-registration at `server start`).

    python -m zk0.register_keys KEY_FILE...

Uses the flwr CLI's own Control API client and default connection ($FLWR_HOME/config.toml,
zk0bot's admin connection with its token). Prints one line per key, in order: Flower's node
id, `in use` (the key is registered already) or `error: <reason>`. Exits non-zero, with one
line saying why, only when no request can be made at all. One `flwr supernode register` per key
costs a CLI start-up (~3 s here): 200 keys took minutes; in one process they take seconds.
"""

from __future__ import annotations

import contextlib
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
    try:
        with flwr_cli_exc_handler():
            reply = client.RegisterNode(request=RegisterNodeRequest(public_key=key))
    except click.ClickException as err:
        message = " ".join(err.format_message().split())
        return "in use" if IN_USE in message else f"error: {message}"
    return str(reply.node_id) if reply.node_id else "error: the SuperLink gave no node id"


def main(argv: list[str]) -> int:
    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # flwr names the connection
            client = init_http_client_from_connection(read_superlink_connection(None))
    except (click.ClickException, OSError, ValueError) as err:
        print(f"cannot reach the SuperLink's Control API: {' '.join(str(err).split())}")
        return 1
    try:
        for key_file in argv:
            print(register(client, key_file), flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
