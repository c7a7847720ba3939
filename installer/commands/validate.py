"""installer validate: on a staging site, prove the applied bundle healthy and sign a record of it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.errors import UsageError
from installer import audit
from installer.commands.common import poll_option, site_options, stderr_log, timeout_option
from installer.destinations.targets import open_target
from installer.revisions import RevisionStore
from installer.site import Site
from installer.state import StateDir, atomic_write
from installer.validate import make_record, record_rel, run_checks, site_signing_key


@click.command("validate")
@site_options
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the record here (default: validation-<bundle>-<version>.json).")
@timeout_option
@poll_option
@json_option
@handle_errors
def command(site: Site, out: Path | None, timeout: float, poll: float,
            as_json: bool) -> None:
    """Check the current revision on this (staging) cluster and sign a validation record.

    Every workload must be ready and every Service must answer /health and /ready through the
    API server's service proxy. The record, signed with the site's spec.siteKey, is what a
    production site with requireValidation needs: carry it there and pass --validation FILE.
    """
    state = StateDir(site.state_dir)
    key = site_signing_key(site)
    with state.locked():
        rev = RevisionStore(state).current()
        if rev is None:
            raise UsageError(f"site {site.name} has no deployed revision to validate",
                             hint="plan, approve and apply the bundle on this staging site first")
        audit.note(bundle_claimed=rev["bundle"]["root"], plan=rev.get("planHash"))
        target = open_target(site, state.scratch)
        if not target.watches_health:
            raise UsageError(f"{target.description} cannot be validated: a manifests directory gives no API access",
                             hint="validate on a staging cluster reached by kubeconfig")
        checks = run_checks(target, rev, timeout=timeout, poll=poll, log=stderr_log())
        if not as_json:
            for c in checks:
                click.echo(f"{'ok  ' if c.ok else 'FAIL'} {c.object} {c.check} {c.detail}".rstrip())
        data = make_record(site, target.identity(), rev, checks, key)  # refuses unless all passed
        state.write_bytes(record_rel(rev["bundle"]["root"]), data)  # never through a planted link
        b = rev["bundle"]
        dest = out or Path(f"validation-{b['name']}-{b['version']}.json")
        atomic_write(dest.resolve(), data)
    if as_json:
        emit_json({"ok": True, "record": str(dest), "validation": json.loads(data)})
    else:
        click.echo(f"Validated {b['name']} {b['version']} (root {b['root']}) on {site.name}, revision "
                   f"{rev['revision']}: {len(checks)} checks passed. Record: {dest}")
