"""The bench's world: settings, generated inputs, the source registry, keys, spec and site file.

Invariants:
- Everything lives below one temporary directory (``Bench.tmp``) that the caller removes.
- Inputs are generated deterministically (bench/inputs.py, examples/images.py), so two runs with
  the same settings measure the same bytes.
- Only loopback registries are used; every process started here is stopped by its handle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import inputs as gen
from bench.measure import BenchError, Runner
from bench.registry import LoopbackRegistry

REPO = Path(__file__).resolve().parents[1]
ROWS = ("create", "verify", "verify-cold", "load", "stage", "delta")
#: The delta scenarios (bench/delta_rows.py).
DELTA_SCENARIOS = ("S1", "S2", "S3", "S4", "S5")
#: The rows whose peak RSS must not grow with the model (the flatness check runs these).
RSS_ROWS = ("create", "verify", "verify-cold", "load", "stage")


def tool(name: str) -> str:
    """A console script of this venv (``bundle``, ``installer``), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found beside {sys.executable} or on PATH (run: make install)")
    return found


@dataclass(frozen=True)
class Settings:
    """What to generate and how often to measure (env ``BENCH_*`` or run.py options)."""

    model_gb: float = 1.0
    image_mb: int = 256
    embed_mb: int = 192
    runs: int = 3
    only: tuple[str, ...] = ROWS
    cold: str = "auto"  # verify-cold: auto (when caches can be dropped), on, off
    profile_dir: Path | None = None  # profile edgebundle's commands with cProfile into this dir
    delta: tuple[str, ...] = DELTA_SCENARIOS  # which delta scenarios the delta row runs

    @property
    def model_bytes(self) -> int:
        return int(self.model_gb * gen.GIB)


def can_drop_caches() -> bool:
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> None:
    """Write dirty pages, then drop the page cache (needs root): the next read comes from disk."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


@dataclass
class Bench:
    settings: Settings
    tmp: Path
    log: Callable[[str], None]
    inputs: gen.Inputs = field(init=False)
    runner: Runner = field(init=False)
    source: LoopbackRegistry = field(init=False)
    image_refs: list[str] = field(init=False, default_factory=list)
    spec: Path = field(init=False)
    key: Path = field(init=False)
    pub: Path = field(init=False)
    site: Path = field(init=False)
    _bundle: Path | None = field(init=False, default=None)
    registries: list[LoopbackRegistry] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.inputs = gen.Inputs(self.tmp / "inputs")
        logs = self.tmp / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.runner = Runner(logs, self.settings.profile_dir)

    # -- set-up ----------------------------------------------------------------------------
    def setup(self) -> None:
        """Generate the inputs and everything the rows share; not timed."""
        s = self.settings
        with self.step(f"source registry + example images ({s.image_mb} MiB bulk layer)"):
            from examples.images import build_and_push

            self.source = self.registry(self.tmp / "source-registry")
            pushed = build_and_push(self.source.host, version="1.0", layer_bytes=s.image_mb * gen.MIB,
                                    layout_dir=self.inputs.oci)
            self.image_refs = sorted(ref.split("/", 1)[1] for ref in pushed)
        with self.step(f"GGUF Q4_1 model ({s.model_gb:g} GiB)"):
            self.inputs.models.mkdir(parents=True, exist_ok=True)
            gen.write_gguf(self.inputs.llm, s.model_bytes)
        with self.step(f"safetensors embedding model ({s.embed_mb} MiB)"):
            gen.write_embedding_dir(self.inputs.embedding, s.embed_mb * gen.MIB)
        gen.copy_manifests(REPO / "manifests", self.inputs.manifests)
        with self.step("keys, spec, lock, site file"):
            keys = self.tmp / "keys"
            self.call([tool("bundle"), "keygen", "bench", "--out", str(keys)])
            self.key, self.pub = keys / "bench.key", keys / "bench.pub"
            self.spec = self.tmp / "spec" / "bundle.yaml"
            self.write_spec(self.spec)
            self.site = self.tmp / "site.yaml"
            gen.write_site(self.site, pubkey=self.pub, registry="127.0.0.1:1",
                           models_root=self.tmp / "nas", state_dir=self.tmp / "state")

    def write_spec(self, path: Path, **changes: object) -> None:
        """A spec over the generated inputs (``changes`` override write_spec's arguments), locked."""
        args: dict[str, object] = dict(registry=self.source.host, image_refs=self.image_refs,
                                       llm=self.inputs.llm, embedding=self.inputs.embedding,
                                       manifests=self.inputs.manifests)
        args.update(changes)
        gen.write_spec(path, **args)  # type: ignore[arg-type]
        self.call([tool("bundle"), "lock", str(path)])

    def registry(self, workdir: Path) -> LoopbackRegistry:
        reg = LoopbackRegistry(workdir).start()
        self.registries.append(reg)
        return reg

    def close(self) -> None:
        for reg in self.registries:
            reg.stop()
        self.registries.clear()

    # -- helpers for rows ------------------------------------------------------------------
    def scratch(self, name: str) -> Path:
        """A new empty directory for one run (fresh NAS, fresh state dir, fresh registry)."""
        base = self.tmp / "scratch"
        base.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))

    def bundle(self) -> Path:
        """The full bundle the installer rows read (built here, untimed, if no create row made it)."""
        path = self.tmp / "bundles" / "bench-1.0.0.tar"
        if not path.exists():
            with self.step("reference bundle (untimed)"):
                path.parent.mkdir(parents=True, exist_ok=True)
                self.call([tool("bundle"), "create", str(self.spec), "--key", str(self.key),
                           "-o", str(path), "--json"])
        return path

    def call(self, argv: list[str], cwd: Path | None = None) -> str:
        """Run an untimed helper command; its stdout, or a BenchError with its output."""
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n"
                             f"{(proc.stdout + proc.stderr)[-3000:]}")
        return proc.stdout

    def step(self, what: str) -> "_Step":
        return _Step(what, self.log)


class _Step:
    """Logs how long a set-up step took."""

    def __init__(self, what: str, log: Callable[[str], None]) -> None:
        self.what, self.log = what, log

    def __enter__(self) -> None:
        self.t0 = time.monotonic()
        self.log(f"setup: {self.what} ...")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.log(f"setup: {self.what}: {time.monotonic() - self.t0:.1f} s")
