"""What one image of a verified bundle consists of: its index, manifests, blobs and attached artifacts.

Read from the bundle (each document re-hashed against the signed root as it is read, since the
media may change after verification) without any registry client, so that naming a bad blob
(``installer.core.describe_blob``) does not load an HTTP stack. ``installer load`` pushes what
:func:`plan_image` lists (installer/destinations/registry.py).

Invariant: every document and blob returned is one the signed root pins, with the pinned size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.digest import DigestMismatchError, sha256_bytes
from edgebundle.errors import VerificationError
from edgebundle.ocinames import MAX_MANIFEST_BYTES
from edgebundle.root import AttachedEntry, BlobPin, ImageEntry, load_json_bounded
from edgebundle.sources import read_small
from edgebundle.verify import VerifiedBundle


@dataclass(frozen=True)
class Document:
    """A manifest or index from the bundle: its signed bytes and what they say."""

    digest: str
    media_type: str
    data: bytes
    doc: dict[str, Any]


@dataclass(frozen=True)
class AttachedPlan:
    """An artifact attached to the image (a signature, attestation, SBOM or referrers index)."""

    entry: AttachedEntry
    top: Document  # pushed under entry.tag, last
    children: list[Document]  # a referrers index's manifests, pushed by digest first; else []


@dataclass(frozen=True)
class ImagePlan:
    """Everything one image needs in the registry, in push order."""

    image: ImageEntry
    top: Document
    children: list[Document]  # per-platform manifests; [top] for a single-platform image
    blobs: list[BlobPin]  # configs and layers, each once (the attached artifacts' too)
    attached: tuple[AttachedPlan, ...] = ()

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blobs)

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.top.media_type)


def read_document(vb: VerifiedBundle, digest: str, what: str) -> Document:
    """A pinned manifest/index from the bundle, re-hashed now (the media may have changed)."""
    pin = vb.root.blobs.get(digest)
    if pin is None:
        raise VerificationError(f"{what} names {digest}, which the signed root does not pin")
    data = read_small(vb.source, layout.blob_path(digest), MAX_MANIFEST_BYTES)
    got = sha256_bytes(data)
    if got != digest or len(data) != pin.size:
        raise DigestMismatchError(f"{what}: {layout.blob_path(digest)} now hashes to {got}, the "
                                  f"signed root says {digest}",
                                  hint="the bundle changed after verification; copy it again")
    doc = load_json_bounded(data, f"{what} {digest}")
    if not isinstance(doc, dict):
        raise VerificationError(f"{what} {digest} is not a JSON object")
    return Document(digest, pin.mediaType, data, doc)


def _pinned(vb: VerifiedBundle, desc: Any, what: str) -> BlobPin:
    digest = desc.get("digest") if isinstance(desc, dict) else None
    pin = vb.root.blobs.get(digest) if isinstance(digest, str) else None
    if pin is None or desc.get("size") != pin.size:
        raise VerificationError(f"{what} references {str(digest)[:80]} which the bundle does not carry "
                                "as pinned", hint="the bundle is inconsistent; rebuild it")
    return pin


def plan_image(vb: VerifiedBundle, image: ImageEntry) -> ImagePlan:
    """Walk an image's index/manifest from the bundle and list what must be pushed."""
    what = f"image {image.refName}"
    top = read_document(vb, image.digest, what)
    if mt.is_index(top.media_type):
        manifests = top.doc.get("manifests")
        if not isinstance(manifests, list) or not manifests:
            raise VerificationError(f"{what}: index {image.digest} lists no manifests")
        children = [read_document(vb, _pinned(vb, d, what).digest, what) for d in manifests]
    else:
        children = [top]
    blobs: dict[str, BlobPin] = {}
    _add_blobs(vb, children, blobs, what)
    subjects = {image.digest, *(c.digest for c in children)}
    attached = []
    for a in image.attached:
        if a.subject not in subjects:
            raise VerificationError(f"{what}: attached {a.tag} names {a.subject}, not one of the image's "
                                    "manifests", hint="the bundle is inconsistent; rebuild it")
        a_top = read_document(vb, a.digest, f"{what} attached {a.tag}")
        a_children = ([read_document(vb, _pinned(vb, d, what).digest, f"{what} attached {a.tag}")
                       for d in a_top.doc.get("manifests") or []] if mt.is_index(a_top.media_type) else [])
        _add_blobs(vb, a_children or [a_top], blobs, f"{what} attached {a.tag}")
        attached.append(AttachedPlan(a, a_top, a_children))
    return ImagePlan(image, top, children, list(blobs.values()), tuple(attached))


def _add_blobs(vb: VerifiedBundle, manifests: list[Document], blobs: dict[str, BlobPin], what: str) -> None:
    """The config and layers of each manifest, each pinned, into ``blobs`` (first one wins)."""
    for child in manifests:
        layers = child.doc.get("layers")
        if "config" not in child.doc or not isinstance(layers, list):
            raise VerificationError(f"{what}: {child.digest} is not an image manifest")
        for desc in [child.doc["config"], *layers]:
            pin = _pinned(vb, desc, f"{what} manifest {child.digest[:19]}")
            blobs.setdefault(pin.digest, pin)


__all__ = ["AttachedPlan", "Document", "ImagePlan", "plan_image", "read_document"]
