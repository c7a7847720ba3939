"""Hashing on every core: the read-ahead hasher and the verifier's parallel content step.

Expected digests come from ``hashlib`` over bytes held by the test, never from the product.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from edgebundle import layout
from edgebundle.digest import AHEAD, CHUNK, Cancelled, hash_stream_ahead
from edgebundle.errors import VerificationError
from edgebundle.signing import TrustStore, load_private_key
from edgebundle.parts import open_source
from edgebundle.verify import Verifier
from tests.fixtures.bundles import flip_byte

pytestmark = pytest.mark.timeout(120)


class CountingReader(io.RawIOBase):
    """A stream of ``data`` that records how far ahead of the hasher it has been read."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        return self._f.read(n)


def test_read_ahead_hash_matches_hashlib_and_counts_every_byte() -> None:
    data = os.urandom(5 * CHUNK + 12345)
    fed: list[int] = []
    got = hash_stream_ahead(CountingReader(data), fed.append)  # type: ignore[arg-type]
    assert got == ("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    assert sum(fed) == len(data)
    assert hash_stream_ahead(io.BytesIO(b"")) == ("sha256:" + hashlib.sha256(b"").hexdigest(), 0)


def test_read_ahead_stays_bounded_and_stops_when_told() -> None:
    data = os.urandom((AHEAD + 20) * CHUNK)
    reader = CountingReader(data)
    stop = threading.Event()
    seen = []

    def progress(n: int) -> None:
        seen.append(n)
        if len(seen) == 2:
            stop.set()

    with pytest.raises(Cancelled):
        hash_stream_ahead(reader, progress, stop)  # type: ignore[arg-type]
    # the reader ran at most the queue's depth (+ the chunk in hand) ahead of what was hashed
    assert reader.reads <= len(seen) + AHEAD + 2


def test_a_read_error_reaches_the_caller() -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        hash_stream_ahead(Broken())  # type: ignore[arg-type]


def test_of_two_bad_blobs_the_first_in_tar_order_is_named(bundle_factory: Any, bundle_world: Any,
                                                         tmp_path: Path) -> None:
    """Blobs are hashed in parallel, largest first; the error still names a fixed culprit."""
    b = bundle_factory().copy(tmp_path / "b")
    order = [n for n in open_source(b.path).tar_order() if layout.digest_of_blob_path(n)]  # type: ignore[attr-defined]
    sizes = {layout.blob_path(d): p.size for d, p in b.root.blobs.items()}
    big = [n for n in order if sizes[n] > 4096]
    first, last = big[0], big[-1]
    flip_byte(b.path, last)
    flip_byte(b.path, first)
    key, _ = bundle_world.key("release")
    trust = TrustStore([load_private_key(Path(key)).public_key()])
    for _ in range(3):
        with pytest.raises(VerificationError, match="^" + first + ": content digest"):
            Verifier(trust).verify(open_source(b.path))
