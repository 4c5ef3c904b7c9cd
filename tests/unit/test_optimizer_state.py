"""run-config `keep-optimizer-state`: a client's AdamW continues from round to round as one
centralized optimizer would, and its state survives in the node's memory on disk."""

from __future__ import annotations

import copy
import shutil

import torch
from test_robust import LOCAL_STEPS, NODES, federation, global_model, node_configs, run_config  # noqa: F401

from zk0.node import memory as node_memory
from zk0.data.dataset import infinite_batches
from zk0.policy.train import train_local


def trained(policy) -> list[torch.Tensor]:
    return [p.detach().clone() for p in policy.parameters() if p.requires_grad]


def test_two_rounds_with_kept_state_are_one_run_of_their_steps(tiny_policy, processors, eval_split):
    """With the moments kept (and no proximal pull), 2 x 3 steps give bit for bit the weights of
    6 steps of one optimizer on the same batches; restarting AdamW gives others."""
    preprocessor, _ = processors

    def run(rounds: list[int], keep: bool) -> list[torch.Tensor]:
        policy = copy.deepcopy(tiny_policy)
        batches = infinite_batches(eval_split, batch_size=2, num_workers=0, seed=0)
        state = None
        for steps in rounds:
            result = train_local(policy, preprocessor, batches, steps=steps, lr=1e-3, proximal_mu=0.0, desc="test",
                                 optimizer_state=state, keep_optimizer_state=keep)
            state = result.optimizer_state
        assert (state is not None) == keep
        return trained(policy)

    continuous = run([6], keep=False)
    kept = run([3, 3], keep=True)
    restarted = run([3, 3], keep=False)
    assert all(torch.equal(a, b) for a, b in zip(continuous, kept, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(continuous, restarted, strict=True))


def test_kept_state_survives_a_new_process(tmp_path, monkeypatch, tiny_policy, processors, eval_split):
    monkeypatch.setenv("ZK0_CACHE_DIR", str(tmp_path))
    preprocessor, _ = processors
    batches = infinite_batches(eval_split, batch_size=2, num_workers=0, seed=0)
    result = train_local(copy.deepcopy(tiny_policy), preprocessor, batches, steps=2, lr=1e-3, proximal_mu=0.0,
                         desc="test", keep_optimizer_state=True)
    memory = node_memory.NodeMemory("run", "node", optimizer=result.optimizer_state)
    memory.save()
    node_memory._memory.clear()
    loaded = node_memory.NodeMemory.load("run", "node").optimizer
    assert loaded.keys() == result.optimizer_state.keys()
    for index, entry in result.optimizer_state.items():
        assert loaded[index].keys() == entry.keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(loaded[index][key], value) for key, value in entry.items())


def test_a_node_keeps_its_optimizer_across_rounds_only_when_asked(federation, global_model, zk0_cache_dir):
    """The real ClientApp, two rounds: with keep-optimizer-state its AdamW step count runs on
    (2 x local-steps after round 2); without, no state is kept."""
    from flwr.app import ConfigRecord
    from test_aggregation import LocalGrid
    from zk0.client_app import app
    from zk0.config import RunConfig
    from zk0.server.strategy import make_strategy

    _, initial = global_model
    nodes = NODES[:2]
    for keep in (True, False):
        config = run_config(federation, keep_optimizer_state=keep, normalization="local")
        strategy = make_strategy(RunConfig.from_run_config(config))
        configs = node_configs(federation, nodes)
        grid = LocalGrid(app, configs, config)
        try:
            for server_round in (1, 2):
                grid.send_and_receive(strategy.configure_train(server_round, initial, ConfigRecord(), grid))
                for node in nodes:
                    kept = node_memory.NodeMemory.load(strategy.run_key, node_memory.node_key(configs[node])).optimizer
                    if keep:
                        assert {int(entry["step"]) for entry in kept.values()} == {server_round * LOCAL_STEPS}
                    else:
                        assert kept is None
        finally:
            node_memory._memory.clear()
            for node in nodes:
                shutil.rmtree(node_memory._dir(strategy.run_key, node_memory.node_key(configs[node])), ignore_errors=True)
