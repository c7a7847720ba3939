"""Signed trust updates: rotate or revoke the keys a site trusts, carried on media like a bundle.

A trust update (``bundle trust rotate``) is a DSSE envelope (payloadType
``application/vnd.edgebundle.trust.v1+json``, edgebundle/signing.py) whose payload is::

    {"_type": "edgebundle.trust", "version": N, "threshold": K, "created": T,
     "keys": [{"keyid": HEX, "publicKey": PEM}, ...]}

A site applies it with ``installer trust update`` (installer/trust.py); from then on only the new
key set and threshold count. Revocation is an update whose key set leaves the key out.

Invariants (TUF's root-rotation rules):
- An update is accepted only against the trust it replaces: signed by at least the current
  threshold of the current keys, with a version strictly greater than the current one (so an old
  update cannot be replayed to bring back a revoked key).
- It must also be signed by its own threshold of the new keys, proving they exist and are held,
  so a typo in the key list cannot lock a site out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgebundle import mediatypes as mt
from edgebundle.errors import UsageError, VerificationError
from edgebundle.layout import envelope_limit
from edgebundle.root import canonical_json, format_time, load_json_bounded
from edgebundle.signing import TrustStore, keyid, parse_envelope, sign

TRUST_TYPE = "edgebundle.trust"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_UPDATE_BYTES = envelope_limit(MAX_PAYLOAD_BYTES)
_MAX_KEYS = 64


class TrustUpdateError(VerificationError):
    """A trust update is malformed, not newer, or not signed by enough current or new keys."""


@dataclass(frozen=True)
class TrustState:
    """The keys a site trusts now, how many must sign, and the version of that decision."""

    version: int
    store: TrustStore


def _pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def make_update(new_keys: list[Ed25519PublicKey], threshold: int, version: int,
                sign_with: list[Ed25519PrivateKey], now: float | None = None) -> bytes:
    """The signed update to ``new_keys`` (k = ``threshold``) as trust version ``version``."""
    store = TrustStore(new_keys, threshold)  # refuses an empty set or an impossible threshold
    if version < 2:
        raise UsageError(f"trust version {version} is too low: a site file's own trust is version 1",
                         hint="give each update a higher --version than the site's current trust")
    signer_ids = {keyid(k.public_key()) for k in sign_with}
    if len(signer_ids & set(store.keys)) < threshold:
        raise UsageError(f"the update must also be signed by {threshold} of the new keys "
                         f"({len(signer_ids & set(store.keys))} given)",
                         hint="add the new keys' private halves to --sign-with")
    payload = canonical_json({
        "_type": TRUST_TYPE, "version": version, "threshold": threshold,
        "created": format_time(time.time() if now is None else now),
        "keys": [{"keyid": kid, "publicKey": _pem(k)} for kid, k in sorted(store.keys.items())],
    })
    return sign(payload, mt.PAYLOAD_TRUST, sign_with)


def _parse_payload(payload: bytes, what: str) -> tuple[int, TrustStore]:
    doc: Any = load_json_bounded(payload, what, MAX_PAYLOAD_BYTES)
    if not isinstance(doc, dict) or doc.get("_type") != TRUST_TYPE or \
            set(doc) != {"_type", "version", "threshold", "created", "keys"}:
        raise TrustUpdateError(f"{what} is not an {TRUST_TYPE} document (_type, version, threshold, created, keys)")
    version, threshold, keys = doc["version"], doc["threshold"], doc["keys"]
    if not isinstance(version, int) or isinstance(version, bool) or not 2 <= version < 2**53:
        raise TrustUpdateError(f"{what}: version must be an integer of at least 2")
    if not isinstance(keys, list) or not 1 <= len(keys) <= _MAX_KEYS:
        raise TrustUpdateError(f"{what}: keys must list 1 to {_MAX_KEYS} public keys")
    parsed: list[Ed25519PublicKey] = []
    for i, k in enumerate(keys):
        if not isinstance(k, dict) or set(k) != {"keyid", "publicKey"} or not isinstance(k["publicKey"], str):
            raise TrustUpdateError(f"{what}: keys[{i}] is not {{keyid, publicKey}}")
        try:
            pub = serialization.load_pem_public_key(k["publicKey"].encode())
        except ValueError:
            raise TrustUpdateError(f"{what}: keys[{i}] is not a PEM public key") from None
        if not isinstance(pub, Ed25519PublicKey) or keyid(pub) != k["keyid"]:
            raise TrustUpdateError(f"{what}: keys[{i}] is not an Ed25519 key with keyid {str(k['keyid'])[:16]}")
        parsed.append(pub)
    if len({keyid(k) for k in parsed}) != len(parsed):
        raise TrustUpdateError(f"{what}: a key is listed twice")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= len(parsed):
        raise TrustUpdateError(f"{what}: threshold must be between 1 and {len(parsed)}")
    return version, TrustStore(parsed, threshold)


def apply_update(current: TrustState, data: bytes, what: str) -> TrustState:
    """The trust after the update ``data``, checked against ``current``; raise if it does not hold."""
    env = parse_envelope(data, what, mt.PAYLOAD_TRUST, MAX_UPDATE_BYTES)
    try:
        current.store.check(env, what)  # 1. the keys trusted now authorise the change
    except VerificationError as e:
        raise TrustUpdateError(f"{e.message} (the site's current trust, version {current.version})",
                               hint="a trust update must be signed by the site's current keys; a site "
                                    "that lost them must be re-provisioned by hand (docs/SECURITY.md)") from None
    version, store = _parse_payload(env.payload, what)
    if version <= current.version:
        raise TrustUpdateError(f"{what} is trust version {version}, not newer than the site's {current.version}",
                               hint="an old update cannot be applied again; ask for a new one with a higher --version")
    try:
        store.check(env, what)  # 2. the new keys exist and are held
    except VerificationError as e:
        raise TrustUpdateError(f"{e.message} (the new keys must sign their own update)") from None
    return TrustState(version, store)


def describe(state: TrustState) -> dict[str, Any]:
    return {"version": state.version, "threshold": state.store.threshold, "keys": sorted(state.store.keys)}


__all__ = ["MAX_UPDATE_BYTES", "TRUST_TYPE", "TrustState", "TrustUpdateError", "apply_update", "describe",
           "make_update"]
