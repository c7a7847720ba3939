"""Slow media: a stick that drips bytes is named within a deadline derived from the member's size.

The media read seam (``edgebundle.sources._media_read``) is made to drip: each read returns at most
``DRIP`` bytes after ``PAUSE`` seconds, a rate far below the minimum one (set small through the
documented ``EDGEBUNDLE_MEDIA_MIN_RATE`` and ``EDGEBUNDLE_MEDIA_GRACE``, so a case takes seconds).
Each case asserts the refusal (exit 1, the member and the medium named, what to do), the time
bound, and that nothing outside the site's NAS root and state directory changed and that no
model version became visible. Controls: the same drip within the rate passes, and a bad setting
is a usage error naming the variable.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from click.testing import CliRunner, Result

from edgebundle import sources
from installer.cli import main
from tests.fixtures.bundles import BuiltBundle
from tests.test_hostile import tree_state
from tests.test_hostile_site import visible_versions

pytestmark = pytest.mark.timeout(120)
DRIP, PAUSE = 256, 0.05  # 5 KiB/s
#: 1 MiB/s after a 1 s grace: a member of n bytes may spend 1 + n / 2^20 s inside media reads.
FAST_DEADLINE = {"EDGEBUNDLE_MEDIA_MIN_RATE": str(1024 * 1024), "EDGEBUNDLE_MEDIA_GRACE": "1"}


def invoke(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, args, env=env)


@pytest.fixture(scope="module")
def tar_bundle(bundle_factory: Any) -> BuiltBundle:
    return bundle_factory(images=())


@pytest.fixture(scope="module")
def dir_bundle(bundle_factory: Any) -> BuiltBundle:
    return bundle_factory(images=(), out_format="dir")


def drip(monkeypatch: pytest.MonkeyPatch, pause: float = PAUSE, size: int = DRIP) -> list[int]:
    calls: list[int] = []

    def slow(f: BinaryIO, n: int) -> bytes:
        calls.append(n)
        time.sleep(pause)
        return f.read(min(n, size))

    monkeypatch.setattr(sources, "_media_read", slow)
    return calls


@pytest.mark.parametrize("layout", ["tar", "dir"])
@pytest.mark.parametrize("verb", ["verify", "stage"])
def test_dripping_media_is_refused_in_bounded_time(verb: str, layout: str, tar_bundle: BuiltBundle,
                                                   dir_bundle: BuiltBundle, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    b = tar_bundle if layout == "tar" else dir_bundle
    site = b.site(tmp_path / "site", "127.0.0.1:9")
    before = tree_state(tmp_path, skip=("site/",))
    calls = drip(monkeypatch)
    started = time.monotonic()
    r = invoke([verb, str(b.path), "--site", str(site)], FAST_DEADLINE)
    took = time.monotonic() - started
    out = r.stdout + r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 1, out
    where = re.escape(f"{'tar' if layout == 'tar' else 'directory'} {b.path}")
    expect = (rf"the media is too slow: reading (blobs/sha256/[0-9a-f]{{64}}|edgebundle/\S+|\S+) in {where} "
              r"took more than \d+ s \([\d,]+ of [\d,]+ bytes; the minimum rate is 1,048,576 bytes/s\)")
    assert re.search(expect, out), out
    assert "copy the bundle to a local disk" in out and "EDGEBUNDLE_MEDIA_MIN_RATE" in out
    assert calls, "the drip was never used"
    assert took < 30, f"took {took:.1f} s"
    assert tree_state(tmp_path, skip=("site/",)) == before, "something was written outside the site"
    assert visible_versions(tmp_path / "site" / "nas") == set()


def test_media_within_the_minimum_rate_passes(tar_bundle: BuiltBundle, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: reads that pause but deliver well above the rate are not cut off."""
    site = tar_bundle.site(tmp_path / "site", "127.0.0.1:9")
    drip(monkeypatch, pause=0.001, size=8 * 1024 * 1024)
    r = invoke(["stage", str(tar_bundle.path), "--site", str(site)], FAST_DEADLINE)
    assert r.exit_code == 0, r.output
    assert len(visible_versions(tmp_path / "site" / "nas")) == len(tar_bundle.root.models)


@pytest.mark.parametrize("name,value", [("EDGEBUNDLE_MEDIA_MIN_RATE", "fast"), ("EDGEBUNDLE_MEDIA_MIN_RATE", "0"),
                                        ("EDGEBUNDLE_MEDIA_GRACE", "-1"), ("EDGEBUNDLE_MEDIA_GRACE", "inf")])
def test_a_bad_media_setting_is_a_usage_error_naming_it(name: str, value: str, tar_bundle: BuiltBundle,
                                                        tmp_path: Path) -> None:
    site = tar_bundle.site(tmp_path / "site", "127.0.0.1:9")
    r = invoke(["verify", str(tar_bundle.path), "--site", str(site)], {name: value})
    assert r.exit_code == 2 and f"{name}={value!r} is not a positive number" in r.output, r.output
