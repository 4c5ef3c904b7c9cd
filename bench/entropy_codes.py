"""Would lossless entropy coding shrink the quantized updates? (issue 16, leaner bytes)

For each qN codec, the packed codes of one update are measured as zk0 sends them (N bits
per value); compressed with zlib level 9 and with zstd levels 1 and 19 over the packed bytes,
and zstd level 1 over the codes unpacked to one byte each (so that a byte coder sees whole
codes); as the qNz codec sends them (zk0.wire.codec: zstd level 1 over the codes packed whole,
q3's as 4-bit fields); and at the order-0 entropy bound: sum over tensors of (values x Shannon
entropy of that tensor's code histogram) / 8, which no coder of independent codes can beat.
Scales (bf16, one per 128 values) are counted as sent in every column. Seconds are the
median of 3 zk0.wire.codec.encode / decode calls over the whole update, qN and qNz.

Updates measured:
- `tiny, trained`: a real client update of the tiny SmolVLA (40 AdamW steps, batch 8, lr 1e-3,
  on one demo dataset written with LeRobot's writer), as zk0.wire.transfer.upload encodes it for
  round 1 (its delta against the start, no error-feedback residual yet);
- `real shapes, gaussian` and `real shapes, student-t(3)`: random deltas of std 1e-3 at
  SmolVLA's real trainable shapes (the `smolvla-shape` preset; 99,880,992 values).

    .venv/bin/python bench/entropy_codes.py [--codecs q8,q4,q3,q2] [--skip-real]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[1]


def trained_tiny_update() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(start weights, weights after 40 local steps) of the tiny SmolVLA on one demo dataset."""
    from zk0.data.dataset import infinite_batches, open_node_data, open_split
    from zk0.tools.demo_data import DemoSpec, write_demo_federation
    from zk0.policy.model import get_trainable, load_policy, make_processors
    from zk0.policy.train import train_local
    from zk0.data.uri import parse_dataset_uri

    with tempfile.TemporaryDirectory() as tmp:
        [client, _] = write_demo_federation(Path(tmp), 1, DemoSpec())
        data = open_node_data(parse_dataset_uri(f"local:{client}"), action_dim=6, heldout_episodes=1)
        policy = load_policy("tiny", data.meta, "cpu")
        preprocessor, _ = make_processors(policy, data.stats)
        start = {name: value.copy() for name, value in get_trainable(policy).items()}
        batches = infinite_batches(open_split(data, data.train_episodes, policy.config), 8, 0, seed=0)
        train_local(policy, preprocessor, batches, steps=40, lr=1e-3, proximal_mu=0.0, desc="tiny")
        return start, {name: value.copy() for name, value in get_trainable(policy).items()}


def random_update(shapes: dict[str, tuple[int, ...]], heavy_tailed: bool) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    start = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    draw = (lambda shape: rng.standard_t(3, shape) * 1e-3 / np.sqrt(3.0)) if heavy_tailed \
        else (lambda shape: rng.normal(0, 1e-3, shape))
    return start, {name: draw(shape).astype(np.float32) for name, shape in shapes.items()}


def median_seconds(call, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def zstd_bytes(data: np.ndarray, level: int) -> int:
    return len(zstandard.ZstdCompressor(level=level).compress(data))


def measure(start: dict, local: dict, codec: str) -> dict:
    """Bytes of the codes as sent, byte-coded, as qNz and at the order-0 entropy bound (+ the scales);
    encode / decode seconds of qN and qNz."""
    from zk0.wire import transfer
    from zk0.wire.codec import ErrorFeedback, _unpack, decode, encode

    bits = int(codec[1:])
    update = transfer.upload(local, start, codec, ErrorFeedback())
    codes = {key: value for key, value in update.items() if key.endswith(f"@{codec}")}
    scales = sum(value.nbytes for key, value in update.items() if key.endswith(".scale"))
    r = {"codec": codec, "values": sum(v.size for v in local.values()),
         "sent": sum(value.nbytes for value in codes.values()),
         "zlib-9": sum(len(zlib.compress(value.tobytes(), 9)) for value in codes.values()),
         "zstd-1": sum(zstd_bytes(value, 1) for value in codes.values()),
         "zstd-19": sum(zstd_bytes(value, 19) for value in codes.values())}
    bound = 0.0
    r["zstd-1 unpacked"] = 0
    for value in codes.values():
        unpacked = _unpack(value, bits)
        r["zstd-1 unpacked"] += zstd_bytes(unpacked, 1)
        counts = np.bincount(unpacked, minlength=1 << bits)
        p = counts[counts > 0] / unpacked.size
        bound += unpacked.size * float(-(p * np.log2(p)).sum()) / 8
    del update, codes
    delta = {name: local[name] - start[name] for name in local}
    for name in (codec, codec + "z"):
        encoded = encode(delta, name)
        if name != codec:
            r[name] = sum(value.nbytes for key, value in encoded.items() if key.endswith(f"@{name}"))
        r[f"{name} encode s"] = median_seconds(partial(encode, delta, name))
        r[f"{name} decode s"] = median_seconds(partial(decode, encoded))
        del encoded
    r["bound"] = int(bound)
    r["bits_per_value_bound"] = 8 * bound / r["values"]
    for column in ("sent", "zlib-9", "zstd-1", "zstd-19", "zstd-1 unpacked", codec + "z", "bound"):
        r[column] += scales
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default="q8,q4,q3,q2")
    parser.add_argument("--skip-real", action="store_true", help="only the tiny trained update")
    args = parser.parse_args()
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    bad = [c for c in codecs if c not in ("q8", "q4", "q3", "q2")]
    if bad:
        parser.error(f"--codecs takes q8, q4, q3, q2; got {bad}")

    sources = {"tiny, trained": trained_tiny_update}
    if not args.skip_real:
        import sys

        sys.path.insert(0, str(ROOT / "bench"))
        from codec_table import real_shapes

        shapes = real_shapes("expert", 0)  # the rank is unused outside the lora modes
        sources["real shapes, gaussian"] = lambda: random_update(shapes, heavy_tailed=False)
        sources["real shapes, student-t(3)"] = lambda: random_update(shapes, heavy_tailed=True)

    print("| update | codec | values | sent B | zlib-9 packed | zstd-1 packed | zstd-19 packed | zstd-1 unpacked | "
          "qNz B | qNz saved | entropy bound B | bound saved | bound bits/value | encode s qN / qNz | decode s qN / qNz |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, make in sources.items():
        start, local = make()
        for codec in codecs:
            r = measure(start, local, codec)
            z = codec + "z"
            saved = {column: f"{1 - r[column] / r['sent']:.1%}" for column in
                     ("zlib-9", "zstd-1", "zstd-19", "zstd-1 unpacked", z, "bound")}
            print(f"| {label} | {codec} | {r['values']:,} | {r['sent']:,} | {saved['zlib-9']} | {saved['zstd-1']} | "
                  f"{saved['zstd-19']} | {saved['zstd-1 unpacked']} | {r[z]:,} | {saved[z]} | {r['bound']:,} | "
                  f"{saved['bound']} | {r['bits_per_value_bound']:.3f} | "
                  f"{r[codec + ' encode s']:.2f} / {r[z + ' encode s']:.2f} | "
                  f"{r[codec + ' decode s']:.2f} / {r[z + ' decode s']:.2f} |", flush=True)
        del start, local
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
