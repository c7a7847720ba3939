"""The bundle spec (``kind: Bundle``): what goes into a bundle. docs/SPEC.md documents it.

Invariant: a parsed :class:`BundleSpec` has absolute, existing paths for every model and manifest
source, and every name it carries is safe to use as a path component.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bundler.boundedyaml import load_bounded
from bundler.digest import read_bounded
from bundler.errors import UsageError
from bundler.root import MODEL_KINDS, canonical_json

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?")


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    version: str
    path: Path  # a file, or a directory meaning every file in it


@dataclass(frozen=True)
class BundleSpec:
    path: Path
    name: str
    version: str
    compatible: str
    description: str
    images: tuple[ImageSpec, ...]
    models: tuple[ModelSpec, ...]
    manifests: tuple[Path, ...]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def lock_path(self) -> Path:
        return self.path.parent / "bundles.lock"

    def fingerprint(self) -> dict[str, Any]:
        """What of the spec the lock depends on (paths relative to the spec file)."""
        base = self.path.parent
        return {
            "name": self.name, "version": self.version, "compatible": self.compatible,
            "images": [{"ref": i.ref, "platforms": list(i.platforms)} for i in self.images],
            "models": [{"name": m.name, "kind": m.kind, "version": m.version,
                        "path": _rel(m.path, base)} for m in self.models],
            "manifests": [_rel(p, base) for p in self.manifests],
        }

    def fingerprint_bytes(self) -> bytes:
        return canonical_json(self.fingerprint())


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base.resolve()).as_posix()
    except ValueError:
        import os
        return os.path.relpath(p, base.resolve()).replace(os.sep, "/")


def _need(d: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise UsageError(f"bundle spec: {where} needs '{key}'")
    v = d[key]
    if not isinstance(v, typ):
        raise UsageError(f"bundle spec: {where}.{key} must be a {typ.__name__}")
    return v


def load_spec(path: Path) -> BundleSpec:
    """Read and check a spec file; paths in it are relative to the file."""
    path = Path(path).resolve()
    try:
        doc = load_bounded(read_bounded(path, 1024 * 1024, "bundle spec"), f"bundle spec {path}")  # bounded, no FIFO
    except FileNotFoundError:
        raise UsageError(f"bundle spec {path} does not exist") from None
    except yaml.YAMLError as e:
        raise UsageError(f"bundle spec {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict) or doc.get("apiVersion") != "edgebundle/v1" or doc.get("kind") != "Bundle":
        raise UsageError(f"{path} is not a bundle spec (want apiVersion: edgebundle/v1, kind: Bundle)")
    meta = _need(doc, "metadata", dict, "document")
    name = str(_need(meta, "name", str, "metadata"))
    if not _NAME.fullmatch(name):
        raise UsageError(f"bundle spec: metadata.name {name!r} must be lower-case letters, digits, '.', '_', '-'")
    version = str(_need(meta, "version", object, "metadata"))  # YAML may read 1.0 as a float
    if not re.fullmatch(r"[0-9A-Za-z.+-]{1,64}", version):
        raise UsageError(f"bundle spec: metadata.version {version!r} is not a valid version")
    compatible = str(_need(meta, "compatible", str, "metadata"))
    spec = _need(doc, "spec", dict, "document")
    base = path.parent

    images = []
    for i, im in enumerate(spec.get("images") or []):
        ref = _need(im, "ref", str, f"spec.images[{i}]")
        plats = im.get("platforms") or []
        if not isinstance(plats, list) or not all(isinstance(p, str) and "/" in p for p in plats):
            raise UsageError(f"bundle spec: spec.images[{i}].platforms must be a list like [linux/amd64]")
        images.append(ImageSpec(ref, tuple(plats)))

    models = []
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(spec.get("models") or []):
        w = f"spec.models[{i}]"
        mname = _need(m, "name", str, w)
        kind = _need(m, "kind", str, w)
        mver = str(_need(m, "version", object, w))
        if kind not in MODEL_KINDS:
            raise UsageError(f"bundle spec: {w}.kind {kind!r} must be one of {', '.join(MODEL_KINDS)}")
        for label, val in (("name", mname), ("version", mver)):
            if not _SAFE.fullmatch(val):
                raise UsageError(f"bundle spec: {w}.{label} {val!r} is not a safe path component")
        if (mname, mver) in seen:
            raise UsageError(f"bundle spec: model {mname} {mver} is listed twice")
        seen.add((mname, mver))
        mpath = (base / _need(m, "path", str, w)).resolve()
        if not mpath.exists():
            raise UsageError(f"bundle spec: {w}.path {mpath} does not exist",
                             hint="run 'make models' or fix the path (relative to the spec file)")
        models.append(ModelSpec(mname, kind, mver, mpath))

    manifests = []
    for i, p in enumerate(spec.get("manifests") or []):
        if not isinstance(p, str):
            raise UsageError(f"bundle spec: spec.manifests[{i}] must be a path")
        mp = (base / p).resolve()
        if not mp.exists():
            raise UsageError(f"bundle spec: spec.manifests[{i}] {mp} does not exist")
        manifests.append(mp)

    return BundleSpec(path, name, version, compatible, str(meta.get("description", "")),
                      tuple(images), tuple(models), tuple(manifests), doc)


def manifest_files(spec: BundleSpec) -> list[tuple[str, Path]]:
    """(bundle-relative path, file) for every YAML manifest the spec names, sorted, no dupes."""
    out: dict[str, Path] = {}
    for src in spec.manifests:
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file() and f.suffix in (".yaml", ".yml"):
                    out[f.relative_to(src).as_posix()] = f
        else:
            out[src.name] = src
    return sorted(out.items())


def model_files(model: ModelSpec) -> list[tuple[str, Path]]:
    """(relative path, file) of every file of a model, sorted; hidden files are skipped."""
    if model.path.is_file():
        return [(model.path.name, model.path)]
    files = []
    for f in sorted(model.path.rglob("*")):
        rel = f.relative_to(model.path)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append((rel.as_posix(), f))
    if not files:
        raise UsageError(f"model {model.name}: directory {model.path} holds no files")
    return files
