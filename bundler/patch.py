"""Patch encoders for delta bundles (the build host's side of edgebundle/patch.py).

The formats, their bounds and the decoders that sites run live in :mod:`edgebundle.patch`; this
module only writes patches. Encoders are deterministic for the same inputs and library versions
(not needed for correctness: the signed root pins the patch bytes themselves).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import bsdiff4

from edgebundle.digest import iter_chunks
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.patch import (
    CONTAINER_MAGIC,
    MIN_PREFIX,
    PIECE,
    PIECE_BSDIFF_MAX,
    WINDOW_LOG_MAX,
    MiB,
    PatchError,
    read_exact,
    zstd,
)

#: Pieces up to this size are also tried with zstd level 19 (slow, a few percent smaller).
SMALL_PIECE = 1 * MiB
#: A patch whose fast probe is not below this fraction of the target says "unrelated".
RELATED = 0.9
#: zstd-patch-from is preferred while it stays within this factor of bsdiff4's size.
ZPF_SLACK = 1.1
FAST_LEVEL = 3
SLOW_LEVEL = 19


def _window_log(total: int) -> int:
    return max(10, min(WINDOW_LOG_MAX, (max(total, 1) - 1).bit_length()))


def zpf_encode(src: bytes, target: bytes, level: int = FAST_LEVEL) -> bytes:
    """``zstd --patch-from``: one frame of ``target`` compressed with ``src`` as its prefix."""
    opts = {zstd.CompressionParameter.compression_level: level,
            zstd.CompressionParameter.window_log: _window_log(len(src) + len(target)),
            zstd.CompressionParameter.enable_long_distance_matching: 1,
            zstd.CompressionParameter.checksum_flag: 1}
    prefix = zstd.ZstdDict(src, is_raw=True).as_prefix if len(src) >= MIN_PREFIX else None
    return zstd.ZstdCompressor(options=opts, zstd_dict=prefix).compress(
        target, zstd.ZstdCompressor.FLUSH_FRAME)


def zstd_encode(target: bytes, level: int = FAST_LEVEL) -> bytes:
    """A plain zstd frame (no source), for pieces that have nothing to patch against."""
    return zpf_encode(b"", target, level)


def bsdiff_encode(src: bytes, target: bytes) -> bytes:
    return bsdiff4.diff(src, target)


@dataclass(frozen=True)
class Encoded:
    """The best encoding found for one piece: op kind, payload, and why it won."""

    op: str  # data | zstd | zpf | bsdiff
    payload: bytes
    reason: str
    tried: dict[str, int] = field(default_factory=dict)


def encode_piece(target: bytes, src: bytes | None, *, bsdiff_max: int = PIECE_BSDIFF_MAX,
                 small: int = SMALL_PIECE) -> Encoded:
    """Smallest of: raw, zstd, zstd patch-from ``src``, bsdiff4 against ``src``.

    A fast patch-from probe decides whether ``src`` is related at all; only then are the slow
    candidates (level-19 patch-from for small pieces, bsdiff4 up to ``bsdiff_max``) tried.
    bsdiff4 wins only when it beats patch-from by more than :data:`ZPF_SLACK`, since
    patch-from encodes and decodes far faster with far less memory.
    """
    n = len(target)
    tried: dict[str, int] = {"data": n}
    cands: dict[str, bytes] = {}
    if src is not None and len(src) >= MIN_PREFIX:
        cands["zpf"] = zpf_encode(src, target, FAST_LEVEL)
        if len(cands["zpf"]) < RELATED * n:
            if n <= small:
                slow = zpf_encode(src, target, SLOW_LEVEL)
                if len(slow) < len(cands["zpf"]):
                    cands["zpf"] = slow
            if max(n, len(src)) <= bsdiff_max:
                cands["bsdiff"] = bsdiff_encode(src, target)
    z = zstd_encode(target)
    if len(z) < n:
        cands["zstd"] = z
    tried.update({k: len(v) for k, v in cands.items()})
    if "bsdiff" in cands and "zpf" in cands and len(cands["zpf"]) <= ZPF_SLACK * len(cands["bsdiff"]):
        del cands["bsdiff"]  # patch-from is close enough and far cheaper
    best = min(cands, key=lambda k: (len(cands[k]), k), default="data")
    payload = cands.get(best, target)
    if len(payload) >= n:
        best, payload = "data", target
    return Encoded(best, payload, _why(best, tried), tried)


_NAMES = {"data": "raw", "zstd": "zstd", "zpf": "zstd-patch-from", "bsdiff": "bsdiff4"}


def _why(best: str, tried: dict[str, int]) -> str:
    others = ", ".join(f"{_NAMES[k]} {v}" for k, v in sorted(tried.items()) if k != best)
    if best == "zpf" and "bsdiff" in tried and tried["bsdiff"] < tried["zpf"]:
        return (f"zstd-patch-from {tried['zpf']} B is within {int((ZPF_SLACK - 1) * 100)}% of bsdiff4 "
                f"{tried['bsdiff']} B and far faster")
    if best == "data":
        return f"nothing beats the raw {tried['data']} B ({others})" if others else "raw"
    return f"{_NAMES[best]} {tried[best]} B is smallest ({others})"


class ContainerWriter:
    """Collects operations (payloads spooled to a temp file) and writes one ``EBPATCH1`` patch.

    Operations must be added in target order; adjacent ``copy``/``data`` operations merge.
    """

    def __init__(self, scratch: Path) -> None:
        fd, name = tempfile.mkstemp(dir=scratch, prefix=".patch-payload-")
        self._payload_path = Path(name)
        self._payload = os.fdopen(fd, "w+b")
        self.ops: list[list[Any]] = []
        self.size = 0
        self.payload_size = 0
        #: bytes of target produced per op kind (for ``bundle inspect``)
        self.stats: Counter[str] = Counter()

    def close(self) -> None:
        self._payload.close()
        self._payload_path.unlink(missing_ok=True)

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def copy(self, src_off: int, n: int) -> None:
        if n <= 0:
            return
        last = self.ops[-1] if self.ops else None
        if last and last[0] == "copy" and last[2] + last[1] == src_off:
            last[1] += n
        else:
            self.ops.append(["copy", n, src_off])
        self._count("copy", n)

    def piece(self, enc: Encoded, n: int, src_off: int = 0, src_len: int = 0) -> None:
        """Add an encoded piece producing ``n`` bytes (``src_*``: the source range for zpf/bsdiff)."""
        self._payload.write(enc.payload)
        self.payload_size += len(enc.payload)
        last = self.ops[-1] if self.ops else None
        if enc.op == "data" and last and last[0] == "data":
            last[1] += n
        elif enc.op == "data":
            self.ops.append(["data", n])
        elif enc.op == "zstd":
            self.ops.append(["zstd", n, len(enc.payload)])
        else:
            self.ops.append([enc.op, n, len(enc.payload), src_off, src_len])
        self._count(enc.op, n)

    def _count(self, op: str, n: int) -> None:
        self.size += n
        self.stats[op] += n

    def header(self) -> bytes:
        return json.dumps({"ops": self.ops, "size": self.size, "v": 1},
                          separators=(",", ":"), sort_keys=True).encode()

    @property
    def patch_size(self) -> int:
        return len(CONTAINER_MAGIC) + 4 + len(self.header()) + self.payload_size

    def write_to(self, out: BinaryIO) -> None:
        head = self.header()
        if len(head) > MAX_JSON_BYTES:
            raise PatchError(f"patch has {len(self.ops)} operations; its header exceeds {MAX_JSON_BYTES} bytes")
        out.write(CONTAINER_MAGIC + struct.pack("<I", len(head)) + head)
        self._payload.flush()
        self._payload.seek(0)
        for chunk in iter_chunks(self._payload):
            out.write(chunk)


def write_region(w: ContainerWriter, new: BinaryIO, new_off: int, new_len: int, old: BinaryIO | None,
                 old_off: int, old_len: int, *, margin: int = 0) -> None:
    """Encode ``new[new_off:+new_len]`` against ``old[old_off:+old_len]`` in pieces of :data:`PIECE`.

    Piece ``k`` of the new range is compared with piece ``k`` of the old range: equal bytes
    become a ``copy``; otherwise the piece is encoded against that old piece widened by
    ``margin`` on each side (clipped to the old range).
    """
    pos = 0
    while pos < new_len:
        n = min(PIECE, new_len - pos)
        new.seek(new_off + pos)
        data = read_exact(new, n, "new file")
        src = None
        if old is not None and pos < old_len:
            lo = max(0, pos - margin)
            hi = min(old_len, pos + n + margin)
            old.seek(old_off + lo)
            src = read_exact(old, hi - lo, "old file")
            same = src[pos - lo:pos - lo + n]
            if same == data:
                w.copy(old_off + pos, n)
                pos += n
                continue
            w.piece(encode_piece(data, src), n, old_off + lo, hi - lo)
        else:
            w.piece(encode_piece(data, None), n)
        pos += n
