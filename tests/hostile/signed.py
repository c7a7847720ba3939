"""Round-2 byte-level mutants: validly signed but hostile content, and tar dialects.

Families (docs/SECURITY.md has the table):

- ``signed-hostile``: a root re-signed by the trusted key (a compromised or buggy build host)
  that names unsafe model or manifest paths (NUL, control characters, over-long components or
  paths, duplicates, a file and a directory on one path, names the installer reserves), the same
  model twice, invalid repository or tag names, or that carries YAML manifests built to exhaust
  the parser (alias bombs, deep nesting), or a delta whose carried patch is a decompression bomb.
  All must be refused by ``installer verify`` itself, before anything is written anywhere.
- ``dialect``: a compressed file given as a bundle, and tar headers of no dialect we accept.

Expected messages are written from docs/FORMAT.md and the issue, not read back from the code.
"""

from __future__ import annotations

import bz2
import copy
import dataclasses
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zstandard

from edgebundle import layout
from edgebundle.digest import sha256_bytes
from edgebundle.root import BlobPin, Root, canonical_json
from tests.hostile.corpus import Genuine, Mutant, Resigner, Tar, endless_zstd, reseal

SIGNED_FAMILIES = ("signed-hostile", "dialect")

#: 32 aliases, each nine times the one before: 9**8 * 9 nodes once expanded ("billion laughs").
BILLION_LAUGHS = ("a: &a [" + ",".join(["lol"] * 9) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))).encode()
DEEP_YAML = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\ndata: " + "[" * 5000 + "]" * 5000 + "\n").encode()
MANY_ALIASES = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: many}\nx: &x 1\nlist: ["
                + ",".join(["*x"] * 300) + "]\n").encode()
DEEP_MAPPING = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deepmap}\n"
                + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n").encode()


def root_bytes_of(t: Tar) -> bytes:
    """The signed root document of ``t`` (a DSSE corpus reads it from the root envelope's payload)."""
    return t.root_bytes() if hasattr(t, "root_bytes") else t.read(layout.ROOT)


def _resign_dict(rs: Resigner, edit: Callable[[dict[str, Any]], None],
                 changes: dict[str, bytes | None] | None = None,
                 add: list[tuple[str, bytes]] | None = None) -> Callable[[Path], Path]:
    doc = copy.deepcopy(rs.root.to_dict())
    edit(doc)
    return rs.with_root_bytes(canonical_json(doc), changes or {}, add or [])


def _model_files(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The file list of the first model with an identity-encoded file (what stage writes plainly)."""
    return next(m["files"] for m in doc["models"] if any(f["encoding"] == "identity" for f in m["files"]))


def _set_path(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        _model_files(doc)[0]["path"] = path
    return edit


def _add_file(path_of: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
    """A second file entry (same blob, so still pinned) at ``path_of(first file's path)``."""
    def edit(doc: dict[str, Any]) -> None:
        files = _model_files(doc)
        files.append({**files[0], "path": path_of(files[0]["path"])})
    return edit


def _image(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def outer(doc: dict[str, Any]) -> None:
        edit(doc["images"][0])
    return outer


def signed_hostile(t: Tar, root: Root, g: Genuine) -> Iterator[Mutant]:
    rs = Resigner(t, root, g.keys["release"][0])
    long_part = "x" * 256
    paths = [
        ("model file path with a NUL byte", _set_path("model\x00.bin"), r"contains a NUL or control character"),
        ("model file path with a newline", _set_path("model\n.bin"), r"contains a NUL or control character"),
        ("model file path with DEL", _set_path("model\x7f.bin"), r"contains a NUL or control character"),
        ("model file path component of 256 bytes", _set_path(long_part), r"has a component over 255 bytes"),
        ("model file path component of 128 two-byte characters", _set_path("é" * 128),
         r"has a component over 255 bytes"),
        ("model file path of 1211 bytes", _set_path("/".join(["d" * 200] * 6) + "/f.bin"),
         r"path is over 1024 bytes long"),
        ("model file path absolute", _set_path("/etc/passwd"), r"is not a safe relative path"),
        ("model file path climbing out", _set_path("../../../etc/passwd"), r"is not a safe relative path"),
        ("model file path with a backslash", _set_path("a\\b.bin"), r"is not a safe relative path"),
        ("model file path empty component", _set_path("a//b.bin"), r"is not a safe relative path"),
        ("model file named like the installer's marker", _set_path(".edgebundle.json"),
         r"reserved by the installer"),
        ("model file named like an installer temp file", _set_path("sub/.edgebundle-tmp-0"),
         r"reserved by the installer"),
        ("two model files on one path", _add_file(lambda p: p), r"lists '.*' twice"),
        ("a model file that is also a directory", _add_file(lambda p: p + "/inner.bin"),
         r"names '.*' both as a file and as a directory"),
        ("a model file below another file, two levels", _add_file(lambda p: p + "/a/b.bin"),
         r"names '.*' both as a file and as a directory"),
    ]
    for label, edit, expect in paths:
        yield Mutant("signed-hostile", f"{label}, re-signed", _resign_dict(rs, edit), expect)

    def dup_model(doc: dict[str, Any]) -> None:
        doc["models"].append(copy.deepcopy(doc["models"][0]))
    yield Mutant("signed-hostile", "the same model version twice, re-signed", _resign_dict(rs, dup_model),
                 r"lists (llm|embedding|index) \S+ \S+ a second time")

    def dup_manifest(doc: dict[str, Any]) -> None:
        doc["manifests"]["files"].append(dict(doc["manifests"]["files"][0]))
    yield Mutant("signed-hostile", "two manifests on one path, re-signed", _resign_dict(rs, dup_manifest),
                 r"manifests\.files lists '.*' twice")

    def nul_manifest(doc: dict[str, Any]) -> None:
        doc["manifests"]["files"][0]["path"] = "evil\x00.yaml"
    yield Mutant("signed-hostile", "manifest path with a NUL byte, re-signed", _resign_dict(rs, nul_manifest),
                 r"contains a NUL or control character")

    def set_tag(tag: str) -> Callable[[dict[str, Any]], None]:
        def edit(im: dict[str, Any]) -> None:
            im["tag"], im["refName"] = tag, f"{im['repository']}:{tag}"
        return _image(edit)

    def set_repo(repo: str) -> Callable[[dict[str, Any]], None]:
        def edit(im: dict[str, Any]) -> None:
            im["repository"] = repo
            im["refName"] = f"{repo}:{im['tag']}" if im.get("tag") else f"{repo}@{im['digest']}"
        return _image(edit)

    names = [
        ("tag climbing into the registry's storage", set_tag("../../../manifests/evil"), r"is not a valid tag"),
        ("tag of 129 characters", set_tag("t" * 129), r"is not a valid tag"),
        ("empty tag", set_tag(""), r"is not a valid tag"),
        ("tag starting with a dot", set_tag(".hidden"), r"is not a valid tag"),
        ("tag with a slash", set_tag("a/b"), r"is not a valid tag"),
        ("repository with upper case", set_repo("Rag/LLM"), r"is not a valid repository name"),
        ("repository climbing out", set_repo("../evil"), r"is not a valid repository name"),
        ("repository with an empty component", set_repo("rag//evil"), r"is not a valid repository name"),
        ("repository of 256 characters", set_repo("r" * 256), r"is not a valid repository name"),
        ("repository ending in a separator", set_repo("rag-"), r"is not a valid repository name"),
        ("refName naming another image", _image(lambda im: im.__setitem__("refName", "other/image:1.0")),
         r"refName 'other/image:1\.0' does not name"),
    ]
    for label, edit, expect in names:
        yield Mutant("signed-hostile", f"{label}, re-signed", _resign_dict(rs, edit), expect)

    manifest = sorted(root.manifests.files, key=lambda f: f.path)[0] if root.manifests else None
    assert manifest is not None, "the genuine bundle must carry manifests"
    for label, data, expect in (
            ("YAML alias bomb (billion laughs)", BILLION_LAUGHS, r"expands to more than 200,000 YAML nodes"),
            ("YAML nested 5000 deep", DEEP_YAML, r"nests deeper than 64 levels"),
            ("YAML with 300 aliases", MANY_ALIASES, r"uses more than 256 YAML aliases"),
            ("YAML mapping nested 200 deep", DEEP_MAPPING, r"nests deeper than 64 levels"),
            ("YAML that is not UTF-8", b"apiVersion: v1\nkind: \xff\xfe\n", r"is not UTF-8 text"),
            ("YAML with a syntax error", b"apiVersion: [v1\n", r"is not valid YAML")):
        yield Mutant("signed-hostile", f"manifest {label}, re-signed", _swap_manifest(rs, manifest.path, data),
                     re.escape(f"manifest {manifest.path}") + ".*" + expect)
    yield from delta_bombs(g)


def _swap_manifest(rs: Resigner, path: str, data: bytes) -> Callable[[Path], Path]:
    """The manifest file ``path`` replaced by ``data`` (blob, pins and listing updated, re-signed)."""
    root = rs.root
    assert root.manifests is not None
    old = next(f for f in root.manifests.files if f.path == path)
    digest = sha256_bytes(data)
    blobs = {d: p for d, p in root.blobs.items() if d != old.digest}
    blobs[digest] = BlobPin(digest, len(data), root.blobs[old.digest].mediaType)
    files = [dataclasses.replace(f, digest=digest, size=len(data)) if f is old else f for f in root.manifests.files]
    new_root = dataclasses.replace(root, blobs=blobs, manifests=dataclasses.replace(root.manifests, files=files))
    return rs.with_root_bytes(new_root.to_bytes(), {layout.blob_path(old.digest): None},
                              [(layout.blob_path(digest), data)])


def _bsdiff_bomb(out_size: int) -> bytes:
    """A BSDIFF40 patch claiming ``out_size`` bytes whose diff block inflates to 64 MiB of zeros."""
    ctrl = bz2.compress(struct.pack("<qqq", out_size, 0, 0))
    diff = bz2.compress(bytes(64 * 1024 * 1024))
    extra = bz2.compress(b"")
    return b"BSDIFF40" + struct.pack("<qqq", len(ctrl), len(diff), out_size) + ctrl + diff + extra


def delta_bombs(g: Genuine) -> Iterator[Mutant]:
    """A genuine delta, one blob the site has (``base``) turned into a patch that is a decompression
    bomb (the delta's small documents are packed, so no whole blob is carried)."""
    t = Tar(g.delta)
    from edgebundle.root import parse_root

    root = parse_root(root_bytes_of(t))
    assert root.delta is not None
    rebuild = root.delta["rebuild"]
    victim, source = next((d, e["from"]) for d, e in sorted(rebuild.items())
                          if e["method"] == "base" and "registry" in e["from"]["at"])
    size = root.blobs[victim].size
    rs = Resigner(t, root, g.keys["release"][0])
    for method, bomb, expect in (
            ("zstd-patch-from", endless_zstd(b"", None, 64), r"zstd data yields more than the \d+ bytes expected"),
            ("zstd-patch-from", zstandard.ZstdCompressor().compress(bytes(32 * 1024 * 1024)),
             r"zstd data yields more than the \d+ bytes expected"),
            ("bsdiff4", _bsdiff_bomb(size), r"bsdiff4 diff block expands past \d+ bytes")):
        digest = sha256_bytes(bomb)
        delta = copy.deepcopy(root.delta)
        delta["carried"][digest] = {"kind": "patch", "size": len(bomb)}
        delta["rebuild"][victim] = {"what": rebuild[victim].get("what", "?"), "method": method, "size": size,
                                    "from": source, "patch": digest}
        new_root = dataclasses.replace(root, delta=delta)
        label = "endless frame" if bomb.startswith(b"\x28\xb5\x2f\xfd\x00") else (
            "32 MiB of zeros" if method != "bsdiff4" else "bzip2 bomb")
        yield Mutant("signed-hostile", f"delta patch {method} {label}, re-signed",
                     rs.with_root_bytes(new_root.to_bytes(), {}, [(layout.blob_path(digest), bomb)]),
                     expect)


def dialect(t: Tar) -> Iterator[Mutant]:
    """Compressed files handed over as a bundle, and headers of no accepted dialect."""
    import gzip
    import lzma

    whole = t.path.read_bytes()
    for kind, data in (("gzip", gzip.compress(whole, mtime=0)), ("zstd", zstandard.ZstdCompressor().compress(whole)),
                       ("xz", lzma.compress(whole)), ("bzip2", bz2.compress(whole))):
        yield Mutant("dialect", f"{kind}-compressed bundle", lambda d, data=data: _write(d, data),
                     rf"the bundle file is not a tar: it is {kind}-compressed data")
    first = t.members[0]
    header = t.path.read_bytes()[first.header:first.header + 512]
    for label, magic in (("v7 tar (no magic)", b"\0" * 8), ("ustar with a GNU version", b"ustar\x00  "),
                         ("GNU magic without its NUL", b"ustar   "), ("pax-looking magic", b"paxtar00")):
        hdr = bytearray(header)
        hdr[257:265] = magic
        yield Mutant("dialect", f"first header {label}", t.splice(first.header, first.header + 512, reseal(bytes(hdr))),
                     r"tar header at byte 0 is neither POSIX ustar nor GNU tar")


def _write(d: Path, data: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "bundle.tar").write_bytes(data)
    return d / "bundle.tar"


def build_signed_corpus(g: Genuine) -> list[Mutant]:
    from edgebundle.root import parse_root

    t = Tar(g.good)
    root = parse_root(root_bytes_of(t))
    return [*signed_hostile(t, root, g), *dialect(t)]


__all__ = ["SIGNED_FAMILIES", "build_signed_corpus"]
