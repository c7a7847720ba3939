"""The bad-bundle corpus: hundreds of named mutants of genuine signed bundles, by attack family.

:func:`build_corpus` turns a few genuine inputs (:class:`Genuine`: a good tar bundle, the same
release as a directory, another genuine release with different content, a genuine delta, and
keys) into :class:`Mutant` s. Each mutant writes its own bad bundle into a directory it is given
(the genuine files are only read), says what the site looks like (trust keys, threshold,
``compatible``, what it already runs) and which message must name the problem.

Families (docs/SECURITY.md has the table): ``flip`` (one byte changed in every region: tar
headers, padding, end marker, root, signatures, each blob kind), ``truncate`` (cut at many
offsets), ``members`` (missing, extra, duplicate), ``tar-unsafe`` (absolute paths, ``..``,
symlinks, hard links, devices, FIFOs, pax/GNU headers, giant declared sizes), ``bombs`` (endless
zstd, JSON nested or sized to exhaust memory), ``trust`` (unsigned, untrusted key, mix-and-match,
swapped blobs, rollback, wrong ``compatible``, delta for another base) and ``threshold`` (k-of-n).

Invariants:
- Mutants are deterministic: the same genuine inputs give the same bytes.
- Members are moved by streaming byte ranges (1 MiB at a time); nothing holds a blob in memory.
- A "re-signed" mutant is signed by the key the site trusts: it models a compromised or buggy
  build host, so only structural checks (not the signature) can stop it.
"""

from __future__ import annotations

import base64
import json
import dataclasses
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgebundle import layout, tarfmt
from edgebundle.digest import CHUNK, sha256_bytes
from edgebundle.root import BlobPin, ModelFile, Root, canonical_json, parse_root
from edgebundle.mediatypes import PAYLOAD_APPROVAL, PAYLOAD_PARTS, PAYLOAD_ROOT
from edgebundle.signing import load_private_key, sign
from edgebundle.sources import TarSource
from tests.fixtures.dsse import document, pae

FAMILIES = ("flip", "truncate", "members", "tar-unsafe", "bombs", "trust", "threshold",
            "signed-hostile", "dialect")  # the last two: tests/hostile/signed.py

#: The message every refused byte-level mutant may end with when the damage lands in a blob.
DIGEST = r"(content digest sha256:[0-9a-f]{64} does not match the signed|size is \d+ bytes, the signed root says)"
TAR_HEADER = r"tar header at byte {at} (has a bad checksum|: checksum is not a number)"
TRUNCATED = r"truncated"
ROOT_SIG = r"edgebundle/root\.dsse\.json: signature by trusted key [0-9a-f]{16} does not match its payload"
#: What a byte changed anywhere in the root envelope may be refused with.
ENVELOPE = (r"edgebundle/root\.dsse\.json(:? is not valid JSON|:? is not a DSSE envelope|: payload is not base64"
            r"|: signature \d+ is not base64|: signature \d+ is not \{keyid, sig\}|:? carries payloadType"
            r"|: signature by trusted key [0-9a-f]{16} does not match its payload"
            r"|: 0 valid signature\(s\) by trusted keys, 1 required)")


@dataclass(frozen=True)
class Genuine:
    """What mutants are made from: genuine bundles (never changed) and keys by name."""

    good: Path  # a full tar bundle, trusted by ``keys["release"]``
    good_dir: Path  # the same release as a directory bundle
    other: Path  # another genuine full tar bundle (newer, with a model ``good`` lacks)
    delta: Path  # a genuine delta: ``good`` -> ``other``
    keys: Mapping[str, tuple[Path, Path]]  # name -> (private key, public key)

    def pub(self, name: str) -> Path:
        return self.keys[name][1]


@dataclass(frozen=True)
class Mutant:
    """One bad bundle: how to write it, the site it meets, and the message that must name it."""

    family: str
    name: str
    build: Callable[[Path], Path]  # writes the bundle under the given directory, returns its path
    expect: str  # a regex that must match the refusal message
    trust: tuple[str, ...] = ("release",)  # key names the site trusts
    threshold: int = 1
    compatible: str | None = None  # the site's compatible (None: the good bundle's)
    installed: Mapping[str, str] | None = None  # an installed.json entry the site already has
    exit_code: int = 4

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


# --- tar surgery ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """Where one member of a genuine tar lies: its header, data and the end of its padding."""

    name: str
    header: int
    data: int
    size: int

    @property
    def end(self) -> int:
        return self.data + self.size + (-self.size % tarfmt.BLOCK)


def tar_members(tar: Path) -> list[Member]:
    """The members of a tar of our dialect in file order (one header block each)."""
    entries = sorted(TarSource.from_path(tar).entries().values(), key=lambda e: e.offset)
    return [Member(e.name, e.offset - tarfmt.BLOCK, e.offset, e.size) for e in entries]


#: A piece of an output file: literal bytes, or ``(offset, length)`` copied from the source tar.
Piece = bytes | tuple[int, int]


def assemble(src: Path, dst: Path, pieces: Sequence[Piece]) -> Path:
    """Write ``dst`` from ``pieces``, streaming source ranges in chunks."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as out:
        for piece in pieces:
            if isinstance(piece, bytes):
                out.write(piece)
                continue
            offset, left = piece
            fin.seek(offset)
            while left > 0:
                data = fin.read(min(CHUNK, left))
                if not data:
                    break
                out.write(data)
                left -= len(data)
    return dst


def raw_header(name: str | bytes, size: int, *, typeflag: bytes = b"0", linkname: bytes = b"",
               prefix: bytes = b"", size_field: bytes | None = None) -> bytes:
    """A checksummed ustar header with any name, type, link target and size field (hostile ones too)."""
    hdr = bytearray(tarfmt.encode_header("x", size, 0))  # (octal, or base-256 from 8 GiB)
    raw = name.encode("utf-8") if isinstance(name, str) else name
    hdr[0:100] = raw[:100].ljust(100, b"\0")
    if size_field is not None:
        hdr[124:136] = size_field
    hdr[156:157] = typeflag
    hdr[157:257] = linkname[:100].ljust(100, b"\0")
    hdr[345:500] = prefix[:155].ljust(155, b"\0")
    return reseal(bytes(hdr))


def reseal(hdr: bytes) -> bytes:
    """``hdr`` with its checksum recomputed, so only the change we made is under test."""
    out = bytearray(hdr)
    out[148:156] = b" " * 8
    out[148:156] = b"%06o\0 " % sum(out)
    return bytes(out)


def member_bytes(name: str | bytes, data: bytes, **header: Any) -> bytes:
    return raw_header(name, len(data), **header) + data + tarfmt.padding(len(data))


def read_range(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


class Tar:
    """A genuine tar bundle and the edits that make mutants of it (each writes a new file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = path.stat().st_size
        self.members = tar_members(path)
        self.by_name = {m.name: m for m in self.members}
        self.end = self.members[-1].end  # where the end marker starts

    def read(self, name: str) -> bytes:
        m = self.by_name[name]
        return read_range(self.path, m.data, m.size)

    def root_bytes(self) -> bytes:
        """The root document: the payload of the root envelope, a delta's decompressed (read here,
        not by the product)."""
        return document(json.loads(self.read(layout.ROOT)))

    def splice(self, start: int, stop: int, new: bytes) -> Callable[[Path], Path]:
        """Replace bytes ``[start, stop)`` with ``new``."""
        return lambda d: assemble(self.path, d / "bundle.tar", [(0, start), new, (stop, self.total - stop)])

    def insert(self, at: int, new: bytes) -> Callable[[Path], Path]:
        return self.splice(at, at, new)

    def flip(self, at: int) -> Callable[[Path], Path]:
        byte = read_range(self.path, at, 1)[0]
        return self.splice(at, at + 1, bytes([byte ^ 0x01]))

    def cut(self, at: int) -> Callable[[Path], Path]:
        return lambda d: assemble(self.path, d / "bundle.tar", [(0, at)])

    def unchanged(self) -> Callable[[Path], Path]:
        """A genuine copy: for attacks that live in the site (what it trusts or already runs)."""
        return self.insert(0, b"")

    def drop(self, name: str) -> Callable[[Path], Path]:
        m = self.by_name[name]
        return self.splice(m.header, m.end, b"")

    def replace(self, changes: Mapping[str, bytes | None], add: Sequence[tuple[str, bytes]] = ()
                ) -> Callable[[Path], Path]:
        """Members named in ``changes`` get new bytes (None: removed); ``add`` go before the blobs
        (after ``index.json``, or after the root when a delta packs its index)."""
        anchor = layout.INDEX if any(m.name == layout.INDEX for m in self.members) else layout.ROOT

        def build(d: Path) -> Path:
            pieces: list[Piece] = []
            for m in self.members:
                if m.name not in changes:
                    pieces.append((m.header, m.end - m.header))
                elif (new := changes[m.name]) is not None:
                    pieces.append(member_bytes(m.name, new))
                if m.name == anchor:
                    pieces += [member_bytes(n, data) for n, data in add]
            return assemble(self.path, d / "bundle.tar", [*pieces, (self.end, self.total - self.end)])
        return build


# --- the families -----------------------------------------------------------------------------

def _blob_kinds(root: Root) -> dict[str, str]:
    """One blob per kind (media type, and raw vs zstd model files): kind -> digest (largest)."""
    kinds: dict[str, str] = {}
    encodings = {f.blob: f.encoding for m in root.models for f in m.files}
    for pin in sorted(root.blobs.values(), key=lambda p: (-p.size, p.digest)):
        kind = pin.mediaType + ("+" + encodings[pin.digest] if pin.digest in encodings else "")
        kinds.setdefault(kind, pin.digest)
    return kinds


def _offsets(size: int) -> list[int]:
    return sorted({0, size // 3, size // 2, size - 1} if size > 0 else set())


def flips(t: Tar, root: Root) -> Iterator[Mutant]:
    """One byte changed in each region of the tar."""
    fields = {"name": 3, "mode": 101, "uid": 110, "size": 130, "mtime": 140, "checksum": 150,
              "typeflag": 156, "magic": 258, "version": 264, "uname": 270, "prefix": 350, "tail": 510}
    headed = [t.by_name[n] for n in (*layout.TAR_HEAD, layout.INDEX)] + [t.members[4], t.members[-1]]
    for m in headed:
        for field_name, off in fields.items():
            yield Mutant("flip", f"header {m.name} {field_name}", t.flip(m.header + off),
                         TAR_HEADER.format(at=m.header))
    for m in [x for x in t.members if x.size % tarfmt.BLOCK][:6]:
        yield Mutant("flip", f"padding after {m.name}", t.flip(m.end - 1),
                     re.escape(f"tar member {m.name!r}: non-zero padding"))
    for off in (0, tarfmt.BLOCK + 100):
        yield Mutant("flip", f"end marker +{off}", t.flip(t.end + off),
                     rf"tar header at byte {t.end + off - off % tarfmt.BLOCK}|data after the end|end marker")
    env = t.by_name[layout.ROOT]
    sig_at = t.read(layout.ROOT).index(b'"sig":"') + len(b'"sig":"')
    for at in sorted({*_offsets(env.size), 2, 7, 15, 30, 100, sig_at + 10, env.size - 8, env.size - 2}):
        yield Mutant("flip", f"root envelope @{at}", t.flip(env.data + at), ENVELOPE)
    for name in (layout.OCI_LAYOUT, layout.INDEX):
        for at in _offsets(t.by_name[name].size):
            yield Mutant("flip", f"{name} @{at}", t.flip(t.by_name[name].data + at),
                         re.escape(name) + ": " + DIGEST)
    for kind, digest in sorted(_blob_kinds(root).items()):
        m = t.by_name[layout.blob_path(digest)]
        for at in _offsets(m.size):
            yield Mutant("flip", f"blob {kind} @{at}", t.flip(m.data + at), re.escape(m.name) + ": " + DIGEST)


def truncations(t: Tar) -> Iterator[Mutant]:
    """The bundle cut short: at member boundaries, inside headers and data, and evenly spread."""
    cuts = {0, 1, 511, 512, t.end, t.end + 1, t.end + tarfmt.BLOCK, t.total - 1}
    for m in t.members[:6] + t.members[-2:]:
        cuts |= {m.header + 100, m.data, m.data + 1, m.data + m.size // 2, m.end - 1}
    cuts |= {t.total * i // 24 for i in range(1, 24)}
    for at in sorted(c for c in cuts if 0 <= c < t.total):
        yield Mutant("truncate", f"at byte {at}", t.cut(at), TRUNCATED)


def copy_of(path: Path) -> Callable[[Path], Path]:
    return lambda d: assemble(path, d / path.name, [(0, path.stat().st_size)])


def envelope(payload: bytes, entries: Sequence[tuple[Path | str, bytes]], payload_type: str = PAYLOAD_ROOT) -> bytes:
    """A DSSE envelope of ``payload`` with exactly these (public key file or keyid, signature) entries."""
    from edgebundle.signing import keyid, load_public_key

    sigs = [{"keyid": k if isinstance(k, str) else keyid(load_public_key(k)), "sig": base64.b64encode(s).decode()}
            for k, s in entries]
    return canonical_json({"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
                           "signatures": sigs})


def signatures_of(env: bytes) -> list[tuple[str, bytes]]:
    return [(s["keyid"], base64.b64decode(s["sig"])) for s in json.loads(env)["signatures"]]


def _other_blob(t: Tar, other: Tar) -> Member:
    """The smallest blob of the other genuine bundle that the good one lacks."""
    return min((m for m in other.members if m.name not in t.by_name and layout.digest_of_blob_path(m.name)),
               key=lambda m: (m.size, m.name))


def members(t: Tar, root: Root, junk: bytes) -> Iterator[Mutant]:
    """Members missing, added after signing, or present twice."""
    yield Mutant("members", "missing root envelope", t.drop(layout.ROOT), "has no edgebundle/root.dsse.json")
    legacy_root, legacy_sigs = layout.LEGACY_TRUST_FILES
    yield Mutant("members", "pre-DSSE root.json + signatures.json",
                 t.replace({layout.ROOT: None}, [(legacy_root, t.root_bytes()), (legacy_sigs, b'{"signatures":[]}')]),
                 r"has edgebundle/root\.json but no edgebundle/root\.dsse\.json: it is a bundle of the pre-DSSE format")
    for name in (layout.OCI_LAYOUT, layout.INDEX, *(layout.blob_path(d) for d in sorted(set(
            _blob_kinds(root).values())))):
        yield Mutant("members", f"missing {name}", t.drop(name),
                     r"lacks 1 member\(s\) the signed root lists: " + re.escape(name))
    extra = layout.blob_path(sha256_bytes(junk))
    for where, at in (("first", 0), ("after index.json", t.by_name[layout.INDEX].end), ("last", t.end)):
        yield Mutant("members", f"extra blob {where}", t.insert(at, member_bytes(extra, junk)),
                     r"does not list: " + re.escape(extra))
    for name in ("README", "blobs/sha512/" + "0" * 64, "edgebundle/keys.pub", "index.json.bak",
                 "~/.ssh/authorized_keys"):
        yield Mutant("members", f"extra {name}", t.insert(t.end, member_bytes(name, junk)),
                     r"does not list: " + re.escape(name))
    yield Mutant("members", "extra directory", t.insert(t.end, raw_header("blobs/sha512/", 0, typeflag=b"5")),
                 "is a directory the bundle does not have")
    for m in [*(t.by_name[n] for n in (*layout.TAR_HEAD, layout.INDEX)), t.members[4], t.members[-1]]:
        for where, at in (("at the end", t.end), ("next to it", m.end)):
            yield Mutant("members", f"duplicate {m.name} {where}",
                         t.insert(at, read_range(t.path, m.header, m.end - m.header)),
                         re.escape(f"tar member {m.name!r} appears twice"))


def unsafe_tar(t: Tar, good_dir: Path, outside: bytes) -> Iterator[Mutant]:
    """Members that would write or read outside the bundle if a careless reader extracted them."""
    blob = t.members[4]
    evil = [("absolute", "/etc/passwd"), ("absolute blob", "/" + blob.name), ("absolute tmp", "/tmp/edgebundle-pwned"),
            ("dotdot", "../evil"), ("dotdot deep", "blobs/../../etc/passwd"),
            ("dotdot in blobs", "blobs/sha256/../../../x"), ("dot-slash dotdot", "./../x"),
            ("dot component", "blobs/./sha256/" + "0" * 64), ("double slash", "blobs//sha256/" + "0" * 64),
            ("backslash", "blobs\\sha256\\x")]
    for label, name in evil:  # (a safe-looking unknown name is refused later: members family)
        for at_label, at in (("first", 0), ("last", t.end)):
            yield Mutant("tar-unsafe", f"{label} name {at_label}", t.insert(at, member_bytes(name, outside)),
                         re.escape(f"tar member {name!r} has an unsafe or unknown name"))
    yield Mutant("tar-unsafe", "prefix field climbs out",
                 t.insert(0, member_bytes("passwd", outside, prefix=b"../../etc")),
                 re.escape("tar member '../../etc/passwd' has an unsafe or unknown name"))
    yield Mutant("tar-unsafe", "undecodable name", t.insert(0, member_bytes(b"\xff\xfe/x", outside)),
                 r"tar member at byte 0 has an undecodable name")
    kinds = [(b"1", "a hard link"), (b"2", "a symbolic link"), (b"3", "a character device"),
             (b"4", "a block device"), (b"6", "a FIFO"), (b"7", "of type b'7'"), (b"x", "a pax header"),
             (b"g", "a pax global header"), (b"L", "a GNU long name"), (b"K", "a GNU long link")]
    targets = [("outside", b"/etc/shadow"), ("climbing", b"../../../../etc/shadow")]
    for flag, kind in kinds:
        for label, link in targets if flag in (b"1", b"2") else [("", b"")]:
            for name in (blob.name, "edgebundle/trust.pub"):
                yield Mutant("tar-unsafe", f"{kind} {label} as {name}".replace("  ", " "),
                             t.insert(t.by_name[layout.INDEX].end, raw_header(name, 0, typeflag=flag, linkname=link)),
                             re.escape(f"tar member {name!r} is {kind}; a bundle holds regular files only"))
    sizes = [("octal max", 8**11 - 1, None), ("base-256 2^40", 2**40, bytes([0x80]) + (2**40).to_bytes(11, "big")),
             ("base-256 2^63", 2**63, bytes([0x80]) + (2**63).to_bytes(11, "big")),
             ("base-256 2^87", 2**87, bytes([0x80]) + (2**87).to_bytes(11, "big"))]
    for m in (t.by_name[layout.ROOT], t.by_name[layout.INDEX], blob, t.members[-1]):
        hdr = read_range(t.path, m.header, tarfmt.BLOCK)
        for label, size, fieldbytes in sizes:
            new = bytearray(hdr)
            new[124:136] = fieldbytes if fieldbytes is not None else b"%011o\0" % size
            yield Mutant("tar-unsafe", f"giant size {label} on {m.name}",
                         t.splice(m.header, m.header + tarfmt.BLOCK, reseal(bytes(new))),
                         re.escape(f"tar member {m.name!r} declares {size} bytes but the file ends"))
        for label, fieldbytes, why in (("negative base-256", b"\xff" * 12, "negative or oversized size"),
                                       ("non-octal", b"99999999999\0", "size is not a number")):
            new = bytearray(hdr)
            new[124:136] = fieldbytes
            yield Mutant("tar-unsafe", f"{label} size on {m.name}",
                         t.splice(m.header, m.header + tarfmt.BLOCK, reseal(bytes(new))),
                         rf"tar header at byte {m.header}: {why}")
    yield from _unsafe_directory(good_dir)


def _copy_dir(good_dir: Path, edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        out = d / good_dir.name
        shutil.copytree(good_dir, out)
        edit(out)
        return out
    return build


def _unsafe_directory(good_dir: Path) -> Iterator[Mutant]:
    """The same attacks on a directory bundle: links pointing outside, FIFOs, stray directories."""
    blob = min((good_dir / layout.BLOBS_DIR).iterdir())
    rel = blob.relative_to(good_dir).as_posix()

    def symlink_blob(out: Path) -> None:
        (out / rel).unlink()
        (out / rel).symlink_to("/etc/passwd")

    def symlink_climb(out: Path) -> None:
        (out / rel).unlink()
        (out / rel).symlink_to("../../../../../../etc/hostname")

    def hardlink_blob(out: Path) -> None:
        outside = out.parent / "outside-target"
        outside.write_bytes(b"outside\n")
        (out / rel).unlink()
        os.link(outside, out / rel)

    def symlink_dir(out: Path) -> None:
        shutil.rmtree(out / "edgebundle")
        (out / "edgebundle").symlink_to(out.parent)

    def fifo(out: Path) -> None:
        os.mkfifo(out / layout.BLOBS_DIR / ("f" * 64))

    def stray_dir(out: Path) -> None:
        (out / "blobs" / "sha256" / "nested").mkdir()

    cases = [("symlink blob to /etc/passwd", symlink_blob, rf"{re.escape(rel)} is not a regular file; refused"),
             ("symlink blob climbing out", symlink_climb, rf"{re.escape(rel)} is not a regular file; refused"),
             ("hard-linked blob", hardlink_blob, re.escape(rel) + ": " + DIGEST),
             ("symlinked edgebundle dir", symlink_dir, r"edgebundle is a symbolic link; refused"),
             ("fifo in blobs", fifo, r"is not a regular file; refused"),
             ("stray directory", stray_dir, r"unexpected directory blobs/sha256/nested")]
    for label, edit, expect in cases:
        yield Mutant("tar-unsafe", f"directory bundle: {label}", _copy_dir(good_dir, edit), expect)


# --- hostile content under a trusted signature --------------------------------------------------

def endless_zstd(tar_header: bytes, content_size: int | None, blocks: int) -> bytes:
    """A zstd frame: the tar header as a raw block, then ``blocks`` RLE blocks of 128 KiB each.

    Each RLE block costs 4 bytes and decodes to 128 KiB, so 40 KB of frame would decode to 1.3 GB;
    with no last block the stream simply never ends. ``content_size`` (when given) is declared in
    the frame header and is a lie.
    """
    if content_size is None:
        out = struct.pack("<IBB", 0xFD2FB528, 0x00, 0x38)  # no content size; 128 KiB window
    else:
        out = struct.pack("<IBB", 0xFD2FB528, 0x80, 0x38) + struct.pack("<I", content_size)
    out += (len(tar_header) << 3 | 0 << 1 | 0).to_bytes(3, "little") + tar_header
    rle = ((128 * 1024) << 3 | 1 << 1 | 0).to_bytes(3, "little") + b"A"
    return out + rle * blocks


class Resigner:
    """Writes a bundle whose root was changed and re-signed by a trusted key (a rogue build host)."""

    def __init__(self, t: Tar, root: Root, key: Path) -> None:
        self.t, self.root, self.key = t, root, load_private_key(key)

    def with_root_bytes(self, root_bytes: bytes, changes: Mapping[str, bytes | None] | None = None,
                        add: Sequence[tuple[str, bytes]] = ()) -> Callable[[Path], Path]:
        return self.t.replace({layout.ROOT: sign(root_bytes, PAYLOAD_ROOT, [self.key]), **(changes or {})}, add)

    def swap_file_blob(self, f: ModelFile, blob: bytes) -> Callable[[Path], Path]:
        """The model file ``f`` carried by ``blob`` instead (root pins updated and re-signed)."""
        digest = sha256_bytes(blob)
        old = self.root.blobs[f.blob]
        blobs = {d: p for d, p in self.root.blobs.items() if d != f.blob}
        blobs[digest] = BlobPin(digest, len(blob), old.mediaType)
        models = [dataclasses.replace(m, files=[dataclasses.replace(x, blob=digest) if x == f else x
                                                for x in m.files]) for m in self.root.models]
        new_root = dataclasses.replace(self.root, blobs=blobs, models=models)
        return self.with_root_bytes(new_root.to_bytes(), {layout.blob_path(f.blob): None},
                                    [(layout.blob_path(digest), blob)])


def bombs(t: Tar, root: Root, release_key: Path) -> Iterator[Mutant]:
    """Decompression and JSON bombs, both unsigned and under the trusted signature."""
    zfile, zmodel = next((f, m) for m in root.models for f in m.files if f.encoding == "tar+zstd")
    what = re.escape(f"model {zmodel.name} {zmodel.version}, file {zfile.path}")
    inner_ok = raw_header(zfile.path, zfile.size)
    variants = [("no content size, honest tar header", inner_ok, None, 10_000, DIGEST),
                ("declares 1 KiB, decodes endlessly", inner_ok, 1024, 10_000, DIGEST + "|corrupt zstd|not a valid zstd"),
                ("declares its signed size, decodes endlessly", inner_ok, zfile.size, 10_000,
                 DIGEST + "|corrupt zstd|not a valid zstd"),
                ("tar header declares 2^40", raw_header(zfile.path, 2**40), None, 10_000,
                 rf"holds '{re.escape(zfile.path)}' of {2**40} bytes, the signed root says {zfile.size}"),
                ("frame ends inside the tar header", b"", None, 0, "ends inside its tar header|not a valid zstd"),
                ("tar header is a symlink", raw_header(zfile.path, 0, typeflag=b"2", linkname=b"/etc/passwd"),
                 None, 100, "is a symbolic link; a bundle holds regular files only")]
    rs = Resigner(t, root, release_key)
    blob_name = layout.blob_path(zfile.blob)
    for label, inner, declared, blocks, expect in variants:
        frame = endless_zstd(inner, declared, blocks)
        yield Mutant("bombs", f"zstd {label}, unsigned", t.replace({blob_name: frame}),
                     re.escape(blob_name) + ": " + DIGEST)
        yield Mutant("bombs", f"zstd {label}, re-signed", rs.swap_file_blob(zfile, frame),
                     f"{what} .*({expect})")
    size = t.by_name[layout.ROOT].size
    big_env = t.read(layout.ROOT)[:-1] + b" " * (layout.MAX_ROOT_ENVELOPE_BYTES + 1 - size) + b"}"
    yield Mutant("bombs", "root envelope over its bound", t.replace({layout.ROOT: big_env}),
                 rf"edgebundle/root.dsse.json in .* is {layout.MAX_ROOT_ENVELOPE_BYTES + 1} bytes, over the")
    big_root = t.root_bytes()[:-1] + b" " * (layout.MAX_JSON_BYTES + 1 - len(t.root_bytes())) + b"}"
    yield Mutant("bombs", "root payload over 16 MiB, re-signed", rs.with_root_bytes(big_root),
                 rf"root.json is {layout.MAX_JSON_BYTES + 1} bytes, over the")
    for depth in (65, 1000, 100_000):
        yield Mutant("bombs", f"root envelope nested {depth} deep",
                     t.replace({layout.ROOT: b"[" * depth + b"]" * depth}), r"root.dsse.json nests deeper")
        nested = b'{"a":' * depth + b"1" + b"}" * depth
        yield Mutant("bombs", f"root.json nested {depth} deep, re-signed", rs.with_root_bytes(nested),
                     r"root\.json nests deeper than 64 levels")
    many = envelope(t.root_bytes(), [("x", b"")] * 10_000)
    yield Mutant("bombs", "10000 empty signatures", t.replace({layout.ROOT: many}),
                 r"0 valid signature\(s\) by trusted keys, 1 required")
    huge_int = root.to_bytes().replace(b'"specVersion":1', b'"specVersion":1' + b"0" * 100_000)
    yield Mutant("bombs", "root.json with a 100000-digit number, re-signed", rs.with_root_bytes(huge_int),
                 r"root\.json (is not valid JSON|.*specVersion)")
    wide = root.to_bytes()[:-1] + b',"x":[' + b",".join([b"[]"] * 1_000_000) + b"]}"
    yield Mutant("bombs", "root.json with a million extra entries, re-signed", rs.with_root_bytes(wide),
                 r"root\.json.*\bx\b")


# --- trust and policy ---------------------------------------------------------------------------

def trust(t: Tar, root: Root, g: Genuine, other: Tar) -> Iterator[Mutant]:
    """Who signed it, over what, and whether this site may install it."""
    root_bytes = t.root_bytes()
    key = {name: load_private_key(k) for name, (k, _) in g.keys.items()}
    ours = signatures_of(t.read(layout.ROOT))
    for label, doc, expect in (("no signatures", envelope(root_bytes, []), r"root\.dsse\.json is not signed"),
                               ("empty object", b"{}", r"is not a DSSE envelope"),
                               ("empty file", b"", r"root\.dsse\.json is not valid JSON"),
                               ("null", b"null", r"is not a DSSE envelope"),
                               ("signature without keyid", canonical_json({**json.loads(t.read(layout.ROOT)),
                                "signatures": [{"sig": base64.b64encode(ours[0][1]).decode()}]}),
                                r"signature 0 is not \{keyid, sig\}"),
                               ("a part index's payloadType", envelope(root_bytes, ours, PAYLOAD_PARTS),
                                r"carries payloadType 'application/vnd\.edgebundle\.parts\.v1\+json'")):
        yield Mutant("trust", f"root envelope: {label}", t.replace({layout.ROOT: doc}), expect)
    untrusted = r"0 valid signature\(s\) by trusted keys, 1 required \(signed by: [0-9a-f]{16}"
    yield Mutant("trust", "signed by an untrusted key",
                 t.replace({layout.ROOT: sign(root_bytes, PAYLOAD_ROOT, [key["intruder"]])}), untrusted)
    yield Mutant("trust", "signed by two untrusted keys",
                 t.replace({layout.ROOT: sign(root_bytes, PAYLOAD_ROOT, [key["intruder"], key["third"]])}), untrusted)
    spoofed = envelope(root_bytes, [(g.pub("release"), key["intruder"].sign(pae(PAYLOAD_ROOT, root_bytes)))])
    yield Mutant("trust", "untrusted signature under the trusted keyid", t.replace({layout.ROOT: spoofed}), ROOT_SIG)
    as_approval = envelope(root_bytes, [(g.pub("release"), key["release"].sign(pae(PAYLOAD_APPROVAL, root_bytes)))])
    yield Mutant("trust", "trusted key's signature of these bytes as another document type",
                 t.replace({layout.ROOT: as_approval}), ROOT_SIG)
    yield Mutant("trust", "trusted key, the signature of the other release",
                 t.replace({layout.ROOT: envelope(root_bytes, signatures_of(other.read(layout.ROOT)))}), ROOT_SIG)
    yield Mutant("trust", "root envelope of the other release",
                 t.replace({layout.ROOT: other.read(layout.ROOT)}),
                 r"lacks \d+ member\(s\) the signed root lists")
    yield Mutant("trust", "trusted key signing an edited root (version bumped)",
                 t.replace({layout.ROOT: envelope(root_bytes.replace(b'"version":"1.0.0"', b'"version":"9.0.0"'),
                                                  ours)}), ROOT_SIG)
    stale = root_bytes.replace(f'"created":"{root.created}"'.encode(), b'"created":"2020-01-01T00:00:00Z"')
    stale = stale.replace(f'"expires":"{root.expires}"'.encode(), b'"expires":"2020-06-29T00:00:00Z"')
    yield Mutant("trust", "expired (re-signed by the trusted key)", Resigner(t, root, g.keys["release"][0])
                 .with_root_bytes(stale), r"bundle rag-edge 1\.0\.0 expired at 2020-06-29T00:00:00Z")
    extra = _other_blob(t, other)
    theirs = read_range(other.path, extra.header, extra.end - extra.header)
    yield Mutant("trust", "blob of the other release added", t.insert(t.end, theirs),
                 r"does not list: " + re.escape(extra.name))
    yield Mutant("trust", "index.json of the other release",
                 t.replace({layout.INDEX: other.read(layout.INDEX)}), re.escape(layout.INDEX) + ": " + DIGEST)
    for kind, digest in sorted(_blob_kinds(root).items())[:6]:
        name = layout.blob_path(digest)
        swap = next((m for m in other.members if m.name != name and m.name not in t.by_name
                     and layout.digest_of_blob_path(m.name)), extra)
        yield Mutant("trust", f"{kind} blob swapped for one of the other release",
                     t.replace({name: read_range(other.path, swap.data, swap.size)}),
                     re.escape(name) + ": " + DIGEST)
    for version in ("1.0.1", "1.10.0", "2.0.0"):
        yield Mutant("trust", f"rollback below installed {version}", t.unchanged(),
                     rf"rag-edge 1.0.0 is older than the installed {re.escape(version)}",
                     installed={"name": "rag-edge", "version": version, "root": sha256_bytes(version.encode())})
    for compatible in ("rag-edge/arm64", "other-stack/x86_64", "rag-edge/x86_64-gpu"):
        yield Mutant("trust", f"site is {compatible}", t.unchanged(),
                     rf"is for 'rag-edge/x86_64', this site is '{re.escape(compatible)}'", compatible=compatible)
    yield Mutant("trust", "delta for another base", copy_of(g.delta),
                 r"applies to base rag-edge 1.0.0 \(root sha256:[0-9a-f]{64}\), but this site has root",
                 installed={"name": "rag-edge", "version": "1.0.0", "root": sha256_bytes(b"another 1.0.0 build")})
    yield Mutant("trust", "delta at a site without its base",
                 copy_of(g.delta), r"applies to base rag-edge 1.0.0 .*which this site has not installed")


def thresholds(t: Tar, g: Genuine) -> Iterator[Mutant]:
    """A k-of-n trust store: fewer distinct valid trusted signatures than k is refused."""
    root_bytes = t.root_bytes()
    key = {name: load_private_key(k) for name, (k, _) in g.keys.items()}
    keep = t.unchanged()
    yield Mutant("threshold", "2-of-2, signed by one", keep, r"1 valid signature\(s\) by trusted keys, 2 required",
                 trust=("release", "second"), threshold=2)
    yield Mutant("threshold", "3-of-3, signed by one", keep, r"1 valid signature\(s\) by trusted keys, 3 required",
                 trust=("release", "second", "third"), threshold=3)
    both = sign(root_bytes, PAYLOAD_ROOT, [key["release"], key["second"]])
    yield Mutant("threshold", "3-of-3, signed by two", t.replace({layout.ROOT: both}),
                 r"2 valid signature\(s\) by trusted keys, 3 required", trust=("release", "second", "third"),
                 threshold=3)
    ours = signatures_of(t.read(layout.ROOT))
    yield Mutant("threshold", "2-of-2, the same signature twice", t.replace({layout.ROOT: envelope(root_bytes, ours * 2)}),
                 r"1 valid signature\(s\) by trusted keys, 2 required", trust=("release", "second"), threshold=2)
    plus_intruder = sign(root_bytes, PAYLOAD_ROOT, [key["release"], key["intruder"]])
    yield Mutant("threshold", "2-of-2, second signature by an untrusted key",
                 t.replace({layout.ROOT: plus_intruder}), r"1 valid signature\(s\) by trusted keys, 2 required",
                 trust=("release", "second"), threshold=2)
    mixed = envelope(root_bytes, [*ours, (g.pub("second"), key["second"].sign(
        pae(PAYLOAD_ROOT, root_bytes.replace(b"1.0.0", b"1.0.9"))))])
    yield Mutant("threshold", "2-of-2, second key signed another root", t.replace({layout.ROOT: mixed}),
                 ROOT_SIG, trust=("release", "second"), threshold=2)


def build_corpus(g: Genuine) -> list[Mutant]:
    """Every mutant, in family order."""
    t, other = Tar(g.good), Tar(g.other)
    root = parse_root(t.root_bytes())
    junk = b"added after signing\n"
    corpus = [*flips(t, root), *truncations(t), *members(t, root, junk),
              *unsafe_tar(t, g.good_dir, b"root::0:0:owned:/root:/bin/sh\n"),
              *bombs(t, root, g.keys["release"][0]), *trust(t, root, g, other), *thresholds(t, g)]
    from tests.hostile.signed import build_signed_corpus  # it builds on this module

    corpus += build_signed_corpus(g)
    ids = [m.id for m in corpus]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    return corpus


__all__ = ["FAMILIES", "Genuine", "Member", "Mutant", "Resigner", "Tar", "assemble", "build_corpus", "endless_zstd",
           "member_bytes", "raw_header", "reseal", "tar_members"]
