"""The tar dialects the reader accepts (docs/FORMAT.md §1.1), compared with GNU tar itself.

A GNU header (magic ``ustar  \\0``) keeps access/change times where ustar keeps the name prefix;
joining it to the name, as a ustar reader would, reads a different name than GNU tar and Go do.
The expected names come from GNU tar (``tar -tf``, an independent reader), not from ours.
(Python's ``tarfile`` joins the prefix whatever the magic; we follow the format's own tool.)
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile

import pytest

from edgebundle import tarfmt
from tests.fixtures.machine import skip_unless_ci
from tests.hostile.corpus import reseal

NAME = "blobs/sha256/" + "ab" * 32


def one_member_tar(magic: bytes, prefix: bytes) -> bytes:
    hdr = bytearray(tarfmt.encode_header(NAME, 3, 0))
    hdr[257:265] = magic
    hdr[345:500] = prefix.ljust(155, b"\0")
    return reseal(bytes(hdr)) + b"abc" + tarfmt.padding(3) + b"\0" * 1024


def ours(data: bytes) -> list[str]:
    return [e.name for e in tarfmt.read_index(lambda off, n: data[off:off + n], len(data), lambda raw: raw)]


def pythons(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return t.getnames()


def gnu_tar(data: bytes) -> list[str]:
    out = subprocess.run(["tar", "-tf", "-"], input=data, capture_output=True, check=True)
    return out.stdout.decode().splitlines()


pytestmark = skip_unless_ci(shutil.which("tar") is not None, "needs GNU tar (Debian package tar)")


@pytest.mark.parametrize("prefix", [b"", b"evil", b"../../etc", b"\x01\x02\x03\x04atime-bytes"])
def test_gnu_headers_are_read_like_gnu_tar_reads_them(prefix: bytes) -> None:
    data = one_member_tar(tarfmt.GNU_MAGIC, prefix)
    assert gnu_tar(data) == [NAME]
    assert ours(data) == gnu_tar(data), "the GNU prefix area is not part of the name"


@pytest.mark.parametrize("prefix", [b"", b"dir"])
def test_ustar_headers_join_the_prefix_like_python(prefix: bytes) -> None:
    data = one_member_tar(b"ustar\x0000", prefix)
    expected = [f"{prefix.decode()}/{NAME}" if prefix else NAME]
    assert pythons(data) == gnu_tar(data) == expected
    assert ours(data) == expected


@pytest.mark.parametrize("magic", [b"\0" * 8, b"ustar\x00  ", b"ustar   ", b"paxtar00"])
def test_other_magic_is_refused_naming_it(magic: bytes) -> None:
    with pytest.raises(tarfmt.TarFormatError, match="neither POSIX ustar nor GNU tar"):
        ours(one_member_tar(magic, b""))
