"""Kubernetes objects checked against the upstream OpenAPI schemas of the versions a spec declares.

The schemas come from the PyPI package ``kubernetes-validate`` (the upstream JSON schemas of every
Kubernetes minor version it supports, shipped inside the wheel: nothing is fetched, so this works
on an offline build host). The *strict* variants are used: an unknown field
(``imagePullPolicyy``) is an error, as it is for ``kubectl apply --validate=strict``.

Invariants: read-only; the same object and version range always give the same problems; a kind the
schemas do not know (a custom resource) is reported as unknown only when its API group is built in.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from edgebundle.errors import UsageError

_BUILTIN_GROUP = re.compile(r"^(|[a-z]+|[a-z.]+\.k8s\.io)$")


@functools.cache
def _schema_root() -> Any:
    import importlib.resources

    return importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")


@functools.cache
def supported_versions() -> tuple[str, ...]:
    """Minor versions (``"1.25"``...) the installed schemas cover, oldest first."""
    found = set()
    for entry in _schema_root().iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+-local-strict", entry.name)
        if m:
            found.add((int(m[1]), int(m[2])))
    return tuple(f"{a}.{b}" for a, b in sorted(found))


def kubernetes_versions(declared: str) -> list[str]:
    """The supported minor versions inside ``declared`` (a PEP 440 range such as ``>=1.25,<1.31``)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(declared)
    except InvalidSpecifier:
        raise UsageError(f"bundle spec: metadata.kubernetes {declared!r} is not a version range",
                         hint='write it like ">=1.25" or ">=1.27,<1.31"') from None
    versions = [v for v in supported_versions() if spec.contains(v)]
    if not versions:
        have = supported_versions()
        raise UsageError(f"bundle spec: metadata.kubernetes {declared!r} matches none of the Kubernetes "
                         f"versions whose schemas this tool has ({have[0]} to {have[-1]})",
                         hint=f'declare a range inside {have[0]}..{have[-1]}, e.g. ">={have[0]}"')
    return versions


@functools.cache
def _definitions(version: str) -> Any:
    """The shared definitions of one version, as a schema registry (parsed once: 1.2 MB)."""
    from referencing import Registry, Resource

    folder = _schema_root().joinpath(f"v{version}.0-local-strict")
    return Resource.from_contents(json.loads(folder.joinpath("_definitions.json").read_text())) @ Registry()


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> Any | None:
    """A JSON-schema validator for one kind at one version, or None when that version lacks it."""
    import jsonschema
    from referencing import Resource

    group, _, ver = api_version.rpartition("/")
    short = re.sub(r"\..*$", "", group)
    name = f"{kind.lower()}-{short + '-' if short else ''}{ver}.json"
    folder = _schema_root().joinpath(f"v{version}.0-local-strict")
    path = folder.joinpath(name)
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = Resource.from_contents(schema) @ _definitions(version)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _path(error: Any) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "(object)"


def _message(error: Any) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field")
    if error.validator == "type":
        want = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        return f"expected {' or '.join(t for t in want if t != 'null')}, got {error.instance!r}"
    return error.message


def check_object(obj: dict[str, Any], versions: list[str]) -> list[str]:
    """Problems of ``obj`` against each version (empty when it is valid for all of them)."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    group = api_version.rpartition("/")[0]
    problems: dict[str, list[str]] = {}
    for v in versions:
        validator = _validator(v, api_version, kind)
        if validator is None:
            if _BUILTIN_GROUP.match(group):
                problems.setdefault(f"{api_version} {kind} is not served", []).append(v)
            continue
        best = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        for e in best[:5]:
            problems.setdefault(f"{_path(e)}: {_message(e)}", []).append(v)
    out = []
    for text, vs in problems.items():
        which = "every declared version" if vs == versions else f"Kubernetes {', '.join(vs)}"
        out.append(f"{text} (in {which})")
    return out
