"""Fuzzing what users type: the spec, the lock, the site file, and the options of both CLIs.

No input may reach a Python traceback: a document either loads or is refused with an
``EdgebundleError``; a command line ends with a ``SystemExit`` (a documented exit code), never
another exception. Documents are mutations of valid ones (keys renamed, values of every YAML type,
keys added and dropped), so most inputs get past the first checks. Bounded: about 30 s in all
(``$EDGEBUNDLE_CLI_FUZZ_SECONDS``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bundler.cli import main as bundle_main
from edgebundle.errors import EdgebundleError
from installer.cli import main as installer_main

SECONDS = float(os.environ.get("EDGEBUNDLE_CLI_FUZZ_SECONDS", "30"))
#: Examples per test; the time budget usually ends a run first (and then only draws remain).
SETTINGS = settings(max_examples=800, deadline=None, database=None, phases=[Phase.explicit, Phase.generate,
                                                                            Phase.shrink],
                    suppress_health_check=list(HealthCheck))

SPEC = {"apiVersion": "edgebundle/v1", "kind": "Bundle",
        "metadata": {"name": "demo", "version": "1.0.0", "compatible": "demo/x86_64", "kubernetes": ">=1.25"},
        "spec": {"images": [{"ref": "127.0.0.1:5000/rag/a:1.0", "platforms": ["linux/amd64"]}],
                 "models": [{"name": "tiny", "kind": "llm", "version": "v1", "path": "tiny.gguf"}],
                 "manifests": ["manifests/"]}}
SITE = {"apiVersion": "edgebundle/v1", "kind": "Site", "metadata": {"name": "plant"},
        "spec": {"compatible": "demo/x86_64", "trust": {"keys": ["release.pub"], "threshold": 1},
                 "registry": {"address": "127.0.0.1:9", "plainHTTP": True, "uploadChunkBytes": 65536},
                 "models": {"root": "nas", "nfs": {"server": "10.0.0.5", "path": "/export"}},
                 "stateDir": "state", "cluster": {"manifestsDir": "k3s", "namespace": "rag"},
                 "requireValidation": {"keys": ["s.pub"]}, "siteKey": "s.key", "approval": {"keys": ["o.pub"]}}}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["", "1.9", "two", "linux/arm64", "../..", "~", ">=1.25"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with a few of its values replaced, keys renamed, added or dropped."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            action = draw(st.sampled_from(["keep", "keep", "keep", "mutate", "drop", "rename", "replace"]))
            if action == "drop":
                continue
            key = draw(st.text(min_size=1, max_size=10)) if action == "rename" else k
            out[key] = draw(values) if action == "replace" else draw(mutated(v)) if action == "mutate" else v
        if draw(st.booleans()):
            out[draw(st.text(max_size=10))] = draw(values)
        return out
    if isinstance(doc, list):
        return [draw(mutated(v)) for v in doc] + draw(st.lists(values, max_size=1))
    return draw(values) if draw(st.booleans()) else doc


def _dump(doc: Any, as_json: bool) -> str:
    return json.dumps(doc, default=str) if as_json else yaml.safe_dump(doc, allow_unicode=True)


def _bounded(share: float) -> Any:
    """Stop a Hypothesis run once its share of the time budget is spent."""
    deadline = time.monotonic() + SECONDS * share

    def out_of_time() -> bool:
        return time.monotonic() > deadline
    return out_of_time


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (d / "manifests").mkdir()
    (d / "nas").mkdir()
    return d


def test_documents_load_or_are_refused(world: Path) -> None:
    from bundler.lockfile import read_lock
    from bundler.spec import load_spec
    from installer.site import load_site

    out_of_time = _bounded(0.5)
    lock = {"lockVersion": 1, "spec": "sha256:0", "bundle": {"name": "demo", "version": "1.0.0"}, "created": "t",
            "images": [{"ref": "r", "digest": "d", "mediaType": "m", "platforms": {"linux/amd64": "d"}}],
            "models": [{"name": "tiny", "version": "v1", "files": [{"path": "p", "digest": "d", "size": 1}]}],
            "manifests": []}
    count = 0

    @SETTINGS
    @given(which=st.sampled_from(["spec", "site", "lock"]), data=st.data(), as_json=st.booleans())
    def one(which: str, data: st.DataObject, as_json: bool) -> None:
        nonlocal count
        doc = data.draw(mutated({"spec": SPEC, "site": SITE, "lock": lock}[which]))
        if out_of_time():  # after drawing, so that generation stays the same from run to run
            return
        count += 1
        path = world / f"doc-{which}.{'json' if which == 'lock' else 'yaml'}"
        path.write_text(_dump(doc, as_json or which == "lock"))
        try:
            {"spec": load_spec, "site": load_site, "lock": read_lock}[which](path)
        except EdgebundleError:
            pass

    one()
    print(f"\ndocuments fuzzed: {count}")
    assert count > 50


VERBS = {
    "bundle": ["lint", "lock", "create", "inspect", "verify", "split", "write-media", "keygen"],
    "installer": ["verify", "load", "stage", "plan", "approve", "apply", "status", "history", "rollback",
                  "prune", "validate", "install"],
}
OPTIONS = ["--json", "--site", "--key", "-o", "--output", "--size", "--split", "--base", "--lockfile", "--keep",
           "--operator", "--to", "--threshold", "--pubkey", "--timeout", "--ttl", "--dry-run", "--yes", "--force",
           "--locked", "--plain-http", "--allow-downgrade", "--registry", "--state-dir", "--models-root", "-h"]
WORDS = st.one_of(st.sampled_from(OPTIONS), st.sampled_from(["SPEC", "SITE", "0", "-1", "1.5", "fat32", "4G",
                                                             "999999999999999999999", "x", ""]),
                  st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12))  # argv never holds NUL nor lone surrogates


def test_command_lines_end_in_an_exit_code(world: Path) -> None:
    site = world / "site.yaml"
    site.write_text(yaml.safe_dump({**SITE, "spec": {**SITE["spec"], "cluster": {"manifestsDir": "k3s"}}}))
    spec = world / "bundle.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "spec": {**SPEC["spec"], "images": []}}))
    out_of_time = _bounded(0.5)
    count = 0

    @SETTINGS
    @given(tool=st.sampled_from(["bundle", "installer"]), data=st.data())
    def one(tool: str, data: st.DataObject) -> None:
        nonlocal count
        verb = data.draw(st.sampled_from(VERBS[tool]))
        words = data.draw(st.lists(WORDS, max_size=6))
        if out_of_time():
            return
        count += 1
        argv = [verb] + [str(spec) if w == "SPEC" else str(site) if w == "SITE" else w for w in words]
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory(dir=world) as scratch:  # whatever a verb writes goes here
            os.chdir(scratch)
            try:
                r = CliRunner().invoke(bundle_main if tool == "bundle" else installer_main, argv, input="n\n")
            finally:
                os.chdir(cwd)
        assert r.exception is None or isinstance(r.exception, SystemExit), (argv, r.output, r.exc_info)

    one()
    print(f"\ncommand lines fuzzed: {count}")
    assert count > 20
