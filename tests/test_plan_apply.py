"""End to end: plan -> approve -> apply -> health -> revisions, against a real kube-apiserver.

Bundles are real (the real builder, the shipped manifests/ in the variant a 1.20 server serves),
installed for real (images pushed to a real registry, models staged on a NAS directory) and applied
through the real ``installer`` verbs, which reach kube-apiserver v1.20.2 (with its controller
manager and scheduler, tests/cluster) with the official client via a kubeconfig.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from installer.approval import make_approval, record_approval
from installer.cli import main
from installer.core import install, open_verified
from installer.destinations.nas import NasDestination
from installer.destinations.registry import RegistryDestination
from installer.plan import load_plan
from installer.render import REVISION_ANNOTATION
from installer.revisions import RevisionStore
from installer.site import load_site
from installer.state import StateDir
from tests.fixtures.bundles import BuiltBundle, BundleWorld, bundle_factory, bundle_world  # noqa: F401
from tests.fixtures.kube import Cluster, Failure, control_plane, kube_cluster, kube_nodes  # noqa: F401
from tests.fixtures.registry import RegistryProcess, free_port
from tests.fixtures.dsse import dsse_verify, forge, load_key, load_pub

pytestmark = pytest.mark.timeout(120)

NS = "rag-system"
IMAGES_V1 = (("rag/llm-service:1.0", ("linux/amd64",)), "rag/vector-db:1.0", "rag/orchestrator:1.0",
             "rag/chat-ui:1.0", "rag/data-connector:1.0")
IMAGES_V2 = (("rag/llm-service:1.1", ("linux/amd64",)),) + IMAGES_V1[1:]


@dataclass(frozen=True)
class RagBundles:
    v1: BuiltBundle
    v2: BuiltBundle  # llm-service image 1.1, LLM model v1.1
    registry: RegistryProcess
    nas: Path


def _models(world: BundleWorld, llm_version: str) -> list[dict[str, Any]]:
    """The shipped manifests' model names, backed by the fixture's small model files."""
    return [{"name": "smollm2-135m", "kind": "llm", "version": llm_version, "path": world.models["tiny-llm"]["path"]},
            {"name": "all-minilm-l6-v2", "kind": "embedding", "version": "v1.0",
             "path": world.models["embedder"]["path"]}]


#: What the shipped manifests use that a 1.20 server serves only in an older version.
APIS_1_20 = {"apiVersion: batch/v1\nkind: CronJob": "apiVersion: batch/v1beta1\nkind: CronJob",
             "apiVersion: policy/v1\nkind: PodDisruptionBudget": "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget"}


def manifests_variant(src: Path, dst: Path, *edits: tuple[str, str]) -> Path:
    """A copy of the manifests in ``src`` for a 1.20 server, with further text ``edits``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.yaml")):
        text = f.read_text()
        for old, new in (*APIS_1_20.items(), *edits):
            text = text.replace(old, new)
        (dst / f.name).write_text(text)
    return dst


def build_with_manifests(world: BundleWorld, manifests: Path, **options: Any) -> BuiltBundle:
    """Build with another manifests directory (the fixture always packs the shipped one)."""
    saved = world.manifests
    world.manifests = manifests
    try:
        return world.build(**options)
    finally:
        world.manifests = saved


@pytest.fixture(scope="module")
def rag(bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RagBundles]:
    """Bundle 1.0.0 (shipped manifests) and 1.1.0 (new llm-service image and LLM version)."""
    from examples.images import build_and_push
    from tests.fixtures.bundles import BULK_LAYER_BYTES

    build_and_push(bundle_world.source.host, version="1.1", layer_bytes=BULK_LAYER_BYTES)
    v1 = build_with_manifests(bundle_world, manifests_variant(bundle_world.manifests,
                                                              tmp_path_factory.mktemp("manifests-1.0")),
                              version="1.0.0", images=IMAGES_V1, models=_models(bundle_world, "v1.0"))
    manifests = manifests_variant(bundle_world.manifests, tmp_path_factory.mktemp("manifests-1.1"),
                                  ("rag/llm-service:1.0", "rag/llm-service:1.1"))
    v2 = build_with_manifests(bundle_world, manifests, version="1.1.0", images=IMAGES_V2,
                              models=_models(bundle_world, "v1.1"))
    work = tmp_path_factory.mktemp("site-registry")
    reg = RegistryProcess(work, free_port())
    reg.start()
    try:
        yield RagBundles(v1, v2, reg, tmp_path_factory.mktemp("nas"))
    finally:
        reg.stop()


def write_site(tmp_path: Path, rag: RagBundles, **spec: Any) -> Path:
    """A site file for the test cluster: NFS for the PV, the kubeconfig the kube fixture wrote."""
    nfs = spec.pop("nfs", {"server": "10.0.0.5", "path": "/export/models"})
    doc: dict[str, Any] = {
        "apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": spec.pop("name", "plant-7")},
        "spec": {"compatible": "rag-edge/x86_64", "trust": {"keys": [str(rag.v1.pub)]},
                 "registry": {"address": rag.registry.host, "plainHTTP": True},
                 "models": {"root": str(rag.nas), "nfs": nfs},
                 "stateDir": str(tmp_path / "state"),
                 "cluster": {"kubeconfig": str(tmp_path / "kubeconfig"), "context": "edge", "namespace": NS},
                 **spec},
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def install_bundle(site_path: Path, bundle: BuiltBundle) -> None:
    """Real load + stage (the registry and NAS are shared per module, so repeats are skips)."""
    site = load_site(site_path)
    state = StateDir(site.state_dir)
    vb = open_verified(bundle.path, site, state=state)
    install(vb, [RegistryDestination.for_site(site), NasDestination(site.models_root)], state)


def cli(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@dataclass
class World:
    """One test's site: a fresh cluster, state dir and site file."""

    tmp: Path
    site: Path
    kube: Cluster
    rag: RagBundles

    @property
    def state(self) -> StateDir:
        return StateDir(self.tmp / "state")

    def plan(self, bundle: BuiltBundle, name: str = "plan.json", *extra: str) -> tuple[Result, Path]:
        out = self.tmp / name
        return cli("plan", bundle.path, "--site", self.site, "-o", out, *extra), out

    def approve(self, plan: Path, operator: str = "alice") -> Result:
        return cli("approve", plan, "--operator", operator, "--yes")

    def apply(self, plan: Path, *extra: str) -> Result:
        return cli("apply", plan, "--site", self.site, "--poll-interval", "0.05", *extra)

    def deployment(self, name: str) -> dict[str, Any]:
        obj = self.kube.get("Deployment", NS, name)
        assert obj is not None, f"Deployment {name} missing"
        return obj

    def revisions(self) -> list[dict[str, Any]]:
        return RevisionStore(self.state).all()


@pytest.fixture
def world(tmp_path: Path, kube_cluster: Cluster, rag: RagBundles) -> World:
    site = write_site(tmp_path, rag)
    install_bundle(site, rag.v1)
    return World(tmp_path, site, kube_cluster, rag)


def container(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]["containers"][0]


def env(dep: dict[str, Any], name: str) -> str:
    return next(e["value"] for e in container(dep)["env"] if e["name"] == name)


def deploy_v1(w: World) -> None:
    res, plan = w.plan(w.rag.v1)
    assert res.exit_code == 3, res.output
    assert w.approve(plan).exit_code == 0
    res = w.apply(plan)
    assert res.exit_code == 0, res.output


# --- the happy path -----------------------------------------------------------------------------

def test_plan_approve_apply_on_empty_cluster(world: World) -> None:
    res, plan_path = world.plan(world.rag.v1)
    assert res.exit_code == 3, res.output  # changes pending
    plan = load_plan(plan_path)
    assert plan.summary() == {"create": 14, "update": 0, "replace": 0, "delete": 0, "unchanged": 0}
    assert "Deployment" in res.output and "create" in res.output
    assert world.kube.get("Deployment", NS, "llm-service") is None  # planning changed nothing

    res = world.apply(plan_path)
    assert res.exit_code != 0 and "has not been approved" in res.output

    res = world.approve(plan_path)
    assert res.exit_code == 0, res.output
    res = world.apply(plan_path)
    assert res.exit_code == 0, res.output
    assert "Revision 1" in res.output and "healthy" in res.output

    dep = world.deployment("llm-service")
    llm = next(i for i in world.rag.v1.root.images if i.repository == "rag/llm-service")
    assert container(dep)["image"] == f"{world.rag.registry.host}/rag/llm-service@{llm.digest}"
    assert env(dep, "LLM_MODEL_PATH") == "/models/llm/smollm2-135m/v1.0/SmolLM2-135M-Instruct.Q4_1.gguf"
    meta = dep["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "edgebundle"
    assert meta["labels"]["edgebundle.dev/bundle"] == "rag-edge"
    assert meta["annotations"][REVISION_ANNOTATION] == "1"
    assert {m["manager"] for m in meta["managedFields"] if m["operation"] == "Apply"} == {"edgebundle"}
    pv = world.kube.get("PersistentVolume", None, "rag-edge-models")
    assert pv is not None and pv["spec"]["nfs"] == {"server": "10.0.0.5", "path": "/export/models"}

    [rev] = world.revisions()
    assert rev["revision"] == 1 and rev["status"] == "deployed" and rev["operator"] == "alice"
    assert rev["planHash"] == plan.hash and rev["bundle"]["root"] == world.rag.v1.root_digest

    res, plan_path = world.plan(world.rag.v1, "again.json")
    assert res.exit_code == 0, res.output  # nothing would change
    assert load_plan(plan_path).summary()["unchanged"] == 14


def test_upgrade_plan_shows_only_what_changes(world: World) -> None:
    deploy_v1(world)
    install_bundle(world.site, world.rag.v2)
    res, plan_path = world.plan(world.rag.v2, "v2.json", "--json")
    assert res.exit_code == 3, res.output
    out = json.loads(res.output)
    changed = {o["id"]: o for o in out["objects"] if o["action"] != "unchanged"}
    assert list(changed) == ["apps|Deployment|rag-system|llm-service"]
    paths = {c["path"] for c in changed["apps|Deployment|rag-system|llm-service"]["changes"]}
    assert paths == {"spec.template.spec.containers[name=llm-server].image",
                     "spec.template.spec.containers[name=llm-server].env[name=LLM_MODEL_PATH].value"}
    images = [i for i in out["images"] if i["op"] != "same"]
    assert [(i["repository"], i["op"]) for i in images] == [("rag/llm-service", "change")]
    assert [(m["name"], m["from"], m["to"]) for m in out["models"] if m["op"] != "same"] == \
        [("smollm2-135m", "v1.0", "v1.1")]

    assert world.approve(plan_path, "bob").exit_code == 0
    res = world.apply(plan_path)
    assert res.exit_code == 0, res.output
    dep = world.deployment("llm-service")
    assert env(dep, "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.1/")
    assert dep["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    assert world.deployment("chat-ui")["metadata"]["annotations"][REVISION_ANNOTATION] == "1"  # untouched
    assert [(r["revision"], r["status"]) for r in world.revisions()] == [(1, "superseded"), (2, "deployed")]


def test_upgrade_of_one_image_and_one_model_plans_exactly_those_two_objects(
        world: World, bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> None:
    """chat-ui's image moves to 1.1 and the LLM to model v1.1: the server's dry run changes exactly
    the two Deployments that use them, and exactly those fields."""
    deploy_v1(world)
    manifests = manifests_variant(bundle_world.manifests, tmp_path_factory.mktemp("manifests-ui"),
                                  ("rag/chat-ui:1.0", "rag/chat-ui:1.1"))
    images = tuple("rag/chat-ui:1.1" if i == "rag/chat-ui:1.0" else i for i in IMAGES_V1)
    upgrade = build_with_manifests(bundle_world, manifests, version="1.0.4", images=images,
                                   models=_models(bundle_world, "v1.1"))
    install_bundle(world.site, upgrade)
    res, plan_path = world.plan(upgrade, "ui.json", "--json")
    assert res.exit_code == 3, res.output
    changed = {o["id"]: {c["path"] for c in o["changes"]} for o in json.loads(res.output)["objects"]
               if o["action"] != "unchanged"}
    assert changed == {
        "apps|Deployment|rag-system|chat-ui": {"spec.template.spec.containers[name=chat-ui].image"},
        "apps|Deployment|rag-system|llm-service": {
            "spec.template.spec.containers[name=llm-server].env[name=LLM_MODEL_PATH].value"}}


def _loads_llm_v11(pod: dict[str, Any]) -> Failure | None:
    """The new model version never loads: its pods crash."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            if e.get("name") == "LLM_MODEL_PATH" and "/v1.1/" in str(e.get("value")):
                return Failure("CrashLoopBackOff", "model failed to load: out of memory", exit_code=137)
    return None


def test_failed_health_rolls_back_automatically(world: World) -> None:
    deploy_v1(world)
    install_bundle(world.site, world.rag.v2)
    world.kube.fail_when(_loads_llm_v11)
    res, plan_path = world.plan(world.rag.v2, "v2.json")
    assert res.exit_code == 3
    assert world.approve(plan_path).exit_code == 0
    started = time.monotonic()
    res = world.apply(plan_path, "--timeout", "2")
    assert res.exit_code == 1, res.output
    assert time.monotonic() - started < 30
    assert "Deployment/rag-system/llm-service is not healthy" in res.output
    assert "CrashLoopBackOff" in res.output and "rolled back to revision 1" in res.output
    revs = world.revisions()
    assert [(r["revision"], r["status"]) for r in revs] == [(1, "superseded"), (2, "failed"), (3, "deployed")]
    assert revs[1]["failedObject"] == "Deployment/rag-system/llm-service"
    assert revs[2]["trigger"] == "auto-rollback" and revs[2]["rollbackOf"] == 1
    dep = world.deployment("llm-service")
    assert env(dep, "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.0/")
    assert container(dep)["image"].endswith(
        next(i.digest for i in world.rag.v1.root.images if i.repository == "rag/llm-service"))
    res = cli("history", "--site", world.site)
    assert "auto-rollback" in res.output and "failed" in res.output


def test_failed_first_revision_removes_what_it_created(world: World) -> None:
    world.kube.fail_pods(NS, "chat-ui-", Failure("InvalidImageName", "couldn't parse image reference"))
    res, plan_path = world.plan(world.rag.v1)
    assert world.approve(plan_path).exit_code == 0
    res = world.apply(plan_path, "--timeout", "60")
    assert res.exit_code == 1, res.output
    assert "Deployment/rag-system/chat-ui is not healthy" in res.output
    assert "container chat-ui: InvalidImageName" in res.output and "pod chat-ui-" in res.output
    assert "the 14 objects this attempt created were removed and are gone" in res.output
    assert world.kube.get("Namespace", None, "rag-system") is None
    assert world.kube.get("PersistentVolume", None, "rag-edge-models") is None
    [rev] = world.revisions()
    assert (rev["revision"], rev["status"], rev["removedCreated"], rev["stillPresent"]) == (1, "failed", 14, [])
    world.kube.heal()
    res, plan_path = world.plan(world.rag.v1, "again.json")  # nothing half-installed stands in the way
    assert res.exit_code == 3 and load_plan(plan_path).summary()["create"] == 14


def test_manual_rollback_and_history(world: World) -> None:
    deploy_v1(world)
    install_bundle(world.site, world.rag.v2)
    res, plan_path = world.plan(world.rag.v2, "v2.json")
    assert world.approve(plan_path).exit_code == 0
    assert world.apply(plan_path).exit_code == 0
    res = cli("rollback", "--site", world.site, "--operator", "carol", input="n\n")
    assert res.exit_code == 1 and "not approved" in res.output
    assert env(world.deployment("llm-service"), "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.1/")
    res = cli("rollback", "--site", world.site, "--operator", "carol", "--poll-interval", "0.05", input="y\n")
    assert res.exit_code == 0, res.output
    assert "llm-service" in res.output and "Revision 3: rolled back to revision 1" in res.output
    assert env(world.deployment("llm-service"), "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.0/")
    res = cli("rollback", "--site", world.site, "--operator", "carol", "--to", "2", "--yes",
              "--poll-interval", "0.05")
    assert res.exit_code == 0, res.output
    assert env(world.deployment("llm-service"), "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.1/")
    out = json.loads(cli("history", "--site", world.site, "--json").output)
    assert [(r["revision"], r["status"], r["trigger"], r["rollbackOf"], r["operator"]) for r in out["revisions"]] == [
        (1, "superseded", "apply", None, "alice"), (2, "superseded", "apply", None, "alice"),
        (3, "superseded", "rollback", 1, "carol"), (4, "deployed", "rollback", 2, "carol")]


# --- refusals -----------------------------------------------------------------------------------

def test_apply_refuses_approval_of_another_plan(world: World) -> None:
    _, plan_a = world.plan(world.rag.v1, "a.json")
    install_bundle(world.site, world.rag.v2)
    _, plan_b = world.plan(world.rag.v2, "b.json")
    assert load_plan(plan_a).hash != load_plan(plan_b).hash
    assert world.approve(plan_a).exit_code == 0
    res = world.apply(plan_b)
    assert res.exit_code == 1
    assert "has not been approved" in res.output and "approvals on file are for other plans" in res.output
    assert world.kube.get("Deployment", NS, "llm-service") is None


def test_apply_refuses_expired_approval(world: World) -> None:
    _, plan_path = world.plan(world.rag.v1)
    plan = load_plan(plan_path)
    record_approval(world.state, make_approval(plan, "alice", ttl=3600, now=time.time() - 2 * 86400))
    res = world.apply(plan_path)
    assert res.exit_code == 1 and "expired at" in res.output
    assert world.kube.get("Deployment", NS, "llm-service") is None


def test_apply_refuses_edited_plan(world: World) -> None:
    _, plan_path = world.plan(world.rag.v1)
    assert world.approve(plan_path).exit_code == 0
    doc = json.loads(plan_path.read_text())
    for entry in doc["objects"]:
        if entry["id"].endswith("|llm-service") and entry["object"]["kind"] == "Deployment":
            entry["object"]["spec"]["replicas"] = 5
    plan_path.write_text(json.dumps(doc))
    res = world.apply(plan_path)
    assert res.exit_code == 1 and "was modified after it was made" in res.output


def test_apply_refuses_after_drift(world: World) -> None:
    deploy_v1(world)
    install_bundle(world.site, world.rag.v2)
    _, plan_path = world.plan(world.rag.v2, "v2.json")
    assert world.approve(plan_path).exit_code == 0
    cm = world.kube.get("ConfigMap", NS, "data-connector-sources")
    assert cm is not None
    cm["data"]["sources.yaml"] = "sources: [{name: manuals}]\n"
    world.kube.put(cm)  # someone edits a field edgebundle set, after the plan
    res = world.apply(plan_path)
    assert res.exit_code == 1, res.output
    assert "drifted" in res.output
    assert "ConfigMap/rag-system/data-connector-sources: data.sources.yaml (kubectl-edit) changed by another " \
           "manager since the plan" in res.output
    assert env(world.deployment("llm-service"), "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.0/")
    # a re-plan shows the drifted field, to be put back, and whose it was
    res, plan_path = world.plan(world.rag.v2, "v2b.json", "--json")
    objects = {o["id"]: o for o in json.loads(res.output)["objects"]}
    cm_entry = objects["|ConfigMap|rag-system|data-connector-sources"]
    assert cm_entry["changes"] == [{"path": 'data["sources.yaml"]', "op": "change"}]
    assert cm_entry["takeover"] == ["data.sources.yaml (kubectl-edit)"]


def test_approval_survives_pod_churn_and_unmanaged_changes(world: World) -> None:
    """Status writes and fields no one manages through edgebundle are not drift."""
    deploy_v1(world)
    install_bundle(world.site, world.rag.v2)
    _, plan_path = world.plan(world.rag.v2, "v2.json")
    assert world.approve(plan_path).exit_code == 0
    [pod] = world.kube.list("Pod", NS, label_selector="app.kubernetes.io/name=chat-ui")
    world.kube.delete("Pod", NS, pod["metadata"]["name"])  # a node drain replaces it
    world.kube.wait_for("a replacement chat-ui pod, ready", lambda: any(
        p["metadata"]["name"] != pod["metadata"]["name"] and (p.get("status") or {}).get("phase") == "Running"
        for p in world.kube.list("Pod", NS, label_selector="app.kubernetes.io/name=chat-ui")))
    world.kube.patch("Deployment", NS, "chat-ui", {"metadata": {"annotations": {"team.example/owner": "ops"}}})
    res = world.apply(plan_path)
    assert res.exit_code == 0, res.output
    assert env(world.deployment("llm-service"), "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.1/")
    assert world.deployment("chat-ui")["metadata"]["annotations"]["team.example/owner"] == "ops"  # not ours


def test_apply_refuses_when_a_revision_was_applied_since(world: World) -> None:
    _, plan_a = world.plan(world.rag.v1, "a.json")
    _, plan_b = world.plan(world.rag.v1, "b.json")
    for p in (plan_a, plan_b):
        assert world.approve(p).exit_code == 0
    assert world.apply(plan_a).exit_code == 0
    res = world.apply(plan_b)
    assert res.exit_code == 1 and "revision 1 was recorded since this plan was made" in res.output


def test_plan_refuses_bundle_not_installed(tmp_path: Path, kube_cluster: Cluster, rag: RagBundles) -> None:
    site = write_site(tmp_path, rag)
    res = cli("plan", rag.v1.path, "--site", site, "-o", tmp_path / "p.json")
    assert res.exit_code == 1 and "is not installed at site plant-7" in res.output


@pytest.mark.parametrize("kube_nodes", [[]], indirect=False)
def test_capacity_refusal_names_the_workload(tmp_path: Path, kube_cluster: Cluster, rag: RagBundles) -> None:
    kube_cluster.add_node("small", memory="4Gi", gpus=0)
    site = write_site(tmp_path, rag)
    install_bundle(site, rag.v1)
    res = cli("plan", rag.v1.path, "--site", site, "-o", tmp_path / "p.json")
    assert res.exit_code == 1, res.output
    assert "Deployment/rag-system/llm-service: pod 1 of 1 requests" in res.output
    assert "nvidia.com/gpu 1" in res.output and not (tmp_path / "p.json").exists()


# --- k3s auto-deploy directory ----------------------------------------------------------------

def test_k3s_manifests_directory(tmp_path: Path, rag: RagBundles) -> None:
    manifests = tmp_path / "k3s-manifests"
    manifests.mkdir()
    site = write_site(tmp_path, rag, cluster={"manifestsDir": str(manifests)})
    install_bundle(site, rag.v1)
    out = tmp_path / "plan.json"
    res = cli("plan", rag.v1.path, "--site", site, "-o", out)
    assert res.exit_code == 3, res.output
    assert "capacity not checked" in res.output
    assert cli("approve", out, "--operator", "dana", "--yes").exit_code == 0
    res = cli("apply", out, "--site", site)
    assert res.exit_code == 0, res.output
    assert "health not watched" in res.output
    [written] = list(manifests.iterdir())
    assert written.name == "edgebundle-plant-7.yaml"
    docs = [d for d in yaml.safe_load_all(written.read_text()) if d]
    assert len(docs) == 14 and docs[0]["kind"] == "Namespace"
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llm-service")
    assert "@sha256:" in container(dep)["image"] and dep["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    res = cli("plan", rag.v1.path, "--site", site, "-o", tmp_path / "again.json")
    assert res.exit_code == 0, res.output  # what the file holds is what the bundle renders
    # an edit to the file is drift
    plan2 = tmp_path / "p2.json"
    install_bundle(site, rag.v2)
    assert cli("plan", rag.v2.path, "--site", site, "-o", plan2).exit_code == 3
    assert cli("approve", plan2, "--operator", "dana", "--yes").exit_code == 0
    written.write_text(written.read_text() + "\n# edited by hand\n")
    res = cli("apply", plan2, "--site", site)
    assert res.exit_code == 1 and "drifted" in res.output and "file:edgebundle-plant-7.yaml changed" in res.output



def test_signed_approvals_when_the_site_requires_them(tmp_path: Path, rag: RagBundles) -> None:
    from edgebundle.signing import generate_keypair

    ops_key, ops_pub = generate_keypair("ops", tmp_path / "keys")
    other_key, _ = generate_keypair("other", tmp_path / "keys")
    (tmp_path / "k3s").mkdir()
    site = write_site(tmp_path, rag, cluster={"manifestsDir": str(tmp_path / "k3s")},
                      approval={"keys": [str(ops_pub)]})
    install_bundle(site, rag.v1)
    plan = tmp_path / "plan.json"
    assert cli("plan", rag.v1.path, "--site", site, "-o", plan).exit_code == 3
    for key, why in ((None, "is not signed"), (other_key, "not signed by an approver key of this site")):
        assert cli("approve", plan, "--operator", "frank", "--yes", *(["--key", key] if key else [])).exit_code == 0
        res = cli("apply", plan, "--site", site)
        assert res.exit_code == 1 and why in res.output, res.output
        assert not list((tmp_path / "k3s").iterdir())
    assert cli("approve", plan, "--operator", "frank", "--yes", "--key", ops_key).exit_code == 0
    approval = next((tmp_path / "state" / "approvals").glob("*.json"))
    signed = approval.read_bytes()
    doc = dsse_verify(signed, load_pub(ops_pub), "application/vnd.edgebundle.approval.v1+json")
    assert doc["operator"] == "frank" and doc["_type"] == "edgebundle.approval"
    # a forged signature under the approver's key id (signed by another key) is refused
    approval.write_bytes(forge(signed, load_key(other_key), load_pub(ops_pub)))
    res = cli("apply", plan, "--site", site)
    assert res.exit_code == 1 and "does not match its payload" in res.output, res.output
    approval.write_bytes(signed)
    res = cli("apply", plan, "--site", site)
    assert res.exit_code == 0, res.output


def test_install_one_command(tmp_path: Path, kube_cluster: Cluster, rag: RagBundles) -> None:
    from tests.fixtures.bundles import run_installer

    site = write_site(tmp_path, rag)
    res = cli("install", rag.v1.path, "--site", site, "--operator", "gina", input="n\n")
    assert res.exit_code == 1 and "was not approved by gina" in res.output
    assert kube_cluster.get("Deployment", NS, "llm-service") is None
    assert (rag.nas / "llm" / "smollm2-135m" / "v1.0" / "tiny-llm.Q8_0.gguf").is_file()  # staged all the same
    res = run_installer("install", rag.v1.path, "--site", site, "--operator", "gina", "--yes",
                        "--poll-interval", "0.05")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Revision 1: rag-edge 1.0.0 installed" in res.stdout and "healthy" in res.stdout
    [rev] = RevisionStore(StateDir(tmp_path / "state")).all()
    assert rev["status"] == "deployed" and rev["operator"] == "gina"
    res = run_installer("install", rag.v1.path, "--site", site, "--yes", "--operator", "gina")
    assert res.returncode == 0 and "Nothing to change" in res.stdout


# --- what the server would refuse is refused at plan, before approval --------------------------

def test_shipped_stack_is_refused_by_a_1_20_server_at_plan(world: World, bundle_world: BundleWorld) -> None:
    """The shipped manifests need Kubernetes 1.25 (batch/v1 CronJob, policy/v1 PDB): a 1.20 server
    does not serve those, and the plan says so before anything can be approved."""
    shipped = build_with_manifests(bundle_world, bundle_world.manifests, version="1.0.5", images=IMAGES_V1,
                                   models=_models(bundle_world, "v1.0"))
    install_bundle(world.site, shipped)
    res, plan_path = world.plan(shipped, "shipped.json")
    assert res.exit_code == 1, res.output
    assert "the cluster would refuse 2 object(s)" in res.output
    assert "CronJob/rag-system/data-connector: this cluster does not serve batch/v1 CronJob " \
           "(it serves CronJob as batch/v1beta1)" in res.output
    assert "PodDisruptionBudget/rag-system/llm-service: this cluster does not serve policy/v1 " \
           "PodDisruptionBudget (it serves PodDisruptionBudget as policy/v1beta1)" in res.output
    assert not plan_path.exists() and world.kube.get("Namespace", None, NS) is None


@pytest.fixture(scope="module")
def rag_broken(bundle_world: BundleWorld, rag: RagBundles, tmp_path_factory: pytest.TempPathFactory) -> BuiltBundle:
    """1.0.1: the vector DB's volume claim template grows (forbidden on a live StatefulSet) and the
    chat UI carries a misspelt field."""
    manifests = manifests_variant(bundle_world.manifests, tmp_path_factory.mktemp("manifests-broken"),
                                  ("storage: 20Gi", "storage: 30Gi"),
                                  ("image: 127.0.0.1:5000/rag/chat-ui:1.0\n          imagePullPolicy: IfNotPresent",
                                   "image: 127.0.0.1:5000/rag/chat-ui:1.0\n          imagePullPolicyy: IfNotPresent"))
    return build_with_manifests(bundle_world, manifests, version="1.0.1", images=IMAGES_V1,
                                models=_models(bundle_world, "v1.0"))


def test_forbidden_immutable_and_unknown_fields_refused_at_plan(world: World, rag_broken: BuiltBundle) -> None:
    deploy_v1(world)
    # the PV's NFS source is immutable: a site whose NAS moved cannot change it in place
    moved = write_site(world.tmp, world.rag, nfs={"server": "10.0.0.6", "path": "/export/models"})
    res = cli("plan", world.rag.v1.path, "--site", moved, "-o", world.tmp / "moved.json")
    assert res.exit_code == 1, res.output
    assert "PersistentVolume/rag-edge-models: the server refuses it" in res.output and "immutable" in res.output
    assert world.kube.get("PersistentVolume", None, "rag-edge-models")["spec"]["nfs"]["server"] == "10.0.0.5"
    write_site(world.tmp, world.rag)  # the NAS is back where it was
    install_bundle(world.site, rag_broken)
    res, plan_path = world.plan(rag_broken, "broken.json")
    assert res.exit_code == 1, res.output
    assert "StatefulSet/rag-system/vector-db: the server refuses it" in res.output
    assert "updates to statefulset spec for fields other than" in res.output
    assert "plan with --replace StatefulSet/rag-system/vector-db" in res.output
    assert "Deployment/rag-system/chat-ui: unknown field spec.template.spec.containers[name=chat-ui]" \
           ".imagePullPolicyy" in res.output
    assert not plan_path.exists()


def test_replace_when_asked_recreates_the_object(world: World, bundle_world: BundleWorld,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    deploy_v1(world)
    manifests = manifests_variant(bundle_world.manifests, tmp_path_factory.mktemp("manifests-vct"),
                                  ("storage: 20Gi", "storage: 30Gi"))
    grown = build_with_manifests(bundle_world, manifests, version="1.0.2", images=IMAGES_V1,
                                 models=_models(bundle_world, "v1.0"))
    install_bundle(world.site, grown)
    before = world.kube.get("StatefulSet", NS, "vector-db")["metadata"]["uid"]
    res, plan_path = world.plan(grown, "grow.json", "--replace", "StatefulSet/rag-system/vector-db")
    assert res.exit_code == 3, res.output
    actions = {e["id"]: e["action"] for e in load_plan(plan_path).entries}
    assert actions.pop("apps|StatefulSet|rag-system|vector-db") == "replace"
    assert set(actions.values()) == {"unchanged"}
    assert "1 replace" in res.output
    assert world.approve(plan_path).exit_code == 0
    res = world.apply(plan_path)
    assert res.exit_code == 0, res.output
    sts = world.kube.get("StatefulSet", NS, "vector-db")
    assert sts["metadata"]["uid"] != before
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "30Gi"


def test_health_names_the_new_pod_and_its_failing_probe(world: World) -> None:
    deploy_v1(world)
    install_bundle(world.site, world.rag.v2)

    def new_llm_unready(pod: dict[str, Any]) -> Failure | None:
        return Failure("Readiness", "HTTP probe failed with statuscode: 503") \
            if any("/v1.1/" in str(e.get("value")) for c in pod["spec"]["containers"] for e in c.get("env") or []) \
            else None

    world.kube.fail_when(new_llm_unready)
    _, plan_path = world.plan(world.rag.v2, "v2.json")
    assert world.approve(plan_path).exit_code == 0
    res = world.apply(plan_path, "--timeout", "4")
    assert res.exit_code == 1, res.output
    assert "Deployment/rag-system/llm-service is not healthy" in res.output
    assert "pod llm-service-" in res.output and "readiness probe GET :8000/ready" in res.output
    assert "Readiness probe failed: HTTP probe failed with statuscode: 503" in res.output
    assert "old replicas pending termination" not in res.output
    assert "rolled back to revision 1" in res.output
