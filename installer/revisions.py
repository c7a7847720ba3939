"""Revisions: what was applied to the cluster, when, by whom, and how it ended.

Each apply (and each rollback, manual or automatic) is one numbered revision, stored in the state
directory as ``revisions/<N>.json``: the bundle, the plan hash, the operator, the exact rendered
objects, the images and models they use, and a status:

    pending     being applied (a crash leaves it so; the next plan sees its objects as owned)
    deployed    applied and healthy (or written to a k3s directory, health not watched)
    failed      apply or health failed; the reason names the object
    superseded  was deployed; a later revision replaced it
    rolled-back a canary rollout halted (a gate, an unhealthy canary, an abort): the canary was
                removed and the revision before it still runs (installer/rollout.py)

The current revision is the last ``deployed`` one. History is append-only: a rollback to revision
K is a new revision whose objects are K's, so ``history`` tells what happened in order.

installer/apply.py makes a plan's revision live and writes these records.

Invariants:
- A revision record is written (status ``pending``) before the cluster is touched.
- Only a revision that was once healthy is a rollback target.
"""

from __future__ import annotations

import json
import re
from typing import Any

from edgebundle.errors import EdgebundleError
from installer.records import RevisionRecord
from installer.site import Site
from installer.state import StateDir, StateDocumentError, now_iso, parse_document

STATUSES = ("pending", "deployed", "failed", "superseded", "rolled-back")
_FILE = re.compile(r"^(\d{1,9})\.json$")


class RevisionStore:
    """``revisions/<N>.json`` in the state directory, read through :class:`RevisionRecord`.

    The directory is walked by descriptor (a planted link is refused, naming it); a record that is
    not JSON, too deep, of the wrong shape, or numbered differently from its file name is refused
    with a :class:`StateDocumentError` naming the file and how to repair it.
    """

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.dir = state.path / "revisions"

    def numbers(self) -> list[int]:
        return sorted(int(m[1]) for name in self.state.safe.listdir(["revisions"]) if (m := _FILE.match(name)))

    def get(self, n: int) -> dict[str, Any] | None:
        data = self.state.read_bytes(f"revisions/{n}.json")
        if data is None:
            return None
        path = self.dir / f"{n}.json"
        repair = (f"restore {path} from a backup; or move it out of {self.dir}: installer history then lacks "
                  "that revision, and if the cluster runs it, plan and rollback no longer know its objects "
                  "until the next apply")
        rec: RevisionRecord = parse_document(data, path, RevisionRecord, repair)
        if rec.revision != n:
            raise StateDocumentError(f"state document {path} says it is revision {rec.revision}, not {n}",
                                     hint=repair)
        doc = json.loads(data)  # validated: the record exactly as written (the schema is only the gate)
        return doc if isinstance(doc, dict) else None

    def all(self) -> list[dict[str, Any]]:
        return [r for n in self.numbers() if (r := self.get(n)) is not None]

    def latest(self) -> dict[str, Any] | None:
        nums = self.numbers()
        return self.get(nums[-1]) if nums else None

    def latest_number(self) -> int | None:
        nums = self.numbers()
        return nums[-1] if nums else None

    def current(self) -> dict[str, Any] | None:
        """The revision the cluster runs: the last one that was deployed."""
        for n in reversed(self.numbers()):
            rec = self.get(n)
            if rec and rec.get("status") == "deployed":
                return rec
        return None

    def last_good(self, before: int) -> dict[str, Any] | None:
        """The newest revision below ``before`` that was healthy (deployed or superseded)."""
        for n in reversed(self.numbers()):
            rec = self.get(n)
            if n < before and rec and rec.get("status") in ("deployed", "superseded"):
                return rec
        return None

    def write(self, rec: dict[str, Any]) -> None:
        self.state.write_json(f"revisions/{int(rec['revision'])}.json", rec)

    def update(self, n: int, **fields: Any) -> dict[str, Any]:
        rec = self.get(n)
        if rec is None:
            raise EdgebundleError(f"revision {n} does not exist in {self.dir}")
        rec.update(fields)
        self.write(rec)
        return rec

    def mark_deployed(self, n: int, **fields: Any) -> None:
        """``n`` is now current: earlier deployed revisions become superseded."""
        for m in self.numbers():
            if m != n and (rec := self.get(m)) and rec.get("status") == "deployed":
                self.update(m, status="superseded")
        self.update(n, status="deployed", finishedAt=now_iso(), **fields)


def deployed_bundle(site: Site, state: StateDir, name: str | None = None) -> dict[str, Any] | None:
    """The bundle (of ``name``) the site runs: that of the newest revision that became healthy.

    A site without a cluster target never applies anything; there a bundle counts as deployed
    once its load and stage completed (its ``installed.json`` entry).
    """
    if not site.has_cluster_target:
        return state.current(name)
    for rec in reversed(RevisionStore(state).all()):
        bundle = rec.get("bundle") or {}
        if rec.get("status") in ("deployed", "superseded") and (name is None or bundle.get("name") == name):
            return {**next((b for b in state.installed() if b["root"] == bundle.get("root")), {}), **bundle}
    return None
