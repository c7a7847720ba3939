"""A bundle's model versions become visible together or not at all, across a kill -9 mid-commit.

The real ``installer`` runs in a subprocess and SIGKILLs itself at a fault point of the commit
(installer/destinations/nas.py): after the commit record is written, or between two version
renames. What is visible right after the kill is checked (a prefix of the bundle's versions, the
rest whole in hidden dirs, the record on disk), then the next ``status`` or ``stage`` must end
with every version visible (rolled forward, identical to an uninterrupted stage) or, when a
waiting version can no longer be proven, none (rolled back). Corrupt, climbing and linked commit
records are refused by name in tests/test_hostile_site.py (family ``commit``), without a kill.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from edgebundle.root import KIND_DIRS
from tests.fixtures.bundles import BuiltBundle, nas_snapshot, run_installer

pytestmark = [pytest.mark.timeout(300)]

#: The default three models (a GGUF, an embedding dir with a sub-directory, an index).
STAGE_BUNDLE: dict[str, Any] = {"images": ()}
RECORD = "stage-commit.json"


@pytest.fixture(scope="module")
def reference(bundle_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[BuiltBundle, dict[str, str]]:
    """An uninterrupted stage: what every recovered run must end as."""
    b = bundle_factory(**STAGE_BUNDLE)
    d = tmp_path_factory.mktemp("commit-reference")
    r = run_installer("stage", b.path, "--site", b.site(d, "127.0.0.1:9"))
    assert r.returncode == 0, r.stderr
    return b, nas_snapshot(d / "nas")


def visible(nas: Path) -> list[str]:
    """kind/name/version of every version under its final name (hidden dirs start with a dot)."""
    return sorted(f"{k.name}/{n.name}/{v.name}" for k in nas.iterdir() if k.is_dir()
                  for n in k.iterdir() for v in n.iterdir() if not v.name.startswith("."))


def hidden(nas: Path) -> list[str]:
    return sorted(f"{k.name}/{n.name}/{v.name}" for k in nas.iterdir() if k.is_dir()
                  for n in k.iterdir() for v in n.iterdir() if v.name.startswith("."))


def order(b: BuiltBundle) -> list[str]:
    """The commit order: the bundle's models in signed order (hand-made names, not the product's)."""
    return [f"{KIND_DIRS[m.kind]}/{m.name}/{m.version}" for m in b.root.models]


def kill_in_commit(b: BuiltBundle, tmp_path: Path, point: str) -> tuple[Path, Path]:
    site = b.site(tmp_path, "127.0.0.1:9")
    killed = run_installer("stage", b.path, "--site", site, faultpoint=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} never fired: {killed.stderr}"
    return site, tmp_path / "nas"


@pytest.mark.parametrize("point,shown,rerun", [
    ("stage.commit.recorded@1", 0, "status"),  # the commit point passed, nothing renamed yet
    ("stage.version.renamed@1", 1, "status"),  # between the first two renames
    ("stage.version.renamed@1", 1, "stage"),
    ("stage.version.journaled@1", 1, "stage"),
    ("stage.version.renamed@2", 2, "status"),  # between the last two
])
def test_kill_between_renames_then_rerun_rolls_forward(point: str, shown: int, rerun: str,
                                                        reference: tuple[BuiltBundle, dict[str, str]],
                                                        tmp_path: Path) -> None:
    b, ref = reference
    assert len(b.root.models) == 3
    site, nas = kill_in_commit(b, tmp_path, point)
    # Killed after the commit point: a prefix is visible, the rest waits whole and hidden.
    assert visible(nas) == sorted(order(b)[:shown])
    assert len(hidden(nas)) == 3 - shown
    record = json.loads((tmp_path / "state" / RECORD).read_text())
    assert record["state"] == "commit" and len(record["versions"]) == 3
    args = ["status", "--site", site] if rerun == "status" else ["stage", b.path, "--site", site]
    r = run_installer(*args)
    assert r.returncode == 0, r.stderr
    assert "interrupted stage" in r.stdout + r.stderr and "completed" in r.stdout + r.stderr
    assert visible(nas) == sorted(order(b)) and hidden(nas) == []
    assert not (tmp_path / "state" / RECORD).exists()
    assert nas_snapshot(nas) == ref
    again = run_installer("stage", b.path, "--site", site)
    assert again.returncode == 0 and "0 model version(s) staged, 3 already in place" in again.stdout
    assert nas_snapshot(nas) == ref


def _tamper_waiting(nas: Path) -> Path:
    """Overwrite the first byte of a file in a waiting (hidden) version, size unchanged."""
    waiting = nas / hidden(nas)[0]
    victim = next(p for p in sorted(waiting.rglob("*")) if p.is_file() and p.name != ".edgebundle.json")
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    return victim


def test_waiting_version_tampered_rolls_back_then_stage_restores(reference: tuple[BuiltBundle, dict[str, str]],
                                                                tmp_path: Path) -> None:
    b, ref = reference
    site, nas = kill_in_commit(b, tmp_path, "stage.version.renamed@1")
    victim = _tamper_waiting(nas)
    r = run_installer("status", "--site", site)
    assert r.returncode == 0, r.stderr
    assert "rolled back" in r.stdout and "changed while it waited" in r.stdout and victim.parent.name in r.stdout
    assert visible(nas) == [] and len(hidden(nas)) == 3, "none of the bundle may stay visible"
    assert not (tmp_path / "state" / RECORD).exists()
    again = run_installer("stage", b.path, "--site", site)
    assert again.returncode == 0, again.stderr
    assert nas_snapshot(nas) == ref  # the tampered file was written again from the bundle


def test_kill_during_the_undo_is_undone_again(reference: tuple[BuiltBundle, dict[str, str]], tmp_path: Path) -> None:
    b, ref = reference
    site, nas = kill_in_commit(b, tmp_path, "stage.version.renamed@2")
    _tamper_waiting(nas)
    killed = run_installer("status", "--site", site, faultpoint="stage.commit.undone@1")
    assert killed.returncode == -signal.SIGKILL
    assert len(visible(nas)) == 1  # one of the two renamed back so far
    assert json.loads((tmp_path / "state" / RECORD).read_text())["state"] == "abort"
    r = run_installer("status", "--site", site)
    assert r.returncode == 0 and "rolled back" in r.stdout, r.stdout + r.stderr
    assert visible(nas) == []
    assert run_installer("stage", b.path, "--site", site).returncode == 0
    assert nas_snapshot(nas) == ref


def test_signed_root_gone_from_state_rolls_back(reference: tuple[BuiltBundle, dict[str, str]], tmp_path: Path) -> None:
    """Without the signed root the waiting versions cannot be proven again: none is shown."""
    b, ref = reference
    site, nas = kill_in_commit(b, tmp_path, "stage.version.renamed@1")
    kept = tmp_path / "state" / "bundles" / b.root_digest.split(":")[1] / "root.json"
    kept.write_bytes(kept.read_bytes() + b" ")  # no longer the signed root's bytes
    r = run_installer("status", "--site", site)
    assert r.returncode == 0 and "is not in the state directory" in r.stdout, r.stdout + r.stderr
    assert visible(nas) == []
