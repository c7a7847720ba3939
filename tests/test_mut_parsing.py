"""What the mutation run of the parsing group (edgebundle/root.py, edgebundle/layout.py) showed was unguarded.

Each refusal here is asserted with its whole message (digests elided): a user fixing, or a
maintainer judging, a refused bundle relies on the message naming the exact field, and a refusal
at the wrong place is a different parser. Each accepted form is the control at the edge of a
bound (64 nesting levels, 255-byte components, 128-character names, one second of validity).
Expected values are written out by hand or read from the JSON document under test, never
computed with the product's own functions. Pure and fast: no bundle is built, no registry runs.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from edgebundle import layout
from edgebundle.root import MalformedRootError, load_json_bounded, parse_root, version_key
from tests.test_trust_core import canonical
from tests.test_trust_parsing import _del, _doc, _file_rebuild, _rebuild, _set

D = "sha256:" + "ab" * 32  # a well-formed digest the sample roots do not pin
PIECE = 64 * 1024 * 1024  # the format's piece size (docs/FORMAT.md), written out
Edit = Callable[[dict[str, Any]], Any]


def _elide(message: str) -> str:
    return re.sub(r"sha256:[0-9a-f]{64}", "sha256:…", message)


def _refusal(doc: dict[str, Any]) -> str:
    with pytest.raises(MalformedRootError) as e:
        parse_root(canonical(doc))
    return _elide(e.value.message)


def _first(d: dict[str, Any]) -> str:
    return sorted(d)[0]


def _pop(*path: Any) -> Edit:
    return _del(path)


def _put(*path: Any, value: Any) -> Edit:
    return _set(path, value)


def _blob0(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["blobs"][_first(doc["blobs"])]  # type: ignore[no-any-return]


IMG = ("images", 0)
MODEL = ("models", 0)
MFILE = ("models", 0, "files", 0)
KFILE = ("manifests", "files", 0)

#: (id, edit of the full sample root, the whole message, digests elided).
ROOT_REFUSALS: list[tuple[str, Edit, str]] = [
    ("type-missing", _pop("_type"), "root.json has _type None, expected 'edgebundle.root'"),
    ("spec-version-string", _put("specVersion", value="1"), "root.json has specVersion '1'; this edgebundle reads 1"),
    ("name-missing", _pop("name"), "root: root lacks 'name'"),
    ("name-129-chars", _put("name", value="a" * 129), f"root: name {'a' * 129!r} is not a valid bundle name"),
    ("name-trailing-dash", _put("name", value="rag-"), "root: name 'rag-' is not a valid bundle name"),
    ("version-missing", _pop("version"), "root: root lacks 'version'"),
    ("version-not-a-string", _put("version", value=1), "root: root.version has the wrong type"),
    ("version-with-space", _put("version", value="1 0"), "root: version '1 0' is not valid"),
    ("compatible-not-a-string", _put("compatible", value=1), "root: root.compatible has the wrong type"),
    ("files-missing", _pop("files"), "root: root lacks 'files'"),
    ("files-lack-oci-layout", _pop("files", "oci-layout"), "root: root.files lacks 'oci-layout'"),
    ("files-index-not-an-object", _put("files", "index.json", value=[]),
     "root: root.files.index.json has the wrong type"),
    ("file-lacks-digest", _pop("files", "oci-layout", "digest"), "root: files[oci-layout] lacks 'digest'"),
    ("file-lacks-size", _pop("files", "index.json", "size"), "root: files[index.json] lacks 'size'"),
    ("file-digest-bad", _put("files", "oci-layout", "digest", value="x"),
     "root: files[oci-layout].digest is not a sha256 digest: 'x'"),
    ("blobs-missing", _pop("blobs"), "root: root lacks 'blobs'"),
    ("blobs-not-an-object", _put("blobs", value=[]), "root: root.blobs has the wrong type"),
    ("blob-lacks-digest", lambda d: _blob0(d).pop("digest"), "root: blobs[sha256:…] lacks 'digest'"),
    ("blob-lacks-size", lambda d: _blob0(d).pop("size"), "root: blobs[sha256:…] lacks 'size'"),
    ("blob-media-type-not-a-string", lambda d: _blob0(d).update(mediaType=5),
     "root: blobs[sha256:…].mediaType has the wrong type"),
    ("blob-size-over-2^50", lambda d: _blob0(d).update(size=(1 << 50) + 1),
     "root: blobs[sha256:…].size 1125899906842625 is out of range"),
    ("blob-pieces-of-a-one-piece-blob", lambda d: _blob0(d).update(size=PIECE, pieces=[D]),
     f"root: blobs[sha256:…].pieces lists 1 digest(s); a blob of {PIECE} bytes has 0 pieces of {PIECE} bytes "
     "(and then lists none)"),
    ("blob-pieces-empty", lambda d: _blob0(d).update(size=100, pieces=[]),
     f"root: blobs[sha256:…].pieces lists 0 digest(s); a blob of 100 bytes has 0 pieces of {PIECE} bytes "
     "(and then lists none)"),
    ("blob-pieces-one-short", lambda d: _blob0(d).update(size=2 * PIECE + 1, pieces=[D, D]),
     f"root: blobs[sha256:…].pieces lists 2 digest(s); a blob of {2 * PIECE + 1} bytes has 3 pieces of "
     f"{PIECE} bytes"),
    ("blob-pieces-one-too-many", lambda d: _blob0(d).update(size=2 * PIECE, pieces=[D, D, D]),
     f"root: blobs[sha256:…].pieces lists 3 digest(s); a blob of {2 * PIECE} bytes has 2 pieces of {PIECE} bytes"),
    ("blob-pieces-of-64-mib-past-16", lambda d: _blob0(d).update(size=16 * PIECE + 1, pieces=[D] * 17),
     f"root: blobs[sha256:…].pieces lists 17 digest(s); a blob of {16 * PIECE + 1} bytes has 9 pieces of "
     f"{2 * PIECE} bytes"),
    ("blob-pieces-not-digests", lambda d: _blob0(d).update(size=PIECE + 1, pieces=[D, "x"]),
     "root: blobs[sha256:…].pieces must be a list of sha256 digests"),
    ("blob-pieces-not-a-list", lambda d: _blob0(d).update(size=PIECE + 1, pieces=D),
     "root: blobs[sha256:…].pieces must be a list of sha256 digests"),
    ("images-missing", _pop("images"), "root: root lacks 'images'"),
    *((f"image-lacks-{k}", _pop(*IMG, k), f"root: images[0] lacks '{k}'")
      for k in ("platforms", "ref", "refName", "repository", "digest", "mediaType", "size")),
    ("image-platforms-not-a-list", _put(*IMG, "platforms", value="linux/amd64"),
     "root: images[0].platforms has the wrong type"),
    ("image-ref-not-a-string", _put(*IMG, "ref", value=1), "root: images[0].ref has the wrong type"),
    ("image-digest-bad", _put(*IMG, "digest", value="x"), "root: images[0].digest is not a sha256 digest: 'x'"),
    ("image-digest-not-pinned", _put(*IMG, "digest", value=D),
     "root: images[0] names blob sha256:… that the root does not pin"),
    ("image-size-negative", _put(*IMG, "size", value=-1), "root: images[0].size -1 is out of range"),
    ("image-repository-upper-case", _put(*IMG, "repository", value="Rag/llm"),
     "root: images[0].repository 'Rag/llm' is not a valid repository name (lower-case path components, "
     "at most 255 characters)"),
    ("image-tag-bad", _put(*IMG, "tag", value="-1.0"),
     "root: images[0].tag '-1.0' is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})"),
    ("image-ref-name-other-tag", _put(*IMG, "refName", value="rag/llm:2.0"),
     "root: images[0].refName 'rag/llm:2.0' does not name rag/llm:1.0"),
    ("image-ref-name-without-tag", _put(*IMG, "refName", value="rag/llm"),
     "root: images[0].refName 'rag/llm' does not name rag/llm:1.0"),
    ("image-ref-name-other-digest", _put(*IMG, "refName", value="rag/llm@" + D),
     "root: images[0].refName 'rag/llm@sha256:…' does not name rag/llm:1.0"),
    ("second-image-lacks-ref", lambda d: d["images"].append({k: v for k, v in d["images"][0].items() if k != "ref"}),
     "root: images[1] lacks 'ref'"),
    ("models-missing", _pop("models"), "root: root lacks 'models'"),
    *((f"model-lacks-{k}", _pop(*MODEL, k), f"root: models[0] lacks '{k}'")
      for k in ("kind", "name", "version", "files", "format", "manifest")),
    *((f"model-{k}-not-a-string", _put(*MODEL, k, value=5), f"root: models[0].{k} has the wrong type")
      for k in ("architecture", "quantization", "format")),
    ("model-param-count-string", _put(*MODEL, "paramCount", value="135"),
     "root: models[0].paramCount has the wrong type"),
    ("model-name-129-chars", _put(*MODEL, "name", value="m" * 129),
     f"root: models[0].name {'m' * 129!r} is not a safe path component"),
    ("model-version-129-chars", _put(*MODEL, "version", value="1" * 129),
     f"root: models[0].version {'1' * 129!r} is not a safe path component"),
    ("model-manifest-bad", _put(*MODEL, "manifest", value="x"),
     "root: models[0].manifest is not a sha256 digest: 'x'"),
    ("model-manifest-not-pinned", _put(*MODEL, "manifest", value=D),
     "root: models[0] names blob sha256:… that the root does not pin"),
    *((f"model-file-lacks-{k}", _pop(*MFILE, k), f"root: models[0].files[0] lacks '{k}'")
      for k in ("encoding", "path", "digest", "size", "blob")),
    ("model-file-blob-bad", _put(*MFILE, "blob", value="x"),
     "root: models[0].files[0].blob is not a sha256 digest: 'x'"),
    ("model-file-size-negative", _put(*MFILE, "size", value=-1), "root: models[0].files[0].size -1 is out of range"),
    ("second-model-file-lacks-blob", _pop("models", 0, "files", 1, "blob"), "root: models[0].files[1] lacks 'blob'"),
    ("model-file-twice", _put("models", 0, "files", 1, "path", value="model.gguf"),
     "root: models[0] (smollm2 1.0) files lists 'model.gguf' twice"),
    ("model-file-is-a-directory", _put("models", 0, "files", 1, "path", value="model.gguf/tokenizer.json"),
     "root: models[0] (smollm2 1.0) files names 'model.gguf' both as a file and as a directory"),
    ("model-listed-twice", lambda d: d["models"].append(copy.deepcopy(d["models"][0])),
     "root: models[1] lists llm smollm2 1.0 a second time"),
    ("second-model-kind-unknown", lambda d: d["models"].append({**copy.deepcopy(d["models"][0]), "kind": "x"}),
     "root: models[1].kind 'x' is not one of ('llm', 'embedding', 'index')"),
    ("manifests-not-an-object", _put("manifests", value=[]), "root: root.manifests has the wrong type"),
    ("manifests-lack-files", _pop("manifests", "files"), "root: manifests lacks 'files'"),
    ("manifests-files-not-a-list", _put("manifests", "files", value={}), "root: manifests.files has the wrong type"),
    ("manifests-lack-manifest", _pop("manifests", "manifest"), "root: manifests lacks 'manifest'"),
    ("manifests-manifest-bad", _put("manifests", "manifest", value="x"),
     "root: manifests.manifest is not a sha256 digest: 'x'"),
    *((f"manifests-file-lacks-{k}", _pop(*KFILE, k), f"root: manifests.files[0] lacks '{k}'")
      for k in ("path", "digest", "size")),
    ("manifests-file-size-negative", _put(*KFILE, "size", value=-1),
     "root: manifests.files[0].size -1 is out of range"),
    ("manifests-file-twice", lambda d: d["manifests"]["files"].append(dict(d["manifests"]["files"][0])),
     "root: manifests.files lists '20-llm.yaml' twice"),
    ("manifests-second-file-lacks-path", lambda d: d["manifests"]["files"].append({"digest": D, "size": 1}),
     "root: manifests.files[1] lacks 'path'"),
    ("base-not-an-object", _put("base", value=[]), "root: root.base has the wrong type"),
    ("delta-without-base", _put("delta", value={"carried": {}, "rebuild": {}}),
     "root: a delta needs both 'base' and 'delta'"),
    ("delta-not-an-object", _put("delta", value=[]), "root: root.delta has the wrong type"),
    ("created-missing", _pop("created"), "root: root lacks 'created'"),
    ("expires-missing", _pop("expires"), "root: root lacks 'expires'"),
    ("expires-not-a-string", _put("expires", value=1), "root: root.expires has the wrong type"),
    ("expires-equals-created", _put("expires", value="2024-05-01T00:00:00Z"),
     "root: expires 2024-05-01T00:00:00Z is not after created 2024-05-01T00:00:00Z"),
    ("expires-before-created", _put("expires", value="2024-04-30T23:59:59Z"),
     "root: expires 2024-04-30T23:59:59Z is not after created 2024-05-01T00:00:00Z"),
    ("expires-not-a-time", _put("expires", value="tomorrow"),
     "root.expires 'tomorrow' is not a time like 2026-01-31T00:00:00Z"),
    ("created-not-a-time", _put("created", value="2024-05-01"),
     "root.created '2024-05-01' is not a time like 2026-01-31T00:00:00Z"),
]


def _registry(doc: dict[str, Any]) -> dict[str, Any]:
    return _rebuild(doc, "bsdiff4")["from"]["at"]["registry"]  # type: ignore[no-any-return]


def _whole(doc: dict[str, Any]) -> str:
    """The first blob (in document order) the delta carries whole."""
    return next(k for k, e in doc["delta"]["rebuild"].items() if e["method"] == "whole")


def _nas(doc: dict[str, Any]) -> dict[str, Any]:
    return _file_rebuild(doc)["from"]["at"]["nas"]  # type: ignore[no-any-return]


R = "root: delta.rebuild[sha256:…]"
#: (id, edit of the delta sample root, the whole message, digests elided).
DELTA_REFUSALS: list[tuple[str, Edit, str]] = [
    ("base-lacks-name", _pop("base", "name"), "root: base lacks 'name'"),
    ("base-version-not-a-string", _put("base", "version", value=1), "root: base.version has the wrong type"),
    ("base-lacks-root", _pop("base", "root"), "root: base lacks 'root'"),
    ("delta-lacks-carried", _pop("delta", "carried"), "root: delta lacks 'carried'"),
    ("delta-lacks-rebuild", _pop("delta", "rebuild"), "root: delta lacks 'rebuild'"),
    ("rebuild-lacks-a-blob", lambda d: d["delta"]["rebuild"].pop(_first(d["delta"]["rebuild"])),
     "root: delta.rebuild must list exactly the pinned blobs (lacks sha256:…)"),
    ("rebuild-lists-an-extra-blob", lambda d: d["delta"]["rebuild"].update({D: {"method": "whole", "size": 1}}),
     "root: delta.rebuild must list exactly the pinned blobs (lists extra blobs)"),
    ("carried-size-negative", lambda d: d["delta"]["carried"][_rebuild(d, "bsdiff4")["patch"]].update(size=-1),
     "root: delta.carried[sha256:…].size -1 is out of range"),
    ("carried-kind-not-a-string", lambda d: d["delta"]["carried"][_rebuild(d, "bsdiff4")["patch"]].update(kind=1),
     "root: delta.carried[sha256:…].kind has the wrong type"),
    ("rebuild-method-not-a-string", lambda d: _rebuild(d, "bsdiff4").update(method=1),
     f"{R}.method has the wrong type"),
    ("rebuild-size-negative", lambda d: _rebuild(d, "bsdiff4").update(size=-1), f"{R}.size -1 is out of range"),
    ("rebuild-carried-bytes-bool", lambda d: _rebuild(d, "bsdiff4").update(carriedBytes=True),
     f"{R}.carriedBytes has the wrong type"),
    ("rebuild-pieces-not-an-object", lambda d: _rebuild(d, "bsdiff4").update(pieces=[1]),
     f"{R}.pieces has the wrong type"),
    ("whole-with-a-source", lambda d: _rebuild(d, "whole").update(**{"from": {}}),
     f"{R} is 'whole' but the blob is not carried as one"),
    ("whole-with-a-file", lambda d: _rebuild(d, "whole").update(file={}),
     f"{R} is 'whole' but the blob is not carried as one"),
    ("whole-of-a-carried-patch", lambda d: d["delta"]["carried"][_whole(d)].update(kind="patch"),
     f"{R} is 'whole' but the blob is not carried as one"),
    ("patch-missing", lambda d: _rebuild(d, "bsdiff4").pop("patch"), f"{R} lacks 'patch'"),
    ("patch-bad", lambda d: _rebuild(d, "bsdiff4").update(patch="x"), f"{R}.patch is not a sha256 digest: 'x'"),
    ("patch-is-a-carried-blob", lambda d: _rebuild(d, "bsdiff4").update(patch=_whole(d)),
     f"{R}.patch sha256:… is not a carried patch"),
    ("from-lacks-digest", lambda d: _rebuild(d, "bsdiff4")["from"].pop("digest"), f"{R}.from lacks 'digest'"),
    ("from-lacks-size", lambda d: _rebuild(d, "bsdiff4")["from"].pop("size"), f"{R}.from lacks 'size'"),
    ("from-at-not-an-object", lambda d: _rebuild(d, "bsdiff4")["from"].update(at=[]),
     f"{R}.from.at has the wrong type"),
    ("registry-lacks-repository", lambda d: _registry(d).pop("repository"), f"{R}.from.at.registry lacks 'repository'"),
    ("registry-endpoint-not-a-string", lambda d: _registry(d).update(endpoint=1),
     f"{R}.from.at.registry.endpoint has the wrong type"),
    ("registry-repository-256-chars", lambda d: _registry(d).update(repository="a" * 256),
     f"{R}.from.at.registry.repository {'a' * 80!r} is not valid"),
    ("registry-repository-trailing-slash", lambda d: _registry(d).update(repository="rag/"),
     f"{R}.from.at.registry.repository 'rag/' is not valid"),
    ("nas-lacks-name", lambda d: _nas(d).pop("name"), f"{R}.from.at.nas lacks 'name'"),
    ("nas-lacks-path", lambda d: _nas(d).pop("path"), f"{R}.from.at.nas lacks 'path'"),
    ("nas-name-hidden", lambda d: _nas(d).update(name=".m"), f"{R}.from.at.nas.name is not a safe path component"),
    ("nas-version-129-chars", lambda d: _nas(d).update(version="1" * 129),
     f"{R}.from.at.nas.version is not a safe path component"),
    ("nas-path-absolute", lambda d: _nas(d).update(path="/etc/passwd"),
     f"{R}.from.at.nas.path '/etc/passwd' is not a safe relative path"),
    ("nas-kind-unknown", lambda d: _nas(d).update(kind="weights"), f"{R}.from.at.nas.kind is not a model kind"),
    ("file-lacks-encoding", lambda d: _file_rebuild(d)["file"].pop("encoding"), f"{R}.file lacks 'encoding'"),
    ("file-lacks-path", lambda d: _file_rebuild(d)["file"].pop("path"), f"{R}.file lacks 'path'"),
    ("file-path-parent", lambda d: _file_rebuild(d)["file"].update(path="../x"),
     f"{R}.file.path '../x' is not a safe relative path"),
    ("file-digest-bad", lambda d: _file_rebuild(d)["file"].update(digest="x"),
     f"{R}.file.digest is not a sha256 digest: 'x'"),
    ("file-size-negative", lambda d: _file_rebuild(d)["file"].update(size=-1), f"{R}.file.size -1 is out of range"),
    ("file-encoding-not-a-string", lambda d: _file_rebuild(d)["file"].update(encoding=1),
     f"{R}.file.encoding has the wrong type"),
    ("base-with-a-patch", lambda d: _rebuild(d, "bsdiff4").update(method="base"), f"{R} is 'base' but names a patch"),
    ("base-from-nas-other-content", lambda d: _file_rebuild(d).update(method="base", patch=None) or
     _rebuild(d, "base").pop("patch"), f"{R} is 'base' but its input is other content"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in ROOT_REFUSALS], ids=[c[0] for c in ROOT_REFUSALS])
def test_a_root_refusal_names_the_field(edit: Edit, message: str) -> None:
    doc = _doc()
    edit(doc)
    assert _refusal(doc) == message


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in DELTA_REFUSALS], ids=[c[0] for c in DELTA_REFUSALS])
def test_a_delta_refusal_names_the_field(edit: Edit, message: str) -> None:
    doc = _doc(delta=True)
    edit(doc)
    assert _refusal(doc) == message


#: Forms at the edge of each rule that a valid bundle may use.
ROOT_ACCEPTED: list[tuple[str, Edit]] = [
    ("name-one-char", _put("name", value="r")),
    ("name-128-chars", _put("name", value="r" * 128)),
    ("name-with-dots-and-underscores", _put("name", value="rag.edge_2")),
    ("version-64-chars", _put("version", value="1." + "0" * 62)),
    ("version-upper-case-and-build", _put("version", value="1.0.0-RC.1+Build.7")),
    ("blob-size-2^50", lambda d: _blob0(d).update(size=1 << 50)),
    ("blob-size-zero", lambda d: _blob0(d).update(size=0)),
    ("blob-pieces-one-byte-past-a-piece", lambda d: _blob0(d).update(size=PIECE + 1, pieces=[D, D])),
    ("blob-pieces-exactly-two-pieces", lambda d: _blob0(d).update(size=2 * PIECE, pieces=[D, D])),
    ("blob-pieces-sixteen-of-64-mib", lambda d: _blob0(d).update(size=16 * PIECE, pieces=[D] * 16)),
    ("blob-pieces-nine-of-128-mib", lambda d: _blob0(d).update(size=16 * PIECE + 1, pieces=[D] * 9)),
    ("image-ref-name-by-digest", lambda d: d["images"][0].update(refName="rag/llm@" + d["images"][0]["digest"])),
    ("image-without-tag", lambda d: d["images"][0].update(tag=None, refName="rag/llm")),
    ("model-name-128-chars", _put(*MODEL, "name", value="M" * 128)),
    ("model-version-128-chars", _put(*MODEL, "version", value="1" * 128)),
    ("same-model-other-version", lambda d: d["models"].append({**copy.deepcopy(d["models"][0]), "version": "2.0"})),
    ("same-model-other-kind", lambda d: d["models"].append({**copy.deepcopy(d["models"][0]), "kind": "embedding"})),
    ("same-model-other-name", lambda d: d["models"].append({**copy.deepcopy(d["models"][0]), "name": "other"})),
    ("file-names-sharing-a-prefix", _put("models", 0, "files", 1, "path", value="model.gguf.d/x")),
    ("file-below-a-directory-of-another", _put("models", 0, "files", 0, "path", value="tok/a/b.json")),
    ("expires-one-second-after-created", _put("expires", value="2024-05-01T00:00:01Z")),
    ("path-with-255-byte-component", _put(*MFILE, "path", value="d/" + "é" * 127 + "x")),
    ("path-of-1024-bytes", _put(*MFILE, "path", value="/".join(["a" * 200] * 5) + "/" + "b" * 19)),
    ("path-named-like-but-not-reserved", _put(*MFILE, "path", value="x.edgebundle/edgebundle")),
    ("path-with-tab-free-unicode", _put(*MFILE, "path", value="modèle ✓.gguf")),
]


@pytest.mark.parametrize("edit", [c[1] for c in ROOT_ACCEPTED], ids=[c[0] for c in ROOT_ACCEPTED])
def test_a_form_at_the_edge_of_a_rule_is_accepted(edit: Edit) -> None:
    doc = _doc()
    edit(doc)
    parse_root(canonical(doc))


PATH_REFUSALS = [
    ("a\x01b", "contains a NUL or control character"),
    ("a\x1fb", "contains a NUL or control character"),
    ("a\x7fb", "contains a NUL or control character"),
    ("d/" + "é" * 128, "has a component over 255 bytes"),
    ("a" * 256, "has a component over 255 bytes"),
    ("/".join(["a" * 200] * 5) + "/" + "b" * 20, ""),  # 1025 bytes: the whole path is too long
    (".edgebundle-tmp", "uses a name reserved by the installer (.edgebundle*)"),
    ("d/.edgebundle", "uses a name reserved by the installer (.edgebundle*)"),
    ("a/../b", "is not a safe relative path"),
]


@pytest.mark.parametrize(("path", "why"), PATH_REFUSALS, ids=range(len(PATH_REFUSALS)))
def test_a_model_file_path_unsafe_on_a_nas_is_refused(path: str, why: str) -> None:
    doc = _doc()
    doc["models"][0]["files"][0]["path"] = path
    message = _refusal(doc)
    if why:
        assert message.startswith("root: models[0].files[0].path ") and message.endswith(why), message
    else:
        assert message == "root: models[0].files[0].path is over 1024 bytes long"


def test_a_refused_path_is_shown_escaped_and_cut_at_80_characters() -> None:
    """The message shows the path the operator must look for, control characters escaped, long ones cut."""
    doc = _doc()
    doc["models"][0]["files"][0]["path"] = "a\x01b"
    assert _refusal(doc) == "root: models[0].files[0].path 'a\\\\x01b' contains a NUL or control character"
    doc["models"][0]["files"][0]["path"] = "é" * 100 + "/../x"
    assert _refusal(doc) == "root: models[0].files[0].path '" + "\\\\xe9" * 80 + "' is not a safe relative path"


def test_a_parsed_root_says_what_the_document_says() -> None:
    """Every field of the parsed root, read against the JSON it came from (not the product's writer)."""
    doc = _doc()
    root = parse_root(canonical(doc))
    assert (root.name, root.version, root.compatible, root.created, root.expires) == (
        "rag-edge", "1.2.0", "rag-edge/x86_64", "2024-05-01T00:00:00Z", "2024-10-28T00:00:00Z")
    assert {k: (f.digest, f.size) for k, f in root.files.items()} == {
        k: (f["digest"], f["size"]) for k, f in doc["files"].items()}
    assert {k: (b.digest, b.size, b.mediaType) for k, b in root.blobs.items()} == {
        k: (b["digest"], b["size"], b["mediaType"]) for k, b in doc["blobs"].items()}
    [im] = root.images
    assert (im.ref, im.refName, im.repository, im.tag, im.digest, im.mediaType, im.platforms, im.size) == (
        "127.0.0.1:5000/rag/llm:1.0", "rag/llm:1.0", "rag/llm", "1.0", doc["images"][0]["digest"],
        "application/vnd.oci.image.manifest.v1+json", ["linux/amd64"], 300)
    [m] = root.models
    assert (m.name, m.kind, m.version, m.format, m.manifest, m.architecture, m.quantization, m.paramCount,
            m.contextLength) == ("smollm2", "llm", "1.0", "gguf", doc["models"][0]["manifest"], "llama", "Q4_1",
                                 135, 2048)
    assert [(f.path, f.digest, f.size, f.blob, f.encoding) for f in m.files] == [
        (f["path"], f["digest"], f["size"], f["blob"], f["encoding"]) for f in doc["models"][0]["files"]]
    assert [f.encoding for f in m.files] == ["identity", "tar+zstd"] and m.size == 3000
    assert root.manifests is not None and root.manifests.manifest == doc["manifests"]["manifest"]
    assert [(f.path, f.digest, f.size) for f in root.manifests.files] == [
        ("20-llm.yaml", doc["manifests"]["files"][0]["digest"], 107)]
    assert (root.base, root.delta, root.is_delta) == (None, None, False)
    assert root.total_size() == sum(100 + i for i in range(8))

    # piece digests are read as listed, and written back only where a blob has them
    blob = _blob0(doc)
    blob.update(size=2 * PIECE + 1, pieces=[D, "sha256:" + "cd" * 32, "sha256:" + "ef" * 32])
    pieced = parse_root(canonical(doc))
    assert pieced.blobs[blob["digest"]].pieces == tuple(blob["pieces"])
    assert [k for k, b in pieced.blobs.items() if b.pieces] == [blob["digest"]]
    assert json.loads(pieced.to_bytes())["blobs"] == doc["blobs"]

    delta = _doc(delta=True)
    droot = parse_root(canonical(delta))
    assert droot.base is not None and (droot.base.name, droot.base.version, droot.base.root) == (
        "rag-edge", "1.1.0", delta["base"]["root"])
    assert droot.delta == delta["delta"] and droot.is_delta


def test_the_member_pins_of_a_full_bundle_and_of_a_delta() -> None:
    """A full bundle pins every blob; a delta only what it carries, unless asked for the full target."""
    def blob_member(d: str) -> str:
        return "blobs/sha256/" + d[len("sha256:"):]

    doc = _doc()
    files = {"oci-layout": (doc["files"]["oci-layout"]["digest"], 30),
             "index.json": (doc["files"]["index.json"]["digest"], 512)}
    everything = {**files, **{blob_member(d): (d, b["size"]) for d, b in doc["blobs"].items()}}
    assert parse_root(canonical(doc)).member_pins() == everything
    assert parse_root(canonical(doc)).member_pins(full=True) == everything

    delta = _doc(delta=True)
    droot = parse_root(canonical(delta))
    carried = {blob_member(d): (d, c["size"]) for d, c in delta["delta"]["carried"].items()}
    assert len(carried) == 8 and any(c["kind"] == "patch" for c in delta["delta"]["carried"].values())
    assert droot.member_pins() == {**files, **carried}
    assert droot.member_pins(full=True) == everything


def test_allowed_delta_forms_at_the_edges() -> None:
    """A 'base' rebuild from a NAS file whose digest is the file's; optional fields as the builder writes them."""
    doc = _doc(delta=True)
    entry = _file_rebuild(doc)
    entry.update(method="base")
    entry.pop("patch")
    entry["from"]["digest"] = entry["file"]["digest"]
    _rebuild(doc, "bsdiff4").update(carriedBytes=40, pieces={"header": 10, "tensors": 30}, what="layer",
                                    zstd="1.5.5")
    _rebuild(doc, "bsdiff4")["from"]["size"] = 0
    parse_root(canonical(doc))


# --- load_json_bounded: size and nesting before json.loads -----------------------------------------

def _bounded_refusal(data: bytes, limit: int = 1 << 20) -> str:
    with pytest.raises(MalformedRootError) as e:
        load_json_bounded(data, "the document", limit)
    return e.value.message


def test_json_size_bound_is_exact() -> None:
    assert load_json_bounded(b"[10]", "the document", 4) == [10]
    assert _bounded_refusal(b"[10]", 3) == "the document is 4 bytes, over the 3-byte limit"


def test_json_default_bound_is_16_mib() -> None:
    """(The exact edge is tested above with a small limit: scanning 16 MiB would take seconds.)"""
    with pytest.raises(MalformedRootError) as e:
        load_json_bounded(b" " * 16 * 1024 * 1024 + b"7", "root.json")
    assert e.value.message == "root.json is 16777217 bytes, over the 16777216-byte limit"


@pytest.mark.parametrize("opener,closer", [(b"[", b"]"), (b'{"k":', b"}")], ids=["arrays", "objects"])
def test_json_nesting_bound_is_64_levels(opener: bytes, closer: bytes) -> None:
    load_json_bounded(opener * 64 + b"1" + closer * 64, "the document")
    assert _bounded_refusal(opener * 65 + b"1" + closer * 65) == "the document nests deeper than 64 levels"


def test_json_nesting_counts_depth_not_brackets() -> None:
    """A wide document of shallow containers is fine: closing brackets bring the depth back down."""
    assert len(load_json_bounded(b"[" + b"[[]]," * 200 + b"{}]", "the document")) == 201
    assert len(load_json_bounded(b"[" + b'{"a":{}},' * 200 + b"[]]", "the document")) == 201


def test_json_depth_counts_from_the_parent_after_a_sibling_closes() -> None:
    """A closed sibling lowers the depth by exactly one level; a second top-level value is not JSON."""
    assert _bounded_refusal(b"[[]," + b"[" * 64 + b"]" * 64 + b"]") == "the document nests deeper than 64 levels"
    assert len(load_json_bounded(b"[[]," + b"[" * 63 + b"]" * 63 + b"]", "the document")) == 2
    assert _bounded_refusal(b"[] " + b"[" * 64 + b"]" * 64).startswith("the document is not valid JSON: ")


def test_json_brackets_inside_strings_do_not_count() -> None:
    assert load_json_bounded(b'["' + b"[{" * 100 + b'"]', "the document") == ["[{" * 100]
    assert load_json_bounded(b'["\\"' + b"[" * 100 + b'"]', "the document") == ['"' + "[" * 100]
    # An escaped backslash ends with the string: the brackets after it are structure again.
    deep = b'["\\\\",' + b"[" * 64 + b"]" * 64 + b"]"
    assert _bounded_refusal(deep) == "the document nests deeper than 64 levels"
    assert load_json_bounded(b'["\\\\",' + b"[" * 63 + b"]" * 63 + b"]", "the document")[0] == "\\"


def test_root_bytes_that_are_not_a_json_object_are_refused_as_root_json() -> None:
    for data, message in ((b"{", "root.json is not valid JSON: "), (b"[" * 65 + b"]" * 65, "root.json nests deeper"),
                          (b"[]", "root.json is not a JSON object"), (b'"root"', "root.json is not a JSON object")):
        with pytest.raises(MalformedRootError) as e:
            parse_root(data)
        assert e.value.message.startswith(message), e.value.message


def test_json_that_is_not_json_or_not_utf8_is_refused_by_name() -> None:
    assert _bounded_refusal(b"{").startswith("the document is not valid JSON: ")
    assert _bounded_refusal(b'"\xff"').startswith("the document is not valid JSON: ")


# --- layout: the closed set of member names ---------------------------------------------------------

HEX = "0123456789abcdef" * 4


def test_member_names_are_a_closed_set() -> None:
    for name in ("oci-layout", "index.json", "edgebundle/root.dsse.json", "blobs/sha256/" + HEX):
        assert layout.is_member_name(name), name
    for name in ("edgebundle/root.json", "edgebundle/signatures.json", "blobs/sha256/" + HEX[:-1],
                 "blobs/sha256", "blobs/sha256/", "index.json/", "edgebundle", "x", ""):
        assert not layout.is_member_name(name), name


@pytest.mark.parametrize(("raw", "name"), [
    ("index.json", "index.json"), ("./index.json", "index.json"), ("blobs/sha256/", "blobs/sha256"),
    ("./blobs/", "blobs"), ("edgebundle/root.dsse.json", "edgebundle/root.dsse.json"), ("a/b/c", "a/b/c"),
    ("a/X", "a/X"), ("X/", "X"),  # only slashes are trimmed
])
def test_a_member_name_is_normalised(raw: str, name: str) -> None:
    assert layout.normalise_member_name(raw) == name


@pytest.mark.parametrize("raw", ["", "/index.json", "//x", "a\\b", "\\x", "a\x00b", "\x00", "a//b", "a/./b",
                                 "a/../b", "../a", ".", "..", "./../a", "././a", "a/.", "a/.."])
def test_an_unsafe_member_name_is_refused(raw: str) -> None:
    assert layout.normalise_member_name(raw) is None


def test_blob_paths_name_only_sha256_digests() -> None:
    assert layout.blob_path("sha256:" + HEX) == "blobs/sha256/" + HEX
    assert layout.digest_of_blob_path("blobs/sha256/" + HEX) == "sha256:" + HEX
    for bad in ("sha256:sha256:" + HEX, "sha256:" + HEX + ":x", "sha256" + HEX, ":" + HEX, "SHA256:" + HEX):
        with pytest.raises(ValueError):
            layout.blob_path(bad)
    for name in ("blobs/sha256/" + HEX.upper(), "blobs/sha512/" + HEX, "./blobs/sha256/" + HEX,
                 "blobs/sha256/" + HEX + "/", "xblobs/sha256/" + HEX, "blobs/sha256/x" + HEX[1:]):
        assert layout.digest_of_blob_path(name) is None, name


def test_member_order_puts_the_signed_root_first_then_blobs_by_digest() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert layout.member_order([b, a]) == ["oci-layout", "edgebundle/root.dsse.json", "index.json",
                                           "blobs/sha256/" + "a" * 64, "blobs/sha256/" + "b" * 64]
    assert layout.member_order([]) == ["oci-layout", "edgebundle/root.dsse.json", "index.json"]
    files = ["oci-layout", "index.json", "edgebundle/sbom.cdx.json"]  # a root that pins an SBOM
    assert layout.member_order([a], files) == ["oci-layout", "edgebundle/root.dsse.json", "index.json",
                                               "edgebundle/sbom.cdx.json", "blobs/sha256/" + "a" * 64]


@pytest.mark.parametrize("payload", [0, 1, 2, 3, 4, 5, 6, 1000, 3 * 1024])
def test_an_envelope_bound_holds_the_base64_of_its_payload(payload: int) -> None:
    """The envelope bound is the base64 of the payload, rounded up, plus the signatures' allowance."""
    allowance = 256 * 1024
    b64 = len(base64.b64encode(b"x" * payload))
    limit = layout.envelope_limit(payload)
    assert b64 <= limit - allowance <= b64 + 4
    assert limit == allowance + {0: 4, 1: 4, 2: 4, 3: 8, 4: 8, 5: 8, 6: 12, 1000: 1336, 3072: 4100}[payload]


# --- version order: the generalised rule's edges (SemVer's own list is in tests/test_version_order.py) -----
#: (lower, higher), each written out from SemVer 2.0.0 or from the rule in version_key's docstring.
VERSION_PAIRS = [
    ("1.0.0-x-y-z.--", "1.0.0"),  # SemVer's own pre-release example: hyphens inside identifiers
    ("1.0.0-rc-1", "1.0.0"),  # the pre-release starts at the first hyphen, not the last
    ("1.0.0-rc.1", "1.0.0-rc-1"),  # "rc" < "rc-1" in ASCII order
    ("1.0.0-0", "1.0.0-00a"),  # a digit run with a letter is alphanumeric
    ("1.2", "1.10"), ("1.0.9", "1.0.10"), ("9", "10"),  # numeric release parts compare as numbers
    ("1.99", "1.x"),  # a text release part sorts above every number
    ("1.0.0-alpha.99", "1.0.0-alpha.a"),
    ("1.0.1-alpha", "1.0.1"),
    ("1.0.0", "1.0.0.1"),  # a non-zero fourth part is newer
    ("1.0.0.0.0.0-rc.1", "1.0.0.0.0.1"),
    ("1.99", "1.²"), ("1.x", "1.²"),  # not an ASCII digit: text, in code-point order
]
VERSION_EQUAL = [("1.0.0+a-b+c", "1.0.0"), ("1.0.0+build+x", "1.0.0"), ("1.0.0-alpha+001", "1.0.0-alpha"),
                 ("1.0.0.0", "1"), ("0", "0.0.0"), ("01.2", "1.2")]


@pytest.mark.parametrize(("lower", "higher"), VERSION_PAIRS)
def test_version_order_at_the_edges_of_the_rule(lower: str, higher: str) -> None:
    assert version_key(lower) < version_key(higher)
    assert version_key(higher) > version_key(lower)


@pytest.mark.parametrize(("a", "b"), VERSION_EQUAL)
def test_versions_of_the_same_precedence(a: str, b: str) -> None:
    assert version_key(a) == version_key(b)


@pytest.mark.parametrize("odd", ["", "-", "+", ".", "..", "1..2", "-1", "1.²", "1.0.0-²", "²", "١.٢", "1.0.0-"])
def test_any_version_string_has_a_place_in_the_order(odd: str) -> None:
    """The installed version comes from the state directory, which is not trusted to be clean: never raise."""
    key = version_key(odd)
    assert (key < version_key("0.0.1")) + (key > version_key("0.0.1")) + (key == version_key("0.0.1")) == 1


# --- attached artifacts, Helm charts and the SBOM pin (added with issues 18 and 19) ---------------

SIG_MT = "application/vnd.oci.image.manifest.v1+json"


def _subject_and_other(doc: dict[str, Any]) -> tuple[str, str]:
    """The sample image's digest, and another digest the sample root pins."""
    subject = doc["images"][0]["digest"]
    return subject, next(b for b in sorted(doc["blobs"]) if b != subject)


def _attach(*entries: dict[str, Any]) -> Edit:
    """Put attached artifacts on image 0; each entry's missing fields default to a signature of the
    image (``...`` leaves a field out; ``{hex}`` in a tag stands for the image digest's hex)."""
    def edit(doc: dict[str, Any]) -> None:
        subject, other = _subject_and_other(doc)
        base = {"kind": "signature", "subject": subject, "tag": "sha256-{hex}.sig", "digest": other,
                "mediaType": SIG_MT}
        doc["images"][0]["attached"] = [
            {k: v.replace("{hex}", subject[7:]) if k == "tag" else v for k, v in {**base, **e}.items() if v is not ...}
            for e in entries]
    return edit


def _chart(*entries: dict[str, Any]) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        subject, other = _subject_and_other(doc)
        base = {"release": "web", "namespace": None, "chart": "webui", "version": "0.3.0", "manifest": other,
                "archive": subject, "values": other}
        doc["charts"] = [{**base, **e} for e in entries]
    return edit


def _sbom_pin(**pin: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        doc["files"][layout.SBOM] = {"digest": _subject_and_other(doc)[1], "size": 100, **pin}
    return edit


UNPINNED = "sha256:" + "cd" * 32
EXTRA_REFUSALS: list[tuple[str, Edit, str]] = [
    ("attached-not-a-list", _put(*IMG, "attached", value={}), "root: images[0].attached has the wrong type"),
    ("attached-not-an-object", _put(*IMG, "attached", value=["x"]), "root: images[0].attached[0] is not an object"),
    ("attached-unknown-key", _attach({"x": 1}), "root: images[0].attached[0] has unknown keys: x"),
    ("attached-lacks-media-type", _attach({"mediaType": ...}), "root: images[0].attached[0] lacks 'mediaType'"),
    ("attached-kind-unknown", _attach({"kind": "sig"}),
     "root: images[0].attached[0] ('sig') may not use the tag 'sha256-{hex}.sig'"),
    ("attached-signature-under-att", _attach({"tag": "sha256-{hex}.att"}),
     "root: images[0].attached[0] ('signature') may not use the tag 'sha256-{hex}.att'"),
    ("attached-moves-the-image-tag", _attach({"tag": "1.0"}),
     "root: images[0].attached[0] ('signature') may not use the tag '1.0'"),
    ("attached-referrers-with-suffix", _attach({"kind": "referrers"}),
     "root: images[0].attached[0] ('referrers') may not use the tag 'sha256-{hex}.sig'"),
    ("attached-subject-unpinned", _attach({"subject": UNPINNED, "tag": f"sha256-{'cd' * 32}.sig"}),
     "root: images[0].attached[0] names blob sha256:… that the root does not pin"),
    ("attached-digest-unpinned", _attach({"digest": UNPINNED}),
     "root: images[0].attached[0] names blob sha256:… that the root does not pin"),
    ("attached-two-under-one-tag", lambda d: (_attach({}, {"digest": d["images"][0]["digest"]})(d)),
     "root: images[0].attached[1] puts a second artifact under the tag sha256-{hex}.sig"),
    ("attached-kind-not-a-string", _attach({"kind": 1}), "root: images[0].attached[0].kind has the wrong type"),
    ("attached-lacks-tag", _attach({"tag": ...}), "root: images[0].attached[0] lacks 'tag'"),
    ("attached-subject-not-a-digest", _attach({"subject": "x"}),
     "root: images[0].attached[0].subject is not a sha256 digest: 'x'"),
    ("attached-digest-not-a-digest", _attach({"digest": "x"}),
     "root: images[0].attached[0].digest is not a sha256 digest: 'x'"),
    ("charts-not-a-list", _put("charts", value={}), "root: root.charts has the wrong type"),
    ("chart-manifest-not-a-digest", _chart({"manifest": "x"}), "root: charts[0].manifest is not a sha256 digest: 'x'"),
    ("chart-archive-not-a-digest", _chart({"archive": "x"}), "root: charts[0].archive is not a sha256 digest: 'x'"),
    ("chart-values-not-a-digest", _chart({"values": "x"}), "root: charts[0].values is not a sha256 digest: 'x'"),
    ("chart-lacks-release", lambda d: (_chart({})(d), d["charts"][0].pop("release")), "root: charts[0] lacks 'release'"),
    ("chart-namespace-not-a-string", _chart({"namespace": 5}), "root: charts[0].namespace has the wrong type"),
    ("chart-not-an-object", _put("charts", value=[1]), "root: charts[0] is not an object"),
    ("chart-unknown-key", _chart({"x": 1}), "root: charts[0] has unknown keys: x"),
    ("chart-release-not-dns", _chart({"release": "Web_1"}), "root: charts[0].release 'Web_1' is not a Helm release name"),
    ("chart-release-54-chars", _chart({"release": "a" * 54}),
     f"root: charts[0].release {'a' * 54!r} is not a Helm release name"),
    ("chart-namespace-not-a-label", _chart({"namespace": "Edge.Apps"}),
     "root: charts[0].namespace 'Edge.Apps' is not a namespace name"),
    ("chart-release-twice", _chart({}, {}), "root: charts[1] lists release web a second time"),
    ("chart-values-unpinned", _chart({"values": UNPINNED}), "root: charts[0] names blob sha256:… that the root does not pin"),
    ("chart-manifest-unpinned", _chart({"manifest": UNPINNED}), "root: charts[0] names blob sha256:… that the root does not pin"),
    ("chart-archive-unpinned", _chart({"archive": UNPINNED}), "root: charts[0] names blob sha256:… that the root does not pin"),
    ("chart-version-not-a-string", _chart({"version": 3}), "root: charts[0].version has the wrong type"),
    ("chart-name-missing", lambda d: (_chart({})(d), d["charts"][0].pop("chart")), "root: charts[0] lacks 'chart'"),
    ("sbom-over-16-mib", _sbom_pin(size=16 * 1024 * 1024 + 1),
     f"root: files[{layout.SBOM}] is 16777217 bytes, over the 16777216-byte limit of a document read whole"),
    ("sbom-pin-not-an-object", _put("files", layout.SBOM, value=[]), f"root: root.files.{layout.SBOM} has the wrong type"),
    ("files-with-another-member", _put("files", "extra.json", value={"digest": D, "size": 1}),
     f"root: files must list exactly oci-layout, index.json and optionally {layout.SBOM}"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in EXTRA_REFUSALS], ids=[c[0] for c in EXTRA_REFUSALS])
def test_attached_chart_and_sbom_refusals_name_the_field(edit: Edit, message: str) -> None:
    doc = _doc()
    subject = doc["images"][0]["digest"]
    edit(doc)
    assert _refusal(doc) == message.replace("{hex}", subject[7:])


EXTRA_ACCEPTED: list[tuple[str, Edit]] = [
    ("a-signature", _attach({})),
    ("the-same-artifact-listed-twice", _attach({}, {})),
    ("an-attestation", _attach({"kind": "attestation", "tag": "sha256-{hex}.att"})),
    ("an-sbom", _attach({"kind": "sbom", "tag": "sha256-{hex}.sbom"})),
    ("a-referrers-index", _attach({"kind": "referrers", "tag": "sha256-{hex}"})),
    ("a-chart-in-the-sites-namespace", _chart({})),
    ("a-chart-in-its-own-namespace", _chart({"namespace": "edge-apps"})),
    ("a-release-of-53-chars", _chart({"release": "a" * 53})),
    ("two-releases-of-one-chart", _chart({}, {"release": "web-b"})),
    ("an-sbom-of-exactly-16-mib", _sbom_pin(size=16 * 1024 * 1024)),
]


@pytest.mark.parametrize("edit", [c[1] for c in EXTRA_ACCEPTED], ids=[c[0] for c in EXTRA_ACCEPTED])
def test_attached_chart_and_sbom_forms_are_accepted(edit: Edit) -> None:
    doc = _doc()
    edit(doc)
    parse_root(canonical(doc))


def test_attached_charts_and_sbom_pin_round_trip_as_written() -> None:
    """The parsed entries say what the document says, and a root writes them back byte for byte;
    a root without attached artifacts or charts has neither key (older roots keep their bytes)."""
    plain = _doc()
    assert "attached" not in plain["images"][0] and "charts" not in plain
    doc = _doc()
    subject, other = _subject_and_other(doc)
    _attach({"kind": "attestation", "tag": f"sha256-{subject[7:]}.att"})(doc)
    _chart({"namespace": "edge-apps"})(doc)
    _sbom_pin(size=321)(doc)
    root = parse_root(canonical(doc))
    [a] = root.images[0].attached
    assert (a.kind, a.subject, a.tag, a.digest, a.mediaType) == ("attestation", subject, f"sha256-{subject[7:]}.att",
                                                                 other, SIG_MT)
    [c] = root.charts or []
    assert (c.release, c.namespace, c.chart, c.version, c.manifest, c.archive, c.values) == \
        ("web", "edge-apps", "webui", "0.3.0", other, subject, other)
    assert (root.files[layout.SBOM].digest, root.files[layout.SBOM].size) == (other, 321)
    assert root.to_bytes() == canonical(doc)
    assert parse_root(canonical(plain)).to_bytes() == canonical(plain)
