"""Run-config `trainable = "lora"`: the tiny SmolVLA wrapped by LeRobot's own PEFT support.

The trainable set is LoRA adapters only (SmolVLA's default targets keep no fully trained
modules), identical on every process; FFA-LoRA freezes A; checkpoints load through
LeRobot's PEFT path (`make_policy` with `use_peft`) and, merged, through
`SmolVLAPolicy.from_pretrained` + processors.
"""

from __future__ import annotations

import re

import pytest
import torch
from flwr.app import Context, RecordDict
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import make_policy, make_pre_post_processors
from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

from test_aggregation import LocalGrid, pyproject_run_config

from zk0 import server_app
from zk0.run.checkpoint import ADAPTER, save_checkpoint
from zk0.client_app import app as zk0_client_app
from zk0.data.dataset import fixed_batches
from zk0.policy.lora import LoraSpec
from zk0.policy.model import get_trainable, load_policy, set_trainable, trainable_names
from zk0.run.directory import PRETRAINED, RunDir
from zk0.policy.train import train_local

ADAPTER_NAME = re.compile(r"\.lora_[AB]\.default\.weight$")
# SmolVLA's default LoRA targets (lerobot.policies.smolvla.modeling_smolvla._get_default_peft_targets).
TARGET = re.compile(r"model\.(vlm_with_expert\.lm_expert\..*\.(q|v)_proj|state_proj|action_in_proj|action_out_proj"
                    r"|action_time_mlp_in|action_time_mlp_out)\.lora_")


def lora_policy(eval_data, aggregation: str = "fedit", rank: int = 4, seed: int = 42, targets: str = "lerobot"):
    return load_policy("tiny", eval_data.meta, "cpu", lora=LoraSpec(rank, 8.0, aggregation, seed, targets))


def batches(eval_split):
    while True:
        yield from fixed_batches(eval_split, batch_size=2, num_workers=0, max_batches=2)


def train_a_little(policy, processors, eval_split, lr: float = 1e-2) -> None:
    torch.manual_seed(0)
    train_local(policy, processors[0], batches(eval_split), steps=2, lr=lr, proximal_mu=0.0, desc="lora")


def test_trainable_set_is_only_the_default_targets_adapters(eval_data):
    policy = lora_policy(eval_data)
    names = trainable_names(policy)
    assert names and all(ADAPTER_NAME.search(name) and TARGET.search(name) for name in names)
    assert {name for name in names if ".lora_A." in name} == {n.replace(".lora_B.", ".lora_A.") for n in names if ".lora_B." in n}
    ranks = {tuple(array.shape) for name, array in get_trainable(policy).items() if ".lora_A." in name}
    assert {shape[0] for shape in ranks} == {4}


def test_expert_targets_put_adapters_on_every_linear_layer_of_the_expert(eval_data):
    """`lora-targets = expert`: each nn.Linear of the action expert (attention and MLP) and the
    default projections gets an adapter; nothing else trains."""
    policy = lora_policy(eval_data, targets="expert")
    adapted = {name.split(".lora_")[0] for name in trainable_names(policy)}
    plain = load_policy("tiny", eval_data.meta, "cpu")
    linear = {f"base_model.model.{name}" for name, module in plain.named_modules()
              if isinstance(module, torch.nn.Linear) and (".lm_expert." in name or TARGET.search(f"{name}.lora_"))}
    assert adapted == linear
    assert {name.rsplit(".", 1)[-1] for name in adapted if ".lm_expert." in name} == \
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert adapted > {name.split(".lora_")[0] for name in trainable_names(lora_policy(eval_data))}


def test_node_and_server_hold_the_same_names_and_the_same_a(eval_data):
    """Two independent wraps (server, node) with the run's seed agree on names and every value;
    another seed draws other A matrices."""
    server, node = lora_policy(eval_data), lora_policy(eval_data)
    a, b = get_trainable(server), get_trainable(node)
    assert list(a) == list(b)
    assert all((a[name] == b[name]).all() for name in a)
    other = get_trainable(lora_policy(eval_data, seed=7))
    assert any(not (a[name] == other[name]).all() for name in a if ".lora_A." in name)


def test_ffa_trains_only_b_and_keeps_a_bit_identical(eval_data, processors, eval_split):
    policy = lora_policy(eval_data, aggregation="ffa")
    names = trainable_names(policy)
    assert names and all(".lora_B." in name for name in names)
    a_before = {n: p.detach().clone() for n, p in policy.named_parameters() if ".lora_A." in n}
    b_before = {n: v.copy() for n, v in get_trainable(policy).items()}  # get_trainable's arrays share memory
    for _ in range(2):  # two "rounds": train, then load an (averaged) B back in
        train_a_little(policy, processors, eval_split)
        set_trainable(policy, {n: v * 0.5 for n, v in get_trainable(policy).items()})
    a_after = {n: p.detach() for n, p in policy.named_parameters() if ".lora_A." in n}
    assert all(torch.equal(a_after[n], a_before[n]) for n in a_before)
    assert any(not (v == b_before[n]).all() for n, v in get_trainable(policy).items())


def test_ffa_nodes_share_a_so_the_averaged_b_carries_the_average_of_their_updates(eval_data, processors, eval_split):
    """Why FFA is exact: every node holds the same A, so the model with the average of two nodes'
    B changes each layer (PEFT's own delta B·A·scale) by the average of the two nodes' changes."""
    nodes = [lora_policy(eval_data, aggregation="ffa") for _ in range(3)]
    for lr, node in zip((1e-2, 3e-2), nodes):
        train_a_little(node, processors, eval_split, lr=lr)
    trained = [get_trainable(node) for node in nodes[:2]]
    set_trainable(nodes[2], {name: (trained[0][name] + trained[1][name]) / 2 for name in trained[0]})
    layers = [dict(node.named_modules()) for node in nodes]
    adapted = [name for name, module in layers[0].items() if hasattr(module, "get_delta_weight")]
    assert adapted
    for name in adapted:
        first, second, averaged = (layer[name].get_delta_weight("default").detach() for layer in layers)
        torch.testing.assert_close(averaged, (first + second) / 2)


@pytest.fixture
def lora_checkpoint(tmp_path, eval_data, processors, eval_split):
    policy = lora_policy(eval_data)
    train_a_little(policy, processors, eval_split)
    return policy, save_checkpoint(RunDir(tmp_path), 1, policy, *processors, {"eval/loss": 1.0})


def predicted_chunk(policy, preprocessor, eval_split) -> torch.Tensor:
    batch = preprocessor(next(batches(eval_split)))
    policy.eval()
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return policy.predict_action_chunk(batch, noise=noise)


@pytest.mark.parametrize("targets", ["lerobot", "expert"])
def test_adapter_loads_over_its_base_with_lerobots_make_policy(targets, tmp_path, eval_data, processors, eval_split):
    policy = lora_policy(eval_data, targets=targets)
    train_a_little(policy, processors, eval_split)
    saved = save_checkpoint(RunDir(tmp_path), 1, policy, *processors, {"eval/loss": 1.0})
    adapter = saved / ADAPTER
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    config = PreTrainedConfig.from_pretrained(adapter)
    assert config.use_peft
    config.pretrained_path = adapter
    loaded = make_policy(config, ds_meta=eval_data.meta)
    expected = get_trainable(policy)
    actual = {n: p.detach().numpy() for n, p in loaded.named_parameters() if ADAPTER_NAME.search(n)}
    assert actual.keys() == expected.keys()
    assert all((actual[n] == expected[n]).all() for n in expected)
    preprocessor, _ = make_pre_post_processors(config, pretrained_path=str(adapter))
    torch.testing.assert_close(predicted_chunk(loaded, preprocessor, eval_split),
                               predicted_chunk(policy, processors[0], eval_split))


def test_merged_model_loads_as_a_plain_smolvla(lora_checkpoint, processors, eval_split):
    policy, saved = lora_checkpoint
    loaded = SmolVLAPolicy.from_pretrained(saved / PRETRAINED)
    assert not loaded.config.use_peft
    assert not any("lora" in name for name in loaded.state_dict())
    preprocessor, _ = make_pre_post_processors(loaded.config, pretrained_path=str(saved / PRETRAINED))
    torch.testing.assert_close(predicted_chunk(loaded, preprocessor, eval_split),
                               predicted_chunk(policy, processors[0], eval_split), rtol=1e-4, atol=1e-5)
    assert any(".lora_" in name for name, _ in policy.named_parameters())  # the copy was merged, not the model



# --- a federation in lora mode: zk0's ServerApp and ClientApp in this process ----------------

def federate(tmp_path, demo_roots, **overrides) -> RunDir:
    """Two rounds of zk0's whole server (`zk0.server_app.federate`) with two tiny clients,
    delivered through tests/unit/test_aggregation.py's in-process grid; returns the run directory."""
    config = pyproject_run_config(
        model="tiny", datasets=",".join(f"local:{root}" for root in demo_roots[:-1]),
        eval_dataset=f"local:{demo_roots[-1]}", num_rounds=2, local_steps=2, batch_size=2, lr=1e-3,
        lr_schedule="constant", warmup_rounds=0, eval_batches=1, num_workers=0, device="cpu",
        fraction_evaluate=0.0, node_wait_timeout=5.0, update_codec="q3", output_dir=str(tmp_path),
        checkpoint_every=1,
    ) | {key.replace("_", "-"): value for key, value in overrides.items()}
    nodes = {8001 + i: {"dataset-uri": f"local:{root}"} for i, root in enumerate(demo_roots[:-1])}
    grid = LocalGrid(zk0_client_app, nodes, config)
    server_app.federate(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=config))
    [run] = [RunDir(path) for path in tmp_path.iterdir() if RunDir(path).is_run()]
    return run


def steady_bytes(run: RunDir) -> int:
    """Round 2's bytes down plus up, per client, as the server recorded them in metrics.jsonl."""
    row = run.read_metrics()[-1]
    assert row["round"] == 2
    return (sum(row["bytes_down"].values()) + sum(row["bytes_up"].values())) // len(row["bytes_up"])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, demo_roots) -> RunDir:
    return federate(tmp_path_factory.mktemp("lora-run"), demo_roots, trainable="lora", lora_rank=4)


def test_lora_federation_checkpoints_load_both_ways(lora_run, eval_data, eval_split):
    saved = lora_run.link("last").resolve()
    assert saved.name == "000002"
    config = PreTrainedConfig.from_pretrained(saved / ADAPTER)
    config.pretrained_path = saved / ADAPTER
    adapted = make_policy(config, ds_meta=eval_data.meta)
    preprocessor, _ = make_pre_post_processors(config, pretrained_path=str(saved / ADAPTER))
    merged = SmolVLAPolicy.from_pretrained(saved / PRETRAINED)
    merged_pre, _ = make_pre_post_processors(merged.config, pretrained_path=str(saved / PRETRAINED))
    torch.testing.assert_close(predicted_chunk(merged, merged_pre, eval_split),
                               predicted_chunk(adapted, preprocessor, eval_split), rtol=1e-4, atol=1e-5)
    # The federation trained B away from its zero init; A (FFA, the default) is still every
    # process's seeded init, bit for bit.
    trained_b = [p for n, p in adapted.named_parameters() if ".lora_B." in n]
    assert trained_b and any(p.abs().sum() > 0 for p in trained_b)
    seeded = dict(lora_policy(eval_data, aggregation="ffa").named_parameters())
    final_a = {n: p for n, p in adapted.named_parameters() if ".lora_A." in n}
    assert final_a and all(torch.equal(p, seeded[n]) for n, p in final_a.items())


def test_lora_round_moves_far_fewer_bytes_than_expert(lora_run, tmp_path, demo_roots):
    """q3's size depends on the tensors' shapes only. The tiny model's rank-4 B matrices hold 78x
    fewer weights than its expert, but each tensor carries a fixed overhead, which dominates at
    this size: about 10x fewer bytes here (bench/codec_table.py has the real-size numbers)."""
    expert = steady_bytes(federate(tmp_path, demo_roots))
    lora = steady_bytes(lora_run)
    assert 0 < lora * 5 < expert, (lora, expert)
