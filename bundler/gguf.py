"""Bounded, streaming GGUF header parser.

GGUF files are the unit the builder ships and the delta engine diffs, so we need their header
(metadata key-values and tensor table) without trusting the file and without the ``gguf``
package at runtime.

Invariants:

- Only the header is read: magic, version, counts, key-values, tensor infos, then we stop. The
  reader pulls the stream in :data:`READ_CHUNK` pieces, so at most one chunk past the header
  (the start of the tensor data) is ever buffered; tensor data is never loaded.
- Every length and count read from the file is checked against :class:`GGUFLimits` *before*
  anything is allocated or looped over, and the whole header is capped in bytes, so a hostile
  file ends in :class:`GGUFError`, never in ``MemoryError`` or a hang.
- Large arrays (the tokenizer vocabulary, merges, scores) are walked and skipped, not stored;
  :class:`ArraySummary` stands in for them in :attr:`GGUFHeader.metadata`.
- Only little-endian GGUF v2 and v3 are accepted (v1 used 32-bit lengths; big-endian files
  are refused with a clear message rather than misread).
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass
from math import prod
from typing import Any, BinaryIO

from edgebundle.errors import EdgebundleError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
READ_CHUNK = 64 * 1024
"""Bytes pulled from the stream at a time; bounds read-ahead into the tensor data."""
GGML_MAX_DIMS = 4
OBJECT_COST = 64
"""Approximate bytes a kept Python object costs beyond its payload; charged per kept item."""


class GGUFError(EdgebundleError):
    """The file is not a GGUF we can read safely (malformed, hostile, or unsupported)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint
            or "check that the file is a complete little-endian GGUF v2/v3 model "
            "(re-download or re-export it with llama.cpp's convert scripts)",
        )


@dataclass(frozen=True)
class GGUFLimits:
    """Ceilings on what a header may claim; generous for real models, small for attacks."""

    max_key_bytes: int = 64 * 1024
    max_string_bytes: int = 16 * 1024 * 1024
    max_array_length: int = 1 << 24
    max_array_depth: int = 8
    max_kv_count: int = 1 << 16
    max_tensor_count: int = 1 << 17
    max_tensor_name_bytes: int = 64 * 1024
    max_header_bytes: int = 256 * 1024 * 1024
    max_stored_bytes: int = 64 * 1024 * 1024
    """Budget for what is kept in memory: keys, names, strings and kept array elements, each
    charged its length plus :data:`OBJECT_COST`."""
    max_alignment: int = 1 << 20


DEFAULT_LIMITS = GGUFLimits()


# --- value types -------------------------------------------------------------------------

T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32 = range(7)
T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(7, 13)

VALUE_TYPE_NAMES: dict[int, str] = {
    T_UINT8: "UINT8", T_INT8: "INT8", T_UINT16: "UINT16", T_INT16: "INT16",
    T_UINT32: "UINT32", T_INT32: "INT32", T_FLOAT32: "FLOAT32", T_BOOL: "BOOL",
    T_STRING: "STRING", T_ARRAY: "ARRAY", T_UINT64: "UINT64", T_INT64: "INT64",
    T_FLOAT64: "FLOAT64",
}

_SCALARS: dict[int, struct.Struct] = {
    T_UINT8: struct.Struct("<B"), T_INT8: struct.Struct("<b"),
    T_UINT16: struct.Struct("<H"), T_INT16: struct.Struct("<h"),
    T_UINT32: struct.Struct("<I"), T_INT32: struct.Struct("<i"),
    T_FLOAT32: struct.Struct("<f"), T_BOOL: struct.Struct("<B"),
    T_UINT64: struct.Struct("<Q"), T_INT64: struct.Struct("<q"),
    T_FLOAT64: struct.Struct("<d"),
}
_U32 = _SCALARS[T_UINT32]
_U64 = _SCALARS[T_UINT64]


# --- ggml tensor types -------------------------------------------------------------------


@dataclass(frozen=True)
class GGMLType:
    """A ggml tensor element type: ``block_size`` elements are stored in ``type_size`` bytes."""

    id: int
    name: str
    block_size: int
    type_size: int

    @property
    def quantized(self) -> bool:
        return self.block_size > 1


def _types(*rows: tuple[int, str, int, int]) -> dict[int, GGMLType]:
    return {r[0]: GGMLType(*r) for r in rows}


# Sizes follow ggml-common.h (e.g. block_q8_1 is two fp16 plus 32 int8 = 36 bytes).
GGML_TYPES: dict[int, GGMLType] = _types(
    (0, "F32", 1, 4), (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18), (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22), (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34), (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84), (11, "Q3_K", 256, 110), (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176), (14, "Q6_K", 256, 210), (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66), (17, "IQ2_XS", 256, 74), (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50), (20, "IQ4_NL", 32, 18), (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82), (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1), (25, "I16", 1, 2), (26, "I32", 1, 4), (27, "I64", 1, 8),
    (28, "F64", 1, 8), (29, "IQ1_M", 256, 56), (30, "BF16", 1, 2),
    # Interleaved Q4_0 variants: removed from ggml but present in older files.
    (31, "Q4_0_4_4", 32, 18), (32, "Q4_0_4_8", 32, 18), (33, "Q4_0_8_8", 32, 18),
    (34, "TQ1_0", 256, 54), (35, "TQ2_0", 256, 66),
    (36, "IQ4_NL_4_4", 32, 18), (37, "IQ4_NL_4_8", 32, 18), (38, "IQ4_NL_8_8", 32, 18),
    (39, "MXFP4", 32, 17), (40, "NVFP4", 64, 36), (41, "Q1_0", 128, 18),
)

# general.file_type (llama_ftype) -> the name users know the file by.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_1_SOME_F16", 7: "Q8_0", 8: "Q5_0",
    9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS",
    21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S",
    27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0",
}


def ggml_type_name(type_id: int) -> str:
    """Name of a ggml type, or ``TYPE_<n>`` for ones this table does not know."""
    t = GGML_TYPES.get(type_id)
    return t.name if t else f"TYPE_{type_id}"


# --- result types ------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySummary:
    """Stands in for an array too large to keep: its element type and length."""

    type: str
    length: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor-table entry. ``offset`` is relative to :attr:`GGUFHeader.data_offset`.

    ``nbytes`` is ``None`` only for an unknown ggml type on the last tensor, where the size
    can only come from the file size (see :func:`tensor_ranges`).
    """

    name: str
    dims: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int | None

    @property
    def n_elements(self) -> int:
        return prod(self.dims)

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)


@dataclass(frozen=True)
class GGUFHeader:
    """Everything before the tensor data. ``header_bytes == data_offset`` (header + padding)."""

    version: int
    metadata: dict[str, Any]
    metadata_types: dict[str, str]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int

    @property
    def header_bytes(self) -> int:
        return self.data_offset

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)


# --- the reader --------------------------------------------------------------------------


class _Stream:
    """Buffered little-endian reads with a position and a hard byte budget."""

    def __init__(self, f: BinaryIO, budget: int) -> None:
        self._f = f
        self._buf = b""
        self._pos_in_buf = 0
        self.pos = 0
        self._budget = budget

    def _fill(self, need: int) -> None:
        """Make ``need`` bytes available at the cursor, reading at most ``READ_CHUNK`` extra."""
        have = len(self._buf) - self._pos_in_buf
        if have >= need:
            return
        if self.pos + need > self._budget:
            raise GGUFError(f"GGUF header is larger than the {self._budget}-byte limit")
        parts = [self._buf[self._pos_in_buf:]]
        while have < need:
            chunk = self._f.read(max(READ_CHUNK, need - have))
            if not chunk:
                raise GGUFError(f"GGUF header truncated at byte {self.pos + have}")
            parts.append(chunk)
            have += len(chunk)
        self._buf = b"".join(parts)
        self._pos_in_buf = 0

    def read(self, n: int) -> bytes:
        self._fill(n)
        start = self._pos_in_buf
        self._pos_in_buf += n
        self.pos += n
        return self._buf[start:self._pos_in_buf]

    def unpack(self, s: struct.Struct) -> Any:
        self._fill(s.size)
        (value,) = s.unpack_from(self._buf, self._pos_in_buf)
        self._pos_in_buf += s.size
        self.pos += s.size
        return value

    def skip(self, n: int) -> None:
        """Advance ``n`` bytes, discarding them chunk by chunk (works on unseekable streams)."""
        while n > 0:
            step = min(n, READ_CHUNK)
            self._fill(step)
            self._pos_in_buf += step
            self.pos += step
            n -= step


class _Parser:
    def __init__(self, f: BinaryIO, keep_arrays_up_to: int, limits: GGUFLimits) -> None:
        self.s = _Stream(f, limits.max_header_bytes)
        self.keep = keep_arrays_up_to
        self.limits = limits
        self.stored = 0

    def _charge(self, n: int) -> None:
        self.stored += n
        if self.stored > self.limits.max_stored_bytes:
            raise GGUFError(
                f"GGUF metadata kept in memory exceeds {self.limits.max_stored_bytes} bytes"
            )

    def string_length(self, limit: int, what: str) -> int:
        n: int = self.s.unpack(_U64)
        if n > limit:
            raise GGUFError(f"GGUF {what} claims {n} bytes (limit {limit}) at byte {self.s.pos}")
        return n

    def text(self, limit: int, what: str) -> str:
        raw = self.s.read(self.string_length(limit, what))
        self._charge(len(raw) + OBJECT_COST)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"GGUF {what} is not valid UTF-8 at byte {self.s.pos}") from e

    def value_type(self) -> int:
        t: int = self.s.unpack(_U32)
        if t not in VALUE_TYPE_NAMES:
            raise GGUFError(f"unknown GGUF value type {t} at byte {self.s.pos - 4}")
        return t

    def value(self, t: int, depth: int) -> Any:
        if t == T_STRING:
            raw = self.s.read(self.string_length(self.limits.max_string_bytes, "string value"))
            self._charge(len(raw) + OBJECT_COST)
            return raw.decode("utf-8", errors="replace")
        if t == T_ARRAY:
            return self.array(depth + 1)
        v = self.s.unpack(_SCALARS[t])
        return bool(v) if t == T_BOOL else v

    def skip_value(self, t: int, depth: int) -> None:
        if t == T_STRING:
            self.s.skip(self.string_length(self.limits.max_string_bytes, "string value"))
        elif t == T_ARRAY:
            sub, n = self.array_head(depth + 1)
            self.skip_elements(sub, n, depth + 1)
        else:
            self.s.skip(_SCALARS[t].size)

    def skip_elements(self, t: int, n: int, depth: int) -> None:
        if t in _SCALARS:
            self.s.skip(n * _SCALARS[t].size)
        else:
            for _ in range(n):
                self.skip_value(t, depth)

    def array_head(self, depth: int) -> tuple[int, int]:
        if depth > self.limits.max_array_depth:
            raise GGUFError(f"GGUF arrays nested deeper than {self.limits.max_array_depth}")
        sub = self.value_type()
        n: int = self.s.unpack(_U64)
        if n > self.limits.max_array_length:
            raise GGUFError(
                f"GGUF array claims {n} elements (limit {self.limits.max_array_length}) "
                f"at byte {self.s.pos}"
            )
        return sub, n

    def array(self, depth: int) -> list[Any] | ArraySummary:
        sub, n = self.array_head(depth)
        if n > self.keep:
            self.skip_elements(sub, n, depth)
            return ArraySummary(VALUE_TYPE_NAMES[sub], n)
        self._charge(n * OBJECT_COST)
        return [self.value(sub, depth) for _ in range(n)]

    def tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self.text(self.limits.max_tensor_name_bytes, "tensor name")
        n_dims: int = self.s.unpack(_U32)
        if n_dims > GGML_MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions (ggml allows {GGML_MAX_DIMS})")
        dims = tuple(self.s.unpack(_U64) for _ in range(n_dims))
        if prod(dims) >= 1 << 62:
            raise GGUFError(f"tensor {name!r} claims an absurd element count {dims}")
        ggml_type: int = self.s.unpack(_U32)
        offset: int = self.s.unpack(_U64)
        return name, dims, ggml_type, offset


def _tensor_nbytes(name: str, dims: tuple[int, ...], type_id: int) -> int | None:
    t = GGML_TYPES.get(type_id)
    if t is None:
        return None
    row = dims[0] if dims else 1
    if row % t.block_size:
        raise GGUFError(
            f"tensor {name!r}: first dimension {row} is not a multiple of the "
            f"{t.name} block size {t.block_size}"
        )
    return prod(dims) // t.block_size * t.type_size


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def read_gguf_header(
    f: BinaryIO, *, keep_arrays_up_to: int = 64, limits: GGUFLimits = DEFAULT_LIMITS
) -> GGUFHeader:
    """Parse the GGUF header from ``f`` (positioned at the file start) without tensor data.

    Arrays longer than ``keep_arrays_up_to`` are skipped and summarised as
    :class:`ArraySummary`. Raises :class:`GGUFError` for anything malformed or over ``limits``.
    """
    p = _Parser(f, keep_arrays_up_to, limits)
    s = p.s
    magic = s.read(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    version: int = s.unpack(_U32)
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS or swapped == 1:
            raise GGUFError(
                f"big-endian GGUF (v{swapped}) is not supported",
                "use the little-endian export of this model",
            )
        raise GGUFError(
            f"unsupported GGUF version {version} (supported: {SUPPORTED_VERSIONS})",
            "re-export the model with a current llama.cpp (GGUF v3)",
        )
    tensor_count: int = s.unpack(_U64)
    kv_count: int = s.unpack(_U64)
    if tensor_count > limits.max_tensor_count:
        raise GGUFError(f"GGUF claims {tensor_count} tensors (limit {limits.max_tensor_count})")
    if kv_count > limits.max_kv_count:
        raise GGUFError(f"GGUF claims {kv_count} metadata entries (limit {limits.max_kv_count})")

    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for _ in range(kv_count):
        key = p.text(limits.max_key_bytes, "metadata key")
        if key in metadata:
            raise GGUFError(f"duplicate GGUF metadata key {key!r}")
        t = p.value_type()
        metadata[key] = p.value(t, 0)
        types[key] = VALUE_TYPE_NAMES[t]

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if "general.alignment" in metadata and (
        types["general.alignment"] != "UINT32"
        or alignment <= 0
        or alignment & (alignment - 1)
        or alignment > limits.max_alignment
    ):
        raise GGUFError(f"invalid general.alignment {alignment!r} (must be a power-of-two UINT32)")

    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        info = p.tensor_info()
        if info[0] in names:
            raise GGUFError(f"duplicate tensor name {info[0]!r}")
        if info[3] % alignment:
            raise GGUFError(f"tensor {info[0]!r} offset {info[3]} is not {alignment}-aligned")
        names.add(info[0])
        raw.append(info)
    data_offset = _align(s.pos, alignment)

    # Sizes of unknown types come from the next tensor's offset (the table need not be sorted).
    by_offset = sorted({r[3] for r in raw})
    next_offset = dict(zip(by_offset, by_offset[1:], strict=False))
    tensors = []
    for name, dims, type_id, offset in raw:
        nbytes = _tensor_nbytes(name, dims, type_id)
        if nbytes is None and offset in next_offset:
            nbytes = next_offset[offset] - offset
        tensors.append(TensorInfo(name, dims, type_id, offset, nbytes))
    return GGUFHeader(version, metadata, types, tensors, alignment, data_offset)


def read_gguf_file(path: str | os.PathLike[str], **kwargs: Any) -> GGUFHeader:
    """Convenience: open ``path`` and parse its header."""
    with open(path, "rb") as f:
        return read_gguf_header(f, **kwargs)


def tensor_ranges(header: GGUFHeader, file_size: int) -> list[tuple[str, int, int]]:
    """Absolute ``(name, start, end)`` byte ranges of each tensor's data, sorted by start.

    Raises :class:`GGUFError` when ranges overlap or run past ``file_size``: a delta computed
    against such a table would be wrong.
    """
    out: list[tuple[str, int, int]] = []
    ordered = sorted(header.tensors, key=lambda t: (t.offset, t.name))
    for t in ordered:
        start = header.data_offset + t.offset
        nbytes = t.nbytes if t.nbytes is not None else file_size - start
        end = start + nbytes
        if end > file_size or nbytes < 0:
            raise GGUFError(
                f"tensor {t.name!r} data [{start}, {end}) runs past the end of the file "
                f"({file_size} bytes)",
                "the file is truncated; fetch it again",
            )
        if out and start < out[-1][2]:
            raise GGUFError(f"tensor {t.name!r} overlaps tensor {out[-1][0]!r}")
        out.append((t.name, start, end))
    return out


def quantization_name(header: GGUFHeader) -> str | None:
    """The quantization users know the file by: ``general.file_type``, else the dominant type."""
    ft = header.metadata.get("general.file_type")
    if isinstance(ft, int) and ft in FILE_TYPES:
        return FILE_TYPES[ft]
    weights: Counter[int] = Counter()
    for t in header.tensors:
        weights[t.ggml_type] += t.n_elements
    if not weights:
        return None
    return ggml_type_name(weights.most_common(1)[0][0])


def summarize(header: GGUFHeader) -> dict[str, Any]:
    """The facts a bundle records about a GGUF model, as a flat JSON-able dict."""
    md = header.metadata
    arch = md.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def arch_int(key: str) -> int | None:
        v = md.get(f"{arch}.{key}") if arch else None
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def text(key: str) -> str | None:
        v = md.get(key)
        return v if isinstance(v, str) else None

    ft = md.get("general.file_type")
    return {
        "version": header.version,
        "architecture": arch,
        "name": text("general.name"),
        "quantization": quantization_name(header),
        "file_type": ft if isinstance(ft, int) else None,
        "parameter_count": header.parameter_count,
        "size_label": text("general.size_label"),
        "context_length": arch_int("context_length"),
        "embedding_length": arch_int("embedding_length"),
        "block_count": arch_int("block_count"),
        "tokenizer_model": text("tokenizer.ggml.model"),
        "tensor_count": len(header.tensors),
        "alignment": header.alignment,
        "data_offset": header.data_offset,
    }
