"""A head start for content verification: a child process hashes a bundle tar's large members
while the installer is still starting.

``installer verify`` spends about 0.3 s importing its modules and reading the site before it
hashes its first blob: on a two-core site machine, one core idles for a quarter of the run. The
console entry (installer/launch.py) calls :func:`begin_for_argv` before it imports anything
heavy; that forks a child which reads the tar's headers and hashes its largest members, largest
first, in the units the verifier uses (a member larger than one piece by its pieces, sized by
:func:`edgebundle.digest.piece_bytes` from the member's size alone; a smaller one whole), and
writes each finished range's digest to a pipe. When the verifier reaches the content step,
:meth:`HeadStart.take` stops the child and hands over what it finished. Threads would not do: the
imports hold the GIL, and a hashing thread waiting for it slowed them by a third.

Invariants:
- Nothing is trusted because of it. The child reads the tar's headers and member bytes, never
  the root or its signatures, so the order of trust is unchanged (edgebundle/verify.py); what
  it hands over is the sha256 of byte ranges of the file, which the verifier compares with the
  signed pins exactly as a digest it computed itself.
- Only for the file it hashed: the parent takes the digests only for the same path whose device,
  inode, size and modification time are those the child saw when it started and still are at
  :meth:`~HeadStart.take`; otherwise they are dropped and everything is hashed as before.
- Bounded and silent: the child reads each byte of the file at most once, writes only to its
  pipe, never prints, ends on any error, dies with the parent (``PR_SET_PDEATHSIG``, and the
  parent kills it at ``take`` and at exit). ``EDGEBUNDLE_HEAD_START=off`` turns it off.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import stat
from pathlib import Path

from edgebundle import layout, tarfmt
from edgebundle.digest import PIECE_BYTES, hash_stream, is_digest, piece_bytes

#: Environment switch: ``off`` (or ``0``, ``no``) never starts a child.
ENV = "EDGEBUNDLE_HEAD_START"
#: The verbs that hash every blob of a bundle (the others hash only what they write, as they write it).
VERBS = frozenset({"verify", "plan"})
#: Members smaller than this are left to the verifier: they take it moments.
MIN_BYTES = 16 * 1024 * 1024

#: A byte range of the tar: (offset of its first byte, length).
Range = tuple[int, int]
#: What identifies the file the child hashed: device, inode, size, modification time (ns).
_Identity = tuple[int, int, int, int]


def _identity(st: os.stat_result) -> _Identity:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def units(entries: list[tarfmt.TarEntry]) -> list[Range]:
    """The ranges to hash, largest member first: a member over one piece by its pieces."""
    out: list[Range] = []
    for e in sorted((e for e in entries if e.size >= MIN_BYTES), key=lambda e: -e.size):
        step = piece_bytes(e.size) if e.size > PIECE_BYTES else e.size
        out += [(e.offset + at, min(step, e.size - at)) for at in range(0, e.size, step)]
    return out


class HeadStart:
    """The child hashing one bundle tar; :meth:`take` stops it and returns what it finished."""

    def __init__(self, path: Path, identity: _Identity, pid: int, pipe: int) -> None:
        self.path, self._identity, self._pid, self._pipe = path, identity, pid, pipe
        self._done: dict[Range, str] | None = None

    def is_for(self, path: Path) -> bool:
        """True when ``path`` is the file the child hashes (the same one, unchanged)."""
        try:
            return _identity(os.stat(path)) == self._identity
        except OSError:
            return False

    def take(self, *, wait: bool = False) -> dict[Range, str]:
        """Stop the child (``wait``: let it finish first); the digest of every range it finished
        (none if the file changed since it started)."""
        if self._done is None:
            if not wait:
                self._kill()
            with os.fdopen(self._pipe, "rb") as pipe:
                report = pipe.read()  # to its end, which the child's exit closes: it never blocks on a full pipe
            self._reap()
            self._done = _parse_report(report) if self.is_for(self.path) else {}
        return self._done

    def _kill(self) -> None:
        if self._pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)

    def _reap(self) -> None:
        if self._pid:
            pid, self._pid = self._pid, 0
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def cancel(self) -> None:
        """Stop the child without reading its report (at exit)."""
        if self._done is None:
            self._kill()
            self._reap()
            os.close(self._pipe)
            self._done = {}


_started: HeadStart | None = None


def _parse_report(report: bytes) -> dict[Range, str]:
    """``OFFSET LENGTH DIGEST`` lines; a line cut short by the kill is ignored."""
    out: dict[Range, str] = {}
    for line in report.split(b"\n")[:-1]:
        parts = line.decode("ascii", "replace").split(" ")
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and is_digest(parts[2]):
            out[(int(parts[0]), int(parts[1]))] = parts[2]
    return out


def _looks_like_tar(path: Path) -> bool:
    """A regular file whose first block is a tar header (magic at byte 257)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < 2 * tarfmt.BLOCK:
            return False
        with open(path, "rb") as f:
            head = f.read(tarfmt.BLOCK)
    except OSError:
        return False
    return head[257:265] in (tarfmt.USTAR_MAGIC, tarfmt.GNU_MAGIC)


def begin_for_argv(argv: list[str]) -> HeadStart | None:
    """Start a head start when ``argv`` (without the program) runs a verb of :data:`VERBS` on a
    bundle tar: the first argument after the verb that is a regular file with a tar header."""
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return None
    if not argv or argv[0] not in VERBS:
        return None
    for arg in argv[1:]:
        if not arg.startswith("-") and _looks_like_tar(Path(arg)):
            return begin(Path(arg))
    return None


def begin(path: Path) -> HeadStart | None:
    """Fork the child for the tar at ``path`` (None if it cannot start)."""
    global _started
    try:
        identity = _identity(os.stat(path))
        read_end, write_end = os.pipe()
    except OSError:
        return None
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: verify hashes everything itself, as without a head start
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(path, identity, write_end, parent)
    os.close(write_end)
    _started = HeadStart(path, identity, pid, read_end)
    atexit.register(_started.cancel)
    return _started


def claim(path: Path) -> HeadStart | None:
    """The head start running for ``path``, if any (given out once)."""
    global _started
    found, _started = _started, None
    if found is not None and not found.is_for(path):
        found.cancel()
        return None
    return found


def _child(path: Path, identity: _Identity, pipe: int, parent: int) -> None:
    try:
        quiet = os.open(os.devnull, os.O_RDWR)  # the caller's pipes see EOF when the parent ends
        for fd in (0, 1, 2):
            os.dup2(quiet, fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child quietly, not with a traceback
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the parent dies
        if os.getppid() != parent:
            return
        with open(path, "rb", buffering=0) as f:
            if _identity(os.fstat(f.fileno())) != identity:
                return

            def read_at(offset: int, n: int) -> bytes:
                f.seek(offset)
                return f.read(n)

            entries = tarfmt.read_index(read_at, identity[2], layout.normalise_member_name)
            for offset, length in units(entries):
                f.seek(offset)
                digest, size = hash_stream(f, limit=length)
                if size != length:
                    return
                os.write(pipe, f"{offset} {length} {digest}\n".encode())
    except BaseException:  # noqa: BLE001 - the child only ever helps; any failure just ends it
        pass
    finally:
        os._exit(0)
