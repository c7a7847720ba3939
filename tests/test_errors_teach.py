"""Errors that teach: a full disk in create, split and lock is one message naming the path with the
bytes needed and free, --json still prints an error document, and nothing partial is left; Ctrl-C
says whether to rerun and exits 130. The disk is a real 2 MiB tmpfs (needs root to mount)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from edgebundle.clikit import handle_errors, json_option
from tests.fixtures.bundles import BUNDLE

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def bundle_cli(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUNDLE, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def spec(bundle_world: Any, tmp_path: Path) -> Path:
    """An image with a 3 MiB layer (the size is unknown before fetching) and a 0.9 MB model."""
    (tmp_path / "index.bin").write_bytes(os.urandom(900_000))
    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "edgebundle/v1", "kind": "Bundle",
        "metadata": {"name": "demo", "version": "1.0.0", "compatible": "demo/x86_64"},
        "spec": {"images": [{"ref": f"{bundle_world.source.host}/rag/llm-service:1.0", "platforms": ["linux/amd64"]}],
                 "models": [{"name": "rag-index", "kind": "index", "version": "v1", "path": "index.bin"}]}}))
    return path


def test_create_out_of_space_midway_leaves_nothing(spec: Path, small_disk: Path, bundle_world: Any) -> None:
    key, _ = bundle_world.key("release")
    out = small_disk / "demo.tar"
    r = bundle_cli("create", spec, "--key", key, "-o", out, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["kind"] == "DiskFullError" and doc["exitCode"] == 1
    assert doc["error"].startswith(f"out of space writing {small_disk}/demo.tar")
    assert "bytes) free there" in doc["error"] and "Traceback" not in r.stderr
    assert list(small_disk.iterdir()) == []


def test_create_refuses_up_front_when_the_models_alone_do_not_fit(spec: Path, small_disk: Path,
                                                                   bundle_world: Any) -> None:
    (small_disk / "filler").write_bytes(b"\0" * 1_500_000)
    key, _ = bundle_world.key("release")
    r = bundle_cli("create", spec, "--key", key, "-o", small_disk / "demo.tar")
    assert r.returncode == 1
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    assert (f"not enough space for bundle demo 1.0.0 (its models alone) at {small_disk}: needs 1.7 MiB "
            f"(1800000 bytes), ") in r.stderr and f"({free} bytes) free" in r.stderr, r.stderr
    assert [p.name for p in small_disk.iterdir()] == ["filler"]


def test_split_and_lock_out_of_space(spec: Path, small_disk: Path, bundle_world: Any, tmp_path: Path) -> None:
    key, _ = bundle_world.key("release")
    built = tmp_path / "demo.tar"
    assert bundle_cli("create", spec, "--key", key, "-o", built).returncode == 0
    r = bundle_cli("split", built, "--size", "1M", "--key", key, "-o", small_disk / "parts")
    assert r.returncode == 1
    size = built.stat().st_size
    assert f"not enough space for the parts of demo.tar at {small_disk}/parts: needs" in r.stderr
    assert f"({size} bytes)" in r.stderr and "nothing was written" in r.stderr, r.stderr
    assert list(small_disk.iterdir()) == []

    with open(small_disk / "filler", "wb") as f:  # fill the disk to the last block
        with pytest.raises(OSError):
            f.write(b"\0" * (3 * 1024 * 1024))
    r = bundle_cli("lock", spec, "--lockfile", small_disk / "bundles.lock", "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["kind"] == "DiskFullError" and f"out of space writing {small_disk}/bundles.lock" in doc["error"]
    assert [p.name for p in small_disk.iterdir()] == ["filler"]


@pytest.mark.parametrize("verb, message", [
    ("create", "interrupted; run the same command again to resume"),
    ("verify", "interrupted; nothing was changed"),
])
def test_ctrl_c_says_what_to_do_and_exits_130(verb: str, message: str) -> None:
    @click.command(verb)
    @json_option
    @handle_errors
    def cmd(as_json: bool) -> None:
        raise KeyboardInterrupt

    r = CliRunner().invoke(cmd, [])
    assert r.exit_code == 130 and r.output.strip() == f"error: {message}" and "Aborted" not in r.output
    r = CliRunner().invoke(cmd, ["--json"])
    assert r.exit_code == 130 and json.loads(r.stdout)["kind"] == "Interrupted"


def test_delta_media_readme_names_its_base_and_what_to_do_without_it(bundle_factory: Any, bundle_world: Any,
                                                                     tmp_path: Path) -> None:
    base = bundle_factory(version="1.0.0", manifests="fitting")
    doc = yaml.safe_load(base.spec_path.read_text())
    doc["metadata"]["version"] = "1.1.0"
    spec = tmp_path / "bundle.yaml"
    spec.write_text(yaml.safe_dump(doc))
    delta = tmp_path / "delta.tar"
    r = bundle_cli("create", spec, "--key", base.key, "--base", base.path, "-o", delta)
    assert r.returncode == 0, r.stderr
    (tmp_path / "usb").mkdir()
    r = bundle_cli("write-media", delta, tmp_path / "usb", "--no-wheels")
    assert r.returncode == 0, r.stderr
    readme = (tmp_path / "usb" / "README.txt").read_text()
    assert "THIS IS A DELTA" in readme
    assert f"  base root   {base.root_digest}" in readme and "  base        rag-edge 1.0.0" in readme
    assert "the base bundle rag-edge 1.0.0 first, or the full bundle rag-edge 1.1.0" in readme
