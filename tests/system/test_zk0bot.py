"""zk0bot.sh end to end: real SuperLink and SuperNodes on 127.0.0.1, TLS and node auth on.

One secure federation (a server and two clients, each in its own tmux session) is
started for the module; the tests then run through it in order: the unregistered node
is refused, a 2-round run completes, a node killed mid-run ends the run within its
bound, and a restarted node rejoins. `zk0bot.sh stop` must leave no process behind.
(A SuperLink or ServerApp killed mid-run: test_zk0bot_resume, on a federation of its own.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from ports import free_port, worker_address
from unprivileged import as_nobody, nobody_dir, user_env  # noqa: F401 - nobody_dir is a fixture

from zk0.ops.fab import copy_app

ROOT = Path(__file__).resolve().parents[2]
ZK0BOT = ROOT / "zk0bot.sh"
TINY_RUN = (
    "model='tiny' local-steps=8 batch-size=4 lr=1e-3 eval-batches=2 num-workers=0 "
    "checkpoint-every=1 heldout-episodes=2"
)

class Zk0bot:
    """Runs zk0bot.sh with one ZK0_HOME and one server port, as an operator would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.env = {
            **os.environ,
            "ZK0_HOME": str(home),
            "ZK0_SERVER_PORT": str(self.port),
            "ZK0_SERVER_HOST": "127.0.0.1",
            "ZK0_SERVER": f"127.0.0.1:{self.port}",
            "ZK0_START_TIMEOUT": "60",
            "ZK0_LOCAL_ADDRESS": worker_address(),
            "HF_HUB_OFFLINE": "1",
        }

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ZK0BOT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )

    def pane_pids(self) -> list[int]:
        result = subprocess.run(
            ["tmux", "-S", str(self.home / "tmux.sock"), "list-panes", "-a", "-F", "#{pane_pid}"],
            capture_output=True, text=True,
        )
        return [int(pid) for pid in result.stdout.split()]

    def process_tree(self) -> list[psutil.Process]:
        processes = []
        for pid in self.pane_pids():
            try:
                root = psutil.Process(pid)
                processes += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return processes

    def client_processes(self, uri: str) -> list[psutil.Process]:
        """The client's tmux panes (SuperNode and executor, each under its restart loop) and their children."""
        client_dir = next(d for d in (self.home / "clients").iterdir() if uri in (d / "client.env").read_text())
        processes = []
        for session in (f"zk0-supernode-{client_dir.name}", f"zk0-executor-{client_dir.name}"):
            result = subprocess.run(
                ["tmux", "-S", str(self.home / "tmux.sock"), "list-panes", "-t", f"={session}", "-F", "#{pane_pid}"],
                capture_output=True, text=True, check=True,
            )
            pane = psutil.Process(int(result.stdout.split()[0]))
            processes += [pane, *pane.children(recursive=True)]
        return processes


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, demo_roots: list[Path]):
    """A secure SuperLink on 127.0.0.1; its two clients are started by the tests.

    Every command runs from a directory holding `zk0/pyproject.toml`, as $HOME does after the
    default install: flwr must not read the connection name as an app path there."""
    bot = Zk0bot(tmp_path_factory.mktemp("zk0home"))
    (bot.home / "zk0").mkdir(mode=0o700)
    (bot.home / "zk0" / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (bot.home / "zk0" / "pyproject.toml").chmod(0o600)  # the privacy test checks all of ZK0_HOME
    started = bot("server", "start")
    assert started.returncode == 0, started.stderr + started.stdout
    seen: list[psutil.Process] = []
    yield bot, [f"local:{root}" for root in demo_roots[:-1]], f"local:{demo_roots[-1]}", seen
    seen += bot.process_tree()
    stopped = bot("stop")
    assert stopped.returncode == 0, stopped.stderr
    time.sleep(1)
    survivors = [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, f"zk0bot stop left processes behind: {[p.cmdline()[:3] for p in survivors]}"


def join(bot: Zk0bot, uri: str) -> None:
    """A node's first start creates its key and is refused until the admin registers it; then it joins."""
    refused = bot("client", "start", uri)
    assert refused.returncode != 0
    assert "not registered" in error_lines(refused)[-1]
    public_keys = list((bot.home / "clients").glob("*/node.key.pub"))
    key = next(k for k in public_keys if uri in (k.parent / "client.env").read_text())
    registered = bot("server", "register", str(key))
    assert registered.returncode == 0, registered.stderr + registered.stdout
    joined = bot("client", "start", uri)
    assert joined.returncode == 0, joined.stderr + joined.stdout


def test_unregistered_node_is_refused_then_joins_after_register(federation):
    """A node's first start creates its key and is refused until the admin registers it."""
    bot, clients, _, _ = federation
    for uri in clients:
        join(bot, uri)
        again = bot("client", "start", uri)
        assert again.returncode == 0 and "already running" in again.stdout
    status = bot("status")
    assert status.returncode == 0
    assert "SuperLink: running" in status.stdout and "healthy" in status.stdout
    clients_running = [line for line in status.stdout.splitlines() if line.startswith("zk0bot: client ") and ": running, pid" in line]
    assert len(clients_running) == 2
    for line in clients_running:  # the machine's cores are shared out, and every client has its executor
        assert re.search(r"threads [1-9]\d*$", line) and ", executor pid " in line, line
    nodes = bot("server", "nodes")
    assert nodes.returncode == 0 and nodes.stdout.count(" online ") == 2, nodes.stdout + nodes.stderr
    for session in ("zk0-superlink", "zk0-superexec", "zk0-proxy"):
        assert f"{session}: running, pid" in status.stdout


def test_secure_two_round_run_completes_with_outputs(federation):
    """`zk0bot.sh run --rounds 2` on the tiny preset completes and leaves metrics and checkpoints."""
    bot, clients, eval_uri, seen = federation
    seen += bot.process_tree()
    config = f"{TINY_RUN} datasets='{clients[0]}' eval-dataset='{eval_uri}' node-wait-timeout=60.0 round-timeout=240.0"
    result = bot("run", "--rounds", "2", "--run-config", config, timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "completed" in result.stdout
    run_dirs = list((bot.home / "server" / "runs").iterdir())
    assert len(run_dirs) == 1
    rows = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert len(rows[-1]["clients"]) == 2 and len(rows[-1]["bytes_up"]) == 2
    assert (run_dirs[0] / "checkpoints" / "000002" / "pretrained_model" / "model.safetensors").is_file()
    assert (run_dirs[0] / "checkpoints" / "last").resolve().name == "000002"
    assert "[round 2/2] eval action MSE" in (run_dirs[0] / "server.log").read_text()
    shown = [line for line in result.stdout.splitlines() if "[round " in line]  # one line per round, as it ends
    assert [line.split("]")[0] for line in shown] == ["zk0bot: [round 0/2", "zk0bot: [round 1/2", "zk0bot: [round 2/2"]
    assert "| ETA " in shown[1] and result.stdout.rstrip().endswith(str(run_dirs[0]))
    status = bot("status")  # the run's state in full, though stdout is no terminal
    assert re.search(r"^run \d+: finished:completed, round 2/2, .*" + re.escape(str(run_dirs[0])) + "$", status.stdout,
                     re.MULTILINE), status.stdout
    logs = bot("server", "logs")
    assert logs.returncode == 0 and "[round 2/2] eval action MSE" in logs.stdout


def outsider_flwr(bot: Zk0bot, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The real flwr CLI of someone holding only the public ca.crt, aimed at the public port."""
    home = tmp_path / "outsider-flwr"
    home.mkdir(exist_ok=True)
    ca = tmp_path / "ca.crt"
    ca.write_bytes((bot.home / "server" / "certs" / "ca.crt").read_bytes())
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "target"\n\n[superlink.target]\naddress = "127.0.0.1:{bot.port}"\n'
        f'root-certificates = "{ca}"\n'
    )
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "flwr"), *args], env={**os.environ, "FLWR_HOME": str(home)},
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )


def test_outsider_cannot_steer_the_federation(federation, tmp_path: Path):
    """Holding only ca.crt and the public port: registering a node, listing/starting/stopping runs,
    listing/unregistering nodes and taking a ServerApp task are all refused; the admin path works."""
    bot, _, _, _ = federation
    key = tmp_path / "outsider.key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(key)], check=True)
    attempts = {
        "register": ("supernode", "register", f"{key}.pub", "target", "--format", "json"),
        "list nodes": ("supernode", "list", "target", "--format", "json"),
        "unregister": ("supernode", "unregister", "1", "target", "--format", "json"),
        "list runs": ("ls", "target", "--format", "json"),
        "run": ("run", str(copy_app(ROOT, tmp_path / "app")), "target", "--format", "json"),
        "stop": ("stop", "1", "target", "--format", "json"),
    }
    for name, args in attempts.items():
        result = outsider_flwr(bot, tmp_path, *args)
        assert '"success": true' not in result.stdout, (name, result.stdout)
    import httpx

    ca = str(tmp_path / "ca.crt")
    base = f"https://127.0.0.1:{bot.port}"
    for path in ("/v1/runtime/acquire-task", "/v1/control/list-runs", "/v1/control/register-node", "/health"):
        reply = httpx.post(base + path, verify=ca, content=b"", headers={"Content-Type": "application/protobuf"})
        assert reply.status_code == 403, (path, reply.status_code)
    admin = bot("server", "nodes")
    assert admin.returncode == 0 and "registered" not in admin.stderr, admin.stderr
    assert admin.stdout.count("zk0-node-") == 2  # the two clients, named by their key, nobody else
    link_port = int(dict(line.split("=", 1) for line in (bot.home / "server" / "server.env").read_text().split())["link_port"])
    listening = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == link_port}
    assert listening == {"127.0.0.1"}
    with pytest.raises(httpx.TransportError):  # the SuperLink admits only the proxy's client certificate
        httpx.post(f"https://127.0.0.1:{link_port}/v1/runtime/acquire-task", verify=ca, content=b"",
                   headers={"Content-Type": "application/protobuf"})


def test_state_under_zk0_home_is_private(federation):
    """Keys, logs, run outputs and checkpoints are readable by the operator only."""
    bot, _, _, _ = federation
    exposed = [str(path) for path in [bot.home, *bot.home.rglob("*")]
               if not path.is_symlink() and path.stat().st_mode & 0o077]
    assert exposed == []


def test_tls_mismatches_are_named_in_seconds(federation, tmp_path: Path):
    """A client with another CA, or started --insecure against the TLS server, is told
    'certificate/TLS mismatch' within seconds instead of a generic timeout."""
    bot, clients, _, _ = federation
    other = Zk0bot(tmp_path / "other-node")
    other.home.mkdir()
    other.port = bot.port
    other.env["ZK0_SERVER"] = bot.env["ZK0_SERVER"]
    for args in (("--ca-cert", str(make_ca(tmp_path))), ("--insecure",)):
        started = time.monotonic()
        result = other("client", "start", clients[0], *args)
        assert result.returncode != 0
        assert "certificate/TLS mismatch" in error_lines(result)[-1], result.stderr
        assert time.monotonic() - started < 30


def test_run_that_fails_at_start_names_the_reason(federation):
    """A run whose ServerApp fails before it has a run directory (its eval dataset does not exist)
    ends non-zero with the ServerApp's one-line reason."""
    bot, clients, _, _ = federation
    result = bot("run", "--rounds", "1", "--run-config", f"{TINY_RUN} eval-dataset='local:/nonexistent/eval'", timeout=300)
    assert result.returncode != 0
    assert "local:/nonexistent/eval: directory does not exist" in error_lines(result)[-1], result.stderr


def test_an_offline_server_refuses_a_hub_eval_dataset_before_submitting(federation):
    """The server runs with HF_HUB_OFFLINE=1 and the eval dataset is a hub id LeRobot's cache lacks:
    one line naming the fix, before anything is submitted (no run directory appears)."""
    bot, clients, _, _ = federation
    before = set((bot.home / "server" / "runs").iterdir())
    result = bot("run", "--rounds", "1", "--run-config", f"{TINY_RUN} eval-dataset='someone/not-cached'")
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0bot: error: eval-dataset 'someone/not-cached' is a Hugging Face Hub dataset, "
                               "the server runs offline"), lines[0]
    assert "submitted" not in result.stdout and set((bot.home / "server" / "runs").iterdir()) == before


def test_client_restarted_right_after_stop_rejoins(federation):
    """`client stop` then `client start` at once: the server still holds the old connection for
    about a minute; start waits for it (saying so) instead of claiming the node is unregistered."""
    bot, clients, _, _ = federation
    assert bot("client", "stop", clients[0]).returncode == 0
    again = bot("client", "start", clients[0], timeout=300)
    assert again.returncode == 0, again.stderr + again.stdout
    assert "not registered" not in again.stderr


def test_killed_node_ends_the_run_within_its_bound(federation):
    """A SuperNode crash mid-run: the run fails clearly once too few nodes remain, never hangs."""
    bot, clients, eval_uri, seen = federation
    seen += bot.process_tree()
    config = (
        f"{TINY_RUN} datasets='{clients[0]}' eval-dataset='{eval_uri}' fraction-evaluate=0.0 "
        f"node-wait-timeout=20.0 round-timeout=90.0"
    )
    run = subprocess.Popen(
        [str(ZK0BOT), "run", "--rounds", "4", "--run-config", config],
        env=bot.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    victims = bot.client_processes(clients[1])
    log = next((bot.home / "clients").glob("*/executor.log"))  # the warm ClientApp process's output
    deadline = time.monotonic() + 300
    while "round 1" not in "".join(p.read_text() for p in (bot.home / "clients").glob("*/executor.log")):
        assert time.monotonic() < deadline, f"round 1 never started; {log.read_text()[-500:]}"
        time.sleep(1)
    for victim in victims:  # the node's machine dies: its SuperNode and the loop that restarts it
        victim.send_signal(signal.SIGKILL)
    started = time.monotonic()
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode != 0, stdout + stderr
    assert "finished:failed" in error_lines(subprocess.CompletedProcess([], 1, stdout, stderr))[-1]
    assert time.monotonic() - started < 400
    status = bot("client", "status")
    assert f"client {clients[1]}: stopped" in status.stdout


def test_restarted_node_rejoins_the_next_run(federation):
    """The crashed client restarts with the same key and the federation trains again (logs streamed)."""
    bot, clients, eval_uri, seen = federation
    restarted = bot("client", "start", clients[1])
    assert restarted.returncode == 0, restarted.stderr + restarted.stdout
    seen += bot.process_tree()
    config = f"{TINY_RUN} datasets='{clients[0]}' eval-dataset='{eval_uri}' fraction-evaluate=0.0"
    result = bot("run", "--rounds", "1", "--stream", "--run-config", config, timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "[round 1/1] eval action MSE" in result.stdout
    assert "nodes 2 sampled: 2 ok, 0 rejected, 0 failed, 0 late" in result.stdout


@pytest.fixture
def bot(tmp_path: Path) -> Zk0bot:
    """zk0bot with a fresh, empty ZK0_HOME (no server started)."""
    instance = Zk0bot(tmp_path / "home")
    instance.home.mkdir()
    yield instance
    instance("stop")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("frobnicate",), "unknown command 'frobnicate'"),
        (("server", "start", "--bogus"), "unknown option '--bogus'"),
        (("client", "start", "not a uri"), "is not a valid dataset URI"),
        (("client", "start", "local:/nonexistent/dataset"), "directory does not exist"),
        (("client", "start", "local:relative/path"), "needs an absolute path"),
        (("run", "--rounds", "2"), "SuperLink is not running"),
        (("run", "--rounds", "zero"), "--rounds must be a positive integer"),
        (("server", "register", "/nonexistent.pub"), "does not exist"),
        (("server", "start", "--port", "abc"), "port 'abc' is not a number"),
        (("server", "start", "--port"), "option --port needs a value"),
        (("client", "start", "local:/nonexistent/dataset", "--ca-cert"), "option --ca-cert needs a value"),
        (("client", "start", "hf:owner/name", "--port", "abc"), "port 'abc' is not a number"),
        (("client", "start", "hf:owner/name", "--ca-cert", "/nonexistent/ca.crt"), "CA certificate '/nonexistent/ca.crt' not found"),
        (("client", "start", "hf:owner/name", "--threads", "0"), "--threads must be a positive integer"),
        (("run", "--run-config", "foo"), "'foo'"),
        (("run", "--run-config", "bogus-key=1"), "bogus-key"),
        (("run", "--resume"), "no unfinished run to resume"),
        (("run", "--resume", "/nope"), "run directory '/nope' does not exist"),
    ],
)
def test_bad_input_gives_one_clear_line(bot: Zk0bot, args: tuple[str, ...], message: str):
    """Each operator mistake is one `zk0bot: error:` line and a non-zero exit."""
    result = bot(*args)
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0bot: error:") and message in lines[0]


def test_every_command_has_help(bot: Zk0bot):
    """--help works on the tool and on every subcommand, without side effects."""
    for args in [("--help",), ("server", "--help"), ("server", "start", "--help"), ("client", "--help"),
                 ("client", "start", "--help"), ("run", "--help"), ("status", "--help"), ("stop", "--help"),
                 ("doctor", "--help")]:
        result = bot(*args)
        assert result.returncode == 0 and "Usage" in result.stdout, args
    assert not (bot.home / "server").exists()


def test_port_in_use_is_refused(bot: Zk0bot):
    """The SuperLink does not start on a port another process holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = bot("server", "start", "--port", str(port))
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in error_lines(result)[-1]


def make_ca(tmp_path: Path) -> Path:
    ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(tmp_path / "other-ca.key"), "-out", str(ca), "-days", "1", "-subj", "/CN=test"],
        check=True, capture_output=True,
    )
    return ca


def test_unreachable_server_is_reported(bot: Zk0bot, demo_roots: list[Path], tmp_path: Path):
    """A client pointed at a closed port says so at once: the check before the SuperNode starts
    (not its start-up wait of ZK0_START_TIMEOUT), and nothing is left running."""
    result = bot("client", "start", f"local:{demo_roots[0]}", "--server", f"127.0.0.1:{free_port()}",
                 "--ca-cert", str(make_ca(tmp_path)))
    assert result.returncode != 0
    line = error_lines(result)[-1]
    assert "could not connect to the server" in line and "check --server/ZK0_SERVER" in line and " within " not in line, line
    assert ": running" not in bot("client", "status").stdout


def test_missing_tmux_is_reported(bot: Zk0bot, tmp_path: Path):
    """Without tmux on PATH, zk0bot says how to install it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            if tool.name != "tmux" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    result = bot("server", "start", PATH=str(bin_dir))
    assert result.returncode != 0
    fix = "run: apt-get install -y tmux" if os.geteuid() == 0 else "apt-get install -y tmux"
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("zk0bot: error: tmux is not installed;") and fix in lines[0], lines


def test_shell_scripts_pass_shellcheck():
    """Bash is first-class code here: every script is shellcheck clean."""
    scripts = [ROOT / "zk0bot.sh", ROOT / "train-fl-simulation.sh", *ROOT.glob("scripts/*.sh"),
               *ROOT.glob("website/*.sh"), *ROOT.glob("*.sh"), ROOT / ".ci" / "run"]
    scripts = sorted({path for path in scripts if path.exists()})
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_arguments_are_checked_before_slow_work(bot: Zk0bot):
    """A bad --port or a missing CA is reported in well under the seconds a dataset check costs."""
    started = time.monotonic()
    result = bot("client", "start", "hf:owner/name", "--port", "abc")
    assert result.returncode != 0 and time.monotonic() - started < 5


def test_zk0_home_under_a_file_is_one_line(bot: Zk0bot, tmp_path: Path):
    """ZK0_HOME pointing below a regular file: one line, not a raw mkdir error."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = bot("server", "start", ZK0_HOME=str(blocker / "zk0"))
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0bot: error: cannot create ZK0_HOME="), lines[0]


def test_corrupt_server_certificate_is_one_line(bot: Zk0bot):
    """A damaged server.pem is named before anything starts (no traceback)."""
    certs = bot.home / "server" / "certs"
    certs.mkdir(parents=True)
    for name in ("ca.crt", "server.pem", "server.key"):
        (certs / name).write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    result = bot("server", "start")
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "is not a readable PEM certificate" in lines[0]


def test_messages_name_the_installed_command(bot: Zk0bot):
    """After install the command is `zk0bot`: no message tells users to run `zk0bot.sh`."""
    for args in [("--help",), ("server", "--help"), ("client", "--help"), ("run", "--help"), ("frobnicate",),
                 ("run", "--rounds", "2")]:
        result = bot(*args)
        assert "zk0bot.sh" not in result.stdout + result.stderr, args


def test_an_ordinary_user_finds_ffmpeg_and_nginx(nobody_dir: Path):
    """uid 65534 with a plain PATH (no /sbin, so no bare `ldconfig` or `nginx`): doctor finds both."""
    env = user_env(nobody_dir, ZK0_HOME=str(nobody_dir / "zk0home"))
    doctor = subprocess.run([*as_nobody(), str(ZK0BOT), "doctor"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=nobody_dir)
    assert "ok    FFmpeg libraries" in doctor.stdout, doctor.stdout
    assert "ok    nginx" in doctor.stdout, doctor.stdout


def test_an_ordinary_user_runs_a_server(nobody_dir: Path):
    """uid 65534: the server (SuperLink, SuperExec, nginx proxy) starts, answers and stops under
    that user's own ZK0_HOME."""
    port = free_port()
    env = user_env(nobody_dir, ZK0_HOME=str(nobody_dir / "zk0home"), ZK0_VENV=str(ROOT / ".venv"),
                   ZK0_SERVER_HOST="127.0.0.1", ZK0_SERVER_PORT=str(port), ZK0_START_TIMEOUT="60")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_nobody(), str(ZK0BOT), *args], env=env, capture_output=True, text=True,
                              timeout=180, cwd=nobody_dir)

    usable = subprocess.run([*as_nobody(), "test", "-x", str(ROOT / ".venv" / "bin" / "python")]).returncode == 0
    if not usable:  # e.g. a venv built on an interpreter under /root (pyenv): only root can run it
        pytest.skip("this checkout's .venv interpreter is not executable by uid 65534")
    try:
        started = run("server", "start")
        assert started.returncode == 0, started.stderr + started.stdout
        status = run("server", "status")
        assert "healthy" in status.stdout and "zk0-proxy: running" in status.stdout, status.stdout + status.stderr
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr


def test_insecure_server_still_keeps_the_control_api_private(bot: Zk0bot):
    """--insecure (local experiments): a loud warning, plain HTTP, and still only the Fleet API
    on the public port."""
    import httpx

    started = bot("server", "start", "--insecure")
    assert started.returncode == 0, started.stderr + started.stdout
    assert "WARNING: --insecure" in started.stderr
    for path in ("/v1/control/list-runs", "/v1/runtime/acquire-task"):
        assert httpx.post(f"http://127.0.0.1:{bot.port}{path}", content=b"").status_code == 403
    status = bot("server", "status")
    assert "insecure, healthy" in status.stdout, status.stdout + status.stderr


def test_round_lines_carry_an_eta(tmp_path: Path):
    """`zk0bot run`'s round lines: each new `[round k/N]` line of server.log once, with the time per
    round seen so far times the rounds left; partial lines wait for their end."""
    from zk0.ops.admin import RoundLines

    clock = iter([100.0, 130.0, 190.0])
    lines = RoundLines(clock=lambda: next(clock))
    log = tmp_path / "server.log"
    assert lines.new(log) == []
    log.write_text("t INFO [round 0/4] eval action MSE 2.0\nt INFO other\nt INFO [round 1/4] eval")
    assert lines.new(log) == ["[round 0/4] eval action MSE 2.0"]
    with log.open("a") as file:
        file.write(" action MSE 1.5\nt INFO [round 2/4] eval action MSE 1.2\n")
    assert lines.new(log) == ["[round 1/4] eval action MSE 1.5 | ETA 1 min 30 s",
                              "[round 2/4] eval action MSE 1.2 | ETA 1 min 30 s"]
