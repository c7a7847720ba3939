"""installer history: the revisions applied to the site's cluster, newest last."""

from __future__ import annotations

from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from installer.commands.common import site_options
from installer.revisions import RevisionStore
from installer.site import Site
from installer.state import StateDir

FIELDS = ("revision", "status", "trigger", "rollbackOf", "bundle", "operator", "planHash", "startedAt",
          "finishedAt", "health", "reason", "failedObject", "summary", "images", "models")


def note_of(rec: dict[str, Any]) -> str:
    if rec.get("reason"):
        return str(rec["reason"])
    if rec.get("rollbackOf") is not None:
        return f"rollback to revision {rec['rollbackOf']}"
    return ""


@click.command("history")
@site_options
@json_option
@handle_errors
def command(site: Site, as_json: bool) -> None:
    """List the site's revisions: status, bundle, who applied it, and what happened."""
    revisions = RevisionStore(StateDir(site.state_dir)).all()
    if as_json:
        emit_json({"ok": True, "revisions": [{k: r.get(k) for k in FIELDS} for r in revisions]})
        return
    if not revisions:
        click.echo(f"No revisions yet at site {site.name}.")
        return
    rows = [("REV", "STATUS", "TRIGGER", "BUNDLE", "OPERATOR", "APPLIED", "NOTE")]
    for r in revisions:
        b = r.get("bundle") or {}
        rows.append((str(r.get("revision")), str(r.get("status")), str(r.get("trigger")),
                     f"{b.get('name')} {b.get('version')}", str(r.get("operator")),
                     str(r.get("startedAt")), note_of(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        click.echo("  ".join(c.ljust(widths[i]) if i < 6 else c for i, c in enumerate(row)).rstrip())
