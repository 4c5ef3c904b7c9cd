"""`--run-config "key=value ..."` strings, checked before a run is submitted.

Flower reads each string with a regular expression that silently skips tokens without
`=`, fails a whole string on a duplicate key with a generic "invalid format", and refuses
an unknown key on the server with "Invalid run configuration" without naming it. Here
each string is read the same way (Flower's own parser gives the values), but every
problem is one line naming the key; the merged result is then validated as the apps
will validate it (`RunConfig.from_run_config`).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from zk0.config import RunConfig

# flwr 1.42, flwr/common/config.py parse_config_args: one `key=value` pair per match.
PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")
FORMAT_HINT = "write key=value pairs separated by spaces, strings in quotes, e.g. \"local-steps=20 device='cpu'\""


class RunConfigArgsError(ValueError):
    """A run-config string Flower would misread or refuse."""


def app_defaults(app_dir: Path) -> dict[str, Any]:
    """`[tool.flwr.app.config]` of the app's pyproject.toml, flattened as Flower flattens it."""
    from flwr.common.config import flatten_dict

    path = app_dir / "pyproject.toml"
    try:
        with path.open("rb") as handle:
            project = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise RunConfigArgsError(f"cannot read {path} ({err}); pass the app directory with --app-dir") from None
    config = project.get("tool", {}).get("flwr", {}).get("app", {}).get("config")
    if not isinstance(config, dict):
        raise RunConfigArgsError(f"{path} has no [tool.flwr.app.config] table; pass the app directory with --app-dir")
    return flatten_dict(config)


def check_pairs(text: str) -> list[str]:
    """The keys of one string, in order; raise on a token without `=`, a value that is no
    TOML value, or a key given twice (Flower: skipped, "invalid format", "invalid format")."""
    import tomli  # Flower's TOML parser

    stray = PAIR.sub(" ", text).split()
    if stray:
        raise RunConfigArgsError(f"run-config token '{stray[0]}' in \"{text}\" is not key=value; {FORMAT_HINT}")
    keys: list[str] = []
    for key, value in PAIR.findall(text):
        try:
            tomli.loads(f"{key} = {value}")
        except tomli.TOMLDecodeError:
            raise RunConfigArgsError(
                f"run-config key '{key}': {value} is not a value; quote strings ({key}='{value.strip(chr(39))}'), "
                f"numbers and true/false go bare"
            ) from None
        if key in keys:
            raise RunConfigArgsError(f"run-config key '{key}' is given twice in \"{text}\"; give it once")
        keys.append(key)
    return keys


def parse_run_config_args(strings: list[str]) -> dict[str, Any]:
    """The overrides Flower makes of these `--run-config` strings (later strings win)."""
    from flwr.common.config import parse_config_args

    if len(strings) == 1 and strings[0].endswith(".toml"):
        path = Path(strings[0]).expanduser()
        if not path.is_file():
            raise RunConfigArgsError(f"run-config file {path} does not exist")
    else:
        for text in strings:
            if text.endswith(".toml"):
                raise RunConfigArgsError(f"run-config file {text} cannot be combined with other --run-config strings")
            check_pairs(text)
    try:
        return parse_config_args(strings)
    except Exception as err:  # click.ClickException or TOML errors Flower's parser raises
        raise RunConfigArgsError(f"run-config: {str(err).splitlines()[0]}") from None


def merged_run_config(strings: list[str], app_dir: Path) -> dict[str, Any]:
    """pyproject's defaults with the strings applied in order, checked as the apps check them."""
    defaults = app_defaults(app_dir)
    overrides = parse_run_config_args(strings)
    for key in overrides:
        if key not in defaults:
            close = difflib.get_close_matches(key, defaults, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise RunConfigArgsError(f"unknown run-config key '{key}'; {hint}valid keys are listed in docs/RUNNING.md")
    merged = defaults | overrides
    RunConfig.from_run_config(merged)
    return merged
