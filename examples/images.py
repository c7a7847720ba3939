"""Example RAG-stack container images: small, valid, deterministic OCI images built offline.

``build_layout`` writes an OCI image layout with five images (``rag/llm-service`` is multi-arch:
an OCI index over linux/amd64 and linux/arm64); ``push_layout`` pushes a layout to a registry
with :class:`edgebundle.registry.Registry`; ``build_and_push`` does both. From a shell::

    python examples/images.py --registry 127.0.0.1:5000 [--version 1.1] [--layer-bytes 100000000]

Invariants:
- Same arguments, same bytes, same digests: tar entries are sorted with fixed mtime/uid/gid/mode,
  gzip is written with mtime 0 and no file name, JSON is canonical (sorted keys, no spaces).
- Each image has a config (architecture, os, ``rootfs.diff_ids`` of the uncompressed tars,
  Entrypoint/Cmd) and three gzip layers: a base layer shared by every image of one architecture
  and every version, an app layer per image, and a version layer. Versions therefore differ by
  one small layer per image (plus the optional ``extra_layer``), which is what delta tests need.
- ``layer_bytes`` adds one uncompressed tar layer of seeded pseudo-random bytes to
  ``rag/llm-service`` (shared by both platforms, the same in every version). It is generated
  and hashed in 1 MiB pieces straight into the layout, never held in memory.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebundle import mediatypes as mt
from edgebundle.digest import CHUNK, HashingWriter, sha256_bytes
from edgebundle.layout import INDEX, OCI_LAYOUT, OCI_LAYOUT_BYTES, blob_path
from edgebundle.registry import MAX_MANIFEST_BYTES, Registry

#: 2024-01-01T00:00:00Z: every tar entry and the image configs carry this time.
EPOCH = 1704067200
CREATED = "2024-01-01T00:00:00Z"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ImageSpec:
    """One example image: what it is called, how it starts, which platforms it has."""

    repository: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    port: int
    platforms: tuple[str, ...] = ("linux/amd64",)

    @property
    def app(self) -> str:
        return self.repository.rsplit("/", 1)[-1]


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("rag/llm-service", ("/app/llm-service/run.sh",), ("--model", "/models/llm"), 8080,
              ("linux/amd64", "linux/arm64")),
    ImageSpec("rag/vector-db", ("/app/vector-db/run.sh",), ("--data", "/var/lib/vectors"), 6333),
    ImageSpec("rag/orchestrator", ("/app/orchestrator/run.sh",), ("--config", "/etc/rag/pipeline.yaml"), 8000),
    ImageSpec("rag/chat-ui", ("/app/chat-ui/run.sh",), ("--listen", "0.0.0.0:3000"), 3000),
    ImageSpec("rag/data-connector", ("/app/data-connector/run.sh",), ("--watch", "/data/inbox"), 9000),
)  # fmt: skip

#: Which image carries the ``layer_bytes`` benchmark layer.
BULK_IMAGE = "rag/llm-service"


def canonical_json(doc: Any) -> bytes:
    """The one serialisation used for every document we write (sorted keys, no whitespace)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _platform(platform: str) -> dict[str, str]:
    os_name, arch = platform.split("/")
    out = {"os": os_name, "architecture": arch}
    if arch == "arm64":
        out["variant"] = "v8"
    return out


def _tarinfo(name: str, size: int = 0, mode: int = 0o644, is_dir: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o755 if is_dir else mode
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def small_tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic tar of a few small files (``path -> (content, mode)``) plus their parents."""
    dirs = sorted({str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parents) - 1)})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_tarinfo(d, is_dir=True))
        for path in sorted(files):
            content, mode = files[path]
            tar.addfile(_tarinfo(path, len(content), mode), io.BytesIO(content))
    return buf.getvalue()


class PseudoRandom(io.RawIOBase):
    """``size`` seeded pseudo-random bytes, produced 1 MiB at a time (read sizes do not matter)."""

    def __init__(self, seed: str, size: int) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self._left = size
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        while len(self._buf) < n:  # whole blocks only, so the stream is the same for any read size
            self._buf += self._rng.randbytes(CHUNK)
        out, self._buf = self._buf[:n], self._buf[n:]
        self._left -= len(out)
        return out


class Layout:
    """Writes blobs into an OCI image layout directory; every blob is written once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / OCI_LAYOUT).write_bytes(OCI_LAYOUT_BYTES)

    def path(self, digest: str) -> Path:
        return self.root / blob_path(digest)

    def add(self, data: bytes) -> tuple[str, int]:
        """Store a small blob; its digest and size."""
        digest = sha256_bytes(data)
        target = self.path(digest)
        if not target.exists():
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return digest, len(data)

    def add_stream(self, write: Any) -> tuple[str, int]:
        """Store a blob produced by ``write(out)`` in pieces; its digest and size."""
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "blobs", prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                out = HashingWriter(f)  # type: ignore[arg-type]
                write(out)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, self.path(out.digest))
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return out.digest, out.size

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        (self.root / INDEX).write_bytes(canonical_json(index))


def _gzip_layer(layout: Layout, files: dict[str, tuple[bytes, int]]) -> tuple[dict[str, Any], str]:
    """A small gzip layer: its descriptor and diff_id."""
    tar = small_tar(files)
    digest, size = layout.add(gzip.compress(tar, compresslevel=9, mtime=0))
    return _descriptor(mt.OCI_LAYER_GZIP, digest, size), sha256_bytes(tar)


def _bulk_layer(layout: Layout, seed: str, nbytes: int, app: str) -> tuple[dict[str, Any], str]:
    """An uncompressed tar layer holding ``nbytes`` pseudo-random bytes; diff_id == digest."""

    def write(out: Any) -> None:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(_tarinfo(f"app/{app}/bulk.bin", nbytes), PseudoRandom(seed, nbytes))

    digest, size = layout.add_stream(write)
    return _descriptor(mt.OCI_LAYER_TAR, digest, size), digest


def _base_files(arch: str) -> dict[str, tuple[bytes, int]]:
    os_release = f'NAME="edgebundle demo base"\nID=edgebundle-demo\nVERSION_ID=1\nARCH={arch}\n'.encode()
    hello = b"#!/bin/sh\necho \"edgebundle demo base: $*\"\n"
    return {"etc/os-release": (os_release, 0o644), "usr/local/bin/demo-hello": (hello, 0o755)}


def _app_files(spec: ImageSpec) -> dict[str, tuple[bytes, int]]:
    run = (
        "#!/bin/sh\nset -eu\n"
        f'echo "{spec.repository} $(cat /app/{spec.app}/version) listening on :{spec.port} $*"\n'
        "exec sleep infinity\n"
    ).encode()
    settings = canonical_json({"name": spec.app, "port": spec.port})
    return {f"app/{spec.app}/run.sh": (run, 0o755), f"app/{spec.app}/settings.json": (settings, 0o644)}


def _build_image(
    layout: Layout, spec: ImageSpec, platform: str, version: str, extra_layer: bytes | None,
    bulk: tuple[dict[str, Any], str] | None,
) -> dict[str, Any]:  # fmt: skip
    """Write one platform's layers, config and manifest; the manifest's descriptor."""
    arch = platform.split("/")[1]
    version_text = f"{version}\n{platform}\n".encode()
    layers = [
        _gzip_layer(layout, _base_files(arch)),
        _gzip_layer(layout, _app_files(spec)),
        _gzip_layer(layout, {f"app/{spec.app}/version": (version_text, 0o644)}),
    ]
    if extra_layer is not None:
        layers.append(_gzip_layer(layout, {f"app/{spec.app}/extra.bin": (extra_layer, 0o644)}))
    if bulk is not None:
        layers.append(bulk)
    config = {
        "created": CREATED,
        **_platform(platform),
        "config": {
            "Entrypoint": list(spec.entrypoint),
            "Cmd": list(spec.cmd),
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"APP_VERSION={version}"],
            "WorkingDir": f"/app/{spec.app}",
            "ExposedPorts": {f"{spec.port}/tcp": {}},
            "Labels": {"org.opencontainers.image.title": spec.repository, "org.opencontainers.image.version": version},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layers]},
        "history": [{"created": CREATED, "created_by": f"examples/images.py layer {i}"} for i in range(len(layers))],
    }
    config_digest, config_size = layout.add(canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _descriptor(mt.OCI_CONFIG, config_digest, config_size),
        "layers": [desc for desc, _ in layers],
        "annotations": {"org.opencontainers.image.title": spec.repository, "org.opencontainers.image.version": version},
    }
    digest, size = layout.add(canonical_json(manifest))
    return _descriptor(mt.OCI_MANIFEST, digest, size, platform=_platform(platform))


def build_layout(
    root: Path, *, version: str = "1.0", extra_layer: bytes | None = None, layer_bytes: int = 0,
    images: Iterable[ImageSpec] = IMAGES,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Write the example images into an OCI layout at ``root``; ``repo:version`` -> descriptor."""
    layout = Layout(root)
    top: dict[str, dict[str, Any]] = {}
    for spec in images:
        bulk = None
        if layer_bytes and spec.repository == BULK_IMAGE:
            bulk = _bulk_layer(layout, f"edgebundle-example:{spec.repository}", layer_bytes, spec.app)
        manifests = [_build_image(layout, spec, p, version, extra_layer, bulk) for p in spec.platforms]
        if len(manifests) == 1:
            desc = {k: v for k, v in manifests[0].items() if k != "platform"}
        else:
            index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
            digest, size = layout.add(canonical_json(index))
            desc = _descriptor(mt.OCI_INDEX, digest, size)
        ref = f"{spec.repository}:{version}"
        top[ref] = {**desc, "annotations": {REF_NAME: ref}}
    layout.write_index([top[ref] for ref in sorted(top)])
    return top


def _read_small(path: Path) -> bytes:
    """A JSON document from the layout, refused above the manifest size limit."""
    with open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def push_layout(root: Path, registry: Registry) -> dict[str, str]:
    """Push every tagged image of the layout at ``root``; ``host/repo:tag`` -> manifest digest.

    Blobs go first (a blob another repository already received is mounted, not re-sent), then
    per-platform manifests by digest, then the tagged manifest or index.
    """
    seen: dict[str, str] = {}  # blob digest -> repository that has it

    def opener(digest: str) -> Any:
        return lambda: open(root / blob_path(digest), "rb")

    def push_blob(repo: str, desc: dict[str, Any]) -> None:
        mount = seen.get(desc["digest"])
        registry.push_blob(repo, desc["digest"], desc["size"], opener(desc["digest"]),
                           mount_from=mount if mount != repo else None)  # fmt: skip
        seen.setdefault(desc["digest"], repo)

    def push_manifest(repo: str, desc: dict[str, Any], ref: str) -> str:
        data = _read_small(root / blob_path(desc["digest"]))
        if mt.is_index(desc["mediaType"]):
            for child in json.loads(data)["manifests"]:
                push_manifest(repo, child, child["digest"])
        else:
            doc = json.loads(data)
            for blob in (doc["config"], *doc["layers"]):
                push_blob(repo, blob)
        return registry.put_manifest(repo, ref, data, desc["mediaType"])

    out: dict[str, str] = {}
    for desc in json.loads(_read_small(root / INDEX))["manifests"]:
        name = desc.get("annotations", {}).get(REF_NAME, "")
        repo, _, tag = name.rpartition(":")
        if repo and tag:
            out[f"{registry.host}/{name}"] = push_manifest(repo, desc, tag)
    return out


def build_and_push(
    registry_host: str, *, version: str = "1.0", extra_layer: bytes | None = None, layer_bytes: int = 0,
    layout_dir: Path | None = None,
) -> dict[str, str]:  # fmt: skip
    """Build the example images and push them to ``registry_host``; ``host/repo:version`` -> digest.

    The layout is built in ``layout_dir`` when given (kept), else in a temporary directory.
    """
    with tempfile.TemporaryDirectory(prefix="edgebundle-images-") as tmp:
        root = layout_dir or Path(tmp)
        build_layout(root, version=version, extra_layer=extra_layer, layer_bytes=layer_bytes)
        with Registry(registry_host) as registry:
            return push_layout(root, registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT of the registry to push to")
    parser.add_argument("--version", default="1.0", help="tag and version string (default 1.0)")
    parser.add_argument("--layer-bytes", type=int, default=0, help="add a pseudo-random layer of this size")
    parser.add_argument("--layout", type=Path, help="keep the OCI layout in this directory")
    args = parser.parse_args(argv)
    pushed = build_and_push(args.registry, version=args.version, layer_bytes=args.layer_bytes,
                            layout_dir=args.layout)  # fmt: skip
    for ref, digest in sorted(pushed.items()):
        print(f"{ref}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
