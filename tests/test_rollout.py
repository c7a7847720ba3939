"""Progressive delivery (docs/ROLLOUT.md): metric gates read from a real Prometheus, canary and
blue-green upgrades on the real control plane.

Prometheus is the Debian ``prometheus`` server (fixture ``prometheus``) scraping stand-in
``/metrics`` endpoints the test sets (fixture ``model_metrics``): no model server runs in the test
cluster (tests/README.md). Intervals are seconds here; the field guide's hours are the defaults.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from installer.audit import AuditLog
from installer.metrics import DEFAULT_QUERIES, DEFAULT_THRESHOLDS, Gate, read_gate
from installer.revisions import RevisionStore
from installer.rollout import spec_of
from installer.rolloutspec import RolloutSpecError, replicas_for
from installer.state import StateDir
from tests.cluster.agent import NodeSpec
from tests.fixtures.bundles import INSTALLER, BundleWorld, run_installer
from tests.fixtures.kube import Cluster
from tests.fixtures.prometheus import StandIn, StandIns
from tests.fixtures.registry import RegistryProcess, free_port
from tests.test_plan_apply import (
    IMAGES_V1,
    IMAGES_V2,
    RagBundles,
    _models,
    build_with_manifests,
    cli,
    install_bundle,
    manifests_variant,
    write_site,
)

pytestmark = pytest.mark.timeout(300)


def default_gate(name: str) -> Gate:
    promote, rollback = DEFAULT_THRESHOLDS[name]
    return Gate(name, DEFAULT_QUERIES[name], promote, rollback)


def test_gates_read_error_rate_and_p95_from_prometheus(model_metrics: StandIns) -> None:
    good = model_metrics.serve("rag-system", "llm-service", "canary", error_rate=0.0, latency=0.2)
    model_metrics.serve("rag-system", "vector-db", "canary", error_rate=0.05, latency=1.8)
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


def test_weights_map_to_replica_counts_as_documented() -> None:
    table = {1: [(1, 1), (1, 1), (1, 1)], 2: [(1, 1), (1, 1), (1, 1)], 4: [(1, 3), (1, 3), (2, 2)],
             10: [(1, 9), (3, 7), (5, 5)]}  # docs/ROLLOUT.md, "Weights and replicas"
    for total, want in table.items():
        assert [replicas_for(w, total) for w in (10, 25, 50)] == want, total


def _deployment(replicas: Any = 2, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "llm", "namespace": "rag-system",
                         "annotations": {"edgebundle.dev/rollout": "canary", **annotations}},
            "spec": {"replicas": replicas}}


def test_the_field_guides_schedule_is_the_default() -> None:
    spec = spec_of(_deployment(), "http://127.0.0.1:9090")
    assert spec is not None
    assert [(s["weight"], s["seconds"]) for s in spec["steps"]] == [(10, 3600), (25, 3600), (50, 7200), (100, 0)]
    assert {g["name"]: (g["promote"], g["rollback"]) for g in spec["gates"]} == \
        {"error-rate": (0.01, 0.02), "p95-latency": (1.0, 2.0)}


@pytest.mark.parametrize("annotations, says", [
    ({"edgebundle.dev/canary-steps": "10,50"}, "end at 100"),
    ({"edgebundle.dev/canary-steps": "50,25,100"}, "rise strictly"),
    ({"edgebundle.dev/canary-steps": "ten,100"}, "not a list of percentages"),
    ({"edgebundle.dev/canary-interval": "1 fortnight"}, "not a duration"),
    ({"edgebundle.dev/canary-interval": "1h,1h"}, "2 intervals for 3 steps"),
    ({"edgebundle.dev/gate-error-rate": "0.05,0.01"}, "must not exceed the rollback trigger"),
    ({"edgebundle.dev/gate-error-rate": "low"}, "is not PROMOTE,ROLLBACK"),
    ({"edgebundle.dev/gate-hallucination": "0.1,0.2"}, "unknown gate annotation"),
    ({"edgebundle.dev/rollout": "linear"}, "use one of canary, blue-green"),
    ({"replicas": "4"}, "spec.replicas '4' is not a replica count from 1 to 10000"),
    ({"replicas": 0}, "spec.replicas '0' is not a replica count"),
    ({"replicas": True}, "spec.replicas 'True' is not a replica count"),
])
def test_bad_rollout_annotations_are_refused_naming_them(annotations: dict[str, str], says: str) -> None:
    with pytest.raises(RolloutSpecError) as e:
        spec_of(_deployment(**annotations), "http://127.0.0.1:9090")
    assert says in f"{e.value.message} {e.value.hint}" and "Deployment/rag-system/llm" in e.value.message


# --- canary on the real control plane -------------------------------------------------------------

NS = "rag-system"
STEP_SECONDS = 4
#: llm-service with four replicas, so that the step weights map to distinct replica counts.
CANARY_EDIT = ("    edgebundle.dev/models: smollm2-135m\nspec:\n  replicas: 1\n",
               "    edgebundle.dev/models: smollm2-135m\n    edgebundle.dev/rollout: canary\n"
               f"    edgebundle.dev/canary-interval: {STEP_SECONDS}s\nspec:\n  replicas: 4\n")


@pytest.fixture
def kube_nodes() -> list[NodeSpec]:
    """Two nodes with room for four stable and two canary LLM pods (one GPU each)."""
    return [NodeSpec(f"edge-node-{i}", cpu="32", memory="128Gi", gpus=4) for i in (1, 2)]


BLUE_GREEN_EDIT = ("    edgebundle.dev/models: smollm2-135m\n",
                   "    edgebundle.dev/models: smollm2-135m\n    edgebundle.dev/rollout: blue-green\n")


def rag_pair(world: BundleWorld, tmp: pytest.TempPathFactory, edit: tuple[str, str]) -> Iterator[RagBundles]:
    """Bundle 1.0.0 and 1.1.0 (new llm-service image and model) with the manifests ``edit``ed."""
    from examples.images import build_and_push
    from tests.fixtures.bundles import BULK_LAYER_BYTES

    build_and_push(world.source.host, version="1.1", layer_bytes=BULK_LAYER_BYTES)
    v1 = build_with_manifests(world, manifests_variant(world.manifests, tmp.mktemp("m1"), edit),
                              version="1.0.0", images=IMAGES_V1, models=_models(world, "v1.0"))
    manifests = manifests_variant(world.manifests, tmp.mktemp("m2"), edit,
                                  ("rag/llm-service:1.0", "rag/llm-service:1.1"))
    v2 = build_with_manifests(world, manifests, version="1.1.0", images=IMAGES_V2, models=_models(world, "v1.1"))
    reg = RegistryProcess(tmp.mktemp("site-registry"), free_port())
    reg.start()
    try:
        yield RagBundles(v1, v2, reg, tmp.mktemp("nas"))
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def canary_rag(bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RagBundles]:
    yield from rag_pair(bundle_world, tmp_path_factory, CANARY_EDIT)


@pytest.fixture(scope="module")
def blue_green_rag(bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RagBundles]:
    yield from rag_pair(bundle_world, tmp_path_factory, BLUE_GREEN_EDIT)


@dataclass
class CanarySite:
    tmp: Path
    path: Path
    kube: Cluster
    rag: RagBundles
    canary: StandIn

    @property
    def store(self) -> RevisionStore:
        return RevisionStore(StateDir(self.tmp / "state"))

    def plan_v2(self) -> tuple[str, Path]:
        install_bundle(self.path, self.rag.v2)
        out = self.tmp / "v2.json"
        res = cli("plan", self.rag.v2.path, "--site", self.path, "-o", out)
        assert res.exit_code == 3, res.output
        assert cli("approve", out, "--operator", "bob", "--yes").exit_code == 0
        return res.output, out

    def replicas(self) -> tuple[int | None, int | None, str]:
        """(canary replicas, stable replicas, stable image) as the API server has them."""
        canary = self.kube.get("Deployment", NS, "llm-service-canary")
        stable = self.kube.get("Deployment", NS, "llm-service")
        assert stable is not None
        image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
        return (canary["spec"]["replicas"] if canary else None), stable["spec"]["replicas"], image

    def step(self) -> int | None:
        rec = self.store.get(2)
        return None if rec is None else (rec.get("rollout") or {}).get("step")

    def audit_rollout(self) -> list[dict[str, Any]]:
        lines = (self.tmp / "state" / "audit.log").read_text().splitlines()
        return [json.loads(line)["rollout"] for line in lines if json.loads(line)["command"] == "rollout"]


def deployed_v1(tmp_path: Path, rag: RagBundles, **spec: Any) -> Path:
    """A site file whose cluster runs bundle 1.0.0 as revision 1."""
    path = write_site(tmp_path, rag, **spec)
    install_bundle(path, rag.v1)
    out = tmp_path / "v1.json"
    assert cli("plan", rag.v1.path, "--site", path, "-o", out).exit_code == 3
    assert cli("approve", out, "--operator", "alice", "--yes").exit_code == 0
    res = cli("apply", out, "--site", path, "--poll-interval", "0.05")
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture
def site(tmp_path: Path, kube_cluster: Cluster, canary_rag: RagBundles, model_metrics: StandIns) -> CanarySite:
    """Bundle 1.0.0 deployed as revision 1; the canary's stand-in metrics served and scraped."""
    path = deployed_v1(tmp_path, canary_rag, metrics={"prometheus": model_metrics.url})
    canary = model_metrics.serve(NS, "llm-service", "canary", error_rate=0.0, latency=0.2)
    return CanarySite(tmp_path, path, kube_cluster, canary_rag, canary)


class Watcher:
    """Samples the Deployments' replica counts while a rollout runs; calls ``on_step`` on each new step."""

    def __init__(self, site: CanarySite, on_step: Any = None) -> None:
        self.site, self.on_step = site, on_step or (lambda step: None)
        self.seen: list[tuple[int | None, int | None, str]] = []
        self.steps: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                sample, step = self.site.replicas(), self.site.step()
            except Exception:  # noqa: BLE001 - a record being replaced this instant: sample again
                continue
            if not self.seen or self.seen[-1] != sample:
                self.seen.append(sample)
            if step is not None and (not self.steps or self.steps[-1] != step):
                self.steps.append(step)
                self.on_step(step)


def apply_v2(site: CanarySite, plan: Path) -> Any:
    return cli("apply", plan, "--site", site.path, "--poll-interval", "0.1", "--timeout", "60")


def test_a_good_canary_is_promoted_through_every_step(site: CanarySite) -> None:
    text, plan = site.plan_v2()
    assert ("Rollout: rag-system/llm-service canary: 10% (1 canary + 3 stable pods) for 4s, 25% (1 canary + 3 "
            "stable pods) for 4s, 50% (2 canary + 2 stable pods) for 4s, 100% (promote)") in text, text
    assert "gate error-rate < 1.00% to promote, > 2.00% rolls back" in text
    assert "gate p95-latency < 1 s to promote, > 2 s rolls back" in text
    doc = json.loads(plan.read_text())
    assert [s["weight"] for s in doc["rollouts"][0]["steps"]] == [10, 25, 50, 100]
    v1_image = site.replicas()[2]
    started = time.monotonic()
    with Watcher(site) as w:
        res = apply_v2(site, plan)
    took = time.monotonic() - started
    assert res.exit_code == 0, res.output
    assert took >= 3 * STEP_SECONDS, took  # every step held its interval
    assert w.steps == [0, 1, 2], w.steps
    during = [s for s in w.seen if s[0] is not None]
    assert (1, 3, v1_image) in during and (2, 2, v1_image) in during, w.seen  # the stable kept its template
    assert during.index((1, 3, v1_image)) < during.index((2, 2, v1_image))
    canary, stable, image = site.replicas()
    assert canary is None and stable == 4 and image != v1_image and "llm-service@sha256:" in image
    assert [(r["revision"], r["status"]) for r in site.store.all()] == [(1, "superseded"), (2, "deployed")]
    prog = site.store.get(2)["rollout"]
    assert prog["phase"] == "promoted"
    assert {g["gate"]: g["verdict"] for g in prog["gates"]} == {"error-rate": "pass", "p95-latency": "pass"}
    events = site.audit_rollout()
    assert [(e["event"], e.get("weight")) for e in events if e["event"] in ("step", "gates")] == \
        [("step", 10), ("gates", 10), ("step", 25), ("gates", 25), ("step", 50), ("gates", 50)]
    assert events[-1]["event"] == "promote"
    assert AuditLog(site.tmp / "state").verify().ok
    res = cli("rollout", "status", "--site", site.path)
    assert "revision 2" in res.output and "deployed, rollout promoted" in res.output, res.output

    # going back to a revision that ran healthy is not a trial: no canary, at once
    res = cli("rollback", "--site", site.path, "--operator", "erin", "--yes", "--poll-interval", "0.1")
    assert res.exit_code == 0, res.output
    assert site.replicas() == (None, 4, v1_image)
    assert site.store.get(3)["status"] == "deployed" and site.store.get(3).get("rollout") is None


def test_an_error_rate_trigger_at_25_percent_rolls_back(site: CanarySite) -> None:
    _, plan = site.plan_v2()
    v1 = site.replicas()

    def at(step: int) -> None:
        if step == 1:  # 25 %: the new version starts failing 5 % of its requests
            site.canary.set(error_rate=0.05)

    with Watcher(site, at) as w:
        res = apply_v2(site, plan)
    assert res.exit_code == 1, res.output
    assert "gate error-rate = " in res.output and "(> 2.00%) at 25%" in res.output, res.output
    assert w.steps == [0, 1], w.steps
    assert site.replicas() == (None, 4, v1[2])  # canary gone, stable as it was
    assert site.kube.list("Pod", NS, label_selector="edgebundle.dev/track=canary") == []
    assert [(r["revision"], r["status"]) for r in site.store.all()] == [(1, "deployed"), (2, "rolled-back")]
    halt = site.store.get(2)["rollout"]["haltReading"]
    assert halt["gate"] == "error-rate" and 0.03 < halt["value"] < 0.08 and halt["threshold"] == 0.02
    assert site.audit_rollout()[-1]["event"] == "rolled-back"
    res = cli("history", "--site", site.path)
    assert "rolled-back" in res.output and "error-rate" in res.output, res.output


def test_a_latency_trigger_rolls_back(site: CanarySite) -> None:
    _, plan = site.plan_v2()
    v1 = site.replicas()
    site.canary.set(latency=2.4)
    res = apply_v2(site, plan)
    assert res.exit_code == 1, res.output
    assert "gate p95-latency = " in res.output and "(> 2 s) at 10%" in res.output, res.output
    assert site.replicas() == (None, 4, v1[2])
    assert site.store.get(2)["status"] == "rolled-back" and site.store.get(1)["status"] == "deployed"

    doc = yaml.safe_load(site.path.read_text())  # the same site without a Prometheus cannot plan a canary
    del doc["spec"]["metrics"]
    bare = site.tmp / "no-metrics.yaml"
    bare.write_text(yaml.safe_dump(doc))
    res = cli("plan", site.rag.v2.path, "--site", bare, "-o", site.tmp / "refused.json")
    assert res.exit_code == 1 and "names no Prometheus" in res.output and "spec.metrics.prometheus" in res.output


def test_a_killed_rollout_resumes_from_its_recorded_step(site: CanarySite) -> None:
    _, plan = site.plan_v2()
    v1 = site.replicas()
    killed = run_installer("apply", plan, "--site", site.path, "--poll-interval", "0.1",
                           faultpoint="rollout.step.holding@2")  # killed while holding 25 %
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert site.replicas() == (1, 3, v1[2])  # the canary runs on, nobody drives it
    rec = site.store.get(2)
    assert rec["status"] == "pending" and rec["rollout"]["step"] == 1
    res = cli("rollout", "status", "--site", site.path)
    assert "pending, rollout canary at 25%" in res.output and "rollout resume" in res.output, res.output
    other = cli("apply", plan, "--site", site.path)  # nothing else may start meanwhile
    assert other.exit_code != 0
    with Watcher(site) as w:
        res = cli("rollout", "resume", "--site", site.path, "--operator", "carol", "--poll-interval", "0.1",
                  "--timeout", "60")
    assert res.exit_code == 0, res.output
    assert "Revision 2: deployed" in res.output, res.output
    assert w.steps[0] == 1 and 0 not in w.steps, w.steps  # carried on at 25 %, not from the start
    canary, stable, image = site.replicas()
    assert canary is None and stable == 4 and image != v1[2]
    steps = [(e["weight"], e["resumed"]) for e in site.audit_rollout() if e["event"] == "step"]
    assert steps == [(10, False), (25, False), (25, True), (50, False)], steps


def test_abort_from_another_terminal_stops_a_running_rollout(site: CanarySite) -> None:
    _, plan = site.plan_v2()
    v1 = site.replicas()
    proc = subprocess.Popen([INSTALLER, "apply", str(plan), "--site", str(site.path), "--poll-interval", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while site.step() != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        res = run_installer("rollout", "abort", "--site", site.path, "--operator", "dave", "--poll-interval", "0.1")
        assert res.returncode == 0, res.stderr
        # the abort lands at the step the running installer is in when this process has started
        m = re.search(r"rolled-back \(.*aborted by dave at (25|50)%", res.stdout)
        assert m, res.stdout
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1 and f"aborted by dave at {m[1]}%" in err, err
    assert site.replicas() == (None, 4, v1[2])
    assert [(r["revision"], r["status"]) for r in site.store.all()] == [(1, "deployed"), (2, "rolled-back")]
    assert not (site.tmp / "state" / "rollout-control.json").exists()


# --- blue-green -------------------------------------------------------------------------------------

def selected_pods(kube: Cluster, selector: dict[str, str]) -> dict[str, str]:
    """pod name -> uid of the pods the API server selects with a Service's selector."""
    sel = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in kube.list("Pod", NS, label_selector=sel)
            if not p["metadata"].get("deletionTimestamp")}


def test_blue_green_switches_the_service_and_switches_back_at_once(
        tmp_path: Path, kube_cluster: Cluster, blue_green_rag: RagBundles) -> None:
    path = deployed_v1(tmp_path, blue_green_rag)
    store = RevisionStore(StateDir(tmp_path / "state"))
    blue_selector = kube_cluster.get("Service", NS, "llm-service")["spec"]["selector"]
    blue_pods = selected_pods(kube_cluster, blue_selector)
    assert len(blue_pods) == 1
    v1_image = kube_cluster.get("Deployment", NS, "llm-service")["spec"]["template"]["spec"]["containers"][0]["image"]

    install_bundle(path, blue_green_rag.v2)
    plan = tmp_path / "v2.json"
    res = cli("plan", blue_green_rag.v2.path, "--site", path, "-o", plan)
    assert res.exit_code == 3, res.output
    assert "blue-green: the new template into llm-service-green (1 pods), waited healthy, then Service(s) " \
           "llm-service switched to it; the other side kept with 1 pods" in res.output, res.output
    assert cli("approve", plan, "--operator", "bob", "--yes").exit_code == 0
    res = cli("apply", plan, "--site", path, "--poll-interval", "0.1", "--timeout", "60")
    assert res.exit_code == 0, res.output

    service = kube_cluster.get("Service", NS, "llm-service")
    green_selector = service["spec"]["selector"]
    assert green_selector == {"edgebundle.dev/track": "green", "edgebundle.dev/workload": "llm-service"}
    green = kube_cluster.get("Deployment", NS, "llm-service-green")
    green_image = green["spec"]["template"]["spec"]["containers"][0]["image"]
    assert green_image != v1_image and green["status"].get("readyReplicas") == 1
    green_pods = selected_pods(kube_cluster, green_selector)
    assert len(green_pods) == 1 and not set(green_pods) & set(blue_pods)  # the Service selects green only
    assert selected_pods(kube_cluster, blue_selector) == blue_pods  # blue kept running, never restarted
    rec = store.get(2)
    assert rec["status"] == "deployed" and rec["rollout"]["phase"] == "switched"

    res = cli("plan", blue_green_rag.v2.path, "--site", path, "-o", tmp_path / "again.json")
    assert res.exit_code == 0, res.output  # the bundle that runs: nothing to change

    pulls = blue_green_rag.registry.count()
    started = time.monotonic()
    res = cli("rollback", "--site", path, "--operator", "erin", "--yes", "--poll-interval", "0.05")
    took = time.monotonic() - started
    assert res.exit_code == 0, res.output
    assert kube_cluster.get("Service", NS, "llm-service")["spec"]["selector"] == blue_selector
    assert selected_pods(kube_cluster, blue_selector) == blue_pods  # the same pods take the traffic again
    assert kube_cluster.get("Deployment", NS, "llm-service-green") is None
    assert blue_green_rag.registry.count() == pulls  # nothing reloaded
    assert [(r["revision"], r["status"]) for r in store.all()] == \
        [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    print(f"blue-green: rollback command {took:.2f} s, switch {rec['rollout']['switchSeconds']} s")
    assert took < 10, took
