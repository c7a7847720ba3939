"""Operators are named: changes need --operator or EDGEBUNDLE_OPERATOR; other verbs never record a
silent "unknown"."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.bundles import INSTALLER, write_site

pytestmark = pytest.mark.timeout(300)


def run_bare(*args: Any) -> subprocess.CompletedProcess[str]:
    """The installer with no operator, $USER or $SUDO_USER in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEBUNDLE_OPERATOR", "USER", "SUDO_USER", "LOGNAME")}
    return subprocess.run([INSTALLER, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("verb", [["install", "BUNDLE", "--yes"], ["rollback", "--yes"], ["prune", "--yes"]])
def test_changes_need_an_operator(verb: list[str], bundle_factory: Any, registry: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    site = write_site(tmp_path, registry.host, trust=[b.pub])
    r = run_bare(*[str(b.path) if a == "BUNDLE" else a for a in verb], "--site", site)
    assert r.returncode == 2 and "Missing option '--operator'" in r.stderr, r.stderr
    assert not (tmp_path / "state" / "journal").exists()  # nothing verified, loaded or recorded


def test_load_without_user_records_the_login_name_as_a_fallback(bundle_factory: Any, registry: Any,
                                                              tmp_path: Path) -> None:
    b = bundle_factory(images=("rag/vector-db:1.0",), models=())
    site = write_site(tmp_path, registry.host, trust=[b.pub])
    r = run_bare("load", b.path, "--site", site)
    assert r.returncode == 0, r.stderr
    line = json.loads((tmp_path / "state" / "audit.log").read_text().splitlines()[-1])
    login = pwd.getpwuid(os.getuid()).pw_name
    assert line["operator"] == f"uid {os.getuid()} ({login}; no EDGEBUNDLE_OPERATOR or USER set)"
