"""installer rollback: re-apply an earlier healthy revision, after the operator confirms it."""

from __future__ import annotations

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.errors import EdgebundleError, UsageError
from installer import audit
from installer.approval import DEFAULT_TTL
from installer.commands.apply import deploy_result, poll_option, stderr_log, timeout_option
from installer.commands.approve import confirm_and_record
from installer.commands.common import operator_option, site_options
from installer.destinations.cluster import open_target
from installer.plan import build_plan
from installer.revisions import RevisionStore, deploy
from installer.site import Site
from installer.state import StateDir


class NothingToRollBack(EdgebundleError):
    """There is no earlier healthy revision."""


@click.command("rollback")
@site_options
@click.option("--to", "to", type=int, metavar="N", help="The revision to return to (default: the previous healthy one).")
@operator_option("rolls back")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@timeout_option
@poll_option
@json_option
@handle_errors
def command(site: Site, to: int | None, operator: str, yes: bool, timeout: float,
            poll: float, as_json: bool) -> None:
    """Return the cluster to revision N's exact objects (images, model versions, config).

    Shows what will change and asks y/N; the rollback is recorded as a new revision. Nothing is
    re-staged or re-loaded: earlier images and model versions are still in place.
    """
    state = StateDir(site.state_dir)
    with state.locked():
        store = RevisionStore(state)
        current = store.current()
        if to is None:
            if current is None:
                raise NothingToRollBack(f"site {site.name} has no deployed revision")
            target_rev = store.last_good(before=int(current["revision"]))
            if target_rev is None:
                raise NothingToRollBack(f"revision {current['revision']} is the first healthy revision; "
                                        "there is nothing earlier to roll back to")
        else:
            target_rev = store.get(to)
            if target_rev is None:
                raise UsageError(f"revision {to} does not exist", hint="see installer history --site SITE")
            if target_rev.get("status") not in ("deployed", "superseded"):
                raise UsageError(f"revision {to} never became healthy (status {target_rev.get('status')}); "
                                 "only a revision that once ran healthy can be rolled back to")
        n = int(target_rev["revision"])
        target = open_target(site, state.scratch)
        plan = build_plan(site=site, target=target, store=store, bundle=target_rev["bundle"],
                          objects=target_rev["objects"], images=target_rev.get("images", {}),
                          models=target_rev.get("models", {}), purpose="rollback", rollback_of=n)
        audit.note(plan=plan.hash, bundle_claimed=plan.bundle["root"])
        if not plan.changes_pending:
            if as_json:
                emit_json({"ok": True, "changed": False, "revision": n})
            else:
                click.echo(f"Nothing to change: the cluster already runs revision {n}'s objects.")
            return
        if not as_json:
            click.echo(f"Rolling back to revision {n} ({target_rev['bundle']['name']} "
                       f"{target_rev['bundle']['version']}):")
        confirm_and_record(plan, state, operator, yes=yes, ttl=DEFAULT_TTL, key_path=None, as_json=as_json)
        result = deploy(plan, site, target, store, operator=operator, trigger="rollback", timeout=timeout,
                        poll=poll, log=stderr_log(), auto_rollback=False)
        rec = store.get(result.revision)
    if as_json:
        emit_json({"ok": True, "changed": True, **deploy_result(rec)})
    else:
        click.echo(f"Revision {result.revision}: rolled back to revision {n}"
                   + (", healthy." if result.watched else "; health not watched (k3s applies the file itself)."))
