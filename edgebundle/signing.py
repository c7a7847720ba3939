"""Ed25519 keys, the one signature envelope (DSSE), and the k-of-n trust store.

Everything edgebundle signs (the bundle root, the part index, approvals, staging validation
records, trust updates) travels in a DSSE envelope (https://github.com/secure-systems-lab/dsse,
the envelope in-toto, TUF and Sigstore use): ``{"payload": base64, "payloadType": ...,
"signatures": [{"keyid", "sig"}]}``. :func:`sign` makes one, :func:`verify` checks one; nothing
else signs or checks a signature.

Invariants:
- A signature covers PAE(payloadType, payload) (DSSE's pre-authentication encoding) over the exact
  payload bytes; nothing is re-serialised, and a payload of one type never verifies as another.
- A key is identified by ``keyid`` = sha256 of its raw 32-byte public key, so the same key always
  has the same id whatever file it came from.
- :meth:`TrustStore.check` counts only distinct trusted keys with a valid signature; signatures
  by unknown keys are ignored, not errors, but never count toward the threshold.
- A payload type ending in ``+zstd`` (``mediatypes.PAYLOAD_ZSTD_SUFFIX``) carries its document zstd-compressed:
  the signatures cover the compressed bytes exactly as carried, and the document is decompressed
  (bounded, :meth:`Envelope.document`) only after :func:`verify` checked them, so a bomb in an
  unsigned or untrusted envelope is never even decoded. A reader accepts it only where it names
  that type among the ones it expects.
- Envelopes are parsed bounded and strictly; a pre-DSSE document (a bare ``_type`` document with a
  detached or embedded signature) is refused as the old format, never guessed at.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgebundle import mediatypes as mt
from edgebundle.digest import read_bounded
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.layout import MAX_JSON_BYTES
from edgebundle.patch import decompress_bounded
from edgebundle.root import canonical_json, load_json_bounded

PASSPHRASE_ENV = "EDGEBUNDLE_KEY_PASSPHRASE"


class UnsignedError(VerificationError):
    """The bundle carries no signature at all."""


class UntrustedError(VerificationError):
    """Signatures exist, but not enough of them are valid and by trusted keys."""


def keyid(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate_keypair(name: str, out_dir: Path, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PKCS#8 PEM, encrypted when a passphrase is given) and ``NAME.pub``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise UsageError(f"{p} already exists", hint="choose another NAME or --out directory")
    key = Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """Load a signing key; the passphrase may also come from $EDGEBUNDLE_KEY_PASSPHRASE."""
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    try:
        data = read_bounded(Path(path), MAX_KEY_BYTES, "key file")
        key = serialization.load_pem_private_key(data, password=passphrase)
    except FileNotFoundError:
        raise UsageError(f"signing key {path} does not exist",
                         hint="create one with: bundle keygen NAME --out DIR") from None
    except TypeError:
        raise UsageError(f"signing key {path} is passphrase-protected",
                         hint=f"pass --passphrase-file or set {PASSPHRASE_ENV}") from None
    except ValueError as e:
        raise UsageError(f"cannot load signing key {path}: {e}",
                         hint="check the passphrase and that the file is a PEM Ed25519 key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(read_bounded(Path(path), MAX_KEY_BYTES, "public key file"))
    except FileNotFoundError:
        raise UsageError(f"public key {path} does not exist") from None
    except ValueError as e:
        raise UsageError(f"{path} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


class MalformedEnvelopeError(UnsignedError):
    """A signed document is not a well-formed DSSE envelope."""


class LegacyFormatError(VerificationError):
    """A document in the pre-DSSE format (nothing was released in it; it is not read)."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what each signature actually covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign(payload: bytes, payload_type: str, keys: list[Ed25519PrivateKey]) -> bytes:
    """The DSSE envelope of ``payload`` signed by each key; canonical JSON, deterministic."""
    if not keys:
        raise UsageError("nothing to sign with: no signing key given", hint="pass --key KEY")
    message = pae(payload_type, payload)
    sigs = sorted(({"keyid": keyid(k.public_key()), "sig": base64.b64encode(k.sign(message)).decode()}
                   for k in keys), key=lambda s: s["keyid"])
    return _envelope(payload, payload_type, sigs)


def unsigned(payload: bytes, payload_type: str) -> bytes:
    """An envelope with no signature (an approval made without an operator key)."""
    return _envelope(payload, payload_type, [])


def _envelope(payload: bytes, payload_type: str, sigs: list[dict[str, str]]) -> bytes:
    return canonical_json({"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
                           "signatures": sigs})


@dataclass(frozen=True)
class Envelope:
    """A parsed (not yet verified) DSSE envelope."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def document(self, limit: int = MAX_JSON_BYTES) -> bytes:
        """The signed document: the payload, decompressed (at most ``limit`` bytes) when its type
        ends in ``+zstd``. Not verified unless the envelope came through :func:`verify`."""
        if not self.payload_type.endswith(mt.PAYLOAD_ZSTD_SUFFIX):
            return self.payload
        return decompress_bounded(self.payload, limit, f"the {self.payload_type} payload")

    @property
    def signer_ids(self) -> list[str]:
        """The key ids the envelope *claims* (unverified; for display only)."""
        return sorted({s.keyid for s in self.signatures})


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEnvelopeError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEnvelopeError(
            f"{what} is not base64", hint="the document was altered or damaged; copy it again from where it was made"
        ) from None


def parse_envelope(data: bytes, what: str, payload_type: str | tuple[str, ...], limit: int) -> Envelope:
    """Parse ``data`` as a DSSE envelope of ``payload_type`` (or one of several; bounded, strict);
    nothing is verified or decompressed."""
    accepted = (payload_type,) if isinstance(payload_type, str) else payload_type
    doc = load_json_bounded(data, what, limit)
    if isinstance(doc, dict) and "payloadType" not in doc and "_type" in doc:
        raise LegacyFormatError(
            f"{what} is a bare {str(doc['_type'])[:40]!r} document: the pre-DSSE format, which this "
            "edgebundle no longer reads",
            hint="make it again with this edgebundle (every signed document is now a DSSE envelope)")
    if not isinstance(doc, dict) or set(doc) != {"payload", "payloadType", "signatures"}:
        raise MalformedEnvelopeError(f"{what} is not a DSSE envelope (payload, payloadType, signatures)")
    if doc["payloadType"] not in accepted:
        raise MalformedEnvelopeError(
            f"{what} carries payloadType {str(doc['payloadType'])[:80]!r}, expected "
            + " or ".join(map(repr, accepted)),
            hint="this is a different kind of signed document")
    payload = _b64(doc["payload"], f"{what}: payload")
    if not isinstance(doc["signatures"], list):
        raise MalformedEnvelopeError(f"{what}: signatures is not a list")
    sigs = []
    for i, s in enumerate(doc["signatures"]):
        if not isinstance(s, dict) or set(s) != {"keyid", "sig"} or not isinstance(s["keyid"], str):
            raise MalformedEnvelopeError(f"{what}: signature {i} is not {{keyid, sig}}")
        sigs.append(Signature(s["keyid"], _b64(s["sig"], f"{what}: signature {i}")))
    return Envelope(payload, doc["payloadType"], tuple(sigs))


@dataclass(frozen=True)
class Verified:
    """A payload whose envelope met the trust threshold, and who signed it."""

    payload: bytes  # the document (decompressed when the payload type says so)
    signers: list[str]


def verify(data: bytes, payload_type: str | tuple[str, ...], trust: "TrustStore", what: str,
           limit: int) -> Verified:
    """The document of the envelope ``data``, once ``trust``'s threshold of its keys signed it
    (the signatures first: a compressed payload is decoded only after they check)."""
    env = parse_envelope(data, what, payload_type, limit)
    signers = trust.check(env, what)
    return Verified(env.document(), signers)


class TrustStore:
    """The public keys a verifier accepts, and how many of them must sign (k of n)."""

    def __init__(self, keys: list[Ed25519PublicKey], threshold: int = 1) -> None:
        if not keys:
            raise UsageError("no trusted public keys given",
                             hint="pass --pubkey PUB (builder) or list spec.trust.keys in the site file")
        self.keys = {keyid(k): k for k in keys}
        if not 1 <= threshold <= len(self.keys):
            raise UsageError(f"trust threshold {threshold} must be between 1 and {len(self.keys)}")
        self.threshold = threshold

    @classmethod
    def from_files(cls, paths: list[Path], threshold: int = 1) -> "TrustStore":
        return cls([load_public_key(p) for p in paths], threshold)

    def check(self, envelope: Envelope, what: str = "the document") -> list[str]:
        """Return the keyids of trusted valid signers; raise unless the threshold is met."""
        if not envelope.signatures:
            raise UnsignedError(f"{what} is not signed",
                                hint="sign it on the build host: bundle create ... --key KEY")
        message = pae(envelope.payload_type, envelope.payload)
        good: set[str] = set()
        bad: list[str] = []
        for s in envelope.signatures:
            key = self.keys.get(s.keyid)
            if key is None or s.keyid in good:
                continue
            try:
                key.verify(s.sig, message)
                good.add(s.keyid)
            except InvalidSignature:
                bad.append(s.keyid[:16])
        if len(good) >= self.threshold:
            return sorted(good)
        if bad:
            raise UntrustedError(
                f"{what}: signature by trusted key {', '.join(bad)} does not match its payload",
                hint="the document or its signature was altered; do not use it")
        signers = ", ".join(s.keyid[:16] for s in envelope.signatures)
        raise UntrustedError(
            f"{what}: {len(good)} valid signature(s) by trusted keys, {self.threshold} required "
            f"(signed by: {signers})",
            hint="it was signed by a key this site does not trust; add the builder's public key "
                 "to the trust list (or rotate trust) only if you trust it")


__all__ = ["EdgebundleError", "Envelope", "LegacyFormatError", "MalformedEnvelopeError", "TrustStore",
           "UnsignedError", "UntrustedError", "Verified", "generate_keypair", "keyid",
           "load_private_key", "load_public_key", "pae", "parse_envelope", "sign", "unsigned", "verify"]


MAX_KEY_BYTES = 64 * 1024  # a PEM Ed25519 key is a few hundred bytes


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase in ``path`` (``--passphrase-file``), without its trailing newline."""
    return read_bounded(path, 4096, "passphrase file").strip() if path else None
