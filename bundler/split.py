"""Cutting a bundle into parts for USB media, under a part index signed by the bundle's own keys.

The parts format and its reader (which sites run) are in edgebundle/parts.py; this module writes
it. Parts are cut from the bundle's tar byte stream (a directory bundle is streamed as the tar its
members make, in the builder's member order), so joining the parts gives the very tar.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edgebundle import layout, tarfmt
from edgebundle import mediatypes as mt
from edgebundle.digest import CHUNK, HashingWriter, atomic_write, fsync_dir, sha256_bytes
from edgebundle.diskspace import require_free
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.parts import (
    INDEX_SUFFIX,
    LEGACY_SIG_SUFFIX,
    PART_NAME,
    Part,
    PartIndex,
    PartsSource,
    check_part_size,
    open_source,
    part_name,
    stem_of,
)
from edgebundle.progress import Progress
from edgebundle.root import Root, parse_root
from edgebundle.signing import TrustStore, sign, verify
from edgebundle.sources import BundleSource, TarSource
from edgebundle.verify import read_root_envelope


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
    mtime = root.created_epoch
    sizes = source.members()
    for name in root.member_order():
        with source.open(name) as f:
            tarfmt.write_member(out, name, sizes[name], mtime, f)  # type: ignore[arg-type]
    out.write(tarfmt.END)


def bundle_tar_size(source: BundleSource, root: Root) -> int:
    if isinstance(source, TarSource):
        return source.total
    sizes = source.members()
    missing = [n for n in root.member_order() if n not in sizes]
    if missing:
        raise VerificationError(f"{source.description} lacks {', '.join(missing[:3])}",
                                hint="the bundle directory is incomplete; build it again")
    return tar_size([sizes[n] for n in root.member_order()])


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
        root_bytes = verify(read_root_envelope(source), mt.ROOT_PAYLOAD_TYPES,
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
        m = PART_NAME.fullmatch(p.name)
        if m and int(m["num"]) >= count:
            yield p
