"""Shared fixtures: each lives in tests/fixtures/<concept>.py and is re-exported here."""
