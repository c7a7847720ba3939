"""The site misbehaves under a running installer: the registry goes away mid-load, the NAS fills up.

- Site registry stopped mid-load (the installer frozen by SIGSTOP at a known point, the real
  ``docker-registry`` stopped, the installer continued): bounded retries with backoff carry the
  load over a restart, ending with the same registry content as an uninterrupted load; when the
  registry stays down, the load fails within a bounded time naming the registry (the client's
  retry budget, not oras-py's minutes of retries on a closed port).
- NAS full mid-stage: a real 2 MiB tmpfs as the models root when this machine lets us mount one
  (root), else an injected ``ENOSPC`` (``edgebundle/faults.py``, mode ``enospc``). The error names
  the NAS path and the free space, no temp file is left, nothing half-written is visible, and
  the rerun once space is freed ends with the same NAS tree as an uninterrupted stage.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bundles import (BuiltBundle, frozen_installer, nas_snapshot, registry_snapshot, resume,
                                    run_installer)
from tests.fixtures.registry import RegistryProcess
from tests.test_installer_crash import (  # noqa: F401
    STAGE_BUNDLE,
    Reference,
    _site,
    assert_no_partial_model_visible,
    load_reference,
    stage_reference,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

#: What a dead registry may cost at most: the client's retry budget (15 s) plus slack.
GIVE_UP_WITHIN = 30.0


@pytest.mark.parametrize("point", ["load.blob.chunk@2", "load.blob.journaled@2"])  # mid-blob, between blobs
def test_registry_restarted_mid_load_resumes(point: str, load_reference: Reference, registry: RegistryProcess,
                                             tmp_path: Path) -> None:
    b = load_reference.bundle
    proc = frozen_installer("load", b.path, "--site", _site(b, tmp_path, registry.host), at=point)
    registry.stop()
    timer = registry.restart_after(2.0)
    try:
        code, output, took = resume(proc)
    finally:
        timer.join()
    assert code == 0, output
    assert took >= 2.0, "the registry was down for 2 s: the load cannot have finished sooner"
    assert registry_snapshot(registry) == load_reference.snapshot


def test_registry_down_for_good_fails_fast_naming_it(load_reference: Reference, registry: RegistryProcess,
                                                     tmp_path: Path) -> None:
    b = load_reference.bundle
    site = _site(b, tmp_path, registry.host)
    proc = frozen_installer("load", b.path, "--site", site, at="load.blob.journaled@2")
    registry.stop()
    code, output, took = resume(proc)
    assert code == 1, output
    assert registry.host in output and "Traceback" not in output, output
    assert took < GIVE_UP_WITHIN, f"gave up after {took:.1f} s"
    registry.start()  # back again: the next run finishes the job
    r = run_installer("load", b.path, "--site", site)
    assert r.returncode == 0, r.stderr
    assert registry_snapshot(registry) == load_reference.snapshot


# -- NAS full ------------------------------------------------------------------------------------

def _mount(*args: str) -> bool:
    """``mount ARGS``; False when not permitted (not root, no CAP_SYS_ADMIN) or not installed."""
    try:
        return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0
    except OSError:
        return False


@pytest.fixture
def small_nas(tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    """(models root, fault to inject): a 2 MiB tmpfs and no fault, or a plain dir and ``ENOSPC``."""
    root = tmp_path / "nas"
    root.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)):
        yield root, "stage.file.chunk@2:enospc"  # not allowed to mount here: inject the full disk
        return
    try:
        yield root, None
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_nas_full_mid_stage_then_space_freed(small_nas: tuple[Path, str | None], bundle_factory: Any,
                                             stage_reference: tuple[BuiltBundle, dict[str, str]],
                                             tmp_path: Path) -> None:
    nas, injected = small_nas
    b, reference = stage_reference
    site = b.site(tmp_path, "127.0.0.1:9", models_root=nas)
    r = run_installer("stage", b.path, "--site", site, faultpoint=injected)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"no space left on the NAS at {nas}" in r.stderr and "bytes free" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not [p for p in nas.rglob("*") if p.name.startswith(".edgebundle-tmp-")], "a temp file was left"
    assert assert_no_partial_model_visible(nas, b) < len(b.root.models)
    if injected is None:
        assert _mount("-o", "remount,size=64m", str(nas)), "could not grow the tmpfs"
    r = run_installer("stage", b.path, "--site", site)
    assert r.returncode == 0, r.stderr
    assert nas_snapshot(nas) == reference
