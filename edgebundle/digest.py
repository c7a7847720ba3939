"""Content digests (``sha256:<hex>``) computed while bytes stream past.

Besides a blob's own digest, a large blob has a list of piece digests (:class:`PieceHasher`): the
SHA-256 of each piece (:func:`piece_bytes`: 64 MiB, doubled until at most :data:`MAX_PIECES`
cover the blob). The signed root pins both (edgebundle/root.py), so a verifier can hash the pieces
of one big blob on several cores at once, where SHA-256 of the whole is one sequential stream.

Invariant: nothing here holds more than :data:`CHUNK` bytes of a blob at once (a read-ahead
hasher: at most ``AHEAD + 2`` chunks; a background piece hasher: at most ``AHEAD`` queued).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from edgebundle.errors import EdgebundleError, UsageError, VerificationError

CHUNK = 1024 * 1024
#: The smallest piece of a large blob's piece digests (a blob has pieces only when it is larger).
#: With :data:`MAX_PIECES`, part of the signed format: changing either changes every root that
#: lists pieces.
PIECE_BYTES = 64 * 1024 * 1024
#: At most this many pieces per blob, whatever its size: a root (which every delta carries) grows by
#: at most this many random digests per large blob, and 16 tasks keep 16 cores busy.
MAX_PIECES = 16


class DigestMismatchError(VerificationError):
    """Bytes do not match the digest or size a signed document pins for them."""
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    """True for a well-formed ``sha256:<64 hex>`` string."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def sha256_bytes(data: bytes) -> str:
    """Digest of a small in-memory document."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def iter_chunks(stream: BinaryIO, limit: int | None = None, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield chunks from ``stream`` until EOF or ``limit`` bytes."""
    remaining = limit
    while remaining is None or remaining > 0:
        want = chunk if remaining is None else min(chunk, remaining)
        data = stream.read(want)
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


def hash_stream(stream: BinaryIO, progress: Callable[[int], None] | None = None,
                stop: threading.Event | None = None, limit: int | None = None) -> tuple[str, int]:
    """Digest and size of everything left in ``stream`` (at most ``limit`` bytes); raises
    :class:`Cancelled` once ``stop`` is set."""
    h = hashlib.sha256()
    size = 0
    for data in iter_chunks(stream, limit):
        if stop is not None and stop.is_set():
            raise Cancelled()
        h.update(data)
        size += len(data)
        if progress:
            progress(len(data))
    return "sha256:" + h.hexdigest(), size


class Cancelled(Exception):
    """A hashing run was stopped because a sibling task already failed."""


#: Chunks a read-ahead thread may hold beyond the one being hashed (memory: (AHEAD + 2) * CHUNK).
AHEAD = 4


def hash_stream_ahead(stream: BinaryIO, progress: Callable[[int], None] | None = None,
                      stop: threading.Event | None = None) -> tuple[str, int]:
    """:func:`hash_stream` with a reader thread a few chunks ahead, so waiting for cold media
    overlaps hashing (both release the GIL); raises :class:`Cancelled` once ``stop`` is set."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(AHEAD)
    quit_reading = threading.Event()

    def read() -> None:
        try:
            for data in iter_chunks(stream):
                while not quit_reading.is_set():
                    try:
                        chunks.put(data, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if quit_reading.is_set():
                    return
            chunks.put(None)
        except BaseException as e:  # handed to the hashing side, which raises it
            chunks.put(e)

    reader = threading.Thread(target=read, name="hash-read-ahead", daemon=True)
    reader.start()
    h, size = hashlib.sha256(), 0
    try:
        while (item := chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if stop is not None and stop.is_set():
                raise Cancelled()
            h.update(item)
            size += len(item)
            if progress:
                progress(len(item))
    finally:
        quit_reading.set()
        reader.join()
    return "sha256:" + h.hexdigest(), size


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Digest and size of a file on disk."""
    with open(path, "rb") as f:
        return hash_stream(f, progress)


def piece_bytes(size: int) -> int:
    """The piece size of a blob of ``size`` bytes: 64 MiB, doubled until :data:`MAX_PIECES` cover it."""
    piece = PIECE_BYTES
    while size > piece * MAX_PIECES:
        piece *= 2
    return piece


def piece_count(size: int) -> int:
    """How many piece digests a blob of ``size`` bytes has: none up to the smallest piece."""
    return 0 if size <= PIECE_BYTES else -(-size // piece_bytes(size))


class PieceHasher:
    """The SHA-256 of each piece (``piece_bytes(size)``) of a blob of ``size`` bytes, however the
    bytes fed to it are sliced."""

    def __init__(self, size: int) -> None:
        self.expected = size
        self.piece = piece_bytes(size)
        self._h = hashlib.sha256()
        self._left = self.piece
        self._done: list[str] = []
        self.size = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        self.size += len(view)
        while len(view) >= self._left:
            self._h.update(view[:self._left])
            view = view[self._left:]
            self._done.append("sha256:" + self._h.hexdigest())
            self._h, self._left = hashlib.sha256(), self.piece
        if len(view):
            self._h.update(view)
            self._left -= len(view)

    def digests(self) -> list[str]:
        """The piece digests of everything fed so far (the last piece may be short); none when
        it was at most one piece, as :func:`piece_count` says, or not the size announced."""
        tail = [] if self._left == self.piece else ["sha256:" + self._h.copy().hexdigest()]
        return self._done + tail if piece_count(self.size) and self.size == self.expected else []


def hash_file_pieces(path: Path) -> tuple[str, int, list[str]]:
    """Digest, size and piece digests of a file on disk, in one read (two cores when free)."""
    with open(path, "rb") as f:
        pieces = PieceHasher(os.fstat(f.fileno()).st_size)
        h, size = hashlib.sha256(), 0
        with BackgroundFeed(pieces.update) as feed:
            for data in iter_chunks(f):
                feed(data)
                h.update(data)
                size += len(data)
    return "sha256:" + h.hexdigest(), size, pieces.digests()


class BackgroundFeed:
    """Calls ``consume`` on a thread of its own with each piece of data handed in, in order.

    For a second hash over the same stream: hashlib releases the GIL on large updates, so the
    two hashes run on two cores. At most ``AHEAD`` chunks wait in the queue (bounded memory). An
    exception in ``consume`` is raised again when the feed is closed.
    """

    def __init__(self, consume: Callable[[bytes], None]) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(AHEAD)
        self._consume = consume
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-hash", daemon=True)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(data)
                except BaseException as e:  # raised by close()
                    self._error = e

    def __call__(self, data: bytes) -> None:
        if self._error is not None:  # stop feeding a consumer that failed (a full disk, say)
            raise self._error
        self._queue.put(bytes(data))

    def __enter__(self) -> "BackgroundFeed":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error


class HashingWriter:
    """Wraps a writable file: hashes and counts every byte written through it (and hands each
    write to ``tee`` too, e.g. a :class:`BackgroundFeed` of piece digests)."""

    def __init__(self, out: BinaryIO, tee: Callable[[bytes], None] | None = None) -> None:
        self.out = out
        self._h = hashlib.sha256()
        self._tee = tee
        self.size = 0

    def write(self, data: bytes) -> int:
        self._h.update(data)
        if self._tee is not None:
            self._tee(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._h.hexdigest()


def check(what: str, expected_digest: str, expected_size: int, digest: str, size: int) -> None:
    """Raise a :class:`VerificationError` naming ``what`` unless digest and size match."""
    if size != expected_size:
        raise DigestMismatchError(
            f"{what}: size is {size} bytes, the signed root says {expected_size}",
            hint="the bundle is truncated or was altered; copy it again from the build host",
        )
    if digest != expected_digest:
        raise DigestMismatchError(
            f"{what}: content digest {digest} does not match the signed {expected_digest}",
            hint="the bundle was altered or the media is corrupt; copy it again from the build host",
        )


def copy_verified(
    src: BinaryIO,
    dst: BinaryIO,
    what: str,
    expected_digest: str,
    expected_size: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Copy ``src`` to ``dst`` in chunks and fail unless the bytes match the signed pin.

    The writes run on a thread of their own (:class:`BackgroundFeed`) while this one hashes, so
    a copy takes as long as the slower of the two, not their sum (a write error is raised here).
    Reads at most ``expected_size + 1`` bytes so an endless source cannot run on.
    """
    h, size = hashlib.sha256(), 0
    with BackgroundFeed(dst.write) as write:
        for data in iter_chunks(src, expected_size + 1):
            write(data)
            h.update(data)
            size += len(data)
            if progress:
                progress(len(data))
    check(what, expected_digest, expected_size, "sha256:" + h.hexdigest(), size)


def check_file_pieces(fd: int, what: str, size: int, pieces: list[str], workers: int) -> None:
    """The open file ``fd`` is ``size`` bytes whose pieces (:func:`piece_bytes`) hash to the
    signed ``pieces``, hashed on ``workers`` threads at once (``os.pread``: no shared position)."""
    step, got = piece_bytes(size), os.fstat(fd).st_size
    if got != size or len(pieces) != piece_count(size):
        raise DigestMismatchError(f"{what}: {got:,} bytes, the signed root pins {size:,} in {len(pieces)} pieces",
                                  hint="the destination changed the file; check the storage, then run again")

    def piece(i: int) -> tuple[int, str, int]:
        at, length, h, done = i * step, min(step, size - i * step), hashlib.sha256(), 0
        while done < length:
            data = os.pread(fd, min(CHUNK, length - done), at + done)
            if not data:
                break
            h.update(data)
            done += len(data)
        return i, "sha256:" + h.hexdigest(), done

    from concurrent.futures import ThreadPoolExecutor  # only a large file's check needs it

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i, got, done in pool.map(piece, range(len(pieces))):
            if got != pieces[i]:  # a short read (a file cut meanwhile) hashes differently too
                raise piece_mismatch(what, (i, len(pieces)), i * step, min(step, size - i * step), pieces[i],
                                     got, done, hint="the destination changed the file; check the storage, "
                                                     "then run again")


def piece_mismatch(what: str, which: tuple[int, int], at: int, length: int, pin: str, got: str, got_size: int,
                   hint: str) -> DigestMismatchError:
    """The error for piece ``which`` (index, count) of ``what``: its byte range, both digests."""
    return DigestMismatchError(
        f"{what}: bytes {at:,} to {at + got_size:,} (piece {which[0] + 1} of {which[1]}) hash to {got}, "
        f"the signed root pins {pin}" + (f" for {length:,} bytes" if got_size != length else ""), hint=hint)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def open_regular_file(path: Path, what: str, error: type[EdgebundleError] = UsageError,
                      follow: bool = True) -> BinaryIO:
    """``path`` opened for reading, refused with ``error`` unless it is a regular file.

    Opened non-blocking, then checked with ``fstat``: a FIFO or device put where a file belongs
    (on media, say) is refused at once instead of blocking ``open`` or ``read`` forever.
    ``follow=False`` also refuses a symbolic link. FileNotFoundError passes through.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"{what} {path} cannot be opened: {e.strerror or e}",
                    hint="it must be a regular file; copy it again") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise error(f"{what} {path} is {kind}, not a regular file; refused before reading it",
                    hint="replace it with the file from the original media")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(path: Path, limit: int, what: str, error: type[EdgebundleError] = UsageError) -> bytes:
    """A small regular file (JSON, a passphrase) read whole, refused with ``error`` past ``limit`` bytes."""
    with open_regular_file(path, what, error) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise error(f"{what} {path} is over the {limit}-byte limit")
    return data
