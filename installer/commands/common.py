"""Options shared by installer verbs: the site file and its overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from installer.site import Site, load_site


def site_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--site`` plus flags that override single fields of it."""
    options = [
        click.option("--site", "site_path", required=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The site file (kind: Site); see docs/SITE.md."),
        click.option("--registry", "registry_override", metavar="HOST:PORT",
                     help="Override spec.registry.address."),
        click.option("--models-root", "models_root_override", type=click.Path(path_type=Path),
                     help="Override spec.models.root (the NAS mount)."),
        click.option("--state-dir", "state_dir_override", type=click.Path(path_type=Path),
                     help="Override spec.stateDir."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def resolve_site(site_path: Path, registry_override: str | None = None,
                 models_root_override: Path | None = None,
                 state_dir_override: Path | None = None) -> Site:
    site = load_site(site_path)
    return site.with_overrides(
        registry_address=registry_override,
        models_root=models_root_override.resolve() if models_root_override else None,
        state_dir=state_dir_override.resolve() if state_dir_override else None)
