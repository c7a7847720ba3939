"""bundle lock: pin every input of a spec in bundles.lock."""

from __future__ import annotations

from pathlib import Path

import click

from bundler import charts
from bundler.commands.common import lockfile_option, plain_http_option, registry_factory
from bundler.lockfile import compute_lock, read_lock, write_lock
from bundler.spec import load_spec
from edgebundle.clikit import emit_json, handle_errors, json_option


@click.command("lock")
@click.argument("spec_path", metavar="SPEC", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@lockfile_option
@plain_http_option
@click.option("--discover-images", "discover", is_flag=True,
              help="Print the images each chart renders with its bundle values (to add to spec.images); "
                   "writes no lock.")
@json_option
@handle_errors
def command(spec_path: Path, lockfile: Path | None, plain_http: tuple[str, ...], discover: bool,
            as_json: bool) -> None:
    """Resolve images, hash models, manifests and charts, and write bundles.lock beside SPEC (or --lockfile).

    Images are checked against the platform rules bundle create builds by.
    """
    spec = load_spec(spec_path)
    if discover:
        registries = registry_factory(plain_http)
        found = {c.release: charts.images_of(charts.render_defaults(c, registries)) for c in spec.charts}
        if as_json:
            emit_json({"ok": True, "charts": found})
            return
        for release, images in found.items():
            click.echo(f"chart {release}:")
            for image in images:
                click.echo(f"  {image}")
        return
    path = lockfile or spec.lock_path
    old = read_lock(path)
    same_release = old is not None and old["bundle"] == {"name": spec.name, "version": spec.version}
    # Re-locking the same release keeps its creation time, so its bundle stays reproducible.
    lock = compute_lock(spec, registry_factory(plain_http),
                        created=old["created"] if same_release else None)
    write_lock(path, lock)
    if as_json:
        emit_json({"ok": True, "lock": str(path), **lock})
        return
    click.echo(f"wrote {path}")
    for im in lock["images"]:
        click.echo(f"  image    {im['ref']} -> {im['digest']}")
        for plat, d in sorted(im["platforms"].items()):
            click.echo(f"             {plat}: {d}")
        for a in im["attached"]:
            click.echo(f"             attached {a['kind']}: {a['tag']} -> {a['digest']}")
    for m in lock["models"]:
        click.echo(f"  model    {m['name']} {m['version']}: {len(m['files'])} file(s)")
    click.echo(f"  manifests {len(lock['manifests'])} file(s)")
    for c in lock.get("charts", []):
        click.echo(f"  chart    {c['name']}: {c['chart']} {c['version']} -> {c['digest']}")
