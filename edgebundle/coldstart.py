"""A cold start's reads, asked for at once: the files a verb imported the last time it ran.

After a reboot, or on a machine whose page cache has moved on, ``installer verify`` spent half a
second on its imports: about 800 small reads (bytecode, extension modules, directories), one after
another, each waiting for the disk, and slower still while the head start reads the bundle. The
files are the same every run, so the console entry (installer/launch.py) calls :func:`begin`
before anything else: it reads the list the verb's last run recorded and has a few threads ask
the kernel for those files together (``posix_fadvise(WILLNEED)``), so the disk serves them side
by side while the imports go on: a cold ``installer verify`` of the bench bundle took about 0.3 s
less. When a sample of the listed files is in the page cache already (``mincore``), no thread
starts: on a warm start they would only take the imports' turns at the interpreter lock
(30-50 ms). At exit, :meth:`ColdStart.record` adds what this run imported and the list lacked.

Invariants:
- Advice only. A listed file is never read into this process: it is opened read-only and
  non-blocking, and only when it is a regular file inside this interpreter's own trees
  (``sys.prefix``, ``sys.base_prefix``, ``sys.path``, the tree this package lives in); the kernel
  is asked to cache it. A stale, edited or hostile list costs some disk reads and nothing else.
- Never in the way: any error reading, advising or writing is ignored; the threads are daemons;
  a list is bounded (:data:`MAX_FILES` entries, :data:`MAX_LIST_BYTES`).
- One list per program, verb and interpreter (the header names the Python version and prefix; a
  list for another is replaced, not used), in the user cache (:func:`edgebundle.usercache.user_cache`),
  written by rename and only when the verb really ran (its module was imported) and imported a
  file the list lacked.
- ``EDGEBUNDLE_COLD_START=off`` turns it off: nothing read ahead, nothing written.
"""

from __future__ import annotations

import atexit
import os
import stat
import sys
import threading

from edgebundle.usercache import user_cache  # os only: nothing here may import much (see begin)

#: Environment switch: ``off`` (or ``0``, ``no``, ``false``) reads nothing ahead and writes no list.
ENV = "EDGEBUNDLE_COLD_START"
#: Threads asking for files at once: enough to keep a virtual or network disk's queue full.
THREADS = 8
#: Listed files looked at first: when all are in the page cache, the start is warm.
PROBES = 8
#: Bounds on a list: entries, bytes of the list file, and bytes advised per file.
MAX_FILES = 4096
MAX_LIST_BYTES = 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024

_VERB_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_HEADER = "# edgebundle cold start 1"


def _header() -> str:
    return f"{_HEADER} python {' '.join(sys.version.split())} prefix {sys.prefix}"


class ColdStart:
    """One verb's list: read ahead at :func:`begin`, brought up to date at exit."""

    def __init__(self, path: str, verb_module: str, listed: list[str]) -> None:
        self.path, self.verb_module, self.listed = path, verb_module, listed

    @classmethod
    def for_verb(cls, program: str, argv: list[str], verbs_package: str) -> ColdStart | None:
        """The list of ``program``'s verb ``argv[0]`` (empty when there is none yet); None when
        ``argv`` names no verb or there is no user cache to keep one in."""
        verb = argv[0] if argv else ""
        if not (0 < len(verb) <= 40 and verb[0].isalpha() and set(verb) <= _VERB_CHARS):
            return None
        try:
            path = os.path.join(user_cache("coldstart"), f"{program}-{verb}.list")
        except RuntimeError:  # no home directory to find
            return None
        return cls(path, f"{verbs_package}.{verb.replace('-', '_')}", _read_list(path) or [])

    def read_ahead(self) -> list[threading.Thread]:
        """Ask for every listed file on :data:`THREADS` daemon threads, in the order the imports
        need them, unless a sample of them is in the page cache already; returns the threads
        (nobody has to wait for them)."""
        roots = _roots()
        if not self.listed or _cached(self.listed[::max(1, len(self.listed) // PROBES)], roots):
            return []
        threads = [threading.Thread(target=_advise, args=(self.listed[i::THREADS], roots), daemon=True,
                                    name=f"coldstart-{i}") for i in range(THREADS)]
        for t in threads:
            t.start()
        return threads

    def record(self) -> None:
        """Add this run's imported files to the list (only when the verb ran and some are new)."""
        if self.verb_module not in sys.modules:  # a typo, --help, or a failure before the verb
            return
        known = set(self.listed)
        entries = (self.listed + [f for f in imported_files() if f not in known])[:MAX_FILES]
        if len(entries) == len(self.listed):  # nothing new, or no room for it: no write
            return
        from pathlib import Path  # at exit only: the start imports as little as it can

        from edgebundle.digest import atomic_write

        try:
            atomic_write(Path(self.path), ("\n".join([_header(), *entries]) + "\n").encode())
        except (OSError, ValueError):
            pass


def imported_files() -> list[str]:
    """What the imports so far read, in import order: each module's bytecode file (or its
    extension module), and its source (the import system checks its time stamp)."""
    out: dict[str, None] = {}
    for module in list(sys.modules.values()):
        spec = getattr(module, "__spec__", None)
        if spec is None or not spec.has_location or not isinstance(spec.origin, str):
            continue
        if spec.cached:
            out[spec.cached] = None
        out[spec.origin] = None
    return [f for f in out if "\n" not in f and os.path.isabs(f)]


def _roots() -> tuple[str, ...]:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, here, *(p for p in sys.path if os.path.isabs(p))}
    return tuple(os.path.join(os.path.normpath(d), "") for d in dirs if d and d != os.sep)


def _read_list(path: str) -> list[str] | None:
    """The list's entries, or None when it is missing, not a regular file (a FIFO would block the
    start), too large, not text or for another interpreter."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, MAX_LIST_BYTES + 1).decode("utf-8")
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    lines = text.splitlines()
    if len(text) > MAX_LIST_BYTES or not lines or lines[0] != _header():
        return None
    return lines[1:MAX_FILES + 1]


def _cached(paths: list[str], roots: tuple[str, ...]) -> bool:
    """True when the first page of each of ``paths`` that can be looked at is in the page cache
    (``mincore`` over a one-page mapping: the question starts no read); False where that cannot
    be asked."""
    try:
        import ctypes  # here, not at the top: only a start with a list pays for it (1-2 ms)

        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    except (ImportError, OSError, AttributeError):
        return False
    failed = ctypes.c_void_p(-1).value
    for p in paths:
        fd = _open_listed(p, roots)
        if fd is None:
            continue
        try:
            if os.fstat(fd).st_size == 0:
                continue
            addr = libc.mmap(None, 1, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED: one page, nothing read
            if addr in (None, failed):
                return False
            try:
                page = ctypes.c_ubyte(0)
                if libc.mincore(addr, 1, ctypes.byref(page)) != 0 or not page.value & 1:
                    return False
            finally:
                libc.munmap(addr, 1)
        finally:
            os.close(fd)
    return True


def _inside(p: str, roots: tuple[str, ...]) -> bool:
    return p.startswith(roots) and os.path.normpath(p) == p


def _open_listed(p: str, roots: tuple[str, ...]) -> int | None:
    """A read-only descriptor of listed file ``p`` when it is a regular file under ``roots``
    (not a source file, whose bytes the imports never read), else None."""
    if p.endswith(".py") or not _inside(p, roots):
        return None
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            return None
        return os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None


def _advise(paths: list[str], roots: tuple[str, ...]) -> None:
    """Ask the kernel to cache each listed regular file under ``roots`` (a source file: look up
    its inode only, for the import system's time-stamp check)."""
    for p in paths:
        if p.endswith(".py") and _inside(p, roots):
            try:
                os.stat(p)
            except OSError:
                pass
            continue
        fd = _open_listed(p, roots)
        if fd is None:
            continue
        try:
            os.posix_fadvise(fd, 0, min(os.fstat(fd).st_size, MAX_FILE_BYTES), os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def begin(program: str, argv: list[str], verbs_package: str) -> ColdStart | None:
    """Read ahead what ``program``'s verb ``argv[0]`` imported when it last ran, and record this
    run's imports at exit. ``verbs_package`` holds one module per verb: the verb counts as run
    when its module was imported, so a typo or ``--help`` leaves no list behind."""
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return None
    started = ColdStart.for_verb(program, argv, verbs_package)
    if started is not None:
        started.read_ahead()
        atexit.register(started.record)
    return started
