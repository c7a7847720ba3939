"""The Site document (``kind: Site``): what one edge site has and trusts. docs/SITE.md documents it.

Invariant: a loaded :class:`Site` has absolute paths (relative ones are taken from the site file's
directory, ``~`` is expanded) and at least one trusted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from edgebundle.documents import Strict, load_yaml_document, validate_document
from edgebundle.errors import UsageError

DEFAULT_STATE_DIR = "/var/lib/edgebundle"
DEFAULT_NAMESPACE = "rag-system"


# --- the schema (docs/SITE.md lists exactly these fields; tests/test_documents.py keeps them in step)

class SiteMetadata(Strict):
    name: str


class SiteTrust(Strict):
    keys: list[str]
    threshold: int = 1
    #: the trust version these keys stand for; stored trust updates above it apply on top
    version: int = 1


class SiteRegistry(Strict):
    address: str
    plainHTTP: bool = False
    uploadChunkBytes: int | None = None


class SiteNfs(Strict):
    server: str | None = None
    path: str | None = None


class SiteModels(Strict):
    root: str
    nfs: SiteNfs | None = None


class SiteOciTarget(Strict):
    repository: str  # HOST[:PORT]/REPO
    tag: str | None = None  # default: the site's name
    plainHTTP: bool = False


class SiteCluster(Strict):
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    manifestsDir: str | None = None
    oci: SiteOciTarget | None = None


class SiteMetrics(Strict):
    prometheus: str | None = None  # http://HOST:PORT, read by rollout gates (docs/ROLLOUT.md)


class SiteKeys(Strict):
    keys: list[str]


class SiteBody(Strict):
    compatible: str
    trust: SiteTrust
    registry: SiteRegistry
    models: SiteModels
    stateDir: str = DEFAULT_STATE_DIR
    cluster: SiteCluster | None = None
    requireValidation: SiteKeys | None = None
    siteKey: str | None = None
    approval: SiteKeys | None = None
    #: per Helm chart release of the bundle: values overlaid on the bundle's defaults (docs/SITE.md)
    values: dict[str, dict[str, Any]] | None = None
    metrics: SiteMetrics | None = None


class SiteDocument(Strict):
    apiVersion: Literal["edgebundle/v1"]
    kind: Literal["Site"]
    metadata: SiteMetadata
    spec: SiteBody


@dataclass(frozen=True)
class ClusterTarget:
    """Where manifests go: a cluster by kubeconfig/context, a k3s auto-deploy directory, or an OCI
    artifact a GitOps controller (Flux, Argo CD) reconciles (then a kubeconfig only watches health)."""

    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    manifests_dir: Path | None = None  # k3s: /var/lib/rancher/k3s/server/manifests
    oci_repository: str | None = None  # HOST[:PORT]/REPO
    oci_tag: str | None = None
    oci_plain_http: bool = False


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
    #: Size of each PATCH of a chunked blob upload. None (the default): each blob goes up as one
    #: request, as Docker pushes; set it when a proxy in front of the registry limits request bodies.
    registry_chunk_size: int | None = None
    #: The trust version ``spec.trust`` stands for (stored trust updates above it apply on top).
    trust_version: int = 1
    #: ``spec.approval.keys``: when given, only approvals signed by one of them count.
    approval_keys: tuple[Path, ...] = ()
    #: ``spec.values``: release name -> values overlaid on that chart's bundle defaults.
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``spec.metrics.prometheus``: where canary gates read their metrics.
    prometheus: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def has_cluster_target(self) -> bool:
        """Does the site file name a cluster (``spec.cluster``)? Without one, nothing is ever applied,
        so a bundle counts as deployed once loaded and staged (docs/SITE.md)."""
        return bool((self.raw.get("spec") or {}).get("cluster"))

    def with_overrides(self, **changes: Any) -> "Site":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_site(path: Path) -> Site:
    """Read a site file; paths inside are relative to its directory."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UsageError(f"site file {path} does not exist", hint="pass --site SITE.yaml")
    data, text = load_yaml_document(path, "site file")
    if not isinstance(data, dict) or data.get("apiVersion") != "edgebundle/v1" or data.get("kind") != "Site":
        raise UsageError(f"{path} is not a site file (want apiVersion: edgebundle/v1, kind: Site)")
    doc = validate_document(SiteDocument, data, what="site file", where=path, text=text,
                            doc_hint="docs/SITE.md")
    base, spec = path.parent, doc.spec
    if not spec.trust.keys:
        raise UsageError("site file: spec.trust.keys is empty", hint="list the builder's public key(s)")
    if not 1 <= spec.trust.threshold <= len(spec.trust.keys):
        raise UsageError(f"site file: spec.trust.threshold is {spec.trust.threshold}; it must be between 1 "
                         f"and the number of trusted keys ({len(spec.trust.keys)})")
    chunk = spec.registry.uploadChunkBytes
    if spec.trust.version < 1:
        raise UsageError("site file: spec.trust.version must be 1 or more")
    if chunk is not None and chunk < 64 * 1024:
        raise UsageError("site file: spec.registry.uploadChunkBytes must be at least 65536")
    cl = spec.cluster or SiteCluster()
    nfs = spec.models.nfs or SiteNfs()
    cluster = ClusterTarget(
        kubeconfig=_path(base, cl.kubeconfig) if cl.kubeconfig else None,
        context=cl.context, namespace=cl.namespace,
        manifests_dir=_path(base, cl.manifestsDir) if cl.manifestsDir else None,
        oci_repository=cl.oci.repository if cl.oci else None,
        oci_tag=(cl.oci.tag or doc.metadata.name) if cl.oci else None,
        oci_plain_http=bool(cl.oci and cl.oci.plainHTTP))
    if cl.oci and cl.manifestsDir:
        raise UsageError("site file: spec.cluster names both manifestsDir and oci",
                         hint="a site's manifests go to one place: keep one of them")
    return Site(
        path=path, name=doc.metadata.name, compatible=spec.compatible,
        trust_keys=tuple(_path(base, k) for k in spec.trust.keys),
        trust_threshold=spec.trust.threshold,
        registry_address=spec.registry.address,
        registry_plain_http=spec.registry.plainHTTP,
        models_root=_path(base, spec.models.root),
        nfs_server=nfs.server, nfs_path=nfs.path,
        state_dir=_path(base, spec.stateDir),
        cluster=cluster,
        require_validation_keys=tuple(_path(base, k) for k in (spec.requireValidation.keys
                                                               if spec.requireValidation else ())),
        site_key=_path(base, spec.siteKey) if spec.siteKey else None,
        registry_chunk_size=chunk,
        trust_version=spec.trust.version,
        approval_keys=tuple(_path(base, k) for k in (spec.approval.keys if spec.approval else ())),
        values=dict(spec.values or {}),
        prometheus=spec.metrics.prometheus if spec.metrics else None,
        raw=data,
    )


def resolve_site(site_path: Path, registry_override: str | None = None,
                 models_root_override: Path | None = None,
                 state_dir_override: Path | None = None) -> Site:
    """The site file at ``site_path`` with the command line's overrides of single fields."""
    site = load_site(site_path)
    return site.with_overrides(
        registry_address=registry_override,
        models_root=models_root_override.resolve() if models_root_override else None,
        state_dir=state_dir_override.resolve() if state_dir_override else None)

