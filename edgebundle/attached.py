"""Where artifacts attached to an image live in a registry: cosign's tags and OCI 1.1 referrers.

Upstream projects attach signatures, attestations and SBOMs to an image without changing it,
by two conventions, both keyed by the *subject* (the image manifest or index) digest:

- cosign's tags in the image's repository: ``sha256-<hex>.sig``, ``.att``, ``.sbom``;
- OCI 1.1 referrers: manifests whose ``subject`` names the image, listed by the referrers API
  (``GET /v2/<name>/referrers/<digest>``) or, on registries without it, by an image index
  under the fallback tag ``sha256-<hex>``.

The signed root lists each attached artifact an image carries (edgebundle/root.py
``AttachedEntry``) with the tag it goes under at the site; :func:`is_attached_tag` is the rule
that tag must obey, so that a signed root can never use "attached" to move an image's own tag.

Invariants: pure functions and constants; imports nothing of edgebundle but its leaf modules.
"""

from __future__ import annotations

from edgebundle.digest import is_digest

#: cosign's tag suffixes, by what the artifact is.
COSIGN_SUFFIXES = {"signature": ".sig", "attestation": ".att", "sbom": ".sbom"}
#: The kind of an attached artifact found under the referrers fallback tag (or the API).
REFERRERS = "referrers"
KINDS = (*COSIGN_SUFFIXES, REFERRERS)


def tag_for(subject: str, kind: str) -> str:
    """The tag an artifact of ``kind`` attached to ``subject`` lives under."""
    return "sha256-" + subject.removeprefix("sha256:") + COSIGN_SUFFIXES.get(kind, "")


def is_attached_tag(tag: str, subject: str, kind: str) -> bool:
    """True when ``tag`` is exactly where an artifact of ``kind`` attached to ``subject`` belongs."""
    return is_digest(subject) and kind in KINDS and tag == tag_for(subject, kind)


def attached_by_tag(tag: str) -> tuple[str, str] | None:
    """(subject, kind) when ``tag`` is where an attached artifact lives (the inverse of
    :func:`tag_for`), else None: an image's own tag."""
    rest = tag.removeprefix("sha256-")
    if rest == tag:
        return None
    hex_part, dot, suffix = rest.partition(".")
    kinds = [k for k, s in COSIGN_SUFFIXES.items() if s == dot + suffix] if dot else [REFERRERS]
    subject = "sha256:" + hex_part
    return (subject, kinds[0]) if kinds and is_digest(subject) else None
