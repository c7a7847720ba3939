"""Operator approvals: a named person saw this exact plan and said yes, recently.

An approval is a DSSE envelope (edgebundle/signing.py, payloadType
``application/vnd.edgebundle.approval.v1+json``) in the state directory,
``approvals/<plan-hash-hex>.json``; its payload names the operator, time, expiry, plan hash, bundle
(name, version, root digest), site and cluster identity, and the plan's summary. It is signed with
an operator key when one is given (``approve --key``), else its signature list is empty; a site
that lists approver keys (``spec.approval.keys`` in the site file, or ``apply --approver-pubkey``)
accepts only approvals signed by one of them.

Invariants:
- An approval names one plan hash: a changed plan (re-plan, drift, edit) needs a new approval.
- An approval is valid only until ``expiresAt`` (default 24 h after it was given).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgebundle import mediatypes as mt
from edgebundle.documents import validate_document
from edgebundle.errors import EdgebundleError, UsageError, VerificationError
from edgebundle.layout import MAX_JSON_BYTES, envelope_limit
from edgebundle.root import (
    MalformedRootError,
    canonical_json,
    format_time,
    load_json_bounded,
    parse_duration,  # noqa: F401 (re-exported for the approve command)
    parse_time,
)
from edgebundle.signing import Envelope, LegacyFormatError, TrustStore, UnsignedError, parse_envelope, sign, unsigned
from installer.plan import Plan
from installer.records import ApprovalDocument
from installer.site import Site
from installer.state import StateDir

APPROVAL_TYPE = "edgebundle.approval"
DEFAULT_TTL = 24 * 3600.0
MAX_APPROVAL_BYTES = envelope_limit(MAX_JSON_BYTES)


class ApprovalError(EdgebundleError):
    """No valid approval covers this plan."""


iso = format_time


def parse_iso(s: str) -> float:
    try:
        return parse_time(s, "approval time")
    except MalformedRootError:
        raise ValueError(s) from None


def _hex(plan_hash: str) -> str:
    return plan_hash.split(":", 1)[1]


def approval_rel(plan_hash: str) -> str:
    return f"approvals/{_hex(plan_hash)}.json"


def make_approval(plan: Plan, operator: str, *, ttl: float = DEFAULT_TTL,
                  now: float | None = None) -> dict[str, Any]:
    """The approval document for ``plan`` by ``operator`` (the envelope's payload)."""
    if not operator.strip():
        raise UsageError("an approval needs the operator's name", hint="pass --operator NAME")
    t = time.time() if now is None else now
    doc: dict[str, Any] = {
        "_type": APPROVAL_TYPE, "planHash": plan.hash, "operator": operator.strip(),
        "approvedAt": iso(t), "expiresAt": iso(t + ttl), "bundle": plan.bundle,
        "site": plan.doc["site"], "cluster": plan.doc["cluster"], "revision": plan.revision,
        "summary": plan.summary(),
    }
    return doc


def seal_approval(doc: dict[str, Any], key: Ed25519PrivateKey | None = None) -> bytes:
    """The approval's DSSE envelope: signed by ``key``, or with no signature when none is given."""
    payload = canonical_json(doc)
    return sign(payload, mt.PAYLOAD_APPROVAL, [key]) if key else unsigned(payload, mt.PAYLOAD_APPROVAL)


def record_approval(state: StateDir, doc: dict[str, Any], key: Ed25519PrivateKey | None = None) -> Path:
    """Write the approval envelope where :func:`check_approval` looks for it (never through a link)."""
    rel = approval_rel(doc["planHash"])
    state.write_bytes(rel, seal_approval(doc, key))
    return state.path / rel


def _open(state: StateDir, rel: str) -> tuple[Envelope, dict[str, Any]] | None:
    """The approval at ``rel`` of the state dir: its envelope (unverified) and its payload document.

    None when there is none; read by descriptor below the state directory, so a planted link or
    FIFO is refused (:class:`installer.safefs.UnsafePathError`) naming it, never followed.
    """
    path = state.path / rel
    data = state.read_bytes(rel, MAX_APPROVAL_BYTES)
    if data is None:
        return None
    env = parse_envelope(data, f"approval {path}", mt.PAYLOAD_APPROVAL, MAX_APPROVAL_BYTES)
    doc = load_json_bounded(env.payload, f"approval {path}")
    if not isinstance(doc, dict) or doc.get("_type") != APPROVAL_TYPE:
        raise MalformedRootError(f"approval {path} does not carry an {APPROVAL_TYPE} document")
    return env, doc


def approval_on_file(state: StateDir, plan_hash: str) -> dict[str, Any] | None:
    """The approval document recorded for ``plan_hash`` (its payload, for display; not verified)."""
    return _load(state, approval_rel(plan_hash))


def _load(state: StateDir, rel: str) -> dict[str, Any] | None:
    """For display only: an unreadable, malformed or planted approval shows as none."""
    try:
        found = _open(state, rel)
    except EdgebundleError:
        return None
    return found[1] if found else None


def _others(state: StateDir, plan: Plan) -> str:
    """Approvals on file for other plans of this site, for the refusal message."""
    found = []
    for name in [n for n in state.safe.listdir(["approvals"]) if n.endswith(".json")]:
        doc = _load(state, f"approvals/{name}")
        if doc and doc.get("planHash") != plan.hash and doc.get("site") == plan.doc["site"]:
            found.append(f"{str(doc.get('planHash'))[:19]}... by {doc.get('operator')} at {doc.get('approvedAt')}")
    return ("; approvals on file are for other plans: " + ", ".join(found[-3:])) if found else ""


def _check_signature(env: Envelope, doc: dict[str, Any], keys: list[Ed25519PublicKey]) -> None:
    try:
        TrustStore(keys, 1).check(env, f"the approval by {doc.get('operator')}")
    except UnsignedError:
        raise ApprovalError(f"the approval by {doc.get('operator')} is not signed, and this site accepts "
                            "only approvals signed by an approver key",
                            hint="approve again with: installer approve PLAN --operator NAME --key KEY") from None
    except VerificationError as e:
        raise ApprovalError(f"{e.message}: it is not signed by an approver key of this site (or was altered "
                            "after signing)", hint="approve the plan again with an approver key") from None


def check_approval(state: StateDir, plan: Plan, *, keys: list[Ed25519PublicKey] | None = None,
                   now: float | None = None) -> dict[str, Any]:
    """The valid approval for exactly this plan; raise :class:`ApprovalError` saying what is wrong."""
    path = state.path / approval_rel(plan.hash)
    try:
        env, doc = _open(state, approval_rel(plan.hash)) or (None, None)
    except LegacyFormatError as e:
        raise ApprovalError(e.message, hint="approve the plan again with this installer") from None
    except VerificationError:
        env, doc = None, None
    if env is None or doc is None:
        raise ApprovalError(f"plan {plan.hash[:19]}... has not been approved{_others(state, plan)}",
                            hint="an operator must review and approve it: installer approve PLAN --operator NAME")
    validate_document(ApprovalDocument, doc, what="approval", where=path)
    for k, want in (("planHash", plan.hash), ("site", plan.doc["site"]), ("cluster", plan.doc["cluster"]),
                    ("bundle", plan.bundle)):
        if doc.get(k) != want:
            raise ApprovalError(f"the approval on file at {path} does not match the plan ({k} differs)",
                                hint="approve this plan again")
    t = time.time() if now is None else now
    try:
        expires = parse_iso(str(doc.get("expiresAt")))
    except ValueError:
        raise ApprovalError(f"the approval at {path} has no valid expiry") from None
    if t >= expires:
        raise ApprovalError(f"the approval by {doc.get('operator')} at {doc.get('approvedAt')} expired at "
                            f"{doc.get('expiresAt')}",
                            hint="re-plan (the cluster may have changed) and approve again")
    if keys:
        _check_signature(env, doc, keys)
    return doc


def approver_keys(site: Site) -> list[Path]:
    """``spec.approval.keys`` of the site file: when listed, approvals must be signed by one."""
    return list(site.approval_keys)
