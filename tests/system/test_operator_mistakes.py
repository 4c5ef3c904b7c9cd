"""Operator mistakes (issue 18): nothing a typo can destroy, service accounts work, one clear line.

zk0bot runs for real here (openssl, tmux, a SuperLink where a start is needed); each test
fails on the code before the fix it covers.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_zk0bot import ROOT, ZK0BOT, Zk0bot, bot, error_lines  # noqa: F401 - bot is a fixture
from unprivileged import as_nobody, nobody_dir, user_env, user_path_without  # noqa: F401 - nobody_dir is a fixture

NOLOGIN = "/usr/sbin/nologin"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_server_certs(dir: Path, sans: str = "DNS:localhost,IP:127.0.0.1") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for SANS signed by it, as an admin's own PKI would give."""
    dir.mkdir(parents=True)
    ca, ca_key, cert, key, csr, ext = (dir / name for name in ("ca.crt", "ca.key", "server.pem", "server.key",
                                                                "server.csr", "server.ext"))
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-keyout", str(ca_key), "-out", str(ca), "-subj", f"/CN=test CA {dir.name}")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", "/CN=zk0-superlink")
    ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-out", str(cert), "-extfile", str(ext))
    return ca, cert, key


def installed_certs(bot: Zk0bot) -> dict[str, bytes]:
    certs = bot.home / "server" / "certs"
    return {name: (certs / name).read_bytes() for name in ("ca.crt", "server.pem", "server.key")}


@pytest.mark.parametrize("which", ["all", "key"])
def test_bad_given_certificates_change_nothing(bot: Zk0bot, tmp_path: Path, which: str):
    """`server start --ca-cert/--cert/--key` with a wrong file: one line naming it, and the
    federation's CA, certificate and key stay as they were (the next start still works)."""
    ca, cert, key = make_server_certs(bot.home / "server" / "certs")
    before = installed_certs(bot)
    garbage = tmp_path / "G"
    garbage.write_text("not a PEM file\n")
    _, _, other_key = make_server_certs(tmp_path / "other")
    given = (garbage, garbage, garbage) if which == "all" else (ca, cert, other_key)
    result = bot("server", "start", "--ca-cert", str(given[0]), "--cert", str(given[1]), "--key", str(given[2]))
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "nothing was changed" in lines[0] and str(given[2] if which == "key" else garbage) in lines[0], lines[0]
    assert installed_certs(bot) == before
    assert not list((bot.home / "server" / "certs").glob("backup-*"))


def test_given_certificates_replace_the_old_ones_which_are_kept(bot: Zk0bot, tmp_path: Path):
    """Good files are installed and the server starts on them; the replaced files are kept."""
    make_server_certs(bot.home / "server" / "certs")
    before = installed_certs(bot)
    ca, cert, key = make_server_certs(tmp_path / "admin-pki")
    result = bot("server", "start", "--ca-cert", str(ca), "--cert", str(cert), "--key", str(key))
    assert result.returncode == 0, result.stderr + result.stdout
    assert installed_certs(bot) == {"ca.crt": ca.read_bytes(), "server.pem": cert.read_bytes(),
                                    "server.key": key.read_bytes()}
    (backup,) = (bot.home / "server" / "certs").glob("backup-*")
    assert {name: (backup / name).read_bytes() for name in before} == before
    assert not (bot.home / "server" / "certs" / "ca.key").exists()  # the old CA's key went with the old CA
    assert "healthy" in bot("server", "status").stdout


def test_server_starts_for_an_account_with_a_nologin_shell(bot: Zk0bot):
    """tmux falls back to the login shell: with SHELL a nologin (service accounts), the
    SuperLink, SuperExec and proxy sessions still start and stay up."""
    started = bot("server", "start", "--insecure", SHELL=NOLOGIN)
    assert started.returncode == 0, started.stderr + started.stdout
    status = bot("server", "status", SHELL=NOLOGIN)
    assert "insecure, healthy" in status.stdout and "zk0-proxy: running" in status.stdout, status.stdout


def test_doctor_checks_that_sessions_run(bot: Zk0bot):
    """doctor runs a command in a tmux session the way every start does (here as a nologin account)."""
    doctor = bot("doctor", SHELL=NOLOGIN)
    assert any(line.startswith("  ok    tmux ") and "sessions run commands" in line
               for line in doctor.stdout.splitlines()), doctor.stdout


def test_doctor_names_a_zk0_home_that_cannot_be_created(bot: Zk0bot, tmp_path: Path):
    """ZK0_HOME below a regular file: doctor fails and names it (start would fail on it)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    doctor = bot("doctor", ZK0_HOME=str(blocker / "zk0"))
    assert doctor.returncode != 0
    assert f"  FAIL  ZK0_HOME {blocker / 'zk0'} cannot be created: {blocker} is not a writable directory" \
        in doctor.stdout.splitlines(), doctor.stdout


def test_a_user_without_sudo_is_told_whom_to_ask(nobody_dir: Path):
    """uid 65534 without sudo: zk0bot names the command for an administrator, not `sudo apt-get`."""
    env = user_env(nobody_dir, PATH=user_path_without(nobody_dir / "bin", "tmux", "sudo"),
                   ZK0_HOME=str(nobody_dir / "zk0home"))
    result = subprocess.run([*as_nobody(), str(ZK0BOT), "server", "start"], env=env, capture_output=True,
                            text=True, timeout=60, cwd=nobody_dir)
    assert error_lines(result) == [
        "zk0bot: error: tmux is not installed; ask an administrator to run: apt-get install -y tmux (as root)"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("server", "start", "--port", "08"), {}, "port '08' is not a number in 1-65535"),
        (("server", "start", "--port", "65536"), {}, "port '65536' is not a number in 1-65535"),
        (("server", "start"), {"ZK0_SERVER_PORT": "010"}, "port '010' is not a number in 1-65535"),
        (("client", "start", "hf:owner/name", "--server", "host:08", "--insecure"), {}, "port '08' is not a number"),
        (("client", "start", "hf:owner/name", "--port", "09", "--insecure"), {}, "port '09' is not a number"),
        (("status",), {"ZK0_START_TIMEOUT": "9s"}, "ZK0_START_TIMEOUT must be a whole number of seconds, got '9s'"),
    ],
)
def test_bad_numbers_are_one_line_without_bash_errors(bot: Zk0bot, args, env, message):
    """Numbers bash would misread (08 as octal) or choke on are refused in zk0bot's own words."""
    result = bot(*args, **env)
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0bot: error:") and message in lines[0], lines[0]


def test_restarting_a_running_client_with_another_server_is_refused(bot: Zk0bot, demo_roots):
    """`client start --server X` for a client that runs against another server: one line saying
    how to apply it (stop, then start), and the running client is left as it was."""
    started = bot("server", "start", "--insecure")
    assert started.returncode == 0, started.stderr + started.stdout
    uri = f"local:{demo_roots[0]}"
    joined = bot("client", "start", uri, "--insecure")
    assert joined.returncode == 0, joined.stderr + joined.stdout
    again = bot("client", "start", uri, "--insecure", "--server", "127.0.0.1:1")
    lines = error_lines(again)
    assert again.returncode != 0 and len(lines) == 1, again.stderr
    assert f"already runs with server 127.0.0.1:{bot.port}" in lines[0] and f"zk0bot client stop {uri}" in lines[0]
    assert f"client {uri}: running" in bot("client", "status").stdout
    same = bot("client", "start", uri, "--insecure")
    assert same.returncode == 0 and "already running" in same.stdout


def test_doctor_names_an_environment_this_user_cannot_run(nobody_dir: Path):
    """A venv built on an interpreter only root can run (pyenv under /root): doctor says so,
    not "all checks passed" nor "no python environment"."""
    venv_python = ROOT / ".venv" / "bin" / "python"
    if subprocess.run([*as_nobody(), "test", "-x", str(venv_python)]).returncode == 0:
        pytest.skip("uid 65534 can run this checkout's .venv interpreter")
    env = user_env(nobody_dir, ZK0_HOME=str(nobody_dir / "zk0home"), ZK0_VENV=str(ROOT / ".venv"))
    doctor = subprocess.run([*as_nobody(), str(ZK0BOT), "doctor"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=nobody_dir)
    assert doctor.returncode != 0
    assert f"  FAIL  the python environment {ROOT / '.venv'} is not usable by this user" in doctor.stdout, doctor.stdout


def test_zk0_home_too_long_for_tmux_is_one_line(bot: Zk0bot, tmp_path: Path):
    """tmux's socket lives in ZK0_HOME and a socket path has at most 107 bytes: a longer
    ZK0_HOME is named by doctor and by start (tmux would say "File name too long")."""
    home = tmp_path / ("h" * (120 - len(str(tmp_path))))
    doctor = bot("doctor", ZK0_HOME=str(home))
    assert f"  FAIL  ZK0_HOME {home} is too long for tmux's socket" in doctor.stdout, doctor.stdout
    started = bot("server", "start", ZK0_HOME=str(home))
    lines = error_lines(started)
    assert started.returncode != 0 and len(lines) == 1, started.stderr
    assert f"ZK0_HOME={home} is too long for tmux's socket" in lines[0]


def test_a_missing_given_certificate_is_named_as_missing(bot: Zk0bot, tmp_path: Path):
    """`--cert` naming no file: that is the line, not "does not name DNS:localhost"."""
    ca, _, key = make_server_certs(tmp_path / "given")
    result = bot("server", "start", "--ca-cert", str(ca), "--cert", str(tmp_path / "nope.pem"), "--key", str(key))
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert f"{tmp_path / 'nope.pem'} (given with --ca-cert/--cert/--key) is not a file" in lines[0], lines[0]


def test_status_of_a_zk0_home_that_is_a_file_is_an_error(bot: Zk0bot, tmp_path: Path):
    """ZK0_HOME naming a file: one line and exit 1, never "never started" with exit 0."""
    file = tmp_path / "home-file"
    file.write_text("")
    for args in (("status",), ("status", "--json")):
        result = bot(*args, ZK0_HOME=str(file))
        lines = error_lines(result)
        assert result.returncode != 0 and len(lines) == 1 and "is not a directory" in lines[0], result.stderr


def test_doctor_checks_what_the_role_needs(bot: Zk0bot):
    """A fresh install about to start a server: no CA and no reachable server are notes, not
    failures; for a node they fail, each with its fix; a bad role is one line."""
    closed = f"127.0.0.1:{bot.port}"  # nothing listens there yet
    server = bot("doctor", "--role", "server", ZK0_SERVER=closed, timeout=180)
    assert "FAIL  CA certificate" not in server.stdout and "FAIL  server" not in server.stdout, server.stdout
    assert "note  no CA certificate yet" in server.stdout, server.stdout
    node = bot("doctor", "--role", "node", ZK0_SERVER=closed, timeout=180)
    assert node.returncode != 0
    assert "FAIL  CA certificate" in node.stdout and f"FAIL  server {closed} not reachable" in node.stdout, node.stdout
    bad = bot("doctor", "--role", "robot")
    assert bad.returncode != 0 and error_lines(bad) == ["zk0bot: error: --role must be 'server' or 'node', got 'robot'"]


def test_version_names_the_package_and_the_commit(bot: Zk0bot):
    result = bot("version")
    assert result.returncode == 0
    assert result.stdout.startswith("zk0 ") and ", commit " in result.stdout and str(ROOT) in result.stdout


def test_status_json_is_one_object(bot: Zk0bot):
    import json

    result = bot("status", "--json")
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["server"] is None and state["clients"] == [] and state["version"].startswith("zk0 ")


def test_run_quiet_and_stream_contradict(bot: Zk0bot):
    result = bot("run", "--quiet", "--stream")
    assert result.returncode != 0 and error_lines(result) == [
        "zk0bot: error: --stream and --quiet contradict each other; choose one"]


def test_service_units_pass_systemd_analyze(bot: Zk0bot, tmp_path: Path):
    """`service install --unit-dir` writes a unit per component this ZK0_HOME ran, restarting on
    failure; systemd's own checker accepts them; `service remove` deletes them."""
    import shutil

    (bot.home / "server").mkdir()
    (bot.home / "server" / "server.env").write_text("port=9092\nhost=0.0.0.0\n")
    client = bot.home / "clients" / "demo-abc123"
    client.mkdir(parents=True)
    (client / "client.env").write_text("dataset-uri=local:/data/demo 50%\nserver=127.0.0.1:9092\n")
    units = tmp_path / "units"
    nothing = bot("service", "install", "--unit-dir", str(units), ZK0_HOME=str(tmp_path / "empty"))
    assert nothing.returncode != 0 and len(error_lines(nothing)) == 1
    installed = bot("service", "install", "--unit-dir", str(units))
    assert installed.returncode == 0, installed.stderr
    files = sorted(path.name for path in units.iterdir())
    assert files == ["zk0-client-demo-abc123.service", "zk0-server.service"]
    for path in units.iterdir():
        text = path.read_text()
        assert "Restart=on-failure" in text and f'Environment="ZK0_HOME={bot.home}"' in text
        assert "KillMode=process" in text and "ExecStop=" in text
    assert 'service watch client "local:/data/demo 50%%"' in (units / files[0]).read_text()
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", *map(str, units.iterdir())], capture_output=True,
                                text=True, timeout=120)
        assert verify.returncode == 0, verify.stderr
    removed = bot("service", "remove", "--unit-dir", str(units))
    assert removed.returncode == 0 and not list(units.iterdir())


def test_a_junk_ca_file_is_named_before_the_dataset_is_read(bot: Zk0bot, demo_roots: list[Path], tmp_path: Path):
    """A CA file that is no certificate: one line in seconds, before LeRobot opens the dataset."""
    import time

    junk = tmp_path / "ca.crt"
    junk.write_text("<html>not a certificate</html>\n")
    started = time.monotonic()
    result = bot("client", "start", f"local:{demo_roots[0]}", "--ca-cert", str(junk))
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert f"CA certificate '{junk}' is not a readable PEM certificate" in lines[0], lines[0]
    assert time.monotonic() - started < 10


def test_a_subcommand_help_shows_that_subcommand(bot: Zk0bot):
    """`zk0bot server start --help` shows start's entry, not every server command's."""
    start = bot("server", "start", "--help")
    assert start.returncode == 0 and start.stdout.startswith("Usage: zk0bot server start")
    assert "--public-address" in start.stdout and "register <node-public-key-file>" not in start.stdout
    logs = bot("client", "logs", "--help")
    assert logs.returncode == 0 and "Show (or follow) a client's log" in logs.stdout and "--rename-map" not in logs.stdout


def test_an_unwritable_zk0_home_is_named_before_the_dataset_is_read(nobody_dir: Path):
    """uid 65534 with ZK0_HOME a directory it cannot write: one line in seconds, not a raw
    `mkdir: Permission denied` after the dataset check."""
    import time

    if subprocess.run([*as_nobody(), "test", "-x", str(ROOT / ".venv" / "bin" / "python")]).returncode != 0:
        pytest.skip("this checkout's .venv interpreter is not executable by uid 65534")
    home = nobody_dir / "root-owned"
    home.mkdir(mode=0o755)
    os.chown(home, 0, 0)
    dataset = nobody_dir / "dataset"
    dataset.mkdir()
    ca = nobody_dir / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(nobody_dir / "ca.key"), "-out", str(ca), "-days", "1", "-subj", "/CN=t")
    ca.chmod(0o644)
    env = user_env(nobody_dir, ZK0_HOME=str(home), ZK0_VENV=str(ROOT / ".venv"))
    started = time.monotonic()
    result = subprocess.run([*as_nobody(), str(ZK0BOT), "client", "start", f"local:{dataset}", "--ca-cert", str(ca)],
                            env=env, capture_output=True, text=True, timeout=120, cwd=nobody_dir)
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0] == f"zk0bot: error: ZK0_HOME={home} is not writable by nobody; set ZK0_HOME to a directory of this user's"
    assert time.monotonic() - started < 15


def test_an_offline_node_refuses_a_hub_dataset_it_has_no_copy_of(bot: Zk0bot, tmp_path: Path):
    """HF_HUB_OFFLINE=1 and a (typo'd) hub dataset LeRobot's cache lacks: one line, and no key pair
    is made for it."""
    cache = tmp_path / "lerobot-cache"
    ca = tmp_path / "ca.crt"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(tmp_path / "ca.key"), "-out", str(ca), "-days", "1", "-subj", "/CN=t")
    result = bot("client", "start", "hf:someone/typo-dataset", "--ca-cert", str(ca), HF_HUB_OFFLINE="1",
                 HF_LEROBOT_HOME=str(cache))
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0] == (f"zk0bot: error: dataset hf:someone/typo-dataset is a Hugging Face Hub dataset, HF_HUB_OFFLINE "
                        f"is set and {cache}/someone/typo-dataset holds no copy; check the name, or download it while "
                        "online (or pass local:/path)")
    assert not list(bot.home.rglob("node.key*"))


def on_a_full_disk(bot: Zk0bot, limit: int, *args: str) -> subprocess.CompletedProcess:
    """zk0bot where every write past `limit` bytes of a file fails, as on a full disk, without root
    or a mount: RLIMIT_FSIZE makes it fail with EFBIG ("File too large") where a full disk says
    ENOSPC; SIGXFSZ is ignored so that the writer sees the error instead of being killed."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return subprocess.run([str(ZK0BOT), *args], env=bot.env, capture_output=True, text=True, timeout=120,
                          cwd=bot.home, preexec_fn=cap)


def full_disk_line(path: Path, command: str) -> str:
    return (f"zk0bot: error: cannot write {path}: file too large; free space on its disk (df -h {path.parent}), "
            f"then run 'zk0bot {command}' again")


def partial_files(dir: Path) -> list[str]:
    """Files a failed write may leave: empty ones and zk0bot's temporary (hidden) ones."""
    return [str(path) for path in dir.rglob("*") if path.is_file() and (path.stat().st_size == 0 or path.name[0] == ".")]


def test_a_full_disk_at_server_start_is_one_line_and_the_next_start_makes_the_certificates(bot: Zk0bot):
    """The disk fills up while `server start` makes the CA (its key fits, its certificate does
    not): one line naming the file, no truncated key or certificate left behind (openssl exits
    0 after a short write), and the next start makes a working set."""
    certs = bot.home / "server" / "certs"
    full = on_a_full_disk(bot, 300, "server", "start")
    assert full.returncode != 0
    assert error_lines(full) == [full_disk_line(certs / "ca.crt", "server start")], full.stderr
    assert sorted(path.name for path in certs.iterdir()) == ["ca.key"]  # written whole before the disk filled
    assert not partial_files(bot.home)
    started = bot("server", "start")
    assert started.returncode == 0, started.stderr + started.stdout
    assert "healthy" in bot("server", "status").stdout


def test_a_full_disk_at_client_start_leaves_no_partial_node_key(bot: Zk0bot, demo_roots: list[Path]):
    """The disk fills up while `client start` makes the node's key pair: one line, no truncated or
    empty node.key (a start would take it for a key and never make another); the next start makes
    the pair, as it does over an empty node.key an earlier zk0bot left, and the server reads it."""
    started = bot("server", "start")
    assert started.returncode == 0, started.stderr + started.stdout
    uri, ca = f"local:{demo_roots[0]}", bot.home / "server" / "certs" / "ca.crt"
    # LeRobot's dataset check writes Hugging Face's cache: filled first, it only reads it under the limit.
    checked = subprocess.run([sys.executable, "-m", "zk0", "check-dataset", uri], env=bot.env, capture_output=True,
                             text=True, timeout=300)
    assert checked.returncode == 0, checked.stderr
    full = on_a_full_disk(bot, 300, "client", "start", uri, "--ca-cert", str(ca))
    (client,) = (bot.home / "clients").iterdir()
    assert full.returncode != 0
    assert error_lines(full) == [full_disk_line(client / "node.key", "client start")], full.stderr
    assert not (client / "node.key").exists() and not (client / "node.key.pub").exists()
    assert not partial_files(client)
    (client / "node.key").write_bytes(b"")
    again = bot("client", "start", uri, "--ca-cert", str(ca))
    assert again.returncode != 0 and "created this node's key pair" in again.stdout, again.stderr + again.stdout
    pub = (client / "node.key.pub").read_text()
    assert pub.startswith("ecdsa-sha2-nistp384 ") and pub.strip() in again.stderr  # the key the admin must register
    assert "node not registered" in again.stderr, again.stderr  # the server checked the node's signature
    # Registering it on a full disk: the SuperLink takes the key, zk0bot cannot keep it; one line,
    # and the next register keeps it (the node is then known by its key).
    nodes = bot.home / "server" / "nodes"
    full = on_a_full_disk(bot, 100, "server", "register", str(client / "node.key.pub"))
    assert full.returncode != 0
    (kept,) = [line for line in error_lines(full)]
    assert kept.startswith(f"zk0bot: error: cannot write {nodes}/") and kept.endswith(
        f"file too large; free space on its disk (df -h {nodes}), then run 'zk0bot server register' again"), kept
    assert not partial_files(nodes)
    registered = bot("server", "register", str(client / "node.key.pub"))
    assert registered.returncode == 0, registered.stderr + registered.stdout
    assert [path.read_text() for path in nodes.glob("*.pub")] == [pub]
