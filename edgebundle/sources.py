"""Where bundle bytes come from: a directory, a tar file, split parts (edgebundle/parts.py) or a
registry (edgebundle/remote.py).

A :class:`BundleSource` lists its members and opens each as a stream; it never extracts and
never writes. Sources check structure only (safe names, regular files, no duplicates, sizes
inside the file); whether the content is genuine is the verifier's job.

Invariants:
- A source opens its backing files read-only, so read-only media works.
- ``open(name)`` yields exactly the member's bytes, however the backing file is laid out.
- Reading a member has a deadline derived from its size: the time spent *inside* media reads
  (a slow consumer does not count) may not exceed a grace period plus the member's size at a
  minimum rate (:func:`media_deadline`; ``EDGEBUNDLE_MEDIA_MIN_RATE`` bytes/s, default 1 MiB/s,
  and ``EDGEBUNDLE_MEDIA_GRACE`` seconds, default 30). A failing stick that drips bytes is named
  (:class:`MediaTooSlowError`) instead of holding the installer for hours. A read the kernel
  never returns from cannot be interrupted from here; the check runs whenever a read returns.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from edgebundle import headstart, layout, tarfmt
from edgebundle.digest import open_regular_file
from edgebundle.errors import EdgebundleError, UsageError, VerificationError

if TYPE_CHECKING:
    from edgebundle.signing import TrustStore


#: A bundle location in a registry (edgebundle/remote.py) rather than a path.
REMOTE_SCHEME = "oci://"


def is_remote(location: object) -> bool:
    """Whether a bundle location names a registry (``oci://...``) rather than a file."""
    return isinstance(location, str) and location.startswith(REMOTE_SCHEME)


class SourceError(VerificationError):
    """The bundle's container (directory or tar) is malformed or unsafe."""


class MediaTooSlowError(EdgebundleError):
    """Reading a member from the media took longer than its size allows at the minimum rate."""


MIN_RATE_ENV = "EDGEBUNDLE_MEDIA_MIN_RATE"
GRACE_ENV = "EDGEBUNDLE_MEDIA_GRACE"
DEFAULT_MEDIA_MIN_RATE = 1024 * 1024
DEFAULT_MEDIA_GRACE = 30.0


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{name}={raw!r} is not a positive number", hint=f"unset {name} or give a number, e.g. "
                         f"{name}={default:g}")
    return value


def media_deadline(size: int) -> tuple[float, float]:
    """(seconds reading ``size`` bytes of a member may spend inside media reads, the minimum rate)."""
    rate = _env_number(MIN_RATE_ENV, DEFAULT_MEDIA_MIN_RATE)
    return _env_number(GRACE_ENV, DEFAULT_MEDIA_GRACE) + size / rate, rate


def _media_read(f: BinaryIO, n: int) -> bytes:
    """One read from the media (a seam: tests make it drip)."""
    return f.read(n)


class BundleSource(Protocol):
    """What the verifier and installer read a bundle through.

    Implementations subclass it explicitly and so inherit the defaults of the optional members.
    """

    description: str
    #: True for a source presenting a delta's full target (bundler/delta.py): the verifier holds
    #: it to the full target's pins rather than to the delta's carried ones.
    full_target: bool = False
    #: True when ``open`` gives a seekable stream that reads only from where it was sought to
    #: (the verifier then hashes a large blob's pieces in parallel).
    random_access: bool = False

    def members(self) -> dict[str, int]:
        """Member name -> size, for every member present."""
        ...

    def open(self, name: str) -> "contextlib.AbstractContextManager[BinaryIO]":  # noqa: F821
        """A stream of exactly the member's bytes."""
        ...

    def tar_order(self) -> list[str] | None:
        """Member names in the order they are cheapest to read (a tar's file order); None: any."""
        return None

    def early_digests(self) -> dict[tuple[str, int, int], str]:
        """(member, offset in it, length) -> sha256 of those bytes, hashed before the verifier
        asked (edgebundle/headstart.py); compared with the pins like any other. None by default ({})."""
        return {}

    def precheck(self, trust: "TrustStore", progress: Callable[[int], None] | None = None, *,
                 content: bool = True) -> None:
        """Container checks the verifier runs before it reads the root (split parts: the signed
        part index, each part's presence, size and hash). None by default."""
        return None


def read_small(source: BundleSource, name: str, limit: int) -> bytes:
    """Read a whole small member (a JSON document), refusing one over ``limit`` bytes."""
    size = source.members().get(name)
    if size is None:
        raise SourceError(f"{source.description} has no {name}",
                          hint="this is not an edgebundle bundle, or it is incomplete")
    if size > limit:
        raise SourceError(f"{name} in {source.description} is {size} bytes, over the {limit}-byte limit")
    with source.open(name) as f:
        data = f.read(limit + 1)
    if len(data) != size:
        raise SourceError(f"{name} in {source.description} is shorter than declared (truncated)")
    return data


class DirectorySource(BundleSource):
    """A bundle laid out as a directory tree."""

    random_access = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"directory {self.path}"
        self._members: dict[str, int] | None = None

    def members(self) -> dict[str, int]:
        if self._members is None:
            self._members = self._scan()
        return self._members

    def _scan(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(self.path, followlinks=False):
            rel_dir = os.path.relpath(dirpath, self.path)
            for d in list(dirnames):
                rel = d if rel_dir == "." else f"{rel_dir}/{d}"
                st = os.lstat(os.path.join(dirpath, d))
                if stat.S_ISLNK(st.st_mode):
                    raise SourceError(f"{self.description}: {rel} is a symbolic link; refused")
                if rel not in tarfmt.ALLOWED_DIRS:
                    raise SourceError(f"{self.description}: unexpected directory {rel}",
                                      hint="a bundle directory holds only the bundle; remove it")
            for fn in filenames:
                rel = fn if rel_dir == "." else f"{rel_dir}/{fn}"
                st = os.lstat(os.path.join(dirpath, fn))
                if not stat.S_ISREG(st.st_mode):
                    raise SourceError(f"{self.description}: {rel} is not a regular file; refused")
                name = layout.normalise_member_name(rel)
                if name is None:
                    raise SourceError(f"{self.description}: unsafe member name {rel!r}")
                found[name] = st.st_size
        return found

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        size = self.members()[name]
        with open_regular_file(self.path / name, f"{self.description}: member", SourceError, follow=False) as f:
            yield _Window(f, 0, size, f"{name} in {self.description}")  # type: ignore[misc]


class TarSource(BundleSource):
    """A bundle stored as one tar, read in place through ``opener`` (a file or joined parts)."""

    random_access = True

    def __init__(self, opener: Callable[[], BinaryIO], total: int, description: str) -> None:
        self._opener = opener
        self.total = total
        self.description = description
        self._entries: dict[str, tarfmt.TarEntry] | None = None
        self._head_start: headstart.HeadStart | None = None

    @classmethod
    def from_path(cls, path: Path) -> "TarSource":
        path = Path(path)
        with open_regular_file(path, "bundle file", SourceError):
            pass  # refuse a FIFO or device before anything blocks on it
        source = cls(lambda: open_regular_file(path, "bundle file", SourceError), path.stat().st_size, f"tar {path}")
        source._head_start = headstart.claim(path)
        return source

    def entries(self) -> dict[str, tarfmt.TarEntry]:
        if self._entries is None:
            with self._opener() as f:
                def read_at(off: int, n: int) -> bytes:
                    f.seek(off)
                    return f.read(n)
                idx = tarfmt.read_index(read_at, self.total, layout.normalise_member_name)
            self._entries = {e.name: e for e in idx}
        return self._entries

    def members(self) -> dict[str, int]:
        return {n: e.size for n, e in self.entries().items()}

    def tar_order(self) -> list[str]:
        return list(self.entries())

    def early_digests(self) -> dict[tuple[str, int, int], str]:
        if self._head_start is None:
            return {}
        by_offset = sorted(self.entries().values(), key=lambda e: e.offset)
        starts = [e.offset for e in by_offset]
        out = {}
        for (offset, length), digest in self._head_start.take().items():
            i = bisect.bisect_right(starts, offset) - 1
            e = by_offset[i] if i >= 0 else None
            if e is not None and offset + length <= e.offset + e.size:
                out[(e.name, offset - e.offset, length)] = digest
        return out

    def open_whole(self) -> BinaryIO:
        """The whole tar (a file, or parts joined) as one read-only stream."""
        return self._opener()

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        e = self.entries()[name]
        with self._opener() as f:
            yield _Window(f, e.offset, e.size, f"{name} in {self.description}")  # type: ignore[misc]


class SizedReader(io.RawIOBase):
    """A read-only, seekable stream of a known size; subclasses implement ``read``."""

    _size: int
    _pos: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, min(self._size, base + pos))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class _Window(SizedReader):
    """A read-only view of ``size`` bytes at ``offset`` of a seekable file, read under a deadline."""

    def __init__(self, f: BinaryIO, offset: int, size: int, what: str) -> None:
        self._f, self._offset, self._size, self._pos = f, offset, size, 0
        self._what, self._waited = what, 0.0
        self._deadline, self._rate = media_deadline(size)

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self._f.seek(self._offset + self._pos)
        data = b""
        while len(data) < n:  # a short read is not the end (slow media returns what it has)
            started = time.monotonic()
            got = _media_read(self._f, n - len(data))
            self._waited += time.monotonic() - started
            data += got
            self._pos += len(got)
            self._check_deadline()
            if not got:
                break
        return data

    def _check_deadline(self) -> None:
        if self._waited > self._deadline:
            raise MediaTooSlowError(
                f"the media is too slow: reading {self._what} took more than {self._deadline:.0f} s "
                f"({self._pos:,} of {self._size:,} bytes; the minimum rate is {self._rate:,.0f} bytes/s)",
                hint="the stick or drive may be failing: copy the bundle to a local disk (or other media) and "
                     f"run again; for media known to be slow, lower {MIN_RATE_ENV} (bytes/s) or raise "
                     f"{GRACE_ENV} (seconds)")

