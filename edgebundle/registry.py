"""OCI distribution-spec client: streaming pull and push against one registry host.

The builder pulls from source registries with it; the installer pushes to the site registry.

Invariants:
- No blob is held in memory. Downloads yield at most :data:`edgebundle.digest.CHUNK` bytes at a time;
  an upload streams from a reader in :data:`SEND_BLOCK` pieces: by default the whole blob as the
  body of one ``PUT`` (as Docker pushes, so every registry deployment takes it; one request costs
  the registry less than many), or, when ``chunk_size`` is set (a proxy with a body limit), in
  ``PATCH`` slices of that size and a final ``PUT``.
- Exact bytes. A manifest is returned as the bytes the registry served and pushed as the bytes we
  were given; its digest is computed from those bytes and checked against the registry's
  ``Docker-Content-Digest`` and against the reference when that is a digest. Blob bytes are hashed
  while they stream and a mismatch raises :class:`~edgebundle.errors.VerificationError`.
- Bounded failure. Every attempt has timeouts; connection failures, 429 and 5xx are retried with
  capped exponential backoff, at most ``retries`` times and only while the current streak of
  failures is younger than ``retry_budget`` seconds (default 15 s), so a dead registry is
  reported quickly. A 4xx is an answer, not a fault, and is never retried.
- Credentials come from the Docker config (``docker_config`` argument, else
  ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``; oras-py also merges the latter),
  including ``credHelpers``/``credsStore``, resolved by oras-py's auth backend. Basic and Bearer
  challenges are answered; an ``Authorization`` header is only ever sent to this registry's own
  address (requests strips it on redirects to storage hosts, and upload ``Location`` URLs on
  other hosts get none).
- Loopback registries (127.0.0.0/8, ``localhost``, ``::1``) speak plain HTTP, as in Docker; any
  other host uses HTTPS unless listed in ``insecure_hosts``.
- Cheap requests. Connections are kept alive and reused (an answer without a body is read to its
  end at once, so urllib3 returns its connection to the pool); the proxy and CA-bundle settings
  of the environment are looked up once per host a :class:`Registry` talks to, not per request;
  all deadlines share one watchdog thread.
"""

from __future__ import annotations

import hashlib
import heapq
import http.client
import ipaddress
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urljoin, urlsplit

import oras.auth
import oras.auth.utils
import oras.container
import requests
import requests.adapters
import urllib3
import urllib3.connection

from edgebundle.digest import CHUNK, is_digest, sha256_bytes
from edgebundle.errors import RegistryError, UsageError, VerificationError
from edgebundle.mediatypes import ALL_MANIFEST_TYPES, OCI_INDEX
from edgebundle.ocinames import DOCKER_HUB, MAX_MANIFEST_BYTES, ImageRef, parse_reference
from edgebundle.ocinames import DOMAIN_RE as _DOMAIN_RE
from edgebundle.ocinames import MAX_NAME as _MAX_NAME
from edgebundle.ocinames import PATH_RE as _PATH_RE
from edgebundle.ocinames import TAG_RE as _TAG_RE

__all__ = [
    "DOCKER_HUB",
    "MAX_MANIFEST_BYTES",
    "BlobSource",
    "ImageRef",
    "Manifest",
    "Registry",
    "RegistryStats",
    "is_loopback",
    "parse_reference",
]

#: Bound for small JSON answers (tag lists, catalog pages, error bodies).
_MAX_SMALL_JSON = 4 * 1024 * 1024
_MAX_ERROR_BODY = 64 * 1024
#: Slowest transfer accepted (bytes/s) before a body's deadline passes (see ``Registry.deadline_for``).
DEFAULT_MIN_RATE = 64 * 1024
#: The host Docker Hub's API is really served from.
_DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", _DOCKER_HUB_API)

#: A blob to upload: a callable that opens a fresh reader (``read(n)`` and ``close()``) positioned
#: at the blob's first byte, called once per attempt and closed by us; or a seekable binary
#: stream, which we seek back to where it was for a retry and leave open. A non-seekable stream
#: works too but cannot be retried.
BlobSource = Callable[[], BinaryIO] | BinaryIO


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------

def _check_repo(repo: str) -> None:
    """Refuse repository names that could escape the URL path."""
    if not _PATH_RE.fullmatch(repo) or len(repo) > _MAX_NAME:
        raise UsageError(
            f"invalid repository name {repo!r}",
            hint="use lower-case path components such as rag/llm-service",
        )


def _check_ref(ref: str) -> None:
    """A manifest reference is a tag or a sha256 digest."""
    if ":" in ref:
        if not is_digest(ref):
            raise UsageError(f"invalid digest {ref!r}", hint="digests look like sha256:<64 lower-case hex>")
    elif not _TAG_RE.fullmatch(ref):
        raise UsageError(f"invalid tag {ref!r}", hint="tags are up to 128 of [A-Za-z0-9_.-]")


def _check_digest(digest: str) -> None:
    if not is_digest(digest):
        raise UsageError(f"invalid digest {digest!r}", hint="digests look like sha256:<64 lower-case hex>")


def _host_part(host: str) -> str:
    """``host`` without its port (IPv6 brackets removed)."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ``localhost`` and ``::1``, with or without a port."""
    name = _host_part(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Results and bookkeeping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as served: the bytes, their media type and their digest."""

    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)

    def json(self) -> Any:
        """The parsed document (the bytes stay authoritative)."""
        return json.loads(self.data)


@dataclass
class RegistryStats:
    """Counters for one :class:`Registry`; tests and progress output read them."""

    requests: int = 0
    connections: int = 0  # TCP connections opened (requests minus connections = reuses)
    retries: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: asdict() and == see only the counters

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class _Transient(Exception):
    """A failure worth retrying (connection trouble, 429, 5xx, an expired token mid-upload)."""

    def __init__(self, reason: str, *, refused: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused
        self.retry_after = retry_after


class _SourceMismatch(Exception):
    """The upload source ran out before ``size`` bytes (raised from inside the request body)."""


class _Session(requests.Session):
    """A session whose requests always carry a timeout (oras-py's token requests too), and that
    reads the environment's proxy and CA-bundle settings once per scheme and host."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout
        self.mount("http://", _TrackedAdapter())
        self.mount("https://", _TrackedAdapter())
        self._environment: dict[tuple[str, str, bool | None], dict[str, Any]] = {}

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(self, url: str | None, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        """requests' own answer, kept per scheme, host and port: it depends on nothing else of the
        URL (``no_proxy`` matches host and port), and asking costs ~0.15 ms a request."""
        if proxies or verify is not None or cert is not None or not url:  # explicit settings: ask
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream)
        settings = self._environment.get(key)
        if settings is None:
            settings = self._environment[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return dict(settings)


class _HashingReader:
    """Reads from a stream, hashing and counting every byte handed out."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class _Slice:
    """Request body of exactly ``length`` bytes streamed from a reader.

    ``__len__`` makes requests send ``Content-Length`` rather than chunked encoding; ``read``
    raises :class:`_SourceMismatch` if the reader ends early, which aborts the request.
    """

    def __init__(self, reader: _HashingReader, length: int, stats: RegistryStats) -> None:
        self.reader = reader
        self.remaining = length
        self.length = length
        self.stats = stats

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        want = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self.reader.read(min(want, CHUNK))
        if not data:
            raise _SourceMismatch(f"source ended {self.remaining} bytes early")
        self.remaining -= len(data)
        self.stats.add(bytes_sent=len(data))
        return data


class _Backoff:
    """One operation's retry policy: bounded attempts, capped exponential sleeps, a time budget."""

    def __init__(self, registry: Registry, what: str) -> None:
        self.registry = registry
        self.what = what
        self.failures = 0
        self.streak_start: float | None = None

    def reset(self) -> None:
        """Progress was made: the next failure starts a fresh streak."""
        self.failures = 0
        self.streak_start = None

    def failed(self, err: _Transient) -> None:
        """Sleep before the next attempt, or raise :class:`RegistryError` when out of budget."""
        reg = self.registry
        now = time.monotonic()
        if self.streak_start is None:
            self.streak_start = now
        delay = min(reg.max_backoff, reg.backoff * (2**self.failures))
        if err.retry_after is not None:
            delay = min(reg.max_backoff, max(delay, err.retry_after))
        self.failures += 1
        elapsed = now - self.streak_start
        if self.failures > reg.retries or elapsed + delay > reg.retry_budget:
            reg._give_up(self.what, err, self.failures, elapsed)
        reg.stats.add(retries=1)
        time.sleep(delay)


def _root_causes(exc: BaseException) -> Iterator[BaseException]:
    """Walk an exception's causes, wrapped reasons and arguments (requests nests urllib3's)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _describe_connection_error(exc: BaseException, timeout: tuple[float, float],
                               own: str | None = None) -> tuple[str, bool]:
    """A short reason for a failed connection, and whether it was refused.

    When the failed request went to a host other than ``own`` (the registry's ``host:port``),
    because the registry redirected us or named a token realm there, the reason names that host.
    """
    reason, refused = _connection_reason(exc, timeout)
    url = getattr(getattr(exc, "request", None), "url", None)
    other = urlsplit(url).netloc if isinstance(url, str) else ""
    if own and other and other != own:
        reason += f" at {other} (where registry {own} sent us: a redirect or a token realm)"
    return reason, refused


def _connection_reason(exc: BaseException, timeout: tuple[float, float]) -> tuple[str, bool]:
    causes = list(_root_causes(exc))
    if any(isinstance(c, http.client.LineTooLong) for c in causes):
        return "it sent a header line longer than HTTP clients accept", False
    if any(isinstance(c, http.client.BadStatusLine) and not isinstance(c, http.client.RemoteDisconnected)
           for c in causes):
        return "it does not answer in HTTP (bad status line)", False
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or "Connection refused" in str(exc):
        return "connection refused", True
    if any(isinstance(c, socket.gaierror) for c in causes):
        return "the host name does not resolve", False
    if isinstance(exc, requests.ConnectTimeout):
        return f"no answer within {timeout[0]:g} s (connect timeout)", False
    if isinstance(exc, requests.ReadTimeout):
        return f"no answer within {timeout[1]:g} s (read timeout)", False
    if any(isinstance(c, ConnectionResetError) for c in causes):
        return "connection reset", False
    return f"connection failed ({type(exc).__name__})", False


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]


def _conflicting_length(resp: requests.Response) -> bool:
    """Two Content-Length values that differ (requests would otherwise fail deep inside a read)."""
    raw = getattr(resp.raw, "headers", None)
    values = raw.getlist("Content-Length") if hasattr(raw, "getlist") else []
    parts = {v.strip() for value in values for v in str(value).split(",")}
    return len(parts) > 1


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket a streamed response reads from (urllib3 2.x / http.client internals)."""
    for path in (("raw", "_connection", "sock"), ("raw", "_fp", "fp", "raw", "_sock")):
        obj: Any = resp
        for attr in path:
            obj = getattr(obj, attr, None)
        if isinstance(obj, socket.socket):
            return obj
    return None


#: Pending deadlines at which the cancelled ones are swept out of the watchdog's heap.
_WATCHDOG_COMPACT = 1024


class _Watchdog:
    """One daemon thread that fires every deadline of the process when it is due.

    A ``threading.Timer`` per request started a thread per request (~0.4 ms each on a busy host);
    here a deadline is one heap entry. Cancelled entries are dropped when they reach the top, or
    all at once when they pile up (an upload's budget can be an hour; a pull makes thousands).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        with self._cond:
            if len(self._heap) >= _WATCHDOG_COMPACT:
                self._heap = [e for e in self._heap if not e[2].cancelled]
                heapq.heapify(self._heap)
            entry = (time.monotonic() + deadline.seconds, next(self._order), deadline)
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():  # first use, or after a fork
                self._thread = threading.Thread(target=self._run, name="registry-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:  # due before whatever the thread sleeps towards
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                due = heapq.heappop(self._heap)[2]
            due._fire()


_WATCHDOG = _Watchdog()


class _Deadline:
    """A per-body deadline: when it passes, the response's socket is shut down.

    A read timeout only bounds the gap between two bytes; a peer that sends one byte every few
    seconds never trips it. Shutting the socket down makes the blocked read return at once, and
    :meth:`check` turns that into a clear :class:`RegistryError` (not retried: a slow peer stays slow).
    """

    def __init__(self, resp: requests.Response, seconds: float) -> None:
        self.seconds, self.expired, self.cancelled, self.started = seconds, False, False, time.monotonic()
        self._sock = _socket_of(resp)
        _WATCHDOG.add(self)

    def _fire(self) -> None:
        sock = self._sock  # cancel() may clear it meanwhile
        if self.cancelled:
            return
        self.expired = True
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self.cancelled = True
        self._sock = None  # the heap entry may outlive the request by its whole budget

    def __enter__(self) -> _Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def check(self, registry: Registry, what: str, received: int) -> None:
        if self.expired:
            raise RegistryError(
                f"registry {registry.host} is too slow: {what} took more than {self.seconds:.0f} s "
                f"({received:,} bytes received; the minimum rate is {registry.min_rate:,.0f} bytes/s)",
                hint="check the network path and the registry's load; the operation is safe to run again")


_IN_FLIGHT = threading.local()


class _RequestDeadline(_Deadline):
    """A deadline over one request: sending it (body included) and receiving its answer's headers.

    Like :class:`_Deadline` for bodies: a read timeout restarts on every byte, so a peer that
    drips its status line or headers, or reads an upload one block every few seconds, never
    trips it. The connection classes below hand the request's socket to the deadline of the
    current thread (:func:`_track_socket`); when the deadline passes, it is shut down.
    Budget: one read timeout plus the body's size at the minimum rate.
    """

    def __init__(self, seconds: float, sent: int) -> None:  # the socket is not known yet: see attach
        self.seconds, self.sent, self.expired, self.cancelled = seconds, sent, False, False
        self._sock: socket.socket | None = None
        self.connected = False  # the request opened a new connection (rather than reusing one)

    def attach(self, sock: socket.socket, *, new: bool = False) -> None:
        self._sock = sock
        self.connected = self.connected or new
        if self.expired:
            self._fire()

    def __enter__(self) -> _RequestDeadline:
        _IN_FLIGHT.deadline = self
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
        _IN_FLIGHT.deadline = None

    def check(self, registry: Registry, what: str, received: int = 0) -> None:
        if self.expired:
            raise RegistryError(
                f"registry {registry.host} is too slow: {what}: sending the request"
                + (f" ({self.sent:,} bytes)" if self.sent else "")
                + f" and receiving the answer's headers took more than {self.seconds:.0f} s "
                f"(the minimum rate is {registry.min_rate:,.0f} bytes/s)",
                hint="check the network path and the registry's load (a peer that drips bytes is cut off); "
                     "the operation is safe to run again")


#: Bytes of a request body read and sent at once (see _TrackedHTTPConnection).
SEND_BLOCK = 256 * 1024


def _track_socket(sock: socket.socket | None, *, new: bool = False) -> None:
    deadline = getattr(_IN_FLIGHT, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock, new=new)


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # A request body is read and sent in ``blocksize`` pieces: urllib3's 16 KiB made a 256 MiB
        # upload 16,000 reads, hashes and sends. Each piece's send must still finish within the
        # read timeout at the slowest rate a peer may read at, hence not larger.
        super().__init__(*args, **kwargs)
        self.blocksize = SEND_BLOCK  # requests passes urllib3's default explicitly

    def connect(self) -> None:
        super().connect()
        _track_socket(self.sock, new=True)

    def request(self, *args: Any, **kwargs: Any) -> None:  # a reused connection is already connected
        _track_socket(self.sock)
        super().request(*args, **kwargs)


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blocksize = SEND_BLOCK  # as _TrackedHTTPConnection

    def connect(self) -> None:
        super().connect()
        _track_socket(self.sock, new=True)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track_socket(self.sock)
        super().request(*args, **kwargs)


class _TrackedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackedAdapter(requests.adapters.HTTPAdapter):
    """Connections whose sockets a :class:`_RequestDeadline` can reach."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class Registry:
    """A client for one registry host (``host[:port]``; ``docker.io`` means Docker Hub).

    ``timeout`` bounds each read; connecting is bounded by ``min(timeout, 5)``. ``retries``,
    ``backoff``/``max_backoff`` (seconds, doubling) and ``retry_budget`` (seconds a failure
    streak may last) bound retrying. Without ``chunk_size`` every blob goes up as one ``PUT``;
    with it, blobs larger than ``chunk_size`` go up in ``PATCH`` slices of that size.
    """

    #: Entries asked for per page of ``tags/list`` and ``_catalog`` (``Link`` headers do the rest).
    page_size = 1000

    def __init__(
        self,
        host: str,
        *,
        plain_http: bool | None = None,
        insecure_hosts: Iterable[str] = (),
        docker_config: str | os.PathLike[str] | None = None,
        timeout: float = 30,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
        retry_budget: float = 15.0,
        chunk_size: int | None = None,
        min_rate: float = DEFAULT_MIN_RATE,
    ) -> None:
        if not host or "/" in host or not _DOMAIN_RE.fullmatch(host):
            raise UsageError(f"invalid registry address {host!r}", hint="write it as HOST or HOST:PORT")
        if chunk_size is not None and chunk_size <= 0:
            raise UsageError(f"upload chunk size must be positive, got {chunk_size}")
        self.host = DOCKER_HUB if host == "index.docker.io" else host
        self.api_host = _DOCKER_HUB_API if self.host == DOCKER_HUB else self.host
        if plain_http is None:
            insecure = set(insecure_hosts)
            plain_http = is_loopback(self.host) or self.host in insecure or _host_part(self.host) in insecure
        self.plain_http = plain_http
        self.base_url = f"{'http' if plain_http else 'https'}://{self.api_host}"
        self._netloc = urlsplit(self.base_url).netloc
        self.timeout: tuple[float, float] = (min(timeout, 5.0), timeout)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_budget = retry_budget
        self.chunk_size = chunk_size
        self.min_rate = min_rate
        self.docker_config = docker_config
        self.stats = RegistryStats()
        self._session = _Session(self.timeout)
        self._session.headers["User-Agent"] = "edgebundle"
        self._auth = oras.auth.get_auth_backend("token", session=self._session, insecure=plain_http)
        self._credentials_loaded = False
        self._auth_lock = threading.Lock()
        #: Authorization header per repository ("" for host-wide endpoints); "*" = Basic for all.
        self._auth_headers: dict[str, str] = {}

    def deadline_for(self, size: int) -> float:
        """Seconds a body of ``size`` bytes may take: one read timeout plus ``size`` at ``min_rate``."""
        return self.timeout[1] + size / self.min_rate

    def __repr__(self) -> str:
        return f"Registry({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- credentials ---------------------------------------------------------------------

    def _config_path(self) -> str | None:
        """The Docker config file to read, following Docker's own precedence."""
        if self.docker_config is not None:
            path = Path(self.docker_config)
            return str(path / "config.json" if path.is_dir() else path)
        env = os.environ.get("DOCKER_CONFIG")
        if env:
            return str(Path(env) / "config.json")
        return None  # oras-py adds ~/.docker/config.json itself

    def _load_credentials(self) -> None:
        """Let oras-py's auth backend find credentials for this host (once)."""
        if self._credentials_loaded:
            return
        self._credentials_loaded = True
        path = self._config_path()
        configs = [path] if path and os.path.exists(path) else []
        keys = (
            _DOCKER_HUB_AUTH_KEYS
            if self.host == DOCKER_HUB
            else (self.host, f"https://{self.host}", f"http://{self.host}")
        )
        for key in keys:
            self._auth.load_configs(oras.container.Container("edgebundle", registry=key), configs=list(configs))
            if getattr(self._auth, "_basic_auth", None):
                return

    def _authorize(self, response: requests.Response, repo: str) -> bool:
        """Answer a 401 challenge; True when a new ``Authorization`` header was obtained."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        with self._auth_lock:
            self._load_credentials()
            basic = getattr(self._auth, "_basic_auth", None)
            if scheme == "basic":
                if not basic or self._auth_headers.get("*") == f"Basic {basic}":
                    return False
                self._auth_headers["*"] = f"Basic {basic}"
                return True
            if scheme == "bearer":
                token_deadline = _RequestDeadline(self.timeout[1] + _MAX_SMALL_JSON / self.min_rate, 0)
                try:  # oras reads the token answer whole inside the request: one deadline bounds both
                    with token_deadline:
                        token = self._auth.request_token(oras.auth.utils.parse_auth_header(challenge))
                finally:
                    token_deadline.check(self, f"the token request for {repo or 'the registry'}")
                if not token:
                    return False
                header = f"Bearer {token}"
                if self._auth_headers.get(repo) == header:
                    return False
                self._auth_headers[repo] = header
                return True
        return False

    def _auth_failed(self, what: str) -> NoReturn:
        has_creds = bool(getattr(self._auth, "_basic_auth", None))
        if has_creds:
            raise RegistryError(
                f"registry {self.host} rejected the credentials for {what} (HTTP 401)",
                hint=f"check the entry for {self.host} in the docker config (run `docker login {self.host}`)",
            )
        raise RegistryError(
            f"registry {self.host} requires authentication for {what} (HTTP 401)",
            hint=f"add credentials for {self.host} to the docker config (`docker login {self.host}`) "
            "or set DOCKER_CONFIG to a directory whose config.json has them",
        )

    # ---- one request ---------------------------------------------------------------------

    def _url(self, repo: str, kind: str, ref: str) -> str:
        return f"{self.base_url}/v2/{repo}/{kind}/{ref}"

    def _send(
        self,
        method: str,
        url: str,
        *,
        repo: str,
        what: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Callable[[], Any] | bytes | None = None,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """One request with auth; raises :class:`_Transient` for faults worth retrying.

        The response is always streamed: callers read bodies with :meth:`_read_bounded` or
        ``iter_content`` and close it (``with resp:``).

        ``body`` is bytes (resent after an auth challenge) or a factory of a one-shot stream
        (an auth challenge then raises :class:`_Transient` so the caller restarts cleanly).
        A 401 that survives authentication raises :class:`RegistryError`; other statuses are
        returned for the caller to judge.
        """
        for attempt in range(2):
            hdrs = dict(headers or {})
            if urlsplit(url).netloc == self._netloc:
                auth = self._auth_headers.get(repo) or self._auth_headers.get("*")
                if auth:
                    hdrs["Authorization"] = auth
            data = body() if callable(body) else body
            self.stats.add(requests=1)
            sent = len(data) if hasattr(data, "__len__") else 0
            request_deadline = _RequestDeadline(self.timeout[1] + sent / self.min_rate, sent)
            try:
                with request_deadline:
                    resp = self._session.request(
                        method, url, headers=hdrs, params=params, data=data, stream=True,
                        allow_redirects=allow_redirects,
                    )  # fmt: skip
                if request_deadline.connected:
                    self.stats.add(connections=1)
                if request_deadline.expired:  # a head cut short by the deadline may still parse
                    resp.close()
                    request_deadline.check(self, what)
                if resp.raw is not None and getattr(resp.raw, "length_remaining", None) == 0:
                    # No body (HEAD, 204, Content-Length: 0): reading its end now hands the
                    # connection back to the pool; closing an unread answer would drop it.
                    resp.raw.read()
                if resp.status_code == 401:
                    resp.close()
                    if attempt == 0 and self._authorize(resp, repo):
                        if callable(body):
                            raise _Transient("authorization renewed; restarting")
                        continue
                    self._auth_failed(what)
            except requests.exceptions.SSLError as e:
                raise RegistryError(
                    f"TLS with registry {self.host} failed: {e}",
                    hint=f"if {self.host} speaks plain HTTP, pass --plain-http {self.host}; if it uses a "
                    "private CA, point REQUESTS_CA_BUNDLE at the CA certificate",
                ) from e
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                request_deadline.check(self, what)
                reason, refused = _describe_connection_error(e, self.timeout, self._netloc)
                raise _Transient(reason, refused=refused) from e
            except (requests.RequestException, http.client.HTTPException, ValueError) as e:
                request_deadline.check(self, what)
                if "Content-Length" in str(e):
                    raise RegistryError(f"registry {self.host} sent conflicting Content-Length headers for {what}",
                                        hint="a broken proxy or a hostile server is in between; fix the path to "
                                             "the registry") from None
                raise RegistryError(f"registry {self.host} sent an invalid response to {what}: {_first_line(e)}",
                                    hint="it is not behaving as an OCI registry (or a proxy in between "
                                         "garbles its answers); check what listens there") from None
            if _conflicting_length(resp):
                resp.close()
                raise RegistryError(
                    f"registry {self.host} sent conflicting Content-Length headers for {what}",
                    hint="a broken proxy or a hostile server is in between; fix the path to the registry")
            if resp.status_code == 429 or resp.status_code >= 500:
                retry_after = resp.headers.get("Retry-After", "")
                resp.close()
                raise _Transient(
                    f"HTTP {resp.status_code} {resp.reason}",
                    retry_after=float(retry_after) if retry_after.isdigit() else None,
                )
            return resp
        raise AssertionError("unreachable")

    def _retrying(self, what: str, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt`` until it returns, retrying :class:`_Transient` failures within budget."""
        backoff = _Backoff(self, what)
        while True:
            try:
                return attempt()
            except _Transient as err:
                backoff.failed(err)

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """:meth:`_send` with retries (for requests whose body can be resent)."""
        return self._retrying(kwargs["what"], lambda: self._send(method, url, **kwargs))

    def _give_up(self, what: str, err: _Transient, attempts: int, elapsed: float) -> NoReturn:
        after = f"gave up after {attempts} attempt{'s' if attempts > 1 else ''} in {elapsed:.1f} s"
        if err.refused and " at " in err.reason:
            raise RegistryError(f"cannot reach {err.reason} ({what}; {after})",
                                hint="the registry points elsewhere; check its configuration (redirects, "
                                     "token realm) or reach that host")
        if err.refused:
            raise RegistryError(
                f"cannot reach registry {self.host}: connection refused — is the registry running / "
                f"is the address right? ({what}; {after})",
                hint=f"start the registry or fix the address; nothing is listening on {self.api_host}",
            )
        if err.reason.startswith("HTTP "):
            raise RegistryError(
                f"registry {self.host} kept failing: {err.reason} ({what}; {after})",
                hint="the registry is overloaded or broken; check its logs and storage, then run again",
            )
        raise RegistryError(
            f"cannot reach registry {self.host}: {err.reason} ({what}; {after})",
            hint="check the network path and the address; the operation is safe to run again",
        )

    def _fail(self, resp: requests.Response, what: str) -> NoReturn:
        """Raise a :class:`RegistryError` for an unexpected answer, quoting the OCI error body."""
        detail = ""
        try:
            raw = resp.raw.read(_MAX_ERROR_BODY, decode_content=True) if resp.raw else b""
            errors = json.loads(raw).get("errors") or []
            detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
        except (ValueError, AttributeError, TypeError, OSError):
            pass
        finally:
            resp.close()
        hints = {
            403: f"the credentials for {self.host} lack permission for this repository",
            404: "check the repository name and the tag or digest",
        }
        if resp.status_code == 400 and not detail:  # not an OCI error body: not a registry API answer
            hints[400] = (
                f"if {self.host} speaks HTTPS, do not pass --plain-http for it"
                if self.plain_http
                else f"is {self.host} an OCI distribution registry?"
            )
        raise RegistryError(
            f"registry {self.host} refused {what}: HTTP {resp.status_code}" + (f" {detail}" if detail else ""),
            hint=hints.get(resp.status_code),
        )

    def _expect(self, resp: requests.Response, ok: tuple[int, ...], what: str) -> requests.Response:
        """Close and return ``resp`` when its status is in ``ok``; else raise via :meth:`_fail`."""
        if resp.status_code not in ok:
            self._fail(resp, what)
        resp.close()
        return resp

    def _read_bounded(self, resp: requests.Response, limit: int, what: str) -> bytes:
        """Read a small body whole, refusing more than ``limit`` bytes."""
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            resp.close()
            raise RegistryError(f"{what} is {length} bytes, more than the {limit}-byte limit")
        out = bytearray()
        deadline = _Deadline(resp, self.deadline_for(int(length) if length and length.isdigit() else limit))
        try:
            for chunk in resp.iter_content(CHUNK):
                out += chunk
                if len(out) > limit:
                    raise RegistryError(f"{what} is more than the {limit}-byte limit")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            deadline.check(self, what, len(out))
            raise _Transient(_describe_connection_error(e, self.timeout, self._netloc)[0]) from e
        finally:
            deadline.cancel()
            resp.close()
        deadline.check(self, what, len(out))
        self.stats.add(bytes_received=len(out))
        return bytes(out)

    # ---- manifests -----------------------------------------------------------------------

    def get_manifest(self, repo: str, ref: str, accept: Iterable[str] = ALL_MANIFEST_TYPES) -> Manifest:
        """Fetch a manifest or index as the exact bytes served, digest-checked."""
        _check_repo(repo)
        _check_ref(ref)
        what = f"manifest {repo}:{ref}" if ":" not in ref else f"manifest {repo}@{ref}"
        accept_header = ", ".join(accept)

        def attempt() -> Manifest:
            resp = self._send(
                "GET", self._url(repo, "manifests", ref), repo=repo, what=what,
                headers={"Accept": accept_header},
            )  # fmt: skip
            if resp.status_code != 200:
                self._fail(resp, f"to serve {what}")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            served = resp.headers.get("Docker-Content-Digest")
            data = self._read_bounded(resp, MAX_MANIFEST_BYTES, what)
            return self._manifest_from(data, media_type, served, ref, what)

        return self._retrying(what, attempt)

    def _manifest_from(self, data: bytes, media_type: str, served: str | None, ref: str, what: str) -> Manifest:
        digest = sha256_bytes(data)
        if served and served.startswith("sha256:") and served != digest:
            raise VerificationError(
                f"{what}: registry {self.host} says its digest is {served} but the bytes hash to {digest}",
                hint="the registry or a proxy altered the manifest; do not trust this source",
            )
        if ":" in ref and ref != digest:
            raise VerificationError(
                f"{what}: the bytes served hash to {digest}, not the requested digest",
                hint="the registry's storage is corrupt or it is not the registry you think",
            )
        if not media_type or media_type in ("application/json", "text/plain", "application/octet-stream"):
            try:
                doc = json.loads(data)
            except ValueError as e:
                raise RegistryError(f"{what} is not JSON", hint="is this an image registry?") from e
            media_type = doc.get("mediaType", "") if isinstance(doc, dict) else ""
        return Manifest(data=data, media_type=media_type, digest=digest)

    def has_manifest(self, repo: str, ref: str) -> str | None:
        """The digest of ``repo:ref`` when present (HEAD), else None."""
        _check_repo(repo)
        _check_ref(ref)
        what = f"manifest {repo} {ref}"
        with self._request(
            "HEAD", self._url(repo, "manifests", ref), repo=repo, what=what,
            headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)},
        ) as resp:  # fmt: skip
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                self._fail(resp, f"to look up {what}")
            served = resp.headers.get("Docker-Content-Digest")
        if not served or not is_digest(served):
            return self.get_manifest(repo, ref).digest
        if ":" in ref and served != ref:
            raise VerificationError(f"{what}: registry {self.host} answered with digest {served}")
        return served

    def referrers(self, repo: str, digest: str) -> bytes | None:
        """The OCI 1.1 referrers API's index of what names ``digest`` as its subject, or None when
        the registry does not serve the API (404: use the ``sha256-<hex>`` tag schema instead)."""
        _check_repo(repo)
        _check_digest(digest)
        what = f"referrers of {repo}@{digest}"
        resp = self._request("GET", self._url(repo, "referrers", digest), repo=repo, what=what,
                             headers={"Accept": OCI_INDEX})
        if resp.status_code == 404:
            resp.close()
            return None
        if resp.status_code != 200:
            self._fail(resp, f"to list the {what}")
        return self._read_bounded(resp, MAX_MANIFEST_BYTES, what)

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """PUT the exact ``data`` under ``ref`` (a tag or its own digest); return its digest."""
        _check_repo(repo)
        _check_ref(ref)
        if len(data) > MAX_MANIFEST_BYTES:
            raise UsageError(f"manifest for {repo}:{ref} is {len(data)} bytes; registries accept at most 4 MiB")
        digest = sha256_bytes(data)
        if ":" in ref and ref != digest:
            raise VerificationError(f"manifest bytes hash to {digest}, not the digest {ref} they are pushed under")
        what = f"manifest {repo}:{ref}" if ":" not in ref else f"manifest {repo}@{ref}"
        with self._request(
            "PUT", self._url(repo, "manifests", ref), repo=repo, what=f"push of {what}",
            headers={"Content-Type": media_type}, body=data,
        ) as resp:  # fmt: skip
            if resp.status_code not in (200, 201):
                self._fail(resp, f"the push of {what}")
            echoed = resp.headers.get("Docker-Content-Digest")
        self.stats.add(bytes_sent=len(data))
        if echoed and echoed != digest:
            raise VerificationError(
                f"registry {self.host} stored {what} as {echoed}, but the bytes sent hash to {digest}",
                hint="the registry rewrote the manifest; it cannot hold these images faithfully",
            )
        return digest

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Delete a manifest by digest; False when it was not there."""
        _check_repo(repo)
        _check_digest(digest)
        url = self._url(repo, "manifests", digest)
        with self._request("DELETE", url, repo=repo, what=f"delete of {repo}@{digest}") as resp:
            if resp.status_code == 404:
                return False
            if resp.status_code not in (200, 202):
                self._fail(resp, f"to delete manifest {repo}@{digest}")
            return True

    # ---- blobs: download -----------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        """True when ``repo`` has the blob (HEAD)."""
        _check_repo(repo)
        _check_digest(digest)
        url = self._url(repo, "blobs", digest)
        with self._request("HEAD", url, repo=repo, what=f"blob {repo}@{digest}") as resp:
            if resp.status_code == 404:
                return False
            if resp.status_code != 200:
                self._fail(resp, f"to look up blob {repo}@{digest}")
            return True

    def iter_blob(self, repo: str, digest: str, size: int | None = None) -> Iterator[bytes]:
        """Yield the blob in chunks of at most 1 MiB, verifying size and digest as it streams.

        A dropped connection resumes with a ``Range`` request (or by skipping what was already
        received when the registry ignores ``Range``). The last chunk is yielded only after the
        digest has been checked, so a consumer that reaches the end holds verified bytes; on a
        mismatch :class:`VerificationError` is raised instead and the consumer must discard what
        it wrote.
        """
        _check_repo(repo)
        _check_digest(digest)
        what = f"blob {repo}@{digest}"
        url = self._url(repo, "blobs", digest)
        h = hashlib.sha256()
        received = 0
        held: bytes | None = None  # the newest chunk, released once the next arrives or verified
        backoff = _Backoff(self, f"download of {what}")
        while True:
            deadline: _Deadline | None = None
            try:
                headers = {"Range": f"bytes={received}-"} if received else {}
                resp = self._send("GET", url, repo=repo, what=what, headers=headers)
                length = resp.headers.get("Content-Length", "")
                deadline = _Deadline(resp, self.deadline_for(
                    size - received if size is not None else int(length) if length.isdigit() else MAX_MANIFEST_BYTES))
                with resp, deadline:
                    if resp.status_code not in (200, 206):
                        self._fail(resp, f"to serve {what}")
                    skip = received if resp.status_code == 200 else 0
                    length = resp.headers.get("Content-Length", "")
                    announced = int(length) + received - skip if length.isdigit() else None
                    if size is not None and announced is not None and announced != size:
                        raise VerificationError(
                            f"{what}: registry {self.host} announces {announced} bytes, expected {size}",
                            hint="the registry holds different content under this digest; its storage may be corrupt",
                        )
                    for chunk in resp.iter_content(CHUNK):
                        if skip:
                            cut = min(skip, len(chunk))
                            chunk, skip = chunk[cut:], skip - cut
                            if not chunk:
                                continue
                        received += len(chunk)
                        self.stats.add(bytes_received=len(chunk))
                        if size is not None and received > size:
                            raise VerificationError(f"{what}: {self.host} sent more than the expected {size} bytes")
                        h.update(chunk)
                        if held is not None:
                            yield held
                        held = chunk
                        backoff.reset()
                break
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
                if deadline is not None:
                    deadline.check(self, what, received)
                reason, refused = _describe_connection_error(e, self.timeout, self._netloc)
                backoff.failed(_Transient(reason, refused=refused))
            except _Transient as err:
                backoff.failed(err)
        if size is not None and received != size:
            raise VerificationError(f"{what}: registry {self.host} sent {received} bytes, expected {size}")
        actual = "sha256:" + h.hexdigest()
        if actual != digest:
            raise VerificationError(
                f"{what}: the bytes served hash to {actual}",
                hint="the registry's storage is corrupt or something in between altered the blob",
            )
        if held is not None:
            yield held

    def download_blob(self, repo: str, digest: str, dest: BinaryIO, size: int | None = None) -> int:
        """Stream a blob into ``dest``; returns its size. On a mismatch ``dest`` holds junk."""
        total = 0
        for chunk in self.iter_blob(repo, digest, size):
            dest.write(chunk)
            total += len(chunk)
        return total

    # ---- blobs: upload -------------------------------------------------------------------

    def push_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        source: BlobSource,
        *,
        mount_from: str | None = None,
        chunk_size: int | None = None,
    ) -> bool:
        """Make sure ``repo`` has the blob; True when it was added (uploaded or mounted).

        Returns False without reading ``source`` when the registry already has it. With
        ``mount_from`` (another repository on this registry) a cross-repository mount is tried
        first. Otherwise the bytes go up in one ``PUT`` (any blob without a ``chunk_size``,
        else blobs up to it) or as ``PATCH`` chunks followed by ``PUT ?digest=``. A failed attempt restarts the upload
        session from the first byte, reopening ``source`` (see :data:`BlobSource`). The bytes
        are hashed as they are sent; a mismatch with ``digest`` or ``size`` cancels the upload
        and raises :class:`VerificationError`.
        """
        _check_repo(repo)
        _check_digest(digest)
        if mount_from is not None:
            _check_repo(mount_from)
        if size < 0:
            raise UsageError(f"negative blob size {size}")
        if self.has_blob(repo, digest):
            self.stats.add(blobs_skipped=1)
            return False
        chunk = chunk_size or self.chunk_size or max(size, 1)
        start = None
        if not callable(source):
            seekable = getattr(source, "seekable", None)
            start = source.tell() if seekable is not None and seekable() else None
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                if self.has_blob(repo, digest):  # the last attempt may have finished unseen
                    return True
                if not callable(source):
                    if start is None:
                        raise RegistryError(
                            f"upload of {digest} to {self.host}/{repo} failed and the source cannot be rewound",
                            hint="pass a callable that reopens the blob so a retry can start over",
                        )
                    source.seek(start)
            return self._push_once(repo, digest, size, source, mount_from, chunk)

        return self._retrying(f"upload of {digest} to {repo}", attempt)

    def _start_upload(self, repo: str, digest: str, mount_from: str | None) -> str | None:
        """POST a new upload session; its Location, or None when the blob was mounted."""
        params = {"mount": digest, "from": mount_from} if mount_from else None
        url = f"{self.base_url}/v2/{repo}/blobs/uploads/"
        resp = self._send("POST", url, repo=repo, what=f"upload to {repo}", params=params, allow_redirects=False)
        if resp.status_code == 201 and mount_from:
            resp.close()
            self.stats.add(blobs_mounted=1)
            return None
        self._expect(resp, (202,), f"to start an upload to {repo}")
        if not resp.headers.get("Location"):
            raise RegistryError(f"registry {self.host} started an upload to {repo} without a Location header")
        return urljoin(resp.url, resp.headers["Location"])

    def _push_once(
        self, repo: str, digest: str, size: int, source: BlobSource, mount_from: str | None, chunk: int
    ) -> bool:
        """One upload session from the first byte: POST, then PUT or PATCH…PATCH + PUT."""
        location = self._start_upload(repo, digest, mount_from)
        if location is None:
            return True
        what = f"upload of {digest} to {repo}"
        octet = {"Content-Type": "application/octet-stream"}
        stream = source() if callable(source) else source
        reader = _HashingReader(stream)
        try:
            offset = 0
            while size > chunk and offset < size:
                n = min(chunk, size - offset)
                resp = self._send(
                    "PATCH", location, repo=repo, what=what, allow_redirects=False,
                    headers={**octet, "Content-Range": f"{offset}-{offset + n - 1}"},
                    body=lambda n=n: _Slice(reader, n, self.stats),
                )  # fmt: skip
                self._expect(resp, (202,), f"a chunk of the {what}")
                location = urljoin(resp.url, resp.headers.get("Location", location))
                offset += n
            last = size - offset  # the whole blob when it fits in one chunk, else nothing
            resp = self._send(
                "PUT", location, repo=repo, what=what, params={"digest": digest}, allow_redirects=False,
                headers=octet, body=lambda: _Slice(reader, last, self.stats),
            )  # fmt: skip
            self._check_source(reader, digest, size, location, repo)
        except _SourceMismatch as e:
            self._cancel(location, repo)
            raise VerificationError(
                f"{what}: {e}; expected {size} bytes", hint="the local copy changed or is truncated; rebuild it"
            ) from e
        finally:
            if callable(source):
                stream.close()
        self._expect(resp, (201,), f"the {what}")
        echoed = resp.headers.get("Docker-Content-Digest")
        if echoed and echoed != digest:
            raise VerificationError(f"registry {self.host} stored {what} as {echoed}")
        self.stats.add(blobs_uploaded=1)
        return True

    def _check_source(self, reader: _HashingReader, digest: str, size: int, location: str, repo: str) -> None:
        """After ``size`` bytes: the source must be at EOF and hash to ``digest``."""
        extra = reader.stream.read(1)
        if extra or reader.digest != digest:
            self._cancel(location, repo)
            why = f"is longer than {size} bytes" if extra else f"hashes to {reader.digest}"
            raise VerificationError(
                f"upload of {digest} to {self.host}/{repo}: the source {why}",
                hint="the local copy changed or is corrupt; nothing was stored under that digest",
            )

    def _cancel(self, location: str, repo: str) -> None:
        """Best-effort DELETE of an upload session we will not finish."""
        try:
            self._send("DELETE", location, repo=repo, what="cancel upload", allow_redirects=False).close()
        except (_Transient, RegistryError):
            pass

    # ---- listings ------------------------------------------------------------------------

    def _paged(self, url: str, key: str, repo: str, what: str) -> list[str]:
        """Follow ``Link: <...>; rel="next"`` pages of a JSON list endpoint."""
        out: list[str] = []
        next_url: str | None = url
        params: dict[str, str] | None = {"n": str(self.page_size)}

        def page(page_url: str, page_params: dict[str, str] | None) -> tuple[Any, str | None]:
            resp = self._send("GET", page_url, repo=repo, what=what, params=page_params)
            if resp.status_code == 404 and key == "tags":
                resp.close()
                return {}, None
            if resp.status_code != 200:
                self._fail(resp, f"to list {what}")
            link = resp.links.get("next", {}).get("url")
            body = self._read_bounded(resp, _MAX_SMALL_JSON, what)
            try:
                return json.loads(body), urljoin(resp.url, link) if link else None
            except ValueError as e:
                raise RegistryError(f"registry {self.host} answered {what} with malformed JSON") from e

        while next_url:
            doc, next_url = self._retrying(what, lambda u=next_url, p=params: page(u, p))
            items = doc.get(key) if isinstance(doc, dict) else None
            out.extend(str(i) for i in items or [])
            params = None
        return out

    def list_tags(self, repo: str) -> list[str]:
        """All tags of ``repo`` (empty when the repository does not exist)."""
        _check_repo(repo)
        return self._paged(f"{self.base_url}/v2/{repo}/tags/list", "tags", repo, f"tags of {repo}")

    def catalog(self) -> list[str]:
        """All repository names on the registry (where the registry allows listing them)."""
        return self._paged(f"{self.base_url}/v2/_catalog", "repositories", "", "the catalog")

    def ping(self) -> None:
        """GET ``/v2/``: raise :class:`RegistryError` unless the registry answers (auth included)."""
        with self._request("GET", f"{self.base_url}/v2/", repo="", what="ping") as resp:
            if resp.status_code != 200:
                self._fail(resp, "the API version check")
