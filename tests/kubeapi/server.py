"""An in-process Kubernetes API server for tests: the real REST protocol over real HTTP.

It serves discovery, CRUD, patches (merge, strategic, JSON patch), server-side apply, the
``status`` subresource, pod logs and the service proxy on 127.0.0.1 in a background thread, so
product code talks to it with the official ``kubernetes`` client and a real kubeconfig, exactly as
to a cluster. Product code must never know it is talking to this server.

Invariants:
- Every error response is a ``kind: Status`` document with the apiserver's code, reason and wording.
- With a token configured, every request except /version and the health endpoints must carry
  ``Authorization: Bearer <token>`` (401 otherwise).
- The test side (assertions, seeding, failure injection, proxy endpoints) goes through methods of
  :class:`KubeAPIServer`, never through HTTP, so the request log shows only what product code did.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.kubeapi.errors import (ApiError, bad_request, method_not_allowed, service_unavailable,
                                  too_large, unauthorized, unknown_resource, unsupported_media_type)
from tests.kubeapi.resources import Registry, ResourceType
from tests.kubeapi.store import APPLY, JSON_PATCH, MERGE, STRATEGIC, Store

JSONDict = dict[str, Any]
MAX_BODY = 3 * 1024 * 1024
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.4+k3s1", "gitCommit": "0" * 40,
           "gitTreeState": "clean", "buildDate": "2024-12-14T00:00:00Z", "goVersion": "go1.22.9",
           "compiler": "gc", "platform": "linux/amd64"}


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it (for assertions on what product code did)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    status: int
    user_agent: str


@dataclass(frozen=True)
class ProxyRequest:
    """What a service-proxy handler receives: the request as forwarded to the backend."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class ProxyResponse:
    """What a backend answers through the service proxy."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


ProxyHandler = Callable[[ProxyRequest], ProxyResponse]


@dataclass(frozen=True)
class _ProxyRoute:
    port: int | str | None
    path: str | None
    handler: ProxyHandler


@dataclass(frozen=True)
class Failure:
    """Why a workload's pods never become ready (see :meth:`KubeAPIServer.fail_workload`)."""

    reason: str = "CrashLoopBackOff"
    message: str = ""
    deadline_exceeded: bool = False
    exit_code: int = 1


FailurePredicate = Callable[[JSONDict], "Failure | str | None"]


def _as_bytes(body: bytes | str | JSONDict | list[Any]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


@dataclass
class _State:
    """Test-side state the controllers and the proxy consult, guarded by the store lock."""

    failures: dict[tuple[str, str], Failure] = field(default_factory=dict)
    predicates: list[FailurePredicate] = field(default_factory=list)
    routes: dict[tuple[str, str], list[_ProxyRoute]] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)


class KubeAPIServer:
    """The test API server: start it, point a kubeconfig at it, assert on its store.

    ``token`` is the bearer token clients must send (random by default; ``""`` turns auth off).
    """

    def __init__(self, token: str | None = None, context: str = "edge", cluster: str = "edge-test",
                 user: str = "edge-admin") -> None:
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.context, self.cluster, self.user = context, cluster, user
        self.registry = Registry()
        self.store = Store(self.registry)
        self._state = _State()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.kubeconfig_path: Path | None = None
        self.controllers: Any = None  # set by whoever runs tests.kubeapi.controllers.Controllers
        self._seed()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "KubeAPIServer":
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"api": self})
        httpd = self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._thread = threading.Thread(target=lambda: httpd.serve_forever(poll_interval=0.01), name="kubeapi",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "KubeAPIServer":
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (cluster, bearer-token user, context ``self.context``) for this server."""
        doc = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": self.cluster, "cluster": {"server": self.url}}],
            "users": [{"name": self.user, "user": {"token": self.token}}],
            "contexts": [{"name": self.context,
                          "context": {"cluster": self.cluster, "user": self.user, "namespace": namespace}}],
            "current-context": self.context,
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        self.kubeconfig_path = path
        return path

    def api_client(self) -> Any:
        """An ``ApiClient`` built from the kubeconfig, the way product code builds one."""
        from kubernetes import config
        if self.kubeconfig_path is None:
            raise RuntimeError("call write_kubeconfig() first")
        return config.new_client_from_config(config_file=str(self.kubeconfig_path), context=self.context)

    # -- objects -----------------------------------------------------------------------------

    def resource(self, kind: str) -> ResourceType:
        """The resource type for ``Deployment``, ``deployments``, ``deployments.apps`` or a CRD kind."""
        found = {rt.key: rt for rt in self.registry.by_kind(kind)}
        if len(found) != 1:
            raise KeyError(f"{kind!r} names {len(found)} resource types")
        return next(iter(found.values()))

    def get(self, kind: str, namespace: str | None, name: str) -> JSONDict | None:
        """A copy of one stored object, or None."""
        try:
            return self.store.get(self.resource(kind), namespace or "", name)
        except ApiError:
            return None

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[JSONDict]:
        """Copies of stored objects (all kinds, or one), optionally in one namespace."""
        if kind is None:
            return [o for o in self.store.snapshot()
                    if namespace is None or o["metadata"].get("namespace") == namespace]
        return self.store.find(self.resource(kind), namespace)

    def put(self, body: JSONDict) -> JSONDict:
        """Create or overwrite an object directly (test seeding), status included."""
        group, _, version = body["apiVersion"].rpartition("/")
        candidates = [rt for rt in self.registry.all()
                      if rt.group == group and rt.version == version and rt.kind == body["kind"]]
        if not candidates:
            raise KeyError(f"no resource for {body['apiVersion']} {body['kind']}")
        return self.store.ensure(candidates[0], body, manager="test")

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Remove an object directly (test side), with cascading."""
        return self.store.remove(self.resource(kind), namespace or "", name)

    def add_node(self, name: str, cpu: str = "8", memory: str = "32Gi", gpus: int = 0,
                 labels: dict[str, str] | None = None, ready: bool = True) -> JSONDict:
        """Seed (or update) a Node whose allocatable is {cpu, memory, nvidia.com/gpu}."""
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            resources["nvidia.com/gpu"] = str(gpus)
        node_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       "node.kubernetes.io/instance-type": "k3s", **(labels or {})}
        now = self.store.now()
        return self.put({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"podCIDR": "10.42.0.0/24"},
            "status": {
                "capacity": dict(resources), "allocatable": dict(resources),
                "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                "reason": "KubeletReady" if ready else "KubeletNotReady",
                                "message": "kubelet is posting ready status" if ready else "kubelet stopped posting node status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": VERSION["gitVersion"], "kubeProxyVersion": VERSION["gitVersion"],
                             "architecture": "amd64", "operatingSystem": "linux", "osImage": "Ubuntu 22.04 LTS",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                             "machineID": "", "systemUUID": "", "bootID": ""},
            },
        })

    def _seed(self) -> None:
        """What every fresh cluster has: the system namespaces and a default StorageClass."""
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.put({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                  "metadata": {"name": "local-path",
                               "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                  "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
                  "volumeBindingMode": "WaitForFirstConsumer"})

    # -- failure injection (read by Controllers) ---------------------------------------------

    def fail_workload(self, namespace: str, name: str, reason: str = "CrashLoopBackOff", message: str = "",
                      deadline_exceeded: bool = False, exit_code: int = 1) -> None:
        """Keep a workload's pods from ever becoming ready (container waiting with ``reason``)."""
        with self.store.lock:
            self._state.failures[(namespace, name)] = Failure(reason, message, deadline_exceeded, exit_code)
            self.store.changed.notify_all()

    def heal_workload(self, namespace: str, name: str) -> None:
        with self.store.lock:
            self._state.failures.pop((namespace, name), None)
            self.store.changed.notify_all()

    def fail_when(self, predicate: FailurePredicate) -> None:
        """Fail every workload for which ``predicate(obj)`` returns a Failure or a message."""
        with self.store.lock:
            self._state.predicates.append(predicate)
            self.store.changed.notify_all()

    def failure_for(self, obj: JSONDict) -> Failure | None:
        """The failure injected for a workload object, if any."""
        meta = obj.get("metadata") or {}
        with self.store.lock:
            found = self._state.failures.get((meta.get("namespace", ""), meta.get("name", "")))
            predicates = list(self._state.predicates)
        if found is not None:
            return found
        for predicate in predicates:
            verdict = predicate(obj)
            if isinstance(verdict, Failure):
                return verdict
            if verdict:
                return Failure(message=str(verdict))
        return None

    # -- pod logs ----------------------------------------------------------------------------

    def set_pod_log(self, namespace: str, pod: str, text: str) -> None:
        with self.store.lock:
            self._state.logs[(namespace, pod)] = text

    def pod_log(self, namespace: str, pod: str) -> str:
        with self.store.lock:
            return self._state.logs.get((namespace, pod), "")

    # -- service proxy -----------------------------------------------------------------------

    def set_service_handler(self, namespace: str, name: str, port: int | str | None, handler: ProxyHandler,
                            path: str | None = None) -> None:
        """Route proxied requests for a Service port (and optionally one path) to ``handler``."""
        norm = None if path is None else "/" + path.lstrip("/")
        with self.store.lock:
            routes = self._state.routes.setdefault((namespace, name), [])
            routes[:] = [r for r in routes if (r.port, r.path) != (port, norm)]
            routes.insert(0, _ProxyRoute(port, norm, handler))

    def set_service_endpoint(self, namespace: str, name: str, port: int | str | None, path: str, status: int = 200,
                             body: bytes | str | JSONDict | list[Any] = b"",
                             content_type: str = "application/json") -> None:
        """Serve a fixed response for one path of a Service port through the proxy."""
        response = ProxyResponse(status, _as_bytes(body), content_type)
        self.set_service_handler(namespace, name, port, lambda _req: response, path)

    def clear_service_endpoints(self, namespace: str, name: str) -> None:
        with self.store.lock:
            self._state.routes.pop((namespace, name), None)

    def _service_ready(self, svc: JSONDict) -> bool:
        """Endpoints exist: no selector (manual endpoints), or a Ready pod matches the selector."""
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            return True
        for pod in self.store.find(self.resource("pods"), svc["metadata"]["namespace"]):
            labels = pod["metadata"].get("labels") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (pod.get("status") or {}).get("conditions") or [])
            if ready and not pod["metadata"].get("deletionTimestamp") and \
                    all(labels.get(k) == v for k, v in selector.items()):
                return True
        return False

    def proxy(self, namespace: str, ident: str, request: ProxyRequest) -> ProxyResponse:
        """Resolve ``[scheme:]name[:port]`` and forward to the registered handler."""
        parts = ident.split(":")
        name, port_ref = (parts[0], "") if len(parts) == 1 else (parts[0], parts[1]) if len(parts) == 2 \
            else (parts[1], parts[2])
        svc = self.store.get(self.resource("services"), namespace, name)
        unavailable = service_unavailable(f'no endpoints available for service "{ident}"')
        ports = (svc.get("spec") or {}).get("ports") or []
        matching = [p for p in ports if not port_ref or str(p.get("port")) == port_ref or p.get("name") == port_ref]
        if not matching or not self._service_ready(svc):
            raise unavailable
        sp = matching[0]
        with self.store.lock:
            routes = [r for r in self._state.routes.get((namespace, name), [])
                      if r.port is None or r.port == sp.get("port") or r.port == sp.get("name")
                      or str(r.port) == str(sp.get("port"))]
        if not routes:
            raise unavailable
        for route in routes:
            if route.path is None or route.path == request.path:
                return route.handler(request)
        return ProxyResponse(404, b"404 page not found\n", "text/plain; charset=utf-8")

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self.store.lock:
            return list(self._state.requests)

    def clear_requests(self) -> None:
        with self.store.lock:
            self._state.requests.clear()

    def record(self, entry: RequestRecord) -> None:
        with self.store.lock:
            self._state.requests.append(entry)

    # -- discovery ---------------------------------------------------------------------------

    def discovery(self, segments: list[str]) -> JSONDict | None:
        """The discovery document for /api, /api/v1, /apis, /apis/<g>, /apis/<g>/<v>; None if not one."""
        if segments == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
        if segments == ["api", "v1"]:
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": self._resource_list("", "v1")}
        groups = self.registry.group_versions()
        if segments == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g, vs) for g, vs in groups.items()]}
        if len(segments) == 2 and segments[0] == "apis":
            if segments[1] not in groups:
                raise unknown_resource()
            return {"kind": "APIGroup", "apiVersion": "v1", **self._group(segments[1], groups[segments[1]])}
        if len(segments) == 3 and segments[0] == "apis":
            if segments[2] not in groups.get(segments[1], []):
                raise unknown_resource()
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{segments[1]}/{segments[2]}",
                    "resources": self._resource_list(segments[1], segments[2])}
        return None

    @staticmethod
    def _group(name: str, versions: list[str]) -> JSONDict:
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}

    def _resource_list(self, group: str, version: str) -> list[JSONDict]:
        out: list[JSONDict] = []
        for rt in self.registry.all():
            if rt.group == group and rt.version == version:
                out += rt.discovery()
        return out


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "")


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 front end: parse, authenticate, route to the store, answer JSON."""

    api: KubeAPIServer
    protocol_version = "HTTP/1.1"
    server_version = "kubeapi-test"
    # one buffered write per response and no Nagle: keep-alive requests would otherwise stall on
    # delayed ACKs (~40 ms each)
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by stdlib
        """Silence per-request logging; the request log is kept in memory instead."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Audit-Id", secrets.token_hex(8))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked), refused past the apiserver's 3 MiB limit."""
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise too_large()
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            raise too_large()
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        code = 500
        try:
            body = self._read_body()
            if self.api.token and url.path.rstrip("/") not in PUBLIC_PATHS and \
                    self.headers.get("Authorization") != f"Bearer {self.api.token}":
                raise unauthorized()
            code, payload, ctype = self._route(method, url.path, url.query, query, body, content_type)
        except ApiError as e:
            code, payload, ctype = e.code, json.dumps(e.status()).encode(), "application/json"
        except Exception as e:  # a bug in the test server: report it like the apiserver would
            internal = ApiError(500, "InternalError", f"Internal error occurred: {e!r}")
            code, payload, ctype = 500, json.dumps(internal.status()).encode(), "application/json"
        self.api.record(RequestRecord(method, url.path, query, content_type, code,
                                      self.headers.get("User-Agent") or ""))
        self._send(code, payload, ctype)

    def _route(self, method: str, raw_path: str, raw_query: str, query: dict[str, str], body: bytes,
               content_type: str) -> tuple[int, bytes, str]:
        segments = [unquote(s) for s in raw_path.split("/") if s != ""]
        path = "/" + "/".join(segments)
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, b"ok", "text/plain; charset=utf-8"
        if path == "/version":
            return 200, json.dumps(VERSION).encode(), "application/json"
        doc = self.api.discovery(segments)
        if doc is not None:
            if method != "GET":
                raise method_not_allowed()
            return 200, json.dumps(doc).encode(), "application/json"
        if segments[:1] == ["api"] and segments[1:2] == ["v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 3:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise unknown_resource()
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        rt = self.api.registry.lookup(group, version, rest[0]) if rest else None
        if rt is None or (ns is not None and not rt.namespaced):
            raise unknown_resource()
        if ns is None and rt.namespaced and len(rest) > 1:
            raise unknown_resource()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if rt.key == ("", "services") and sub == "proxy" and ns is not None and name is not None:
            skip = 1 + len(segments) - len(rest) + 3  # '', prefix..., services, name, proxy
            proxied = "/" + unquote("/".join(raw_path.split("/")[skip:]))
            req = ProxyRequest(method, proxied, raw_query,
                               {k: v for k, v in self.headers.items()}, body)
            resp = self.api.proxy(ns, name, req)
            return resp.status, resp.body, resp.content_type
        if len(rest) > 3 or (sub and sub not in rt.subresources()):
            raise unknown_resource()
        if sub == "log":
            return self._log(rt, ns or "", name or "", method)
        return self._resource(method, rt, ns, name, sub, query, body, content_type)

    def _log(self, rt: ResourceType, ns: str, name: str, method: str) -> tuple[int, bytes, str]:
        if method != "GET":
            raise method_not_allowed()
        self.api.store.get(rt, ns, name)
        return 200, self.api.pod_log(ns, name).encode(), "text/plain"

    def _manager(self, query: dict[str, str]) -> str:
        manager = query.get("fieldManager")
        if manager is None:
            manager = (self.headers.get("User-Agent") or "unknown").split("/")[0]
        if len(manager) > 128:
            raise ApiError(422, "Invalid", "fieldManager: Too long: must have at most 128 bytes")
        return manager

    def _parse(self, body: bytes, content_type: str) -> Any:
        if not body:
            raise bad_request("the server rejected our request due to an error in our request: empty body")
        try:
            if content_type in (APPLY, "application/yaml"):
                return yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            return json.loads(body)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the body of the request was in an unknown format - {e}") from None

    def _resource(self, method: str, rt: ResourceType, ns: str | None, name: str | None, sub: str,
                  query: dict[str, str], body: bytes, content_type: str) -> tuple[int, bytes, str]:
        store = self.api.store
        dry_run = query.get("dryRun") == "All"
        if "dryRun" in query and not dry_run:
            raise ApiError(422, "Invalid", f'dryRun: Unsupported value: "{query["dryRun"]}": supported values: "All"')
        if "watch" in query and _truthy(query["watch"]):
            raise bad_request("watch is not supported by the edgebundle test API server; poll with list instead")
        code = 200
        if name is None:
            if method == "GET":
                limit = query.get("limit")
                result = store.list_doc(rt, ns, query.get("labelSelector"), query.get("fieldSelector"),
                                        int(limit) if limit and limit.isdigit() else None, query.get("continue"))
            elif method == "POST" and (ns is not None or not rt.namespaced):
                if content_type not in ("application/json", "application/yaml", ""):
                    raise unsupported_media_type(content_type)
                result = store.create(rt, ns or "", self._parse(body, content_type), self._manager(query), dry_run)
                code = 201
            elif method == "DELETE":
                result = store.delete_collection(rt, ns, query.get("labelSelector"), query.get("fieldSelector"), dry_run)
            else:
                raise method_not_allowed()
        elif method == "GET":
            result = store.get(rt, ns or "", name)
        elif method == "PUT":
            result = store.replace(rt, ns or "", name, self._parse(body, content_type), self._manager(query),
                                   dry_run, sub)
        elif method == "PATCH":
            if content_type not in (APPLY, MERGE, STRATEGIC, JSON_PATCH):
                raise unsupported_media_type(content_type)
            manager = query.get("fieldManager", "") if content_type == APPLY else self._manager(query)
            result, created = store.patch(rt, ns or "", name, content_type, self._parse(body, content_type), manager,
                                          dry_run, sub, _truthy(query["force"]) if "force" in query else None)
            code = 201 if created else 200
        elif method == "DELETE" and not sub:
            options = self._parse(body, "application/json") if body else {}
            result = store.delete(rt, ns or "", name, options, query.get("propagationPolicy"), dry_run)
        else:
            raise method_not_allowed()
        return code, json.dumps(result).encode(), "application/json"


__all__ = ["KubeAPIServer", "Failure", "ProxyRequest", "ProxyResponse", "RequestRecord"]
