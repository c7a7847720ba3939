"""The shipped RAG manifests and the example bundle/site agree with each other and the rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bundler.spec import load_spec
from installer.site import load_site
from tests.fixtures.models import minilm_dir, smollm2_gguf  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
EXAMPLE = REPO / "examples" / "rag-edge"
NAMESPACE = "rag-system"
IMAGE_PREFIX = "127.0.0.1:5000/rag/"
MODELS_CLAIM = "rag-models"
KIND_DIRS = {"llm": "llm", "embedding": "embeddings", "index": "indices"}
MODEL_PATH = re.compile(r"/models/(llm|embeddings|indices)/([^/]+)/([^/]+)(/.*)?")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "CronJob"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume"}


def load_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    doc["__file__"] = path.name
                    docs.append(doc)
    return docs


DOCS = load_docs()


def objs(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in DOCS if d["kind"] == kind}


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = pod_template(workload)["spec"]
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = pod_template(workload)["metadata"]["labels"]
    return labels


def workloads() -> list[dict[str, Any]]:
    return [d for d in DOCS if d["kind"] in WORKLOAD_KINDS]


def model_refs(container: dict[str, Any]) -> list[str]:
    """Every /models/... path a container names, in env values or arguments."""
    values = [e.get("value", "") for e in container.get("env", [])]
    values += [str(a) for a in container.get("args", []) + container.get("command", [])]
    return [v for v in values if v.startswith("/models")]


def placeholder_values(node: Any, key: str = "") -> list[str]:
    """SHOUTING_CASE string values (not keys, not env var names): the installer's placeholders."""
    if isinstance(node, dict):
        return [v for k, child in node.items() for v in placeholder_values(child, k)]
    if isinstance(node, list):
        return [v for child in node for v in placeholder_values(child, key)]
    if isinstance(node, str) and key != "name" and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node):
        return [node]
    return []


def test_every_document_is_a_known_object() -> None:
    assert DOCS, "no manifests found"
    for d in DOCS:
        assert {"apiVersion", "kind", "metadata"} <= d.keys(), d["__file__"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rag-edge", d["metadata"]["name"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in DOCS}
    assert {
        ("Namespace", NAMESPACE), ("PersistentVolume", "rag-edge-models"), ("PersistentVolumeClaim", MODELS_CLAIM),
        ("Deployment", "llm-service"), ("Service", "llm-service"), ("PodDisruptionBudget", "llm-service"),
        ("StatefulSet", "vector-db"), ("Service", "vector-db"),
        ("Deployment", "orchestrator"), ("Service", "orchestrator"),
        ("Deployment", "chat-ui"), ("Service", "chat-ui"), ("CronJob", "data-connector"),
    } <= kinds
    assert len(kinds) == len(DOCS), "duplicate object"


def test_namespaces() -> None:
    for d in DOCS:
        if d["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in d["metadata"], d["metadata"]["name"]
        else:
            assert d["metadata"]["namespace"] == NAMESPACE, (d["kind"], d["metadata"]["name"])


def test_models_volume_is_nfs_rwx_with_placeholders() -> None:
    pv = objs("PersistentVolume")["rag-edge-models"]
    pvc = objs("PersistentVolumeClaim")[MODELS_CLAIM]
    assert pv["spec"]["accessModes"] == ["ReadWriteMany"] == pvc["spec"]["accessModes"]
    assert pv["spec"]["nfs"] == {"server": "NFS_SERVER", "path": "NFS_PATH"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pv["spec"]["storageClassName"] == "" == pvc["spec"]["storageClassName"]
    assert pvc["spec"]["volumeName"] == "rag-edge-models"
    assert pv["spec"]["claimRef"] == {"namespace": NAMESPACE, "name": MODELS_CLAIM}
    placeholders = {"NFS_SERVER", "NFS_PATH"}
    assert set(placeholder_values(DOCS)) == placeholders
    readme = (MANIFESTS / "README.md").read_text()
    assert all(p in readme for p in placeholders)


def test_llm_service() -> None:
    dep = objs("Deployment")["llm-service"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod_spec(dep)["containers"]
    res = c["resources"]
    assert res["requests"]["nvidia.com/gpu"] == "1" == res["limits"]["nvidia.com/gpu"]
    assert res["requests"]["memory"] == "6Gi" and res["limits"]["memory"] == "8Gi"
    assert c["livenessProbe"] == {"httpGet": {"path": "/health", "port": 8000}, "initialDelaySeconds": 60,
                                  "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
    rp = c["readinessProbe"]
    assert (rp["httpGet"], rp["initialDelaySeconds"], rp["periodSeconds"], rp["successThreshold"]) == (
        {"path": "/ready", "port": 8000}, 30, 5, 1)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["LLM_MODEL_PATH"] == "/models/llm/smollm2-135m/v1.0/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert c["args"][c["args"].index("--model") + 1] == "$(LLM_MODEL_PATH)"
    svc = objs("Service")["llm-service"]
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(8000, 8000)]
    pdb = objs("PodDisruptionBudget")["llm-service"]
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_vector_db_is_a_statefulset_with_its_own_volume() -> None:
    sts = objs("StatefulSet")["vector-db"]
    svc = objs("Service")[sts["spec"]["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    (vct,) = sts["spec"]["volumeClaimTemplates"]
    assert vct["spec"]["accessModes"] == ["ReadWriteOnce"]
    (c,) = pod_spec(sts)["containers"]
    assert any(m["name"] == vct["metadata"]["name"] for m in c["volumeMounts"])
    assert "vector-db" not in objs("Deployment")


def test_images_come_from_the_source_registry() -> None:
    images = set()
    for w in workloads():
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["image"].startswith(IMAGE_PREFIX) and c["image"].endswith(":1.0"), c["image"]
            assert c.get("imagePullPolicy") == "IfNotPresent"
            images.add(c["image"])
    spec = load_spec_of_example_raw()
    assert images == {i["ref"] for i in spec["spec"]["images"]}


def test_every_container_is_bounded_and_locked_down() -> None:
    for w in workloads():
        spec = pod_spec(w)
        name = w["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec["containers"]:
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys(), name
            assert {"cpu", "memory"} <= c["resources"]["limits"].keys(), name
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name


def test_services_select_their_pods() -> None:
    pods = {w["metadata"]["name"]: (pod_labels(w), pod_spec(w)) for w in workloads()}
    for name, svc in objs("Service").items():
        labels, spec = pods[name]
        assert svc["spec"]["selector"].items() <= labels.items(), name
        ports = {p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name
    for w in workloads():
        if w["kind"] != "CronJob":
            assert w["spec"]["selector"]["matchLabels"].items() <= pod_labels(w).items()


def test_http_services_have_health_and_ready_probes() -> None:
    for w in workloads():
        if w["kind"] == "CronJob":
            continue
        for c in pod_spec(w)["containers"]:
            assert c["livenessProbe"]["httpGet"]["path"] == "/health", w["metadata"]["name"]
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready", w["metadata"]["name"]


def test_model_users_mount_the_store_read_only_and_follow_the_convention() -> None:
    example = {m["name"]: m for m in load_spec_of_example_raw()["spec"]["models"]}
    users = 0
    for w in workloads():
        spec = pod_spec(w)
        name = w["metadata"]["name"]
        claim_volumes = {v["name"]: v for v in spec.get("volumes", []) if "persistentVolumeClaim" in v
                         and v["persistentVolumeClaim"]["claimName"] == MODELS_CLAIM}
        for v in claim_volumes.values():
            assert v["persistentVolumeClaim"]["readOnly"] is True, name
        used: set[str] = set()
        for c in spec["containers"]:
            refs = model_refs(c)
            mounts = [m for m in c.get("volumeMounts", []) if m["name"] in claim_volumes]
            for m in mounts:
                assert m.get("readOnly") is True and m["mountPath"] == "/models", name
            if refs:
                assert mounts, f"{name}/{c['name']} names a model but does not mount {MODELS_CLAIM}"
            for ref in refs:
                m = MODEL_PATH.fullmatch(ref)
                assert m, f"{name}: {ref} is not /models/<kind>/<name>/<version>/..."
                kind_dir, model, version = m.group(1), m.group(2), m.group(3)
                assert model in example, f"{name} uses {model}, which the example bundle does not ship"
                assert KIND_DIRS[example[model]["kind"]] == kind_dir and example[model]["version"] == version
                if kind_dir == "llm":
                    assert m.group(4) == "/" + Path(example[model]["path"]).name
                used.add(model)
            env_names = {e["name"] for e in c.get("env", []) if e.get("value", "").startswith("/models")}
            assert env_names <= {"LLM_MODEL_PATH", "EMBEDDING_MODEL_PATH", "INDEX_PATH"}, name
        annotation = w["metadata"].get("annotations", {}).get("edgebundle.dev/models")
        if used:
            users += 1
            assert annotation is not None and set(annotation.split(",")) == used, name
        else:
            assert annotation is None and not claim_volumes, name
    assert users == 3
    assert {"smollm2-135m", "all-minilm-l6-v2"} == set(example)


# --- the example bundle and site ----------------------------------------------------------------


def load_spec_of_example_raw() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLE / "bundle.yaml").read_text())
    return doc


def test_example_bundle_loads(tmp_path: Path, smollm2_gguf: Path, minilm_dir: Path) -> None:
    """The spec as the builder reads it, with models placed the way the demo places them."""
    ex = tmp_path / "examples" / "rag-edge"
    (ex / "models").mkdir(parents=True)
    (ex / "bundle.yaml").write_bytes((EXAMPLE / "bundle.yaml").read_bytes())
    (ex / "charts").symlink_to(EXAMPLE / "charts")
    (tmp_path / "manifests").symlink_to(MANIFESTS)
    (ex / "models" / smollm2_gguf.name).symlink_to(smollm2_gguf)
    (ex / "models" / minilm_dir.name).symlink_to(minilm_dir)
    spec = load_spec(ex / "bundle.yaml")
    assert (spec.name, spec.version, spec.compatible) == ("rag-edge", "1.0.0", "rag-edge/x86_64")
    assert [(m.name, m.kind, m.version) for m in spec.models] == [
        ("smollm2-135m", "llm", "v1.0"), ("all-minilm-l6-v2", "embedding", "v1.0")]
    assert spec.images[0].platforms == ("linux/amd64",)
    # every manifest but chat-ui's, which the example ships as the Helm chart charts/chat-ui/
    assert [p.name for p in spec.manifests] == ["00-namespace.yaml", "10-models-storage.yaml", "20-llm-service.yaml",
                                                "30-vector-db.yaml", "40-orchestrator.yaml", "60-data-connector.yaml"]
    assert all(p.parent == (tmp_path / "manifests").resolve() for p in spec.manifests)
    assert [(c.release, c.path) for c in spec.charts] == [("chat-ui", (ex / "charts" / "chat-ui").resolve())]
    assert (EXAMPLE / ".gitignore").read_text().splitlines()[-1] == "models/"


def test_example_site_matches_the_bundle() -> None:
    site = load_site(EXAMPLE / "site.yaml")
    assert site.compatible == load_spec_of_example_raw()["metadata"]["compatible"]
    assert site.cluster.namespace == NAMESPACE
    assert (site.nfs_server, site.nfs_path) == ("10.0.0.5", "/export/models")
    assert site.registry_plain_http is True


def unknown_fields(node: Any, type_name: str, where: str) -> list[str]:
    """Fields the Kubernetes API model does not define (typos the API server would drop or reject)."""
    import kubernetes.client.models as k8s

    if type_name.startswith("List["):
        inner = type_name[5:-1]
        return [e for i, child in enumerate(node) for e in unknown_fields(child, inner, f"{where}[{i}]")]
    if type_name.startswith("Dict[") or type_name in ("str", "int", "bool", "float", "object", "datetime"):
        return []
    model = getattr(k8s, type_name)
    by_json = {j: model.openapi_types[py] for py, j in model.attribute_map.items()}
    out = []
    for key, child in node.items():
        if key not in by_json:
            out.append(f"{where}.{key}")
        else:
            out += unknown_fields(child, by_json[key], f"{where}.{key}")
    return out


def test_every_field_is_a_kubernetes_field() -> None:
    for d in DOCS:
        group_version = d["apiVersion"].split("/")[-1].capitalize()
        doc = {k: v for k, v in d.items() if k != "__file__"}
        bad = unknown_fields(doc, f"{group_version}{d['kind']}", f"{d['__file__']}:{d['kind']}")
        assert not bad, bad


@pytest.mark.parametrize("path", sorted(MANIFESTS.glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_files_are_plain_yaml(path: Path) -> None:
    text = path.read_text()
    assert "\t" not in text and "{{" not in text, "plain YAML only: no tabs, no templating"
    assert all(isinstance(d, dict) for d in yaml.safe_load_all(text) if d is not None)
