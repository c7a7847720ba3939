"""``bundles.lock``: every input of a bundle pinned by digest.

The lock pins each image to its manifest (or index) digest and its per-platform manifest
digests, each model file and manifest file to sha256 and size, and the bundle's creation time
(so the same spec, lock, sources and key rebuild a byte-identical bundle).

Invariant: a lock is *current* for a spec when its ``spec`` fingerprint equals the spec's; it
*matches the sources* when every pinned file still hashes to its pin and every tag still
resolves to the pinned digest.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from bundler import charts
from bundler.attached import carried_subjects, discover, fetch_document, registry_blob_reader, required_keys_check
from bundler.spec import BundleSpec, ImageSpec, manifest_files, model_files, normalize_platform
from edgebundle import mediatypes
from edgebundle.digest import hash_file, hash_file_pieces, read_bounded, sha256_bytes
from edgebundle.diskspace import disk_full_error, is_disk_full
from edgebundle.documents import Strict, validate_document
from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.ocinames import parse_reference
from edgebundle.root import format_time, load_json_bounded

LOCK_VERSION = 1


# --- the schema (docs/SPEC.md documents it) --------------------------------------------------

class LockedFile(Strict):
    path: str
    digest: str
    size: int


class LockedBundle(Strict):
    name: str
    version: str


class LockedAttached(Strict):
    kind: Literal["signature", "attestation", "sbom", "referrers"]
    subject: str
    tag: str
    digest: str
    mediaType: str
    via: Literal["tag", "api"] = "tag"


class LockedImageDoc(Strict):
    ref: str
    digest: str
    mediaType: str
    platforms: dict[str, str]
    #: Artifacts attached upstream (bundler/attached.py); absent in locks written before them.
    attached: list[LockedAttached] | None = None


class LockedModelFile(LockedFile):
    #: The digest of each 64 MiB piece of a file larger than one piece (edgebundle/digest.py): the
    #: bundle's root pins them, so a site proves a big model file on every core at once.
    pieces: list[str] = []


class LockedModel(Strict):
    name: str
    version: str
    files: list[LockedModelFile]


class LockedChartDependency(Strict):
    name: str
    version: str


class LockedChart(Strict):
    name: str
    chart: str
    version: str
    digest: str
    size: int
    dependencies: list[LockedChartDependency]
    valuesFiles: list[LockedFile]


class LockDocument(Strict):
    lockVersion: int
    spec: str
    bundle: LockedBundle
    created: str
    images: list[LockedImageDoc]
    models: list[LockedModel]
    manifests: list[LockedFile]
    charts: list[LockedChart] = []


class LockMismatchError(EdgebundleError):
    """The lock is missing, stale, or the sources changed since it was written."""

    exit_code = 1


@dataclass(frozen=True)
class LockedImage:
    ref: str
    digest: str
    mediaType: str
    platforms: dict[str, str]  # "linux/amd64" -> manifest digest (for indexes)


def image_ref_by_digest(ref: str, digest: str) -> str:
    """``ref`` pinned to ``digest`` (any tag is kept for the record only)."""
    return ref.split("@", 1)[0] + "@" + digest


def platform_of(desc: dict[str, Any]) -> str | None:
    p = desc.get("platform") or {}
    if not p.get("os") or not p.get("architecture"):
        return None
    s = f"{p['os']}/{p['architecture']}"
    return normalize_platform(s + (f"/{p['variant']}" if p.get("variant") else ""))


def check_platforms(image: ImageSpec, available: list[str]) -> None:
    """The platform rules ``bundle create`` builds by, applied as soon as the image is resolved.

    An index: one platform (only its manifest is carried) or all of them (a partial index cannot
    be pushed intact). A single manifest: its config's platform must be the one asked for.
    """
    wanted = list(image.platforms)
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise UsageError(f"image {image.ref} has no platform {', '.join(missing)} "
                         f"(it has {', '.join(sorted(available)) or 'none'})",
                         hint="fix spec.images[].platforms (linux/arm64 and linux/arm64/v8 are the same)")
    if len(wanted) > 1 and set(wanted) != set(available):
        raise UsageError(f"image {image.ref}: choose one platform or all of {', '.join(sorted(available))} "
                         "(a partial index cannot be pushed intact)")


def resolve_image(image: ImageSpec, registries: Callable[[str], Any]) -> LockedImage:
    """Ask the image's registry what its reference points at now."""
    ref = parse_reference(image.ref)
    reg = registries(ref.registry)
    m = reg.get_manifest(ref.repository, ref.digest or ref.tag)
    platforms: dict[str, str] = {}
    if mediatypes.is_index(m.media_type):
        doc = load_json_bounded(m.data, f"index of {image.ref}")
        for d in doc.get("manifests", []):
            plat = platform_of(d)
            if plat and plat != "unknown/unknown":
                platforms.setdefault(plat, d["digest"])
        check_platforms(image, list(platforms))
    elif image.platforms:
        check_platforms(image, [_config_platform(reg, ref.repository, m.data, image.ref)])
    return LockedImage(image.ref, m.digest, m.media_type, platforms)


def _config_platform(reg: Any, repo: str, manifest: bytes, ref: str) -> str:
    """The platform a single-platform image's config declares (the config is small; bounded)."""
    import io

    config = (load_json_bounded(manifest, f"manifest of {ref}").get("config") or {})
    if not isinstance(config.get("size"), int) or config["size"] > MAX_JSON_BYTES:
        raise EdgebundleError(f"image {ref}: its config descriptor is missing or over {MAX_JSON_BYTES} bytes")
    buf = io.BytesIO()
    reg.download_blob(repo, config["digest"], buf, config["size"])
    cfg = load_json_bounded(buf.getvalue(), f"config of {ref}")
    return normalize_platform(f"{cfg.get('os')}/{cfg.get('architecture')}"
                              + (f"/{cfg['variant']}" if cfg.get("variant") else ""))


def lock_image(image: ImageSpec, registries: Callable[[str], Any]) -> dict[str, Any]:
    """An image's lock entry: what its reference resolves to and what is attached to what it
    carries; an image the spec requires signed is refused now unless it is (bundler/attached.py)."""
    locked = vars(resolve_image(image, registries))
    ref = parse_reference(image.ref)
    reg = registries(ref.registry)
    subjects = carried_subjects(locked, image.platforms)
    locked["attached"] = discover(reg, ref.repository, subjects)
    required_keys_check(
        image.ref, subjects[0], image.signature_keys, image.signature_required, locked["attached"],
        lambda e: load_json_bounded(fetch_document(reg, ref.repository, e)[0], e["tag"]),
        registry_blob_reader(reg, ref.repository))
    return locked


def _file_pins(files: list[tuple[str, Path]], pieces: bool = False) -> list[dict[str, Any]]:
    """Path, digest and size of each file; with ``pieces``, the piece digests of a large one."""
    out = []
    for rel, f in files:
        if pieces:
            d, size, listed = hash_file_pieces(f)
            out.append({"path": rel, "digest": d, "size": size, **({"pieces": listed} if listed else {})})
        else:
            d, size = hash_file(f)
            out.append({"path": rel, "digest": d, "size": size})
    return out


def compute_lock(spec: BundleSpec, registries: Callable[[str], Any],
                 created: str | None = None) -> dict[str, Any]:
    """Resolve every input of ``spec`` now."""
    if created is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
        created = format_time(epoch)
    return {
        "lockVersion": LOCK_VERSION,
        "spec": sha256_bytes(spec.fingerprint_bytes()),
        "bundle": {"name": spec.name, "version": spec.version},
        "created": created,
        "images": [lock_image(i, registries) for i in spec.images],
        "models": [{"name": m.name, "version": m.version, "files": _file_pins(model_files(m), pieces=True)}
                   for m in spec.models],
        "manifests": _file_pins(manifest_files(spec)),
        **({"charts": [charts.lock_entry(c, spec.path.parent, registries) for c in spec.charts]} if spec.charts else {}),
    }


def write_lock(path: Path, lock: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(e, where=path) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written lock


def read_lock(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = read_bounded(path, MAX_JSON_BYTES, "lock file")
    lock = load_json_bounded(data, str(path))
    if not isinstance(lock, dict) or lock.get("lockVersion") != LOCK_VERSION:
        raise UsageError(f"{path} is not a version-{LOCK_VERSION} bundles.lock",
                         hint="regenerate it with: bundle lock SPEC")
    validate_document(LockDocument, lock, what="lock file", where=path,
                      text=data.decode("utf-8", "replace"), doc_hint="docs/SPEC.md")
    return lock


def is_current(lock: dict[str, Any], spec: BundleSpec) -> bool:
    return lock.get("spec") == sha256_bytes(spec.fingerprint_bytes())


def check_sources(lock: dict[str, Any], spec: BundleSpec, registries: Callable[[str], Any]) -> list[str]:
    """Every way the sources differ from the lock (empty when they match)."""
    problems = []
    platforms = {i.ref: i.platforms for i in spec.images}
    for li in lock["images"]:
        now = resolve_image(ImageSpec(li["ref"]), registries)
        if now.digest != li["digest"]:
            problems.append(f"image {li['ref']} now resolves to {now.digest}, locked {li['digest']}")
            continue
        ref = parse_reference(li["ref"])
        attached = discover(registries(ref.registry), ref.repository,
                            carried_subjects(li, platforms.get(li["ref"], ())))
        if attached != (li.get("attached") or []):
            problems.append(f"image {li['ref']}: its attached signatures, attestations or referrers "
                            "changed since the lock")
    locked_models = {(m["name"], m["version"]): m for m in lock["models"]}
    for m in spec.models:
        pins = locked_models.get((m.name, m.version), {}).get("files", [])
        # a lock written before piece digests has none: then they are not compared
        if _file_pins(model_files(m), pieces=any("pieces" in p for p in pins)) != pins:
            problems.append(f"model {m.name} {m.version}: files under {m.path} changed since the lock")
    if _file_pins(manifest_files(spec)) != lock["manifests"]:
        problems.append("manifests changed since the lock")
    locked_charts = {c["name"]: c for c in lock.get("charts", [])}
    for c in spec.charts:
        if charts.lock_entry(c, spec.path.parent, registries) != locked_charts.get(c.release):
            problems.append(f"chart {c.release} ({c.source}) or its values files changed since the lock")
    return problems


def ensure_lock(spec: BundleSpec, registries: Callable[[str], Any], *, locked: bool,
                log: Callable[[str], None] = lambda s: None, path: Path | None = None) -> dict[str, Any]:
    """The lock ``bundle create`` builds from.

    With ``locked``, refuse a missing or stale lock or changed sources. Without it, a missing or
    stale lock is (re)written, keeping its creation time when the spec did not change.
    """
    path = path or spec.lock_path
    lock = read_lock(path)
    if locked:
        if lock is None:
            raise LockMismatchError(f"--locked: {path} does not exist",
                                    hint=f"run: bundle lock {spec.path}")
        if not is_current(lock, spec):
            raise LockMismatchError(f"--locked: {path} does not match {spec.path} (the spec changed)",
                                    hint=f"review the change, then run: bundle lock {spec.path}")
        problems = check_sources(lock, spec, registries)
        if problems:
            raise LockMismatchError("--locked: sources no longer match the lock: " + "; ".join(problems),
                                    hint=f"review the change, then run: bundle lock {spec.path}")
        return lock
    if lock is None or not is_current(lock, spec):
        log(f"{'writing' if lock is None else 'refreshing stale'} {path}")
        lock = compute_lock(spec, registries)
        write_lock(path, lock)
    return lock
