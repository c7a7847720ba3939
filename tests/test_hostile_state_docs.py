"""Hostile state documents read by approval, validation and the k3s target (issue 14, round 3).

Approvals (``approvals/<plan>.json``) and kept validation records (``validations/<root>.json``)
are read and written by descriptor below the state directory: a planted link or FIFO is refused
naming its path (never followed, never blocked on). The k3s manifests file the installer reads
back is parsed as bounded YAML: an alias bomb or a deep nesting planted there is refused by name.
Every case asserts the refusal, its message, and that the victim directory outside the site is
unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgebundle.errors import EdgebundleError
from edgebundle.signing import generate_keypair
from installer.approval import approval_on_file, check_approval, record_approval
from installer.destinations.cluster import K3sDirTarget
from installer.state import StateDir
from installer.validate import require_validation
from tests.test_hostile import tree_state

pytestmark = pytest.mark.timeout(60)
PLAN_HASH = "sha256:" + "cd" * 32
ROOT = "sha256:" + "ab" * 32
BUNDLE = {"name": "rag-edge", "version": "1.0.0", "root": ROOT}


@pytest.fixture
def site_dirs(tmp_path: Path) -> tuple[StateDir, Path]:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret.json").write_text('{"planted": true}\n')
    return StateDir(state), victim


def plan_stub() -> Any:
    """What check_approval reads of a plan: its hash, site, cluster and bundle."""
    return SimpleNamespace(hash=PLAN_HASH, bundle=dict(BUNDLE),
                           doc={"site": "test-site", "cluster": {"kind": "k3s-manifests-dir", "path": "/m"}})


def approval_doc() -> dict[str, Any]:
    return {"_type": "edgebundle.approval", "planHash": PLAN_HASH, "operator": "alice",
            "approvedAt": "2026-01-01T00:00:00Z", "expiresAt": "2099-01-01T00:00:00Z", "bundle": dict(BUNDLE),
            "site": "test-site", "cluster": {"kind": "k3s-manifests-dir", "path": "/m"}, "revision": 1,
            "summary": {"create": 1}}


def refused(call: Any, expect: str, victim: Path) -> str:
    before = tree_state(victim)
    started = time.monotonic()
    with pytest.raises(EdgebundleError) as info:
        call()
    assert time.monotonic() - started < 10, "it blocked"
    message = info.value.message
    assert expect in message, message
    assert tree_state(victim) == before, "something outside the state dir changed"
    return message


# -- approvals -------------------------------------------------------------------------------

def test_control_an_approval_on_file_is_found(site_dirs: tuple[StateDir, Path]) -> None:
    state, _ = site_dirs
    record_approval(state, approval_doc())
    assert check_approval(state, plan_stub())["operator"] == "alice"
    assert approval_on_file(state, PLAN_HASH)["operator"] == "alice"  # type: ignore[index]


@pytest.mark.parametrize("how", ["approvals dir is a link", "approval is a link", "approval is a FIFO"])
def test_a_planted_approval_is_refused_naming_it(how: str, site_dirs: tuple[StateDir, Path]) -> None:
    state, victim = site_dirs
    genuine = StateDir(victim / "other-state")
    record_approval(genuine, approval_doc())  # a well-formed approval, elsewhere
    approvals = state.path / "approvals"
    name = f"{PLAN_HASH.split(':')[1]}.json"
    if how == "approvals dir is a link":
        approvals.symlink_to(genuine.path / "approvals")
        expect = f"{approvals} is a symbolic link; refusing to follow it"
    elif how == "approval is a link":
        approvals.mkdir()
        (approvals / name).symlink_to(genuine.path / "approvals" / name)
        expect = f"{approvals / name} is a symbolic link, expected a regular file"
    else:
        approvals.mkdir()
        os.mkfifo(approvals / name)
        expect = f"{approvals / name} is a FIFO, expected a regular file"
    refused(lambda: check_approval(state, plan_stub()), expect, victim)
    assert approval_on_file(state, PLAN_HASH) is None  # display: shown as none, not followed


def test_recording_an_approval_never_writes_through_a_link(site_dirs: tuple[StateDir, Path]) -> None:
    state, victim = site_dirs
    (state.path / "approvals").symlink_to(victim)
    refused(lambda: record_approval(state, approval_doc()), "approvals is a symbolic link", victim)
    assert sorted(p.name for p in victim.iterdir()) == ["secret.json"]


# -- validation records ------------------------------------------------------------------------

@pytest.fixture
def validating_site(site_dirs: tuple[StateDir, Path], tmp_path: Path) -> Any:
    _, pub = generate_keypair("staging", tmp_path / "keys")
    return SimpleNamespace(name="test-site", require_validation_keys=[pub])


@pytest.mark.parametrize("how", ["validations dir is a link", "kept record is a link", "kept record is a FIFO",
                                 "kept record is a directory"])
def test_a_planted_kept_validation_record_is_refused_naming_it(how: str, site_dirs: tuple[StateDir, Path],
                                                               validating_site: Any) -> None:
    state, victim = site_dirs
    d = state.path / "validations"
    kept = d / f"{ROOT.split(':')[1]}.json"
    if how == "validations dir is a link":
        d.symlink_to(victim)
        expect = f"{d} is a symbolic link; refusing to follow it"
    else:
        d.mkdir()
        if how == "kept record is a link":
            kept.symlink_to(victim / "secret.json")
            expect = f"{kept} is a symbolic link, expected a regular file"
        elif how == "kept record is a FIFO":
            os.mkfifo(kept)
            expect = f"{kept} is a FIFO, expected a regular file"
        else:
            kept.mkdir()
            expect = f"{kept} is a directory, expected a regular file"
    refused(lambda: require_validation(validating_site, state, BUNDLE), expect, victim)


@pytest.mark.parametrize("how,expect", [("fifo", "is a FIFO, not a regular file; refused"),
                                        ("missing", "does not exist"),
                                        ("directory", "is a directory, not a regular file")])
def test_a_hostile_validation_file_argument_is_refused(how: str, expect: str, site_dirs: tuple[StateDir, Path],
                                                       validating_site: Any, tmp_path: Path) -> None:
    state, victim = site_dirs
    given = tmp_path / "record.json"
    if how == "fifo":
        os.mkfifo(given)
    elif how == "directory":
        given.mkdir()
    message = refused(lambda: require_validation(validating_site, state, BUNDLE, given), expect, victim)
    assert str(given) in message
    assert not (state.path / "validations").exists(), "nothing kept from a refused record"


# -- the k3s manifests file read back ------------------------------------------------------------

BOMB = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n".encode() for i in range(8))


@pytest.mark.parametrize("content,expect", [
    (BOMB, "expands to more than 200,000 YAML nodes"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nests deeper than 64 levels"),
    (b"kind: \xff\xfe\n", "is not UTF-8 text"),
    (b"x: &a 1\n" + b"".join(f"k{i}: *a\n".encode() for i in range(300)), "more than 256 YAML aliases"),
    (b"kind: [unclosed\n", "is not valid YAML"),
])
def test_a_planted_k3s_manifests_file_is_parsed_bounded(content: bytes, expect: str, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    target = K3sDirTarget(manifests, "test-site")
    target.file.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(EdgebundleError) as info:
        target.observe([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}}])
    assert time.monotonic() - started < 10
    assert expect in info.value.message and f"k3s manifests file {target.file}" in info.value.message
    assert "move it away" in (info.value.hint or "")


def test_control_the_k3s_file_edgebundle_writes_reads_back(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    target = K3sDirTarget(manifests, "test-site")
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}, "data": {"k": "v"}}
    target.apply_revision([obj], set(), [], 1, lambda s: None)
    live = target.observe([obj]).live
    assert json.loads(json.dumps(list(live.values())[0]))["data"] == {"k": "v"}
