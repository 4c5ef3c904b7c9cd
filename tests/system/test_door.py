"""Limits at the door (the public port's nginx): bodies larger than Flower's largest request are
refused with 413 before the SuperLink reads them, a flood from one address gets 503 (which
Flower's SuperNode retries with backoff: a real node is slowed, never failed), one address
holds at most its share of connections however idle they are, the
workers run unprivileged and still forward, and fleet-traffic.log stays under its cap.
A slowloris flood during a run leaves the run and every node standing, and a SuperNode
process that dies is started again by zk0bot."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from test_zk0bot import TINY_RUN, ZK0BOT, Zk0bot

from zk0.ops.log_cap import cap
from zk0.ops.nginx import ADDRESS_CONNECTIONS

MIB = 1024 * 1024
LARGEST_FLEET_REQUEST = 5 * MIB + 115  # a push-object of one full 5 MiB chunk (measured, see zk0bot.sh)
BURST, RATE = 2000, 500  # limit_req in zk0.ops.nginx


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
    # nginx writes the access line once the request is finalized, which may be after the client
    # has read the reply.
    log = server.home / "server" / "fleet-traffic.log"
    deadline = time.monotonic() + 30
    while "pull-messages" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


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


def still_open(tls: ssl.SSLSocket) -> bool:
    """Whether nginx still holds this connection (it sent nothing and did not close it)."""
    tls.setblocking(False)
    try:
        tls.recv(1)
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False
    return False


def test_one_address_holds_at_most_its_share_of_connections(server: Zk0bot):
    """Connections that never send a request are counted per address as nginx accepts them: from
    one address the first ADDRESS_CONNECTIONS complete a TLS handshake and every later one is
    closed before it, while another address is served, and logged under its own address.
    (A held connection that nginx drops on its header timeout frees a place; those are counted.)"""
    context = ssl.create_default_context(cafile=ca(server))
    held, refused = [], 0
    try:
        for _ in range(ADDRESS_CONNECTIONS + 40):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=("127.0.0.77", 0))
            try:
                held.append(context.wrap_socket(raw, server_hostname="localhost"))
            except OSError:
                raw.close()
                refused += 1
        lapsed = sum(not still_open(tls) for tls in held)
        assert ADDRESS_CONNECTIONS <= len(held) <= ADDRESS_CONNECTIONS + lapsed, (len(held), lapsed, refused)
        reply = httpx.get(public(server) + "/", verify=ca(server))  # 127.0.0.1: its own share
        assert reply.status_code == 403, reply.status_code
    finally:
        for tls in held:
            tls.close()
    # The request's own address reaches the http server through the PROXY protocol header.
    with socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.78", 0)) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(GET + CLOSE)
        while tls.recv(1 << 16):
            pass
    log = server.home / "server" / "proxy.log"
    deadline = time.monotonic() + 30
    while ' 127.0.0.78 "GET / HTTP/1.1" 403' not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)


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


def test_log_cap_ends_with_its_parent(tmp_path: Path):
    """The capper is started beside a component (the child of the shell that becomes it): it caps
    while that process lives, once more when it is gone, then exits; bad arguments get the usage line."""
    log = tmp_path / "x.log"
    log.write_bytes(b"x" * 100)
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-m', 'zk0.ops.log_cap', '10', {str(log)!r}]); time.sleep(1)")])
    assert parent.wait(timeout=60) == 0
    deadline = time.monotonic() + 60
    # Attributes fetched by process_iter: a process that ends meanwhile is skipped, not an error.
    while any("zk0.ops.log_cap" in " ".join(p.info["cmdline"] or ()) and str(log) in (p.info["cmdline"] or ())
              for p in psutil.process_iter(["cmdline", "status"])
              if p.pid != os.getpid() and p.info["status"] != psutil.STATUS_ZOMBIE):
        assert time.monotonic() < deadline, "log_cap outlived its parent"
        time.sleep(0.5)
    assert log.read_bytes() == b"" and (tmp_path / "x.log.1").read_bytes() == b"x" * 100
    bad = subprocess.run([sys.executable, "-m", "zk0.ops.log_cap", "ten", str(log)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("usage:")


# The flood: IDLE connections from ATTACKERS other loopback addresses (the nodes use
# 127.0.0.1; each address within its share), half plain TCP that never speaks, half TLS that
# sends a request header and never ends it (a slowloris), each replaced as soon as nginx drops
# it, for FLOOD_SECONDS; with a burst of pipelined requests on top. The old door held 1,024
# connections in one worker that also served the admin path.
ATTACKERS = [f"127.0.0.{host}" for host in range(100, 120)]
IDLE = 2000
FLOOD_SECONDS = 30
HEADER_TIMEOUT = 10  # client_header_timeout in zk0.ops.nginx


class Flood:
    """Keeps IDLE connections open against the public port until stopped."""

    def __init__(self, bot: Zk0bot) -> None:
        self.bot, self.context = bot, ssl.create_default_context(cafile=ca(bot))
        self.selector = selectors.DefaultSelector()
        self.stop, self.opened, self.dropped, self.most = threading.Event(), 0, 0, 0
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _open(self, slow: bool) -> None:
        try:
            source = ATTACKERS[self.opened % len(ATTACKERS)]
            raw = socket.create_connection(("127.0.0.1", self.bot.port), timeout=5, source_address=(source, 0))
            sock = raw
            if slow:
                sock = self.context.wrap_socket(raw, server_hostname="localhost")
                sock.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            return  # refused or timed out: the door is shut to this one, which is fine
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, slow)
        self.opened += 1

    def _hold(self) -> None:
        slow = False
        while not self.stop.is_set():
            while len(self.selector.get_map()) < IDLE and not self.stop.is_set():
                self._open(slow)
                slow = not slow
            self.most = max(self.most, len(self.selector.get_map()))
            for key, _ in self.selector.select(timeout=0.5):  # readable: nginx closed it (or sent 408)
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                self.dropped += 1
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()

    def burst(self) -> list[bytes]:
        """Pipelined requests from the attacker's address: all refused (403) or limited (503)."""
        with socket.create_connection(("127.0.0.1", self.bot.port), source_address=(ATTACKERS[0], 0)) as raw, \
                self.context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall((GET + b"\r\n") * 999 + GET + CLOSE)
            received = bytearray()
            while chunk := tls.recv(1 << 16):
                received += chunk
        return re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(received))


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, demo_roots: list[Path]):
    """A secure server and two registered nodes on 127.0.0.1."""
    bot = Zk0bot(tmp_path_factory.mktemp("zk0home"))
    assert bot("server", "start").returncode == 0
    clients = [f"local:{root}" for root in demo_roots[:-1]]
    for uri in clients:
        assert bot("client", "start", uri).returncode != 0  # creates the key, refused until registered
        key = next(k for k in (bot.home / "clients").glob("*/node.key.pub") if uri in (k.parent / "client.env").read_text())
        assert bot("server", "register", str(key)).returncode == 0
        joined = bot("client", "start", uri, timeout=300)
        assert joined.returncode == 0, joined.stderr + joined.stdout
    yield bot, clients, f"local:{demo_roots[-1]}"
    assert bot("stop").returncode == 0


def online(bot: Zk0bot) -> int:
    nodes = bot("server", "nodes")
    assert nodes.returncode == 0, nodes.stderr
    return nodes.stdout.count(" online ")


def wait_online(bot: Zk0bot, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while online(bot) < count:
        assert time.monotonic() < deadline, bot("server", "nodes").stdout
        time.sleep(2)


def test_a_killed_supernode_is_started_again(federation):
    """SIGKILL of a SuperNode's process (not its session): zk0bot's loop logs one line and starts
    it again, and the node is online again once the server lets its old connection lapse."""
    bot, clients, _ = federation
    client_dir = next(d for d in (bot.home / "clients").iterdir() if clients[0] in (d / "client.env").read_text())
    node = next(p for p in bot.client_processes(clients[0]) if "zk0.ops.supernode" in p.cmdline())
    log = client_dir / "supernode.log"
    before = len(log.read_text())
    node.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while "exited (status 137); restarting in 2 s" not in log.read_text()[before:]:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(1)
    # The server counts the killed node online until its heartbeats lapse: only the new
    # process's activation shows that it is back.
    deadline = time.monotonic() + 300
    while "SuperNode ID:" not in log.read_text()[before:]:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(2)
    wait_online(bot, 2, timeout=300)
    assert any("zk0.ops.supernode" in p.cmdline() for p in bot.client_processes(clients[0]))


def test_a_slowloris_flood_during_a_run_stops_nothing(federation):
    """IDLE idle and half-sent connections plus a request burst against the public port for
    FLOOD_SECONDS while a run trains: the run completes, the admin path answers throughout,
    nginx drops the idle connections within its header timeout, and every node is online after."""
    bot, clients, eval_uri = federation
    config = f"{TINY_RUN} datasets='{clients[0]}' eval-dataset='{eval_uri}' fraction-evaluate=0.0 node-wait-timeout=120.0"
    run = subprocess.Popen([str(ZK0BOT), "run", "--rounds", "3", "--run-config", config], env=bot.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not any("round 1" in p.read_text() for p in (bot.home / "clients").glob("*/executor.log")):
        assert run.poll() is None and time.monotonic() < deadline, f"round 1 never started: {run.communicate()}"
        time.sleep(1)
    flood = Flood(bot)
    flood.thread.start()
    started = time.monotonic()
    statuses = flood.burst()
    admin = []  # the admin path's answers, each asked while the flood ran
    while time.monotonic() - started < FLOOD_SECONDS:
        admin.append(bot("server", "nodes", timeout=120).returncode)
        time.sleep(2)
    flood.stop.set()
    flood.thread.join(timeout=60)
    stdout, stderr = run.communicate(timeout=900)
    assert run.returncode == 0, stdout + stderr
    assert flood.most >= IDLE, flood.most  # the door held them all at once
    assert flood.dropped >= IDLE // 2, (flood.dropped, flood.opened)  # and dropped them on time
    assert set(statuses) <= {b"403", b"503"} and len(statuses) == 1000, set(statuses)
    assert admin and set(admin) == {0}, admin
    assert "worker_connections are not enough" not in (bot.home / "server" / "proxy.log").read_text()
    wait_online(bot, 2, timeout=60)
    rows = [json.loads(line) for line in next((bot.home / "server" / "runs").iterdir()).joinpath("metrics.jsonl")
            .read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1, 2, 3]
