"""The verbs that change the cluster, as library functions: apply an approved plan, roll back.

The click commands (installer/commands/apply.py, rollback.py, install.py) only parse options,
call these and print; tests and other tools call them directly.

:func:`deploy` makes a plan's revision live: server-side apply in dependency order, prune,
wait for health, record; on failure it re-applies the last healthy revision and raises naming the
object that failed and why.

Invariants:
- Nothing is applied without an unexpired approval of the plan's exact hash (:func:`apply_plan`;
  a rollback records the operator's confirmation as that approval first) and a drift check
  against what the plan was computed from.
- A revision record is written (status ``pending``) before the cluster is touched
  (installer/revisions.py keeps the records).
- Only a revision that was once healthy is a rollback target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.faults import faultpoint
from edgebundle.verify import VerifiedBundle
from installer import health, rollout
from installer.approval import check_approval
from installer.destinations.cluster import ClusterError, Target
from installer.destinations.targets import open_target
from installer.plan import Plan, PlanError, build_plan, check_current, check_drift, check_target, plan_bundle
from installer.revisions import RevisionStore
from installer.site import Site
from installer.state import StateDir, now_iso
from installer.validate import require_validation

Log = Callable[[str], None]
#: Shows the plan, asks the operator, records the approval; returns it (raises if refused).
Confirm = Callable[[Plan], dict[str, Any]]


class ApplyFailed(EdgebundleError):
    """A revision did not become healthy (or could not be applied); see the message for which object."""


class NothingToRollBack(EdgebundleError):
    """There is no earlier healthy revision."""


@dataclass
class Outcome:
    """What an apply or rollback did: ``revision`` is None when nothing had to change."""

    plan: Plan
    target: str
    revision: int | None = None
    record: dict[str, Any] | None = None
    watched: bool = False

    @property
    def changed(self) -> bool:
        return self.revision is not None

    def summary(self) -> dict[str, Any]:
        rec = self.record or {}
        return {k: rec.get(k) for k in ("revision", "status", "health", "bundle", "operator", "trigger",
                                         "rollbackOf")}


def apply_plan(plan: Plan, site: Site, state: StateDir, *, keys: Sequence[Ed25519PublicKey],
               validation_file: Path | None = None, timeout: float = health.DEFAULT_TIMEOUT,
               poll: float = 1.0, log: Log = lambda s: None) -> Outcome:
    """``installer apply``: refuse without an approval of the exact plan or on drift, then deploy.

    The caller holds the state lock.
    """
    target = open_target(site, state.scratch)
    store = RevisionStore(state)
    check_target(plan, site, target)
    if plan.doc.get("purpose", "apply") == "apply":
        if not state.is_installed(plan.bundle["root"]):
            raise PlanError(f"bundle {plan.bundle['name']} {plan.bundle['version']} is not installed at "
                            f"site {site.name}", hint="run installer load and installer stage first")
        require_validation(site, state, plan.bundle, validation_file)
    if not plan.changes_pending:
        check_drift(plan, target, store)
        return Outcome(plan, target.description)
    approval = check_approval(state, plan, keys=list(keys))
    check_drift(plan, target, store)
    return deploy(plan, site, target, store, operator=str(approval["operator"]), timeout=timeout,
                  poll=poll, log=log)


def plan_and_deploy(vb: VerifiedBundle, site: Site, state: StateDir, *, confirm: Confirm,
                    validation_file: Path | None = None, on_plan: Callable[[Plan], None] = lambda p: None,
                    timeout: float = health.DEFAULT_TIMEOUT, poll: float = 1.0,
                    log: Log = lambda s: None) -> Outcome:
    """The second half of ``installer install``: plan a loaded and staged bundle, confirm, deploy.

    The plan is kept in the state directory (``plans/``) before it is shown; ``confirm`` is called
    only when something would change. The caller holds the state lock.
    """
    target = open_target(site, state.scratch)
    store = RevisionStore(state)
    plan = plan_bundle(vb, site, state, target, validation_file=validation_file)
    state.write_bytes(f"plans/{plan.hash.split(':', 1)[1]}.json", plan.to_bytes())
    on_plan(plan)
    if not plan.changes_pending:
        return Outcome(plan, target.description)
    approval = confirm(plan)
    check_current(plan, site, target, store)
    return deploy(plan, site, target, store, operator=str(approval["operator"]), timeout=timeout,
                  poll=poll, log=log)


def rollback_target(store: RevisionStore, to: int | None, site: Site) -> dict[str, Any]:
    """The revision record to return to: ``to``, or the healthy one before the current."""
    if to is None:
        current = store.current()
        if current is None:
            raise NothingToRollBack(f"site {site.name} has no deployed revision")
        rec = store.last_good(before=int(current["revision"]))
        if rec is None:
            raise NothingToRollBack(f"revision {current['revision']} is the first healthy revision; "
                                    "there is nothing earlier to roll back to")
        return rec
    rec = store.get(to)
    if rec is None:
        raise UsageError(f"revision {to} does not exist", hint="see installer history --site SITE")
    if rec.get("status") not in ("deployed", "superseded"):
        raise UsageError(f"revision {to} never became healthy (status {rec.get('status')}); "
                         "only a revision that once ran healthy can be rolled back to")
    return rec


def replan(rec: dict[str, Any], site: Site, target: Target, store: RevisionStore) -> Plan:
    """A plan that returns the cluster to revision ``rec``'s exact objects."""
    return build_plan(site=site, target=target, store=store, bundle=rec["bundle"], objects=rec["objects"],
                      images=rec.get("images", {}), models=rec.get("models", {}), purpose="rollback",
                      rollback_of=int(rec["revision"]))


def rollback(site: Site, state: StateDir, *, to: int | None, confirm: Confirm,
             on_plan: Callable[[Plan], None] = lambda p: None, timeout: float = health.DEFAULT_TIMEOUT,
             poll: float = 1.0, log: Log = lambda s: None) -> Outcome:
    """``installer rollback``: re-apply revision ``to`` (default: the previous healthy one).

    ``on_plan`` sees the plan as soon as it exists (the CLI audits its hash); ``confirm`` is
    called only when something would change. The caller holds the state lock.
    """
    store = RevisionStore(state)
    rec = rollback_target(store, to, site)
    target = open_target(site, state.scratch)
    plan = replan(rec, site, target, store)
    on_plan(plan)
    if not plan.changes_pending:
        return Outcome(plan, target.description)
    approval = confirm(plan)
    return deploy(plan, site, target, store, operator=str(approval["operator"]), trigger="rollback",
                  timeout=timeout, poll=poll, log=log, auto_rollback=False)


def _remove_created(plan: Plan, target: Target, store: RevisionStore, log: Log) -> str:
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


def deploy(plan: Plan, site: Site, target: Target, store: RevisionStore, *, operator: str,
           trigger: str = "apply", timeout: float = health.DEFAULT_TIMEOUT, poll: float = 1.0,
           log: Log = lambda s: None, auto_rollback: bool = True) -> Outcome:
    """Apply ``plan`` as revision ``plan.revision``.

    The caller has checked the approval and drift. On failure, when ``auto_rollback`` and an
    earlier healthy revision exists, that revision is re-applied (as a new revision) and waited
    for; either way :class:`ApplyFailed` is raised naming the object and the reason.
    """
    n = plan.revision
    desired = plan.desired_objects()
    rollout.refuse_if_interrupted(store)
    rollouts = plan.doc.get("rollouts") or []
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
        if rollouts:
            rollout.begin(rollouts, store, n, (store.current() or {}).get("revision"))
        target.apply_revision(desired, plan.changed_ids() - rollout.held_back(rollouts), plan.delete_refs(), n, log,
                              replace=plan.replace_ids())
        faultpoint("apply.objects.applied")
        if target.watches_health:
            health.wait_healthy(target, desired, timeout=timeout, poll=poll, log=log)  # type: ignore[arg-type]
        if rollouts:
            rollout.Runner(target, store.state, n, poll=poll, timeout=timeout, log=log).run()
    except (ClusterError, health.HealthError) as e:
        failed_object = getattr(e, "key", None)
        halted = isinstance(e, rollout.RolloutHalted)
        store.update(n, status="rolled-back" if halted else "failed", reason=e.message, failedObject=failed_object,
                     finishedAt=now_iso())
        faultpoint("apply.revision.failed")
        if halted and not (plan.changed_ids() - rollout.held_back(rollouts) or plan.delete_refs()):
            raise ApplyFailed(f"revision {n} was rolled back: {e.message}", hint=e.hint) from None
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
        back = replan(good, site, target, store)
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
    return Outcome(plan, target.description, n, store.get(n), target.watches_health)
