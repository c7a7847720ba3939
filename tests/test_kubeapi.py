"""The test API server against the official ``kubernetes`` client: protocol, semantics, controllers.

Each test drives the server only through the client (as product code will) and asserts on both the
client's view and the server's store.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from tests.fixtures.kube import kube_api, kube_nodes, kube_server  # noqa: F401 - fixtures
from tests.kubeapi import Failure, KubeAPIServer, ProxyRequest, ProxyResponse, fields

NS = "edge"


# Typed as Any: the tests pass plain dict manifests (as product code does) and read optional fields.
def core_api(api: Any) -> Any:
    return client.CoreV1Api(api)


def apps_api(api: Any) -> Any:
    return client.AppsV1Api(api)


def batch_api(api: Any) -> Any:
    return client.BatchV1Api(api)


def custom_api(api: Any) -> Any:
    return client.CustomObjectsApi(api)


def body(exc: ApiException) -> dict[str, Any]:
    """The Status document of a failed request."""
    doc: dict[str, Any] = json.loads(exc.body or "{}")
    assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == exc.status
    return doc


def deployment(name: str, image: str = "registry.local/web:1.0", replicas: int = 1, **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": image,
                                                           "ports": [{"containerPort": 8080, "name": "http"}]}]}},
                     **spec}}


@pytest.fixture
def ns(kube_api: Any) -> str:
    core_api(kube_api).create_namespace({"metadata": {"name": NS}})
    return NS


@pytest.fixture
def dyn(kube_api: Any, tmp_path: Any) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(kube_api, cache_file=str(tmp_path / "discovery.json"))


def test_kubeconfig_context_and_token(kube_server: KubeAPIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.Configuration, "_default", None)  # load_kube_config sets the global default
    config.load_kube_config(config_file=str(kube_server.kubeconfig_path), context="edge")
    version = client.VersionApi().get_code()
    assert version.major == "1" and version.git_version.startswith("v1.")
    core: Any = client.CoreV1Api()
    assert {n.metadata.name for n in core.list_node().items} == {"edge-node-1", "edge-node-2"}

    monkeypatch.setattr(kube_server, "token", "another-token")
    with pytest.raises(ApiException) as err:
        core.list_namespace()
    assert err.value.status == 401 and body(err.value)["reason"] == "Unauthorized"
    with pytest.raises(ApiException) as err:
        core_api(kube_server.api_client()).create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert err.value.status == 401 and kube_server.get("ConfigMap", "default", "x") is None


def test_discovery_documents(kube_api: Any) -> None:
    raw = kube_api.call_api
    groups = json.loads(raw(*kube_api.param_serialize("GET", "/apis", auth_settings=["BearerToken"])).read())
    assert groups["kind"] == "APIGroupList"
    names = {g["name"] for g in groups["groups"]}
    assert {"apps", "batch", "networking.k8s.io", "policy", "rbac.authorization.k8s.io",
            "apiextensions.k8s.io"} <= names
    core = core_api(kube_api).get_api_resources()
    plural = {r.name for r in core.resources}
    assert {"namespaces", "configmaps", "secrets", "services", "persistentvolumes", "persistentvolumeclaims",
            "pods", "nodes", "serviceaccounts", "pods/status", "services/proxy"} <= plural
    apps = apps_api(kube_api).get_api_resources()
    deploy = next(r for r in apps.resources if r.name == "deployments")
    assert apps.group_version == "apps/v1" and deploy.kind == "Deployment" and deploy.namespaced
    assert "patch" in deploy.verbs and "deploy" in deploy.short_names


def test_crud_statuses_and_resource_versions(kube_api: Any, ns: str) -> None:
    core = core_api(kube_api)
    created = core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    assert created.metadata.uid and created.metadata.creation_timestamp
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}})
    assert err.value.status == 409 and body(err.value)["reason"] == "AlreadyExists"

    got = core.read_namespaced_config_map("cfg", ns)
    got.data["a"] = "2"
    replaced = core.replace_namespaced_config_map("cfg", ns, got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    got.data["a"] = "3"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cfg", ns, got)
    assert err.value.status == 409 and body(err.value)["reason"] == "Conflict"
    assert "the object has been modified" in body(err.value)["message"]

    patched = core.patch_namespaced_config_map("cfg", ns, {"data": {"b": "x", "a": None}})
    assert patched.data == {"b": "x"}
    same = core.patch_namespaced_config_map("cfg", ns, {"data": {"b": "x"}})
    assert same.metadata.resource_version == patched.metadata.resource_version  # no-op write

    status = core.delete_namespaced_config_map("cfg", ns)
    assert status["status"] == "Success" and status["details"]["name"] == "cfg"
    for call in (lambda: core.read_namespaced_config_map("cfg", ns), lambda: core.delete_namespaced_config_map("cfg", ns)):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 404 and body(err.value)["message"] == 'configmaps "cfg" not found'

    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("missing", {"metadata": {"name": "s"}})
    assert err.value.status == 404 and body(err.value)["details"] == {"name": "missing", "kind": "namespaces"}


def test_secret_string_data_and_list_shape(kube_api: Any, ns: str) -> None:
    core = core_api(kube_api)
    core.create_namespaced_secret(ns, {"metadata": {"name": "tok"}, "stringData": {"token": "abc"}})
    assert core.read_namespaced_secret("tok", ns).data == {"token": "YWJj"}
    resp = core.list_namespaced_secret(ns, _preload_content=False)
    doc = json.loads(resp.data)
    assert doc["kind"] == "SecretList" and doc["apiVersion"] == "v1" and doc["metadata"]["resourceVersion"]
    assert "kind" not in doc["items"][0]


@pytest.mark.parametrize("selector,expected", [
    ("tier=web", {"a", "b"}),
    ("tier!=web", {"c", "d"}),
    ("env in (prod,stage)", {"a", "c"}),
    ("env notin (prod)", {"b", "c", "d"}),
    ("gpu", {"d"}),
    ("!gpu,tier==web", {"a", "b"}),
    ("tier=web,env in (prod, dev)", {"a", "b"}),
])
def test_label_selectors(kube_api: Any, ns: str, selector: str, expected: set[str]) -> None:
    core = core_api(kube_api)
    labels = {"a": {"tier": "web", "env": "prod"}, "b": {"tier": "web", "env": "dev"},
              "c": {"tier": "db", "env": "stage"}, "d": {"gpu": "true"}}
    for name, lab in labels.items():
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": lab}})
    items = core.list_namespaced_config_map(ns, label_selector=selector).items
    assert {i.metadata.name for i in items} == expected


def test_bad_label_selector_is_400(kube_api: Any, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        core_api(kube_api).list_namespaced_pod(ns, label_selector="a in b")
    assert err.value.status == 400 and body(err.value)["reason"] == "BadRequest"


def _invalid_cases() -> list[tuple[str, dict[str, Any], str]]:
    no_selector = deployment("web")
    del no_selector["spec"]["selector"]
    wrong_labels = deployment("web")
    wrong_labels["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    no_image = deployment("web")
    del no_image["spec"]["template"]["spec"]["containers"][0]["image"]
    no_name = deployment("web")
    del no_name["metadata"]["name"]
    return [
        ("missing name", no_name, "metadata.name"),
        ("bad name", deployment("Web_1"), "metadata.name"),
        ("no selector", no_selector, "spec.selector"),
        ("selector mismatch", wrong_labels, "spec.template.metadata.labels"),
        ("no image", no_image, "spec.template.spec.containers[0].image"),
    ]


@pytest.mark.parametrize("case,manifest,field", _invalid_cases(), ids=[c[0] for c in _invalid_cases()])
def test_validation_is_422_with_causes(dyn: dynamic.DynamicClient, ns: str, case: str, manifest: dict[str, Any],
                                      field: str) -> None:
    # the dynamic client sends the manifest as is (the typed client validates some of it locally)
    with pytest.raises(ApiException) as err:
        dyn.resources.get(api_version="apps/v1", kind="Deployment").create(body=manifest, namespace=ns)
    doc = body(err.value)
    assert err.value.status == 422 and doc["reason"] == "Invalid"
    assert doc["details"]["kind"] == "Deployment" and doc["details"]["group"] == "apps"
    assert field in [c["field"] for c in doc["details"]["causes"]]
    assert doc["message"].startswith("Deployment.apps ")


def test_kind_mismatch_and_immutable_selector(kube_api: Any, ns: str) -> None:
    apps = apps_api(kube_api)
    wrong = {**deployment("web"), "apiVersion": "v1", "kind": "ConfigMap"}
    with pytest.raises(ApiException) as err:
        apps.create_namespaced_deployment(ns, wrong)
    assert err.value.status == 400 and "does not match the expected API version (apps/v1)" in body(err.value)["message"]

    apps.create_namespaced_deployment(ns, deployment("web"))
    changed = deployment("web")
    changed["spec"]["selector"]["matchLabels"]["tier"] = "x"
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    with pytest.raises(ApiException) as err:
        apps.replace_namespaced_deployment("web", ns, changed)
    assert err.value.status == 422 and "field is immutable" in body(err.value)["message"]


def test_server_side_apply_via_dynamic_client(kube_server: KubeAPIServer, dyn: dynamic.DynamicClient, ns: str) -> None:
    kube_server.controllers.stop()  # no status writes between the applies compared below
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    first = deployments.server_side_apply(body=deployment("api"), field_manager="edgebundle")
    assert first.metadata.generation == 1
    entry = first.metadata.managedFields[0]
    assert (entry.manager, entry.operation, entry.fieldsType) == ("edgebundle", "Apply", "FieldsV1")
    containers = entry.fieldsV1.to_dict()["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(containers['k:{"name":"main"}']["f:ports"]) == {'k:{"containerPort":8080,"protocol":"TCP"}'}

    again = deployments.server_side_apply(body=deployment("api"), field_manager="edgebundle")
    assert again.metadata.resourceVersion == first.metadata.resourceVersion

    upgraded = deployments.server_side_apply(body=deployment("api", image="registry.local/web:2.0"),
                                             field_manager="edgebundle", force_conflicts=True)
    assert upgraded.metadata.generation == 2
    assert upgraded.spec.template.spec.containers[0].image == "registry.local/web:2.0"
    assert upgraded.spec.template.spec.containers[0].ports[0].protocol == "TCP"  # defaulted, kept
    stored = kube_server.get("Deployment", ns, "api")
    assert stored is not None and stored["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2.0")

    dry = deployments.server_side_apply(body=deployment("api", replicas=5), field_manager="edgebundle",
                                        dry_run="All")
    assert dry.spec.replicas == 5 and (kube_server.get("Deployment", ns, "api") or {})["spec"]["replicas"] == 1


def test_apply_removes_fields_the_manager_dropped(dyn: dynamic.DynamicClient, ns: str) -> None:
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    full = deployment("api", minReadySeconds=5)
    full["metadata"]["labels"] = {"keep": "1", "drop": "1"}
    full["metadata"]["annotations"] = {"note": "x"}
    full["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    full["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "registry.local/side:1"})
    deployments.server_side_apply(body=full, field_manager="edgebundle")
    # another writer adds a label of its own: the applier's pruning must not touch it
    deployments.patch(body={"metadata": {"labels": {"theirs": "1"}}}, name="api", namespace=ns,
                      content_type="application/merge-patch+json", field_manager="someone-else")

    slim = deployment("api")
    slim["metadata"]["labels"] = {"keep": "1"}
    slim["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    out = deployments.server_side_apply(body=slim, field_manager="edgebundle")
    assert dict(out.metadata.labels) == {"keep": "1", "theirs": "1"}
    assert out.metadata.annotations is None
    assert "minReadySeconds" not in out.spec
    containers = out.spec.template.spec.containers
    assert [c.name for c in containers] == ["main"]
    assert [e.name for e in containers[0].env] == ["A"]
    assert out.spec.replicas == 1 and out.spec.strategy.type == "RollingUpdate"


def test_apply_conflicts_between_managers(dyn: dynamic.DynamicClient, ns: str) -> None:
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    deployments.server_side_apply(body=deployment("api", replicas=2), field_manager="edgebundle")
    # same value from another manager: shared ownership, no conflict
    deployments.server_side_apply(body=deployment("api", replicas=2), field_manager="ops")
    with pytest.raises(ApiException) as err:
        deployments.server_side_apply(body=deployment("api", replicas=3), field_manager="ops")
    doc = body(err.value)
    assert err.value.status == 409 and doc["reason"] == "Conflict"
    assert doc["message"] == 'Apply failed with 1 conflict: conflict with "edgebundle" using apps/v1: .spec.replicas'
    assert doc["details"]["causes"] == [{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                                         "message": 'conflict with "edgebundle" using apps/v1'}]

    forced = deployments.server_side_apply(body=deployment("api", replicas=3), field_manager="ops", force_conflicts=True)
    assert forced.spec.replicas == 3
    owners = {e.manager: e.fieldsV1.to_dict() for e in forced.metadata.managedFields}
    assert "f:replicas" not in owners["edgebundle"]["f:spec"] and "f:replicas" in owners["ops"]["f:spec"]

    # an Update (non-apply) writer owns what it changed, and conflicts with the applier's image
    deployments.patch(body={"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "hotfix:1"}]}}}},
                      name="api", namespace=ns, field_manager="kubectl-edit")
    with pytest.raises(ApiException) as err:
        deployments.server_side_apply(body=deployment("api", image="registry.local/web:3", replicas=3), field_manager="ops")
    assert 'conflict with "kubectl-edit"' in body(err.value)["message"]
    assert body(err.value)["details"]["causes"][0]["field"] == '.spec.template.spec.containers[name="main"].image'


def test_apply_requires_field_manager(kube_api: Any, ns: str) -> None:
    with pytest.raises(ApiException) as err:
        apps_api(kube_api).patch_namespaced_deployment("x", ns, deployment("x"),
                                                               _content_type="application/apply-patch+yaml")
    assert err.value.status == 422 and "fieldManager: Required value" in body(err.value)["message"]


def test_status_subresource_is_separate(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    kube_server.controllers.stop()
    apps = apps_api(kube_api)
    apps.create_namespaced_deployment(ns, deployment("web"))
    marked = apps.patch_namespaced_deployment_status("web", ns, {"status": {"readyReplicas": 1, "replicas": 1},
                                                                 "spec": {"replicas": 7}})
    assert marked.status.ready_replicas == 1 and marked.spec.replicas == 1 and marked.metadata.generation == 1
    current = apps.read_namespaced_deployment("web", ns)
    current.status = None
    current.spec.replicas = 2
    replaced = apps.replace_namespaced_deployment("web", ns, current)
    assert replaced.status.ready_replicas == 1 and replaced.metadata.generation == 2


def test_controllers_ready_then_failing_then_healed(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    apps, core = apps_api(kube_api), core_api(kube_api)
    apps.create_namespaced_deployment(ns, deployment("web", replicas=2))
    kube_server.controllers.settle()
    status = apps.read_namespaced_deployment_status("web", ns).status
    assert (status.observed_generation, status.ready_replicas, status.available_replicas) == (1, 2, 2)
    assert {c.type: c.status for c in status.conditions} == {"Available": "True", "Progressing": "True"}

    kube_server.fail_workload(ns, "web", reason="CrashLoopBackOff", message="model file missing: /models/llm.gguf")
    kube_server.controllers.settle()
    status = apps.read_namespaced_deployment_status("web", ns).status
    assert status.ready_replicas is None  # omitted when zero, as the apiserver does
    available = next(c for c in status.conditions if c.type == "Available")
    assert available.status == "False" and available.message == "model file missing: /models/llm.gguf"
    pods = core.list_namespaced_pod(ns, label_selector="app=web").items
    waiting = pods[0].status.container_statuses[0].state.waiting
    assert waiting.reason == "CrashLoopBackOff" and pods[0].status.container_statuses[0].restart_count > 0
    events = core.list_namespaced_event(ns).items
    assert any(e.reason == "BackOff" and e.involved_object.name == pods[0].metadata.name for e in events)
    assert "model file missing" in core.read_namespaced_pod_log(pods[0].metadata.name, ns)

    kube_server.heal_workload(ns, "web")
    kube_server.controllers.settle()
    assert apps.read_namespaced_deployment_status("web", ns).status.ready_replicas == 2


def test_upgrade_to_broken_image_never_gets_ready(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    def broken(obj: dict[str, Any]) -> Failure | None:
        images = [c.get("image", "") for c in obj["spec"]["template"]["spec"]["containers"]]
        return Failure("ImagePullBackOff", "not found", deadline_exceeded=True) if any("broken" in i for i in images) else None

    kube_server.fail_when(broken)
    apps = apps_api(kube_api)
    apps.create_namespaced_deployment(ns, deployment("web"))
    kube_server.controllers.settle()
    old_pods = {p["metadata"]["name"] for p in kube_server.objects("Pod", ns)}
    apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "registry.local/web:broken"}]}}}})
    kube_server.controllers.settle()
    status = apps.read_namespaced_deployment_status("web", ns).status
    conditions = {c.type: c for c in status.conditions}
    assert status.observed_generation == 2 and status.updated_replicas == 1 and status.ready_replicas == 1
    assert conditions["Available"].status == "True"  # the old pod still serves
    assert (conditions["Progressing"].status, conditions["Progressing"].reason) == ("False", "ProgressDeadlineExceeded")
    pods = kube_server.objects("Pod", ns)
    assert old_pods < {p["metadata"]["name"] for p in pods} and len(pods) == 2
    new_pod = next(p for p in pods if p["metadata"]["name"] not in old_pods)
    assert new_pod["status"]["phase"] == "Pending"
    assert new_pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"


def test_gpu_requests_beyond_node_capacity_stay_pending(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    big = deployment("llm")
    big["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "2"}}
    small = deployment("embed")
    small["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    apps = apps_api(kube_api)
    apps.create_namespaced_deployment(ns, big)
    apps.create_namespaced_deployment(ns, small)
    kube_server.controllers.settle()
    assert apps.read_namespaced_deployment_status("embed", ns).status.ready_replicas == 1
    assert apps.read_namespaced_deployment_status("llm", ns).status.ready_replicas is None
    pod = core_api(kube_api).list_namespaced_pod(ns, label_selector="app=llm").items[0]
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert pod.status.phase == "Pending" and scheduled.reason == "Unschedulable"
    assert scheduled.message.startswith("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")

    kube_server.add_node("edge-node-3", gpus=2)
    kube_server.controllers.settle()
    assert apps.read_namespaced_deployment_status("llm", ns).status.ready_replicas == 1


def test_jobs_claims_statefulsets_daemonsets(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    pod_template: dict[str, Any] = {"metadata": {"labels": {"app": "x"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}}
    batch, apps, core = batch_api(kube_api), apps_api(kube_api), core_api(kube_api)
    batch.create_namespaced_job(ns, {"metadata": {"name": "migrate"}, "spec": {"template": pod_template}})
    with pytest.raises(ApiException) as err:
        batch.create_namespaced_job(ns, {"metadata": {"name": "bad"}, "spec": {"template": {
            **pod_template, "spec": {**pod_template["spec"], "restartPolicy": "Always"}}}})
    assert err.value.status == 422 and "spec.template.spec.restartPolicy" in body(err.value)["message"]
    core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "models"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}})
    sts = deployment("db", replicas=2)
    sts.update(kind="StatefulSet")
    sts["spec"]["serviceName"] = "db"
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    apps.create_namespaced_stateful_set(ns, sts)
    ds = deployment("agent")
    ds.update(kind="DaemonSet")
    del ds["spec"]["replicas"]
    apps.create_namespaced_daemon_set(ns, ds)
    kube_server.controllers.settle()

    job = batch.read_namespaced_job_status("migrate", ns).status
    assert job.succeeded == 1 and any(c.type == "Complete" and c.status == "True" for c in job.conditions)
    assert core.read_namespaced_persistent_volume_claim_status("models", ns).status.phase == "Bound"
    assert core.read_namespaced_persistent_volume_claim_status("data-db-1", ns).status.phase == "Bound"
    assert apps.read_namespaced_stateful_set_status("db", ns).status.ready_replicas == 2
    ds_status = apps.read_namespaced_daemon_set_status("agent", ns).status
    assert (ds_status.desired_number_scheduled, ds_status.number_ready) == (2, 2)


def test_service_proxy(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    core = core_api(kube_api)
    apps_api(kube_api).create_namespaced_deployment(ns, deployment("llm"))
    core.create_namespaced_service(ns, {"metadata": {"name": "llm"}, "spec": {
        "selector": {"app": "llm"}, "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]}})
    seen: list[ProxyRequest] = []

    def health(req: ProxyRequest) -> ProxyResponse:
        seen.append(req)
        return ProxyResponse(200, b'{"status":"ok"}')

    kube_server.set_service_handler(ns, "llm", 8080, health, path="/health")
    kube_server.set_service_endpoint(ns, "llm", "http", "/v1/models", body={"data": [{"id": "smollm2"}]})
    kube_server.controllers.settle()
    for ident in ("llm:8080", "http:llm:8080", "llm", "llm:http"):
        resp = core.connect_get_namespaced_service_proxy_with_path(ident, ns, "health", _preload_content=False)
        assert resp.data == b'{"status":"ok"}'
    assert seen[-1].path == "/health" and seen[-1].method == "GET"
    models = core.connect_get_namespaced_service_proxy_with_path("llm:8080", ns, "v1/models", _preload_content=False)
    assert json.loads(models.data) == {"data": [{"id": "smollm2"}]}
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_service_proxy_with_path("llm:8080", ns, "nope")
    assert err.value.status == 404

    kube_server.fail_workload(ns, "llm", message="OOMKilled")
    kube_server.controllers.settle()
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_service_proxy_with_path("llm:8080", ns, "health")
    assert err.value.status == 503 and body(err.value)["message"] == 'no endpoints available for service "llm:8080"'
    with pytest.raises(ApiException) as err:
        core.connect_get_namespaced_service_proxy_with_path("ghost:8080", ns, "health")
    assert err.value.status == 404 and body(err.value)["message"] == 'services "ghost" not found'


def test_crd_registers_in_discovery_and_serves_custom_objects(kube_server: KubeAPIServer, kube_api: Any,
                                                              dyn: dynamic.DynamicClient, ns: str) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "models.edge.example.com"},
           "spec": {"group": "edge.example.com", "scope": "Namespaced",
                    "names": {"plural": "models", "singular": "model", "kind": "Model", "shortNames": ["mdl"]},
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                  "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    crds = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition")
    created = crds.server_side_apply(body=crd, field_manager="edgebundle")
    assert any(c.type == "Established" and c.status == "True" for c in created.status.conditions)

    models = dyn.resources.get(api_version="edge.example.com/v1alpha1", kind="Model")
    assert models.namespaced and models.name == "models"
    obj = {"apiVersion": "edge.example.com/v1alpha1", "kind": "Model", "metadata": {"name": "smollm2", "namespace": ns},
           "spec": {"digest": "sha256:" + "0" * 64}}
    applied = models.server_side_apply(body=obj, field_manager="edgebundle")
    assert applied.metadata.generation == 1 and applied.spec.digest.endswith("0")
    listed = custom_api(kube_api).list_namespaced_custom_object("edge.example.com", "v1alpha1", ns, "models")
    assert listed["kind"] == "ModelList" and listed["items"][0]["kind"] == "Model"

    crds.delete(name="models.edge.example.com")
    assert kube_server.registry.by_kind("Model") == []
    assert not [o for o in kube_server.objects() if o["kind"] == "Model"]
    with pytest.raises(ApiException) as err:
        custom_api(kube_api).list_namespaced_custom_object("edge.example.com", "v1alpha1", ns, "models")
    assert err.value.status == 404


def test_strategic_merge_and_json_patch(kube_api: Any, ns: str) -> None:
    apps = apps_api(kube_api)
    dep = deployment("web")
    dep["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "side:1"})
    apps.create_namespaced_deployment(ns, dep)
    out = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "side", "image": "side:2"}]}}}})
    assert [(c.name, c.image) for c in out.spec.template.spec.containers] == [
        ("main", "registry.local/web:1.0"), ("side", "side:2")]
    out = apps.patch_namespaced_deployment("web", ns, [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels", "value": {"release": "r2"}}])
    assert out.spec.replicas == 3 and out.metadata.labels == {"release": "r2"}


def test_deletion_cascades(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    apps_api(kube_api).create_namespaced_deployment(ns, deployment("web", replicas=2))
    core_api(kube_api).create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    kube_server.controllers.settle()
    assert len(kube_server.objects("Pod", ns)) == 2
    apps_api(kube_api).delete_namespaced_deployment("web", ns)
    assert kube_server.objects("Pod", ns) == []
    deleted = core_api(kube_api).delete_namespace(ns)
    assert deleted["status"]["phase"] == "Terminating"
    assert kube_server.objects(namespace=ns) == []


def test_request_log_records_product_calls(kube_server: KubeAPIServer, kube_api: Any, ns: str) -> None:
    kube_server.clear_requests()
    apps_api(kube_api).patch_namespaced_deployment(
        "web", ns, deployment("web"), field_manager="edgebundle", _content_type="application/apply-patch+yaml")
    (entry,) = kube_server.requests
    assert (entry.method, entry.path, entry.status) == ("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/web", 201)
    assert entry.query["fieldManager"] == "edgebundle" and entry.content_type == "application/apply-patch+yaml"


def test_raw_http_statuses(kube_server: KubeAPIServer, ns: str) -> None:
    auth = {"Authorization": f"Bearer {kube_server.token}"}
    resp = requests.post(f"{kube_server.url}/apis/apps/v1/deployments", json=deployment("x"), headers=auth, timeout=5)
    assert resp.status_code == 405 and resp.json()["reason"] == "MethodNotAllowed"
    resp = requests.get(f"{kube_server.url}/apis/example.com/v1/widgets", headers=auth, timeout=5)
    assert resp.status_code == 404 and resp.json()["kind"] == "Status"
    resp = requests.get(f"{kube_server.url}/api/v1/namespaces", timeout=5)
    assert resp.status_code == 401 and resp.json()["reason"] == "Unauthorized"
    assert requests.get(f"{kube_server.url}/version", timeout=5).json()["major"] == "1"


def test_pagination_finalizers_and_dry_run(kube_api: Any, ns: str) -> None:
    core = core_api(kube_api)
    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"c{i}"}})
    page = core.list_namespaced_config_map(ns, limit=2)
    names = [i.metadata.name for i in page.items]
    assert names == ["c0", "c1"] and page.metadata.remaining_item_count == 3
    while page.metadata._continue:
        page = core.list_namespaced_config_map(ns, limit=2, _continue=page.metadata._continue)
        names += [i.metadata.name for i in page.items]
    assert names == [f"c{i}" for i in range(5)]

    core.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["edge.example.com/cleanup"]}})
    core.delete_namespaced_config_map("held", ns)
    held = core.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", ns)
    assert err.value.status == 404

    dry = core.create_namespaced_config_map(ns, {"metadata": {"name": "dry"}}, dry_run="All")
    assert dry.metadata.uid
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", ns)


def test_failure_predicate_with_message_and_pod_without_owner(kube_server: KubeAPIServer, kube_api: Any,
                                                              ns: str) -> None:
    kube_server.fail_when(lambda obj: "exit 3" if obj["metadata"]["name"].startswith("crash") else None)
    core = core_api(kube_api)
    for name in ("crash-1", "fine-1"):
        core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36"}]}})
    kube_server.controllers.settle()
    crash, fine = core.read_namespaced_pod("crash-1", ns), core.read_namespaced_pod("fine-1", ns)
    assert crash.status.container_statuses[0].state.waiting.message == "exit 3"
    assert [c.status for c in fine.status.conditions if c.type == "Ready"] == ["True"]
    assert fine.spec.node_name in {"edge-node-1", "edge-node-2"}


def test_concurrent_writers_get_distinct_resource_versions(kube_server: KubeAPIServer, ns: str) -> None:
    def writer(prefix: str) -> list[str]:
        api = core_api(kube_server.api_client())
        return [api.create_namespaced_config_map(ns, {"metadata": {"name": f"{prefix}-{i}"}}).metadata.resource_version
                for i in range(10)]

    with ThreadPoolExecutor(4) as pool:
        versions = [rv for rvs in pool.map(writer, ["a", "b", "c", "d"]) for rv in rvs]
    assert len(set(versions)) == 40
    assert len([o for o in kube_server.objects("ConfigMap", ns)]) == 40


_scalars = st.one_of(st.integers(), st.text(max_size=3), st.booleans())
_names = st.sampled_from(["a", "b", "name", "image", "containers", "env", "ports"])
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.dictionaries(_names, inner, max_size=3),
    st.lists(st.fixed_dictionaries({"name": st.text(min_size=1, max_size=3)}, optional={"v": inner}),
             max_size=3, unique_by=lambda d: d["name"])), max_leaves=10)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_names, _values, max_size=4))
def test_fields_v1_round_trips_and_apply_of_self_is_identity(obj: dict[str, Any]) -> None:
    paths = fields.leaf_paths(obj)
    assert fields.from_fields_v1(fields.to_fields_v1(paths)) == paths
    assert fields.merge_apply(obj, obj) == obj
    assert all(fields.get_path(obj, p)[0] for p in paths)
