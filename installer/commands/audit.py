"""installer audit verify|show: prove the audit log unedited, and read it.

These commands only read: they add no line to the log they inspect (installer.audit.NOT_AUDITED).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.errors import UsageError
from installer.audit import AuditError, AuditLog
from installer.site import resolve_site


def _state_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--site`` or ``--state-dir``: an auditor may hold only a copy of the state directory."""
    fn = click.option("--state-dir", "state_dir_override", type=click.Path(path_type=Path),
                      help="The state directory (instead of, or overriding, the site file's).")(fn)
    return click.option("--site", "site_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="The site file (kind: Site); its spec.stateDir holds the log.")(fn)


def _log(site_path: Path | None, state_dir_override: Path | None) -> AuditLog:
    if state_dir_override is not None:
        return AuditLog(state_dir_override.resolve())
    if site_path is None:
        raise UsageError("say which site's log: --site SITE.yaml or --state-dir DIR")

    return AuditLog(resolve_site(site_path).state_dir)


@click.group("audit")
def command() -> None:
    """Check and read the hash-chained audit log (STATE_DIR/audit.log)."""


@command.command("verify")
@_state_options
@json_option
@handle_errors
def verify_cmd(site_path: Path | None, state_dir_override: Path | None, as_json: bool) -> None:
    """Prove no line of the audit log was edited, removed or reordered (exit 4 if one was)."""
    log = _log(site_path, state_dir_override)
    report = log.verify()
    if as_json:  # one document, whatever the outcome
        emit_json({"ok": report.ok, "log": str(log.path), "lines": report.lines,
                   "head": None if report.head is None else vars(report.head),
                   "problems": [vars(p) for p in report.problems], "notes": report.notes})
        if not report.ok:
            sys.exit(AuditError.exit_code)
        return
    for n in report.notes:
        click.echo(f"note: {n}", err=True)
    if not report.ok:
        first = report.problems[0]
        for p in report.problems:
            click.echo(f"  {p.kind}: {p.message}", err=True)
        raise AuditError(f"{log.path}: {first.message}" + (
            f" (and {len(report.problems) - 1} more problem(s))" if len(report.problems) > 1 else ""),
            hint="the log was tampered with or damaged; keep a copy as evidence and compare with "
                 "the head you recorded off the machine (installer audit show --head)")
    click.echo(f"OK: {report.lines} line(s) in {log.path}, chain intact"
               + (", anchored by audit.head" if report.head else ""))


@command.command("show")
@_state_options
@click.option("--last", "last", type=int, default=None, metavar="N", help="Only the last N lines.")
@click.option("--head", "head_only", is_flag=True,
              help="Print only the anchor (line count and last hash): record it off the machine.")
@json_option
@handle_errors
def show_cmd(site_path: Path | None, state_dir_override: Path | None, last: int | None,
             head_only: bool, as_json: bool) -> None:
    """Print the audit log readably, one command per line (errors indented below)."""
    log = _log(site_path, state_dir_override)
    if head_only:
        head = log.head()
        if as_json:
            emit_json(None if head is None else vars(head))
        else:
            click.echo("no audit log yet" if head is None else f"{head.count} {head.hash}")
        return
    rows = list(log.records())
    if last is not None:
        rows = rows[-last:] if last > 0 else []
    if as_json:
        emit_json([r if r is not None else {"line": n, "unreadable": True} for n, r in rows])
        return
    for n, rec in rows:
        click.echo(format_record(n, rec))
    if any(rec and rec.get("bundle") and not rec.get("bundleVerified") for _, rec in rows):
        click.echo("(a bundle digest ending in ? was named by the command but not verified by it)")


def format_record(n: int, rec: dict[str, Any] | None) -> str:
    """One readable line per record, plus an indented line for an error or an anomaly."""
    if rec is None:
        return f"{n:>5}  (unreadable line)"
    bundle = rec.get("bundle") or "-"
    if bundle != "-":
        bundle = bundle.split(":", 1)[-1][:12] + ("" if rec.get("bundleVerified") else "?")
    plan = (rec.get("plan") or "-").split(":", 1)[-1][:12]
    out = (f"{n:>5}  {rec.get('time', '?')}  {str(rec.get('operator', '?')):<12} "
           f"{str(rec.get('command', '?')):<9} {str(rec.get('outcome', '?')):<8} "
           f"exit {rec.get('exitCode', '?')}  bundle {bundle}  plan {plan}")
    err = rec.get("error")
    if isinstance(err, dict):
        out += f"\n       {err.get('kind')}: {err.get('message')}"
    for key in ("anomaly", "repaired"):
        if rec.get(key):
            out += f"\n       {key}: {rec[key]}"
    return out
