"""installer load: verify a bundle, then push its images into the site registry."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.clikit import handle_errors, json_option
from installer.commands.common import site_options
from installer.commands.install_common import bundle_argument, downgrade_option, run_steps
from installer.destinations.registry import RegistryDestination
from installer.site import Site


@click.command("load")
@bundle_argument
@site_options
@downgrade_option
@json_option
@handle_errors
def command(bundle: Path, site: Site, allow_downgrade: str | None, as_json: bool) -> None:
    """Verify BUNDLE, then push every image (digests preserved, with tags) to the site registry.

    Blobs the registry already has are skipped; a rerun resumes an interrupted load.
    """
    run_steps(bundle, site, lambda s: [RegistryDestination.for_site(s)], allow_downgrade, as_json)
