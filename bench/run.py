"""``make bench``: edgebundle against the baselines users would script, ratios from one run.

Usage (every option also reads an environment variable, shown in brackets)::

    python bench/run.py                          # default sizes, 5 interleaved runs per row
    BENCH_MODEL_GB=4 python bench/run.py         # a bigger GGUF
    BENCH_ONLY=create,verify BENCH_RUNS=1 python bench/run.py
    BENCH_ONLY=delta BENCH_DELTA=S3,S4 python bench/run.py  # some of the delta scenarios
    BENCH_RSS_SIZES=1,4 python bench/run.py      # create/verify (warm, cold)/load/stage at 1 and 4 GiB

The default run writes section ``main`` of bench/results.md; the RSS run writes section
``rss-vs-model-size``; other sections of the file are kept.

Invariants: inputs and every destination live in one temporary directory, removed at the end
(``--keep`` keeps it); all registries listen on 127.0.0.1 and are stopped by their own pid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: import bench.*

from bench import report  # noqa: E402
from bench.context import DELTA_SCENARIOS, REPO, ROWS, RSS_ROWS, Bench, Settings  # noqa: E402
from bench.measure import BenchError  # noqa: E402
from bench.rows import CORE_ROWS, RowResult  # noqa: E402

RowFn = Callable[[Bench], list[RowResult]]


def _row_functions() -> dict[str, RowFn]:
    from bench import delta_rows

    return {**CORE_ROWS, "delta": delta_rows.delta}


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-gb", type=float, default=float(_env("MODEL_GB", "1")),
                   help="GGUF model size in GiB [BENCH_MODEL_GB, default 1]")
    p.add_argument("--image-mb", type=int, default=int(_env("IMAGE_MB", "256")),
                   help="bulk image layer in MiB [BENCH_IMAGE_MB, default 256]")
    p.add_argument("--embed-mb", type=int, default=int(_env("EMBED_MB", "192")),
                   help="embedding safetensors in MiB [BENCH_EMBED_MB, default 192]")
    p.add_argument("--runs", type=int, default=int(_env("RUNS", "5")),
                   help="interleaved runs per side [BENCH_RUNS, default 5]")
    p.add_argument("--only", default=_env("ONLY", ",".join(ROWS)),
                   help=f"rows to run, comma-separated from {','.join(ROWS)} [BENCH_ONLY]")
    p.add_argument("--delta", default=_env("DELTA", ",".join(DELTA_SCENARIOS)),
                   help=f"delta scenarios to run, from {','.join(DELTA_SCENARIOS)} [BENCH_DELTA]")
    p.add_argument("--cold", choices=("auto", "on", "off"), default=_env("COLD", "auto"),
                   help="verify-cold row: auto = when the page cache can be dropped [BENCH_COLD]")
    p.add_argument("--rss-sizes", default=_env("RSS_SIZES", ""),
                   help="instead of the table: time, ratio and peak RSS of create/verify (warm and "
                        "cold)/load/stage at each model size in GiB, e.g. 1,4 [BENCH_RSS_SIZES]")
    p.add_argument("--output", type=Path, default=Path(_env("OUT", str(REPO / "bench" / "results.md"))),
                   help="results file [BENCH_OUT, default bench/results.md]")
    p.add_argument("--workdir", type=Path, default=Path(_env("TMP", tempfile.gettempdir())),
                   help="where the temporary tree goes [BENCH_TMP]")
    p.add_argument("--keep", action="store_true", help="keep the temporary tree (for post-mortems)")
    p.add_argument("--profile", type=Path, default=Path(_env("PROFILE", "")) if _env("PROFILE", "") else None,
                   help="run edgebundle's commands under cProfile, profiles into this dir; the "
                        "table is printed, not written (times are inflated) [BENCH_PROFILE]")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ROWS)
    if unknown:
        p.error(f"unknown row(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROWS)}")
    unknown = set(args.delta.split(",")) - set(DELTA_SCENARIOS)
    if unknown:
        p.error(f"unknown delta scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(DELTA_SCENARIOS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_rows(settings: Settings, workdir: Path, keep: bool) -> tuple[list[RowResult], Bench]:
    """Set up one world, measure the selected rows in order, tear the world down."""
    tmp = Path(tempfile.mkdtemp(prefix="edgebundle-bench-", dir=workdir))
    bench = Bench(settings, tmp, log)
    fns = _row_functions()
    try:
        bench.setup()
        results: list[RowResult] = []
        for name in ROWS:
            if name in settings.only:
                results += fns[name](bench)
        return results, bench
    finally:
        bench.close()
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def describe(settings: Settings) -> str:
    return (f"GGUF {settings.model_gb:g} GiB, bulk image layer {settings.image_mb} MiB, embedding "
            f"{settings.embed_mb} MiB, {settings.runs} interleaved run(s) per side")


def main_table(args: argparse.Namespace) -> str:
    settings = Settings(args.model_gb, args.image_mb, args.embed_mb, args.runs,
                        tuple(args.only.split(",")), args.cold, args.profile, tuple(args.delta.split(",")))
    t0 = time.monotonic()
    results, _ = run_rows(settings, args.workdir, args.keep)
    elapsed = time.monotonic() - t0
    table = report.results_table(results)
    body = "\n\n".join([
        f"## Side by side ({report.now()})",
        f"`{report.command_line()}`: {describe(settings)}; whole bench {elapsed / 60:.1f} min.",
        report.key_values("Machine", report.machine()),
        report.key_values("Versions", report.versions()),
        table,
        "Times are medians of the interleaved runs (A B A B ...); **ratio = edgebundle / baseline, "
        "below 1 means edgebundle is faster**. Peak RSS is the largest of the runs (for a shell "
        "pipeline: its largest process). Absolute times are not comparable across runs of the "
        "bench on this noisy machine; the ratios within one run are.",
    ])
    if args.profile is None:
        report.write_section(args.output, "main", body)
    return table


def rss_table(args: argparse.Namespace) -> str:
    sizes = [float(s) for s in args.rss_sizes.split(",") if s.strip()]
    only = tuple(r for r in RSS_ROWS if r in args.only.split(","))
    by_size: dict[float, list[RowResult]] = {}
    for size in sizes:
        log(f"peak RSS at {size:g} GiB")
        settings = Settings(size, args.image_mb, args.embed_mb, args.runs, only, args.cold)
        by_size[size], _ = run_rows(settings, args.workdir, args.keep)
    head = "| Row | " + " | ".join(f"edgebundle @ {s:g} GiB" for s in sizes) + " | change | " + \
        " | ".join(f"baseline @ {s:g} GiB" for s in sizes) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(sizes) + 1)]
    for i, row in enumerate(by_size[sizes[0]]):
        ours = [by_size[s][i].a.peak_rss_kib for s in sizes]
        base = [by_size[s][i].b.peak_rss_kib for s in sizes]
        change = f"{round((ours[-1] - ours[0]) / ours[0] * 100) + 0:+d}%"  # + 0: never "-0%"
        lines.append(f"| {row.name} | " + " | ".join(f"{k / 1024:,.0f} MiB" for k in ours) + f" | {change} | "
                     + " | ".join(f"{k / 1024:,.0f} MiB" for k in base) + " |")
    times = ["| Row | " + " | ".join(f"edgebundle s @ {s:g} GiB | baseline s @ {s:g} GiB | ratio @ {s:g} GiB"
                                     for s in sizes) + " |",
             "|---|" + "---:|" * (3 * len(sizes))]
    for i, row in enumerate(by_size[sizes[0]]):
        times.append(f"| {row.name} | " + " | ".join(
            f"{by_size[s][i].a.seconds:.2f} | {by_size[s][i].b.seconds:.2f} | "
            f"{by_size[s][i].a.seconds / max(by_size[s][i].b.seconds, 1e-9):.2f}" for s in sizes) + " |")
    table = "\n".join(lines)
    body = "\n\n".join([
        f"## Peak RSS vs model size ({report.now()})",
        f"`{report.command_line()}`: the rows {', '.join(only)} at each GGUF size, {args.runs} interleaved run(s) "
        f"({', '.join(f'{s:g} GiB' for s in sizes)}); everything else as in the main run.",
        report.key_values("Machine", report.machine()),
        table,
        "Wall times of the same runs (medians; ratio = edgebundle / baseline, below 1 means edgebundle is faster):",
        "\n".join(times),
    ])
    report.write_section(args.output, "rss-vs-model-size", body)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        table = rss_table(args) if args.rss_sizes else main_table(args)
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    print(table)
    log(f"profiles in {args.profile}" if args.profile else f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
