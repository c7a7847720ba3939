"""Helm charts inside a bundle: names, bounds, values overlay, and the OCI artifact that carries one.

A chart travels as Helm's own OCI artifact (``helm push`` writes the same shape): a manifest whose
config is the chart's ``Chart.yaml`` as JSON (:data:`mediatypes.HELM_CONFIG`) and whose one layer
is the packaged chart (:data:`mediatypes.HELM_CHART_CONTENT`), so Helm and oras can read it from
the bundle's layout or the site registry. The bundle's default values travel beside it as a
canonical-JSON blob the root pins (Helm's artifact has no place for them).

Invariants:
- Values overlay is Helm's own rule for ``-f a.yaml -f b.yaml``: maps merge key by key, the later
  side wins; a ``null`` on the later side deletes the key; lists and scalars are replaced whole.
- A chart archive is read whole only up to :data:`MAX_CHART_BYTES`; values up to the JSON bound.
"""

from __future__ import annotations

import copy
import re
from typing import Any

#: A Helm release name (Helm's own rule: a DNS-1123 subdomain of at most 53 characters).
RELEASE_NAME = re.compile(r"(?=.{1,53}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
#: A Kubernetes namespace name (a DNS-1123 label).
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: Largest packaged chart read into memory (Helm's own loader refuses archives over 100 MiB;
#: real charts are kilobytes, a chart with vendored subcharts a few MiB).
MAX_CHART_BYTES = 32 * 1024 * 1024
#: index.json reference name of a chart artifact: Helm's ``oci://HOST/charts/NAME:VERSION`` shape.
CHART_REF_PREFIX = "charts/"


def overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base`` by Helm's rule for successive values files (a new dict)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_ref_name(chart: str, version: str) -> str:
    return f"{CHART_REF_PREFIX}{chart}:{version}"
