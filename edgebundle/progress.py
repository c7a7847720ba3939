"""Progress for long operations: bytes, rate and ETA on a terminal; silent otherwise.

Invariant: progress goes to stderr only, and only when stderr is a TTY and output is not JSON,
so scripted use (``--json``, pipes, CI) sees clean output.
"""

from __future__ import annotations

import sys
import time


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Call the instance with a byte count as bytes go by; ``done()`` ends the line."""

    def __init__(self, label: str, total: int | None, enabled: bool | None = None) -> None:
        self.label, self.total = label, total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done_bytes = 0
        self.start = self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.2:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done_bytes / elapsed
        line = f"\r{self.label}: {human(self.done_bytes)}"
        if self.total:
            pct = 100 * self.done_bytes / self.total
            eta = max(self.total - self.done_bytes, 0) / rate if rate > 0 else 0
            line += f" / {human(self.total)} ({pct:.0f}%)  {human(rate)}/s  ETA {eta:.0f}s"
        else:
            line += f"  {human(rate)}/s"
        sys.stderr.write(line.ljust(100)[:100])
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()


def percent(part: int, whole: int) -> str:
    """``part`` as a share of ``whole`` that never rounds a small non-zero share to 0.0%."""
    share = 100 * part / max(whole, 1)
    return "<0.1%" if 0 < share < 0.1 else f"{share:.1f}%"
