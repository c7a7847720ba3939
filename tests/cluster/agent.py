"""The test-side node agent: what kubelets and a storage provisioner would do, and nothing else.

The real control plane (:mod:`tests.cluster.controlplane`) schedules pods, runs the Deployment,
ReplicaSet, StatefulSet, Job, garbage-collector, namespace and volume-binding controllers itself.
No kubelet runs, so this agent, polling the API server with the official client:

- registers Nodes with allocatable CPU, memory, pods and ``nvidia.com/gpu``, condition Ready;
- marks each pod bound to one of its nodes Running and Ready (Job pods: Succeeded), or keeps it
  failing as a test asks: a waiting reason (``ImagePullBackOff``, ``CrashLoopBackOff`` with the
  last exit) or a failing readiness probe (with the ``Unhealthy`` event a kubelet writes);
- deletes pods that are terminating (a kubelet confirms the containers stopped);
- provisions a hostPath PersistentVolume for every pending claim of its default StorageClass.

A failure is chosen per pod by predicates (:meth:`NodeAgent.fail_when`), so a test can fail
exactly the pods of one template. Errors in the loop are kept and raised by :meth:`stop`.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

PROVISIONER = "edgebundle.test/node-agent"
STORAGE_CLASS = "standard"


@dataclass(frozen=True)
class NodeSpec:
    """Capacity of one Node (allocatable == capacity)."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 1
    labels: dict[str, str] = field(default_factory=dict)
    #: (key, value, effect) taints the node carries.
    taints: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Failure:
    """How a pod fails. ``reason`` is a kubelet waiting reason, or ``Readiness`` for a probe that
    fails while the container runs."""

    reason: str
    message: str = ""
    exit_code: int | None = None


Predicate = Callable[[dict[str, Any]], "Failure | None"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NodeAgent:
    """Plays the kubelets of ``nodes`` against one API server, in a background thread."""

    def __init__(self, api: client.ApiClient, poll: float = 0.2) -> None:
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.poll = poll
        self.nodes: dict[str, NodeSpec] = {}
        self.predicates: list[Predicate] = []
        self.errors: list[BaseException] = []
        self._seen: dict[str, str] = {}  # pod uid -> status signature last written
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what tests call ------------------------------------------------------------------------

    def set_nodes(self, nodes: list[NodeSpec]) -> None:
        """Exactly these nodes exist and are Ready."""
        wanted = {n.name for n in nodes}
        for live in self.core.list_node().items:
            if live.metadata.name not in wanted:
                self.core.delete_node(live.metadata.name)
        with self._lock:
            self.nodes = {n.name: n for n in nodes}
        for n in nodes:
            self._register(n)

    def add_node(self, node: NodeSpec) -> None:
        with self._lock:
            self.nodes[node.name] = node
        self._register(node)

    def fail_when(self, predicate: Predicate) -> None:
        """Pods for which ``predicate(pod)`` returns a Failure fail that way (checked every poll)."""
        with self._lock:
            self.predicates.append(predicate)

    def fail_pods(self, namespace: str, name_prefix: str, failure: Failure) -> Predicate:
        def pred(pod: dict[str, Any]) -> Failure | None:
            meta = pod.get("metadata") or {}
            if meta.get("namespace") == namespace and str(meta.get("name", "")).startswith(name_prefix):
                return failure
            return None
        self.fail_when(pred)
        return pred

    def heal(self, predicate: Predicate | None = None) -> None:
        """Forget one predicate (or all): those pods become ready at the next poll."""
        with self._lock:
            self.predicates = [] if predicate is None else [p for p in self.predicates if p is not predicate]

    def reset(self) -> None:
        with self._lock:
            self.predicates = []
            self._seen.clear()

    # --- the loop -------------------------------------------------------------------------------

    def start(self) -> "NodeAgent":
        self._ensure_storage_class()
        self._thread = threading.Thread(target=self._run, name="node-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.errors:
            raise self.errors[0]

    def settle(self, timeout: float = 5.0) -> None:
        """Run one full pass now (a deterministic point for tests)."""
        self.run_once()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.run_once()
                failures = 0
            except Exception as e:  # noqa: BLE001 - kept and raised at stop
                failures += 1
                if failures > 25:  # a real fault, not a race with a deletion
                    self.errors.append(e)
                    return
            self._stop.wait(self.poll)

    def run_once(self) -> None:
        with self._lock:
            nodes = dict(self.nodes)
            predicates = list(self.predicates)
        if nodes:
            self._heartbeat(nodes)
        for pod in self.core.list_pod_for_all_namespaces().items:
            if pod.spec.node_name in nodes:
                self._tend(self.core.api_client.sanitize_for_serialization(pod), predicates)
        self._provision()

    # --- nodes ----------------------------------------------------------------------------------

    def _node_status(self, n: NodeSpec) -> dict[str, Any]:
        cap = {"cpu": n.cpu, "memory": n.memory, "pods": "110"}
        if n.gpus:
            cap["nvidia.com/gpu"] = str(n.gpus)
        now = _now()
        return {"capacity": cap, "allocatable": cap,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "node agent is posting ready status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "Hostname", "address": n.name}],
                "nodeInfo": {"kubeletVersion": "v1.20.2", "architecture": "amd64", "operatingSystem": "linux",
                             "containerRuntimeVersion": "test://1", "kernelVersion": "", "osImage": "",
                             "kubeProxyVersion": "v1.20.2", "machineID": "", "systemUUID": "", "bootID": ""}}

    def _register(self, n: NodeSpec) -> None:
        labels = {"kubernetes.io/hostname": n.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  **n.labels}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n.name, "labels": labels}}
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
            self.core.patch_node(n.name, {"metadata": {"labels": labels}})
        self.core.patch_node_status(n.name, {"status": self._node_status(n)})
        # The TaintNodesByCondition admission plugin taints a new node not-ready; the node lifecycle
        # controller (off here: no kubelet heartbeats) would lift it once the node reports Ready.
        self.core.patch_node(n.name, {"spec": {"taints": [{"key": k, "value": v, "effect": e}
                                                          for k, v, e in n.taints]}})

    def _heartbeat(self, nodes: dict[str, NodeSpec]) -> None:
        """Nothing watches heartbeats (the node lifecycle controller is off); keep capacity true."""

    # --- pods -----------------------------------------------------------------------------------

    def _failure(self, pod: dict[str, Any], predicates: list[Predicate]) -> Failure | None:
        for p in predicates:
            f = p(pod)
            if f is not None:
                return f
        return None

    def _tend(self, pod: dict[str, Any], predicates: list[Predicate]) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if meta.get("deletionTimestamp"):
            try:
                self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0,
                                                body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                            preconditions={"uid": uid}))
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
            self._seen.pop(uid, None)
            return
        failure = self._failure(pod, predicates)
        job = any(o.get("kind") == "Job" for o in meta.get("ownerReferences") or [])
        sig = f"{failure}|{job}"
        if self._seen.get(uid) == sig:
            return
        status = self._pod_status(pod, failure, job)
        try:
            self.core.patch_namespaced_pod_status(name, ns, {"status": status})
        except ApiException as e:
            if e.status in (404, 409):
                return
            raise
        if failure is not None and failure.reason == "Readiness":
            self._probe_event(pod, failure)
        self._seen[uid] = sig

    def _pod_status(self, pod: dict[str, Any], failure: Failure | None, job: bool) -> dict[str, Any]:
        now = _now()
        spec = pod["spec"]
        statuses = []
        ready = failure is None
        for c in spec.get("containers") or []:
            cs: dict[str, Any] = {"name": c["name"], "image": c["image"], "imageID": "", "restartCount": 0,
                                  "ready": ready and not job, "started": True}
            if job and failure is None:
                cs.update(state={"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now,
                                                "finishedAt": now}}, started=False)
            elif failure is None or failure.reason == "Readiness":
                cs["state"] = {"running": {"startedAt": now}}
            else:
                cs.update(started=False, state={"waiting": {"reason": failure.reason,
                                                            **({"message": failure.message} if failure.message else {})}})
                if failure.exit_code is not None:
                    cs["restartCount"] = 3
                    cs["lastState"] = {"terminated": {"exitCode": failure.exit_code, "reason": "Error",
                                                      "startedAt": now, "finishedAt": now}}
            statuses.append(cs)
        phase = "Succeeded" if job and failure is None else \
            "Pending" if failure is not None and failure.reason in ("ImagePullBackOff", "ErrImagePull") else "Running"
        unready = [c["name"] for c in spec.get("containers") or []]
        cond_ready = {"type": "Ready", "status": "True" if ready and not job else "False", "lastTransitionTime": now}
        cont_ready = {"type": "ContainersReady", "status": cond_ready["status"], "lastTransitionTime": now}
        if cond_ready["status"] == "False":
            why = "PodCompleted" if job and failure is None else "ContainersNotReady"
            msg = "" if why == "PodCompleted" else f"containers with unready status: [{' '.join(unready)}]"
            for c in (cond_ready, cont_ready):
                c.update(reason=why, **({"message": msg} if msg else {}))
        return {"phase": phase, "startTime": now, "hostIP": "127.0.0.1",
                "conditions": [{"type": "Initialized", "status": "True", "lastTransitionTime": now},
                               cond_ready, cont_ready,
                               {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": statuses}

    def _probe_event(self, pod: dict[str, Any], failure: Failure) -> None:
        meta = pod["metadata"]
        probe = next((c.get("readinessProbe") for c in pod["spec"].get("containers") or []
                      if c.get("readinessProbe")), None) or {}
        http = probe.get("httpGet") or {}
        detail = failure.message or "HTTP probe failed with statuscode: 503"
        message = f"Readiness probe failed: {detail}" if http else f"Readiness probe failed: {detail}"
        now = _now()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{meta['uid'][:8]}", "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                                   "uid": meta["uid"], "apiVersion": "v1"},
                "reason": "Unhealthy", "message": message, "type": "Warning", "count": 1,
                "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "kubelet"}}
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:
            if e.status != 409:
                raise

    # --- storage --------------------------------------------------------------------------------

    def _ensure_storage_class(self) -> None:
        body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS,
                             "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
        try:
            self.storage.create_storage_class(body)
        except ApiException as e:
            if e.status != 409:
                raise

    def _provision(self) -> None:
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if pvc.status.phase != "Pending" or pvc.spec.volume_name or pvc.spec.storage_class_name != STORAGE_CLASS:
                continue
            name = f"pvc-{pvc.metadata.uid}"
            body = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
                    "spec": {"capacity": {"storage": (pvc.spec.resources.requests or {}).get("storage", "1Gi")},
                             "accessModes": pvc.spec.access_modes, "storageClassName": STORAGE_CLASS,
                             "persistentVolumeReclaimPolicy": "Delete",
                             "hostPath": {"path": f"/var/lib/edgebundle-test/{name}"},
                             "claimRef": {"namespace": pvc.metadata.namespace, "name": pvc.metadata.name,
                                          "uid": pvc.metadata.uid}}}
            try:
                self.core.create_persistent_volume(body)
            except ApiException as e:
                if e.status != 409:
                    raise


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 30.0, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout:g} s")
        time.sleep(poll)
