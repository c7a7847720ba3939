"""Round-2 hostile site: every attack of tests/hostile/site.py is refused by name and contained.

For each attack, on a fresh site (NAS directory, state directory) with a *victim* directory
beside it that nothing may touch, we run the named installer command in-process and require:

- the documented exit code and a message matching the attack's own regex (stdout + stderr);
- no Python traceback (click reports an unexpected exception as ``result.exception``);
- the victim directory unchanged (entries, types, sizes, mtimes; links never followed),
  so nothing was written outside the NAS root and the state directory;
- no model version visible on the NAS that was not visible before (hidden partial dirs are
  allowed: they are how a refused or killed stage resumes).

Counts per family are written to ``<basetemp>/security-figures/hostile-site.json`` for
docs/SECURITY.md.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from installer.cli import main
from edgebundle.root import KIND_DIRS
from tests.fixtures.bundles import BuiltBundle, nas_snapshot
from tests.hostile.site import SITE_FAMILIES, Scene, SiteAttack, all_site_attacks
from tests.test_hostile import tree_state  # lstat-based: links never followed, any write changes mtime

pytestmark = pytest.mark.timeout(120)
ATTACKS = all_site_attacks()


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, args, env=env)


def visible_versions(nas: Path) -> set[str]:
    """Model versions a consumer would see: <kind-dir>/<name>/<version>, no hidden component."""
    out = set()
    for kdir in KIND_DIRS.values():
        base = nas / kdir
        if base.is_symlink() or not base.is_dir():
            continue
        for name in base.iterdir():
            if name.is_symlink() or not name.is_dir() or name.name.startswith("."):
                continue
            out |= {f"{kdir}/{name.name}/{v.name}" for v in name.iterdir() if not v.name.startswith(".")}
    return out


@pytest.fixture(scope="module")
def genuine_bundle(bundle_factory: Any) -> BuiltBundle:
    return bundle_factory()


@pytest.fixture(scope="module")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, int]]]:
    counts = {f: {"tried": 0, "refused": 0, "writtenOutside": 0} for f in SITE_FAMILIES}
    yield counts
    out = tmp_path_factory.getbasetemp() / "security-figures"
    out.mkdir(exist_ok=True)
    (out / "hostile-site.json").write_text(json.dumps(counts, indent=2))
    print("\nhostile site: family / tried / refused / written outside")
    for family, c in counts.items():
        print(f"  {family:<10} {c['tried']:>4} {c['refused']:>4} {c['writtenOutside']:>3}")


def make_scene(b: BuiltBundle, tmp_path: Path) -> Scene:
    site = b.site(tmp_path / "site", "127.0.0.1:9")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "secret").write_bytes(b"do not touch\n")
    (victim / "llm-like").mkdir()
    models = {m.kind: (KIND_DIRS[m.kind], m.name, m.version) for m in b.root.models}
    return Scene(site, tmp_path / "site" / "nas", tmp_path / "site" / "state", victim, b.path,
                 b.root_digest.split(":")[1], models, b.key)


def test_the_site_attacks_cover_every_family() -> None:
    per_family = {f: sum(a.family == f for a in ATTACKS) for f in SITE_FAMILIES}
    assert all(n >= 2 for n in per_family.values()), per_family
    assert len(ATTACKS) >= 85, per_family


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_site_attack_is_refused_and_contained(attack: SiteAttack, genuine_bundle: BuiltBundle, tmp_path: Path,
                                              tally: dict[str, dict[str, int]]) -> None:
    scene = make_scene(genuine_bundle, tmp_path)
    if attack.staged_first:
        r = invoke(["stage", str(scene.bundle), "--site", str(scene.site)])
        assert r.exit_code == 0, r.output
    attack.plant(scene)
    victim_before, visible_before = tree_state(scene.victim), visible_versions(scene.nas)
    r = invoke(attack.args(scene), env=attack.env or None)
    out = r.stdout + r.stderr
    c = tally[attack.family]
    c["tried"] += 1
    wrote = tree_state(scene.victim) != victim_before or not visible_versions(scene.nas) <= visible_before
    c["writtenOutside"] += wrote
    refused = r.exit_code == attack.exit_code and re.search(attack.expect, out) is not None
    c["refused"] += refused
    assert r.exception is None or isinstance(r.exception, SystemExit), f"traceback: {r.exception!r}"
    assert "Traceback" not in out
    assert refused, f"exit {r.exit_code}, expected {attack.exit_code}; output: {out[-1500:]}"
    assert tree_state(scene.victim) == victim_before, "something was written outside the NAS root and state dir"
    assert visible_versions(scene.nas) <= visible_before, "a refused stage made a new version visible"


def test_controls_the_same_scenes_without_the_attack_succeed(genuine_bundle: BuiltBundle, tmp_path: Path) -> None:
    """Stage, status --verify and audit verify pass on a clean site: the refusals are the attacks' doing."""
    scene = make_scene(genuine_bundle, tmp_path)
    assert invoke(["stage", str(scene.bundle), "--site", str(scene.site)]).exit_code == 0
    r = invoke(["status", "--site", str(scene.site), "--verify", "--json"])
    assert r.exit_code == 0, r.output
    versions = json.loads(r.stdout)["models"]["versions"]
    assert len(versions) == 3 and all(v["verified"] and v["against"] == "signed root" for v in versions)
    assert invoke(["audit", "verify", "--site", str(scene.site)]).exit_code == 0
    assert invoke(["stage", str(scene.bundle), "--site", str(scene.site)]).exit_code == 0  # re-hash, present


def test_the_documented_fast_path_trusts_markers_only_when_asked(genuine_bundle: BuiltBundle,
                                                                  tmp_path: Path) -> None:
    scene = make_scene(genuine_bundle, tmp_path)
    assert invoke(["stage", str(scene.bundle), "--site", str(scene.site)]).exit_code == 0
    target = scene.version_dir("index") / "index.bin"
    with open(target, "r+b") as f:
        f.write(b"\xffTAMPER")
    shutil.rmtree(scene.state / "journal")
    assert invoke(stage(scene)).exit_code == 1, "by default a tampered version is found by hashing"
    r = invoke(stage(scene), env={"EDGEBUNDLE_TRUST_NAS_MARKERS": "1"})
    assert r.exit_code == 0 and "present" not in r.stderr, r.output


def stage(s: Scene) -> list[str]:
    return ["stage", str(s.bundle), "--site", str(s.site)]


def test_old_predictable_partial_names_are_not_followed(genuine_bundle: BuiltBundle, tmp_path: Path) -> None:
    """Links planted at every name the old code would have used stay untouched; stage succeeds."""
    scene = make_scene(genuine_bundle, tmp_path)
    for kind in scene.models:
        vdir = scene.version_dir(kind)
        scene.link(vdir.with_name(f".{vdir.name}.partial-{scene.root_hex[:16]}"), scene.victim / "llm-like")
    before = tree_state(scene.victim)
    r = invoke(stage(scene))
    assert r.exit_code == 0, r.output
    assert tree_state(scene.victim) == before
    assert len(visible_versions(scene.nas)) == 3


def test_a_link_planted_in_a_resumed_partial_dir_is_removed_not_followed(genuine_bundle: BuiltBundle,
                                                                         tmp_path: Path) -> None:
    from tests.fixtures.bundles import run_installer

    scene = make_scene(genuine_bundle, tmp_path)
    killed = run_installer(*stage(scene), faultpoint="stage.file.journaled@2")
    assert killed.returncode == -9, killed.stderr
    partials = [p for p in scene.nas.rglob(".*partial-*") if p.is_dir()]
    assert partials, "the killed run leaves its hidden partial dir"
    planted = 0
    for p in partials:
        for f in [f for f in p.rglob("*") if f.is_file()]:
            scene.link(f, scene.victim / "secret")
            planted += 1
    assert planted
    before = tree_state(scene.victim)
    r = run_installer(*stage(scene))
    assert r.returncode == 0, r.stderr
    assert tree_state(scene.victim) == before
    assert not [p for p in scene.nas.rglob("*") if p.is_symlink()], "no link may survive in a staged version"
    assert nas_snapshot(scene.nas) and len(visible_versions(scene.nas)) == 3


def test_a_read_only_nas_gets_a_clear_error(genuine_bundle: BuiltBundle, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """EROFS from the NAS mount (as a read-only export gives it) is named as such."""
    scene = make_scene(genuine_bundle, tmp_path)
    real_mkdir = os.mkdir

    def mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if str(path) in KIND_DIRS.values():
            raise OSError(errno.EROFS, "Read-only file system")
        real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    r = invoke(stage(scene))
    assert r.exit_code == 1 and "is on a read-only file system" in r.stderr and "remount it read-write" in r.stderr
    assert not visible_versions(scene.nas)


def test_a_model_refused_mid_stage_leaves_no_version_of_the_bundle_visible(
        bundle_factory: Any, tmp_path: Path) -> None:
    """The media changes after verification: the last model's bytes are wrong when stage reads them."""
    from installer.core import open_verified
    from installer.destinations import QUIET
    from installer.destinations.nas import NasDestination
    from installer.site import load_site
    from installer.state import StateDir
    from edgebundle import layout
    from edgebundle.errors import EdgebundleError

    b = bundle_factory(out_format="dir")
    scene = make_scene(b, tmp_path)
    copy = tmp_path / "bundle-copy"
    shutil.copytree(b.path, copy)
    site = load_site(scene.site)
    state = StateDir(site.state_dir)
    vb = open_verified(copy, site, state=state)
    last = vb.root.models[-1]
    blob = copy / layout.blob_path(last.files[0].blob)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(EdgebundleError, match="does not match"):
        NasDestination(site.models_root).apply(vb, state.journal(vb.root_digest), QUIET)
    assert visible_versions(scene.nas) == set(), "earlier models must not become visible alone"
    assert [p.name for p in scene.nas.rglob(".*partial-*")], "they wait, hidden, for a rerun"


def test_deleting_audit_log_and_head_after_an_install_is_detected(bundle_factory: Any, registry: Any,
                                                                  tmp_path: Path) -> None:
    """installed.json anchors the log's length: deleting log, head and journals together is still seen."""
    b = bundle_factory()
    site = b.site(tmp_path, registry.host)
    state = tmp_path / "state"
    for verb in ("load", "stage"):
        assert invoke([verb, str(b.path), "--site", str(site)]).exit_code == 0
    assert json.loads((state / "installed.json").read_text())["audit"] == {"count": 2}
    assert invoke(["audit", "verify", "--site", str(site)]).exit_code == 0
    for name in ("audit.log", "audit.head"):
        (state / name).unlink()
    shutil.rmtree(state / "journal")
    r = invoke(["audit", "verify", "--site", str(site)])
    assert r.exit_code == 4
    assert "installed.json records that audit.log had at least 2 lines at the last install, but it has 0" in (
        r.stdout + r.stderr)
