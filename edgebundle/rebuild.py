"""Rebuilding the full bundle a delta stands for, from its carried members and the site's base.

A delta's signed root pins the **full target** plus ``base`` and ``delta`` (docs/DELTA.md):
``delta.carried`` lists the blobs physically in the delta (target blobs carried whole, or
patches) and ``delta.rebuild`` says, for **every** target blob, how the site gets it: ``whole``,
``base`` (the site has these bytes), or a patch method applied to a base input. Base inputs are
only what a site keeps after installing the base: image blobs and manifests in its registry and
model *files* on its NAS. The builder's side (planning and writing deltas) is bundler/delta.py.
Small carried documents (image manifests and configs, Kubernetes manifests, ``index.json``, the
SBOM) travel together in one zstd **pack** blob, compressed against the full target's root
document (:func:`full_root_bytes`) as a raw prefix: ``packed`` entries and ``delta.files`` name
an offset into the decoded pack, whose decoded size the root signs.

Invariants:
- :func:`full_root` of a delta root is byte-for-byte the root of the full bundle, so a site that
  installed a delta is in the state the full bundle would have left (same root digest too).
- Every byte stream :class:`ReconstructedSource` hands out is hashed as it is read and fails at
  its end unless it matches the signed digest (the file digest first for re-encoded layers).
- A pack is decoded as a stream and never past its signed decoded size (``prove_patches`` decodes
  each one whole: a pack that yields more or fewer bytes is refused at verify); each packed
  document is hashed against its own pin as it is read, like every rebuilt blob.
- Reconstruction streams: patches are applied piece by piece (edgebundle/patch.py), so memory is
  bounded by the piece size (and by ``ZPF_MAX``/``BSDIFF_MAX`` for whole-blob patches),
  whatever the model size.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from edgebundle import compress, layout
from edgebundle.digest import CHUNK, HashingWriter, check, iter_chunks
from edgebundle.errors import UsageError, VerificationError
from edgebundle.patch import BSDIFF_MAX, ZPF_MAX, PatchError, apply_container, bsdiff_decode, proving, zstd, zstd_decode
from edgebundle.root import Root
from edgebundle.sources import BundleSource

METHODS = ("whole", "base", "bsdiff4", "zstd-patch-from", "gguf-tensors", "windows", "packed")
#: Methods whose ``reason`` and ``carriedBytes`` follow from the method (left out of the root).
IMPLIED = ("whole", "base", "packed")
#: Largest document the builder puts in a delta's pack (each is read whole when packed).
PACK_ENTRY_MAX = 64 * 1024
IMPLIED_KEYS = ("reason", "carriedBytes")


PATCH_METHODS = ("bsdiff4", "zstd-patch-from", "gguf-tensors", "windows")


#: libzstd version string recorded with re-encoded ``tar+zstd`` layers.
ZSTD_VERSION = ".".join(map(str, zstd.zstd_version_info))


def full_root(root: Root) -> Root:
    """The root of the full bundle a delta stands for: the same document without base/delta."""
    return replace(root, base=None, delta=None)


def full_root_bytes(root: Root) -> bytes:
    return full_root(root).to_bytes()


def full_root_digest(root: Root) -> str:
    return full_root(root).digest



class BaseInputs(Protocol):
    """Where the bytes a delta's ``from`` entries name come from (a base bundle, or a site)."""

    description: str

    def open_input(self, src: dict[str, Any]) -> contextlib.AbstractContextManager[BinaryIO]:
        """The bytes of ``src`` (``{digest, size, at}``); seekable for ``at.nas`` inputs."""
        ...

    def local_path(self, src: dict[str, Any]) -> Path | None:
        """A local file holding ``src``'s bytes, when there is one (saves a copy)."""
        ...


class CheckedStream(io.RawIOBase):
    """Reads from ``chunks`` and fails at the end unless the bytes hash to ``digest``/``size``.

    ``read(n)`` returns exactly ``min(n, remaining)`` bytes (callers such as
    :func:`edgebundle.sources.read_small` read a small document in one call), and the final check
    runs inside the read that meets the end, so nobody sees EOF on unverified bytes.
    """

    def __init__(self, chunks: Iterator[bytes], digest: str, size: int, what: str) -> None:
        self._chunks = chunks
        self._buf = b""
        self._h = HashingWriter(_Null())
        self._digest, self._size, self._what = digest, size, what
        self._done = False

    def readable(self) -> bool:
        return True

    def _pull(self) -> bool:
        if self._done:
            return False
        for chunk in self._chunks:
            if chunk:
                self._h.write(chunk)
                if self._h.size > self._size:
                    raise PatchError(f"{self._what}: rebuilt bytes exceed the signed {self._size}")
                if self._h.size == self._size:
                    self._finish()  # the last bytes are handed out only once they are proven
                self._buf = chunk
                return True
        self._finish()
        return False

    def _finish(self) -> None:
        for extra in self._chunks:
            if extra:
                raise PatchError(f"{self._what}: rebuilt bytes exceed the signed {self._size}")
        self._done = True
        check(self._what, self._digest, self._size, self._h.digest, self._h.size)

    def read(self, n: int | None = -1) -> bytes:
        want = None if n is None or n < 0 else n
        parts: list[bytes] = []
        got = 0
        while want is None or got < want:
            if not self._buf and not self._pull():
                break
            take = self._buf if want is None else self._buf[:want - got]
            self._buf = self._buf[len(take):]
            parts.append(take)
            got += len(take)
        return b"".join(parts)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


class ReconstructedSource(BundleSource):
    """The full target bundle, presented from a delta's carried members plus base inputs.

    ``members()`` is the full target's member set; ``open(blob)`` yields the carried bytes or a
    reconstruction stream, hashed against the signed digest as it is read. ``full_target``
    tells :class:`edgebundle.verify.Verifier` to check it against the full pins.
    """

    full_target = True

    def __init__(self, delta: BundleSource, root: Root, base: BaseInputs, scratch: Path) -> None:
        if root.delta is None:
            raise UsageError("not a delta bundle")
        self.delta, self.root, self.base, self.scratch = delta, root, base, Path(scratch)
        self.description = f"{delta.description} rebuilt against {base.description}"

    def members(self) -> dict[str, int]:
        have = self.delta.members()
        out = {name: size for name, (_, size) in self.root.member_pins(full=True).items()}
        if layout.ROOT in have:
            out[layout.ROOT] = have[layout.ROOT]
        return out

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        digest = layout.digest_of_blob_path(name)
        if digest is None or digest in self.root.delta["carried"]:  # type: ignore[index]
            with open_member(self.delta, self.root, name) as f:
                yield f
            return
        with self.open_blob(digest) as f:
            yield f

    def entry(self, digest: str) -> dict[str, Any]:
        return self.root.delta["rebuild"][digest]  # type: ignore[index]

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """The target blob ``digest`` as a checked stream (carried, copied or patched)."""
        e = self.entry(digest)
        pin = self.root.blobs[digest]
        what = f"rebuilt blob {digest[:19]} ({e.get('what', '?')})"
        if e["method"] == "whole":
            with self.delta.open(layout.blob_path(digest)) as f:
                yield f
            return
        if e["method"] == "packed":
            yield open_packed(self.delta, self.root, e, digest, pin.size, what)
            return
        file = e.get("file")
        with contextlib.ExitStack() as stack:
            if file is None:
                yield CheckedStream(self._content(e, pin.size, what, stack), digest, pin.size, what)
            elif file["encoding"] == "identity":
                yield CheckedStream(self._content(e, file["size"], what, stack), digest, pin.size, what)
            else:
                path = self._encoded_layer(e, file, digest, pin.size, what, stack)
                fh = stack.enter_context(open(path, "rb"))
                yield CheckedStream(iter_chunks(fh), digest, pin.size, what)

    def _content(self, e: dict[str, Any], out_size: int, what: str,
                 stack: contextlib.ExitStack) -> Iterator[bytes]:
        """The bytes the entry's method produces: the blob, or for model layers the file."""
        src_ref = e["from"]
        src = stack.enter_context(self.base.open_input(src_ref))
        method = e["method"]
        if method == "base":
            return iter_chunks(src, src_ref["size"] + 1)
        patch = stack.enter_context(self.delta.open(layout.blob_path(e["patch"])))
        if method == "gguf-tensors" or method == "windows":
            return apply_container(src, src_ref["size"], patch, out_size, what)
        limit = BSDIFF_MAX if method == "bsdiff4" else ZPF_MAX
        if src_ref["size"] > limit or out_size > limit:
            raise PatchError(f"{what}: {method} is limited to {limit}-byte blobs")
        old = read_bounded(src, src_ref["size"], what + " source")
        if method == "zstd-patch-from":
            return zstd_decode(patch, out_size, old, what)
        data = bsdiff_decode(old, read_bounded(patch, 2 * limit + (1 << 20), what + " patch"),
                             out_size, what)
        return (data[i:i + CHUNK] for i in range(0, len(data), CHUNK))

    def _encoded_layer(self, e: dict[str, Any], file: dict[str, Any], digest: str, size: int,
                       what: str, stack: contextlib.ExitStack) -> Path:
        """Rebuild a ``tar+zstd`` layer: the file (checked), then compress it as the builder did."""
        src_path = self.base.local_path(e["from"]) if e["method"] == "base" else None
        if src_path is None:
            src_path = self._scratch_file(stack)
            with open(src_path, "wb") as out:
                chunks = CheckedStream(self._content(e, file["size"], what, stack), file["digest"],
                                       file["size"], f"{what} file {file['path']}")
                for chunk in iter_chunks(chunks):  # type: ignore[arg-type]
                    out.write(chunk)
        layer = self._scratch_file(stack)
        with open(layer, "wb") as out:
            w = HashingWriter(out)
            compress.write_tar_zstd(src_path, file["path"], w)  # type: ignore[arg-type]
        if (w.digest, w.size) != (digest, size):
            raise VerificationError(
                f"{what}: re-encoding {file['path']} gave {w.digest} ({w.size} bytes), not the signed "
                f"{digest}", hint=f"this zstd ({ZSTD_VERSION}) does not reproduce the builder's "
                                  f"({e.get('zstd', '?')}); install the full bundle instead")
        return layer

    def _scratch_file(self, stack: contextlib.ExitStack) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.scratch, prefix=".delta-rebuild-")
        os.close(fd)
        path = Path(name)
        stack.callback(lambda: path.unlink(missing_ok=True))
        return path


@contextlib.contextmanager
def open_member(delta: BundleSource, root: Root, name: str) -> Iterator[BinaryIO]:
    """A member of the delta ``delta`` as is, or a document out of its pack (a ``delta.files``
    file or a ``packed`` blob), hashed against its pin as it is read."""
    digest = layout.digest_of_blob_path(name)
    entry = (root.delta or {}).get("rebuild", {}).get(digest) if digest else None
    if digest is not None and entry is not None and entry["method"] == "packed":
        yield open_packed(delta, root, entry, digest, entry["size"], f"{name} (from the delta's pack)")
        return
    e = root.packed_files.get(name)
    if e is None:
        with delta.open(name) as f:
            yield f
        return
    pin = root.files[name]
    yield open_packed(delta, root, e, pin.digest, pin.size, f"{name} (from the delta's pack)")


def open_packed(delta: BundleSource, root: Root, e: dict[str, Any], digest: str, size: int,
                what: str) -> BinaryIO:
    """The ``size`` bytes at ``e["offset"]`` of the decoded pack ``e["pack"]``, hashed against
    ``digest`` as they are read (the pack is decoded as a stream, at most its signed size)."""
    return CheckedStream(_packed_chunks(delta, root, e["pack"], e["offset"], size, what),  # type: ignore[return-value]
                         digest, size, what)


def _packed_chunks(delta: BundleSource, root: Root, pack: str, offset: int, size: int,
                   what: str) -> Iterator[bytes]:
    decoded = root.delta["carried"][pack]["decoded"]  # type: ignore[index]
    end, pos = offset + size, 0
    with delta.open(layout.blob_path(pack)) as f:
        for chunk in zstd_decode(f, decoded, full_root_bytes(root), f"{what}: pack {pack[:19]}"):
            if pos + len(chunk) > offset:
                yield chunk[max(0, offset - pos):end - pos]
            pos += len(chunk)
            if pos >= end:
                return


def prove_packs(delta: BundleSource, root: Root) -> None:
    """Every carried pack decodes to exactly its signed decoded size (a pack bomb or a short
    pack is refused at verify, before anything reads a document out of it)."""
    for digest, c in sorted((root.delta or {}).get("carried", {}).items()):
        if c["kind"] == "pack":
            with delta.open(layout.blob_path(digest)) as f:
                for _ in zstd_decode(f, c["decoded"], full_root_bytes(root), f"delta pack {digest[:19]}"):
                    pass


class _ZeroReader(io.RawIOBase):
    """``size`` zero bytes, seekable: a stand-in base for proving that patches decode."""

    def __init__(self, size: int) -> None:
        self._size, self._pos = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, min(self._size, {0: 0, 1: self._pos, 2: self._size}[whence] + pos))
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        b[:n] = bytes(n)
        self._pos += n
        return n


class _ZeroBase:
    """Base inputs of the right sizes, all zeros: decoding against them bounds a patch's output."""

    description = "zeros (proving the patches decode within their signed sizes)"

    @contextlib.contextmanager
    def open_input(self, src: dict[str, Any]) -> Iterator[BinaryIO]:
        yield _ZeroReader(src["size"])  # type: ignore[misc]

    def local_path(self, src: dict[str, Any]) -> Path | None:
        return None


def prove_patches(delta: BundleSource, root: Root) -> None:
    """Every carried patch decodes, within its signed output size, without the base (``installer verify``).

    Patches are decoded against zeros of the base's signed sizes: the output is garbage, but a
    patch that would expand past its signed size (a decompression bomb) or is malformed is refused
    here, as verify refuses compressed model layers, instead of only when ``load`` rebuilds it.
    """
    if root.delta is None:
        return
    prove_packs(delta, root)
    rebuilt = ReconstructedSource(delta, root, _ZeroBase(), Path(tempfile.gettempdir()))
    for digest, e in sorted(root.delta["rebuild"].items()):
        if "patch" not in e:
            continue
        out_size = e["file"]["size"] if e.get("file") else root.blobs[digest].size
        what = f"patch {e['patch'][:19]} for {e.get('what', digest[:19])}"
        with contextlib.ExitStack() as stack:
            stack.enter_context(proving())
            produced = 0
            for chunk in rebuilt._content(e, out_size, what, stack):
                produced += len(chunk)
                if produced > out_size:
                    raise PatchError(f"{what} yields more than its signed {out_size} bytes")


def read_bounded(f: BinaryIO, n: int, what: str) -> bytes:
    data = bytearray()
    for chunk in iter_chunks(f, n + 1):
        data += chunk
    if len(data) > n:
        raise PatchError(f"{what} is larger than its {n}-byte bound")
    return bytes(data)


def rebuild_order(root: Root, digests: list[str] | None = None) -> list[str]:
    """The digests a reconstruction check should stream (patched and re-encoded ones by default)."""
    if digests is not None:
        return digests
    rebuild = (root.delta or {}).get("rebuild", {})
    return sorted(d for d, e in rebuild.items() if e["method"] in PATCH_METHODS
                  or (e.get("file") or {}).get("encoding") == "tar+zstd" and e["method"] != "whole")


def check_reconstruction(source: ReconstructedSource, digests: list[str] | None = None,
                         progress: Callable[[int], None] | None = None) -> int:
    """Stream each blob in ``digests`` (default: every patched or re-encoded one); bytes checked."""
    total = 0
    for d in rebuild_order(source.root, digests):
        with source.open_blob(d) as f:
            for chunk in iter_chunks(f):
                total += len(chunk)
                if progress:
                    progress(len(chunk))
    return total


def describe_delta(root: Root) -> dict[str, Any] | None:
    """Per blob: method, base input, sizes and ratio (``bundle inspect``); None for a full bundle."""
    if root.delta is None or root.base is None:
        return None
    rows = []
    for digest, e in sorted(root.delta["rebuild"].items(), key=lambda kv: kv[1].get("what", "")):
        src = e.get("from") or {}
        # a packed document costs at most its size (the pack is compressed as one)
        carried = int(e.get("carriedBytes", e["size"] if e["method"] in ("whole", "packed") else 0))
        rows.append({"digest": digest, "what": e.get("what"), "method": e["method"], "size": e["size"],
                     "carriedBytes": carried, "ratio": round(carried / e["size"], 4) if e["size"] else 0.0,
                     "base": src.get("digest"), "baseAt": src.get("at"), "patch": e.get("patch"),
                     "reason": e.get("reason")})
    carried_total = sum(c["size"] for c in root.delta["carried"].values())
    full = root.total_size()
    return {"base": {"name": root.base.name, "version": root.base.version, "root": root.base.root},
            "fullRoot": full_root_digest(root), "fullBlobBytes": full, "carriedBlobBytes": carried_total,
            "ratio": round(carried_total / full, 4) if full else 0.0,
            "methods": {m: sum(1 for r in rows if r["method"] == m) for m in METHODS
                        if any(r["method"] == m for r in rows)},
            "blobs": rows}


def describe_carried(root: Root, digest: str) -> str | None:
    """What a delta's carried blob is for, so an error about a bad patch names the file it rebuilds."""
    rebuild = (root.delta or {}).get("rebuild", {})
    for e in rebuild.values():
        if e.get("patch") == digest:
            return f"the {e['method']} patch that rebuilds {e.get('what', 'a blob')}"
    entry = rebuild.get(digest)
    return entry.get("what") if entry else None
