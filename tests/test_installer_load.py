"""installer load against a real site registry: exact digests, tags, skips, skopeo round trip."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edgebundle import layout
from edgebundle.registry import Registry
from installer.cli import main
from installer.core import open_verified
from installer.destinations import QUIET
from installer.destinations import registry as load_destination
from installer.destinations.registry import RegistryDestination
from installer.site import load_site
from installer.state import StateDir
from tests.fixtures.bundles import BuiltBundle, member_location, nas_snapshot, registry_snapshot

pytestmark = pytest.mark.timeout(120)

WRITES = ("PUT", "POST", "PATCH")


def invoke(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def member_bytes(b: BuiltBundle, member: str) -> bytes:
    path, offset, size = member_location(b.path, member)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def image_blobs(b: BuiltBundle, image: Any) -> set[str]:
    """Configs and layers of an image and of what is attached to it, read from the bundle's own
    manifest bytes."""
    out: set[str] = set()
    for top in [image.digest, *(a.digest for a in image.attached)]:
        doc = json.loads(member_bytes(b, layout.blob_path(top)))
        for m in [json.loads(member_bytes(b, layout.blob_path(c["digest"]))) for c in doc["manifests"]] \
                if "manifests" in doc else [doc]:
            out.update(d["digest"] for d in [m["config"], *m["layers"]])
    return out


def writes(registry: Any) -> int:
    return sum(1 for e in registry.requests() if e.method in WRITES)


def test_load_pushes_every_image_with_its_digest_and_tag(bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    site = b.site(tmp_path, registry.host)
    before = nas_snapshot(b.path.parent)
    r = invoke("load", b.path, "--site", site, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["root"] == b.root_digest and doc["installed"] is False
    assert doc["steps"][0]["step"] == "load" and doc["steps"][0]["done"] > 0
    with Registry(registry.host) as reg:
        assert sorted(reg.catalog()) == sorted(im.repository for im in b.root.images)
        for im in b.root.images:
            assert reg.list_tags(im.repository) == [im.tag]
            assert reg.has_manifest(im.repository, im.tag) == im.digest
            served = reg.get_manifest(im.repository, im.tag)
            assert served.data == member_bytes(b, layout.blob_path(im.digest))  # exact bytes
            for desc in [served.json()["config"], *served.json()["layers"]]:
                assert reg.has_blob(im.repository, desc["digest"])
    assert nas_snapshot(b.path.parent) == before, "the bundle's location must only be read"


def test_reload_skips_everything_and_is_idempotent(bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    site = b.site(tmp_path, registry.host)
    assert invoke("load", b.path, "--site", site).exit_code == 0
    first = registry_snapshot(registry)
    n_before, w_before = len(registry.requests()), writes(registry)
    r = invoke("load", b.path, "--site", site, "--json")
    assert r.exit_code == 0, r.output
    step = json.loads(r.stdout)["steps"][0]
    assert step["done"] == 0 and step["skipped"] > 0 and step["bytes"] == 0
    assert writes(registry) == w_before, "a re-load must not upload anything"
    reload_requests = len(registry.requests()) - n_before - 1  # minus the sentinel probe
    assert reload_requests <= 2 * len(b.root.images) + 2, "re-load should only confirm the manifests"
    assert registry_snapshot(registry) == first

    # A fresh state dir (no journal) still skips every blob, by HEAD.
    site2 = b.site(tmp_path / "fresh", registry.host)
    w_before = writes(registry)
    assert invoke("load", b.path, "--site", site2).exit_code == 0
    assert writes(registry) == w_before
    assert registry_snapshot(registry) == first


def test_skopeo_pulls_back_what_was_loaded(bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    assert invoke("load", b.path, "--site", b.site(tmp_path, registry.host)).exit_code == 0
    for im in b.root.images:
        src = f"docker://{registry.host}/{im.repository}:{im.tag}"
        raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", src],
                             capture_output=True, check=True).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == im.digest
        out = tmp_path / im.repository.replace("/", "_")
        # skopeo gzips uncompressed layers for oci: by default; --preserve-digests forbids any
        # rewrite, so the copy fails unless the registry serves exactly the bundle's image.
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--preserve-digests",
                        "--dest-oci-accept-uncompressed-layers", src, f"oci:{out}:x"],
                       capture_output=True, check=True)
        index = json.loads((out / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [im.digest]
        manifest = json.loads((out / layout.blob_path(im.digest)).read_text())
        for desc in [manifest["config"], *manifest["layers"]]:
            pulled = out / layout.blob_path(desc["digest"])
            assert pulled.stat().st_size == desc["size"] == b.root.blobs[desc["digest"]].size
            with open(pulled, "rb") as f:
                assert "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == desc["digest"]


def test_multi_arch_index_is_loaded_whole(bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    b = bundle_factory(images=("rag/llm-service:1.0",), models=())
    (im,) = b.root.images
    assert im.mediaType.endswith("index.v1+json") and sorted(im.platforms) == ["linux/amd64", "linux/arm64/v8"]
    assert invoke("load", b.path, "--site", b.site(tmp_path, registry.host)).exit_code == 0
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                          f"docker://{registry.host}/rag/llm-service:1.0"], capture_output=True, check=True).stdout
    assert raw == member_bytes(b, layout.blob_path(im.digest))
    with Registry(registry.host) as reg:
        for child in json.loads(raw)["manifests"]:
            assert reg.has_manifest("rag/llm-service", child["digest"]) == child["digest"]


def test_chunked_upload_and_wiped_registry(bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    """With 1 MiB chunks the 3 MiB layer goes up in PATCHes; a wiped registry is refilled on rerun."""
    b = bundle_factory()
    site = b.site(tmp_path, registry.host, chunk_size=1024 * 1024)
    assert invoke("load", b.path, "--site", site).exit_code == 0
    assert registry.count("PATCH", "/blobs/uploads/") >= 3
    loaded = registry_snapshot(registry)

    registry.stop()
    import shutil
    shutil.rmtree(registry.data_dir)
    registry.data_dir.mkdir()
    registry.start()
    r = invoke("load", b.path, "--site", site)
    assert r.exit_code == 0, r.output
    assert "registry lost content" in r.stdout
    assert registry_snapshot(registry) == loaded


def test_load_and_stage_record_the_installed_bundle(bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    site = b.site(tmp_path, registry.host)
    env = {"EDGEBUNDLE_OPERATOR": "alice"}
    assert invoke("load", b.path, "--site", site, env=env).exit_code == 0
    installed = tmp_path / "state" / "installed.json"
    assert not installed.exists(), "load alone does not make a bundle installed"
    r = invoke("stage", b.path, "--site", site, env=env)
    assert r.exit_code == 0, r.output
    assert "installed: rag-edge 1.0.0" in r.stdout
    (entry,) = json.loads(installed.read_text())["bundles"]
    assert entry["name"] == "rag-edge" and entry["version"] == "1.0.0"
    assert entry["root"] == b.root_digest and entry["operator"] == "alice" and entry["installedAt"]


def test_parallel_uploads_report_the_first_failure_in_push_order_and_start_nothing_after() -> None:
    """Blobs go up several at a time; a failure stops the queue, and of several failures the one a
    sequential run would have hit first is reported (hostile-bundle messages stay deterministic)."""
    ran: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> Any:
        def run() -> None:
            with lock:
                ran.append(i)
            if i in (1, 2):
                time.sleep(0.2 if i == 1 else 0.0)  # job 2 fails first in time, job 1 first in order
                raise ValueError(f"job {i}")
            time.sleep(0.005)  # an upload takes time: instant jobs could all start while job 2 yields
        return run

    with pytest.raises(ValueError, match="job 1"):
        load_destination._run_all([job(i) for i in range(40)])
    assert {1, 2} <= set(ran) and len(ran) < 40, "jobs queued after a failure must not start"


class _GatedSource:
    """The bundle's source, except that reading blob ``gated`` stops at its first byte until
    ``release`` is set (``reached`` tells the test it got there): a big upload that takes its time."""

    def __init__(self, inner: Any, gated: str) -> None:
        self._inner, self._gated = inner, layout.blob_path(gated)
        self.reached, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[Any]:
        with self._inner.open(name) as f:
            if name == self._gated:
                self.reached.set()
                assert self.release.wait(60), "the test never released the gated blob"
            yield f


def _tags_visible(reg: Registry, images: list[Any]) -> set[str]:
    return {im.refName for im in images if reg.has_manifest(im.repository, im.tag) is not None}


@pytest.mark.parametrize("which", ["largest", "shared"])
def test_an_image_is_tagged_as_soon_as_its_own_blobs_are_in(bundle_factory: Any, registry: Any,
                                                           tmp_path: Path, which: str) -> None:
    """While one blob is still uploading, every image that does not name it gets its manifests and
    tag; no image that names it does (a shared blob is pushed once and mounted: all wait for it)."""
    # The amd64 images share their base layer; the arm64-only llm-service shares nothing.
    b = bundle_factory(images=(("rag/llm-service:1.0", ("linux/arm64/v8",)), "rag/vector-db:1.0", "rag/chat-ui:1.0"))
    users: dict[str, set[str]] = {}  # blob digest -> refs of the images naming it
    for im in b.root.images:
        for digest in image_blobs(b, im):
            users.setdefault(digest, set()).add(im.refName)
    if which == "largest":
        gated = max(users, key=lambda d: b.root.blobs[d].size)
    else:
        gated = max((d for d in users if len(users[d]) > 1), key=lambda d: len(users[d]))
    waiting = users[gated]
    free = [im for im in b.root.images if im.refName not in waiting]
    assert free and waiting, "the bundle must have images on both sides of the gated blob"

    site = load_site(b.site(tmp_path, registry.host))
    state = StateDir(site.state_dir)
    vb = open_verified(b.path, site, state=state, content=False)
    source = _GatedSource(vb.source, gated)
    vb = dataclasses.replace(vb, source=source)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            RegistryDestination.for_site(site).apply(vb, state.journal(vb.root_digest), QUIET)
            outcome.append(None)
        except BaseException as e:  # reported by the test thread
            outcome.append(e)

    loader = threading.Thread(target=run)
    loader.start()
    try:
        assert source.reached.wait(30), "the gated blob was never read"
        with Registry(registry.host) as reg:
            deadline = time.monotonic() + 20
            while _tags_visible(reg, free) != {im.refName for im in free} and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _tags_visible(reg, free) == {im.refName for im in free}, \
                "images whose blobs are all in must be tagged while another image's blob uploads"
            assert _tags_visible(reg, [im for im in b.root.images if im.refName in waiting]) == set(), \
                "an image was tagged before every blob it names was in"
    finally:
        source.release.set()
        loader.join(60)
    assert outcome == [None]
    with Registry(registry.host) as reg:
        assert _tags_visible(reg, b.root.images) == {im.refName for im in b.root.images}


def test_a_blob_goes_up_in_one_request_and_connections_are_reused(bundle_factory: Any, registry: Any,
                                                                   tmp_path: Path) -> None:
    """Without registry_chunk_size each blob is one PUT (no PATCH), as docker pushes; the
    requests of a load share a handful of connections (one per upload in flight, not one each)."""
    b = bundle_factory()
    site = load_site(b.site(tmp_path, registry.host))
    state = StateDir(site.state_dir)
    vb = open_verified(b.path, site, state=state, content=False)
    dest = RegistryDestination.for_site(site)
    dest.apply(vb, state.journal(vb.root_digest), QUIET)
    assert registry.count("PATCH") == 0
    assert registry.count("PUT", "/blobs/uploads/") == len(set().union(*(image_blobs(b, im) for im in b.root.images)))
    stats = dest.registry.stats
    assert stats.requests == len(registry.requests()) > 30
    assert 1 <= stats.connections <= load_destination.UPLOADS + 1, stats
