"""Prove on the build host that a bundle will deploy, before anything is built or written.

``bundle lint`` and the start of ``bundle create`` run the same checks on the spec's manifests,
and on the objects each Helm chart renders with the bundle's default values (bundler/charts.py,
Helm's own engine; a finding names ``chart RELEASE: TEMPLATE``):

1. the site's own rules, by calling them (installer/render.py and installer/policy.py): every
   container image of every workload (init containers too) is an image the spec carries; every
   model a workload names (``edgebundle.dev/models``, ``/models/...`` paths) is one the bundle
   stages; no object is defined twice. The manifests are rendered for a stand-in site whose
   registry is :data:`PREVIEW_REGISTRY`, exactly as a real site renders them;
2. when models are staged, a PersistentVolume mounts the model store through the
   ``NFS_SERVER``/``NFS_PATH`` placeholders (the only way the site's NAS gets in);
3. no plaintext credential in the manifests or model configs unless ``spec.secrets.allow`` vouches
   for it, with a reason (bundler/secrets.py);
4. with ``metadata.kubernetes`` declared, every object is valid for the upstream OpenAPI schema of
   each Kubernetes version in that range (unknown fields, wrong types, unserved apiVersion/kind),
   see bundler/kubeschema.py.

Invariant: read-only; every problem is reported (not only the first), each naming the manifest
file, the object and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler import charts, secrets
from bundler.spec import BundleSpec, ChartSpec, manifest_files, model_files
from edgebundle.digest import read_bounded
from edgebundle.errors import EdgebundleError, UsageError
from edgebundle.ocinames import parse_reference
from edgebundle.root import ImageEntry, ModelEntry, Root

#: The registry address of the stand-in site the manifests are rendered for.
PREVIEW_REGISTRY = "site-registry.lint.invalid"
#: Digest of a spec image whose tag is not locked yet (manifests may still name it by tag).
UNLOCKED = "sha256:" + "0" * 64
#: Stands for the site's Prometheus when rollout annotations are checked (the site file names it).
LINT_PROMETHEUS = "http://prometheus.lint.invalid"


class LintError(UsageError):
    """The bundle would be refused at the site (or by its cluster); nothing was built or written."""


@dataclass
class Finding:
    file: str
    problem: str
    fix: str | None = None

    def text(self) -> str:
        return f"{self.file}: {self.problem}" + (f"\n      fix: {self.fix}" if self.fix else "")


@dataclass
class LintReport:
    files: int = 0
    objects: int = 0
    kubernetes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "objects": self.objects, "kubernetesVersions": self.kubernetes,
                "problems": [vars(f) for f in self.findings]}


def preview_root(spec: BundleSpec, lock: dict[str, Any] | None) -> Root:
    """What the signed root of this spec's bundle will say about images and models."""
    locked = {li["ref"]: li["digest"] for li in (lock or {}).get("images", [])}
    images = []
    for im in spec.images:
        ref = parse_reference(im.ref)
        digest = locked.get(im.ref) or ref.digest or UNLOCKED
        images.append(ImageEntry(ref=im.ref, refName="", repository=ref.repository, tag=ref.tag, digest=digest,
                                 mediaType="", platforms=list(im.platforms), size=0))
    models = [ModelEntry(name=m.name, kind=m.kind, version=m.version, format="", manifest="", files=[])
              for m in spec.models]
    return Root(name=spec.name, version=spec.version, compatible=spec.compatible, created="", files={},
                blobs={}, images=images, models=models, manifests=None)


def _preview_site(spec: BundleSpec) -> Any:
    from installer.render import NFS_PLACEHOLDERS
    from installer.site import ClusterTarget, Site

    return Site(path=None, name="lint", compatible=spec.compatible, trust_keys=(), trust_threshold=1,
                registry_address=PREVIEW_REGISTRY, registry_plain_http=False, models_root=Path("/models"),
                nfs_server=NFS_PLACEHOLDERS["server"], nfs_path=NFS_PLACEHOLDERS["path"],
                state_dir=Path("/nonexistent"), cluster=ClusterTarget())


def read_objects(spec: BundleSpec, report: LintReport) -> list[tuple[str, dict[str, Any]]]:
    from installer.render import MAX_MANIFEST_BYTES, parse_manifest

    docs: list[tuple[str, dict[str, Any]]] = []
    for rel, path in manifest_files(spec):
        report.files += 1
        try:
            docs += parse_manifest(rel, read_bounded(path, MAX_MANIFEST_BYTES, f"manifest {path}", UsageError))
        except EdgebundleError as e:
            report.findings.append(Finding(rel, e.message, e.hint or "fix the YAML"))
    report.objects = len(docs)
    return docs


def _site_rules(spec: BundleSpec, lock: dict[str, Any] | None, docs: list[tuple[str, dict[str, Any]]],
                report: LintReport) -> None:
    """The rules the site applies (render, then policy), object by object so each names its file."""
    from installer import policy
    from installer.render import ObjectKey, Rendered, render

    root, site = preview_root(spec, lock), _preview_site(spec)
    seen: dict[str, str] = {}
    for path, obj in docs:
        checks = (lambda one: policy.check_images(one, root, PREVIEW_REGISTRY), lambda one: policy.check_models(one, root))
        try:
            rendered = render(root, "", [(path, obj)], site)
        except EdgebundleError as e:
            report.findings.append(Finding(path, e.message, e.hint))
            try:  # still check its images: render without the models annotation that stopped it
                rendered = render(root, "", [(path, _without_models_annotation(obj))], site)
            except EdgebundleError:
                continue
            checks = checks[:1]
        key = ObjectKey.of(rendered.objects[0])
        if key.id in seen:
            report.findings.append(Finding(path, f"{key} is defined twice: in {seen[key.id]} and {path}",
                                           "keep one definition (objects are identified by kind, namespace "
                                           "and name)"))
        seen.setdefault(key.id, path)
        for check in checks:
            try:
                check(Rendered(rendered.bundle, rendered.objects))
            except EdgebundleError as e:
                report.findings.append(Finding(path, e.message, e.hint))


def _without_models_annotation(obj: dict[str, Any]) -> dict[str, Any]:
    from installer.render import MODELS_ANNOTATION

    meta = dict(obj.get("metadata") or {})
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k != MODELS_ANNOTATION}
    return {**obj, "metadata": meta}


def _models_volume(spec: BundleSpec, docs: list[tuple[str, dict[str, Any]]], report: LintReport) -> None:
    """Staged models reach workloads only through a PV with the NFS placeholders."""
    from installer.render import NFS_PLACEHOLDERS, ObjectKey

    if not spec.models or not docs:
        return
    wanted = dict(NFS_PLACEHOLDERS)
    found = False
    for path, obj in docs:
        nfs = (obj.get("spec") or {}).get("nfs") if obj.get("kind") == "PersistentVolume" else None
        if not isinstance(nfs, dict):
            continue
        used = {k for k, v in wanted.items() if nfs.get(k) == v}
        if used == set(wanted):
            found = True
        elif used:
            missing = ", ".join(f"spec.nfs.{k}: {v}" for k, v in wanted.items() if k not in used)
            report.findings.append(Finding(path, f"{ObjectKey.of(obj)} uses only some NFS placeholders",
                                           f"write {missing} so the site fills in its NAS"))
    if not found:
        report.findings.append(Finding(
            "(manifests)", f"the bundle stages {len(spec.models)} model(s) but no PersistentVolume mounts the "
            "model store (spec.nfs.server: NFS_SERVER, spec.nfs.path: NFS_PATH)",
            "add a PersistentVolume with those placeholders (manifests/10-models-storage.yaml is an example)"))


def _kubernetes_schema(spec: BundleSpec, docs: list[tuple[str, dict[str, Any]]], report: LintReport) -> None:
    if spec.kubernetes is None:
        return
    try:
        from bundler import kubeschema
        kubeschema.supported_versions()
    except ModuleNotFoundError:
        raise UsageError("metadata.kubernetes needs the Kubernetes schemas, which are not installed",
                         hint="pip install 'edgebundle[build]' (the package kubernetes-validate)") from None
    report.kubernetes = kubeschema.kubernetes_versions(spec.kubernetes)
    from installer.render import ObjectKey

    for path, obj in docs:
        for problem in kubeschema.check_object(obj, report.kubernetes):
            fix = ("use an apiVersion those versions serve (kubectl api-resources lists them)" if " is not served" in
                   problem else "fix the field (kubectl explain names every valid one)")
            report.findings.append(Finding(path, f"{ObjectKey.of(obj)}: {problem}",
                                           fix + ", or narrow metadata.kubernetes to the versions the sites run"))


def read_chart_objects(spec: BundleSpec, report: LintReport,
                       registries: Callable[[str], Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """What each chart renders with the bundle's values, by Helm's engine (bundler/charts.py);
    ``registries`` reaches OCI charts (default: loopback registries over plain HTTP, others TLS)."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for chart in spec.charts:
        report.files += 1
        try:
            docs += charts.render_defaults(chart, *([registries] if registries else []))
        except EdgebundleError as e:
            report.findings.append(Finding(f"chart {chart.release}", e.message, e.hint or "fix the chart or its values"))
    report.objects += len(docs)
    return docs


def lint(spec: BundleSpec, lock: dict[str, Any] | None,
         registries: Callable[[str], Any] | None = None) -> LintReport:
    """Every reason the site or its cluster would refuse this spec's bundle (read-only)."""
    report = LintReport()
    docs = read_objects(spec, report)
    chart_docs = read_chart_objects(spec, report, registries)
    docs += chart_docs
    _site_rules(spec, lock, docs, report)
    _models_volume(spec, docs, report)
    _kubernetes_schema(spec, docs, report)
    _rollouts(docs, report)
    _secrets(spec, report, chart_docs)
    return report


def _secrets(spec: BundleSpec, report: LintReport, chart_docs: list[tuple[str, dict[str, Any]]]) -> None:
    """Plaintext credentials in the manifests, model configs, charts' values files and what the
    charts render with the bundle's values, unless spec.secrets.allow vouches."""
    files = [(f"{m.name}/{rel}", path) for m in spec.models for rel, path in model_files(m)]
    files += [(f"chart {c.release}/{p.name}", p) for c in spec.charts for p in _values_files(c)]
    found = secrets.scan(files, manifests=manifest_files(spec), objects=chart_docs)
    for f in secrets.refused(found, spec.secrets_allowed):
        report.findings.append(Finding(
            f"{f.file}:{f.line}", f"plaintext credential ({f.detector}, value sha1 {f.hashed[:12]}...)",
            "let the site provide it (a Secret created there, env valueFrom.secretKeyRef), or, if it may "
            f"travel, add to spec.secrets.allow: {{file: {f.file}, line: {f.line}, detector: {f.detector}, "
            "reason: ...}"))


def _rollouts(docs: list[tuple[str, dict[str, Any]]], report: LintReport) -> None:
    """Rollout annotations (docs/ROLLOUT.md) the site's plan would refuse: strategy, steps,
    intervals, gates, replicas. The site's Prometheus is the site file's, checked at plan."""
    from installer import rolloutspec

    for rel, obj in docs:
        try:
            rolloutspec.spec_of(obj, prometheus=LINT_PROMETHEUS)
        except EdgebundleError as e:
            report.findings.append(Finding(rel, e.message, e.hint or "fix the annotation (docs/ROLLOUT.md)"))


def _values_files(chart: ChartSpec) -> list[Path]:
    """The values files a chart's bundle values come from: the spec's, and a chart directory's own."""
    own = chart.path / "values.yaml" if chart.path is not None and chart.path.is_dir() else None
    return [*chart.values_files, *([own] if own is not None and own.is_file() else [])]


def check_deployable(spec: BundleSpec, lock: dict[str, Any] | None,
                     registries: Callable[[str], Any] | None = None) -> LintReport:
    """:func:`lint`, refusing (exit 2) when there is any problem."""
    report = lint(spec, lock, registries)
    if report.findings:
        n = len(report.findings)
        raise LintError(f"{spec.path}: {n} problem{'s' if n > 1 else ''} would stop this bundle at the site:\n  "
                        + "\n  ".join(f.text() for f in report.findings),
                        hint="fix them and run: bundle lint " + str(spec.path))
    return report
