"""`zk0 check-run-config`: `--run-config` strings read exactly as Flower reads them, and every
mistake Flower would skip, misreport or refuse unnamed becomes one line naming the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from zk0.ops.run_config_args import RunConfigArgsError, merged_run_config

ROOT = Path(__file__).resolve().parents[2]
ZK0 = [sys.executable, "-m", "zk0"]


def merged(*strings: str) -> dict:
    return merged_run_config(list(strings), ROOT)


def test_values_and_precedence_are_flowers():
    """Valid strings give exactly the run config Flower builds (pyproject defaults, then each
    string in order, later ones winning), quoted strings with spaces and TOML numbers included."""
    strings = ["num-rounds=3 lr=1e-3 device='cpu'", "num-rounds=5 wandb-project='my project' proximal-mu=0"]
    ours = merged(*strings)
    assert ours == get_fused_config_from_dir(ROOT, parse_config_args(strings))
    assert ours["num-rounds"] == 5 and ours["lr"] == 1e-3 and ours["wandb-project"] == "my project"


@pytest.mark.parametrize(
    ("strings", "message"),
    [
        (["foo"], "run-config token 'foo' in \"foo\" is not key=value"),
        (["num-rounds=2 foo"], "run-config token 'foo'"),
        (["lr = 1e-4"], "run-config token 'lr' in \"lr = 1e-4\" is not key=value"),
        (["lr=1e-4 lr=2e-4"], "run-config key 'lr' is given twice"),
        (["device=cpu"], "run-config key 'device': cpu is not a value; quote strings (device='cpu')"),
        (["lokal-steps=3"], "unknown run-config key 'lokal-steps'; did you mean 'local-steps'?"),
        (["num-rounds=3", "zzz=1"], "unknown run-config key 'zzz'; valid keys"),
        (["num-rounds=2.5"], "run-config key 'num-rounds' must be an integer, got 2.5"),
        (["fraction-train=0.0"], "run-config key 'fraction-train' must be > 0"),
        (["lr-schedule='linear'"], "run-config key 'lr-schedule' must be one of constant, cosine"),
        (["num-rounds=2", "my.toml"], "cannot be combined"),
    ],
)
def test_mistakes_name_the_key(strings, message):
    """Each mistake is one line that names the offending token or key."""
    with pytest.raises(ValueError) as caught:
        merged(*strings)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_key_repeated_in_a_later_string_overrides():
    """Across strings a repeated key is no mistake: that is how a script's preset is overridden."""
    assert merged("output-dir='/a' num-rounds=3", "output-dir='/b'")["output-dir"] == "/b"


def test_a_toml_file_alone_is_read_as_flower_reads_it(tmp_path):
    path = tmp_path / "overrides.toml"
    path.write_text('num-rounds = 4\ndevice = "cpu"\n')
    assert merged(str(path))["num-rounds"] == 4
    path.write_text("nope = 1\n")
    with pytest.raises(RunConfigArgsError, match="unknown run-config key 'nope'"):
        merged(str(path))


def test_app_dir_without_a_flower_config_is_named(tmp_path):
    with pytest.raises(RunConfigArgsError, match="pyproject.toml"):
        merged_run_config(["lr=1"], tmp_path)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ZK0, "check-run-config", "--app-dir", str(ROOT), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_with_one_line_and_exit_2():
    result = run_cli("num-rounds=3", "foo")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "zk0: error: run-config token 'foo' in \"foo\" is not key=value; write key=value pairs separated by "
        "spaces, strings in quotes, e.g. \"local-steps=20 device='cpu'\""
    ]


def test_cli_prints_the_merged_config_as_json():
    result = run_cli("--json", "num-rounds=3", "num-rounds=4 device='cpu'")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["num-rounds"] == 4 and config["device"] == "cpu" and config["seed"] == 42
