"""Mutations of a training reply, for fuzzing zk0's decode and screening (tests and bench).

`honest_reply(seed, codec)` builds an update (q3 unless told) the way a node sends it
(zk0.wire.transfer.upload over a small model of SmolVLA-like tensor names and shapes); `mutate(content, rng)` applies one to
three random mutations to the RecordDict: bit flips in the packed safetensors blob (header
included), truncation, forged safetensors headers, tensors of another dtype or shape, renamed
keys, extreme metrics, dropped or extra records. `screen(content, expected, codec)` runs the server's whole reply pipeline on it,
into a round's running sum (zk0.server.accumulate).
"""

from __future__ import annotations

import json
import random

import numpy as np
import safetensors.numpy
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from zk0.wire import transfer
from zk0.server.accumulate import RunningAverage
from zk0.wire.codec import ErrorFeedback
from zk0.wire.protocol import ARRAYS, METRICS, NODE, PACKED, pack
from zk0.server.validation import Screened, screen_reply

SHAPES = {"model.action_in_proj.weight": (48, 6), "model.action_in_proj.bias": (48,),
          "model.lm_expert.layers.0.self_attn.q_proj.weight": (64, 48), "model.state_proj.weight": (48, 6)}
CODEC = "q3"
MAX_EXAMPLES = 16


def broadcast() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return transfer.bf16_round({name: rng.normal(0, 0.05, shape).astype(np.float32) for name, shape in SHAPES.items()})


def honest_reply(seed: int = 1, codec: str = CODEC) -> RecordDict:
    base = broadcast()
    rng = np.random.default_rng(seed)
    local = {name: value + rng.normal(0, 1e-3, value.shape).astype(np.float32) for name, value in base.items()}
    update = transfer.upload(local, base, codec, ErrorFeedback())
    return RecordDict({
        ARRAYS: pack(update),
        METRICS: MetricRecord({"num-examples": 16, "train/loss": 0.5, "train/lr": 1e-4}),
        NODE: ConfigRecord({"dataset-uri": "local:/data/arm", "cameras": "observation.images.front"}),
    })


EXTREMES = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1e308, -1e308, float("nan"), float("inf"), 0.5, 3.5]


def _forged_blob(rng: random.Random) -> bytes:
    """A safetensors header claiming anything, followed by random bytes."""
    def entry() -> dict:
        return {"dtype": rng.choice(["F32", "U8", "U16", "I64", "BF16", "F16", "BOOL", "O"]),
                "shape": [rng.choice([0, 1, 7, 2**31, 2**40, -1]) for _ in range(rng.randint(0, 3))],
                "data_offsets": [rng.choice([0, 4, 7, 2**40]), rng.choice([0, 4, 16, 2**63])]}

    tensors = {rng.choice(["w@q3", "w@q3.scale", "x", ""]) + str(i): entry() for i in range(rng.randint(0, 3))}
    header = json.dumps(tensors).encode()
    return len(header).to_bytes(8, "little") + header + rng.randbytes(rng.randint(0, 64))


def _mutate_blob(array: Array, rng: random.Random) -> Array:
    """The packed Array's bytes or kind changed: its safetensors header is as exposed as its data."""
    data = bytearray(array.data)
    kind = rng.randrange(4)
    if kind == 0 and data:  # bit flips anywhere, header included
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(min(len(data), 400) if rng.random() < 0.7 else len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncated or extended
        data = data[: rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data + rng.randbytes(rng.randint(1, 99))
    elif kind == 2:
        data = bytearray(_forged_blob(rng))
    else:
        return Array(dtype=array.dtype, shape=array.shape, stype=rng.choice(["numpy.ndarray", "torch", ""]),
                     data=bytes(data))
    return Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=bytes(data))


def _mutate_value(value: np.ndarray, rng: random.Random) -> np.ndarray:
    """One tensor replaced by a well-formed one of another dtype, shape or extreme values."""
    kind = rng.randrange(3)
    if kind == 0:  # random bytes as another dtype
        raw = np.frombuffer(rng.randbytes(8 * rng.randint(0, 40)), np.uint8)
        dtype = rng.choice([np.uint8, np.uint16, np.int64, np.float32, np.float64, np.int8, np.float16])
        return raw.view(dtype)
    if kind == 1:  # extreme values, as a shape array would hold them
        return np.array([rng.choice(EXTREMES[:6]) for _ in range(rng.randint(0, 9))], np.int64)
    flat = value.reshape(-1)  # truncated or reshaped
    return flat[: rng.randrange(flat.size + 1)] if rng.random() < 0.5 else flat.reshape(1, -1)


def _readable(record: object) -> dict[str, np.ndarray] | None:
    """The record's arrays if it still holds a safetensors blob numpy can read (nothing checked), else None."""
    try:
        return dict(safetensors.numpy.load(record[PACKED].data))
    except Exception:
        return None


def mutate(content: RecordDict, rng: random.Random) -> RecordDict:
    """A copy of `content` with 1-3 random mutations (the original is not modified)."""
    out = RecordDict({key: type(record)(dict(record)) for key, record in content.items()})
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(9)
        record = out[ARRAYS] if ARRAYS in out and isinstance(out[ARRAYS], ArrayRecord) else None
        arrays = _readable(record) if record is not None else None
        if kind <= 1 and arrays:
            key = rng.choice(list(arrays))
            arrays[key] = _mutate_value(arrays[key], rng)
            out[ARRAYS] = pack(arrays)
        elif kind == 2 and record is not None and PACKED in record:
            record[PACKED] = _mutate_blob(record[PACKED], rng)
        elif kind == 3 and arrays:  # rename, drop or add a key
            key = rng.choice(list(arrays))
            value = arrays.pop(key) if rng.random() < 0.7 else arrays[key]
            if rng.random() < 0.7:
                arrays[rng.choice([key + "x", key.split("@")[0] + "@q" + str(rng.randint(0, 9)), key + ".scale",
                                   "@q3", "x" * rng.randint(1, 600), key.replace("@q3", "@bf16"),
                                   key.replace("@q3z", "@q3"), key.replace("@q3.", "@q3z.")])] = value
            out[ARRAYS] = pack(arrays)
        elif kind == 4 and isinstance(out.get(METRICS) if METRICS in out else None, MetricRecord):
            metrics = out[METRICS]
            metrics[rng.choice(["num-examples", "train/loss", "m" * rng.randint(1, 300)])] = rng.choice(EXTREMES)
        elif kind == 5:
            key = rng.choice([ARRAYS, METRICS, NODE])
            if key in out:
                del out[key]
        elif kind == 6:
            out[rng.choice(["extra", ARRAYS, METRICS, NODE])] = rng.choice([
                pack({"x": np.zeros(2, np.float32)}), ArrayRecord({"x": Array(np.zeros(2, np.float32))}),
                MetricRecord({"a": 1.0}), ConfigRecord({"dataset-uri": rng.randbytes(20).hex(), "cameras": 5})])
        elif NODE in out:
            out[NODE] = ConfigRecord({"dataset-uri": rng.choice(["", "\x1b[2J" * 50, 7]), "cameras": "," * 40})
    return out


def screen(content: RecordDict, expected: dict[str, np.ndarray], codec: str = CODEC) -> str:
    """The pipeline's verdict: 'accepted' or the rejection reason. Raises only on a bug. A
    rejected reply leaves nothing behind in the round's running sum."""
    pool = RunningAverage(expected, MAX_EXAMPLES)
    try:
        result = screen_reply(content, pool, 1, codec, MAX_EXAMPLES)
        if isinstance(result, Screened):
            assert np.isfinite(result.norm) and all(np.isfinite(v).all() for _, v in pool.average())
            return "accepted"
        assert isinstance(result, str) and result and "\n" not in result, repr(result)
        assert not pool.examples and not any(total.any() for total in pool.sums.values()), result
        return result
    finally:
        pool.close()
