"""The user's cache directory: what edgebundle keeps between runs and can always rebuild."""

from __future__ import annotations

import os


def user_cache(name: str) -> str:
    """``$XDG_CACHE_HOME/edgebundle/<name>`` (else ``~/.cache/...``): downloaded wheels, layer
    scans, a verb's cold-start list; one rule for every such cache. A string, not a ``Path``: the
    cold start reads it before anything else is imported. Raises ``RuntimeError`` when there is
    no home directory to find."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            raise RuntimeError("no home directory: set HOME or XDG_CACHE_HOME")
        base = os.path.join(home, ".cache")
    return os.path.join(base, "edgebundle", name)
