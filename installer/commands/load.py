"""installer load: verify a bundle, then push its images into the site registry."""

from __future__ import annotations

from pathlib import Path

from installer.commands.install_common import bundle_verb, run_steps
from installer.destinations.registry import RegistryDestination
from installer.site import Site


@bundle_verb("load")
def command(bundle: Path, site: Site, allow_downgrade: str | None, allow_expired: str | None,
            as_json: bool) -> None:
    """Verify BUNDLE, then push every image (digests preserved, with tags) to the site registry.

    Blobs the registry already has are skipped; a rerun resumes an interrupted load.
    """
    run_steps(bundle, site, lambda s: [RegistryDestination.for_site(s)], allow_downgrade, as_json, allow_expired)
