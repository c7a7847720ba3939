"""The packages installed in a container image, read from its layers as they stream past.

A layer (plain, gzip or zstd tar) is decompressed and walked once, front to back; only the files
that list packages are read: the Debian/Ubuntu dpkg database (``var/lib/dpkg/status`` and the
distroless ``status.d/`` entries), Alpine's ``lib/apk/db/installed``, Python distributions'
``*.dist-info/METADATA``, and ``os-release`` (which distribution the packages belong to).
:func:`merge_layers` then stacks the layers as a container runtime would.

Invariants:
- Streams: no layer is held in memory; every read is bounded (package databases
  :data:`MAX_DATABASE_BYTES`, one METADATA head :data:`MAX_METADATA_BYTES`, pax and GNU long-name
  headers :data:`MAX_TAR_EXTENSION_BYTES`, packages per image :data:`MAX_PACKAGES`); past a bound
  the image is refused with :class:`LayerScanError` naming the layer and the file.
- Whiteouts are honoured: ``DIR/.wh.NAME`` removes NAME (and all below it) of the layers below,
  ``DIR/.wh..wh..opq`` removes everything the layers below have in DIR, a later layer's file
  replaces an earlier one, and a later non-regular entry (link, directory) at a database's path
  removes it.
- A layer is read to its end, so the digest check of the stream that feeds it always runs.
- :class:`ScanCache` keeps each layer's scan on the build host by layer digest (the scan is a
  function of the layer's bytes and :data:`SCAN_VERSION`): a layer is scanned once per host, not
  once per build. An entry that does not parse exactly is scanned again; the cache only ever
  saves time.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from edgebundle.digest import CHUNK, is_digest, read_bounded
from edgebundle.errors import EdgebundleError
from edgebundle.usercache import user_cache

#: The largest dpkg status or apk database read (a big Ubuntu image's is about 3 MiB).
MAX_DATABASE_BYTES = 32 * 1024 * 1024
#: The most bytes of one METADATA (or status.d entry) read: its headers must end within them.
MAX_METADATA_BYTES = 1024 * 1024
#: The largest pax extended header or GNU long name in a layer's tar.
MAX_TAR_EXTENSION_BYTES = 1024 * 1024
#: The most packages one image may list.
MAX_PACKAGES = 200_000
MAX_OS_RELEASE_BYTES = 64 * 1024

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_DIST_INFO_METADATA = re.compile(r"(?:^|/)[^/]+\.dist-info/METADATA$")
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_OPAQUE = ".wh..wh..opq"


class LayerScanError(EdgebundleError):
    """A layer could not be read for the SBOM, or a package database in it is over its bound."""


@dataclass(frozen=True, order=True)
class Package:
    """One installed package, as its database records it."""

    kind: str  # deb | apk | pypi
    name: str
    version: str
    arch: str | None = None
    license: str | None = None
    origin: str | None = None  # the source package (dpkg Source, apk origin)
    path: str = ""  # the database file inside the image that lists it


@dataclass
class LayerScan:
    """What one layer adds and removes (paths are relative, without a leading ``./`` or ``/``)."""

    packages: dict[str, list[Package]] = field(default_factory=dict)  # database path -> packages
    os_release: dict[str, dict[str, str]] = field(default_factory=dict)  # path -> fields
    removed: list[str] = field(default_factory=list)  # whiteouts: a path and all below it
    opaque: list[str] = field(default_factory=list)  # directories emptied of lower layers' entries


@dataclass(frozen=True)
class ImagePackages:
    """The merged view of an image's layers."""

    packages: list[Package]
    os_release: dict[str, str]


def database_kind(path: str) -> str | None:
    """Which reader a file at ``path`` needs, or None when it lists no packages."""
    if path == DPKG_STATUS or (path.startswith(DPKG_STATUS_D) and "/" not in path[len(DPKG_STATUS_D):]
                               and not path.endswith(".md5sums") and path != DPKG_STATUS_D.rstrip("/")):
        return "deb"
    if path == APK_INSTALLED:
        return "apk"
    if _DIST_INFO_METADATA.search(path):
        return "pypi"
    if path in OS_RELEASE:
        return "os"
    return None


def _clean(raw: str) -> str | None:
    """A tar member name as a relative path, or None for one that leaves the root."""
    path = posixpath.normpath("/" + raw).lstrip("/")
    return path or None


# --- the tar walk ---------------------------------------------------------------------------------

def _read_exactly(f: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        data = f.read(min(n - got, CHUNK))
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _skip(f: BinaryIO, n: int) -> None:
    while n > 0:
        data = f.read(min(n, CHUNK))
        if not data:
            raise LayerScanError("the layer's tar ends in the middle of a member (truncated)")
        n -= len(data)


def _pax_fields(data: bytes) -> dict[str, str]:
    """``path`` and ``size`` of a pax extended header (``LEN KEY=VALUE\\n`` records)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise LayerScanError("the layer's tar has a malformed pax header")
        end = pos + int(data[pos:space])
        if end <= space or end > len(data):
            raise LayerScanError("the layer's tar has a malformed pax header")
        key, _, value = data[space + 1:end - 1].partition(b"=")
        if key in (b"path", b"size"):
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


class _TarWalk:
    """The entries of a tar stream; :meth:`read` takes the current entry's data, bounded."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._left = 0  # unread data (and padding) of the current entry

    def _extension(self, size: int) -> bytes:
        if size > MAX_TAR_EXTENSION_BYTES:
            raise LayerScanError(f"the layer's tar has a {size}-byte extended header, over the "
                                 f"{MAX_TAR_EXTENSION_BYTES}-byte bound")
        data = _read_exactly(self.f, size)
        _skip(self.f, -size % tarfile.BLOCKSIZE)
        return data

    def entries(self) -> Iterator[tuple[str, bytes, int]]:
        """(name, type, size) of each entry; the data not read by the consumer is skipped."""
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            block = _read_exactly(self.f, tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE:
                if not block:
                    return  # some writers leave out the end marker
                raise LayerScanError("the layer's tar ends in the middle of a header (truncated)")
            if block == bytes(tarfile.BLOCKSIZE):
                return
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as e:
                raise LayerScanError(f"the layer's tar has a damaged header ({e})") from None
            if info.size < 0:
                raise LayerScanError("the layer's tar has a header with a negative size")
            kind = info.type
            if kind in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                pax = _pax_fields(self._extension(info.size))
                continue
            if kind == tarfile.XGLTYPE:
                self._extension(info.size)
                continue
            if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                data = self._extension(info.size)
                if kind == tarfile.GNUTYPE_LONGNAME:
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            name = pax.get("path") or long_name or info.name
            size = int(pax["size"]) if pax.get("size", "").isdigit() else info.size
            long_name, pax = None, {}
            has_data = kind in _REGULAR or kind == tarfile.GNUTYPE_SPARSE or kind not in tarfile.SUPPORTED_TYPES
            self._left = size + (-size % tarfile.BLOCKSIZE) if has_data else 0
            yield name, kind, size if has_data else 0
            _skip(self.f, self._left)
            self._left = 0

    def read(self, size: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of the current entry (of ``size`` bytes); the rest is skipped."""
        data = _read_exactly(self.f, min(size, limit))
        self._left -= len(data)
        return data


# --- the database readers -------------------------------------------------------------------------

def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """RFC 822-style stanzas separated by blank lines (dpkg); continuation lines are dropped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif line[0] not in " \t" and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if fields:
        yield fields


def read_dpkg(text: str, path: str, status_required: bool = True) -> list[Package]:
    """The installed packages of a dpkg status file (``status_required=False`` for a distroless
    ``status.d`` entry, which has no Status field)."""
    out = []
    for p in _paragraphs(text):
        status = p.get("Status")
        if not p.get("Package") or not p.get("Version"):
            continue
        if status is not None and status.split()[-1:] != ["installed"]:
            continue  # removed, config-files only, half-installed
        if status is None and status_required:
            continue
        source = p.get("Source", "").split(" ", 1)[0] or None
        out.append(Package("deb", p["Package"], p["Version"], p.get("Architecture"), None, source, path))
    return out


def read_apk(text: str, path: str) -> list[Package]:
    """The packages of Alpine's installed database (``P:name``, ``V:version``, ``A:``, ``L:``, ``o:``)."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if len(line) > 1 and line[1] == ":":
                fields.setdefault(line[0], line[2:].strip())
        if fields.get("P") and fields.get("V"):
            out.append(Package("apk", fields["P"], fields["V"], fields.get("A"), fields.get("L"),
                               fields.get("o"), path))
    return out


def read_metadata(text: str, path: str) -> list[Package]:
    """A Python distribution from the headers of its ``METADATA`` (core metadata)."""
    head = HeaderParser().parsestr(text, headersonly=True)
    name, version = head.get("Name"), head.get("Version")
    if not name or not version:
        return []
    lic = head.get("License-Expression") or head.get("License")
    lic = lic.strip() if lic and lic.strip() and lic.strip().upper() != "UNKNOWN" and "\n" not in lic.strip() else None
    return [Package("pypi", str(name).strip(), str(version).strip(), None, lic, None, path)]


def read_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and key and not key.startswith("#"):
            out[key] = value.strip().strip("\"'")
    return out


# --- one layer, then the image --------------------------------------------------------------------

def open_layer(raw: BinaryIO) -> BinaryIO:
    """The tar inside a layer stream: gzip and zstd are recognised by their magic bytes."""
    buffered = io.BufferedReader(raw, CHUNK)  # type: ignore[arg-type]
    magic = buffered.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    if magic == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)  # type: ignore[return-value]
    return buffered  # type: ignore[return-value]


def scan_layer(raw: BinaryIO, what: str) -> LayerScan:
    """Walk one layer (``raw``: its blob as stored) and collect what it adds and removes.

    ``what`` names the layer in errors (image, platform and digest)."""
    scan = LayerScan()
    try:
        tar = open_layer(raw)
        walk = _TarWalk(tar)
        for raw_name, kind, size in walk.entries():
            path = _clean(raw_name)
            if path is None:
                continue
            base = path.rsplit("/", 1)[-1]
            parent = path[:-len(base)].rstrip("/")
            if base == _OPAQUE:
                scan.opaque.append(parent)
                continue
            if base.startswith(".wh."):
                scan.removed.append(f"{parent}/{base[4:]}".lstrip("/"))
                continue
            db = database_kind(path)
            if db is None:
                continue
            if kind not in _REGULAR:
                scan.removed.append(path)
                continue
            _read_database(walk, scan, db, path, size)
        while tar.read(CHUNK):  # the end marker's padding, and the decompressor's own checks
            pass
        while raw.read(CHUNK):  # whatever follows: the stream's digest is checked at its end
            pass
    except LayerScanError as e:
        raise LayerScanError(f"{what}: {e.message}", hint=e.hint or "the SBOM needs every layer readable as "
                             "a tar; check the image with: skopeo inspect / crane export") from None
    except (OSError, EOFError, zstandard.ZstdError) as e:
        raise LayerScanError(f"{what}: the layer cannot be decompressed ({e})",
                             hint="the layer is damaged or not a (gzip or zstd) tar") from None
    return scan


def _read_database(walk: _TarWalk, scan: LayerScan, db: str, path: str, size: int) -> None:
    limit = {"deb": MAX_DATABASE_BYTES if path == DPKG_STATUS else MAX_METADATA_BYTES,
             "apk": MAX_DATABASE_BYTES, "pypi": MAX_METADATA_BYTES, "os": MAX_OS_RELEASE_BYTES}[db]
    if size > limit and db != "pypi":
        raise LayerScanError(f"{path} is {size} bytes, over the {limit}-byte bound for that file",
                             hint="a real package database is far smaller; rebuild the image without "
                                  "this file, or leave the image out of the bundle")
    text = walk.read(size, limit).decode("utf-8", "replace")
    if db == "os":
        scan.os_release[path] = read_os_release(text)
        return
    if db == "pypi":
        if size > limit and "\n\n" not in text.replace("\r\n", "\n"):
            raise LayerScanError(f"{path}: its headers run past {limit} bytes",
                                 hint="a real METADATA file's headers are a few KiB; rebuild the image "
                                      "without this file, or leave the image out of the bundle")
        scan.packages[path] = read_metadata(text, path)
    elif db == "deb":
        scan.packages[path] = read_dpkg(text, path, status_required=path == DPKG_STATUS)
    else:
        scan.packages[path] = read_apk(text, path)


def _drop(found: dict[str, object], prefix: str, itself: bool) -> None:
    for key in [k for k in found if (itself and k == prefix) or k.startswith(prefix + "/") or not prefix]:
        del found[key]


def merge_layers(scans: list[LayerScan], what: str) -> ImagePackages:
    """The packages of the image whose layers, bottom first, are ``scans``."""
    packages: dict[str, list[Package]] = {}
    releases: dict[str, dict[str, str]] = {}
    for scan in scans:
        for found in (packages, releases):
            for d in scan.opaque:
                _drop(found, d, itself=False)  # type: ignore[arg-type]
            for r in scan.removed:
                _drop(found, r, itself=True)  # type: ignore[arg-type]
        packages.update(scan.packages)
        releases.update(scan.os_release)
    merged = sorted({p for listed in packages.values() for p in listed})
    if len(merged) > MAX_PACKAGES:
        raise LayerScanError(f"{what} lists {len(merged)} packages, over the {MAX_PACKAGES} an SBOM takes",
                             hint="leave the image out of the bundle or split it")
    os_release = next((releases[p] for p in OS_RELEASE if p in releases), {})
    return ImagePackages(merged, os_release)


# --- the build host's cache of layer scans --------------------------------------------------------

#: Bumped whenever :func:`scan_layer` may say something else about the same layer.
SCAN_VERSION = 1
#: ``EDGEBUNDLE_SCAN_CACHE``: the cache directory, or ``off``.
SCAN_CACHE_ENV = "EDGEBUNDLE_SCAN_CACHE"
_PACKAGE_FIELDS = ("kind", "name", "version", "arch", "license", "origin", "path")


def default_scan_cache() -> Path | None:
    """``$EDGEBUNDLE_SCAN_CACHE``, else ``$XDG_CACHE_HOME/edgebundle/layerscan`` (None: ``off``)."""
    configured = os.environ.get(SCAN_CACHE_ENV, "")
    if configured == "off":
        return None
    if configured:
        return Path(configured)
    return Path(user_cache("layerscan"))


def _scan_to_json(scan: LayerScan) -> dict[str, Any]:
    return {"version": SCAN_VERSION, "opaque": scan.opaque, "removed": scan.removed, "osRelease": scan.os_release,
            "packages": {db: [[getattr(p, f) for f in _PACKAGE_FIELDS] for p in ps]
                         for db, ps in scan.packages.items()}}


def _strings(value: Any, nullable: bool = False) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) or (nullable and v is None) for v in value)


def _scan_from_json(doc: Any) -> LayerScan | None:
    """The scan a cache entry holds, or None unless it has exactly the shape :func:`_scan_to_json` writes."""
    if not isinstance(doc, dict) or set(doc) != {"version", "opaque", "removed", "osRelease", "packages"} \
            or doc["version"] != SCAN_VERSION or not _strings(doc["opaque"]) or not _strings(doc["removed"]):
        return None
    osr, pkgs = doc["osRelease"], doc["packages"]
    if not isinstance(osr, dict) or not all(isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
                                            for v in osr.values()):
        return None
    if not isinstance(pkgs, dict) or not all(isinstance(v, list) for v in pkgs.values()):
        return None
    packages: dict[str, list[Package]] = {}
    for db, rows in pkgs.items():
        if not all(_strings(r, nullable=True) and len(r) == len(_PACKAGE_FIELDS) and None not in r[:3]
                   and r[6] is not None for r in rows):
            return None
        packages[db] = [Package(*r) for r in rows]
    return LayerScan(packages=packages, os_release=osr, removed=doc["removed"], opaque=doc["opaque"])


class ScanCache:
    """Layer scans by layer digest in ``directory`` (None: no cache). Best effort both ways: an
    entry that cannot be read or does not parse exactly is ignored (the layer is scanned again and
    the entry rewritten); one that cannot be written is skipped."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def _path(self, digest: str) -> Path | None:
        if self.directory is None or not is_digest(digest):
            return None
        return self.directory / f"v{SCAN_VERSION}" / digest.replace(":", "-")

    def get(self, digest: str) -> LayerScan | None:
        path = self._path(digest)
        if path is None:
            return None
        try:
            return _scan_from_json(json.loads(read_bounded(path, MAX_DATABASE_BYTES, "layer scan")))
        except (OSError, EdgebundleError, ValueError, RecursionError):
            return None

    def put(self, digest: str, scan: LayerScan) -> None:
        path = self._path(digest)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(_scan_to_json(scan), f)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            pass
