"""installer prune: delete model versions and registry images no recent deployment uses."""

from __future__ import annotations

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.digest import sha256_bytes
from edgebundle.errors import EdgebundleError
from edgebundle.progress import human
from edgebundle.root import canonical_json
from installer import audit
from installer.commands.common import operator_option, site_options
from installer.destinations.registry import RegistryDestination
from installer.prune import PrunePlan, execute, plan_prune
from installer.site import Site
from installer.state import StateDir, now_iso

GC_HINT = ("deleting manifests frees no disk space by itself: run the registry's garbage collector, "
           "e.g. `registry garbage-collect --delete-untagged /etc/docker/registry/config.yml` "
           "(Debian's docker-registry package: `docker-registry garbage-collect ...`), with the registry "
           "stopped or read-only")


class PruneDeclined(EdgebundleError):
    """The operator said no; nothing was deleted."""


def _show(plan: PrunePlan) -> None:
    click.echo("Keeping what these bundles carry:")
    for b in plan.kept:
        click.echo(f"  {b['name']} {b['version']}  {b['root'][:19]}  ({b['why']})")
    click.echo("Deleting:" if not plan.empty else "Nothing to delete.")
    for m in plan.models:
        click.echo(f"  model  {m['kind']:<10} {m['name']} {m['version']}  {human(m['size'])}  {m['path']}")
    for im in plan.images:
        click.echo(f"  image  {im['repository']}:{im['tag']}  {im['digest']}")


@click.command("prune")
@site_options
@click.option("--keep", default=2, show_default=True, metavar="N",
              help="Keep what the last N deployed revisions use (the running one always).")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; delete nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@operator_option("prunes")
@json_option
@handle_errors
def command(site: Site, keep: int, dry_run: bool, yes: bool, operator: str, as_json: bool) -> None:
    """Delete NAS model versions and site-registry images that none of the last N deployed
    revisions uses; shows the list and asks y/N first. Only what edgebundle put there is considered."""
    state = StateDir(site.state_dir)
    with state.locked(), RegistryDestination.for_site(site).registry as registry:
        plan = plan_prune(site, state, registry, keep)
        if not as_json:
            _show(plan)
        if dry_run or plan.empty:
            if as_json:
                emit_json({"ok": True, "dryRun": dry_run, "deleted": False, **plan.to_dict()})
            return
        if not yes and not click.confirm(f"Delete these as {operator}?", default=False, err=True):
            raise PruneDeclined(f"nothing deleted: {operator} declined")
        record = {"operator": operator, "at": now_iso(), "keep": keep, **plan.to_dict()}
        digest = sha256_bytes(canonical_json(record))
        state.write_json(f"prunes/{digest.split(':', 1)[1]}.json", record)  # before the first deletion
        audit.note(plan=digest)  # the audit line names the record of exactly what was deleted
        execute(plan, site, registry, (lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True)))
    if as_json:
        emit_json({"ok": True, "dryRun": False, "deleted": True, **plan.to_dict(), "next": GC_HINT})
    else:
        click.echo(f"Deleted {len(plan.models)} model version(s) and {len(plan.images)} image tag(s).")
        click.echo(f"Note: {GC_HINT}.")
