"""The bundle spec (``kind: Bundle``): what goes into a bundle. docs/SPEC.md documents it.

Invariant: a parsed :class:`BundleSpec` has absolute, existing paths for every model and manifest
source, and every name it carries is safe to use as a path component.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bundler.attached import CosignKey, load_cosign_key
from bundler.secrets import Allowance
from edgebundle.documents import Strict, load_yaml_document, validate_document
from edgebundle.errors import UsageError
from edgebundle.helmchart import NAMESPACE_NAME, RELEASE_NAME
from edgebundle.ocinames import is_tag
from edgebundle.root import BUNDLE_NAME, MODEL_KINDS, PATH_COMPONENT, canonical_json

# --- the schema (docs/SPEC.md lists exactly these fields; tests/test_documents.py keeps them in step)

class SpecMetadata(Strict):
    name: str
    version: str
    compatible: str
    description: str = ""
    #: Kubernetes versions the manifests must be valid for, e.g. ">=1.25" (bundle lint checks them).
    kubernetes: str | None = None


class SpecSignatures(Strict):
    required: bool = True
    keys: list[str] = []


class SpecImage(Strict):
    ref: str
    platforms: list[str] = []
    signatures: SpecSignatures | None = None


class SpecModel(Strict):
    name: str
    kind: Literal[MODEL_KINDS]  # type: ignore[valid-type]
    version: str
    path: str


class SpecSecretAllowance(Strict):
    file: str
    detector: str
    reason: str
    line: int | None = None
    sha1: str | None = None


class SpecSecrets(Strict):
    allow: list[SpecSecretAllowance] = []


class SpecChart(Strict):
    #: the Helm release name (also the key of the site file's ``spec.values``)
    name: str
    #: a chart directory or a packaged ``.tgz``, relative to the spec file, or ``oci://HOST/REPO/CHART``
    path: str
    #: the chart version of an ``oci://`` reference (the artifact's tag)
    version: str | None = None
    #: the release namespace; default: the site's ``spec.cluster.namespace``
    namespace: str | None = None
    #: values files (YAML), overlaid in order, then ``values`` on top: the bundle's defaults
    valuesFiles: list[str] = []
    values: dict[str, Any] = {}


class SpecBody(Strict):
    images: list[SpecImage] | None = None
    models: list[SpecModel] | None = None
    manifests: list[str] | None = None
    charts: list[SpecChart] | None = None
    secrets: SpecSecrets | None = None


class SpecDocument(Strict):
    apiVersion: Literal["edgebundle/v1"]
    kind: Literal["Bundle"]
    metadata: SpecMetadata
    spec: SpecBody


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    platforms: tuple[str, ...] = ()
    #: ``signatures``: a cosign signature must be attached upstream (bundler/attached.py) ...
    signature_required: bool = False
    #: ... and verify under each of these keys.
    signature_keys: tuple[CosignKey, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    version: str
    path: Path  # a file, or a directory meaning every file in it


@dataclass(frozen=True)
class ChartSpec:
    release: str
    path: Path | None  # a chart directory or a .tgz; None for an OCI chart
    namespace: str | None
    values_files: tuple[Path, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    #: ``HOST/REPO/CHART:VERSION`` of a chart in an OCI registry (``oci://`` dropped), else None
    oci: str | None = None

    @property
    def source(self) -> str:
        """Where the chart comes from, for messages and the spec's fingerprint."""
        return f"oci://{self.oci}" if self.oci else str(self.path)


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
    #: ``metadata.kubernetes``: the Kubernetes versions the manifests must be valid for, or None.
    kubernetes: str | None = None
    #: ``spec.secrets.allow``: credentials the author vouches may travel (bundler/secrets.py).
    secrets_allowed: tuple[Allowance, ...] = ()
    #: ``spec.charts``: Helm charts rendered at the site (bundler/charts.py, installer/helmrender.py).
    charts: tuple[ChartSpec, ...] = ()

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
            **({"charts": [{"name": c.release, "path": _rel(c.path, base) if c.path else f"oci://{c.oci}",
                            "namespace": c.namespace,
                            "valuesFiles": [_rel(f, base) for f in c.values_files], "values": c.values}
                           for c in self.charts]} if self.charts else {}),
        }

    def fingerprint_bytes(self) -> bytes:
        return canonical_json(self.fingerprint())


#: Architecture spellings that name the same OCI architecture (as containerd normalizes them).
_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64"}
#: The variant an architecture has when none is written (OCI image-index platform matching).
_DEFAULT_VARIANT = {"arm64": "v8"}


def normalize_platform(platform: str) -> str:
    """``os/arch[/variant]`` in one spelling, so that ``linux/arm64`` equals ``linux/arm64/v8``."""
    os_, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    arch = _ARCH_ALIASES.get(arch, arch)
    variant = variant or _DEFAULT_VARIANT.get(arch, "")
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def _rel(p: Path, base: Path) -> str:
    try:
        return p.relative_to(base.resolve()).as_posix()
    except ValueError:
        import os
        return os.path.relpath(p, base.resolve()).replace(os.sep, "/")


def load_spec(path: Path) -> BundleSpec:
    """Read and check a spec file; paths in it are relative to the file."""
    path = Path(path).resolve()
    data, text = load_yaml_document(path, "bundle spec")
    if not isinstance(data, dict) or data.get("apiVersion") != "edgebundle/v1" or data.get("kind") != "Bundle":
        raise UsageError(f"{path} is not a bundle spec (want apiVersion: edgebundle/v1, kind: Bundle)")
    doc = validate_document(SpecDocument, data, what="bundle spec", where=path, text=text,
                            doc_hint="docs/SPEC.md")
    meta, body, base = doc.metadata, doc.spec, path.parent
    if not BUNDLE_NAME.fullmatch(meta.name):
        raise UsageError(f"bundle spec: metadata.name {meta.name!r} must be lower-case letters, digits, '.', '_', '-'")
    if not re.fullmatch(r"[0-9A-Za-z.+-]{1,64}", meta.version):
        raise UsageError(f"bundle spec: metadata.version {meta.version!r} is not a valid version")
    if meta.kubernetes is not None:
        from bundler.kubeschema import kubernetes_versions

        kubernetes_versions(meta.kubernetes)  # refuses a malformed or unsupported range now

    images = []
    for i, im in enumerate(body.images or []):
        if not all("/" in p for p in im.platforms):
            raise UsageError(f"bundle spec: spec.images[{i}].platforms must be a list like [linux/amd64]")
        sigs = im.signatures
        if sigs is not None and sigs.keys and not sigs.required:
            raise UsageError(f"bundle spec: spec.images[{i}].signatures names keys but says required: false",
                             hint="drop the keys, or the 'required: false'")
        keys = tuple(load_cosign_key((base / k).resolve(), f"spec.images[{i}].signatures.keys[{j}]")
                     for j, k in enumerate(sigs.keys if sigs else []))
        images.append(ImageSpec(im.ref, tuple(dict.fromkeys(normalize_platform(p) for p in im.platforms)),
                                bool(sigs and sigs.required), keys))

    models = []
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(body.models or []):
        w = f"spec.models[{i}]"
        for label, val in (("name", m.name), ("version", m.version)):
            if not PATH_COMPONENT.fullmatch(val):
                raise UsageError(f"bundle spec: {w}.{label} {val!r} is not a safe path component")
        if (m.name, m.version) in seen:
            raise UsageError(f"bundle spec: model {m.name} {m.version} is listed twice")
        seen.add((m.name, m.version))
        mpath = (base / m.path).resolve()
        if not mpath.exists():
            raise UsageError(f"bundle spec: {w}.path {mpath} does not exist",
                             hint="put the model's file(s) there, or fix the path (it is relative to the spec file)")
        models.append(ModelSpec(m.name, m.kind, m.version, mpath))

    manifests = []
    for i, p in enumerate(body.manifests or []):
        mp = (base / p).resolve()
        if not mp.exists():
            raise UsageError(f"bundle spec: spec.manifests[{i}] {mp} does not exist")
        manifests.append(mp)

    charts = _charts(body.charts or [], base)

    allowed = []
    for i, a in enumerate(body.secrets.allow if body.secrets else []):
        if not a.reason.strip():
            raise UsageError(f"bundle spec: spec.secrets.allow[{i}].reason is empty",
                             hint="say why this credential may travel to every site (who revoked or scoped it)")
        allowed.append(Allowance(a.file, a.detector, a.reason, a.line, a.sha1))
    return BundleSpec(path, meta.name, meta.version, meta.compatible, meta.description,
                      tuple(images), tuple(models), tuple(manifests), data, meta.kubernetes, tuple(allowed),
                      charts)


def _charts(charts: list[SpecChart], base: Path) -> tuple[ChartSpec, ...]:
    out: list[ChartSpec] = []
    for i, c in enumerate(charts):
        w = f"spec.charts[{i}]"
        if not RELEASE_NAME.fullmatch(c.name):
            raise UsageError(f"bundle spec: {w}.name {c.name!r} is not a Helm release name",
                             hint="lower-case letters, digits and '-', at most 53 characters")
        if c.name in {x.release for x in out}:
            raise UsageError(f"bundle spec: chart release {c.name!r} is listed twice",
                             hint="give each release its own name")
        if c.namespace is not None and not NAMESPACE_NAME.fullmatch(c.namespace):
            raise UsageError(f"bundle spec: {w}.namespace {c.namespace!r} is not a namespace name")
        oci, path = None, None
        if c.path.startswith("oci://"):
            if not c.version or not is_tag(c.version):
                raise UsageError(f"bundle spec: {w}.path {c.path} needs the chart's version",
                                 hint=f"add {w}.version (the chart version, its tag in the registry)")
            oci = f"{c.path.removeprefix('oci://')}:{c.version}"
        elif c.version is not None:
            raise UsageError(f"bundle spec: {w}.version is only for an oci:// chart",
                             hint="a local chart's version is the one its Chart.yaml says")
        else:
            path = (base / c.path).resolve()
            if not (path.is_dir() and (path / "Chart.yaml").is_file()) and not (path.is_file() and path.suffix == ".tgz"):
                raise UsageError(f"bundle spec: {w}.path {path} is neither a chart directory (with Chart.yaml), "
                                 "a packaged chart (.tgz) nor oci://HOST/REPO/CHART",
                                 hint="fix the path (it is relative to the spec file)")
        files = tuple((base / f).resolve() for f in c.valuesFiles)
        for j, f in enumerate(files):
            if not f.is_file():
                raise UsageError(f"bundle spec: {w}.valuesFiles[{j}] {f} does not exist")
        out.append(ChartSpec(c.name, path, c.namespace, files, c.values, oci))
    return tuple(out)


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
