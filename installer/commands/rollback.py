"""installer rollback: re-apply an earlier healthy revision, after the operator confirms it."""

from __future__ import annotations

from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from installer import audit
from installer.apply import rollback
from installer.approval import DEFAULT_TTL
from installer.commands.approve import confirm_and_record
from installer.commands.common import (
    operator_option,
    outcome_line,
    poll_option,
    site_options,
    stderr_log,
    timeout_option,
)
from installer.plan import Plan
from installer.site import Site
from installer.state import StateDir


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

    def confirm(plan: Plan) -> dict[str, Any]:
        if not as_json:
            click.echo(f"Rolling back to revision {plan.doc['rollbackOf']} ({plan.bundle['name']} "
                       f"{plan.bundle['version']}):")
        return confirm_and_record(plan, state, operator, yes=yes, ttl=DEFAULT_TTL, key_path=None, as_json=as_json)

    with state.locked():
        outcome = rollback(site, state, to=to, confirm=confirm,
                           on_plan=lambda plan: audit.note(plan=plan.hash, bundle_claimed=plan.bundle["root"]),
                           timeout=timeout, poll=poll, log=stderr_log())
    n = outcome.plan.doc["rollbackOf"]
    if as_json:
        emit_json({"ok": True, "changed": outcome.changed,
                   **(outcome.summary() if outcome.changed else {"revision": n})})
    elif not outcome.changed:
        click.echo(f"Nothing to change: the cluster already runs revision {n}'s objects.")
    else:
        click.echo(outcome_line(outcome, f"rolled back to revision {n}"))
