"""Rendering, policy, the field diff and health judgement, on the shipped manifests and real bundles."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebundle import layout
from edgebundle.errors import VerificationError
from edgebundle.root import FilePin, ImageEntry, ModelEntry, Root
from edgebundle.parts import open_source
from installer import health
from installer.diff import diff_object
from installer.policy import Node, PolicyError, check_all, check_capacity, check_images, check_models, pod_requests
from installer.render import BUNDLE_LABEL, MANAGED_BY, ObjectKey, RenderError, containers, pod_spec, read_manifest_docs, render, resolve_image
from installer.site import ClusterTarget, Site
from tests.fixtures.bundles import BuiltBundle, bundle_factory, bundle_world, flip_byte  # noqa: F401

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
REGISTRY = "10.1.2.3:5000"
COMPONENTS = ("llm-service", "vector-db", "orchestrator", "chat-ui", "data-connector")


def digest(c: str) -> str:
    return "sha256:" + c * 64


def image(repo: str, tag: str, d: str) -> ImageEntry:
    return ImageEntry(ref=f"127.0.0.1:5000/{repo}:{tag}", refName=f"{repo}:{tag}", repository=repo, tag=tag,
                      digest=d, mediaType="application/vnd.oci.image.manifest.v1+json",
                      platforms=["linux/amd64"], size=1)


def make_root(llm_version: str = "v1.1", images: list[ImageEntry] | None = None,
              models: list[ModelEntry] | None = None) -> Root:
    imgs = images if images is not None else [image(f"rag/{c}", "1.0", digest("0123456789"[i]))
                                              for i, c in enumerate(COMPONENTS)]
    mods = models if models is not None else [
        ModelEntry("smollm2-135m", "llm", llm_version, "gguf", digest("a"), []),
        ModelEntry("all-minilm-l6-v2", "embedding", "v1.0", "safetensors", digest("b"), [])]
    return Root("rag-edge", "1.1.0", "rag-edge/x86_64", "2024-01-01T00:00:00Z",
                {"oci-layout": FilePin(digest("c"), 1)}, {}, imgs, mods, None)


def make_site(nfs: bool = True, namespace: str = "rag-system") -> Site:
    return Site(path=None, name="plant-7", compatible="rag-edge/x86_64", trust_keys=(), trust_threshold=1,
                registry_address=REGISTRY, registry_plain_http=True, models_root=Path("/mnt/nas"),
                nfs_server="10.0.0.5" if nfs else None, nfs_path="/export/models" if nfs else None,
                state_dir=Path("/tmp/unused"), cluster=ClusterTarget(namespace=namespace))


def shipped_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted(MANIFESTS.glob("*.yaml")):
        out.extend((f.name, d) for d in yaml.safe_load_all(f.read_text()) if d)
    return out


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def env_of(obj: dict[str, Any], var: str) -> str:
    spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" \
        else obj["spec"]["template"]["spec"]
    return next(e["value"] for c in spec["containers"] for e in c.get("env", []) if e["name"] == var)


# --- render -------------------------------------------------------------------------------------

def test_render_shipped_manifests() -> None:
    root = make_root()
    r = render(root, digest("f"), shipped_docs(), make_site())
    kinds = [o["kind"] for o in r.objects]
    assert kinds[0] == "Namespace" and kinds.index("PersistentVolume") < kinds.index("PersistentVolumeClaim") \
        < kinds.index("Service") < kinds.index("Deployment")
    llm = find(r.objects, "Deployment", "llm-service")
    assert llm["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REGISTRY}/rag/llm-service@{digest('0')}"
    for obj in r.objects:
        spec = pod_spec(obj)
        for _, c in containers(spec) if spec else ():
            assert c["image"].startswith(f"{REGISTRY}/rag/") and "@sha256:" in c["image"]
        assert obj["metadata"]["labels"][MANAGED_BY] == "edgebundle"
        assert obj["metadata"]["labels"][BUNDLE_LABEL] == "rag-edge"
        assert "namespace" not in obj["metadata"] if obj["kind"] in ("Namespace", "PersistentVolume") \
            else obj["metadata"]["namespace"] == "rag-system"
    # the version segment follows the bundle; the rest of the path is kept
    assert env_of(llm, "LLM_MODEL_PATH") == "/models/llm/smollm2-135m/v1.1/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert env_of(find(r.objects, "CronJob", "data-connector"), "EMBEDDING_MODEL_PATH") == \
        "/models/embeddings/all-minilm-l6-v2/v1.0"
    assert find(r.objects, "PersistentVolume", "rag-edge-models")["spec"]["nfs"] == \
        {"server": "10.0.0.5", "path": "/export/models"}
    assert r.models == {"smollm2-135m": {"kind": "llm", "version": "v1.1"},
                        "all-minilm-l6-v2": {"kind": "embedding", "version": "v1.0"}}
    assert r.images["rag/chat-ui"] == digest("3")
    assert check_all(r, root, REGISTRY, None) == ["capacity not checked: the target has no API access to list nodes"]
    # rendering is pure: the same inputs give the same objects, the inputs are untouched
    docs = shipped_docs()
    before = copy.deepcopy(docs)
    assert render(root, digest("f"), docs, make_site()).objects == r.objects and docs == before


def test_resolve_image_by_repository_and_tag_or_digest() -> None:
    ims = [image("rag/llm-service", "1.0", digest("1")), image("library/nginx", "1.25", digest("2"))]
    assert resolve_image("127.0.0.1:5000/rag/llm-service:1.0", ims) is ims[0]
    assert resolve_image("registry.example/rag/llm-service:1.0", ims) is ims[0]  # the host is replaced
    assert resolve_image(f"rag/llm-service@{digest('1')}", ims) is ims[0]
    assert resolve_image("nginx:1.25", ims) is ims[1]
    assert resolve_image("rag/llm-service:1.1", ims) is None
    assert resolve_image(f"rag/llm-service@{digest('9')}", ims) is None
    assert resolve_image("rag/llm-service", ims) is None  # means :latest
    assert resolve_image("NOT A REF", ims) is None


def test_namespace_defaults_to_site_namespace_and_cluster_scope_is_respected() -> None:
    docs = [("a.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            ("a.yaml", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": {"name": "r", "namespace": "ignored"}}),
            ("crd.yaml", {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                          "metadata": {"name": "widgets.example.com"},
                          "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}}),
            ("w.yaml", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
            ("g.yaml", {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}})]
    r = render(make_root(), digest("f"), docs, make_site(namespace="edge-ai"))
    keys = [str(ObjectKey.of(o)) for o in r.objects]
    assert keys == ["CustomResourceDefinition/widgets.example.com", "ClusterRole/r", "ConfigMap/edge-ai/c",
                    "Widget/w", "Gadget/edge-ai/g"]


@pytest.mark.parametrize("mutate, message", [
    (lambda docs: docs.append(docs[-1]), "is defined twice"),
    (lambda docs: find([d for _, d in docs], "Deployment", "llm-service")["metadata"]["annotations"].update(
        {"edgebundle.dev/models": "smollm2-135m,llama-70b"}), "loads model 'llama-70b'"),
    (lambda docs: find([d for _, d in docs], "Deployment", "orchestrator")["spec"]["template"]["spec"]
     ["containers"][0]["env"].append({"name": "X", "value": "/models/llm/all-minilm-l6-v2/v1.0"}),
     "is not of the kind stored under /models/llm"),
])
def test_render_refusals(mutate: Callable[[list[Any]], Any], message: str) -> None:
    docs = shipped_docs()
    mutate(docs)
    with pytest.raises(RenderError, match=message):
        render(make_root(), digest("f"), docs, make_site())


def test_nfs_placeholders_need_the_site_nfs() -> None:
    with pytest.raises(RenderError, match="PersistentVolume/rag-edge-models .* needs the site's NFS server"):
        render(make_root(), digest("f"), shipped_docs(), make_site(nfs=False))


def test_manifests_are_read_from_the_bundle_and_rechecked(bundle_factory: Callable[..., BuiltBundle],
                                                          tmp_path: Path) -> None:
    built = bundle_factory(out_format="dir").copy(tmp_path)
    source = open_source(built.path)
    docs = read_manifest_docs(source, built.root)
    assert [str(ObjectKey.of(d)) for _, d in docs] == [str(ObjectKey.of(d)) for _, d in shipped_docs()]
    mf = built.root.manifests.files[0]  # type: ignore[union-attr]
    flip_byte(built.path, layout.blob_path(mf.digest))
    with pytest.raises(VerificationError, match=f"manifest {mf.path} does not match its signed digest"):
        read_manifest_docs(open_source(built.path), built.root)


# --- policy -------------------------------------------------------------------------------------

def test_unapproved_image_is_refused_naming_the_object() -> None:
    root = make_root(images=[image(f"rag/{c}", "1.0", digest("1")) for c in COMPONENTS if c != "chat-ui"])
    r = render(root, digest("f"), shipped_docs(), make_site())
    with pytest.raises(PolicyError, match=r"Deployment/rag-system/chat-ui container 'chat-ui' uses image "
                                          r"'127.0.0.1:5000/rag/chat-ui:1.0', which bundle rag-edge 1.1.0 does not carry"):
        check_images(r, root, REGISTRY)
    sneaky = render(make_root(), digest("f"), shipped_docs(), make_site())
    find(sneaky.objects, "Deployment", "chat-ui")["spec"]["template"]["spec"]["containers"][0]["image"] = \
        f"{REGISTRY}/rag/chat-ui@{digest('e')}"  # right registry, unknown digest
    with pytest.raises(PolicyError, match="Deployment/rag-system/chat-ui"):
        check_images(sneaky, make_root(), REGISTRY)


def test_model_path_outside_the_bundle_is_refused() -> None:
    docs = shipped_docs()
    dep = find([d for _, d in docs], "Deployment", "chat-ui")
    dep["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "LLM_MODEL_PATH", "value": "/models/llm/smollm2-135m/v0.9/x.gguf"})  # not in the annotation
    r = render(make_root(), digest("f"), docs, make_site())
    with pytest.raises(PolicyError, match="Deployment/rag-system/chat-ui container 'chat-ui' env LLM_MODEL_PATH "
                                          "points at /models/llm/smollm2-135m/v0.9/x.gguf"):
        check_models(r, make_root())


def test_capacity_fits_and_refusals() -> None:
    objects = render(make_root(), digest("f"), shipped_docs(), make_site()).objects
    gpu_node = Node("gpu-1", {"memory": "8Gi", "nvidia.com/gpu": "1"},
                    taints=({"key": "nvidia.com/gpu", "effect": "NoSchedule"},))
    check_capacity(objects, [gpu_node, Node("cpu-1", {"memory": "5Gi"})])  # only the LLM tolerates the taint
    with pytest.raises(PolicyError, match="StatefulSet/rag-system/vector-db: pod 1 of 1 requests memory 2.0 GiB"):
        check_capacity(objects, [gpu_node])
    with pytest.raises(PolicyError, match=r"Deployment/rag-system/llm-service: pod 1 of 1 requests memory 6\.0 GiB, "
                                          r"nvidia.com/gpu 1, which does not fit"):
        check_capacity(objects, [Node("cpu-1", {"memory": "64Gi"})])
    with pytest.raises(PolicyError, match="Deployment/rag-system/orchestrator: pod 2 of 2"):
        check_capacity(objects, [Node("gpu-1", {"memory": "9.5Gi", "nvidia.com/gpu": "1"})])
    # a taint the pod does not tolerate, an unschedulable node: no candidates
    tainted = Node("t", {"memory": "64Gi", "nvidia.com/gpu": "4"}, taints=({"key": "dedicated", "effect": "NoSchedule"},))
    with pytest.raises(PolicyError, match="no schedulable node matches"):
        check_capacity(objects, [tainted, Node("u", {"memory": "64Gi"}, schedulable=False)])
    with pytest.raises(PolicyError, match="the cluster has no nodes"):
        check_capacity(objects, [])


def test_pod_requests_count_limits_and_init_containers() -> None:
    spec = {"initContainers": [{"resources": {"requests": {"memory": "3Gi"}}}],
            "containers": [{"resources": {"limits": {"memory": "1Gi", "nvidia.com/gpu": "2"}}},
                           {"resources": {"requests": {"memory": "512Mi", "cpu": "1"}}}]}
    req = pod_requests(spec)
    assert req == {"memory": 3 * 2**30, "nvidia.com/gpu": 2}  # cpu is not checked


def test_daemonset_needs_room_on_every_eligible_node() -> None:
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "x"},
          "spec": {"template": {"spec": {"nodeSelector": {"gpu": "yes"},
                                         "containers": [{"resources": {"requests": {"memory": "2Gi"}}}]}}}}
    nodes = [Node("a", {"memory": "4Gi"}, labels={"gpu": "yes"}), Node("b", {"memory": "1Gi"}, labels={"gpu": "no"})]
    check_capacity([ds], nodes)
    nodes.append(Node("c", {"memory": "1Gi"}, labels={"gpu": "yes"}))
    with pytest.raises(PolicyError, match="DaemonSet/x/agent"):
        check_capacity([ds], nodes)


# --- the field diff -----------------------------------------------------------------------------

DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n", "labels": {"a": "1"}},
          "spec": {"replicas": 1, "template": {"spec": {"containers": [
              {"name": "app", "image": "r/app@" + digest("1"), "env": [{"name": "A", "value": "1"}],
               "resources": {"requests": {"memory": "1Gi", "cpu": "500m"}}}]}}}}


def live_of(desired: dict[str, Any]) -> dict[str, Any]:
    """What a server returns: defaults, status and bookkeeping added, quantities normalised."""
    live = copy.deepcopy(desired)
    live["metadata"].update({"uid": "u", "resourceVersion": "7", "generation": 2, "creationTimestamp": "t",
                             "managedFields": [{"manager": "edgebundle"}],
                             "annotations": {"deployment.kubernetes.io/revision": "2", "edgebundle.dev/revision": "1"}})
    live["spec"].update({"strategy": {"type": "RollingUpdate"}, "revisionHistoryLimit": 10})
    c = live["spec"]["template"]["spec"]["containers"][0]
    c.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"})
    c["resources"]["requests"] = {"memory": "1073741824", "cpu": "0.5"}
    live["status"] = {"replicas": 1}
    return live


def test_diff_ignores_server_fields_and_compares_quantities_by_value() -> None:
    assert diff_object(DEPLOY, live_of(DEPLOY), DEPLOY) == []


def test_diff_reports_changed_added_and_removed_fields() -> None:
    new = copy.deepcopy(DEPLOY)
    c = new["spec"]["template"]["spec"]["containers"][0]
    c["image"] = "r/app@" + digest("2")
    c["env"] = [{"name": "B", "value": "2"}]
    new["metadata"]["labels"] = {}
    new["spec"]["replicas"] = 2
    got = diff_object(new, live_of(DEPLOY), DEPLOY)
    assert {(d["op"], d["path"]) for d in got} == {
        ("change", "spec.replicas"),
        ("change", "spec.template.spec.containers[name=app].image"),
        ("add", "spec.template.spec.containers[name=app].env[name=B]"),
        ("remove", "spec.template.spec.containers[name=app].env[name=A]"),
        ("remove", "metadata.labels.a"),
    }


def test_diff_positional_lists_and_keys_needing_quotes() -> None:
    a = {"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"app.kubernetes.io/name": "x"}},
         "data": {"f.yaml": "1"}, "spec": {"args": ["a", "b"]}}
    b = copy.deepcopy(a)
    b["metadata"]["labels"]["app.kubernetes.io/name"] = "y"
    b["spec"]["args"] = ["a", "b", "c"]
    assert {d["path"] for d in diff_object(a, b)} == {'metadata.labels["app.kubernetes.io/name"]', "spec.args"}


# --- health -------------------------------------------------------------------------------------

def dep_status(**status: Any) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status}


@pytest.mark.parametrize("obj, state, reason", [
    (dep_status(observedGeneration=1), "waiting", "not observed"),
    (dep_status(observedGeneration=2, updatedReplicas=1, replicas=2), "waiting", "1 of 2 replicas updated"),
    (dep_status(observedGeneration=2, updatedReplicas=2, replicas=3), "waiting", "1 old replicas"),
    (dep_status(observedGeneration=2, updatedReplicas=2, replicas=2, availableReplicas=1), "waiting", "1 of 2"),
    (dep_status(observedGeneration=2, updatedReplicas=2, replicas=2, availableReplicas=2), "ready", ""),
    (dep_status(observedGeneration=2, conditions=[{"type": "Progressing", "status": "False",
                                                   "reason": "ProgressDeadlineExceeded", "message": "rs timed out"}]),
     "failed", "ProgressDeadlineExceeded: rs timed out"),
    ({"kind": "StatefulSet", "metadata": {"generation": 1}, "spec": {"replicas": 1},
      "status": {"observedGeneration": 1, "readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}},
     "waiting", "rolling from revision a to b"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                 "message": "Job has reached the specified backoff limit"}]}},
     "failed", "BackoffLimitExceeded"),
    ({"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "ready", ""),
    ({"kind": "DaemonSet", "metadata": {}, "status": {"desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
                                                      "numberAvailable": 1}}, "waiting", "1 of 2 pods available"),
])
def test_workload_judgement(obj: dict[str, Any], state: str, reason: str) -> None:
    verdict = health.JUDGES[obj["kind"]](obj)
    assert verdict.state == state and reason in verdict.reason


def test_pod_reasons() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
         "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}}
    assert health.pod_reason(pod) == "pod p container c: CrashLoopBackOff: back-off 10s (last exit 137: OOMKilled)"
    pending = {"metadata": {"name": "q"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}}
    assert health.pod_reason(pending) == "pod q unschedulable: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
