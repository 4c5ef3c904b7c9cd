"""What zk0's nodes hold in memory (issue 28), for bench/scale.py's `memory` part.

Every process of a run carries a marker in its environment; a sampler thread reads each one's
/proc/PID/smaps_rollup once a second: RSS (resident pages, shared libraries included), PSS
(shared pages divided among all processes of the machine mapping them, other users' included)
and anonymous memory (what the process allocated itself: the heap, torch's and Python's data;
what one more such process costs, whatever else runs: USS would also count the library pages
that no other process happens to map at that moment). The tree's memory is bounded by its
processes' anonymous memory plus the largest file-backed set among them (the libraries they
share, counted once).

- `simulation(tree, clients, rounds)`: `TREE/train-fl-simulation.sh --tiny --clients N`; the
  peak of a simulation actor (`ray::ClientAppActor`) and the peak PSS sum of the whole tree
  (the SuperLink, the simulation process with the ServerApp, Ray's daemons and workers).
- `warm_node(tree)`: a deployment on 127.0.0.1 as tests/system/test_executor.py starts one (a SuperLink,
  a SuperNode in `--isolation process`, `python -m zk0_executor`), a 2-round tiny run of the
  checkout's app; the SuperNode's and the executor's memory once the run finished (warm: the
  model, its processors and the dataset loaded), and their peaks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from zk0.ops.ports import free_ports

MARKER = "ZK0_BENCH_MEMORY_MARKER"
TINY_RUN = (
    "model='tiny' local-steps=5 batch-size=8 eval-batches=2 num-workers=0 min-train-clients=1 "
    "min-evaluate-clients=1 min-available-clients=1 node-wait-timeout=60.0"
)


@dataclass
class Usage:
    rss: int = 0  # kB
    pss: int = 0
    anon: int = 0

    def peak(self, other: Usage) -> Usage:
        return Usage(max(self.rss, other.rss), max(self.pss, other.pss), max(self.anon, other.anon))


def usage(pid: int) -> Usage | None:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0])
    except (OSError, ValueError):
        return None
    return Usage(fields.get("Rss", 0), fields.get("Pss", 0), fields.get("Anonymous", 0))


def marked(marker: str) -> dict[int, bytes]:
    """Live pids whose environment carries the marker, with their command lines."""
    tag = f"{MARKER}={marker}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if tag in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes()
        except OSError:
            continue
    return found


def role(cmdline: bytes) -> str:
    for needle, name in ((b"ClientAppActor", "actor"), (b"flower-supernode", "supernode"),
                         (b"zk0_executor", "executor")):
        if needle in cmdline:
            return name
    return "other"


@dataclass(eq=False)  # a Thread must stay hashable
class Sampler(threading.Thread):
    """Peaks per role (the largest single process of that role) and of the tree's PSS sum."""

    marker: str
    peaks: dict[str, Usage] = field(default_factory=dict)
    last: dict[str, Usage] = field(default_factory=dict)
    tree_pss: int = 0
    tree_bound: int = 0  # the sum of anonymous memory plus the largest file-backed set, kB
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def sample(self) -> None:
        total, anon, files, now = 0, 0, 0, {}
        for pid, cmdline in marked(self.marker).items():
            seen = usage(pid)
            if seen is None:
                continue
            total, anon, files = total + seen.pss, anon + seen.anon, max(files, seen.rss - seen.anon)
            name = role(cmdline)
            now[name] = now.get(name, Usage()).peak(seen)
        self.tree_pss = max(self.tree_pss, total)
        self.tree_bound = max(self.tree_bound, anon + files)
        for name, seen in now.items():
            self.peaks[name] = self.peaks.get(name, Usage()).peak(seen)
        self.last = now

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()


def environment(tree: Path, marker: str, venv: Path) -> dict[str, str]:
    return os.environ | {
        MARKER: marker, "ZK0_VENV": str(venv), "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1",
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


@dataclass
class SimulationMemory:
    actor: Usage
    tree_pss_kb: int
    tree_bound_kb: int
    seconds: float


def simulation(tree: Path, venv: Path, clients: int, rounds: int, sim_dir: Path, work: Path) -> SimulationMemory:
    marker = uuid.uuid4().hex
    env = environment(tree, marker, venv) | {"ZK0_SIM_DIR": str(sim_dir)}
    log = work / f"memory-sim-{clients}.log"
    args = [str(tree / "train-fl-simulation.sh"), "--tiny", "--clients", str(clients), "--rounds", str(rounds),
            "--output-dir", str(work / f"outputs-{clients}"), "--run-config", f"local-steps=5 checkpoint-every={rounds}"]
    sampler = Sampler(marker)
    sampler.start()
    started = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(args, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    sampler.stop()
    if code != 0:
        sys.exit(f"node_memory.py: the {clients}-client simulation of {tree} failed (exit {code}); see {log}")
    return SimulationMemory(sampler.peaks.get("actor", Usage()), sampler.tree_pss, sampler.tree_bound,
                            time.perf_counter() - started)


@dataclass
class NodeMemory:
    supernode: Usage  # once the run finished
    executor: Usage
    peak_executor: Usage


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"node_memory.py: {what} within {timeout:.0f}s")
        time.sleep(0.5)


def warm_node(tree: Path, venv: Path, data: list[str], work: Path) -> NodeMemory:
    """`data`: a client dataset URI and the eval dataset URI."""
    marker = uuid.uuid4().hex
    home = work / f"node-{marker[:8]}"
    (home / "flwr-home").mkdir(parents=True)
    superlink_port, node_port = free_ports(2)
    env = environment(tree, marker, venv) | {"FLWR_HOME": str(home / "flwr-home"), "OMP_NUM_THREADS": "1"}
    (home / "flwr-home" / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{superlink_port}"\ninsecure = true\n')
    secret = home / "superexec.secret"
    secret.write_bytes(os.urandom(32))
    bin_dir = venv / "bin"
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> Path:
        log = home / f"{name}.log"
        with log.open("ab") as out:
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home,
                                          start_new_session=True))
        return log

    def flwr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / "flwr"), *args], env=env, capture_output=True, text=True, timeout=120, cwd=home)

    sampler = Sampler(marker)
    try:
        start("superlink", [str(bin_dir / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                            "--host", "127.0.0.1", "--port", str(superlink_port)])
        _wait(lambda: flwr("ls", "bench", "--format", "json").returncode == 0, 60, "the SuperLink did not answer")
        node_log = start("supernode", [
            str(bin_dir / "flower-supernode"), "--insecure", "--isolation", "process", "--superlink",
            f"127.0.0.1:{superlink_port}", "--port", str(node_port), "--superexec-auth-secret-file", str(secret),
            "--node-config", f"dataset-uri='{data[0]}'"])
        _wait(lambda: "SuperNode ID" in node_log.read_text(errors="replace"), 60, "the SuperNode did not connect")
        executor_log = start("executor", [
            str(bin_dir / "python"), "-m", "zk0_executor", "--runtime-api-address", f"127.0.0.1:{node_port}",
            "--insecure", "--superexec-auth-secret-file", str(secret)])
        _wait(lambda: "serving ClientApp tasks" in executor_log.read_text(errors="replace"), 60,
              "the executor did not start")
        sampler.start()
        config = (f"{TINY_RUN} num-rounds=2 datasets='{data[0]}' eval-dataset='{data[1]}' "
                  f"output-dir='{home / 'runs'}'")
        submitted = flwr("run", str(tree), "bench", "--format", "json", "--run-config", config)
        text = submitted.stdout
        if "run-id" not in text:
            sys.exit(f"node_memory.py: flwr run failed: {submitted.stdout}{submitted.stderr}")
        run_id = int(json.loads(text[text.index("{"):])["run-id"])
        status = ""
        deadline = time.monotonic() + 600
        while not status.startswith("finished:"):
            if time.monotonic() > deadline:
                sys.exit(f"node_memory.py: run {run_id} still '{status}' after 600 s; see {home}")
            time.sleep(2)
            listed = flwr("ls", "bench", "--run-id", str(run_id), "--format", "json")
            if listed.returncode == 0:
                status = json.loads(listed.stdout)["runs"][0]["status"]
        if status != "finished:completed":
            sys.exit(f"node_memory.py: run {run_id} ended '{status}'; see {home}")
        time.sleep(3)  # the executor's last reply sent: what it holds while it waits for the next message
        sampler.sample()
        sampler.stop()
        return NodeMemory(sampler.last.get("supernode", Usage()), sampler.last.get("executor", Usage()),
                          sampler.peaks.get("executor", Usage()))
    finally:
        sampler.done.set()
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def demo_data(venv: Path, tree: Path, where: Path) -> list[str]:
    """One tiny demo client and the eval set (zk0 demo-data, kept under `where`); the tiny model built."""
    env = environment(tree, "none", venv)
    subprocess.run([str(venv / "bin" / "zk0"), "prepare-tiny"], env=env, check=True, capture_output=True)
    lines = subprocess.run([str(venv / "bin" / "zk0"), "demo-data", str(where), "--clients", "1"],
                           env=env, check=True, capture_output=True, text=True).stdout.splitlines()
    if len(lines) < 2:
        sys.exit(f"node_memory.py: zk0 demo-data printed {lines}")
    return lines[:2]
