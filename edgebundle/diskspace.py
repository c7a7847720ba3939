"""Out of space, said once and clearly: free-space checks before a write starts, and the message
a full disk turns into (``[Errno 28]`` never reaches the user as a traceback).

Invariant: a :class:`DiskFullError` names the path being written and the bytes free there, and the
bytes needed when they are known.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from edgebundle.errors import EdgebundleError
from edgebundle.progress import human

#: errno values that mean "no room": the filesystem is full, or the user's quota is.
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(EdgebundleError):
    """The output filesystem has no room; whatever was half-written has been removed."""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path`` (or its parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def require_free(path: Path, need: int, what: str) -> None:
    """Refuse before starting when ``need`` bytes will not fit where ``path`` is written."""
    free = free_bytes(path)
    if need > free:
        raise DiskFullError(f"not enough space for {what} at {path}: needs {human(need)} ({need} bytes), "
                            f"{human(free)} ({free} bytes) free",
                            hint="free space there, or write to another directory; nothing was written")


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in FULL


def disk_full_error(e: OSError, need: int | None = None, where: Path | None = None) -> DiskFullError:
    """What to tell the user when a write failed with ENOSPC/EDQUOT (``where``: the output, when
    the error does not name the file)."""
    path = Path(e.filename) if e.filename else where
    free = free_bytes(path) if path else None
    where = f" {path}" if path else ""
    needs = f", needs {human(need)} ({need} bytes)" if need else ""
    has = f"; {human(free)} ({free} bytes) free there" if free is not None else ""
    return DiskFullError(f"out of space writing{where}{needs}{has}",
                         hint="free space there, or write to another directory, then run the same command "
                              "again; the half-written output was removed")
