"""The one-line installer, run exactly as users run it: `curl -fsSL <site>/get-zk0bot.sh | bash`.

website/ is served on 127.0.0.1; each run gets a temporary HOME. The installer clones from
git, so ZK0_REPO points at this checkout and ZK0_REF at the commit of its HEAD, pinned so
that commits landing meanwhile don't race the test: the full install tests the committed
HEAD, not uncommitted changes (the installer script itself is served from the working
tree). Branch, tag and commit refs are checked on a small throwaway repository. The outer
user's pip cache and pip config are kept so the fresh environment can reuse downloads; it
still installs PyTorch and the rest into a new venv, which takes minutes and ~9 GB
(removed afterwards).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALLER = REPO / "website" / "get-zk0bot.sh"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of website/ served on a free 127.0.0.1 port."""
    handler = functools.partial(QuietHandler, directory=str(INSTALLER.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def installer_env(home: Path, **overrides: str) -> dict[str, str]:
    """The caller's environment with a fresh HOME, this checkout as the source, and the real pip cache/config."""
    real_home = Path.home()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZK0_")}
    env.update(
        HOME=str(home),
        ZK0_REPO=str(REPO),
        ZK0_REF=git("rev-parse", "HEAD"),
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")),
    )
    user_pip_conf = real_home / ".config" / "pip" / "pip.conf"
    if user_pip_conf.is_file() and "PIP_CONFIG_FILE" not in os.environ:
        env["PIP_CONFIG_FILE"] = str(user_pip_conf)
    env.update(overrides)
    return env


def one_liner(site: str, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs the exact line from the website (plus `bash -s -- ARGS` when args are given)."""
    shell = "bash -s -- " + " ".join(args) if args else "bash"
    return subprocess.run(
        ["bash", "-c", f"curl -fsSL {site}get-zk0bot.sh | {shell}"],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def path_without(tmp_path: Path, *prefixes: str) -> str:
    """A PATH with every command of the current PATH except those whose names start with one of prefixes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            link = bin_dir / entry.name
            if entry.name.startswith(prefixes) or os.path.lexists(link) or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(bin_dir)


def assert_clean_failure(result: subprocess.CompletedProcess, home: Path, message: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0-install: error: ") and message in lines[0], lines[0]
    assert not (home / "zk0").exists() and not (home / ".local").exists()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_installer_is_shellcheck_clean_and_piped_safe():
    """shellcheck finds nothing, and the only top-level call is `main "$@"` on the last line."""
    if not shutil.which("shellcheck"):
        if os.geteuid() != 0:
            pytest.fail("shellcheck is missing; install it: sudo apt-get install -y shellcheck")
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "shellcheck"],
            check=True,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    subprocess.run(["shellcheck", str(INSTALLER)], check=True)
    lines = INSTALLER.read_text().splitlines()
    assert lines[-1] == 'main "$@"'
    top_level, in_function = [], False
    for line in lines[:-1]:
        if re.fullmatch(r"[a-z_]+\(\) \{ .*; \}", line):
            continue
        if re.fullmatch(r"[a-z_]+\(\) \{", line):
            in_function = True
        elif line == "}":
            in_function = False
        elif not in_function and line.strip() and not line.startswith("#"):
            top_level.append(line)
    assert top_level[0] == "set -euo pipefail"
    assert all(re.fullmatch(r'[A-Z_]+="[^"$`]*"', line) for line in top_level[1:]), top_level


def test_help_through_the_pipe(site, home):
    """`... | bash -s -- --help` prints usage, exits 0 and installs nothing."""
    result = one_liner(site, installer_env(home), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: curl -fsSL") and "ZK0_INSTALL_DIR" in result.stdout
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("repo", ["/nonexistent", "http://127.0.0.1:9/zk0.git"], ids=["path", "url"])
def test_unreachable_repo_fails_with_one_clear_line(site, home, repo):
    """A repository that can't be reached stops the install before anything is written."""
    result = one_liner(site, installer_env(home, ZK0_REPO=repo))
    assert_clean_failure(result, home, f"cannot reach the zk0 repository '{repo}'")


def test_missing_git_fails_with_one_clear_line(site, home, tmp_path):
    """Without git on PATH the installer says so and how to install it."""
    result = one_liner(site, installer_env(home, PATH=path_without(tmp_path, "git")))
    assert_clean_failure(result, home, "git is not installed")
    assert "apt-get install -y git" in result.stderr


def test_missing_python_fails_with_one_clear_line(site, home, tmp_path):
    """Without any Python 3.11+ on PATH the installer says so and how to get one."""
    result = one_liner(site, installer_env(home, PATH=path_without(tmp_path, "python")))
    assert_clean_failure(result, home, "no Python 3.11 or newer found")


def test_old_python_fails_with_one_clear_line(site, home, tmp_path):
    """A ZK0_PYTHON that is not Python 3.11+ is rejected by name."""
    fake = tmp_path / "python3.8"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    result = one_liner(site, installer_env(home, ZK0_PYTHON=str(fake)))
    assert_clean_failure(result, home, f"ZK0_PYTHON={fake} is not a working Python 3.11 or newer")


def test_too_little_disk_space_fails_with_one_clear_line(site, home):
    """The free space at the install location is checked before any download."""
    result = one_liner(site, installer_env(home, ZK0_MIN_FREE_GB="1000000"))
    assert_clean_failure(result, home, "not enough disk space at")
    assert "1000000 GB needed" in result.stderr


@pytest.fixture
def toy_repo(tmp_path: Path) -> dict[str, str]:
    """A git repository with no zk0 in it: a tag v1, a branch `stable` one commit ahead, and their shas."""
    repo = tmp_path / "toy"
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, cwd=repo)
    repo.mkdir()
    identity = ("-c", "user.name=zk0 test", "-c", "user.email=test@zk0.invalid")
    run(["git", "init", "-q", "-b", "main"])
    (repo / "README.md").write_text("toy\n")
    run(["git", "add", "README.md"])
    run(["git", *identity, "commit", "-qm", "first"])
    run(["git", "tag", "v1"])
    run(["git", "checkout", "-qb", "stable"])
    run(["git", *identity, "commit", "-q", "--allow-empty", "-m", "second"])
    sha = {ref: run(["git", "rev-parse", ref]).stdout.strip() for ref in ("v1", "stable")}
    return {"path": str(repo), **sha}


@pytest.mark.parametrize("ref", ["stable", "v1", "commit"])
def test_ref_is_checked_out_before_setup(site, home, toy_repo, ref):
    """A branch becomes a local tracking branch, a tag or commit a detached HEAD; a repo without zk0 then stops cleanly."""
    wanted = toy_repo["v1"] if ref == "commit" else toy_repo[ref]
    env = installer_env(home, ZK0_REPO=toy_repo["path"], ZK0_REF=wanted if ref == "commit" else ref, ZK0_MIN_FREE_GB="0")
    result = one_liner(site, env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("zk0-install: error: ")
    assert "scripts/setup-env.sh is missing" in result.stderr
    checkout = functools.partial(subprocess.run, capture_output=True, text=True, cwd=home / "zk0")
    assert checkout(["git", "rev-parse", "HEAD"]).stdout.strip() == wanted
    branch = checkout(["git", "symbolic-ref", "-q", "--short", "HEAD"]).stdout.strip()
    assert branch == ("stable" if ref == "stable" else "")
    if ref == "stable":
        upstream = checkout(["git", "rev-parse", "--abbrev-ref", "stable@{upstream}"]).stdout.strip()
        assert upstream == "origin/stable"


def test_unknown_ref_fails_with_one_clear_line(site, home, toy_repo):
    """A ZK0_REF that names nothing in the repository is reported by name."""
    env = installer_env(home, ZK0_REPO=toy_repo["path"], ZK0_REF="no-such-ref", ZK0_MIN_FREE_GB="0")
    result = one_liner(site, env)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"zk0-install: error: ZK0_REF 'no-such-ref' is not a branch, tag or commit of '{toy_repo['path']}'"
    )


@pytest.fixture(scope="module")
def installed(site, tmp_path_factory):
    """A full install of this checkout's HEAD into a fresh HOME: (home, env, result, seconds)."""
    home = tmp_path_factory.mktemp("install") / "home"
    home.mkdir()
    env = installer_env(home)
    started = time.monotonic()
    result = one_liner(site, env, timeout=1400)
    yield home, env, result, time.monotonic() - started
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(1500)
def test_install_puts_zk0bot_on_the_path(installed):
    """The one-liner installs HEAD into ~/zk0 with its venv and links ~/.local/bin/zk0bot to it."""
    home, env, result, _ = installed
    assert result.returncode == 0, result.stderr[-4000:]
    link = home / ".local" / "bin" / "zk0bot"
    assert link.is_symlink() and link.resolve() == (home / "zk0" / "zk0bot.sh").resolve()
    assert subprocess.run(
        ["git", "-C", str(home / "zk0"), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip() == env["ZK0_REF"]
    assert (home / "zk0" / ".venv" / "bin" / "python").exists()
    assert "zk0 is installed." in result.stdout and "zk0bot client start hf:owner/dataset" in result.stdout
    assert 'export PATH="$HOME/.local/bin:$PATH"' in result.stderr


@pytest.mark.timeout(1500)
def test_installed_zk0bot_help_and_doctor_work(installed):
    """The installed command answers --help and doctor (exit 0 on this machine) through the symlink."""
    home, env, result, _ = installed
    assert result.returncode == 0, result.stderr[-4000:]
    zk0bot = str(home / ".local" / "bin" / "zk0bot")
    help_run = subprocess.run([zk0bot, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "client" in help_run.stdout and "server" in help_run.stdout, help_run
    doctor = subprocess.run([zk0bot, "doctor"], env=env, capture_output=True, text=True, timeout=600)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


@pytest.mark.timeout(1500)
def test_rerun_upgrades_in_place_quickly(site, installed):
    """Running the line again is harmless: exit 0, much faster than the first time, zk0bot still works."""
    home, env, first, first_seconds = installed
    assert first.returncode == 0, first.stderr[-4000:]
    started = time.monotonic()
    again = one_liner(site, env, timeout=600)
    seconds = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-4000:]
    assert "updating the existing install" in again.stderr
    assert seconds < first_seconds / 2, (seconds, first_seconds)
    zk0bot = home / ".local" / "bin" / "zk0bot"
    assert subprocess.run([str(zk0bot), "--help"], env=env, capture_output=True, timeout=120).returncode == 0
