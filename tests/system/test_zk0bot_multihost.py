"""zk0bot across machines: a SuperLink on one host, 8 SuperNodes on others, a run with all 8.

Loopback addresses stand in for hosts: the server host's public address is PUBLIC (its
SuperLink and admin port stay on its own 127.0.0.1), node host i is 127.0.0.(i+2). Every
host has its own ZK0_HOME (keys, logs, tmux server), and a node host holds only what the
operator docs say to copy there: the server's ca.crt. Nodes dial the public address, so
the server certificate must name it; each SuperNode serves its executor on its host's own
address. The operator flow is the real one: first start refused (key created), the admin
registers the sent .pub files, second start joins. Then 200 more keys: `server nodes` and
`server status` stay readable.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest
from test_zk0bot import ZK0BOT, Zk0bot, error_lines

PUBLIC = "127.0.0.100"
PUBLIC_NAME = "fl.zk0.test"
NODES = 8
# The tiniest run that trains on every node: one round, one local step, no client evaluation.
RUN = (
    "model='tiny' local-steps=1 batch-size=2 lr=1e-3 eval-batches=1 num-workers=0 heldout-episodes=1 "
    f"checkpoint-every=1 fraction-train=1.0 fraction-evaluate=0.0 min-train-clients={NODES} "
    f"min-available-clients={NODES} node-wait-timeout=300.0 round-timeout=600.0"
)
# A node's start on a loaded 2-core machine (8 starts at once) may take minutes, never forever.
START_TIMEOUT = "240"


def write_datasets(root: Path) -> list[Path]:
    """NODES tiny node datasets and an eval dataset, written with LeRobot's writer."""
    from zk0.tools.demo_data import TASKS, DemoSpec, write_dataset

    spec = DemoSpec(episodes=3, frames_per_episode=12)
    roots = [write_dataset(root / f"robot_{i}", f"zk0-demo/robot_{i}", [i % len(TASKS)], spec, seed=100 + i)
             for i in range(NODES)]
    return [*roots, write_dataset(root / "eval", "zk0-demo/eval", list(range(len(TASKS))), spec, seed=999)]


def start_all(bots: list[Zk0bot], uris: list[str]) -> list[subprocess.CompletedProcess]:
    """`zk0bot client start` on every node host at once, as their operators would."""
    procs = [subprocess.Popen([str(ZK0BOT), "client", "start", uri, "--threads", "1"],
                              env=bot.env, cwd=bot.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for bot, uri in zip(bots, uris)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory):
    """The server host (started) and NODES node hosts (nothing started), with the node datasets."""
    base = tmp_path_factory.mktemp("hosts")
    roots = write_datasets(tmp_path_factory.mktemp("multihost-data"))
    server = Zk0bot(base / "server")
    server.home.mkdir()
    server.env.update(ZK0_SERVER_HOST=PUBLIC, ZK0_START_TIMEOUT=START_TIMEOUT)
    started = server("server", "start", "--public-address", PUBLIC_NAME)
    assert started.returncode == 0, started.stderr + started.stdout
    nodes = []
    for i in range(NODES):
        node = Zk0bot(base / f"node{i}")
        node.home.mkdir()
        shutil.copy(server.home / "server" / "certs" / "ca.crt", node.home / "ca.crt")  # what the admin hands out
        for name in ("ZK0_SERVER_PORT", "ZK0_SERVER_HOST"):
            node.env.pop(name)
        node.env.update(ZK0_SERVER=f"{PUBLIC}:{server.port}", ZK0_LOCAL_ADDRESS=f"127.0.0.{i + 2}",
                        ZK0_START_TIMEOUT=START_TIMEOUT)
        nodes.append(node)
    seen: list[psutil.Process] = []
    yield server, nodes, [f"local:{root}" for root in roots[:-1]], f"local:{roots[-1]}", seen
    for bot in [*nodes, server]:
        seen += bot.process_tree()
        bot("stop")
    survivors = [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"zk0bot stop left processes behind: {[p.cmdline()[:3] for p in survivors]}"


def test_server_certificate_names_the_public_address(hosts):
    """The certificate nodes verify carries the bound public address and --public-address."""
    server, _, _, _, _ = hosts
    sans = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(server.home / "server" / "certs" / "server.pem")], capture_output=True, text=True).stdout
    assert f"IP Address:{PUBLIC}" in sans and f"DNS:{PUBLIC_NAME}" in sans, sans
    status = server("server", "status")
    assert f"public port {PUBLIC}:{server.port}" in status.stdout and "healthy" in status.stdout, status.stdout


def test_eight_hosts_register_join_and_train_in_one_run(hosts):
    """Each node host: first start refused (key made), admin registers the sent key, second start
    joins; then one `zk0bot run` in which all 8 nodes train."""
    server, nodes, uris, eval_uri, seen = hosts
    for result in start_all(nodes, uris):
        assert result.returncode != 0 and "not registered" in error_lines(result)[-1], result.stderr
    inbox = server.home / "inbox"  # the .pub files node operators sent
    inbox.mkdir()
    for i, node in enumerate(nodes):
        (key,) = (node.home / "clients").glob("*/node.key.pub")
        shutil.copy(key, inbox / f"robot-{i}.pub")
    # One command for all: each node is named by its key's comment, zk0-node-<dataset slug>-<hash>.
    registered = server("server", "register", *(str(inbox / f"robot-{i}.pub") for i in range(NODES)))
    assert registered.returncode == 0 and f"registered {NODES} node keys" in registered.stdout, registered.stderr
    for result in start_all(nodes, uris):
        assert result.returncode == 0, result.stderr + result.stdout
    for i, node in enumerate(nodes):  # each node's state and Runtime API on its own host
        env = dict(line.split("=", 1) for line in next((node.home / "clients").glob("*/client.env")).read_text().split())
        assert env["address"] == f"127.0.0.{i + 2}" and env["server"] == f"{PUBLIC}:{server.port}", env
        listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == "LISTEN" and c.laddr.port == int(env["port"])}
        assert f"127.0.0.{i + 2}" in listening, listening
    listed = server("server", "nodes")
    assert listed.returncode == 0 and f"{NODES} online" in listed.stdout, listed.stdout + listed.stderr

    seen += [p for bot in [server, *nodes] for p in bot.process_tree()]
    result = server("run", "--rounds", "1", "--run-config", f"{RUN} datasets='{uris[0]}' eval-dataset='{eval_uri}'",
                    timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    (run_dir,) = (server.home / "server" / "runs").iterdir()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1]
    trained = list(rows[-1]["clients"])
    assert len(trained) == NODES, trained
    for i in range(NODES):
        assert any(f"robot-{i}" in name for name in trained), (i, trained)
    assert "[round 1/1]" in (run_dir / "server.log").read_text()


def test_two_hundred_nodes_stay_readable(hosts, tmp_path: Path):
    """200 more keys registered in one command: `server nodes` and `server status` give the counts
    first, the online nodes first, a page of rows and how many more there are; --all lists all."""
    server, _, _, _, _ = hosts
    known = int(re.match(r"nodes: (\d+) ", server("server", "nodes").stdout).group(1))  # the 8, when the run test ran
    keys = []
    for i in range(200):
        key = tmp_path / f"robot-{1000 + i}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", key.name, "-f", str(key)],
                       check=True)
        keys.append(f"{key}.pub")
    registered = server("server", "register", *keys)
    assert registered.returncode == 0, registered.stderr + registered.stdout
    assert "registered 200 node keys" in registered.stdout
    total = known + 200

    listed = server("server", "nodes")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    counts = {status: int(n) for n, status in re.findall(r"(\d+) (online|offline|registered)", lines[0])}
    assert lines[0].startswith(f"nodes: {total} (") and sum(counts.values()) == total, lines[0]
    assert counts["registered"] >= 200 and counts["online"] <= known, lines[0]  # the 8 may have left since
    online = counts["online"]
    rows = lines[2:-1]
    assert len(rows) == 20 and lines[-1] == f"... and {total - 20} more (zk0bot server nodes --all)", lines[-1]
    assert [" online " in row for row in rows] == [True] * online + [False] * (20 - online)

    every = server("server", "nodes", "--all").stdout.splitlines()
    assert len(every) == 2 + total and sum(bool(re.search(r"robot-1\d{3}", row)) for row in every) == 200

    status = server("server", "status").stdout
    assert f"nodes: {total} (" in status and f"... and {total - 10} more" in status, status


def sans(bot: Zk0bot) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(bot.home / "server" / "certs" / "server.pem")], capture_output=True, text=True).stdout


def test_a_new_public_address_gets_a_certificate_from_the_same_ca(tmp_path: Path):
    """Nodes keep their ca.crt when the admin adds a public address; a running server refuses to
    change its address in place."""
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    bot.env["ZK0_SERVER_HOST"] = PUBLIC
    try:
        assert bot("server", "start", "--public-address", "a.zk0.test").returncode == 0
        ca = (bot.home / "server" / "certs" / "ca.crt").read_bytes()
        moved = bot("server", "start", "--public-address", "b.zk0.test")
        assert moved.returncode != 0 and "stop it first" in error_lines(moved)[-1], moved.stderr
        assert bot("server", "stop").returncode == 0
        restarted = bot("server", "start", "--public-address", "b.zk0.test")
        assert restarted.returncode == 0, restarted.stderr + restarted.stdout
        assert "signing a new SuperLink certificate that also names DNS:b.zk0.test" in restarted.stdout
    finally:
        bot("stop")
    assert (bot.home / "server" / "certs" / "ca.crt").read_bytes() == ca
    assert all(name in sans(bot) for name in (f"IP Address:{PUBLIC}", "DNS:a.zk0.test", "DNS:b.zk0.test"))


def test_given_certificate_without_the_public_address_changes_nothing(tmp_path: Path):
    """The admin's own certificate must name the address nodes dial; else one line, nothing installed."""
    from test_operator_mistakes import make_server_certs

    ca, cert, key = make_server_certs(tmp_path / "pki")  # names localhost and 127.0.0.1 only
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    result = bot("server", "start", "--public-address", PUBLIC, "--ca-cert", str(ca), "--cert", str(cert),
                 "--key", str(key))
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert f"does not name IP:{PUBLIC}" in lines[0] and "nothing was changed" in lines[0], lines[0]
    assert not (bot.home / "server" / "certs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("server", "start", "--public-address", "fl.example.org,bad name"), "must list host names or IP addresses, comma-separated"),
        (("server", "start", "--public-address", "a..b"), "'a..b' is not a host name or IP address"),
        (("server", "start", "--host", "0.0.0.0;x"), "--host '0.0.0.0;x' is not an address"),
        (("client", "start", "hf:owner/name", "--local-address", "node7"), "--local-address must be an IP address"),
        (("client", "start", "hf:owner/name", "--local-address", "0.0.0.0"), "means every interface"),
        (("client", "start", "hf:owner/name", "--local-address", "::"), "means every interface"),
        (("server", "start", "--public-address", "fl.example.org:9092"), "'fl.example.org:9092' is not a host name or IP"),
        (("server", "start", "--public-address", "999.1.2.3"), "'999.1.2.3' is not a host name or IP"),
        (("server", "register", "a.pub", "b.pub", "--name", "x"), "--name labels one node"),
        (("server", "nodes", "--limit", "0"), "--limit must be a positive integer"),
    ],
)
def test_bad_addresses_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str):
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    result = bot(*args)
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr


def test_a_nat_server_with_an_admin_certificate_for_its_names_starts(tmp_path: Path):
    """Behind NAT the bind address (--host) is not a name nodes dial: the admin's certificate need
    not carry it. An IPv6 address matches in any spelling, a wildcard covers its names. With
    the proxy up, a different address is refused even when another part of the server is down."""
    from test_operator_mistakes import make_server_certs

    ca, cert, key = make_server_certs(tmp_path / "pki", "DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1,DNS:*.zk0.test")
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    try:
        started = bot("server", "start", "--host", PUBLIC, "--public-address", "fl.zk0.test,::1",
                      "--ca-cert", str(ca), "--cert", str(cert), "--key", str(key))
        assert started.returncode == 0, started.stderr + started.stdout
        assert (bot.home / "server" / "certs" / "server.pem").read_bytes() == cert.read_bytes()  # not re-signed
        subprocess.run(["tmux", "-S", str(bot.home / "tmux.sock"), "kill-session", "-t", "zk0-superexec"], check=True)
        moved = bot("server", "start", "--host", PUBLIC, "--public-address", "fl.zk0.test")
        assert moved.returncode != 0 and "stop it first" in error_lines(moved)[-1], moved.stderr
    finally:
        bot("stop")


def node_key(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-C", comment, "-f", str(path)],
                   check=True)


def test_registration_takes_relative_paths_and_keeps_what_registered(tmp_path: Path):
    """Keys named relative to the admin's directory register; in a batch with unusable keys each
    refused key is one warning, the command fails with the count, and the keys that did register
    are kept. A key's comment is the node operator's text: `server nodes` shows it cleaned."""
    bot = Zk0bot(tmp_path / "home")
    bot.home.mkdir()
    keys = bot.home / "keys"  # zk0bot runs in bot.home
    keys.mkdir()
    node_key(keys / "a", "robot-a")
    node_key(keys / "b", "robot-b\x1b[31mred")
    for bad in ("x", "y"):
        (keys / f"{bad}.pub").write_text("ecdsa-sha2-nistp384 AAAAnotakey robot\n")
    try:
        assert bot("server", "start").returncode == 0
        one = bot("server", "register", "keys/a.pub", "--name", "robot-7")
        assert one.returncode == 0 and "as 'robot-7'" in one.stdout, one.stderr + one.stdout
        batch = bot("server", "register", "keys/x.pub", "keys/b.pub", "keys/y.pub")
        lines = error_lines(batch)
        assert batch.returncode != 0 and len(lines) == 3, batch.stderr
        assert all("could not register" in line and "not a readable SSH public key" in line for line in lines[:2])
        refused = {Path(re.search(r"could not register (\S+): ", line).group(1)) for line in lines[:2]}
        assert refused == {keys / "x.pub", keys / "y.pub"}, lines  # named by absolute path
        assert "2 of 3 node key(s) could not be registered" in lines[2] and "the other 1 were registered" in lines[2]
        assert len(list((bot.home / "server" / "nodes").glob("*.id"))) == 2
        listed = bot("server", "nodes")
        assert listed.returncode == 0 and "nodes: 2 (" in listed.stdout, listed.stderr
        assert "robot-7" in listed.stdout and "robot-b[31mred" in listed.stdout and "\x1b" not in listed.stdout
    finally:
        bot("stop")
