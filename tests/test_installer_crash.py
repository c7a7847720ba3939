"""kill -9 the real installer mid-verify, mid-load, mid-stage and mid-apply; the rerun must end like a clean run.

Each case runs the ``installer`` console script in a subprocess with ``EDGEBUNDLE_FAULTPOINT``
set (edgebundle/faults.py: by journal record, by 1 MiB piece written, by object applied), checks
it died by SIGKILL, checks what is visible at that moment (no partial model under its final name,
no partial k3s manifest file), reruns without the fault and compares with an uninterrupted run
(module-scoped references): the registry's storage, the NAS tree, the cluster's objects (specs,
not server-stamped fields) and the revision the cluster runs.
"""

from __future__ import annotations

import os

import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgebundle.root import KIND_DIRS
from installer.destinations.nas import MARKER
from installer.diff import VOLATILE_ANNOTATIONS
from edgebundle.faults import FAULTPOINTS
from installer.render import MANAGED_BY, MANAGER
from installer.revisions import RevisionStore
from installer.state import Journal, StateDir
from tests.fixtures.bundles import (INSTALLER, BuiltBundle, frozen_installer, nas_snapshot, registry_snapshot,
                                    resume, run_installer)
from tests.fixtures.kube import DEFAULT_NODES, Cluster, Failure, control_plane, kube_cluster, kube_nodes  # noqa: F401
from tests.fixtures.registry import RegistryProcess, free_port
from tests.test_plan_apply import NS, RagBundles, _loads_llm_v11, rag  # noqa: F401
from tests.test_plan_apply import write_site as write_rag_site

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
    """Upload sessions the registry holds open. os.walk, not rglob: the registry may finish or
    drop another of the parallel uploads while we look, and a vanished directory is no error."""
    repos = reg.data_dir / "docker" / "registry" / "v2" / "repositories"
    return sum(len(dirs) for top, dirs, _ in os.walk(repos) if os.path.basename(top) == "_uploads")


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
    "verify.signatures.kept@1",  # verification: trust files half kept
    "journal.appended@1",  # verification recorded, nothing pushed
    "journal.appended@5",
    "load.blob.chunk@1",  # the first piece of the first blob
    "load.manifest.pushed@2",
    "load.image.journaled@1",
    "step.journaled@1",  # load recorded as done
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
    """An uninterrupted stage, looked at mid-way: no partial version is ever visible.

    The installer stops itself (SIGSTOP) once the second model is complete in its hidden partial
    dir; the look happens here, in the test's own thread, and must find the staging window open:
    both models' files written, hidden, and no version visible yet (the versions of a bundle are
    committed together, once all are proven: installer/destinations/nas.py).
    """
    b = bundle_factory(**STAGE_BUNDLE)
    d = tmp_path_factory.mktemp("stage-reference")
    site = b.site(d, "127.0.0.1:9")
    nas = d / "nas"
    proc = frozen_installer("stage", b.path, "--site", site, at="stage.marker.written@2")
    try:
        visible = assert_no_partial_model_visible(nas, b)
        hidden = [p for p in nas.rglob("*") if p.is_file() and ".partial-" in p.parent.as_posix()]
    finally:
        returncode, output, _ = resume(proc)
    assert returncode == 0, output
    kinds = {p.relative_to(nas).parts[0] for p in hidden}
    assert visible == 0 and kinds == {"llm", "embeddings"}, \
        f"not inside the staging window: {visible} visible, hidden {hidden}"
    assert assert_no_partial_model_visible(nas, b) == len(b.root.models)
    return b, nas_snapshot(nas)


STAGE_POINTS = [
    "stage.file.chunk@2",  # inside the 2.9 MiB GGUF
    "stage.file.written@1",
    "stage.file.renamed@2",
    "stage.marker.written@1",
    "stage.version.renamed@1",
    "stage.version.journaled@2",
    "verify.done@1",
    "journal.appended@2",  # the first staged file recorded
    "journal.appended@6",
    "stage.file.chunk@1",
    "stage.file.written@4",
    "stage.file.journaled@1",
    "stage.version.renamed@3",  # the last model
    "step.journaled@1",
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


# -- apply ---------------------------------------------------------------------------------------
# ``installer install --yes`` (verify, load, stage, plan, approve, apply, health) in a subprocess
# against the real kube-apiserver (tests/cluster); the rerun is the same command. History is
# append-only, so a killed revision stays in it (as failed, "interrupted"): what must match an
# uninterrupted run is the cluster's objects and the revision the cluster runs.

#: (bundles installed in order, exit code of the last install): a first install, and an upgrade
#: whose new model never loads, so apply waits for health, fails and rolls back automatically.
SCENARIOS = {"fresh": 0, "rollback": 1}


def cluster_snapshot(cluster: Cluster) -> dict[str, Any]:
    """Every object the installer manages, without what the server or a revision number stamps."""
    out: dict[str, Any] = {}
    for obj in cluster.managed_objects():
        meta = obj.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY) != MANAGER or meta.get("ownerReferences"):
            continue
        obj = {k: v for k, v in obj.items() if k != "status"}
        if obj["kind"] == "Service":  # allocated anew each time the Service is created
            obj["spec"] = {k: v for k, v in obj["spec"].items() if k not in ("clusterIP", "clusterIPs")}
        if obj["kind"] == "PersistentVolume" and obj["spec"].get("claimRef"):
            obj["spec"] = {**obj["spec"], "claimRef": {k: v for k, v in obj["spec"]["claimRef"].items()
                                                       if k not in ("uid", "resourceVersion")}}
        obj["metadata"] = {k: v for k, v in meta.items() if k not in (
            "resourceVersion", "uid", "creationTimestamp", "managedFields", "generation", "annotations")}
        obj["metadata"]["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                                          if k not in VOLATILE_ANNOTATIONS}
        out[f"{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"] = obj
    return out


def running_revision(state: Path) -> dict[str, Any]:
    """What the cluster runs per the state dir: the deployed revision's content; nothing pending."""
    store = RevisionStore(StateDir(state))
    assert not [r["revision"] for r in store.all() if r["status"] == "pending"]
    cur = store.current()
    assert cur is not None
    return {k: cur.get(k) for k in ("status", "health", "bundle", "objects", "images", "models")} | {
        "rollbackOf": cur.get("rollbackOf") is not None}


def install(site: Path, b: BuiltBundle, faultpoint: str | None = None, timeout: float = 120) -> Any:
    """``installer install --yes``; a short ``timeout`` where health is meant to fail."""
    return run_installer("install", b.path, "--site", site, "--yes", "--poll-interval", "0.05",
                         "--timeout", str(timeout), faultpoint=faultpoint, env={"EDGEBUNDLE_OPERATOR": "ci"})


@dataclass(frozen=True)
class ApplyCase:
    """One site and cluster, prepared up to the install that a case interrupts."""

    site: Path
    state: Path
    server: Cluster
    last: BuiltBundle
    timeout: float  # for the install a case interrupts: short when its health is meant to fail


@contextmanager
def apply_case(scenario: str, rag: RagBundles, tmp: Path, cluster: Cluster, **spec: Any) -> Iterator[ApplyCase]:
    cluster.reset(list(DEFAULT_NODES))
    cluster.plane.write_kubeconfig(tmp / "kubeconfig")
    server = cluster
    try:
        site = write_rag_site(tmp, rag, **spec)
        last, timeout = rag.v1, 120.0
        if scenario == "rollback":
            r = install(site, rag.v1)
            assert r.returncode == 0, r.stdout + r.stderr
            server.fail_when(_loads_llm_v11)
            last, timeout = rag.v2, 2.0
        yield ApplyCase(site, tmp / "state", server, last, timeout)
    finally:
        cluster.heal()


@pytest.fixture(scope="module")
def module_cluster(control_plane: Any) -> Iterator[Cluster]:
    cluster = Cluster(*control_plane)
    yield cluster
    cluster.api.close()


@pytest.fixture(scope="module")
def apply_reference(rag: RagBundles, tmp_path_factory: pytest.TempPathFactory,
                    module_cluster: Cluster) -> dict[str, tuple[Any, Any]]:
    """scenario -> (cluster snapshot, running revision) of an uninterrupted install."""
    out = {}
    for scenario, code in SCENARIOS.items():
        tmp = tmp_path_factory.mktemp(f"apply-reference-{scenario}")
        with apply_case(scenario, rag, tmp, module_cluster) as case:
            r = install(case.site, case.last, timeout=case.timeout)
            assert r.returncode == code, r.stdout + r.stderr
            out[scenario] = (cluster_snapshot(case.server), running_revision(case.state))
    assert out["fresh"][0] == out["rollback"][0]  # the rollback restores exactly what v1 made
    return out


#: Kills past the last write to the cluster (all objects live, revision not recorded) are the
#: cases a naive "nothing to change" rerun would leave unrecorded: installer/plan.py's
#: ``_unsettled`` makes the rerun apply again, wait for health and record the revision.
APPLY_POINTS = [
    ("fresh", "apply.revision.pending@1"),
    ("fresh", "apply.object.applied@1"),  # the Namespace only
    ("fresh", "apply.object.applied@7"),  # mid server-side-apply sequence
    ("fresh", "apply.object.applied@14"),  # all applied, call not returned
    ("fresh", "apply.objects.applied@1"),  # health wait about to begin
    ("fresh", "apply.healthy@1"),  # healthy, not yet recorded as deployed
    ("rollback", "apply.objects.applied@1"),  # failing upgrade applied
    ("rollback", "apply.revision.failed@1"),  # failed, rollback not started
    ("rollback", "apply.revision.pending@2"),  # rollback recorded, not applied
    ("rollback", "apply.object.applied@2"),  # mid rollback: its one object re-applied
    ("rollback", "apply.healthy@1"),  # rolled back and healthy, not yet recorded
]


@pytest.mark.parametrize(("scenario", "point"), APPLY_POINTS)
def test_kill_mid_apply_then_rerun(scenario: str, point: str, rag: RagBundles, apply_reference: Any,
                                   tmp_path: Path, module_cluster: Cluster) -> None:
    assert point.split("@")[0] in FAULTPOINTS
    with apply_case(scenario, rag, tmp_path, module_cluster) as case:
        killed = install(case.site, case.last, faultpoint=point, timeout=case.timeout)
        assert killed.returncode == -signal.SIGKILL, f"{point} never fired: {killed.stdout}{killed.stderr}"
        r = install(case.site, case.last, timeout=case.timeout)
        assert r.returncode == SCENARIOS[scenario], r.stdout + r.stderr
        assert (cluster_snapshot(case.server), running_revision(case.state)) == apply_reference[scenario]


def test_kill_during_health_wait(rag: RagBundles, apply_reference: Any, tmp_path: Path,
                                module_cluster: Cluster) -> None:
    """kill -9 from outside while apply waits for a workload that is not ready yet."""
    with apply_case("fresh", rag, tmp_path, module_cluster) as case:
        slow = case.server.fail_pods(NS, "chat-ui-", Failure("ContainerCreating"))
        proc = subprocess.Popen([INSTALLER, "install", str(case.last.path), "--site", str(case.site), "--yes",
                                 "--operator", "ci", "--poll-interval", "0.05", "--timeout", "60"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # "waiting for Deployment/.../chat-ui: ..." comes from the health wait
                if "waiting for" in line and "chat-ui" in line:
                    break
            else:
                pytest.fail("the health wait never started")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert [r["status"] for r in RevisionStore(StateDir(case.state)).all()] == ["pending"]
        case.server.heal(slow)
        r = install(case.site, case.last)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (cluster_snapshot(case.server), running_revision(case.state)) == apply_reference["fresh"]


# -- a k3s manifests directory -------------------------------------------------------------------

K3S_POINTS = ["apply.manifest.chunk@1", "apply.manifest.chunk@3", "apply.revision.pending@1",
              "apply.healthy@1"]


def k3s_dir_state(d: Path) -> dict[str, str]:
    """The manifests dir as k3s sees it: every file (hidden temp files too, so leftovers count)."""
    return {p.name: p.read_text() for p in d.iterdir()}


@pytest.fixture(scope="module")
def k3s_reference(rag: RagBundles, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Any]:
    tmp = tmp_path_factory.mktemp("k3s-reference")
    (tmp / "k3s").mkdir()
    site = write_rag_site(tmp, rag, cluster={"manifestsDir": str(tmp / "k3s")})
    r = install(site, rag.v1)
    assert r.returncode == 0, r.stdout + r.stderr
    return k3s_dir_state(tmp / "k3s"), running_revision(tmp / "state")


def strip_revision(files: dict[str, str]) -> dict[str, str]:
    """The file without the revision number it records (a killed revision used up a number)."""
    return {k: re.sub(r"(revision |edgebundle.dev/revision: ')\d+", r"\1N", v) for k, v in files.items()}


@pytest.mark.parametrize("point", K3S_POINTS)
def test_kill_mid_k3s_write_then_rerun(point: str, rag: RagBundles, k3s_reference: Any, tmp_path: Path) -> None:
    k3s = tmp_path / "k3s"
    k3s.mkdir()
    site = write_rag_site(tmp_path, rag, cluster={"manifestsDir": str(k3s)})
    killed = install(site, rag.v1, faultpoint=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} never fired: {killed.stderr}"
    visible = [p for p in k3s.iterdir() if p.suffix in (".yaml", ".yml", ".json")]
    if point.startswith("apply.manifest.chunk"):
        assert not visible, "a manifest file appeared before it was complete"
        [tmp] = k3s.iterdir()
        assert tmp.name.startswith(".edgebundle-plant-7.yaml.tmp-") and tmp.stat().st_size > 0
    r = install(site, rag.v1)
    assert r.returncode == 0, r.stdout + r.stderr
    files, running = k3s_reference
    assert strip_revision(k3s_dir_state(k3s)) == strip_revision(files)  # no temp file left over
    assert running_revision(tmp_path / "state") == running
