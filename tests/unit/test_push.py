"""`zk0 push`: the folder it uploads is a loadable LeRobot checkpoint with a parseable model card,
local paths never leave the machine, and every failure is one line that leaves the run untouched.

The run directory under test is written by zk0's own RunOutputs (run_config.json, metrics.jsonl,
checkpoints with `best`/`last` links) from the real tiny SmolVLA. Nothing here reaches the
Hugging Face Hub: uploads are tried only offline, without a token, or against local endpoints
(a closed port, and a local HTTP server that refuses like the Hub does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_pre_post_processors
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
from peft import PeftModel
from safetensors.torch import load_file

from test_lora import predicted_chunk

from zk0.ops.ports import free_ports
from zk0.tools.cli import main
from zk0.config import RunConfig
from zk0.policy.evaluate import EvalResult
from zk0.policy.lora import LoraSpec
from zk0.policy.model import load_policy
from zk0.policy.presets import pretrained_path
from zk0.server.round_summary import round_row
from zk0.run.outputs import RunOutputs
from zk0.server.strategy import RoundRecord

ROOT = Path(__file__).resolve().parents[2]
HUB_CLIENT = "lerobot/svla_so100_pickplace"
REPO = "someone/zk0-smolvla"
MSE = {0: 9.0, 1: 5.0, 2: 7.0}  # round 1 is best, round 2 is last


def pyproject_config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


@pytest.fixture
def run(tmp_path, tiny_policy, processors, demo_roots) -> dict:
    """A two-round run written by RunOutputs: one hub and one local client, a local eval dataset."""
    local_client, local_eval = f"local:{demo_roots[1]}", f"local:{demo_roots[-1]}"
    run_config = pyproject_config() | {
        "model": "tiny", "datasets": f"hf:{HUB_CLIENT},{local_client}", "eval-dataset": local_eval,
        "num-rounds": 2, "checkpoint-every": 1, "output-dir": str(tmp_path / "outputs"),
    }
    outputs = RunOutputs(RunConfig.from_run_config(run_config), run_config, run_id=4242)
    preprocessor, postprocessor = processors
    names = {11: f"11:hf:{HUB_CLIENT}", 12: f"12:{local_client}"}
    weights = {}
    for server_round in (0, 1, 2):
        record = RoundRecord(lr=1e-3, names=names)
        if server_round:
            record.clients = {node: {"num-examples": 8, "train/loss": 0.5} for node in names}
            record.failures = [f"13: cannot open {demo_roots[0]}"]
        result = EvalResult(loss=0.6 - 0.1 * server_round, action_mse=MSE[server_round], samples=16)
        outputs.record(round_row(server_round, record, result, eval_seconds=0.1, started=0.0))
        if server_round:
            with torch.no_grad():  # each round's checkpoint has its own weights
                next(p for p in tiny_policy.parameters() if p.requires_grad).add_(1.0)
            weights[server_round] = {k: v.clone() for k, v in tiny_policy.state_dict().items()}
            outputs.checkpoint(server_round, tiny_policy, preprocessor, postprocessor,
                               {"eval/action_mse": MSE[server_round]})
    local_paths = [str(outputs.run_dir), str(tmp_path / "outputs"), *(str(root) for root in demo_roots)]
    return {"dir": outputs.run_dir, "weights": weights, "local_paths": local_paths}


@pytest.fixture
def lora_run(tmp_path, eval_data, processors, demo_roots) -> dict:
    """A one-round LoRA run (tiny SmolVLA, FFA, rank 4) written by RunOutputs, its B matrices
    moved off their zero init so that the adapter changes the policy."""
    run_config = pyproject_config() | {
        "model": "tiny", "datasets": f"local:{demo_roots[0]}", "eval-dataset": f"local:{demo_roots[-1]}",
        "num-rounds": 1, "checkpoint-every": 1, "output-dir": str(tmp_path / "outputs"),
        "trainable": "lora", "lora-rank": 4, "lora-alpha": 8.0, "lora-aggregation": "ffa",
    }
    outputs = RunOutputs(RunConfig.from_run_config(run_config), run_config, run_id=4343)
    policy = load_policy("tiny", eval_data.meta, "cpu", lora=LoraSpec(4, 8.0, "ffa", 42))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in (p for p in policy.parameters() if p.requires_grad):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    for server_round in (0, 1):
        outputs.record(round_row(server_round, RoundRecord(lr=1e-3), EvalResult(0.5, MSE[server_round], 16),
                                 eval_seconds=0.1, started=0.0))
    outputs.checkpoint(1, policy, *processors, {"eval/action_mse": MSE[1]})
    local_paths = [str(outputs.run_dir), str(tmp_path / "outputs"), str(pretrained_path("tiny")),
                   *(str(root) for root in demo_roots)]
    return {"dir": outputs.run_dir, "policy": policy, "local_paths": local_paths}


def tree_hash(root: Path) -> str:
    """Names, link targets and contents of everything under `root`."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zk0: error: "), text
    return lines[0]


def uploaded_round(folder: Path) -> int:
    return json.loads((folder / "zk0_round.json").read_text())["round"]


def test_dry_run_writes_a_loadable_checkpoint_with_a_lerobot_card(run, tmp_path, capsys):
    """Default: the `best` round; its files unchanged, a card with LeRobot's metadata, LeRobot loads it."""
    out = tmp_path / "upload"
    assert main(["push", str(run["dir"]), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    assert "round 1 (best)" in capsys.readouterr().out
    model_dir = run["dir"] / "checkpoints" / "000001" / "pretrained_model"
    model_files = {p.name for p in model_dir.iterdir()}
    assert {p.name for p in out.iterdir()} == model_files | {"README.md", "run_config.json", "metrics.jsonl", "zk0_round.json"}
    assert all((out / name).read_bytes() == (model_dir / name).read_bytes() for name in model_files)

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "lerobot"
    assert card.data.license == "apache-2.0"
    assert card.data.pipeline_tag == "robotics"
    assert {"lerobot", "smolvla", "robotics", "federated-learning", "flower"} <= set(card.data.tags)
    assert card.data.base_model is None  # the tiny preset is no hub model
    assert card.data.datasets == [HUB_CLIENT]  # the local client and eval datasets are not named
    assert "local dataset (not published)" in card.text
    assert "| 1 (this checkpoint) | 5.0000 | 0.5000 |" in card.text
    assert "| 2 | 7.0000 | 0.4000 |" in card.text
    assert f'SmolVLAPolicy.from_pretrained("{REPO}")' in card.text
    assert f'make_pre_post_processors(policy.config, pretrained_path="{REPO}")' in card.text

    policy = SmolVLAPolicy.from_pretrained(out)
    expected, actual = run["weights"][1], policy.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)
    make_pre_post_processors(policy.config, pretrained_path=str(out))


def test_uploaded_run_records_hold_no_local_paths(run, tmp_path):
    """run_config.json, metrics.jsonl, zk0_round.json and the card name no path of this machine."""
    out = tmp_path / "upload"
    assert main(["push", str(run["dir"]), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    texts = {name: (out / name).read_text() for name in ("README.md", "run_config.json", "metrics.jsonl", "zk0_round.json")}
    for name, text in texts.items():
        leaked = [path for path in run["local_paths"] if path in text]
        assert leaked == [], f"{name} names {leaked}"
    uploaded = json.loads(texts["run_config.json"])
    assert uploaded["run_id"] == 4242
    assert uploaded["run_config"]["datasets"] == f"hf:{HUB_CLIENT},local:<local path>"
    assert uploaded["run_config"]["output-dir"] == "<local path>"
    rows = [json.loads(line) for line in texts["metrics.jsonl"].splitlines()]
    assert [row["round"] for row in rows] == [0, 1, 2]
    assert set(rows[1]["clients"]) == {f"11:hf:{HUB_CLIENT}", "12:local:<local path>"}


@pytest.mark.parametrize(
    ("args", "source", "expected_round"),
    [
        (["--checkpoint", "last"], ".", 2),
        (["--checkpoint", "best"], ".", 1),
        (["--checkpoint", "2"], ".", 2),
        ([], "checkpoints/000002", 2),
        ([], "checkpoints/000002/pretrained_model", 2),
        ([], "checkpoints/last", 2),
    ],
)
def test_checkpoint_choice(run, tmp_path, args, source, expected_round):
    """`--checkpoint` picks among a run's checkpoints; a checkpoint path is taken as given."""
    out = tmp_path / "upload"
    assert main(["push", str(run["dir"] / source), "--repo-id", REPO, "--dry-run", str(out), *args]) == 0
    assert uploaded_round(out) == expected_round
    chosen = run["dir"] / "checkpoints" / f"{expected_round:06d}" / "pretrained_model" / "model.safetensors"
    assert (out / "model.safetensors").read_bytes() == chosen.read_bytes()
    assert f"| {expected_round} (this checkpoint) |" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("settings", "said", "unsaid"),
    [
        ({}, ["aggregated the clients' updates with FedProx (weighted average)", "encoded as `q3z`",
              "normalize `observation.state` and `action` with the federation's pooled statistics"],
         ["server's held-out dataset", "Krum", "LoRA", "lora-rank"]),
        ({"trainable": "lora", "lora-rank": 16, "lora-alpha": 32.0, "lora-aggregation": "ffa"},
         ["only LoRA adapters on SmolVLA's action expert and projections travel",
          "trained LoRA adapters (`trainable = lora`: LeRobot's `wrap_with_peft` on SmolVLA's default targets, "
          "rank 16, alpha 32.0), aggregated as FFA-LoRA (A frozen", "| `lora-rank` | `16` |", "adapters merged in"],
         ["trainable weights (action expert and projections)"]),
        ({"aggregation": "krum", "krum-num-malicious": 2, "normalization": "local", "update-codec": "bf16"},
         ["aggregates them with Krum", "with Krum (the one update closest to its neighbours, `krum-num-malicious` = 2)",
          "encoded as `bf16`", "normalize with the statistics of the server's held-out dataset (`normalization = local`"],
         ["with FedProx", "pooled statistics"]),
        ({"aggregation": "fedavgm", "server-lr": 0.5, "server-momentum": 0.8},
         ["FedAvgM (weighted average applied with server momentum, `server-lr` = 0.5, `server-momentum` = 0.8)"],
         ["with FedProx"]),
        ({"aggregation": "fedadam", "server-lr": 0.001, "server-tau": 0.01},
         ["FedAdam (weighted average applied with a server Adam step, `server-lr` = 0.001, `server-beta-1` = 0.9, "
          "`server-beta-2` = 0.99, `server-tau` = 0.01)"],
         ["with FedProx"]),
    ],
)
def test_card_states_the_runs_aggregation_codec_and_normalization(run, tmp_path, settings, said, unsaid):
    """The card describes what the run did (from its run_config.json), not a fixed recipe."""
    copy = tmp_path / "run"
    shutil.copytree(run["dir"], copy, symlinks=True)
    saved = json.loads((copy / "run_config.json").read_text())
    saved["run_config"] |= settings
    (copy / "run_config.json").write_text(json.dumps(saved))
    out = tmp_path / "upload"
    assert main(["push", str(copy), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    text = " ".join(ModelCard.load(out / "README.md").text.split())
    for phrase in said:
        assert phrase in text, phrase
    for phrase in unsaid:
        assert phrase not in text, phrase


def test_lora_push_adds_the_adapter_that_loads_over_its_base(lora_run, tmp_path, eval_split):
    """A LoRA run: the merged policy at the root as always, the adapter's files beside it (peft's
    names, where `PeftModel.from_pretrained` and LeRobot's `make_policy` read them); the local
    base (the tiny preset) is no loadable name, so the adapter names none and the card says so."""
    out = tmp_path / "upload"
    assert main(["push", str(lora_run["dir"]), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    saved = lora_run["dir"] / "checkpoints" / "000001"
    model_files = {p.name for p in (saved / "pretrained_model").iterdir()}
    assert {p.name for p in out.iterdir()} == model_files | {
        "adapter_config.json", "adapter_model.safetensors", "README.md", "run_config.json", "metrics.jsonl",
        "zk0_round.json"}
    assert (out / "adapter_model.safetensors").read_bytes() == (saved / "adapter" / "adapter_model.safetensors").read_bytes()
    adapter_text = (out / "adapter_config.json").read_text()
    assert json.loads(adapter_text)["base_model_name_or_path"] is None
    assert json.loads((saved / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    for name in ("adapter_config.json", "README.md", "run_config.json"):
        text = (out / name).read_text()
        assert [path for path in lora_run["local_paths"] if path in text] == [], name

    policy, preprocessor = lora_run["policy"], make_pre_post_processors(lora_run["policy"].config,
                                                                         pretrained_path=str(out))[0]
    expected = predicted_chunk(policy, preprocessor, eval_split)
    merged = SmolVLAPolicy.from_pretrained(out)
    assert not merged.config.use_peft
    torch.testing.assert_close(predicted_chunk(merged, preprocessor, eval_split), expected, rtol=1e-4, atol=1e-5)
    base = SmolVLAPolicy.from_pretrained(pretrained_path("tiny"), config=PreTrainedConfig.from_pretrained(out))
    adapted = PeftModel.from_pretrained(base, out)
    torch.testing.assert_close(predicted_chunk(adapted, preprocessor, eval_split), expected)

    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None
    text = " ".join(card.text.split())
    for phrase in ("## Or load the LoRA adapter over its base", "the run started from zk0's `tiny` preset",
                   "`base_model_name_or_path` is null", 'SmolVLAPolicy.from_pretrained("path/to/base", config=config)',
                   f'PeftModel.from_pretrained(base, "{REPO}")',
                   "the LoRA adapter's `adapter_config.json` and `adapter_model.safetensors`"):
        assert phrase in text, phrase


def test_lora_push_names_a_hub_base(lora_run, tmp_path):
    """A LoRA run from a hub model: adapter_config.json and the card name that base, with the code that loads it."""
    copy = tmp_path / "hub-lora-run"
    shutil.copytree(lora_run["dir"], copy, symlinks=True)
    saved = json.loads((copy / "run_config.json").read_text())
    saved["run_config"] |= {"model": "lerobot/smolvla_base"}
    (copy / "run_config.json").write_text(json.dumps(saved))
    adapter_path = copy / "checkpoints" / "000001" / "adapter" / "adapter_config.json"
    # What zk0.policy.lora.wrap records for a hub model: the hub id it loaded from.
    adapter_path.write_text(json.dumps(json.loads(adapter_path.read_text()) | {"base_model_name_or_path": "lerobot/smolvla_base"}))
    out = tmp_path / "upload"
    assert main(["push", str(copy), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "lerobot/smolvla_base"
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "lerobot/smolvla_base"
    text = " ".join(card.text.split())
    assert 'base = SmolVLAPolicy.from_pretrained("lerobot/smolvla_base", config=config)' in text
    assert "make_policy` does the same" in text and "is null" not in text


def test_hub_model_and_datasets_become_card_metadata(run, tmp_path):
    """A run from a hub model on hub datasets names them as base_model and datasets."""
    copy = tmp_path / "hub-run"
    shutil.copytree(run["dir"], copy, symlinks=True)
    saved = json.loads((copy / "run_config.json").read_text())
    saved["run_config"] |= {"model": "lerobot/smolvla_base", "eval-dataset": "Hupy440/Two_Cubes_and_Two_Buckets_v2"}
    (copy / "run_config.json").write_text(json.dumps(saved))
    out = tmp_path / "upload"
    assert main(["push", str(copy), "--repo-id", REPO, "--dry-run", str(out)]) == 0
    data = ModelCard.load(out / "README.md").data
    assert data.base_model == "lerobot/smolvla_base"
    assert data.datasets == [HUB_CLIENT, "Hupy440/Two_Cubes_and_Two_Buckets_v2"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing path", "does not exist"),
        ("not a run", "is not a zk0 run or checkpoint"),
        ("repo without owner", "is not a Hub model id"),
        ("repo with two slashes", "is not a Hub model id"),
        ("repo with '..'", "is not a Hub model id"),
        ("dry-run dir not empty", "is not an empty directory"),
        ("no such round", "has no checkpoint for round 7"),
        ("checkpoint word", "is not best, last or a round number"),
        ("--checkpoint on a checkpoint", "drop --checkpoint"),
    ],
)
def test_bad_input_is_one_line(run, tmp_path, capsys, case, expected):
    """Each mistake: exit 2, one line naming it, the run directory untouched, no dry-run folder."""
    out = tmp_path / "upload"
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "todo.txt").write_text("nothing to push here")
    source, repo, extra = str(run["dir"]), REPO, []
    if case == "missing path":
        source = str(tmp_path / "no-such-run")
    elif case == "not a run":
        source = str(not_a_run)
    elif case == "repo without owner":
        repo = "zk0-smolvla"
    elif case == "repo with two slashes":
        repo = "someone/zk0/smolvla"
    elif case == "repo with '..'":
        repo = "someone/zk0..smolvla"
    elif case == "dry-run dir not empty":
        out = not_a_run
    elif case == "no such round":
        extra = ["--checkpoint", "7"]
    elif case == "checkpoint word":
        extra = ["--checkpoint", "newest"]
    else:
        source, extra = str(run["dir"] / "checkpoints" / "000001"), ["--checkpoint", "last"]
    before = tree_hash(run["dir"])
    assert main(["push", source, "--repo-id", repo, "--dry-run", str(out), *extra]) == 2
    assert expected in one_error_line(capsys.readouterr().err)
    assert tree_hash(run["dir"]) == before
    assert out == not_a_run or not out.exists()


def test_run_without_best_suggests_a_round(run, tmp_path, capsys):
    """A run whose checkpoints were never evaluated has no `best`: the line lists the rounds to choose."""
    copy = tmp_path / "unevaluated-run"
    shutil.copytree(run["dir"], copy, symlinks=True)
    (copy / "checkpoints" / "best").unlink()
    assert main(["push", str(copy), "--repo-id", REPO, "--dry-run", str(tmp_path / "upload")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no 'best' checkpoint" in line and "--checkpoint with a round: 1, 2" in line


def test_offline_push_is_one_line_and_changes_nothing(run, capsys):
    """HF_HUB_OFFLINE=1 (set by conftest): no upload, one line pointing at --dry-run."""
    before = tree_hash(run["dir"])
    assert main(["push", str(run["dir"]), "--repo-id", REPO]) == 2
    assert "offline" in one_error_line(capsys.readouterr().err)
    assert tree_hash(run["dir"]) == before


def zk0_cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The real console entry in a fresh process (the Hub reads its settings at import)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    clean |= {"PYTHONPATH": str(ROOT / "src"), "HF_HOME": str(tmp_path / "hf-home"), "TMPDIR": str(staging), **env}
    return subprocess.run([sys.executable, "-m", "zk0", "push", *args], env=clean, capture_output=True,
                          text=True, timeout=120)


def closed_port() -> int:
    """A port nothing listens on, outside the range where other processes' bind(0) land."""
    return free_ports()[0]


def test_console_entry_dry_run(run, tmp_path):
    out = tmp_path / "upload"
    done = zk0_cli([str(run["dir"]), "--repo-id", REPO, "--dry-run", str(out), "--checkpoint", "last"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "round 2 (last)" in done.stdout
    assert uploaded_round(out) == 2
    assert ModelCard.load(out / "README.md").data.library_name == "lerobot"


def test_no_token_is_one_line(run, tmp_path):
    """Online but not logged in (no HF_TOKEN, empty HF_HOME): one line saying how to log in."""
    before = tree_hash(run["dir"])
    endpoint = f"http://127.0.0.1:{closed_port()}"
    done = zk0_cli([str(run["dir"]), "--repo-id", REPO], tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint)
    assert done.returncode == 2
    assert "no Hugging Face token" in one_error_line(done.stderr)
    assert tree_hash(run["dir"]) == before


def test_unreachable_hub_is_one_line_and_cleans_up(run, tmp_path):
    """A token but no Hub to reach: one line, the run untouched, the staging directory removed."""
    before = tree_hash(run["dir"])
    endpoint = f"http://127.0.0.1:{closed_port()}"
    done = zk0_cli([str(run["dir"]), "--repo-id", REPO], tmp_path,
                   HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint, HF_TOKEN="hf_not_a_real_token")
    assert done.returncode == 2
    assert f"cannot reach the Hugging Face Hub at {endpoint}" in one_error_line(done.stderr)
    assert tree_hash(run["dir"]) == before
    assert list((tmp_path / "staging").iterdir()) == []


class RefusingHub(BaseHTTPRequestHandler):
    """Answers every request as the Hub answers a bad token."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_refused_token_is_one_line(run, tmp_path):
    """The Hub's 401 becomes one line that says the token was refused."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        done = zk0_cli([str(run["dir"]), "--repo-id", REPO], tmp_path,
                       HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint, HF_TOKEN="hf_not_a_real_token")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert f"the Hub refused the upload to {REPO}" in line and "token was refused" in line
    assert list((tmp_path / "staging").iterdir()) == []
