"""The registry client against a hostile registry (tests/hostile/registry.py): bounded time, clear errors.

Every case asserts the refusal (a RegistryError or VerificationError, never a requests or
urllib3 exception), its message (naming the host at fault), and a bound on the time it took.
The client reads into memory here, so nothing can be written anywhere.
"""

from __future__ import annotations

import hashlib
import io
import re
import time

import pytest

from edgebundle.errors import EdgebundleError
from edgebundle.registry import Registry
from tests.hostile.registry import DRIP_INTERVAL, SLOW_READ, hostile_registry

pytestmark = pytest.mark.timeout(60)
DIGEST = "sha256:" + "0" * 64
#: Client settings: a 2 s read timeout (4x the drip interval) and a 200 B/s minimum rate.
CLIENT = {"timeout": 2.0, "retries": 1, "backoff": 0.1, "max_backoff": 0.2, "retry_budget": 2.0, "min_rate": 200.0}


def _blob(reg: Registry) -> None:
    reg.download_blob("rag/llm", DIGEST, io.BytesIO(), 1000)


def _manifest(reg: Registry) -> None:
    reg.get_manifest("rag/llm", "1.0")


CASES = [
    # (mode, operation, message regex, seconds it may take at most)
    ("drip", _blob, r"registry 127\.0\.0\.1:\d+ is too slow: blob rag/llm@sha256:0+ took more than 7 s", 15),
    ("drip", _manifest, r"registry 127\.0\.0\.1:\d+ is too slow: manifest rag/llm:1\.0 took more than 7 s", 15),
    ("drip-chunked", _blob, r"is too slow: blob rag/llm@sha256:0+ took more than 7 s", 15),
    # No Content-Length: a small document's deadline is its size limit (4 MiB) at the minimum rate.
    ("drip-chunked", _manifest, r"is too slow: manifest rag/llm:1\.0 took more than 6 s", 15),
    ("redirect-elsewhere", _blob, r"cannot reach connection refused at 127\.0\.0\.1:(?P<port>\d+) \(where registry "
                                  r"127\.0\.0\.1:\d+ sent us", 10),
    ("redirect-elsewhere", _manifest, r"connection refused at 127\.0\.0\.1:\d+ \(where registry", 10),
    ("realm-elsewhere", _blob, r"connection refused at 127\.0\.0\.1:\d+ \(where registry .* a redirect or a token realm",
     10),
    ("realm-elsewhere", _manifest, r"connection refused at 127\.0\.0\.1:\d+ \(where registry", 10),
    ("conflicting-length", _blob, r"registry 127\.0\.0\.1:\d+ sent conflicting Content-Length headers for blob", 10),
    ("conflicting-length", _manifest, r"sent conflicting Content-Length headers for manifest rag/llm:1\.0", 10),
    ("not-http", _blob, r"registry 127\.0\.0\.1:\d+: it does not answer in HTTP", 10),
    ("not-http", _manifest, r"registry 127\.0\.0\.1:\d+: it does not answer in HTTP", 10),
    ("short-body", _blob, r"127\.0\.0\.1:\d+", 10),
    ("short-body", _manifest, r"127\.0\.0\.1:\d+", 10),
    ("huge-manifest", _manifest, r"manifest rag/llm:1\.0 is 67108864 bytes, more than the 4194304-byte limit", 10),
    ("endless-blob", _blob, r"sent more than the expected 1000 bytes", 10),
    ("huge-header", _blob, r"registry 127\.0\.0\.1:\d+: it sent a header line longer than HTTP clients accept", 10),
    ("huge-header", _manifest, r"registry 127\.0\.0\.1:\d+: it sent a header line longer", 10),
]


def _upload_one_put(reg: Registry) -> None:
    """16 MiB in one PUT (more than loopback socket buffers hold, so the send blocks on the reader)."""
    reg.chunk_size = 32 * 1024 * 1024
    data = bytes(16 * 1024 * 1024)
    reg.push_blob("rag/llm", "sha256:" + hashlib.sha256(data).hexdigest(), len(data), io.BytesIO(data))


def _upload_chunked(reg: Registry) -> None:
    reg.chunk_size = 8 * 1024 * 1024
    data = bytes(16 * 1024 * 1024)
    reg.push_blob("rag/llm", "sha256:" + hashlib.sha256(data).hexdigest(), len(data), io.BytesIO(data))


#: Request deadlines: headers dripped (status line or a header, one byte per 0.5 s: one read
#: timeout, 2 s, for the whole head) and an upload read at 512 KiB/s (one read timeout plus its size
#: at the minimum rate: 4 MiB/s here, so 2 + 4 s for 16 MiB, 2 + 2 s per 8 MiB chunk).
REQUEST_CASES = [
    ("drip-status", _blob, r"registry 127\.0\.0\.1:\d+ is too slow: blob rag/llm@sha256:0+: sending the request and "
                           r"receiving the answer's headers took more than 2 s", 8),
    ("drip-status", _manifest, r"is too slow: manifest rag/llm:1\.0: sending the request and receiving", 8),
    ("drip-headers", _blob, r"is too slow: blob rag/llm@sha256:0+: sending the request and receiving the answer's "
                            r"headers took more than 2 s", 8),
    ("drip-headers", _manifest, r"is too slow: manifest rag/llm:1\.0: sending the request and receiving", 8),
    ("drip-token", _manifest, r"registry 127\.0\.0\.1:\d+ is too slow: the token request for rag/llm: sending the "
                              r"request and receiving the answer's headers took more than \d+ s", 8),
    ("slow-upload", _upload_one_put, r"registry 127\.0\.0\.1:\d+ is too slow: upload of sha256:[0-9a-f]+ to rag/llm: "
                                     r"sending the request \(16,777,216 bytes\) and receiving the answer's headers "
                                     r"took more than 6 s", 14),
    ("slow-upload", _upload_chunked, r"is too slow: upload of sha256:[0-9a-f]+ to rag/llm: sending the request "
                                     r"\(8,388,608 bytes\) .* took more than 4 s", 12),
]


@pytest.mark.parametrize(("mode", "op", "expect", "bound"), REQUEST_CASES,
                         ids=[f"{c[0]}-{c[1].__name__.strip('_')}" for c in REQUEST_CASES])
def test_request_deadline_stops_a_peer_that_drips_headers_or_reads_slowly(mode: str, op: object, expect: str,
                                                                          bound: float) -> None:
    with hostile_registry(mode) as server:
        reg = Registry(f"127.0.0.1:{server.server_address[1]}", **{**CLIENT, "min_rate": 4 * 1024 * 1024.0})
        started = time.monotonic()
        with pytest.raises(EdgebundleError) as info:
            op(reg)  # type: ignore[operator]
        took = time.monotonic() - started
    assert re.search(expect, info.value.message), info.value.message
    assert "safe to run again" in (info.value.hint or "")
    assert took < bound, f"took {took:.1f} s"


def test_a_slow_upload_reader_is_below_the_read_timeout() -> None:
    """The premise of the upload cases: the reader frees a loopback TCP window (64 KiB) well within
    the read timeout, so each blocked send resumes in time; and it reads below the minimum rate."""
    rate = SLOW_READ / DRIP_INTERVAL
    assert 64 * 1024 / rate < CLIENT["timeout"] / 2 and rate < 4 * 1024 * 1024


@pytest.mark.parametrize(("mode", "op", "expect", "bound"), CASES,
                         ids=[f"{c[0]}-{c[1].__name__.strip('_')}" for c in CASES])
def test_hostile_registry_fails_clearly_in_bounded_time(mode: str, op: object, expect: str, bound: float) -> None:
    with hostile_registry(mode) as server:
        host = f"127.0.0.1:{server.server_address[1]}"
        fast = mode == "drip-chunked" and op is _manifest  # (see its case)
        reg = Registry(host, **{**CLIENT, "min_rate": 1024 * 1024.0} if fast else CLIENT)  # type: ignore[arg-type]
        started = time.monotonic()
        with pytest.raises(EdgebundleError) as info:
            op(reg)  # type: ignore[operator]
        took = time.monotonic() - started
    message = info.value.message
    assert re.search(expect, message), message
    assert took < bound, f"took {took:.1f} s"
    if mode in ("redirect-elsewhere", "realm-elsewhere"):
        assert f":{server.elsewhere}" in message, "the message must name the host we were sent to"


def test_a_drip_is_below_the_read_timeout_so_only_the_deadline_stops_it() -> None:
    """The premise of the drip cases: bytes arrive more often than the read timeout allows for."""
    assert DRIP_INTERVAL * 2 < CLIENT["timeout"]
    reg = Registry("127.0.0.1:9", **CLIENT)  # type: ignore[arg-type]
    assert reg.deadline_for(1000) == pytest.approx(2.0 + 1000 / 200.0)
