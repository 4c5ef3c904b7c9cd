"""The one-line installer, run exactly as users run it: `curl -fsSL <site>/get-zk0bot.sh | bash`.

website/ is served on 127.0.0.1; each run gets a temporary HOME. The installer clones from
git, so ZK0_REPO points at this checkout and ZK0_REF at the commit of its HEAD, pinned so
that commits landing meanwhile don't race the test: the full install tests the committed
HEAD, not uncommitted changes (the installer script itself is served from the working
tree). Refs, upgrades and refusals are checked on small throwaway repositories (one that
the installer takes for zk0, one of another project), and an ordinary user (uid 65534) runs
the line too. The outer
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
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from unprivileged import USER_PATH, as_nobody, give_to_nobody, nobody_dir, user_env, user_path_without  # noqa: F401 - nobody_dir is a fixture

REPO = Path(__file__).resolve().parents[2]
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


def one_liner(
    site: str, env: dict[str, str], *args: str, timeout: float = 60, prefix: list[str] = ()
) -> subprocess.CompletedProcess:
    """Runs the exact line from the website (plus `bash -s -- ARGS` when args are given), after prefix."""
    shell = "bash -s -- " + " ".join(args) if args else "bash"
    return subprocess.run(
        [*prefix, "bash", "-c", f"curl -fsSL {site}get-zk0bot.sh | {shell}"],
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
    """One line of stderr, the error containing message, and nothing written to the (fresh) HOME."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zk0-install: error: ") and message in lines[0], lines[0]
    assert list(home.iterdir()) == []


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
        if re.fullmatch(r"[a-z][a-z0-9_]*\(\) \{ .*; \}", line):
            continue
        if re.fullmatch(r"[a-z][a-z0-9_]*\(\) \{", line):
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


@pytest.mark.parametrize(
    ("repo", "reason"),
    [
        ("/nonexistent", "'/nonexistent' does not appear to be a git repository"),
        ("http://127.0.0.1:9/zk0.git", "unable to access 'http://127.0.0.1:9/zk0.git/': Failed to connect to 127.0.0.1 port 9"),
        ("git://127.0.0.1:9/zk0.git", "unable to connect to 127.0.0.1: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused"),
    ],
    ids=["path", "http", "git"],
)
def test_unreachable_repo_fails_with_one_clear_line(site, home, repo, reason):
    """A repository that can't be reached stops the install before anything is written, with git's whole reason."""
    result = one_liner(site, installer_env(home, ZK0_REPO=repo))
    assert_clean_failure(result, home, f"cannot reach ZK0_REPO={repo} (check it and your network): {reason}")


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


IDENTITY = ("-c", "user.name=zk0 test", "-c", "user.email=test@zk0.invalid")

# What the installer takes for zk0: a pyproject named zk0, zk0bot.sh and scripts/setup-env.sh.
# The two scripts are stand-ins: the real setup takes minutes and GBs (the full install test
# below runs it), while these tests are about what the installer does with git.
TOY_ZK0 = {
    "pyproject.toml": '[project]\nname = "zk0"\nversion = "0.0.1"\n',
    "zk0bot.sh": '#!/usr/bin/env bash\necho "Usage: zk0bot (a stand-in)"\n',
    "scripts/setup-env.sh": '#!/usr/bin/env bash\nmkdir -p "$ZK0_VENV/bin"\n',
}


def in_repo(repo: Path | str, *args: str, check: bool = True) -> str:
    """git's output for `git -C repo ARGS`, with a committer identity."""
    result = subprocess.run(["git", "-C", str(repo), *IDENTITY, *args], check=check, capture_output=True, text=True)
    return result.stdout.strip()


def commit(repo: Path | str, files: dict[str, str], message: str) -> str:
    """Writes files (scripts executable) into repo, commits everything and returns the commit's sha."""
    for name, text in files.items():
        path = Path(repo) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
    in_repo(repo, "add", "-A")
    in_repo(repo, "commit", "-q", "--allow-empty", "-m", message)
    return in_repo(repo, "rev-parse", "HEAD")


def make_repo(path: Path, files: dict[str, str]) -> dict[str, str]:
    """A repository at path: main (tagged v1), a branch `stable` one commit ahead, and a commit on
    no branch or tag, only under refs/pull/1/head like a pull request's; their shas and the path."""
    path.mkdir()
    in_repo(path, "init", "-q", "-b", "main")
    sha = {"path": str(path), "v1": commit(path, files, "first")}
    in_repo(path, "tag", "v1")
    in_repo(path, "checkout", "-qb", "stable")
    sha["stable"] = commit(path, {}, "second")
    in_repo(path, "checkout", "-qb", "pull", "main")
    sha["pull"] = commit(path, {"NOTES": "a pull request\n"}, "third")
    in_repo(path, "update-ref", "refs/pull/1/head", "pull")
    in_repo(path, "checkout", "-q", "main")
    in_repo(path, "branch", "-qD", "pull")
    sha["main"] = sha["v1"]
    return sha


@pytest.fixture
def toy_zk0(tmp_path: Path) -> dict[str, str]:
    return make_repo(tmp_path / "zk0-src", TOY_ZK0)


@pytest.fixture
def other_project(tmp_path: Path) -> dict[str, str]:
    """A repository of another project (same refs as toy_zk0), with an origin of its own."""
    repo = make_repo(tmp_path / "other", {"README.md": "another project\n"})
    in_repo(repo["path"], "remote", "add", "origin", "https://example.invalid/other.git")
    return repo


def snapshot(repo: Path) -> dict[str, object]:
    """What an upgrade could change in repo: refs, HEAD, config, status and the files' contents."""
    files = {
        path.relative_to(repo).as_posix(): path.read_bytes()
        for path in sorted(repo.rglob("*"))
        if path.is_file() and path.relative_to(repo).parts[0] != ".git"
    }
    return {
        "refs": in_repo(repo, "for-each-ref"),
        "head": in_repo(repo, "symbolic-ref", "-q", "HEAD", check=False) + in_repo(repo, "rev-parse", "HEAD"),
        "config": (repo / ".git" / "config").read_text(),
        "status": in_repo(repo, "status", "--porcelain"),
        "files": files,
    }


def error_line(result: subprocess.CompletedProcess) -> str:
    """The installer's error: its last line of stderr, after progress lines only."""
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("zk0-install: error: "), result.stderr
    assert all(line.startswith("zk0-install: ") and ": error: " not in line for line in lines[:-1]), result.stderr
    return lines[-1]


@pytest.mark.parametrize("ref", ["stable", "v1", "commit", "pull"])
def test_ref_installs_and_reruns(site, home, toy_zk0, ref):
    """A branch becomes a local branch tracking origin; a tag, a commit, or a commit on no branch or tag
    (fetched by its id) a detached HEAD. Running the line again keeps it and exits 0."""
    wanted = toy_zk0["v1" if ref == "commit" else ref]
    name = wanted if ref in ("commit", "pull") else ref
    env = installer_env(home, ZK0_REPO=toy_zk0["path"], ZK0_REF=name, ZK0_MIN_FREE_GB="0")
    checkout = home / "zk0"
    for run in ("install", "rerun"):
        result = one_liner(site, env)
        assert result.returncode == 0, (run, result.stderr)
        assert in_repo(checkout, "rev-parse", "HEAD") == wanted
        branch = in_repo(checkout, "symbolic-ref", "-q", "--short", "HEAD", check=False)
        assert branch == ("stable" if ref == "stable" else "")
        if ref == "stable":
            assert in_repo(checkout, "rev-parse", "--abbrev-ref", "stable@{upstream}") == "origin/stable"
    assert "updating the existing install" in result.stderr
    assert (home / ".local" / "bin" / "zk0bot").resolve() == (checkout / "zk0bot.sh").resolve()
    assert sorted(path.name for path in home.iterdir()) == [".local", "zk0"]


@pytest.mark.parametrize("ref", ["no-such-ref", "deadbeef"], ids=["name", "commit-id"])
def test_unknown_ref_leaves_nothing_behind(site, home, toy_zk0, ref):
    """A ZK0_REF that names nothing is reported by name; a commit id is looked for in a clone beside
    the install dir, which is removed again."""
    env = installer_env(home, ZK0_REPO=toy_zk0["path"], ZK0_REF=ref, ZK0_MIN_FREE_GB="0")
    result = one_liner(site, env)
    assert error_line(result) == f"zk0-install: error: ZK0_REF '{ref}' is not a branch, tag or commit of '{toy_zk0['path']}'"
    assert list(home.iterdir()) == []


def test_ref_without_zk0_leaves_nothing_behind(site, home, other_project):
    """A ref of a repository that is not zk0 is refused before anything is put in place."""
    env = installer_env(home, ZK0_REPO=other_project["path"], ZK0_REF="v1", ZK0_MIN_FREE_GB="0")
    result = one_liner(site, env)
    assert error_line(result).startswith(f"zk0-install: error: ZK0_REF 'v1' of '{other_project['path']}' is not a zk0 version")
    assert list(home.iterdir()) == []


@pytest.fixture
def installed_toy(site, home, toy_zk0) -> tuple[dict[str, str], Path]:
    """toy_zk0's main installed into home: (env, checkout)."""
    env = installer_env(home, ZK0_REPO=toy_zk0["path"], ZK0_REF="main", ZK0_MIN_FREE_GB="0")
    result = one_liner(site, env)
    assert result.returncode == 0, result.stderr
    return env, home / "zk0"


def test_upgrade_follows_the_branch(site, toy_zk0, installed_toy):
    """A clean install moves to the branch's new commit."""
    env, checkout = installed_toy
    new = commit(toy_zk0["path"], {"CHANGES": "upstream moved on\n"}, "upstream")
    result = one_liner(site, env)
    assert result.returncode == 0, result.stderr
    assert "updating the existing install" in result.stderr
    assert in_repo(checkout, "rev-parse", "HEAD") == new and (checkout / "CHANGES").is_file()
    assert in_repo(checkout, "symbolic-ref", "--short", "HEAD") == "main"


def test_upgrade_never_drops_local_commits(site, toy_zk0, installed_toy):
    """A commit made in the install stops the upgrade, changing nothing; kept on a branch, it survives one."""
    env, checkout = installed_toy
    upstream = commit(toy_zk0["path"], {"CHANGES": "upstream moved on\n"}, "upstream")
    mine = commit(checkout, {"mine.txt": "my work\n"}, "my work")
    before = snapshot(checkout)
    result = one_liner(site, env)
    assert error_line(result) == (
        f"zk0-install: error: {checkout} has 1 local commit(s) that ZK0_REF 'main' lacks and an upgrade would drop; "
        f"keep them on a branch of your own (git -C {checkout} branch my-work) or push them, "
        "or set ZK0_INSTALL_DIR to install elsewhere"
    )
    assert snapshot(checkout) == before
    in_repo(checkout, "branch", "my-work")
    result = one_liner(site, env)
    assert result.returncode == 0, result.stderr
    assert in_repo(checkout, "rev-parse", "HEAD") == upstream
    assert in_repo(checkout, "rev-parse", "my-work") == mine


def test_upgrade_never_drops_uncommitted_changes(site, installed_toy):
    """A change to a tracked file stops the upgrade, changing nothing."""
    env, checkout = installed_toy
    with (checkout / "pyproject.toml").open("a") as pyproject:
        pyproject.write("# my change\n")
    before = snapshot(checkout)
    result = one_liner(site, env)
    assert error_line(result) == (
        f"zk0-install: error: {checkout} has uncommitted changes to tracked files; "
        f"commit them on a branch of your own or stash them (git -C {checkout} stash), then rerun"
    )
    assert snapshot(checkout) == before


def test_another_projects_checkout_is_left_alone(site, home, toy_zk0, other_project):
    """ZK0_INSTALL_DIR pointing at another project's checkout: refused, its origin, branches and files unchanged."""
    checkout = Path(other_project["path"])
    before = snapshot(checkout)
    env = installer_env(home, ZK0_REPO=toy_zk0["path"], ZK0_INSTALL_DIR=str(checkout), ZK0_MIN_FREE_GB="0")
    result = one_liner(site, env)
    assert error_line(result) == (
        f"zk0-install: error: {checkout} is a git checkout of another project, not zk0; "
        "the installer leaves it alone: set ZK0_INSTALL_DIR to another directory"
    )
    assert snapshot(checkout) == before
    assert list(home.iterdir()) == []


def ordinary_user_env(nobody_dir: Path, path: str) -> dict[str, str]:
    """Only what an ordinary user's login sets (no SHELL: uid 65534's is nologin), a HOME of its own,
    and toy_zk0 as the source."""
    home = nobody_dir / "home"
    home.mkdir()
    repo = make_repo(nobody_dir / "zk0-src", TOY_ZK0)
    give_to_nobody(nobody_dir)
    return user_env(home, PATH=path, ZK0_REPO=repo["path"], ZK0_MIN_FREE_GB="0")


def test_ordinary_user_installs(site, nobody_dir):
    """uid 65534 with an ordinary PATH (no /sbin, no /usr/sbin) installs: the installed FFmpeg
    libraries and nginx are found, and no apt-get command is asked for."""
    env = ordinary_user_env(nobody_dir, USER_PATH)
    result = one_liner(site, env, prefix=as_nobody())
    assert result.returncode == 0, result.stderr
    assert "zk0 is installed." in result.stdout
    home = Path(env["HOME"])
    assert (home / ".local" / "bin" / "zk0bot").resolve() == (home / "zk0" / "zk0bot.sh").resolve()


def test_ordinary_user_missing_package_writes_nothing(site, nobody_dir):
    """uid 65534 without tmux or sudo: one line with the command for an administrator, nothing written."""
    prefix = as_nobody()
    env = ordinary_user_env(nobody_dir, user_path_without(nobody_dir / "bin", "tmux", "sudo"))
    result = one_liner(site, env, prefix=prefix)
    assert_clean_failure(
        result,
        Path(env["HOME"]),
        "missing system packages: tmux; ask an administrator to run: apt-get install -y tmux (as root), then rerun",
    )


@pytest.fixture(scope="module")
def installed(site, tmp_path_factory):
    """A full install of this checkout's HEAD into a fresh HOME: (home, env, result)."""
    home = tmp_path_factory.mktemp("install") / "home"
    home.mkdir()
    env = installer_env(home)
    result = one_liner(site, env, timeout=1400)
    yield home, env, result
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(1500)
def test_install_puts_zk0bot_on_the_path(installed):
    """The one-liner installs HEAD into ~/zk0 with its venv and links ~/.local/bin/zk0bot to it."""
    home, env, result = installed
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
    home, env, result = installed
    assert result.returncode == 0, result.stderr[-4000:]
    zk0bot = str(home / ".local" / "bin" / "zk0bot")
    help_run = subprocess.run([zk0bot, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "client" in help_run.stdout and "server" in help_run.stdout, help_run
    doctor = subprocess.run([zk0bot, "doctor"], env=env, capture_output=True, text=True, timeout=600)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


@pytest.mark.timeout(1500)
def test_rerun_upgrades_in_place_quickly(site, installed):
    """Running the line again is harmless: exit 0, no second install of the dependencies (the
    venv's stamp of pyproject.toml still matches), zk0bot still works."""
    home, env, first = installed
    assert first.returncode == 0, first.stderr[-4000:]
    again = one_liner(site, env, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "updating the existing install" in again.stderr
    installing = "installing zk0 and its pinned dependencies"
    assert installing in first.stderr and installing not in again.stderr, again.stderr[-4000:]
    zk0bot = home / ".local" / "bin" / "zk0bot"
    assert subprocess.run([str(zk0bot), "--help"], env=env, capture_output=True, timeout=120).returncode == 0


def test_unwritable_install_location_is_one_line(site, nobody_dir):
    """uid 65534 pointing ZK0_INSTALL_DIR into a directory it cannot write: one line naming it
    and what to do (not mktemp's or git's own words), nothing written."""
    locked = Path(tempfile.mkdtemp(prefix="zk0-locked-"))  # root's (or, as uid 65534, made read-only)
    locked.chmod(0o555)
    try:
        env = ordinary_user_env(nobody_dir, USER_PATH) | {"ZK0_INSTALL_DIR": str(locked / "zk0")}
        result = one_liner(site, env, prefix=as_nobody())
        assert_clean_failure(result, Path(env["HOME"]), f"cannot write to {locked} (install location {locked}/zk0)")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
        shutil.rmtree(locked)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 512 KiB file system (tmpfs), mounted for the test: a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and a tmpfs mount to fill a disk")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_is_one_line_and_leaves_nothing(site, home, tmp_path, tiny_disk):
    """The clone fills the disk: one line saying the disk is full and what to do (git exits 128
    with its own lines otherwise), and no half-made install is left on it."""
    repo = make_repo(tmp_path / "big-zk0", TOY_ZK0 | {"weights.bin": os.urandom(2 << 20).hex()})
    env = installer_env(home, ZK0_REPO=repo["path"], ZK0_REF="main", ZK0_MIN_FREE_GB="0",
                        ZK0_INSTALL_DIR=str(tiny_disk / "zk0"))
    result = one_liner(site, env)
    assert error_line(result).endswith(": the disk is full; free some space or set ZK0_INSTALL_DIR to a bigger disk, "
                                       "then rerun"), result.stderr
    assert list(tiny_disk.iterdir()) == [] and list(home.iterdir()) == []


def test_missing_git_hint_fits_the_user(site, home, tmp_path):
    """The install command for git is the one this user can run: root is not told to use sudo."""
    if os.geteuid() != 0:
        pytest.skip("checks root's hint; ordinary users' hints are checked with the system packages")
    result = one_liner(site, installer_env(home, PATH=path_without(tmp_path, "git")))
    assert_clean_failure(result, home, "git is not installed; run: apt-get install -y git, then rerun")


# A zk0 whose own zk0bot.sh, scripts/lib.sh and installer are the real ones (setup-env.sh stays a
# stand-in): what `zk0bot upgrade` runs.
UPGRADABLE_ZK0 = {
    **TOY_ZK0,
    "zk0bot.sh": (REPO / "zk0bot.sh").read_text(),
    "scripts/lib.sh": (REPO / "scripts" / "lib.sh").read_text(),
    "website/get-zk0bot.sh": INSTALLER.read_text(),
}


@pytest.fixture
def upgradable(site, home, tmp_path) -> tuple[dict[str, str], Path, dict[str, str]]:
    """UPGRADABLE_ZK0's main installed into home: (env, checkout, the source repo's shas)."""
    source = make_repo(tmp_path / "zk0-upgradable", UPGRADABLE_ZK0)
    env = installer_env(home, ZK0_REPO=source["path"], ZK0_REF="main", ZK0_MIN_FREE_GB="0",
                        ZK0_HOME=str(home / ".zk0"))
    result = one_liner(site, env)
    assert result.returncode == 0, result.stderr
    return env, home / "zk0", source


def zk0bot_upgrade(env: dict[str, str], checkout: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(checkout / "zk0bot.sh"), "upgrade", *args], env=env, cwd=env["HOME"],
                          capture_output=True, text=True, timeout=300)


def test_zk0bot_upgrade_moves_to_the_new_version(upgradable):
    """`zk0bot upgrade` takes the branch's new commit the installer's way and says where it is."""
    env, checkout, source = upgradable
    new = commit(source["path"], {"CHANGES": "upstream moved on\n"}, "upstream")
    result = zk0bot_upgrade(env, checkout)
    assert result.returncode == 0, result.stderr
    assert in_repo(checkout, "rev-parse", "HEAD") == new
    assert result.stdout.strip().splitlines()[-1] == f"zk0bot: upgraded to {new[:7]} upstream"


def test_zk0bot_upgrade_rolls_back_a_version_that_does_not_run(upgradable):
    """A new version whose zk0bot fails its check: the checkout goes back to the commit it was at,
    in one line that says so."""
    env, checkout, source = upgradable
    old = in_repo(checkout, "rev-parse", "HEAD")
    broken = '#!/usr/bin/env bash\n[[ ${1:-} == --help ]] && { echo "Usage: zk0bot"; exit 0; }\nexit 1\n'
    commit(source["path"], {"zk0bot.sh": broken}, "broken")
    result = zk0bot_upgrade(env, checkout)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"zk0bot: error: the new version does not run ('zk0bot version' failed); rolled back to {old[:12]}")
    assert in_repo(checkout, "rev-parse", "HEAD") == old


def test_zk0bot_upgrade_refuses_a_dirty_tree(upgradable):
    """Uncommitted changes: the installer's refusal, then one line that nothing changed."""
    env, checkout, source = upgradable
    commit(source["path"], {"CHANGES": "upstream moved on\n"}, "upstream")
    with (checkout / "pyproject.toml").open("a") as pyproject:
        pyproject.write("# my change\n")
    before = snapshot(checkout)
    result = zk0bot_upgrade(env, checkout)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "has uncommitted changes to tracked files" in lines[-2]
    assert lines[-1].startswith("zk0bot: error: the upgrade changed nothing")
    assert snapshot(checkout) == before
