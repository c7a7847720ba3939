"""Split parts: a bundle tar cut into byte ranges that fit on FAT32 media, and read back joined.

A split bundle is ``NAME.tar.part000``, ``NAME.tar.part001``, ... (byte ranges of the signed tar,
in order) plus a part index ``NAME.parts.json``: a DSSE envelope (:func:`edgebundle.signing.sign`,
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
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from edgebundle import layout, tarfmt
from edgebundle import mediatypes as mt
from edgebundle.digest import hash_stream, is_digest, open_regular_file, read_bounded, sha256_bytes
from edgebundle.errors import UsageError, VerificationError
from edgebundle.root import MalformedRootError, canonical_json, load_json_bounded
from edgebundle.signing import Envelope, TrustStore, parse_envelope
from edgebundle.sources import BundleSource, DirectorySource, SizedReader, TarSource, is_remote
from edgebundle.verify import read_root_envelope

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

PART_NAME = re.compile(r"(?P<file>.+\.tar)\.part(?P<num>\d{3})")
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
    try:
        doc = load_json_bounded(data, "part index", MAX_INDEX_BYTES)
    except MalformedRootError as e:  # the shared JSON bound speaks of roots; this is the index
        raise PartIndexError(e.message, hint=e.hint) from None
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
        root_bytes = parse_envelope(read_root_envelope(self), layout.ROOT, mt.ROOT_PAYLOAD_TYPES,
                                    layout.MAX_ROOT_ENVELOPE_BYTES).document()
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
    m = PART_NAME.fullmatch(path.name)
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


def open_source(location: Path | str) -> BundleSource:
    """The right source for what the user pointed at: a bundle dir, a tar, media/parts, or
    ``oci://HOST/REPO:TAG`` (a bundle in a registry, edgebundle/remote.py)."""
    if is_remote(location):
        from edgebundle.remote import RegistrySource  # the HTTP stack loads only for registry locations

        return RegistrySource(str(location))
    path = Path(location)
    if not path.exists():
        raise UsageError(f"{path} does not exist", hint="give the path of a bundle (.tar or directory)")
    found = detect(path)  # split parts, a media directory, or a part index
    if found is not None:
        return found
    if path.is_dir():
        return DirectorySource(path)
    return TarSource.from_path(path)


__all__ = ["CorruptPartError", "DEFAULT_PART_SIZE", "FAT32_MAX", "JoinedReader", "LongPartError",
           "MissingPartError", "Part", "PartError", "PartIndex", "PartIndexError", "PartsSource",
           "ShortPartError", "UnreadablePartError", "detect", "open_source", "parse_part_index", "parse_size"]
