"""``edgebundle.clikit.run_and_exit``: both console entries end without interpreter teardown, and
lose nothing by it (output, exit status, exit hooks, running threads).

Each case runs a small click program in a fresh interpreter, as the console scripts do.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROGRAM = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path
    import click
    from edgebundle.clikit import run_and_exit

    out = Path(sys.argv[1])

    class Teardown:
        def __del__(self):  # runs only if the interpreter tears its modules down
            (out / "teardown").write_text("ran")

    KEEP = Teardown()

    @click.command()
    @click.argument("outdir")
    @click.argument("case")
    def main(outdir, case):
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        if case == "ok":
            click.echo("x" * 300_000)  # more than a pipe holds: flushed before the exit
        elif case == "status":
            sys.exit(3)
        elif case == "message":
            sys.exit("stopped for a reason")
        elif case == "thread":
            def late():
                time.sleep(0.3)
                (out / "thread").write_text("done")
            threading.Thread(target=late).start()

    run_and_exit(main)
""")


def run(tmp_path: Path, case: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    return subprocess.run([sys.executable, str(script), str(tmp_path), case], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])


def test_output_and_exit_hooks_are_kept_and_the_teardown_skipped(tmp_path: Path) -> None:
    r = run(tmp_path, "ok")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "x" * 300_000 + "\n"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()


@pytest.mark.parametrize(("case", "status", "stderr"), [("status", 3, ""), ("message", 1, "stopped for a reason\n")])
def test_the_exit_status_is_the_commands(tmp_path: Path, case: str, status: int, stderr: str) -> None:
    r = run(tmp_path, case)
    assert (r.returncode, r.stderr) == (status, stderr)
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    r = run(tmp_path, "thread")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "thread").read_text() == "done"
