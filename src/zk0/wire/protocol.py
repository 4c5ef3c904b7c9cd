"""zk0's wire contract: every message between the ServerApp and a node, typed.

One dataclass per message, each with `to_content()` (the Flower RecordDict that travels)
and `from_content(content)`. Both apps, the strategy and the statistics query use these
and nothing else spells a record key.

    server -> node                                node -> server
    query     (empty)                             StatsReport: stats, identity
    train     TrainInstructions: model, config,   TrainReport: update, metrics,
              pooled stats                        received-model scores, identity
    evaluate  EvaluateInstructions: model, stats  EvaluateReport: scores, identity

Everything a node sends crosses a trust boundary. `TrainReport/EvaluateReport/StatsReport
.from_content` raise nothing but `ProtocolError` (one-line reason), whatever the content:
record layout, metric counts and names, and the arrays' header before any array is
materialized (a message's arrays travel packed as one safetensors blob; see `unpack`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import safetensors
import safetensors.numpy
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

# Record keys of the contract (Flower's own strategies name theirs "arrays" and "config").
ARRAYS, CONFIG, METRICS, STATS, NODE = "arrays", "config", "metrics", "stats", "node"

# Bounds on what a node may send, far above anything zk0 itself sends.
MAX_METRICS = 64
MAX_NAME_CHARS = 128
MAX_LABEL_CHARS = 200
MAX_CAMERAS = 16
MAX_ARRAYS = 10_000
MAX_ARRAY_DIMS = 8
# One array's bytes: SmolVLA's largest trainable tensor in fp32 is ~60 MB.
MAX_ARRAY_BYTES = 1 << 30
# The dtypes zk0's codecs and statistics produce, by their safetensors names; anything else is refused.
WIRE_DTYPES = {name: np.dtype(t) for name, t in
               (("F32", "<f4"), ("F64", "<f8"), ("U16", "<u2"), ("U32", "<u4"), ("U8", "|u1"), ("I64", "<i8"))}

_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class ProtocolError(ValueError):
    """Content that does not follow zk0's wire contract."""


def clean_label(text: object, limit: int = MAX_LABEL_CHARS) -> str:
    """A node-supplied string made safe for one log line: printable ASCII, bounded."""
    cleaned = _PRINTABLE.sub("?", str(text))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


# ---------------------------------------------------------------- arrays

# A message's arrays travel as one safetensors blob in one Flower Array: Flower moves every
# Array as its own objects (one request each, two at a time), so a tiny train reply of 141
# encoded tensors was 216 objects; packed, it is 6 (bench/wire_objects.py).
PACKED = "safetensors"
# safetensors' own header bound is 100 MB; zk0's is what MAX_ARRAYS entries with the longest
# names need, so a header is refused before it is parsed into Python objects.
MAX_HEADER_BYTES = MAX_ARRAYS * (4 * MAX_NAME_CHARS + 256)


def pack(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Named arrays as one ArrayRecord holding one safetensors blob (the wire form)."""
    data = safetensors.numpy.save({name: np.asarray(value, order="C") for name, value in arrays.items()})
    return ArrayRecord({PACKED: Array(dtype="uint8", shape=(len(data),), stype=PACKED, data=data)})


def unpack(record: object, max_arrays: int = MAX_ARRAYS, max_bytes: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """The named arrays of a packed ArrayRecord, refusing what zk0 never sends: the header is
    bounded before it is parsed, safetensors checks that every tensor's offsets and shape match
    the bytes present (no header can claim more than it carries), and zk0 checks the count,
    names, dtypes and dimensions. The arrays are read-only views of the received bytes:
    safetensors' own reader copies them, which would hold a message twice while it lives (at
    real size, 200 MB more on a node during its first round's training)."""
    if not isinstance(record, ArrayRecord):
        raise ProtocolError("expected an ArrayRecord")
    if list(record) != [PACKED]:
        raise ProtocolError(f"expected one array '{PACKED}', got {len(record)}: "
                            f"{clean_label(', '.join(map(str, list(record)[:3])), 60)}")
    array = record[PACKED]
    if not isinstance(array, Array) or array.stype != PACKED or not isinstance(array.data, bytes):
        raise ProtocolError("the arrays are not a safetensors blob")
    data = array.data
    if len(data) < 8:
        raise ProtocolError(f"the safetensors blob is {len(data)} bytes, too short for its header's length")
    header = int.from_bytes(data[:8], "little")
    if header > MAX_HEADER_BYTES:
        raise ProtocolError(f"the safetensors header is {header} bytes, more than the {MAX_HEADER_BYTES} allowed")
    if not 0 < header <= len(data) - 8:
        raise ProtocolError(f"the safetensors header claims {header} bytes, {len(data) - 8} are present")
    try:
        tensors = safetensors.deserialize(data)
        entries = json.loads(data[8:8 + header])  # the header safetensors accepted: where each tensor lies
    except Exception as err:  # SafetensorError; anything else a malformed header may raise
        raise ProtocolError(f"the arrays are not valid safetensors ({clean_label(err, 80)})") from None
    if len(tensors) > max_arrays:
        raise ProtocolError(f"{len(tensors)} arrays, more than the {max_arrays} allowed")
    body = len(data) - 8 - header
    arrays = {}
    for name, tensor in tensors:
        dtype, shape, size = WIRE_DTYPES.get(tensor["dtype"]), tuple(tensor["shape"]), len(tensor["data"])
        tensor["data"] = None  # its copy
        if dtype is None:
            raise ProtocolError(f"an array has dtype {clean_label(tensor['dtype'], 20)}, which zk0 never sends")
        if len(shape) > MAX_ARRAY_DIMS:
            raise ProtocolError(f"an array has an unusable shape {shape!r}")
        if size > max_bytes:
            raise ProtocolError(f"an array holds {size} bytes, more than the {max_bytes} allowed")
        begin, end = entries.get(name, {}).get("data_offsets", (0, -1))
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end <= body and end - begin == size):
            raise ProtocolError(f"array '{clean_label(name, 60)}' lies outside the bytes safetensors checked")
        arrays[_name(name)] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize,
                                            offset=8 + header + begin).reshape(shape)
    return arrays


def array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Named arrays as Flower's own strategies read them, in process (not the wire form: `pack`)."""
    # np.asarray, not np.ascontiguousarray: that one turns a 0-d array into shape (1,)
    return ArrayRecord({name: Array(np.asarray(value, order="C")) for name, value in arrays.items()})


def _name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 4 * MAX_NAME_CHARS:
        raise ProtocolError(f"unusable array or metric name {clean_label(name, 60)!r}")
    return name


# ---------------------------------------------------------------- records


def _only(content: RecordDict, arrays: set[str], metrics: set[str], configs: set[str]) -> None:
    """The reply carries exactly the records of its kind (optional ones may be absent)."""
    if not isinstance(content, RecordDict):
        raise ProtocolError("the reply has no content")
    want = {"ArrayRecord": arrays, "MetricRecord": metrics, "ConfigRecord": configs}
    got = {"ArrayRecord": set(content.array_records), "MetricRecord": set(content.metric_records),
           "ConfigRecord": set(content.config_records)}
    for kind, keys in got.items():
        extra = sorted(keys - want[kind])
        if extra:
            raise ProtocolError(f"unexpected {kind} {clean_label(extra[0], 60)!r} (expected {sorted(want[kind])})")


def _record(content: RecordDict, key: str, kind: type):
    record = content[key] if key in content else None
    if not isinstance(record, kind):
        raise ProtocolError(f"expected one {kind.__name__} '{key}'")
    return record


def read_metrics(record: object) -> dict[str, float]:
    """A MetricRecord as plain finite numbers, bounded in count and name length."""
    if not isinstance(record, MetricRecord):
        raise ProtocolError(f"expected one MetricRecord '{METRICS}'")
    if len(record) > MAX_METRICS:
        raise ProtocolError(f"{len(record)} metrics, more than the {MAX_METRICS} allowed")
    metrics = {}
    for key, value in record.items():
        if not isinstance(key, str) or len(key) > MAX_NAME_CHARS:
            raise ProtocolError(f"metric name {clean_label(key, 60)!r} is too long or not a string")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
            raise ProtocolError(f"metric '{clean_label(key, 60)}' is not a finite number")
        metrics[key] = value
    return metrics


def _finite(value: int | float) -> bool:
    """A finite float, or an int a float can hold (an in-process MetricRecord takes any int)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class NodeIdentity:
    """What a node says about itself: labels, and the digest of the model it loaded (zk0.wire.transfer.digest),
    which decides only whether its own first download may be a delta against that model."""

    dataset: str
    cameras: tuple[str, ...] = ()
    rename_via: str = "node-config"  # how it maps cameras (zk0.data.cameras.RENAME_WAYS), for refusals
    start: str = ""  # hex SHA-256 of the trainable weights it loaded, bf16-rounded ("" if unknown)

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({"dataset-uri": self.dataset, "cameras": ",".join(self.cameras),
                             "rename-via": self.rename_via, "start": self.start})

    @classmethod
    def from_record(cls, record: object) -> "NodeIdentity":
        if not isinstance(record, ConfigRecord):
            raise ProtocolError(f"expected one ConfigRecord '{NODE}' (the node's identity)")
        dataset, cameras = record.get("dataset-uri", ""), record.get("cameras", "")
        if not isinstance(dataset, str) or not isinstance(cameras, str):
            raise ProtocolError("the node's identity holds non-string values")
        names = tuple(clean_label(c, MAX_NAME_CHARS) for c in cameras.split(",") if c)
        if len(names) > MAX_CAMERAS:
            raise ProtocolError(f"the node reports {len(names)} cameras, more than {MAX_CAMERAS}")
        via = record.get("rename-via", "node-config")
        start = record.get("start", "")
        start = start if isinstance(start, str) and _HEX_DIGEST.fullmatch(start) else ""
        return cls(clean_label(dataset), names, via if via in ("node-config", "run-config") else "node-config", start)


def claimed_identity(content: object) -> NodeIdentity | None:
    """The identity a reply claims, if it holds a readable one (for labels: never raises)."""
    try:
        return NodeIdentity.from_record(content[NODE]) if isinstance(content, RecordDict) and NODE in content else None
    except ProtocolError:
        return None


@dataclass(frozen=True)
class Scores:
    """A policy scored on held-out episodes (zk0.policy.evaluate)."""

    num_examples: int
    loss: float
    action_mse: float
    seconds: float | None = None

    def metrics(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}num-examples": self.num_examples, f"{prefix}eval/loss": self.loss,
               f"{prefix}eval/action_mse": self.action_mse}
        if self.seconds is not None:
            out[f"{prefix}eval/seconds"] = self.seconds
        return out

    @classmethod
    def from_metrics(cls, metrics: dict[str, float], prefix: str = "") -> "Scores | None":
        if f"{prefix}eval/action_mse" not in metrics:
            return None
        try:
            return cls(int(metrics[f"{prefix}num-examples"]), float(metrics[f"{prefix}eval/loss"]),
                       float(metrics[f"{prefix}eval/action_mse"]), metrics.get(f"{prefix}eval/seconds"))
        except KeyError as err:
            raise ProtocolError(f"scores lack metric {err}") from None


# ---------------------------------------------------------------- server -> node


@dataclass(frozen=True)
class Attempts:
    """Which attempt made each finished round's global model, for a node to tell whether the
    server used the update it last sent (zk0.node.memory). An attempt is (start, n): `start`
    counts the run's resumes before it, `n` the attempts at its round that fell short before
    it in that start (round-retries). `resumed_after` holds the round each resume continued
    after; `retried` the attempt that made each retried round (any other round: attempt 0)."""

    resumed_after: tuple[int, ...] = ()
    retried: dict[int, int] = field(default_factory=dict)

    @property
    def start(self) -> int:
        """This start of the run: 0, or how many times it was resumed."""
        return len(self.resumed_after)

    def made(self, server_round: int) -> tuple[int, int]:
        """The attempt whose replies made a finished round's model."""
        return sum(after < server_round for after in self.resumed_after), self.retried.get(server_round, 0)


@dataclass
class TrainInstructions:
    server_round: int
    lr: float
    proximal_mu: float
    broadcast_round: int  # the global model this message brings (what the node will hold)
    reference_round: int | None  # None: `model` is whole; else a delta against that round's broadcast
    model: dict[str, np.ndarray]  # encoded (zk0.wire.transfer)
    cameras: tuple[str, ...] = ()
    stats: dict | None = None
    run_key: str = ""  # the zk0 run, across its resumes (Flower's run id changes): names the node's memory
    attempt: int = 0  # this message's attempt at its round, in this start of the run
    attempts: Attempts = field(default_factory=Attempts)  # the finished rounds' attempts

    def to_content(self) -> RecordDict:
        retried = sorted(self.attempts.retried.items())
        content = RecordDict({
            ARRAYS: pack(self.model),
            CONFIG: ConfigRecord({
                "server-round": self.server_round, "lr": self.lr, "proximal-mu": self.proximal_mu,
                "broadcast-round": self.broadcast_round,
                "reference-round": -1 if self.reference_round is None else self.reference_round,
                "cameras": ",".join(self.cameras),
                "run-key": self.run_key, "attempt": self.attempt,
                "resumed-after": list(self.attempts.resumed_after),
                "retried-rounds": [r for r, _ in retried], "retried-attempts": [a for _, a in retried],
            }),
        })
        if self.stats:
            content[STATS] = stats_record(self.stats)
        return content

    @classmethod
    def from_content(cls, content: RecordDict) -> "TrainInstructions":
        config = content[CONFIG]
        reference = int(config["reference-round"])
        return cls(
            server_round=int(config["server-round"]), lr=float(config["lr"]),
            proximal_mu=float(config["proximal-mu"]), broadcast_round=int(config["broadcast-round"]),
            reference_round=None if reference < 0 else reference, model=unpack(content[ARRAYS]),
            cameras=tuple(c for c in str(config.get("cameras", "")).split(",") if c),
            stats=read_stats(content[STATS]) if STATS in content else None,
            run_key=str(config["run-key"]), attempt=int(config["attempt"]),
            attempts=Attempts(tuple(config["resumed-after"]),
                              dict(zip(config["retried-rounds"], config["retried-attempts"], strict=True))),
        )


@dataclass
class EvaluateInstructions:
    """After the last round: the final global model, whole, and the server's run directory
    (a simulated node keeps its personal model in it; a deployed node takes only its name) and
    the run key (a node with a personal adapter finds it in its memory under that key)."""

    server_round: int
    model: dict[str, np.ndarray]
    stats: dict | None = None
    run_dir: str = ""
    run_key: str = ""

    def to_content(self) -> RecordDict:
        content = RecordDict({ARRAYS: pack(self.model),
                              CONFIG: ConfigRecord({"server-round": self.server_round, "run-dir": self.run_dir,
                                                    "run-key": self.run_key})})
        if self.stats:
            content[STATS] = stats_record(self.stats)
        return content

    @classmethod
    def from_content(cls, content: RecordDict) -> "EvaluateInstructions":
        return cls(int(content[CONFIG]["server-round"]), unpack(content[ARRAYS]),
                   read_stats(content[STATS]) if STATS in content else None,
                   str(content[CONFIG].get("run-dir", "")), str(content[CONFIG].get("run-key", "")))


# ---------------------------------------------------------------- node -> server


@dataclass
class TrainReport:
    update: dict[str, np.ndarray]  # encoded (zk0.wire.transfer.upload)
    num_examples: int
    metrics: dict[str, float]  # train/* and any other numbers the node reports
    identity: NodeIdentity
    received: Scores | None = None  # the global model it received, scored before training

    def to_content(self) -> RecordDict:
        metrics = {"num-examples": self.num_examples, **self.metrics}
        if self.received is not None:
            metrics.update(self.received.metrics("received/"))
        return RecordDict({ARRAYS: pack(self.update), METRICS: MetricRecord(metrics),
                           NODE: self.identity.to_record()})

    @classmethod
    def from_content(cls, content: RecordDict) -> "TrainReport":
        _only(content, {ARRAYS}, {METRICS}, {NODE})
        metrics = read_metrics(_record(content, METRICS, MetricRecord))
        identity = NodeIdentity.from_record(_record(content, NODE, ConfigRecord))
        update = unpack(_record(content, ARRAYS, ArrayRecord))
        received = Scores.from_metrics(metrics, "received/")
        own = {k: v for k, v in metrics.items() if not k.startswith("received/") and k != "num-examples"}
        return cls(update, _count(metrics), own, identity, received)


PERSONAL_PREFIX = "personal/"


@dataclass
class EvaluateReport:
    """The final global model's scores on the node's held-out episodes and, with run-config
    `personalize`, its personal model's (`personal/...` metrics): numbers only, never weights."""

    scores: Scores
    identity: NodeIdentity
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. startup-seconds
    personal: Scores | None = None

    def to_content(self) -> RecordDict:
        personal = self.personal.metrics(PERSONAL_PREFIX) if self.personal else {}
        return RecordDict({METRICS: MetricRecord({**self.scores.metrics(), **personal, **self.metrics}),
                           NODE: self.identity.to_record()})

    @classmethod
    def from_content(cls, content: RecordDict) -> "EvaluateReport":
        _only(content, set(), {METRICS}, {NODE})
        metrics = read_metrics(_record(content, METRICS, MetricRecord))
        _count(metrics)
        scores = Scores.from_metrics(metrics)
        if scores is None:
            raise ProtocolError("metrics lack 'eval/action_mse'")
        personal = Scores.from_metrics(metrics, PERSONAL_PREFIX)
        if personal is not None:
            _count({"num-examples": metrics[PERSONAL_PREFIX + "num-examples"]})
        rest = {k: v for k, v in metrics.items() if k not in scores.metrics() and not k.startswith(PERSONAL_PREFIX)}
        return cls(scores, NodeIdentity.from_record(_record(content, NODE, ConfigRecord)), rest, personal)


@dataclass
class StatsReport:
    """Round 0: the node's normalization statistics (zk0.data.stats) and who it says it is."""

    stats: dict[str, dict[str, np.ndarray]]
    identity: NodeIdentity

    def to_content(self) -> RecordDict:
        return RecordDict({STATS: stats_record(self.stats), NODE: self.identity.to_record()})

    @classmethod
    def from_content(cls, content: RecordDict) -> "StatsReport":
        _only(content, {STATS}, set(), {NODE})
        return cls(read_stats(_record(content, STATS, ArrayRecord)),
                   NodeIdentity.from_record(_record(content, NODE, ConfigRecord)))


def _count(metrics: dict[str, float]) -> int:
    """The reply's `num-examples`: a whole number >= 1 (its upper bound is the strategy's to check)."""
    claimed = metrics.get("num-examples")
    if claimed is None:
        raise ProtocolError("metrics lack 'num-examples'")
    if claimed < 1 or claimed != int(claimed):
        raise ProtocolError(f"'num-examples' is {claimed:g}, expected a whole number >= 1")
    return int(claimed)


# ---------------------------------------------------------------- statistics


STAT_KEYS = ("count", "mean", "std", "min", "max")


def stats_record(stats: dict[str, dict[str, np.ndarray]]) -> ArrayRecord:
    return pack({f"{feature}/{key}": np.asarray(value, dtype=np.float64)
                 for feature, values in stats.items() for key, value in values.items()})


def read_stats(record: object) -> dict[str, dict[str, np.ndarray]]:
    """Per feature: count, mean, std, min, max as float64 arrays (values are checked by zk0.data.stats)."""
    stats: dict[str, dict[str, np.ndarray]] = {}
    for name, value in unpack(record, max_arrays=len(STAT_KEYS) * MAX_METRICS).items():
        feature, _, key = name.rpartition("/")
        if key not in STAT_KEYS or not feature:
            raise ProtocolError(f"unexpected statistics entry '{clean_label(name, 60)}'")
        stats.setdefault(feature, {})[key] = value.astype(np.float64)
    for feature, values in stats.items():
        missing = sorted(set(STAT_KEYS) - set(values))
        if missing:
            raise ProtocolError(f"statistics for '{clean_label(feature, 60)}' lack {missing}")
    return stats
