"""Run commands as children and measure them: wall time, CPU time and peak RSS, pairs interleaved.

Every measured command runs under GNU ``/usr/bin/time -f '%e %U %S %M'`` (written to a file, so
the child's own output is untouched); the wall time we report is our own monotonic clock around
the child (``%e`` has only 10 ms resolution), the CPU time is ``%U + %S`` (user + system, of the
child and its waited-for descendants: what the work costs, whatever else loads the machine; a
registry started outside the timed command is not in it), the peak RSS is ``%M``. For a shell
pipeline ``%M`` is the largest single process of the pipeline (``wait4`` reports the maximum
over descendants, not the sum), which is also what it is for our one Python process.

Invariants:
- A pair's runs alternate (A B A B ...), so a slow phase of this noisy machine hits both sides;
  only ratios within one run of the harness are meaningful, never absolute times across runs.
- ``prepare`` and ``cleanup`` hooks (fresh registries, fresh directories, dropping caches) run
  outside the timed window; ``check`` runs after the timed window and fails the bench if the
  command did not really do its job.
- A failing child stops the bench with its command line and the tail of its output.
"""

from __future__ import annotations

import io
import os
import pstats
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TIME_BIN = "/usr/bin/time"

Hook = Callable[[], None]


class BenchError(RuntimeError):
    """A measured command failed or did not produce what it should have."""


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_rss_kib: int
    cpu_seconds: float = 0.0


@dataclass
class Command:
    """One side of a row: what to run, and what to do around each run.

    ``argv`` is re-evaluated for every run when it is a callable (fresh ports, fresh paths).
    ``ours`` marks edgebundle's own Python CLIs: those are what ``Runner.profile_dir`` profiles.
    """

    label: str
    argv: Sequence[str] | Callable[[], Sequence[str]]
    prepare: Hook | None = None
    check: Hook | None = None
    cleanup: Hook | None = None
    cwd: Path | None = None
    env: dict[str, str] | None = None
    ours: bool = False

    def resolve(self) -> list[str]:
        return list(self.argv() if callable(self.argv) else self.argv)


def shell(script: str) -> list[str]:
    """A baseline written as a shell pipeline, the way a user would script it."""
    return ["bash", "-o", "pipefail", "-ec", script]


@dataclass
class Runner:
    """Runs and times children; keeps their output in ``logs`` for post-mortems.

    With ``profile_dir``, edgebundle's commands run under ``python -m cProfile`` and leave
    ``<n>-<label>.prof`` there plus a ``.txt`` of the top functions (times are then inflated).
    """

    logs: Path
    profile_dir: Path | None = None
    _count: int = field(default=0, init=False)

    def run_once(self, cmd: Command) -> Sample:
        if cmd.prepare:
            cmd.prepare()
        argv = cmd.resolve()
        self._count += 1
        stem = self.logs / f"{self._count:03d}-{_slug(cmd.label)}"
        timefile, outfile = stem.with_suffix(".time"), stem.with_suffix(".log")
        env = {**os.environ, **(cmd.env or {})}
        prof = None
        if self.profile_dir is not None and cmd.ours:
            prof = self.profile_dir / f"{stem.name}.prof"
            argv = [sys.executable, "-m", "cProfile", "-o", str(prof), *argv]
        with open(outfile, "wb") as out:
            out.write((shlex.join(argv) + "\n").encode())
            out.flush()
            t0 = time.monotonic()
            proc = subprocess.run([TIME_BIN, "-f", "%e %U %S %M", "-o", str(timefile), "--", *argv],
                                  stdout=out, stderr=subprocess.STDOUT, cwd=cmd.cwd, env=env)
            seconds = time.monotonic() - t0
        if proc.returncode != 0:
            tail = outfile.read_text(errors="replace")[-3000:]
            raise BenchError(f"{cmd.label} failed (exit {proc.returncode}): {shlex.join(argv)}\n{tail}")
        fields = timefile.read_text().split()
        if prof is not None:
            _summarise_profile(prof)
        if cmd.check:
            cmd.check()
        if cmd.cleanup:
            cmd.cleanup()
        return Sample(seconds, int(fields[-1]), float(fields[-3]) + float(fields[-2]))

    def interleave(self, a: Command, b: Command, runs: int,
                   log: Callable[[str], None] = lambda s: None) -> tuple[list[Sample], list[Sample]]:
        """``runs`` runs of each, alternating A B A B ..."""
        sa: list[Sample] = []
        sb: list[Sample] = []
        for i in range(runs):
            for cmd, samples in ((a, sa), (b, sb)):
                samples.append(self.run_once(cmd))
                log(f"  run {i + 1}/{runs} {cmd.label}: {samples[-1].seconds:.2f} s, "
                    f"peak RSS {samples[-1].peak_rss_kib / 1024:.0f} MiB")
        return sa, sb


@dataclass(frozen=True)
class Summary:
    """Medians of one side of a row."""

    seconds: float
    peak_rss_kib: int
    runs: int
    cpu_seconds: float = 0.0

    @classmethod
    def of(cls, samples: Sequence[Sample]) -> "Summary":
        return cls(statistics.median(s.seconds for s in samples),
                   max(s.peak_rss_kib for s in samples), len(samples),
                   statistics.median(s.cpu_seconds for s in samples))


def _summarise_profile(prof: Path, top: int = 30) -> None:
    """Write the top functions by own time and by cumulative time beside the profile."""
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    prof.with_suffix(".txt").write_text(buf.getvalue())


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")[:60]
