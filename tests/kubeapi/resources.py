"""Resource types the test API server serves, and the discovery documents that describe them.

Invariant: a resource type is identified by (group, plural); every served version of it shares one
store of objects (no conversion, as for CRDs whose versions share a schema). Built-in types are
fixed; types added from CustomResourceDefinitions appear in discovery as soon as the CRD is
written and disappear when it is deleted.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

JSONDict = dict[str, Any]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUB_VERBS = ["get", "patch", "update"]


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it lives in the URL space and what kind of object it holds."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: shared by all versions of a resource."""
        return (self.group, self.plural)

    @property
    def has_generation(self) -> bool:
        """Objects with a spec/status split carry metadata.generation."""
        return self.has_status or self.custom

    def subresources(self) -> dict[str, list[str]]:
        subs: dict[str, list[str]] = {}
        if self.has_status:
            subs["status"] = SUB_VERBS
        if (self.group, self.plural) == ("", "services"):
            subs["proxy"] = ["create", "delete", "get", "patch", "update"]
        if (self.group, self.plural) == ("", "pods"):
            subs["log"] = ["get"]
        return subs

    def discovery(self) -> list[JSONDict]:
        """APIResource entries (the resource, then its subresources) for an APIResourceList."""
        digest = hashlib.sha256(f"{self.group}/{self.version}/{self.kind}".encode()).digest()[:8]
        entry: JSONDict = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": [v for v in VERBS if not (v == "deletecollection" and self.plural == "namespaces")],
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entry["storageVersionHash"] = base64.b64encode(digest).decode()
        out = [entry]
        for sub, verbs in self.subresources().items():
            out.append({"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                        "kind": self.kind, "verbs": verbs})
        return out


def _rt(group: str, plural: str, kind: str, namespaced: bool = True, short: tuple[str, ...] = (),
        status: bool = False, categories: tuple[str, ...] = ()) -> ResourceType:
    return ResourceType(group, "v1", plural, kind.lower(), kind, namespaced, short, categories, status)


ALL = ("all",)
BUILTIN: tuple[ResourceType, ...] = (
    _rt("", "namespaces", "Namespace", False, ("ns",), True),
    _rt("", "configmaps", "ConfigMap", short=("cm",)),
    _rt("", "secrets", "Secret"),
    _rt("", "services", "Service", short=("svc",), status=True, categories=ALL),
    _rt("", "persistentvolumes", "PersistentVolume", False, ("pv",), True),
    _rt("", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
    _rt("", "pods", "Pod", short=("po",), status=True, categories=ALL),
    _rt("", "nodes", "Node", False, ("no",), True),
    _rt("", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _rt("", "events", "Event", short=("ev",)),
    _rt("apps", "deployments", "Deployment", short=("deploy",), status=True, categories=ALL),
    _rt("apps", "statefulsets", "StatefulSet", short=("sts",), status=True, categories=ALL),
    _rt("apps", "daemonsets", "DaemonSet", short=("ds",), status=True, categories=ALL),
    _rt("batch", "jobs", "Job", status=True, categories=ALL),
    _rt("batch", "cronjobs", "CronJob", short=("cj",), status=True, categories=ALL),
    _rt("networking.k8s.io", "ingresses", "Ingress", short=("ing",), status=True),
    _rt("networking.k8s.io", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    _rt("policy", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), status=True),
    _rt("rbac.authorization.k8s.io", "roles", "Role"),
    _rt("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _rt("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False),
    _rt("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False),
    _rt("storage.k8s.io", "storageclasses", "StorageClass", False, ("sc",)),
    _rt("apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", False,
        ("crd", "crds"), True),
)


def types_from_crd(crd: JSONDict) -> list[ResourceType]:
    """The served versions of a CRD as resource types (assumes the CRD already validated)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or {}
        out.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(), kind=names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            has_status="status" in subs, custom=True))
    return out


class Registry:
    """Thread-safe map of served resource types, in discovery order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}
        for rt in BUILTIN:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._types.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def group_versions(self) -> dict[str, list[str]]:
        """Group name -> served versions (first one preferred), core group excluded."""
        out: dict[str, list[str]] = {}
        for rt in self.all():
            if rt.group and rt.version not in out.setdefault(rt.group, []):
                out[rt.group].append(rt.version)
        return out

    def by_kind(self, kind: str) -> list[ResourceType]:
        """Types whose kind, plural or ``plural.group``/``Kind.group`` matches (for test assertions)."""
        want = kind.lower()
        return [rt for rt in self.all()
                if want in (rt.kind.lower(), rt.plural, f"{rt.plural}.{rt.group}", f"{rt.kind.lower()}.{rt.group}")]

    def register_crd(self, crd_name: str, types: list[ResourceType]) -> None:
        with self._lock:
            for old in self._crd_types.pop(crd_name, []):
                self._types.pop((old.group, old.version, old.plural), None)
            for rt in types:
                self._types[(rt.group, rt.version, rt.plural)] = rt
            self._crd_types[crd_name] = types

    def unregister_crd(self, crd_name: str) -> None:
        self.register_crd(crd_name, [])
        with self._lock:
            self._crd_types.pop(crd_name, None)
