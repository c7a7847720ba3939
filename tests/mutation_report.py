"""The report of a ``make mutation`` run (tests/mutation_run.py): per module, as Markdown.

Reads mutmut's result files (``mutants/<group>/mutants/**/*.py.meta``), keeps the mutants inside
each group's scope, and writes per module: generated, killed, survived (timeouts, "no tests" and
anything not killed count as survived: a mutant nothing kills is a gap, whatever the reason), the
survival rate, each group's wall time, and every survivor with its changed lines, so each
can be killed by a test or explained in docs/mutation-notes/<group>.md.

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


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    try:
        diff = get_diff_for_mutant(name)
    except Exception as e:  # a mutant mutmut cannot show is listed without its diff
        diff = f"(no diff: {e})"
    out[name] = [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")]
json.dump(out, sys.stdout)
"""


def diffs(group_dir: Path, names: list[str]) -> dict[str, list[str]]:
    """The changed lines of each mutant (what ``mutmut show`` prints), in one process per group."""
    if not names:
        return {}
    r = subprocess.run([sys.executable, "-c", _DIFFS], cwd=group_dir, input=json.dumps(names),
                       capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {n: [r.stderr[-200:]] for n in names}


def write_report(work: Path, scopes: dict[str, tuple[str, ...]], times: dict[str, float], out: Path,
                 with_diffs: bool = True) -> None:
    rows, survivors = [], []
    total = killed = not_run = 0
    for group, scope in scopes.items():
        gdir = work / group
        if not (gdir / "mutants").is_dir():
            continue
        for module, codes in sorted(load_results(gdir, scope).items()):
            n = len(codes)
            k = sum(1 for c in codes.values() if c in KILLED)
            pending = sum(1 for c in codes.values() if c is None)
            total, killed, not_run = total + n, killed + k, not_run + pending
            minutes = f"{times.get(group, 0) / 60:.1f}"
            rows.append(f"| {module} | {group} | {n} | {k} | {n - k - pending} | {pending} | "
                        f"{100 * (n - k - pending) / max(n - pending, 1):.1f}% | {minutes} |")
            survivors += [(group, m, c) for m, c in sorted(codes.items()) if c not in KILLED and c is not None]
    lines = ["# Mutation run of the trust core", "",
             f"`make mutation`, {sum(times.values()) / 60:.1f} min wall time in all (method and scope: "
             "docs/MUTATION.md; the explanation of each survivor: docs/mutation-notes/<group>.md).", "",
             "| module | group | generated | killed | survived | not run | survival | group time (min) |",
             "|---|---|---:|---:|---:|---:|---:|---:|", *rows,
             f"| **trust core** | | **{total}** | **{killed}** | **{total - killed - not_run}** | **{not_run}** | "
             f"**{100 * (total - killed - not_run) / max(total - not_run, 1):.1f}%** | |", "",
             f"## Survivors ({len(survivors)})", ""]
    shown: dict[str, list[str]] = {}
    if with_diffs:
        for group in scopes:
            shown.update(diffs(work / group, [m for g, m, _ in survivors if g == group]))
    for group, name, code in survivors:
        lines.append(f"- `{name}` ({'no test reaches it' if code == 33 else f'exit {code}'})")
        if shown.get(name):
            lines += ["", "  ```diff", *(f"  {line}" for line in shown[name]), "  ```", ""]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:len(rows) + 8]))


def main() -> int:
    from tests.mutation_run import GROUPS, WORK

    times_path = WORK / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    write_report(WORK, {n: g.scope for n, g in GROUPS.items()}, times, WORK / "REPORT.md",
                 with_diffs="--no-diffs" not in sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
