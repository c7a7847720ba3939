"""The tar dialect of a bundle file: plain ustar, regular files only, written and read here.

We write and accept a deliberately small subset of tar so a reader needs no trust in a general
tar library: 512-byte ustar headers, regular files (and, on reading, directory entries of the
bundle's own directories), sizes in octal or GNU base-256 for members of 8 GiB and more, two zero
blocks at the end, optional zero padding after them. Anything else (symlinks, hard links, devices,
pax or GNU long-name headers, bad checksums, non-zero padding, data after the end) is refused by
:func:`read_index`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from edgebundle.errors import VerificationError

BLOCK = 512
_OCTAL_MAX = 8**11 - 1  # what fits in the 12-byte octal size field
#: Directory entries a reader tolerates (some tar tools add them); nothing is created from them.
ALLOWED_DIRS = ("blobs", "blobs/sha256", "edgebundle")


class TarFormatError(VerificationError):
    """The tar stream is not of the bundle dialect, or is damaged."""


@dataclass(frozen=True)
class TarEntry:
    name: str
    offset: int  # of the member's data from the start of the tar
    size: int


#: Magic and version of a POSIX ustar header, and of a GNU tar header (docs/FORMAT.md, 1.1).
USTAR_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"


def _octal(value: int, width: int) -> bytes:
    return (b"%0*o" % (width - 1, value)) + b"\0"


def encode_header(name: str, size: int, mtime: int) -> bytes:
    """A ustar header for a regular file with fixed owner and mode (reproducible output)."""
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise ValueError(f"member name too long for ustar: {name}")
    if size <= _OCTAL_MAX:
        size_field = _octal(size, 12)
    else:  # GNU base-256: first byte 0x80, big-endian value in the rest
        size_field = bytes([0x80]) + size.to_bytes(11, "big")
    hdr = bytearray(BLOCK)
    hdr[0:len(raw)] = raw
    hdr[100:108] = _octal(0o644, 8)
    hdr[108:116] = _octal(0, 8)
    hdr[116:124] = _octal(0, 8)
    hdr[124:136] = size_field
    hdr[136:148] = _octal(mtime, 12)
    hdr[148:156] = b" " * 8
    hdr[156:157] = b"0"
    hdr[257:263] = b"ustar\0"
    hdr[263:265] = b"00"
    chk = sum(hdr)
    hdr[148:156] = b"%06o\0 " % chk
    return bytes(hdr)


def padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


END = b"\0" * (2 * BLOCK)


def _num(field: bytes, what: str, at: int) -> int:
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise TarFormatError(f"tar header at byte {at}: negative or oversized {what}")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"tar header at byte {at}: {what} is not a number") from None


def read_index(read_at: Callable[[int, int], bytes], total: int,
               check_name: Callable[[str], str | None]) -> list[TarEntry]:
    """Walk the headers of a tar of ``total`` bytes and return its regular members.

    ``read_at(offset, n)`` reads header blocks; member data is never read here.
    ``check_name`` returns the canonical member name or None for an unsafe one.
    Raises :class:`TarFormatError` naming the offending member and byte offset.
    """
    entries: list[TarEntry] = []
    seen: set[str] = set()
    pos = 0
    while True:
        if pos + BLOCK > total:
            raise TarFormatError(f"tar ends at byte {total} in the middle of a header (truncated)",
                                 hint="the bundle file is truncated; copy it again")
        hdr = read_at(pos, BLOCK)
        if len(hdr) < BLOCK:
            raise TarFormatError(f"tar truncated at byte {pos + len(hdr)}")
        if pos == 0:
            _refuse_compressed(hdr)
        if hdr == b"\0" * BLOCK:
            rest = pos + BLOCK
            if rest + BLOCK > total or read_at(rest, BLOCK) != b"\0" * BLOCK:
                raise TarFormatError(f"tar end marker at byte {pos} is incomplete (truncated)")
            _check_trailer(read_at, rest + BLOCK, total)
            return entries
        raw, typeflag, size = _parse_header(hdr, pos)
        data_at = pos + BLOCK
        if typeflag == b"5":
            if raw.rstrip("/") not in ALLOWED_DIRS:
                raise TarFormatError(f"tar member {raw!r} is a directory the bundle does not have")
            pos = data_at
            continue
        _require_regular(raw, typeflag)
        name = check_name(raw)
        if name is None:
            raise TarFormatError(f"tar member {raw!r} has an unsafe or unknown name")
        if name in seen:
            raise TarFormatError(f"tar member {name!r} appears twice")
        if data_at + size > total:
            raise TarFormatError(
                f"tar member {name!r} declares {size} bytes but the file ends {total - data_at} "
                "bytes after its header (truncated or forged size)",
                hint="the bundle file is truncated or damaged; copy it again")
        pad = -size % BLOCK
        if pad and read_at(data_at + size, pad).strip(b"\0"):
            raise TarFormatError(f"tar member {name!r}: non-zero padding after its data at byte "
                                 f"{data_at + size} (corrupt)",
                                 hint="the bundle file is damaged; copy it again from the source")
        seen.add(name)
        entries.append(TarEntry(name, data_at, size))
        pos = data_at + size + pad


#: Leading bytes of compressed files someone may hand us instead of the tar.
_COMPRESSED = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2"}


def _refuse_compressed(first: bytes) -> None:
    for magic, kind in _COMPRESSED.items():
        if first.startswith(magic):
            raise TarFormatError(f"the bundle file is not a tar: it is {kind}-compressed data",
                                 hint="decompress it first (a bundle is an uncompressed tar), "
                                      "or pass the bundle directory")


def _parse_header(hdr: bytes, pos: int) -> tuple[str, bytes, int]:
    """(name, typeflag, size) of a checksummed ustar header block."""
    stored = _num(hdr[148:156], "checksum", pos)
    computed = sum(hdr[:148]) + 8 * 32 + sum(hdr[156:])
    if stored != computed:
        raise TarFormatError(f"tar header at byte {pos} has a bad checksum (corrupt)",
                             hint="the bundle file is damaged; copy it again from the source")
    magic = hdr[257:265]
    if magic == USTAR_MAGIC:
        prefix = hdr[345:500].split(b"\0", 1)[0]
    elif magic == GNU_MAGIC:
        prefix = b""  # GNU keeps access/change times there, not a name prefix (as GNU tar and Go read it)
    else:
        raise TarFormatError(f"tar header at byte {pos} is neither POSIX ustar nor GNU tar "
                             f"(magic {bytes(magic)!r})")
    raw_name = hdr[0:100].split(b"\0", 1)[0]
    try:
        raw = ((prefix + b"/" + raw_name) if prefix else raw_name).decode("utf-8")
    except UnicodeDecodeError:
        raise TarFormatError(f"tar member at byte {pos} has an undecodable name") from None
    return raw, hdr[156:157], _num(hdr[124:136], "size", pos)


def _require_regular(raw: str, typeflag: bytes) -> None:
    if typeflag not in (b"0", b"\0"):
        kinds = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device",
                 b"4": "a block device", b"6": "a FIFO", b"x": "a pax header",
                 b"g": "a pax global header", b"L": "a GNU long name", b"K": "a GNU long link"}
        kind = kinds.get(typeflag, f"of type {typeflag!r}")
        raise TarFormatError(f"tar member {raw!r} is {kind}; a bundle holds regular files only")


def parse_file_header(hdr: bytes, pos: int) -> tuple[str, int]:
    """(name, size) of a header that must describe a regular file."""
    raw, typeflag, size = _parse_header(hdr, pos)
    _require_regular(raw, typeflag)
    return raw, size


def _check_trailer(read_at: Callable[[int, int], bytes], pos: int, total: int) -> None:
    """Only zero padding may follow the end marker."""
    while pos < total:
        n = min(1 << 20, total - pos)
        if read_at(pos, n).strip(b"\0"):
            raise TarFormatError(f"data after the end of the tar at byte {pos}")
        pos += n


def write_member(out: BinaryIO, name: str, size: int, mtime: int, src: BinaryIO) -> None:
    """Append a member with ``size`` bytes copied from ``src`` in chunks."""
    out.write(encode_header(name, size, mtime))
    left = size
    while left:
        data = src.read(min(1 << 20, left))
        if not data:
            raise IOError(f"{name}: source ended {left} bytes early")
        out.write(data)
        left -= len(data)
    out.write(padding(size))
