"""Plaintext credentials stay home: find secrets in what a bundle would ship, before it is built.

A bundle goes to every site of a fleet and is kept on sticks and depots; a password in a manifest
travels with it. ``bundle lint`` and the start of ``bundle create`` scan every manifest file,
Helm charts' values files and what the charts render with the bundle's values, and the text
files of every model directory (``config.json``, tokenizer configs, READMEs; weights are not
text) with two kinds of detector:

- **Kubernetes-aware**: a ``Secret`` with values in ``data``/``stringData`` (whatever they are);
  a container ``env`` entry whose name says credential (PASSWORD, TOKEN, SECRET, API_KEY, ...)
  with a literal ``value`` (``valueFrom`` a Secret the site creates is the way to do it).
- **detect-secrets** (Yelp's scanner; its plugins find private keys, cloud and SaaS tokens,
  JWTs, credentials in URLs, high-entropy strings next to a secret keyword), over every line.

Each finding names the file, the line and the detector, and is refused unless the spec allows
it, with a reason (docs/SPEC.md ``spec.secrets.allow``). The value itself is never printed or
stored; a finding carries the SHA-1 of the value (detect-secrets' ``hashed_secret``) so that an
allowance may pin the exact value.

Invariant: read-only; every finding is reported, not only the first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebundle.boundedyaml import YamlBoundError, load_all_bounded
from edgebundle.digest import read_bounded
from edgebundle.errors import UsageError
from installer.render import MAX_MANIFEST_BYTES

#: Env var names that say "this is a credential" (matched on word parts, case-insensitive).
CREDENTIAL_NAME = re.compile(r"(^|_)(PASSWORD|PASSWD|PASS|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|"
                             r"CREDENTIALS?|AUTH)($|_)", re.IGNORECASE)
#: Model files scanned as text (the rest of a model directory is weights).
TEXT_SUFFIXES = (".json", ".txt", ".md", ".yaml", ".yml", ".cfg", ".ini", ".py", ".jinja", ".toml")
#: Larger model files are not scanned (a vocabulary or tokenizer table, not a config); manifests always are.
MAX_TEXT_BYTES = 64 * 1024


@dataclass(frozen=True)
class SecretFinding:
    """A credential found in a file the bundle would carry."""

    file: str  # as the spec names it (relative to the spec when possible)
    line: int
    detector: str
    hashed: str  # SHA-1 of the value, never the value

    def text(self) -> str:
        return f"{self.file}:{self.line}: {self.detector} (value sha1 {self.hashed[:12]}...)"


@dataclass(frozen=True)
class Allowance:
    """``spec.secrets.allow[i]``: a finding the spec's author vouches for, and why."""

    file: str
    detector: str
    reason: str
    line: int | None = None
    hashed: str | None = None

    def covers(self, f: SecretFinding) -> bool:
        return (self.file == f.file and self.detector == f.detector
                and self.line in (None, f.line) and self.hashed in (None, f.hashed))


def _sha1(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324 (an identifier)


def _line_of(lines: list[str], pattern: str, start: int = 0) -> int:
    """The first line at or after ``start`` (0-based) matching ``pattern`` (1-based; 0 if none)."""
    for i in range(start, len(lines)):
        if re.search(pattern, lines[i]):
            return i + 1
    return 0


def _key(key: str) -> str:
    """A YAML mapping key, quoted or not, in block or flow style."""
    return rf"(^|[\s{{,\-]){re.escape(key)}[\"']?\s*:|[\"']{re.escape(key)}[\"']\s*:"


def kubernetes_findings(name: str, data: bytes) -> Iterator[SecretFinding]:
    """Secrets with values, and literal credential-named env values, in one manifest file."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    try:
        docs = load_all_bounded(data, f"manifest {name}")
    except YamlBoundError:
        return  # lint reports unparsable manifests itself
    for doc in docs:
        yield from object_findings(name, doc, lines)


def object_findings(name: str, doc: Any, lines: list[str] | None = None) -> Iterator[SecretFinding]:
    """The Kubernetes-aware findings in one object; ``lines`` of its source text locate them
    (a chart's rendered object has none: line 0)."""
    lines = lines or []
    if not isinstance(doc, dict):
        return
    if doc.get("kind") == "Secret":
        for field in ("data", "stringData"):
            values = doc.get(field)
            if isinstance(values, dict):
                for key, value in values.items():
                    if value not in (None, ""):
                        yield SecretFinding(name, _line_of(lines, _key(str(key))), f"Kubernetes Secret {field}",
                                            _sha1(str(value)))
    for env in _env_entries(doc):
        var, value = env.get("name"), env.get("value")
        if isinstance(var, str) and CREDENTIAL_NAME.search(var) and isinstance(value, str) and value.strip():
            named = _line_of(lines, rf"\bname\s*:\s*[\"']?{re.escape(var)}\b")
            yield SecretFinding(name, _line_of(lines, _key("value"), max(named - 1, 0)),
                                f"credential in env {var}", _sha1(value))


def _env_entries(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from (e for e in value if isinstance(e, dict))
            else:
                yield from _env_entries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_entries(item)


def plugin_findings(files: Iterable[tuple[str, Path]]) -> list[SecretFinding]:
    """detect-secrets' plugins and filters over ``files`` (name, path), in one settings context."""
    try:  # heavy (its plugins compile many patterns): loaded by lint and create only
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import default_settings
    except ModuleNotFoundError:
        raise UsageError("scanning for plaintext credentials needs detect-secrets, which is not installed",
                         hint="pip install 'edgebundle[build]' on the build host") from None

    names = {str(path): name for name, path in files}
    with default_settings():
        found = SecretsCollection()
        for path in names:
            found.scan_file(path)
    return [SecretFinding(names[f], s.line_number, s.type, s.secret_hash) for f, s in found]


def scan(files: Iterable[tuple[str, Path]], *, manifests: Iterable[tuple[str, Path]] = (),
         objects: Iterable[tuple[str, Any]] = ()) -> list[SecretFinding]:
    """Every finding in ``files`` (name, path) and, Kubernetes-aware too, in ``manifests`` and in
    rendered ``objects`` (name, object: what a chart renders with the bundle's values)."""
    manifests = list(manifests)
    out: set[SecretFinding] = set()
    for name, doc in objects:
        out.update(object_findings(name, doc))
    for name, path in manifests:
        out.update(kubernetes_findings(name, read_bounded(path, MAX_MANIFEST_BYTES, f"manifest {name}")))
    texts = [(name, path) for name, path in files
             if path.suffix.lower() in TEXT_SUFFIXES and path.stat().st_size <= MAX_TEXT_BYTES]
    out.update(plugin_findings(manifests + texts))
    return sorted(out, key=lambda f: (f.file, f.line, f.detector))


def refused(findings: list[SecretFinding], allow: Iterable[Allowance]) -> list[SecretFinding]:
    """The findings no allowance covers."""
    allow = list(allow)
    return [f for f in findings if not any(a.covers(f) for a in allow)]
