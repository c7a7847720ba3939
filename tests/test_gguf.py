"""GGUF header parser: the real SmolLM2 file, generated files of every type, hostile files."""

from __future__ import annotations

import io
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import gguf as gguf_pkg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebundle.errors import EdgebundleError
from bundler.gguf import (
    GGML_TYPES,
    READ_CHUNK,
    ArraySummary,
    GGUFError,
    GGUFLimits,
    read_gguf_file,
    read_gguf_header,
    summarize,
    tensor_ranges,
)
from tests.fixtures.models import make_gguf, minilm_dir, smollm2_gguf, write_gguf  # noqa: F401

SMOLLM2_PARAMS = 134_515_008  # sum of tensor element counts, cross-checked with gguf.GGUFReader


class CountingReader(io.RawIOBase):
    """A read-only, unseekable stream that records how many bytes were pulled from it."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._f.read(n)
        self.bytes_read += len(data)
        return data


# --- hand-built GGUF bytes, for the files no well-behaved writer produces ---------------------


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(v: str | bytes) -> bytes:
    raw = v.encode() if isinstance(v, str) else v
    return u64(len(raw)) + raw


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + u32(4) + u32(value)


def tinfo(name: str, dims: tuple[int, ...], ggml_type: int, offset: int) -> bytes:
    return gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ggml_type) + u64(offset)


def gguf_bytes(kvs: list[bytes], tensors: list[bytes], *, version: int = 3, data: bytes = b"") -> bytes:
    head = b"GGUF" + u32(version) + u64(len(tensors)) + u64(len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % 32) + data


def parse(raw: bytes, **kw: Any) -> Any:
    return read_gguf_header(io.BytesIO(raw), **kw)


# --- the real model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_header(smollm2_gguf: Path) -> Any:
    return read_gguf_file(str(smollm2_gguf))


def test_smollm2_summary(smol_header: Any) -> None:
    s = summarize(smol_header)
    assert s["version"] == 3
    assert s["architecture"] == "llama"
    assert s["quantization"] == "Q4_1"
    assert s["file_type"] == 3
    assert s["context_length"] == 8192
    assert s["embedding_length"] == 576
    assert s["block_count"] == 30
    assert s["tokenizer_model"] == "gpt2"
    assert s["size_label"] == "135M"
    assert s["tensor_count"] == 272
    assert 130_000_000 < s["parameter_count"] < 140_000_000
    assert s["parameter_count"] == SMOLLM2_PARAMS


def test_smollm2_big_arrays_are_summarised(smol_header: Any) -> None:
    md = smol_header.metadata
    assert md["tokenizer.ggml.tokens"] == ArraySummary("STRING", 49152)
    assert md["tokenizer.ggml.merges"] == ArraySummary("STRING", 48900)
    assert md["tokenizer.ggml.token_type"] == ArraySummary("INT32", 49152)
    assert md["general.languages"] == ["en"]
    assert md["tokenizer.chat_template"].startswith("{% for message in messages %}")


def test_smollm2_tensor_ranges(smol_header: Any, smollm2_gguf: Path) -> None:
    size = smollm2_gguf.stat().st_size
    ranges = tensor_ranges(smol_header, size)
    assert len(ranges) == 272
    assert ranges[0][1] == smol_header.data_offset
    for (_, _, end), (_, start, _) in zip(ranges, ranges[1:], strict=False):
        assert end <= start < end + smol_header.alignment
    assert ranges[-1][2] == size
    types = {t.type_name for t in smol_header.tensors}
    assert types == {"Q4_1", "F32", "Q8_0"}


def test_smollm2_matches_reference_reader(smol_header: Any, smollm2_gguf: Path) -> None:
    ref = gguf_pkg.GGUFReader(str(smollm2_gguf))
    assert smol_header.data_offset == ref.data_offset
    ours = {t.name: (smol_header.data_offset + t.offset, t.nbytes, t.ggml_type) for t in smol_header.tensors}
    theirs = {t.name: (int(t.data_offset), int(t.n_bytes), int(t.tensor_type)) for t in ref.tensors}
    assert ours == theirs


def test_parsing_reads_only_the_header(smollm2_gguf: Path, smol_header: Any) -> None:
    with open(smollm2_gguf, "rb", buffering=0) as raw:
        counting = CountingReader(raw)
        tracemalloc.start()
        try:
            header = read_gguf_header(counting)  # type: ignore[arg-type]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert header.data_offset == smol_header.data_offset
    assert counting.bytes_read <= header.data_offset + READ_CHUNK
    assert counting.bytes_read < smollm2_gguf.stat().st_size // 20
    assert peak < 4 * 1024 * 1024


# --- generated files --------------------------------------------------------------------------


def test_ggml_type_table_matches_gguf_package() -> None:
    for qtype, (block, size) in gguf_pkg.GGML_QUANT_SIZES.items():
        if qtype.name == "Q8_1":  # ggml-common.h: 2 x fp16 + 32 = 36; gguf-py still says 40
            assert (GGML_TYPES[qtype.value].block_size, GGML_TYPES[qtype.value].type_size) == (32, 36)
            continue
        ours = GGML_TYPES[qtype.value]
        assert (ours.name, ours.block_size, ours.type_size) == (qtype.name, block, size)


def test_generated_file_of_many_types(make_gguf: Any) -> None:
    path = make_gguf(n_tensors=12, vocab_size=300)
    header = read_gguf_file(str(path))
    ref = gguf_pkg.GGUFReader(str(path))
    ours = [(t.name, header.data_offset + t.offset, t.nbytes) for t in header.tensors]
    assert ours == [(t.name, int(t.data_offset), int(t.n_bytes)) for t in ref.tensors]
    assert {t.type_name for t in header.tensors} == {"F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "BF16"}
    ranges = tensor_ranges(header, path.stat().st_size)
    assert ranges[-1][2] == path.stat().st_size
    assert header.metadata["tokenizer.ggml.tokens"] == ArraySummary("STRING", 300)
    s = summarize(header)
    assert s["quantization"] == "Q8_0"  # general.file_type 7
    assert s["parameter_count"] == 12 * 16 * 256
    assert s["context_length"] == 2048


def test_all_value_types_round_trip(make_gguf: Any) -> None:
    V = gguf_pkg.GGUFValueType
    meta = {
        "t.u8": (200, V.UINT8), "t.i8": (-100, V.INT8), "t.u16": (60000, V.UINT16),
        "t.i16": (-30000, V.INT16), "t.u32": (4_000_000_000, V.UINT32), "t.i32": (-2_000_000_000, V.INT32),
        "t.f32": (0.5, V.FLOAT32), "t.bool": (True, V.BOOL), "t.str": ("héllo", V.STRING),
        "t.u64": (2**63 + 5, V.UINT64), "t.i64": (-(2**62), V.INT64), "t.f64": (1e300, V.FLOAT64),
        "t.ints": [1, 2, 3], "t.strs": ["a", "bc"], "t.nested": [[1, 2], [3]],
        "t.nested_strs": [["x"], ["y", "z"]], "t.big": list(range(65)),
    }
    header = read_gguf_file(str(make_gguf(metadata=meta)))
    md = header.metadata
    for key, value in meta.items():
        expected = value[0] if isinstance(value, tuple) else value
        if key == "t.big":
            assert md[key] == ArraySummary("INT32", 65)
        else:
            assert md[key] == expected, key
    assert header.metadata_types["t.u8"] == "UINT8"
    assert header.metadata_types["t.f64"] == "FLOAT64"
    assert header.metadata_types["t.nested"] == "ARRAY"


def test_keep_arrays_up_to(make_gguf: Any) -> None:
    path = make_gguf(metadata={"t.ints": [1, 2, 3], "t.nested": [[1, 2], [3]]})
    with open(path, "rb") as f:
        header = read_gguf_header(f, keep_arrays_up_to=2)
    assert header.metadata["t.ints"] == ArraySummary("INT32", 3)
    assert header.metadata["t.nested"] == [[1, 2], [3]]
    with open(path, "rb") as f:
        header = read_gguf_header(f, keep_arrays_up_to=0)
    assert header.metadata["t.nested"] == ArraySummary("ARRAY", 2)


def test_custom_alignment(make_gguf: Any) -> None:
    path = make_gguf(alignment=128)
    header = read_gguf_file(str(path))
    assert header.alignment == 128
    assert header.data_offset % 128 == 0
    ref = gguf_pkg.GGUFReader(str(path))
    assert header.data_offset == ref.data_offset
    assert all(t.offset % 128 == 0 for t in header.tensors)


def test_quantization_falls_back_to_dominant_tensor_type(make_gguf: Any) -> None:
    path = make_gguf(types=("Q4_K", "Q4_K", "F32"), n_tensors=6, metadata={"general.file_type": None})
    header = read_gguf_file(str(path))
    assert "general.file_type" not in header.metadata
    assert summarize(header)["quantization"] == "Q4_K"


def test_v2_is_accepted() -> None:
    raw = gguf_bytes([kv_u32("general.file_type", 2)], [tinfo("w", (32,), 2, 0)], version=2, data=b"\1" * 18)
    header = parse(raw)
    assert header.version == 2
    assert tensor_ranges(header, len(raw)) == [("w", len(raw) - 18, len(raw))]


def test_unknown_tensor_type_sized_from_neighbours() -> None:
    tensors = [tinfo("a", (8,), 99, 0), tinfo("b", (8,), 99, 64)]
    raw = gguf_bytes([], tensors, data=b"\0" * 100)
    header = parse(raw)
    assert [t.nbytes for t in header.tensors] == [64, None]
    assert [t.type_name for t in header.tensors] == ["TYPE_99", "TYPE_99"]
    start = header.data_offset
    assert tensor_ranges(header, len(raw)) == [("a", start, start + 64), ("b", start + 64, len(raw))]


def test_unseekable_stream(make_gguf: Any) -> None:
    path = make_gguf()
    with open(path, "rb", buffering=0) as raw:
        header = read_gguf_header(CountingReader(raw))  # type: ignore[arg-type]
    assert len(header.tensors) == 8


# --- hostile files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"GGML" + b"\0" * 40, "not a GGUF file"),
        (b"", "truncated"),
        (b"GGUF" + struct.pack(">I", 3) + b"\0" * 16, "big-endian"),
        (b"GGUF" + u32(1) + b"\0" * 16, "unsupported GGUF version 1"),
        (b"GGUF" + u32(4) + b"\0" * 16, "unsupported GGUF version 4"),
        (b"GGUF" + u32(3) + u64(2**40) + u64(0), "tensors"),
        (b"GGUF" + u32(3) + u64(0) + u64(2**40), "metadata entries"),
        (b"GGUF" + u32(3) + u64(0) + u64(1) + u64(2**63), "metadata key claims"),
        (b"GGUF" + u32(3) + u64(0) + u64(1) + gstr("k") + u32(8) + u64(2**62), "string value claims"),
        (b"GGUF" + u32(3) + u64(0) + u64(1) + gstr("k") + u32(9) + u32(4) + u64(2**40), "array claims"),
        (b"GGUF" + u32(3) + u64(0) + u64(1) + gstr("k") + u32(13), "unknown GGUF value type 13"),
        (b"GGUF" + u32(3) + u64(0) + u64(1) + gstr(b"\xff\xfe"), "not valid UTF-8"),
        (gguf_bytes([kv_u32("a", 1), kv_u32("a", 2)], []), "duplicate GGUF metadata key"),
        (gguf_bytes([], [tinfo("w", (32,), 0, 0), tinfo("w", (32,), 0, 128)]), "duplicate tensor name"),
        (gguf_bytes([], [tinfo("w", (1, 1, 1, 1, 1), 0, 0)]), "5 dimensions"),
        (gguf_bytes([], [tinfo("w", (2**32, 2**32), 0, 0)]), "absurd element count"),
        (gguf_bytes([], [tinfo("w", (32,), 0, 7)]), "not 32-aligned"),
        (gguf_bytes([], [tinfo("w", (33,), 2, 0)]), "not a multiple of the Q4_0 block size"),
        (gguf_bytes([kv_u32("general.alignment", 3)], []), "invalid general.alignment"),
        (gguf_bytes([gstr("general.alignment") + u32(8) + gstr("32")], []), "invalid general.alignment"),
    ],
)
def test_hostile_headers(raw: bytes, message: str) -> None:
    with pytest.raises(GGUFError, match=message) as info:
        parse(raw)
    assert isinstance(info.value, EdgebundleError)
    assert info.value.hint


@pytest.mark.timeout(20)
def test_huge_claims_in_small_files_fail_fast() -> None:
    """Counts under the limits but far beyond the file's size end in 'truncated', quickly."""
    head = b"GGUF" + u32(3) + u64(0) + u64(1) + gstr("k") + u32(9)
    for body in (u32(8) + u64(2**24) + gstr("x") * 10, u32(10) + u64(2**24) + b"\0" * 1000):
        tracemalloc.start()
        try:
            with pytest.raises(GGUFError, match="truncated"):
                parse(head + body)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2 * 1024 * 1024
    with pytest.raises(GGUFError, match="truncated"):
        parse(b"GGUF" + u32(3) + u64(100_000) + u64(0) + tinfo("w", (32,), 0, 0))


def test_nesting_depth_limit() -> None:
    nested = u32(4) + u64(1) + u32(7)  # innermost: array of one uint32
    for _ in range(10):
        nested = u32(9) + u64(1) + nested
    raw = b"GGUF" + u32(3) + u64(0) + u64(1) + gstr("k") + u32(9) + nested
    with pytest.raises(GGUFError, match="nested deeper"):
        parse(raw)


def test_limits_are_configurable(smollm2_gguf: Path) -> None:
    with open(smollm2_gguf, "rb") as f, pytest.raises(GGUFError, match="larger than the 100000-byte limit"):
        read_gguf_header(f, limits=GGUFLimits(max_header_bytes=100_000))
    with open(smollm2_gguf, "rb") as f, pytest.raises(GGUFError, match="kept in memory"):
        read_gguf_header(f, keep_arrays_up_to=10**6, limits=GGUFLimits(max_stored_bytes=1_000_000))


def test_truncation_anywhere_in_generated_header(make_gguf: Any) -> None:
    raw = make_gguf(vocab_size=20, metadata={"t.nested": [["a"], ["b", "c"]]}).read_bytes()
    full = parse(raw)
    for cut in range(full.data_offset):
        try:
            parse(raw[:cut])
        except GGUFError:
            continue
        # Only the alignment padding after the tensor table may be missing.
        assert cut > full.data_offset - full.alignment, cut


def test_truncation_in_real_header(smollm2_gguf: Path, smol_header: Any) -> None:
    with open(smollm2_gguf, "rb") as f:
        head = f.read(smol_header.data_offset - smol_header.alignment)
    for cut in range(0, len(head), len(head) // 37):
        with pytest.raises(GGUFError, match="truncated"):
            parse(head[:cut])


def test_tensor_ranges_refuse_overlap_and_overrun() -> None:
    overlap = gguf_bytes([], [tinfo("a", (64,), 0, 0), tinfo("b", (32,), 0, 128)], data=b"\0" * 512)
    with pytest.raises(GGUFError, match="overlaps"):
        tensor_ranges(parse(overlap), len(overlap))
    ok = gguf_bytes([], [tinfo("a", (32,), 0, 0)], data=b"\0" * 128)
    header = parse(ok)
    with pytest.raises(GGUFError, match="runs past the end"):
        tensor_ranges(header, header.data_offset + 100)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_headers_fail_cleanly(data: st.DataObject) -> None:
    base = _fuzz_base()
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=8))
    raw = bytearray(base)
    for pos, byte in edits:
        raw[pos] = byte
    cut = data.draw(st.integers(0, len(raw)))
    try:
        header = parse(bytes(raw[:cut]))
    except GGUFError:
        return
    try:
        tensor_ranges(header, cut)
    except GGUFError:
        pass


_FUZZ_BASE: list[bytes] = []


def _fuzz_base() -> bytes:
    if not _FUZZ_BASE:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = write_gguf(Path(d) / "f.gguf", n_tensors=3, rows=1, vocab_size=5,
                              metadata={"t.nested": [[1], [2, 3]], "t.s": "str"})
            _FUZZ_BASE.append(path.read_bytes())
    return _FUZZ_BASE[0]

