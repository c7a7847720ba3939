"""installer stage: verify a bundle, then write its models to the NAS."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.clikit import handle_errors, json_option
from installer.commands.common import site_options
from installer.commands.install_common import bundle_argument, downgrade_option, run_steps
from installer.destinations.nas import NasDestination
from installer.site import Site


@click.command("stage")
@bundle_argument
@site_options
@downgrade_option
@json_option
@handle_errors
def command(bundle: Path, site: Site, allow_downgrade: str | None, as_json: bool) -> None:
    """Verify BUNDLE, then stage each model under MODELS_ROOT/<llm|embeddings|indices>/NAME/VERSION.

    A version appears atomically; an existing version with other content is refused.
    """
    run_steps(bundle, site, lambda s: [NasDestination(s.models_root)], allow_downgrade, as_json)
