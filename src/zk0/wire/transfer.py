"""What travels each round: the global model down to a node, its update back up.

Run-config `update-codec` picks the encoding (zk0.wire.codec):
- `fp32`: full weights both ways, exactly (what zk0 sent before codecs existed).
- `bf16`: full weights both ways in bfloat16.
- `q8`, `q4`, `q3`, `q2`: block-quantized deltas both ways.
  Down: the server keeps a *broadcast*, the weights every node reconstructs this round.
  A node that holds the previous broadcast receives `Q(global - previous)` and adds it;
  any other node (late joiner, lost state, another start model) receives the broadcast whole in
  bf16. Broadcasts are kept bf16-representable, so both paths give bit-identical
  weights, and each round's delta aims at the true fp32 global: the rounding error of
  one round is corrected by the next instead of accumulating. For that the server adds the
  round's aggregate to the fp32 global, not to the broadcast the nodes trained from
  (`onto_global`): built on the broadcast, the global would keep every round's downlink error,
  and an update smaller than half a bf16 step (a weight near 1 moving by < 0.004) would be
  lost every round.
  Up: the node sends `Q(local - broadcast + residual)` with error feedback (the
  quantization residual is carried into its next update, zk0.wire.codec.ErrorFeedback).
- `q8z`, `q4z`, `q3z`, `q2z`: as qN, with the codes entropy-coded by zstd (lossless: the
  same weights, fewer bytes).
- `top16`, `top64`: sparse deltas both ways (per tensor the largest 1/16 or 1/64 of the
  values, in bf16 with their positions), error feedback as for qN.
Round 1 of a fresh run sends the start model. A node that loaded the same model (its round-0
report carries `digest` of its bf16-rounded trainable weights, and it matches the server's)
holds it already: it is treated as holding broadcast round 0 (`start_broadcast`), and round 1
reaches it as a delta of zeros instead of the whole model (bf16 both ways, so it ends with
the same weights bit for bit).
The server decodes every reply (to deltas folded one tensor at a time, zk0.server.accumulate, or
to whole fp32 weights for the robust aggregations), keeps the fp32 global; checkpoints are fp32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from zk0.wire.codec import CODECS, DELTA_CODECS, ErrorFeedback, decode, decode_each, encode

START_ROUND = 0  # the broadcast round of the start model every node loads itself
FULL_CODECS = ("fp32", "bf16")

Weights = dict[str, np.ndarray]


def is_delta(arrays: Mapping[str, np.ndarray]) -> bool:
    """A quantized message carries a delta; fp32/bf16 messages carry whole weights."""
    return any(name.partition("@")[2].partition(".")[0] in DELTA_CODECS for name in arrays)


def bf16_round(weights: Mapping[str, np.ndarray]) -> Weights:
    return decode(encode(weights, "bf16"))


def _add(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Weights:
    return {name: a[name] + b[name] for name in a}


def _sub(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Weights:
    return {name: a[name] - b[name] for name in a}


def digest(weights: Mapping[str, np.ndarray]) -> str:
    """Hex SHA-256 of the weights rounded to bf16, with their names and shapes, in name order."""
    sha = hashlib.sha256()
    for name, bits in sorted(encode(weights, "bf16").items()):
        sha.update(f"{name}:{bits.shape}\n".encode())
        sha.update(np.ascontiguousarray(bits, dtype="<u2").tobytes())
    return sha.hexdigest()


@dataclass
class Broadcast:
    """The global model as the nodes receive it in one round."""

    round: int
    weights: Weights  # what every node holds after receiving it
    full: dict[str, np.ndarray]  # encoded whole weights
    delta: dict[str, np.ndarray] | None  # encoded delta from the previous broadcast, if any
    previous_round: int | None
    # What the weights lack of the global they aim at (global - weights, bf16 bits: the error
    # is a rounding's, its own rounding negligible); None where they are the global exactly.
    behind: dict[str, np.ndarray] | None = None


def make_broadcast(global_weights: Mapping[str, np.ndarray], previous: Broadcast | None, codec: str,
                   server_round: int) -> Broadcast:
    if codec not in CODECS:
        raise ValueError(f"unknown update codec '{codec}'; use one of {', '.join(CODECS)}")
    if codec == "fp32":
        weights = {name: np.array(value, dtype=np.float32) for name, value in global_weights.items()}
        return Broadcast(server_round, weights, encode(weights, "fp32"), None, None)
    delta = None
    if codec not in FULL_CODECS and previous is not None:
        delta = encode(_sub(global_weights, previous.weights), codec)
        weights = bf16_round(_add(previous.weights, decode(delta)))
    else:
        weights = bf16_round(global_weights)
    behind = encode({name: np.asarray(global_weights[name], np.float32) - weights[name] for name in weights}, "bf16")
    return Broadcast(server_round, weights, encode(weights, "bf16"), delta,
                     previous.round if delta is not None else None, behind)


def onto_global(aggregate: Mapping[str, np.ndarray], broadcast: Broadcast) -> Weights:
    """The new fp32 global: the aggregate of updates the nodes made from `broadcast`, moved by
    what `broadcast` lacked of the global it aimed at (the next broadcast then carries it)."""
    if broadcast.behind is None:
        return dict(aggregate)
    behind = decode(broadcast.behind)
    return {name: (np.asarray(value, np.float32) + behind[name]).astype(np.float32) for name, value in aggregate.items()}


def start_broadcast(start: Mapping[str, np.ndarray]) -> Broadcast:
    """Broadcast round 0: the start model as a node that loaded it holds it (bf16-rounded).
    `make_broadcast(start_broadcast(w).weights, <it>, codec, 1)` is then round 1's broadcast of
    `w`: the same weights as sending it whole, and a delta of zeros for the nodes that hold it."""
    weights = bf16_round(start)
    return Broadcast(START_ROUND, weights, {}, None, None)  # never sent: every node loads it itself


def download(broadcast: Broadcast, node_holds: int | None) -> tuple[dict[str, np.ndarray], int | None]:
    """The arrays for one node, and the broadcast round they build on (None: whole weights)."""
    if broadcast.delta is not None and node_holds == broadcast.previous_round:
        return broadcast.delta, broadcast.previous_round
    return broadcast.full, None


def receive(arrays: Mapping[str, np.ndarray], held: Mapping[str, np.ndarray] | None) -> Weights:
    """Node side: the broadcast weights from a download."""
    decoded = decode(arrays)
    if not is_delta(arrays):
        return decoded
    if held is None:
        raise ValueError("received a delta but this node holds no previous global model")
    return bf16_round(_add(held, decoded))


def upload(local: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], codec: str,
           feedback: ErrorFeedback) -> dict[str, np.ndarray]:
    """Node side: the encoded update for the server."""
    if codec in FULL_CODECS:
        return encode(local, codec)
    return feedback.compress(_sub(local, reference), codec)


def update_deltas(arrays: Mapping[str, np.ndarray],
                  reference: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """Server side: a node's update as float64 deltas from `reference`, one tensor at a time
    (names and shapes are checked before the first). A quantized update is its decoded
    delta; a whole-weights one, its difference from `reference`."""
    delta = is_delta(arrays)
    for name, value in decode_each(arrays, expect={name: ref.shape for name, ref in reference.items()}):
        if delta:
            yield name, value.astype(np.float64)
        else:
            difference = value.astype(np.float64)
            difference -= reference[name]
            yield name, difference


def decode_update(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> Weights:
    """Server side: a node's local weights in fp32 (names and shapes checked against
    `reference`, the broadcast it received, before decoding)."""
    decoded = decode(arrays, expect={name: value.shape for name, value in reference.items()})
    return _add(reference, decoded) if is_delta(arrays) else decoded
