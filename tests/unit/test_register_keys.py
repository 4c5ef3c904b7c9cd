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
