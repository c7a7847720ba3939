"""installer apply: carry out an approved plan, wait for health, roll back automatically on failure."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.signing import load_public_key
from installer import audit
from installer.apply import apply_plan
from installer.approval import approver_keys
from installer.commands.common import outcome_line, poll_option, site_options, stderr_log, timeout_option
from installer.commands.plan import validation_option
from installer.plan import load_plan
from installer.site import Site
from installer.state import StateDir


@click.command("apply")
@click.argument("plan_path", metavar="PLAN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@site_options
@validation_option
@click.option("--approver-pubkey", "approver_pubkeys", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Accept only approvals signed by this key (repeatable; adds to spec.approval.keys).")
@timeout_option
@poll_option
@json_option
@handle_errors
def command(plan_path: Path, site: Site, validation_file: Path | None, approver_pubkeys: tuple[Path, ...],
            timeout: float, poll: float, as_json: bool) -> None:
    """Apply PLAN: refuses without a valid approval of its exact hash, or if the cluster drifted.

    Server-side apply in dependency order, prune what the previous revision owned and this one
    drops, wait for health, record the revision. If health fails or times out, the previous
    healthy revision is re-applied and the command exits 1 naming the object and the reason.
    """
    state = StateDir(site.state_dir)
    plan = load_plan(plan_path)
    audit.note(plan=plan.hash, bundle_claimed=plan.bundle["root"])
    keys = [load_public_key(p) for p in (*approver_keys(site), *approver_pubkeys)]
    with state.locked():
        outcome = apply_plan(plan, site, state, keys=keys, validation_file=validation_file, timeout=timeout,
                             poll=poll, log=stderr_log())
    if as_json:
        emit_json({"ok": True, "changed": outcome.changed, **(outcome.summary() if outcome.changed else {})})
    elif not outcome.changed:
        click.echo("Nothing to change: the cluster already matches the plan.")
    else:
        b = plan.bundle
        click.echo(outcome_line(outcome, f"{b['name']} {b['version']} applied to {outcome.target}"))
