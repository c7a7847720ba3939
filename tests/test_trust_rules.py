"""The trust core's rules pinned one by one through the installer verbs, so that a bug in any fails a test.

Drift and plan checks before apply, approval expiry, the verifier's completeness and content steps,
the NAS stage's refusal to overwrite a version and its resume over leftovers. Small real bundles
from tests/test_trust_core.py; no registry needed. (Root parsing and version order: test_trust_parsing.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgebundle import faults
from tests.fixtures.bundles import INSTALLER
from tests.fixtures.digests import sha256_file
from tests.test_trust_core import EXIT_ERROR, EXIT_VERIFY, Bundles, bundles, install_and_plan, installer, tree  # noqa: F401

pytestmark = pytest.mark.timeout(120)

# --- plans: drift, the target, edits, expiry --------------------------------------------------------

def _k3s_file(d: Path) -> Path:
    [f] = list((d / "k3s").iterdir())
    return f


def test_apply_refuses_a_plan_the_cluster_drifted_from(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    d = tmp_path / "s"
    site = w.site(d)
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    install_and_plan(site, bundles.v100, first)
    assert installer("approve", first, "--operator", "ops", "--yes").exit_code == 0
    (d / "k3s" / "edgebundle-plant-1.yaml").write_text("# written by hand after the plan\n")
    r = installer("apply", first, "--site", site)
    assert r.exit_code == EXIT_ERROR and "file:edgebundle-plant-1.yaml appeared" in r.output, r.output
    (d / "k3s" / "edgebundle-plant-1.yaml").unlink()
    assert installer("apply", first, "--site", site).exit_code == 0
    applied = _k3s_file(d).read_bytes()

    install_and_plan(site, bundles.v101, second)  # 1.0.1 changes only the bundle: a new revision
    assert installer("approve", second, "--operator", "ops", "--yes").exit_code == 0
    _k3s_file(d).write_bytes(applied + b"\n# edited by hand\n")
    r = installer("apply", second, "--site", site)
    assert r.exit_code == EXIT_ERROR and "drifted" in r.output and "file:edgebundle-plant-1.yaml changed" in r.output, r.output
    _k3s_file(d).unlink()
    r = installer("apply", second, "--site", site)
    assert r.exit_code == EXIT_ERROR and "file:edgebundle-plant-1.yaml disappeared" in r.output, r.output
    (d / "k3s" / "edgebundle-plant-1.yaml").write_bytes(applied)  # put back exactly: no drift any more
    r = installer("apply", second, "--site", site)
    assert r.exit_code == 0, r.output


def test_apply_refuses_a_plan_overtaken_by_another_revision(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    d = tmp_path / "s"
    site = w.site(d)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    install_and_plan(site, bundles.v100, a)
    shutil.copyfile(a, b)
    for p in (a, b):
        assert installer("approve", p, "--operator", "ops", "--yes").exit_code == 0
    assert installer("apply", a, "--site", site).exit_code == 0
    r = installer("apply", b, "--site", site)
    assert r.exit_code == EXIT_ERROR and "revision 1 was recorded since" in r.output, r.output


def test_apply_refuses_a_plan_for_another_site_or_cluster(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    d = tmp_path / "s"
    site = w.site(d)
    plan = tmp_path / "plan.json"
    install_and_plan(site, bundles.v100, plan)
    assert installer("approve", plan, "--operator", "ops", "--yes").exit_code == 0
    renamed = w.site(tmp_path / "renamed", name="plant-9", state=d / "state", nas=d / "nas", k3s=d / "k3s")
    r = installer("apply", plan, "--site", renamed)
    assert r.exit_code == EXIT_ERROR and "plan is for site 'plant-1'" in r.output, r.output
    moved = w.site(tmp_path / "moved", state=d / "state", nas=d / "nas", k3s=tmp_path / "other-k3s")
    r = installer("apply", plan, "--site", moved)
    assert r.exit_code == EXIT_ERROR and "plan was made against" in r.output, r.output
    assert tree(d / "k3s") == {} and tree(tmp_path / "other-k3s") == {}


def test_apply_refuses_an_edited_plan_and_an_expired_approval(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    d = tmp_path / "s"
    site = w.site(d)
    plan = tmp_path / "plan.json"
    install_and_plan(site, bundles.v100, plan)
    assert installer("approve", plan, "--operator", "ops", "--yes", "--ttl", "1s").exit_code == 0
    original = plan.read_text()
    doc = json.loads(original)
    doc["objects"][0]["object"]["data"] = {"a": "2"}
    plan.write_text(json.dumps(doc))
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR and "modified after it was made" in r.output, r.output
    for junk, why in (("[]", "is not an edgebundle plan"), ("{", f"plan {plan} is not valid JSON")):
        plan.write_text(junk)
        r = installer("apply", plan, "--site", site)
        assert r.exit_code == EXIT_ERROR and why in r.output and "Traceback" not in r.output, r.output
    plan.write_text(original)
    time.sleep(1.1)
    r = installer("apply", plan, "--site", site)
    assert r.exit_code == EXIT_ERROR and "expired at" in r.output, r.output
    assert tree(d / "k3s") == {}
    assert installer("approve", plan, "--operator", "ops", "--yes", "--ttl", "1h").exit_code == 0
    assert installer("apply", plan, "--site", site).exit_code == 0


# --- the verifier's completeness and content steps ------------------------------------------------

def _blob(bundle: Path, largest: bool = True) -> Path:
    blobs = sorted((bundle / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    return blobs[-1] if largest else blobs[0]


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "remove", "extra", "extra-blob", "oci-layout"])
def test_a_damaged_bundle_is_refused_naming_the_member(damage: str, bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    b = tmp_path / "b"
    shutil.copytree(bundles.v100, b)
    victim = _blob(b)
    name = victim.relative_to(b).as_posix()
    data = victim.read_bytes()
    if damage == "flip":
        victim.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        victim.write_bytes(data[:-1])
    elif damage == "extend":
        victim.write_bytes(data + b"\0")
    elif damage == "remove":
        victim.unlink()
    elif damage == "extra":
        name = "blobs/sha256/" + "0" * 64
        (b / name).write_bytes(b"smuggled")
    elif damage == "extra-blob":
        name = "index.json.bak"
        (b / name).write_bytes(b"{}")
    else:
        name = "oci-layout"
        (b / name).write_bytes(b'{"imageLayoutVersion":"9.9.9"}')
    site = w.site(tmp_path / "s")
    r = installer("verify", b, "--site", site)  # verify proves every member
    assert r.exit_code == EXIT_VERIFY, r.output
    assert name in r.stderr or name.split("/")[-1][:19] in r.stderr, r.stderr
    r = installer("stage", b, "--site", site)
    if damage == "oci-layout":
        # stage proves only the members it uses (docs/DESIGN.md: each byte where it is used) and
        # never reads oci-layout: it may stage, but only the signed model bytes.
        assert r.exit_code == 0, r.output
        assert sha256_file(tmp_path / "s" / "nas" / "indices/idx/1.0/index.bin") == \
            sha256_file(w.models / "idx" / "index.bin")
        return
    assert r.exit_code == EXIT_VERIFY, r.output
    assert name in r.stderr or name.split("/")[-1][:19] in r.stderr, r.stderr
    assert tree(tmp_path / "s" / "nas") == {}


def test_a_bundle_for_another_platform_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    site = bundles.world.site(tmp_path / "s")
    text = site.read_text().replace("compatible: tiny/x86_64", "compatible: tiny/aarch64")
    site.write_text(text)
    r = installer("verify", bundles.v100, "--site", site)
    assert r.exit_code == EXIT_VERIFY and "tiny/x86_64" in r.stderr and "tiny/aarch64" in r.stderr, r.output


# --- the NAS: a staged version is never overwritten -----------------------------------------------

def test_stage_refuses_to_overwrite_a_version_with_other_content(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    site = w.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    vdir = nas / "indices" / "idx" / "1.0"
    assert installer("stage", bundles.v100, "--site", site).exit_code == 0
    staged = tree(nas)

    # same content again: skipped, nothing written (with and without the marker)
    r = installer("stage", bundles.v101, "--site", site, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"][0]["skipped"] == 1, r.output
    (vdir / ".edgebundle.json").unlink()
    r = installer("stage", bundles.v101, "--site", site, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"][0]["skipped"] == 1, r.output
    assert not (vdir / ".edgebundle.json").exists(), "an existing version is never modified"
    # a file of that name that is not an edgebundle marker is no marker: the files are hashed (same: skipped)
    (vdir / ".edgebundle.json").write_text(json.dumps({"_type": "someone.else", "files": []}))
    r = installer("stage", bundles.v101, "--site", site, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["steps"][0]["skipped"] == 1, r.output
    (vdir / ".edgebundle.json").unlink()

    for change, why in (("flip", "index.bin has digest"), ("extra", "extra file"), ("missing", "lacks meta.json"),
                        ("marker", "index.bin has digest"), ("grown", "index.bin is")):
        case = tmp_path / change
        shutil.copytree(nas, case / "nas")
        cdir = case / "nas" / "indices" / "idx" / "1.0"
        if change == "flip":
            data = (cdir / "index.bin").read_bytes()
            (cdir / "index.bin").write_bytes(data[:7] + bytes([data[7] ^ 1]) + data[8:])
        elif change == "extra":
            (cdir / "notes.txt").write_text("x")
        elif change == "missing":
            (cdir / "meta.json").unlink()
        elif change == "marker":  # other bytes of the same size, and a marker that records them
            data = bytes(b ^ 0xFF for b in (cdir / "index.bin").read_bytes())
            (cdir / "index.bin").write_bytes(data)
            assert installer("stage", bundles.v100, "--site", w.site(case / "fresh")).exit_code == 0
            marker = json.loads((case / "fresh" / "nas" / "indices/idx/1.0/.edgebundle.json").read_text())
            [pin] = [f for f in marker["files"] if f["path"] == "index.bin"]
            pin["digest"] = "sha256:" + hashlib.sha256(data).hexdigest()
            (cdir / ".edgebundle.json").write_text(json.dumps(marker))
        else:  # the marker matches, the file has another size
            assert installer("stage", bundles.v100, "--site", w.site(case / "fresh")).exit_code == 0
            shutil.copyfile(case / "fresh" / "nas" / "indices/idx/1.0/.edgebundle.json", cdir / ".edgebundle.json")
            (cdir / "index.bin").write_bytes((cdir / "index.bin").read_bytes() + b"\0")
        before = tree(case / "nas")
        r = installer("stage", bundles.v101, "--site", w.site(case, nas=case / "nas"))
        assert r.exit_code == EXIT_ERROR and "refusing to overwrite" in r.stderr and why in r.stderr, (change, r.stderr)
        assert tree(case / "nas") == before, change
    assert {k: v for k, v in tree(nas).items() if not k.endswith(".edgebundle.json")} == \
        {k: v for k, v in staged.items() if not k.endswith(".edgebundle.json")}


def test_stage_refuses_a_symlinked_version_and_a_missing_root(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    site = w.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    (nas / "indices" / "idx").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (nas / "indices" / "idx" / "1.0").symlink_to(tmp_path / "elsewhere")
    r = installer("stage", bundles.v100, "--site", site)
    assert r.exit_code == EXIT_ERROR and "is not a directory" in r.stderr, r.output
    assert list((tmp_path / "elsewhere").iterdir()) == []
    r = installer("stage", bundles.v100, "--site", site, "--models-root", tmp_path / "unmounted")
    assert r.exit_code == 2 and not (tmp_path / "unmounted").exists(), r.output


def test_stage_resumes_over_leftovers_and_sweeps_them(bundles: Bundles, tmp_path: Path) -> None:
    """A killed run's partial dir (a temp file, a stray file) is reused and swept: the version holds exactly its files."""
    w = bundles.world
    site = w.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    ref = tmp_path / "ref"
    assert installer("stage", bundles.v100, "--site", w.site(ref)).exit_code == 0
    parent = nas / "indices" / "idx"
    # A real kill -9 after the first file reached the partial dir (its name is random and journaled).
    proc = subprocess.run([INSTALLER, "stage", str(bundles.v100), "--site", str(site)], capture_output=True,
                          text=True, env={**os.environ, faults.ENV: "stage.file.renamed@1"}, timeout=60)
    assert proc.returncode == -9, proc.stderr
    [partial] = [p for p in parent.iterdir() if p.name.startswith(".1.0.partial-")]
    assert not (parent / "1.0").exists()
    (partial / "sub").mkdir()
    (partial / ".edgebundle-tmp-index.bin").write_bytes(b"half")
    (partial / "stray.bin").write_bytes(b"left over")
    reused = partial.stat().st_ino
    r = installer("stage", bundles.v100, "--site", site)
    assert r.exit_code == 0, r.output
    assert tree(nas) == tree(ref / "nas")
    assert sorted(p.name for p in parent.iterdir()) == ["1.0"]
    assert (parent / "1.0").stat().st_ino == reused, "the killed run's partial dir was not resumed"
