"""zstd where it pays, and bounded decompression.

A model file that compresses well is carried as a ModelPack ``tar+zstd`` layer: a zstd frame
holding a ustar archive of exactly that one file (edgebundle/tarfmt.py dialect). Files that do not
compress (quantized GGUF weights mostly do not) are carried raw.

Invariants:
- Compression output is deterministic for a given zstandard library, level and input, and
  depends on nothing else: the inner tar's mtime is the fixed ``TAR_MTIME``, not the bundle's
  ``created``, so an unchanged file encodes to the same blob in every release (a delta pins the
  base's blob instead of re-encoding it; ``ENCODER`` names the encoding in the layer annotation).
- Decompression never yields more than the signed size and caps the zstd window, so an
  endless or memory-hungry frame cannot exhaust the installer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from edgebundle import tarfmt
from edgebundle.digest import HashingWriter
from edgebundle.errors import VerificationError

LEVEL = 3
#: Compress only when a sample shrinks below this fraction of its size.
PAYS_BELOW = 0.92
SAMPLE = 4 * 1024 * 1024
MAX_WINDOW = 1 << 27
#: The mtime of the one member of a ``tar+zstd`` layer (docs/FORMAT.md §2): fixed, so the layer's
#: bytes depend only on the file's path and content (and the zstd version).
TAR_MTIME = 0
#: The layer annotation value naming this encoding exactly (docs/FORMAT.md §2): equal values
#: promise equal layers for equal files, which is what lets a delta reuse a base's layer.
ENCODER = f"zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))} level {LEVEL} tar-mtime {TAR_MTIME}"
#: The annotation that carries ``ENCODER`` on a ``tar+zstd`` model layer descriptor.
ENCODER_ANNOTATION = "dev.edgebundle.file.encoder"


@dataclass(frozen=True)
class Encoded:
    """A ``tar+zstd`` layer a bundle holds: its blob, size and diffId (the inner tar's digest)."""

    blob: str
    size: int
    diff_id: str


def compression_pays(path: Path) -> bool:
    """Decide from samples at the start, middle and end, without reading the whole file."""
    size = path.stat().st_size
    if size < 4096:
        return False
    cctx = zstandard.ZstdCompressor(level=LEVEL)
    raw = packed = 0
    with open(path, "rb") as f:
        for off in sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)}):
            f.seek(off)
            data = f.read(SAMPLE)
            raw += len(data)
            packed += len(cctx.compress(data))
    return packed < raw * PAYS_BELOW


def single_file_tar_size(size: int) -> int:
    return tarfmt.BLOCK + size + len(tarfmt.padding(size)) + len(tarfmt.END)


def write_tar_zstd(path: Path, arcname: str, out: BinaryIO, mtime: int = TAR_MTIME) -> str:
    """Write a zstd frame of a one-member tar holding ``path`` as ``arcname``.

    Returns the digest of the uncompressed tar (the layer's OCI ``diffId``).
    """
    size = path.stat().st_size
    cctx = zstandard.ZstdCompressor(level=LEVEL, threads=min(4, os.cpu_count() or 1),
                                    write_content_size=True)
    with cctx.stream_writer(out, size=single_file_tar_size(size), closefd=False) as w, \
            open(path, "rb") as src:
        tar = HashingWriter(w)  # type: ignore[arg-type]
        tarfmt.write_member(tar, arcname, size, mtime, src)  # type: ignore[arg-type]
        tar.write(tarfmt.END)
    return tar.digest


class BoundedReader:
    """Reads at most ``limit`` bytes from a stream, then reports EOF; ``left`` is what remains."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self._f, self.left = f, limit

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self._f.read(n)
        self.left -= len(data)
        return data


def open_tar_zstd_member(compressed: BinaryIO, expected_size: int, what: str) -> BinaryIO:
    """A stream of the one file inside a ``tar+zstd`` layer: at most ``expected_size`` bytes.

    The tar header's size must equal the signed size, so the member's data is exactly that long;
    the stream ends there (the tar padding after it is not file data). A truncated frame yields
    fewer bytes. The caller hashes what it reads against the signed digest and size.
    """
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
    try:
        reader = dctx.stream_reader(compressed, read_across_frames=False, closefd=False)
        hdr = reader.read(tarfmt.BLOCK)
    except zstandard.ZstdError as e:
        raise VerificationError(f"{what}: not a valid zstd stream ({e})") from None
    if len(hdr) < tarfmt.BLOCK:
        raise VerificationError(f"{what}: compressed layer ends inside its tar header")
    name, size = tarfmt.parse_file_header(hdr, 0)
    if size != expected_size:
        raise VerificationError(
            f"{what}: compressed layer holds {name!r} of {size} bytes, the signed root says {expected_size}")
    return BoundedReader(_ZstdErrors(reader, what), expected_size)  # type: ignore[return-value]


class _ZstdErrors:
    """Turns zstd library errors into verification errors naming the layer."""

    def __init__(self, reader: BinaryIO, what: str) -> None:
        self._r, self._what = reader, what

    def read(self, n: int = -1) -> bytes:
        try:
            return self._r.read(n)
        except zstandard.ZstdError as e:
            raise VerificationError(f"{self._what}: corrupt zstd data ({e})") from None
