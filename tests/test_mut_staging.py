"""Staging on the NAS, pinned where the mutation run of the trust core (docs/mutation-notes/staging.md)
found the end-to-end tests silent: the counts ``stage --json`` reports (done, skipped, bytes), the
reuse of files a killed run finished, file modes, all-or-nothing commit and its roll-forward, a full
NAS, and conflicts named all at once.

A "kill" here is in-process: the installer's ``stop`` fault mode sends SIGSTOP to itself, and the
test turns that signal into an exception that unwinds the stage (no later line of the stage runs).
Expected sizes are the input files' sizes on disk; digests are ``hashlib``'s.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgebundle import faults
from tests.fixtures.digests import sha256_file
from tests.test_trust_core import (EXIT_ERROR, EXIT_VERIFY, Bundles, bad_layer, bundles, hidden_files, installer, tree,  # noqa: F401
                                   two_models, visible_versions)

pytestmark = pytest.mark.timeout(120)

IDX = ("index.bin", "meta.json")
VEC = ("vectors.bin", "config.json")


class Killed(BaseException):
    """The stage died at a fault point (raised in place of SIGSTOP)."""


def sizes(d: Path, names: tuple[str, ...]) -> int:
    return sum((d / n).stat().st_size for n in names)


def inputs(b: Bundles) -> tuple[Path, Path]:
    return b.world.models / "idx", b.world.base / "models" / "vec"


def stage_json(bundle: Path, site: Path) -> dict[str, Any]:
    r = installer("stage", bundle, "--site", site, "--json")
    assert r.exit_code == 0, r.output
    [step] = json.loads(r.stdout)["steps"]
    assert step["step"] == "stage"
    return step  # type: ignore[no-any-return]


def at_fault(monkeypatch: pytest.MonkeyPatch, point: str, action: Callable[[], None] | None = None) -> None:
    """At ``point``, run ``action`` (then go on), or die there when there is none."""
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == os.getpid() and sig == signal.SIGSTOP:
            if action is None:
                raise Killed(point)
            action()
            return
        real_kill(pid, sig)

    monkeypatch.setenv(faults.ENV, f"{point}:stop")
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setattr(os, "kill", kill)


def die_at(monkeypatch: pytest.MonkeyPatch, point: str, bundle: Path, site: Path) -> None:
    """Run ``stage`` and let it die at ``point``."""
    at_fault(monkeypatch, point)
    with pytest.raises(Killed):
        installer("stage", bundle, "--site", site)
    monkeypatch.undo()


def hidden_dir(parent: Path, version: str) -> Path:
    """The one hidden partial dir of ``version`` under ``parent``."""
    [d] = [p for p in parent.iterdir() if p.name.startswith(f".{version}.partial-")]
    return d


def v100_killed_at(bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   point: str) -> tuple[Path, Path, Path]:
    """Stage tiny 1.0.0 and let it die at ``point``: (the model's inputs, the site file, idx's NAS dir)."""
    site = bundles.world.site(tmp_path / "s")
    die_at(monkeypatch, point, bundles.v100, site)
    return inputs(bundles)[0], site, tmp_path / "s" / "nas" / "indices" / "idx"


def test_stage_json_counts_staged_and_present_versions(bundles: Bundles, two_models: tuple[Path, Any],
                                                       tmp_path: Path) -> None:
    b, _ = two_models
    idx, vec = inputs(bundles)
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    # 1.0.0 holds idx 1.0 only
    step = stage_json(bundles.v100, site)
    assert (step["done"], step["skipped"], step["bytes"]) == (1, 0, sizes(idx, IDX))
    assert step["target"] == str(nas)
    # 2.0.0 adds vec 2.0: idx is present (skipped, nothing written), vec is staged
    step = stage_json(b, site)
    assert (step["done"], step["skipped"], step["bytes"]) == (1, 1, sizes(vec, VEC))
    assert step["details"] == [
        {"model": "idx 1.0", "path": str(nas / "indices/idx/1.0"), "action": "present"},
        {"model": "vec 2.0", "path": str(nas / "indices/vec/2.0"), "action": "staged"}]
    step = stage_json(b, site)
    assert (step["done"], step["skipped"], step["bytes"]) == (0, 2, 0)
    assert [d["action"] for d in step["details"]] == ["present", "present"]


def test_stage_json_counts_two_new_versions(bundles: Bundles, two_models: tuple[Path, Any], tmp_path: Path) -> None:
    b, expected = two_models
    idx, vec = inputs(bundles)
    step = stage_json(b, bundles.world.site(tmp_path / "s"))
    assert (step["done"], step["skipped"], step["bytes"]) == (2, 0, sizes(idx, IDX) + sizes(vec, VEC))
    assert visible_versions(tmp_path / "s" / "nas") == expected


def test_staged_files_have_mode_0644_whatever_the_source(bundles: Bundles, two_models: tuple[Path, Any],
                                                         tmp_path: Path) -> None:
    b, _ = two_models
    old = os.umask(0o022)
    try:
        stage_json(b, bundles.world.site(tmp_path / "s"))
    finally:
        os.umask(old)
    nas = tmp_path / "s" / "nas"
    modes = {p.relative_to(nas).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in nas.rglob("*") if p.is_file()}
    assert len(modes) == 6 and set(modes.values()) == {0o644}, modes


def test_stage_resume_reuses_a_finished_file_and_counts_only_new_bytes(
        bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the first file was finished and journaled: the rerun keeps that file (same inode)
    and reports only the bytes it wrote itself."""
    idx, site, parent = v100_killed_at(bundles, tmp_path, monkeypatch, "stage.file.journaled@1")
    partial = hidden_dir(parent, "1.0")
    [done] = [p for p in partial.iterdir() if p.name in IDX]
    inode, size = done.stat().st_ino, done.stat().st_size
    step = stage_json(bundles.v100, site)
    assert (step["done"], step["skipped"]) == (1, 0)
    assert step["bytes"] == sizes(idx, IDX) - size
    final = parent / "1.0" / done.name
    assert final.stat().st_ino == inode, "the finished file was written again"
    assert {n: sha256_file(parent / "1.0" / n) for n in IDX} == {n: sha256_file(idx / n) for n in IDX}


def test_stage_resume_rewrites_a_finished_file_whose_bytes_changed(
        bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finished file in the hidden dir was altered after the kill (same size): it is not trusted."""
    idx, site, parent = v100_killed_at(bundles, tmp_path, monkeypatch, "stage.file.journaled@1")
    partial = hidden_dir(parent, "1.0")
    [done] = [p for p in partial.iterdir() if p.name in IDX]
    data = bytearray(done.read_bytes())
    data[len(data) // 2] ^= 0x40
    done.write_bytes(bytes(data))
    step = stage_json(bundles.v100, site)
    assert step["bytes"] == sizes(idx, IDX), "the altered file must be written again"
    assert {n: sha256_file(parent / "1.0" / n) for n in IDX} == {n: sha256_file(idx / n) for n in IDX}
    assert sorted(p.name for p in parent.iterdir()) == ["1.0"]


def test_stage_resume_rewrites_a_file_killed_before_it_was_journaled(
        bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renamed into the hidden dir but not journaled: the rerun writes it again (it is not counted as done)."""
    idx, site, parent = v100_killed_at(bundles, tmp_path, monkeypatch, "stage.file.renamed@1")
    step = stage_json(bundles.v100, site)
    assert step["bytes"] == sizes(idx, IDX)
    assert {n: sha256_file(parent / "1.0" / n) for n in IDX} == {n: sha256_file(idx / n) for n in IDX}


def test_stage_killed_inside_the_commit_is_rolled_forward(
        bundles: Bundles, two_models: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b, expected = two_models
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    die_at(monkeypatch, "stage.version.renamed@1", b, site)
    assert visible_versions(nas) == {"indices/idx/1.0": expected["indices/idx/1.0"]}
    assert {h.split("/")[2].split(".partial-")[0] for h in hidden_files(nas)} == {".2.0"}
    step = stage_json(b, site)  # the commit is finished first: both versions are then present
    assert (step["done"], step["skipped"], step["bytes"]) == (0, 2, 0)
    assert visible_versions(nas) == expected and hidden_files(nas) == set()
    note = step["details"][0]["note"]  # the operator is told what the rerun finished
    assert note.startswith("an interrupted stage of sha256:"), step["details"]
    assert note.endswith(" was completed: indices/idx/1.0, indices/vec/2.0 now visible together"), note
    assert [d.get("action") for d in step["details"][1:]] == ["present", "present"]


def test_stage_roll_forward_ignores_a_partial_dir_that_is_not_whole(
        bundles: Bundles, two_models: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the kill and the rerun a file vanished from the waiting hidden dir: it is not renamed
    into place as it is; the version is staged again, whole."""
    b, expected = two_models
    _, vec = inputs(bundles)
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    die_at(monkeypatch, "stage.version.renamed@1", b, site)
    waiting = hidden_dir(nas / "indices" / "vec", "2.0")
    (waiting / "config.json").unlink()
    step = stage_json(b, site)
    # the damaged commit is not rolled forward: the bundle's versions are staged again, whole
    assert step["done"] + step["skipped"] == 2 and step["done"] >= 1
    assert visible_versions(nas) == expected and hidden_files(nas) == set()
    assert sha256_file(nas / "indices/vec/2.0/config.json") == sha256_file(vec / "config.json")


def test_stage_commit_refused_midway_renames_back_what_it_made_visible(
        bundles: Bundles, two_models: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone creates vec 2.0 after idx 1.0 was renamed into place: idx is hidden again, nothing of the
    bundle stays visible; once the stray dir is gone, the next stage finishes it."""
    b, expected = two_models
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    stray = nas / "indices" / "vec" / "2.0"
    at_fault(monkeypatch, "stage.version.renamed@1", lambda: stray.mkdir())
    r = installer("stage", b, "--site", site)
    monkeypatch.undo()
    assert r.exit_code == EXIT_ERROR and "appeared meanwhile" in r.stderr, r.output
    assert visible_versions(nas) == {"indices/vec/2.0": set()}, "idx 1.0 must be hidden again"
    assert len([h for h in hidden_files(nas) if h.startswith("indices/idx/.1.0.partial-")]) == 3
    stray.rmdir()
    r = installer("stage", b, "--site", site)
    assert r.exit_code == 0, r.output
    assert visible_versions(nas) == expected and hidden_files(nas) == set()


def test_stage_on_a_full_nas_names_the_model_and_keeps_what_was_written(
        bundles: Bundles, two_models: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b, expected = two_models
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    monkeypatch.setenv(faults.ENV, "stage.file.chunk@3:enospc")
    monkeypatch.setattr(faults, "_hits", {})
    r = installer("stage", b, "--site", site)
    monkeypatch.undo()
    assert r.exit_code == EXIT_ERROR, r.output
    assert f"no space left on the NAS at {nas}" in r.stderr and "free space on the NAS" in r.stderr, r.stderr
    assert visible_versions(nas) == {}
    assert not [h for h in hidden_files(nas) if ".edgebundle-tmp-" in h], "a temp file was left behind"
    r = installer("stage", b, "--site", site)
    assert r.exit_code == 0, r.output
    assert visible_versions(nas) == expected


def test_stage_names_every_conflicting_version_at_once(bundles: Bundles, two_models: tuple[Path, Any],
                                                       tmp_path: Path) -> None:
    b, _ = two_models
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    for v in ("indices/idx/1.0", "indices/vec/2.0"):
        (nas / v).mkdir(parents=True)
        (nas / v / "other.bin").write_bytes(b"x")
    before = tree(nas)
    r = installer("stage", b, "--site", site)
    assert r.exit_code == EXIT_ERROR, r.output
    assert "index idx 1.0" in r.stderr and "index vec 2.0" in r.stderr, r.stderr
    assert "extra file(s) other.bin, lacks " in r.stderr
    assert tree(nas) == before


MARKER_LIMIT = 4 * 1024 * 1024  # a marker larger than this is no marker (installer/destinations/nas.py)


def test_stage_trusts_a_matching_marker_only_when_told_and_only_its_own(
        bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EDGEBUNDLE_TRUST_NAS_MARKERS=1 (docs/SECURITY.md): a version whose edgebundle marker records the
    bundle's pins and whose sizes match is taken as present without hashing. Off, or with a marker
    that is not ours or too large, the bytes are hashed and an edit is a conflict."""
    site = bundles.world.site(tmp_path / "s")
    vdir = tmp_path / "s" / "nas" / "indices" / "idx" / "1.0"
    assert installer("stage", bundles.v100, "--site", site).exit_code == 0
    data = bytearray((vdir / "index.bin").read_bytes())
    data[100] ^= 1
    (vdir / "index.bin").write_bytes(bytes(data))  # same size, other bytes
    marker = (vdir / ".edgebundle.json").read_bytes()
    r = installer("stage", bundles.v101, "--site", site)
    assert r.exit_code == EXIT_ERROR and "index.bin has digest" in r.stderr, r.output
    monkeypatch.setenv("EDGEBUNDLE_TRUST_NAS_MARKERS", "1")
    assert stage_json(bundles.v101, site)["skipped"] == 1
    doc = json.loads(marker)
    for label, text, trusted in (
            ("someone else's", json.dumps({**doc, "_type": "someone.else"}).encode(), False),
            ("at the size limit", marker.rstrip(b"\n") + b" " * (MARKER_LIMIT - len(marker.rstrip(b"\n"))), True),
            ("past the size limit", marker.rstrip(b"\n") + b" " * (MARKER_LIMIT + 1 - len(marker.rstrip(b"\n"))), False)):
        (vdir / ".edgebundle.json").write_bytes(text)
        r = installer("stage", bundles.v101, "--site", site)
        assert (r.exit_code == 0) == trusted, (label, r.output)


def test_status_shows_the_bundle_a_staged_version_came_from(bundles: Bundles, tmp_path: Path) -> None:

    site = bundles.world.site(tmp_path / "s")
    vdir = tmp_path / "s" / "nas" / "indices" / "idx" / "1.0"
    assert installer("stage", bundles.v100, "--site", site).exit_code == 0
    payload = base64.b64decode(json.loads((bundles.v100 / "edgebundle" / "root.dsse.json").read_text())["payload"])

    def shown() -> Any:
        r = installer("status", "--site", site, "--json")
        [v] = json.loads(r.stdout)["models"]["versions"]
        assert (v["name"], v["version"], v["files"], v["partial"]) == ("idx", "1.0", 2, False)
        return v["bundle"]

    assert shown() == {"name": "tiny", "version": "1.0.0", "root": "sha256:" + hashlib.sha256(payload).hexdigest()}
    doc = json.loads((vdir / ".edgebundle.json").read_text())
    (vdir / ".edgebundle.json").write_text(json.dumps({**doc, "_type": "someone.else"}))
    assert shown() is None


# --- a model with subdirectories: walked, hashed and swept below the version dir -------------------

_NESTED: dict[str, Path] = {}
NESTED = {"weights.bin": 40 * 1024, "tok/vocab.json": 3000, "tok/extra/merges.txt": 2000}


def nested_bundle(b: Bundles) -> tuple[Path, Path]:
    """tiny 4.0.0 with one model whose files sit in nested directories (built once per process)."""
    if "bundle" not in _NESTED:

        w = b.world
        src = w.base / "models" / "nested"
        for rel, size in NESTED.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(random.Random(rel).randbytes(size))
        spec = w.spec("nested", "4.0.0", models=[{"name": "nest", "kind": "llm", "version": "0.1", "path": str(src)}])
        _NESTED.update(bundle=w.build(spec, "nested", "release"), src=src)
    return _NESTED["bundle"], _NESTED["src"]


def test_stage_nested_model_files_land_whole_and_are_compared_below_the_version(bundles: Bundles,
                                                                                tmp_path: Path) -> None:
    b, src = nested_bundle(bundles)
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    vdir = nas / "llm" / "nest" / "0.1"
    step = stage_json(b, site)
    assert (step["done"], step["bytes"]) == (1, sum(NESTED.values()))
    assert {rel: sha256_file(vdir / rel) for rel in NESTED} == {rel: sha256_file(src / rel) for rel in NESTED}
    assert stage_json(b, site)["skipped"] == 1
    staged = tree(nas)
    for change, why in (("flip", "tok/extra/merges.txt has digest"), ("extra", "extra file(s) tok/extra/notes.txt"),
                        ("link", "tok/link is not a regular file")):
        case = tmp_path / change

        shutil.copytree(nas, case / "nas", symlinks=True)
        cdir = case / "nas" / "llm" / "nest" / "0.1"
        if change == "flip":
            data = bytearray((cdir / "tok/extra/merges.txt").read_bytes())
            data[5] ^= 1
            (cdir / "tok/extra/merges.txt").write_bytes(bytes(data))
        elif change == "extra":
            (cdir / "tok/extra/notes.txt").write_text("x")
        else:
            (cdir / "tok/link").symlink_to("/etc/hostname")
        r = installer("stage", b, "--site", bundles.world.site(case, nas=case / "nas"))
        assert r.exit_code == EXIT_ERROR and "refusing to overwrite" in r.stderr and why in r.stderr, (change, r.stderr)
    assert tree(nas) == staged


def test_stage_resume_sweeps_stray_directories_but_keeps_the_models(bundles: Bundles, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    b, src = nested_bundle(bundles)
    site = bundles.world.site(tmp_path / "s")
    parent = tmp_path / "s" / "nas" / "llm" / "nest"
    die_at(monkeypatch, "stage.file.journaled@2", b, site)
    partial = hidden_dir(parent, "0.1")
    for junk in ("junk/deeper", "tok/junk", "tok/extra/junk"):
        (partial / junk).mkdir(parents=True)
        (partial / junk / "f").write_bytes(b"stray")
    (partial / "tok" / "stray.bin").write_bytes(b"stray")
    os.symlink("/etc/hostname", partial / "tok" / "extra" / "link")
    stage_json(b, site)
    vdir = parent / "0.1"
    files = {p.relative_to(vdir).as_posix() for p in vdir.rglob("*") if not p.is_dir()}
    dirs = {p.relative_to(vdir).as_posix() for p in vdir.rglob("*") if p.is_dir() and not p.is_symlink()}
    assert files == set(NESTED) | {".edgebundle.json"}, files
    assert dirs == {"tok", "tok/extra"}, dirs
    assert {rel: sha256_file(vdir / rel) for rel in NESTED} == {rel: sha256_file(src / rel) for rel in NESTED}


def test_status_verify_hashes_again_even_when_the_marker_matches(bundles: Bundles, tmp_path: Path) -> None:
    """``installer status --verify`` never takes the marker's word (the trusted-marker fast path is stage's
    opt-in only): a byte flipped under an intact marker is reported against the signed root."""
    site = bundles.world.site(tmp_path / "s")
    vdir = tmp_path / "s" / "nas" / "indices" / "idx" / "1.0"
    assert installer("stage", bundles.v100, "--site", site).exit_code == 0

    def verified() -> dict[str, Any]:
        r = installer("status", "--site", site, "--verify", "--json")
        [v] = json.loads(r.stdout)["models"]["versions"]
        return v  # type: ignore[no-any-return]

    assert verified()["verified"] is True
    data = bytearray((vdir / "meta.json").read_bytes())
    data[0] ^= 1
    (vdir / "meta.json").write_bytes(bytes(data))
    v = verified()
    assert v["verified"] is False and v["against"] == "signed root", v
    assert v["problem"].startswith("meta.json has digest sha256:" + hashlib.sha256(data).hexdigest()), v


def test_stage_conflict_names_planted_links_and_what_a_version_holds(bundles: Bundles, tmp_path: Path) -> None:
    site = bundles.world.site(tmp_path / "s")
    vdir = tmp_path / "s" / "nas" / "indices" / "idx" / "1.0"
    assert installer("stage", bundles.v100, "--site", site).exit_code == 0
    staged = tree(tmp_path / "s" / "nas")
    (vdir / "notes.txt").write_text("x")
    r = installer("stage", bundles.v101, "--site", site)
    assert r.exit_code == EXIT_ERROR and f"{vdir}: it holds extra file(s) notes.txt" in r.stderr, r.stderr
    (vdir / "notes.txt").unlink()
    for name in ("l1", "l2", "l3", "l4"):
        os.symlink("/etc/hostname", vdir / name)
    r = installer("stage", bundles.v101, "--site", site)
    assert r.exit_code == EXIT_ERROR, r.output
    assert f"{vdir}: l1, l2, l3 is not a regular file (a link or special file was planted)" in r.stderr, r.stderr
    for name in ("l1", "l2", "l3", "l4"):
        (vdir / name).unlink()
    assert tree(tmp_path / "s" / "nas") == staged


def test_stage_resume_rewrites_a_later_file_killed_before_it_was_journaled(
        bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the second file was renamed but before it was journaled: the first (journaled) is
    reused, the second is written again, and only its bytes are counted."""
    b, src = nested_bundle(bundles)
    site = bundles.world.site(tmp_path / "s")
    parent = tmp_path / "s" / "nas" / "llm" / "nest"
    die_at(monkeypatch, "stage.file.renamed@2", b, site)
    partial = hidden_dir(parent, "0.1")
    present = sorted(rel for rel in NESTED if (partial / rel).exists())
    assert len(present) == 2, present
    [journal] = list((tmp_path / "s" / "state" / "journal").iterdir())
    done = [rel for rel in present if f"/0.1/{rel}" in journal.read_text()]
    assert len(done) == 1, done  # the first file is journaled, the second is not
    step = stage_json(b, site)
    assert step["bytes"] == sum(NESTED.values()) - NESTED[done[0]], step
    assert {rel: sha256_file(parent / "0.1" / rel) for rel in NESTED} == {rel: sha256_file(src / rel) for rel in NESTED}


@pytest.mark.parametrize("planted", ["0.1", ".0.1.partial-x/y"])
def test_stage_resume_ignores_a_journal_naming_another_dir(planted: str, bundles: Bundles, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The state directory is not trusted: a journaled partial-dir name that is the version itself, or a
    path, is not used; the rerun stages into a fresh hidden dir and the version appears whole."""
    b, src = nested_bundle(bundles)
    site = bundles.world.site(tmp_path / "s")
    parent = tmp_path / "s" / "nas" / "llm" / "nest"
    die_at(monkeypatch, "stage.file.journaled@1", b, site)
    partial = hidden_dir(parent, "0.1")
    [journal] = list((tmp_path / "s" / "state" / "journal").iterdir())
    text = journal.read_text()
    assert f'"{partial.name}"' in text
    journal.write_text(text.replace(f'"{partial.name}"', json.dumps(planted)))
    r = installer("stage", b, "--site", site)
    assert r.exit_code == 0, r.output
    assert {rel: sha256_file(parent / "0.1" / rel) for rel in NESTED} == {rel: sha256_file(src / rel) for rel in NESTED}


def test_stage_decodes_a_compressed_layer_to_the_builders_file(bundles: Bundles, bad_layer: Path,
                                                               tmp_path: Path) -> None:
    """A model file stored ``tar+zstd`` (a compressible tokenizer) lands on the NAS as the builder's
    input file, byte for byte, with its decoded size counted."""
    good = bundles.world.base / "out" / "tok-layer"  # the bad layer's intact twin (same fixture)
    src = bundles.world.base / "tok" / "good" / "tokenizer.json"
    step = stage_json(good, bundles.world.site(tmp_path / "s"))
    assert (step["done"], step["bytes"]) == (1, src.stat().st_size)
    staged = tmp_path / "s" / "nas" / "embeddings" / "tok" / "1.2" / "tokenizer.json"
    assert sha256_file(staged) == sha256_file(src)


_SAME: dict[str, Path] = {}


def same_version_bundle(b: Bundles) -> Path:
    """tiny 5.0.0 with idx and vec (the inputs of ``two_models``) both at version 1.0 (built once per process)."""
    if "bundle" not in _SAME:
        w = b.world
        idx, vec = inputs(b)
        spec = w.spec("same-version", "5.0.0", models=[
            {"name": "idx", "kind": "index", "version": "1.0", "path": str(idx)},
            {"name": "vec", "kind": "index", "version": "1.0", "path": str(vec)}])
        _SAME["bundle"] = w.build(spec, "same-version", "release")
    return _SAME["bundle"]


def test_stage_resume_keeps_each_models_own_partial_dir_when_versions_are_equal(
        bundles: Bundles, two_models: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two models share the version string 1.0; the stage dies after the second model's first file.
    Each hidden dir has its own random name (docs/SITE.md: ``.<version>.partial-<random>``, so seeing
    one does not tell the other); the rerun reuses each model's own (the first model's finished files
    keep their inodes, no bytes counted), and leaves no hidden dir behind."""
    b = same_version_bundle(bundles)  # two_models: its inputs exist
    _, vec = inputs(bundles)
    site = bundles.world.site(tmp_path / "s")
    nas = tmp_path / "s" / "nas"
    die_at(monkeypatch, "stage.file.journaled@3", b, site)  # idx's two files, then vec's first
    idx_partial, vec_partial = hidden_dir(nas / "indices" / "idx", "1.0"), hidden_dir(nas / "indices" / "vec", "1.0")
    assert idx_partial.name != vec_partial.name
    inodes = {n: (idx_partial / n).stat().st_ino for n in IDX}
    [vec_done] = [n for n in VEC if (vec_partial / n).exists()]
    step = stage_json(b, site)
    assert (step["done"], step["skipped"]) == (2, 0), step
    assert step["bytes"] == sizes(vec, VEC) - (vec / vec_done).stat().st_size, step
    assert {n: (nas / "indices" / "idx" / "1.0" / n).stat().st_ino for n in IDX} == inodes
    marker = ".edgebundle.json"
    assert visible_versions(nas) == {"indices/idx/1.0": {*IDX, marker}, "indices/vec/1.0": {*VEC, marker}}
    assert sorted(p.name for p in (nas / "indices" / "idx").iterdir()) == ["1.0"]
    assert sorted(p.name for p in (nas / "indices" / "vec").iterdir()) == ["1.0"]
    assert {n: sha256_file(nas / "indices" / "vec" / "1.0" / n) for n in VEC} == {n: sha256_file(vec / n) for n in VEC}


def test_stage_resume_replaces_a_directory_planted_where_a_model_file_belongs(
        bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the first file; someone made the second file's name a directory (with a file in it)
    in the hidden dir: the rerun sweeps it away and writes the file, and the version lands whole."""
    idx, site, parent = v100_killed_at(bundles, tmp_path, monkeypatch, "stage.file.journaled@1")
    partial = hidden_dir(parent, "1.0")
    [todo] = [n for n in IDX if not (partial / n).exists()]
    (partial / todo).mkdir()
    (partial / todo / "inside").write_bytes(b"planted")
    r = installer("stage", bundles.v100, "--site", site)
    assert r.exit_code == 0, r.output
    assert {n: sha256_file(parent / "1.0" / n) for n in IDX} == {n: sha256_file(idx / n) for n in IDX}
    assert sorted(p.name for p in parent.iterdir()) == ["1.0"]


def test_stage_refuses_a_symlinked_kind_directory_naming_the_models_root(bundles: Bundles, tmp_path: Path) -> None:
    """``indices`` under the models root is a link to elsewhere: stage refuses naming the link and the
    tree it is in, and writes nothing through it."""
    site = bundles.world.site(tmp_path / "s")
    nas, elsewhere = tmp_path / "s" / "nas", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (nas / "indices").symlink_to(elsewhere)
    r = installer("stage", bundles.v100, "--site", site)
    assert r.exit_code == EXIT_ERROR, r.output
    assert (f"{nas / 'indices'} is a symbolic link; refusing to follow it while opening the models root"
            in r.stderr), r.stderr
    assert list(elsewhere.iterdir()) == [] and [p.name for p in nas.iterdir()] == ["indices"]


def test_stage_names_the_model_file_and_blob_whose_bytes_differ_from_the_signed(bundles: Bundles,
                                                                                tmp_path: Path) -> None:
    """Stage hashes each blob as it writes it (no second read of the media): a flipped byte in
    index.bin's blob is refused (exit 4) naming the model, the file and the bundle member, with the
    digest found and the signed one; nothing becomes visible and no temporary file is left."""
    idx = inputs(bundles)[0]
    signed = hashlib.sha256((idx / "index.bin").read_bytes()).hexdigest()  # stored as is (identity)
    copy = tmp_path / "bundle"
    shutil.copytree(bundles.v100, copy)
    blob = copy / "blobs" / "sha256" / signed
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    r = installer("stage", copy, "--site", bundles.world.site(tmp_path / "s"))
    assert r.exit_code == EXIT_VERIFY, r.output
    assert (f"error: model idx 1.0, file index.bin (blobs/sha256/{signed}): content digest "
            f"sha256:{hashlib.sha256(data).hexdigest()} does not match the signed sha256:{signed}") in r.stderr, r.stderr
    nas = tmp_path / "s" / "nas"
    assert visible_versions(nas) == {}
    assert not [p for p in nas.rglob("*") if p.name.startswith(".edgebundle-tmp-")]
