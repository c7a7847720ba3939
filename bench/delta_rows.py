"""Delta rows (S1-S5): placeholder until ``bundle create --base`` exists."""

from __future__ import annotations

from bench.context import Bench
from bench.rows import RowResult


def delta(bench: Bench) -> list[RowResult]:
    bench.log("row delta: skipped (bundle create has no --base yet)")
    return []
