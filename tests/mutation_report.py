"""Summarise a ``mutmut run`` of the trust core (``make mutation``) per module, as Markdown.

Reads mutmut's result files (``mutants/**/*.py.meta``), keeps the mutants whose names match the
scope passed on the command line (the same globs ``make mutation`` gave mutmut), and writes a table
per module: generated, killed, survived (with timeouts and "no tests" counted as survived: a
mutant nothing kills is a gap, whatever the reason), the survival rate, and the survivors' names
with their diffs (``mutmut show``) so each can be killed or explained in docs/MUTATION.md.

Usage: python tests/mutation_report.py --seconds N --out FILE GLOB...
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

KILLED = {1, 3, 37}  # a test failed, pytest errored, or the type checker refused the mutant


def load_results(root: Path, scope: list[str]) -> dict[str, dict[str, int | None]]:
    """module -> {mutant name: exit code} for the mutants in ``scope``."""
    out: dict[str, dict[str, int | None]] = defaultdict(dict)
    for meta in sorted(root.rglob("*.py.meta")):
        doc = json.loads(meta.read_text())
        module = meta.relative_to(root).as_posix().removesuffix(".py.meta").replace("/", ".")
        for name, code in doc.get("exit_code_by_key", {}).items():
            if any(fnmatch.fnmatch(name, g) for g in scope):
                out[module][name] = code
    return out


def status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code is None:
        return "not run"
    return "survived"


def show(name: str) -> str:
    r = subprocess.run([sys.executable, "-m", "mutmut", "show", name], capture_output=True, text=True)
    return r.stdout.strip() or r.stderr.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, required=True, help="wall time of the mutmut run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-diffs", action="store_true", help="list survivors without their diffs")
    ap.add_argument("scope", nargs="+")
    args = ap.parse_args()
    results = load_results(Path("mutants"), args.scope)
    lines = ["# Mutation run of the trust core", "",
             f"mutmut over {len(results)} modules in {args.seconds / 60:.1f} min wall time "
             f"(`make mutation`; scope and method: docs/MUTATION.md).", "",
             "| module | generated | killed | survived | survival |", "|---|---:|---:|---:|---:|"]
    total = killed = 0
    survivors: list[str] = []
    for module, codes in sorted(results.items()):
        n = len(codes)
        k = sum(1 for c in codes.values() if status(c) == "killed")
        survivors += sorted(m for m, c in codes.items() if status(c) != "killed")
        total, killed = total + n, killed + k
        lines.append(f"| {module} | {n} | {k} | {n - k} | {100 * (n - k) / max(n, 1):.1f}% |")
    lines.append(f"| **trust core** | **{total}** | **{killed}** | **{total - killed}** | "
                 f"**{100 * (total - killed) / max(total, 1):.1f}%** |")
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    for name in survivors:
        lines.append(f"- `{name}`")
        if not args.no_diffs:
            lines += ["", "```diff", show(name), "```", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:len(results) + 8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
