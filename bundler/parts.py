"""Split parts: a bundle tar cut into byte ranges that fit on FAT32 media, and read back joined.

A split bundle is ``NAME.tar.part000``, ``NAME.tar.part001``, ... (byte ranges of the signed tar,
in order) plus a part index ``NAME.parts.json``: a DSSE envelope (:func:`bundler.signing.sign`,
signed with the bundle's key(s)) whose payload lists each part's file name, offset, size and
sha256. docs/MEDIA.md describes the layout.

Invariants:
- Joined in index order the parts are exactly the bundle tar; they are never concatenated to
  disk: :class:`JoinedReader` reads them in sequence as one seekable, read-only stream.
- Every part is written to a temporary name, fsynced and renamed; the index is written last, so
  an interrupted split leaves nothing that :func:`detect` takes for a bundle.
- :meth:`PartsSource.check_parts` runs before anything else trusts the parts (the verifier calls
  it as step 0 through :meth:`PartsSource.precheck`): index signature, then each part's presence,
  size and sha256, each failure naming the part file and the byte range of the bundle that is
  wrong; then the bundle root must be the one the index names.
- Parts are opened read-only (``O_RDONLY``), so read-only media works.
"""

from __future__ import annotations

import bisect
import calendar
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from bundler import layout, tarfmt
from bundler import mediatypes as mt
from bundler.digest import (
    CHUNK,
    HashingWriter,
    atomic_write,
    fsync_dir,
    hash_stream,
    is_digest,
    open_regular_file,
    read_bounded,
    sha256_bytes,
)
from bundler.diskspace import require_free
from bundler.errors import EdgebundleError, UsageError, VerificationError
from bundler.progress import Progress
from bundler.root import Root, canonical_json, load_json_bounded, parse_root
from bundler.signing import Envelope, TrustStore, parse_envelope, sign, verify
from bundler.sources import BundleSource, SizedReader, TarSource, open_source
from bundler.verify import read_root_envelope

PARTS_TYPE = "edgebundle.parts"
PARTS_SPEC_VERSION = 1
INDEX_SUFFIX = ".parts.json"
#: The pre-DSSE detached index signature; only named to refuse it clearly.
LEGACY_SIG_SUFFIX = ".parts.sig.json"
#: The largest file FAT32 can hold: the default part size.
FAT32_MAX = 4 * 1024**3 - 1
DEFAULT_PART_SIZE = FAT32_MAX
MIN_PART_SIZE = 4096
#: Three-digit part numbers: at most 1000 parts (4 TB at the default size).
MAX_PARTS = 1000
MAX_INDEX_BYTES = 1024 * 1024
MAX_INDEX_ENVELOPE_BYTES = layout.envelope_limit(MAX_INDEX_BYTES)

_PART_NAME = re.compile(r"(?P<file>.+\.tar)\.part(?P<num>\d{3})")
_SIZE = re.compile(r"(?P<n>\d+)\s*(?P<unit>[kmgt]?)(?P<i>i?)(?P<b>b?)", re.IGNORECASE)


# --- errors ------------------------------------------------------------------------------

class PartError(VerificationError):
    """A part is missing, short, too long or corrupt (exit code 4, like any verification)."""

    def __init__(self, message: str, hint: str | None = None, *, part: str | None = None,
                 first_byte: int | None = None, last_byte: int | None = None) -> None:
        super().__init__(message, hint or "copy the parts again from the build host or another "
                                          "good stick (bundle write-media re-checks every byte)")
        self.part, self.first_byte, self.last_byte = part, first_byte, last_byte


class MissingPartError(PartError):
    """A part the index lists is not there."""


class ShortPartError(PartError):
    """A part is shorter than the index says (a truncated copy)."""


class LongPartError(PartError):
    """A part is longer than the index says."""


class CorruptPartError(PartError):
    """A part has the right size but the wrong sha256."""


class PartIndexError(VerificationError):
    """The part index is malformed, unsigned, untrusted, or names a different bundle."""


# --- sizes -------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """Bytes from ``4294967295``, ``64K``/``64KiB`` (binary), ``64kB`` (decimal) or ``fat32``."""
    t = text.strip()
    if t.lower() == "fat32":
        return FAT32_MAX
    m = _SIZE.fullmatch(t)
    if not m:
        raise UsageError(f"size {text!r} is not a byte count",
                         hint="write e.g. 4294967295, 64K, 1MiB, 2G or fat32 (4 GiB - 1)")
    power = "kmgt".find(m["unit"].lower()) + 1 if m["unit"] else 0
    decimal = bool(m["unit"]) and bool(m["b"]) and not m["i"]  # "MB" is 10^6, "M" and "MiB" 2^20
    return int(m["n"]) * (1000 if decimal else 1024) ** power


def check_part_size(size: int, total: int | None = None) -> None:
    """Refuse a part size that is too small, or that would need more than :data:`MAX_PARTS`."""
    if size < MIN_PART_SIZE:
        raise UsageError(f"part size {size} is below the minimum of {MIN_PART_SIZE} bytes")
    if total is not None and -(-total // size) > MAX_PARTS:
        raise UsageError(f"a {total}-byte bundle in {size}-byte parts needs more than {MAX_PARTS} parts",
                         hint="choose a larger --size")


# --- the part index ----------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """One part: a file holding bytes ``offset`` .. ``offset + size - 1`` of the bundle tar."""

    file: str
    offset: int
    size: int
    digest: str

    @property
    def last_byte(self) -> int:
        return self.offset + self.size - 1

    def where(self) -> str:
        return f"part {self.file} (bytes {self.offset}\u2013{self.last_byte} of the bundle)"


@dataclass(frozen=True)
class PartIndex:
    """The signed list of parts; joined, they are the tar ``bundle_file`` of ``size`` bytes."""

    name: str
    version: str
    root: str
    bundle_file: str
    size: int
    digest: str
    part_size: int
    parts: tuple[Part, ...]

    def to_bytes(self) -> bytes:
        return canonical_json({
            "_type": PARTS_TYPE, "specVersion": PARTS_SPEC_VERSION,
            "bundle": {"name": self.name, "version": self.version, "root": self.root,
                       "file": self.bundle_file},
            "size": self.size, "digest": self.digest, "partSize": self.part_size,
            "parts": [{"file": p.file, "offset": p.offset, "size": p.size, "digest": p.digest}
                      for p in self.parts],
        })

    @property
    def stem(self) -> str:
        return stem_of(self.bundle_file)


def stem_of(bundle_file: str) -> str:
    """``rag-edge-1.0.0.tar`` -> ``rag-edge-1.0.0`` (the prefix of the index and signature files)."""
    return bundle_file[:-4] if bundle_file.endswith(".tar") else bundle_file


def part_name(bundle_file: str, number: int) -> str:
    return f"{bundle_file}.part{number:03d}"


def _field(d: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise PartIndexError(f"part index: {where} lacks '{key}'")
    v = d[key]
    in_range = not isinstance(v, int) or (not isinstance(v, bool) and 0 <= v <= 1 << 50)
    if not isinstance(v, typ) or not in_range:
        raise PartIndexError(f"part index: {where}.{key} has the wrong type or range")
    return v


def parse_part_index(data: bytes) -> PartIndex:
    """Parse an index strictly: contiguous parts from 0, sizes adding up, well-formed names."""
    doc = load_json_bounded(data, "part index", MAX_INDEX_BYTES)
    if not isinstance(doc, dict) or doc.get("_type") != PARTS_TYPE:
        raise PartIndexError(f"part index is not an {PARTS_TYPE} document")
    if doc.get("specVersion") != PARTS_SPEC_VERSION:
        raise PartIndexError(f"part index has specVersion {doc.get('specVersion')!r}; "
                             f"this edgebundle reads {PARTS_SPEC_VERSION}")
    b = _field(doc, "bundle", dict, "index")
    bundle_file = _field(b, "file", str, "bundle")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.tar", bundle_file):
        raise PartIndexError(f"part index: bundle file name {bundle_file[:80]!r} is not a safe .tar name")
    root, digest = _field(b, "root", str, "bundle"), _field(doc, "digest", str, "index")
    if not (is_digest(root) and is_digest(digest)):
        raise PartIndexError("part index: bundle.root and digest must be sha256 digests")
    size, part_size = _field(doc, "size", int, "index"), _field(doc, "partSize", int, "index")
    raw_parts = _field(doc, "parts", list, "index")
    if not 1 <= len(raw_parts) <= MAX_PARTS:
        raise PartIndexError(f"part index lists {len(raw_parts)} parts (1 to {MAX_PARTS} allowed)")
    parts, offset = [], 0
    for i, rp in enumerate(raw_parts):
        w = f"parts[{i}]"
        p = Part(_field(rp, "file", str, w), _field(rp, "offset", int, w), _field(rp, "size", int, w),
                 _field(rp, "digest", str, w))
        if p.file != part_name(bundle_file, i):
            raise PartIndexError(f"part index: {w} is named {p.file[:80]!r}, expected "
                                 f"{part_name(bundle_file, i)}")
        if p.offset != offset or not 0 < p.size <= part_size or not is_digest(p.digest):
            raise PartIndexError(f"part index: {w} ({p.file}) has a bad offset, size or digest")
        parts.append(p)
        offset += p.size
    if offset != size:
        raise PartIndexError(f"part index: the parts add up to {offset} bytes, the index says {size}")
    return PartIndex(_field(b, "name", str, "bundle"), _field(b, "version", str, "bundle"), root,
                     bundle_file, size, digest, part_size, tuple(parts))


def _index_envelope(data: bytes, name: str) -> Envelope:
    """The part index's envelope (not yet verified), every failure a :class:`PartIndexError`."""
    try:
        return parse_envelope(data, f"part index {name}", mt.PAYLOAD_PARTS, MAX_INDEX_ENVELOPE_BYTES)
    except VerificationError as e:
        raise PartIndexError(e.message, hint=e.hint) from None


# --- reading parts as one stream ---------------------------------------------------------

class UnreadablePartError(PartError):
    """A part cannot be read (an I/O error on a failing stick, a symbolic link, a directory)."""


def _unreadable(part: Part, e: OSError) -> UnreadablePartError:
    return UnreadablePartError(f"{part.where()} cannot be read: {e.strerror or e}",
                               part=part.file, first_byte=part.offset, last_byte=part.last_byte)


def _open_part(directory: Path, part: Part) -> BinaryIO:
    try:
        return open_regular_file(directory / part.file, part.where(), UnreadablePartError, follow=False)
    except FileNotFoundError:
        raise MissingPartError(f"{part.where()} is missing from {directory}",
                               part=part.file, first_byte=part.offset, last_byte=part.last_byte) from None
    except UnreadablePartError as e:  # a link, FIFO, device or directory where the part belongs
        raise UnreadablePartError(e.message, part=part.file, first_byte=part.offset,
                                  last_byte=part.last_byte) from None


class JoinedReader(SizedReader):
    """The parts of a bundle as one seekable, read-only stream; opens one part at a time."""

    def __init__(self, directory: Path, parts: tuple[Part, ...]) -> None:
        self._dir, self._parts = directory, parts
        self._starts = [p.offset for p in parts]
        self._size = parts[-1].offset + parts[-1].size
        self._pos = 0
        self._cur: tuple[int, BinaryIO] | None = None

    def _file(self, i: int) -> BinaryIO:
        if self._cur is None or self._cur[0] != i:
            self._close_current()
            self._cur = (i, _open_part(self._dir, self._parts[i]))
        return self._cur[1]

    def _close_current(self) -> None:
        if self._cur is not None:
            self._cur[1].close()
            self._cur = None

    def read(self, n: int | None = -1) -> bytes:
        """Up to ``n`` bytes, crossing part boundaries, so a short result means end of bundle."""
        want = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        out = bytearray()
        while len(out) < want:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            part = self._parts[i]
            f = self._file(i)
            try:
                f.seek(self._pos - part.offset)
                data = f.read(min(want - len(out), part.offset + part.size - self._pos))
            except OSError as e:
                raise _unreadable(part, e) from None
            if not data:
                got = self._pos - part.offset
                raise ShortPartError(
                    f"{part.where()} ends after {got} of {part.size} bytes: bytes "
                    f"{self._pos}\u2013{part.last_byte} of the bundle are missing",
                    part=part.file, first_byte=self._pos, last_byte=part.last_byte)
            out += data
            self._pos += len(data)
        return bytes(out)

    def close(self) -> None:
        self._close_current()
        super().close()


class PartsSource(TarSource):
    """A bundle split into parts, read in place through a :class:`JoinedReader`."""

    def __init__(self, index_path: Path) -> None:
        self.index_path = Path(index_path)
        self.directory = self.index_path.parent
        data = read_bounded(self.index_path, MAX_INDEX_ENVELOPE_BYTES, "part index", PartIndexError)
        self.index_bytes = data  # the envelope, exactly as on the media
        self.envelope = _index_envelope(data, self.index_path.name)
        self.index = parse_part_index(self.envelope.payload)
        if self.index_path.name != self.index.stem + INDEX_SUFFIX:
            raise PartIndexError(f"{self.index_path.name} describes {self.index.bundle_file}; "
                                 f"its index must be named {self.index.stem + INDEX_SUFFIX}")
        n = len(self.index.parts)
        super().__init__(self.joined, self.index.size,
                         f"{self.index.bundle_file} in {n} part(s) in {self.directory}")
        self._checked = False

    def joined(self) -> BinaryIO:
        """A fresh joined reader over the parts (what :class:`TarSource` reads through)."""
        return cast(BinaryIO, JoinedReader(self.directory, self.index.parts))

    def entries(self) -> dict[str, tarfmt.TarEntry]:
        """Tar members; a damaged part is named before the tar reader can blame a header."""
        if self._entries is None:
            self.check_present()
            try:
                super().entries()
            except tarfmt.TarFormatError:
                self.check_hashes()  # names the corrupt part if there is one
                raise
        assert self._entries is not None
        return self._entries

    def check_signature(self, trust: TrustStore) -> list[str]:
        """The index must be signed by the site's trusted keys, like the bundle root."""
        try:
            return trust.check(self.envelope, f"part index {self.index_path.name}")
        except VerificationError as e:
            raise PartIndexError(e.message, hint=e.hint) from None

    def check_present(self) -> None:
        """Cheap: every part exists with exactly the size the index gives (stat only)."""
        for p in self.index.parts:
            try:
                st = os.lstat(self.directory / p.file)
            except FileNotFoundError:
                raise MissingPartError(f"{p.where()} is missing from {self.directory}",
                                       part=p.file, first_byte=p.offset, last_byte=p.last_byte) from None
            if not stat.S_ISREG(st.st_mode):
                raise UnreadablePartError(f"{p.where()} is not a regular file; refused",
                                          part=p.file, first_byte=p.offset, last_byte=p.last_byte)
            if st.st_size < p.size:
                raise ShortPartError(
                    f"{p.where()} is short: it has {st.st_size} of {p.size} bytes; bytes "
                    f"{p.offset + st.st_size}\u2013{p.last_byte} of the bundle are missing",
                    part=p.file, first_byte=p.offset + st.st_size, last_byte=p.last_byte)
            if st.st_size > p.size:
                raise LongPartError(
                    f"{p.where()} is {st.st_size} bytes, the part index says {p.size}",
                    part=p.file, first_byte=p.offset, last_byte=p.last_byte)

    def check_hashes(self, progress: Callable[[int], None] | None = None) -> None:
        """Every part's sha256 against the index, reading each part once, in order."""
        for p in self.index.parts:
            with _open_part(self.directory, p) as f:
                try:
                    got, size = hash_stream(f, progress)
                except OSError as e:
                    raise _unreadable(p, e) from None
            if size != p.size:
                raise ShortPartError(f"{p.where()} changed size while being read ({size} of {p.size} bytes)",
                                     part=p.file, first_byte=p.offset, last_byte=p.last_byte)
            if got != p.digest:
                raise CorruptPartError(f"{p.where()} is corrupt: sha256 {got.split(':', 1)[1]} "
                                       f"expected {p.digest.split(':', 1)[1]}",
                                       part=p.file, first_byte=p.offset, last_byte=p.last_byte)

    def check_parts(self, trust: TrustStore, progress: Callable[[int], None] | None = None, *,
                    content: bool = True) -> None:
        """Signature, presence, sizes and (with ``content``) hashes of every part, then the root."""
        self.check_signature(trust)
        self.check_present()
        if content:
            self.check_hashes(progress)
        root_bytes = parse_envelope(read_root_envelope(self), layout.ROOT, mt.PAYLOAD_ROOT,
                                    layout.MAX_ROOT_ENVELOPE_BYTES).payload
        if sha256_bytes(root_bytes) != self.index.root:
            raise PartIndexError(
                f"the bundle in these parts has root {sha256_bytes(root_bytes)}, but the part index "
                f"names root {self.index.root}",
                hint="parts of different bundles are mixed on this media; write it again")
        self._checked = self._checked or content

    def precheck(self, trust: TrustStore, progress: Callable[[int], None] | None = None, *,
                 content: bool = True) -> None:
        """The verifier's step 0: :meth:`check_parts`; the hashing pass runs once per source."""
        if self._checked:
            return
        total = getattr(progress, "total", None)
        if content and isinstance(total, int) and total:  # a Progress sized for the content pass
            progress.total = total + self.index.size  # type: ignore[union-attr]
        self.check_parts(trust, progress, content=content)


# --- finding a bundle on media -----------------------------------------------------------

def detect(path: Path) -> BundleSource | None:
    """The source for a media directory, a part index or a first part; None for anything else.

    A directory holding one ``*.parts.json`` is split media; one holding a single ``*.tar`` (and no
    ``oci-layout``) is media with a whole tar. A path ending ``.part000`` is read with its sibling
    index. Anything else (a bundle directory, a tar) is left to the caller.
    """
    path = Path(path)
    if path.is_dir():
        if (path / layout.OCI_LAYOUT).exists():
            return None
        indexes = sorted(p for p in path.glob("*" + INDEX_SUFFIX) if p.is_file())
        if len(indexes) == 1:
            return PartsSource(indexes[0])
        tars = sorted(p for p in path.glob("*.tar") if p.is_file())
        found = indexes or tars
        if len(found) > 1:
            raise UsageError(f"{path} holds {len(found)} bundles: {', '.join(p.name for p in found)}",
                             hint="name the one you mean (its .parts.json, first part or .tar)")
        return TarSource.from_path(tars[0]) if tars else None
    if path.name.endswith(INDEX_SUFFIX):
        return PartsSource(path)
    m = _PART_NAME.fullmatch(path.name)
    if m is None:
        return None
    if int(m["num"]) != 0:
        raise UsageError(f"{path.name} is not the first part",
                         hint=f"give {part_name(m['file'], 0)} or the media directory")
    index = path.with_name(stem_of(m["file"]) + INDEX_SUFFIX)
    if not index.is_file():
        raise PartIndexError(f"{path} has no part index {index.name} beside it",
                             hint="copy the whole media again, including the .parts.json files")
    return PartsSource(index)


# --- splitting ---------------------------------------------------------------------------

class PartWriter:
    """A file-like sink that cuts what is written into parts of ``part_size`` bytes.

    Each part goes to a temporary name, hashed as written, and is fsynced and renamed when full.
    """

    def __init__(self, directory: Path, bundle_file: str, part_size: int,
                 progress: Callable[[int], None] | None = None) -> None:
        self.dir, self.bundle_file, self.part_size, self.progress = directory, bundle_file, part_size, progress
        self.parts: list[Part] = []
        self.offset = 0
        self._cur: tuple[str, HashingWriter, BinaryIO] | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._cur is None:
                self._open()
            assert self._cur is not None
            w = self._cur[1]
            n = min(len(view), self.part_size - w.size)
            w.write(bytes(view[:n]))
            view = view[n:]
            if self.progress:
                self.progress(n)
            if w.size == self.part_size:
                self._finish()
        return len(data)

    def _open(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-part-")
        f = os.fdopen(fd, "wb")
        self._cur = (tmp, HashingWriter(f), f)

    def _finish(self) -> None:
        assert self._cur is not None
        tmp, w, f = self._cur
        f.flush()
        os.fsync(f.fileno())
        f.close()
        name = part_name(self.bundle_file, len(self.parts))
        os.replace(tmp, self.dir / name)
        self.parts.append(Part(name, self.offset, w.size, w.digest))
        self.offset += w.size
        self._cur = None

    def close(self) -> list[Part]:
        if self._cur is not None and self._cur[1].size:
            self._finish()
        self.abort()
        fsync_dir(self.dir)
        return self.parts

    def abort(self) -> None:
        """Drop a half-written part (after an error)."""
        if self._cur is not None:
            self._cur[2].close()
            os.unlink(self._cur[0])
            self._cur = None


def tar_size(member_sizes: list[int]) -> int:
    """Bytes of a bundle tar with these members: headers, padded data, end marker."""
    return sum(tarfmt.BLOCK + s + (-s % tarfmt.BLOCK) for s in member_sizes) + len(tarfmt.END)


def write_bundle_tar(source: BundleSource, root: Root, out: Any) -> None:
    """Stream ``source`` as the bundle tar into ``out``, byte-identical to what ``bundle create`` writes.

    A tar (or parts) is copied through; a directory is serialised with the builder's member order
    and header fields, so ``create -o X.tar`` then ``split`` and ``create --split`` give the same parts.
    """
    if isinstance(source, TarSource):
        with source.open_whole() as f:
            left = source.total
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise EdgebundleError(f"{source.description} ended {left} bytes early")
                out.write(data)
                left -= len(data)
        return
    from bundler.build import member_order

    mtime = calendar.timegm(time.strptime(root.created, "%Y-%m-%dT%H:%M:%SZ"))
    sizes = source.members()
    for name in member_order(root):
        with source.open(name) as f:
            tarfmt.write_member(out, name, sizes[name], mtime, f)  # type: ignore[arg-type]
    out.write(tarfmt.END)


def bundle_tar_size(source: BundleSource, root: Root) -> int:
    if isinstance(source, TarSource):
        return source.total
    from bundler.build import member_order

    sizes = source.members()
    missing = [n for n in member_order(root) if n not in sizes]
    if missing:
        raise VerificationError(f"{source.description} lacks {', '.join(missing[:3])}",
                                hint="the bundle directory is incomplete; build it again")
    return tar_size([sizes[n] for n in member_order(root)])


@dataclass(frozen=True)
class SplitResult:
    index: PartIndex
    index_path: Path


def bundle_file_name(path: Path, source: BundleSource, root: Root) -> str:
    """The tar name the parts are cut from: the tar's own name, else ``NAME-VERSION.tar``."""
    if isinstance(source, PartsSource):
        return source.index.bundle_file
    if isinstance(source, TarSource) and path.is_file() and path.name.endswith(".tar"):
        return path.name
    return f"{root.name}-{root.version}.tar"


def split_bundle(bundle: Path, out_dir: Path, part_size: int, keys: list[Any], *,
                 bundle_file: str | None = None, force: bool = False,
                 progress: Callable[[str, int], Progress] | None = None) -> SplitResult:
    """Cut ``bundle`` (tar, directory or parts) into parts in ``out_dir`` and sign their index.

    The bundle's root must already carry a valid signature by every key in ``keys``: the index
    is signed with the bundle's own key(s), never a different one. ``progress(label, total)``
    makes the progress bar.
    """
    source = open_source(bundle)
    if not keys:
        raise UsageError("bundle split needs the bundle's signing key", hint="pass --key KEY")
    try:
        root_bytes = verify(read_root_envelope(source), mt.PAYLOAD_ROOT,
                            TrustStore([k.public_key() for k in keys], threshold=len(keys)), layout.ROOT,
                            layout.MAX_ROOT_ENVELOPE_BYTES).payload
    except VerificationError as e:
        raise UsageError(f"{bundle} is not signed by the given key(s): {e.message}",
                         hint="sign the part index with the key(s) that signed the bundle") from None
    root = parse_root(root_bytes)
    bundle_file = bundle_file or bundle_file_name(Path(bundle), source, root)
    total = bundle_tar_size(source, root)
    check_part_size(part_size, total)
    replaced = sum(p.stat().st_size for p in out_dir.glob(f"{bundle_file}.part[0-9][0-9][0-9]"))
    require_free(out_dir, total - replaced, f"the parts of {bundle_file}")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem_of(bundle_file)
    index_path = out_dir / (stem + INDEX_SUFFIX)
    if isinstance(source, PartsSource) and source.directory.resolve() == out_dir.resolve():
        raise UsageError("cannot re-split parts into the directory they are read from",
                         hint="give another --output directory")
    if index_path.exists() and not force:
        raise UsageError(f"{index_path} already exists", hint="remove it or pass --force")
    index_path.unlink(missing_ok=True)  # no index while parts are replaced: nothing looks complete
    bar = progress("split", total) if progress else None
    writer = PartWriter(out_dir, bundle_file, part_size, bar)
    whole = HashingWriter(writer)  # type: ignore[arg-type]
    try:
        write_bundle_tar(source, root, whole)
        parts = writer.close()
    except BaseException:
        writer.abort()
        for p in writer.parts:  # no index, so these are unusable: leave nothing partial
            (out_dir / p.name).unlink(missing_ok=True)
        raise
    finally:
        if bar:
            bar.done()
    if whole.size != total:
        raise EdgebundleError(f"wrote {whole.size} bytes of tar, expected {total}")
    index = PartIndex(root.name, root.version, sha256_bytes(root_bytes), bundle_file, total,
                      whole.digest, part_size, tuple(parts))
    (out_dir / (stem + LEGACY_SIG_SUFFIX)).unlink(missing_ok=True)
    atomic_write(index_path, sign(index.to_bytes(), mt.PAYLOAD_PARTS, keys))
    for stale in iter_stale_parts(out_dir, bundle_file, len(parts)):
        stale.unlink()
    fsync_dir(out_dir)
    return SplitResult(index, index_path)


def build_split(builder: Any, output: Path, keys: list[Any], part_size: int, *, force: bool = False,
                progress: Callable[[str, int], Progress] | None = None) -> tuple[Any, SplitResult]:
    """``bundle create --split``: build into a directory beside ``output``, stream it into parts.

    No whole tar is written: the tar is generated from the directory straight into the parts, so
    the parts are byte-identical to splitting ``create -o OUTPUT`` afterwards.
    """
    output = Path(output).resolve()
    if output.suffix != ".tar":
        raise UsageError(f"--split needs -o NAME.tar (got {output.name})",
                         hint="the parts are named NAME.tar.part000, NAME.tar.part001, ...")
    check_part_size(part_size)
    index_path = output.with_name(stem_of(output.name) + INDEX_SUFFIX)
    if index_path.exists() and not force:
        raise UsageError(f"{index_path} already exists", hint="remove it or pass --force")
    work = output.with_name(output.name + ".unsplit")
    result = builder.build(work, keys, force=True)  # a rerun reuses the blobs of an interrupted one
    split = split_bundle(work, output.parent, part_size, keys, bundle_file=output.name, force=True,
                         progress=progress)
    shutil.rmtree(work)
    return result, split


def iter_stale_parts(directory: Path, bundle_file: str, count: int) -> Iterator[Path]:
    """Parts numbered ``count`` and up, left by an earlier split with a smaller size."""
    for p in directory.glob(f"{bundle_file}.part[0-9][0-9][0-9]"):
        m = _PART_NAME.fullmatch(p.name)
        if m and int(m["num"]) >= count:
            yield p


__all__ = ["CorruptPartError", "DEFAULT_PART_SIZE", "FAT32_MAX", "JoinedReader", "LongPartError",
           "MissingPartError", "Part", "PartError", "PartIndex", "PartIndexError", "PartWriter",
           "PartsSource", "ShortPartError", "SplitResult", "UnreadablePartError", "build_split",
           "bundle_tar_size", "detect", "parse_part_index", "parse_size", "split_bundle",
           "write_bundle_tar"]
