"""Staged validation: prove a bundle on a test cluster before production will take it.

On the staging site, :func:`run_checks` takes the current revision, waits for every workload to be
ready and calls each Service's health endpoints through the API server's service proxy (``/health``
and ``/ready`` unless the Service's ``edgebundle.dev/health-paths`` annotation lists others, ``""``
for none; the port is ``edgebundle.dev/health-port`` or the Service's first port). When all pass,
:func:`make_record` writes a validation record: an in-toto Statement v1 whose subject is the bundle
root (its sha256) and whose predicate (:data:`PREDICATE_TYPE`) names the staging site and cluster,
the revision, the time and every check, in a DSSE envelope (payloadType
``application/vnd.in-toto+json``) signed with the staging site's key (``spec.siteKey``), so any
in-toto/DSSE verifier can check it.

The operator carries that file to production. A site with ``requireValidation: {keys: [...]}``
refuses to plan or apply a bundle without a valid record signed by one of those keys
(:func:`require_validation`); the record is given with ``--validation FILE`` (and then kept in
``validations/<root-hex>.json`` of the state directory) or found there.

Invariant: a record is written only when every check passed; it covers exactly one bundle root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgebundle import mediatypes as mt
from edgebundle.digest import read_bounded
from edgebundle.documents import validate_document
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.layout import envelope_limit
from edgebundle.root import canonical_json, load_json_bounded
from edgebundle.signing import LegacyFormatError, TrustStore, keyid, load_private_key, load_public_key, sign, verify
from installer import health
from installer.records import ValidationPredicate
from installer.render import ObjectKey
from installer.site import Site
from installer.state import StateDir, now_iso

if TYPE_CHECKING:
    from installer.destinations.cluster import KubeTarget

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
#: What our predicate means: every listed staging check passed for the subject bundle root.
PREDICATE_TYPE = "https://edgebundle.dev/attestation/staging-validation/v1"
HEALTH_PATHS_ANNOTATION = "edgebundle.dev/health-paths"
HEALTH_PORT_ANNOTATION = "edgebundle.dev/health-port"
DEFAULT_PATHS = ("/health", "/ready")
MAX_RECORD_BYTES = 1024 * 1024
MAX_ENVELOPE_BYTES = envelope_limit(MAX_RECORD_BYTES)


class ValidationFailed(EdgebundleError):
    """A staging check failed; no record was written."""


class ValidationRequired(VerificationError):
    """Production needs a valid staging record for this bundle and has none."""


@dataclass(frozen=True)
class Check:
    object: str
    check: str
    ok: bool
    detail: str = ""


def health_endpoints(service: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(port, paths) to call on a Service, or None when it has no port or opts out."""
    ann = (service.get("metadata") or {}).get("annotations") or {}
    paths = DEFAULT_PATHS if HEALTH_PATHS_ANNOTATION not in ann else tuple(
        p.strip() for p in str(ann[HEALTH_PATHS_ANNOTATION]).split(",") if p.strip())
    ports = (service.get("spec") or {}).get("ports") or []
    port = ann.get(HEALTH_PORT_ANNOTATION) or (ports[0].get("name") or ports[0].get("port") if ports else None)
    if not paths or port is None:
        return None
    return str(port), list(paths)


def run_checks(target: "KubeTarget", revision: dict[str, Any], *, timeout: float = health.DEFAULT_TIMEOUT,
               poll: float = 1.0, log: Callable[[str], None] = lambda s: None) -> list[Check]:
    """Readiness of every workload, then each Service's health endpoints via the service proxy."""
    objects = revision["objects"]
    checks: list[Check] = []
    try:
        health.wait_healthy(target, objects, timeout=timeout, poll=poll, log=log)
    except health.HealthError as e:
        checks.append(Check(e.key, "ready", False, e.reason))
    for obj in health.workloads(objects):
        key = str(ObjectKey.of(obj))
        if not any(c.object == key for c in checks):
            verdict = health.check(target, obj)
            checks.append(Check(key, "ready", verdict.state == "ready", verdict.reason))
    for obj in objects:
        if obj.get("kind") != "Service":
            continue
        ends = health_endpoints(obj)
        if ends is None:
            continue
        port, paths = ends
        k = ObjectKey.of(obj)
        for path in paths:
            status, body = target.proxy_get(k.namespace, k.name, port, path)
            ok = 200 <= status < 300
            checks.append(Check(str(k), f"GET {path}", ok, f"HTTP {status}" + ("" if ok else f": {body[:200]}")))
            log(f"{k} GET {path}: HTTP {status}")
    return checks


def make_record(site: Site, identity: dict[str, str], revision: dict[str, Any], checks: list[Check],
                key: Ed25519PrivateKey) -> bytes:
    """The signed validation record (DSSE envelope of an in-toto Statement) for ``revision``'s bundle.

    Refuses unless every check passed.
    """
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ValidationFailed(
            f"{len(failed)} staging check(s) failed: " + "; ".join(f"{c.object} {c.check}: {c.detail}" for c in failed[:3]),
            hint="fix the bundle or the staging cluster, apply again, and re-run installer validate")
    bundle = revision["bundle"]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{bundle['name']}-{bundle['version']}",
                     "digest": {"sha256": bundle["root"].split(":", 1)[1]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"bundle": bundle, "site": site.name, "cluster": identity,
                      "revision": revision["revision"], "validatedAt": now_iso(),
                      "checks": [asdict(c) for c in checks]},
    }
    return sign(canonical_json(statement), mt.PAYLOAD_IN_TOTO, [key])


def site_signing_key(site: Site) -> Ed25519PrivateKey:
    if site.site_key is None:
        raise UsageError(f"site {site.name} has no spec.siteKey to sign validation records with",
                         hint="create one (bundle keygen staging --out keys) and set spec.siteKey")
    return load_private_key(site.site_key)


def record_rel(root_digest: str) -> str:
    return f"validations/{root_digest.split(':', 1)[1]}.json"


def verify_record(data: bytes, root_digest: str, keys: list[Ed25519PublicKey],
                  where: str) -> tuple[dict[str, Any], str]:
    """The record's predicate and signer, once one of ``keys`` signed it, it names ``root_digest``
    as its subject and every check passed."""
    try:
        signed = verify(data, mt.PAYLOAD_IN_TOTO, TrustStore(keys, 1), where, MAX_ENVELOPE_BYTES)
        statement = load_json_bounded(signed.payload, where, MAX_RECORD_BYTES)
    except LegacyFormatError as e:
        raise ValidationRequired(e.message, hint="run installer validate again on the staging site") from None
    except VerificationError as e:
        raise ValidationRequired(
            f"{e.message}: this site accepts validation records signed by one of "
            f"{', '.join(keyid(k)[:16] for k in keys)} only",
            hint="use the record exactly as installer validate wrote it; requireValidation.keys must "
                 "list the staging site's public key") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE \
            or statement.get("predicateType") != PREDICATE_TYPE or not isinstance(statement.get("predicate"), dict):
        raise ValidationRequired(f"{where} is not an in-toto Statement with predicate {PREDICATE_TYPE}")
    subjects = statement.get("subject")
    want = root_digest.split(":", 1)[1]
    named = [s.get("digest", {}).get("sha256") for s in subjects if isinstance(s, dict)] \
        if isinstance(subjects, list) else []
    if named != [want]:
        raise ValidationRequired(f"{where} validates bundle root(s) {', '.join(map(str, named)) or 'none'}, "
                                 f"not {root_digest}", hint="bring the record made for this exact bundle")
    predicate = statement["predicate"]
    validate_document(ValidationPredicate, predicate, what="validation record predicate", where=where)
    checks = predicate.get("checks")
    if not isinstance(checks, list) or not checks or \
            not all(isinstance(c, dict) and c.get("ok") is True for c in checks):
        raise ValidationRequired(f"{where} records failed or no checks")
    return predicate, signed.signers[0]


def require_validation(site: Site, state: StateDir, bundle: dict[str, str],
                       validation_file: Path | None = None) -> dict[str, Any] | None:
    """For a site with ``requireValidation``: the valid record for ``bundle``, else refuse.

    Returns None when the site does not require validation. A valid ``validation_file`` is kept in
    the state directory so later commands find it; the kept one is read and written by descriptor
    below the state directory (a planted link is refused, naming it).
    """
    if not site.require_validation_keys:
        return None
    keys = [load_public_key(p) for p in site.require_validation_keys]
    root = bundle["root"]
    rel = record_rel(root)
    kept = state.path / rel
    if validation_file:
        path = Path(validation_file)
        try:
            data: bytes | None = read_bounded(path, MAX_ENVELOPE_BYTES, "validation record", UsageError)
        except FileNotFoundError:
            raise UsageError(f"validation record {path} does not exist",
                             hint="pass the file installer validate wrote on the staging site") from None
    else:
        path, data = kept, state.read_bytes(rel, MAX_ENVELOPE_BYTES)
    if data is None:
        ids = ", ".join(keyid(k)[:16] for k in keys)
        raise ValidationRequired(
            f"site {site.name} requires a staging validation record for bundle {bundle['name']} "
            f"{bundle['version']} (root {root}) signed by one of the keys {ids}; none was given",
            hint="apply the bundle on the staging site, run installer validate --site STAGING -o RECORD "
                 "there, and pass --validation RECORD here")
    predicate, signer = verify_record(data, root, keys, f"validation record {path}")
    if validation_file and state.read_bytes(rel, MAX_ENVELOPE_BYTES) != data:
        state.write_bytes(rel, data)
    return {"site": predicate.get("site"), "keyid": signer, "validatedAt": predicate.get("validatedAt")}
