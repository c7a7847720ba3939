"""Every path inside a bundle, and the rules a member name must follow.

A bundle is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) plus the
signed root under ``edgebundle/`` (one DSSE envelope whose payload is the root document). The same tree is stored either as a directory or as
one tar file. This module is the only place that spells those paths; readers and writers ask it.

Invariants:
- A member name is a relative POSIX path from :func:`is_member_name`'s closed set; nothing else
  may appear in a bundle (no other files, directories are implied).
- In a tar bundle the signed root comes first (:data:`TAR_HEAD`) so a reader can check the
  signature before it reads a single blob byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

OCI_LAYOUT = "oci-layout"
INDEX = "index.json"
#: The signed root: a DSSE envelope (edgebundle/signing.py) whose payload is the root document.
ROOT = "edgebundle/root.dsse.json"
#: The bundle's CycloneDX 1.6 SBOM (bundler/sbom.py): pinned in the root's ``files`` like
#: ``index.json``, so verification covers it; absent from bundles built before it existed.
SBOM = "edgebundle/sbom.cdx.json"
#: The pre-DSSE format's bare root and detached signatures; only named to refuse them clearly.
LEGACY_TRUST_FILES = ("edgebundle/root.json", "edgebundle/signatures.json")
BLOBS_DIR = "blobs/sha256"

#: The content of ``oci-layout`` (OCI image-layout spec 1.0.0); fixed, so it is pinned by value.
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'

#: Tar members written first, in this order, ahead of index.json and the blobs.
TAR_HEAD = (OCI_LAYOUT, ROOT)

#: Upper bound for any JSON document read whole (root, index, manifests, configs).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Upper bound for the signatures of one envelope.
MAX_SIGNATURES_BYTES = 256 * 1024


def envelope_limit(payload_limit: int) -> int:
    """The largest DSSE envelope that can carry a ``payload_limit``-byte payload and its signatures."""
    return 4 * (payload_limit // 3 + 1) + MAX_SIGNATURES_BYTES


#: Upper bound for the root envelope (a root of at most :data:`MAX_JSON_BYTES`, base64, signed).
MAX_ROOT_ENVELOPE_BYTES = envelope_limit(MAX_JSON_BYTES)

_HEX64 = re.compile(r"[0-9a-f]{64}")


def blob_path(digest: str) -> str:
    """Member name of the blob with ``digest`` (``sha256:<hex>``)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or not _HEX64.fullmatch(hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return f"{BLOBS_DIR}/{hexpart}"


def digest_of_blob_path(name: str) -> str | None:
    """The digest a blob member name stands for, or None when ``name`` is not a blob path."""
    prefix = BLOBS_DIR + "/"
    if name.startswith(prefix) and _HEX64.fullmatch(name[len(prefix):]):
        return "sha256:" + name[len(prefix):]
    return None


def is_member_name(name: str) -> bool:
    """True when ``name`` may appear in a bundle at all (before checking the root lists it)."""
    return name in (OCI_LAYOUT, INDEX, ROOT, SBOM) or digest_of_blob_path(name) is not None


def normalise_member_name(raw: str) -> str | None:
    """Canonical form of a tar/dir member name, or None when it is unsafe or not canonical.

    Rejects absolute paths, ``..``, empty components and backslashes, so a hostile tar cannot name
    anything outside the bundle even if a careless reader extracted it.
    """
    if not raw or raw.startswith("/") or "\\" in raw or "\x00" in raw:
        return None
    name = raw[2:] if raw.startswith("./") else raw
    parts = PurePosixPath(name).parts
    if any(p in ("", ".", "..") for p in parts) or "/".join(parts) != name.rstrip("/"):
        return None
    return name.rstrip("/")


def member_order(carried: Iterable[str], files: Iterable[str] = (), packed: Iterable[str] = ()) -> list[str]:
    """The order of a tar bundle's members: :data:`TAR_HEAD`, the index, the SBOM when ``files``
    (the root's non-blob members) has one, then blobs by digest; a delta leaves out the ``packed``
    files (they travel inside its pack blob)."""
    sbom = [SBOM] if SBOM in files else []
    return [n for n in (*TAR_HEAD, INDEX, *sbom) if n not in packed] + [blob_path(d) for d in sorted(carried)]
