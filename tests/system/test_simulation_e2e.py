"""End to end: `./train-fl-simulation.sh --tiny` runs a real Flower simulation (SuperLink, Ray,
2 ClientApps training the tiny SmolVLA on LeRobot datasets) and leaves a complete run directory.

The simulation runs once per module as a subprocess, exactly as an operator starts it;
the tests below then read what it left behind. Every process it spawns inherits a
unique marker variable, so leftovers are found without touching anyone else's processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zk0.wire.codec import encode
from zk0.wire.protocol import pack
from zk0.config import RunConfig
from zk0.server.schedule import round_lr

pytestmark = pytest.mark.timeout(900)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "train-fl-simulation.sh"
CLIENTS, ROUNDS, LOCAL_STEPS = 2, 3, 10  # LOCAL_STEPS: the --tiny preset's
# Overrides of preset keys (the preset's lr schedule is constant): they must win, and give the
# lr check below a warm-up round and a decay to compare against.
SCHEDULE = "lr-schedule='cosine' warmup-rounds=1 lr-min=2e-4"
MARKER = "ZK0_TEST_RUN_MARKER"


@dataclass
class SimulationRun:
    returncode: int
    timed_out: bool
    output: str
    leftovers: list[str]


def marked_processes(marker: str) -> dict[int, str]:
    """Live processes (pid -> command line) whose environment carries `MARKER=marker`."""
    found = {}
    needle = f"{MARKER}={marker}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except OSError:
            continue
    return found


def run_simulation(args: list[str], sim_dir: Path, log_path: Path, timeout: float) -> SimulationRun:
    """Run the script from outside the repo; report its exit code, output and surviving processes.

    Processes still alive a short grace period after the script exits are recorded as
    leftovers and then ended, so a failing test does not burden the machine.
    """
    marker = uuid.uuid4().hex
    env = os.environ | {"ZK0_SIM_DIR": str(sim_dir), MARKER: marker}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(SCRIPT), *args], cwd=log_path.parent, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    deadline = time.monotonic() + 15
    while marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = marked_processes(marker)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return SimulationRun(process.returncode, timed_out, log_path.read_text(errors="replace"), sorted(leftovers.values()))


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    """The script's scratch space (demo datasets, Flower home), shared by this module's runs."""
    return tmp_path_factory.mktemp("zk0-sim")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, sim_dir) -> tuple[SimulationRun, Path]:
    """One complete `--tiny` simulation: 2 clients, 3 rounds, a cosine schedule; the run and its output dir.

    The output dir comes in the user's --run-config, which must win over the script's own
    `output-dir` (from --output-dir here) rather than collide with it."""
    work = tmp_path_factory.mktemp("tiny-run")
    output_dir = work / "outputs"
    args = ["--tiny", "--clients", str(CLIENTS), "--rounds", str(ROUNDS), "--output-dir", str(work / "overridden"),
            "--run-config", f"{SCHEDULE} output-dir='{output_dir}'"]
    run = run_simulation(args, sim_dir, work / "sim.log", timeout=600)
    return run, output_dir


def failure_report(run: SimulationRun) -> str:
    """The console, and the end of the full run log the script kept when the run failed."""
    kept = re.search(r"full output: (\S+?)\)", run.output)
    full = Path(kept.group(1)).read_text(errors="replace")[-6000:] if kept and Path(kept.group(1)).exists() else ""
    return f"{run.output[-4000:]}\n--- end of the full log ---\n{full}"


@pytest.fixture(scope="module")
def run_dir(tiny_run) -> Path:
    run, output_dir = tiny_run
    assert run.returncode == 0, failure_report(run)
    return next(output_dir.iterdir())


@pytest.fixture(scope="module")
def rows(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run_config(run_dir) -> RunConfig:
    """The run's configuration as the server saw it (saved raw, parsed again here)."""
    return RunConfig.from_run_config(json.loads((run_dir / "run_config.json").read_text())["run_config"])


@pytest.fixture(scope="module")
def final_policy(run_dir):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    return SmolVLAPolicy.from_pretrained(run_dir / "checkpoints" / f"{ROUNDS:06d}" / "pretrained_model")


def test_run_succeeds_with_one_run_directory(tiny_run):
    """The script exits 0 and writes exactly one timestamped run directory, where the user's
    --run-config output-dir says (not where the script's own --output-dir would put it)."""
    run, output_dir = tiny_run
    assert run.returncode == 0, failure_report(run)
    assert len(list(output_dir.iterdir())) == 1
    assert not (output_dir.parent / "overridden").exists()
    assert "finished:completed" in run.output


def test_console_shows_one_line_per_round(tiny_run):
    """By default the console holds the per-round summaries and a few lines around them: no
    Flower banners or result dumps, no per-client progress bars, no loading chatter."""
    run, _ = tiny_run
    lines = run.output.splitlines()
    summaries = [line for line in lines if re.search(r"\[round \d+/\d+\] eval action MSE", line)]
    assert len(summaries) == ROUNDS + 1, run.output
    assert len(lines) <= ROUNDS + 1 + 12, run.output
    for noise in ("Final results", "ConfigRecord (train)", "step/s", "Manually terminating", "default simulated SuperNodes"):
        assert noise not in run.output


def test_no_flower_or_ray_process_outlives_the_script(tiny_run):
    """SuperLink, SuperExec, Ray and the ClientApp actors are all gone once the script returns."""
    run, _ = tiny_run
    assert run.leftovers == []


def test_metrics_cover_every_round(rows, run_config):
    """metrics.jsonl has rounds 0..3: held-out eval each round, training figures from round 1."""
    assert run_config.num_rounds == ROUNDS
    assert [row["round"] for row in rows] == list(range(ROUNDS + 1))
    for row in rows:
        assert row["eval/loss"] > 0 and row["eval/action_mse"] > 0
        assert row["seconds"] >= 0
    assert rows[0]["train/loss"] is None and rows[0]["clients"] == {}
    for row in rows[1:]:
        assert row["train/loss"] > 0
        assert row["failures"] == []
        assert len(row["clients"]) == len(row["received_eval"]) == CLIENTS
        assert row["received_eval/action_mse"] > 0
    # One message per round: clients evaluate the final model once, after the last round.
    assert [len(row["client_eval"]) for row in rows] == [0] * ROUNDS + [CLIENTS]


def test_each_client_reports_its_training(rows):
    """Every round, each client reports its samples, loss, proximal term, steps and time."""
    for row in rows[1:]:
        for name, metrics in row["clients"].items():
            assert re.fullmatch(r"node \d+ claiming local:/.+/client_\d", name)
            assert metrics["train/steps"] == LOCAL_STEPS
            assert metrics["num-examples"] > 0
            assert metrics["train/loss"] > 0 and metrics["train/proximal-term"] >= 0
            assert metrics["train/seconds"] > 0


def test_the_tiny_preset_trains_short_rounds_with_kept_moments(run_config):
    """--tiny's schedule is the one measured best at equal samples (bench/README.md): 10 local
    steps a round, each client's AdamW moments kept across rounds."""
    assert run_config.local_steps == LOCAL_STEPS and run_config.keep_optimizer_state


def test_federated_training_improves_the_held_out_metric(rows):
    """Three rounds of FedProx lower the server's held-out action MSE below the untrained model's."""
    assert rows[-1]["eval/action_mse"] < rows[0]["eval/action_mse"]


def test_clients_train_at_the_servers_learning_rate(rows, run_config):
    """The lr each client reports is the one the server's schedule gives for that round
    (here: half the peak in the warm-up round, the peak, then the minimum)."""
    assert run_config.lr_schedule == "cosine" and run_config.warmup_rounds == 1
    assert [row["train/lr"] for row in rows[1:]] == pytest.approx([5e-4, 1e-3, 2e-4])
    for row in rows[1:]:
        expected = round_lr(
            row["round"], run_config.num_rounds, lr=run_config.lr, schedule=run_config.lr_schedule,
            warmup_rounds=run_config.warmup_rounds, lr_min=run_config.lr_min,
        )
        assert row["train/lr"] == pytest.approx(expected)
        assert [m["train/lr"] for m in row["clients"].values()] == pytest.approx([expected] * CLIENTS)


def test_compact_updates_travel(rows, final_policy, run_config):
    """Only trainable parameters travel, never the frozen VLM, and compactly: every download and
    upload is a q3z delta (zstd-coded 3-bit codes: under 1 B per parameter), round 1's a delta of
    zeros against the start model each node loaded itself; after the last round the final model
    goes down whole (bf16, ~2 B per trainable parameter) once."""
    assert run_config.update_codec == "q3z"
    trainable = sum(p.numel() for p in final_policy.parameters() if p.requires_grad)
    assert 4 * trainable < 4 * sum(p.numel() for p in final_policy.parameters()) / 2
    whole_bf16 = 2 * trainable
    for row in rows[1:]:
        assert set(row["bytes_up"]) == set(row["bytes_down"]) == set(row["clients"])
        for client, uploaded in row["bytes_up"].items():
            assert 0 < uploaded < trainable  # at most q3's 3/8 B + bf16 scales + headers per param
            down = row["bytes_down"][client]
            expected_whole = row["round"] == ROUNDS  # the final evaluation
            assert expected_whole * whole_bf16 < down < expected_whole * whole_bf16 * 1.2 + trainable
            if row["round"] == 1:  # zeros: the bf16 scales (1/128 of whole) and headers
                assert down < whole_bf16 / 4


def test_readme_and_running_sample_lines_are_what_the_code_prints(rows, final_policy):
    """The summary lines quoted in README.md and docs/RUNNING.md have the code's format, and the
    README's (the --tiny default's last round) moves what this run's last round moved, up to
    what q3z's coded parts can differ between runs."""
    from zk0.server.round_summary import summary_line

    pattern = re.compile(r"\[round (\d+)/(\d+)\] eval action MSE ([\d.]+) \| eval loss ([\d.]+) \| train loss ([\d.]+) \| "
                         r"nodes (\d+) sampled: (\d+) ok, (\d+) rejected, (\d+) failed, (\d+) late \| ([\d.]+)s \| "
                         r"([\d.]+) MB moved")
    readme = (REPO_ROOT / "README.md").read_text()
    running = (REPO_ROOT / "docs" / "RUNNING.md").read_text().replace("\n  ", " ")
    samples = [*pattern.finditer(readme), *pattern.finditer(running)]
    assert len(samples) >= 2
    for sample in samples:
        rnd, total, mse, loss, train, sampled, ok, rejected, failed, late, seconds, moved = sample.groups()
        row = {"round": int(rnd), "eval/action_mse": float(mse), "eval/loss": float(loss), "train/loss": float(train),
               "sampled": int(sampled), "clients": dict.fromkeys(range(int(ok))), "rejected": [None] * int(rejected),
               "failures": [None] * int(failed), "late": [None] * int(late), "retries": [],
               "seconds": float(seconds), "bytes_down": {0: float(moved) * 1e6}, "bytes_up": {}}
        assert summary_line(row, int(total)) == sample.group(0)
    readme_moved = float(pattern.search(readme).group(12)) * 1e6
    last = rows[-1]
    moved = sum(last["bytes_down"].values()) + sum(last["bytes_up"].values())
    # The last round's final-evaluation download is bf16 (fixed by the shapes); its delta down and
    # update up are q3z, whose size follows the values: a zstd frame of 4-bit fields, at most q4's
    # codes + 1/256 + 64 B per tensor (zstd's compress bound), and at least nothing.
    trainable = {name: np.zeros(tuple(p.shape), np.float32) for name, p in final_policy.named_parameters()
                 if p.requires_grad}
    q4 = pack(encode(trainable, "q4")).count_bytes()
    coded = q4 * 257 / 256 + 64 * len(trainable)
    assert abs(readme_moved - moved) <= 2 * CLIENTS * coded + 0.005e6, (readme_moved, moved)  # + README's rounding


def test_final_checkpoint_loads_with_lerobot(run_dir, final_policy):
    """checkpoints/000003/pretrained_model is a LeRobot policy directory fitted to the demo robot."""
    assert final_policy.config.output_features["action"].shape == (6,)
    assert (run_dir / "checkpoints" / f"{ROUNDS:06d}" / "pretrained_model" / "policy_preprocessor.json").is_file()


def test_last_and_best_point_at_real_checkpoints(run_dir, rows):
    """`last` is the final round; `best` is the checkpoint with the lowest held-out action MSE."""
    checkpoints = run_dir / "checkpoints"
    assert os.readlink(checkpoints / "last") == f"{ROUNDS:06d}"
    best = checkpoints / os.readlink(checkpoints / "best")
    assert (best / "pretrained_model" / "model.safetensors").is_file()
    best_mse = json.loads((best / "zk0_round.json").read_text())["eval/action_mse"]
    assert best_mse == min(row["eval/action_mse"] for row in rows[1:])
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]


def test_metrics_plot_is_a_png(run_dir):
    """plots/metrics.png is a complete, decodable PNG."""
    path = run_dir / "plots" / "metrics.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100


def test_failing_run_exits_non_zero_and_cleans_up(sim_dir, tmp_path):
    """When the ServerApp fails at start (its eval dataset does not exist), the script reports
    the cause, exits non-zero in bounded time and leaves no process behind. With --verbose the
    console also shows what Flower prints (hidden by default)."""
    run = run_simulation(
        ["--tiny", "--clients", str(CLIENTS), "--output-dir", str(tmp_path / "outputs"), "--verbose",
         "--run-config", "eval-dataset='local:/nonexistent'"],
        sim_dir, tmp_path / "sim.log", timeout=420,
    )
    assert not run.timed_out, run.output[-4000:]
    assert run.returncode == 1
    errors = [line for line in run.output.splitlines() if line.startswith("zk0-sim: error:")]
    assert errors and "local:/nonexistent: directory does not exist" in errors[-1]
    assert "Starting Flower Simulation" in run.output and "default simulated SuperNodes" in run.output
    assert run.leftovers == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--clients", "0"], "--clients must be a positive integer, got '0'"),
        (["--actors", "0"], "--actors must be a positive integer, got '0'"),
        (["--actors", "1", "--ray-address", "127.0.0.1:6379"], "--actors is for the private local Ray"),
        (["--run-config", "foo"], "run-config token 'foo' in \"foo\" is not key=value"),
        (["--run-config", "lr=1e-3 lr=2e-3"], "run-config key 'lr' is given twice"),
        (["--run-config", "num-rounds=2", "--run-config", "lokal-steps=5"], "unknown run-config key 'lokal-steps'"),
        (["--run-config", "eval-batches=0"], "run-config key 'eval-batches' must be >= 1, got 0"),
    ],
)
def test_bad_input_fails_fast_naming_it(args, error, sim_dir, tmp_path):
    """Bad options and run configs stop the script before any simulation starts: exit 2 and
    one line naming the option or key (Flower would skip, misreport or not name it)."""
    run = run_simulation(["--tiny", *args], sim_dir, tmp_path / "sim.log", timeout=120)
    assert run.returncode == 2, run.output[-4000:]
    errors = [line for line in run.output.splitlines() if line.startswith("zk0-sim: error:")]
    assert len(errors) == 1 and error in errors[0], run.output
    assert "Starting local SuperLink" not in run.output
    assert run.leftovers == []



def test_broken_datasets_end_in_one_line_each(sim_dir, tmp_path, demo_roots):
    """Simulated nodes on a parquet-less and a missing dataset: the console shows no traceback
    and ends with one line per broken node in `zk0 check-dataset`'s words; the full output is
    kept in a log file that the script names."""
    import shutil

    parquetless = shutil.copytree(demo_roots[0], tmp_path / "parquetless")
    shutil.rmtree(parquetless / "data")
    missing = tmp_path / "missing"
    run = run_simulation(
        ["--tiny", "--clients", "2", "--rounds", "1", "--output-dir", str(tmp_path / "outputs"),
         "--run-config", f"datasets='local:{parquetless},local:{missing}'"],
        sim_dir, tmp_path / "sim.log", timeout=600,
    )
    assert not run.timed_out and run.returncode == 1, run.output[-4000:]
    assert "Traceback" not in run.output and "^^^" not in run.output, run.output[-4000:]
    lines = run.output.splitlines()
    assert sorted(lines[-2:]) == sorted([
        f"zk0-sim: error: dataset local:{parquetless}: file data/chunk-000/file-000.parquet is missing; "
        "the dataset is incomplete",
        f"zk0-sim: error: dataset local:{missing}: directory does not exist; pass the root of a LeRobot dataset",
    ]), run.output[-4000:]
    kept = re.search(r"full output: (\S+)\)", run.output)
    assert kept and "Traceback" in Path(kept.group(1)).read_text()
    assert run.leftovers == []


def test_run_config_is_checked_first_and_tmux_is_not_needed(sim_dir, tmp_path):
    """Without tmux and nginx on PATH (zk0bot's tools), a bad key stops the script before any
    demo data or model is prepared: exit 2, one line naming the key."""
    from unprivileged import user_path_without

    path = user_path_without(tmp_path / "bin", "tmux", "nginx")
    fresh = tmp_path / "sim"
    marker = uuid.uuid4().hex
    result = subprocess.run(
        [str(SCRIPT), "--tiny", "--run-config", "lokal-steps=5"], cwd=tmp_path, capture_output=True, text=True,
        env=os.environ | {"PATH": path, "ZK0_SIM_DIR": str(fresh), MARKER: marker}, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("zk0-sim: error: unknown run-config key 'lokal-steps'")
    assert not fresh.exists() or not list(fresh.glob("demo-data-*"))
