"""bundle lint: the checks bundle create runs first, without building (docs/SPEC.md)."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.commands.common import current_lock, lockfile_option
from bundler.lint import check_deployable
from bundler.spec import load_spec
from edgebundle.clikit import emit_json, handle_errors, json_option


@click.command("lint")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@lockfile_option
@json_option
@handle_errors
def command(spec_path: Path, lockfile: Path | None, as_json: bool) -> None:
    """Check that SPEC's bundle would deploy: images, models, the models volume, Kubernetes schemas,
    and that no plaintext credential would travel in it (spec.secrets.allow vouches for one).

    Reads only; writes nothing. Exit 0 when bundle create would accept the manifests, 2 otherwise.
    """
    spec = load_spec(spec_path)
    report = check_deployable(spec, current_lock(spec, lockfile))
    if as_json:
        emit_json({"ok": True, "spec": str(spec.path), **report.to_dict()})
        return
    versions = (f"Kubernetes {report.kubernetes[0]} to {report.kubernetes[-1]}" if report.kubernetes
                else "no Kubernetes schema (declare metadata.kubernetes to check one)")
    click.echo(f"ok: {report.objects} object(s) in {report.files} file(s): images, models and the models "
               f"volume as the site checks them; {versions}")
