"""Fuzz targets: every parser that reads bytes an attacker controls, with seeds and strategies.

Each target takes ``bytes`` and either returns or raises a typed
:class:`edgebundle.errors.EdgebundleError`; anything else is a bug. Seeds are valid documents
built here with the real writers (canonical root, real signatures, the bundle tar dialect, a
real zstd layer, a GGUF from the ``gguf`` package, a real part index), so mutations start deep
inside the formats. The Hypothesis strategies build structurally plausible but hostile inputs.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

import edgebundle.compress
import bundler.gguf
import edgebundle.layout
import edgebundle.parts
import edgebundle.root
import edgebundle.signing
import edgebundle.tarfmt
from edgebundle import compress, layout, tarfmt
from edgebundle.digest import sha256_bytes
from bundler.gguf import read_gguf_header
from edgebundle.parts import Part, PartIndex, parse_part_index
from edgebundle.root import (BaseRef, BlobPin, FilePin, ImageEntry, ManifestFile, ManifestsEntry,
                          ModelEntry, ModelFile, Root, canonical_json, parse_root)
from edgebundle.mediatypes import PAYLOAD_ROOT
from edgebundle.signing import TrustStore, parse_envelope, sign

FUZZ_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"edgebundle fuzz key").digest())
TRUST = TrustStore([FUZZ_KEY.public_key()])


def _d(tag: str) -> str:
    return sha256_bytes(tag.encode())


def _sample_delta(blobs: dict[str, BlobPin]) -> dict[str, Any]:
    """Every blob carried whole except ``layer``, rebuilt by bsdiff4 from a base blob in the registry."""
    layer, patch = _d("layer"), _d("layer-patch")
    carried: dict[str, Any] = {d: {"size": b.size, "kind": "blob"} for d, b in blobs.items() if d != layer}
    carried[patch] = {"size": 40, "kind": "patch"}
    rebuild: dict[str, Any] = {d: {"method": "whole", "size": b.size, "reason": "new"}
                               for d, b in blobs.items() if d != layer}
    rebuild[layer] = {"method": "bsdiff4", "size": blobs[layer].size, "patch": patch, "reason": "changed",
                      "from": {"digest": _d("old-layer"), "size": 99,
                               "at": {"registry": {"repository": "rag/llm", "endpoint": "blobs"}}}}
    return {"carried": carried, "rebuild": rebuild}


def sample_root(delta: bool = False) -> Root:
    """A small but complete root: an image, an LLM (raw + zstd files), manifests, maybe a delta."""
    blobs = {d: BlobPin(d, 100 + i, "application/octet-stream")
             for i, d in enumerate(_d(t) for t in ("img", "cfg", "layer", "model", "w1", "w2", "man", "k8s"))}
    root = Root(
        name="rag-edge", version="1.2.0", compatible="rag-edge/x86_64", created="2024-05-01T00:00:00Z",
        expires="2024-10-28T00:00:00Z",
        files={layout.OCI_LAYOUT: FilePin(sha256_bytes(layout.OCI_LAYOUT_BYTES), 30),
               layout.INDEX: FilePin(_d("index"), 512)},
        blobs=blobs,
        images=[ImageEntry("127.0.0.1:5000/rag/llm:1.0", "rag/llm:1.0", "rag/llm", "1.0", _d("img"),
                           "application/vnd.oci.image.manifest.v1+json", ["linux/amd64"], 300)],
        models=[ModelEntry("smollm2", "llm", "1.0", "gguf", _d("model"),
                           [ModelFile("model.gguf", _d("file1"), 1000, _d("w1"), "identity"),
                            ModelFile("tok/tokenizer.json", _d("file2"), 2000, _d("w2"), "tar+zstd")],
                           architecture="llama", quantization="Q4_1", paramCount=135, contextLength=2048)],
        manifests=ManifestsEntry(_d("man"), [ManifestFile("20-llm.yaml", _d("k8s"), 107)]),
    )
    if delta:
        root = Root(**{**root.__dict__, "base": BaseRef("rag-edge", "1.1.0", _d("base-root")),
                       "delta": _sample_delta(blobs)})
    return root


def _tar(members: list[tuple[str, bytes]], end: bool = True) -> bytes:
    out = io.BytesIO()
    for name, data in members:
        tarfmt.write_member(out, name, len(data), 1714521600, io.BytesIO(data))
    if end:
        out.write(tarfmt.END)
    return out.getvalue()


def _zstd_layer(name: str, data: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f"
        p.write_bytes(data)
        out = io.BytesIO()
        compress.write_tar_zstd(p, name, out, 0)
        return out.getvalue()


def _gguf_seed() -> bytes:
    from tests.fixtures.models import write_gguf

    with tempfile.TemporaryDirectory() as d:
        p = write_gguf(Path(d) / "m.gguf", n_tensors=3, rows=1, types=("F32", "Q8_0", "Q4_K"),
                       vocab_size=70, alignment=64, metadata={"x.f": 1.5, "x.b": True})
        with open(p, "rb") as f:
            return f.read(8192)  # the header and a little tensor data: enough to parse


def sample_part_index(n: int = 3) -> PartIndex:
    size, psize = 10_000, 4096
    parts = tuple(Part(f"rag-edge-1.2.0.tar.part{i:03d}", i * psize, min(psize, size - i * psize),
                       _d(f"part{i}")) for i in range(n))
    return PartIndex("rag-edge", "1.2.0", _d("root"), "rag-edge-1.2.0.tar", parts[-1].offset + parts[-1].size,
                     _d("tar"), psize, parts)


# --- the targets ---------------------------------------------------------------------------

def target_root(data: bytes) -> None:
    """Strict root parse, then what the verifier derives from a root (pins, sizes)."""
    root = parse_root(data)
    root.member_pins()
    root.total_size()
    root.to_bytes()


def target_signatures(data: bytes) -> None:
    """The signed envelope (DSSE): strict parse, then the k-of-n check over PAE(type, payload)."""
    TRUST.check(parse_envelope(data, "envelope", PAYLOAD_ROOT, layout.MAX_ROOT_ENVELOPE_BYTES))


def target_tar(data: bytes) -> None:
    """The tar walk, then every member read back through a TarSource window."""
    from edgebundle.sources import TarSource

    src = TarSource(lambda: io.BytesIO(data), len(data), "fuzz tar")
    for name in src.members():
        with src.open(name) as f:
            while f.read(1 << 16):
                pass


def target_zstd(data: bytes) -> None:
    """A tar+zstd layer: the first 3 bytes give the signed size (< 1 MiB), the rest is the blob."""
    expected = int.from_bytes(data[:3], "big") % (1 << 20)
    stream = compress.open_tar_zstd_member(io.BytesIO(data[3:]), expected, "fuzz layer")
    total = 0
    while chunk := stream.read(1 << 16):
        total += len(chunk)
    assert total <= expected, f"decompressed {total} bytes, more than the signed {expected}"


def target_gguf(data: bytes) -> None:
    header = read_gguf_header(io.BytesIO(data))
    bundler.gguf.summarize(header)


def target_parts(data: bytes) -> None:
    index = parse_part_index(data)
    index.to_bytes()


@dataclass(frozen=True)
class FuzzTarget:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    files: tuple[str, ...]  # the modules whose coverage guides the fuzzer


ROOT_BYTES = sample_root().to_bytes()


@cache
def _seeds(name: str) -> list[bytes]:
    root, delta = sample_root(), sample_root(delta=True)
    if name == "root":
        return [root.to_bytes(), delta.to_bytes()]
    if name == "signatures":
        other = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
        return [sign(ROOT_BYTES, PAYLOAD_ROOT, [FUZZ_KEY]), sign(ROOT_BYTES, PAYLOAD_ROOT, [FUZZ_KEY, other]),
                sign(b"x", PAYLOAD_ROOT, [other])]
    if name == "tar":
        return [_tar([(layout.OCI_LAYOUT, layout.OCI_LAYOUT_BYTES),
                      (layout.ROOT, sign(ROOT_BYTES[:600], PAYLOAD_ROOT, [FUZZ_KEY])),
                      (layout.blob_path(_d("x")), b"blob" * 40)]),
                _tar([(layout.ROOT, b"{}")])]
    if name == "zstd":
        payload = b"tokenizer " * 300
        return [len(payload).to_bytes(3, "big") + _zstd_layer("tok/tokenizer.json", payload),
                (5).to_bytes(3, "big") + _zstd_layer("a", b"hello")]
    if name == "gguf":
        return [_gguf_seed()]
    if name == "parts":
        return [sample_part_index(3).to_bytes(), sample_part_index(1).to_bytes()]
    raise KeyError(name)


def _files(*modules: Any) -> tuple[str, ...]:
    return tuple(str(Path(m.__file__).resolve()) for m in modules)


TARGETS: dict[str, FuzzTarget] = {t.name: t for t in (
    FuzzTarget("root", target_root, lambda: _seeds("root"), _files(edgebundle.root)),
    FuzzTarget("signatures", target_signatures, lambda: _seeds("signatures"),
               _files(edgebundle.signing, edgebundle.root)),
    FuzzTarget("tar", target_tar, lambda: _seeds("tar"), _files(edgebundle.tarfmt, edgebundle.layout)),
    FuzzTarget("zstd", target_zstd, lambda: _seeds("zstd"), _files(edgebundle.compress, edgebundle.tarfmt)),
    FuzzTarget("gguf", target_gguf, lambda: _seeds("gguf"), _files(bundler.gguf)),
    FuzzTarget("parts", target_parts, lambda: _seeds("parts"), _files(edgebundle.parts, edgebundle.root)),
)}


# --- Hypothesis strategies: structured hostile inputs --------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=True) | st.text(max_size=20)
                | st.sampled_from(["sha256:" + "0" * 64, "sha256:" + "G" * 64, "../x", "/etc/passwd",
                                   "", "a" * 300, "tar+zstd", "identity", "llm", "oci-layout"]))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=12)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` with one to three sub-values replaced, deleted or wrapped."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "wrap", "dup"]))
        key = path[-1]
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "delete":
            del parent[key]
        elif action == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
        elif isinstance(parent, list):
            parent.append(parent[key])
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(st.text(max_size=8))] = draw(json_values)
    return canonical_json(doc) if draw(st.booleans()) else canonical_json(doc).replace(b",", b", ")


def root_inputs() -> st.SearchStrategy[bytes]:
    base = sample_root().to_dict()
    deep = st.integers(1, 200).map(lambda n: b"[" * n + b"]" * n)
    deep_obj = st.integers(60, 70).map(lambda n: b'{"a":' * n + b"1" + b"}" * n)
    return mutated_json(base) | deep | deep_obj | st.binary(max_size=200)


def signature_inputs() -> st.SearchStrategy[bytes]:
    """DSSE envelopes: hostile payloads, payload types, key ids and signatures."""
    trusted = edgebundle.signing.keyid(FUZZ_KEY.public_key())
    b64 = st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode())
    entry = st.fixed_dictionaries({"keyid": st.text(max_size=70) | st.just(trusted), "sig": st.text(max_size=100) | b64})
    docs = st.fixed_dictionaries({
        "payload": st.just(base64.b64encode(ROOT_BYTES).decode()) | b64 | st.text(max_size=40),
        "payloadType": st.just(PAYLOAD_ROOT) | st.text(max_size=40),
        "signatures": st.lists(entry | json_values, max_size=5)})
    seed = json.loads(sign(ROOT_BYTES, PAYLOAD_ROOT, [FUZZ_KEY]))
    return docs.map(canonical_json) | mutated_json(seed) | st.binary(max_size=100)


_NAMES = [layout.OCI_LAYOUT, layout.ROOT, *layout.LEGACY_TRUST_FILES, layout.INDEX, layout.blob_path(_d("x")),
          "/etc/passwd", "../evil", "blobs/../../x", "blobs", "blobs/sha256", "edgebundle", "a\\b",
          "./index.json", "blobs/sha256/", "x" * 100, "\u00e9t\u00e9"]


@st.composite
def tar_inputs(draw: st.DrawFn) -> bytes:
    """Header-level hostile tars: odd types, names, sizes (octal and base-256), checksums."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(_NAMES) | st.text(max_size=30))
        data = draw(st.binary(max_size=600))
        declared = draw(st.sampled_from([len(data), len(data) + 1, 0, 8**11 - 1, 2**63, 2**40]))
        hdr = bytearray(tarfmt.encode_header("x", min(declared, 8**11 - 1), 0))
        raw_name = name.encode("utf-8")[:100]
        hdr[0:100] = raw_name + b"\0" * (100 - len(raw_name))
        if declared > 8**11 - 1:
            hdr[124:136] = bytes([draw(st.sampled_from([0x80, 0xFF]))]) + (declared % 2**88).to_bytes(11, "big")
        hdr[156:157] = draw(st.sampled_from([b"0", b"\0", b"1", b"2", b"3", b"5", b"x", b"g", b"L", b"7"]))
        if draw(st.booleans()):
            hdr[345:345 + 10] = draw(st.binary(min_size=10, max_size=10))
        chk = sum(hdr[:148]) + 256 + sum(hdr[156:])
        hdr[148:156] = b"%06o\0 " % chk
        if draw(st.integers(0, 9)) == 0:
            hdr[148:156] = b"0000000\0"
        out += hdr + data + tarfmt.padding(len(data))
    out += draw(st.sampled_from([tarfmt.END, tarfmt.END[:512], b"", tarfmt.END + b"\0" * 512,
                                 tarfmt.END + b"junk"]))
    return bytes(out)


@st.composite
def zstd_inputs(draw: st.DrawFn) -> bytes:
    """Layers whose inner tar lies about its size, frames without content size, truncations."""
    payload = draw(st.binary(max_size=3000) | st.integers(0, 5000).map(lambda n: b"a" * n))
    declared = draw(st.sampled_from([len(payload), len(payload) + 1, max(0, len(payload) - 1), 0, 8**11 - 1]))
    inner = tarfmt.encode_header(draw(st.sampled_from(["f", "../f", "/f"])), declared, 0) + payload + \
        tarfmt.padding(len(payload)) + draw(st.sampled_from([tarfmt.END, b"", b"extra" * 100]))
    if draw(st.booleans()):
        frame = zstandard.ZstdCompressor(write_content_size=draw(st.booleans())).compress(inner)
    else:
        frame = zstandard.ZstdCompressor().compress(inner) + zstandard.ZstdCompressor().compress(b"x" * 100)
    cut = draw(st.integers(0, len(frame)))
    frame = frame[:cut] if draw(st.integers(0, 3)) == 0 else frame
    expected = draw(st.sampled_from([len(payload), declared, 0, 1 << 19]))
    return (expected % (1 << 24)).to_bytes(3, "big") + frame


_GGUF_TYPES = st.integers(0, 14)


@st.composite
def gguf_inputs(draw: st.DrawFn) -> bytes:
    """Headers with hostile counts, lengths, types, nesting and tensor shapes."""
    u32, u64 = struct.Struct("<I"), struct.Struct("<Q")
    big = st.sampled_from([0, 1, 3, 2**31, 2**32 - 1, 2**63, 2**64 - 1]) | st.integers(0, 40)
    out = bytearray(draw(st.sampled_from([b"GGUF", b"GGUF", b"FUGG", b"GGML"])))
    out += u32.pack(draw(st.sampled_from([3, 2, 1, 0x03000000, 7])))
    n_tensors, n_kv = draw(st.integers(0, 4) | big), draw(st.integers(0, 5) | big)
    out += u64.pack(n_tensors) + u64.pack(n_kv)

    def text(t: str | None = None) -> bytes:
        s = (t if t is not None else draw(st.text(max_size=12))).encode()
        n = draw(st.sampled_from([len(s)] * 4 + [2**40, len(s) + 5]))
        return u64.pack(n) + s

    def value(t: int, depth: int) -> bytes:
        if t == 8:
            return text()
        if t == 9:
            inner = draw(_GGUF_TYPES) if depth < 3 else 0
            n = draw(st.integers(0, 5) | big)
            return u32.pack(inner) + u64.pack(n) + b"".join(value(inner, depth + 1) for _ in range(min(n, 5)))
        width = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}.get(t, 4)
        return draw(st.binary(min_size=width, max_size=width))

    for _ in range(min(n_kv, 5)):
        t = draw(_GGUF_TYPES)
        key = draw(st.sampled_from(["general.alignment", "general.name", "llama.context_length", "x"]))
        out += text(key) + u32.pack(t) + value(t, 0)
    for i in range(min(n_tensors, 4)):
        dims = draw(st.lists(st.sampled_from([1, 256, 2**32, 2**63]) | st.integers(0, 1000), max_size=6))
        out += text(f"t{i}") + u32.pack(len(dims)) + b"".join(u64.pack(d) for d in dims)
        out += u32.pack(draw(st.integers(0, 45))) + u64.pack(draw(st.sampled_from([0, 32, 33, 2**63])))
    return bytes(out) + draw(st.binary(max_size=64))


def parts_inputs() -> st.SearchStrategy[bytes]:
    base = json.loads(sample_part_index(3).to_bytes())
    many = st.integers(999, 1002).map(lambda n: canonical_json({**base, "parts": [base["parts"][0]] * n}))
    return mutated_json(base) | many | st.binary(max_size=100)


STRATEGIES: dict[str, Callable[[], st.SearchStrategy[bytes]]] = {
    "root": root_inputs, "signatures": signature_inputs, "tar": tar_inputs, "zstd": zstd_inputs,
    "gguf": gguf_inputs, "parts": parts_inputs,
}

__all__ = ["STRATEGIES", "TARGETS", "FuzzTarget", "sample_part_index", "sample_root"]
