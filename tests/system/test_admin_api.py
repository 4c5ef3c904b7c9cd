"""The admin's API is the admin's alone: as uid 65534 on the server machine, with the server's
public ca.crt, every Control and Runtime route is refused, the SuperLink's own port admits no
one but zk0's proxy, and no token or secret shows in `ps`; the admin's `flwr` and zk0bot work.

A real server (zk0bot server start as root) with a run whose ServerApp is alive, waiting for
nodes that never come."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from ports import free_port
from test_zk0bot import ROOT, Zk0bot
from unprivileged import NOBODY, as_nobody, give_to_nobody, nobody_dir  # noqa: F401 - nobody_dir is a fixture

from zk0.ops.fab import copy_app

FLWR = str(ROOT / ".venv" / "bin" / "flwr")


def settings(bot: Zk0bot) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (bot.home / "server" / "server.env").read_text().split())


# An API key the admin exports: zk0bot forwards it into its sessions, never onto a command line.
HF_TOKEN = "hf_zk0testtokenNeverShownInPs0123456789"


def superlink_routes() -> list[str]:
    """Every path Flower's SuperLink serves (its own FastAPI app), but /health."""
    from fastapi.routing import iter_route_contexts
    from flwr.superlink.main import create_app

    paths = {context.route.path for context in iter_route_contexts(create_app().routes)} - {"/health"}
    assert sum(path.startswith("/v1/control/") for path in paths) > 20, paths  # the routers were found
    assert sum(path.startswith("/v1/runtime/") for path in paths) > 10, paths
    return sorted(paths)


def serverapps(bot: Zk0bot) -> list[psutil.Process]:
    return [p for p in bot.process_tree() if "flwr-serverapp" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_roots: list[Path]):
    """A secure server with one run submitted: its ServerApp waits (node-wait-timeout) for nodes."""
    if os.geteuid() != 0:
        pytest.skip("switches to uid 65534: needs root")
    bot = Zk0bot(tmp_path_factory.mktemp("zk0home"))
    started = bot("server", "start", HF_TOKEN=HF_TOKEN)
    assert started.returncode == 0, started.stderr + started.stdout
    run_config = f"model='tiny' eval-dataset='local:{demo_roots[-1]}' node-wait-timeout=600 num-workers=0"
    submitted = subprocess.run(
        [FLWR, "run", str(copy_app(ROOT, tmp_path_factory.mktemp("app"))), "zk0-superlink", "--run-config", run_config,
         "--format", "json"],
        env={**os.environ, "FLWR_HOME": str(bot.home / "server" / "flwr-home")},
        capture_output=True, text=True, timeout=120, cwd=bot.home / "server",
    )
    assert '"success": true' in submitted.stdout, submitted.stdout + submitted.stderr
    run_id = re.search(r'"run-id": "?(\d+)', submitted.stdout).group(1)
    deadline = time.monotonic() + 120
    while not serverapps(bot) and time.monotonic() < deadline:
        time.sleep(1)
    assert serverapps(bot), (bot.home / "server" / "superexec.log").read_text()[-2000:]
    yield bot
    subprocess.run([FLWR, "stop", run_id, "zk0-superlink"], env={**os.environ, "FLWR_HOME": str(bot.home / "server" / "flwr-home")},
                   capture_output=True, timeout=60, cwd=bot.home / "server")
    assert bot("stop").returncode == 0


@pytest.fixture
def public_ca(server: Zk0bot, nobody_dir: Path) -> Path:  # noqa: F811
    ca = nobody_dir / "ca.crt"
    shutil.copy(server.home / "server" / "certs" / "ca.crt", ca)
    give_to_nobody(nobody_dir)
    return ca


def as_nobody_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*as_nobody(), str(ROOT / ".venv" / "bin" / "python"), "-c", code, *args],
                          capture_output=True, text=True, timeout=120, cwd="/")


POST_ALL = """
import sys, httpx
base, ca, *paths = sys.argv[1:]
for path in paths:
    reply = httpx.post(base + path, verify=ca, content=b"", headers={"Content-Type": "application/protobuf"})
    print(path, reply.status_code)
"""


def test_every_route_of_the_admin_port_is_refused_to_another_account(server: Zk0bot, public_ca: Path):
    admin_port = settings(server)["admin_port"]
    paths = superlink_routes()
    result = as_nobody_python(POST_ALL, f"https://127.0.0.1:{admin_port}", str(public_ca), *paths)
    assert result.returncode == 0, result.stderr
    codes = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
    assert set(codes) == set(paths)
    assert {path for path, code in codes.items() if code not in ("401", "403")} == set(), codes


def test_the_superlink_port_admits_only_the_proxy(server: Zk0bot, public_ca: Path):
    """Without the link's client certificate the TLS handshake fails: no route is reached."""
    link_port = settings(server)["link_port"]
    paths = ["/health", "/v1/control/list-runs", "/v1/runtime/acquire-task", "/v1/fleet/pull-messages"]
    result = as_nobody_python(POST_ALL, f"https://127.0.0.1:{link_port}", str(public_ca), *paths)
    assert result.returncode != 0 and result.stdout == "", result.stdout
    assert re.search(r"(ConnectError|RemoteProtocolError|ReadError).*", result.stderr), result.stderr[-800:]
    link_key = server.home / "server" / "certs" / "link-client.key"
    assert link_key.stat().st_mode & 0o077 == 0


def test_flwr_of_another_account_is_refused(server: Zk0bot, public_ca: Path, nobody_dir: Path):  # noqa: F811
    """The real flwr CLI, aimed at the admin port with the server's CA: without a token, then with a wrong one."""
    import base64
    import json

    admin_port = settings(server)["admin_port"]
    home = nobody_dir / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "t"\n\n[superlink.t]\naddress = "127.0.0.1:{admin_port}"\n'
        f'root-certificates = "{public_ca}"\n'
    )
    attempts = (("ls", "t"), ("supernode", "list", "t"), ("run", str(copy_app(ROOT, nobody_dir / "app")), "t"),
                ("stop", "1", "t"))
    for forged in (None, "0" * 64):
        if forged:
            key = f"flower.account-auth.127.0.0.1:{admin_port}"
            encode = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
            (home / "credentials.yaml").write_text(json.dumps({
                f"{key}.authn-type": encode("oidc"), f"{key}.oidc-access-token": encode(forged),
                f"{key}.oidc-refresh-token": encode(forged)}))
        give_to_nobody(nobody_dir)
        for args in attempts:
            result = subprocess.run([*as_nobody(), FLWR, *args, "--format", "json"],
                                    env={**os.environ, "FLWR_HOME": str(home)},
                                    capture_output=True, text=True, timeout=120, cwd=nobody_dir)
            assert '"success": false' in result.stdout and "Authentication failed" in result.stdout, (args, result.stdout)


def test_no_token_or_secret_shows_in_ps(server: Zk0bot):
    server_dir = server.home / "server"
    secrets = [(server_dir / name).read_text().strip() for name in ("admin.token", "superexec.secret")]
    app = serverapps(server)[0]
    args = app.cmdline()
    assert "--token" not in args and "--token-file" in args, args
    token_path = args[args.index("--token-file") + 1]
    token = Path(token_path.replace("/proc/self/", f"/proc/{app.pid}/")).read_text().strip()  # root reads it
    assert len(token) >= 32
    seen = subprocess.run([*as_nobody(), "ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    for secret in (*secrets, token, HF_TOKEN):
        assert secret not in seen
    unreadable = subprocess.run([*as_nobody(), "cat", token_path.replace("/proc/self/", f"/proc/{app.pid}/")],
                                capture_output=True, text=True)
    assert unreadable.returncode != 0 and token not in unreadable.stdout


def test_the_admin_keeps_flwr_and_zk0bot(server: Zk0bot):
    """zk0bot's own commands, and Flower's CLI with zk0bot's connection, run by the admin."""
    nodes = server("server", "nodes")
    assert nodes.returncode == 0 and "(no nodes registered)" in nodes.stdout, nodes.stderr
    listed = subprocess.run([FLWR, "ls", "--format", "json"], env={**os.environ, "FLWR_HOME": str(server.home / "server" / "flwr-home")},
                            capture_output=True, text=True, timeout=120, cwd="/")
    assert '"success": true' in listed.stdout and '"status": "running"' in listed.stdout, listed.stdout
    assert os.stat(server.home / "server" / "flwr-home" / "credentials.yaml").st_mode & 0o077 == 0
    assert ssl.PEM_cert_to_DER_cert((server.home / "server" / "certs" / "link-client.crt").read_text())


LINK = [str(ROOT / ".venv" / "bin" / "python"), "-m", "zk0.ops.private_link"]


def test_the_link_refuses_a_missing_client_ca_in_one_line(tmp_path: Path):
    for args in ([], ["--insecure"], [str(tmp_path / "missing.crt"), "--insecure"]):
        result = subprocess.run([*LINK, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing.crt is not a readable PEM certificate" in result.stderr


def test_the_link_never_serves_without_tls(tmp_path: Path):
    """--insecure would serve plain HTTP to anyone: the wrapper stops before uvicorn binds."""
    cert = tmp_path / "client.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tmp_path / "client.key"), "-out", str(cert), "-subj", "/CN=t"],
                   check=True, capture_output=True)
    result = subprocess.run([*LINK, str(cert), "--insecure", "--port", str(free_port())], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={**os.environ, "FLWR_HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "zk0.ops.private_link: the SuperLink must run with TLS" in result.stderr, result.stderr[-1000:]
