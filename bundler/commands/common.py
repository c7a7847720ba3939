"""Options and helpers shared by several ``bundle`` verbs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgebundle.signing import TrustStore

plain_http_option = click.option(
    "--plain-http", multiple=True, metavar="HOST[:PORT]",
    help="Reach this registry over plain HTTP (127.0.0.1/localhost always are). Repeatable.")

pubkey_option = click.option(
    "--pubkey", "pubkeys", multiple=True, required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trusted public key (repeatable).")

lockfile_option = click.option(
    "--lockfile", type=click.Path(dir_okay=False, path_type=Path),
    help="The lock file to use (default: bundles.lock beside SPEC).")

threshold_option = click.option(
    "--threshold", default=1, show_default=True, help="How many trusted keys must have signed.")


def registry_factory(plain_http: tuple[str, ...]) -> Callable[[str], Any]:
    """One client per registry host, created on first use, sharing auth and connections."""
    from edgebundle.registry import Registry

    cache: dict[str, Any] = {}

    def get(host: str) -> Any:
        if host not in cache:
            cache[host] = Registry(host, insecure_hosts=plain_http)
        return cache[host]

    return get


def trust_store(pubkeys: tuple[Path, ...], threshold: int) -> TrustStore:
    return TrustStore.from_files(list(pubkeys), threshold)


def current_lock(spec: Any, lockfile: Path | None) -> dict[str, Any] | None:
    """The lock at ``lockfile`` (or beside the spec) when it is current for ``spec``, else None."""
    from bundler.lockfile import is_current, read_lock

    lock = read_lock(lockfile or spec.lock_path)
    return lock if lock is not None and is_current(lock, spec) else None
