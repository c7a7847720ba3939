"""Operator approvals: a named person saw this exact plan and said yes, recently.

An approval is a small JSON document in the state directory, ``approvals/<plan-hash-hex>.json``:
operator, time, expiry, plan hash, bundle (name, version, root digest), site and cluster identity,
and the plan's summary. It may be signed (Ed25519, over the canonical JSON of every other field)
with an operator key; a site that lists approver keys (``spec.approval.keys`` in the site file, or
``apply --approver-pubkey``) accepts only approvals signed by one of them.

Invariants:
- An approval names one plan hash: a changed plan (re-plan, drift, edit) needs a new approval.
- An approval is valid only until ``expiresAt`` (default 24 h after it was given).
"""

from __future__ import annotations

import base64
import calendar
import re
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundler.errors import EdgebundleError, UsageError
from bundler.layout import MAX_JSON_BYTES
from bundler.documents import validate_document
from bundler.root import MalformedRootError, canonical_json, load_json_bounded
from bundler.signing import keyid
from installer.plan import Plan
from installer.records import ApprovalDocument
from installer.site import Site
from installer.state import StateDir

APPROVAL_TYPE = "edgebundle.approval"
DEFAULT_TTL = 24 * 3600.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ISO = "%Y-%m-%dT%H:%M:%SZ"


class ApprovalError(EdgebundleError):
    """No valid approval covers this plan."""


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``2d`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m or float(m[1]) <= 0:
        raise UsageError(f"duration {text!r} is not like 30m, 24h or 2d")
    return float(m[1]) * _UNITS[m[2]]


def iso(t: float) -> str:
    return time.strftime(_ISO, time.gmtime(t))


def parse_iso(s: str) -> float:
    return float(calendar.timegm(time.strptime(s, _ISO)))


def _hex(plan_hash: str) -> str:
    return plan_hash.split(":", 1)[1]


def approval_rel(plan_hash: str) -> str:
    return f"approvals/{_hex(plan_hash)}.json"


def signed_bytes(doc: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in doc.items() if k != "signature"})


def make_approval(plan: Plan, operator: str, *, ttl: float = DEFAULT_TTL,
                  key: Ed25519PrivateKey | None = None, now: float | None = None) -> dict[str, Any]:
    """The approval document for ``plan`` by ``operator`` (signed when ``key`` is given)."""
    if not operator.strip():
        raise UsageError("an approval needs the operator's name", hint="pass --operator NAME")
    t = time.time() if now is None else now
    doc: dict[str, Any] = {
        "_type": APPROVAL_TYPE, "planHash": plan.hash, "operator": operator.strip(),
        "approvedAt": iso(t), "expiresAt": iso(t + ttl), "bundle": plan.bundle,
        "site": plan.doc["site"], "cluster": plan.doc["cluster"], "revision": plan.revision,
        "summary": plan.summary(),
    }
    if key is not None:
        doc["signature"] = {"keyid": keyid(key.public_key()),
                            "sig": base64.b64encode(key.sign(signed_bytes(doc))).decode()}
    return doc


def record_approval(state: StateDir, doc: dict[str, Any]) -> Path:
    state.write_json(approval_rel(doc["planHash"]), doc)
    return state.path / approval_rel(doc["planHash"])


def _load(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            doc = load_json_bounded(f.read(MAX_JSON_BYTES + 1), f"approval {path.name}")
    except (OSError, MalformedRootError):
        return None
    return doc if isinstance(doc, dict) and doc.get("_type") == APPROVAL_TYPE else None


def _others(state: StateDir, plan: Plan) -> str:
    """Approvals on file for other plans of this site, for the refusal message."""
    d = state.path / "approvals"
    found = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        doc = _load(p)
        if doc and doc.get("planHash") != plan.hash and doc.get("site") == plan.doc["site"]:
            found.append(f"{str(doc.get('planHash'))[:19]}... by {doc.get('operator')} at {doc.get('approvedAt')}")
    return ("; approvals on file are for other plans: " + ", ".join(found[-3:])) if found else ""


def _check_signature(doc: dict[str, Any], keys: list[Ed25519PublicKey]) -> None:
    trusted = {keyid(k): k for k in keys}
    sig = doc.get("signature")
    if not isinstance(sig, dict) or not isinstance(sig.get("sig"), str):
        raise ApprovalError(f"the approval by {doc.get('operator')} is not signed, and this site accepts "
                            "only approvals signed by an approver key",
                            hint="approve again with: installer approve PLAN --operator NAME --key KEY")
    key = trusted.get(str(sig.get("keyid")))
    if key is None:
        raise ApprovalError(f"the approval is signed by key {str(sig.get('keyid'))[:16]}, which is not an "
                            "approver key of this site")
    try:
        key.verify(base64.b64decode(sig["sig"], validate=True), signed_bytes(doc))
    except (InvalidSignature, ValueError):
        raise ApprovalError("the approval's signature does not match its content (altered after signing)",
                            hint="approve the plan again") from None


def check_approval(state: StateDir, plan: Plan, *, keys: list[Ed25519PublicKey] | None = None,
                   now: float | None = None) -> dict[str, Any]:
    """The valid approval for exactly this plan; raise :class:`ApprovalError` saying what is wrong."""
    path = state.path / approval_rel(plan.hash)
    doc = _load(path) if path.exists() else None
    if doc is None:
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
        _check_signature(doc, keys)
    return doc


def approver_keys(site: Site) -> list[Path]:
    """``spec.approval.keys`` of the site file (paths relative to it): approvals must be signed."""
    spec = (site.raw or {}).get("spec") or {}
    keys = (spec.get("approval") or {}).get("keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UsageError("site file: spec.approval.keys must be a list of public key paths")
    base = site.path.parent if site.path else Path.cwd()
    return [(base / Path(k).expanduser()).resolve() for k in keys]
