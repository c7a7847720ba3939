"""Moving bundles through OCI registries: ``bundle push`` and ``bundle pull``.

A central registry, regional depots and sites exchange bundles as OCI content (the layout is
edgebundle/remote.py; the patterns docs/FLEET.md). Push uploads only the blobs the registry
lacks (HEAD; ``mount_from`` another repository of the same registry), streams each from the
bundle, and tags the bundle manifest last, so a tag never names an incomplete bundle. Pull writes
the bundle back byte-identical (same root digest; for a tar built by ``bundle create``, the same
bytes): each member is hashed against its digest as it streams, into a temporary name renamed
only when complete.

Invariants:
- The tag is written after every blob and manifest it reaches is in the repository: an
  interrupted push leaves no tag (or the previous bundle's), and a rerun uploads only what is
  missing.
- Pushing trusts nothing it reads: the signed root is checked by whoever installs from the
  registry (``installer verify oci://...``); pull verifies signatures when given ``--pubkey``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bundler.split import write_bundle_tar
from edgebundle import layout
from edgebundle import mediatypes as mt
from edgebundle.digest import CHUNK, fsync_dir, sha256_bytes
from edgebundle.errors import UsageError, VerificationError
from edgebundle.faults import faultpoint
from edgebundle.parts import open_source
from edgebundle.registry import Registry
from edgebundle.remote import EMPTY_CONFIG, Layer, RegistrySource, bundle_manifest, parse_location
from edgebundle.root import Root, parse_root
from edgebundle.signing import parse_envelope
from edgebundle.sources import BundleSource, read_small
from edgebundle.verify import read_root_envelope

#: Manifests pushed by digest before the bundle's index (children before the indexes naming them).
_MANIFEST_ORDER = {mt.OCI_MANIFEST: 0, mt.DOCKER_MANIFEST: 0, mt.OCI_INDEX: 1, mt.DOCKER_MANIFEST_LIST: 1}


@dataclass
class Transfer:
    """What a push or pull moved: blobs and bytes sent (or fetched), and what was already there."""

    location: str
    name: str
    version: str
    root: str
    manifest: str = ""
    sent: int = 0
    sent_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    mounted: int = 0
    manifests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "name": self.name, "version": self.version, "root": self.root,
                "manifest": self.manifest, "sent": self.sent, "sentBytes": self.sent_bytes,
                "skipped": self.skipped, "skippedBytes": self.skipped_bytes, "mounted": self.mounted,
                "manifests": self.manifests}


def unverified_root(source: BundleSource) -> Root:
    """The root a bundle carries, parsed strictly but not trusted (names, sizes, the tar order)."""
    envelope = parse_envelope(read_root_envelope(source), layout.ROOT, mt.ROOT_PAYLOAD_TYPES,
                              layout.MAX_ROOT_ENVELOPE_BYTES)
    return parse_root(envelope.document())


def bundle_layers(source: BundleSource, root: Root) -> list[Layer]:
    """Every member of the bundle in tar order, with the digest the root pins (or, for the root
    envelope itself, the digest of its bytes); a member the bundle lacks is refused."""
    members = source.members()
    pins = {**{name: pin.digest for name, pin in root.files.items()},
            **{name: digest for name, (digest, _) in root.member_pins().items()}}
    layers = []
    for name in root.member_order():
        if name not in members:
            raise VerificationError(f"{source.description} lacks {name}",
                                    hint="the bundle is incomplete; build or copy it again")
        digest = pins.get(name) or sha256_bytes(read_small(source, name, layout.MAX_ROOT_ENVELOPE_BYTES))
        layers.append(Layer(name, digest, members[name]))
    return layers


class _Member:
    """One member of the bundle as the closable stream an upload attempt reads."""

    def __init__(self, source: BundleSource, name: str) -> None:
        self._stack = contextlib.ExitStack()
        self._f = self._stack.enter_context(source.open(name))

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        self._stack.close()


def push(bundle: Path, location: str, *, plain_http: bool | None = None, mount_from: str | None = None,
         progress: Callable[[int], None] = lambda n: None) -> Transfer:
    """Publish ``bundle`` (tar, directory or parts) at ``oci://HOST/REPO:TAG``."""
    ref = parse_location(location)
    if ref.digest:
        raise UsageError(f"{location} names a digest; push needs a tag", hint="write oci://HOST/REPO:TAG")
    source = open_source(bundle)
    root = unverified_root(source)
    layers = bundle_layers(source, root)
    reg = Registry(ref.registry, plain_http=plain_http)
    repo = ref.repository
    out = Transfer(location, root.name, root.version, root.digest)
    reg.push_blob(repo, sha256_bytes(EMPTY_CONFIG), len(EMPTY_CONFIG), lambda: io.BytesIO(EMPTY_CONFIG))
    for la in layers:
        before = reg.stats.blobs_mounted
        added = reg.push_blob(repo, la.digest, la.size, lambda name=la.name: _Member(source, name), mount_from=mount_from)
        progress(la.size)
        faultpoint("push.blob.sent")
        if not added:
            out.skipped, out.skipped_bytes = out.skipped + 1, out.skipped_bytes + la.size
        elif reg.stats.blobs_mounted > before:
            out.mounted += 1
        else:
            out.sent, out.sent_bytes = out.sent + 1, out.sent_bytes + la.size
    subject = None if root.is_delta else _push_index(reg, repo, source, root, out)
    data = bundle_manifest(layers, subject=subject, annotations={
        "org.opencontainers.image.created": root.created, "org.opencontainers.image.title": root.name,
        "org.opencontainers.image.version": root.version, "dev.edgebundle.root": root.digest})
    out.manifest = reg.put_manifest(repo, ref.tag or "latest", data, mt.OCI_MANIFEST)
    return out


def _push_index(reg: Registry, repo: str, source: BundleSource, root: Root, out: Transfer) -> dict[str, Any]:
    """A full bundle's manifests by digest, then its ``index.json`` as an image index: standard
    tools then read its images and artifacts, and the bundle manifest names the index as subject."""
    manifests = sorted((d for d, pin in root.blobs.items() if pin.mediaType in _MANIFEST_ORDER),
                       key=lambda d: (_MANIFEST_ORDER[root.blobs[d].mediaType], d))
    for d in manifests:
        if reg.has_manifest(repo, d) != d:
            reg.put_manifest(repo, d, read_small(source, layout.blob_path(d), layout.MAX_JSON_BYTES),
                             root.blobs[d].mediaType)
            out.manifests += 1
    index = read_small(source, layout.INDEX, layout.MAX_JSON_BYTES)
    digest = sha256_bytes(index)
    if reg.has_manifest(repo, digest) != digest:
        reg.put_manifest(repo, digest, index, mt.OCI_INDEX)
        out.manifests += 1
    return {"mediaType": mt.OCI_INDEX, "digest": digest, "size": len(index)}


def pull(location: str, out: Path, *, plain_http: bool | None = None, force: bool = False,
         progress: Callable[[int], None] = lambda n: None) -> Transfer:
    """Write the bundle at ``oci://HOST/REPO:TAG`` to ``out``: a tar when it ends in ``.tar``, else
    a bundle directory. Every member is hashed against its digest as it streams."""
    source = RegistrySource(location, plain_http=plain_http)
    root = unverified_root(source)
    expected = {la.name for la in bundle_layers(source, root)}
    if set(source.members()) != expected:
        extra = sorted(set(source.members()) - expected)[:3]
        raise VerificationError(f"{source.description} lists members its root does not pin: {', '.join(extra)}",
                                hint="the tag does not hold a bundle as bundle push writes it; push it again")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", hint="remove it or pass --force")
    tmp = out.with_name(out.name + ".partial")
    _remove(tmp)
    counted = _Counting(progress)
    try:
        if out.name.endswith(".tar"):
            with open(tmp, "wb") as f:
                counted.out = f
                write_bundle_tar(source, root, counted)
                f.flush()
                os.fsync(f.fileno())
        else:
            for name in root.member_order():
                dest = tmp / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with source.open(name) as src, open(dest, "wb") as f:
                    while chunk := src.read(CHUNK):
                        f.write(chunk)
                        progress(len(chunk))
                    os.fsync(f.fileno())
        _remove(out)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        _remove(tmp)
        raise
    got = Transfer(location, root.name, root.version, root.digest, manifest=source.manifest_digest)
    got.sent, got.sent_bytes = len(source.layers), source.bytes_read[0]
    return got


class _Counting:
    """A writer that reports the bytes written through it."""

    def __init__(self, progress: Callable[[int], None]) -> None:
        self.out: BinaryIO | None = None
        self._progress = progress

    def write(self, data: bytes) -> int:
        assert self.out is not None
        self._progress(len(data))
        return self.out.write(data)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
