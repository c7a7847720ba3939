"""The cold start (edgebundle/coldstart.py): a verb records the files its imports read, and its
next start asks the kernel for them together.

Whether a file is in the page cache is read from the kernel (``mincore``), never from the product.
"""

from __future__ import annotations

import ctypes
import importlib.util
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import installer.commands.verify
from edgebundle import coldstart
from tests.fixtures.bundles import BuiltBundle, run_installer

MIB = 1024 * 1024
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident(path: Path) -> float:
    """The share of ``path``'s pages in the page cache."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        try:
            assert _libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            _libc.munmap(addr, size)
        return sum(v & 1 for v in vec) / pages
    finally:
        os.close(fd)


def evicted(path: Path, size: int) -> Path:
    """``path`` written, flushed and dropped from the page cache (skips where pages cannot be dropped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if resident(path) != 0:
        pytest.skip(f"{path.parent}'s file system keeps its pages (tmpfs?): nothing to read ahead")
    return path


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def write_list(path: Path, entries: list[str], header: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header if header is not None else coldstart._header(), *entries]) + "\n")
    return path


def list_path(xdg: Path, program: str, verb: str) -> Path:
    return xdg / "edgebundle" / "coldstart" / f"{program}-{verb}.list"


def test_installer_verify_records_its_imports_once(bundle_factory: Callable[..., BuiltBundle], tmp_path: Path) -> None:
    """The first run writes the list (the verb's own module, the verifier, the signature library's
    extension module among it); a second run that imports nothing new leaves the file alone."""
    b = bundle_factory()
    site = b.site(tmp_path, "127.0.0.1:9")
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    r = run_installer("verify", b.path, "--site", site, "--json", env=env)
    assert r.returncode == 0, r.stderr
    listed = list_path(tmp_path / "xdg", "installer", "verify")
    lines = listed.read_text().splitlines()
    assert lines[0].startswith("# edgebundle cold start 1 python ") and sys.prefix in lines[0]
    import cryptography.hazmat.bindings._rust as rust

    import edgebundle.verify
    for module in (installer.commands.verify, edgebundle.verify):
        assert importlib.util.cache_from_source(module.__file__) in lines  # type: ignore[arg-type]
        assert module.__file__ in lines
    assert rust.__file__ in lines
    before = listed.stat()
    r = run_installer("verify", b.path, "--site", site, "--json", env=env)
    assert r.returncode == 0, r.stderr
    after = listed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_typo_help_or_the_switch_leaves_no_list(bundle_factory: Callable[..., BuiltBundle], tmp_path: Path) -> None:
    b = bundle_factory()
    site = b.site(tmp_path, "127.0.0.1:9")
    xdg = tmp_path / "xdg"
    assert run_installer("verfy", b.path, "--site", site, env={"XDG_CACHE_HOME": str(xdg)}).returncode == 2
    assert run_installer("--help", env={"XDG_CACHE_HOME": str(xdg)}).returncode == 0
    r = run_installer("verify", b.path, "--site", site, env={"XDG_CACHE_HOME": str(xdg), coldstart.ENV: "off"})
    assert r.returncode == 0, r.stderr
    assert not (xdg / "edgebundle").exists()


def test_read_ahead_caches_listed_files_inside_the_interpreters_trees_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listed file is asked for; a source file only looked up; a file outside the trees, a path
    through ``..``, a FIFO, a device, a directory and a relative path are left alone, and no
    thread blocks on any of them."""
    tree = tmp_path / "tree"
    monkeypatch.syspath_prepend(str(tree))  # a tree of this interpreter's, as site-packages is
    monkeypatch.setattr(coldstart, "MAX_FILE_BYTES", 2 * MIB)
    wanted = evicted(tree / "pkg" / "__pycache__" / "mod.cpython-311.pyc", 64 * 1024)
    big = evicted(tree / "pkg" / "_ext.so", 8 * MIB)  # advised up to MAX_FILE_BYTES only
    source = evicted(tree / "pkg" / "mod.py", 64 * 1024)
    outside = evicted(tmp_path / "elsewhere" / "secret.bin", 64 * 1024)
    os.mkfifo(tree / "pkg" / "fifo")
    hostile = [str(outside), f"{tree}/../elsewhere/secret.bin", str(tree / "pkg" / "fifo"), "/dev/zero",
               str(tree / "pkg"), "pkg/mod.cpython-311.pyc", str(tree / "missing.pyc")]
    start = coldstart.ColdStart(tmp_path / "unused.list", "x", [*hostile, str(source), str(wanted), str(big)])
    threads = start.read_ahead()
    assert len(threads) == coldstart.THREADS
    for t in threads:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    assert wait_for(lambda: resident(wanted) == 1.0)
    assert wait_for(lambda: resident(big) >= 0.25)
    time.sleep(0.1)  # anything asked for wrongly would be arriving by now
    assert resident(big) <= 0.5
    assert resident(source) == 0 and resident(outside) == 0


def test_a_warm_start_reads_nothing_ahead_and_one_evicted_sample_is_enough(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the sampled files are all in the page cache, no thread starts (they would only take
    turns at the interpreter lock); when one sampled file is not, every listed file is asked for."""
    tree = tmp_path / "tree"
    monkeypatch.syspath_prepend(str(tree))
    files = [tree / f"m{i}.pyc" for i in range(2 * coldstart.PROBES)]
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(os.urandom(8192))
        f.read_bytes()
    start = coldstart.ColdStart(tmp_path / "unused.list", "x", [str(f) for f in files])
    assert all(resident(f) == 1.0 for f in files)
    assert start.read_ahead() == []
    unsampled = evicted(files[3], 8192)  # every other file is sampled: 0, 2, 4, ...
    assert start.read_ahead() == []  # the sample is still warm
    sampled = evicted(files[2], 8192)
    threads = start.read_ahead()
    assert len(threads) == coldstart.THREADS
    for t in threads:
        t.join(timeout=5)
    assert wait_for(lambda: resident(sampled) == 1.0 and resident(unsampled) == 1.0)


def test_a_list_for_another_interpreter_too_large_a_fifo_or_not_text_is_not_used(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = list_path(tmp_path / "xdg", "prog", "verb")
    entry = str(Path(coldstart.__file__))
    write_list(path, [entry])
    found = coldstart.ColdStart.for_verb("prog", ["verb", "--flag"], "pkg")
    assert found is not None and found.listed == [entry] and found.verb_module == "pkg.verb"
    write_list(path, [entry], header="# edgebundle cold start 1 python 2.7.18 prefix /usr")
    assert coldstart.ColdStart.for_verb("prog", ["verb"], "pkg").listed == []  # type: ignore[union-attr]
    write_list(path, [entry] * (coldstart.MAX_LIST_BYTES // len(entry) + 1))
    assert coldstart.ColdStart.for_verb("prog", ["verb"], "pkg").listed == []  # type: ignore[union-attr]
    path.unlink()
    os.mkfifo(path)  # would block an open() that waits for a writer
    assert coldstart.ColdStart.for_verb("prog", ["verb"], "pkg").listed == []  # type: ignore[union-attr]
    path.unlink()
    path.write_bytes(coldstart._header().encode() + b"\n\xff\xfe not text\n")
    assert coldstart.ColdStart.for_verb("prog", ["verb"], "pkg").listed == []  # type: ignore[union-attr]
    for not_a_verb in ([], ["--help"], ["../../etc/x"], ["Verify"]):
        assert coldstart.ColdStart.for_verb("prog", not_a_verb, "pkg") is None


def test_record_keeps_the_list_and_adds_what_is_new_within_bounds(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Known entries stay first, in their order; new ones follow; a list for another interpreter
    is replaced; nothing is written when the verb's module was never imported."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = list_path(tmp_path / "xdg", "prog", "test-coldstart")
    old = ["/nowhere/b.pyc", "/nowhere/a.pyc"]
    write_list(path, old)
    start = coldstart.ColdStart.for_verb("prog", ["test-coldstart"], "tests")  # verb module: this one
    assert start is not None and start.verb_module == __name__
    start.record()
    lines = path.read_text().splitlines()
    assert lines[0] == coldstart._header() and lines[1:3] == old
    assert __file__ in lines
    assert set(lines[3:]) == set(coldstart.imported_files()) - set(old)

    monkeypatch.setattr(coldstart, "MAX_FILES", 5)
    write_list(path, old, header="# edgebundle cold start 1 python 2.7.18 prefix /usr")
    coldstart.ColdStart.for_verb("prog", ["test-coldstart"], "tests").record()  # type: ignore[union-attr]
    lines = path.read_text().splitlines()
    assert lines[0] == coldstart._header() and len(lines) == 1 + 5 and not set(old) & set(lines)
    before = path.stat()
    coldstart.ColdStart.for_verb("prog", ["test-coldstart"], "tests").record()  # type: ignore[union-attr]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # full: no rewrite

    other = list_path(tmp_path / "xdg", "prog", "never-imported")
    coldstart.ColdStart.for_verb("prog", ["never-imported"], "tests").record()  # type: ignore[union-attr]
    assert not other.exists()


def test_no_place_to_keep_a_list_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    start = coldstart.ColdStart.for_verb("prog", ["test-coldstart"], "tests")
    assert start is not None and start.listed == []
    start.record()  # cannot create the directory: silently nothing
    assert (tmp_path / "file").read_text() == "not a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
