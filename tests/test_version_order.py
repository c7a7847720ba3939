"""The one version order (edgebundle.root.version_key, docs/SECURITY.md "Version order").

Expected orders are written out by hand from the SemVer 2.0.0 specification (section 11) and
from the documented rule for other strings; nothing here is computed with the product's code.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebundle.root import version_key
from installer.cli import main

#: SemVer 2.0.0, section 11, its own example, lowest first.
SEMVER_SPEC_EXAMPLE = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                       "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
#: (lower, higher) pairs, each justified in a comment.
PAIRS = [
    ("1.9", "1.10"),  # numeric, not lexical
    ("1.9.0", "1.10.0"),
    ("1.0.0", "2.0.0"), ("2.0.0", "2.1.0"), ("2.1.0", "2.1.1"),  # SemVer 11.2 example
    ("2.3.1", "2.3.4+b1"),  # build metadata ignored: 2.3.4 > 2.3.1
    ("2.3.1+b999", "2.3.4"),
    ("1.0.0-rc1", "1.0.0.0.0"),  # a pre-release sorts below its release; trailing zeros ignored
    ("1.0.0-rc.1", "1.0.0"),
    ("1.0.0-1", "1.0.0-alpha"),  # numeric identifiers below alphanumeric ones
    ("1.0.0-2", "1.0.0-10"),  # numeric identifiers compare numerically
    ("1.0.0-alpha", "1.0.0-alpha.0"),  # a longer set of identifiers wins a tie
    ("1.0.0-Beta", "1.0.0-beta"),  # ASCII order: upper case before lower case
    ("0.9.9", "1.0.0-alpha"),
    ("1.0", "1.0.1"),
    ("1.0.0-rc.9", "1.0.0-rc.10"),
]
#: Pairs that are equal in the order (same precedence).
EQUAL = [("1.0.0+a", "1.0.0+b"), ("1.0", "1.0.0"), ("1.0.0", "1.0.0.0.0"), ("2.3.4+b1", "2.3.4")]


def test_the_semver_specification_example_is_in_order() -> None:
    for lower, higher in itertools.combinations(SEMVER_SPEC_EXAMPLE, 2):
        assert version_key(lower) < version_key(higher), (lower, higher)
    shuffled = SEMVER_SPEC_EXAMPLE[::-1][3:] + SEMVER_SPEC_EXAMPLE[::-1][:3]
    assert sorted(shuffled, key=version_key) == SEMVER_SPEC_EXAMPLE


@pytest.mark.parametrize(("lower", "higher"), PAIRS)
def test_pairs(lower: str, higher: str) -> None:
    assert version_key(lower) < version_key(higher)
    assert not version_key(higher) < version_key(lower)


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_same_precedence(a: str, b: str) -> None:
    assert version_key(a) == version_key(b)


VERSION_CHARS = st.text(alphabet="0123456789abcXYZ.+-", max_size=24)


@settings(max_examples=400, deadline=None)
@given(VERSION_CHARS, VERSION_CHARS, VERSION_CHARS)
def test_any_strings_are_totally_ordered_and_never_crash(a: str, b: str, c: str) -> None:
    ka, kb, kc = version_key(a), version_key(b), version_key(c)
    assert (ka < kb) + (kb < ka) + (ka == kb) == 1  # trichotomy
    if ka <= kb <= kc:
        assert ka <= kc  # transitivity


@pytest.mark.parametrize(("installed", "offered", "refused"), [
    ("2.3.4+b1", "2.3.1", True),  # build metadata must not read as a bigger number
    ("1.0.0-rc1", "1.0.0.0.0", False),  # the release is newer than its pre-release
    ("1.0.0.0.0", "1.0.0-rc1", True),
    ("1.10.0", "1.9.0", True),
    ("1.0.0-beta.11", "1.0.0-beta.2", True),
])
def test_rollback_protection_uses_the_order(installed: str, offered: str, refused: bool, bundle_factory: Any,
                                            tmp_path: Path) -> None:
    """installer verify refuses exactly the older versions, and never crashes on mixed forms."""
    b = bundle_factory(version=offered)
    site = b.site(tmp_path, "127.0.0.1:9")
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "state" / "installed.json").write_text(json.dumps({"bundles": [
        {"name": b.root.name, "version": installed, "root": "sha256:" + "cd" * 32}]}))
    r = CliRunner().invoke(main, ["verify", str(b.path), "--site", str(site)])
    assert r.exception is None or isinstance(r.exception, SystemExit)
    if refused:
        assert r.exit_code == 4 and f"is older than the installed {installed}" in r.stderr, r.output
    else:
        assert r.exit_code == 0, r.output
