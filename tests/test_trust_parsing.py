"""The strict root parser and version order, pinned case by case (pure and fast).

A signed root is not trusted to be well-formed: every hostile edit below must be refused by
:func:`edgebundle.root.parse_root` (which the verifier runs on the signed bytes), and the untouched
documents must parse. Version order is checked as the verifier applies it (rollback policy), on
SemVer's own precedence list and the mixed forms met in the field. These are the tests
``make mutation`` runs against edgebundle/root.py and edgebundle/layout.py (docs/MUTATION.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgebundle.root import MalformedRootError, parse_root
from edgebundle.signing import TrustStore, load_public_key
from edgebundle.parts import open_source
from edgebundle.verify import Policy, RollbackError, Verifier
from tests.hostile.targets import sample_root
from tests.test_trust_core import _BUILT, Bundles, bundles, canonical  # noqa: F401

pytestmark = pytest.mark.timeout(120)

D = "sha256:" + "ab" * 32  # a well-formed digest the sample roots do not pin


# --- the strict root parser ----------------------------------------------------------------------

def _doc(delta: bool = False) -> dict[str, Any]:
    return json.loads(sample_root(delta=delta).to_bytes())


def _first(d: dict[str, Any]) -> str:
    return sorted(d)[0]


def _rebuild(doc: dict[str, Any], method: str) -> dict[str, Any]:
    return next(e for e in doc["delta"]["rebuild"].values() if e["method"] == method)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


def _del(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node = doc
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
    return edit


def _fn(f: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    return lambda doc: (f(doc), None)[1]


MODEL_FILE = ("models", 0, "files", 0)
HOSTILE_ROOTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "not-a-root-type": _set(("_type",), "edgebundle.other"),
    "future-spec-version": _set(("specVersion",), 99),
    "unknown-top-level-key": _set(("extra",), 1),
    "name-with-space": _set(("name",), "rag edge"),
    "name-uppercase": _set(("name",), "Rag"),
    "name-leading-dash": _set(("name",), "-rag"),
    "name-traversal": _set(("name",), "../rag"),
    "name-missing": _del(("name",)),
    "name-not-a-string": _set(("name",), 5),
    "version-with-slash": _set(("version",), "1/2"),
    "version-empty": _set(("version",), ""),
    "version-too-long": _set(("version",), "1" * 65),
    "compatible-missing": _del(("compatible",)),
    "created-not-a-string": _set(("created",), 5),
    "files-lack-index": _del(("files", "index.json")),
    "files-extra": _set(("files", "blobs/x"), {"digest": D, "size": 1}),
    "files-not-an-object": _set(("files",), []),
    "file-digest-not-sha256": _set(("files", "index.json", "digest"), "md5:abc"),
    "file-digest-short": _set(("files", "index.json", "digest"), "sha256:abc"),
    "file-size-negative": _set(("files", "index.json", "size"), -1),
    "file-size-huge": _set(("files", "index.json", "size"), (1 << 50) + 1),
    "file-size-bool": _set(("files", "index.json", "size"), True),
    "file-size-string": _set(("files", "index.json", "size"), "512"),
    "blob-key-not-a-digest": _fn(lambda d: d["blobs"].update({"sha256:zz": d["blobs"][_first(d["blobs"])]})),
    "blob-pins-another-digest": _fn(lambda d: d["blobs"][_first(d["blobs"])].update(digest=D)),
    "blob-not-an-object": _fn(lambda d: d["blobs"].update({_first(d["blobs"]): 5})),
    "blob-lacks-media-type": _fn(lambda d: d["blobs"][_first(d["blobs"])].pop("mediaType")),
    "blob-size-negative": _fn(lambda d: d["blobs"][_first(d["blobs"])].update(size=-5)),
    "image-not-an-object": _set(("images", 0), "x"),
    "image-platform-not-a-string": _set(("images", 0, "platforms"), [1]),
    "image-digest-not-pinned": _set(("images", 0, "digest"), D),
    "image-lacks-ref": _del(("images", 0, "ref")),
    "image-tag-not-a-string": _set(("images", 0, "tag"), 5),
    "images-not-a-list": _set(("images",), {}),
    "model-not-an-object": _set(("models", 0), 1),
    "model-kind-unknown": _set(("models", 0, "kind"), "weights"),
    "model-name-traversal": _set(("models", 0, "name"), ".."),
    "model-name-slash": _set(("models", 0, "name"), "a/b"),
    "model-version-hidden": _set(("models", 0, "version"), ".1"),
    "model-manifest-not-pinned": _set(("models", 0, "manifest"), D),
    "model-param-count-bool": _set(("models", 0, "paramCount"), True),
    "model-context-string": _set(("models", 0, "contextLength"), "2048"),
    "model-file-not-an-object": _set(MODEL_FILE, 1),
    "model-file-encoding-unknown": _set((*MODEL_FILE, "encoding"), "gzip"),
    "model-file-path-parent": _set((*MODEL_FILE, "path"), "../model.gguf"),
    "model-file-path-absolute": _set((*MODEL_FILE, "path"), "/etc/passwd"),
    "model-file-path-backslash": _set((*MODEL_FILE, "path"), "a\\b"),
    "model-file-path-empty-part": _set((*MODEL_FILE, "path"), "a//b"),
    "model-file-path-dot": _set((*MODEL_FILE, "path"), "./a"),
    "model-file-path-empty": _set((*MODEL_FILE, "path"), ""),
    "model-file-path-trailing-slash": _set((*MODEL_FILE, "path"), "a/"),
    "model-file-blob-not-pinned": _set((*MODEL_FILE, "blob"), D),
    "model-file-digest-bad": _set((*MODEL_FILE, "digest"), "sha256:" + "AB" * 32),
    "manifests-file-path-parent": _set(("manifests", "files", 0, "path"), "../x.yaml"),
    "manifests-file-not-pinned": _set(("manifests", "files", 0, "digest"), D),
    "manifests-file-not-an-object": _set(("manifests", "files", 0), []),
    "manifests-manifest-not-pinned": _set(("manifests", "manifest"), D),
    "base-without-delta": _set(("base",), {"name": "rag-edge", "version": "1.0.0", "root": D}),
}

HOSTILE_DELTAS: dict[str, Callable[[dict[str, Any]], None]] = {
    "delta-without-base": _del(("base",)),
    "base-root-not-a-digest": _set(("base", "root"), "sha256:1"),
    "delta-unknown-key": _set(("delta", "extra"), {}),
    "carried-key-not-a-digest": _fn(lambda d: d["delta"]["carried"].update({"x": {"size": 1, "kind": "blob"}})),
    "carried-unknown-kind": _fn(lambda d: d["delta"]["carried"][_rebuild(d, "bsdiff4")["patch"]].update(kind="x")),
    "carried-unknown-key": _fn(lambda d: d["delta"]["carried"][_rebuild(d, "bsdiff4")["patch"]].update(x=1)),
    "carried-blob-of-other-size": _fn(lambda d: next(c for c in d["delta"]["carried"].values()
                                                    if c["kind"] == "blob").update(size=1)),
    "carried-blob-not-a-target": _fn(lambda d: d["delta"]["carried"].update({D: {"size": 1, "kind": "blob"}})),
    "carried-patch-unused": _fn(lambda d: d["delta"]["carried"].update({D: {"size": 1, "kind": "patch"}})),
    "rebuild-lacks-a-blob": _fn(lambda d: d["delta"]["rebuild"].pop(_first(d["delta"]["rebuild"]))),
    "rebuild-extra-blob": _fn(lambda d: d["delta"]["rebuild"].update({D: {"method": "whole", "size": 1}})),
    "rebuild-not-an-object": _fn(lambda d: d["delta"]["rebuild"].update({_first(d["delta"]["rebuild"]): 1})),
    "rebuild-unknown-method": _fn(lambda d: _rebuild(d, "bsdiff4").update(method="xdelta")),
    "rebuild-unknown-key": _fn(lambda d: _rebuild(d, "bsdiff4").update(extra=1)),
    "rebuild-size-differs": _fn(lambda d: _rebuild(d, "bsdiff4").update(size=1)),
    "rebuild-what-not-a-string": _fn(lambda d: _rebuild(d, "bsdiff4").update(what=1)),
    "rebuild-carried-bytes-string": _fn(lambda d: _rebuild(d, "bsdiff4").update(carriedBytes="1")),
    "rebuild-pieces-not-counts": _fn(lambda d: _rebuild(d, "bsdiff4").update(pieces={"a": "b"})),
    "whole-but-not-carried": _fn(lambda d: _rebuild(d, "bsdiff4").update(method="whole")),
    "whole-with-a-patch": _fn(lambda d: _rebuild(d, "whole").update(patch=D)),
    "carried-whole-but-patched": _fn(lambda d: _rebuild(d, "whole").update(
        method="bsdiff4", patch=_rebuild(d, "bsdiff4")["patch"], **{"from": _rebuild(d, "bsdiff4")["from"]})),
    "patch-not-carried": _fn(lambda d: _rebuild(d, "bsdiff4").update(patch=D)),
    "from-not-an-object": _fn(lambda d: _rebuild(d, "bsdiff4").update(**{"from": 1})),
    "from-unknown-key": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(extra=1)),
    "from-size-negative": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(size=-1)),
    "from-digest-bad": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(digest="sha256:x")),
    "from-at-two-places": _fn(lambda d: _rebuild(d, "bsdiff4")["from"]["at"].update(
        nas={"kind": "llm", "name": "m", "version": "1", "path": "f"})),
    "from-at-nowhere": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(at={})),
    "from-registry-repository-bad": _fn(lambda d: _rebuild(d, "bsdiff4")["from"]["at"]["registry"].update(
        repository="Rag/LLM")),
    "from-registry-repository-traversal": _fn(lambda d: _rebuild(d, "bsdiff4")["from"]["at"]["registry"].update(
        repository="rag/../llm")),
    "from-registry-endpoint-bad": _fn(lambda d: _rebuild(d, "bsdiff4")["from"]["at"]["registry"].update(
        endpoint="tags")),
    "from-registry-unknown-key": _fn(lambda d: _rebuild(d, "bsdiff4")["from"]["at"]["registry"].update(x=1)),
    "from-nas-kind-bad": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(
        at={"nas": {"kind": "x", "name": "m", "version": "1", "path": "f"}})),
    "from-nas-name-traversal": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(
        at={"nas": {"kind": "llm", "name": "..", "version": "1", "path": "f"}})),
    "from-nas-path-traversal": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(
        at={"nas": {"kind": "llm", "name": "m", "version": "1", "path": "../f"}})),
    "from-nas-unknown-key": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(
        at={"nas": {"kind": "llm", "name": "m", "version": "1", "path": "f", "x": 1}})),
    "from-nas-without-target-file": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(
        at={"nas": {"kind": "llm", "name": "m", "version": "1", "path": "f"}})),
    "base-method-with-patch": _fn(lambda d: _rebuild(d, "bsdiff4").update(method="base")),
    "base-method-other-content": _fn(lambda d: _rebuild(d, "bsdiff4").update(method="base") or
                                     _rebuild(d, "base").pop("patch")),
}


#: Where each refusal must point: the message's first words, digests elided. A user fixing (or a
#: maintainer judging) a refused bundle relies on the message naming the field that is wrong.
ROOT_LOCATIONS = {
    "base-without-delta": "root: a",
    "blob-key-not-a-digest": "root: blobs",
    "blob-lacks-media-type": "root: blobs[sha256:…]",
    "blob-not-an-object": "root: blobs",
    "blob-pins-another-digest": "root: blobs[sha256:…]",
    "blob-size-negative": "root: blobs[sha256:…].size",
    "compatible-missing": "root: root",
    "created-not-a-string": "root: root.created",
    "file-digest-not-sha256": "root: files[index.json].digest",
    "file-digest-short": "root: files[index.json].digest",
    "file-size-bool": "root: files[index.json].size",
    "file-size-huge": "root: files[index.json].size",
    "file-size-negative": "root: files[index.json].size",
    "file-size-string": "root: files[index.json].size",
    "files-extra": "root: files",
    "files-lack-index": "root: root.files",
    "files-not-an-object": "root: root.files",
    "future-spec-version": "root.json has",
    "image-digest-not-pinned": "root: images[0]",
    "image-lacks-ref": "root: images[0]",
    "image-not-an-object": "root: images[0]",
    "image-platform-not-a-string": "root: images[0].platforms",
    "image-tag-not-a-string": "root: images[0].tag",
    "images-not-a-list": "root: root.images",
    "manifests-file-not-an-object": "root: manifests.files[0]",
    "manifests-file-not-pinned": "root: manifests.files[0]",
    "manifests-file-path-parent": "root: manifests.files[0].path",
    "manifests-manifest-not-pinned": "root: manifests",
    "model-context-string": "root: models[0].contextLength",
    "model-file-blob-not-pinned": "root: models[0].files[0]",
    "model-file-digest-bad": "root: models[0].files[0].digest",
    "model-file-encoding-unknown": "root: models[0].files[0].encoding",
    "model-file-not-an-object": "root: models[0].files[0]",
    "model-file-path-absolute": "root: models[0].files[0].path",
    "model-file-path-backslash": "root: models[0].files[0].path",
    "model-file-path-dot": "root: models[0].files[0].path",
    "model-file-path-empty": "root: models[0].files[0].path",
    "model-file-path-empty-part": "root: models[0].files[0].path",
    "model-file-path-parent": "root: models[0].files[0].path",
    "model-file-path-trailing-slash": "root: models[0].files[0].path",
    "model-kind-unknown": "root: models[0].kind",
    "model-manifest-not-pinned": "root: models[0]",
    "model-name-slash": "root: models[0].name",
    "model-name-traversal": "root: models[0].name",
    "model-not-an-object": "root: models[0]",
    "model-param-count-bool": "root: models[0].paramCount",
    "model-version-hidden": "root: models[0].version",
    "name-leading-dash": "root: name",
    "name-missing": "root: root",
    "name-not-a-string": "root: root.name",
    "name-traversal": "root: name",
    "name-uppercase": "root: name",
    "name-with-space": "root: name",
    "not-a-root-type": "root.json has",
    "unknown-top-level-key": "root.json has",
    "version-empty": "root: version",
    "version-too-long": "root: version",
    "version-with-slash": "root: version",
}
DELTA_LOCATIONS = {
    "base-method-other-content": "root: delta.rebuild[sha256:…]",
    "base-method-with-patch": "root: delta.rebuild[sha256:…]",
    "base-root-not-a-digest": "root: base.root",
    "carried-blob-not-a-target": "root: delta.carried[sha256:…]",
    "carried-blob-of-other-size": "root: delta.carried[sha256:…]",
    "carried-key-not-a-digest": "root: delta.carried",
    "carried-patch-unused": "root: delta.carried",
    "carried-unknown-key": "root: delta.carried[sha256:…]",
    "carried-unknown-kind": "root: delta.carried[sha256:…].kind",
    "carried-whole-but-patched": "root: delta.rebuild[sha256:…]",
    "delta-unknown-key": "root: delta",
    "delta-without-base": "root: a",
    "from-at-nowhere": "root: delta.rebuild[sha256:…].from.at",
    "from-at-two-places": "root: delta.rebuild[sha256:…].from.at",
    "from-digest-bad": "root: delta.rebuild[sha256:…].from.digest",
    "from-nas-kind-bad": "root: delta.rebuild[sha256:…].from.at.nas.kind",
    "from-nas-name-traversal": "root: delta.rebuild[sha256:…].from.at.nas.name",
    "from-nas-path-traversal": "root: delta.rebuild[sha256:…].from.at.nas.path",
    "from-nas-unknown-key": "root: delta.rebuild[sha256:…].from.at.nas",
    "from-nas-without-target-file": "root: delta.rebuild[sha256:…]",
    "from-not-an-object": "root: delta.rebuild[sha256:…].from",
    "from-registry-endpoint-bad": "root: delta.rebuild[sha256:…].from.at.registry.endpoint",
    "from-registry-repository-bad": "root: delta.rebuild[sha256:…].from.at.registry.repository",
    "from-registry-repository-traversal": "root: delta.rebuild[sha256:…].from.at.registry.repository",
    "from-registry-unknown-key": "root: delta.rebuild[sha256:…].from.at.registry",
    "from-size-negative": "root: delta.rebuild[sha256:…].from.size",
    "from-unknown-key": "root: delta.rebuild[sha256:…].from",
    "patch-not-carried": "root: delta.rebuild[sha256:…].patch",
    "rebuild-carried-bytes-string": "root: delta.rebuild[sha256:…].carriedBytes",
    "rebuild-extra-blob": "root: delta.rebuild",
    "rebuild-lacks-a-blob": "root: delta.rebuild",
    "rebuild-not-an-object": "root: delta.rebuild[sha256:…]",
    "rebuild-pieces-not-counts": "root: delta.rebuild[sha256:…].pieces",
    "rebuild-size-differs": "root: delta.rebuild[sha256:…].size",
    "rebuild-unknown-key": "root: delta.rebuild[sha256:…]",
    "rebuild-unknown-method": "root: delta.rebuild[sha256:…].method",
    "rebuild-what-not-a-string": "root: delta.rebuild[sha256:…].what",
    "whole-but-not-carried": "root: delta.rebuild[sha256:…]",
    "whole-with-a-patch": "root: delta.rebuild[sha256:…]",
    "carried-lacks-kind": "root: delta.carried[sha256:…]",
    "carried-lacks-size": "root: delta.carried[sha256:…]",
    "carried-not-an-object": "root: delta.carried",
    "file-identity-but-other-digest": "root: delta.rebuild[sha256:…].file",
    "file-not-an-object": "root: delta.rebuild[sha256:…].file",
    "file-of-a-blob-that-is-no-model-file": "root: delta.rebuild[sha256:…].file",
    "file-other-digest": "root: delta.rebuild[sha256:…].file",
    "file-other-encoding": "root: delta.rebuild[sha256:…].file",
    "file-other-path": "root: delta.rebuild[sha256:…].file",
    "file-other-size": "root: delta.rebuild[sha256:…].file",
    "file-unknown-key": "root: delta.rebuild[sha256:…].file",
    "from-lacks-at": "root: delta.rebuild[sha256:…].from",
    "from-nas-kind-not-a-string": "root: delta.rebuild[sha256:…].from.at.nas.kind",
    "from-nas-not-an-object": "root: delta.rebuild[sha256:…].from.at.nas",
    "from-nas-version-not-a-string": "root: delta.rebuild[sha256:…].from.at.nas.version",
    "from-registry-endpoint-missing": "root: delta.rebuild[sha256:…].from.at.registry",
    "from-registry-not-an-object": "root: delta.rebuild[sha256:…].from.at.registry",
    "from-registry-repository-not-a-string": "root: delta.rebuild[sha256:…].from.at.registry.repository",
    "from-registry-repository-too-long": "root: delta.rebuild[sha256:…].from.at.registry.repository",
    "rebuild-lacks-method": "root: delta.rebuild[sha256:…]",
    "rebuild-lacks-size": "root: delta.rebuild[sha256:…]",
    "rebuild-not-a-dict": "root: delta.rebuild",
    "rebuild-pieces-not-an-object": "root: delta.rebuild[sha256:…].pieces",
    "rebuild-reason-not-a-string": "root: delta.rebuild[sha256:…].reason",
    "rebuild-zstd-not-a-string": "root: delta.rebuild[sha256:…].zstd",
    "whole-with-a-file": "root: delta.rebuild[sha256:…]",
    "whole-with-a-source": "root: delta.rebuild[sha256:…]",
}


def location(message: str) -> str:
    return " ".join(re.sub(r"sha256:[0-9a-f]{64}", "sha256:…", message).split(" ")[:2])


def _file_rebuild(doc: dict[str, Any], which: int = 1) -> dict[str, Any]:
    """Turn the carried blob of model file ``which`` into one rebuilt from a NAS file with a patch."""
    f = doc["models"][0]["files"][which]
    blob = f["blob"]
    patch = _rebuild(doc, "bsdiff4")["patch"]
    del doc["delta"]["carried"][blob]
    entry = {"method": "zstd-patch-from", "size": doc["blobs"][blob]["size"], "patch": patch,
             "from": {"digest": D, "size": 1999,
                      "at": {"nas": {"kind": "llm", "name": "Smollm2", "version": "0.9", "path": f["path"]}}},
             "file": {k: f[k] for k in ("path", "digest", "size", "encoding")}}
    doc["delta"]["rebuild"][blob] = entry
    return entry


def _registry_from(doc: dict[str, Any]) -> dict[str, Any]:
    return _rebuild(doc, "bsdiff4")["from"]["at"]["registry"]  # type: ignore[no-any-return]


HOSTILE_DELTAS.update({
    "from-lacks-at": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].pop("at")),
    "from-registry-not-an-object": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(at={"registry": 1})),
    "from-registry-repository-not-a-string": _fn(lambda d: _registry_from(d).update(repository=5)),
    "from-registry-repository-too-long": _fn(lambda d: _registry_from(d).update(repository="a" * 256)),
    "from-registry-endpoint-missing": _fn(lambda d: _registry_from(d).pop("endpoint")),
    "from-nas-not-an-object": _fn(lambda d: _rebuild(d, "bsdiff4")["from"].update(at={"nas": 1})),
    "from-nas-kind-not-a-string": _fn(lambda d: _file_rebuild(d)["from"]["at"]["nas"].update(kind=5)),
    "from-nas-version-not-a-string": _fn(lambda d: _file_rebuild(d)["from"]["at"]["nas"].update(version=1)),
    "carried-not-an-object": _set(("delta", "carried"), []),
    "carried-lacks-size": _fn(lambda d: d["delta"]["carried"][_rebuild(d, "bsdiff4")["patch"]].pop("size")),
    "carried-lacks-kind": _fn(lambda d: d["delta"]["carried"][_rebuild(d, "bsdiff4")["patch"]].pop("kind")),
    "rebuild-not-a-dict": _set(("delta", "rebuild"), []),
    "rebuild-lacks-method": _fn(lambda d: _rebuild(d, "bsdiff4").pop("method")),
    "rebuild-lacks-size": _fn(lambda d: _rebuild(d, "bsdiff4").pop("size")),
    "rebuild-reason-not-a-string": _fn(lambda d: _rebuild(d, "bsdiff4").update(reason=1)),
    "rebuild-zstd-not-a-string": _fn(lambda d: _rebuild(d, "bsdiff4").update(zstd=1)),
    "rebuild-pieces-not-an-object": _fn(lambda d: _rebuild(d, "bsdiff4").update(pieces=[])),
    "whole-with-a-source": _fn(lambda d: _rebuild(d, "whole").update(**{"from": _rebuild(d, "bsdiff4")["from"]})),
    "whole-with-a-file": _fn(lambda d: _rebuild(d, "whole").update(file={})),
    "file-not-an-object": _fn(lambda d: _file_rebuild(d).update(file=[])),
    "file-unknown-key": _fn(lambda d: _file_rebuild(d)["file"].update(x=1)),
    "file-other-path": _fn(lambda d: _file_rebuild(d)["file"].update(path="tok/other.json")),
    "file-other-digest": _fn(lambda d: _file_rebuild(d)["file"].update(digest=D)),
    "file-other-size": _fn(lambda d: _file_rebuild(d)["file"].update(size=1)),
    "file-other-encoding": _fn(lambda d: _file_rebuild(d)["file"].update(encoding="identity")),
    "file-identity-but-other-digest": _fn(lambda d: _file_rebuild(d, which=0)),
    "file-of-a-blob-that-is-no-model-file": _fn(lambda d: _rebuild(d, "bsdiff4").update(
        file={k: d["models"][0]["files"][1][k] for k in ("path", "digest", "size", "encoding")})),
})


def test_delta_forms_that_are_allowed() -> None:
    """Controls for the delta table: a model file rebuilt from the NAS (a mixed-case model name), a
    manifests endpoint, a 255-character repository."""
    doc = _doc(delta=True)
    entry = _file_rebuild(doc)
    root = parse_root(canonical(doc))
    assert root.delta is not None and root.delta["rebuild"][doc["models"][0]["files"][1]["blob"]] == entry
    _registry_from(doc).update(endpoint="manifests", repository="a" * 255)
    parse_root(canonical(doc))


@pytest.mark.parametrize("edit", sorted(HOSTILE_ROOTS), ids=str)
def test_a_hostile_root_is_refused_naming_the_field(edit: str) -> None:
    doc = _doc()
    HOSTILE_ROOTS[edit](doc)
    with pytest.raises(MalformedRootError) as e:
        parse_root(canonical(doc))
    assert location(e.value.message) == ROOT_LOCATIONS[edit], e.value.message


@pytest.mark.parametrize("edit", sorted(HOSTILE_DELTAS), ids=str)
def test_a_hostile_delta_root_is_refused_naming_the_field(edit: str) -> None:
    doc = _doc(delta=True)
    HOSTILE_DELTAS[edit](doc)
    with pytest.raises(MalformedRootError) as e:
        parse_root(canonical(doc))
    assert location(e.value.message) == DELTA_LOCATIONS[edit], e.value.message


def test_the_sample_roots_parse_and_optional_fields_may_be_absent() -> None:
    """The control for the tables above: the untouched documents parse, with what they say."""
    for delta in (False, True):
        doc = _doc(delta)
        root = parse_root(canonical(doc))
        assert (root.name, root.version, root.is_delta) == ("rag-edge", "1.2.0", delta)
        assert [f.path for f in root.models[0].files] == ["model.gguf", "tok/tokenizer.json"]
    doc = _doc()
    for key in ("architecture", "quantization", "paramCount", "contextLength"):
        doc["models"][0][key] = None
    doc["images"][0]["tag"] = None  # a tagless image is named by its repository alone (refName rule)
    doc["images"][0]["refName"] = doc["images"][0]["repository"]
    doc["manifests"] = None
    root = parse_root(canonical(doc))
    assert root.manifests is None and root.models[0].paramCount is None and root.images[0].tag is None


def test_root_json_bounds() -> None:
    """Oversized, deeply nested or non-JSON root bytes are refused before json.loads sees them."""
    good = canonical(_doc())
    for data in (good + b" " * (16 * 1024 * 1024), b"[" * 65 + b"]" * 65, b"\xff\xfe", b"{", b"[]",
                 b'{"a": "' + b"[" * 100 + b'"}'):
        with pytest.raises(MalformedRootError):
            parse_root(data)
    nested_in_string = json.loads(good)  # in a free-text field: "created" must now be a timestamp
    nested_in_string["compatible"] = "[" * 100 + "\\\"" + "{" * 100
    assert parse_root(canonical(nested_in_string)).compatible.startswith("[[[")


# --- version order: SemVer's precedence list, and mixed forms -------------------------------------

#: semver.org, section 11, in increasing precedence, then the forms edgebundle meets in the field.
SEMVER = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
          "1.0.0-rc.1", "1.0.0", "1.0.1", "1.9.0", "1.10.0", "1.10.1", "2.0.0", "10.0.0"]


def _version_bundle(bundles: Bundles, version: str) -> Path:
    key = f"version:{version}"
    if key not in _BUILT:
        w = bundles.world
        _BUILT[key] = w.build(w.spec(f"v-{version}", version), f"version-{version}", "release")
    return _BUILT[key]  # type: ignore[no-any-return]


def _verify_against(bundles: Bundles, version: str, installed: str) -> None:
    trust = TrustStore([load_public_key(bundles.world.keys["release"].pub)])
    Verifier(trust, Policy(installed=("tiny", installed))).verify(open_source(_version_bundle(bundles, version)),
                                                                  content=False)


@pytest.mark.parametrize("older,newer", list(zip(SEMVER, SEMVER[1:])), ids=lambda v: v)
def test_an_older_version_is_refused_as_a_rollback(bundles: Bundles, older: str, newer: str) -> None:
    with pytest.raises(RollbackError):
        _verify_against(bundles, older, installed=newer)
    _verify_against(bundles, newer, installed=older)  # the upgrade is fine
    _verify_against(bundles, newer, installed=newer)  # so is the same version again


def test_version_order_mixed_forms(bundles: Bundles) -> None:
    """Short forms equal their zero-padded ones; a longer release is newer; another bundle name is not compared."""
    _verify_against(bundles, "1.9.0", installed="1.9")
    with pytest.raises(RollbackError):  # a text release part sorts above every number (SECURITY.md)
        _verify_against(bundles, "1.0.0", installed="1.x")
    with pytest.raises(RollbackError):
        _verify_against(bundles, "1.0.0", installed="1.x.1")
    _verify_against(bundles, "1.10.0", installed="1.9.9.9")
    with pytest.raises(RollbackError):
        _verify_against(bundles, "1.9.0", installed="1.9.0.1")
    with pytest.raises(RollbackError):
        _verify_against(bundles, "1.0.0-rc.1", installed="1.0")
    trust = TrustStore([load_public_key(bundles.world.keys["release"].pub)])
    Verifier(trust, Policy(installed=("other-bundle", "9.0.0"))).verify(
        open_source(_version_bundle(bundles, "1.0.0")), content=False)
    Verifier(trust, Policy(installed=("tiny", "9.0.0"), allow_downgrade=True)).verify(
        open_source(_version_bundle(bundles, "1.0.0")), content=False)


# --- member names: what a bundle tar may hold -----------------------------------------------------

def _tar_of(bundle_dir: Path, out: Path, *, prefix: str = "", extra: tuple[tuple[str, bytes], ...] = ()) -> Path:
    """A tar of ``bundle_dir`` written by Python's tarfile (not the product): the signed root first."""
    import io
    import tarfile

    head = ["oci-layout", "edgebundle/root.dsse.json", "index.json"]
    head += [n for n in ("edgebundle/sbom.cdx.json",) if (bundle_dir / n).is_file()]
    names = head + sorted(p.relative_to(bundle_dir).as_posix() for p in (bundle_dir / "blobs").rglob("*") if p.is_file())
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names:
            tar.add(bundle_dir / name, arcname=prefix + name, recursive=False)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def _bundle_verify(b: Path, bundles: Bundles) -> Any:
    from click.testing import CliRunner

    from bundler.cli import main

    return CliRunner().invoke(main, ["verify", str(b), "--pubkey", str(bundles.world.keys["release"].pub)])


def test_a_tar_written_by_another_tool_verifies(bundles: Bundles, tmp_path: Path) -> None:
    """The control for the hostile names below (and ``./``-prefixed names are the same members)."""
    for prefix in ("", "./"):
        r = _bundle_verify(_tar_of(bundles.v100, tmp_path / f"b{len(prefix)}.tar", prefix=prefix), bundles)
        assert r.exit_code == 0, r.output


HOSTILE_NAMES = ["../evil", "/etc/evil", "blobs/sha256/../../evil", "blobs\\sha256\\x", "blobs//sha256/x",
                 "blobs/sha256/" + "A" * 64, "blobs/sha256/" + "0" * 63, "blobs/sha256/" + "0" * 64 + "/x",
                 "blobs/sha512/" + "0" * 64, "edgebundle/other.json", "index.json.bak", "blobs/sha256/./x",
                 "oci-layout/x"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_tar_member_outside_the_bundle_layout_is_refused(name: str, bundles: Bundles, tmp_path: Path) -> None:
    b = _tar_of(bundles.v100, tmp_path / "b.tar", extra=((name, b"smuggled"),))
    r = _bundle_verify(b, bundles)
    assert r.exit_code == 4, r.output
    assert "member" in r.stderr or name.split("/")[-1] in r.stderr, r.stderr


def test_blob_paths_and_digests_round_trip() -> None:
    from edgebundle import layout

    d = "sha256:" + "0123456789abcdef" * 4
    assert layout.blob_path(d) == "blobs/sha256/" + "0123456789abcdef" * 4
    assert layout.digest_of_blob_path(layout.blob_path(d)) == d
    for bad in ("sha256:" + "0" * 63, "sha512:" + "0" * 64, "sha256:" + "A" * 64, "0" * 64):
        with pytest.raises(ValueError):
            layout.blob_path(bad)
    assert layout.digest_of_blob_path("index.json") is None
    assert layout.digest_of_blob_path("blobs/sha256/" + "0" * 64 + "0") is None
    b, a = "sha256:" + "b" * 64, "sha256:" + "a" * 64
    assert layout.member_order([b, a]) == ["oci-layout", "edgebundle/root.dsse.json", "index.json",
                                           "blobs/sha256/" + "a" * 64, "blobs/sha256/" + "b" * 64]



# --- the part index: signed, but not trusted to be well-formed --------------------------------------

def _index_doc(n: int = 3) -> dict[str, Any]:
    from tests.hostile.targets import sample_part_index

    return json.loads(sample_part_index(n).to_bytes())


HOSTILE_INDEXES: dict[str, Callable[[dict[str, Any]], None]] = {
    "not-an-index": _set(("_type",), "edgebundle.root"),
    "future-spec": _set(("specVersion",), 99),
    "bundle-not-an-object": _set(("bundle",), []),
    "bundle-file-traversal": _set(("bundle", "file"), "../rag-edge-1.2.0.tar"),
    "bundle-file-not-tar": _set(("bundle", "file"), "rag-edge-1.2.0.zip"),
    "bundle-file-missing": _del(("bundle", "file")),
    "bundle-root-not-a-digest": _set(("bundle", "root"), "sha256:1"),
    "digest-not-a-digest": _set(("digest",), "md5:1"),
    "size-string": _set(("size",), "10000"),
    "size-bool": _set(("partSize",), True),
    "no-parts": _set(("parts",), []),
    "parts-not-a-list": _set(("parts",), {}),
    "part-not-an-object": _set(("parts", 0), "x"),
    "part-renamed": _fn(lambda d: d["parts"][1].update(file=d["parts"][2]["file"])),
    "part-traversal": _set(("parts", 0, "file"), "../rag-edge-1.2.0.tar.part000"),
    "part-offset-gap": _fn(lambda d: d["parts"][1].update(offset=d["parts"][1]["offset"] + 1)),
    "part-size-zero": _set(("parts", 0, "size"), 0),
    "part-larger-than-part-size": _fn(lambda d: d["parts"][0].update(size=d["partSize"] + 1)),
    "part-digest-bad": _set(("parts", 0, "digest"), "sha256:zz"),
    "part-lacks-offset": _del(("parts", 0, "offset")),
    "sizes-do-not-add-up": _fn(lambda d: d.update(size=d["size"] + 1)),
    "bundle-name-not-a-string": _set(("bundle", "name"), 5),
    "bundle-version-missing": _del(("bundle", "version")),
}


@pytest.mark.parametrize("edit", sorted(HOSTILE_INDEXES), ids=str)
def test_a_hostile_part_index_is_refused(edit: str) -> None:
    from edgebundle.parts import PartIndexError, parse_part_index

    doc = _index_doc()
    HOSTILE_INDEXES[edit](doc)
    with pytest.raises(PartIndexError) as e:
        parse_part_index(canonical(doc))
    assert e.value.message.startswith("part index"), e.value.message


def test_a_part_index_parses_with_what_it_says() -> None:
    """The control: one part or several, the last one shorter, exactly as written."""
    from edgebundle.parts import parse_part_index

    for n in (1, 3):
        doc = _index_doc(n)
        idx = parse_part_index(canonical(doc))
        assert [(p.file, p.offset, p.size, p.digest) for p in idx.parts] == \
            [(p["file"], p["offset"], p["size"], p["digest"]) for p in doc["parts"]]
        assert (idx.name, idx.version, idx.root, idx.bundle_file, idx.size, idx.part_size) == (
            doc["bundle"]["name"], doc["bundle"]["version"], doc["bundle"]["root"], doc["bundle"]["file"],
            doc["size"], doc["partSize"])
