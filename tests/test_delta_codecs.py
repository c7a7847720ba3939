"""Delta building blocks: patch codecs, the piecewise container, GGUF tensor-wise patches,
checked streams and the strict ``delta`` section of the root (no registry needed)."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import random
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgebundle.rebuild import CheckedStream, full_root, full_root_digest
from edgebundle.digest import DigestMismatchError, sha256_bytes
from edgebundle.patch import CONTAINER_MAGIC, PIECE, PatchError, apply_container, bsdiff_decode, zstd_decode
from bundler.patch import ContainerWriter, bsdiff_encode, encode_piece, write_region, zpf_encode
from bundler.patch_gguf import write_gguf_patch
from edgebundle.root import MalformedRootError, parse_root
from tests.fixtures.digests import sha256_of
from tests.fixtures.machine import missing_part
from tests.fixtures.models import make_gguf, write_gguf  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def rebuild(old: Path, patch: bytes, size: int) -> bytes:
    with open(old, "rb") as src:
        return b"".join(apply_container(src, old.stat().st_size, io.BytesIO(patch), size, "test"))


def container(old: Path, new: Path, tmp: Path, fill: Any) -> tuple[bytes, ContainerWriter]:
    w = ContainerWriter(tmp)
    with open(old, "rb") as o, open(new, "rb") as n:
        fill(w, o, n)
    out = io.BytesIO()
    w.write_to(out)
    w.close()
    return out.getvalue(), w


# --- whole-blob codecs ---------------------------------------------------------------------------

def test_zstd_patch_from_is_what_the_zstd_cli_reads(tmp_path: Path) -> None:
    """Interoperable: ``zstd -d --patch-from=OLD`` decodes our patch (when the CLI is installed)."""
    rng = random.Random(3)
    old = rng.randbytes(300_000)
    new = old[:1000] + b"inserted text" + old[1000:200_000] + rng.randbytes(500) + old[200_000:]
    patch = zpf_encode(old, new)
    assert len(patch) < len(new) // 20
    assert b"".join(zstd_decode(io.BytesIO(patch), len(new), old, "t")) == new
    import shutil
    if shutil.which("zstd") is None:
        missing_part("zstd CLI not installed (Debian package zstd)")
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "p.zst").write_bytes(patch)
    subprocess.run(["zstd", "-q", "-d", "--patch-from", str(tmp_path / "old"), str(tmp_path / "p.zst"),
                    "-o", str(tmp_path / "new")], check=True)
    assert (tmp_path / "new").read_bytes() == new


def test_zstd_patch_decoder_refuses_lies() -> None:
    old = random.Random(2).randbytes(4000)
    new = old[:3000] + b"c" * 1000
    patch = zpf_encode(old, new)
    assert len(patch) < 200
    with pytest.raises(PatchError, match="more than"):
        list(zstd_decode(io.BytesIO(patch), len(new) - 1, old, "t"))
    with pytest.raises(PatchError, match="truncated"):
        list(zstd_decode(io.BytesIO(patch[:-5]), len(new), old, "t"))
    with pytest.raises(PatchError, match="after the end"):
        list(zstd_decode(io.BytesIO(patch + b"junk"), len(new), old, "t"))
    with pytest.raises(PatchError):  # the wrong source: the frame checksum fails
        list(zstd_decode(io.BytesIO(patch), len(new), b"x" * 4000, "t"))


def test_bsdiff_checks_the_claimed_size_before_allocating() -> None:
    old = bytes(range(256)) * 40
    new = old[:5000] + b"!" + old[5001:]
    patch = bsdiff_encode(old, new)
    assert bsdiff_decode(old, patch, len(new), "t") == new
    forged = patch[:24] + struct.pack("<Q", 1 << 40) + patch[32:]
    with pytest.raises(PatchError, match="claims"):
        bsdiff_decode(old, forged, len(new), "t")
    with pytest.raises(PatchError, match="not a BSDIFF40"):
        bsdiff_decode(old, b"junk" * 10, len(new), "t")


def test_encode_piece_picks_the_smallest_and_says_why() -> None:
    rng = random.Random(1)
    old = rng.randbytes(64 * 1024)
    near = bytearray(old)
    for i in rng.sample(range(len(near)), 300):
        near[i] ^= 0x40
    e = encode_piece(bytes(near), old)
    assert e.op in ("zpf", "bsdiff") and len(e.payload) < len(near) // 4
    assert e.tried["data"] == len(near) and e.reason
    unrelated = encode_piece(rng.randbytes(64 * 1024), old)
    assert unrelated.op == "data" and "bsdiff" not in unrelated.tried  # the fast probe said "unrelated"
    text = encode_piece(b"hello world " * 5000, None)
    assert text.op == "zstd"


# --- the container -------------------------------------------------------------------------------

def test_windows_container_reproduces_a_large_file_and_copies_unchanged_pieces(tmp_path: Path) -> None:
    rng = random.Random(5)
    size = 2 * PIECE + 12345
    old = tmp_path / "old.bin"
    with open(old, "wb") as f:
        for _ in range(0, size, 1 << 20):
            f.write(rng.randbytes(min(1 << 20, size - f.tell())))
    data = bytearray(old.read_bytes())
    data[PIECE + 100:PIECE + 200] = b"\x00" * 100  # one edit in the second piece
    new = tmp_path / "new.bin"
    new.write_bytes(bytes(data))
    patch, w = container(old, new, tmp_path, lambda w, o, n: write_region(w, n, 0, size, o, 0, size, margin=1 << 20))
    assert w.stats["copy"] == size - PIECE and len(patch) < 64 * 1024
    assert rebuild(old, patch, size) == bytes(data)


def test_container_decoder_refuses_out_of_bounds_operations(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_bytes(b"x" * 1000)

    def forged(ops: list[list[Any]], size: int, payload: bytes = b"") -> bytes:
        head = json.dumps({"ops": ops, "size": size, "v": 1}).encode()
        return CONTAINER_MAGIC + struct.pack("<I", len(head)) + head + payload

    cases = [
        (forged([["copy", 10, 995]], 10), "past the end"),
        (forged([["copy", 10, 0]], 11), "expected 11"),
        (forged([["zpf", 10, 5, 0, PIECE * 4]], 10), "not an integer"),
        (forged([["rm", 1]], 1), "unknown operation"),
        (forged([["data", 10]], 10, b"short"), "truncated"),
        (forged([["data", 2]], 2, b"ab+extra"), "after the last"),
        (b"NOTAPATCH" + b"\0" * 8, "not an EBPATCH1"),
    ]
    for patch, message in cases:
        with pytest.raises(PatchError, match=message):
            rebuild(old, patch, json.loads(patch[12:12 + struct.unpack("<I", patch[8:12])[0]])["size"]
                    if patch.startswith(CONTAINER_MAGIC) else 1)


# --- GGUF tensor-wise ------------------------------------------------------------------------------

def test_gguf_metadata_change_shifts_offsets_but_copies_every_tensor(make_gguf: Any, tmp_path: Path) -> None:
    old = make_gguf("old.gguf", n_tensors=24, rows=256, vocab_size=3000)
    # A longer name plus 100 extra vocabulary entries: the header grows by ~1 KiB, so every
    # tensor's absolute offset moves.
    new = make_gguf("new.gguf", n_tensors=24, rows=256, vocab_size=3100,
                    metadata={"general.name": "synthetic, renamed for the edge fleet"})
    patch, w = container(old, new, tmp_path, lambda w, o, n: write_gguf_patch(
        w, o, old.stat().st_size, n, new.stat().st_size))
    assert old.stat().st_size != new.stat().st_size
    tensor_bytes = new.stat().st_size - w.stats["data"] - w.stats.get("zpf", 0) - w.stats.get("bsdiff", 0) \
        - w.stats.get("zstd", 0)
    assert w.stats["copy"] == tensor_bytes > 0.9 * new.stat().st_size
    assert len(patch) < 8 * 1024
    assert rebuild(old, patch, new.stat().st_size) == new.read_bytes()


def test_gguf_changed_tensors_are_patched_by_name(make_gguf: Any, tmp_path: Path) -> None:
    old = make_gguf("old.gguf", n_tensors=40, rows=128)
    new = make_gguf("new.gguf", n_tensors=40, rows=128, change_fraction=0.1)
    w = ContainerWriter(tmp_path)
    with open(old, "rb") as o, open(new, "rb") as n:
        stats = write_gguf_patch(w, o, old.stat().st_size, n, new.stat().st_size)
    w.close()
    assert (stats.tensors, stats.same, stats.changed, stats.added) == (40, 36, 4, 0)


# --- checked streams and the root --------------------------------------------------------------------

def test_checked_stream_refuses_before_handing_out_the_last_bytes() -> None:
    data = b"abc" * 1000
    good = CheckedStream(iter([data[:1000], data[1000:]]), sha256_bytes(data), len(data), "t")
    assert good.read(-1) == data
    bad = CheckedStream(iter([data[:1000], b"X" + data[1001:]]), sha256_bytes(data), len(data), "blob x")
    assert len(bad.read(1000)) == 1000
    with pytest.raises(DigestMismatchError, match="blob x"):
        bad.read(10)  # the last chunk is only released once it is proven
    longer = CheckedStream(iter([data, b"more"]), sha256_bytes(data), len(data), "t")
    with pytest.raises(PatchError, match="exceed"):
        longer.read(-1)


def _delta_root_doc() -> dict[str, Any]:
    blob_a, blob_b, patch = (sha256_bytes(x) for x in (b"a", b"b", b"patch"))
    layout_pin = {"digest": sha256_bytes(b"{}"), "size": 2}
    return {
        "_type": "edgebundle.root", "specVersion": 1, "name": "rag", "version": "1.1", "compatible": "c",
        "created": "2024-01-01T00:00:00Z", "expires": "2024-06-29T00:00:00Z",
        "files": {"oci-layout": layout_pin, "index.json": layout_pin},
        "blobs": {blob_a: {"digest": blob_a, "size": 1, "mediaType": "x"},
                  blob_b: {"digest": blob_b, "size": 1, "mediaType": "x"}},
        "images": [], "models": [], "manifests": None,
        "base": {"name": "rag", "version": "1.0", "root": sha256_bytes(b"base")},
        "delta": {
            "carried": {blob_a: {"size": 1, "kind": "blob"}, patch: {"size": 5, "kind": "patch"}},
            "rebuild": {
                blob_a: {"method": "whole", "size": 1, "reason": "new"},
                blob_b: {"method": "bsdiff4", "size": 1, "patch": patch, "reason": "r",
                         "from": {"digest": sha256_bytes(b"c"), "size": 1,
                                  "at": {"registry": {"repository": "rag/x", "endpoint": "blobs"}}}},
            },
        },
    }


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_root_delta_section_is_strict() -> None:
    doc = _delta_root_doc()
    root = parse_root(_raw(doc))
    assert root.is_delta and root.member_pins().keys() >= {f"blobs/sha256/{sha256_bytes(b'patch')[7:]}"}
    assert len(root.member_pins(full=True)) == 4  # two files, two target blobs
    a, b, patch = (sha256_bytes(x) for x in (b"a", b"b", b"patch"))

    def broken(change: Any) -> bytes:
        d = copy.deepcopy(doc)
        change(d)
        return _raw(d)

    cases = [
        (lambda d: d["delta"]["rebuild"].pop(b), "exactly the pinned blobs"),
        (lambda d: d["delta"]["carried"].pop(patch), "not a carried patch"),
        (lambda d: d["delta"]["carried"].__setitem__(sha256_bytes(b"z"), {"size": 1, "kind": "patch"}),
         "nothing uses"),
        (lambda d: d["delta"]["rebuild"][b].__setitem__("method", "magic"), "unknown"),
        (lambda d: d["delta"]["rebuild"][b]["from"]["at"].__setitem__("nas", {}), "exactly one of"),
        (lambda d: d["delta"]["rebuild"][b]["from"]["at"]["registry"].__setitem__("repository", "../x"),
         "not valid"),
        (lambda d: d["delta"]["rebuild"][a].__setitem__("method", "base"), "carried whole"),
        (lambda d: d["delta"]["carried"][a].__setitem__("size", 2), "not a target blob"),
        (lambda d: d["delta"]["rebuild"][b].__setitem__("evil", 1), "unknown keys"),
        (lambda d: d["delta"].__setitem__("extra", {}), "unknown keys"),
        (lambda d: d.pop("base"), "both"),
    ]
    for change, message in cases:
        with pytest.raises(MalformedRootError, match=message):
            parse_root(broken(change))


def test_full_root_of_a_delta_is_the_full_bundles_root() -> None:
    doc = _delta_root_doc()
    full = {k: v for k, v in doc.items() if k not in ("base", "delta", "manifests")}
    root = parse_root(_raw(doc))
    assert full_root(root).to_bytes() == _raw(full)
    assert full_root_digest(root) == sha256_of(_raw(full))
    assert hashlib.sha256(full_root(root).to_bytes()).hexdigest() == full_root_digest(root)[7:]
