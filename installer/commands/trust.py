"""installer trust update: apply a signed trust update (key rotation or revocation) to a site."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.clikit import emit_json, json_option
from edgebundle.trustupdate import describe
from installer.audit import audited
from installer.commands.common import site_options
from installer.site import Site
from installer.state import StateDir
from installer.trust import accept_update, current_trust


@click.group("trust")
def command() -> None:
    """Show or change the keys this site trusts (docs/SECURITY.md, key rotation)."""


@click.command("update")
@click.argument("update_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@site_options
@json_option
def update(update_file: Path, site: Site, as_json: bool) -> None:
    """Verify FILE (from bundle trust rotate) against the site's current trust and apply it.

    FILE must be signed by the current threshold of the current keys and by its new keys, and
    carry a higher version. From then on only its keys count. Exit code 4 names what failed.
    """
    state = StateDir(site.state_dir)
    with state.locked():
        old = current_trust(site, state)
        new = accept_update(site, state, update_file)
    doc = {"ok": True, "from": describe(old), "to": describe(new)}
    if as_json:
        emit_json(doc)
        return
    dropped = sorted(set(old.store.keys) - set(new.store.keys))
    click.echo(f"trust version {old.version} -> {new.version}: {new.store.threshold} of "
               f"{', '.join(k[:16] for k in sorted(new.store.keys))}"
               + (f"; no longer trusted: {', '.join(k[:16] for k in dropped)}" if dropped else ""))


@click.command("show")
@site_options
@json_option
def show(site: Site, as_json: bool) -> None:
    """Print the site's current trust: version, threshold and key ids (stored updates applied)."""
    cur = describe(current_trust(site, StateDir(site.state_dir)))
    if as_json:
        emit_json({"ok": True, **cur})
    else:
        click.echo(f"trust version {cur['version']}: {cur['threshold']} of {', '.join(k[:16] for k in cur['keys'])}")


audited(update)  # a group's subcommands are not reached by the CLI's audit hook; a change is audited
command.add_command(update)
command.add_command(show)
