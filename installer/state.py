"""The installer's state directory: the only place the installer writes besides its destinations.

Layout (all under ``stateDir``)::

    lock                         held (flock) by the one installer process allowed to run
    bundles/<root-hex>/          the verified root.json + root.dsse.json (its envelope) of every bundle seen
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

from bundler.digest import atomic_write, fsync_dir, read_bounded  # noqa: F401 (atomic_write re-exported)
from bundler.errors import EdgebundleError
from bundler.layout import MAX_JSON_BYTES
from installer.faults import faultpoint


class StateLockedError(EdgebundleError):
    """Another installer process holds the state directory."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def operator_name() -> str:
    return os.environ.get("EDGEBUNDLE_OPERATOR") or os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"


class Journal:
    """Which steps (and which items within a step) of one bundle are done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records = self._read()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn final line: that record never happened
                try:
                    rec = json.loads(line)
                except ValueError:
                    break
                if rec.get("reset"):  # a reset forgets everything recorded before it for its step
                    out = [r for r in out if r.get("step") != rec.get("step")]
                out.append(rec)
        return out

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line off before appending, or the next record would be glued to it."""
        try:
            f = open(self.path, "r+b")
        except FileNotFoundError:
            return
        with f:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        record = {"at": now_iso(), **record}
        with open(self.path, "ab") as f:
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

    @property
    def scratch(self) -> Path:
        p = self.path / "scratch"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state lock; a second installer fails at once with a clear message."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
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
    def read_json(self, rel: str) -> Any:
        p = self.path / rel
        if not p.exists():
            return None
        return json.loads(read_bounded(p, MAX_JSON_BYTES, "state document"))

    def write_json(self, rel: str, obj: Any) -> None:
        atomic_write(self.path / rel, json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")

    # -- bundles ---------------------------------------------------------------------------
    @staticmethod
    def _hex(root_digest: str) -> str:
        return root_digest.split(":", 1)[1]

    def journal(self, root_digest: str) -> Journal:
        return Journal(self.path / "journal" / f"{self._hex(root_digest)}.jsonl")

    def remember_bundle(self, root_digest: str, root_bytes: bytes, envelope: bytes) -> None:
        """Keep the verified root and its envelope, so later deltas and renders can rely on them offline."""
        d = self.path / "bundles" / self._hex(root_digest)
        if not (d / "root.json").exists():
            atomic_write(d / "root.dsse.json", envelope)
            faultpoint("verify.signatures.kept")
            atomic_write(d / "root.json", root_bytes)

    def bundle_root_bytes(self, root_digest: str) -> bytes | None:
        p = self.path / "bundles" / self._hex(root_digest) / "root.json"
        return read_bounded(p, MAX_JSON_BYTES, "state document") if p.exists() else None

    def installed(self) -> list[dict[str, Any]]:
        return (self.read_json("installed.json") or {}).get("bundles", [])

    def record_installed(self, entry: dict[str, Any]) -> None:
        """Append (or refresh) a bundle whose images and models are in place."""
        bundles = [b for b in self.installed() if b["root"] != entry["root"]]
        bundles.append(entry)
        self.write_json("installed.json", {"bundles": bundles})

    def current(self, name: str | None = None) -> dict[str, Any] | None:
        """The most recently installed bundle (of ``name``, when given)."""
        matching = [b for b in self.installed() if name is None or b["name"] == name]
        return matching[-1] if matching else None
