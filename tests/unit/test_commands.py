"""zk0.ops.commands and zk0.ops.units: what an operator types into zk0bot, read and checked once,
handed to bash as `local` declarations; the systemd units `service install` writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zk0.ops import commands, units
from zk0.ops.commands import Help, Refused


def parse(home: Path, group: str, *argv: str) -> dict:
    return commands.parse(group, list(argv), home)[1]


def as_bash(home: Path, group: str, *argv: str, show: str) -> subprocess.CompletedProcess:
    """What zk0bot does with the words: eval the shell code in a function, then print SHOW."""
    code = subprocess.run([sys.executable, "-m", "zk0.ops.bot", "parse", str(home), group, *argv], capture_output=True,
                          text=True)
    script = f'f() {{ eval "$1"; {show}; }}; f "$CODE"'
    return subprocess.run(["bash", "-c", script], env={"CODE": code.stdout, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True) if code.returncode == 0 else code


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    for name in ("ZK0_SERVER", "ZK0_SERVER_PORT", "ZK0_SERVER_HOST", "ZK0_SERVER_HOSTNAMES", "ZK0_CA_CERT",
                 "ZK0_LOCAL_ADDRESS", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.mark.parametrize(("words", "message"), [
    (("server", "frobnicate"), "unknown server command 'frobnicate' (see: zk0bot server --help)"),
    (("server", "start", "--bogus"), "unknown option '--bogus' for 'server start' (see: zk0bot server --help)"),
    (("server", "start", "--port"), "option --port needs a value (see --help)"),
    (("server", "start", "--port", "--host"), "option --port needs a value"),
    (("server", "start", "--port", "abc"), "port 'abc' is not a number in 1-65535"),
    (("server", "start", "--port", "08"), "port '08' is not a number"),
    (("server", "start", "--port", "65536"), "port '65536' is not a number"),
    (("server", "start", "--host", "a b"), "--host 'a b' is not an address"),
    (("server", "start", "--public-address", "fl.example.org/x"), "must list host names or IP addresses"),
    (("server", "start", "--public-address", "fl.example.org:9092"), "is not a host name or IP address (no port"),
    (("server", "start", "--public-address", "1.2.3"), "'1.2.3' is not a host name or IP address"),
    (("server", "start", "--public-address", "-bad.org"), "'-bad.org' is not a host name"),
    (("server", "start", "--cert", "c.pem"), "--ca-cert, --cert and --key go together"),
    (("server", "stop", "now"), "unexpected argument 'now'"),
    (("server", "logs", "--all"), "unknown option '--all' for 'server logs'"),
    (("server", "register",), "usage: zk0bot server register <node-public-key-file>..."),
    (("server", "register", "/nonexistent.pub"), "public key file '/nonexistent.pub' does not exist"),
    (("server", "nodes", "--limit", "0"), "--limit must be a positive integer, got '0'"),
    (("client", "start"), "usage: zk0bot client start <dataset-uri>"),
    (("client", "start", "a/b", "c/d"), "client start takes one dataset URI, got 'a/b' and 'c/d'"),
    (("client", "start", "not a uri"), "is not a valid dataset URI"),
    (("client", "start", "local:relative/path"), "needs an absolute path"),
    (("client", "start", "local:/nonexistent/dataset"), "directory does not exist"),
    (("client", "start", "hf:o/n", "--server", "example.org"), "--server must be HOST:PORT, got 'example.org'"),
    (("client", "start", "hf:o/n", "--server", "example.org:0"), "port '0' is not a number"),
    (("client", "start", "hf:o/n", "--threads", "0"), "--threads must be a positive integer, got '0'"),
    (("client", "start", "hf:o/n", "--local-address", "localhost"), "--local-address must be an IP address"),
    (("client", "start", "hf:o/n", "--local-address", "0.0.0.0"), "means every interface"),
    (("client", "start", "hf:o/n", "--local-address", "::"), "means every interface"),
    (("client", "start", "hf:o/n", "--allow-app", "abc"), "--allow-app takes a FAB's SHA-256 (64 hex digits)"),
    (("client", "start", "hf:o/n", "--rename-map", "{x"), "--rename-map: node-config 'rename-map' is not JSON"),
    (("client", "start", "hf:o/n", "--rename-map", "{'a': 'b'}"), "must not contain single quotes"),
    (("client", "start", "hf:o/n", "--ca-cert", "/nonexistent/ca.crt"), "CA certificate '/nonexistent/ca.crt' not found"),
    (("client", "stop", "a", "b"), "usage: zk0bot client stop [<dataset-uri>]"),
    (("client", "logs", "-x"), "unknown option '-x' for 'client logs'"),
    (("run", "--rounds", "zero"), "--rounds must be a positive integer, got 'zero'"),
    (("run", "--resume", "--run-config", "x=1"), "--resume uses the interrupted run's own configuration"),
    (("run", "--quiet", "--stream"), "--stream and --quiet contradict each other; choose one"),
    (("run", "now"), "unexpected argument 'now'"),
    (("status", "--all"), "unknown option '--all' for 'status' (see: zk0bot status --help)"),
    (("service", "enable"), "unknown service command 'enable'"),
    (("service", "watch", "client"), "usage: zk0bot service watch client <dataset-uri>"),
    (("service", "watch", "node", "x"), "usage: zk0bot service watch server | client <dataset-uri>"),
])
def test_each_mistake_is_refused_in_one_line(home, words, message):
    with pytest.raises(Refused) as refused:
        parse(home, *words)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_refusal_reaches_bash_as_one_error_line(home):
    result = as_bash(home, "server", "start", "--port", "abc", show="echo never")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "zk0bot: error: port 'abc' is not a number in 1-65535\n"


@pytest.mark.parametrize(("words", "first_line"), [
    (("server", "--help"), "Usage: zk0bot server <command> [options]"),
    (("server", "start", "--port", "abc", "-h"), "Usage: zk0bot server start"),
    (("client", "logs", "--help"), "Usage: zk0bot client logs"),
    (("service", "install", "--help"), "Usage: zk0bot service install [--user] [--unit-dir DIR]"),
    (("run", "--help"), "Usage: zk0bot run [--rounds N]"),
    (("status", "--help"), "Usage: zk0bot status [--json]"),
])
def test_help_wins_over_every_other_word(home, words, first_line):
    with pytest.raises(Help) as answer:
        parse(home, *words)
    assert str(answer.value).startswith(first_line) and answer.value.status == 0


def test_a_command_help_is_its_own_entry_of_the_group(home):
    with pytest.raises(Help) as answer:
        parse(home, "server", "register", "--help")
    text = str(answer.value)
    assert "  register <node-public-key-file>... [--name NAME]" in text and "SuperLink restarts." in text
    assert "nodes [--all" not in text and "start [--port" not in text


def test_a_group_without_its_command_shows_the_group_and_fails(home):
    result = as_bash(home, "client", show="echo never")
    assert result.returncode == 1 and result.stdout.startswith("Usage: zk0bot client <command>")


def test_values_reach_bash_exactly(home, tmp_path):
    """Quotes, spaces, `$` and newlines in a value arrive as typed: the shell code quotes them."""
    ca = tmp_path / "a dir with 'quotes' and $HOME"
    ca.mkdir()
    (ca / "ca.crt").write_text("x")
    rename = '{"observation.images.top": "observation.images.$front"}'
    result = as_bash(home, "client", "start", "hf:o/n", "--ca-cert", str(ca / "ca.crt"), "--rename-map", rename,
                     "--allow-app", "A" * 64, "--allow-app", "b" * 64,
                     show='printf "%s|" "$ca" "$rename" "${allow[@]}" "$insecure" "$server_given"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("|")[:-1] == [str(ca / "ca.crt"), rename, "a" * 64, "b" * 64, "0", "0"]


def test_server_start_keeps_the_last_address_unless_told(home, monkeypatch):
    assert parse(home, "server", "start")["port"] == "9092"
    (home / "server").mkdir()
    (home / "server" / "server.env").write_text("port=9300\nhost=127.0.0.1\nnames=fl.example.org\n")
    got = parse(home, "server", "start")
    assert (got["port"], got["host"], got["names"], got["last_port"]) == ("9300", "127.0.0.1", "fl.example.org", "9300")
    monkeypatch.setenv("ZK0_SERVER_PORT", "9400")
    assert parse(home, "server", "start")["port"] == "9400"
    assert parse(home, "server", "start", "--port", "9500")["port"] == "9500"


def test_client_start_defaults(home, monkeypatch):
    (home / "ca.crt").write_text("x")
    got = parse(home, "client", "start", "hf:o/n")
    assert (got["server"], got["server_given"], got["ca"], got["allow"]) == ("127.0.0.1:9092", "0",
                                                                             str(home / "ca.crt"), [])
    monkeypatch.setenv("ZK0_SERVER", "fl.example.org:9092")
    assert parse(home, "client", "start", "hf:o/n")["server_given"] == "1"
    (home / "server" / "certs").mkdir(parents=True)
    (home / "server" / "certs" / "ca.crt").write_text("x")
    assert parse(home, "client", "start", "hf:o/n")["ca"] == str(home / "server" / "certs" / "ca.crt")
    assert parse(home, "client", "start", "hf:o/n", "--insecure", "--ca-cert", "/nope")["insecure"] == "1"


def test_run_resume_takes_an_optional_directory(home):
    assert parse(home, "run", "--resume")["resume_dir"] == ""
    assert parse(home, "run", "--resume", "/runs/x", "--rounds", "3")["resume_dir"] == "/runs/x"
    assert parse(home, "run", "--resume", "--rounds", "3")["rounds"] == "3"
    assert parse(home, "run", "--quiet")["quiet"] == ["--quiet"]


def node_key(path: Path, comment: str, body: str) -> Path:
    path.write_text(f"ecdsa-sha2-nistp384 {body} {comment}\n")
    return path


def test_a_node_name_must_be_free(home, tmp_path):
    nodes = home / "server" / "nodes"
    nodes.mkdir(parents=True)
    mine, other = node_key(tmp_path / "mine.pub", "a", "AAAA"), node_key(tmp_path / "other.pub", "b", "BBBB")
    commands.kept_key(nodes, other).with_suffix(".name").write_text("robot-7\n")
    with pytest.raises(Refused, match="the name 'robot-7' is taken by another node key"):
        parse(home, "server", "register", str(mine), "--name", "robot-7")
    assert parse(home, "server", "register", str(other), "--name", "robot-7")["name"] == "robot-7"  # its own
    with pytest.raises(Refused, match="must be 1-64 printable characters"):
        parse(home, "server", "register", str(mine), "--name", "x" * 65)
    with pytest.raises(Refused, match="--name labels one node"):
        parse(home, "server", "register", str(mine), str(other), "--name", "robot-8")
    (tmp_path / "junk.pub").write_text("ssh-rsa AAAA\n")
    with pytest.raises(Refused, match="is not a node public key"):
        parse(home, "server", "register", str(tmp_path / "junk.pub"))


def test_kept_key_names_the_file_as_zk0bot_always_did(tmp_path):
    """zk0bot kept keys as nodes/<sha256 of `awk '{print $2}' KEY`, 16 hex digits>: same names now."""
    key = node_key(tmp_path / "k.pub", "zk0-node-x", "AAAAE2VjZHNh")
    awk = subprocess.run(f"awk '{{print $2}}' {key} | sha256sum | cut -c1-16", shell=True, capture_output=True,
                         text=True).stdout.strip()
    assert commands.kept_key(tmp_path, key) == tmp_path / awk


def test_service_places_units_by_account(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    user = parse(home, "service", "install", "--user")
    assert (user["dir"], user["wanted"], user["systemctl"], user["review"]) == (
        str(tmp_path / "config" / "systemd" / "user"), "default.target", ["systemctl", "--user"], "0")
    review = parse(home, "service", "remove", "--unit-dir", str(tmp_path / "review"))
    assert (review["wanted"], review["review"]) == ("multi-user.target", "1")
    with pytest.raises(Refused, match="is not a directory: start the server or a client once by hand first"):
        parse(tmp_path / "nowhere", "service", "install", "--user")


def test_units_for_what_home_ran(home, tmp_path):
    (home / "server").mkdir()
    (home / "server" / "server.env").write_text("port=9092\n")
    client = home / "clients" / "demo-abc123"
    client.mkdir(parents=True)
    (client / "client.env").write_text('dataset-uri=local:/data/demo "50%"\n')
    written = units.install(Path("/opt/zk0"), home, tmp_path / "units", "multi-user.target")
    assert written == ["zk0-server.service", "zk0-client-demo-abc123.service"]
    text = (tmp_path / "units" / written[1]).read_text()
    assert 'ExecStart=/opt/zk0/zk0bot.sh service watch client "local:/data/demo \\"50%%\\""' in text
    assert f'Environment="ZK0_HOME={home}"' in text and "User=" in text and "WantedBy=multi-user.target" in text
    assert (tmp_path / "units" / written[0]).stat().st_mode & 0o777 == 0o644
    other = tmp_path / "other-home"
    (other / "server").mkdir(parents=True)
    (other / "server" / "server.env").write_text("port=9093\n")
    assert units.installed(other, tmp_path / "units") == []  # another ZK0_HOME's units stay
    assert units.installed(home, tmp_path / "units") == [tmp_path / "units" / name for name in written]


def test_nothing_to_install_is_one_line(home, tmp_path):
    with pytest.raises(Refused, match="nothing to install"):
        units.install(Path("/opt/zk0"), home, tmp_path / "units", "default.target")
