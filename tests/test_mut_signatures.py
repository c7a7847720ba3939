"""Signatures and approvals at the function level: what the mutation run of the trust core
(docs/mutation-notes/) showed the end-to-end tests did not pin down.

Every expected value is independent of the product: envelopes are built and checked with the DSSE
implementation in tests/fixtures/dsse.py (written from the DSSE spec), key ids with ``hashlib``,
times as literal strings.
"""

from __future__ import annotations

import base64
import calendar
import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle import signing
from edgebundle import verify as verify_mod
from edgebundle.compress import write_tar_zstd
from edgebundle.digest import DigestMismatchError
from edgebundle.errors import UsageError
from edgebundle.parts import open_source
from edgebundle.verify import ExpiredError, Policy, Verifier
from installer import approval
from installer.plan import Plan, PlanError, load_plan
from installer.state import StateDir
from tests.fixtures import dsse
from tests.test_trust_core import (EXIT_VERIFY, ROOT, Bundles, DeltaCase, bad_layer, bundle, bundles,  # noqa: F401
                                   delta_case,
                                   envelope_payload, install_and_plan, private_copy, resign, unpack_delta)
from tests.test_trust_core import installer as installer_cli

TYPE = "application/vnd.example.test+json"
PAYLOAD = b'{"hello": "world"}'


def key(seed: int) -> Ed25519PrivateKey:
    """A fixed key (the same bytes on every run)."""
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def envelope(payload: bytes, sigs: list[tuple[Ed25519PrivateKey, Ed25519PrivateKey]], ptype: str = TYPE) -> bytes:
    """A DSSE envelope built here: each (signer, claimed) pair adds a signature by ``signer`` labelled
    with ``claimed``'s key id."""
    entries = [{"keyid": dsse.raw_keyid(claimed.public_key()),
                "sig": base64.b64encode(signer.sign(dsse.pae(ptype, payload))).decode()}
               for signer, claimed in sigs]
    return json.dumps({"payload": base64.b64encode(payload).decode(), "payloadType": ptype,
                       "signatures": entries}).encode()


def store(*seeds: int, threshold: int = 1) -> signing.TrustStore:
    return signing.TrustStore([key(s).public_key() for s in seeds], threshold)


def verify(data: bytes, trust: signing.TrustStore, ptype: str = TYPE) -> signing.Verified:
    return signing.verify(data, ptype, trust, "the test document", 1 << 20)


# --- signing: what the builder writes is plain DSSE ---------------------------------------------------

def test_signature_envelope_is_dsse_any_verifier_accepts() -> None:
    """The product's envelope verifies with the independent DSSE verifier, key by key."""
    a, b = key(1), key(2)
    env = signing.sign(PAYLOAD, TYPE, [b, a])
    assert dsse.dsse_verify(env, a.public_key(), TYPE) == {"hello": "world"}
    assert dsse.dsse_verify(env, b.public_key(), TYPE) == {"hello": "world"}
    doc = json.loads(env)
    assert set(doc) == {"payload", "payloadType", "signatures"}
    ids = [dsse.raw_keyid(a.public_key()), dsse.raw_keyid(b.public_key())]
    assert [s["keyid"] for s in doc["signatures"]] == sorted(ids)  # sorted by key id: deterministic
    assert signing.sign(PAYLOAD, TYPE, [a, b]) == env
    assert signing.keyid(a.public_key()) == ids[0]
    assert signing.pae(TYPE, PAYLOAD) == b"DSSEv1 %d %s %d %s" % (len(TYPE), TYPE.encode(), len(PAYLOAD), PAYLOAD)


def test_signature_made_elsewhere_verifies_and_names_its_signers() -> None:
    a, b, c = key(1), key(2), key(3)
    data = envelope(PAYLOAD, [(a, a), (b, b), (c, c)])
    got = verify(data, store(1, 2, threshold=2))
    assert got.payload == PAYLOAD
    assert got.signers == sorted([dsse.raw_keyid(a.public_key()), dsse.raw_keyid(b.public_key())])


def test_signature_of_one_payload_type_does_not_verify_as_another() -> None:
    data = envelope(PAYLOAD, [(key(1), key(1))], ptype="application/vnd.other+json")
    with pytest.raises(signing.MalformedEnvelopeError, match="payloadType"):
        verify(data, store(1))
    # relabelled to the expected type: the signature covered the other type, so it does not match
    doc = json.loads(data)
    doc["payloadType"] = TYPE
    with pytest.raises(signing.UntrustedError, match="does not match"):
        verify(json.dumps(doc).encode(), store(1))


def test_signature_of_a_type_that_is_part_of_the_expected_one_does_not_verify() -> None:
    """The expected type is matched whole, never as a substring (one type, or one of several)."""
    for part in ("application/vnd.example", "+json", "t"):
        data = envelope(PAYLOAD, [(key(1), key(1))], ptype=part)
        with pytest.raises(signing.MalformedEnvelopeError, match="payloadType"):
            verify(data, store(1))
        with pytest.raises(signing.MalformedEnvelopeError, match="payloadType"):
            signing.verify(data, (TYPE, TYPE + "+zstd"), store(1), "the test document", 1 << 20)
    assert verify(envelope(PAYLOAD, [(key(1), key(1))]), store(1)).payload == PAYLOAD


def test_signature_with_no_key_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no signing key"):
        signing.sign(PAYLOAD, TYPE, [])
    assert json.loads(signing.unsigned(PAYLOAD, TYPE))["signatures"] == []


# --- the trust store: k of n distinct trusted keys ------------------------------------------------------

def test_signature_threshold_bounds() -> None:
    with pytest.raises(UsageError, match="between 1 and 2"):
        store(1, 2, threshold=3)
    with pytest.raises(UsageError, match="between 1 and 2"):
        store(1, 2, threshold=0)
    with pytest.raises(UsageError, match="no trusted public keys"):
        signing.TrustStore([])
    # the same key listed twice is one key: a threshold of 2 cannot be met by it
    with pytest.raises(UsageError, match="between 1 and 1"):
        signing.TrustStore([key(1).public_key(), key(1).public_key()], 2)
    assert store(1, 2, threshold=2).threshold == 2


def test_signature_trust_store_from_files_defaults_to_one_of_n(tmp_path: Path) -> None:
    paths = []
    for seed in (1, 2):
        p = tmp_path / f"k{seed}.pub"
        p.write_bytes(key(seed).public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
        paths.append(p)
    trust = signing.TrustStore.from_files(paths)
    assert trust.threshold == 1
    assert verify(envelope(PAYLOAD, [(key(2), key(2))]), trust).payload == PAYLOAD


def test_signature_untrusted_and_bad_entries_before_a_good_one_do_not_hide_it() -> None:
    """An unknown key's signature and a forged one come first; the trusted valid one still counts."""
    a, b, stranger = key(1), key(2), key(9)
    data = envelope(PAYLOAD, [(stranger, stranger), (stranger, b), (a, a)])
    assert verify(data, store(1, 2)).signers == [dsse.raw_keyid(a.public_key())]


def test_signature_counted_once_per_key() -> None:
    a = key(1)
    twice = envelope(PAYLOAD, [(a, a), (a, a)])
    with pytest.raises(signing.UntrustedError, match="1 valid signature"):
        verify(twice, store(1, 2, threshold=2))
    # the second entry of the same key is forged: the first (valid) one already counted, it is not "bad"
    once_then_forged = envelope(PAYLOAD, [(a, a), (key(3), a), (key(2), key(2))])
    assert len(verify(once_then_forged, store(1, 2, threshold=2)).signers) == 2


def test_signature_forged_under_a_trusted_id_is_named() -> None:
    a, b, attacker = key(1), key(2), key(7)
    forged = envelope(PAYLOAD, [(attacker, b), (attacker, a)])
    with pytest.raises(signing.UntrustedError) as e:
        verify(forged, store(1, 2))
    ids = sorted(dsse.raw_keyid(k.public_key()) for k in (a, b))
    assert "does not match" in e.value.message
    for i in ids:  # each forged trusted key id is named by its first 16 hex digits, and no more
        assert i[:16] in e.value.message and i[:17] not in e.value.message


def test_signature_by_untrusted_keys_lists_the_claimed_signers() -> None:
    s1, s2 = key(8), key(9)
    data = envelope(PAYLOAD, [(s1, s1), (s2, s2)])
    with pytest.raises(signing.UntrustedError) as e:
        verify(data, store(1))
    i1, i2 = dsse.raw_keyid(s1.public_key()), dsse.raw_keyid(s2.public_key())
    assert f"0 valid signature(s) by trusted keys, 1 required (signed by: {i1[:16]}, {i2[:16]})" in e.value.message


def test_signature_unsigned_envelope_is_refused_as_unsigned() -> None:
    with pytest.raises(signing.UnsignedError, match="is not signed"):
        verify(envelope(PAYLOAD, []), store(1))


# --- parsing an envelope: strict, bounded, no guessing ----------------------------------------------------

def _doc(**change: Any) -> bytes:
    doc = json.loads(envelope(PAYLOAD, [(key(1), key(1))]))
    doc.update(change)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


@pytest.mark.parametrize("data, error, words", [
    (json.dumps({"_type": "edgebundle.root", "signatures": []}).encode(), signing.LegacyFormatError, "pre-DSSE"),
    (b"[1, 2]", signing.MalformedEnvelopeError, "not a DSSE envelope"),
    (b'{"payload": ', signing.VerificationError, "not valid JSON"),
    (_doc(extra=1), signing.MalformedEnvelopeError, "not a DSSE envelope"),
    (_doc(_type="edgebundle.root"), signing.MalformedEnvelopeError, "not a DSSE envelope"),  # not the old format
    (_doc(payload=None), signing.MalformedEnvelopeError, "not a DSSE envelope"),
    (_doc(payload=7), signing.MalformedEnvelopeError, "payload is not a base64 string"),
    (_doc(payload="e30=*"), signing.MalformedEnvelopeError, "payload is not base64"),
    (_doc(signatures={"keyid": "x", "sig": ""}), signing.MalformedEnvelopeError, "signatures is not a list"),
    (_doc(signatures=["x"]), signing.MalformedEnvelopeError, "signature 0 is not"),
    (_doc(signatures=[{"keyid": "x"}]), signing.MalformedEnvelopeError, "signature 0 is not"),
    (_doc(signatures=[{"keyid": "x", "sig": "", "extra": 1}]), signing.MalformedEnvelopeError, "signature 0 is not"),
    (_doc(signatures=[{"keyid": 5, "sig": ""}]), signing.MalformedEnvelopeError, "signature 0 is not"),
    (_doc(signatures=[{"keyid": "x", "sig": 5}]), signing.MalformedEnvelopeError, "signature 0 is not a base64"),
    (_doc(signatures=[{"keyid": "x", "sig": "AAAA"}, {"keyid": "y", "sig": "AA AA"}]),
     signing.MalformedEnvelopeError, "signature 1 is not base64"),
])
def test_signature_envelope_malformed_is_refused(data: bytes, error: type, words: str) -> None:
    with pytest.raises(error) as e:
        verify(data, store(1))
    assert words in e.value.message and "the test document" in e.value.message


def test_signature_envelope_is_bounded() -> None:
    data = envelope(PAYLOAD, [(key(1), key(1))])
    assert signing.parse_envelope(data, "doc", TYPE, len(data)).payload == PAYLOAD
    with pytest.raises(signing.VerificationError):
        signing.parse_envelope(data, "doc", TYPE, len(data) - 1)


def test_signature_parsed_envelope_keeps_what_it_claims() -> None:
    a, b = key(1), key(2)
    env = signing.parse_envelope(envelope(PAYLOAD, [(b, b), (a, a), (a, a)]), "doc", TYPE, 1 << 20)
    assert env.payload == PAYLOAD and env.payload_type == TYPE
    assert env.signer_ids == sorted({dsse.raw_keyid(a.public_key()), dsse.raw_keyid(b.public_key())})
    assert env.signatures[0].sig == b.sign(dsse.pae(TYPE, PAYLOAD))


# --- approvals: exactly this plan, recently, by an approver key ---------------------------------------

PLAN_HASH = "sha256:" + "ab" * 32
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def plan(**change: Any) -> Plan:
    doc = {"planHash": PLAN_HASH, "site": "plant-1", "cluster": {"server": "k3s:/x", "uid": "u1"},
           "bundle": {"name": "tiny", "version": "1.0.0", "root": "sha256:" + "cd" * 32},
           "revision": 3, "objects": [{"action": "create"}, {"action": "update"}, {"action": "create"}]}
    doc.update(change)
    return Plan(doc)


def test_approval_document_names_the_plan_operator_and_times() -> None:
    doc = approval.make_approval(plan(), "  ops  ", ttl=90.0, now=T0)
    assert doc == {"_type": "edgebundle.approval", "planHash": PLAN_HASH, "operator": "ops",
                   "approvedAt": "2026-01-01T00:00:00Z", "expiresAt": "2026-01-01T00:01:30Z",
                   "bundle": {"name": "tiny", "version": "1.0.0", "root": "sha256:" + "cd" * 32},
                   "site": "plant-1", "cluster": {"server": "k3s:/x", "uid": "u1"}, "revision": 3,
                   "summary": {"create": 2, "update": 1, "replace": 0, "delete": 0, "unchanged": 0}}
    assert approval.make_approval(plan(), "ops")["expiresAt"] != "2026-01-01T00:01:30Z"  # now: the clock
    with pytest.raises(UsageError, match="operator"):
        approval.make_approval(plan(), "   ")
    assert approval.approval_rel(PLAN_HASH) == "approvals/" + "ab" * 32 + ".json"
    assert approval.approval_rel("sha256:ab:cd") == "approvals/ab:cd.json"


def test_approval_sealed_with_a_key_is_dsse_signed(tmp_path: Path) -> None:
    doc = approval.make_approval(plan(), "ops", now=T0)
    env = approval.seal_approval(doc, key(4))
    assert dsse.dsse_verify(env, key(4).public_key(), "application/vnd.edgebundle.approval.v1+json") == doc
    assert json.loads(approval.seal_approval(doc))["signatures"] == []


def record(tmp_path: Path, doc: dict[str, Any], k: Ed25519PrivateKey | None = None) -> StateDir:
    state = StateDir(tmp_path / "state")
    path = approval.record_approval(state, doc, k)
    assert path == tmp_path / "state" / "approvals" / ("ab" * 32 + ".json")
    return state


def test_approval_valid_until_its_expiry_and_not_at_it(tmp_path: Path) -> None:
    doc = approval.make_approval(plan(), "ops", ttl=60.0, now=T0)
    state = record(tmp_path, doc, key(4))
    keys = [key(4).public_key()]
    assert approval.check_approval(state, plan(), keys=keys, now=T0 + 59) == doc
    with pytest.raises(approval.ApprovalError, match="expired at 2026-01-01T00:01:00Z"):
        approval.check_approval(state, plan(), keys=keys, now=T0 + 60)
    with pytest.raises(approval.ApprovalError, match="expired"):
        approval.check_approval(state, plan(), keys=keys)  # now: the real clock, years later


def test_approval_for_another_plan_field_is_refused(tmp_path: Path) -> None:
    state = record(tmp_path, approval.make_approval(plan(), "ops", now=T0), key(4))
    for field, value in (("site", "plant-2"), ("cluster", {"server": "k3s:/y", "uid": "u1"}),
                         ("bundle", {"name": "tiny", "version": "1.0.1", "root": "sha256:" + "cd" * 32})):
        with pytest.raises(approval.ApprovalError, match=f"{field} differs"):
            approval.check_approval(state, plan(**{field: value}), now=T0)


def test_approval_missing_or_unreadable_names_other_plans(tmp_path: Path) -> None:
    other = "sha256:" + "ef" * 32
    state = record(tmp_path, approval.make_approval(plan(), "ops", now=T0))
    with pytest.raises(approval.ApprovalError) as e:
        approval.check_approval(state, plan(planHash=other), now=T0)
    assert f"plan {other[:19]}... has not been approved" in e.value.message
    assert f"approvals on file are for other plans: {PLAN_HASH[:19]}... by ops at 2026-01-01T00:00:00Z" \
        in e.value.message
    assert approval.approval_on_file(state, PLAN_HASH)["operator"] == "ops"
    assert approval.approval_on_file(state, other) is None
    (tmp_path / "state" / "approvals" / ("ab" * 32 + ".json")).write_text("{not json")
    with pytest.raises(approval.ApprovalError, match="has not been approved"):
        approval.check_approval(state, plan(), now=T0)


def test_approval_of_another_document_type_is_refused(tmp_path: Path) -> None:
    doc = {**approval.make_approval(plan(), "ops", now=T0), "_type": "edgebundle.plan"}
    state = record(tmp_path, doc)
    with pytest.raises(approval.ApprovalError, match="has not been approved"):
        approval.check_approval(state, plan(), now=T0)


def test_approval_signature_checked_only_where_keys_are_set(tmp_path: Path) -> None:
    doc = approval.make_approval(plan(), "ops", now=T0)
    state = record(tmp_path, doc)  # unsigned
    assert approval.check_approval(state, plan(), now=T0) == doc
    assert approval.check_approval(state, plan(), keys=[], now=T0) == doc
    with pytest.raises(approval.ApprovalError, match="by ops is not signed"):
        approval.check_approval(state, plan(), keys=[key(4).public_key()], now=T0)
    record(tmp_path, doc, key(5))  # signed by a key that is not the approver's
    with pytest.raises(approval.ApprovalError, match="^the approval by ops: 0 valid .* not signed by an approver key"):
        approval.check_approval(state, plan(), keys=[key(4).public_key()], now=T0)
    # either of two approver keys will do (1 of n)
    assert approval.check_approval(state, plan(), keys=[key(4).public_key(), key(5).public_key()], now=T0) == doc
    # forged under the approver's key id
    path = tmp_path / "state" / "approvals" / ("ab" * 32 + ".json")
    path.write_bytes(dsse.forge(path.read_bytes(), key(5), key(4).public_key()))
    with pytest.raises(approval.ApprovalError, match="^the approval by ops: signature by trusted key .* does not match"):
        approval.check_approval(state, plan(), keys=[key(4).public_key()], now=T0)


def test_approval_in_the_old_format_is_named(tmp_path: Path) -> None:
    doc = approval.make_approval(plan(), "ops", now=T0)
    path = tmp_path / "state" / "approvals" / ("ab" * 32 + ".json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**doc, "signature": "x"}))
    with pytest.raises(approval.ApprovalError, match="pre-DSSE") as e:
        approval.check_approval(StateDir(tmp_path / "state"), plan(), now=T0)
    assert e.value.message.startswith(f"approval {path} is a bare 'edgebundle.approval' document")


def test_approval_with_a_bad_expiry_is_refused(tmp_path: Path) -> None:
    doc = {**approval.make_approval(plan(), "ops", now=T0), "expiresAt": "tomorrow"}
    state = record(tmp_path, doc)
    with pytest.raises(approval.ApprovalError, match="no valid expiry"):
        approval.check_approval(state, plan(), now=T0)


# --- the verifier: content, manifests, the encoded layer, the order of failures ----------------------



#: 9 aliases, each nine times the one before ("billion laughs"): a few hundred bytes, 9**9 nodes.
BILLION_LAUGHS = ("a: &a [" + ",".join(["lol"] * 9) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))).encode()


def flip(path: Path, at: int) -> None:
    """Flip one bit of the byte at ``at`` (negative: from the end): same size, other bytes."""
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def blob_file(b: Path, digest: str) -> Path:
    return b / "blobs" / "sha256" / digest.split(":", 1)[1]


def test_signed_bundle_verifies_through_the_api_without_a_progress_callback(bundles: Bundles) -> None:

    w = bundles.world
    vb = Verifier(signing.TrustStore.from_files([w.keys["release"].pub])).verify(open_source(bundles.v100))
    payload = base64.b64decode(json.loads((bundles.v100 / ROOT).read_text())["payload"])
    assert vb.signers == [w.keys["release"].id]
    assert vb.root_bytes == payload and vb.root.version == "1.0.0"


def test_the_sbom_is_read_only_as_its_signed_root_pins_it(bundles: Bundles, tmp_path: Path) -> None:
    """``VerifiedBundle.read_sbom``: the member's bytes when the root pins them, re-hashed as read
    (a copy changed after verification is refused naming the member); None for a root without one."""
    trust = signing.TrustStore.from_files([bundles.world.keys["release"].pub])
    b = private_copy(bundles.v100, tmp_path)
    sbom = b / "edgebundle" / "sbom.cdx.json"
    vb = Verifier(trust).verify(open_source(b))
    assert vb.read_sbom() == sbom.read_bytes() and json.loads(sbom.read_bytes())["bomFormat"] == "CycloneDX"
    without = dataclasses.replace(vb, root=dataclasses.replace(
        vb.root, files={k: v for k, v in vb.root.files.items() if k != "edgebundle/sbom.cdx.json"}))
    assert without.read_sbom() is None
    data = sbom.read_bytes()
    sbom.write_bytes(data[:-2] + b" }")  # same size, other bytes: only the digest can tell
    with pytest.raises(DigestMismatchError) as e:
        vb.read_sbom()
    assert e.value.message.startswith("edgebundle/sbom.cdx.json: ")


def test_signed_bundle_inspect_shows_the_claimed_signers_unverified(bundles: Bundles) -> None:
    w = bundles.world
    for b, signer in ((bundles.v100, "release"), (bundles.v100_attacker, "attacker")):
        r = bundle("inspect", b, "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert (doc["name"], doc["version"], doc["signers"]) == ("tiny", "1.0.0", [w.keys[signer].id])


def test_signed_encoded_layer_that_decodes_right_is_accepted_and_a_bad_one_named(bundles: Bundles,
                                                                                 bad_layer: Path) -> None:
    """The good twin of the bad layer (a tar+zstd file whose decoded bytes match the signed file digest)."""
    w = bundles.world
    good = w.base / "out" / "tok-layer"  # built by the bad_layer fixture
    r = bundle("verify", good, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == 0, r.output
    [f] = envelope_payload(bad_layer / ROOT)["models"][0]["files"]
    r = bundle("verify", bad_layer, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert f"file tokenizer.json (blob {f['blob'][:19]}) decoded" in r.stderr, r.stderr


def test_signed_manifest_damaged_is_named_by_its_blob(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    b = private_copy(bundles.v100, tmp_path)
    [mf] = envelope_payload(b / ROOT)["manifests"]["files"]
    flip(blob_file(b, mf["digest"]), 0)
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert f"blobs/sha256/{mf['digest'].split(':')[1]}" in r.stderr, r.stderr


def test_signed_manifest_alias_bomb_is_refused_before_anything_is_written(bundles: Bundles, tmp_path: Path) -> None:
    """A manifest signed by the trusted key that is a YAML alias bomb: refused by every verify."""

    w = bundles.world
    b = private_copy(bundles.v100, tmp_path)
    bomb = BILLION_LAUGHS
    digest = "sha256:" + hashlib.sha256(bomb).hexdigest()
    root = envelope_payload(b / ROOT)
    [mf] = root["manifests"]["files"]
    blob_file(b, mf["digest"]).unlink()
    blob_file(b, digest).write_bytes(bomb)
    pin = root["blobs"].pop(mf["digest"])
    root["blobs"][digest] = {**pin, "digest": digest, "size": len(bomb)}
    mf.update(digest=digest, size=len(bomb))
    resign(b, root, w.keys["release"].key)
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "manifest cm.yaml" in r.stderr and "not safe to parse" in r.stderr, r.stderr
    site = w.site(tmp_path / "s")
    r = installer_cli("stage", b, "--site", site)
    assert r.exit_code == EXIT_VERIFY and "not safe to parse" in r.stderr, r.output
    assert not any((tmp_path / "s" / "nas").iterdir())


def test_signed_bundle_with_two_bad_blobs_names_the_first_in_order(bundles: Bundles, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker, largest blob first: its failure must not cancel an earlier (in tar order) bad blob."""

    w = bundles.world
    b = private_copy(bundles.v100, tmp_path)
    blobs = sorted((p for p in (b / "blobs" / "sha256").iterdir()), key=lambda p: p.name)  # a directory's order
    # an earlier blob that is smaller than a later one: with one worker the later one is hashed first
    first, largest = next((x, y) for i, x in enumerate(blobs) for y in blobs[i + 1:]
                          if x.stat().st_size < y.stat().st_size)
    for p in (first, largest):
        data = bytearray(p.read_bytes())
        data[-1] ^= 1
        p.write_bytes(bytes(data))
    monkeypatch.setattr(verify_mod, "WORKERS", 1)
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert first.name in r.stderr and largest.name not in r.stderr, r.stderr


def test_signed_bundle_expires_at_its_signed_instant(bundles: Bundles, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid one second before ``expires``, refused at it, accepted after it only when the operator allows."""


    w = bundles.world
    expires = envelope_payload(bundles.v100 / ROOT)["expires"]
    at = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ"))
    trust = signing.TrustStore.from_files([w.keys["release"].pub])
    for now, policy, ok in ((at - 1, Policy(), True), (at, Policy(), False), (at + 86400, Policy(), False),
                            (at + 86400, Policy(allow_expired=True), True)):
        monkeypatch.setattr(time, "time", lambda now=now: float(now))
        if ok:
            assert Verifier(trust, policy).verify(open_source(bundles.v100), content=False).root.expires == expires
        else:
            with pytest.raises(ExpiredError, match=f"expired at {expires}"):
                Verifier(trust, policy).verify(open_source(bundles.v100), content=False)


def test_signed_root_missing_or_in_the_old_format_is_named(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    b = private_copy(bundles.v100, tmp_path)
    (b / ROOT).unlink()
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY and f"has no {ROOT}" in r.stderr and "pre-DSSE" not in r.stderr, r.output
    (b / "edgebundle" / "signatures.json").write_text('{"signatures": []}')
    for verb in (("verify", b, "--pubkey", w.keys["release"].pub), ("inspect", b)):
        r = bundle(*verb)
        assert r.exit_code == EXIT_VERIFY, r.output
        assert "has edgebundle/signatures.json but no edgebundle/root.dsse.json" in r.stderr, r.stderr
        assert "pre-DSSE" in r.stderr


def test_signature_refusal_of_a_bundle_names_its_root_envelope(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    r = bundle("verify", bundles.v100_attacker, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY and f"{ROOT}: 0 valid signature(s)" in r.stderr, r.output


def test_signed_bundle_without_manifests_verifies(bundles: Bundles, tmp_path: Path) -> None:
    """Models only (no Kubernetes manifests): nothing to parse, nothing refused."""
    w = bundles.world
    spec = tmp_path / "bundle.yaml"
    spec.write_text(json.dumps({
        "apiVersion": "edgebundle/v1", "kind": "Bundle",
        "metadata": {"name": "models-only", "version": "1.0.0", "compatible": "tiny/x86_64"},
        "spec": {"images": [], "manifests": [], "models": [
            {"name": "idx", "kind": "index", "version": "1.0", "path": str(w.models / "idx")}]}}))
    assert bundle("lock", spec).exit_code == 0
    out = tmp_path / "b"
    r = bundle("create", spec, "--key", w.keys["release"].key, "-o", out)
    assert r.exit_code == 0, r.output
    assert envelope_payload(out / ROOT).get("manifests") is None
    r = bundle("verify", out, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == 0, r.output


def test_signed_encoded_layer_of_another_size_is_named(bundles: Bundles, bad_layer: Path, tmp_path: Path) -> None:
    """The layer's inner file is shorter than the signed size: refused, naming model, file and blob."""


    w = bundles.world
    b = private_copy(w.base / "out" / "tok-layer", tmp_path)
    root = envelope_payload(b / ROOT)
    [f] = root["models"][0]["files"]
    short = tmp_path / "tokenizer.json"
    short.write_text('{"model": {"vocab": {}}}')
    layer = tmp_path / "layer"
    with open(layer, "wb") as out:
        write_tar_zstd(short, "tokenizer.json", out, 0)
    digest = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    blob_file(b, f["blob"]).unlink()
    layer.rename(blob_file(b, digest))
    pin = root["blobs"].pop(f["blob"])
    root["blobs"][digest] = {**pin, "digest": digest, "size": blob_file(b, digest).stat().st_size}
    f["blob"] = digest
    resign(b, root, w.keys["release"].key)
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    m = root["models"][0]
    assert f"model {m['name']} {m['version']}, file tokenizer.json (blob {digest[:19]}): compressed layer holds" \
        in r.stderr, r.stderr


# --- plans read by apply: bounded, typed, versioned ----------------------------------------------------



PLAN_LIMIT = 16 * 1024 * 1024  # a plan file is JSON of at most 16 MiB (edgebundle/layout.py MAX_JSON_BYTES)


def test_apply_reads_a_plan_only_up_to_its_size_limit(bundles: Bundles, tmp_path: Path) -> None:
    w = bundles.world
    plan = tmp_path / "plan.json"
    install_and_plan(w.site(tmp_path / "s"), bundles.v100, plan)
    body = plan.read_bytes()
    doc = json.loads(body)
    assert load_plan(plan).hash == doc["planHash"]
    # one byte past the limit, in JSON whitespace after a whole plan: refused by size, not read on
    # (reading the file exactly at the limit takes a minute of JSON pre-scan: not done here)
    plan.write_bytes(body + b" " * (PLAN_LIMIT + 1 - len(body)))
    with pytest.raises(PlanError, match=f"over the {PLAN_LIMIT}-byte limit"):
        load_plan(plan)
    for change, words in (({"_type": "edgebundle.approval"}, "is not an edgebundle plan"),
                          ({"formatVersion": 2}, "has format 2; this installer reads 1")):
        plan.write_text(json.dumps({**doc, **change}))
        with pytest.raises(PlanError, match=words):
            load_plan(plan)
    with pytest.raises(UsageError, match="cannot read plan"):
        load_plan(tmp_path)
    # a field of the wrong type: named with the file and its line (counted here in the text written)
    text = json.dumps({**doc, "revision": "three"}, indent=2, sort_keys=True)
    plan.write_text(text)
    line = 1 + text[:text.index('"revision"')].count("\n")
    with pytest.raises(UsageError) as e:
        load_plan(plan)
    assert e.value.message.startswith(f"plan is invalid: {plan}:{line}: revision: expected an integer"), e.value.message


def test_signed_bundle_digest_failure_is_named_before_a_decode_failure(bundles: Bundles, bad_layer: Path,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker (the decode of the large layer runs first). A blob whose bytes differ from its pin is the
    better message than a layer that does not decode: the digest failure is named, whichever ran first."""
    w = bundles.world
    monkeypatch.setattr(verify_mod, "WORKERS", 1)
    # the layer itself altered: its digest and its decode both fail; the digest failure is named
    b = private_copy(w.base / "out" / "tok-layer", tmp_path, "altered")
    [f] = envelope_payload(b / ROOT)["models"][0]["files"]
    layer = blob_file(b, f["blob"])
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert f"blobs/sha256/{f['blob'].split(':')[1]}" in r.stderr and "decoded" not in r.stderr, r.stderr
    # a layer that decodes to other bytes, and a later member (index.json) altered: index.json is named
    b = private_copy(bad_layer, tmp_path, "both")
    data = bytearray((b / "index.json").read_bytes())
    data[-2] ^= 1
    (b / "index.json").write_bytes(bytes(data))
    r = bundle("verify", b, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY, r.output
    assert "index.json" in r.stderr and "decoded" not in r.stderr, r.stderr


def test_signed_root_that_is_no_envelope_is_named_by_inspect(bundles: Bundles, tmp_path: Path) -> None:
    b = private_copy(bundles.v100, tmp_path)
    (b / ROOT).write_text('{"x": 1}')
    r = bundle("inspect", b)
    assert r.exit_code == EXIT_VERIFY and f"{ROOT} is not a DSSE envelope" in r.stderr, r.output


# --- drift on a real cluster: an object deleted and re-created since the plan ---------------------------

def test_apply_refuses_a_plan_whose_object_was_re_created(bundles: Bundles, kube_cluster: Any,
                                                          tmp_path: Path) -> None:
    """The plan saw the PersistentVolume with one uid; someone deleted and re-created it (same spec):
    the approved plan no longer describes the cluster. The ConfigMap, unchanged, sorts before it."""
    w = bundles.world
    site = w.site(tmp_path / "s")
    doc = yaml.safe_load(site.read_text())
    doc["spec"]["cluster"] = {"kubeconfig": str(tmp_path / "kubeconfig"), "context": "edge"}
    site.write_text(yaml.safe_dump(doc))
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    install_and_plan(site, bundles.v100, first)
    assert installer_cli("approve", first, "--operator", "ops", "--yes").exit_code == 0
    r = installer_cli("apply", first, "--site", site)
    assert r.exit_code == 0, r.output
    install_and_plan(site, bundles.v101, second)
    assert installer_cli("approve", second, "--operator", "ops", "--yes").exit_code == 0
    pv = kube_cluster.get("PersistentVolume", None, "tiny-models")
    uid = pv["metadata"]["uid"]
    kube_cluster.delete("PersistentVolume", None, "tiny-models")
    for _ in range(300):
        if kube_cluster.get("PersistentVolume", None, "tiny-models") is None:
            break
        time.sleep(0.1)
    meta = {k: v for k, v in pv["metadata"].items() if k in ("name", "labels", "annotations")}
    kube_cluster.resource("v1", "PersistentVolume").create(body={**pv, "metadata": meta, "status": {}})
    assert kube_cluster.get("PersistentVolume", None, "tiny-models")["metadata"]["uid"] != uid
    r = installer_cli("apply", second, "--site", site)
    assert r.exit_code == 1 and "drifted" in r.output, r.output
    assert "PersistentVolume/tiny-models was re-created" in r.output, r.output


def test_signed_root_and_its_envelope_are_kept_exactly(bundles: Bundles, tmp_path: Path) -> None:
    """The installer keeps the verified root and the exact envelope that was checked (offline deltas and
    renders rely on them), under the sha256 of the root."""
    w = bundles.world
    r = installer_cli("verify", bundles.v100, "--site", w.site(tmp_path / "s"))
    assert r.exit_code == 0, r.output
    envelope = (bundles.v100 / ROOT).read_bytes()
    payload = base64.b64decode(json.loads(envelope)["payload"])
    kept = tmp_path / "s" / "state" / "bundles" / hashlib.sha256(payload).hexdigest()
    assert (kept / "root.dsse.json").read_bytes() == envelope
    assert (kept / "root.json").read_bytes() == payload


def test_signed_delta_verifies_and_stages_onto_its_base(bundles: Bundles, delta_case: DeltaCase,
                                                        tmp_path: Path) -> None:
    """The control for the delta refusals: the intact delta passes `bundle verify` (patches proven) and
    stages the target's tokenizer, byte for byte the builder's input, onto a site holding the base."""
    w = bundles.world
    r = bundle("verify", delta_case.delta, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == 0, r.output
    # rebuilt against its base: the full target, checked against the full target's pins
    r = bundle("verify", delta_case.delta, "--base", delta_case.base, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == 0, r.output
    site = w.site(tmp_path / "s")
    for verb in ("load", "stage"):
        assert installer_cli(verb, delta_case.base, "--site", site).exit_code == 0
    r = installer_cli("stage", delta_case.delta, "--site", site)
    assert r.exit_code == 0, r.output
    staged = tmp_path / "s" / "nas" / "embeddings" / "tok" / "1.2" / "tokenizer.json"
    good = w.base / "tok" / "good" / "tokenizer.json"
    assert hashlib.sha256(staged.read_bytes()).digest() == hashlib.sha256(good.read_bytes()).digest()


def test_approval_of_the_wrong_shape_is_named_with_its_file(tmp_path: Path) -> None:
    doc = {**approval.make_approval(plan(), "ops", now=T0), "revision": "three"}
    state = record(tmp_path, doc)
    with pytest.raises(UsageError) as e:
        approval.check_approval(state, plan(), now=T0)
    path = tmp_path / "state" / "approvals" / ("ab" * 32 + ".json")
    assert e.value.message.startswith(f"approval is invalid: {path}"), e.value.message
    assert "revision" in e.value.message


def test_signed_delta_with_a_carried_manifest_bomb_is_refused(bundles: Bundles, tmp_path: Path) -> None:
    """A signed delta that does not carry its first manifest (a.yaml) but carries the second (b.yaml),
    an alias bomb: the carried one is still parsed within bounds, and refused, by `bundle verify`."""
    w = bundles.world
    bomb = BILLION_LAUGHS
    built = {}
    for version, data in (("5.0.0", "1"), ("5.1.0", "2")):
        mdir = tmp_path / f"manifests-{version}"
        mdir.mkdir()
        (mdir / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n")
        (mdir / "b.yaml").write_text(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b, namespace: default}}\n"
                                     f"data: {{v: \"{data}\"}}\n")
        spec = tmp_path / f"spec-{version}.yaml"
        spec.write_text(json.dumps({
            "apiVersion": "edgebundle/v1", "kind": "Bundle",
            "metadata": {"name": "two-manifests", "version": version, "compatible": "tiny/x86_64"},
            "spec": {"images": [], "manifests": [str(mdir)], "models": []}}))
        assert bundle("lock", spec).exit_code == 0
        extra = ("--base", built["5.0.0"]) if built else ()
        out = tmp_path / f"b-{version}"
        r = bundle("create", spec, "--key", w.keys["release"].key, "-o", out, *extra)
        assert r.exit_code == 0, r.output
        built[version] = out
    delta = built["5.1.0"]
    root = envelope_payload(delta / ROOT)
    unpack_delta(delta, root)  # every manifest carried whole, as a delta of the pre-pack form
    files = root["manifests"]["files"]
    assert [f["path"] for f in files] == ["a.yaml", "b.yaml"]
    carried = root["delta"]["carried"]
    # the builder carries every manifest; a (signed, hostile) delta may leave the first one out
    first = files[0]["digest"]
    del carried[first]
    blob_file(delta, first).unlink()
    root["delta"]["rebuild"][first] = {
        **{k: v for k, v in root["delta"]["rebuild"][first].items() if k not in ("carriedBytes",)},
        "method": "base", "carriedBytes": 0, "from": {"digest": first, "size": files[0]["size"], "at": {
            "registry": {"repository": "library/anything", "endpoint": "blobs"}}}}
    old = files[1]["digest"]
    digest = "sha256:" + hashlib.sha256(bomb).hexdigest()
    blob_file(delta, old).unlink()
    blob_file(delta, digest).write_bytes(bomb)
    root["blobs"][digest] = {**root["blobs"].pop(old), "digest": digest, "size": len(bomb)}
    carried[digest] = {**carried.pop(old), "size": len(bomb)}
    rebuild = root["delta"]["rebuild"]
    rebuild[digest] = {**rebuild.pop(old), "size": len(bomb), "carriedBytes": len(bomb)}
    files[1].update(digest=digest, size=len(bomb))
    resign(delta, root, w.keys["release"].key)
    r = bundle("verify", delta, "--pubkey", w.keys["release"].pub)
    assert r.exit_code == EXIT_VERIFY and "manifest b.yaml" in r.stderr and "not safe to parse" in r.stderr, r.output
