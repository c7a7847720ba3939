"""Split parts and delta installs: the behaviour ``make mutation`` found no test guarding.

Each test here asserts something an operator relies on and that a mutant of ``edgebundle/parts.py``
or ``installer/delta_source.py`` got past (docs/mutation-notes/parts.md and delta.md list the
mutants that remain, and why they are equivalent):

- a hostile part index is refused naming the field that is wrong (``parts[1].offset``,
  ``bundle.file``, ...), at the exact bounds the format allows, and a damaged part is named with
  the byte range of the bundle it holds;
- the parts are hashed once per source, and a cheap (content-free) check does not hash them;
- a delta whose base is not installed is refused with a message listing what the site has
  installed; one whose base inputs are gone lists them (the first eight, then a count);
- a delta install counts as its full target for the next delta, byte for byte the root a full
  build of the same spec gives;
- every location a signed delta names is checked (also two locations of one digest), in the
  site registry as the site file says (blob or manifest, plain HTTP or TLS), and a delta built
  with another libzstd is rebuilt and refused at ``verify`` when its patch gives other bytes.

Expected values are written out or computed here (``hashlib``, ``tarfile``, file sizes), never
with the product's own helpers. The small bundles come from tests/test_trust_core.py (built once
per process); the registry cases use the real docker-registry (tests/test_delta_scenarios.py's
releases, tests/fixtures/registry.py).
"""

from __future__ import annotations

import json
import random
import shutil
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from edgebundle.errors import VerificationError
from edgebundle.parts import CorruptPartError, PartIndexError, PartsSource, parse_part_index
from edgebundle.root import BaseRef
from edgebundle.signing import TrustStore
from installer.core import open_verified
from installer.delta_source import BaseMissingError, find_base_record, site_registry
from installer.site import load_site
from installer.state import StateDir
from tests.fixtures import dsse
from tests.fixtures.bundles import bundle_world  # noqa: F401  (a fixture, used by name)
from tests.fixtures.digests import sha256_file, sha256_of
from tests.test_delta_scenarios import base_release, make_site, releases, s2_delta  # noqa: F401  (fixtures)
from tests.test_trust_core import (  # noqa: F401  (the fixtures are used by name)
    _BUILT,
    EXIT_VERIFY,
    ROOT,
    Bundles,
    DeltaCase,
    World,
    _tok_spec,
    _tokenizers,
    bundle,
    bundles,
    canonical,
    delta_case,
    envelope_payload,
    installer,
    resign,
    split,
    tree,
)

pytestmark = pytest.mark.timeout(120)

D = "sha256:" + "ab" * 32  # a well-formed digest for documents that are never hashed


# --- the part index: each refusal names its field -------------------------------------------------

def index_doc(sizes: tuple[int, ...] = (4096, 4096, 1808), part_size: int = 4096,
              bundle_file: str = "rag-edge-1.2.0.tar") -> dict[str, Any]:
    """A part index written out by hand (not with the product's PartIndex)."""
    parts, offset = [], 0
    for i, size in enumerate(sizes):
        parts.append({"file": f"{bundle_file}.part{i:03d}", "offset": offset, "size": size,
                      "digest": f"sha256:{i:064x}"})
        offset += size
    return {"_type": "edgebundle.parts", "specVersion": 1,
            "bundle": {"name": "rag-edge", "version": "1.2.0", "root": "sha256:" + "11" * 32,
                       "file": bundle_file},
            "size": offset, "digest": "sha256:" + "22" * 32, "partSize": part_size, "parts": parts}


def parse(doc: dict[str, Any] | bytes) -> Any:
    return parse_part_index(doc if isinstance(doc, bytes) else canonical(doc))


def refusal(doc: dict[str, Any] | bytes) -> str:
    with pytest.raises(VerificationError) as e:
        parse(doc)
    return e.value.message


def _del(doc: dict[str, Any], *path: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    del doc[path[-1]]


def _set(doc: dict[str, Any], value: Any, *path: Any) -> None:
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


FIELD_REFUSALS: list[tuple[str, Any, tuple[Any, ...], str]] = [
    # (case, value or "DEL", path, what the message must name)
    ("bundle-missing", "DEL", ("bundle",), "index lacks 'bundle'"),
    ("bundle-a-list", [], ("bundle",), "index.bundle has the wrong type or range"),
    ("bundle-file-missing", "DEL", ("bundle", "file"), "bundle lacks 'file'"),
    ("bundle-file-a-number", 5, ("bundle", "file"), "bundle.file has the wrong type or range"),
    ("bundle-root-a-number", 5, ("bundle", "root"), "bundle.root has the wrong type or range"),
    ("bundle-name-a-number", 5, ("bundle", "name"), "bundle.name has the wrong type or range"),
    ("bundle-version-missing", "DEL", ("bundle", "version"), "bundle lacks 'version'"),
    ("bundle-version-a-number", 1.2, ("bundle", "version"), "bundle.version has the wrong type or range"),
    ("digest-a-number", 5, ("digest",), "index.digest has the wrong type or range"),
    ("size-a-string", "9999", ("size",), "index.size has the wrong type or range"),
    ("partSize-a-string", "4096", ("partSize",), "index.partSize has the wrong type or range"),
    ("partSize-negative", -4096, ("partSize",), "index.partSize has the wrong type or range"),
    ("parts-an-object", {}, ("parts",), "index.parts has the wrong type or range"),
    ("part-file-a-number", 5, ("parts", 1, "file"), "parts[1].file has the wrong type or range"),
    ("part-offset-a-string", "4096", ("parts", 1, "offset"), "parts[1].offset has the wrong type or range"),
    ("part-offset-missing", "DEL", ("parts", 1, "offset"), "parts[1] lacks 'offset'"),
    ("part-size-a-string", "4096", ("parts", 1, "size"), "parts[1].size has the wrong type or range"),
    ("part-digest-a-number", 5, ("parts", 1, "digest"), "parts[1].digest has the wrong type or range"),
    # JSON false is 0 in Python, and parts[0] starts at 0: only the type check refuses it
    ("part-offset-false", False, ("parts", 0, "offset"), "parts[0].offset has the wrong type or range"),
    ("part-offset-negative", -1, ("parts", 0, "offset"), "parts[0].offset has the wrong type or range"),
]


@pytest.mark.parametrize(("value", "path", "named"), [c[1:] for c in FIELD_REFUSALS],
                         ids=[c[0] for c in FIELD_REFUSALS])
def test_a_hostile_part_index_names_the_field(value: Any, path: tuple[Any, ...], named: str) -> None:
    doc = index_doc()
    if value == "DEL":
        _del(doc, *path)
    else:
        _set(doc, value, *path)
    assert refusal(doc) == f"part index: {named}"


def test_a_part_index_accepts_exactly_the_bounds_of_the_format() -> None:
    """2^50 bytes, 1000 parts, 1-byte parts and a 201-character mixed-case tar stem are all valid."""
    big = 1 << 50
    idx = parse(index_doc((big,), part_size=big))
    assert (idx.size, idx.part_size, idx.parts[0].size) == (big, big, big)
    assert refusal(index_doc((big + 1,), part_size=big + 1)) == "part index: index.size has the wrong type or range"

    assert len(parse(index_doc((1,) * 1000, part_size=1)).parts) == 1000
    assert refusal(index_doc((1,) * 1001, part_size=1)) == "part index lists 1001 parts (1 to 1000 allowed)"
    assert parse(index_doc((1,), part_size=4096)).size == 1

    for name in ("RAG-Edge-1.2.0+b7.tar", "A" + "b" * 200 + ".tar"):
        idx = parse(index_doc(bundle_file=name))
        assert idx.bundle_file == name and idx.parts[2].file == name + ".part002"
    assert "is not a safe .tar name" in refusal(index_doc(bundle_file="A" + "b" * 201 + ".tar"))


def test_an_empty_part_is_refused_even_when_the_offsets_agree() -> None:
    """part001 of 0 bytes with part002 starting where it would end: still refused, naming parts[1]."""
    doc = index_doc((4096, 0, 1808))
    assert [p["offset"] for p in doc["parts"]] == [0, 4096, 4096]
    assert refusal(doc) == "part index: parts[1] (rag-edge-1.2.0.tar.part001) has a bad offset, size or digest"


def test_a_part_index_keeps_the_signed_tar_digest() -> None:
    """The whole tar's digest is carried as written (the verifier compares the joined parts with it)."""
    doc = index_doc()
    assert parse(doc).digest == "sha256:" + "22" * 32


def test_an_oversized_or_broken_part_index_is_refused_as_the_part_index() -> None:
    doc = canonical(index_doc())
    padded = doc + b" " * (1024 * 1024 + 1 - len(doc))  # valid JSON, one byte over 1 MiB
    assert refusal(padded) == "part index is 1048577 bytes, over the 1048576-byte limit"
    assert refusal(doc[:-1]).startswith("part index is not valid JSON")
    with pytest.raises(PartIndexError):  # its own error class, not the root's
        parse(doc[:-1])


# --- a split bundle on media ---------------------------------------------------------------------

def _trust(bundles: Bundles) -> Any:
    pub = serialization.load_pem_public_key(bundles.world.keys["release"].pub.read_bytes())
    return TrustStore([pub])  # type: ignore[list-item]


def _part_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if ".tar.part" in p.name)


@pytest.fixture
def parts(bundles: Bundles, tmp_path: Path) -> Path:
    return split(bundles, bundles.v100, tmp_path / "parts", "release")


def _source(parts: Path) -> Any:
    [index] = parts.glob("*.parts.json")
    return PartsSource(index)


def _corrupt_middle(parts: Path) -> tuple[Path, int, int]:
    """Flip one byte in the second part: (that part, its first and last byte in the bundle)."""
    files = _part_files(parts)
    assert len(files) >= 2, files
    victim = files[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0x20
    victim.write_bytes(bytes(data))
    first = files[0].stat().st_size
    return victim, first, first + victim.stat().st_size - 1


class Counter:
    """A progress sink like edgebundle.progress.Progress: a total and a running count."""

    def __init__(self, total: int | None) -> None:
        self.total, self.seen = total, 0

    def __call__(self, n: int) -> None:
        self.seen += n


def test_check_parts_hashes_by_default_and_names_the_byte_range(bundles: Bundles, parts: Path) -> None:
    victim, first, last = _corrupt_middle(parts)
    for check in ("check_parts", "precheck"):
        with pytest.raises(CorruptPartError) as e:
            getattr(_source(parts), check)(_trust(bundles))
        assert (e.value.part, e.value.first_byte, e.value.last_byte) == (victim.name, first, last)
        assert f"part {victim.name} (bytes {first}\u2013{last} of the bundle) is corrupt" in e.value.message


def test_the_cheap_precheck_reads_no_part_and_the_full_one_hashes_each_once(bundles: Bundles, parts: Path) -> None:
    total = sum(p.stat().st_size for p in _part_files(parts))
    src = _source(parts)
    cheap = Counter(1000)
    src.precheck(_trust(bundles), cheap, content=False)
    assert (cheap.seen, cheap.total) == (0, 1000), "content=False: signature, presence and sizes only"

    full = Counter(1000)
    src.precheck(_trust(bundles), full)
    assert (full.seen, full.total) == (total, 1000 + total), "the bar grows by the parts it hashes"
    src.precheck(_trust(bundles), full)
    assert (full.seen, full.total) == (total, 1000 + total), "a second precheck of the same source is free"

    unsized = Counter(None)
    _source(parts).precheck(_trust(bundles), unsized)
    assert (unsized.seen, unsized.total) == (total, None)


def test_a_cheap_check_first_does_not_excuse_the_hashing_pass(bundles: Bundles, parts: Path) -> None:
    victim, _, _ = _corrupt_middle(parts)
    src = _source(parts)
    src.precheck(_trust(bundles), content=False)  # same sizes: passes
    with pytest.raises(CorruptPartError) as e:
        src.precheck(_trust(bundles))
    assert e.value.part == victim.name


def test_a_part_index_that_is_not_a_small_regular_file_is_refused(bundles: Bundles, parts: Path) -> None:
    [index] = parts.glob("*.parts.json")
    data = index.read_bytes()
    index.unlink()
    index.mkdir()
    with pytest.raises(PartIndexError) as e:
        PartsSource(index)
    assert e.value.message.startswith(f"part index {index} is a directory"), e.value.message
    index.rmdir()
    index.write_bytes(data + b" " * (8 * 1024 * 1024))
    with pytest.raises(PartIndexError) as e:
        PartsSource(index)
    assert e.value.message.startswith(f"part index {index} is over the "), e.value.message


def test_the_source_says_how_many_parts_it_reads(parts: Path) -> None:
    n = len(_part_files(parts))
    assert _source(parts).description == f"tiny-1.0.0.tar in {n} part(s) in {parts}"


def test_a_part_index_that_is_not_an_envelope_is_named(parts: Path) -> None:
    [index] = parts.glob("*.parts.json")
    index.write_text('{"parts": []}')
    with pytest.raises(PartIndexError) as e:
        PartsSource(index)
    assert e.value.message == f"part index {index.name} is not a DSSE envelope (payload, payloadType, signatures)"


def test_a_damaged_root_inside_the_parts_is_named_by_the_cheap_check(bundles: Bundles, parts: Path) -> None:
    """Same size, so presence and sizes pass; the root envelope read from the joined parts is named."""
    first = _part_files(parts)[0]
    data = first.read_bytes()
    assert data.count(b'"payloadType"') == 1
    first.write_bytes(data.replace(b'"payloadType"', b'"payloadTypX"'))
    with pytest.raises(VerificationError) as e:
        _source(parts).precheck(_trust(bundles), content=False)
    assert e.value.message == ("edgebundle/root.dsse.json is not a DSSE envelope "
                               "(payload, payloadType, signatures)"), e.value.message


def test_write_media_copies_the_signed_index_byte_for_byte(parts: Path, tmp_path: Path) -> None:
    [index] = parts.glob("*.parts.json")
    usb = tmp_path / "usb"
    usb.mkdir()
    r = bundle("write-media", parts, usb, "--no-wheels")
    assert r.exit_code == 0, r.output
    assert (usb / index.name).read_bytes() == index.read_bytes()
    for p in _part_files(parts):
        assert sha256_file(usb / p.name) == sha256_file(p)

# --- deltas: what the site has, and what a delta install leaves behind ----------------------------

def root_payload(bundle_path: Path) -> bytes:
    """The signed root document of a bundle directory or tar, read with json/tarfile/base64 here."""
    if bundle_path.is_dir():
        envelope = (bundle_path / ROOT).read_bytes()
    else:
        with tarfile.open(bundle_path) as t:
            member = t.extractfile(ROOT)
            assert member is not None
            envelope = member.read()
    return dsse.document(json.loads(envelope))


def root_digest(bundle_path: Path) -> str:
    return sha256_of(root_payload(bundle_path))


def install(bundle_path: Path, site: Path) -> None:
    """``load`` then ``stage``: the site records the bundle as installed."""
    for verb in ("load", "stage"):
        r = installer(verb, bundle_path, "--site", site)
        assert r.exit_code == 0, r.output


def error_line(stderr: str) -> str:
    """The error message of a refusal (the line before the hint)."""
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    return line


def named_bundle(w: World, name: str, version: str) -> Path:
    """A small bundle named ``name`` (World.spec names every bundle ``tiny``)."""
    spec = w.spec(f"{name}-{version}", version)
    doc = json.loads(spec.read_text())
    doc["metadata"]["name"] = name
    spec.write_text(json.dumps(doc))
    r = bundle("lock", spec)
    assert r.exit_code == 0, r.output
    return w.build(spec, f"{name}-{version}", "release")


def test_a_delta_whose_base_is_not_installed_lists_what_the_site_has(
        bundles: Bundles, delta_case: DeltaCase, tmp_path: Path) -> None:
    """Bundles of other names installed: the refusal lists the three most recent, with their roots."""
    w = bundles.world
    site = w.site(tmp_path / "s")
    r = installer("verify", delta_case.delta, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    base = root_digest(delta_case.base)
    assert error_line(r.stderr).endswith(f"applies to base tiny 1.1.0 (root {base}), which this site has not "
                                         "installed (installed: nothing)"), r.stderr
    if "named" not in _BUILT:
        _BUILT["named"] = [named_bundle(w, n, "1.0.0") for n in ("alpha", "beta", "gamma", "omega")]
    for b in _BUILT["named"]:
        install(b, site)
    r = installer("verify", delta_case.delta, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    have = ", ".join(f"{n} 1.0.0 (root {root_digest(b)})" for n, b in zip(("beta", "gamma", "omega"),
                                                                          _BUILT["named"][1:]))
    assert error_line(r.stderr).endswith(f"(installed: {have})"), r.stderr


NOTES = "a compressible file, stored tar+zstd, unchanged between the releases\n" * 400


def _many_files(w: World) -> dict[str, Path]:
    """Model ``files``: ten .bin files of distinct sizes and a text file (stored ``tar+zstd``, so the
    site re-encodes it from the NAS copy); the target adds g.bin, an edit of f05.bin."""
    if "many" not in _BUILT:
        rnd = random.Random(21)
        base, target = w.base / "many" / "base", w.base / "many" / "target"
        base.mkdir(parents=True)
        for i in range(10):
            (base / f"f{i:02d}.bin").write_bytes(rnd.randbytes(3000 + 211 * i))
        (base / "notes.txt").write_text(NOTES)
        shutil.copytree(base, target)
        g = bytearray((base / "f05.bin").read_bytes())
        g[100:108] = b"g-edited"
        (target / "g.bin").write_bytes(bytes(g))
        specs = {label: w.spec(f"many-{label}", version, models=[
            {"name": "files", "kind": "index", "version": mv, "path": str(d)}])
            for label, version, mv, d in (("base", "2.0.0", "1.0", base), ("target", "2.1.0", "1.1", target))}
        full = w.build(specs["base"], "many-base.tar", "release")
        _BUILT["many"] = {"base": full, "delta": w.build(specs["target"], "many-delta", "release",
                                                         extra=("--base", full)), "files": base}
    return _BUILT["many"]  # type: ignore[no-any-return]


def test_a_delta_lists_the_base_inputs_the_site_lacks(bundles: Bundles, tmp_path: Path) -> None:
    """Up to eight inputs are named, then a count; a changed file is named with both digests."""
    w = bundles.world
    many = _many_files(w)
    site = w.site(tmp_path / "s")
    install(many["base"], site)
    staged = tmp_path / "s" / "nas" / "indices" / "files" / "1.0"
    originals = {p.name: p.read_bytes() for p in sorted(staged.glob("f*.bin"))}
    assert len(originals) == 10

    def refusal() -> str:
        before = tree(tmp_path / "s" / "nas")
        r = installer("stage", many["delta"], "--site", site)
        assert r.exit_code == EXIT_VERIFY, r.output
        assert tree(tmp_path / "s" / "nas") == before
        return error_line(r.stderr)

    victim = staged / "f03.bin"
    changed = bytearray(originals["f03.bin"])
    changed[7] ^= 1
    victim.write_bytes(bytes(changed))
    msg = refusal()
    assert msg.endswith(f"lacks 1 of its inputs: model file {victim} (content changed: "
                        f"{sha256_of(bytes(changed))}, expected {sha256_of(originals['f03.bin'])})"), msg
    assert "rebuilds from base tiny 2.0.0" in msg

    for name in sorted(originals)[:8]:
        (staged / name).unlink(missing_ok=True)
    msg = refusal()
    gone = [f"model file {staged / n} (missing)" for n in sorted(originals)[:8]]
    assert "lacks 8 of its inputs: " in msg and msg.endswith("(missing)"), msg
    assert sorted(msg.split("inputs: ", 1)[1].split("; ")) == gone

    for name in sorted(originals):
        (staged / name).unlink(missing_ok=True)
    msg = refusal()
    assert "lacks 10 of its inputs: " in msg and msg.endswith("(missing) and 2 more"), msg
    assert msg.count("(missing)") == 8

    for name, data in originals.items():
        (staged / name).write_bytes(data)
    r = installer("stage", many["delta"], "--site", site)
    assert r.exit_code == 0, r.output
    new = tmp_path / "s" / "nas" / "indices" / "files" / "1.1"
    f05 = originals["f05.bin"]
    assert sha256_file(new / "g.bin")[0] == sha256_of(f05[:100] + b"g-edited" + f05[108:])
    assert (new / "notes.txt").read_text() == NOTES


def _chain(w: World, delta_case: DeltaCase) -> dict[str, Path]:
    """tiny 1.2.0 built full (the same spec as delta_case's delta), and 1.3.0 as a delta against it."""
    if "chain" not in _BUILT:
        same = w.base / "specs" / "tok-good-1.2.0" / "bundle.yaml"  # delta_case's target spec
        full = w.build(same if same.exists() else _tok_spec(w, "good", "1.2.0"), "tok-full-1.2.0.tar", "release")
        spec = w.spec("tok-next-1.3.0", "1.3.0", models=[
            {"name": "tok", "kind": "embedding", "version": "1.3", "path": str(_tokenizers(w)["evil"])}])
        _BUILT["chain"] = {"full": full,
                           "next": w.build(spec, "tok-next-delta", "release", extra=("--base", full))}
    return _BUILT["chain"]  # type: ignore[no-any-return]


def test_a_delta_install_counts_as_its_full_target_for_the_next_delta(
        bundles: Bundles, delta_case: DeltaCase, tmp_path: Path) -> None:
    """Base, then the 1.2.0 delta: the site records 1.2.0's full root, so a delta built against the
    full 1.2.0 bundle installs; the delta's own signed root is kept beside the full one."""
    w = bundles.world
    chain = _chain(w, delta_case)
    site = w.site(tmp_path / "s")
    state = tmp_path / "s" / "state"
    install(delta_case.base, site)
    r = installer("stage", chain["next"], "--site", site)  # 1.3.0's base (1.2.0) is not there yet
    assert r.exit_code == EXIT_VERIFY, r.output
    install(delta_case.delta, site)

    full = root_digest(chain["full"])
    assert root_digest(chain["full"]) != root_digest(delta_case.delta)
    entries = json.loads((state / "installed.json").read_text())["bundles"]
    assert [(e["version"], e["root"]) for e in entries] == [("1.1.0", root_digest(delta_case.base)),
                                                            ("1.2.0", full)]
    kept = state / "bundles" / full.split(":")[1]
    assert sha256_file(kept / "root.json")[0] == full
    assert (kept / "delta-root.json").read_bytes() == root_payload(delta_case.delta)

    install(chain["next"], site)
    staged = tmp_path / "s" / "nas" / "embeddings" / "tok" / "1.3" / "tokenizer.json"
    assert sha256_file(staged) == sha256_file(_tokenizers(w)["evil"] / "tokenizer.json")
    assert json.loads((state / "installed.json").read_text())["bundles"][-1]["version"] == "1.3.0"


def test_a_record_naming_a_delta_root_counts_as_its_full_target(
        bundles: Bundles, delta_case: DeltaCase, tmp_path: Path) -> None:
    """An installed.json entry that names the delta's own root (whose signed root the state keeps)
    is the delta's full target; a stored root that no longer parses is skipped, not a crash."""
    w = bundles.world
    chain = _chain(w, delta_case)
    site = w.site(tmp_path / "s")
    state = tmp_path / "s" / "state"
    install(delta_case.base, site)
    install(delta_case.delta, site)
    delta_root, full = root_digest(delta_case.delta), root_digest(chain["full"])
    assert (state / "bundles" / delta_root.split(":")[1] / "root.json").read_bytes() == root_payload(delta_case.delta)
    doc = json.loads((state / "installed.json").read_text())
    doc["bundles"][-1]["root"] = delta_root
    (state / "installed.json").write_text(json.dumps(doc))

    want = BaseRef("tiny", "1.2.0", full)
    found = find_base_record(StateDir(state), want)
    assert found is not None and found["root"] == delta_root
    (state / "bundles" / delta_root.split(":")[1] / "root.json").write_text("{not a root")
    assert find_base_record(StateDir(state), want) is None
    base = BaseRef("tiny", "1.1.0", root_digest(delta_case.base))
    found = find_base_record(StateDir(state), base)  # found past the damaged newer record
    assert found is not None and found["version"] == "1.1.0"


def _relabel_zstd(src: Path, dst: Path, key: Path) -> None:
    """``src`` with its patched layer's zstd label set to a version no libzstd has, re-signed."""
    shutil.copytree(src, dst)
    root = json.loads(root_payload(dst))
    [entry] = [e for e in root["delta"]["rebuild"].values() if e.get("patch")]
    assert entry["zstd"], entry
    entry["zstd"] = "0.0.1"
    resign(dst, root, key)


def test_a_delta_built_with_another_libzstd_is_rebuilt_before_anything_is_staged(
        bundles: Bundles, delta_case: DeltaCase, tmp_path: Path) -> None:
    """The site cannot trust its zstd to re-encode the layer as the builder's did, so ``installer
    verify`` rebuilds that layer and checks it: the doctored patch is refused before any stage."""
    w = bundles.world
    site = w.site(tmp_path / "s")
    install(delta_case.base, site)
    good, evil = tmp_path / "good", tmp_path / "evil"
    _relabel_zstd(delta_case.delta, good, w.keys["release"].key)
    _relabel_zstd(delta_case.doctored, evil, w.keys["release"].key)
    r = installer("verify", good, "--site", site)
    assert r.exit_code == 0, r.output  # this zstd does reproduce the layer
    before = tree(tmp_path / "s" / "nas")
    r = installer("verify", evil, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    msg = error_line(r.stderr)
    assert "delta tiny 1.2.0 cannot be rebuilt at this site: " in msg and "tokenizer.json" in msg, msg
    assert tree(tmp_path / "s" / "nas") == before


# --- deltas that rebuild from the site registry (the real docker-registry) -------------------------

def _delete(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as resp:
        assert resp.status == 202, resp.status


def test_a_delta_names_the_registry_blob_and_manifest_the_site_lacks(base_release: Any, s2_delta: Any,
                                                                     make_site: Any) -> None:
    """The site registry (plain HTTP, as the site file says) is asked for each base input by
    repository and digest: a deleted layer is named as a blob, a deleted image as a manifest."""
    site = make_site("registry-inputs")
    site.install(base_release.full)
    inputs = [e["from"] for e in s2_delta.root.delta["rebuild"].values() if "from" in e]
    by_endpoint = {src["at"]["registry"]["endpoint"]: (src["at"]["registry"]["repository"], src["digest"])
                   for src in inputs if "registry" in src["at"]}
    assert set(by_endpoint) == {"blobs", "manifests"}, by_endpoint
    (blob_repo, blob), (man_repo, manifest) = by_endpoint["blobs"], by_endpoint["manifests"]
    host = site.registry.host
    _delete(f"http://{host}/v2/{blob_repo}/blobs/{blob}")
    _delete(f"http://{host}/v2/{man_repo}/manifests/{manifest}")
    before = site.snapshot()
    with pytest.raises(BaseMissingError) as e:
        site.install(s2_delta.output)
    msg = e.value.message
    assert msg.startswith("delta rag-edge 1.2.0 rebuilds from base rag-edge 1.0.0"), msg
    listed = sorted(msg.split("lacks 2 of its inputs: ", 1)[1].split("; "))
    assert listed == sorted([f"blob {host}/{blob_repo}@{blob}", f"manifest {host}/{man_repo}@{manifest}"]), msg
    assert site.snapshot() == before


def test_each_location_a_signed_delta_names_is_checked_even_for_one_digest(bundles: Bundles, tmp_path: Path) -> None:
    """Signed content is not trusted to be consistent: g.bin's source relabelled to another NAS path
    (same digest as f05.bin, which is there) is still looked for at that path, and refused."""
    w = bundles.world
    many = _many_files(w)
    site = w.site(tmp_path / "s")
    install(many["base"], site)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(many["delta"], relabelled)
    root = json.loads(root_payload(relabelled))
    [g] = [e for e in root["delta"]["rebuild"].values() if e["what"].endswith(" g.bin")]
    assert g["from"]["at"]["nas"]["path"] == "f05.bin"
    g["from"]["at"]["nas"]["path"] = "f05-copy.bin"
    resign(relabelled, root, w.keys["release"].key)
    before = tree(tmp_path / "s" / "nas")
    r = installer("stage", relabelled, "--site", site)
    assert r.exit_code == EXIT_VERIFY, r.output
    copy = tmp_path / "s" / "nas" / "indices" / "files" / "1.0" / "f05-copy.bin"
    assert error_line(r.stderr).endswith(f"lacks 1 of its inputs: model file {copy} (missing)"), r.stderr
    assert tree(tmp_path / "s" / "nas") == before


@pytest.mark.parametrize(("plain", "scheme"), [(True, "http"), (False, "https")])
def test_the_base_check_speaks_to_the_site_registry_as_the_site_file_says(
        bundles: Bundles, tmp_path: Path, plain: bool, scheme: str) -> None:
    """``registry.plainHTTP`` of a non-loopback site registry decides HTTP or HTTPS, as for ``load``
    (only the client is built here: tests never leave 127.0.0.1)."""


    path = bundles.world.site(tmp_path / "s")
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["registry"] = {"address": "registry.plant-1.internal:5000", "plainHTTP": plain}
    path.write_text(yaml.safe_dump(doc))
    reg = site_registry(load_site(path))
    assert (reg.plain_http, reg.base_url) == (plain, f"{scheme}://registry.plant-1.internal:5000")


def test_a_wrapped_delta_says_what_it_is_rebuilt_against(bundles: Bundles, delta_case: DeltaCase,
                                                         tmp_path: Path) -> None:
    """The full target a delta stands for names the delta and the site it rebuilds from."""
    w = bundles.world
    path = w.site(tmp_path / "s")
    install(delta_case.base, path)
    site = load_site(path)
    state = StateDir(site.state_dir)
    with state.locked():
        vb = open_verified(delta_case.delta, site, state=state)
    assert (vb.root.version, vb.root.is_delta) == ("1.2.0", False)
    assert vb.source.description == (f"directory {delta_case.delta} rebuilt against site plant-1 "
                                     f"(registry 127.0.0.1:9, NAS {tmp_path / 's' / 'nas'})")


def _push_blob(host: str, repo: str, data: bytes) -> str:
    """A monolithic blob upload over plain HTTP (the distribution API, not the product's client)."""

    digest = sha256_of(data)
    with urllib.request.urlopen(urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST"),
                                timeout=10) as resp:
        location = urllib.parse.urljoin(f"http://{host}/", resp.headers["Location"])
    sep = "&" if "?" in location else "?"
    put = urllib.request.Request(f"{location}{sep}digest={digest}", data=data, method="PUT",
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put, timeout=10) as resp:
        assert resp.status == 201, resp.status
    return digest


def test_a_signed_delta_may_rebuild_a_model_file_from_the_site_registry(bundles: Bundles, registry: Any,
                                                                        tmp_path: Path) -> None:
    """The source of an unchanged ``tar+zstd`` model file relabelled to a registry blob (same bytes,
    validly signed): the installer fetches it by digest, checks it and re-encodes it; no crash."""
    w = bundles.world
    many = _many_files(w)
    site = w.site(tmp_path / "s")
    doc = yaml.safe_load(site.read_text())
    doc["spec"]["registry"] = {"address": registry.host, "plainHTTP": True}
    site.write_text(yaml.safe_dump(doc))
    install(many["base"], site)
    digest = _push_blob(registry.host, "edge/notes", NOTES.encode())

    relabelled = tmp_path / "relabelled"
    shutil.copytree(many["delta"], relabelled)
    root = json.loads(root_payload(relabelled))
    [notes] = [e for e in root["delta"]["rebuild"].values() if e["what"].endswith(" notes.txt")]
    assert (notes["method"], notes["from"]["digest"]) == ("base", digest)
    notes["from"]["at"] = {"registry": {"repository": "edge/notes", "endpoint": "blobs"}}
    resign(relabelled, root, w.keys["release"].key)
    (tmp_path / "s" / "nas" / "indices" / "files" / "1.0" / "notes.txt").unlink()  # not read from the NAS
    r = installer("stage", relabelled, "--site", site)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "nas" / "indices" / "files" / "1.1" / "notes.txt").read_text() == NOTES
