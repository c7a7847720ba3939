"""installer apply: carry out an approved plan, wait for health, roll back automatically on failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.signing import load_public_key
from installer import audit
from installer.approval import approver_keys, check_approval
from installer.commands.common import site_options
from installer.commands.plan import validation_option
from installer.core import is_installed
from installer.destinations.cluster import open_target
from installer.health import DEFAULT_TIMEOUT
from installer.plan import PlanError, check_drift, check_target, load_plan
from installer.revisions import RevisionStore, deploy
from installer.site import Site
from installer.state import StateDir
from installer.validate import require_validation

timeout_option = click.option(
    "--timeout", default=DEFAULT_TIMEOUT, show_default=True, type=click.FloatRange(min=0),
    help="Seconds to wait for the workloads to become healthy.")
poll_option = click.option(
    "--poll-interval", "poll", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
    help="Seconds between health checks.")


def stderr_log() -> Callable[[str], None]:
    """Progress lines on stderr (stdout stays clean for --json)."""
    return lambda line: click.echo(f"  {line}", err=True)


def deploy_result(rec: dict[str, Any] | None) -> dict[str, Any]:
    rec = rec or {}
    return {k: rec.get(k) for k in ("revision", "status", "health", "bundle", "operator", "trigger", "rollbackOf")}


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
    log = stderr_log()
    with state.locked():
        target = open_target(site, state.scratch)
        store = RevisionStore(state)
        check_target(plan, site, target)
        if plan.doc.get("purpose", "apply") == "apply":
            if not is_installed(state, plan.bundle["root"]):
                raise PlanError(f"bundle {plan.bundle['name']} {plan.bundle['version']} is not installed at "
                                f"site {site.name}", hint="run installer load and installer stage first")
            require_validation(site, state, plan.bundle, validation_file)
        if not plan.changes_pending:
            check_drift(plan, target, store)
            if as_json:
                emit_json({"ok": True, "changed": False})
            else:
                click.echo("Nothing to change: the cluster already matches the plan.")
            return
        approval = check_approval(state, plan, keys=keys)
        check_drift(plan, target, store)
        result = deploy(plan, site, target, store, operator=str(approval["operator"]), timeout=timeout,
                        poll=poll, log=log)
        rec = store.get(result.revision)
    if as_json:
        emit_json({"ok": True, "changed": True, **deploy_result(rec)})
        return
    b = plan.bundle
    click.echo(f"Revision {result.revision}: {b['name']} {b['version']} applied to {target.description}"
               + (", healthy." if result.watched else "; health not watched (k3s applies the file itself)."))
