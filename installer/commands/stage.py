"""installer stage: verify a bundle, then write its models to the NAS."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.clikit import handle_errors, json_option
from installer.commands.common import resolve_site, site_options
from installer.commands.install_common import bundle_argument, downgrade_option, run_steps
from installer.destinations.nas import NasDestination


@click.command("stage")
@bundle_argument
@site_options
@downgrade_option
@json_option
@handle_errors
def command(bundle: Path, site_path: Path, registry_override: str | None, models_root_override: Path | None,
            state_dir_override: Path | None, allow_downgrade: str | None, as_json: bool) -> None:
    """Verify BUNDLE, then stage each model under MODELS_ROOT/<llm|embeddings|indices>/NAME/VERSION.

    A version appears atomically; an existing version with other content is refused.
    """
    site = resolve_site(site_path, registry_override, models_root_override, state_dir_override)
    run_steps(bundle, site, lambda s: [NasDestination(s.models_root)], allow_downgrade, as_json)
