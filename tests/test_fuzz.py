"""Fuzzing the parsers of attacker-controlled bytes: only typed errors may come out.

Two engines share one time budget, ``$EDGEBUNDLE_FUZZ_SECONDS`` (default 60 s in total):
Hypothesis with structured hostile strategies (tests/hostile/targets.py), and a coverage-guided
mutational fuzzer (tests/hostile/fuzz.py) seeded with valid documents. Targets: the root
document, the signatures document, the bundle tar reader, the tar+zstd layer reader, the GGUF
header parser, and the split-parts index. Every input in tests/hostile/regressions/ (crashers
found earlier, named ``<target>-<hash>.bin``, and hand-made hostile cases) is replayed as a plain test.

Figures (executions, corpus, edges, crashes) are printed and written to
``<pytest basetemp>/security-figures/fuzz-<target>.json`` for docs/SECURITY.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import seed as hypothesis_seed

from edgebundle.signing import UntrustedError

from tests.hostile.fuzz import REGRESSIONS, fuzz, guarded, run_one
from tests.hostile.targets import FUZZ_KEY, STRATEGIES, TARGETS

TOTAL_SECONDS = float(os.environ.get("EDGEBUNDLE_FUZZ_SECONDS", "60"))
#: Share of each target's slice spent in Hypothesis; the rest goes to the coverage-guided loop.
HYPOTHESIS_SHARE = 0.4
PER_TARGET = TOTAL_SECONDS / len(TARGETS)


def _figures(tmp_path_factory: pytest.TempPathFactory, name: str, data: dict[str, object]) -> None:
    out = tmp_path_factory.getbasetemp() / "security-figures"
    out.mkdir(exist_ok=True)
    (out / f"fuzz-{name}.json").write_text(json.dumps(data, indent=2))
    print(f"\nfuzz {name}: {json.dumps(data)}")


def _hypothesis_round(name: str, seconds: float) -> tuple[int, list[str]]:
    """Run Hypothesis on ``name`` in 100-example rounds, each from a new seed, until time is up."""
    target, strategy = TARGETS[name].run, STRATEGIES[name]()
    failures: list[str] = []
    examples = 0

    def check(data: bytes) -> None:
        nonlocal examples
        examples += 1
        crash = run_one(target, data)
        if crash is not None:
            failures.append(crash[1])
            raise AssertionError(crash[1])

    deadline = time.monotonic() + seconds
    round_no = 0
    with guarded():
        while time.monotonic() < deadline:
            test = settings(max_examples=100, deadline=None, database=None, derandomize=False,
                            phases=[Phase.generate, Phase.shrink],
                            suppress_health_check=list(HealthCheck))(given(strategy)(check))
            try:
                hypothesis_seed(round_no)(test)()
            except AssertionError:
                break  # Hypothesis shrank it; the smallest input is in ``failures``
            round_no += 1
    return examples, failures


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_parser(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Hypothesis, then coverage-guided mutation; both must find nothing but typed errors."""
    t0 = time.monotonic()
    examples, failures = _hypothesis_round(name, PER_TARGET * HYPOTHESIS_SHARE)
    target = TARGETS[name]
    remaining = max(1.0, PER_TARGET - (time.monotonic() - t0))
    stats = fuzz(name, target.run, target.seeds(), set(target.files), remaining, seed=len(name))
    figures = {"hypothesisExamples": examples, "hypothesisFailures": failures, **stats.as_dict(),
               "seconds": round(time.monotonic() - t0, 1)}
    _figures(tmp_path_factory, name, figures)
    assert not failures, f"Hypothesis found inputs that escape as untyped errors: {failures}"
    assert not stats.crashes, (f"the fuzzer found crashes (inputs saved as regressions: "
                               f"{stats.saved}): {stats.crashes}")
    assert stats.execs > 50 and stats.corpus >= 1  # the loop really ran


def test_seeds_are_accepted() -> None:
    """The seeds are valid documents, so mutations start inside the formats (not at the door).

    One signatures seed is signed only by a key the fuzz trust store does not hold: it alone must
    be refused, and every other seed (the single- and the two-signature one included) accepted.
    """
    trusted = hashlib.sha256(FUZZ_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()
    refused = []
    for name, target in TARGETS.items():
        for data in target.seeds():
            try:
                target.run(data)
            except UntrustedError:
                assert name == "signatures" and trusted.encode() not in data, (name, data[:200])
                refused.append(data)
    assert len(refused) == 1, f"{len(refused)} seeds refused; only the untrusted-key seed may be"


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.bin")) if REGRESSIONS.exists() else []


def test_regression_cases_exist() -> None:
    """The replay below must never silently become an empty (skipped) parametrization."""
    cases = _regressions()
    assert cases and {p.name.split("-", 1)[0] for p in cases} <= set(TARGETS), cases


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.name)
def test_fuzz_regression(path: Path) -> None:
    """A crasher found once stays fixed: it must end in a typed error or a clean parse."""
    name = path.name.split("-", 1)[0]
    with guarded():
        crash = run_one(TARGETS[name].run, path.read_bytes())
    assert crash is None, crash[1]
