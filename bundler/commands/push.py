"""bundle push: publish a bundle to an OCI registry (a central registry or a depot)."""

from __future__ import annotations

from pathlib import Path

import click

from bundler.commands.common import plain_http_option
from bundler.publish import push
from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.progress import Progress, human
from edgebundle.remote import parse_location


@click.command("push")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("location", metavar="oci://HOST[:PORT]/REPO:TAG")
@click.option("--mount-from", metavar="REPO",
              help="Another repository of the same registry to mount blobs from instead of uploading.")
@plain_http_option
@json_option
@handle_errors
def command(bundle: Path, location: str, mount_from: str | None, plain_http: tuple[str, ...],
            as_json: bool) -> None:
    """Publish BUNDLE (tar, directory or media) at oci://HOST[:PORT]/REPO:TAG.

    Uploads only the blobs the registry lacks, streaming each from BUNDLE, then tags the bundle
    manifest; a rerun after an interruption sends only what is missing. Installers read it with
    `installer verify|load|stage|install oci://...` (docs/FLEET.md).
    """
    host = parse_location(location).registry
    bar = Progress("push", None, enabled=False if as_json else None)
    t = push(bundle, location, plain_http=True if host in plain_http else None, mount_from=mount_from,
             progress=bar)
    bar.done()
    if as_json:
        emit_json({"ok": True, **t.to_dict()})
        return
    click.echo(f"pushed {t.name} {t.version} to {location} (bundle manifest {t.manifest[:19]}...)")
    click.echo(f"  sent {t.sent} blob(s), {human(t.sent_bytes)}; skipped {t.skipped} already there "
               f"({human(t.skipped_bytes)})" + (f"; mounted {t.mounted}" if t.mounted else "")
               + (f"; {t.manifests} manifest(s) by digest" if t.manifests else ""))
