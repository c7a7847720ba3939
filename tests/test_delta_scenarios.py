"""Delta bundles end to end, with a real source registry, real site registries and real files.

For each scenario a base release and a target release are built with the real builder; the
target both as a full bundle and as a delta against the base. A site that installed the base is
cloned (registry storage, NAS, state dir); one clone installs the full target, the other the
delta. The two sites must then hold byte-identical registry storage and NAS trees, and record
the same installed root, and the delta must be smaller than the full bundle:

- S1 one image gets one new layer;  S2 only the Kubernetes manifests change;
- S3 only GGUF metadata changes (the real SmolLM2 file, ``general.name`` rewritten: every tensor
  offset moves);  S4 5% of a GGUF's tensors change;  S5 a model is added and one removed.

Plus refusals: a delta for another base, a site without the base, a site missing part of it,
a delta with a tampered patch (nothing changes at the site), and the CLI: ``bundle
inspect``/``bundle verify --base``, ``installer verify``/``load``/``stage`` of a delta (``installer
status --json`` then equals the full install's) and ``installer install`` of a delta on a k3s
site (same registry, NAS, manifests file and revisions as the full bundle).
"""

from __future__ import annotations

import json
import re
import os
import shutil
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from edgebundle import compress, layout
from bundler.build import Builder
from bundler.commands.common import registry_factory
from edgebundle.rebuild import describe_carried, full_root_digest
from bundler.delta import DeltaResult, build_delta
from edgebundle.digest import CHUNK
from bundler.gguf import read_gguf_file
from bundler.lockfile import ensure_lock
from edgebundle.root import Root
from edgebundle.signing import load_private_key
from bundler.spec import load_spec
from edgebundle.verify import WrongBaseError
from installer.core import install, open_verified
from installer.delta_source import BaseMissingError
from installer.destinations.nas import NasDestination
from installer.destinations.registry import RegistryDestination
from installer.revisions import RevisionStore
from installer.site import Site, load_site
from installer.state import StateDir
from tests.fixtures.bundles import (BUNDLE, BundleWorld, bundle_world, flip_byte,  # noqa: F401
                                    nas_snapshot, registry_snapshot, run_installer, write_site)
from tests.fixtures.models import fetched_models, write_gguf
from tests.fixtures.registry import RegistryProcess

pytestmark = pytest.mark.timeout(300)

IMAGES = (("rag/llm-service:1.0", ("linux/amd64",)), "rag/vector-db:1.0")
MODELS = ("tiny-llm", "embedder", "rag-index")
#: Measured numbers, printed at the end of the module (pytest -s) for the report.
NUMBERS: list[str] = []


# --- building releases -------------------------------------------------------------------------

@dataclass
class Release:
    """One spec (with its lock), built as a full bundle and possibly as a delta."""

    spec: Path
    full: Path
    root: Root
    seconds: float


class Releases:
    """Builds specs from the session's source registry, models and release key."""

    def __init__(self, world: BundleWorld, tmp: Path) -> None:
        self.world, self.tmp = world, tmp
        self.key, self.pub = world.key("release")
        self.registries = registry_factory(())

    def spec(self, label: str, version: str, *, models: Any = MODELS, images: Any = IMAGES,
             manifests: Path | None = None) -> Path:
        doc = self.world.spec_doc(name="rag-edge", version=version, compatible="rag-edge/x86_64",
                                  models=models, images=images, manifests=True)
        if manifests is not None:
            doc["spec"]["manifests"] = [str(manifests)]
        d = self.tmp / label
        d.mkdir(parents=True)
        path = d / "bundle.yaml"
        path.write_text(json.dumps(doc, indent=2))
        return path

    def builder(self, spec_path: Path) -> Builder:
        spec = load_spec(spec_path)
        return Builder(spec, ensure_lock(spec, self.registries, locked=False), self.registries)

    def full(self, spec_path: Path) -> Release:
        t0 = time.monotonic()
        out = spec_path.parent / "full.tar"
        result = self.builder(spec_path).build(out, [load_private_key(self.key)])
        return Release(spec_path, out, result.root, time.monotonic() - t0)

    def delta(self, spec_path: Path, base: Release) -> tuple[DeltaResult, float]:
        t0 = time.monotonic()
        result = build_delta(self.builder(spec_path), base.full, spec_path.parent / "delta.tar",
                             [load_private_key(self.key)])
        return result, time.monotonic() - t0


@pytest.fixture(scope="module")
def releases(bundle_world: BundleWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:  # noqa: F811
    yield Releases(bundle_world, tmp_path_factory.mktemp("delta-releases"))
    if NUMBERS:
        print("\n" + "\n".join(NUMBERS))


@pytest.fixture(scope="module")
def base_release(releases: Releases) -> Release:
    """The release most scenarios start from: two images, three models, the manifests."""
    return releases.full(releases.spec("base", "1.0.0"))


# --- sites --------------------------------------------------------------------------------------

@dataclass
class SiteUnderTest:
    registry: RegistryProcess
    site: Site
    dir: Path

    @property
    def state(self) -> StateDir:
        return StateDir(self.site.state_dir)

    def install(self, bundle: Path) -> None:
        """What ``installer load`` + ``stage`` do, in process (the CLI is exercised below)."""
        with self.state.locked():
            vb = open_verified(bundle, self.site, state=self.state)
            install(vb, [RegistryDestination.for_site(self.site), NasDestination(self.site.models_root)],
                    self.state)

    @property
    def yaml(self) -> Path:
        return self.dir / "site.yaml"

    def snapshot(self) -> tuple[dict[str, str], dict[str, str], list[str]]:
        installed = [b["root"] for b in self.state.installed()]
        return registry_snapshot(self.registry), nas_snapshot(self.site.models_root), installed

    def status(self) -> dict[str, Any]:
        """``installer status --json``, without what differs between any two sites (times, paths)."""
        r = run_installer("status", "--site", self.yaml, "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        keep = ("name", "version", "root", "compatible", "signers", "operator")
        return {"installed": [{k: b.get(k) for k in keep} for b in doc["installed"]],
                "bundles": sorted((b["name"], b["version"], b["root"], json.dumps(b["steps"], sort_keys=True),
                                   b["installed"]) for b in doc["bundles"]),
                "images": doc["registry"]["images"],
                "models": [{k: v for k, v in m.items() if k != "path"} for m in doc["models"]["versions"]]}


SiteMaker = Callable[..., SiteUnderTest]


@pytest.fixture
def make_site(registry_factory: Callable[..., RegistryProcess], releases: Releases,
              tmp_path: Path) -> SiteMaker:
    """``make_site(name, clone_of=None, k3s=False)``: a site with its own registry, NAS and state dir."""

    def make(name: str, clone_of: SiteUnderTest | None = None, k3s: bool = False) -> SiteUnderTest:
        reg = registry_factory()
        d = tmp_path / name
        site_yaml = write_site(d, reg.host, trust=[releases.pub])
        if k3s:  # a k3s auto-deploy directory as the cluster, so plan/approve/apply run too
            doc = json.loads(site_yaml.read_text())
            doc["spec"]["cluster"] = {"manifestsDir": str(d / "k3s")}
            doc["spec"]["models"]["nfs"] = {"server": "10.0.0.5", "path": "/export/models"}
            site_yaml.write_text(json.dumps(doc))
            (d / "k3s").mkdir()
        site = load_site(site_yaml)
        if clone_of is not None:  # the same registry storage, NAS and state as the other site
            reg.stop()
            shutil.rmtree(reg.data_dir)
            shutil.copytree(clone_of.registry.data_dir, reg.data_dir)
            reg.start()
            for attr in ("models_root", "state_dir"):
                dst = getattr(site, attr)
                shutil.rmtree(dst, ignore_errors=True)
                if getattr(clone_of.site, attr).exists():
                    shutil.copytree(getattr(clone_of.site, attr), dst)
        return SiteUnderTest(reg, site, d)

    return make


def run_scenario(name: str, releases: Releases, base: Release, target_spec: Path, make_site: SiteMaker,
                 *, via_cli: bool = False) -> tuple[Release, DeltaResult]:
    """Build full + delta, install base everywhere, then full on one clone, delta on the other."""
    target = releases.full(target_spec)
    delta, delta_seconds = releases.delta(target_spec, base)
    assert full_root_digest(delta.root) == target.root.digest, "a delta pins exactly the full target"
    full_size, delta_size = target.full.stat().st_size, delta.output.stat().st_size
    NUMBERS.append(f"{name}: full {full_size} B, delta {delta_size} B ({100 * delta_size / full_size:.2f}%), "
                   f"full build {target.seconds:.1f}s, delta build {delta_seconds:.1f}s")
    assert delta_size < full_size

    a = make_site(f"{name}-full")
    a.install(base.full)
    b = make_site(f"{name}-delta", clone_of=a)
    assert b.snapshot() == a.snapshot()
    a.install(target.full)
    if via_cli:
        for verb in ("verify", "load", "stage"):
            r = run_installer(verb, delta.output, "--site", b.yaml)
            assert r.returncode == 0, r.stderr
        done = b.snapshot()
        for verb in ("load", "stage"):  # a rerun after completion is a no-op, not a "wrong base"
            r = run_installer(verb, delta.output, "--site", b.yaml)
            assert r.returncode == 0, r.stderr
        assert b.snapshot() == done
        # The state dir records the full target: same name, version, root, signers, steps.
        assert b.status() == a.status()
    else:
        b.install(delta.output)
    reg_a, nas_a, inst_a = a.snapshot()
    reg_b, nas_b, inst_b = b.snapshot()
    assert reg_b == reg_a, "registry storage differs between the full and the delta install"
    assert nas_b == nas_a, "NAS trees differ between the full and the delta install"
    assert inst_a == inst_b and inst_b[-1] == target.root.digest
    return target, delta


def methods(delta: DeltaResult) -> dict[str, str]:
    """``what`` -> method, for assertions on the plan."""
    return {e["what"]: e["method"] for e in delta.root.delta["rebuild"].values()}  # type: ignore[index]


# --- S1..S5 ------------------------------------------------------------------------------------

def push_image_with_extra_layer(world: BundleWorld, tmp: Path, tag: str) -> str:
    """rag/vector-db 1.0 plus one layer, pushed to the source registry as ``rag/vector-db:<tag>``."""
    from edgebundle.registry import Registry
    from examples.images import IMAGES as EXAMPLES
    from examples.images import REF_NAME, build_layout, push_layout

    spec = next(i for i in EXAMPLES if i.repository == "rag/vector-db")
    layout_dir = tmp / "s1-layout"
    build_layout(layout_dir, version="1.0", extra_layer=b"S1: the one new layer\n" * 100, images=[spec])
    index = json.loads((layout_dir / "index.json").read_text())
    index["manifests"][0]["annotations"][REF_NAME] = f"rag/vector-db:{tag}"
    (layout_dir / "index.json").write_text(json.dumps(index))
    with Registry(world.source.host) as reg:
        push_layout(layout_dir, reg)
    return f"rag/vector-db:{tag}"


def test_s1_one_image_gets_one_new_layer(releases: Releases, base_release: Release, make_site: SiteMaker,
                                         tmp_path: Path) -> None:
    ref = push_image_with_extra_layer(releases.world, tmp_path, "1.0-s1")
    spec = releases.spec("s1", "1.1.0", images=(IMAGES[0], ref))
    _, delta = run_scenario("S1 new layer", releases, base_release, spec, make_site, via_cli=True)
    m = methods(delta)
    # the new layer is small (2.2 KB): it travels in the pack of small documents
    new_layer = [w for w, how in m.items() if w.startswith("image") and "vector-db" in w and how == "packed"]
    assert new_layer == ["image rag/vector-db:1.0-s1 linux/amd64 layer 3"]
    assert m["image rag/vector-db:1.0-s1 linux/amd64 manifest"] in ("bsdiff4", "zstd-patch-from")
    assert m["image rag/vector-db:1.0-s1 linux/amd64 config"] in ("bsdiff4", "zstd-patch-from")
    assert sum(1 for w, how in m.items() if w.startswith("image") and how == "base") >= 6


def test_s2_only_manifests_change(releases: Releases, base_release: Release, make_site: SiteMaker,
                                  tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(releases.world.manifests, manifests)
    first = sorted(manifests.rglob("*.yaml"))[-1]
    first.write_text(first.read_text() + "\n# S2: a changed manifest\n")
    spec = releases.spec("s2", "1.1.0", manifests=manifests)
    _, delta = run_scenario("S2 manifests", releases, base_release, spec, make_site)
    m = methods(delta)
    assert all(how == "base" for w, how in m.items() if w.startswith("image"))
    assert m[f"k8s manifest {first.relative_to(manifests).as_posix()}"] == "packed"
    # Only small documents travel: every image and model file comes from the site, and the small
    # documents (manifests, configs, index.json, the SBOM) in one zstd pack beside the root.
    with tarfile.open(delta.output) as t:
        names = t.getnames()
        envelope = json.loads(t.extractfile("edgebundle/root.dsse.json").read())  # type: ignore[union-attr]
    assert names[:2] == ["oci-layout", "edgebundle/root.dsse.json"] and len(names) == 3, names
    [(pack, carried)] = delta.root.delta["carried"].items()  # type: ignore[index]
    assert carried["kind"] == "pack" and names[2] == "blobs/sha256/" + pack.split(":")[1]
    assert envelope["payloadType"] == "application/vnd.edgebundle.root.v1+json+zstd"
    # issue 16's budget: 1.1 x a zstd patch (~50 B) + 16 KiB for the whole delta tar
    assert delta.output.stat().st_size <= 16_437


def edit_gguf_string(src: Path, dst: Path, key: str, value: str) -> None:
    """Copy a GGUF with one string metadata value replaced (header rewritten, tensors streamed).

    Tensor offsets are relative to the data section, so only the header changes; its new
    length moves the data section (and every tensor's absolute offset) when it crosses an
    alignment boundary.
    """
    h = read_gguf_file(str(src))
    old = h.metadata[key].encode()
    kv = struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", 8)
    with open(src, "rb") as f:
        head = f.read(h.data_offset)
        first = h.tensors[0].name.encode()
        table_at = head.index(struct.pack("<Q", len(first)) + first)
        table = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.dims) + 4 + 8 for t in h.tensors)
        at = head.index(kv + struct.pack("<Q", len(old)) + old)
        new_head = (head[:at] + kv + struct.pack("<Q", len(value.encode())) + value.encode()
                    + head[at + len(kv) + 8 + len(old):table_at + table])
        new_head += b"\0" * (-len(new_head) % h.alignment)
        with open(dst, "wb") as out:
            out.write(new_head)
            f.seek(h.data_offset)
            while chunk := f.read(CHUNK):
                out.write(chunk)


def test_s3_only_gguf_metadata_changes_real_smollm2(releases: Releases, make_site: SiteMaker,
                                                    tmp_path: Path) -> None:
    original = fetched_models().smollm2_gguf
    edited = tmp_path / "v2" / original.name
    edited.parent.mkdir()
    edit_gguf_string(original, edited, "general.name", "SmolLM2 135M Instruct, edge fleet build 2 (metadata only)")
    old_h, new_h = read_gguf_file(str(original)), read_gguf_file(str(edited))
    assert new_h.metadata["general.name"].endswith("(metadata only)")
    assert new_h.data_offset != old_h.data_offset, "every tensor's absolute offset must move"
    assert [t.offset for t in new_h.tensors] == [t.offset for t in old_h.tensors]

    def llm(version: str, path: Path) -> dict[str, Any]:
        return {"name": "smollm2", "kind": "llm", "version": version, "path": str(path)}

    images = ("rag/vector-db:1.0",)
    base = releases.full(releases.spec("s3-base", "1.0.0", models=[llm("1.0", original)], images=images))
    spec = releases.spec("s3", "1.1.0", models=[llm("1.1", edited)], images=images)
    _, delta = run_scenario("S3 SmolLM2 metadata", releases, base, spec, make_site)
    entry = next(e for e in delta.root.delta["rebuild"].values() if e["what"] == f"model smollm2 1.1 {original.name}")  # type: ignore[index]
    assert entry["method"] == "gguf-tensors"
    assert entry["carriedBytes"] < 64 * 1024, entry["reason"]
    assert "272 tensors: 272 unchanged" in entry["reason"]
    assert delta.output.stat().st_size < original.stat().st_size // 100


def test_s4_five_percent_of_tensors_change(releases: Releases, make_site: SiteMaker, tmp_path: Path) -> None:
    for d in ("old", "new"):
        (tmp_path / d).mkdir()
    old = write_gguf(tmp_path / "old" / "gen.gguf", n_tensors=40, rows=2048, seed=4)
    new = write_gguf(tmp_path / "new" / "gen.gguf", n_tensors=40, rows=2048, seed=4, change_fraction=0.05)
    size = new.stat().st_size
    assert 20 * 2**20 < size < 64 * 2**20

    def llm(version: str, path: Path) -> dict[str, Any]:
        return {"name": "gen-llm", "kind": "llm", "version": version, "path": str(path)}

    base = releases.full(releases.spec("s4-base", "1.0.0", models=[llm("1.0", old), "embedder"]))
    spec = releases.spec("s4", "1.1.0", models=[llm("1.1", new), "embedder"])
    target, delta = run_scenario("S4 5% tensors", releases, base, spec, make_site)
    entry = next(e for e in delta.root.delta["rebuild"].values() if e["what"] == "model gen-llm 1.1 gen.gguf")  # type: ignore[index]
    assert entry["method"] == "gguf-tensors", entry
    assert "40 tensors: 38 unchanged, 2 changed" in entry["reason"]
    assert entry["carriedBytes"] < 0.08 * size
    assert delta.output.stat().st_size < 0.15 * target.full.stat().st_size


def test_s5_a_model_is_added_and_one_removed(releases: Releases, base_release: Release, make_site: SiteMaker,
                                             tmp_path: Path) -> None:
    reranker = tmp_path / "reranker"
    reranker.mkdir()
    (reranker / "weights.bin").write_bytes(os.urandom(200_000))
    (reranker / "config.json").write_text('{"model_type": "cross-encoder"}\n')
    new_model = {"name": "reranker", "kind": "embedding", "version": "1.0", "path": str(reranker)}
    spec = releases.spec("s5", "1.1.0", models=["tiny-llm", "embedder", new_model])
    _, delta = run_scenario("S5 add+remove model", releases, base_release, spec, make_site)
    m = methods(delta)
    assert m["model reranker 1.0 weights.bin"] == "whole"
    assert not any("rag-index" in w for w in m)
    re_encoded = [e for e in delta.root.delta["rebuild"].values()  # type: ignore[index]
                  if e.get("file", {}).get("encoding") == "tar+zstd" and e["method"] == "base"]
    assert re_encoded, "unchanged tar+zstd files must be re-encoded at the site, not carried"


# --- refusals ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s2_delta(releases: Releases, base_release: Release, tmp_path_factory: pytest.TempPathFactory) -> DeltaResult:
    manifests = tmp_path_factory.mktemp("s2b") / "manifests"
    shutil.copytree(releases.world.manifests, manifests)
    (manifests / "zz-extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n")
    return releases.delta(releases.spec("refusals", "1.2.0", manifests=manifests), base_release)[0]


def test_a_site_without_the_base_is_refused_naming_it(s2_delta: DeltaResult, make_site: SiteMaker) -> None:
    site = make_site("empty")
    before = site.snapshot()
    with pytest.raises(BaseMissingError) as e:
        site.install(s2_delta.output)
    base = s2_delta.root.base
    assert base is not None
    assert f"{base.name} {base.version} (root {base.root})" in e.value.message
    assert site.snapshot() == before


def test_a_delta_for_another_base_is_refused(releases: Releases, s2_delta: DeltaResult, make_site: SiteMaker) -> None:
    other = releases.full(releases.spec("other-base", "1.0.1", models=["tiny-llm"]))
    site = make_site("other")
    site.install(other.full)
    before = site.snapshot()
    with pytest.raises(WrongBaseError) as e:
        site.install(s2_delta.output)
    base = s2_delta.root.base
    assert base is not None
    assert base.root in e.value.message and f"{base.name} {base.version}" in e.value.message
    assert site.snapshot() == before


@pytest.mark.parametrize("damage", ["nas-file", "registry-manifest"])
def test_a_site_missing_part_of_the_base_is_refused_before_any_change(
        damage: str, base_release: Release, s2_delta: DeltaResult, make_site: SiteMaker) -> None:
    site = make_site(f"damaged-{damage}")
    site.install(base_release.full)
    if damage == "nas-file":
        victim = next(site.site.models_root.glob("llm/tiny-llm/1.0/*.gguf"))
        victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")  # changed in place
        expect = str(victim)
    else:
        from edgebundle.registry import Registry
        im = next(i for i in base_release.root.images if i.repository == "rag/vector-db")
        with Registry(site.registry.host) as reg:
            reg.delete_manifest(im.repository, im.digest)
        expect = f"rag/vector-db@{im.digest}"
    before = site.snapshot()
    with pytest.raises(BaseMissingError) as e:
        site.install(s2_delta.output)
    assert "lacks 1 of its inputs" in e.value.message and expect in e.value.message
    assert "rag-edge 1.0.0" in e.value.message
    assert site.snapshot() == before


@pytest.fixture(scope="module")
def patched_delta(releases: Releases, base_release: Release, tmp_path_factory: pytest.TempPathFactory) -> DeltaResult:
    """A delta that carries a patch: the embedder's tokenizer.json edited (patched against the old one)."""
    emb = tmp_path_factory.mktemp("emb-1.1") / "embedder"
    shutil.copytree(releases.world.models["embedder"]["path"], emb)
    tok = emb / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"token19999"', '"token-edited"'))
    model = {**releases.world.models["embedder"], "version": "1.1", "path": str(emb)}
    spec = releases.spec("patched", "1.4.0", models=["tiny-llm", model, "rag-index"])
    return releases.delta(spec, base_release)[0]


def test_a_tampered_patch_is_refused_naming_it_and_changes_nothing(
        base_release: Release, patched_delta: DeltaResult, make_site: SiteMaker, tmp_path: Path) -> None:
    carried = patched_delta.root.delta["carried"]  # type: ignore[index]
    [patch] = [d for d, c in carried.items() if c["kind"] == "patch"]
    [entry] = [e for e in patched_delta.root.delta["rebuild"].values() if e.get("patch") == patch]  # type: ignore[index]
    assert entry["what"] == "model embedder 1.1 tokenizer.json" and entry["method"] == "zstd-patch-from"
    assert describe_carried(patched_delta.root, patch) == \
        "the zstd-patch-from patch that rebuilds model embedder 1.1 tokenizer.json"
    bad = tmp_path / "tampered.tar"
    shutil.copyfile(patched_delta.output, bad)
    flip_byte(bad, layout.blob_path(patch))
    site = make_site("tampered")
    site.install(base_release.full)
    before, status = site.snapshot(), site.status()
    for verb in ("verify", "load", "stage", "install"):
        r = run_installer(verb, bad, "--site", site.yaml, *(["--yes", "--operator", "ines"] if verb == "install" else []))
        assert r.returncode == 4, (verb, r.stdout, r.stderr)
        assert f"{layout.blob_path(patch)}: content digest" in r.stderr and "altered" in r.stderr, r.stderr
    assert site.snapshot() == before and site.status() == status
    r = run_installer("stage", patched_delta.output, "--site", site.yaml)  # the intact delta still applies
    assert r.returncode == 0, r.stderr


def test_installer_install_of_a_delta_deploys_what_the_full_bundle_deploys(
        releases: Releases, make_site: SiteMaker) -> None:
    """verify + load + stage + plan + approve + apply of a delta, on a k3s manifests-directory site."""
    from tests.test_plan_apply import IMAGES_V1, _models  # what the shipped manifests deploy

    base = releases.full(releases.spec("k3s-base", "1.0.0", models=_models(releases.world, "v1.0"), images=IMAGES_V1))
    spec = releases.spec("k3s", "1.1.0", models=_models(releases.world, "v1.1"), images=IMAGES_V1)
    target = releases.full(spec)
    delta = releases.delta(spec, base)[0]
    assert delta.output.stat().st_size < target.full.stat().st_size

    def install_cli(site: SiteUnderTest, bundle: Path, revision: int) -> None:
        r = run_installer("install", bundle, "--site", site.yaml, "--operator", "ines", "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"Revision {revision}: rag-edge " in r.stdout and "k3s applies the file itself" in r.stdout

    def deployed(site: SiteUnderTest) -> tuple[str, list[tuple[Any, ...]]]:
        [written] = list((site.dir / "k3s").iterdir())
        revisions = [(r["revision"], r["status"], r["operator"], r.get("bundle"))
                     for r in RevisionStore(site.state).all()]
        return written.read_text().replace(site.registry.host, "SITE-REGISTRY"), revisions

    # Two sites that each installed the base themselves (a clone's registry has another address,
    # which would make every rendered image reference differ from revision 1).
    a, b = make_site("k3s-full", k3s=True), make_site("k3s-delta", k3s=True)
    for site in (a, b):
        install_cli(site, base.full, 1)
    install_cli(a, target.full, 2)
    install_cli(b, delta.output, 2)
    assert b.snapshot() == a.snapshot()
    assert b.status() == a.status()
    file_a, revisions_a = deployed(a)
    assert "/models/llm/smollm2-135m/v1.1" in file_a
    assert deployed(b) == (file_a, revisions_a)
    assert [e["root"] for e in b.state.installed()][-1] == target.root.digest
    r = run_installer("install", delta.output, "--site", b.yaml, "--yes", "--operator", "ines")  # a rerun changes nothing
    assert r.returncode == 0 and "Nothing to change" in r.stdout, r.stdout + r.stderr
    assert deployed(b) == (file_a, revisions_a)


# --- the CLI -----------------------------------------------------------------------------------

def bundle_cli(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUNDLE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_create_inspect_and_verify_a_delta(releases: Releases, base_release: Release,
                                               s2_delta: DeltaResult, tmp_path: Path) -> None:
    fitting = releases.world.fitting_manifests([{"ref": f"{releases.world.source.host}/{IMAGES[1]}"}],
                                               ["tiny-llm", "embedder"])
    spec = releases.spec("cli", "1.3.0", models=["tiny-llm", "embedder"], manifests=fitting)
    out = tmp_path / "delta-dir"
    r = bundle_cli("create", spec, "--key", releases.key, "--base", base_release.full, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["delta"]["deltaBytes"] < created["delta"]["fullBundleBytes"]

    r = bundle_cli("inspect", out)
    assert r.returncode == 0, r.stderr
    assert "DELTA against rag-edge 1.0.0" in r.stdout
    for word in ("METHOD", "BASE", "RATIO", "base", "packed"):
        assert word in r.stdout
    doc = json.loads(bundle_cli("inspect", out, "--json").stdout)["delta"]
    row = next(b for b in doc["blobs"] if b["what"] == "model tiny-llm 1.0 tiny-llm.Q8_0.gguf")
    assert row["method"] == "base" and row["base"] and row["carriedBytes"] == 0 and row["ratio"] == 0

    r = bundle_cli("verify", out, "--pubkey", releases.pub, "--base", base_release.full, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["delta"]["rebuiltBytes"] > doc["fullBlobBytes"]  # every blob, rebuilt
    r = bundle_cli("verify", out, "--pubkey", releases.pub)
    assert r.returncode == 0 and "--base" in r.stdout
    # Against the wrong base: refused, naming the base the delta needs.
    r = bundle_cli("verify", s2_delta.output, "--pubkey", releases.pub, "--base", out)
    assert r.returncode != 0 and "applies to base rag-edge 1.0.0" in r.stderr


def test_delta_create_reads_only_the_base_blobs_it_patches(releases: Releases, base_release: Release,
                                                           tmp_path: Path) -> None:
    """The base is trusted through its signed root; a base blob is hashed only when a patch needs it.

    A base whose LLM file and image layers are damaged (same size, signed root intact) still
    yields a manifests-only delta, since nothing reads those blobs; a delta that patches the LLM
    file is refused, naming the damaged base blob.
    """
    damaged = tmp_path / "damaged-base.tar"
    shutil.copyfile(base_release.full, damaged)
    llm = next(m for m in base_release.root.models if m.name == "tiny-llm").files[0]
    assert llm.encoding == "identity"
    layers = [d for d, p in base_release.root.blobs.items() if p.mediaType.startswith("application/vnd.oci.image.layer")]
    for digest in [llm.blob, *layers]:
        flip_byte(damaged, layout.blob_path(digest))
    base = Release(base_release.spec, damaged, base_release.root, 0.0)

    manifests = tmp_path / "manifests"
    shutil.copytree(releases.world.manifests, manifests)
    changed = sorted(manifests.rglob("*.yaml"))[-1]
    changed.write_text(changed.read_text() + "\n# a changed manifest\n")
    result, _ = releases.delta(releases.spec("reads-s2", "1.1.0", manifests=manifests), base)
    carried = result.root.delta["carried"]  # type: ignore[index]
    assert llm.blob not in carried and not set(layers) & set(carried)
    assert result.delta_bytes < 256 * 1024

    gguf = tmp_path / "tiny-v2.gguf"
    edit_gguf_string(Path(releases.world.models["tiny-llm"]["path"]), gguf, "general.name", "tiny, build 2")
    models = [{**releases.world.models["tiny-llm"], "path": str(gguf), "version": "1.1"}, *MODELS[1:]]
    with pytest.raises(Exception, match=re.escape(layout.blob_path(llm.blob)) + ".*does not match the signed"):
        releases.delta(releases.spec("reads-s3", "1.1.0", models=models), base)


def _layer_descriptors(bundle: Path, root: Root, name: str) -> list[dict[str, Any]]:
    """The layer descriptors of model ``name``'s manifest, read from the bundle tar with tarfile."""
    manifest = next(m for m in root.models if m.name == name).manifest
    with tarfile.open(bundle) as t:
        f = t.extractfile(layout.blob_path(manifest))
        assert f is not None
        return json.load(f)["layers"]


def test_an_unchanged_compressed_model_file_is_pinned_from_the_base_not_encoded_again(
        releases: Releases, base_release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tar+zstd`` layers depend only on the file (inner tar mtime 0), so a delta whose base was
    made by the same encoder pins the base's layer and compresses nothing; the layer's tar, read
    with Python's tarfile, has mtime 0 whatever the release's ``created``."""
    packed = [(m.name, f) for m in base_release.root.models for f in m.files if f.encoding == "tar+zstd"]
    assert packed, "the test world must have a compressed model file"
    name, f = packed[0]
    with tarfile.open(base_release.full) as t:
        blob = t.extractfile(layout.blob_path(f.blob))
        assert blob is not None
        inner = zstandard.ZstdDecompressor().stream_reader(blob)
        with tarfile.open(fileobj=inner, mode="r|") as layer_tar:
            member = next(iter(layer_tar))
            assert (member.name, member.size, member.mtime) == (f.path, f.size, 0)
    descriptor = next(d for d in _layer_descriptors(base_release.full, base_release.root, name)
                      if d["digest"] == f.blob)
    assert descriptor["annotations"]["dev.edgebundle.file.encoder"] == compress.ENCODER

    def no_encoding(*args: Any, **kwargs: Any) -> str:
        raise AssertionError(f"{args[1]} was compressed again although the base holds its layer")

    manifests = tmp_path / "manifests"
    shutil.copytree(releases.world.manifests, manifests)
    changed = sorted(manifests.rglob("*.yaml"))[-1]
    changed.write_text(changed.read_text() + "\n# a changed manifest\n")
    spec = releases.spec("reuse", "1.1.0", manifests=manifests)
    with monkeypatch.context() as m:
        m.setattr(compress, "write_tar_zstd", no_encoding)
        result, _ = releases.delta(spec, base_release)
    target_file = next(x for mm in result.root.models if mm.name == name for x in mm.files if x.path == f.path)
    assert (target_file.blob, target_file.encoding) == (f.blob, "tar+zstd")
    assert result.root.delta["rebuild"][f.blob]["method"] == "base"  # type: ignore[index]

    # Another encoder in the base's annotation: the file is encoded again, to the same bytes here.
    monkeypatch.setattr(compress, "ENCODER", compress.ENCODER + " (another)")
    calls: list[str] = []
    real = compress.write_tar_zstd

    def counting(*args: Any, **kwargs: Any) -> str:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(compress, "write_tar_zstd", counting)
    (spec.parent / "delta.tar").unlink()
    again, _ = releases.delta(spec, base_release)
    assert f.path in calls
    assert next(x for mm in again.root.models if mm.name == name for x in mm.files if x.path == f.path).blob == f.blob
