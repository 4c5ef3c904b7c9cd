"""systemd units for the components zk0bot runs on this machine (`zk0bot service install|remove`).

One unit per component a ZK0_HOME has run (started once by hand): zk0-server.service for the
server, zk0-client-<id>.service for each client. A unit runs `zk0bot service watch`, which
starts its component and starts again what stopped; zk0bot.sh asks systemctl to enable them.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from zk0.ops.commands import Refused, settings
from zk0.util.atomic import write_text

# What a unit's component must see as the operator's shell did when it was installed.
ENVIRONMENT = ("ZK0_VENV", "ZK0_SERVER", "ZK0_CA_CERT", "ZK0_LOCAL_ADDRESS", "ZK0_LOCAL_PORTS", "HF_HOME",
               "HF_HUB_OFFLINE", "ZK0_START_TIMEOUT")


def quote(text: str) -> str:
    """A word for a unit's command line or Environment= (double quotes, backslashes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def components(home: Path) -> list[tuple[str, str]]:
    """(unit file name, client dataset URI or "" for the server) for what HOME has run."""
    found = [("zk0-server.service", "")] if (home / "server" / "server.env").is_file() else []
    for env in sorted((home / "clients").glob("*/client.env")):
        found.append((f"zk0-client-{env.parent.name}.service", settings(env).get("dataset-uri", "")))
    return found


def unit_text(root: Path, home: Path, wanted: str, uri: str) -> str:
    """The unit of the server (URI "") or of the client of URI, started for target WANTED."""
    zk0bot = f"{root}/zk0bot.sh"
    of = str(home).replace("%", "%%")
    if uri:
        description, stop = f"zk0 client for {uri.replace('%', '%%')} of {of}", f"{zk0bot} client stop {quote(uri)}"
        start = f"{zk0bot} service watch client {quote(uri)}"
    else:
        description, stop = f"zk0 server (SuperLink, SuperExec, proxies) of {of}", f"{zk0bot} server stop"
        start = f"{zk0bot} service watch server"
    environment = [f"ZK0_HOME={home}"] + [f"{name}={os.environ[name]}" for name in ENVIRONMENT if os.environ.get(name)]
    lines = ["# Written by zk0bot service install; zk0bot service remove deletes it.", "[Unit]",
             f"Description={description}", "After=network-online.target", "Wants=network-online.target", "",
             "[Service]", "Type=simple"]
    if wanted != "default.target":  # a system unit runs as the account that installed it
        lines.append(f"User={pwd.getpwuid(os.getuid()).pw_name}")
    lines += [f"Environment={quote(entry)}" for entry in environment]
    lines += [f"ExecStart={start}", f"ExecStop={stop}",
              # The components live in zk0's tmux server, which the units share: stopping one
              # unit must stop its component (ExecStop), not every process the tmux server holds.
              "KillMode=process", "Restart=on-failure", "RestartSec=10", "TimeoutStartSec=300", "",
              "[Install]", f"WantedBy={wanted}"]
    return "\n".join(lines) + "\n"


def install(root: Path, home: Path, directory: Path, wanted: str) -> list[str]:
    """Write the units of what HOME ran into DIRECTORY (0644, each whole or not at all: zk0.util.atomic)."""
    found = components(home)
    if not found:
        raise Refused("nothing to install: this ZK0_HOME has run no server and no client; start them once by hand first")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise Refused(f"cannot create {directory}; choose another with --unit-dir") from None
    if not os.access(directory, os.W_OK):
        raise Refused(f"{directory} is not writable by {pwd.getpwuid(os.getuid()).pw_name}; run as root, or use --user")
    for name, uri in found:
        try:
            write_text(directory / name, unit_text(root, home, wanted, uri))
            (directory / name).chmod(0o644)
        except OSError as err:
            raise Refused(f"cannot write {directory / name}: {err.strerror or err}; free space on its disk") from None
    return [name for name, _ in found]


def installed(home: Path, directory: Path) -> list[Path]:
    """The units in DIRECTORY that zk0bot wrote for HOME (their descriptions end "of HOME")."""
    of = f" of {str(home).replace('%', '%%')}"
    return [path for path in [directory / "zk0-server.service", *sorted(directory.glob("zk0-client-*.service"))]
            if path.is_file() and any(line.startswith("Description=") and line.endswith(of)
                                      for line in path.read_text().splitlines())]
