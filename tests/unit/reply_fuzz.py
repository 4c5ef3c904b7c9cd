"""Mutations of a training reply, for fuzzing zk0's decode and screening (tests and bench).

`honest_reply(seed, codec)` builds an update (q3 unless told) the way a node sends it
(zk0.wire.transfer.upload over a small model of SmolVLA-like tensor names and shapes); `mutate(content, rng)` applies one to
three random mutations to the RecordDict: bit flips in any array's bytes, truncation,
arrays of another dtype or shape, forged .npy headers, renamed keys, extreme metrics,
dropped or extra records. `screen(content, expected, codec)` runs the server's whole reply pipeline on it,
into a round's running sum (zk0.server.accumulate).
"""

from __future__ import annotations

import random

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from zk0.wire import transfer
from zk0.server.accumulate import RunningAverage
from zk0.wire.codec import ErrorFeedback
from zk0.wire.protocol import ARRAYS, METRICS, NODE
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
        ARRAYS: ArrayRecord({name: Array(value) for name, value in update.items()}),
        METRICS: MetricRecord({"num-examples": 16, "train/loss": 0.5, "train/lr": 1e-4}),
        NODE: ConfigRecord({"dataset-uri": "local:/data/arm", "cameras": "observation.images.front"}),
    })


EXTREMES = [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1e308, -1e308, float("nan"), float("inf"), 0.5, 3.5]


def _forged_header(rng: random.Random) -> bytes:
    dtype = rng.choice(["<f4", "|u1", "<u2", "<i8", "|O", "<c16", "<f2"])
    shape = tuple(rng.choice([0, 1, 7, 2**31, 2**40, -1]) for _ in range(rng.randint(0, 3)))
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %r, }" % (dtype, rng.choice(["False", "True"]), shape)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + rng.randbytes(rng.randint(0, 64))


def _mutate_array(array: Array, rng: random.Random) -> Array:
    data = bytearray(array.data)
    kind = rng.randrange(6)
    if kind == 0 and data:  # bit flips anywhere, header included
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncated or extended
        data = data[: rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data + rng.randbytes(rng.randint(1, 99))
    elif kind == 2:
        data = bytearray(_forged_header(rng))
    elif kind == 3:  # a valid array of another dtype or shape
        value = np.frombuffer(rng.randbytes(8 * rng.randint(0, 40)), np.uint8)
        dtype = rng.choice([np.uint8, np.uint16, np.int64, np.float32, np.float64, np.int8])
        return Array(value.view(dtype) if value.size % np.dtype(dtype).itemsize == 0 else value)
    elif kind == 4:  # extreme values in a shape array
        return Array(np.array([rng.choice(EXTREMES[:6]) for _ in range(rng.randint(0, 9))], np.int64))
    else:
        return Array(dtype=array.dtype, shape=array.shape, stype=rng.choice(["numpy.ndarray", "torch", ""]),
                     data=bytes(data))
    return Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=bytes(data))


def mutate(content: RecordDict, rng: random.Random) -> RecordDict:
    """A copy of `content` with 1-3 random mutations (the original is not modified)."""
    out = RecordDict({key: type(record)(dict(record)) for key, record in content.items()})
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        arrays = out[ARRAYS] if ARRAYS in out and isinstance(out[ARRAYS], ArrayRecord) else None
        if kind <= 2 and arrays:
            key = rng.choice(list(arrays))
            arrays[key] = _mutate_array(arrays[key], rng)
        elif kind == 3 and arrays:  # rename, drop or add a key
            key = rng.choice(list(arrays))
            value = arrays.pop(key) if rng.random() < 0.7 else arrays[key]
            if rng.random() < 0.7:
                arrays[rng.choice([key + "x", key.split("@")[0] + "@q" + str(rng.randint(0, 9)), key + ".scale",
                                   "@q3", "x" * rng.randint(1, 600), key.replace("@q3", "@bf16"),
                                   key.replace("@q3z", "@q3"), key.replace("@q3.", "@q3z.")])] = value
        elif kind == 4 and isinstance(out.get(METRICS) if METRICS in out else None, MetricRecord):
            metrics = out[METRICS]
            metrics[rng.choice(["num-examples", "train/loss", "m" * rng.randint(1, 300)])] = rng.choice(EXTREMES)
        elif kind == 5:
            key = rng.choice([ARRAYS, METRICS, NODE])
            if key in out:
                del out[key]
        elif kind == 6:
            out[rng.choice(["extra", ARRAYS, METRICS, NODE])] = rng.choice([
                ArrayRecord({"x": Array(np.zeros(2, np.float32))}), MetricRecord({"a": 1.0}),
                ConfigRecord({"dataset-uri": rng.randbytes(20).hex(), "cameras": 5})])
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
