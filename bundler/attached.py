"""Signatures, attestations, SBOMs and referrers attached upstream to an image: found, pinned,
and (for key-based cosign signatures the spec requires) verified on the build host.

``bundle lock`` asks the image's registry, for every manifest digest the bundle will carry (the
index and its platform manifests, or the one platform manifest), what is attached to it
(edgebundle/attached.py names the places): cosign's ``sha256-<hex>.sig``/``.att``/``.sbom`` tags,
and the OCI 1.1 referrers, through the referrers API where the registry serves it, else the
``sha256-<hex>`` fallback tag. Each is pinned by digest in bundles.lock. When the API answers, the
listing it returns has no digest of its own; the lock pins the canonical image index built from
it (:func:`referrers_index`), which ``bundle create`` builds again and must find equal, and which
the site receives under the fallback tag (the one form every registry can hold).

A key-based cosign signature is an OCI manifest whose layers are ``simplesigning`` payloads
(``{"critical": {"identity": ..., "image": {"docker-manifest-digest": ...}, "type": "cosign
container image signature"}, "optional": ...}``) with the base64 signature over the payload bytes
in the layer annotation ``dev.cosignproject.cosign/signature`` (ECDSA P-256 with SHA-256 in DER,
Ed25519 over the bytes, or RSA PKCS#1 v1.5 with SHA-256).

Invariants:
- A required signature is accepted only when, for every key the spec names, some payload
  verifies under that key *and* names exactly the pinned digest of the image as carried.
- Only small documents are read whole (manifests under the registry bound, payloads under
  :data:`MAX_PAYLOAD_BYTES`); the artifacts' other blobs stream like image layers.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from edgebundle import mediatypes as mt
from edgebundle.attached import COSIGN_SUFFIXES, REFERRERS, tag_for
from edgebundle.digest import is_digest, read_bounded, sha256_bytes
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.root import MalformedRootError, canonical_json, load_json_bounded
from edgebundle.signing import MAX_KEY_BYTES

#: A simple-signing payload is a few hundred bytes; anything past this is not one.
MAX_PAYLOAD_BYTES = 64 * 1024
COSIGN_PAYLOAD_TYPE = "cosign container image signature"

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class SignatureRequiredError(VerificationError):
    """An image the spec requires to be signed is unsigned or wrongly signed upstream."""


@dataclass(frozen=True)
class CosignKey:
    """A public key the spec names for an image's key-based cosign signatures."""

    path: Path
    key: PublicKey

    def verifies(self, signature: bytes, payload: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, payload)
            else:
                self.key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


def load_cosign_key(path: Path, where: str) -> CosignKey:
    """A PEM public key of a kind cosign signs with (ECDSA P-256, Ed25519, RSA), or a usage error."""
    hint = "give the PEM public key cosign printed (cosign public-key --key cosign.key > cosign.pub)"
    if not path.is_file():
        raise UsageError(f"bundle spec: {where} {path} does not exist", hint=hint)
    try:
        key = serialization.load_pem_public_key(read_bounded(path, MAX_KEY_BYTES, f"bundle spec: {where}"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise UsageError(f"bundle spec: {where} {path} is not a PEM public key ({e})", hint=hint) from None
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise UsageError(f"bundle spec: {where} {path} is an ECDSA key on {key.curve.name}; cosign "
                         "keys are P-256", hint=hint)
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
        raise UsageError(f"bundle spec: {where} {path} is a {type(key).__name__}; cosign signs with "
                         "ECDSA P-256, Ed25519 or RSA", hint=hint)
    return CosignKey(path, key)


# --- which manifests of an image are carried ---------------------------------------------------

def carried_subjects(locked: dict[str, Any], platforms: tuple[str, ...]) -> list[str]:
    """The manifest digests of an image ``bundle create`` carries (bundler/build.py's rule): one
    platform's manifest when one of several is asked for, else the index and every platform's."""
    by_plat: dict[str, str] = locked["platforms"]
    if not mt.is_index(locked["mediaType"]):
        return [locked["digest"]]
    if len(platforms) == 1 and len(by_plat) > 1:
        return [by_plat[platforms[0]]]
    return [locked["digest"], *dict.fromkeys(by_plat.values())]


# --- discovery at lock time ---------------------------------------------------------------------

def referrers_index(listing: bytes, what: str) -> bytes | None:
    """The canonical OCI index of a referrers API answer (descriptors sorted by digest), None if empty."""
    doc = load_json_bounded(listing, what)
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise EdgebundleError(f"{what}: the registry's answer is not an image index")
    for d in manifests:
        if not (isinstance(d, dict) and is_digest(d.get("digest")) and isinstance(d.get("size"), int)
                and isinstance(d.get("mediaType"), str)):
            raise EdgebundleError(f"{what}: the registry listed a malformed descriptor")
    if not manifests:
        return None
    return canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": sorted(manifests, key=lambda d: d["digest"])})


def discover(reg: Any, repo: str, subjects: list[str]) -> list[dict[str, Any]]:
    """Every artifact attached to ``subjects`` in ``repo`` now, as lock entries."""
    found = []
    for subject in subjects:
        for kind in COSIGN_SUFFIXES:
            entry, _ = _tagged(reg, repo, subject, kind)
            if entry:
                found.append(entry)
        listing = reg.referrers(repo, subject)
        if listing is None:  # no referrers API: the tag schema
            entry, data = _tagged(reg, repo, subject, REFERRERS)
            if entry and mt.is_index(entry["mediaType"]):
                listed_manifests(load_json_bounded(data, entry["tag"]), f"{repo}:{entry['tag']}")
                found.append(entry)
            continue
        index = referrers_index(listing, f"referrers of {repo}@{subject}")
        if index is not None:
            found.append({"kind": REFERRERS, "subject": subject, "tag": tag_for(subject, REFERRERS),
                          "digest": sha256_bytes(index), "mediaType": mt.OCI_INDEX, "via": "api"})
    return found


def _tagged(reg: Any, repo: str, subject: str, kind: str) -> tuple[dict[str, Any] | None, bytes]:
    """The lock entry of what the tag for ``kind`` holds, and its bytes; (None, b"") if nothing."""
    tag = tag_for(subject, kind)
    digest = reg.has_manifest(repo, tag)
    if digest is None:
        return None, b""
    m = reg.get_manifest(repo, digest)
    return {"kind": kind, "subject": subject, "tag": tag, "digest": m.digest, "mediaType": m.media_type,
            "via": "tag"}, m.data


def listed_manifests(doc: Any, what: str) -> list[str]:
    """The digests an attached index lists (a malformed one is refused, naming it)."""
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(d, dict) and is_digest(d.get("digest"))
                                                   for d in manifests):
        raise EdgebundleError(f"{what} is not a well-formed image index",
                              hint="ask upstream to fix it, or re-lock once it is")
    return [d["digest"] for d in manifests]


def fetch_document(reg: Any, repo: str, entry: dict[str, Any]) -> tuple[bytes, str]:
    """The pinned bytes and media type of an attached artifact's top document (from its registry)."""
    if entry.get("via") == "api":
        listing = reg.referrers(repo, entry["subject"])
        data = referrers_index(listing, f"referrers of {repo}@{entry['subject']}") if listing else None
        if data is None or sha256_bytes(data) != entry["digest"]:
            raise EdgebundleError(f"the referrers of {repo}@{entry['subject']} changed since the lock",
                                  hint="review the change, then run: bundle lock SPEC")
        return data, mt.OCI_INDEX
    m = reg.get_manifest(repo, entry["digest"])
    return m.data, m.media_type


# --- required signatures ------------------------------------------------------------------------

#: (digest, size) -> the blob's bytes (at most MAX_PAYLOAD_BYTES; the caller refuses more)
ReadBlob = Callable[[str, int], bytes]


def registry_blob_reader(reg: Any, repo: str) -> ReadBlob:
    """Read a small blob of ``repo`` whole (a signature payload), digest-checked by the client."""
    def read(digest: str, size: int) -> bytes:
        buf = io.BytesIO()
        reg.download_blob(repo, digest, buf, size)
        return buf.getvalue()
    return read


def signature_layers(sig_manifest: dict[str, Any]) -> list[tuple[dict[str, Any], bytes | None]]:
    """(descriptor, decoded signature or None) of each simple-signing layer of a ``.sig`` manifest."""
    out = []
    for desc in sig_manifest.get("layers") or []:
        if not isinstance(desc, dict) or desc.get("mediaType") != mt.COSIGN_SIMPLESIGNING:
            continue
        raw = (desc.get("annotations") or {}).get(mt.COSIGN_SIGNATURE_ANNOTATION)
        try:
            sig = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            sig = None
        out.append((desc, sig))
    return out


def signed_digest(payload: bytes) -> str | None:
    """The ``docker-manifest-digest`` a cosign simple-signing payload vouches for, or None."""
    try:
        doc = load_json_bounded(payload, "cosign payload")
    except MalformedRootError:
        return None
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict) or critical.get("type") != COSIGN_PAYLOAD_TYPE:
        return None
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    return digest if isinstance(digest, str) else None


def check_signed(ref: str, digest: str, keys: tuple[CosignKey, ...], sig_manifest: dict[str, Any] | None,
                 read_blob: ReadBlob) -> None:
    """Refuse unless every key in ``keys`` signed a payload naming ``digest`` (``ref`` as carried).

    ``sig_manifest`` is the pinned ``sha256-<hex>.sig`` manifest, or None when there is none.
    """
    sig_tag = tag_for(digest, "signature")
    relock = "if it was signed after bundles.lock was written, run: bundle lock SPEC"
    if sig_manifest is None:
        raise SignatureRequiredError(
            f"image {ref} ({digest}) is not signed: no cosign signature {sig_tag} beside it",
            hint=f"sign it (cosign sign --key ... {ref.split('@')[0].rsplit(':', 1)[0]}@{digest}), or drop "
                 f"spec.images[].signatures for it; {relock}")
    vouched: dict[Path, str] = {}  # key -> what a payload it signed names
    for desc, sig in signature_layers(sig_manifest):
        size = desc.get("size")
        if sig is None or not is_digest(desc.get("digest")) or not isinstance(size, int) \
                or not 0 <= size <= MAX_PAYLOAD_BYTES:
            continue
        payload = read_blob(desc["digest"], size)
        named = signed_digest(payload)
        for key in keys:
            if key.path not in vouched or vouched[key.path] != digest:
                if key.verifies(sig, payload):
                    vouched[key.path] = named or "no image digest"
    for key in keys:
        if key.path not in vouched:
            raise SignatureRequiredError(
                f"image {ref} ({digest}): no signature in {sig_tag} verifies with the key {key.path}",
                hint=f"it is signed by another key, or not with a key-based cosign signature: check "
                     f"spec.images[].signatures.keys, or re-sign the image; {relock}")
        if vouched[key.path] != digest:
            raise SignatureRequiredError(
                f"image {ref} ({digest}): the signature by {key.path} vouches for {vouched[key.path]}, "
                "not for this image",
                hint="a signature of another image was attached here; re-sign this digest with cosign")


def required_keys_check(ref: str, digest: str, keys: tuple[CosignKey, ...], required: bool,
                        entries: list[dict[str, Any]], load_manifest: Callable[[dict[str, Any]], dict[str, Any]],
                        read_blob: ReadBlob) -> None:
    """The spec's signature rule for one image, given its attached lock entries."""
    if not required:
        return
    sig = next((e for e in entries if e["kind"] == "signature" and e["subject"] == digest), None)
    check_signed(ref, digest, keys, load_manifest(sig) if sig else None, read_blob)
