"""installer plan: what applying a bundle would change on the site's cluster, as a plan file.

Exit status 0 when nothing would change, 3 when changes are pending (docs/EXIT_CODES.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from installer import audit
from installer.commands.common import site_options
from installer.commands.install_common import bundle_argument, downgrade_option, expired_option, progress_enabled
from installer.core import open_verified
from installer.destinations.targets import open_target
from installer.plan import Plan, format_table, plan_bundle
from installer.site import Site
from installer.state import StateDir

validation_option = click.option(
    "--validation", "validation_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The staging validation record (a site with requireValidation needs one for this bundle).")


def plan_json(plan: Plan, path: Path | None) -> dict[str, Any]:
    """The machine-readable view of a plan (the objects' bodies are in the plan file)."""
    return {
        "ok": True, "plan": str(path) if path else None, "planHash": plan.hash,
        "changesPending": plan.changes_pending, "bundle": plan.bundle, "site": plan.doc["site"],
        "revision": plan.revision, "summary": plan.summary(),
        "objects": [{"id": e["id"], "action": e["action"], "changes": e["changes"],
                     "takeover": e.get("takeover", [])} for e in plan.entries],
        "images": plan.doc["images"], "models": plan.doc["models"], "notes": plan.doc["notes"],
    }


def exit_pending(plan: Plan) -> None:
    """Exit 3 when the plan would change something (0 otherwise, by returning)."""
    if plan.changes_pending:
        sys.exit(3)


@click.command("plan")
@bundle_argument
@site_options
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("plan.json"),
              show_default=True, help="Where to write the plan file.")
@validation_option
@downgrade_option
@expired_option
@click.option("--all", "show_all", is_flag=True, help="List unchanged objects too.")
@click.option("--replace", "replace", multiple=True, metavar="KIND/NAMESPACE/NAME",
              help="Delete and re-create this object if the server refuses to change it in place "
                   "(immutable fields); repeatable. Cluster-scoped objects: KIND/NAME.")
@click.option("--adopt-helm", "adopt_helm", is_flag=True,
              help="Take over live objects a `helm install` release made (refused otherwise; docs/SITE.md).")
@json_option
@handle_errors
def command(bundle: Path, site: Site, out: Path, validation_file: Path | None,
            allow_downgrade: str | None, allow_expired: str | None, show_all: bool, replace: tuple[str, ...],
            adopt_helm: bool, as_json: bool) -> None:
    """Verify BUNDLE, render its manifests for the site, check policy, dry-run every object on the
    cluster (server-side apply, dryRun=All) and compare with what is live.

    Writes the plan file (with its hash) for `installer approve` and `installer apply`. Refuses,
    naming each object, what the cluster would refuse. Nothing on the cluster changes.
    Exit 0: nothing would change; 3: changes pending.
    """
    state = StateDir(site.state_dir)
    with state.locked():
        vb = open_verified(bundle, site, state=state, allow_downgrade=allow_downgrade,
                           allow_expired=allow_expired,
                           progress=progress_enabled(as_json))
        audit.note(bundle=vb.root_digest)
        plan = plan_bundle(vb, site, state, open_target(site, state.scratch), validation_file=validation_file,
                           replace=frozenset(replace), adopt_helm=adopt_helm)
    plan.write(out)
    audit.note(plan=plan.hash)
    if as_json:
        emit_json(plan_json(plan, out))
    else:
        click.echo(format_table(plan, show_all))
        click.echo(f"Wrote {out} (plan {plan.hash})")
        click.echo("Changes pending: approve with `installer approve " f"{out} --operator NAME`"
                   if plan.changes_pending else "Nothing to change.")
    exit_pending(plan)
