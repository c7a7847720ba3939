"""installer install: the technician's one command — verify, load, stage, plan, approve, apply."""

from __future__ import annotations

from pathlib import Path

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from installer import audit
from installer.apply import plan_and_deploy
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
from installer.commands.install_common import (
    bundle_argument,
    downgrade_option,
    expired_option,
    progress_enabled,
    step_line,
    verdict_line,
    verified_summary,
)
from installer.commands.plan import plan_json, validation_option
from installer.core import install, open_verified
from installer.destinations import progress_factory
from installer.destinations.nas import NasDestination
from installer.destinations.registry import RegistryDestination
from installer.site import Site
from installer.state import StateDir


@click.command("install")
@bundle_argument
@site_options
@operator_option("approves and applies the change")
@click.option("--yes", is_flag=True, help="Approve without asking (the plan is still shown and recorded).")
@validation_option
@downgrade_option
@expired_option
@timeout_option
@poll_option
@json_option
@handle_errors
def command(bundle: Path, site: Site, operator: str, yes: bool, validation_file: Path | None,
            allow_downgrade: str | None, allow_expired: str | None, timeout: float, poll: float,
            as_json: bool) -> None:
    """Verify BUNDLE, load its images, stage its models, then plan, ask y/N and apply.

    Each step is the one the separate verbs run (verify, load, stage, plan, approve, apply);
    nothing reaches the cluster before the operator has seen the plan and said yes.
    """
    state = StateDir(site.state_dir)
    with state.locked():
        vb = open_verified(bundle, site, state=state, allow_downgrade=allow_downgrade,
                           allow_expired=allow_expired,
                           progress=progress_enabled(as_json), content=False)
        audit.note(bundle=vb.root_digest)
        if not as_json:
            click.echo(verdict_line(vb, content=False), err=True)
        steps = install(vb, [RegistryDestination.for_site(site), NasDestination(site.models_root)], state,
                        progress_factory(progress_enabled(as_json)))
        for r in steps if not as_json else ():
            click.echo(step_line(r), err=True)
        outcome = plan_and_deploy(
            vb, site, state, validation_file=validation_file, timeout=timeout, poll=poll, log=stderr_log(),
            on_plan=lambda plan: audit.note(plan=plan.hash),
            confirm=lambda plan: confirm_and_record(plan, state, operator, yes=yes, ttl=DEFAULT_TTL,
                                                    key_path=None, as_json=as_json))
    if as_json:
        emit_json({**plan_json(outcome.plan, None), **verified_summary(vb), "steps": [r.to_dict() for r in steps],
                   "changed": outcome.changed, **({"deployed": outcome.summary()} if outcome.changed else {})})
    elif not outcome.changed:
        click.echo(f"Nothing to change: the cluster already runs {vb.root.name} {vb.root.version}.")
    else:
        click.echo(outcome_line(outcome, f"{vb.root.name} {vb.root.version} installed on {outcome.target}"))
