"""The installer's state directory: the only place the installer writes besides its destinations.

Layout (all under ``stateDir``)::

    lock                         held (flock) by the one installer process allowed to run
    bundles/<root-hex>/          the verified root.json + root.dsse.json (its envelope) of every bundle seen,
                                 and its SBOM (sbom.cdx.json), proven again when status --sbom reads it
    trust/<version>.dsse.json    accepted trust updates (installer/trust.py)
    journal/<root-hex>.jsonl     step journal of that bundle: one JSON record per line
    installed.json               bundles whose load+stage completed, newest last
    revisions/<N>.json           applied cluster revisions (plan/apply)
    approvals/<plan-hash>.json   operator approvals
    audit.log                    hash-chained audit log
    scratch/                     temporary files (safe to delete when no installer runs)

Invariants:
- Documents are replaced atomically (temp file, fsync, rename, fsync of the directory): a crash
  leaves either the old or the new document, never a mix.
- The journal is append-only; a torn last line (power cut mid-write) is ignored on reading, so
  the step it described is simply redone.
- The directory is not trusted to be clean: every path below it is opened by directory file
  descriptor with ``O_NOFOLLOW`` (:mod:`installer.safefs`), so a planted symlink (``lock``,
  ``audit.log``, ``journal/``, ``bundles/``, a journal file) is refused with its path, never
  followed. Temporary names are random and created ``O_EXCL``.
- Documents are read through strict schemas (:mod:`pydantic`); a corrupt, deep or wrong-typed
  document is refused with a :class:`StateDocumentError` naming the file and how to repair it.
- ``installed.json`` carries the audit log's head (``audit``: line count and last hash) as of the
  last install, so deleting ``audit.log`` and ``audit.head`` together is detected.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from edgebundle.digest import atomic_write, fsync_dir, read_bounded  # noqa: F401 (atomic_write re-exported)
from edgebundle.errors import EdgebundleError
from edgebundle.faults import faultpoint
from edgebundle.layout import MAX_JSON_BYTES, MAX_ROOT_ENVELOPE_BYTES
from edgebundle.root import format_time, load_json_bounded
from installer.safefs import SafeRoot, open_regular

#: Longest journal line we read (records are a few hundred bytes).
_MAX_JOURNAL_LINE = 64 * 1024
_DIGEST = r"^sha256:[0-9a-f]{64}$"


class StateLockedError(EdgebundleError):
    """Another installer process holds the state directory."""


class StateDocumentError(EdgebundleError):
    """A document in the state directory is corrupt: not JSON, too deep, or the wrong shape."""


class InstalledBundle(BaseModel):
    """One ``installed.json`` entry (core.record_installed writes it)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: StrictStr = Field(min_length=1, max_length=128)
    version: StrictStr = Field(min_length=1, max_length=64)
    root: StrictStr = Field(pattern=_DIGEST)
    compatible: StrictStr | None = None
    installedAt: StrictStr | None = None
    operator: StrictStr | None = None
    signers: list[StrictStr] = []
    downgradeReason: StrictStr | None = None


class AuditAnchor(BaseModel):
    """As of the last install, the audit log had at least ``count`` lines (that install's own included)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    count: StrictInt = Field(ge=0)


class InstalledDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    bundles: list[InstalledBundle] = []
    audit: AuditAnchor | None = None


def parse_document(data: bytes, path: Path, schema: type[BaseModel], repair: str | None = None) -> Any:
    """``data`` (the file at ``path``) validated against ``schema``; a clear error, never a traceback.

    ``repair`` says how to repair this document (default: the advice for ``installed.json``)."""
    repair = repair or (f"restore {path} from a backup, or move it away (the installer then treats the site as "
                        "fresh: rollback protection for what it recorded is lost until you reinstall)")
    try:
        doc = load_json_bounded(data, str(path), MAX_JSON_BYTES)
    except EdgebundleError as e:
        raise StateDocumentError(f"state document {e.message}", hint=repair) from None
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise StateDocumentError(f"state document {path} is malformed at {where}: {first['msg']}",
                                 hint=repair) from None


def now_iso() -> str:
    return format_time(time.time())


def operator_name() -> str:
    """Who runs this: $EDGEBUNDLE_OPERATOR, $SUDO_USER or $USER; else the uid's login name, marked
    as a fallback so the record never says a silent "unknown"."""
    named = os.environ.get("EDGEBUNDLE_OPERATOR") or os.environ.get("SUDO_USER") or os.environ.get("USER")
    if named:
        return named
    import pwd

    try:
        login = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        login = "?"
    return f"uid {os.getuid()} ({login}; no EDGEBUNDLE_OPERATOR or USER set)"


class Journal:
    """Which steps (and which items within a step) of one bundle are done."""

    def __init__(self, where: SafeRoot | Path, parts: tuple[str, ...] | None = None) -> None:
        """``Journal(state.safe, ("journal", name))``, or ``Journal(path)`` (its directory as the root)."""
        if isinstance(where, SafeRoot) and parts:
            self.safe, self.parts = where, parts
        else:
            self.safe, self.parts = SafeRoot(Path(where).parent, "the journal directory"), (Path(where).name,)
        self.path = self.safe.path.joinpath(*self.parts)
        self._records = self._read()

    def _read(self) -> list[dict[str, Any]]:
        with self.safe.dir(self.parts[:-1]) as d:
            if d is None:
                return []
            try:
                fd = open_regular(d, self.parts[-1], self.path)
            except FileNotFoundError:
                return []
        out: list[dict[str, Any]] = []
        with os.fdopen(fd, "rb") as f:
            while line := f.readline(_MAX_JOURNAL_LINE + 1):
                if not line.endswith(b"\n"):
                    break  # torn final line (or an over-long one): that record never happened
                try:
                    rec = load_json_bounded(line, str(self.path), _MAX_JOURNAL_LINE)
                except EdgebundleError:
                    break
                if not isinstance(rec, dict):
                    break
                if rec.get("reset"):  # a reset forgets everything recorded before it for its step
                    out = [r for r in out if r.get("step") != rec.get("step")]
                out.append(rec)
        return out

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line off before appending, or the next record would be glued to it."""
        try:
            fd = self.safe.open_rw(self.parts)
        except FileNotFoundError:
            return
        with os.fdopen(fd, "r+b") as f:
            pos = f.seek(0, os.SEEK_END)
            if pos == 0 or os.pread(f.fileno(), 1, pos - 1) == b"\n":
                return
            while pos > 0:
                start = max(0, pos - 4096)
                cut = os.pread(f.fileno(), pos - start, start).rfind(b"\n")
                if cut >= 0:
                    f.truncate(start + cut + 1)
                    return
                pos = start
            f.truncate(0)

    def _append(self, record: dict[str, Any]) -> None:
        self._drop_torn_tail()
        record = {"at": now_iso(), **record}
        with os.fdopen(self.safe.open_append(self.parts), "ab") as f:
            f.write(json.dumps(record, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._records.append(record)
        faultpoint("journal.appended")

    def step_done(self, step: str, **match: Any) -> bool:
        """True when ``step`` was completed (with every ``match`` field equal, e.g. its target)."""
        return any(r.get("step") == step and r.get("done") and all(r.get(k) == v for k, v in match.items())
                   for r in self._records)

    def item_done(self, step: str, item: str) -> bool:
        return any(r.get("step") == step and r.get("item") == item for r in self._records)

    def items(self, step: str) -> list[dict[str, Any]]:
        """The item records of ``step`` (since its last reset), oldest first."""
        return [r for r in self._records if r.get("step") == step and "item" in r]

    def records(self) -> list[dict[str, Any]]:
        return list(self._records)

    def mark_item(self, step: str, item: str, **info: Any) -> None:
        self._append({"step": step, "item": item, **info})

    def mark_step(self, step: str, **info: Any) -> None:
        self._append({"step": step, "done": True, **info})

    def reset_step(self, step: str) -> None:
        """Forget a step (e.g. the registry was wiped): its items will be redone and re-checked."""
        self._records = [r for r in self._records if r.get("step") != step]
        self._append({"step": step, "reset": True})

    def steps(self) -> list[str]:
        return [r["step"] for r in self._records if r.get("done")]


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.safe = SafeRoot(self.path, "the state directory")

    @property
    def scratch(self) -> Path:
        fd = self.safe.open_dir(["scratch"], create=True)
        if fd is not None:
            os.close(fd)
        return self.path / "scratch"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state lock; a second installer fails at once with a clear message."""
        fd = self.safe.open_rw(["lock"])
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                raise StateLockedError(f"another installer (pid {holder}) is using {self.path}",
                                       hint="wait for it to finish; if it died, just rerun") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)

    # -- documents -------------------------------------------------------------------------
    def read_bytes(self, rel: str, limit: int = MAX_JSON_BYTES) -> bytes | None:
        """A small file below the state directory (None when missing), never through a link."""
        return self.safe.read(rel.split("/"), limit)

    def read_json(self, rel: str) -> Any:
        data = self.read_bytes(rel)
        if data is None:
            return None
        try:
            return load_json_bounded(data, str(self.path / rel), MAX_JSON_BYTES)
        except EdgebundleError as e:
            raise StateDocumentError(f"state document {e.message}",
                                     hint=f"restore {self.path / rel} from a backup, or move it away") from None

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.safe.atomic_write(rel.split("/"), data)

    # -- bundles ---------------------------------------------------------------------------
    @staticmethod
    def _hex(root_digest: str) -> str:
        return root_digest.split(":", 1)[1]

    def journal(self, root_digest: str) -> Journal:
        return Journal(self.safe, ("journal", f"{self._hex(root_digest)}.jsonl"))

    def remember_bundle(self, root_digest: str, root_bytes: bytes, envelope: bytes) -> None:
        """Keep the verified root and its envelope, so later deltas and renders can rely on them offline."""
        d = f"bundles/{self._hex(root_digest)}"
        if not self.safe.exists([*d.split("/"), "root.json"]):
            self.write_bytes(f"{d}/root.dsse.json", envelope)
            faultpoint("verify.signatures.kept")
            self.write_bytes(f"{d}/root.json", root_bytes)

    def bundle_root_bytes(self, root_digest: str) -> bytes | None:
        return self.read_bytes(f"bundles/{self._hex(root_digest)}/root.json")

    def remember_sbom(self, root_digest: str, sbom: bytes) -> None:
        """Keep a verified bundle's SBOM beside its root, for ``installer status --sbom``."""
        self.write_bytes(f"bundles/{self._hex(root_digest)}/sbom.cdx.json", sbom)

    def bundle_sbom_bytes(self, root_digest: str) -> bytes | None:
        """The SBOM kept for ``root_digest`` (unproven: check it against the signed root's pin)."""
        return self.read_bytes(f"bundles/{self._hex(root_digest)}/sbom.cdx.json")

    def bundle_envelope_bytes(self, root_digest: str) -> bytes | None:
        """The root envelope kept for ``root_digest`` (a delta's, for the full root it rebuilt)."""
        return self.read_bytes(f"bundles/{self._hex(root_digest)}/root.dsse.json", MAX_ROOT_ENVELOPE_BYTES)

    def installed_document(self) -> InstalledDocument:
        data = self.read_bytes("installed.json")
        if data is None:
            return InstalledDocument()
        doc: InstalledDocument = parse_document(data, self.path / "installed.json", InstalledDocument)
        return doc

    def installed(self) -> list[dict[str, Any]]:
        return [b.model_dump(exclude_none=True) for b in self.installed_document().bundles]

    def audit_head(self) -> dict[str, Any] | None:
        """``audit.head`` as written by installer.audit (None when missing); raises when unreadable."""
        data = self.read_bytes("audit.head", 4096)
        if data is None:
            return None
        doc = load_json_bounded(data, str(self.path / "audit.head"), 4096)
        if not (isinstance(doc, dict) and all(isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool)
                                              for k in ("count", "size")) and isinstance(doc.get("hash"), str)):
            raise StateDocumentError(f"{self.path / 'audit.head'} is malformed")
        return doc

    def record_installed(self, entry: dict[str, Any]) -> None:
        """Append (or refresh) a bundle whose images and models are in place; anchor the audit head."""
        doc = self.installed_document()
        bundles = [b.model_dump(exclude_none=True) for b in doc.bundles if b.root != entry["root"]]
        bundles.append(entry)
        out: dict[str, Any] = {"bundles": bundles}
        try:
            head = self.audit_head()
        except EdgebundleError:
            head = None
        # The running command appends its own line when it ends: the log will hold one more.
        count = (head["count"] if head else 0) + 1
        out["audit"] = {"count": max(count, doc.audit.count if doc.audit else 0)}  # never lowered
        self.write_json("installed.json", out)

    def is_installed(self, root_digest: str) -> bool:
        """Whether both load and stage completed for the bundle of this root digest."""
        return any(b["root"] == root_digest for b in self.installed())

    def current(self, name: str | None = None) -> dict[str, Any] | None:
        """The most recently installed bundle (of ``name``, when given)."""
        matching = [b for b in self.installed() if name is None or b["name"] == name]
        return matching[-1] if matching else None
