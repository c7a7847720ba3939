"""The offline installer on the media: bootstrap.sh installs edgebundle with no index, then verifies.

The wheel cache ``<repo>/.cache/wheelhouse`` is filled by ``make install``
(examples/fetch_wheels.py), so this test writes the media with the package index switched off
(``PIP_NO_INDEX=1``): like every test, it never leaves 127.0.0.1.
The bootstrap itself then runs with no index at all: ``PIP_NO_INDEX=1``, an index URL that
refuses connections and, where ``unshare -n`` works, inside a network namespace with no network.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bundler.cli import main as bundle_main
from tests.fixtures.bundles import BuiltBundle

pytestmark = pytest.mark.timeout(600)

REPO_ROOT = Path(__file__).resolve().parents[1]
WHEEL_CACHE = REPO_ROOT / ".cache" / "wheelhouse"
PYTHON = getattr(sys, "_base_executable", sys.executable)  # a plain python3, not this venv's


def _no_network_prefix() -> tuple[list[str], str]:
    """A command prefix that cuts the network (``unshare -n``), or none and why not."""
    if shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["unshare", "-n"], "in a network namespace with no network"
        return [], f"with the network (unshare -n failed: {probe.stderr.strip()[:100]})"
    return [], "with the network (no unshare)"


@pytest.fixture(scope="module")
def media_with_installer(bundle_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[BuiltBundle, Path]:
    machine = platform.machine()
    if machine not in ("x86_64", "aarch64"):
        pytest.skip(f"no manylinux wheels for {machine}")
    b = bundle_factory()
    work = tmp_path_factory.mktemp("bootstrap")
    runner = CliRunner()
    r = runner.invoke(bundle_main, ["split", str(b.path), "--size", "2M", "--key", str(b.key),
                                    "-o", str(work / "parts")])
    assert r.exit_code == 0, r.output
    usb = work / "usb"
    usb.mkdir()
    py = "%d.%d" % sys.version_info[:2]
    r = runner.invoke(bundle_main, ["write-media", str(work / "parts"), str(usb), "--json",
                                    "--target-platform", f"manylinux2014_{machine}", "--python-version", py,
                                    "--wheel-cache", str(WHEEL_CACHE)], env={"PIP_NO_INDEX": "1"})
    assert r.exit_code == 0, f"(is the wheel cache filled? run: make wheels)\n{r.output}"
    doc = json.loads(r.stdout)
    assert doc["wheelhouse"]["targets"] == [{"platform": f"manylinux2014_{machine}", "python": py}]
    return b, usb


def _clean_env(home: Path) -> dict[str, str]:
    """What a technician's shell has: no pip configuration, no index, nothing of this venv."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PYTHON": PYTHON}


def test_bootstrap_installs_offline_and_installer_verifies(media_with_installer: Any, tmp_path: Path) -> None:
    b, usb = media_with_installer
    names = sorted(p.name for p in (usb / "wheelhouse").iterdir())
    assert any(n.startswith("edgebundle-") for n in names) and any(n.startswith("cryptography-") for n in names)
    assert not any(n.startswith("helm_python_sdk-") for n in names)  # no charts: no Helm engine (test_helm.py)
    readme = (usb / "README.txt").read_text()
    assert 'sh "$MEDIA/bootstrap.sh"' in readme and "wheelhouse/ holds" in readme

    tech = tmp_path / "tech"
    tech.mkdir()
    env = _clean_env(tmp_path)
    prefix, how = _no_network_prefix()
    for p in [usb, *usb.rglob("*")]:  # the stick is read-only on site
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        proc = subprocess.run([*prefix, "sh", str(usb / "bootstrap.sh")], cwd=tech, env=env,
                              capture_output=True, text=True, timeout=500)
        assert proc.returncode == 0, f"bootstrap {how}:\n{proc.stdout}\n{proc.stderr}"
        assert "wheels checked against SHA256SUMS" in proc.stdout
        venv = tech / "edgebundle-venv"
        where = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import bundler, installer, cryptography; print(bundler.__file__)"],
                               cwd=tech, env=env, capture_output=True, text=True)
        assert where.returncode == 0, where.stderr
        assert where.stdout.startswith(str(venv)), "edgebundle must come from the venv, not the source tree"

        site = b.site(tmp_path / "site", "127.0.0.1:9")
        proc = subprocess.run([*prefix, str(venv / "bin" / "installer"), "verify", str(usb), "--site", str(site),
                               "--json"], cwd=tech, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"installer verify {how}:\n{proc.stdout}\n{proc.stderr}"
        doc = json.loads(proc.stdout)
        assert doc["ok"] and doc["root"] == b.root_digest
    finally:
        for p in [usb, *usb.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_bootstrap_refuses_a_damaged_wheelhouse(media_with_installer: Any, tmp_path: Path) -> None:
    _, usb = media_with_installer
    copy = tmp_path / "usb"
    shutil.copytree(usb, copy)
    wheel = next(p for p in sorted((copy / "wheelhouse").iterdir()) if p.name.startswith("click-"))
    with open(wheel, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0")
    tech = tmp_path / "tech"
    tech.mkdir()
    proc = subprocess.run(["sh", str(copy / "bootstrap.sh")], cwd=tech, env=_clean_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"wheelhouse/{wheel.name}: sha256" in proc.stderr
    assert not (tech / "edgebundle-venv").exists(), "nothing is installed from a damaged wheelhouse"

    proc = subprocess.run(["sh", str(copy / "bootstrap.sh"), str(copy / "venv")], cwd=tech,
                          env=_clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is on the media" in proc.stderr
