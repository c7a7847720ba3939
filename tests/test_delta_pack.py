"""A delta's compact form (issue 16): its root signed zstd-compressed, its small documents in one
zstd pack. Envelopes, packs and roots are doctored here with json, base64, zstandard and
`cryptography` (tests/fixtures/dsse.py), not with the product's own writers."""

from __future__ import annotations

import base64
import copy
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bundler.delta import DeltaResult
from edgebundle.digest import DigestMismatchError
from edgebundle.errors import VerificationError
from edgebundle.parts import open_source
from edgebundle.patch import PatchError
from edgebundle.root import MalformedRootError, parse_root
from edgebundle.signing import TrustStore, UntrustedError, load_public_key
from edgebundle.verify import Verifier, VerifiedBundle
from tests.fixtures import dsse
from tests.fixtures.bundles import bundle_world  # noqa: F401  (a fixture, used by name)
from tests.fixtures.digests import sha256_of
from tests.hostile.signed import BILLION_LAUGHS
from tests.test_delta_codecs import _delta_root_doc, _raw
from tests.test_delta_scenarios import (  # noqa: F401  (fixtures)
    Release,
    Releases,
    base_release,
    bundle_cli,
    releases,
    s2_delta,
)

ROOT = "edgebundle/root.dsse.json"
ROOT_TYPE = "application/vnd.edgebundle.root.v1+json"


# --- doctoring a delta (independently of the product) ------------------------------------------

def unpack(delta: Path, dest: Path) -> Path:
    with tarfile.open(delta) as t:
        t.extractall(dest, filter="data")
    return dest


def envelope(d: Path) -> dict[str, Any]:
    return json.loads((d / ROOT).read_bytes())  # type: ignore[no-any-return]


def root_doc(d: Path) -> dict[str, Any]:
    return json.loads(dsse.document(envelope(d)))  # type: ignore[no-any-return]


def sign_payload(d: Path, payload: bytes, payload_type: str, key: Ed25519PrivateKey) -> None:
    sig = key.sign(dsse.pae(payload_type, payload))
    (d / ROOT).write_text(json.dumps({
        "payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
        "signatures": [{"keyid": dsse.raw_keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}]}))


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_root(d: Path, doc: dict[str, Any], key: Ed25519PrivateKey, compressed: bool = True) -> None:
    body = canonical(doc)
    if compressed:
        sign_payload(d, zstandard.ZstdCompressor(level=19).compress(body), ROOT_TYPE + "+zstd", key)
    else:
        sign_payload(d, body, ROOT_TYPE, key)


def blob(d: Path, digest: str) -> Path:
    return d / "blobs" / "sha256" / digest.split(":", 1)[1]


def the_pack(doc: dict[str, Any]) -> str:
    [pack] = [p for p, c in doc["delta"]["carried"].items() if c["kind"] == "pack"]
    return pack


def replace_pack(d: Path, doc: dict[str, Any], decoded: bytes) -> dict[str, Any]:
    """``doc`` with its pack replaced by a zstd frame of ``decoded`` (the signed decoded size kept)."""
    old = the_pack(doc)
    data = zstandard.ZstdCompressor(level=3).compress(decoded)
    new = sha256_of(data)
    blob(d, old).unlink()
    blob(d, new).write_bytes(data)
    text = json.dumps(doc).replace(old, new)
    out = json.loads(text)
    out["delta"]["carried"][new]["size"] = len(data)
    return out  # type: ignore[no-any-return]


def pack_bytes(d: Path, doc: dict[str, Any]) -> bytes:
    return dsse.delta_pack(blob(d, the_pack(doc)).read_bytes(), doc)


@pytest.fixture
def delta_dir(s2_delta: DeltaResult, tmp_path: Path) -> Path:
    return unpack(s2_delta.output, tmp_path / "delta")


@pytest.fixture
def key(releases: Releases) -> Ed25519PrivateKey:
    return dsse.load_key(releases.key)


@pytest.fixture
def check(releases: Releases) -> Callable[[Path], VerifiedBundle]:
    trust = TrustStore([load_public_key(releases.pub)])
    return lambda d: Verifier(trust).verify(open_source(d))


# --- the compressed root -------------------------------------------------------------------------

def test_a_delta_root_is_signed_compressed_and_named_by_the_decompressed_document(
        s2_delta: DeltaResult, delta_dir: Path, check: Callable[[Path], VerifiedBundle]) -> None:
    env = envelope(delta_dir)
    assert env["payloadType"] == ROOT_TYPE + "+zstd"
    document = zstandard.ZstdDecompressor().decompress(base64.b64decode(env["payload"]))
    assert len(base64.b64decode(env["payload"])) < len(document) / 4  # what it is for
    vb = check(delta_dir)
    assert vb.root_bytes == document
    assert vb.root_digest == sha256_of(document) == s2_delta.root.digest  # base.root, approvals, state


def test_a_delta_with_an_uncompressed_root_still_verifies(
        delta_dir: Path, key: Ed25519PrivateKey, check: Callable[[Path], VerifiedBundle]) -> None:
    document = dsse.document(envelope(delta_dir))
    sign_payload(delta_dir, document, ROOT_TYPE, key)
    assert check(delta_dir).root_digest == sha256_of(document)


def test_a_tampered_compressed_root_is_refused_by_its_signature(
        delta_dir: Path, check: Callable[[Path], VerifiedBundle]) -> None:
    env = envelope(delta_dir)
    payload = bytearray(base64.b64decode(env["payload"]))
    payload[len(payload) // 2] ^= 0x01
    env["payload"] = base64.b64encode(bytes(payload)).decode()
    (delta_dir / ROOT).write_text(json.dumps(env))
    with pytest.raises(UntrustedError, match="does not match its payload"):
        check(delta_dir)


def test_a_compressed_root_is_not_relabelled_as_a_plain_one(
        delta_dir: Path, check: Callable[[Path], VerifiedBundle]) -> None:
    env = envelope(delta_dir)
    env["payloadType"] = ROOT_TYPE  # the signature covers the type too (PAE)
    (delta_dir / ROOT).write_text(json.dumps(env))
    with pytest.raises(UntrustedError, match="does not match its payload"):
        check(delta_dir)


BOMB = zstandard.ZstdCompressor(level=3).compress(b" " * (17 * 1024 * 1024))  # over the 16 MiB root bound


@pytest.mark.parametrize(("payload", "message"), [
    (BOMB, "decompresses to more than its 16777216-byte limit"),
    (zstandard.ZstdCompressor().compress(b"{}") + b"trailing", "data after the end of the zstd frame"),
    (zstandard.ZstdCompressor().compress(b'{"a": "' + b"x" * 400 + b'"}')[:-8], "truncated|corrupt"),
    (b"not zstd at all", "corrupt zstd data"),
])
def test_a_signed_compressed_root_that_does_not_decode_within_bounds_is_refused(
        delta_dir: Path, key: Ed25519PrivateKey, check: Callable[[Path], VerifiedBundle],
        payload: bytes, message: str) -> None:
    assert len(BOMB) < 4096
    sign_payload(delta_dir, payload, ROOT_TYPE + "+zstd", key)
    with pytest.raises(VerificationError, match=message) as e:
        check(delta_dir)
    assert not isinstance(e.value, UntrustedError)


def test_a_root_bomb_by_an_untrusted_key_is_never_decoded(
        delta_dir: Path, check: Callable[[Path], VerifiedBundle]) -> None:
    sign_payload(delta_dir, BOMB, ROOT_TYPE + "+zstd", Ed25519PrivateKey.generate())
    with pytest.raises(UntrustedError, match="by trusted keys"):  # the signature, not the bomb
        check(delta_dir)


# --- the pack ------------------------------------------------------------------------------------

def test_the_pack_holds_every_small_document_and_each_reads_back_as_pinned(
        delta_dir: Path, check: Callable[[Path], VerifiedBundle]) -> None:
    doc = root_doc(delta_dir)
    decoded = pack_bytes(delta_dir, doc)
    assert len(decoded) == doc["delta"]["carried"][the_pack(doc)]["decoded"]
    packed = {d: e for d, e in doc["delta"]["rebuild"].items() if e["method"] == "packed"}
    assert len(packed) >= 8 and set(doc["delta"]["files"]) == {"index.json", "edgebundle/sbom.cdx.json"}
    for digest, e in packed.items():
        assert sha256_of(decoded[e["offset"]:e["offset"] + e["size"]]) == digest, e["what"]
    vb = check(delta_dir)
    sbom_at = doc["delta"]["files"]["edgebundle/sbom.cdx.json"]["offset"]
    assert vb.read_sbom() == decoded[sbom_at:sbom_at + doc["files"]["edgebundle/sbom.cdx.json"]["size"]]


@pytest.mark.parametrize(("extra", "message"), [
    (b"x", "yields more than"),
    (b"\0" * (64 << 20), "yields more than"),  # a pack bomb: stopped at the signed size
    (None, "yields .* bytes, expected"),
])
def test_a_pack_whose_decoded_size_lies_is_refused_at_verify(
        delta_dir: Path, key: Ed25519PrivateKey, check: Callable[[Path], VerifiedBundle],
        extra: bytes | None, message: str) -> None:
    doc = root_doc(delta_dir)
    decoded = pack_bytes(delta_dir, doc)
    doc = replace_pack(delta_dir, doc, decoded[:-1] if extra is None else decoded + extra)
    sign_root(delta_dir, doc, key)
    with pytest.raises(PatchError, match=message):
        check(delta_dir)


def test_a_packed_manifest_that_does_not_match_its_pin_is_refused_at_verify(
        delta_dir: Path, key: Ed25519PrivateKey, check: Callable[[Path], VerifiedBundle]) -> None:
    doc = root_doc(delta_dir)
    decoded = bytearray(pack_bytes(delta_dir, doc))
    mf = doc["manifests"]["files"][-1]
    decoded[doc["delta"]["rebuild"][mf["digest"]]["offset"]] ^= 0x01
    sign_root(delta_dir, replace_pack(delta_dir, doc, bytes(decoded)), key)
    with pytest.raises(DigestMismatchError, match=mf["digest"].split(":")[1]):
        check(delta_dir)


@pytest.mark.parametrize("member", ["blob", "sbom"])
def test_a_packed_document_that_does_not_match_its_pin_is_refused_as_it_is_read(
        delta_dir: Path, key: Ed25519PrivateKey, check: Callable[[Path], VerifiedBundle], member: str,
        releases: Releases, base_release: Release) -> None:
    doc = root_doc(delta_dir)
    decoded = bytearray(pack_bytes(delta_dir, doc))
    if member == "blob":
        digest, e = next((d, e) for d, e in sorted(doc["delta"]["rebuild"].items())
                         if e["method"] == "packed" and not e["what"].startswith("k8s manifest"))  # those: below
    else:
        e = doc["delta"]["files"]["edgebundle/sbom.cdx.json"]
    decoded[e["offset"]] ^= 0x01
    doc = replace_pack(delta_dir, doc, bytes(decoded))
    sign_root(delta_dir, doc, key)
    vb = check(delta_dir)  # the pack is signed and decodes within bounds: each document is proven when read
    if member == "sbom":
        with pytest.raises(DigestMismatchError, match="edgebundle/sbom.cdx.json"):
            vb.read_sbom()
        return
    # bundle verify --base rebuilds every blob of the full target, the packed ones included
    r = bundle_cli("verify", delta_dir, "--pubkey", releases.pub, "--base", base_release.full)
    assert r.returncode == 4, r.stderr
    assert digest in r.stderr and "does not match" in r.stderr, r.stderr


def test_a_signed_yaml_bomb_in_the_pack_is_refused_at_verify(
        delta_dir: Path, key: Ed25519PrivateKey, check: Callable[[Path], VerifiedBundle]) -> None:
    """Packed Kubernetes manifests are parsed within bounds at verify, as carried ones are."""
    doc = root_doc(delta_dir)
    decoded = bytearray(pack_bytes(delta_dir, doc))
    mf = doc["manifests"]["files"][0]
    e = doc["delta"]["rebuild"][mf["digest"]]
    assert e["method"] == "packed" and len(BILLION_LAUGHS) < mf["size"]
    bomb = BILLION_LAUGHS + b"#" * (mf["size"] - len(BILLION_LAUGHS) - 1) + b"\n"  # same size: same offsets
    decoded[e["offset"]:e["offset"] + mf["size"]] = bomb
    doc = json.loads(json.dumps(doc).replace(mf["digest"], sha256_of(bomb)))  # pinned everywhere, re-signed
    doc = replace_pack(delta_dir, doc, bytes(decoded))
    sign_root(delta_dir, doc, key)
    with pytest.raises(VerificationError, match=f"manifest {mf['path']}.*not safe to parse"):
        check(delta_dir)


def test_an_altered_pack_member_is_refused_by_its_carried_pin(
        delta_dir: Path, check: Callable[[Path], VerifiedBundle]) -> None:
    path = blob(delta_dir, the_pack(root_doc(delta_dir)))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="does not match"):
        check(delta_dir)


# --- the root's pack entries are strict ----------------------------------------------------------

def _packed_doc() -> dict[str, Any]:
    """test_delta_codecs' delta root with blob a and index.json packed (1 + 2 bytes)."""
    doc = _delta_root_doc()
    a = next(d for d, e in doc["delta"]["rebuild"].items() if e["method"] == "whole")
    pack = sha256_of(b"the pack")
    del doc["delta"]["carried"][a]
    doc["delta"]["carried"][pack] = {"size": 20, "kind": "pack", "decoded": 3}
    doc["delta"]["rebuild"][a] = {"method": "packed", "size": 1, "pack": pack, "offset": 0}
    doc["delta"]["files"] = {"index.json": {"pack": pack, "offset": 1}}
    return doc


def test_a_packed_root_parses_and_its_members_leave_out_what_the_pack_holds() -> None:
    root = parse_root(_raw(_packed_doc()))
    assert "index.json" not in root.member_pins() and "index.json" in root.member_pins(full=True)
    assert root.member_order()[:2] == ["oci-layout", ROOT] and "index.json" not in root.member_order()


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        d = doc
        for k in path[:-1]:
            d = d[k] if not callable(k) else k(d)
        d[path[-1]] = value
    return change


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in doc["delta"]["rebuild"].values() if e["method"] == "packed")  # type: ignore[no-any-return]


def _pack(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["delta"]["carried"][the_pack(doc)]  # type: ignore[no-any-return]


def _patch_entry(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in doc["delta"]["rebuild"].values() if e["method"] == "bsdiff4")  # type: ignore[no-any-return]


#: (change, the whole refusal, digests elided): each pack rule, named exactly.
PACK_REFUSALS: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (_set([_entry, "offset"], 1), "root: delta.rebuild[sha256:…].offset 1 leaves a gap or overlaps in pack sha256:… "
                                  "(expected 0): a pack's entries tile it exactly"),
    (_set(["delta", "files", "index.json", "offset"], 2),
     "root: delta.files[index.json].offset 2 leaves a gap or overlaps in pack sha256:… (expected 1): a pack's "
     "entries tile it exactly"),
    (_set([_pack, "decoded"], 4), "root: pack sha256:… entries add up to 3 bytes, its signed decoded size is 4"),
    (_set([_pack, "decoded"], (16 << 20) + 1), "root: delta.carried[sha256:…].decoded must be 1 to 16777216 bytes"),
    (_set([_pack, "decoded"], 0), "root: delta.carried[sha256:…].decoded must be 1 to 16777216 bytes"),
    (lambda d: _pack(d).pop("decoded"), "root: delta.carried[sha256:…] lacks 'decoded'"),
    (_set([_entry, "pack"], sha256_of(b"patch")), "root: delta.rebuild[sha256:…].pack sha256:… is not a carried pack"),
    (_set([_entry, "from"], {}), "root: delta.rebuild[sha256:…] is 'packed' but names a base input or patch"),
    (_set([_patch_entry, "offset"], 0), "root: delta.rebuild[sha256:…] is bsdiff4 but names a pack"),
    (_set(["delta", "files", "oci-layout"], {"pack": "x", "offset": 3}),
     "root: delta.files[oci-layout] is not index.json or the SBOM of this root"),
    (_set(["delta", "files", "index.json", "size"], 2), "root: delta.files[index.json] has unknown keys: size"),
    (lambda d: d["delta"]["carried"][sha256_of(b"patch")].__setitem__("decoded", 5),
     "root: delta.carried[sha256:…] has unknown keys: decoded"),
    (lambda d: d["delta"]["carried"].__setitem__(sha256_of(b"other"), {"size": 9, "kind": "pack", "decoded": 1}),
     "root: delta.carried lists sha256:… that nothing uses"),
    (_set([_entry, "patch"], sha256_of(b"patch")),
     "root: delta.rebuild[sha256:…] is 'packed' but names a base input or patch"),
    (_set([_entry, "file"], {"path": "x", "digest": sha256_of(b"x"), "size": 1, "encoding": "identity"}),
     "root: delta.rebuild[sha256:…] is 'packed' but names a base input or patch"),
    (lambda d: _entry(d).pop("pack"), "root: delta.rebuild[sha256:…] lacks 'pack'"),
    (lambda d: _entry(d).pop("offset"), "root: delta.rebuild[sha256:…] lacks 'offset'"),
    (_set([_entry, "pack"], sha256_of(b"nothing carried")),
     "root: delta.rebuild[sha256:…].pack sha256:… is not a carried pack"),
    (lambda d: _patch_entry(d).__setitem__("pack", the_pack(d)), "root: delta.rebuild[sha256:…] is bsdiff4 but names a pack"),
    (_set(["delta", "files"], []), "root: delta.files has the wrong type"),
    (lambda d: d["delta"]["files"].__setitem__("n" * 100, {"pack": the_pack(d), "offset": 3}),
     f"root: delta.files[{'n' * 80}] is not index.json or the SBOM of this root"),
    (_set([_pack, "decoded"], 16 << 20),  # the largest decoded size passes its own bound
     "root: pack sha256:… entries add up to 3 bytes, its signed decoded size is 16777216"),
]


@pytest.mark.parametrize(("change", "message"), PACK_REFUSALS, ids=range(len(PACK_REFUSALS)))
def test_a_pack_entry_that_does_not_tile_its_pack_exactly_is_refused(
        change: Callable[[dict[str, Any]], None], message: str) -> None:
    doc = copy.deepcopy(_packed_doc())
    change(doc)
    with pytest.raises(MalformedRootError) as e:
        parse_root(_raw(doc))
    assert re.sub(r"sha256:[0-9a-f]{64}", "sha256:…", e.value.message) == message
