"""bundle write-media: every file proven from the device, a runbook, and installs from read-only media."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bundler import media as media_mod
from bundler.cli import main as bundle_main
from bundler.runbook import installer_commands
from edgebundle.parts import PartsSource
from edgebundle.registry import Registry
from edgebundle.parts import open_source
from installer.cli import main as installer_main
from tests.fixtures.bundles import INSTALLER, BuiltBundle

pytestmark = pytest.mark.timeout(180)

BUNDLE_BIN = str(Path(sys.executable).parent / "bundle")


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def sha256_hex(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under ``root`` -> (sha256, size, mtime_ns): any write would show."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (sha256_hex(p), st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture
def parts_dir(bundle_factory: Any, tmp_path: Path) -> tuple[BuiltBundle, Path]:
    b = bundle_factory()
    r = bundle("split", b.path, "--size", "1M", "--key", b.key, "-o", tmp_path / "parts")
    assert r.exit_code == 0, r.output
    return b, tmp_path / "parts"


def write_media(src: Path, dest: Path, *extra: Any) -> tuple[Result, dict[str, Any]]:
    dest.mkdir(parents=True, exist_ok=True)
    r = bundle("write-media", src, dest, "--no-wheels", "--json", *extra)
    return r, json.loads(r.stdout)


def test_write_media_proves_each_part_and_writes_a_runbook(parts_dir: Any, tmp_path: Path) -> None:
    b, parts = parts_dir
    usb = tmp_path / "usb"
    r, doc = write_media(parts, usb, "--pubkey", b.pub, "--site-file", "/etc/edgebundle/lab.yaml")
    assert r.exit_code == 0, r.output
    idx = PartsSource(parts / "rag-edge-1.0.0.parts.json").index
    files = {f["name"]: f for f in doc["files"]}
    assert list(files) == [p.file for p in idx.parts] + [
        "rag-edge-1.0.0.parts.json", "README.txt", "SHA256SUMS"]
    for p in idx.parts:
        f = files[p.file]
        assert (f["status"], f["size"], f["digest"]) == ("ok", p.size, p.digest)
        assert f["writeMBps"] > 0 and f["verifyMBps"] > 0
        assert "sha256:" + sha256_hex(usb / p.file) == p.digest
    assert doc["ok"] and doc["verified"]["root"] == b.root_digest and doc["wheelhouse"] is None
    assert not [p for p in usb.rglob("*") if p.name.startswith(".tmp-")], "no temporary files left"

    # SHA256SUMS covers every file (sha256sum -c format) and is right
    sums = (usb / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(files) - 1
    for line in sums:
        digest, name = line.split("  ", 1)
        assert sha256_hex(usb / name) == digest, name

    readme = (usb / "README.txt").read_text()
    for needle in (b.root_digest, "rag-edge", "1.0.0", b.root.compatible, *[p.digest for p in idx.parts],
                   *[f"bytes {p.offset}\u2013{p.last_byte}" for p in idx.parts],
                   *[m.name for m in b.root.models], *[f.digest for m in b.root.models for f in m.files],
                   *[im.digest for im in b.root.images],
                   'SITE=/etc/edgebundle/lab.yaml',
                   'installer verify "$MEDIA" --site "$SITE"',
                   'installer load "$MEDIA" --site "$SITE"',
                   'installer stage "$MEDIA" --site "$SITE"',
                   "not on this media (written with --no-wheels)"):
        assert needle in readme, needle
    assert "edgebundle-venv" not in readme, "without wheels the runbook uses the installed installer"
    # every command the runbook gives parses with the installer this edgebundle ships
    site, plan = tmp_path / "site.yaml", tmp_path / "plan.json"
    site.write_text("{}")
    plan.write_text("{}")
    commands = installer_commands(b.root)
    assert [c.split()[1] for c, _ in commands][:3] == ["verify", "load", "stage"]
    for line, _ in commands:
        assert line in readme or line.replace("./edgebundle-venv/bin/installer", "installer") in readme
        argv = shlex.split(line.replace("$MEDIA", str(usb)).replace("$SITE", str(site))
                           .replace("$USER", "tech").replace("plan.json", str(plan)))
        installer_main.commands[argv[1]].make_context(argv[1], argv[2:])  # raises on a wrong option

    # a rerun keeps what is already proven on the media
    r, doc = write_media(parts, usb)
    assert r.exit_code == 0, r.output
    assert [f["status"] for f in doc["files"][:len(idx.parts)]] == ["kept"] * len(idx.parts)


def test_write_media_of_a_tar_and_of_a_directory(bundle_factory: Any, tmp_path: Path) -> None:
    """A whole tar is copied as is; a directory bundle is written as the very same tar."""
    b = bundle_factory(manifests="fitting")
    r, doc = write_media(b.path, tmp_path / "usb1")
    assert r.exit_code == 0, r.output
    assert doc["files"][0]["name"] == b.path.name
    assert sha256_hex(tmp_path / "usb1" / b.path.name) == sha256_hex(b.path)

    d = tmp_path / "dir-bundle"
    assert bundle("create", b.spec_path, "--key", b.key, "-o", d).exit_code == 0  # same lock: same root
    r, doc = write_media(d, tmp_path / "usb2")
    assert r.exit_code == 0, r.output
    assert doc["files"][0]["name"] == "rag-edge-1.0.0.tar"
    assert doc["files"][0]["digest"] == "sha256:" + sha256_hex(b.path)
    r = bundle("verify", tmp_path / "usb2", "--pubkey", b.pub)
    assert r.exit_code == 0, r.output


def test_bytes_the_device_returns_wrong_are_caught(parts_dir: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection at the cache drop: the device then holds other bytes than were written."""
    b, parts = parts_dir
    usb = tmp_path / "usb"
    victim = "rag-edge-1.0.0.tar.part001"
    real_drop = media_mod._drop_cache
    dropped: list[str] = []

    def drop_and_corrupt(fd: int) -> None:
        real_drop(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        dropped.append(Path(path).name)
        if Path(path).name == f".tmp-{victim}" and dropped.count(f".tmp-{victim}") == 1:
            with open(path, "r+b") as f:  # what a failing stick does behind the page cache
                f.seek(777)
                byte = f.read(1)
                f.seek(777)
                f.write(bytes([byte[0] ^ 0xFF]))
            real_drop(fd)

    monkeypatch.setattr(media_mod, "_drop_cache", drop_and_corrupt)
    r, doc = write_media(parts, usb)
    assert r.exit_code == 4, r.output
    status = {f["name"]: f for f in doc["files"]}
    assert status[victim]["status"] == "FAILED" and "the media is faulty" in status[victim]["error"]
    assert all(f["status"] == "ok" for n, f in status.items() if n != victim)
    assert not (usb / victim).exists() and not (usb / f".tmp-{victim}").exists(), \
        "a file that did not read back right never gets its final name"
    # the page cache was dropped for every file before it was read back
    assert {n.removeprefix(".tmp-") for n in dropped} == set(status)

    monkeypatch.setattr(media_mod, "_drop_cache", real_drop)
    r, doc = write_media(parts, usb)  # a rerun rewrites only the failed file
    assert r.exit_code == 0, r.output
    status = {f["name"]: f["status"] for f in doc["files"]}
    assert status[victim] == "ok" and status["rag-edge-1.0.0.tar.part000"] == "kept"


def test_a_corrupt_source_part_is_not_copied(parts_dir: Any, tmp_path: Path) -> None:
    b, parts = parts_dir
    with open(parts / "rag-edge-1.0.0.tar.part002", "r+b") as f:
        f.seek(10)
        f.write(b"X")
    r, doc = write_media(parts, tmp_path / "usb")
    assert r.exit_code == 4
    bad = [f for f in doc["files"] if f["status"] == "FAILED"]
    assert [f["name"] for f in bad] == ["rag-edge-1.0.0.tar.part002"]
    assert "the bundle being copied is damaged" in bad[0]["error"]
    r = bundle("write-media", parts, tmp_path / "usb", "--no-wheels")  # the text report says FAILED too
    assert r.exit_code == 4 and "FAILED" in r.output and "part002" in r.output


def test_another_bundle_on_the_media_needs_replace(bundle_factory: Any, parts_dir: Any, tmp_path: Path) -> None:
    b, parts = parts_dir
    usb = tmp_path / "usb"
    old = bundle_factory(version="0.9.0")
    r, _ = write_media(old.path, usb)
    assert r.exit_code == 0, r.output
    r = bundle("write-media", parts, usb, "--no-wheels")
    assert r.exit_code == 2 and "rag-edge-0.9.0.tar" in r.output and "--replace" in r.output
    r, doc = write_media(parts, usb, "--replace")
    assert r.exit_code == 0, r.output
    assert not (usb / "rag-edge-0.9.0.tar").exists()
    assert isinstance(open_source(usb), PartsSource)


def _ro_bind_works(tmp_path: Path) -> str | None:
    """None when a read-only bind mount can be made here (unshare -m), else why not."""
    if not shutil.which("unshare"):
        return "unshare is not installed"
    src, ro = tmp_path / "probe-src", tmp_path / "probe-ro"
    src.mkdir()
    ro.mkdir()
    proc = subprocess.run(["unshare", "-m", "sh", "-c",
                           'mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" && ! touch "$2/x" 2>/dev/null',
                           "sh", str(src), str(ro)], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"no read-only bind mount here: {proc.stderr.strip()[:200]}"


def in_read_only_view(media: Path, view: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run commands with ``media`` visible read-only at ``view`` (a private mount namespace)."""
    script = ('mount --bind "$1" "$2" && mount -o remount,ro,bind "$2" || exit 97; '
              'if touch "$2/.probe" 2>/dev/null; then exit 98; fi; shift 2; exec "$@"')

    def run(*args: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(media), str(view),
                               *map(str, args)], capture_output=True, text=True, timeout=120)
    return run


def test_install_from_read_only_media(parts_dir: Any, registry: Any, tmp_path: Path) -> None:
    b, parts = parts_dir
    usb = tmp_path / "usb"
    r, _ = write_media(parts, usb)
    assert r.exit_code == 0, r.output
    site = b.site(tmp_path / "site", registry.host)
    before = snapshot(usb)
    why_not = _ro_bind_works(tmp_path)
    if why_not is None:
        view = tmp_path / "ro-view"
        view.mkdir()
        run = in_read_only_view(usb, view)
        mode = "read-only bind mount"
    else:  # root ignores permission bits, so the snapshot below is what proves nothing was written
        for p in [usb, *usb.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        view = usb

        def run(*args: Any) -> subprocess.CompletedProcess[str]:
            return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=120)
        mode = f"chmod a-w ({why_not})"
    try:
        for verb in ("verify", "load", "stage"):
            proc = run(INSTALLER, verb, view, "--site", site, "--json")
            assert proc.returncode == 0, f"{verb} from {mode}: {proc.stdout}{proc.stderr}"
        proc = run(INSTALLER, "verify", view / "rag-edge-1.0.0.tar.part000", "--site", site, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr  # the first part works as well
        proc = run(BUNDLE_BIN, "verify", view, "--pubkey", b.pub)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        for p in [usb, *usb.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert snapshot(usb) == before, f"the media changed ({mode})"
    with Registry(registry.host) as reg:
        for im in b.root.images:
            assert reg.has_manifest(im.repository, im.tag) == im.digest
    for m in b.root.models:
        kind_dir = {"llm": "llm", "embedding": "embeddings", "index": "indices"}[m.kind]
        for f in m.files:
            staged = tmp_path / "site" / "nas" / kind_dir / m.name / m.version / f.path
            assert "sha256:" + sha256_hex(staged) == f.digest


def test_media_too_small_is_refused_before_writing(parts_dir: Any, tmp_path: Path) -> None:
    """A 1 MiB tmpfs in a private mount namespace stands in for a stick that is too small."""
    b, parts = parts_dir
    small = tmp_path / "small"
    small.mkdir()
    script = ('mount -t tmpfs -o size=1m tmpfs "$1" || exit 97; shift; "$@"; rc=$?; '
              'ls -A "$0" > "$0.listing" 2>/dev/null; exit $rc')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, str(small), str(small),
                           BUNDLE_BIN, "write-media", parts, small, "--no-wheels"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 97:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "free, the media needs" in proc.stderr
    assert Path(f"{small}.listing").read_text() == "", "nothing was written to the small media"
