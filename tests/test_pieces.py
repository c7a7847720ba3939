"""Piece digests: a large model file's 64 MiB pieces, pinned by the lock and the signed root, and
proven piece by piece (in parallel) by the verifier.

Expected digests come from ``hashlib`` over slices of the files the test reads itself, never from
the product's own hashers.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bundler.cli import main as bundle_main
from edgebundle import headstart, layout
from edgebundle import mediatypes as mt
from edgebundle.digest import (
    CHUNK,
    DigestMismatchError,
    PieceHasher,
    check_file_pieces,
    copy_verified,
    piece_bytes,
    piece_count,
)
from edgebundle.parts import open_source
from edgebundle.signing import TrustStore, load_private_key
from edgebundle.verify import Verifier
from tests.fixtures.bundles import BundleWorld, flip_byte, read_root_envelope, run_installer
from tests.fixtures.digests import sha256_file, sha256_of
from tests.fixtures.dsse import dsse_verify, load_pub
from tests.fixtures.models import write_gguf

pytestmark = pytest.mark.timeout(300)

PIECE = 64 * 1024 * 1024  # the format's piece size (docs/FORMAT.md), written out


def expected_pieces(path: Path) -> list[str]:
    out = []
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            out.append(sha256_of(piece))
    return out if len(out) > 1 else []


def test_piece_digests_match_hashlib_however_the_bytes_are_sliced() -> None:
    data = bytes(range(256)) * (PIECE // 256) + b"tail" * 3000
    h = PieceHasher(len(data))
    sizes, at = [1, 4095, 1 << 20, (3 << 20) + 7], 0
    while at < len(data):
        n = sizes[at % len(sizes)]
        h.update(data[at:at + n])
        at += n
    assert h.digests() == [sha256_of(data[:PIECE]), sha256_of(data[PIECE:])]
    assert h.digests() == [sha256_of(data[:PIECE]), sha256_of(data[PIECE:])]  # asking twice changes nothing
    one = PieceHasher(PIECE)
    one.update(memoryview(data)[:PIECE])
    assert one.digests() == []  # a blob of exactly one piece lists none
    short = PieceHasher(len(data) + 1)
    short.update(data)
    assert short.digests() == []  # not the size it was told: no pieces rather than wrong ones
    assert [piece_count(n) for n in (0, 1, PIECE, PIECE + 1, 2 * PIECE, 2 * PIECE + 1)] == [0, 0, 0, 2, 2, 3]
    # at most 16 pieces: past 16 x 64 MiB the piece doubles (a 4 GiB model has 16 of 256 MiB)
    assert [piece_count(n) for n in (16 * PIECE, 16 * PIECE + 1, 64 * PIECE, 64 * PIECE + 1)] == [16, 9, 16, 9]
    assert [piece_bytes(n) for n in (16 * PIECE, 16 * PIECE + 1, 4 << 30)] == [PIECE, 2 * PIECE, 4 * PIECE]


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 74 MiB GGUF of incompressible tensors: carried as it is (identity), so two pieces."""
    return write_gguf(tmp_path_factory.mktemp("big") / "big.gguf", rows=26000, metadata={"general.name": "big-llm"})


@pytest.fixture(scope="module")
def pieced(bundle_factory: Any, big_gguf: Path) -> Any:
    """Two large models (each task must name its own blob), and a small one that has no pieces."""
    other = write_gguf(big_gguf.with_name("other.gguf"), rows=26000, seed=5, metadata={"general.name": "other"})
    return bundle_factory(version="3.0.0", images=(), manifests=False, models=(
        {"name": "big-llm", "kind": "llm", "version": "1.0", "path": str(big_gguf)},
        {"name": "other-llm", "kind": "llm", "version": "1.0", "path": str(other)}, "tiny-llm"))


def test_lock_and_root_pin_the_pieces_of_a_large_model(pieced: Any, big_gguf: Path) -> None:
    gguf = big_gguf
    want = expected_pieces(gguf)
    assert len(want) == 2
    digest, size = sha256_file(gguf)
    lock = json.loads((pieced.spec_path.parent / "bundles.lock").read_text())
    [entry] = [f for m in lock["models"] for f in m["files"] if f["digest"] == digest]
    assert entry["pieces"] == want
    envelope = json.dumps(read_root_envelope(pieced.path)).encode()
    root = dsse_verify(envelope, load_pub(pieced.pub), mt.PAYLOAD_ROOT)  # the signed JSON, read independently
    assert root["blobs"][digest]["pieces"] == want and root["blobs"][digest]["size"] == size
    other = sha256_file(big_gguf.with_name("other.gguf"))[0]
    assert sorted(d for d, b in root["blobs"].items() if "pieces" in b) == sorted([digest, other])  # small: none


def _trust(bundle_world: BundleWorld) -> TrustStore:
    key, _ = bundle_world.key("release")
    return TrustStore([load_private_key(Path(key)).public_key()])


@pytest.mark.parametrize(("at", "piece"), [(100, 1), (PIECE + 1000, 2)], ids=["first", "second"])
def test_a_changed_byte_is_named_by_its_piece(pieced: Any, bundle_world: BundleWorld, big_gguf: Path,
                                              tmp_path: Path, at: int, piece: int) -> None:
    b = pieced.copy(tmp_path / "b")
    digest, _ = sha256_file(big_gguf)
    Verifier(_trust(bundle_world)).verify(open_source(b.path))  # intact: passes
    flip_byte(b.path, layout.blob_path(digest), at=at)
    with pytest.raises(DigestMismatchError, match=rf"^{layout.blob_path(digest)}: bytes [0-9,]+ to [0-9,]+ "
                                                  rf"\(piece {piece} of 2\) hash to sha256:[0-9a-f]{{64}}, "
                                                  r"the signed root pins sha256:"):
        Verifier(_trust(bundle_world)).verify(open_source(b.path))


def test_a_source_that_cannot_seek_proves_the_blob_whole(pieced: Any, bundle_world: BundleWorld,
                                                         big_gguf: Path, tmp_path: Path) -> None:
    """Without random access the blob's own digest is checked (the same bytes the pieces pin)."""
    b = pieced.copy(tmp_path / "b")
    digest, _ = sha256_file(big_gguf)
    source = open_source(b.path)
    source.random_access = False  # type: ignore[misc]
    flip_byte(b.path, layout.blob_path(digest), at=PIECE + 1000)
    with pytest.raises(DigestMismatchError, match=rf"^{layout.blob_path(digest)}: content digest sha256:"):
        Verifier(_trust(bundle_world)).verify(source)


def _spec_with_edited_lock(pieced: Any, tmp_path: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """The pieced bundle's spec in ``tmp_path``, locked, with ``edit`` applied to each lock entry with pieces."""
    spec = tmp_path / "bundle.yaml"
    spec.write_text(pieced.spec_path.read_text())
    assert CliRunner().invoke(bundle_main, ["lock", str(spec)]).exit_code == 0
    lock = json.loads((tmp_path / "bundles.lock").read_text())
    for f in (f for m in lock["models"] for f in m["files"] if "pieces" in f):
        edit(f)
    (tmp_path / "bundles.lock").write_text(json.dumps(lock, indent=2, sort_keys=True))
    return spec


def test_a_lock_whose_piece_digests_are_not_the_files_is_refused(pieced: Any, bundle_world: BundleWorld,
                                                                 tmp_path: Path) -> None:
    """Caught on the build host: a bundle signed with wrong pieces would fail only at the site."""
    spec = _spec_with_edited_lock(pieced, tmp_path, lambda f: f.update(pieces=f["pieces"][::-1]))
    key, _ = bundle_world.key("release")
    r = CliRunner().invoke(bundle_main, ["create", str(spec), "--key", str(key), "-o", str(tmp_path / "out.tar")])
    assert r.exit_code == 1, r.output
    assert "match the lock's digest but not the piece digests bundles.lock lists" in r.stderr
    assert "run bundle lock" in r.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("out.tar")]  # no partial left



def test_progress_counts_every_byte_hashed_pieces_included(pieced: Any, bundle_world: BundleWorld) -> None:
    source = open_source(pieced.path)
    fed: list[int] = []
    Verifier(_trust(bundle_world), progress=fed.append).verify(source)
    assert sum(fed) == sum(size for name, size in source.members().items() if name != layout.ROOT)


def test_a_bad_piece_and_a_later_bad_blob_name_the_piece(pieced: Any, bundle_world: BundleWorld, big_gguf: Path,
                                                         tmp_path: Path) -> None:
    """A bad piece counts as a bad blob at its place in the tar: the first bad member in tar order is named."""
    b = pieced.copy(tmp_path / "b")
    order = open_source(b.path).tar_order()
    name = min((layout.blob_path(sha256_file(p)[0]) for p in (big_gguf, big_gguf.with_name("other.gguf"))),
               key=order.index)  # the large model that comes first in the tar
    later = [n for n in order[order.index(name) + 1:] if n.startswith("blobs/") and n != name
             and open_source(b.path).members()[n] > 4096]
    assert later, "the test needs a blob after the large model in tar order"
    flip_byte(b.path, later[0])
    flip_byte(b.path, name, at=PIECE + 1000)
    for _ in range(3):
        with pytest.raises(DigestMismatchError, match=rf"^{name}: bytes .* \(piece 2 of 2\)"):
            Verifier(_trust(bundle_world)).verify(open_source(b.path))


# -- the head start (edgebundle/headstart.py): digests hashed before the verifier asked ----------

def test_early_digests_are_compared_with_the_pins_not_trusted(pieced: Any, bundle_world: BundleWorld,
                                                              big_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong early digest of intact bytes is refused, naming its piece: it was used, and checked."""
    source = open_source(pieced.path)
    name = layout.blob_path(sha256_file(big_gguf)[0])
    forged = {(name, PIECE, big_gguf.stat().st_size - PIECE): sha256_of(b"not these bytes")}
    monkeypatch.setattr(source, "early_digests", lambda: forged)
    with pytest.raises(DigestMismatchError, match=rf"^{name}: bytes [0-9,]+ to [0-9,]+ \(piece 2 of 2\)"):
        Verifier(_trust(bundle_world)).verify(source)


def test_pieces_hashed_early_are_not_read_again(pieced: Any, bundle_world: BundleWorld, big_gguf: Path,
                                                tmp_path: Path) -> None:
    b = pieced.copy(tmp_path / "b")
    name = layout.blob_path(sha256_file(big_gguf)[0])
    started = headstart.begin(b.path)
    assert started is not None
    started.take(wait=True)
    source = open_source(b.path)
    early = source.early_digests()
    assert early[(name, 0, PIECE)] == expected_pieces(big_gguf)[0]
    opened: list[str] = []
    real_open = source.open

    def counting_open(member: str) -> Any:
        opened.append(member)
        return real_open(member)

    source.open = counting_open  # type: ignore[method-assign]
    fed: list[int] = []
    Verifier(_trust(bundle_world), progress=fed.append).verify(source)
    assert name not in opened  # both pieces came from the head start
    assert sum(fed) == sum(size for n, size in source.members().items() if n != layout.ROOT)  # and are counted


def test_installer_verify_with_a_head_start_names_a_bad_piece_and_leaves_no_process(
        pieced: Any, big_gguf: Path, tmp_path: Path) -> None:
    """The console entry forks the head start; a changed byte is still named, and the child ends
    with the command (intact, refused, and refused before the bundle is opened)."""
    b = pieced.copy(tmp_path / "b")
    site = b.site(tmp_path, "127.0.0.1:9")

    def children_left() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(b.path).encode() in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
            except OSError:
                continue
        return found

    r = run_installer("verify", b.path, "--site", site, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stderr
    name = layout.blob_path(sha256_file(big_gguf)[0])
    flip_byte(b.path, name, at=PIECE + 1000)
    r = run_installer("verify", b.path, "--site", site)
    assert r.returncode == 4 and f"{name}: bytes" in r.stderr and "(piece 2 of 2)" in r.stderr, r.stderr
    r = run_installer("verify", b.path, "--site", tmp_path / "no-such-site.yaml")
    assert r.returncode == 2, r.stderr
    assert children_left() == []


def test_a_lock_from_before_piece_digests_still_builds_and_says_so(pieced: Any, bundle_world: BundleWorld,
                                                                   tmp_path: Path) -> None:
    """An older lock (no piece digests) builds a bundle whose large model is proven whole; the
    builder says how to get the pieces back."""
    spec = _spec_with_edited_lock(pieced, tmp_path, lambda f: f.pop("pieces"))
    key, _ = bundle_world.key("release")
    out = tmp_path / "out.tar"
    r = CliRunner().invoke(bundle_main, ["create", str(spec), "--key", str(key), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("bundles.lock has no piece digests for") == 2 and f"run bundle lock {spec}" in r.stderr
    envelope = json.dumps(read_root_envelope(out)).encode()
    root = dsse_verify(envelope, load_pub(bundle_world.key("release")[1]), mt.PAYLOAD_ROOT)
    assert not [d for d, b in root["blobs"].items() if "pieces" in b]
    Verifier(_trust(bundle_world)).verify(open_source(out))  # proven whole, as before pieces


def test_stage_checks_what_landed_by_its_signed_pieces(pieced: Any, big_gguf: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A large file is proven after it is flushed to the NAS by its signed pieces, on every core:
    a byte the storage changed under the written file is named by its piece, and the version
    never becomes visible; unchanged, the staged file is the GGUF byte for byte."""
    from installer.cli import main as installer_main

    b = pieced.copy(tmp_path / "b")
    site = b.site(tmp_path, "127.0.0.1:9")
    nas = tmp_path / "nas"
    size = big_gguf.stat().st_size
    real_fsync, changed = os.fsync, []

    def storage_that_changes_a_byte(fd: int) -> None:
        real_fsync(fd)
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size == size and not changed:
            os.pwrite(fd, bytes([os.pread(fd, 1, PIECE + 7)[0] ^ 0xFF]), PIECE + 7)
            changed.append(fd)

    monkeypatch.setattr(os, "fsync", storage_that_changes_a_byte)
    r = CliRunner().invoke(installer_main, ["stage", str(b.path), "--site", str(site)])
    assert r.exit_code == 4 and changed, r.output
    assert "as written to" in r.output and f"bytes {PIECE:,} to {size:,} (piece 2 of 2)" in r.output, r.output
    assert not (nas / "llm" / "big-llm" / "1.0").exists()
    assert not [p for p in nas.rglob("*") if p.is_file() and p.stat().st_size == size]  # no temp file left
    monkeypatch.setattr(os, "fsync", real_fsync)
    r = CliRunner().invoke(installer_main, ["stage", str(b.path), "--site", str(site)])
    assert r.exit_code == 0, r.output
    staged = [p for p in (nas / "llm" / "big-llm" / "1.0").iterdir() if p.suffix == ".gguf"]
    assert [sha256_file(p) for p in staged] == [sha256_file(big_gguf)]


def test_check_file_pieces_names_the_piece_and_a_wrong_size(tmp_path: Path) -> None:
    data = bytearray(os.urandom(2 * PIECE + 1000))  # three pieces: 64 MiB, 64 MiB, 1000 bytes
    path = tmp_path / "f"
    path.write_bytes(data)
    pins = [sha256_of(bytes(data[i:i + PIECE])) for i in range(0, len(data), PIECE)]
    with open(path, "rb") as f:
        check_file_pieces(f.fileno(), "f", len(data), pins, workers=2)
        with pytest.raises(DigestMismatchError, match=r"f: 134,218,728 bytes, the signed root pins 134,218,727"):
            check_file_pieces(f.fileno(), "f", len(data) - 1, pins, workers=2)
    data[2 * PIECE + 10] ^= 1
    path.write_bytes(data)
    with open(path, "rb") as f, pytest.raises(DigestMismatchError) as e:
        check_file_pieces(f.fileno(), "f", len(data), pins, workers=2)
    assert f"bytes {2 * PIECE:,} to {len(data):,} (piece 3 of 3)" in e.value.message


def test_a_copy_stops_reading_at_the_first_failed_write() -> None:
    """The writes run on their own thread; a full disk there ends the copy at once, as OSError."""
    read = [0]

    class Source(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            read[0] += len(b)
            b[:] = b"\0" * len(b)
            return len(b)

    class FullDisk(io.RawIOBase):
        written = 0

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            if self.written >= 3 * CHUNK:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(b)
            return len(b)

    with pytest.raises(OSError) as e:
        copy_verified(Source(), FullDisk(), "f", "sha256:" + "0" * 64, 1024 * CHUNK)  # type: ignore[arg-type]
    assert e.value.errno == errno.ENOSPC
    assert read[0] < 64 * CHUNK  # not the whole 1 GiB source
