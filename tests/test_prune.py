"""installer prune: deletes what none of the last N deployed bundles uses, never the running one;
shows, asks, audits; needs an operator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgebundle.registry import Registry
from tests.fixtures.bundles import INSTALLER, nas_snapshot, run_installer, write_site

pytestmark = pytest.mark.timeout(300)
OP = {"EDGEBUNDLE_OPERATOR": "ana"}


@pytest.fixture
def three_releases(bundle_factory: Any, bundle_world: Any, registry: Any, tmp_path: Path) -> dict[str, Any]:
    """1.0.0 (tiny-llm v1, vector-db + llm-service), 1.1.0 and 1.2.0 (tiny-llm v2/v3, llm-service)
    loaded and staged in order on a site without a cluster target."""
    def llm(version: str) -> dict[str, Any]:
        return {**bundle_world.models["tiny-llm"], "version": version}

    llm_image = ("rag/llm-service:1.0", ("linux/amd64",))
    b1 = bundle_factory(version="1.0.0", models=[llm("v1")], images=[llm_image, "rag/vector-db:1.0"], manifests=False)
    later = [bundle_factory(version=v, models=[llm(m)], images=[llm_image], manifests=False)
             for v, m in (("1.1.0", "v2"), ("1.2.0", "v3"))]
    site = write_site(tmp_path, registry.host, trust=[b1.pub])
    for b in (b1, *later):
        for verb in ("load", "stage"):
            r = run_installer(verb, b.path, "--site", site, env=OP)
            assert r.returncode == 0, r.stderr
    return {"site": site, "nas": tmp_path / "nas", "state": tmp_path / "state", "b1": b1}


def test_dry_run_shows_and_deletes_nothing(three_releases: dict[str, Any], registry: Any) -> None:
    before = nas_snapshot(three_releases["nas"])
    r = run_installer("prune", "--site", three_releases["site"], "--dry-run", "--json", env=OP)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(m["name"], m["version"]) for m in doc["models"]] == [("tiny-llm", "v1")]
    assert [(i["repository"], i["tag"]) for i in doc["images"]] == [("rag/vector-db", "1.0")]
    assert [b["version"] for b in doc["kept"]] == ["1.2.0", "1.1.0"]
    assert nas_snapshot(three_releases["nas"]) == before
    assert Registry(registry.host).has_manifest("rag/vector-db", "1.0")


def test_prune_deletes_unused_keeps_the_rest_and_audits(three_releases: dict[str, Any], registry: Any) -> None:
    r = run_installer("prune", "--site", three_releases["site"], "--yes", env=OP)
    assert r.returncode == 0, r.stderr
    assert "tiny-llm v1" in r.stdout and "rag/vector-db:1.0" in r.stdout, r.stdout
    assert "garbage-collect" in r.stdout
    llm_dir = three_releases["nas"] / "llm" / "tiny-llm"
    assert sorted(p.name for p in llm_dir.iterdir()) == ["v2", "v3"]
    reg = Registry(registry.host)
    assert reg.has_manifest("rag/vector-db", "1.0") is None
    assert reg.has_manifest("rag/llm-service", "1.0")
    audit = (three_releases["state"] / "audit.log").read_text().splitlines()
    last = json.loads(audit[-1])
    assert last["command"] == "prune" and last["operator"] == "ana" and last["outcome"] == "ok"
    record = json.loads((three_releases["state"] / "prunes" / f"{last['plan'].split(':')[1]}.json").read_text())
    assert [(m["name"], m["version"]) for m in record["models"]] == [("tiny-llm", "v1")]
    assert record["operator"] == "ana"
    r = run_installer("prune", "--site", three_releases["site"], "--yes", env=OP)  # a rerun: nothing left
    assert r.returncode == 0 and "Nothing to delete." in r.stdout, r.stdout


def test_keep_one_still_keeps_the_running_bundle(three_releases: dict[str, Any]) -> None:
    r = run_installer("prune", "--site", three_releases["site"], "--keep", "1", "--dry-run", "--json", env=OP)
    doc = json.loads(r.stdout)
    assert [b["version"] for b in doc["kept"]] == ["1.2.0"]
    assert sorted(m["version"] for m in doc["models"]) == ["v1", "v2"]


def test_prune_needs_an_operator(three_releases: dict[str, Any]) -> None:
    before = nas_snapshot(three_releases["nas"])
    r = run_installer("prune", "--site", three_releases["site"], "--yes", env={"EDGEBUNDLE_OPERATOR": ""})
    assert r.returncode == 2 and "Missing option '--operator'" in r.stderr, r.stderr
    assert nas_snapshot(three_releases["nas"]) == before


def test_ctrl_c_at_the_prompt_exits_130_and_is_audited_as_interrupted(three_releases: dict[str, Any]) -> None:
    before = nas_snapshot(three_releases["nas"])
    proc = subprocess.Popen([INSTALLER, "prune", "--site", str(three_releases["site"])],
                            env={**os.environ, **OP}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    while b"Delete these as ana?" not in seen:  # the y/N prompt (no newline): the run is waiting
        chunk = proc.stderr.read1(4096)
        assert chunk, seen
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "error: interrupted; run the same command again to resume" in err.decode() and "Aborted" not in err.decode()
    last = json.loads((three_releases["state"] / "audit.log").read_text().splitlines()[-1])
    assert (last["command"], last["outcome"], last["exitCode"]) == ("prune", "interrupted", 130)
    assert last["error"]["kind"] == "Interrupted" and "run the same command again" in last["error"]["message"]
    assert nas_snapshot(three_releases["nas"]) == before
