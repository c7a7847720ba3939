"""installer status: installed bundles, registry images, NAS versions and how far each bundle got."""

from __future__ import annotations

import re

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from installer.cli import main
from tests.fixtures.bundles import run_installer

pytestmark = pytest.mark.timeout(120)


def invoke(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def test_status_reports_bundles_images_models_and_progress(bundle_factory: Any, registry: Any,
                                                           tmp_path: Path) -> None:
    b1, b2 = bundle_factory(), bundle_factory(version="1.1.0")
    site = b1.site(tmp_path, registry.host)
    empty = json.loads(invoke("status", "--site", site, "--json").stdout)
    assert empty["installed"] == [] and empty["registry"]["images"] == [] and empty["models"]["versions"] == []

    env = {"EDGEBUNDLE_OPERATOR": "carol"}
    assert invoke("load", b1.path, "--site", site, env=env).exit_code == 0
    assert invoke("stage", b1.path, "--site", site, env=env).exit_code == 0
    # 1.1.0: killed in the middle of its load.
    killed = run_installer("load", b2.path, "--site", site, faultpoint="load.blob.journaled@2")
    assert killed.returncode == -signal.SIGKILL

    r = invoke("status", "--site", site, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (inst,) = doc["installed"]
    assert (inst["name"], inst["version"], inst["root"], inst["operator"]) == \
        ("rag-edge", "1.0.0", b1.root_digest, "carol") and inst["installedAt"]
    seen = {b["version"]: b for b in doc["bundles"]}
    assert seen["1.0.0"]["installed"] and seen["1.0.0"]["steps"]["load"]["done"]
    assert seen["1.1.0"]["steps"]["load"] == {"done": False, "items": 2} and not seen["1.1.0"]["installed"]
    images = {(i["repository"], i["tag"]): i["digest"] for i in doc["registry"]["images"]}
    assert images == {(im.repository, im.tag): im.digest for im in b1.root.images}
    versions = {(v["kind"], v["name"], v["version"]) for v in doc["models"]["versions"]}
    assert versions == {("llm", "tiny-llm", "1.0"), ("embedding", "embedder", "1.0"), ("index", "rag-index", "1.0")}
    assert all(v["bundle"]["root"] == b1.root_digest for v in doc["models"]["versions"])

    text = invoke("status", "--site", site).stdout
    assert re.search(r"^\s*rag-edge +1\.0\.0\b", text, re.M) and "by carol" in text
    assert "load in progress (2 items)" in text
    assert "rag/vector-db:1.0" in text and "tiny-llm" in text


def test_status_with_the_registry_down(bundle_factory: Any, tmp_path: Path) -> None:
    from tests.fixtures.registry import free_port

    b = bundle_factory()
    site = b.site(tmp_path, f"127.0.0.1:{free_port()}")
    r = invoke("status", "--site", site)
    assert r.exit_code == 0 and "unreachable: cannot reach registry" in r.stdout and "(no models)" in r.stdout
