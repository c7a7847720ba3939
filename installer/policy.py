"""Policy checks on rendered objects: run before any plan is shown; each refusal names the object.

1. Images: every container image of every workload is ``<site registry>/<repo>@<digest>`` of an
   image the bundle carries. Anything else is an unapproved image.
2. Models: every ``/models/<dir>/<name>/<version>`` path a workload's environment points at is a
   model version this bundle stages.
3. Capacity (the seed's quota validation): the pods the workloads ask for fit the allocatable
   memory and GPUs of the cluster's nodes. Pods are packed first-fit-decreasing onto nodes they
   may run on (schedulable, ``nodeSelector`` matches, ``NoSchedule``/``NoExecute`` taints tolerated).
   Allocatable is the node's total for pods; pods of other applications are not subtracted.

Invariant: the checks only read; they never change the objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from edgebundle.errors import EdgebundleError
from edgebundle.progress import human
from edgebundle.root import KIND_DIRS, Root
from installer.render import ObjectKey, Rendered, containers, parse_model_path, pod_spec, site_image


class PolicyError(EdgebundleError):
    """A rendered object breaks site policy; nothing was planned or changed."""


@dataclass(frozen=True)
class Node:
    """What the capacity check needs to know about one node."""

    name: str
    allocatable: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, Any], ...] = ()
    schedulable: bool = True

    @classmethod
    def from_api(cls, obj: dict[str, Any]) -> "Node":
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        return cls(name=str(meta.get("name", "?")), allocatable=dict(status.get("allocatable") or {}),
                   labels=dict(meta.get("labels") or {}), taints=tuple(spec.get("taints") or ()),
                   schedulable=not spec.get("unschedulable", False))


def _refuse(problems: list[str], what: str, hint: str) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise PolicyError(f"{what}: " + "; ".join(problems[:3]) + more, hint=hint)


def check_images(rendered: Rendered, root: Root, registry: str) -> None:
    """Refuse any workload image that is not a bundle image pinned in the site registry."""
    allowed = {site_image(registry, im) for im in root.images}
    problems = []
    for obj in rendered.objects:
        spec = pod_spec(obj)
        for fieldname, c in containers(spec) if spec is not None else ():
            if c.get("image") not in allowed:
                problems.append(f"{ObjectKey.of(obj)} {fieldname[:-1]} {c.get('name')!r} uses image "
                                f"{c.get('image')!r}, which bundle {root.name} {root.version} does not carry")
    _refuse(problems, "unapproved image", "add the image to the bundle spec and rebuild, or fix the "
            "manifest's image reference (repository and tag as in the bundle spec)")


def check_models(rendered: Rendered, root: Root) -> None:
    """Refuse workloads pointing at model versions this bundle does not stage."""
    staged = {(KIND_DIRS[m.kind], m.name, m.version) for m in root.models}
    problems = []
    for obj in rendered.objects:
        spec = pod_spec(obj)
        for _, c in containers(spec) if spec is not None else ():
            for env in c.get("env") or []:
                value = env.get("value") if isinstance(env, dict) else None
                parsed = parse_model_path(value) if isinstance(value, str) else None
                if parsed is not None and parsed[:3] not in staged:
                    problems.append(f"{ObjectKey.of(obj)} container {c.get('name')!r} env "
                                    f"{env.get('name')} points at {value}, a model version this "
                                    "bundle does not stage")
    _refuse(problems, "model not in bundle", "list the model in the workload's edgebundle.dev/models "
            "annotation and in the bundle spec, so the installer pins its version")


# --- capacity ---------------------------------------------------------------------------------

def is_gpu(resource: str) -> bool:
    return "gpu" in resource.lower()


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("512Mi", "2") as a Decimal.

    The client is imported on first use: importing it costs ~0.3 s, paid by every installer
    command (verify, load, stage) that never plans against a cluster.
    """
    from kubernetes.utils import parse_quantity as parse

    return Decimal(parse(value))


def _checked(resource: str) -> bool:
    return resource == "memory" or is_gpu(resource)


def _container_requests(c: dict[str, Any]) -> dict[str, Decimal]:
    """Requests of one container; a limit without a request counts as the request (as the API does)."""
    res = c.get("resources") or {}
    merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
    return {k: parse_quantity(v) for k, v in merged.items() if _checked(k)}


def pod_requests(spec: dict[str, Any]) -> dict[str, Decimal]:
    """Effective requests of one pod: max(sum of app containers, largest init container)."""
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for k, v in _container_requests(c).items():
            total[k] = total.get(k, Decimal(0)) + v
    for c in spec.get("initContainers") or []:
        for k, v in _container_requests(c).items():
            total[k] = max(total.get(k, Decimal(0)), v)
    return total


def pod_count(obj: dict[str, Any]) -> int | None:
    """How many pods a workload runs at once; None for one per eligible node (DaemonSet)."""
    spec = obj.get("spec") or {}
    kind = obj.get("kind")
    if kind == "DaemonSet":
        return None
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
        return int(spec.get("replicas", 1))
    if kind == "Job":
        return int(spec.get("parallelism", 1))
    if kind == "CronJob":
        return int(((spec.get("jobTemplate") or {}).get("spec") or {}).get("parallelism", 1))
    return 1


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if not t.get("key") and t.get("operator") == "Exists":
            return True
        if t.get("key") == taint.get("key") and (
                t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", "")):
            return True
    return False


def eligible(node: Node, spec: dict[str, Any]) -> bool:
    """May a pod with this spec run on the node (schedulable, selector, taints)?"""
    if not node.schedulable:
        return False
    if any(node.labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    hard = [t for t in node.taints if t.get("effect") in ("NoSchedule", "NoExecute")]
    return all(_tolerates(spec.get("tolerations") or [], t) for t in hard)


def _fmt(resource: str, q: Decimal) -> str:
    return human(float(q)) if resource == "memory" else f"{q.normalize():f}"


def _describe(req: dict[str, Decimal]) -> str:
    return ", ".join(f"{k} {_fmt(k, v)}" for k, v in sorted(req.items())) or "nothing"


def check_capacity(objects: list[dict[str, Any]], nodes: list[Node]) -> None:
    """Refuse when the workloads' pods cannot all be placed on the nodes' allocatable memory/GPUs."""
    free = {n.name: {k: parse_quantity(v) for k, v in n.allocatable.items() if _checked(k)} for n in nodes}
    pods: list[tuple[ObjectKey, dict[str, Any], dict[str, Decimal], int, int]] = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        key, req, count = ObjectKey.of(obj), pod_requests(spec), pod_count(obj)
        if count is None:  # DaemonSet: a pod on every node it may run on
            for n in nodes:
                if eligible(n, spec):
                    _place(key, req, 1, 1, [n], free, spec)
            continue
        pods.extend((key, spec, req, i + 1, count) for i in range(count))
    pods.sort(key=lambda p: (-sum(v for k, v in p[2].items() if is_gpu(k)), -p[2].get("memory", Decimal(0))))
    for key, spec, req, i, count in pods:
        _place(key, req, i, count, nodes, free, spec)


def _place(key: ObjectKey, req: dict[str, Decimal], i: int, count: int, nodes: list[Node],
           free: dict[str, dict[str, Decimal]], spec: dict[str, Any]) -> None:
    candidates = [n for n in nodes if eligible(n, spec)]
    fits = [n for n in candidates if all(free[n.name].get(k, Decimal(0)) >= v for k, v in req.items())]
    if not fits:
        if not candidates:
            why = "no schedulable node matches its nodeSelector and tolerations" if nodes else "the cluster has no nodes"
        else:
            why = "left after the pods placed before it: " + "; ".join(
                f"node {n.name} has {_describe({k: free[n.name].get(k, Decimal(0)) for k in req})}"
                for n in candidates[:4])
        raise PolicyError(
            f"{key}: pod {i} of {count} requests {_describe(req)}, which does not fit ({why})",
            hint="lower the workload's requests or replicas, or add capacity (GPU nodes, memory)")
    best = max(fits, key=lambda n: free[n.name].get("memory", Decimal(0)))
    for k, v in req.items():
        free[best.name][k] = free[best.name].get(k, Decimal(0)) - v


def check_all(rendered: Rendered, root: Root, registry: str, nodes: list[Node] | None) -> list[str]:
    """Run every check; return notes for the plan (e.g. what could not be checked)."""
    check_images(rendered, root, registry)
    check_models(rendered, root)
    if nodes is None:
        return ["capacity not checked: the target has no API access to list nodes"]
    check_capacity(rendered.objects, nodes)
    return []
