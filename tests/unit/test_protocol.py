"""zk0's wire contract (zk0.wire.protocol), message by message: every message comes back equal
from its content, and whatever a node sends, its reply is either a message or one
ProtocolError with a one-line reason, decided before any array is materialized."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import tracemalloc

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from zk0.wire.protocol import (
    ARRAYS, CONFIG, MAX_ARRAY_BYTES, MAX_ARRAY_DIMS, MAX_ARRAYS, MAX_CAMERAS, MAX_HEADER_BYTES, MAX_LABEL_CHARS,
    MAX_METRICS, MAX_NAME_CHARS, METRICS, NODE, PACKED, STAT_KEYS, STATS, WIRE_DTYPES, Attempts, EvaluateInstructions,
    EvaluateReport, NodeIdentity, ProtocolError, Scores, StatsReport, TrainInstructions, TrainReport,
    claimed_identity, pack, read_metrics, unpack,
)

DIGEST = "0123456789abcdef" * 4
IDENTITY = NodeIdentity("local:/data/arm", ("observation.images.front", "observation.images.wrist"), "run-config",
                        DIGEST)
UPDATE = {  # one array of each dtype zk0 sends, empty and 0-d ones included
    "w@q3": np.arange(12, dtype=np.uint8), "w@q3.scale": np.array([0x3F80, 0x4000], np.uint16),
    "w@q3.shape": np.array([3, 4], np.int64), "b@fp32": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
    "v@top16.pos": np.array([1, 7], np.uint32), "s@fp64": np.array(2.5), "e@fp32": np.zeros((0, 5), np.float32),
}
STATISTICS = {
    "action": {"count": np.array([40.0]), "mean": np.arange(6.0), "std": np.ones(6), "min": -np.ones(6),
               "max": np.full(6, 2.0)},
    "observation.images.front": {key: np.full((3, 1, 1), i + 1.0) for i, key in enumerate(STAT_KEYS)},
}


# ---------------------------------------------------------------- helpers


def same(a, b) -> bool:
    """Equal messages: dataclasses field by field, arrays by dtype, shape and values."""
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def over_the_wire(content: RecordDict) -> RecordDict:
    """The content as Flower's protobuf serialization delivers it."""
    return recorddict_from_proto(recorddict_to_proto(content))


def blob(header: object, payload: bytes = b"") -> bytes:
    """A safetensors blob whose header (any JSON) claims what it likes, followed by `payload`."""
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + payload


def packed(data: bytes, stype: str = PACKED) -> ArrayRecord:
    """A record of one Array carrying `data` as is (its dtype/shape fields, which zk0 ignores, lie too)."""
    return ArrayRecord({PACKED: Array(dtype="float32", shape=(1,), stype=stype, data=data)})


def train_content(**records) -> RecordDict:
    """An honest training reply, with `records` replacing (None: removing) some of its records."""
    content = TrainReport(dict(UPDATE), 16, {"train/loss": 0.5}, IDENTITY, Scores(8, 0.7, 0.2)).to_content()
    for key, record in records.items():
        if record is None:
            del content[key]
        else:
            content[key] = record
    return content


def with_arrays(**arrays: np.ndarray) -> RecordDict:
    return train_content(arrays=pack({**UPDATE, **arrays}))


def with_metrics(**metrics) -> RecordDict:
    return train_content(metrics=MetricRecord({**train_content()[METRICS], **metrics}))


def with_identity(**values) -> RecordDict:
    return train_content(node=ConfigRecord({**IDENTITY.to_record(), **values}))


def evaluate_content(**metrics) -> RecordDict:
    content = EvaluateReport(Scores(8, 0.5, 0.1), IDENTITY, {}, Scores(8, 0.4, 0.09)).to_content()
    content[METRICS] = MetricRecord({k: v for k, v in {**content[METRICS], **metrics}.items() if v is not None})
    return content


def stats_content(**arrays) -> RecordDict:
    """An honest statistics report with `arrays` added or replacing (None: removing) some entries."""
    content = StatsReport(STATISTICS, IDENTITY).to_content()
    content[STATS] = pack({k: v for k, v in {**unpack(content[STATS]), **arrays}.items() if v is not None})
    return content


def refusal(parse, content) -> str:
    """The one-line reason `parse` refuses `content` with."""
    with pytest.raises(ProtocolError) as info:
        parse(content)
    reason = str(info.value)
    assert reason and "\n" not in reason and len(reason) < 400, reason
    return reason


# ---------------------------------------------------------------- round trips


TRAIN_INSTRUCTIONS = {
    "plain": TrainInstructions(1, 1e-4, 0.0, 1, None, dict(UPDATE)),
    "full": TrainInstructions(7, 3e-5, 0.01, 7, 5, dict(UPDATE), ("observation.images.front",), STATISTICS, "run-x",
                              2, Attempts((2, 5), {3: 1, 6: 2})),
    "delta against round 0": TrainInstructions(1, 1e-4, 0.0, 1, 0, {}),
}
EVALUATE_INSTRUCTIONS = {
    "plain": EvaluateInstructions(10, dict(UPDATE)),
    "full": EvaluateInstructions(10, dict(UPDATE), STATISTICS, "/runs/2026-01-01"),
}
TRAIN_REPORTS = {
    "plain": TrainReport(dict(UPDATE), 1, {}, NodeIdentity("local:/d")),
    "full": TrainReport(dict(UPDATE), 16, {"train/loss": 0.5, "train/lr": 1e-4, "steps": 40}, IDENTITY,
                        Scores(8, 0.7, 0.2, 1.5)),
}
EVALUATE_REPORTS = {
    "plain": EvaluateReport(Scores(1, 0.5, 0.1), NodeIdentity("hf:user/set")),
    "full": EvaluateReport(Scores(8, 0.5, 0.1, 2.5), IDENTITY, {"startup-seconds": 12.0}, Scores(8, 0.4, 0.09, 3.0)),
}
STATS_REPORTS = {"plain": StatsReport(STATISTICS, IDENTITY), "no cameras": StatsReport(STATISTICS, NodeIdentity("x"))}
MESSAGES = {f"{type(m).__name__} {name}": m for group in (TRAIN_INSTRUCTIONS, EVALUATE_INSTRUCTIONS, TRAIN_REPORTS,
                                                         EVALUATE_REPORTS, STATS_REPORTS) for name, m in group.items()}


@pytest.mark.parametrize("wire", [False, True], ids=["in memory", "over the wire"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_every_message_comes_back_equal_from_its_content(name, wire):
    """to_content() then from_content() gives back the message, optional fields included, in
    memory and through Flower's protobuf serialization."""
    message = MESSAGES[name]
    content = message.to_content()
    back = type(message).from_content(over_the_wire(content) if wire else content)
    assert same(back, message), (back, message)


def test_optional_fields_are_absent_from_the_content_when_unset():
    """A message without stats, received or personal scores carries no record or metric for them."""
    assert set(TRAIN_INSTRUCTIONS["plain"].to_content()) == {ARRAYS, CONFIG}
    assert set(TRAIN_INSTRUCTIONS["full"].to_content()) == {ARRAYS, CONFIG, STATS}
    assert set(EVALUATE_INSTRUCTIONS["plain"].to_content()) == {ARRAYS, CONFIG}
    assert not any(k.startswith("received/") for k in TRAIN_REPORTS["plain"].to_content()[METRICS])
    assert set(EVALUATE_REPORTS["plain"].to_content()[METRICS]) == {"num-examples", "eval/loss", "eval/action_mse"}


# ---------------------------------------------------------------- what a node sends: records


RECORD_REFUSALS = {
    "no content": (None, r"^the reply has no content$"),
    "no arrays": (train_content(arrays=None), r"^expected one ArrayRecord 'arrays'$"),
    "no metrics": (train_content(metrics=None), r"^expected one MetricRecord 'metrics'$"),
    "no identity": (train_content(node=None), r"^expected one ConfigRecord 'node'"),
    "extra ArrayRecord": (train_content(extra=ArrayRecord()),
                          r"^unexpected ArrayRecord 'extra' \(expected \['arrays'\]\)$"),
    "extra MetricRecord": (train_content(more=MetricRecord()), r"^unexpected MetricRecord 'more'"),
    "extra ConfigRecord": (train_content(config=ConfigRecord()), r"^unexpected ConfigRecord 'config'"),
    "metrics as an ArrayRecord": (train_content(metrics=ArrayRecord()), r"^unexpected ArrayRecord 'metrics'"),
    "arrays as a MetricRecord": (train_content(arrays=MetricRecord()), r"^unexpected MetricRecord 'arrays'"),
    "identity as a MetricRecord": (train_content(node=MetricRecord()), r"^unexpected MetricRecord 'node'"),
    "a hostile record name": (train_content(**{"\x1b[2J" + "x" * 500: ConfigRecord()}),
                              r"^unexpected ConfigRecord '\?\[2Jx+\.\.\.'"),
}


@pytest.mark.parametrize("case", list(RECORD_REFUSALS))
def test_a_training_reply_needs_exactly_its_records(case):
    content, reason = RECORD_REFUSALS[case]
    assert re.search(reason, refusal(TrainReport.from_content, content))


def test_each_report_kind_needs_exactly_its_own_records():
    """An evaluation reply carries no arrays, a statistics report no metrics; none is missing."""
    train = train_content()
    evaluate = EVALUATE_REPORTS["full"].to_content()
    assert re.search(r"^unexpected ArrayRecord 'arrays' \(expected \[\]\)", refusal(EvaluateReport.from_content, train))
    assert re.search(r"^unexpected MetricRecord 'metrics' \(expected \[\]\)",
                     refusal(StatsReport.from_content, evaluate))
    assert re.search(r"^expected one ArrayRecord 'stats'", refusal(StatsReport.from_content,
                                                                   RecordDict({NODE: IDENTITY.to_record()})))
    assert re.search(r"^unexpected MetricRecord 'stats'", refusal(
        StatsReport.from_content, RecordDict({STATS: MetricRecord(), NODE: IDENTITY.to_record()})))
    assert re.search(r"^expected one MetricRecord 'metrics'", refusal(
        EvaluateReport.from_content, RecordDict({NODE: IDENTITY.to_record()})))
    assert re.search(r"^expected one ConfigRecord 'node'", refusal(
        EvaluateReport.from_content, RecordDict({METRICS: evaluate[METRICS]})))
    assert re.search(r"^the reply has no content", refusal(StatsReport.from_content, "stats"))


# ---------------------------------------------------------------- metrics


METRIC_REFUSALS = {
    "NaN": (with_metrics(**{"train/loss": float("nan")}), r"^metric 'train/loss' is not a finite number$"),
    "infinity": (with_metrics(**{"train/loss": float("inf")}), r"^metric 'train/loss' is not a finite number$"),
    "minus infinity": (with_metrics(**{"train/loss": -float("inf")}), r"^metric 'train/loss' is not a finite number$"),
    "a list": (with_metrics(**{"train/loss": [1.0, 2.0]}), r"^metric 'train/loss' is not a finite number$"),
    "an int beyond any float": (with_metrics(**{"train/loss": 10**400}),  # in process only: the wire stops at 64 bits
                                r"^metric 'train/loss' is not a finite number$"),
    "too many": (with_metrics(**{f"m{i}": 1.0 for i in range(MAX_METRICS)}),
                 rf"^{len(train_content()[METRICS]) + MAX_METRICS} metrics, more than the {MAX_METRICS} allowed$"),
    "an over-long name": (with_metrics(**{"m" * (MAX_NAME_CHARS + 1): 1.0}),
                          r"^metric name 'm+\.\.\.' is too long or not a string$"),
    "no num-examples": (train_content(metrics=MetricRecord({"train/loss": 0.5})), r"^metrics lack 'num-examples'$"),
    "num-examples 0": (with_metrics(**{"num-examples": 0}), r"^'num-examples' is 0, expected a whole number >= 1$"),
    "num-examples -3": (with_metrics(**{"num-examples": -3}), r"^'num-examples' is -3, expected a whole number"),
    "num-examples 3.5": (with_metrics(**{"num-examples": 3.5}), r"^'num-examples' is 3.5, expected a whole number"),
    "received scores without their count": (
        train_content(metrics=MetricRecord({k: v for k, v in train_content()[METRICS].items()
                                            if k != "received/num-examples"})),
        r"^scores lack metric 'received/num-examples'$"),
}


@pytest.mark.parametrize("case", list(METRIC_REFUSALS))
def test_a_training_reply_with_unusable_metrics_is_refused(case):
    content, reason = METRIC_REFUSALS[case]
    assert re.search(reason, refusal(TrainReport.from_content, content))


def test_metric_bounds_are_inclusive():
    """Exactly MAX_METRICS metrics, names of exactly MAX_NAME_CHARS, and the largest ints the
    wire carries are accepted."""
    record = MetricRecord({f"m{i}": i for i in range(MAX_METRICS - 2)})
    record["n" * MAX_NAME_CHARS] = 2**64 - 1
    record["num-examples"] = 1
    assert len(record) == MAX_METRICS
    report = TrainReport.from_content(train_content(metrics=record))
    assert report.metrics["n" * MAX_NAME_CHARS] == 2**64 - 1 and report.num_examples == 1
    assert read_metrics(MetricRecord({"a": -(2**63), "b": -1e308})) == {"a": -(2**63), "b": -1e308}


EVALUATE_REFUSALS = {
    "no action_mse": (evaluate_content(**{"eval/action_mse": None}), r"^metrics lack 'eval/action_mse'$"),
    "no loss": (evaluate_content(**{"eval/loss": None}), r"^scores lack metric 'eval/loss'$"),
    "no num-examples": (evaluate_content(**{"num-examples": None}), r"^metrics lack 'num-examples'$"),
    "num-examples 0.5": (evaluate_content(**{"num-examples": 0.5}), r"^'num-examples' is 0.5"),
    "NaN loss": (evaluate_content(**{"eval/loss": float("nan")}), r"^metric 'eval/loss' is not a finite number$"),
    "personal scores without loss": (evaluate_content(**{"personal/eval/loss": None}),
                                     r"^scores lack metric 'personal/eval/loss'$"),
    "personal num-examples 0": (evaluate_content(**{"personal/num-examples": 0}), r"^'num-examples' is 0"),
    "too many metrics": (evaluate_content(**{f"m{i}": 1.0 for i in range(MAX_METRICS)}), r"metrics, more than the"),
}


@pytest.mark.parametrize("case", list(EVALUATE_REFUSALS))
def test_an_evaluation_reply_with_unusable_scores_is_refused(case):
    content, reason = EVALUATE_REFUSALS[case]
    assert re.search(reason, refusal(EvaluateReport.from_content, content))


# ---------------------------------------------------------------- identity


def test_an_identity_holds_strings_and_a_bounded_number_of_cameras():
    cameras = ",".join(f"cam{i}" for i in range(MAX_CAMERAS))
    assert len(TrainReport.from_content(with_identity(cameras=cameras)).identity.cameras) == MAX_CAMERAS
    assert re.search(rf"^the node reports {MAX_CAMERAS + 1} cameras, more than {MAX_CAMERAS}$",
                     refusal(TrainReport.from_content, with_identity(cameras=cameras + ",one-more")))
    for values in ({"dataset-uri": 5}, {"cameras": 7}, {"cameras": b"front"}, {"dataset-uri": ["a"]}):
        reason = refusal(TrainReport.from_content, with_identity(**values))
        assert reason == "the node's identity holds non-string values"


def test_an_identity_is_only_ever_a_bounded_printable_label():
    """Over-long or unprintable labels are cut and cleaned, not refused; an unknown camera
    mapping or a start that is no SHA-256 digest reads as none."""
    identity = TrainReport.from_content(with_identity(**{
        "dataset-uri": "\x1b[2J" + "d" * 10_000, "cameras": "\x00front," + "c" * 1000,
        "rename-via": "shell", "start": DIGEST.upper()})).identity
    assert len(identity.dataset) == MAX_LABEL_CHARS and identity.dataset.startswith("?[2Jddd")
    assert identity.dataset.endswith("...")
    assert identity.cameras[0] == "?front" and len(identity.cameras[1]) == MAX_NAME_CHARS
    assert identity.rename_via == "node-config" and identity.start == ""
    bare = TrainReport.from_content(train_content(node=ConfigRecord())).identity
    assert bare == NodeIdentity("")


def test_the_claimed_identity_of_any_content_never_raises():
    assert claimed_identity(train_content()) == IDENTITY
    for content in (None, RecordDict(), train_content(node=MetricRecord()), with_identity(cameras=9),
                    with_identity(cameras=",".join("c" * (MAX_CAMERAS + 1)))):
        assert claimed_identity(content) is None


# ---------------------------------------------------------------- arrays


def entry(dtype="F32", shape=(4,), offsets=(0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


ARRAY_REFUSALS = {
    "not safetensors": (packed(Array(np.zeros(4, np.float32)).data, stype="numpy.ndarray"),
                        r"^the arrays are not a safetensors blob$"),
    "an array per tensor": (ArrayRecord({name: Array(value) for name, value in UPDATE.items()}),
                            r"^expected one array 'safetensors', got 7: w@q3, w@q3.scale, w@q3.shape$"),
    "no array": (ArrayRecord(), r"^expected one array 'safetensors', got 0: $"),
    "no bytes": (packed(b""), r"^the safetensors blob is 0 bytes, too short for its header's length$"),
    "garbage": (packed(b"\x00garbage"),
                rf"^the safetensors header is \d+ bytes, more than the {MAX_HEADER_BYTES} allowed$"),
    "a header longer than its blob": (packed(blob({"w": entry()})[:20]),
                                      r"^the safetensors header claims \d+ bytes, 12 are present$"),
    "an empty header": (packed(bytes(8) + b"{}"), r"^the safetensors header claims 0 bytes, 2 are present$"),
    "a header over the bound": (packed(blob({"x": "y" * MAX_HEADER_BYTES})),
                                rf"^the safetensors header is \d+ bytes, more than the {MAX_HEADER_BYTES} allowed$"),
    "a header that is no JSON": (packed(len(b"__import__('os')").to_bytes(8, "little") + b"__import__('os')"),
                                 r"^the arrays are not valid safetensors \("),
    "a header that is a list": (packed(blob([1, 2])), r"^the arrays are not valid safetensors"),
    "an unknown dtype": (packed(blob({"w": entry("O")}, bytes(16))), r"^the arrays are not valid safetensors"),
    "bfloat16": (packed(blob({"w": entry("BF16", (8,))}, bytes(16))), r"^an array has dtype BF16, which zk0 never"),
    "float16": (packed(pack({"w": np.zeros(8, np.float16)})[PACKED].data), r"^an array has dtype F16, which"),
    "complex64": (packed(blob({"w": entry("C64", (2,))}, bytes(16))), r"^an array has dtype C64"),
    "int32": (packed(blob({"w": entry("I32")}, bytes(16))), r"^an array has dtype I32"),
    "bool": (packed(blob({"w": entry("BOOL", (16,))}, bytes(16))), r"^an array has dtype BOOL"),
    "too many dims": (packed(blob({"w": entry(shape=(1,) * (MAX_ARRAY_DIMS + 1), offsets=(0, 4))}, bytes(4))),
                      r"^an array has an unusable shape \(1, 1, 1, 1, 1, 1, 1, 1, 1\)$"),
    "a negative dim": (packed(blob({"w": entry(shape=(-4,))}, bytes(16))), r"^the arrays are not valid safetensors"),
    "a boolean dim": (packed(blob({"w": entry(shape=(True,), offsets=(0, 4))}, bytes(4))),
                      r"^the arrays are not valid safetensors"),
    "10**12 elements over 16 bytes": (packed(blob({"w": entry("F64", (10**12,))}, bytes(16))),
                                      r"^the arrays are not valid safetensors \("),
    "dims whose product overflows": (packed(blob({"w": entry(shape=(2**40, 2**40, 0), offsets=(0, 0))})),
                                     r"^the arrays are not valid safetensors \("),
    "a dim beyond 64 bits": (packed(blob({"w": entry(shape=(2**70,))}, bytes(16))),
                             r"^the arrays are not valid safetensors"),
    "offsets past its bytes": (packed(blob({"w": entry("U8", (1000,), (0, 1000))}, bytes(16))),
                               r"^the arrays are not valid safetensors"),
    "bytes past its offsets": (packed(blob({"w": entry("F32", (1,), (0, 4))}, bytes(20))),
                               r"^the arrays are not valid safetensors"),
    "two tensors on the same bytes": (packed(blob({"w": entry(), "v": entry()}, bytes(16))),
                                      r"^the arrays are not valid safetensors"),
}


@pytest.mark.parametrize("case", list(ARRAY_REFUSALS))
def test_arrays_that_zk0_never_sends_are_refused_before_they_are_read(case):
    record, reason = ARRAY_REFUSALS[case]
    assert re.search(reason, refusal(TrainReport.from_content, train_content(arrays=record)))


def test_array_names_and_counts_are_bounded():
    """Array names are non-empty and at most 4 x MAX_NAME_CHARS; a blob holds at most MAX_ARRAYS arrays."""
    value = np.zeros(1, np.float32)
    assert "n" * 4 * MAX_NAME_CHARS in TrainReport.from_content(with_arrays(**{"n" * 4 * MAX_NAME_CHARS: value})).update
    assert re.search(r"^unusable array or metric name 'n+\.\.\.'$",
                     refusal(TrainReport.from_content, with_arrays(**{"n" * (4 * MAX_NAME_CHARS + 1): value})))
    assert refusal(TrainReport.from_content, with_arrays(**{"": value})) == "unusable array or metric name ''"
    at_bound = {f"a{i}": value for i in range(MAX_ARRAYS)}
    assert len(unpack(pack(at_bound))) == MAX_ARRAYS
    assert refusal(unpack, pack({**at_bound, "last": value})) == \
        f"{MAX_ARRAYS + 1} arrays, more than the {MAX_ARRAYS} allowed"


def test_the_longest_header_zk0_allows_holds_max_arrays_of_the_longest_names():
    """MAX_HEADER_BYTES is no tighter than the other bounds: MAX_ARRAYS arrays of the largest
    shapes and offsets, each named with the longest name, pack into a header within it."""
    name = "n" * (4 * MAX_NAME_CHARS - 8)
    header = {f"{name}{i:08d}": entry("U16", (2**31 - 1,) * MAX_ARRAY_DIMS, (10**15, 10**15))
              for i in range(MAX_ARRAYS)}
    assert len(json.dumps(header, separators=(",", ":"))) <= MAX_HEADER_BYTES


def test_every_wire_dtype_and_the_byte_bound_itself_are_accepted():
    for dtype in WIRE_DTYPES.values():
        value = np.arange(6).astype(dtype).reshape(2, 3)
        assert same(unpack(pack({"v": value}))["v"], value)
    exact = np.zeros(8, np.float64)
    assert same(unpack(pack({"v": exact}), max_bytes=64)["v"], exact)
    assert refusal(lambda r: unpack(r, max_bytes=64), pack({"v": np.zeros(9, np.float64)})) == \
        "an array holds 72 bytes, more than the 64 allowed"
    deepest = np.zeros((1,) * MAX_ARRAY_DIMS, np.float32)
    assert unpack(pack({"v": deepest}))["v"].shape == deepest.shape


@pytest.mark.parametrize("shape, dtype", [((10**12,), "F64"), ((MAX_ARRAY_BYTES // 8,), "F64"),
                                          ((2**30, 2**30), "U8")], ids=["8 TB", "the byte bound", "an EB square"])
def test_a_lying_header_allocates_nothing(shape, dtype):
    """A header claiming a GB to an EB over 16 bytes is refused at once, with well under a MB
    allocated on the way."""
    content = train_content(arrays=packed(blob({"w": entry(dtype, shape)}, bytes(16))))
    tracemalloc.start()
    try:
        began = time.perf_counter()
        refusal(TrainReport.from_content, content)
        seconds = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and seconds < 5.0, (peak, seconds)


def test_decoded_arrays_are_read_only_views_of_the_received_bytes():
    """unpack wraps the bytes it checked (no copy): a decoded array cannot be written, and a
    message is not held twice while it lives."""
    record = pack({"v": np.arange(6, dtype=np.float32), "w": np.arange(3, dtype=np.uint8)})
    arrays = unpack(record)
    for value in arrays.values():
        assert not value.flags.writeable and not value.flags.owndata
        assert np.shares_memory(value, np.frombuffer(record[PACKED].data, np.uint8))
    assert same(arrays["v"], np.arange(6, dtype=np.float32)) and same(arrays["w"], np.arange(3, dtype=np.uint8))


def test_a_tensor_named_twice_reads_as_the_entry_safetensors_checked():
    """JSON lets a header name a tensor twice; safetensors and Python's json both keep the last
    entry, so the view unpack makes is the tensor safetensors validated."""
    text = json.dumps({"w": entry("U8", (4,), (0, 4))})[:-1] + ', "w": ' + json.dumps(entry("U8", (2,), (0, 2))) + "}"
    data = len(text).to_bytes(8, "little") + text.encode() + bytes([7, 9])
    assert same(unpack(packed(data))["w"], np.array([7, 9], np.uint8))
    assert re.search(r"^the arrays are not valid safetensors", refusal(unpack, packed(data + bytes(2))))


def test_a_message_of_many_tensors_is_a_few_flower_objects():
    """What packing is for: Flower moves each Array as its own objects (one request each), so a
    message's tensors travel in one Array: the tiny model's hundreds of encoded tensors make a
    handful of objects, not one or two per tensor."""
    update = {f"layer{i}.weight@q3": np.full(64, i, np.uint16) for i in range(300)}
    content = TrainReport(update, 16, {}, IDENTITY).to_content()
    # the RecordDict, its three records, the one Array and its one chunk (Flower adds the Message)
    assert len(get_all_nested_objects(content)) == 6


# ---------------------------------------------------------------- statistics


STATS_REFUSALS = {
    "an unknown statistic": (stats_content(**{"action/median": np.zeros(6)}),
                             r"^unexpected statistics entry 'action/median'$"),
    "no feature": (stats_content(**{"mean": np.zeros(6)}), r"^unexpected statistics entry 'mean'$"),
    "an empty feature": (stats_content(**{"/mean": np.zeros(6)}), r"^unexpected statistics entry '/mean'$"),
    "a missing statistic": (stats_content(**{"action/std": None, "action/max": None}),
                            r"^statistics for 'action' lack \['max', 'std'\]$"),
    "a float16 array": (stats_content(**{"action/mean": np.zeros(6, np.float16)}), r"^an array has dtype F16"),
    "a lying header": (RecordDict({STATS: packed(blob({"action/mean": entry("F64", (10**12,))}, bytes(48))),
                                   NODE: IDENTITY.to_record()}), r"^the arrays are not valid safetensors"),
    "too many arrays": (stats_content(**{f"f{i}/{key}": np.zeros(1) for i in range(MAX_METRICS) for key in STAT_KEYS}),
                        rf"^{(MAX_METRICS + 2) * len(STAT_KEYS)} arrays, more than the {MAX_METRICS * len(STAT_KEYS)}"),
}


@pytest.mark.parametrize("case", list(STATS_REFUSALS))
def test_unusable_statistics_are_refused(case):
    content, reason = STATS_REFUSALS[case]
    assert re.search(reason, refusal(StatsReport.from_content, content))


def test_statistics_of_any_wire_dtype_read_as_float64():
    content = stats_content(**{"action/count": np.array([40], np.int64)})
    stats = StatsReport.from_content(content).stats
    assert same(stats["action"]["count"], np.array([40.0]))
    many = {f"f{i}/{key}": np.zeros(1) for i in range(MAX_METRICS) for key in STAT_KEYS}
    report = StatsReport.from_content(RecordDict({STATS: pack(many), NODE: ConfigRecord()}))
    assert len(report.stats) == MAX_METRICS


# ---------------------------------------------------------------- anything at all


SAFETENSORS_DTYPES = ["F32", "F64", "U8", "U16", "U32", "I64", "BF16", "F16", "BOOL", "I32", "C64", "O", ""]
DIMS = st.one_of(st.integers(0, 6), st.sampled_from([-1, True, 2**31, 2**40, 2**64, 2**70, 10**30]))
OFFSETS = st.one_of(st.tuples(st.integers(0, 64), st.integers(0, 64)), st.just((0, 2**64)), st.just((-1, 4)))
NAMES = st.one_of(st.text(max_size=12), st.sampled_from(["w@q3", *(f"action/{k}" for k in STAT_KEYS), "/mean", ""]),
                  st.integers(4 * MAX_NAME_CHARS, 4 * MAX_NAME_CHARS + 2).map(lambda n: "n" * n))
ENTRIES = st.builds(entry, st.sampled_from(SAFETENSORS_DTYPES), st.lists(DIMS, max_size=MAX_ARRAY_DIMS + 2), OFFSETS)
FORGED = st.builds(blob, st.one_of(st.dictionaries(NAMES, ENTRIES, max_size=4), st.lists(st.integers(), max_size=2)),
                   st.binary(max_size=64))
NUMPY_DTYPES = st.sampled_from(["<f4", "<f8", "|u1", "<u2", "<u4", "<i8", "<i4", "<f2", "|b1"])
HONEST = st.dictionaries(NAMES, hnp.arrays(NUMPY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
                         max_size=4).map(lambda arrays: pack(arrays)[PACKED].data)
BLOBS = st.one_of(FORGED, HONEST, st.binary(max_size=80))
ARRAY_RECORDS = st.one_of(st.builds(packed, BLOBS, st.sampled_from([PACKED, PACKED, "numpy.ndarray", ""])),
                          st.dictionaries(st.sampled_from([PACKED, "w@q3"]),
                                          BLOBS.map(lambda data: packed(data)[PACKED]), max_size=2).map(ArrayRecord))
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.sampled_from([10**400, -(10**400), 2**63, -0.0]))
METRIC_VALUES = st.one_of(NUMBERS, st.lists(st.integers(-5, 5), max_size=3), st.lists(st.floats(), max_size=3))
METRIC_NAMES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["num-examples", "train/loss", *(f"{p}{k}" for p in ("", "received/", "personal/")
                                                      for k in ("num-examples", "eval/loss", "eval/action_mse"))]),
    st.integers(MAX_NAME_CHARS, MAX_NAME_CHARS + 2).map(lambda n: "m" * n))
METRIC_RECORDS = st.one_of(st.dictionaries(METRIC_NAMES, METRIC_VALUES, max_size=8),
                           st.integers(MAX_METRICS - 1, MAX_METRICS + 1).map(lambda n: {f"m{i}": 1 for i in range(n)}))
CONFIG_VALUES = st.one_of(st.text(max_size=40), st.text(",ab", max_size=40), st.integers(), st.floats(), st.booleans(),
                          st.binary(max_size=8), st.lists(st.text(max_size=4), max_size=3))
CONFIG_RECORDS = st.dictionaries(st.one_of(st.sampled_from(["dataset-uri", "cameras", "rename-via", "start"]),
                                           st.text(max_size=8)), CONFIG_VALUES, max_size=5).map(ConfigRecord)
RECORDS = st.one_of(ARRAY_RECORDS, METRIC_RECORDS.map(MetricRecord), CONFIG_RECORDS)
KEYS = st.one_of(st.sampled_from([ARRAYS, METRICS, NODE, STATS, CONFIG]), st.text(max_size=8))
HONEST_CONTENTS = [train_content(), EVALUATE_REPORTS["full"].to_content(), stats_content()]


@st.composite
def contents(draw) -> RecordDict:
    """Random records, or an honest reply with some records replaced, some metrics added."""
    if draw(st.booleans()):
        return RecordDict(draw(st.dictionaries(KEYS, RECORDS, max_size=4)))
    honest = draw(st.sampled_from(HONEST_CONTENTS))
    content = RecordDict({key: type(record)(dict(record)) for key, record in honest.items()})
    if METRICS in content and draw(st.booleans()):
        content[METRICS] = MetricRecord({**content[METRICS], **draw(METRIC_RECORDS)})
    for key in draw(st.lists(st.sampled_from([*honest, "extra"]), max_size=2)):
        if draw(st.booleans()) and key in content:
            del content[key]
        else:
            content[key] = draw({ARRAYS: ARRAY_RECORDS, STATS: ARRAY_RECORDS, NODE: CONFIG_RECORDS}.get(key, RECORDS))
    return content


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(contents())
def test_any_content_is_a_report_or_a_one_line_protocol_error(content):
    """Whatever a node sends, each report's from_content returns a report or raises ProtocolError
    with a one-line reason (anything else fails the test), and claimed_identity never raises."""
    for parse in (TrainReport.from_content, EvaluateReport.from_content, StatsReport.from_content):
        try:
            parse(content)
        except ProtocolError as err:
            assert str(err) and "\n" not in str(err) and len(str(err)) < 400, str(err)
    claimed_identity(content)
