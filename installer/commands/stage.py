"""installer stage: check a bundle's signed root, then write its models to the NAS (hashed as written)."""

from __future__ import annotations

from pathlib import Path

from installer.commands.install_common import bundle_verb, run_steps
from installer.destinations.nas import NasDestination
from installer.site import Site


@bundle_verb("stage")
def command(bundle: Path, site: Site, allow_downgrade: str | None, allow_expired: str | None,
            as_json: bool) -> None:
    """Check BUNDLE's signed root, then stage each model under MODELS_ROOT/<llm|embeddings|indices>/NAME/VERSION.

    Each file is hashed as it is written; a version appears atomically, only once all its files
    match the signed digests. An existing version with other content is refused.
    """
    run_steps(bundle, site, lambda s: [NasDestination(s.models_root)], allow_downgrade, as_json, allow_expired)
