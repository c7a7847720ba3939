"""installer verify: prove a bundle genuine for this site, offline, without unpacking it."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.clikit import emit_json
from installer.commands.install_common import bundle_verb, progress_enabled, verdict_line, verified_summary
from installer.core import open_verified
from installer.site import Site


@bundle_verb("verify")
def command(bundle: Path, site: Site, allow_downgrade: str | None, allow_expired: str | None,
            as_json: bool) -> None:
    """Verify BUNDLE: trusted signature, not expired, compatible, not a rollback, complete, every blob's digest.

    Nothing is written except the bundle's trust files in the state directory.
    Exit code 4 names what failed.
    """
    vb = open_verified(bundle, site, allow_downgrade=allow_downgrade, allow_expired=allow_expired,
                       progress=progress_enabled(as_json))
    if as_json:
        emit_json({"ok": True, **verified_summary(vb)})
    else:
        click.echo(verdict_line(vb))
