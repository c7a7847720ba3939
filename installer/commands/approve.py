"""installer approve: a named operator reviews a plan and approves exactly it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.errors import EdgebundleError
from edgebundle.signing import load_private_key
from installer import audit
from installer.approval import DEFAULT_TTL, make_approval, parse_duration, record_approval
from installer.commands.common import operator_option
from installer.plan import Plan, format_table, load_plan
from installer.site import resolve_site
from installer.state import StateDir


class NotApproved(EdgebundleError):
    """The operator declined."""


def confirm_and_record(plan: Plan, state: StateDir, operator: str, *, yes: bool, ttl: float,
                       key_path: Path | None, as_json: bool) -> dict[str, Any]:
    """Show the plan, ask y/N (unless ``yes``), and record the approval in the state directory."""
    if not as_json:
        click.echo(format_table(plan))
    if not yes and not click.confirm(f"Apply these changes as {operator}?", default=False, err=True):
        raise NotApproved(f"plan {plan.hash[:19]}... was not approved by {operator}")
    key = load_private_key(key_path) if key_path else None
    doc = make_approval(plan, operator, ttl=ttl)
    record_approval(state, doc, key)
    return {**doc, "signed": key is not None}


@click.command("approve")
@click.argument("plan_path", metavar="PLAN", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@operator_option("approves")
@click.option("--site", "site_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The site file (default: the state directory the plan was made with).")
@click.option("--yes", is_flag=True, help="Do not ask (for scripts that already showed the plan).")
@click.option("--ttl", default="24h", show_default=True, help="How long the approval stays valid (30m, 24h, 2d).")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign the approval with this operator key (Ed25519 PEM).")
@json_option
@handle_errors
def command(plan_path: Path, operator: str, site_path: Path | None, yes: bool, ttl: str,
            key_path: Path | None, as_json: bool) -> None:
    """Show PLAN, ask y/N, and record the approval (operator, time, plan hash, bundle, cluster).

    `installer apply` accepts the plan only with an unexpired approval of its exact hash.
    """
    plan = load_plan(plan_path)
    state_dir = resolve_site(site_path).state_dir if site_path else Path(plan.doc["stateDir"])
    audit.note(state_dir=str(state_dir), plan=plan.hash, bundle_claimed=plan.bundle["root"])
    seconds = parse_duration(ttl) if ttl else DEFAULT_TTL
    doc = confirm_and_record(plan, StateDir(state_dir), operator, yes=yes, ttl=seconds, key_path=key_path,
                             as_json=as_json)
    if as_json:
        emit_json({"ok": True, "approval": doc})
    else:
        click.echo(f"Approved plan {plan.hash} by {doc['operator']} until {doc['expiresAt']}"
                   + (" (signed)" if doc["signed"] else ""))
