"""Progressive delivery (docs/ROLLOUT.md): metric gates read from a real Prometheus, canary and
blue-green upgrades on the real control plane.

Prometheus is the Debian ``prometheus`` server (fixture ``prometheus``) scraping stand-in
``/metrics`` endpoints the test sets (fixture ``model_metrics``): no model server runs in the test
cluster (tests/README.md). Intervals are seconds here; the field guide's hours are the defaults.
"""

from __future__ import annotations

import time

import pytest

from installer.metrics import DEFAULT_QUERIES, DEFAULT_THRESHOLDS, Gate, read_gate
from tests.fixtures.prometheus import StandIns

pytestmark = pytest.mark.timeout(300)


def default_gate(name: str) -> Gate:
    promote, rollback = DEFAULT_THRESHOLDS[name]
    return Gate(name, DEFAULT_QUERIES[name], promote, rollback)


def test_gates_read_error_rate_and_p95_from_prometheus(model_metrics: StandIns) -> None:
    good = model_metrics.serve("rag-system", "llm-service", "canary", error_rate=0.0, latency=0.2)
    bad = model_metrics.serve("rag-system", "vector-db", "canary", error_rate=0.05, latency=1.8)
    time.sleep(4)  # a few scrapes
    where = {"namespace": "rag-system", "track": "canary", "window": "3s"}
    err, p95 = default_gate("error-rate"), default_gate("p95-latency")
    ok_err = read_gate(model_metrics.url, err, workload="llm-service", **where)
    ok_p95 = read_gate(model_metrics.url, p95, workload="llm-service", **where)
    assert ok_err.verdict == "pass" and ok_err.value == 0.0, ok_err
    assert ok_p95.verdict == "pass" and 0.1 <= (ok_p95.value or 0) <= 0.25, ok_p95  # bucket (0.1, 0.25]
    bad_err = read_gate(model_metrics.url, err, workload="vector-db", **where)
    assert bad_err.verdict == "trigger" and 0.03 < (bad_err.value or 0) < 0.07, bad_err
    assert "> 2.00%" in bad_err.text()
    hold = read_gate(model_metrics.url, p95, workload="vector-db", **where)  # 1.8 s: between 1 s and 2 s
    assert hold.verdict == "hold" and 1.5 <= (hold.value or 0) <= 2.0, hold
    good.set(latency=2.4)
    time.sleep(4)
    slow = read_gate(model_metrics.url, p95, workload="llm-service", **where)
    assert slow.verdict == "trigger" and (slow.value or 0) > 2.0, slow


def test_an_unreadable_metric_fails_its_gate(model_metrics: StandIns) -> None:
    where = {"namespace": "rag-system", "track": "canary", "window": "3s"}
    none = read_gate(model_metrics.url, default_gate("error-rate"), workload="no-such-workload", **where)
    assert none.verdict == "unreadable" and "no sample" in none.detail, none
    broken = read_gate(model_metrics.url, Gate("error-rate", "sum(rate(", 0.01, 0.02), workload="x", **where)
    assert broken.verdict == "unreadable" and "400" in broken.detail, broken
    gone = read_gate("http://127.0.0.1:9", default_gate("error-rate"), workload="x", **where)
    assert gone.verdict == "unreadable" and "cannot be reached" in gone.detail, gone
