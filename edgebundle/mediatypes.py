"""Media types: OCI image-spec, Docker schema 2, CNCF ModelPack and edgebundle's own.

Invariant: every media-type string the project writes or matches is spelled once, here.
"""

from __future__ import annotations

# OCI image-spec v1.1
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"

# Docker image manifest v2 schema 2
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# CNCF ModelPack (model-spec v1)
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODEL_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
MODEL_WEIGHT_TAR_ZSTD = "application/vnd.cncf.model.weight.v1.tar+zstd"
MODEL_WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
MODEL_WEIGHT_CONFIG_TAR_ZSTD = "application/vnd.cncf.model.weight.config.v1.tar+zstd"
MODEL_DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"

# Helm charts as OCI artifacts (helm.sh/docs/topics/registries)
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART_CONTENT = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

# edgebundle
#: A chart's bundle default values (canonical JSON), pinned by the root beside the Helm artifact.
EDGEBUNDLE_HELM_VALUES = "application/vnd.edgebundle.helm.values.v1+json"
EDGEBUNDLE_MANIFESTS_ARTIFACT = "application/vnd.edgebundle.manifests.v1"
EDGEBUNDLE_K8S_MANIFEST = "application/vnd.edgebundle.k8s-manifest.v1+yaml"
#: A delta's small carried documents, concatenated in one zstd frame (docs/DELTA.md).
EDGEBUNDLE_DELTA_PACK = "application/vnd.edgebundle.pack.v1+zstd"

#: Documents that carry a list of per-platform manifests.
INDEX_TYPES: frozenset[str] = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: Documents that point at one config and a list of layers.
IMAGE_MANIFEST_TYPES: frozenset[str] = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: Everything a registry may serve from ``/manifests/``; the order is the ``Accept`` preference.
ALL_MANIFEST_TYPES: tuple[str, ...] = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)


def is_index(media_type: str) -> bool:
    """True for an OCI index or a Docker manifest list."""
    return media_type in INDEX_TYPES


def is_image_manifest(media_type: str) -> bool:
    """True for an OCI image manifest or a Docker schema 2 manifest."""
    return media_type in IMAGE_MANIFEST_TYPES

# DSSE payload types: what each signed envelope carries (edgebundle/signing.py)
#: A payload type ending in this carries its document zstd-compressed (edgebundle/signing.py).
PAYLOAD_ZSTD_SUFFIX = "+zstd"
PAYLOAD_ROOT = "application/vnd.edgebundle.root.v1+json"
#: The same root document, zstd-compressed (a delta's root, docs/DELTA.md): the signatures cover
#: the compressed bytes; the root digest is still that of the decompressed document.
PAYLOAD_ROOT_ZSTD = PAYLOAD_ROOT + PAYLOAD_ZSTD_SUFFIX
#: The payload types a root envelope may carry.
ROOT_PAYLOAD_TYPES = (PAYLOAD_ROOT, PAYLOAD_ROOT_ZSTD)
PAYLOAD_PARTS = "application/vnd.edgebundle.parts.v1+json"
PAYLOAD_APPROVAL = "application/vnd.edgebundle.approval.v1+json"
PAYLOAD_TRUST = "application/vnd.edgebundle.trust.v1+json"
#: in-toto's own payload type for a Statement (validation records).
PAYLOAD_IN_TOTO = "application/vnd.in-toto+json"

# cosign (sigstore): a key-based signature's layer, and the annotation carrying its signature
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
