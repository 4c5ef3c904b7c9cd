"""zk0.ops.register_keys: whatever one key's request raises is that key's line, never the batch's end.

flwr's CLI helpers end the process on some errors (flwr_exit raises SystemExit after printing
the reason; click raises Exit): the client here raises what they raise, as the Control API
cannot be made to on demand.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest

from zk0.ops.register_keys import register


class Client:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def RegisterNode(self, request):  # noqa: N802 - Flower's method name
        print("the SuperLink said no")  # flwr_exit prints its reason, then raises
        raise self.error


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "node"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(path)], check=True)
    return f"{path}.pub"


@pytest.mark.parametrize("error", [SystemExit(1), click.exceptions.Exit(1), RuntimeError("boom")])
def test_any_failure_is_the_keys_error_line(key: str, error: BaseException, capsys: pytest.CaptureFixture):
    assert register(Client(error), key) == "error: the SuperLink said no"
    assert capsys.readouterr().out == ""  # nothing but the key lines reaches zk0bot


def test_an_interrupt_stops_the_batch(key: str):
    with pytest.raises(KeyboardInterrupt):
        register(Client(KeyboardInterrupt()), key)


def test_an_unusable_key_is_its_error_line(tmp_path: Path):
    bad = tmp_path / "bad.pub"
    bad.write_text("ecdsa-sha2-nistp384 AAAAnotakey c\n")
    assert register(Client(RuntimeError()), str(bad)).startswith("error: not a readable SSH public key")


def test_a_registered_key_is_kept_with_its_id_and_name(key: str, tmp_path: Path):
    """nodes/<id>.pub, .id and .name: the name given, else the one kept, else the key's comment."""
    from zk0.ops.commands import kept_key
    from zk0.ops.register_keys import keep

    nodes, key_file = tmp_path / "nodes", Path(key)
    kept = kept_key(nodes, key_file)
    comment = key_file.read_text().split()[2]
    assert keep(nodes, key_file, "123", "") == f"ok 123 {comment}"
    assert kept.with_suffix(".pub").read_bytes() == key_file.read_bytes()
    assert (kept.with_suffix(".id").read_text(), kept.with_suffix(".name").read_text()) == ("123\n", f"{comment}\n")
    assert keep(nodes, key_file, "456", "robot-7") == "ok 456 robot-7"
    assert keep(nodes, kept.with_suffix(".pub"), "in use", "") == "ok 456 robot-7"  # a restart: the kept name stays
    assert kept.with_suffix(".pub").stat().st_mode & 0o777 == 0o600


def test_a_refused_key_keeps_nothing(key: str, tmp_path: Path):
    from zk0.ops.register_keys import keep

    assert keep(tmp_path / "nodes", Path(key), "error: the SuperLink said no", "x") == \
        f"refused {key}: the SuperLink said no"
    assert not (tmp_path / "nodes").exists()
