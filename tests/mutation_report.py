"""The report of a ``make mutation`` run (tests/mutation_run.py): per module, as Markdown.

Reads mutmut's result files (``mutants/<group>/mutants/**/*.py.meta``), keeps the mutants inside
each group's scope, and writes per module: generated, killed, survived (timeouts, "no tests" and
anything not killed count as survived: a mutant nothing kills is a gap, whatever the reason), the
survival rate, each group's wall time, and every survivor with its diff (``mutmut show``), so each
can be killed by a test or explained in docs/MUTATION.md.

Usage (re-write the report from existing results, from the repository root):
    python -m tests.mutation_report [--no-diffs]
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

KILLED = {1, 3, 37}  # a test failed, pytest errored, or the type checker refused the mutant


def load_results(group_dir: Path, scope: tuple[str, ...]) -> dict[str, dict[str, int | None]]:
    """module -> {mutant name: mutmut exit code} for the mutants in ``scope``."""
    out: dict[str, dict[str, int | None]] = defaultdict(dict)
    root = group_dir / "mutants"
    for meta in sorted(root.rglob("*.py.meta")):
        doc = json.loads(meta.read_text())
        module = meta.relative_to(root).as_posix().removesuffix(".py.meta").replace("/", ".")
        for name, code in doc.get("exit_code_by_key", {}).items():
            if any(fnmatch.fnmatch(name, g) for g in scope):
                out[module][name] = code
    return out


def show(group_dir: Path, name: str) -> str:
    mutmut = Path(sys.executable).with_name("mutmut")
    r = subprocess.run([str(mutmut), "show", name], cwd=group_dir, capture_output=True, text=True)
    return (r.stdout.strip() or r.stderr.strip())[-3000:]


def write_report(work: Path, scopes: dict[str, tuple[str, ...]], times: dict[str, float], out: Path,
                 diffs: bool = True) -> None:
    rows, survivors = [], []
    total = killed = 0
    for group, scope in scopes.items():
        gdir = work / group
        if not (gdir / "mutants").is_dir():
            continue
        for module, codes in sorted(load_results(gdir, scope).items()):
            n = len(codes)
            k = sum(1 for c in codes.values() if c in KILLED)
            total, killed = total + n, killed + k
            minutes = f"{times.get(group, 0) / 60:.1f}"
            rows.append(f"| {module} | {group} | {n} | {k} | {n - k} | {100 * (n - k) / max(n, 1):.1f}% | {minutes} |")
            survivors += [(group, m, c) for m, c in sorted(codes.items()) if c not in KILLED]
    lines = ["# Mutation run of the trust core", "",
             f"`make mutation`, {sum(times.values()) / 60:.1f} min wall time in all (method, scope and the "
             "explanation of each survivor: docs/MUTATION.md).", "",
             "| module | group | generated | killed | survived | survival | group time (min) |",
             "|---|---|---:|---:|---:|---:|---:|", *rows,
             f"| **trust core** | | **{total}** | **{killed}** | **{total - killed}** | "
             f"**{100 * (total - killed) / max(total, 1):.1f}%** | |", "",
             f"## Survivors ({len(survivors)})", ""]
    for group, name, code in survivors:
        lines.append(f"- `{name}` (exit {code})")
        if diffs:
            lines += ["", "```diff", show(work / group, name), "```", ""]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:len(rows) + 8]))


def main() -> int:
    from tests.mutation_run import GROUPS, WORK

    times_path = WORK / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    write_report(WORK, {n: g.scope for n, g in GROUPS.items()}, times, WORK / "REPORT.md",
                 diffs="--no-diffs" not in sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
