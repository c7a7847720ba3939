"""Strict documents: typos and wrong types in the spec, lock, site file, plan, approval and
validation record are refused (exit 2) naming file, line, key path and the fix; nothing is written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bundler.cli import main as bundle_main
from edgebundle.documents import schema_fields
from edgebundle.errors import UsageError
from bundler.lockfile import LockDocument
from bundler.spec import SpecDocument
from installer.cli import main as installer_main
from installer.site import SiteDocument

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
apiVersion: edgebundle/v1
kind: Bundle
metadata:
  name: demo
  version: 1.0.0
  compatible: demo/x86_64
spec:
  models:
    - name: tiny
      kind: llm
      version: v1
      path: tiny.gguf
"""

SITE = """\
apiVersion: edgebundle/v1
kind: Site
metadata: {name: plant-7}
spec:
  compatible: demo/x86_64
  trust:
    keys: [release.pub]
    threshold: 1
  registry:
    address: 127.0.0.1:5000
    plainHTTP: true
  models:
    root: nas
  stateDir: state
"""


def bundle(*args: Any) -> Result:
    return CliRunner().invoke(bundle_main, [str(a) for a in args])


def installer(*args: Any) -> Result:
    return CliRunner().invoke(installer_main, [str(a) for a in args])


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle`` (computed from the text, not the product)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def write_spec(tmp_path: Path, text: str) -> Path:
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    spec = tmp_path / "bundle.yaml"
    spec.write_text(text)
    return spec


@pytest.mark.parametrize("original, typo, path, suggestion", [
    ("  models:", "  modles:", "spec.modles", "did you mean `models`?"),
    ("  models:", "  imagse: []\n  models:", "spec.imagse", "did you mean `images`?"),
    ("      path: tiny.gguf", "      path: tiny.gguf\n      quant: q4", "spec.models[0].quant",
     "valid keys here: name, kind, version, path"),
    ("  compatible:", "  compatibel: x\n  compatible:", "metadata.compatibel", "did you mean `compatible`?"),
])
def test_spec_typo_is_refused_naming_line_path_and_suggestion(tmp_path: Path, original: str, typo: str,
                                                              path: str, suggestion: str) -> None:
    text = SPEC.replace(original, typo, 1)
    spec = write_spec(tmp_path, text)
    r = bundle("lock", spec)
    assert r.exit_code == 2
    needle = path.rsplit(".", 1)[-1].split("[")[0] + ":"
    assert f"{spec}:{line_of(text, needle)}: {path}: unknown key ({suggestion})" in r.output, r.output
    assert "docs/SPEC.md" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.yaml", "tiny.gguf"]  # no bundles.lock


@pytest.mark.parametrize("original, wrong, path, expected", [
    ("  version: 1.0.0", "  version: 1.0", "metadata.version", "expected a string, got 1.0 (a number)"),
    ("      kind: llm", "      kind: 3", "spec.models[0].kind", "got 3"),
    ("  models:", "  images: {ref: x}\n  models:", "spec.images", "expected a list, got {'ref': 'x'}"),
])
def test_spec_wrong_type_is_refused_with_the_expected_type(tmp_path: Path, original: str, wrong: str,
                                                           path: str, expected: str) -> None:
    spec = write_spec(tmp_path, SPEC.replace(original, wrong, 1))
    r = bundle("lint", spec)
    assert r.exit_code == 2
    assert f": {path}: " in r.output and expected in r.output, r.output


def write_site(tmp_path: Path, text: str) -> Path:
    (tmp_path / "nas").mkdir(exist_ok=True)
    site = tmp_path / "site.yaml"
    site.write_text(text)
    return site


@pytest.mark.parametrize("original, changed, message", [
    ("    plainHTTP: true", "    plainHttp: true", "spec.registry.plainHttp: unknown key (did you mean `plainHTTP`?)"),
    ("  stateDir: state", "  statedir: state", "spec.statedir: unknown key (did you mean `stateDir`?)"),
    ("  stateDir: state", "  stateDir: state\n  cluster: {manifestDir: k3s}",
     "spec.cluster.manifestDir: unknown key (did you mean `manifestsDir`?)"),
    ("    threshold: 1", "    threshold: two", "spec.trust.threshold: expected an integer, got 'two' (a string)"),
    ("    threshold: 1", "    threshold: 1.9", "spec.trust.threshold: expected an integer, got 1.9 (a number)"),
    ("    threshold: 1", "    threshold: true", "spec.trust.threshold: expected an integer, got True"),
    ("  stateDir: state", "  stateDir: state\n  cluster: edge",
     "spec.cluster: expected a mapping (key: value), got 'edge' (a string)"),
    ("    plainHTTP: true", "    plainHTTP: \"yes\"", "spec.registry.plainHTTP: expected true or false, got 'yes'"),
])
def test_site_typo_or_wrong_type_is_refused(tmp_path: Path, original: str, changed: str, message: str) -> None:
    text = SITE.replace(original, changed, 1)
    site = write_site(tmp_path, text)
    r = installer("status", "--site", site)
    assert r.exit_code == 2, r.output
    key = message.split(":", 1)[0].rsplit(".", 1)[-1]
    assert f"{site}:{line_of(text, key + ':')}: {message}" in r.output, r.output
    assert not (tmp_path / "state").exists()  # nothing written: not even the state directory


def test_site_lists_every_problem_at_once(tmp_path: Path) -> None:
    text = SITE.replace("    plainHTTP: true", "    plainHttp: true").replace("  stateDir:", "  statedir:")
    r = installer("status", "--site", write_site(tmp_path, text))
    assert r.exit_code == 2 and "site file is invalid (2 problems)" in r.output, r.output


def test_lock_with_a_typo_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    lock = {"lockVersion": 1, "spec": "sha256:" + "0" * 64, "bundle": {"name": "demo", "version": "1.0.0"},
            "created": "2026-01-01T00:00:00Z", "imagse": [], "images": [], "models": [], "manifests": []}
    path = tmp_path / "other.lock"
    path.write_text(json.dumps(lock, indent=2))
    r = bundle("lint", spec, "--lockfile", path)
    assert r.exit_code == 2
    assert f"{path}:{line_of(path.read_text(), 'imagse')}: imagse: unknown key (did you mean `images`?)" in r.output


PLAN = {"_type": "edgebundle.plan", "formatVersion": 1, "created": "2026-01-01T00:00:00Z", "purpose": "apply",
        "site": "s", "stateDir": "/state", "cluster": {"server": "x"}, "target": "t",
        "bundle": {"name": "b", "version": "1", "root": "sha256:" + "1" * 64}, "previousRevision": None,
        "currentRevision": None, "revision": 1, "rollbackOf": None, "objects": [], "observed": {},
        "images": [], "models": [], "usedImages": {}, "usedModels": {}, "notes": [], "validation": None,
        "unsettled": None, "planHash": "sha256:" + "2" * 64}


@pytest.mark.parametrize("change, message", [
    ({"objectz": []}, "objectz: unknown key (did you mean `objects`?)"),
    ({"revision": "2"}, "revision: expected an integer, got '2'"),
    ({"bundle": {"name": "b", "version": "1"}}, "bundle.root: required key is missing"),
])
def test_plan_document_is_checked_before_its_hash(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    from installer.plan import load_plan

    path = tmp_path / "plan.json"
    path.write_text(json.dumps({**PLAN, **change}, indent=2))
    with pytest.raises(UsageError) as e:
        load_plan(path)
    assert message in e.value.message and str(path) in e.value.message


def test_validation_record_with_an_unknown_key_is_refused() -> None:
    """A signed in-toto record whose predicate carries a misspelt key is refused, naming it."""
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgebundle import mediatypes as mt
    from edgebundle.signing import sign
    from installer.validate import PREDICATE_TYPE, STATEMENT_TYPE, verify_record

    key = Ed25519PrivateKey.generate()
    root = "sha256:" + "ab" * 32
    statement = {"_type": STATEMENT_TYPE, "subject": [{"name": "b-1", "digest": {"sha256": "ab" * 32}}],
                 "predicateType": PREDICATE_TYPE,
                 "predicate": {"bundle": {"name": "b", "version": "1", "root": root}, "site": "s", "cluster": {},
                               "revision": 1, "validatedAt": "t", "checks": [{"object": "o", "check": "c", "ok": True}],
                               "chekcs": []}}
    data = sign(json.dumps(statement).encode(), mt.PAYLOAD_IN_TOTO, [key])
    with pytest.raises(UsageError, match=r"chekcs: unknown key \(did you mean `checks`\?\)"):
        verify_record(data, root, [key.public_key()], "record.json")


def test_approval_schema_names_the_typo() -> None:
    from edgebundle.documents import validate_document
    from installer.records import ApprovalDocument

    doc = {"_type": "edgebundle.approval", "planHash": "h", "operatr": "ana", "approvedAt": "t", "expiresAt": "t",
           "bundle": {"name": "b", "version": "1", "root": "r"}, "site": "s", "cluster": {}, "revision": 1,
           "summary": {"create": 1}}
    with pytest.raises(UsageError) as e:
        validate_document(ApprovalDocument, doc, what="approval", where="a.json")
    assert "operatr: unknown key (did you mean `operator`?)" in e.value.message
    assert "operator: required key is missing" in e.value.message


def _table_fields(doc: Path, heading: str) -> list[str]:
    """First-column `field` entries of the first table after ``heading``."""
    text = doc.read_text()
    fields: list[str] = []
    for line in text[text.index(heading):].splitlines():
        m = re.match(r"^\| `([^`]+)` \|", line)
        if m:
            fields.append(m[1])
        elif fields and not line.startswith("|"):
            break
    return fields


def test_docs_list_exactly_the_schema_fields() -> None:
    assert _table_fields(REPO / "docs/SPEC.md", "## The spec") == schema_fields(SpecDocument)
    assert _table_fields(REPO / "docs/SITE.md", "Every field") == schema_fields(SiteDocument)
    lock_top = [f.split(".")[0].removesuffix("[]") for f in schema_fields(LockDocument)]
    assert [f.removesuffix("[]") for f in _table_fields(REPO / "docs/SPEC.md", "## The lock")] \
        == list(dict.fromkeys(lock_top))
