"""Render a verified bundle's Kubernetes manifests for one site.

Rendering is a pure function of the signed root, the manifest bytes it pins and the Site:
the same bundle and site always give the same objects, so a plan can be recomputed and a
revision re-applied as it was.

What rendering does, and nothing more (manifests/README.md is the contract with the YAML):

- every ``containers[].image`` (also init and ephemeral containers) that names an image of the
  bundle becomes ``<site registry>/<repository>@sha256:...``: what runs is what was signed;
- the ``NFS_SERVER``/``NFS_PATH`` placeholders of a PersistentVolume's ``spec.nfs`` become the
  site's ``spec.models.nfs`` values;
- in workloads that list models in the ``edgebundle.dev/models`` annotation, environment values
  ``/models/<llm|embeddings|indices>/<name>/<version>[/...]`` get the ``<version>`` this bundle
  stages, so a rollback is just the previous revision's objects (staging switches nothing);
- namespaced objects without a namespace get the site's ``cluster.namespace``;
- Service ports and container ports without ``protocol`` get ``TCP`` (the server's default): a
  list keyed by (port, protocol) cannot be server-side applied with the key missing on servers
  before 1.26 (HTTP 500 "element that omits key field protocol");
- every top-level object gets the ownership labels (:data:`OWNERSHIP_LABELS`).

Invariants:
- Rendering never drops or invents objects (a ``kind: List`` is flattened into its items).
- Anything rendering cannot resolve (an image the bundle lacks, a model it does not stage) is left
  as written; :mod:`installer.policy` refuses it, naming the object.
- Manifest bytes are re-hashed against the signed root as they are read.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from edgebundle import layout
from edgebundle.boundedyaml import YamlBoundError, load_all_bounded
from edgebundle.digest import sha256_bytes
from edgebundle.errors import EdgebundleError, VerificationError
from edgebundle.ocinames import parse_reference
from edgebundle.root import KIND_DIRS, ImageEntry, ModelEntry, Root
from edgebundle.sources import BundleSource, read_small
from installer.site import Site

#: The server-side-apply field manager, and the value of ``app.kubernetes.io/managed-by``.
MANAGER = "edgebundle"
MANAGED_BY = "app.kubernetes.io/managed-by"
BUNDLE_LABEL = "edgebundle.dev/bundle"
SITE_LABEL = "edgebundle.dev/site"
#: Set at apply time on objects a revision creates or changes: the revision that last changed it.
REVISION_ANNOTATION = "edgebundle.dev/revision"
MODELS_ANNOTATION = "edgebundle.dev/models"
#: Where workloads mount the model store (manifests/README.md).
MODELS_MOUNT = "/models"
NFS_PLACEHOLDERS = {"server": "NFS_SERVER", "path": "NFS_PATH"}
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

#: Kinds that are not namespaced (besides CRDs in the bundle with ``scope: Cluster``).
CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "PersistentVolume", "CustomResourceDefinition", "ClusterRole",
    "ClusterRoleBinding", "StorageClass", "PriorityClass", "RuntimeClass", "IngressClass",
    "APIService", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "CSIDriver", "CSINode",
    "VolumeAttachment", "CertificateSigningRequest", "FlowSchema", "PriorityLevelConfiguration",
})

#: Apply order (lower first); deletion runs in reverse. Unlisted built-ins rank 9, custom kinds 10.
_ORDER = {
    "Namespace": 0, "CustomResourceDefinition": 1,
    "PriorityClass": 2, "StorageClass": 2, "RuntimeClass": 2, "IngressClass": 2,
    "ServiceAccount": 3, "ClusterRole": 3, "Role": 3, "ClusterRoleBinding": 3, "RoleBinding": 3,
    "ResourceQuota": 3, "LimitRange": 3, "NetworkPolicy": 3,
    "ConfigMap": 4, "Secret": 4,
    "PersistentVolume": 5, "PersistentVolumeClaim": 6, "Service": 7,
    "Deployment": 8, "StatefulSet": 8, "DaemonSet": 8, "ReplicaSet": 8, "Job": 8, "CronJob": 8,
    "Pod": 8, "ReplicationController": 8,
}
_BUILTIN_GROUPS = frozenset({
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "node.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io",
    "discovery.k8s.io", "admissionregistration.k8s.io", "apiregistration.k8s.io",
})

_MODEL_PATH = re.compile(r"^/models/(llm|embeddings|indices)/([A-Za-z0-9][A-Za-z0-9._-]*)/"
                         r"([A-Za-z0-9][A-Za-z0-9._-]*)(/.*)?$")


class RenderError(EdgebundleError):
    """The bundle's manifests cannot be rendered for this site."""


# --- object identity --------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class ObjectKey:
    """Identity of one Kubernetes object: API group (not version), kind, namespace, name."""

    group: str
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> "ObjectKey":
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        meta = obj.get("metadata") or {}
        return cls(group, str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))

    @classmethod
    def parse(cls, s: str) -> "ObjectKey":
        """Inverse of :attr:`id`."""
        group, kind, namespace, name = s.split("|")
        return cls(group, kind, namespace, name)

    @property
    def id(self) -> str:
        """A stable string form, used as a JSON key in plans and revisions."""
        return f"{self.group}|{self.kind}|{self.namespace}|{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


def order_rank(kind: str, group: str) -> int:
    if kind in _ORDER:
        return _ORDER[kind]
    return 9 if group in _BUILTIN_GROUPS else 10


def apply_order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects sorted for applying (stable: manifest order within a rank)."""
    return sorted(objects, key=lambda o: order_rank(ObjectKey.of(o).kind, ObjectKey.of(o).group))


# --- walking pod specs ------------------------------------------------------------------------

def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The PodSpec a workload runs (Pod, template, CronJob job template), or None."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        return template["spec"]
    return None


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field, container) for every container of a PodSpec."""
    for fieldname in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(fieldname) or []:
            if isinstance(c, dict):
                yield fieldname, c


# --- what a bundle provides -------------------------------------------------------------------

def _short_repo(repo: str) -> str:
    return repo.removeprefix("library/")


def resolve_image(ref: str, images: list[ImageEntry]) -> ImageEntry | None:
    """The bundle image a manifest reference names: same repository, and same tag or digest.

    The registry part is ignored: the site registry replaces it, and what is pinned is content.
    """
    for im in images:
        if ref == im.ref:
            return im
    try:
        parsed = parse_reference(ref)
    except EdgebundleError:
        return None
    for im in images:
        if _short_repo(im.repository) != _short_repo(parsed.repository):
            continue
        if parsed.digest is not None:
            if parsed.digest == im.digest:
                return im
        elif parsed.tag is not None and parsed.tag == im.tag:
            return im
    return None


def site_image(registry: str, image: ImageEntry) -> str:
    return f"{registry}/{image.repository}@{image.digest}"


def model_dir(model: ModelEntry) -> str:
    """Path of a model version inside a container (the store is mounted at ``/models``)."""
    return f"{MODELS_MOUNT}/{KIND_DIRS[model.kind]}/{model.name}/{model.version}"


def parse_model_path(value: str) -> tuple[str, str, str, str] | None:
    """``/models/<dir>/<name>/<version>[rest]`` -> (dir, name, version, rest), else None."""
    m = _MODEL_PATH.match(value)
    return (m[1], m[2], m[3], m[4] or "") if m else None


# --- reading the manifests --------------------------------------------------------------------

def read_manifest_docs(source: BundleSource, root: Root) -> list[tuple[str, dict[str, Any]]]:
    """Every YAML document of the bundle's manifests as (file path, object), in file order.

    Each manifest blob is read bounded and hashed against its pin in the signed root before it
    is parsed (the source may have changed since verification).
    """
    if root.manifests is None:
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for mf in sorted(root.manifests.files, key=lambda f: f.path):
        data = read_small(source, layout.blob_path(mf.digest), MAX_MANIFEST_BYTES)
        if sha256_bytes(data) != mf.digest or len(data) != mf.size:
            raise VerificationError(f"manifest {mf.path} does not match its signed digest {mf.digest}",
                                    hint="the bundle changed since it was verified; copy it again")
        out += parse_manifest(mf.path, data)
    return out


def parse_manifest(path: str, data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The Kubernetes objects of one manifest file as (path, object); ``kind: List`` flattened.

    Shared by the site (signed manifests) and the build host (``bundle lint``), so both read the
    same objects from the same bytes.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        docs = load_all_bounded(data, f"manifest {path}")
    except YamlBoundError as e:
        raise RenderError(e.message, hint=e.hint) from None
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for obj in items or []:
            if not isinstance(obj, dict) or not obj.get("apiVersion") or not obj.get("kind") \
                    or not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
                raise RenderError(f"manifest {path} document {i + 1} is not a Kubernetes object "
                                  "(needs apiVersion, kind and metadata.name)")
            out.append((path, obj))
    return out


def label_value(value: str) -> str:
    """Label values are at most 63 characters of ``[A-Za-z0-9._-]`` (bundle names already are)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63].strip("._-")


# --- rendering --------------------------------------------------------------------------------

@dataclass
class Rendered:
    """The site's objects for one bundle, in apply order, plus what they use."""

    bundle: dict[str, str]  # name, version, root
    objects: list[dict[str, Any]]
    #: repository -> digest of every bundle image a workload runs (after render).
    images: dict[str, str] = field(default_factory=dict)
    #: model name -> {"kind", "version"} of every bundle model a workload points at.
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    #: file each object came from, by key id (for messages).
    origin: dict[str, str] = field(default_factory=dict)


def _crd_scopes(docs: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced, for CRDs the manifests define."""
    scopes: dict[tuple[str, str], bool] = {}
    for _, obj in docs:
        if obj.get("kind") == "CustomResourceDefinition":
            spec = obj.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            if kind:
                scopes[(str(spec.get("group", "")), str(kind))] = spec.get("scope") != "Cluster"
    return scopes


def is_namespaced(group: str, kind: str, crd_scopes: dict[tuple[str, str], bool]) -> bool:
    if (group, kind) in crd_scopes:
        return crd_scopes[(group, kind)]
    return kind not in CLUSTER_SCOPED


def _render_nfs(obj: dict[str, Any], site: Site, where: str) -> None:
    nfs = (obj.get("spec") or {}).get("nfs")
    if obj.get("kind") != "PersistentVolume" or not isinstance(nfs, dict):
        return
    values = {"server": site.nfs_server, "path": site.nfs_path}
    for key, placeholder in NFS_PLACEHOLDERS.items():
        if nfs.get(key) == placeholder:
            if not values[key]:
                raise RenderError(f"{where} needs the site's NFS {key}, and the site file has none",
                                  hint=f"set spec.models.nfs.{key} in the site file")
            nfs[key] = values[key]


def _render_models(obj: dict[str, Any], spec: dict[str, Any], models: list[ModelEntry],
                   used: dict[str, dict[str, str]], where: str) -> None:
    listed = [n.strip() for n in str((obj.get("metadata", {}).get("annotations") or {})
                                     .get(MODELS_ANNOTATION, "")).split(",") if n.strip()]
    by_name: dict[str, list[ModelEntry]] = {}
    for m in models:
        by_name.setdefault(m.name, []).append(m)
    for name in listed:
        if name not in by_name:
            raise RenderError(f"{where} loads model {name!r} (annotation {MODELS_ANNOTATION}), "
                              "which this bundle does not carry",
                              hint=f"bundle carries: {', '.join(sorted(by_name)) or 'no models'}")
    for _, c in containers(spec):
        for env in c.get("env") or []:
            value = env.get("value") if isinstance(env, dict) else None
            parsed = parse_model_path(value) if isinstance(value, str) else None
            if parsed is None or parsed[1] not in listed:
                continue
            kdir, name, version, rest = parsed
            candidates = [m for m in by_name[name] if KIND_DIRS[m.kind] == kdir]
            if not candidates:
                raise RenderError(f"{where} env {env.get('name')} points at {value}, but model {name} "
                                  f"in this bundle is not of the kind stored under /models/{kdir}")
            chosen = next((m for m in candidates if m.version == version), None)
            if chosen is None:
                if len(candidates) > 1:
                    raise RenderError(
                        f"{where} env {env.get('name')}: bundle carries versions "
                        f"{', '.join(m.version for m in candidates)} of {name}; say which one in the path")
                chosen = candidates[0]
            env["value"] = model_dir(chosen) + rest
            used[name] = {"kind": chosen.kind, "version": chosen.version}


def _default_protocols(obj: dict[str, Any]) -> None:
    """``protocol: TCP`` where a Service port or a container port omits it (a list-map key)."""
    ports: list[Any] = []
    spec = obj.get("spec")
    if obj.get("kind") == "Service" and isinstance(spec, dict):
        ports.extend(spec.get("ports") or [])
    pspec = pod_spec(obj)
    if pspec is not None:
        for _, c in containers(pspec):
            ports.extend(c.get("ports") or [])
    for port in ports:
        if isinstance(port, dict) and not port.get("protocol"):
            port["protocol"] = "TCP"


def render(root: Root, root_digest: str, docs: list[tuple[str, dict[str, Any]]], site: Site) -> Rendered:
    """Render parsed manifest documents for ``site`` (see the module docstring)."""
    scopes = _crd_scopes(docs)
    out = Rendered(bundle={"name": root.name, "version": root.version, "root": root_digest}, objects=[])
    seen: dict[str, str] = {}
    for path, original in docs:
        obj = copy.deepcopy(original)
        key = ObjectKey.of(obj)
        meta = obj["metadata"]
        if is_namespaced(key.group, key.kind, scopes):
            meta.setdefault("namespace", site.cluster.namespace)
            if not meta["namespace"]:
                meta["namespace"] = site.cluster.namespace
        else:
            meta.pop("namespace", None)
        key = ObjectKey.of(obj)
        where = f"{key} ({path})"
        if key.id in seen:
            raise RenderError(f"{key} is defined twice: in {seen[key.id]} and {path}")
        seen[key.id] = path
        labels = meta.get("labels") or {}
        labels.update({MANAGED_BY: MANAGER, BUNDLE_LABEL: root.name,
                       SITE_LABEL: label_value(site.name)})
        meta["labels"] = labels
        _render_nfs(obj, site, where)
        _default_protocols(obj)
        spec = pod_spec(obj)
        if spec is not None:
            for _, c in containers(spec):
                image = resolve_image(str(c.get("image", "")), root.images)
                if image is not None:
                    c["image"] = site_image(site.registry_address, image)
                    out.images[image.repository] = image.digest
            _render_models(obj, spec, root.models, out.models, where)
        out.objects.append(obj)
        out.origin[key.id] = path
    out.objects = apply_order(out.objects)
    return out

