"""Ed25519 keys, signatures over the exact root bytes, and the k-of-n trust store.

Invariants:
- A signature covers the exact bytes of ``edgebundle/root.json``; nothing is re-serialised.
- A key is identified by ``keyid`` = sha256 of its raw 32-byte public key, so the same key always
  has the same id whatever file it came from.
- :meth:`TrustStore.check` counts only distinct trusted keys with a valid signature; signatures
  by unknown keys are ignored, not errors, but never count toward the threshold.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundler.digest import read_bounded
from bundler.errors import EdgebundleError, UsageError, VerificationError
from bundler.layout import MAX_SIGNATURES_BYTES
from bundler.root import canonical_json, load_json_bounded

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
        data = read_bounded(Path(path), _MAX_KEY_BYTES, "key file")
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
        key = serialization.load_pem_public_key(read_bounded(Path(path), _MAX_KEY_BYTES, "public key file"))
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


def sign(root_bytes: bytes, keys: list[Ed25519PrivateKey]) -> bytes:
    """The signatures document for ``root_bytes`` by each key, canonical and deterministic."""
    sigs = [{"keyid": keyid(k.public_key()), "sig": base64.b64encode(k.sign(root_bytes)).decode()}
            for k in keys]
    return canonical_json({"signatures": sorted(sigs, key=lambda s: s["keyid"])})


def parse_signatures(data: bytes) -> list[Signature]:
    """Parse the signatures document, bounded; malformed entries are an error, not skipped."""
    doc = load_json_bounded(data, "signatures.json", MAX_SIGNATURES_BYTES)
    if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list):
        raise UnsignedError("signatures.json has no 'signatures' list")
    out = []
    for i, s in enumerate(doc["signatures"]):
        if not isinstance(s, dict) or not isinstance(s.get("keyid"), str) or not isinstance(s.get("sig"), str):
            raise UnsignedError(f"signatures.json entry {i} is malformed")
        try:
            raw = base64.b64decode(s["sig"], validate=True)
        except ValueError:
            raise UnsignedError(f"signatures.json entry {i} is not base64") from None
        out.append(Signature(s["keyid"], raw))
    return out


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

    def check(self, root_bytes: bytes, signatures: list[Signature]) -> list[str]:
        """Return the keyids of trusted valid signers; raise unless the threshold is met."""
        if not signatures:
            raise UnsignedError("the bundle is not signed",
                                hint="sign it on the build host: bundle create ... --key KEY")
        good: set[str] = set()
        bad: list[str] = []
        for s in signatures:
            key = self.keys.get(s.keyid)
            if key is None:
                continue
            try:
                key.verify(s.sig, root_bytes)
                good.add(s.keyid)
            except InvalidSignature:
                bad.append(s.keyid[:16])
        if len(good) >= self.threshold:
            return sorted(good)
        if bad:
            raise UntrustedError(
                f"signature by trusted key {', '.join(bad)} does not match the root document",
                hint="the root or its signature was altered; do not install this bundle")
        signers = ", ".join(s.keyid[:16] for s in signatures)
        raise UntrustedError(
            f"{len(good)} valid signature(s) by trusted keys, {self.threshold} required "
            f"(signed by: {signers})",
            hint="the bundle was signed by a key this site does not trust; add the builder's "
                 "public key to the trust list only if you trust it")


__all__ = ["EdgebundleError", "TrustStore", "generate_keypair", "keyid", "load_private_key",
           "load_public_key", "parse_signatures", "sign", "UnsignedError", "UntrustedError"]


_MAX_KEY_BYTES = 64 * 1024  # a PEM Ed25519 key is a few hundred bytes


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase in ``path`` (``--passphrase-file``), without its trailing newline."""
    return read_bounded(path, 4096, "passphrase file").strip() if path else None
