"""The builder pipeline: spec + lock + sources -> one signed OCI-layout bundle.

Steps: pull every image by its locked digest (exact bytes, digest-checked while streaming),
add each model as a ModelPack artifact (zstd only where it pays), add the manifests as an
artifact, write the SBOM (bundler/sbom.py; it reads a deferred layer from its registry once more)
and ``index.json``, then the root, and sign it (one DSSE envelope, edgebundle/signing.py). The work happens in ``OUT.partial``
beside the output and is renamed into place at the end, so an interrupted build never leaves
something that looks like a bundle; a rerun reuses the blobs already fetched. Each byte is written
once: a large blob whose digest is locked (an image layer, a raw model file) is not stored in the
work dir but streamed from its origin straight into the tar (or the output directory), hashed on
the way; only small documents and ``tar+zstd`` layers (whose digest is known once encoded, with
zstd's threads) go through the work dir.

Invariants:
- Reproducible: the same spec, lock, sources and key give byte-identical output (creation time
  and expiry come from the lock; JSON is canonical; tar headers are fixed; zstd is deterministic).
- Streams: no blob is held in memory; only manifests, configs and the root are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bundler import charts
from bundler.attached import fetch_document, listed_manifests, required_keys_check
from bundler.lockfile import LockMismatchError, platform_of
from bundler.sbom import sbom_document
from bundler.spec import BundleSpec, ChartSpec, ImageSpec, ModelSpec, manifest_files, normalize_platform
from edgebundle import compress, layout, tarfmt
from edgebundle import mediatypes as mt
from edgebundle.boundedyaml import load_all_bounded
from edgebundle.digest import (
    PIECE_BYTES,
    BackgroundFeed,
    HashingWriter,
    PieceHasher,
    fsync_dir,
    hash_file,
    hash_file_pieces,
    iter_chunks,
    read_bounded,
    sha256_bytes,
)
from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.helmchart import MAX_CHART_BYTES, chart_ref_name
from edgebundle.patch import compress_document
from edgebundle.rebuild import CheckedStream
from edgebundle.registry import MAX_MANIFEST_BYTES, parse_reference
from edgebundle.root import (
    AttachedEntry,
    BlobPin,
    ChartEntry,
    FilePin,
    ImageEntry,
    ManifestFile,
    ManifestsEntry,
    ModelEntry,
    ModelFile,
    Root,
    canonical_json,
    format_time,
    load_json_bounded,
    parse_root,
    parse_time,
)
from edgebundle.signing import sign

REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
EMPTY_JSON = b"{}"
#: How long a bundle stays installable by default: 180 days, counted from the lock (docs/SECURITY.md,
#: "Expiry"). Sites update by hand on media, about monthly to quarterly; 180 days outlasts two missed
#: rounds while bounding how long a replayed old release (a freeze attack) can still be installed.
DEFAULT_EXPIRES_IN = 180 * 86400.0


class BlobStore:
    """``blobs/sha256`` of a bundle being built; remembers what it holds, in insertion order.

    For a delta's full target (bundler/delta.py) three shortcuts: ``elsewhere`` (digest -> size)
    names blobs the base already has, which are pinned without being fetched or copied; with
    ``copy_files=False`` a model file is hashed in place and only read again if it is carried;
    ``encodings`` ((file digest, size, path) -> :class:`edgebundle.compress.Encoded`) names the
    base's ``tar+zstd`` layers made by this very encoder (``compress.ENCODER``), pinned instead of
    compressing the file again.

    With ``defer=True`` (a tar build) a large blob whose digest is known in advance (a locked
    image layer, a locked model file) is only pinned here; :func:`write_tar` streams it from its
    origin straight into the tar, hashed on the way, so each byte is written once.
    """

    def __init__(self, root_dir: Path, elsewhere: dict[str, int] | None = None,
                 copy_files: bool = True, defer: bool = False,
                 encodings: dict[tuple[str, int, str], compress.Encoded] | None = None) -> None:
        self.dir = root_dir / layout.BLOBS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pins: dict[str, BlobPin] = {}
        self.encodings = encodings or {}
        self.elsewhere = {**(elsewhere or {}), **{e.blob: e.size for e in self.encodings.values()}}
        self.copy_files = copy_files
        self.defer = defer
        self.external: dict[str, Path] = {}  # digest -> the model file holding its bytes
        #: digest -> (write the bytes, the error for other bytes): written by write_tar/materialize
        self.deferred: dict[str, tuple[Callable[[BinaryIO], Any], Callable[[str, int], EdgebundleError] | None]] = {}

    def path(self, digest: str) -> Path:
        return self.external.get(digest) or self.dir.parent.parent / layout.blob_path(digest)

    def _record(self, digest: str, size: int, media_type: str, pieces: tuple[str, ...] = ()) -> BlobPin:
        pin = self.pins.get(digest) or BlobPin(digest, size, media_type, pieces)
        self.pins.setdefault(digest, pin)
        return pin

    def has(self, digest: str, size: int) -> bool:
        """A blob left by an earlier, interrupted build counts only if it still hashes right."""
        p = self.path(digest)
        return p.exists() and p.stat().st_size == size and hash_file(p) == (digest, size)

    def read_small(self, digest: str) -> bytes:
        """A stored JSON blob (an image config), refused past the JSON size bound before reading."""
        return read_bounded(self.path(digest), layout.MAX_JSON_BYTES, f"blob {digest}", EdgebundleError)

    def put_bytes(self, data: bytes, media_type: str) -> BlobPin:
        digest = sha256_bytes(data)
        if not self.has(digest, len(data)):
            self._commit(digest, lambda out: out.write(data))
        return self._record(digest, len(data), media_type)

    def put_writer(self, media_type: str, write: Callable[[BinaryIO], None],
                   expect: tuple[str, int] | None = None,
                   mismatch: Callable[[str, int], EdgebundleError] | None = None,
                   pieces: tuple[str, ...] = ()) -> BlobPin:
        """Store what ``write`` produces; with ``expect``, skip the work when already present and
        refuse other content (``mismatch`` builds the error, given the digest and size written).
        ``pieces`` (with ``expect``: the lock's piece digests) are pinned too, and proven wherever
        the bytes are written or hashed."""
        if expect and (self.elsewhere.get(expect[0]) == expect[1] or self.has(*expect)):
            return self._record(expect[0], expect[1], media_type, pieces)
        if expect and self.defer and expect[1] >= DEFER_MIN:
            self.deferred[expect[0]] = (write, mismatch)
            return self._record(expect[0], expect[1], media_type, pieces)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as raw, _piece_check(pieces, expect) as tee:
                w = HashingWriter(raw, tee)
                write(w)  # type: ignore[arg-type]
                if expect and (w.digest, w.size) != expect:
                    if mismatch is not None:
                        raise mismatch(w.digest, w.size)
                    raise EdgebundleError(f"fetched content {w.digest} ({w.size} bytes) does not match "
                                          f"the pinned {expect[0]} ({expect[1]} bytes)")
            os.replace(tmp, self.path(w.digest))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self._record(w.digest, w.size, media_type, pieces)

    def put_file(self, path: Path, media_type: str, expect: tuple[str, int],
                 mismatch: Callable[[str, int], EdgebundleError], pieces: tuple[str, ...] = ()) -> BlobPin:
        """Store the file at ``path``, which must hash to ``expect`` (copied, or with
        ``copy_files=False`` only hashed and remembered)."""
        if self.copy_files or self.defer or self.elsewhere.get(expect[0]) == expect[1]:
            return self.put_writer(media_type, lambda out: _copy_file(path, out), expect=expect,
                                   mismatch=mismatch, pieces=pieces)
        digest, size, got = hash_file_pieces(path) if pieces else (*hash_file(path), [])
        if (digest, size) != expect:
            raise mismatch(digest, size)
        if got != list(pieces):
            raise _wrong_pieces(digest)
        self.external[expect[0]] = path
        return self._record(expect[0], expect[1], media_type, pieces)

    def write_deferred(self, digest: str, out: BinaryIO) -> None:
        """Stream a deferred blob into ``out``: exactly its pinned size, and only its pinned bytes."""
        write, mismatch = self.deferred[digest]
        pin = self.pins[digest]
        size = pin.size
        with _piece_check(pin.pieces, (digest, size)) as tee:
            w = _BoundedHashingWriter(out, size, tee)
            write(w)  # type: ignore[arg-type]
            if (w.digest, w.size) != (digest, size) or w.over:
                got = (w.digest, w.size + w.over)
                raise mismatch(*got) if mismatch else EdgebundleError(
                    f"content {got[0]} ({got[1]} bytes) does not match the pinned {digest} ({size} bytes)")

    def materialize(self) -> None:
        """Write every deferred blob into the store (a directory build)."""
        self.defer = False
        for digest in list(self.deferred):
            write, mismatch = self.deferred.pop(digest)
            pin = self.pins[digest]
            self.put_writer(pin.mediaType, write, expect=(digest, pin.size), mismatch=mismatch)

    def _commit(self, digest: str, write: Callable[[BinaryIO], Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, self.path(digest))


@contextlib.contextmanager
def _piece_check(pieces: tuple[str, ...], expect: tuple[str, int] | None) -> Iterator[Callable[[bytes], None] | None]:
    """A tee computing piece digests on a second core, checked against ``pieces`` when the block
    ends without error; None (nothing to check) without ``pieces``."""
    if not pieces:
        yield None
        return
    hasher = PieceHasher(expect[1] if expect else 0)
    with BackgroundFeed(hasher.update) as feed:
        yield feed
    if hasher.digests() != list(pieces):
        raise _wrong_pieces(expect[0] if expect else "?")


def _wrong_pieces(digest: str) -> LockMismatchError:
    return LockMismatchError(
        f"blob {digest}: its bytes match the lock's digest but not the piece digests "
        "bundles.lock lists for them (the lock was edited by hand?)",
        hint="run bundle lock SPEC again")


#: Blobs at least this large are streamed straight into the tar when their digest is known.
DEFER_MIN = 1024 * 1024


class _BoundedHashingWriter(HashingWriter):
    """Passes on at most ``limit`` bytes (a tar member's declared size); counts the rest in ``over``."""

    def __init__(self, out: BinaryIO, limit: int, tee: Callable[[bytes], None] | None = None) -> None:
        super().__init__(out, tee)
        self.limit, self.over = limit, 0

    def write(self, data: bytes) -> int:
        room = self.limit - self.size
        if len(data) > room:
            self.over += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        if data:
            super().write(data)
        return len(data)


def _descriptor(pin: BlobPin, annotations: dict[str, str] | None = None,
                **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": pin.mediaType, "digest": pin.digest, "size": pin.size}
    d.update(extra)
    if annotations:
        d["annotations"] = annotations
    return d


@dataclass
class BuildResult:
    root: Root
    output: Path
    input_bytes: int = 0
    notes: list[str] = field(default_factory=list)


class Builder:
    """Builds one bundle; ``registries(host)`` returns a :class:`edgebundle.registry.Registry`."""

    def __init__(self, spec: BundleSpec, lock: dict[str, Any], registries: Callable[[str], Any],
                 log: Callable[[str], None] = lambda s: None, progress: bool | None = None,
                 expires_in: float = DEFAULT_EXPIRES_IN) -> None:
        self.spec, self.lock, self.registries, self.log = spec, lock, registries, log
        self.progress = progress
        self.created = lock["created"]
        self.mtime = int(parse_time(self.created, "the lock's created"))
        # Counted from the lock's time (the age of the content), so a rebuild gives the same bytes.
        self.expires = format_time(self.mtime + expires_in)
        if self.mtime + expires_in <= time.time():
            raise UsageError(f"the bundle would expire at {self.expires}, which has passed (the lock was "
                             f"created {self.created})",
                             hint="re-lock (bundle lock) to resolve the inputs afresh, or give a longer --expires-in")
        self.input_bytes = 0

    # -- images ----------------------------------------------------------------------------
    def _fetch_blob(self, store: BlobStore, reg: Any, repo: str, desc: dict[str, Any]) -> BlobPin:
        digest, size = desc["digest"], int(desc["size"])
        self.input_bytes += size
        return store.put_writer(desc["mediaType"], lambda out: reg.download_blob(repo, digest, out),
                                expect=(digest, size))

    def _fetch_manifest(self, store: BlobStore, reg: Any, repo: str, digest: str) -> tuple[BlobPin, dict[str, Any]]:
        m = reg.get_manifest(repo, digest)
        if m.digest != digest:
            raise EdgebundleError(f"{repo}@{digest}: registry served {m.digest}")
        doc = load_json_bounded(m.data, f"manifest {repo}@{digest}")
        self.input_bytes += len(m.data)
        return store.put_bytes(m.data, m.media_type), doc

    def _add_image_manifest(self, store: BlobStore, reg: Any, repo: str, digest: str) -> tuple[BlobPin, dict[str, Any], int]:
        pin, doc = self._fetch_manifest(store, reg, repo, digest)
        if doc.get("mediaType", pin.mediaType) not in mt.IMAGE_MANIFEST_TYPES and "config" not in doc:
            raise EdgebundleError(f"{repo}@{digest} is not an image manifest")
        size = pin.size
        for desc in [doc["config"], *doc.get("layers", [])]:
            size += self._fetch_blob(store, reg, repo, desc).size
        return pin, doc, size

    def add_image(self, store: BlobStore, image: ImageSpec, locked: dict[str, Any]) -> tuple[ImageEntry, dict[str, Any]]:
        from edgebundle.ocinames import parse_reference

        ref = parse_reference(image.ref)
        reg = self.registries(ref.registry)
        self.log(f"image {image.ref} ({locked['digest'][:19]})")
        top_digest, platforms = locked["digest"], list(image.platforms)
        platform_field = None
        if mt.is_index(locked["mediaType"]):
            by_plat: dict[str, str] = locked["platforms"]
            if len(platforms) == 1 and len(by_plat) > 1:
                top_digest = by_plat[platforms[0]]  # one platform: carry just its manifest
                os_, arch, *var = platforms[0].split("/")
                platform_field = {"os": os_, "architecture": arch, **({"variant": var[0]} if var else {})}
            elif platforms and set(platforms) != set(by_plat):
                raise UsageError(f"image {image.ref}: choose one platform or all of "
                                 f"{', '.join(sorted(by_plat))} (a partial index cannot be pushed intact)")
        if top_digest == locked["digest"] and mt.is_index(locked["mediaType"]):
            pin, doc = self._fetch_manifest(store, reg, ref.repository, top_digest)
            total = pin.size
            for child in doc.get("manifests", []):
                total += self._add_image_manifest(store, reg, ref.repository, child["digest"])[2]
            platforms = platforms or sorted(p for c in doc["manifests"] if (p := platform_of(c))
                                            and p != "unknown/unknown")
        else:
            pin, doc, total = self._add_image_manifest(store, reg, ref.repository, top_digest)
            cfg = load_json_bounded(store.read_small(doc["config"]["digest"]), "image config")
            actual = normalize_platform(f"{cfg.get('os')}/{cfg.get('architecture')}" + (
                f"/{cfg['variant']}" if cfg.get("variant") else ""))
            if platforms and actual not in platforms:
                raise UsageError(f"image {image.ref} is {actual}, the spec asks for {', '.join(platforms)}")
            platforms = [actual]
        ref_name = f"{ref.repository}:{ref.tag}" if ref.tag else f"{ref.repository}@{top_digest}"
        attached = self.add_attached(store, reg, image, locked, ref.repository, pin.digest)
        entry = ImageEntry(ref=image.ref, refName=ref_name, repository=ref.repository, tag=ref.tag,
                           digest=pin.digest, mediaType=pin.mediaType, platforms=platforms, size=total,
                           attached=attached)
        extra = {"platform": platform_field} if platform_field else {}
        return entry, _descriptor(pin, {REF_NAME: ref_name}, **extra)

    def add_attached(self, store: BlobStore, reg: Any, image: ImageSpec, locked: dict[str, Any], repo: str,
                     carried: str) -> list[AttachedEntry]:
        """Carry what the lock pins as attached to the image (bundler/attached.py), each artifact
        whole; then apply the spec's signature rule to the pinned ``.sig`` of ``carried``."""
        entries, docs = [], {}
        for a in locked.get("attached") or []:
            if a.get("via") == "api" or mt.is_index(a["mediaType"]):
                data, media = fetch_document(reg, repo, a)
                pin, doc = store.put_bytes(data, media), load_json_bounded(data, f"{repo}:{a['tag']}")
                self.input_bytes += len(data)
                for child in listed_manifests(doc, f"{repo}:{a['tag']}"):
                    self._add_image_manifest(store, reg, repo, child)
            else:
                pin, doc, _ = self._add_image_manifest(store, reg, repo, a["digest"])
            docs[a["digest"]] = doc
            entries.append(AttachedEntry(a["kind"], a["subject"], a["tag"], pin.digest, pin.mediaType))
        required_keys_check(image.ref, carried, image.signature_keys, image.signature_required,
                            locked.get("attached") or [], lambda e: docs[e["digest"]],
                            lambda digest, _size: store.read_small(digest))
        return entries

    # -- models ----------------------------------------------------------------------------
    def add_model(self, store: BlobStore, model: ModelSpec, locked: dict[str, Any]) -> tuple[ModelEntry, dict[str, Any]]:
        from bundler.modelpack import describe_model, model_config_bytes

        desc = describe_model(model.name, model.kind, model.version, model.path)
        pins = {f["path"]: (f["digest"], f["size"]) for f in locked["files"]}
        pieces = {f["path"]: tuple(f.get("pieces", ())) for f in locked["files"]}
        files, layers, diff_ids = [], [], []
        for mf in desc.files:
            def changed(*_: Any, f: Any = mf) -> LockMismatchError:
                return LockMismatchError(f"model {model.name} {model.version}: {f.relpath} changed since "
                                         "bundles.lock was written", hint=f"run: bundle lock {self.spec.path}")

            if mf.relpath not in pins or mf.abs_path.stat().st_size != pins[mf.relpath][1]:
                raise changed()
            digest, size = pins[mf.relpath]  # proven below, while the file is copied or encoded
            self.input_bytes += size
            self.log(f"model {model.name} {model.version}: {mf.relpath} ({size} bytes)")
            role = mf.role
            reused = store.encodings.get((digest, size, mf.relpath))  # the path is in the inner tar
            if reused is not None:  # a delta's base holds this very encoding: pinned, not re-encoded
                media = {"weight": mt.MODEL_WEIGHT_TAR_ZSTD}.get(role, mt.MODEL_WEIGHT_CONFIG_TAR_ZSTD)
                pin = store.put_writer(media, lambda out: None, expect=(reused.blob, reused.size))
                diff_ids.append(reused.diff_id)
                encoding = "tar+zstd"
            elif compress.compression_pays(mf.abs_path):
                if hash_file(mf.abs_path) != (digest, size):  # the encoder does not hash the raw file
                    raise changed()
                media = {"weight": mt.MODEL_WEIGHT_TAR_ZSTD}.get(role, mt.MODEL_WEIGHT_CONFIG_TAR_ZSTD)
                tar_digest: list[str] = []
                pin = store.put_writer(media, lambda out, p=mf: tar_digest.append(
                    compress.write_tar_zstd(p.abs_path, p.relpath, out)))
                diff_ids.append(tar_digest[0])
                encoding = "tar+zstd"
            else:
                media = {"weight": mt.MODEL_WEIGHT_RAW, "doc": mt.MODEL_DOC_RAW}.get(
                    role, mt.MODEL_WEIGHT_CONFIG_RAW)
                if size > PIECE_BYTES and not pieces[mf.relpath]:
                    self.log(f"note: bundles.lock has no piece digests for {mf.relpath} (written by an older "
                             f"edgebundle): sites will hash it on one core; run bundle lock {self.spec.path} "
                             "to add them")
                pin = store.put_file(mf.abs_path, media, (digest, size), changed, pieces[mf.relpath])
                diff_ids.append(digest)
                encoding = "identity"
            files.append(ModelFile(mf.relpath, digest, size, pin.digest, encoding))
            encoder = {compress.ENCODER_ANNOTATION: compress.ENCODER} if encoding == "tar+zstd" else {}
            layers.append(_descriptor(pin, {FILEPATH: mf.relpath, TITLE: mf.relpath,
                                            "dev.edgebundle.file.digest": digest,
                                            "dev.edgebundle.file.size": str(size), **encoder}))
        config = store.put_bytes(model_config_bytes(desc, diff_ids, self.created),
                                 mt.MODEL_CONFIG)
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": mt.MODEL_ARTIFACT,
            "config": _descriptor(config), "layers": layers,
            "annotations": {TITLE: model.name, "org.opencontainers.image.version": model.version,
                            "org.opencontainers.image.created": self.created,
                            "dev.edgebundle.model.kind": model.kind},
        })
        mpin = store.put_bytes(manifest, mt.OCI_MANIFEST)
        entry = ModelEntry(name=model.name, kind=model.kind, version=model.version, format=desc.format,
                           manifest=mpin.digest, files=files, architecture=desc.architecture,
                           quantization=desc.quantization, paramCount=desc.param_count,
                           contextLength=desc.context_length)
        ref_name = f"models/{model.name}:{model.version}"
        return entry, _descriptor(mpin, {REF_NAME: ref_name}, artifactType=mt.MODEL_ARTIFACT)

    # -- manifests -------------------------------------------------------------------------
    def add_manifests(self, store: BlobStore) -> tuple[ManifestsEntry, dict[str, Any]] | None:
        files = manifest_files(self.spec)
        if not files:
            return None
        pins = {f["path"]: (f["digest"], f["size"]) for f in self.lock["manifests"]}
        entries, layers = [], []
        for rel, path in files:
            pin = store.put_writer(mt.EDGEBUNDLE_K8S_MANIFEST, lambda out, p=path: _copy_file(p, out))
            if pins.get(rel) != (pin.digest, pin.size):
                raise LockMismatchError(f"manifest {rel} changed since bundles.lock was written",
                                        hint=f"run: bundle lock {self.spec.path}")
            self.input_bytes += pin.size
            load_all_bounded(read_bounded(path, MAX_MANIFEST_BYTES, f"manifest {rel}"), f"manifest {rel}")
            entries.append(ManifestFile(rel, pin.digest, pin.size))
            layers.append(_descriptor(pin, {TITLE: rel}))
        empty = store.put_bytes(EMPTY_JSON, mt.OCI_EMPTY)
        manifest = canonical_json({
            "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
            "artifactType": mt.EDGEBUNDLE_MANIFESTS_ARTIFACT, "config": _descriptor(empty),
            "layers": layers, "annotations": {"org.opencontainers.image.created": self.created},
        })
        mpin = store.put_bytes(manifest, mt.OCI_MANIFEST)
        ref_name = f"manifests/{self.spec.name}:{self.spec.version}"
        return (ManifestsEntry(mpin.digest, entries),
                _descriptor(mpin, {REF_NAME: ref_name}, artifactType=mt.EDGEBUNDLE_MANIFESTS_ARTIFACT))

    # -- Helm charts (bundler/charts.py, docs/HELM.md) --------------------------------------
    def add_chart(self, store: BlobStore, chart: ChartSpec, locked: dict[str, Any] | None) -> tuple[ChartEntry, dict[str, Any]]:
        """One chart release: Helm's OCI artifact (config + chart layer) and the bundle's values."""
        with charts.packed(chart, self.registries) as p:
            if locked is None or (p.digest, p.size) != (locked["digest"], locked["size"]):
                raise LockMismatchError(f"chart {chart.release} ({chart.source}) changed since bundles.lock was written",
                                        hint=f"run: bundle lock {self.spec.path}")
            archive = store.put_bytes(read_bounded(p.archive, MAX_CHART_BYTES, f"chart {chart.release}"),
                                      mt.HELM_CHART_CONTENT)
            metadata = p.metadata
        self.input_bytes += archive.size
        config = store.put_bytes(charts.config_bytes(metadata), mt.HELM_CONFIG)
        values = store.put_bytes(charts.values_bytes(chart), mt.EDGEBUNDLE_HELM_VALUES)
        name, version = str(metadata.get("name")), str(metadata.get("version"))
        title = {TITLE: f"{name}-{version}.tgz"}
        mpin = store.put_bytes(charts.artifact_manifest(_descriptor(config), _descriptor(archive, title), self.created),
                               mt.OCI_MANIFEST)
        entry = ChartEntry(chart.release, chart.namespace, name, version, mpin.digest, archive.digest, values.digest)
        return entry, _descriptor(mpin, {REF_NAME: chart_ref_name(name, version)})

    # -- the whole bundle ------------------------------------------------------------------
    def build(self, out: Path, keys: list[Any], *, force: bool = False) -> BuildResult:
        out = Path(out).resolve()
        as_tar = out.suffix == ".tar"
        if out.exists() and not force:
            raise UsageError(f"{out} already exists", hint="remove it or pass --force")
        work = out.with_name(out.name + ".partial") if not as_tar else out.with_name(out.name + ".partial.d")
        work.mkdir(parents=True, exist_ok=True)  # a killed build's blobs are reused, re-checked
        store = BlobStore(work, defer=True)
        try:
            root = self.assemble(work, store, keys)
            publish(work, root, out, store)
        except Exception:  # a refused build leaves nothing; Ctrl-C or a kill keeps blobs for reuse
            shutil.rmtree(work, ignore_errors=True)
            raise
        return BuildResult(root, out, self.input_bytes)

    def assemble(self, work: Path, store: BlobStore, keys: list[Any]) -> Root:
        locked_images = {li["ref"]: li for li in self.lock["images"]}
        locked_models = {(m["name"], m["version"]): m for m in self.lock["models"]}
        images, models, index = [], [], []
        for im in self.spec.images:
            entry, desc = self.add_image(store, im, locked_images[im.ref])
            images.append(entry)
            index.append(desc)
            index.extend(_descriptor(store.pins[a.digest], {REF_NAME: f"{entry.repository}:{a.tag}"})
                         for a in entry.attached)
        for m in self.spec.models:
            mentry, desc = self.add_model(store, m, locked_models[(m.name, m.version)])
            models.append(mentry)
            index.append(desc)
        chart_entries = []
        locked_charts = {c["name"]: c for c in self.lock.get("charts", [])}
        for chart in self.spec.charts:
            centry, desc = self.add_chart(store, chart, locked_charts.get(chart.release))
            chart_entries.append(centry)
            if desc not in index:  # two releases of one chart: one artifact
                index.append(desc)
        added = self.add_manifests(store)
        manifests = None
        if added:
            manifests, desc = added
            index.append(desc)
        sbom = sbom_document(self.spec, self.created, images, models, manifests, store.read_small,
                             lambda image, digest, size: self.open_layer(store, image, digest, size), self.log,
                             charts=chart_entries)
        (work / "edgebundle").mkdir(exist_ok=True)
        _write_small(work / layout.SBOM, sbom)
        index_bytes = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index})
        _write_small(work / layout.INDEX, index_bytes)
        _write_small(work / layout.OCI_LAYOUT, layout.OCI_LAYOUT_BYTES)
        root = Root(
            name=self.spec.name, version=self.spec.version, compatible=self.spec.compatible,
            created=self.created,
            files={layout.OCI_LAYOUT: FilePin(sha256_bytes(layout.OCI_LAYOUT_BYTES), len(layout.OCI_LAYOUT_BYTES)),
                   layout.INDEX: FilePin(sha256_bytes(index_bytes), len(index_bytes)),
                   layout.SBOM: FilePin(sha256_bytes(sbom), len(sbom))},
            blobs=dict(store.pins), images=images, models=models, manifests=manifests,
            expires=self.expires, charts=chart_entries or None)
        self.write_trust_files(work, root, keys)
        return root

    @contextlib.contextmanager
    def open_layer(self, store: BlobStore, image: ImageEntry, digest: str, size: int) -> Iterator[BinaryIO]:
        """A layer of ``image`` for the SBOM: from the work dir when stored there (checked when
        written), else streamed again from its registry (a deferred blob, a delta base's layer)."""
        path = store.path(digest)
        if digest not in store.deferred and path.is_file():
            with open(path, "rb") as f:
                yield f
            return
        reg = self.registries(parse_reference(image.ref).registry)
        yield CheckedStream(reg.iter_blob(image.repository, digest, size), digest, size,  # type: ignore[misc]
                            f"layer {digest} of {image.ref}")

    @staticmethod
    def write_trust_files(work: Path, root: Root, keys: list[Any]) -> None:
        root_bytes = root.to_bytes()
        parse_root(root_bytes)  # the installer's checks (paths, names, sizes), caught here first
        (work / "edgebundle").mkdir(exist_ok=True)
        if root.is_delta:  # docs/DELTA.md: a delta's root is signed compressed (its size is most of a small delta)
            _write_small(work / layout.ROOT, sign(compress_document(root_bytes), mt.PAYLOAD_ROOT_ZSTD, keys))
        else:
            _write_small(work / layout.ROOT, sign(root_bytes, mt.PAYLOAD_ROOT, keys))


def _write_small(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _copy_file(src: Path, out: BinaryIO) -> None:
    with open(src, "rb") as f:
        for chunk in iter_chunks(f):
            out.write(chunk)


def write_tar(work: Path, root: Root, out: Path, store: BlobStore | None = None) -> None:
    """Write the bundle tree at ``work`` as one tar at ``out`` (via a temp name, fsynced); blobs
    ``store`` deferred are streamed from their origin, checked against their pins."""
    tmp = out.with_name(out.name + ".partial")
    mtime = root.created_epoch
    try:
        with open(tmp, "wb") as f:
            for name in root.member_order():
                digest = layout.digest_of_blob_path(name)
                if store is not None and digest in store.deferred:
                    size = root.blobs[digest].size  # type: ignore[index]
                    f.write(tarfmt.encode_header(name, size, mtime))
                    store.write_deferred(digest, f)  # type: ignore[arg-type]
                    f.write(tarfmt.padding(size))
                    continue
                src = work / name
                with open(src, "rb") as s:
                    tarfmt.write_member(f, name, src.stat().st_size, mtime, s)
            f.write(tarfmt.END)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written tar under any name
        raise
    os.replace(tmp, out)
    fsync_dir(out.parent)


def publish(work: Path, root: Root, out: Path, store: BlobStore | None = None) -> int:
    """Turn the finished bundle directory ``work`` into OUT (a tar when OUT ends in ``.tar``,
    else the directory renamed into place) and return OUT's size in bytes."""
    if out.suffix == ".tar":
        write_tar(work, root, out, store)
        shutil.rmtree(work)
        return out.stat().st_size
    if store is not None:
        store.materialize()
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    fsync_dir(out.parent)
    return tree_size(out)


def tree_size(path: Path) -> int:
    """Bytes of every regular file under ``path`` (the size of a bundle directory)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
