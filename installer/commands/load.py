"""installer load: check a bundle's signed root, then push its images (each blob hashed as it goes)."""

from __future__ import annotations

from pathlib import Path

from installer.commands.install_common import bundle_verb, run_steps
from installer.destinations.registry import RegistryDestination
from installer.site import Site


@bundle_verb("load")
def command(bundle: Path, site: Site, allow_downgrade: str | None, allow_expired: str | None,
            as_json: bool) -> None:
    """Check BUNDLE's signed root, then push every image (digests preserved, with tags) to the site registry.

    Each blob is hashed as it streams (the registry checks it again); a tag is pushed only after
    its image is complete. Blobs the registry already has are skipped; a rerun resumes.
    """
    run_steps(bundle, site, lambda s: [RegistryDestination.for_site(s)], allow_downgrade, as_json, allow_expired)
