"""``make mutation``: mutmut over the trust core, one group of modules at a time, then the report.

Each group is a module (or two) that decides trust or safety, the functions in it that make those
decisions (mutmut name globs), and the fast test files (with a ``-k`` filter) that exercise them:
mutmut then runs, per mutant, only the selected tests that reach the mutated function, so a
surviving mutant costs seconds, not the whole suite. A group runs in its own copy of the tree
under ``mutants/<group>/`` (mutmut reads its configuration from the working directory's
pyproject.toml; the copy's ``[tool.mutmut]`` names the group's files and tests). The report
(tests/mutation_report.py) is written to ``mutants/REPORT.md``; docs/MUTATION.md explains the
method and every survivor.

Usage (from the repository root): python -m tests.mutation_run [--children N] [--survivors] [GROUP ...]
(``--survivors``: after writing tests for a group's survivors, re-test just those.)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mutation_report import KILLED, load_results, write_report

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "mutants"
COPY = ("edgebundle", "bundler", "installer", "tests", "examples", "manifests", "pyproject.toml")


@dataclass(frozen=True)
class Group:
    files: tuple[str, ...]
    scope: tuple[str, ...]  # mutmut mutant-name globs: the functions that decide
    tests: tuple[str, ...]  # pytest arguments selecting the fast tests


GROUPS: dict[str, Group] = {
    "parsing": Group(
        ("edgebundle/root.py", "edgebundle/layout.py"),
        ("edgebundle.root.x_version_key_*", "edgebundle.root.x_parse_root_*", "edgebundle.root.x__*",
         "edgebundle.root.x_load_json_bounded_*", "edgebundle.root.xǁRootǁmember_pins_*", "edgebundle.layout.*"),
        ("tests/test_trust_parsing.py", "tests/test_trust_rules.py", "tests/test_mut_parsing.py",
         *(f"tests/test_version_order.py::test_{t}" for t in (  # not the rollback test: it needs a registry
             "the_semver_specification_example_is_in_order", "pairs", "same_precedence",
             "any_strings_are_totally_ordered_and_never_crash")),
         *(f"tests/test_delta_pack.py::test_{t}" for t in (  # the pack's rules, on sample roots (no build)
             "a_pack_entry_that_does_not_tile_its_pack_exactly_is_refused",
             "a_packed_root_parses_and_its_members_leave_out_what_the_pack_holds")),
         "-k", "not apply and not stage")),
    "signatures": Group(
        ("edgebundle/signing.py", "edgebundle/verify.py"),
        ("edgebundle.signing.x_keyid_*", "edgebundle.signing.x_sign_*", "edgebundle.signing.x_pae_*",
         "edgebundle.signing.x_parse_envelope_*", "edgebundle.signing.x_verify_*", "edgebundle.signing.x__b64_*",
         "edgebundle.signing.xǁTrustStoreǁ*", "edgebundle.verify.*"),
        ("tests/test_trust_core.py", "tests/test_trust_rules.py", "tests/test_trust_parsing.py",
         "tests/test_mut_signatures.py", "tests/test_pieces.py", "tests/test_delta_pack.py", "-k",
         "(bundle or signature or signed or two or threshold or damaged or platform or version or base or part "
         "or piece or pack) and not re_created")),
    "parts": Group(
        ("edgebundle/parts.py",),
        ("edgebundle.parts.x_parse_part_index_*", "edgebundle.parts.x__field_*", "edgebundle.parts.xǁPartsSourceǁ*"),
        ("tests/test_trust_core.py", "tests/test_trust_parsing.py", "tests/test_mut_parts_delta.py", "-k", "part")),
    "approvals": Group(
        ("installer/approval.py", "installer/plan.py"),
        ("installer.approval.x_check_approval_*", "installer.approval.x__check_signature_*",
         "installer.approval.x_make_approval_*", "installer.approval.x_seal_approval_*",
         "installer.approval.x__open_*",
         "installer.approval.x_approval_rel_*", "installer.approval.x__hex_*",
         "installer.plan.x_check_drift_*", "installer.plan.x_check_target_*", "installer.plan.x_load_plan_*",
         "installer.plan.x_plan_hash_*"),
        # test_mut_drift.py and the re_created test start the real control plane (check_drift's
        # dry-run half acts only on a Kubernetes API); tests/conftest.py runs them after the fast ones
        ("tests/test_trust_core.py", "tests/test_trust_rules.py", "tests/test_mut_signatures.py",
         "tests/test_mut_drift.py", "-k", "approval or apply")),
    "delta": Group(
        ("installer/delta_source.py",),
        ("installer.delta_source.*",),
        ("tests/test_trust_core.py", "tests/test_mut_parts_delta.py", "-k", "delta")),
    "staging": Group(
        ("installer/destinations/nas.py",),
        ("installer.destinations.nas.x_difference_*", "installer.destinations.nas.x_read_marker_at_*",
         "installer.destinations.nas.x_compare_*", "installer.destinations.nas.x__sweep_*",
         "installer.destinations.nas.x_model_dir_*", "installer.destinations.nas.x_file_pins_*",
         "installer.destinations.nas.x__write_file_*", "installer.destinations.nas.x__hash_at_*",
         "installer.destinations.nas.xǁNasDestinationǁ*", "installer.destinations.nas.xǁ_Tapǁ*",
         "installer.destinations.nas.x__reserved_*", "installer.destinations.nas.x_walk_*"),
        ("tests/test_trust_core.py", "tests/test_trust_rules.py", "tests/test_mut_staging.py", "-k",
         "staging or stage")),
    "trust": Group(
        ("edgebundle/trustupdate.py", "installer/trust.py"),
        ("edgebundle.trustupdate.*", "installer.trust.*"),
        ("tests/test_mut_trust.py",)),
}


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(name: str, group: Group) -> Path:
    """A fresh copy of the tree whose ``[tool.mutmut]`` names this group's files and tests."""
    d = WORK / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for item in COPY:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, d / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, d / item)
    configure(d, group)
    return d


def configure(d: Path, group: Group) -> None:
    """Point the copy's ``[tool.mutmut]`` at the group's files and tests."""
    toml = (REPO / "pyproject.toml").read_text()
    toml, n1 = re.subn(r"(?m)^only_mutate = .*$", f"only_mutate = {_toml_list(group.files)}", toml)
    toml, n2 = re.subn(r"(?m)^pytest_add_cli_args_test_selection = .*$",
                       f"pytest_add_cli_args_test_selection = {_toml_list(group.tests)}", toml)
    assert n1 == n2 == 1, "pyproject.toml [tool.mutmut] needs one-line only_mutate and test selection"
    (d / "pyproject.toml").write_text(toml)


def run(name: str, group: Group, children: int) -> float:
    d = prepare(name, group)
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.monotonic()
    with open(d / "mutmut.log", "wb") as log:
        r = subprocess.run([str(mutmut), "run", "--max-children", str(children), *group.scope], cwd=d,
                           stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    if r.returncode != 0:
        print((d / "mutmut.log").read_text(errors="replace")[-3000:])
        raise SystemExit(f"mutmut failed for group {name} (exit {r.returncode}); log: {d / 'mutmut.log'}")
    print(f"group {name}: {seconds / 60:.1f} min", flush=True)
    return seconds


def survivors(name: str) -> list[str]:
    """The group's mutants in scope that no test killed, or that were not run (mutmut's result files)."""
    results = load_results(WORK / name, GROUPS[name].scope)
    return sorted(m for codes in results.values() for m, c in codes.items() if c not in KILLED)


def _keep_verdicts(d: Path) -> None:
    """Let a changed test selection (a test file added to a group) keep the verdicts already made.

    mutmut 3.8 resets every mutant's result when ``pytest_add_cli_args_test_selection`` differs
    from the one recorded in its stats file; the killed mutants would then count as not run. More
    tests cannot revive a killed mutant, so the recorded selection is dropped (mutmut then records
    the new one) and mutmut maps the new tests incrementally ("Found N new tests").
    """
    stats = d / "mutants" / "mutmut-stats.json"
    if stats.exists():
        data = json.loads(stats.read_text())
        data.pop("config_fingerprint", None)
        stats.write_text(json.dumps(data))


def rerun_survivors(name: str, group: Group, children: int, again: tuple[str, ...] = ()) -> float:
    """Refresh the group's copy of tests/ and re-test only its survivors (after new tests were written),
    and the mutants matching ``again`` whatever their verdict (after a flaky test or fixture was fixed)."""
    d = WORK / name
    configure(d, group)
    for target in (d / "tests", d / "mutants" / "tests"):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(REPO / "tests", target, ignore=shutil.ignore_patterns("__pycache__"))
    names = survivors(name)
    if again:
        results = load_results(d, again)
        names = sorted(set(names) | {m for codes in results.values() for m in codes})
    if not names:
        return 0.0
    _keep_verdicts(d)
    # mutmut records which tests reach which function once; edited tests may reach new ones, so
    # the record is dropped and rebuilt (otherwise such a mutant stays "no tests" for good).
    (d / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    mutmut = Path(sys.executable).with_name("mutmut")
    t0 = time.monotonic()
    with open(d / "mutmut-rerun.log", "wb") as log:
        subprocess.run([str(mutmut), "run", "--max-children", str(children), *names], cwd=d,
                       stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - t0
    print(f"group {name}: {len(names)} survivors re-tested in {seconds / 60:.1f} min, "
          f"{len(survivors(name))} still survive", flush=True)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=2, help="mutants tested in parallel")
    ap.add_argument("--survivors", action="store_true",
                    help="only re-test each group's survivors against the current tests (after writing new ones)")
    ap.add_argument("--again", action="append", default=[], metavar="GLOB",
                    help="with --survivors: also re-test the mutants matching GLOB (a mutmut name glob), "
                         "killed or not (after a flaky test or fixture was fixed)")
    ap.add_argument("groups", nargs="*", help=f"default: all of {', '.join(GROUPS)}")
    args = ap.parse_args()
    names = args.groups or list(GROUPS)
    if unknown := sorted(set(names) - set(GROUPS)):
        ap.error(f"unknown group(s) {', '.join(unknown)}; groups: {', '.join(GROUPS)}")
    times_path = WORK / "times.json"
    for name in names:
        if args.survivors:
            seconds = rerun_survivors(name, GROUPS[name], args.children, tuple(args.again))
        else:
            seconds = run(name, GROUPS[name], args.children)
        times = json.loads(times_path.read_text()) if times_path.exists() else {}  # other runs may have added
        times[name] = times.get(name, 0) + seconds if args.survivors else seconds
        times_path.write_text(json.dumps(times, indent=2))
    write_report(WORK, {n: GROUPS[n].scope for n in GROUPS}, times, WORK / "REPORT.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
