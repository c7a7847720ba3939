"""Building delta bundles: carry only what a site lacks, plan how it rebuilds the rest.

The delta format (what the signed root's ``base`` and ``delta`` say) and the site's side (rebuild
from carried members plus base inputs, each stream hashed against the signed digest) are in
edgebundle/rebuild.py and docs/DELTA.md. This module plans a delta against a base bundle: for
each target blob, its counterpart in the base (same repository, kind and platform; same model
file), the cheapest method that rebuilds it (bundler/patch.py, bundler/patch_gguf.py), and
writes the carried blobs and the delta root.

Invariants:
- The planner proves its own output before it signs: every patched blob is rebuilt from the base
  and hashed against the target digest (:func:`edgebundle.rebuild.check_reconstruction`).
- Small documents a site does not keep (manifests, configs, ``index.json``, the SBOM; each at most
  ``PACK_ENTRY_MAX``) travel in one zstd pack, not one tar member each (:func:`pack_small`):
  a small delta's size is then mostly its compressed root.
- Base inputs are only what a site keeps after installing the base (image blobs and manifests in
  its registry, model *files* on its NAS); model layers are patched at the file level and a
  ``tar+zstd`` layer is re-encoded with :func:`edgebundle.compress.write_tar_zstd`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from bundler.gguf import GGUFError
from bundler.lockfile import platform_of
from bundler.patch import SMALL_PIECE, ContainerWriter, encode_piece, write_region
from bundler.patch_gguf import is_gguf, write_gguf_patch
from edgebundle import compress, layout
from edgebundle import mediatypes as mt
from edgebundle.digest import DigestMismatchError, check, copy_verified, hash_stream, iter_chunks, sha256_bytes
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.patch import BSDIFF_MAX, MARGIN, ZPF_MAX, write_document_frame
from edgebundle.rebuild import (
    IMPLIED,
    IMPLIED_KEYS,
    PACK_ENTRY_MAX,
    PATCH_METHODS,
    ZSTD_VERSION,
    CheckedStream,
    ReconstructedSource,
    check_reconstruction,
    open_member,
    read_bounded,
)
from edgebundle.root import BaseRef, ModelEntry, ModelFile, Root, load_json_bounded
from edgebundle.sources import BundleSource, DirectorySource, read_small


class DeltaError(EdgebundleError):
    """A delta cannot be built or applied as asked."""


# --- the full target a delta stands for ---------------------------------------------------------


# --- what a bundle's images consist of ----------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """One blob of an image, and where it sits (used to find its counterpart in the base)."""

    digest: str
    kind: str  # index | manifest | config | layer
    repository: str
    platform: str  # "" when unknown
    what: str

    @property
    def slot(self) -> tuple[str, str, str]:
        return (self.repository, self.kind, self.platform)


def _doc(source: BundleSource, digest: str, what: str) -> dict[str, Any]:
    """A pinned JSON document of ``source``, hashed against its digest before it is parsed."""
    data = read_small(source, layout.blob_path(digest), layout.MAX_JSON_BYTES)
    got = sha256_bytes(data)
    if got != digest:
        raise DigestMismatchError(f"{what}: {layout.blob_path(digest)} hashes to {got}",
                                  hint="the bundle was altered or the media is corrupt; copy it again")
    doc = load_json_bounded(data, what)
    if not isinstance(doc, dict):
        raise DeltaError(f"{what} is not a JSON object")
    return doc


def image_parts(source: BundleSource, root: Root) -> dict[str, Part]:
    """Every image blob of ``root`` (read from ``source``) -> its role; the first role wins."""
    parts: dict[str, Part] = {}

    def add(p: Part) -> None:
        parts.setdefault(p.digest, p)

    for im in root.images:
        repo = im.repository
        top = _doc(source, im.digest, f"{im.refName} {im.digest}")
        if mt.is_index(im.mediaType):
            add(Part(im.digest, "index", repo, "", f"image {im.refName} index"))
            children = [(d["digest"], platform_of(d) or "") for d in top.get("manifests", [])]
        else:
            children = [(im.digest, im.platforms[0] if len(im.platforms) == 1 else "")]
        for digest, plat in children:
            doc = top if digest == im.digest else _doc(source, digest, f"{im.refName} {digest}")
            where = f"image {im.refName}" + (f" {plat}" if plat else "")
            add(Part(digest, "manifest", repo, plat, f"{where} manifest"))
            add(Part(doc["config"]["digest"], "config", repo, plat, f"{where} config"))
            for i, layer in enumerate(doc.get("layers", [])):
                add(Part(layer["digest"], "layer", repo, plat, f"{where} layer {i}"))
    return parts


def base_encodings(source: BundleSource, root: Root) -> dict[tuple[str, int, str], compress.Encoded]:
    """The ``tar+zstd`` model layers of ``root`` that this builder's encoder would make again.

    A layer qualifies when its descriptor's encoder annotation equals ``compress.ENCODER`` (same
    zstd, level and fixed tar mtime), so the same file under the same path (the inner tar names
    it) encodes to the very same blob: the target pins it instead of compressing the file again.
    Reads two small pinned documents per model.
    """
    found: dict[tuple[str, int, str], compress.Encoded] = {}
    for m in root.models:
        by_blob = {f.blob: f for f in m.files if f.encoding == "tar+zstd"}
        if not by_blob:
            continue
        what = f"base model {m.name} {m.version}"
        manifest = _doc(source, m.manifest, f"{what} manifest")
        layers = manifest.get("layers")
        config_digest = (manifest.get("config") or {}).get("digest")
        if not isinstance(layers, list) or config_digest not in root.blobs:
            continue
        diff_ids = (_doc(source, config_digest, f"{what} config").get("modelfs") or {}).get("diffIds")
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            continue
        for layer, diff_id in zip(layers, diff_ids):
            f = by_blob.get(layer.get("digest")) if isinstance(layer, dict) else None
            annotations = layer.get("annotations") if f is not None else None
            if f is None or not isinstance(annotations, dict) or not isinstance(diff_id, str) \
                    or annotations.get(compress.ENCODER_ANNOTATION) != compress.ENCODER:
                continue
            found[(f.digest, f.size, f.path)] = compress.Encoded(f.blob, root.blobs[f.blob].size, diff_id)
    return found


def similar_base_file(base: Root, name: str, kind: str, path: str, size: int) -> dict[str, Any] | None:
    """A base model file to patch a target file against: same model and path, else same model
    and file type, else the same path in a model of the same kind (closest size within a tier)."""
    ext = Path(path).suffix
    tiers: list[list[dict[str, Any]]] = [[], [], []]
    for bm in base.models:
        for bf in bm.files:
            ref = {"digest": bf.digest, "size": bf.size, "at": _nas_ref(bm, bf)}
            if bm.name == name and bf.path == path:
                tiers[0].append(ref)
            elif bm.name == name and Path(bf.path).suffix == ext:
                tiers[1].append(ref)
            elif bm.kind == kind and bf.path == path:
                tiers[2].append(ref)
    for tier in tiers:
        if tier:
            return min(tier, key=lambda r: abs(r["size"] - size))
    return None


def _nas_ref(m: ModelEntry, f: ModelFile) -> dict[str, Any]:
    return {"nas": {"kind": m.kind, "name": m.name, "version": m.version, "path": f.path}}


def _registry_ref(part: Part) -> dict[str, Any]:
    endpoint = "manifests" if part.kind in ("index", "manifest") else "blobs"
    return {"registry": {"repository": part.repository, "endpoint": endpoint}}


def _file_doc(f: ModelFile) -> dict[str, Any]:
    return {"path": f.path, "digest": f.digest, "size": f.size, "encoding": f.encoding}


# --- base inputs ----------------------------------------------------------------------------------


class BundleBase:
    """Base inputs read from a full base bundle (the builder's planning and ``bundle verify --base``).

    The base is trusted through its signed root only (signature, parse, completeness): each
    input is proven against its pin the first time it is used and nothing else is read, so a
    delta's cost follows what changed, not the base's size. ``tar+zstd`` model files are
    decompressed once into ``scratch`` (hash-checked) so patches can seek in them.
    """

    def __init__(self, source: BundleSource, root: Root, scratch: Path) -> None:
        self.source, self.root, self.scratch = source, root, scratch
        self.description = f"base {root.name} {root.version} ({source.description})"
        self._files: dict[tuple[str, str, str, str], ModelFile] = {
            (m.kind, m.name, m.version, f.path): f for m in root.models for f in m.files}
        self._unpacked: dict[str, Path] = {}
        self._proofs: dict[str, Future[None]] = {}  # blob -> its proof, done or under way
        self._lock = threading.Lock()
        self._prover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prove-base")

    def _proof(self, f: ModelFile) -> Future[None]:
        with self._lock:
            if f.blob not in self._proofs:
                self._proofs[f.blob] = self._prover.submit(self._hash, f)
            return self._proofs[f.blob]

    def _hash(self, f: ModelFile) -> None:
        with self.source.open(layout.blob_path(f.blob)) as blob:
            got, size = hash_stream(blob)
        check(f"{self.description}: model file {f.path} ({layout.blob_path(f.blob)})", f.digest, f.size, got, size)

    def _prove(self, f: ModelFile) -> None:
        """Hash an ``identity`` model file's blob once before anything reads it in pieces."""
        self._proof(f).result()

    def prove_ahead(self, refs: list[dict[str, Any]]) -> None:
        """Start proving these base inputs in the background (the planner will patch against
        them), so their hashing overlaps the target's own; a failure surfaces when one is used."""
        for ref in refs:
            f = self._model_file(ref)
            if f.encoding == "identity":
                self._proof(f)

    def _model_file(self, src: dict[str, Any]) -> ModelFile:
        n = src["at"]["nas"]
        f = self._files.get((n["kind"], n["name"], n["version"], n["path"]))
        if f is None or f.digest != src["digest"]:
            raise DeltaError(f"{self.description} has no model file {n['name']} {n['version']} "
                             f"{n['path']} with digest {src['digest']}")
        return f

    def local_path(self, src: dict[str, Any]) -> Path | None:
        if "nas" not in src["at"]:
            return None
        f = self._model_file(src)
        if f.encoding == "identity" and isinstance(self.source, DirectorySource):
            self._prove(f)
            return self.source.path / layout.blob_path(f.blob)
        if f.encoding != "identity" and f.digest not in self._unpacked:
            fd, tmp = tempfile.mkstemp(dir=self.scratch, prefix=".base-file-")
            with os.fdopen(fd, "wb") as out, self.source.open(layout.blob_path(f.blob)) as blob:
                stream = compress.open_tar_zstd_member(blob, f.size, f"base file {f.path}")
                copy_verified(stream, out, f"base file {f.path}", f.digest, f.size)
            self._unpacked[f.digest] = Path(tmp)
        return self._unpacked.get(f.digest)

    @contextlib.contextmanager
    def open_input(self, src: dict[str, Any]) -> Iterator[BinaryIO]:
        if "registry" in src["at"]:  # an image blob, read whole: checked as it streams
            with self.source.open(layout.blob_path(src["digest"])) as f:
                yield CheckedStream(iter_chunks(f), src["digest"], src["size"],  # type: ignore[misc]
                                    f"{self.description}: {layout.blob_path(src['digest'])}")
            return
        f = self._model_file(src)
        path = self.local_path(src)
        if path is not None:
            with open(path, "rb") as fh:
                yield fh
        else:
            self._prove(f)
            with self.source.open(layout.blob_path(f.blob)) as fh:
                yield fh

    def close(self) -> None:
        self._prover.shutdown(wait=True, cancel_futures=True)
        for p in self._unpacked.values():
            p.unlink(missing_ok=True)
        self._unpacked.clear()


# --- streams that check what they hand out --------------------------------------------------------


# --- reconstruction -------------------------------------------------------------------------------


# --- planning -------------------------------------------------------------------------------------

@dataclass
class PlanResult:
    """The ``delta`` document and where the carried bytes are."""

    rebuild: dict[str, dict[str, Any]] = field(default_factory=dict)
    carried: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # index.json, SBOM: in the pack

    def carry(self, digest: str, size: int, kind: str) -> None:
        self.carried[digest] = {"size": size, "kind": kind}

    def document(self) -> dict[str, Any]:
        """The signed ``delta``; ``base`` and ``whole`` entries omit ``reason`` and ``carriedBytes``
        (the builder's log has the reason; the bytes are 0 and ``size``), which keeps the root small."""
        rebuild = {d: {k: v for k, v in e.items() if e["method"] not in IMPLIED or k not in IMPLIED_KEYS}
                   for d, e in sorted(self.rebuild.items())}
        doc = {"carried": dict(sorted(self.carried.items())), "rebuild": rebuild}
        if self.files:
            doc["files"] = dict(sorted(self.files.items()))
        return doc


class DeltaPlanner:
    """Decides, for every blob of a full target, how a site that has the base gets it.

    ``target`` reads the full target bundle (the builder's work dir); ``target_files`` maps
    ``(model name, version, path)`` to the model file on disk; ``patch_store(write) -> (digest,
    size)`` stores a patch blob in the delta being written.
    """

    def __init__(self, base: BundleBase, target: BundleSource, root: Root,
                 target_files: dict[tuple[str, str, str], Path],
                 patch_store: Callable[[Callable[[BinaryIO], None]], tuple[str, int]],
                 scratch: Path, log: Callable[[str], None] = lambda s: None) -> None:
        self.base, self.target, self.root = base, target, root
        self.target_files, self.patch_store = target_files, patch_store
        self.scratch, self.log = scratch, log
        self.base_parts = image_parts(base.source, base.root)
        self.base_slots = {p.slot: d for d, p in self.base_parts.items() if p.kind != "layer"}
        self.base_files: dict[str, dict[str, Any]] = {}
        for m in base.root.models:
            for f in m.files:
                self.base_files.setdefault(f.digest, {"digest": f.digest, "size": f.size, "at": _nas_ref(m, f)})

    def plan(self) -> PlanResult:
        out = PlanResult()
        parts = image_parts(self.target, self.root)
        layers: dict[str, tuple[ModelEntry, ModelFile]] = {}
        roles: dict[str, str] = {}
        artifacts = [(m.manifest, f"model {m.name} {m.version}") for m in self.root.models]
        if self.root.manifests:
            artifacts.append((self.root.manifests.manifest, "manifests artifact"))
            for mf in self.root.manifests.files:
                roles.setdefault(mf.digest, f"k8s manifest {mf.path}")
        for manifest, name in artifacts:
            roles.setdefault(manifest, f"{name} manifest")
            config = _doc(self.target, manifest, f"{name} manifest").get("config", {}).get("digest")
            if isinstance(config, str):
                roles.setdefault(config, f"{name} config")
        for m in self.root.models:
            for f in m.files:
                layers.setdefault(f.blob, (m, f))
        for digest in sorted(self.root.blobs):
            pin = self.root.blobs[digest]
            if digest in parts:
                entry = self._image_blob(parts[digest], pin.size, out)
            elif digest in layers:
                entry = self._model_layer(*layers[digest], digest, pin.size, out)
            else:
                what = roles.get(digest, "artifact blob")
                entry = self._whole(digest, pin.size, out, what, "not kept at a site (only image blobs "
                                    "and model files are), so carried")
            out.rebuild[digest] = entry
        for entry in sorted(out.rebuild.values(), key=lambda e: (e["what"], e["method"])):
            self.log(f"{entry['method']:<16} {entry['what']}: {entry['reason']}")
        return out

    # -- decisions ---------------------------------------------------------------------------
    @staticmethod
    def _whole(digest: str, size: int, out: PlanResult, what: str, reason: str) -> dict[str, Any]:
        out.carry(digest, size, "blob")
        return {"what": what, "method": "whole", "reason": reason, "size": size, "carriedBytes": size}

    def _image_blob(self, part: Part, size: int, out: PlanResult) -> dict[str, Any]:
        if part.digest in self.base_parts:
            bp = self.base_parts[part.digest]
            return {"what": part.what, "method": "base", "size": size, "carriedBytes": 0,
                    "reason": f"the site registry has it ({bp.repository})",
                    "from": {"digest": part.digest, "size": size, "at": _registry_ref(bp)}}
        if part.kind == "layer":
            return self._whole(part.digest, size, out, part.what,
                               "new image layer: layers are never patched (compressed bytes do not diff)")
        old_digest = self.base_slots.get(part.slot)
        if old_digest is None:
            return self._whole(part.digest, size, out, part.what, "nothing like it in the base")
        bp = self.base_parts[old_digest]
        src = {"digest": old_digest, "size": self.base.root.blobs[old_digest].size, "at": _registry_ref(bp)}
        if max(size, src["size"]) > ZPF_MAX:
            return self._whole(part.digest, size, out, part.what, f"larger than {ZPF_MAX} B: carried")
        with self.target.open(layout.blob_path(part.digest)) as f:
            new = read_bounded(f, ZPF_MAX, part.what)
        with self.base.open_input(src) as f:
            old = read_bounded(f, ZPF_MAX, f"base {bp.what}")
        return self._whole_patch(part.digest, size, part.what, new, old, src, None, out)

    def _whole_patch(self, digest: str, size: int, what: str, new: bytes, old: bytes,
                     src: dict[str, Any], file: dict[str, Any] | None, out: PlanResult) -> dict[str, Any]:
        enc = encode_piece(new, old, bsdiff_max=BSDIFF_MAX, small=SMALL_PIECE)
        method = {"zpf": "zstd-patch-from", "bsdiff": "bsdiff4"}.get(enc.op)
        if method is None or len(enc.payload) >= size:
            return self._whole(digest, size, out, what, f"no patch beats the {size}-byte blob ({enc.reason})")
        pdigest, psize = self.patch_store(lambda w: w.write(enc.payload))
        out.carry(pdigest, psize, "patch")
        entry = {"what": what, "method": method, "size": size, "carriedBytes": psize, "from": src,
                 "patch": pdigest, "reason": enc.reason}
        if file is not None:
            entry["file"] = file
        return entry

    def _model_layer(self, m: ModelEntry, f: ModelFile, digest: str, size: int,
                     out: PlanResult) -> dict[str, Any]:
        what = f"model {m.name} {m.version} {f.path}"
        file = _file_doc(f)
        extra = {"zstd": ZSTD_VERSION} if f.encoding == "tar+zstd" else {}
        if f.digest in self.base_files:
            src = self.base_files[f.digest]
            n = src["at"]["nas"]
            return {"what": what, "method": "base", "size": size, "carriedBytes": 0, "from": src,
                    "file": file, **extra,
                    "reason": f"file unchanged: the NAS has it as {n['name']} {n['version']} {n['path']}"
                              + (" (layer re-encoded at the site)" if extra else "")}
        src = similar_base_file(self.base.root, m.name, m.kind, f.path, f.size)
        if src is None:
            return self._whole(digest, size, out, what, "new file, nothing similar in the base")
        new_path = self.target_files[(m.name, m.version, f.path)]
        with self.base.open_input(src) as old:
            entry = self._file_patch(digest, size, what, new_path, f, old, src, out)
        if entry["method"] != "whole":
            entry.update(file=file, **extra)
        return entry

    def _file_patch(self, digest: str, size: int, what: str, new_path: Path, f: ModelFile,
                    old: BinaryIO, src: dict[str, Any], out: PlanResult) -> dict[str, Any]:
        with open(new_path, "rb") as new:
            if is_gguf(new) and is_gguf(old):
                try:
                    return self._container(digest, size, what, "gguf-tensors", src, out,
                                           lambda w: write_gguf_patch(w, old, src["size"], new, f.size))
                except GGUFError as e:
                    self.log(f"{what}: not patched tensor-wise ({e.message}); using windows")
            if max(f.size, src["size"]) <= ZPF_MAX:
                new_bytes = read_bounded(new, ZPF_MAX, what)
                old.seek(0)
                old_bytes = read_bounded(old, ZPF_MAX, what + " base")
                return self._whole_patch(digest, size, what, new_bytes, old_bytes, src, None, out)
            return self._container(digest, size, what, "windows", src, out,
                                   lambda w: write_region(w, new, 0, f.size, old, 0, src["size"], margin=MARGIN))

    def _container(self, digest: str, size: int, what: str, method: str, src: dict[str, Any],
                   out: PlanResult, fill: Callable[[ContainerWriter], Any]) -> dict[str, Any]:
        with ContainerWriter(self.scratch) as w:
            stats = fill(w)
            psize = w.patch_size
            pieces = {k: v for k, v in sorted(w.stats.items())}
            if psize >= size:
                return self._whole(digest, size, out, what,
                                   f"{method} patch of {psize} B is not smaller than the {size}-byte blob")
            pdigest, psize = self.patch_store(w.write_to)
        out.carry(pdigest, psize, "patch")
        summary = stats.summary() if hasattr(stats, "summary") else ""
        reason = (summary + "; " if summary else "") + "pieces: " + ", ".join(
            f"{k} {v} B" for k, v in pieces.items())
        return {"what": what, "method": method, "size": size, "carriedBytes": psize, "from": src,
                "patch": pdigest, "reason": reason, "pieces": pieces}


def pack_small(plan: PlanResult, root: Root, blob_file: Callable[[str], Path], file_dir: Path,
               store: Callable[[Callable[[BinaryIO], None]], tuple[str, int]]) -> None:
    """Carry the small whole blobs and the small non-blob files in one zstd pack (docs/DELTA.md).

    Each document (at most ``PACK_ENTRY_MAX`` bytes) would otherwise be a tar member of its own:
    512 bytes of header and up to 511 of padding, uncompressed. The pack is one frame of the
    documents concatenated (blobs by digest, then the files by name), compressed against the full
    target's root document as a raw prefix (the digests the documents repeat are in it); each
    ``packed`` entry and ``delta.files`` entry names its offset, and the root signs the decoded size.
    """
    items: list[tuple[Path, int, dict[str, Any]]] = []
    for d, e in sorted(plan.rebuild.items()):
        if e["method"] == "whole" and e["size"] <= PACK_ENTRY_MAX:
            what = e["what"]
            e.clear()
            e.update(what=what, method="packed", size=root.blobs[d].size)
            items.append((blob_file(d), root.blobs[d].size, e))
            del plan.carried[d]
    for name, pin in sorted(root.files.items()):
        if name != layout.OCI_LAYOUT and pin.size <= PACK_ENTRY_MAX:
            plan.files[name] = {}
            items.append((file_dir / name, pin.size, plan.files[name]))
    if not items:
        return
    offset = 0
    for _, size, e in items:
        e["offset"] = offset
        offset += size

    def parts() -> Iterator[bytes]:
        for path, size, _ in items:
            with open(path, "rb") as f:
                data = read_bounded(f, size, str(path))
            if len(data) != size:
                raise DeltaError(f"{path} changed while the delta was written ({len(data)} bytes, not {size})")
            yield data

    digest, size = store(lambda w: write_document_frame(parts(), offset, w, root.to_bytes()))
    plan.carried[digest] = {"size": size, "kind": "pack", "decoded": offset}
    for _, _, e in items:
        e["pack"] = digest


# --- building -------------------------------------------------------------------------------------

@dataclass
class DeltaResult:
    root: Root
    output: Path
    full_bytes: int  # what the full bundle's members would weigh
    delta_bytes: int  # what the delta's members weigh
    input_bytes: int = 0
    checked_bytes: int = 0


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def build_delta(builder: Any, base_path: Path, out: Path, keys: list[Any], *, force: bool = False,
                log: Callable[[str], None] = lambda s: None, self_check: bool = True) -> DeltaResult:
    """Build the full target with ``builder`` (a :class:`bundler.build.Builder`), then the delta.

    The base bundle at ``base_path`` must be a full bundle signed by one of ``keys``; its signed
    root is verified (signature, strict parse, completeness) before anything is planned against
    it, and each base blob is proven against its pin when it is first read (:class:`BundleBase`).
    The full target is assembled without the bytes the base already has: those blobs are pinned,
    not fetched or copied, and model files are hashed in place (:class:`bundler.build.BlobStore`).
    With ``self_check`` every patched blob is rebuilt from base + delta and hashed before the
    delta is written out.
    """
    from bundler.build import BlobStore, Builder, publish
    from bundler.spec import model_files
    from edgebundle.parts import open_source
    from edgebundle.signing import TrustStore
    from edgebundle.verify import Policy, Verifier

    out = Path(out).resolve()
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", hint="remove it or pass --force")
    base_source = open_source(Path(base_path))
    trust = TrustStore([k.public_key() for k in keys])
    log(f"verifying base {base_path}")
    try:
        base_vb = Verifier(trust, Policy(allow_expired=True)).verify(base_source, content=False)  # only its bytes are used
    except VerificationError as e:
        raise DeltaError(f"base {base_path} does not verify with the signing key(s): {e.message}",
                         hint="pass the full bundle this site has installed, built with the same key") from None
    if base_vb.root.is_delta:
        raise UsageError(f"base {base_path} is itself a delta",
                         hint="build deltas against the full bundle the site installed")
    target_dir = out.with_name(out.name + ".target.partial")
    delta_dir = out.with_name(out.name + ".delta.partial")
    scratch = out.with_name(out.name + ".scratch")
    for d in (delta_dir, scratch):
        if d.exists():
            shutil.rmtree(d)
    scratch.mkdir(parents=True)
    base = BundleBase(base_source, base_vb.root, scratch)
    try:
        # The base files the planner will patch against (those similar to a changed file) are
        # proven now, in the background, while the target is assembled (which hashes its files).
        base_digests = {f.digest for m in base_vb.root.models for f in m.files}
        locked = {(m["name"], m["version"]): m["files"] for m in builder.lock["models"]}
        base.prove_ahead([ref for m in builder.spec.models for lf in locked.get((m.name, m.version), [])
                          if lf["digest"] not in base_digests
                          and (ref := similar_base_file(base_vb.root, m.name, m.kind, lf["path"], lf["size"]))])
        log("building the full target")
        # What the delta rebuilds from the site, so the target needs no bytes of it: the base's
        # image layers (pinned by its hashed manifests) and its model files.
        elsewhere = {d: base_vb.root.blobs[d].size for d, p in image_parts(base_source, base_vb.root).items()
                     if p.kind == "layer" and d in base_vb.root.blobs}
        elsewhere.update({f.digest: f.size for m in base_vb.root.models for f in m.files})
        target_store = BlobStore(target_dir, elsewhere=elsewhere, copy_files=False,
                                 encodings=base_encodings(base_source, base_vb.root))
        target_root = builder.assemble(target_dir, target_store, keys)
        target = DirectorySource(target_dir)
        files = {(m.name, m.version, rel): p for m in builder.spec.models for rel, p in model_files(m)}
        store = BlobStore(delta_dir)

        def put(media_type: str) -> Callable[[Callable[[BinaryIO], None]], tuple[str, int]]:
            def put_blob(write: Callable[[BinaryIO], None]) -> tuple[str, int]:
                pin = store.put_writer(media_type, write)
                return pin.digest, pin.size
            return put_blob

        plan = DeltaPlanner(base, target, target_root, files, put("application/vnd.edgebundle.patch.v1"),
                            scratch, log).plan()
        pack_small(plan, target_root, target_store.path, target_dir, put(mt.EDGEBUNDLE_DELTA_PACK))
        for d, c in plan.carried.items():
            if c["kind"] == "blob":
                copy = shutil.copyfile if d in target_store.external else _link_or_copy  # never link a user's file
                copy(target_store.path(d), delta_dir / layout.blob_path(d))
        for name in target_root.files:  # oci-layout, index.json and the SBOM (unless packed)
            if name in plan.files:
                continue
            (delta_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target_dir / name, delta_dir / name)
        root = replace(target_root, base=BaseRef(base_vb.root.name, base_vb.root.version, base_vb.root_digest),
                       delta=plan.document())
        Builder.write_trust_files(delta_dir, root, keys)
        checked = 0
        if self_check:
            log("checking: rebuilding every patched blob from base + delta")
            # Patched blobs only: a re-encoded unchanged layer was just encoded by this very code.
            patched = sorted(d for d, e in plan.rebuild.items() if e["method"] in (*PATCH_METHODS, "packed"))
            checked = check_reconstruction(ReconstructedSource(DirectorySource(delta_dir), root, base, scratch),
                                           patched)
            for name in plan.files:  # index.json and the SBOM, read back out of the pack
                with open_member(DirectorySource(delta_dir), root, name) as f:
                    checked += sum(len(c) for c in iter_chunks(f))
        full_bytes = sum(size for _, size in target_root.member_pins(full=True).values()) + \
            len(target_root.to_bytes())
        delta_bytes = publish(delta_dir, root, out)
        shutil.rmtree(target_dir, ignore_errors=True)
        return DeltaResult(root, out, full_bytes, delta_bytes, builder.input_bytes, checked)
    finally:
        base.close()
        shutil.rmtree(scratch, ignore_errors=True)


# --- reporting ------------------------------------------------------------------------------------


__all__ = ["BundleBase", "DeltaError", "DeltaPlanner", "DeltaResult", "Part", "build_delta", "image_parts"]
