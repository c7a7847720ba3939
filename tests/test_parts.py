"""Split parts: byte-exact joins, a signed part index, and damage named by part file and byte range."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bundler.cli import main as bundle_main
from edgebundle.errors import UsageError
from edgebundle.parts import FAT32_MAX, CorruptPartError, JoinedReader, PartIndexError, PartsSource, detect, parse_part_index, parse_size
from edgebundle.root import canonical_json
from edgebundle.mediatypes import PAYLOAD_PARTS
from edgebundle.signing import TrustStore, load_private_key, load_public_key, sign
from edgebundle.parts import open_source
from edgebundle.sources import TarSource
from installer.cli import main as installer_main
from tests.fixtures.bundles import BuiltBundle

pytestmark = pytest.mark.timeout(120)

PART = 1024 * 1024  # small parts: the ~6 MiB fixture bundle becomes several of them


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def installer(*args: Any) -> Result:
    return CliRunner().invoke(installer_main, [str(a) for a in args])


def split(b: BuiltBundle, out: Path, size: int = PART) -> PartsSource:
    r = bundle("split", b.path, "--size", size, "--key", b.key, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["root"] == b.root_digest
    src = open_source(out)
    assert isinstance(src, PartsSource)
    return src


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_parse_size() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("64K") == parse_size("64KiB") == 64 * 1024
    assert parse_size("1MiB") == parse_size("1m") == 1 << 20
    assert parse_size("500MB") == 500_000_000
    assert parse_size("2G") == 2 << 30
    assert parse_size("fat32") == FAT32_MAX == 4 * 1024**3 - 1
    for bad in ("", "12X", "-1", "1.5G"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_parts_join_to_exactly_the_signed_tar(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    src = split(b, tmp_path / "media")
    idx = src.index
    tar_size = b.path.stat().st_size
    assert len(idx.parts) == -(-tar_size // PART) >= 4
    assert all(p.size == PART for p in idx.parts[:-1]) and 0 < idx.parts[-1].size <= PART
    assert idx.size == tar_size and idx.root == b.root_digest and idx.bundle_file == b.path.name
    # joined in index order, the parts hash to the tar (hashed part by part, never concatenated)
    h = hashlib.sha256()
    for p in idx.parts:
        data = (tmp_path / "media" / p.file).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == p.digest
        h.update(data)
    assert h.hexdigest() == sha256_file(b.path) == idx.digest.split(":")[1]
    # the index is signed by the bundle's key: the same signature check the site does
    pub = TrustStore([load_public_key(b.pub)])
    assert src.check_signature(pub)
    # the members seen through the joined parts are the tar's members, at the same offsets
    assert src.entries() == TarSource.from_path(b.path).entries()


def test_joined_reader_reads_any_window_across_part_boundaries(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    src = split(b, tmp_path / "media", size=4096 * 3 + 512)  # part size not a multiple of a tar block
    rng = random.Random(5)
    with open(b.path, "rb") as tar, JoinedReader(tmp_path / "media", src.index.parts) as joined:
        for _ in range(300):
            off = rng.randrange(0, src.index.size)
            n = rng.choice([1, 511, 512, 4096, 20000, 100_000])
            tar.seek(off)
            joined.seek(off)
            assert joined.read(n) == tar.read(n)
            assert joined.tell() == min(off + n, src.index.size)
        joined.seek(src.index.size)
        assert joined.read(10) == b""


def test_split_is_reproducible_from_tar_directory_and_create(bundle_factory: Any, tmp_path: Path) -> None:
    """`create --split`, `split` of the tar and `split` of a directory bundle give the same parts."""
    b = bundle_factory(manifests="fitting")
    from_tar = split(b, tmp_path / "from-tar").index
    d = tmp_path / "dir-bundle"  # the same spec and lock, built as a directory: the same root
    r = bundle("create", b.spec_path, "--key", b.key, "-o", d)
    assert r.exit_code == 0, r.output
    r = bundle("split", d, "--size", PART, "--key", b.key, "-o", tmp_path / "from-dir")
    assert r.exit_code == 0, r.output
    from_dir = open_source(tmp_path / "from-dir")
    assert isinstance(from_dir, PartsSource)
    assert from_dir.index == from_tar  # same tar name (NAME-VERSION.tar), same bytes, same hashes

    out = tmp_path / "created" / b.path.name
    r = bundle("create", b.spec_path, "--key", b.key, "-o", out, "--split", "1M", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["root"] == b.root_digest and doc["split"]["digest"] == from_tar.digest
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [p.file for p in from_tar.parts] + ["rag-edge-1.0.0.parts.json"]
    ), "create --split leaves only the parts and their signed index (no tar, no work directory)"
    created = open_source(out.parent)
    assert isinstance(created, PartsSource) and created.index == from_tar

    # re-splitting the parts themselves with a bigger size replaces them and drops stale parts
    r = bundle("split", out.parent, "--size", "2M", "--key", b.key, "-o", tmp_path / "resplit")
    assert r.exit_code == 0, r.output
    r = bundle("split", tmp_path / "from-tar", "--size", "2M", "--key", b.key, "-o", tmp_path / "from-tar")
    assert r.exit_code == 2 and "directory they are read from" in r.output
    r = bundle("split", b.path, "--size", "2M", "--key", b.key, "-o", tmp_path / "from-tar", "--force")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "from-tar").glob("*.tar.part*"))
    assert names == sorted(p.file for p in open_source(tmp_path / "from-tar").index.parts)  # type: ignore[attr-defined]
    assert len(names) == -(-from_tar.size // (2 << 20))


def test_split_refuses_a_key_that_did_not_sign_the_bundle(bundle_factory: Any, bundle_world: Any,
                                                          tmp_path: Path) -> None:
    b = bundle_factory()
    other_key, _ = bundle_world.key("not-the-release-key")
    r = bundle("split", b.path, "--size", "1M", "--key", other_key, "-o", tmp_path / "m")
    assert r.exit_code == 2 and "not signed by the given key" in r.output
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    r = bundle("split", b.path, "--size", "100", "--key", b.key, "-o", tmp_path / "m")
    assert r.exit_code == 2 and "below the minimum" in r.output


@pytest.fixture
def media(bundle_factory: Any, tmp_path: Path) -> tuple[BuiltBundle, Path, Path]:
    """(bundle, split media dir, site file trusting the bundle's key)."""
    b = bundle_factory()
    split(b, tmp_path / "media")
    return b, tmp_path / "media", b.site(tmp_path, "127.0.0.1:9")


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x40]))


def test_installer_verify_accepts_the_media_dir_and_the_first_part(media: Any) -> None:
    b, m, site = media
    for arg in (m, m / f"{b.path.name}.part000", m / "rag-edge-1.0.0.parts.json"):
        r = installer("verify", arg, "--site", site, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["root"] == b.root_digest
    r = installer("verify", m / f"{b.path.name}.part001", "--site", site)
    assert r.exit_code == 2 and "not the first part" in r.output


@pytest.mark.parametrize("damage", ["flip-part-2", "truncate-part-3", "missing-part-2", "missing-last",
                                    "longer-part-1", "symlink-part-3"])
def test_damaged_part_is_named_with_its_byte_range(media: Any, damage: str) -> None:
    b, m, site = media
    idx = PartsSource(m / "rag-edge-1.0.0.parts.json").index
    p2, p3, last = idx.parts[1], idx.parts[2], idx.parts[-1]
    if damage == "flip-part-2":
        _flip(m / p2.file, 12345)
        kind = "CorruptPartError"
        bad = hashlib.sha256((m / p2.file).read_bytes()).hexdigest()
        expect = (f"part {p2.file} (bytes {p2.offset}\u2013{p2.last_byte} of the bundle) is corrupt: "
                  f"sha256 {bad} expected {p2.digest.split(':')[1]}")
    elif damage == "truncate-part-3":
        with open(m / p3.file, "r+b") as f:
            f.truncate(1000)
        kind = "ShortPartError"
        expect = (f"part {p3.file} (bytes {p3.offset}\u2013{p3.last_byte} of the bundle) is short: it has "
                  f"1000 of {p3.size} bytes; bytes {p3.offset + 1000}\u2013{p3.last_byte} of the bundle are missing")
    elif damage.startswith("missing"):
        gone = p2 if damage == "missing-part-2" else last
        (m / gone.file).unlink()
        kind = "MissingPartError"
        expect = f"part {gone.file} (bytes {gone.offset}\u2013{gone.last_byte} of the bundle) is missing from {m}"
    elif damage == "symlink-part-3":
        shutil.copyfile(m / p3.file, m / "elsewhere")
        (m / p3.file).unlink()
        (m / p3.file).symlink_to(m / "elsewhere")
        kind = "UnreadablePartError"
        expect = f"part {p3.file} (bytes {p3.offset}\u2013{p3.last_byte} of the bundle) is not a regular file"
    else:
        with open(m / idx.parts[0].file, "ab") as f:
            f.write(b"\0")
        kind = "LongPartError"
        expect = f"part {idx.parts[0].file} (bytes 0\u2013{idx.parts[0].last_byte} of the bundle) is {PART + 1} bytes"
    r = installer("verify", m, "--site", site, "--json")
    assert r.exit_code == 4, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == kind, doc
    assert doc["error"].startswith(expect), doc["error"]
    # the bundle-level verifier also names the part, through `bundle verify`
    r = bundle("verify", m, "--pubkey", b.pub)
    assert r.exit_code == 4 and expect in r.output


def test_corrupt_tar_header_is_blamed_on_its_part_even_without_verify(media: Any) -> None:
    """Reading the member list (inspect) hits the damaged header first: the part is still named."""
    b, m, _ = media
    idx = PartsSource(m / "rag-edge-1.0.0.parts.json").index
    _flip(m / idx.parts[0].file, 3)  # inside the first tar header (oci-layout's name)
    src = open_source(m)
    with pytest.raises(CorruptPartError, match=rf"part {idx.parts[0].file} \(bytes 0\u2013"):
        src.members()
    r = bundle("inspect", m)
    assert r.exit_code == 4 and idx.parts[0].file in r.output


def test_part_index_must_be_signed_by_a_trusted_key(media: Any, bundle_world: Any, tmp_path: Path) -> None:
    b, m, site = media
    index_path = m / "rag-edge-1.0.0.parts.json"
    good_index = index_path.read_bytes()
    envelope = json.loads(good_index)

    # an index edited to match a replaced part: its signature no longer matches
    doc = json.loads(base64.b64decode(envelope["payload"]))
    doc["parts"][1]["digest"] = "sha256:" + "0" * 64
    edited = base64.b64encode(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).decode()
    index_path.write_text(json.dumps({**envelope, "payload": edited}))
    r = installer("verify", m, "--site", site, "--json")
    assert r.exit_code == 4 and json.loads(r.stdout)["kind"] == "PartIndexError"
    assert "part index rag-edge-1.0.0.parts.json: signature by trusted key" in json.loads(r.stdout)["error"]

    # an unsigned index
    index_path.write_text(json.dumps({**envelope, "signatures": []}))
    r = installer("verify", m, "--site", site, "--json")
    assert r.exit_code == 4 and "is not signed" in json.loads(r.stdout)["error"]

    # the pre-DSSE index (bare document beside a detached .parts.sig.json) is refused as such
    index_path.write_bytes(base64.b64decode(envelope["payload"]))
    r = installer("verify", m, "--site", site, "--json")
    assert r.exit_code == 4 and "pre-DSSE format" in json.loads(r.stdout)["error"]

    # signed, but by a key the site does not trust
    index_path.write_bytes(good_index)
    _, other_pub = bundle_world.key("stranger")
    r = installer("verify", m, "--site", b.site(tmp_path / "s2", "127.0.0.1:9", trust=[other_pub]), "--json")
    assert r.exit_code == 4 and json.loads(r.stdout)["kind"] == "PartIndexError"


def test_index_naming_another_root_is_refused(bundle_factory: Any, tmp_path: Path) -> None:
    """Even a validly signed index must name the root the parts carry (no mixing of bundles)."""
    b1, b2 = bundle_factory(), bundle_factory(version="1.1.0")
    m = tmp_path / "m"
    split(b2, m)
    index_path = m / "rag-edge-1.1.0.parts.json"
    doc = json.loads(base64.b64decode(json.loads(index_path.read_bytes())["payload"]))
    doc["bundle"]["root"] = b1.root_digest
    index_path.write_bytes(sign(canonical_json(doc), PAYLOAD_PARTS, [load_private_key(b2.key)]))
    src = open_source(m)
    assert isinstance(src, PartsSource)
    with pytest.raises(PartIndexError, match="different bundles are mixed|names root"):
        src.check_parts(TrustStore([load_public_key(b2.pub)]))


def test_detect(bundle_factory: Any, tmp_path: Path) -> None:
    b = bundle_factory()
    assert detect(b.path) is None  # a plain tar: the caller opens it
    assert detect(bundle_factory(out_format="dir").path) is None  # a bundle directory
    one_tar = tmp_path / "tar-media"
    one_tar.mkdir()
    shutil.copyfile(b.path, one_tar / b.path.name)
    src = detect(one_tar)
    assert isinstance(src, TarSource) and not isinstance(src, PartsSource) and src.total == b.path.stat().st_size
    shutil.copyfile(b.path, one_tar / "other.tar")
    with pytest.raises(UsageError, match="holds 2 bundles"):
        detect(one_tar)
    assert detect(tmp_path / "nothing-here.txt") is None
    with pytest.raises(PartIndexError, match="no part index"):
        lone = tmp_path / "lone"
        lone.mkdir()
        (lone / "x.tar.part000").write_bytes(b"x")
        detect(lone / "x.tar.part000")


def test_part_index_parser_is_strict(media: Any) -> None:
    _, m, _ = media
    good = json.loads(base64.b64decode(json.loads((m / "rag-edge-1.0.0.parts.json").read_bytes())["payload"]))
    parse_part_index(json.dumps(good).encode())

    def broken(change: Any) -> bytes:
        doc = json.loads(json.dumps(good))
        change(doc)
        return json.dumps(doc).encode()

    cases = [
        lambda d: d["parts"][1].update(offset=d["parts"][1]["offset"] + 1),  # a gap
        lambda d: d["parts"][0].update(file="../../etc/passwd"),  # a path
        lambda d: d.update(size=d["size"] + 1),  # sizes do not add up
        lambda d: d["parts"].reverse(),  # out of order
        lambda d: d["bundle"].update(file="a/b.tar"),
        lambda d: d.update(specVersion=2),
        lambda d: d["parts"][0].update(size=True),
    ]
    for change in cases:
        with pytest.raises(PartIndexError):
            parse_part_index(broken(change))
