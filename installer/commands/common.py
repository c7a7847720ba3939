"""Options shared by installer verbs: the site file and its overrides."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import handle_errors
from installer.site import Site, load_site


def site_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--site`` plus flags that override single fields of it; ``fn`` receives the resolved ``site``.

    The raw option values stay the click callback's parameters, so the audit hook still sees
    which site file a run named; a site file that does not load is reported like any error.
    """

    @handle_errors
    @functools.wraps(fn)
    def with_site(*args: Any, site_path: Path, registry_override: str | None = None,
                  models_root_override: Path | None = None, state_dir_override: Path | None = None,
                  **kwargs: Any) -> Any:
        site = resolve_site(site_path, registry_override, models_root_override, state_dir_override)
        return fn(*args, site=site, **kwargs)

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
        with_site = opt(with_site)
    return with_site


def resolve_site(site_path: Path, registry_override: str | None = None,
                 models_root_override: Path | None = None,
                 state_dir_override: Path | None = None) -> Site:
    site = load_site(site_path)
    return site.with_overrides(
        registry_address=registry_override,
        models_root=models_root_override.resolve() if models_root_override else None,
        state_dir=state_dir_override.resolve() if state_dir_override else None)


def operator_option(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--operator NAME`` (or ``$EDGEBUNDLE_OPERATOR``), required: a change is never made by "unknown"."""
    return click.option("--operator", required=True, envvar="EDGEBUNDLE_OPERATOR", show_envvar=True,
                        metavar="NAME", help=f"Who {action} (recorded in the audit log).")
