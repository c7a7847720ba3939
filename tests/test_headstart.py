"""The head start (edgebundle/headstart.py): a forked child hashes a bundle tar's large members
while the installer starts; the verifier compares what it finished with the signed pins.

Expected digests come from ``hashlib`` over the bytes the test wrote, never from the product.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebundle import headstart
from edgebundle.sources import TarSource
from edgebundle.tarfmt import TarEntry

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Iterator[None]:
    yield
    headstart.claim(Path("/"))  # stops whatever a test started and did not take


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def offsets(path: Path) -> dict[str, int]:
    with tarfile.open(path) as t:
        return {m.name: m.offset_data for m in t.getmembers()}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_units_are_the_verifiers_pieces_largest_member_first() -> None:
    entries = [TarEntry("small", 0, 15 * MIB), TarEntry("mid", 10**9, 20 * MIB),
               TarEntry("one-piece", 2 * 10**9, 64 * MIB), TarEntry("two", 3 * 10**9, 64 * MIB + 1),
               TarEntry("huge", 10**10, 2048 * MIB)]
    assert headstart.units(entries) == (
        [(10**10 + i * 128 * MIB, 128 * MIB) for i in range(16)]  # 2 GiB: 16 pieces of 128 MiB
        + [(3 * 10**9, 64 * MIB), (3 * 10**9 + 64 * MIB, 1)]  # one byte over a piece: two pieces
        + [(2 * 10**9, 64 * MIB), (10**9, 20 * MIB)])  # one piece or less: whole; under 16 MiB: left out


def test_the_child_hashes_each_unit_of_the_file(tmp_path: Path) -> None:
    big, mid = os.urandom(64 * MIB + 4096), os.urandom(17 * MIB)
    tar = write_tar(tmp_path / "b.tar", {"blobs/sha256/" + "a" * 64: big, "blobs/sha256/" + "b" * 64: mid,
                                         "index.json": b"{}"})
    at = offsets(tar)
    started = headstart.begin(tar)
    assert started is not None and headstart.claim(tar) is started
    done = started.take(wait=True)
    a, b = at["blobs/sha256/" + "a" * 64], at["blobs/sha256/" + "b" * 64]
    assert done == {(a, 64 * MIB): sha(big[:64 * MIB]), (a + 64 * MIB, 4096): sha(big[64 * MIB:]),
                    (b, 17 * MIB): sha(mid)}
    assert started.take() == done  # taken once, kept


def test_a_source_maps_the_ranges_to_its_members(tmp_path: Path) -> None:
    big = os.urandom(64 * MIB + 10)
    name = "blobs/sha256/" + "c" * 64
    tar = write_tar(tmp_path / "b.tar", {"index.json": b"{}", name: big})
    started = headstart.begin(tar)
    assert started is not None
    started.take(wait=True)
    source = TarSource.from_path(tar)  # claims the head start for the same file
    assert source.early_digests() == {(name, 0, 64 * MIB): sha(big[:64 * MIB]), (name, 64 * MIB, 10): sha(big[64 * MIB:])}


def test_a_changed_file_gets_no_digests(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "b.tar", {"blobs/sha256/" + "d" * 64: os.urandom(20 * MIB)})
    started = headstart.begin(tar)
    assert started is not None
    time.sleep(0.01)
    os.utime(tar, ns=(time.time_ns(), time.time_ns()))  # the same bytes, but the file was touched
    assert started.take(wait=True) == {}


def test_another_file_does_not_claim_it_and_stops_it(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "b.tar", {"blobs/sha256/" + "e" * 64: os.urandom(20 * MIB)})
    other = write_tar(tmp_path / "c.tar", {"index.json": b"{}"})
    started = headstart.begin(tar)
    assert started is not None
    pid = started._pid
    assert TarSource.from_path(other).early_digests() == {}
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped
    assert headstart.claim(tar) is None  # given out (and dropped) once


@pytest.mark.parametrize(("argv", "starts"), [
    (["verify", "{tar}", "--site", "s.yaml"], True),
    (["plan", "--site", "{yaml}", "{tar}", "-o", "p.json"], True),  # the first tar after the verb
    (["load", "{tar}"], False),  # load and stage hash only what they write
    (["verify", "{yaml}"], False),  # not a tar
    (["verify", "{missing}"], False),
    (["--help"], False),
    ([], False),
])
def test_only_verbs_that_hash_everything_start_one(tmp_path: Path, argv: list[str], starts: bool) -> None:
    tar = write_tar(tmp_path / "b.tar", {"index.json": b"{}"})
    yaml = tmp_path / "s.yaml"
    yaml.write_text("a: " + "x" * 2000 + "\n")
    args = [a.format(tar=tar, yaml=yaml, missing=tmp_path / "nope.tar") for a in argv]
    started = headstart.begin_for_argv(args)
    assert (started is not None) is starts
    if started:
        assert started.path == tar
        started.cancel()


def test_the_switch_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tar = write_tar(tmp_path / "b.tar", {"index.json": b"{}"})
    monkeypatch.setenv(headstart.ENV, "off")
    assert headstart.begin_for_argv(["verify", str(tar)]) is None


def test_garbage_is_not_a_digest(tmp_path: Path) -> None:
    """The report's lines are parsed strictly; a line the kill cut short is dropped."""
    good = f"512 10 {sha(b'x')}\n"
    report = (good + "1 2 sha256:zz\n" + "x 2 " + sha(b"y") + "\n" + f"9 9 {sha(b'z')}").encode()
    assert headstart._parse_report(report) == {(512, 10): sha(b"x")}


def test_no_process_to_spare_means_no_head_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tar = write_tar(tmp_path / "b.tar", {"index.json": b"{}"})
    fds = sorted(os.listdir("/proc/self/fd"))

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert headstart.begin_for_argv(["verify", str(tar)]) is None
    assert sorted(os.listdir("/proc/self/fd")) == fds  # the pipe it made is closed again
