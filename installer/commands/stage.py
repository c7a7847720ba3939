"""installer stage: verify a bundle, then write its models to the NAS."""

from __future__ import annotations

from pathlib import Path

from installer.commands.install_common import bundle_verb, run_steps
from installer.destinations.nas import NasDestination
from installer.site import Site


@bundle_verb("stage")
def command(bundle: Path, site: Site, allow_downgrade: str | None, allow_expired: str | None,
            as_json: bool) -> None:
    """Verify BUNDLE, then stage each model under MODELS_ROOT/<llm|embeddings|indices>/NAME/VERSION.

    A version appears atomically; an existing version with other content is refused.
    """
    run_steps(bundle, site, lambda s: [NasDestination(s.models_root)], allow_downgrade, as_json, allow_expired)
