"""zk0bot's small Python jobs, one subcommand each: `python -m zk0.ops.bot COMMAND ...`.

zk0bot.sh keeps the commands operators type and the process work (tmux, nginx, openssl); what
is easier said in Python (the operator's words: `parse`, zk0.ops.commands; JSON, HTTPS probes,
the node table, systemd units) lives here, tested in tests/unit/test_bot.py. Each command imports only what it needs: zk0bot calls
them on every start, and torch's import alone takes seconds. A refused input exits 2 with one
line on stderr, which zk0bot passes on as its own error.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import secrets
import sys
from collections import Counter
from pathlib import Path

from zk0.ops.commands import Refused



def _secret(_: argparse.Namespace) -> None:
    print(secrets.token_hex(32), end="")


def _flwr_credentials(args: argparse.Namespace) -> None:
    """The flwr CLI's credential store for ADDRESS: the admin token as a stored OIDC access
    token, which the CLI sends as `Authorization: Bearer` on every Control request."""
    token = base64.b64encode(Path(args.token_file).read_bytes().strip()).decode()
    key = f"flower.account-auth.{args.address}"
    # JSON is YAML, quoting the address's ':' for Flower's YAML reader.
    json.dump({f"{key}.authn-type": base64.b64encode(b"oidc").decode(), f"{key}.oidc-access-token": token,
               f"{key}.oidc-refresh-token": token}, sys.stdout)


def _probe(args: argparse.Namespace) -> None:
    """GET SCHEME://HOST:PORT/PATH: succeed on EXPECT ("ok": any 2xx). HTTPS checks the server's
    CA (and presents the link's client certificate with --client) for the name localhost,
    which zk0bot's certificates always carry, whatever HOST is."""
    import ssl

    import httpx

    verify: ssl.SSLContext | bool = False
    if args.scheme == "https":
        verify = ssl.create_default_context(cafile=f"{args.certs}/ca.crt")
        if args.client:
            verify.load_cert_chain(f"{args.certs}/link-client.crt", f"{args.certs}/link-client.key")
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:
        with httpx.Client(verify=verify, timeout=2) as client:
            reply = client.get(f"{args.scheme}://{host}:{args.port}{args.path}", extensions={"sni_hostname": "localhost"})
    except (httpx.HTTPError, OSError, ssl.SSLError) as err:
        raise Refused(f"{args.scheme}://{host}:{args.port}{args.path}: {err}") from None
    if not (reply.is_success if args.expect == "ok" else reply.status_code == int(args.expect)):
        raise Refused(f"{args.scheme}://{host}:{args.port}{args.path} answered {reply.status_code}, expected {args.expect}")


def node_table(flwr_json: str, nodes_dir: Path, limit: int) -> list[str]:
    """`zk0bot server nodes`: Flower's node list (`flwr supernode list --format json`, whatever
    it printed before the JSON) with each node's name from zk0bot's kept keys, or its key's
    comment when that differs. Online nodes first, then by name; LIMIT rows (0: all)."""
    from zk0.server.identities import clean_name

    try:
        nodes = json.loads(flwr_json[flwr_json.index("{"):]).get("nodes", [])
    except ValueError:
        raise Refused(f"Flower's node list is not JSON: {flwr_json.strip()[-200:]!r}") from None
    kept = {}
    for id_file in nodes_dir.glob("*.id"):
        key, name = id_file.with_suffix(".pub"), id_file.with_suffix(".name")
        parts = key.read_text().split() if key.is_file() else []
        comment = clean_name(parts[2]) if len(parts) > 2 else key.name  # the node operator's text
        kept[id_file.read_text().strip()] = (clean_name(name.read_text()) if name.is_file() else "") or comment, comment
    counts = Counter(node["status"] for node in nodes)
    order = {"online": 0, "offline": 1, "registered": 2}
    rows = sorted(((node, *kept.get(node["node-id"], ("(registered outside zk0bot)", ""))) for node in nodes),
                  key=lambda row: (order.get(row[0]["status"], 3), row[1], row[0]["node-id"]))
    # "registered": known to Flower, never connected since the SuperLink started.
    summary = ", ".join(f"{counts[s]} {s}" for s in order)
    summary += "".join(f", {n} {s}" for s, n in sorted(counts.items()) if s not in order)
    lines = [f"nodes: {len(nodes)} ({summary})"]
    if not nodes:
        return [*lines, "(no nodes registered)"]
    shown = rows if limit == 0 else rows[:limit]
    lines.append(f"{'node id':>20}  {'status':<12}  {'name':<24}  key (when not the name)")
    lines += [f"{node['node-id']:>20}  {node['status']:<12}  {name:<24}  {comment if comment != name else ''}".rstrip()
              for node, name, comment in shown]
    if len(shown) < len(rows):
        lines.append(f"... and {len(rows) - len(shown)} more (zk0bot server nodes --all)")
    return lines


def _nodes(args: argparse.Namespace) -> None:
    print("\n".join(node_table(sys.stdin.read(), Path(args.nodes_dir), args.limit)))


def _reachable(args: argparse.Namespace) -> None:
    import socket

    try:
        socket.create_connection((args.host, args.port), timeout=5).close()
    except OSError as err:
        raise Refused(f"{args.host}:{args.port} not reachable: {err}") from None


def _free_port(args: argparse.Namespace) -> None:
    from zk0.ops.ports import PortError, free_ports

    try:
        print(*free_ports(args.count, args.host))
    except PortError as err:
        raise Refused(str(err)) from None


def _port_free(args: argparse.Namespace) -> None:
    from zk0.ops.ports import is_free

    if not is_free(args.host, args.port):
        raise Refused(f"port {args.port} on {args.host} is in use")


def _json_get(args: argparse.Namespace) -> None:
    try:
        value = json.load(sys.stdin).get(args.key, "")
    except (ValueError, AttributeError):
        raise Refused("the input is not a JSON object") from None
    print(value)


def _imports(_: argparse.Namespace) -> None:
    """doctor's check: `ok NAME VERSION` or `bad NAME REASON` per package, then `cuda GPU|none`."""
    for name in ("torch", "torchcodec", "flwr", "lerobot", "zk0"):
        try:
            importlib.import_module(name if name != "torchcodec" else "torchcodec.decoders")
            print(f"ok {name} {getattr(importlib.import_module(name), '__version__', '')}")
        except Exception as err:  # noqa: BLE001 - any import failure is the report
            reason = str(err).splitlines()[0][:120] if str(err) else ""
            print(f"bad {name} {type(err).__name__}: {reason}")
    try:
        import torch

        print("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
    except Exception:  # noqa: BLE001 - reported above as a bad torch
        pass


def _write_units(args: argparse.Namespace) -> None:
    from zk0.ops.units import install

    print("\n".join(install(Path(args.root), Path(args.home), Path(args.dir), args.wanted)))


def _units_of(args: argparse.Namespace) -> None:
    from zk0.ops.units import installed

    print("\n".join(str(path) for path in installed(Path(args.home), Path(args.dir))))


def _sans(args: argparse.Namespace) -> None:
    from zk0.ops.certs import wanted

    print(",".join(wanted(args.host, args.names)))


def _cert_sans(args: argparse.Namespace) -> None:
    from zk0.ops.certs import carried

    print(",".join(carried(Path(args.cert))))


def _missing_sans(args: argparse.Namespace) -> None:
    from zk0.ops.certs import missing

    try:
        print(",".join(missing(Path(args.cert), [san for san in args.sans.split(",") if san])))
    except ValueError as err:  # an IP: entry that is no address
        raise Refused(f"{args.sans}: {err}") from None


def _version(_: argparse.Namespace) -> None:
    import zk0

    print(zk0.__version__)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m zk0.ops.bot", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        one = sub.add_parser(name, help=help)
        one.set_defaults(func=func)
        return one

    command("secret", _secret, "a random 256-bit secret, hex, no newline")
    creds = command("flwr-credentials", _flwr_credentials, "the flwr CLI's credentials.yaml for the admin token")
    creds.add_argument("address")
    creds.add_argument("token_file")
    probe = command("probe", _probe, "GET an endpoint; exit 0 when it answers as expected")
    probe.add_argument("port", type=int)
    probe.add_argument("path")
    probe.add_argument("expect", help='"ok" (any 2xx) or a status code')
    probe.add_argument("--scheme", choices=("https", "http"), default="https")
    probe.add_argument("--certs", default=".", help="directory of ca.crt (and link-client.crt/.key)")
    probe.add_argument("--client", action="store_true", help="present the link's client certificate")
    probe.add_argument("--host", default="127.0.0.1")
    nodes = command("nodes", _nodes, "the server's node table from `flwr supernode list --format json` on stdin")
    nodes.add_argument("nodes_dir")
    nodes.add_argument("limit", type=int)
    reach = command("reachable", _reachable, "succeed when HOST:PORT accepts a TCP connection (5 s)")
    reach.add_argument("host")
    reach.add_argument("port", type=int)
    free = command("free-port", _free_port, "COUNT distinct ports free on HOST now (zk0.ops.ports)")
    free.add_argument("--count", type=int, default=1)
    free.add_argument("--host", default="127.0.0.1")
    bindable = command("port-free", _port_free, "succeed when a server can bind HOST:PORT now")
    bindable.add_argument("host")
    bindable.add_argument("port", type=int)
    command("json-get", _json_get, "print KEY of the JSON object on stdin ('' when absent)").add_argument("key")
    command("imports", _imports, "doctor's import check of zk0's main packages")
    units = command("write-units", _write_units, "write the systemd units of what HOME ran into DIR (zk0.ops.units)")
    for name in ("root", "home", "dir", "wanted"):
        units.add_argument(name)
    units_of = command("units-of", _units_of, "the units in DIR that zk0bot wrote for HOME")
    units_of.add_argument("home")
    units_of.add_argument("dir")
    sans = command("sans", _sans, "the SANs the server certificate must carry for bind address HOST and NAMES")
    sans.add_argument("host")
    sans.add_argument("names")
    command("cert-sans", _cert_sans, "the SANs a certificate carries").add_argument("cert")
    lacking = command("missing-sans", _missing_sans, "which of SANS (comma-separated) CERT does not cover")
    lacking.add_argument("cert")
    lacking.add_argument("sans")
    command("version", _version, "zk0's version")
    sub.add_parser("parse", help="HOME GROUP ARG...: a zk0bot command's options as shell code (zk0.ops.commands)")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["parse"]:  # an operator's words, passed on untouched (zk0.ops.commands)
        from zk0.ops import commands

        return commands.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except Refused as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
