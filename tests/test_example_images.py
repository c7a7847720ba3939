"""examples/images.py: deterministic, valid OCI images that skopeo accepts from a real registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any


from edgebundle import mediatypes as mt
from edgebundle.digest import hash_file, sha256_bytes
from edgebundle.layout import blob_path
from edgebundle.registry import Registry
from examples.images import IMAGES, PseudoRandom, build_and_push, build_layout
from tests.fixtures.machine import skip_unless_ci
from tests.fixtures.registry import RegistryProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
SKOPEO = shutil.which("skopeo")
needs_skopeo = skip_unless_ci(SKOPEO is not None, "skopeo is not installed (Debian package skopeo)")


def blob(root: Path, digest: str) -> bytes:
    return (root / blob_path(digest)).read_bytes()


def skopeo(*args: str) -> str:
    assert SKOPEO
    done = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def image_manifests(root: Path, desc: dict[str, Any]) -> list[dict[str, Any]]:
    """The image manifests under a top-level descriptor (one, or one per platform)."""
    doc = json.loads(blob(root, desc["digest"]))
    if mt.is_index(desc["mediaType"]):
        return [json.loads(blob(root, m["digest"])) for m in doc["manifests"]]
    return [doc]


def test_layout_is_deterministic_and_versions_differ_by_one_layer(tmp_path: Path) -> None:
    a = build_layout(tmp_path / "a")
    b = build_layout(tmp_path / "b")
    v2 = build_layout(tmp_path / "v2", version="1.1")

    assert a == b
    assert (tmp_path / "a/index.json").read_bytes() == (tmp_path / "b/index.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a/blobs/sha256").iterdir()) == sorted(
        p.name for p in (tmp_path / "b/blobs/sha256").iterdir()
    )
    assert set(a) == {f"{spec.repository}:1.0" for spec in IMAGES}
    for spec in IMAGES:
        old = image_manifests(tmp_path / "a", a[f"{spec.repository}:1.0"])
        new = image_manifests(tmp_path / "v2", v2[f"{spec.repository}:1.1"])
        for m_old, m_new in zip(old, new, strict=True):
            changed = [x["digest"] != y["digest"] for x, y in zip(m_old["layers"], m_new["layers"], strict=True)]
            assert changed == [False, False, True]  # base and app layers are shared; version differs


def test_images_are_well_formed(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    top = build_layout(root, extra_layer=b"extra!")
    llm = top["rag/llm-service:1.0"]
    assert llm["mediaType"] == mt.OCI_INDEX
    index = json.loads(blob(root, llm["digest"]))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    base_layers = set()
    for desc in top.values():
        for manifest in image_manifests(root, desc):
            config = json.loads(blob(root, manifest["config"]["digest"]))
            assert manifest["config"]["mediaType"] == mt.OCI_CONFIG
            assert config["os"] == "linux" and config["config"]["Entrypoint"]
            diff_ids = []
            for layer in manifest["layers"]:
                data = blob(root, layer["digest"])
                assert sha256_bytes(data) == layer["digest"] and len(data) == layer["size"]
                tar = gzip.decompress(data)
                diff_ids.append(sha256_bytes(tar))
                with tarfile.open(fileobj=io.BytesIO(tar)) as t:
                    assert all(m.mtime == 1704067200 and m.uid == 0 for m in t.getmembers())
            assert config["rootfs"]["diff_ids"] == diff_ids
            base_layers.add((config["architecture"], manifest["layers"][0]["digest"]))
            assert len(manifest["layers"]) == 4  # base, app, version, extra
    assert len(base_layers) == 2  # one shared base layer per architecture


def test_pseudo_random_stream_does_not_depend_on_read_size() -> None:
    size = 3 * 1024 * 1024 + 7
    one = PseudoRandom("s", size).read()
    pieces = PseudoRandom("s", size)
    parts = []
    for n in (1, 4096, 1_500_000, 10, 5_000_000):
        parts.append(pieces.read(n))
    assert b"".join(parts) == one and len(one) == size
    assert PseudoRandom("t", 64).read() != one[:64]


def test_bulk_layer_is_streamed_into_the_layout(tmp_path: Path) -> None:
    root = tmp_path / "layout"
    size = 5 * 1024 * 1024 + 3
    top = build_layout(root, layer_bytes=size)
    manifests = image_manifests(root, top["rag/llm-service:1.0"])
    bulk = {m["layers"][-1]["digest"] for m in manifests}
    assert len(bulk) == 1  # both platforms share it
    (digest,) = bulk
    assert manifests[0]["layers"][-1]["mediaType"] == mt.OCI_LAYER_TAR
    assert hash_file(root / blob_path(digest)) == (digest, manifests[0]["layers"][-1]["size"])
    with tarfile.open(root / blob_path(digest)) as t:
        (member,) = t.getmembers()
        assert member.size == size
        f = t.extractfile(member)
        assert f is not None
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(PseudoRandom(
            "edgebundle-example:rag/llm-service", size).read()).digest()  # fmt: skip
    others = image_manifests(root, top["rag/vector-db:1.0"])
    assert all(len(m["layers"]) == 3 for m in others)


@needs_skopeo
def test_pushed_images_are_accepted_by_skopeo(registry: RegistryProcess, tmp_path: Path) -> None:
    pushed = build_and_push(registry.host)
    assert set(pushed) == {f"{registry.host}/{spec.repository}:1.0" for spec in IMAGES}
    r = Registry(registry.host)
    for ref, digest in pushed.items():
        repo = ref.split("/", 1)[1].rsplit(":", 1)[0]
        assert r.has_manifest(repo, "1.0") == digest
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
        assert sha256_bytes(raw.encode()) == digest
        info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))
        assert info["Os"] == "linux" and len(info["Layers"]) == 3
    arm = json.loads(skopeo("inspect", "--tls-verify=false", "--override-arch", "arm64",
                            f"docker://{registry.host}/rag/llm-service:1.0"))  # fmt: skip
    assert arm["Architecture"] == "arm64"

    dest = tmp_path / "copied"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{registry.host}/rag/llm-service:1.0",
           f"oci:{dest}:llm")  # fmt: skip
    copied = json.loads((dest / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == pushed[f"{registry.host}/rag/llm-service:1.0"]

    # The shared amd64 base layer went up once and was mounted into the other repositories.
    assert registry.count("POST", "mount=") >= len(IMAGES) - 1


def test_repush_sends_no_blobs(registry: RegistryProcess) -> None:
    first = build_and_push(registry.host)
    before = registry.count("PUT", "/blobs/uploads/")
    assert build_and_push(registry.host) == first
    assert registry.count("PUT", "/blobs/uploads/") == before


def test_cli_pushes_a_new_version(registry: RegistryProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples/images.py"), "--registry", registry.host, "--version", "1.1"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert len(lines) == len(IMAGES)
    assert all(line.startswith(f"{registry.host}/rag/") and ":1.1@sha256:" in line for line in lines)
    assert Registry(registry.host).list_tags("rag/chat-ui") == ["1.1"]
