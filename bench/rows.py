"""The rows: edgebundle's command against the baseline a user would script, same inputs.

| row | edgebundle | baseline |
|---|---|---|
| create | ``bundle create`` of the set | ``sha256sum`` of the inputs, then ``tar -cf - | zstd -T0 -3`` |
| verify | ``installer verify`` | ``openssl dgst -sha256`` over the bundle |
| verify-cold | the same, page cache dropped before each run | the same |
| load | ``installer load`` into a fresh registry | ``skopeo copy --all`` of each image from the OCI layout |
| stage | ``installer stage`` into a fresh NAS dir | ``cp`` of the model files + ``sha256sum`` of the copies |

Invariants:
- Every run starts from a fresh destination (registry data dir, NAS dir, state dir), prepared
  outside the timed window, and is checked afterwards (the images resolve to the expected
  digests, the staged files have the expected sizes, the outputs exist).
- Both sides of a row read the same bytes: the same generated inputs, or the same bundle.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.context import Bench, can_drop_caches, drop_caches, tool
from bench.measure import BenchError, Command, Summary, shell


@dataclass
class RowResult:
    """One line of the results table."""

    name: str
    ours: str
    baseline: str
    a: Summary
    b: Summary
    notes: list[str] = field(default_factory=list)
    #: Byte counts a row reports besides time (the delta rows: delta, patches, whole, full).
    sizes: dict[str, int] = field(default_factory=dict)
    #: The machine's 1-minute load average when the row started and ended (others' work too).
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def ratio(self) -> float:
        return self.a.seconds / self.b.seconds if self.b.seconds else float("inf")


def measure_pair(bench: Bench, name: str, ours: str, baseline: str, a: Command, b: Command) -> RowResult:
    """``runs`` interleaved runs of ``a`` (edgebundle) and ``b`` (the baseline), summarised."""
    bench.log(f"row {name}: {ours} vs {baseline} ({bench.settings.runs} runs, interleaved)")
    before = os.getloadavg()[0]
    sa, sb = bench.runner.interleave(a, b, bench.settings.runs, bench.log)
    return RowResult(name, ours, baseline, Summary.of(sa), Summary.of(sb),
                     load=(before, os.getloadavg()[0]))


def rm(*paths: Path) -> None:
    """Remove files or trees if present (a fresh output before each run)."""
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def mib(n: int) -> str:
    """``n`` bytes as whole MiB, for the notes."""
    return f"{n / (1 << 20):,.0f} MiB"


# -- create --------------------------------------------------------------------------------

def create(bench: Bench) -> list[RowResult]:
    out_dir = bench.tmp / "bundles"
    out_dir.mkdir(exist_ok=True)
    ours_out, base_out = out_dir / "create.tar", out_dir / "baseline.tar.zst"
    sums = out_dir / "SHA256SUMS"
    in_root = bench.inputs.root
    tops = " ".join(shlex.quote(p.name) for p in (bench.inputs.oci, bench.inputs.models, bench.inputs.manifests))

    def expect(path: Path) -> None:
        if not path.is_file() or path.stat().st_size == 0:
            raise BenchError(f"{path} was not written")

    a = Command("edgebundle create",
                [tool("bundle"), "create", str(bench.spec), "--key", str(bench.key), "-o", str(ours_out), "--json"],
                prepare=lambda: rm(ours_out), check=lambda: expect(ours_out), ours=True)
    script = (f"cd {shlex.quote(str(in_root))}\n"
              f"find {tops} -type f -print0 | sort -z | xargs -0 sha256sum > {shlex.quote(str(sums))}\n"
              f"tar -cf - {tops} -C {shlex.quote(str(out_dir))} SHA256SUMS "
              f"| zstd -T0 -3 -q -f -o {shlex.quote(str(base_out))}")
    b = Command("baseline tar|zstd", shell(script), prepare=lambda: rm(base_out, sums),
                check=lambda: expect(base_out))
    row = measure_pair(bench, "create", "`bundle create` (signed tar)",
                   "`sha256sum` inputs, then `tar -cf - | zstd -T0 -3`", a, b)
    input_bytes = sum(p.stat().st_size for p in bench.inputs.files())
    row.notes.append(f"inputs {mib(input_bytes)}; bundle {mib(ours_out.stat().st_size)}, "
                     f"tar.zst {mib(base_out.stat().st_size)}")
    reference = out_dir / "bench-1.0.0.tar"
    rm(reference, base_out, sums)
    ours_out.rename(reference)  # the installer rows reuse the last bundle built here
    return [row]


# -- verify --------------------------------------------------------------------------------

def _verify_pair(bench: Bench, cold: bool) -> tuple[Command, Command]:
    bundle = bench.bundle()
    state: list[Path] = []

    def fresh_state() -> None:
        state[:] = [bench.scratch("state")]
        if cold:
            drop_caches()

    def drop_state() -> None:
        rm(*state)

    ours = Command("installer verify" + (" cold" if cold else ""),
                   lambda: [tool("installer"), "verify", str(bundle), "--site", str(bench.site),
                            "--state-dir", str(state[0]), "--json"],
                   prepare=fresh_state, cleanup=drop_state, ours=True)
    base = Command("openssl dgst" + (" cold" if cold else ""), ["openssl", "dgst", "-sha256", str(bundle)],
                   prepare=drop_caches if cold else None)
    return ours, base


def verify(bench: Bench) -> list[RowResult]:
    a, b = _verify_pair(bench, cold=False)
    row = measure_pair(bench, "verify", "`installer verify`", "`openssl dgst -sha256` of the bundle", a, b)
    row.notes.append(f"bundle {mib(bench.bundle().stat().st_size)}, page cache warm for both")
    return [row]


def verify_cold(bench: Bench) -> list[RowResult]:
    mode = bench.settings.cold
    if mode == "off" or (mode == "auto" and not can_drop_caches()):
        why = "--cold off" if mode == "off" else "cannot drop the page cache (not root)"
        bench.log(f"row verify-cold: skipped ({why})")
        return []
    a, b = _verify_pair(bench, cold=True)
    row = measure_pair(bench, "verify (cold)", "`installer verify`", "`openssl dgst -sha256` of the bundle", a, b)
    row.notes.append("page cache dropped before every run (sync; echo 3 > /proc/sys/vm/drop_caches)")
    return [row]


# -- load ----------------------------------------------------------------------------------

def load(bench: Bench) -> list[RowResult]:
    bundle = bench.bundle()
    expected = _image_digests(bench)
    current: list = []  # the fresh site registry of the run in progress, and its state dir

    def fresh() -> None:
        current[:] = [bench.registry(bench.scratch("site-registry")), bench.scratch("state")]

    def check() -> None:
        reg = current[0]
        for ref, digest in expected.items():
            repo, tag = ref.rsplit(":", 1)
            got = reg.manifest_digest(repo, tag)
            if got != digest:
                raise BenchError(f"after load, {reg.host}/{ref} is {got}, expected {digest}")

    def cleanup() -> None:
        reg, state = current
        reg.stop()
        bench.registries.remove(reg)
        rm(reg.workdir, state)

    ours = Command("installer load",
                   lambda: [tool("installer"), "load", str(bundle), "--site", str(bench.site),
                            "--registry", current[0].host, "--state-dir", str(current[1]), "--json"],
                   prepare=fresh, check=check, cleanup=cleanup, ours=True)

    def skopeo_script() -> list[str]:
        layout = shlex.quote(str(bench.inputs.oci))
        lines = [f"skopeo copy --all --preserve-digests --quiet --dest-tls-verify=false oci:{layout}:{shlex.quote(ref)} "
                 f"docker://{current[0].host}/{shlex.quote(ref)}" for ref in bench.image_refs]
        return shell("\n".join(lines))

    base = Command("skopeo copy", skopeo_script, prepare=fresh, check=check, cleanup=cleanup)
    row = measure_pair(bench, "load", "`installer load` (signed root, then each pushed blob hashed as it streams)",
                   "`skopeo copy --all --preserve-digests` per image from the OCI layout", ours, base)
    image_bytes = sum(p.stat().st_size for p in bench.inputs.oci.rglob("*") if p.is_file())
    row.notes.append(f"{len(expected)} images, {mib(image_bytes)}; fresh registry per run")
    return [row]


def _image_digests(bench: Bench) -> dict[str, str]:
    """``repo:tag`` -> the digest the OCI layout (and so the bundle) has for it."""
    index = json.loads((bench.inputs.oci / "index.json").read_text())
    out = {}
    for desc in index["manifests"]:
        ref = desc.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if ref in bench.image_refs:
            out[ref] = desc["digest"]
    return out


# -- stage ---------------------------------------------------------------------------------

def stage(bench: Bench) -> list[RowResult]:
    bundle = bench.bundle()
    model_files = [p for p in bench.inputs.models.rglob("*") if p.is_file()]
    model_bytes = sum(p.stat().st_size for p in model_files)
    current: list[Path] = []  # the fresh NAS dir and state dir of the run in progress

    def fresh() -> None:
        current[:] = [bench.scratch("nas"), bench.scratch("state")]

    def check() -> None:
        staged = [p for p in current[0].rglob("*") if p.is_file() and not p.name.startswith(".")]
        got = sum(p.stat().st_size for p in staged)
        if len(staged) != len(model_files) or got != model_bytes:
            raise BenchError(f"staged {len(staged)} files / {got} bytes, expected {len(model_files)} / {model_bytes}")

    def cleanup() -> None:
        rm(*current)

    ours = Command("installer stage",
                   lambda: [tool("installer"), "stage", str(bundle), "--site", str(bench.site),
                            "--models-root", str(current[0]), "--state-dir", str(current[1]), "--json"],
                   prepare=fresh, check=check, cleanup=cleanup, ours=True)

    def cp_script() -> list[str]:
        nas, sums = shlex.quote(str(current[0])), shlex.quote(str(current[1] / "SHA256SUMS"))
        return shell(f"cp -r {shlex.quote(str(bench.inputs.models))}/. {nas}/\n"
                     f"find {nas} -type f -print0 | sort -z | xargs -0 sha256sum > {sums}")

    base = Command("cp + sha256sum", cp_script, prepare=fresh, check=check, cleanup=cleanup)
    row = measure_pair(bench, "stage", "`installer stage` (signed root, then each file hashed as it is written)",
                   "`cp` of the model files + `sha256sum` of the copies", ours, base)
    row.notes.append(f"{len(model_files)} files, {mib(model_bytes)}; fresh NAS dir per run")
    return [row]


CORE_ROWS = {"create": create, "verify": verify, "verify-cold": verify_cold, "load": load, "stage": stage}
