"""The ``stage`` step: write each model version to the NAS, atomically and verified.

Layout under the models root (the NAS mount)::

    <root>/llm/<name>/<version>/<files>           kind llm
    <root>/embeddings/<name>/<version>/<files>    kind embedding
    <root>/indices/<name>/<version>/<files>       kind index
    <root>/<kind-dir>/<name>/<version>/.edgebundle.json   marker: the staged files and digests

A version is assembled in a hidden sibling ``.<version>.partial-<root>`` and renamed into place
only when every file in it is verified, so consumers never see a partial model under its final
name. Each file is written to a temporary name, hashed as it is written (against the signed
digest: the media may have changed since verification), fsynced, read back and hashed again
("what landed"), then renamed. ``tar+zstd`` files are decoded on the fly (bounded).

Invariants:
- An existing version is never modified: same content (by its marker, or by hashing a version
  without one) is skipped; different content is refused, before anything at all is written.
- Older versions are left alone, so rollback needs no copy.
- Resumable: files finished in the partial dir are journaled; a rerun reuses them and redoes
  at most the file in flight. The partial dir's name carries the bundle's root digest, so two
  bundles never share one.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bundler import layout
from bundler.compress import open_tar_zstd_member
from bundler.digest import CHUNK, check, copy_verified, fsync_dir, hash_file, read_bounded
from bundler.errors import EdgebundleError, UsageError
from bundler.root import ModelEntry, canonical_json, load_json_bounded
from bundler.verify import VerifiedBundle
from installer.core import ProgressFactory, StepResult
from installer.faults import faultpoint
from installer.state import Journal

KIND_DIRS = {"llm": "llm", "embedding": "embeddings", "index": "indices"}
MARKER = ".edgebundle.json"
MARKER_TYPE = "edgebundle.staged"
_TMP_PREFIX = ".edgebundle-tmp-"
_MAX_MARKER_BYTES = 4 * 1024 * 1024


class StageConflictError(EdgebundleError):
    """A model version already exists on the NAS with different content."""


class NasFullError(EdgebundleError):
    """The models root ran out of space (or quota) while a model was being staged."""


def _full(root: Path, model: ModelEntry, e: OSError) -> NasFullError:
    """Name the NAS path, what did not fit and how much is free, so the technician knows what to free."""
    try:
        free = f"{shutil.disk_usage(root).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    return NasFullError(f"no space left on the NAS at {root} while staging {model.kind} {model.name} "
                        f"{model.version} ({model.size:,} bytes; {free}): {e.strerror or e}",
                        hint="free space on the NAS, then run stage again: files already written are kept "
                             "(hidden), nothing half-written is visible")


@dataclass(frozen=True)
class ModelPlan:
    model: ModelEntry
    target: Path
    present: bool  # the same content is already in place

    @property
    def size(self) -> int:
        return self.model.size


def model_dir(root: Path, model: ModelEntry) -> Path:
    return root / KIND_DIRS[model.kind] / model.name / model.version


def file_pins(model: ModelEntry) -> list[dict[str, Any]]:
    """The content identity of a model version: path, digest and size of each file, sorted."""
    return sorted(({"path": f.path, "digest": f.digest, "size": f.size} for f in model.files),
                  key=lambda f: f["path"])


def marker_bytes(vb: VerifiedBundle, model: ModelEntry) -> bytes:
    """The marker is deterministic (no time), so the NAS tree is the same however it was reached."""
    return canonical_json({
        "_type": MARKER_TYPE, "name": model.name, "kind": model.kind, "version": model.version,
        "files": file_pins(model),
        "bundle": {"name": vb.root.name, "version": vb.root.version, "root": vb.root_digest},
    }) + b"\n"


def read_marker(version_dir: Path) -> dict[str, Any] | None:
    """The marker of a staged version, or None when it has none (or an unreadable one)."""
    path = version_dir / MARKER
    if not path.is_file() or path.stat().st_size > _MAX_MARKER_BYTES:
        return None
    try:
        doc = load_json_bounded(read_bounded(path, _MAX_MARKER_BYTES, "version marker"), str(path), _MAX_MARKER_BYTES)
    except EdgebundleError:
        return None
    return doc if isinstance(doc, dict) and doc.get("_type") == MARKER_TYPE else None


def _tree(version_dir: Path) -> dict[str, Path]:
    """Every regular file below ``version_dir`` (relative POSIX path -> path), marker excluded."""
    out = {}
    for dirpath, _, filenames in os.walk(version_dir):
        for fn in filenames:
            p = Path(dirpath) / fn
            rel = p.relative_to(version_dir).as_posix()
            if rel != MARKER:
                out[rel] = p
    return out


def difference(version_dir: Path, model: ModelEntry) -> str | None:
    """Why the existing ``version_dir`` differs from ``model`` (None when it holds the same files).

    With a marker whose file list matches, sizes are checked (cheap); without one, every file
    is hashed.
    """
    if version_dir.is_symlink() or not version_dir.is_dir():
        return f"{version_dir} exists and is not a directory"
    want = {f["path"]: f for f in file_pins(model)}
    have = _tree(version_dir)
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    if extra or missing:
        return "it holds " + ", ".join(filter(None, [
            f"extra file(s) {', '.join(extra[:3])}" if extra else "",
            f"lacks {', '.join(missing[:3])}" if missing else ""]))
    marker = read_marker(version_dir)
    if marker is not None:
        if marker.get("files") != list(want.values()):
            mine = {f.get("path"): f.get("digest") for f in marker.get("files", []) if isinstance(f, dict)}
            changed = sorted(p for p in want if mine.get(p) != want[p]["digest"])
            return f"its marker records different content for {', '.join(changed[:3]) or 'its files'}"
        for rel, f in want.items():
            if have[rel].stat().st_size != f["size"]:
                return f"{rel} is {have[rel].stat().st_size} bytes, expected {f['size']}"
        return None
    for rel, f in want.items():
        digest, size = hash_file(have[rel])
        if (digest, size) != (f["digest"], f["size"]):
            return f"{rel} has digest {digest}, the bundle's is {f['digest']}"
    return None


class _Tap:
    """Passes reads through, feeding progress and the mid-file kill point."""

    def __init__(self, stream: BinaryIO, progress: Any) -> None:
        self._s, self._progress = stream, progress

    def read(self, n: int = -1) -> bytes:
        data = self._s.read(CHUNK if n is None or n < 0 else min(n, CHUNK))
        if data:
            self._progress(len(data))
            faultpoint("stage.file.chunk")
        return data


class NasDestination:
    """Stages models under one models root (see the module docstring)."""

    step = "stage"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.target = str(self.root)

    def plan(self, vb: VerifiedBundle) -> list[ModelPlan]:
        """Decide per model: stage it, or skip it (same content present); refuse conflicts, all at once."""
        plans, conflicts = [], []
        for m in vb.root.models:
            if any(f.path == MARKER or f.path.rsplit("/", 1)[-1].startswith(_TMP_PREFIX) for f in m.files):
                raise UsageError(f"model {m.name} {m.version} has a file name reserved by the installer")
            target = model_dir(self.root, m)
            why = difference(target, m) if os.path.lexists(target) else None
            if why is not None:
                conflicts.append(f"{m.kind} {m.name} {m.version} at {target}: {why}")
            plans.append(ModelPlan(m, target, os.path.lexists(target)))
        if conflicts:
            raise StageConflictError(
                "refusing to overwrite existing model version(s) with different content: "
                + "; ".join(conflicts),
                hint="a model version is immutable: give the changed model a new version in the "
                     "bundle spec (older versions stay for rollback)")
        return plans

    def apply(self, vb: VerifiedBundle, journal: Journal, progress: ProgressFactory) -> StepResult:
        if not self.root.is_dir():
            raise UsageError(f"models root {self.root} does not exist or is not a directory",
                             hint="mount the NAS (or fix spec.models.root / --models-root)")
        plans = self.plan(vb)
        result = StepResult(self.step, self.target)
        bar = progress(f"stage {self.root}", sum(p.size for p in plans if not p.present))
        for plan in plans:
            if plan.present:
                result.skipped += 1
                result.details.append({"model": f"{plan.model.name} {plan.model.version}",
                                       "path": str(plan.target), "action": "present"})
                continue
            try:
                result.bytes += self._stage(vb, plan, journal, bar)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise _full(self.root, plan.model, e) from None
            result.done += 1
            result.details.append({"model": f"{plan.model.name} {plan.model.version}",
                                   "path": str(plan.target), "action": "staged"})
        bar.done()
        return result

    def _stage(self, vb: VerifiedBundle, plan: ModelPlan, journal: Journal, bar: Any) -> int:
        """Assemble the version in its partial dir, then rename it into place; bytes written."""
        m, target = plan.model, plan.target
        partial = target.with_name(f".{target.name}.partial-{vb.root_digest.split(':')[1][:16]}")
        partial.mkdir(parents=True, exist_ok=True)
        written = 0
        for f in m.files:
            dest = partial / f.path
            item = f"file {target}/{f.path}"
            if journal.item_done(self.step, item) and dest.is_file() and dest.stat().st_size == f.size:
                bar(f.size)
                continue
            self._write_file(vb, f, dest, bar, f"model {m.name} {m.version}, file {f.path} ({layout.blob_path(f.blob)})")
            faultpoint("stage.file.renamed")
            journal.mark_item(self.step, item, digest=f.digest)
            faultpoint("stage.file.journaled")
            written += f.size
        _sweep(partial, {f.path for f in m.files})
        marker = partial / MARKER
        with open(marker, "wb") as out:
            out.write(marker_bytes(vb, m))
            out.flush()
            os.fsync(out.fileno())
        for d in sorted({(partial / f.path).parent for f in m.files} | {partial}):
            fsync_dir(d)
        faultpoint("stage.marker.written")
        try:
            os.rename(partial, target)  # a directory rename: the version appears whole, or not at all
        except OSError as e:
            raise StageConflictError(f"cannot move {m.name} {m.version} into place at {target}: {e}",
                                     hint="something else created that version meanwhile; run stage "
                                          "again to compare it") from None
        fsync_dir(target.parent)
        faultpoint("stage.version.renamed")
        journal.mark_item(self.step, f"model {target}", name=m.name, version=m.version)
        faultpoint("stage.version.journaled")
        return written

    @staticmethod
    def _write_file(vb: VerifiedBundle, f: Any, dest: Path, bar: Any, what: str) -> None:
        """Temp name beside ``dest``; hash while writing; fsync; hash what landed; rename."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(_TMP_PREFIX + dest.name)
        with vb.source.open(layout.blob_path(f.blob)) as blob:
            stream: BinaryIO = (open_tar_zstd_member(blob, f.size, what) if f.encoding == "tar+zstd"
                                else blob)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                with os.fdopen(fd, "wb") as out:
                    copy_verified(_Tap(stream, bar), out, what, f.digest, f.size)  # type: ignore[arg-type]
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                tmp.unlink(missing_ok=True)  # a full disk or bad bytes: leave no temp file behind
                raise
        check(f"{what} as written to {dest.parent}", f.digest, f.size, *hash_file(tmp))
        faultpoint("stage.file.written")
        os.replace(tmp, dest)
        fsync_dir(dest.parent)


def _sweep(partial: Path, keep: set[str]) -> None:
    """Remove leftovers of killed runs (temp files) so the version dir holds exactly its files."""
    for dirpath, dirnames, filenames in os.walk(partial, topdown=False):
        for fn in filenames:
            p = Path(dirpath) / fn
            if p.relative_to(partial).as_posix() not in keep:
                p.unlink()
        for dn in dirnames:
            d = Path(dirpath) / dn
            if d.is_symlink():
                d.unlink()
            elif not any(d.iterdir()):
                d.rmdir()


def list_staged(root: Path) -> list[dict[str, Any]]:
    """Model versions under ``root`` (for ``installer status``), with partial dirs flagged."""
    out: list[dict[str, Any]] = []
    for kind, kdir in KIND_DIRS.items():
        base = Path(root) / kdir
        if not base.is_dir():
            continue
        for name_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for vdir in sorted(name_dir.iterdir()):
                if not vdir.is_dir():
                    continue
                partial = vdir.name.startswith(".")
                marker = None if partial else read_marker(vdir)
                files = _tree(vdir)
                out.append({
                    "kind": kind, "name": name_dir.name,
                    "version": vdir.name.split(".partial-")[0].lstrip(".") if partial else vdir.name,
                    "path": str(vdir), "partial": partial, "files": len(files),
                    "size": sum(p.stat().st_size for p in files.values()),
                    "bundle": (marker or {}).get("bundle"),
                })
    return out


__all__ = ["KIND_DIRS", "MARKER", "ModelPlan", "NasDestination", "NasFullError", "StageConflictError",
           "difference", "list_staged", "model_dir"]
