"""Where rendered objects go: a cluster reached by kubeconfig, or a k3s auto-deploy directory.

Both targets answer the same questions (who are you, what is live, apply this revision) so that
planning, drift detection and rollback are one code path.

:class:`KubeTarget` talks to the API server with the official ``kubernetes`` client: generic
kinds through ``DynamicClient`` discovery, writes by server-side apply with the single field
manager ``edgebundle``. Its :meth:`~KubeTarget.preview` is a server-side-apply dry run of the
exact body apply will send: the server answers what the object would become (defaulting, list-map
keys, quantities, omitted empty values are its own), what it refuses (kinds it does not serve,
immutable or forbidden changes, unknown fields), and which fields another manager holds (a
conflict, which the plan shows as a takeover and apply then forces). Cluster identity is the API
server URL plus the uid of the ``kube-system`` namespace, so a plan made against one cluster
cannot be applied to another that happens to share a URL.

:class:`K3sDirTarget` writes one file, ``edgebundle-<site>.yaml``, atomically into the k3s
server's manifests directory; k3s applies it. Nothing can be watched from there: live state is
what the file holds, and its digest is the drift token.

Invariants:
- Objects are written in the order given (the plan's dependency order); deletions run in reverse.
- Only objects labelled ``app.kubernetes.io/managed-by: edgebundle`` are ever deleted.
- Every API failure becomes a :class:`ClusterError` naming the object and the server's reason.
- A preview never changes the cluster (``dryRun=All``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from edgebundle.boundedyaml import YamlBoundError, load_all_bounded
from edgebundle.digest import fsync_dir, read_bounded, sha256_bytes
from edgebundle.errors import EdgebundleError
from edgebundle.faults import faultpoint
from edgebundle.layout import MAX_JSON_BYTES
from installer.diff import diff_object, diff_result, dropped_fields
from installer.policy import Node
from installer.render import MANAGED_BY, MANAGER, REVISION_ANNOTATION, ObjectKey, label_value, order_rank

Log = Callable[[str], None]
#: A live object file bigger than this is not ours; refuse rather than parse it.
MAX_FILE_BYTES = 16 * 1024 * 1024
REQUEST_TIMEOUT = 30
#: The k3s file is written in pieces this big (a kill point between them proves no torn file shows).
K3S_WRITE_PIECE = 4096


class ClusterError(EdgebundleError):
    """The cluster (or manifests directory) could not be read or refused a change."""


class ObjectRefused(ClusterError):
    """The server would refuse this object (a dry run said so): nothing may be approved."""

    def __init__(self, key: ObjectKey, reason: str, hint: str | None = None, *, replaceable: bool = False) -> None:
        super().__init__(f"{key}: {reason}", hint=hint)
        self.key, self.reason, self.replaceable = key, reason, replaceable


#: Annotation (on an object in the manifests) asking for delete-and-create when the server refuses
#: an in-place update (kapp's ``fallback-on-replace``); ``installer plan --replace`` does the same.
UPDATE_STRATEGY_ANNOTATION = "edgebundle.dev/update-strategy"
FALLBACK_ON_REPLACE = "fallback-on-replace"


@dataclass(frozen=True)
class Preview:
    """What applying one object would do: ``create``, ``update``, ``unchanged`` or ``replace``,
    the changed field paths, and fields taken over from other managers (``field (manager)``)."""

    action: str
    changes: list[dict[str, str]]
    takeover: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Observation:
    """What is live for a set of objects, and the tokens drift detection compares later."""

    live: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # key id -> object
    tokens: dict[str, str | None] = field(default_factory=dict)


def ref(obj: dict[str, Any]) -> dict[str, Any]:
    """The identifying part of an object: enough to find it again."""
    meta = obj.get("metadata") or {}
    out_meta = {"name": meta.get("name")}
    if meta.get("namespace"):
        out_meta["namespace"] = meta["namespace"]
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": out_meta}


def annotate_revision(obj: dict[str, Any], revision: int) -> dict[str, Any]:
    """A copy of ``obj`` carrying the revision that (last) changed it."""
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {}).setdefault("annotations", {})[REVISION_ANNOTATION] = str(revision)
    return out


def delete_order(refs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(refs, key=lambda o: -order_rank(str(o.get("kind")), str(o.get("apiVersion", "")).rpartition("/")[0]))


class Target(Protocol):
    """What plan, apply, rollback and validate need from a destination."""

    description: str
    #: False when health cannot be observed (k3s directory): apply says so instead of waiting.
    watches_health: bool

    def identity(self) -> dict[str, str]:
        """Stable identity of the cluster, recorded in plans and approvals."""
        ...

    def observe(self, refs: list[dict[str, Any]]) -> Observation:
        ...

    def preview(self, obj: dict[str, Any], live: dict[str, Any] | None, previous: dict[str, Any] | None,
                revision: int, *, replace: bool = False, created_here: frozenset[str] = frozenset()) -> Preview:
        """What applying ``obj`` as ``revision`` would do, or :class:`ObjectRefused`. ``created_here``
        holds the namespaces and ``group/kind`` names that objects earlier in the same plan create."""
        ...

    def remove(self, refs: list[dict[str, Any]], log: Log, timeout: float = 120.0) -> list[str]:
        """Delete these objects (ours only) in reverse dependency order and wait until they are
        gone; the ones still present at the timeout are returned."""
        ...

    def apply_revision(self, desired: list[dict[str, Any]], changed: set[str],
                       deletes: list[dict[str, Any]], revision: int, log: Log,
                       replace: frozenset[str] = frozenset()) -> None:
        """Make ``desired`` live: write the ``changed`` ones (key ids), delete and re-create the
        ``replace`` ones, remove ``deletes``."""
        ...

    def nodes(self) -> list[Node] | None:
        """The nodes for the capacity check; None when the target cannot list them."""
        ...


# --- a cluster by kubeconfig --------------------------------------------------------------------

def _api_reason(e: Exception) -> str:
    """The API server's own message from a failed request (its Status.message), else the error."""
    body = getattr(e, "body", None)
    if body:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("message"):
                return f"{doc.get('reason', '')} {doc['message']}".strip()
        except (ValueError, TypeError):
            pass
    status = getattr(e, "status", None)
    return f"HTTP {status} {getattr(e, 'reason', '')}".strip() if status else str(e)


def _conflicts(e: Exception) -> list[str]:
    """``field (manager)`` for each field a server-side-apply conflict names."""
    out = []
    try:
        doc = json.loads(getattr(e, "body", None) or "{}")
    except (ValueError, TypeError):
        doc = {}
    for cause in ((doc.get("details") or {}).get("causes") or []) if isinstance(doc, dict) else []:
        m = re.search(r'conflict with "([^"]+)"', str(cause.get("message", "")))
        out.append(f"{str(cause.get('field', '?')).lstrip('.')} ({m[1] if m else 'another manager'})")
    return sorted(out) or [_api_reason(e)]


def _fallback_on_replace(obj: dict[str, Any]) -> bool:
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    return ann.get(UPDATE_STRATEGY_ANNOTATION) == FALLBACK_ON_REPLACE


class KubeTarget:
    """A cluster reached through a kubeconfig file and context."""

    watches_health = True

    def __init__(self, kubeconfig: Path | None, context: str | None, cache_dir: Path) -> None:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.dynamic import DynamicClient

        try:
            self.api = config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context, persist_config=False)
        except (ConfigException, OSError, TypeError, ValueError) as e:
            raise ClusterError(f"cannot load kubeconfig {kubeconfig or '(default)'}"
                               f"{f' context {context}' if context else ''}: {e}",
                               hint="check spec.cluster.kubeconfig and spec.cluster.context in the site file") from None
        self.server = str(self.api.configuration.host)
        self.context = context
        self.description = f"cluster {self.server}" + (f" (context {context})" if context else "")
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"discovery-{hashlib.sha256(self.server.encode()).hexdigest()[:16]}.json"
        with self._calls("discover the API"):
            self.dyn = DynamicClient(self.api, cache_file=str(cache))
        self._identity: dict[str, str] | None = None
        self._minor: int | None = None

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Translate client failures into one error naming what we were doing."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import ResourceNotFoundError
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ApiException as e:
            raise ClusterError(f"{what}: {_api_reason(e)}") from None
        except ResourceNotFoundError as e:
            raise ClusterError(f"{what}: the cluster does not serve this kind ({e})",
                               hint="is its CustomResourceDefinition installed?") from None
        except HTTPError as e:
            raise ClusterError(f"{what}: cannot reach the API server at {self.server}: {e}",
                               hint="check the network path and the kubeconfig's server URL") from None

    def _resource(self, obj: dict[str, Any]) -> Any:
        return self.dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def _namespace(self, resource: Any, obj: dict[str, Any]) -> str | None:
        return (obj.get("metadata") or {}).get("namespace") if resource.namespaced else None

    def identity(self) -> dict[str, str]:
        if self._identity is None:
            uid = ""
            try:
                ns = self.get({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
            except ClusterError:  # not allowed to read namespaces: the URL alone identifies it
                ns = None
            if ns is not None:
                uid = str((ns.get("metadata") or {}).get("uid", ""))
            self._identity = {"kind": "kubernetes", "server": self.server, "kubeSystemUID": uid}
        return self._identity

    def get(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live object, or None when it (or its kind) does not exist."""
        from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

        key = ObjectKey.of(obj)
        with self._calls(f"read {key}"):
            try:
                res = self._resource(obj)
                got = res.get(name=key.name, namespace=self._namespace(res, obj),
                              _request_timeout=REQUEST_TIMEOUT)
            except (NotFoundError, ResourceNotFoundError):
                return None
            return dict(got.to_dict())

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        with self._calls(f"list {kind}"):
            res = self.dyn.resources.get(api_version=api_version, kind=kind)
            got = res.get(namespace=namespace if res.namespaced else None, label_selector=label_selector,
                          field_selector=field_selector, _request_timeout=REQUEST_TIMEOUT)
            return [dict(i) for i in got.to_dict().get("items", [])]

    def observe(self, refs: list[dict[str, Any]]) -> Observation:
        """Live objects; the token is the uid (an object deleted and re-created is another object).

        Not the ``resourceVersion``: every status write changes it, and a plan must survive pod
        churn. What a plan's objects would become is compared through :meth:`preview` instead.
        """
        obs = Observation()
        for r in refs:
            kid = ObjectKey.of(r).id
            live = self.get(r)
            obs.live[kid] = live
            obs.tokens[kid] = str((live.get("metadata") or {}).get("uid")) if live else None
        return obs

    def _version_info(self) -> Any:
        from kubernetes import client

        with self._calls("read the server version"):
            return client.VersionApi(self.api).get_code(_request_timeout=REQUEST_TIMEOUT)

    def server_version(self) -> str:
        """The API server's version as Helm's capabilities take it (``v1.20.2``)."""
        return str(self._version_info().git_version)

    def server_minor(self) -> int:
        """The API server's minor version (20 for v1.20.2); 0 when it does not say."""
        if self._minor is None:
            info = self._version_info()
            digits = "".join(ch for ch in str(info.minor) if ch.isdigit())
            self._minor = int(digits) if digits else 0
        return self._minor

    def _served(self, obj: dict[str, Any]) -> Any:
        """The API resource for ``obj``'s apiVersion and kind, or :class:`ObjectRefused` naming
        the versions the cluster serves for that kind instead."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        key = ObjectKey.of(obj)
        try:
            with self._calls(f"discover {key.kind}"):
                return self._resource(obj)
        except ResourceNotFoundError:
            pass
        except ClusterError as e:
            if "does not serve" not in e.message:
                raise
        try:
            others = sorted({f"{r.group_version}" for r in self.dyn.resources.search(kind=key.kind)
                             if getattr(r, "group_version", None)})
        except Exception:  # noqa: BLE001 - discovery trouble: the first answer stands
            others = []
        instead = f" (it serves {key.kind} as {', '.join(others)})" if others else ""
        raise ObjectRefused(key, f"this cluster does not serve {obj['apiVersion']} {key.kind}{instead}",
                            hint="build the bundle for this cluster's Kubernetes version "
                                 "(docs/OPERATIONS.md lists what the shipped manifests need)")

    def _dry_apply(self, res: Any, body: dict[str, Any], namespace: str | None, force: bool) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.server_minor() >= 25:  # strict field validation: unknown fields are an error
            params["query_params"] = [("fieldValidation", "Strict")]
        got = res.server_side_apply(body=body, name=body["metadata"]["name"], namespace=namespace,
                                    field_manager=MANAGER, force_conflicts=force, dry_run="All",
                                    _request_timeout=REQUEST_TIMEOUT, **params)
        return dict(got.to_dict())

    def preview(self, obj: dict[str, Any], live: dict[str, Any] | None, previous: dict[str, Any] | None,
                revision: int, *, replace: bool = False, created_here: frozenset[str] = frozenset()) -> Preview:
        from kubernetes.client.exceptions import ApiException

        key = ObjectKey.of(obj)
        if f"{key.group}/{key.kind}" in created_here:  # a kind a CRD of this plan defines
            return Preview("create" if live is None else "update", [] if live is None else diff_object(obj, live, previous),
                           note=f"{key.kind} is defined by this plan's CustomResourceDefinition: "
                                "the server checks it at apply")
        res = self._served(obj)
        body = annotate_revision(obj, revision)
        namespace = self._namespace(res, obj)
        note = ""
        if namespace and namespace in created_here:
            # The namespace does not exist yet (this plan creates it): a dry run there is refused,
            # so the object is checked by a dry run of its creation in "default".
            body["metadata"]["namespace"], namespace = "default", "default"
            note = f"checked by a dry run in namespace default: {key.namespace} is created by this plan"
        takeover: list[str] = []
        try:
            try:
                result = self._dry_apply(res, body, namespace, force=False)
            except ApiException as e:
                if e.status != 409:
                    raise
                takeover = _conflicts(e)
                result = self._dry_apply(res, body, namespace, force=True)
        except ApiException as e:
            reason = _api_reason(e)
            unknown = re.search(r'(\.\S+): field not declared in schema', reason)
            if unknown:
                path = re.sub(r'\[(\w+)="([^"]*)"\]', r"[\1=\2]", unknown[1].lstrip("."))
                raise ObjectRefused(key, f"unknown field {path} (the server's schema has no such field)",
                                    hint="fix the spelling in the manifest and rebuild the bundle") from None
            immutable = e.status == 422 and any(w in reason for w in ("immutable", "Forbidden"))
            if immutable and live is not None and (replace or _fallback_on_replace(obj)):
                return Preview("replace", diff_object(obj, live, previous),
                               note="the server refuses this change in place: the object is deleted and re-created")
            hint = None
            if immutable and live is not None:
                hint = (f"if re-creating {key} is acceptable, plan with --replace {key} or annotate it "
                        f"{UPDATE_STRATEGY_ANNOTATION}: {FALLBACK_ON_REPLACE}")
            raise ObjectRefused(key, f"the server refuses it: {reason}", hint=hint, replaceable=immutable) from None
        except ClusterError as e:
            raise ObjectRefused(key, e.message, hint=e.hint) from None
        if self.server_minor() < 25:
            unknown = dropped_fields(body, result)
            if unknown:
                raise ObjectRefused(key, "unknown field" + ("s " if len(unknown) > 1 else " ")
                                    + ", ".join(unknown[:5]) + " (the server's schema has no such field and would "
                                    "drop it)", hint="fix the spelling in the manifest and rebuild the bundle")
        if live is None:
            return Preview("create", [], takeover, note)
        changes = diff_result(live, result)
        return Preview("update" if changes else "unchanged", changes, takeover, note)

    def remove(self, refs: list[dict[str, Any]], log: Log, timeout: float = 120.0) -> list[str]:
        import time

        for r in delete_order(refs):
            if self.delete_one(r):
                log(f"deleted {ObjectKey.of(r)}")
        deadline = time.monotonic() + timeout
        while True:
            left = [str(ObjectKey.of(r)) for r in refs if self.get(r) is not None]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def apply_revision(self, desired: list[dict[str, Any]], changed: set[str],
                       deletes: list[dict[str, Any]], revision: int, log: Log,
                       replace: frozenset[str] = frozenset()) -> None:
        for obj in desired:
            kid = ObjectKey.of(obj).id
            if kid in replace:
                left = self.remove([ref(obj)], log)
                if left:
                    raise ClusterError(f"replace {ObjectKey.of(obj)}: it is still being deleted",
                                       hint="wait for its finalizers, then apply again")
            if kid in changed or kid in replace:
                self.apply_one(annotate_revision(obj, revision))
                faultpoint("apply.object.applied")
                log(f"applied {ObjectKey.of(obj)}")
        for r in delete_order(deletes):
            if self.delete_one(r):
                log(f"deleted {ObjectKey.of(r)}")

    def apply_one(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as ``edgebundle``; waits briefly for a kind a CRD has just defined."""
        import time

        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        key = ObjectKey.of(obj)
        deadline = time.monotonic() + 15
        while True:
            try:
                with self._calls(f"apply {key}"):
                    res = self._resource(obj)
                    got = res.server_side_apply(body=obj, name=key.name, namespace=self._namespace(res, obj),
                                                field_manager=MANAGER, force_conflicts=True,
                                                _request_timeout=REQUEST_TIMEOUT)
                    return dict(got.to_dict())
            except ClusterError:
                try:
                    self._resource(obj)
                except ResourceNotFoundError:
                    if time.monotonic() < deadline:  # a CRD applied a moment ago: not served yet
                        time.sleep(0.5)
                        continue
                raise

    def delete_one(self, r: dict[str, Any]) -> bool:
        """Delete an object this installer manages; False when it is gone or not ours."""
        from kubernetes.dynamic.exceptions import NotFoundError

        live = self.get(r)
        if live is None or ((live.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) != MANAGER:
            return False
        key = ObjectKey.of(r)
        with self._calls(f"delete {key}"):
            res = self._resource(r)
            try:
                res.delete(name=key.name, namespace=self._namespace(res, r),
                           body={"propagationPolicy": "Background"}, _request_timeout=REQUEST_TIMEOUT)
            except NotFoundError:
                return False
        return True

    def nodes(self) -> list[Node]:
        return [Node.from_api(n) for n in self.list("v1", "Node")]

    def proxy_get(self, namespace: str, service: str, port: str, path: str) -> tuple[int, str]:
        """GET ``path`` on a Service through the API server's service proxy: (status, body)."""
        from kubernetes.client.exceptions import ApiException

        url = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/{path.lstrip('/')}"
        try:
            with self._calls(f"GET {path} on Service {namespace}/{service}"):
                try:
                    resp = self.dyn.request("get", url, serialize=False, _request_timeout=REQUEST_TIMEOUT)
                except ApiException as e:
                    return int(e.status or 0), str(e.body or e.reason or "")[:500]
        except ClusterError as e:
            return 0, str(e)
        return int(resp.status), resp.data.decode("utf-8", errors="replace")[:500]


# --- a k3s auto-deploy directory ---------------------------------------------------------------

class DocumentSetTarget:
    """A target that holds a revision's objects as one document set written whole: a k3s
    manifests file, or an OCI artifact a GitOps controller reconciles (installer/destinations/gitops.py).

    Nothing there can dry-run, so a preview compares the fields each object sets; applying
    rewrites the whole set, keeping on each unchanged object the revision that last changed it;
    an object leaves the cluster by leaving the set. Subclasses say how the set is read and written.
    """

    watches_health = False
    description: str
    #: Name of the drift token: the digest of the set as last read must still match at apply.
    token: str

    def identity(self) -> dict[str, str]:
        raise NotImplementedError

    def _load(self) -> tuple[str | None, dict[str, dict[str, Any]]]:
        """(digest of the stored set or None when there is none, objects by key id)."""
        raise NotImplementedError

    def _store(self, objects: list[dict[str, Any]], revision: int, log: Log) -> None:
        raise NotImplementedError

    def _check_ready(self) -> None:
        """Refuse before anything is written when the set cannot be stored at all."""

    def observe(self, refs: list[dict[str, Any]]) -> Observation:
        digest, live = self._load()
        obs = Observation(live={ObjectKey.of(r).id: live.get(ObjectKey.of(r).id) for r in refs})
        obs.tokens[self.token] = digest
        return obs

    def preview(self, obj: dict[str, Any], live: dict[str, Any] | None, previous: dict[str, Any] | None,
                revision: int, *, replace: bool = False, created_here: frozenset[str] = frozenset()) -> Preview:
        """A document diff: nothing here can dry-run, so only the fields the object sets are compared."""
        if live is None:
            return Preview("create", [])
        changes = diff_object(obj, live, previous)
        return Preview("update" if changes else "unchanged", changes)

    def remove(self, refs: list[dict[str, Any]], log: Log, timeout: float = 120.0) -> list[str]:
        """The controller removes what the set drops; a failed first write left nothing to remove."""
        return []

    def apply_revision(self, desired: list[dict[str, Any]], changed: set[str],
                       deletes: list[dict[str, Any]], revision: int, log: Log,
                       replace: frozenset[str] = frozenset()) -> None:
        self._check_ready()
        _, live = self._load()
        out = []
        for obj in desired:
            kid = ObjectKey.of(obj).id
            if kid in changed or kid not in live:
                out.append(annotate_revision(obj, revision))
            else:  # unchanged: keep the revision that last changed it
                prev = ((live[kid].get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION)
                out.append(annotate_revision(obj, int(prev)) if prev and prev.isdigit() else obj)
        self._store(out, revision, log)
        for r in deletes:
            log(f"dropped {ObjectKey.of(r)} from {self.description} (the cluster removes it)")

    def nodes(self) -> list[Node] | None:
        return None


def parse_documents(data: bytes, where: str) -> dict[str, dict[str, Any]]:
    """Objects by key id from a YAML stream edgebundle wrote (a k3s file, a GitOps artifact).

    Bounded: anyone who can write the directory (or push to the repository) could plant an alias
    bomb there."""
    try:
        docs = [d for d in load_all_bounded(data, where) if isinstance(d, dict)]
    except YamlBoundError as e:
        raise ClusterError(e.message, hint="someone edited it; move it away (the cluster then removes what it "
                                           "held) or restore the last one edgebundle wrote, and re-plan") from None
    return {ObjectKey.of(d).id: d for d in docs}


def render_documents(objects: list[dict[str, Any]], revision: int) -> bytes:
    header = (f"# Written by edgebundle: revision {revision}. Do not edit: the cluster applies this,\n"
              "# and any change to it is drift that the next plan refuses.\n")
    return (header + yaml.safe_dump_all(objects, sort_keys=True)).encode()


class K3sDirTarget(DocumentSetTarget):
    """k3s's ``/var/lib/rancher/k3s/server/manifests``: apply = write one file atomically."""

    def __init__(self, directory: Path, site_name: str) -> None:
        self.dir = Path(directory)
        self.file = self.dir / f"edgebundle-{label_value(site_name) or 'site'}.yaml"
        self.description = f"k3s manifests directory {self.dir}"
        self.token = f"file:{self.file.name}"

    def identity(self) -> dict[str, str]:
        return {"kind": "k3s-manifests-dir", "path": str(self.dir)}

    def _load(self) -> tuple[str | None, dict[str, dict[str, Any]]]:
        if not self.file.exists():
            return None, {}
        data = read_bounded(self.file, MAX_JSON_BYTES, "k3s manifests file")
        if len(data) > MAX_FILE_BYTES:
            raise ClusterError(f"{self.file} is {len(data)} bytes; not a file edgebundle wrote")
        return sha256_bytes(data), parse_documents(data, f"k3s manifests file {self.file}")

    def _check_ready(self) -> None:
        if not self.dir.is_dir():
            raise ClusterError(f"k3s manifests directory {self.dir} does not exist",
                               hint="run on the k3s server, or fix spec.cluster.manifestsDir")

    def _store(self, objects: list[dict[str, Any]], revision: int, log: Log) -> None:
        self._write(render_documents(objects, revision))
        log(f"wrote {len(objects)} objects to {self.file}")

    def _write(self, data: bytes) -> None:
        """Replace the file atomically, in pieces, and sweep temp files of killed earlier runs.

        k3s applies every ``*.yaml`` it finds, so the file must appear whole or not at all: the
        bytes go to ``.<name>.tmp-<pid>`` (a name k3s ignores) and are renamed once fsynced.
        """
        tmp = self.file.with_name(f".{self.file.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            for at in range(0, len(data), K3S_WRITE_PIECE):
                f.write(data[at:at + K3S_WRITE_PIECE])
                f.flush()
                faultpoint("apply.manifest.chunk")
            os.fsync(f.fileno())
        os.replace(tmp, self.file)
        for stale in self.dir.glob(f".{self.file.name}.tmp-*"):
            stale.unlink(missing_ok=True)  # we hold the site's state lock: no other writer is alive
        fsync_dir(self.dir)
