"""Bundles in OCI registries: what a pushed bundle looks like, and the source that reads one.

A bundle pushed to ``oci://HOST[:PORT]/REPO:TAG`` (``bundle push``, bundler/publish.py;
docs/FLEET.md) is:

- every member of the bundle as a blob of ``REPO`` under its digest: its blobs, and the
  ``oci-layout``, ``index.json`` and signed root envelope files, exact bytes;
- ``TAG`` naming the **bundle manifest**: an OCI image manifest with ``artifactType``
  :data:`BUNDLE_ARTIFACT`, the empty config, and one layer per member *in the bundle's tar order*,
  each titled (``org.opencontainers.image.title``) with its member name. It is the bundle's table
  of contents, as a tar's headers are: ``oras pull`` of the tag writes the bundle directory;
- for a full bundle, also every image manifest, model artifact and the manifests artifact pushed
  as manifests by digest, and ``index.json`` as an image index by digest, the bundle manifest's
  ``subject``: ``skopeo``/``crane`` read the images under the bundle's index, and a
  referrer-aware registry lists the signed root as attached to it.

Invariants:
- The bundle manifest is structure, never trust: :class:`RegistrySource` presents its layers as
  members (names checked like a tar's, each ``blobs/sha256/X`` titled layer of digest X), and the
  verifier then proves everything against the signed root, signature first.
- Every member is streamed and hashed against its digest as it is read
  (:meth:`edgebundle.registry.Registry.iter_blob` holds the last chunk until the digest
  matches); nothing is held whole in memory.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.digest import is_digest, sha256_bytes
from edgebundle.errors import UsageError
from edgebundle.ocinames import MAX_MANIFEST_BYTES, ImageRef, parse_reference
from edgebundle.registry import Registry
from edgebundle.sources import REMOTE_SCHEME, BundleSource, SourceError, is_remote

SCHEME = REMOTE_SCHEME
#: ``artifactType`` of a bundle manifest.
BUNDLE_ARTIFACT = "application/vnd.edgebundle.bundle.v1"
#: Layer media types of the small members (blobs are ``application/octet-stream``).
LAYER_TYPES = {layout.OCI_LAYOUT: "application/vnd.oci.layout.header.v1+json",
               layout.INDEX: mt.OCI_INDEX,
               layout.ROOT: "application/vnd.dsse.envelope.v1+json",
               layout.SBOM: "application/vnd.cyclonedx+json"}
BLOB_LAYER = "application/octet-stream"
TITLE = "org.opencontainers.image.title"
EMPTY_CONFIG = b"{}"
#: The most members a bundle manifest may list (its 4 MiB bound holds about 15,000).
MAX_LAYERS = 10_000


def parse_location(location: str) -> ImageRef:
    """``oci://HOST[:PORT]/REPO:TAG`` (or ``@sha256:...``); the host is required."""
    if not is_remote(location):
        raise UsageError(f"{location!r} is not an oci:// reference",
                         hint="write it as oci://HOST[:PORT]/REPOSITORY:TAG")
    rest = location[len(SCHEME):]
    first = rest.split("/", 1)[0]
    if "/" not in rest or not ("." in first or ":" in first or first == "localhost"):
        raise UsageError(f"{location} names no registry host",
                         hint="write it as oci://HOST[:PORT]/REPOSITORY:TAG, e.g. oci://depot.example:5000/rag/edge:1.0.0")
    return parse_reference(rest)


@dataclass(frozen=True)
class Layer:
    """One member of a pushed bundle: its name, digest and size (as the bundle manifest says)."""

    name: str
    digest: str
    size: int

    def descriptor(self) -> dict[str, Any]:
        media = LAYER_TYPES.get(self.name, BLOB_LAYER)
        return {"mediaType": media, "digest": self.digest, "size": self.size, "annotations": {TITLE: self.name}}


def bundle_manifest(layers: list[Layer], *, subject: dict[str, Any] | None = None,
                    annotations: dict[str, str] | None = None) -> bytes:
    """The bundle manifest's exact bytes (canonical JSON, so the same bundle gives the same digest)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": BUNDLE_ARTIFACT,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": sha256_bytes(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": [la.descriptor() for la in layers],
    }
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def read_bundle_manifest(data: bytes, where: str) -> list[Layer]:
    """The members a bundle manifest lists, refusing anything a bundle cannot hold."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise SourceError(f"{where} is not JSON", hint="this tag does not hold an edgebundle bundle") from None
    if not isinstance(doc, dict) or doc.get("artifactType") != BUNDLE_ARTIFACT:
        found = doc.get("artifactType") if isinstance(doc, dict) else None
        raise SourceError(f"{where} is not an edgebundle bundle (artifactType {found!r})",
                          hint="push the bundle with: bundle push BUNDLE oci://HOST/REPO:TAG")
    raw = doc.get("layers")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_LAYERS:
        raise SourceError(f"{where} lists no members, or more than {MAX_LAYERS}")
    layers, seen = [], set()
    for i, d in enumerate(raw):
        name = (d.get("annotations") or {}).get(TITLE) if isinstance(d, dict) else None
        digest, size = (d.get("digest"), d.get("size")) if isinstance(d, dict) else (None, None)
        w = f"{where}: layer {i}"
        if not isinstance(name, str) or not layout.is_member_name(name):
            raise SourceError(f"{w} is titled {str(name)[:80]!r}, not a bundle member name")
        if name in seen:
            raise SourceError(f"{w} repeats member {name}")
        if not isinstance(digest, str) or not is_digest(digest):
            raise SourceError(f"{w} ({name}) has digest {str(digest)[:80]!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SourceError(f"{w} ({name}) has size {size!r}")
        if layout.digest_of_blob_path(name) not in (None, digest):
            raise SourceError(f"{w} is titled {name} but its digest is {digest}")
        seen.add(name)
        layers.append(Layer(name, digest, size))
    return layers


class _Stream(io.RawIOBase):
    """A blob streamed from a registry, read as a file; counts the bytes it hands out."""

    def __init__(self, chunks: Iterator[bytes], counter: list[int]) -> None:
        self._chunks, self._buf, self._counter = chunks, b"", counter

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buf = chunk
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        self._counter[0] += n
        return n


class RegistrySource(BundleSource):
    """A bundle read from ``oci://HOST/REPO:TAG`` as a tar is read from a file: members, streams."""

    def __init__(self, location: str, *, registry: Registry | None = None, plain_http: bool | None = None) -> None:
        self.ref = parse_location(location)
        self.registry = registry or Registry(self.ref.registry, plain_http=plain_http)
        self.repository = self.ref.repository
        self.description = f"{SCHEME}{self.ref.registry}/{self.ref.repository}:{self.ref.reference}"
        manifest = self.registry.get_manifest(self.repository, self.ref.reference, accept=(mt.OCI_MANIFEST,))
        if manifest.size > MAX_MANIFEST_BYTES:
            raise SourceError(f"{self.description}: the bundle manifest is over {MAX_MANIFEST_BYTES} bytes")
        #: The digest of the bundle manifest the tag named when this source was opened.
        self.manifest_digest = manifest.digest
        self.layers = read_bundle_manifest(manifest.data, f"bundle manifest {self.description}")
        self._by_name = {la.name: la for la in self.layers}
        #: Bytes of blob content handed out so far (what fetching this bundle moved).
        self.bytes_read = [0]

    def members(self) -> dict[str, int]:
        return {la.name: la.size for la in self.layers}

    def tar_order(self) -> list[str]:
        return [la.name for la in self.layers]

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        la = self._by_name.get(name)
        if la is None:
            raise SourceError(f"{self.description} has no member {name}")
        yield io.BufferedReader(_Stream(self.registry.iter_blob(self.repository, la.digest, la.size),
                                        self.bytes_read))
