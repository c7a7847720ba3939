"""Memory: building and applying a delta of a 256 MiB model stays bounded, whatever the size.

A generated 256 MiB GGUF gets a longer ``general.name`` (every tensor offset moves) and a
"fine-tune" of two large tensors (every 1000th byte changed, so they are patched, not carried).
``bundle create --base`` and ``bundle verify --base`` (which rebuilds every blob of the full
target from base + delta and hashes it) each run in their own process; their peak RSS (the
kernel's high-water mark, VmHWM) is compared with the same process doing almost nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.build import Builder
from bundler.gguf import read_gguf_file, tensor_ranges
from bundler.lockfile import ensure_lock
from edgebundle.signing import generate_keypair, load_private_key
from bundler.spec import load_spec
from tests.fixtures.models import write_gguf
from tests.test_delta_scenarios import edit_gguf_string

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20
#: What reconstruction may use beyond an idle process: one 32 MiB piece per side plus zstd's window.
BOUND = 300 * MiB

# Peak RSS is read from VmHWM: the high-water mark of this process's own address space.
# (``ru_maxrss`` of a forked child also counts the parent's RSS at fork time, because Linux
# records the pre-exec memory's high-water mark; with a 300 MiB test process that hides all.)
_MEASURE = """
import sys
from bundler.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print("PEAK_RSS", kib * 1024, file=sys.stderr)
"""


def measured(*args: object) -> tuple[int, str]:
    """Run ``bundle ARGS`` in a fresh process; (peak RSS in bytes, stdout)."""
    r = subprocess.run([sys.executable, "-c", _MEASURE, *map(str, args)], capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr
    peak = int(next(line.split()[1] for line in r.stderr.splitlines() if line.startswith("PEAK_RSS")))
    return peak, r.stdout


def fine_tune(path: Path, tensors: list[str]) -> None:
    """Change every 1000th byte of the named tensors in place, 1 MiB at a time."""
    ranges = {n: (s, e) for n, s, e in tensor_ranges(read_gguf_file(str(path)), path.stat().st_size)}
    with open(path, "r+b") as f:
        for name in tensors:
            start, end = ranges[name]
            for off in range(start, end, MiB):
                f.seek(off)
                chunk = bytearray(f.read(min(MiB, end - off)))
                chunk[::1000] = bytes(b ^ 0x01 for b in chunk[::1000])
                f.seek(off)
                f.write(chunk)


def spec_file(d: Path, version: str, model: Path) -> Path:
    d.mkdir(parents=True)
    doc = {"apiVersion": "edgebundle/v1", "kind": "Bundle",
           "metadata": {"name": "big", "version": version, "compatible": "rag-edge/x86_64"},
           "spec": {"models": [{"name": "big-llm", "kind": "llm", "version": version, "path": str(model)}]}}
    (d / "bundle.yaml").write_text(json.dumps(doc))
    return d / "bundle.yaml"


def test_delta_of_a_256_mib_model_builds_and_rebuilds_in_bounded_memory(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    # 20 tensors of 36000 x 256 elements: ~256 MiB, the F32 ones ~35 MiB (more than one piece).
    old = write_gguf(tmp_path / "v1" / "big.gguf", n_tensors=20, rows=36000, seed=9)
    new = tmp_path / "v2" / "big.gguf"
    edit_gguf_string(old, new, "general.name", "synthetic, fine-tuned for the edge and renamed")
    fine_tune(new, ["blk.0.weight", "blk.8.weight"])  # both F32, ~35 MiB each
    size = new.stat().st_size
    assert size > 250 * MiB

    key, pub = generate_keypair("mem", tmp_path / "keys")
    base_spec = load_spec(spec_file(tmp_path / "s1", "1.0", old))
    base = tmp_path / "base"
    Builder(base_spec, ensure_lock(base_spec, lambda h: None, locked=False), lambda h: None).build(
        base, [load_private_key(key)])
    target_spec = spec_file(tmp_path / "s2", "1.1", new)
    delta = tmp_path / "delta"

    idle, _ = measured("inspect", base, "--json")
    create_peak, out = measured("create", target_spec, "--key", key, "--base", base, "-o", delta, "--json")
    created = json.loads(out)["delta"]
    verify_peak, out = measured("verify", delta, "--pubkey", pub, "--base", base, "--json")
    rebuilt = json.loads(out)["delta"]["rebuiltBytes"]

    entry = next(e for e in json.loads(measured("inspect", delta, "--json")[1])["delta"]["blobs"]
                 if e["what"] == "model big-llm 1.1 big.gguf")
    print(f"\nmodel {size / MiB:.0f} MiB; delta {created['deltaBytes'] / MiB:.2f} MiB "
          f"({entry['method']}: {entry['reason']})")
    print(f"peak RSS: idle process {idle / MiB:.0f} MiB, bundle create --base {create_peak / MiB:.0f} MiB, "
          f"bundle verify --base (rebuilds {rebuilt / MiB:.0f} MiB) {verify_peak / MiB:.0f} MiB")
    assert entry["method"] == "gguf-tensors" and "2 changed" in entry["reason"]
    assert created["deltaBytes"] < size // 10, "the fine-tuned tensors must be patched, not carried"
    assert rebuilt >= size
    assert verify_peak - idle < BOUND, "rebuilding must not hold the model in memory"
    assert create_peak - idle < 2 * BOUND, "planning must not hold the model in memory"
