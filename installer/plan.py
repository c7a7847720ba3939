"""Plans: exactly what applying a bundle (or rolling back) would change on one cluster.

A plan is computed from the rendered objects, the live cluster and the revision history:

    create     the object does not exist
    update     it exists and differs in the listed field paths
    unchanged  it exists and every field the bundle sets has the bundle's value
    delete     the previous revision owned it and this one drops it

The plan file (JSON) carries everything apply needs and nothing it must look up again: bundle,
site, cluster identity, the rendered objects in apply order with their action and changed fields,
the live ``resourceVersion`` (or, for a k3s directory, the file digest) each was computed against,
image and model changes, and the revision it builds on. ``planHash`` is the sha256 of the
canonical JSON of every other field; approvals name it.

How the diff ignores what the server fills in: only fields the rendered object sets are compared
(a subset comparison), so ``status``, ``metadata.managedFields/resourceVersion/uid/
creationTimestamp/generation``, defaulted fields (``imagePullPolicy``, ``protocol``, ...) and
annotations other controllers add never show up. Lists of objects are matched by their merge key
(``name``, ``containerPort``, ``mountPath``...), other lists by position; quantities compare by
value (``1Gi == 1073741824``). A field the previous revision set and this one drops is reported as
``remove`` when it is still live (server-side apply will remove it). The ``edgebundle.dev/revision``
annotation is not compared.

Drift: apply re-reads the same objects; any token that changed (an object edited, created or
deleted) or a revision applied since the plan means the plan is stale and must be re-made.

Invariant: a plan never changes anything; :func:`installer.revisions.deploy` carries it out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.digest import sha256_bytes
from bundler.documents import validate_document
from bundler.errors import EdgebundleError, UsageError
from bundler.layout import MAX_JSON_BYTES
from bundler.root import MalformedRootError, canonical_json, load_json_bounded
from installer.destinations.cluster import ClusterError, Target, ref
from installer.records import PlanDocument
from installer.render import MANAGED_BY, MANAGER, ObjectKey
from installer.site import Site
from installer.state import atomic_write, now_iso

if TYPE_CHECKING:
    from bundler.verify import VerifiedBundle
    from installer.revisions import RevisionStore
    from installer.state import StateDir

PLAN_TYPE = "edgebundle.plan"
PLAN_VERSION = 1
ACTIONS = ("create", "update", "delete", "unchanged")
_MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "port", "ip")
_QUANTITY_HINTS = ("resources", "capacity", "sizeLimit", "storage", "allocatable")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlanError(EdgebundleError):
    """A plan file is unusable (malformed, altered, for another site or cluster)."""


class DriftError(EdgebundleError):
    """The cluster changed since the plan was made."""


# --- the field diff -----------------------------------------------------------------------------

def _seg(path: str, key: str) -> str:
    if not _IDENT.match(key):
        return f'{path}["{key}"]'
    return f"{path}.{key}" if path else key


def _merge_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    for k in _MERGE_KEYS:
        vals = [i.get(k) for i in items]
        if all(v is not None for v in vals) and len(set(map(str, vals))) == len(vals):
            return k
    return None


def _index(items: Any, key: str) -> dict[str, Any]:
    return {str(i[key]): i for i in items or [] if isinstance(i, dict) and key in i} if isinstance(items, list) else {}


def _same(a: Any, b: Any, path: str) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a == b:
        return True
    if any(h in path for h in _QUANTITY_HINTS) and isinstance(a, (str, int, float)) \
            and isinstance(b, (str, int, float)):
        from kubernetes.utils import parse_quantity  # here, not at import: the client costs ~0.3 s

        try:
            return bool(parse_quantity(a) == parse_quantity(b))
        except ValueError:
            return False
    return False


def _compare(desired: Any, live: Any, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            out.append({"path": path or ".", "op": "change"})
            return
        for k, v in desired.items():
            if v is None or (not path and k == "status"):
                continue
            p = _seg(path, k)
            if k not in live or live[k] is None:
                out.append({"path": p, "op": "add"})
            else:
                _compare(v, live[k], p, out)
    elif isinstance(desired, list):
        if not isinstance(live, list):
            out.append({"path": path, "op": "change"})
            return
        key = _merge_key(desired)
        if key is None:
            if len(desired) != len(live):
                out.append({"path": path, "op": "change"})
                return
            for i, (d, lv) in enumerate(zip(desired, live)):
                _compare(d, lv, f"{path}[{i}]", out)
            return
        live_by = _index(live, key)
        for item in desired:
            p = f"{path}[{key}={item[key]}]"
            if str(item[key]) not in live_by:
                out.append({"path": p, "op": "add"})
            else:
                _compare(item, live_by[str(item[key])], p, out)
    elif not _same(desired, live, path):
        out.append({"path": path, "op": "change"})


def _removed(prev: Any, desired: Any, live: Any, path: str, out: list[dict[str, str]]) -> None:
    if isinstance(prev, dict) and isinstance(desired, dict):
        for k, v in prev.items():
            if v is None or (not path and k == "status"):
                continue
            p = _seg(path, k)
            live_v = live.get(k) if isinstance(live, dict) else None
            if desired.get(k) is None:
                if live_v is not None:
                    out.append({"path": p, "op": "remove"})
            else:
                _removed(v, desired[k], live_v, p, out)
    elif isinstance(prev, list) and isinstance(desired, list):
        key = _merge_key(prev)
        if key is None:
            return  # positional lists: a shorter list already shows as a change
        want, have = _index(desired, key), _index(live, key)
        for item in prev:
            k = str(item[key])
            p = f"{path}[{key}={k}]"
            if k not in want:
                if k in have:
                    out.append({"path": p, "op": "remove"})
            else:
                _removed(item, want[k], have.get(k), p, out)


def diff_object(desired: dict[str, Any], live: dict[str, Any],
                previous: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Field paths where ``live`` differs from ``desired`` (see the module docstring)."""
    out: list[dict[str, str]] = []
    _compare(desired, live, "", out)
    if previous is not None:
        _removed(previous, desired, live, "", out)
    return out


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

    def delete_refs(self) -> list[dict[str, Any]]:
        return [e["ref"] for e in self.entries if e["action"] == "delete"]

    def summary(self) -> dict[str, int]:
        return {a: sum(1 for e in self.entries if e["action"] == a) for a in ACTIONS}

    def summary_text(self) -> str:
        s = self.summary()
        return f"{s['create']} create, {s['update']} update, {s['delete']} delete, {s['unchanged']} unchanged"

    @property
    def changes_pending(self) -> bool:
        s = self.summary()
        return bool(s["create"] or s["update"] or s["delete"] or self.doc.get("unsettled"))

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


def build_plan(*, site: Site, target: Target, store: "RevisionStore", bundle: dict[str, str],
               objects: list[dict[str, Any]], images: dict[str, str], models: dict[str, Any],
               notes: list[str] | None = None, purpose: str = "apply", rollback_of: int | None = None,
               validation: dict[str, Any] | None = None) -> Plan:
    """Compare rendered ``objects`` with the live cluster and the revision history."""
    latest, current = store.latest(), store.current()
    owned: dict[str, dict[str, Any]] = {}
    for rec in (current, latest):  # what may be live from us: the current and the last attempt
        for o in (rec or {}).get("objects", []):
            owned[ObjectKey.of(o).id] = o
    wanted = {ObjectKey.of(o).id for o in objects}
    drops = [o for kid, o in owned.items() if kid not in wanted]
    obs = target.observe([ref(o) for o in objects] + [ref(o) for o in drops])
    entries: list[dict[str, Any]] = []
    for obj in objects:
        kid = ObjectKey.of(obj).id
        live = obs.live.get(kid)
        if live is None:
            action, changes = "create", []
        else:
            changes = diff_object(obj, live, owned.get(kid))
            action = "update" if changes else "unchanged"
        entries.append({"id": kid, "ref": ref(obj), "action": action, "changes": changes, "object": obj})
    notes = list(notes or [])
    for o in drops:
        kid = ObjectKey.of(o).id
        live = obs.live.get(kid)
        if live is None:
            continue
        if ((live.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) != MANAGER:
            notes.append(f"not deleting {ObjectKey.of(o)}: it is no longer labelled as managed by edgebundle")
            continue
        entries.append({"id": kid, "ref": ref(o), "action": "delete", "changes": [], "object": None})
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
        "revision": (store.latest_number() or 0) + 1, "rollbackOf": rollback_of,
        "objects": entries, "observed": {k: v for k, v in obs.tokens.items()
                                          if k in {e["id"] for e in entries} or k.count("|") != 3},
        "images": _changes(prev_images, images, "repository"),
        "models": _changes(prev_models, {k: v.get("version") for k, v in models.items()}, "name"),
        "usedImages": images, "usedModels": models, "notes": notes, "validation": validation,
        "unsettled": unsettled,
    }
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


def check_drift(plan: Plan, target: Target, store: "RevisionStore") -> None:
    """Refuse a plan the cluster or the revision history moved away from since it was made."""
    latest = store.latest_number()
    if latest != plan.previous_revision:
        raise DriftError(f"revision {latest} was recorded since this plan was made (it builds on "
                         f"revision {plan.previous_revision})", hint="re-plan: installer plan BUNDLE --site SITE")
    now = target.observe([e["ref"] for e in plan.entries]).tokens
    before = plan.doc["observed"]
    moved = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
    if moved:
        names = []
        for k in moved[:5]:
            what = ("appeared" if before.get(k) is None else "disappeared" if now.get(k) is None else "changed")
            names.append(f"{ObjectKey.parse(k) if k.count('|') == 3 else k} {what}")
        raise DriftError("the cluster drifted since the plan was made: " + ", ".join(names)
                         + (f" (and {len(moved) - 5} more)" if len(moved) > 5 else ""),
                         hint="re-plan and approve the new plan")


def check_current(plan: Plan, site: Site, target: Target, store: "RevisionStore") -> None:
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

def plan_bundle(vb: "VerifiedBundle", site: Site, state: "StateDir", target: Target, *,
                validation_file: Path | None = None) -> Plan:
    """Everything ``installer plan`` does after verification: refuse early, render, check, diff.

    Refuses a bundle whose images and models are not in place yet (load and stage must have completed), one a production site has no staging record for,
    and rendered objects that break policy.
    """
    from installer import policy
    from installer.core import is_installed
    from installer.render import render_bundle
    from installer.revisions import RevisionStore
    from installer.validate import require_validation

    bundle = {"name": vb.root.name, "version": vb.root.version, "root": vb.root_digest}
    if not is_installed(state, vb.root_digest):
        raise PlanError(f"bundle {vb.root.name} {vb.root.version} is not installed at site {site.name}: "
                        "its images and models must be in place before the cluster may use them",
                        hint="run installer load and installer stage (or installer install) first")
    validation = require_validation(site, state, bundle, validation_file)
    rendered = render_bundle(vb, site)
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
                      notes=notes, validation=validation)
