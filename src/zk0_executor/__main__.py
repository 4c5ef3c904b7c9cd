"""`python -m zk0_executor`: the command line of the warm ClientApp executor."""

from __future__ import annotations

import argparse
import signal
import sys

from zk0_executor.flower import (
    add_superexec_auth_secret_args,
    load_superexec_auth_secret,
    parse_address,
    start_parent_process_monitor,
    validate_and_resolve_root_certificates,
)
from zk0_executor.serve import Endpoint, Stop, serve
from zk0_executor.trust import AppPolicy, installed_app_dir, parse_allowed


def _stop(_signum, _frame) -> None:
    raise Stop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zk0_executor",
        description="Serve a SuperNode's ClientApp messages from one warm process. "
        "Start the SuperNode with `flower-supernode --isolation process --port PORT ...`. "
        "Only the zk0 installed here runs, and FABs allowed with --allow-app.",
    )
    parser.add_argument("--runtime-api-address", required=True, metavar="HOST:PORT",
                        help="the SuperNode's Runtime API (its --host and --port; e.g. 127.0.0.1:9094)")
    parser.add_argument("--insecure", action="store_true",
                        help="plain HTTP to the Runtime API (what a SuperNode started without --ssl-certfile serves)")
    parser.add_argument("--root-certificates", metavar="ROOT_CERT",
                        help="CA certificate of a Runtime API served with TLS (the SuperNode's --ssl-ca-certfile)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    parser.add_argument("--allow-app", action="append", default=[], metavar="SHA256",
                        help="also run the FAB with this SHA-256 (repeatable); a refused FAB's log line names it")
    add_superexec_auth_secret_args(parser)
    return parser


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """The Runtime API endpoint from the command line; exits with one line when it is unusable."""
    if parse_address(args.runtime_api_address) is None:
        sys.exit(f"zk0 executor: --runtime-api-address must be HOST:PORT, got '{args.runtime_api_address}'")
    if not args.insecure and args.root_certificates is None:
        sys.exit("zk0 executor: pass --insecure (SuperNode Runtime API over plain HTTP) or --root-certificates CA")
    try:
        secret = load_superexec_auth_secret(args.superexec_auth_secret_file)
    except ValueError as err:
        sys.exit(f"zk0 executor: {err}")
    certificates = validate_and_resolve_root_certificates(args.root_certificates, args.insecure)
    return Endpoint(args.runtime_api_address, args.insecure, certificates, secret)


def policy_from_args(args: argparse.Namespace) -> AppPolicy:
    """The installed zk0 and the allowed FAB hashes; exits with one line when either is unusable."""
    try:
        return AppPolicy(installed_app_dir(), parse_allowed(args.allow_app))
    except (LookupError, ValueError) as err:
        sys.exit(f"zk0 executor: {err}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    endpoint = endpoint_from_args(args)
    policy = policy_from_args(args)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)  # raises SIGINT in this process when the parent is gone
    serve(endpoint, policy)


if __name__ == "__main__":
    main()
