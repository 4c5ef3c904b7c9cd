"""A real-shape round through zk0bot, before and after issue 7, side by side in one sitting.

Each version runs its own `zk0bot.sh` on 127.0.0.1 with TLS and node authentication: a
server, 2 clients (demo datasets), one run of 2 rounds with the `smolvla-shape` preset
(SmolVLA's real architecture, random weights; passed as the preset's absolute directory so
that the older code takes it too), 1 local step at batch 1 on the CPU. "before" is a git
worktree of the commit given by --before (default 79f2963, the last commit before issue 7),
"after" this checkout; both use this checkout's .venv, with PYTHONPATH pointing at their own
sources. Each version runs once per mode of --modes (issue 16): `expert` adds nothing to the
run config (the older code knows no `trainable`), `lora` adds `trainable='lora'`; --run-config
adds or overrides keys for every run.

Measured per version:
- bytes on the wire: the clients reach the server through a byte-counting TCP relay in this
  script, so every byte of the Fleet traffic (TLS included) is counted the same way for both;
  zk0's own bytes_down/bytes_up (ArrayRecord payloads) beside it;
- per round: wall time, client training, client evaluation, aggregation, server evaluation and
  the rest (metrics.jsonl; what a version does not measure is "-");
- per message start-up: the clients' `startup-seconds` (and, after, the executor's log);
- peak resident memory of the server's processes and of each client's (sampled every 0.5 s).

    .venv/bin/python bench/real_round.py [--before 79f2963] [--rounds 2] [--versions before,after]
        [--modes expert,lora] [--run-config "key=value ..."]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil

from zk0.ops.ports import free_ports

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
# What each mode adds to the run config (expert: the default, so older code takes it too).
MODES = {"expert": {}, "lora": {"trainable": "'lora'"}}


class Relay:
    """A TCP relay on 127.0.0.1 that counts the bytes each way (TLS passes through untouched)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0  # client -> server
        self.down = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    async def _pipe(self, reader, writer, upstream: bool) -> None:
        try:
            while data := await reader.read(1 << 16):
                if upstream:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader, writer) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, target_writer, True), self._pipe(target_reader, writer, False))


class MemorySampler:
    """Peak summed RSS of each group of tmux sessions' process trees."""

    def __init__(self, home: Path, groups: dict[str, list[str]]) -> None:
        self.home, self.groups = home, groups
        self.peak = {name: 0 for name in groups}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _tree_rss(self, session: str) -> int:
        result = subprocess.run(["tmux", "-S", str(self.home / "tmux.sock"), "list-panes", "-t", f"={session}",
                                 "-F", "#{pane_pid}"], capture_output=True, text=True)
        total = 0
        for pid in result.stdout.split():
            try:
                root = psutil.Process(int(pid))
                for proc in [root, *root.children(recursive=True)]:
                    total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, sessions in self.groups.items():
                self.peak[name] = max(self.peak[name], sum(self._tree_rss(s) for s in sessions))
            time.sleep(0.5)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        return self.peak


def zk0bot(source: Path, env: dict, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(source / "zk0bot.sh"), *args], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=env["ZK0_HOME"])
    if result.returncode != 0 and args[:2] != ("client", "start"):
        raise RuntimeError(f"zk0bot {' '.join(args)} failed: {result.stderr[-2000:]}{result.stdout[-1000:]}")
    return result


def run_config(model_dir: Path, clients: list[str], eval_root: Path, overrides: dict[str, str]) -> str:
    pairs = {"model": f"'{model_dir}'", "datasets": f"'{clients[0]}'", "eval-dataset": f"'local:{eval_root}'",
             "local-steps": "1", "batch-size": "1", "eval-batches": "1", "num-workers": "0",
             "heldout-episodes": "1", "checkpoint-every": "1000", "min-train-clients": "2",
             "min-evaluate-clients": "2", "min-available-clients": "2", "lr-schedule": "'constant'",
             "round-timeout": "3000.0", "node-wait-timeout": "300.0", "device": "'cpu'", **overrides}
    return " ".join(f"{key}={value}" for key, value in pairs.items())


def run_version(name: str, source: Path, work: Path, model_dir: Path, datasets: list[Path], rounds: int,
                overrides: dict[str, str]) -> dict:
    home = work / f"home-{name}"
    home.mkdir()
    server_port, = free_ports()
    env = {**os.environ, "ZK0_HOME": str(home), "ZK0_VENV": str(VENV), "ZK0_SERVER_HOST": "127.0.0.1",
           "ZK0_SERVER_PORT": str(server_port), "ZK0_START_TIMEOUT": "300", "PYTHONPATH": str(source / "src"),
           "HF_HUB_OFFLINE": "1"}
    zk0bot(source, env, "server", "start")
    relay = Relay(server_port)
    env["ZK0_SERVER"] = f"127.0.0.1:{relay.port}"
    clients = [f"local:{root}" for root in datasets[:-1]]
    try:
        for uri in clients:
            zk0bot(source, env, "client", "start", uri)  # refused: not registered yet
            key = next(k for k in (home / "clients").glob("*/node.key.pub") if uri in (k.parent / "client.env").read_text())
            zk0bot(source, env, "server", "register", str(key))
            started = zk0bot(source, env, "client", "start", uri)
            if started.returncode != 0:
                raise RuntimeError(f"client start failed: {started.stderr[-2000:]}")
        sessions = subprocess.run(["tmux", "-S", str(home / "tmux.sock"), "list-sessions", "-F", "#{session_name}"],
                                  capture_output=True, text=True).stdout.split()
        client_ids = sorted({s.split("-", 2)[2] for s in sessions if s.startswith(("zk0-supernode-", "zk0-executor-"))})
        groups = {"server": [s for s in sessions if s in ("zk0-superlink", "zk0-superexec", "zk0-proxy")]}
        for i, cid in enumerate(client_ids):
            groups[f"client {i}"] = [s for s in sessions if s.endswith(cid)]
        sampler = MemorySampler(home, groups)
        config = run_config(model_dir, clients, datasets[-1], overrides)
        relay.up = relay.down = 0
        started = time.perf_counter()
        zk0bot(source, env, "run", "--rounds", str(rounds), "--run-config", config)
        wall = time.perf_counter() - started
        peaks = sampler.stop()
        wire = (relay.up, relay.down)
        run_dir = next((home / "server" / "runs").iterdir())
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        executor_lines = [line for log in (home / "clients").glob("*/executor.log") for line in log.read_text().splitlines()
                          if line.startswith("zk0-executor pid=") and " type=" in line]
    finally:
        zk0bot(source, env, "stop")
    return {"name": name, "config": config, "wall": wall, "wire_up": wire[0], "wire_down": wire[1], "rows": rows,
            "peaks": peaks, "executor": executor_lines}


def median_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(result: dict) -> None:
    fmt = lambda v, spec=".1f": "-" if v is None else format(v, spec)  # noqa: E731
    print(f"\n== {result['name']} (run config: {result['config']})")
    print(f"whole run {result['wall']:.0f} s; on the wire (relay): "
          f"{result['wire_up']:,} B up, {result['wire_down']:,} B down, {(result['wire_up'] + result['wire_down']) / 1e6:.1f} MB")
    print(f"{'round':>5} {'wall s':>7} {'train s':>8} {'cl.eval s':>9} {'aggr s':>7} {'srv eval s':>10} {'other s':>8} "
          f"{'startup s (msgs)':>24} {'zk0 B down / up per client (median)':>36}")
    for row in result["rows"][1:]:
        train = median_of(m.get("train/seconds") for m in row["clients"].values())
        client_eval = median_of(m.get("eval/seconds") for m in row.get("received_eval", {}).values())
        aggregate = row.get("aggregate/seconds")
        server_eval = row.get("eval/seconds")
        other = row["seconds"] - sum(v for v in (train, client_eval, aggregate, server_eval) if v is not None)
        startups = [m.get("startup-seconds") for m in row["clients"].values()]
        startups += [m.get("startup-seconds") for m in row.get("client_eval", {}).values()]
        startup_text = ", ".join(fmt(v, ".2f") for v in startups if v is not None)
        down = median_of(row["bytes_down"].values())
        up = median_of(row["bytes_up"].values())
        print(f"{row['round']:>5} {row['seconds']:>7.1f} {fmt(train):>8} {fmt(client_eval):>9} {fmt(aggregate):>7} "
              f"{fmt(server_eval):>10} {other:>8.1f} {startup_text:>24} {down:>18,.0f} / {up:,.0f}")
    print(f"(round {result['rows'][-1]['round']}'s download includes the final evaluation's message)")
    print("peak RSS: " + ", ".join(f"{name} {rss / 1e9:.1f} GB" for name, rss in result["peaks"].items()))
    for line in result["executor"]:
        print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="79f2963", help="commit of the 'before' version")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--versions", default="before,after")
    parser.add_argument("--modes", default="expert", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--run-config", default="", help="key=value pairs added to (or replacing) every run's")
    args = parser.parse_args()
    from zk0.ops.run_config_args import PAIR, RunConfigArgsError, check_pairs

    modes = args.modes.split(",")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode '{unknown[0]}'; use {', '.join(MODES)}")
    if "before" in args.versions.split(",") and modes != ["expert"]:
        parser.error(f"the 'before' version ({args.before}) has no trainable modes; pass --versions after")
    try:
        check_pairs(args.run_config)
    except RunConfigArgsError as err:
        parser.error(str(err))
    extra = dict(PAIR.findall(args.run_config))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from zk0.tools.demo_data import DemoSpec, write_demo_federation
    from zk0.policy.presets import SMOLVLA_SHAPE, ensure_preset_policy
    from zk0.util.paths import cache_dir

    model_dir = ensure_preset_policy(SMOLVLA_SHAPE, cache_dir())
    with tempfile.TemporaryDirectory(prefix="zk0-real-round-") as tmp:
        work = Path(tmp)
        datasets = write_demo_federation(work / "data", 2, DemoSpec(episodes=4, frames_per_episode=30))
        sources = {"after": ROOT}
        if "before" in args.versions:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(work / "before"), args.before],
                           check=True, capture_output=True)
            sources["before"] = work / "before"
        try:
            results = [run_version(name if mode == "expert" else f"{name}-{mode}", sources[name], work, model_dir,
                                   datasets, args.rounds, {**MODES[mode], **extra})
                       for name in args.versions.split(",") for mode in modes]
        finally:
            if "before" in sources:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(sources["before"])],
                               capture_output=True)
    print(f"Real-shape round: smolvla-shape ({model_dir.name}), 2 clients, {args.rounds} rounds, "
          f"1 local step at batch 1, CPU, TLS + node auth, {os.cpu_count()} cores")
    for result in results:
        report(result)


if __name__ == "__main__":
    main()
