"""What a workload's rollout annotations ask for (docs/ROLLOUT.md), parsed and checked.

Pure functions over a rendered object: the plan reads them at the site (installer/rollout.py), and
``bundle lint`` reads them on the build host, so a typo in an annotation is refused where it is
cheapest to fix. Nothing here talks to a cluster or a Prometheus.

Invariant: every annotation value is refused with the annotation's name and an example, never
passed on unparsed.
"""

from __future__ import annotations

import math
import re
from typing import Any

from edgebundle.errors import EdgebundleError
from installer import metrics
from installer.render import ObjectKey

ROLLOUT = "edgebundle.dev/rollout"
STEPS = "edgebundle.dev/canary-steps"
INTERVAL = "edgebundle.dev/canary-interval"
GATE_PREFIX = "edgebundle.dev/gate-"  # gate-error-rate: "0.01,0.02", gate-error-rate-query: PROMQL
TRACK = "edgebundle.dev/track"
WORKLOAD = "edgebundle.dev/workload"
BLUE_GREEN = "blue-green"
KEEP = "edgebundle.dev/blue-green-keep-replicas"
SMOKE = "edgebundle.dev/smoke-test"
STRATEGIES = ("canary", BLUE_GREEN)
#: The field guide: 10 % at hour 0, 25 % at hour 1, 50 % at hour 2, 100 % at hour 4.
DEFAULT_STEPS = (10, 25, 50, 100)
DEFAULT_INTERVALS = (3600.0, 3600.0, 7200.0)
#: More replicas than any edge workload has: a bound on what a signed manifest may ask for.
MAX_REPLICAS = 10_000


class RolloutSpecError(EdgebundleError):
    """A workload's rollout annotations cannot be carried out."""


def _seconds(text: str, where: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*", text)
    if not m:
        raise RolloutSpecError(f"{where}: {text!r} is not a duration", hint="write e.g. 30s, 15m or 1h")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]]


def window(seconds: float) -> str:
    """A PromQL range for ``seconds`` (whole seconds, at least one)."""
    return f"{max(1, int(round(seconds)))}s"


def replicas_for(weight: int, total: int) -> tuple[int, int]:
    """(canary, stable) pods for ``weight`` % of ``total``: at least one canary pod, and the stable
    keeps at least one until promotion, so a one-replica workload runs 1 + 1 (50 %) at every step."""
    canary = min(total, max(1, math.ceil(total * weight / 100)))
    return canary, max(1, total - canary)


def _parse_steps(ann: dict[str, str], where: str) -> list[int]:
    raw = ann.get(STEPS)
    if raw is None:
        return list(DEFAULT_STEPS)
    try:
        steps = [int(s) for s in raw.split(",")]
    except ValueError:
        raise RolloutSpecError(f"{where}: {STEPS} {raw!r} is not a list of percentages",
                               hint='write e.g. "10,25,50,100"') from None
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
        raise RolloutSpecError(f"{where}: {STEPS} {raw!r} must rise strictly from above 0 and end at 100",
                               hint='write e.g. "10,25,50,100"')
    return steps


def _parse_intervals(ann: dict[str, str], where: str, n: int) -> list[float]:
    raw = ann.get(INTERVAL)
    if raw is None:
        if n == len(DEFAULT_INTERVALS):
            return list(DEFAULT_INTERVALS)
        return [DEFAULT_INTERVALS[0]] * n
    got = [_seconds(s, f"{where}: {INTERVAL}") for s in raw.split(",")]
    if len(got) == 1:
        got = got * n
    if len(got) != n:
        raise RolloutSpecError(f"{where}: {INTERVAL} lists {len(got)} intervals for {n} steps before 100%",
                               hint="give one interval for all steps, or one per step before the last")
    return got


def _gates(ann: dict[str, str], where: str) -> list[metrics.Gate]:
    known = set(metrics.DEFAULT_QUERIES)
    for key in ann:
        if key.startswith(GATE_PREFIX):
            name = key[len(GATE_PREFIX):].removesuffix("-query")
            if name not in known:
                raise RolloutSpecError(f"{where}: unknown gate annotation {key}",
                                       hint=f"gates are {', '.join(sorted(known))} (docs/ROLLOUT.md)")
    gates = []
    for name in sorted(known):
        promote, rollback = metrics.DEFAULT_THRESHOLDS[name]
        raw = ann.get(f"{GATE_PREFIX}{name}")
        if raw is not None:
            try:
                promote, rollback = (float(v) for v in raw.split(","))
            except ValueError:
                raise RolloutSpecError(f"{where}: {GATE_PREFIX}{name} {raw!r} is not PROMOTE,ROLLBACK",
                                       hint=f'write e.g. "{promote:g},{rollback:g}"') from None
            if not 0 <= promote <= rollback:
                raise RolloutSpecError(f"{where}: {GATE_PREFIX}{name}: the promote threshold {promote:g} must "
                                       f"not exceed the rollback trigger {rollback:g}")
        query = ann.get(f"{GATE_PREFIX}{name}-query", metrics.DEFAULT_QUERIES[name])
        gates.append(metrics.Gate(name, query, promote, rollback))
    return gates


def spec_of(obj: dict[str, Any], prometheus: str | None) -> dict[str, Any] | None:
    """The rollout document for a rendered Deployment, or None when it is not annotated."""
    meta = obj.get("metadata") or {}
    ann = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    strategy = ann.get(ROLLOUT)
    if strategy is None or obj.get("kind") != "Deployment":
        return None
    key = ObjectKey.of(obj)
    where = str(key)
    if strategy not in STRATEGIES:
        raise RolloutSpecError(f"{where}: {ROLLOUT} is {strategy!r}", hint=f"use one of {', '.join(STRATEGIES)}")
    total = (obj.get("spec") or {}).get("replicas", 1)
    if not isinstance(total, int) or isinstance(total, bool) or not 0 < total <= MAX_REPLICAS:
        raise RolloutSpecError(f"{where}: spec.replicas {str(total)[:40]!r} is not a replica count from 1 to "
                               f"{MAX_REPLICAS}", hint="a progressive rollout needs at least one replica")
    base = {"id": key.id, "workload": key.name, "namespace": key.namespace, "strategy": strategy,
            "replicas": total}
    if strategy == BLUE_GREEN:
        raw = ann.get(KEEP, str(total))
        if not raw.isdigit():
            raise RolloutSpecError(f"{where}: {KEEP} {raw!r} is not a replica count", hint=f'write e.g. "{total}"')
        return {**base, "keep": int(raw), "smokeTest": ann.get(SMOKE)}
    if not prometheus:
        raise RolloutSpecError(f"{where} asks for a {strategy} rollout, but the site file names no Prometheus",
                               hint="set spec.metrics.prometheus: URL in the site file (docs/SITE.md)")
    steps = _parse_steps(ann, where)
    intervals = _parse_intervals(ann, where, len(steps) - 1) + [0.0]
    return {
        **base, "prometheus": prometheus,
        "steps": [{"weight": w, "seconds": s, **dict(zip(("canary", "stable"), replicas_for(w, total)))}
                  for w, s in zip(steps, intervals)],
        "gates": [g.to_doc() for g in _gates(ann, where)],
    }
