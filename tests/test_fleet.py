"""Bundles through OCI registries (docs/FLEET.md): push, pull, a depot, installing from a registry.

Three real registries (the Debian ``docker-registry``): a central one, a regional depot and the
site's own. Everything is driven through the real ``bundle`` and ``installer`` commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgebundle.sources import TarSource
from tests.fixtures.bundles import BUNDLE, BuiltBundle, nas_snapshot, registry_snapshot, run_installer
from tests.fixtures.registry import RegistryProcess
from tests.test_plan_apply import rag  # noqa: F401 (the real-cluster fixture the GitOps health test uses)

pytestmark = pytest.mark.timeout(300)


def bundle_cli(*args: str | Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("EDGEBUNDLE_FAULTPOINT", None)
    if fault:
        env["EDGEBUNDLE_FAULTPOINT"] = fault
    return subprocess.run([BUNDLE, *map(str, args)], capture_output=True, text=True, env=env, timeout=240)


def push(bundle: Path, location: str, fault: str | None = None) -> dict[str, Any]:
    r = bundle_cli("push", bundle, location, "--json", fault=fault)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def members_of(tar: Path) -> dict[str, int]:
    return TarSource.from_path(tar).members()


def tags(reg: RegistryProcess) -> set[str]:
    return {k for k in registry_snapshot(reg) if "/_manifests/tags/" in k and k.endswith("/current/link")}


def served_blob_bytes(reg: RegistryProcess) -> int:
    """Blob bytes the registry has served (its access log)."""
    return sum(e.size for e in reg.requests() if e.method == "GET" and "/blobs/" in e.path)


def registry_api(reg: RegistryProcess, path: str, accept: str = "") -> tuple[int, bytes]:
    import urllib.request

    req = urllib.request.Request(f"http://{reg.host}/v2/{path}", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


@pytest.fixture
def v1(bundle_factory: Any) -> BuiltBundle:
    return bundle_factory(manifests=False)


def test_push_then_pull_gives_the_same_bytes_and_standard_tools_read_it(
        v1: BuiltBundle, registry_factory: Any, tmp_path: Path) -> None:
    central = registry_factory()
    loc = f"oci://{central.host}/fleet/rag-edge:1.0.0"
    first = push(v1.path, loc)
    members = members_of(v1.path)
    assert first["sent"] == len(members) and first["skipped"] == 0
    assert first["sentBytes"] == sum(members.values())

    # the bundle manifest is the bundle's table of contents, in tar order, titles = member names
    status, raw = registry_api(central, "fleet/rag-edge/manifests/1.0.0", "application/vnd.oci.image.manifest.v1+json")
    assert status == 200
    doc = json.loads(raw)
    assert doc["artifactType"] == "application/vnd.edgebundle.bundle.v1"
    assert [la["annotations"]["org.opencontainers.image.title"] for la in doc["layers"]] == list(members)
    # the images are there as images, under the bundle's index (its subject)
    status, index = registry_api(central, f"fleet/rag-edge/manifests/{doc['subject']['digest']}",
                                 "application/vnd.oci.image.index.v1+json")
    assert status == 200 and hashlib.sha256(index).hexdigest() == doc["subject"]["digest"].split(":")[1]
    image = json.loads(index)["manifests"][0]
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                              f"docker://{central.host}/fleet/rag-edge@{image['digest']}"],
                             capture_output=True, text=True, timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["mediaType"] == image["mediaType"]

    # pulled back: the same tar, byte for byte; and as a directory, the same members
    out = tmp_path / "pulled.tar"
    r = bundle_cli("pull", loc, "-o", out, "--pubkey", v1.pub)
    assert r.returncode == 0, r.stderr
    assert "signatures verified" in r.stdout
    assert sha256_file(out) == sha256_file(v1.path)
    d = tmp_path / "pulled-dir"
    assert bundle_cli("pull", loc, "-o", d).returncode == 0
    got = {p.relative_to(d).as_posix(): p.stat().st_size for p in d.rglob("*") if p.is_file()}
    assert got == members

    # a second push sends nothing; the installer reads the registry as it reads media
    again = push(out, loc)
    assert again["sent"] == 0 and again["skipped"] == len(members)
    site = v1.site(tmp_path / "site", "127.0.0.1:1")
    r = run_installer("verify", loc, "--site", site)
    assert r.returncode == 0, r.stderr + r.stdout


def test_a_tag_that_is_not_a_bundle_is_refused_by_name(registry_factory: Any, tmp_path: Path,
                                                        v1: BuiltBundle) -> None:
    central = registry_factory()
    assert bundle_cli("pull", f"oci://{central.host}/nothing/here:1", "-o", tmp_path / "x.tar").returncode != 0
    loc = f"oci://{central.host}/fleet/rag-edge:1.0.0"
    push(v1.path, loc)
    # an image tag is not a bundle: named, exit 4, nothing written
    status, index_raw = registry_api(central, "fleet/rag-edge/manifests/1.0.0", "application/vnd.oci.image.manifest.v1+json")
    r = run_installer("verify", "oci://" + central.host + "/fleet/rag-edge@" + json.loads(index_raw)["subject"]["digest"],
                      "--site", v1.site(tmp_path, "127.0.0.1:1"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = bundle_cli("push", v1.path, "registry-without-scheme/x:1")
    assert r.returncode == 2 and "oci://" in r.stderr


def test_interrupted_push_leaves_no_tag_and_resumes(v1: BuiltBundle, registry_factory: Any, tmp_path: Path) -> None:
    depot = registry_factory()
    loc = f"oci://{depot.host}/depot/rag-edge:1.0.0"
    r = bundle_cli("push", v1.path, loc, fault="push.blob.sent@3")
    assert r.returncode == -9  # killed after the third blob
    assert tags(depot) == set()  # no tag names an incomplete bundle
    rest = push(v1.path, loc)
    members = members_of(v1.path)
    assert rest["skipped"] == 3 and rest["sent"] == len(members) - 3
    out = tmp_path / "again.tar"
    assert bundle_cli("pull", loc, "-o", out).returncode == 0
    assert sha256_file(out) == sha256_file(v1.path)


def test_depot_to_site_and_an_upgrade_moves_only_new_blobs(
        bundle_factory: Any, bundle_world: Any, registry_factory: Any, tmp_path: Path) -> None:
    from examples.images import build_and_push
    from tests.fixtures.bundles import BULK_LAYER_BYTES

    central, depot, site_reg = registry_factory(), registry_factory(), registry_factory()
    v1 = bundle_factory(manifests=False)
    build_and_push(bundle_world.source.host, version="1.1", layer_bytes=BULK_LAYER_BYTES)
    v2 = bundle_factory(version="1.1.0", manifests=False,
                        images=(("rag/llm-service:1.1", ("linux/amd64",)), "rag/vector-db:1.0"))

    # central -> depot: what a depot operator runs (pull from central, push to the depot)
    push(v1.path, f"oci://{central.host}/rag/edge:1.0.0")
    carried = tmp_path / "carried.tar"
    assert bundle_cli("pull", f"oci://{central.host}/rag/edge:1.0.0", "-o", carried).returncode == 0
    push(carried, f"oci://{depot.host}/rag/edge:1.0.0")

    site = v1.site(tmp_path / "site", site_reg.host)
    served_v1 = served_blob_bytes(depot)
    for step in ("load", "stage"):
        r = run_installer(step, f"oci://{depot.host}/rag/edge:1.0.0", "--site", site, "--json")
        assert r.returncode == 0, r.stderr
    moved_v1 = served_blob_bytes(depot) - served_v1
    print(f"v1 from the depot: {moved_v1} bytes moved; full v1 {v1.path.stat().st_size}")
    assert moved_v1 <= 1.01 * v1.path.stat().st_size  # each blob once (small documents read by verify and load)
    assert {t.split("/_manifests")[0].split("repositories/")[1] for t in tags(site_reg)} >= {
        "rag/llm-service", "rag/vector-db"}
    assert any((tmp_path / "site" / "nas").rglob("*.gguf"))

    # v2: the depot receives only v2's new blobs; the site fetches about what a delta would carry
    v1_blobs, v2_blobs = set(v1.root.blobs), set(v2.root.blobs)
    new_bytes = sum(v2.root.blobs[d].size for d in v2_blobs - v1_blobs)
    second = push(v2.path, f"oci://{depot.host}/rag/edge:1.1.0")
    assert second["skipped"] == len(v2_blobs & v1_blobs) + 1  # shared blobs and the unchanged oci-layout
    assert new_bytes <= second["sentBytes"] <= new_bytes + 64 * 1024  # + index.json and the root
    served_before = served_blob_bytes(depot)
    for step in ("load", "stage"):
        r = run_installer(step, f"oci://{depot.host}/rag/edge:1.1.0", "--site", site, "--json")
        assert r.returncode == 0, r.stderr
    moved = served_blob_bytes(depot) - served_before
    delta = tmp_path / "v2-delta.tar"
    r = bundle_cli("create", v2.spec_path, "--key", v2.key, "--base", v1.path, "-o", delta)
    assert r.returncode == 0, r.stderr
    print(f"v2 from the depot: {moved} bytes moved; v2's new blobs {new_bytes}; delta v1->v2 "
          f"{delta.stat().st_size}; full v2 {v2.path.stat().st_size}")
    assert new_bytes * 0.9 <= moved <= new_bytes + 1024 * 1024
    # about what the delta would carry, not the full bundle; the delta's root and small documents are
    # zstd-compressed (docs/DELTA.md §1.1), the depot moves them as they are
    assert moved <= 8 * delta.stat().st_size and moved < v2.path.stat().st_size / 50
    installed = json.loads(run_installer("status", "--site", site, "--json").stdout)["installed"]
    assert [b["version"] for b in installed] == ["1.0.0", "1.1.0"]


def test_tampered_blob_in_the_depot_is_refused_before_the_site_changes(
        v1: BuiltBundle, registry_factory: Any, tmp_path: Path) -> None:
    depot, site_reg = registry_factory(), registry_factory()
    loc = f"oci://{depot.host}/rag/edge:1.0.0"
    push(v1.path, loc)
    biggest = max(v1.root.blobs.values(), key=lambda p: p.size)
    hexd = biggest.digest.split(":")[1]
    data = depot.data_dir / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
    with open(data, "r+b") as f:
        f.seek(biggest.size // 2)
        b = f.read(1)
        f.seek(biggest.size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    site = v1.site(tmp_path / "site", site_reg.host)
    nas_before, tags_before = nas_snapshot(tmp_path / "site" / "nas"), tags(site_reg)
    r = run_installer("install", loc, "--site", site, "--operator", "tester", "--yes")
    assert r.returncode == 4, r.stderr + r.stdout
    assert "Traceback" not in r.stderr and biggest.digest[:19] in r.stderr
    assert tags(site_reg) == tags_before  # no tag or manifest became visible at the site
    assert nas_snapshot(tmp_path / "site" / "nas") == nas_before  # no model version appeared


def _artifact(reg: RegistryProcess, repo: str, tag: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The GitOps artifact under ``repo:tag`` read with the registry API alone: manifest, objects."""
    import gzip
    import io
    import tarfile

    import yaml

    status, raw = registry_api(reg, f"{repo}/manifests/{tag}", "application/vnd.oci.image.manifest.v1+json")
    assert status == 200
    manifest = json.loads(raw)
    (layer,) = manifest["layers"]
    status, blob = registry_api(reg, f"{repo}/blobs/{layer['digest']}")
    assert status == 200 and hashlib.sha256(blob).hexdigest() == layer["digest"].split(":")[1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        (member,) = tar.getmembers()
        docs = [d for d in yaml.safe_load_all(tar.extractfile(member).read()) if d]  # type: ignore[union-attr]
    return manifest, docs


def _without_revision(obj: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(obj))
    meta = out.get("metadata") or {}
    meta.get("annotations", {}).pop("edgebundle.dev/revision", None)
    if meta.get("annotations") == {}:
        del meta["annotations"]
    return out


def test_gitops_target_publishes_each_revision_as_a_flux_artifact(
        bundle_factory: Any, registry_factory: Any, tmp_path: Path) -> None:
    site_reg, gitops = registry_factory(), registry_factory()
    v1 = bundle_factory(version="1.0.0", manifests="fitting")
    v2 = bundle_factory(version="1.1.0", manifests="fitting", models=("tiny-llm", "embedder"))
    (tmp_path / "nas").mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(json.dumps({"apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": "ship-3"},
                                "spec": {"compatible": "rag-edge/x86_64", "trust": {"keys": [str(v1.pub)]},
                                         "registry": {"address": site_reg.host, "plainHTTP": True},
                                         "models": {"root": str(tmp_path / "nas"),
                                                    "nfs": {"server": "10.0.0.5", "path": "/export/models"}},
                                         "stateDir": str(tmp_path / "state"),
                                         "cluster": {"oci": {"repository": f"{gitops.host}/fleet/ship-3"}}}}))
    env = {"EDGEBUNDLE_OPERATOR": "ana"}
    assert tags(gitops) == set()
    r = run_installer("install", v1.path, "--site", site, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert "health not watched" in r.stdout

    def revision(n: int) -> dict[str, Any]:
        return json.loads((tmp_path / "state" / "revisions" / f"{n}.json").read_text())

    manifest, objects = _artifact(gitops, "fleet/ship-3", "ship-3")  # the tag defaults to the site name
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.flux.config.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.cncf.flux.content.v1.tar+gzip"
    assert manifest["annotations"]["org.opencontainers.image.revision"] == "edgebundle-revision-1"
    assert [_without_revision(o) for o in objects] == [_without_revision(o) for o in revision(1)["objects"]]
    assert any(f"{site_reg.host}/rag/" in json.dumps(o) and "@sha256:" in json.dumps(o) for o in objects)

    r = run_installer("install", v2.path, "--site", site, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    _, objects2 = _artifact(gitops, "fleet/ship-3", "ship-3")
    assert [_without_revision(o) for o in objects2] == [_without_revision(o) for o in revision(2)["objects"]]
    assert objects2 != objects

    # rollback republishes revision 1's objects as a new revision
    r = run_installer("rollback", "--site", site, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    _, back = _artifact(gitops, "fleet/ship-3", "ship-3")
    assert [_without_revision(o) for o in back] == [_without_revision(o) for o in revision(1)["objects"]]
    assert revision(3)["trigger"] == "rollback" and revision(3)["rollbackOf"] == 1


def test_gitops_target_with_a_kubeconfig_watches_health_of_what_the_controller_applied(
        tmp_path: Path, kube_cluster: Any, rag: Any, registry_factory: Any) -> None:
    """The controller is a stand-in (no Flux here, tests/README.md): a thread that applies each
    newly tagged artifact to the real API server, as Flux's kustomize-controller would."""
    import threading

    from tests.test_plan_apply import NS, cli, install_bundle, write_site  # noqa: F811

    gitops = registry_factory()
    site = write_site(tmp_path, rag, cluster={"kubeconfig": str(tmp_path / "kubeconfig"), "context": "edge",
                                              "namespace": NS, "oci": {"repository": f"{gitops.host}/gitops/plant-7"}})
    install_bundle(site, rag.v1)
    stop = threading.Event()
    applied: list[str] = []

    def controller() -> None:
        seen = None
        while not stop.is_set():
            status, raw = registry_api(gitops, "gitops/plant-7/manifests/plant-7", "application/vnd.oci.image.manifest.v1+json")
            if status == 200 and raw != seen:
                for obj in _artifact(gitops, "gitops/plant-7", "plant-7")[1]:
                    kube_cluster.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
                        body=obj, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"),
                        field_manager="flux-stand-in", force_conflicts=True)
                    applied.append(obj["metadata"]["name"])
                seen = raw
            stop.wait(0.1)

    t = threading.Thread(target=controller, daemon=True)
    t.start()
    try:
        res = cli("plan", rag.v1.path, "--site", site, "-o", tmp_path / "plan.json")
        assert res.exit_code == 3, res.output
        assert cli("approve", tmp_path / "plan.json", "--operator", "ana", "--yes").exit_code == 0
        assert applied == []  # nothing published before the approval
        res = cli("apply", tmp_path / "plan.json", "--site", site, "--poll-interval", "0.05", "--timeout", "120")
        assert res.exit_code == 0, res.output
        assert "healthy" in res.output
    finally:
        stop.set()
        t.join(5)
    dep = kube_cluster.get("Deployment", NS, "llm-service")
    assert dep is not None and dep["status"].get("readyReplicas") == dep["spec"]["replicas"]
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "flux-stand-in" in managers and "edgebundle" not in managers  # the controller applied it, not us


def test_a_site_whose_registry_is_the_depot_mounts_instead_of_copying(
        v1: BuiltBundle, registry_factory: Any, tmp_path: Path) -> None:
    both = registry_factory()
    loc = f"oci://{both.host}/depot/rag-edge:1.0.0"
    push(v1.path, loc)
    site = v1.site(tmp_path / "site", both.host)
    served = served_blob_bytes(both)
    r = run_installer("load", loc, "--site", site, "--json")
    assert r.returncode == 0, r.stderr
    image_blob_bytes = sum(p.size for d, p in v1.root.blobs.items() if not p.mediaType.startswith("application/vnd.cncf.model"))
    moved = served_blob_bytes(both) - served
    assert moved < image_blob_bytes / 2, (moved, image_blob_bytes)  # mounted, not streamed out and back
    assert {t.split("/_manifests")[0].split("repositories/")[1] for t in tags(both)} >= {"rag/llm-service", "rag/vector-db"}
