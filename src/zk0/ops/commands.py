"""The commands zk0bot takes: each one's options, their checks, its defaults and its help.

zk0bot.sh keeps the process work (tmux, nginx, openssl); what an operator typed is read here,
once, and handed back as shell code for zk0bot to run: `eval "$(parse server start "$@")"`
declares the command's options as locals (`local port=9092 host=0.0.0.0 ...`), or prints the
help and exits 0, or, for a mistake, prints one `zk0bot: error:` line and exits 1. Every
refusal here is checked in milliseconds, before any slow work (tests/unit/test_commands.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

PROG = "zk0bot"
DEFAULT_SERVER_PORT = 9092
# A host name's label: letters, digits and inner hyphens, 1-63 characters.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
NODE_KEY_PREFIX = "ecdsa-sha2-nistp384 "

USAGE = {
    "server": """\
Usage: zk0bot server <command> [options]

Commands:
  start [--port P] [--host H] [--public-address NAMES] [--insecure]
        [--ca-cert F --cert F --key F]
          Start the server: the SuperLink (on 127.0.0.1, admitting only the proxy,
          session zk0-superlink), the SuperExec that runs ServerApps (zk0-superexec)
          and the reverse proxies (nginx): on the public port (zk0-proxy) only the
          Fleet API the nodes use; on an admin port on 127.0.0.1 (zk0-admin-proxy,
          its own workers) the Control API, for requests bearing your token (~/.zk0/server/admin.token; zk0bot and
          FLWR_HOME=~/.zk0/server/flwr-home flwr send it).
          Creates a CA and a server certificate once (or installs the given ones),
          enables TLS and SuperNode authentication, and re-registers every node key
          registered before (kept in ~/.zk0/server/nodes/). --host/--port: the public
          address (default 0.0.0.0:9092; ZK0_SERVER_HOST, ZK0_SERVER_PORT).
          --public-address: the names/IPs nodes dial, comma-separated (e.g.
          fl.example.org,203.0.113.7; ZK0_SERVER_HOSTNAMES): the server certificate
          must carry them (and localhost, 127.0.0.1; a certificate zk0 creates also
          names --host when it is a specific address); zk0's CA signs a new one when
          they change, so nodes keep their ca.crt. Kept for restarts.
          Starts only what is not running, so it also recovers from a crash.
  stop    Stop the proxy, the SuperExec, the SuperLink and everything they started.
  status  Sessions, PIDs, ports, health, node counts and the first 10 nodes
          (as 'nodes --limit 10'), and recent runs.
  logs [-f] [--superlink | --superexec | --proxy]
          Show (or follow) the newest run's ServerApp log (runs/<run>/server.log: round
          summaries, warnings, errors), or the SuperLink's, the SuperExec's, or the
          proxy's (refused requests).
  register <node-public-key-file>... [--name NAME]
          Allow nodes (each operator sends you the .pub file `client start` printed);
          many keys register in one go; keys that are refused are named one per line,
          the others are registered and kept. NAME (one key only; 1-64 printable
          characters, unique; default: the key's comment, e.g. zk0-node-<dataset>)
          labels the node in `server nodes` and the run's logs and metrics, across
          SuperLink restarts.
  nodes [--all | --limit N]
          Counts first (nodes known to the SuperLink: online, offline, registered but
          not connected since it started), then one row per node: node id, status,
          name, and the key's comment where it is not the name. Online nodes first,
          then by name; the first 20 rows (--limit N), the rest summed up; --all lists
          every node.""",
    "client": """\
Usage: zk0bot client <command> [options]

Commands:
  start <dataset-uri> [--server HOST:PORT] [--ca-cert FILE] [--local-address IP]
        [--port P] [--threads N] [--rename-map JSON] [--allow-app SHA256]... [--insecure]
          Start a SuperNode that trains on this node's dataset, in tmux session
          zk0-supernode-<id>. <dataset-uri> is hf:owner/name, owner/name or
          local:/absolute/path. The first start creates the node's key pair and prints
          the public key to send to the server admin. --server defaults to
          $ZK0_SERVER (127.0.0.1:9092); --ca-cert to $ZK0_CA_CERT, else the local
          server's CA, else $ZK0_HOME/ca.crt. --local-address/--port: where the
          SuperNode serves its executor (default 127.0.0.1 and the first free port
          from 9100; $ZK0_LOCAL_ADDRESS; one address, never 0.0.0.0 or ::, as it is
          plaintext); nothing else dials it, nothing needs to reach this machine from
          outside. Messages are served by one warm
          executor process (session zk0-executor-<id>). --threads: torch threads
          (default: the cores shared among this machine's clients). --rename-map:
          map this dataset's camera names onto the federation's, LeRobot style:
          '{"observation.images.top": "observation.images.front"}'.
          The executor runs only the zk0 installed here; --allow-app also lets it run
          the FAB with that SHA-256 (its refusal line in executor.log names it). The
          allowed list is the last start's: starting with another list restarts the executor.
  stop [<dataset-uri>]     Stop one client (or all of them).
  status                   Every client on this machine: session, PID, port, dataset.
  logs [<dataset-uri>] [-f]
                           Show (or follow) a client's log (the only one, or the named one).""",
    "run": """\
Usage: zk0bot run [--rounds N] [--run-config "key=value ..."] [--stream | --quiet]
       zk0bot run --resume [RUN_DIR] [--rounds N] [--stream | --quiet]

Submit the zk0 app to this machine's SuperLink and wait until the run ends.
Outputs land in ~/.zk0/server/runs/<timestamp>/ (metrics.jsonl, checkpoints/,
plots/, state/). Any [tool.flwr.app.config] key can be overridden with
--run-config; the string is checked before it is submitted.
--resume continues an interrupted run (SuperLink or ServerApp crash, server
restart) from its last completed round, into the same run directory, with the
run's saved configuration; RUN_DIR defaults to the newest unfinished run.
--rounds with --resume sets the new total number of rounds.
Prints the run's status as it changes and one line per round as the server logs it
(success rate where measured, eval MSE, nodes ok/rejected/failed/late, seconds, MB
moved) with an ETA, and last the run directory. --quiet prints only that last line
(for scripts); --stream prints the run's full logs while it runs.
Exits 0 only when the run completed.""",
    "service": """\
Usage: zk0bot service install [--user] [--unit-dir DIR]
       zk0bot service remove  [--user] [--unit-dir DIR]
       zk0bot service watch server | client <dataset-uri>     (what the units run)

install writes one systemd unit per component this machine runs (started once by hand):
zk0-server.service for the server, zk0-client-<id>.service for each client, then
enables them. Each unit starts its component with this ZK0_HOME and environment, checks
it every 30 s and starts what stopped again (SuperNodes and executors also restart
themselves in tmux); if that fails, systemd restarts the unit (Restart=on-failure).
System units (/etc/systemd/system, root only) run as the account that installs them
(or, run as root for a service account: sudo -u zk0 zk0bot service install --user).
--user: units of this account (~/.config/systemd/user); for them to start at boot
without a login, an administrator runs: loginctl enable-linger <account>.
--unit-dir: write the units there and change nothing else (to review them).
remove disables and deletes the units (the components keep running: zk0bot stop).""",
    "status": "Usage: zk0bot status [--json]    (server and clients on this machine; --json: one JSON object for monitors)",
}
SUBCOMMANDS = {"server": ("start", "stop", "status", "logs", "register", "nodes"),
               "client": ("start", "stop", "status", "logs"), "service": ("install", "remove", "watch")}


class Refused(Exception):
    """An operator's mistake: the message is zk0bot's one-line error."""


class Help(Exception):  # noqa: N818 - not an error: the answer to --help
    """The text to print for --help (or for a group named without its command: `status`)."""

    def __init__(self, text: str, status: int = 0):
        super().__init__(text)
        self.status = status


def sub_usage(group: str, sub: str) -> str:
    """A group's usage narrowed to SUB's entry (its line, which starts with "  SUB", and the more
    indented lines after it), else the whole group's."""
    entry: list[str] = []
    for line in USAGE[group].splitlines():
        if not entry:
            if re.match(rf"  {re.escape(sub)}( |$)", line):
                entry.append(line)
        elif line.startswith("   ") and line.strip():
            entry.append(line)
        else:
            break
    return f"Usage: {PROG} {group} {sub}\n\n" + "\n".join(entry) if entry else USAGE[group]


class Options:
    """zk0bot's option syntax: an option's value follows it and never starts with `--`; an
    unknown option is refused with the command that explains them all."""

    def __init__(self, argv: list[str], where: str, see: str):
        self.argv, self.where, self.see = list(argv), where, see
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.flags: set[str] = set()
        self.positional: list[str] = []

    def parse(self, values: tuple[str, ...] = (), lists: tuple[str, ...] = (), flags: tuple[str, ...] = (),
              positional: bool = False, optional_value: tuple[str, ...] = ()) -> Options:
        args = iter(range(len(self.argv)))
        for i in args:
            arg = self.argv[i]
            following = self.argv[i + 1] if i + 1 < len(self.argv) else None
            if arg in values or arg in lists:
                if not following or following.startswith("--"):
                    raise Refused(f"option {arg} needs a value (see --help)")
                if arg in values:
                    self.values[arg] = following
                else:
                    self.lists.setdefault(arg, []).append(following)
                next(args)
            elif arg in optional_value:
                self.flags.add(arg)
                if following is not None and not following.startswith("-"):
                    self.values[arg] = following
                    next(args)
            elif arg in flags:
                self.flags.add(arg)
            elif arg.startswith("-") or not positional:
                raise Refused(f"unknown option '{arg}' for '{self.where}'{self.see}" if arg.startswith("-")
                              else f"unexpected argument '{arg}' (see --help)")
            else:
                self.positional.append(arg)
        return self

    def get(self, option: str, default: str = "") -> str:
        return self.values.get(option, default)


# ---------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------

def check_port(port: str) -> None:
    # Decimal only: bash would read 08 as a bad octal number.
    if not re.fullmatch(r"[1-9][0-9]{0,4}", port) or int(port) > 65535:
        raise Refused(f"port '{port}' is not a number in 1-65535")


def check_positive(option: str, value: str) -> None:
    if value and not re.fullmatch(r"[1-9][0-9]*", value):
        raise Refused(f"{option} must be a positive integer, got '{value}'")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_public_names(host: str, names: str) -> None:
    """The public bind address and the addresses nodes dial: what a certificate can name."""
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", host):
        raise Refused(f"--host '{host}' is not an address (e.g. 0.0.0.0 or 203.0.113.7)")
    if not re.fullmatch(r"[A-Za-z0-9.:,-]*", names):
        raise Refused(f"--public-address '{names}' must list host names or IP addresses, comma-separated "
                      "(e.g. fl.example.org,203.0.113.7)")
    for name in filter(None, names.split(",")):
        if not (is_ip(name) or (not re.fullmatch(r"[0-9.]+", name) and _HOST_NAME.fullmatch(name))):
            raise Refused(f"--public-address '{name}' is not a host name or IP address "
                          "(no port: e.g. fl.example.org,203.0.113.7)")


def check_node_name(name: str) -> None:
    """What a name may be: what an operator can read in one log line."""
    if not name.strip() or len(name) > 64 or not name.isprintable():
        raise Refused(f"node name '{name}' must be 1-64 printable characters (e.g. --name robot-7)")


def check_uri(uri: str) -> None:
    """The URI's form, and for local: datasets that the directory exists (milliseconds)."""
    from zk0.data.uri import URIError, parse_dataset_uri

    try:
        parse_dataset_uri(uri)
    except URIError as err:
        raise Refused(str(err)) from None
    if uri.startswith("local:") and not Path(uri[len("local:"):]).is_dir():
        raise Refused(f"dataset {uri}: directory does not exist; pass the root of a LeRobot dataset")


def kept_key(nodes_dir: Path, key_file: Path) -> Path:
    """Where zk0bot keeps a registered key (nodes/<id>.pub, .id, .name): the first 16 hex
    digits of the SHA-256 of its lines' second fields (as `awk '{print $2}' | sha256sum`)."""
    text = key_file.read_text(errors="replace")
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    fields = "".join((line.split()[1] if len(line.split()) > 1 else "") + "\n" for line in lines)
    return nodes_dir / hashlib.sha256(fields.encode()).hexdigest()[:16]


def client_id(uri: str) -> str:
    """A stable, readable id per dataset (several clients can run on one machine): the URI's
    last 40 letters and digits, dashes between, and 6 hex digits of its SHA-1 (as zk0bot's
    `tr`/`sed`/`tail -c 40` pipeline always named client directories)."""
    slug = re.sub(rb"-+", b"-", re.sub(rb"[^a-z0-9]", b"-", uri.encode().lower()))
    slug = slug.removeprefix(b"-").removesuffix(b"-")[-40:].removeprefix(b"-")
    return f"{slug.decode()}-{hashlib.sha1(uri.encode()).hexdigest()[:6]}"


def changed_settings(home: Path, uri: str, server: str | None, address: str, port: str, threads: str) -> str:
    """Why a start of the client of URI, if it runs, must be refused: it asks for another server,
    address, port or thread count than it runs with ("" when it does not)."""
    kept = settings(home / "clients" / client_id(uri) / "client.env")
    if not kept:
        return ""
    changed = next((what for asked, key, what in (
        (server, "server", f"server {kept.get('server')}"),
        (address, "address", f"local address {kept.get('address') or '127.0.0.1'}"),
        (port, "port", f"port {kept.get('port')}"),
        (threads, "threads", f"{kept.get('threads')} thread(s)"))
        if asked and asked != (kept.get(key) or ("127.0.0.1" if key == "address" else ""))), "")
    return (f"the client for {uri} already runs with {changed}; to change it, stop it first: {PROG} client stop "
            f"{uri}, then start it again with the new options") if changed else ""


def settings(path: Path) -> dict[str, str]:
    """A zk0bot state file (server.env, client.env): KEY=VALUE lines."""
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# ---------------------------------------------------------------------------
# commands: each returns its options as shell variables
# ---------------------------------------------------------------------------

Shell = dict[str, "str | list[str]"]


def server_start(opts: Options, home: Path) -> Shell:
    opts.parse(values=("--port", "--host", "--public-address", "--ca-cert", "--cert", "--key"), flags=("--insecure",))
    last = settings(home / "server" / "server.env")  # a restart keeps the last start's address
    env = os.environ
    port = opts.get("--port", env.get("ZK0_SERVER_PORT") or last.get("port") or str(DEFAULT_SERVER_PORT))
    host = opts.get("--host", env.get("ZK0_SERVER_HOST") or last.get("host") or "0.0.0.0")
    names = opts.get("--public-address", env.get("ZK0_SERVER_HOSTNAMES") or last.get("names", ""))
    check_port(port)
    check_public_names(host, names)
    given = [opts.get(option) for option in ("--ca-cert", "--cert", "--key")]
    if any(given) and not all(given):
        raise Refused("--ca-cert, --cert and --key go together; give all three")
    return {"port": port, "host": host, "names": names, "insecure": _flag(opts, "--insecure"),
            "ca": given[0], "cert": given[1], "key": given[2],
            "last_port": last.get("port", ""), "last_host": last.get("host", ""), "last_names": last.get("names", "")}


def server_logs(opts: Options, _: Path) -> Shell:
    opts.parse(flags=("-f", "--follow", "--superlink", "--superexec", "--proxy"))
    components = [arg[2:] for arg in opts.argv if arg in ("--superlink", "--superexec", "--proxy")]
    return {"follow": _follow(opts), "component": components[-1] if components else "run"}


def server_register(opts: Options, home: Path) -> Shell:
    opts.parse(values=("--name",), positional=True)
    keys, name = opts.positional, opts.get("--name")
    if not keys:
        raise Refused(f"usage: {PROG} server register <node-public-key-file>... [--name NAME]")
    if name and len(keys) > 1:
        raise Refused("--name labels one node; register several keys without it (each is named by its key's comment)")
    for key in keys:
        if not Path(key).is_file():
            raise Refused(f"public key file '{key}' does not exist")
        if not any(line.startswith(NODE_KEY_PREFIX) for line in Path(key).read_text(errors="replace").split("\n")):
            raise Refused(f"'{key}' is not a node public key (expected an '{NODE_KEY_PREFIX}...' line from "
                          "zk0bot client start)")
    if name:
        check_node_name(name)
        nodes = home / "server" / "nodes"
        kept = kept_key(nodes, Path(keys[0])).with_suffix(".name")
        for other in sorted(nodes.glob("*.name")):
            if other != kept and other.read_text().rstrip("\n") == name:
                raise Refused(f"the name '{name}' is taken by another node key ({other}); choose another with --name")
    return {"name": name, "keys": keys}


def server_nodes(opts: Options, _: Path) -> Shell:
    opts.parse(values=("--limit",), flags=("--all",))
    limit = opts.get("--limit", "20")
    if not re.fullmatch(r"[1-9][0-9]*", limit):
        raise Refused(f"--limit must be a positive integer, got '{limit}'")
    return {"limit": "0" if "--all" in opts.flags else limit}


def client_start(opts: Options, home: Path) -> Shell:
    opts.parse(values=("--server", "--ca-cert", "--port", "--local-address", "--threads", "--rename-map"),
               lists=("--allow-app",), flags=("--insecure",), positional=True)
    env = os.environ
    for digest in opts.lists.get("--allow-app", []):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise Refused(f"--allow-app takes a FAB's SHA-256 (64 hex digits), got '{digest}'")
    if len(opts.positional) > 1:
        raise Refused(f"client start takes one dataset URI, got '{opts.positional[0]}' and '{opts.positional[1]}'")
    if not opts.positional:
        raise Refused(f"usage: {PROG} client start <dataset-uri>  (hf:owner/name or local:/absolute/path)")
    uri = opts.positional[0]
    server = opts.get("--server", env.get("ZK0_SERVER") or f"127.0.0.1:{DEFAULT_SERVER_PORT}")
    if not re.fullmatch(r"[^:]+:[0-9]+", server):
        raise Refused(f"--server must be HOST:PORT, got '{server}'")
    check_port(server.rsplit(":", 1)[1])
    port, address, threads = opts.get("--port"), opts.get("--local-address", env.get("ZK0_LOCAL_ADDRESS", "")), \
        opts.get("--threads")
    if port:
        check_port(port)
    if address and not (re.fullmatch(r"[0-9.]+", address) or ":" in address):
        raise Refused(f"--local-address must be an IP address of this machine (e.g. 127.0.0.1), got '{address}'")
    # The SuperNode's runtime API is plaintext: it must not listen on every interface.
    if address and is_ip(address) and ipaddress.ip_address(address).is_unspecified:
        raise Refused(f"--local-address {address} means every interface, and the SuperNode's runtime API is "
                      "plaintext; give one address of this machine (e.g. 127.0.0.1)")
    check_positive("--threads", threads)
    check_uri(uri)
    rename = opts.get("--rename-map")
    if rename:
        _check_rename_map(rename)
    ca = opts.get("--ca-cert", default_ca_cert(home))
    insecure = _flag(opts, "--insecure")
    if insecure == "0" and not Path(ca).is_file():
        raise Refused(f"CA certificate '{ca}' not found; get ca.crt from the server admin and pass --ca-cert FILE "
                      "(or set ZK0_CA_CERT)")
    given = "--server" in opts.values or bool(env.get("ZK0_SERVER"))
    return {"uri": uri, "id": client_id(uri), "server": server, "server_given": "1" if given else "0", "ca": ca,
            "port": port, "address": address, "threads": threads, "rename": rename,
            "allow": [digest.lower() for digest in opts.lists.get("--allow-app", [])], "insecure": insecure,
            # what a start of the running client would change: refused, with how to apply it
            "changes": changed_settings(home, uri, server if given else None, address, port, threads)}


def _check_rename_map(rename: str) -> None:
    from zk0.data.cameras import CameraError, parse_rename_map

    if "'" in rename:
        raise Refused("--rename-map must not contain single quotes; write it as "
                      "'{\"observation.images.top\": \"observation.images.front\"}'")
    try:
        parse_rename_map(rename)
    except CameraError as err:
        raise Refused(f"--rename-map: {err}") from None


def default_ca_cert(home: Path) -> str:
    """ZK0_CA_CERT, else this machine's server's CA, else ZK0_HOME/ca.crt."""
    if os.environ.get("ZK0_CA_CERT"):
        return os.environ["ZK0_CA_CERT"]
    local = home / "server" / "certs" / "ca.crt"
    return str(local if local.is_file() else home / "ca.crt")


def client_stop(opts: Options, _: Path) -> Shell:
    opts.parse(positional=True)
    if len(opts.positional) > 1:
        raise Refused(f"usage: {PROG} client stop [<dataset-uri>]")
    uri = opts.positional[0] if opts.positional else ""
    return {"uri": uri, "id": client_id(uri) if uri else ""}


def client_logs(opts: Options, _: Path) -> Shell:
    opts.see = ""
    opts.parse(flags=("-f", "--follow"), positional=True)
    uri = opts.positional[-1] if opts.positional else ""
    return {"uri": uri, "id": client_id(uri) if uri else "", "follow": _follow(opts)}


def run(opts: Options, _: Path) -> Shell:
    opts.parse(values=("--rounds", "--run-config"), flags=("--stream", "--quiet"), optional_value=("--resume",))
    rounds, extra = opts.get("--rounds"), opts.get("--run-config")
    check_positive("--rounds", rounds)
    resume = _flag(opts, "--resume")
    if resume == "1" and extra:
        raise Refused("--resume uses the interrupted run's own configuration; drop --run-config")
    if {"--stream", "--quiet"} <= opts.flags:
        raise Refused("--stream and --quiet contradict each other; choose one")
    return {"rounds": rounds, "extra": extra, "stream": _flag(opts, "--stream"),
            "quiet": ["--quiet"] if "--quiet" in opts.flags else [],
            "resume": resume, "resume_dir": opts.get("--resume")}


def status(opts: Options, _: Path) -> Shell:
    opts.see = f" (see: {PROG} status --help)"
    return {"json": _flag(opts.parse(flags=("--json",)), "--json")}


def service(opts: Options, home: Path) -> Shell:
    """`service install|remove`: where the units go and for which systemd target."""
    opts.parse(values=("--unit-dir",), flags=("--user",))
    if not home.is_dir():
        raise Refused(f"ZK0_HOME={home} is not a directory: start the server or a client once by hand first")
    user = "--user" in opts.flags
    default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user" if user \
        else Path("/etc/systemd/system")
    if not user and not opts.get("--unit-dir") and os.geteuid() != 0:
        raise Refused(f"system units need root; install this account's own with: {PROG} service install --user")
    directory = Path(opts.get("--unit-dir") or default)
    return {"dir": str(directory), "wanted": "default.target" if user else "multi-user.target",
            "systemctl": ["systemctl", "--user"] if user else ["systemctl"], "user": _flag(opts, "--user"),
            # Units written anywhere else are for review: systemd is not told.
            "review": "0" if directory == default else "1"}


def service_watch(opts: Options, _: Path) -> Shell:
    kind = opts.argv[0] if opts.argv else ""
    wanted = {"server": 1, "client": 2}
    if kind not in wanted or len(opts.argv) != wanted[kind]:
        raise Refused(f"usage: {PROG} service watch " + {"server": "server", "client": "client <dataset-uri>"}.get(
            kind, "server | client <dataset-uri>"))
    uri = opts.argv[1] if kind == "client" else ""
    return {"kind": kind, "uri": uri, "id": client_id(uri) if uri else ""}


def no_arguments(opts: Options, _: Path) -> Shell:
    opts.parse()
    return {}


def _flag(opts: Options, *names: str) -> str:
    return "1" if opts.flags & set(names) else "0"


def _follow(opts: Options) -> list[str]:
    """tail's option for -f/--follow."""
    return ["-f"] if opts.flags & {"-f", "--follow"} else []


COMMANDS: dict[tuple[str, str], Callable[[Options, Path], Shell]] = {
    ("server", "start"): server_start, ("server", "stop"): no_arguments, ("server", "status"): no_arguments,
    ("server", "logs"): server_logs, ("server", "register"): server_register, ("server", "nodes"): server_nodes,
    ("client", "start"): client_start, ("client", "stop"): client_stop, ("client", "status"): no_arguments,
    ("client", "logs"): client_logs, ("run", ""): run, ("status", ""): status,
    ("service", "install"): service, ("service", "remove"): service, ("service", "watch"): service_watch,
}


def parse(group: str, argv: list[str], home: Path) -> tuple[str, Shell]:
    """Which command ARGV names under GROUP and its options; raises Help or Refused."""
    sub = ""
    if group in SUBCOMMANDS:
        if not argv:
            raise Help(USAGE[group], status=1)
        sub, argv = argv[0], argv[1:]
        if sub in ("-h", "--help"):
            raise Help(USAGE[group])
        if sub not in SUBCOMMANDS[group]:
            raise Refused(f"unknown {group} command '{sub}' (see: {PROG} {group} --help)")
    if "-h" in argv or "--help" in argv:
        raise Help(sub_usage(group, sub) if sub and group != "service" else USAGE[group])
    where = f"{group} {sub}".strip()
    see = f" (see: {PROG} {group} --help)"
    return sub, COMMANDS[group, sub](Options(argv, where, see), home)


def shell(sub: str, variables: Shell) -> str:
    """`local` declarations of the options for zk0bot's eval (a list becomes an array)."""
    words = [f"sub={shlex.quote(sub)}"]
    arrays = []
    for name, value in variables.items():
        if isinstance(value, list):
            arrays.append(f"local -a {name}=({' '.join(shlex.quote(v) for v in value)})")
        else:
            words.append(f"{name}={shlex.quote(value)}")
    return "\n".join([f"local {' '.join(words)}", *arrays])


def main(argv: list[str]) -> int:
    """`parse HOME GROUP ARG...`: shell code on stdout, or one error line on stderr and exit 1."""
    home, group, rest = Path(argv[0]), argv[1], argv[2:]
    try:
        sub, variables = parse(group, rest, home)
    except Help as answer:
        print(f"printf '%s\\n' {shlex.quote(str(answer))}\nexit {answer.status}")
        return 0
    except Refused as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    print(shell(sub, variables))
    return 0
