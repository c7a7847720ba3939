"""The builder end to end: bundle lock / create / verify / inspect against a real source registry."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from edgebundle import layout
from edgebundle import mediatypes as mt
from bundler.cli import main as bundle_main
from edgebundle.digest import sha256_bytes
from bundler.spec import load_spec, manifest_files
from tests.fixtures.bundles import BundleWorld, add_member, flip_byte, read_root
from tests.fixtures.digests import sha256_file, sha256_of

pytestmark = pytest.mark.timeout(180)


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def write_spec(world: BundleWorld, d: Path, **overrides: Any) -> Path:
    """A spec file in ``d`` (its bundles.lock goes beside it)."""
    options: dict[str, Any] = {"name": "rag-edge", "version": "1.0.0", "compatible": "rag-edge/x86_64",
                               "models": ("tiny-llm", "embedder", "rag-index"),
                               "images": ("rag/llm-service:1.0", "rag/vector-db:1.0"), "manifests": "fitting"}
    options.update(overrides)
    d.mkdir(parents=True, exist_ok=True)
    spec = d / "bundle.yaml"
    spec.write_text(yaml.safe_dump(world.spec_doc(**options)))
    return spec


@pytest.fixture(scope="module")
def built(bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One spec, locked, built as a tar and as a directory with the release key."""
    d = tmp_path_factory.mktemp("build")
    spec = write_spec(bundle_world, d)
    key, pub = bundle_world.key("release")
    assert bundle("lock", spec).exit_code == 0
    for out in ("rag-edge.tar", "rag-edge"):
        r = bundle("create", spec, "--key", key, "-o", d / out, "--locked")
        assert r.exit_code == 0, r.output
    return {"spec": spec, "tar": d / "rag-edge.tar", "dir": d / "rag-edge", "key": key, "pub": pub}


def test_round_trip_verify_and_inspect(built: dict[str, Path]) -> None:
    for fmt in ("tar", "dir"):
        r = bundle("verify", built[fmt], "--pubkey", built["pub"])
        assert r.exit_code == 0 and r.stdout.startswith("OK: rag-edge 1.0.0"), r.output
        doc = json.loads(bundle("inspect", built[fmt], "--json").stdout)
        assert [im["refName"] for im in doc["images"]] == ["rag/llm-service:1.0", "rag/vector-db:1.0"]
        assert [m["name"] for m in doc["models"]] == ["tiny-llm", "embedder", "rag-index"]
        expected = [rel for rel, _ in manifest_files(load_spec(built["spec"]))]
        assert expected and [f["path"] for f in doc["manifests"]] == expected
    assert read_root(built["tar"]).to_bytes() == read_root(built["dir"]).to_bytes()


def test_skopeo_reads_both_layouts(built: dict[str, Path]) -> None:
    root = read_root(built["tar"])
    for im in root.images:
        digests = []
        for ref in (f"oci-archive:{built['tar']}:{im.refName}", f"oci:{built['dir']}:{im.refName}"):
            raw = subprocess.run(["skopeo", "inspect", "--raw", ref], capture_output=True, check=True).stdout
            assert sha256_of(raw) == im.digest
            info = json.loads(subprocess.run(["skopeo", "inspect", ref], capture_output=True, check=True).stdout)
            digests.append(info["Digest"])
        assert digests[0] == digests[1]


def test_reproducible(built: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.tar"
    assert bundle("create", built["spec"], "--key", built["key"], "-o", again, "--locked").exit_code == 0
    assert sha256_file(again) == sha256_file(built["tar"])


def _tampered(built: dict[str, Path], tmp_path: Path, fmt: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    dest = tmp_path / built[fmt].name
    (shutil.copyfile if fmt == "tar" else shutil.copytree)(built[fmt], dest)
    return dest


@pytest.mark.parametrize("fmt", ["tar", "dir"])
def test_verify_refuses_a_changed_blob(built: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    b = _tampered(built, tmp_path, fmt)
    root = read_root(b)
    digest = next(m for m in root.models if m.name == "embedder").files[0].blob
    flip_byte(b, layout.blob_path(digest))
    r = bundle("verify", b, "--pubkey", built["pub"])
    assert r.exit_code == 4 and f"{layout.blob_path(digest)}: content digest" in r.stderr


def test_verify_refuses_missing_extra_unsigned_untrusted(built: dict[str, Path], bundle_world: BundleWorld,
                                                         tmp_path: Path) -> None:
    b = _tampered(built, tmp_path / "missing", "dir")
    victim = sorted((b / layout.BLOBS_DIR).iterdir())[0]
    victim.unlink()
    r = bundle("verify", b, "--pubkey", built["pub"])
    assert r.exit_code == 4 and f"lacks 1 member(s) the signed root lists: blobs/sha256/{victim.name}" in r.stderr

    for fmt in ("tar", "dir"):
        b = _tampered(built, tmp_path / f"extra-{fmt}", fmt)
        add_member(b, layout.blob_path(sha256_bytes(b"x")), b"x")
        r = bundle("verify", b, "--pubkey", built["pub"])
        assert r.exit_code == 4 and "does not list: " + layout.blob_path(sha256_bytes(b"x")) in r.stderr

    b = _tampered(built, tmp_path / "unsigned", "dir")
    envelope = json.loads((b / layout.ROOT).read_bytes())
    (b / layout.ROOT).write_text(json.dumps({**envelope, "signatures": []}))
    r = bundle("verify", b, "--pubkey", built["pub"])
    assert r.exit_code == 4 and "edgebundle/root.dsse.json is not signed" in r.stderr

    b = _tampered(built, tmp_path / "old-format", "dir")  # the pre-DSSE layout: bare root + signatures.json
    (b / "edgebundle" / "root.json").write_bytes(base64.b64decode(envelope["payload"]))
    (b / "edgebundle" / "signatures.json").write_text('{"signatures":[]}')
    (b / layout.ROOT).unlink()
    r = bundle("verify", b, "--pubkey", built["pub"])
    assert r.exit_code == 4 and "pre-DSSE format" in r.stderr and "rebuild it" in r.stderr

    _, other = bundle_world.key("stranger")
    r = bundle("verify", built["tar"], "--pubkey", other)
    assert r.exit_code == 4 and "0 valid signature(s) by trusted keys, 1 required" in r.stderr


def test_locked_refuses_missing_stale_lock_and_changed_model(bundle_world: BundleWorld, tmp_path: Path) -> None:
    key, _ = bundle_world.key("release")
    model_dir = tmp_path / "index"
    shutil.copytree(bundle_world.models["rag-index"]["path"], model_dir)
    model = {**bundle_world.models["rag-index"], "path": str(model_dir)}
    spec = write_spec(bundle_world, tmp_path / "s", models=(model,), images=("rag/vector-db:1.0",))

    def create() -> Result:
        return bundle("create", spec, "--key", key, "-o", tmp_path / "out.tar", "--locked")

    r = create()
    assert r.exit_code == 1 and "bundles.lock does not exist" in r.stderr
    assert bundle("lock", spec).exit_code == 0
    spec.write_text(spec.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    r = create()
    assert r.exit_code == 1 and "the spec changed" in r.stderr
    assert bundle("lock", spec).exit_code == 0
    (model_dir / "meta.json").write_text('{"dim": 65}\n')
    r = create()
    assert r.exit_code == 1 and "changed since the lock" in r.stderr
    assert not (tmp_path / "out.tar").exists()


def test_same_size_edit_of_a_raw_model_after_lock_is_refused(bundle_world: BundleWorld, tmp_path: Path) -> None:
    """The pin is proven from the bytes copied into the bundle, not from size alone."""
    key, _ = bundle_world.key("release")
    gguf = tmp_path / "tiny.gguf"
    shutil.copyfile(bundle_world.models["tiny-llm"]["path"], gguf)
    model = {**bundle_world.models["tiny-llm"], "path": str(gguf)}
    spec = write_spec(bundle_world, tmp_path / "s", models=(model,), images=())
    assert bundle("lock", spec).exit_code == 0
    with open(gguf, "r+b") as f:  # one byte near the end, inside the tensor data; same size
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = bundle("create", spec, "--key", key, "-o", tmp_path / "out.tar")
    assert r.exit_code == 1 and "tiny.gguf changed since bundles.lock was written" in r.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out.tar")]  # no partial left


def test_one_platform_of_a_multi_arch_image(bundle_world: BundleWorld, tmp_path: Path) -> None:
    key, pub = bundle_world.key("release")
    spec = write_spec(bundle_world, tmp_path, images=(("rag/llm-service:1.0", ("linux/amd64",)),), models=())
    r = bundle("create", spec, "--key", key, "-o", tmp_path / "one.tar")
    assert r.exit_code == 0, r.output
    lock = json.loads((tmp_path / "bundles.lock").read_text())
    (locked,) = lock["images"]
    assert mt.is_index(locked["mediaType"]) and set(locked["platforms"]) == {"linux/amd64", "linux/arm64/v8"}
    root = read_root(tmp_path / "one.tar")
    (im,) = root.images
    assert im.digest == locked["platforms"]["linux/amd64"] and im.platforms == ["linux/amd64"]
    assert mt.is_image_manifest(im.mediaType)
    assert locked["digest"] not in root.blobs and locked["platforms"]["linux/arm64/v8"] not in root.blobs
    assert not any(mt.is_index(p.mediaType) for p in root.blobs.values())
    assert bundle("verify", tmp_path / "one.tar", "--pubkey", pub).exit_code == 0


def test_compression_only_where_it_pays(built: dict[str, Path]) -> None:
    doc = json.loads(bundle("inspect", built["tar"], "--json").stdout)
    models = {m["name"]: m for m in doc["models"]}
    enc = {(m["name"], f["path"]): f["encoding"] for m in doc["models"] for f in m["files"]}
    assert enc[("embedder", "tokenizer.json")] == "tar+zstd"  # JSON text: compresses well
    assert enc[("embedder", "model.safetensors")] == "identity"  # random weights: stored raw
    assert enc[("tiny-llm", "tiny-llm.Q8_0.gguf")] == "identity"
    assert models["embedder"]["storedSize"] < models["embedder"]["size"] // 2
    assert models["tiny-llm"]["storedSize"] == models["tiny-llm"]["size"]
    assert doc["totals"]["compressionSavedBytes"] > 0


def test_real_smollm2_metadata(bundle_factory: Any, smollm2_gguf: Path) -> None:
    b = bundle_factory(models=("smollm2",), images=(), manifests=False)
    doc = json.loads(bundle("inspect", b.path, "--json").stdout)
    (m,) = doc["models"]
    assert (m["format"], m["architecture"], m["quantization"], m["contextLength"]) == ("gguf", "llama", "Q4_1", 8192)
    assert m["paramCount"] and 100e6 < m["paramCount"] < 200e6
    (f,) = m["files"]
    assert (f["path"], f["digest"], f["size"]) == (smollm2_gguf.name, *sha256_file(smollm2_gguf))
    assert bundle("verify", b.path, "--pubkey", b.pub).exit_code == 0
