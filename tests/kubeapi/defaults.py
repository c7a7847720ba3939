"""Server-side defaulting, a subset of what the apiserver fills in on every write.

Invariant: defaulting only adds fields that are absent (plus the few conversions the apiserver
always does: Secret ``stringData`` folded into ``data``, container ``requests`` taken from
``limits``), so a product that re-applies its manifest sees no spurious change, exactly as against a
cluster where defaulted fields are owned by nobody in an apply.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import threading
from typing import Any, Callable

from tests.kubeapi.resources import ResourceType

JSONDict = dict[str, Any]


class IPAllocator:
    """ClusterIPs and NodePorts, unique for the life of a server (k3s service CIDR 10.43.0.0/16)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ips = itertools.count(10)
        self._ports = itertools.count(30000)

    def cluster_ip(self) -> str:
        with self._lock:
            return str(ipaddress.IPv4Address("10.43.0.0") + next(self._ips))

    def node_port(self) -> int:
        with self._lock:
            return next(self._ports)


def _pull_policy(image: str) -> str:
    tail = image.rsplit("/", 1)[-1]
    if "@" in tail:
        return "IfNotPresent"
    return "Always" if ":" not in tail or tail.endswith(":latest") else "IfNotPresent"


def pod_spec(spec: JSONDict) -> None:
    """Default a PodSpec in place."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for field in ("initContainers", "containers"):
        for c in spec.get(field) or []:
            if not isinstance(c, dict):
                continue
            if isinstance(c.get("image"), str) and c["image"]:
                c.setdefault("imagePullPolicy", _pull_policy(c["image"]))
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            res = c.setdefault("resources", {})
            for name, value in (res.get("limits") or {}).items():
                res.setdefault("requests", {}).setdefault(name, value)
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")


def _template(obj: JSONDict, *path: str) -> None:
    cur: Any = obj
    for part in path:
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, dict):
        pod_spec(cur.setdefault("spec", {}))


def _deployment(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj, "spec", "template")


def _statefulset(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(obj, "spec", "template")


def _daemonset(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    spec.setdefault("revisionHistoryLimit", 10)
    _template(obj, "spec", "template")


def _job(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    for key, value in (("backoffLimit", 6), ("completions", 1), ("parallelism", 1),
                       ("completionMode", "NonIndexed"), ("suspend", False)):
        spec.setdefault(key, value)
    uid = obj["metadata"].get("uid", "")
    if not spec.get("manualSelector") and uid:
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        for key, value in (("batch.kubernetes.io/controller-uid", uid), ("controller-uid", uid),
                           ("batch.kubernetes.io/job-name", obj["metadata"]["name"]),
                           ("job-name", obj["metadata"]["name"])):
            labels.setdefault(key, value)
    _template(obj, "spec", "template")


def _cronjob(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    for key, value in (("concurrencyPolicy", "Allow"), ("suspend", False), ("successfulJobsHistoryLimit", 3),
                       ("failedJobsHistoryLimit", 1)):
        spec.setdefault(key, value)
    _template(obj, "spec", "jobTemplate", "spec", "template")


def _pod(obj: JSONDict, ctx: "Context") -> None:
    pod_spec(obj.setdefault("spec", {}))
    obj.setdefault("status", {}).setdefault("phase", "Pending")


def _service(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    old_spec = (ctx.old or {}).get("spec") or {}
    kind = spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
        if kind in ("NodePort", "LoadBalancer") and "nodePort" not in port:
            same = [p for p in old_spec.get("ports") or [] if p.get("port") == port.get("port") and p.get("nodePort")]
            port["nodePort"] = same[0]["nodePort"] if same else ctx.ips.node_port()
    if kind != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_spec.get("clusterIP") or ctx.ips.cluster_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _namespace(obj: JSONDict, ctx: "Context") -> None:
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _secret(obj: JSONDict, ctx: "Context") -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    for key, value in string_data.items():
        obj.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode()


def _pvc(obj: JSONDict, ctx: "Context") -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    if ctx.old is None and "storageClassName" not in spec and ctx.default_storage_class:
        spec["storageClassName"] = ctx.default_storage_class  # the DefaultStorageClass admission plugin
    obj.setdefault("status", {}).setdefault("phase", "Pending")


class Context:
    """What defaulting may look at besides the object: the previous version, allocators, cluster defaults."""

    def __init__(self, old: JSONDict | None, ips: IPAllocator, default_storage_class: str | None) -> None:
        self.old = old
        self.ips = ips
        self.default_storage_class = default_storage_class


DEFAULTERS: dict[tuple[str, str], Callable[[JSONDict, Context], None]] = {
    ("apps", "deployments"): _deployment,
    ("apps", "statefulsets"): _statefulset,
    ("apps", "daemonsets"): _daemonset,
    ("batch", "jobs"): _job,
    ("batch", "cronjobs"): _cronjob,
    ("", "pods"): _pod,
    ("", "services"): _service,
    ("", "namespaces"): _namespace,
    ("", "secrets"): _secret,
    ("", "persistentvolumeclaims"): _pvc,
}


def apply_defaults(rt: ResourceType, obj: JSONDict, old: JSONDict | None, ips: IPAllocator,
                   default_storage_class: str | None = None) -> None:
    """Fill in server defaults (and admission-time defaults) in place."""
    fn = DEFAULTERS.get(rt.key)
    if fn is not None:
        fn(obj, Context(old, ips, default_storage_class))
