"""Hostile and corrupt bundles: every mutant of the corpus is refused, by name, and changes nothing.

The corpus (tests/hostile/corpus.py) is made from genuine bundles built by the real builder. Each
mutant goes through the real ``installer verify`` (in-process, through click); a representative
subset (several per family) also goes through ``load``, ``stage`` and ``install`` against a real
registry, a NAS directory and a k3s manifests directory. For every run we require:

- a non-zero exit code (4: verification failed) and a message matching the mutant's own regex,
  so "refused" means "refused for the reason we planted", not "failed somehow";
- nothing written outside the state directory's scratch space: the site directory (NAS, state,
  k3s directory), the bundle's own directory, the working directory and ``$TMPDIR`` are
  snapshotted before and after. The state directory's ``audit.log`` (which records the refusal,
  by design) and its ``lock`` file are the only exceptions, and the audit line must say refused;
- for load/stage/install: no write request reached the registry and its storage is unchanged.

One exception follows from "verify only what a step uses, once" (docs/SECURITY.md): a mutant whose
only damage is inside a model layer's content (:data:`MODEL_CONTENT_ONLY`). ``load`` never reads
model layers, so it pushes the bundle's genuine, proven images and succeeds; ``stage`` and
``install`` meet the damage while writing and refuse it, and what they leave is hidden and
resumable (the journal, the remembered root, a dot-named partial directory on the NAS): no model
version directory, no file outside a hidden directory, no cluster object, no ``installed.json``.

Counts per family (tried / refused / written outside) are printed and written to
``<pytest basetemp>/security-figures/hostile.json``; docs/SECURITY.md quotes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bundler.build import Builder
from bundler.commands.common import registry_factory as source_registries
from bundler.delta import build_delta
from bundler.lockfile import ensure_lock
from edgebundle.signing import load_private_key
from bundler.spec import load_spec
from installer.cli import main
from installer.state import StateDir
from tests.fixtures.bundles import DEFAULT_MODELS, BundleWorld, nas_snapshot, registry_snapshot, write_site
from tests.fixtures.registry import RegistryProcess
from tests.hostile.corpus import FAMILIES, Genuine, Mutant, Tar, build_corpus, parse_root
from tests.hostile.site import REVISION

pytestmark = pytest.mark.timeout(300)

WRITES = ("PUT", "POST", "PATCH", "DELETE")
#: What a refused run may change in the state directory: its scratch space, the lock, the audit log.
ALLOWED_STATE = ("scratch/", "lock", "audit.log", "audit.head")
#: Mutants whose only damage is inside a model layer's content (see the module docstring).
MODEL_CONTENT_ONLY = ("bombs/zstd declares its signed size, decodes endlessly, re-signed",)
#: What a step that refuses mid-write may leave in the state directory: its resumable journal.
HIDDEN_STATE = ("state/journal/", "state/bundles/")
#: Mutants (by id) that also go through load, stage and install, beyond the first of each family.
DEEP = ("bombs/zstd declares its signed size, decodes endlessly, re-signed",
        "tar-unsafe/a symbolic link outside as edgebundle/trust.pub",
        "tar-unsafe/directory bundle: symlink blob to /etc/passwd",
        "trust/rollback below installed 2.0.0", "trust/delta for another base",
        "threshold/2-of-2, signed by one",
        "signed-hostile/tag climbing into the registry's storage, re-signed",
        "signed-hostile/manifest YAML alias bomb (billion laughs), re-signed",
        "signed-hostile/two model files on one path, re-signed",
        "signed-hostile/a model file that is also a directory, re-signed")


# --- genuine inputs and the corpus ------------------------------------------------------------

@pytest.fixture(scope="module")
def genuine(bundle_world: BundleWorld, bundle_factory: Callable[..., Any],
            tmp_path_factory: pytest.TempPathFactory) -> Genuine:
    """The good release (tar and directory), a newer release with one more model, a delta between them."""
    good, good_dir = bundle_factory(), bundle_factory(out_format="dir")
    extra = bundle_world.workdir / "hostile-extra"
    extra.mkdir(exist_ok=True)
    (extra / "notes.bin").write_bytes(bytes(range(256)) * 64)
    other = bundle_world.build(version="1.1.0", models=(*DEFAULT_MODELS, {
        "name": "notes", "kind": "index", "version": "1.0", "path": str(extra)}))
    key_path = bundle_world.key("release")[0]
    spec = load_spec(other.spec_path)
    registries = source_registries(())
    delta = tmp_path_factory.mktemp("hostile-delta") / "rag-edge-1.1.0-delta.tar"
    build_delta(Builder(spec, ensure_lock(spec, registries, locked=False), registries), good.path, delta,
                [load_private_key(key_path)])
    keys = {name: bundle_world.key(name) for name in ("release", "second", "third", "intruder")}
    return Genuine(good.path, good_dir.path, other.path, delta, keys)


@pytest.fixture(scope="module")
def corpus(genuine: Genuine) -> list[Mutant]:
    return build_corpus(genuine)


@pytest.fixture(scope="module")
def tally(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, int]]]:
    """Per-family counts, written for docs/SECURITY.md when the module is done."""
    counts: dict[str, dict[str, int]] = {f: {"tried": 0, "refused": 0, "writtenOutside": 0, "deepRuns": 0,
                                             "deepRefused": 0, "deepWrittenOutside": 0} for f in FAMILIES}
    yield counts
    total = {k: sum(c[k] for c in counts.values()) for k in next(iter(counts.values()))}
    out = tmp_path_factory.getbasetemp() / "security-figures"
    out.mkdir(exist_ok=True)
    (out / "hostile.json").write_text(json.dumps({"families": counts, "total": total}, indent=2))
    print("\nhostile corpus: family / tried / refused / written outside | load+stage+install runs / refused / "
          "written outside")
    for family, c in [*counts.items(), ("total", total)]:
        print(f"  {family:<11} {c['tried']:>4} {c['refused']:>4} {c['writtenOutside']:>3} | "
              f"{c['deepRuns']:>3} {c['deepRefused']:>3} {c['deepWrittenOutside']:>3}")


# --- running one mutant -----------------------------------------------------------------------

def tree_state(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every entry under ``root`` (links and FIFOs too, never followed) -> its type and content."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix() + ("/" if n in dirnames else "")
            if rel.startswith(skip) or rel == "state/":  # (the state dir may be created: it holds the audit log)
                continue
            st = p.lstat()
            out[rel] = f"{st.st_mode:o} {st.st_size} {st.st_mtime_ns}"
    return out


class Arena:
    """One mutant at one site: its bundle, its site directory, and what must stay unchanged."""

    def __init__(self, m: Mutant, g: Genuine, base: Path, registry_host: str, k3s: bool = False) -> None:
        self.m, self.dir = m, base / re.sub(r"[^A-Za-z0-9]+", "-", m.id)[:80]
        self.bundle = m.build(self.dir / "in")
        self.site_dir = self.dir / "site"
        self.site = write_site(self.site_dir, registry_host, trust=[g.pub(k) for k in m.trust],
                               compatible=m.compatible or "rag-edge/x86_64", threshold=m.threshold)
        if k3s:
            doc = json.loads(self.site.read_text())
            (self.site_dir / "k3s").mkdir()
            doc["spec"]["cluster"] = {"manifestsDir": str(self.site_dir / "k3s")}
            self.site.write_text(json.dumps(doc))
        if m.installed:
            StateDir(self.site_dir / "state").record_installed(dict(m.installed))
            if k3s:  # a site with a cluster runs what a healthy revision deployed (docs/SITE.md)
                from installer.revisions import RevisionStore

                bundle = {k: m.installed[k] for k in ("name", "version", "root")}  # a whole record (strict schema)
                RevisionStore(StateDir(self.site_dir / "state")).write({**REVISION, "bundle": bundle})
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, dict[str, str]]:
        state_skip = tuple(f"state/{a}" for a in ALLOWED_STATE)
        return {"site": {**tree_state(self.site_dir, state_skip), **nas_snapshot(self.site_dir / "nas")},
                "bundle": tree_state(self.dir / "in")}

    def run(self, verb: str, *extra: str) -> Result:
        return CliRunner().invoke(main, [verb, str(self.bundle), "--site", str(self.site), *extra])

    def check(self, verb: str, r: Result, proven: Any = None) -> tuple[bool, bool, str]:
        """(refused as planned, wrote outside scratch, why not) for one run; with ``proven`` (a
        genuine root) hidden, resumable state and model versions proven against it are allowed."""
        why = []
        refused = r.exit_code == self.m.exit_code and re.search(self.m.expect, r.stderr) is not None
        if not refused:
            why.append(f"exit {r.exit_code}, stderr: {r.stderr.strip()[-400:]!r}")
        after = self.snapshot()
        changed = sorted({k for part in after for k in set(after[part]) ^ set(self.before[part])}
                         | {k for part in after for k in after[part].keys() & self.before[part].keys()
                            if after[part][k] != self.before[part][k]})
        if proven is not None:
            ok = proven_versions(self.site_dir / "nas", proven)
            keys = {k: k.removeprefix("nas/") for k in changed}
            changed = [k for k, rel in keys.items() if visible(rel) and not rel.startswith(ok)]
        audit = self.site_dir / "state" / "audit.log"
        if audit.exists():
            last = json.loads(audit.read_text().splitlines()[-1])
            if last.get("outcome") == "ok" or last.get("exitCode") != r.exit_code:
                changed.append(f"audit.log does not record the refused {verb}: {last}")
        if changed:
            why.append(f"wrote outside scratch: {changed[:5]}")
        return refused, bool(changed), "; ".join(why)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def proven_versions(nas: Path, root: Any) -> tuple[str, ...]:
    """NAS version directories (``kind/name/version/``) whose every file hashes to the pin the
    genuine ``root`` signs for it (the marker aside): those a step may make visible."""
    have = nas_snapshot(nas)
    out = []
    for m in root.models:
        kind_dir = {"llm": "llm", "embedding": "embeddings", "index": "indices"}[m.kind]
        prefix = f"{kind_dir}/{m.name}/{m.version}/"
        files = {k[len(prefix):]: v for k, v in have.items() if k.startswith(prefix) and not k.endswith("/")}
        files.pop(".edgebundle.json", None)
        if files and files == {f.path: f.digest for f in m.files}:
            out.append(prefix)
    return tuple(out)


def visible(key: str) -> bool:
    """Whether a changed snapshot entry is something the site can see: any file outside a
    dot-named directory, a directory as deep as a model version (kind/name/version, relative to
    the NAS root), or state other than the journal and remembered roots."""
    if not key or key.startswith(HIDDEN_STATE):  # "": the NAS root itself (its mtime)
        return False
    parts = key.rstrip("/").split("/")
    if any(p.startswith(".") for p in parts):
        return False
    return not key.endswith("/") or len(parts) >= 3


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run from an empty working directory with a private $TMPDIR; both must stay empty."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmpdir"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield tmp_path / "arenas"
    assert not list(cwd.iterdir()), f"files written to the working directory: {list(cwd.iterdir())}"
    assert not list(tmp.iterdir()), f"files written to $TMPDIR: {list(tmp.iterdir())}"


# --- the tests --------------------------------------------------------------------------------

def test_the_corpus_is_large_and_covers_every_family(corpus: list[Mutant]) -> None:
    per_family = {f: sum(m.family == f for m in corpus) for f in FAMILIES}
    assert len(corpus) >= 200, per_family
    assert all(n >= 6 for n in per_family.values()), per_family
    assert len({m.id for m in corpus}) == len(corpus)


@pytest.mark.parametrize("family", FAMILIES)
def test_installer_verify_refuses_every_mutant(family: str, corpus: list[Mutant], genuine: Genuine,
                                               sandbox: Path, tally: dict[str, dict[str, int]]) -> None:
    failures = []
    for m in [m for m in corpus if m.family == family]:
        arena = Arena(m, genuine, sandbox, "127.0.0.1:9")  # verify never contacts the registry
        refused, wrote, why = arena.check("verify", arena.run("verify"))
        arena.remove()
        c = tally[family]
        c["tried"] += 1
        c["refused"] += refused
        c["writtenOutside"] += wrote
        if why:
            failures.append(f"{m.id}: {why}")
    assert not failures, f"{len(failures)} mutant(s) not refused as planned:\n" + "\n".join(failures)


def deep_subset(corpus: list[Mutant]) -> list[Mutant]:
    firsts = {m.family: m for m in reversed(corpus)}
    return [m for m in corpus if m in firsts.values() or m.id in DEEP]


def run_deep(arena: Arena, verbs: tuple[str, ...], c: dict[str, int], proven: Any = None) -> list[str]:
    """Run ``verbs`` on one mutant, count them in the family's tally ``c``; the failures."""
    failures = []
    for verb in verbs:
        extra = ("--yes", "--operator", "mallory") if verb == "install" else ()
        refused, wrote, why = arena.check(verb, arena.run(verb, *extra), proven=proven)
        c["deepRuns"] += 1
        c["deepRefused"] += refused
        c["deepWrittenOutside"] += wrote
        if why:
            failures.append(f"{verb} {arena.m.id}: {why}")
    return failures


def test_load_stage_and_install_refuse_a_subset(corpus: list[Mutant], genuine: Genuine, sandbox: Path,
                                                registry: RegistryProcess,
                                                tally: dict[str, dict[str, int]]) -> None:
    subset = deep_subset(corpus)
    assert {m.family for m in subset} == set(FAMILIES) and len(subset) >= len(FAMILIES) + len(DEEP) - 1
    assert {m.id for m in subset} >= set(MODEL_CONTENT_ONLY)
    before = registry_snapshot(registry)
    failures = []
    for m in [m for m in subset if m.id not in MODEL_CONTENT_ONLY]:
        arena = Arena(m, genuine, sandbox, registry.host, k3s=True)
        failures += run_deep(arena, ("load", "stage", "install"), tally[m.family])
        assert not list((arena.site_dir / "k3s").iterdir())
        assert not (arena.site_dir / "state" / "installed.json").exists() or m.installed
        arena.remove()
    assert not [e for e in registry.requests() if e.method in WRITES], "nothing may be pushed"
    assert registry_snapshot(registry) == before
    genuine_root = parse_root(Tar(genuine.good).root_bytes())
    for m in [m for m in subset if m.id in MODEL_CONTENT_ONLY]:
        arena = Arena(m, genuine, sandbox, registry.host, k3s=True)
        r = arena.run("load")
        assert r.exit_code == 0, (m.id, r.output)  # the images are genuine and proven as pushed
        failures += run_deep(arena, ("stage", "install"), tally[m.family], proven=genuine_root)
        assert not list((arena.site_dir / "k3s").iterdir())
        assert not (arena.site_dir / "state" / "installed.json").exists()
        arena.remove()
    assert not failures, "\n".join(failures)


def test_controls_pass_so_refusals_are_the_mutations_doing(genuine: Genuine, sandbox: Path) -> None:
    """The genuine bundle, and the genuine root merely re-signed the corpus's way, both verify (exit 0)."""
    from tests.hostile.corpus import Resigner, Tar, parse_root

    t = Tar(genuine.good)
    resigned = Resigner(t, parse_root(t.root_bytes()), genuine.keys["release"][0])
    for name, build in (("genuine", t.unchanged()), ("re-signed", resigned.with_root_bytes(t.root_bytes()))):
        arena = Arena(Mutant("control", name, build, ""), genuine, sandbox, "127.0.0.1:9")
        r = arena.run("verify")
        assert r.exit_code == 0 and r.stdout.startswith("OK: rag-edge 1.0.0"), (name, r.output)
        arena.remove()
