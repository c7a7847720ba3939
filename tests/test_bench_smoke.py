"""``make bench`` in miniature: the real harness, real registries and real commands, tiny inputs.

What must hold at any size: every selected row is measured on both sides and lands in the
table with a numeric time, ratio and peak RSS; the results file gets the machine, the baseline
versions and the table; the delta rows report the delta's size beside the baselines'.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)

#: A row line of the main table: name, two descriptions, seconds, seconds, ratio, CPU seconds of
#: each side, load average at the row's start and end, RSS, RSS, notes.
ROW = re.compile(r"^\| (?P<name>[^|]+?) \|(?:[^|]|\\\|)+\|(?:[^|]|\\\|)+\| (?P<a>\d+\.\d\d) \| (?P<b>\d+\.\d\d) \| "
                 r"(?P<ratio>\d+\.\d\d) \| (?P<cpu_a>\d+\.\d\d) \| (?P<cpu_b>\d+\.\d\d) \| "
                 r"(?P<load0>\d+\.\d)-(?P<load1>\d+\.\d) \| "
                 r"(?P<rss_a>[\d,]+) MiB \| (?P<rss_b>[\d,]+) MiB \| (?P<notes>.*) \|$")


def test_bench_harness_measures_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    env = {**os.environ, "BENCH_MODEL_GB": "0.02", "BENCH_IMAGE_MB": "2", "BENCH_EMBED_MB": "2",
           "BENCH_RUNS": "1", "BENCH_COLD": "off", "BENCH_ONLY": "create,verify,load,stage,delta",
           "BENCH_DELTA": "S2,S4"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--output", str(out),
                           "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m["name"]: m for line in proc.stdout.splitlines() if (m := ROW.match(line))}
    assert list(rows) == ["create", "verify", "load", "stage", "delta S2", "delta S4"], proc.stdout
    for name, m in rows.items():
        a, b, ratio = float(m["a"]), float(m["b"]), float(m["ratio"])
        assert a > 0 and b > 0, name
        lo, hi = (a - 0.005) / (b + 0.005), (a + 0.005) / max(b - 0.005, 1e-9)  # times shown to 0.01 s
        assert lo - 0.005 <= ratio <= hi + 0.005, name
        assert int(m["rss_a"].replace(",", "")) > 0 and int(m["rss_b"].replace(",", "")) >= 0, name
        assert float(m["cpu_a"]) > 0, f"{name}: a Python CLI cannot run in no CPU time"
    assert re.search(r"delta [\d,]+ (B|KiB) \(target 1\.1 x zstd \+ 16 KiB = [\d,]+ (B|KiB)\), "
                     r"zstd patches [\d,]+ (B|KiB)", rows["delta S4"]["notes"])
    text = out.read_text()
    assert "<!-- bench:main -->" in text and "**Machine:** cores" in text
    assert re.search(r"\*\*Versions:\*\* edgebundle \S+.*skopeo [\d.]+.*zstd v[\d.]+.*openssl OpenSSL", text)
    assert all(f"| {name} |" in text for name in rows)
    assert not list((tmp_path / "work").iterdir()), "the bench left its temporary tree behind"
