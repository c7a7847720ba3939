"""kill -9 the real installer mid-load and mid-stage; the rerun must end exactly like a clean run.

Each case runs the ``installer`` console script in a subprocess with ``EDGEBUNDLE_FAULTPOINT``
set (installer/faults.py), checks it died by SIGKILL, checks what is visible at that moment
(no partial model under its final name), reruns without the fault and compares the registry's
storage and the NAS tree with an uninterrupted run's.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from installer.destinations.nas import KIND_DIRS, MARKER
from installer.faults import FAULTPOINTS
from installer.state import Journal
from tests.fixtures.bundles import (BuiltBundle, nas_snapshot, registry_snapshot, run_installer)
from tests.fixtures.registry import RegistryProcess, free_port

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CHUNK = 1024 * 1024
#: Multi-arch llm-service (index + 2 manifests + the 3 MiB layer) and vector-db; one small model.
LOAD_BUNDLE = {"images": ("rag/llm-service:1.0", "rag/vector-db:1.0"), "models": ("rag-index",)}
#: The default three models (a 2.9 MiB GGUF, an embedding dir with a sub-directory, an index).
STAGE_BUNDLE: dict[str, Any] = {"images": ()}


def commits(reg: RegistryProcess) -> int:
    """Blobs the registry accepted: upload commits (PUT ?digest=) and cross-repository mounts."""
    return sum(1 for e in reg.requests() if e.status == 201 and "/blobs/uploads/" in e.path
               and (e.method == "PUT" or (e.method == "POST" and "mount=" in e.path)))


def uploads_in_progress(reg: RegistryProcess) -> int:
    repos = reg.data_dir / "docker" / "registry" / "v2" / "repositories"
    return sum(1 for p in repos.rglob("_uploads/*") if p.is_dir()) if repos.exists() else 0


@dataclass(frozen=True)
class Reference:
    bundle: BuiltBundle
    snapshot: dict[str, str]
    commits: int


def _site(b: BuiltBundle, d: Path, host: str) -> Path:
    return b.site(d, host, chunk_size=CHUNK)


@pytest.fixture(scope="module")
def load_reference(bundle_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    """An uninterrupted load into its own registry: what every interrupted run must end as."""
    b = bundle_factory(**LOAD_BUNDLE)
    d = tmp_path_factory.mktemp("load-reference")
    reg = RegistryProcess(d / "registry", free_port())
    reg.start()
    try:
        r = run_installer("load", b.path, "--site", _site(b, d, reg.host))
        assert r.returncode == 0, r.stderr
        yield Reference(b, registry_snapshot(reg), commits(reg))
    finally:
        reg.stop()


LOAD_POINTS = [
    "verify.done@1",
    "load.blob.chunk@6",  # inside the 3 MiB layer, between PATCHes
    "load.blob.pushed@3",
    "load.blob.journaled@2",
    "load.manifest.pushed@1",  # a platform manifest of the index
    "load.tag.pushed@1",  # the index, under its tag
    "load.confirmed@1",
]


@pytest.mark.parametrize("point", LOAD_POINTS)
def test_kill_mid_load_then_resume(point: str, load_reference: Reference, registry: RegistryProcess,
                                   tmp_path: Path) -> None:
    assert point.split("@")[0] in FAULTPOINTS
    b = load_reference.bundle
    site = _site(b, tmp_path, registry.host)
    killed = run_installer("load", b.path, "--site", site, faultpoint=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} never fired: {killed.stderr}"
    if point == "load.blob.chunk@6":
        assert uploads_in_progress(registry) >= 1, "the kill should leave an upload half done"
    first = commits(registry)

    r = run_installer("load", b.path, "--site", site)
    assert r.returncode == 0, r.stderr
    assert registry_snapshot(registry) == load_reference.snapshot
    # No blob is committed twice: the rerun redoes at most the blob that was in flight.
    assert commits(registry) == load_reference.commits, f"first run committed {first}"


# -- stage ---------------------------------------------------------------------------------------

def visible_versions(nas: Path) -> Iterator[Path]:
    for kdir in KIND_DIRS.values():
        for name_dir in (nas / kdir).glob("*"):
            yield from (v for v in name_dir.iterdir() if not v.name.startswith("."))


def assert_no_partial_model_visible(nas: Path, b: BuiltBundle) -> int:
    """Every version under its final name is complete (files and sizes); returns how many."""
    expected = {(KIND_DIRS[m.kind], m.name, m.version): m for m in b.root.models}
    n = 0
    for vdir in visible_versions(nas):
        m = expected[(vdir.parent.parent.name, vdir.parent.name, vdir.name)]
        have = {p.relative_to(vdir).as_posix(): p.stat().st_size for p in vdir.rglob("*") if p.is_file()}
        assert have == {**{f.path: f.size for f in m.files}, MARKER: have.get(MARKER, -1)}, vdir
        n += 1
    return n


@pytest.fixture(scope="module")
def stage_reference(bundle_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[BuiltBundle, dict[str, str]]:
    """An uninterrupted stage, watched while it runs: no partial version is ever visible."""
    b = bundle_factory(**STAGE_BUNDLE)
    d = tmp_path_factory.mktemp("stage-reference")
    site = b.site(d, "127.0.0.1:9")
    nas = d / "nas"
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                seen.append(assert_no_partial_model_visible(nas, b))
            except FileNotFoundError:  # a directory vanished between listing and stat: a rename
                pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = run_installer("stage", b.path, "--site", site)
    finally:
        stop.set()
        watcher.join()
    assert r.returncode == 0, r.stderr
    assert len(seen) > 10 and seen[-1] == len(b.root.models)
    return b, nas_snapshot(nas)


STAGE_POINTS = [
    "stage.file.chunk@2",  # inside the 2.9 MiB GGUF
    "stage.file.written@1",
    "stage.file.renamed@2",
    "stage.marker.written@1",
    "stage.version.renamed@1",
    "stage.version.journaled@2",
]


@pytest.mark.parametrize("point", STAGE_POINTS)
def test_kill_mid_stage_then_resume(point: str, stage_reference: tuple[BuiltBundle, dict[str, str]],
                                    tmp_path: Path) -> None:
    assert point.split("@")[0] in FAULTPOINTS
    b, reference = stage_reference
    site = b.site(tmp_path, "127.0.0.1:9")
    nas = tmp_path / "nas"
    killed = run_installer("stage", b.path, "--site", site, faultpoint=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} never fired: {killed.stderr}"
    assert_no_partial_model_visible(nas, b)
    r = run_installer("stage", b.path, "--site", site)
    assert r.returncode == 0, r.stderr
    assert nas_snapshot(nas) == reference


def test_kill_before_installed_record(bundle_factory: Any, registry: RegistryProcess, tmp_path: Path) -> None:
    """Load and stage done, killed before installed.json: the next run records it, nothing else."""
    b = bundle_factory(**LOAD_BUNDLE)
    site = _site(b, tmp_path, registry.host)
    assert run_installer("load", b.path, "--site", site).returncode == 0
    killed = run_installer("stage", b.path, "--site", site, faultpoint="installed.before")
    assert killed.returncode == -signal.SIGKILL
    installed = tmp_path / "state" / "installed.json"
    assert not installed.exists()
    nas = nas_snapshot(tmp_path / "nas")
    r = run_installer("stage", b.path, "--site", site, env={"EDGEBUNDLE_OPERATOR": "bob"})
    assert r.returncode == 0 and "installed: rag-edge 1.0.0" in r.stdout
    assert nas_snapshot(tmp_path / "nas") == nas
    assert '"operator": "bob"' in installed.read_text()


def test_torn_journal_line_is_ignored(bundle_factory: Any, tmp_path: Path) -> None:
    """Power cut mid-append: the torn record never happened, and the step is simply redone."""
    b = bundle_factory(**STAGE_BUNDLE)
    site = b.site(tmp_path, "127.0.0.1:9")
    assert run_installer("stage", b.path, "--site", site, faultpoint="stage.file.journaled@2").returncode == -9
    journal = tmp_path / "state" / "journal" / f"{b.root_digest.split(':')[1]}.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"step": "stage", "item": "file /nowhere", "do')
    r = run_installer("stage", b.path, "--site", site)
    assert r.returncode == 0, r.stderr
    assert assert_no_partial_model_visible(tmp_path / "nas", b) == len(b.root.models)
    j = Journal(journal)  # every record after the torn one is readable: the tail was cut, not glued
    assert j.step_done("stage") and len([i for i in j.items("stage") if i["item"].startswith("model ")]) == 3
    assert b"/nowhere" not in journal.read_bytes()
