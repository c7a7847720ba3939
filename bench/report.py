"""The results: Markdown tables, the machine and tool versions, and ``bench/results.md`` sections.

``results.md`` is made of named sections (``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``);
writing a section replaces the one of the same name and keeps the others, so the default run
and the peak-RSS-vs-model-size run can both be recorded in one file.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.rows import RowResult

HEADER = "# edgebundle benchmark results\n\nWritten by `make bench` (bench/run.py); see bench/README.md.\n"


def _first_line(argv: list[str], pattern: str = r".+") -> str:
    """The first match of ``pattern`` in a line of what ``argv`` prints (a version string)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    for line in lines:
        m = re.search(pattern, line.strip())
        if m:
            return m.group(0).strip()
    return lines[0] if lines else "unknown"


def versions() -> dict[str, str]:
    """The versions of everything measured, as each tool reports itself."""
    from importlib.metadata import version

    return {
        "edgebundle": version("edgebundle"),
        "python": platform.python_version(),
        "zstandard (python)": version("zstandard"),
        "skopeo": _first_line(["skopeo", "--version"], r"[\d.]+$"),
        "zstd": _first_line(["zstd", "--version"], r"v[\d.]+"),
        "openssl": _first_line(["openssl", "version"], r"OpenSSL [\d.]+\w*"),
        "GNU tar": _first_line(["tar", "--version"], r"[\d.]+$"),
        "sha256sum (coreutils)": _first_line(["sha256sum", "--version"], r"[\d.]+$"),
        "docker-registry": _first_line(["docker-registry", "--version"], r"[\d.]+\S*$"),
        "GNU time": _first_line(["dpkg-query", "-W", "-f", "${Version}", "time"]),
    }


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, AttributeError):
        pass
    return {"cores": str(os.cpu_count()), "cpu": cpu, "RAM": mem,
            "kernel": platform.release(), "os": _os_name()}


def _os_name() -> str:
    try:
        m = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text())
        return m.group(1) if m else platform.system()
    except OSError:
        return platform.system()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _rss(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell (a pipe would end the cell, even in a code span)."""
    return text.replace("|", "\\|")


def results_table(rows: Sequence[RowResult]) -> str:
    """The main table: median seconds, ratio (edgebundle / baseline: below 1 we are faster), RSS."""
    lines = [
        "| Row | edgebundle | baseline | edgebundle s | baseline s | ratio | edgebundle CPU s | baseline CPU s "
        "| load avg | edgebundle peak RSS | baseline peak RSS | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {cell(r.ours)} | {cell(r.baseline)} | {r.a.seconds:.2f} | {r.b.seconds:.2f} | "
                     f"{r.ratio:.2f} | {r.a.cpu_seconds:.2f} | {r.b.cpu_seconds:.2f} | "
                     f"{r.load[0]:.1f}-{r.load[1]:.1f} | {_rss(r.a.peak_rss_kib)} | {_rss(r.b.peak_rss_kib)} | "
                     f"{cell('; '.join(r.notes))} |")
    return "\n".join(lines)


def key_values(title: str, values: dict[str, str]) -> str:
    return f"**{title}:** " + ", ".join(f"{k} {v}" for k, v in values.items())


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) section ``name`` of ``path``, keeping every other section."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def command_line() -> str:
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_"))
    return " ".join(filter(None, [env, "python bench/run.py", *sys.argv[1:]]))
