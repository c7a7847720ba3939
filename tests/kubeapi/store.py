"""The object store behind the test API server: CRUD, patches, server-side apply, deletion.

Invariants:
- One lock (``Store.lock``) guards every read and write; callers get deep copies, never live dicts.
- ``metadata.resourceVersion`` comes from one global counter and changes only when an object
  really changes: a write that changes nothing (an idempotent re-apply, a controller re-posting the
  same status) returns the stored object untouched, as the apiserver does.
- Every write goes through one path: carry server-owned metadata, status rules (the main resource
  cannot change ``status``, the ``status`` subresource can change nothing else), defaulting,
  validation, generation, managedFields, commit. ``dryRun`` runs all of it and stores nothing.
- Deleting an owner deletes its dependents (ownerReferences), deleting a Namespace deletes its
  contents, deleting a CRD deletes its custom objects and its discovery entries.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from tests.kubeapi import fields
from tests.kubeapi.defaults import IPAllocator, apply_defaults
from tests.kubeapi.errors import (STALE, ApiError, Cause, Target, already_exists, bad_request, conflict,
                                  forbidden, invalid_object, not_found, required)
from tests.kubeapi.resources import Registry, ResourceType, types_from_crd
from tests.kubeapi.selectors import field_matcher, label_matcher
from tests.kubeapi.validation import validate

JSONDict = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or "", name)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
NAMESPACES = ("", "namespaces")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")
# Resources whose DELETE answers with the deleted object rather than a Status (as upstream).
RETURNS_DELETED = {("", "pods"), ("", "services"), ("", "persistentvolumeclaims"), ("", "persistentvolumes"),
                   ("", "serviceaccounts"), ("storage.k8s.io", "storageclasses"), NAMESPACES}


def target(rt: ResourceType, name: str) -> Target:
    return Target(rt.group, rt.plural, rt.kind, name)


def patch_options_invalid(cause: Cause) -> ApiError:
    """422 for bad query options of a PATCH, worded as the apiserver's PatchOptions validation."""
    return invalid_object(Target("meta.k8s.io", "patchoptions", "PatchOptions", ""), [cause])


def _meta(obj: JSONDict) -> JSONDict:
    return obj.setdefault("metadata", {})


def _unversioned(obj: JSONDict) -> JSONDict:
    """The object minus the bookkeeping every write changes: equal means the write was a no-op."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


def _content(obj: JSONDict) -> JSONDict:
    """What changes generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """Thread-safe storage of Kubernetes objects with apiserver write semantics."""

    def __init__(self, registry: Registry, clock: Callable[[], datetime] | None = None) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.ips = IPAllocator()
        self._rv = 0
        self._data: dict[tuple[str, str], dict[ObjKey, JSONDict]] = {}

    # -- helpers -----------------------------------------------------------------------------

    def now(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._rv)

    def _bucket(self, rt: ResourceType) -> dict[ObjKey, JSONDict]:
        return self._data.setdefault(rt.key, {})

    def _raw(self, rt: ResourceType, ns: str, name: str) -> JSONDict | None:
        return self._bucket(rt).get((ns if rt.namespaced else "", name))

    @staticmethod
    def _versioned(rt: ResourceType, obj: JSONDict) -> JSONDict:
        """A copy of ``obj`` as seen through ``rt``'s version (no conversion: shared schema)."""
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        out["kind"] = rt.kind
        return out

    def _namespace_must_exist(self, ns: str) -> None:
        if ns not in {name for (_, name) in self._data.get(NAMESPACES, {})}:
            raise not_found(Target("", "namespaces", "Namespace", ns))

    def _default_storage_class(self) -> str | None:
        for (_, name), sc in sorted(self._data.get(("storage.k8s.io", "storageclasses"), {}).items()):
            if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true":
                return name
        return None

    @staticmethod
    def _view(rt: ResourceType, obj: JSONDict, subresource: str) -> JSONDict:
        """The fields a write through this endpoint may own."""
        if subresource == "status":
            return {"status": copy.deepcopy(obj["status"])} if obj.get("status") is not None else {}
        return fields.managed_view(obj, with_status=not rt.has_status)

    @staticmethod
    def check_body(rt: ResourceType, ns: str, name: str | None, body: Any, apply: bool = False) -> JSONDict:
        """Reject bodies addressed to another type, name or namespace (400, as the apiserver)."""
        if not isinstance(body, dict):
            raise bad_request("the object provided is unrecognized: expected a JSON object")
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if apply and api_version != rt.api_version:
            raise bad_request(f"Incorrect version specified in apply patch. Specified patch version: "
                              f"{api_version or ''}, expected: {rt.api_version}")
        if api_version and api_version != rt.api_version:
            raise bad_request(f"the API version in the data ({api_version or ''}) does not match the expected "
                              f"API version ({rt.api_version})")
        if (kind or apply) and kind != rt.kind:
            raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind}): "
                              f"kind {json.dumps(kind or '')} does not match")
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if name is not None and meta.get("name") != name:
            raise bad_request(f"the name of the object ({meta.get('name') or ''}) does not match the name on "
                              f"the URL ({name})")
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        return body

    # -- reads -------------------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str, name: str) -> JSONDict:
        with self.lock:
            obj = self._raw(rt, ns, name)
            if obj is None:
                raise not_found(target(rt, name))
            return self._versioned(rt, obj)

    def find(self, rt: ResourceType, ns: str | None = None) -> list[JSONDict]:
        """Copies of all objects of a type (in one namespace, or all), in (namespace, name) order."""
        with self.lock:
            items = sorted(self._bucket(rt).items())
            return [self._versioned(rt, o) for (ons, _), o in items if ns is None or ons == ns]

    def list_doc(self, rt: ResourceType, ns: str | None, label_selector: str | None = None,
             field_selector: str | None = None, limit: int | None = None, cont: str | None = None) -> JSONDict:
        """A ``<Kind>List`` document (items of built-in lists carry no kind/apiVersion, as upstream)."""
        by_label, by_field = label_matcher(label_selector), field_matcher(field_selector)
        start = ""
        if cont:
            try:
                start = json.loads(base64.urlsafe_b64decode(cont.encode()))["start"]
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: illegal base64 data") from None
        with self.lock:
            rv = str(self._rv)
            items = [o for o in self.find(rt, ns if rt.namespaced else None) if by_label(o) and by_field(o)]
        items = [o for o in items if f"{_meta(o).get('namespace', '')}/{_meta(o)['name']}" > start]
        meta: JSONDict = {"resourceVersion": rv}
        if limit and len(items) > limit:
            last = items[limit - 1]
            token = {"start": f"{_meta(last).get('namespace', '')}/{_meta(last)['name']}"}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if not rt.custom:
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": items}

    def snapshot(self) -> list[JSONDict]:
        """Every stored object (with apiVersion/kind of its first served version)."""
        with self.lock:
            seen: set[tuple[str, str]] = set()
            out = []
            for rt in self.registry.all():
                if rt.key not in seen:
                    seen.add(rt.key)
                    out += self.find(rt)
            return out

    # -- the single write path ---------------------------------------------------------------

    def _prepare(self, rt: ResourceType, ns: str, new: JSONDict, old: JSONDict | None, subresource: str) -> JSONDict:
        """Carry server-owned fields, apply status rules and defaults, validate, set generation."""
        if old is not None and subresource == "status":
            obj = copy.deepcopy(old)
            obj["status"] = copy.deepcopy(new.get("status"))
            if obj["status"] is None:
                obj.pop("status")
        else:
            obj = copy.deepcopy(new)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = _meta(obj)
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        for key in ("resourceVersion", "managedFields", "selfLink"):
            meta.pop(key, None)
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = self.now()
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                meta.pop(key, None)
            if rt.has_status:
                obj.pop("status", None)
        else:
            for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if rt.has_status and subresource != "status":
                if old.get("status") is not None:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
        apply_defaults(rt, obj, old, self.ips, self._default_storage_class())
        causes = validate(rt, obj, old)
        if causes:
            raise invalid_object(target(rt, meta.get("name") or ""), causes)
        if rt.has_generation:
            if old is None:
                meta["generation"] = 1
            else:
                generation = old["metadata"].get("generation", 1)
                meta["generation"] = generation + 1 if _content(obj) != _content(old) else generation
        return obj

    def _commit(self, rt: ResourceType, old: JSONDict | None, obj: JSONDict,
                entries: list[fields.ManagerEntry], dry_run: bool) -> JSONDict:
        meta = _meta(obj)
        if entries:
            meta["managedFields"] = [e.as_dict() for e in entries]
        if old is not None:
            same_entries = fields.entries_equal(fields.parse_entries(old), entries)
            if same_entries and _unversioned(obj) == _unversioned(old):
                return self._versioned(rt, old)
        if dry_run:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"] if old else ""
            return obj
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rt, key, "Background")
            return obj
        self._bucket(rt)[key] = obj
        if rt.key == CRDS:
            self._crd_written(obj)
        self.changed.notify_all()
        return self._versioned(rt, obj)

    def _update(self, rt: ResourceType, ns: str, old: JSONDict, new: JSONDict, manager: str,
                dry_run: bool, subresource: str) -> JSONDict:
        """A non-apply write (PUT or patch): the writer takes ownership of what it changed."""
        rv = _meta(new).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(target(rt, old["metadata"]["name"]), STALE)
        obj = self._prepare(rt, ns, new, old, subresource)
        entries = fields.record_update(fields.parse_entries(old), manager, rt.api_version, self.now(),
                                       self._view(rt, old, subresource), self._view(rt, obj, subresource),
                                       subresource)
        return self._commit(rt, old, obj, entries, dry_run)

    # -- writes ------------------------------------------------------------------------------

    def create(self, rt: ResourceType, ns: str, body: Any, manager: str, dry_run: bool = False) -> JSONDict:
        body = copy.deepcopy(self.check_body(rt, ns, None, body))
        meta = _meta(body)
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError",
                           "Internal error occurred: resourceVersion should not be set on objects to be created",
                           {"causes": [{"message": "resourceVersion should not be set on objects to be created"}]})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789")
                                                          for _ in range(5))
        with self.lock:
            if rt.namespaced:
                self._namespace_must_exist(ns)
            obj = self._prepare(rt, ns, body, None, "")
            if self._raw(rt, ns, meta["name"]) is not None:
                raise already_exists(target(rt, meta["name"]))
            entries = fields.record_update([], manager, rt.api_version, self.now(), {},
                                           self._view(rt, obj, ""))
            return self._commit(rt, None, obj, entries, dry_run)

    def replace(self, rt: ResourceType, ns: str, name: str, body: Any, manager: str,
                dry_run: bool = False, subresource: str = "") -> JSONDict:
        body = self.check_body(rt, ns, name, body)
        with self.lock:
            old = self._raw(rt, ns, name)
            if old is None:
                raise not_found(target(rt, name))
            return self._update(rt, ns, old, body, manager, dry_run, subresource)

    def patch(self, rt: ResourceType, ns: str, name: str, content_type: str, patch: Any, manager: str,
              dry_run: bool = False, subresource: str = "", force: bool | None = None) -> tuple[JSONDict, bool]:
        """Apply a patch of any supported type; returns (object, created). ``force`` is for apply only."""
        if content_type == APPLY:
            return self.apply(rt, ns, name, patch, manager, bool(force), dry_run, subresource)
        if force is not None:
            raise patch_options_invalid(forbidden("force", "may not be specified for non-apply patch"))
        with self.lock:
            old = self._raw(rt, ns, name)
            if old is None:
                raise not_found(target(rt, name))
            current = self._versioned(rt, old)
            if content_type == MERGE:
                if not isinstance(patch, dict):
                    raise bad_request("the body of the request was in an unknown format: a merge patch is a JSON object")
                new = fields.merge_patch(current, patch)
            elif content_type == STRATEGIC:
                if not isinstance(patch, dict):
                    raise bad_request("the body of the request was in an unknown format: a strategic merge patch is a JSON object")
                new = fields.strategic_merge_patch(current, patch)
            else:
                new = fields.json_patch(current, patch)
            meta = _meta(new)
            meta["name"], meta["namespace"] = name, ns
            if not rt.namespaced:
                meta.pop("namespace")
            return self._update(rt, ns, old, new, manager, dry_run, subresource), False

    def apply(self, rt: ResourceType, ns: str, name: str, body: Any, manager: str, force: bool,
              dry_run: bool = False, subresource: str = "") -> tuple[JSONDict, bool]:
        """Server-side apply; returns (object, created)."""
        if not manager:
            raise patch_options_invalid(required("fieldManager", "is required for apply patch"))
        body = self.check_body(rt, ns, name, body, apply=True)
        applied = self._view(rt, body, subresource)
        now = self.now()
        with self.lock:
            old = self._raw(rt, ns, name)
            if old is None:
                if subresource:
                    raise not_found(target(rt, name))
                if rt.namespaced:
                    self._namespace_must_exist(ns)
                obj = self._prepare(rt, ns, body, None, "")
                entry = fields.ManagerEntry(manager, "Apply", rt.api_version, now, fields.leaf_paths(applied))
                return self._commit(rt, None, obj, [entry] if entry.paths else [], dry_run), not dry_run
            rv = _meta(body).get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(target(rt, name), STALE)
            entries, conflicts, prunable = fields.apply_ownership(
                fields.parse_entries(old), manager, rt.api_version, now, self._view(rt, old, subresource),
                applied, force, subresource)
            if conflicts:
                raise ApiError(409, "Conflict", fields.conflict_message(conflicts), {"causes": [
                    {"reason": "FieldManagerConflict", "message": f'conflict with "{c.manager}" using {c.api_version}',
                     "field": fields.render_path(c.path)} for c in conflicts]})
            merged = fields.merge_apply(self._versioned(rt, old), applied)
            fields.prune(merged, prunable, set().union(*(e.paths for e in entries)) if entries else set())
            obj = self._prepare(rt, ns, merged, old, subresource)
            return self._commit(rt, old, obj, entries, dry_run), False

    def delete(self, rt: ResourceType, ns: str, name: str, options: JSONDict | None = None,
               propagation: str | None = None, dry_run: bool = False) -> JSONDict:
        """DELETE: the deleted object or a success Status; objects with finalizers are only marked."""
        options = options or {}
        propagation = propagation or options.get("propagationPolicy") or "Background"
        with self.lock:
            old = self._raw(rt, ns, name)
            if old is None:
                raise not_found(target(rt, name))
            pre = options.get("preconditions") or {}
            meta = old["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                if pre.get(field) and pre[field] != meta.get(field):
                    raise conflict(target(rt, name), f"Precondition failed: {label} in precondition: {pre[field]}, "
                                                     f"{label} in object meta: {meta.get(field)}")
            result = self._versioned(rt, old)
            if dry_run:
                return result if rt.key in RETURNS_DELETED else self._deleted_status(rt, old)
            if meta.get("finalizers"):
                marked = copy.deepcopy(old)
                marked["metadata"].setdefault("deletionTimestamp", self.now())
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rt, old, marked, fields.parse_entries(old), False)
            self._rv += 1
            self._remove(rt, (meta.get("namespace", ""), name), propagation)
            if rt.key == NAMESPACES:
                result["metadata"]["deletionTimestamp"] = self.now()
                result["status"] = {"phase": "Terminating"}
            return result if rt.key in RETURNS_DELETED else self._deleted_status(rt, old)

    def delete_collection(self, rt: ResourceType, ns: str | None, label_selector: str | None,
                          field_selector: str | None, dry_run: bool = False) -> JSONDict:
        doc = self.list_doc(rt, ns, label_selector, field_selector)
        with self.lock:
            for item in doc["items"]:
                if not dry_run and self._raw(rt, _meta(item).get("namespace", ""), _meta(item)["name"]) is not None:
                    self.delete(rt, _meta(item).get("namespace", ""), _meta(item)["name"])
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    @staticmethod
    def _deleted_status(rt: ResourceType, obj: JSONDict) -> JSONDict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": target(rt, obj["metadata"]["name"]).details(uid=obj["metadata"].get("uid", ""))}

    def _remove(self, rt: ResourceType, key: ObjKey, propagation: str) -> None:
        """Drop an object and everything that hangs off it (dependents, namespace contents, CRs)."""
        obj = self._bucket(rt).pop(key, None)
        if obj is None:
            return
        uid = obj["metadata"].get("uid")
        if rt.key == CRDS:
            crd_types = types_from_crd(obj)
            self.registry.unregister_crd(obj["metadata"]["name"])
            for crt in crd_types[:1]:
                self._data.pop(crt.key, None)
        for other in self.registry.all():
            bucket = self._bucket(other)
            for okey, o in list(bucket.items()):
                in_namespace = rt.key == NAMESPACES and other.namespaced and okey[0] == key[1]
                owned = propagation != "Orphan" and any(
                    ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
                if in_namespace or owned:
                    self._remove(other, okey, propagation)
        self.changed.notify_all()

    def _crd_written(self, crd: JSONDict) -> None:
        """The apiextensions controller's job, done synchronously: serve the CRD and mark it Established."""
        self.registry.register_crd(crd["metadata"]["name"], types_from_crd(crd))
        spec = crd.get("spec") or {}
        names = dict(spec.get("names") or {})
        names.setdefault("singular", names.get("kind", "").lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        now = self.now()
        crd["status"] = {
            "acceptedNames": names,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
        }

    # -- helpers for controllers and tests ---------------------------------------------------

    def put_status(self, rt: ResourceType, ns: str, name: str, status: JSONDict,
                   manager: str = "kube-controller-manager") -> JSONDict | None:
        """Write an object's status as a controller would (no resourceVersion precondition)."""
        with self.lock:
            old = self._raw(rt, ns, name)
            if old is None:
                return None
            if old.get("status") == status:
                return self._versioned(rt, old)
            return self._update(rt, ns, old, {**self._versioned(rt, old), "status": status}, manager, False, "status")

    def ensure(self, rt: ResourceType, body: JSONDict, manager: str = "kube-controller-manager") -> JSONDict:
        """Create ``body`` or, if it exists, make it equal to ``body`` (seeding and controllers)."""
        meta = body["metadata"]
        ns = meta.get("namespace", "")
        with self.lock:
            old = self._raw(rt, ns, meta["name"])
            if old is None:
                created = self.create(rt, ns, body, manager)
                if body.get("status") and rt.has_status:
                    return self.put_status(rt, ns, meta["name"], body["status"], manager) or created
                return created
            new = {**copy.deepcopy(body), "metadata": {**copy.deepcopy(old["metadata"]), **copy.deepcopy(meta)}}
            new["metadata"].pop("resourceVersion", None)
            out = self._update(rt, ns, old, new, manager, False, "")
            if body.get("status") and rt.has_status:
                return self.put_status(rt, ns, meta["name"], body["status"], manager) or out
            return out

    def bind(self, rt: ResourceType, ns: str, name: str, node: str) -> JSONDict:
        """The pods/binding subresource: set ``spec.nodeName`` once (pod updates may not change it)."""
        with self.lock:
            old = self._raw(rt, ns, name)
            if old is None:
                raise not_found(target(rt, name))
            if (old.get("spec") or {}).get("nodeName"):
                return self._versioned(rt, old)
            obj = copy.deepcopy(old)
            obj.setdefault("spec", {})["nodeName"] = node
            return self._commit(rt, old, obj, fields.parse_entries(old), False)

    def remove(self, rt: ResourceType, ns: str, name: str) -> bool:
        """Delete without finalizers or preconditions (a controller reaping its pods)."""
        with self.lock:
            if self._raw(rt, ns, name) is None:
                return False
            self._rv += 1
            self._remove(rt, (ns if rt.namespaced else "", name), "Background")
            return True
