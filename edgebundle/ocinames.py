"""OCI distribution names and limits, without the network client (cheap to import).

The reference grammar (repository, tag, registry host) and the manifest size bound are facts of
the distribution spec that the signed root's parser and the verifier need as much as the registry
client does; they live here so that ``installer verify`` does not load an HTTP stack.

Invariants: pure functions and constants; imports nothing of edgebundle.
"""

from __future__ import annotations

import re

#: Registries refuse manifests above 4 MiB; so do we, in both directions.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
DOMAIN_RE = re.compile(
    r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
MAX_NAME = 255


def is_repository(name: str) -> bool:
    """A repository name by the OCI distribution grammar (lower-case path components, <= 255)."""
    return len(name) <= MAX_NAME and PATH_RE.fullmatch(name) is not None


def is_tag(tag: str) -> bool:
    """A tag by the OCI distribution grammar: ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``."""
    return TAG_RE.fullmatch(tag) is not None
