"""scripts/setup-env.sh's system package check, run as an ordinary user and as root.

An ordinary user has no /sbin on PATH and no write access to the system: the check must
find what is installed anyway (FFmpeg's libraries, nginx in /usr/sbin) and, for what is
really missing, print the one apt-get command that fixes it. The script is copied where
uid 65534 can read it (the checkout may sit under root's home).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from unprivileged import USER_PATH, as_nobody, nobody_dir, user_env, user_path_without  # noqa: F401 - nobody_dir is a fixture

SETUP = Path(__file__).resolve().parents[2] / "scripts" / "setup-env.sh"


@pytest.fixture
def script(nobody_dir: Path) -> Path:
    copy = nobody_dir / "scripts" / "setup-env.sh"
    copy.parent.mkdir()
    shutil.copy(SETUP, copy)
    shutil.copy(SETUP.parent / "lib.sh", copy.parent)
    return copy


def setup_env(script: Path, path: str, *args: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    """Runs setup-env.sh as a service account would: only PATH and HOME set, no SHELL (HOME: the
    script's directory's parent, nobody's)."""
    env = user_env(script.parents[1], PATH=path)
    return subprocess.run(
        [*prefix, "bash", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_check_passes_for_an_ordinary_user(script):
    """With everything installed, an ordinary user's PATH (no /sbin) passes: FFmpeg's libraries
    and nginx (in /usr/sbin) are found without `ldconfig` or /usr/sbin on PATH."""
    result = setup_env(script, USER_PATH, "--check", "--test", prefix=as_nobody())
    assert result.returncode == 0 and result.stderr == "", result


def test_missing_package_without_sudo_asks_an_administrator(script, nobody_dir):
    """An ordinary user without sudo is told, in one line, the exact command an administrator must run."""
    path = user_path_without(nobody_dir / "bin", "tmux", "sudo")
    result = setup_env(script, path, prefix=as_nobody())
    assert error_line(result) == (
        "setup: error: missing system packages: tmux; "
        "ask an administrator to run: apt-get install -y tmux (as root), then rerun"
    )
    assert not (script.parents[1] / ".venv").exists()


def test_missing_package_with_sudo_names_the_sudo_command(script, nobody_dir):
    """An ordinary user with sudo gets the sudo command, once, in one line."""
    path = user_path_without(nobody_dir / "bin", "tmux", "sudo")
    sudo = Path(path) / "sudo"
    if shutil.which("sudo"):
        sudo.symlink_to(shutil.which("sudo"))
    else:  # only its presence on PATH matters: the script never runs it
        sudo.write_text("#!/bin/sh\nexit 1\n")
        sudo.chmod(0o755)
    result = setup_env(script, path, prefix=as_nobody())
    assert error_line(result) == (
        "setup: error: missing system packages: tmux; "
        "run: sudo apt-get install -y tmux (or ask an administrator to), then rerun"
    )


def test_missing_package_without_apt_names_the_debian_package(script, nobody_dir):
    """Without apt-get the message names the Debian package and leaves the how to the system."""
    path = user_path_without(nobody_dir / "bin", "tmux", "apt-get")
    result = setup_env(script, path, prefix=as_nobody())
    assert error_line(result) == (
        "setup: error: missing system packages (Debian names): tmux; "
        "install them with your system's package manager, then rerun"
    )


def test_check_as_root_installs_nothing(script, nobody_dir):
    """`--check` as root reports what is missing with the apt-get command instead of running it."""
    if os.geteuid() != 0:
        pytest.skip("checks the root path")
    path = user_path_without(nobody_dir / "bin", "tmux")
    result = setup_env(script, path, "--check")
    assert error_line(result) == "setup: error: missing system packages: tmux; run: apt-get install -y tmux, then rerun"


STREAM_BUILDS = {  # `nginx -V`'s configure arguments -> what nginx_stream_module prints, or None: none
    "--with-http_ssl_module --with-stream --with-stream_ssl_module": "",
    "--modules-path={modules} --with-stream=dynamic --with-stream_ssl_module": "{modules}/ngx_stream_module.so",
    "--modules-path={empty} --with-stream=dynamic": None,
    "--with-http_ssl_module --with-stream_ssl_preread_module": None,
}


@pytest.mark.parametrize("arguments", STREAM_BUILDS)
def test_the_stream_module_is_found_as_each_build_ships_it(arguments, tmp_path):
    """Built in (nginx.org's packages), a loadable file (Debian's libnginx-mod-stream) or missing
    (Debian's nginx alone, or a module directory without it): what zk0bot's config loads, or a
    failure that becomes the one-line apt-get hint."""
    modules, empty = tmp_path / "modules", tmp_path / "empty"
    modules.mkdir(), empty.mkdir()
    (modules / "ngx_stream_module.so").write_bytes(b"")
    nginx = tmp_path / "nginx"
    nginx.write_text(f"#!/bin/sh\necho 'configure arguments: {arguments.format(modules=modules, empty=empty)}' >&2\n")
    nginx.chmod(0o755)
    found = subprocess.run(["bash", "-c", 'source "$1"; nginx_stream_module "$2"', "-", str(SETUP.parent / "lib.sh"),
                            str(nginx)], capture_output=True, text=True, timeout=60)
    expected = STREAM_BUILDS[arguments]
    assert (found.returncode, found.stdout.strip()) == ((0, expected.format(modules=modules)) if expected is not None
                                                        else (1, "")), found
