"""edgebundle.registry against a real docker-registry: streaming, exact bytes, faults, auth, references."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import io
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from edgebundle import mediatypes as mt
from edgebundle.digest import CHUNK, sha256_bytes
from edgebundle.errors import RegistryError, UsageError, VerificationError
from edgebundle.ocinames import ImageRef, parse_reference
from edgebundle.registry import Registry
from examples.images import PseudoRandom
from tests.fixtures.registry import RegistryProcess, free_port, write_docker_config

MiB = 1024 * 1024


def make_blob(path: Path, size: int, seed: str = "blob") -> str:
    """Write ``size`` pseudo-random bytes to ``path`` in chunks; return the digest."""
    h = hashlib.sha256()
    src = PseudoRandom(seed, size)
    with open(path, "wb") as f:
        while data := src.read(CHUNK):
            h.update(data)
            f.write(data)
    return "sha256:" + h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            h.update(data)
    return "sha256:" + h.hexdigest()


class CountingOpener:
    """An upload source that reopens a file and counts how often it was opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened = 0

    def __call__(self) -> BinaryIO:
        self.opened += 1
        return open(self.path, "rb")


def stored_blob(reg: RegistryProcess, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob."""
    hexpart = digest.split(":", 1)[1]
    return reg.data_dir / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


def fast(host: str, **kw: object) -> Registry:
    """A client with short backoff, for fault tests that expect to recover."""
    opts: dict[str, object] = {"backoff": 0.1, "max_backoff": 0.5, "retries": 8, "retry_budget": 10.0}
    opts.update(kw)
    return Registry(host, **opts)  # type: ignore[arg-type]


def push_small(r: Registry, repo: str, data: bytes) -> tuple[str, int]:
    digest = sha256_bytes(data)
    r.push_blob(repo, digest, len(data), io.BytesIO(data))
    return digest, len(data)


# ---- blobs -------------------------------------------------------------------------------


def test_chunked_blob_round_trip_streams_and_verifies(registry: RegistryProcess, tmp_path: Path) -> None:
    size = 9 * MiB + 123
    src = tmp_path / "blob"
    digest = make_blob(src, size)
    r = Registry(registry.host, chunk_size=2 * MiB)

    assert r.push_blob("edge/blobs", digest, size, CountingOpener(src)) is True

    assert registry.count("PATCH", "/v2/edge/blobs/blobs/uploads/") == math.ceil(size / (2 * MiB))
    assert file_digest(stored_blob(registry, digest)) == digest
    out = tmp_path / "out"
    with open(out, "wb") as f:
        assert r.download_blob("edge/blobs", digest, f, size=size) == size
    assert file_digest(out) == digest
    assert max(len(c) for c in r.iter_blob("edge/blobs", digest)) <= CHUNK


def test_small_blob_goes_in_one_put(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    digest, size = push_small(r, "edge/small", b"tiny config")
    assert registry.count("PATCH") == 0
    assert registry.count("PUT", "/v2/edge/small/blobs/uploads/") == 1
    assert r.has_blob("edge/small", digest)
    assert b"".join(r.iter_blob("edge/small", digest, size)) == b"tiny config"


class CountingFront:
    """A TCP relay on 127.0.0.1 in front of the real registry that counts the connections made to it."""

    def __init__(self, upstream: RegistryProcess) -> None:
        self.upstream = upstream
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            server = socket.create_connection(("127.0.0.1", self.upstream.port))
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(CHUNK):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): the port closes
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_default_upload_is_one_put_and_requests_share_one_connection(registry: RegistryProcess,
                                                                     tmp_path: Path) -> None:
    """Without a chunk size a blob of any size is one PUT (as docker pushes); sequential requests
    of one client reuse its connection (answers without a body included)."""
    size = 9 * MiB + 5  # more than the 8 MiB slices uploads used to be cut into
    src = tmp_path / "blob"
    digest = make_blob(src, size)
    front = CountingFront(registry)
    try:
        with Registry(front.host) as r:
            assert r.push_blob("edge/one", digest, size, CountingOpener(src)) is True
            for repo in ("edge/two", "edge/three"):
                assert r.push_blob(repo, digest, size, CountingOpener(src), mount_from="edge/one") is True
            assert r.has_blob("edge/three", digest) and not r.has_blob("edge/three", "sha256:" + "0" * 64)
            config, _ = push_small(r, "edge/one", b"{}")
            data = _odd_manifest((config, 2), (digest, size))
            r.put_manifest("edge/one", "1.0", data, mt.OCI_MANIFEST)
            assert r.get_manifest("edge/one", "1.0").data == data
            assert r.list_tags("edge/one") == ["1.0"]
            requests = r.stats.requests
            assert r.stats.connections == 1, r.stats
    finally:
        front.close()
    assert registry.count("PATCH") == 0
    assert registry.count("PUT", "/v2/edge/one/blobs/uploads/") == 2  # the blob, the config
    assert requests == len(registry.requests()) > 10
    assert front.accepted == 1


def test_proxy_from_the_environment_carries_every_request(registry: RegistryProcess,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment's proxy settings (looked up once per host) route every request, and
    ``no_proxy`` still bypasses the proxy."""
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    proxy = CountingFront(registry)  # relays absolute-form requests; the registry answers them
    monkeypatch.setenv("http_proxy", f"http://{proxy.host}")
    try:
        with Registry(registry.host) as r:
            digest, size = push_small(r, "edge/proxied", b"through the proxy")
            assert r.has_blob("edge/proxied", digest)
        assert proxy.accepted >= 1
    finally:
        proxy.close()
    with Registry(registry.host, retries=0) as r, pytest.raises(RegistryError, match="connection refused"):
        r.has_blob("edge/proxied", digest)  # the proxy is gone: no request goes around it
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with Registry(registry.host, retries=0) as r:
        assert b"".join(r.iter_blob("edge/proxied", digest, size)) == b"through the proxy"


def test_second_push_is_a_head_only(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    digest = make_blob(src, 3 * MiB)
    r = Registry(registry.host, chunk_size=MiB)
    opener = CountingOpener(src)
    assert r.push_blob("edge/skip", digest, 3 * MiB, opener) is True
    before = registry.requests()

    assert r.push_blob("edge/skip", digest, 3 * MiB, opener) is False

    after = registry.requests()[len(before) :]
    assert [(e.method, e.status) for e in after] == [("HEAD", 200)]
    assert opener.opened == 1
    assert r.stats.blobs_skipped == 1


def test_cross_repository_mount_sends_no_bytes(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    digest = make_blob(src, 2 * MiB)
    r = Registry(registry.host)
    r.push_blob("edge/one", digest, 2 * MiB, CountingOpener(src))
    sent = r.stats.bytes_sent
    opener = CountingOpener(src)

    assert r.push_blob("edge/two", digest, 2 * MiB, opener, mount_from="edge/one") is True

    assert opener.opened == 0 and r.stats.bytes_sent == sent and r.stats.blobs_mounted == 1
    assert registry.count("PUT", "/v2/edge/two/") == 0
    assert r.has_blob("edge/two", digest)


def test_seekable_stream_source(registry: RegistryProcess) -> None:
    data = b"x" * 100 + b"payload" * 1000
    stream = io.BytesIO(data)
    stream.seek(100)
    body = data[100:]
    r = Registry(registry.host, chunk_size=1000)
    assert r.push_blob("edge/stream", sha256_bytes(body), len(body), stream) is True
    assert b"".join(r.iter_blob("edge/stream", sha256_bytes(body))) == body


def test_upload_of_wrong_bytes_is_refused_and_not_stored(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    make_blob(src, 3 * MiB)
    claimed = sha256_bytes(b"something else")
    r = Registry(registry.host, chunk_size=MiB)
    with pytest.raises(VerificationError, match="hashes to"):
        r.push_blob("edge/wrong", claimed, 3 * MiB, CountingOpener(src))
    assert not r.has_blob("edge/wrong", claimed)


def test_short_source_is_refused(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    digest = make_blob(src, 2 * MiB)
    r = Registry(registry.host, chunk_size=MiB)
    with pytest.raises(VerificationError, match="early"):
        r.push_blob("edge/short", digest, 3 * MiB, CountingOpener(src))
    assert not r.has_blob("edge/short", digest)


def test_corrupt_blob_in_registry_fails_download(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    size = 3 * MiB + 5
    digest = make_blob(src, size)
    r = Registry(registry.host)
    r.push_blob("edge/rot", digest, size, CountingOpener(src))
    stored = stored_blob(registry, digest)
    with open(stored, "r+b") as f:  # flip one byte in the middle: same size, other content
        f.seek(2 * MiB)
        byte = f.read(1)
        f.seek(2 * MiB)
        f.write(bytes([byte[0] ^ 0xFF]))

    received: list[bytes] = []
    with pytest.raises(VerificationError, match="hash to"):
        for chunk in r.iter_blob("edge/rot", digest, size):
            received.append(chunk)
    assert sum(map(len, received)) < size  # the last chunk is withheld until verified

    with open(stored, "r+b") as f:
        f.truncate(MiB)
    with pytest.raises(VerificationError, match="expected"):
        r.download_blob("edge/rot", digest, io.BytesIO(), size=size)


def test_missing_blob_is_a_clear_error(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    missing = sha256_bytes(b"never pushed")
    assert r.has_blob("edge/none", missing) is False
    with pytest.raises(RegistryError, match="HTTP 404 BLOB_UNKNOWN"):
        r.download_blob("edge/none", missing, io.BytesIO())


# ---- manifests ---------------------------------------------------------------------------


def _odd_manifest(config: tuple[str, int], layer: tuple[str, int]) -> bytes:
    """A valid image manifest with unusual key order and whitespace: re-serialising would change it."""
    return (
        '{\n    "layers" : [ {"size": %d,"digest":"%s",  "mediaType":"%s"} ],\n'
        '\t"config": {"digest": "%s", "mediaType": "%s", "size":%d},\n'
        '  "schemaVersion":2, "mediaType":"%s"   }\n\n'
        % (layer[1], layer[0], mt.OCI_LAYER_GZIP, config[0], mt.OCI_CONFIG, config[1], mt.OCI_MANIFEST)
    ).encode()


def test_manifest_round_trip_keeps_exact_bytes(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    config = push_small(r, "edge/app", b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}')
    layer = push_small(r, "edge/app", b"not really gzip but a blob")
    data = _odd_manifest(config, layer)
    assert json.loads(data)  # it is valid JSON

    digest = r.put_manifest("edge/app", "v1", data, mt.OCI_MANIFEST)

    assert digest == sha256_bytes(data)
    for ref in ("v1", digest):
        got = r.get_manifest("edge/app", ref)
        assert (got.data, got.digest, got.media_type) == (data, digest, mt.OCI_MANIFEST)
    assert r.has_manifest("edge/app", "v1") == digest
    assert r.has_manifest("edge/app", "v2") is None
    assert r.put_manifest("edge/app", digest, data, mt.OCI_MANIFEST) == digest


def test_manifest_pushed_under_wrong_digest_is_refused_locally(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    with pytest.raises(VerificationError):
        r.put_manifest("edge/app", sha256_bytes(b"other"), b"{}", mt.OCI_MANIFEST)
    assert r.stats.requests == 0


def test_modelpack_artifact_manifest_is_accepted(registry: RegistryProcess) -> None:
    """Distribution 2.8 stores artifactType/ModelPack media types verbatim (the model path relies on it)."""
    r = Registry(registry.host)
    config = push_small(r, "models/smol", b'{"descriptor":{"name":"smol"},"modelfs":{"type":"layers","diffIds":[]}}')
    weight = push_small(r, "models/smol", b"GGUF pretend weights")
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": mt.MODEL_ARTIFACT,
        "config": {"mediaType": mt.MODEL_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": mt.MODEL_WEIGHT_RAW, "digest": weight[0], "size": weight[1],
                    "annotations": {"org.opencontainers.image.title": "model.gguf"}}],
    }  # fmt: skip
    data = json.dumps(doc, indent=1).encode()
    digest = r.put_manifest("models/smol", "1.0", data, mt.OCI_MANIFEST)
    assert r.get_manifest("models/smol", "1.0").data == data
    assert r.has_manifest("models/smol", digest) == digest


def test_missing_manifest_names_repo_and_tag(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    with pytest.raises(RegistryError, match=r"edge/nothing:1\.0.*HTTP 404") as e:
        r.get_manifest("edge/nothing", "1.0")
    assert e.value.hint
    assert r.stats.requests == 1 and r.stats.retries == 0  # a 4xx is an answer, never retried


def test_tags_and_catalog_follow_pagination(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    config = push_small(r, "edge/tags", b"{}")
    layer = push_small(r, "edge/tags", b"layer")
    data = _odd_manifest(config, layer)
    tags = [f"t{i}" for i in range(5)]
    for tag in tags:
        r.put_manifest("edge/tags", tag, data, mt.OCI_MANIFEST)
    for repo in ("edge/a", "edge/b", "edge/c", "edge/d"):
        push_small(r, repo, b"x")
    r.page_size = 2

    assert sorted(r.list_tags("edge/tags")) == tags
    assert r.catalog() == ["edge/a", "edge/b", "edge/c", "edge/d", "edge/tags"]
    assert registry.count("GET", "/v2/_catalog") >= 3  # followed Link headers
    assert r.list_tags("edge/unknown") == []


# ---- faults --------------------------------------------------------------------------------


def test_closed_port_gives_up_quickly_with_a_clear_message() -> None:
    host = f"127.0.0.1:{free_port()}"
    r = Registry(host)  # default retry policy
    start = time.monotonic()
    with pytest.raises(RegistryError) as e:
        r.has_blob("edge/x", sha256_bytes(b""))
    elapsed = time.monotonic() - start
    assert elapsed < 20
    assert f"cannot reach registry {host}: connection refused" in str(e.value)
    assert "is the registry running" in str(e.value)
    assert r.stats.requests == r.retries + 1


class FlakyFront:
    """A reverse proxy in front of the real registry that answers the first ``failures`` GET/HEADs
    with ``status`` (a registry under load or a load balancer with no healthy backend)."""

    def __init__(self, upstream: RegistryProcess, failures: int, status: int) -> None:
        front = self
        self.failures = failures
        self.seen = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self) -> None:
                front.seen += 1
                if front.seen <= front.failures:
                    self.send_response(status)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=10)
                conn.request(self.command, self.path, headers=dict(self.headers))
                resp = conn.getresponse()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    while data := resp.read(CHUNK):
                        self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = _relay  # noqa: N815 (http.server naming)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_front(registry: RegistryProcess) -> Iterator[Callable[[int, int], FlakyFront]]:
    fronts: list[FlakyFront] = []

    def make(failures: int, status: int) -> FlakyFront:
        fronts.append(FlakyFront(registry, failures, status))
        return fronts[-1]

    yield make
    for front in fronts:
        front.close()


@pytest.mark.parametrize("status", [503, 429, 502])
def test_overloaded_registry_is_retried(registry: RegistryProcess, flaky_front: Callable[[int, int], FlakyFront],
                                        status: int) -> None:  # fmt: skip
    digest, size = push_small(Registry(registry.host), "edge/busy", b"worth the wait")
    front = flaky_front(3, status)
    r = fast(front.host)
    assert b"".join(r.iter_blob("edge/busy", digest, size)) == b"worth the wait"
    assert r.has_blob("edge/busy", digest)
    assert r.stats.retries == 3


def test_registry_that_keeps_failing_is_given_up(registry: RegistryProcess,
                                                flaky_front: Callable[[int, int], FlakyFront]) -> None:  # fmt: skip
    front = flaky_front(1000, 503)
    r = fast(front.host, retries=3)
    with pytest.raises(RegistryError, match=r"kept failing: HTTP 503.*gave up after 4 attempts"):
        r.get_manifest("edge/busy", "1.0")
    assert front.seen == 4


def test_registry_restart_between_requests_is_survived(registry: RegistryProcess) -> None:
    r = fast(registry.host)
    digest, _ = push_small(r, "edge/restart", b"survives a restart")
    registry.stop()
    timer = registry.restart_after(0.5)

    assert b"".join(r.iter_blob("edge/restart", digest)) == b"survives a restart"
    assert r.stats.retries >= 1
    timer.join()


def test_registry_killed_mid_upload_restarts_the_blob(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    size = 6 * MiB
    digest = make_blob(src, size)
    restarted = threading.Event()
    timers: list[threading.Timer] = []

    class KillingReader(io.FileIO):
        """Kills the registry after 3 MiB of the first attempt have been read."""

        def read(self, n: int = -1) -> bytes:
            data = super().read(n)
            if not restarted.is_set() and self.tell() >= 3 * MiB:
                restarted.set()
                registry.kill()
                timers.append(registry.restart_after(0.5))
            return data

    opened: list[int] = []

    def opener() -> BinaryIO:
        opened.append(1)
        return KillingReader(src, "rb")  # type: ignore[return-value]

    r = fast(registry.host, chunk_size=MiB)
    assert r.push_blob("edge/killed", digest, size, opener) is True
    assert restarted.is_set() and len(opened) >= 2 and r.stats.retries >= 1
    timers[0].join()
    assert file_digest(stored_blob(registry, digest)) == digest


def test_dropped_download_resumes_with_range(registry: RegistryProcess, tmp_path: Path) -> None:
    src = tmp_path / "blob"
    size = 48 * MiB
    digest = make_blob(src, size)
    r = fast(registry.host)
    r.push_blob("edge/resume", digest, size, CountingOpener(src))
    h = hashlib.sha256()
    got = 0
    timer: threading.Timer | None = None
    for chunk in r.iter_blob("edge/resume", digest, size):
        h.update(chunk)
        got += len(chunk)
        if got >= 2 * MiB and timer is None:
            registry.kill()  # what the kernel has not yet delivered is lost with the process
            timer = registry.restart_after(0.3)
    assert got == size and "sha256:" + h.hexdigest() == digest
    assert r.stats.retries >= 1
    assert any(e.method == "GET" and e.status == 206 for e in registry.requests())
    assert r.stats.bytes_received < 2 * size  # resumed, not restarted from the first byte
    assert timer is not None
    timer.join()


# ---- auth ------------------------------------------------------------------------------------


def _auth_round_trip(r: Registry) -> None:
    digest, size = push_small(r, "secure/app", b"authenticated bytes")
    assert b"".join(r.iter_blob("secure/app", digest, size)) == b"authenticated bytes"
    assert r.catalog() == ["secure/app"]


def test_basic_auth_from_docker_config(registry_factory: Callable[..., RegistryProcess], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    reg = registry_factory(htpasswd=("alice", "s3cret"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    good = write_docker_config(tmp_path / "good", reg.host, "alice", "s3cret")
    _auth_round_trip(Registry(reg.host, docker_config=good))

    monkeypatch.setenv("DOCKER_CONFIG", str(good))  # the environment variable works too
    assert Registry(reg.host).has_blob("secure/app", sha256_bytes(b"authenticated bytes"))
    monkeypatch.delenv("DOCKER_CONFIG")

    with pytest.raises(RegistryError, match="requires authentication") as e:
        Registry(reg.host, docker_config=tmp_path / "none").ping()
    assert "docker login" in (e.value.hint or "")
    bad = write_docker_config(tmp_path / "bad", reg.host, "alice", "wrong")
    with pytest.raises(RegistryError, match="rejected the credentials"):
        Registry(reg.host, docker_config=bad).ping()


def test_bearer_token_auth_from_docker_config(registry_factory: Callable[..., RegistryProcess],
                                              tmp_path: Path) -> None:  # fmt: skip
    reg = registry_factory(token=("bob", "hunter2"))
    assert reg.token is not None
    cfg = write_docker_config(tmp_path / "cfg", reg.host, "bob", "hunter2")
    r = Registry(reg.host, docker_config=cfg)
    _auth_round_trip(r)
    assert reg.token.issued >= 2  # pull/push scope for the repository, then the catalog

    bad = write_docker_config(tmp_path / "bad", reg.host, "bob", "nope")
    with pytest.raises(RegistryError, match="rejected the credentials"):
        Registry(reg.host, docker_config=bad).has_blob("secure/app", sha256_bytes(b""))


# ---- addresses and references -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kwargs", "base"),
    [
        ("127.0.0.1:5000", {}, "http://127.0.0.1:5000"),
        ("127.1.2.3:5000", {}, "http://127.1.2.3:5000"),
        ("localhost:5000", {}, "http://localhost:5000"),
        ("[::1]:5000", {}, "http://[::1]:5000"),
        ("reg.example.com", {}, "https://reg.example.com"),
        ("reg.example.com:5000", {"insecure_hosts": ["reg.example.com:5000"]}, "http://reg.example.com:5000"),
        ("reg.example.com:5000", {"insecure_hosts": ["reg.example.com"]}, "http://reg.example.com:5000"),
        ("reg.example.com:5000", {"insecure_hosts": ["other:5000"]}, "https://reg.example.com:5000"),
        ("127.0.0.1:5000", {"plain_http": False}, "https://127.0.0.1:5000"),
        ("docker.io", {}, "https://registry-1.docker.io"),
    ],
)  # fmt: skip
def test_scheme_selection(host: str, kwargs: dict[str, object], base: str) -> None:
    assert Registry(host, **kwargs).base_url == base  # type: ignore[arg-type]


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("ubuntu", ImageRef("docker.io", "library/ubuntu", "latest")),
        ("ubuntu:22.04", ImageRef("docker.io", "library/ubuntu", "22.04")),
        ("bitnami/redis", ImageRef("docker.io", "bitnami/redis", "latest")),
        ("docker.io/ubuntu", ImageRef("docker.io", "library/ubuntu", "latest")),
        ("index.docker.io/library/ubuntu:1", ImageRef("docker.io", "library/ubuntu", "1")),
        ("localhost/app", ImageRef("localhost", "app", "latest")),
        ("localhost:5000/rag/llm-service:1.0", ImageRef("localhost:5000", "rag/llm-service", "1.0")),
        ("127.0.0.1:5000/rag/vector-db@" + DIGEST, ImageRef("127.0.0.1:5000", "rag/vector-db", None, DIGEST)),
        ("ghcr.io/org/a/b/c:v1.2-rc_3@" + DIGEST, ImageRef("ghcr.io", "org/a/b/c", "v1.2-rc_3", DIGEST)),
        ("[::1]:5000/app:1", ImageRef("[::1]:5000", "app", "1")),
        ("Registry/app", ImageRef("Registry", "app", "latest")),
        ("my-registry.local/a__b.c-d/e--f", ImageRef("my-registry.local", "a__b.c-d/e--f", "latest")),
    ],
)  # fmt: skip
def test_parse_reference(ref: str, expected: ImageRef) -> None:
    parsed = parse_reference(ref)
    assert parsed == expected
    assert parse_reference(str(parsed)) == parsed
    assert parsed.reference == (expected.digest or expected.tag)


@pytest.mark.parametrize(
    "ref",
    ["", "app/UPPER", "app:", "app@sha256:short", "host:5000/app:bad tag", "a//b", "-app", "app:" + "x" * 129,
     "host:5000/", "app@md5:" + "a" * 32, "localhost:5000/App"],
)  # fmt: skip
def test_parse_reference_rejects(ref: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(ref)


def test_repository_names_cannot_escape_the_url(registry: RegistryProcess) -> None:
    r = Registry(registry.host)
    for repo in ("../v2", "a/../../b", "a?x=1", "A"):
        with pytest.raises(UsageError):
            r.has_blob(repo, sha256_bytes(b""))
    with pytest.raises(UsageError):
        r.get_manifest("edge/app", "../x")
    assert r.stats.requests == 0
