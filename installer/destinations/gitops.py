"""A GitOps target: each revision's rendered objects published as an OCI artifact that Flux or
Argo CD reconciles, instead of edgebundle applying them itself (docs/FLEET.md, docs/SITE.md).

The artifact is what ``flux push artifact`` writes and Flux's ``OCIRepository`` reads: an OCI
image manifest whose config is ``application/vnd.cncf.flux.config.v1+json`` and whose one layer,
``application/vnd.cncf.flux.content.v1.tar+gzip``, is a gzipped tar of one YAML file holding the
revision's objects (images pinned by digest, versioned model paths), with the ``created``,
``source`` and ``revision`` annotations Flux shows. It is pushed under the site's tag only after
the operator approved the plan (installer/apply.py); ``history`` and ``rollback`` republish an
earlier revision's objects the same way.

Invariants:
- The tag moves only after the config and the layer are in the repository (the manifest is put
  last), so the controller never sees a half-published revision.
- The bytes are deterministic (tar and gzip times fixed), so republishing the same objects gives
  the same digest; the drift token is the digest the tag named when the plan was made.
- Health is watched when the site also names a kubeconfig (read-only use of the cluster);
  otherwise the revision is recorded as not watched, as for a k3s directory.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any

from edgebundle.digest import sha256_bytes
from edgebundle.errors import EdgebundleError
from edgebundle.registry import Registry
from installer.destinations.cluster import (
    MAX_FILE_BYTES,
    ClusterError,
    DocumentSetTarget,
    KubeTarget,
    Log,
    parse_documents,
    render_documents,
)
from installer.policy import Node
from installer.render import label_value
from installer.state import now_iso

FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b"{}"


def artifact_layer(file_name: str, data: bytes) -> bytes:
    """A gzipped tar of one file, byte-for-byte the same for the same content."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(file_name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def read_layer(blob: bytes, where: str) -> bytes:
    """The YAML files of an artifact layer, concatenated (bounded: a bomb is refused)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as gz:
            raw = gz.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ClusterError(f"{where} unpacks to more than {MAX_FILE_BYTES} bytes")
        out = []
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member) if member.isfile() and member.name.endswith((".yaml", ".yml")) else None
                if f is not None:
                    out.append(f.read())
        return b"\n---\n".join(out)
    except (OSError, EOFError, tarfile.TarError) as e:
        raise ClusterError(f"{where} is not a gzipped tar of manifests: {e}",
                           hint="something else was pushed under this tag; re-plan to overwrite it") from None


class OciArtifactTarget(DocumentSetTarget):
    """``spec.cluster.oci``: the revision's objects as a Flux/Argo CD OCI artifact under one tag."""

    def __init__(self, repository: str, tag: str, site_name: str, *, plain_http: bool = False,
                 health: KubeTarget | None = None) -> None:
        host, _, self.repo = repository.partition("/")
        if not self.repo:
            raise ClusterError(f"spec.cluster.oci.repository {repository!r} names no repository",
                               hint="write it as HOST[:PORT]/REPOSITORY")
        self.registry = Registry(host, plain_http=True if plain_http else None)
        self.tag = tag
        self.file_name = f"edgebundle-{label_value(site_name) or 'site'}.yaml"
        self.description = f"OCI artifact {repository}:{tag}"
        self.token = f"oci:{repository}:{tag}"
        self.health = health
        self.watches_health = health is not None

    def identity(self) -> dict[str, str]:
        return {"kind": "oci-artifact", "repository": f"{self.registry.host}/{self.repo}", "tag": self.tag}

    def _load(self) -> tuple[str | None, dict[str, dict[str, Any]]]:
        try:
            if self.registry.has_manifest(self.repo, self.tag) is None:
                return None, {}
            manifest = self.registry.get_manifest(self.repo, self.tag, accept=(OCI_MANIFEST,))
            layers = [la for la in manifest.json().get("layers", []) if la.get("mediaType") == FLUX_CONTENT]
            if len(layers) != 1 or not isinstance(layers[0].get("size"), int) or layers[0]["size"] > MAX_FILE_BYTES:
                raise ClusterError(f"{self.description} is not an artifact edgebundle published (one "
                                   f"{FLUX_CONTENT} layer)", hint="re-plan to overwrite it")
            blob = b"".join(self.registry.iter_blob(self.repo, layers[0]["digest"], layers[0]["size"]))
        except ClusterError:
            raise
        except EdgebundleError as e:  # the registry: unreachable, refused, or a digest mismatch
            raise ClusterError(f"{self.description}: {e.message}", hint=e.hint) from None
        return manifest.digest, parse_documents(read_layer(blob, self.description), self.description)

    def _store(self, objects: list[dict[str, Any]], revision: int, log: Log) -> None:
        layer = artifact_layer(self.file_name, render_documents(objects, revision))
        try:
            self.registry.push_blob(self.repo, sha256_bytes(CONFIG), len(CONFIG), io.BytesIO(CONFIG))
            self.registry.push_blob(self.repo, sha256_bytes(layer), len(layer), io.BytesIO(layer))
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": FLUX_CONFIG, "digest": sha256_bytes(CONFIG), "size": len(CONFIG)},
                "layers": [{"mediaType": FLUX_CONTENT, "digest": sha256_bytes(layer), "size": len(layer)}],
                "annotations": {"org.opencontainers.image.created": now_iso(),
                                "org.opencontainers.image.source": "edgebundle",
                                "org.opencontainers.image.revision": f"edgebundle-revision-{revision}"},
            }, sort_keys=True, separators=(",", ":")).encode()
            digest = self.registry.put_manifest(self.repo, self.tag, manifest, OCI_MANIFEST)
        except EdgebundleError as e:
            raise ClusterError(f"publishing {self.description}: {e.message}", hint=e.hint) from None
        log(f"published {len(objects)} objects as {self.description} ({digest[:19]}...)")

    # health, when a kubeconfig is given: read the cluster the controller applies to
    def get(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        assert self.health is not None
        return self.health.get(obj)

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        assert self.health is not None
        return self.health.list(api_version, kind, namespace, label_selector, field_selector)

    def nodes(self) -> list[Node] | None:
        return self.health.nodes() if self.health is not None else None
