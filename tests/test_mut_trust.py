"""Trust updates (key rotation and revocation) and the site's trust chain, rule by rule: the ``trust``
group of the mutation run of the trust core (docs/mutation-notes/trust.md).

Updates are built here with the independent DSSE signer of tests/fixtures/dsse.py (payloads written
as literal JSON), so each rule of edgebundle/trustupdate.py and installer/trust.py is tested against
documents the product did not make; key ids come from ``hashlib`` (``dsse.raw_keyid``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgebundle import trustupdate
from edgebundle.errors import UsageError, VerificationError
from edgebundle.signing import TrustStore
from installer import trust
from installer.site import ClusterTarget, Site
from installer.state import StateDir
from tests.fixtures import dsse

TYPE = "application/vnd.edgebundle.trust.v1+json"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def kid(seed: int) -> str:
    return dsse.raw_keyid(key(seed).public_key())


def pem(seed: int) -> str:
    return key(seed).public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def payload(version: int, threshold: Any, seeds: list[int], /, **change: Any) -> dict[str, Any]:
    doc = {"_type": "edgebundle.trust", "version": version, "threshold": threshold,
           "created": "2026-01-01T00:00:00Z", "keys": [{"keyid": kid(s), "publicKey": pem(s)} for s in seeds]}
    doc.update(change)
    return {k: v for k, v in doc.items() if v is not None}


def update(doc: Any, signers: list[int], ptype: str = TYPE) -> bytes:
    """A DSSE envelope of ``doc`` signed here by each seed's key."""
    body = json.dumps(doc).encode()
    return json.dumps({"payload": base64.b64encode(body).decode(), "payloadType": ptype,
                       "signatures": [{"keyid": kid(s), "sig": base64.b64encode(key(s).sign(dsse.pae(ptype, body))).decode()}
                                      for s in signers]}).encode()


def state_of(version: int, seeds: list[int], threshold: int = 1) -> trustupdate.TrustState:
    return trustupdate.TrustState(version, TrustStore([key(s).public_key() for s in seeds], threshold))


def apply(current: trustupdate.TrustState, data: bytes) -> trustupdate.TrustState:
    return trustupdate.apply_update(current, data, "the update")


# --- making an update --------------------------------------------------------------------------------

def test_trust_update_made_by_the_builder_is_dsse_with_the_documented_payload() -> None:
    data = trustupdate.make_update([key(3).public_key(), key(2).public_key()], 2, 5, [key(1), key(2), key(3)], now=T0)
    doc = dsse.dsse_verify(data, key(1).public_key(), TYPE)
    assert doc == {"_type": "edgebundle.trust", "version": 5, "threshold": 2, "created": "2026-01-01T00:00:00Z",
                   "keys": sorted([{"keyid": kid(2), "publicKey": pem(2)}, {"keyid": kid(3), "publicKey": pem(3)}],
                                  key=lambda k: k["keyid"])}
    assert sorted(s["keyid"] for s in json.loads(data)["signatures"]) == sorted([kid(1), kid(2), kid(3)])
    fresh = dsse.dsse_verify(trustupdate.make_update([key(2).public_key()], 1, 2, [key(2)]), key(2).public_key(), TYPE)
    assert fresh["created"] != "2026-01-01T00:00:00Z"  # the clock


def test_trust_update_version_must_be_above_the_site_files() -> None:
    with pytest.raises(UsageError, match="trust version 1 is too low"):
        trustupdate.make_update([key(2).public_key()], 1, 1, [key(2)])
    assert trustupdate.make_update([key(2).public_key()], 1, 2, [key(2)])


def test_trust_update_must_be_signed_by_its_own_threshold_of_new_keys() -> None:
    new = [key(2).public_key(), key(3).public_key()]
    with pytest.raises(UsageError, match=r"signed by 2 of the new keys \(1 given\)"):
        trustupdate.make_update(new, 2, 2, [key(1), key(2)])
    assert trustupdate.make_update(new, 2, 2, [key(2), key(3)])
    with pytest.raises(UsageError, match="between 1 and 2"):
        trustupdate.make_update(new, 3, 2, [key(2), key(3)])


# --- applying an update: TUF's root-rotation rules --------------------------------------------------------

def test_trust_update_rotates_to_the_new_keys() -> None:
    new = apply(state_of(1, [1]), update(payload(2, 1, [2]), [1, 2]))
    assert new.version == 2 and sorted(new.store.keys) == [kid(2)] and new.store.threshold == 1
    assert trustupdate.describe(new) == {"version": 2, "threshold": 1, "keys": [kid(2)]}
    # revocation: 2-of-{1,2} becomes 1-of-{2}; the revoked key 1 no longer counts
    after = apply(state_of(3, [1, 2], 2), update(payload(4, 1, [2]), [1, 2]))
    assert sorted(after.store.keys) == [kid(2)]


def test_trust_update_not_signed_by_the_current_keys_is_refused() -> None:
    with pytest.raises(trustupdate.TrustUpdateError) as e:
        apply(state_of(1, [1]), update(payload(2, 1, [2]), [2]))
    assert "current trust, version 1" in e.value.message
    # the current threshold counts: one of two current keys is not enough for a 2-of-2 site
    with pytest.raises(trustupdate.TrustUpdateError, match="current trust, version 1"):
        apply(state_of(1, [1, 3], 2), update(payload(2, 1, [2]), [1, 2]))
    assert apply(state_of(1, [1, 3], 2), update(payload(2, 1, [2]), [1, 3, 2])).version == 2


def test_trust_update_must_be_newer_than_the_current_trust() -> None:
    for version in (2, 3):
        with pytest.raises(trustupdate.TrustUpdateError, match=f"trust version {version}, not newer than the site's 3"):
            apply(state_of(3, [1]), update(payload(version, 1, [2]), [1, 2]))
    assert apply(state_of(3, [1]), update(payload(4, 1, [2]), [1, 2])).version == 4


def test_trust_update_new_keys_must_sign_their_own_update() -> None:
    with pytest.raises(trustupdate.TrustUpdateError, match="the new keys must sign their own update"):
        apply(state_of(1, [1]), update(payload(2, 1, [2]), [1]))
    with pytest.raises(trustupdate.TrustUpdateError, match="new keys must sign"):
        apply(state_of(1, [1]), update(payload(2, 2, [2, 3]), [1, 2]))
    assert apply(state_of(1, [1]), update(payload(2, 2, [2, 3]), [1, 2, 3])).store.threshold == 2


def test_trust_update_forged_under_a_current_key_id_is_refused() -> None:
    data = dsse.forge(update(payload(2, 1, [2]), [2]), key(9), key(1).public_key())
    with pytest.raises(trustupdate.TrustUpdateError, match="does not match"):
        apply(state_of(1, [1]), data)


def test_trust_update_of_another_payload_type_is_refused() -> None:
    with pytest.raises(VerificationError, match="payloadType"):
        apply(state_of(1, [1]), update(payload(2, 1, [2]), [1, 2], ptype="application/vnd.edgebundle.root.v1+json"))


BAD_PAYLOADS = [
    ([1, 2], "is not an edgebundle.trust document"),
    (payload(2, 1, [2], _type="edgebundle.root"), "is not an edgebundle.trust document"),
    (payload(2, 1, [2], extra=1), "is not an edgebundle.trust document"),
    (payload(2, 1, [2], created=None), "is not an edgebundle.trust document"),
    (payload(2, 1, [2], version=True), "version must be an integer"),
    (payload(2, 1, [2], version="2"), "version must be an integer"),
    (payload(2, 1, [2], version=1), "version must be an integer of at least 2"),
    (payload(2, 1, [2], version=2**53), "version must be an integer"),
    (payload(2, 1, [2], keys=[]), "keys must list 1 to 64"),
    (payload(2, 1, [2], keys={"keyid": "x"}), "keys must list 1 to 64"),
    (payload(2, 1, [2], keys=[{"keyid": kid(2), "publicKey": pem(2)}] * 65), "keys must list 1 to 64"),
    (payload(2, 1, [2], keys=["x"]), r"keys\[0\] is not \{keyid, publicKey\}"),
    (payload(2, 1, [2], keys=[{"keyid": kid(2)}]), r"keys\[0\] is not \{keyid, publicKey\}"),
    (payload(2, 1, [2], keys=[{"keyid": kid(2), "publicKey": 5}]), r"keys\[0\] is not \{keyid, publicKey\}"),
    (payload(2, 1, [2], keys=[{"keyid": kid(2), "publicKey": pem(2), "x": 1}]), r"keys\[0\] is not \{"),
    (payload(2, 1, [2], keys=[{"keyid": kid(2), "publicKey": "not a key"}]), r"keys\[0\] is not a PEM public key"),
    (payload(2, 1, [2], keys=[{"keyid": kid(2), "publicKey": pem(2)}, {"keyid": kid(2), "publicKey": pem(3)}]),
     r"keys\[1\] is not an Ed25519 key with keyid " + kid(2)[:16]),
    (payload(2, 1, [2, 2]), "a key is listed twice"),
    (payload(2, 0, [2]), "threshold must be between 1 and 1"),
    (payload(2, 2, [2]), "threshold must be between 1 and 1"),
    (payload(2, True, [2]), "threshold must be between"),
    (payload(2, "1", [2]), "threshold must be between"),
]


@pytest.mark.parametrize("doc, words", BAD_PAYLOADS)
def test_trust_update_malformed_payload_is_refused(doc: Any, words: str) -> None:
    with pytest.raises(trustupdate.TrustUpdateError, match=words):
        apply(state_of(1, [1]), update(doc, [1, 2]))


def test_trust_update_with_64_keys_is_accepted() -> None:
    seeds = list(range(2, 66))
    assert len(apply(state_of(1, [1]), update(payload(2, 1, seeds), [1, 2])).store.keys) == 64


def test_trust_update_key_of_another_algorithm_is_refused() -> None:

    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(trustupdate.TrustUpdateError, match=r"keys\[0\] is not an Ed25519 key"):
        apply(state_of(1, [1]), update(payload(2, 1, [2], keys=[{"keyid": kid(2), "publicKey": other}]), [1, 2]))


# --- the site's trust chain (installer/trust.py) -----------------------------------------------------------

def site(tmp_path: Path, seeds: list[int], threshold: int = 1, version: int = 1) -> Site:
    paths = []
    for s in seeds:
        p = tmp_path / "keys" / f"{s}.pub"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(pem(s))
        paths.append(p)
    return Site(path=None, name="plant-1", compatible="tiny/x86_64", trust_keys=tuple(paths),
                trust_threshold=threshold, registry_address="127.0.0.1:9", registry_plain_http=True,
                models_root=tmp_path / "nas", nfs_server=None, nfs_path=None, state_dir=tmp_path / "state",
                cluster=ClusterTarget(), trust_version=version)


def store_update(tmp_path: Path, name: str, data: bytes) -> Path:
    d = tmp_path / "state" / "trust"
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    return d / name


def chain(tmp_path: Path, last: int) -> None:
    """Updates 2..last, each rotating to the next key (key v holds trust version v)."""
    for v in range(2, last + 1):
        store_update(tmp_path, f"{v}.dsse.json", update(payload(v, 1, [v]), [v - 1, v]))


def test_trust_chain_applies_stored_updates_in_numeric_order(tmp_path: Path) -> None:
    chain(tmp_path, 11)  # 10 and 11 sort before 2 as text
    store_update(tmp_path, "notes.txt", b"x")
    store_update(tmp_path, "12.dsse.json.tmp", b"x")
    now = trust.current_trust(site(tmp_path, [1]), StateDir(tmp_path / "state"))
    assert now.version == 11 and sorted(now.store.keys) == [kid(11)]
    assert sorted(trust.site_trust(site(tmp_path, [1]), StateDir(tmp_path / "state")).keys) == [kid(11)]


def test_trust_chain_without_updates_is_the_site_files(tmp_path: Path) -> None:
    now = trust.current_trust(site(tmp_path, [1, 2], threshold=2), StateDir(tmp_path / "state"))
    assert (now.version, sorted(now.store.keys), now.store.threshold) == (1, sorted([kid(1), kid(2)]), 2)


def test_trust_chain_skips_updates_the_site_file_supersedes(tmp_path: Path) -> None:
    chain(tmp_path, 3)
    store_update(tmp_path, "2.dsse.json", b"garbage: superseded, never read")
    now = trust.current_trust(site(tmp_path, [2], version=2), StateDir(tmp_path / "state"))
    assert now.version == 3 and sorted(now.store.keys) == [kid(3)]
    now = trust.current_trust(site(tmp_path, [3], version=3), StateDir(tmp_path / "state"))
    assert now.version == 3 and sorted(now.store.keys) == [kid(3)]


def test_trust_chain_with_a_broken_link_is_an_error_not_a_skip(tmp_path: Path) -> None:
    chain(tmp_path, 3)
    store_update(tmp_path, "2.dsse.json", update(payload(2, 1, [2]), [2]))  # not signed by key 1
    with pytest.raises(trustupdate.TrustUpdateError) as e:
        trust.current_trust(site(tmp_path, [1]), StateDir(tmp_path / "state"))
    assert "the state directory's trust chain is broken" in e.value.message
    assert str(tmp_path / "state" / "trust" / "2.dsse.json") in e.value.message


def test_trust_chain_update_stored_under_another_version_is_refused(tmp_path: Path) -> None:
    store_update(tmp_path, "5.dsse.json", update(payload(4, 1, [2]), [1, 2]))
    with pytest.raises(trustupdate.TrustUpdateError, match="holds version 4, not 5"):
        trust.current_trust(site(tmp_path, [1]), StateDir(tmp_path / "state"))


def test_trust_accepted_update_is_kept_and_then_counts(tmp_path: Path) -> None:
    s, state = site(tmp_path, [1]), StateDir(tmp_path / "state")
    data = update(payload(2, 1, [2]), [1, 2])
    (tmp_path / "upd.json").write_bytes(data)
    new = trust.accept_update(s, state, tmp_path / "upd.json")
    assert new.version == 2
    assert (tmp_path / "state" / "trust" / "2.dsse.json").read_bytes() == data
    assert sorted(trust.site_trust(s, state).keys) == [kid(2)]
    # replaying it is refused (not newer); nothing else is stored
    with pytest.raises(trustupdate.TrustUpdateError, match="not newer"):
        trust.accept_update(s, state, tmp_path / "upd.json")
    assert sorted(p.name for p in (tmp_path / "state" / "trust").iterdir()) == ["2.dsse.json"]


def test_trust_update_versions_far_above_two_are_accepted() -> None:
    assert apply(state_of(1, [1]), update(payload(2**52, 1, [2]), [1, 2])).version == 2**52


def test_trust_update_refusals_name_the_update() -> None:
    with pytest.raises(trustupdate.TrustUpdateError) as e:
        apply(state_of(1, [1]), update(payload(2, 1, [2]), [1]))
    assert e.value.message.startswith("the update: 0 valid signature(s) by trusted keys, 1 required")
    body = b"{not json"
    data = json.dumps({"payload": base64.b64encode(body).decode(), "payloadType": TYPE, "signatures": [
        {"keyid": kid(1), "sig": base64.b64encode(key(1).sign(dsse.pae(TYPE, body))).decode()}]}).encode()
    with pytest.raises(VerificationError) as e:
        apply(state_of(1, [1]), data)
    assert "the update" in e.value.message
    with pytest.raises(VerificationError) as e:
        apply(state_of(1, [1]), b"[]")
    assert "the update" in e.value.message


def test_trust_update_payload_is_bounded() -> None:
    """A valid update padded (JSON whitespace) one byte past the payload limit is refused by size."""
    body = json.dumps(payload(2, 1, [2])).encode()
    for size, ok in ((trustupdate.MAX_PAYLOAD_BYTES, True), (trustupdate.MAX_PAYLOAD_BYTES + 1, False)):
        padded = body + b" " * (size - len(body))
        data = json.dumps({"payload": base64.b64encode(padded).decode(), "payloadType": TYPE, "signatures": [
            {"keyid": kid(s), "sig": base64.b64encode(key(s).sign(dsse.pae(TYPE, padded))).decode()}
            for s in (1, 2)]}).encode()
        if ok:
            assert apply(state_of(1, [1]), data).version == 2
        else:
            with pytest.raises(VerificationError, match=f"the update is {size} bytes, over the"):
                apply(state_of(1, [1]), data)


def test_trust_update_files_are_bounded(tmp_path: Path) -> None:
    s, state = site(tmp_path, [1]), StateDir(tmp_path / "state")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (trustupdate.MAX_UPDATE_BYTES + 1))
    with pytest.raises(UsageError, match=f"trust update {big} is over the {trustupdate.MAX_UPDATE_BYTES}-byte"):
        trust.accept_update(s, state, big)
    stored = store_update(tmp_path, "2.dsse.json", big.read_bytes())
    with pytest.raises(VerificationError, match=f"stored trust update {stored} is over the"):
        trust.current_trust(s, state)
    stored.write_bytes(b" " * trustupdate.MAX_UPDATE_BYTES)  # at the limit: read, then refused as no envelope
    with pytest.raises(trustupdate.TrustUpdateError, match="trust chain is broken"):
        trust.current_trust(s, state)


def test_trust_accept_refusal_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "upd-7.json").write_bytes(update(payload(2, 1, [2]), [2]))
    with pytest.raises(trustupdate.TrustUpdateError) as e:
        trust.accept_update(site(tmp_path, [1]), StateDir(tmp_path / "state"), tmp_path / "upd-7.json")
    assert e.value.message.startswith("trust update upd-7.json:")
    assert not (tmp_path / "state" / "trust").exists()
