"""Shared fixtures: each lives in tests/fixtures/<concept>.py and is re-exported here."""

from tests.fixtures.models import make_gguf, minilm_dir, smollm2_gguf  # noqa: F401,E402
