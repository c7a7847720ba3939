"""installer rollout status|resume|promote|abort: operator control of a canary rollout (docs/ROLLOUT.md)."""

from __future__ import annotations

from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from installer import rollout
from installer.audit import audited
from installer.commands.common import operator_option, poll_option, site_options, stderr_log, timeout_option
from installer.site import Site
from installer.state import StateDir


@click.group("rollout")
def command() -> None:
    """Watch or steer a canary rollout that `installer apply` started."""


@click.command("status")
@site_options
@json_option
@handle_errors
def status(site: Site, as_json: bool) -> None:
    """Where the newest rollout is: its step and weight, the last gate readings, how it ended."""
    rec = rollout.latest_rollout(StateDir(site.state_dir))
    if as_json:
        emit_json({"ok": True, "rollout": None if rec is None else
                   {k: rec.get(k) for k in ("revision", "status", "reason", "rollout")}})
    elif rec is None:
        click.echo(f"No rollout has run at site {site.name}.")
    else:
        click.echo("\n".join(rollout.status_lines(rec)))


def _control(action: str, doc: str) -> click.Command:
    @click.command(action, help=doc)
    @site_options
    @operator_option(f"asks to {action}")
    @timeout_option
    @poll_option
    @json_option
    @handle_errors
    def run(site: Site, operator: str, timeout: float, poll: float, as_json: bool) -> None:
        rec: dict[str, Any] = rollout.control(site, StateDir(site.state_dir), action, operator, poll=poll,
                                              timeout=timeout, log=stderr_log())
        if as_json:
            emit_json({"ok": True, **{k: rec.get(k) for k in ("revision", "status", "reason")}})
        else:
            click.echo(f"Revision {rec.get('revision')}: {rec.get('status')}"
                       + (f" ({rec['reason']})" if rec.get("reason") else "") + ".")
    return run


for _cmd in (_control("resume", "Carry on a rollout a killed installer left, from its recorded step."),
             _control("promote", "Skip the remaining steps: the stable Deployment takes the new template now."),
             _control("abort", "Stop the rollout: the canary is removed, the stable Deployment keeps running.")):
    audited(_cmd)  # a group's subcommands are not reached by the CLI's audit hook
    command.add_command(_cmd)
command.add_command(status)
