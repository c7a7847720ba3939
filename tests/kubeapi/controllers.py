"""Test-side controllers: the scheduler, kubelet and workload controllers a real cluster runs.

They make the API server behave like a live cluster for product code that applies manifests and
then polls for readiness: Deployments, StatefulSets and DaemonSets get Pods, Pods get scheduled
onto seeded Nodes by their resource requests (cpu, memory, nvidia.com/gpu) and become Ready, and the
workload status (observedGeneration, replicas, readyReplicas, conditions, ...) follows; Jobs
complete, PVCs bind, LoadBalancer Services get an address.

Invariants:
- Every reconcile is idempotent: a pass over an unchanged cluster writes nothing (so it does not
  bump resourceVersions), and one ``run_once`` takes a fresh or updated workload to its final state.
- Failure is only ever injected by the test (``KubeAPIServer.fail_workload``/``fail_when``) or
  follows from the cluster itself (a pod that fits on no node stays Pending). A failing workload's
  pods wait in the injected reason (CrashLoopBackOff, ImagePullBackOff, ...) with a Warning Event,
  and a rolling update to a failing template keeps the old ready pods, as a real Deployment does.
- Status fields that Kubernetes marks ``omitempty`` are omitted when zero, as the apiserver sends them.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from decimal import Decimal
from typing import Any, Callable

from kubernetes.utils import parse_quantity

from tests.kubeapi.errors import ApiError
from tests.kubeapi.server import Failure, KubeAPIServer

JSONDict = dict[str, Any]
MANAGER = "kube-controller-manager"
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
PULL_FAILURES = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError")


def _hash(value: Any, length: int = 10) -> str:
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:length])


def _meta(obj: JSONDict) -> JSONDict:
    return obj.get("metadata") or {}


def _compact(status: JSONDict, *omit_empty: str) -> JSONDict:
    """Drop the ``omitempty`` integer fields that are zero."""
    return {k: v for k, v in status.items() if not (k in omit_empty and not v)}


def _ready(pod: JSONDict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _condition(prev: JSONDict | None, ctype: str, status: str, reason: str, message: str, now: str,
               update_time: bool = True) -> JSONDict:
    """A condition whose timestamps only move when its status changes (keeps reconciles idempotent)."""
    old: JSONDict = next((c for c in (prev or {}).get("conditions") or [] if c.get("type") == ctype), {})
    same = old.get("status") == status
    cond: JSONDict = {"type": ctype, "status": status}
    if update_time:
        cond["lastUpdateTime"] = old.get("lastUpdateTime", now) if same and old.get("reason") == reason else now
    cond["lastTransitionTime"] = old.get("lastTransitionTime", now) if same else now
    cond["reason"], cond["message"] = reason, message
    return cond


def _requests(pod: JSONDict) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for name, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[name] = total.get(name, Decimal(0)) + parse_quantity(value)
    return total


class Controllers:
    """Reconcile the whole cluster: ``run_once()`` explicitly, or ``start()`` a background thread."""

    def __init__(self, server: KubeAPIServer, interval: float = 0.05) -> None:
        self.server = server
        self.store = server.store
        self.interval = interval
        self.errors: list[BaseException] = []
        self._progress: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pass_lock = threading.Lock()
        self.rt = {k: server.resource(k) for k in ("pods", "deployments", "statefulsets", "daemonsets", "jobs",
                                                   "nodes", "persistentvolumeclaims", "persistentvolumes",
                                                   "services", "events")}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Controllers":
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="kubeapi-controllers", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self.store.lock:
            self.store.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "Controllers":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settle(self, max_passes: int = 20) -> None:
        """Reconcile until a pass changes nothing (deterministic alternative to waiting)."""
        for _ in range(max_passes):
            before = self.store.resource_version
            self.run_once()
            if self.store.resource_version == before:
                return
        raise RuntimeError(f"controllers did not settle in {max_passes} passes")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as e:  # keep reconciling; the fixture reports errors at teardown
                self.errors.append(e)
            with self.store.lock:
                if not self._stop.is_set():
                    self.store.changed.wait(self.interval)

    def run_once(self) -> None:
        """One full reconcile pass: workloads create pods, pods get scheduled and run, status follows."""
        with self._pass_lock:
            kinds = ("deployments", "statefulsets", "daemonsets", "jobs")
            workloads = {kind: self.store.find(self.rt[kind]) for kind in kinds}
            syncs = (self._sync_deployment_pods, self._sync_statefulset_pods, self._sync_daemonset_pods,
                     self._sync_job_pods)
            statuses = (self._deployment_status, self._statefulset_status, self._daemonset_status, self._job_status)
            for kind, sync in zip(kinds, syncs):
                self._each(sync, workloads[kind])
            pods = self.store.find(self.rt["pods"])
            self._each(lambda pod: self._kubelet(pod, pods), pods)
            for kind, status in zip(kinds, statuses):
                self._each(status, workloads[kind])
            self._each(self._bind_claim, self.store.find(self.rt["persistentvolumeclaims"]))
            self._each(self._load_balancer, self.store.find(self.rt["services"]))

    @staticmethod
    def _each(reconcile: Callable[[JSONDict], None], objects: list[JSONDict]) -> None:
        """Reconcile each object; one that vanished or changed under us (404/409) waits for the next pass."""
        for obj in objects:
            try:
                reconcile(obj)
            except ApiError as e:
                if e.code not in (404, 409):
                    raise

    # -- pods of workloads -------------------------------------------------------------------

    def _owned(self, owner: JSONDict) -> list[JSONDict]:
        uid = _meta(owner).get("uid")
        return [p for p in self.store.find(self.rt["pods"], _meta(owner).get("namespace"))
                if any(r.get("uid") == uid for r in _meta(p).get("ownerReferences") or [])]

    def _make_pod(self, owner: JSONDict, name: str, labels: dict[str, str], node: str | None = None,
                  extra_spec: JSONDict | None = None) -> None:
        template = (owner.get("spec") or {}).get("template") or {}
        tmeta = template.get("metadata") or {}
        spec = {**json.loads(json.dumps(template.get("spec") or {})), **(extra_spec or {})}
        if node:
            spec["nodeName"] = node
        body: JSONDict = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "namespace": _meta(owner)["namespace"],
            "labels": {**(tmeta.get("labels") or {}), **labels},
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": _meta(owner)["name"],
                                 "uid": _meta(owner)["uid"], "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec}
        if not body["metadata"]["annotations"]:
            del body["metadata"]["annotations"]
        try:
            self.store.create(self.rt["pods"], _meta(owner)["namespace"], body, MANAGER)
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise

    def _template_hash(self, owner: JSONDict) -> str:
        return _hash((owner.get("spec") or {}).get("template") or {})

    def _sync_deployment_pods(self, dep: JSONDict) -> None:
        name, ns, h = _meta(dep)["name"], _meta(dep)["namespace"], self._template_hash(dep)
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        want = {f"{name}-{h}-{_hash([h, i], 5)}" for i in range(replicas)}
        for pod in self._owned(dep):
            if (_meta(pod).get("labels") or {}).get("pod-template-hash") == h and _meta(pod)["name"] not in want:
                self.store.remove(self.rt["pods"], ns, _meta(pod)["name"])
        for pod_name in sorted(want):
            self._make_pod(dep, pod_name, {"pod-template-hash": h})

    def _sync_statefulset_pods(self, sts: JSONDict) -> None:
        name, ns, h = _meta(sts)["name"], _meta(sts)["namespace"], self._template_hash(sts)
        spec = sts.get("spec") or {}
        replicas = spec.get("replicas", 1)
        revision = f"{name}-{h}"
        for pod in self._owned(sts):
            ordinal = _meta(pod)["name"].rsplit("-", 1)[-1]
            stale = (_meta(pod).get("labels") or {}).get("controller-revision-hash") != revision
            if stale or not ordinal.isdigit() or int(ordinal) >= replicas:
                self.store.remove(self.rt["pods"], ns, _meta(pod)["name"])
        for i in range(replicas):
            pod_name = f"{name}-{i}"
            for claim in spec.get("volumeClaimTemplates") or []:
                self._ensure_claim(ns, f"{_meta(claim)['name']}-{pod_name}", claim)
            self._make_pod(sts, pod_name, {"controller-revision-hash": revision,
                                           "statefulset.kubernetes.io/pod-name": pod_name,
                                           "apps.kubernetes.io/pod-index": str(i)},
                           extra_spec={"hostname": pod_name, "subdomain": spec.get("serviceName", "")}
                           if spec.get("serviceName") else {"hostname": pod_name})

    def _ensure_claim(self, ns: str, name: str, template: JSONDict) -> None:
        body = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": ns, "labels": dict(_meta(template).get("labels") or {})},
                "spec": json.loads(json.dumps(template.get("spec") or {}))}
        try:
            self.store.create(self.rt["persistentvolumeclaims"], ns, body, MANAGER)
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise

    def _eligible_nodes(self, template_spec: JSONDict) -> list[JSONDict]:
        selector = template_spec.get("nodeSelector") or {}
        return [n for n in self.store.find(self.rt["nodes"])
                if _ready(n) and all((_meta(n).get("labels") or {}).get(k) == v for k, v in selector.items())]

    def _sync_daemonset_pods(self, ds: JSONDict) -> None:
        name, ns, h = _meta(ds)["name"], _meta(ds)["namespace"], self._template_hash(ds)
        template_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        want = {n["metadata"]["name"]: f"{name}-{_hash([h, n['metadata']['name']], 5)}"
                for n in self._eligible_nodes(template_spec)}
        for pod in self._owned(ds):
            if _meta(pod)["name"] not in want.values():
                self.store.remove(self.rt["pods"], ns, _meta(pod)["name"])
        for node, pod_name in sorted(want.items()):
            self._make_pod(ds, pod_name, {"controller-revision-hash": h, "pod-template-generation":
                                          str(_meta(ds).get("generation", 1))}, node=node)

    def _sync_job_pods(self, job: JSONDict) -> None:
        spec = job.get("spec") or {}
        if spec.get("suspend"):
            return
        name = _meta(job)["name"]
        for i in range(spec.get("completions") or 1):
            self._make_pod(job, f"{name}-{_hash([_meta(job)['uid'], i], 5)}", {})

    # -- scheduler and kubelet ---------------------------------------------------------------

    def _owner(self, pod: JSONDict) -> JSONDict | None:
        for ref in _meta(pod).get("ownerReferences") or []:
            kind = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets",
                    "Job": "jobs"}.get(ref.get("kind", ""))
            if kind is not None:
                try:
                    return self.store.get(self.rt[kind], _meta(pod)["namespace"], ref["name"])
                except ApiError:
                    return None
        return None

    @staticmethod
    def _as_built(owner: JSONDict, pod: JSONDict) -> JSONDict:
        """The owner as it was when it made ``pod``: its template replaced by the pod's own spec.

        Failure predicates look at a workload's template; during a rolling update the old pods must
        be judged by the template they were built from, not the new one.
        """
        view = json.loads(json.dumps(owner))
        template = (view.get("spec") or {}).get("template")
        if isinstance(template, dict):
            template["spec"] = {k: v for k, v in (pod.get("spec") or {}).items() if k != "nodeName"}
        return view

    def _schedule(self, pod: JSONDict, pods: list[JSONDict]) -> tuple[str | None, str]:
        """Pick a node by nodeSelector and allocatable minus requests; else the scheduler's message."""
        nodes = self.store.find(self.rt["nodes"])
        need = _requests(pod)
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        reasons: dict[str, int] = {}
        fits: list[tuple[int, str]] = []
        for node in nodes:
            node_name = node["metadata"]["name"]
            why: list[str] = []
            if not all((_meta(node).get("labels") or {}).get(k) == v for k, v in selector.items()):
                why.append("node(s) didn't match Pod's node affinity/selector")
            elif (node.get("spec") or {}).get("unschedulable"):
                why.append("node(s) were unschedulable")
            else:
                running = [p for p in pods if (p.get("spec") or {}).get("nodeName") == node_name
                           and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
                allocatable = {k: parse_quantity(v) for k, v in ((node.get("status") or {}).get("allocatable") or {}).items()}
                for res, amount in sorted(need.items()):
                    used = sum((_requests(p).get(res, Decimal(0)) for p in running), Decimal(0))
                    if used + amount > allocatable.get(res, Decimal(0)):
                        why.append(f"Insufficient {res}")
                if not why:
                    fits.append((len(running), node_name))
            for reason in why:
                reasons[reason] = reasons.get(reason, 0) + 1
        if fits:
            return min(fits)[1], ""
        n = len(nodes)
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return None, (f"0/{n} nodes are available: {detail}. preemption: 0/{n} nodes are available: "
                      f"{n} No preemption victims found for incoming pod.")

    def _kubelet(self, pod: JSONDict, pods: list[JSONDict]) -> None:
        """Schedule one pod (binding it to a node) and report its containers' state."""
        meta, status = _meta(pod), pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            return
        owner = self._owner(pod)
        failure = self.server.failure_for(self._as_built(owner, pod) if owner is not None else pod)
        node = (pod.get("spec") or {}).get("nodeName")
        now = self.store.now()
        if not node:
            node, message = self._schedule(pod, pods)
            if node is None:
                self._put_pod_status(pod, self._pending_status(status, message, now))
                self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler", "")
                return
            pod = self.store.bind(self.rt["pods"], meta["namespace"], meta["name"], node)
            pods[:] = [p if _meta(p)["uid"] != meta["uid"] else pod for p in pods]
        job = owner is not None and owner.get("kind") == "Job"
        self._put_pod_status(pod, self._pod_status(pod, failure, job, now))
        if failure is not None:
            self._failure_event(pod, failure, node)

    def _put_pod_status(self, pod: JSONDict, status: JSONDict) -> None:
        self.store.put_status(self.rt["pods"], _meta(pod)["namespace"], _meta(pod)["name"], status, "k3s")

    @staticmethod
    def _pending_status(prev: JSONDict, message: str, now: str) -> JSONDict:
        return {"phase": "Pending", "conditions": [
            _condition(prev, "PodScheduled", "False", "Unschedulable", message, now, update_time=False)],
            "qosClass": prev.get("qosClass", "BestEffort")}

    @staticmethod
    def _pod_status(pod: JSONDict, failure: Failure | None, job: bool, now: str) -> JSONDict:
        prev = pod.get("status") or {}
        containers = (pod.get("spec") or {}).get("containers") or []
        started = prev.get("startTime", now)
        statuses = []
        for c in containers:
            base = {"name": c.get("name"), "image": c.get("image"), "imageID": "", "containerID": ""}
            if job:
                code = failure.exit_code if failure else 0
                state = {"terminated": {"exitCode": code, "reason": "Error" if failure else "Completed",
                                        "startedAt": started, "finishedAt": started}}
                statuses.append({**base, "ready": False, "started": False, "restartCount": 0, "state": state})
            elif failure is not None:
                waiting = {"reason": failure.reason, "message": failure.message or
                           (f"back-off 5m0s restarting failed container={c.get('name')} pod={_meta(pod)['name']}"
                            f"_{_meta(pod)['namespace']}({_meta(pod)['uid']})")}
                entry = {**base, "ready": False, "started": False, "restartCount": 0, "state": {"waiting": waiting}}
                if failure.reason not in PULL_FAILURES:
                    entry["restartCount"] = 5
                    entry["lastState"] = {"terminated": {"exitCode": failure.exit_code, "reason": "Error",
                                                         "startedAt": started, "finishedAt": started}}
                statuses.append(entry)
            else:
                statuses.append({**base, "ready": True, "started": True, "restartCount": 0,
                                 "state": {"running": {"startedAt": started}}})
        ready = failure is None and not job
        names = ",".join(c.get("name", "") for c in containers)
        conditions = [
            _condition(prev, "PodScheduled", "True", "", "", now, update_time=False),
            _condition(prev, "Initialized", "True", "", "", now, update_time=False),
            _condition(prev, "ContainersReady", "True" if ready else "False", "" if ready else "ContainersNotReady",
                       "" if ready else f"containers with unready status: [{names}]", now, update_time=False),
            _condition(prev, "Ready", "True" if ready else "False", "" if ready else "ContainersNotReady",
                       "" if ready else f"containers with unready status: [{names}]", now, update_time=False),
        ]
        for cond in conditions:
            if not cond["reason"]:
                del cond["reason"], cond["message"]
        if job:
            phase = "Failed" if failure else "Succeeded"
        elif failure is not None and failure.reason in PULL_FAILURES:
            phase = "Pending"
        else:
            phase = "Running"
        qos = "Guaranteed" if containers and all((c.get("resources") or {}).get("limits") for c in containers) else \
            "Burstable" if any((c.get("resources") or {}).get("requests") for c in containers) else "BestEffort"
        return {"phase": phase, "conditions": conditions, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": prev.get("podIP") or f"10.42.0.{int(_hash(_meta(pod)['uid'], 2).encode().hex(), 16) % 250 + 2}",
                "startTime": started, "containerStatuses": statuses, "qosClass": qos}

    def _failure_event(self, pod: JSONDict, failure: Failure, node: str) -> None:
        if failure.reason in PULL_FAILURES:
            images = ", ".join(c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or [])
            message = f'Failed to pull image "{images}": {failure.message or failure.reason}'
            self._event(pod, "Warning", "Failed", message, "kubelet", node)
        else:
            container = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name", "")
            message = f"Back-off restarting failed container {container} in pod {_meta(pod)['name']}_{_meta(pod)['namespace']}({_meta(pod)['uid']})"
            self._event(pod, "Warning", "BackOff", message, "kubelet", node)
            if failure.message and not self.server.pod_log(_meta(pod)["namespace"], _meta(pod)["name"]):
                self.server.set_pod_log(_meta(pod)["namespace"], _meta(pod)["name"], failure.message + "\n")

    def _event(self, obj: JSONDict, etype: str, reason: str, message: str, component: str, host: str) -> None:
        meta = _meta(obj)
        now = self.store.now()
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{_hash([meta['uid'], reason, message], 16)}",
                             "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": obj.get("kind", "Pod"),
                                   "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                "reason": reason, "message": message, "type": etype, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": component, **({"host": host} if host else {})},
                "reportingComponent": component, "reportingInstance": host}
        try:
            self.store.create(self.rt["events"], meta["namespace"], body, component)
        except ApiError as e:
            if e.reason not in ("AlreadyExists", "NotFound"):
                raise

    # -- workload status ---------------------------------------------------------------------

    def _fresh(self, kind: str, obj: JSONDict) -> JSONDict | None:
        try:
            return self.store.get(self.rt[kind], _meta(obj)["namespace"], _meta(obj)["name"])
        except ApiError:
            return None

    def _deadline_passed(self, obj: JSONDict, revision: str, complete: bool, failure: Failure | None) -> bool:
        """Track when progress towards ``revision`` started; True once progressDeadlineSeconds passed."""
        key = (_meta(obj)["uid"], revision)
        if complete:
            self._progress.pop(key, None)
            return False
        started = self._progress.setdefault(key, time.monotonic())
        deadline = (obj.get("spec") or {}).get("progressDeadlineSeconds", 600)
        return bool(failure and failure.deadline_exceeded) or time.monotonic() - started > deadline

    def _deployment_status(self, dep: JSONDict) -> None:
        dep = self._fresh("deployments", dep) or {}
        if not dep:
            return
        ns, name, h = _meta(dep)["namespace"], _meta(dep)["name"], self._template_hash(dep)
        spec, prev = dep.get("spec") or {}, dep.get("status") or {}
        replicas = spec.get("replicas", 1)
        pods = self._owned(dep)
        new = [p for p in pods if (_meta(p).get("labels") or {}).get("pod-template-hash") == h]
        if len(new) >= replicas and all(_ready(p) for p in new):
            for p in pods:
                if p not in new:
                    self.store.remove(self.rt["pods"], ns, _meta(p)["name"])
            pods = new
        ready = sum(1 for p in pods if _ready(p))
        complete = len(new) == replicas and len(pods) == replicas and all(_ready(p) for p in new)
        max_unavailable = (spec.get("strategy") or {}).get("rollingUpdate", {}).get("maxUnavailable", "25%")
        if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
            max_unavailable = math.floor(replicas * int(max_unavailable[:-1]) / 100)
        available = ready >= replicas - int(max_unavailable)
        failure = self.server.failure_for(dep)
        now = self.store.now()
        rs = f'ReplicaSet "{name}-{h}"'
        if available:
            avail = _condition(prev, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
        else:
            message = (failure.message if failure and failure.message else "Deployment does not have minimum availability.")
            avail = _condition(prev, "Available", "False", "MinimumReplicasUnavailable", message, now)
        if complete:
            prog = _condition(prev, "Progressing", "True", "NewReplicaSetAvailable", f"{rs} has successfully progressed.", now)
        elif self._deadline_passed(dep, h, complete, failure):
            prog = _condition(prev, "Progressing", "False", "ProgressDeadlineExceeded", f"{rs} has timed out progressing.", now)
        else:
            prog = _condition(prev, "Progressing", "True", "ReplicaSetUpdated", f"{rs} is progressing.", now)
        if complete:
            self._deadline_passed(dep, h, True, None)
        status = _compact({
            "observedGeneration": _meta(dep).get("generation", 1), "replicas": len(pods),
            "updatedReplicas": len(new), "readyReplicas": ready, "availableReplicas": ready,
            "unavailableReplicas": max(replicas - ready, 0), "conditions": [avail, prog]},
            "replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")
        self.store.put_status(self.rt["deployments"], ns, name, status)

    def _statefulset_status(self, sts: JSONDict) -> None:
        sts = self._fresh("statefulsets", sts) or {}
        if not sts:
            return
        revision = f"{_meta(sts)['name']}-{self._template_hash(sts)}"
        pods = self._owned(sts)
        ready = sum(1 for p in pods if _ready(p))
        updated = sum(1 for p in pods if (_meta(p).get("labels") or {}).get("controller-revision-hash") == revision)
        replicas = (sts.get("spec") or {}).get("replicas", 1)
        done = updated == replicas and ready == replicas
        prev_current = (sts.get("status") or {}).get("currentRevision", revision)
        status = _compact({
            "observedGeneration": _meta(sts).get("generation", 1), "replicas": len(pods), "readyReplicas": ready,
            "currentReplicas": updated if done else len(pods) - updated, "updatedReplicas": updated,
            "availableReplicas": ready, "currentRevision": revision if done else prev_current,
            "updateRevision": revision, "collisionCount": 0},
            "readyReplicas", "currentReplicas", "updatedReplicas")
        self.store.put_status(self.rt["statefulsets"], _meta(sts)["namespace"], _meta(sts)["name"], status)

    def _daemonset_status(self, ds: JSONDict) -> None:
        ds = self._fresh("daemonsets", ds) or {}
        if not ds:
            return
        template_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        desired = len(self._eligible_nodes(template_spec))
        h = self._template_hash(ds)
        pods = self._owned(ds)
        ready = sum(1 for p in pods if _ready(p))
        status = _compact({
            "currentNumberScheduled": len(pods), "desiredNumberScheduled": desired, "numberMisscheduled": 0,
            "numberReady": ready, "observedGeneration": _meta(ds).get("generation", 1),
            "updatedNumberScheduled": sum(1 for p in pods if (_meta(p).get("labels") or {}).get("controller-revision-hash") == h),
            "numberAvailable": ready, "numberUnavailable": max(desired - ready, 0)},
            "updatedNumberScheduled", "numberAvailable", "numberUnavailable")
        self.store.put_status(self.rt["daemonsets"], _meta(ds)["namespace"], _meta(ds)["name"], status)

    def _job_status(self, job: JSONDict) -> None:
        job = self._fresh("jobs", job) or {}
        if not job or (job.get("spec") or {}).get("suspend"):
            return
        prev = job.get("status") or {}
        pods = self._owned(job)
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        succeeded, failed = phases.count("Succeeded"), phases.count("Failed")
        completions = (job.get("spec") or {}).get("completions") or 1
        now = self.store.now()
        status: JSONDict = {"startTime": prev.get("startTime", now), "ready": 0, "terminating": 0,
                            "uncountedTerminatedPods": {}}
        if failed:
            status["conditions"] = [
                _condition(prev, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now, update_time=False),
                _condition(prev, "Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now, update_time=False)]
            for cond in status["conditions"]:
                cond["lastProbeTime"] = cond["lastTransitionTime"]
            status["failed"] = failed
        elif succeeded >= completions:
            status["conditions"] = [
                _condition(prev, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now, update_time=False),
                _condition(prev, "Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now, update_time=False)]
            for cond in status["conditions"]:
                cond["lastProbeTime"] = cond["lastTransitionTime"]
            status["completionTime"] = prev.get("completionTime", now)
        else:
            status["active"] = len(pods) - succeeded - failed
        if succeeded:
            status["succeeded"] = succeeded
        self.store.put_status(self.rt["jobs"], _meta(job)["namespace"], _meta(job)["name"], status)

    # -- storage and services ----------------------------------------------------------------

    def _bind_claim(self, pvc: JSONDict) -> None:
        """Dynamic provisioning: a PersistentVolume for the claim, and the claim Bound to it."""
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return
        meta, spec = _meta(pvc), pvc.get("spec") or {}
        volume = f"pvc-{meta['uid']}"
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        self.store.ensure(self.rt["persistentvolumes"], {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
            "spec": {"capacity": {"storage": storage}, "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete",
                     "storageClassName": spec.get("storageClassName") or "local-path",
                     "hostPath": {"path": f"/var/lib/rancher/k3s/storage/{volume}", "type": "DirectoryOrCreate"},
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": meta["name"],
                                  "namespace": meta["namespace"], "uid": meta["uid"]}},
            "status": {"phase": "Bound"}})
        self.store.patch(self.rt["persistentvolumeclaims"], meta["namespace"], meta["name"],
                         "application/merge-patch+json", {"spec": {"volumeName": volume}}, MANAGER)
        self.store.put_status(self.rt["persistentvolumeclaims"], meta["namespace"], meta["name"], {
            "phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "capacity": {"storage": storage}})

    def _load_balancer(self, svc: JSONDict) -> None:
        """k3s servicelb: LoadBalancer Services get the node address."""
        if (svc.get("spec") or {}).get("type") == "LoadBalancer":
            self.store.put_status(self.rt["services"], _meta(svc)["namespace"], _meta(svc)["name"],
                                  {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}})
