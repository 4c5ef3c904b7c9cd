"""The warm ClientApp executor (zk0_executor) through real processes on 127.0.0.1 (insecure;
TLS is covered elsewhere), its check of which FABs a node runs, and its Flower drift guard.

One SuperLink, one SuperNode in `--isolation process` (its tasks protected by a SuperExec
secret) and one `python -m zk0_executor` are started for the module; the tests then go
in order: a 2-round run is served by that one process and only its first message pays
the start-up; a ClientApp that raises gets Flower's error reply and the same process
serves the next run; a FAB built from a modified copy of zk0 is refused (the server's
round 0 names the node and the reason) until the operator allows its hash; a killed
executor makes the next run fail within its round-timeout, and a restarted one serves
the run after it; an executor without the SuperNode's secret is refused.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import inspect
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk
from ports import free_port

from zk0.ops.fab import copy_app
from zk0_executor import flower as executor_flower
from zk0_executor.trust import APP_FILES, AppPolicy, RefusedApp, installed_app_dir, parse_allowed

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CONNECTION = "zk0-executor-test"
SERVED = re.compile(
    r"zk0-executor pid=(?P<pid>\d+) run=(?P<run>\d+) type=(?P<type>\w+) round=(?P<round>\S+) "
    r"seconds=(?P<seconds>[\d.]+) pull=(?P<pull>[\d.]+) app-load=(?P<app_load>[\d.]+) status=(?P<status>ok|error[^\n]*)"
)
NODE_WAIT_SECONDS = 30.0
TINY_RUN = (
    "model='tiny' local-steps=4 batch-size=4 eval-batches=2 num-workers=0 min-train-clients=1 "
    f"min-evaluate-clients=1 min-available-clients=1 node-wait-timeout={NODE_WAIT_SECONDS} round-retries=0"
)
# What a run needs besides its messages (the ServerApp's start, model and checkpoints) on a busy machine.
SERVERAPP_SECONDS = 120.0


def run_deadline(rounds: int, round_timeout: float) -> float:
    """The seconds a run ends within by its own deadlines: a node wait before the statistics query
    and each round, and a round-timeout for the query and each round's training and evaluation."""
    return SERVERAPP_SECONDS + NODE_WAIT_SECONDS * (rounds + 1) + round_timeout * (1 + 2 * rounds)


def wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise AssertionError(f"{what} within {timeout:.0f}s\n{tail}")
        time.sleep(0.5)


class Proc:
    """One started process in its own process group, its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict) -> None:
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True, cwd=log.parent)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, sig)
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=15)
        else:
            try:  # children the leader left behind (a ServerApp, say)
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass
class Deployment:
    tmp: Path
    env: dict
    superlink_port: int
    node_port: int
    secret: Path
    clients: list[str]
    eval_uri: str
    procs: list[Proc]
    supernode: Proc | None = None
    executor: Proc | None = None

    def start(self, name: str, args: list[str]) -> Proc:
        proc = Proc(args, self.tmp / f"{name}-{len(self.procs)}.log", self.env)
        self.procs.append(proc)
        return proc

    def start_supernode(self, dataset_uri: str) -> None:
        if self.supernode is not None:
            self.supernode.stop()
        self.supernode = self.start("supernode", [
            str(BIN / "flower-supernode"), "--insecure", "--isolation", "process",
            "--superlink", f"127.0.0.1:{self.superlink_port}", "--port", str(self.node_port),
            "--superexec-auth-secret-file", str(self.secret), "--node-config", f"dataset-uri='{dataset_uri}'",
        ])
        wait_for(lambda: "SuperNode ID" in self.supernode.text(), 60, "the SuperNode did not connect",
                 self.supernode.log)

    def start_executor(self, *extra: str) -> Proc:
        if self.executor is not None:
            self.executor.stop()
        self.executor = self.start("executor", [
            sys.executable, "-m", "zk0_executor", "--runtime-api-address", f"127.0.0.1:{self.node_port}",
            "--insecure", "--superexec-auth-secret-file", str(self.secret), *extra,
        ])
        wait_for(lambda: "serving ClientApp tasks" in self.executor.text(), 60, "the executor did not start",
                 self.executor.log)
        return self.executor

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True, text=True,
                              timeout=120, cwd=self.tmp)

    def run(self, rounds: int, round_timeout: float = 120.0, extra: str = "",
            app: Path | None = None) -> tuple[int, str, float]:
        """Submit a zk0 run (of the app at `app`); wait until it finishes, as its own deadlines
        guarantee; its id, final status and seconds taken."""
        config = (
            f"{TINY_RUN} num-rounds={rounds} round-timeout={round_timeout} datasets='{self.clients[0]}' "
            f"eval-dataset='{self.eval_uri}' output-dir='{self.tmp / 'runs'}' {extra}"
        )
        timeout = run_deadline(rounds, round_timeout)
        started = time.monotonic()
        app = app or copy_of_app(self.tmp / f"app-{time.monotonic_ns()}")  # as zk0 submits: the app's files alone
        submitted = self.flwr("run", str(app), CONNECTION, "--format", "json", "--run-config", config)
        text = submitted.stdout
        assert "run-id" in text, submitted.stdout + submitted.stderr
        run_id = int(json.loads(text[text.index("{"):])["run-id"])
        status = ""
        while not status.startswith("finished:"):
            assert time.monotonic() - started < timeout, (
                f"run {run_id} still '{status}' after {timeout:.0f}s, past its own deadlines\n{self.logs(run_id)}")
            time.sleep(2)
            listed = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
            if listed.returncode == 0:
                status = json.loads(listed.stdout)["runs"][0]["status"]
        return run_id, status, time.monotonic() - started

    def logs(self, run_id: int) -> str:
        """The ends of the server's, the SuperNode's and the executor's logs, for a failure's message."""
        try:
            parts = [("server", self.server_log(run_id))]
        except subprocess.TimeoutExpired:
            parts = [("server", "(flwr log did not answer)")]
        parts += [(proc.log.name, proc.text()) for proc in (self.supernode, self.executor) if proc is not None]
        return "\n".join(f"--- {name}:\n{text[-3000:]}" for name, text in parts)

    def served(self, executor: Proc, run_id: int) -> list[dict]:
        return [m.groupdict() for m in SERVED.finditer(executor.text()) if int(m["run"]) == run_id]

    def server_log(self, run_id: int) -> str:
        return self.flwr("log", str(run_id), CONNECTION, "--show").stdout

    def metrics(self, run_id: int) -> list[dict]:
        run_dir = next(p.parent for p in (self.tmp / "runs").glob("*/run_config.json")
                       if json.loads(p.read_text())["run_id"] == run_id)
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, demo_roots: list[Path]):
    tmp = tmp_path_factory.mktemp("executor")
    superlink_port, node_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
        "FLWR_HOME": str(tmp / "flwr-home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    (tmp / "flwr-home").mkdir()
    (tmp / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "127.0.0.1:{superlink_port}"\ninsecure = true\n'
    )
    secret = tmp / "superexec.secret"
    secret.write_bytes(os.urandom(32))
    dep = Deployment(tmp, env, superlink_port, node_port, secret,
                     [f"local:{root}" for root in demo_roots[:-1]], f"local:{demo_roots[-1]}", [])
    try:
        superlink = dep.start("superlink", [
            str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(superlink_port),
        ])
        wait_for(lambda: dep.flwr("ls", CONNECTION, "--format", "json").returncode == 0, 60,
                 "the SuperLink did not answer", superlink.log)
        dep.start_supernode(dep.clients[0])
        dep.start_executor()
        yield dep
    finally:
        for proc in reversed(dep.procs):
            proc.stop()


def test_two_round_run_is_served_by_one_warm_process(deployment: Deployment):
    """Every message of a 2-round run goes through the one executor; only the first pays the start-up."""
    dep = deployment
    run_id, status, _ = dep.run(rounds=2)
    assert status == "finished:completed", dep.server_log(run_id)[-3000:]
    served = dep.served(dep.executor, run_id)
    # Round 0's statistics query, one train message per round, the final evaluation.
    assert [(s["type"], s["round"]) for s in served] == [
        ("query", "-"), ("train", "1"), ("train", "2"), ("evaluate", "2")
    ], dep.executor.text()[-3000:]
    assert {int(s["pid"]) for s in served} == {dep.executor.pid}
    assert all(s["status"] == "ok" for s in served)
    # The executor's own part (task, FAB, app import) and zk0's (model, processors, dataset).
    assert all(float(s["app_load"]) < 1.0 for s in served[1:]), "\n".join(map(str, served))
    rows = dep.metrics(run_id)
    startups = [
        client["startup-seconds"] for row in rows[1:] for part in ("clients", "client_eval")
        for client in row[part].values()
    ]
    assert len(startups) == 3  # train 1, train 2, final evaluation: all after the query loaded the model
    assert all(seconds < 1.0 for seconds in startups), startups
    assert float(served[0]["seconds"]) > 5 * max(startups), (served[0], startups)  # the query did load it


def test_raising_clientapp_gets_an_error_reply_and_the_executor_keeps_serving(deployment: Deployment):
    """The SuperNode restarts with a dataset that does not exist: Flower's error reply ends the run;
    the same executor then serves the next run once the SuperNode has a good dataset again."""
    dep = deployment
    missing = dep.tmp / "no-such-dataset"
    dep.start_supernode(f"local:{missing}")
    run_id, status, _ = dep.run(rounds=1, extra="fraction-evaluate=0.0")
    assert status == "finished:failed"
    assert "DatasetError" in dep.server_log(run_id) and str(missing) in dep.server_log(run_id)
    served = dep.served(dep.executor, run_id)
    assert len(served) == 1 and served[0]["status"].startswith("error <class 'zk0.data.dataset.DatasetError'>"), served
    assert dep.executor.alive()

    dep.start_supernode(dep.clients[0])
    run_id, status, _ = dep.run(rounds=1, extra="fraction-evaluate=0.0")
    assert status == "finished:completed", dep.server_log(run_id)[-3000:]
    served = dep.served(dep.executor, run_id)
    assert [(int(s["pid"]), s["type"], s["status"]) for s in served] == [
        (dep.executor.pid, "query", "ok"), (dep.executor.pid, "train", "ok")]


def copy_of_app(where: Path, change=None) -> Path:
    """A copy of the app as `flwr run` packs it (zk0.ops.fab); `change(copy)` edits it."""
    copy_app(ROOT, where)
    if change is not None:
        change(where)
    return where


def append_comment(app: Path) -> None:
    with (app / "src" / "zk0" / "client_app.py").open("a") as module:
        module.write("# not the zk0 this node installed\n")


def test_a_fab_that_is_not_the_installed_zk0_is_refused_until_its_operator_allows_it(deployment: Deployment):
    """A FAB from a modified copy of zk0: the executor answers with an error reply naming the FAB,
    the server's round 0 names the node and `refused: ...`, and nothing of it is installed; the
    executor serves on. Restarted with `--allow-app <that hash>`, it runs the same FAB."""
    dep = deployment
    modified = copy_of_app(dep.tmp / "modified-app", append_comment)
    digest = hashlib.sha256(build_fab_from_disk(modified)).hexdigest()  # what `flwr run` submits (FABs are reproducible)
    run_id, status, _ = dep.run(rounds=1, extra="fraction-evaluate=0.0", app=modified)
    assert status == "finished:failed"
    served = dep.served(dep.executor, run_id)
    assert len(served) == 1, served
    assert served[0]["status"].startswith(
        f"error refused: FAB sha256 {digest} (zk0/zk0 0.1.0) is not this node's installed zk0: "
        "src/zk0/client_app.py differs from the installed one;"), served
    server_log = dep.server_log(run_id)
    node_line = next(line for line in server_log.splitlines() if "Round 0: node" in line)
    assert f"refused: FAB sha256 {digest}" in node_line, server_log[-3000:]
    assert node_line.endswith(f"run 'zk0bot upgrade' on this node (or allow this FAB with --allow-app {digest})"), node_line
    assert dep.executor.alive()

    allowing = dep.start_executor("--allow-app", digest.upper())
    assert f"the zk0 installed at {installed_app_dir()} and 1 FAB(s) allowed by hash" in allowing.text()
    run_id, status, _ = dep.run(rounds=1, extra="fraction-evaluate=0.0", app=modified)
    assert status == "finished:completed", dep.server_log(run_id)[-3000:]
    assert [(s["type"], s["status"]) for s in dep.served(allowing, run_id)] == [("query", "ok"), ("train", "ok")]
    assert f"running FAB sha256 {digest} (zk0/zk0 0.1.0), allowed by --allow-app" in allowing.text()


def test_killed_executor_fails_the_next_run_within_its_timeout_and_a_restart_recovers(deployment: Deployment):
    """With no executor the SuperNode's task stays pending (nothing on the node times it out): the
    run fails at its round-timeout. A restarted executor first runs that stale task (the SuperNode
    drops its reply), then serves the next run."""
    dep = deployment
    dep.executor.stop(signal.SIGKILL)
    run_id, status, _ = dep.run(rounds=1, round_timeout=10.0, extra="fraction-evaluate=0.0")
    assert status == "finished:failed"
    log = dep.server_log(run_id)
    assert "usable normalization statistics" in log and "no reply within round-timeout (10s)" in log, log[-3000:]
    stale_run = run_id

    restarted = dep.start_executor()
    run_id, status, _ = dep.run(rounds=1, extra="fraction-evaluate=0.0")
    assert status == "finished:completed", dep.server_log(run_id)[-3000:]
    first = SERVED.search(restarted.text())
    assert first is not None and int(first["run"]) == stale_run
    served = dep.served(restarted, run_id)
    assert [(int(s["pid"]), s["type"], s["status"]) for s in served] == [
        (restarted.pid, "query", "ok"), (restarted.pid, "train", "ok")]


def test_executor_without_the_supernode_secret_is_refused(deployment: Deployment):
    """Only a process holding the SuperNode's SuperExec secret may claim its tasks (and see the weights)."""
    dep = deployment
    wrong = dep.tmp / "wrong.secret"
    wrong.write_bytes(os.urandom(32))
    result = subprocess.run(
        [sys.executable, "-m", "zk0_executor", "--runtime-api-address", f"127.0.0.1:{dep.node_port}", "--insecure",
         "--superexec-auth-secret-file", str(wrong)],
        env=dep.env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"zk0 executor: the SuperNode at 127.0.0.1:{dep.node_port} refused to hand out tasks (HTTP 401); "
        "pass the SuperNode's secret with --superexec-auth-secret-file"
    )


# sha256 of the source of Flower 1.42.0's run_clientapp.pull_task_input, which zk0_executor.flower copies.
FLOWER_PULL_TASK_INPUT_SHA256 = "5607a23e1673ee876930c1b35685b8dfdfd8b3776a436560b0467042e15fc695"

# What Flower's run_clientapp uses that the executor does without, and why. Anything else it
# uses must be in zk0_executor.flower: a name Flower starts using fails the guard below.
FLOWER_NAMES_NOT_USED = {
    "DEBUG": "Flower's debug log lines",
    "event": "telemetry of the one-shot process (zk0 runs with FLWR_TELEMETRY_ENABLED=0)",
    "EventType": "telemetry, as above",
    "register_signal_handlers": "one-shot exit handlers; the executor's own SIGINT/SIGTERM answer the task and stop",
    "flwr_exit": "the one-shot process exits after its task; the executor serves the next one",
    "ExitCode": "exit codes of the one-shot process, as above",
    "make_simple_http_retry_invoker": "it SIGINTs its process on HTTP 401; the executor bounds a task's retries instead",
    "make_task_heartbeat_fn_http": "it raises SIGINT when the SuperNode drops the task; the executor logs it instead",
    "RUNTIME_DEPENDENCY_INSTALL": "no runtime dependency installation: the app runs in the installed environment",
    "install_app_dependencies": "no runtime dependency installation, as above",
    "cleanup_app_runtime_environment": "no runtime dependency installation, as above",
    "RuntimeDependencyInstallationError": "no runtime dependency installation, as above",
}


def flower_names_used(function) -> set[str]:
    """The module-level names (Flower's helpers, classes, constants) a Flower function refers to."""
    module = sys.modules[function.__module__]
    tree = ast.parse(inspect.getsource(function))
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in vars(module)
            and not hasattr(builtins, node.id) and node.id != function.__name__}


def flower_interceptors(function) -> set[str]:
    """The interceptor classes a Flower function instantiates for its Runtime API client."""
    tree = ast.parse(inspect.getsource(function))
    return {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id.endswith("Interceptor")}


def test_executor_follows_the_flower_runtime_it_was_built_on():
    """zk0_executor repeats the steps of Flower's run_clientapp (and, to claim tasks, of its SuperExec)
    with Flower's own helpers and one copied helper: when an upgrade changes them, or Flower starts
    using something the executor lacks, this fails and zk0_executor.flower must be re-checked."""
    import flwr
    from flwr.supercore.superexec import run_superexec
    from flwr.supernode.runtime import run_clientapp as flower

    pinned = next(dep for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                  if dep.startswith("flwr"))
    assert pinned.endswith(f"=={flwr.__version__}"), (pinned, flwr.__version__)
    steps = inspect.getsource(flower.run_clientapp)
    for step in ("HeartbeatSender(make_task_heartbeat_fn_http(client))", "pull_task_input(client)",
                 "install_from_fab(fab.content, skip_prompt=True)", "get_load_client_app_fn(",
                 "client_app(message=message, context=context)",
                 "Message(Error(code=e_code, reason=reason), reply_to=message)",
                 "push_message(client, reply_message, context)", "push_task_output("):
        assert step in steps, f"Flower's run_clientapp no longer does: {step}"
    copied = hashlib.sha256(inspect.getsource(flower.pull_task_input).encode()).hexdigest()
    assert copied == FLOWER_PULL_TASK_INPUT_SHA256, "Flower's pull_task_input changed: re-sync zk0_executor.flower's copy"
    assert list(inspect.signature(flower.push_message).parameters) == ["client", "message", "context"]
    assert list(inspect.signature(flower.push_task_output).parameters) == ["client", "context", "sub_status", "details"]

    used = flower_names_used(flower.run_clientapp)
    lacking = sorted(used - set(vars(executor_flower)) - set(FLOWER_NAMES_NOT_USED))
    assert not lacking, f"Flower's run_clientapp uses {lacking}, which zk0_executor.flower lacks: add or list them"
    assert not set(FLOWER_NAMES_NOT_USED) - used, "FLOWER_NAMES_NOT_USED lists names Flower no longer uses"
    assert not set(FLOWER_NAMES_NOT_USED) & set(vars(executor_flower))
    # The Runtime API clients carry the interceptors Flower's own clients carry (tracing, version, token/secret).
    task = {type(i).__name__ for i in executor_flower.task_interceptors("token")}
    assert task == flower_interceptors(flower.run_clientapp), "the executor's task client differs from Flower's"
    superexec = {type(i).__name__ for i in executor_flower.superexec_interceptors(b"secret")}
    assert superexec == flower_interceptors(run_superexec.run_superexec), "the executor's poller differs from Flower's"
    assert run_superexec._SUPEREXEC_AUTH_METHODS == {executor_flower.ACQUIRE_TASK_METHOD}  # what the secret signs
    # zk0_executor.serve.Tasks infers a dropped message from a newer task: the SuperNode creates a
    # message's task before it fetches the objects, and receives the next message only after it
    # pushed this one's reply (or dropped it).
    from flwr.supernode import start_client_internal as supernode
    receive = inspect.getsource(supernode._pull_and_store_message)
    assert receive.index("state.create_task(") < receive.index("pull_objects(") < receive.rindex("return run_id")
    loop = inspect.getsource(supernode.start_client_internal)
    assert re.search(r"while True:\s+run_id = _pull_and_store_message\(.*?\)\s+.*?if run_id is None:.*?continue\s+"
                     r"_push_messages\(", loop, re.S), "the SuperNode no longer receives one message at a time"


def test_the_executor_is_fenced_off_from_the_app_and_its_flower_surface_is_one_module(tmp_path: Path):
    """Only zk0_executor.flower imports Flower; no executor module imports zk0 (so dropping the app's
    modules never drops the executor); the FAB carries zk0 and not the executor."""
    for module in (ROOT / "src" / "zk0_executor").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert "zk0" not in imported, module
        assert ("flwr" in imported) == (module.name == "flower.py"), module
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(copy_of_app(tmp_path / "app")))) as fab:
        names = fab.namelist()
    assert "src/zk0/client_app.py" in names and not [n for n in names if "zk0_executor" in n], names


def test_the_installed_zk0_is_the_checkout_and_its_fab_is_accepted(tmp_path: Path):
    """Installed editable (or built from this checkout), zk0's installed modules are the FAB's, byte for byte."""
    installed = installed_app_dir()
    def app_files(package: Path) -> list[str]:
        return sorted(p.relative_to(package).as_posix() for pattern in APP_FILES for p in package.glob(pattern))

    assert app_files(installed) == app_files(ROOT / "src" / "zk0")
    policy = AppPolicy(installed)
    assert policy.differences(build_fab_from_disk(copy_of_app(tmp_path / "same"))) == []
    assert policy.check(build_fab_from_disk(copy_of_app(tmp_path / "copy")), "zk0/zk0", "0.1.0") is False


def _edit(path: str, text: str):
    def change(app: Path) -> None:
        (app / path).write_text(text)
    return change


def _remove(path: str):
    return lambda app: (app / path).unlink()


def _entry_point(app: Path) -> None:
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('clientapp = "zk0.client_app:app"',
                                                       'clientapp = "zk0.tools.cli:app"'))


def _own_package(app: Path) -> None:
    (app / "evil").mkdir()
    (app / "evil" / "zk0.py").write_text("app = None\n")
    pyproject = app / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('fab-include = [', 'fab-include = ["evil/*.py", '))


@pytest.mark.parametrize(("change", "differences"), [
    (append_comment, ["src/zk0/client_app.py differs from the installed one"]),
    (_edit("src/zk0/server/extra.py", "import os\n"),
     ["it carries src/zk0/server/extra.py, which the installed zk0 does not have"]),
    (_remove("src/zk0/data/stats.py"), ["it lacks src/zk0/data/stats.py"]),
    (_entry_point, ["its ClientApp is 'zk0.tools.cli:app', zk0's is 'zk0.client_app:app'"]),
    (_own_package, ["it carries evil/zk0.py, which the installed zk0 does not have"]),
], ids=["modified-module", "extra-module", "missing-module", "other-clientapp", "other-package"])
def test_a_fab_that_differs_from_the_installed_zk0_names_what_differs(tmp_path: Path, change, differences):
    fab = build_fab_from_disk(copy_of_app(tmp_path / "app", change))
    digest = hashlib.sha256(fab).hexdigest()
    policy = AppPolicy(ROOT / "src" / "zk0")
    assert policy.differences(fab) == differences
    with pytest.raises(RefusedApp) as refused:
        policy.check(fab, "zk0/zk0", "0.1.0")
    assert str(refused.value) == (
        f"refused: FAB sha256 {digest} (zk0/zk0 0.1.0) is not this node's installed zk0: {differences[0]}; "
        f"if the server upgraded zk0, run 'zk0bot upgrade' on this node (or allow this FAB with --allow-app {digest})")
    assert AppPolicy(ROOT / "src" / "zk0", frozenset({digest})).check(fab, "zk0/zk0", "0.1.0") is True


def test_a_fab_that_is_not_a_zip_is_refused_and_so_is_a_huge_pyproject(tmp_path: Path):
    policy = AppPolicy(ROOT / "src" / "zk0")
    assert policy.differences(b"not a zip")[0].startswith("it is not a readable FAB (")
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as fab:
        fab.writestr("pyproject.toml", "#" * (2 << 20))
    assert policy.differences(big.getvalue())[0] == f"its pyproject.toml is {2 << 20} bytes"


def test_a_refused_fab_is_never_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """AppLoader checks before Flower's install_from_fab: a refused FAB leaves nothing in FLWR_HOME."""
    from flwr.supercore.fab import Fab
    from flwr.supercore.run import Run

    from zk0_executor.serve import AppLoader

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    fab = build_fab_from_disk(copy_of_app(tmp_path / "app", append_comment))
    run = Run.create_empty(1)
    run.fab_id, run.fab_version = "zk0/zk0", "0.1.0"
    with pytest.raises(RefusedApp):
        AppLoader(AppPolicy(ROOT / "src" / "zk0")).load(run, Fab(hashlib.sha256(fab).hexdigest(), fab, {}))
    assert not (tmp_path / "flwr-home").exists()


def test_allow_app_takes_sha256_digests():
    assert parse_allowed(["AB" * 32, "ab" * 32]) == frozenset({"ab" * 32})
    with pytest.raises(ValueError, match="--allow-app takes a FAB's SHA-256 \\(64 hex digits\\), got 'abc'"):
        parse_allowed(["abc"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime-api-address", "nope", "--insecure"], "--runtime-api-address must be HOST:PORT, got 'nope'"),
        (["--runtime-api-address", "127.0.0.1:9094"], "pass --insecure"),
        (["--runtime-api-address", "127.0.0.1:9094", "--insecure", "--superexec-auth-secret-file", "/no/such/file"],
         "Failed to read SuperExec auth secret"),
        (["--runtime-api-address", "127.0.0.1:9094", "--insecure", "--allow-app", "abc"],
         "--allow-app takes a FAB's SHA-256 (64 hex digits), got 'abc'"),
    ],
)
def test_bad_arguments_give_one_clear_line(args: list[str], message: str):
    from zk0_executor.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    assert message in str(exited.value)
