"""edgebundle/faults.py: kill points are declared, used, and fire on the N-th hit only."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgebundle.faults import ENV, FAULTPOINTS, faultpoint

REPO = Path(__file__).resolve().parents[1]


def test_every_declared_point_is_placed_in_the_code_and_vice_versa() -> None:
    used: set[str] = set()
    for path in [p for pkg in ("edgebundle", "bundler", "installer") for p in (REPO / pkg).rglob("*.py")]:
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
    code = ("from edgebundle.faults import faultpoint\n"
            "faultpoint('load.blob.chunk'); faultpoint('load.blob.chunk'); print('survived')")
    r = subprocess.run([sys.executable, "-c", code], env={ENV: setting}, capture_output=True, text=True)
    assert (r.returncode == -signal.SIGKILL) is killed
    assert ("survived" in r.stdout) is not killed


def test_points_are_listed_for_drivers() -> None:
    r = subprocess.run([sys.executable, "-m", "edgebundle.faults"], capture_output=True, text=True, check=True)
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == list(FAULTPOINTS)


def _run_point(setting: str, code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", "from edgebundle.faults import faultpoint\n" + code],
                            env={ENV: setting}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_enospc_mode_raises_a_full_disk_error() -> None:
    code = ("import errno\ntry:\n    faultpoint('stage.file.chunk')\n"
            "except OSError as e:\n    print('errno', e.errno == errno.ENOSPC)")
    out, _ = _run_point("stage.file.chunk:enospc", code).communicate(timeout=30)
    assert out.strip() == "errno True"


def test_stop_mode_freezes_until_continued() -> None:
    proc = _run_point("load.blob.chunk@1:stop", "faultpoint('load.blob.chunk'); print('continued')")
    with pytest.raises(subprocess.TimeoutExpired):  # frozen: no exit
        proc.wait(timeout=1)
    assert Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "continued"


def test_unknown_mode_is_refused() -> None:
    _, err = _run_point("load.blob.chunk:explode", "faultpoint('load.blob.chunk')").communicate(timeout=30)
    assert "unknown mode 'explode'" in err
