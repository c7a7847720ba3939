"""Render a bundle's Helm charts at the site, with Helm's own engine (docs/HELM.md).

Each chart release is rendered with the bundle's default values overlaid by the site file's
``spec.values.<release>`` (Helm's rule for successive values files), as an install of that
release into its namespace, with ``.Capabilities.KubeVersion`` the target cluster's version. The
documents then take the manifests' path (installer/render.py): images pinned to the site
registry, model paths, policy, plan, approval, apply, health, rollback. There is no Helm release
secret: edgebundle's revisions are the history.

Invariants:
- Offline and pure: the engine never contacts a cluster or the network (``lookup`` returns
  nothing), so the same bundle, site values and Kubernetes version give the same objects.
- The archive and values bytes are re-hashed against the signed root as they are read.
- Chart hooks are refused, except ``test`` hooks, which are left out (nothing here runs them):
  edgebundle applies objects, it does not run Helm's install phases.
- The engine (the optional ``helm`` extra) is imported only here; a bundle without charts never
  needs it.
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Any

from edgebundle import layout
from edgebundle.digest import sha256_bytes
from edgebundle.errors import EdgebundleError, VerificationError
from edgebundle.helmchart import MAX_CHART_BYTES, overlay
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.root import ChartEntry, Root, load_json_bounded
from edgebundle.sources import BundleSource, read_small
from edgebundle.verify import VerifiedBundle
from installer.render import Rendered, RenderError, parse_manifest, read_manifest_docs, render
from installer.site import Site

#: The engine package (the optional extra ``edgebundle[helm]``: helm-python-sdk, Helm v4's Go SDK
#: through ctypes). Loaded on first use, not at import: loading it starts a Go runtime (threads,
#: signal handlers, an 85 MB library) in the installer, which a bundle without charts must not pay.
ENGINE_MODULE = "helm_python"

HOOK_ANNOTATION = "helm.sh/hook"
#: What marks an object a ``helm install`` made (Helm 3 and 4 set both).
HELM_MANAGED_BY = "Helm"
HELM_RELEASE_ANNOTATION = "meta.helm.sh/release-name"


class EngineMissing(EdgebundleError):
    """The bundle has Helm charts and this installation has no Helm engine."""


@functools.cache
def engine() -> Any:
    """The Helm engine module, or a clear error saying how to install it."""
    try:
        return importlib.import_module(ENGINE_MODULE)
    except ImportError:
        raise EngineMissing("rendering Helm charts needs the Helm engine (helm-python-sdk), which is not installed",
                            hint="pip install 'edgebundle[helm]' (the offline installer media carry it "
                                 "when the bundle has charts)") from None


def _render_call(chart: Any, values: dict[str, Any], opts: dict[str, Any]) -> dict[str, str]:
    """The library's ``helm_render`` with every option: ``Chart.render`` does not pass
    ``kube_version`` on (docs/HELM.md), so the documented C entry point is called directly."""
    native = importlib.import_module(ENGINE_MODULE + "._native")
    result: dict[str, str] = json.loads(native.call_string("helm_render", chart._raw(),
                                                           json.dumps(values, default=str), json.dumps(opts)))
    return result


def render_chart(archive: bytes, values: dict[str, Any], release: str, namespace: str,
                 kube_version: str | None) -> list[tuple[str, dict[str, Any]]]:
    """The objects one chart release renders to, as (``chart RELEASE: template``, object)."""
    helm = engine()
    opts: dict[str, Any] = {"name": release, "namespace": namespace, "is_install": True}
    if kube_version:
        opts["kube_version"] = kube_version
    try:
        with helm.Chart.load_archive(archive) as chart:
            rendered = _render_call(chart, values, opts)
            crds = chart.crds
    except helm.HelmError as e:
        raise RenderError(f"chart release {release}: {e}",
                          hint="fix the values (site file spec.values." + release + ") or the chart") from None
    docs: list[tuple[str, dict[str, Any]]] = []
    for crd in crds:
        docs += parse_manifest(f"chart {release}: {crd['filename']}", crd["data"].encode())
    for path in sorted(rendered):
        text = rendered[path]
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        docs += parse_manifest(f"chart {release}: {path}", text.encode())
    out = []
    for where, obj in docs:
        hook = str(((obj.get("metadata") or {}).get("annotations") or {}).get(HOOK_ANNOTATION, ""))
        if hook:
            if {h.strip() for h in hook.split(",")} <= {"test", "test-success"}:
                continue
            raise RenderError(f"{where}: {obj.get('kind')}/{obj['metadata'].get('name')} is a Helm hook ({hook}), "
                              "which edgebundle does not run",
                              hint="ship the hook's work as an ordinary object (a Job in the manifests) "
                                   "or disable it through the chart's values")
        obj["metadata"].setdefault("namespace", namespace)
        out.append((where, obj))
    return out


def _read_pinned(source: BundleSource, digest: str, limit: int, what: str) -> bytes:
    data = read_small(source, layout.blob_path(digest), limit)
    if sha256_bytes(data) != digest:
        raise VerificationError(f"{what} does not match its signed digest {digest}",
                                hint="the bundle changed since it was verified; copy it again")
    return data


def chart_docs(source: BundleSource, root: Root, site: Site,
               kube_version: str | None) -> list[tuple[str, dict[str, Any]]]:
    """Every chart release of the bundle rendered for ``site`` (bundle values + site values)."""
    charts: list[ChartEntry] = root.charts or []
    unknown = sorted(set(site.values) - {c.release for c in charts})
    if unknown:
        raise RenderError(f"site file spec.values names {', '.join(unknown)}, which bundle {root.name} "
                          f"{root.version} has no chart release for",
                          hint="releases in this bundle: " + (", ".join(c.release for c in charts) or "none"))
    docs: list[tuple[str, dict[str, Any]]] = []
    for c in charts:
        archive = _read_pinned(source, c.archive, MAX_CHART_BYTES, f"chart {c.release}")
        defaults = load_json_bounded(_read_pinned(source, c.values, MAX_JSON_BYTES, f"values of {c.release}"),
                                     f"values of {c.release}")
        values = overlay(defaults, site.values.get(c.release) or {})
        docs += render_chart(archive, values, c.release, c.namespace or site.cluster.namespace, kube_version)
    return docs


def render_site(vb: VerifiedBundle, site: Site, kube_version: str | None = None) -> Rendered:
    """The bundle's manifests and rendered charts, rendered for ``site`` (installer/render.py)."""
    return render(vb.root, vb.root_digest,
                  read_manifest_docs(vb.source, vb.root) + chart_docs(vb.source, vb.root, site, kube_version),
                  site)


def helm_owner(live: dict[str, Any] | None) -> str | None:
    """The Helm release a live object belongs to (``helm install`` made it), or None."""
    meta = (live or {}).get("metadata") or {}
    release = (meta.get("annotations") or {}).get(HELM_RELEASE_ANNOTATION)
    if release:
        return str(release)
    if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == HELM_MANAGED_BY:
        return "(unknown release)"
    return None
