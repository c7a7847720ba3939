"""Progressive delivery without a mesh: canary steps gated on Prometheus metrics (docs/ROLLOUT.md).

A Deployment annotated ``edgebundle.dev/rollout: canary`` whose pod template a plan changes is not
updated in place. Its new template runs as a second Deployment ``<name>-canary`` beside the
stable one, with the same pod labels (so the same Service selects both) plus
``edgebundle.dev/track: canary`` and ``edgebundle.dev/workload: <name>``. Each step sets the
replica counts that approximate its weight (:func:`replicas_for`), holds for the step's interval
while the canary's pods must stay ready and unrestarted, then reads the gates
(installer/metrics.py). All pass: next step. A trigger, an unreadable or still-holding gate, a
canary pod that is not ready or restarted, or an operator's abort: the canary is scaled to zero
and removed, the stable Deployment gets its replicas back, the revision is recorded
``rolled-back`` and :class:`RolloutHalted` names the gate, its value and the threshold. After the
last step the stable Deployment takes the new template and the canary is removed.

``edgebundle.dev/rollout: blue-green`` puts the new template into the idle side (``<name>-green``,
or back into ``<name>`` when green is live), waits for it (and an optional smoke-test Job), then
applies each Service selecting the workload with that side's selector. The side that was live is
kept; the revision records the objects as they run (:func:`settle` maps a later plan onto them),
so ``installer rollback`` is a plain re-apply: one selector change and the green side's deletion.

The plan carries each rollout as a document (:func:`plan_rollouts`): steps, intervals, replica
counts, gates with their queries and thresholds, the Prometheus URL. It is part of what the plan
hash covers, so an approval approves exactly that rollout.

Invariants:
- The stable Deployment's pod template is never touched before promotion; on a halt only its
  replica count is restored.
- Progress is recorded in the revision (``rollout``: phase, step, when the step started) before
  the cluster is changed for that step; every step is idempotent, so a killed installer resumes
  (:func:`resume`) from the record.
- Every step and its gate readings go to the audit log.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.faults import faultpoint
from installer import audit, health, metrics, rolloutspec
from installer.destinations.cluster import ClusterError, Target, annotate_revision, ref
from installer.destinations.targets import open_target
from installer.render import ObjectKey
from installer.revisions import RevisionStore
from installer.rolloutspec import (
    BLUE_GREEN,
    GATE_PREFIX,
    KEEP,
    ROLLOUT,
    SMOKE,
    TRACK,
    WORKLOAD,
    RolloutSpecError,
    window,
)
from installer.site import Site
from installer.state import StateDir, StateLockedError, now_iso

Log = Callable[[str], None]

CONTROL = "rollout-control.json"
#: Gates are also read this often during a long step, so that a trigger halts early.
EARLY_CHECK_SECONDS = 60.0
IN_PROGRESS = ("canary", "promoting", "blue-green")


class RolloutHalted(ClusterError):
    """A rollout stopped before promotion; the canary is gone and the stable workload untouched."""

    def __init__(self, key: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key = key


# --- the rollout a plan carries ----------------------------------------------------------------

def spec_of(obj: dict[str, Any], prometheus: str | None) -> dict[str, Any] | None:
    """The rollout document for a rendered Deployment (installer/rolloutspec.py), with its ``ref``."""
    doc = rolloutspec.spec_of(obj, prometheus)
    return None if doc is None else {**doc, "ref": ref(obj)}


def _template_labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def green_object(new: dict[str, Any], replicas: int, blue_selector: dict[str, str]) -> dict[str, Any]:
    """The new template as ``<name>-green``: its pods carry the track and workload labels and *not*
    the blue Service selector's labels, so each selector picks exactly one colour."""
    obj = canary_object(new, replicas)
    name = new["metadata"]["name"]
    obj["metadata"]["name"] = f"{name}-green"
    extra = {TRACK: "green", WORKLOAD: name}
    obj["metadata"]["labels"] = {**obj["metadata"]["labels"], **extra}
    obj["metadata"]["annotations"] = {k: v for k, v in obj["metadata"]["annotations"].items()
                                      if k not in (KEEP, SMOKE)}
    obj["spec"]["selector"] = {"matchLabels": extra}
    tmeta = obj["spec"]["template"]["metadata"]
    tmeta["labels"] = {**{k: v for k, v in tmeta["labels"].items() if k not in blue_selector}, **extra}
    return obj


def green_selector(workload: str) -> dict[str, str]:
    return {TRACK: "green", WORKLOAD: workload}


def blue_green_state(store: RevisionStore) -> dict[str, Any] | None:
    """The blue-green switch the cluster is in (the newest switched rollout whose green object the
    current revision still runs), or None: then every blue-green workload is on its blue side."""
    current = store.current()
    if current is None:
        return None
    ids = {ObjectKey.of(o).id for o in current.get("objects", [])}
    for rec in reversed(store.all()):
        prog = rec.get("rollout") or {}
        if rec.get("status") in ("deployed", "superseded") and prog.get("phase") == "switched":
            return prog if set(prog.get("effective", {})) <= ids else None
    return None


def settle(objects: list[dict[str, Any]], state: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rendered objects as the cluster runs them after a blue-green switch.

    The green Deployment is kept and each switched Service keeps its selector; a Deployment whose
    rendered form is the one that was switched to keeps its live form too. So a plan of the bundle
    that runs is "nothing to change", and a plan of the next bundle changes only the template.
    """
    if not state:
        return objects
    eff, rendered = state.get("effective", {}), state.get("rendered", {})
    out = []
    for o in objects:
        kid = ObjectKey.of(o).id
        same = rendered.get(kid) == o or (o.get("kind") == "Service" and kid in rendered)
        out.append(eff[kid] if kid in eff and same else o)
    have = {ObjectKey.of(o).id for o in out}
    return out + [o for kid, o in eff.items() if kid not in have and kid not in rendered]


def _blue_green_plan(spec: dict[str, Any], obj: dict[str, Any], entries: list[dict[str, Any]],
                     bg: dict[str, Any] | None) -> dict[str, Any]:
    """Which Services switch, which slot takes the new template, which Job smoke-tests it."""
    where = str(ObjectKey.of(obj))
    labels = _template_labels(obj)
    rendered = (bg or {}).get("rendered", {})
    services = {}
    for e in entries:
        svc = rendered.get(e["id"]) or e.get("object") or {}
        sel = (svc.get("spec") or {}).get("selector") or {}
        if svc.get("kind") == "Service" and ObjectKey.of(svc).namespace == spec["namespace"] and sel and \
                all(labels.get(k) == v for k, v in sel.items()):
            services[e["id"]] = {"blue": sel, "green": green_selector(spec["workload"]), "rendered": svc}
    if not services:
        raise RolloutSpecError(f"{where} asks for a blue-green rollout, but no Service of the bundle selects its pods",
                               hint="blue-green switches a Service's selector: add the Service to the bundle")
    smoke = None
    if spec.get("smokeTest"):
        job = next((e for e in entries if (e.get("object") or {}).get("kind") == "Job"
                    and ObjectKey.of(e["object"]).name == spec["smokeTest"]
                    and ObjectKey.of(e["object"]).namespace == spec["namespace"]), None)
        if job is None:
            raise RolloutSpecError(f"{where}: {SMOKE} names Job {spec['smokeTest']!r}, which the bundle does not have",
                                   hint="add the Job to the manifests, or drop the annotation")
        smoke = job["id"]
    active = ((bg or {}).get("active") or {}).get(spec["id"], "blue")
    return {**spec, "services": services, "smokeTest": smoke, "into": "blue" if active == "green" else "green"}


def plan_rollouts(entries: list[dict[str, Any]], site: Site, target: Target,
                  current: dict[str, Any] | None, bg: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A rollout for every annotated Deployment whose pod template this plan changes and that the
    current revision ``current`` runs (its stable side).

    Anything else (a new Deployment, a change outside the template) is applied as usual.
    """
    stable = {ObjectKey.of(o).id for o in (current or {}).get("objects", [])}
    out = []
    for e in entries:
        obj = e.get("object") or {}
        if e["action"] != "update" or e["id"] not in stable or \
                not any(c["path"].startswith("spec.template") for c in e["changes"]):
            continue
        spec = spec_of(obj, site.prometheus)
        if spec is None:
            continue
        if spec["strategy"] == BLUE_GREEN:
            spec = _blue_green_plan(spec, obj, entries, bg)
        if not hasattr(target, "apply_one"):
            raise RolloutSpecError(f"{ObjectKey.of(obj)} asks for a {spec['strategy']} rollout, but "
                                   f"{target.description} cannot be driven step by step",
                                   hint="roll out through a cluster target (spec.cluster.kubeconfig), or drop "
                                        f"the {ROLLOUT} annotation")
        out.append(spec)
    return out


def describe(rollouts: list[dict[str, Any]]) -> list[str]:
    """The plan's text for its rollouts: every step, gate and threshold the approval covers."""
    lines = []
    for r in rollouts:
        if r["strategy"] == BLUE_GREEN:
            slot = r["workload"] + ("-green" if r["into"] == "green" else "")
            lines.append(f"Rollout: {r['namespace']}/{r['workload']} blue-green: the new template into {slot} "
                         f"({r['replicas']} pods), waited healthy"
                         + (f", smoke test {ObjectKey.parse(r['smokeTest'])} must succeed" if r["smokeTest"] else "")
                         + f", then Service(s) {', '.join(ObjectKey.parse(k).name for k in r['services'])} switched "
                         f"to it; the other side kept with {r['keep']} pods for an instant installer rollback")
            continue
        steps = ", ".join(
            f"{s['weight']}% ({s['canary']} canary + {s['stable']} stable pods) for {_duration(s['seconds'])}"
            if s["weight"] < 100 else "100% (promote)" for s in r["steps"])
        lines.append(f"Rollout: {r['namespace']}/{r['workload']} {r['strategy']}: {steps}")
        for g in r["gates"]:
            lines.append(f"  gate {metrics.Gate.from_doc(g).describe()} (Prometheus {r['prometheus']})")
    return lines


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def held_back(rollouts: list[dict[str, Any]]) -> set[str]:
    """Ids of the objects the normal apply must leave alone (their rollout applies them)."""
    return {r["id"] for r in rollouts} | {k for r in rollouts for k in r.get("services", {})} | \
        {r["smokeTest"] for r in rollouts if r.get("smokeTest")}


# --- carrying it out -----------------------------------------------------------------------------

def canary_object(new: dict[str, Any], replicas: int) -> dict[str, Any]:
    """The new pod template as ``<name>-canary``: same pod labels plus the track and workload."""
    obj = copy.deepcopy(new)
    meta = obj["metadata"]
    name = meta["name"]
    extra = {TRACK: "canary", WORKLOAD: name}
    meta["name"] = f"{name}-canary"
    meta["labels"] = {**(meta.get("labels") or {}), **extra}
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                           if k != ROLLOUT and not k.startswith(("edgebundle.dev/canary-", GATE_PREFIX))}
    spec = obj["spec"]
    spec["replicas"] = replicas
    spec["selector"] = {**spec.get("selector", {}),
                        "matchLabels": {**(spec.get("selector") or {}).get("matchLabels", {}), **extra}}
    tmeta = spec["template"].setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), **extra}
    return obj


def _with_replicas(obj: dict[str, Any], replicas: int) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["spec"]["replicas"] = replicas
    return out


class Runner:
    """Drives the rollouts of revision ``n`` from its record; every method is safe to repeat."""

    def __init__(self, target: Target, state: StateDir, n: int, *, poll: float, timeout: float, log: Log) -> None:
        self.target, self.state, self.n = target, state, n
        self.store = RevisionStore(state)
        self.poll, self.timeout, self.log = poll, timeout, log
        self.rec = self.store.get(n) or {}
        self.kube: Any = target  # KubeTarget: plan_rollouts refused any target without apply_one

    # -- records ---------------------------------------------------------------------------
    def _progress(self, **fields: Any) -> dict[str, Any]:
        prog = {**(self.rec.get("rollout") or {}), **fields, "updatedAt": now_iso()}
        self.rec = self.store.update(self.n, rollout=prog)
        return prog

    def _audit(self, event: str, outcome: str = "ok", **fields: Any) -> None:
        rec = audit.command_record("rollout", {"revision": self.n, "event": event}, {"plan": self.rec.get("planHash")},
                                   outcome, 0 if outcome == "ok" else 1, None, str(self.rec.get("operator", "?")))
        audit.AuditLog(self.state.path).append({**rec, "rollout": {"event": event, **fields}})

    def _objects(self, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int]:
        """(new object, stable object, stable revision) from the records."""
        new = next(o for o in self.rec["objects"] if ObjectKey.of(o).id == spec["id"])
        prog = self.rec.get("rollout") or {}
        stable_rev = int(prog["stableRevision"])
        stable_rec = self.store.get(stable_rev) or {}
        stable = next((o for o in stable_rec.get("objects", []) if ObjectKey.of(o).id == spec["id"]), None)
        if stable is None:
            raise RolloutHalted(str(ObjectKey.of(new)), f"revision {stable_rev} no longer records {spec['id']}")
        return new, stable, stable_rev

    def _control(self) -> dict[str, Any] | None:
        doc = self.state.read_json(CONTROL)
        if isinstance(doc, dict) and doc.get("revision") == self.n and doc.get("action") in ("promote", "abort"):
            return doc
        return None

    # -- the canary ------------------------------------------------------------------------
    def run(self) -> None:
        """Carry every rollout of the revision to promotion, or halt (:class:`RolloutHalted`)."""
        prog = self.rec.get("rollout") or {}
        for i, spec in enumerate(prog.get("rollouts", [])):
            if i < int(prog.get("done", 0)):
                continue
            if (ctl := self._control()) and ctl["action"] == "abort" and spec["strategy"] != BLUE_GREEN:
                new, stable, stable_rev = self._objects(spec)
                self._halt(spec, new, stable, stable_rev, None, int(prog.get("weight", 0)), by=str(ctl.get("operator")))
            if spec["strategy"] == BLUE_GREEN:
                self._blue_green(spec)
            else:
                self._canary(spec)
            prog = self._progress(done=i + 1, step=None, stepStartedAt=None)
        if prog.get("phase") != "switched":
            self._progress(phase="promoted")

    def _canary(self, spec: dict[str, Any]) -> None:
        new, stable, stable_rev = self._objects(spec)
        key = str(ObjectKey.of(new))
        prog = self.rec.get("rollout") or {}
        start = int(prog.get("step") or 0)
        for i, step in enumerate(spec["steps"]):
            if i < start:
                continue
            if (ctl := self._control()) and ctl["action"] == "promote":
                self.log(f"{key}: promoted by {ctl.get('operator')} at step {i + 1}")
                self._audit("promote-requested", operator=ctl.get("operator"), step=i + 1)
                break
            if step["weight"] >= 100:
                break
            resumed = i == start and prog.get("stepStartedAt") is not None
            started = float(prog["stepStartedAt"]) if resumed else time.time()
            prog = self._progress(phase="canary", step=i, weight=step["weight"], stepStartedAt=started)
            self._scale(spec, new, stable, stable_rev, step)
            self._audit("step", workload=key, step=i + 1, weight=step["weight"], canary=step["canary"],
                        stable=step["stable"], resumed=resumed)
            self.log(f"{key}: step {i + 1}/{len(spec['steps'])}: {step['weight']}% ({step['canary']} canary + "
                     f"{step['stable']} stable pods) for {_duration(step['seconds'])}"
                     + (" (resumed)" if resumed else ""))
            faultpoint("rollout.step.holding")
            readings = self._hold(spec, new, stable, stable_rev, step, started)
            if readings is None:  # promote requested
                break
            self._progress(gates=[r.to_doc() for r in readings])
            self._audit("gates", workload=key, step=i + 1, weight=step["weight"],
                        readings=[r.to_doc() for r in readings])
            bad = [r for r in readings if r.verdict != "pass"]
            if bad:
                self._halt(spec, new, stable, stable_rev, bad[0], step["weight"])
            self.log(f"{key}: step {i + 1} passed: " + "; ".join(r.text() for r in readings))
            prog = self.rec.get("rollout") or {}
        self._promote(spec, new)

    # -- blue-green ------------------------------------------------------------------------
    def _blue_green(self, spec: dict[str, Any]) -> None:
        """New template into the idle slot, healthy (and smoke-tested), then the Services switch."""
        objects = {ObjectKey.of(o).id: o for o in self.rec["objects"]}
        new = objects[spec["id"]]
        key = str(ObjectKey.of(new))
        blue_sel = next(iter(spec["services"].values()))["blue"]
        green = green_object(new, spec["replicas"], blue_sel)
        slot = green if spec["into"] == "green" else new
        stable_rec = self.store.get(int((self.rec.get("rollout") or {})["stableRevision"])) or {}
        old_id = ObjectKey.of(green).id if spec["into"] == "blue" else spec["id"]
        old = next((o for o in stable_rec.get("objects", []) if ObjectKey.of(o).id == old_id), None)
        self._progress(phase="blue-green", into=spec["into"])
        self._audit("deploy-idle-side", workload=key, into=spec["into"])
        self.log(f"{key}: blue-green: the new template into {ObjectKey.of(slot)}")
        self.kube.apply_one(annotate_revision(slot, self.n))
        try:
            health.wait_healthy(self.target, [slot], timeout=self.timeout, poll=self.poll, log=self.log)  # type: ignore[arg-type]
            if spec["smokeTest"]:
                job = objects[spec["smokeTest"]]
                self.kube.remove([ref(job)], self.log, timeout=self.timeout)
                self.kube.apply_one(annotate_revision(job, self.n))
                self._audit("smoke-test", workload=key, job=spec["smokeTest"])
                health.wait_healthy(self.target, [job], timeout=self.timeout, poll=self.poll, log=self.log)  # type: ignore[arg-type]
        except health.HealthError as e:
            if spec["into"] == "green":
                self.kube.remove([ref(green)], self.log, timeout=self.timeout)
            self._record_halt(f"{e.key} not healthy: {e.reason}", None)
            raise RolloutHalted(key, f"{key}: blue-green stopped before the switch: {e.message}; the Services "
                                     "still select the side that was live", hint=e.hint) from None
        switched = {}
        started = time.monotonic()
        for sid, sel in spec["services"].items():
            svc = copy.deepcopy(sel["rendered"])
            svc["spec"]["selector"] = sel[spec["into"]]
            self.kube.apply_one(annotate_revision(svc, self.n))
            switched[sid] = svc
        took = time.monotonic() - started
        self._audit("switch", workload=key, to=spec["into"], seconds=round(took, 3))
        self.log(f"{key}: Service(s) switched to the {spec['into']} side in {took:.3f} s")
        effective = {spec["id"]: new if spec["into"] == "blue" else None, ObjectKey.of(green).id: green, **switched}
        if old is not None:  # the side that was live stays, scaled as configured, for an instant switch back
            kept = _with_replicas(old, spec["keep"])
            self.kube.apply_one(annotate_revision(kept, self.n))
            effective[old_id] = kept
        if spec["into"] == "blue" and old is None:
            effective.pop(ObjectKey.of(green).id)
        effective = {k: v for k, v in effective.items() if v is not None}
        rendered = {spec["id"]: new}
        rendered.update({sid: sel["rendered"] for sid, sel in spec["services"].items()})
        prog = self.rec.get("rollout") or {}
        self._progress(phase="switched", switchSeconds=round(took, 3),
                       effective={**prog.get("effective", {}), **effective},
                       rendered={**prog.get("rendered", {}), **rendered},
                       active={**prog.get("active", {}), spec["id"]: spec["into"]})
        merged = {ObjectKey.of(o).id: o for o in self.rec["objects"]}
        merged.update(effective)
        self.rec = self.store.update(self.n, objects=list(merged.values()))

    def _scale(self, spec: dict[str, Any], new: dict[str, Any], stable: dict[str, Any], stable_rev: int,
               step: dict[str, Any]) -> None:
        """Canary and stable replica counts for ``step`` (the stable's template stays as it is)."""
        canary = canary_object(new, step["canary"])
        self.kube.apply_one(annotate_revision(canary, self.n))
        self.kube.apply_one(annotate_revision(_with_replicas(stable, step["stable"]), stable_rev))
        try:
            health.wait_healthy(self.target, [canary], timeout=self.timeout, poll=self.poll, log=self.log)  # type: ignore[arg-type]
        except health.HealthError as e:
            self._remove_canary(spec, new, stable, stable_rev)
            self._record_halt(f"{e.key} not ready", None)
            raise RolloutHalted(str(ObjectKey.of(new)),
                                f"canary {e.key} did not become ready at {step['weight']}%: {e.reason}; "
                                "the canary was removed, the stable Deployment is untouched",
                                hint=e.hint) from None

    def _pods(self, canary: dict[str, Any]) -> list[dict[str, Any]]:
        labels = canary["spec"]["selector"]["matchLabels"]
        sel = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return list(self.kube.list("v1", "Pod", canary["metadata"]["namespace"], label_selector=sel))

    def _restarts(self, canary: dict[str, Any]) -> int:
        return sum(int(cs.get("restartCount", 0)) for p in self._pods(canary)
                   for cs in (p.get("status") or {}).get("containerStatuses") or [])

    def _gone(self, canary: dict[str, Any]) -> None:
        """The canary Deployment and every one of its pods are gone (so none takes traffic)."""
        left = self.kube.remove([ref(canary)], self.log, timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        while (pods := self._pods(canary)) and time.monotonic() < deadline:
            time.sleep(self.poll)
        left += [f"pod {p['metadata']['name']}" for p in pods]
        if left:
            self.log(f"still being deleted after {self.timeout:g} s: {', '.join(left)}")

    def _hold(self, spec: dict[str, Any], new: dict[str, Any], stable: dict[str, Any], stable_rev: int,
              step: dict[str, Any], started: float) -> list[metrics.Reading] | None:
        """Wait out the step: pods must stay ready and unrestarted; triggers halt early.

        Returns the gate readings at the end of the interval, or None when promotion was asked for.
        """
        canary = canary_object(new, step["canary"])
        key = str(ObjectKey.of(new))
        where = {"namespace": spec["namespace"], "workload": spec["workload"], "track": "canary",
                 "window": window(step["seconds"])}
        gates = [metrics.Gate.from_doc(g) for g in spec["gates"]]
        baseline = self._restarts(canary)
        end = started + step["seconds"]
        next_check = time.time() + min(EARLY_CHECK_SECONDS, step["seconds"] / 4) if step["seconds"] >= 240 else end
        while True:
            ctl = self._control()
            if ctl and ctl["action"] == "abort":
                self._halt(spec, new, stable, stable_rev, None, step["weight"], by=str(ctl.get("operator")))
            if ctl and ctl["action"] == "promote":
                self.log(f"{key}: promoted by {ctl.get('operator')} at {step['weight']}%")
                self._audit("promote-requested", operator=ctl.get("operator"), weight=step["weight"])
                return None
            verdict = health.check(self.target, canary)  # type: ignore[arg-type]
            restarts = self._restarts(canary)
            if verdict.state != "ready" or restarts > baseline:
                why = verdict.reason if verdict.state != "ready" else f"{restarts - baseline} container restart(s)"
                self._remove_canary(spec, new, stable, stable_rev)
                self._record_halt(f"canary pods: {why}", None)
                raise RolloutHalted(key, f"{key}: canary pods at {step['weight']}% are not healthy: {why}; "
                                         "the canary was removed, the stable Deployment is untouched",
                                    hint=f"inspect: kubectl -n {spec['namespace']} describe pods -l {TRACK}=canary")
            now = time.time()
            if now >= end:
                return [metrics.read_gate(spec["prometheus"], g, **where) for g in gates]
            if now >= next_check:
                next_check = now + min(EARLY_CHECK_SECONDS, step["seconds"] / 4)
                early = [r for g in gates if (r := metrics.read_gate(spec["prometheus"], g, **where)).verdict == "trigger"]
                if early:
                    self._halt(spec, new, stable, stable_rev, early[0], step["weight"])
            time.sleep(max(0.0, min(self.poll, end - now)))

    def _remove_canary(self, spec: dict[str, Any], new: dict[str, Any], stable: dict[str, Any],
                       stable_rev: int) -> None:
        """Canary to zero and gone; the stable back to its full replica count."""
        canary = canary_object(new, 0)
        if self.kube.get(canary) is not None:
            self.kube.apply_one(annotate_revision(canary, self.n))  # to zero first: no pod outlives the Deployment
        self.kube.apply_one(annotate_revision(stable, stable_rev))
        self._gone(canary)

    def _record_halt(self, why: str, reading: metrics.Reading | None) -> None:
        self._progress(phase="rolled-back", haltedBecause=why,
                       **({"haltReading": reading.to_doc()} if reading else {}))
        self._audit("rolled-back", "error", reason=why, **({"reading": reading.to_doc()} if reading else {}))

    def _halt(self, spec: dict[str, Any], new: dict[str, Any], stable: dict[str, Any], stable_rev: int,
              reading: metrics.Reading | None, weight: int, by: str | None = None) -> None:
        key = str(ObjectKey.of(new))
        self._remove_canary(spec, new, stable, stable_rev)
        why = f"aborted by {by} at {weight}%" if reading is None else f"{reading.text()} at {weight}%"
        self._record_halt(why, reading)
        self._clear_control()
        raise RolloutHalted(key, f"{key}: canary rolled back: {why}; the canary was removed, the stable "
                                 f"Deployment (revision {stable_rev}) is untouched",
                            hint="see installer rollout status and the workload's metrics; fix it and plan a new bundle")

    def _promote(self, spec: dict[str, Any], new: dict[str, Any]) -> None:
        """The stable Deployment takes the new template; then the canary goes."""
        key = str(ObjectKey.of(new))
        self._progress(phase="promoting")
        self._audit("promote", workload=key)
        self.log(f"{key}: promoting: the stable Deployment takes the new template")
        self.kube.apply_one(annotate_revision(new, self.n))
        health.wait_healthy(self.target, [new], timeout=self.timeout, poll=self.poll, log=self.log)  # type: ignore[arg-type]
        canary = canary_object(new, 0)
        self._gone(canary)
        self._clear_control()

    def _clear_control(self) -> None:
        if self.state.read_bytes(CONTROL) is not None:
            self.state.safe.remove([CONTROL])

    def finish(self) -> dict[str, Any]:
        """Run to the end and record the outcome: ``deployed``, or ``rolled-back`` (re-raised)."""
        try:
            self.run()
        except RolloutHalted as e:
            self.store.update(self.n, status="rolled-back", reason=e.message, failedObject=e.key, finishedAt=now_iso())
            raise
        self.store.mark_deployed(self.n, health="healthy")
        return self.store.get(self.n) or {}


def begin(rollouts: list[dict[str, Any]], store: RevisionStore, n: int, stable_revision: int | None) -> None:
    """Record that revision ``n`` carries these rollouts, before any canary exists."""
    if stable_revision is None:
        raise RolloutSpecError("a rollout needs a deployed revision to start from")
    bg = blue_green_state(store) or {}  # carried forward: the switches of workloads this plan leaves alone
    store.update(n, rollout={"phase": "canary", "rollouts": rollouts, "stableRevision": stable_revision,
                             "done": 0, "step": 0, "stepStartedAt": None, "updatedAt": now_iso(),
                             **{k: bg[k] for k in ("effective", "rendered", "active") if k in bg}})


def interrupted(store: RevisionStore) -> dict[str, Any] | None:
    """The newest revision whose rollout a killed installer left in progress, or None."""
    latest = store.latest()
    if latest and latest.get("status") == "pending" and (latest.get("rollout") or {}).get("phase") in IN_PROGRESS:
        return latest
    return None


def refuse_if_interrupted(store: RevisionStore) -> None:
    rec = interrupted(store)
    if rec is not None:
        raise UsageError(f"revision {rec['revision']}'s rollout was interrupted at "
                         f"{(rec['rollout'] or {}).get('weight', 0)}%; it must finish or be aborted first",
                         hint="installer rollout resume --site SITE (or installer rollout abort --site SITE)")


# --- operator control ----------------------------------------------------------------------------

def latest_rollout(state: StateDir) -> dict[str, Any] | None:
    """The newest revision that carried a rollout (in progress or finished), or None."""
    for rec in reversed(RevisionStore(state).all()):
        if rec.get("rollout"):
            return rec
    return None


def status_lines(rec: dict[str, Any]) -> list[str]:
    """``installer rollout status``: where the rollout is and what the gates last read."""
    prog = rec.get("rollout") or {}
    lines = [f"revision {rec['revision']} ({rec['bundle']['name']} {rec['bundle']['version']}): "
             f"{rec['status']}, rollout {prog.get('phase')}"
             + (f" at {prog.get('weight')}%" if prog.get("phase") in IN_PROGRESS and prog.get("weight") else "")]
    lines += ["  " + line for line in describe(prog.get("rollouts", []))]
    for r in prog.get("gates") or []:
        lines.append(f"  last reading: {metrics.Reading(**r).text()}")
    if prog.get("haltedBecause"):
        lines.append(f"  halted: {prog['haltedBecause']}")
    if rec["status"] == "pending" and prog.get("phase") in IN_PROGRESS:
        lines.append("  if no installer is running it: installer rollout resume | promote | abort --site SITE")
    return lines


def _in_progress(state: StateDir, site: Site) -> dict[str, Any]:
    rec = interrupted(RevisionStore(state))
    if rec is None:
        raise UsageError(f"no rollout is in progress at site {site.name}", hint="see installer rollout status --site SITE")
    return rec


def control(site: Site, state: StateDir, action: str, operator: str, *, poll: float, timeout: float,
            log: Log) -> dict[str, Any]:
    """``resume``, ``promote`` or ``abort`` the rollout in progress, and return its final record.

    When no installer runs the rollout (it was killed) this process takes the state lock and
    carries the rollout on from its record. When one does, the request is left for it
    (``rollout-control.json``, read at every poll) and this waits for the outcome.
    """
    rec = _in_progress(state, site)
    n = int(rec["revision"])
    if action != "resume" and (rec.get("rollout") or {}).get("phase") == "blue-green":
        raise UsageError(f"revision {n} is a blue-green rollout: it has no steps to {action}; it switches once "
                         "the new side is healthy", hint="resume it, or after the switch: installer rollback --site SITE")
    if action != "resume":
        state.write_json(CONTROL, {"revision": n, "action": action, "operator": operator, "at": now_iso()})
    try:
        with state.locked():
            if interrupted(RevisionStore(state)) is None:  # the runner finished meanwhile
                return RevisionStore(state).get(n) or {}
            log(f"revision {n}: {action} (no installer is running this rollout; carrying it on here)")
            runner = Runner(open_target(site, state.scratch), state, n, poll=poll, timeout=timeout, log=log)
            return runner.finish()
    except StateLockedError:
        pass
    if action == "resume":
        raise UsageError(f"revision {n}'s rollout is being run by another installer",
                         hint="wait for it, or ask it to stop: installer rollout promote|abort --site SITE")
    log(f"revision {n}: asked the running installer to {action}; waiting for it")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = RevisionStore(state).get(n) or {}
        if now.get("status") != "pending":
            return now
        time.sleep(poll)
    raise EdgebundleError(f"the installer running revision {n}'s rollout has not acted on {action} within "
                          f"{timeout:g} s", hint="see installer rollout status --site SITE")
