"""installer/faults.py: kill points are declared, used, and fire on the N-th hit only."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from installer.faults import ENV, FAULTPOINTS, faultpoint

INSTALLER_DIR = Path(__file__).resolve().parents[1] / "installer"


def test_every_declared_point_is_placed_in_the_code_and_vice_versa() -> None:
    used: set[str] = set()
    for path in INSTALLER_DIR.rglob("*.py"):
        used |= set(re.findall(r'faultpoint\(\s*"([a-z.]+)"', path.read_text()))
        # conditional names: faultpoint("a" if x else "b")
        used |= set(re.findall(r'faultpoint\(\s*"[a-z.]+" if .*? else "([a-z.]+)"', path.read_text()))
    assert used == set(FAULTPOINTS)


def test_undeclared_point_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="undeclared fault point"):
        faultpoint("no.such.point")


@pytest.mark.parametrize(("setting", "killed"), [("load.blob.chunk", True), ("load.blob.chunk@2", True),
                                                 ("load.blob.chunk@3", False), ("stage.file.chunk", False)])
def test_fires_on_the_nth_hit(setting: str, killed: bool) -> None:
    code = ("from installer.faults import faultpoint\n"
            "faultpoint('load.blob.chunk'); faultpoint('load.blob.chunk'); print('survived')")
    r = subprocess.run([sys.executable, "-c", code], env={ENV: setting}, capture_output=True, text=True)
    assert (r.returncode == -signal.SIGKILL) is killed
    assert ("survived" in r.stdout) is not killed


def test_points_are_listed_for_drivers() -> None:
    r = subprocess.run([sys.executable, "-m", "installer.faults"], capture_output=True, text=True, check=True)
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == list(FAULTPOINTS)
