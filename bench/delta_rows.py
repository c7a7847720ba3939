"""Delta rows S1-S5: ``bundle create --base`` against ``zstd --patch-from`` of the changed files.

Each scenario derives a release 1.1.0 from the bench's base release 1.0.0 (the reference bundle
the installer rows use) by one kind of change, as in tests/test_delta_scenarios.py:

- S1 one image gets one new layer;  S2 only the Kubernetes manifests change;
- S3 only GGUF metadata changes (``general.name`` rewritten: the data section moves);
- S4 5% of the GGUF's weight tensors change;  S5 a model is added and another removed.

The baseline is what a user would script instead: for every file of the target that the base
does not have, ``zstd -T0 -3 --patch-from=<its predecessor>`` (plain ``zstd -T0 -3`` when it has
none). The notes also give the *whole-artifact differential*: every changed image shipped whole
(all its blobs) and every changed or added model file / manifest shipped whole, which is what
"ship only what changed" costs without binary diffing.

Invariants:
- The target inputs are generated (untimed) next to the base inputs, deterministically; only
  files a scenario changes are written anew, every other input is the base's own file.
- ``--patch-from`` needs its reference in memory (zstd caps it at 2 GiB), so with
  ``BENCH_MODEL_GB`` above 2 the GGUF scenarios are skipped, with a log line saying so.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import inputs as gen
from bench.context import Bench, tool
from bench.measure import BenchError, Command, shell
from bench.rows import RowResult, measure_pair, mib, rm

#: zstd's largest window (``--long=31``): a larger ``--patch-from`` reference is refused.
ZSTD_MAX_REFERENCE = 2 * gen.GIB
#: S1's new layer: pseudo-random text, gzip-compressible like real files.
S1_LAYER_BYTES = 1 * gen.MIB
S1_IMAGE = "rag/vector-db"


@dataclass
class Scenario:
    """One target release: its spec overrides and the files the baseline must ship."""

    key: str
    title: str
    spec_changes: dict[str, object]
    #: (new file, its predecessor in the base or None): what the baseline patches or compresses.
    changed: list[tuple[Path, Path | None]]
    #: bytes of the whole-artifact differential (whole changed images, whole changed files).
    whole_bytes: int


def _image_parts(layout: Path, ref: str) -> dict[str, Path]:
    """Role (``index``, ``<platform> manifest``, ``<platform> config``, ``<platform> layer N``) -> blob."""
    def blob(digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return layout / "blobs" / algo / hexd

    def manifest(digest: str, platform: str, out: dict[str, Path]) -> None:
        path = blob(digest)
        doc = json.loads(path.read_text())
        if "manifests" in doc:
            out["index"] = path
            for child in doc["manifests"]:
                p = child.get("platform", {})
                manifest(child["digest"], f"{p.get('os')}/{p.get('architecture')}", out)
            return
        out[f"{platform} manifest"] = path
        out[f"{platform} config"] = blob(doc["config"]["digest"])
        for i, layer in enumerate(doc["layers"]):
            out[f"{platform} layer {i}"] = blob(layer["digest"])

    for desc in json.loads((layout / "index.json").read_text())["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
            parts: dict[str, Path] = {}
            manifest(desc["digest"], "", parts)
            return parts
    raise BenchError(f"{ref} is not in the OCI layout {layout}")


def _size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


# -- the scenarios (each writes its target inputs below ``root``) ---------------------------

def s1_new_layer(bench: Bench, root: Path) -> Scenario:
    from edgebundle.registry import Registry
    from examples.images import IMAGES, build_layout, push_layout

    old_ref = next(r for r in bench.image_refs if r.startswith(S1_IMAGE + ":"))
    new_ref = f"{S1_IMAGE}:1.0-s1"
    layout = root / "oci"
    spec = next(i for i in IMAGES if i.repository == S1_IMAGE)
    layer = random.Random(11).randbytes(S1_LAYER_BYTES // 2).hex().encode()  # small: 1 MiB of hex text
    build_layout(layout, version="1.0", extra_layer=layer, images=[spec])
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = new_ref
    (layout / "index.json").write_text(json.dumps(index))
    with Registry(bench.source.host) as reg:
        push_layout(layout, reg)
    old, new = _image_parts(bench.inputs.oci, old_ref), _image_parts(layout, new_ref)
    changed = [(path, old.get(role)) for role, path in sorted(new.items())
               if old.get(role) is None or old[role].name != path.name]
    refs = [new_ref if r == old_ref else r for r in bench.image_refs]
    manifests = root / "manifests"  # the workload runs the new tag (what bundle create checks)
    gen.copy_manifests(bench.inputs.manifests, manifests, {f"/{old_ref}\n": f"/{new_ref}\n"})
    return Scenario("S1", "one image gets one new layer", {"image_refs": refs, "manifests": manifests}, changed,
                    _size(list(new.values())))


def s2_manifests(bench: Bench, root: Path) -> Scenario:
    manifests = root / "manifests"
    shutil.copytree(bench.inputs.manifests, manifests)
    last = sorted(manifests.glob("*.yaml"))[-1]
    with open(last, "a") as f:
        f.write("\n# S2: a changed manifest\n")
    return Scenario("S2", "only the Kubernetes manifests change", {"manifests": manifests},
                    [(last, bench.inputs.manifests / last.name)], last.stat().st_size)


def _gguf_scenario(bench: Bench, root: Path, key: str, title: str, version: gen.GGUFVariant) -> Scenario:
    llm = root / bench.inputs.llm.name
    gen.write_gguf(llm, bench.settings.model_bytes, version=version)
    return Scenario(key, title, {"llm": llm, "llm_version": "v2"}, [(llm, bench.inputs.llm)], llm.stat().st_size)


def s3_gguf_metadata(bench: Bench, root: Path) -> Scenario:
    name = "bench-llm, fleet build 2: only the metadata changed, every tensor's absolute offset moved"
    return _gguf_scenario(bench, root, "S3", "only GGUF metadata changes",
                          gen.GGUFVariant(metadata={"general.name": name}))


def s4_gguf_tensors(bench: Bench, root: Path) -> Scenario:
    plan = gen.GGUFPlan.for_size(bench.settings.model_bytes)
    changed = gen.changed_tensors(plan, 0.05)
    return _gguf_scenario(bench, root, "S4", f"5% of the GGUF's tensors change ({len(changed)} of {plan.tensors})",
                          gen.GGUFVariant(variant=1, changed=changed))


def s5_model_swap(bench: Bench, root: Path) -> Scenario:
    embed = root / "bench-embed-2"
    gen.write_embedding_dir(embed, bench.settings.embed_mb * gen.MIB // 2, seed=3)
    files = sorted(p for p in embed.rglob("*") if p.is_file())
    manifests = root / "manifests"  # the workloads load the new model
    gen.copy_manifests(bench.inputs.manifests, manifests, {"bench-embed": "bench-embed-2"})
    return Scenario("S5", "a model is added (bench-embed-2) and one removed (bench-embed)",
                    {"embedding": embed, "embedding_name": "bench-embed-2", "manifests": manifests},
                    [(p, None) for p in files], _size(files))


#: key -> (make the scenario's target inputs, does its baseline patch the GGUF)
SCENARIOS: dict[str, tuple[Callable[[Bench, Path], Scenario], bool]] = {
    "S1": (s1_new_layer, False), "S2": (s2_manifests, False), "S3": (s3_gguf_metadata, True),
    "S4": (s4_gguf_tensors, True), "S5": (s5_model_swap, False),
}


# -- measuring ------------------------------------------------------------------------------

def _patch_script(changed: list[tuple[Path, Path | None]], out_dir: Path) -> list[str]:
    """The baseline: one zstd per changed file, ``--patch-from`` its predecessor when it has one."""
    q = shlex.quote
    lines = [f"mkdir -p {q(str(out_dir))}"]
    for i, (new, old) in enumerate(changed):
        patch = f"--patch-from={q(str(old))} " if old is not None else ""
        lines.append(f"zstd -T0 -3 -q -f {patch}{q(str(new))} -o {q(str(out_dir / f'{i}.zst'))}")
    return shell("\n".join(lines))


def run_scenario(bench: Bench, make: Callable[[Bench, Path], Scenario]) -> RowResult:
    base = bench.bundle()
    root = bench.tmp / "delta" / make.__name__
    root.mkdir(parents=True)
    with bench.step(f"delta inputs: {make.__name__}"):
        sc = make(bench, root)
        spec = root / "spec" / "bundle.yaml"
        bench.write_spec(spec, version="1.1.0", **sc.spec_changes)
    out, patches = root / "delta.tar", root / "patches"

    def expect_delta() -> None:
        if not out.is_file() or out.stat().st_size == 0:
            raise BenchError(f"{out} was not written")

    ours = Command(f"delta {sc.key} bundle create --base",
                   [tool("bundle"), "create", str(spec), "--key", str(bench.key), "-o", str(out),
                    "--base", str(base), "--json"],
                   prepare=lambda: rm(out), check=expect_delta, ours=True)
    baseline = Command(f"delta {sc.key} zstd --patch-from", _patch_script(sc.changed, patches),
                       prepare=lambda: rm(patches))
    row = measure_pair(bench, f"delta {sc.key}", "`bundle create --base` (delta size in notes)",
                       "`zstd -T0 -3 --patch-from` of each changed file", ours, baseline)
    patch_bytes = _size(list(patches.iterdir()))
    budget = int(1.1 * patch_bytes) + 16 * 1024  # issue 16's size target: 1.1 x zstd + 16 KiB
    row.notes.append(f"{sc.title}: delta {_kib(out.stat().st_size)} (target 1.1 x zstd + 16 KiB = {_kib(budget)}), "
                     f"zstd patches {_kib(patch_bytes)}, whole-artifact differential {_kib(sc.whole_bytes)}, "
                     f"full bundle {mib(base.stat().st_size)}")
    row.sizes = {"delta": out.stat().st_size, "patches": patch_bytes, "whole": sc.whole_bytes,
                 "full": base.stat().st_size}
    if not os.environ.get("BENCH_KEEP_DELTA"):  # set it to inspect the scenario's delta afterwards
        shutil.rmtree(root, ignore_errors=True)  # S3/S4 each leave a model-sized file otherwise
    return row


def _kib(n: int) -> str:
    """A size readable at every scale the rows produce (a few bytes up to the whole model)."""
    if n < 100 * 1024:  # exact where a size target is in bytes (1.1 x the patches + 16 KiB)
        return f"{n:,} B"
    return f"{n / 1024:,.0f} KiB" if n < 10 * gen.MIB else mib(n)


def delta(bench: Bench) -> list[RowResult]:
    rows = []
    for key, (make, patches_gguf) in SCENARIOS.items():
        if key not in bench.settings.delta:
            continue
        if patches_gguf and bench.settings.model_bytes > ZSTD_MAX_REFERENCE:
            bench.log(f"row delta {key}: skipped (zstd --patch-from takes at most a 2 GiB reference)")
            continue
        rows.append(run_scenario(bench, make))
    return rows
