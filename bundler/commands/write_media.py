"""bundle write-media: put a bundle and an offline installer on a mounted stick, proven from the device."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bundler.commands.common import trust_store
from bundler.media import MediaVerifyError, verify_media, write_media
from bundler.runbook import FileReport
from bundler.wheelhouse import DEFAULT_PLATFORMS, DEFAULT_PYTHONS, default_wheel_cache, parse_targets
from edgebundle.clikit import emit_json, handle_errors, json_option
from edgebundle.progress import human


@click.command("write-media")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("dest", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--no-wheels", is_flag=True,
              help="Leave out the offline installer (wheelhouse/ and bootstrap.sh).")
@click.option("--target-platform", "platforms", multiple=True, metavar="TAG",
              help=f"Wheel platform of the technician's machine, repeatable [default: "
                   f"{', '.join(DEFAULT_PLATFORMS)}]; aarch64 means manylinux2014_aarch64.")
@click.option("--python-version", "pythons", multiple=True, metavar="X.Y",
              help=f"Python version(s) to carry wheels for, repeatable [default: {', '.join(DEFAULT_PYTHONS)}].")
@click.option("--wheel-cache", type=click.Path(file_okay=False, path_type=Path),
              help=f"Where downloaded wheels are kept between runs [default: {default_wheel_cache()}].")
@click.option("--edgebundle-wheel", "own_wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this edgebundle wheel instead of building one from the source tree.")
@click.option("--site-file", default="/etc/edgebundle/site.yaml", show_default=True,
              help="The site file path the runbook's commands use.")
@click.option("--mount-point", default="/media/usb", show_default=True,
              help="Where the runbook assumes the stick is mounted on site.")
@click.option("--replace", is_flag=True, help="Remove another bundle's files from DEST first.")
@click.option("--pubkey", "pubkeys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also verify the written media in full against this trusted key (repeatable).")
@click.option("--threshold", default=1, show_default=True, help="With --pubkey: how many keys must have signed.")
@json_option
@handle_errors
def command(bundle: Path, dest: Path, no_wheels: bool, platforms: tuple[str, ...], pythons: tuple[str, ...],
            wheel_cache: Path | None, own_wheel: Path | None, site_file: str, mount_point: str, replace: bool,
            pubkeys: tuple[Path, ...], threshold: int, as_json: bool) -> None:
    """Copy BUNDLE (tar, directory or parts) to the mounted media DEST and prove every file.

    Each file is written under a temporary name, fsynced, dropped from the page cache, read back
    from the device and hashed, and only then renamed; a per-file report says ok or FAILED with
    write and read-back MB/s. DEST also gets README.txt (the runbook for this bundle), an offline
    installer (wheelhouse/ + bootstrap.sh) and SHA256SUMS. Exit code 4 when any file failed.
    """
    targets = None if no_wheels else parse_targets(platforms, pythons)
    trust = trust_store(pubkeys, threshold) if pubkeys else None
    log = (lambda s: None) if as_json else (lambda s: click.echo(f"  {s}", err=True))
    show = (lambda r: None) if as_json else (lambda r: click.echo(r.line()))
    if not as_json:
        click.echo(f"writing {bundle} to {dest}")
    result = write_media(bundle, dest, targets=targets, wheel_cache=wheel_cache, own_wheel=own_wheel,
                         site_file=site_file, mount_point=mount_point, replace=replace,
                         progress_enabled=False if as_json else None, on_file=show, log=log)
    if result.ok and trust is not None:
        result.verified = verify_media(dest, trust, progress_enabled=False if as_json else None)
    if as_json:
        emit_json(result.to_dict())
    else:
        failed: list[FileReport] = [f for f in result.files if not f.ok]
        total = sum(f.size for f in result.files)
        if failed:
            click.echo(f"FAILED: {len(failed)} of {len(result.files)} file(s) did not read back right from "
                       f"{dest}: {', '.join(f.name for f in failed)}", err=True)
            click.echo("  what to do: use another stick; rerun write-media (good files are kept)", err=True)
        else:
            click.echo(f"OK: {len(result.files)} files ({human(total)}) written and read back from the device "
                       f"in {result.seconds:.1f}s: {result.root.name} {result.root.version}")
            if result.verified:
                click.echo(f"OK: the media verifies in full (root {result.verified['root']})")
    if not result.ok:
        sys.exit(MediaVerifyError.exit_code)
