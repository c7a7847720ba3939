"""Rollout gates: read a workload's error rate and p95 latency from the site's Prometheus.

A gate is one PromQL query (its ``$namespace``, ``$workload``, ``$track`` and ``$window`` filled
in), a promote threshold (``value < promote`` passes) and a rollback trigger (``value > rollback``
halts the rollout). Defaults are the field guide's: error rate < 1 % promotes, > 2 % rolls back;
p95 < 1 s promotes, > 2 s rolls back. docs/ROLLOUT.md documents the queries.

Invariants:
- A metric that cannot be read (Prometheus unreachable, an error answer, no sample, NaN, more than
  one series) fails its gate: it is never taken for "good".
- A value between the promote threshold and the rollback trigger holds the rollout (not good
  enough to go on, not bad enough to abort); a gate that is still holding when the step's
  interval ends counts as failed.
- Querying never changes anything; only :func:`query` talks to the network.
"""

from __future__ import annotations

import json
import math
import string
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from edgebundle.errors import EdgebundleError

#: Per-version request counter and latency histogram, as a model server's exporter labels them
#: (relabelled from pod labels: docs/ROLLOUT.md).
DEFAULT_QUERIES = {
    "error-rate": ('sum(rate(http_requests_total{namespace="$namespace",workload="$workload",track="$track",'
                   'status=~"5.."}[$window])) / sum(rate(http_requests_total{namespace="$namespace",'
                   'workload="$workload",track="$track"}[$window]))'),
    "p95-latency": ('histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{'
                    'namespace="$namespace",workload="$workload",track="$track"}[$window])))'),
}
#: (promote below, roll back above), from the field guide.
DEFAULT_THRESHOLDS = {"error-rate": (0.01, 0.02), "p95-latency": (1.0, 2.0)}
UNITS = {"error-rate": "ratio", "p95-latency": "s"}
QUERY_TIMEOUT = 10.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class MetricUnreadable(EdgebundleError):
    """Prometheus did not give one number for a gate's query."""


@dataclass(frozen=True)
class Gate:
    """One metric gate of a rollout, as the plan shows and the approval covers it."""

    name: str
    query: str
    promote: float
    rollback: float

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Gate":
        return cls(str(doc["name"]), str(doc["query"]), float(doc["promote"]), float(doc["rollback"]))

    def describe(self) -> str:
        unit = UNITS.get(self.name, "")
        return f"{self.name} < {_fmt(self.promote, unit)} to promote, > {_fmt(self.rollback, unit)} rolls back"


@dataclass(frozen=True)
class Reading:
    """A gate's value over one window and what it means: ``pass``, ``hold``, ``trigger`` or ``unreadable``."""

    gate: str
    verdict: str
    value: float | None
    threshold: float
    detail: str = ""

    def text(self) -> str:
        unit = UNITS.get(self.gate, "")
        if self.verdict == "unreadable":
            return f"gate {self.gate} could not be read: {self.detail}"
        op = {"pass": "<", "hold": ">=", "trigger": ">"}[self.verdict]
        return f"gate {self.gate} = {_fmt(self.value or 0.0, unit)} ({op} {_fmt(self.threshold, unit)})"

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    return f"{value:.3g} {unit}".strip()


def fill(query: str, *, namespace: str, workload: str, track: str, window: str) -> str:
    """The query with its placeholders filled (``$$`` stays a literal ``$``)."""
    return string.Template(query).safe_substitute(namespace=namespace, workload=workload, track=track,
                                                  window=window)


def query(prometheus: str, promql: str, timeout: float = QUERY_TIMEOUT) -> float:
    """One instant query; exactly one finite sample, or :class:`MetricUnreadable` saying why."""
    url = prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as e:
        detail = e.read(2000).decode("utf-8", "replace")
        raise MetricUnreadable(f"Prometheus at {prometheus} answered {e.code}: {_error_of(detail)}") from None
    except (OSError, ValueError) as e:
        raise MetricUnreadable(f"Prometheus at {prometheus} cannot be reached: {e}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise MetricUnreadable(f"Prometheus at {prometheus} sent more than {MAX_ANSWER_BYTES} bytes")
    try:
        doc = json.loads(body)
        result = doc["data"]["result"] if doc.get("status") == "success" else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise MetricUnreadable(f"Prometheus at {prometheus} sent an answer that is not a query result") from None
    if result is None:
        raise MetricUnreadable(f"Prometheus at {prometheus}: {_error_of(body.decode('utf-8', 'replace'))}")
    if not isinstance(result, list) or not result:
        raise MetricUnreadable("no sample: the workload has no traffic in the window, or the query selects "
                               "no series (check the relabelling in docs/ROLLOUT.md)")
    if len(result) > 1:
        raise MetricUnreadable(f"{len(result)} series, not one: the query must aggregate (sum, histogram_quantile)")
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        raise MetricUnreadable("the sample is not a number") from None
    if not math.isfinite(value):
        raise MetricUnreadable(f"the value is {value} (no requests in the window?)")
    return value


def _error_of(text: str) -> str:
    try:
        doc = json.loads(text)
        return str(doc.get("error") or doc)[:300]
    except ValueError:
        return text[:300]


def read_gate(prometheus: str, gate: Gate, **where: str) -> Reading:
    """Evaluate ``gate`` now over ``where['window']``."""
    try:
        value = query(prometheus, fill(gate.query, **where))
    except MetricUnreadable as e:
        return Reading(gate.name, "unreadable", None, gate.promote, e.message)
    if value > gate.rollback:
        return Reading(gate.name, "trigger", value, gate.rollback)
    if value < gate.promote:
        return Reading(gate.name, "pass", value, gate.promote)
    return Reading(gate.name, "hold", value, gate.promote)
