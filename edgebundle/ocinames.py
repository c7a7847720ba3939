"""OCI distribution names and limits, without the network client (cheap to import).

The reference grammar (repository, tag, registry host) and the manifest size bound are facts of
the distribution spec that the signed root's parser and the verifier need as much as the registry
client does; they live here so that ``installer verify`` does not load an HTTP stack.

Image references (``registry/repository[:tag][@digest]``, Docker's rules) are parsed here too:
the installer rewrites every manifest's images without needing a registry client.

Invariants: pure functions and constants; imports only edgebundle's errors and digest grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from edgebundle.digest import is_digest
from edgebundle.errors import UsageError

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
#: Canonical name of Docker Hub in references.
DOCKER_HUB = "docker.io"


def is_repository(name: str) -> bool:
    """A repository name by the OCI distribution grammar (lower-case path components, <= 255)."""
    return len(name) <= MAX_NAME and PATH_RE.fullmatch(name) is not None


def is_tag(tag: str) -> bool:
    """A tag by the OCI distribution grammar: ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``."""
    return TAG_RE.fullmatch(tag) is not None


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: ``registry/repository[:tag][@digest]``.

    ``registry`` is ``host[:port]`` (``docker.io`` for Docker Hub). ``tag`` defaults to
    ``latest`` only when neither a tag nor a digest was given.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def _bad_reference(ref: str, why: str) -> NoReturn:
    raise UsageError(
        f"invalid image reference {ref!r}: {why}",
        hint="write it as [registry[:port]/]repository[:tag][@sha256:<64 hex>], e.g. "
        "registry.example.com/rag/llm-service:1.0",
    )


def parse_reference(ref: str) -> ImageRef:
    """Parse ``ref`` with Docker's rules.

    The first path component is a registry when it contains ``.`` or ``:``, is ``localhost`` or
    has upper-case letters; otherwise the registry is Docker Hub, where one-component names get
    the ``library/`` prefix. ``index.docker.io`` is normalised to ``docker.io``.
    """
    rest, _, digest = ref.partition("@")
    if digest and not is_digest(digest):
        _bad_reference(ref, f"digest {digest!r} is not sha256:<64 lower-case hex>")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not TAG_RE.fullmatch(tag):
            _bad_reference(ref, f"tag {tag!r} is not valid")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, repository = first, remainder
        if not DOMAIN_RE.fullmatch(registry):
            _bad_reference(ref, f"registry {registry!r} is not a valid host[:port]")
    else:
        registry, repository = DOCKER_HUB, rest
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not PATH_RE.fullmatch(repository):
        _bad_reference(ref, f"repository {repository!r} must be lower-case path components")
    if len(f"{registry}/{repository}") > MAX_NAME:
        _bad_reference(ref, f"name is longer than {MAX_NAME} characters")
    if tag is None and not digest:
        tag = "latest"
    return ImageRef(registry=registry, repository=repository, tag=tag, digest=digest or None)
