"""Plans: exactly what applying a bundle (or rolling back) would change on one cluster.

A plan is computed from the rendered objects, the target and the revision history:

    create     the object does not exist
    update     it exists and applying changes the listed field paths
    replace    the server refuses the change in place and the operator asked for delete + create
               (``installer plan --replace KIND/NS/NAME`` or the object's annotation
               ``edgebundle.dev/update-strategy: fallback-on-replace``)
    unchanged  applying would change nothing
    delete     the previous revision owned it and this one drops it

For a cluster, each object's action and changed fields come from a server-side-apply dry run
of the exact body apply will send (:meth:`installer.destinations.cluster.KubeTarget.preview`),
compared with the live object: the server's defaulting, list-map keys, quantities and omitted
empty values, not a guess. Whatever the server would refuse (a kind or version it does not serve,
an immutable or forbidden change, an unknown field) refuses the whole plan, naming each object,
before anything can be approved. A k3s manifests directory cannot dry-run: there the plan is a
subset diff of the fields the rendered object sets (:func:`installer.diff.diff_object`).

The plan file (JSON) carries everything apply needs and nothing it must look up again: bundle,
site, cluster identity, the rendered objects in apply order with their action, changed fields and
fields taken over from other managers, each live object's uid (or, for a k3s directory, the file
digest), image and model changes, and the revision it builds on. ``planHash`` is the sha256 of
the canonical JSON of every other field; approvals name it.

Drift (:func:`check_drift`) is what would make the approved plan do something else at apply.

Invariant: a plan never changes anything; :func:`installer.apply.deploy` carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebundle.digest import sha256_bytes
from edgebundle.documents import validate_document
from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.root import MalformedRootError, canonical_json, load_json_bounded
from installer import policy, rollout
from installer.destinations.cluster import ClusterError, KubeTarget, ObjectRefused, Preview, Target, ref
from installer.helmrender import helm_owner, render_site
from installer.records import PlanDocument
from installer.render import MANAGED_BY, MANAGER, ObjectKey
from installer.revisions import RevisionStore
from installer.site import Site
from installer.state import StateDir, atomic_write, now_iso
from installer.validate import require_validation

if TYPE_CHECKING:
    from edgebundle.verify import VerifiedBundle

PLAN_TYPE = "edgebundle.plan"
PLAN_VERSION = 1
ACTIONS = ("create", "update", "replace", "delete", "unchanged")


class PlanError(EdgebundleError):
    """A plan file is unusable (malformed, altered, for another site or cluster)."""


class DriftError(EdgebundleError):
    """The cluster changed since the plan was made."""


class PlanRefused(EdgebundleError):
    """The cluster would refuse part of the plan (a dry run said so), so it cannot be approved."""


# --- the plan document --------------------------------------------------------------------------

def plan_hash(doc: dict[str, Any]) -> str:
    return sha256_bytes(canonical_json({k: v for k, v in doc.items() if k != "planHash"}))


def _changes(before: dict[str, Any], after: dict[str, Any], label: str) -> list[dict[str, Any]]:
    out = []
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        out.append({label: name, "from": b, "to": a,
                    "op": "same" if a == b else "add" if b is None else "remove" if a is None else "change"})
    return out


@dataclass
class Plan:
    """A plan document with the accessors apply needs."""

    doc: dict[str, Any]

    @property
    def hash(self) -> str:
        return str(self.doc["planHash"])

    @property
    def bundle(self) -> dict[str, str]:
        return dict(self.doc["bundle"])

    @property
    def revision(self) -> int:
        return int(self.doc["revision"])

    @property
    def previous_revision(self) -> int | None:
        p = self.doc.get("previousRevision")
        return int(p) if p is not None else None

    @property
    def entries(self) -> list[dict[str, Any]]:
        return list(self.doc["objects"])

    def desired_objects(self) -> list[dict[str, Any]]:
        return [e["object"] for e in self.entries if e["action"] != "delete"]

    def changed_ids(self) -> set[str]:
        return {e["id"] for e in self.entries if e["action"] in ("create", "update")}

    def replace_ids(self) -> frozenset[str]:
        return frozenset(e["id"] for e in self.entries if e["action"] == "replace")

    def created_refs(self) -> list[dict[str, Any]]:
        return [e["ref"] for e in self.entries if e["action"] == "create"]

    def delete_refs(self) -> list[dict[str, Any]]:
        return [e["ref"] for e in self.entries if e["action"] == "delete"]

    def summary(self) -> dict[str, int]:
        return {a: sum(1 for e in self.entries if e["action"] == a) for a in ACTIONS}

    def summary_text(self) -> str:
        s = self.summary()
        return (f"{s['create']} create, {s['update']} update, "
                + (f"{s['replace']} replace, " if s["replace"] else "")
                + f"{s['delete']} delete, {s['unchanged']} unchanged")

    @property
    def changes_pending(self) -> bool:
        s = self.summary()
        return bool(s["create"] or s["update"] or s["replace"] or s["delete"] or self.doc.get("unsettled"))

    def to_bytes(self) -> bytes:
        import json

        return json.dumps(self.doc, indent=2, sort_keys=True).encode() + b"\n"

    def write(self, path: Path) -> None:
        atomic_write(Path(path), self.to_bytes())


def load_plan(path: Path) -> Plan:
    """Read a plan file, refusing one that is malformed or whose content no longer has its hash."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read plan {path}: {e.strerror}") from None
    try:
        doc = load_json_bounded(data, f"plan {path}")
    except MalformedRootError as e:
        raise PlanError(e.message) from None
    if not isinstance(doc, dict) or doc.get("_type") != PLAN_TYPE:
        raise PlanError(f"{path} is not an edgebundle plan", hint="make one with: installer plan BUNDLE --site SITE -o PLAN")
    if doc.get("formatVersion") != PLAN_VERSION:
        raise PlanError(f"plan {path} has format {doc.get('formatVersion')!r}; this installer reads {PLAN_VERSION}")
    validate_document(PlanDocument, doc, what="plan", where=path, text=data.decode("utf-8", "replace"))
    got = plan_hash(doc)
    if got != doc["planHash"]:
        raise PlanError(f"plan {path} was modified after it was made (content hash {got}, the plan says "
                        f"{doc['planHash']})", hint="make a new plan; never edit plan files")
    return Plan(doc)


def _owned(store: RevisionStore) -> dict[str, dict[str, Any]]:
    """What may be live from us: the objects of the current revision and of the last attempt."""
    owned: dict[str, dict[str, Any]] = {}
    for rec in (store.current(), store.latest()):
        for o in (rec or {}).get("objects", []):
            owned[ObjectKey.of(o).id] = o
    return owned


def _created_marker(obj: dict[str, Any]) -> str | None:
    """What an object that does not exist yet brings into being for the objects after it: a
    namespace name, or ``group/kind`` for a CustomResourceDefinition."""
    if obj.get("kind") == "Namespace":
        return str((obj.get("metadata") or {}).get("name", ""))
    if obj.get("kind") == "CustomResourceDefinition":
        spec = obj.get("spec") or {}
        return f"{spec.get('group', '')}/{(spec.get('names') or {}).get('kind', '')}"
    return None


def preview_all(target: Target, objects: list[dict[str, Any]], live: dict[str, dict[str, Any] | None],
                owned: dict[str, dict[str, Any]], revision: int,
                replace: frozenset[str]) -> tuple[list[tuple[dict[str, Any], Preview]], list[ObjectRefused]]:
    """Each object's :class:`Preview` in apply order, and every refusal (all of them, not the first)."""
    created: set[str] = set()
    out: list[tuple[dict[str, Any], Preview]] = []
    refused: list[ObjectRefused] = []
    for obj in objects:
        key = ObjectKey.of(obj)
        current = live.get(key.id)
        try:
            pv = target.preview(obj, current, owned.get(key.id), revision,
                                replace=str(key) in replace, created_here=frozenset(created))
        except ObjectRefused as e:
            refused.append(e)
            continue
        marker = _created_marker(obj)
        if marker and current is None:
            created.add(marker)
        out.append((obj, pv))
    return out, refused


def _refuse(refused: list[ObjectRefused]) -> None:
    lines = [f"  {e.message}" + (f"\n    {e.hint}" if e.hint else "") for e in refused]
    raise PlanRefused(f"the cluster would refuse {len(refused)} object(s); nothing can be approved:\n"
                      + "\n".join(lines),
                      hint="fix the manifests (bundle lint checks them on the build host) or, for an object "
                           "that may be re-created, plan with --replace KIND/NAMESPACE/NAME")


def build_plan(*, site: Site, target: Target, store: RevisionStore, bundle: dict[str, str],
               objects: list[dict[str, Any]], images: dict[str, str], models: dict[str, Any],
               notes: list[str] | None = None, purpose: str = "apply", rollback_of: int | None = None,
               validation: dict[str, Any] | None = None, replace: frozenset[str] = frozenset(),
               adopt_helm: bool = False) -> Plan:
    """Preview every rendered object on the target, and list what the revision history owns
    that this set drops. Refuses (:class:`PlanRefused`) when the cluster would refuse anything,
    or when a live object belongs to a ``helm install`` release, unless ``adopt_helm``."""
    latest, current = store.latest(), store.current()
    bg = rollout.blue_green_state(store) if purpose == "apply" else None
    objects = rollout.settle(objects, bg)  # a blue-green switch: the green side and the switched Services stay
    owned = _owned(store)
    wanted = {ObjectKey.of(o).id for o in objects}
    drops = [o for kid, o in owned.items() if kid not in wanted]
    obs = target.observe([ref(o) for o in objects] + [ref(o) for o in drops])
    revision = (store.latest_number() or 0) + 1
    notes = list(notes or [])
    helm_owned = [(ObjectKey.of(o), rel) for o in objects if (rel := helm_owner(obs.live.get(ObjectKey.of(o).id)))]
    if helm_owned and not adopt_helm:
        raise PlanRefused(f"{len(helm_owned)} live object(s) belong to a release installed by helm: "
                          + ", ".join(f"{k} (release {r})" for k, r in helm_owned[:5]),
                          hint="to take them over (docs/SITE.md, \"Charts\"), plan with --adopt-helm, then "
                               "delete that release's sh.helm.release.v1.* secrets; or uninstall it first")
    notes += [f"{k}: adopted from helm release {r}" for k, r in helm_owned]
    previews, refused = preview_all(target, objects, obs.live, owned, revision, replace)
    if refused:
        _refuse(refused)
    entries: list[dict[str, Any]] = []
    for obj, pv in previews:
        key = ObjectKey.of(obj)
        entries.append({"id": key.id, "ref": ref(obj), "action": pv.action, "changes": pv.changes,
                        "takeover": pv.takeover, "object": obj})
        if pv.takeover:
            notes.append(f"{key}: takes over {', '.join(pv.takeover)} (another manager set these fields)")
        if pv.note:
            notes.append(f"{key}: {pv.note}")
    for o in drops:
        kid = ObjectKey.of(o).id
        live = obs.live.get(kid)
        if live is None:
            continue
        if ((live.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) != MANAGER:
            notes.append(f"not deleting {ObjectKey.of(o)}: it is no longer labelled as managed by edgebundle")
            continue
        entries.append({"id": kid, "ref": ref(o), "action": "delete", "changes": [], "takeover": [], "object": None})
    unsettled = _unsettled(latest, bundle, objects)
    if unsettled:
        notes.append(unsettled)
    prev_images = (current or {}).get("images", {})
    prev_models = {k: v.get("version") for k, v in (current or {}).get("models", {}).items()}
    doc: dict[str, Any] = {
        "_type": PLAN_TYPE, "formatVersion": PLAN_VERSION, "created": now_iso(), "purpose": purpose,
        "site": site.name, "stateDir": str(site.state_dir), "cluster": target.identity(),
        "target": target.description, "bundle": dict(bundle),
        "previousRevision": store.latest_number(),
        "currentRevision": (current or {}).get("revision"),
        "revision": revision, "rollbackOf": rollback_of,
        "objects": entries, "observed": {k: v for k, v in obs.tokens.items()
                                          if k in {e["id"] for e in entries} or k.count("|") != 3},
        "images": _changes(prev_images, images, "repository"),
        "models": _changes(prev_models, {k: v.get("version") for k, v in models.items()}, "name"),
        "usedImages": images, "usedModels": models, "notes": notes, "validation": validation,
        "unsettled": unsettled,
    }
    rollouts = rollout.plan_rollouts(entries, site, target, current, bg) if purpose == "apply" else []
    if rollouts:  # covered by the plan hash, so the approval covers steps, gates and thresholds
        doc["rollouts"] = rollouts
    doc["planHash"] = plan_hash(doc)
    return Plan(doc)


def _unsettled(latest: dict[str, Any] | None, bundle: dict[str, str], objects: list[dict[str, Any]]) -> str | None:
    """Why the history does not yet say the cluster runs exactly this bundle's objects, or None.

    A run killed after its last write to the cluster leaves the objects live but the revision
    unrecorded (pending, or failed before its rollback ran): the live objects then match, yet the
    plan must still be applied, so that health is waited for and a revision is recorded.
    """
    if latest is None:
        return "no revision is recorded for this cluster yet: applying records revision 1" if objects else None
    n, status = latest.get("revision"), latest.get("status")
    if status != "deployed":
        why = f" ({latest['reason']})" if latest.get("reason") else ""
        return f"revision {n} is {status}{why}: this plan finishes the job and records the outcome"
    if (latest.get("bundle") or {}).get("root") != bundle.get("root") or latest.get("objects") != objects:
        return f"the cluster's recorded revision {n} is another bundle or other objects: applying records this one"
    return None


def check_target(plan: Plan, site: Site, target: Target) -> None:
    """Refuse a plan made for another site or another cluster."""
    if plan.doc["site"] != site.name:
        raise PlanError(f"plan is for site {plan.doc['site']!r}, this is site {site.name!r}")
    ident = target.identity()
    if plan.doc["cluster"] != ident:
        raise PlanError(f"plan was made against {plan.doc['cluster']}, but the site's cluster is {ident}",
                        hint="make the plan against this cluster")


def check_drift(plan: Plan, target: Target, store: RevisionStore) -> None:
    """Refuse a plan the cluster or the revision history moved away from since it was made.

    Drift is what would make the approved plan do something else now: a revision recorded since,
    an object that appeared, disappeared or was re-created, a field edgebundle sets that another
    manager took over (a server-side-apply conflict names it), or a dry run whose changes differ
    from the plan's. Status and fields no one manages through edgebundle may change freely: pod
    churn, scaling by others, annotations other controllers add.
    """
    latest = store.latest_number()
    if latest != plan.previous_revision:
        raise DriftError(f"revision {latest} was recorded since this plan was made (it builds on "
                         f"revision {plan.previous_revision})", hint="re-plan: installer plan BUNDLE --site SITE")
    obs = target.observe([e["ref"] for e in plan.entries])
    before = plan.doc["observed"]
    problems = []
    for k in sorted(set(obs.tokens) | set(before)):
        if obs.tokens.get(k) == before.get(k):
            continue
        what = ("appeared" if before.get(k) is None else "disappeared" if obs.tokens.get(k) is None
                else "was re-created" if k.count("|") == 3 else "changed")
        problems.append(f"{ObjectKey.parse(k) if k.count('|') == 3 else k} {what}")
    kept = [e for e in plan.entries if e["action"] != "delete"]
    replace = frozenset(str(ObjectKey.parse(e["id"])) for e in kept if e["action"] == "replace")
    previews, refused = preview_all(target, [e["object"] for e in kept], obs.live, _owned(store),
                                    plan.revision, replace)
    problems += [f"{e.key} would now be refused: {e.reason}" for e in refused]
    now = {ObjectKey.of(obj).id: pv for obj, pv in previews}
    for e in kept:
        pv = now.get(e["id"])
        if pv is None:
            continue
        key = ObjectKey.parse(e["id"])
        taken = sorted(set(pv.takeover) - set(e.get("takeover") or []))
        if taken:
            problems.append(f"{key}: {', '.join(taken)} changed by another manager since the plan")
        elif pv.action != e["action"] or pv.changes != e["changes"]:
            was = {c["path"] for c in e["changes"]}
            moved = sorted({c["path"] for c in pv.changes} ^ was) or [pv.action]
            problems.append(f"{key} changed: {', '.join(moved[:3])}" + (" ..." if len(moved) > 3 else ""))
    if problems:
        raise DriftError("the cluster drifted since the plan was made: " + "; ".join(problems[:5])
                         + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
                         hint="re-plan and approve the new plan")


def check_current(plan: Plan, site: Site, target: Target, store: RevisionStore) -> None:
    """Both checks: the right site and cluster, and nothing moved since the plan."""
    check_target(plan, site, target)
    check_drift(plan, target, store)


# --- showing a plan -----------------------------------------------------------------------------

def format_table(plan: Plan, show_unchanged: bool = False) -> str:
    """A kapp-style table of the plan, then image and model changes and a summary."""
    rows = [("Namespace", "Name", "Kind", "Op", "Changed fields")]
    for e in plan.entries:
        if e["action"] == "unchanged" and not show_unchanged:
            continue
        k = ObjectKey.parse(e["id"])
        fields = [f"{'-' if c['op'] == 'remove' else '+' if c['op'] == 'add' else '~'}{c['path']}"
                  for c in e["changes"]]
        rows.append((k.namespace or "(cluster)", k.name, k.kind, e["action"], fields[0] if fields else ""))
        rows.extend(("", "", "", "", f) for f in fields[1:])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    if len(rows) > 1:
        lines = ["  ".join(c.ljust(widths[i]) if i < 4 else c for i, c in enumerate(r)).rstrip() for r in rows]
    for label, items, key in (("Images", plan.doc.get("images", []), "repository"),
                              ("Models", plan.doc.get("models", []), "name")):
        changed = [i for i in items if i["op"] != "same"]
        if changed:
            lines.append(f"{label}:")
            for i in changed:
                lines.append(f"  {i[key]}: {_short(i['from'])} -> {_short(i['to'])}")
    lines.extend(rollout.describe(plan.doc.get("rollouts") or []))
    for n in plan.doc.get("notes") or []:
        lines.append(f"note: {n}")
    b = plan.bundle
    where = f"bundle {b['name']} {b['version']} on {plan.doc['site']} ({plan.doc.get('target', '')})"
    if plan.changes_pending:
        lines.append(f"Plan: {where} as revision {plan.revision}")
    else:
        current = plan.doc.get("currentRevision")
        lines.append(f"Plan: {where}: nothing to change"
                     + (f" (the cluster runs revision {current})" if current is not None else ""))
    lines.append(f"Op: {plan.summary_text()}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    if v is None:
        return "(none)"
    s = str(v)
    return s[:19] + "..." if s.startswith("sha256:") else s


# --- planning a bundle --------------------------------------------------------------------------

def plan_bundle(vb: "VerifiedBundle", site: Site, state: StateDir, target: Target, *,
                validation_file: Path | None = None, replace: frozenset[str] = frozenset(),
                adopt_helm: bool = False) -> Plan:
    """Everything ``installer plan`` does after verification: refuse early, render, check, diff.

    Refuses a bundle whose images and models are not in place yet (load and stage must have completed), one a production site has no staging record for,
    and rendered objects that break policy.
    """
    bundle = {"name": vb.root.name, "version": vb.root.version, "root": vb.root_digest}
    if not state.is_installed(vb.root_digest):
        raise PlanError(f"bundle {vb.root.name} {vb.root.version} is not installed at site {site.name}: "
                        "its images and models must be in place before the cluster may use them",
                        hint="run installer load and installer stage (or installer install) first")
    validation = require_validation(site, state, bundle, validation_file)
    kube_version = target.server_version() if vb.root.charts and isinstance(target, KubeTarget) else None
    rendered = render_site(vb, site, kube_version)
    try:
        nodes = target.nodes()
    except ClusterError as e:  # e.g. RBAC forbids listing nodes: say so in the plan, do not guess
        nodes, why = None, e.message
    else:
        why = ""
    notes = policy.check_all(rendered, vb.root, site.registry_address, nodes)
    if why:
        notes = [f"capacity not checked: {why}"]
    return build_plan(site=site, target=target, store=RevisionStore(state), bundle=bundle,
                      objects=rendered.objects, images=rendered.images, models=rendered.models,
                      notes=notes, validation=validation, replace=replace, adopt_helm=adopt_helm)
