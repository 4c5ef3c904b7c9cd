"""`zk0 admin`: the run bookkeeping behind `zk0bot run`, in Python over zk0.run.directory and
Flower's `flwr ... --format json`. zk0bot keeps the processes (tmux, the SuperLink's health);
this module reads and writes run directories and talks to the SuperLink through the flwr CLI.

    zk0 admin resume RUNS_DIR [RUN_DIR] [--rounds N]
        check that RUN_DIR (default: the newest unfinished run under RUNS_DIR) can resume and
        write its resume config; prints the run directory, then the config file
    zk0 admin submit APP_DIR --connection NAME [--run-config S ...]
        start a run with `flwr run`; prints its run id
    zk0 admin wait RUN_ID RUNS_DIR --connection NAME [--quiet]
        print the run's status as it changes and each round's line with an ETA until it ends
        (--quiet: only the last line); exit 0 only when it completed, else one line with
        Flower's status and the ServerApp's reason
    zk0 admin newest-log RUNS_DIR          the newest run's server.log
    zk0 admin runs RUNS_DIR --connection NAME [--limit N] [--json]
        the newest runs: Flower's status, the last saved round of num-rounds, the run directory

flwr runs with the environment's FLWR_HOME (zk0bot's server connection), from that directory:
flwr reads a connection name as an app path when the working directory holds a folder so named.
Messages name zk0bot's commands: this module is its back end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from zk0.ops.fab import copy_app
from zk0.run import state as run_state
from zk0.run.directory import RunDir, RunDirError

OPERATOR = "zk0bot"
POLL_SECONDS = 3.0
MAX_MISSED_POLLS = 10  # consecutive failed status queries before giving up on the SuperLink
FLWR_TIMEOUT = 120.0
ERROR_MARK = re.compile(r"zk0: error: (.*)")
ROUND_LINE = re.compile(r"(\[round (\d+)/(\d+)\] .*)")


class AdminError(ValueError):
    """What stops an admin step; one line for the operator."""


# ---------------------------------------------------------------------------
# run directories
# ---------------------------------------------------------------------------

def runs_in(runs_dir: Path) -> list[RunDir]:
    if not runs_dir.is_dir():
        return []
    return [RunDir(path) for path in sorted(runs_dir.iterdir()) if path.is_dir()]


def find_run(runs_dir: Path, run_id: int) -> RunDir | None:
    """The run directory whose run_config.json records Flower's `run_id` (a resumed run records its latest)."""
    found = []
    for run in runs_in(runs_dir):
        try:
            record = run.read_record()
        except RunDirError:
            continue  # another run's damaged record says nothing about this one
        if record is not None and record.get("run_id") == run_id:
            found.append((run.record.stat().st_mtime, run.path))
    return RunDir(max(found)[1]) if found else None


def unfinished_run(runs_dir: Path) -> RunDir | None:
    """The run that saved its state most recently among those short of their num-rounds."""
    candidates = []
    for run in runs_in(runs_dir):
        saved = run_state.last_saved(run.path)
        try:
            record = run.read_record()
        except RunDirError:
            continue
        if saved is None or record is None:
            continue
        done, saved_at = saved
        if done < record["run_config"].get("num-rounds", 0):
            candidates.append((saved_at, run.path))
    return RunDir(max(candidates)[1]) if candidates else None


def prepare_resume(runs_dir: Path, run_dir: str | None, rounds: int | None) -> RunDir:
    """The run to resume, with its resume config written: its own run config plus resume-from."""
    import tomli_w

    if run_dir is None:
        run = unfinished_run(runs_dir)
        if run is None:
            raise AdminError(f"no unfinished run to resume under {runs_dir}; name one: {OPERATOR} run --resume RUN_DIR")
    else:
        given = Path(run_dir).expanduser()
        if not given.is_dir():
            problem = "is not a directory" if given.exists() else "does not exist"
            raise AdminError(f"run directory '{run_dir}' {problem}; give a run directory under {runs_dir}")
        run = RunDir.at(run_dir)
    record = run.read_record()
    if record is None:
        raise AdminError(f"{run.path} is not a zk0 run directory (no {run.record.name}); give one under {runs_dir}")
    saved = run_state.last_saved(run.path)
    if saved is None:
        raise AdminError(f"{run.path} has no saved state (no completed round); start a new run instead")
    config = dict(record["run_config"])
    if rounds is not None:
        config["num-rounds"] = rounds
    done = saved[0]
    if done >= config.get("num-rounds", 0):
        raise AdminError(f"{run.path} already completed round {done} of num-rounds {config.get('num-rounds')}; "
                         f"train further with --rounds above {done}")
    config["resume-from"] = str(run.path)
    run.resume_config.write_bytes(tomli_w.dumps(config).encode())
    return run


def newest_log(runs_dir: Path) -> Path | None:
    logs = [run.server_log for run in runs_in(runs_dir) if run.server_log.is_file()]
    return max(logs, key=lambda path: path.stat().st_mtime) if logs else None


# ---------------------------------------------------------------------------
# Flower's CLI
# ---------------------------------------------------------------------------

def flwr(*args: str) -> subprocess.CompletedProcess:
    """The flwr CLI of this environment, from FLWR_HOME (a directory no app folder shadows)."""
    executable = Path(sys.executable).parent / "flwr"
    cwd = os.environ.get("FLWR_HOME") or tempfile.gettempdir()
    return subprocess.run([str(executable), *args], cwd=cwd, capture_output=True, text=True, timeout=FLWR_TIMEOUT)


def json_reply(text: str) -> dict:
    """The JSON object of a `--format json` reply; flwr may print notes before it."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        reply, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return {}
    return reply if isinstance(reply, dict) else {}


def submit(app_dir: Path, connection: str, run_configs: list[str]) -> int:
    overrides = [arg for value in run_configs for arg in ("--run-config", value)]
    with tempfile.TemporaryDirectory(prefix="zk0-app-") as scratch:
        try:  # flwr would walk app_dir's .venv
            app = copy_app(app_dir, Path(scratch) / "app")
        except OSError as err:
            raise AdminError(f"cannot copy the app for `flwr run` under {tempfile.gettempdir()}: {err}; "
                             "free space there or set TMPDIR to another folder") from None
        try:
            result = flwr("run", str(app), connection, "--format", "json", *overrides)
        except subprocess.TimeoutExpired:
            raise AdminError(f"the SuperLink did not answer `flwr run` within {FLWR_TIMEOUT:.0f} s; "
                             f"check it: {OPERATOR} server status") from None
    text = result.stdout + result.stderr
    reply = json_reply(result.stdout) or json_reply(text)
    run_id = str(reply.get("run-id") or "")
    if run_id.isdigit():
        return int(run_id)
    reason = [line for line in str(reply.get("error-message", text)).splitlines()
              if line.strip() and "Using SuperLink" not in line]
    raise AdminError(f"the SuperLink did not start a run: {reason[0].strip() if reason else 'no reply from flwr'}")


def run_status(run_id: int, connection: str) -> str | None:
    """Flower's status of the run ('pending', 'running', 'finished:completed', ...), or None if unknown."""
    try:
        result = flwr("ls", connection, "--run-id", str(run_id), "--format", "json")
    except subprocess.TimeoutExpired:
        return None
    runs = json_reply(result.stdout).get("runs") or []
    status = runs[0].get("status") if runs and isinstance(runs[0], dict) else None
    return status or None


def failure_reason(run_id: int, connection: str, run: RunDir | None) -> str | None:
    """The ServerApp's `zk0: error:` line: from Flower's run log, else from the run's server.log."""
    try:
        texts = [flwr("log", str(run_id), connection, "--show").stdout]
    except subprocess.TimeoutExpired:
        texts = []
    if run is not None and run.server_log.is_file():
        texts.append(run.server_log.read_text(errors="replace"))
    for text in texts:
        reasons = ERROR_MARK.findall(text)
        if reasons:
            return reasons[-1].strip()
    return None


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class RoundLines:
    """The round lines a run's server.log gained since the last call, each closing with an ETA:
    the time per round seen so far (from the first round line read) times the rounds left."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.offset, self.first = clock, 0, None

    def new(self, log: Path) -> list[str]:
        try:
            with log.open("rb") as file:
                file.seek(self.offset)
                text = file.read()
        except FileNotFoundError:
            return []
        complete = text[: text.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines = []
        for raw in complete.decode(errors="replace").splitlines():
            match = ROUND_LINE.search(raw)
            if match is None:
                continue
            line, done, total = match.group(1), int(match.group(2)), int(match.group(3))
            now = self.clock()
            if self.first is None:
                self.first = (done, now)
            first_done, first_at = self.first
            if done < total and done > first_done:
                line += f" | ETA {duration((now - first_at) / (done - first_done) * (total - done))}"
            lines.append(line)
        return lines


def wait(run_id: int, runs_dir: Path, connection: str, say: Callable[[str], None] = print,
         sleep: Callable[[float], None] = time.sleep) -> RunDir | None:
    """Follow the run until Flower says it finished, saying each status and round line; its run
    directory if it completed, else AdminError."""
    last, missed, run, rounds = None, 0, None, RoundLines()
    while True:
        status = run_status(run_id, connection)
        run = run or find_run(runs_dir, run_id)
        if run is not None:
            for line in rounds.new(run.server_log):
                say(line)
        if status is None:
            missed += 1
            if missed >= MAX_MISSED_POLLS:
                raise AdminError(f"lost contact with the SuperLink while waiting for run {run_id} "
                                 f"(is it running? {OPERATOR} server status)")
        else:
            missed = 0
            if status != last:
                say(f"run {run_id}: {status}")
            last = status
            if status.startswith("finished:"):
                break
        sleep(POLL_SECONDS)
    run = find_run(runs_dir, run_id)
    if run is not None:
        for line in rounds.new(run.server_log):
            say(line)
    if status == "finished:completed":
        return run
    reason = failure_reason(run_id, connection, run)
    where = f" (partial outputs in {run.path}; continue with: {OPERATOR} run --resume {run.path})" if run else ""
    raise AdminError(f"run {run_id} ended as '{status}': {reason or 'no reason was logged'}; "
                     f"see: {OPERATOR} server logs{where}")


# ---------------------------------------------------------------------------
# command line (registered by zk0.tools.cli)
# ---------------------------------------------------------------------------

def _out(line: str) -> None:
    print(line, flush=True)  # zk0bot relays each line as it comes


def _resume(args: argparse.Namespace) -> int:
    run = prepare_resume(Path(args.runs_dir), args.run_dir, args.rounds)
    _out(str(run.path))
    _out(str(run.resume_config))
    return 0


def _submit(args: argparse.Namespace) -> int:
    _out(str(submit(Path(args.app_dir).resolve(), args.connection, args.run_config)))
    return 0


def _wait(args: argparse.Namespace) -> int:
    run = wait(args.run_id, Path(args.runs_dir), args.connection, say=(lambda _line: None) if args.quiet else _out)
    _out(f"run {args.run_id} completed; outputs in {run.path if run else args.runs_dir}")
    return 0


def _newest_log(args: argparse.Namespace) -> int:
    log = newest_log(Path(args.runs_dir))
    if log is None:
        raise AdminError(f"no run has written a log yet under {args.runs_dir}; see '{OPERATOR} server logs --superlink'")
    _out(str(log))
    return 0


def recent_runs(runs_dir: Path, connection: str, limit: int) -> list[dict]:
    """The newest `limit` runs Flower knows, newest first, each with its run directory and the
    last round it saved (of num-rounds) where zk0 wrote one."""
    try:
        reply = json_reply(flwr("ls", connection, "--format", "json").stdout)
    except subprocess.TimeoutExpired:
        reply = {}
    if not reply.get("success", False):
        raise AdminError(f"the SuperLink did not list its runs; check it: {OPERATOR} server status")
    runs = sorted(reply.get("runs") or [], key=lambda row: int(row.get("run-id") or 0), reverse=True)[:limit]
    rows = []
    for row in runs:
        run_id = int(row.get("run-id") or 0)
        found = find_run(runs_dir, run_id)
        record = None
        if found is not None:
            try:
                record = found.read_record()
            except RunDirError:
                record = None
        saved = run_state.last_saved(found.path) if found is not None else None
        rows.append({
            "run_id": run_id,
            "status": row.get("status") or "",
            "elapsed": row.get("elapsed") or "",
            "round": saved[0] if saved else None,
            "num_rounds": record["run_config"].get("num-rounds") if record else None,
            "run_dir": str(found.path) if found else None,
        })
    return rows


def _runs(args: argparse.Namespace) -> int:
    rows = recent_runs(Path(args.runs_dir), args.connection, args.limit)
    if args.json:
        _out(json.dumps(rows))
        return 0
    if not rows:
        _out("runs: none yet")
    for row in rows:
        rounds = f"round {row['round'] if row['round'] is not None else 0}/{row['num_rounds']}" \
            if row["num_rounds"] is not None else "no rounds yet"
        where = row["run_dir"] or "(no run directory)"
        _out(f"run {row['run_id']}: {row['status']}, {rounds}, {row['elapsed'] or '-'}, {where}")
    return 0


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{text}'")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    admin = sub.add_parser("admin", help="run bookkeeping behind zk0bot run (resume, submit, wait, logs)")
    commands = admin.add_subparsers(dest="admin_command", required=True)

    resume = commands.add_parser("resume", help="check a run can resume and write its resume config")
    resume.add_argument("runs_dir", help="the directory holding the runs (zk0bot: ~/.zk0/server/runs)")
    resume.add_argument("run_dir", nargs="?", help="the run to resume (default: the newest unfinished one)")
    resume.add_argument("--rounds", type=_positive, help="the new num-rounds")
    resume.set_defaults(func=_resume)

    submit_cmd = commands.add_parser("submit", help="start a run with flwr run; print its run id")
    submit_cmd.add_argument("app_dir", help="the Flower app directory (with pyproject.toml)")
    submit_cmd.add_argument("--connection", required=True, help="the SuperLink connection in FLWR_HOME")
    submit_cmd.add_argument("--run-config", action="append", default=[], help="passed on to flwr run (repeatable)")
    submit_cmd.set_defaults(func=_submit)

    wait_cmd = commands.add_parser("wait", help="follow a run until it ends; exit 0 only if it completed")
    wait_cmd.add_argument("run_id", type=int)
    wait_cmd.add_argument("runs_dir")
    wait_cmd.add_argument("--connection", required=True, help="the SuperLink connection in FLWR_HOME")
    wait_cmd.add_argument("--quiet", action="store_true", help="print only the last line")
    wait_cmd.set_defaults(func=_wait)

    runs = commands.add_parser("runs", help="the newest runs: status, round, run directory")
    runs.add_argument("runs_dir")
    runs.add_argument("--connection", required=True, help="the SuperLink connection in FLWR_HOME")
    runs.add_argument("--limit", type=_positive, default=5, help="how many runs (default 5)")
    runs.add_argument("--json", action="store_true", help="one JSON list")
    runs.set_defaults(func=_runs)

    log = commands.add_parser("newest-log", help="the newest run's server.log")
    log.add_argument("runs_dir")
    log.set_defaults(func=_newest_log)
