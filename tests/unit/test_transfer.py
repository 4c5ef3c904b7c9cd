"""What travels each round (zk0.wire.transfer), what a node remembers (zk0.node.memory), the pooled
normalization statistics (zk0.data.stats) and the server's resumable state (zk0.run.state)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from zk0.data import stats
from zk0.node import memory as node_memory
from zk0.run import state as run_state
from zk0.wire import protocol, transfer
from zk0.wire.codec import ErrorFeedback


def weights(seed: int, scale: float = 0.02) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"expert.q.weight": rng.normal(0, scale, (256, 200)).astype(np.float32),
            "expert.q.bias": rng.normal(0, scale, 200).astype(np.float32),
            "action_out_proj.weight": rng.normal(0, scale, (6, 33)).astype(np.float32)}


def record_bytes(arrays: dict[str, np.ndarray]) -> int:
    return ArrayRecord({name: Array(value) for name, value in arrays.items()}).count_bytes()


@pytest.mark.parametrize("codec", ["q8", "q4", "q3", "q2"])
def test_delta_and_whole_downloads_give_the_same_weights(codec):
    """A node holding the previous broadcast (delta) and a late joiner (whole bf16) end with
    bit-identical weights; the delta is several times smaller."""
    first = transfer.make_broadcast(weights(0), None, codec, 1)
    global_2 = {name: value + np.float32(1e-3) * weights(1)[name] / 0.02 for name, value in weights(0).items()}
    second = transfer.make_broadcast(global_2, first, codec, 2)
    delta, base = transfer.download(second, node_holds=1)
    whole, no_base = transfer.download(second, node_holds=None)
    assert base == 1 and no_base is None
    via_delta = transfer.receive(delta, first.weights)
    via_whole = transfer.receive(whole, None)
    for name in via_delta:
        assert np.array_equal(via_delta[name], via_whole[name]) and np.array_equal(via_delta[name], second.weights[name])
    assert record_bytes(delta) < record_bytes(whole) * {"q8": 0.6, "q4": 0.3, "q3": 0.22, "q2": 0.15}[codec]


@pytest.mark.parametrize("codec", ["q3", "q3z"])
def test_round_one_is_a_delta_of_zeros_for_a_node_that_loaded_the_start_model(codec):
    """A node holding the start model (broadcast round 0) gets round 1 as a delta of zeros and
    ends with the weights a whole bf16 download gives, bit for bit; q3z sends almost nothing."""
    start = transfer.start_broadcast(weights(0))
    first = transfer.make_broadcast(start.weights, start, codec, 1)
    delta, base = transfer.download(first, node_holds=transfer.START_ROUND)
    whole, _ = transfer.download(first, node_holds=None)
    assert base == transfer.START_ROUND
    node_start = transfer.bf16_round(weights(0))  # what the node computes from the model it loaded
    via_delta, via_whole = transfer.receive(delta, node_start), transfer.receive(whole, None)
    plain = transfer.make_broadcast(weights(0), None, codec, 1).weights  # round 1 without round 0
    for name in plain:
        assert np.array_equal(via_delta[name], plain[name]) and np.array_equal(via_whole[name], plain[name])
    # q3z: the bf16 scales (1/128 of the whole download), a few bytes per frame and the headers
    assert record_bytes(delta) < record_bytes(whole) * {"q3": 0.22, "q3z": 0.05}[codec]


def test_start_digest_names_the_bf16_weights():
    """Equal after bf16 rounding: equal digests; any bf16-visible change, a renamed or reshaped
    tensor: another digest."""
    digest = transfer.digest(weights(0))
    assert digest == transfer.digest(transfer.bf16_round(weights(0)))
    changed = weights(0)
    changed["expert.q.bias"][3] += 0.01
    renamed = {("x." + name): value for name, value in weights(0).items()}
    reshaped = weights(0) | {"expert.q.weight": weights(0)["expert.q.weight"].reshape(200, 256)}
    assert len({digest, transfer.digest(changed), transfer.digest(renamed), transfer.digest(reshaped)}) == 4


def test_broadcast_error_does_not_accumulate():
    """Each round's delta aims at the true global: after many rounds the broadcast stays within
    one round's rounding of the fp32 global."""
    rng = np.random.default_rng(3)
    global_weights = weights(0)
    broadcast = None
    errors = []
    for server_round in range(1, 41):
        global_weights = {n: v + rng.normal(0, 1e-3, v.shape).astype(np.float32) for n, v in global_weights.items()}
        broadcast = transfer.make_broadcast(global_weights, broadcast, "q3", server_round)
        errors.append(max(float(np.abs(broadcast.weights[n] - global_weights[n]).max()) for n in global_weights))
    assert max(errors[20:]) < 3 * max(errors[1:5])


def test_a_delta_without_the_previous_model_is_refused():
    first = transfer.make_broadcast(weights(0), None, "q4", 1)
    second = transfer.make_broadcast(weights(1), first, "q4", 2)
    delta, _ = transfer.download(second, node_holds=1)
    with pytest.raises(ValueError, match="holds no previous global model"):
        transfer.receive(delta, None)


@pytest.mark.parametrize("codec", ["fp32", "bf16", "q4", "q2"])
def test_server_recovers_the_local_weights(codec):
    """Upload then server decode: fp32 exact, bf16 within bf16 rounding, qN within one quantization step."""
    reference = transfer.make_broadcast(weights(0), None, codec, 1).weights
    local = {name: value + np.float32(0.01) for name, value in reference.items()}
    recovered = transfer.decode_update(transfer.upload(local, reference, codec, ErrorFeedback()), reference)
    worst = max(float(np.abs(recovered[n] - local[n]).max()) for n in local)
    bound = {"fp32": 0.0, "bf16": 1e-3, "q4": 0.01 / 7, "q2": 0.02}[codec]
    assert worst <= bound + 1e-7


def test_node_memory_survives_a_new_process(tmp_path, monkeypatch):
    """The node's copy of the broadcast and its residual come back from disk after the process
    forgets them (a fresh ClientApp process, another simulation worker)."""
    monkeypatch.setenv("ZK0_CACHE_DIR", str(tmp_path))
    memory = node_memory.NodeMemory("run", "node", reference_round=3, reference=transfer.bf16_round(weights(0)))
    feedback = memory.feedback
    feedback.compress(weights(1, scale=1e-3), "q2")
    memory.save()
    node_memory._memory.clear()
    loaded = node_memory.NodeMemory.load("run", "node")
    assert loaded.reference_round == 3
    for name, value in memory.reference.items():
        assert np.array_equal(loaded.reference[name], value)
    for name, value in feedback.residual.items():
        assert np.array_equal(loaded.feedback.residual[name], value)
    assert node_memory.NodeMemory.load("another run", "node").reference is None  # another run starts empty


def test_a_copy_another_process_replaced_is_not_trusted(tmp_path, monkeypatch):
    """Simulation: this process served node 11 at round 1 and kept its memory; another process
    then served it at round 2. The next load here must see round 2, not the stale copy."""
    monkeypatch.setenv("ZK0_CACHE_DIR", str(tmp_path))
    node_memory.NodeMemory("run", "node", reference_round=1, reference=transfer.bf16_round(weights(0))).save()
    stale = node_memory.NodeMemory.load("run", "node")
    assert stale.reference_round == 1
    newer = node_memory.NodeMemory("run", "node", reference_round=2, reference=transfer.bf16_round(weights(1)))
    cached, node_memory._memory = dict(node_memory._memory), {}
    newer.save()  # as the other process would: it never saw this process's copy
    node_memory._memory = cached
    assert node_memory.NodeMemory.load("run", "node").reference_round == 2


def test_pooled_statistics_equal_the_statistics_of_all_frames():
    """Pooling alike nodes' count/mean/std/min/max gives what one dataset of all frames would have
    (nodes of equal size whose means lie within reach of each other: nothing is held back)."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc, 5.0, (120, 6)) for loc in (-2.0, 3.5, 0.0)]

    def summary(frames):
        return {"count": np.array([len(frames)]), "mean": frames.mean(0), "std": frames.std(0),
                "min": frames.min(0), "max": frames.max(0)}

    pooled = stats.pool([{"action": summary(part)} for part in parts])
    whole = summary(np.concatenate(parts))
    for key in stats.STAT_KEYS:
        np.testing.assert_allclose(pooled["action"][key], whole[key], rtol=1e-10)
    roundtrip = protocol.read_stats(protocol.stats_record(pooled))
    assert stats.fingerprint(roundtrip) == stats.fingerprint(pooled)


def test_a_node_reports_only_what_the_policy_normalizes(session_policy, eval_data):
    """State and action statistics leave a node; image statistics, counters and quantiles do not."""
    report = stats.node_stats(eval_data.stats, session_policy.config)
    assert sorted(report) == ["action", "observation.state"]
    for values in report.values():
        assert sorted(values) == sorted(stats.STAT_KEYS)


def test_run_state_round_trip(tmp_path):
    random.seed(5)
    saved = run_state.RunState(round=2, global_weights=weights(0), best_mse=12.5,
                               federation_stats=run_state.stats_to_json({"action": {"mean": np.ones(6)}}),
                               python_rng=random.getstate())
    run_state.save(tmp_path, saved)
    loaded = run_state.load(tmp_path)
    assert loaded.round == 2 and loaded.best_mse == 12.5
    assert loaded.python_rng == saved.python_rng
    for name, value in saved.global_weights.items():
        assert np.array_equal(loaded.global_weights[name], value)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(FileNotFoundError, match="no saved run state"):
        run_state.load(tmp_path / "missing")
