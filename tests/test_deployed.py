""""Installed" means deployed: a bundle loaded and staged but never applied does not block its
predecessor, and status says "staged, not deployed"; without a cluster target, load+stage count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bundles import run_installer

pytestmark = pytest.mark.timeout(300)


def k3s_site(tmp_path: Path, registry_host: str, pub: Path, *, cluster: bool = True) -> Path:
    (tmp_path / "nas").mkdir()
    spec: dict[str, Any] = {
        "compatible": "rag-edge/x86_64", "trust": {"keys": [str(pub)]},
        "registry": {"address": registry_host, "plainHTTP": True},
        "models": {"root": str(tmp_path / "nas"), "nfs": {"server": "10.0.0.5", "path": "/export/models"}},
        "stateDir": str(tmp_path / "state")}
    if cluster:
        (tmp_path / "k3s").mkdir()
        spec["cluster"] = {"manifestsDir": str(tmp_path / "k3s")}
    site = tmp_path / "site.yaml"
    site.write_text(json.dumps({"apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": "plant"},
                                "spec": spec}))
    return site


def test_staged_but_never_applied_does_not_block_the_deployed_predecessor(
        bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    old = bundle_factory(version="1.1.0", manifests="fitting")
    new = bundle_factory(version="1.2.0", manifests="fitting")
    site = k3s_site(tmp_path, registry.host, old.pub)
    env = {"EDGEBUNDLE_OPERATOR": "ana"}
    r = run_installer("install", old.path, "--site", site, "--yes", env=env)
    assert r.returncode == 0, r.stderr
    for verb in ("load", "stage"):  # 1.2.0 staged, never planned or applied
        r = run_installer(verb, new.path, "--site", site, env=env)
        assert r.returncode == 0, r.stderr

    r = run_installer("status", "--site", site)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("  rag-edge ")
             and len(line.split()) > 3 and line.split()[1] in ("1.1.0", "1.2.0") and "sha256:" in line
             and ("deployed" in line)}
    assert "staged, not deployed" in lines["1.2.0"] and "installed, deployed" in lines["1.1.0"], r.stdout
    assert "DEPLOYED  rag-edge 1.1.0" in r.stdout and "applied by ana" in r.stdout and "approved by ana" in r.stdout

    r = run_installer("verify", old.path, "--site", site)  # the running version is not a downgrade
    assert r.returncode == 0, r.stderr
    older = bundle_factory(version="1.0.0", manifests="fitting")
    r = run_installer("verify", older.path, "--site", site)  # older than what runs: still refused
    assert r.returncode == 4 and "1.0.0" in r.stderr and "1.1.0" in r.stderr, r.stderr


def test_without_a_cluster_load_and_stage_count_as_deployed(bundle_factory: Any, registry: Any,
                                                            tmp_path: Path) -> None:
    old = bundle_factory(version="1.1.0", manifests="fitting")
    new = bundle_factory(version="1.2.0", manifests="fitting")
    site = k3s_site(tmp_path, registry.host, old.pub, cluster=False)
    for verb in ("load", "stage"):
        r = run_installer(verb, new.path, "--site", site, env={"EDGEBUNDLE_OPERATOR": "ana"})
        assert r.returncode == 0, r.stderr
    r = run_installer("verify", old.path, "--site", site)
    assert r.returncode == 4 and "older than the installed 1.2.0" in r.stderr, r.stderr


def test_status_lists_an_image_loaded_by_digest_only(bundle_factory: Any, bundle_world: Any, registry: Any,
                                                     tmp_path: Path) -> None:
    from edgebundle.registry import Registry

    digest = Registry(bundle_world.source.host).has_manifest("rag/vector-db", "1.0")
    b = bundle_factory(images=(f"rag/vector-db@{digest}",), models=(), manifests=False)
    site = k3s_site(tmp_path, registry.host, b.pub, cluster=False)
    r = run_installer("load", b.path, "--site", site, env={"EDGEBUNDLE_OPERATOR": "ana"})
    assert r.returncode == 0, r.stderr
    r = run_installer("status", "--site", site, "--json")
    images = json.loads(r.stdout)["registry"]["images"]
    assert {"repository": "rag/vector-db", "tag": None, "digest": digest} in images, images
    r = run_installer("status", "--site", site)
    assert "rag/vector-db  (by digest only)" in r.stdout and digest in r.stdout, r.stdout
