"""The ``stage`` step: write each model version to the NAS, atomically and verified.

Layout under the models root (the NAS mount)::

    <root>/llm/<name>/<version>/<files>           kind llm
    <root>/embeddings/<name>/<version>/<files>    kind embedding
    <root>/indices/<name>/<version>/<files>       kind index
    <root>/<kind-dir>/<name>/<version>/.edgebundle.json   marker: the staged files and digests

The models root is not trusted to be clean (anyone on the NAS share may have planted links):
everything below it is walked by directory file descriptor with ``O_NOFOLLOW``
(:mod:`installer.safefs`); a symbolic link, FIFO or file where we need a directory is refused
with its path, never followed. Files are created ``O_EXCL`` under names from :mod:`secrets`.

How a bundle's versions appear together or not at all:

1. *Prove*: every version to stage is assembled in a hidden sibling
   ``.<version>.partial-<random>`` (its name journaled, so a rerun resumes it). Each file is
   written to a random temporary name, hashed as it is written against the signed digest (the
   media may have changed since verification; the writes run on a thread of their own),
   fsynced, re-read from the same descriptor (a large file by its signed pieces, on every core)
   and renamed only on a match. Files a killed run left there are hashed again before reuse.
2. *Commit*: only when every version of the bundle is complete does stage write the commit
   record ``STATE_DIR/stage-commit.json`` (:data:`COMMIT_RECORD`: the bundle's root digest and,
   per version, its hidden and final names; temp name, fsync, rename, fsync) and then rename each
   partial dir into place (``renameat2(RENAME_NOREPLACE)``, no data moves). Writing the record is
   the commit point: before it, no version of the bundle is visible; after it, the bundle's
   versions are committed and the record is removed only once all are visible.
3. *Recovery*: a kill between two renames leaves the first versions visible and the rest
   waiting, whole, in their hidden dirs. The next ``installer stage``, ``install`` (of any
   bundle) or ``status`` finishes the record before anything else (:func:`complete_pending_stage`,
   under the state lock): each waiting dir is hashed again against the signed root the state
   directory kept and renamed into place. When that cannot be done (a waiting dir changed or
   vanished, a final name appeared meanwhile, the signed root is gone) or a rename is refused,
   the record is marked ``abort`` and the versions already renamed are renamed back to their
   hidden names, so the end is again all or nothing (a kill during the undo is undone again).

Invariants:
- An existing version is never modified: same content is skipped; different content is
  refused, before anything at all is written.
- A version already on the NAS is trusted only after its bytes are hashed again against the
  signed root (the marker is unsigned and the NAS may have been edited). The fast path that
  trusts a matching marker plus file sizes is off by default
  (``EDGEBUNDLE_TRUST_NAS_MARKERS=1``, docs/SECURITY.md).
- Older versions are left alone, so rollback needs no copy.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edgebundle import layout
from edgebundle.compress import open_tar_zstd_member
from edgebundle.digest import CHUNK, check, check_file_pieces, copy_verified, hash_stream, sha256_bytes
from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.faults import faultpoint
from edgebundle.root import KIND_DIRS, ModelEntry, ModelFile, canonical_json, load_json_bounded, parse_root
from edgebundle.verify import WORKERS, VerifiedBundle
from installer.destinations import ProgressFactory, StepResult
from installer.records import CommitVersion, StageCommitDocument
from installer.safefs import (
    SafeRoot,
    UnsafePathError,
    lstat_at,
    open_below,
    open_regular,
    os_error,
    rename_noreplace,
    temp_name,
)
from installer.state import Journal, StateDir, StateDocumentError, parse_document

MARKER = ".edgebundle.json"
#: The commit point of a stage, in the state directory (see the module docstring).
COMMIT_RECORD = "stage-commit.json"
MARKER_TYPE = "edgebundle.staged"
_TMP_PREFIX = ".edgebundle-tmp-"
_PARTIAL = ".partial-"
_MAX_MARKER_BYTES = 4 * 1024 * 1024
#: Set to 1 to trust a staged version whose marker and file sizes match, without hashing it.
TRUST_MARKERS_ENV = "EDGEBUNDLE_TRUST_NAS_MARKERS"


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


def model_parts(model: ModelEntry) -> tuple[str, str, str]:
    return KIND_DIRS[model.kind], model.name, model.version


def model_dir(root: Path, model: ModelEntry) -> Path:
    return root.joinpath(*model_parts(model))


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


def _trust_markers() -> bool:
    return os.environ.get(TRUST_MARKERS_ENV, "") == "1"


# --- walking a version directory by descriptor --------------------------------------------

def walk(dir_fd: int, base: Path, rel: str = "") -> Iterator[tuple[str, int, str, os.stat_result]]:
    """Every non-directory entry below ``dir_fd``: (relative path, parent fd, name, lstat).

    Directories are entered with ``O_NOFOLLOW``; a symlink is yielded as an entry (never
    entered), so callers see it and refuse it. The parent fd is valid only during the yield.
    """
    for name in sorted(os.listdir(dir_fd)):
        st = lstat_at(dir_fd, name)
        if st is None:
            continue
        path = f"{rel}{name}"
        if stat.S_ISDIR(st.st_mode):
            sub = open_below(dir_fd, [name], base / rel, "a model version")
            if sub is None:
                continue
            try:
                yield from walk(sub, base, path + "/")
            finally:
                os.close(sub)
        else:
            yield path, dir_fd, name, st


def _hash_at(dir_fd: int, name: str, where: Path) -> tuple[str, int]:
    fd = open_regular(dir_fd, name, where)
    with os.fdopen(fd, "rb") as f:
        return hash_stream(f)


def read_marker_at(dir_fd: int, where: Path) -> dict[str, Any] | None:
    """The marker of a staged version, or None when it has none (or an unreadable one)."""
    try:
        fd = open_regular(dir_fd, MARKER, where / MARKER)
    except (FileNotFoundError, EdgebundleError):
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_MARKER_BYTES + 1)
    try:
        doc = load_json_bounded(data, str(where / MARKER), _MAX_MARKER_BYTES)
    except EdgebundleError:
        return None
    return doc if isinstance(doc, dict) and doc.get("_type") == MARKER_TYPE else None


def compare(dir_fd: int, where: Path, pins: list[dict[str, Any]], trust_marker: bool = False) -> str | None:
    """Why the version dir at ``dir_fd`` differs from ``pins`` (None when it holds the same bytes).

    Every file is hashed again unless ``trust_marker`` and the marker records exactly ``pins``
    (then only sizes are compared: the documented, off-by-default fast path).
    """
    want = {f["path"]: f for f in pins}
    have: dict[str, os.stat_result] = {}
    odd = []
    for rel, _, _, st in walk(dir_fd, where):
        if rel == MARKER:
            continue
        if not stat.S_ISREG(st.st_mode):
            odd.append(rel)
        have[rel] = st
    if odd:
        return f"{', '.join(odd[:3])} is not a regular file (a link or special file was planted)"
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    if extra or missing:
        return "it holds " + ", ".join(filter(None, [
            f"extra file(s) {', '.join(extra[:3])}" if extra else "",
            f"lacks {', '.join(missing[:3])}" if missing else ""]))
    for rel, f in want.items():
        if have[rel].st_size != f["size"]:
            return f"{rel} is {have[rel].st_size} bytes, expected {f['size']}"
    marker = read_marker_at(dir_fd, where)
    if trust_marker and marker is not None and marker.get("files") == pins:
        return None
    for rel, parent, name, _ in walk(dir_fd, where):
        if rel in want:
            digest, size = _hash_at(parent, name, where / rel)
            if (digest, size) != (want[rel]["digest"], want[rel]["size"]):
                return f"{rel} has digest {digest}, the bundle's is {want[rel]['digest']}"
    return None


def difference(root: Path, model: ModelEntry, trust_marker: bool = False) -> str | None:
    """Why the existing version of ``model`` under ``root`` differs from it (None: same bytes)."""
    kind, name, version = model_parts(model)
    safe = SafeRoot(root, "the models root")
    with safe.dir([kind, name]) as d:
        if d is None:
            return "it does not exist"
        st = lstat_at(d, version)
        where = root / kind / name / version
        if st is None:
            return "it does not exist"
        if not stat.S_ISDIR(st.st_mode):
            return f"{where} exists and is not a directory"
        vfd = open_below(d, [version], root / kind / name, "a model version")
        assert vfd is not None
        try:
            return compare(vfd, where, file_pins(model), trust_marker)
        finally:
            os.close(vfd)


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


def _reserved(path: str) -> bool:
    return path == MARKER or path.rsplit("/", 1)[-1].startswith(_TMP_PREFIX)


class NasDestination:
    """Stages models under one models root (see the module docstring)."""

    step = "stage"

    def __init__(self, root: Path, trust_markers: bool | None = None) -> None:
        self.root = Path(root)
        self.target = str(self.root)
        self.safe = SafeRoot(self.root, "the models root")
        self.trust_markers = _trust_markers() if trust_markers is None else trust_markers

    def plan(self, vb: VerifiedBundle) -> list[ModelPlan]:
        """Decide per model: stage it, or skip it (same content present); refuse conflicts, all at once."""
        plans, conflicts = [], []
        for m in vb.root.models:
            if any(_reserved(f.path) for f in m.files):
                raise UsageError(f"model {m.name} {m.version} has a file name reserved by the installer")
            target = model_dir(self.root, m)
            why = None
            with self.safe.dir(model_parts(m)[:2]) as d:
                exists = d is not None and lstat_at(d, m.version) is not None
            if exists:
                why = difference(self.root, m, self.trust_markers)
                conflicts += [f"{m.kind} {m.name} {m.version} at {target}: {why}"] if why else []
            plans.append(ModelPlan(m, target, exists))
        if conflicts:
            raise StageConflictError(
                "refusing to overwrite existing model version(s) with different content: "
                + "; ".join(conflicts),
                hint="a model version is immutable: give the changed model a new version in the "
                     "bundle spec (older versions stay for rollback); if the NAS copy was tampered "
                     "with, move it away and stage again")
        return plans

    def apply(self, vb: VerifiedBundle, journal: Journal, progress: ProgressFactory) -> StepResult:
        try:
            os.close(self.safe.open_root())
        except EdgebundleError:
            raise UsageError(f"models root {self.root} does not exist or is not a directory",
                             hint="mount the NAS (or fix spec.models.root / --models-root)") from None
        state = StateDir(journal.safe.path)  # the journal's root is the state directory
        note = complete_pending_stage(self.root, state)  # a commit a killed run left: finish it first
        plans = self.plan(vb)
        result = StepResult(self.step, self.target)
        if note:
            result.details.append({"note": note})
        todo = [p for p in plans if not p.present]
        bar = progress(f"stage {self.root}", sum(p.size for p in todo))
        partials: list[tuple[ModelPlan, str]] = []
        for plan in todo:  # 1. prove: every version complete in its hidden partial dir
            try:
                partial, written = self._stage(vb, plan, journal, bar)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise _full(self.root, plan.model, e) from None
                raise os_error(e, plan.target, "staging a model") from None
            partials.append((plan, partial))
            result.bytes += written
        self._commit(vb, partials, state)  # 2. commit: all renamed into place, or none
        for plan in plans:
            result.details.append({"model": f"{plan.model.name} {plan.model.version}",
                                   "path": str(plan.target), "action": "present" if plan.present else "staged"})
        result.skipped = sum(p.present for p in plans)
        result.done = len(todo)
        bar.done()
        return result

    # -- 1. prove ----------------------------------------------------------------------------
    def _partial_name(self, journal: Journal, plan: ModelPlan) -> str:
        """The journaled partial dir of this version, or a new unpredictable one."""
        for rec in reversed(journal.items(self.step)):
            if rec.get("item") == f"partial {plan.target}" and isinstance(rec.get("dir"), str):
                name = rec["dir"]
                if name.startswith(f".{plan.model.version}{_PARTIAL}") and "/" not in name:
                    return name
        name = temp_name(f".{plan.model.version}{_PARTIAL}")
        journal.mark_item(self.step, f"partial {plan.target}", dir=name)
        return name

    def _stage(self, vb: VerifiedBundle, plan: ModelPlan, journal: Journal, bar: Any) -> tuple[str, int]:
        """Assemble the version in its partial dir (resuming a killed run); its name and bytes written."""
        m = plan.model
        kind, name, _ = model_parts(m)
        partial = self._partial_name(journal, plan)
        ppath = self.root / kind / name / partial
        written = 0
        with self.safe.dir([kind, name, partial], create=True) as pfd:
            assert pfd is not None
            _sweep(pfd, ppath, {f.path for f in m.files})
            for f in m.files:
                *dirs, fname = f.path.split("/")
                dfd = open_below(pfd, dirs, ppath, "a partial model dir", create=True)
                assert dfd is not None
                try:
                    item = f"file {plan.target}/{f.path}"
                    st = lstat_at(dfd, fname)
                    if (journal.item_done(self.step, item) and st is not None and stat.S_ISREG(st.st_mode)
                            and st.st_size == f.size and _hash_at(dfd, fname, ppath / f.path) == (f.digest, f.size)):
                        bar(f.size)  # finished by a killed run, and its bytes are still right
                        continue
                    _write_file(vb, m, f, dfd, fname, ppath / f.path, bar)
                    faultpoint("stage.file.renamed")
                    journal.mark_item(self.step, item, digest=f.digest)
                    faultpoint("stage.file.journaled")
                    written += f.size
                finally:
                    os.close(dfd)
            _write_new(pfd, MARKER, marker_bytes(vb, m))
            os.fsync(pfd)
        faultpoint("stage.marker.written")
        return partial, written

    # -- 2. commit ---------------------------------------------------------------------------
    def _commit(self, vb: VerifiedBundle, partials: list[tuple[ModelPlan, str]], state: StateDir) -> None:
        """Write the commit record, then rename every proven partial dir into place (or none)."""
        if not partials:
            return
        record = StageCommitDocument.model_validate({
            "_type": "edgebundle.stage-commit", "root": vb.root_digest, "modelsRoot": str(self.root),
            "state": "commit",
            "versions": [{"kindDir": KIND_DIRS[p.model.kind], "name": p.model.name, "version": p.model.version,
                          "partial": d} for p, d in partials]})
        state.write_bytes(COMMIT_RECORD, record_bytes(record))  # the commit point
        faultpoint("stage.commit.recorded")
        problem = finish_commit(self.root, state, record, None)  # proven a moment ago by this process
        if problem:
            raise StageConflictError(
                f"cannot move the models of {vb.root.name} {vb.root.version} into place: {problem}",
                hint="run stage again to compare what appeared; no version of this bundle was made visible")


def record_bytes(record: StageCommitDocument) -> bytes:
    return json.dumps(record.model_dump(by_alias=True), indent=2, sort_keys=True).encode() + b"\n"


def _has(d: int | None, name: str) -> bool:
    return d is not None and lstat_at(d, name) is not None


def _rename(safe: SafeRoot, v: CommitVersion, src: str, dst: str) -> None:
    with safe.dir([v.kindDir, v.name]) as d:
        if d is None:
            raise os_error(OSError(errno.ENOENT, "vanished"), safe.path / v.kindDir / v.name, "committing a stage")
        try:
            rename_noreplace(src, dst, d, d)
            os.fsync(d)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise StageConflictError(f"{safe.path / v.kindDir / v.name / dst} appeared meanwhile") from None
            raise os_error(e, safe.path / v.kindDir / v.name / dst, "moving a model version into place") from None


def _why_not_ready(safe: SafeRoot, record: StageCommitDocument,
                   pins: dict[tuple[str, str, str], list[dict[str, Any]]] | None) -> str | None:
    """Why the record's waiting versions cannot all be made visible (None: they can).

    ``pins`` (by kind dir, name, version) re-prove every waiting dir; None skips that (the caller
    proved them itself a moment ago).
    """
    for v in record.versions:
        where = safe.path / v.kindDir / v.name
        with safe.dir([v.kindDir, v.name]) as d:
            waiting, visible = _has(d, v.partial), _has(d, v.version)
            if waiting and visible:
                return f"{where / v.version} appeared meanwhile"
            if not waiting and not visible:
                return f"{where / v.partial} vanished before it was moved into place"
            if not waiting or pins is None:
                continue
            want = pins.get((v.kindDir, v.name, v.version))
            if want is None:
                return f"the signed root of {record.root} is not in the state directory to prove {where / v.partial}"
            assert d is not None
            pfd = open_below(d, [v.partial], where, "a partial model dir")
            assert pfd is not None
            try:
                why = compare(pfd, where / v.partial, want)
            except EdgebundleError as e:
                why = e.message
            finally:
                os.close(pfd)
            if why:
                return f"{where / v.partial} changed while it waited: {why}"
    return None


def finish_commit(models_root: Path, state: StateDir, record: StageCommitDocument,
                  pins: dict[tuple[str, str, str], list[dict[str, Any]]] | None) -> str | None:
    """Make every version of ``record`` visible, or none; then drop the record.

    Rolls forward when the record says ``commit`` and every waiting dir is (re-)proven; otherwise
    rolls back (marks the record ``abort`` first, so a kill during the undo is undone again):
    the versions already renamed go back to their hidden partial names. Returns why it rolled
    back, None when every version is visible.
    """
    safe = SafeRoot(models_root, "the models root")
    problem = None if record.state == "commit" else "an earlier commit of this stage was being undone"
    problem = problem or _why_not_ready(safe, record, pins)
    if problem is None:
        journal = state.journal(record.root)
        try:
            for v in record.versions:
                with safe.dir([v.kindDir, v.name]) as d:
                    waiting = _has(d, v.partial)
                if waiting:
                    _rename(safe, v, v.partial, v.version)
                    faultpoint("stage.version.renamed")
                    journal.mark_item("stage", f"model {models_root / v.kindDir / v.name / v.version}",
                                      name=v.name, version=v.version)
                    faultpoint("stage.version.journaled")
        except StageConflictError as e:
            problem = e.message
    if problem is not None:
        if record.state != "abort":
            record = record.model_copy(update={"state": "abort"})
            state.write_bytes(COMMIT_RECORD, record_bytes(record))
        for v in reversed(record.versions):
            with safe.dir([v.kindDir, v.name]) as d:
                renamed = d is not None and not _has(d, v.partial) and _has(d, v.version)
            if renamed:
                _rename(safe, v, v.version, v.partial)
                faultpoint("stage.commit.undone")
    state.safe.remove([COMMIT_RECORD])
    return problem


def complete_pending_stage(models_root: Path, state: StateDir) -> str | None:
    """Finish the stage commit a killed run left, if any (call holding the state lock).

    Every waiting version is hashed again against the signed root the state directory kept
    (checked against the record's digest) before it is renamed into place. Returns a note for
    the operator, None when there was nothing to finish.
    """
    data = state.read_bytes(COMMIT_RECORD)
    if data is None:
        return None
    path = state.path / COMMIT_RECORD
    record: StageCommitDocument = parse_document(data, path, StageCommitDocument)
    if Path(record.modelsRoot) != Path(models_root):
        raise StateDocumentError(
            f"{path} is an unfinished stage commit for models root {record.modelsRoot}, not {models_root}",
            hint=f"run installer status or stage with the site whose models root is {record.modelsRoot}; "
                 "or, if that root is gone, move the record away")
    pins: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    raw = state.bundle_root_bytes(record.root)
    if raw is not None and sha256_bytes(raw) == record.root:
        try:
            root = parse_root(raw)
        except EdgebundleError:
            root = None
        for m in root.models if root else []:
            pins[model_parts(m)] = file_pins(m)
    problem = finish_commit(Path(models_root), state, record, pins)
    names = ", ".join(f"{v.kindDir}/{v.name}/{v.version}" for v in record.versions)
    if problem:
        return (f"an interrupted stage of {record.root} was rolled back, none of {names} is visible: {problem}; "
                "run installer stage with that bundle again")
    return f"an interrupted stage of {record.root} was completed: {names} now visible together"


def _write_file(vb: VerifiedBundle, m: ModelEntry, f: ModelFile, dir_fd: int, name: str, where: Path,
                bar: Any) -> None:
    """Random temp name, O_EXCL; hash while writing; fsync; hash what landed; rename onto ``name``."""
    tmp = temp_name(_TMP_PREFIX)
    what = f"model {m.name} {m.version}, file {f.path} ({layout.blob_path(f.blob)})"
    with vb.source.open(layout.blob_path(f.blob)) as blob:
        stream: BinaryIO = (open_tar_zstd_member(blob, f.size, what) if f.encoding == "tar+zstd" else blob)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w+b") as out:
                copy_verified(_Tap(stream, bar), out, what, f.digest, f.size)  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
                _check_landed(vb, f, out, f"{what} as written to {where.parent}")
            faultpoint("stage.file.written")
            st = lstat_at(dir_fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(f"{where} is a directory, expected a model file",
                                      hint="remove it from the hidden partial dir, then run stage again")
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)  # a full disk or bad bytes: leave no temp file behind
            except OSError:
                pass
            raise
    os.fsync(dir_fd)


def _check_landed(vb: VerifiedBundle, f: ModelFile, out: BinaryIO, what: str) -> None:
    """The file as written hashes to its signed pin: a large file carried as itself by its signed
    pieces, on every core at once; any other whole."""
    blob = vb.root.blobs.get(f.blob)
    if f.encoding == "identity" and blob is not None and blob.pieces and blob.size == f.size:
        check_file_pieces(out.fileno(), what, f.size, list(blob.pieces), WORKERS)
    else:
        out.seek(0)
        check(what, f.digest, f.size, *hash_stream(out))


def _write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Write a small file under ``name`` in ``dir_fd`` through a random O_EXCL temp name."""
    tmp = temp_name(_TMP_PREFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _sweep(dir_fd: int, base: Path, keep: set[str], rel: str = "") -> None:
    """Remove what killed runs (or anyone) left in a partial dir, so it holds exactly its files.

    Links and special files are unlinked (never followed); directories nothing needs are removed.
    """
    needed_dirs = {"/".join(p.split("/")[:i]) + "/" for p in keep for i in range(1, p.count("/") + 1)}
    for name in os.listdir(dir_fd):
        path = f"{rel}{name}"
        st = lstat_at(dir_fd, name)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode):
            sub = open_below(dir_fd, [name], base / rel, "a partial model dir")
            assert sub is not None
            try:
                _sweep(sub, base, keep, path + "/")
            finally:
                os.close(sub)
            if path + "/" not in needed_dirs:
                os.rmdir(name, dir_fd=dir_fd)
        elif path not in keep or not stat.S_ISREG(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)


def list_staged(root: Path) -> list[dict[str, Any]]:
    """Model versions under ``root`` (for ``installer status``), with partial dirs flagged.

    A link, FIFO or file planted where a kind or model directory belongs is refused with an
    :class:`UnsafePathError` naming it (never followed, never silently skipped: what status does
    not show could be served).
    """
    safe = SafeRoot(root, "the models root")
    out: list[dict[str, Any]] = []
    for kind, kdir in KIND_DIRS.items():
        for name in [n for n in safe.listdir([kdir]) if not n.startswith(".")]:
            for version in safe.listdir([kdir, name]):
                with safe.dir([kdir, name]) as d:
                    assert d is not None
                    st = lstat_at(d, version)
                    if st is None or not stat.S_ISDIR(st.st_mode):
                        continue
                    vfd = open_below(d, [version], root / kdir / name, "a model version")
                    assert vfd is not None
                try:
                    out.append(_describe(vfd, root / kdir / name / version, kind, name, version))
                finally:
                    os.close(vfd)
    return out


def _describe(vfd: int, where: Path, kind: str, name: str, version: str) -> dict[str, Any]:
    partial = version.startswith(".")
    files = [(rel, st) for rel, _, _, st in walk(vfd, where) if rel != MARKER]
    marker = None if partial else read_marker_at(vfd, where)
    return {
        "kind": kind, "name": name,
        "version": version.split(_PARTIAL)[0].lstrip(".") if partial else version,
        "path": str(where), "partial": partial, "files": len(files),
        "size": sum(st.st_size for _, st in files if stat.S_ISREG(st.st_mode)),
        "bundle": (marker or {}).get("bundle"),
        "_marker": marker,
    }


def verify_staged(root: Path, entry: dict[str, Any], signed_pins: list[dict[str, Any]] | None) -> str | None:
    """``installer status --verify``: hash a staged version again; None when its bytes are right.

    The pins come from the signed root the state directory kept (``signed_pins``); without one,
    from the version's own marker, which is then reported as unsigned.
    """
    marker = entry.get("_marker")
    pins = signed_pins if signed_pins is not None else (marker or {}).get("files")
    if not isinstance(pins, list) or not all(isinstance(p, dict) and isinstance(p.get("path"), str)
                                             and isinstance(p.get("size"), int) for p in pins):
        return "no marker and no signed root to compare against"
    where = Path(entry["path"])
    safe = SafeRoot(where.parent, "the models root")
    with safe.dir([where.name]) as vfd:
        if vfd is None:
            return "it vanished"
        try:
            return compare(vfd, where, sorted(pins, key=lambda p: p["path"]))
        except EdgebundleError as e:
            return e.message


__all__ = ["COMMIT_RECORD", "MARKER", "ModelPlan", "NasDestination", "NasFullError",
           "StageConflictError", "complete_pending_stage", "difference", "finish_commit", "list_staged", "model_dir",
           "verify_staged"]
