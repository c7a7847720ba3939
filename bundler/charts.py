"""Helm charts on the build host: package, pin, values, and the artifact a bundle carries.

A chart comes from a directory, a packaged ``.tgz`` or an OCI registry (``oci://HOST/REPO/CHART``
with its version: the chart layer of the artifact ``helm push`` wrote, through edgebundle's own
registry client, so credentials and plain-HTTP rules are the images'). A chart directory is
packaged by Helm itself (``.helmignore``, ``charts/`` subcharts) and the
archive is rewritten sorted, with fixed times and owners, so the same directory always gives the same
bytes and ``bundles.lock`` can pin it by digest. A packaged ``.tgz`` is pinned as it is.

Invariants:
- A chart whose ``Chart.yaml`` declares a dependency that ``charts/`` does not hold is refused
  (the site has no network to fetch it): ``helm dependency build`` first.
- The bundle's default values are the values files in order, then ``values``, overlaid by Helm's
  rule (edgebundle/helmchart.py); the lock pins each values file.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.spec import ChartSpec
from edgebundle import mediatypes as mt
from edgebundle.boundedyaml import YamlBoundError, load_all_bounded
from edgebundle.digest import hash_file, read_bounded
from edgebundle.errors import UsageError
from edgebundle.helmchart import MAX_CHART_BYTES, overlay
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.registry import Registry, parse_reference
from edgebundle.root import canonical_json, load_json_bounded
from installer import helmrender
from installer.render import containers, pod_spec


@dataclass(frozen=True)
class PackedChart:
    """A chart as the bundle carries it: the archive and what its ``Chart.yaml`` says."""

    archive: Path
    digest: str
    size: int
    metadata: dict[str, Any]
    dependencies: list[dict[str, str]]  # the subcharts the archive holds: name, version


def _normalized(src: Path, out: Path) -> None:
    """Rewrite Helm's archive sorted by name, with fixed times and owners (Helm writes subcharts in
    Go map order, which changes from run to run)."""
    with tarfile.open(src, "r:gz") as tin, open(out, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tout:
        for member in sorted(tin.getmembers(), key=lambda m: m.name):
            member.mtime, member.uid, member.gid, member.uname, member.gname = 0, 0, 0, "", ""
            member.pax_headers = {}
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)


def _missing_dependencies(chart: ChartSpec, archive: Path) -> list[str]:
    engine = helmrender.engine()
    if chart.path is not None and chart.path.is_dir():
        return [f"{d['name']} {d['version']} ({d['status']})" for d in engine.dependency_list(chart.path)
                if d.get("status") not in ("ok", "unpacked")]
    with engine.Chart.load(archive) as loaded:
        present = {d.get("name") for d in loaded.dependencies}
        return [f"{d.get('name')} {d.get('version')} (missing)"
                for d in loaded.metadata.get("dependencies") or [] if d.get("name") not in present]


def _pull(chart: ChartSpec, registries: Callable[[str], Any], dest: Path) -> None:
    """The chart layer of an OCI chart artifact (what ``helm push`` wrote) into ``dest``."""
    ref = parse_reference(chart.oci or "")
    reg = registries(ref.registry)
    manifest = reg.get_manifest(ref.repository, ref.tag or ref.digest, accept=(mt.OCI_MANIFEST,))
    doc = load_json_bounded(manifest.data, f"manifest of {chart.source}")
    layers = [d for d in doc.get("layers") or [] if isinstance(d, dict) and d.get("mediaType") == mt.HELM_CHART_CONTENT]
    if (doc.get("config") or {}).get("mediaType") != mt.HELM_CONFIG or len(layers) != 1:
        raise UsageError(f"chart {chart.release}: {chart.source} is not a Helm chart artifact",
                         hint="point spec.charts[].path at a chart pushed with `helm push`")
    size = layers[0].get("size")
    if not isinstance(size, int) or not 0 < size <= MAX_CHART_BYTES:
        raise UsageError(f"chart {chart.release}: {chart.source}'s chart layer size {size!r} is not "
                         f"between 1 and {MAX_CHART_BYTES} bytes")
    with open(dest, "wb") as f:
        reg.download_blob(ref.repository, layers[0]["digest"], f, size)


def _default_registries(host: str) -> Any:
    return Registry(host)


@contextmanager
def packed(chart: ChartSpec, registries: Callable[[str], Any] = _default_registries) -> Iterator[PackedChart]:
    """The chart's archive (a temporary one for a directory or an OCI chart), refused if a
    dependency is missing."""
    engine = helmrender.engine()
    with tempfile.TemporaryDirectory(prefix="edgebundle-chart-") as tmp:
        try:
            if chart.oci:
                archive = Path(tmp) / "pulled.tgz"
                _pull(chart, registries, archive)
            else:
                archive = Path(str(chart.path))
            missing = _missing_dependencies(chart, archive)  # a directory: before Helm packs it
            if missing:
                raise UsageError(f"chart {chart.release} ({chart.source}): dependencies not in charts/: "
                                 f"{', '.join(missing)}",
                                 hint=f"run on the build host: helm dependency build {chart.source}")
            if archive.is_dir():
                made = Path(engine.package(archive, destination=tmp))
                archive = Path(tmp) / "chart.tgz"
                _normalized(made, archive)
            with engine.Chart.load(archive) as loaded:
                metadata, deps = loaded.metadata, loaded.dependencies
        except engine.HelmError as e:
            raise UsageError(f"chart {chart.release} ({chart.source}): {e}", hint="helm lint the chart") from None
        digest, size = hash_file(archive)
        if size > MAX_CHART_BYTES:
            raise UsageError(f"chart {chart.release}: the packaged chart is {size} bytes, over {MAX_CHART_BYTES}")
        yield PackedChart(archive, digest, size, metadata,
                          sorted(({"name": str(d.get("name")), "version": str(d.get("version"))} for d in deps),
                                 key=lambda d: (d["name"], d["version"])))


def bundle_values(chart: ChartSpec) -> dict[str, Any]:
    """The bundle's default values for this release: the values files in order, then ``values``."""
    values: dict[str, Any] = {}
    for f in chart.values_files:
        try:
            docs = load_all_bounded(read_bounded(f, MAX_JSON_BYTES, f"values file {f}"), f"values file {f}")
        except YamlBoundError as e:
            raise UsageError(e.message, hint=e.hint) from None
        docs = [d for d in docs if d is not None]
        if len(docs) > 1 or (docs and not isinstance(docs[0], dict)):
            raise UsageError(f"values file {f} is not one YAML mapping")
        values = overlay(values, docs[0] if docs else {})
    return overlay(values, chart.values)


def lock_entry(chart: ChartSpec, base: Path, registries: Callable[[str], Any] = _default_registries) -> dict[str, Any]:
    """What ``bundles.lock`` pins of one chart release (values file paths relative to ``base``)."""
    with packed(chart, registries) as p:
        files = []
        for f in chart.values_files:
            digest, size = hash_file(f)
            files.append({"path": os.path.relpath(f, base).replace(os.sep, "/"), "digest": digest, "size": size})
        return {"name": chart.release, "chart": str(p.metadata.get("name")),
                "version": str(p.metadata.get("version")), "digest": p.digest, "size": p.size,
                "dependencies": p.dependencies, "valuesFiles": files}


def render_defaults(chart: ChartSpec, registries: Callable[[str], Any] = _default_registries,
                    kube_version: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The objects the chart renders with the bundle's values (the build-time proof's input)."""
    with packed(chart, registries) as p:
        data = read_bounded(p.archive, MAX_CHART_BYTES, f"chart {chart.release}")
    return helmrender.render_chart(data, bundle_values(chart), chart.release,
                                   chart.namespace or "default", kube_version)


def values_bytes(chart: ChartSpec) -> bytes:
    return canonical_json(bundle_values(chart))


def config_bytes(metadata: dict[str, Any]) -> bytes:
    """The Helm artifact's config: ``Chart.yaml`` as JSON (what ``helm push`` writes)."""
    return canonical_json(metadata)


def artifact_manifest(config: dict[str, Any], chart: dict[str, Any], created: str) -> bytes:
    """The OCI manifest of a chart artifact; ``config`` and ``chart`` are OCI descriptors."""
    return canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config, "layers": [chart],
        "annotations": {"org.opencontainers.image.created": created},
    })


def images_of(docs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every container image the rendered objects run, sorted, once (``--discover-images``)."""
    found = set()
    for _, obj in docs:
        spec = pod_spec(obj)
        for _, c in containers(spec) if spec else []:
            if isinstance(c.get("image"), str):
                found.add(c["image"])
    return sorted(found)
