"""Is a revision healthy? Judge each workload from its status, as ``kubectl rollout status`` does.

- Deployment: the controller observed the current generation, every replica is updated and
  available, no old replicas linger; ``Progressing=False/ProgressDeadlineExceeded`` or
  ``ReplicaFailure=True`` fails at once.
- StatefulSet: observed generation, ``readyReplicas`` and ``updatedReplicas`` reach ``replicas``,
  and ``currentRevision == updateRevision`` once the controller reports both.
- DaemonSet: every scheduled pod is updated and available.
- Job: ``Complete=True``; ``Failed=True`` fails. A bare Pod: Ready (or Succeeded).
- Everything else (Services, ConfigMaps, CronJobs...) is healthy once it exists.

When a workload is not ready, the reason is taken from its conditions and, more usefully, from its
pods: a container's waiting reason (``ImagePullBackOff``, ``CrashLoopBackOff`` with the last exit),
an unschedulable pod's message. Reasons that cannot resolve themselves fail at once.

Invariant: judging is a pure function of the objects read; :func:`wait_healthy` only polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edgebundle.errors import EdgebundleError
from installer.render import ObjectKey

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"})
#: Pod waiting reasons that will not go away by waiting.
HOPELESS = frozenset({"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"})
DEFAULT_TIMEOUT = 300.0


class HealthError(EdgebundleError):
    """A workload did not become healthy; the message names it and why."""

    def __init__(self, key: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"{key} is not healthy: {reason}", hint=hint)
        self.key, self.reason = key, reason


@dataclass(frozen=True)
class Verdict:
    state: str  # "ready" | "waiting" | "failed"
    reason: str = ""


READY = Verdict("ready")


class Reader(Protocol):
    def get(self, obj: dict[str, Any]) -> dict[str, Any] | None: ...

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]: ...


def _cond(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def _observed(obj: dict[str, Any]) -> bool:
    gen = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return gen is None or (observed is not None and observed >= gen)


def _desired(obj: dict[str, Any]) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def judge_deployment(obj: dict[str, Any]) -> Verdict:
    st = obj.get("status") or {}
    if not _observed(obj):
        return Verdict("waiting", "the controller has not observed the new spec yet")
    prog = _cond(st, "Progressing")
    if prog and prog.get("status") == "False" and prog.get("reason") == "ProgressDeadlineExceeded":
        return Verdict("failed", f"ProgressDeadlineExceeded: {prog.get('message', '')}".rstrip(": "))
    fail = _cond(st, "ReplicaFailure")
    if fail and fail.get("status") == "True":
        return Verdict("failed", f"{fail.get('reason', 'ReplicaFailure')}: {fail.get('message', '')}")
    want, updated = _desired(obj), int(st.get("updatedReplicas", 0))
    if updated < want:
        return Verdict("waiting", f"{updated} of {want} replicas updated")
    if int(st.get("replicas", 0)) > updated:
        return Verdict("waiting", f"{int(st.get('replicas', 0)) - updated} old replicas pending termination")
    available = int(st.get("availableReplicas", 0))
    if available < updated:
        avail = _cond(st, "Available")
        why = f" ({avail.get('reason')}: {avail.get('message', '')})" if avail and avail.get("status") == "False" else ""
        return Verdict("waiting", f"{available} of {updated} updated replicas available{why}")
    return READY


def judge_statefulset(obj: dict[str, Any]) -> Verdict:
    st = obj.get("status") or {}
    if not _observed(obj):
        return Verdict("waiting", "the controller has not observed the new spec yet")
    want = _desired(obj)
    ready = int(st.get("readyReplicas", 0))
    if ready < want:
        return Verdict("waiting", f"{ready} of {want} replicas ready")
    if "updatedReplicas" in st and int(st["updatedReplicas"]) < want:
        return Verdict("waiting", f"{st['updatedReplicas']} of {want} replicas updated")
    cur, upd = st.get("currentRevision"), st.get("updateRevision")
    if cur and upd and cur != upd:
        return Verdict("waiting", f"rolling from revision {cur} to {upd}")
    return READY


def judge_daemonset(obj: dict[str, Any]) -> Verdict:
    st = obj.get("status") or {}
    if not _observed(obj):
        return Verdict("waiting", "the controller has not observed the new spec yet")
    want = int(st.get("desiredNumberScheduled", 0))
    if int(st.get("updatedNumberScheduled", 0)) < want:
        return Verdict("waiting", f"{st.get('updatedNumberScheduled', 0)} of {want} pods updated")
    if int(st.get("numberAvailable", 0)) < want:
        return Verdict("waiting", f"{st.get('numberAvailable', 0)} of {want} pods available")
    return READY


def judge_job(obj: dict[str, Any]) -> Verdict:
    st = obj.get("status") or {}
    failed = _cond(st, "Failed")
    if failed and failed.get("status") == "True":
        return Verdict("failed", f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".rstrip(": "))
    done = _cond(st, "Complete")
    if done and done.get("status") == "True":
        return READY
    return Verdict("waiting", f"{st.get('succeeded', 0)} pods succeeded, {st.get('active', 0)} active")


def judge_pod(obj: dict[str, Any]) -> Verdict:
    st = obj.get("status") or {}
    if st.get("phase") == "Succeeded":
        return READY
    if st.get("phase") == "Failed":
        return Verdict("failed", f"pod failed: {st.get('reason', '')} {st.get('message', '')}".strip())
    ready = _cond(st, "Ready")
    if ready and ready.get("status") == "True":
        return READY
    return Verdict("waiting", pod_reason(obj) or f"pod is {st.get('phase', 'Pending')}")


JUDGES: dict[str, Callable[[dict[str, Any]], Verdict]] = {
    "Deployment": judge_deployment, "StatefulSet": judge_statefulset, "DaemonSet": judge_daemonset,
    "Job": judge_job, "Pod": judge_pod,
}


def pod_reason(pod: dict[str, Any]) -> str:
    """The most telling reason a pod is not ready, or "" if it has none to give."""
    st = pod.get("status") or {}
    name = (pod.get("metadata") or {}).get("name", "?")
    for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in ("ContainerCreating", "PodInitializing"):
            last = ((cs.get("lastState") or {}).get("terminated") or {})
            exit_info = f" (last exit {last.get('exitCode')}: {last.get('reason', '')})" if last else ""
            msg = f": {waiting['message']}" if waiting.get("message") else ""
            return f"pod {name} container {cs.get('name')}: {reason}{msg}{exit_info}"
        term = (cs.get("state") or {}).get("terminated") or {}
        if term and term.get("exitCode", 0) != 0:
            return f"pod {name} container {cs.get('name')} exited {term.get('exitCode')}: {term.get('reason', '')}"
    sched = _cond(st, "PodScheduled")
    if sched and sched.get("status") == "False":
        return f"pod {name} unschedulable: {sched.get('message') or sched.get('reason', '')}"
    ready = _cond(st, "Ready")
    if ready and ready.get("status") == "False":
        probe = _unready_probe(pod)
        since = _since(ready.get("lastTransitionTime"))
        if probe:
            return f"pod {name} {probe} failing" + (f" for {since}" if since else "")
        if ready.get("message") or ready.get("reason"):
            return f"pod {name} not ready: {ready.get('message') or ready.get('reason')}" + \
                (f" for {since}" if since else "")
    return ""


def _unready_probe(pod: dict[str, Any]) -> str:
    """``container C: readiness probe GET :PORT/PATH`` for a running container that is not ready."""
    spec = pod.get("spec") or {}
    statuses = {cs.get("name"): cs for cs in (pod.get("status") or {}).get("containerStatuses") or []}
    for c in spec.get("containers") or []:
        cs = statuses.get(c.get("name")) or {}
        probe = c.get("readinessProbe") or {}
        if cs.get("ready") or not (cs.get("state") or {}).get("running") or not probe:
            continue
        if probe.get("httpGet"):
            http = probe["httpGet"]
            how = f"GET :{http.get('port', '')}{http.get('path', '/')}"
        elif probe.get("tcpSocket"):
            how = f"TCP :{probe['tcpSocket'].get('port', '')}"
        elif probe.get("exec"):
            how = "exec " + " ".join(map(str, (probe["exec"].get("command") or [])))[:60]
        else:
            how = "check"
        return f"container {c.get('name')}: readiness probe {how}"
    return ""


def _since(stamp: Any) -> str:
    """How long ago a Kubernetes timestamp was, as ``42 s`` ("" when unknown)."""
    import datetime

    if isinstance(stamp, str):
        try:
            stamp = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return ""
    if not isinstance(stamp, datetime.datetime):
        return ""
    secs = (datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()
    return f"{max(0, int(secs))} s"


def _last_event(reader: "Reader", pod: dict[str, Any]) -> str:
    """The newest Warning event about ``pod`` (a kubelet's probe failure, a pull error)."""
    meta = pod.get("metadata") or {}
    try:
        events = reader.list("v1", "Event", meta.get("namespace"),
                             field_selector=f"involvedObject.name={meta.get('name')}")
    except Exception:  # noqa: BLE001 - events are a courtesy: the verdict stands without them
        return ""
    warnings = [e for e in events if e.get("type") == "Warning" and e.get("message")]
    if not warnings:
        return ""
    newest = max(warnings, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return str(newest["message"])[:200]


def _selector(obj: dict[str, Any]) -> str | None:
    match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(match.items())) or None


def _current(pod: dict[str, Any], live: dict[str, Any]) -> bool:
    """Was the pod made from the workload's current template (same images and env per container)?

    Pods of the previous template may still be failing while a rollback is on its way; their
    reasons must not be taken for the new template's.
    """
    template = ((live.get("spec") or {}).get("template") or {}).get("spec") or {}
    have = {c.get("name"): c for c in (pod.get("spec") or {}).get("containers") or []}
    for c in template.get("containers") or []:
        p = have.get(c.get("name"))
        if p is None or p.get("image") != c.get("image") or (p.get("env") or []) != (c.get("env") or []):
            return False
    return True


def check(reader: Reader, obj: dict[str, Any]) -> Verdict:
    """Judge one object as it is live now, adding pod reasons when it is not ready."""
    live = reader.get(obj)
    key = ObjectKey.of(obj)
    if live is None:
        return Verdict("waiting", "does not exist")
    judge = JUDGES.get(key.kind)
    if judge is None:
        return READY
    verdict = judge(live)
    if verdict.state != "waiting" or key.kind == "Pod":
        return verdict
    selector = _selector(live)
    if selector is None:
        return verdict
    for pod in reader.list("v1", "Pod", key.namespace, selector):
        why = pod_reason(pod) if _current(pod, live) else ""
        if why:
            hopeless = any(r in why for r in HOPELESS)
            event = _last_event(reader, pod)
            if event and event not in why:
                why = f"{why}: {event}"
            return Verdict("failed" if hopeless else "waiting", f"{why} ({verdict.reason})")
    return verdict


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") in WORKLOAD_KINDS]


def wait_healthy(reader: Reader, objects: list[dict[str, Any]], timeout: float = DEFAULT_TIMEOUT,
                 poll: float = 1.0, log: Callable[[str], None] = lambda s: None) -> None:
    """Poll until every workload in ``objects`` is ready; raise :class:`HealthError` otherwise.

    A failed verdict raises at once; at the timeout the first workload still waiting is named,
    with the last reason seen.
    """
    pending = workloads(objects)
    deadline = time.monotonic() + timeout
    last: dict[str, Verdict] = {}
    while True:
        still = []
        for obj in pending:
            key = str(ObjectKey.of(obj))
            verdict = check(reader, obj)
            if verdict.state == "failed":
                raise HealthError(key, verdict.reason,
                                  hint=f"inspect it: kubectl -n {ObjectKey.of(obj).namespace} describe "
                                       f"{ObjectKey.of(obj).kind.lower()} {ObjectKey.of(obj).name}")
            if verdict.state == "waiting":
                if last.get(key) != verdict:
                    log(f"waiting for {key}: {verdict.reason}")
                last[key] = verdict
                still.append(obj)
            else:
                log(f"{key} is ready")
        pending = still
        if not pending:
            return
        if time.monotonic() >= deadline:
            first = pending[0]
            key = str(ObjectKey.of(first))
            raise HealthError(key, f"not ready after {timeout:g} s: {last[key].reason}",
                              hint="raise --timeout if it is merely slow; otherwise fix the cause above")
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
