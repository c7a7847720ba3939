"""The Site document (``kind: Site``): what one edge site has and trusts. docs/SITE.md documents it.

Invariant: a loaded :class:`Site` has absolute paths (relative ones are taken from the site file's
directory, ``~`` is expanded) and at least one trusted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bundler.errors import UsageError


@dataclass(frozen=True)
class ClusterTarget:
    """Where manifests go: a cluster by kubeconfig/context, or a k3s auto-deploy directory."""

    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str = "rag-system"
    manifests_dir: Path | None = None  # k3s: /var/lib/rancher/k3s/server/manifests

    @property
    def is_k3s_dir(self) -> bool:
        return self.manifests_dir is not None


@dataclass(frozen=True)
class Site:
    path: Path | None
    name: str
    compatible: str
    trust_keys: tuple[Path, ...]
    trust_threshold: int
    registry_address: str
    registry_plain_http: bool
    models_root: Path
    nfs_server: str | None
    nfs_path: str | None
    state_dir: Path
    cluster: ClusterTarget
    require_validation_keys: tuple[Path, ...] = ()
    #: This site's own signing key (a staging site signs validation records with it).
    site_key: Path | None = None
    #: Size of each PATCH of a chunked blob upload (None: the client's default, 8 MiB). Lower it
    #: when a proxy in front of the registry limits request bodies.
    registry_chunk_size: int | None = None
    #: The trust version ``spec.trust`` stands for (stored trust updates above it apply on top).
    trust_version: int = 1
    #: ``spec.approval.keys``: when given, only approvals signed by one of them count.
    approval_keys: tuple[Path, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def with_overrides(self, **changes: Any) -> "Site":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _get(d: dict[str, Any], key: str, where: str, typ: type = str, required: bool = True) -> Any:
    v = d.get(key)
    if v is None:
        if required:
            raise UsageError(f"site file: {where} needs '{key}'", hint="see docs/SITE.md")
        return None
    if not isinstance(v, typ):
        raise UsageError(f"site file: {where}.{key} must be a {typ.__name__}")
    return v


def load_site(path: Path) -> Site:
    """Read a site file; paths inside are relative to its directory."""
    path = Path(path).expanduser().resolve()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"site file {path} does not exist", hint="pass --site SITE.yaml") from None
    except yaml.YAMLError as e:
        raise UsageError(f"site file {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("apiVersion") != "edgebundle/v1" or doc.get("kind") != "Site":
        raise UsageError(f"{path} is not a site file (want apiVersion: edgebundle/v1, kind: Site)")
    base = path.parent
    meta = _get(doc, "metadata", "document", dict)
    spec = _get(doc, "spec", "document", dict)
    trust = _get(spec, "trust", "spec", dict)
    keys = _get(trust, "keys", "spec.trust", list)
    if not keys:
        raise UsageError("site file: spec.trust.keys is empty", hint="list the builder's public key(s)")
    registry = _get(spec, "registry", "spec", dict)
    models = _get(spec, "models", "spec", dict)
    nfs = models.get("nfs") or {}
    cl = spec.get("cluster") or {}
    cluster = ClusterTarget(
        kubeconfig=_path(base, cl["kubeconfig"]) if cl.get("kubeconfig") else None,
        context=cl.get("context"), namespace=cl.get("namespace", "rag-system"),
        manifests_dir=_path(base, cl["manifestsDir"]) if cl.get("manifestsDir") else None)
    validation = spec.get("requireValidation") or {}
    approval_keys = (spec.get("approval") or {}).get("keys") or []
    if not isinstance(approval_keys, list) or not all(isinstance(k, str) for k in approval_keys):
        raise UsageError("site file: spec.approval.keys must be a list of public key paths")
    chunk = _get(registry, "uploadChunkBytes", "spec.registry", int, required=False)
    trust_version = _get(trust, "version", "spec.trust", int, required=False) or 1
    if trust_version < 1:
        raise UsageError("site file: spec.trust.version must be 1 or more")
    if chunk is not None and chunk < 64 * 1024:
        raise UsageError("site file: spec.registry.uploadChunkBytes must be at least 65536")
    return Site(
        path=path, name=_get(meta, "name", "metadata"), compatible=_get(spec, "compatible", "spec"),
        trust_keys=tuple(_path(base, k) for k in keys),
        trust_threshold=int(trust.get("threshold", 1)),
        registry_address=_get(registry, "address", "spec.registry"),
        registry_plain_http=bool(registry.get("plainHTTP", False)),
        models_root=_path(base, _get(models, "root", "spec.models")),
        nfs_server=nfs.get("server"), nfs_path=nfs.get("path"),
        state_dir=_path(base, spec.get("stateDir", "/var/lib/edgebundle")),
        cluster=cluster,
        require_validation_keys=tuple(_path(base, k) for k in validation.get("keys", [])),
        site_key=_path(base, spec["siteKey"]) if spec.get("siteKey") else None,
        registry_chunk_size=chunk,
        trust_version=trust_version,
        approval_keys=tuple(_path(base, k) for k in approval_keys),
        raw=doc,
    )
