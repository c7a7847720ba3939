"""End to end: plan -> approve -> apply -> health -> revisions, against the test API server.

Bundles are real (the real builder, the shipped manifests/), installed for real (images pushed to a
real registry, models staged on a NAS directory) and applied through the real ``installer`` verbs,
which reach the in-process API server with the official client via a kubeconfig.
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
from tests.fixtures.kube import kube_nodes, kube_server  # noqa: F401
from tests.fixtures.registry import RegistryProcess, free_port
from tests.kubeapi import Failure, KubeAPIServer

pytestmark = pytest.mark.timeout(120)

NS = "rag-system"
IMAGES_V1 = (("rag/llm-service:1.0", ("linux/amd64",)), "rag/vector-db:1.0", "rag/orchestrator:1.0",
             "rag/chat-ui:1.0", "rag/data-connector:1.0")
IMAGES_V2 = (("rag/llm-service:1.1", ("linux/amd64",)),) + IMAGES_V1[1:]


@pytest.fixture(autouse=True)
def _static_pv_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bind a claim that names its volume (``spec.volumeName``) to that volume, as Kubernetes does.

    The test controllers provision a new volume for every unbound claim and overwrite
    ``volumeName``; the shipped manifests bind ``rag-models`` statically to ``rag-edge-models``.
    Remove once tests/kubeapi/controllers.py honours ``volumeName`` itself.
    """
    from tests.kubeapi.controllers import Controllers

    provision = getattr(Controllers, "_bind_claim", None)
    if provision is None:
        return

    def bind(self: Any, pvc: dict[str, Any]) -> None:
        spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
        if not spec.get("volumeName"):
            provision(self, pvc)
        elif status.get("phase") != "Bound":
            self.store.put_status(self.rt["persistentvolumeclaims"], pvc["metadata"]["namespace"],
                                  pvc["metadata"]["name"], {
                                      "phase": "Bound", "accessModes": spec.get("accessModes") or [],
                                      "capacity": (spec.get("resources") or {}).get("requests") or {}})

    monkeypatch.setattr(Controllers, "_bind_claim", bind)


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
    v1 = bundle_world.build(version="1.0.0", images=IMAGES_V1, models=_models(bundle_world, "v1.0"))
    manifests = tmp_path_factory.mktemp("manifests-1.1")
    for f in sorted(bundle_world.manifests.glob("*.yaml")):
        text = f.read_text()
        (manifests / f.name).write_text(text.replace("rag/llm-service:1.0", "rag/llm-service:1.1"))
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
    doc: dict[str, Any] = {
        "apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": spec.pop("name", "plant-7")},
        "spec": {"compatible": "rag-edge/x86_64", "trust": {"keys": [str(rag.v1.pub)]},
                 "registry": {"address": rag.registry.host, "plainHTTP": True},
                 "models": {"root": str(rag.nas), "nfs": {"server": "10.0.0.5", "path": "/export/models"}},
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
    kube: KubeAPIServer
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
def world(tmp_path: Path, kube_server: KubeAPIServer, rag: RagBundles) -> World:
    site = write_site(tmp_path, rag)
    install_bundle(site, rag.v1)
    return World(tmp_path, site, kube_server, rag)


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
    assert plan.summary() == {"create": 14, "update": 0, "delete": 0, "unchanged": 0}
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


def _loads_llm_v11(obj: dict[str, Any]) -> Failure | None:
    """The new model version never loads: its pods crash."""
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    for c in spec.get("containers") or []:
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


def test_deadline_exceeded_fails_fast_and_first_revision_has_nothing_to_roll_back_to(world: World) -> None:
    world.kube.fail_workload(NS, "chat-ui", "ImagePullBackOff", deadline_exceeded=True)
    res, plan_path = world.plan(world.rag.v1)
    assert world.approve(plan_path).exit_code == 0
    res = world.apply(plan_path, "--timeout", "60")
    assert res.exit_code == 1, res.output
    assert "Deployment/rag-system/chat-ui is not healthy: ProgressDeadlineExceeded" in res.output
    assert "no earlier healthy revision" in res.output
    assert [(r["revision"], r["status"]) for r in world.revisions()] == [(1, "failed")]


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
    world.kube.put(cm)  # someone edits the cluster after the plan
    res = world.apply(plan_path)
    assert res.exit_code == 1, res.output
    assert "drifted" in res.output and "ConfigMap/rag-system/data-connector-sources changed" in res.output
    assert env(world.deployment("llm-service"), "LLM_MODEL_PATH").startswith("/models/llm/smollm2-135m/v1.0/")
    # a re-plan shows the drifted field, to be put back
    res, plan_path = world.plan(world.rag.v2, "v2b.json", "--json")
    changes = {o["id"]: o["changes"] for o in json.loads(res.output)["objects"]}
    assert changes["|ConfigMap|rag-system|data-connector-sources"] == [
        {"path": 'data["sources.yaml"]', "op": "change"}]


def test_apply_refuses_when_a_revision_was_applied_since(world: World) -> None:
    _, plan_a = world.plan(world.rag.v1, "a.json")
    _, plan_b = world.plan(world.rag.v1, "b.json")
    for p in (plan_a, plan_b):
        assert world.approve(p).exit_code == 0
    assert world.apply(plan_a).exit_code == 0
    res = world.apply(plan_b)
    assert res.exit_code == 1 and "revision 1 was recorded since this plan was made" in res.output


def test_plan_refuses_bundle_not_installed(tmp_path: Path, kube_server: KubeAPIServer, rag: RagBundles) -> None:
    site = write_site(tmp_path, rag)
    res = cli("plan", rag.v1.path, "--site", site, "-o", tmp_path / "p.json")
    assert res.exit_code == 1 and "is not installed at site plant-7" in res.output


@pytest.mark.parametrize("kube_nodes", [[]], indirect=False)
def test_capacity_refusal_names_the_workload(tmp_path: Path, kube_server: KubeAPIServer, rag: RagBundles) -> None:
    kube_server.add_node("small", memory="4Gi", gpus=0)
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
    from bundler.signing import generate_keypair

    ops_key, ops_pub = generate_keypair("ops", tmp_path / "keys")
    other_key, _ = generate_keypair("other", tmp_path / "keys")
    (tmp_path / "k3s").mkdir()
    site = write_site(tmp_path, rag, cluster={"manifestsDir": str(tmp_path / "k3s")},
                      approval={"keys": [str(ops_pub)]})
    install_bundle(site, rag.v1)
    plan = tmp_path / "plan.json"
    assert cli("plan", rag.v1.path, "--site", site, "-o", plan).exit_code == 3
    for key, why in ((None, "is not signed"), (other_key, "not an approver key of this site")):
        assert cli("approve", plan, "--operator", "frank", "--yes", *(["--key", key] if key else [])).exit_code == 0
        res = cli("apply", plan, "--site", site)
        assert res.exit_code == 1 and why in res.output, res.output
        assert not list((tmp_path / "k3s").iterdir())
    assert cli("approve", plan, "--operator", "frank", "--yes", "--key", ops_key).exit_code == 0
    res = cli("apply", plan, "--site", site)
    assert res.exit_code == 0, res.output


def test_install_one_command(tmp_path: Path, kube_server: KubeAPIServer, rag: RagBundles) -> None:
    from tests.fixtures.bundles import run_installer

    site = write_site(tmp_path, rag)
    res = cli("install", rag.v1.path, "--site", site, "--operator", "gina", input="n\n")
    assert res.exit_code == 1 and "was not approved by gina" in res.output
    assert kube_server.get("Deployment", NS, "llm-service") is None
    assert (rag.nas / "llm" / "smollm2-135m" / "v1.0" / "tiny-llm.Q8_0.gguf").is_file()  # staged all the same
    res = run_installer("install", rag.v1.path, "--site", site, "--operator", "gina", "--yes",
                        "--poll-interval", "0.05")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Revision 1: rag-edge 1.0.0 installed" in res.stdout and "healthy" in res.stdout
    [rev] = RevisionStore(StateDir(tmp_path / "state")).all()
    assert rev["status"] == "deployed" and rev["operator"] == "gina"
    res = run_installer("install", rag.v1.path, "--site", site, "--yes", "--operator", "gina")
    assert res.returncode == 0 and "Nothing to change" in res.stdout
