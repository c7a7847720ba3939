"""The registry client against a hostile registry (tests/hostile/registry.py): bounded time, clear errors.

Every case asserts the refusal (a RegistryError or VerificationError, never a requests or
urllib3 exception), its message (naming the host at fault), and a bound on the time it took.
The client reads into memory here, so nothing can be written anywhere.
"""

from __future__ import annotations

import io
import re
import time

import pytest

from edgebundle.errors import EdgebundleError
from edgebundle.registry import Registry
from tests.hostile.registry import DRIP_INTERVAL, hostile_registry

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
