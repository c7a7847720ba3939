"""installer verify, and every refusal happening before anything is visible in the registry or on the NAS.

``verify`` refuses before any write. ``load`` and ``stage`` check the signed root first and hash
each blob while they write it (docs/SECURITY.md): a bad blob is refused by name, after which the
registry holds no manifest or tag and the NAS no version that is not exactly what the root signs.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edgebundle import layout
from edgebundle.digest import sha256_bytes
from edgebundle.parts import open_source
from edgebundle.registry import Registry
from edgebundle.signing import TrustStore, load_public_key
from edgebundle.verify import Verifier
from installer.cli import main
from installer.imageplan import plan_image
from tests.fixtures.bundles import BuiltBundle, add_member, flip_byte, member_location, nas_snapshot

pytestmark = pytest.mark.timeout(120)

WRITES = ("PUT", "POST", "PATCH", "DELETE")


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("out_format", ["tar", "dir"])
def test_verify_ok_and_remembers_trust_files(bundle_factory: Any, tmp_path: Path, out_format: str) -> None:
    b = bundle_factory(out_format=out_format)
    site = b.site(tmp_path, "127.0.0.1:9")
    before = nas_snapshot(b.path) if b.path.is_dir() else b.path.stat()
    r = invoke("verify", b.path, "--site", site)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("OK: rag-edge 1.0.0 for rag-edge/x86_64") and b.root_digest in r.stdout
    r = invoke("verify", b.path, "--site", site, "--json")
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["root"] == b.root_digest and doc["blobs"] == len(b.root.blobs)
    kept = tmp_path / "state" / "bundles" / b.root_digest.split(":")[1]
    path, offset, size = member_location(b.path, layout.ROOT)
    with open(path, "rb") as f:
        f.seek(offset)
        envelope = f.read(size)
    assert (kept / "root.dsse.json").read_bytes() == envelope
    assert (kept / "root.json").read_bytes() == base64.b64decode(json.loads(envelope)["payload"])
    after = nas_snapshot(b.path) if b.path.is_dir() else b.path.stat()
    assert after == before


# -- tampering: each case returns (bundle to use, site overrides, culprit regex) -------------------

Case = Callable[[Any, Path], tuple[BuiltBundle, dict[str, Any], str]]


def _largest(b: BuiltBundle, media: str) -> str:
    return max((p for p in b.root.blobs.values() if p.mediaType.startswith(media)), key=lambda p: p.size).digest


def layer_flipped(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory().copy(tmp / "b")
    digest = _largest(b, "application/vnd.oci.image.layer")
    flip_byte(b.path, layout.blob_path(digest))
    return b, {}, re.escape(layout.blob_path(digest)) + ": content digest .* does not match .*part of image .*rag/llm-service:1.0"


def model_flipped(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory().copy(tmp / "b")
    blob = next(m for m in b.root.models if m.name == "tiny-llm").files[0].blob
    flip_byte(b.path, layout.blob_path(blob))
    # verify names the blob, then the file; stage names the file, then the blob
    return b, {}, rf"(?s)(?=.*{re.escape(layout.blob_path(blob))})(?=.*model tiny-llm 1\.0, file tiny-llm\.Q8_0\.gguf)"


def root_flipped(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory().copy(tmp / "b")
    flip_byte(b.path, layout.ROOT)
    return b, {}, "(does not match its payload|payload is not base64)"


def signature_flipped(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory().copy(tmp / "b")
    path, offset, size = member_location(b.path, layout.ROOT)
    with open(path, "rb") as f:
        f.seek(offset)
        doc = f.read(size)
    at = doc.index(b'"sig":"') + len(b'"sig":"') + 10  # a base64 character: stays valid base64
    with open(path, "r+b") as f:
        f.seek(offset + at)
        f.write(b"A" if doc[at:at + 1] != b"A" else b"B")
    return b, {}, "signature by trusted key .* does not match its payload"


def untrusted_key(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory(key="intruder")
    trusted = factory().pub
    return b, {"trust": [trusted]}, r"0 valid signature\(s\) by trusted keys, 1 required \(signed by: [0-9a-f]{16}"


def wrong_compatible(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    return factory(), {"compatible": "rag-edge/arm64"}, "is for 'rag-edge/x86_64', this site is 'rag-edge/arm64'"


def extra_member(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory().copy(tmp / "b")
    data = b"not part of the release\n"
    add_member(b.path, layout.blob_path(sha256_bytes(data)), data)
    return b, {}, "does not list: " + re.escape(layout.blob_path(sha256_bytes(data)))


def missing_blob(factory: Any, tmp: Path) -> tuple[BuiltBundle, dict[str, Any], str]:
    b = factory(out_format="dir").copy(tmp / "b")
    digest = _largest(b, "application/vnd.cncf.model")
    (b.path / layout.blob_path(digest)).unlink()
    return b, {}, "lacks 1 member.*" + re.escape(layout.blob_path(digest))


CASES: dict[str, Case] = {
    "layer": layer_flipped, "model": model_flipped, "root": root_flipped, "signature": signature_flipped,
    "untrusted-key": untrusted_key, "compatible": wrong_compatible, "extra-file": extra_member,
    "missing-blob": missing_blob,
}


#: Damage inside one blob (the signed root is intact) -> the step that does not use that blob and
#: so succeeds; the step that does meets the damage while writing.
CONTENT_CASES = {"layer": "stage", "model": "load"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_bundle_is_refused_before_any_write(case: str, bundle_factory: Any, registry: Any,
                                                      tmp_path: Path) -> None:
    b, overrides, culprit = CASES[case](bundle_factory, tmp_path)
    site = b.site(tmp_path / "site", registry.host, **overrides)
    nas = tmp_path / "site" / "nas"
    for verb in ("verify", "load", "stage"):
        r = invoke(verb, b.path, "--site", site)
        if verb == CONTENT_CASES.get(case):  # the damaged blob is not one this step uses
            assert r.exit_code == 0, f"{verb}: {r.output}"
            continue
        assert r.exit_code == 4, f"{verb}: {r.output}"
        assert re.search(culprit, r.stderr), f"{verb} did not name the culprit: {r.stderr}"
        assert "what to do:" in r.stderr
    r = invoke("stage" if CONTENT_CASES.get(case) == "load" else "load", b.path, "--site", site, "--json")
    assert r.exit_code == 4 and json.loads(r.stdout)["exitCode"] == 4
    if case == "layer":  # load stopped at the bad layer: its image has no manifest and no tag; an
        # image the layer is not part of may be tagged (its blobs were all in before the bad one was met)
        # only if every blob it names is in its repository
        bad = _largest(b, "application/vnd.oci.image.layer")
        vb = Verifier(TrustStore([load_public_key(b.pub)])).verify(open_source(b.path), content=False)
        writes = [e.path for e in registry.requests() if e.method in WRITES and "/manifests/" in e.path]
        with Registry(registry.host) as reg:
            catalog = reg.catalog()
            for plan in (plan_image(vb, im) for im in vb.root.images):
                repo, blobs = plan.image.repository, {p.digest for p in plan.blobs}
                tags = reg.list_tags(repo) if repo in catalog else []
                if bad in blobs:
                    assert tags == [] and not [w for w in writes if w.startswith(f"/v2/{repo}/manifests/")], repo
                elif tags:
                    assert all(reg.has_blob(repo, d) for d in blobs), f"{repo} is tagged without all its blobs"
    if case not in CONTENT_CASES:  # refused on the signed root: nothing at all was written
        assert not [e for e in registry.requests() if e.method in WRITES], "nothing may be pushed"
        assert list(nas.iterdir()) == []
    for key, digest in nas_snapshot(nas).items():  # any visible file is a genuine model file
        if not key.endswith("/") and not any(p.startswith(".") for p in key.split("/")):
            assert digest in {f.digest for m in b.root.models for f in m.files} | {None}, key
    assert not (tmp_path / "site" / "state" / "installed.json").exists()


def test_older_version_is_refused_unless_downgrade_is_allowed(bundle_factory: Any, registry_factory: Any,
                                                              tmp_path: Path) -> None:
    new, old = bundle_factory(version="2.0.0"), bundle_factory(version="1.0.0")
    state = tmp_path / "state"
    reg_a = registry_factory()
    site_a = new.site(tmp_path / "a", reg_a.host, state_dir=state)
    assert invoke("load", new.path, "--site", site_a).exit_code == 0
    assert invoke("stage", new.path, "--site", site_a).exit_code == 0

    # Same site state, a fresh registry and NAS: the refusal must leave both empty.
    reg_b = registry_factory()
    site_b = old.site(tmp_path / "b", reg_b.host, state_dir=state)
    for verb in ("verify", "load", "stage"):
        r = invoke(verb, old.path, "--site", site_b)
        assert r.exit_code == 4 and "rag-edge 1.0.0 is older than the installed 2.0.0" in r.stderr
    with Registry(reg_b.host) as reg:
        assert reg.catalog() == []
    assert list((tmp_path / "b" / "nas").iterdir()) == []

    reason = "2.0.0 breaks the scanner integration (ticket 42)"
    for verb in ("load", "stage"):
        r = invoke(verb, old.path, "--site", site_b, "--allow-downgrade", reason)
        assert r.exit_code == 0, r.output
    installed = json.loads((state / "installed.json").read_text())["bundles"]
    assert [(e["version"], e.get("downgradeReason")) for e in installed] == [("2.0.0", None), ("1.0.0", reason)]
    # Now 1.0.0 is what runs: installing 2.0.0 again is an upgrade, not a rollback.
    assert invoke("verify", new.path, "--site", site_b).exit_code == 0
