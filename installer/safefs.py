"""File access below a root we do not trust to be clean: the NAS models root, the state directory.

Someone with write access to the NAS share or the state directory may have planted symbolic
links, FIFOs or regular files where we expect directories, hoping that our next write lands
elsewhere. Everything here walks from the root by directory file descriptor, one component at a
time, with ``O_NOFOLLOW``: a planted link is refused with an error naming its path, never followed.

Invariants:
- The root itself may be a symlink (a mount point often is); nothing *below* it is followed.
- Files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under unpredictable names
  (:func:`temp_name`, from :mod:`secrets`), then renamed relative to the same directory fd, so a
  name guessed in advance can never redirect the write.
- Only regular files are read or appended to, and only directories are descended into; the type
  is checked with ``fstat`` on the opened descriptor (no check-then-open race), and files are
  opened ``O_NONBLOCK`` first so a planted FIFO cannot block the open.
- Every refusal is an :class:`UnsafePathError` naming the path; a read-only or full file system
  is reported as such (:func:`os_error`).
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgebundle.errors import EdgebundleError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


class UnsafePathError(EdgebundleError):
    """A path below an untrusted root is a symbolic link, or not the type of file we need."""


class ReadOnlyError(EdgebundleError):
    """The file system we must write to is mounted read-only (or refuses writes)."""


def temp_name(prefix: str) -> str:
    """A temporary file name nobody can predict (so nobody can plant a link under it first)."""
    return f"{prefix}{secrets.token_hex(12)}"


def os_error(e: OSError, path: Path | str, doing: str) -> EdgebundleError:
    """Turn an OSError met below an untrusted root into a clear, path-naming error."""
    if e.errno == errno.ELOOP:
        return UnsafePathError(f"{path} is a symbolic link; refusing to follow it while {doing}",
                               hint="remove the link (someone or something planted it) and run again")
    if e.errno == errno.ENOTDIR:
        return UnsafePathError(f"{path} (or a directory above it) is not a directory while {doing}",
                               hint="move that file away, then run again")
    if e.errno in (errno.EROFS,):
        return ReadOnlyError(f"{path} is on a read-only file system ({doing})",
                             hint="remount it read-write (check the NAS export and mount options)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ReadOnlyError(f"permission denied on {path} ({doing})",
                             hint="check ownership and permissions of that path for the installer's user")
    return EdgebundleError(f"cannot access {path} while {doing}: {e.strerror or e}",
                           hint="check the path and the file system, then run again")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``; None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_below(start_fd: int, parts: tuple[str, ...] | list[str], base: Path, what: str,
               create: bool = False, mode: int = 0o755) -> int | None:
    """A new descriptor of ``start_fd/parts...``, each component opened with ``O_NOFOLLOW``.

    None when a component is missing and not ``create``; ``base`` is ``start_fd``'s path, for messages.
    """
    fd = os.dup(start_fd)
    for i, name in enumerate(parts):
        where = base.joinpath(*parts[: i + 1])
        try:
            if create:
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    pass
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            if create:
                raise os_error(OSError(errno.ENOENT, "vanished"), where, f"creating {what}") from None
            return None
        except OSError as e:
            st = lstat_at(fd, name) if e.errno in (errno.ELOOP, errno.ENOTDIR) else None
            os.close(fd)
            if st is not None and stat.S_ISLNK(st.st_mode):  # (O_DIRECTORY|O_NOFOLLOW gives ENOTDIR)
                raise os_error(OSError(errno.ELOOP, "symlink"), where, f"opening {what}") from None
            if st is not None:
                raise UnsafePathError(f"{where} is {_kind(st.st_mode)}, expected a directory",
                                      hint="move it away, then run again") from None
            raise os_error(e, where, f"opening {what}") from None
        os.close(fd)
        fd = nfd
    return fd


def open_regular(dir_fd: int, name: str, where: Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open a regular file ``name`` in ``dir_fd`` without following links or blocking on a FIFO."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            st = lstat_at(dir_fd, name)
            kind = _kind(st.st_mode) if st else "missing"
            raise UnsafePathError(f"{where} is {kind}, expected a regular file",
                                  hint="remove it (nothing of ours is ever a link or special file), "
                                       "then run again") from None
        if isinstance(e, FileNotFoundError):
            raise
        raise os_error(e, where, "opening it") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePathError(f"{where} is {_kind(st.st_mode)}, expected a regular file",
                              hint="remove it, then run again")
    os.set_blocking(fd, True)
    return fd


class SafeRoot:
    """A directory tree entered only through descriptors, never through a symlink below ``path``."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what  # e.g. "the models root", "the state directory": for messages

    def _p(self, parts: tuple[str, ...] | list[str]) -> Path:
        return self.path.joinpath(*parts)

    def open_root(self, create: bool = False) -> int:
        try:
            if create:
                self.path.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise os_error(e, self.path, f"opening {self.what}") from None

    def open_dir(self, parts: tuple[str, ...] | list[str], create: bool = False, mode: int = 0o755) -> int | None:
        """A descriptor of ``root/parts...`` (None when missing and not ``create``); caller closes it."""
        if not create and not os.path.lexists(self.path):
            return None
        fd = self.open_root(create)
        try:
            return open_below(fd, parts, self.path, self.what, create, mode)
        finally:
            os.close(fd)

    @contextmanager
    def dir(self, parts: tuple[str, ...] | list[str], create: bool = False) -> Iterator[int | None]:
        fd = self.open_dir(parts, create)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def read(self, parts: tuple[str, ...] | list[str], limit: int) -> bytes | None:
        """The whole regular file ``root/parts`` (None when it or a parent is missing), at most ``limit`` bytes."""
        *dirs, name = parts
        with self.dir(dirs) as d:
            if d is None:
                return None
            try:
                fd = open_regular(d, name, self._p(parts))
            except FileNotFoundError:
                return None
            with os.fdopen(fd, "rb") as f:
                data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafePathError(f"{self._p(parts)} is over the {limit}-byte limit",
                                  hint="it is not a file the installer wrote: move it away, then run again")
        return data

    def exists(self, parts: tuple[str, ...] | list[str]) -> bool:
        *dirs, name = parts
        with self.dir(dirs) as d:
            return d is not None and lstat_at(d, name) is not None

    def atomic_write(self, parts: tuple[str, ...] | list[str], data: bytes, mode: int = 0o644) -> None:
        """Replace ``root/parts`` with ``data``: unpredictable temp name, O_EXCL, fsync, rename, fsync dir."""
        *dirs, name = parts
        where = self._p(parts)
        with self.dir(dirs, create=True) as d:
            assert d is not None
            st = lstat_at(d, name)
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise UnsafePathError(f"{where} is {_kind(st.st_mode)}, expected a regular file",
                                      hint="remove it, then run again")
            tmp = temp_name(f".{name}.tmp-")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=d)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, name, src_dir_fd=d, dst_dir_fd=d)
                except BaseException:
                    with _quiet():
                        os.unlink(tmp, dir_fd=d)
                    raise
                os.fsync(d)
            except OSError as e:
                raise os_error(e, where, f"writing {self.what}") from None

    def open_append(self, parts: tuple[str, ...] | list[str], mode: int = 0o644) -> int:
        """A descriptor appending to the regular file ``root/parts`` (created when missing)."""
        *dirs, name = parts
        d = self.open_dir(dirs, create=True)
        assert d is not None
        try:
            return open_regular(d, name, self._p(parts), os.O_RDWR | os.O_CREAT | os.O_APPEND, mode)
        finally:
            os.close(d)

    def open_rw(self, parts: tuple[str, ...] | list[str], mode: int = 0o644) -> int:
        """A read-write descriptor of the regular file ``root/parts`` (created when missing)."""
        *dirs, name = parts
        d = self.open_dir(dirs, create=True)
        assert d is not None
        try:
            return open_regular(d, name, self._p(parts), os.O_RDWR | os.O_CREAT, mode)
        finally:
            os.close(d)

    def remove(self, parts: tuple[str, ...] | list[str]) -> None:
        """Unlink ``root/parts`` (a file or link, never followed) durably; nothing when missing."""
        *dirs, name = parts
        with self.dir(dirs) as d:
            if d is None:
                return
            try:
                os.unlink(name, dir_fd=d)
                os.fsync(d)
            except FileNotFoundError:
                return
            except OSError as e:
                raise os_error(e, self._p(parts), f"removing it from {self.what}") from None

    def listdir(self, parts: tuple[str, ...] | list[str]) -> list[str]:
        with self.dir(parts) as d:
            return [] if d is None else sorted(os.listdir(d))


@contextmanager
def _quiet() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


def rename_noreplace(src: str, dst: str, src_dir_fd: int, dst_dir_fd: int) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (Linux renameat2 RENAME_NOREPLACE).

    ``os.rename`` would silently replace an empty directory planted under the final name.
    """
    libc = _libc()
    if libc is not None:
        r = libc.renameat2(src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if r == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), dst)
    if lstat_at(dst_dir_fd, dst) is not None:
        raise FileExistsError(errno.EEXIST, "exists", dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _LIBC.append(lib)
        except (OSError, AttributeError):
            _LIBC.append(None)
    return _LIBC[0]


__all__ = ["ReadOnlyError", "SafeRoot", "open_below", "open_regular", "UnsafePathError", "lstat_at", "os_error", "rename_noreplace", "temp_name"]
