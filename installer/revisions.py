"""Revisions: what was applied to the cluster, when, by whom, and how it ended.

Each apply (and each rollback, manual or automatic) is one numbered revision, stored in the state
directory as ``revisions/<N>.json``: the bundle, the plan hash, the operator, the exact rendered
objects, the images and models they use, and a status:

    pending     being applied (a crash leaves it so; the next plan sees its objects as owned)
    deployed    applied and healthy (or written to a k3s directory, health not watched)
    failed      apply or health failed; the reason names the object
    superseded  was deployed; a later revision replaced it

The current revision is the last ``deployed`` one. History is append-only: a rollback to revision
K is a new revision whose objects are K's, so ``history`` tells what happened in order.

:func:`deploy` makes a plan's revision live: server-side apply in dependency order, prune,
wait for health, record; on failure it re-applies the last healthy revision and raises naming the
object that failed and why.

Invariants:
- A revision record is written (status ``pending``) before the cluster is touched.
- Only a revision that was once healthy is a rollback target.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bundler.errors import EdgebundleError
from installer import health
from installer.destinations.cluster import ClusterError, Target
from installer.faults import faultpoint
from installer.site import Site
from installer.records import RevisionRecord
from installer.state import StateDir, StateDocumentError, now_iso, parse_document

if TYPE_CHECKING:
    from installer.plan import Plan

Log = Callable[[str], None]
STATUSES = ("pending", "deployed", "failed", "superseded")
_FILE = re.compile(r"^(\d{1,9})\.json$")


class ApplyFailed(EdgebundleError):
    """A revision did not become healthy (or could not be applied); see the message for which object."""


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


def _remove_created(plan: "Plan", target: Target, store: RevisionStore, log: Log) -> str:
    """No healthy revision to go back to: undo this attempt's creations (reverse dependency
    order) so that no half-installed stack is left, and say what was removed."""
    created = plan.created_refs()
    if not created:
        return "there is no earlier healthy revision to roll back to, and this attempt created nothing"
    log(f"no earlier healthy revision: removing the {len(created)} objects revision {plan.revision} created")
    try:
        left = target.remove(created, log)
    except ClusterError as e:
        left = [f"(could not finish: {e.message})"]
    store.update(plan.revision, removedCreated=len(created) - len(left), stillPresent=left)
    if left:
        return (f"there is no earlier healthy revision; removing what this attempt created did not finish: "
                f"{', '.join(left[:5])} still present")
    return (f"there is no earlier healthy revision, so the {len(created)} objects this attempt created "
            "were removed and are gone")


@dataclass
class DeployResult:
    revision: int
    watched: bool


def deploy(plan: "Plan", site: Site, target: Target, store: RevisionStore, *, operator: str,
           trigger: str = "apply", timeout: float = health.DEFAULT_TIMEOUT, poll: float = 1.0,
           log: Log = lambda s: None, auto_rollback: bool = True) -> DeployResult:
    """Apply ``plan`` as revision ``plan.revision``.

    The caller has checked the approval and drift. On failure, when ``auto_rollback`` and an
    earlier healthy revision exists, that revision is re-applied (as a new revision) and waited
    for; either way :class:`ApplyFailed` is raised naming the object and the reason.
    """
    n = plan.revision
    desired = plan.desired_objects()
    for rec in store.all():  # we hold the state lock: a pending revision is one whose run died
        if rec.get("status") == "pending":
            store.update(int(rec["revision"]), status="failed", finishedAt=now_iso(),
                         reason="interrupted: the installer stopped before this revision finished")
    store.write({
        "revision": n, "status": "pending", "trigger": trigger, "rollbackOf": plan.doc.get("rollbackOf"),
        "site": site.name, "cluster": plan.doc["cluster"], "bundle": plan.bundle,
        "planHash": plan.hash, "operator": operator, "startedAt": now_iso(),
        "objects": desired, "images": plan.doc.get("usedImages", {}), "models": plan.doc.get("usedModels", {}),
        "summary": plan.summary(),
    })
    faultpoint("apply.revision.pending")
    log(f"revision {n}: applying {plan.summary_text()} to {target.description}")
    try:
        target.apply_revision(desired, plan.changed_ids(), plan.delete_refs(), n, log, replace=plan.replace_ids())
        faultpoint("apply.objects.applied")
        if target.watches_health:
            health.wait_healthy(target, desired, timeout=timeout, poll=poll, log=log)  # type: ignore[arg-type]
    except (ClusterError, health.HealthError) as e:
        failed_object = getattr(e, "key", None)
        store.update(n, status="failed", reason=e.message, failedObject=failed_object, finishedAt=now_iso())
        faultpoint("apply.revision.failed")
        good = store.last_good(before=n) if auto_rollback else None
        if good is None and auto_rollback:
            raise ApplyFailed(f"revision {n} failed: {e.message}; "
                              + _remove_created(plan, target, store, log),
                              hint=e.hint or "fix the cause, then plan and apply again") from None
        if good is None:
            raise ApplyFailed(f"revision {n} failed: {e.message}",
                              hint="the objects are left in place for inspection; fix the cause and apply a new plan") from None
        log(f"revision {n} failed: {e.message}")
        log(f"rolling back to revision {good['revision']} automatically")
        from installer.plan import build_plan

        back = build_plan(site=site, target=target, store=store, bundle=good["bundle"], objects=good["objects"],
                          images=good.get("images", {}), models=good.get("models", {}),
                          purpose="rollback", rollback_of=int(good["revision"]))
        try:
            deploy(back, site, target, store, operator=operator, trigger="auto-rollback", timeout=timeout,
                   poll=poll, log=log, auto_rollback=False)
        except ApplyFailed as e2:
            raise ApplyFailed(f"revision {n} failed: {e.message}; and the automatic rollback to revision "
                              f"{good['revision']} failed too: {e2.message}",
                              hint="the cluster needs a person: see installer history and kubectl") from None
        raise ApplyFailed(
            f"revision {n} failed: {e.message}; rolled back to revision {good['revision']} "
            f"(recorded as revision {back.revision})",
            hint=e.hint or "fix the cause, build a new bundle or re-plan, and apply again") from None
    faultpoint("apply.healthy")
    # One write: a crash leaves the revision pending or deployed-with-its-health, never between.
    store.mark_deployed(n, health="healthy" if target.watches_health else "not-watched")
    if not target.watches_health:
        log(f"{target.description}: k3s applies the file itself; health cannot be watched from there "
            f"(check with: kubectl -n {site.cluster.namespace} get pods)")
    return DeployResult(n, target.watches_health)
