"""Limits at the door (the public port's nginx): bodies larger than Flower's largest request are
refused with 413 before the SuperLink reads them, a flood from one address gets 503 (which
Flower's SuperNode retries with backoff: a real node is slowed, never failed), the
workers run unprivileged and still forward, and fleet-traffic.log stays under its cap."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from test_zk0bot import Zk0bot

from zk0.ops.log_cap import cap

MIB = 1024 * 1024
LARGEST_FLEET_REQUEST = 5 * MIB + 115  # a push-object of one full 5 MiB chunk (measured, see zk0bot.sh)
BURST, RATE = 2000, 500  # limit_req in write_proxy_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    bot = Zk0bot(tmp_path_factory.mktemp("zk0home"))
    started = bot("server", "start")
    assert started.returncode == 0, started.stderr + started.stdout
    yield bot
    assert bot("stop").returncode == 0


def superlink(bot: Zk0bot) -> psutil.Process:
    return next(p for p, command in commands(bot) if "zk0.ops.private_link" in command)


def commands(bot: Zk0bot) -> list[tuple[psutil.Process, list[str]]]:
    """The bot's processes with their command lines, less any that exited since the listing
    (a session's short-lived children can: a race, not a failure)."""
    found = []
    for process in bot.process_tree():
        try:
            found.append((process, process.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return found


def public(bot: Zk0bot) -> str:
    return f"https://127.0.0.1:{bot.port}"


def ca(bot: Zk0bot) -> str:
    return str(bot.home / "server" / "certs" / "ca.crt")


PUSH = {"Content-Type": "application/protobuf"}


def test_oversized_bodies_are_refused_before_the_superlink(server: Zk0bot):
    link = superlink(server)
    rss_before = link.memory_info().rss
    log = server.home / "server" / "superlink.log"
    lines_before = log.read_text().count("/v1/fleet/push-object")
    url = public(server) + "/v1/fleet/push-object"
    refused = httpx.post(url, verify=ca(server), content=b"\0" * (256 * MIB), headers=PUSH, timeout=60)
    assert refused.status_code == 413

    def chunked():  # no Content-Length: nginx counts while it streams
        for _ in range(64):
            yield b"\0" * (4 * MIB)

    try:
        streamed = httpx.post(url, verify=ca(server), content=chunked(), headers=PUSH, timeout=60).status_code
    except httpx.TransportError:  # nginx may close the connection mid-body
        streamed = 413
    assert streamed == 413
    assert log.read_text().count("/v1/fleet/push-object") - lines_before <= 1  # the chunked one, cut at 8 MiB
    assert link.memory_info().rss - rss_before < 64 * MIB  # it never held the 256 MiB
    largest = httpx.post(url, verify=ca(server), content=b"\0" * LARGEST_FLEET_REQUEST, headers=PUSH, timeout=60)
    assert largest.status_code not in (413, 502, 503), largest.status_code  # reaches the SuperLink


def test_workers_run_unprivileged_and_forward(server: Zk0bot):
    workers = [p for p, command in commands(server) if command[:1] and "nginx" in command[0] and "worker" in " ".join(command)]
    assert workers
    if os.geteuid() == 0:
        assert {p.username() for p in workers} <= {"www-data", "nobody"}, [p.username() for p in workers]
    reply = httpx.post(public(server) + "/v1/fleet/pull-messages", verify=ca(server), content=b"", headers=PUSH)
    assert reply.status_code not in (403, 413, 502, 503), reply.status_code  # the SuperLink answered
    assert "pull-messages" in (server.home / "server" / "fleet-traffic.log").read_text()


CLOSE = b"Connection: close\r\n\r\n"
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
FLEET = b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"


def pipelined(bot: Zk0bot, requests: int, last: bytes = GET) -> list[bytes]:
    """The statuses of `requests` GET / sent at once on one connection, the last one `last`
    (nginx serves at most 1000 requests per connection)."""
    context = ssl.create_default_context(cafile=ca(bot))
    with socket.create_connection(("127.0.0.1", bot.port)) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall((GET + b"\r\n") * (requests - 1) + last + CLOSE)
        received = bytearray()
        while chunk := tls.recv(1 << 16):
            received += chunk
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(received))


def test_a_flood_from_one_address_gets_503(server: Zk0bot):
    """Pipelined requests on a few connections: limit_req admits at most BURST + RATE x elapsed + 1,
    and the Fleet API shares the address's budget."""
    started = time.monotonic()
    statuses = [status for last in (GET,) * 9 + (FLEET,) for status in pipelined(server, 1000, last)]
    elapsed = time.monotonic() - started
    admitted, limited = statuses.count(b"403"), statuses.count(b"503")
    assert admitted + limited == len(statuses) == 10000, set(statuses)
    assert admitted <= BURST + RATE * elapsed + 1, (admitted, elapsed)
    assert limited > 0, (admitted, elapsed)
    assert statuses[-1] == b"503"  # the Fleet request, sent right after 999 others


def test_the_traffic_log_is_capped_while_nginx_keeps_appending(tmp_path: Path):
    """Copy and truncate: a writer holding the log open with O_APPEND (as nginx's workers do)
    continues at the start of the emptied file."""
    log = tmp_path / "fleet-traffic.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"x" * 150)
        assert not cap(log, 200)
        os.write(fd, b"y" * 100)
        assert cap(log, 200)
        assert (tmp_path / "fleet-traffic.log.1").read_bytes() == b"x" * 150 + b"y" * 100
        os.write(fd, b"z" * 10)
        assert log.read_bytes() == b"z" * 10
    finally:
        os.close(fd)
    assert not cap(tmp_path / "missing.log", 1)


def test_log_cap_runs_the_command_and_returns_its_status(tmp_path: Path):
    log = tmp_path / "x.log"
    result = subprocess.run([sys.executable, "-m", "zk0.ops.log_cap", str(log), "10", "--", sys.executable, "-c",
                             "import sys; sys.exit(3)"], timeout=60)
    assert result.returncode == 3
    bad = subprocess.run([sys.executable, "-m", "zk0.ops.log_cap", str(log), "ten", "--", "true"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("usage:")
