"""The signed root document (the payload of ``edgebundle/root.dsse.json``).

The root is the one document the bundle's signatures cover. It pins, directly, the digest and size of
every blob in the bundle and of ``oci-layout`` and ``index.json``; it also carries the semantic
listing (images, models, manifests) that the installer acts on. docs/FORMAT.md specifies it.

Invariants:
- Serialisation is canonical (sorted keys, no whitespace, ASCII): the same content always gives
  the same bytes, so a bundle is reproducible and a signature is over a single byte string.
- A root carries ``expires``: after it, a site refuses the bundle unless the operator overrides
  (TUF's freeze attack: an old genuine release must not stay installable forever).
- :func:`parse_root` accepts only documents of the current ``specVersion`` whose every field has
  the expected type, whose digests are well formed, and whose semantic entries only name blobs
  the root pins. It never trusts sizes it has not bounded.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from edgebundle.attached import KINDS as ATTACHED_KINDS
from edgebundle.attached import is_attached_tag
from edgebundle.digest import is_digest, piece_bytes, piece_count, sha256_bytes
from edgebundle.errors import UsageError, VerificationError
from edgebundle.helmchart import NAMESPACE_NAME, RELEASE_NAME
from edgebundle.layout import INDEX, MAX_JSON_BYTES, OCI_LAYOUT, SBOM, blob_path, member_order
from edgebundle.ocinames import is_repository, is_tag

ROOT_TYPE = "edgebundle.root"
#: The one timestamp format of signed documents (UTC, whole seconds).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SPEC_VERSION = 1
MODEL_KINDS = ("llm", "embedding", "index")
#: The directory each kind lives in below a models root: on the NAS and at ``/models`` in pods.
KIND_DIRS = {"llm": "llm", "embedding": "embeddings", "index": "indices"}
#: A bundle's name (``metadata.name`` of the spec, ``name`` of the root).
BUNDLE_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?")
#: A model's name or version: one directory name below the models root, on any file system.
PATH_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Model file encodings inside a bundle: the file itself, or a zstd tar holding just that file.
ENCODINGS = ("identity", "tar+zstd")


class MalformedRootError(VerificationError):
    """The root document is not valid JSON of the expected shape."""


@dataclass(frozen=True)
class BlobPin:
    """A blob the bundle carries: its digest, size and media type.

    ``pieces`` (optional, only for a blob over one piece): the digest of each
    piece (:func:`edgebundle.digest.piece_bytes`), so that a verifier proves the blob's bytes on
    several cores at once (edgebundle/verify.py); whoever streams the blob whole still checks
    ``digest``.
    """

    digest: str
    size: int
    mediaType: str
    pieces: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilePin:
    """A non-blob member (``oci-layout``, ``index.json``)."""

    digest: str
    size: int


@dataclass(frozen=True)
class AttachedEntry:
    """An artifact attached upstream to one of an image's manifests (edgebundle/attached.py)."""

    kind: str  # signature | attestation | sbom (cosign's tags) | referrers (an OCI 1.1 index)
    subject: str  # the image manifest or index digest it is attached to
    tag: str  # where it goes in the image's repository: sha256-<hex>[.sig|.att|.sbom]
    digest: str  # its manifest (or, for referrers, index) digest
    mediaType: str


@dataclass(frozen=True)
class ImageEntry:
    """One container image: the reference it was built from and what it resolved to."""

    ref: str  # as written in the spec, e.g. 127.0.0.1:5000/rag/llm-service:1.0
    refName: str  # org.opencontainers.image.ref.name in index.json, e.g. rag/llm-service:1.0
    repository: str  # rag/llm-service
    tag: str | None
    digest: str  # top-level manifest or index digest
    mediaType: str
    platforms: list[str]
    size: int  # sum of the sizes of every blob the image needs
    #: Signatures, attestations, SBOMs and referrers carried with the image (omitted when none).
    attached: list[AttachedEntry] = field(default_factory=list)


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its own content pin and the blob that carries it."""

    path: str  # relative to the model version directory
    digest: str  # sha256 of the file as staged
    size: int
    blob: str  # digest of the layer blob in this bundle
    encoding: str  # identity | tar+zstd


@dataclass(frozen=True)
class ModelEntry:
    """A model version: ModelPack artifact manifest plus its files."""

    name: str
    kind: str
    version: str
    format: str
    manifest: str  # digest of the artifact manifest
    files: list[ModelFile]
    architecture: str | None = None
    quantization: str | None = None
    paramCount: int | None = None
    contextLength: int | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class ManifestFile:
    """One Kubernetes manifest file, stored raw as its own blob (digest == blob)."""

    path: str
    digest: str
    size: int


@dataclass(frozen=True)
class ManifestsEntry:
    manifest: str  # digest of the manifests artifact manifest
    files: list[ManifestFile]


@dataclass(frozen=True)
class ChartEntry:
    """A Helm chart release: the chart artifact (docs/HELM.md) and the bundle's default values."""

    release: str  # the Helm release name; the site file's spec.values.<release> overlays values
    namespace: str | None  # None: the site's cluster namespace
    chart: str  # the chart's name (Chart.yaml)
    version: str  # the chart's version (Chart.yaml)
    manifest: str  # digest of the Helm OCI artifact manifest
    archive: str  # digest of the packaged chart (the artifact's one layer)
    values: str  # digest of the bundle's default values (canonical JSON)


@dataclass(frozen=True)
class BaseRef:
    """For a delta: the bundle it applies on top of."""

    name: str
    version: str
    root: str  # root digest of the base bundle (sha256 of its root document)


@dataclass(frozen=True)
class Root:
    name: str
    version: str
    compatible: str
    created: str
    files: dict[str, FilePin]
    blobs: dict[str, BlobPin]
    images: list[ImageEntry]
    models: list[ModelEntry]
    manifests: ManifestsEntry | None
    base: BaseRef | None = None
    #: Delta only: how each blob missing from the bundle is rebuilt (see bundler/delta.py).
    delta: dict[str, Any] | None = None
    #: After this time (TIME_FORMAT) sites refuse the bundle without an operator override.
    expires: str | None = None
    #: Helm chart releases (absent, not empty, in a bundle without charts: older roots stay byte-identical).
    charts: list[ChartEntry] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        d = {k: v for k, v in d.items() if v is not None}
        for im in d["images"]:  # a root without attached artifacts keeps its pre-attached bytes
            if not im["attached"]:
                del im["attached"]
        for b in d["blobs"].values():  # likewise a root whose blobs have no piece digests
            if not b["pieces"]:
                del b["pieces"]
            else:
                b["pieces"] = list(b["pieces"])
        d["_type"] = ROOT_TYPE
        d["specVersion"] = SPEC_VERSION
        d.update(self.extra)
        return d

    @property
    def digest(self) -> str:
        return sha256_bytes(self.to_bytes())

    @property
    def expires_at(self) -> float | None:
        """``expires`` as seconds since the epoch."""
        return None if self.expires is None else parse_time(self.expires, "root.expires")

    @property
    def is_delta(self) -> bool:
        return self.base is not None

    def member_pins(self, full: bool = False) -> dict[str, tuple[str, int]]:
        """Every content member the root pins: name -> (digest, size).

        A delta carries only some blobs (and its patches): ``delta["carried"]`` lists them. With
        ``full`` a delta's pins are those of the full target it stands for (what a
        reconstructing source presents, bundler/delta.py).
        """
        pins = {name: (p.digest, p.size) for name, p in self.files.items()
                if full or name not in self.packed_files}
        if self.delta is None or full:
            pins.update((blob_path(d), (d, p.size)) for d, p in self.blobs.items())
        else:
            pins.update((blob_path(d), (d, int(c["size"]))) for d, c in self.delta["carried"].items())
        return pins

    @property
    def created_epoch(self) -> int:
        """``created`` in seconds since the epoch: the mtime of every member the builder writes."""
        return int(parse_time(self.created, "created"))

    def member_order(self) -> list[str]:
        """The members of this root's tar bundle in the order they are written (docs/FORMAT.md)."""
        return member_order(self.blobs if self.delta is None else self.delta["carried"], self.files,
                            self.packed_files)

    @property
    def packed_files(self) -> dict[str, Any]:
        """A delta's non-blob members carried inside its pack (``delta.files``): name -> {pack, offset}."""
        return (self.delta or {}).get("files", {})

    def total_size(self) -> int:
        return sum(p.size for p in self.blobs.values())


def canonical_json(obj: Any) -> bytes:
    """The one serialisation used for signed and digested edgebundle documents."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def load_json_bounded(data: bytes, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a small JSON document, refusing oversize or pathologically nested input."""
    if len(data) > limit:
        raise MalformedRootError(f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    depth = max_depth = 0
    in_str = esc = False
    for ch in data:  # cheap pre-scan: json.loads recursion is not a safe depth guard
        if in_str:
            if esc:
                esc = False
            elif ch == 0x5C:
                esc = True
            elif ch == 0x22:
                in_str = False
        elif ch == 0x22:
            in_str = True
        elif ch in (0x5B, 0x7B):
            depth += 1
            max_depth = max(max_depth, depth)
            if max_depth > 64:
                raise MalformedRootError(f"{what} nests deeper than 64 levels")
        elif ch in (0x5D, 0x7D):
            depth -= 1
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedRootError(f"{what} is not valid JSON: {e}") from None


def parse_time(text: str, where: str) -> float:
    """Seconds since the epoch of a :data:`TIME_FORMAT` timestamp; malformed is an error."""
    try:
        return float(calendar.timegm(time.strptime(text, TIME_FORMAT)))
    except (TypeError, ValueError):
        raise MalformedRootError(f"{where} {str(text)[:40]!r} is not a time like 2026-01-31T00:00:00Z") from None


def format_time(t: float) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(t))


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``180d`` -> seconds (a usage error otherwise)."""
    m = _DURATION.match(text.strip())
    if not m or float(m[1]) <= 0:
        raise UsageError(f"duration {text!r} is not like 30m, 24h or 180d")
    return float(m[1]) * _DURATION_UNITS[m[2]]


#: One identifier's sort key: numeric identifiers below alphanumeric ones, as SemVer 2.0 says.
_Ident = tuple[int, int, str]


def _ident(part: str) -> _Ident:
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses (SemVer's digits are ASCII).
    return (0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part)


def version_key(version: str) -> tuple[tuple[_Ident, ...], int, tuple[_Ident, ...]]:
    """The one version order rollback protection uses (docs/SECURITY.md, "Version order").

    For SemVer 2.0 versions this is exactly SemVer precedence: build metadata (``+...``) is
    ignored, a pre-release sorts below its release, pre-release identifiers compare numerically
    when numeric, in ASCII order otherwise, numeric below alphanumeric, and a longer list wins a
    tie. Any other string is ordered by the same rule generalised, so that the order is total and
    never raises: drop ``+...``; split at the first ``-`` into release and pre-release; split
    both at dots; a release part is numeric (ASCII digits) or compares as text above every number; trailing
    zero release parts are ignored (``1.0`` = ``1.0.0`` = ``1.0.0.0.0``).
    """
    main, _, pre = version.partition("+")[0].partition("-")
    release = [_ident(p) for p in main.split(".")]
    while release and release[-1] == (0, 0, ""):
        release.pop()
    has_pre = "-" in version.partition("+")[0]
    return (tuple(release), 0 if has_pre else 1, tuple(_ident(p) for p in pre.split(".")) if has_pre else ())


# --- strict parsing -------------------------------------------------------------------------

def _req(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise MalformedRootError(f"root: {where} lacks '{key}'")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise MalformedRootError(f"root: {where}.{key} has the wrong type")
    return v


def _opt(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    return _req(d, key, typ, where) if d.get(key) is not None else None


def _digest(d: dict[str, Any], key: str, where: str) -> str:
    v = _req(d, key, str, where)
    if not is_digest(v):
        raise MalformedRootError(f"root: {where}.{key} is not a sha256 digest: {v[:80]!r}")
    return v


def _size(d: dict[str, Any], where: str) -> int:
    v = _req(d, "size", int, where)
    if v < 0 or v > 1 << 50:
        raise MalformedRootError(f"root: {where}.size {v} is out of range")
    return v


#: Longest path component and whole path (bytes, UTF-8) a signed root may name (Linux NAME_MAX,
#: and well under PATH_MAX once below a models root).
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024
#: Names below a model version the installer keeps for itself (its marker, temporary files).
RESERVED_PREFIX = ".edgebundle"


def _relpath(d: dict[str, Any], where: str) -> str:
    """A relative path that is safe to create below a directory on any Linux file system."""
    p = _req(d, "path", str, where)
    parts = p.split("/")
    shown = p[:80].encode("unicode_escape").decode()
    if not p or p.startswith("/") or "\\" in p or any(x in ("", ".", "..") for x in parts):
        raise MalformedRootError(f"root: {where}.path {shown!r} is not a safe relative path")
    if any(ord(c) < 0x20 or c == "\x7f" for c in p):
        raise MalformedRootError(f"root: {where}.path {shown!r} contains a NUL or control character")
    if len(p.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise MalformedRootError(f"root: {where}.path is over {MAX_PATH_BYTES} bytes long")
    if any(len(x.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES for x in parts):
        raise MalformedRootError(f"root: {where}.path {shown!r}... has a component over "
                                 f"{MAX_COMPONENT_BYTES} bytes")
    if any(x.startswith(RESERVED_PREFIX) for x in parts):
        raise MalformedRootError(f"root: {where}.path {shown!r} uses a name reserved by the installer "
                                 f"({RESERVED_PREFIX}*)")
    return p


def _check_tree(paths: list[str], where: str) -> None:
    """No two files on one path, and no path that is both a file and a directory."""
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise MalformedRootError(f"root: {where} lists {p[:200]!r} twice",
                                     hint="two files would be written one over the other; rebuild the bundle")
        seen.add(p)
    dirs = {p[:i] for p in paths for i in range(len(p)) if p[i] == "/"}
    clash = sorted(dirs & seen)
    if clash:
        raise MalformedRootError(f"root: {where} names {clash[0][:200]!r} both as a file and as a directory",
                                 hint="rebuild the bundle from a model directory with distinct paths")


def _check_image_names(im: ImageEntry, where: str) -> None:
    """Repository and tag by the OCI distribution grammar, before anything is pushed."""
    if not is_repository(im.repository):
        raise MalformedRootError(f"root: {where}.repository {im.repository[:200]!r} is not a valid "
                                 "repository name (lower-case path components, at most 255 characters)")
    if im.tag is not None and not is_tag(im.tag):
        raise MalformedRootError(f"root: {where}.tag {im.tag[:200]!r} is not a valid tag "
                                 "([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
    if im.refName != (f"{im.repository}:{im.tag}" if im.tag else im.repository) and \
            im.refName != f"{im.repository}@{im.digest}":
        raise MalformedRootError(f"root: {where}.refName {im.refName[:200]!r} does not name "
                                 f"{im.repository}{':' + im.tag if im.tag else ''}")



def _attached(im: dict[str, Any], where: str, pinned: Any) -> list[AttachedEntry]:
    """An image's attached artifacts: each pinned, each under the one tag its kind and subject allow."""
    out = []
    for j, a in enumerate(_opt(im, "attached", list, where) or []):
        w = f"{where}.attached[{j}]"
        if not isinstance(a, dict):
            raise MalformedRootError(f"root: {w} is not an object")
        _exact_keys(a, {"kind", "subject", "tag", "digest", "mediaType"}, w)
        kind, tag = _req(a, "kind", str, w), _req(a, "tag", str, w)
        subject = pinned(_digest(a, "subject", w), w)
        if kind not in ATTACHED_KINDS or not is_attached_tag(tag, subject, kind):
            raise MalformedRootError(f"root: {w} ({kind[:40]!r}) may not use the tag {tag[:200]!r}",
                                     hint="an attached artifact goes only under sha256-<subject hex>"
                                          "[.sig|.att|.sbom]; rebuild the bundle")
        out.append(AttachedEntry(kind, subject, tag, pinned(_digest(a, "digest", w), w),
                                 _req(a, "mediaType", str, w)))
        if any(o.tag == tag and o.digest != out[-1].digest for o in out):
            raise MalformedRootError(f"root: {w} puts a second artifact under the tag {tag}")
    return out


def parse_root(data: bytes) -> Root:
    """Parse and validate root bytes; raise :class:`MalformedRootError` naming the first problem."""
    doc = load_json_bounded(data, "root.json")
    if not isinstance(doc, dict):
        raise MalformedRootError("root.json is not a JSON object")
    if doc.get("_type") != ROOT_TYPE:
        raise MalformedRootError(f"root.json has _type {doc.get('_type')!r}, expected {ROOT_TYPE!r}")
    if doc.get("specVersion") != SPEC_VERSION:
        raise MalformedRootError(
            f"root.json has specVersion {doc.get('specVersion')!r}; this edgebundle reads {SPEC_VERSION}",
            hint="use the edgebundle release that built this bundle, or rebuild it with this one",
        )
    known = {"_type", "specVersion", "name", "version", "compatible", "created", "expires", "files", "blobs",
             "images", "models", "manifests", "base", "delta", "charts"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise MalformedRootError(f"root.json has unknown keys: {', '.join(unknown)}")

    name = _req(doc, "name", str, "root")
    if not BUNDLE_NAME.fullmatch(name):
        raise MalformedRootError(f"root: name {name!r} is not a valid bundle name")
    version = _req(doc, "version", str, "root")
    if not re.fullmatch(r"[0-9A-Za-z.+-]{1,64}", version):
        raise MalformedRootError(f"root: version {version!r} is not valid")

    files_raw = _req(doc, "files", dict, "root")
    files: dict[str, FilePin] = {}
    for k in (OCI_LAYOUT, INDEX, SBOM):
        if k != SBOM or k in files_raw:  # the SBOM is optional: bundles built before it have none
            f = _req(files_raw, k, dict, "root.files")
            files[k] = FilePin(_digest(f, "digest", f"files[{k}]"), _size(f, f"files[{k}]"))
    if set(files_raw) != set(files):
        raise MalformedRootError(f"root: files must list exactly oci-layout, index.json and optionally {SBOM}")
    if SBOM in files and files[SBOM].size > MAX_JSON_BYTES:
        raise MalformedRootError(f"root: files[{SBOM}] is {files[SBOM].size} bytes, over the "
                                 f"{MAX_JSON_BYTES}-byte limit of a document read whole")

    blobs: dict[str, BlobPin] = {}
    for k, b in _req(doc, "blobs", dict, "root").items():
        if not is_digest(k) or not isinstance(b, dict):
            raise MalformedRootError(f"root: blobs key {str(k)[:80]!r} is not a sha256 digest")
        if _digest(b, "digest", f"blobs[{k}]") != k:
            raise MalformedRootError(f"root: blobs[{k}] pins a different digest")
        size = _size(b, f"blobs[{k}]")
        blobs[k] = BlobPin(k, size, _req(b, "mediaType", str, f"blobs[{k}]"), _pieces(b, size, f"blobs[{k}]"))

    def pinned(d: str, where: str) -> str:
        if d not in blobs:
            raise MalformedRootError(f"root: {where} names blob {d} that the root does not pin")
        return d

    images = []
    for i, im in enumerate(_req(doc, "images", list, "root")):
        w = f"images[{i}]"
        if not isinstance(im, dict):
            raise MalformedRootError(f"root: {w} is not an object")
        plats = _req(im, "platforms", list, w)
        if not all(isinstance(p, str) for p in plats):
            raise MalformedRootError(f"root: {w}.platforms must be strings")
        images.append(ImageEntry(
            ref=_req(im, "ref", str, w), refName=_req(im, "refName", str, w),
            repository=_req(im, "repository", str, w), tag=_opt(im, "tag", str, w),
            digest=pinned(_digest(im, "digest", w), w), mediaType=_req(im, "mediaType", str, w),
            platforms=plats, size=_size(im, w), attached=_attached(im, w, pinned),
        ))
        _check_image_names(images[-1], w)

    models = []
    for i, m in enumerate(_req(doc, "models", list, "root")):
        w = f"models[{i}]"
        if not isinstance(m, dict):
            raise MalformedRootError(f"root: {w} is not an object")
        kind = _req(m, "kind", str, w)
        if kind not in MODEL_KINDS:
            raise MalformedRootError(f"root: {w}.kind {kind!r} is not one of {MODEL_KINDS}")
        mname, mver = _req(m, "name", str, w), _req(m, "version", str, w)
        for label, val in (("name", mname), ("version", mver)):
            if not PATH_COMPONENT.fullmatch(val):
                raise MalformedRootError(f"root: {w}.{label} {val!r} is not a safe path component")
        mfiles = []
        for j, f in enumerate(_req(m, "files", list, w)):
            fw = f"{w}.files[{j}]"
            if not isinstance(f, dict):
                raise MalformedRootError(f"root: {fw} is not an object")
            enc = _req(f, "encoding", str, fw)
            if enc not in ENCODINGS:
                raise MalformedRootError(f"root: {fw}.encoding {enc!r} is unknown")
            mfiles.append(ModelFile(_relpath(f, fw), _digest(f, "digest", fw), _size(f, fw),
                                    pinned(_digest(f, "blob", fw), fw), enc))
        _check_tree([f.path for f in mfiles], f"{w} ({mname} {mver}) files")
        if (kind, mname, mver) in {(x.kind, x.name, x.version) for x in models}:
            raise MalformedRootError(f"root: {w} lists {kind} {mname} {mver} a second time")
        models.append(ModelEntry(
            name=mname, kind=kind, version=mver, format=_req(m, "format", str, w),
            manifest=pinned(_digest(m, "manifest", w), w), files=mfiles,
            architecture=_opt(m, "architecture", str, w), quantization=_opt(m, "quantization", str, w),
            paramCount=_opt(m, "paramCount", int, w), contextLength=_opt(m, "contextLength", int, w),
        ))

    manifests = None
    if doc.get("manifests") is not None:
        mo = _req(doc, "manifests", dict, "root")
        mf = []
        for j, f in enumerate(_req(mo, "files", list, "manifests")):
            fw = f"manifests.files[{j}]"
            if not isinstance(f, dict):
                raise MalformedRootError(f"root: {fw} is not an object")
            mf.append(ManifestFile(_relpath(f, fw), pinned(_digest(f, "digest", fw), fw), _size(f, fw)))
        _check_tree([f.path for f in mf], "manifests.files")
        manifests = ManifestsEntry(pinned(_digest(mo, "manifest", "manifests"), "manifests"), mf)

    charts = _charts(doc, pinned) if doc.get("charts") is not None else None

    base = None
    if doc.get("base") is not None:
        b = _req(doc, "base", dict, "root")
        base = BaseRef(_req(b, "name", str, "base"), _req(b, "version", str, "base"),
                       _digest(b, "root", "base"))
    delta = _opt(doc, "delta", dict, "root")
    if (base is None) != (delta is None):
        raise MalformedRootError("root: a delta needs both 'base' and 'delta'")
    if delta is not None:
        _check_delta(delta, blobs, models, files)

    created, expires = _req(doc, "created", str, "root"), _req(doc, "expires", str, "root")
    if parse_time(expires, "root.expires") <= parse_time(created, "root.created"):
        raise MalformedRootError(f"root: expires {expires} is not after created {created}")
    return Root(name=name, version=version, compatible=_req(doc, "compatible", str, "root"),
                created=created, files=files, blobs=blobs, images=images,
                models=models, manifests=manifests, base=base, delta=delta, expires=expires, charts=charts)


def _charts(doc: dict[str, Any], pinned: Any) -> list[ChartEntry]:
    charts: list[ChartEntry] = []
    for i, c in enumerate(_req(doc, "charts", list, "root")):
        w = f"charts[{i}]"
        if not isinstance(c, dict):
            raise MalformedRootError(f"root: {w} is not an object")
        _exact_keys(c, {"release", "namespace", "chart", "version", "manifest", "archive", "values"}, w)
        release, namespace = _req(c, "release", str, w), _opt(c, "namespace", str, w)
        if not RELEASE_NAME.fullmatch(release):
            raise MalformedRootError(f"root: {w}.release {release[:80]!r} is not a Helm release name")
        if namespace is not None and not NAMESPACE_NAME.fullmatch(namespace):
            raise MalformedRootError(f"root: {w}.namespace {namespace[:80]!r} is not a namespace name")
        if release in {x.release for x in charts}:
            raise MalformedRootError(f"root: {w} lists release {release} a second time")
        charts.append(ChartEntry(release, namespace, _req(c, "chart", str, w), _req(c, "version", str, w),
                                 pinned(_digest(c, "manifest", w), w), pinned(_digest(c, "archive", w), w),
                                 pinned(_digest(c, "values", w), w)))
    return charts


# --- the delta section (docs/DELTA.md) ------------------------------------------------------

DELTA_METHODS = ("whole", "base", "bsdiff4", "zstd-patch-from", "gguf-tensors", "windows", "packed")
_ENTRY_KEYS = {"what", "method", "reason", "size", "carriedBytes", "from", "patch", "file", "zstd", "pieces",
               "pack", "offset"}
#: Largest decoded pack (a delta's small documents in one zstd frame, docs/DELTA.md).
PACK_MAX = MAX_JSON_BYTES


def _exact_keys(d: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise MalformedRootError(f"root: {where} has unknown keys: {', '.join(map(str, unknown))[:200]}")


def _check_from(src: Any, where: str) -> dict[str, Any]:
    """A base input: ``{digest, size, at: {registry: {repository, endpoint}} | {nas: {...}}}``."""
    if not isinstance(src, dict):
        raise MalformedRootError(f"root: {where}.from is not an object")
    _exact_keys(src, {"digest", "size", "at"}, f"{where}.from")
    _digest(src, "digest", f"{where}.from")
    _size(src, f"{where}.from")
    at = _req(src, "at", dict, f"{where}.from")
    if list(at) == ["registry"]:
        r = _req(at, "registry", dict, f"{where}.from.at")
        _exact_keys(r, {"repository", "endpoint"}, f"{where}.from.at.registry")
        repo = _req(r, "repository", str, f"{where}.from.at.registry")
        if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", repo) or len(repo) > 255:
            raise MalformedRootError(f"root: {where}.from.at.registry.repository {repo[:80]!r} is not valid")
        if _req(r, "endpoint", str, f"{where}.from.at.registry") not in ("blobs", "manifests"):
            raise MalformedRootError(f"root: {where}.from.at.registry.endpoint must be blobs or manifests")
    elif list(at) == ["nas"]:
        n = _req(at, "nas", dict, f"{where}.from.at")
        _exact_keys(n, {"kind", "name", "version", "path"}, f"{where}.from.at.nas")
        if _req(n, "kind", str, f"{where}.from.at.nas") not in MODEL_KINDS:
            raise MalformedRootError(f"root: {where}.from.at.nas.kind is not a model kind")
        for label in ("name", "version"):
            if not PATH_COMPONENT.fullmatch(_req(n, label, str, f"{where}.from.at.nas")):
                raise MalformedRootError(f"root: {where}.from.at.nas.{label} is not a safe path component")
        _relpath(n, f"{where}.from.at.nas")
    else:
        raise MalformedRootError(f"root: {where}.from.at must be exactly one of registry, nas")
    return src


def _pieces(b: dict[str, Any], size: int, where: str) -> tuple[str, ...]:
    """A blob's optional piece digests: one per piece of its size, none for a one-piece blob."""
    if "pieces" not in b:
        return ()
    pieces = b["pieces"]
    want = piece_count(size)
    if not isinstance(pieces, list) or not all(is_digest(p) for p in pieces):
        raise MalformedRootError(f"root: {where}.pieces must be a list of sha256 digests")
    if len(pieces) != want or not want:
        raise MalformedRootError(f"root: {where}.pieces lists {len(pieces)} digest(s); a blob of {size} "
                                 f"bytes has {want} pieces of {piece_bytes(size)} bytes"
                                 + (" (and then lists none)" if not want else ""))
    return tuple(pieces)


def _check_delta(delta: dict[str, Any], blobs: dict[str, BlobPin], models: list[ModelEntry],
                 files: dict[str, FilePin]) -> None:
    """Every target blob is carried whole, packed, present at the site, or rebuilt from carried
    patches and base inputs; every carried blob is used; a pack's entries tile its signed decoded
    size exactly; nothing else is allowed."""
    _exact_keys(delta, {"carried", "rebuild", "files"}, "delta")
    carried = _req(delta, "carried", dict, "delta")
    for d, c in carried.items():
        if not is_digest(d) or not isinstance(c, dict):
            raise MalformedRootError(f"root: delta.carried key {str(d)[:80]!r} is not a digest")
        kind = _req(c, "kind", str, f"delta.carried[{d}]")
        if kind not in ("blob", "patch", "pack"):
            raise MalformedRootError(f"root: delta.carried[{d}].kind must be blob, patch or pack")
        _exact_keys(c, {"size", "kind", "decoded"} if kind == "pack" else {"size", "kind"}, f"delta.carried[{d}]")
        _size(c, f"delta.carried[{d}]")
        if kind == "pack" and not 0 < _req(c, "decoded", int, f"delta.carried[{d}]") <= PACK_MAX:
            raise MalformedRootError(f"root: delta.carried[{d}].decoded must be 1 to {PACK_MAX} bytes")
        if kind == "blob" and (d not in blobs or blobs[d].size != c["size"]):
            raise MalformedRootError(f"root: delta.carried[{d}] is not a target blob of that size")
    rebuild = _req(delta, "rebuild", dict, "delta")
    if set(rebuild) != set(blobs):
        missing = sorted(set(blobs) - set(rebuild))
        raise MalformedRootError("root: delta.rebuild must list exactly the pinned blobs"
                                 + (f" (lacks {missing[0]})" if missing else " (lists extra blobs)"))
    files_by_blob = {f.blob: f for m in models for f in m.files}
    used: set[str] = set()
    # pack digest -> [(offset, size, what)] of what it holds
    in_pack: dict[str, list[tuple[int, int, str]]] = {}

    def pack_entry(e: dict[str, Any], size: int, w: str) -> None:
        pack = _digest(e, "pack", w)
        if carried.get(pack, {}).get("kind") != "pack":
            raise MalformedRootError(f"root: {w}.pack {pack} is not a carried pack")
        offset = _req(e, "offset", int, w)
        in_pack.setdefault(pack, []).append((offset, size, w))
        used.add(pack)

    packed_files = _opt(delta, "files", dict, "delta") or {}
    for name, e in packed_files.items():
        w = f"delta.files[{str(name)[:80]}]"
        if name not in files or name == OCI_LAYOUT or not isinstance(e, dict):
            raise MalformedRootError(f"root: {w} is not index.json or the SBOM of this root")
        _exact_keys(e, {"pack", "offset"}, w)
        pack_entry(e, files[name].size, w)
    for d, e in rebuild.items():
        w = f"delta.rebuild[{d}]"
        if not isinstance(e, dict):
            raise MalformedRootError(f"root: {w} is not an object")
        _exact_keys(e, _ENTRY_KEYS, w)
        method = _req(e, "method", str, w)
        if method not in DELTA_METHODS:
            raise MalformedRootError(f"root: {w}.method {method[:40]!r} is unknown")
        if _size(e, w) != blobs[d].size:
            raise MalformedRootError(f"root: {w}.size differs from the pinned size")
        for key in ("what", "reason", "zstd"):
            _opt(e, key, str, w)
        if e.get("carriedBytes") is not None:
            _req(e, "carriedBytes", int, w)
        if e.get("pieces") is not None and not all(
                isinstance(k, str) and isinstance(v, int) for k, v in _req(e, "pieces", dict, w).items()):
            raise MalformedRootError(f"root: {w}.pieces must map names to byte counts")
        if method == "whole":
            if carried.get(d, {}).get("kind") != "blob" or any(k in e for k in ("from", "patch", "file")):
                raise MalformedRootError(f"root: {w} is 'whole' but the blob is not carried as one")
            used.add(d)
            continue
        if d in carried:
            raise MalformedRootError(f"root: {w} is carried whole but says {method}")
        if method == "packed":
            if any(k in e for k in ("from", "patch", "file")):
                raise MalformedRootError(f"root: {w} is 'packed' but names a base input or patch")
            pack_entry(e, e["size"], w)
            continue
        if "pack" in e or "offset" in e:
            raise MalformedRootError(f"root: {w} is {method} but names a pack")
        src = _check_from(e.get("from"), w)
        file = e.get("file")
        if file is not None:
            if not isinstance(file, dict):
                raise MalformedRootError(f"root: {w}.file is not an object")
            _exact_keys(file, {"path", "digest", "size", "encoding"}, f"{w}.file")
            mf = files_by_blob.get(d)
            if mf is None or (mf.path, mf.digest, mf.size, mf.encoding) != (
                    _relpath(file, f"{w}.file"), _digest(file, "digest", f"{w}.file"),
                    _size(file, f"{w}.file"), _req(file, "encoding", str, f"{w}.file")):
                raise MalformedRootError(f"root: {w}.file is not the model file this blob carries")
            if mf.encoding == "identity" and mf.digest != d:
                raise MalformedRootError(f"root: {w}.file is identity-encoded but its digest is not the blob's")
        if "nas" in src["at"] and file is None:
            raise MalformedRootError(f"root: {w} rebuilds from a model file but names no target file")
        if method == "base":
            if "patch" in e:
                raise MalformedRootError(f"root: {w} is 'base' but names a patch")
            want = file["digest"] if file is not None else d
            if src["digest"] != want:
                raise MalformedRootError(f"root: {w} is 'base' but its input is other content")
            continue
        patch = _digest(e, "patch", w)
        if carried.get(patch, {}).get("kind") != "patch":
            raise MalformedRootError(f"root: {w}.patch {patch} is not a carried patch")
        used.add(patch)
    for pack, entries in in_pack.items():
        at = 0
        for offset, size, w in sorted(entries):
            if offset != at:
                raise MalformedRootError(f"root: {w}.offset {offset} leaves a gap or overlaps in pack "
                                         f"{pack} (expected {at}): a pack's entries tile it exactly")
            at += size
        if at != carried[pack]["decoded"]:
            raise MalformedRootError(f"root: pack {pack} entries add up to {at} bytes, its signed "
                                     f"decoded size is {carried[pack]['decoded']}")
    unused = sorted(set(carried) - used)
    if unused:
        raise MalformedRootError(f"root: delta.carried lists {unused[0]} that nothing uses")
