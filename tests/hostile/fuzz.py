"""A small coverage-guided fuzzer for pure-Python parsers, with hang and memory guards.

Why not atheris: it needs a native build and a pinned CPython; this loop needs nothing but the
standard library, runs in CI on 2 cores, and its one job is narrow: feed mutated bytes to a
parser and flag anything that is not a clean result or a typed :class:`EdgebundleError`.

How it works (the libFuzzer idea, scaled down): a corpus starts from valid seeds; each round
takes a corpus entry, applies a few random mutations (bit flips, interesting bytes and numbers,
inserts, deletes, chunk copies, splices with another entry, truncation), and runs the target
under ``sys.settrace`` restricted to the parser's source files. An input that reaches a new
(line, previous line) edge joins the corpus. Any other exception, a MemoryError under the
address-space cap, or a CPU-time alarm is a crash; the input is saved under
``tests/hostile/regressions/`` so it is replayed by every later test run.

Invariants:
- Only the target's own files are traced, so the cost is proportional to parser work.
- A run stops at its time budget; no single input may use more than :data:`CALL_CPU_SECONDS`
  of CPU or :data:`MEMORY_HEADROOM` bytes of new address space.
"""

from __future__ import annotations

import hashlib
import random
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from edgebundle.errors import EdgebundleError

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
CALL_CPU_SECONDS = 5.0
MEMORY_HEADROOM = 1 << 30
MAX_INPUT = 64 * 1024
_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x30, 0x37, 0x22, 0x5C, 0x7B, 0x5B, 0x2D, 0x2E)
_INTERESTING_TEXT = (b"-1", b"0", b"1e999", b"99999999999999999999", b"null", b"true", b"[]",
                     b"{}", b'""', b"\\u0000", b"..", b"/", b"777777777777", b"\x80" + b"\xff" * 11)


class Hang(Exception):
    """An input used more CPU time than any parser should need."""


class Crash(Exception):
    """The target raised something other than a typed EdgebundleError."""


Target = Callable[[bytes], Any]


@contextmanager
def guarded() -> Iterator[None]:
    """Cap CPU time (SIGVTALRM, not SIGALRM: pytest-timeout owns that) and address space."""
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"more than {CALL_CPU_SECONDS} s of CPU on one input")

    old_handler = signal.signal(signal.SIGVTALRM, on_alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old_handler)


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 4 << 30


def run_one(target: Target, data: bytes) -> tuple[str, str] | None:
    """Run ``target(data)`` (inside :func:`guarded`); None, or (crash kind, description)."""
    signal.setitimer(signal.ITIMER_VIRTUAL, CALL_CPU_SECONDS)
    try:
        target(data)
    except EdgebundleError:
        return None
    except Hang as e:
        return "Hang", f"Hang: {e}"
    except MemoryError:
        return "MemoryError", "MemoryError: an input asked for more than the memory headroom"
    except Exception as e:  # noqa: BLE001 (that is exactly what a fuzzer looks for)
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        kind = f"{type(e).__name__} at {where}"
        return kind, f"{kind}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    return None


#: Byte-at-a-time scanners: tracing each byte costs more than their few branches are worth.
UNTRACED_FUNCTIONS = frozenset({"load_json_bounded"})


class _Tracer:
    """Collects (file, previous line, line) edges in the traced files."""

    def __init__(self, files: set[str]) -> None:
        self.files = files
        self.edges: set[tuple[str, int, int]] = set()
        self._prev: dict[int, int] = {}

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if code.co_filename not in self.files or code.co_name in UNTRACED_FUNCTIONS:
            return None
        self._prev[id(frame)] = -frame.f_lineno
        return self._local

    def _local(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            key = id(frame)
            self.edges.add((frame.f_code.co_filename, self._prev.get(key, 0), frame.f_lineno))
            self._prev[key] = frame.f_lineno
        elif event == "return":
            self._prev.pop(id(frame), None)
        return self._local

    @contextmanager
    def tracing(self) -> Iterator[set[tuple[str, int, int]]]:
        self.edges = set()
        self._prev.clear()
        sys.settrace(self)
        try:
            yield self.edges
        finally:
            sys.settrace(None)


@dataclass
class FuzzStats:
    target: str
    seconds: float = 0.0
    execs: int = 0
    corpus: int = 0
    edges: int = 0
    crashes: list[str] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "seconds": round(self.seconds, 1), "execs": self.execs,
                "corpus": self.corpus, "edges": self.edges, "crashes": self.crashes,
                "saved": self.saved}


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to four random byte-level mutations of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(buf)
        if op == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[rng.randrange(n)] = rng.choice(_INTERESTING_BYTES)
        elif op == 2:
            at = rng.randint(0, n)
            buf[at:at] = rng.choice(_INTERESTING_TEXT)
        elif op == 3 and n:
            at = rng.randrange(n)
            del buf[at:at + rng.randint(1, min(64, n - at))]
        elif op == 4 and n:
            a = rng.randrange(n)
            chunk = buf[a:a + rng.randint(1, 256)]
            at = rng.randint(0, n)
            buf[at:at] = chunk
        elif op == 5 and corpus:
            other = rng.choice(corpus)
            cut, cut2 = rng.randint(0, n), rng.randint(0, len(other))
            buf = buf[:cut] + other[cut2:]
        elif op == 6 and n:
            buf = buf[:rng.randint(0, n)]
        elif op == 7 and n >= 8:  # overwrite a run of ASCII digits with another number
            at = rng.randrange(n)
            while at < n and not chr(buf[at]).isdigit():
                at += 1
            end = at
            while end < n and chr(buf[end]).isdigit():
                end += 1
            if at < end:
                buf[at:end] = str(rng.choice([0, 1, 2**31, 2**63, 10**30, rng.randrange(1 << 40)])).encode()
        elif op == 8 and n >= 8:  # little-endian integer fields (binary formats)
            at = rng.randrange(n - 7)
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice([0, 1, (1 << (8 * width)) - 1, 1 << (8 * width - 1), rng.randrange(1 << 16)]) % (1 << (8 * width))
            buf[at:at + width] = value.to_bytes(width, "little")
    return bytes(buf[:MAX_INPUT])


def save_crasher(name: str, data: bytes) -> Path:
    """Keep a crashing input as a regression case (replayed by tests/test_fuzz.py)."""
    REGRESSIONS.mkdir(exist_ok=True)
    path = REGRESSIONS / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def fuzz(name: str, target: Target, seeds: list[bytes], files: set[str], seconds: float,
         seed: int = 0) -> FuzzStats:
    """Fuzz ``target`` for ``seconds``; crashes are saved and listed in the returned stats."""
    rng = random.Random(seed)
    tracer = _Tracer({str(Path(f).resolve()) for f in files} | set(files))
    stats = FuzzStats(name)
    corpus: list[bytes] = []
    seen: set[tuple[str, int, int]] = set()
    crash_kinds: set[str] = set()
    start = time.monotonic()

    def run(data: bytes) -> None:
        with tracer.tracing() as edges:
            crash = run_one(target, data)
        stats.execs += 1
        if crash is not None:
            kind, description = crash
            if kind not in crash_kinds:  # keep one input per distinct crash site
                crash_kinds.add(kind)
                stats.crashes.append(description)
                stats.saved.append(str(save_crasher(name, data)))
            return
        if not edges <= seen:
            seen.update(edges)
            corpus.append(data)

    with guarded():
        for s in seeds:
            run(s)
        if not corpus:
            corpus.extend(seeds)
        while time.monotonic() - start < seconds:
            run(mutate(rng.choice(corpus), rng, corpus))
    stats.seconds = time.monotonic() - start
    stats.corpus, stats.edges = len(corpus), len(seen)
    return stats
