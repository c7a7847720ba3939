"""A fuzzer over the two command lines' options: any argv gets a documented exit code, never a traceback.

Hypothesis picks a verb of ``installer`` or ``bundle`` (walking click's command tree, so new
verbs and options are fuzzed without editing this file), then for each of its parameters maybe a
value: hostile strings (empty, ``-``, huge, climbing paths, format strings, unicode), numbers
out of range, and real inputs (a genuine bundle, its site file, /dev/null) so that runs get past
option parsing into the code. Every run is in-process, in an empty working directory with a
private $TMPDIR; the registry address is a closed port and retry sleeps are skipped, so no run
waits. Bounded: ``$EDGEBUNDLE_CLI_FUZZ_EXAMPLES`` examples per CLI (default 300).

Required of every run: exit code in docs/EXIT_CODES.md (0-4), no exception other than click's
own exits, no "Traceback" in the output, and nothing written to the working directory's parent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgebundle.registry
from bundler.cli import main as bundle_main
from installer.cli import main as installer_main

pytestmark = pytest.mark.timeout(600)
EXAMPLES = int(os.environ.get("EDGEBUNDLE_CLI_FUZZ_EXAMPLES", "300"))
EXIT_CODES = {0, 1, 2, 3, 4}


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += leaf_commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


#: (Climbing paths stay inside the run's own tree: the working directory is nested deeper than they climb.)
HOSTILE = ["", "-", "--", "0", "-1", "99999999999999999999", "1e309", "nan", "../../../escape", "../x/y/z",
           "/nonexistent/x", "/dev/null", "%s%n%x", "x" * 5000, "ü" * 300, "a\nb", "127.0.0.1:9", "[::1]:0",
           "http://127.0.0.1:9/", "sha256:" + "0" * 64, "--json", "-h"]


def argv_for(path: tuple[str, ...], cmd: click.Command, real: list[str]) -> st.SearchStrategy[list[str]]:
    value = st.one_of(st.sampled_from(HOSTILE + real), st.text(max_size=30).filter(lambda s: "\x00" not in s),
                      st.integers(min_value=-(2**70), max_value=2**70).map(str))
    parts: list[st.SearchStrategy[list[str]]] = []
    for p in cmd.params:
        if isinstance(p, click.Option):
            opt = p.opts[0]
            parts.append(st.one_of(st.just([]), st.just([opt]) if p.is_flag else value.map(lambda v, o=opt: [o, v])))
        else:
            parts.append(st.one_of(st.just([]), value.map(lambda v: [v])))
    if not parts:
        return st.just(list(path))
    return st.tuples(*parts).map(lambda ps: [*path, *[x for p in ps for x in p]])


def _run(main: click.Group, argv: list[str], work: Path) -> None:
    cwd = work / "a" / "b" / "c" / "d" / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(main, argv, input="n\n", env={"TMPDIR": str(work / "tmp")})
    finally:
        os.chdir(old)
    output = (r.stdout or "") + (r.stderr or "")
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{argv!r}: {r.exception!r:.500}"
    assert r.exit_code in EXIT_CODES, f"{argv!r}: exit {r.exit_code}: {output[-500:]}"
    assert "Traceback" not in output, f"{argv!r}: {output[-2000:]}"


@pytest.fixture(scope="module")
def real_inputs(bundle_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    b = bundle_factory()
    work = tmp_path_factory.mktemp("cli-fuzz")
    site = b.site(work / "site", "127.0.0.1:9")
    (work / "tmp").mkdir()
    return work, [str(b.path), str(site), str(work / "site" / "state"), str(b.pub)]


@pytest.mark.parametrize("which", ["installer", "bundle"])
def test_any_argv_gets_a_documented_exit_code(which: str, real_inputs: tuple[Path, list[str]],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    work, real = real_inputs
    main = installer_main if which == "installer" else bundle_main
    monkeypatch.setattr(edgebundle.registry.time, "sleep", lambda s: None)  # refused connections: no waiting
    monkeypatch.setattr(tempfile, "tempdir", str(work / "tmp"))
    commands = leaf_commands(main)
    strategy = st.sampled_from(commands).flatmap(lambda pc: argv_for(pc[0], pc[1], real))
    outside_before = sorted(p.name for p in work.parent.iterdir())

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(strategy)
    def run(argv: list[str]) -> None:
        _run(main, argv, work)

    run()
    assert sorted(p.name for p in work.parent.iterdir()) == outside_before


def test_a_verb_whose_optional_extra_is_missing_says_how_to_get_it(tmp_path: Path) -> None:
    """A build host without the ``build`` extra: ``bundle create`` names the missing package and the
    extra (exit 2, no traceback), and the verbs that need nothing more still work."""
    script = ("import sys; sys.modules['cyclonedx'] = None\n"  # as if cyclonedx-python-lib were not installed
              "from bundler.cli import main; main()")
    run = [sys.executable, "-c", script]
    r = subprocess.run([*run, "create", "spec.yaml", "--key", "k"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "'create' needs the Python package 'cyclonedx', which is not installed" in r.stderr
    assert "pip install 'edgebundle[build]'" in r.stderr
    r = subprocess.run([*run, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "unavailable here: needs 'cyclonedx'" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*run, "keygen", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
