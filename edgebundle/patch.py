"""Binary patch formats of delta bundles and their decoders: bsdiff4, zstd patch-from, the container.

Three patch formats, each turning a *source* (bytes the site already has) into a *target*:

- ``bsdiff4``: a standard ``BSDIFF40`` patch of one whole blob (``bsdiff4`` package). Its encoder
  needs about 17x the input in memory, so it is used only up to :data:`BSDIFF_MAX`.
- ``zstd-patch-from``: one zstd frame compressed with the source as a raw *prefix*, exactly what
  ``zstd --patch-from=OLD`` writes (``zstd -d --patch-from=OLD`` decodes it). Much faster than
  bsdiff4; used for whole blobs up to :data:`ZPF_MAX`.
- the piecewise **container** (``EBPATCH1``): a small JSON list of operations followed by their
  payloads, each operation producing the next stretch of the target from a bounded *piece*:
  ``copy`` a source range, literal ``data``, a ``zstd`` frame, or a ``zpf``/``bsdiff`` patch of
  one source range. GGUF files are cut at tensor boundaries (bundler/patch_gguf.py), other large
  files into fixed windows. docs/DELTA.md specifies the bytes.

Invariants:
- Decoders stream: they yield at most :data:`edgebundle.digest.CHUNK` bytes at a time and hold at
  most one piece (a source range of at most :data:`SRC_MAX` bytes plus one output window) in
  memory, whatever the size of the file. Every length a patch claims is checked against these
  bounds and against the declared output size *before* anything is allocated.
- A decoder never trusts its output: callers hash it against the signed digest
  (edgebundle/rebuild.py). Decoders raise :class:`PatchError` on anything malformed.
- Only decoders live here (sites run them); the build host's encoders are in bundler/patch.py.
"""

from __future__ import annotations

import bz2
import contextlib
import contextvars
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import bsdiff4

from edgebundle.compress import BoundedReader
from edgebundle.digest import CHUNK, iter_chunks
from edgebundle.errors import VerificationError
from edgebundle.layout import MAX_JSON_BYTES

try:  # Python 3.14 has compression.zstd; older ones get the same API from backports.zstd
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd  # type: ignore[no-redef]

MiB = 1024 * 1024
#: Largest source or target for a whole-blob bsdiff4 patch (encoder memory ~17x: ~272 MiB).
BSDIFF_MAX = 16 * MiB
#: Largest source or target for a whole-blob zstd patch-from (decoder holds the source).
ZPF_MAX = 64 * MiB
#: Output bytes of one container piece: tensors and windows larger than this are split.
PIECE = 32 * MiB
#: Extra source bytes on each side of a window (absorbs small shifts in non-GGUF files).
MARGIN = 1 * MiB
#: Largest source range one container operation may name.
SRC_MAX = PIECE + 2 * MARGIN
#: Pieces up to this size are also tried with bsdiff4 inside a container.
PIECE_BSDIFF_MAX = 4 * MiB
#: zstd never needs a window beyond source + target of one piece or whole blob.
WINDOW_LOG_MAX = 27
#: The smallest source zstd accepts as a prefix.
MIN_PREFIX = 8

CONTAINER_MAGIC = b"EBPATCH1"
OPS = ("copy", "data", "zstd", "zpf", "bsdiff")


class PatchError(VerificationError):
    """A patch is malformed, exceeds its bounds, or does not fit its source."""


# --- whole-blob codecs --------------------------------------------------------------------------

_PROVING: contextvars.ContextVar[bool] = contextvars.ContextVar("proving_patches", default=False)


@contextlib.contextmanager
def proving() -> Iterator[None]:
    """Decode patches against a stand-in source (zeros): bounds are enforced, checksums of the
    (meaningless) output are not (see edgebundle.rebuild.prove_patches)."""
    token = _PROVING.set(True)
    try:
        yield
    finally:
        _PROVING.reset(token)


def zstd_decode(patch: BinaryIO, out_size: int, src: bytes | None, what: str) -> Iterator[bytes]:
    """Stream one zstd frame from ``patch`` (optionally against prefix ``src``), exactly ``out_size`` bytes.

    ``patch`` must end where the frame ends (callers bound it to the payload length).
    """
    prefix = zstd.ZstdDict(src, is_raw=True).as_prefix if src and len(src) >= MIN_PREFIX else None
    try:
        d = zstd.ZstdDecompressor(zstd_dict=prefix,
                                  options={zstd.DecompressionParameter.window_log_max: WINDOW_LOG_MAX})
        produced = 0
        while not d.eof:
            data = b""
            if d.needs_input:
                data = patch.read(CHUNK)
                if not data:
                    raise PatchError(f"{what}: zstd data ends before its frame does (truncated)")
            out = d.decompress(data, max_length=CHUNK)
            produced += len(out)
            if produced > out_size:
                raise PatchError(f"{what}: zstd data yields more than the {out_size} bytes expected")
            if out:
                yield out
    except zstd.ZstdError as e:
        if not (_PROVING.get() and src is not None and "checksum" in str(e)):
            raise PatchError(f"{what}: corrupt zstd data ({e})") from None
        # Proving against a stand-in source: the frame decoded within its bound; only the
        # checksum of the (stand-in) output differs. Skip its end; the real output is checked at load.
        while patch.read(CHUNK):
            pass
        for i in range(produced, out_size, CHUNK):
            yield bytes(min(CHUNK, out_size - i))
        return
    if produced != out_size:
        raise PatchError(f"{what}: zstd data yields {produced} bytes, expected {out_size}")
    if d.unused_data or patch.read(1):
        raise PatchError(f"{what}: data after the end of the zstd frame")


#: zstd level of small signed documents compressed whole (a delta's root, its pack of small blobs).
DOCUMENT_LEVEL = 19


def compress_document(data: bytes) -> bytes:
    """One zstd frame of ``data`` (content size in the header; deterministic for this libzstd)."""
    return zstd.compress(data, level=DOCUMENT_LEVEL)


def write_document_frame(parts: Iterable[bytes], size: int, out: BinaryIO, prefix: bytes) -> None:
    """One zstd frame of the concatenated ``parts`` (``size`` bytes: a delta's pack), written as it
    is compressed, against ``prefix`` as a raw prefix (:func:`zstd_decode` with the same ``src``
    decodes it). The size is pledged: zstd then uses the prefix fully (without it the S2 pack is
    27% larger), writes it in the frame header and refuses other input."""
    c = zstd.ZstdCompressor(level=DOCUMENT_LEVEL, zstd_dict=zstd.ZstdDict(prefix, is_raw=True).as_prefix)
    c.set_pledged_input_size(size)
    for part in parts:
        out.write(c.compress(part))
    out.write(c.flush())


def decompress_bounded(data: bytes, limit: int, what: str) -> bytes:
    """The one zstd frame ``data`` holds, decoded whole: at most ``limit`` bytes (a bomb stops
    there), nothing before or after the frame, a corrupt or truncated frame refused."""
    try:
        d = zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: WINDOW_LOG_MAX})
        out = d.decompress(data, max_length=limit + 1)
    except zstd.ZstdError as e:
        raise VerificationError(f"{what}: corrupt zstd data ({e})") from None
    if len(out) > limit:
        raise VerificationError(f"{what} decompresses to more than its {limit}-byte limit",
                                hint="it is a decompression bomb or not an edgebundle document; do not use it")
    if not d.eof:
        raise VerificationError(f"{what}: the zstd frame is truncated")
    if d.unused_data:
        raise VerificationError(f"{what}: data after the end of the zstd frame")
    return out


def _offtin(raw: bytes) -> int:
    v = int.from_bytes(raw, "little")
    return -(v & ~(1 << 63)) if v & (1 << 63) else v


def _check_bsdiff_blocks(patch: bytes, out_size: int, what: str) -> None:
    """The three bzip2 blocks of a BSDIFF40 patch decode within their bounds (bsdiff4 inflates them
    whole in memory, so a bzip2 bomb is refused here, streaming, before it is handed over)."""
    ctrl_len, diff_len = _offtin(patch[8:16]), _offtin(patch[16:24])
    if ctrl_len < 0 or diff_len < 0 or 32 + ctrl_len + diff_len > len(patch):
        raise PatchError(f"{what}: bsdiff4 patch block lengths run past its end")
    blocks = (("control", patch[32:32 + ctrl_len], 24 * (out_size + 2)),
              ("diff", patch[32 + ctrl_len:32 + ctrl_len + diff_len], out_size),
              ("extra", patch[32 + ctrl_len + diff_len:], out_size))
    for name, block, bound in blocks:
        d, produced, data = bz2.BZ2Decompressor(), 0, block
        try:
            while not d.eof:
                out = d.decompress(data, max_length=CHUNK)
                data = b""
                produced += len(out)
                if produced > bound:
                    raise PatchError(f"{what}: bsdiff4 {name} block expands past {bound} bytes "
                                     "(a decompression bomb)")
                if not out and d.needs_input:
                    raise PatchError(f"{what}: bsdiff4 {name} block is truncated")
        except (OSError, EOFError, ValueError) as e:
            raise PatchError(f"{what}: corrupt bsdiff4 {name} block ({e})") from None


def bsdiff_decode(src: bytes, patch: bytes, out_size: int, what: str) -> bytes:
    """Apply a ``BSDIFF40`` patch after checking that it claims exactly ``out_size`` bytes."""
    if len(patch) < 32 or patch[:8] != b"BSDIFF40":
        raise PatchError(f"{what}: not a BSDIFF40 patch")
    claimed = _offtin(patch[24:32])
    if claimed != out_size:
        raise PatchError(f"{what}: bsdiff4 patch claims {claimed} bytes, expected {out_size}")
    _check_bsdiff_blocks(patch, out_size, what)
    try:
        out = bsdiff4.patch(src, patch)
    except Exception as e:  # bsdiff4 raises ValueError/bz2 errors for corrupt input
        raise PatchError(f"{what}: corrupt bsdiff4 patch ({e})") from None
    if len(out) != out_size:
        raise PatchError(f"{what}: bsdiff4 patch yields {len(out)} bytes, expected {out_size}")
    return out


# --- choosing an encoding for one piece ---------------------------------------------------------


# --- the piecewise container --------------------------------------------------------------------


def read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    """``n`` bytes (at most a piece plus margins); one read does it for a file, so nothing is joined."""
    parts, left = [], n
    while left:
        b = f.read(left)
        if not b:
            raise PatchError(f"{what} ends {left} bytes early")
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


def _int(v: Any, what: str, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > hi:
        raise PatchError(f"{what}: {v!r} is not an integer in [0, {hi}]")
    return v


def read_container_header(patch: BinaryIO, out_size: int, src_size: int, what: str) -> list[list[Any]]:
    """Read and bound-check the operation list; the stream is left at the first payload."""
    from edgebundle.root import load_json_bounded

    head = read_exact(patch, len(CONTAINER_MAGIC) + 4, what)
    if head[:8] != CONTAINER_MAGIC:
        raise PatchError(f"{what}: not an {CONTAINER_MAGIC.decode()} patch")
    (hlen,) = struct.unpack("<I", head[8:])
    if hlen > MAX_JSON_BYTES:
        raise PatchError(f"{what}: patch header of {hlen} bytes exceeds {MAX_JSON_BYTES}")
    doc = load_json_bounded(read_exact(patch, hlen, what), f"{what} header")
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("ops"), list):
        raise PatchError(f"{what}: patch header is not a version-1 operation list")
    if doc.get("size") != out_size:
        raise PatchError(f"{what}: patch builds {doc.get('size')!r} bytes, expected {out_size}")
    total = 0
    for i, op in enumerate(doc["ops"]):
        w = f"{what} op {i}"
        if not isinstance(op, list) or not op or op[0] not in OPS:
            raise PatchError(f"{w}: unknown operation {str(op)[:60]}")
        arity = {"copy": 3, "data": 2, "zstd": 3, "zpf": 5, "bsdiff": 5}[op[0]]
        if len(op) != arity:
            raise PatchError(f"{w}: {op[0]} takes {arity - 1} arguments")
        n = _int(op[1], w, out_size)
        if op[0] == "copy":
            off = _int(op[2], w, src_size)
            if off + n > src_size:
                raise PatchError(f"{w}: copies past the end of the {src_size}-byte source")
        if op[0] == "zstd":
            _int(op[2], w, 1 << 50)
            _int(n, w, PIECE)
        if op[0] in ("zpf", "bsdiff"):
            _int(op[2], w, 1 << 50)
            off, ln = _int(op[3], w, src_size), _int(op[4], w, SRC_MAX)
            if off + ln > src_size:
                raise PatchError(f"{w}: source range runs past the end of the {src_size}-byte source")
            _int(n, w, PIECE)
            if op[0] == "bsdiff" and (n > PIECE_BSDIFF_MAX or ln > PIECE_BSDIFF_MAX + 2 * MARGIN
                                      or op[2] > 2 * PIECE_BSDIFF_MAX + MiB):
                raise PatchError(f"{w}: bsdiff4 piece exceeds the {PIECE_BSDIFF_MAX}-byte bound")
        total += n
    if total != out_size:
        raise PatchError(f"{what}: operations build {total} bytes, expected {out_size}")
    return doc["ops"]


def apply_container(src: BinaryIO | None, src_size: int, patch: BinaryIO, out_size: int,
                    what: str) -> Iterator[bytes]:
    """Stream the target an ``EBPATCH1`` patch builds from seekable ``src`` (``src_size`` bytes)."""
    ops = read_container_header(patch, out_size, src_size if src is not None else 0, what)

    def source(off: int, n: int) -> bytes:
        assert src is not None
        src.seek(off)
        return read_exact(src, n, f"{what}: source")

    for op in ops:
        kind, n = op[0], op[1]
        if kind == "copy":
            assert src is not None
            src.seek(op[2])
            left = n
            for chunk in iter_chunks(src, n):
                left -= len(chunk)
                yield chunk
            if left:
                raise PatchError(f"{what}: source ends {left} bytes early")
        elif kind == "data":
            body = BoundedReader(patch, n)
            for chunk in iter_chunks(body):  # type: ignore[arg-type]
                yield chunk
            if body.left:
                raise PatchError(f"{what}: patch ends {body.left} bytes early (truncated)")
        elif kind == "zstd":
            yield from zstd_decode(BoundedReader(patch, op[2]), n, None, what)  # type: ignore[arg-type]
        elif kind == "zpf":
            yield from zstd_decode(BoundedReader(patch, op[2]), n, source(op[3], op[4]), what)  # type: ignore[arg-type]
        else:  # bsdiff
            out = bsdiff_decode(source(op[3], op[4]), read_exact(patch, op[2], what), n, what)
            for i in range(0, len(out), CHUNK):
                yield out[i:i + CHUNK]
    if patch.read(1):
        raise PatchError(f"{what}: data after the last operation")


def container_stats(ops: list[list[Any]]) -> dict[str, int]:
    """Target bytes produced per operation kind (for reports)."""
    c: Counter[str] = Counter()
    for op in ops:
        c[op[0]] += op[1]
    return dict(c)
