"""Field media: put a bundle on a mounted stick, prove it from the device, make the stick self-sufficient.

``bundle write-media BUNDLE DEST`` writes, in this order: the bundle (its parts and signed part
index, or one tar), then an offline installer (``wheelhouse/`` with ``edgebundle`` and
every dependency for the target platforms, and ``bootstrap.sh``), the runbook ``README.txt`` and
``SHA256SUMS``. docs/MEDIA.md is the user's guide.

Invariants:
- Every file is written to a temporary name on the media, fsynced, dropped from the page cache
  (``posix_fadvise(DONTNEED)``), read back from the device and hashed; only a file whose bytes
  read back right is renamed to its final name. A pulled stick never leaves a file that looks
  complete, and a file with a final name was proven at least once.
- The expected hash of a part comes from the signed part index, so a corrupt source part is
  refused too. A file already on the media with the right size and hash is kept (re-run = resume).
- Anything that can fail without touching the media (reading the bundle, building the
  wheelhouse, free space, FAT32's 4 GiB cap) is checked before the first byte is written.
- The media is only read by the site side: bootstrap.sh creates its venv elsewhere.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bundler.runbook import (
    BOOTSTRAP,
    README,
    SUMS,
    WHEELHOUSE,
    FileReport,
    installer_extras,
    render_bootstrap,
    render_runbook,
    render_sums,
)
from bundler.split import bundle_file_name, bundle_tar_size, write_bundle_tar
from bundler.wheelhouse import Target, build_wheelhouse, default_wheel_cache, wheel_version
from edgebundle.digest import HashingWriter, fsync_dir, hash_file, hash_stream, iter_chunks
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.parts import FAT32_MAX, PartIndex, PartsSource, open_source
from edgebundle.progress import Progress, human
from edgebundle.root import Root, parse_root
from edgebundle.sources import BundleSource, TarSource
from edgebundle.verify import root_envelope

#: Bundle files another bundle may have left on the media.
_BUNDLE_FILE = re.compile(r".+(\.parts\.json|\.parts\.sig\.json|\.tar|\.tar\.part\d{3})")


class MediaVerifyError(VerificationError):
    """A file read back from the media does not match what was written (or what is signed)."""


class MediaError(EdgebundleError):
    """The media cannot be written (full, read-only, I/O error, FAT32 file-size cap)."""


# --- targets and the wheelhouse ----------------------------------------------------------


# --- writing one file, proven from the device ---------------------------------------------


def _drop_cache(fd: int) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read comes from the device."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def read_back(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """sha256 and size of ``path`` as the device holds it (cache dropped before and after)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _drop_cache(fd)
        with os.fdopen(os.dup(fd), "rb") as f:
            result = hash_stream(f, progress)
        _drop_cache(fd)  # leave nothing cached, so a later verify also reads the device
        return result
    finally:
        os.close(fd)


class _Tee:
    """Writes to ``out`` (hashing) and reports each chunk to ``progress``."""

    def __init__(self, out: HashingWriter, progress: Callable[[int], None] | None) -> None:
        self.out, self.progress = out, progress

    def write(self, data: bytes) -> int:
        self.out.write(data)
        if self.progress:
            self.progress(len(data))
        return len(data)


def write_verified(dest: Path, name: str, size: int, produce: Callable[[Any], None],
                   expected: str | None = None, progress: Callable[[int], None] | None = None) -> FileReport:
    """Write ``name`` in ``dest`` from ``produce(out)``, then prove it from the device.

    ``expected`` is the sha256 the bytes must have (a signed part, a staged wheel); without it
    the hash taken while writing is what the read-back must match.
    """
    final = dest / name
    final.parent.mkdir(parents=True, exist_ok=True)
    if expected is not None and final.is_file() and final.stat().st_size == size:
        t0 = time.monotonic()
        if read_back(final, progress) == (expected, size):
            return FileReport(name, size, expected, "kept", verify_seconds=time.monotonic() - t0)
    tmp = final.with_name(f".tmp-{final.name}")
    try:
        t0 = time.monotonic()
        with open(tmp, "wb") as f:
            w = HashingWriter(f)  # type: ignore[arg-type]
            produce(_Tee(w, progress))
            f.flush()
            os.fsync(f.fileno())
            _drop_cache(f.fileno())
        t1 = time.monotonic()
        want = expected or w.digest
        if (w.digest, w.size) != (want, size):
            tmp.unlink()
            return FileReport(name, size, want, "FAILED", t1 - t0, error=(
                f"the source gave {w.size} bytes with sha256 {w.digest}, expected {size} bytes with "
                f"{want}: the bundle being copied is damaged"))
        got = read_back(tmp, progress)
        t2 = time.monotonic()
        if got != (want, size):
            tmp.unlink()
            return FileReport(name, size, want, "FAILED", t1 - t0, t2 - t1, error=(
                f"read back from the media as {got[1]} bytes with sha256 {got[0]}, written as "
                f"{want}: the media is faulty"))
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"writing {name} to {dest} failed: {e}",
                         hint="check the media is mounted read-write, has space, and is not failing") from None
    except BaseException:  # e.g. a damaged source part: leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    return FileReport(name, size, want, "ok", t1 - t0, t2 - t1)


def _copy_from(opener: Callable[[], BinaryIO], size: int) -> Callable[[Any], None]:
    def produce(out: Any) -> None:
        with opener() as f:
            for chunk in iter_chunks(f, size + 1):  # one byte over: a grown source shows as a mismatch
                out.write(chunk)
    return produce


def _copy_path(path: Path, size: int) -> Callable[[Any], None]:
    return _copy_from(lambda: open(path, "rb"), size)


def _bytes(data: bytes) -> Callable[[Any], None]:
    return lambda out: out.write(data)


# --- what goes on the media ---------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One file to put on the media."""

    name: str  # relative to DEST, POSIX
    size: int
    produce: Callable[[Any], None]
    expected: str | None = None


@dataclass
class BundleOnMedia:
    """The bundle being written: its root, signers, and the files that carry it."""

    root: Root
    signers: list[str]
    items: list[Item]
    parts: PartIndex | None
    tar_bytes: int


def bundle_items(bundle: Path) -> BundleOnMedia:
    """Read the bundle's signed root and plan its files: parts + signed index, or one tar."""
    source: BundleSource = open_source(bundle)
    envelope = root_envelope(source)
    root, signers = parse_root(envelope.document()), envelope.signer_ids
    if isinstance(source, PartsSource):
        idx = source.index
        items = [Item(p.file, p.size, _copy_path(source.directory / p.file, p.size), p.digest)
                 for p in idx.parts]
        items += [Item(source.index_path.name, len(source.index_bytes), _bytes(source.index_bytes))]
        return BundleOnMedia(root, signers, items, idx, idx.size)
    name = bundle_file_name(Path(bundle), source, root)
    size = bundle_tar_size(source, root)
    if isinstance(source, TarSource):
        produce = _copy_from(source.open_whole, size)  # the tar as it is
    else:
        produce = lambda out: write_bundle_tar(source, root, out)  # noqa: E731 (a directory, as its tar)
    return BundleOnMedia(root, signers, [Item(name, size, produce)], None, size)


def _wheel_items(wheelhouse: Path) -> list[Item]:
    items = []
    for whl in sorted(wheelhouse.glob("*.whl")):
        digest, size = hash_file(whl)
        items.append(Item(f"{WHEELHOUSE}/{whl.name}", size,
                          _copy_path(whl, size), digest))
    return items


def _mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, from /proc/self/mounts."""
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3:
            out.append((f[1].encode().decode("unicode_escape"), f[2]))
    return out


def filesystem_type(path: Path) -> str | None:
    """The filesystem ``path`` lives on (``vfat`` for a FAT32 stick), or None when unknown."""
    p = str(path.resolve())
    best: tuple[str, str | None] = ("", None)
    for mnt, fstype in _mounts():
        if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, fstype)
    return best[1]


def _preflight(dest: Path, items: list[Item], replace: bool) -> None:
    """Refuse before writing: another bundle's files, FAT32's file-size cap, too little space."""
    ours = {i.name for i in items}
    others = sorted(p.name for p in dest.iterdir()
                    if p.is_file() and _BUNDLE_FILE.fullmatch(p.name) and p.name not in ours)
    if others and not replace:
        raise UsageError(f"{dest} already holds another bundle's files: {', '.join(others[:6])}",
                         hint="pass --replace to remove them, or use an empty stick")
    if filesystem_type(dest) in ("vfat", "msdos"):
        big = [i for i in items if i.size > FAT32_MAX]
        if big:
            raise MediaError(f"{dest} is FAT32, which cannot hold {big[0].name} ({human(big[0].size)})",
                             hint="split the bundle first: bundle split BUNDLE --size fat32 --key KEY")
    present = {i.name: (dest / i.name).stat().st_size for i in items if (dest / i.name).is_file()}
    need = sum(i.size for i in items) - sum(present.values())
    st = os.statvfs(dest)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise MediaError(f"{dest} has {human(free)} free, the media needs {human(need)} more",
                         hint="use a larger stick, or --no-wheels to leave out the installer")
    for name in others:
        (dest / name).unlink()


# --- generated files ---------------------------------------------------------------------


# --- the whole operation -----------------------------------------------------------------

@dataclass
class MediaResult:
    dest: Path
    root: Root
    files: list[FileReport] = field(default_factory=list)
    wheel_targets: list[Target] | None = None
    edgebundle_version: str | None = None
    verified: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "dest": str(self.dest), "name": self.root.name,
                "version": self.root.version, "root": self.root.digest,
                "files": [f.to_dict() for f in self.files],
                "bytes": sum(f.size for f in self.files),
                "wheelhouse": None if self.wheel_targets is None else {
                    "edgebundle": self.edgebundle_version,
                    "targets": [{"platform": t.platform, "python": t.python} for t in self.wheel_targets]},
                "verified": self.verified, "seconds": round(self.seconds, 2)}


def write_media(bundle: Path, dest: Path, *, targets: list[Target] | None,
                wheel_cache: Path | None = None, own_wheel: Path | None = None,
                site_file: str = "/etc/edgebundle/site.yaml", mount_point: str = "/media/usb",
                replace: bool = False, progress_enabled: bool | None = None,
                on_file: Callable[[FileReport], None] = lambda r: None,
                log: Callable[[str], None] = lambda s: None) -> MediaResult:
    """Write ``bundle`` and (``targets`` not None) the offline installer to ``dest``, proving each file.

    Returns a report; files that failed are listed with status ``FAILED`` (the caller exits 4).
    """
    t_start = time.monotonic()
    dest = Path(dest)
    if not dest.is_dir():
        raise UsageError(f"{dest} is not a directory", hint="mount the stick and give its mount point")
    bom = bundle_items(bundle)
    src_dir = Path(bundle).resolve() if Path(bundle).is_dir() else Path(bundle).resolve().parent
    if src_dir == dest.resolve():
        raise UsageError("the bundle is already in DEST", hint="give the bundle's build-host copy as BUNDLE")
    result = MediaResult(dest, bom.root, wheel_targets=targets)
    with tempfile.TemporaryDirectory(prefix="edgebundle-wheelhouse-") as tmp:
        stage = Path(tmp)
        items = list(bom.items)
        if targets is not None:
            wheelhouse = stage / WHEELHOUSE
            own = build_wheelhouse(wheelhouse, targets, cache=wheel_cache or default_wheel_cache(),
                                   own_wheel=own_wheel, log=log, extras=installer_extras(bom.root))
            result.edgebundle_version = wheel_version(own)
            items += _wheel_items(wheelhouse)
        _preflight(dest, items, replace)
        for item in items:
            bar = Progress(f"{item.name} (write + read back)", 2 * item.size, enabled=progress_enabled)
            report = write_verified(dest, item.name, item.size, item.produce, item.expected, bar)
            bar.done()
            result.files.append(report)
            on_file(report)
        if targets is not None:
            keep = {i.name.split("/", 1)[1] for i in items if i.name.startswith(WHEELHOUSE + "/")}
            for stale in (dest / WHEELHOUSE).glob("*"):
                if stale.is_file() and stale.name not in keep:
                    stale.unlink()
    generated: list[tuple[str, bytes]] = []
    if targets is not None:
        generated.append((BOOTSTRAP, render_bootstrap(result.edgebundle_version or "", targets,
                                                      installer_extras(bom.root)).encode()))
    generated.append((README, render_runbook(bom, list(result.files), wheels=targets,
                                             version=result.edgebundle_version, site_file=site_file,
                                             mount_point=mount_point).encode()))
    for name, data in generated:
        report = write_verified(dest, name, len(data), _bytes(data))
        result.files.append(report)
        on_file(report)
    sums = render_sums(result.files).encode()
    report = write_verified(dest, SUMS, len(sums), _bytes(sums))
    result.files.append(report)
    on_file(report)
    result.seconds = time.monotonic() - t_start
    return result


def verify_media(dest: Path, trust: Any, progress_enabled: bool | None = None) -> dict[str, Any]:
    """Full verification of what is now on the media (parts, signature, every blob), from the device."""
    from edgebundle.verify import Verifier

    source = open_source(dest)
    bar = Progress("verify media", sum(source.members().values()), enabled=progress_enabled)
    vb = Verifier(trust, progress=bar).verify(source)
    bar.done()
    return {"ok": True, "root": vb.root_digest, "signers": vb.signers, "bytes": bar.done_bytes}


__all__ = ["BundleOnMedia", "MediaError", "MediaResult", "MediaVerifyError", "bundle_items", "filesystem_type",
           "verify_media", "write_media", "write_verified"]
