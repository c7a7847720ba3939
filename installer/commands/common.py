"""Options shared by installer verbs: the site file and its overrides, health waits, progress lines."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import handle_errors
from installer.health import DEFAULT_TIMEOUT
from installer.site import resolve_site


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


def operator_option(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--operator NAME`` (or ``$EDGEBUNDLE_OPERATOR``), required: a change is never made by "unknown"."""
    return click.option("--operator", required=True, envvar="EDGEBUNDLE_OPERATOR", show_envvar=True,
                        metavar="NAME", help=f"Who {action} (recorded in the audit log).")


timeout_option = click.option(
    "--timeout", default=DEFAULT_TIMEOUT, show_default=True, type=click.FloatRange(min=0),
    help="Seconds to wait for the workloads to become healthy.")
poll_option = click.option(
    "--poll-interval", "poll", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
    help="Seconds between health checks.")


def stderr_log() -> Callable[[str], None]:
    """Progress lines on stderr (stdout stays clean for --json)."""
    return lambda line: click.echo(f"  {line}", err=True)


def outcome_line(outcome: Any, what: str) -> str:
    """``Revision N: WHAT, healthy.`` (or health not watched, for a k3s directory)."""
    return (f"Revision {outcome.revision}: {what}"
            + (", healthy." if outcome.watched else "; health not watched (k3s applies the file itself)."))
