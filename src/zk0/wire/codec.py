"""Compact encodings of parameter tensors for Flower messages.

`encode` turns named float tensors into named numpy arrays that an `ArrayRecord` carries
as they are; `decode` turns them back. Every key names its own encoding, so a message
needs no side channel:

    name             float32, original shape                     codec "fp32"
    name@bf16        uint16 bits of bfloat16, original shape      codec "bf16"
    name@qN          uint8, the N-bit codes packed densely         codec "qN", N in 8, 4, 3, 2
                     (N bytes per group of 8 values)
    name@qN.scale    uint16 bits of bfloat16, one scale per block
    name@qN.shape    int64, the tensor's shape (empty for a 0-d tensor)
    name@qNz         uint8, one zstd frame of the qN codes             codec "qNz", N in 8, 4, 3, 2
    name@qNz.scale   as name@qN.scale
    name@qNz.shape   as name@qN.shape
    name@topK        uint16 bits of bfloat16, the kept values        codec "topK", K in 16, 64
    name@topK.index  uint32, their flat positions, strictly increasing
    name@topK.shape  int64, the tensor's shape

fp32 and bf16 carry whole tensors; qN and qNz are meant for deltas (what the codec quantizes is up
to the caller). qN is symmetric, per block of BLOCK consecutive values of the flattened
tensor: scale = block absmax / (2^(N-1) - 1), code = round-to-nearest(value / scale),
stored as code + 2^(N-1) - 1 in N bits. Value j of each group of 8 codes sits at bits
N*j .. N*j+N-1 of the group's little-endian N-byte word.

qNz is qN made smaller without loss: the same codes and scales, the codes entropy-coded by
zstd (level 1), and it decodes to exactly what qN decodes to. The frame holds the codes packed
as qN packs them, except q3's, which it holds as 4-bit fields (two codes per byte, code 2k in
the low half): zstd's byte-wise Huffman stage then sees whole codes (pairs of them) instead of
3-bit codes straddling bytes. The frame must declare its content size, which must be what the
tensor's shape implies, so a hostile frame cannot make decode allocate more.

topK is sparsification: per tensor, the ceil(size / K) values of largest magnitude (their
positions and bf16 values, 6 bytes each: 1/16 of the values cost about what q3 costs, 1/64 a
quarter of it); the rest decodes as zero. Meant with ErrorFeedback, which carries what was
left out into the next message (Deep Gradient Compression's recipe).

Why these choices (relative L2 error of q4 on 3M-value deltas, gaussian / student-t(3)):
- BLOCK = 128: 0.118 / 0.225 at 4.125 bits per value. Block 64 gives 0.108 / 0.181 but
  costs 1/8 bit more (a real-size q4 round trip would exceed 100 MiB); block 256 saves
  1/16 bit for 0.127 / 0.275.
- bfloat16 scales, rounded up: float16 scales lose precision below 6e-5 and underflow
  below 6e-8 (q8 of a delta of std 1e-6 came back with 99% error); float32 scales double
  the scale overhead for 0.3% less error. Rounding the scale up (at most 2^-7 relative)
  keeps every code in range, so nothing is clipped and each value's error is <= scale/2.
- Round to nearest, not stochastic rounding: messages are deterministic, and
  ErrorFeedback carries the rounding error into the next message instead.
- zstd level 1 for qNz (bench/README.md, entropy_codes.py): on q3 codes of gaussian deltas it
  gets within 1 point of the order-0 entropy bound (q3z: 25 % fewer bytes than q3), 0.1 s each
  way for a real-size update; level 19 spends 100x the time for +-3 points, levels 3-12 lose
  (LZ matches in noise). On q3's packed bytes zstd gets only 9 %: 3-bit codes straddle bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import zstandard

CODECS = ("fp32", "bf16", "q8", "q4", "q3", "q2", "q8z", "q4z", "q3z", "q2z", "top16", "top64")
BLOCK = 128
MAX_DIMS = 8
ZSTD_LEVEL = 1

_QUANTIZED = {f"q{bits}{z}": bits for bits in (8, 4, 3, 2) for z in ("", "z")}
_SPARSE = {"top16": 16, "top64": 64}  # codec -> one value kept per K
# Codecs whose messages carry a delta, with the tensor's shape in a `.shape` part.
DELTA_CODECS = frozenset(_QUANTIZED) | frozenset(_SPARSE)
# Bits per code inside a qNz frame: whole codes per byte for zstd's Huffman stage.
_FRAME_BITS = {8: 8, 4: 4, 3: 4, 2: 2}
# Packed words are little-endian on every host so that messages move between machines.
_WORD = {True: np.dtype("<u4"), False: np.dtype("<u8")}


class CodecError(ValueError):
    """Input that cannot be encoded, or arrays that are not a valid encoding."""


# ---------------------------------------------------------------- bfloat16 bits


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (as torch does; NaN -> 0x7FC0)."""
    x = x.reshape(-1)
    bits = x.view(np.uint32)
    word = bits >> 16
    word &= 1
    word += 0x7FFF
    word += bits
    word >>= 16
    out = word.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def _bf16_values(bits: np.ndarray) -> np.ndarray:
    word = bits.reshape(-1).astype(np.uint32)
    word <<= 16
    return word.view(np.float32).reshape(bits.shape)


# ---------------------------------------------------------------- bit packing


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes (length a multiple of 8, each < 2^bits) -> bits/8 bytes per code."""
    if bits == 8:
        return codes
    word_type = _WORD[bits <= 4]
    groups = codes.size // 8
    word = np.zeros(groups, word_type)
    shifted = np.empty(groups, word_type)
    for j in range(8):
        np.left_shift(codes[j::8], word_type.type(bits * j), out=shifted, dtype=word_type)
        word |= shifted
    return word.view(np.uint8).reshape(groups, word_type.itemsize)[:, :bits].reshape(-1)


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    word_type = _WORD[bits <= 4]
    groups = packed.size // bits
    padded = np.zeros((groups, word_type.itemsize), np.uint8)
    padded[:, :bits] = packed.reshape(groups, bits)
    word = padded.view(word_type).reshape(-1)
    codes = np.empty(groups * 8, np.uint8)
    field = np.empty(groups, word_type)
    mask = word_type.type((1 << bits) - 1)
    for j in range(8):
        np.right_shift(word, word_type.type(bits * j), out=field)
        field &= mask
        codes[j::8] = field
    return codes


# ---------------------------------------------------------------- one tensor


def _blocks(flat: np.ndarray) -> np.ndarray:
    """The flat tensor as (blocks, BLOCK), zero-padded at the end when needed."""
    n_blocks = -(-flat.size // BLOCK)
    if flat.size == n_blocks * BLOCK:
        return flat.reshape(n_blocks, BLOCK)
    padded = np.zeros((n_blocks, BLOCK), np.float32)
    padded.reshape(-1)[: flat.size] = flat
    return padded


def _quantize(name: str, x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 tensor -> (codes, one uint8 each, padded to a multiple of 8; bf16 scale bits)."""
    qmax = (1 << (bits - 1)) - 1
    blocks = _blocks(x.reshape(-1))
    if blocks.size == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.uint16)
    # Two reductions instead of np.abs(blocks): no full-size temporary. abs() turns -0.0 into 0.0.
    absmax = np.abs(np.maximum(blocks.max(axis=1), -blocks.min(axis=1)))
    if not np.isfinite(absmax).all():
        raise CodecError(f"tensor '{name}' holds inf or NaN: only finite values can be quantized")
    scale = absmax / np.float32(qmax)
    scale_bits = ((scale.view(np.uint32) + 0xFFFF) >> 16).astype(np.uint16)  # round up to bfloat16
    if (scale_bits >= 0x7F80).any():
        raise CodecError(f"tensor '{name}' holds values near the float32 limit: send it as fp32")
    scale = _bf16_values(scale_bits)
    q = np.divide(blocks, np.where(scale > 0, scale, np.float32(1))[:, None])
    np.rint(q, out=q)
    codes = q.astype(np.int8).view(np.uint8)
    codes += np.uint8(qmax)
    return codes.reshape(-1)[: _padded8(x.size)], scale_bits


def _dequantize(codes: np.ndarray, scale_bits: np.ndarray, shape: tuple[int, ...], bits: int) -> np.ndarray:
    qmax = (1 << (bits - 1)) - 1
    size = math.prod(shape)
    values = np.zeros(scale_bits.size * BLOCK, np.float32)
    np.subtract(codes, np.float32(qmax), out=values[: codes.size], dtype=np.float32)
    values.reshape(scale_bits.size, BLOCK)[...] *= _bf16_values(scale_bits)[:, None]
    return values[:size].reshape(shape)


def _padded8(size: int) -> int:
    return -(-size // 8) * 8


def _encode_parts(name: str, x: np.ndarray, codec: str) -> dict[str, np.ndarray]:
    """One float32 tensor -> its arrays by part ("" is the data, then "scale", "shape")."""
    if codec == "fp32":
        return {"": x}
    if codec == "bf16":
        return {"": _bf16_bits(x).reshape(x.shape)}
    if codec in _SPARSE:
        return _sparsify(name, x, _SPARSE[codec])
    bits = _QUANTIZED[codec]
    codes, scales = _quantize(name, x, bits)
    data = _zstd_frame(_pack(codes, _FRAME_BITS[bits])) if codec.endswith("z") else _pack(codes, bits)
    return {"": data, "scale": scales, "shape": np.array(x.shape, np.int64)}


def _kept(size: int, every: int) -> int:
    return -(-size // every)


def _sparsify(name: str, x: np.ndarray, every: int) -> dict[str, np.ndarray]:
    flat = x.reshape(-1)
    if not np.isfinite(flat).all():
        raise CodecError(f"tensor '{name}' holds inf or NaN: only finite values can be sparsified")
    k = _kept(flat.size, every)
    index = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:]) if k else np.zeros(0, np.int64)
    return {"": _bf16_bits(flat[index]), "index": index.astype(np.uint32), "shape": np.array(x.shape, np.int64)}


def _densify(key: str, values: np.ndarray, index: np.ndarray, shape: tuple[int, ...], every: int) -> np.ndarray:
    size = math.prod(shape)
    k = _kept(size, every)
    if values.size != k or index.size != k:
        raise CodecError(f"'{key}': shape {shape} keeps {k} values, got {values.size} values and {index.size} positions")
    if k and (int(index[-1]) >= size or (k > 1 and (np.diff(index.astype(np.int64)) <= 0).any())):
        raise CodecError(f"'{key}.index' must hold increasing positions below {size}")
    if ((values & 0x7F80) == 0x7F80).any():
        raise CodecError(f"'{key}' holds infinite or NaN values")
    out = np.zeros(size, np.float32)
    out[index] = _bf16_values(values)
    return out.reshape(shape)


def _zstd_frame(data: np.ndarray) -> np.ndarray:
    frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)
    return np.frombuffer(frame, np.uint8)


def _zstd_content(key: str, frame: np.ndarray, size: int) -> np.ndarray:
    """The `size` bytes a qNz frame holds. Everything is checked before anything is allocated:
    the frame header must declare exactly `size`, and the frame must end where the array does."""
    frame = np.ascontiguousarray(frame)
    try:
        declared = zstandard.get_frame_parameters(frame).content_size
    except zstandard.ZstdError as err:
        raise CodecError(f"'{key}' is not a zstd frame ({err})") from None
    if declared != size:
        said = "no content size" if declared == zstandard.CONTENTSIZE_UNKNOWN else f"{declared} bytes"
        raise CodecError(f"'{key}': the zstd frame declares {said}, its shape needs {size} bytes")
    try:
        content = zstandard.ZstdDecompressor().decompress(frame, max_output_size=size, allow_extra_data=False)
    except zstandard.ZstdError as err:
        raise CodecError(f"'{key}' is a corrupt zstd frame ({err})") from None
    if len(content) != size:  # zstd checks the declared size; this keeps the promise local
        raise CodecError(f"'{key}': the zstd frame holds {len(content)} bytes, its shape needs {size}")
    return np.frombuffer(content, np.uint8)


def _key(name: str, codec: str, part: str) -> str:
    if codec == "fp32":
        return name
    return f"{name}@{codec}.{part}" if part else f"{name}@{codec}"


def _decode_parts(name: str, codec: str, parts: dict[str, np.ndarray]) -> np.ndarray:
    key = _key(name, codec, "")
    expected = {""} if codec in ("fp32", "bf16") else {"", "index", "shape"} if codec in _SPARSE else {"", "scale", "shape"}
    unknown, missing = sorted(parts.keys() - expected), sorted(expected - parts.keys())
    if unknown:
        raise CodecError(f"unknown key '{_key(name, codec, unknown[0])}': a {codec} tensor has no '.{unknown[0]}' part")
    if missing:
        needed = ", ".join(repr(_key(name, codec, part)) for part in sorted(expected))
        raise CodecError(f"'{_key(name, codec, missing[0])}' is missing: a {codec} tensor needs {needed}")
    data = parts[""]
    if codec == "fp32":
        _require_dtype(key, data, np.float32)
        return data
    if codec == "bf16":
        _require_dtype(key, data, np.uint16)
        return _bf16_values(data)
    if codec in _SPARSE:
        return _decode_sparse(key, codec, parts)
    bits = _QUANTIZED[codec]
    scale, shape = parts["scale"], parts["shape"]
    _require_dtype(key, data, np.uint8)
    _require_dtype(f"{key}.scale", scale, np.uint16)
    _require_dtype(f"{key}.shape", shape, np.int64)
    if data.ndim != 1 or scale.ndim != 1 or shape.ndim != 1:
        raise CodecError(f"'{key}': codes, scale and shape must be 1-d arrays")
    _check_shape(key, shape)
    size = math.prod(shape.tolist())  # Python ints: a hostile shape cannot overflow
    want_codes, want_scales = _padded8(size) * bits // 8, -(-size // BLOCK)
    if codec.endswith("z"):  # a frame's size says little: its declared content size is checked below
        if scale.size != want_scales:
            raise CodecError(f"'{key}': shape {tuple(shape.tolist())} needs {want_scales} scales, got {scale.size}")
    elif data.size != want_codes or scale.size != want_scales:
        raise CodecError(
            f"'{key}': shape {tuple(shape.tolist())} needs {want_codes} code bytes and {want_scales} scales, "
            f"got {data.size} and {scale.size}"
        )
    if (scale >= 0x7F80).any():
        raise CodecError(f"'{key}.scale' holds negative, infinite or NaN scales")
    if codec.endswith("z"):
        frame_bits = _FRAME_BITS[bits]
        codes = _unpack(_zstd_content(key, data, _padded8(size) * frame_bits // 8), frame_bits)
        if frame_bits != bits and codes.size and codes.max() >= 1 << bits:
            raise CodecError(f"'{key}' holds codes out of range: a {codec} code has {bits} bits")
    else:
        codes = _unpack(data, bits)
    return _dequantize(codes, scale, tuple(shape.tolist()), bits)


def _decode_sparse(key: str, codec: str, parts: dict[str, np.ndarray]) -> np.ndarray:
    values, index, shape = parts[""], parts["index"], parts["shape"]
    _require_dtype(key, values, np.uint16)
    _require_dtype(f"{key}.index", index, np.uint32)
    _require_dtype(f"{key}.shape", shape, np.int64)
    if values.ndim != 1 or index.ndim != 1 or shape.ndim != 1:
        raise CodecError(f"'{key}': values, index and shape must be 1-d arrays")
    _check_shape(key, shape)
    return _densify(key, values, index, tuple(shape.tolist()), _SPARSE[codec])


def _check_shape(key: str, shape: np.ndarray) -> None:
    if shape.size > MAX_DIMS or (shape < 0).any():
        raise CodecError(f"'{key}.shape' is not a tensor shape: {shape.tolist()[:MAX_DIMS + 1]}")


def _require_dtype(key: str, array: np.ndarray, dtype) -> None:
    if array.dtype != dtype:
        raise CodecError(f"'{key}' is {array.dtype}, expected {np.dtype(dtype)}")


def _as_float32(name: object, value) -> np.ndarray:
    if not isinstance(name, str) or not name or "@" in name:
        raise CodecError(f"tensor name {name!r} cannot be encoded: names must be non-empty strings without '@'")
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise CodecError(f"tensor '{name}' is {array.dtype}: only floating-point tensors can be encoded")
    return np.asarray(array, dtype=np.float32, order="C")


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")


# ---------------------------------------------------------------- public API


def encode(tensors: Mapping[str, np.ndarray], codec: str) -> dict[str, np.ndarray]:
    """Named float tensors -> named numpy arrays for an ArrayRecord (fp32 output may share memory with the input)."""
    _check_codec(codec)
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        for part, array in _encode_parts(name, _as_float32(name, value), codec).items():
            out[_key(name, codec, part)] = array
    return out


def decode(arrays: Mapping[str, np.ndarray], expect: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """The arrays of `encode` (codecs may differ between tensors) -> float32 tensors by original name.

    With `expect` (name -> shape), the tensor names and the shapes the arrays declare are
    checked against it before anything is decoded: what a peer sends cannot make this
    allocate more than the expected tensors. fp32 tensors come back as the arrays given (no copy)."""
    return dict(decode_each(arrays, expect))


def decode_each(arrays: Mapping[str, np.ndarray],
                expect: Mapping[str, tuple[int, ...]] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """`decode`, one tensor at a time (the caller may drop each before the next is decoded).
    Names and declared shapes are all checked before the first tensor comes."""
    grouped: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for key, value in arrays.items():
        name, codec, part = _parse_key(key)
        by_codec = grouped.setdefault(name, {})
        by_codec.setdefault(codec, {})[part] = np.asarray(value)
        if len(by_codec) > 1:
            raise CodecError(f"tensor '{name}' arrives in two codecs ({' and '.join(by_codec)}): send each tensor once")
    if expect is not None:
        _check_expected(grouped, expect)
    for name, by_codec in grouped.items():
        yield name, _decode_parts(name, *next(iter(by_codec.items())))


def _check_expected(grouped: dict[str, dict[str, dict[str, np.ndarray]]], expect: Mapping[str, tuple[int, ...]]) -> None:
    missing = [name for name in expect if name not in grouped]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CodecError(f"missing tensor '{missing[0]}'{more}")
    unexpected = [name for name in grouped if name not in expect]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CodecError(f"unexpected tensor '{unexpected[0][:100]}'{more}")
    for name, by_codec in grouped.items():
        codec, parts = next(iter(by_codec.items()))
        declared = parts.get("shape") if codec in DELTA_CODECS else parts.get("")
        if declared is None:
            continue  # _decode_parts names the missing part
        if codec in DELTA_CODECS:
            if declared.dtype != np.int64 or declared.ndim != 1 or declared.size > MAX_DIMS:
                raise CodecError(f"'{_key(name, codec, 'shape')}' is not a tensor shape")
            declared_shape = tuple(declared.tolist())
        else:
            declared_shape = tuple(declared.shape)
        if declared_shape != tuple(expect[name]):
            raise CodecError(f"tensor '{name}' has shape {declared_shape}, expected {tuple(expect[name])}")


def _parse_key(key: object) -> tuple[str, str, str]:
    if not isinstance(key, str) or not key:
        raise CodecError(f"array key {key!r} is not a tensor name")
    name, at, tag = key.partition("@")
    if not at:
        return name, "fp32", ""
    codec, _, part = tag.partition(".")
    if not name or (codec not in DELTA_CODECS and codec != "bf16"):
        raise CodecError(f"array key '{key}' has an unknown suffix: expected name, name@bf16, "
                         f"name@qN[z][.scale|.shape] or name@topK[.index|.shape]")
    return name, codec, part


class ErrorFeedback:
    """Error feedback for lossy codecs: what one message could not carry is added to the next.

    `compress(delta, codec)` encodes delta + residual and keeps the new residual
    (delta + residual) - decode(message), so the sum of decoded messages stays within
    one message's error of the sum of true deltas. Tensors sent as fp32 leave no residual.
    A compress call that raises leaves the residual as it was.
    """

    def __init__(self) -> None:
        self._residual: dict[str, np.ndarray] = {}

    @property
    def residual(self) -> dict[str, np.ndarray]:
        """The current leftovers by tensor name (float32; absent means zero). Do not modify the arrays."""
        return dict(self._residual)

    def compress(self, delta: Mapping[str, np.ndarray], codec: str) -> dict[str, np.ndarray]:
        _check_codec(codec)
        out: dict[str, np.ndarray] = {}
        residuals = dict(self._residual)
        for name, value in delta.items():
            target = _as_float32(name, value)
            residual = self._residual.get(name)
            if residual is not None:
                if residual.shape != target.shape:
                    raise CodecError(
                        f"tensor '{name}' has shape {target.shape} but its residual has {residual.shape}: "
                        f"reset the error feedback state when the model changes"
                    )
                target = target + residual
            parts = _encode_parts(name, target, codec)
            for part, array in parts.items():
                out[_key(name, codec, part)] = array
            if codec == "fp32":
                residuals.pop(name, None)
            elif residual is None:
                residuals[name] = target - _decode_parts(name, codec, parts)
            else:
                target -= _decode_parts(name, codec, parts)  # target is our own sum here
                residuals[name] = target
        self._residual = residuals
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """The residual as plain arrays (e.g. for safetensors); shares memory with this object."""
        return dict(self._residual)

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the residual with a float32 copy of `state`."""
        self._residual = {name: _as_float32(name, value).copy() for name, value in state.items()}
